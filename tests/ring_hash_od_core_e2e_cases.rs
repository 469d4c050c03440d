//! gRPC C-core's ring_hash and outlier_detection end-to-end tests
//! (test/cpp/end2end/xds/xds_ring_hash_end2end_test.cc, commit b8a34457,
//! and xds_outlier_detection_end2end_test.cc, commit 3b247073), the parts
//! not tied to xDS, ported onto switchyard's service config:
//! `ring_hash_experimental` with `requestHashHeader: "address_hash"` (A76)
//! stands for xDS's header hash policy, and
//! `outlier_detection_experimental` over that ring_hash for the cluster's
//! outlier_detection. Real echo servers (switchyard_testserver) on
//! 127.0.0.1; a failing RPC is the server answering `x-respond-status: 1`
//! (C-core's `set_server_expected_error(CANCELLED)`).
//!
//! C-core's CreateMetadataValueThatHashesToBackend(i) is
//! "127.0.0.1:<port>_0": the hash of the backend's first ring entry, so the
//! RPC lands on exactly that backend while it is usable.
//!
//! Not ported (already pinned elsewhere): ReattemptWhenAllEndpointsUnreachable,
//! TransientFailureCheckNextOne, TransientFailureSkipToAvailableReady,
//! ContinuesConnectingWithoutPicks, IdleToReady (tests/ring_hash_go_cases.rs
//! e2e); ring size NACKs (ring_hash_java_cases.rs provider tests). xDS only:
//! aggregate clusters, priorities, channel-id / unsupported hash policies,
//! EjectionRetainedAcrossPriorities.
//!
//! switchyard agrees with C-core on every case here.
//! Notes: C-core's ContinuesConnectingWithoutPicksOneSubchannelAtATime
//! expects endpoints 0, 1, 2, good in that order only because its ports
//! happen to sort that way (C-core connects the first IDLE endpoint of its
//! address-ordered map; switchyard the first in hash-key order, the same
//! for 127.0.0.1 ports of equal length); the test computes the order.
//! Outlier detection counts every non-OK status, a client-side deadline
//! included, as C-core's SubchannelCallTracker does; A50 says nothing
//! narrower.

#[path = "common/mod.rs"]
mod common;
#[path = "common/raw_server.rs"]
mod raw;

use common::{port_of, start_server, Transitions};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverState};
use switchyard::ConnectivityState::{self, *};
use switchyard::*;
use switchyard_testserver::{ServerOptions, TestServer};

// ------------------------------------------------------------------ helpers

fn start_n(n: usize) -> Vec<TestServer> {
    (0..n)
        .map(|_| start_server(0, ServerOptions::default()))
        .collect()
}

fn target_of(ports: &[u16]) -> String {
    let l: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!("ipv4:{}", l.join(","))
}

fn opts() -> ChannelOptions {
    let mut o = ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    };
    o.backoff.initial = Duration::from_millis(100);
    o.backoff.max = Duration::from_millis(500);
    o
}

/// CreateMetadataValueThatHashesToBackendPort.
fn key_for(port: u16) -> String {
    format!("127.0.0.1:{port}_0")
}

const HEADER_RING: &str =
    r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"requestHashHeader":"address_hash"}}]}"#;

/// One echo RPC with `md`; Ok(port that served it).
fn rpc_md(
    ch: &Channel,
    md: &[(String, String)],
    wfr: bool,
    timeout_ms: u64,
    hash: Option<u64>,
) -> Result<u16, Status> {
    let opts = CallOptions {
        deadline: Some(Instant::now() + Duration::from_millis(timeout_ms)),
        wait_for_ready: Some(wfr),
        metadata: md,
        hash,
    };
    let resp = ch.reader().unary("/echo.Echo/Unary", b"ping", &opts)?;
    Ok(port_of(resp))
}

fn md_hash(port: u16) -> Vec<(String, String)> {
    vec![("address_hash".to_string(), key_for(port))]
}

/// C-core's RPC with `address_hash` for backend `port`, fail-fast, 5 s.
fn rpc(ch: &Channel, port: u16) -> Result<u16, Status> {
    rpc_md(ch, &md_hash(port), false, 5000, None)
}

/// CheckRpcSendOk(n, md for `port`): the ports that served them.
fn ok_n(ch: &Channel, port: u16, n: usize, counts: &mut HashMap<u16, usize>) {
    for _ in 0..n {
        match rpc(ch, port) {
            Ok(p) => *counts.entry(p).or_default() += 1,
            Err(s) => panic!(
                "RPC hashed to :{port} failed: {:?}: {}",
                s.code(),
                s.message()
            ),
        }
    }
}

/// CheckRpcSendFailure(CANCELLED) with md for `port`: the server fails it.
fn fail_on(ch: &Channel, port: u16) {
    let mut md = md_hash(port);
    md.push(("x-respond-status".into(), "1".into()));
    let e = rpc_md(ch, &md, false, 5000, None).unwrap_err();
    assert_eq!(e.code(), Code::Cancelled, "{e:?}");
}

/// WaitForBackend(want, md for `hashed_to`): RPCs until `want` served one.
fn wait_for_backend(
    ch: &Channel,
    hashed_to: u16,
    want: u16,
    timeout: Duration,
    allow_failures: bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        match rpc(ch, hashed_to) {
            Ok(p) if p == want => return,
            Ok(_) => {}
            Err(s) if allow_failures => {
                let _ = s;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(s) => panic!(
                "RPC hashed to :{hashed_to} failed while waiting for :{want}: {:?}: {}",
                s.code(),
                s.message()
            ),
        }
        assert!(
            Instant::now() < deadline,
            "RPCs hashed to :{hashed_to} never reached :{want}"
        );
    }
}

fn wait_state(ch: &Channel, state: ConnectivityState, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let s = ch.get_state(false);
        if s == state {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        ch.wait_for_state_change(
            s,
            Some((Instant::now() + Duration::from_millis(100)).min(deadline)),
        );
    }
}

/// A manual resolver under a fresh scheme, its first state `st`.
fn manual(name: &str, st: ResolverState) -> (ManualResolver, String) {
    let scheme = format!("rh-od-core-{name}");
    let m = ManualResolver::new(scheme.clone());
    m.set_initial_state(Some(st));
    resolver::register(Arc::new(m.clone()));
    (m, format!("{scheme}:///x"))
}

fn endpoints(ports: &[u16]) -> Vec<Endpoint> {
    ports
        .iter()
        .map(|p| Endpoint::from(Address::new(format!("127.0.0.1:{p}"))))
        .collect()
}

/// C-core's ComputeIdealNumRpcs(p, error_tolerance).
fn ideal_num_rpcs(p: f64, tolerance: f64) -> usize {
    (p * (1.0 - p) * 5.0 * 5.0 / (tolerance * tolerance)).ceil() as usize
}

// ====================================================================
// RingHashTest
// ====================================================================

/// RingHashTest.HeaderHashing: four backends; an RPC whose header is
/// "127.0.0.1:<port>_0" goes to that backend, 100 out of 100 each.
#[test]
fn rh_header_hashing_sends_each_backend_its_own_rpcs() {
    let s = start_n(4);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target_of(&ports), Some(HEADER_RING), opts()).unwrap();
    for &p in &ports {
        wait_for_backend(&ch, p, p, Duration::from_secs(10), false);
    }
    for &p in &ports {
        let mut c = HashMap::new();
        ok_n(&ch, p, 100, &mut c);
        assert_eq!(c, HashMap::from([(p, 100)]), "RPCs hashed to :{p}");
    }
}

/// RingHashTest.FixedHashingTerminalPolicy: the hashed header's value is
/// fixed (other metadata random): all 100 RPCs on one backend.
#[test]
fn rh_fixed_header_value_sends_every_rpc_to_one_backend() {
    let s = start_n(2);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"requestHashHeader":"fixed_string"}}]}"#;
    let ch = Channel::new(&rt, &target_of(&ports), Some(cfg), opts()).unwrap();
    let mut c: HashMap<u16, usize> = HashMap::new();
    for i in 0..100 {
        let md = vec![
            ("fixed_string".to_string(), "fixed_value".to_string()),
            ("random_string".to_string(), format!("{}", i * 7919 + 13)),
        ];
        let p = rpc_md(&ch, &md, false, 5000, None).expect("served");
        *c.entry(p).or_default() += 1;
    }
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c.values().sum::<usize>(), 100);
}

/// RingHashTest.ChannelIdHashing, as switchyard has it without xDS: a ring
/// without `requestHashHeader` hashes the caller's `CallOptions::hash`;
/// the same hash on every RPC (C-core's channel id) puts all 100 on one
/// backend of four.
#[test]
fn rh_fixed_call_hash_sends_every_rpc_to_one_backend() {
    let s = start_n(4);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{}}]}"#;
    let ch = Channel::new(&rt, &target_of(&ports), Some(cfg), opts()).unwrap();
    let mut c: HashMap<u16, usize> = HashMap::new();
    for _ in 0..100 {
        let p = rpc_md(&ch, &[], false, 5000, Some(0x1234_5678_9abc_def0)).expect("served");
        *c.entry(p).or_default() += 1;
    }
    assert_eq!(c.len(), 1, "{c:?}");
}

/// Sends `n` RPCs with `md` (wait-for-ready after every backend answered
/// once), returns per-port counts.
fn spread(ch: &Channel, ports: &[u16], md: &[(String, String)], n: usize) -> HashMap<u16, usize> {
    // WaitForAllBackends first (10 s RPC timeout in C-core).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < ports.len() {
        assert!(Instant::now() < deadline, "only {seen:?} answered");
        seen.insert(rpc_md(ch, md, true, 10_000, None).expect("served"));
    }
    let mut c = HashMap::new();
    for _ in 0..n {
        *c.entry(rpc_md(ch, md, false, 10_000, None).expect("served"))
            .or_default() += 1;
    }
    c
}

/// RingHashTest.HashOnHeaderThatIsNotPresent: the configured header is
/// missing from every RPC, so each gets a random hash (A76): two backends
/// share the RPCs 50/50 ± 5 %.
#[test]
fn rh_missing_hash_header_spreads_rpcs_evenly() {
    let s = start_n(2);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"minRingSize":100000,"maxRingSize":100000,"requestHashHeader":"header_not_present"}}]}"#;
    let ch = Channel::new(&rt, &target_of(&ports), Some(cfg), opts()).unwrap();
    let md = vec![("unmatched_header".to_string(), "12345".to_string())];
    let n = ideal_num_rpcs(0.5, 0.05);
    let c = spread(&ch, &ports, &md, n);
    for p in &ports {
        let share = *c.get(p).unwrap_or(&0) as f64 / n as f64;
        assert!(
            (share - 0.5).abs() <= 0.05,
            ":{p} got {share:.3} of {n}: {c:?}"
        );
    }
}

/// RingHashTest.RandomHashingDistributionAccordingToEndpointWeight (1:2)
/// and ...LocalityAndEndpointWeight (1×1 : 2×2, as endpoint weights 1:4):
/// random hashes follow the endpoints' weights ± 5 %.
#[test]
fn rh_random_hashes_follow_endpoint_weights() {
    for (w0, w1) in [(1u32, 2u32), (1, 4)] {
        let s = start_n(2);
        let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
        let eps = vec![
            Endpoint::from(Address::new(format!("127.0.0.1:{}", ports[0]))).with_weight(w0),
            Endpoint::from(Address::new(format!("127.0.0.1:{}", ports[1]))).with_weight(w1),
        ];
        let (_m, target) = manual(
            &format!("weights-{w0}-{w1}"),
            ResolverState {
                endpoints: eps,
                service_config: None,
            },
        );
        let cfg = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"minRingSize":100000,"maxRingSize":100000,"requestHashHeader":"address_hash"}}]}"#;
        let rt = Runtime::new().unwrap();
        let ch = Channel::new(&rt, &target, Some(cfg), opts()).unwrap();
        let p0 = w0 as f64 / (w0 + w1) as f64;
        let n = ideal_num_rpcs(p0, 0.05);
        let c = spread(&ch, &ports, &[], n);
        let got0 = *c.get(&ports[0]).unwrap_or(&0) as f64 / n as f64;
        let got1 = *c.get(&ports[1]).unwrap_or(&0) as f64 / n as f64;
        assert!(
            (got0 - p0).abs() <= 0.05,
            "weights {w0}:{w1}: {got0:.3}, want {p0:.3}: {c:?}"
        );
        assert!(
            (got1 - (1.0 - p0)).abs() <= 0.05,
            "weights {w0}:{w1}: {got1:.3}: {c:?}"
        );
    }
}

/// RingHashTest.ContinuesConnectingWithoutPicksOneSubchannelAtATime: three
/// endpoints whose connection attempts are held 300 ms and then fail (a
/// listener that accepts, waits, closes: C-core's injector hold, then
/// "connection refused") and one good one; an RPC hashed to the first
/// starts its attempt, then gives up. With no further picks the channel
/// still gets READY, one attempt at a time, in C-core's order (the picked
/// one, then the others by address), none retried before the good one
/// connected (backoff 3 s); the good backend gets no RPC.
#[test]
fn rh_continues_connecting_without_picks_one_subchannel_at_a_time() {
    let held: Vec<raw::Raw> = (0..3)
        .map(|_| {
            raw::Raw::start(|s, _, _| {
                std::thread::sleep(Duration::from_millis(300));
                drop(s);
                false
            })
        })
        .collect();
    let good = start_server(0, ServerOptions::default());
    let mut ports: Vec<u16> = held.iter().map(|r| r.addr.port()).collect();
    ports.push(good.port());
    let rt = Runtime::new().unwrap();
    let mut o = opts();
    o.backoff.initial = Duration::from_secs(3);
    o.backoff.max = Duration::from_secs(3);
    o.backoff.min_connect_timeout = Duration::from_secs(1);
    let seen = Transitions::default();
    seen.attach(&mut o);
    let ch = Channel::new(&rt, &target_of(&ports), Some(HEADER_RING), o).unwrap();
    // The RPC gives up (deadline) while its endpoint is still connecting.
    let e = rpc_md(&ch, &md_hash(ports[0]), true, 100, None).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        wait_state(&ch, Ready, Duration::from_secs(10)),
        "never READY without picks: {:?}",
        ch.get_state(false)
    );
    let ready_at = Instant::now();
    let t0 = seen.all()[0].at;
    let log: Vec<String> = seen
        .all()
        .iter()
        .map(|t| format!("{}ms {:?} {:?}", (t.at - t0).as_millis(), t.sc, t.state))
        .collect();
    // Server side. C-core connects the first IDLE endpoint of its
    // endpoint map, ordered by address bytes (for 127.0.0.1, by port): after
    // the picked endpoint, the others in port order until the good one
    // connects; those after it are never tried. One attempt each, none
    // overlapping.
    let mut rest: Vec<u16> = ports[1..].to_vec();
    rest.sort_unstable();
    let mut expect = vec![ports[0]];
    for p in rest {
        expect.push(p);
        if p == good.port() {
            break;
        }
    }
    for (i, r) in held.iter().enumerate() {
        let before: Vec<raw::Conn> = r
            .conns()
            .into_iter()
            .filter(|x| x.accepted < ready_at)
            .collect();
        let pos = expect.iter().position(|p| *p == ports[i]);
        let want = usize::from(pos.is_some());
        assert_eq!(
            before.len(),
            want,
            "endpoint {i} (:{}) attempted {} times, want {want}; expected order {expect:?}; {log:?}",
            ports[i],
            before.len()
        );
    }
    for w in expect.windows(2) {
        if w[1] == good.port() {
            break;
        }
        let i0 = ports.iter().position(|p| *p == w[0]).unwrap();
        let i1 = ports.iter().position(|p| *p == w[1]).unwrap();
        let a = &held[i0].conns()[0];
        let b = &held[i1].conns()[0];
        assert!(
            b.accepted >= a.ended.unwrap_or(ready_at),
            ":{} attempted before :{} had failed; {log:?}",
            w[1],
            w[0]
        );
    }
    // Client side: at most one subchannel CONNECTING at a time.
    let mut connecting: Vec<SubConnId> = Vec::new();
    for t in seen.all() {
        connecting.retain(|sc| *sc != t.sc);
        if t.state == Connecting {
            assert!(connecting.is_empty(), "two attempts at once: {log:?}");
            connecting.push(t.sc);
        }
    }
    assert_eq!(good.requests(), 0);
}

/// RingHashTest.SwitchToLowerPrioirtyAndThenBack, without priorities: the
/// backend RPCs hash to goes away (GOAWAY, then gone): they move to
/// another backend; it comes back: they move back, 100 of 100.
#[test]
fn rh_rpcs_move_away_and_back_when_their_backend_leaves_and_returns() {
    let mut s: Vec<Option<TestServer>> = start_n(2).into_iter().map(Some).collect();
    let ports: Vec<u16> = s.iter().map(|x| x.as_ref().unwrap().port()).collect();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target_of(&ports), Some(HEADER_RING), opts()).unwrap();
    wait_for_backend(&ch, ports[0], ports[0], Duration::from_secs(10), false);
    s[0].take().unwrap().graceful_stop(Duration::from_secs(2));
    wait_for_backend(&ch, ports[0], ports[1], Duration::from_secs(10), false);
    s[0] = Some(start_server(ports[0], ServerOptions::default()));
    wait_for_backend(&ch, ports[0], ports[0], Duration::from_secs(10), false);
    let mut c = HashMap::new();
    ok_n(&ch, ports[0], 100, &mut c);
    assert_eq!(c, HashMap::from([(ports[0], 100)]));
}

/// RingHashTest.ReattemptWhenGoingFromTransientFailureToIdle: ring_hash
/// first gets no endpoints: RPCs fail UNAVAILABLE, the channel is
/// TRANSIENT_FAILURE; then one endpoint: a wait-for-ready RPC succeeds
/// and the channel is READY.
#[test]
fn rh_reattempt_when_going_from_transient_failure_to_idle() {
    let s = start_n(1);
    let (m, target) = manual(
        "tf-to-idle",
        ResolverState {
            endpoints: vec![],
            service_config: None,
        },
    );
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target, Some(HEADER_RING), opts()).unwrap();
    assert_eq!(ch.get_state(false), Idle);
    let e = rpc(&ch, 1).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        wait_state(&ch, TransientFailure, Duration::from_secs(5)),
        "{:?}",
        ch.get_state(false)
    );
    m.update(ResolverState {
        endpoints: endpoints(&[s[0].port()]),
        service_config: None,
    })
    .unwrap();
    let p = rpc_md(&ch, &md_hash(s[0].port()), true, 5000, None).expect("wait-for-ready RPC");
    assert_eq!(p, s[0].port());
    assert_eq!(ch.get_state(false), Ready);
}

// ====================================================================
// OutlierDetectionTest (ring_hash child, header hashing)
// ====================================================================

/// `{"outlier_detection_experimental": {<od>, "childPolicy": [ring_hash]}}`.
fn od_config(od: &str) -> String {
    let sep = if od.trim().is_empty() { "" } else { "," };
    format!(
        r#"{{"loadBalancingConfig":[{{"outlier_detection_experimental":{{{od}{sep}
        "childPolicy":[{{"ring_hash_experimental":{{"requestHashHeader":"address_hash"}}}}]}}}}]}}"#
    )
}

fn od_channel(rt: &Runtime, ports: &[u16], od: &str) -> Channel {
    Channel::new(rt, &target_of(ports), Some(&od_config(od)), opts()).unwrap()
}

/// Every backend serves its own hashed RPCs (the WaitForBackend calls).
fn warm(ch: &Channel, ports: &[u16]) {
    for &p in ports {
        wait_for_backend(ch, p, p, Duration::from_secs(10), false);
    }
}

/// 100 RPCs hashed to each backend, counts by the port that served.
fn hundred_each(ch: &Channel, ports: &[u16]) -> HashMap<u16, usize> {
    let mut c = HashMap::new();
    for &p in ports {
        ok_n(ch, p, 100, &mut c);
    }
    c
}

/// Sleeps, then checks each backend still gets exactly its own 100.
fn assert_no_ejection(ch: &Channel, ports: &[u16]) {
    std::thread::sleep(Duration::from_secs(3));
    let c = hundred_each(ch, ports);
    for &p in ports {
        assert_eq!(c.get(&p), Some(&100), "no ejection expected: {c:?}");
    }
}

const SR_BASE: &str = r#""interval":"1s","baseEjectionTime":"1s",
    "successRateEjection":{"stdevFactor":100,"enforcementPercentage":100,"minimumHosts":1,"requestVolume":1}"#;

/// OutlierDetectionTest.SuccessRateEjectionAndUnejection: one server error
/// on backend 0: its RPCs go to backend 1 within 3 s (ejected), then back
/// to 0 within 3 s (unejected after 1 s).
#[test]
fn od_success_rate_ejection_and_unejection() {
    let s = start_n(2);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let ch = od_channel(&rt, &ports, SR_BASE);
    warm(&ch, &ports);
    fail_on(&ch, ports[0]);
    wait_for_backend(&ch, ports[0], ports[1], Duration::from_secs(3), false);
    // A61: ejection is a health verdict; the connection stays up.
    assert_eq!(s[0].connections(), 1, "ejected backend's connection");
    wait_for_backend(&ch, ports[0], ports[0], Duration::from_secs(3), false);
    assert_eq!(s[0].connections(), 1, "reconnected after un-ejection");
}

/// Both max-percent tests: errors on backends 0 and 1 of four; the default
/// maxEjectionPercent (10) allows one ejection: one backend gets none of
/// the 400 RPCs, one gets 200 (its own and the ejected one's), two get 100.
fn max_percent(od: &str) {
    let s = start_n(4);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let ch = od_channel(&rt, &ports, od);
    warm(&ch, &ports);
    fail_on(&ch, ports[0]);
    fail_on(&ch, ports[1]);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let a = rpc(&ch, ports[0]).expect("ok");
        let b = rpc(&ch, ports[1]).expect("ok");
        if a != ports[0] || b != ports[1] {
            break;
        }
        assert!(Instant::now() < deadline, "no ejection within 3 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let c = hundred_each(&ch, &ports);
    let mut loads: Vec<usize> = ports.iter().map(|p| *c.get(p).unwrap_or(&0)).collect();
    loads.sort_unstable();
    assert_eq!(loads, vec![0, 100, 100, 200], "{c:?}");
}

/// OutlierDetectionTest.SuccessRateMaxPercent.
#[test]
fn od_success_rate_max_percent() {
    max_percent(
        r#""interval":"1s",
        "successRateEjection":{"stdevFactor":100,"enforcementPercentage":100,"minimumHosts":1,"requestVolume":1}"#,
    );
}

/// OutlierDetectionTest.FailurePercentageMaxPercentage.
#[test]
fn od_failure_percentage_max_percent() {
    max_percent(
        r#""interval":"1s",
        "failurePercentageEjection":{"threshold":0,"enforcementPercentage":100,"minimumHosts":1,"requestVolume":1}"#,
    );
}

/// One server error on backend 0 under `od`: after 3 s nothing was ejected.
fn one_error_no_ejection(od: &str) {
    let s = start_n(2);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let ch = od_channel(&rt, &ports, od);
    warm(&ch, &ports);
    fail_on(&ch, ports[0]);
    assert_no_ejection(&ch, &ports);
}

/// OutlierDetectionTest.SuccessRateStdevFactor (1000: threshold = mean − stdev).
#[test]
fn od_success_rate_stdev_factor_1000_does_not_eject() {
    one_error_no_ejection(
        r#""interval":"1s","baseEjectionTime":"1s",
        "successRateEjection":{"stdevFactor":1000,"enforcementPercentage":100,"minimumHosts":1,"requestVolume":1}"#,
    );
}

/// OutlierDetectionTest.SuccessRateEnforcementPercentage (0).
#[test]
fn od_success_rate_enforcement_percentage_0_does_not_eject() {
    one_error_no_ejection(
        r#""interval":"1s","baseEjectionTime":"1s",
        "successRateEjection":{"stdevFactor":100,"enforcementPercentage":0,"minimumHosts":1,"requestVolume":1}"#,
    );
}

/// OutlierDetectionTest.SuccessRateMinimumHosts (3, two backends).
#[test]
fn od_success_rate_minimum_hosts_3_does_not_eject() {
    one_error_no_ejection(
        r#""interval":"1s",
        "successRateEjection":{"stdevFactor":100,"enforcementPercentage":100,"minimumHosts":3,"requestVolume":1}"#,
    );
}

/// OutlierDetectionTest.SuccessRateRequestVolume (4, fewer RPCs sent).
#[test]
fn od_success_rate_request_volume_4_does_not_eject() {
    one_error_no_ejection(
        r#""interval":"1s",
        "successRateEjection":{"stdevFactor":100,"enforcementPercentage":100,"minimumHosts":1,"requestVolume":4}"#,
    );
}

/// OutlierDetectionTest.FailurePercentageThreshold (50: one failure in two
/// calls is 50 %, not above it).
#[test]
fn od_failure_percentage_threshold_50_does_not_eject() {
    one_error_no_ejection(
        r#""interval":"1s","baseEjectionTime":"1s",
        "failurePercentageEjection":{"threshold":50,"enforcementPercentage":100,"minimumHosts":1,"requestVolume":1}"#,
    );
}

/// OutlierDetectionTest.FailurePercentageEnforcementPercentage (0).
#[test]
fn od_failure_percentage_enforcement_percentage_0_does_not_eject() {
    one_error_no_ejection(
        r#""interval":"1s","baseEjectionTime":"1s",
        "failurePercentageEjection":{"threshold":0,"enforcementPercentage":0,"minimumHosts":1,"requestVolume":1}"#,
    );
}

/// OutlierDetectionTest.FailurePercentageMinimumHosts (3).
#[test]
fn od_failure_percentage_minimum_hosts_3_does_not_eject() {
    one_error_no_ejection(
        r#""interval":"1s",
        "failurePercentageEjection":{"threshold":0,"enforcementPercentage":100,"minimumHosts":3,"requestVolume":1}"#,
    );
}

/// OutlierDetectionTest.FailurePercentageRequestVolume (4).
#[test]
fn od_failure_percentage_request_volume_4_does_not_eject() {
    one_error_no_ejection(
        r#""interval":"1s",
        "failurePercentageEjection":{"threshold":0,"enforcementPercentage":100,"minimumHosts":1,"requestVolume":4}"#,
    );
}

/// OutlierDetectionTest.SuccessRateAndFailurePercentageBothDisabled: no
/// algorithm, no counting, no ejection.
#[test]
fn od_both_algorithms_unset_does_not_eject() {
    one_error_no_ejection(r#""interval":"1s","baseEjectionTime":"1s""#);
}

const FP_BASE_3S: &str = r#""interval":"1s","baseEjectionTime":"3s",
    "failurePercentageEjection":{"threshold":0,"enforcementPercentage":100,"minimumHosts":1,"requestVolume":1}"#;

/// OutlierDetectionTest.FailurePercentageEjectionAndUnejection: one error
/// on backend 0 (threshold 0): its RPCs go to backend 1 (100 of 100), then
/// back to 0 after the 3 s ejection; then each backend gets its own 100.
#[test]
fn od_failure_percentage_ejection_and_unejection() {
    let s = start_n(2);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let ch = od_channel(&rt, &ports, FP_BASE_3S);
    warm(&ch, &ports);
    fail_on(&ch, ports[0]);
    wait_for_backend(&ch, ports[0], ports[1], Duration::from_secs(3), false);
    let mut c = HashMap::new();
    ok_n(&ch, ports[0], 100, &mut c);
    assert_eq!(c, HashMap::from([(ports[1], 100)]));
    wait_for_backend(&ch, ports[0], ports[0], Duration::from_secs(30), false);
    let c = hundred_each(&ch, &ports);
    assert_eq!(c, HashMap::from([(ports[0], 100), (ports[1], 100)]));
}

/// OutlierDetectionTest.SuccessRateAndFailurePercentage: maxEjectionPercent
/// 50 of four backends; two errors on 0, one on 1 and on 2 (success rate
/// flags one, failure percentage three): exactly two are ejected.
#[test]
fn od_success_rate_and_failure_percentage_eject_at_most_max_percent() {
    let s = start_n(4);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let ch = od_channel(
        &rt,
        &ports,
        r#""interval":"1s","maxEjectionPercent":50,
        "successRateEjection":{"stdevFactor":500,"enforcementPercentage":100,"minimumHosts":1,"requestVolume":1},
        "failurePercentageEjection":{"threshold":0,"enforcementPercentage":100,"minimumHosts":1,"requestVolume":1}"#,
    );
    warm(&ch, &ports);
    fail_on(&ch, ports[0]);
    fail_on(&ch, ports[0]);
    fail_on(&ch, ports[1]);
    fail_on(&ch, ports[2]);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let served: std::collections::HashSet<u16> =
            ports.iter().map(|&p| rpc(&ch, p).expect("ok")).collect();
        if served.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never exactly two backends serving: {served:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let c = hundred_each(&ch, &ports);
    let empty = ports.iter().filter(|p| !c.contains_key(p)).count();
    let loaded = ports
        .iter()
        .filter(|p| c.get(p).is_some_and(|n| *n >= 100))
        .count();
    assert_eq!((empty, loaded), (2, 2), "{c:?}");
}

/// OutlierDetectionTest.DisableOutlierDetectionWhileAddressesAreEjected:
/// backend 0 ejected; a config without either algorithm (what xDS sends
/// when the cluster's outlier_detection is cleared) returns it at once.
#[test]
fn od_disabling_while_ejected_unejects() {
    let s = start_n(2);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let (m, target) = manual(
        "od-disable",
        ResolverState {
            endpoints: endpoints(&ports),
            service_config: Some(od_config(FP_BASE_3S)),
        },
    );
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target, None, opts()).unwrap();
    warm(&ch, &ports);
    fail_on(&ch, ports[0]);
    wait_for_backend(&ch, ports[0], ports[1], Duration::from_secs(3), false);
    assert_eq!(rpc(&ch, ports[0]).unwrap(), ports[1]);
    m.update(ResolverState {
        endpoints: endpoints(&ports),
        service_config: Some(od_config(r#""interval":"1s","baseEjectionTime":"3s""#)),
    })
    .unwrap();
    // Well before the 3 s ejection ends.
    wait_for_backend(&ch, ports[0], ports[0], Duration::from_millis(1500), false);
}

/// C-core's SubchannelCallTracker counts every non-OK status as a failure
/// (outlier_detection.cc, `Finish`: `args.status.ok()`), a deadline the
/// client enforced included (A50 says "call results", nothing narrower):
/// a DEADLINE_EXCEEDED on backend 0 ejects it under failure percentage 0.
#[test]
fn od_client_side_deadline_counts_as_a_failure_as_c_core() {
    let s = start_n(2);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let ch = od_channel(&rt, &ports, FP_BASE_3S);
    warm(&ch, &ports);
    let mut md = md_hash(ports[0]);
    md.push(("x-delay-ms".into(), "1000".into()));
    let e = rpc_md(&ch, &md, false, 100, None).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    wait_for_backend(&ch, ports[0], ports[1], Duration::from_secs(3), false);
}

/// A42 / C-core ring_hash.cc `UpdateLocked` ("De-dup endpoints, taking
/// weight into account"): an address listed twice is one endpoint of
/// weight 2. Through a channel target "ipv4:A,A,B", random hashes (header
/// missing) give A 2/3 and B 1/3 (± 5 %).
#[test]
fn rh_duplicate_address_in_target_counts_twice() {
    let s = start_n(2);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let target = target_of(&[ports[0], ports[0], ports[1]]);
    let cfg = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"minRingSize":100000,"maxRingSize":100000,"requestHashHeader":"address_hash"}}]}"#;
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target, Some(cfg), opts()).unwrap();
    let n = ideal_num_rpcs(1.0 / 3.0, 0.05);
    let c = spread(&ch, &ports, &[], n);
    let got0 = *c.get(&ports[0]).unwrap_or(&0) as f64 / n as f64;
    assert!(
        (got0 - 2.0 / 3.0).abs() <= 0.05,
        "A got {got0:.3}, want 0.667: {c:?}"
    );
}

/// C-core's ring_hash picker reads the header with `GetStringValue(...,
/// &buffer)`, several values joined by ","; an RPC carrying the header
/// twice ("k1", "k2") lands where one carrying "k1,k2" lands.
#[test]
fn rh_repeated_hash_header_hashes_the_joined_values() {
    let s = start_n(4);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target_of(&ports), Some(HEADER_RING), opts()).unwrap();
    let mut homes = std::collections::HashSet::new();
    for k in 0..12 {
        let (a, b) = (format!("user-{k}"), format!("tenant-{}", k * 31));
        let joined = vec![("address_hash".to_string(), format!("{a},{b}"))];
        let twice = vec![
            ("address_hash".to_string(), a),
            ("address_hash".to_string(), b),
        ];
        let want = rpc_md(&ch, &joined, true, 5000, None).expect("served");
        for _ in 0..3 {
            assert_eq!(
                rpc_md(&ch, &twice, true, 5000, None).expect("served"),
                want,
                "key {k}"
            );
        }
        homes.insert(want);
    }
    assert!(homes.len() >= 2, "every key on one backend: {homes:?}");
}

/// A50 step 5 and `ejection_time = base × multiplier` (C-core
/// EndpointState::Eject increments the multiplier; the sweep decrements it
/// only while not ejected): backend 0 fails, is ejected for ~1 s; it fails
/// again right after it returns and is ejected for ~2 s (base 1 s,
/// interval 1 s).
#[test]
fn od_second_ejection_lasts_longer() {
    let s = start_n(2);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let ch = od_channel(
        &rt,
        &ports,
        r#""interval":"1s","baseEjectionTime":"1s","maxEjectionTime":"300s",
        "failurePercentageEjection":{"threshold":0,"enforcementPercentage":100,"minimumHosts":1,"requestVolume":1}"#,
    );
    warm(&ch, &ports);
    let mut spans = Vec::new();
    for _ in 0..2 {
        fail_on(&ch, ports[0]);
        wait_for_backend(&ch, ports[0], ports[1], Duration::from_secs(3), false);
        let away = Instant::now();
        wait_for_backend(&ch, ports[0], ports[0], Duration::from_secs(6), false);
        spans.push(away.elapsed());
    }
    assert!(spans[0] < Duration::from_millis(2300), "{spans:?}");
    assert!(spans[1] >= Duration::from_millis(1700), "{spans:?}");
    assert!(
        spans[1] > spans[0] + Duration::from_millis(500),
        "{spans:?}"
    );
}

/// RingHashTest.ReattemptWhenAllEndpointsUnreachable's status: C-core fails
/// the RPC UNAVAILABLE with MakeConnectionFailureRegex("ring hash cannot
/// find a connected endpoint; first failure: "), i.e. the message carries
/// the endpoint's connection error ("Connection refused" or the like).
#[test]
fn rh_all_unreachable_status_says_why() {
    let dead = common::free_port();
    let live = start_n(1);
    let ports = [dead, live[0].port()];
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target_of(&ports), Some(HEADER_RING), opts()).unwrap();
    drop(live);
    let e = rpc(&ch, ports[1]).unwrap_err();
    eprintln!("status: {:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let m = e.message().to_lowercase();
    assert!(
        m.contains("refused") || m.contains("reset") || m.contains("closed"),
        "{}",
        e.message()
    );
}

/// ring_hash.cc: an endpoint whose connection goes away reports IDLE and
/// ring_hash reconnects only from a pick (or the CONNECTING/TF recovery
/// rule): one backend, READY; it sends GOAWAY (keeps listening): the
/// channel goes IDLE and opens no new connection until the next RPC,
/// which reconnects and succeeds.
#[test]
fn rh_goaway_leaves_channel_idle_until_next_rpc() {
    let s = start_n(1);
    let p = s[0].port();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target_of(&[p]), Some(HEADER_RING), opts()).unwrap();
    assert_eq!(rpc(&ch, p).unwrap(), p);
    assert_eq!(ch.get_state(false), Ready);
    s[0].goaway();
    assert!(
        wait_state(&ch, Idle, Duration::from_secs(5)),
        "{:?}",
        ch.get_state(false)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ch.get_state(false), Idle);
    assert_eq!(s[0].connections(), 0, "reconnected without a pick");
    assert_eq!(rpc(&ch, p).unwrap(), p);
    assert_eq!(ch.get_state(false), Ready);
}
