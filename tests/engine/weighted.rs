//! weighted_round_robin through a `Reader`, which runs the policy's stride
//! schedule inline: load reported through every kind of pick's done (owned,
//! borrowed, kept) reaches the weights, and every kind of pick follows them.

use crate::support::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;

const WRR: &str = r#"{"loadBalancingConfig":[{"weighted_round_robin":
    {"blackoutPeriod":"0s","weightUpdatePeriod":"0.1s"}}]}"#;

/// The load a backend reports: the same qps, `utilization` apart (weight =
/// qps / utilization).
fn load(addr: &str) -> [(&'static str, f64); 2] {
    let utilization = if addr == "a:1" { 0.1 } else { 0.3 };
    [("qps", 100.0), ("cpu_utilization", utilization)]
}

/// A weighted_round_robin channel over a:1 and b:1, both READY.
fn ready(host: &std::sync::Arc<Host>, rt: &Runtime) -> Channel {
    let ch = Channel::new(rt, "", Some(WRR), options(host)).unwrap();
    ch.update_addresses(addrs(&["a:1", "b:1"])).unwrap();
    // Each endpoint's pick_first connects once the policy has its children.
    host.wait("both connecting", |evs| {
        evs.iter().filter(|e| matches!(e, Ev::Connect(_))).count() == 2
    });
    report(&ch, host, &["a:1", "b:1"], Ready);
    // The policy rebuilds its picker in a `work` it queued behind the reports.
    ch.sync().unwrap();
    assert_eq!(ch.state(), Ready);
    ch
}

/// a:1's share of `seen`.
fn share(seen: &HashMap<String, usize>) -> f64 {
    let total: usize = seen.values().sum();
    seen.get("a:1").copied().unwrap_or(0) as f64 / total as f64
}

#[test]
#[cfg_attr(miri, ignore = "waits for the policy's real-time weight updates")]
fn every_kind_of_pick_reports_load_and_follows_the_weights() {
    for kind in PICK_KINDS.into_iter().chain(["raw"]) {
        let (host, rt) = (Host::new(), Runtime::new().unwrap());
        let ch = ready(&host, &rt);
        let mut r = ch.reader();
        // No load reported yet, so no weight: an even split (reporting load
        // here would let a weight update land in the middle of it).
        let even = split_by_kind(&mut r, kind, 1000, |_| Vec::new());
        assert!((share(&even) - 0.5).abs() < 0.02, "{kind}: {even:?}");
        // Weights 1000 : 333 once the loop recomputes them (every 0.1 s),
        // from the load reported through this kind of pick's done alone.
        let deadline = Instant::now() + Duration::from_secs(10);
        let weighted = loop {
            let seen = split_by_kind(&mut r, kind, 4000, |a| load(a).to_vec());
            if (share(&seen) - 0.75).abs() < 0.02 {
                break seen;
            }
            assert!(
                Instant::now() < deadline,
                "{kind}: never weighted: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(weighted.len(), 2, "{kind}: {weighted:?}");
    }
}

#[test]
fn a_kept_pick_done_without_load_leaves_the_weights_alone() {
    let (host, rt) = (Host::new(), Runtime::new().unwrap());
    let ch = ready(&host, &rt);
    let mut r = ch.reader();
    for _ in 0..2000 {
        r.try_pick_kept(&PickInfo::default()).unwrap();
        assert!(r.finish_kept(&DoneInfo::OK));
    }
    std::thread::sleep(Duration::from_millis(300));
    let seen = split_by_kind(&mut r, "kept", 3000, |_| Vec::new());
    assert_eq!(seen["a:1"], seen["b:1"], "no load, no weights: {seen:?}");
}

#[test]
fn a_weighted_pick_calls_its_load_hook_only_for_a_done_with_load_even_as_words() {
    let (host, rt) = (Host::new(), Runtime::new().unwrap());
    let ch = ready(&host, &rt);
    let mut r = ch.reader();
    let pick = r.try_pick(&PickInfo::default()).unwrap();
    assert!(pick.reports_outcome(), "the schedule's load hook");
    assert!(
        !pick.wants_outcome_without_load(),
        "a done without load has nothing to tell it"
    );
    let addr = pick.subconn().addr().to_string();
    // Through the words a C ABI keeps, and back: the same pick.
    // SAFETY: from `into_raw`, taken back once.
    let pick = unsafe { Pick::from_raw(pick.into_raw()) };
    assert!(pick.reports_outcome() && !pick.wants_outcome_without_load());
    assert_eq!(pick.subconn().addr(), addr);
    pick.done(&DoneInfo::OK);
    // A round_robin pick has no hook at all.
    let config = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
    let rr = Channel::new(&rt, "", Some(config), options(&host)).unwrap();
    rr.update_addresses(addrs(&["c:1"])).unwrap();
    host.wait("c connecting", |evs| {
        evs.iter()
            .any(|e| matches!(e, Ev::Connect(a) if a == "c:1"))
    });
    report(&rr, &host, &["c:1"], Ready);
    rr.sync().unwrap();
    let pick = rr.reader().try_pick(&PickInfo::default()).unwrap();
    assert!(!pick.reports_outcome() && !pick.wants_outcome_without_load());
}

/// A reader takes a batch of schedule steps ahead; a new schedule
/// published meanwhile (a third endpoint) must not be answered from the
/// old one's steps, whatever kind of pick comes next: every pick after the
/// reader saw the new table can go to the newcomer, and picks never touch
/// the old table once it is gone (Miri checks that part).
#[test]
fn steps_taken_ahead_end_with_their_schedule() {
    for kind in PICK_KINDS {
        let (host, rt) = (Host::new(), Runtime::new().unwrap());
        let ch = ready(&host, &rt);
        let mut r = ch.reader();
        // A few picks: the rest of a batch is left at hand.
        let before = split_by_kind(&mut r, kind, 5, |_| Vec::new());
        assert_eq!(before.values().sum::<usize>(), 5, "{kind}");
        ch.update_addresses(addrs(&["a:1", "b:1", "c:1"])).unwrap();
        host.wait("c connecting", |evs| {
            evs.iter().filter(|e| matches!(e, Ev::Connect(_))).count() == 3
        });
        report(&ch, &host, &["c:1"], Ready);
        ch.sync().unwrap();
        let after = split_by_kind(&mut r, kind, 30, |_| Vec::new());
        assert_eq!(after.len(), 3, "{kind}: {after:?}");
        assert!(
            after["c:1"] >= 9,
            "{kind}: an even split of three: {after:?}"
        );
    }
}
