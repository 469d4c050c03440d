//! gRPC-Go's transport-utility and header-validation tables
//! (internal/transport/http_util_test.go, transport_test.go's
//! TestClientDecodeHeader / TestClientDecodeTrailer, http2_client.go's
//! operateHeaders, rpc_util.go's recvAndDecompress / checkRecvPayload, and
//! stream.go's unary cardinality checks) replayed against switchyard's
//! client through the public API, with a scripted hand-written HTTP/2
//! server on 127.0.0.1.
//!
//! Every expectation is what gRPC-Go's client reports for the same bytes on
//! the wire; each test cites the Go code it follows.

#[path = "common/h2_frames.rs"]
mod h2_frames;
#[path = "common/outcome.rs"]
mod outcome;
use h2_frames::*;
use outcome::outcome;
use std::thread::{self};
use std::time::{Duration, Instant};
use switchyard::*;

#[path = "common/scripted_h2.rs"]
mod scripted_h2;
use scripted_h2::Server;

const CT: (&str, &[u8]) = ("content-type", b"application/grpc");
const S200: (&str, &[u8]) = (":status", b"200");

/// A whole response: headers (`head`), DATA `body`, trailers `tail`.
fn response(s: u32, head: &[(&str, &[u8])], body: &[u8], tail: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = headers(s, head, false);
    out.extend(data(s, body, false));
    out.extend(headers(s, tail, true));
    out
}

// ---------------------------------------------------------------------------
// Client side.

fn channel(rt: &Runtime, server: &Server, tweak: impl FnOnce(&mut TransportConfig)) -> Channel {
    channel_with(rt, server, None, tweak)
}

fn channel_with(
    rt: &Runtime,
    server: &Server,
    config: Option<&str>,
    tweak: impl FnOnce(&mut TransportConfig),
) -> Channel {
    let mut transport = TransportConfig::insecure();
    tweak(&mut transport);
    Channel::new(
        rt,
        &format!("ipv4:{}", server.addr),
        config,
        ChannelOptions {
            transport: Some(transport),
            ..Default::default()
        },
    )
    .unwrap()
}

fn call(ch: &Channel, request: &[u8]) -> Result<UnaryResponse, Status> {
    let mut r = ch.reader();
    r.unary(
        "/echo.Echo/Unary",
        request,
        &CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            wait_for_ready: Some(true),
            ..Default::default()
        },
    )
}

/// Runs one call against a server answering every request with `script`
/// (one request at a time) and returns its outcome.
fn against(
    script: impl Fn(u32) -> Vec<u8> + Send + Sync + 'static,
    tweak: impl FnOnce(&mut TransportConfig),
) -> (Code, String) {
    let rt = Runtime::new().unwrap();
    let server = Server::start(1, move |streams| {
        streams.iter().flat_map(|s| script(*s)).collect()
    });
    let ch = channel(&rt, &server, tweak);
    let out = outcome(&call(&ch, b"hi"));
    ch.close();
    out
}

/// Collects `(case, got, want)` mismatches; panics listing all of them.
/// A case's name, what the call gave, the code expected and, if any, a
/// word its message must contain.
type Case<'a> = (String, (Code, String), Code, Option<&'a str>);

fn check_all(cases: Vec<Case<'_>>) {
    let mut bad = Vec::new();
    for (name, (got, msg), want, want_msg) in cases {
        let msg_ok = want_msg.is_none_or(|m| msg == m);
        if got != want || !msg_ok {
            bad.push(format!(
                "{name}: got {got:?} {msg:?}, gRPC-Go gives {want:?}{}",
                want_msg.map(|m| format!(" {m:?}")).unwrap_or_default()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "cases that differ from gRPC-Go:\n{}",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Differences.

/// A trailers-only answer (HEADERS with END_STREAM) whose content-type is
/// missing or not gRPC's is not a gRPC response, whatever grpc-status it
/// carries: gRPC-Go's operateHeaders sets `isGRPC` only from a valid
/// content-type (http2_client.go, `case "content-type"`), and `if !isGRPC`
/// takes the code from the HTTP status (HTTPStatusConvTab, UNKNOWN for 200
/// or an unmapped status) and never reads grpc-status
/// (transport_test.go TestClientDecodeHeader "missing_content_type_header":
/// grpc-status 0 with :status 200 and no content-type is UNKNOWN). gRPC
/// Java does the same (`transportTrailersReceived` ->
/// `validateInitialMetadata`).
#[test]
fn trailers_only_without_a_grpc_content_type_takes_its_code_from_http() {
    let only = |fields: Vec<(&'static str, &'static [u8])>| move |s: u32| headers(s, &fields, true);
    let cases = vec![
        (
            "200, no content-type, grpc-status 7".to_string(),
            against(only(vec![S200, ("grpc-status", b"7")]), |_| {}),
            Code::Unknown,
            None,
        ),
        (
            "200, application/json, grpc-status 7".to_string(),
            against(
                only(vec![
                    S200,
                    ("content-type", b"application/json"),
                    ("grpc-status", b"7"),
                ]),
                |_| {},
            ),
            Code::Unknown,
            None,
        ),
        (
            "404, no content-type, grpc-status 7".to_string(),
            against(
                only(vec![(":status", b"404"), ("grpc-status", b"7")]),
                |_| {},
            ),
            Code::Unimplemented,
            None,
        ),
        (
            "503, text/html, grpc-status 0".to_string(),
            against(
                only(vec![
                    (":status", b"503"),
                    ("content-type", b"text/html"),
                    ("grpc-status", b"0"),
                ]),
                |_| {},
            ),
            Code::Unavailable,
            None,
        ),
    ];
    check_all(cases);
}

/// gRPC-Go's content-type check is case-sensitive: `grpcutil.ContentSubtype`
/// (internal/grpcutil/method.go) is `contentType == "application/grpc"` or
/// `strings.HasPrefix(contentType, "application/grpc")` followed by '+' or
/// ';'. "APPLICATION/GRPC" is thus not gRPC: with :status 200 the call is
/// UNKNOWN ("transport: received unexpected content-type"), even though a
/// message and grpc-status 0 follow. (gRPC Java lower-cases first and would
/// accept it; Go is the reference here.)
#[test]
fn content_type_is_matched_case_sensitively() {
    let with_ct = |ct: &'static [u8]| {
        move |s: u32| {
            response(
                s,
                &[S200, ("content-type", ct)],
                &msg(b"ok"),
                &[("grpc-status", b"0")],
            )
        }
    };
    let cases = vec![
        (
            "APPLICATION/GRPC".to_string(),
            against(with_ct(b"APPLICATION/GRPC"), |_| {}),
            Code::Unknown,
            None,
        ),
        (
            "Application/grpc+proto".to_string(),
            against(with_ct(b"Application/grpc+proto"), |_| {}),
            Code::Unknown,
            None,
        ),
        // Agreeing controls: exact and subtype forms are gRPC.
        (
            "application/grpc+proto".to_string(),
            against(with_ct(b"application/grpc+proto"), |_| {}),
            Code::Ok,
            Some("ok"),
        ),
        (
            "application/grpc;charset=utf-8".to_string(),
            against(with_ct(b"application/grpc;charset=utf-8"), |_| {}),
            Code::Ok,
            Some("ok"),
        ),
        (
            "application/grpc-web".to_string(),
            against(with_ct(b"application/grpc-web"), |_| {}),
            Code::Unknown,
            None,
        ),
    ];
    check_all(cases);
}

/// When a field repeats, gRPC-Go's operateHeaders keeps the last value:
/// its loop over `frame.Fields` assigns `grpcStatusCode` and `grpcMessage`
/// on every `grpc-status` / `grpc-message` it meets (http2_client.go).
/// gRPC Java's `Metadata.get` also returns the last value. switchyard's
/// `grpc_status` (src/transport/grpc.rs) reads `HeaderMap::get`, the first.
#[test]
fn the_last_grpc_status_and_grpc_message_count() {
    let tail = |fields: Vec<(&'static str, &'static [u8])>| {
        move |s: u32| response(s, &[S200, CT], &msg(b"ok"), &fields)
    };
    let cases = vec![
        (
            "grpc-status 0 then 13".to_string(),
            against(
                tail(vec![("grpc-status", b"0"), ("grpc-status", b"13")]),
                |_| {},
            ),
            Code::Internal,
            None,
        ),
        (
            "grpc-status 13 then 0".to_string(),
            against(
                tail(vec![("grpc-status", b"13"), ("grpc-status", b"0")]),
                |_| {},
            ),
            Code::Ok,
            Some("ok"),
        ),
        (
            "grpc-message a then b".to_string(),
            against(
                tail(vec![
                    ("grpc-status", b"5"),
                    ("grpc-message", b"a"),
                    ("grpc-message", b"b"),
                ]),
                |_| {},
            ),
            Code::NotFound,
            Some("b"),
        ),
    ];
    check_all(cases);
}

/// A grpc-status that is no signed 32-bit decimal is UNKNOWN in gRPC-Go's
/// words, whatever grpc-message says (operateHeaders: `strconv.ParseInt(
/// hf.Value, 10, 32)`, "transport: malformed grpc-status: %v"); one that
/// is, but names no code (99, -1), is UNKNOWN with the server's message.
#[test]
fn a_malformed_grpc_status_is_unknown_in_gos_words() {
    let tail = |value: &'static [u8]| {
        move |s: u32| {
            response(
                s,
                &[S200, CT],
                &msg(b"ok"),
                &[("grpc-status", value), ("grpc-message", b"said")],
            )
        }
    };
    let mut cases = Vec::new();
    for (value, why) in [
        (&b"abc"[..], "invalid syntax"),
        (b"", "invalid syntax"),
        (b"1.5", "invalid syntax"),
        (b"4294967296", "value out of range"),
        (b"2147483648", "value out of range"),
    ] {
        let want = format!(
            "transport: malformed grpc-status: strconv.ParseInt: parsing \"{}\": {why}",
            String::from_utf8_lossy(value)
        );
        let got = against(tail(value), |_| {});
        cases.push((
            format!("grpc-status {:?}", String::from_utf8_lossy(value)),
            got.clone(),
            Code::Unknown,
            None,
        ));
        assert_eq!(
            got.1,
            want,
            "grpc-status {:?}",
            String::from_utf8_lossy(value)
        );
    }
    for value in [&b"99"[..], b"-1"] {
        cases.push((
            format!("grpc-status {:?}", String::from_utf8_lossy(value)),
            against(tail(value), |_| {}),
            Code::Unknown,
            Some("said"),
        ));
    }
    check_all(cases);
}

/// A unary response with two messages is a cardinality violation, INTERNAL
/// (stream.go, clientStreamWrapper.RecvMsg: "cardinality violation:
/// expected <EOF> for non server-streaming RPCs, but received another
/// message"), also when the two together exceed the receive limit but each
/// fits: gRPC-Go checks the limit per message (rpc_util.go parser.recvMsg,
/// `int(length) > maxReceiveMessageSize`), never on the body as a whole.
/// switchyard's `unary_body_chunk` (src/transport/grpc.rs) fails the whole
/// body past `max + 5` bytes with RESOURCE_EXHAUSTED. (tests/faults
/// `many_messages` asserts RESOURCE_EXHAUSTED for this very case: it too
/// would be INTERNAL in gRPC-Go.)
#[test]
fn two_messages_each_within_the_limit_are_internal_not_resource_exhausted() {
    let two = |s: u32| {
        let mut body = msg(&[b'a'; 600]);
        body.extend(msg(&[b'b'; 600]));
        response(s, &[S200, CT], &body, &[("grpc-status", b"0")])
    };
    let limit = |t: &mut TransportConfig| t.max_recv_message_size = Some(1000);
    let cases = vec![
        (
            "2 x 600 bytes, limit 1000".to_string(),
            against(two, limit),
            Code::Internal,
            None,
        ),
        // Agreeing controls: one message at the limit passes, one byte
        // over is RESOURCE_EXHAUSTED (`>` in both).
        (
            "1 x 1000 bytes, limit 1000".to_string(),
            against(
                |s| {
                    response(
                        s,
                        &[S200, CT],
                        &msg(&[b'x'; 1000]),
                        &[("grpc-status", b"0")],
                    )
                },
                limit,
            ),
            Code::Ok,
            None,
        ),
        (
            "1 x 1001 bytes, limit 1000".to_string(),
            against(
                |s| {
                    response(
                        s,
                        &[S200, CT],
                        &msg(&[b'x'; 1001]),
                        &[("grpc-status", b"0")],
                    )
                },
                limit,
            ),
            Code::ResourceExhausted,
            None,
        ),
    ];
    check_all(cases);
}

/// gRPC-Go reads the response message before the trailers' status: the
/// first RecvMsg decodes the message (rpc_util.go recvAndDecompress ->
/// checkRecvPayload, parser.recvMsg) and fails the call there; the status
/// in the trailers is only reached by the second RecvMsg at io.EOF
/// (stream.go csAttempt.recvMsg / clientStreamWrapper.RecvMsg). So a bad
/// message fails the call INTERNAL even when the trailers carry another
/// error code. switchyard's `unary_message` (src/transport/grpc.rs) returns
/// the trailers' status first and never looks at the message.
#[test]
fn a_bad_message_fails_the_call_before_the_trailers_status_is_read() {
    let with_body = |body: Vec<u8>| {
        move |s: u32| {
            response(
                s,
                &[S200, CT],
                &body,
                &[("grpc-status", b"5"), ("grpc-message", b"not found")],
            )
        }
    };
    let mut two = msg(b"a");
    two.extend(msg(b"b"));
    let mut truncated = vec![0u8];
    truncated.extend(10u32.to_be_bytes());
    truncated.extend(b"abc");
    let cases = vec![
        (
            "compressed flag without grpc-encoding, then grpc-status 5".to_string(),
            against(with_body(msg_with_flag(1, b"ok")), |_| {}),
            Code::Internal,
            None,
        ),
        (
            "payload format 2, then grpc-status 5".to_string(),
            against(with_body(msg_with_flag(2, b"ok")), |_| {}),
            Code::Internal,
            None,
        ),
        (
            "two messages, then grpc-status 5".to_string(),
            against(with_body(two), |_| {}),
            Code::Internal,
            None,
        ),
        (
            "truncated message, then grpc-status 5".to_string(),
            against(with_body(truncated), |_| {}),
            Code::Internal,
            None,
        ),
        // Agreeing control: a good message and an error status is that
        // status.
        (
            "one message, then grpc-status 5".to_string(),
            against(with_body(msg(b"ok")), |_| {}),
            Code::NotFound,
            Some("not found"),
        ),
    ];
    check_all(cases);
}

/// A frame for a stream that has already ended (HEADERS or DATA after its
/// trailers) is ignored by gRPC-Go: `getStream` finds no active stream and
/// operateHeaders / handleData return (http2_client.go); the connection and
/// the other calls on it carry on. Here one write holds call 1's whole
/// answer, a stray HEADERS and DATA on call 1's stream, then call 2's
/// answer: in gRPC-Go both calls succeed on the one connection.
#[test]
fn frames_after_the_trailers_leave_the_other_calls_alone() {
    let rt = Runtime::new().unwrap();
    let server = Server::start(2, |streams| {
        let mut out = Vec::new();
        let ok = |s| response(s, &[S200, CT], &msg(b"ok"), &[("grpc-status", b"0")]);
        if let [first, rest @ ..] = streams {
            out.extend(ok(*first));
            out.extend(headers(*first, &[("grpc-status", b"0")], true));
            out.extend(data(*first, &msg(b"late"), true));
            for s in rest {
                out.extend(ok(*s));
            }
        }
        out
    });
    let ch = channel(&rt, &server, |_| {});
    // Warm up so both calls share one connection.
    ch.connect().unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while ch.state() != ConnectivityState::Ready && Instant::now() < end {
        thread::sleep(Duration::from_millis(10));
    }
    let results: Vec<(Code, String)> = thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| outcome(&call(&ch, b"hi"))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let accepted = server.accepted();
    ch.close();
    assert_eq!(
        results,
        vec![(Code::Ok, "ok".to_string()), (Code::Ok, "ok".to_string())],
        "gRPC-Go ignores frames on an ended stream; connections: {accepted}"
    );
    assert_eq!(accepted, 1, "the stray frames cost the connection");
}

// ---------------------------------------------------------------------------
// Agreements (kept as regression checks for the tables ported from Go).

/// http_util_test.go TestDecodeGrpcMessage, through a trailers-only answer
/// with grpc-status 5 (decodeGrpcMessage: "%" + two hex digits decodes,
/// anything else passes through).
#[test]
fn grpc_message_percent_decoding_matches_go() {
    let table: &[(&'static [u8], &str)] = &[
        (b"", ""),
        (b"Hello", "Hello"),
        (b"H%61o", "Hao"),
        (b"H%6", "H%6"),
        (b"%G0", "%G0"),
        (b"%E7%B3%BB%E7%BB%9F", "系统"),
        (b"%EF%BF%BD", "\u{FFFD}"),
        (b"%%41", "%A"),
        (b"100%", "100%"),
        (b"%4", "%4"),
        (b"%7e%7E", "~~"),
        (b"%00", "\0"),
        (b"%25", "%"),
        (b"%0A%0D", "\n\r"),
    ];
    let mut cases = Vec::new();
    for (wire, want) in table {
        let wire: &'static [u8] = wire;
        let out = against(
            move |s| {
                headers(
                    s,
                    &[S200, CT, ("grpc-status", b"5"), ("grpc-message", wire)],
                    true,
                )
            },
            |_| {},
        );
        cases.push((
            format!("grpc-message {:?}", String::from_utf8_lossy(wire)),
            out,
            Code::NotFound,
            Some(*want),
        ));
    }
    check_all(cases);
}

/// http_util.go HTTPStatusConvTab (and UNKNOWN for anything else), for a
/// non-gRPC answer (no content-type): trailers-only and with a body. One
/// row is gRPC's documented table's, not Go's: 431 is INTERNAL there
/// (doc/http-grpc-status-mapping.md; grpc-java's `httpStatusToGrpcCode`),
/// which Go's table lacks (UNKNOWN).
#[test]
fn http_status_without_grpc_maps_as_go() {
    let table: &[(&'static [u8], Code)] = &[
        (b"400", Code::Internal),
        (b"401", Code::Unauthenticated),
        (b"403", Code::PermissionDenied),
        (b"404", Code::Unimplemented),
        (b"429", Code::Unavailable),
        (b"502", Code::Unavailable),
        (b"503", Code::Unavailable),
        (b"504", Code::Unavailable),
        (b"431", Code::Internal),
        (b"500", Code::Unknown),
        (b"200", Code::Unknown),
        (b"302", Code::Unknown),
    ];
    let mut cases = Vec::new();
    for (status, want) in table {
        let status: &'static [u8] = status;
        cases.push((
            format!("{} trailers-only", String::from_utf8_lossy(status)),
            against(move |s| headers(s, &[(":status", status)], true), |_| {}),
            *want,
            None,
        ));
        cases.push((
            format!("{} text/html with a body", String::from_utf8_lossy(status)),
            against(
                move |s| {
                    let mut out = headers(
                        s,
                        &[(":status", status), ("content-type", b"text/html")],
                        false,
                    );
                    out.extend(data(s, b"<html>nope</html>", true));
                    out
                },
                |_| {},
            ),
            *want,
            None,
        ));
    }
    check_all(cases);
}

/// operateHeaders: a 1xx is skipped (a later HEADERS is the response);
/// a 1xx with END_STREAM is INTERNAL; a HEADERS in the middle of a stream
/// (no END_STREAM, after the response headers) is INTERNAL; grpc-status
/// parsing (strconv.ParseInt base 10, 32-bit: a sign and leading zeros
/// pass, anything else is UNKNOWN); compression flags (checkRecvPayload:
/// INTERNAL without an encoding or with one this client lacks; an
/// uncompressed message with any grpc-encoding is fine).
#[test]
fn header_and_payload_checks_match_go() {
    let ok_tail = |status: &'static [u8]| {
        move |s: u32| response(s, &[S200, CT], &msg(b"ok"), &[("grpc-status", status)])
    };
    let cases = vec![
        (
            "100 then the response".to_string(),
            against(
                |s| {
                    let mut out = headers(s, &[(":status", b"100")], false);
                    out.extend(response(
                        s,
                        &[S200, CT],
                        &msg(b"ok"),
                        &[("grpc-status", b"0")],
                    ));
                    out
                },
                |_| {},
            ),
            Code::Ok,
            Some("ok"),
        ),
        (
            "100 with END_STREAM".to_string(),
            against(|s| headers(s, &[(":status", b"100")], true), |_| {}),
            Code::Internal,
            None,
        ),
        (
            "HEADERS in the middle of the stream".to_string(),
            against(
                |s| {
                    let mut out = headers(s, &[S200, CT], false);
                    out.extend(data(s, &msg(b"ok"), false));
                    out.extend(headers(s, &[("x-more", b"1")], false));
                    out.extend(headers(s, &[("grpc-status", b"0")], true));
                    out
                },
                |_| {},
            ),
            Code::Internal,
            None,
        ),
        (
            "grpc-status +5".to_string(),
            against(ok_tail(b"+5"), |_| {}),
            Code::NotFound,
            None,
        ),
        (
            "grpc-status 005".to_string(),
            against(ok_tail(b"005"), |_| {}),
            Code::NotFound,
            None,
        ),
        (
            "grpc-status xxxx".to_string(),
            against(ok_tail(b"xxxx"), |_| {}),
            Code::Unknown,
            None,
        ),
        (
            "grpc-status 5.0".to_string(),
            against(ok_tail(b"5.0"), |_| {}),
            Code::Unknown,
            None,
        ),
        (
            "grpc-status 4294967301".to_string(),
            against(ok_tail(b"4294967301"), |_| {}),
            Code::Unknown,
            None,
        ),
        (
            "compressed flag, no grpc-encoding".to_string(),
            against(
                |s| {
                    response(
                        s,
                        &[S200, CT],
                        &msg_with_flag(1, b"ok"),
                        &[("grpc-status", b"0")],
                    )
                },
                |_| {},
            ),
            Code::Internal,
            None,
        ),
        (
            "compressed flag, grpc-encoding identity".to_string(),
            against(
                |s| {
                    response(
                        s,
                        &[S200, CT, ("grpc-encoding", b"identity")],
                        &msg_with_flag(1, b"ok"),
                        &[("grpc-status", b"0")],
                    )
                },
                |_| {},
            ),
            Code::Internal,
            None,
        ),
        (
            "compressed flag, grpc-encoding snappy".to_string(),
            against(
                |s| {
                    response(
                        s,
                        &[S200, CT, ("grpc-encoding", b"snappy")],
                        &msg_with_flag(1, b"ok"),
                        &[("grpc-status", b"0")],
                    )
                },
                |_| {},
            ),
            Code::Internal,
            None,
        ),
        (
            "no compressed flag, grpc-encoding snappy".to_string(),
            against(
                |s| {
                    response(
                        s,
                        &[S200, CT, ("grpc-encoding", b"snappy")],
                        &msg(b"ok"),
                        &[("grpc-status", b"0")],
                    )
                },
                |_| {},
            ),
            Code::Ok,
            Some("ok"),
        ),
        (
            "payload format 2".to_string(),
            against(
                |s| {
                    response(
                        s,
                        &[S200, CT],
                        &msg_with_flag(2, b"ok"),
                        &[("grpc-status", b"0")],
                    )
                },
                |_| {},
            ),
            Code::Internal,
            None,
        ),
        (
            "gRPC content-type, 504, trailers grpc-status 0".to_string(),
            against(
                |s| {
                    response(
                        s,
                        &[(":status", b"504"), CT],
                        &msg(b"ok"),
                        &[("grpc-status", b"0")],
                    )
                },
                |_| {},
            ),
            Code::Ok,
            Some("ok"),
        ),
        (
            "trailers-only gRPC content-type, 200, no grpc-status".to_string(),
            against(|s| headers(s, &[S200, CT], true), |_| {}),
            Code::Unknown,
            None,
        ),
        (
            "trailers-only grpc-status 0 for a unary call".to_string(),
            against(
                |s| headers(s, &[S200, CT, ("grpc-status", b"0")], true),
                |_| {},
            ),
            Code::Internal,
            None,
        ),
    ];
    check_all(cases);
}

/// maxRequestMessageBytes (service config): a request over it fails
/// RESOURCE_EXHAUSTED without being sent ("trying to send message larger
/// than max", stream.go prepareMsg / SendMsg); one exactly at it goes.
#[test]
fn max_request_message_bytes_is_checked_before_sending() {
    let rt = Runtime::new().unwrap();
    let server = Server::start(1, |streams| {
        streams
            .iter()
            .flat_map(|s| response(*s, &[S200, CT], &msg(b"ok"), &[("grpc-status", b"0")]))
            .collect()
    });
    let config =
        r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],"maxRequestMessageBytes":10}]}"#;
    let ch = channel_with(&rt, &server, Some(config), |_| {});
    assert_eq!(outcome(&call(&ch, &[1u8; 10])).0, Code::Ok);
    let before = server.requests();
    let over = outcome(&call(&ch, &[1u8; 11]));
    assert_eq!(over.0, Code::ResourceExhausted, "{over:?}");
    assert_eq!(server.requests(), before, "the oversized request was sent");
    ch.close();
}

// ---------------------------------------------------------------------------
// grpc-timeout on the wire.

#[path = "common/hpack.rs"]
mod hpack;
use hpack::literal_fields;

/// grpc-timeout as gRPC-Go writes it (internal/grpcutil/encode_duration.go
/// EncodeDuration): at most 8 digits, the finest unit of n, u, m, S, M, H
/// whose rounded-up count fits, never below the time left. Checked on the
/// wire for deadlines from 1 ms to 100 years (the exact digits depend on
/// when the header was written, so the rule is checked, not a string).
#[test]
fn grpc_timeout_is_encoded_as_go_encodes_it() {
    let rt = Runtime::new().unwrap();
    let server = Server::start(1, |streams| {
        streams
            .iter()
            .flat_map(|s| response(*s, &[S200, CT], &msg(b"ok"), &[("grpc-status", b"0")]))
            .collect()
    });
    let ch = channel(&rt, &server, |_| {});
    const UNITS: [(char, u128); 6] = [
        ('n', 1),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
        ('H', 3_600_000_000_000),
    ];
    let mut bad = Vec::new();
    for asked in [
        Duration::from_millis(1500),
        Duration::from_secs(5),
        Duration::from_secs(150),
        Duration::from_secs(3 * 86_400),
        Duration::from_secs(5 * 365 * 86_400),
        Duration::from_secs(100 * 365 * 86_400),
    ] {
        let before = server.blocks.lock().unwrap().len();
        let start = Instant::now();
        let mut r = ch.reader();
        let res = r.unary(
            "/echo.Echo/Unary",
            b"hi",
            &CallOptions {
                deadline: Some(start + asked),
                wait_for_ready: Some(true),
                ..Default::default()
            },
        );
        assert!(res.is_ok(), "{res:?}");
        let blocks = server.blocks.lock().unwrap();
        let block = blocks.get(before).expect("a request header block");
        let fields = literal_fields(block);
        let Some((_, t)) = fields.iter().find(|(k, _)| k == "grpc-timeout") else {
            bad.push(format!("{asked:?}: no grpc-timeout in {fields:?}"));
            continue;
        };
        eprintln!("{asked:?} -> grpc-timeout {t}");
        let (digits, unit) = t.split_at(t.len() - 1);
        let unit = unit.chars().next().unwrap();
        let Some(pos) = UNITS.iter().position(|(u, _)| *u == unit) else {
            bad.push(format!("{asked:?}: {t:?} has no gRPC unit"));
            continue;
        };
        let n: u128 = digits.parse().unwrap_or(u128::MAX);
        let nanos = n.saturating_mul(UNITS[pos].1);
        let ok_len = !digits.is_empty() && digits.len() <= 8;
        // Rounded up from what was left: no more than asked plus one unit,
        // no less than asked minus the time the call took.
        let asked_n = asked.as_nanos();
        let elapsed = start.elapsed().as_nanos() + 1_000_000;
        let in_range = nanos <= asked_n + UNITS[pos].1 && nanos + elapsed >= asked_n;
        // The finest unit that fits: one step finer would need 9 digits.
        let finest = pos == 0
            || nanos.div_ceil(UNITS[pos - 1].1) > 99_999_999
            || (nanos - UNITS[pos].1).div_ceil(UNITS[pos - 1].1) > 99_999_999;
        if !(ok_len && in_range && finest) {
            bad.push(format!("{asked:?}: sent {t:?}"));
        }
    }
    ch.close();
    assert!(
        bad.is_empty(),
        "grpc-timeout not as gRPC-Go encodes it:\n{}",
        bad.join("\n")
    );
}
