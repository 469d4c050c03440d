//! Graceful subchannel shutdown, end to end: a subchannel its policy shuts
//! down (its address left the resolver's list) stops taking new streams, lets
//! the streams in flight finish, each bounded by its own deadline, then closes
//! its connection. Channel close still closes at once. Real backends on
//! 127.0.0.1, with calls held by the test server's `x-delay-ms`.

use crate::support::*;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchyard::*;
use switchyard_testserver::TestServer;

/// How long the server holds a "long" call.
const LONG_MS: u64 = 5000;

/// One echo call with `x-delay-ms: delay_ms`, on its own thread; returns the
/// outcome (the backend's port on success) and how long it took.
fn start_call(
    ch: &Arc<Channel>,
    delay_ms: u64,
    timeout: Duration,
) -> JoinHandle<(Result<u16, Status>, Duration)> {
    let ch = ch.clone();
    std::thread::spawn(move || {
        let metadata = [("x-delay-ms".to_string(), delay_ms.to_string())];
        let start = Instant::now();
        let opts = CallOptions {
            deadline: Some(start + timeout),
            wait_for_ready: Some(true),
            metadata: &metadata,
            ..Default::default()
        };
        let result = ch.reader().unary("/echo.Echo/Unary", b"x", &opts).map(|r| {
            let text = String::from_utf8(r.message).unwrap();
            text.strip_prefix("x|port=").unwrap().parse().unwrap()
        });
        (result, start.elapsed())
    })
}

/// Waits (bounded) until `server` holds `n` calls.
fn wait_in_flight(server: &TestServer, n: u64) {
    wait_until("the calls to reach the server", || server.in_flight() == n);
}

/// Waits (bounded) until `server` has no connection left.
fn wait_closed(server: &TestServer, what: &str) {
    wait_until(what, || server.connections() == 0);
}

/// A call in flight on b0 when an update replaces b0 with b1: it completes
/// OK on b0, new calls go to b1, b0's connection stays open while the call
/// runs and closes once it is done. `watches`: the health Watch streams b0
/// also counts in flight (1 with health checking on).
fn removed_address_drains(config: Option<&str>, watches: u64) {
    let servers = start_servers(2);
    let (b0, b1) = (&servers[0], &servers[1]);
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(channel(&rt, &target(&servers[..1]), config, plaintext()));
    let long = start_call(&ch, LONG_MS, Duration::from_secs(20));
    wait_in_flight(b0, 1 + watches);

    ch.update_addresses(vec![Address::new(b1.addr().to_string())])
        .unwrap();
    ch.sync().unwrap();
    // New calls go to the backend that remains, meanwhile.
    assert_eq!(echo(&mut ch.reader(), true).unwrap(), b1.port());
    // Draining, not closed: the call still runs on b0's connection (the
    // Watch, if any, is cancelled).
    wait_in_flight(b0, 1);
    assert_eq!(b0.connections(), 1, "the draining connection closed early");

    let (result, _) = long.join().unwrap();
    assert_eq!(
        result.expect("a call in flight on a removed address completes"),
        b0.port()
    );
    // Its last stream done, the drained connection closes.
    wait_closed(b0, "the drained connection to close");
    assert_eq!(b0.resets(), 0, "no call was reset");
    assert_eq!(echo(&mut ch.reader(), false).unwrap(), b1.port());
}

#[test]
fn pick_first_lets_a_call_in_flight_on_a_removed_address_complete() {
    removed_address_drains(None, 0);
}

#[test]
fn round_robin_lets_a_call_in_flight_on_a_removed_address_complete() {
    removed_address_drains(RR, 0);
}

/// The health Watch is a stream too, but not a call to wait for: it is
/// cancelled when the subchannel shuts down, so the drained connection
/// still closes once the last real call is done.
#[test]
fn a_health_checked_connection_drains_and_closes_too() {
    removed_address_drains(RR_HEALTH, 1);
}

/// Draining does not extend a call: a stream on a removed address still
/// ends at its own deadline (the server held it for far longer), and the
/// connection closes when it does.
#[test]
fn a_drained_stream_still_ends_at_its_own_deadline() {
    let servers = start_servers(2);
    let (b0, b1) = (&servers[0], &servers[1]);
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(channel(&rt, &target(&servers[..1]), RR, plaintext()));
    // Warm up first, so the deadline is spent on the server, not connecting.
    assert_eq!(echo(&mut ch.reader(), true).unwrap(), b0.port());
    let held = start_call(&ch, 60_000, Duration::from_millis(1000));
    wait_in_flight(b0, 1);
    ch.update_addresses(vec![Address::new(b1.addr().to_string())])
        .unwrap();
    let (result, took) = held.join().unwrap();
    let e = result.expect_err("the server held the call past its deadline");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    // Ended by its deadline (1 s), not by the server's 60 s.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    wait_closed(b0, "the drained connection to close after its last stream");
    // Its RST_STREAM, or (when h2 closes the drained connection in the same
    // poll, before the reset it queued is written) the connection's close:
    // either way the server hears the stream is over. The server's handler
    // counts it in a task of its own, possibly after the connection is
    // seen closed: waited for.
    wait_until("the server to hear the expired stream is over", || {
        b0.resets() + b0.cut_off() >= 1
    });
    assert_eq!(
        b0.resets() + b0.cut_off(),
        1,
        "the expired stream is reset, or its connection closed under it"
    );
}

/// Channel close does not drain: the calls in flight end at once (far
/// sooner than the server would answer) and every connection closes.
#[test]
fn channel_close_closes_at_once() {
    let servers = start_servers(2);
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(channel(&rt, &target(&servers), RR, plaintext()));
    warm_up(&mut ch.reader(), 2);
    let calls: Vec<_> = (0..4)
        .map(|_| start_call(&ch, 60_000, Duration::from_secs(60)))
        .collect();
    wait_until("the calls to reach both servers", || {
        servers[0].in_flight() + servers[1].in_flight() == 4
    });
    let closed_at = Instant::now();
    ch.close();
    for call in calls {
        let (result, _) = call.join().unwrap();
        let e = result.expect_err("the channel closed under the call");
        // As gRPC-Go's calls when their ClientConn closes: CANCELLED, not
        // the UNAVAILABLE of a lost connection, with its words.
        assert_eq!(e.code(), Code::Cancelled, "{e:?}");
        assert!(
            e.message()
                .contains("grpc: the client connection is closing"),
            "{e:?}"
        );
    }
    // Not held for the server's 60 s, nor for the calls' own deadlines.
    assert!(closed_at.elapsed() < Duration::from_secs(30));
    for s in &servers {
        wait_closed(s, "every connection to close with the channel");
    }
}
