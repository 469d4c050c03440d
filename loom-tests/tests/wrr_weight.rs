//! weighted_round_robin's endpoint weights: load reports (done hooks, on any
//! RPC thread) against the loop's resets (`ready_again` when the endpoint
//! comes back READY, and `effective` forgetting the blackout start of a
//! weight gone stale). Whatever the interleaving, a report's time never
//! stands without a blackout start: a weight that counts with no blackout
//! counts once a blackout has passed (else it would sit at 0, its blackout
//! over, until the next report came).
#![cfg(loom)]

use arc_swap::ArcSwap;
use loom::thread;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::policy::weighted_round_robin::{EndpointWeight, WrrConfig};
use switchyard::{Clock, ManualClock};

/// qps 4 at utilization 0.5: weight 8.
const LOAD: &[(&str, f64)] = &[("rps_fractional", 4.0), ("application_utilization", 0.5)];
const WEIGHT: f64 = 8.0;
const BLACKOUT: Duration = Duration::from_secs(10);
const EXPIRATION: Duration = Duration::from_secs(180);

fn config(blackout: Duration) -> WrrConfig {
    WrrConfig {
        blackout_period: blackout,
        weight_expiration_period: EXPIRATION,
        ..WrrConfig::default()
    }
}

struct World {
    clock: Arc<ManualClock>,
    weight: Arc<EndpointWeight>,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::new());
    let shared = Arc::new(ArcSwap::from_pointee(config(BLACKOUT)));
    let weight = Arc::new(EndpointWeight::new(shared, clock.clone()));
    World { clock, weight }
}

/// At `now` (no report later than it): if the weight counts without a
/// blackout, it counts once the blackout has passed since `now`, and is the
/// reported one.
fn check(weight: &EndpointWeight, now: Instant) {
    let bare = weight.effective(now, &config(Duration::ZERO));
    if bare > 0.0 {
        assert_eq!(bare, WEIGHT);
        let later = weight.effective(now + BLACKOUT, &config(BLACKOUT));
        assert_eq!(
            later, WEIGHT,
            "a report's time stands without a blackout start"
        );
    } else {
        assert_eq!(bare, 0.0);
    }
}

/// The endpoint comes back READY while a report is being taken; an earlier
/// report had started the blackout, so the racing one may see that start.
#[test]
fn ready_again_racing_a_report() {
    loom::model(|| {
        let World { clock, weight } = world();
        weight.report(LOAD);
        let w = weight.clone();
        let rpc = thread::spawn(move || w.report(LOAD));
        weight.ready_again();
        rpc.join().unwrap();
        check(&weight, clock.now());
    });
}

/// The loop finds the weight stale and forgets its blackout start while a
/// fresh report is being taken.
#[test]
fn staleness_racing_a_report() {
    loom::model(|| {
        let World { clock, weight } = world();
        weight.report(LOAD);
        clock.advance(EXPIRATION + Duration::from_secs(1));
        let now = clock.now();
        let w = weight.clone();
        let rpc = thread::spawn(move || w.report(LOAD));
        // Stale (0), or fresh and past the first report's blackout.
        let seen = weight.effective(now, &config(BLACKOUT));
        assert!(seen == 0.0 || seen == WEIGHT, "{seen}");
        rpc.join().unwrap();
        check(&weight, now);
    });
}

/// Two reports at once after a reset: the first to look starts the
/// blackout, and the weight counts after it.
#[test]
fn two_reports_after_a_reset() {
    loom::model(|| {
        let World { clock, weight } = world();
        weight.report(LOAD);
        weight.ready_again();
        let w = weight.clone();
        let rpc = thread::spawn(move || w.report(LOAD));
        weight.report(LOAD);
        rpc.join().unwrap();
        let now = clock.now();
        assert_eq!(weight.effective(now, &config(Duration::ZERO)), WEIGHT);
        check(&weight, now);
    });
}
