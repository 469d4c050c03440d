//! Lifecycle: policy panics, user-data release, policy switching, close and
//! runtime teardown without leftovers.

use crate::support::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use switchyard::ConnectivityState::*;
use switchyard::*;

const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

struct Panicky;
impl Balancer for Panicky {
    fn update_client_conn_state(
        &mut self,
        _: &mut dyn ClientConn,
        _: ClientConnState,
    ) -> Result<(), String> {
        panic!("policy bug on purpose")
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}
struct PanickyBuilder;
impl Builder for PanickyBuilder {
    fn name(&self) -> &str {
        "lifecycle_panicky"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(Panicky)
    }
}

#[test]
fn a_panicking_policy_fails_its_channel_not_the_loop() {
    registry::register(Arc::new(PanickyBuilder));
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let bad = Channel::new(
        &rt,
        "",
        Some(r#"{"loadBalancingConfig":[{"lifecycle_panicky":{}}]}"#),
        options(&host),
    )
    .unwrap();
    let good = Channel::new(&rt, "", Some(RR), options(&host)).unwrap();
    bad.update_addresses(addrs(&["a:1"])).unwrap();
    bad.sync().unwrap();
    assert_eq!(bad.state(), TransientFailure);
    match bad.reader().try_pick(&PickInfo::default()) {
        Err(PickError::Unavailable(s)) => {
            assert!(
                s.message().contains("panicked") && s.message().contains("policy bug on purpose"),
                "{s}"
            )
        }
        other => panic!("{other:?}"),
    }
    // The loop lives on: the other channel still works.
    good.update_addresses(addrs(&["b:1"])).unwrap();
    good.sync().unwrap();
    report(&good, &host, &["b:1"], Ready);
    assert_eq!(pick_addr(&mut good.reader()), "b:1");
    // A new config brings the bad channel back.
    bad.update_service_config(RR).unwrap();
    bad.sync().unwrap();
    report(&bad, &host, &["a:1"], Ready);
    assert_eq!(pick_addr(&mut bad.reader()), "a:1");
}

struct PanicsOnBuild;
impl Builder for PanicsOnBuild {
    fn name(&self) -> &str {
        "lifecycle_panics_on_build"
    }
    fn build(&self) -> Box<dyn Balancer> {
        panic!("builder bug on purpose")
    }
}

/// A channel whose first steps panic (its target delivers addresses as soon
/// as it is used, so the policy is built as it leaves IDLE) fails alone.
#[test]
fn a_panic_while_a_channel_starts_fails_that_channel_not_the_loop() {
    registry::register(Arc::new(PanicsOnBuild));
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let bad = Channel::new(
        &rt,
        "ipv4:127.0.0.1:1",
        Some(r#"{"loadBalancingConfig":[{"lifecycle_panics_on_build":{}}]}"#),
        options(&host),
    )
    .unwrap();
    bad.connect().unwrap();
    // Twice: the resolver's update is queued while the first is.
    bad.sync().unwrap();
    bad.sync().unwrap();
    assert_eq!(bad.state(), TransientFailure);
    match bad.reader().try_pick(&PickInfo::default()) {
        Err(PickError::Unavailable(s)) => {
            assert!(s.message().contains("builder bug on purpose"), "{s}")
        }
        other => panic!("{other:?}"),
    }
    let good = Channel::new(&rt, "", Some(RR), options(&host)).unwrap();
    good.update_addresses(addrs(&["b:1"])).unwrap();
    good.sync().unwrap();
    report(&good, &host, &["b:1"], Ready);
    assert_eq!(pick_addr(&mut good.reader()), "b:1");
}

/// User data is released exactly once, only after no picker can return it
/// and every pick that returned it is done.
#[test]
fn user_data_outlives_pickers_and_picks() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let released = Arc::new(AtomicUsize::new(0));
    let ch = Channel::new(&rt, "", Some(RR), options(&host)).unwrap();
    let a = Address::new("a:1").with_user_data(Tracked::new("a", &released));
    let b = Address::new("b:1").with_user_data(Tracked::new("b", &released));
    ch.update_addresses(vec![a.clone(), b]).unwrap();
    drop(a);
    ch.sync().unwrap();
    report(&ch, &host, &["a:1", "b:1"], Ready);

    let mut r = ch.reader();
    let held = loop {
        let p = r.try_pick(&PickInfo::default()).unwrap();
        if p.subconn().addr() == "a:1" {
            break p;
        }
    };
    ch.update_addresses(addrs(&["b:1"])).unwrap();
    ch.sync().unwrap();
    r.refresh();
    assert_eq!(pick_addr(&mut r), "b:1");
    assert_eq!(released.load(Ordering::SeqCst), 0, "a pick still holds a");
    let data = held.subconn().user_data().unwrap().clone();
    assert_eq!(data.downcast_ref::<Tracked>().unwrap().name, "a");
    drop(data);
    held.done(&DoneInfo::default());
    assert_eq!(
        released.load(Ordering::SeqCst),
        1,
        "released with its last pick"
    );
    ch.close();
    assert_eq!(
        released.load(Ordering::SeqCst),
        1,
        "b is still referenced by the reader's table"
    );
    drop(r);
    assert_eq!(released.load(Ordering::SeqCst), 2);
}

#[test]
fn switching_policy_and_rejecting_bad_configs() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let ch = Channel::new(&rt, "", None, options(&host)).unwrap();
    ch.update_addresses(addrs(&["a:1", "b:1"])).unwrap();
    ch.sync().unwrap();
    assert_eq!(
        host.events()
            .iter()
            .filter(|e| matches!(e, Ev::Connect(_)))
            .count(),
        1,
        "pick_first tries one address at a time"
    );
    report(&ch, &host, &["a:1"], Ready);

    let e = ch
        .update_service_config(r#"{"loadBalancingConfig":[{"nope":{}}]}"#)
        .unwrap_err();
    assert!(matches!(e, Error::InvalidServiceConfig(m) if m.contains("no supported policies")));
    ch.sync().unwrap();
    assert_eq!(ch.state(), Ready, "a rejected config changes nothing");

    host.take();
    ch.update_service_config(RR).unwrap();
    ch.sync().unwrap();
    let ev = host.take();
    assert!(ev.contains(&Ev::Connect("a:1".into())) && ev.contains(&Ev::Connect("b:1".into())));
    report(&ch, &host, &["a:1", "b:1"], Ready);
    assert!(
        host.take().contains(&Ev::Shutdown("a:1".into())),
        "the old policy's subchannels go once the new one is READY"
    );
    let mut r = ch.reader();
    let picks: std::collections::HashSet<String> = (0..4).map(|_| pick_addr(&mut r)).collect();
    assert_eq!(picks.len(), 2);

    // Same policy again: updated in place, no churn.
    host.take();
    ch.update_service_config(r#"{"loadBalancingPolicy":"ROUND_ROBIN"}"#)
        .unwrap();
    ch.sync().unwrap();
    assert!(host.take().is_empty());
}

#[test]
fn bad_inputs_are_errors() {
    let rt = Runtime::new().unwrap();
    // An invalid config is the channel's state, not the constructor's error
    // (gRPC, A21): TRANSIENT_FAILURE, picks failing with the parse error.
    let bad = Channel::new(&rt, "", Some("{]"), ChannelOptions::default()).unwrap();
    bad.sync().unwrap();
    assert_eq!(bad.state(), TransientFailure);
    // Dropped: wait-for-ready picks fail too (gRPC-Go's failing picker).
    match bad.reader().try_pick(&PickInfo::default()) {
        Err(PickError::Dropped(s)) => assert!(s.message().contains("not valid JSON"), "{s:?}"),
        other => panic!("{:?}", other.map(|p| p.subconn().id())),
    }
    assert!(matches!(
        Channel::new(&rt, "ipv4:nope", None, ChannelOptions::default()),
        Err(Error::InvalidTarget(_))
    ));
    let ch = Channel::new(&rt, "", None, options(&Host::new())).unwrap();
    assert!(matches!(
        ch.report_subconn_state(SubConnId(1), Shutdown, ""),
        Err(Error::InvalidArgument(_))
    ));
    // Unknown subchannel ids are ignored, not a crash.
    ch.report_subconn_state(SubConnId(999), Ready, "").unwrap();
    ch.sync().unwrap();
}

/// A channel created with an invalid config keeps its addresses and fails
/// picks with the parse error; a valid config takes the error's picker away
/// at once (picks queue while the new policy connects), then serves.
#[test]
fn a_valid_config_ends_an_invalid_ones_failure() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let bad = r#"{"methodConfig":[{"waitForReady":1}]}"#;
    let ch = Channel::new(&rt, "", Some(bad), options(&host)).unwrap();
    ch.update_addresses(addrs(&["a:1"])).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), TransientFailure);
    assert!(host.take().is_empty(), "no policy runs, nothing connects");
    let mut r = ch.reader();
    match r.try_pick(&PickInfo::default()) {
        Err(PickError::Dropped(s)) => assert!(
            s.message()
                .contains("methodConfig[0].waitForReady: 1 is not a boolean"),
            "{s:?}"
        ),
        other => panic!("{:?}", other.map(|p| p.subconn().id())),
    }
    assert!(ch
        .update_service_config(r#"{"methodConfig":[{"timeout":1}]}"#)
        .is_err());
    ch.update_service_config(RR).unwrap();
    ch.sync().unwrap();
    assert_ne!(ch.state(), TransientFailure);
    assert!(
        matches!(
            r.try_pick(&PickInfo::default()),
            Err(PickError::NoSubConnAvailable)
        ),
        "queued while connecting, not failed with the old error"
    );
    assert!(host.take().contains(&Ev::Connect("a:1".into())));
    report(&ch, &host, &["a:1"], Ready);
    assert_eq!(pick_addr(&mut r), "a:1");
}

/// A state callback that closes its channel (on the loop thread, before the
/// loop gets to the close command): the channel is SHUTDOWN at once, no
/// other state reaches the callback after it, and waiting for a change
/// inside the callback returns at once instead of blocking the loop.
#[test]
fn a_channel_closed_from_its_state_callback_publishes_nothing_after_shutdown() {
    use std::sync::{Mutex, OnceLock, Weak};
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    let me: Arc<OnceLock<Weak<Channel>>> = Arc::new(OnceLock::new());
    let seen: Arc<Mutex<Vec<(ConnectivityState, ConnectivityState)>>> = Arc::default();
    let mut opts = options(&host);
    let (me2, seen2) = (me.clone(), seen.clone());
    opts.on_state_change = Some(Arc::new(move |s| {
        let Some(ch) = me2.get().and_then(|w| w.upgrade()) else {
            return;
        };
        // Returns at once on the loop thread (it would wait for ever).
        let waited = ch.wait_for_state_change(s, None);
        assert_eq!(waited, None, "nothing changed while it waited");
        if s == Connecting {
            ch.close();
        }
        seen2.lock().unwrap().push((s, ch.state()));
    }));
    let ch = Arc::new(Channel::new(&rt, "", Some(RR), opts).unwrap());
    me.set(Arc::downgrade(&ch)).unwrap();
    ch.update_addresses(addrs(&["a:1", "a:2"])).unwrap();
    // (`sync` on a closed channel does not wait: the loop's close tells.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(ch.is_closed());
    assert_eq!(ch.state(), Shutdown);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [(Connecting, Shutdown), (Shutdown, Shutdown)],
        "after the close only SHUTDOWN"
    );
}

/// A policy whose picker fails with a code the control plane may not give
/// a call (gRFC A54): the pick fails INTERNAL, the message kept; a code it
/// may give (UNAVAILABLE) passes unchanged. gRPC-Go's TestPickerStatusCodes.
struct FailsWith(Code);
impl Balancer for FailsWith {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        _: ClientConnState,
    ) -> Result<(), String> {
        let status = Status::new(self.0, "this error is bad");
        cc.update_state(
            TransientFailure,
            Box::new(switchyard::picker::FailPicker(status)),
        );
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}
struct FailsWithBuilder(&'static str, Code);
impl Builder for FailsWithBuilder {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(FailsWith(self.1))
    }
}

#[test]
fn a_pickers_restricted_status_code_becomes_internal() {
    let rt = Runtime::new().unwrap();
    let host = Host::new();
    for (name, code, want) in [
        ("lifecycle_fails_not_found", Code::NotFound, Code::Internal),
        (
            "lifecycle_fails_unavailable",
            Code::Unavailable,
            Code::Unavailable,
        ),
    ] {
        registry::register(Arc::new(FailsWithBuilder(name, code)));
        let config = format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]}}"#);
        let ch = Channel::new(&rt, "", Some(&config), options(&host)).unwrap();
        ch.update_addresses(addrs(&["a:1"])).unwrap();
        ch.sync().unwrap();
        match ch.reader().try_pick(&PickInfo::default()) {
            Err(PickError::Unavailable(s)) => {
                assert_eq!(s.code(), want, "{s}");
                assert!(s.message().contains("this error is bad"), "{s}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A host whose `connect` holds the event loop until the test opens its
/// gate: what a loop busy with another channel's work looks like.
#[derive(Default)]
struct GatedHost {
    open: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
    holding: std::sync::atomic::AtomicBool,
}

impl GatedHost {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Holds `rt`'s loop in a transport callback of a channel of its own until
/// the returned host's gate opens.
fn hold_the_loop(rt: &Runtime) -> (Arc<GatedHost>, Channel) {
    let gated = Arc::new(GatedHost::default());
    let busy = Channel::new(
        rt,
        "",
        Some(RR),
        ChannelOptions {
            connector: Some(Box::new(ExternalConnector::new(gated.clone()))),
            ..Default::default()
        },
    )
    .unwrap();
    busy.update_addresses(addrs(&["127.0.0.1:1"])).unwrap();
    wait_for("the loop held", || gated.holding.load(Ordering::SeqCst));
    (gated, busy)
}

/// Waits (bounded) until `cond` holds.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

impl HostTransport for GatedHost {
    fn connect(&self, _: &Arc<SubConn>) {
        self.holding.store(true, Ordering::SeqCst);
        let g = self.open.lock().unwrap();
        // Bounded: a test that fails still ends.
        let _ = self
            .cv
            .wait_timeout_while(g, std::time::Duration::from_secs(30), |open| !*open);
    }
    fn shutdown(&self, _: &Arc<SubConn>) {}
}

/// gRPC's GetState(try_to_connect) never blocks: asking an IDLE channel to
/// connect while its loop is busy (here held in another channel's
/// transport callback) returns at once, and the channel leaves IDLE once
/// the loop gets to it. (It used to wait for the loop.)
#[test]
fn get_state_asking_to_connect_does_not_wait_for_a_busy_loop() {
    let rt = Runtime::new().unwrap();
    let (gated, _busy) = hold_the_loop(&rt);
    let idle = Arc::new(
        Channel::new(
            &rt,
            "ipv4:127.0.0.1:1",
            Some(RR),
            ChannelOptions {
                idle_timeout: Some(std::time::Duration::from_secs(60)),
                ..options(&Host::new())
            },
        )
        .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let asker = {
        let idle = idle.clone();
        std::thread::spawn(move || {
            let _ = tx.send(idle.get_state(true));
        })
    };
    let answered = rx.recv_timeout(std::time::Duration::from_secs(10));
    gated.open();
    assert_eq!(answered, Ok(Idle), "GetState(true) waited for the loop");
    asker.join().unwrap();
    idle.sync().unwrap();
    assert_ne!(idle.state(), Idle, "the loop left IDLE once free");
}

/// A host that picks from its channel inside its `shutdown` callback, as
/// an RPC thread might at that moment, and records what it got.
#[derive(Default)]
struct PickingHost {
    channel: std::sync::OnceLock<std::sync::Weak<Channel>>,
    ids: std::sync::Mutex<Vec<(String, SubConnId)>>,
    /// Per shutdown: the subchannel shut and the picks made meanwhile.
    seen: std::sync::Mutex<Vec<(SubConnId, Vec<SubConnId>)>>,
}

impl HostTransport for PickingHost {
    fn create(&self, sc: &Arc<SubConn>) {
        self.ids
            .lock()
            .unwrap()
            .push((sc.addr().to_string(), sc.id()));
    }
    fn connect(&self, _: &Arc<SubConn>) {}
    fn shutdown(&self, sc: &Arc<SubConn>) {
        let Some(ch) = self.channel.get().and_then(|w| w.upgrade()) else {
            return;
        };
        let mut r = ch.reader();
        let picks = (0..20)
            .filter_map(|_| r.try_pick(&PickInfo::default()).ok())
            .map(|p| p.subconn().id())
            .collect();
        self.seen.lock().unwrap().push((sc.id(), picks));
    }
}

/// A host is told to close a removed address's transport only once the
/// picker without it is published: a pick made then never gets it (it used
/// to be told first, and the old picker kept handing the subchannel out).
#[test]
fn a_host_shuts_a_transport_down_after_the_picker_without_it_is_out() {
    for config in [RR, r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#] {
        let rt = Runtime::new().unwrap();
        let host = Arc::new(PickingHost::default());
        let ch = Arc::new(
            Channel::new(
                &rt,
                "",
                Some(config),
                ChannelOptions {
                    connector: Some(Box::new(ExternalConnector::new(host.clone()))),
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        host.channel.set(Arc::downgrade(&ch)).unwrap();
        ch.update_addresses(addrs(&["10.0.0.1:1", "10.0.0.2:1"]))
            .unwrap();
        ch.sync().unwrap();
        for (_, id) in host.ids.lock().unwrap().clone() {
            ch.report_subconn_state(id, Ready, "up").unwrap();
        }
        ch.sync().unwrap();
        assert_eq!(ch.state(), Ready);
        // Remove the address a pick gets now (pick_first's only one).
        let used = ch.reader().try_pick(&PickInfo::default()).unwrap();
        let used = used.subconn().addr().to_string();
        let other = ["10.0.0.1:1", "10.0.0.2:1"]
            .into_iter()
            .find(|a| *a != used)
            .unwrap();
        ch.update_addresses(addrs(&[other])).unwrap();
        ch.sync().unwrap();
        let seen = host.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{config}: one transport shut");
        let (shut, picks) = &seen[0];
        if config == RR {
            // The other endpoint is READY: every pick gets it.
            assert_eq!(picks.len(), 20, "{config}: picks failed");
        }
        assert!(
            picks.iter().all(|p| p != shut),
            "{config}: a pick got the subchannel being shut: {picks:?}"
        );
    }
}

/// A channel made with an invalid service config is TRANSIENT_FAILURE from
/// the start, before its loop has taken it up (here the loop is held in
/// another channel's transport callback); it used to read IDLE until then.
#[test]
fn an_invalid_config_is_transient_failure_from_the_start() {
    let rt = Runtime::new().unwrap();
    let (gated, _busy) = hold_the_loop(&rt);
    let bad = Arc::new(Channel::new(&rt, "", Some("{]"), options(&Host::new())).unwrap());
    let state = bad.state();
    let pick = bad.reader().try_pick(&PickInfo::default()).err();
    // Nothing changes when the loop takes it up: a waiter from
    // TRANSIENT_FAILURE does not wake (it did, for a TF -> TF "change").
    let waiter = {
        let bad = bad.clone();
        std::thread::spawn(move || {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
            bad.wait_for_state_change(TransientFailure, Some(until))
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    gated.open();
    assert_eq!(waiter.join().unwrap(), None, "woke for no change");
    assert_eq!(state, TransientFailure);
    // Dropped, wait-for-ready or not, as the loop's own picker for it.
    match pick {
        Some(PickError::Dropped(s)) => {
            assert!(s.message().contains("invalid service config"), "{s}")
        }
        other => panic!("{other:?}"),
    }
    bad.sync().unwrap();
    assert_eq!(bad.state(), TransientFailure);
}

/// A host that closes its channel from its `connect` callback (on the loop
/// thread: SHUTDOWN is published at once, the loop's close comes after the
/// callback) and takes its time shutting transports down.
#[derive(Default)]
struct ClosingHost {
    channel: std::sync::OnceLock<std::sync::Weak<Channel>>,
    shut_down: std::sync::atomic::AtomicBool,
}

impl HostTransport for ClosingHost {
    fn connect(&self, _: &Arc<SubConn>) {
        if let Some(ch) = self.channel.get().and_then(|w| w.upgrade()) {
            ch.close();
        }
    }
    fn shutdown(&self, _: &Arc<SubConn>) {
        std::thread::sleep(std::time::Duration::from_millis(200));
        self.shut_down.store(true, Ordering::SeqCst);
    }
}

/// A closer that finds the channel already closing waits until the loop
/// is done with it, as the first closer does: here the first closed from a
/// loop callback (SHUTDOWN published at once), and the second, on another
/// thread, used to return before the loop had shut the transports down.
#[test]
fn a_second_closer_waits_for_the_loop_to_finish_closing() {
    let rt = Runtime::new().unwrap();
    let host = Arc::new(ClosingHost::default());
    let ch = Arc::new(
        Channel::new(
            &rt,
            "",
            Some(RR),
            ChannelOptions {
                connector: Some(Box::new(ExternalConnector::new(host.clone()))),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    host.channel.set(Arc::downgrade(&ch)).unwrap();
    ch.update_addresses(addrs(&["127.0.0.1:1"])).unwrap();
    wait_for("the first close", || ch.is_closed());
    ch.close();
    assert!(
        host.shut_down.load(Ordering::SeqCst),
        "close returned before the loop shut the transport down"
    );
}
