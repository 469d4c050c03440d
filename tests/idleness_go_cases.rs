//! gRPC-Go's channel idleness (internal/idle/idle_e2e_test.go and
//! internal/idle/idle_test.go, the idleness manager's rules; gRPC-Go has no
//! test/idleness_test.go any more) where the existing
//! suites do not already pin it (tests/managed/idle.rs,
//! tests/channel_states_go_cases.rs, tests/idle_service_config_java_cases.rs,
//! tests/channel_java_cases.rs).
//!
//! Covered here: Connect on a channel that went IDLE by timeout
//! (TestChannelIdleness_Connect), WaitForStateChange through an idle cycle,
//! a disabled idle timeout (TestChannelIdleness_Disabled_NoActivity,
//! TestManager_Disabled), a burst of RPCs on an IDLE channel leaving IDLE once
//! (TestManager_Enabled_ExitIdleOnRPC), RPCs from many threads racing the
//! timer (TestManager_IdleTimeoutRacesWithOnCallBegin: only ever leave IDLE
//! from IDLE), activity then quiet (TestManager_Enabled_ActiveSinceLastCheck's
//! second half), a long-lived host pick standing in for the streaming case of
//! TestChannelIdleness_Enabled_OngoingCall, close racing the idle timer, and
//! TestChannelIdleness_RPCFailingBeforeAttempt_FinishesOnce.

#[path = "common/mod.rs"]
mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverState};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

const T: Duration = Duration::from_secs(10);

// ------------------------------------------------------------ state log

#[derive(Clone, Default)]
struct StateLog(Arc<(Mutex<Vec<ConnectivityState>>, Condvar)>);

impl StateLog {
    fn attach(&self, opts: &mut ChannelOptions) {
        let log = self.0.clone();
        opts.on_state_change = Some(Arc::new(move |s| {
            log.0.lock().unwrap().push(s);
            log.1.notify_all();
        }));
    }
    fn all(&self) -> Vec<ConnectivityState> {
        self.0 .0.lock().unwrap().clone()
    }
    /// Waits until `s` has been seen `n` times.
    fn wait_nth(&self, s: ConnectivityState, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        let mut g = self.0 .0.lock().unwrap();
        while g.iter().filter(|x| **x == s).count() < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {s} #{n}; states {g:?}"
            );
            g = self.0 .1.wait_timeout(g, deadline - now).unwrap().0;
        }
    }
}

// ------------------------------------------------------------ policy

/// gRPC-Go's registerWrappedRoundRobinPolicy: round_robin, with its builds
/// and closes counted.
#[derive(Default)]
struct Counts {
    builds: AtomicUsize,
    closes: AtomicUsize,
}

struct Wrapped(&'static str, Arc<Counts>);
struct WrappedB {
    counts: Arc<Counts>,
    inner: Box<dyn Balancer>,
}

impl Builder for Wrapped {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        self.1.builds.fetch_add(1, Ordering::SeqCst);
        Box::new(WrappedB {
            counts: self.1.clone(),
            inner: registry::get("round_robin").unwrap().build(),
        })
    }
}

impl Balancer for WrappedB {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        self.inner
            .update_client_conn_state(cc, ClientConnState::new(state.endpoints, None))
    }
    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.inner.resolver_error(cc, error)
    }
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, id: SubConnId, s: &SubConnState) {
        self.inner.update_subconn_state(cc, id, s)
    }
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        self.inner.exit_idle(cc)
    }
    fn work(&mut self, cc: &mut dyn ClientConn) {
        self.inner.work(cc)
    }
    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        self.inner.timer(cc, token)
    }
    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.counts.closes.fetch_add(1, Ordering::SeqCst);
        self.inner.close(cc)
    }
}

fn wrapped(name: &'static str) -> (Arc<Counts>, String) {
    let counts = Arc::new(Counts::default());
    registry::register(Arc::new(Wrapped(name, counts.clone())));
    (
        counts,
        format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]}}"#),
    )
}

// ------------------------------------------------------------ helpers

fn backend() -> TestServer {
    TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap()
}

/// gRPC-Go's manual resolver with InitialState: every build (each exit
/// from IDLE) pushes the backend's address again.
fn resolver_for(scheme: &'static str, server: &TestServer) -> ManualResolver {
    let m = ManualResolver::new(scheme);
    m.set_initial_state(Some(ResolverState {
        endpoints: vec![Endpoint::from(Address::new(server.addr().to_string()))],
        service_config: None,
    }));
    resolver::register(Arc::new(m.clone()));
    m
}

fn call(ch: &Channel, within: Duration) -> Result<UnaryResponse, Status> {
    let opts = CallOptions {
        deadline: Some(Instant::now() + within),
        ..Default::default()
    };
    ch.reader().unary("/echo.Echo/Unary", b"ping", &opts)
}

fn manual_runtime() -> (Arc<ManualClock>, Runtime) {
    let clock = Arc::new(ManualClock::new());
    let rt = Runtime::with_config(RuntimeConfig {
        clock: clock.clone(),
        seed: Some(7),
    })
    .unwrap();
    (clock, rt)
}

/// Moves the loop's clock by `by` in steps of a 64th of `timeout`, letting
/// the loop act after each.
fn advance(clock: &ManualClock, ch: &Channel, timeout: Duration, by: Duration) {
    let step = timeout / 64;
    let mut left = by;
    while !left.is_zero() {
        let s = left.min(step);
        clock.advance(s);
        left -= s;
        ch.sync().unwrap();
        ch.sync().unwrap();
    }
}

// ====================================================================
// internal/idle/idle_e2e_test.go
// ====================================================================

/// TestChannelIdleness_Connect, after a real idle timeout rather than from
/// the channel's first IDLE: `connect` on a channel that went IDLE for want
/// of RPCs rebuilds resolver and policy and the channel gets back to READY,
/// with no RPC.
#[test]
fn connect_on_a_channel_gone_idle_brings_it_back_to_ready() {
    let server = backend();
    let m = resolver_for("idleness-connect", &server);
    let (counts, config) = wrapped("idleness_rr_connect");
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.idle_timeout = Some(Duration::from_millis(300));
    let log = StateLog::default();
    log.attach(&mut opts);
    let ch = Channel::new(&rt, "idleness-connect:///test.server", Some(&config), opts).unwrap();
    ch.connect().unwrap();
    log.wait_nth(Ready, 1, T);
    log.wait_nth(Idle, 1, T);
    wait_until("the connection closed", || server.connections() == 0);
    assert_eq!((m.builds(), m.closes()), (1, 1), "resolver builds/closes");
    assert_eq!(counts.closes.load(Ordering::SeqCst), 1, "policy closed");
    ch.connect().unwrap();
    log.wait_nth(Ready, 2, T);
    assert_eq!(m.builds(), 2);
    assert_eq!(counts.builds.load(Ordering::SeqCst), 2);
    assert_eq!(log.all()[..5], [Connecting, Ready, Idle, Connecting, Ready]);
}

/// gRPC's WaitForStateChange through an idle cycle: a waiter on READY is
/// woken with IDLE by the timeout; a waiter on IDLE is woken by the next
/// RPC leaving IDLE (CONNECTING, or READY if it woke late).
#[test]
fn wait_for_state_change_sees_the_idle_cycle() {
    let server = backend();
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.idle_timeout = Some(Duration::from_millis(300));
    let ch = Arc::new(Channel::new(&rt, &format!("ipv4:{}", server.addr()), None, opts).unwrap());
    call(&ch, T).unwrap();
    assert_eq!(ch.state(), Ready);
    let t0 = Instant::now();
    assert_eq!(
        ch.wait_for_state_change(Ready, Some(Instant::now() + Duration::from_secs(5))),
        Some(Idle)
    );
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(250), "IDLE after {took:?}");
    let c = ch.clone();
    let waiter = std::thread::spawn(move || {
        c.wait_for_state_change(Idle, Some(Instant::now() + Duration::from_secs(5)))
    });
    std::thread::sleep(Duration::from_millis(100));
    call(&ch, T).unwrap();
    let woke = waiter.join().unwrap();
    assert!(
        matches!(woke, Some(Connecting) | Some(Ready)),
        "the waiter on IDLE woke with {woke:?}"
    );
}

/// TestChannelIdleness_Disabled_NoActivity and TestManager_Disabled: with
/// the idle timeout disabled (zero) the first RPC still leaves IDLE, and the
/// channel then stays READY with no RPC: the policy and the resolver are
/// never closed, the connection stays.
#[test]
fn a_disabled_idle_timeout_leaves_idle_on_the_first_rpc_and_never_closes_the_policy() {
    let server = backend();
    let m = resolver_for("idleness-disabled", &server);
    let (counts, config) = wrapped("idleness_rr_disabled");
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.idle_timeout = Some(Duration::ZERO);
    let log = StateLog::default();
    log.attach(&mut opts);
    let ch = Channel::new(&rt, "idleness-disabled:///test.server", Some(&config), opts).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ch.state(), Idle);
    assert_eq!(m.builds(), 0, "resolved before any use");
    call(&ch, T).unwrap();
    assert_eq!(ch.state(), Ready);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(log.all(), vec![Connecting, Ready]);
    assert_eq!((m.builds(), m.closes()), (1, 0));
    assert_eq!(counts.builds.load(Ordering::SeqCst), 1);
    assert_eq!(counts.closes.load(Ordering::SeqCst), 0, "policy closed");
    assert_eq!(server.connections(), 1);
}

/// TestManager_Enabled_ExitIdleOnRPC (100 RPCs at once on an IDLE channel:
/// exactly one ExitIdleMode), end to end: 64 threads start an RPC on a
/// channel gone IDLE at the same moment; all succeed, and the channel
/// leaves IDLE once: one new resolver, one new policy, one CONNECTING.
#[test]
fn a_burst_of_rpcs_on_an_idle_channel_leaves_idle_once() {
    const IDLE_T: Duration = Duration::from_secs(60);
    let server = backend();
    let m = resolver_for("idleness-burst", &server);
    let (counts, config) = wrapped("idleness_rr_burst");
    let (clock, rt) = manual_runtime();
    let mut opts = plaintext();
    opts.idle_timeout = Some(IDLE_T);
    let log = StateLog::default();
    log.attach(&mut opts);
    let ch =
        Arc::new(Channel::new(&rt, "idleness-burst:///test.server", Some(&config), opts).unwrap());
    call(&ch, T).unwrap();
    advance(&clock, &ch, IDLE_T, IDLE_T * 2);
    assert_eq!(ch.state(), Idle);
    assert_eq!((m.builds(), m.closes()), (1, 1));
    let n = 64;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (ch, barrier) = (ch.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                call(&ch, T).map(|_| ())
            })
        })
        .collect();
    let failed: Vec<_> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap().err())
        .collect();
    assert!(
        failed.is_empty(),
        "{} RPCs failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(m.builds(), 2, "resolver builds");
    assert_eq!(counts.builds.load(Ordering::SeqCst), 2, "policy builds");
    assert_eq!(log.all(), vec![Connecting, Ready, Idle, Connecting, Ready]);
}

/// TestManager_IdleTimeoutRacesWithOnCallBegin (and the e2e
/// _IdleTimeoutRacesWithRPCs, with several callers): RPCs from five
/// threads at once, about one idle timeout after the last ones, again and
/// again. Every RPC succeeds, and the channel only ever leaves IDLE from
/// IDLE: once everything has settled IDLE, each resolver and each policy
/// built was closed, one per IDLE the channel reported.
#[test]
fn rpcs_from_many_threads_racing_the_idle_timer_leave_idle_only_from_idle() {
    let server = backend();
    let m = resolver_for("idleness-race", &server);
    let (counts, config) = wrapped("idleness_rr_race");
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.idle_timeout = Some(Duration::from_millis(50));
    let log = StateLog::default();
    log.attach(&mut opts);
    let ch =
        Arc::new(Channel::new(&rt, "idleness-race:///test.server", Some(&config), opts).unwrap());
    call(&ch, T).unwrap();
    for i in 0..20u64 {
        std::thread::sleep(Duration::from_millis(45 + (i % 4) * 5));
        let barrier = Arc::new(Barrier::new(5));
        let threads: Vec<_> = (0..5)
            .map(|_| {
                let (ch, barrier) = (ch.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    call(&ch, T).map(|_| ())
                })
            })
            .collect();
        for t in threads {
            if let Err(e) = t.join().unwrap() {
                panic!("iteration {i}: an RPC failed: {e:?}");
            }
        }
    }
    // Settle IDLE.
    let deadline = Instant::now() + T;
    while ch.state() != Idle {
        assert!(Instant::now() < deadline, "never IDLE");
        std::thread::sleep(Duration::from_millis(20));
    }
    ch.sync().unwrap();
    let idles = log.all().iter().filter(|s| **s == Idle).count();
    eprintln!("race: {idles} IDLEs: {:?}", log.all());
    assert!(idles >= 1);
    assert_eq!(
        (m.builds(), m.closes()),
        (idles, idles),
        "resolver builds/closes vs IDLEs"
    );
    assert_eq!(
        (
            counts.builds.load(Ordering::SeqCst),
            counts.closes.load(Ordering::SeqCst)
        ),
        (idles, idles),
        "policy builds/closes vs IDLEs"
    );
    let connectings = log.all().iter().filter(|s| **s == Connecting).count();
    assert_eq!(
        connectings,
        idles,
        "one CONNECTING per exit from IDLE: {:?}",
        log.all()
    );
}

/// TestManager_Enabled_ActiveSinceLastCheck's second half (the first is
/// channel_states_go_cases.rs): once the short RPCs every quarter timeout
/// stop, the channel goes IDLE about one timeout later.
#[test]
fn activity_then_quiet_goes_idle_one_timeout_later() {
    let server = backend();
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.idle_timeout = Some(Duration::from_millis(400));
    let log = StateLog::default();
    log.attach(&mut opts);
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), None, opts).unwrap();
    let end = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < end {
        call(&ch, T).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let last = Instant::now();
    assert_eq!(log.all(), vec![Connecting, Ready]);
    log.wait_nth(Idle, 1, Duration::from_secs(5));
    let took = last.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2000),
        "IDLE {took:?} after the last RPC (timeout 400 ms)"
    );
}

// ------------------------------------------------------------ host picks

/// A host transport whose connections the test reports READY.
#[derive(Default)]
struct Host {
    connects: Mutex<Vec<SubConnId>>,
    shutdowns: AtomicUsize,
}
impl HostTransport for Host {
    fn connect(&self, sc: &Arc<SubConn>) {
        self.connects.lock().unwrap().push(sc.id());
    }
    fn shutdown(&self, _: &Arc<SubConn>) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

/// TestChannelIdleness_Enabled_OngoingCall/streaming, on a host-transport
/// channel: a pick the host holds (its RPC, a stream, still running) for
/// three idle timeouts with no other pick keeps the channel READY, its
/// transport up; once done, the channel goes IDLE within two timeouts.
#[test]
fn a_held_host_pick_keeps_the_channel_out_of_idle() {
    const IDLE_T: Duration = Duration::from_secs(60);
    let host = Arc::new(Host::default());
    let (clock, rt) = manual_runtime();
    let opts = ChannelOptions {
        connector: Some(Box::new(ExternalConnector::new(host.clone()))),
        idle_timeout: Some(IDLE_T),
        ..Default::default()
    };
    let ch = Channel::new(&rt, "ipv4:127.0.0.1:1", None, opts).unwrap();
    ch.connect().unwrap();
    wait_until("the host asked to connect", || {
        !host.connects.lock().unwrap().is_empty()
    });
    let sc = host.connects.lock().unwrap()[0];
    ch.report_subconn_state(sc, Ready, "").unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), Ready);
    let mut r = ch.reader();
    let pick = r.try_pick(&PickInfo::default()).expect("a READY pick");
    advance(&clock, &ch, IDLE_T, IDLE_T * 3);
    assert_eq!(ch.state(), Ready, "IDLE under a held pick");
    assert_eq!(
        host.shutdowns.load(Ordering::SeqCst),
        0,
        "transport shut down"
    );
    pick.done(&DoneInfo::OK);
    advance(&clock, &ch, IDLE_T, IDLE_T * 2 + IDLE_T / 8);
    assert_eq!(ch.state(), Idle);
    assert_eq!(host.shutdowns.load(Ordering::SeqCst), 1);
}

// ------------------------------------------------------------ close

/// Idleness racing with close (gRPC-Go's idle.Manager.Close stops the
/// timer; ClientConn.Close closes resolver and balancer whatever the idle
/// state): channels closed just before, at and after their idle timeout
/// each close promptly, end SHUTDOWN with every resolver and policy they
/// built closed and no connection left, and an RPC after close fails
/// without building anything.
#[test]
fn close_racing_the_idle_timer_leaves_nothing_open() {
    let server = backend();
    let m = resolver_for("idleness-close", &server);
    let (counts, config) = wrapped("idleness_rr_close");
    let rt = Runtime::new().unwrap();
    for i in 0..16u64 {
        let mut opts = plaintext();
        opts.idle_timeout = Some(Duration::from_millis(40));
        let ch = Channel::new(&rt, "idleness-close:///test.server", Some(&config), opts).unwrap();
        call(&ch, T).unwrap();
        std::thread::sleep(Duration::from_millis(30 + (i % 8) * 5));
        let t0 = Instant::now();
        ch.close();
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "close took {:?}",
            t0.elapsed()
        );
        assert_eq!(ch.state(), Shutdown);
        let builds = m.builds();
        let e = call(&ch, Duration::from_secs(1)).unwrap_err();
        assert_ne!(e.code(), Code::Ok);
        assert_eq!(
            m.builds(),
            builds,
            "iteration {i}: an RPC after close built a resolver"
        );
        assert_eq!(
            m.builds(),
            m.closes(),
            "iteration {i}: a resolver left open"
        );
        assert_eq!(
            counts.builds.load(Ordering::SeqCst),
            counts.closes.load(Ordering::SeqCst),
            "iteration {i}: a policy left open"
        );
    }
    wait_until("every connection closed", || server.connections() == 0);
}

/// Close while IDLE: a waiter on IDLE wakes with SHUTDOWN; `connect` after
/// close does not leave IDLE (nothing built), and reports the channel
/// closed.
#[test]
fn closing_an_idle_channel_wakes_its_state_waiter_with_shutdown() {
    let server = backend();
    let m = resolver_for("idleness-closeidle", &server);
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.idle_timeout = Some(Duration::from_millis(200));
    let ch = Arc::new(Channel::new(&rt, "idleness-closeidle:///test.server", None, opts).unwrap());
    call(&ch, T).unwrap();
    wait_state(&ch, Idle);
    let c = ch.clone();
    let waiter = std::thread::spawn(move || {
        c.wait_for_state_change(Idle, Some(Instant::now() + Duration::from_secs(5)))
    });
    std::thread::sleep(Duration::from_millis(100));
    ch.close();
    assert_eq!(waiter.join().unwrap(), Some(Shutdown));
    assert!(ch.connect().is_err(), "connect after close");
    assert_eq!(ch.get_state(true), Shutdown);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!((m.builds(), m.closes()), (1, 1));
}

// ------------------------------------------------------------ finish once

/// TestChannelIdleness_RPCFailingBeforeAttempt_FinishesOnce: after a
/// warm-up RPC, an RPC whose context is already done fails before any
/// attempt, and its completion runs exactly once. switchyard's nearest
/// equivalents: a started call with a deadline already past, and one
/// cancelled the moment it starts.
#[test]
fn an_rpc_failing_before_any_attempt_finishes_once() {
    let server = backend();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), None, plaintext()).unwrap();
    call(&ch, T).unwrap();
    let finished = Arc::new(Mutex::new(Vec::new()));
    let past = CallOptions {
        deadline: Some(Instant::now() - Duration::from_millis(1)),
        ..Default::default()
    };
    let f = finished.clone();
    ch.unary_start("/echo.Echo/Unary", b"ping", &past, move |r| {
        f.lock()
            .unwrap()
            .push(("past", r.map(|_| ()).map_err(|s| s.code())));
    })
    .unwrap();
    let f = finished.clone();
    let h = ch
        .unary_start(
            "/echo.Echo/Unary",
            b"ping",
            &CallOptions::default(),
            move |r| {
                f.lock()
                    .unwrap()
                    .push(("cancelled", r.map(|_| ()).map_err(|s| s.code())));
            },
        )
        .unwrap();
    h.cancel();
    wait_until("both finished", || finished.lock().unwrap().len() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    let got = finished.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "completions: {got:?}");
    assert!(
        got.contains(&("past", Err(Code::DeadlineExceeded))),
        "{got:?}"
    );
    // Cancelled at once: CANCELLED, unless it had already been served.
    assert!(
        got.iter()
            .any(|(w, r)| *w == "cancelled" && matches!(r, Err(Code::Cancelled) | Ok(()))),
        "{got:?}"
    );
    // The blocking API: an already-expired deadline.
    let e = ch
        .reader()
        .unary("/echo.Echo/Unary", b"ping", &past)
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
}

/// TestChannelIdleness_Enabled_OngoingCall/unary with a started call (the
/// blocking one is managed/idle.rs): a call the server holds while the
/// loop's clock moves three idle timeouts keeps the channel READY; once it
/// ends the channel goes IDLE within two timeouts.
#[test]
fn a_started_call_in_flight_keeps_the_channel_out_of_idle() {
    const IDLE_T: Duration = Duration::from_secs(60);
    let server = backend();
    let (clock, rt) = manual_runtime();
    let mut opts = plaintext();
    opts.idle_timeout = Some(IDLE_T);
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), None, opts).unwrap();
    call(&ch, T).unwrap();
    let md = [("x-delay-ms".to_string(), "1500".to_string())];
    let copts = CallOptions {
        metadata: &md,
        ..Default::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    ch.unary_start("/echo.Echo/Unary", b"slow", &copts, move |r| {
        let _ = tx.send(r.map(|_| ()).map_err(|s| s.code()));
    })
    .unwrap();
    wait_until("the call is in flight", || server.in_flight() == 1);
    advance(&clock, &ch, IDLE_T, IDLE_T * 3);
    assert_eq!(ch.state(), Ready, "IDLE under a started call");
    assert_eq!(rx.recv_timeout(T).expect("the call ends"), Ok(()));
    advance(&clock, &ch, IDLE_T, IDLE_T * 2 + IDLE_T / 8);
    assert_eq!(ch.state(), Idle);
}

// ------------------------------------------------------------ retries

const RETRY: &str = r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],
  "retryPolicy":{"maxAttempts":2,"initialBackoff":"0.1s","maxBackoff":"1s",
  "backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]}"#;

/// A channel (idle timeout 200 ms) whose every call's first attempt fails
/// UNAVAILABLE with a server pushback of 800 ms: the call waits 800 ms
/// between its attempts.
fn retrying_channel(rt: &Runtime, server: &TestServer) -> (Channel, StateLog) {
    let mut opts = plaintext();
    opts.idle_timeout = Some(Duration::from_millis(200));
    let log = StateLog::default();
    log.attach(&mut opts);
    let ch = Channel::new(rt, &format!("ipv4:{}", server.addr()), Some(RETRY), opts).unwrap();
    ch.connect().unwrap();
    log.wait_nth(Ready, 1, T);
    (ch, log)
}

const PUSHBACK: [(&str, &str); 2] = [("x-fail-attempts", "1"), ("x-pushback-ms", "800")];

fn pushback_md() -> Vec<(String, String)> {
    PUSHBACK
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// gRPC-Go's idleness manager counts an RPC from OnCallBegin (newClientStream)
/// to OnCallEnd (the RPC's end, retries included: clientStream.finish), so
/// a channel never goes IDLE while an RPC waits out a retry backoff
/// (internal/idle/idle.go; TestManager_Enabled_OngoingCall: "when there is
/// an ongoing RPC, the channel does not enter idle mode"). A blocking
/// `Reader::unary` waiting 800 ms (server pushback) between its attempts,
/// on a channel with a 200 ms idle timeout, must see the channel stay
/// READY throughout.
#[test]
fn a_blocking_call_in_retry_backoff_keeps_the_channel_out_of_idle() {
    let server = backend();
    let rt = Runtime::new().unwrap();
    let (ch, log) = retrying_channel(&rt, &server);
    let md = pushback_md();
    let opts = CallOptions {
        deadline: Some(Instant::now() + T),
        metadata: &md,
        ..Default::default()
    };
    let t0 = Instant::now();
    let r = ch.reader().unary("/echo.Echo/Unary", b"ping", &opts);
    let took = t0.elapsed();
    assert!(r.is_ok(), "the retried call: {r:?}");
    assert!(
        took >= Duration::from_millis(700),
        "no pushback wait: {took:?}"
    );
    assert_eq!(
        log.all(),
        vec![Connecting, Ready],
        "the channel's states during one RPC (two attempts, 800 ms apart)"
    );
}

/// The same with a started call (`unary_start`), whose retry backoff is a
/// loop timer.
#[test]
fn a_started_call_in_retry_backoff_keeps_the_channel_out_of_idle() {
    let server = backend();
    let rt = Runtime::new().unwrap();
    let (ch, log) = retrying_channel(&rt, &server);
    let md = pushback_md();
    let opts = CallOptions {
        deadline: Some(Instant::now() + T),
        metadata: &md,
        ..Default::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    ch.unary_start("/echo.Echo/Unary", b"ping", &opts, move |r| {
        let _ = tx.send(r.map(|_| ()).map_err(|s| s.code()));
    })
    .unwrap();
    let r = rx.recv_timeout(T).expect("the call ends");
    let took = t0.elapsed();
    assert_eq!(r, Ok(()));
    assert!(
        took >= Duration::from_millis(700),
        "no pushback wait: {took:?}"
    );
    assert_eq!(
        log.all(),
        vec![Connecting, Ready],
        "the channel's states during one RPC (two attempts, 800 ms apart)"
    );
}

// ------------------------------------------------------------ edges

/// Only RPCs (and Connect) leave IDLE in gRPC-Go: GetState, channelz,
/// ResetConnectBackoff and WaitForStateChange do not (they never call
/// idlenessMgr.OnCallBegin / ExitIdleMode). On an IDLE channel, neither
/// do switchyard's observers: no resolver built, no connection.
#[test]
fn observing_an_idle_channel_does_not_leave_idle() {
    let server = backend();
    let m = resolver_for("idleness-observe", &server);
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.idle_timeout = Some(Duration::from_millis(200));
    let ch = Channel::new(&rt, "idleness-observe:///test.server", None, opts).unwrap();
    let check = |when: &str| {
        assert_eq!(ch.get_state(false), Idle, "{when}");
        let snap = ch.snapshot().unwrap();
        assert!(snap.subchannels.is_empty(), "{when}");
        ch.reset_connect_backoff().unwrap();
        let _ = ch.method_config("/echo.Echo/Unary");
        assert_eq!(ch.reader().channel_state(), Idle, "{when}");
        assert_eq!(
            ch.wait_for_state_change(Idle, Some(Instant::now() + Duration::from_millis(50))),
            None,
            "{when}"
        );
        ch.sync().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ch.state(), Idle, "{when}");
    };
    check("never used");
    assert_eq!(m.builds(), 0);
    assert_eq!(server.connections(), 0);
    call(&ch, T).unwrap();
    wait_state(&ch, Idle);
    wait_until("the connection closed", || server.connections() == 0);
    check("gone IDLE");
    assert_eq!((m.builds(), m.closes()), (1, 1));
    assert_eq!(server.connections(), 0);
}

/// The smallest idle timeout (1 ns: gRPC-Go accepts any non-negative one;
/// grpc-java clamps to 1 s): the channel goes IDLE between RPCs all the
/// time, yet every RPC is served.
#[test]
fn a_one_nanosecond_idle_timeout_still_serves_every_rpc() {
    let server = backend();
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.idle_timeout = Some(Duration::from_nanos(1));
    let log = StateLog::default();
    log.attach(&mut opts);
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), None, opts).unwrap();
    for i in 0..20 {
        if let Err(e) = call(&ch, T) {
            panic!("RPC {i}: {e:?}; states {:?}", log.all());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_state(&ch, Idle);
}

/// The largest idle timeout: no overflow, never IDLE.
#[test]
fn a_huge_idle_timeout_never_goes_idle() {
    let server = backend();
    let (clock, rt) = manual_runtime();
    let mut opts = plaintext();
    opts.idle_timeout = Some(Duration::MAX);
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), None, opts).unwrap();
    call(&ch, T).unwrap();
    for _ in 0..4 {
        clock.advance(Duration::from_secs(1000 * 86_400));
        ch.sync().unwrap();
        ch.sync().unwrap();
    }
    assert_eq!(ch.state(), Ready);
    call(&ch, T).unwrap();
}

/// Close racing an exit from IDLE (gRPC-Go: ExitIdleMode and Close both
/// hold the idleness manager's lock; a closed channel never rebuilds its
/// resolver): RPCs that wake an IDLE channel while another thread closes
/// it either succeed or fail, promptly, and once closed every resolver and
/// policy built is closed, no connection left.
#[test]
fn close_racing_an_exit_from_idle_leaves_nothing_open() {
    let server = backend();
    let m = resolver_for("idleness-closeexit", &server);
    let (counts, config) = wrapped("idleness_rr_closeexit");
    let (clock, rt) = manual_runtime();
    for i in 0..16u64 {
        let mut opts = plaintext();
        opts.idle_timeout = Some(Duration::from_secs(60));
        let ch = Arc::new(
            Channel::new(
                &rt,
                "idleness-closeexit:///test.server",
                Some(&config),
                opts,
            )
            .unwrap(),
        );
        call(&ch, T).unwrap();
        advance(
            &clock,
            &ch,
            Duration::from_secs(60),
            Duration::from_secs(130),
        );
        assert_eq!(ch.state(), Idle, "iteration {i}");
        let barrier = Arc::new(Barrier::new(3));
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let (ch, barrier) = (ch.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    std::thread::sleep(Duration::from_micros(i * 100));
                    let t0 = Instant::now();
                    let r = call(&ch, Duration::from_secs(5)).map(|_| ());
                    (r, t0.elapsed())
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(Duration::from_micros(800));
        ch.close();
        for c in callers {
            let (r, took) = c.join().unwrap();
            assert!(
                took < Duration::from_secs(4),
                "iteration {i}: {r:?} after {took:?}"
            );
        }
        assert_eq!(
            m.builds(),
            m.closes(),
            "iteration {i}: a resolver left open"
        );
        assert_eq!(
            counts.builds.load(Ordering::SeqCst),
            counts.closes.load(Ordering::SeqCst),
            "iteration {i}: a policy left open"
        );
    }
    wait_until("every connection closed", || server.connections() == 0);
}
