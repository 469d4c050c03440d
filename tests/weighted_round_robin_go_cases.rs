//! gRPC-Go's `balancer/weightedroundrobin/balancer_test.go`, case by
//! case, over switchyard's weighted_round_robin with real backends on
//! 127.0.0.1 (the in-process test servers, which send ORCA per-call
//! trailers and serve `StreamCoreMetrics`). The fake-clock cases run on a
//! `ManualClock` runtime, as gRPC-Go's swap `internal.TimeNow`.
//!
//! gRPC-Go's configs (`perCallConfig`, `oobConfig`): OOB period 5 ms,
//! blackout 0 s, expiration 60 s, weight update period 50 ms (switchyard,
//! as gRPC-Go outside its tests, clamps it to 100 ms), penalty 0.

#[path = "common/mod.rs"]
mod common;

use common::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::*;
use switchyard_testserver::{Listen, OrcaLoad, ServerOptions, TestServer};

/// How the test servers report load (gRPC-Go's `reportType`).
#[derive(Clone, Copy, PartialEq)]
enum Report {
    None,
    Oob,
    Call,
    Both,
}

fn start(kind: Report) -> TestServer {
    let opts = ServerOptions {
        no_orca: !matches!(kind, Report::Oob | Report::Both),
        orca_min_interval: Some(Duration::from_millis(10)),
        ..Default::default()
    };
    TestServer::start(Listen::Tcp("127.0.0.1:0".parse().unwrap()), opts).unwrap()
}

/// A load of `qps` at application utilization `util` (and `eps`).
fn app(qps: f64, util: f64) -> OrcaLoad {
    OrcaLoad {
        application_utilization: util,
        rps_fractional: qps,
        ..Default::default()
    }
}

/// Sets both the OOB load and (when the server reports per call) the call
/// load, as gRPC-Go's tests set `oobMetrics` / `callMetrics`.
fn set_oob(s: &TestServer, l: OrcaLoad) {
    s.set_load(l);
}

fn set_call(s: &TestServer, l: OrcaLoad) {
    s.set_call_load(Some(l));
}

/// gRPC-Go's `perCallConfig` / `oobConfig`, with `extra` fields overriding.
fn config(oob: bool, extra: &str) -> String {
    let mut fields: Vec<(String, String)> = vec![
        ("enableOobLoadReport".into(), oob.to_string()),
        ("oobReportingPeriod".into(), "\"0.005s\"".into()),
        ("blackoutPeriod".into(), "\"0s\"".into()),
        ("weightExpirationPeriod".into(), "\"60s\"".into()),
        ("weightUpdatePeriod".into(), "\".050s\"".into()),
        ("errorUtilizationPenalty".into(), "0".into()),
    ];
    if !extra.is_empty() {
        let parsed: serde_json::Value = serde_json::from_str(&format!("{{{extra}}}")).unwrap();
        for (k, v) in parsed.as_object().unwrap() {
            let v = if v.is_null() {
                None
            } else {
                Some(v.to_string())
            };
            fields.retain(|(name, _)| name != k);
            if let Some(v) = v {
                fields.push((k.clone(), v));
            }
        }
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!(
        r#"{{"loadBalancingConfig":[{{"weighted_round_robin":{{{}}}}}]}}"#,
        body.join(",")
    )
}

fn addr_of(s: &TestServer) -> Address {
    Address::new(s.addr().to_string())
}

/// A channel whose host is the resolver (gRPC-Go's manual resolver), over
/// the library's own connections.
fn host_channel(rt: &Runtime, cfg: &str) -> Channel {
    let ch = Channel::new(rt, "", Some(cfg), plaintext()).unwrap();
    ch.connect().unwrap();
    ch
}

/// gRPC-Go's `ensureReached`: calls until `n` backends answered.
fn ensure_reached(r: &mut Reader, n: usize) {
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < n {
        assert!(Instant::now() < deadline, "only {seen:?} answered");
        seen.insert(echo(r, true).unwrap());
    }
}

/// The real-time wait gRPC-Go does for one weight update (its 50 ms; ours
/// at least 100 ms).
fn wait_update() {
    std::thread::sleep(Duration::from_millis(150));
}

/// gRPC-Go's `checkWeights`: up to 10 rounds of 100 calls; passes when only
/// the given backends answer, each within ±2 of its share of 100.
fn check_weights(r: &mut Reader, want: &[(&TestServer, usize)]) -> Result<(), String> {
    let sum: usize = want.iter().map(|(_, w)| w).sum();
    let expect: Vec<(u16, usize)> = want
        .iter()
        .map(|(s, w)| (s.port(), 100 * w / sum))
        .collect();
    let mut last = HashMap::new();
    for _ in 0..10 {
        let per = split(r, 100);
        let ok = per.len() == want.len()
            && expect.iter().all(|(port, e)| {
                let c = per.get(port).copied().unwrap_or(0);
                c + 2 >= *e && c <= e + 2
            });
        if ok {
            return Ok(());
        }
        last = per;
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(format!("counts {last:?}, want {expect:?} (port, count)"))
}

#[track_caller]
fn assert_weights(r: &mut Reader, want: &[(&TestServer, usize)]) {
    if let Err(e) = check_weights(r, want) {
        panic!("failed to route RPCs with proper ratio: {e}");
    }
}

// ---------------------------------------------------------------------------
// TestBalancer_OneAddress

#[test]
fn one_address_every_report_type() {
    for (kind, oob) in [
        (Report::None, false),
        (Report::Call, false),
        (Report::Oob, true),
    ] {
        let srv = start(kind);
        let rt = Runtime::new().unwrap();
        let ch = host_channel(&rt, &config(oob, ""));
        ch.update_addresses(vec![addr_of(&srv)]).unwrap();
        let mut r = ch.reader();
        for i in 0..100 {
            set_call(&srv, app(i as f64, 1.0));
            set_oob(&srv, app(i as f64, 1.0));
            assert_eq!(echo(&mut r, false).unwrap(), srv.port());
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

// ---------------------------------------------------------------------------
// TestBalancer_TwoAddresses_ReportingDisabled: strict round robin.

#[test]
fn two_addresses_reporting_disabled_is_round_robin() {
    let (s1, s2) = (start(Report::None), start(Report::None));
    let rt = Runtime::new().unwrap();
    let ch = host_channel(&rt, &config(false, ""));
    ch.update_addresses(vec![addr_of(&s1), addr_of(&s2)])
        .unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 2);
    // roundrobin.CheckRoundRobinRPCs: consecutive calls alternate.
    for _ in 0..20 {
        let a = echo(&mut r, false).unwrap();
        let b = echo(&mut r, false).unwrap();
        assert_ne!(a, b, "round robin alternates");
    }
}

// ---------------------------------------------------------------------------
// TestBalancer_TwoAddresses_ReportingEnabledPerCall

#[test]
fn two_addresses_per_call_reports_weigh_1_to_10() {
    let (s1, s2) = (start(Report::Call), start(Report::Call));
    set_call(&s1, app(10.0, 1.0));
    set_call(&s2, app(10.0, 0.1));
    let rt = Runtime::new().unwrap();
    let ch = host_channel(&rt, &config(false, ""));
    ch.update_addresses(vec![addr_of(&s1), addr_of(&s2)])
        .unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 2);
    wait_update();
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
}

// ---------------------------------------------------------------------------
// TestBalancer_TwoAddresses_ReportingEnabledOOB (application, cpu,
// application over cpu).

#[test]
fn two_addresses_oob_reports_weigh_1_to_10() {
    type Setter = fn(f64) -> OrcaLoad;
    let cases: [(&str, Setter); 3] = [
        ("application_utilization", |u| app(10.0, u)),
        ("cpu_utilization", |u| OrcaLoad {
            cpu_utilization: u,
            rps_fractional: 10.0,
            ..Default::default()
        }),
        ("application over cpu", |u| OrcaLoad {
            application_utilization: u,
            cpu_utilization: 2.0,
            rps_fractional: 10.0,
            ..Default::default()
        }),
    ];
    for (name, load) in cases {
        let (s1, s2) = (start(Report::Oob), start(Report::Oob));
        set_oob(&s1, load(1.0));
        set_oob(&s2, load(0.1));
        let rt = Runtime::new().unwrap();
        let ch = host_channel(&rt, &config(true, ""));
        ch.update_addresses(vec![addr_of(&s1), addr_of(&s2)])
            .unwrap();
        let mut r = ch.reader();
        ensure_reached(&mut r, 2);
        wait_update();
        if let Err(e) = check_weights(&mut r, &[(&s1, 1), (&s2, 10)]) {
            panic!("{name}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------
// TestBalancer_TwoAddresses_UpdateLoads

#[test]
fn two_addresses_oob_loads_change() {
    let (s1, s2) = (start(Report::Oob), start(Report::Oob));
    set_oob(&s1, app(10.0, 1.0));
    set_oob(&s2, app(10.0, 0.1));
    let rt = Runtime::new().unwrap();
    let ch = host_channel(&rt, &config(true, ""));
    ch.update_addresses(vec![addr_of(&s1), addr_of(&s2)])
        .unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 2);
    wait_update();
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
    set_oob(&s1, app(10.0, 0.1));
    set_oob(&s2, app(10.0, 1.0));
    wait_update();
    assert_weights(&mut r, &[(&s1, 10), (&s2, 1)]);
}

// ---------------------------------------------------------------------------
// TestBalancer_TwoAddresses_OOBThenPerCall

#[test]
fn oob_then_per_call() {
    let (s1, s2) = (start(Report::Both), start(Report::Both));
    set_oob(&s1, app(10.0, 1.0));
    set_oob(&s2, app(10.0, 0.1));
    set_call(&s1, app(10.0, 0.1));
    set_call(&s2, app(10.0, 1.0));
    let rt = Runtime::new().unwrap();
    let ch = host_channel(&rt, &config(true, ""));
    ch.update_addresses(vec![addr_of(&s1), addr_of(&s2)])
        .unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 2);
    wait_update();
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
    // The resolver pushes the per-call config with the same addresses.
    ch.update_service_config(&config(false, "")).unwrap();
    ch.update_addresses(vec![addr_of(&s1), addr_of(&s2)])
        .unwrap();
    wait_update();
    assert_weights(&mut r, &[(&s1, 10), (&s2, 1)]);
}

// ---------------------------------------------------------------------------
// TestEndpoints_SharedAddress: two endpoints, one address; calls succeed.

#[test]
fn endpoints_sharing_an_address_still_serve() {
    let srv = start(Report::Call);
    let rt = Runtime::new().unwrap();
    let ch = host_channel(&rt, &config(false, ""));
    ch.update_endpoints(vec![
        Endpoint::new(vec![addr_of(&srv)]),
        Endpoint::new(vec![addr_of(&srv)]),
    ])
    .unwrap();
    let mut r = ch.reader();
    for _ in 0..10 {
        assert_eq!(echo(&mut r, true).unwrap(), srv.port());
    }
}

// ---------------------------------------------------------------------------
// TestEndpoints_MultipleAddresses: each endpoint a dead address then a live
// one; weights follow the live ones' per-call reports.

#[test]
fn endpoints_with_a_dead_first_address_weigh_by_the_live_one() {
    let (s1, s2) = (start(Report::Call), start(Report::Call));
    set_call(&s1, app(10.0, 0.1));
    set_call(&s2, app(10.0, 1.0));
    let dead = |_| Address::new(format!("127.0.0.1:{}", free_port()));
    let rt = Runtime::new().unwrap();
    let ch = host_channel(&rt, &config(false, ""));
    ch.update_endpoints(vec![
        Endpoint::new(vec![dead(0), addr_of(&s1)]),
        Endpoint::new(vec![dead(1), addr_of(&s2)]),
    ])
    .unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 2);
    wait_update();
    assert_weights(&mut r, &[(&s1, 10), (&s2, 1)]);
}

// ---------------------------------------------------------------------------
// TestBalancer_TwoAddresses_ErrorPenalty: OOB, eps ignored at penalty 0,
// then a config with penalty 0.9 evens the weights.

#[test]
fn error_penalty_config_update_evens_the_weights() {
    let (s1, s2) = (start(Report::Oob), start(Report::Oob));
    set_oob(&s1, app(10.0, 1.0));
    set_oob(
        &s2,
        OrcaLoad {
            eps: 10.0,
            ..app(10.0, 0.1)
        },
    );
    let rt = Runtime::new().unwrap();
    let ch = host_channel(&rt, &config(true, ""));
    ch.update_addresses(vec![addr_of(&s1), addr_of(&s2)])
        .unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 2);
    wait_update();
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
    ch.update_service_config(&config(true, r#""errorUtilizationPenalty":0.9"#))
        .unwrap();
    ch.update_addresses(vec![addr_of(&s1), addr_of(&s2)])
        .unwrap();
    wait_update();
    assert_weights(&mut r, &[(&s1, 1), (&s2, 1)]);
}

// ---------------------------------------------------------------------------
// TestBalancer_AddressesChanging

#[test]
fn addresses_changing() {
    let s: Vec<TestServer> = (0..4).map(|_| start(Report::Both)).collect();
    set_oob(&s[0], app(10.0, 1.0)); // 10
    set_oob(&s[1], app(10.0, 0.1)); // 100
    set_oob(&s[2], app(20.0, 1.0)); // 20
    set_oob(&s[3], app(20.0, 0.1)); // 200
    let rt = Runtime::new().unwrap();
    let ch = host_channel(&rt, &config(true, ""));
    let list = |idx: &[usize]| idx.iter().map(|&i| addr_of(&s[i])).collect::<Vec<_>>();
    ch.update_addresses(list(&[0, 1, 2])).unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 3);
    wait_update();
    assert_weights(&mut r, &[(&s[0], 1), (&s[1], 10), (&s[2], 2)]);
    ch.update_addresses(list(&[0, 1, 2, 3])).unwrap();
    wait_update();
    assert_weights(&mut r, &[(&s[0], 1), (&s[1], 10), (&s[2], 2), (&s[3], 20)]);
    let mut s = s;
    s.remove(2).stop();
    // s is now [srv1, srv2, srv4].
    wait_update();
    assert_weights(&mut r, &[(&s[0], 1), (&s[1], 10), (&s[2], 20)]);
    ch.update_addresses(vec![addr_of(&s[0]), addr_of(&s[2])])
        .unwrap();
    wait_update();
    assert_weights(&mut r, &[(&s[0], 1), (&s[2], 20)]);
    ch.update_addresses(vec![addr_of(&s[1])]).unwrap();
    wait_update();
    assert_weights(&mut r, &[(&s[1], 10)]);
    ch.update_addresses(vec![addr_of(&s[1]), addr_of(&s[2])])
        .unwrap();
    wait_update();
    assert_weights(&mut r, &[(&s[1], 10), (&s[2], 20)]);
}

// ---------------------------------------------------------------------------
// Fake-clock cases.

/// A runtime on a manual clock, and the clock.
fn manual() -> (Runtime, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let rt = Runtime::with_config(RuntimeConfig {
        clock: clock.clone(),
        seed: Some(7),
    })
    .unwrap();
    (rt, clock)
}

/// Moves the clock by `by` in steps no longer than the update period, and
/// lets the loop run the timers that came due.
fn advance(clock: &ManualClock, ch: &Channel, by: Duration) {
    clock.advance(by);
    ch.sync().unwrap();
    ch.sync().unwrap();
}

// TestBalancer_TwoAddresses_BlackoutPeriod, custom (1 s) and default (10 s).
#[test]
fn blackout_period_custom_and_default() {
    for (extra, blackout) in [
        (r#""blackoutPeriod":"1s""#, Duration::from_secs(1)),
        (r#""blackoutPeriod":null"#, Duration::from_secs(10)),
    ] {
        let (s1, s2) = (start(Report::Oob), start(Report::Oob));
        set_oob(&s1, app(10.0, 1.0));
        set_oob(&s2, app(10.0, 0.1));
        let (rt, clock) = manual();
        let ch = host_channel(&rt, &config(true, extra));
        ch.update_addresses(vec![addr_of(&s1), addr_of(&s2)])
            .unwrap();
        let mut r = ch.reader();
        ensure_reached(&mut r, 2);
        // Reports have come (the clock still at the start).
        std::thread::sleep(Duration::from_millis(100));
        advance(&clock, &ch, Duration::from_millis(100));
        assert_weights(&mut r, &[(&s1, 1), (&s2, 1)]);
        // Just before the blackout ends (one update period before: the
        // update timer then runs).
        advance(&clock, &ch, blackout - Duration::from_millis(200));
        assert_weights(&mut r, &[(&s1, 1), (&s2, 1)]);
        // Past it.
        advance(&clock, &ch, Duration::from_millis(200));
        if let Err(e) = check_weights(&mut r, &[(&s1, 1), (&s2, 10)]) {
            panic!("blackout {blackout:?}: {e}");
        }
    }
}

// TestBalancer_TwoAddresses_WeightExpiration: OOB reports (period 60 s, so
// one each), per-call trailers too (ignored with OOB on), expiration 60 s.
#[test]
fn weight_expiration() {
    let (s1, s2) = (start(Report::Both), start(Report::Both));
    set_oob(&s1, app(10.0, 1.0));
    set_oob(&s2, app(10.0, 0.1));
    // gRPC-Go's servers report per call too, with no load set: nothing; make
    // the per-call load the opposite, so counting it would show.
    set_call(&s1, app(10.0, 0.1));
    set_call(&s2, app(10.0, 1.0));
    let (rt, clock) = manual();
    let ch = host_channel(&rt, &config(true, r#""oobReportingPeriod":"60s""#));
    ch.update_addresses(vec![addr_of(&s1), addr_of(&s2)])
        .unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 2);
    std::thread::sleep(Duration::from_millis(100));
    advance(&clock, &ch, Duration::from_millis(100));
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
    // 59 s after the start: still honoured.
    advance(
        &clock,
        &ch,
        Duration::from_secs(59) - Duration::from_millis(100),
    );
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
    // 61 s: expired, even.
    advance(&clock, &ch, Duration::from_secs(2));
    assert_weights(&mut r, &[(&s1, 1), (&s2, 1)]);
}

// ---------------------------------------------------------------------------
// Beyond the Go test file: edges of gRPC-Go's balancer.go.

/// gRPC-Go `endpointWeight.weight` (balancer.go): blackout is
/// `now - nonEmptySince < blackoutPeriod` → 0, so the weight counts from
/// exactly `nonEmptySince + blackoutPeriod`; per-call reports, the first at
/// the start. A rebuild is forced with a same-address resolver update
/// (gRPC-Go builds a new picker, and scheduler, on each).
#[test]
fn blackout_ends_exactly_at_first_report_plus_period() {
    let (s1, s2) = (start(Report::Call), start(Report::Call));
    set_call(&s1, app(10.0, 1.0));
    set_call(&s2, app(10.0, 0.1));
    let (rt, clock) = manual();
    let ch = host_channel(&rt, &config(false, r#""blackoutPeriod":"1s""#));
    let list = vec![addr_of(&s1), addr_of(&s2)];
    ch.update_addresses(list.clone()).unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 2);
    advance(
        &clock,
        &ch,
        Duration::from_secs(1) - Duration::from_nanos(1),
    );
    ch.update_addresses(list.clone()).unwrap();
    ch.sync().unwrap();
    assert_weights(&mut r, &[(&s1, 1), (&s2, 1)]);
    advance(&clock, &ch, Duration::from_nanos(1));
    ch.update_addresses(list).unwrap();
    ch.sync().unwrap();
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
}

/// gRPC-Go: `now - lastUpdated >= weightExpirationPeriod` → 0. OOB reports
/// (one each: period 60 s), expiration 10 s.
#[test]
fn weights_expire_exactly_at_last_report_plus_period() {
    let (s1, s2) = (start(Report::Oob), start(Report::Oob));
    set_oob(&s1, app(10.0, 1.0));
    set_oob(&s2, app(10.0, 0.1));
    let (rt, clock) = manual();
    let ch = host_channel(
        &rt,
        &config(
            true,
            r#""oobReportingPeriod":"60s","weightExpirationPeriod":"10s""#,
        ),
    );
    let list = vec![addr_of(&s1), addr_of(&s2)];
    ch.update_addresses(list.clone()).unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 2);
    wait_until("both streams reported", || {
        s1.orca_streams() == 1 && s2.orca_streams() == 1
    });
    std::thread::sleep(Duration::from_millis(100));
    advance(
        &clock,
        &ch,
        Duration::from_secs(10) - Duration::from_nanos(1),
    );
    ch.update_addresses(list.clone()).unwrap();
    ch.sync().unwrap();
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
    advance(&clock, &ch, Duration::from_nanos(1));
    ch.update_addresses(list).unwrap();
    ch.sync().unwrap();
    assert_weights(&mut r, &[(&s1, 1), (&s2, 1)]);
}

/// gRPC-Go `updateConfig`: a config update keeps each endpoint's weight and
/// times (only the OOB listener may restart): weights past their blackout
/// stay in use at once under the new config.
#[test]
fn a_config_update_keeps_weights_past_their_blackout() {
    let (s1, s2) = (start(Report::Call), start(Report::Call));
    set_call(&s1, app(10.0, 1.0));
    set_call(&s2, app(10.0, 0.1));
    let (rt, clock) = manual();
    let ch = host_channel(&rt, &config(false, r#""blackoutPeriod":"5s""#));
    let list = vec![addr_of(&s1), addr_of(&s2)];
    ch.update_addresses(list.clone()).unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 2);
    advance(&clock, &ch, Duration::from_secs(6));
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
    ch.update_service_config(&config(
        false,
        r#""blackoutPeriod":"5s","weightUpdatePeriod":"0.2s","errorUtilizationPenalty":1"#,
    ))
    .unwrap();
    ch.update_addresses(list).unwrap();
    ch.sync().unwrap();
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
}

/// gRPC-Go `updateConfig`: a new `oobReportingPeriod` restarts the listener
/// (`orca.RegisterOOBListener` with the new interval): a new stream asking
/// for the new period.
#[test]
fn a_new_oob_period_reopens_the_stream_with_it() {
    let srv = start(Report::Oob);
    set_oob(&srv, app(10.0, 1.0));
    let rt = Runtime::new().unwrap();
    let ch = host_channel(&rt, &config(true, r#""oobReportingPeriod":"0.02s""#));
    ch.update_addresses(vec![addr_of(&srv)]).unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 1);
    wait_until("the stream", || srv.orca_streams() == 1);
    assert_eq!(srv.orca_interval(), Some(Duration::from_millis(20)));
    ch.update_service_config(&config(true, r#""oobReportingPeriod":"0.05s""#))
        .unwrap();
    ch.update_addresses(vec![addr_of(&srv)]).unwrap();
    wait_until("a second stream", || srv.orca_streams() == 2);
    assert_eq!(srv.orca_interval(), Some(Duration::from_millis(50)));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(srv.in_flight(), 1, "the old stream closed");
}

/// gRPC-Go `updateEndpointsLocked`: a removed endpoint's weight is deleted;
/// re-added, it starts with none (and, once it reports, a new blackout):
/// meanwhile it gets the others' mean.
#[test]
fn a_removed_and_re_added_endpoint_starts_a_new_blackout() {
    let s: Vec<TestServer> = (0..3).map(|_| start(Report::Call)).collect();
    set_call(&s[0], app(10.0, 1.0)); // 10
    set_call(&s[1], app(10.0, 0.5)); // 20
    set_call(&s[2], app(10.0, 0.1)); // 100
    let (rt, clock) = manual();
    let ch = host_channel(&rt, &config(false, r#""blackoutPeriod":"5s""#));
    let all: Vec<Address> = s.iter().map(addr_of).collect();
    ch.update_addresses(all.clone()).unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 3);
    advance(&clock, &ch, Duration::from_secs(6));
    assert_weights(&mut r, &[(&s[0], 1), (&s[1], 2), (&s[2], 10)]);
    ch.update_addresses(all[..2].to_vec()).unwrap();
    ch.sync().unwrap();
    assert_weights(&mut r, &[(&s[0], 1), (&s[1], 2)]);
    ch.update_addresses(all.clone()).unwrap();
    ensure_reached(&mut r, 3);
    advance(&clock, &ch, Duration::from_millis(200));
    // s[2] in blackout: the mean of 10 and 20, 15 → 10:20:15.
    assert_weights(&mut r, &[(&s[0], 2), (&s[1], 4), (&s[2], 3)]);
    advance(&clock, &ch, Duration::from_secs(5));
    assert_weights(&mut r, &[(&s[0], 1), (&s[1], 2), (&s[2], 10)]);
}

/// gRPC-Go keys endpoints by their address *set* (`resolver.EndpointMap`):
/// the same addresses in another order are the same endpoint, its weight
/// kept (no new blackout).
#[test]
fn reordering_an_endpoints_addresses_keeps_its_weight() {
    let (s1, s2) = (start(Report::Call), start(Report::Call));
    set_call(&s1, app(10.0, 1.0));
    set_call(&s2, app(10.0, 0.1));
    let d1 = Address::new(format!("127.0.0.1:{}", free_port()));
    let d2 = Address::new(format!("127.0.0.1:{}", free_port()));
    let (rt, clock) = manual();
    let ch = host_channel(&rt, &config(false, r#""blackoutPeriod":"5s""#));
    ch.update_endpoints(vec![
        Endpoint::new(vec![addr_of(&s1), d1.clone()]),
        Endpoint::new(vec![addr_of(&s2), d2.clone()]),
    ])
    .unwrap();
    let mut r = ch.reader();
    ensure_reached(&mut r, 2);
    advance(&clock, &ch, Duration::from_secs(6));
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
    ch.update_endpoints(vec![
        Endpoint::new(vec![d2, addr_of(&s2)]),
        Endpoint::new(vec![d1, addr_of(&s1)]),
    ])
    .unwrap();
    ch.sync().unwrap();
    advance(&clock, &ch, Duration::from_millis(200));
    assert_weights(&mut r, &[(&s1, 1), (&s2, 10)]);
}
