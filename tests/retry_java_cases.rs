//! grpc-java's RetriableStreamTest (core/src/test/java/io/grpc/
//! internal/RetriableStreamTest.java) retry cases and RetriableStream's
//! `makeRetryDecision` / `Sublistener.closed`, ported onto switchyard's
//! managed unary calls against a scripted tokio + h2 server on 127.0.0.1.
//!
//! Only what tests/retry_go_tables.rs, tests/retry_core_cases.rs,
//! tests/hedging_java_cases.rs and tests/managed/retry.rs do not pin:
//! backoff growth and cap over five attempts (with A6's jitter bounds);
//! pushback exact, restarting the growth, above maxBackoff, ignored at
//! maxAttempts; a valid pushback with a non-retryable code / no policy;
//! tokens taken by a retryable code with a valid pushback, not by a
//! non-retryable code nor a transparent retry (which goes at once, even
//! when throttled), but by later refusals; tokenRatio kept to thousandths;
//! pushback values as `Integer.valueOf` reads them; a refusal after a
//! normal retry going by the policy (with backoff and the next attempt
//! number); a reset after response headers committed; the client's own
//! deadline never retried though DEADLINE_EXCEEDED is retryable.
//!
//! grpc-java disagrees with gRPC-Go / C-core (switchyard follows them) on:
//! a valid pushback with a non-retryable code (Java retries after it);
//! a stop pushback on a method without a policy (Java takes no token:
//! `makeRetryDecision` returns before the throttle); several pushback
//! values (Java reads the last one); backoff jitter (Java and Go: [0, b);
//! A6 and C-core: b × U(0.8, 1.2), which switchyard follows).

#[path = "common/tokio_host.rs"]
mod tokio_host;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::*;
use tokio_host::Host;

const METHOD: &str = "/service.Service/Method";

#[derive(Clone, Debug)]
enum Reply {
    Ok,
    /// Trailers-only: grpc-status `code` and `extra` fields.
    Fail(u32, Vec<(&'static str, String)>),
    /// RST_STREAM with this reason, before any response headers.
    Reset(h2::Reason),
    /// Never answers (until the client resets the stream).
    Silent,
    /// Response headers (no end of stream), then RST_STREAM with this reason.
    HeadersThenReset(h2::Reason),
}

#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    previous: Option<String>,
}

struct Server {
    host: Host,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Server {
        let script: Arc<dyn Fn(usize) -> Reply + Send + Sync> = Arc::new(script);
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
                    let previous = req
                        .headers()
                        .get("grpc-previous-rpc-attempts")
                        .map(|v| v.to_str().unwrap_or("?").to_string());
                    let i = {
                        let mut s = seen.lock().unwrap();
                        s.push(Seen {
                            at: Instant::now(),
                            previous,
                        });
                        count.fetch_add(1, Ordering::SeqCst)
                    };
                    let reply = script(i);
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

    fn previous(&self) -> Vec<Option<String>> {
        self.seen().into_iter().map(|s| s.previous).collect()
    }

    /// Gaps between consecutive requests.
    fn gaps(&self) -> Vec<Duration> {
        let s = self.seen();
        s.windows(2).map(|w| w[1].at - w[0].at).collect()
    }
}

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    Bytes::from(v)
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
    let mut body = req.into_body();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if let Reply::Silent = reply {
        let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
        return;
    }
    let mut r = Response::new(());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    match reply {
        Reply::Ok => {
            let Ok(mut s) = respond.send_response(r, false) else {
                return;
            };
            let _ = s.send_data(grpc_frame(b"pong"), false);
            let mut t = HeaderMap::new();
            t.insert("grpc-status", 0.into());
            let _ = s.send_trailers(t);
        }
        Reply::Fail(code, extra) => {
            r.headers_mut().insert("grpc-status", code.into());
            for (k, v) in extra {
                r.headers_mut().append(
                    HeaderName::from_static(k),
                    HeaderValue::from_str(&v).unwrap(),
                );
            }
            let _ = respond.send_response(r, true);
        }
        Reply::HeadersThenReset(reason) => {
            let Ok(mut s) = respond.send_response(r, false) else {
                return;
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.send_reset(reason);
        }
        Reply::Reset(_) | Reply::Silent => unreachable!(),
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// A policy on `/service.Service/Method`; `more` adds top-level fields.
fn config(attempts: u32, initial: &str, max: &str, mult: f64, codes: &str, more: &str) -> String {
    format!(
        r#"{{"methodConfig":[{{"name":[{{"service":"service.Service","method":"Method"}}],"retryPolicy":{{"maxAttempts":{attempts},"initialBackoff":"{initial}","maxBackoff":"{max}","backoffMultiplier":{mult},"retryableStatusCodes":[{codes}]}}}}]{more}}}"#
    )
}

fn channel(rt: &Runtime, server: &Server, config: &str) -> Channel {
    let opts = ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    };
    let ch = Channel::new(rt, &server.target(), Some(config), opts).unwrap();
    ch.connect().unwrap();
    ch
}

fn call(ch: &Channel, started: bool) -> Result<UnaryResponse, Status> {
    let deadline = Duration::from_secs(10);
    let options = CallOptions {
        deadline: Some(Instant::now() + deadline),
        wait_for_ready: Some(true),
        ..Default::default()
    };
    if !started {
        return ch.reader().unary(METHOD, b"foo", &options);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    ch.unary_start(METHOD, b"foo", &options, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    rx.recv_timeout(deadline + Duration::from_secs(5))
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

const UNAVAILABLE: u32 = 14;
const DATA_LOSS: u32 = 15;
const INTERNAL: u32 = 13;
const ABORTED: u32 = 10;
const RETRIABLE: &str = r#""UNAVAILABLE","DATA_LOSS""#;

fn numbered(n: usize) -> Vec<Option<String>> {
    (0..n).map(|i| (i > 0).then(|| i.to_string())).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Slack for scheduling on a loaded machine (upper bounds only).
const SLACK_MS: f64 = 400.0;

// ---------------------------------------------------------------------------
// expBackoff_maxBackoff_maxRetryAttempts: maxAttempts 6 (capped at 5 here
// by A6), UNAVAILABLE / DATA_LOSS alternating; backoff initial × 2^n up to
// maxBackoff. grpc-java jitters as `random × backoff` (intervalWithJitter,
// [0, b)), gRPC-Go likewise (stream.go `rand.Int63n(cur)`); A6 (and C-core,
// BackOff jitter 0.2) say `× random(0.8, 1.2)`: only A6's bounds are
// asserted from below (0.75 b), loosely from above.

#[test]
fn java_exp_backoff_grows_to_max_backoff_then_stops_at_max_attempts() {
    for started in [false, true] {
        let server = Server::start(|i| {
            Reply::Fail(if i % 2 == 0 { UNAVAILABLE } else { DATA_LOSS }, vec![])
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server, &config(6, "0.1s", "0.3s", 2.0, RETRIABLE, ""));
        let r = call(&ch, started);
        // Five attempts (A6 caps maxAttempts at 5); the last one's status.
        assert_eq!(code_of(&r), Code::Unavailable, "started {started}: {r:?}");
        assert_eq!(server.previous(), numbered(5), "started {started}");
        let gaps = server.gaps();
        for (k, (gap, base)) in gaps.iter().zip([100.0, 200.0, 300.0, 300.0]).enumerate() {
            let g = ms(*gap);
            assert!(
                g >= 0.75 * base && g <= 1.2 * base + SLACK_MS,
                "started {started}: retry {k}: {g:.0} ms vs base {base} ms ({gaps:?})"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// pushback: a valid pushback is the exact delay (123 ms, then 4567 s >
// maxBackoff); the retries after it grow from initialBackoff again
// (`nextBackoffIntervalNanos = retryPolicy.initialBackoffNanos`; A6: "the
// delay period will be reset to the initialBackoff"); at maxAttempts a
// positive pushback does not retry.

#[test]
fn java_pushback_is_the_delay_and_restarts_the_growth() {
    let server = Server::start(|i| match i {
        0 => Reply::Fail(UNAVAILABLE, vec![pushback("300")]),
        1 => Reply::Fail(DATA_LOSS, vec![pushback("0")]),
        2 => Reply::Fail(UNAVAILABLE, vec![]),
        3 => Reply::Fail(DATA_LOSS, vec![]),
        _ => Reply::Fail(UNAVAILABLE, vec![pushback("4000")]),
    });
    let rt = Runtime::new().unwrap();
    // initial 50 ms, ×20, max 100 s: without the restart the third retry
    // would wait 20 s and the fourth 400 s... (1 s / 20 s with it).
    let ch = channel(
        &rt,
        &server,
        &config(5, "0.05s", "100s", 20.0, RETRIABLE, ""),
    );
    let t = Instant::now();
    let r = call(&ch, false);
    let took = t.elapsed();
    assert_eq!(code_of(&r), Code::Unavailable, "{r:?}");
    assert_eq!(server.previous(), numbered(5));
    let g: Vec<f64> = server.gaps().into_iter().map(ms).collect();
    assert!(
        g[0] >= 300.0 && g[0] <= 300.0 + SLACK_MS,
        "pushback 300: {g:?}"
    );
    assert!(g[1] <= SLACK_MS, "pushback 0: {g:?}");
    assert!(
        g[2] >= 40.0 && g[2] <= 60.0 + SLACK_MS,
        "initial again: {g:?}"
    );
    assert!(
        g[3] >= 800.0 && g[3] <= 1200.0 + SLACK_MS,
        "×20 once: {g:?}"
    );
    // The fifth attempt's pushback (4 s) does not retry: the call ends at once.
    assert!(took < Duration::from_millis(3500), "{took:?}");
}

#[test]
fn java_pushback_longer_than_max_backoff_is_honoured() {
    let server = Server::start(|i| match i {
        0 => Reply::Fail(DATA_LOSS, vec![pushback("1200")]),
        _ => Reply::Ok,
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server,
        &config(3, "0.01s", "0.01s", 1.0, RETRIABLE, ""),
    );
    let r = call(&ch, true);
    assert_eq!(code_of(&r), Code::Ok, "{r:?}");
    let g = ms(server.gaps()[0]);
    assert!((1200.0..=1200.0 + SLACK_MS).contains(&g), "{g:.0} ms");
}

// ---------------------------------------------------------------------------
// throttledStream_FailWithNonRetriableStatusCode_WithRetriablePushback:
// grpc-java RETRIES a non-retryable code when the server sends a valid
// pushback (makeRetryDecision: `else if (pushbackMillis >= 0) shouldRetry =
// true`, whatever `isRetryableStatusCode`; the test asserts no postCommit
// and a pending retry task). gRPC-Go does not (stream.go shouldRetry:
// `!rp.RetryableStatusCodes[code]` returns first), nor does C-core
// (retry_filter ShouldRetry checks the code before the pushback). A6:
// "When a client receives an explicit pushback ..., and it is appropriate
// to retry the RPC". switchyard follows gRPC-Go / C-core (src/call/
// course.rs `retry_after`); this pins that side. pushback_noRetry's
// neighbour: no retry policy, a valid pushback: no retry (all agree).

#[test]
fn a_valid_pushback_does_not_retry_a_non_retryable_code_as_in_go_not_java() {
    for started in [false, true] {
        let server = Server::start(|i| match i {
            0 => Reply::Fail(INTERNAL, vec![pushback("10")]),
            _ => Reply::Ok,
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(
            &rt,
            &server,
            &config(3, "0.01s", "0.01s", 1.0, RETRIABLE, ""),
        );
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Internal, "started {started}: {r:?}");
        assert_eq!(server.requests(), 1);
        // No policy at all: a valid pushback does not retry either.
        let server = Server::start(|i| match i {
            0 => Reply::Fail(UNAVAILABLE, vec![pushback("10")]),
            _ => Reply::Ok,
        });
        let ch = channel(&rt, &server, "{}");
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Unavailable, "started {started}: {r:?}");
        assert_eq!(server.requests(), 1);
    }
}

// ---------------------------------------------------------------------------
// Throttle token accounting (throttledStream_*): maxTokens 6, tokenRatio 1,
// threshold 3. A failure with a retryable code takes a token, with or
// without a valid pushback (FailWithRetriableStatusCode_WithRetriablePushback:
// count 3 -> 2, throttled, no retry); a non-retryable code without pushback
// takes none (FailWithNonRetriableStatusCode_WithoutPushback); a transparent
// retry of a refused stream takes none (the REFUSED path of
// `Sublistener.closed` never reaches makeRetryDecision; gRPC-Go returns
// before `throttle()` too).

const THROTTLE: &str = r#","retryThrottling":{"maxTokens":6,"tokenRatio":1}"#;

#[test]
fn java_a_retryable_code_with_a_valid_pushback_takes_a_token() {
    // 6 -> 5 retry, -> 4 retry, -> 3 throttled: three attempts, not five.
    let server = Server::start(|_| Reply::Fail(UNAVAILABLE, vec![pushback("10")]));
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server,
        &config(5, "0.01s", "0.01s", 1.0, RETRIABLE, THROTTLE),
    );
    let r = call(&ch, false);
    assert_eq!(code_of(&r), Code::Unavailable, "{r:?}");
    assert_eq!(server.requests(), 3);
}

/// Attempts an always-UNAVAILABLE call makes from request index `from` on:
/// 6 tokens -> 3 attempts, 5 -> 2, 4 or less -> 1.
fn count_attempts(ch: &Channel, server: &Server) -> usize {
    let before = server.requests();
    let r = call(ch, false);
    assert_eq!(code_of(&r), Code::Unavailable, "{r:?}");
    server.requests() - before
}

#[test]
fn java_a_non_retryable_failure_takes_no_token() {
    // Three INTERNAL failures, then UNAVAILABLE for ever.
    let server = Server::start(|i| {
        if i < 3 {
            Reply::Fail(INTERNAL, vec![])
        } else {
            Reply::Fail(UNAVAILABLE, vec![])
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server,
        &config(5, "0.01s", "0.01s", 1.0, RETRIABLE, THROTTLE),
    );
    for _ in 0..3 {
        assert_eq!(code_of(&call(&ch, false)), Code::Internal);
    }
    assert_eq!(server.requests(), 3);
    assert_eq!(count_attempts(&ch, &server), 3, "tokens still 6");
}

#[test]
fn java_a_transparent_retry_of_a_refused_stream_takes_no_token() {
    // Three calls: refused, then INTERNAL (not retryable); then UNAVAILABLE.
    let server = Server::start(|i| match i {
        0 | 2 | 4 => Reply::Reset(h2::Reason::REFUSED_STREAM),
        1 | 3 | 5 => Reply::Fail(INTERNAL, vec![]),
        _ => Reply::Fail(UNAVAILABLE, vec![]),
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server,
        &config(5, "0.01s", "0.01s", 1.0, RETRIABLE, THROTTLE),
    );
    for n in 0..3 {
        let r = call(&ch, false);
        assert_eq!(code_of(&r), Code::Internal, "call {n}: {r:?}");
    }
    assert_eq!(server.requests(), 6);
    // The transparent retry kept the attempt number.
    assert_eq!(server.previous()[..2], [None, None]);
    assert_eq!(count_attempts(&ch, &server), 3, "tokens still 6");
}

// ---------------------------------------------------------------------------
// normalRetry_thenNoTransparentRetry_butNormalRetry / _andNoMoreRetry: once
// a normal retry has happened (`noMoreTransparentRetry.set(true)`), a
// refused stream is no longer retried transparently: the policy decides,
// with its backoff (a pending task) and the next attempt number
// (newSubstream(2)); with a code the policy does not name, the call ends.

#[test]
fn java_after_a_normal_retry_a_refusal_goes_by_the_policy_with_backoff() {
    for started in [false, true] {
        let server = Server::start(|i| match i {
            0 => Reply::Fail(UNAVAILABLE, vec![]),
            1 => Reply::Reset(h2::Reason::REFUSED_STREAM),
            _ => Reply::Ok,
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(
            &rt,
            &server,
            &config(5, "0.3s", "0.3s", 1.0, r#""UNAVAILABLE""#, ""),
        );
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Ok, "started {started}: {r:?}");
        assert_eq!(server.previous(), numbered(3), "started {started}");
        let g = ms(server.gaps()[1]);
        assert!(
            g >= 225.0,
            "started {started}: the refusal waited {g:.0} ms"
        );
    }
}

#[test]
fn java_after_a_normal_retry_a_refusal_with_a_code_not_named_ends_the_call() {
    for started in [false, true] {
        let server = Server::start(|i| match i {
            0 => Reply::Fail(ABORTED, vec![]),
            1 => Reply::Reset(h2::Reason::REFUSED_STREAM),
            _ => Reply::Ok,
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(
            &rt,
            &server,
            &config(5, "0.01s", "0.01s", 1.0, r#""ABORTED""#, ""),
        );
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Unavailable, "started {started}: {r:?}");
        assert_eq!(server.requests(), 2, "started {started}");
    }
}

// ---------------------------------------------------------------------------
// getPushbackMills: `Integer.valueOf(value)`, a NumberFormatException being
// -1 (stop). "+10", "-0" and "007" are numbers (10, 0, 7: retry; gRPC-Go's
// strconv.Atoi agrees); "" (pushback_noRetry's value) and "1.5" are not.

#[test]
fn java_pushback_values_parsed_as_integer_value_of() {
    let cases: [(&str, usize); 5] = [("+10", 2), ("-0", 2), ("007", 2), ("", 1), ("1.5", 1)];
    for (value, attempts) in cases {
        let server = Server::start(move |i| match i {
            0 => Reply::Fail(UNAVAILABLE, vec![pushback(value)]),
            _ => Reply::Ok,
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(
            &rt,
            &server,
            &config(3, "0.01s", "0.01s", 1.0, RETRIABLE, ""),
        );
        let r = call(&ch, false);
        let want = if attempts == 2 {
            Code::Ok
        } else {
            Code::Unavailable
        };
        assert_eq!(code_of(&r), want, "pushback {value:?}: {r:?}");
        assert_eq!(server.requests(), attempts, "pushback {value:?}");
    }
}

// ---------------------------------------------------------------------------
// The call's own deadline commits it (grpc-java: the deadline cancels the
// RetriableStream, `cancel` commits with DEADLINE_EXCEEDED), even with
// DEADLINE_EXCEEDED among the retryable codes; a DEADLINE_EXCEEDED status
// from the server is an ordinary retryable code.

#[test]
fn a_client_deadline_is_not_retried_even_when_deadline_exceeded_is_retryable() {
    for started in [false, true] {
        let server = Server::start(|i| match i {
            0 => Reply::Fail(4, vec![]),
            1 => Reply::Ok,
            _ => Reply::Silent,
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(
            &rt,
            &server,
            &config(5, "0.01s", "0.01s", 1.0, r#""DEADLINE_EXCEEDED""#, ""),
        );
        // The server's DEADLINE_EXCEEDED: retried.
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Ok, "started {started}: {r:?}");
        assert_eq!(server.requests(), 2);
        // The client's deadline: the end.
        let options = CallOptions {
            deadline: Some(Instant::now() + Duration::from_millis(300)),
            wait_for_ready: Some(true),
            ..Default::default()
        };
        let r = if started {
            let (tx, rx) = crossbeam_channel::bounded(1);
            ch.unary_start(METHOD, b"foo", &options, move |r| {
                let _ = tx.send(r);
            })
            .unwrap();
            rx.recv_timeout(Duration::from_secs(5)).unwrap()
        } else {
            ch.reader().unary(METHOD, b"foo", &options)
        };
        assert_eq!(
            code_of(&r),
            Code::DeadlineExceeded,
            "started {started}: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            server.requests(),
            3,
            "started {started}: no attempt after the deadline"
        );
    }
}

// ---------------------------------------------------------------------------
// Throttle(maxTokens, tokenRatio) keeps thousandths (`(int) (tokenRatio *
// THREE_DECIMAL_PLACES_SCALE_UP)`); A6: "Decimal places beyond 3 are
// ignored". maxTokens 4 (threshold 2): a failing call leaves 2 tokens;
// four successes with tokenRatio 0.2505 add 4 × 0.250 = 1 (not 1.002), so
// the next failure leaves exactly 2: no retry.

#[test]
fn java_token_ratio_beyond_three_decimals_is_ignored() {
    let now = Arc::new(Mutex::new(Reply::Fail(UNAVAILABLE, vec![])));
    let n = now.clone();
    let server = Server::start(move |_| n.lock().unwrap().clone());
    let rt = Runtime::new().unwrap();
    let throttle = r#","retryThrottling":{"maxTokens":4,"tokenRatio":0.2505}"#;
    let ch = channel(
        &rt,
        &server,
        &config(5, "0.01s", "0.01s", 1.0, RETRIABLE, throttle),
    );
    // 4 -> 3 (retry) -> 2 (throttled).
    assert_eq!(code_of(&call(&ch, false)), Code::Unavailable);
    assert_eq!(server.requests(), 2);
    *now.lock().unwrap() = Reply::Ok;
    for _ in 0..4 {
        call(&ch, false).unwrap();
    }
    *now.lock().unwrap() = Reply::Fail(UNAVAILABLE, vec![]);
    let before = server.requests();
    assert_eq!(code_of(&call(&ch, false)), Code::Unavailable);
    assert_eq!(
        server.requests() - before,
        1,
        "3.000 tokens -> 2.000: throttled"
    );
}

// ---------------------------------------------------------------------------
// transparentRetry_onlyOnceOnRefused with a throttle: the first refusal is
// retried transparently (no token); later refusals go through
// makeRetryDecision as UNAVAILABLE and each takes a token (6 -> 5 retry,
// -> 4 retry, -> 3 throttled): four requests, the last numbered "2".

#[test]
fn java_refusals_after_the_transparent_one_take_tokens() {
    let server = Server::start(|_| Reply::Reset(h2::Reason::REFUSED_STREAM));
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server,
        &config(5, "0.01s", "0.01s", 1.0, RETRIABLE, THROTTLE),
    );
    let r = call(&ch, true);
    assert_eq!(code_of(&r), Code::Unavailable, "{r:?}");
    assert_eq!(
        server.previous(),
        [None, None, Some("1".to_string()), Some("2".to_string())]
    );
}

// ---------------------------------------------------------------------------
// transparentRetry_onlyOnceOnRefused / noRetry_transparentRetry_noEarlyCommit:
// the transparent retry goes at once (`assertEquals(0,
// fakeClock.numPendingTasks())`: no backoff task), whatever the policy's
// backoff, and whatever the throttle says (the REFUSED branch of
// `Sublistener.closed` never asks it): on a channel throttled to the
// threshold, a refused first attempt is still replaced.

#[test]
fn java_a_transparent_retry_goes_at_once_even_when_throttled() {
    for started in [false, true] {
        let server = Server::start(|i| match i {
            // Drains the tokens: 6 -> 5 -> 4 -> 3 (throttled).
            0..=2 => Reply::Fail(UNAVAILABLE, vec![]),
            3 => Reply::Reset(h2::Reason::REFUSED_STREAM),
            _ => Reply::Ok,
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(
            &rt,
            &server,
            &config(5, "1s", "1s", 1.0, RETRIABLE, THROTTLE),
        );
        // Backoffs of 1 s × U(0.8, 1.2) between the draining attempts.
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Unavailable, "started {started}: {r:?}");
        assert_eq!(server.requests(), 3, "started {started}");
        let r = call(&ch, started);
        assert_eq!(code_of(&r), Code::Ok, "started {started}: {r:?}");
        let g = ms(server.gaps()[3]);
        assert!(
            g < 500.0,
            "started {started}: transparent retry after {g:.0} ms"
        );
        assert_eq!(server.previous()[3..], [None, None], "started {started}");
    }
}

// ---------------------------------------------------------------------------
// headersRead commits (`Sublistener.headersRead` -> commitAndRun): a stream
// reset after response headers is neither retried transparently (even
// REFUSED_STREAM: `state.winningSubstream` is set, the REFUSED branch is
// skipped) nor by the policy (INTERNAL_ERROR -> INTERNAL, retryable here).

#[test]
fn java_a_reset_after_response_headers_is_committed() {
    for (reason, code) in [
        (h2::Reason::REFUSED_STREAM, Code::Unavailable),
        (h2::Reason::INTERNAL_ERROR, Code::Internal),
    ] {
        let server = Server::start(move |i| match i {
            0 => Reply::HeadersThenReset(reason),
            _ => Reply::Ok,
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(
            &rt,
            &server,
            &config(5, "0.01s", "0.01s", 1.0, r#""UNAVAILABLE","INTERNAL""#, ""),
        );
        let r = call(&ch, false);
        assert_eq!(code_of(&r), code, "{reason:?}: {r:?}");
        assert_eq!(server.requests(), 1, "{reason:?}");
    }
}
