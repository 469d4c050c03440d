//! The seed design's seven flows, each end to end through a channel:
//! register → build → address update → subchannel states → picks → done → close.

use crate::support::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;

const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// Flow 1: a policy registered by name is found by that name exactly, the last
/// registration wins, and a channel selects it from its service config.
#[test]
fn flow1_registration() {
    struct Named(&'static str, u32);
    impl Builder for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn build(&self) -> Box<dyn Balancer> {
            switchyard::registry::get("round_robin").unwrap().build()
        }
        fn parse_config(&self, _: &serde_json::Value) -> Result<Option<LbConfig>, String> {
            Ok(Some(Arc::new(self.1)))
        }
    }
    registry::register(Arc::new(Named("flow1_policy", 1)));
    registry::register(Arc::new(Named("flow1_policy", 2)));
    // Names match exactly, as gRPC's registries do: another case is
    // another policy.
    registry::register(Arc::new(Named("Flow1_Policy", 3)));
    let config_of = |name: &str| {
        let b = registry::get(name).expect("registered");
        let cfg = b.parse_config(&serde_json::json!({})).unwrap().unwrap();
        *cfg.downcast_ref::<u32>().unwrap()
    };
    assert_eq!(config_of("flow1_policy"), 2, "last registration wins");
    assert_eq!(config_of("Flow1_Policy"), 3);
    assert!(registry::get("FLOW1_POLICY").is_none());
    assert!(registry::get("flow1_unknown").is_none());
    let names = registry::names();
    assert!(
        names.contains(&"flow1_policy".to_string()) && names.contains(&"pick_first".to_string())
    );
    assert_eq!(
        names
            .iter()
            .filter(|n| n.as_str() == "flow1_policy")
            .count(),
        1
    );

    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let ch = Channel::new(
        &rt,
        "",
        Some(r#"{"loadBalancingConfig":[{"flow1_policy":{}}]}"#),
        options(&host),
    )
    .unwrap();
    ch.update_addresses(addrs(&["127.0.0.1:1"])).unwrap();
    host.wait("connect", |e| {
        e.contains(&Ev::Connect("127.0.0.1:1".into()))
    });
}

/// Flow 2: creating a channel parses the config and builds the policy on the
/// first resolver result; the channel starts IDLE and picks queue until then.
#[test]
fn flow2_initialization() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let ch = Channel::new(&rt, "", Some(RR), options(&host)).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), Idle);
    assert!(
        host.events().is_empty(),
        "nothing connects before addresses arrive"
    );
    let mut r = ch.reader();
    assert_eq!(
        r.try_pick(&PickInfo::default()).unwrap_err(),
        PickError::NoSubConnAvailable
    );

    ch.update_addresses(addrs(&["a:1", "b:1"])).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), Connecting);
    let ev = host.events();
    for a in ["a:1", "b:1"] {
        assert!(
            ev.contains(&Ev::Create(a.into())) && ev.contains(&Ev::Connect(a.into())),
            "{ev:?}"
        );
    }
}

/// Flow 3: address updates are incremental and publish one new picker.
#[test]
fn flow3_incremental_address_update() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let ch = Channel::new(&rt, "", Some(RR), options(&host)).unwrap();
    ch.update_addresses(addrs(&["a:1", "b:1", "c:1"])).unwrap();
    ch.sync().unwrap();
    report(&ch, &host, &["a:1", "b:1", "c:1"], Ready);
    let (ida, idb) = (host.id("a:1"), host.id("b:1"));
    host.take();
    let generation = ch.picker_generation();

    ch.update_addresses(addrs(&["a:1", "b:1", "d:1"])).unwrap();
    ch.sync().unwrap();
    let ev = host.take();
    assert_eq!(
        ev,
        vec![
            Ev::Shutdown("c:1".into()),
            Ev::Create("d:1".into()),
            Ev::Connect("d:1".into())
        ],
        "kept addresses untouched, removed shut down, new connected"
    );
    assert_eq!((host.id("a:1"), host.id("b:1")), (ida, idb));
    assert_eq!(
        ch.picker_generation(),
        generation + 1,
        "exactly one new picker"
    );
    let mut r = ch.reader();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..200 {
        *seen.entry(pick_addr(&mut r)).or_default() += 1;
    }
    assert_eq!(seen.len(), 2);
    assert_eq!(seen["a:1"], 100);
    assert_eq!(seen["b:1"], 100);

    report(&ch, &host, &["d:1"], Ready);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *seen.entry(pick_addr(&mut r)).or_default() += 1;
    }
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), vec![100; 3]);
}

/// Flow 4: a subchannel connects only from IDLE, goes TRANSIENT_FAILURE on a
/// failed attempt, back to IDLE after exactly its backoff, and is reconnected.
#[test]
fn flow4_subchannel_lifecycle_with_backoff() {
    let clock = Arc::new(ManualClock::new());
    let rt = Runtime::with_config(RuntimeConfig {
        clock: clock.clone(),
        seed: Some(7),
    })
    .unwrap();
    let host = Host::new();
    let states = Arc::new(Mutex::new(Vec::new()));
    let s2 = states.clone();
    let mut opts = options(&host);
    opts.on_state_change = Some(Arc::new(move |s| s2.lock().unwrap().push(s)));
    let ch = Channel::new(&rt, "", Some(RR), opts).unwrap();
    ch.update_addresses(addrs(&["a:1"])).unwrap();
    ch.sync().unwrap();
    assert_eq!(host.count(&Ev::Connect("a:1".into())), 1);

    // A second connect while CONNECTING is a no-op.
    ch.connect().unwrap();
    ch.sync().unwrap();
    assert_eq!(host.count(&Ev::Connect("a:1".into())), 1);

    report(&ch, &host, &["a:1"], TransientFailure);
    assert_eq!(ch.state(), TransientFailure);
    clock.advance(Duration::from_millis(999));
    ch.sync().unwrap();
    assert_eq!(
        host.count(&Ev::Connect("a:1".into())),
        1,
        "still backing off"
    );
    clock.advance(Duration::from_millis(1));
    host.wait("reconnect after 1 s", |e| {
        e.iter()
            .filter(|e| **e == Ev::Connect("a:1".into()))
            .count()
            == 2
    });
    // Sticky: the channel stays TRANSIENT_FAILURE while the retry runs.
    assert_eq!(ch.state(), TransientFailure);

    report(&ch, &host, &["a:1"], Ready);
    assert_eq!(ch.state(), Ready);
    // Connection lost: READY → IDLE, and round_robin reconnects at once.
    report(&ch, &host, &["a:1"], Idle);
    host.wait("reconnect after loss", |e| {
        e.iter()
            .filter(|e| **e == Ev::Connect("a:1".into()))
            .count()
            == 3
    });
    assert_eq!(
        *states.lock().unwrap(),
        vec![Connecting, TransientFailure, Ready, Connecting]
    );
}

/// Flow 5: picks are spread exactly, done feeds back, removed addresses vanish.
#[test]
fn flow5_pick_distribution_and_done() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let ch = Channel::new(&rt, "", Some(RR), options(&host)).unwrap();
    ch.update_addresses(addrs(&["a:1", "b:1", "c:1"])).unwrap();
    ch.sync().unwrap();
    report(&ch, &host, &["a:1", "b:1", "c:1"], Ready);
    let mut r = ch.reader();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let p = r
            .pick(&PickInfo::default(), &PickOptions::default())
            .unwrap();
        *seen.entry(p.subconn().addr().to_string()).or_default() += 1;
        p.done(&DoneInfo {
            latency: Duration::from_micros(5),
            ..Default::default()
        });
    }
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100]
    );

    ch.update_addresses(addrs(&["a:1", "c:1"])).unwrap();
    ch.sync().unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *seen.entry(pick_addr(&mut r)).or_default() += 1;
    }
    assert_eq!(seen.get("b:1"), None);
    assert_eq!((seen["a:1"], seen["c:1"]), (150, 150));
}

/// Flow 6: subchannel states aggregate into the channel's state; waiters on
/// the state and queued picks wake when it changes.
#[test]
fn flow6_state_changes_wake_waiters() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let ch = Arc::new(Channel::new(&rt, "", Some(RR), options(&host)).unwrap());
    ch.update_addresses(addrs(&["a:1", "b:1"])).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), Connecting);

    let c2 = ch.clone();
    let waiter = std::thread::spawn(move || {
        c2.wait_for_state_change(Connecting, Some(Instant::now() + Duration::from_secs(5)))
    });
    let c3 = ch.clone();
    let picker = std::thread::spawn(move || {
        let mut r = c3.reader();
        let p = r.pick(
            &PickInfo::default(),
            &PickOptions {
                deadline: Some(Instant::now() + Duration::from_secs(5)),
                wait_for_ready: false,
            },
        );
        p.map(|p| p.subconn().addr().to_string())
    });
    std::thread::sleep(Duration::from_millis(30));
    report(&ch, &host, &["a:1"], TransientFailure);
    assert_eq!(
        ch.state(),
        Connecting,
        "one TF child of two: still connecting"
    );
    report(&ch, &host, &["b:1"], Ready);
    assert_eq!(waiter.join().unwrap(), Some(Ready));
    assert_eq!(picker.join().unwrap().unwrap(), "b:1");
    assert_eq!(ch.state(), Ready);
    assert_eq!(
        ch.wait_for_state_change(Ready, Some(Instant::now() + Duration::from_millis(20))),
        None
    );
}

/// A policy READY from its first update that, asked to exit idle
/// (`Channel::connect`), goes TRANSIENT_FAILURE and connects a new
/// subchannel; hearing it CONNECTING (in the same loop turn) it is READY
/// again. Every connect flaps so.
#[derive(Default)]
struct Flapping(Option<Arc<SubConn>>, Option<Address>);
impl Balancer for Flapping {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        self.1 = Some(state.addresses[0].clone());
        cc.update_state(Ready, Box::new(picker::QueuePicker));
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, _: SubConnId, s: &SubConnState) {
        if s.state == Connecting {
            cc.update_state(Ready, Box::new(picker::QueuePicker));
        }
    }
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        cc.update_state(TransientFailure, Box::new(picker::QueuePicker));
        if let Some(old) = self.0.take() {
            cc.shutdown_subconn(old.id());
        }
        if let Some(Ok(sc)) = self.1.clone().map(|a| cc.new_subconn(a)) {
            cc.connect(sc.id());
            self.0 = Some(sc);
        }
    }
    fn close(&mut self, _: &mut dyn ClientConn) {}
}
struct FlappingBuilder;
impl Builder for FlappingBuilder {
    fn name(&self) -> &str {
        "flows_test_flapping"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::<Flapping>::default()
    }
}

/// gRPC's WaitForStateChange returns on any change after it is called, even
/// one undone before the waiter looks: READY -> TRANSIENT_FAILURE -> READY
/// in one loop turn wakes a waiter from READY, which may see READY again.
#[test]
fn a_change_undone_at_once_still_ends_a_wait() {
    registry::register(Arc::new(FlappingBuilder));
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"loadBalancingConfig":[{"flows_test_flapping":{}}]}"#;
    let host = Host::new();
    let ch = Arc::new(Channel::new(&rt, "", Some(cfg), options(&host)).unwrap());
    ch.update_addresses(addrs(&["a:1"])).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), Ready);
    let c2 = ch.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        tx.send(()).unwrap();
        c2.wait_for_state_change(Ready, Some(Instant::now() + Duration::from_secs(3)))
    });
    rx.recv().unwrap();
    // Flap until the waiter returns: a flap before it began to wait is one
    // it need not see (bounded by its 3 s deadline).
    while !waiter.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
        ch.connect().unwrap();
        ch.sync().unwrap();
    }
    // It wakes: to TRANSIENT_FAILURE if it looks mid-flap, to READY (the
    // change undone) if after.
    let woke = waiter.join().unwrap();
    assert!(
        matches!(woke, Some(Ready | TransientFailure)),
        "the flap went unseen: {woke:?}"
    );
    // Without a change, a wait from READY ends at its deadline.
    assert_eq!(
        ch.wait_for_state_change(Ready, Some(Instant::now() + Duration::from_millis(20))),
        None
    );
}

/// Flow 7: close releases everything: subchannels shut down once each,
/// waiting picks wake with CLOSED, later picks fail cleanly, user data released.
#[test]
fn flow7_close() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let released = Arc::new(AtomicUsize::new(0));
    let ch = Arc::new(Channel::new(&rt, "", Some(RR), options(&host)).unwrap());
    let list: Vec<Address> = ["a:1", "b:1"]
        .iter()
        .map(|a| Address::new(*a).with_user_data(Tracked::new(a, &released)))
        .collect();
    ch.update_addresses(list).unwrap();
    ch.sync().unwrap();
    let c2 = ch.clone();
    let waiting = std::thread::spawn(move || {
        c2.reader()
            .pick(&PickInfo::default(), &PickOptions::default())
            .map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(30));
    ch.close();
    assert_eq!(waiting.join().unwrap().unwrap_err(), PickError::Closed);
    ch.close();
    assert_eq!(ch.state(), Shutdown);
    let ev = host.events();
    for a in ["a:1", "b:1"] {
        assert_eq!(
            ev.iter().filter(|e| **e == Ev::Shutdown(a.into())).count(),
            1,
            "{ev:?}"
        );
    }
    let mut r = ch.reader();
    assert_eq!(
        r.try_pick(&PickInfo::default()).unwrap_err(),
        PickError::Closed
    );
    assert_eq!(ch.update_addresses(addrs(&["c:1"])), Err(Error::Closed));
    drop(r);
    assert_eq!(
        released.load(Ordering::SeqCst),
        2,
        "every user datum released exactly once"
    );
}
