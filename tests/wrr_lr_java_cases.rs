//! grpc-java's `WeightedRoundRobinLoadBalancerTest`,
//! `WeightedRoundRobinLoadBalancerProviderTest`, `LeastRequestLoadBalancerTest`
//! and `LeastRequestLoadBalancerProviderTest` (xds/src/test/java/io/grpc/xds/),
//! the scenarios the gRPC-Go and C-core ports (weighted_round_robin_go_cases,
//! least_request_round_robin_go_cases, core_lb_policy_cases) do not already
//! pin, over switchyard's public API: the policies driven through
//! `TestClientConn` (its manual clock plays Java's `FakeClock`), load reports
//! delivered either as OOB reports (`oob_report`, Java's
//! `OrcaReportListener.onLoadReport` called directly) or through a pick's
//! done hook (Java's `reportLoadOnRpc`), and the public weight formula and
//! scaling functions.
//!
//! Java's `createMetricReport(cpu, app, mem, qps, eps, ...)` is written here
//! as `rep(cpu, app, qps, eps)`.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::policy::least_request::LeastRequestConfig;
use switchyard::policy::weighted_round_robin::{scale, weight_from_report, WrrConfig};
use switchyard::ConnectivityState::{Connecting, Idle, Ready, TransientFailure};
use switchyard::*;

const SEC: Duration = Duration::from_secs(1);
/// The eps grpc-java's weight tests report (its value, not π).
#[allow(clippy::approx_constant)]
const JAVA_EPS: f64 = 3.14159;
const S: [&str; 3] = ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"];

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

fn build(name: &str) -> Box<dyn Balancer> {
    registry::get(name).expect("registered").build()
}

fn parse(name: &str, cfg: Value) -> Result<Option<LbConfig>, String> {
    registry::get(name).unwrap().parse_config(&cfg)
}

fn wrr_cfg(cfg: Value) -> LbConfig {
    parse("weighted_round_robin", cfg).unwrap().unwrap()
}

fn wrr_parsed(cfg: Value) -> WrrConfig {
    wrr_cfg(cfg).downcast_ref::<WrrConfig>().unwrap().clone()
}

fn eps(addrs: &[&str]) -> Vec<Endpoint> {
    addrs
        .iter()
        .map(|a| Endpoint::from(Address::new(*a)))
        .collect()
}

fn sc(cc: &TestClientConn, addr: &str) -> SubConnId {
    cc.subconn_for(addr)
        .unwrap_or_else(|| panic!("no subchannel for {addr}"))
        .id()
}

fn addr_of(cc: &TestClientConn, id: SubConnId) -> String {
    cc.subconn(id).unwrap().addr().to_string()
}

fn flush(cc: &mut TestClientConn, lb: &mut dyn Balancer) {
    for _ in 0..100 {
        if !cc.run_work(lb) {
            return;
        }
    }
}

fn set(cc: &mut TestClientConn, lb: &mut dyn Balancer, addr: &str, s: ConnectivityState) {
    let id = sc(cc, addr);
    cc.set_state(lb, id, s);
    flush(cc, lb);
}

fn connects_to(cc: &TestClientConn, addr: &str) -> usize {
    cc.connects()
        .iter()
        .filter(|id| addr_of(cc, **id) == addr)
        .count()
}

type Load = Vec<(&'static str, f64)>;

/// Java's `createMetricReport(cpu, app, mem, qps, eps, ...)` (mem left out).
fn rep(cpu: f64, app: f64, qps: f64, eps: f64) -> Load {
    let mut l = vec![];
    // Proto3: a zero scalar is absent.
    if cpu != 0.0 {
        l.push(("cpu_utilization", cpu));
    }
    if app != 0.0 {
        l.push(("application_utilization", app));
    }
    if qps != 0.0 {
        l.push(("rps_fractional", qps));
    }
    if eps != 0.0 {
        l.push(("eps", eps));
    }
    l
}

/// A WRR policy on a TestClientConn.
struct W {
    cc: TestClientConn,
    lb: Box<dyn Balancer>,
    local: PickLocal,
}

impl W {
    fn new() -> W {
        W {
            cc: TestClientConn::new(),
            lb: build("weighted_round_robin"),
            local: PickLocal::new(11),
        }
    }

    fn update(&mut self, addrs: &[&str], cfg: Value) {
        self.cc
            .update(
                &mut *self.lb,
                ClientConnState::new(eps(addrs), Some(wrr_cfg(cfg))),
            )
            .unwrap();
        flush(&mut self.cc, &mut *self.lb);
    }

    fn set(&mut self, addr: &str, s: ConnectivityState) {
        set(&mut self.cc, &mut *self.lb, addr, s);
    }

    fn advance(&mut self, by: Duration) {
        self.cc.advance(&mut *self.lb, by);
        flush(&mut self.cc, &mut *self.lb);
    }

    /// Java's `OrcaReportListener.onLoadReport` for `addr`'s endpoint, as
    /// an OOB report (the policy must be in OOB mode).
    fn oob(&mut self, addr: &str, load: &Load) {
        let id = sc(&self.cc, addr);
        assert_eq!(self.cc.oob_report(id, load), 1, "{addr} has a listener");
    }

    /// `n` picks from the current picker; each pick's done hooks get its
    /// address's load from `metrics` (Java's reportLoadOnRpc), if any;
    /// `step` is advanced after each pick when given.
    fn picks(&mut self, n: usize, metrics: &[(&str, Load)]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let picker = self.cc.picker().expect("a picker").clone();
            match picker.pick(&PickInfo::default(), &mut self.local) {
                PickResult::Complete { subconn, done } => {
                    let addr = subconn.addr().to_string();
                    if let Some((_, l)) = metrics.iter().find(|(a, _)| *a == addr) {
                        done.report(
                            subconn,
                            &DoneInfo {
                                load: l,
                                ..Default::default()
                            },
                        );
                    }
                    *counts.entry(addr).or_default() += 1;
                }
                PickResult::Queue => panic!("WRR pick queued"),
                PickResult::Fail(s) => panic!("WRR pick failed: {s:?}"),
                PickResult::Drop(s) => panic!("WRR pick dropped: {s:?}"),
            }
        }
        counts
    }

    /// Fractions of `n` picks per address.
    fn fractions(&mut self, n: usize) -> BTreeMap<String, f64> {
        self.picks(n, &[])
            .into_iter()
            .map(|(a, c)| (a, c as f64 / n as f64))
            .collect()
    }
}

#[track_caller]
fn assert_fractions(got: &BTreeMap<String, f64>, want: &[(&str, f64)], tol: f64) {
    assert_eq!(got.len(), want.len(), "picked {got:?}, want {want:?}");
    for (a, f) in want {
        let g = got.get(*a).copied().unwrap_or(0.0);
        assert!(
            (g - f).abs() <= tol,
            "{a}: picked fraction {g:.5}, want {f:.5} ± {tol} (all: {got:?})"
        );
    }
}

/// Java's setup: the three endpoints, all READY, with `cfg`.
fn wrr_ready(addrs: &[&str], cfg: Value) -> W {
    let mut w = W::new();
    w.update(addrs, cfg);
    for a in addrs {
        w.set(a, Ready);
    }
    assert_eq!(w.cc.state(), Some(Ready));
    w
}

// ===========================================================================
// WeightedRoundRobinLoadBalancerTest: weight computation
// ===========================================================================

fn java_weight(qps: f64, util: f64, eps: f64, penalty: f64) -> f64 {
    qps / (util + eps / qps * penalty)
}

/// pickByWeight_normalWeight{,_useApplicationUtilization,
/// _withEps_defaultErrorUtilizationPenalty, _withEps_customErrorUtilizationPenalty},
/// and pickByWeight_avgWeight_zeroCpuUtilization_withEps_...: the weight of
/// each report (qps / (utilization + eps/qps × penalty); application
/// utilization over cpu; zero utilization: no weight).
#[test]
fn wrr_weight_formula_java_pick_by_weight_reports() {
    let def = wrr_parsed(json!({}));
    let custom = wrr_parsed(json!({"errorUtilizationPenalty": 1.75}));
    let close = |a: Option<f64>, b: f64| {
        let a = a.expect("a weight");
        assert!((a - b).abs() <= 1e-9 * b.max(1.0), "{a} vs {b}");
    };
    // normalWeight: cpu only.
    close(
        weight_from_report(&rep(0.12, 0.0, 22.0, 0.0), &def),
        22.0 / 0.12,
    );
    close(
        weight_from_report(&rep(0.28, 0.0, 40.0, 0.0), &def),
        40.0 / 0.28,
    );
    // useApplicationUtilization: app wins over cpu.
    close(
        weight_from_report(&rep(0.72, 0.12, 22.0, 0.0), &def),
        22.0 / 0.12,
    );
    close(
        weight_from_report(&rep(0.99, 0.86, 100.0, 0.0), &def),
        100.0 / 0.86,
    );
    // eps, default penalty 1.0.
    close(
        weight_from_report(&rep(0.12, 0.0, 22.0, 19.7), &def),
        java_weight(22.0, 0.12, 19.7, 1.0),
    );
    close(
        weight_from_report(&rep(0.86, 0.0, 100.0, JAVA_EPS), &def),
        java_weight(100.0, 0.86, JAVA_EPS, 1.0),
    );
    // eps, penalty 1.75.
    close(
        weight_from_report(&rep(0.28, 0.0, 40.0, 0.998), &custom),
        java_weight(40.0, 0.28, 0.998, 1.75),
    );
    // Zero cpu and app: no weight at all, whatever the eps.
    assert_eq!(
        weight_from_report(&rep(0.0, 0.0, 22.0, 19.7), &custom),
        None
    );
}

/// pickByWeight_normalWeight (and _withEps_customErrorUtilizationPenalty):
/// three READY endpoints report once, the clock passes the 10 s default
/// blackout, and 10,000 picks split in proportion to the weights (Java:
/// within 0.0002 of the ratio; here 0.0005).
#[test]
fn wrr_java_pick_by_weight_normal_ratios() {
    for (penalty, reports) in [
        (
            1.0,
            [
                rep(0.12, 0.0, 22.0, 0.0),
                rep(0.28, 0.0, 40.0, 0.0),
                rep(0.86, 0.0, 100.0, 0.0),
            ],
        ),
        (
            1.75,
            [
                rep(0.12, 0.0, 22.0, 19.7),
                rep(0.28, 0.0, 40.0, 0.998),
                rep(0.86, 0.0, 100.0, JAVA_EPS),
            ],
        ),
    ] {
        let mut w = wrr_ready(
            &S,
            json!({"enableOobLoadReport": true, "errorUtilizationPenalty": penalty}),
        );
        for (a, r) in S.iter().zip(&reports) {
            w.oob(a, r);
        }
        w.advance(Duration::from_secs(11));
        let ws: Vec<f64> = [
            (22.0, 0.12, 19.7),
            (40.0, 0.28, 0.998),
            (100.0, 0.86, JAVA_EPS),
        ]
        .iter()
        .map(|&(q, u, e)| java_weight(q, u, if penalty == 1.0 { 0.0 } else { e }, penalty))
        .collect();
        let total: f64 = ws.iter().sum();
        let got = w.fractions(10_000);
        assert_fractions(
            &got,
            &[
                (S[0], ws[0] / total),
                (S[1], ws[1] / total),
                (S[2], ws[2] / total),
            ],
            0.0005,
        );
    }
}

/// pickByWeight_avgWeight_zeroCpuUtilization_withEps_customErrorUtilizationPenalty:
/// reports without utilization give no weight: an even split.
#[test]
fn wrr_java_zero_utilization_reports_leave_an_even_split() {
    let mut w = wrr_ready(
        &S,
        json!({"enableOobLoadReport": true, "errorUtilizationPenalty": 1.75}),
    );
    w.oob(S[0], &rep(0.0, 0.0, 22.0, 19.7));
    w.oob(S[1], &rep(0.0, 0.0, 40.0, 0.998));
    w.oob(S[2], &rep(0.0, 0.0, 100.0, JAVA_EPS));
    w.advance(Duration::from_secs(11));
    let got = w.fractions(9_999);
    let third = 1.0 / 3.0;
    assert_fractions(&got, &[(S[0], third), (S[1], third), (S[2], third)], 0.0002);
}

/// pickByWeight_largeWeight (and _useApplicationUtilization,
/// _withEps_defaultErrorUtilizationPenalty): weights 9990, 2.22, 116.3.
/// grpc-java's StaticStrideScheduler floors every weight at 0.1 × mean
/// (K_MIN_RATIO = 0.1), so Java expects 9990 : 337 : 337; gRPC C++
/// (static_stride_scheduler.cc kMinRatio = 0.01) floors at 1 % of the mean,
/// and switchyard follows C++ (scheduler.rs "as gRPC C++ does"): 9990 :
/// 33.7 : 116.3. gRFC A58 does not fix the floor. This pins switchyard's
/// (C++) split; Java's would be 0.9367 : 0.0316 : 0.0316.
#[test]
fn wrr_large_weight_floor_is_one_percent_of_mean_as_cpp_not_java_ten_percent() {
    let mut w = wrr_ready(&S, json!({"enableOobLoadReport": true}));
    w.oob(S[0], &rep(0.1, 0.0, 999.0, 0.0));
    w.oob(S[1], &rep(0.9, 0.0, 2.0, 0.0));
    w.oob(S[2], &rep(0.86, 0.0, 100.0, 0.0));
    w.advance(Duration::from_secs(11));
    let (w0, w1, w2) = (999.0 / 0.1, 2.0 / 0.9, 100.0 / 0.86);
    let mean = (w0 + w1 + w2) / 3.0;
    let floor = mean * 0.01;
    let (w1, w2) = (f64::max(w1, floor), f64::max(w2, floor));
    let total = w0 + w1 + w2;
    let got = w.fractions(20_000);
    assert_fractions(
        &got,
        &[(S[0], w0 / total), (S[1], w1 / total), (S[2], w2 / total)],
        0.001,
    );
}

// ---------------------------------------------------------------------------
// gRFC A114 (customMetric_* tests)
// ---------------------------------------------------------------------------

fn a114(names: &[&str]) -> WrrConfig {
    wrr_parsed(json!({ "blackoutPeriod": "0s", "metricNamesForComputingUtilization": names }))
}

/// customMetric_priority_overAppUtil: with `named_metrics.cost` configured,
/// cost 0.5 and application_utilization 0.8, qps 1 → weight 2.0 (the
/// custom metric takes priority over application_utilization). gRFC A114
/// (GetUtilization pseudocode): 1. the max of the configured metrics, 2.
/// only if none is valid, A58's application_utilization, then cpu.
#[test]
fn wrr_a114_custom_metric_takes_priority_over_application_utilization() {
    let c = a114(&["named_metrics.cost"]);
    let mut load = rep(0.1, 0.8, 1.0, 0.0);
    load.push(("named_metrics.cost", 0.5));
    assert_eq!(
        weight_from_report(&load, &c),
        Some(2.0),
        "utilization should be the custom metric 0.5 (weight 2.0), not application_utilization 0.8 (weight 1.25)"
    );
}

/// The same through the policy: two endpoints report per call with the
/// same qps and app utilization but different custom metrics; A114 weighs
/// them by the custom metric (1 : 4), not by app utilization (1 : 1).
#[test]
fn wrr_a114_custom_metric_drives_the_pick_split() {
    let cfg = json!({
        "blackoutPeriod": "0s",
        "metricNamesForComputingUtilization": ["named_metrics.cost"],
    });
    let mut w = wrr_ready(&S[..2], cfg);
    let l0: Load = vec![
        ("rps_fractional", 10.0),
        ("application_utilization", 0.5),
        ("named_metrics.cost", 0.8),
    ];
    let l1: Load = vec![
        ("rps_fractional", 10.0),
        ("application_utilization", 0.5),
        ("named_metrics.cost", 0.2),
    ];
    let metrics = [(S[0], l0), (S[1], l1)];
    w.picks(10, &metrics);
    w.advance(SEC);
    let got = w
        .picks(5_000, &metrics)
        .into_iter()
        .map(|(a, c)| (a, c as f64 / 5_000.0))
        .collect();
    assert_fractions(&got, &[(S[0], 0.2), (S[1], 0.8)], 0.01);
}

/// customMetric_invalid_fallbackToAppUtil, _mapLookup_used,
/// _shouldFilterOutAndFallbackToCpu, _multipleMetrics_maxUsed,
/// _allInvalid_fallbackToCpu, _mixInvalidAndValid_validUsed.
#[test]
fn wrr_a114_custom_metric_fallbacks_and_max() {
    let with = |named: &[(&'static str, f64)], cpu: f64, app: f64| {
        let mut l = rep(cpu, app, 1.0, 0.0);
        l.extend_from_slice(named);
        l
    };
    // NaN custom, app 0.8 → app: 1.25.
    let c = a114(&["named_metrics.cost"]);
    assert_eq!(
        weight_from_report(&with(&[("named_metrics.cost", f64::NAN)], 0.1, 0.8), &c),
        Some(1.25)
    );
    // Map lookup: cost 0.5, no app, cpu 0.1 → 2.0.
    assert_eq!(
        weight_from_report(&with(&[("named_metrics.cost", 0.5)], 0.1, 0.0), &c),
        Some(2.0)
    );
    // NaN custom, no app → cpu 0.1: 10.0.
    assert_eq!(
        weight_from_report(&with(&[("named_metrics.cost", f64::NAN)], 0.1, 0.0), &c),
        Some(10.0)
    );
    // Max of two: 0.8 → 1.25.
    let c2 = a114(&["named_metrics.cost", "named_metrics.score"]);
    assert_eq!(
        weight_from_report(
            &with(
                &[("named_metrics.cost", 0.5), ("named_metrics.score", 0.8)],
                0.1,
                0.0
            ),
            &c2
        ),
        Some(1.25)
    );
    // All invalid (NaN, 0, -1) → cpu: 10.0.
    let c3 = a114(&[
        "named_metrics.cost",
        "named_metrics.score",
        "named_metrics.other",
    ]);
    assert_eq!(
        weight_from_report(
            &with(
                &[
                    ("named_metrics.cost", f64::NAN),
                    ("named_metrics.score", 0.0),
                    ("named_metrics.other", -1.0)
                ],
                0.1,
                0.0
            ),
            &c3
        ),
        Some(10.0)
    );
    // Mix: NaN, 0.5, 0, -123 → 0.5: 2.0.
    let c4 = a114(&[
        "named_metrics.cost",
        "named_metrics.score",
        "named_metrics.other1",
        "named_metrics.other2",
    ]);
    assert_eq!(
        weight_from_report(
            &with(
                &[
                    ("named_metrics.cost", f64::NAN),
                    ("named_metrics.score", 0.5),
                    ("named_metrics.other1", 0.0),
                    ("named_metrics.other2", -123.0)
                ],
                0.1,
                0.0
            ),
            &c4
        ),
        Some(2.0)
    );
}

// ===========================================================================
// WeightedRoundRobinLoadBalancerTest: timers, blackout, expiration
// ===========================================================================

/// updateWeightTimer: weights 2:1 in use (server 0 first); a config update
/// sets weightUpdatePeriod 0.5 s; new reports invert the weights; 500 ms
/// later the timer (re-armed at the new period) has applied them.
#[test]
fn wrr_java_update_weight_timer_follows_new_period() {
    let base = json!({"enableOobLoadReport": true});
    let mut w = W::new();
    w.update(&S, base.clone());
    w.set(S[0], Ready);
    w.set(S[1], Ready);
    w.set(S[2], Connecting);
    assert_eq!(w.cc.state(), Some(Ready));
    w.oob(S[0], &rep(0.1, 0.0, 1.0, 0.0));
    w.oob(S[1], &rep(0.2, 0.0, 1.0, 0.0));
    w.advance(Duration::from_secs(11));
    assert_fractions(
        &w.fractions(3_000),
        &[(S[0], 2.0 / 3.0), (S[1], 1.0 / 3.0)],
        0.002,
    );
    w.update(
        &S,
        json!({"enableOobLoadReport": true, "weightUpdatePeriod": "0.5s"}),
    );
    // The timer runs at 0.5 s now.
    let timers = w.cc.timers();
    assert_eq!(timers.len(), 1, "one weight timer: {timers:?}");
    w.oob(S[0], &rep(0.2, 0.0, 1.0, 0.0));
    w.oob(S[1], &rep(0.1, 0.0, 1.0, 0.0));
    w.advance(Duration::from_millis(500));
    assert_fractions(
        &w.fractions(3_000),
        &[(S[0], 1.0 / 3.0), (S[1], 2.0 / 3.0)],
        0.002,
    );
}

/// weightExpired with the defaults: reports at t0, weighted 2:1 once the
/// 10 s blackout is over; the default expiration (3 min after the last
/// report) puts it back to round robin (Java forwards 300 s).
#[test]
fn wrr_java_weight_expired_default_three_minutes() {
    let mut w = wrr_ready(&S[..2], json!({"enableOobLoadReport": true}));
    w.oob(S[0], &rep(0.1, 0.0, 1.0, 0.0));
    w.oob(S[1], &rep(0.2, 0.0, 1.0, 0.0));
    w.advance(Duration::from_secs(10));
    assert_fractions(
        &w.fractions(3_000),
        &[(S[0], 2.0 / 3.0), (S[1], 1.0 / 3.0)],
        0.002,
    );
    // 179 s after the reports: still weighted.
    w.advance(Duration::from_secs(169));
    assert_fractions(
        &w.fractions(3_000),
        &[(S[0], 2.0 / 3.0), (S[1], 1.0 / 3.0)],
        0.002,
    );
    // 180 s: expired.
    w.advance(SEC);
    assert_fractions(&w.fractions(3_000), &[(S[0], 0.5), (S[1], 0.5)], 0.002);
}

/// rrFallback: per-call reports (qps 2 vs 1, cpu 0.1) on every pick. With
/// the clock still, no weight leaves the blackout: ~1/2 each. Advancing
/// 50 ms per pick over 1,000 picks (50 s, past the 10 s blackout): ~2/3
/// and ~1/3 (Java's tolerance 0.1).
#[test]
fn wrr_java_rr_fallback_then_weighted_with_per_call_reports() {
    let mut w = wrr_ready(&S[..2], json!({}));
    w.advance(Duration::from_secs(10));
    let metrics = [
        (S[0], rep(0.1, 0.0, 2.0, 0.0)),
        (S[1], rep(0.1, 0.0, 1.0, 0.0)),
    ];
    let c = w.picks(1_000, &metrics);
    assert!((c[S[0]] as f64 / 1000.0 - 0.5).abs() <= 0.1, "{c:?}");
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..1_000 {
        for (a, n) in w.picks(1, &metrics) {
            *total.entry(a).or_default() += n;
        }
        w.advance(Duration::from_millis(50));
    }
    assert_eq!(total.len(), 2);
    let f0 = total[S[0]] as f64 / 1000.0;
    assert!((f0 - 2.0 / 3.0).abs() <= 0.1, "{total:?}");
}

/// unknownWeightIsAvgWeight / testContainsZeroWeightUseMean, by report:
/// the third endpoint reports only zero-utilization (ignored) loads, so it
/// has no weight and gets the mean of the others: 10 : 5 : 7.5 = 4/9 :
/// 2/9 : 3/9.
#[test]
fn wrr_java_endpoint_without_valid_weight_gets_the_mean() {
    let mut w = wrr_ready(&S, json!({"enableOobLoadReport": true}));
    w.oob(S[0], &rep(0.1, 0.0, 1.0, 0.0));
    w.oob(S[1], &rep(0.2, 0.0, 1.0, 0.0));
    w.oob(S[2], &rep(0.0, 0.0, 1.0, 0.0));
    w.advance(Duration::from_secs(10));
    assert_fractions(
        &w.fractions(9_000),
        &[(S[0], 4.0 / 9.0), (S[1], 2.0 / 9.0), (S[2], 3.0 / 9.0)],
        0.002,
    );
}

/// gRFC A58 (OnSubchannelBecomesReady: `non_empty_since_ = infy`, only),
/// grpc-java (`WrrSubchannel` listener: `owner.nonEmptySince = infTime` on
/// READY; `lastUpdated` kept) and gRPC C++ (`EndpointWeight::
/// ResetNonEmptySince`): an endpoint that reconnects keeps its last report
/// time, so with `blackoutPeriod` 0 its weight counts again at once,
/// without a new report. (gRPC-Go clears `lastUpdated` too: the endpoint
/// would weigh the mean until its next report.)
#[test]
fn wrr_reconnected_endpoint_keeps_weight_with_zero_blackout() {
    let mut w = wrr_ready(
        &S[..2],
        json!({"enableOobLoadReport": true, "blackoutPeriod": "0s"}),
    );
    w.oob(S[0], &rep(0.1, 0.0, 1.0, 0.0)); // 10
    w.oob(S[1], &rep(0.4, 0.0, 1.0, 0.0)); // 2.5
    w.advance(SEC);
    assert_fractions(&w.fractions(5_000), &[(S[0], 0.8), (S[1], 0.2)], 0.002);
    // S[1] loses its connection and gets it back; no new report.
    w.set(S[1], Idle);
    w.set(S[1], Connecting);
    w.set(S[1], Ready);
    w.advance(SEC);
    assert_fractions(&w.fractions(5_000), &[(S[0], 0.8), (S[1], 0.2)], 0.002);
}

/// enableOobLoadReportConfig: per-call mode first (picks carry the weight
/// hook, no OOB listener); then a config turning OOB on with period
/// 20.03 s registers a listener with that period on each READY endpoint's
/// subchannel (Java: two OOB calls, each asking for 20.03 s), and
/// per-call reports stop counting.
#[test]
fn wrr_java_enable_oob_config_at_runtime() {
    let mut w = W::new();
    w.update(&S, json!({}));
    w.set(S[0], Ready);
    w.set(S[1], Ready);
    assert!(w.cc.oob_listeners().is_empty());
    match w
        .cc
        .picker()
        .unwrap()
        .pick(&PickInfo::default(), &mut w.local)
    {
        PickResult::Complete { done, .. } => assert_eq!(done.len(), 1, "per-call hook"),
        _ => panic!("pick"),
    }
    w.update(
        &S,
        json!({"enableOobLoadReport": true, "oobReportingPeriod": "20.03s"}),
    );
    let period = Duration::new(20, 30_000_000);
    let mut got = w.cc.oob_listeners();
    got.sort_by_key(|(id, _)| *id);
    let mut want = vec![(sc(&w.cc, S[0]), period), (sc(&w.cc, S[1]), period)];
    want.sort_by_key(|(id, _)| *id);
    assert_eq!(got, want);
    // Per-call reports now ignored: only OOB ones count.
    let metrics = [
        (S[0], rep(0.1, 0.0, 1.0, 0.0)),
        (S[1], rep(0.9, 0.0, 1.0, 0.0)),
    ];
    w.picks(100, &metrics);
    w.advance(Duration::from_secs(11));
    w.picks(100, &metrics);
    assert_fractions(&w.fractions(3_000), &[(S[0], 0.5), (S[1], 0.5)], 0.002);
}

// ---------------------------------------------------------------------------
// State aggregation (wrrLifeCycle, pickChildLbTF, removingAddressShutsdownSubchannel)
// ---------------------------------------------------------------------------

/// pickChildLbTF: a single endpoint failing: TRANSIENT_FAILURE, and a pick
/// fails with the child's error (UNAVAILABLE).
#[test]
fn wrr_java_single_child_tf_fails_picks() {
    let mut w = W::new();
    w.update(&S[..1], json!({}));
    w.set(S[0], TransientFailure);
    assert_eq!(w.cc.state(), Some(TransientFailure));
    match w.cc.pick() {
        Picked::Fail(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        other => panic!("{other:?}"),
    }
}

/// wrrLifeCycle / A58 aggregation: READY, READY, CONNECTING → READY over
/// the two READY ones; the READY ones failing with the third CONNECTING →
/// CONNECTING (queue); an IDLE one among TF ones → CONNECTING and asked to
/// reconnect; all TF → TF; a TF child going CONNECTING again stays TF
/// (sticky); one READY → READY. removingAddressShutsdownSubchannel: the
/// removed endpoint's subchannel is shut down.
#[test]
fn wrr_java_state_aggregation_and_removal() {
    let mut w = W::new();
    w.update(&S, json!({}));
    assert_eq!(w.cc.state(), Some(Connecting));
    assert_eq!(w.cc.pick(), Picked::Queue);
    w.set(S[0], Ready);
    w.set(S[1], Ready);
    w.set(S[2], Connecting);
    assert_eq!(w.cc.state(), Some(Ready));
    let picked: std::collections::BTreeSet<String> = w.fractions(20).into_keys().collect();
    assert_eq!(picked, [S[0], S[1]].iter().map(|s| s.to_string()).collect());
    // The READY ones lose their connections (IDLE: reconnect), then fail.
    for a in [S[0], S[1]] {
        w.set(a, Idle);
        w.set(a, Connecting);
        w.set(a, TransientFailure);
    }
    assert_eq!(w.cc.state(), Some(Connecting), "one CONNECTING");
    assert_eq!(w.cc.pick(), Picked::Queue);
    w.set(S[2], TransientFailure);
    assert_eq!(w.cc.state(), Some(TransientFailure), "all TF");
    assert!(matches!(w.cc.pick(), Picked::Fail(_)));
    // Sticky TF: children retrying (CONNECTING) stay TF.
    w.set(S[0], Connecting);
    w.set(S[1], Idle);
    assert_eq!(w.cc.state(), Some(TransientFailure));
    w.set(S[2], Ready);
    assert_eq!(w.cc.state(), Some(Ready));
    let removed = sc(&w.cc, S[2]);
    w.update(&S[..2], json!({}));
    assert!(
        w.cc.shutdowns().contains(&removed),
        "removed endpoint shut down"
    );
    assert_ne!(w.cc.state(), Some(Ready));
}

/// wrrLifeCycle (IDLE handling in WrrChildLbStateHelper, as in
/// round_robin): a READY endpoint going IDLE is asked to reconnect at once
/// and leaves the picker; with another READY, the policy stays READY.
#[test]
fn wrr_java_idle_child_reconnects_and_leaves_picker() {
    let mut w = wrr_ready(&S[..2], json!({}));
    let before = connects_to(&w.cc, S[1]);
    w.set(S[1], Idle);
    assert_eq!(connects_to(&w.cc, S[1]), before + 1, "reconnect asked");
    assert_eq!(w.cc.state(), Some(Ready));
    let picked: Vec<String> = w.fractions(10).into_keys().collect();
    assert_eq!(picked, vec![S[0].to_string()]);
}

// ---------------------------------------------------------------------------
// The scheduler (StaticStrideScheduler tests): scaled weights
// ---------------------------------------------------------------------------

fn ratios(scaled: &[u16]) -> Vec<f64> {
    let total: f64 = scaled.iter().map(|&w| f64::from(w)).sum();
    scaled.iter().map(|&w| f64::from(w) / total).collect()
}

/// testPicksEqualsWeights, testContainsZeroWeightUseMean,
/// testContainsNegativeWeightUseMean, testAllSameWeights,
/// testAllZeroWeightsIsRoundRobin, testAllInvalidWeightsIsRoundRobin,
/// testTwoWeights, testManyWeights, testMaxClamped.
#[test]
fn wrr_java_scheduler_weight_scaling() {
    let near = |got: Vec<f64>, want: &[f64]| {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
        }
    };
    near(
        ratios(&scale(&[1.0, 2.0, 3.0]).unwrap()),
        &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0],
    );
    // Zero → the mean of the others (2): 3:2:1.
    near(
        ratios(&scale(&[3.0, 0.0, 1.0]).unwrap()),
        &[0.5, 2.0 / 6.0, 1.0 / 6.0],
    );
    // Negative → the mean too.
    near(
        ratios(&scale(&[3.0, -1.0, 1.0]).unwrap()),
        &[0.5, 2.0 / 6.0, 1.0 / 6.0],
    );
    // All same, all zero, all invalid: round robin (None) or equal weights.
    for ws in [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-3.1, -0.0, 0.0]] {
        if let Some(s) = scale(&ws) {
            assert!(s.iter().all(|&x| x == s[0]), "{ws:?} → {s:?}");
        }
    }
    let two = [1.43, 2.119];
    near(
        ratios(&scale(&two).unwrap()),
        &[1.43 / 3.549, 2.119 / 3.549],
    );
    let many = [1.3, 2.5, 3.23, 4.11, 7.001];
    let t: f64 = many.iter().sum();
    near(
        ratios(&scale(&many).unwrap()),
        &many.iter().map(|w| w / t).collect::<Vec<_>>(),
    );
    // Max clamped at 10 × mean (81 among nineteen 1s: mean 5 → 50).
    let mut clamped = vec![81.0];
    clamped.extend(std::iter::repeat_n(1.0, 19));
    let s = scale(&clamped).unwrap();
    let want: Vec<f64> = std::iter::once(50.0 / 69.0)
        .chain(std::iter::repeat_n(1.0 / 69.0, 19))
        .collect();
    near(ratios(&s), &want);
}

/// testMinClamped {100, 1e-10}: grpc-java floors the tiny weight at 0.1 ×
/// mean (5: picks 100 : 5); gRPC C++ and switchyard at 0.01 × mean (0.5).
/// Pins switchyard's (C++) floor; see
/// wrr_large_weight_floor_is_one_percent_of_mean_as_cpp_not_java_ten_percent.
#[test]
fn wrr_min_clamp_is_cpp_one_percent() {
    let s = scale(&[100.0, 1e-10]).unwrap();
    let r = f64::from(s[1]) / f64::from(s[0]);
    assert!((r - 0.005).abs() < 1e-4, "{s:?}: ratio {r}");
}

// ===========================================================================
// WeightedRoundRobinLoadBalancerProviderTest
// ===========================================================================

/// parseLoadBalancingConfig, parseLoadBalancingConfigDefaultValues, and
/// gRFC A58's bounds (weightUpdatePeriod floored at 100 ms; a negative
/// errorUtilizationPenalty rejected: grpc-java accepts it and treats it as
/// 0, C++ and Go reject it).
#[test]
fn wrr_java_provider_parse() {
    let c = wrr_parsed(json!({
        "blackoutPeriod": "20s",
        "weightExpirationPeriod": "300s",
        "oobReportingPeriod": "100s",
        "enableOobLoadReport": true,
        "weightUpdatePeriod": "2s",
        "errorUtilizationPenalty": "1.75",
    }));
    assert_eq!(c.blackout_period, Duration::from_secs(20));
    assert_eq!(c.weight_expiration_period, Duration::from_secs(300));
    assert_eq!(c.oob_reporting_period, Duration::from_secs(100));
    assert!(c.enable_oob_load_report);
    assert_eq!(c.weight_update_period, Duration::from_secs(2));
    assert_eq!(c.error_utilization_penalty, 1.75);

    let d = wrr_parsed(json!({"weightUpdatePeriod": "0.02s"}));
    assert_eq!(d.blackout_period, Duration::from_secs(10));
    assert_eq!(d.weight_expiration_period, Duration::from_secs(180));
    assert!(!d.enable_oob_load_report);
    assert_eq!(d.weight_update_period, Duration::from_millis(100));
    assert_eq!(d.error_utilization_penalty, 1.0);
    assert_eq!(wrr_parsed(json!({})).weight_update_period, SEC);
    assert_eq!(
        wrr_parsed(json!({"weightUpdatePeriod": "0s"})).weight_update_period,
        Duration::from_millis(100)
    );
    assert!(parse(
        "weighted_round_robin",
        json!({"errorUtilizationPenalty": -1.0})
    )
    .is_err());
    assert!(parse("weighted_round_robin", json!({"blackoutPeriod": "-1s"})).is_err());
    assert!(parse("weighted_round_robin", json!({"blackoutPeriod": 10})).is_err());
}

/// parseLoadBalancingConfigCustomMetricsIgnoresInvalid: an unsupported
/// name ("invalid_name") is ignored, the valid ones used. Java drops it at
/// parse time; switchyard keeps it and never matches it: the weights are
/// the same.
#[test]
fn wrr_java_provider_custom_metric_names_ignore_invalid() {
    let c = wrr_parsed(json!({
        "metricNamesForComputingUtilization":
            ["utilization.foo", "invalid_name", "named_metrics.bar"]
    }));
    let load: Load = vec![
        ("rps_fractional", 1.0),
        ("cpu_utilization", 0.1),
        ("invalid_name", 0.9),
        ("utilization.foo", 0.25),
        ("named_metrics.bar", 0.5),
    ];
    assert_eq!(weight_from_report(&load, &c), Some(2.0));
}

// ===========================================================================
// LeastRequestLoadBalancerProviderTest
// ===========================================================================

fn lr_parse(v: Value) -> Result<u32, String> {
    parse("least_request_experimental", v).map(|c| {
        c.unwrap()
            .downcast_ref::<LeastRequestConfig>()
            .unwrap()
            .choice_count
    })
}

/// parseLoadBalancingConfig_valid, _missingChoiceCount_useDefaults,
/// _invalid_negativeSize, _invalid_tooSmallSize, _choiceCountCappedAtMax,
/// _invalidInteger (gRFC A48: < 2 rejected, > 10 capped at 10).
#[test]
fn lr_java_provider_parse() {
    assert_eq!(lr_parse(json!({"choiceCount": 3})), Ok(3));
    assert_eq!(lr_parse(json!({})), Ok(2));
    assert!(lr_parse(json!({"choiceCount": -10})).is_err());
    assert!(lr_parse(json!({"choiceCount": 1})).is_err());
    assert_eq!(lr_parse(json!({"choiceCount": 11})), Ok(10));
    assert!(lr_parse(json!({"choiceCount": "NaN"})).is_err());
}

// ===========================================================================
// LeastRequestLoadBalancerTest
// ===========================================================================

fn lr_update(cc: &mut TestClientConn, lb: &mut dyn Balancer, addrs: &[&str], choice: Option<u32>) {
    let cfg = choice.map(|n| {
        parse("least_request_experimental", json!({ "choiceCount": n }))
            .unwrap()
            .unwrap()
    });
    cc.update(lb, ClientConnState::new(eps(addrs), cfg))
        .unwrap();
    flush(cc, lb);
}

fn held(cc: &mut TestClientConn) -> String {
    match cc.pick() {
        Picked::Complete { subconn, .. } => addr_of(cc, subconn),
        other => panic!("{other:?}"),
    }
}

/// pickAfterResolved / pickAfterStateChange: CONNECTING (queue) until one
/// READY; every endpoint asked to connect once; READY with one; that one
/// failing while the others are still CONNECTING → CONNECTING (queue);
/// then IDLE: the child stays TF (sticky), re-resolution is asked, and the
/// policy does not report READY.
#[test]
fn lr_java_pick_after_state_change() {
    let mut cc = TestClientConn::new();
    let mut lb = build("least_request_experimental");
    lr_update(&mut cc, &mut *lb, &S, None);
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(cc.pick(), Picked::Queue);
    for a in S {
        assert_eq!(connects_to(&cc, a), 1, "{a} connect asked once");
    }
    set(&mut cc, &mut *lb, S[0], Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert_eq!(held(&mut cc), S[0]);
    let resolves = cc.resolve_now_requests();
    set(&mut cc, &mut *lb, S[0], TransientFailure);
    assert!(
        cc.resolve_now_requests() > resolves,
        "re-resolution on failure"
    );
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(cc.pick(), Picked::Queue);
    set(&mut cc, &mut *lb, S[0], Idle);
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(cc.shutdowns().len(), 0);
}

/// stayTransientFailureUntilReady: every endpoint TF then CONNECTING:
/// TRANSIENT_FAILURE, the picks failing with the children's error; one
/// READY → READY.
#[test]
fn lr_java_stay_transient_failure_until_ready() {
    let mut cc = TestClientConn::new();
    let mut lb = build("least_request_experimental");
    lr_update(&mut cc, &mut *lb, &S, None);
    let resolves = cc.resolve_now_requests();
    for a in S {
        set(&mut cc, &mut *lb, a, TransientFailure);
        set(&mut cc, &mut *lb, a, Connecting);
    }
    assert!(cc.resolve_now_requests() >= resolves + 3);
    assert_eq!(cc.state(), Some(TransientFailure));
    match cc.pick() {
        Picked::Fail(s) => {
            assert_eq!(s.code(), Code::Unavailable);
            assert!(s.message().contains("connection refused (test)"), "{s:?}");
        }
        other => panic!("{other:?}"),
    }
    set(&mut cc, &mut *lb, S[0], Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert_eq!(held(&mut cc), S[0]);
}

/// refreshNameResolutionWhenSubchannelConnectionBroken: each endpoint in
/// turn: CONNECTING, TF (re-resolution), READY (READY), IDLE (a GOAWAY:
/// re-resolution, a second connect asked, CONNECTING).
#[test]
fn lr_java_refresh_name_resolution_when_connection_broken() {
    let mut cc = TestClientConn::new();
    let mut lb = build("least_request_experimental");
    lr_update(&mut cc, &mut *lb, &S, None);
    for a in S {
        assert_eq!(connects_to(&cc, a), 1);
        set(&mut cc, &mut *lb, a, Connecting);
        let r = cc.resolve_now_requests();
        set(&mut cc, &mut *lb, a, TransientFailure);
        assert!(cc.resolve_now_requests() > r, "{a}: re-resolution on TF");
        set(&mut cc, &mut *lb, a, Ready);
        assert_eq!(cc.state(), Some(Ready));
        let r = cc.resolve_now_requests();
        set(&mut cc, &mut *lb, a, Idle);
        assert!(cc.resolve_now_requests() > r, "{a}: re-resolution on IDLE");
        assert_eq!(connects_to(&cc, a), 2, "{a}: reconnect asked");
        assert_eq!(cc.state(), Some(Connecting));
        assert_eq!(cc.pick(), Picked::Queue);
    }
}

/// subchannelStateIsolation: all READY; one goes IDLE (dropped from the
/// picker, reconnect asked at once), another TF (dropped, no new connect
/// from the policy); still READY over the remaining one.
#[test]
fn lr_java_subchannel_state_isolation() {
    let mut cc = TestClientConn::new();
    let mut lb = build("least_request_experimental");
    lr_update(&mut cc, &mut *lb, &S, Some(10));
    for a in S {
        set(&mut cc, &mut *lb, a, Ready);
    }
    set(&mut cc, &mut *lb, S[1], Idle);
    assert_eq!(connects_to(&cc, S[1]), 2);
    set(&mut cc, &mut *lb, S[2], TransientFailure);
    assert_eq!(connects_to(&cc, S[2]), 1);
    assert_eq!(cc.state(), Some(Ready));
    for _ in 0..20 {
        match cc.pick_done(&DoneInfo::default()) {
            Picked::Complete { subconn, .. } => assert_eq!(addr_of(&cc, subconn), S[0]),
            other => panic!("{other:?}"),
        }
    }
}

/// pickerLeastRequest's counter bookkeeping (a started stream counts, a
/// closed one no longer), across the things that replace the picker:
/// an endpoint going READY → IDLE → READY (Java keeps the counter in the
/// endpoint's ChildLbState) and a choiceCount change (pickAfterConfigChange).
/// Five streams held on S[0]; S[0] cycles through IDLE; the config changes;
/// the next five streams all avoid S[0] (choiceCount 10 over two: each
/// draw set misses S[1] with p = 2^-10).
#[test]
fn lr_java_in_flight_counts_survive_idle_cycle_and_config_change() {
    let mut cc = TestClientConn::new();
    let mut lb = build("least_request_experimental");
    lr_update(&mut cc, &mut *lb, &S[..1], Some(10));
    set(&mut cc, &mut *lb, S[0], Ready);
    for _ in 0..5 {
        assert_eq!(held(&mut cc), S[0]);
    }
    lr_update(&mut cc, &mut *lb, &S[..2], Some(10));
    set(&mut cc, &mut *lb, S[0], Idle);
    set(&mut cc, &mut *lb, S[0], Connecting);
    set(&mut cc, &mut *lb, S[0], Ready);
    lr_update(&mut cc, &mut *lb, &S[..2], Some(9));
    set(&mut cc, &mut *lb, S[1], Ready);
    let mut to_b = 0;
    for _ in 0..5 {
        if held(&mut cc) == S[1] {
            to_b += 1;
        }
    }
    assert!(
        to_b >= 4,
        "{to_b} of 5 held streams went to the unloaded endpoint"
    );
}

/// pickerLeastRequest's last step: a finished RPC decrements the counter,
/// even when its pick came from a picker since replaced. Ten streams held
/// on S[0] from the first picker; S[1] joins (new picker); those ten end;
/// now S[0] and S[1] are even (0 : 0), so ten new held streams split
/// about evenly rather than all going to S[1].
#[test]
fn lr_java_done_from_an_old_picker_decrements_the_shared_counter() {
    let mut cc = TestClientConn::new();
    let mut lb = build("least_request_experimental");
    lr_update(&mut cc, &mut *lb, &S[..2], Some(10));
    set(&mut cc, &mut *lb, S[0], Ready);
    let old = cc.picker().unwrap().clone();
    let mut local = PickLocal::new(5);
    let mut picks = Vec::new();
    for _ in 0..10 {
        match old.pick(&PickInfo::default(), &mut local) {
            PickResult::Complete { subconn, done } => {
                assert_eq!(subconn.addr().to_string(), S[0]);
                picks.push(done);
            }
            _ => panic!("pick"),
        }
        // Keep the `done` hooks: picks in flight.
    }
    set(&mut cc, &mut *lb, S[1], Ready);
    assert!(
        !std::sync::Arc::ptr_eq(&old, cc.picker().unwrap()),
        "a new picker"
    );
    // The ten end.
    let s0 = cc.subconn_for(S[0]).unwrap().clone();
    for done in picks.drain(..) {
        done.report(&s0, &DoneInfo::default());
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        *seen.entry(held(&mut cc)).or_default() += 1;
    }
    assert_eq!(
        (seen.get(S[0]), seen.get(S[1])),
        (Some(&5), Some(&5)),
        "{seen:?}"
    );
}

/// emptyAddresses: an empty list is refused (and the policy is TF).
#[test]
fn lr_java_empty_addresses_is_an_error() {
    let mut cc = TestClientConn::new();
    let mut lb = build("least_request_experimental");
    assert!(cc
        .update(&mut *lb, ClientConnState::new(vec![], None))
        .is_err());
    assert_eq!(cc.state(), Some(TransientFailure));
}
