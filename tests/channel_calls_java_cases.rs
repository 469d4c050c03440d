//! More of grpc-java's ManagedChannelImplTest
//! (core/src/test/java/io/grpc/internal/ManagedChannelImplTest.java) on
//! switchyard's Channel / started calls, beyond tests/channel_java_cases.rs,
//! tests/idle_service_config_java_cases.rs, tests/channel_states_go_cases.rs
//! and tests/core_lb_e2e_cases.rs: immediateDeadlineExceeded,
//! startCallBeforeNameResolution, nameResolvedAfterChannelShutdown,
//! balancerRefreshNameResolution, loadBalancerThrowsInHandleResolvedAddresses,
//! buffered calls drained in order (DelayedClientTransport), and the channel
//! closed from inside its own callbacks (state callback, policy, resolver).
//!
//! Found here and fixed (src/call/started.rs): a started call waiting
//! unsent took its method's settings from a service config that came
//! meanwhile only once a pick succeeded, so a failed pick judged it by the
//! wait-for-ready it started with (it now takes them first, as gRPC-Go,
//! grpc-java and C-core do); calls buffered behind a queueing picker went
//! out in hash order (now in the order they started, as grpc-java's
//! delayed transport drains them; C-core and gRPC-Go promise no order).

#[path = "common/mod.rs"]
mod common;
#[path = "common/driven_lb.rs"]
mod driven_lb;
#[path = "common/h2_frames.rs"]
mod h2_frames;
#[path = "common/hpack.rs"]
mod hpack;
#[path = "common/scripted_h2.rs"]
mod scripted_h2;

use common::*;
use driven_lb::{lb, Core, Driven};
use h2_frames::*;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use switchyard::picker::{QueuePicker, SinglePicker};
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverClientConn, ResolverState};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

const ECHO: &str = "/echo.Echo/Unary";

// ------------------------------------------------------------ push resolver

trait Push {
    fn cc(&self) -> ResolverClientConn;
    fn push(&self, addrs: &[SocketAddr], config: Option<&str>) -> Result<(), Error>;
}

impl Push for ManualResolver {
    fn cc(&self) -> ResolverClientConn {
        wait_until("the resolver built", || self.client_conn().is_some());
        self.client_conn().unwrap()
    }
    fn push(&self, addrs: &[SocketAddr], config: Option<&str>) -> Result<(), Error> {
        let endpoints = addrs
            .iter()
            .map(|a| Endpoint::from(Address::new(a.to_string())))
            .collect();
        self.cc()
            .update(ResolverState {
                endpoints,
                service_config: config.map(str::to_string),
            })
            .map(|_| ())
    }
}

fn push_resolver(scheme: &'static str) -> ManualResolver {
    let seen = ManualResolver::new(scheme);
    resolver::register(Arc::new(seen.clone()));
    seen
}

// ------------------------------------------------------------ scripted policy

#[derive(Clone, Copy)]
enum Op {
    New(usize),
    Connect(usize),
    ResolveNow,
    /// Close the channel (the handle in `Script::channel`) from inside the
    /// policy's callback.
    CloseChannel,
}

#[derive(Default)]
struct Script {
    /// Some(k): publish READY with a picker of subchannel k; None: CONNECTING
    /// with a queueing picker.
    pick: Mutex<Option<usize>>,
    ops: Mutex<Vec<Op>>,
    core: Core,
    updates: AtomicUsize,
    /// The next update_client_conn_state panics (once).
    panic_on_update: AtomicBool,
    channel: Mutex<Option<Arc<Channel>>>,
    close_returned: AtomicBool,
}

impl Deref for Script {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Script {
    fn queue(&self, ops: &[Op], pick: Option<usize>) {
        self.ops.lock().unwrap().extend_from_slice(ops);
        if pick.is_some() {
            *self.pick.lock().unwrap() = pick;
        }
        self.schedule();
    }
    fn run(&self, ch: &Channel, ops: &[Op], pick: Option<usize>) {
        self.queue(ops, pick);
        ch.sync().unwrap();
        ch.sync().unwrap();
    }
}

impl Driven for Script {
    fn on_update(&self, _: &mut dyn ClientConn, _: bool) {
        self.updates.fetch_add(1, Ordering::SeqCst);
        if self.panic_on_update.swap(false, Ordering::SeqCst) {
            panic!("simulated");
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
                Op::ResolveNow => cc.resolve_now(),
                Op::CloseChannel => {
                    let ch = self.channel.lock().unwrap().clone();
                    if let Some(ch) = ch {
                        ch.close();
                        self.close_returned.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
        let pick = *self.pick.lock().unwrap();
        match pick {
            None => cc.update_state(Connecting, Box::new(QueuePicker)),
            Some(k) => cc.update_state(Ready, Box::new(SinglePicker::new(self.sc(k)))),
        }
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

fn start_with(ch: &Channel, opts: &CallOptions<'_>) -> Receiver<CallResult> {
    let (tx, rx) = mpsc::channel();
    ch.unary_start(ECHO, b"ping", opts, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    rx
}

/// A started echo call (10 s deadline).
fn start(ch: &Channel, wait_for_ready: Option<bool>) -> Receiver<CallResult> {
    start_with(
        ch,
        &CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            wait_for_ready,
            ..Default::default()
        },
    )
}

fn result(rx: &Receiver<CallResult>, what: &str) -> CallResult {
    rx.recv_timeout(Duration::from_secs(8))
        .unwrap_or_else(|_| panic!("{what}: no result in time"))
}

fn still_pending(rx: &Receiver<CallResult>, what: &str, for_ms: u64) {
    match rx.recv_timeout(Duration::from_millis(for_ms)) {
        Err(_) => {}
        Ok(r) => panic!("{what}: should still wait, ended with {r:?}"),
    }
}

/// Runs `f` on its own thread; true if it returned within `within`.
fn returns_within(within: Duration, f: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(within).is_ok()
}

// ====================================================================
// Calls
// ====================================================================

/// immediateDeadlineExceeded: a call whose deadline has already passed
/// ends DEADLINE_EXCEEDED at once and sends nothing.
#[test]
fn a_call_with_an_expired_deadline_fails_deadline_exceeded_at_once() {
    let b = backend();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", b.addr()), None, plaintext()).unwrap();
    let t = Instant::now();
    let rx = start_with(
        &ch,
        &CallOptions {
            deadline: Some(Instant::now() - Duration::from_millis(1)),
            ..Default::default()
        },
    );
    let e = result(&rx, "expired call").unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    thread::sleep(Duration::from_millis(200));
    assert_eq!(b.requests(), 0);
}

/// startCallBeforeNameResolution: a call started (no wait-for-ready of its
/// own) before the resolver's first result follows the method config that
/// result brings (`waitForReady: true`): it is not failed while the only
/// address refuses, and is served once a server listens there.
#[test]
fn a_call_started_before_resolution_follows_the_resolved_wait_for_ready() {
    let seen = push_resolver("java-ch2-start-before");
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.backoff.initial = Duration::from_millis(100);
    opts.backoff.max = Duration::from_millis(200);
    let ch = Channel::new(&rt, "java-ch2-start-before:///x", None, opts).unwrap();
    let call = start(&ch, None);
    seen.cc();
    still_pending(&call, "before resolution", 200);
    let addr = free_addr();
    let cfg = r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],"waitForReady":true}]}"#;
    seen.push(&[addr], Some(cfg)).unwrap();
    wait_state(&ch, TransientFailure);
    still_pending(&call, "in TRANSIENT_FAILURE under waitForReady", 500);
    let b = TestServer::start(Listen::Tcp(addr), ServerOptions::default()).unwrap();
    let r = result(&call, "once a server listens");
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(b.requests(), 1);
}

/// DelayedClientTransport (ManagedChannelImplTest's buffered calls, e.g.
/// updateBalancingStateDoesUpdatePicker / callsAndShutdown): calls buffered
/// while the picker queues go out, once a picker picks a READY subchannel,
/// in the order they were started (pendingStreams is a list drained in
/// order; their streams are created in that order, so the server sees
/// their HEADERS in that order).
#[test]
fn calls_buffered_before_a_ready_picker_go_out_in_the_order_they_started() {
    const N: usize = 8;
    let server = scripted_h2::Server::start(N, |streams| {
        streams
            .iter()
            .flat_map(|&s| {
                let mut out = headers(
                    s,
                    &[(":status", b"200"), ("content-type", b"application/grpc")],
                    false,
                );
                out.extend(data(s, &[0, 0, 0, 0, 0], false));
                out.extend(headers(s, &[("grpc-status", b"0")], true));
                out
            })
            .collect()
    });
    let s = script("java_ch2_order");
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.disable_retry = true;
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr),
        Some(&lb("java_ch2_order")),
        opts,
    )
    .unwrap();
    let mut calls = Vec::new();
    for i in 0..N {
        let md = vec![("x-seq".to_string(), format!("{i}"))];
        calls.push(start_with(
            &ch,
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(10)),
                wait_for_ready: Some(true),
                metadata: &md,
                ..Default::default()
            },
        ));
    }
    s.run(&ch, &[Op::New(0), Op::Connect(0)], None);
    s.wait_sc_state(0, Ready);
    for c in &calls {
        still_pending(c, "queued", 20);
    }
    s.run(&ch, &[], Some(0));
    for (i, c) in calls.iter().enumerate() {
        let r = result(c, &format!("call {i}"));
        assert!(r.is_ok(), "call {i}: {r:?}");
    }
    let blocks = server.blocks.lock().unwrap().clone();
    let mut dec = hpack::Hpack::new();
    let order: Vec<String> = blocks
        .iter()
        .map(|b| {
            dec.decode(b)
                .into_iter()
                .find(|(n, _)| n == "x-seq")
                .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default()
        })
        .collect();
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(order, want, "order the server saw the buffered calls in");
}

// ====================================================================
// Resolver and policy
// ====================================================================

/// nameResolvedAfterChannelShutdown: a result the resolver gives after the
/// channel shut down is dropped: no policy hears it, nothing connects.
#[test]
fn a_resolver_result_after_close_reaches_no_policy() {
    let b = backend();
    let seen = push_resolver("java-ch2-resolved-after-close");
    let s = script("java_ch2_resolved_after_close");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        "java-ch2-resolved-after-close:///x",
        Some(&lb("java_ch2_resolved_after_close")),
        plaintext(),
    )
    .unwrap();
    ch.connect().unwrap();
    let cc = seen.cc();
    ch.close();
    assert_eq!(ch.get_state(false), Shutdown);
    let r = cc.update(ResolverState {
        endpoints: vec![Endpoint::from(Address::new(b.addr().to_string()))],
        service_config: None,
    });
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.updates.load(Ordering::SeqCst),
        0,
        "a policy heard it ({r:?})"
    );
    assert_eq!(b.connections(), 0);
    assert_eq!(ch.get_state(false), Shutdown);
}

/// balancerRefreshNameResolution: the policy asking for re-resolution
/// (Helper.refreshNameResolution, ClientConn::resolve_now) reaches the
/// resolver (refresh / resolve_now) once.
#[test]
fn a_policy_resolve_now_reaches_the_resolver() {
    let b = backend();
    let seen = push_resolver("java-ch2-refresh");
    let s = script("java_ch2_refresh");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        "java-ch2-refresh:///x",
        Some(&lb("java_ch2_refresh")),
        plaintext(),
    )
    .unwrap();
    ch.connect().unwrap();
    seen.push(&[b.addr()], None).unwrap();
    s.run(&ch, &[], None);
    let n = seen.resolve_nows();
    s.run(&ch, &[Op::ResolveNow], None);
    wait_until("a resolve_now", || seen.resolve_nows() == n + 1);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(seen.resolve_nows(), n + 1);
}

/// loadBalancerThrowsInHandleResolvedAddresses: the policy throws on its
/// first resolved addresses. Java enters panic mode (every buffered call,
/// wait-for-ready too, fails INTERNAL for good); switchyard's documented
/// choice (src/channel/core.rs `fail_policy`) is TRANSIENT_FAILURE with
/// UNAVAILABLE carrying the panic's message until the next update builds a
/// new policy. Pinned: the buffered fail-fast call fails UNAVAILABLE with
/// the message; the wait-for-ready one waits and the next result's policy
/// serves it.
#[test]
fn a_policy_panic_on_its_first_addresses_fails_fail_fast_calls_with_the_message() {
    let b = backend();
    let seen = push_resolver("java-ch2-panic-update");
    let s = script("java_ch2_panic_update");
    s.panic_on_update.store(true, Ordering::SeqCst);
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        "java-ch2-panic-update:///x",
        Some(&lb("java_ch2_panic_update")),
        plaintext(),
    )
    .unwrap();
    let ff = start(&ch, Some(false));
    let wfr = start(&ch, Some(true));
    seen.push(&[b.addr()], None).unwrap();
    let e = result(&ff, "fail-fast at the panic").unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("simulated"), "{e:?}");
    assert_eq!(ch.state(), TransientFailure);
    still_pending(&wfr, "wait-for-ready after the panic", 300);
    s.ops.lock().unwrap().extend([Op::New(0), Op::Connect(0)]);
    seen.push(&[b.addr()], None).unwrap();
    ch.sync().unwrap();
    s.wait_sc_state(0, Ready);
    s.run(&ch, &[], Some(0));
    let r = result(&wfr, "wait-for-ready with the next policy");
    assert!(r.is_ok(), "{r:?}");
}

// ====================================================================
// Closing the channel from inside its own callbacks
// ====================================================================

/// ManagedChannelImpl runs every LB / resolver callback in its
/// SynchronizationContext, and shutdown()/shutdownNow() called from one of
/// them is queued behind it (drain()), never deadlocks. Here: close() from
/// the channel's state callback (which runs on the loop thread).
#[test]
fn closing_the_channel_from_its_state_callback_does_not_hang() {
    let b = backend();
    let rt = Runtime::new().unwrap();
    let slot: Arc<OnceLock<Arc<Channel>>> = Arc::new(OnceLock::new());
    let returned = Arc::new(AtomicBool::new(false));
    let mut opts = plaintext();
    let (sl, ret) = (slot.clone(), returned.clone());
    opts.on_state_change = Some(Arc::new(move |st| {
        if st == Ready {
            if let Some(ch) = sl.get() {
                ch.close();
                ret.store(true, Ordering::SeqCst);
            }
        }
    }));
    let ch = Arc::new(Channel::new(&rt, &format!("ipv4:{}", b.addr()), None, opts).unwrap());
    let _ = slot.set(ch.clone());
    ch.connect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !returned.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        returned.load(Ordering::SeqCst),
        "close() inside on_state_change did not return (state {:?})",
        ch.get_state(false)
    );
    assert_eq!(ch.get_state(false), Shutdown);
    let c2 = ch.clone();
    assert!(
        returns_within(Duration::from_secs(3), move || c2.close()),
        "a second close() hung"
    );
    let c3 = ch.clone();
    assert!(
        returns_within(Duration::from_secs(3), move || {
            let _ = c3.sync();
        }),
        "sync() after close hung"
    );
    wait_until("the connection closed", || b.connections() == 0);
}

/// The same from inside a policy callback (Java: an LB calling
/// channel.shutdownNow() from handleResolvedAddresses / a subchannel
/// state listener; queued in the SynchronizationContext).
#[test]
fn closing_the_channel_from_a_policy_callback_does_not_hang() {
    let b = backend();
    let s = script("java_ch2_close_in_policy");
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(
        Channel::new(
            &rt,
            &format!("ipv4:{}", b.addr()),
            Some(&lb("java_ch2_close_in_policy")),
            plaintext(),
        )
        .unwrap(),
    );
    *s.channel.lock().unwrap() = Some(ch.clone());
    let wfr = start(&ch, Some(true));
    s.run(&ch, &[Op::New(0), Op::Connect(0)], None);
    s.wait_sc_state(0, Ready);
    s.queue(&[Op::CloseChannel], None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.close_returned.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    // Break the cycle policy -> channel either way.
    let closed_inside = s.close_returned.load(Ordering::SeqCst);
    assert!(
        closed_inside,
        "close() inside the policy's work callback did not return (state {:?})",
        ch.get_state(false)
    );
    *s.channel.lock().unwrap() = None;
    assert_eq!(ch.get_state(false), Shutdown);
    let e = result(&wfr, "buffered wait-for-ready at close").unwrap_err();
    assert_eq!(e.code(), Code::Cancelled, "{e:?}");
    wait_until("the connection closed", || b.connections() == 0);
}

/// The same from inside the resolver: resolve_now (asked by the policy)
/// closes the channel (Java: a NameResolver calling shutdown from refresh(),
/// which runs in the SynchronizationContext).
#[test]
fn closing_the_channel_from_the_resolvers_resolve_now_does_not_hang() {
    use switchyard::resolver::{Resolver, ResolverBuilder, Target};
    struct CloseOnResolveNow(Arc<OnceLock<Arc<Channel>>>, Arc<AtomicBool>);
    impl Resolver for CloseOnResolveNow {
        fn resolve_now(&mut self) {
            if let Some(ch) = self.0.get() {
                ch.close();
                self.1.store(true, Ordering::SeqCst);
            }
        }
        fn close(&mut self) {}
    }
    struct B(Arc<OnceLock<Arc<Channel>>>, Arc<AtomicBool>, SocketAddr);
    impl ResolverBuilder for B {
        fn scheme(&self) -> &str {
            "java-ch2-close-in-resolver"
        }
        fn build(
            &self,
            _target: &Target,
            cc: ResolverClientConn,
        ) -> Result<Box<dyn Resolver>, String> {
            let _ = cc.update(ResolverState {
                endpoints: vec![Endpoint::from(Address::new(self.2.to_string()))],
                service_config: None,
            });
            Ok(Box::new(CloseOnResolveNow(self.0.clone(), self.1.clone())))
        }
    }
    let b = backend();
    let slot: Arc<OnceLock<Arc<Channel>>> = Arc::new(OnceLock::new());
    let returned = Arc::new(AtomicBool::new(false));
    resolver::register(Arc::new(B(slot.clone(), returned.clone(), b.addr())));
    let s = script("java_ch2_close_in_resolver");
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(
        Channel::new(
            &rt,
            "java-ch2-close-in-resolver:///x",
            Some(&lb("java_ch2_close_in_resolver")),
            plaintext(),
        )
        .unwrap(),
    );
    let _ = slot.set(ch.clone());
    ch.connect().unwrap();
    s.run(&ch, &[], None);
    s.queue(&[Op::ResolveNow], None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !returned.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        returned.load(Ordering::SeqCst),
        "close() inside Resolver::resolve_now did not return (state {:?})",
        ch.get_state(false)
    );
    assert_eq!(ch.get_state(false), Shutdown);
}

/// Control for the test above: the same config, the call started after the
/// resolver's result is in: it waits through TRANSIENT_FAILURE and is
/// served once a server listens (so only the call started before
/// resolution misses the config).
#[test]
fn a_call_started_after_resolution_follows_the_resolved_wait_for_ready() {
    let seen = push_resolver("java-ch2-start-after");
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.backoff.initial = Duration::from_millis(100);
    opts.backoff.max = Duration::from_millis(200);
    let ch = Channel::new(&rt, "java-ch2-start-after:///x", None, opts).unwrap();
    ch.connect().unwrap();
    let addr = free_addr();
    let cfg = r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],"waitForReady":true}]}"#;
    seen.push(&[addr], Some(cfg)).unwrap();
    wait_state(&ch, TransientFailure);
    let call = start(&ch, None);
    still_pending(&call, "in TRANSIENT_FAILURE under waitForReady", 500);
    let b = TestServer::start(Listen::Tcp(addr), ServerOptions::default()).unwrap();
    let r = result(&call, "once a server listens");
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(b.requests(), 1);
}
