//! gRPC C-core's retry end2end tests (grpc/grpc
//! test/core/end2end/tests/retry*.cc) and the retry filter they exercise
//! (src/core/client_channel/retry_filter_legacy_call_data.cc
//! `CallAttempt::ShouldRetry`), ported onto switchyard's managed unary
//! calls against a scripted HTTP/2 server on 127.0.0.1 (tokio + h2, as in
//! tests/retry_go_tables.rs, whose cases are not repeated here).
//!
//! What these add to tests/retry_go_tables.rs, tests/managed/retry.rs and
//! tests/cancel_deadline_go_cases.rs: the request replayed byte for byte;
//! commit by response headers carrying metadata / by a message; which of
//! the 16 codes are retried; the status (code AND message) the caller gets
//! from the last attempt; `grpc-previous-rpc-attempts` over five attempts;
//! a pushback shorter than the backoff (and 0); C-core's one-failure
//! throttle config; an LB drop; a cancel / deadline during an attempt
//! after a retry; `perAttemptRecvTimeout` (ignored). Already pinned
//! elsewhere and not redone: maxAttempts cap counts, retry disabled,
//! negative / unreadable pushback, buffer overflow, cancel and deadline
//! during the backoff, channel close during the backoff.
//!
//! Where C-core differs from gRPC-Go, switchyard follows gRPC-Go and the
//! test pins that side: a failure after the call was committed (response
//! headers seen) costs no retry token (C-core takes one first; grpc-java
//! even credits one); the retry buffer counts the message with its 5-byte
//! prefix (C-core: message plus initial metadata); `perAttemptRecvTimeout`
//! is ignored (C-core honours it only with hedging enabled, gRPC-Go never).

#[path = "common/fixed_pick_lb.rs"]
mod fixed_pick_lb;
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

// ---------------------------------------------------------------------------
// The scripted server.

/// How the server answers one request.
#[derive(Clone, Debug)]
enum Reply {
    /// Headers, one message, trailers grpc-status 0.
    Ok(&'static str),
    /// Trailers-only: grpc-status `code`, grpc-message `msg`, `extra`.
    TrailersOnly(u32, &'static str, Vec<(&'static str, String)>),
    /// Response headers with `headers` metadata, then (if any) one message,
    /// then trailers grpc-status `code`, grpc-message `msg`.
    Full {
        headers: Vec<(&'static str, String)>,
        message: Option<&'static str>,
        code: u32,
        msg: &'static str,
    },
    /// Nothing for this long, then the inner reply.
    After(Duration, Box<Reply>),
    /// Never answers (until the client resets the stream).
    Silent,
}

#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    previous: Option<String>,
    body: Vec<u8>,
    /// The client reset the stream (RST_STREAM) before it was answered.
    reset: bool,
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
                    let i = count.fetch_add(1, Ordering::SeqCst);
                    let reply = script(i);
                    tokio::spawn(answer(i, req, respond, reply, seen.clone()));
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
    i: usize,
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    mut reply: Reply,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let previous = req
        .headers()
        .get("grpc-previous-rpc-attempts")
        .map(|v| v.to_str().unwrap_or("?").to_string());
    // Read the whole request first, as a gRPC server does.
    let mut body = req.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { break };
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    // Requests in arrival order: the index is the script's.
    {
        let mut s = seen.lock().unwrap();
        while s.len() <= i {
            s.push(Seen {
                at: Instant::now(),
                previous: None,
                body: Vec::new(),
                reset: false,
            });
        }
        s[i] = Seen {
            at: Instant::now(),
            previous,
            body: data.get(5..).map(<[u8]>::to_vec).unwrap_or_default(),
            reset: false,
        };
    }
    loop {
        match reply {
            Reply::After(d, inner) => {
                let reset = tokio::select! {
                    _ = tokio::time::sleep(d) => false,
                    _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => true,
                };
                if reset {
                    seen.lock().unwrap()[i].reset = true;
                    return;
                }
                reply = *inner;
            }
            Reply::Silent => {
                let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
                seen.lock().unwrap()[i].reset = true;
                return;
            }
            _ => break,
        }
    }
    let grpc = || {
        let mut r = Response::new(());
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        r
    };
    let status = |code: u32, msg: &'static str| {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", code.into());
        if !msg.is_empty() {
            t.insert("grpc-message", HeaderValue::from_static(msg));
        }
        t
    };
    match reply {
        Reply::Ok(msg) => {
            let Ok(mut s) = respond.send_response(grpc(), false) else {
                return;
            };
            let _ = s.send_data(grpc_frame(msg.as_bytes()), false);
            let _ = s.send_trailers(status(0, ""));
        }
        Reply::TrailersOnly(code, msg, extra) => {
            let mut r = grpc();
            r.headers_mut().extend(status(code, msg));
            add(r.headers_mut(), &extra);
            let _ = respond.send_response(r, true);
        }
        Reply::Full {
            headers,
            message,
            code,
            msg,
        } => {
            let mut r = grpc();
            add(r.headers_mut(), &headers);
            let Ok(mut s) = respond.send_response(r, false) else {
                return;
            };
            if let Some(m) = message {
                let _ = s.send_data(grpc_frame(m.as_bytes()), false);
            }
            let _ = s.send_trailers(status(code, msg));
        }
        Reply::After(..) | Reply::Silent => unreachable!(),
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// C-core's test config: `/service.Service/Method`, `attempts`, backoff
/// `backoff` (initial = max, multiplier 1), `codes`; `more` adds top-level
/// fields.
fn config(attempts: u32, backoff: &str, codes: &str, more: &str) -> String {
    format!(
        r#"{{"methodConfig":[{{"name":[{{"service":"service.Service","method":"Method"}}],"retryPolicy":{{"maxAttempts":{attempts},"initialBackoff":"{backoff}","maxBackoff":"{backoff}","backoffMultiplier":1.0,"retryableStatusCodes":[{codes}]}}}}]{more}}}"#
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

fn options(deadline: Duration) -> CallOptions<'static> {
    CallOptions {
        deadline: Some(Instant::now() + deadline),
        wait_for_ready: Some(true),
        ..Default::default()
    }
}

/// One call sending "foo", blocking (`started` false) or started.
fn call(ch: &Channel, started: bool, deadline: Duration) -> Result<UnaryResponse, Status> {
    let options = options(deadline);
    if !started {
        return ch.reader().unary(METHOD, b"foo", &options);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    ch.unary_start(METHOD, b"foo", &options, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    rx.recv_timeout(deadline + Duration::from_secs(10))
        .expect("the started call completes")
}

fn code_msg(r: &Result<UnaryResponse, Status>) -> (Code, String) {
    match r {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

fn aborted(msg: &'static str) -> Reply {
    Reply::TrailersOnly(10, msg, vec![])
}

fn pushback(v: &str) -> (&'static str, String) {
    ("grpc-retry-pushback-ms", v.to_string())
}

const ABORTED: &str = r#""ABORTED""#;

// ---------------------------------------------------------------------------
// retry.cc (RetryTests.Retry): ABORTED retryable, maxAttempts 3; the first
// attempt fails ABORTED, the second succeeds. The first attempt carries no
// grpc-previous-rpc-attempts, the second "1"; the server gets the same
// request message ("foo") both times.

#[test]
fn core_retry_replays_the_request_and_numbers_the_attempt() {
    for started in [false, true] {
        let server = Server::start(|i| match i {
            0 => aborted("xyz"),
            _ => Reply::Ok("bar"),
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server, &config(3, "0.01s", ABORTED, ""));
        let r = call(&ch, started, Duration::from_secs(5));
        let resp = r.unwrap_or_else(|e| panic!("started {started}: {e:?}"));
        assert_eq!(resp.message, b"bar");
        let seen = server.seen();
        assert_eq!(
            server.previous(),
            [None, Some("1".into())],
            "started {started}"
        );
        assert!(
            seen.iter().all(|s| s.body == b"foo"),
            "started {started}: every attempt sends the request: {seen:?}"
        );
    }
}

// retry_recv_initial_metadata.cc: the server sends initial metadata
// (key1: val1) in its own batch, then ABORTED "xyz": receiving initial
// metadata commits the call, so maxAttempts 2 makes no retry; the caller
// gets ABORTED "xyz". (Switchyard also hands the headers with the status.)
#[test]
fn core_retry_recv_initial_metadata_commits_the_call() {
    for started in [false, true] {
        let server = Server::start(|_| Reply::Full {
            headers: vec![("key1", "val1".into())],
            message: None,
            code: 10,
            msg: "xyz",
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server, &config(2, "0.01s", ABORTED, ""));
        let r = call(&ch, started, Duration::from_secs(5));
        assert_eq!(
            code_msg(&r),
            (Code::Aborted, "xyz".into()),
            "started {started}"
        );
        assert_eq!(server.requests(), 1, "started {started}: no retry");
        let e = r.unwrap_err();
        assert!(
            e.headers().iter().any(|(k, v)| k == "key1" && v == "val1"),
            "started {started}: {:?}",
            e.headers()
        );
    }
}

// retry_recv_message.cc: headers, a message ("bar"), then ABORTED "xyz":
// a received message commits the call: one attempt, ABORTED "xyz".
#[test]
fn core_retry_recv_message_commits_the_call() {
    for started in [false, true] {
        let server = Server::start(|_| Reply::Full {
            headers: vec![],
            message: Some("bar"),
            code: 10,
            msg: "xyz",
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server, &config(2, "0.01s", ABORTED, ""));
        let r = call(&ch, started, Duration::from_secs(5));
        assert_eq!(
            code_msg(&r),
            (Code::Aborted, "xyz".into()),
            "started {started}"
        );
        assert_eq!(server.requests(), 1, "started {started}: no retry");
    }
}

// retry_non_retriable_status.cc: INVALID_ARGUMENT "xyz" with only ABORTED
// retryable: one attempt, the caller gets INVALID_ARGUMENT "xyz". Over all
// 16 failure codes (retryableStatusCodes ABORTED and UNAVAILABLE): exactly
// those two are retried (C-core `retryable_status_codes().Contains`).
#[test]
fn core_retry_only_the_listed_codes_are_retried() {
    // Call k: its first attempt fails with code k (1..=16), any retry is OK.
    let attempt_of_call = Arc::new(Mutex::new(Vec::<u32>::new()));
    let script = attempt_of_call.clone();
    let next_code = Arc::new(Mutex::new(0u32));
    let nc = next_code.clone();
    let server = Server::start(move |_| {
        let code = *nc.lock().unwrap();
        let mut log = script.lock().unwrap();
        log.push(code);
        // The first attempt of each call fails with its code.
        if log.iter().filter(|c| **c == code).count() == 1 {
            Reply::TrailersOnly(code, "xyz", vec![])
        } else {
            Reply::Ok("bar")
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server,
        &config(2, "0.01s", r#""ABORTED","UNAVAILABLE""#, ""),
    );
    for code in 1..=16u32 {
        *next_code.lock().unwrap() = code;
        let before = server.requests();
        let r = call(&ch, code % 2 == 0, Duration::from_secs(5));
        let retried = code == 10 || code == 14;
        let c = Code::from_u32(code).unwrap();
        if retried {
            assert_eq!(code_msg(&r), (Code::Ok, String::new()), "{c:?}");
            assert_eq!(server.requests() - before, 2, "{c:?}: retried once");
        } else {
            assert_eq!(code_msg(&r), (c, "xyz".into()), "{c:?}");
            assert_eq!(server.requests() - before, 1, "{c:?}: not retried");
        }
    }
}

// retry_too_many_attempts.cc: maxAttempts 2, both attempts ABORTED: the
// call ends ABORTED with the LAST attempt's message (C-core's status is
// the final attempt's trailing metadata).
#[test]
fn core_retry_too_many_attempts_ends_with_the_last_attempts_status() {
    for started in [false, true] {
        let server = Server::start(|i| match i {
            0 => aborted("first"),
            _ => aborted("second"),
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server, &config(2, "0.01s", ABORTED, ""));
        let r = call(&ch, started, Duration::from_secs(5));
        assert_eq!(
            code_msg(&r),
            (Code::Aborted, "second".into()),
            "started {started}"
        );
        assert_eq!(server.requests(), 2, "started {started}");
    }
}

// maxAttempts above 5 is 5 (C-core retry_service_config.cc: "capping
// maxAttempts at 5"): five attempts, numbered none, 1, 2, 3, 4, the caller
// getting the fifth's status.
#[test]
fn core_max_attempts_six_makes_five_numbered_attempts() {
    let server = Server::start(|i| match i {
        0 => aborted("attempt 1"),
        1 => aborted("attempt 2"),
        2 => aborted("attempt 3"),
        3 => aborted("attempt 4"),
        4 => aborted("attempt 5"),
        _ => Reply::Ok("bar"),
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server, &config(6, "0.01s", ABORTED, ""));
    let r = call(&ch, true, Duration::from_secs(5));
    assert_eq!(code_msg(&r), (Code::Aborted, "attempt 5".into()));
    let want: Vec<Option<String>> = vec![
        None,
        Some("1".into()),
        Some("2".into()),
        Some("3".into()),
        Some("4".into()),
    ];
    assert_eq!(server.previous(), want);
}

// retry_server_pushback_delay.cc: the first attempt's ABORTED carries
// grpc-retry-pushback-ms; the retry comes after that delay, not the
// policy's backoff. Here the backoff (10 s) is far longer than the
// pushback (300 ms): "it will retry after exactly that delay" (A6). And a
// pushback of 0 retries at once.
#[test]
fn core_retry_server_pushback_delay_replaces_a_longer_backoff() {
    for (value, min, max) in [("300", 250, 5000), ("0", 0, 5000)] {
        for started in [false, true] {
            let server = Server::start(move |i| match i {
                0 => Reply::TrailersOnly(10, "message1", vec![pushback(value)]),
                _ => Reply::Ok("bar"),
            });
            let rt = Runtime::new().unwrap();
            let ch = channel(&rt, &server, &config(3, "10s", ABORTED, ""));
            let r = call(&ch, started, Duration::from_secs(20));
            assert_eq!(code_msg(&r).0, Code::Ok, "pushback {value}: {r:?}");
            let seen = server.seen();
            assert_eq!(seen.len(), 2);
            let gap = seen[1].at - seen[0].at;
            assert!(
                gap >= Duration::from_millis(min) && gap < Duration::from_millis(max),
                "pushback {value}, started {started}: retried after {gap:?}"
            );
        }
    }
}

// retry_server_pushback_disabled.cc: maxAttempts 3; the first attempt
// ABORTED, the second ABORTED with grpc-retry-pushback-ms -1: no third
// attempt; the caller gets the second's ABORTED "xyz".
#[test]
fn core_retry_server_pushback_disabled_after_a_retry() {
    for started in [false, true] {
        let server = Server::start(|i| match i {
            0 => aborted("first"),
            1 => Reply::TrailersOnly(10, "xyz", vec![pushback("-1")]),
            _ => Reply::Ok("bar"),
        });
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server, &config(3, "0.01s", ABORTED, ""));
        let r = call(&ch, started, Duration::from_secs(5));
        assert_eq!(
            code_msg(&r),
            (Code::Aborted, "xyz".into()),
            "started {started}"
        );
        assert_eq!(server.requests(), 2, "started {started}");
    }
}

// retry_throttled.cc: maxTokens 2, tokenRatio 1.0 — "A single failure will
// cause us to be throttled": the first ABORTED takes 2 to 1, not above
// half: no retry, ABORTED "xyz".
#[test]
fn core_retry_throttled_by_a_single_failure() {
    let server = Server::start(|i| match i {
        0 => aborted("xyz"),
        _ => Reply::Ok("bar"),
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server,
        &config(
            2,
            "0.01s",
            ABORTED,
            r#","retryThrottling":{"maxTokens":2,"tokenRatio":1.0}"#,
        ),
    );
    let r = call(&ch, false, Duration::from_secs(5));
    assert_eq!(code_msg(&r), (Code::Aborted, "xyz".into()));
    assert_eq!(server.requests(), 1);
}

// C-core `CallAttempt::ShouldRetry` records the failure BEFORE it checks
// whether the call is committed ("it's important for this to come before
// the remaining checks, so that we don't fail to record failures due to
// other factors"), as gRFC A6 words it ("Every failed RPC will decrement
// the token_count by 1"; counted: RPCs failing with a retryable code). So a
// call committed by response headers that then fails UNAVAILABLE costs a
// token. gRPC-Go (`shouldRetry`: `if !a.transportStream.TrailersOnly()
// { return false, err }` before `throttle()`) and grpc-java (no retry
// decision once a substream has won) do not count it.
//
// maxTokens 10, ratio 0.5: three committed UNAVAILABLE failures leave 7
// tokens in C-core, so an always-UNAVAILABLE call then makes 2 attempts
// (7 -> 6 retry, 6 -> 5 stop); with no token taken it makes 5.
#[test]
fn a_committed_failure_costs_no_retry_token_as_in_grpc_go() {
    let now = Arc::new(Mutex::new(Reply::Full {
        headers: vec![],
        message: None,
        code: 14,
        msg: "committed",
    }));
    let n = now.clone();
    let server = Server::start(move |_| n.lock().unwrap().clone());
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server,
        &config(
            5,
            "0.01s",
            r#""UNAVAILABLE""#,
            r#","retryThrottling":{"maxTokens":10,"tokenRatio":0.5}"#,
        ),
    );
    for _ in 0..3 {
        let r = call(&ch, false, Duration::from_secs(5));
        assert_eq!(code_msg(&r), (Code::Unavailable, "committed".into()));
    }
    assert_eq!(server.requests(), 3);
    *now.lock().unwrap() = Reply::TrailersOnly(14, "xyz", vec![]);
    let r = call(&ch, false, Duration::from_secs(5));
    assert_eq!(code_msg(&r).0, Code::Unavailable);
    // gRPC-Go's `shouldRetry` returns before `throttle()` for an answer
    // that was not trailers-only: the tokens are all 10, and the call
    // makes its 5 attempts (C-core would have 7 left and make 2).
    assert_eq!(server.requests() - 3, 5);
}

// retry_lb_drop.cc: a policy whose picker drops every call with
// UNAVAILABLE "Call dropped by drop LB policy"; UNAVAILABLE is retryable,
// yet a drop is never retried: one pick, the drop's status.
#[test]
fn core_retry_lb_drop_is_not_retried() {
    let picks = fixed_pick_lb::register(
        "probe_core_retry_drop",
        ConnectivityState::Ready,
        fixed_pick_lb::Verdict::Drop,
        Status::new(Code::Unavailable, "Call dropped by drop LB policy"),
    );
    let server = Server::start(|_| Reply::Ok("bar"));
    let rt = Runtime::new().unwrap();
    let sc = config(2, "0.01s", r#""UNAVAILABLE""#, "").replacen(
        '{',
        r#"{"loadBalancingConfig":[{"probe_core_retry_drop":{}}],"#,
        1,
    );
    let ch = channel(&rt, &server, &sc);
    for started in [false, true] {
        let before = picks.load(Ordering::SeqCst);
        let r = call(&ch, started, Duration::from_secs(5));
        let (code, msg) = code_msg(&r);
        assert_eq!(code, Code::Unavailable, "started {started}: {r:?}");
        assert!(
            msg.contains("Call dropped by drop LB policy"),
            "started {started}: {msg}"
        );
        assert_eq!(
            picks.load(Ordering::SeqCst) - before,
            1,
            "started {started}: one pick"
        );
    }
    assert_eq!(server.requests(), 0);
}

// retry_cancellation.cc (RetryTest.Cancellation / Deadline): the first
// attempt fails ABORTED, the call is retried, and the caller cancels (or
// the deadline passes) while the second attempt is in flight: the call
// ends CANCELLED (DEADLINE_EXCEEDED), the second attempt's stream is reset,
// and no third attempt is made.
#[test]
fn core_retry_cancel_or_deadline_during_the_second_attempt() {
    // Cancel.
    let server = Server::start(|i| match i {
        0 => aborted("xyz"),
        _ => Reply::Silent,
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server, &config(3, "0.01s", ABORTED, ""));
    let (tx, rx) = crossbeam_channel::bounded(1);
    let h = ch
        .unary_start(
            METHOD,
            b"foo",
            &options(Duration::from_secs(10)),
            move |r| {
                let _ = tx.send(r);
            },
        )
        .unwrap();
    let t = Instant::now();
    while server.requests() < 2 {
        assert!(t.elapsed() < Duration::from_secs(5), "no second attempt");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(h.cancel());
    let r = rx.recv_timeout(Duration::from_secs(5)).expect("completes");
    assert_eq!(code_msg(&r).0, Code::Cancelled, "{r:?}");
    let t = Instant::now();
    while !server.seen()[1].reset {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "second stream never reset"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.requests(), 2);

    // Deadline.
    for started in [false, true] {
        let server = Server::start(|i| match i {
            0 => aborted("xyz"),
            _ => Reply::Silent,
        });
        let ch = channel(&rt, &server, &config(3, "0.01s", ABORTED, ""));
        let t = Instant::now();
        let r = call(&ch, started, Duration::from_millis(700));
        assert_eq!(code_msg(&r).0, Code::DeadlineExceeded, "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(server.requests(), 2, "started {started}");
    }
}

// retry_per_attempt_recv_timeout.cc needs C-core's experimental
// GRPC_ARG_EXPERIMENTAL_ENABLE_HEDGING; without it C-core ignores
// `perAttemptRecvTimeout` (retry_service_config.cc), as gRPC-Go does. So
// does switchyard (it has no such feature): with a 200 ms
// perAttemptRecvTimeout, an attempt the server answers after 700 ms is not
// cut and retried; the call succeeds in one attempt.
#[test]
fn per_attempt_recv_timeout_is_ignored() {
    let server =
        Server::start(|_| Reply::After(Duration::from_millis(700), Box::new(Reply::Ok("bar"))));
    let rt = Runtime::new().unwrap();
    let sc = config(3, "0.01s", ABORTED, "").replace(
        r#""retryableStatusCodes""#,
        r#""perAttemptRecvTimeout":"0.2s","retryableStatusCodes""#,
    );
    let ch = channel(&rt, &server, &sc);
    let r = call(&ch, false, Duration::from_secs(5));
    assert_eq!(code_msg(&r).0, Code::Ok, "{r:?}");
    assert_eq!(server.requests(), 1);
    assert_eq!(server.previous(), [None]);
}
