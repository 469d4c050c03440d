//! round_robin: exact rotation over READY children only, per-child sticky
//! failure, pickers rebuilt only when the READY set changes.

use crate::support::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;

const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

fn rr(host: &Arc<Host>, list: &[&str]) -> (Runtime, Channel) {
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", Some(RR), options(host)).unwrap();
    ch.update_addresses(addrs(list)).unwrap();
    ch.sync().unwrap();
    (rt, ch)
}

#[test]
fn picks_only_ready_children() {
    let host = Host::new();
    let (_rt, ch) = rr(&host, &["a:1", "b:1", "c:1"]);
    report(&ch, &host, &["a:1", "c:1"], Ready);
    report(&ch, &host, &["b:1"], TransientFailure);
    let mut r = ch.reader();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        *seen.entry(pick_addr(&mut r)).or_default() += 1;
    }
    assert_eq!(seen.len(), 2);
    assert_eq!((seen["a:1"], seen["c:1"]), (50, 50));
}

#[test]
fn all_failed_fails_fast_with_a_child_error_and_wait_for_ready_waits() {
    let host = Host::new();
    let (_rt, ch) = rr(&host, &["a:1", "b:1"]);
    ch.report_subconn_state(host.id("a:1"), TransientFailure, "a refused")
        .unwrap();
    ch.report_subconn_state(host.id("b:1"), TransientFailure, "b refused")
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), TransientFailure);
    let mut r = ch.reader();
    let mut msgs = HashSet::new();
    for _ in 0..4 {
        match r.pick(&PickInfo::default(), &PickOptions::default()) {
            Err(PickError::Unavailable(s)) => msgs.insert(s.message().to_string()),
            other => panic!("{other:?}"),
        };
    }
    assert_eq!(
        msgs,
        HashSet::from(["a refused".to_string(), "b refused".to_string()])
    );
    let e = r
        .pick(
            &PickInfo::default(),
            &PickOptions {
                deadline: Some(Instant::now() + Duration::from_millis(20)),
                wait_for_ready: true,
            },
        )
        .unwrap_err();
    assert!(
        matches!(e, PickError::DeadlineExceeded(m) if m.starts_with("latest balancer error: "))
    );
}

#[test]
fn picker_rebuilt_only_when_the_ready_set_changes() {
    let host = Host::new();
    let (_rt, ch) = rr(&host, &["a:1", "b:1", "c:1"]);
    report(&ch, &host, &["a:1", "b:1"], Ready);
    let g = ch.picker_generation();
    // c fails and backs off: the READY set does not change.
    report(&ch, &host, &["c:1"], TransientFailure);
    assert_eq!(ch.picker_generation(), g);
    // A late or duplicate report changes nothing either.
    report(&ch, &host, &["a:1"], Ready);
    assert_eq!(ch.picker_generation(), g);
    report(&ch, &host, &["b:1"], Idle);
    assert_eq!(ch.picker_generation(), g + 1, "b left the READY set");
    assert_eq!(pick_addr(&mut ch.reader()), "a:1");
    report(&ch, &host, &["b:1"], Ready);
    assert_eq!(ch.picker_generation(), g + 2, "b is back");
}

#[test]
fn duplicate_addresses_share_one_child() {
    let host = Host::new();
    let (_rt, ch) = rr(&host, &["a:1", "a:1", "b:1"]);
    assert_eq!(host.count(&Ev::Create("a:1".into())), 1);
    report(&ch, &host, &["a:1", "b:1"], Ready);
    let mut r = ch.reader();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        *seen.entry(pick_addr(&mut r)).or_default() += 1;
    }
    assert_eq!((seen["a:1"], seen["b:1"]), (50, 50));
}

/// Readers start spread over the rotation, each at the entry after the
/// one the reader before started at: picks from a reader per call go round
/// in order, as gRPC-Go's picker does with its one shared counter (random
/// starts made such callers' picks a random draw, not a rotation).
#[test]
fn readers_start_where_the_one_before_left_off() {
    let host = Host::new();
    let list: Vec<String> = (0..16).map(|i| format!("n{i}:1")).collect();
    let list: Vec<&str> = list.iter().map(String::as_str).collect();
    let (_rt, ch) = rr(&host, &list);
    report(&ch, &host, &list, Ready);
    let firsts: HashSet<String> = (0..20).map(|_| pick_addr(&mut ch.reader())).collect();
    assert!(
        firsts.len() > 3,
        "readers all started at the same backend: {firsts:?}"
    );
    // 3 backends, 300 calls, a reader each: exactly 100 each, every
    // window of three calls one per backend.
    let host = Host::new();
    let (_rt, ch) = rr(&host, &["a:1", "b:1", "c:1"]);
    report(&ch, &host, &["a:1", "b:1", "c:1"], Ready);
    let picks: Vec<String> = (0..300).map(|_| pick_addr(&mut ch.reader())).collect();
    for window in picks.chunks(3) {
        let distinct: HashSet<&String> = window.iter().collect();
        assert_eq!(distinct.len(), 3, "not round robin: {window:?}");
    }
}

/// Hundreds of children through a long seeded sequence of READY / IDLE
/// reports and address updates: after each step the picker rotates over
/// exactly the READY children, each once per cycle, and a new picker was
/// published exactly when that set changed.
#[test]
fn many_children_track_the_ready_set_through_a_random_walk() {
    let host = Host::new();
    // Under Miri (hundreds of times slower) a shorter walk over fewer
    // children: still more present than one rotation chunk holds (300 of
    // 256), still address churn.
    let (children, steps) = if cfg!(miri) { (360, 100) } else { (600, 400) };
    let names: Vec<String> = (0..children)
        .map(|i| format!("127.0.{}.{}:1", i / 250, i % 250))
        .collect();
    let mut present: Vec<bool> = (0..names.len()).map(|i| i < children * 5 / 6).collect();
    let listed = |present: &[bool]| -> Vec<Address> {
        (0..names.len())
            .filter(|i| present[*i])
            .map(|i| Address::new(names[i].as_str()))
            .collect()
    };
    let rt = Runtime::new().unwrap();
    // Never idle: an idle look (every 112 s by default) moves each reader
    // on, its rotation restarting anywhere, and under Miri the walk takes
    // longer than that.
    let opts = ChannelOptions {
        idle_timeout: Some(Duration::ZERO),
        ..options(&host)
    };
    let ch = Channel::new(&rt, "", Some(RR), opts).unwrap();
    ch.update_addresses(listed(&present)).unwrap();
    ch.sync().unwrap();
    let mut ready: HashSet<usize> = HashSet::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |below: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % below as u64) as usize
    };
    let mut r = ch.reader();
    for step in 0..steps {
        let before = ready.clone();
        let g = ch.picker_generation();
        if step % 50 == 49 {
            // Swap some addresses out and others in.
            for _ in 0..20 {
                let i = next(names.len());
                present[i] = !present[i];
            }
            // After all the toggles: one toggled out and back in within
            // the same update never left, and stays READY.
            ready.retain(|i| present[*i]);
            ch.update_addresses(listed(&present)).unwrap();
            ch.sync().unwrap();
        } else {
            let i = next(names.len());
            if !present[i] {
                continue;
            }
            // A READY child's connection drops (it reconnects: CONNECTING);
            // a connecting one becomes READY.
            let up = !ready.contains(&i);
            let state = if up { Ready } else { Idle };
            ch.report_subconn_state(host.id(&names[i]), state, "walk")
                .unwrap();
            ch.sync().unwrap();
            if up {
                ready.insert(i);
            } else {
                ready.remove(&i);
            }
        }
        let changed = ready != before;
        if step % 50 != 49 {
            assert_eq!(
                ch.picker_generation() != g,
                changed,
                "step {step}: a picker is published exactly when the READY set changes"
            );
        }
        if ready.is_empty() {
            continue;
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..2 * ready.len() {
            *seen.entry(pick_addr(&mut r)).or_default() += 1;
        }
        let want: HashMap<String, usize> = ready.iter().map(|i| (names[*i].clone(), 2)).collect();
        assert_eq!(seen, want, "step {step}");
    }
}

/// gRPC-Go's TestRoundRobin_AddressesRemoved: every address removed, the
/// RPC fails UNAVAILABLE saying there are no children (and why).
#[test]
fn all_addresses_removed_fails_with_no_children() {
    let host = Host::new();
    let (_rt, ch) = rr(&host, &["a:1", "b:1"]);
    report(&ch, &host, &["a:1", "b:1"], Ready);
    ch.update_addresses(vec![]).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), TransientFailure);
    match ch.reader().try_pick(&PickInfo::default()) {
        Err(PickError::Unavailable(s)) => {
            assert!(s.message().contains("no children to pick from"), "{s}");
            assert!(s.message().contains("produced zero addresses"), "{s}");
        }
        other => panic!("{other:?}"),
    }
}
