//! gRPC-Go's client transport tests (grpc-go 4793ad04,
//! internal/transport/transport_test.go, http_util_test.go,
//! http2_client.go) for what the existing *_go_cases.rs files leave out:
//! stream flow-control violations (TestClientWithMisbehavedServer), the
//! connection window decoupled from one call's progress
//! (TestClientConnDecoupledFromApplicationRead), the server's
//! SETTINGS_HEADER_TABLE_SIZE (TestHeaderTblSize), padded DATA frames and
//! malformed ones (TestFramer_ParseDataFrame), close with a server that
//! stopped reading (TestClientCloseReturnsEarlyWhenGoAwayWriteHangs), and
//! response `-bin` values as decodeBinHeader reads them
//! (TestDecodeMetadataHeader).
//!
//! Server: the hand-written HTTP/2 server of tests/common/frame_server.rs.
//!
//! Fixed after this port found them: a DATA frame overrunning the stream
//! window (and the connection's, the two starting equal) ended the whole
//! connection (GOAWAY FLOW_CONTROL_ERROR, the call UNAVAILABLE): now the
//! stream alone is reset and the call fails INTERNAL, as gRPC-Go's client
//! does (h2 patch 11; Netty, under grpc-java, checks the connection first);
//! a response `-bin` value with partial padding ("AQ=") was accepted (Go
//! refuses it) and the byte offsets in base64 errors were not Go's.

#[path = "common/frame_server.rs"]
mod frame_server;
#[path = "common/h2_frames.rs"]
mod h2_frames;
#[path = "common/hpack.rs"]
mod hpack;
#[path = "common/outcome.rs"]
mod outcome;
use frame_server::*;
use h2_frames::*;
use outcome::outcome;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use switchyard::*;

const PADDED: u8 = 0x8;
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

fn channel(rt: &Runtime, server: &Server) -> Channel {
    Channel::new(
        rt,
        &format!("ipv4:{}", server.addr),
        None,
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            ..Default::default()
        },
    )
    .unwrap()
}

fn call_with(ch: &Channel, req: &[u8], deadline: Duration) -> Result<UnaryResponse, Status> {
    ch.reader().unary(
        "/echo.Echo/Unary",
        req,
        &CallOptions {
            deadline: Some(Instant::now() + deadline),
            wait_for_ready: Some(true),
            ..Default::default()
        },
    )
}

fn call(ch: &Channel) -> Result<UnaryResponse, Status> {
    call_with(ch, b"hi", Duration::from_secs(5))
}

/// A gRPC message header announcing `len` bytes.
fn msg_header(len: u32) -> Vec<u8> {
    let mut b = vec![0];
    b.extend(len.to_be_bytes());
    b
}

// ---------------------------------------------------------------------------
// TestClientWithMisbehavedServer: a server that ignores the stream's flow
// control. gRPC-Go's client (http2_client.go handleData: `s.fc.onData(size)`
// fails -> `closeStream(s, io.EOF, true, http2.ErrCodeFlowControl,
// status.New(codes.Internal, err.Error()), ...)`) resets that stream with
// RST_STREAM(FLOW_CONTROL_ERROR) and fails the call INTERNAL ("received N-bytes
// data exceeding the limit 65535 bytes"); the connection lives on (Go never
// checks the connection-level window: trInFlow.onData only counts what to
// give back). The test asserts RST_STREAM(stream 1, FLOW_CONTROL_ERROR).
// Adapted: response HEADERS and a message header announcing ~4 MB go first
// (switchyard refuses DATA before HEADERS, on purpose). switchyard resets
// the stream and fails the call INTERNAL as Go does (h2 patch 11); a server
// that then goes on sending on the reset stream overruns the connection
// window too, which switchyard does check (RFC 9113 6.9.1): GOAWAY
// FLOW_CONTROL_ERROR, and the next call goes on a new connection.
#[test]
fn stream_flow_control_violation_resets_only_that_stream_as_go() {
    // Which window the blast overruns first depends on when the client
    // last gave each back (h2 sends the stream's and the connection's
    // WINDOW_UPDATEs at their own thresholds): now and then (about one run
    // in dozens, under load) the connection's runs out a frame earlier,
    // and the client ends the connection, GOAWAY FLOW_CONTROL_ERROR, as
    // RFC 9113 has it. That run says nothing about the stream's reset: run
    // the scenario again (at most three times in all).
    for attempt in 1..=3 {
        match flow_control_blast() {
            Blast::StreamReset => return,
            Blast::ConnectionFirst(log) if attempt < 3 => {
                eprintln!("attempt {attempt}: the connection's window ran out first: {log:?}")
            }
            Blast::ConnectionFirst(log) => panic!("three times the connection first: {log:?}"),
        }
    }
}

/// How a flow-control blast ended (see the test above).
enum Blast {
    StreamReset,
    ConnectionFirst(Vec<(usize, Ev)>),
}

/// One connection whose server blasts DATA past the stream's window: the
/// client resets that stream (asserted in full), or, the connection's
/// window running out first, ends the connection (`ConnectionFirst`).
fn flow_control_blast() -> Blast {
    let server = Server::start(|c| {
        c.greet()?;
        let s = c.request()?.unwrap();
        if c.index > 0 {
            // A later connection: serve well.
            c.answer_ok(s)?;
            return c.serve_rest();
        }
        c.head(s)?;
        // Blast DATA on the stream from a second thread, ignoring every
        // WINDOW_UPDATE, until 2 s pass or a write fails.
        let mut w = c.sock.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let blaster = thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(2);
            // Under the 4 MiB receive limit: the blast (capped below it)
            // never completes the message.
            let mut first = msg_header(4_000_000);
            first.extend(vec![b'x'; 16_384 - 5]);
            if w.write_all(&data(s, &first, false)).is_err() {
                return;
            }
            let chunk = data(s, &[b'y'; 16_384], false);
            let mut sent = 16_384;
            while !st.load(Ordering::Acquire) && Instant::now() < end && sent < 3_900_000 {
                sent += 16_384;
                if w.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        // Read (and log) what the client sends meanwhile; answer its next
        // requests on this connection.
        let end = Instant::now() + Duration::from_secs(4);
        loop {
            match c.next_until(Some(end)) {
                Ok(Some(f)) if f.kind == RST_STREAM || f.kind == GOAWAY => {
                    stop.store(true, Ordering::Release);
                }
                Ok(Some(f)) if f.kind == HEADERS && f.stream != s => {
                    stop.store(true, Ordering::Release);
                    let _ = blaster_wait(&stop);
                    c.answer_ok(f.stream)?;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        stop.store(true, Ordering::Release);
        let _ = blaster.join();
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let first = call(&ch);
    let next = call(&ch);
    server.wait_for(Duration::from_secs(1), |l| {
        l.iter()
            .any(|(_, e)| matches!(e, Ev::Rst(..) | Ev::GoAway(..)))
    });
    let log: Vec<_> = server
        .events()
        .into_iter()
        .filter(|(_, e)| matches!(e, Ev::Rst(..) | Ev::GoAway(..) | Ev::Eof))
        .collect();
    let got = (
        outcome(&first).0,
        log.iter().any(|(i, e)| *i == 0 && *e == Ev::Rst(1, 0x3)),
        outcome(&next).0,
    );
    let connection_first = log
        .first()
        .is_some_and(|(i, e)| *i == 0 && matches!(e, Ev::GoAway(0, 0x3, _)));
    if got == (Code::Unavailable, false, Code::Ok) && connection_first {
        ch.close();
        return Blast::ConnectionFirst(log);
    }
    assert_eq!(
        got,
        (Code::Internal, true, Code::Ok),
        "(code, RST_STREAM(1, FLOW_CONTROL_ERROR), next call); \
         first call {:?}; client frames {log:?}",
        outcome(&first)
    );
    // The reset came first: the GOAWAY, if any, only after it.
    let rst = log.iter().position(|(_, e)| *e == Ev::Rst(1, 0x3));
    let goaway = log.iter().position(|(_, e)| matches!(e, Ev::GoAway(..)));
    assert!(goaway.is_none_or(|g| rst.is_some_and(|r| r < g)), "{log:?}");
    ch.close();
    Blast::StreamReset
}

fn blaster_wait(_stop: &AtomicBool) -> Option<()> {
    thread::sleep(Duration::from_millis(50));
    Some(())
}

trait ServeRest {
    fn serve_rest(&mut self) -> io::Result<()>;
}
impl ServeRest for H2 {
    fn serve_rest(&mut self) -> io::Result<()> {
        while let Some(s) = self.request()? {
            self.answer_ok(s)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// TestClientConnDecoupledFromApplicationRead: the connection's window is
// given back as DATA arrives, whatever becomes of the call it was for
// (http2_client.go handleData: "Decouple connection's flow control from
// application's read"). Here one call gets the whole connection window
// (65535 bytes) of a 1 MiB message that never completes; the server then
// waits for a connection WINDOW_UPDATE before it answers the other call.
#[test]
fn a_stalled_response_does_not_starve_the_other_calls_connection_window() {
    let saw_conn_wu = Arc::new(Mutex::new(None::<bool>));
    let flag = saw_conn_wu.clone();
    let server = Server::start(move |c| {
        c.greet()?;
        let ids = c.requests(2)?.unwrap();
        let (slow, fast) = (ids[0], ids[1]);
        c.head(slow)?;
        c.head(fast)?;
        // 65535 bytes of the slow call's message: the whole connection
        // window (and the stream's, at the default 65535).
        let window = 65_535usize.min(c.client_initial_window as usize);
        let mut body = msg_header(1 << 20);
        body.extend(vec![b'z'; window - 5]);
        for part in body.chunks(16_384) {
            c.send(&data(slow, part, false))?;
        }
        let end = Instant::now() + Duration::from_secs(3);
        let mut got = false;
        while !got {
            match c.next_until(Some(end)) {
                Ok(Some(f)) if f.kind == WINDOW_UPDATE && f.stream == 0 => got = true,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        *flag.lock().unwrap() = Some(got);
        if got {
            c.send(&data(fast, &msg(b"fast"), false))?;
            c.trailers(fast, "0")?;
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    ch.connect().unwrap();
    let (slow, fast) = thread::scope(|s| {
        let a = s.spawn(|| call_with(&ch, b"slow", Duration::from_secs(4)));
        // The slow call goes first (stream 1).
        server.wait_for(Duration::from_secs(3), |l| {
            l.iter().any(|(_, e)| matches!(e, Ev::Headers(_)))
        });
        let b = s.spawn(|| call_with(&ch, b"fast", Duration::from_secs(4)));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(
        (
            *saw_conn_wu.lock().unwrap(),
            outcome(&fast),
            outcome(&slow).0
        ),
        (
            Some(true),
            (Code::Ok, "fast".to_string()),
            Code::DeadlineExceeded
        ),
        "(connection WINDOW_UPDATE seen, fast call, slow call); log {:?}",
        server.events()
    );
    ch.close();
}

// ---------------------------------------------------------------------------
// TestHeaderTblSize: the client's HPACK encoder follows the server's
// SETTINGS_HEADER_TABLE_SIZE (http2_client.go handleSettings ->
// `updateHeaderTblSize` -> hpack Encoder.SetMaxDynamicTableSizeLimit). With
// the limit 0, RFC 7541 §4.2/§6.3: the first header block after the SETTINGS
// begins with a dynamic table size update to 0, and no block refers to a
// dynamic entry.
#[test]
fn header_table_size_zero_from_the_server_is_signalled_and_honoured() {
    let blocks = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let b2 = blocks.clone();
    let server = Server::start(move |c| {
        c.preface()?;
        c.settings(&[(SETTINGS_HEADER_TABLE_SIZE, 0)])?;
        while let Some(f) = c.next()? {
            if f.kind == HEADERS {
                assert_eq!(f.flags & (PADDED | 0x20), 0, "no padding/priority expected");
                b2.lock().unwrap().push(f.payload.clone());
                c.request_end(f.stream).ok();
                c.answer_ok(f.stream)?;
            }
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let md = vec![(
        "x-custom".to_string(),
        "some-longish-value-0123456789".to_string(),
    )];
    for _ in 0..3 {
        let r = ch.reader().unary(
            "/echo.Echo/Unary",
            b"hi",
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(5)),
                wait_for_ready: Some(true),
                metadata: &md,
                ..Default::default()
            },
        );
        assert_eq!(outcome(&r).0, Code::Ok);
    }
    let blocks = blocks.lock().unwrap().clone();
    assert_eq!(blocks.len(), 3);
    let first_byte = blocks[0][0];
    // Decoding with a table whose limit is 0 must work for every block.
    let decoded = std::panic::catch_unwind(|| {
        let mut d = hpack::Hpack::new();
        // A decoder that honours the limit: start from 0 as well.
        let mut out = Vec::new();
        for b in &blocks {
            let mut pre = vec![0x20];
            pre.extend_from_slice(b);
            out.push(d.decode(&pre));
        }
        out
    });
    let paths_ok = decoded.as_ref().is_ok_and(|all| {
        all.iter().all(|fields| {
            fields
                .iter()
                .any(|(n, v)| n == ":path" && v == b"/echo.Echo/Unary")
                && fields.iter().any(|(n, _)| n == "x-custom")
        })
    });
    assert_eq!(
        (first_byte, paths_ok),
        (0x20, true),
        "(first byte of the first block: 0x20 = size update to 0, every block decodable with an empty table); blocks {blocks:02x?}"
    );
    ch.close();
}

// ---------------------------------------------------------------------------
// Padded DATA (TestFramer_ParseDataFrame "good_padded"; RFC 9113 §6.1: the
// padding counts against flow control). gRPC-Go gives the padding back at
// once (handleData: `s.fc.onRead(size - dataLen)` for a padded frame). A
// 500 KB response in DATA frames of 1000 bytes + 255 bytes of padding, the
// server keeping to the windows the client grants: a client that kept the
// padding's share would stall after ~256 frames.
#[test]
fn padded_data_frames_give_their_padding_back_to_the_windows() {
    const FRAMES: usize = 500;
    const CHUNK: usize = 1000;
    let stalled = Arc::new(Mutex::new(None::<usize>));
    let st = stalled.clone();
    let server = Server::start(move |c| {
        c.greet()?;
        let s = c.request()?.unwrap();
        c.request_end(s)?;
        c.head(s)?;
        let mut body = msg_header((FRAMES * CHUNK) as u32);
        body.extend(vec![b'p'; FRAMES * CHUNK]);
        // body is 5 bytes longer: the first frame carries the header.
        let mut stream_win = i64::from(c.client_initial_window);
        let mut conn_win: i64 = 65_535;
        let mut parts: Vec<&[u8]> = vec![&body[..CHUNK + 5]];
        parts.extend(body[CHUNK + 5..].chunks(CHUNK));
        let end = Instant::now() + Duration::from_secs(5);
        for (n, part) in parts.iter().enumerate() {
            let mut payload = vec![255u8];
            payload.extend_from_slice(part);
            payload.extend(vec![0u8; 255]);
            let cost = payload.len() as i64;
            while stream_win < cost || conn_win < cost {
                match c.next_until(Some(end)) {
                    Ok(Some(f)) if f.kind == WINDOW_UPDATE => {
                        let inc = i64::from(
                            u32::from_be_bytes(f.payload[..4].try_into().unwrap()) & 0x7fff_ffff,
                        );
                        if f.stream == 0 {
                            conn_win += inc;
                        } else if f.stream == s {
                            stream_win += inc;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        *st.lock().unwrap() = Some(n);
                        return Ok(());
                    }
                }
            }
            stream_win -= cost;
            conn_win -= cost;
            c.send(&frame(DATA, PADDED, s, &payload))?;
        }
        // Padded trailers too.
        let block = lit(b"grpc-status", b"0");
        let mut p = vec![7u8];
        p.extend(block);
        p.extend([0u8; 7]);
        c.send(&frame(HEADERS, END_HEADERS | END_STREAM | PADDED, s, &p))?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let r = call_with(&ch, b"hi", Duration::from_secs(8));
    let got = r
        .as_ref()
        .map(|r| r.message.len())
        .map_err(|s| (s.code(), s.message().to_string()));
    assert_eq!(
        (got, *stalled.lock().unwrap()),
        (Ok(FRAMES * CHUNK), None),
        "(response, frame the server stalled at for want of window)"
    );
    ch.close();
}

// ---------------------------------------------------------------------------
// Malformed DATA frames (TestFramer_ParseDataFrame: "stream_id_0" and
// "pad_size_bigger_than_payload" are ConnectionError(PROTOCOL_ERROR);
// "padded_zero_data_some_padding" is a good frame). A connection error
// fails the call UNAVAILABLE in gRPC-Go (reader: `t.Close(connectionErrorf(
// ...))`); the good frame leaves the call OK.
#[test]
fn malformed_data_frames_are_connection_errors_and_empty_padded_data_is_fine() {
    type Bad = fn(u32) -> Vec<u8>;
    let cases: Vec<(&str, Bad, Code)> = vec![
        (
            "DATA on stream 0",
            |_| data(0, &msg(b"x"), false),
            Code::Unavailable,
        ),
        (
            "pad length 10 in a 6-byte payload",
            |s| frame(DATA, PADDED, s, &[10, 0, 0, 0, 0, 0]),
            Code::Unavailable,
        ),
        (
            "padded, no data, some padding",
            |s| frame(DATA, PADDED, s, &[3, 0, 0, 0]),
            Code::Ok,
        ),
    ];
    let mut bad = Vec::new();
    for (name, f, want) in cases {
        let server = Server::start(move |c| {
            c.greet()?;
            let s = c.request()?.unwrap();
            c.head(s)?;
            c.message(s, b"ok")?;
            c.send(&f(s))?;
            c.trailers(s, "0")?;
            c.until_eof()
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server);
        let got = outcome(&call(&ch));
        if got.0 != want {
            bad.push(format!(
                "{name}: got {got:?}, want {want:?}; log {:?}",
                server.events()
            ));
        }
        ch.close();
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

// ---------------------------------------------------------------------------
// TestClientCloseReturnsEarlyWhenGoAwayWriteHangs / TestCloseSetsConnection-
// Deadlines: closing the client returns even when its connection cannot be
// written (the server stopped reading with the socket buffers full); the call
// in flight ends.
#[test]
fn close_returns_promptly_when_the_server_stopped_reading() {
    let server = Server::start(|c| {
        c.preface()?;
        c.settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0x7fff_ffff)])?;
        c.window_update(0, 0x7fff_ffff - 65_535)?;
        // Read until the request starts, then stop reading for 6 s.
        let _ = c.request()?;
        let end = Instant::now() + Duration::from_secs(6);
        while Instant::now() < end && !c.over() {
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let big = vec![7u8; 48 << 20];
    let (res, took) = thread::scope(|s| {
        let h = s.spawn(|| call_with(&ch, &big, Duration::from_secs(20)));
        server.wait_for(Duration::from_secs(3), |l| {
            l.iter().any(|(_, e)| matches!(e, Ev::Headers(_)))
        });
        // Let the client fill the socket buffers.
        thread::sleep(Duration::from_millis(700));
        let start = Instant::now();
        ch.close();
        let took = start.elapsed();
        (h.join().unwrap(), took)
    });
    assert!(
        took < Duration::from_secs(2),
        "close took {took:?} with the server not reading"
    );
    assert_eq!(outcome(&res).0, Code::Cancelled, "{:?}", outcome(&res));
}

// ---------------------------------------------------------------------------
// Response `-bin` values as gRPC-Go reads them (http_util.go decodeBinHeader:
// `base64.StdEncoding` when len%4 == 0, else `RawStdEncoding`; a failure is
// operateHeaders' headerError "transport: malformed <key>: <base64 error>",
// INTERNAL; http_util_test.go TestDecodeMetadataHeader).

fn bin_outcome(value: &'static str) -> (Code, String) {
    let server = Server::start(move |c| {
        c.greet()?;
        while let Some(s) = c.request()? {
            let mut block = lit(b":status", b"200");
            block.extend(lit(b"content-type", b"application/grpc"));
            block.extend(lit(b"x-bin", value.as_bytes()));
            let mut all = frame(HEADERS, END_HEADERS, s, &block);
            all.extend(data(s, &msg(b"ok"), false));
            all.extend(frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                s,
                &lit(b"grpc-status", b"0"),
            ));
            c.send(&all)?;
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let got = outcome(&call(&ch));
    ch.close();
    got
}

/// Which values are base64 at all: padded or unpadded is fine, but a
/// length that is not a multiple of 4 is read without padding, so a
/// partial padding ("AQ=", "AQI==") is malformed in Go (RawStdEncoding
/// refuses '=').
#[test]
fn response_bin_value_with_partial_padding_is_malformed_as_go() {
    let cases = [
        ("AQ", Code::Ok),
        ("AQ==", Code::Ok),
        ("AQI=", Code::Ok),
        ("AQI", Code::Ok),
        ("AQ=", Code::Internal),
        ("AQI==", Code::Internal),
        ("AQ===", Code::Internal),
    ];
    let mut bad = Vec::new();
    for (value, want) in cases {
        let got = bin_outcome(value);
        if got.0 != want {
            bad.push(format!("x-bin: {value:?}: got {got:?}, Go {want:?}"));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The error's byte offset is Go's base64 CorruptInputError: "A" (raw, one
/// character left over) at byte 0; "AQ==AQ==" (std, data after the padding)
/// at byte 4.
#[test]
fn malformed_bin_value_error_offsets_match_go() {
    let cases = [("A", 0), ("AQ==AQ==", 4), ("A*Q=", 1)];
    let mut bad = Vec::new();
    for (value, at) in cases {
        let want = (
            Code::Internal,
            format!("transport: malformed x-bin: illegal base64 data at input byte {at}"),
        );
        let got = bin_outcome(value);
        if got != want {
            bad.push(format!("x-bin: {value:?}: got {got:?}, Go {want:?}"));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
