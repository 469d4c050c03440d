//! An endpoint's weight: computed from each load report by the pick's done
//! hook, on whichever thread ends the RPC, and read by the policy on the
//! loop when it rebuilds the schedule.

use super::config::WrrConfig;
use crate::balancer::picker::{DoneHook, DoneInfo};
use crate::balancer::subconn::SubConn;
use crate::balancer::LoadReportListener;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The weight from one load report (gRFC A58, A114), or `None` when the
/// report does not count (no utilization or no qps: gRPC ignores it).
///
/// utilization: the largest valid (> 0, not NaN) of the configured metrics,
/// else `application_utilization` if > 0, else `cpu_utilization`; qps:
/// `rps_fractional` (or `qps`, the name done-hook users may give it); eps:
/// `eps`. Weight = qps / (utilization + eps / qps × penalty).
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

/// What the done hooks of one endpoint's picks write: the latest weight and
/// how many reports made one. Shared by every picker that lists the
/// endpoint, so reports outlive picker updates.
pub struct EndpointWeight {
    /// The latest weight, as `f64` bits.
    weight: AtomicU64,
    /// Accepted reports so far: the loop notices new ones by the count.
    reports: AtomicU64,
    /// The policy's config (the penalty and metric names), shared by every
    /// endpoint and swapped on config updates.
    config: Arc<ArcSwap<WrrConfig>>,
}

impl EndpointWeight {
    /// No report yet.
    pub fn new(config: Arc<ArcSwap<WrrConfig>>) -> EndpointWeight {
        EndpointWeight {
            weight: AtomicU64::new(0),
            reports: AtomicU64::new(0),
            config,
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
            self.weight.store(w.to_bits(), Ordering::Relaxed);
            // Release: whoever sees the count sees the weight.
            self.reports.fetch_add(1, Ordering::Release);
        }
    }

    /// (accepted reports so far, latest weight).
    pub fn latest(&self) -> (u64, f64) {
        let n = self.reports.load(Ordering::Acquire);
        (n, f64::from_bits(self.weight.load(Ordering::Relaxed)))
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

/// The loop's view of one endpoint's weight: when it was last updated and
/// since when it has been reporting (gRPC's `lastUpdated` and
/// `nonEmptySince`). Reports are stamped with the loop's clock when the
/// loop first sees them (at the next schedule rebuild), so the policy runs
/// on its `ClientConn`'s clock alone.
pub struct WeightTracker {
    pub hook: Arc<EndpointWeight>,
    seen: u64,
    last_updated: Option<Instant>,
    non_empty_since: Option<Instant>,
}

impl WeightTracker {
    pub fn new(hook: Arc<EndpointWeight>) -> WeightTracker {
        WeightTracker {
            hook,
            seen: 0,
            last_updated: None,
            non_empty_since: None,
        }
    }

    /// The endpoint (re)entered READY: its weight counts again only after
    /// new reports and a new blackout. Reports that came before (not yet
    /// seen by a rebuild) are old news: they do not count as new ones.
    pub fn ready_again(&mut self) {
        self.seen = self.hook.latest().0;
        self.last_updated = None;
        self.non_empty_since = None;
    }

    /// The weight that counts at `now` (0: none yet, in blackout, or
    /// expired), after taking the reports that arrived since last time.
    pub fn effective(&mut self, now: Instant, config: &WrrConfig) -> f64 {
        let (reports, weight) = self.hook.latest();
        if reports != self.seen {
            self.seen = reports;
            self.last_updated = Some(now);
            self.non_empty_since.get_or_insert(now);
        }
        let Some(last) = self.last_updated else {
            return 0.0;
        };
        if now.saturating_duration_since(last) >= config.weight_expiration_period {
            // Stale: blackout applies again once reports come back.
            self.non_empty_since = None;
            return 0.0;
        }
        let blackout = config.blackout_period;
        if blackout > Duration::ZERO {
            match self.non_empty_since {
                Some(since) if now.saturating_duration_since(since) >= blackout => {}
                _ => return 0.0,
            }
        }
        weight
    }
}
