//! Channel idleness against a real DNS server and real backends: a channel
//! resolves and connects only once used, goes back to IDLE after its idle
//! timeout (a manual clock moves time; no test waits for it), and the next
//! pick brings it back. A call in flight keeps it in use.

use super::dns::Dnsmasq;
use super::support::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::*;

const IDLE: Duration = Duration::from_secs(60);

fn manual_runtime() -> (Arc<ManualClock>, Runtime) {
    let clock = Arc::new(ManualClock::new());
    let rt = Runtime::with_config(RuntimeConfig {
        clock: clock.clone(),
        seed: Some(7),
    })
    .unwrap();
    (clock, rt)
}

/// Moves the loop's clock past one idle timeout and lets the loop act.
fn one_timeout(clock: &ManualClock, ch: &Channel) {
    clock.advance(IDLE + Duration::from_secs(1));
    // Twice: a loop turn may run its commands before its timers.
    ch.sync().unwrap();
    ch.sync().unwrap();
}

fn lazy(rt: &Runtime, target: &str) -> Channel {
    idle_after(rt, target, IDLE)
}

/// A plaintext channel to `target`, not yet used, with this idle timeout.
fn idle_after(rt: &Runtime, target: &str, timeout: Duration) -> Channel {
    let opts = ChannelOptions {
        idle_timeout: Some(timeout),
        ..plaintext()
    };
    Channel::new(rt, target, None, opts).unwrap()
}

#[test]
fn a_channel_resolves_and_connects_only_once_used() {
    let server = &start_servers(1)[0];
    let dns = Dnsmasq::start("127.0.0.1 svc.test\n", &[]);
    let rt = Runtime::new().unwrap();
    let target = format!("dns://{}/svc.test:{}", dns.server(), server.port());
    let ch = lazy(&rt, &target);
    let mut r = ch.reader();
    ch.sync().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ch.state(), ConnectivityState::Idle);
    assert_eq!(dns.queries("A", "svc.test"), 0, "resolved while IDLE");
    assert_eq!(server.connections(), 0, "connected while IDLE");
    // A fail-fast call queues while the channel connects, then is served.
    assert_eq!(echo(&mut r, false).unwrap(), server.port());
    assert_eq!(ch.state(), ConnectivityState::Ready);
    assert_eq!(dns.queries("A", "svc.test"), 1);
}

#[test]
fn an_unused_channel_goes_idle_and_the_next_pick_brings_it_back() {
    let server = &start_servers(1)[0];
    let dns = Dnsmasq::start("127.0.0.1 svc.test\n", &[]);
    let (clock, rt) = manual_runtime();
    let target = format!("dns://{}/svc.test:{}", dns.server(), server.port());
    let ch = lazy(&rt, &target);
    let mut r = ch.reader();
    for _ in 0..3 {
        echo(&mut r, true).unwrap();
    }
    // Picks within each timeout keep it in use...
    for _ in 0..3 {
        one_timeout(&clock, &ch);
        echo(&mut r, true).unwrap();
        assert_eq!(ch.state(), ConnectivityState::Ready);
    }
    // ...a whole timeout without one does not: resolver, policy and
    // connection go.
    one_timeout(&clock, &ch);
    assert_eq!(
        ch.state(),
        ConnectivityState::Ready,
        "one look: a pick was seen"
    );
    one_timeout(&clock, &ch);
    assert_eq!(ch.state(), ConnectivityState::Idle);
    wait_until("the connection closed", || server.connections() == 0);
    assert!(ch.snapshot().unwrap().subchannels.is_empty());
    // The next (fail-fast) call brings it all back, resolving again.
    assert_eq!(echo(&mut r, false).unwrap(), server.port());
    assert_eq!(ch.state(), ConnectivityState::Ready);
    assert_eq!(dns.queries("A", "svc.test"), 2);
}

#[test]
fn a_call_in_flight_keeps_the_channel_in_use() {
    let server = &start_servers(1)[0];
    let (clock, rt) = manual_runtime();
    let ch = Arc::new(lazy(&rt, &format!("ipv4:127.0.0.1:{}", server.port())));
    echo(&mut ch.reader(), true).unwrap();
    // A call the server holds for a while, on a thread of its own.
    let slow = {
        let ch = ch.clone();
        std::thread::spawn(move || {
            let metadata = [("x-delay-ms".to_string(), "5000".to_string())];
            let opts = CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(30)),
                wait_for_ready: Some(true),
                metadata: &metadata,
                ..Default::default()
            };
            ch.reader().unary("/echo.Echo/Unary", b"slow", &opts)
        })
    };
    wait_until("the slow call is in flight", || server.in_flight() == 1);
    for _ in 0..3 {
        one_timeout(&clock, &ch);
        assert_eq!(ch.state(), ConnectivityState::Ready, "idle under a call");
    }
    slow.join().unwrap().unwrap();
    one_timeout(&clock, &ch);
    one_timeout(&clock, &ch);
    assert_eq!(ch.state(), ConnectivityState::Idle);
}

#[test]
fn a_zero_idle_timeout_never_goes_idle() {
    let server = &start_servers(1)[0];
    let (clock, rt) = manual_runtime();
    let target = format!("ipv4:127.0.0.1:{}", server.port());
    let ch = idle_after(&rt, &target, Duration::ZERO);
    echo(&mut ch.reader(), true).unwrap();
    for _ in 0..4 {
        one_timeout(&clock, &ch);
    }
    assert_eq!(ch.state(), ConnectivityState::Ready);
}

/// A resolver that never answers: the channel stays CONNECTING and
/// publishes nothing while a pick waits.
struct Silent;
struct SilentResolver;
impl resolver::ResolverBuilder for Silent {
    fn scheme(&self) -> &str {
        "idle-test-silent"
    }
    fn build(
        &self,
        _: &resolver::Target,
        _: resolver::ResolverClientConn,
    ) -> Result<Box<dyn resolver::Resolver>, String> {
        Ok(Box::new(SilentResolver))
    }
}
impl resolver::Resolver for SilentResolver {
    fn resolve_now(&mut self) {}
    fn close(&mut self) {}
}

#[test]
fn a_pick_waiting_for_resolution_keeps_the_channel_in_use() {
    resolver::register(Arc::new(Silent));
    let (clock, rt) = manual_runtime();
    let ch = Arc::new(lazy(&rt, "idle-test-silent:///x"));
    let waiter = {
        let ch = ch.clone();
        std::thread::spawn(move || {
            let options = PickOptions {
                deadline: Some(Instant::now() + Duration::from_secs(2)),
                wait_for_ready: true,
            };
            ch.reader().pick(&PickInfo::default(), &options).map(drop)
        })
    };
    wait_until("connecting", || ch.state() == ConnectivityState::Connecting);
    let generation = ch.picker_generation();
    for _ in 0..3 {
        one_timeout(&clock, &ch);
        assert_eq!(
            ch.state(),
            ConnectivityState::Connecting,
            "idle under a waiting pick"
        );
    }
    // Only the loop's looks moved the generation: nothing woke the pick.
    assert_eq!(ch.picker_generation(), generation + 3);
    assert!(waiter.join().unwrap().is_err(), "nothing to pick");
    one_timeout(&clock, &ch);
    one_timeout(&clock, &ch);
    assert_eq!(ch.state(), ConnectivityState::Idle);
}

/// gRPC goes idle one timeout after the last use, not a timeout after the
/// first look that found none: a pick right after the channel comes up
/// lets it go idle once 60 s (plus at most a sixteenth) have passed, never
/// as late as two timeouts.
#[test]
fn the_channel_goes_idle_one_timeout_after_its_last_use() {
    let server = &start_servers(1)[0];
    let (clock, rt) = manual_runtime();
    let ch = lazy(&rt, &format!("ipv4:127.0.0.1:{}", server.port()));
    echo(&mut ch.reader(), true).unwrap();
    // In steps of a fortieth of the timeout, each one looked at.
    let step = IDLE / 40;
    let mut passed = Duration::ZERO;
    while ch.state() != ConnectivityState::Idle {
        assert!(
            passed <= IDLE + IDLE / 16 + 2 * step,
            "still {:?} after {passed:?}",
            ch.state()
        );
        clock.advance(step);
        passed += step;
        ch.sync().unwrap();
        ch.sync().unwrap();
    }
    assert!(passed >= IDLE, "idle after {passed:?}, before a timeout");
}

/// gRPC's `GetState(try_to_connect)`: without the flag it only reads the
/// state; with it an IDLE channel connects (and reports IDLE this once);
/// SHUTDOWN after close.
#[test]
fn get_state_connects_an_idle_channel_only_when_asked() {
    let server = &start_servers(1)[0];
    let rt = Runtime::new().unwrap();
    let ch = lazy(&rt, &format!("ipv4:127.0.0.1:{}", server.port()));
    assert_eq!(ch.get_state(false), ConnectivityState::Idle);
    ch.sync().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ch.get_state(false), ConnectivityState::Idle);
    assert_eq!(server.connections(), 0, "connected without being asked");
    assert_eq!(ch.get_state(true), ConnectivityState::Idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut state = ConnectivityState::Idle;
    while state != ConnectivityState::Ready {
        state = ch
            .wait_for_state_change(state, Some(deadline))
            .expect("READY in time");
    }
    // The server counts a connection once it has read the client's
    // preface, which may come after the client saw its SETTINGS.
    wait_until("the server to count the connection", || {
        server.connections() >= 1
    });
    assert_eq!(server.connections(), 1);
    ch.close();
    assert_eq!(ch.get_state(true), ConnectivityState::Shutdown);
}

/// gRPC-Go's TestChannelIdleness_Enabled_IdleTimeoutRacesWithRPCs: calls
/// one idle timeout apart race the channel going IDLE, again and again;
/// every one succeeds (going IDLE drains connections, never cuts a call
/// that picked just before).
#[test]
fn calls_racing_the_idle_timeout_all_succeed() {
    let server = &start_servers(1)[0];
    let rt = Runtime::new().unwrap();
    let target = format!("ipv4:127.0.0.1:{}", server.port());
    let ch = idle_after(&rt, &target, Duration::from_millis(40));
    let mut r = ch.reader();
    let mut went_idle = 0;
    for i in 0..40 {
        assert_eq!(echo(&mut r, false).unwrap(), server.port(), "call {i}");
        std::thread::sleep(Duration::from_millis(40 + (i % 5) * 5));
        if ch.state() == ConnectivityState::Idle {
            went_idle += 1;
        }
    }
    assert!(went_idle > 0, "the channel never went IDLE between calls");
}

/// gRPC-Go's Connect leaves an IDLE channel CONNECTING: so does `connect`
/// by the time it returns.
#[test]
fn connect_returns_with_the_channel_connecting() {
    let server = &start_servers(1)[0];
    let (_clock, rt) = manual_runtime();
    let ch = lazy(&rt, &format!("ipv4:127.0.0.1:{}", server.port()));
    assert_eq!(ch.state(), ConnectivityState::Idle);
    ch.connect().unwrap();
    assert_ne!(ch.state(), ConnectivityState::Idle);
}

/// The idle timeout counts from the end of the last call (gRPC-Go's
/// lastCallEndTime), not from the last look that saw it in flight: a call
/// that ends just before a look keeps the channel out of IDLE for a whole
/// timeout after it.
#[test]
fn the_idle_timeout_counts_from_the_last_calls_end() {
    let server = &start_servers(1)[0];
    let (clock, rt) = manual_runtime();
    let ch = Arc::new(lazy(&rt, &format!("ipv4:127.0.0.1:{}", server.port())));
    echo(&mut ch.reader(), true).unwrap();
    let look = IDLE / 16;
    // Moves the clock by `by` in steps the looks follow.
    let advance = |by: Duration| {
        let mut left = by;
        while !left.is_zero() {
            let step = left.min(look / 4);
            clock.advance(step);
            left -= step;
            ch.sync().unwrap();
            ch.sync().unwrap();
        }
    };
    // A call in flight for 500 ms (real time; the loop's clock stands).
    let c2 = ch.clone();
    let call = std::thread::spawn(move || {
        let md = [("x-delay-ms".to_string(), "500".to_string())];
        let opts = CallOptions {
            metadata: &md,
            wait_for_ready: Some(true),
            ..Default::default()
        };
        c2.reader()
            .unary("/echo.Echo/Unary", b"ping", &opts)
            .map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(200));
    // A look sees it in flight; the clock then moves on to just before
    // the next look, and the call ends.
    advance(look);
    advance(look - Duration::from_millis(100));
    call.join().unwrap().unwrap();
    // A timeout after the call's end, less a little: still in use.
    advance(IDLE - Duration::from_secs(1));
    assert_ne!(
        ch.state(),
        ConnectivityState::Idle,
        "idle before a whole timeout"
    );
    advance(look * 2);
    assert_eq!(ch.state(), ConnectivityState::Idle);
}
