//! Normative statements of the gRFCs for the LB policies (A42 ring
//! hash, A48 least request, A50 outlier detection, A58 WRR, A61 pick_first /
//! endpoints, A62 pick_first, A76 ring hash keys) that the existing suites do
//! not already pin, checked one by one through `TestClientConn`.
//!
//! Where switchyard departs from the text on purpose: pick_first asks for
//! no re-resolution itself at the end of a pass (A61); its subchannels ask
//! on every failed attempt and lost connection, as gRPC-Go's pickfirstleaf
//! leaves it to them (C-core and grpc-java do it in pick_first). Where a
//! gRFC contradicts itself: A50's failure-percentage threshold ejects above
//! it, not at it (the algorithm, C-core, gRPC-Go; the proto comment says
//! "greater than or equal"), and a `maxEjectionPercent` of 0 ejects nobody
//! (gRPC-Go's check); A42's `minRingSize: 0` is the default (gRPC-Go's
//! reading of a proto3 zero).

use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::ConnectivityState::{Connecting, Idle, Ready, TransientFailure};
use switchyard::*;

const A: &str = "127.0.0.1:5001";
const B: &str = "127.0.0.1:5002";
const C: &str = "127.0.0.1:5003";
const D: &str = "127.0.0.1:5004";

fn build(name: &str) -> Box<dyn Balancer> {
    registry::get(name).expect("registered").build()
}

fn parse(name: &str, cfg: Value) -> Result<Option<LbConfig>, String> {
    registry::get(name).unwrap().parse_config(&cfg)
}

fn eps(addrs: &[&str]) -> Vec<Endpoint> {
    addrs
        .iter()
        .map(|a| Endpoint::from(Address::new(*a)))
        .collect()
}

fn flush(cc: &mut TestClientConn, lb: &mut dyn Balancer) {
    for _ in 0..100 {
        if !cc.run_work(lb) {
            return;
        }
    }
}

fn sc(cc: &TestClientConn, addr: &str) -> SubConnId {
    cc.subconn_for(addr)
        .unwrap_or_else(|| panic!("no subchannel for {addr}"))
        .id()
}

fn addr_of(cc: &TestClientConn, id: SubConnId) -> String {
    cc.subconn(id).unwrap().addr().to_string()
}

fn set(cc: &mut TestClientConn, lb: &mut dyn Balancer, addr: &str, s: ConnectivityState) {
    let id = sc(cc, addr);
    cc.set_state(lb, id, s);
    flush(cc, lb);
}

fn fail(cc: &mut TestClientConn, lb: &mut dyn Balancer, id: SubConnId) {
    cc.set_subconn_state(
        lb,
        id,
        SubConnState {
            state: TransientFailure,
            error: Some(std::sync::Arc::from("connection refused")),
        },
    );
    flush(cc, lb);
}

fn share_of(cc: &mut TestClientConn, n: usize, ok: bool) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for _ in 0..n {
        let p = if ok {
            cc.pick_done(&DoneInfo::OK)
        } else {
            cc.pick()
        };
        match p {
            Picked::Complete { subconn, .. } => {
                *m.entry(addr_of(cc, subconn)).or_insert(0) += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    m
}

// ===========================================================================
// A48 least_request
// ===========================================================================

/// A48 "Duplicate addresses in resolution result": "the
/// least_request_experimental policy will de-duplicate the addresses in the
/// address list it receives so that it does not create more than one
/// connection to a given address. However ... we will ignore the
/// additional weight given to the address."
#[test]
fn a48_lr_duplicate_addresses_one_connection_and_no_extra_weight() {
    let mut cc = TestClientConn::new();
    let mut lb = build("least_request_experimental");
    cc.update(&mut *lb, ClientConnState::new(eps(&[A, A, A, B]), None))
        .unwrap();
    flush(&mut cc, &mut *lb);
    let mut addrs: Vec<String> = cc.connects().iter().map(|id| addr_of(&cc, *id)).collect();
    addrs.sort();
    assert_eq!(
        addrs,
        vec![A.to_string(), B.to_string()],
        "one connection per address"
    );
    set(&mut cc, &mut *lb, A, Ready);
    set(&mut cc, &mut *lb, B, Ready);
    let m = share_of(&mut cc, 2000, true);
    let a = m.get(A).copied().unwrap_or(0) as f64 / 2000.0;
    assert!(
        (0.4..0.6).contains(&a),
        "A's share {a} (3 copies of A must not weigh 3x): {m:?}"
    );
}

/// A48 "Outstanding request counters": "the picker should add a callback
/// for atomically decrementing the subchannel counter once the RPC
/// finishes (regardless of `Status` code)." Load A with 20 RPCs that all
/// finish with an error: afterwards A and B are even again.
#[test]
fn a48_lr_counter_decremented_for_failed_rpcs_too() {
    let mut cc = TestClientConn::new();
    let mut lb = build("least_request_experimental");
    cc.update(&mut *lb, ClientConnState::new(eps(&[A, B]), None))
        .unwrap();
    flush(&mut cc, &mut *lb);
    set(&mut cc, &mut *lb, A, Ready);
    // Only A READY: every pick goes to A; hold 20, finish them failed.
    let picker = cc.picker().unwrap().clone();
    let mut local = PickLocal::new(3);
    let mut held = Vec::new();
    for _ in 0..20 {
        match picker.pick(&PickInfo::default(), &mut local) {
            PickResult::Complete { subconn, done } => held.push((subconn, done)),
            _ => panic!("A READY"),
        }
    }
    set(&mut cc, &mut *lb, B, Ready);
    for (subconn, done) in &held {
        done.report(
            subconn,
            &DoneInfo {
                error: Some("boom"),
                code: Code::Internal,
                ..Default::default()
            },
        );
    }
    drop(held);
    let m = share_of(&mut cc, 2000, true);
    let a = m.get(A).copied().unwrap_or(0) as f64 / 2000.0;
    assert!((0.4..0.6).contains(&a), "A's share {a}: {m:?}");
}

/// A48 "Aggregated Connectivity State": "a subchannel that enters
/// TRANSIENT_FAILURE should be considered to stay in TRANSIENT_FAILURE
/// until it reports READY" — one endpoint TF then CONNECTING, the other TF:
/// the aggregate is TRANSIENT_FAILURE.
#[test]
fn a48_lr_sticky_tf_in_aggregation() {
    let mut cc = TestClientConn::new();
    let mut lb = build("least_request_experimental");
    cc.update(&mut *lb, ClientConnState::new(eps(&[A, B]), None))
        .unwrap();
    flush(&mut cc, &mut *lb);
    set(&mut cc, &mut *lb, A, TransientFailure);
    set(&mut cc, &mut *lb, A, Idle);
    set(&mut cc, &mut *lb, A, Connecting);
    set(&mut cc, &mut *lb, B, TransientFailure);
    assert_eq!(cc.state(), Some(TransientFailure));
    set(&mut cc, &mut *lb, B, Idle);
    set(&mut cc, &mut *lb, B, Connecting);
    assert_eq!(cc.state(), Some(TransientFailure));
}

// ===========================================================================
// A58 weighted_round_robin
// ===========================================================================

fn wrr_ready(addrs: &[&str], cfg: Value) -> (TestClientConn, Box<dyn Balancer>) {
    let mut cc = TestClientConn::new();
    let mut lb = build("weighted_round_robin");
    let cfg = parse("weighted_round_robin", cfg).unwrap();
    cc.update(&mut *lb, ClientConnState::new(eps(addrs), cfg))
        .unwrap();
    flush(&mut cc, &mut *lb);
    for id in cc.connects().to_vec() {
        cc.set_state(&mut *lb, id, Ready);
    }
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.state(), Some(Ready));
    (cc, lb)
}

/// A58 "Handling Parent/Resolver Updates": "In all languages,
/// weighted_round_robin policy de-duplicates redundant addresses in
/// resolver updates."
#[test]
fn a58_wrr_deduplicates_redundant_addresses() {
    let (mut cc, _lb) = wrr_ready(&[A, A, B], json!({}));
    let mut addrs: Vec<String> = cc.connects().iter().map(|id| addr_of(&cc, *id)).collect();
    addrs.sort();
    assert_eq!(addrs, vec![A.to_string(), B.to_string()]);
    let m = share_of(&mut cc, 1000, false);
    assert_eq!(m.get(A), Some(&500), "{m:?}");
}

/// A58 config: "weight_update_period: ... Values less than 100ms are capped
/// at 100ms" — the timer itself runs every 100 ms.
#[test]
fn a58_wrr_update_period_below_100ms_timer_runs_at_100ms() {
    let (mut cc, mut lb) = wrr_ready(&[A, B], json!({"weightUpdatePeriod": "0.01s"}));
    let now = cc.now();
    let timers = cc.timers();
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert_eq!(timers[0].1 - now, Duration::from_millis(100));
    assert_eq!(cc.advance(&mut *lb, Duration::from_millis(99)), 0);
    assert_eq!(cc.advance(&mut *lb, Duration::from_millis(1)), 1);
}

fn report_loads(
    cc: &mut TestClientConn,
    n: usize,
    load: impl Fn(&str) -> Vec<(&'static str, f64)>,
) {
    let picker = cc.picker().unwrap().clone();
    let mut local = PickLocal::new(9);
    for _ in 0..n {
        match picker.pick(&PickInfo::default(), &mut local) {
            PickResult::Complete { subconn, done } => {
                let l = load(subconn.addr());
                done.report(
                    subconn,
                    &DoneInfo {
                        load: &l,
                        ..Default::default()
                    },
                );
            }
            _ => panic!("READY"),
        }
    }
}

/// A58 "Subchannel Weights": "`last_updated` tracks the last time a report
/// with non-zero utilization and QPS was received" (UpdateWeight returns
/// before touching last_updated when the new weight is 0). Reports with
/// qps 0 after the first good ones must not keep the weight from expiring.
#[test]
fn a58_wrr_zero_qps_reports_do_not_refresh_last_updated() {
    let (mut cc, mut lb) = wrr_ready(
        &[A, B],
        json!({"blackoutPeriod": "0s", "weightExpirationPeriod": "10s"}),
    );
    report_loads(&mut cc, 100, |a| {
        let qps = if a == A { 1.0 } else { 9.0 };
        vec![("rps_fractional", qps), ("application_utilization", 1.0)]
    });
    cc.advance(&mut *lb, Duration::from_secs(1));
    let m = share_of(&mut cc, 1000, false);
    assert_eq!(m.get(A), Some(&100), "weighted 1:9 {m:?}");
    // Zero-qps reports at t = 5 s.
    cc.advance(&mut *lb, Duration::from_secs(4));
    report_loads(&mut cc, 100, |_| {
        vec![("rps_fractional", 0.0), ("application_utilization", 1.0)]
    });
    // At t = 11 s the weights (last good report at t = 0) have expired.
    cc.advance(&mut *lb, Duration::from_secs(6));
    let m = share_of(&mut cc, 1000, false);
    assert_eq!(m.get(A), Some(&500), "expired → even {m:?}");
}

/// A58: "When less than two subchannels have load info, all subchannels
/// will get the same weight and the policy will behave the same as
/// round_robin." One endpoint of three reporting: even split.
#[test]
fn a58_wrr_one_reporting_endpoint_is_round_robin() {
    let (mut cc, mut lb) = wrr_ready(&[A, B, C], json!({"blackoutPeriod": "0s"}));
    report_loads(&mut cc, 99, |a| {
        if a == A {
            vec![("rps_fractional", 100.0), ("application_utilization", 0.1)]
        } else {
            vec![]
        }
    });
    cc.advance(&mut *lb, Duration::from_secs(1));
    let m = share_of(&mut cc, 900, false);
    for a in [A, B, C] {
        assert_eq!(m.get(a), Some(&300), "{m:?}");
    }
}

/// A58 "Handling Subchannel Connectivity State Notifications": "READY if
/// any subchannel is READY, else CONNECTING if any is CONNECTING, else
/// TRANSIENT_FAILURE" with sticky TF as in round_robin (A61): a subchannel
/// bouncing TF → CONNECTING counts as TF.
#[test]
fn a58_wrr_sticky_tf_in_aggregation() {
    let mut cc = TestClientConn::new();
    let mut lb = build("weighted_round_robin");
    cc.update(&mut *lb, ClientConnState::new(eps(&[A, B]), None))
        .unwrap();
    flush(&mut cc, &mut *lb);
    set(&mut cc, &mut *lb, A, TransientFailure);
    set(&mut cc, &mut *lb, B, TransientFailure);
    assert_eq!(cc.state(), Some(TransientFailure));
    set(&mut cc, &mut *lb, A, Idle);
    set(&mut cc, &mut *lb, A, Connecting);
    assert_eq!(cc.state(), Some(TransientFailure));
}

// ===========================================================================
// A50 outlier_detection
// ===========================================================================

const OD: &str = "outlier_detection_experimental";

fn od_cfg(extra: Value) -> Option<LbConfig> {
    let mut c = json!({"childPolicy": [{"round_robin": {}}]});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    parse(OD, c).unwrap()
}

fn od_ready(extra: Value) -> (TestClientConn, Box<dyn Balancer>, Vec<SubConnId>) {
    let mut cc = TestClientConn::new();
    let mut od = build(OD);
    cc.update(
        &mut *od,
        ClientConnState::new(eps(&[A, B, C]), od_cfg(extra)),
    )
    .unwrap();
    flush(&mut cc, &mut *od);
    let ids = cc.connects().to_vec();
    for id in &ids {
        cc.set_state(&mut *od, *id, Ready);
    }
    flush(&mut cc, &mut *od);
    assert_eq!(cc.state(), Some(Ready));
    (cc, od, ids)
}

fn od_traffic(
    cc: &mut TestClientConn,
    n: usize,
    failing: &[SubConnId],
) -> HashMap<SubConnId, usize> {
    let picker = cc.picker().unwrap().clone();
    let mut local = PickLocal::new(5);
    let mut seen = HashMap::new();
    for _ in 0..n {
        if let PickResult::Complete { subconn, done } =
            picker.pick(&PickInfo::default(), &mut local)
        {
            let failed = failing.contains(&subconn.id());
            done.report(
                subconn,
                &DoneInfo {
                    error: failed.then_some("err"),
                    code: if failed { Code::Unavailable } else { Code::Ok },
                    ..Default::default()
                },
            );
            *seen.entry(subconn.id()).or_insert(0) += 1;
        }
    }
    seen
}

fn fp() -> Value {
    json!({"interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 100,
           "failurePercentageEjection": {"threshold": 50, "enforcementPercentage": 100,
                                          "minimumHosts": 3, "requestVolume": 5}})
}

/// A50 "Outlier Detection Behavior": "When a new config is provided, if at
/// least one of [the algorithms] is set: If the timer start timestamp is
/// unset, set it to the current time and start the timer for the configured
/// interval, then for each address, reset the call counters." Failures
/// counted under a counting config, then a no-op config (timestamp unset),
/// then counting again: the old failures must not eject.
#[test]
fn a50_od_counters_reset_when_counting_resumes_after_noop() {
    let (mut cc, mut od, ids) = od_ready(fp());
    od_traffic(&mut cc, 60, &ids[2..]);
    cc.update(
        &mut *od,
        ClientConnState::new(eps(&[A, B, C]), od_cfg(json!({"interval": "10s"}))),
    )
    .unwrap();
    flush(&mut cc, &mut *od);
    cc.advance(&mut *od, Duration::from_secs(1));
    cc.update(
        &mut *od,
        ClientConnState::new(eps(&[A, B, C]), od_cfg(fp())),
    )
    .unwrap();
    flush(&mut cc, &mut *od);
    // The timer runs a full interval from the restart.
    assert_eq!(cc.advance(&mut *od, Duration::from_millis(9_999)), 0);
    assert!(cc.advance(&mut *od, Duration::from_millis(1)) >= 1);
    let seen = od_traffic(&mut cc, 30, &[]);
    assert_eq!(seen.len(), 3, "no ejection from pre-reset counts: {seen:?}");
}

/// A50 "Ejection and Un-ejection" / timer step 5: un-eject when "the
/// current time is after ejection_timestamp + min(base_ejection_time *
/// multiplier, max(base_ejection_time, max_ejection_time))" where
/// ejection_timestamp is "the timestamp that was recorded when the timer
/// fired". With maxEjectionTime below baseEjectionTime, the base wins.
#[test]
fn a50_od_max_ejection_time_below_base_uses_base() {
    let mut cfg = fp();
    cfg["baseEjectionTime"] = json!("30s");
    cfg["maxEjectionTime"] = json!("5s");
    let (mut cc, mut od, ids) = od_ready(cfg);
    od_traffic(&mut cc, 60, &ids[2..]);
    cc.advance(&mut *od, Duration::from_secs(10)); // t=10 ejected
    let seen = od_traffic(&mut cc, 30, &[]);
    assert!(!seen.contains_key(&ids[2]), "ejected: {seen:?}");
    // Sweeps at t=20, 30 keep it ejected (with max 5 s it would be back at t=20).
    cc.advance(&mut *od, Duration::from_secs(20)); // t=30
    let seen = od_traffic(&mut cc, 30, &[]);
    assert!(
        !seen.contains_key(&ids[2]),
        "still ejected at t=30 (base 30 s, not max 5 s): {seen:?}"
    );
    // A50: un-eject when the time is *after* 10 + 30: not at the t=40 sweep.
    cc.advance(&mut *od, Duration::from_secs(10)); // t=40
    let seen = od_traffic(&mut cc, 30, &[]);
    assert!(
        !seen.contains_key(&ids[2]),
        "t=40 is not after 40: {seen:?}"
    );
    cc.advance(&mut *od, Duration::from_secs(10)); // t=50
    let seen = od_traffic(&mut cc, 30, &[]);
    assert!(seen.contains_key(&ids[2]), "returned at t=50: {seen:?}");
}

/// A50 "Validation": durations must be non-negative and the percentages at
/// most 100, "if any of these requirements is violated, that should be
/// treated as a parsing error"; the other uint32 fields take any value.
#[test]
fn a50_od_validation() {
    let rr = json!([{"round_robin": {}}]);
    for bad in [
        json!({"childPolicy": rr, "interval": "-1s"}),
        json!({"childPolicy": rr, "baseEjectionTime": "-0.5s"}),
        json!({"childPolicy": rr, "maxEjectionTime": "-3s"}),
        json!({"childPolicy": rr, "maxEjectionPercent": 101}),
        json!({"childPolicy": rr, "successRateEjection": {"enforcementPercentage": 101}}),
        json!({"childPolicy": rr, "failurePercentageEjection": {"enforcementPercentage": 101}}),
        json!({"childPolicy": rr, "failurePercentageEjection": {"threshold": 101}}),
        json!({"childPolicy": rr, "interval": "315576000001s"}),
    ] {
        assert!(parse(OD, bad.clone()).is_err(), "{bad} accepted");
    }
    for ok in [
        json!({"childPolicy": rr, "maxEjectionPercent": 100}),
        json!({"childPolicy": rr, "successRateEjection": {"stdevFactor": 100000, "minimumHosts": 0, "requestVolume": 0}}),
        json!({"childPolicy": rr, "interval": "0s"}),
    ] {
        assert!(parse(OD, ok.clone()).is_ok(), "{ok} refused");
    }
}

/// A50 "Failure Percentage Algorithm" step 2.3: eject when "the address's
/// failure percentage is greater than failure_percentage_ejection.threshold"
/// — exactly at the threshold stays.
#[test]
fn a50_od_failure_percentage_at_threshold_stays() {
    let (mut cc, mut od, ids) = od_ready(fp());
    // 3 endpoints round-robin: 60 picks = 20 each; fail every other one on C.
    let picker = cc.picker().unwrap().clone();
    let mut local = PickLocal::new(5);
    let mut c_count = 0;
    for _ in 0..60 {
        if let PickResult::Complete { subconn, done } =
            picker.pick(&PickInfo::default(), &mut local)
        {
            let failed = if subconn.id() == ids[2] {
                c_count += 1;
                c_count % 2 == 0
            } else {
                false
            };
            done.report(
                subconn,
                &DoneInfo {
                    error: failed.then_some("err"),
                    code: if failed { Code::Unavailable } else { Code::Ok },
                    ..Default::default()
                },
            );
        }
    }
    assert_eq!(c_count % 2, 0);
    cc.advance(&mut *od, Duration::from_secs(10));
    let seen = od_traffic(&mut cc, 30, &[]);
    assert!(
        seen.contains_key(&ids[2]),
        "50% == threshold 50: not ejected {seen:?}"
    );
}

// ===========================================================================
// A61 / A62 pick_first
// ===========================================================================

fn pf_update(cc: &mut TestClientConn, lb: &mut dyn Balancer, addrs: &[&str]) {
    cc.update(lb, ClientConnState::new(eps(addrs), None))
        .unwrap();
    flush(cc, lb);
}

/// A61 "Happy Eyeballs": "The first time any connection attempt succeeds
/// ... we choose that connection. If there is a timer running, we cancel
/// the timer." and "Once a subchannel does become READY, pick_first will
/// unref all other subchannels".
#[test]
fn a61_pf_ready_cancels_timer_and_drops_the_others() {
    let mut cc = TestClientConn::new();
    let mut lb = build("pick_first");
    pf_update(&mut cc, &mut *lb, &[A, B, C]);
    assert_eq!(cc.connects().len(), 1);
    cc.advance(&mut *lb, Duration::from_millis(250));
    assert_eq!(cc.connects().len(), 2, "B after the 250 ms delay");
    assert_eq!(cc.timers().len(), 1, "timer for C armed");
    let b = sc(&cc, B);
    cc.set_state(&mut *lb, b, Connecting);
    cc.set_state(&mut *lb, b, Ready);
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.state(), Some(Ready));
    assert!(cc.timers().is_empty(), "timer cancelled: {:?}", cc.timers());
    let shut: Vec<String> = cc.shutdowns().iter().map(|id| addr_of(&cc, *id)).collect();
    assert!(shut.contains(&A.to_string()), "A dropped: {shut:?}");
    assert!(!shut.contains(&B.to_string()));
    cc.advance(&mut *lb, Duration::from_secs(5));
    assert_eq!(cc.connects().len(), 2, "no attempt on C");
}

/// A61: after the first pass fails, "The pick_first policy will therefore
/// automatically request a connection whenever a subchannel reports IDLE"
/// and it stays TRANSIENT_FAILURE. A61 also has pick_first itself request
/// re-resolution at the end of the first pass and then after every N
/// failures ("when that number reaches the number of subchannels, we will
/// request re-resolution"); switchyard (like gRPC-Go's pickfirstleaf, "the
/// SubConn already does that before reporting TRANSIENT_FAILURE") leaves
/// that to the subchannel layer (src/subchannel/pool.rs `fail`), so the
/// policy asks for none: pinned here as the deliberate choice it is
/// (src/policy/pick_first.rs `refresh_failure` doc).
#[test]
fn a61_pf_sticky_tf_reconnects_on_idle_reresolution_left_to_subchannels() {
    let mut cc = TestClientConn::new();
    let mut lb = build("pick_first");
    pf_update(&mut cc, &mut *lb, &[A, B]);
    let a = sc(&cc, A);
    let r0 = cc.resolve_now_requests();
    fail(&mut cc, &mut *lb, a);
    let b = sc(&cc, B);
    fail(&mut cc, &mut *lb, b);
    assert_eq!(cc.state(), Some(TransientFailure));
    // A leaves backoff: IDLE → connect asked at once.
    let before = cc.connects().len();
    cc.set_state(&mut *lb, a, Idle);
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.connects().len(), before + 1, "connect on IDLE");
    assert_eq!(*cc.connects().last().unwrap(), a);
    fail(&mut cc, &mut *lb, a);
    cc.set_state(&mut *lb, a, Idle);
    flush(&mut cc, &mut *lb);
    fail(&mut cc, &mut *lb, a);
    assert_eq!(cc.state(), Some(TransientFailure));
    assert_eq!(
        cc.resolve_now_requests(),
        r0,
        "the policy itself never re-resolves here"
    );
}

/// A61: "Whenever we start a connection attempt on a given address, if it
/// is not the last address in the list, we start a timer" / "if it is the
/// last subchannel in the list, we will wait for the attempt to complete."
#[test]
fn a61_pf_no_timer_after_the_last_address() {
    let mut cc = TestClientConn::new();
    let mut lb = build("pick_first");
    pf_update(&mut cc, &mut *lb, &[A, B]);
    assert_eq!(cc.timers().len(), 1);
    cc.advance(&mut *lb, Duration::from_millis(250));
    assert_eq!(cc.connects().len(), 2);
    assert!(cc.timers().is_empty(), "{:?}", cc.timers());
    cc.advance(&mut *lb, Duration::from_secs(10));
    assert_eq!(cc.connects().len(), 2);
    assert_eq!(cc.state(), Some(Connecting));
}

/// A61: on a new address list's pass, "If the subchannel is in state
/// TRANSIENT_FAILURE, then we know that it is in backoff ... we treat it as
/// if we have already made a connection attempt on this subchannel, and we
/// will immediately move on to the next subchannel."; "If the subchannel is
/// in state CONNECTING, we do not need to actually request a connection,
/// but we will treat it as if we did ... start the timer".
#[test]
fn a61_pf_new_pass_skips_tf_and_times_connecting() {
    let mut cc = TestClientConn::new();
    let mut lb = build("pick_first");
    pf_update(&mut cc, &mut *lb, &[A, B, C]);
    let a = sc(&cc, A);
    fail(&mut cc, &mut *lb, a); // moves on to B at once
    let b = sc(&cc, B);
    cc.set_state(&mut *lb, b, Connecting);
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.connects().len(), 2);
    // New list [A, C, B]: A is TF → skip at once to C (IDLE): connect now.
    pf_update(&mut cc, &mut *lb, &[A, C, B]);
    let c = sc(&cc, C);
    assert_eq!(sc(&cc, A), a, "A kept");
    assert!(
        cc.connects().contains(&c),
        "C connects without waiting: {:?}",
        cc.connects()
    );
    assert_eq!(cc.state(), Some(Connecting));
    // C not last: timer armed.
    assert_eq!(cc.timers().len(), 1);
}

// ===========================================================================
// A42 / A76 ring_hash
// ===========================================================================

const RH: &str = "ring_hash_experimental";

fn rh_connect_target(endpoints: Vec<Endpoint>, hash: u64) -> Option<String> {
    let mut cc = TestClientConn::new();
    let mut lb = build(RH);
    let cfg = parse(RH, json!({"minRingSize": 64, "maxRingSize": 64})).unwrap();
    cc.update(&mut *lb, ClientConnState::new(endpoints, cfg))
        .unwrap();
    flush(&mut cc, &mut *lb);
    let info = PickInfo {
        hash: Some(hash),
        ..Default::default()
    };
    assert_eq!(cc.pick_with(&info, None), Picked::Queue);
    flush(&mut cc, &mut *lb);
    cc.connects().first().map(|id| addr_of(&cc, *id))
}

/// A76 "Explicitly setting the endpoint hash key": "If this attribute is
/// not set or empty, then the endpoint's first address is hashed".
#[test]
fn a76_rh_empty_hash_key_places_by_first_address() {
    let plain = || eps(&[A, B, C]);
    let empty = || {
        [A, B, C]
            .iter()
            .map(|a| Endpoint::from(Address::new(*a)).with_hash_key(""))
            .collect::<Vec<_>>()
    };
    let mut h: u64 = 0x1234_5678;
    for _ in 0..40 {
        h = h
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        assert_eq!(
            rh_connect_target(plain(), h),
            rh_connect_target(empty(), h),
            "hash {h:#x}"
        );
    }
}

/// A42 "Picker Behavior": an IDLE endpoint hit by a pick is asked to
/// connect and the pick queues; A42: "Implementations must generate a new
/// picker every time a subchannel's state changes" — a READY endpoint
/// exists (aggregate stays READY) and another goes IDLE → CONNECTING: a new
/// picker is published.
#[test]
fn a42_rh_new_picker_on_each_subchannel_state_change() {
    let mut cc = TestClientConn::new();
    let mut lb = build(RH);
    let cfg = parse(RH, json!({"minRingSize": 64, "maxRingSize": 64})).unwrap();
    cc.update(&mut *lb, ClientConnState::new(eps(&[A, B, C]), cfg))
        .unwrap();
    flush(&mut cc, &mut *lb);
    // Connect two endpoints through picks with varied hashes.
    let mut h: u64 = 99;
    let mut tries = 0;
    while cc.connects().len() < 2 && tries < 1000 {
        h = h.wrapping_mul(6364136223846793005).wrapping_add(1);
        let info = PickInfo {
            hash: Some(h),
            ..Default::default()
        };
        let _ = cc.pick_with(&info, None);
        flush(&mut cc, &mut *lb);
        // Make the first connected one READY right away.
        if cc.connects().len() == 1 && cc.state() != Some(Ready) {
            let first = cc.connects()[0];
            cc.set_state(&mut *lb, first, Connecting);
            cc.set_state(&mut *lb, first, Ready);
            flush(&mut cc, &mut *lb);
        }
        tries += 1;
    }
    assert_eq!(cc.connects().len(), 2);
    assert_eq!(cc.state(), Some(Ready));
    let second = cc.connects()[1];
    // (The pick's connect already made that endpoint CONNECTING: pick_first
    // reports it on exit_idle.)
    cc.set_state(&mut *lb, second, Connecting);
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.state(), Some(Ready));
    let n = cc.pickers_published();
    cc.set_state(&mut *lb, second, Ready);
    flush(&mut cc, &mut *lb);
    assert!(
        cc.pickers_published() > n,
        "no new picker on CONNECTING → READY"
    );
}

/// A42 "Subchannel State Handling": "If the connection attempt is not
/// successful, the subchannel will be considered to be in state
/// TRANSIENT_FAILURE, but it will not automatically attempt to reconnect"
/// (only one endpoint, so no proactive recovery connect applies) — and
/// aggregation rule 6 with one endpoint: TRANSIENT_FAILURE.
#[test]
fn a42_rh_single_endpoint_failure_is_tf() {
    let mut cc = TestClientConn::new();
    let mut lb = build(RH);
    cc.update(&mut *lb, ClientConnState::new(eps(&[A]), None))
        .unwrap();
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.state(), Some(Idle), "A42: starts IDLE");
    let info = PickInfo {
        hash: Some(7),
        ..Default::default()
    };
    assert_eq!(cc.pick_with(&info, None), Picked::Queue);
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.connects().len(), 1);
    let a = cc.connects()[0];
    cc.set_state(&mut *lb, a, Connecting);
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *lb, a);
    assert_eq!(cc.state(), Some(TransientFailure), "rule 6");
    assert!(matches!(cc.pick_with(&info, None), Picked::Fail(_)));
}

/// A61 "Address List Updates in Java/Go" + "WRR": weights are kept per
/// endpoint keyed by the unordered set of its addresses; "if an address is
/// added or removed from an existing endpoint, it will be considered a
/// completely new endpoint". E1 = [A, B] weighted 1, E2 = [C] weighted 9;
/// E1 becomes [A, D]: a new endpoint without a weight, so fewer than two
/// endpoints have load info and the split is even.
#[test]
fn a61_wrr_endpoint_with_changed_address_set_loses_its_weight() {
    let e1 = |second: &str| Endpoint::new(vec![Address::new(A), Address::new(second)]);
    let cfg = parse("weighted_round_robin", json!({"blackoutPeriod": "0s"})).unwrap();
    let mut cc = TestClientConn::new();
    let mut lb = build("weighted_round_robin");
    cc.update(
        &mut *lb,
        ClientConnState::new(vec![e1(B), Endpoint::from(Address::new(C))], cfg.clone()),
    )
    .unwrap();
    flush(&mut cc, &mut *lb);
    for id in cc.connects().to_vec() {
        cc.set_state(&mut *lb, id, Ready);
    }
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.state(), Some(Ready));
    report_loads(&mut cc, 100, |a| {
        let qps = if a == C { 9.0 } else { 1.0 };
        vec![("rps_fractional", qps), ("application_utilization", 1.0)]
    });
    cc.advance(&mut *lb, Duration::from_secs(1));
    let m = share_of(&mut cc, 1000, false);
    assert_eq!(m.get(C), Some(&900), "1:9 {m:?}");
    cc.update(
        &mut *lb,
        ClientConnState::new(vec![e1(D), Endpoint::from(Address::new(C))], cfg),
    )
    .unwrap();
    flush(&mut cc, &mut *lb);
    // Whatever the new child connects, make it READY.
    for id in cc.connects().to_vec() {
        if !cc.shutdowns().contains(&id) && addr_of(&cc, id) != C {
            cc.set_state(&mut *lb, id, Connecting);
            cc.set_state(&mut *lb, id, Ready);
        }
    }
    flush(&mut cc, &mut *lb);
    cc.advance(&mut *lb, Duration::from_secs(1));
    let m = share_of(&mut cc, 1000, false);
    assert_eq!(
        m.get(C),
        Some(&500),
        "E1 is a new endpoint: no weight, even split {m:?}"
    );
}

/// A48 "LB Policy Config": "If `choice_count < 2`, the config will be
/// rejected" — an explicit 0 as well (gRPC-Go and grpc-java both reject it:
/// the default only fills an absent field).
#[test]
fn a48_lr_choice_count_zero_rejected() {
    assert!(parse("least_request_experimental", json!({"choiceCount": 0})).is_err());
    assert!(parse("least_request_experimental", json!({"choiceCount": 1})).is_err());
}

/// A58 "Per-Call Load Reporting": "The client does nothing when the
/// per-call load report is expected but missing in the trailing metadata
/// of the response." RPCs finishing without a report must not refresh the
/// weights' last_updated.
#[test]
fn a58_wrr_calls_without_reports_do_not_refresh_weights() {
    let (mut cc, mut lb) = wrr_ready(
        &[A, B],
        json!({"blackoutPeriod": "0s", "weightExpirationPeriod": "10s"}),
    );
    report_loads(&mut cc, 100, |a| {
        let qps = if a == A { 1.0 } else { 9.0 };
        vec![("rps_fractional", qps), ("application_utilization", 1.0)]
    });
    cc.advance(&mut *lb, Duration::from_secs(5));
    let m = share_of(&mut cc, 1000, true);
    assert_eq!(m.get(A), Some(&100), "weighted 1:9 {m:?}");
    cc.advance(&mut *lb, Duration::from_secs(6));
    let m = share_of(&mut cc, 1000, false);
    assert_eq!(m.get(A), Some(&500), "expired → even {m:?}");
}

/// A61 "Ring Hash": "whenever the ring_hash policy gets a subchannel
/// connectivity state update or a resolver update, if the aggregated
/// connectivity state is TRANSIENT_FAILURE or CONNECTING and there are no
/// endpoints in CONNECTING state, the ring_hash policy will choose one of
/// the endpoints in IDLE state (if any) to trigger a connection attempt on."
/// Two endpoints both TF (sticky, backing off): a resolver update adding C
/// connects C at once, without any pick.
#[test]
fn a61_rh_resolver_update_in_tf_connects_an_idle_endpoint() {
    let mut cc = TestClientConn::new();
    let mut lb = build(RH);
    cc.update(&mut *lb, ClientConnState::new(eps(&[A, B]), None))
        .unwrap();
    flush(&mut cc, &mut *lb);
    let info = PickInfo {
        hash: Some(1),
        ..Default::default()
    };
    assert_eq!(cc.pick_with(&info, None), Picked::Queue);
    flush(&mut cc, &mut *lb);
    let first = cc.connects()[0];
    cc.set_state(&mut *lb, first, Connecting);
    fail(&mut cc, &mut *lb, first);
    // Recovery connects the other one; fail it too.
    let other: Vec<SubConnId> = cc
        .connects()
        .iter()
        .copied()
        .filter(|id| *id != first)
        .collect();
    assert_eq!(other.len(), 1, "A61 recovery: {:?}", cc.connects());
    cc.set_state(&mut *lb, other[0], Connecting);
    fail(&mut cc, &mut *lb, other[0]);
    assert_eq!(cc.state(), Some(TransientFailure));
    let n = cc.connects().len();
    cc.update(&mut *lb, ClientConnState::new(eps(&[A, B, C]), None))
        .unwrap();
    flush(&mut cc, &mut *lb);
    let c_connects: Vec<SubConnId> = cc.connects()[n..]
        .iter()
        .copied()
        .filter(|id| addr_of(&cc, *id) == C)
        .collect();
    assert_eq!(
        c_connects.len(),
        1,
        "C connected on the resolver update: {:?}",
        cc.connects()
    );
    assert_eq!(cc.state(), Some(TransientFailure), "still 2 TF, none READY");
}

fn wrr_reconfigure(cc: &mut TestClientConn, lb: &mut dyn Balancer, addrs: &[&str], cfg: Value) {
    let cfg = parse("weighted_round_robin", cfg).unwrap();
    cc.update(lb, ClientConnState::new(eps(addrs), cfg))
        .unwrap();
    flush(cc, lb);
}

fn a_share(cc: &mut TestClientConn) -> usize {
    let m = share_of(cc, 1000, false);
    m.get(A).copied().unwrap_or(0)
}

/// A58 "Handling Parent/Resolver Updates": "Changes to the rest of
/// parameters take effective with a new picker that we always create upon
/// receiving a resolver update." Reports at t=0 under a 10 s blackout; at
/// t=2 s a config with blackout 0: the new picker weighs at once.
#[test]
fn a58_wrr_blackout_change_takes_effect_with_the_update() {
    let (mut cc, mut lb) = wrr_ready(&[A, B], json!({"blackoutPeriod": "10s"}));
    report_loads(&mut cc, 100, |a| {
        let qps = if a == A { 1.0 } else { 9.0 };
        vec![("rps_fractional", qps), ("application_utilization", 1.0)]
    });
    cc.advance(&mut *lb, Duration::from_secs(2));
    assert_eq!(a_share(&mut cc), 500, "in blackout: even");
    wrr_reconfigure(&mut cc, &mut *lb, &[A, B], json!({"blackoutPeriod": "0s"}));
    let now = a_share(&mut cc);
    cc.advance(&mut *lb, Duration::from_secs(1));
    let next_tick = a_share(&mut cc);
    assert_eq!(
        (now, next_tick),
        (100, 100),
        "(right after the update, after the next tick)"
    );
}

/// Same rule for weightExpirationPeriod: reports at t=0 (expiration 3 min);
/// at t=20 s a config with expiration 10 s: the weights are stale at once.
#[test]
fn a58_wrr_expiration_change_takes_effect_with_the_update() {
    let (mut cc, mut lb) = wrr_ready(&[A, B], json!({"blackoutPeriod": "0s"}));
    report_loads(&mut cc, 100, |a| {
        let qps = if a == A { 1.0 } else { 9.0 };
        vec![("rps_fractional", qps), ("application_utilization", 1.0)]
    });
    cc.advance(&mut *lb, Duration::from_secs(20));
    assert_eq!(a_share(&mut cc), 100, "weighted");
    wrr_reconfigure(
        &mut cc,
        &mut *lb,
        &[A, B],
        json!({"blackoutPeriod": "0s", "weightExpirationPeriod": "10s"}),
    );
    let now = a_share(&mut cc);
    cc.advance(&mut *lb, Duration::from_secs(1));
    let next_tick = a_share(&mut cc);
    assert_eq!(
        (now, next_tick),
        (500, 500),
        "(right after the update, after the next tick)"
    );
}

/// A50 config: the count/percent fields are `google.protobuf.UInt32Value`:
/// a negative or a value beyond u32 is not a uint32 and cannot parse.
#[test]
fn a50_od_uint32_fields_reject_negative_and_overflow() {
    let rr = json!([{"round_robin": {}}]);
    for bad in [
        json!({"childPolicy": rr, "maxEjectionPercent": -5}),
        json!({"childPolicy": rr, "successRateEjection": {"stdevFactor": -1}}),
        json!({"childPolicy": rr, "successRateEjection": {"minimumHosts": -1}}),
        json!({"childPolicy": rr, "successRateEjection": {"requestVolume": 4294967296u64}}),
        json!({"childPolicy": rr, "failurePercentageEjection": {"minimumHosts": 4294967296u64}}),
        json!({"childPolicy": rr, "failurePercentageEjection": {"requestVolume": -3}}),
        json!({"childPolicy": rr, "successRateEjection": {"stdevFactor": 1.5}}),
    ] {
        assert!(parse(OD, bad.clone()).is_err(), "{bad} accepted");
    }
}

/// A58: weight_update_period "Values less than 100ms are capped at 100ms":
/// "0s" too.
#[test]
fn a58_wrr_zero_update_period_is_100ms() {
    let (cc, _lb) = wrr_ready(&[A, B], json!({"weightUpdatePeriod": "0s"}));
    let now = cc.now();
    let timers = cc.timers();
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert_eq!(timers[0].1 - now, Duration::from_millis(100));
}

/// A58 config: oob_reporting_period "Used only when enable_oob_load_report
/// is true. Default is 10 seconds." — the listener on each READY endpoint
/// asks for 10 s.
#[test]
fn a58_wrr_oob_period_defaults_to_10s() {
    let (cc, _lb) = wrr_ready(&[A, B], json!({"enableOobLoadReport": true}));
    let periods: Vec<Duration> = cc.oob_listeners().into_iter().map(|(_, p)| p).collect();
    assert_eq!(periods, vec![Duration::from_secs(10); 2]);
}
