//! weighted_round_robin's endpoint weights: load reports (done hooks, on any
//! RPC thread) against the loop's resets (`connected_anew` when the
//! endpoint connects again, and `effective` forgetting the blackout start of a
//! weight gone stale), each side under the endpoint's lock. Whatever the
//! interleaving, the outcome is one a serial order gives: no blackout is
//! cut short, a blackout start that a reset took is started afresh by the
//! next report (the weight itself stays, gRFC A58), and a report timed
//! before a reset counts from the reset.
#![cfg(loom)]

use arc_swap::ArcSwap;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::policy::weighted_round_robin::{EndpointWeight, WrrConfig};
use switchyard::Clock;

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

/// A clock moved by hand whose reads and moves loom sees (and so orders
/// against the weight's own accesses, in every way they can interleave).
struct LoomClock {
    base: Instant,
    nanos: AtomicU64,
}

impl LoomClock {
    fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for LoomClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

struct World {
    clock: Arc<LoomClock>,
    weight: Arc<EndpointWeight>,
}

fn world() -> World {
    let clock = Arc::new(LoomClock {
        base: Instant::now(),
        nanos: AtomicU64::new(0),
    });
    let shared = Arc::new(ArcSwap::from_pointee(config(BLACKOUT)));
    let weight = Arc::new(EndpointWeight::new(shared, clock.clone()));
    World { clock, weight }
}

/// After a reset racing reports younger than a blackout: none counts yet
/// with one (the reset's blackout is not cut short).
fn no_blackout_cut_short(weight: &EndpointWeight, clock: &LoomClock) {
    assert_eq!(
        weight.effective(clock.now(), &config(BLACKOUT)),
        0.0,
        "a blackout was cut short"
    );
}

/// Whatever the interleaving came to, it is one the serial orders give:
/// with no blackout the weight counts or not; a blackout start that stands
/// lets the weight count once a blackout has passed, and one that a reset
/// took (gRFC A58: a reconnect resets only the blackout start, the weight
/// stays) is started afresh by the next report.
fn check(weight: &EndpointWeight, clock: &LoomClock) {
    let now = clock.now();
    let bare = weight.effective(now, &config(Duration::ZERO));
    assert!(bare == 0.0 || bare == WEIGHT, "{bare}");
    let later = weight.effective(now + BLACKOUT, &config(BLACKOUT));
    if later > 0.0 {
        assert_eq!(later, WEIGHT);
    } else {
        clock.advance(Duration::from_secs(1));
        weight.report(LOAD);
        let next = clock.now();
        let early = next + BLACKOUT - Duration::from_secs(1);
        assert_eq!(
            weight.effective(early, &config(BLACKOUT)),
            0.0,
            "a forgotten report's blackout start survived"
        );
        assert_eq!(weight.effective(next + BLACKOUT, &config(BLACKOUT)), WEIGHT);
    }
}

/// The endpoint comes back READY while a report is being taken; an earlier
/// report had started the blackout, so the racing one may see that start.
#[test]
fn connected_anew_racing_a_report() {
    loom::model(|| {
        let World { clock, weight } = world();
        weight.report(LOAD);
        let w = weight.clone();
        let rpc = thread::spawn(move || w.report(LOAD));
        weight.connected_anew();
        rpc.join().unwrap();
        no_blackout_cut_short(&weight, &clock);
        check(&weight, &clock);
    });
}

/// A report whose thread took its time, then was held up while the
/// endpoint came back READY: written after the reset, it must not count
/// from before it (the blackout would be cut short).
#[test]
fn a_report_timed_before_a_reset_counts_from_the_reset() {
    loom::model(|| {
        let World { clock, weight } = world();
        let w = weight.clone();
        let rpc = thread::spawn(move || w.report(LOAD));
        // The loop, some time later.
        clock.advance(Duration::from_secs(5));
        let reset = clock.now();
        weight.connected_anew();
        rpc.join().unwrap();
        no_blackout_cut_short(&weight, &clock);
        check(&weight, &clock);
        // Its blackout runs from the reset, whenever the report was timed.
        let early = reset + BLACKOUT - Duration::from_secs(1);
        assert_eq!(weight.effective(early, &config(BLACKOUT)), 0.0);
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
        check(&weight, &clock);
    });
}

/// Two reports at once after a reset: the first to look starts the
/// blackout, and the weight counts after it.
#[test]
fn two_reports_after_a_reset() {
    loom::model(|| {
        let World { clock, weight } = world();
        weight.report(LOAD);
        weight.connected_anew();
        let w = weight.clone();
        let rpc = thread::spawn(move || w.report(LOAD));
        weight.report(LOAD);
        rpc.join().unwrap();
        assert_eq!(
            weight.effective(clock.now(), &config(Duration::ZERO)),
            WEIGHT
        );
        check(&weight, &clock);
    });
}
