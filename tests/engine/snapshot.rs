//! Snapshots of a host-transport channel count the host's picks: each pick
//! is one RPC on the picked subchannel, its done the outcome, whichever way
//! it was picked and finished, on any thread.

use crate::support::*;
use std::collections::HashMap;
use switchyard::ConnectivityState::*;
use switchyard::*;

const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// (started, succeeded, failed, in flight) per address.
fn counts(ch: &Channel) -> HashMap<String, (u64, u64, u64, u64)> {
    ch.snapshot()
        .unwrap()
        .subchannels
        .iter()
        .map(|s| {
            let c = (
                s.calls_started,
                s.calls_succeeded,
                s.calls_failed,
                s.calls_in_flight,
            );
            (s.address.clone(), c)
        })
        .collect()
}

fn total(c: &HashMap<String, (u64, u64, u64, u64)>) -> (u64, u64, u64, u64) {
    c.values().fold((0, 0, 0, 0), |t, c| {
        (t.0 + c.0, t.1 + c.1, t.2 + c.2, t.3 + c.3)
    })
}

fn failed(code: Code) -> DoneInfo<'static> {
    DoneInfo {
        error: Some("failed"),
        code,
        ..DoneInfo::OK
    }
}

fn ready_channel(host: &std::sync::Arc<Host>, list: &[&str]) -> (Runtime, Channel) {
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", Some(RR), options(host)).unwrap();
    ch.update_addresses(addrs(list)).unwrap();
    host.wait("all connecting", |evs| {
        evs.iter().filter(|e| matches!(e, Ev::Connect(_))).count() == list.len()
    });
    report(&ch, host, list, Ready);
    ch.sync().unwrap();
    (rt, ch)
}

#[test]
fn every_kind_of_host_pick_is_counted_with_its_outcome() {
    let host = Host::new();
    let (_rt, ch) = ready_channel(&host, &["a:1", "b:1"]);
    assert_eq!(total(&counts(&ch)), (0, 0, 0, 0));
    let mut r = ch.reader();
    let info = PickInfo::default();
    // Owned picks, finished anywhere: 4 OK, 2 failed, 1 dropped, 1 open.
    for i in 0..6 {
        let p = r.try_pick(&info).unwrap();
        let outcome = if i < 4 {
            DoneInfo::OK
        } else {
            failed(Code::Unavailable)
        };
        std::thread::spawn(move || p.done(&outcome)).join().unwrap();
    }
    drop(r.try_pick(&info).unwrap());
    let open = r.try_pick(&info).unwrap();
    // Owned picks finished through their reader: 2 OK.
    for _ in 0..2 {
        let p = r.try_pick(&info).unwrap();
        r.finish(p, &DoneInfo::OK);
    }
    // Borrowed picks: 3 OK, 1 failed, 1 dropped.
    for i in 0..4 {
        let p = r.try_pick_ref(&info).unwrap();
        p.done(&if i < 3 {
            DoneInfo::OK
        } else {
            failed(Code::Internal)
        });
    }
    drop(r.try_pick_ref(&info).unwrap());
    // Kept picks: 2 OK, 1 failed, 1 dropped by the next pick, 1 open.
    for i in 0..3 {
        r.try_pick_kept(&info).unwrap();
        assert!(r.finish_kept(&if i < 2 {
            DoneInfo::OK
        } else {
            failed(Code::Cancelled)
        }));
    }
    r.try_pick_kept(&info).unwrap();
    r.try_pick_kept(&info).unwrap();

    let c = counts(&ch);
    // 8 owned + 2 finished by the reader + 5 borrowed + 5 kept.
    assert_eq!(total(&c), (20, 11, 7, 2), "{c:?}");
    // round_robin: the picks alternate between the two.
    assert_eq!(c["a:1"].0, 10, "{c:?}");
    assert_eq!(c["b:1"].0, 10, "{c:?}");
    let snap = ch.snapshot().unwrap();
    assert!(snap.subchannels.iter().all(|s| s.last_call.is_some()));

    // The open ones end; a reader on another thread picks too.
    open.done(&DoneInfo::OK);
    assert!(r.finish_kept(&DoneInfo::OK));
    let mut r2 = ch.reader();
    std::thread::spawn(move || {
        for _ in 0..100 {
            let p = r2.try_pick_ref(&PickInfo::default()).unwrap();
            p.done(&DoneInfo::OK);
        }
    })
    .join()
    .unwrap();
    // The other reader is gone: its counts stay.
    assert_eq!(total(&counts(&ch)), (120, 113, 7, 0));
    // A pick outlives its reader, and is finished on another thread.
    let late = r.try_pick(&info).unwrap();
    drop(r);
    assert_eq!(total(&counts(&ch)), (121, 113, 7, 1));
    std::thread::spawn(move || late.done(&failed(Code::DeadlineExceeded)))
        .join()
        .unwrap();
    // Counted, and still counted once nothing is left to write there.
    assert_eq!(total(&counts(&ch)), (121, 113, 8, 0));
    assert_eq!(total(&counts(&ch)), (121, 113, 8, 0));
}

#[test]
fn a_new_subchannel_starts_at_zero_and_a_gone_ones_counts_go() {
    let host = Host::new();
    let (_rt, ch) = ready_channel(&host, &["a:1", "b:1"]);
    let mut r = ch.reader();
    for _ in 0..10 {
        r.try_pick_kept(&PickInfo::default()).unwrap();
        assert!(r.finish_kept(&DoneInfo::OK));
    }
    assert_eq!(counts(&ch)["a:1"], (5, 5, 0, 0));
    // a:1 goes; once nothing holds it, a newcomer may take its slot, but
    // not its counts.
    ch.update_addresses(addrs(&["b:1"])).unwrap();
    ch.sync().unwrap();
    r.refresh();
    ch.update_addresses(addrs(&["b:1", "c:1"])).unwrap();
    host.wait("c connecting", |evs| {
        evs.contains(&Ev::Connect("c:1".into()))
    });
    report(&ch, &host, &["c:1"], Ready);
    ch.sync().unwrap();
    let c = counts(&ch);
    assert!(!c.contains_key("a:1"), "{c:?}");
    assert_eq!(c["c:1"], (0, 0, 0, 0), "{c:?}");
    assert_eq!(c["b:1"], (5, 5, 0, 0), "{c:?}");
    for _ in 0..10 {
        r.try_pick_kept(&PickInfo::default()).unwrap();
        assert!(r.finish_kept(&DoneInfo::OK));
    }
    let c = counts(&ch);
    assert_eq!((c["b:1"].0, c["c:1"].0), (10, 5), "{c:?}");
}

#[test]
fn a_channel_told_not_to_count_picks_shows_none() {
    let host = Host::new();
    let rt = Runtime::new().unwrap();
    let opts = ChannelOptions {
        skip_pick_counts: true,
        ..options(&host)
    };
    let ch = Channel::new(&rt, "", Some(RR), opts).unwrap();
    ch.update_addresses(addrs(&["a:1", "b:1"])).unwrap();
    host.wait("connecting", |evs| {
        evs.iter().filter(|e| matches!(e, Ev::Connect(_))).count() == 2
    });
    report(&ch, &host, &["a:1", "b:1"], Ready);
    ch.sync().unwrap();
    let mut r = ch.reader();
    for _ in 0..10 {
        r.try_pick_kept(&PickInfo::default()).unwrap();
        assert!(r.finish_kept(&DoneInfo::OK));
        r.try_pick(&PickInfo::default())
            .unwrap()
            .done(&DoneInfo::OK);
    }
    assert_eq!(total(&counts(&ch)), (0, 0, 0, 0));
}
