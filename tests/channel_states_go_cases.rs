//! gRPC-Go's channel state-transition and idleness tests, ported case
//! by case onto switchyard (test/clientconn_state_transition_test.go,
//! internal/idle/idle_e2e_test.go, test/balancer_test.go TestWaitForReady,
//! test/end2end_test.go TestFailFast). Every channel state is recorded
//! through `ChannelOptions::on_state_change` (gRPC-Go's
//! SubscribeToConnectivityStateChanges), from the channel's creation on.
//! Servers: hand-written TCP listeners on 127.0.0.1 that send a bare
//! SETTINGS frame, close, or stay silent (as the Go tests' raw servers do),
//! and the echo test server.

#[path = "common/mod.rs"]
mod common;
#[path = "common/raw_server.rs"]
mod raw_server;

use common::*;
use raw_server::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use switchyard::backoff::BackoffConfig;
use switchyard::picker::QueuePicker;
use switchyard::resolver::{Resolver, ResolverBuilder, ResolverClientConn, ResolverState, Target};
use switchyard::ConnectivityState::{self, *};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

// ------------------------------------------------------------ state log

/// Every aggregate state the channel reported, in order.
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

    /// Waits (at most `within`) until some state satisfies `f`; the log then.
    fn wait_for(&self, what: &str, within: Duration, f: impl Fn(&[ConnectivityState]) -> bool) {
        let deadline = Instant::now() + within;
        let mut g = self.0 .0.lock().unwrap();
        while !f(&g) {
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; states so far {g:?}"
            );
            g = self.0 .1.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    fn wait_state(&self, s: ConnectivityState, within: Duration) {
        self.wait_for(&format!("{s}"), within, |v| v.contains(&s));
    }

    /// Waits until the `n`-th occurrence of `s`.
    fn wait_nth(&self, s: ConnectivityState, n: usize, within: Duration) {
        self.wait_for(&format!("{s} #{n}"), within, |v| {
            v.iter().filter(|x| **x == s).count() >= n
        });
    }
}

fn logged(mut opts: ChannelOptions) -> (ChannelOptions, StateLog) {
    let log = StateLog::default();
    log.attach(&mut opts);
    (opts, log)
}

const T: Duration = Duration::from_secs(10);

// ------------------------------------------------------------ raw servers
// Raw, send_settings, keep_reading, settings_and_keep, silent and
// close_at_once: tests/common/raw_server.rs.

fn no_backoff_opts(initial: Duration, min_connect: Duration) -> ChannelOptions {
    let mut o = plaintext();
    o.backoff = BackoffConfig {
        initial,
        max: initial.max(Duration::from_millis(100)),
        min_connect_timeout: min_connect,
        ..Default::default()
    };
    o
}

// ------------------------------------------------------------ resolvers

/// A manual resolver (gRPC-Go's manual.Resolver): the test pushes through
/// the latest `ResolverClientConn`; `initial` is pushed at each build;
/// `fail_first` builds fail with "simulated resolver build failure".
struct Manual {
    scheme: String,
    cc: Arc<Mutex<Option<ResolverClientConn>>>,
    initial: Mutex<Option<ResolverState>>,
    fail_first: AtomicUsize,
    builds: AtomicUsize,
}

struct ManualResolver;
impl Resolver for ManualResolver {
    fn resolve_now(&mut self) {}
    fn close(&mut self) {}
}

impl ResolverBuilder for Manual {
    fn scheme(&self) -> &str {
        &self.scheme
    }
    fn build(&self, _: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
        self.builds.fetch_add(1, Ordering::AcqRel);
        if self.fail_first.load(Ordering::Acquire) > 0 {
            self.fail_first.fetch_sub(1, Ordering::AcqRel);
            return Err("simulated resolver build failure".into());
        }
        if let Some(s) = self.initial.lock().unwrap().clone() {
            cc.update(s).unwrap();
        }
        *self.cc.lock().unwrap() = Some(cc);
        Ok(Box::new(ManualResolver))
    }
}

fn manual(scheme: &str, initial: Option<ResolverState>, fail_first: usize) -> Arc<Manual> {
    let m = Arc::new(Manual {
        scheme: scheme.to_string(),
        cc: Default::default(),
        initial: Mutex::new(initial),
        fail_first: AtomicUsize::new(fail_first),
        builds: AtomicUsize::new(0),
    });
    resolver::register(m.clone());
    m
}

impl Manual {
    fn cc(&self) -> ResolverClientConn {
        wait_until("the resolver built", || self.cc.lock().unwrap().is_some());
        self.cc.lock().unwrap().clone().unwrap()
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

fn addrs_state(addrs: &[SocketAddr]) -> ResolverState {
    ResolverState {
        endpoints: addrs
            .iter()
            .map(|a| Endpoint::from(Address::new(a.to_string())))
            .collect(),
        service_config: None,
    }
}

fn echo_server() -> TestServer {
    TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap()
}

fn call(ch: &Channel, wait_for_ready: bool, within: Duration) -> Result<UnaryResponse, Status> {
    let opts = CallOptions {
        deadline: Some(Instant::now() + within),
        wait_for_ready: Some(wait_for_ready),
        ..Default::default()
    };
    ch.reader().unary("/echo.Echo/Unary", b"ping", &opts)
}

// ====================================================================
// test/clientconn_state_transition_test.go
// ====================================================================

/// TestStateTransitions_SingleAddress/ServerSendsPreface.
#[test]
fn single_address_server_sends_preface() {
    let server = Raw::start(settings_and_keep);
    let rt = Runtime::new().unwrap();
    let (opts, log) = logged(no_backoff_opts(
        Duration::from_millis(50),
        Duration::from_millis(500),
    ));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    assert_eq!(ch.state(), Idle);
    ch.connect().unwrap();
    log.wait_state(Ready, T);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log.all(), vec![Connecting, Ready]);
}

/// TestStateTransitions_SingleAddress/ConnectionClosesBeforeServerPreface:
/// CONNECTING, TRANSIENT_FAILURE, and (pick_first's sticky TF, A62) no
/// CONNECTING while it keeps retrying.
#[test]
fn single_address_connection_closes_before_server_preface() {
    let server = Raw::start(close_at_once);
    let rt = Runtime::new().unwrap();
    let (opts, log) = logged(no_backoff_opts(
        Duration::from_millis(30),
        Duration::from_millis(500),
    ));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    log.wait_state(TransientFailure, T);
    wait_until("retries", || server.accepted() >= 4);
    assert_eq!(log.all(), vec![Connecting, TransientFailure]);
    drop(ch);
}

/// TestStateTransitions_SingleAddress/ServerNeverSendsPreface: the connect
/// deadline (MinConnectTimeout 100 ms) fails the attempt.
#[test]
fn single_address_server_never_sends_preface() {
    let server = Raw::start(silent);
    let rt = Runtime::new().unwrap();
    // gRPC-Go's test has no backoff (backoff.Config{}): an attempt's
    // deadline is max(MinConnectTimeout, backoff), so a long backoff would
    // lengthen it.
    let (opts, log) = logged(no_backoff_opts(
        Duration::from_millis(20),
        Duration::from_millis(100),
    ));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    let start = Instant::now();
    ch.connect().unwrap();
    log.wait_state(TransientFailure, T);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(90), "TF after {took:?}");
    assert_eq!(log.all(), vec![Connecting, TransientFailure]);
    // And the server sees the connection closed by the client.
    wait_until("the client to close its attempt", || server.closed() >= 1);
}

/// TestStateTransitions_ReadyToConnecting: READY, the server closes the
/// connection, IDLE; Connect then CONNECTING (the next attempt hangs).
#[test]
fn ready_to_idle_then_connect_gives_connecting() {
    let go = Arc::new(AtomicBool::new(false));
    let g = go.clone();
    let server = Raw::start(move |mut s, i, stop| {
        if i == 0 {
            send_settings(&mut s);
            keep_reading(&mut s, stop, || g.load(Ordering::Acquire))
        } else {
            keep_reading(&mut s, stop, || false)
        }
    });
    let rt = Runtime::new().unwrap();
    let (opts, log) = logged(plaintext());
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    log.wait_state(Ready, T);
    go.store(true, Ordering::Release);
    log.wait_state(Idle, T);
    ch.connect().unwrap();
    log.wait_nth(Connecting, 2, T);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log.all(), vec![Connecting, Ready, Idle, Connecting]);
}

/// TestStateTransitions_TriesAllAddrsBeforeTransientFailure: both
/// addresses fail; TRANSIENT_FAILURE only once both were tried.
#[test]
fn tries_all_addresses_before_transient_failure() {
    let s1 = Arc::new(Raw::start(close_at_once));
    let s2 = Arc::new(Raw::start(close_at_once));
    let rt = Runtime::new().unwrap();
    let mut opts = no_backoff_opts(Duration::from_secs(3600), Duration::from_secs(20));
    let seen_at_tf = Arc::new(Mutex::new(None));
    let log = StateLog::default();
    {
        let (l, a, b, at) = (log.0.clone(), s1.clone(), s2.clone(), seen_at_tf.clone());
        opts.on_state_change = Some(Arc::new(move |s| {
            if s == TransientFailure {
                at.lock()
                    .unwrap()
                    .get_or_insert((a.accepted(), b.accepted()));
            }
            l.0.lock().unwrap().push(s);
            l.1.notify_all();
        }));
    }
    let target = format!("ipv4:{},{}", s1.addr, s2.addr);
    let ch = Channel::new(&rt, &target, None, opts).unwrap();
    ch.connect().unwrap();
    log.wait_state(TransientFailure, T);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log.all(), vec![Connecting, TransientFailure]);
    assert_eq!(
        *seen_at_tf.lock().unwrap(),
        Some((1, 1)),
        "accepted by each at TF"
    );
    drop(ch);
}

/// TestStateTransitions_MultipleAddrsEntersReady.
#[test]
fn multiple_addresses_enter_ready_then_idle_then_connecting() {
    let go = Arc::new(AtomicBool::new(false));
    let g = go.clone();
    let s1 = Raw::start(move |mut s, i, stop| {
        if i == 0 {
            send_settings(&mut s);
            keep_reading(&mut s, stop, || g.load(Ordering::Acquire))
        } else {
            keep_reading(&mut s, stop, || false)
        }
    });
    let s2 = Raw::start(silent);
    let rt = Runtime::new().unwrap();
    let (opts, log) = logged(plaintext());
    let target = format!("ipv4:{},{}", s1.addr, s2.addr);
    let ch = Channel::new(&rt, &target, None, opts).unwrap();
    ch.connect().unwrap();
    log.wait_state(Ready, T);
    go.store(true, Ordering::Release);
    log.wait_state(Idle, T);
    ch.connect().unwrap();
    log.wait_nth(Connecting, 2, T);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log.all(), vec![Connecting, Ready, Idle, Connecting]);
    assert_eq!(s2.accepted(), 0, "the second address was never needed");
}

/// A policy that, on its first update, publishes these states in rapid
/// succession (gRPC-Go's TestConnectivityStateSubscriber).
const RAPID: [ConnectivityState; 7] =
    [Connecting, Ready, Idle, Connecting, Idle, Connecting, Ready];

struct RapidBuilder;
struct Rapid;
impl Builder for RapidBuilder {
    fn name(&self) -> &str {
        "probe_states_rapid"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(Rapid)
    }
}
impl Balancer for Rapid {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        _: ClientConnState,
    ) -> Result<(), String> {
        for s in RAPID {
            cc.update_state(s, Box::new(QueuePicker));
        }
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

/// TestConnectivityStateSubscriber: updates sent by the balancer in rapid
/// succession are not missed by the subscriber; SHUTDOWN last.
#[test]
fn connectivity_state_subscriber_sees_every_rapid_update() {
    registry::register(Arc::new(RapidBuilder));
    let m = manual("probe-states-rapid", None, 0);
    let rt = Runtime::new().unwrap();
    let (opts, log) = logged(plaintext());
    let ch = Channel::new(
        &rt,
        "probe-states-rapid:///",
        Some(r#"{"loadBalancingConfig":[{"probe_states_rapid":{}}]}"#),
        opts,
    )
    .unwrap();
    ch.connect().unwrap();
    m.cc().update(ResolverState::default()).unwrap();
    ch.sync().unwrap();
    ch.close();
    let mut want = RAPID.to_vec();
    want.push(Shutdown);
    assert_eq!(log.all(), want);
}

/// TestStateTransitions_WithConnect_NoResolverUpdate.
#[test]
fn connect_with_no_resolver_update_stays_connecting() {
    let _m = manual("probe-states-noupdate1", None, 0);
    let rt = Runtime::new().unwrap();
    let (opts, log) = logged(plaintext());
    let ch = Channel::new(&rt, "probe-states-noupdate1:///", None, opts).unwrap();
    assert_eq!(ch.state(), Idle);
    ch.connect().unwrap();
    assert_eq!(ch.state(), Connecting);
    let r = ch.wait_for_state_change(
        Connecting,
        Some(Instant::now() + Duration::from_millis(200)),
    );
    assert_eq!(r, None);
    assert_eq!(log.all(), vec![Connecting]);
}

/// TestStateTransitions_WithRPC_NoResolverUpdate: the RPC moves the channel
/// to CONNECTING, where it stays; the RPC fails at its deadline.
#[test]
fn rpc_with_no_resolver_update_stays_connecting() {
    let _m = manual("probe-states-noupdate2", None, 0);
    let rt = Runtime::new().unwrap();
    let (opts, log) = logged(plaintext());
    let ch = Channel::new(&rt, "probe-states-noupdate2:///", None, opts).unwrap();
    let e = call(&ch, false, Duration::from_millis(300)).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert_eq!(ch.state(), Connecting);
    assert_eq!(log.all(), vec![Connecting]);
}

/// TestStateTransitions_ResolverBuildFailure/exitIdleByRPC (the idle
/// timeout standing in for EnterIdleModeForTesting): RPCs fail UNAVAILABLE
/// with the build error; CONNECTING, TF, IDLE, CONNECTING, READY.
#[test]
fn resolver_build_failure_then_idle_then_ready_by_rpc() {
    let server = echo_server();
    let m = manual(
        "probe-states-buildfail1",
        Some(addrs_state(&[server.addr()])),
        1,
    );
    let rt = Runtime::new().unwrap();
    let (mut opts, log) = logged(plaintext());
    opts.idle_timeout = Some(Duration::from_millis(300));
    let ch = Channel::new(&rt, "probe-states-buildfail1:///", None, opts).unwrap();
    assert_eq!(ch.state(), Idle);
    for i in 0..2 {
        let e = call(&ch, false, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "RPC {i}: {e:?}");
        assert!(
            e.message().contains("simulated resolver build failure"),
            "RPC {i}: {e:?}"
        );
    }
    log.wait_state(Idle, T);
    call(&ch, false, T).expect("the RPC after IDLE succeeds");
    assert_eq!(
        log.all(),
        vec![Connecting, TransientFailure, Idle, Connecting, Ready]
    );
    assert_eq!(m.builds.load(Ordering::Acquire), 2);
}

/// TestStateTransitions_ResolverBuildFailure/exitIdleByConnecting.
#[test]
fn resolver_build_failure_then_idle_then_ready_by_connect() {
    let server = echo_server();
    let _m = manual(
        "probe-states-buildfail2",
        Some(addrs_state(&[server.addr()])),
        1,
    );
    let rt = Runtime::new().unwrap();
    let (mut opts, log) = logged(plaintext());
    opts.idle_timeout = Some(Duration::from_millis(300));
    let ch = Channel::new(&rt, "probe-states-buildfail2:///", None, opts).unwrap();
    ch.connect().unwrap();
    log.wait_state(Idle, T);
    ch.connect().unwrap();
    log.wait_state(Ready, T);
    assert_eq!(
        log.all(),
        vec![Connecting, TransientFailure, Idle, Connecting, Ready]
    );
}

/// TestStateTransitions_WithRPC_ResolverUpdateContainsNoAddresses.
#[test]
fn resolver_update_with_no_addresses_fails_rpcs_then_idle() {
    let _m = manual("probe-states-noaddrs", Some(ResolverState::default()), 0);
    let rt = Runtime::new().unwrap();
    let (mut opts, log) = logged(plaintext());
    opts.idle_timeout = Some(Duration::from_millis(300));
    let ch = Channel::new(&rt, "probe-states-noaddrs:///", None, opts).unwrap();
    for i in 0..2 {
        let e = call(&ch, false, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "RPC {i}: {e:?}");
        assert!(
            e.message()
                .contains("name resolver error: produced zero addresses"),
            "RPC {i}: {e:?}"
        );
    }
    log.wait_state(Idle, T);
    assert_eq!(log.all(), vec![Connecting, TransientFailure, Idle]);
}

// ====================================================================
// internal/idle/idle_e2e_test.go (real time, short idle timeouts)
// ====================================================================

/// TestChannelIdleness_Enabled_NoActivity: READY, then IDLE with no RPC,
/// the connection closed.
#[test]
fn idleness_enabled_no_activity() {
    let m = manual("probe-states-idle1", None, 0);
    let server = echo_server();
    let rt = Runtime::new().unwrap();
    let (mut opts, log) = logged(plaintext());
    opts.idle_timeout = Some(Duration::from_millis(300));
    let ch = Channel::new(&rt, "probe-states-idle1:///test.server", RR, opts).unwrap();
    ch.connect().unwrap();
    m.push(&[server.addr()]);
    log.wait_state(Ready, T);
    let ready_at = Instant::now();
    log.wait_state(Idle, T);
    let took = ready_at.elapsed();
    assert!(took < Duration::from_secs(2), "IDLE after {took:?}");
    wait_until("the connection closed", || server.connections() == 0);
    assert_eq!(log.all(), vec![Connecting, Ready, Idle]);
}

/// TestChannelIdleness_Enabled_ActiveSinceLastCheck: RPCs every quarter of
/// the timeout for three timeouts keep the channel READY.
#[test]
fn idleness_enabled_active_since_last_check() {
    let server = echo_server();
    let rt = Runtime::new().unwrap();
    let (mut opts, log) = logged(plaintext());
    opts.idle_timeout = Some(Duration::from_millis(400));
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), RR, opts).unwrap();
    ch.connect().unwrap();
    log.wait_state(Ready, T);
    let end = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < end {
        call(&ch, false, Duration::from_secs(5)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(log.all(), vec![Connecting, Ready]);
}

/// gRPC-Go's idleness manager times out a channel with no call in flight
/// whatever its state: a channel CONNECTING to a server that never answers
/// (no RPC waiting) goes IDLE after the timeout, its attempt abandoned.
#[test]
fn idleness_while_connecting_with_no_calls() {
    let server = Raw::start(silent);
    let rt = Runtime::new().unwrap();
    let (mut opts, log) = logged(no_backoff_opts(
        Duration::from_secs(1),
        Duration::from_secs(20),
    ));
    opts.idle_timeout = Some(Duration::from_millis(300));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    log.wait_state(Idle, T);
    wait_until("the attempt's socket closed", || server.closed() >= 1);
    assert_eq!(log.all(), vec![Connecting, Idle]);
}

/// gRPC-Go's `Connect` on a channel that is not in idle mode only asks the
/// policy to exit idle (`balancerWrapper.exitIdle`): it is no call, and the
/// idleness manager (which counts only `OnCallBegin`/`OnCallEnd`) still
/// takes the channel IDLE after the timeout. C-core's GetState(true) acts
/// only on an IDLE channel and never touches the idle filter's call count
/// either. So calling `connect` on a READY channel every 50 ms does not
/// keep it out of IDLE for ever.
#[test]
fn connect_on_a_ready_channel_is_not_use() {
    let server = echo_server();
    let rt = Runtime::new().unwrap();
    let (mut opts, log) = logged(plaintext());
    opts.idle_timeout = Some(Duration::from_millis(300));
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), None, opts).unwrap();
    ch.connect().unwrap();
    log.wait_state(Ready, T);
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end && !log.all().contains(&Idle) {
        if ch.state() == Ready {
            ch.connect().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        log.all().contains(&Idle),
        "never IDLE in 5 timeouts with only connect() calls: {:?}",
        log.all()
    );
}

// ====================================================================
// test/balancer_test.go TestWaitForReady, test/end2end_test.go TestFailFast
// ====================================================================

/// TestWaitForReady: after a resolver error, fail-fast RPCs fail
/// UNAVAILABLE; a wait-for-ready one waits, and is served once addresses
/// come.
#[test]
fn wait_for_ready_waits_through_a_resolver_error() {
    let m = manual("probe-states-wfr", None, 0);
    let server = echo_server();
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(Channel::new(&rt, "probe-states-wfr:///", None, plaintext()).unwrap());
    ch.connect().unwrap();
    m.cc().report_error("fake resolver error").unwrap();
    ch.sync().unwrap();
    let e = call(&ch, false, Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let c = ch.clone();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(call(&c, true, T));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "the wait-for-ready RPC ended before addresses came"
    );
    m.push(&[server.addr()]);
    rx.recv_timeout(T)
        .expect("the wait-for-ready RPC ends")
        .expect("and is served");
    waiter.join().unwrap();
}

/// TestFailFast: the server stops; fail-fast RPCs come back UNAVAILABLE
/// (soon), and keep doing so while the channel reconnects.
#[test]
fn fail_fast_rpcs_fail_unavailable_once_the_server_is_gone() {
    let server = echo_server();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr()),
        None,
        plaintext_fast_backoff(),
    )
    .unwrap();
    call(&ch, false, T).unwrap();
    server.stop();
    let deadline = Instant::now() + T;
    loop {
        assert!(Instant::now() < deadline, "never UNAVAILABLE");
        match call(&ch, false, T) {
            Err(e) if e.code() == Code::Unavailable => break,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    for _ in 0..5 {
        let e = call(&ch, false, T).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    }
}

/// The same as `idleness_enabled_active_since_last_check`, with calls
/// started on the loop (`unary_start`), each waited for.
#[test]
fn idleness_enabled_active_since_last_check_started_calls() {
    let server = echo_server();
    let rt = Runtime::new().unwrap();
    let (mut opts, log) = logged(plaintext());
    opts.idle_timeout = Some(Duration::from_millis(400));
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), RR, opts).unwrap();
    ch.connect().unwrap();
    log.wait_state(Ready, T);
    let end = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < end {
        let opts = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            ..Default::default()
        };
        echo_call_started(&ch, &opts).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(log.all(), vec![Connecting, Ready]);
}

fn echo_call_started(ch: &Channel, options: &CallOptions<'_>) -> Result<UnaryResponse, Status> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    ch.unary_start("/echo.Echo/Unary", b"ping", options, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the started call completes")
}

/// The root of the two `active_since_last_check` failures, with picks
/// alone: a pick from a Reader made for it (as `ch.reader().unary(..)`, the
/// started calls' reader made afresh once none is in flight, a C caller's
/// `sy_reader_new` per RPC, a new Python thread) is a pick, so it is use of
/// the channel ("With no pick and no call in flight for idle_timeout it goes
/// back to IDLE", README; gRPC-Go counts every RPC, `OnCallBegin`). A pick
/// every 50 ms, each from a new reader, must keep a channel with a 300 ms
/// timeout READY.
#[test]
fn picks_from_new_readers_keep_the_channel_in_use() {
    let server = echo_server();
    let rt = Runtime::new().unwrap();
    let (mut opts, log) = logged(plaintext());
    opts.idle_timeout = Some(Duration::from_millis(300));
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), None, opts).unwrap();
    ch.connect().unwrap();
    log.wait_state(Ready, T);
    let end = Instant::now() + Duration::from_millis(1200);
    let (mut picks, mut failed) = (0, 0);
    while Instant::now() < end {
        // A pick of an IDLE channel queues: `try_pick` says so at once.
        if ch.reader().try_pick(&PickInfo::default()).is_err() {
            failed += 1;
        }
        picks += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        log.all(),
        vec![Connecting, Ready],
        "{picks} picks 50 ms apart, each from a new reader ({failed} found no READY subchannel)"
    );
}

/// gRPC-Go's WaitForStateChange on a closed channel: from SHUTDOWN it
/// waits for the context (SHUTDOWN is final); from any other state it
/// returns at once.
#[test]
fn wait_for_state_change_after_close() {
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "ipv4:127.0.0.1:1", None, plaintext()).unwrap();
    ch.close();
    assert_eq!(ch.state(), Shutdown);
    let t0 = Instant::now();
    assert_eq!(
        ch.wait_for_state_change(Shutdown, Some(Instant::now() + Duration::from_millis(100))),
        None
    );
    assert!(t0.elapsed() >= Duration::from_millis(90));
    assert_eq!(
        ch.wait_for_state_change(Idle, Some(Instant::now() + Duration::from_secs(5))),
        Some(Shutdown)
    );
}
