//! An endpoint's weight: computed from each load report by the pick's done
//! hook, on whichever thread ends the RPC, and read by the policy on the
//! loop when it rebuilds the schedule.

use super::config::WrrConfig;
use crate::balancer::picker::{DoneHook, DoneInfo};
use crate::balancer::subconn::SubConn;
use crate::balancer::LoadReportListener;
use crate::clock::Clock;
use crate::sync::{AtomicU64, Ordering};
use arc_swap::ArcSwap;
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

/// What the done hooks of one endpoint's picks write: the latest weight,
/// when it came and since when reports have been coming (gRPC's
/// `lastUpdated` and `nonEmptySince`, stamped on arrival with the loop's
/// clock, as gRPC-Go's `OnLoadReport` does). Shared by every picker that
/// lists the endpoint, so reports outlive picker updates.
///
/// gRPC-Go guards the three with a mutex; here reports (any thread) and the
/// loop's resets (`ready_again`, and `effective` when the weight went
/// stale) share them without a lock. The rule that needs care: a report's
/// time never stands without a blackout start (else the weight would sit
/// at 0, its blackout long over, until the next report). Every write to
/// the two times is a read-modify-write (acquire-release), and each side
/// writes its own field first, then the other's: of a report and a reset
/// that race, the one that comes second reads what the first wrote and
/// leaves the pair consistent. `loom-tests/tests/wrr_weight.rs` checks
/// every interleaving.
pub struct EndpointWeight {
    /// The latest weight, as `f64` bits.
    weight: AtomicU64,
    /// When the latest report came (`stamp`; 0: none since the reset).
    last_updated: AtomicU64,
    /// When the first report since the reset came (`stamp`; `NO_START`:
    /// none). A report takes the minimum with its own time, so the earliest
    /// stays.
    non_empty_since: AtomicU64,
    /// When the endpoint last came back READY (`stamp`; 0: never). A
    /// report stamped before it but written after it (its thread was held
    /// up in between) moves its times up to it, as if it came then.
    reset_at: AtomicU64,
    /// The policy's config (the penalty and metric names), shared by every
    /// endpoint and swapped on config updates.
    config: Arc<ArcSwap<WrrConfig>>,
    clock: Arc<dyn Clock>,
    /// Stamps count nanoseconds from here, plus one (0 means none).
    epoch: Instant,
}

/// `non_empty_since` with no report since the reset (above every stamp).
const NO_START: u64 = u64::MAX;

impl EndpointWeight {
    /// No report yet; reports are stamped with `clock` (the loop's).
    pub fn new(config: Arc<ArcSwap<WrrConfig>>, clock: Arc<dyn Clock>) -> EndpointWeight {
        let epoch = clock.now();
        EndpointWeight {
            weight: AtomicU64::new(0),
            last_updated: AtomicU64::new(0),
            non_empty_since: AtomicU64::new(NO_START),
            reset_at: AtomicU64::new(0),
            config,
            clock,
            epoch,
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
            let now = self.stamp(self.clock.now());
            self.weight.store(w.to_bits(), Ordering::Relaxed);
            // Release: whoever sees the time sees the weight. The latest of
            // racing reports' times stays.
            self.last_updated.fetch_max(now, Ordering::AcqRel);
            // Then the blackout start, if none since the reset: a reset
            // that cleared it before this reads the time above.
            self.non_empty_since.fetch_min(now, Ordering::AcqRel);
            // A reset that cleared them before the writes above is seen here
            // (they read its clearing, which its time precedes): if it came
            // after this report's time was taken, the report counts as
            // coming at the reset, not before it (gRPC-Go takes the time
            // under the lock the reset takes).
            let reset = self.reset_at.load(Ordering::Acquire);
            if reset > now {
                for time in [&self.non_empty_since, &self.last_updated] {
                    let _ = time.compare_exchange(now, reset, Ordering::AcqRel, Ordering::Relaxed);
                }
            }
        }
    }

    /// `at` as a stamp: 1 ..= `NO_START` − 1.
    fn stamp(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).min(NO_START - 2) + 1
    }

    /// A stamp's instant (`None` for 0 and `NO_START`).
    fn instant(&self, stamp: u64) -> Option<Instant> {
        if stamp == NO_START {
            return None;
        }
        let nanos = stamp.checked_sub(1)?;
        self.epoch.checked_add(Duration::from_nanos(nanos))
    }

    /// The endpoint (re)entered READY: reports before now no longer count,
    /// and its weight counts again only after new reports and a new
    /// blackout (gRPC-Go forgets both times then).
    pub fn ready_again(&self) {
        let now = self.stamp(self.clock.now());
        // Before the clearing, which publishes it (release).
        self.reset_at.fetch_max(now, Ordering::Relaxed);
        // The start first: a report that had not seen this clear reads it
        // after its time is out, and so its time is cleared next.
        self.non_empty_since.swap(NO_START, Ordering::AcqRel);
        self.last_updated.swap(0, Ordering::AcqRel);
    }

    /// The weight that counts at `now` (0: none yet, in blackout, or
    /// expired; gRPC-Go's `endpointWeight.weight`). The loop asks, at each
    /// schedule rebuild.
    pub fn effective(&self, now: Instant, config: &WrrConfig) -> f64 {
        // Acquire: the time's weight (or a later one) comes with it.
        let Some(last) = self.instant(self.last_updated.load(Ordering::Acquire)) else {
            return 0.0;
        };
        let since = self.instant(self.non_empty_since.load(Ordering::Acquire));
        let weight = f64::from_bits(self.weight.load(Ordering::Relaxed));
        let expiration = config.weight_expiration_period;
        if now.saturating_duration_since(last) >= expiration {
            // Stale: blackout applies again once reports come back.
            self.non_empty_since.swap(NO_START, Ordering::AcqRel);
            // A report that came meanwhile, and whose start the clear above
            // overwrote, has its time out (read as part of a write, so the
            // latest): its blackout starts there.
            let fresh = self.last_updated.fetch_max(0, Ordering::AcqRel);
            if self
                .instant(fresh)
                .is_some_and(|t| now.saturating_duration_since(t) < expiration)
            {
                self.non_empty_since.fetch_min(fresh, Ordering::AcqRel);
            }
            return 0.0;
        }
        let blackout = config.blackout_period;
        if blackout > Duration::ZERO {
            match since {
                Some(since) if now.saturating_duration_since(since) >= blackout => {}
                _ => return 0.0,
            }
        }
        weight
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
