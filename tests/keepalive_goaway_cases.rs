//! Client keepalive and GOAWAY, and the client transport around them, as
//! gRPC's own tests check them, in two parts below.
//!
//! ## gRPC-Go
//! gRPC-Go's client keepalive tests (gRFC A8;
//! internal/transport/keepalive_test.go, dial_test.go) and GOAWAY tests
//! (test/goaway_test.go) ported onto switchyard's managed connector. A
//! hand-written HTTP/2 server on 127.0.0.1 (tests/common/frame_server.rs)
//! scripts SETTINGS, PING acks and GOAWAY frames exactly and logs what the
//! client sends (HEADERS, PING, GOAWAY, EOF) with times.
//!
//! Keepalive floor: gRPC-Go raises a client keepalive time under 10 s to
//! 10 s (`dialoptions.go` `WithKeepaliveParams`, `internal.KeepaliveMinPingTime`),
//! and its tests lower `internal.KeepaliveMinPingTime`. switchyard has the
//! same floor (`transport::MIN_KEEPALIVE_TIME`, applied in
//! `ManagedConnector::new`) and the same hook,
//! `switchyard::transport::set_min_keepalive_time_for_testing`
//! (process-wide): every test here sets it to `FLOOR` (100 ms) before it
//! builds its channel, so tests running in parallel agree.
//!
//! ## grpc-java
//! grpc-java's client transport tests ported onto switchyard's
//! managed connector: core/src/test/java/io/grpc/internal/KeepAliveManagerTest.java
//! and netty/src/test/java/io/grpc/netty/NettyClientHandlerTest.java /
//! NettyClientTransportTest.java, where observable through managed unary
//! calls, on the same scripted server (with manual PING acks and a
//! SETTINGS_MAX_CONCURRENT_STREAMS). Not repeated: what the gRPC-Go part,
//! conn_go_cases.rs and channel_java_cases.rs already pin.

#[path = "common/frame_server.rs"]
mod frame_server;
#[path = "common/h2_frames.rs"]
mod h2_frames;
use frame_server::*;
use h2_frames::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use switchyard::backoff::BackoffConfig;
use switchyard::ConnectivityState::*;
use switchyard::*;

/// The keepalive floor every test here uses (see the module docs).
const FLOOR: Duration = Duration::from_millis(100);
const MAX_ID: u32 = 0x7fff_ffff;
const NO_ERROR: u32 = 0x0;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn floor() {
    switchyard::transport::set_min_keepalive_time_for_testing(FLOOR);
}

// ---------------------------------------------------------------------------
// Client side.

fn fast_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        ..Default::default()
    }
}

fn channel_ka(rt: &Runtime, server: &Server, ka: Option<Keepalive>) -> Channel {
    floor();
    Channel::new(
        rt,
        &format!("ipv4:{}", server.addr),
        None,
        ChannelOptions {
            transport: Some(TransportConfig {
                keepalive: ka,
                ..TransportConfig::insecure()
            }),
            backoff: fast_backoff(),
            ..Default::default()
        },
    )
    .unwrap()
}

fn channel(rt: &Runtime, server: &Server) -> Channel {
    channel_ka(rt, server, None)
}

fn ka(time_ms: u64, timeout_ms: u64, permit_without_calls: bool) -> Option<Keepalive> {
    Some(Keepalive {
        time: Duration::from_millis(time_ms),
        timeout: Duration::from_millis(timeout_ms),
        permit_without_calls,
    })
}

fn opts(deadline: Duration, wait_for_ready: bool) -> CallOptions<'static> {
    CallOptions {
        deadline: Some(Instant::now() + deadline),
        wait_for_ready: Some(wait_for_ready),
        ..Default::default()
    }
}

fn call(ch: &Channel, deadline: Duration, wait_for_ready: bool) -> Result<UnaryResponse, Status> {
    ch.reader()
        .unary("/echo.Echo/Unary", b"hi", &opts(deadline, wait_for_ready))
}

/// Starts a call on the loop; its result comes on the receiver.
fn start(
    ch: &Channel,
    deadline: Duration,
    wait_for_ready: bool,
) -> mpsc::Receiver<Result<UnaryResponse, Status>> {
    let (tx, rx) = mpsc::channel();
    ch.unary_start(
        "/echo.Echo/Unary",
        b"hi",
        &opts(deadline, wait_for_ready),
        move |r| {
            let _ = tx.send(r);
        },
    )
    .unwrap();
    rx
}

fn outcome(r: &Result<UnaryResponse, Status>) -> Result<Vec<u8>, (Code, String)> {
    r.as_ref()
        .map(|r| r.message.clone())
        .map_err(|s| (s.code(), s.message().to_string()))
}

/// Polls the channel's state until `until` holds (bounded); every
/// distinct state seen on the way.
fn states_until(
    ch: &Channel,
    within: Duration,
    until: impl Fn(ConnectivityState) -> bool,
) -> Vec<ConnectivityState> {
    let end = Instant::now() + within;
    let mut seen = vec![ch.state()];
    while !until(*seen.last().unwrap()) && Instant::now() < end {
        thread::sleep(Duration::from_millis(2));
        let s = ch.state();
        if *seen.last().unwrap() != s {
            seen.push(s);
        }
    }
    seen
}

fn wait_ready(ch: &Channel) {
    ch.connect().unwrap();
    let seen = states_until(ch, Duration::from_secs(5), |s| s == Ready);
    assert_eq!(seen.last(), Some(&Ready), "never READY: {seen:?}");
}

fn gaps(t: &[Instant]) -> Vec<f64> {
    t.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect()
}

const PROTOCOL_ERROR: u32 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;

fn conn_of(server: &Server, stream_seen: impl Fn(usize) -> bool) -> bool {
    server.wait_for(Duration::from_secs(5), |l| {
        l.iter()
            .any(|(i, e)| matches!(e, Ev::Headers(_)) && stream_seen(*i))
    })
}

// ===========================================================================
// KeepAliveManagerTest

/// KeepAliveManagerTest `keepAlivePingDelayedByIncomingData` (and
/// NettyClientHandler `onDataRead` -> `keepAliveManager.onDataReceived()`):
/// data read on the transport postpones the keepalive PING. gRPC-Go agrees
/// (http2_client.go `keepalive()`: any read updates `lastRead`). A response
/// message trickled one byte per 100 ms for ~2 s, keepalive time 400 ms:
/// the client sends no PING while the data keeps coming.
#[test]
fn keepalive_client_closes_unresponsive_server() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        c.until_eof()
    });
    server.acks.store(false, Ordering::Release);
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 100, true));
    wait_ready(&ch);
    assert!(
        server.wait_eof(0, Duration::from_secs(3)),
        "the client kept a connection whose server never acks: {:?}",
        server.events()
    );
    let pings = server.pings(0);
    assert!(
        !pings.is_empty(),
        "closed without pinging: {:?}",
        server.events()
    );
    let waited = (server.eof(0).unwrap() - pings[0]).as_secs_f64();
    assert!(
        (0.08..1.5).contains(&waited),
        "closed {waited:.3} s after the first unacked ping, want ~0.1 s (the timeout)"
    );
    let seen = states_until(&ch, Duration::from_secs(2), |s| s != Ready);
    assert_eq!(
        seen.last(),
        Some(&Idle),
        "after the keepalive timeout: {seen:?}"
    );
    server.acks.store(true, Ordering::Release);
    let r = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r), Ok(b"ok".to_vec()));
    assert_eq!(server.accepted().len(), 2);
    ch.close();
}

/// gRPC-Go `http2Client.Close` (called by `keepalive()` with its error):
/// before closing the transport the client writes GOAWAY(NO_ERROR, "client
/// transport shutdown") (RFC 9113 6.8 SHOULD), also when the close is a
/// keepalive timeout — the server's TCP still takes writes.
#[test]
fn keepalive_timeout_sends_goaway_before_closing() {
    let server = Server::start(|c| {
        c.greet()?;
        c.until_eof()
    });
    server.acks.store(false, Ordering::Release);
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 100, true));
    wait_ready(&ch);
    assert!(
        server.wait_eof(0, Duration::from_secs(3)),
        "{:?}",
        server.events()
    );
    let log: Vec<Ev> = server.events().into_iter().map(|(_, e)| e).collect();
    assert!(
        log.iter().any(|e| matches!(e, Ev::GoAway(_, NO_ERROR, _))),
        "no GOAWAY before the keepalive close: {log:?}"
    );
    ch.close();
}

/// gRPC-Go `TestKeepaliveClientOpenWithUnresponsiveServer` (and
/// `TestKeepaliveServerEnforcementWithDormantKeepaliveOnClient`): without
/// PermitWithoutStream and with no stream, keepalive is dormant: no PING
/// at all, so an unresponsive server does not cost the connection; a new
/// stream works on it.
#[test]
fn keepalive_client_open_with_unresponsive_server_without_calls() {
    let server = Server::start(|c| {
        c.greet()?;
        while let Some(s) = c.request()? {
            c.answer_ok(s)?;
        }
        Ok(())
    });
    server.acks.store(false, Ordering::Release);
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 100, false));
    wait_ready(&ch);
    thread::sleep(Duration::from_millis(700));
    assert_eq!(server.pings(0).len(), 0, "pings with no call and no permit");
    assert_eq!(server.eof(0), None);
    assert_eq!(ch.state(), Ready);
    let r = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r), Ok(b"ok".to_vec()));
    assert_eq!(server.accepted().len(), 1);
    ch.close();
}

/// gRPC-Go `TestKeepaliveClientClosesWithActiveStreams`: no
/// PermitWithoutStream, a stream open (the server never answers it), the
/// server stops acking: the client closes the transport; the call on it
/// fails UNAVAILABLE long before its deadline, saying keepalive.
#[test]
fn keepalive_client_closes_with_active_streams() {
    let server = Server::start(|c| {
        c.greet()?;
        if c.request()?.is_some() {
            c.acks.store(false, Ordering::Release);
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 200, false));
    wait_ready(&ch);
    let started = Instant::now();
    let r = call(&ch, Duration::from_secs(8), false);
    let took = started.elapsed();
    let o = outcome(&r);
    assert!(
        matches!(&o, Err((Code::Unavailable, m)) if m.contains("keepalive")),
        "{o:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(!server.pings(0).is_empty());
    assert!(
        server.wait_eof(0, Duration::from_secs(2)),
        "{:?}",
        server.events()
    );
    ch.close();
}

/// gRPC-Go `TestKeepaliveClientStaysHealthyWithResponsiveServer`: pings
/// (PermitWithoutStream) that the server acks keep the transport healthy.
#[test]
fn keepalive_client_stays_healthy_with_responsive_server() {
    let server = Server::start(|c| c.serve_good());
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(110, 1000, true));
    wait_ready(&ch);
    thread::sleep(Duration::from_millis(700));
    assert!(
        server.pings(0).len() >= 3,
        "too few keepalive pings: {:?}",
        server.events()
    );
    assert_eq!(server.eof(0), None);
    assert_eq!(ch.state(), Ready);
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), false)),
        Ok(b"ok".to_vec())
    );
    assert_eq!(server.accepted().len(), 1);
    ch.close();
}

/// gRPC-Go `TestKeepaliveClientFrequency`: with acks, a ping goes out
/// every `Time`, not every `Time + Timeout` (the bug that test guards).
#[test]
fn keepalive_pings_every_time_not_time_plus_timeout() {
    let server = Server::start(|c| c.serve_good());
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(150, 2000, true));
    wait_ready(&ch);
    assert!(
        server.wait_for(Duration::from_secs(3), |_| server.pings(0).len() >= 6),
        "{:?}",
        server.events()
    );
    let g = gaps(&server.pings(0));
    assert!(
        g.iter().all(|g| (0.13..0.5).contains(g)),
        "ping gaps {g:?} s, want ~0.15 s (Time), not 2.15 s"
    );
    ch.close();
}

/// gRPC-Go `dialoptions.go` `WithKeepaliveParams`: a Time under
/// `internal.KeepaliveMinPingTime` (0 included) is raised to it. Here the
/// floor is lowered to `FLOOR` (100 ms), as gRPC-Go's tests lower theirs:
/// 10 ms and 0 both ping every ~100 ms.
#[test]
fn keepalive_time_under_the_floor_is_raised_to_it() {
    for time_ms in [10, 0] {
        let server = Server::start(|c| c.serve_good());
        let rt = Runtime::new().unwrap();
        let ch = channel_ka(&rt, &server, ka(time_ms, 1000, true));
        wait_ready(&ch);
        assert!(
            server.wait_for(Duration::from_secs(3), |_| server.pings(0).len() >= 4),
            "time {time_ms} ms: {:?}",
            server.events()
        );
        let g = gaps(&server.pings(0));
        assert!(
            g.iter().all(|g| *g >= FLOOR.as_secs_f64() * 0.85),
            "time {time_ms} ms: ping gaps {g:?} s, want >= {FLOOR:?}"
        );
        ch.close();
    }
}

/// gRPC-Go `TestClientUpdatesParamsAfterGoAway` (dial_test.go) and gRFC
/// A8: each GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") doubles the
/// keepalive time of the channel's next connections (`addrConn.adjustParams`:
/// 2 x the time the connection that got it used): 100 ms, then 200 ms,
/// then 400 ms, the first ping coming that long after each connection is
/// up. The subchannel goes IDLE each time (never TRANSIENT_FAILURE).
#[test]
fn too_many_pings_doubles_keepalive_time_on_each_new_connection() {
    let server = Server::start(|c| {
        c.greet()?;
        if c.index >= 2 {
            while let Some(s) = c.request()? {
                c.answer_ok(s)?;
            }
            return Ok(());
        }
        while let Some(f) = c.next()? {
            if f.kind == PING && f.flags & ACK == 0 {
                c.goaway(0, ENHANCE_YOUR_CALM, b"too_many_pings")?;
                break;
            }
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 2000, true));
    let mut firsts = Vec::new();
    let mut states = Vec::new();
    for conn in 0..3 {
        ch.connect().unwrap();
        assert!(
            server.wait_for(Duration::from_secs(3), |_| !server.pings(conn).is_empty()),
            "no ping on connection {conn}: {:?}",
            server.events()
        );
        firsts.push((server.pings(conn)[0] - server.accepted()[conn]).as_secs_f64());
        if conn < 2 {
            assert!(
                server.wait_eof(conn, Duration::from_secs(2)),
                "{:?}",
                server.events()
            );
            states.extend(states_until(&ch, Duration::from_secs(2), |s| s == Idle));
        }
    }
    assert!(!states.contains(&TransientFailure), "{states:?}");
    let want = [0.1, 0.2, 0.4];
    for (got, want) in firsts.iter().zip(want) {
        assert!(
            *got >= want * 0.9 && *got <= want * 1.5 + 0.1,
            "first-ping delays {firsts:?} s, want ~{want:?} (doubling each time)"
        );
    }
    ch.close();
}

/// gRPC-Go `TestDetailedGoAwayErrorOnAbruptClosePropagatesToRPCError`: a
/// call in flight when the server sends GOAWAY(ENHANCE_YOUR_CALM,
/// "too_many_pings") (last stream id = that call's, so processed) and then
/// closes the connection fails UNAVAILABLE, its message carrying
/// `received prior goaway: code: ENHANCE_YOUR_CALM, debug data: "too_many_pings"`.
#[test]
fn too_many_pings_goaway_then_close_fails_the_call_saying_so() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        while let Some(f) = c.next()? {
            if f.kind == PING && f.flags & ACK == 0 {
                c.goaway(s, ENHANCE_YOUR_CALM, b"too_many_pings")?;
                thread::sleep(Duration::from_millis(50));
                return Ok(()); // hang up
            }
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 5000, false));
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(5), true);
    let o = outcome(&r);
    let want = r#"received prior goaway: code: ENHANCE_YOUR_CALM, debug data: "too_many_pings""#;
    assert!(
        matches!(&o, Err((Code::Unavailable, m)) if m.contains(want)),
        "{o:?}"
    );
    ch.close();
}

// ===========================================================================
// (b) GOAWAY: test/goaway_test.go.

/// gRPC-Go `TestDetailedGoAwayErrorOnGracefulClosePropagatesToRPCError`
/// (MaxConnectionAge, grace ~0: GOAWAY(2^31-1), GOAWAY(last id), close):
/// the call in flight fails UNAVAILABLE with "received prior goaway: code:
/// NO_ERROR" in its message.
#[test]
fn graceful_goaway_then_close_fails_the_call_saying_prior_goaway() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        c.goaway(MAX_ID, NO_ERROR, b"")?;
        c.idle_for(Duration::from_millis(50))?;
        c.goaway(s, NO_ERROR, b"")?;
        c.idle_for(Duration::from_millis(50))?;
        Ok(()) // hang up
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(5), true);
    let o = outcome(&r);
    assert!(
        matches!(&o, Err((Code::Unavailable, m)) if m.contains("received prior goaway: code: NO_ERROR")),
        "{o:?}"
    );
    ch.close();
}

/// The same, checked against gRPC-Go's exact wording (`setGoAwayReason`):
/// a GOAWAY without debug data is described as `code: NO_ERROR` alone,
/// with no `, debug data: ""` part.
#[test]
fn goaway_without_debug_data_is_described_as_grpc_go_does() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        c.goaway(s, NO_ERROR, b"")?;
        c.idle_for(Duration::from_millis(50))?;
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(5), true);
    let o = outcome(&r);
    assert!(
        matches!(&o, Err((Code::Unavailable, m))
            if m.ends_with("received prior goaway: code: NO_ERROR")),
        "{o:?}"
    );
    ch.close();
}

/// gRPC-Go `TestServerGoAwayPendingRPC` / `TestServerMultipleGoAwayPendingRPC`
/// and `handleGoAway`: a call in flight when GOAWAY(NO_ERROR, 2^31-1)
/// comes completes normally on the draining connection; a call started
/// after the GOAWAY goes to a new connection; once the old one's last
/// call is done the client closes it.
#[test]
fn goaway_pending_rpc_completes_and_new_rpcs_use_a_new_connection() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let server = Server::start(move |c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        c.goaway(MAX_ID, NO_ERROR, b"")?;
        // Hold the call until the test says so, reading meanwhile.
        loop {
            if go_rx.lock().unwrap().try_recv().is_ok() {
                break;
            }
            if !c.idle_for(Duration::from_millis(20))? {
                return Ok(());
            }
        }
        c.answer_ok(s)?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let pending = start(&ch, Duration::from_secs(8), false);
    let seen = states_until(&ch, Duration::from_secs(3), |s| s != Ready);
    assert_eq!(seen.last(), Some(&Idle), "after the GOAWAY: {seen:?}");
    // A new fail-fast call: on a new connection.
    let r = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r), Ok(b"ok".to_vec()), "the call after the GOAWAY");
    assert_eq!(server.accepted().len(), 2);
    assert_eq!(server.streams(0).len(), 1, "{:?}", server.events());
    assert_eq!(server.streams(1).len(), 1, "{:?}", server.events());
    go_tx.send(()).unwrap();
    let p = pending
        .recv_timeout(Duration::from_secs(5))
        .expect("pending call");
    assert_eq!(
        outcome(&p),
        Ok(b"ok".to_vec()),
        "the call in flight at the GOAWAY"
    );
    assert!(
        server.wait_eof(0, Duration::from_secs(2)),
        "the drained connection stayed open: {:?}",
        server.events()
    );
    ch.close();
}

/// gRPC-Go `TestServerGoAway`: after the server's graceful stop (GOAWAY,
/// listener closed) a new fail-fast RPC fails UNAVAILABLE (or INTERNAL).
/// Here connections after the first are closed at once.
#[test]
fn goaway_then_server_gone_new_fail_fast_rpc_fails_unavailable() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return Ok(()); // hang up at once
        }
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        c.answer_ok(s)?;
        c.idle_for(Duration::from_millis(50))?;
        c.goaway(s, NO_ERROR, b"")?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), true)),
        Ok(b"ok".to_vec())
    );
    states_until(&ch, Duration::from_secs(3), |s| s != Ready);
    let started = Instant::now();
    let r = call(&ch, Duration::from_secs(5), false);
    let o = outcome(&r);
    assert!(
        matches!(&o, Err((Code::Unavailable | Code::Internal, _))),
        "{o:?} after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    ch.close();
}

/// gRPC-Go `handleGoAway` + `shouldRetry` (gRFC A6 transparent retry):
/// streams above the GOAWAY's last-stream-id are "unprocessed" and retried
/// transparently on a new connection, fail-fast calls included; the one
/// at the id is answered on the old connection.
#[test]
fn streams_above_goaway_last_stream_id_are_retried_transparently() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        let Some(ids) = c.requests(3)? else {
            return Ok(());
        };
        let low = *ids.iter().min().unwrap();
        c.goaway(low, NO_ERROR, b"")?;
        c.answer_ok(low)?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let rxs: Vec<_> = (0..3)
        .map(|_| start(&ch, Duration::from_secs(5), false))
        .collect();
    let outs: Vec<_> = rxs
        .iter()
        .map(|rx| outcome(&rx.recv_timeout(Duration::from_secs(8)).expect("no result")))
        .collect();
    assert!(
        outs.iter().all(|o| *o == Ok(b"ok".to_vec())),
        "{outs:?}; server saw {:?}",
        server.events()
    );
    assert_eq!(server.streams(0).len(), 3);
    assert_eq!(server.streams(1).len(), 2, "{:?}", server.events());
    ch.close();
}

/// gRFC A9 / gRPC-Go `handleGoAway` with two GOAWAYs
/// (`TestServerMultipleGoAwayPendingRPC`): GOAWAY(2^31-1) kills nothing;
/// a second GOAWAY with a lower last-stream-id closes the streams between
/// the two ids as unprocessed (retried transparently, here they succeed on
/// a new connection); the stream at or below it completes on the old one,
/// which then closes.
#[test]
fn second_goaway_with_lower_last_stream_id_retries_the_streams_above_it() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        let Some(ids) = c.requests(3)? else {
            return Ok(());
        };
        let low = *ids.iter().min().unwrap();
        c.goaway(MAX_ID, NO_ERROR, b"")?;
        c.idle_for(Duration::from_millis(100))?;
        c.goaway(low, NO_ERROR, b"")?;
        c.idle_for(Duration::from_millis(100))?;
        c.answer_ok(low)?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let rxs: Vec<_> = (0..3)
        .map(|_| start(&ch, Duration::from_secs(5), true))
        .collect();
    let outs: Vec<_> = rxs
        .iter()
        .map(|rx| outcome(&rx.recv_timeout(Duration::from_secs(8)).expect("no result")))
        .collect();
    assert!(
        outs.iter().all(|o| *o == Ok(b"ok".to_vec())),
        "{outs:?}; server saw {:?}",
        server.events()
    );
    assert_eq!(server.streams(1).len(), 2, "{:?}", server.events());
    assert!(
        server.wait_eof(0, Duration::from_secs(2)),
        "{:?}",
        server.events()
    );
    ch.close();
}

/// A call refused by GOAWAY on its first connection and again on its
/// second (never processed either time): gRPC-Go retries such a stream
/// transparently only on the call's first attempt (`shouldRetry`:
/// `cs.firstAttempt && unprocessed`) and fails it UNAVAILABLE; switchyard
/// retries a GOAWAY-refused attempt like an unsent one, up to 16 times
/// (a deliberate difference, in the README: a rolling restart refuses a
/// call more than once), so a third connection serves it.
#[test]
fn a_call_refused_by_goaway_on_two_connections_is_served_by_a_third() {
    let server = Server::start(|c| match c.index {
        0 => {
            c.greet()?;
            let Some(warm) = c.request()? else {
                return Ok(());
            };
            c.answer_ok(warm)?;
            if c.request()?.is_some() {
                c.goaway(warm, NO_ERROR, b"")?;
            }
            c.until_eof()
        }
        1 => {
            c.greet()?;
            if c.request()?.is_some() {
                c.goaway(0, NO_ERROR, b"")?;
            }
            c.until_eof()
        }
        _ => c.serve_good(),
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), true)),
        Ok(b"ok".to_vec())
    );
    let r = call(&ch, Duration::from_secs(5), true);
    assert_eq!(
        outcome(&r),
        Ok(b"ok".to_vec()),
        "server saw {:?}",
        server.events()
    );
    assert_eq!(server.accepted().len(), 3);
    ch.close();
}

/// gRPC-Go `TestGoAwayThenClose`: a long call on connection 1; the server
/// sends GOAWAY; the channel goes IDLE; the next call makes connection 2;
/// then connection 1 is hard-closed: the long call fails, and connection 2
/// is not disturbed (no state change, no new connection, 10 calls succeed
/// on it).
#[test]
fn goaway_then_close_does_not_disturb_the_new_connection() {
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let close_rx = Mutex::new(close_rx);
    let server = Server::start(move |c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        if c.request()?.is_none() {
            return Ok(());
        }
        c.goaway(MAX_ID, NO_ERROR, b"")?;
        loop {
            if close_rx.lock().unwrap().try_recv().is_ok() {
                return Ok(()); // hard close, the call unanswered
            }
            if !c.idle_for(Duration::from_millis(20))? {
                return Ok(());
            }
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let long = start(&ch, Duration::from_secs(10), false);
    let seen = states_until(&ch, Duration::from_secs(3), |s| s == Idle);
    assert_eq!(seen.last(), Some(&Idle), "{seen:?}");
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), false)),
        Ok(b"ok".to_vec())
    );
    assert_eq!(server.accepted().len(), 2);
    close_tx.send(()).unwrap();
    let l = long
        .recv_timeout(Duration::from_secs(5))
        .expect("the long call never ended");
    assert!(
        matches!(outcome(&l), Err((Code::Unavailable, _))),
        "{:?}",
        outcome(&l)
    );
    let mut states = vec![ch.state()];
    for i in 0..10 {
        let r = call(&ch, Duration::from_secs(5), false);
        assert_eq!(
            outcome(&r),
            Ok(b"ok".to_vec()),
            "call {i} after the old connection closed"
        );
        let s = ch.state();
        if states.last() != Some(&s) {
            states.push(s);
        }
    }
    assert_eq!(states, vec![Ready]);
    assert_eq!(server.accepted().len(), 2);
    ch.close();
}

/// gRPC-Go `TestGoAwayStreamIDSmallerThanCreatedStreams`: GOAWAY(last
/// id 1) while the client is creating many streams: no deadlock; every
/// call ends (here: OK, the unprocessed ones and later ones on a new
/// connection).
#[test]
fn goaway_below_created_streams_while_creating_more_does_not_deadlock() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        let Some(ids) = c.requests(5)? else {
            return Ok(());
        };
        c.goaway(1, NO_ERROR, b"")?;
        if ids.contains(&1) {
            c.answer_ok(1)?;
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let mut rxs = Vec::new();
    for i in 0..20 {
        rxs.push(start(&ch, Duration::from_secs(6), true));
        if i == 9 {
            server.wait_for(Duration::from_secs(3), |l| {
                l.iter().any(|(_, e)| matches!(e, Ev::Headers(_)))
            });
            thread::sleep(Duration::from_millis(50));
        }
    }
    let outs: Vec<_> = rxs
        .iter()
        .map(|rx| {
            rx.recv_timeout(Duration::from_secs(10))
                .map(|r| outcome(&r))
        })
        .collect();
    assert!(
        outs.iter().all(|o| o.is_ok()),
        "calls never ended: {outs:?}"
    );
    assert!(
        outs.iter().all(|o| *o == Ok(Ok(b"ok".to_vec()))),
        "{outs:?}; server saw {:?}",
        server.events()
    );
    ch.close();
}

/// gRPC-Go `TestClientSendsAGoAway`: closing the channel sends the server
/// GOAWAY(NO_ERROR) before the connection closes.
#[test]
fn closing_the_channel_sends_goaway_no_error() {
    let server = Server::start(|c| {
        c.greet()?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    ch.close();
    assert!(
        server.wait_eof(0, Duration::from_secs(3)),
        "{:?}",
        server.events()
    );
    let log: Vec<Ev> = server.events().into_iter().map(|(_, e)| e).collect();
    let at = log
        .iter()
        .position(|e| matches!(e, Ev::GoAway(_, NO_ERROR, _)));
    let eof = log.iter().position(|e| *e == Ev::Eof);
    assert!(at.is_some() && at < eof, "{log:?}");
}

/// gRPC-Go `TestGracefulClientOnGoAway`: against a real server that sends
/// a graceful GOAWAY every 100 ms (gRPC-Go's MaxConnectionAge = 100 ms),
/// back-to-back fail-fast RPCs for a second never see an error.
#[test]
fn rpcs_never_fail_while_the_server_goaways_every_100ms() {
    use switchyard_testserver::{Listen, ServerOptions, TestServer};
    let srv = Arc::new(
        TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap(),
    );
    let rt = Runtime::new().unwrap();
    floor();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", srv.addr()),
        None,
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            backoff: fast_backoff(),
            ..Default::default()
        },
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ager = {
        let (srv, stop) = (srv.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                thread::sleep(Duration::from_millis(100));
                srv.goaway();
            }
        })
    };
    let end = Instant::now() + Duration::from_secs(1);
    let mut r = ch.reader();
    let (mut n, mut failed) = (0, Vec::new());
    while Instant::now() < end {
        match r.unary(
            "/echo.Echo/Unary",
            b"hi",
            &opts(Duration::from_secs(5), false),
        ) {
            Ok(_) => n += 1,
            Err(s) => failed.push(s),
        }
    }
    stop.store(true, Ordering::Release);
    ager.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        n + failed.len()
    );
    assert!(n > 10, "only {n} calls");
    ch.close();
}

/// gRPC-Go `TestKeepaliveServerEnforcementWithObeyingClientWithRPC` and
/// `keepalive()`'s dormancy: without PermitWithoutStream, PINGs go out
/// every `Time` while a call is in flight (the call still succeeds), and
/// stop once no call is left.
#[test]
fn keepalive_pings_while_a_call_runs_and_goes_dormant_after() {
    let server = Server::start(|c| {
        c.greet()?;
        while let Some(s) = c.request()? {
            if !c.idle_for(Duration::from_millis(700))? {
                return Ok(());
            }
            c.answer_ok(s)?;
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 1000, false));
    wait_ready(&ch);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(server.pings(0).len(), 0, "pings before any call");
    let r = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r), Ok(b"ok".to_vec()));
    let during = server.pings(0).len();
    assert!(during >= 3, "only {during} pings during a 700 ms call");
    thread::sleep(Duration::from_millis(600));
    let after = server.pings(0).len();
    assert!(
        after <= during + 1,
        "pings went on with no call: {during} -> {after}"
    );
    assert_eq!(server.accepted().len(), 1);
    ch.close();
}

/// gRPC-Go round_robin (`endpointsharding`: a child reporting IDLE gets
/// `ExitIdle` at once): after a GOAWAY and the connection closing, the
/// subchannel goes IDLE and round_robin reconnects it by itself, with no
/// RPC (pick_first waits for the next pick; see conn_go_cases.rs).
#[test]
fn round_robin_reconnects_by_itself_after_goaway_and_close() {
    let server = Server::start(|c| {
        c.greet()?;
        if c.index == 0 {
            c.idle_for(Duration::from_millis(100))?;
            c.goaway(0, NO_ERROR, b"")?;
            c.idle_for(Duration::from_millis(50))?;
            return Ok(()); // close
        }
        while let Some(s) = c.request()? {
            c.answer_ok(s)?;
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    floor();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr),
        Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            backoff: fast_backoff(),
            ..Default::default()
        },
    )
    .unwrap();
    ch.connect().unwrap();
    let end = Instant::now() + Duration::from_secs(3);
    while server.accepted().len() < 2 && Instant::now() < end {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.accepted().len(), 2, "no reconnection without an RPC");
    let seen = states_until(&ch, Duration::from_secs(3), |s| s == Ready);
    assert_eq!(seen.last(), Some(&Ready), "{seen:?}");
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), false)),
        Ok(b"ok".to_vec())
    );
    ch.close();
}

/// gRPC-Go `addrConn.adjustParams` raises `cc.keepaliveParams` — the
/// ClientConn's, shared by every subchannel: after backend A's
/// "too_many_pings" GOAWAY, a new connection to backend B (round_robin)
/// also pings at twice the time (200 ms, not 100 ms).
#[test]
fn too_many_pings_from_one_backend_doubles_keepalive_for_the_whole_channel() {
    let calmed = Arc::new(AtomicBool::new(false));
    let a = {
        let calmed = calmed.clone();
        Server::start(move |c| {
            c.greet()?;
            if c.index > 0 {
                return c.until_eof();
            }
            while let Some(f) = c.next()? {
                if f.kind == PING && f.flags & ACK == 0 {
                    c.goaway(0, ENHANCE_YOUR_CALM, b"too_many_pings")?;
                    calmed.store(true, Ordering::Release);
                    break;
                }
            }
            c.until_eof()
        })
    };
    let b = {
        let calmed = calmed.clone();
        Server::start(move |c| {
            c.greet()?;
            if c.index > 0 {
                return c.until_eof();
            }
            while !calmed.load(Ordering::Acquire) {
                if !c.idle_for(Duration::from_millis(10))? {
                    return Ok(());
                }
            }
            // Let the client take A's GOAWAY first.
            c.idle_for(Duration::from_millis(100))?;
            c.goaway(0, NO_ERROR, b"")?;
            c.idle_for(Duration::from_millis(50))?;
            Ok(())
        })
    };
    let rt = Runtime::new().unwrap();
    floor();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{},{}", a.addr, b.addr),
        Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
        ChannelOptions {
            transport: Some(TransportConfig {
                keepalive: ka(100, 2000, true),
                ..TransportConfig::insecure()
            }),
            backoff: fast_backoff(),
            ..Default::default()
        },
    )
    .unwrap();
    ch.connect().unwrap();
    assert!(
        b.wait_for(Duration::from_secs(4), |_| b.accepted().len() >= 2
            && !b.pings(1).is_empty()),
        "B never reconnected and pinged: {:?}",
        b.events()
    );
    let first = (b.pings(1)[0] - b.accepted()[1]).as_secs_f64();
    assert!(
        (0.18..0.4).contains(&first),
        "B's new connection pinged {first:.3} s after connecting, want ~0.2 s (doubled channel-wide)"
    );
    ch.close();
}

// ---------------------------------------------------------------- grpc-java

#[test]
fn keepalive_ping_delayed_by_incoming_data() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        let mut block = lit(b":status", b"200");
        block.extend(lit(b"content-type", b"application/grpc"));
        c.send(&frame(HEADERS, END_HEADERS, s, &block))?;
        for b in msg(b"0123456789abcdef") {
            if !c.idle_for(Duration::from_millis(100))? {
                return Ok(());
            }
            c.send(&frame(DATA, 0, s, &[b]))?;
        }
        c.send(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            s,
            &lit(b"grpc-status", b"0"),
        ))?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(400, 2000, false));
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(8), false);
    assert_eq!(outcome(&r), Ok(b"0123456789abcdef".to_vec()));
    assert_eq!(server.pings(0).len(), 0, "PINGs while data kept arriving");
    ch.close();
}

/// KeepAliveManagerTest `pingSentThenIdleThenActiveThenAck`
/// (keepaliveWithoutCalls false): a PING goes out during call 1; call 1
/// ends (transport idle) before the ack; call 2 starts (active); then the
/// ack arrives: another PING is scheduled and sent keepalive time later
/// while call 2 runs.
#[test]
fn ping_sent_then_idle_then_active_then_ack_schedules_next_ping() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(s1) = c.request()? else {
            return Ok(());
        };
        if !c.until_unacked_ping(Duration::from_secs(3))? {
            return Ok(());
        }
        c.answer_ok(s1)?;
        let Some(s2) = c.request()? else {
            return Ok(());
        };
        c.ack_pending_pings()?;
        if !c.idle_for(Duration::from_millis(1500))? {
            return Ok(());
        }
        c.answer_ok(s2)?;
        c.until_eof()
    });
    server.acks.store(false, Ordering::Release);
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(300, 5000, false));
    wait_ready(&ch);
    let r1 = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r1), Ok(b"ok".to_vec()));
    let r2 = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r2), Ok(b"ok".to_vec()));
    let pings = server.pings(0);
    assert!(pings.len() >= 2, "pings: {:?}", gaps(&pings));
    ch.close();
}

/// KeepAliveManagerTest `clientKeepAlivePinger_pingTimeout`: an unacked
/// keepalive PING shuts the transport down with UNAVAILABLE ("Keepalive
/// failed. The connection is likely gone"); the call in flight fails
/// UNAVAILABLE. (gRPC-Go words it "keepalive ping failed to receive ACK
/// within timeout"; only the code and the mention of keepalive are pinned.)
#[test]
fn keepalive_timeout_fails_the_call_unavailable_naming_keepalive() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(_) = c.request()? else { return Ok(()) };
        c.until_eof()
    });
    server.acks.store(false, Ordering::Release);
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(200, 300, false));
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(5), false);
    let o = outcome(&r);
    assert!(
        matches!(&o, Err((Code::Unavailable, m)) if m.to_lowercase().contains("keepalive")),
        "{o:?}"
    );
    assert!(server.wait_eof(0, Duration::from_secs(2)));
    ch.close();
}

// ===========================================================================
// NettyClientHandlerTest / NettyClientTransportTest

/// NettyClientHandlerTest `receivedGoAwayShouldFailUnknownStreams`: an
/// abrupt GOAWAY (last-stream-id 0, CANCEL, debug "this is a test") for a
/// sent stream. grpc-java deliberately treats it as PROCESSED (no
/// transparent retry) and fails the call CANCELLED "Abrupt GOAWAY closed
/// sent stream. HTTP/2 error code: CANCEL, debug data: this is a test"
/// (NettyClientHandler `goingAway`, `abruptGoAwayStatusConservative`, a
/// Netty-bug workaround). gRPC-Go (and gRFC A6: streams above the GOAWAY's
/// last-stream-id were not processed) retries transparently. Pinned here:
/// the gRPC-Go / A6 behaviour; the call succeeds on a second connection.
#[test]
fn abrupt_goaway_cancel_below_a_sent_stream_retries_it_transparently() {
    let server = Server::start(|c| {
        if c.index == 0 {
            c.greet()?;
            let Some(_) = c.request()? else { return Ok(()) };
            c.goaway(0, CANCEL, b"this is a test")?;
            c.idle_for(Duration::from_millis(200))?;
            Ok(())
        } else {
            c.serve_good()
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r), Ok(b"ok".to_vec()));
    assert_eq!(server.streams(1).len(), 1, "{:?}", server.events());
    ch.close();
}

/// The same with PROTOCOL_ERROR (NettyClientHandlerTest
/// `receivedGoAwayErrorShouldRefuseLaterStreamId`: grpc-java PROCESSED,
/// gRPC-Go transparent retry).
#[test]
fn abrupt_goaway_protocol_error_below_a_sent_stream_retries_it_transparently() {
    let server = Server::start(|c| {
        if c.index == 0 {
            c.greet()?;
            let Some(_) = c.request()? else { return Ok(()) };
            c.goaway(0, PROTOCOL_ERROR, b"")?;
            c.idle_for(Duration::from_millis(200))?;
            Ok(())
        } else {
            c.serve_good()
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r), Ok(b"ok".to_vec()));
    ch.close();
}

/// NettyClientHandlerTest
/// `receivedGoAway_shouldFailBufferedStreamsExceedingMaxConcurrentStreams`:
/// MAX_CONCURRENT_STREAMS 1, call A sent, call B buffered; a GOAWAY
/// (MAX_ID, NO_ERROR) fails the buffered B as MISCARRIED ("Abrupt GOAWAY
/// closed unsent stream ... At MAX_CONCURRENT_STREAMS limit"), which the
/// channel retries transparently; A completes on the old connection. B
/// is never sent on the old connection and succeeds on a new one.
#[test]
fn goaway_moves_a_buffered_stream_over_max_concurrent_streams_to_a_new_connection() {
    let server = Server::start(|c| {
        if c.index == 0 {
            c.greet_max_streams(1)?;
            let Some(s) = c.request()? else { return Ok(()) };
            if !c.idle_for(Duration::from_millis(400))? {
                return Ok(());
            }
            c.goaway(MAX_ID, NO_ERROR, b"")?;
            c.idle_for(Duration::from_millis(100))?;
            c.answer_ok(s)?;
            c.idle_for(Duration::from_millis(1000))?;
            Ok(())
        } else {
            c.serve_good()
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let a = start(&ch, Duration::from_secs(5), false);
    assert!(conn_of(&server, |i| i == 0));
    let b = start(&ch, Duration::from_secs(5), false);
    let ra = a.recv_timeout(Duration::from_secs(6)).unwrap();
    let rb = b.recv_timeout(Duration::from_secs(6)).unwrap();
    assert_eq!(outcome(&ra), Ok(b"ok".to_vec()));
    assert_eq!(outcome(&rb), Ok(b"ok".to_vec()));
    assert_eq!(server.streams(0), vec![1], "{:?}", server.events());
    assert_eq!(server.streams(1).len(), 1, "{:?}", server.events());
    ch.close();
}

/// NettyClientTransportTest `bufferedStreamsShouldBeClosedWhenConnectionTerminates`
/// and NettyClientHandlerTest `channelClosureShouldFailBufferedStreams`
/// (MISCARRIED) / `channelShutdownShouldFailInFlightStreams` (UNAVAILABLE,
/// PROCESSED): MAX_CONCURRENT_STREAMS 1, A sent, B buffered, the server
/// hangs up: A fails UNAVAILABLE; B, never sent, is retried transparently
/// and succeeds on a new connection.
#[test]
fn hang_up_fails_the_sent_stream_and_retries_the_buffered_one() {
    let server = Server::start(|c| {
        if c.index == 0 {
            c.greet_max_streams(1)?;
            let Some(_) = c.request()? else { return Ok(()) };
            c.idle_for(Duration::from_millis(400))?;
            Ok(()) // hang up
        } else {
            c.serve_good()
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let a = start(&ch, Duration::from_secs(5), false);
    assert!(conn_of(&server, |i| i == 0));
    let b = start(&ch, Duration::from_secs(5), false);
    let ra = a.recv_timeout(Duration::from_secs(6)).unwrap();
    let rb = b.recv_timeout(Duration::from_secs(6)).unwrap();
    assert!(
        matches!(outcome(&ra), Err((Code::Unavailable, _))),
        "{:?}",
        outcome(&ra)
    );
    assert_eq!(outcome(&rb), Ok(b"ok".to_vec()));
    assert_eq!(server.streams(0), vec![1], "{:?}", server.events());
    ch.close();
}

/// NettyClientHandlerTest `receivedResetWithRefuseCode`: RST_STREAM
/// REFUSED_STREAM is RpcProgress.REFUSED, retried transparently (gRPC-Go
/// agrees); the call succeeds on the retry.
#[test]
fn rst_refused_stream_is_retried_transparently() {
    let refused = Arc::new(AtomicBool::new(false));
    let r2 = refused.clone();
    let server = Server::start(move |c| {
        c.greet()?;
        while let Some(s) = c.request()? {
            if !r2.swap(true, Ordering::AcqRel) {
                c.rst(s, REFUSED_STREAM)?;
            } else {
                c.answer_ok(s)?;
            }
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r), Ok(b"ok".to_vec()));
    assert!(refused.load(Ordering::Acquire));
    ch.close();
}

/// grpc-java's RST_STREAM table (GrpcUtil.Http2Error, used by
/// NettyClientHandler `onRstStreamRead`) where it differs from gRPC-Go's
/// (pinned in conn_go_cases.rs `server_rst_stream_codes_map_as_grpc_go`):
/// NO_ERROR -> UNAVAILABLE (Go INTERNAL), HTTP_1_1_REQUIRED -> UNKNOWN
/// (Go INTERNAL). Implementations disagree: switchyard follows gRPC-Go and
/// gRPC's PROTOCOL-HTTP2 doc (both INTERNAL), pinned here.
#[test]
fn rst_stream_codes_map_as_grpc_go_not_java() {
    let table: Vec<(u32, Code)> = vec![(0x0, Code::Internal), (0xd, Code::Internal)];
    let codes: Vec<u32> = table.iter().map(|(c, _)| *c).collect();
    let queue = Arc::new(Mutex::new(codes));
    let server = Server::start(move |c| {
        c.greet()?;
        while let Some(s) = c.request()? {
            let next = {
                let mut q = queue.lock().unwrap();
                (!q.is_empty()).then(|| q.remove(0))
            };
            match next {
                Some(code) => c.rst(s, code)?,
                None => c.answer_ok(s)?,
            }
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let mut wrong = Vec::new();
    for (code, want) in &table {
        let o = outcome(&call(&ch, Duration::from_secs(5), true));
        if !matches!(&o, Err((c, _)) if c == want) {
            wrong.push(format!("RST {code:#x}: want {want:?}, got {o:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    ch.close();
}

/// NettyClientHandler `onPingRead` -> `keepAliveManager.onDataReceived()`
/// (KeepAliveManagerTest `keepAlivePingDelayedByIncomingData`): PINGs from
/// the server are reads too, so a client with keepaliveWithoutCalls true
/// and no calls sends no PING while the server pings every 100 ms
/// (keepalive time 400 ms). gRPC-Go agrees (any read updates `lastRead`).
#[test]
fn server_pings_postpone_client_keepalive() {
    let server = Server::start(|c| {
        c.greet()?;
        for i in 0..20u64 {
            if !c.idle_for(Duration::from_millis(100))? {
                return Ok(());
            }
            c.send(&frame(PING, 0, 0, &i.to_be_bytes()))?;
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(400, 2000, true));
    wait_ready(&ch);
    let t0 = Instant::now();
    thread::sleep(Duration::from_millis(1800));
    let during: Vec<f64> = server
        .pings(0)
        .iter()
        .map(|t| t.saturating_duration_since(t0).as_secs_f64())
        .collect();
    assert!(
        during.is_empty(),
        "client PINGs at {during:?} s while the server pinged"
    );
    // Once the server stops, keepalive resumes.
    assert!(
        server.wait_for(Duration::from_secs(3), |_| !server.pings(0).is_empty()),
        "no PING after the server went quiet"
    );
    ch.close();
}

/// NettyClientHandlerTest `receivedGoAway_enhanceYourCalmWithoutTooManyPings`:
/// a GOAWAY ENHANCE_YOUR_CALM whose debug data is not "too_many_pings"
/// does not double the keepalive time (gRPC-Go: same check in
/// `handleGoAway`). Keepalive 300 ms: the next connection's first PING
/// still comes ~300 ms after connecting, not ~600 ms.
#[test]
fn enhance_your_calm_without_too_many_pings_keeps_keepalive_time() {
    let server = Server::start(|c| {
        c.greet()?;
        if c.index >= 1 {
            return c.until_eof();
        }
        while let Some(f) = c.next()? {
            if f.kind == PING && f.flags & ACK == 0 {
                c.goaway(0, ENHANCE_YOUR_CALM, b"not_many_pings")?;
                break;
            }
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(300, 2000, true));
    let mut firsts = Vec::new();
    for conn in 0..2 {
        ch.connect().unwrap();
        assert!(
            server.wait_for(Duration::from_secs(3), |_| !server.pings(conn).is_empty()),
            "no ping on connection {conn}: {:?}",
            server.events()
        );
        firsts.push((server.pings(conn)[0] - server.accepted()[conn]).as_secs_f64());
        if conn == 0 {
            assert!(
                server.wait_eof(0, Duration::from_secs(2)),
                "{:?}",
                server.events()
            );
            states_until(&ch, Duration::from_secs(2), |s| s == Idle);
        }
    }
    assert!(
        firsts[1] < 0.5,
        "first-ping delays {firsts:?} s: keepalive doubled for 'not_many_pings'"
    );
    ch.close();
}

/// NettyClientHandler `goingAway` (`channelInactiveReason`): a GOAWAY
/// (last-stream-id = the call's stream, INTERNAL_ERROR, debug "boom") then
/// the connection closes: the call, below the last-stream-id, fails and
/// its status carries the GOAWAY's error code and debug data. grpc-java:
/// INTERNAL "Connection closed after GOAWAY. HTTP/2 error code:
/// INTERNAL_ERROR, debug data: boom"; gRPC-Go: UNAVAILABLE "... received
/// prior goaway: code: INTERNAL_ERROR, debug data: \"boom\"". Pinned: the
/// call fails (not retried) and the message names the code and the data.
#[test]
fn goaway_error_code_and_debug_data_reach_the_failed_call() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        c.goaway(s, 0x2, b"boom")?;
        c.idle_for(Duration::from_millis(100))?;
        Ok(()) // hang up
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let o = outcome(&call(&ch, Duration::from_secs(5), false));
    eprintln!("outcome: {o:?}");
    assert!(
        matches!(&o, Err((_, m)) if m.contains("INTERNAL_ERROR") && m.contains("boom")),
        "{o:?}"
    );
    ch.close();
}

/// NettyClientHandlerTest `receivedGoAway_notUtf8`: GOAWAY debug data that
/// is not UTF-8 (0xFF 0xF0 0x0A) is harmless: the call below the
/// last-stream-id fails UNAVAILABLE when the connection closes, and the
/// next call succeeds on a new connection.
#[test]
fn goaway_with_non_utf8_debug_data_is_harmless() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        c.goaway(s, NO_ERROR, &[0xff, 0xf0, 0x0a])?;
        c.idle_for(Duration::from_millis(100))?;
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let o = outcome(&call(&ch, Duration::from_secs(5), false));
    eprintln!("outcome: {o:?}");
    assert!(matches!(&o, Err((Code::Unavailable, _))), "{o:?}");
    let o2 = outcome(&call(&ch, Duration::from_secs(5), true));
    assert_eq!(o2, Ok(b"ok".to_vec()));
    ch.close();
}

/// KeepAliveManagerTest `transportGoesIdleAfterPingSent`
/// (keepaliveWithoutCalls false): a PING sent during a call, acked after
/// the call ended: no more PINGs while idle; a new call wakes keepalive.
#[test]
fn ack_after_call_ended_goes_dormant_and_next_call_wakes_keepalive() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(s1) = c.request()? else {
            return Ok(());
        };
        if !c.until_unacked_ping(Duration::from_secs(3))? {
            return Ok(());
        }
        c.answer_ok(s1)?;
        if !c.idle_for(Duration::from_millis(100))? {
            return Ok(());
        }
        c.ack_pending_pings()?;
        c.acks.store(true, Ordering::Release);
        while let Some(s) = c.request()? {
            if !c.idle_for(Duration::from_millis(800))? {
                return Ok(());
            }
            c.answer_ok(s)?;
        }
        Ok(())
    });
    server.acks.store(false, Ordering::Release);
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(200, 3000, false));
    wait_ready(&ch);
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), false)),
        Ok(b"ok".to_vec())
    );
    thread::sleep(Duration::from_millis(900));
    let idle = server.pings(0).len();
    assert_eq!(
        idle,
        1,
        "PINGs while idle after the ack: {:?}",
        gaps(&server.pings(0))
    );
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), false)),
        Ok(b"ok".to_vec())
    );
    let after = server.pings(0).len();
    assert!(
        after >= idle + 2,
        "the second call did not wake keepalive: {idle} -> {after}"
    );
    assert_eq!(server.accepted().len(), 1);
    ch.close();
}

/// NettyClientHandlerTest `receivedGoAwayShouldFailBufferedStreams`:
/// MAX_CONCURRENT_STREAMS 0, so the call is buffered; a GOAWAY (0, CANCEL,
/// "this is a test") fails it UNAVAILABLE "GOAWAY closed buffered stream"
/// as MISCARRIED, which the channel retries transparently: the call
/// succeeds on a new connection and the first one never saw HEADERS.
#[test]
fn goaway_retries_a_stream_buffered_by_max_concurrent_streams_zero() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet_max_streams(0)?;
        if !c.idle_for(Duration::from_millis(400))? {
            return Ok(());
        }
        c.goaway(0, CANCEL, b"this is a test")?;
        c.idle_for(Duration::from_millis(300))?;
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let o = outcome(&call(&ch, Duration::from_secs(5), false));
    assert_eq!(o, Ok(b"ok".to_vec()), "{:?}", server.events());
    assert!(server.streams(0).is_empty(), "{:?}", server.events());
    ch.close();
}

/// NettyClientHandlerTest `channelClosureShouldFailBufferedStreams`:
/// MAX_CONCURRENT_STREAMS 0, the call is buffered, the server hangs up:
/// the buffered stream fails UNAVAILABLE as MISCARRIED and is retried
/// transparently on a new connection.
#[test]
fn hang_up_retries_a_stream_buffered_by_max_concurrent_streams_zero() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet_max_streams(0)?;
        c.idle_for(Duration::from_millis(400))?;
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let o = outcome(&call(&ch, Duration::from_secs(5), false));
    assert_eq!(o, Ok(b"ok".to_vec()), "{:?}", server.events());
    assert!(server.streams(0).is_empty(), "{:?}", server.events());
    ch.close();
}

/// KeepAliveManagerTest `sendKeepAlivePings` ("Ping succeeds" is
/// `onDataReceived()`: any read cancels the shutdown task): a server that
/// never acks PINGs but keeps sending response data after the PING keeps
/// the connection alive past the keepalive timeout. gRPC-Go agrees
/// (`keepalive()` checks `lastRead` when the timeout fires).
#[test]
fn data_after_an_unacked_ping_stands_in_for_its_ack() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        if !c.until_unacked_ping(Duration::from_secs(3))? {
            return Ok(());
        }
        let mut block = lit(b":status", b"200");
        block.extend(lit(b"content-type", b"application/grpc"));
        c.send(&frame(HEADERS, END_HEADERS, s, &block))?;
        for b in msg(b"0123456789abcdef") {
            if !c.idle_for(Duration::from_millis(80))? {
                return Ok(());
            }
            c.send(&frame(DATA, 0, s, &[b]))?;
        }
        c.send(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            s,
            &lit(b"grpc-status", b"0"),
        ))?;
        c.until_eof()
    });
    server.acks.store(false, Ordering::Release);
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(300, 400, false));
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(8), false);
    assert_eq!(
        outcome(&r),
        Ok(b"0123456789abcdef".to_vec()),
        "{:?}",
        server.events()
    );
    assert_eq!(server.accepted().len(), 1);
    ch.close();
}

/// NettyClientHandler `onConnectionError` (Utils.statusFromThrowable:
/// Http2Exception -> INTERNAL "http2 exception") and Netty's
/// Http2ConnectionHandler: a connection-level protocol error from the
/// server (DATA on stream 0, RFC 9113 §6.1: PROTOCOL_ERROR) makes the
/// client send GOAWAY(PROTOCOL_ERROR) (RFC 9113 §5.4.1 SHOULD) and close;
/// the call in flight fails (code: see the next test); the next call
/// works on a new connection.
#[test]
fn connection_protocol_error_sends_goaway_protocol_error_and_reconnects() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        let Some(_) = c.request()? else { return Ok(()) };
        c.send(&frame(DATA, 0, 0, b"oops"))?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let o = outcome(&call(&ch, Duration::from_secs(5), false));
    eprintln!("outcome: {o:?}");
    assert!(
        server.wait_eof(0, Duration::from_secs(3)),
        "{:?}",
        server.events()
    );
    let goaways: Vec<Ev> = server
        .events()
        .into_iter()
        .filter(|(i, e)| *i == 0 && matches!(e, Ev::GoAway(..)))
        .map(|(_, e)| e)
        .collect();
    eprintln!("client GOAWAYs: {goaways:?}");
    let o2 = outcome(&call(&ch, Duration::from_secs(5), true));
    assert_eq!(o2, Ok(b"ok".to_vec()));
    assert!(
        matches!(goaways.first(), Some(Ev::GoAway(_, PROTOCOL_ERROR, _))),
        "client GOAWAYs: {goaways:?}"
    );
    assert!(
        matches!(&o, Err((Code::Internal | Code::Unavailable, _))),
        "{o:?}"
    );
    ch.close();
}

/// The status code of that call: grpc-java INTERNAL "http2 exception"
/// (Utils.statusFromThrowable via NettyClientHandler `onConnectionError`);
/// gRPC-Go UNAVAILABLE (http2_client.go `reader` -> `t.Close(connectionErrorf(..))`;
/// Go also sends GOAWAY NO_ERROR "client transport shutdown", not
/// PROTOCOL_ERROR). Implementations disagree: switchyard gives gRPC-Go's
/// code (and sends GOAWAY PROTOCOL_ERROR, as RFC 9113 5.4.1 asks), pinned.
#[test]
fn connection_protocol_error_fails_the_call_unavailable_as_grpc_go() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(_) = c.request()? else { return Ok(()) };
        c.send(&frame(DATA, 0, 0, b"oops"))?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let o = outcome(&call(&ch, Duration::from_secs(5), false));
    assert!(matches!(&o, Err((Code::Unavailable, _))), "{o:?}");
    ch.close();
}
