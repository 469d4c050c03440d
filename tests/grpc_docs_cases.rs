//! Client-side rules from gRPC's own documents (grpc/grpc `doc/`:
//! statuscodes.md, PROTOCOL-HTTP2.md, service_config.md, compression.md,
//! http-grpc-status-mapping.md, wait-for-ready.md, connectivity-semantics-
//! and-api.md, connection-backoff.md, keepalive.md, health-checking.md,
//! naming.md) that the other suites do not already pin, against
//! switchyard's public API with real servers on 127.0.0.1.
//!
//! Where the documents ask more than gRPC-Go does, switchyard follows the
//! document: grpc-timeout goes right after the reserved headers
//! (PROTOCOL-HTTP2's SHOULD; gRPC-Go writes content-type, user-agent and te
//! first); RST_STREAM ENHANCE_YOUR_CALM and INADEQUATE_SECURITY carry the
//! detail the RST_STREAM table asks for (as grpc-java; gRPC-Go's words
//! come first).
//!
//! Where the documents and the implementations disagree and switchyard
//! follows gRPC-Go (pinned elsewhere, not repeated): statuscodes.md's
//! UNIMPLEMENTED for a response cardinality violation (C++'s
//! client_unary_call.h for zero messages; gRPC-Go and grpc-java:
//! INTERNAL); compression.md test case 5's "as well as the supported ones"
//! in the text of an unsupported response encoding (no implementation
//! lists them); http-grpc-status-mapping.md's "if grpc-status was provided,
//! it must be used" for a non-gRPC content-type (C-core does; gRPC-Go and
//! grpc-java map the HTTP status).
//!
//! Already pinned elsewhere (not redone): the HTTP -> gRPC status table,
//! grpc-message percent-decoding, grpc-timeout encoding, RST_STREAM codes
//! other than FLOW_CONTROL_ERROR, GOAWAY, keepalive, backoff and the
//! connect deadline, health Watch, wait-for-ready, connectivity API,
//! target parsing, compression, message limits (non-zero), request headers.

#[path = "common/body_server.rs"]
mod body_server;
#[path = "common/frame_server.rs"]
mod frame_server;
#[path = "common/h2_frames.rs"]
mod h2_frames;
#[path = "common/hpack.rs"]
mod hpack;
#[path = "common/scripted_h2.rs"]
mod scripted_h2;
#[path = "common/tokio_host.rs"]
mod tokio_host;

use body_server::BodyServer;
use frame_server::{Ev, Server};
use h2_frames::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use switchyard::*;

const METHOD: &str = "/grpc.testing.TestService/UnaryCall";

fn insecure() -> ChannelOptions {
    ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    }
}

fn call(ch: &Channel, msg: &[u8], deadline: Option<Instant>) -> Result<UnaryResponse, Status> {
    ch.reader().unary(
        METHOD,
        msg,
        &CallOptions {
            deadline: Some(deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(5))),
            wait_for_ready: Some(true),
            ..Default::default()
        },
    )
}

fn outcome(r: &Result<UnaryResponse, Status>) -> Result<Vec<u8>, (Code, String)> {
    match r {
        Ok(resp) => Ok(resp.message.clone()),
        Err(s) => Err((s.code(), s.message().to_string())),
    }
}

// ---------------------------------------------------------------------------
// service_config.md: "Note that 0 is a valid value, meaning that the request
// [response] message must be empty."

/// A server that records each request's body bytes and answers with a
/// response message of `resp_len` bytes.
fn body_server(resp_len: usize) -> BodyServer {
    body_server::body_server(move |_| vec![7u8; resp_len])
}

/// `maxRequestMessageBytes: 0`: an empty request is valid and goes out (one
/// 5-byte length-prefixed message of length 0, PROTOCOL-HTTP2), a 1-byte
/// one is refused RESOURCE_EXHAUSTED before sending (gRPC-Go
/// `checkSendPayload` / C-core message_size filter: `size > limit`).
#[test]
fn max_request_message_bytes_zero_allows_only_an_empty_request() {
    let server = body_server(2);
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &server.host.target(),
        Some(r#"{"methodConfig":[{"name":[{}],"maxRequestMessageBytes":0}]}"#),
        insecure(),
    )
    .unwrap();
    let empty = call(&ch, b"", None);
    assert_eq!(outcome(&empty), Ok(vec![7u8; 2]), "an empty request");
    assert_eq!(
        server.bodies.lock().unwrap().clone(),
        vec![vec![0u8, 0, 0, 0, 0]],
        "the empty request's body on the wire"
    );
    let one = call(&ch, b"x", None);
    assert_eq!(
        outcome(&one).map_err(|e| e.0),
        Err(Code::ResourceExhausted),
        "{one:?}"
    );
    assert_eq!(
        server.bodies.lock().unwrap().len(),
        1,
        "the 1-byte request was sent"
    );
    ch.close();
}

/// `maxResponseMessageBytes: 0`: an empty response is valid, a 1-byte one
/// fails RESOURCE_EXHAUSTED (gRPC-Go recvAndDecompress `size > maxReceive`).
#[test]
fn max_response_message_bytes_zero_allows_only_an_empty_response() {
    let cfg = Some(r#"{"methodConfig":[{"name":[{}],"maxResponseMessageBytes":0}]}"#);
    let rt = Runtime::new().unwrap();
    let empty = body_server(0);
    let ch = Channel::new(&rt, &empty.host.target(), cfg, insecure()).unwrap();
    assert_eq!(outcome(&call(&ch, b"hi", None)), Ok(vec![]));
    ch.close();
    let one = body_server(1);
    let ch = Channel::new(&rt, &one.host.target(), cfg, insecure()).unwrap();
    let r = call(&ch, b"hi", None);
    assert_eq!(
        outcome(&r).map_err(|e| e.0),
        Err(Code::ResourceExhausted),
        "{r:?}"
    );
    ch.close();
}

// ---------------------------------------------------------------------------
// PROTOCOL-HTTP2 "Errors": RST_STREAM FLOW_CONTROL_ERROR(3) -> INTERNAL.

/// PROTOCOL-HTTP2's RST_STREAM table: FLOW_CONTROL_ERROR(3) is INTERNAL
/// (C-core `grpc_http2_error_to_grpc_status` default, grpc-java
/// `GrpcUtil.Http2Error.FLOW_CONTROL_ERROR`). gRPC-Go differs:
/// `http2ErrConvTab[http2.ErrCodeFlowControl] = codes.ResourceExhausted`
/// (internal/transport/http_util.go). Before and after response headers;
/// the connection keeps serving.
#[test]
fn rst_stream_flow_control_error_is_internal_as_the_protocol_doc_says() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let server = scripted_h2::Server::start(1, move |streams| {
        let mut out = Vec::new();
        for &s in streams {
            match n2.fetch_add(1, Ordering::AcqRel) {
                0 => out.extend(frame(RST_STREAM, 0, s, &3u32.to_be_bytes())),
                1 => {
                    out.extend(headers(
                        s,
                        &[(":status", b"200"), ("content-type", b"application/grpc")],
                        false,
                    ));
                    out.extend(frame(RST_STREAM, 0, s, &3u32.to_be_bytes()));
                }
                _ => {
                    out.extend(headers(
                        s,
                        &[(":status", b"200"), ("content-type", b"application/grpc")],
                        false,
                    ));
                    out.extend(data(s, &msg(b"ok"), false));
                    out.extend(headers(s, &[("grpc-status", b"0")], true));
                }
            }
        }
        out
    });
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr), None, insecure()).unwrap();
    let before = outcome(&call(&ch, b"a", None));
    let after = outcome(&call(&ch, b"b", None));
    let ok = outcome(&call(&ch, b"c", None));
    assert_eq!(
        before.as_ref().map_err(|e| e.0),
        Err(Code::Internal),
        "{before:?}"
    );
    assert_eq!(
        after.as_ref().map_err(|e| e.0),
        Err(Code::Internal),
        "{after:?}"
    );
    assert!(
        before
            .as_ref()
            .is_err_and(|e| e.1.contains("FLOW_CONTROL_ERROR")),
        "{before:?}"
    );
    assert_eq!(ok, Ok(b"ok".to_vec()));
    assert_eq!(server.accepted(), 1);
    ch.close();
}

// ---------------------------------------------------------------------------
// statuscodes.md "Flow-control protocol violation | INTERNAL | Both": a
// server overrunning the client's connection window.

/// A frame server (tests/common/frame_server.rs) whose connections send
/// SETTINGS, give back the window of every DATA frame (connection and
/// stream) and call `answer(conn, stream, &mut sock)` to write the answer
/// to each request once it ends (HEADERS, or DATA, with END_STREAM).
fn answering(answer: impl Fn(usize, u32, &mut TcpStream) + Send + Sync + 'static) -> Server {
    Server::start(move |c| {
        c.send(&frame(SETTINGS, 0, 0, &[]))?;
        c.preface()?;
        while let Some(f) = c.next()? {
            if f.kind == DATA && !f.payload.is_empty() {
                let n = f.payload.len() as u32;
                c.window_update(0, n)?;
                c.window_update(f.stream, n)?;
            }
            if let Some((s, _)) = c.request_done(&f) {
                answer(c.index, s, &mut c.sock);
            }
        }
        Ok(())
    })
}

/// On the first connection the server answers with 1 MiB of DATA at once,
/// never waiting for WINDOW_UPDATE: far past the 65,535-byte stream (and
/// connection) window. Later connections answer properly.
///
/// What gRPC does: statuscodes.md lists "Flow-control protocol violation"
/// as INTERNAL (generated at Both). gRPC-Go's client (http2_client.go
/// handleData: the stream's `s.fc.onData` fails -> `closeStream(...,
/// http2.ErrCodeFlowControl, status.New(codes.Internal, ...))`; it never
/// enforces the connection window) resets that stream with
/// RST_STREAM(FLOW_CONTROL_ERROR), fails the call INTERNAL and keeps the
/// connection; grpc-java (Netty checks the connection window first) ends
/// the connection, its calls INTERNAL. switchyard does as gRPC-Go (h2
/// patch 11): the stream is reset, the rest of its frames dropped, and the
/// next call is served on the same connection.
#[test]
fn a_server_overrunning_the_window_has_its_stream_reset_and_the_call_internal() {
    let server = answering(|conn, s, sock| {
        let _ = sock.write_all(&headers(
            s,
            &[(":status", b"200"), ("content-type", b"application/grpc")],
            false,
        ));
        if conn == 0 && s == 1 {
            let total = 1usize << 20;
            let mut body = vec![0u8];
            body.extend((total as u32).to_be_bytes());
            body.extend(vec![1u8; total]);
            let mut out = Vec::new();
            for chunk in body.chunks(16_384) {
                out.extend(data(s, chunk, false));
            }
            out.extend(headers(s, &[("grpc-status", b"0")], true));
            let _ = sock.write_all(&out);
        } else {
            let mut out = data(s, &msg(b"ok"), false);
            out.extend(headers(s, &[("grpc-status", b"0")], true));
            let _ = sock.write_all(&out);
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr), None, insecure()).unwrap();
    let first = call(&ch, b"a", None);
    let got = outcome(&first);
    assert_eq!(
        got.as_ref().map_err(|e| e.0),
        Err(Code::Internal),
        "{got:?}"
    );
    let reset = server.wait_for(Duration::from_secs(3), |ev| {
        ev.iter().any(|(c, e)| *c == 0 && *e == Ev::Rst(1, 3))
    });
    assert!(
        reset,
        "no RST_STREAM(1, FLOW_CONTROL_ERROR): {:?}",
        server.events()
    );
    let second = outcome(&call(&ch, b"b", None));
    assert_eq!(second, Ok(b"ok".to_vec()), "{:?}", server.events());
    let events = server.events();
    assert!(
        !events.iter().any(|(_, e)| matches!(e, Ev::GoAway(..))),
        "the connection was ended: {events:?}"
    );
    assert_eq!(server.accepted().len(), 1, "{events:?}");
    ch.close();
}

// ---------------------------------------------------------------------------
// PROTOCOL-HTTP2 "Requests": "implementations should send Timeout
// immediately after the reserved headers and they should send the
// Call-Definition headers before sending Custom-Metadata".

/// The request's header fields in order, from the scripted server's record.
fn request_field_names(md: &[(String, String)], deadline: Option<Instant>) -> Vec<String> {
    let server = scripted_h2::Server::start(1, |streams| {
        let mut out = Vec::new();
        for &s in streams {
            out.extend(headers(
                s,
                &[(":status", b"200"), ("content-type", b"application/grpc")],
                false,
            ));
            out.extend(data(s, &msg(b"ok"), false));
            out.extend(headers(s, &[("grpc-status", b"0")], true));
        }
        out
    });
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr), None, insecure()).unwrap();
    let r = ch.reader().unary(
        METHOD,
        b"hi",
        &CallOptions {
            deadline,
            wait_for_ready: Some(true),
            metadata: md,
            ..Default::default()
        },
    );
    assert!(r.is_ok(), "{r:?}");
    ch.close();
    let block = server.blocks.lock().unwrap()[0].clone();
    hpack::Hpack::new()
        .decode(&block)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// The reserved (pseudo) headers come first, then — as PROTOCOL-HTTP2
/// recommends — grpc-timeout right after them; the custom metadata last.
/// (gRPC-Go's createHeaderFields puts content-type, user-agent and te
/// before grpc-timeout; so do C-core's metadata order and grpc-java's
/// `Utils.convertClientHeaders`: the "immediately after" is a SHOULD no
/// gRPC implementation follows.)
#[test]
fn pseudo_headers_first_and_custom_metadata_after_the_call_definition() {
    let md = vec![("x-custom".to_string(), "v".to_string())];
    let names = request_field_names(&md, Some(Instant::now() + Duration::from_secs(30)));
    eprintln!("request fields: {names:?}");
    let pseudo_end = names.iter().take_while(|n| n.starts_with(':')).count();
    assert!(
        names[pseudo_end..].iter().all(|n| !n.starts_with(':')),
        "pseudo-headers after regular ones: {names:?}"
    );
    let custom = names.iter().position(|n| n == "x-custom").unwrap();
    let timeout = names.iter().position(|n| n == "grpc-timeout").unwrap();
    assert!(
        timeout < custom,
        "grpc-timeout after custom metadata: {names:?}"
    );
}

/// The doc's SHOULD, literally: grpc-timeout immediately after the
/// reserved headers.
#[test]
fn grpc_timeout_immediately_follows_the_reserved_headers() {
    let names = request_field_names(&[], Some(Instant::now() + Duration::from_secs(30)));
    let pseudo_end = names.iter().take_while(|n| n.starts_with(':')).count();
    assert_eq!(
        names.get(pseudo_end).map(String::as_str),
        Some("grpc-timeout"),
        "request fields: {names:?}"
    );
}

// ---------------------------------------------------------------------------
// PROTOCOL-HTTP2 "Errors": ENHANCE_YOUR_CALM -> RESOURCE_EXHAUSTED "...with
// additional error detail provided by runtime to indicate that the
// exhausted resource is bandwidth"; INADEQUATE_SECURITY -> PERMISSION_DENIED
// "... with additional detail indicating that permission was denied as
// protocol is not secure enough for call".

/// The codes are right (pinned in conn_go_cases.rs); the doc also asks for
/// the detail. grpc-java gives it (GrpcUtil.Http2Error: ENHANCE_YOUR_CALM
/// "Bandwidth exhausted", INADEQUATE_SECURITY "Permission denied as
/// protocol is not secure enough to call"); gRPC-Go (handleRSTStream:
/// "stream terminated by RST_STREAM with error code: %v") and C-core do
/// not.
#[test]
fn rst_enhance_your_calm_and_inadequate_security_carry_the_documented_detail() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let server = scripted_h2::Server::start(1, move |streams| {
        let mut out = Vec::new();
        for &s in streams {
            let code: u32 = if n2.fetch_add(1, Ordering::AcqRel) == 0 {
                0xb
            } else {
                0xc
            };
            out.extend(frame(RST_STREAM, 0, s, &code.to_be_bytes()));
        }
        out
    });
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr), None, insecure()).unwrap();
    let calm = outcome(&call(&ch, b"a", None)).unwrap_err();
    let insecure_ = outcome(&call(&ch, b"b", None)).unwrap_err();
    ch.close();
    assert_eq!(calm.0, Code::ResourceExhausted);
    assert_eq!(insecure_.0, Code::PermissionDenied);
    let mut bad = Vec::new();
    if !calm.1.to_lowercase().contains("bandwidth") {
        bad.push(format!(
            "ENHANCE_YOUR_CALM: {:?} names no bandwidth",
            calm.1
        ));
    }
    if !insecure_.1.to_lowercase().contains("not secure enough") {
        bad.push(format!(
            "INADEQUATE_SECURITY: {:?} does not say the protocol is not secure enough",
            insecure_.1
        ));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------
// PROTOCOL-HTTP2 "Connection failure": "If a detectable connection failure
// occurs on the client all calls will be closed with an UNAVAILABLE
// status"; statuscodes.md: "Some data transmitted ... before connection
// breaks | UNAVAILABLE | Client"; "Calls that cannot be proven to have
// started will not be retried" (the converse: sent calls are not retried
// transparently).

/// Three calls in flight on one connection (blocking and started), the
/// server drops the TCP connection once it has all three requests: each
/// fails UNAVAILABLE, none is replayed (the server saw each once), and the
/// next call is served on a new connection.
#[test]
fn a_connection_lost_with_three_calls_in_flight_fails_each_unavailable_unreplayed() {
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let server = answering(move |conn, s, sock| {
        if conn == 0 {
            if s2.fetch_add(1, Ordering::AcqRel) == 2 {
                let _ = sock.shutdown(std::net::Shutdown::Both);
            }
            return;
        }
        let mut out = headers(
            s,
            &[(":status", b"200"), ("content-type", b"application/grpc")],
            false,
        );
        out.extend(data(s, &msg(b"ok"), false));
        out.extend(headers(s, &[("grpc-status", b"0")], true));
        let _ = sock.write_all(&out);
    });
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr), None, insecure()).unwrap();
    ch.connect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ch.state() != ConnectivityState::Ready {
        assert!(Instant::now() < deadline, "never READY");
        ch.wait_for_state_change(
            ch.state(),
            Some(Instant::now() + Duration::from_millis(100)),
        );
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let _started = ch
        .unary_start(
            METHOD,
            b"s",
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(5)),
                ..Default::default()
            },
            move |r| {
                let _ = tx.send(
                    r.map(|r| r.message)
                        .map_err(|s| (s.code(), s.message().to_string())),
                );
            },
        )
        .unwrap();
    let outs: Vec<_> = thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|_| sc.spawn(|| outcome(&call(&ch, b"b", None))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let started = rx.recv_timeout(Duration::from_secs(6)).unwrap();
    let mut all = outs;
    all.push(started);
    assert!(
        all.iter().all(|o| matches!(o, Err((Code::Unavailable, _)))),
        "{all:?}"
    );
    let requests_on_0 = server
        .events()
        .iter()
        .filter(|(c, e)| *c == 0 && matches!(e, Ev::Request(..)))
        .count();
    let requests_elsewhere = server
        .events()
        .iter()
        .filter(|(c, e)| *c != 0 && matches!(e, Ev::Request(..)))
        .count();
    assert_eq!(
        (requests_on_0, requests_elsewhere),
        (3, 0),
        "{:?}",
        server.events()
    );
    assert_eq!(outcome(&call(&ch, b"c", None)), Ok(b"ok".to_vec()));
    ch.close();
}

// ---------------------------------------------------------------------------
// wait-for-ready.md: "RPCs SHOULD NOT fail as a result of the channel being
// in other states (CONNECTING, READY, or IDLE)".

/// A fail-fast call started on the event loop (`unary_start`) on a brand-new
/// IDLE channel takes it out of IDLE and is served.
#[test]
fn a_fail_fast_started_call_on_an_idle_channel_is_served() {
    let server = body_server(2);
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &server.host.target(), None, insecure()).unwrap();
    assert_eq!(ch.state(), ConnectivityState::Idle);
    let (tx, rx) = std::sync::mpsc::channel();
    ch.unary_start(
        METHOD,
        b"x",
        &CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            wait_for_ready: Some(false),
            ..Default::default()
        },
        move |r| {
            let _ = tx.send(
                r.map(|r| r.message)
                    .map_err(|s| (s.code(), s.message().to_string())),
            );
        },
    )
    .unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(6)).unwrap(),
        Ok(vec![7u8; 2])
    );
    assert_eq!(ch.state(), ConnectivityState::Ready);
    ch.close();
}

// ---------------------------------------------------------------------------
// PROTOCOL-HTTP2 RST_STREAM table: "REFUSED_STREAM | UNAVAILABLE - Indicates
// that no processing occurred and the request can be retried, possibly
// elsewhere"; README: with `disable_retry` "transparent retries still
// happen".

/// `disable_retry` set, the first attempt refused with RST_STREAM
/// REFUSED_STREAM: the call is retried transparently and served (gRPC-Go
/// stream.go shouldRetry: `cs.firstAttempt && unprocessed` is checked
/// before `dopts.disableRetry`). grpc-java with retries disabled has no
/// RetriableStream and fails it UNAVAILABLE; C-core's transparent retry
/// lives in its retry filter, absent with retries disabled.
#[test]
fn a_refused_stream_is_retried_transparently_with_retries_disabled() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let server = scripted_h2::Server::start(1, move |streams| {
        let mut out = Vec::new();
        for &s in streams {
            if n2.fetch_add(1, Ordering::AcqRel) == 0 {
                out.extend(frame(RST_STREAM, 0, s, &7u32.to_be_bytes()));
            } else {
                out.extend(headers(
                    s,
                    &[(":status", b"200"), ("content-type", b"application/grpc")],
                    false,
                ));
                out.extend(data(s, &msg(b"ok"), false));
                out.extend(headers(s, &[("grpc-status", b"0")], true));
            }
        }
        out
    });
    let rt = Runtime::new().unwrap();
    let mut opts = insecure();
    opts.disable_retry = true;
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr), None, opts).unwrap();
    let r = outcome(&call(&ch, b"a", None));
    assert_eq!(r, Ok(b"ok".to_vec()));
    assert_eq!(server.requests(), 2);
    ch.close();
}
