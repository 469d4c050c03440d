//! random through a `Reader`, which draws from the policy's table inline:
//! every kind of pick spreads evenly over the READY endpoints only, and
//! follows the READY set as it changes.

use crate::support::*;
use switchyard::ConnectivityState::*;
use switchyard::*;

const RANDOM: &str = r#"{"loadBalancingConfig":[{"random":{}}]}"#;

#[test]
fn every_kind_of_pick_spreads_evenly_over_the_ready_endpoints() {
    let host = Host::new();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", Some(RANDOM), options(&host)).unwrap();
    ch.update_addresses(addrs(&["a:1", "b:1", "c:1", "d:1"]))
        .unwrap();
    host.wait("all connecting", |evs| {
        evs.iter().filter(|e| matches!(e, Ev::Connect(_))).count() == 4
    });
    report(&ch, &host, &["a:1", "b:1", "c:1"], Ready);
    report(&ch, &host, &["d:1"], TransientFailure);
    // The policy rebuilds its picker in a `work` it queued behind the reports.
    ch.sync().unwrap();
    let mut r = ch.reader();
    for kind in PICK_KINDS {
        let seen = split_by_kind(&mut r, kind, 6000, |_| Vec::new());
        assert_eq!(seen.len(), 3, "{kind}: READY endpoints only: {seen:?}");
        assert!(
            seen.values().all(|n| (1700..=2300).contains(n)),
            "{kind}: about 2000 each: {seen:?}"
        );
    }
    // b:1 leaves READY: the next picks (a new table) never land on it.
    report(&ch, &host, &["b:1"], TransientFailure);
    ch.sync().unwrap();
    for kind in PICK_KINDS {
        let seen = split_by_kind(&mut r, kind, 2000, |_| Vec::new());
        assert_eq!(seen.len(), 2, "{kind}: {seen:?}");
        assert!(!seen.contains_key("b:1"), "{kind}: {seen:?}");
    }
}

/// Over more endpoints than the caches hold (where a reader's draws start
/// loading entries and counter rows a few draws ahead), picks still land on
/// READY endpoints all over the table, and every one is counted once on
/// the endpoint it went to.
#[test]
#[cfg_attr(miri, ignore = "40,000 endpoints: hours under Miri")]
fn a_table_larger_than_the_caches_is_drawn_from_evenly_and_counted_exactly() {
    const N: usize = 40_000;
    let (_host, _rt, ch, names) = many_ready(RANDOM, N, 0);
    let mut r = ch.reader();
    let picks = 4 * N;
    let mut hits: std::collections::HashMap<String, u64> = Default::default();
    for _ in 0..picks {
        let p = r.try_pick_ref(&PickInfo::default()).unwrap();
        *hits.entry(p.subconn().addr().to_string()).or_default() += 1;
        p.done(&DoneInfo::OK);
    }
    // 4 picks per endpoint on average: most endpoints are hit, none
    // outside the table, and the halves of the table get about as many.
    assert!(
        hits.len() > N * 9 / 10,
        "{} of {N} endpoints hit",
        hits.len()
    );
    let first_half: u64 = names[..N / 2].iter().filter_map(|a| hits.get(a)).sum();
    assert!(
        (picks as u64 * 45 / 100..=picks as u64 * 55 / 100).contains(&first_half),
        "{first_half} of {picks} in the first half"
    );
    let snap = ch.snapshot().unwrap();
    let mut counted = 0;
    for s in &snap.subchannels {
        let want = hits.get(s.address.as_str()).copied().unwrap_or(0);
        assert_eq!(s.calls_started, want, "{}", s.address);
        assert_eq!(s.calls_succeeded, want, "{}", s.address);
        counted += s.calls_started;
    }
    assert_eq!(counted, picks as u64);
}

/// A reader draws from a table of one chunk (up to 256 endpoints) directly
/// and from a larger one through its chunks: as the READY set crosses that
/// size both ways, every way of picking follows it on the same reader,
/// landing only on READY endpoints and all over them.
#[test]
#[cfg_attr(miri, ignore = "300 endpoints x thousands of picks: slow under Miri")]
fn a_reader_follows_its_table_across_the_one_chunk_size() {
    const N: usize = 300;
    let (host, _rt, ch, names) = many_ready(RANDOM, N, 3);
    let mut r = ch.reader();
    let addr_of: std::collections::HashMap<SubConnId, String> =
        names.iter().map(|a| (host.id(a), a.clone())).collect();
    // Every way of picking on one reader, each `n` times: where they went.
    let draw = |r: &mut Reader, n: usize| {
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        for kind in PICK_KINDS {
            for (a, k) in split_by_kind(r, kind, n, |_| Vec::new()) {
                *seen.entry(a).or_default() += k;
            }
        }
        for _ in 0..n {
            // The C ABI's hit paths: an owned pick, a kept one.
            let (pick, entry) = r.try_pick_cached(None).expect("hit path");
            assert_eq!(entry.id(), pick.subconn().id());
            *seen.entry(pick.subconn().addr().to_string()).or_default() += 1;
            pick.done(&DoneInfo::OK);
            let kept = r
                .try_pick_kept_direct()
                .or_else(|| r.try_pick_kept_cached(None))
                .expect("hit path");
            *seen.entry(addr_of[&kept.id()].clone()).or_default() += 1;
            assert!(r.finish_kept_quietly(true));
        }
        seen
    };
    let seen = draw(&mut r, 3 * N);
    assert!(seen.len() > N * 9 / 10, "{} of {N} hit", seen.len());
    assert!(
        seen.keys().any(|a| names[256..].contains(a)),
        "second chunk"
    );

    // Down to 100 READY: one chunk.
    let down: Vec<&str> = names[100..].iter().map(String::as_str).collect();
    report(&ch, &host, &down, ConnectivityState::TransientFailure);
    ch.sync().unwrap();
    let seen = draw(&mut r, 1000);
    assert!(
        seen.keys().all(|a| names[..100].contains(a)),
        "READY only: {seen:?}"
    );
    assert!(seen.len() > 95, "{} of 100 hit", seen.len());

    // Back up to 300: two chunks again.
    report(&ch, &host, &down, ConnectivityState::Ready);
    ch.sync().unwrap();
    let seen = draw(&mut r, 3 * N);
    assert!(seen.len() > N * 9 / 10, "{} of {N} hit", seen.len());
    assert!(
        seen.keys().any(|a| names[256..].contains(a)),
        "second chunk"
    );
}
