//! The client connection under server-driven events, against
//! gRPC-Go's transport (internal/transport/http2_client.go, client_stream.go),
//! its addrConn (clientconn.go) and gRPC's connection-backoff spec. A
//! hand-written HTTP/2 server on 127.0.0.1 (tests/common/frame_server.rs)
//! records what the client sends (HEADERS, RST_STREAM codes, GOAWAY, EOF)
//! and when it connects.

#[path = "common/frame_server.rs"]
mod frame_server;
#[path = "common/h2_frames.rs"]
mod h2_frames;
use frame_server::*;
use h2_frames::*;
use std::io::{self, Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use switchyard::backoff::BackoffConfig;
use switchyard::*;

// ---------------------------------------------------------------------------
// Client side.

fn channel_with(rt: &Runtime, server: &Server, backoff: BackoffConfig) -> Channel {
    Channel::new(
        rt,
        &format!("ipv4:{}", server.addr),
        None,
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            backoff,
            ..Default::default()
        },
    )
    .unwrap()
}

fn channel(rt: &Runtime, server: &Server) -> Channel {
    channel_with(rt, server, BackoffConfig::default())
}

fn call(ch: &Channel, deadline: Duration, wait_for_ready: bool) -> Result<UnaryResponse, Status> {
    ch.reader().unary(
        "/echo.Echo/Unary",
        b"hi",
        &CallOptions {
            deadline: Some(Instant::now() + deadline),
            wait_for_ready: Some(wait_for_ready),
            ..Default::default()
        },
    )
}

/// Polls the channel's state until `until` holds (bounded), returning
/// every distinct state seen on the way.
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

fn first_stream(log: &[(usize, Ev)]) -> Option<u32> {
    log.iter().find_map(|(_, e)| match e {
        Ev::Headers(s) => Some(*s),
        _ => None,
    })
}

// ---------------------------------------------------------------------------
// (3) Calls ending early: what goes on the wire.

/// grpc-go `internal/transport/client_stream.go` `ClientStream.Close(err)`:
/// a call that ends with an error before the server's trailers (cancelled
/// by its caller) resets its stream with RST_STREAM(CANCEL), rst = true,
/// rstCode = http2.ErrCodeCancel. The call itself ends CANCELLED.
#[test]
fn cancelling_a_started_call_resets_its_stream_with_cancel() {
    let server = Server::start(|c| {
        c.preface()?;
        c.send(&frame(SETTINGS, 0, 0, &[]))?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let (tx, rx) = mpsc::channel();
    let handle = ch
        .unary_start(
            "/echo.Echo/Unary",
            b"hi",
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(10)),
                wait_for_ready: Some(true),
                ..Default::default()
            },
            move |r| {
                let _ = tx.send(r);
            },
        )
        .unwrap();
    assert!(
        server.wait_for(Duration::from_secs(5), |l| first_stream(l).is_some()),
        "the request never reached the server"
    );
    let stream = first_stream(&server.events()).unwrap();
    assert!(handle.cancel());
    let res = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("no completion");
    assert_eq!(res.err().map(|s| s.code()), Some(Code::Cancelled));
    let reset = server.wait_for(Duration::from_secs(2), |l| {
        l.iter()
            .any(|(_, e)| matches!(e, Ev::Rst(s, _) if *s == stream))
    });
    let rsts: Vec<_> = server
        .events()
        .into_iter()
        .filter(|(_, e)| matches!(e, Ev::Rst(..)))
        .collect();
    assert!(
        reset,
        "no RST_STREAM for the cancelled stream {stream}: {rsts:?}"
    );
    assert!(
        rsts.iter().any(|(_, e)| *e == Ev::Rst(stream, 0x8)),
        "RST_STREAM code is not CANCEL (8): {rsts:?}"
    );
    ch.close();
}

/// A deadline that expires after the response headers and message came but
/// before the trailers (a server that never sends them): the call ends
/// DEADLINE_EXCEEDED at its deadline, and its stream is reset with
/// RST_STREAM(CANCEL) (grpc-go `ClientStream.Close(err)` as above; the
/// attempt is finished by `csAttempt.finish` with the context's error).
#[test]
fn deadline_mid_response_is_deadline_exceeded_and_resets_with_cancel() {
    let server = Server::start(|c| {
        c.preface()?;
        c.send(&frame(SETTINGS, 0, 0, &[]))?;
        if let Some(s) = c.request()? {
            c.head(s)?;
            c.message(s, b"ok")?;
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let deadline = Duration::from_millis(700);
    let started = Instant::now();
    let res = call(&ch, deadline, true);
    let took = started.elapsed();
    assert_eq!(
        res.as_ref().err().map(|s| s.code()),
        Some(Code::DeadlineExceeded),
        "{res:?}"
    );
    assert!(took < deadline + Duration::from_secs(1), "took {took:?}");
    let stream = first_stream(&server.events()).expect("no request");
    let reset = server.wait_for(Duration::from_secs(2), |l| {
        l.iter()
            .any(|(_, e)| matches!(e, Ev::Rst(s, _) if *s == stream))
    });
    assert!(
        reset,
        "no RST_STREAM after the deadline: {:?}",
        server.events()
    );
    assert!(
        server
            .events()
            .iter()
            .any(|(_, e)| *e == Ev::Rst(stream, 0x8)),
        "RST_STREAM code is not CANCEL (8): {:?}",
        server.events()
    );
    ch.close();
}

// ---------------------------------------------------------------------------
// (2) GOAWAY.

/// grpc-go `http2_client.go` `handleGoAway`: a GOAWAY on a connection with
/// no active stream closes the transport ("received goaway and there are no
/// active streams"); `clientconn.go` `createTransport`'s onClose: "Always go
/// idle and wait for the LB policy to initiate a new connection attempt" —
/// the subchannel goes IDLE, never TRANSIENT_FAILURE, and pick_first stays
/// IDLE (no new connection) until a call comes, which reconnects and
/// succeeds even without wait-for-ready.
#[test]
fn goaway_on_a_quiet_connection_closes_it_and_pick_first_goes_idle() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.preface()?;
        c.send(&frame(SETTINGS, 0, 0, &[]))?;
        if let Some(s) = c.request()? {
            c.answer_ok(s)?;
            // Let the answer be read before the GOAWAY.
            thread::sleep(Duration::from_millis(100));
            c.goaway(s, 0, b"")?;
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    call(&ch, Duration::from_secs(5), true).expect("first call");
    assert_eq!(ch.state(), ConnectivityState::Ready);
    let seen = states_until(&ch, Duration::from_secs(3), |s| {
        s == ConnectivityState::Idle
    });
    assert_eq!(
        seen,
        vec![ConnectivityState::Ready, ConnectivityState::Idle],
        "states after GOAWAY"
    );
    let closed = server.wait_for(Duration::from_secs(2), |l| {
        l.iter().any(|(i, e)| *i == 0 && *e == Ev::Eof)
    });
    assert!(
        closed,
        "the client kept a GOAWAY'd connection with no stream open: {:?}",
        server.events()
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(server.accepted().len(), 1, "reconnected without a pick");
    assert_eq!(ch.state(), ConnectivityState::Idle);
    let r = call(&ch, Duration::from_secs(5), false).expect("a call on the idle channel");
    assert_eq!(r.message, b"ok");
    assert_eq!(server.accepted().len(), 2);
    ch.close();
}

/// A graceful GOAWAY (last stream id 2^31 - 1) while a call is in flight:
/// the call finishes on the draining connection, and once it is done the
/// client closes the connection (grpc-go `closeStream`: "if t.state ==
/// draining && len(t.activeStreams) == 0 { t.Close(...) }"). Meanwhile the
/// subchannel is IDLE, not TRANSIENT_FAILURE.
#[test]
fn draining_connection_closes_once_its_last_call_ends() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.preface()?;
        c.send(&frame(SETTINGS, 0, 0, &[]))?;
        if let Some(s) = c.request()? {
            c.goaway(0x7fff_ffff, 0, b"")?;
            thread::sleep(Duration::from_millis(300));
            c.answer_ok(s)?;
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let watcher = {
        let start = Instant::now();
        let mut seen = vec![];
        let ch2 = &ch;
        thread::scope(|s| {
            let h = s.spawn(move || call(ch2, Duration::from_secs(5), true));
            // States while the call drains.
            while start.elapsed() < Duration::from_millis(1500) {
                let st = ch2.state();
                if seen.last() != Some(&st) {
                    seen.push(st);
                }
                thread::sleep(Duration::from_millis(2));
            }
            let r = h.join().unwrap();
            assert_eq!(r.expect("the call in flight at the GOAWAY").message, b"ok");
        });
        seen
    };
    assert!(
        !watcher.contains(&ConnectivityState::TransientFailure),
        "states: {watcher:?}"
    );
    let closed = server.wait_for(Duration::from_secs(2), |l| {
        l.iter().any(|(i, e)| *i == 0 && *e == Ev::Eof)
    });
    assert!(
        closed,
        "the drained connection stayed open: {:?}",
        server.events()
    );
    ch.close();
}

// ---------------------------------------------------------------------------
// (4) Connection establishment.

/// gRPC connection-backoff.md with its defaults (INITIAL_BACKOFF 1 s,
/// MULTIPLIER 1.6, JITTER 0.2): against a server that hangs up before
/// saying anything, pick_first's attempts (it reconnects each subchannel
/// once its backoff ends while in TRANSIENT_FAILURE) come 1 s apart, then
/// 1.6 s ± 20 %.
#[test]
fn default_backoff_spaces_attempts_one_then_one_point_six_seconds() {
    let server = Server::start(|_c| Ok(()));
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    ch.connect().unwrap();
    let end = Instant::now() + Duration::from_millis(4200);
    while server.accepted().len() < 3 && Instant::now() < end {
        thread::sleep(Duration::from_millis(5));
    }
    let at = server.accepted();
    assert!(at.len() >= 3, "only {} attempts in 4.2 s", at.len());
    let gap1 = (at[1] - at[0]).as_secs_f64();
    let gap2 = (at[2] - at[1]).as_secs_f64();
    assert!(
        (0.95..1.3).contains(&gap1),
        "first backoff {gap1:.3} s, want 1 s"
    );
    assert!(
        (1.6 * 0.8 - 0.05..1.6 * 1.2 + 0.3).contains(&gap2),
        "second backoff {gap2:.3} s, want 1.6 s ± 20 %"
    );
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    ch.close();
}

/// A server that accepts but never sends its SETTINGS: the channel stays
/// CONNECTING (never READY), and the attempt is given up at the connect
/// deadline, max(min connect timeout, backoff) (grpc-go
/// `resetTransportAndUnlock`'s dialDuration; the spec's
/// `Max(current_deadline, now() + MIN_CONNECT_TIMEOUT)`), the client
/// closing that connection; the next attempt follows.
#[test]
fn silent_server_times_out_at_the_min_connect_timeout() {
    let server = Server::start(|c| {
        // Read (and ignore) everything until the client hangs up.
        let mut sink = [0u8; 4096];
        loop {
            if c.over() {
                return Ok(());
            }
            match c.sock.read(&mut sink) {
                Ok(0) => {
                    c.note(Ev::Eof);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => {
                    c.note(Ev::Eof);
                    return Ok(());
                }
            }
        }
    });
    let rt = Runtime::new().unwrap();
    let backoff = BackoffConfig {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(100),
        min_connect_timeout: Duration::from_millis(800),
        ..Default::default()
    };
    let ch = channel_with(&rt, &server, backoff);
    ch.connect().unwrap();
    thread::sleep(Duration::from_millis(400));
    assert_eq!(ch.state(), ConnectivityState::Connecting);
    let end = Instant::now() + Duration::from_secs(3);
    while server.accepted().len() < 2 && Instant::now() < end {
        thread::sleep(Duration::from_millis(5));
    }
    let at = server.accepted();
    assert!(at.len() >= 2, "no second attempt: {:?}", server.events());
    let gap = (at[1] - at[0]).as_secs_f64();
    assert!(
        (0.75..1.3).contains(&gap),
        "second attempt after {gap:.3} s, want 0.8 s"
    );
    assert!(
        server.wait_for(Duration::from_secs(1), |l| l
            .iter()
            .any(|(i, e)| *i == 0 && *e == Ev::Eof)),
        "the timed-out connection was not closed"
    );
    ch.close();
}

/// READY only once the server's SETTINGS frame has been read whole (gRPC's
/// readiness; grpc-go `newHTTP2Client` blocks on `readerErrCh` until
/// `readServerPreface` read it): a SETTINGS frame whose payload comes
/// 400 ms after its header leaves the channel CONNECTING until then.
#[test]
fn ready_only_after_the_whole_settings_frame() {
    let server = Server::start(|c| {
        c.preface()?;
        // SETTINGS_MAX_CONCURRENT_STREAMS (3) = 100, in two writes.
        let f = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        c.send(&f[..11])?;
        c.sock.flush()?;
        thread::sleep(Duration::from_millis(400));
        c.send(&f[11..])?;
        while let Some(s) = c.request()? {
            c.answer_ok(s)?;
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    ch.connect().unwrap();
    thread::sleep(Duration::from_millis(250));
    assert_eq!(ch.state(), ConnectivityState::Connecting);
    let seen = states_until(&ch, Duration::from_secs(3), |s| {
        s == ConnectivityState::Ready
    });
    assert_eq!(seen.last(), Some(&ConnectivityState::Ready), "{seen:?}");
    assert_eq!(
        call(&ch, Duration::from_secs(5), false).unwrap().message,
        b"ok"
    );
    ch.close();
}

// ---------------------------------------------------------------------------
// More server-driven stream and connection ends.

/// grpc-go `http2_client.go` `handleRSTStream`: a server's RST_STREAM ends
/// the call with `http2ErrConvTab[code]` (unknown codes UNKNOWN), whether
/// it comes before or after the response headers; the connection stays.
/// (FLOW_CONTROL_ERROR is left out: Go says RESOURCE_EXHAUSTED, the
/// HTTP/2 protocol doc and the other gRPCs INTERNAL.)
#[test]
fn server_rst_stream_codes_map_as_grpc_go() {
    let table: Vec<(u32, Code)> = vec![
        (0x0, Code::Internal),
        (0x1, Code::Internal),
        (0x2, Code::Internal),
        (0x5, Code::Internal),
        (0x8, Code::Cancelled),
        (0xb, Code::ResourceExhausted),
        (0xc, Code::PermissionDenied),
        (0xd, Code::Internal),
        (0x20, Code::Unknown),
    ];
    // Each code twice: reset before any answer, then after the response
    // headers and a message.
    let script: Vec<(u32, bool)> = table
        .iter()
        .flat_map(|(c, _)| [(*c, false), (*c, true)])
        .collect();
    let queue = Arc::new(Mutex::new(script.clone()));
    let server = Server::start(move |c| {
        c.preface()?;
        c.send(&frame(SETTINGS, 0, 0, &[]))?;
        while let Some(s) = c.request()? {
            let next = {
                let mut q = queue.lock().unwrap();
                (!q.is_empty()).then(|| q.remove(0))
            };
            match next {
                Some((code, after_head)) => {
                    if after_head {
                        c.head(s)?;
                        c.message(s, b"ok")?;
                    }
                    c.send(&frame(RST_STREAM, 0, s, &code.to_be_bytes()))?;
                }
                None => c.answer_ok(s)?,
            }
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let mut wrong = Vec::new();
    for (code, after_head) in &script {
        let want = table.iter().find(|(c, _)| c == code).unwrap().1;
        let got = call(&ch, Duration::from_secs(5), true)
            .err()
            .map_or(Code::Ok, |s| s.code());
        if got != want {
            wrong.push(format!(
                "RST_STREAM({code:#x}) {}: got {got:?}, gRPC-Go gives {want:?}",
                if *after_head {
                    "after the headers"
                } else {
                    "before any answer"
                }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        server.accepted().len(),
        1,
        "a reset stream cost the connection"
    );
    ch.close();
}

/// grpc-go `handleGoAway`: a second GOAWAY whose last stream id exceeds the
/// first's is a connection error ("received goaway with stream id: ...,
/// which exceeds stream id of previous goaway"): the transport closes and
/// the call still in flight on it (processed, at or below the first id)
/// fails UNAVAILABLE at once, not at its deadline.
#[test]
fn second_goaway_with_a_higher_id_ends_the_connection() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.preface()?;
        c.send(&frame(SETTINGS, 0, 0, &[]))?;
        if let Some(s) = c.request()? {
            c.goaway(s, 0, b"")?;
            thread::sleep(Duration::from_millis(100));
            c.goaway(s + 2, 0, b"")?;
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let started = Instant::now();
    let res = call(&ch, Duration::from_secs(4), true);
    let took = started.elapsed();
    assert_eq!(
        res.as_ref().err().map(|s| s.code()),
        Some(Code::Unavailable),
        "{res:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        server.wait_for(Duration::from_secs(2), |l| l
            .iter()
            .any(|(i, e)| *i == 0 && *e == Ev::Eof)),
        "connection kept: {:?}",
        server.events()
    );
    ch.close();
}

/// gRFC A8 / grpc-go `addrConn.adjustParams`: a GOAWAY ENHANCE_YOUR_CALM
/// "too_many_pings" doubles the keepalive time the channel's next
/// connections use (`cc.keepaliveParams.Time = 2 * Time`); the connection
/// closes (no stream open) and the subchannel goes IDLE.
#[test]
fn too_many_pings_doubles_the_next_connections_keepalive_time() {
    switchyard::transport::set_min_keepalive_time_for_testing(Duration::from_millis(50));
    let server = Server::start(|c| {
        c.preface()?;
        c.send(&frame(SETTINGS, 0, 0, &[]))?;
        if c.index > 0 {
            while let Some(f) = c.next()? {
                if f.kind == HEADERS {
                    c.answer_ok(f.stream)?;
                }
            }
            return Ok(());
        }
        while let Some(f) = c.next()? {
            if f.kind == PING && f.flags & ACK == 0 {
                c.goaway(0, 0xb, b"too_many_pings")?;
                break;
            }
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr),
        None,
        ChannelOptions {
            transport: Some(TransportConfig {
                keepalive: Some(Keepalive {
                    time: Duration::from_millis(250),
                    timeout: Duration::from_secs(2),
                    permit_without_calls: true,
                }),
                ..TransportConfig::insecure()
            }),
            ..Default::default()
        },
    )
    .unwrap();
    ch.connect().unwrap();
    assert!(
        server.wait_for(Duration::from_secs(3), |l| l
            .iter()
            .any(|(i, e)| *i == 0 && *e == Ev::Eof)),
        "no ping, or the GOAWAY'd connection stayed: {:?}",
        server.events()
    );
    let seen = states_until(&ch, Duration::from_secs(2), |s| {
        s == ConnectivityState::Idle
    });
    assert!(
        !seen.contains(&ConnectivityState::TransientFailure),
        "{seen:?}"
    );
    call(&ch, Duration::from_secs(5), true).expect("a call on a new connection");
    let pings = |l: &[(usize, Ev)]| -> Vec<Instant> {
        l.iter()
            .filter_map(|(i, e)| match e {
                Ev::Ping(t) if *i == 1 => Some(*t),
                _ => None,
            })
            .collect()
    };
    assert!(
        server.wait_for(Duration::from_secs(3), |l| pings(l).len() >= 3),
        "too few pings on the new connection: {:?}",
        server.events()
    );
    let p = pings(&server.events());
    let gaps: Vec<f64> = p.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    assert!(
        gaps.iter().all(|g| (0.45..0.8).contains(g)),
        "ping gaps {gaps:?} s on the new connection, want 0.5 s (2 x 250 ms)"
    );
    ch.close();
}

/// grpc-go pick_first (`pickfirstleaf.go` `updateSubConnState`: once in
/// TRANSIENT_FAILURE, a subchannel's CONNECTING is not reported, "sticky"
/// TRANSIENT_FAILURE): while a server keeps timing out its attempts, the
/// channel says TRANSIENT_FAILURE between them, never CONNECTING again.
#[test]
fn pick_first_stays_in_transient_failure_while_it_retries() {
    let server = Server::start(|c| {
        let mut sink = [0u8; 4096];
        while !c.over() {
            match c.sock.read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let backoff = BackoffConfig {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(100),
        min_connect_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let ch = channel_with(&rt, &server, backoff);
    ch.connect().unwrap();
    let seen = states_until(&ch, Duration::from_secs(2), |s| {
        s == ConnectivityState::TransientFailure
    });
    assert_eq!(
        seen.last(),
        Some(&ConnectivityState::TransientFailure),
        "{seen:?}"
    );
    let mut after = vec![];
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        let s = ch.state();
        if after.last() != Some(&s) {
            after.push(s);
        }
        thread::sleep(Duration::from_millis(1));
    }
    assert!(
        server.accepted().len() >= 3,
        "{} attempts",
        server.accepted().len()
    );
    assert_eq!(after, vec![ConnectivityState::TransientFailure]);
    ch.close();
}

/// A call whose deadline expires while it waits for a stream slot (the
/// server's SETTINGS_MAX_CONCURRENT_STREAMS is 1 and another call holds
/// it) never opened a stream: it ends DEADLINE_EXCEEDED and nothing of it
/// reaches the server (gRPC-Go's `NewStream` waits for quota before the
/// stream exists on the wire, so nothing is sent for it; RFC 9113 5.1: an
/// RST_STREAM on an idle stream is a connection error), and the
/// connection keeps serving.
#[test]
fn a_call_that_expires_waiting_for_a_stream_slot_sends_nothing() {
    let server = Server::start(|c| {
        c.preface()?;
        // SETTINGS_MAX_CONCURRENT_STREAMS (3) = 1.
        c.send(&frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 1]))?;
        let first = c.request()?;
        let release = Instant::now() + Duration::from_millis(1200);
        // Hold the first call while reading what comes meanwhile.
        while Instant::now() < release {
            c.sock.set_read_timeout(Some(TICK))?;
            if c.buf.len() < 9 {
                let mut chunk = [0u8; 4096];
                match c.sock.read(&mut chunk) {
                    Ok(0) => return Ok(()),
                    Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::TimedOut =>
                    {
                        continue
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(f) = c.next()? {
                if f.kind == HEADERS {
                    c.answer_ok(f.stream)?;
                }
            } else {
                return Ok(());
            }
        }
        if let Some(s) = first {
            c.answer_ok(s)?;
        }
        while let Some(f) = c.next()? {
            if f.kind == HEADERS {
                c.answer_ok(f.stream)?;
            }
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    thread::scope(|s| {
        let held = s.spawn(|| call(&ch, Duration::from_secs(5), true));
        assert!(server.wait_for(Duration::from_secs(3), |l| first_stream(l).is_some()));
        let started = Instant::now();
        let queued = call(&ch, Duration::from_millis(400), true);
        assert_eq!(
            queued.as_ref().err().map(|s| s.code()),
            Some(Code::DeadlineExceeded),
            "{queued:?} after {:?}",
            started.elapsed()
        );
        assert_eq!(held.join().unwrap().expect("the held call").message, b"ok");
    });
    assert_eq!(
        call(&ch, Duration::from_secs(3), false)
            .expect("next call")
            .message,
        b"ok"
    );
    let log = server.events();
    let opened: Vec<u32> = log
        .iter()
        .filter_map(|(_, e)| match e {
            Ev::Headers(s) => Some(*s),
            _ => None,
        })
        .collect();
    let stray: Vec<_> = log
        .iter()
        .filter(|(_, e)| {
            matches!(e, Ev::Rst(s, _) if !opened.contains(s)) || matches!(e, Ev::GoAway(..))
        })
        .collect();
    assert!(
        stray.is_empty(),
        "frames for a stream never opened: {stray:?} (log {log:?})"
    );
    assert_eq!(server.accepted().len(), 1);
    ch.close();
}

fn big_call(ch: &Channel, size: usize) -> Result<UnaryResponse, Status> {
    ch.reader().unary(
        "/echo.Echo/Unary",
        &vec![7u8; size],
        &CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(3)),
            wait_for_ready: Some(true),
            ..Default::default()
        },
    )
}

/// A server that answers (headers, message, trailers with END_STREAM)
/// before it has read the whole request — here a 200 KiB request, most of
/// it held back by flow control since the server never opens its window:
/// the call ends with the trailers' status, OK (grpc-go `operateHeaders`:
/// END_STREAM closes the stream with the received status, resetting it
/// with RST_STREAM(NO_ERROR) when the client was still sending:
/// `rstStream := s.getState() == streamActive`; `csAttempt.sendMsg`
/// returns nil for a unary call whose write failed, RecvMsg then gives the
/// status). RFC 9113 8.1 allows exactly this ("a server can send a
/// complete response prior to the client sending an entire request").
#[test]
fn a_complete_answer_before_the_whole_request_is_read_succeeds() {
    let server = Server::start(|c| {
        c.preface()?;
        c.send(&frame(SETTINGS, 0, 0, &[]))?;
        while let Some(s) = c.request()? {
            c.answer_ok(s)?;
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let started = Instant::now();
    let res = big_call(&ch, 200 * 1024);
    assert_eq!(
        res.as_ref()
            .map(|r| r.message.clone())
            .map_err(|s| (s.code(), s.message().to_string())),
        Ok(b"ok".to_vec()),
        "after {:?}",
        started.elapsed()
    );
    // For the record (--nocapture): how the client ended its upload.
    thread::sleep(Duration::from_millis(200));
    eprintln!("server saw: {:?}", server.events());
    ch.close();
}

/// The same, the server then resetting the stream with RST_STREAM(NO_ERROR)
/// to stop the upload (RFC 9113 8.1: "the server ... can request that the
/// client abort transmission of a request without error by sending a
/// RST_STREAM with an error code of NO_ERROR after sending a complete
/// response"). gRPC-Go has closed the stream with the trailers' status
/// already (the RST finds no stream: `getStream` nil): OK.
#[test]
fn a_complete_answer_then_rst_no_error_succeeds() {
    let server = Server::start(|c| {
        c.preface()?;
        c.send(&frame(SETTINGS, 0, 0, &[]))?;
        while let Some(s) = c.request()? {
            c.answer_ok(s)?;
            c.send(&frame(RST_STREAM, 0, s, &0u32.to_be_bytes()))?;
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let res = big_call(&ch, 200 * 1024);
    assert_eq!(
        res.as_ref()
            .map(|r| r.message.clone())
            .map_err(|s| (s.code(), s.message().to_string())),
        Ok(b"ok".to_vec())
    );
    ch.close();
}

/// A server that writes its complete answer and hangs up at once (the
/// answer and the FIN in one go): the call ends OK, every time — gRPC-Go's
/// reader handles the trailers (closing the stream with its status)
/// before it reads the EOF that closes the transport. The next call,
/// wait-for-ready or not, reconnects (pick_first went IDLE) and succeeds.
/// Each next call starts once the hang-up is seen (the channel left
/// READY): one started in between may be sent on the dying connection and
/// fail UNAVAILABLE when the EOF arrives, as in gRPC-Go (a transport that
/// closes fails its open streams; only a GOAWAY marks them unprocessed).
#[test]
fn an_answer_followed_at_once_by_a_hang_up_is_still_ok() {
    let server = Server::start(|c| {
        c.preface()?;
        c.send(&frame(SETTINGS, 0, 0, &[]))?;
        if let Some(s) = c.request()? {
            let mut all = Vec::new();
            let mut block = lit(b":status", b"200");
            block.extend(lit(b"content-type", b"application/grpc"));
            all.extend(frame(HEADERS, END_HEADERS, s, &block));
            all.extend(frame(DATA, 0, s, &[0, 0, 0, 0, 2, b'o', b'k']));
            all.extend(frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                s,
                &lit(b"grpc-status", b"0"),
            ));
            c.send(&all)?;
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let mut bad = Vec::new();
    for i in 0..15 {
        match call(&ch, Duration::from_secs(3), i % 2 == 0) {
            Ok(r) if r.message == b"ok" => {}
            other => bad.push(format!("call {i}: {other:?}")),
        }
        let seen = states_until(&ch, Duration::from_secs(3), |s| {
            s != ConnectivityState::Ready
        });
        assert_ne!(
            seen.last(),
            Some(&ConnectivityState::Ready),
            "call {i}: hang-up unseen"
        );
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    ch.close();
}

/// The same early answer (no RST_STREAM from the server, whose stream
/// window stays shut, so most of the 200 KiB request is still queued in
/// the client), on a connection whose server allows one stream at a time.
/// gRPC-Go's client ends the stream once the trailers came (`operateHeaders`
/// -> `closeStream(s, io.EOF, rstStream, ...)`; `closeStream` gives the
/// stream's quota back, `addBackStreamQuota`, and loopy's
/// `cleanupStreamHandler` drops the stream and its queued DATA), so the
/// next call gets the slot and succeeds. (Go sends RST_STREAM(NO_ERROR)
/// only when the stream was still `streamActive`; a unary request queued
/// whole is `streamWriteDone` already, so nothing is asserted about it.)
/// A client that keeps the finished stream open for the request bytes it
/// still holds keeps the slot, and those bytes, for ever.
#[test]
fn an_early_answer_frees_the_stream_slot_for_the_next_call() {
    let server = Server::start(|c| {
        c.preface()?;
        // SETTINGS_MAX_CONCURRENT_STREAMS (3) = 1.
        c.send(&frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 1]))?;
        while let Some(s) = c.request()? {
            c.answer_ok(s)?;
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let first = big_call(&ch, 200 * 1024);
    assert_eq!(first.expect("the early-answered call").message, b"ok");
    let started = Instant::now();
    let second = call(&ch, Duration::from_secs(2), true);
    let log = server.events();
    assert_eq!(
        second
            .as_ref()
            .map(|r| r.message.clone())
            .map_err(|s| (s.code(), s.message().to_string())),
        Ok(b"ok".to_vec()),
        "the next call after {:?}; the server saw {log:?}",
        started.elapsed()
    );
    assert_eq!(server.accepted().len(), 1);
    ch.close();
}
