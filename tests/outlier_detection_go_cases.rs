//! gRPC-Go's outlier_detection tests
//! (internal/xds/balancer/outlierdetection/balancer_test.go and
//! e2e_test/outlierdetection_test.go) ported case by case onto
//! switchyard's `outlier_detection_experimental`, plus rows of Go's
//! balancer.go algorithm not covered by the library's own tests.

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverState};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

const OD: &str = "outlier_detection_experimental";

fn parse(cfg: &Value) -> Option<LbConfig> {
    registry::get(OD).unwrap().parse_config(cfg).unwrap()
}

/// `extra` over `{"childPolicy": [{"round_robin": {}}]}`.
fn cfg(extra: Value) -> Option<LbConfig> {
    let mut c = json!({"childPolicy": [{"round_robin": {}}]});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    parse(&c)
}

fn addresses(n: usize) -> Vec<Address> {
    (0..n)
        .map(|i| Address::new(format!("127.0.0.1:{}", 1000 + i)))
        .collect()
}

/// A policy over `n` READY endpoints (round_robin child).
fn ready(n: usize, extra: Value) -> (TestClientConn, Box<dyn Balancer>, Vec<SubConnId>) {
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    cc.update(
        &mut *od,
        ClientConnState::from_addresses(addresses(n), cfg(extra)),
    )
    .unwrap();
    let ids: Vec<SubConnId> = cc.connects().to_vec();
    assert_eq!(ids.len(), n);
    for id in &ids {
        cc.set_state(&mut *od, *id, ConnectivityState::Connecting);
        cc.set_state(&mut *od, *id, ConnectivityState::Ready);
    }
    assert_eq!(cc.state(), Some(ConnectivityState::Ready));
    (cc, od, ids)
}

fn update(cc: &mut TestClientConn, od: &mut Box<dyn Balancer>, n: usize, extra: Value) {
    cc.update(
        &mut **od,
        ClientConnState::from_addresses(addresses(n), cfg(extra)),
    )
    .unwrap();
}

/// `n` picks, each finished failed when its subchannel is in `failing`.
fn traffic(cc: &mut TestClientConn, n: usize, failing: &[SubConnId]) -> HashSet<SubConnId> {
    let picker = cc.picker().unwrap().clone();
    let mut local = PickLocal::new(7);
    let mut seen = HashSet::new();
    for _ in 0..n {
        match picker.pick(&PickInfo::default(), &mut local) {
            PickResult::Complete { subconn, done } => {
                let failed = failing.contains(&subconn.id());
                let code = if failed { Code::Unavailable } else { Code::Ok };
                done.report(
                    subconn,
                    &DoneInfo {
                        error: failed.then_some("some error"),
                        code,
                        ..Default::default()
                    },
                );
                seen.insert(subconn.id());
            }
            _ => panic!("READY picker did not complete"),
        }
    }
    seen
}

// ---------------------------------------------------------------------------
// balancer_test.go

/// TestEjectFailureRate: success-rate (stdevFactor 500, minimumHosts 3,
/// requestVolume 3), three endpoints. 5 successes each: nothing ejected;
/// then one with 5 failures: it alone is ejected; a no-op config returns
/// it.
#[test]
fn go_eject_failure_rate() {
    let extra = json!({
        "interval": "1000s", "baseEjectionTime": "30s", "maxEjectionTime": "300s",
        "maxEjectionPercent": 10,
        "successRateEjection": {"stdevFactor": 500, "enforcementPercentage": 100,
                                "minimumHosts": 3, "requestVolume": 3}});
    let (mut cc, mut od, ids) = ready(3, extra);
    assert_eq!(traffic(&mut cc, 15, &[]).len(), 3);
    assert_eq!(cc.advance(&mut *od, Duration::from_secs(1000)), 1);
    assert_eq!(traffic(&mut cc, 30, &[]).len(), 3, "none ejected");
    // A new interval: 5 each, the third failing.
    cc.advance(&mut *od, Duration::from_secs(1000));
    traffic(&mut cc, 15, &ids[2..]);
    cc.advance(&mut *od, Duration::from_secs(1000));
    let seen = traffic(&mut cc, 30, &[]);
    assert_eq!(seen, HashSet::from([ids[0], ids[1]]), "the third ejected");
    // No-op config: every ejected endpoint returns.
    update(
        &mut cc,
        &mut od,
        3,
        json!({"interval": "1000s", "maxEjectionPercent": 10}),
    );
    assert_eq!(traffic(&mut cc, 30, &[]).len(), 3);
    assert!(cc.timers().is_empty());
}

/// TestEjectUnejectSuccessRate's table (failure percentage, threshold 50,
/// minimumHosts 3, requestVolume 3): ejected count per case, and all back
/// once far past the max ejection time.
#[test]
fn go_eject_uneject_table() {
    // (maxEjectionPercent, enforcementPercentage, failing, ejections)
    for (mep, enf, failing, want) in [
        (10, 100, 1, 1),
        (10, 100, 0, 0),
        (10, 0, 1, 0),
        (0, 100, 1, 0),
    ] {
        let extra = json!({
            "interval": "1000s", "baseEjectionTime": "30s", "maxEjectionTime": "300s",
            "maxEjectionPercent": mep,
            "failurePercentageEjection": {"threshold": 50, "enforcementPercentage": enf,
                                          "minimumHosts": 3, "requestVolume": 3}});
        let (mut cc, mut od, ids) = ready(3, extra);
        traffic(&mut cc, 15, &[]);
        cc.advance(&mut *od, Duration::from_secs(1000));
        assert_eq!(traffic(&mut cc, 30, &[]).len(), 3);
        cc.advance(&mut *od, Duration::from_secs(1000));
        traffic(&mut cc, 15, &ids[3 - failing..]);
        cc.advance(&mut *od, Duration::from_secs(1000));
        let seen = traffic(&mut cc, 30, &[]);
        assert_eq!(
            3 - seen.len(),
            want,
            "case mep={mep} enf={enf} failing={failing}"
        );
        // Far past the max ejection time (300 s): back.
        cc.advance(&mut *od, Duration::from_secs(1000));
        assert_eq!(traffic(&mut cc, 30, &[]).len(), 3);
    }
}

/// TestDurationOfInterval: the first counting config arms the timer for
/// its interval (8 s); 5 s later a config with 9 s arms it for the rest
/// (4 s); a no-op config arms none.
#[test]
fn go_duration_of_interval() {
    let sre = json!({"stdevFactor": 1900, "enforcementPercentage": 100,
                     "minimumHosts": 5, "requestVolume": 100});
    let (mut cc, mut od, _) = ready(1, json!({"interval": "8s", "successRateEjection": sre}));
    let start = cc.now();
    let t = cc.timers();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1, start + Duration::from_secs(8));
    assert_eq!(cc.advance(&mut *od, Duration::from_secs(5)), 0);
    update(
        &mut cc,
        &mut od,
        1,
        json!({"interval": "9s", "successRateEjection": sre}),
    );
    let t = cc.timers();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1, cc.now() + Duration::from_secs(4));
    update(&mut cc, &mut od, 1, json!({"interval": "10s"}));
    assert!(cc.timers().is_empty());
}

// ---------------------------------------------------------------------------
// balancer.go's intervalTimerAlgorithm rows

/// Multiplier decrement (balancer.go, intervalTimerAlgorithm: "if not
/// ejected and multiplier > 0: multiplier--"): ejected at 10 s (×1), back
/// at 50 s, not ejected at the sweeps of 60 and 70 s (×0), so ejected
/// again at 80 s for one base time only (×1): back at 120 s, not 150 s.
#[test]
fn multiplier_decays_while_not_ejected() {
    let (mut cc, mut od, ids) = ready(5, json!({"failurePercentageEjection": {}}));
    let bad = ids[0];
    traffic(&mut cc, 1000, &[bad]);
    cc.advance(&mut *od, Duration::from_secs(10)); // 10 s: ×1
    assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(40)); // 50 s: back
    assert!(traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(20)); // 60, 70 s: ×0
    traffic(&mut cc, 1000, &[bad]);
    cc.advance(&mut *od, Duration::from_secs(10)); // 80 s: ×1, until 110 s
    assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(30)); // 110 s: not strictly past
    assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(10)); // 120 s: back
    assert!(traffic(&mut cc, 100, &[]).contains(&bad));
}

/// Ejection time = min(base × multiplier, max(base, maxEjectionTime)):
/// base 10 s, max 15 s: the second ejection (×2) lasts 15 s, not 20 s;
/// base 20 s, max 5 s: the cap is the base (20 s), not 5 s.
#[test]
fn ejection_time_is_capped_at_max_of_base_and_max() {
    // base 10, max 15.
    let (mut cc, mut od, ids) = ready(
        5,
        json!({"baseEjectionTime": "10s", "maxEjectionTime": "15s", "failurePercentageEjection": {}}),
    );
    let bad = ids[0];
    traffic(&mut cc, 1000, &[bad]);
    cc.advance(&mut *od, Duration::from_secs(10)); // 10 s ×1 until 20
    assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(10)); // 20: not past
    assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(10)); // 30: back
    assert!(traffic(&mut cc, 100, &[]).contains(&bad));
    traffic(&mut cc, 1000, &[bad]);
    cc.advance(&mut *od, Duration::from_secs(10)); // 40: ×2, min(20, 15): until 55
    assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(10)); // 50
    assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(10)); // 60: back (not 70)
    assert!(traffic(&mut cc, 100, &[]).contains(&bad), "capped at 15 s");

    // base 20, max 5: max(base, max) = 20 caps ×2 (40 s) at 20 s.
    let (mut cc, mut od, ids) = ready(
        5,
        json!({"baseEjectionTime": "20s", "maxEjectionTime": "5s", "failurePercentageEjection": {}}),
    );
    let bad = ids[0];
    traffic(&mut cc, 1000, &[bad]);
    cc.advance(&mut *od, Duration::from_secs(10)); // 10: ×1 until 30
    cc.advance(&mut *od, Duration::from_secs(20)); // 20, 30: not past
    assert!(
        !traffic(&mut cc, 100, &[]).contains(&bad),
        "not capped at 5 s"
    );
    cc.advance(&mut *od, Duration::from_secs(10)); // 40: back
    assert!(traffic(&mut cc, 100, &[]).contains(&bad));
    traffic(&mut cc, 1000, &[bad]);
    cc.advance(&mut *od, Duration::from_secs(10)); // 50: ×2 → min(40, 20): until 70
    cc.advance(&mut *od, Duration::from_secs(20)); // 60, 70
    assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(10)); // 80: back (not 100)
    assert!(traffic(&mut cc, 100, &[]).contains(&bad), "capped at 20 s");
}

/// The success-rate threshold is mean − stdev × stdevFactor/1000 over the
/// hosts with at least requestVolume calls (population stdev): 5 hosts at
/// 100,100,100,100,60 %: mean 92, stdev 16: factor 400 → bound 85.6: the
/// 60 % one is ejected; factor 2000 → bound 60: 60 is not below it.
#[test]
fn success_rate_threshold_uses_stdev_factor_over_1000() {
    for (factor, ejected) in [(400, true), (2000, false)] {
        let (mut cc, mut od, ids) = ready(
            5,
            json!({"maxEjectionPercent": 100, "successRateEjection":
                   {"stdevFactor": factor, "requestVolume": 10}}),
        );
        // 10 calls each: 4 of the fifth's 10 fail.
        let picker = cc.picker().unwrap().clone();
        let mut local = PickLocal::new(3);
        let mut failed_on_bad = 0;
        for _ in 0..50 {
            if let PickResult::Complete { subconn, done } =
                picker.pick(&PickInfo::default(), &mut local)
            {
                let fail = subconn.id() == ids[4] && failed_on_bad < 4;
                if fail {
                    failed_on_bad += 1;
                }
                done.report(
                    subconn,
                    &DoneInfo {
                        error: fail.then_some("x"),
                        code: if fail { Code::Unavailable } else { Code::Ok },
                        ..Default::default()
                    },
                );
            }
        }
        assert_eq!(failed_on_bad, 4);
        cc.advance(&mut *od, Duration::from_secs(10));
        let seen = traffic(&mut cc, 100, &[]);
        assert_eq!(!seen.contains(&ids[4]), ejected, "stdevFactor {factor}");
    }
}

/// A resolver update that keeps an ejected endpoint (same address set,
/// another order: resolver.EndpointMap keys by the unordered set) keeps
/// its ejection; one that drops it and brings it back starts afresh.
#[test]
fn ejection_survives_address_reorder_and_resets_on_removal() {
    let ep = |a: &str, b: &str| Endpoint::new(vec![Address::new(a), Address::new(b)]);
    let cfgv = cfg(
        json!({"maxEjectionPercent": 100, "failurePercentageEjection":
                          {"minimumHosts": 0, "requestVolume": 2, "threshold": 50}}),
    );
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    let e1 = || ep("127.0.0.1:1000", "127.0.0.1:2000");
    let e1r = || ep("127.0.0.1:2000", "127.0.0.1:1000");
    let e2 = || ep("127.0.0.1:1001", "127.0.0.1:2001");
    cc.update(
        &mut *od,
        ClientConnState::new(vec![e1(), e2()], cfgv.clone()),
    )
    .unwrap();
    let first: Vec<SubConnId> = cc.connects().to_vec();
    for id in &first {
        cc.set_state(&mut *od, *id, ConnectivityState::Ready);
    }
    let bad = cc.subconn_for("127.0.0.1:1000").unwrap().id();
    let good = cc.subconn_for("127.0.0.1:1001").unwrap().id();
    traffic(&mut cc, 10, &[bad]);
    cc.advance(&mut *od, Duration::from_secs(10));
    assert_eq!(traffic(&mut cc, 10, &[]), HashSet::from([good]));
    // Same set, other order.
    cc.update(
        &mut *od,
        ClientConnState::new(vec![e1r(), e2()], cfgv.clone()),
    )
    .unwrap();
    for id in cc.connects().to_vec() {
        if !first.contains(&id) && !cc.shutdowns().contains(&id) {
            cc.set_state(&mut *od, id, ConnectivityState::Ready);
        }
    }
    let seen = traffic(&mut cc, 10, &[]);
    assert_eq!(seen, HashSet::from([good]), "still ejected after a reorder");
    // Dropped, then back: a new entry, not ejected.
    cc.update(&mut *od, ClientConnState::new(vec![e2()], cfgv.clone()))
        .unwrap();
    cc.update(&mut *od, ClientConnState::new(vec![e1(), e2()], cfgv))
        .unwrap();
    let n = cc.connects().len();
    for id in cc.connects().to_vec() {
        if !cc.shutdowns().contains(&id) && id != good {
            cc.set_state(&mut *od, id, ConnectivityState::Ready);
        }
    }
    assert!(cc.connects().len() >= n);
    let seen = traffic(&mut cc, 10, &[]);
    assert_eq!(seen.len(), 2, "a removed endpoint comes back afresh");
}

/// TestPickerUpdatedSynchronousAfterUpdate / handleLBConfigUpdate: a
/// config that flips counting on or off publishes a picker (counting or
/// not) before the update returns.
#[test]
fn go_picker_follows_the_noop_bit_at_once() {
    let (mut cc, mut od, _) = ready(3, json!({"failurePercentageEjection": {}}));
    assert!(matches!(cc.pick(), Picked::Complete { hooks: 1, .. }));
    update(&mut cc, &mut od, 3, json!({}));
    assert!(matches!(cc.pick(), Picked::Complete { hooks: 0, .. }));
    update(&mut cc, &mut od, 3, json!({"successRateEjection": {}}));
    assert!(matches!(cc.pick(), Picked::Complete { hooks: 1, .. }));
}

/// TestChildBasicOperations: the first config builds child1 and gives it
/// its config; a config naming child2, which reports READY inline, closes
/// child1 and the channel hears READY; closing the policy closes child2.
#[test]
fn go_child_basic_operations() {
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);
    struct Child(&'static str, Arc<Log>, bool);
    struct ChildLb(&'static str, Arc<Log>, bool);
    struct Nothing;
    impl Picker for Nothing {
        fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
            PickResult::Queue
        }
    }
    impl Builder for Child {
        fn name(&self) -> &str {
            self.0
        }
        fn build(&self) -> Box<dyn Balancer> {
            Box::new(ChildLb(self.0, self.1.clone(), self.2))
        }
    }
    impl Balancer for ChildLb {
        fn update_client_conn_state(
            &mut self,
            cc: &mut dyn ClientConn,
            _: ClientConnState,
        ) -> Result<(), String> {
            self.1 .0.lock().unwrap().push(format!("{} update", self.0));
            if self.2 {
                cc.update_state(ConnectivityState::Ready, Box::new(Nothing));
            }
            Ok(())
        }
        fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
        fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {
        }
        fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
        fn close(&mut self, _: &mut dyn ClientConn) {
            self.1 .0.lock().unwrap().push(format!("{} close", self.0));
        }
    }
    let log = Arc::new(Log::default());
    registry::register(Arc::new(Child("probe_od_child1", log.clone(), false)));
    registry::register(Arc::new(Child("probe_od_child2", log.clone(), true)));
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    let c1 = parse(&json!({"childPolicy": [{"probe_od_child1": {}}]}));
    cc.update(&mut *od, ClientConnState::from_addresses(vec![], c1))
        .unwrap();
    assert_eq!(*log.0.lock().unwrap(), vec!["probe_od_child1 update"]);
    let c2 = parse(&json!({"childPolicy": [{"probe_od_child2": {}}], "interval": "1000s"}));
    cc.update(&mut *od, ClientConnState::from_addresses(vec![], c2))
        .unwrap();
    assert_eq!(cc.state(), Some(ConnectivityState::Ready));
    let l = log.0.lock().unwrap().clone();
    assert!(l.contains(&"probe_od_child2 update".to_string()), "{l:?}");
    assert!(l.contains(&"probe_od_child1 close".to_string()), "{l:?}");
    cc.close(&mut *od);
    assert_eq!(
        log.0.lock().unwrap().last().unwrap(),
        "probe_od_child2 close"
    );
}

// ---------------------------------------------------------------------------
// e2e_test/outlierdetection_test.go, over real sockets on 127.0.0.1

fn plaintext() -> ChannelOptions {
    ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    }
}

fn servers(n: usize) -> Vec<TestServer> {
    (0..n)
        .map(|_| {
            TestServer::start(
                Listen::Tcp("127.0.0.1:0".parse().unwrap()),
                ServerOptions::default(),
            )
            .unwrap()
        })
        .collect()
}

/// One fail-fast call with `x-fail-port: bad`: the port that served it
/// (a failure can only come from `bad`).
fn call(r: &mut Reader, bad: u16) -> u16 {
    let md = vec![("x-fail-port".to_string(), bad.to_string())];
    let opts = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(5)),
        wait_for_ready: Some(false),
        metadata: &md,
        ..Default::default()
    };
    match r.unary("/echo.Echo/Unary", b"ping", &opts) {
        Ok(resp) => {
            let text = String::from_utf8(resp.message).unwrap();
            text.strip_prefix("ping|port=").unwrap().parse().unwrap()
        }
        Err(s) => {
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
            assert_eq!(s.message(), "failed as asked", "{s:?}");
            bad
        }
    }
}

/// gRPC-Go's checkRoundRobinRPCs: until 5 s pass, three rounds of
/// `ports.len()` calls; the first round must hold each port once and the
/// other two repeat it exactly.
fn check_round_robin(ch: &Channel, bad: u16, ports: &[u16]) -> Result<(), String> {
    let mut r = ch.reader();
    let deadline = Instant::now() + Duration::from_secs(5);
    let want: HashMap<u16, usize> = ports.iter().map(|p| (*p, 1)).collect();
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let rounds: Vec<Vec<u16>> = (0..3)
            .map(|_| (0..ports.len()).map(|_| call(&mut r, bad)).collect())
            .collect();
        let mut got: HashMap<u16, usize> = HashMap::new();
        for p in &rounds[0] {
            *got.entry(*p).or_default() += 1;
        }
        if got == want && rounds[1] == rounds[0] && rounds[2] == rounds[0] {
            return Ok(());
        }
        last = rounds;
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(format!("no round robin over {ports:?}: last {last:?}"))
}

const SR_E2E: &str = r#"{"loadBalancingConfig":[{"outlier_detection_experimental":{
    "interval":"0.050s","baseEjectionTime":"0.100s","maxEjectionTime":"300s",
    "maxEjectionPercent":33,
    "successRateEjection":{"stdevFactor":50,"enforcementPercentage":100,"minimumHosts":3,"requestVolume":5},
    "childPolicy":[{"round_robin":{}}]}}]}"#;

const FP_E2E: &str = r#"{"loadBalancingConfig":[{"outlier_detection_experimental":{
    "interval":"0.050s","baseEjectionTime":"0.100s","maxEjectionTime":"300s",
    "maxEjectionPercent":33,
    "failurePercentageEjection":{"threshold":50,"enforcementPercentage":100,"minimumHosts":3,"requestVolume":5},
    "childPolicy":[{"round_robin":{}}]}}]}"#;

const NOOP_E2E: &str = r#"{"loadBalancingConfig":[{"outlier_detection_experimental":{
    "interval":"0.050s","baseEjectionTime":"0.100s","maxEjectionTime":"300s",
    "maxEjectionPercent":33,
    "childPolicy":[{"round_robin":{}}]}}]}"#;

/// TestOutlierDetectionAlgorithmsE2E (both algorithms): round robin over
/// all three, then over the two good ones (the bad one ejected), then over
/// all three again (returned after its ejection time).
#[test]
fn go_e2e_algorithms() {
    for config in [SR_E2E, FP_E2E] {
        let s = servers(3);
        let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
        let target = format!(
            "ipv4:{}",
            s.iter()
                .map(|x| x.addr().to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let rt = Runtime::new().unwrap();
        let ch = Channel::new(&rt, &target, Some(config), plaintext()).unwrap();
        ch.connect().unwrap();
        let bad = ports[2];
        check_round_robin(&ch, bad, &ports).unwrap();
        check_round_robin(&ch, bad, &ports[..2]).unwrap();
        check_round_robin(&ch, bad, &ports).unwrap();
    }
}

/// TestNoopConfiguration: a no-op config never ejects (round robin over
/// all three, twice); the same channel given a counting config ejects the
/// bad one, then returns it.
#[test]
fn go_e2e_noop_configuration() {
    let s = servers(3);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let endpoints: Vec<Endpoint> = s
        .iter()
        .map(|x| Endpoint::from(Address::new(x.addr().to_string())))
        .collect();
    // gRPC-Go's manual resolver, its initial state the no-op config.
    let m = ManualResolver::new("od-e2e");
    m.set_initial_state(Some(ResolverState {
        endpoints: endpoints.clone(),
        service_config: Some(NOOP_E2E.into()),
    }));
    resolver::register(Arc::new(m.clone()));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "od-e2e:///x", None, plaintext()).unwrap();
    ch.connect().unwrap();
    let bad = ports[2];
    for _ in 0..2 {
        check_round_robin(&ch, bad, &ports).unwrap();
    }
    m.update(ResolverState {
        endpoints,
        service_config: Some(FP_E2E.into()),
    })
    .unwrap();
    check_round_robin(&ch, bad, &ports).unwrap();
    check_round_robin(&ch, bad, &ports[..2]).unwrap();
    check_round_robin(&ch, bad, &ports).unwrap();
}

/// maxEjectionPercent 100 and every endpoint failing: all are ejected
/// (0, 33, 66 % < 100 before each), round_robin reports
/// TRANSIENT_FAILURE and fail-fast picks fail UNAVAILABLE.
#[test]
fn all_endpoints_ejected_fail_picks_unavailable() {
    let (mut cc, mut od, ids) = ready(
        3,
        json!({"maxEjectionPercent": 100, "failurePercentageEjection":
               {"minimumHosts": 3, "requestVolume": 5, "threshold": 50}}),
    );
    traffic(&mut cc, 30, &ids);
    cc.advance(&mut *od, Duration::from_secs(10));
    assert_eq!(cc.state(), Some(ConnectivityState::TransientFailure));
    match cc.pick() {
        Picked::Fail(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(cc.resolve_now_requests(), 0);
}

/// onNoopConfig: "Reset each endpoint's ejection time multiplier to 0":
/// ejected at 10 s (×1), a no-op config at 15 s returns it and resets the
/// multiplier; counting again from 15 s (sweeps at 25, 35, ...), ejected
/// at 25 s with ×1 (30 s): back at 65 s, not ×2's 95 s.
#[test]
fn a_noop_config_resets_the_multiplier() {
    let fpe = json!({"failurePercentageEjection": {}});
    let (mut cc, mut od, ids) = ready(5, fpe.clone());
    let bad = ids[0];
    traffic(&mut cc, 1000, &[bad]);
    cc.advance(&mut *od, Duration::from_secs(10));
    assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(5));
    update(&mut cc, &mut od, 5, json!({}));
    assert!(traffic(&mut cc, 100, &[]).contains(&bad));
    update(&mut cc, &mut od, 5, fpe);
    traffic(&mut cc, 1000, &[bad]);
    cc.advance(&mut *od, Duration::from_secs(10)); // 25 s
    assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(30)); // 35, 45, 55
    assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
    cc.advance(&mut *od, Duration::from_secs(10)); // 65: back
    assert!(
        traffic(&mut cc, 100, &[]).contains(&bad),
        "×1 after the reset"
    );
}
