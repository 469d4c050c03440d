//! Probe: gRPC-Go's connection-establishment and connection-backoff tests
//! (clientconn_test.go, dial_test.go, test/clientconn_state_transition_test.go)
//! ported onto switchyard's managed connector, with raw TCP listeners on
//! 127.0.0.1 that count (and time) the client's connection attempts on the
//! server side. Backoff settings (gRPC's ConnectParams) go through
//! `ChannelOptions::backoff` (`BackoffConfig`: initial, multiplier, jitter,
//! max, min_connect_timeout), with short values.
//!
//! Cases already in tests/channel_states_go_cases.rs (the SingleAddress
//! table's three rows, ReadyToConnecting, TriesAllAddrs, MultipleAddrs
//! EntersReady) and tests/conn_go_cases.rs / tests/managed
//! (default 1 s / 1.6 s spacing, silent server at the min connect timeout,
//! READY after the whole SETTINGS, ResetConnectBackoff, refused ×1.6 with
//! jitter) are not repeated.

#[path = "common/mod.rs"]
mod common;
#[path = "common/raw_server.rs"]
mod raw_server;

use common::*;
use raw_server::*;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use switchyard::backoff::BackoffConfig;
use switchyard::ConnectivityState::{self, *};
use switchyard::*;

const T: Duration = Duration::from_secs(10);
const PF: Option<&str> = Some(r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#);

// ------------------------------------------------------------ raw servers

// ------------------------------------------------------------ client side

fn backoff(
    initial_ms: u64,
    multiplier: f64,
    jitter: f64,
    max_ms: u64,
    min_connect_ms: u64,
) -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(initial_ms),
        multiplier,
        jitter,
        max: Duration::from_millis(max_ms),
        min_connect_timeout: Duration::from_millis(min_connect_ms),
    }
}

/// The states reported so far, each with when.
type Timeline = Mutex<Vec<(ConnectivityState, Instant)>>;

/// Every aggregate state the channel reported, with when.
#[derive(Clone, Default)]
struct StateLog(Arc<(Timeline, Condvar)>);

impl StateLog {
    fn attach(&self, opts: &mut ChannelOptions) {
        let log = self.0.clone();
        opts.on_state_change = Some(Arc::new(move |s| {
            log.0.lock().unwrap().push((s, Instant::now()));
            log.1.notify_all();
        }));
    }

    fn all(&self) -> Vec<ConnectivityState> {
        self.0 .0.lock().unwrap().iter().map(|x| x.0).collect()
    }

    /// Waits (at most `within`) for the `n`-th (1-based) occurrence of `s`.
    fn wait_nth(&self, s: ConnectivityState, n: usize, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        let mut g = self.0 .0.lock().unwrap();
        loop {
            if let Some(x) = g.iter().filter(|x| x.0 == s).nth(n - 1) {
                return x.1;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {s} #{n}; states so far {:?}",
                g.iter().map(|x| x.0).collect::<Vec<_>>()
            );
            g = self.0 .1.wait_timeout(g, deadline - now).unwrap().0;
        }
    }
}

fn opts_with(b: BackoffConfig) -> (ChannelOptions, StateLog) {
    let mut o = plaintext();
    o.backoff = b;
    let log = StateLog::default();
    log.attach(&mut o);
    (o, log)
}

fn call(ch: &Channel, wait_for_ready: bool, within: Duration) -> Result<UnaryResponse, Status> {
    let opts = CallOptions {
        deadline: Some(Instant::now() + within),
        wait_for_ready: Some(wait_for_ready),
        ..Default::default()
    };
    ch.reader().unary("/echo.Echo/Unary", b"ping", &opts)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn gaps(t: &[Instant]) -> Vec<f64> {
    t.windows(2).map(|w| secs(w[1] - w[0])).collect()
}

// ====================================================================
// dial_test.go
// ====================================================================

/// TestDialWaitsForServerSettings: the server accepts, waits 300 ms, then
/// sends SETTINGS; the channel is CONNECTING until then and READY only
/// after the SETTINGS were sent.
#[test]
fn ready_waits_for_the_server_settings() {
    let sent: Arc<Mutex<Option<Instant>>> = Arc::default();
    let s2 = sent.clone();
    let server = Raw::start(move |mut s, _, stop| {
        std::thread::sleep(Duration::from_millis(300));
        *s2.lock().unwrap() = Some(Instant::now());
        send_settings(&mut s);
        keep_reading(&mut s, stop, || false)
    });
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(BackoffConfig::default());
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(ch.state(), Connecting);
    let ready = log.wait_nth(Ready, 1, T);
    let sent = sent.lock().unwrap().expect("settings sent");
    assert!(
        ready >= sent,
        "READY {:?} before the SETTINGS",
        sent - ready
    );
    assert_eq!(log.all(), vec![Connecting, Ready]);
    assert_eq!(server.accepted(), 1);
}

/// TestDialWaitsForServerSettingsAndFails: a server that accepts and never
/// sends SETTINGS, no backoff (backoff.Config{}) and MinConnectTimeout
/// 250 ms; a wait-for-ready RPC with a 1 s deadline fails
/// DEADLINE_EXCEEDED after more than one connection attempt, and (Go's
/// picker_wrapper: "latest balancer error: ...") its message carries the
/// connection error (Go: "error reading server preface: context deadline
/// exceeded").
#[test]
fn wait_for_ready_rpc_fails_at_its_deadline_after_several_preface_timeouts() {
    let server = Raw::start(silent);
    let rt = Runtime::new().unwrap();
    let (opts, _log) = opts_with(backoff(0, 1.6, 0.2, 0, 250));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    let start = Instant::now();
    let e = call(&ch, true, Duration::from_secs(1)).unwrap_err();
    let took = start.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(took >= Duration::from_millis(950), "ended after {took:?}");
    assert!(server.accepted() >= 2, "{} attempts", server.accepted());
    assert!(
        e.message().contains("timed out"),
        "the deadline's status says nothing of the connection error: {:?}",
        e.message()
    );
}

// ====================================================================
// clientconn_test.go
// ====================================================================

/// TestCloseConnectionWhenServerPrefaceNotReceived: connection 1 gets no
/// SETTINGS; after MinConnectTimeout (500 ms) the client closes it and
/// reconnects; connection 2 gets SETTINGS and the client keeps it (for a
/// second here: no further attempt, not closed by the client).
#[test]
fn preface_timeout_closes_the_connection_and_the_next_one_is_kept() {
    let server = Raw::start(|mut s, i, stop| {
        if i == 0 {
            keep_reading(&mut s, stop, || false)
        } else {
            send_settings(&mut s);
            keep_reading(&mut s, stop, || false)
        }
    });
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(100, 1.6, 0.2, 100, 500));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    let t = server.wait_accepted(2, T);
    let gap = secs(t[1] - t[0]);
    assert!(
        (0.45..1.5).contains(&gap),
        "reconnected {gap:.3} s after the first attempt, want ~0.5 s"
    );
    wait_until("the first connection closed by the client", || {
        server.conns()[0].client_closed
    });
    log.wait_nth(Ready, 1, T);
    std::thread::sleep(Duration::from_secs(1));
    let c = server.conns();
    assert_eq!(c.len(), 2, "no further attempt");
    assert!(c[1].ended.is_none(), "the good connection was closed");
    assert_eq!(ch.state(), Ready);
    assert_eq!(log.all(), vec![Connecting, TransientFailure, Ready]);
}

/// TestBackoffWhenNoServerPrefaceReceived: every connection is accepted
/// and closed at once; with BaseDelay 200 ms, Multiplier 2, Jitter 0 and
/// MinConnectTimeout 1 s the attempts come 200, 400, 800 ms apart: each
/// gap longer than the one before (and here: near its nominal value).
#[test]
fn backoff_grows_when_no_server_preface_is_received() {
    let server = Raw::start(close_at_once);
    let rt = Runtime::new().unwrap();
    let (opts, _log) = opts_with(backoff(200, 2.0, 0.0, 120_000, 1000));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    let t = server.wait_accepted(4, T);
    let g = gaps(&t[..4]);
    for (k, nominal) in [0.2, 0.4, 0.8].into_iter().enumerate() {
        assert!(
            g[k] >= 0.8 * nominal && g[k] <= nominal + 0.3,
            "gap {k}: {:.3} s, want {nominal} s (all {g:?})",
            g[k]
        );
    }
    assert!(g[0] < g[1] && g[1] < g[2], "not growing: {g:?}");
    ch.close();
}

/// The spec's MAX_BACKOFF: backoffs grow ×3 from 100 ms up to the 250 ms
/// cap and stay there (jitter 0).
#[test]
fn backoff_is_capped_at_max_backoff() {
    let server = Raw::start(close_at_once);
    let rt = Runtime::new().unwrap();
    let (opts, _log) = opts_with(backoff(100, 3.0, 0.0, 250, 1000));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    let t = server.wait_accepted(5, T);
    let g = gaps(&t[..5]);
    assert!(
        (0.08..0.35).contains(&g[0]),
        "first gap {:.3} (all {g:?})",
        g[0]
    );
    for k in 1..4 {
        assert!(
            (0.2..0.45).contains(&g[k]),
            "gap {k}: {:.3} s, want the 250 ms cap (all {g:?})",
            g[k]
        );
    }
    ch.close();
}

/// gRPC-Go `resetTransportAndUnlock`: dialDuration = max(MinConnectTimeout,
/// backoff) (the spec: `TryConnect(Max(current_deadline, now() +
/// MIN_CONNECT_TIMEOUT))`). With a 600 ms backoff and a 200 ms min connect
/// timeout, a silent server's first attempt is given 600 ms, not 200 ms.
#[test]
fn connect_deadline_is_the_backoff_when_longer_than_min_connect_timeout() {
    let server = Raw::start(silent);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(600, 1.6, 0.0, 600, 200));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    let connecting = log.wait_nth(Connecting, 1, T);
    let tf = log.wait_nth(TransientFailure, 1, T);
    let took = secs(tf - connecting);
    assert!(
        (0.55..1.5).contains(&took),
        "attempt given up after {took:.3} s, want 0.6 s"
    );
    wait_until("the first connection closed by the client", || {
        server.conns()[0].client_closed
    });
    let c = server.conns();
    let held = secs(c[0].ended.unwrap() - c[0].accepted);
    assert!(held >= 0.55, "the client closed it after {held:.3} s");
    assert!(pick_error(&ch).contains("timed out"), "{}", pick_error(&ch));
    ch.close();
}

/// TestBackoffCancel (its original intent: closing the channel cancels the
/// backoff): a channel waiting out a 1 s backoff after a failed attempt is
/// closed; close returns at once, the channel is SHUTDOWN and no attempt
/// follows.
#[test]
fn close_during_backoff_ends_the_attempts() {
    let server = Raw::start(close_at_once);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(1000, 1.6, 0.0, 1000, 1000));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    log.wait_nth(TransientFailure, 1, T);
    let t0 = Instant::now();
    ch.close();
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(300), "close took {took:?}");
    assert_eq!(ch.state(), Shutdown);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(server.accepted(), 1, "attempts after close");
    assert_eq!(log.all().last(), Some(&Shutdown));
}

/// The same with the runtime dropped during the backoff: no further
/// attempt either.
#[test]
fn dropping_the_runtime_during_backoff_ends_the_attempts() {
    let server = Raw::start(close_at_once);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(500, 1.6, 0.0, 500, 1000));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    log.wait_nth(TransientFailure, 1, T);
    let t0 = Instant::now();
    drop(rt);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "drop took {:?}",
        t0.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(server.accepted(), 1, "attempts after the runtime went");
    assert_eq!(ch.state(), Shutdown);
}

/// Fail-fast RPCs during a backoff fail UNAVAILABLE at once with the last
/// connection error (Go's TRANSIENT_FAILURE picker: `balancer.
/// TransientFailureError(lastErr)`), and start no connection attempt.
#[test]
fn fail_fast_rpcs_during_backoff_fail_at_once_and_do_not_reconnect() {
    let server = Raw::start(close_at_once);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(1500, 1.6, 0.0, 1500, 1000));
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    let tf = log.wait_nth(TransientFailure, 1, T);
    for i in 0..5 {
        let t0 = Instant::now();
        let e = call(&ch, false, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "RPC {i}: {e:?}");
        assert!(t0.elapsed() < Duration::from_millis(200), "RPC {i} waited");
        assert!(!e.message().is_empty(), "RPC {i}: no reason");
    }
    if tf.elapsed() < Duration::from_millis(1000) {
        assert_eq!(
            server.accepted(),
            1,
            "RPCs started attempts during the backoff"
        );
    }
    // And the backoff still ends in a new attempt.
    server.wait_accepted(2, T);
    ch.close();
}

/// Nothing listens: the attempt is refused, TRANSIENT_FAILURE saying so;
/// a listener that comes up at once gets the next attempt only after the
/// backoff (600 ms here, jitter 0; not before 0.8 × it), and the channel
/// then goes READY.
#[test]
fn refused_connection_goes_transient_failure_then_retries_after_the_backoff() {
    let port = free_port();
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(600, 1.6, 0.0, 600, 1000));
    let ch = Channel::new(&rt, &format!("ipv4:127.0.0.1:{port}"), None, opts).unwrap();
    ch.connect().unwrap();
    let connecting = log.wait_nth(Connecting, 1, T);
    log.wait_nth(TransientFailure, 1, T);
    let e = pick_error(&ch);
    assert!(e.to_lowercase().contains("refused"), "{e}");
    let server = Raw::start_on(
        TcpListener::bind(("127.0.0.1", port)).unwrap(),
        settings_and_keep,
    );
    let t = server.wait_accepted(1, T);
    let waited = secs(t[0] - connecting);
    assert!(
        (0.48..1.5).contains(&waited),
        "next attempt {waited:.3} s after the first, want 0.6 s"
    );
    log.wait_nth(Ready, 1, T);
    assert_eq!(log.all(), vec![Connecting, TransientFailure, Ready]);
    ch.close();
}

// ====================================================================
// Backoff reset after a READY connection is lost (clientconn.go:
// `ac.backoffIdx = 0` on success; onClose: "Always go idle and wait for
// the LB policy to initiate a new connection attempt")
// ====================================================================

/// A server whose connections 0 and 1 close at once, connection 2 serves
/// (SETTINGS) until `lose` is set, and later ones close at once.
fn flaky_server(lose: Arc<AtomicBool>) -> Raw {
    Raw::start(move |mut s, i, stop| {
        if i == 2 {
            send_settings(&mut s);
            let l = lose.clone();
            keep_reading(&mut s, stop, move || l.load(Ordering::Acquire))
        } else {
            false
        }
    })
}

/// round_robin reconnects a subchannel that went IDLE at once: after the
/// READY connection is lost, the next attempt comes at once (not after the
/// 1.2 s the failures before had grown the backoff to), and the one after
/// it the initial 300 ms later: the backoff started over.
#[test]
fn backoff_starts_over_after_a_ready_connection_is_lost_round_robin() {
    let lose = Arc::new(AtomicBool::new(false));
    let server = flaky_server(lose.clone());
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(300, 2.0, 0.0, 10_000, 2000));
    let ch = Channel::new(&rt, &server.target(), RR, opts).unwrap();
    ch.connect().unwrap();
    log.wait_nth(Ready, 1, T);
    let g = gaps(&server.times());
    assert!(g.len() == 2 && g[0] >= 0.24 && g[1] >= 0.48, "{g:?}");
    std::thread::sleep(Duration::from_millis(100));
    lose.store(true, Ordering::Release);
    let t = server.wait_accepted(5, T);
    let lost = server.conns()[2].ended.unwrap();
    let first = secs(t[3] - lost);
    let second = secs(t[4] - t[3]);
    assert!(
        first < 0.2,
        "reconnected {first:.3} s after the loss, want at once"
    );
    assert!(
        (0.24..0.7).contains(&second),
        "then {second:.3} s, want the initial 0.3 s (1.2 s: the old backoff)"
    );
    ch.close();
}

/// pick_first: the lost connection leaves the channel IDLE (no attempt
/// until asked); `connect` then tries at once, and a failure there backs
/// off by the initial 300 ms, not the grown 1.2 s.
#[test]
fn backoff_starts_over_after_a_ready_connection_is_lost_pick_first() {
    let lose = Arc::new(AtomicBool::new(false));
    let server = flaky_server(lose.clone());
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(300, 2.0, 0.0, 10_000, 2000));
    let ch = Channel::new(&rt, &server.target(), PF, opts).unwrap();
    ch.connect().unwrap();
    log.wait_nth(Ready, 1, T);
    lose.store(true, Ordering::Release);
    log.wait_nth(Idle, 1, T);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(server.accepted(), 3, "pick_first reconnected while IDLE");
    let asked = Instant::now();
    ch.connect().unwrap();
    let t = server.wait_accepted(5, T);
    let first = secs(t[3] - asked);
    let second = secs(t[4] - t[3]);
    assert!(
        first < 0.2,
        "connected {first:.3} s after connect(), want at once"
    );
    assert!(
        (0.24..0.7).contains(&second),
        "then {second:.3} s, want the initial 0.3 s (1.2 s: the old backoff)"
    );
    assert_eq!(
        log.all()[..4],
        [Connecting, TransientFailure, Ready, Idle],
        "{:?}",
        log.all()
    );
    ch.close();
}

// ====================================================================
// test/clientconn_state_transition_test.go rows not in
// channel_states_go_cases.rs
// ====================================================================

/// SingleAddress/ConnectionClosesBeforeClientPreface on real TCP: the
/// server sends SETTINGS and closes at once. Go (pipe listener) sees
/// CONNECTING, TRANSIENT_FAILURE; over TCP the SETTINGS may be read
/// first (Go: `createTransport` "onClose was already called ... Consider it
/// a success and set the new state to Idle"). Either way pick_first does
/// not spin: at most two attempts in 600 ms, and the channel ends IDLE or
/// TRANSIENT_FAILURE.
#[test]
fn server_closing_right_after_its_settings_does_not_spin() {
    let server = Raw::start(|mut s, _, _| {
        send_settings(&mut s);
        false
    });
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(1000, 1.6, 0.2, 1000, 1000));
    let ch = Channel::new(&rt, &server.target(), PF, opts).unwrap();
    ch.connect().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let states = log.all();
    assert!(
        server.accepted() <= 2,
        "{} attempts, states {states:?}",
        server.accepted()
    );
    assert_eq!(states.first(), Some(&Connecting), "{states:?}");
    assert!(
        matches!(states.last(), Some(Idle) | Some(TransientFailure)),
        "{states:?}"
    );
    ch.close();
}

/// TestNewClientWithMultipleBackendsNotSendingServerPreface (and the
/// brief's "first address fails"): the first address accepts and closes,
/// the second serves; pick_first moves on within the same pass, the
/// channel goes CONNECTING, READY (no TRANSIENT_FAILURE), each server
/// sees one attempt.
#[test]
fn first_address_fails_second_serves_without_transient_failure() {
    let s1 = Raw::start(close_at_once);
    let s2 = Raw::start(settings_and_keep);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(1000, 1.6, 0.2, 1000, 2000));
    let target = format!("ipv4:{},{}", s1.addr, s2.addr);
    let ch = Channel::new(&rt, &target, PF, opts).unwrap();
    ch.connect().unwrap();
    log.wait_nth(Ready, 1, T);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log.all(), vec![Connecting, Ready]);
    assert_eq!((s1.accepted(), s2.accepted()), (1, 1));
    // The winner is the second address: it is the one kept open.
    assert!(s2.conns()[0].ended.is_none());
    ch.close();
}

/// The first address refuses (nothing listens), the second serves: the
/// same, CONNECTING then READY.
#[test]
fn first_address_refused_second_serves_without_transient_failure() {
    let port = free_port();
    let s2 = Raw::start(settings_and_keep);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(1000, 1.6, 0.2, 1000, 2000));
    let target = format!("ipv4:127.0.0.1:{port},{}", s2.addr);
    let ch = Channel::new(&rt, &target, PF, opts).unwrap();
    ch.connect().unwrap();
    log.wait_nth(Ready, 1, T);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log.all(), vec![Connecting, Ready]);
    assert_eq!(s2.accepted(), 1);
    ch.close();
}

/// gRFC A61's Happy Eyeballs (gRPC-Go pickfirst `connectionDelayInterval`
/// 250 ms): the first address accepts and never sends SETTINGS (its
/// attempt would last the 20 s default min connect timeout); the second is
/// tried 250 ms later without waiting for it, and serves.
#[test]
fn silent_first_address_does_not_hold_up_the_second() {
    let s1 = Raw::start(silent);
    let s2 = Raw::start(settings_and_keep);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(BackoffConfig::default());
    let target = format!("ipv4:{},{}", s1.addr, s2.addr);
    let ch = Channel::new(&rt, &target, PF, opts).unwrap();
    ch.connect().unwrap();
    let ready = log.wait_nth(Ready, 1, Duration::from_secs(3));
    let t1 = s1.times()[0];
    let t2 = s2.times()[0];
    let delay = secs(t2 - t1);
    assert!(
        (0.2..1.0).contains(&delay),
        "second tried {delay:.3} s after the first"
    );
    assert!(ready >= t2);
    assert_eq!(log.all(), vec![Connecting, Ready]);
    // The losing attempt is closed once the other won.
    wait_until("the silent attempt closed by the client", || {
        s1.conns()[0].client_closed
    });
    ch.close();
}

/// Per-address backoff with two failing addresses (TestNewClient_Backoff
/// CountPerRetryGroup's new-pickfirst behaviour: a backoff per address
/// subchannel): both close at once; after the first pass both are retried,
/// each about one initial backoff (400 ms, jitter 0) after its previous
/// attempt, never in a tight loop.
#[test]
fn two_failing_addresses_back_off_each() {
    let s1 = Raw::start(close_at_once);
    let s2 = Raw::start(close_at_once);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(400, 2.0, 0.0, 10_000, 2000));
    let target = format!("ipv4:{},{}", s1.addr, s2.addr);
    let ch = Channel::new(&rt, &target, PF, opts).unwrap();
    ch.connect().unwrap();
    log.wait_nth(TransientFailure, 1, T);
    let a = s1.wait_accepted(2, T);
    let b = s2.wait_accepted(2, T);
    for (name, t) in [("first", &a), ("second", &b)] {
        let g = secs(t[1] - t[0]);
        assert!(
            (0.32..1.0).contains(&g),
            "{name} address retried after {g:.3} s"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        s1.accepted() <= 3 && s2.accepted() <= 3,
        "{} / {}",
        s1.accepted(),
        s2.accepted()
    );
    ch.close();
}

// ====================================================================
// Backoff and the policy's own actions (gRPC-Go pickfirst.go)
// ====================================================================

fn push(ch: &Channel, addrs: &[SocketAddr]) {
    ch.update_addresses(addrs.iter().map(|a| Address::new(a.to_string())).collect())
        .unwrap();
}

/// `connect` (Go's `ClientConn.Connect`, pick_first's ExitIdle) on a
/// channel whose only subchannel waits out a backoff in TRANSIENT_FAILURE
/// starts no attempt: only the backoff's end does.
#[test]
fn connect_during_backoff_does_not_cut_it_short() {
    let server = Raw::start(close_at_once);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(1500, 1.6, 0.0, 1500, 1000));
    let ch = Channel::new(&rt, &server.target(), PF, opts).unwrap();
    ch.connect().unwrap();
    let tf = log.wait_nth(TransientFailure, 1, T);
    for _ in 0..5 {
        ch.connect().unwrap();
        let _ = ch.get_state(true);
        std::thread::sleep(Duration::from_millis(50));
    }
    if tf.elapsed() < Duration::from_millis(1100) {
        assert_eq!(
            server.accepted(),
            1,
            "connect() started an attempt during the backoff"
        );
    }
    let t = server.wait_accepted(2, T);
    assert!(secs(t[1] - t[0]) >= 1.2, "{:?}", gaps(&t));
    ch.close();
}

/// pick_first in TRANSIENT_FAILURE gets a new address list (the host as
/// resolver): a new address is tried at once (Go: `startFirstPassLocked`
/// connects the new address's fresh subchannel), the channel goes READY
/// on it without waiting out the old address's 2 s backoff.
#[test]
fn a_new_address_during_backoff_is_tried_at_once() {
    let bad = Raw::start(close_at_once);
    let good = Raw::start(settings_and_keep);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(2000, 1.6, 0.0, 2000, 1000));
    let ch = Channel::new(&rt, "", PF, opts).unwrap();
    push(&ch, &[bad.addr]);
    ch.connect().unwrap();
    log.wait_nth(TransientFailure, 1, T);
    let pushed = Instant::now();
    push(&ch, &[good.addr]);
    let t = good.wait_accepted(1, T);
    let after = secs(t[0] - pushed);
    assert!(
        after < 0.5,
        "new address tried {after:.3} s after the update"
    );
    log.wait_nth(Ready, 1, T);
    assert_eq!(bad.accepted(), 1);
    ch.close();
}

/// The same address list again while its subchannel waits out a 1.5 s
/// backoff: the subchannel is kept (Go: AddressMap reuse; its
/// `requestConnectionLocked` on a TRANSIENT_FAILURE subchannel "has not
/// completed backoff yet", tries nothing), so no attempt comes before the
/// backoff ends.
#[test]
fn the_same_addresses_again_during_backoff_do_not_cut_it_short() {
    let server = Raw::start(close_at_once);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(1500, 1.6, 0.0, 1500, 1000));
    let ch = Channel::new(&rt, "", PF, opts).unwrap();
    push(&ch, &[server.addr]);
    ch.connect().unwrap();
    let tf = log.wait_nth(TransientFailure, 1, T);
    push(&ch, &[server.addr]);
    ch.sync().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    if tf.elapsed() < Duration::from_millis(1100) {
        assert_eq!(
            server.accepted(),
            1,
            "the same address list started an attempt"
        );
    }
    let t = server.wait_accepted(2, T);
    assert!(secs(t[1] - t[0]) >= 1.2, "{:?}", gaps(&t));
    ch.close();
}

/// Closing a channel while an attempt is CONNECTING (a server that never
/// sends SETTINGS, 20 s default deadline) closes that socket at once (Go:
/// `ac.tearDown` cancels the attempt's context).
#[test]
fn close_while_connecting_closes_the_attempt() {
    let server = Raw::start(silent);
    let rt = Runtime::new().unwrap();
    let (opts, _log) = opts_with(BackoffConfig::default());
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    server.wait_accepted(1, T);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ch.state(), Connecting);
    let t0 = Instant::now();
    ch.close();
    let end = Instant::now() + Duration::from_secs(2);
    while !server.conns()[0].client_closed {
        assert!(Instant::now() < end, "the attempt's socket was left open");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(server.accepted(), 1);
}

// ====================================================================
// A server preface that is not one (gRPC-Go http2_client.go
// `readServerPreface`: "first frame received is not a setting frame";
// a bad frame header is a read error): the attempt fails at once, not
// at the connect deadline
// ====================================================================

/// Writes `bytes`, then keeps the connection open (reading) until the
/// client closes it.
fn writes_then_keeps(bytes: &'static [u8]) -> impl Fn(TcpStream, usize, &AtomicBool) -> bool {
    move |mut s, _, stop| {
        let _ = s.write_all(bytes);
        let _ = s.flush();
        keep_reading(&mut s, stop, || false)
    }
}

fn fails_fast_on(bytes: &'static [u8]) {
    let server = Raw::start(writes_then_keeps(bytes));
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(5000, 1.6, 0.0, 5000, 5000));
    let ch = Channel::new(&rt, &server.target(), PF, opts).unwrap();
    ch.connect().unwrap();
    let connecting = log.wait_nth(Connecting, 1, T);
    let tf = log.wait_nth(TransientFailure, 1, T);
    let took = secs(tf - connecting);
    assert!(took < 1.0, "failed after {took:.3} s (the deadline is 5 s)");
    wait_until("the client to close the connection", || {
        server.conns()[0].client_closed
    });
    assert_eq!(log.all(), vec![Connecting, TransientFailure]);
    let e = pick_error(&ch);
    assert!(!e.contains("timed out"), "{e}");
    ch.close();
}

/// An HTTP/1.1 answer instead of a preface.
#[test]
fn an_http1_answer_fails_the_attempt_at_once() {
    fails_fast_on(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
}

/// A PING (a well-formed frame, not SETTINGS) as the first frame.
#[test]
fn a_first_frame_other_than_settings_fails_the_attempt_at_once() {
    fails_fast_on(&[0, 0, 8, 0x6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
}

/// The spec measures a backoff from the attempt's *start* (connection-
/// backoff.md: `SleepUntil(current_deadline)`, `current_deadline = now() +
/// current_backoff` set before `TryConnect`), src/backoff.rs follows it.
/// gRPC-Go starts its timer after the failure (`resetTransportAndUnlock`:
/// `time.NewTimer(backoffFor)` once `tryAllAddrs` failed). A server that
/// hangs up 400 ms after accepting, backoff 300 ms then 600 ms (jitter
/// 0): the spec retries at once after the first failure (its 300 ms have
/// passed), then 600 ms after the second attempt's start (i.e. 200 ms
/// after its failure); gRPC-Go would wait 300 ms and 600 ms after each
/// failure (gaps 0.7 s and 1.0 s).
#[test]
fn backoff_counts_from_the_attempt_start_as_the_spec_says() {
    let server = Raw::start(|s, _, _| {
        std::thread::sleep(Duration::from_millis(400));
        drop(s);
        false
    });
    let rt = Runtime::new().unwrap();
    let (opts, _log) = opts_with(backoff(300, 2.0, 0.0, 10_000, 2000));
    let ch = Channel::new(&rt, &server.target(), PF, opts).unwrap();
    ch.connect().unwrap();
    let t = server.wait_accepted(3, T);
    let g = gaps(&t[..3]);
    assert!(
        (0.38..0.6).contains(&g[0]),
        "gap 0 {:.3} s, want ~0.4 (spec)",
        g[0]
    );
    assert!(
        (0.55..0.85).contains(&g[1]),
        "gap 1 {:.3} s, want ~0.6 (spec)",
        g[1]
    );
    ch.close();
}

// ====================================================================
// The connect deadline covers the TCP handshake itself
// ====================================================================

/// A listening socket with backlog 0 whose accept queue is filled and
/// never drained: Linux drops further SYNs, so a connect to it hangs.
struct Hole {
    fd: i32,
    addr: SocketAddr,
    _fillers: Vec<TcpStream>,
}

impl Hole {
    fn new() -> Hole {
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            sa.sin_port = 0;
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(
                libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len),
                0
            );
            assert_eq!(libc::listen(fd, 0), 0);
            let mut out: libc::sockaddr_in = std::mem::zeroed();
            let mut olen = len;
            libc::getsockname(fd, &mut out as *mut _ as *mut libc::sockaddr, &mut olen);
            let port = u16::from_be(out.sin_port);
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut fillers = Vec::new();
            for _ in 0..4 {
                if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                    fillers.push(s);
                }
            }
            Hole {
                fd,
                addr,
                _fillers: fillers,
            }
        }
    }

    /// Whether a fresh connect now hangs (SYN dropped).
    fn blackholes(&self) -> bool {
        TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err()
    }
}

impl Drop for Hole {
    fn drop(&mut self) {
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// gRPC-Go `createTransport`: the whole attempt (dial included) runs
/// under `connectCtx` with the connect deadline. Against an address whose
/// SYNs are dropped, the attempt fails at the min connect timeout (300 ms)
/// saying it timed out, not at the OS's connect timeout (minutes); the
/// next attempt follows the backoff.
#[test]
fn a_blackholed_tcp_connect_fails_at_the_connect_deadline() {
    let hole = Hole::new();
    if !hole.blackholes() {
        eprintln!("skipped: this kernel does not drop SYNs to a full accept queue");
        return;
    }
    let rt = Runtime::new().unwrap();
    let (mut opts, seen) = recorded_plaintext();
    opts.backoff = backoff(100, 1.6, 0.0, 100, 300);
    let log = StateLog::default();
    log.attach(&mut opts);
    let ch = Channel::new(&rt, &format!("ipv4:{}", hole.addr), PF, opts).unwrap();
    ch.connect().unwrap();
    let connecting = log.wait_nth(Connecting, 1, T);
    let tf = log.wait_nth(TransientFailure, 1, Duration::from_secs(3));
    let took = secs(tf - connecting);
    assert!(
        (0.28..1.2).contains(&took),
        "failed after {took:.3} s, want 0.3 s"
    );
    assert!(pick_error(&ch).contains("timed out"), "{}", pick_error(&ch));
    wait_until("a second attempt", || seen.attempts().len() >= 2);
    ch.close();
}

/// While pick_first stays in TRANSIENT_FAILURE (A62's sticky TF) and keeps
/// retrying, the error RPCs fail with is the latest attempt's (gRPC-Go
/// pickfirst.go `updateSubConnState`: once every subchannel has failed
/// again, `updateBalancerState(TransientFailure, &picker{err:
/// state.ConnectionError})`): first "refused" (nothing listens), then,
/// once a silent server listens there, "timed out".
#[test]
fn sticky_transient_failure_reports_the_latest_connection_error() {
    let port = free_port();
    let rt = Runtime::new().unwrap();
    let (mut opts, seen) = recorded_plaintext();
    opts.backoff = backoff(200, 1.0, 0.0, 200, 300);
    let ch = Channel::new(&rt, &format!("ipv4:127.0.0.1:{port}"), PF, opts).unwrap();
    ch.connect().unwrap();
    wait_state(&ch, TransientFailure);
    let first = pick_error(&ch);
    assert!(first.to_lowercase().contains("refused"), "{first}");
    let server = Raw::start_on(TcpListener::bind(("127.0.0.1", port)).unwrap(), silent);
    server.wait_accepted(1, T);
    // That attempt times out 300 ms later.
    wait_until("the silent server's attempt to time out", || {
        seen.all().iter().any(|s| {
            s.state == TransientFailure && s.error.as_deref().unwrap_or("").contains("timed out")
        })
    });
    ch.sync().unwrap();
    let rpc = call(&ch, false, Duration::from_secs(2)).unwrap_err();
    let now = pick_error(&ch);
    assert!(
        now.contains("timed out") && rpc.message().contains("timed out"),
        "pick: {now:?}; RPC: {:?} (first error {first:?})",
        rpc.message()
    );
    ch.close();
}

/// A subchannel's own states through a failed attempt (gRPC-Go
/// `resetTransportAndUnlock`): CONNECTING, TRANSIENT_FAILURE, then IDLE
/// only when the backoff (400 ms, jitter 0) is over, then CONNECTING for
/// the next attempt.
#[test]
fn subchannel_goes_idle_only_when_its_backoff_ends() {
    let server = Raw::start(close_at_once);
    let rt = Runtime::new().unwrap();
    let (mut opts, seen) = recorded_plaintext();
    opts.backoff = backoff(400, 1.6, 0.0, 400, 1000);
    let ch = Channel::new(&rt, &server.target(), PF, opts).unwrap();
    ch.connect().unwrap();
    server.wait_accepted(2, T);
    let all = seen.all();
    let sc = all[0].sc;
    let states = seen.states_of(sc);
    assert_eq!(
        states[..4],
        [Connecting, TransientFailure, Idle, Connecting],
        "{states:?}"
    );
    let at = |s: ConnectivityState| all.iter().find(|x| x.state == s).unwrap().at;
    let idle_after = secs(at(Idle) - at(Connecting));
    assert!(
        (0.32..0.9).contains(&idle_after),
        "IDLE {idle_after:.3} s after the attempt started, want 0.4 s"
    );
    ch.close();
}

/// An attempt whose SETTINGS come after the backoff (100 ms) but within
/// the connect deadline (2 s) succeeds; no second attempt is started
/// alongside it (the backoff only spaces attempts that failed).
#[test]
fn a_slow_preface_within_the_deadline_is_one_attempt() {
    let server = Raw::start(|mut s, _, stop| {
        std::thread::sleep(Duration::from_millis(500));
        send_settings(&mut s);
        keep_reading(&mut s, stop, || false)
    });
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(100, 1.6, 0.0, 100, 2000));
    let ch = Channel::new(&rt, &server.target(), PF, opts).unwrap();
    ch.connect().unwrap();
    log.wait_nth(Ready, 1, T);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.accepted(), 1);
    assert_eq!(log.all(), vec![Connecting, Ready]);
    ch.close();
}

/// gRPC connection-backoff.md's defaults: INITIAL_BACKOFF 1 s, MULTIPLIER
/// 1.6, JITTER 0.2, MAX_BACKOFF 120 s, MIN_CONNECT_TIMEOUT 20 s; and with
/// them a silent server's attempt is still going after 2.5 s (one attempt,
/// its socket open, CONNECTING).
#[test]
fn defaults_are_the_specs_and_the_default_min_connect_timeout_holds() {
    let d = BackoffConfig::default();
    assert_eq!(d.initial, Duration::from_secs(1));
    assert_eq!(d.multiplier, 1.6);
    assert_eq!(d.jitter, 0.2);
    assert_eq!(d.max, Duration::from_secs(120));
    assert_eq!(d.min_connect_timeout, Duration::from_secs(20));
    assert_eq!(ChannelOptions::default().backoff, d);
    let server = Raw::start(silent);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(BackoffConfig::default());
    let ch = Channel::new(&rt, &server.target(), None, opts).unwrap();
    ch.connect().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(server.accepted(), 1);
    assert!(
        server.conns()[0].ended.is_none(),
        "the attempt was given up"
    );
    assert_eq!(log.all(), vec![Connecting]);
    ch.close();
}

/// An initial backoff above the maximum (gRPC-Go `Exponential.Backoff`:
/// retry 0 is BaseDelay as is, later ones capped at MaxDelay): gaps 400,
/// then 150, 150 ms.
#[test]
fn initial_backoff_above_max_is_used_once_then_capped() {
    let server = Raw::start(close_at_once);
    let rt = Runtime::new().unwrap();
    let (opts, _log) = opts_with(backoff(400, 1.6, 0.0, 150, 1000));
    let ch = Channel::new(&rt, &server.target(), PF, opts).unwrap();
    ch.connect().unwrap();
    let t = server.wait_accepted(4, T);
    let g = gaps(&t[..4]);
    assert!((0.32..0.7).contains(&g[0]), "{g:?}");
    assert!(
        (0.12..0.4).contains(&g[1]) && (0.12..0.4).contains(&g[2]),
        "{g:?}"
    );
    ch.close();
}

/// round_robin over a failing address and a serving one: the channel is
/// READY on the second while the first keeps retrying on its own backoff
/// (gRPC-Go: endpointsharding's pick_first child in TRANSIENT_FAILURE
/// reconnects when its backoff ends): attempts to it 200 then 400 ms
/// apart (×2, jitter 0), never a tight loop.
#[test]
fn round_robin_keeps_backing_off_a_failing_address_while_ready_on_another() {
    let s1 = Raw::start(close_at_once);
    let s2 = Raw::start(settings_and_keep);
    let rt = Runtime::new().unwrap();
    let (opts, log) = opts_with(backoff(200, 2.0, 0.0, 10_000, 1000));
    let target = format!("ipv4:{},{}", s1.addr, s2.addr);
    let ch = Channel::new(&rt, &target, RR, opts).unwrap();
    ch.connect().unwrap();
    log.wait_nth(Ready, 1, T);
    let t = s1.wait_accepted(3, T);
    let g = gaps(&t[..3]);
    assert!((0.16..0.5).contains(&g[0]), "{g:?}");
    assert!((0.32..0.7).contains(&g[1]), "{g:?}");
    assert_eq!(s2.accepted(), 1);
    assert_eq!(ch.state(), Ready);
    ch.close();
}
