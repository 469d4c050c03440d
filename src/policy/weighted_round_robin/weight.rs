//! An endpoint's weight: computed from each load report by the pick's done
//! hook, on whichever thread ends the RPC, and read by the policy on the
//! loop when it rebuilds the schedule.

use super::config::WrrConfig;
use crate::balancer::picker::{DoneHook, DoneInfo};
use crate::balancer::subconn::SubConn;
use crate::balancer::LoadReportListener;
use crate::clock::Clock;
use crate::sync::{lock, Mutex};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The weight from one load report (gRFC A58, A114), or `None` when the
/// report does not count (no utilization or no qps: gRPC ignores it).
///
/// utilization (A114's `GetUtilization`): the largest valid (> 0, finite)
/// of the configured metrics, else `application_utilization` if > 0, else
/// `cpu_utilization`; qps: `rps_fractional` (or `qps`, the name done-hook
/// users may give it); eps: `eps`. Weight = qps / (utilization + eps / qps
/// × penalty).
pub fn weight_from_report(load: &[(&str, f64)], config: &WrrConfig) -> Option<f64> {
    let (mut qps, mut eps, mut app, mut cpu, mut custom) = (0.0, 0.0, 0.0, 0.0, 0.0f64);
    for &(name, value) in load {
        match name {
            "rps_fractional" | "qps" => qps = value,
            "eps" => eps = value,
            "application_utilization" => app = value,
            "cpu_utilization" => cpu = value,
            _ => {}
        }
        if value > 0.0
            && value.is_finite()
            && is_utilization_metric(name)
            && config
                .metric_names_for_computing_utilization
                .iter()
                .any(|m| m == name)
        {
            custom = custom.max(value);
        }
    }
    let utilization = if custom > 0.0 {
        custom
    } else if app > 0.0 {
        app
    } else {
        cpu
    };
    // NaN compares false: refused too.
    let positive = |x: f64| x > 0.0;
    if !positive(utilization) || !positive(qps) {
        return None;
    }
    let eps = if eps.is_finite() && eps > 0.0 {
        eps
    } else {
        0.0
    };
    let w = qps / (utilization + eps / qps * config.error_utilization_penalty);
    (w.is_finite() && w > 0.0).then_some(w)
}

/// Whether `name` may name a utilization in
/// `metricNamesForComputingUtilization` (gRFC A114; gRPC Java's
/// `MetricReportUtils`): the report's three utilization fields and the
/// entries of its `utilization` and `named_metrics` maps. Any other name
/// (qps, eps, request costs) finds nothing.
fn is_utilization_metric(name: &str) -> bool {
    matches!(
        name,
        "application_utilization" | "cpu_utilization" | "mem_utilization"
    ) || name.starts_with("utilization.")
        || name.starts_with("named_metrics.")
}

/// What the done hooks of one endpoint's picks write: the latest weight,
/// when it came and since when reports have been coming (gRPC's
/// `lastUpdated` and `nonEmptySince`, stamped on arrival with the loop's
/// clock, as gRPC-Go's `OnLoadReport` does). Shared by every picker that
/// lists the endpoint, so reports outlive picker updates.
///
/// Behind a per-endpoint lock, as in gRPC-Go and gRPC C++: reports (any
/// thread) and the loop's resets (`connected_anew`, and `effective` when the
/// weight went stale) each read and write the three together, the report's
/// time taken inside, so a report comes wholly before or wholly after a
/// reset. Only a done that carries load metrics takes it; picks, and dones
/// without load, never do. `loom-tests/tests/wrr_weight.rs` checks the
/// interleavings.
pub struct EndpointWeight {
    times: Mutex<Times>,
    /// The policy's config (the penalty and metric names), shared by every
    /// endpoint and swapped on config updates.
    config: Arc<ArcSwap<WrrConfig>>,
    clock: Arc<dyn Clock>,
}

/// An endpoint's weight and gRPC's two times.
#[derive(Default)]
struct Times {
    /// The latest report's weight.
    weight: f64,
    /// When the latest report came (`None`: none since the reset).
    last_updated: Option<Instant>,
    /// When the first report since the reset came (`None`: none).
    non_empty_since: Option<Instant>,
}

impl EndpointWeight {
    /// No report yet; reports are stamped with `clock` (the loop's).
    pub fn new(config: Arc<ArcSwap<WrrConfig>>, clock: Arc<dyn Clock>) -> EndpointWeight {
        EndpointWeight {
            times: Mutex::new(Times::default()),
            config,
            clock,
        }
    }

    /// Takes one per-call load report (what the done hook does).
    pub fn report(&self, load: &[(&str, f64)]) {
        self.take(load, false);
    }

    /// Takes one out-of-band load report (what the ORCA stream's listener
    /// does): the same weight computation as a per-call one.
    pub fn report_oob(&self, load: &[(&str, f64)]) {
        self.take(load, true);
    }

    fn take(&self, load: &[(&str, f64)], oob: bool) {
        if load.is_empty() {
            return;
        }
        let config = self.config.load();
        // Reports come one way at a time (gRFC A58): with OOB reporting on,
        // per-call reports are ignored; with it off, a late OOB report is.
        if config.enable_oob_load_report != oob {
            return;
        }
        if let Some(w) = weight_from_report(load, &config) {
            let mut t = lock(&self.times);
            // Timed under the lock, as gRPC-Go does: a reset is wholly
            // before this report or wholly after it.
            let now = self.clock.now();
            t.weight = w;
            t.last_updated = Some(now);
            // The first report since the reset starts the blackout.
            t.non_empty_since.get_or_insert(now);
        }
    }

    /// The endpoint connected (again): its blackout starts over with the
    /// next report (gRFC A58's `OnSubchannelBecomesReady`, as gRPC Java and
    /// C++ do). The last weight and its time are kept, so with no blackout
    /// it counts again at once, until it expires (gRPC-Go forgets
    /// `lastUpdated` too).
    pub fn connected_anew(&self) {
        lock(&self.times).non_empty_since = None;
    }

    /// The weight that counts at `now` (0: none yet, in blackout, or
    /// expired; gRPC-Go's `endpointWeight.weight`). The loop asks, at each
    /// schedule rebuild.
    pub fn effective(&self, now: Instant, config: &WrrConfig) -> f64 {
        let mut t = lock(&self.times);
        let Some(last) = t.last_updated else {
            return 0.0;
        };
        if now.saturating_duration_since(last) >= config.weight_expiration_period {
            // Stale: blackout applies again once reports come back.
            t.non_empty_since = None;
            return 0.0;
        }
        let blackout = config.blackout_period;
        if blackout > Duration::ZERO {
            match t.non_empty_since {
                Some(since) if now.saturating_duration_since(since) >= blackout => {}
                _ => return 0.0,
            }
        }
        t.weight
    }
}

impl DoneHook for EndpointWeight {
    fn done(&self, _subconn: &SubConn, info: &DoneInfo<'_>) {
        self.report(info.load);
    }
}

impl LoadReportListener for EndpointWeight {
    fn on_load_report(&self, load: &[(&str, f64)]) {
        self.report_oob(load);
    }
}
