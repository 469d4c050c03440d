//! gRPC-Go's retry end-to-end tests (test/retry_test.go) and the
//! rules of stream.go's `shouldRetry` / `retryThrottler` (gRFC A6), ported
//! case by case onto switchyard's managed unary calls, against a scripted
//! HTTP/2 server on 127.0.0.1 (tokio + h2, as the testserver crate) whose
//! every answer a test chooses by the request's index, as gRPC-Go's stub
//! servers do with their `i` counter.
//!
//! Every expectation is what gRPC-Go's client does for the same answers;
//! each test cites the Go code it follows.

#[path = "common/tokio_host.rs"]
mod tokio_host;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::*;
use tokio_host::Host;

const ECHO: &str = "/echo.Echo/Unary";

// ---------------------------------------------------------------------------
// The scripted server.

/// How the server answers one request.
#[derive(Clone, Debug)]
enum Reply {
    /// Response headers, one message ("pong"), trailers grpc-status 0.
    Ok,
    /// Trailers-only: one HEADERS frame ending the stream, :status 200,
    /// content-type application/grpc, grpc-status `code` (none: `None`),
    /// and `extra` fields (appended: a key may repeat).
    TrailersOnly(Option<u32>, Vec<(&'static str, String)>),
    /// Response headers (committing the call), then trailers with
    /// grpc-status `code` and `extra`.
    Committed(u32, Vec<(&'static str, String)>),
    /// RST_STREAM with this reason, before any response headers.
    Reset(h2::Reason),
    /// A non-gRPC answer: HEADERS ending the stream with this :status, no
    /// content-type, and `extra` fields.
    Http(u16, Vec<(&'static str, String)>),
    /// The server drops the connection (no GOAWAY) once it has read the
    /// request's headers.
    HangUp,
}

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    previous: Option<String>,
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

struct Server {
    host: Host,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Answers the `i`-th request (0-based, over all connections) with
    /// `script(i)`.
    fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Server {
        let script: Script = Arc::new(script);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let seen2 = seen.clone();
        let host = Host::start(move |sock| {
            let (script, seen, count) = (script.clone(), seen2.clone(), count.clone());
            async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    let i = count.fetch_add(1, Ordering::SeqCst);
                    let previous = req
                        .headers()
                        .get("grpc-previous-rpc-attempts")
                        .map(|v| v.to_str().unwrap_or("?").to_string());
                    seen.lock().unwrap().push(Seen {
                        at: Instant::now(),
                        previous,
                    });
                    let reply = script(i);
                    if let Reply::HangUp = reply {
                        return;
                    }
                    tokio::spawn(answer(req, respond, reply));
                }
            }
        });
        Server { host, seen }
    }

    fn target(&self) -> String {
        self.host.target()
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    Bytes::from(v)
}

fn add(h: &mut HeaderMap, extra: &[(&'static str, String)]) {
    for (k, v) in extra {
        h.append(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).unwrap(),
        );
    }
}

async fn answer(
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    reply: Reply,
) {
    if let Reply::Reset(reason) = reply {
        respond.send_reset(reason);
        return;
    }
    // Read the whole request first, as a gRPC server does.
    let mut body = req.into_body();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let grpc = || {
        let mut r = Response::new(());
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        r
    };
    match reply {
        Reply::Ok => {
            let Ok(mut s) = respond.send_response(grpc(), false) else {
                return;
            };
            let _ = s.send_data(grpc_frame(b"pong"), false);
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static("0"));
            let _ = s.send_trailers(t);
        }
        Reply::TrailersOnly(code, extra) => {
            let mut r = grpc();
            if let Some(c) = code {
                r.headers_mut().insert("grpc-status", c.into());
                r.headers_mut()
                    .insert("grpc-message", HeaderValue::from_static("scripted"));
            }
            add(r.headers_mut(), &extra);
            let _ = respond.send_response(r, true);
        }
        Reply::Committed(code, extra) => {
            let Ok(mut s) = respond.send_response(grpc(), false) else {
                return;
            };
            let mut t = HeaderMap::new();
            t.insert("grpc-status", code.into());
            t.insert("grpc-message", HeaderValue::from_static("scripted"));
            add(&mut t, &extra);
            let _ = s.send_trailers(t);
        }
        Reply::Http(status, extra) => {
            let mut r = Response::new(());
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            add(r.headers_mut(), &extra);
            let _ = respond.send_response(r, true);
        }
        Reply::Reset(_) | Reply::HangUp => unreachable!(),
    }
}

// ---------------------------------------------------------------------------
// Helpers.

fn retry_config(attempts: u32, codes: &str, more: &str) -> String {
    format!(
        r#"{{"methodConfig":[{{"name":[{{"service":"echo.Echo"}}],"waitForReady":true,"retryPolicy":{{"maxAttempts":{attempts},"initialBackoff":".01s","maxBackoff":".01s","backoffMultiplier":1.0,"retryableStatusCodes":[{codes}]}}}}]{more}}}"#
    )
}

const THROTTLING: &str = r#","retryThrottling":{"maxTokens":10,"tokenRatio":0.5}"#;

fn channel(rt: &Runtime, server: &Server, config: &str) -> Channel {
    let opts = ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    };
    let ch = Channel::new(rt, &server.target(), Some(config), opts).unwrap();
    ch.connect().unwrap();
    ch
}

/// One echo call, blocking (`started` false) or started on the loop.
fn call(ch: &Channel, started: bool) -> Result<UnaryResponse, Status> {
    let options = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        ..Default::default()
    };
    if !started {
        return ch.reader().unary(ECHO, b"ping", &options);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    ch.unary_start(ECHO, b"ping", &options, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the started call completes")
}

fn code_of(r: &Result<UnaryResponse, Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

fn pushback(v: &str) -> (&'static str, String) {
    ("grpc-retry-pushback-ms", v.to_string())
}

// ---------------------------------------------------------------------------
// TestRetryUnary (test/retry_test.go): maxAttempts 4, ALREADY_EXISTS
// retryable; the server's i-th call answers OK at 0, 2, 5, INTERNAL at 6,
// 8, 11, ALREADY_EXISTS otherwise. After each call, the last i.

fn retry_unary_table(started: bool) {
    let server = Server::start(|i| match i {
        0 | 2 | 5 => Reply::Ok,
        6 | 8 | 11 => Reply::TrailersOnly(Some(13), vec![]),
        _ => Reply::TrailersOnly(Some(6), vec![]),
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server, &retry_config(4, r#""ALREADY_EXISTS""#, ""));
    let cases = [
        (Code::Ok, 0),
        (Code::Ok, 2),
        (Code::Ok, 5),
        (Code::Internal, 6),
        (Code::Internal, 8),
        (Code::Internal, 11),
        (Code::AlreadyExists, 15),
    ];
    for (n, (code, last)) in cases.into_iter().enumerate() {
        let r = call(&ch, started);
        assert_eq!(code_of(&r), code, "case {n}: {r:?}");
        assert_eq!(server.requests(), last + 1, "case {n}: i = {last}");
    }
}

#[test]
fn go_retry_unary_table_blocking() {
    retry_unary_table(false);
}

#[test]
fn go_retry_unary_table_started() {
    retry_unary_table(true);
}

// TestRetryThrottling (test/retry_test.go): maxAttempts 4, UNAVAILABLE
// retryable, maxTokens 10, tokenRatio 0.5; the server answers OK at i = 0,
// 3, 6, 10..14, 16, 18, UNAVAILABLE otherwise.

fn retry_throttling_table(started: bool) {
    let server = Server::start(|i| match i {
        0 | 3 | 6 | 10 | 11 | 12 | 13 | 14 | 16 | 18 => Reply::Ok,
        _ => Reply::TrailersOnly(Some(14), vec![]),
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server,
        &retry_config(4, r#""UNAVAILABLE""#, THROTTLING),
    );
    let cases = [
        (Code::Ok, 0),           // tokens = 10
        (Code::Ok, 3),           // tokens = 8.5
        (Code::Ok, 6),           // tokens = 6
        (Code::Unavailable, 8),  // tokens = 5: first attempt retried, second not
        (Code::Unavailable, 9),  // tokens = 4
        (Code::Ok, 10),          // 4.5
        (Code::Ok, 11),          // 5
        (Code::Ok, 12),          // 5.5
        (Code::Ok, 13),          // 6
        (Code::Ok, 14),          // 6.5
        (Code::Ok, 16),          // 5.5
        (Code::Unavailable, 17), // 4.5
    ];
    for (n, (code, last)) in cases.into_iter().enumerate() {
        let r = call(&ch, started);
        assert_eq!(code_of(&r), code, "case {n}: {r:?}");
        assert_eq!(server.requests(), last + 1, "case {n}: i = {last}");
    }
}

#[test]
fn go_retry_throttling_table_blocking() {
    retry_throttling_table(false);
}

#[test]
fn go_retry_throttling_table_started() {
    retry_throttling_table(true);
}

// TestRetryStats (test/retry_test.go): the first stream is refused
// (REFUSED_STREAM: a transparent retry), the second fails UNAVAILABLE with
// a 10 ms pushback (a retry by the policy, after 10 ms), the third is OK.
// Only the third attempt carries grpc-previous-rpc-attempts, "1"
// (stream.go: `callHdr.PreviousAttempts = cs.numRetries`, "exclusive of
// transparent retry attempt(s)").
#[test]
fn go_retry_stats_refused_then_pushback_then_ok() {
    for started in [false, true] {
        let server = Server::start(|i| match i % 3 {
            0 => Reply::Reset(h2::Reason::REFUSED_STREAM),
            1 => Reply::TrailersOnly(Some(14), vec![pushback("10")]),
            _ => Reply::Ok,
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server, &retry_config(4, r#""UNAVAILABLE""#, ""));
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Ok, "started {started}: {r:?}");
        let seen = server.seen();
        assert_eq!(seen.len(), 3, "started {started}: {seen:?}");
        let previous: Vec<Option<&str>> = seen.iter().map(|s| s.previous.as_deref()).collect();
        assert_eq!(previous, [None, None, Some("1")], "started {started}");
        let gap = seen[2].at - seen[1].at;
        assert!(
            gap >= Duration::from_millis(10) && gap < Duration::from_millis(500),
            "pushback before the final attempt: {gap:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Token arithmetic (stream.go `shouldRetry`, clientconn.go `retryThrottler`),
// observed through how many attempts a failing call makes afterwards.

/// A server whose every answer is the one in `now` (set by the test).
fn steered() -> (Server, Arc<Mutex<Reply>>) {
    let now = Arc::new(Mutex::new(Reply::Ok));
    let n = now.clone();
    (Server::start(move |_| n.lock().unwrap().clone()), now)
}

/// Two methods under one throttle (maxTokens 10, ratio 0.5): `/echo.Echo/Five`
/// retries UNAVAILABLE up to 5 attempts, `/echo.Echo/Two` up to 2; every
/// other method has no policy. `codes` are Five's and Two's retryable codes.
fn token_config(codes: &str) -> String {
    let policy = |n: u32| {
        format!(
            r#"{{"maxAttempts":{n},"initialBackoff":".01s","maxBackoff":".01s","backoffMultiplier":1.0,"retryableStatusCodes":[{codes}]}}"#
        )
    };
    format!(
        r#"{{"methodConfig":[{{"name":[{{"service":"echo.Echo","method":"Five"}}],"retryPolicy":{}}},{{"name":[{{"service":"echo.Echo","method":"Two"}}],"retryPolicy":{}}}],"retryThrottling":{{"maxTokens":10,"tokenRatio":0.5}}}}"#,
        policy(5),
        policy(2)
    )
}

fn call_method(ch: &Channel, method: &str) -> Result<UnaryResponse, Status> {
    let options = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        wait_for_ready: Some(true),
        ..Default::default()
    };
    ch.reader().unary(method, b"ping", &options)
}

/// Attempts one always-UNAVAILABLE call to Five makes: with `t` tokens
/// left (maxTokens 10, threshold 5), each failure takes one and a retry
/// goes while more than 5 remain, so 10 -> 5 attempts (capped), 9 -> 4,
/// 8 -> 3, 7 -> 2, 6 or less -> 1.
fn attempts_now(server: &Server, now: &Mutex<Reply>, ch: &Channel) -> usize {
    *now.lock().unwrap() = Reply::TrailersOnly(Some(14), vec![]);
    let before = server.requests();
    let r = call_method(ch, "/echo.Echo/Five");
    assert_eq!(code_of(&r), Code::Unavailable, "{r:?}");
    server.requests() - before
}

/// gRPC-Go reads the pushback before the policy's codes: a pushback saying
/// stop (negative, not a number, or several values) is "a failure for
/// throttling" whatever the code, and even on a method with no retry
/// policy at all (stream.go `shouldRetry`: `cs.retryThrottler.throttle()
/// // This counts as a failure for throttling.`, before `rp == nil ||
/// !rp.RetryableStatusCodes[code]`). A valid pushback with a code the
/// policy does not name costs nothing.
#[test]
fn a_stop_pushback_costs_a_token_whatever_the_code_and_policy() {
    let cases: [(&str, &str, Reply, usize); 6] = [
        // Retryable code, several pushback values: no retry, one token.
        (
            "several values",
            "/echo.Echo/Five",
            Reply::TrailersOnly(Some(14), vec![pushback("10"), pushback("20")]),
            1,
        ),
        // INTERNAL is not retryable; the pushback still says stop.
        (
            "negative, INTERNAL",
            "/echo.Echo/Five",
            Reply::TrailersOnly(Some(13), vec![pushback("-1")]),
            1,
        ),
        (
            "not a number, INTERNAL",
            "/echo.Echo/Five",
            Reply::TrailersOnly(Some(13), vec![pushback("soon")]),
            1,
        ),
        // A method with no retry policy on a throttled channel.
        (
            "negative, no policy",
            "/other.Svc/M",
            Reply::TrailersOnly(Some(14), vec![pushback("-5")]),
            1,
        ),
        // A valid pushback with a code not retryable: nothing.
        (
            "valid, INTERNAL",
            "/echo.Echo/Five",
            Reply::TrailersOnly(Some(13), vec![pushback("10")]),
            0,
        ),
        // Committed (response headers came): nothing, whatever the pushback.
        (
            "committed, negative",
            "/echo.Echo/Five",
            Reply::Committed(14, vec![pushback("-1")]),
            0,
        ),
    ];
    for (what, method, reply, cost) in cases {
        let (server, now) = steered();
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server, &token_config(r#""UNAVAILABLE""#));
        *now.lock().unwrap() = reply;
        // Three such calls, one attempt each.
        for _ in 0..3 {
            let r = call_method(&ch, method);
            assert!(r.is_err(), "{what}: {r:?}");
        }
        assert_eq!(server.requests(), 3, "{what}: one attempt per call");
        let expected = match 10 - 3 * cost {
            10 => 5,
            t => t.saturating_sub(5).max(1),
        };
        assert_eq!(
            attempts_now(&server, &now, &ch),
            expected,
            "{what}: tokens left {}",
            10 - 3 * cost
        );
    }
}

/// The failure that exhausts maxAttempts still costs its token: gRPC-Go
/// throttles before it checks `cs.numRetries+1 >= rp.MaxAttempts`. Two
/// failing calls to Two (2 attempts each) take 10 tokens to 6; Five then
/// makes one attempt. OK calls on a method without a policy earn tokens
/// back (`cs.finish`: `if err == nil { cs.retryThrottler.successfulRPC() }`,
/// whatever the method).
#[test]
fn exhausted_attempts_cost_tokens_and_any_success_earns_them() {
    let (server, now) = steered();
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server, &token_config(r#""UNAVAILABLE""#));
    *now.lock().unwrap() = Reply::TrailersOnly(Some(14), vec![]);
    for _ in 0..2 {
        call_method(&ch, "/echo.Echo/Two").unwrap_err();
    }
    assert_eq!(server.requests(), 4);
    // 6 left: no retry (6 -> 5).
    assert_eq!(attempts_now(&server, &now, &ch), 1);
    // 5 left; eight successes of a method without a policy: 9.
    *now.lock().unwrap() = Reply::Ok;
    for _ in 0..8 {
        call_method(&ch, "/other.Svc/M").unwrap();
    }
    assert_eq!(attempts_now(&server, &now, &ch), 4);
}

// ---------------------------------------------------------------------------
// What the policy sees as the attempt's code.

/// A trailers-only answer with grpc-status 0 to a unary call: gRPC-Go fails
/// it INTERNAL ("cardinality violation: received no response message"),
/// but `shouldRetry` decides by the stream's status, which is OK
/// (stream.go: `code = a.transportStream.Status().Code()`), so a policy
/// retrying INTERNAL does not retry it, and no token is taken.
#[test]
fn a_trailers_only_ok_without_a_message_is_not_retried_as_internal() {
    for started in [false, true] {
        let server = Server::start(|i| match i {
            0 => Reply::TrailersOnly(Some(0), vec![]),
            _ => Reply::Ok,
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server, &retry_config(4, r#""INTERNAL""#, ""));
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Internal, "started {started}: {r:?}");
        assert_eq!(
            server.requests(),
            1,
            "started {started}: gRPC-Go makes one attempt"
        );
    }
}

/// A grpc-status beyond 16 is kept as it is by gRPC-Go
/// (http2_client.go operateHeaders: `grpcStatusCode = codes.Code(uint32(code))`),
/// so it matches no retryableStatusCodes entry: a policy retrying UNKNOWN
/// does not retry a status-20 answer.
#[test]
fn an_unknown_status_number_is_not_retried_as_unknown() {
    let server = Server::start(|i| match i {
        0 => Reply::TrailersOnly(Some(20), vec![]),
        _ => Reply::Ok,
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server, &retry_config(4, r#""UNKNOWN""#, ""));
    let r = call(&ch, false);
    assert!(r.is_err(), "{r:?}");
    assert_eq!(server.requests(), 1, "gRPC-Go makes one attempt: {r:?}");
}

/// A non-gRPC answer (HTTP 503, no gRPC content-type, ending the stream)
/// carries no trailers for gRPC-Go: operateHeaders closes the stream with
/// `closeStream(s, se.Err(), true, http2.ErrCodeProtocol, se, nil, true)`
/// (nil metadata), so a grpc-retry-pushback-ms header in it is never read.
/// Its UNAVAILABLE (503) is retried by the policy, neither stopped nor
/// delayed by the "pushback".
fn non_grpc_answer_with_pushback(value: &'static str) {
    let server = Server::start(move |i| match i {
        0 => Reply::Http(503, vec![pushback(value)]),
        _ => Reply::Ok,
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server, &retry_config(4, r#""UNAVAILABLE""#, ""));
    let t = Instant::now();
    let r = call(&ch, false);
    assert_eq!(code_of(&r), Code::Ok, "503 with pushback {value}: {r:?}");
    assert_eq!(server.requests(), 2);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "503 with pushback {value}: the policy's 10 ms backoff, not the pushback: {:?}",
        t.elapsed()
    );
}

#[test]
fn a_stop_pushback_in_a_non_grpc_answer_is_ignored() {
    non_grpc_answer_with_pushback("-1");
}

#[test]
fn a_delay_pushback_in_a_non_grpc_answer_is_ignored() {
    non_grpc_answer_with_pushback("3000");
}

// ---------------------------------------------------------------------------
// Commit rules and transparent retries.

/// RST_STREAM before any response headers leaves the call uncommitted
/// (closeStream sets `noHeaders`, so `TrailersOnly()` is true): its code
/// (INTERNAL_ERROR -> INTERNAL, http2ErrConvTab) goes by the policy.
#[test]
fn a_reset_before_headers_is_retried_by_the_policy() {
    for started in [false, true] {
        let server = Server::start(|i| match i {
            0 => Reply::Reset(h2::Reason::INTERNAL_ERROR),
            _ => Reply::Ok,
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server, &retry_config(2, r#""INTERNAL""#, ""));
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Ok, "started {started}: {r:?}");
        let previous: Vec<Option<String>> = server.seen().into_iter().map(|s| s.previous).collect();
        assert_eq!(previous, [None, Some("1".to_string())]);
    }
}

/// Only the call's first attempt is retried transparently when refused:
/// `cs.firstAttempt` is cleared by any retry, a transparent one included
/// (retryLocked). A second REFUSED_STREAM goes by the policy (UNAVAILABLE,
/// one retry of maxAttempts 2), and without a policy ends the call.
#[test]
fn a_second_refusal_goes_by_the_policy() {
    // With a policy: refused, refused (policy retry), OK.
    let server = Server::start(|i| match i {
        0 | 1 => Reply::Reset(h2::Reason::REFUSED_STREAM),
        _ => Reply::Ok,
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server, &retry_config(2, r#""UNAVAILABLE""#, ""));
    let r = call(&ch, false);
    assert_eq!(code_of(&r), Code::Ok, "{r:?}");
    let previous: Vec<Option<String>> = server.seen().into_iter().map(|s| s.previous).collect();
    assert_eq!(previous, [None, None, Some("1".to_string())]);
    // Without: refused, refused, UNAVAILABLE.
    let server = Server::start(|i| match i {
        0 | 1 => Reply::Reset(h2::Reason::REFUSED_STREAM),
        _ => Reply::Ok,
    });
    let ch = channel(&rt, &server, "{}");
    let r = call(&ch, true);
    assert_eq!(code_of(&r), Code::Unavailable, "{r:?}");
    assert_eq!(server.requests(), 2);
}

/// A connection lost before any response headers: UNAVAILABLE, neither
/// committed nor unprocessed (http2_client.go `Close`: `closeStream(s, err,
/// false, http2.ErrCodeNo, st, nil, false)`, no `unprocessed`), so the
/// policy decides: retried, as attempt 2, with a policy; the call's end
/// without one.
#[test]
fn a_connection_lost_before_headers_goes_by_the_policy() {
    for started in [false, true] {
        let server = Server::start(|i| match i {
            0 => Reply::HangUp,
            _ => Reply::Ok,
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server, &retry_config(2, r#""UNAVAILABLE""#, ""));
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Ok, "started {started}: {r:?}");
        let previous: Vec<Option<String>> = server.seen().into_iter().map(|s| s.previous).collect();
        assert_eq!(previous, [None, Some("1".to_string())], "started {started}");
        let server = Server::start(|i| match i {
            0 => Reply::HangUp,
            _ => Reply::Ok,
        });
        let ch = channel(&rt, &server, "{}");
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Unavailable, "started {started}: {r:?}");
        assert_eq!(server.requests(), 1, "started {started}");
    }
}
