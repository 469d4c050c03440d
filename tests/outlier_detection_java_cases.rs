//! grpc-java's outlier detection tests
//! (util/src/test/java/io/grpc/util/OutlierDetectionLoadBalancerTest.java and
//! OutlierDetectionLoadBalancerProviderTest.java) ported onto switchyard's
//! `outlier_detection_experimental` over `TestClientConn`, plus rows of
//! gRFC A50 (as A61 amends it) that neither the Go nor the C-core ports pin.
//!
//! Java's fixture: five single-address endpoints under round_robin, every
//! subchannel READY, `generateLoad` = 100 picks (20 per endpoint), each
//! finished OK or failed, optionally capped per endpoint; `forwardTime` =
//! one interval (+1 ns).
//!
//! Not ported: the Mockito plumbing (tracer factories as such, the
//! `EndpointTracker` internals, `Subchannel.updateAddresses`, which
//! switchyard has no counterpart of: a subchannel's address is fixed) and
//! `mathChecksOut` (an internal helper; the population stdev is pinned by
//! tests/outlier_detection_go_cases.rs).

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::policy::outlier_detection::{
    FailurePercentageEjection, OutlierDetectionConfig, SuccessRateEjection,
};
use switchyard::ConnectivityState::{Connecting, Idle, Ready, Shutdown, TransientFailure};
use switchyard::*;

const OD: &str = "outlier_detection_experimental";
const INTERVAL: Duration = Duration::from_secs(10);

fn parse(cfg: &Value) -> Option<LbConfig> {
    registry::get(OD).unwrap().parse_config(cfg).unwrap()
}

/// `extra` over `{"childPolicy": [{<child>: {}}]}`.
fn cfg_with(child: Value, extra: Value) -> Option<LbConfig> {
    let mut c = json!({ "childPolicy": [child] });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    parse(&c)
}

fn cfg(extra: Value) -> Option<LbConfig> {
    cfg_with(json!({"round_robin": {}}), extra)
}

fn addr(i: usize) -> String {
    format!("127.0.0.1:{}", 2000 + i)
}

fn single_endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint::from(Address::new(addr(i))))
        .collect()
}

/// Java's setUp + first acceptResolvedAddresses: five endpoints under
/// round_robin, every subchannel READY. The subchannels in address order.
fn java_setup(extra: Value) -> (TestClientConn, Box<dyn Balancer>, Vec<SubConnId>) {
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    cc.update(
        &mut *od,
        ClientConnState::new(single_endpoints(5), cfg(extra)),
    )
    .unwrap();
    let ids: Vec<SubConnId> = (0..5)
        .map(|i| cc.subconn_for(&addr(i)).unwrap().id())
        .collect();
    for id in &ids {
        cc.set_state(&mut *od, *id, Connecting);
        cc.set_state(&mut *od, *id, Ready);
    }
    assert_eq!(cc.state(), Some(Ready));
    (cc, od, ids)
}

fn update(cc: &mut TestClientConn, od: &mut Box<dyn Balancer>, extra: Value) {
    cc.update(
        &mut **od,
        ClientConnState::new(single_endpoints(5), cfg(extra)),
    )
    .unwrap();
}

/// Java's generateLoad: 100 picks from the current picker; a pick on a
/// subchannel in `failing` finishes DEADLINE_EXCEEDED, others OK; a
/// subchannel in `caps` has only that many of its calls recorded.
fn generate_load(cc: &TestClientConn, failing: &[SubConnId], caps: &[(SubConnId, usize)]) {
    let picker = cc.picker().expect("picker").clone();
    let mut local = PickLocal::new(17);
    let mut calls: HashMap<SubConnId, usize> = HashMap::new();
    for _ in 0..100 {
        match picker.pick(&PickInfo::default(), &mut local) {
            PickResult::Complete { subconn, done } => {
                let id = subconn.id();
                let cap = caps
                    .iter()
                    .find(|(s, _)| *s == id)
                    .map_or(usize::MAX, |(_, c)| *c);
                let n = calls.entry(id).or_default();
                if *n < cap {
                    *n += 1;
                    let fail = failing.contains(&id);
                    done.report(
                        subconn,
                        &DoneInfo {
                            error: fail.then_some("deadline exceeded"),
                            code: if fail {
                                Code::DeadlineExceeded
                            } else {
                                Code::Ok
                            },
                            ..Default::default()
                        },
                    );
                }
            }
            _ => panic!("READY picker did not complete"),
        }
    }
}

/// The endpoints (by subchannel) that 100 picks do not reach: the ejected
/// ones (all, when the policy reports TRANSIENT_FAILURE).
fn ejected(cc: &mut TestClientConn, ids: &[SubConnId]) -> BTreeSet<SubConnId> {
    if cc.state() == Some(TransientFailure) {
        return ids.iter().copied().collect();
    }
    let reached: BTreeSet<SubConnId> = cc.picks(100).into_iter().flatten().collect();
    ids.iter()
        .copied()
        .filter(|i| !reached.contains(i))
        .collect()
}

fn set(ids: &[SubConnId]) -> BTreeSet<SubConnId> {
    ids.iter().copied().collect()
}

fn sr(extra: Value) -> Value {
    let mut s = json!({"minimumHosts": 3, "requestVolume": 10});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

// ---------------------------------------------------------------------------
// Success rate

/// successRateNoOutliers
#[test]
fn java_success_rate_no_outliers() {
    let (mut cc, mut od, ids) =
        java_setup(json!({"maxEjectionPercent": 50, "successRateEjection": sr(json!({}))}));
    generate_load(&cc, &[], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

/// successRateOneOutlier
#[test]
fn java_success_rate_one_outlier() {
    let (mut cc, mut od, ids) =
        java_setup(json!({"maxEjectionPercent": 50, "successRateEjection": sr(json!({}))}));
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
}

/// successRateOneOutlier_configChange: a new (counting) config with
/// enforcementPercentage 0 keeps the ejected endpoint ejected and ejects no
/// new outlier.
#[test]
fn java_success_rate_one_outlier_config_change() {
    let (mut cc, mut od, ids) =
        java_setup(json!({"maxEjectionPercent": 50, "successRateEjection": sr(json!({}))}));
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
    update(
        &mut cc,
        &mut od,
        json!({"maxEjectionPercent": 50,
               "successRateEjection": sr(json!({"enforcementPercentage": 0}))}),
    );
    // Java delivers READY to all five again (no-ops here).
    generate_load(&cc, &ids[1..2], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
}

/// successRateOneOutlier_unejected: healthy load, then maxEjectionTime
/// (300 s) + 1 ns later nothing is ejected.
#[test]
fn java_success_rate_one_outlier_unejected() {
    let (mut cc, mut od, ids) =
        java_setup(json!({"maxEjectionPercent": 50, "successRateEjection": sr(json!({}))}));
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
    generate_load(&cc, &[], &[]);
    cc.advance(&mut *od, Duration::from_secs(300) + Duration::from_nanos(1));
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

/// successRateOneOutlier_notEnoughVolume: requestVolume 20, the failing
/// endpoint with 19 calls.
#[test]
fn java_success_rate_one_outlier_not_enough_volume() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 50,
        "successRateEjection": sr(json!({"requestVolume": 20}))}));
    generate_load(&cc, &ids[..1], &[(ids[0], 19)]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

/// successRateOneOutlier_notEnoughAddressesWithVolume: minimumHosts 5,
/// requestVolume 20, a healthy endpoint with 19 calls: 4 candidates.
#[test]
fn java_success_rate_one_outlier_not_enough_addresses_with_volume() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 50,
        "successRateEjection": sr(json!({"minimumHosts": 5, "requestVolume": 20}))}));
    generate_load(&cc, &ids[..1], &[(ids[1], 19)]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

/// successRateOneOutlier_enforcementPercentage (0).
#[test]
fn java_success_rate_one_outlier_enforcement_percentage() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 50,
        "successRateEjection": sr(json!({"enforcementPercentage": 0}))}));
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

/// successRateTwoOutliers (stdevFactor 1).
#[test]
fn java_success_rate_two_outliers() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 50,
        "successRateEjection": sr(json!({"stdevFactor": 1}))}));
    generate_load(&cc, &ids[..2], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..2]));
}

/// successRateThreeOutliers_maxEjectionPercentage: maxEjectionPercent 30
/// over 5: the second ejection goes to 40 % (checked before, at 20 %), the
/// third is refused: 2 ejected.
#[test]
fn java_success_rate_three_outliers_max_ejection_percentage() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 30,
        "successRateEjection": sr(json!({"stdevFactor": 1}))}));
    generate_load(&cc, &ids[..3], &[]);
    cc.advance(&mut *od, INTERVAL);
    let e = ejected(&mut cc, &ids);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e.is_subset(&set(&ids[..3])), "{e:?}");
}

// ---------------------------------------------------------------------------
// Failure percentage

/// failurePercentageNoOutliers
#[test]
fn java_failure_percentage_no_outliers() {
    let (mut cc, mut od, ids) =
        java_setup(json!({"maxEjectionPercent": 50, "failurePercentageEjection": sr(json!({}))}));
    generate_load(&cc, &[], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

/// failurePercentageOneOutlier
#[test]
fn java_failure_percentage_one_outlier() {
    let (mut cc, mut od, ids) =
        java_setup(json!({"maxEjectionPercent": 50, "failurePercentageEjection": sr(json!({}))}));
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
}

/// failurePercentageOneOutlier_notEnoughVolume (requestVolume 100, 20 each).
#[test]
fn java_failure_percentage_one_outlier_not_enough_volume() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 50,
        "failurePercentageEjection": sr(json!({"requestVolume": 100}))}));
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

/// failurePercentageOneOutlier_notEnoughAddressesWithVolume
#[test]
fn java_failure_percentage_one_outlier_not_enough_addresses_with_volume() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 50,
        "failurePercentageEjection": sr(json!({"minimumHosts": 5, "requestVolume": 20}))}));
    generate_load(&cc, &ids[..1], &[(ids[1], 19)]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

/// failurePercentageOneOutlier_enforcementPercentage (0).
#[test]
fn java_failure_percentage_one_outlier_enforcement_percentage() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 50,
        "failurePercentageEjection": sr(json!({"enforcementPercentage": 0}))}));
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

// ---------------------------------------------------------------------------
// Both algorithms

/// successRateAndFailurePercentageThreeOutliers: success rate (stdevFactor
/// 1, requestVolume 10) ejects the two always-failing endpoints; failure
/// percentage (threshold 0, requestVolume 1) the third, which has a single
/// failed call.
#[test]
fn java_success_rate_and_failure_percentage_three_outliers() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 100,
        "successRateEjection": sr(json!({"stdevFactor": 1})),
        "failurePercentageEjection": {"threshold": 0, "minimumHosts": 3, "requestVolume": 1}}));
    generate_load(&cc, &ids[..3], &[(ids[2], 1)]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..3]));
}

/// successRateAndFailurePercentage_noOutliers
#[test]
fn java_success_rate_and_failure_percentage_no_outliers() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 50,
        "successRateEjection": sr(json!({})),
        "failurePercentageEjection": sr(json!({}))}));
    generate_load(&cc, &[], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

/// successRateAndFailurePercentage_successRateOutlier (failure percentage
/// configured, enforcementPercentage 0).
#[test]
fn java_success_rate_and_failure_percentage_success_rate_outlier() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 50,
        "successRateEjection": sr(json!({})),
        "failurePercentageEjection": sr(json!({"enforcementPercentage": 0}))}));
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
}

/// successRateAndFailurePercentage_errorPercentageOutlier (success rate
/// configured, enforcementPercentage 0).
#[test]
fn java_success_rate_and_failure_percentage_error_percentage_outlier() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 50,
        "successRateEjection": sr(json!({"enforcementPercentage": 0})),
        "failurePercentageEjection": sr(json!({}))}));
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
}

/// Both algorithms flag the same endpoint in one sweep. grpc-java
/// (`OutlierEjectionAlgorithm.forConfig` runs both, `ejectSubchannels`
/// adds one to the multiplier each time), gRPC-Go and A50's text eject it
/// twice (×2: 60 s); C-core skips the already ejected one in failure
/// percentage (×1: 30 s). switchyard documents C-core's rule for this case
/// (src/policy/outlier_detection.rs, `failure_percentage`): pinned here.
#[test]
fn both_algorithms_flagging_one_endpoint_count_one_ejection() {
    let (mut cc, mut od, ids) = java_setup(json!({"maxEjectionPercent": 50,
        "successRateEjection": sr(json!({})),
        "failurePercentageEjection": sr(json!({}))}));
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL); // 10 s: ejected
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
    cc.advance(&mut *od, 3 * INTERVAL); // 40 s: 30 s not strictly past
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
    cc.advance(&mut *od, INTERVAL); // 50 s: back (×1); Java/Go: at 80 s
    assert_eq!(ejected(&mut cc, &ids), set(&[]), "×1 (C-core), not ×2");
}

// ---------------------------------------------------------------------------
// Timer and config updates

/// acceptResolvedAddresses + acceptResolvedAddresses_intervalUpdate, after
/// the timer has run: a config with the same interval 4 s after a sweep
/// keeps the next sweep one interval after the last; a doubled interval
/// counts from the last sweep too; an interval already elapsed sweeps at
/// once (A50: "or 0 if that would be negative").
#[test]
fn java_interval_update_after_the_timer_ran() {
    let sre = sr(json!({}));
    let (mut cc, mut od, _) = java_setup(json!({"successRateEjection": sre}));
    let t0 = cc.now();
    let t = cc.timers();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1, t0 + INTERVAL, "first timer: the interval");
    assert_eq!(cc.advance(&mut *od, INTERVAL), 1);
    let swept = cc.now();
    cc.advance(&mut *od, Duration::from_secs(4));
    update(&mut cc, &mut od, json!({"successRateEjection": sre}));
    let t = cc.timers();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1, swept + INTERVAL, "same interval: due unchanged");
    update(
        &mut cc,
        &mut od,
        json!({"interval": "20s", "successRateEjection": sre}),
    );
    let t = cc.timers();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1, swept + 2 * INTERVAL, "doubled: from the last sweep");
    update(
        &mut cc,
        &mut od,
        json!({"interval": "3s", "successRateEjection": sre}),
    );
    let t = cc.timers();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1, cc.now(), "already elapsed: at once");
    assert_eq!(cc.advance(&mut *od, Duration::ZERO), 1);
    let t = cc.timers();
    assert_eq!(t[0].1, cc.now() + Duration::from_secs(3));
}

/// A config update between sweeps keeps the interval's counts (A50 resets
/// them only when the timer is first started; gRPC-Go does the same).
/// grpc-java differs: `acceptResolvedAddresses` calls
/// `endpointTrackerMap.resetCallCounters()` whenever it replaces a running
/// timer, so there the failures below are forgotten and nothing is ejected.
#[test]
fn a_config_update_keeps_the_intervals_counts() {
    let fpe = json!({"maxEjectionPercent": 50, "failurePercentageEjection": sr(json!({}))});
    let (mut cc, mut od, ids) = java_setup(fpe.clone());
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, Duration::from_secs(5));
    update(&mut cc, &mut od, fpe);
    cc.advance(&mut *od, Duration::from_secs(5));
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
}

/// A counting config update keeps current ejections, and the sweep judges
/// them by the config in force then (Java's trackers get the new config,
/// `maxEjectionTimeElapsed` reads it; gRPC-Go reads `b.cfg`): ejected at
/// 10 s for 30 s, a config with baseEjectionTime 5 s at 12 s returns it at
/// the 20 s sweep.
#[test]
fn a_counting_config_update_keeps_ejections_under_the_new_times() {
    let (mut cc, mut od, ids) =
        java_setup(json!({"maxEjectionPercent": 50, "failurePercentageEjection": sr(json!({}))}));
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
    cc.advance(&mut *od, Duration::from_secs(2));
    // Another algorithm, shorter times.
    update(
        &mut cc,
        &mut od,
        json!({"maxEjectionPercent": 50, "baseEjectionTime": "5s", "maxEjectionTime": "5s",
               "successRateEjection": sr(json!({}))}),
    );
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]), "kept by the update");
    cc.advance(&mut *od, Duration::from_secs(8)); // 20 s sweep: 20 > 10 + 5
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

// ---------------------------------------------------------------------------
// Resolver updates

/// Removing an ejected endpoint drops its ejection from the count that
/// maxEjectionPercent bounds (Java: `endpointTrackerMap.keySet().retainAll`
/// before `ejectionPercentage()`): 5 endpoints, 20 %: one ejected; once it
/// is removed another outlier may be ejected.
#[test]
fn removing_an_ejected_endpoint_frees_its_max_ejection_percent_share() {
    let extra = json!({"maxEjectionPercent": 20, "baseEjectionTime": "300s",
                       "failurePercentageEjection": sr(json!({}))});
    let (mut cc, mut od, ids) = java_setup(extra.clone());
    generate_load(&cc, &ids[..2], &[]);
    cc.advance(&mut *od, INTERVAL);
    let first = ejected(&mut cc, &ids);
    assert_eq!(first.len(), 1, "20 % of 5: one");
    let gone = *first.iter().next().unwrap();
    let gone_idx = ids.iter().position(|i| *i == gone).unwrap();
    let other = ids[..2].iter().copied().find(|i| *i != gone).unwrap();
    // The resolver drops the ejected one.
    let eps: Vec<Endpoint> = (0..5)
        .filter(|i| *i != gone_idx)
        .map(|i| Endpoint::from(Address::new(addr(i))))
        .collect();
    cc.update(&mut *od, ClientConnState::new(eps, cfg(extra)))
        .unwrap();
    let rest: Vec<SubConnId> = ids.iter().copied().filter(|i| *i != gone).collect();
    // 100 picks over 4: 25 each, `other` failing.
    generate_load(&cc, &[other], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &rest), set(&[other]));
}

// ---------------------------------------------------------------------------
// A recording child policy (Java's FakeLoadBalancer): one subchannel per
// address, kept across updates while its address stays listed; logs every
// subchannel state it is given and every resolver error; its picker rotates
// over the subchannels it sees READY and carries its own done hook.

#[derive(Default)]
struct Rec {
    /// (address, state, error) per `update_subconn_state`.
    states: Mutex<Vec<(String, ConnectivityState, Option<String>)>>,
    errors: Mutex<Vec<String>>,
    /// Outcomes its own done hook heard.
    hook_calls: AtomicUsize,
}

impl Rec {
    fn states_of(&self, a: &str) -> Vec<ConnectivityState> {
        self.states
            .lock()
            .unwrap()
            .iter()
            .filter(|(x, _, _)| x == a)
            .map(|(_, s, _)| *s)
            .collect()
    }
    fn clear(&self) {
        self.states.lock().unwrap().clear();
    }
}

struct RecBuilder(&'static str, Arc<Rec>);
struct RecLb {
    rec: Arc<Rec>,
    subs: Vec<(Arc<SubConn>, ConnectivityState)>,
    generation: u64,
}
struct RecHook(Arc<Rec>);
impl DoneHook for RecHook {
    fn done(&self, _: &SubConn, _: &DoneInfo<'_>) {
        self.0.hook_calls.fetch_add(1, Ordering::SeqCst);
    }
}
struct RecPicker {
    ready: Vec<Arc<SubConn>>,
    next: AtomicUsize,
    hook: RecHook,
}
impl Picker for RecPicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        if self.ready.is_empty() {
            return PickResult::Queue;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.ready.len();
        PickResult::Complete {
            subconn: &self.ready[i],
            done: DoneHooks::one(&self.hook),
        }
    }
}

impl Builder for RecBuilder {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(RecLb {
            rec: self.1.clone(),
            subs: Vec::new(),
            generation: 0,
        })
    }
    /// `{"generation": n}`: a new generation recreates every subchannel
    /// (Java's `recreateSubchannels`).
    fn parse_config(&self, config: &Value) -> Result<Option<LbConfig>, String> {
        let g = config
            .get("generation")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok(Some(Arc::new(g)))
    }
}

impl RecLb {
    fn publish(&self, cc: &mut dyn ClientConn) {
        let ready: Vec<Arc<SubConn>> = self
            .subs
            .iter()
            .filter(|(_, s)| *s == Ready)
            .map(|(sc, _)| sc.clone())
            .collect();
        let state = if !ready.is_empty() {
            Ready
        } else if self.subs.iter().all(|(_, s)| *s == TransientFailure) && !self.subs.is_empty() {
            TransientFailure
        } else {
            Connecting
        };
        cc.update_state(
            state,
            Box::new(RecPicker {
                ready,
                next: AtomicUsize::new(0),
                hook: RecHook(self.rec.clone()),
            }),
        );
    }
}

impl Balancer for RecLb {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let generation = state
            .config
            .as_ref()
            .and_then(|c| c.downcast_ref::<u64>().copied())
            .unwrap_or(0);
        let wanted: Vec<Address> = state
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        let recreate = generation != self.generation;
        self.generation = generation;
        let mut kept = Vec::new();
        for (sc, s) in std::mem::take(&mut self.subs) {
            if !recreate && wanted.iter().any(|a| a.addr == sc.addr()) {
                kept.push((sc, s));
            } else {
                cc.shutdown_subconn(sc.id());
            }
        }
        self.subs = kept;
        for a in wanted {
            if !self.subs.iter().any(|(sc, _)| sc.addr() == a.addr) {
                let sc = cc.new_subconn(a)?;
                cc.connect(sc.id());
                self.subs.push((sc, Idle));
            }
        }
        self.publish(cc);
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, error: &str) {
        self.rec.errors.lock().unwrap().push(error.to_string());
    }
    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        let Some(i) = self.subs.iter().position(|(s, _)| s.id() == sc) else {
            return;
        };
        self.rec.states.lock().unwrap().push((
            self.subs[i].0.addr().to_string(),
            state.state,
            state.error.as_deref().map(str::to_string),
        ));
        if state.state == Shutdown {
            self.subs.remove(i);
        } else {
            self.subs[i].1 = state.state;
        }
        self.publish(cc);
    }
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, cc: &mut dyn ClientConn) {
        for (sc, _) in std::mem::take(&mut self.subs) {
            cc.shutdown_subconn(sc.id());
        }
    }
}

/// Registers a recording child under `name`; the OD config over it.
fn rec_child(name: &'static str) -> Arc<Rec> {
    let rec = Arc::new(Rec::default());
    registry::register(Arc::new(RecBuilder(name, rec.clone())));
    rec
}

/// The live subchannel of `a` (the last one made for it).
fn live(cc: &TestClientConn, a: &str) -> SubConnId {
    cc.subconns()
        .iter()
        .rev()
        .find(|s| s.addr() == a && !cc.shutdowns().contains(&s.id()))
        .map(|s| s.id())
        .unwrap_or_else(|| panic!("no live subchannel for {a}"))
}

/// Every live subchannel READY.
fn all_ready(cc: &mut TestClientConn, od: &mut dyn Balancer) {
    let live: Vec<SubConnId> = cc
        .subconns()
        .iter()
        .map(|s| s.id())
        .filter(|id| !cc.shutdowns().contains(id))
        .collect();
    for id in live {
        cc.set_state(od, id, Ready);
    }
}

/// successRateAndFailurePercentage_*Outlier_ (with the health listener):
/// the ejected endpoint's subchannel is shown READY, then
/// TRANSIENT_FAILURE when ejected (Java: UNAVAILABLE "The subchannel has
/// been ejected by outlier detection"); the others hear nothing more; on
/// its return the child is given its latest real state (READY) again.
#[test]
fn java_ejected_subchannel_shown_transient_failure_then_restored() {
    let rec = rec_child("java_od_rec_states");
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    let c = cfg_with(
        json!({"java_od_rec_states": {}}),
        json!({"maxEjectionPercent": 50,
               "successRateEjection": sr(json!({"enforcementPercentage": 0})),
               "failurePercentageEjection": sr(json!({}))}),
    );
    cc.update(&mut *od, ClientConnState::new(single_endpoints(5), c))
        .unwrap();
    all_ready(&mut cc, &mut *od);
    let ids: Vec<SubConnId> = (0..5).map(|i| live(&cc, &addr(i))).collect();
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
    assert_eq!(rec.states_of(&addr(0)), vec![Ready, TransientFailure]);
    let last = rec.states.lock().unwrap().last().cloned().unwrap();
    assert!(
        last.2.is_some(),
        "an error with the TRANSIENT_FAILURE: {last:?}"
    );
    for i in 1..5 {
        assert_eq!(rec.states_of(&addr(i)), vec![Ready], "endpoint {i}");
    }
    // Back after its ejection time (30 s, strictly past: the 50 s sweep).
    rec.clear();
    cc.advance(&mut *od, 4 * INTERVAL);
    assert_eq!(rec.states_of(&addr(0)), vec![Ready], "its real state back");
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

/// handleNameResolutionError_noChildLb: a resolver error before any config
/// (no child yet) reports TRANSIENT_FAILURE with a failing picker
/// (grpc-java: the GracefulSwitchLoadBalancer's default; gRPC-Go's
/// gracefulswitch.ResolverError does the same with no balancer).
#[test]
fn java_handle_name_resolution_error_no_child_lb() {
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    cc.resolver_error(&mut *od, "deadline exceeded");
    assert_eq!(
        cc.state(),
        Some(TransientFailure),
        "states {:?}",
        cc.states()
    );
    match cc.pick() {
        Picked::Fail(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        other => panic!("{other:?}"),
    }
}

/// The same, reached through switchyard's own public GracefulSwitch (a
/// parent that switched to outlier detection and hears a resolver error
/// before the first update): the switch routes the error to its latest
/// policy, which has no child yet and fails picks itself.
#[test]
fn resolver_error_before_first_update_under_graceful_switch_reports_transient_failure() {
    use switchyard::balancer::graceful_switch::GracefulSwitch;
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    gs.switch_to(&mut cc, registry::get(OD).unwrap());
    cc.resolver_error(&mut gs, "deadline exceeded");
    assert_eq!(
        cc.state(),
        Some(TransientFailure),
        "states {:?}",
        cc.states()
    );
}

/// handleNameResolutionError_withChildLb: passed to the child.
#[test]
fn java_handle_name_resolution_error_with_child_lb() {
    let rec = rec_child("java_od_rec_error");
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    let c = cfg_with(
        json!({"java_od_rec_error": {}}),
        json!({"successRateEjection": {}}),
    );
    cc.update(&mut *od, ClientConnState::new(single_endpoints(1), c))
        .unwrap();
    cc.resolver_error(&mut *od, "deadline exceeded");
    assert_eq!(*rec.errors.lock().unwrap(), vec!["deadline exceeded"]);
}

/// delegatePickTracerFactoryPreserved: the child's own per-call hook still
/// hears the outcome, with outlier detection's counted as well.
#[test]
fn java_delegate_pick_hook_preserved() {
    let rec = rec_child("java_od_rec_hook");
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    let c = cfg_with(
        json!({"java_od_rec_hook": {}}),
        json!({"successRateEjection": {}}),
    );
    cc.update(&mut *od, ClientConnState::new(single_endpoints(1), c))
        .unwrap();
    all_ready(&mut cc, &mut *od);
    match cc.pick_done(&DoneInfo::default()) {
        Picked::Complete { hooks, .. } => assert_eq!(hooks, 2, "child's + OD's"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rec.hook_calls.load(Ordering::SeqCst), 1);
}

/// childLbRecreatesSubchannels: the child replaces its subchannels without
/// a resolver change; the new ones are tracked (their calls counted
/// toward the endpoint, ejections applied to them), the old ones not.
#[test]
fn java_child_lb_recreates_subchannels() {
    let _rec = rec_child("java_od_rec_recreate");
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    let extra = json!({"maxEjectionPercent": 50, "failurePercentageEjection": sr(json!({}))});
    let c0 = cfg_with(json!({"java_od_rec_recreate": {}}), extra.clone());
    cc.update(&mut *od, ClientConnState::new(single_endpoints(5), c0))
        .unwrap();
    all_ready(&mut cc, &mut *od);
    let old: Vec<SubConnId> = (0..5).map(|i| live(&cc, &addr(i))).collect();
    let c1 = cfg_with(json!({"java_od_rec_recreate": {"generation": 1}}), extra);
    cc.update(&mut *od, ClientConnState::new(single_endpoints(5), c1))
        .unwrap();
    all_ready(&mut cc, &mut *od);
    let new: Vec<SubConnId> = (0..5).map(|i| live(&cc, &addr(i))).collect();
    assert!(new.iter().all(|n| !old.contains(n)), "recreated");
    match cc.pick() {
        Picked::Complete { subconn, hooks } => {
            assert!(new.contains(&subconn));
            assert_eq!(hooks, 2, "a new subchannel's calls are counted");
        }
        other => panic!("{other:?}"),
    }
    generate_load(&cc, &new[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &new), set(&new[..1]));
}

/// multipleAddressesEndpoint: endpoints [a0, a1], [a2, a3], [a4], the child
/// making one subchannel per address; a0 and a1 fail every call: their
/// endpoint (calls summed over both subchannels) is ejected, both its
/// subchannels shown TRANSIENT_FAILURE.
#[test]
fn java_multiple_addresses_endpoint() {
    let rec = rec_child("java_od_rec_multi");
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    let c = cfg_with(
        json!({"java_od_rec_multi": {}}),
        json!({"maxEjectionPercent": 50, "failurePercentageEjection": sr(json!({}))}),
    );
    let ep = |a: &[usize]| Endpoint::new(a.iter().map(|i| Address::new(addr(*i))).collect());
    cc.update(
        &mut *od,
        ClientConnState::new(vec![ep(&[0, 1]), ep(&[2, 3]), ep(&[4])], c),
    )
    .unwrap();
    all_ready(&mut cc, &mut *od);
    let ids: Vec<SubConnId> = (0..5).map(|i| live(&cc, &addr(i))).collect();
    generate_load(&cc, &ids[..2], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..2]));
    assert_eq!(rec.states_of(&addr(0)), vec![Ready, TransientFailure]);
    assert_eq!(rec.states_of(&addr(1)), vec![Ready, TransientFailure]);
    assert_eq!(rec.states_of(&addr(2)), vec![Ready]);
}

/// subchannelUpdateAddress_singleReplaced, at the resolver level: the
/// ejected endpoint's address moves into another (not ejected) endpoint
/// while the child keeps its subchannel: it is no longer ejected and the
/// child gets its real state back.
#[test]
fn java_address_moved_out_of_an_ejected_endpoint_is_unejected() {
    let rec = rec_child("java_od_rec_move");
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    let c = cfg_with(
        json!({"java_od_rec_move": {}}),
        json!({"maxEjectionPercent": 50, "failurePercentageEjection": sr(json!({}))}),
    );
    cc.update(
        &mut *od,
        ClientConnState::new(single_endpoints(5), c.clone()),
    )
    .unwrap();
    all_ready(&mut cc, &mut *od);
    let ids: Vec<SubConnId> = (0..5).map(|i| live(&cc, &addr(i))).collect();
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
    rec.clear();
    // a0 joins a1's endpoint: [a0, a1], a2, a3, a4.
    let ep = |a: &[usize]| Endpoint::new(a.iter().map(|i| Address::new(addr(*i))).collect());
    cc.update(
        &mut *od,
        ClientConnState::new(vec![ep(&[1, 0]), ep(&[2]), ep(&[3]), ep(&[4])], c),
    )
    .unwrap();
    assert_eq!(live(&cc, &addr(0)), ids[0], "the child kept it");
    assert_eq!(rec.states_of(&addr(0)), vec![Ready], "its real state back");
    assert_eq!(ejected(&mut cc, &ids), set(&[]));
}

// ---------------------------------------------------------------------------
// OutlierDetectionLoadBalancerProviderTest

fn od_config(v: Value) -> OutlierDetectionConfig {
    let c = registry::get(OD)
        .unwrap()
        .parse_config(&v)
        .unwrap()
        .unwrap();
    c.downcast_ref::<OutlierDetectionConfig>().unwrap().clone()
}

/// parseLoadBalancingConfig_defaults
#[test]
fn java_parse_load_balancing_config_defaults() {
    let c = od_config(
        json!({"successRateEjection": {}, "failurePercentageEjection": {},
                              "childPolicy": [{"round_robin": {}}]}),
    );
    assert_eq!(
        c.success_rate_ejection,
        Some(SuccessRateEjection {
            stdev_factor: 1900,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 100
        })
    );
    assert_eq!(
        c.failure_percentage_ejection,
        Some(FailurePercentageEjection {
            threshold: 85,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 50
        })
    );
    assert_eq!(c.child_policy.name(), "round_robin");
}

/// parseLoadBalancingConfig_valuesSet, with A50's field name
/// `maxEjectionPercent` (grpc-java's provider reads `maxEjectionPercentage`,
/// which no other implementation or the gRFC uses: switchyard ignores that
/// key, as gRPC-Go and C-core do, and keeps the default 10).
#[test]
fn java_parse_load_balancing_config_values_set() {
    let mut v = json!({"interval": "100s", "baseEjectionTime": "100s",
        "maxEjectionTime": "100s", "maxEjectionPercent": 100,
        "successRateEjection": {"stdevFactor": 100, "enforcementPercentage": 100,
                                "minimumHosts": 100, "requestVolume": 100},
        "failurePercentageEjection": {"threshold": 100, "enforcementPercentage": 100,
                                      "minimumHosts": 100, "requestVolume": 100},
        "childPolicy": [{"round_robin": {}}]});
    let c = od_config(v.clone());
    assert_eq!(c.interval, Duration::from_secs(100));
    assert_eq!(c.base_ejection_time, Duration::from_secs(100));
    assert_eq!(c.max_ejection_time, Duration::from_secs(100));
    assert_eq!(c.max_ejection_percent, 100);
    assert_eq!(
        c.success_rate_ejection,
        Some(SuccessRateEjection {
            stdev_factor: 100,
            enforcement_percentage: 100,
            minimum_hosts: 100,
            request_volume: 100
        })
    );
    assert_eq!(
        c.failure_percentage_ejection,
        Some(FailurePercentageEjection {
            threshold: 100,
            enforcement_percentage: 100,
            minimum_hosts: 100,
            request_volume: 100
        })
    );
    assert_eq!(c.child_policy.name(), "round_robin");
    // Java's key.
    v.as_object_mut().unwrap().remove("maxEjectionPercent");
    v["maxEjectionPercentage"] = json!(100);
    assert_eq!(od_config(v).max_ejection_percent, 10);
}

/// While ejected, what the child hears of the subchannel. A50's `eject()`
/// "will stop passing along updates from the underlying subchannel"
/// (grpc-java's OutlierDetectionSubchannelStateListener drops them while
/// `ejected`, and ejects a subchannel created for an ejected endpoint at
/// once, in `createSubchannel`). switchyard documents A61's reading (an
/// ejection is a health verdict; raw connectivity still reaches the child,
/// src/policy/outlier_detection.rs `update_subconn_state`): a lost
/// connection is passed on (IDLE), a reconnection is shown CONNECTING then
/// TRANSIENT_FAILURE; a subchannel the child makes anew for the ejected
/// endpoint likewise. Pinned here; grpc-java's old (non-health-consumer)
/// path would show nothing until the return.
#[test]
fn ejected_subchannel_raw_connectivity_still_reaches_the_child() {
    let rec = rec_child("java_od_rec_raw");
    let mut cc = TestClientConn::new();
    let mut od = registry::get(OD).unwrap().build();
    let extra = json!({"maxEjectionPercent": 50, "failurePercentageEjection": sr(json!({}))});
    let c0 = cfg_with(json!({"java_od_rec_raw": {}}), extra.clone());
    cc.update(&mut *od, ClientConnState::new(single_endpoints(5), c0))
        .unwrap();
    all_ready(&mut cc, &mut *od);
    let ids: Vec<SubConnId> = (0..5).map(|i| live(&cc, &addr(i))).collect();
    generate_load(&cc, &ids[..1], &[]);
    cc.advance(&mut *od, INTERVAL);
    assert_eq!(ejected(&mut cc, &ids), set(&ids[..1]));
    rec.clear();
    cc.set_state(&mut *od, ids[0], Idle);
    cc.set_state(&mut *od, ids[0], Connecting);
    cc.set_state(&mut *od, ids[0], Ready);
    assert_eq!(
        rec.states_of(&addr(0)),
        vec![Idle, Connecting, Connecting, TransientFailure]
    );
    // The child remakes its subchannels while the endpoint is ejected.
    rec.clear();
    let c1 = cfg_with(json!({"java_od_rec_raw": {"generation": 1}}), extra);
    cc.update(&mut *od, ClientConnState::new(single_endpoints(5), c1))
        .unwrap();
    let fresh = live(&cc, &addr(0));
    assert_ne!(fresh, ids[0]);
    cc.set_state(&mut *od, fresh, Connecting);
    cc.set_state(&mut *od, fresh, Ready);
    let seen = rec.states_of(&addr(0));
    assert_eq!(
        seen.last(),
        Some(&TransientFailure),
        "a new subchannel of an ejected endpoint: {seen:?}"
    );
    assert!(!seen.contains(&Ready), "{seen:?}");
}
