//! least_request through a `Reader`, which runs the policy's least-loaded
//! table inline: every kind of pick (owned, borrowed, kept) adds one to its
//! endpoint's in-flight counter and its done (or drop) takes it off, so
//! picks held in flight keep the endpoints even, and picks favour the
//! endpoint with fewer in flight.
//!
//! With `choiceCount` 10 over two endpoints a pick misses the less loaded
//! one only when all ten draws hit the other (1 in 1024), so counts show in
//! where picks land: picks held in flight split within a couple of picks
//! of even, where uncounted picks would split like coin flips.

use crate::support::*;
use std::collections::HashMap;
use switchyard::ConnectivityState::*;
use switchyard::*;

const LR: &str = r#"{"loadBalancingConfig":[{"least_request_experimental":{"choiceCount":10}}]}"#;

/// A least_request channel over `list`, with `ready` READY and the rest
/// left CONNECTING.
fn channel(host: &std::sync::Arc<Host>, rt: &Runtime, list: &[&str], ready: &[&str]) -> Channel {
    let ch = Channel::new(rt, "", Some(LR), options(host)).unwrap();
    ch.update_addresses(addrs(list)).unwrap();
    // Each endpoint's pick_first connects once the policy has its children.
    host.wait("all connecting", |evs| {
        evs.iter().filter(|e| matches!(e, Ev::Connect(_))).count() == list.len()
    });
    report(&ch, host, ready, Ready);
    // The policy rebuilds its picker in a `work` it queued behind the reports.
    ch.sync().unwrap();
    ch
}

fn count(seen: &mut HashMap<String, usize>, addr: &str) {
    *seen.entry(addr.to_string()).or_default() += 1;
}

fn of(seen: &HashMap<String, usize>, addr: &str) -> usize {
    seen.get(addr).copied().unwrap_or(0)
}

/// Picks held in flight by each kind of pick: `n` of them split within a
/// couple of picks of even (each goes to the endpoint with fewer); after
/// a:1's are done, the next `m` go to a:1 (b:1 still has its own in
/// flight); after every one is done both are back at zero.
#[test]
fn every_kind_of_pick_counts_in_flight_and_favours_the_idle_endpoint() {
    let host = Host::new();
    let rt = Runtime::new().unwrap();
    let ch = channel(&host, &rt, &["a:1", "b:1"], &["a:1", "b:1"]);
    let info = PickInfo::default();
    let (n, m) = (100, 40);
    let even = |seen: &HashMap<String, usize>, total: usize, what: &str| {
        let a = of(seen, "a:1");
        assert!(
            a.abs_diff(total - a) <= 4,
            "{what}: held picks split evenly: {seen:?}"
        );
    };
    for kind in PICK_KINDS {
        let mut readers: Vec<Reader> = (0..n + m).map(|_| ch.reader()).collect();
        let (first, second) = readers.split_at_mut(n);
        let mut seen = HashMap::new();
        let mut later = HashMap::new();
        match kind {
            "owned" => {
                let r = &mut first[0];
                let held: Vec<Pick> = (0..n).map(|_| r.try_pick(&info).unwrap()).collect();
                held.iter()
                    .for_each(|p| count(&mut seen, p.subconn().addr()));
                even(&seen, n, kind);
                let (on_a, on_b): (Vec<Pick>, Vec<Pick>) =
                    held.into_iter().partition(|p| p.subconn().addr() == "a:1");
                on_a.into_iter().for_each(|p| p.done(&DoneInfo::OK));
                let more: Vec<Pick> = (0..m).map(|_| r.try_pick(&info).unwrap()).collect();
                more.iter()
                    .for_each(|p| count(&mut later, p.subconn().addr()));
                on_b.into_iter()
                    .chain(more)
                    .for_each(|p| p.done(&DoneInfo::OK));
            }
            "borrowed" => {
                let held: Vec<PickRef<'_>> = first
                    .iter_mut()
                    .map(|r| r.try_pick_ref(&info).unwrap())
                    .collect();
                held.iter()
                    .for_each(|p| count(&mut seen, p.subconn().addr()));
                even(&seen, n, kind);
                let (on_a, on_b): (Vec<PickRef<'_>>, Vec<PickRef<'_>>) =
                    held.into_iter().partition(|p| p.subconn().addr() == "a:1");
                on_a.into_iter().for_each(|p| p.done(&DoneInfo::OK));
                let more: Vec<PickRef<'_>> = second
                    .iter_mut()
                    .map(|r| r.try_pick_ref(&info).unwrap())
                    .collect();
                more.iter()
                    .for_each(|p| count(&mut later, p.subconn().addr()));
                on_b.into_iter()
                    .chain(more)
                    .for_each(|p| p.done(&DoneInfo::OK));
            }
            _ => {
                let mut addr_of = Vec::new();
                for r in first.iter_mut() {
                    let addr = r.try_pick_kept(&info).unwrap().addr().to_string();
                    count(&mut seen, &addr);
                    addr_of.push(addr);
                }
                even(&seen, n, kind);
                for (r, addr) in first.iter_mut().zip(&addr_of) {
                    if addr == "a:1" {
                        assert!(r.finish_kept(&DoneInfo::OK));
                    }
                }
                for r in second.iter_mut() {
                    let addr = r.try_pick_kept(&info).unwrap().addr().to_string();
                    count(&mut later, &addr);
                }
                for (r, addr) in first.iter_mut().zip(&addr_of) {
                    if addr != "a:1" {
                        assert!(r.finish_kept(&DoneInfo::OK));
                    }
                }
                for r in second.iter_mut() {
                    assert!(r.finish_kept(&DoneInfo::OK));
                }
            }
        }
        // a:1 had none in flight, b:1 about n/2: a:1 takes nearly all.
        assert!(
            of(&later, "a:1") >= m - 2,
            "{kind}: picks favour the endpoint with fewer in flight: {later:?}"
        );
    }
    // Every pick done: both counters are back at zero, so held picks split
    // evenly again (a leak of even a few picks would tilt them).
    let mut r = ch.reader();
    let held: Vec<Pick> = (0..n).map(|_| r.try_pick(&info).unwrap()).collect();
    let mut seen = HashMap::new();
    held.iter()
        .for_each(|p| count(&mut seen, p.subconn().addr()));
    even(&seen, n, "after every kind");
}

/// Picks that end without a done take their one off too: a kept pick
/// dropped by the reader's next pick (the general and the C ABI's hit
/// path), by a picker update or by `refresh`, an owned or borrowed pick
/// dropped. They all land on a:1 (the only READY endpoint); if any kind
/// leaked, a:1 would be left with hundreds in flight and, once b:1 is
/// READY, every held pick would go to b:1.
#[test]
fn picks_dropped_without_done_take_their_one_off() {
    let host = Host::new();
    let rt = Runtime::new().unwrap();
    let ch = channel(&host, &rt, &["a:1", "b:1"], &["a:1"]);
    let info = PickInfo::default();
    let mut r = ch.reader();
    for _ in 0..200 {
        // Each drops the one before, unfinished.
        assert_eq!(r.try_pick_kept(&info).unwrap().addr(), "a:1");
    }
    for _ in 0..200 {
        let listed = r.try_pick_kept_cached(None).expect("an inline table");
        assert_eq!(listed.id(), host.id("a:1"));
    }
    for _ in 0..200 {
        drop(r.try_pick(&info).unwrap());
        drop(r.try_pick_ref(&info).unwrap());
    }
    // Kept picks dropped by a picker update: the next pick comes from a
    // new table (an endpoint that never connects comes and goes), the
    // kept one is settled against the old one.
    for i in 0..20 {
        assert_eq!(r.try_pick_kept(&info).unwrap().addr(), "a:1");
        let list: &[&str] = if i % 2 == 0 {
            &["a:1", "b:1", "z:1"]
        } else {
            &["a:1", "b:1"]
        };
        ch.update_addresses(addrs(list)).unwrap();
        ch.sync().unwrap();
    }
    assert_eq!(r.try_pick_kept(&info).unwrap().addr(), "a:1");
    r.refresh();
    assert!(
        !r.finish_kept(&DoneInfo::OK),
        "refresh dropped the kept pick"
    );

    report(&ch, &host, &["b:1"], Ready);
    ch.sync().unwrap();
    let mut r = ch.reader();
    let held: Vec<Pick> = (0..40).map(|_| r.try_pick(&info).unwrap()).collect();
    let mut seen = HashMap::new();
    held.iter()
        .for_each(|p| count(&mut seen, p.subconn().addr()));
    let a = of(&seen, "a:1");
    assert!(
        a.abs_diff(40 - a) <= 4,
        "a:1 has nothing left in flight: held picks split evenly: {seen:?}"
    );
}

/// Over more endpoints than the caches hold (where a reader prefetches its
/// draws a few picks ahead), picks land all over the table, every one is
/// counted on the endpoint it went to, and nothing stays in flight.
#[test]
#[cfg_attr(miri, ignore = "40,000 endpoints: hours under Miri")]
fn a_table_larger_than_the_caches_is_drawn_from_and_counted_exactly() {
    const N: usize = 40_000;
    let config = r#"{"loadBalancingConfig":[{"least_request_experimental":{}}]}"#;
    let (_host, _rt, ch, _) = many_ready(config, N, 1);
    let mut r = ch.reader();
    let picks = 2 * N;
    let mut hits: std::collections::HashMap<String, u64> = Default::default();
    for i in 0..picks {
        let p = r.try_pick_ref(&PickInfo::default()).unwrap();
        *hits.entry(p.subconn().addr().to_string()).or_default() += 1;
        if i % 2 == 0 {
            p.done(&DoneInfo::OK);
        } else {
            drop(p);
        }
    }
    assert!(
        hits.len() > N * 3 / 4,
        "{} of {N} endpoints hit",
        hits.len()
    );
    let snap = ch.snapshot().unwrap();
    let mut counted = 0;
    for s in &snap.subchannels {
        let want = hits.get(s.address.as_str()).copied().unwrap_or(0);
        assert_eq!(s.calls_started, want, "{}", s.address);
        assert_eq!(s.calls_in_flight, 0, "{}", s.address);
        counted += s.calls_started;
    }
    assert_eq!(counted, picks as u64);
}

/// Readers counting their kept and borrowed picks in slots of their own
/// (seven per channel; the rest share one) come and go on four threads at
/// once, each slot passing from a dropped reader to a new one: no count is
/// lost or left behind, so held picks split evenly afterwards, and picks
/// held by one thread's readers steer another thread's picks away.
#[test]
#[cfg_attr(miri, ignore = "thousands of readers: minutes under Miri")]
fn readers_coming_and_going_on_threads_keep_counts_exact() {
    let host = Host::new();
    let rt = Runtime::new().unwrap();
    let ch = channel(&host, &rt, &["a:1", "b:1"], &["a:1", "b:1"]);
    let info = PickInfo::default();
    std::thread::scope(|s| {
        for t in 0..4 {
            let ch = &ch;
            s.spawn(move || {
                for i in 0..300 {
                    let mut r = ch.reader();
                    for k in 0..10 {
                        r.try_pick_kept(&info).unwrap();
                        // Some finished, some dropped by the next pick.
                        if (t + i + k) % 3 != 0 {
                            assert!(r.finish_kept(&DoneInfo::OK));
                        }
                        let p = r.try_pick_ref(&info).unwrap();
                        if k % 2 == 0 {
                            p.done(&DoneInfo::OK);
                        }
                    }
                    // Dropped with its last kept pick unfinished, half the
                    // time (the drop settles it before the slot goes).
                    if i % 2 == 0 {
                        r.try_pick_kept(&info).unwrap();
                    }
                }
            });
        }
    });
    // Held on this thread: 60 readers (seven with slots of their own),
    // each with a kept pick where least_request chose.
    let mut holders: Vec<Reader> = (0..60).map(|_| ch.reader()).collect();
    let mut seen = HashMap::new();
    let mut on_b = Vec::new();
    for (i, r) in holders.iter_mut().enumerate() {
        let addr = r.try_pick_kept(&info).unwrap().addr().to_string();
        count(&mut seen, &addr);
        if addr == "b:1" {
            on_b.push(i);
        }
    }
    let a = of(&seen, "a:1");
    assert!(
        a.abs_diff(60 - a) <= 4,
        "nothing left in flight by the threads: held picks split evenly: {seen:?}"
    );
    // Those on b:1 end: another thread's picks now go to b:1.
    for i in on_b {
        assert!(holders[i].finish_kept(&DoneInfo::OK));
    }
    let later = std::thread::scope(|s| {
        s.spawn(|| {
            let mut r = ch.reader();
            let mut later = HashMap::new();
            for _ in 0..20 {
                let p = r.try_pick_ref(&info).unwrap();
                count(&mut later, p.subconn().addr());
                p.done(&DoneInfo::OK);
            }
            later
        })
        .join()
        .unwrap()
    });
    assert!(
        of(&later, "b:1") >= 19,
        "picks avoid the endpoint other readers hold picks on: {later:?}"
    );
}
