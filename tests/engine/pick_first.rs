//! pick_first: ordered happy-eyeballs attempts, first READY wins, sticky
//! TRANSIENT_FAILURE, lazy IDLE, keeping a surviving connection.

use crate::support::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard::ConnectivityState::*;
use switchyard::*;

fn manual(seed: u64) -> (Arc<ManualClock>, Runtime) {
    let clock = Arc::new(ManualClock::new());
    let rt = Runtime::with_config(RuntimeConfig {
        clock: clock.clone(),
        seed: Some(seed),
    })
    .unwrap();
    (clock, rt)
}

fn connects(host: &Host) -> Vec<String> {
    host.events()
        .into_iter()
        .filter_map(|e| {
            if let Ev::Connect(a) = e {
                Some(a)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn happy_eyeballs_staggers_attempts_and_first_ready_wins() {
    let (clock, rt) = manual(1);
    let host = Host::new();
    let ch = Channel::new(&rt, "", None, options(&host)).unwrap();
    ch.update_addresses(addrs(&["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"]))
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(connects(&host), ["127.0.0.1:1"]);
    assert_eq!(ch.state(), Connecting);
    clock.advance(Duration::from_millis(249));
    ch.sync().unwrap();
    assert_eq!(connects(&host).len(), 1);
    clock.advance(Duration::from_millis(1));
    host.wait("second attempt", |e| {
        e.contains(&Ev::Connect("127.0.0.2:1".into()))
    });
    // The connect is seen from inside the timer callback, before it arms the
    // next timer: let the callback finish before moving the clock again.
    ch.sync().unwrap();
    clock.advance(Duration::from_millis(250));
    host.wait("third attempt", |e| {
        e.contains(&Ev::Connect("127.0.0.3:1".into()))
    });
    assert!(
        host.events().iter().all(|e| !matches!(e, Ev::Shutdown(_))),
        "earlier attempts keep running"
    );

    report(&ch, &host, &["127.0.0.2:1"], Ready);
    assert_eq!(ch.state(), Ready);
    let ev = host.events();
    assert!(
        ev.contains(&Ev::Shutdown("127.0.0.1:1".into()))
            && ev.contains(&Ev::Shutdown("127.0.0.3:1".into()))
    );
    assert!(!ev.contains(&Ev::Shutdown("127.0.0.2:1".into())));
    let mut r = ch.reader();
    for _ in 0..10 {
        assert_eq!(pick_addr(&mut r), "127.0.0.2:1");
    }
}

#[test]
fn failure_moves_on_at_once_then_sticky_transient_failure() {
    let (clock, rt) = manual(2);
    let host = Host::new();
    let ch = Channel::new(&rt, "", None, options(&host)).unwrap();
    ch.update_addresses(addrs(&["127.0.0.1:1", "127.0.0.2:1"]))
        .unwrap();
    ch.sync().unwrap();
    ch.report_subconn_state(host.id("127.0.0.1:1"), TransientFailure, "refused by a")
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(
        connects(&host),
        ["127.0.0.1:1", "127.0.0.2:1"],
        "no 250 ms wait after a failure"
    );
    assert_eq!(ch.state(), Connecting);
    ch.report_subconn_state(host.id("127.0.0.2:1"), TransientFailure, "refused by b")
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), TransientFailure);
    let mut r = ch.reader();
    assert_eq!(
        r.try_pick(&PickInfo::default()).unwrap_err(),
        PickError::Unavailable(Status::unavailable("refused by b"))
    );
    // Backoff over: each subchannel reconnects by itself; the state stays TF.
    clock.advance(Duration::from_secs(1));
    host.wait("both retried", |e| {
        e.iter().filter(|e| matches!(e, Ev::Connect(_))).count() == 4
    });
    assert_eq!(
        ch.state(),
        TransientFailure,
        "sticky: no flap to CONNECTING"
    );
    report(&ch, &host, &["127.0.0.2:1"], Ready);
    assert_eq!(ch.state(), Ready);
    assert_eq!(pick_addr(&mut r), "127.0.0.2:1");
}

#[test]
fn keeps_its_connection_when_the_address_survives_an_update() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let ch = Channel::new(&rt, "", None, options(&host)).unwrap();
    ch.update_addresses(addrs(&["127.0.0.1:1", "127.0.0.2:1"]))
        .unwrap();
    ch.sync().unwrap();
    report(&ch, &host, &["127.0.0.1:1"], Ready);
    let generation = ch.picker_generation();
    host.take();
    ch.update_addresses(addrs(&["127.0.0.9:1", "127.0.0.1:1"]))
        .unwrap();
    ch.sync().unwrap();
    assert!(
        host.events().is_empty(),
        "no reconnect, no churn: {:?}",
        host.events()
    );
    assert_eq!(ch.picker_generation(), generation);
    assert_eq!(pick_addr(&mut ch.reader()), "127.0.0.1:1");

    // The selected address removed: CONNECTING and a new pass.
    ch.update_addresses(addrs(&["127.0.0.9:1"])).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), Connecting);
    assert_eq!(
        host.take(),
        vec![
            Ev::Shutdown("127.0.0.1:1".into()),
            Ev::Create("127.0.0.9:1".into()),
            Ev::Connect("127.0.0.9:1".into())
        ]
    );
}

#[test]
fn lost_connection_goes_idle_until_a_pick() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let ch = Channel::new(&rt, "", None, options(&host)).unwrap();
    ch.update_addresses(addrs(&["127.0.0.1:1"])).unwrap();
    ch.sync().unwrap();
    report(&ch, &host, &["127.0.0.1:1"], Ready);
    report(&ch, &host, &["127.0.0.1:1"], Idle);
    assert_eq!(ch.state(), Idle);
    assert_eq!(
        connects(&host).len(),
        1,
        "pick_first does not reconnect by itself"
    );
    let mut r = ch.reader();
    assert_eq!(
        r.try_pick(&PickInfo::default()).unwrap_err(),
        PickError::NoSubConnAvailable
    );
    host.wait("pick triggers reconnect", |e| {
        e.iter().filter(|e| matches!(e, Ev::Connect(_))).count() == 2
    });
    // Only the first pick triggers it.
    let _ = r.try_pick(&PickInfo::default());
    ch.sync().unwrap();
    assert_eq!(connects(&host).len(), 2);
    assert_eq!(ch.state(), Connecting);
}

#[test]
fn shuffle_address_list_varies_the_order() {
    let mut firsts = std::collections::HashSet::new();
    let list: Vec<String> = (0..8).map(|i| format!("127.0.0.{i}:1")).collect();
    let list: Vec<&str> = list.iter().map(String::as_str).collect();
    for seed in 0..6 {
        let (_clock, rt) = manual(seed);
        let host = Host::new();
        let cfg = r#"{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}"#;
        let ch = Channel::new(&rt, "", Some(cfg), options(&host)).unwrap();
        ch.update_addresses(addrs(&list)).unwrap();
        ch.sync().unwrap();
        firsts.insert(connects(&host)[0].clone());
    }
    assert!(
        firsts.len() > 1,
        "shuffling never changed the first address: {firsts:?}"
    );

    let (_clock, rt) = manual(0);
    let host = Host::new();
    let ch = Channel::new(&rt, "", None, options(&host)).unwrap();
    ch.update_addresses(addrs(&list)).unwrap();
    ch.sync().unwrap();
    assert_eq!(
        connects(&host)[0],
        "127.0.0.0:1",
        "without shuffling, the list order"
    );
}

#[test]
fn zero_addresses_is_transient_failure_and_asks_for_resolution() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let asked = Arc::new(AtomicUsize::new(0));
    let a2 = asked.clone();
    let mut opts = options(&host);
    opts.on_resolve_now = Some(Arc::new(move || {
        a2.fetch_add(1, Ordering::SeqCst);
    }));
    // The request is paced by the backoff (a rejected update).
    opts.backoff.initial = Duration::from_millis(50);
    let ch = Channel::new(&rt, "", None, opts).unwrap();
    ch.update_addresses(vec![]).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), TransientFailure);
    let e = ch.reader().try_pick(&PickInfo::default()).unwrap_err();
    assert_eq!(
        e,
        PickError::Unavailable(Status::unavailable(
            "name resolver error: produced zero addresses"
        ))
    );
    let t0 = std::time::Instant::now();
    while asked.load(Ordering::SeqCst) == 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[test]
fn resolver_error_before_any_address() {
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", None, ChannelOptions::default()).unwrap();
    ch.report_resolver_error("no such host").unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), TransientFailure);
    let e = ch.reader().try_pick(&PickInfo::default()).unwrap_err();
    assert_eq!(
        e,
        PickError::Unavailable(Status::unavailable("name resolver error: no such host"))
    );
}

/// A host that answers re-resolution at once with the same addresses, all
/// still in their backoff: each update ends pick_first's pass at once, and
/// that must not ask for re-resolution again (the failing subchannels asked
/// already, as in gRPC-Go), or the loop spins: update, re-resolve, update...
#[test]
fn re_resolution_answered_at_once_with_failing_addresses_does_not_spin() {
    let (_clock, rt) = manual(5);
    let host = Host::new();
    let asked = Arc::new(AtomicUsize::new(0));
    // Weak: the callback lives in the channel it updates.
    let channel: Arc<std::sync::OnceLock<std::sync::Weak<Channel>>> = Arc::default();
    let list = ["127.0.0.1:1", "127.0.0.2:1"];
    let mut opts = options(&host);
    let (a2, c2) = (asked.clone(), channel.clone());
    opts.on_resolve_now = Some(Arc::new(move || {
        // Bounded even if it spins: the test fails instead of hanging.
        if a2.fetch_add(1, Ordering::SeqCst) < 1000 {
            if let Some(ch) = c2.get().and_then(std::sync::Weak::upgrade) {
                ch.update_addresses(addrs(&list)).unwrap();
            }
        }
    }));
    let ch = Arc::new(Channel::new(&rt, "", None, opts).unwrap());
    let _ = channel.set(Arc::downgrade(&ch));
    ch.update_addresses(addrs(&list)).unwrap();
    ch.sync().unwrap();
    for a in list {
        ch.report_subconn_state(host.id(a), TransientFailure, "refused")
            .unwrap();
        ch.sync().unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    ch.sync().unwrap();
    assert_eq!(ch.state(), TransientFailure);
    let asked = asked.load(Ordering::SeqCst);
    assert!(asked <= 4, "re-resolution asked {asked} times");
}
