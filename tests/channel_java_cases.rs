//! grpc-java's InternalSubchannelTest and the channel-level parts of
//! ManagedChannelImplTest (core/src/test/java/io/grpc/internal/), ported onto
//! switchyard's Channel / started calls with real echo servers and raw TCP
//! listeners on 127.0.0.1. Java's mock LoadBalancer + helper is a scripted
//! policy here (`Script`): the test queues operations (new subchannel,
//! connect, shut down) and the picker to publish, and the policy applies
//! them in its `work` callback (`WorkScheduler` + `Channel::sync`). Java's
//! FakeNameResolverFactory is a push resolver (`Push`).
//!
//! Not repeated (already pinned elsewhere): the connect / backoff sequence
//! over an address list, backoff reset after READY, close while connecting /
//! in backoff (connect_backoff_go_cases.rs, core_lb_e2e_cases.rs); READY ->
//! IDLE without reconnecting until asked (pick_first_idle_on_disconnect,
//! ready_to_idle_then_connect_gives_connecting); a drained subchannel's
//! calls in flight (managed/drain.rs); close cancelling pending and active
//! calls and a call after close failing CANCELLED (cancel_deadline_go_cases,
//! managed/drain.rs: gRPC-Go's `Close`; switchyard has no graceful
//! `shutdown()` as Java's, see the report); get_state(true) on an IDLE
//! channel (managed/idle.rs); resolver errors before / after a good result
//! (channel_states_go_cases.rs, idle_service_config_java_cases.rs).

#[path = "common/mod.rs"]
mod common;
#[path = "common/driven_lb.rs"]
mod driven_lb;

use common::*;
use driven_lb::{lb, Core, Driven};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use switchyard::picker::{DropPicker, FailPicker, QueuePicker, SinglePicker};
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverClientConn, ResolverState};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

const ECHO: &str = "/echo.Echo/Unary";

// ------------------------------------------------------------ push resolver

trait Push {
    /// The channel's client conn, once it has built the resolver.
    fn cc(&self) -> ResolverClientConn;
    fn push(&self, addrs: &[SocketAddr]);
}

impl Push for ManualResolver {
    fn cc(&self) -> ResolverClientConn {
        wait_until("the resolver built", || self.client_conn().is_some());
        self.client_conn().unwrap()
    }
    fn push(&self, addrs: &[SocketAddr]) {
        let endpoints = addrs
            .iter()
            .map(|a| Endpoint::from(Address::new(a.to_string())))
            .collect();
        self.cc()
            .update(ResolverState {
                endpoints,
                service_config: None,
            })
            .unwrap();
    }
}

fn push_resolver(scheme: &'static str) -> ManualResolver {
    let seen = ManualResolver::new(scheme);
    resolver::register(Arc::new(seen.clone()));
    seen
}

// ------------------------------------------------------------ scripted policy

#[derive(Clone)]
enum Publish {
    /// (state, QueuePicker)
    Queue(ConnectivityState),
    /// (state, FailPicker(status))
    Fail(ConnectivityState, Status),
    /// (READY, DropPicker(status))
    Drop(Status),
    /// (READY, SinglePicker(subchannel k)), whatever k's state
    Pick(usize),
}

#[derive(Clone, Copy)]
enum Op {
    /// A new subchannel for the `i`th resolved address (appended to the list).
    New(usize),
    Connect(usize),
    Shutdown(usize),
    /// The policy panics (Java's `channel.panic(...)`).
    Panic,
}

#[derive(Default)]
struct Script {
    publish: Mutex<Option<Publish>>,
    ops: Mutex<Vec<Op>>,
    core: Core,
    exit_idles: AtomicUsize,
    updates: AtomicUsize,
}

impl Deref for Script {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Script {
    /// Queues `ops` and the picker to publish, and has the policy run them
    /// (returns once it has).
    fn run(&self, ch: &Channel, ops: &[Op], publish: Option<Publish>) {
        self.ops.lock().unwrap().extend_from_slice(ops);
        if publish.is_some() {
            *self.publish.lock().unwrap() = publish;
        }
        self.kick(ch);
    }
}

impl Driven for Script {
    fn on_update(&self, _: &mut dyn ClientConn, _: bool) {
        self.updates.fetch_add(1, Ordering::SeqCst);
        if self.publish.lock().unwrap().is_none() {
            *self.publish.lock().unwrap() = Some(Publish::Queue(Connecting));
        }
    }
    fn apply(&self, cc: &mut dyn ClientConn) {
        let ops: Vec<Op> = self.ops.lock().unwrap().drain(..).collect();
        for op in ops {
            match op {
                Op::New(i) => {
                    let addr = self.addrs.lock().unwrap()[i].clone();
                    let sc = cc.new_subconn(addr).unwrap();
                    self.subconns.lock().unwrap().push(sc);
                }
                Op::Connect(k) => cc.connect(self.sc(k).id()),
                Op::Shutdown(k) => cc.shutdown_subconn(self.sc(k).id()),
                Op::Panic => panic!("Simulated uncaught exception"),
            }
        }
        let publish = self.publish.lock().unwrap().clone();
        match publish {
            None => {}
            Some(Publish::Queue(s)) => cc.update_state(s, Box::new(QueuePicker)),
            Some(Publish::Fail(s, status)) => cc.update_state(s, Box::new(FailPicker(status))),
            Some(Publish::Drop(status)) => cc.update_state(Ready, Box::new(DropPicker(status))),
            Some(Publish::Pick(k)) => {
                cc.update_state(Ready, Box::new(SinglePicker::new(self.sc(k))))
            }
        }
    }
    fn on_exit_idle(&self) {
        self.exit_idles.fetch_add(1, Ordering::SeqCst);
    }
}

fn script(name: &'static str) -> Arc<Script> {
    driven_lb::register(name, Script::default())
}

// ------------------------------------------------------------ helpers

fn backend() -> TestServer {
    TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap()
}

fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// A started echo call (10 s deadline); its result comes on the receiver.
fn start(ch: &Channel, wait_for_ready: bool) -> Receiver<CallResult> {
    let opts = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        wait_for_ready: Some(wait_for_ready),
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel();
    ch.unary_start(ECHO, b"ping", &opts, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    rx
}

fn result(rx: &Receiver<CallResult>, what: &str) -> CallResult {
    rx.recv_timeout(Duration::from_secs(8))
        .unwrap_or_else(|_| panic!("{what}: no result in time"))
}

fn still_pending(rx: &Receiver<CallResult>, what: &str) {
    match rx.recv_timeout(Duration::from_millis(300)) {
        Err(_) => {}
        Ok(r) => panic!("{what}: should still wait, ended with {r:?}"),
    }
}

/// A raw listener on 127.0.0.1: counts accepted connections; `silent`
/// keeps each open (reading) and records when the client closes it,
/// otherwise each is closed at once (a failed attempt).
struct Raw {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    client_closed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Raw {
    fn start(silent: bool) -> Raw {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let client_closed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, c, st) = (accepted.clone(), client_closed.clone(), stop.clone());
        thread::spawn(move || {
            while !st.load(Ordering::Acquire) {
                match l.accept() {
                    Ok((s, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        if silent {
                            let (c, st) = (c.clone(), st.clone());
                            thread::spawn(move || read_until_eof(s, &c, &st));
                        } else {
                            drop(s);
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Raw {
            addr,
            accepted,
            client_closed,
            stop,
        }
    }
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn client_closed(&self) -> usize {
        self.client_closed.load(Ordering::SeqCst)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn read_until_eof(mut s: TcpStream, closed: &AtomicUsize, stop: &AtomicBool) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Acquire) {
        match s.read(&mut buf) {
            Ok(0) => {
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

fn fast_backoff(initial_ms: u64, max_ms: u64) -> ChannelOptions {
    let mut o = plaintext();
    o.backoff.initial = Duration::from_millis(initial_ms);
    o.backoff.max = Duration::from_millis(max_ms);
    o
}

// ====================================================================
// ManagedChannelImplTest: pickers and queued calls
// ====================================================================

/// updateBalancingStateDoesUpdatePicker: a call queued before any picker;
/// the first picker picks a subchannel that never connected (IDLE), so the
/// call stays buffered and nothing is sent; the next picker picks a READY
/// subchannel and the call goes there.
#[test]
fn a_pick_of_a_subchannel_not_ready_waits_for_the_next_picker() {
    let b = backend();
    let s = script("java_ch_pick_not_ready");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", b.addr()),
        Some(&lb("java_ch_pick_not_ready")),
        plaintext(),
    )
    .unwrap();
    // Fail-fast, as Java's CallOptions.DEFAULT.
    let call = start(&ch, false);
    s.run(&ch, &[Op::New(0), Op::New(0), Op::Connect(1)], None);
    s.wait_sc_state(1, Ready);
    still_pending(&call, "queued call with a queueing picker");
    // A picker whose subchannel (0) was never connected.
    s.run(&ch, &[], Some(Publish::Pick(0)));
    still_pending(&call, "call picked onto an IDLE subchannel");
    assert_eq!(b.requests(), 0, "nothing may be sent");
    s.run(&ch, &[], Some(Publish::Pick(1)));
    let r = result(&call, "call after the READY picker");
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(b.requests(), 1);
}

/// subtestFailRpcFromBalancer(waitForReady=false/true, drop=false):
/// failFastRpcFailFromErrorFromBalancer and
/// waitForReadyRpcImmuneFromErrorFromBalancer. A picker that fails picks
/// (published with READY, as Java's test does) fails the queued fail-fast
/// call and a new one with exactly its status; wait-for-ready calls, queued
/// or new, keep waiting.
#[test]
fn an_error_picker_fails_fail_fast_calls_with_its_status_and_wait_for_ready_ones_wait() {
    let s = script("java_ch_error_picker");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", free_addr()),
        Some(&lb("java_ch_error_picker")),
        plaintext(),
    )
    .unwrap();
    let ff = start(&ch, false);
    let wfr = start(&ch, true);
    s.run(&ch, &[], None);
    still_pending(&ff, "fail-fast call before the error picker");
    let status = Status::new(Code::Unavailable, "for test");
    s.run(&ch, &[], Some(Publish::Fail(Ready, status.clone())));
    let e = result(&ff, "queued fail-fast").unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unavailable, "for test"));
    still_pending(&wfr, "queued wait-for-ready");
    let e = result(&start(&ch, false), "new fail-fast").unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unavailable, "for test"));
    let wfr2 = start(&ch, true);
    still_pending(&wfr2, "new wait-for-ready");
    // A non-UNAVAILABLE error status is passed through as it is too.
    let other = Status::new(Code::ResourceExhausted, "quota");
    s.run(&ch, &[], Some(Publish::Fail(TransientFailure, other)));
    let e = result(&start(&ch, false), "fail-fast, other status").unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::ResourceExhausted, "quota"));
    still_pending(&wfr, "queued wait-for-ready, other status");
    ch.close();
    assert_eq!(
        result(&wfr, "wfr at close").unwrap_err().code(),
        Code::Cancelled
    );
    assert_eq!(
        result(&wfr2, "wfr2 at close").unwrap_err().code(),
        Code::Cancelled
    );
}

/// subtestFailRpcFromBalancer(drop=true): failFastRpcFailFromDropFromBalancer
/// and waitForReadyRpcFailFromDropFromBalancer. A dropping picker fails
/// every call with its status, wait-for-ready too, queued or new.
#[test]
fn a_drop_picker_fails_every_call_wait_for_ready_too() {
    let s = script("java_ch_drop_picker");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", free_addr()),
        Some(&lb("java_ch_drop_picker")),
        plaintext(),
    )
    .unwrap();
    let ff = start(&ch, false);
    let wfr = start(&ch, true);
    s.run(&ch, &[], None);
    let status = Status::new(Code::Unavailable, "for test");
    s.run(&ch, &[], Some(Publish::Drop(status)));
    for (rx, what) in [
        (ff, "queued fail-fast"),
        (wfr, "queued wait-for-ready"),
        (start(&ch, false), "new fail-fast"),
        (start(&ch, true), "new wait-for-ready"),
    ] {
        let e = result(&rx, what).unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unavailable, "for test"),
            "{what}"
        );
    }
}

/// firstResolvedServerFailedToConnect: a fail-fast call made before the
/// resolver's first result; the first address refuses, the second serves:
/// the call is served by the second, never failed.
#[test]
fn a_call_queued_before_resolution_goes_to_the_second_address_when_the_first_refuses() {
    let b = backend();
    let seen = push_resolver("java-ch-first-refused");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "java-ch-first-refused:///x", None, plaintext()).unwrap();
    let call = start(&ch, false);
    seen.cc();
    still_pending(&call, "before resolution");
    seen.push(&[free_addr(), b.addr()]);
    let r = result(&call, "the queued call");
    assert!(r.is_ok(), "{r:?}");
}

/// allServersFailedToConnect: both addresses refuse; the queued fail-fast
/// call fails UNAVAILABLE with the last connection error, the queued
/// wait-for-ready call stays; once a server listens on the second address
/// it is served.
#[test]
fn all_addresses_failing_fail_the_queued_fail_fast_call_and_wait_for_ready_waits() {
    let seen = push_resolver("java-ch-all-fail");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "java-ch-all-fail:///x", None, fast_backoff(100, 300)).unwrap();
    let wfr = start(&ch, true);
    let ff = start(&ch, false);
    seen.cc();
    let (a1, a2) = (free_addr(), free_addr());
    seen.push(&[a1, a2]);
    let e = result(&ff, "fail-fast").unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains(&a2.port().to_string()),
        "the last error (the second address's): {e:?}"
    );
    still_pending(&wfr, "wait-for-ready");
    let b = TestServer::start(Listen::Tcp(a2), ServerOptions::default()).unwrap();
    let r = result(&wfr, "wait-for-ready once a server listens");
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(b.requests(), 1);
}

// ====================================================================
// ManagedChannelImplTest: getState / notifyWhenStateChanged
// ====================================================================

/// getState_loadBalancerSupportsChannelState + notifyWhenStateChanged: the
/// state is what the policy published; a waiter on CONNECTING wakes when
/// the policy publishes IDLE; a wait from a state other than the current
/// one returns at once.
#[test]
fn state_waiters_follow_the_policys_state() {
    let s = script("java_ch_notify");
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(
        Channel::new(
            &rt,
            &format!("ipv4:{}", free_addr()),
            Some(&lb("java_ch_notify")),
            plaintext(),
        )
        .unwrap(),
    );
    ch.connect().unwrap();
    s.run(&ch, &[], None);
    assert_eq!(ch.get_state(false), Connecting);
    s.run(
        &ch,
        &[],
        Some(Publish::Fail(TransientFailure, Status::unavailable("x"))),
    );
    assert_eq!(ch.get_state(false), TransientFailure);
    s.run(&ch, &[], Some(Publish::Queue(Connecting)));
    assert_eq!(ch.get_state(false), Connecting);
    assert_eq!(
        ch.wait_for_state_change(
            Connecting,
            Some(Instant::now() + Duration::from_millis(200))
        ),
        None
    );
    let c2 = ch.clone();
    let waiter = thread::spawn(move || {
        c2.wait_for_state_change(Connecting, Some(Instant::now() + Duration::from_secs(5)))
    });
    thread::sleep(Duration::from_millis(100));
    assert!(!waiter.is_finished());
    s.run(&ch, &[], Some(Publish::Queue(Idle)));
    assert_eq!(waiter.join().unwrap(), Some(Idle));
    // From a state it is no longer in: at once.
    let t = Instant::now();
    assert_eq!(
        ch.wait_for_state_change(Connecting, Some(Instant::now() + Duration::from_secs(5))),
        Some(Idle)
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}

/// updateBalancingStateWithShutdownShouldBeIgnored: a policy publishing
/// SHUTDOWN does not change the channel's state (Java's LbHelperImpl
/// `updateBalancingState`: `if (newState != SHUTDOWN)
/// channelStateManager.gotoState(newState)`), and no state waiter wakes.
/// SHUTDOWN is the channel's own, final state, reached only by close.
#[test]
fn a_policy_publishing_shutdown_does_not_make_the_channel_shutdown() {
    let s = script("java_ch_policy_shutdown");
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(
        Channel::new(
            &rt,
            &format!("ipv4:{}", free_addr()),
            Some(&lb("java_ch_policy_shutdown")),
            plaintext(),
        )
        .unwrap(),
    );
    ch.connect().unwrap();
    s.run(&ch, &[], None);
    assert_eq!(ch.get_state(false), Connecting);
    let c2 = ch.clone();
    let waiter = thread::spawn(move || {
        c2.wait_for_state_change(
            Connecting,
            Some(Instant::now() + Duration::from_millis(800)),
        )
    });
    thread::sleep(Duration::from_millis(100));
    s.run(&ch, &[], Some(Publish::Queue(Shutdown)));
    let seen = (ch.get_state(false), ch.is_closed());
    let woke = waiter.join().unwrap();
    assert_eq!(
        (seen, woke),
        ((Connecting, false), None),
        "(state, closed) after the policy said SHUTDOWN, and what a CONNECTING waiter saw"
    );
}

/// channelStateWhenChannelShutdown: a waiter on CONNECTING wakes when the
/// channel shuts down, which is SHUTDOWN from then on whatever the policy
/// publishes.
#[test]
fn a_state_waiter_wakes_with_shutdown_when_the_channel_closes() {
    let s = script("java_ch_waiter_close");
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(
        Channel::new(
            &rt,
            &format!("ipv4:{}", free_addr()),
            Some(&lb("java_ch_waiter_close")),
            plaintext(),
        )
        .unwrap(),
    );
    ch.connect().unwrap();
    s.run(&ch, &[], None);
    assert_eq!(ch.get_state(false), Connecting);
    let c2 = ch.clone();
    let waiter = thread::spawn(move || {
        c2.wait_for_state_change(Connecting, Some(Instant::now() + Duration::from_secs(5)))
    });
    thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    ch.close();
    assert_eq!(waiter.join().unwrap(), Some(Shutdown));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(ch.get_state(false), Shutdown);
    assert_eq!(ch.get_state(true), Shutdown);
}

/// getState_withRequestConnect_IdleWithLbRunning: the channel is in use,
/// its policy says IDLE; getState(true) returns IDLE and asks the policy
/// to connect (requestConnection / exit_idle); getState(false) does not.
/// getState_withRequestConnect: once the policy says CONNECTING,
/// getState(true) asks nothing more.
#[test]
fn get_state_true_asks_an_idle_policy_to_connect() {
    let s = script("java_ch_getstate_idle");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", free_addr()),
        Some(&lb("java_ch_getstate_idle")),
        plaintext(),
    )
    .unwrap();
    ch.connect().unwrap();
    s.run(&ch, &[], Some(Publish::Queue(Idle)));
    let before = s.exit_idles.load(Ordering::SeqCst);
    assert_eq!(ch.get_state(false), Idle);
    ch.sync().unwrap();
    assert_eq!(s.exit_idles.load(Ordering::SeqCst), before);
    assert_eq!(ch.get_state(true), Idle);
    wait_until("exit_idle", || {
        s.exit_idles.load(Ordering::SeqCst) == before + 1
    });
    s.run(&ch, &[], Some(Publish::Queue(Connecting)));
    assert_eq!(ch.get_state(true), Connecting);
    ch.sync().unwrap();
    assert_eq!(s.exit_idles.load(Ordering::SeqCst), before + 1);
    assert_eq!(
        s.updates.load(Ordering::SeqCst),
        1,
        "one policy, one update"
    );
}

// ====================================================================
// Subchannel shutdown as the policy does it (InternalSubchannelTest
// shutdown*, obtainTransportAfterShutdown; ManagedChannelImplTest
// subchannelsRequestConnectionNoopAfterShutdown,
// noMoreCallbackAfterLoadBalancerShutdown)
// ====================================================================

/// obtainTransportAfterShutdown / subchannelsRequestConnectionNoopAfterShutdown:
/// connect() on a subchannel the policy already shut down makes no
/// connection; the policy hears SHUTDOWN for it and nothing else.
#[test]
fn connect_after_shutdown_makes_no_connection() {
    let raw = Raw::start(true);
    let s = script("java_ch_connect_after_shutdown");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", raw.addr),
        Some(&lb("java_ch_connect_after_shutdown")),
        plaintext(),
    )
    .unwrap();
    ch.connect().unwrap();
    s.run(&ch, &[Op::New(0), Op::Shutdown(0), Op::Connect(0)], None);
    thread::sleep(Duration::from_millis(300));
    ch.sync().unwrap();
    assert_eq!(raw.accepted(), 0, "a shut-down subchannel connected");
    let id = s.sc(0).id();
    let states = s.states_of(id);
    assert!(
        states.iter().all(|st| *st == Shutdown),
        "after shutdown only SHUTDOWN may be heard: {states:?}"
    );
}

/// noMoreCallbackAfterLoadBalancerShutdown (and InternalSubchannelTest
/// shutdownWhenReady / shutdownBeforeTransportReady): one subchannel READY,
/// one still connecting (a silent server); the policy shuts both down. Each
/// tells the policy SHUTDOWN once and nothing after, whatever their
/// transports do next: the READY one's connection closes (it had no call),
/// the connecting attempt is closed.
#[test]
fn shut_down_subchannels_say_shutdown_once_and_nothing_after() {
    let b = backend();
    let raw = Raw::start(true);
    let seen = push_resolver("java-ch-no-more-callbacks");
    let s = script("java_ch_no_more_callbacks");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        "java-ch-no-more-callbacks:///x",
        Some(&lb("java_ch_no_more_callbacks")),
        plaintext(),
    )
    .unwrap();
    ch.connect().unwrap();
    seen.push(&[b.addr(), raw.addr]);
    s.run(
        &ch,
        &[Op::New(0), Op::New(1), Op::Connect(0), Op::Connect(1)],
        None,
    );
    s.wait_sc_state(0, Ready);
    wait_until("the silent server's connection", || raw.accepted() == 1);
    assert_eq!(s.states_of(s.sc(1).id()), vec![Connecting]);
    s.run(&ch, &[Op::Shutdown(0), Op::Shutdown(1)], None);
    wait_until("the connecting attempt to be closed", || {
        raw.client_closed() == 1
    });
    thread::sleep(Duration::from_millis(300));
    ch.sync().unwrap();
    assert_eq!(s.states_of(s.sc(0).id()), vec![Connecting, Ready, Shutdown]);
    assert_eq!(s.states_of(s.sc(1).id()), vec![Connecting, Shutdown]);
    // And no later resolver result brings them back.
    seen.push(&[b.addr(), raw.addr]);
    ch.sync().unwrap();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(raw.accepted(), 1);
}

/// shutdownBeforeTransportCreated, as a policy does it: an address removed
/// while its subchannel waits out a backoff after failed attempts is never
/// tried again (the reconnect task is cancelled).
#[test]
fn an_address_removed_during_its_backoff_is_not_tried_again() {
    let b = backend();
    let closer = Raw::start(false);
    let seen = push_resolver("java-ch-removed-in-backoff");
    let rt = Runtime::new().unwrap();
    let mut opts = fast_backoff(200, 200);
    let log = Transitions::default();
    log.attach(&mut opts);
    let ch = Channel::new(&rt, "java-ch-removed-in-backoff:///x", RR, opts).unwrap();
    ch.connect().unwrap();
    seen.push(&[closer.addr, b.addr()]);
    log.wait_for("the closing address in TRANSIENT_FAILURE", |s| {
        s.state == TransientFailure
    });
    seen.push(&[b.addr()]);
    ch.sync().unwrap();
    let n = closer.accepted();
    thread::sleep(Duration::from_millis(1200));
    assert_eq!(closer.accepted(), n, "a removed address was tried again");
    assert!(echo(&mut ch.reader(), true).is_ok());
}

/// shutdownBeforeTransportReady, as a policy does it: an address removed
/// while its connection attempt is in progress (the server accepted and
/// never answered) has that attempt closed at once, not left to the
/// connect deadline, and is not tried again.
#[test]
fn an_address_removed_while_connecting_has_its_attempt_closed() {
    let b = backend();
    let silent = Raw::start(true);
    let seen = push_resolver("java-ch-removed-connecting");
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.backoff.min_connect_timeout = Duration::from_secs(20);
    let ch = Channel::new(&rt, "java-ch-removed-connecting:///x", RR, opts).unwrap();
    ch.connect().unwrap();
    seen.push(&[silent.addr, b.addr()]);
    wait_until("the silent server to accept", || silent.accepted() == 1);
    let t = Instant::now();
    seen.push(&[b.addr()]);
    wait_until("the attempt to be closed", || silent.client_closed() == 1);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    thread::sleep(Duration::from_millis(300));
    assert_eq!(silent.accepted(), 1);
}

// ====================================================================
// resetConnectBackoff
// ====================================================================

/// InternalSubchannelTest resetConnectBackoff_noopOnIdleTransport: a
/// subchannel IDLE after its READY connection ended does not connect when
/// the backoff is reset. ManagedChannelImplTest
/// resetConnectBackoff_noOpWhenNameResolverNotStarted: on a channel never
/// used nothing is resolved or connected; _noOpWhenChannelShutdown: after
/// close nothing happens (switchyard: Err(Closed)).
#[test]
fn reset_connect_backoff_does_not_connect_an_idle_subchannel_or_channel() {
    let b = backend();
    let seen = push_resolver("java-ch-reset-idle");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "java-ch-reset-idle:///x", None, plaintext()).unwrap();
    ch.reset_connect_backoff().unwrap();
    ch.sync().unwrap();
    thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.builds(), 0, "resolver built by a reset");
    assert_eq!(ch.state(), Idle);

    ch.connect().unwrap();
    seen.push(&[b.addr()]);
    assert!(echo(&mut ch.reader(), true).is_ok());
    assert_eq!(ch.state(), Ready);
    b.goaway();
    wait_state(&ch, Idle);
    wait_until("the server to see the connection end", || {
        b.connections() == 0
    });
    ch.reset_connect_backoff().unwrap();
    ch.sync().unwrap();
    assert_eq!(
        ch.wait_for_state_change(Idle, Some(Instant::now() + Duration::from_millis(400))),
        None,
        "a reset connected an IDLE subchannel"
    );
    assert_eq!(b.connections(), 0);

    ch.close();
    assert!(matches!(ch.reset_connect_backoff(), Err(Error::Closed)));
}

/// ManagedChannelImpl.resetConnectBackoff refreshes the name resolver
/// (`nameResolver.refresh()`) besides resetting every subchannel's
/// backoff; C-core's ResetConnectionBackoff resets the resolver's backoff
/// too (PollingResolver::ResetBackoffLocked: a re-resolution waiting out
/// its backoff runs now). Here the policy rejected the resolver's update
/// (no addresses), so the channel waits out its backoff (5 s) before
/// asking the resolver again; a reset should ask now.
#[test]
fn reset_connect_backoff_re_resolves_when_a_resolution_retry_is_pending() {
    let seen = push_resolver("java-ch-reset-resolver");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        "java-ch-reset-resolver:///x",
        None,
        fast_backoff(5000, 5000),
    )
    .unwrap();
    ch.connect().unwrap();
    seen.push(&[]); // pick_first rejects: a retry is paced by the backoff
    ch.sync().unwrap();
    let n = seen.resolve_nows();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(seen.resolve_nows(), n, "retry not paced");
    ch.reset_connect_backoff().unwrap();
    ch.sync().unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while seen.resolve_nows() == n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        seen.resolve_nows() > n,
        "reset_connect_backoff did not ask the resolver again (Java: refresh(); C-core: \
         resolver backoff reset)"
    );
}

// ====================================================================
// More of ManagedChannelImplTest
// ====================================================================

/// ManagedChannelImplTest subchannels / subchannelsNoConnectionShutdown and
/// InternalSubchannelTest connectIsLazy: every new subchannel is its own,
/// even for the same address; none connects until asked; each connects
/// once when asked (a second connect on a READY one makes nothing new);
/// shut down, their connections close.
#[test]
fn subchannels_for_one_address_are_distinct_lazy_and_connect_once() {
    let b = backend();
    let s = script("java_ch_two_subchannels");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", b.addr()),
        Some(&lb("java_ch_two_subchannels")),
        plaintext(),
    )
    .unwrap();
    ch.connect().unwrap();
    s.run(&ch, &[Op::New(0), Op::New(0)], None);
    assert_ne!(s.sc(0).id(), s.sc(1).id());
    thread::sleep(Duration::from_millis(200));
    assert_eq!(b.connections(), 0, "connected without being asked");
    s.run(&ch, &[Op::Connect(0), Op::Connect(1)], None);
    s.wait_sc_state(0, Ready);
    s.wait_sc_state(1, Ready);
    wait_until("two connections", || b.connections() == 2);
    s.run(&ch, &[Op::Connect(0), Op::Connect(1)], None);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(b.connections(), 2);
    assert_eq!(s.states_of(s.sc(0).id()), vec![Connecting, Ready]);
    s.run(&ch, &[Op::Shutdown(0), Op::Shutdown(1)], None);
    wait_until("both connections closed", || b.connections() == 0);
}

/// panic_bufferedCallsWillFail (Java's panic mode; gRPC-Go lets a
/// balancer's panic crash the process, C-core has none). Java fails every
/// buffered call, wait-for-ready too, with INTERNAL, for good. switchyard's
/// documented choice (src/channel/core.rs `fail_policy`,
/// tests/engine/lifecycle.rs): TRANSIENT_FAILURE with a FailPicker
/// (UNAVAILABLE, the panic's message) until the next resolver update builds
/// a new policy. Pinned here for started calls: the queued fail-fast call
/// fails UNAVAILABLE, the queued wait-for-ready call waits and is served by
/// the new policy.
#[test]
fn a_policy_panic_fails_queued_fail_fast_calls_and_wait_for_ready_waits_for_the_next_policy() {
    let b = backend();
    let seen = push_resolver("java-ch-panic");
    let s = script("java_ch_panic");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        "java-ch-panic:///x",
        Some(&lb("java_ch_panic")),
        plaintext(),
    )
    .unwrap();
    let ff = start(&ch, false);
    let wfr = start(&ch, true);
    seen.push(&[b.addr()]);
    s.run(&ch, &[], None);
    still_pending(&ff, "fail-fast before the panic");
    s.run(&ch, &[Op::Panic], None);
    let e = result(&ff, "queued fail-fast at the panic").unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("Simulated uncaught exception"),
        "{e:?}"
    );
    assert_eq!(ch.state(), TransientFailure);
    still_pending(&wfr, "queued wait-for-ready after the panic");
    // A new resolver result: a new policy, which connects and serves.
    s.subconns.lock().unwrap().clear();
    *s.publish.lock().unwrap() = None;
    s.ops.lock().unwrap().extend([Op::New(0), Op::Connect(0)]);
    seen.push(&[b.addr()]);
    ch.sync().unwrap();
    s.wait_sc_state(0, Ready);
    s.run(&ch, &[], Some(Publish::Pick(0)));
    let r = result(&wfr, "wait-for-ready after the new policy");
    assert!(r.is_ok(), "{r:?}");
}
