//! grpc-java's hedging cases (core/src/test/java/io/grpc/internal/
//! RetriableStreamTest.java `hedging_*`, ManagedChannelImplTest's hedging
//! bits) and gRFC A6's hedging rules, ported onto switchyard's managed
//! unary calls (blocking and started) against a scripted HTTP/2 server on
//! 127.0.0.1 (tokio + h2, as tests/retry_go_tables.rs) that answers each
//! attempt by its `grpc-previous-rpc-attempts` number and records when it
//! came, and whether (and with what reason) the client reset it.
//!
//! What these add to tests/managed/hedging.rs: the spacing of hedges and
//! each one's attempt number; which attempt's answer wins; the losers reset
//! with RST_STREAM CANCEL; failures after maxAttempts wait for the attempt
//! still in flight; the final status is the last failure; a fatal code
//! among several hedges; response headers committing a *later* hedge; a
//! stop pushback with attempts still in flight; a pushback's delay then the
//! hedging delay again (A6 summary, case 5); hedgingDelay 0 and the cap of
//! 5; a refused hedge replaced under the same number; throttling by
//! another call while a hedge is scheduled; throttling with hedges still in
//! flight; cancelled losers costing no token; each hedge picked anew
//! (round_robin); a second refusal / a refusal after a processed failure
//! going by the policy; an unreadable and a beyond-32-bit pushback; a
//! non-fatal failure overriding a pushback's schedule; the deadline with
//! several hedges out (and each one's grpc-timeout) or during a pushback.
//!
//! Not ported: ManagedChannelImplTest
//! `hedgingScheduledThenChannelShutdown_hedgeShouldStillHappen_newCallShouldFail`
//! (switchyard has no graceful channel shutdown: `Channel::close` is
//! grpc-java's shutdownNow, pinned in tests/managed/hedging.rs); the
//! client-streaming buffer cases and the stats/tracer cases of
//! RetriableStreamTest and interop-testing's RetryTest (unary calls only,
//! no census); `hedging_deadlock` (Java locking); Java adding
//! grpc-previous-rpc-attempts to the response headers it hands the app
//! (`addPrevRetryAttemptsToRespHeaders`: A6 says "may"; switchyard, like
//! gRPC-Go, does not).
//!
//! grpc-java and A6 disagree in places (A6 is followed where they do):
//! * a non-fatal failure without pushback: A6 sends the next hedge at once;
//!   grpc-java waits for the scheduled one (`pushbackHedging(null)` returns).
//! * a non-fatal failure with a positive pushback: A6 waits the pushback;
//!   grpc-java (since #10293) sends at once (`makeHedgingDecision` turns
//!   the pushback into 0).
//! * a non-fatal failure that the throttle refuses: A6 waits for the
//!   hedges in flight; grpc-java commits that failure and cancels them.

#[path = "common/tokio_host.rs"]
mod tokio_host;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use std::future::poll_fn;
use std::net::SocketAddr;
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
    /// Headers, one message, trailers grpc-status 0.
    Ok(&'static str),
    /// Trailers-only: grpc-status `code`, grpc-message `msg`, and `extra`.
    Fail(u32, &'static str, Vec<(&'static str, String)>),
    /// Response headers at once, then after the delay trailers with
    /// grpc-status `code`, grpc-message `msg`.
    Committed(Duration, u32, &'static str),
    /// Nothing for this long (unless reset), then the inner reply.
    After(Duration, Box<Reply>),
    /// Never answers (until the client resets the stream).
    Silent,
    /// RST_STREAM REFUSED_STREAM at once.
    Refuse,
}

fn after(ms: u64, r: Reply) -> Reply {
    Reply::After(Duration::from_millis(ms), Box::new(r))
}

/// What the script is told of one request.
#[derive(Clone, Debug)]
struct Req {
    /// Its `grpc-previous-rpc-attempts` (absent: 0).
    attempt: usize,
    /// How many requests with this attempt number and case came before it.
    nth: usize,
    /// Its `x-case` header ("" if none).
    case: String,
}

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    previous: Option<String>,
    attempt: usize,
    case: String,
    timeout: Option<String>,
    /// The client's RST_STREAM reason, and when it came.
    reset: Option<(h2::Reason, Instant)>,
}

type Script = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;
type Log = Arc<Mutex<Vec<Seen>>>;

struct Server {
    addr: SocketAddr,
    seen: Log,
    /// Dropped last: the connections go with it.
    _host: Host,
}

impl Server {
    fn start(script: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Server {
        let script: Script = Arc::new(script);
        let seen: Log = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let host = Host::start(move |sock| {
            let (script, seen) = (script.clone(), seen2.clone());
            async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    let h = req.headers();
                    let get = |k: &str| h.get(k).map(|v| v.to_str().unwrap_or("?").to_string());
                    let previous = get("grpc-previous-rpc-attempts");
                    let attempt = previous
                        .as_deref()
                        .map_or(0, |p| p.parse().unwrap_or(usize::MAX));
                    let case = get("x-case").unwrap_or_default();
                    let (i, nth) = {
                        let mut s = seen.lock().unwrap();
                        let nth = s
                            .iter()
                            .filter(|x| x.attempt == attempt && x.case == case)
                            .count();
                        s.push(Seen {
                            at: Instant::now(),
                            previous,
                            attempt,
                            case: case.clone(),
                            timeout: get("grpc-timeout"),
                            reset: None,
                        });
                        (s.len() - 1, nth)
                    };
                    let reply = script(&Req { attempt, nth, case });
                    tokio::spawn(answer(seen.clone(), i, req, respond, reply));
                }
            }
        });
        Server {
            addr: host.addr,
            seen,
            _host: host,
        }
    }

    fn target(&self) -> String {
        format!("ipv4:{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn seen_case(&self, case: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.case == case).collect()
    }
}

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    Bytes::from(v)
}

fn grpc_response() -> Response<()> {
    let mut r = Response::new(());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

fn note_reset(seen: &Log, i: usize, reason: Option<h2::Reason>) {
    if let Some(r) = reason {
        seen.lock().unwrap()[i].reset = Some((r, Instant::now()));
    }
}

async fn answer(
    seen: Log,
    i: usize,
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    mut reply: Reply,
) {
    if let Reply::Refuse = reply {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    let mut body = req.into_body();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(c) => {
                let _ = body.flow_control().release_capacity(c.len());
            }
            Err(e) => {
                note_reset(&seen, i, e.reason());
                return;
            }
        }
    }
    while let Reply::After(d, inner) = reply {
        tokio::select! {
            _ = tokio::time::sleep(d) => reply = *inner,
            r = poll_fn(|cx| respond.poll_reset(cx)) => {
                note_reset(&seen, i, r.ok());
                return;
            }
        }
    }
    match reply {
        Reply::Silent => {
            let r = poll_fn(|cx| respond.poll_reset(cx)).await;
            note_reset(&seen, i, r.ok());
        }
        Reply::Ok(m) => {
            let Ok(mut s) = respond.send_response(grpc_response(), false) else {
                return;
            };
            let _ = s.send_data(grpc_frame(m.as_bytes()), false);
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static("0"));
            let _ = s.send_trailers(t);
        }
        Reply::Fail(code, msg, extra) => {
            let mut r = grpc_response();
            r.headers_mut().insert("grpc-status", code.into());
            r.headers_mut()
                .insert("grpc-message", HeaderValue::from_static(msg));
            for (k, v) in extra {
                r.headers_mut().append(
                    HeaderName::from_static(k),
                    HeaderValue::from_str(&v).unwrap(),
                );
            }
            let _ = respond.send_response(r, true);
        }
        Reply::Committed(d, code, msg) => {
            let Ok(mut s) = respond.send_response(grpc_response(), false) else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                r = poll_fn(|cx| s.poll_reset(cx)) => {
                    note_reset(&seen, i, r.ok());
                    return;
                }
            }
            let mut t = HeaderMap::new();
            t.insert("grpc-status", code.into());
            t.insert("grpc-message", HeaderValue::from_static(msg));
            let _ = s.send_trailers(t);
        }
        Reply::After(..) | Reply::Refuse => unreachable!(),
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// Hedges echo calls: up to `attempts`, `delay` apart, `codes` non-fatal;
/// `more` adds top-level fields.
fn hedging(attempts: u32, delay: &str, codes: &str, more: &str) -> String {
    format!(
        r#"{{"methodConfig":[{{"name":[{{"service":"echo.Echo"}}],"hedgingPolicy":{{"maxAttempts":{attempts},"hedgingDelay":"{delay}","nonFatalStatusCodes":[{codes}]}}}}]{more}}}"#
    )
}

/// A READY channel to `server` with `config`.
fn ready(rt: &Runtime, server: &Server, config: &str) -> Channel {
    let opts = ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    };
    let ch = Channel::new(rt, &server.target(), Some(config), opts).unwrap();
    ch.connect().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while ch.state() != ConnectivityState::Ready {
        assert!(
            Instant::now() < until,
            "channel never READY: {}",
            ch.state()
        );
        ch.wait_for_state_change(
            ch.state(),
            Some(Instant::now() + Duration::from_millis(100)),
        );
    }
    ch
}

/// One echo call with `x-case: case` and a `deadline`, blocking or started;
/// with how long it took.
fn call(
    ch: &Channel,
    started: bool,
    case: &str,
    deadline: Duration,
) -> (Result<UnaryResponse, Status>, Duration) {
    let md = vec![("x-case".to_string(), case.to_string())];
    let t = Instant::now();
    let options = CallOptions {
        deadline: Some(t + deadline),
        metadata: &md,
        ..Default::default()
    };
    if !started {
        let r = ch.reader().unary(ECHO, b"ping", &options);
        return (r, t.elapsed());
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    ch.unary_start(ECHO, b"ping", &options, move |r| {
        let _ = tx.send((r, t.elapsed()));
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the started call completes")
}

fn msg(r: &Result<UnaryResponse, Status>) -> Result<String, (Code, String)> {
    match r {
        Ok(resp) => Ok(String::from_utf8_lossy(&resp.message).into_owned()),
        Err(s) => Err((s.code(), s.message().to_string())),
    }
}

fn pushback(v: &str) -> Vec<(&'static str, String)> {
    vec![("grpc-retry-pushback-ms", v.to_string())]
}

/// Waits (bounded) until every request numbered one of `attempts` (each
/// number seen at least once) was reset, then asserts each reason was
/// CANCEL.
fn assert_cancelled(server: &Server, attempts: &[usize]) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = server.seen();
        let of: Vec<&Seen> = seen
            .iter()
            .filter(|s| attempts.contains(&s.attempt))
            .collect();
        let all_there = attempts.iter().all(|a| of.iter().any(|s| s.attempt == *a));
        if all_there && of.iter().all(|s| s.reset.is_some()) {
            for s in of {
                assert_eq!(s.reset.unwrap().0, h2::Reason::CANCEL, "{s:?}");
            }
            return;
        }
        assert!(
            Instant::now() < until,
            "attempts {attempts:?} not all reset: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn gap(seen: &[Seen], a: usize, b: usize) -> Duration {
    seen[b].at.saturating_duration_since(seen[a].at)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

const CODES: &str = r#""UNAVAILABLE""#;

// ---------------------------------------------------------------------------
// RetriableStreamTest.hedging_everythingDrained / hedging_maxAttempts /
// hedging_receiveHeaders: hedges one hedgingDelay apart, numbered by
// grpc-previous-rpc-attempts (RetriableStream.updateHeaders: absent for
// the first), up to maxAttempts; the attempt that answers wins and the
// others are cancelled (`cancel(CANCELLED_BECAUSE_COMMITTED)`, on the wire
// RST_STREAM CANCEL). A6: "After hedgingDelay has elapsed without a
// successful response, the second RPC will be issued ... up to maxAttempts".

#[test]
fn hedges_go_every_hedging_delay_up_to_max_attempts_and_the_answering_one_wins() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            3 => Reply::Ok("three"),
            _ => Reply::Silent,
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(4, "0.3s", CODES, ""));
        let (r, took) = call(&ch, started, "", secs(10.0));
        assert_eq!(msg(&r), Ok("three".to_string()), "started {started}");
        assert!(took >= secs(0.85) && took < secs(4.0), "took {took:?}");
        let seen = server.seen();
        let previous: Vec<_> = seen.iter().map(|s| s.previous.as_deref()).collect();
        assert_eq!(previous, [None, Some("1"), Some("2"), Some("3")]);
        for i in 1..4 {
            let g = gap(&seen, i - 1, i);
            assert!(
                g >= secs(0.28) && g < secs(1.0),
                "started {started}: hedge {i} came {g:?} after the one before"
            );
        }
        assert_cancelled(&server, &[0, 1, 2]);
        std::thread::sleep(secs(0.4));
        assert_eq!(server.seen().len(), 4, "no attempt past maxAttempts");
    }
}

/// hedging_maxAttempts: once maxAttempts are out, non-fatal failures of all
/// but one do not end the call: it waits for the one still in flight, whose
/// answer it returns (two non-fatal codes here, as Java's test's
/// UNAVAILABLE and DATA_LOSS).
#[test]
fn after_max_attempts_non_fatal_failures_wait_for_the_attempt_still_in_flight() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            2 => after(1500, Reply::Ok("two")),
            0 | 3 => after(800, Reply::Fail(14, "unavailable", vec![])),
            _ => after(800, Reply::Fail(15, "data loss", vec![])),
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(
            &rt,
            &server,
            &hedging(5, "0.1s", r#""UNAVAILABLE","DATA_LOSS""#, ""),
        );
        let (r, took) = call(&ch, started, "", secs(10.0));
        assert_eq!(msg(&r), Ok("two".to_string()), "started {started}");
        assert!(took >= secs(1.45), "took {took:?}");
        assert_eq!(server.seen().len(), 5, "started {started}");
    }
}

/// When every hedge fails non-fatally the call ends with the status of the
/// last to fail (grpc-java: the substream whose `closed` finds no active
/// hedge and no potential hedge commits, and its status closes the call;
/// A6: "Hedged RPCs are returned to the client application when all
/// outstanding and pending requests have either received a response or
/// been canceled"). Here the first attempt fails last.
#[test]
fn when_every_hedge_fails_the_call_ends_with_the_last_failure() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            0 => after(1500, Reply::Fail(14, "zero", vec![])),
            1 => after(100, Reply::Fail(15, "one", vec![])),
            _ => after(600, Reply::Fail(14, "two", vec![])),
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(
            &rt,
            &server,
            &hedging(3, "0.1s", r#""UNAVAILABLE","DATA_LOSS""#, ""),
        );
        let (r, took) = call(&ch, started, "", secs(10.0));
        assert_eq!(
            msg(&r),
            Err((Code::Unavailable, "zero".to_string())),
            "started {started}"
        );
        assert!(took >= secs(1.45), "took {took:?}");
        assert_eq!(server.seen().len(), 3);
    }
}

/// hedging_everythingDrained_oneHedgeReceivesNonFatal_oneHedgeReceivesFatalStatus:
/// one hedge fails non-fatally (the next goes), then another fails with a
/// code nonFatalStatusCodes does not name: the call ends with that status
/// and the hedges still in flight are cancelled; no hedge follows.
#[test]
fn a_fatal_status_among_several_hedges_ends_the_call_and_cancels_the_rest() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            1 => Reply::Fail(14, "one", vec![]),
            3 => after(100, Reply::Fail(13, "fatal", vec![])),
            4 => Reply::Ok("four"),
            _ => Reply::Silent,
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(5, "0.2s", CODES, ""));
        let (r, took) = call(&ch, started, "", secs(10.0));
        assert_eq!(
            msg(&r),
            Err((Code::Internal, "fatal".to_string())),
            "started {started}"
        );
        assert!(took < secs(3.0), "took {took:?}");
        assert_cancelled(&server, &[0, 2]);
        std::thread::sleep(secs(0.5));
        let seen = server.seen();
        assert_eq!(seen.len(), 4, "no hedge after the fatal status");
        // Hedge 2 went at once after hedge 1's failure (A6: "shortcutting
        // its hedging delay"), hedge 3 one hedging delay after hedge 2
        // ("Subsequent hedged requests will resume at hedgingDelay").
        let (g12, g23) = (gap(&seen, 1, 2), gap(&seen, 2, 3));
        assert!(
            g12 < secs(0.15),
            "started {started}: hedge 2 {g12:?} after hedge 1"
        );
        assert!(
            g23 >= secs(0.18) && g23 < secs(0.8),
            "started {started}: hedge 3 {g23:?} after hedge 2"
        );
    }
}

/// hedging_receiveHeaders: a later hedge's response headers commit the call
/// to it: the others are cancelled at once (not when the call ends), no
/// hedge follows, and its trailers' status ends the call, non-fatal or not,
/// even though the cancelled first attempt would have answered OK.
#[test]
fn response_headers_commit_the_hedge_that_sent_them_and_cancel_the_others_at_once() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            0 => after(1500, Reply::Ok("zero")),
            1 => Reply::Committed(secs(1.0), 14, "one"),
            _ => Reply::Ok("two"),
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(3, "0.3s", CODES, ""));
        let (r, took) = call(&ch, started, "", secs(10.0));
        assert_eq!(
            msg(&r),
            Err((Code::Unavailable, "one".to_string())),
            "started {started}"
        );
        assert!(took >= secs(1.2), "took {took:?}");
        assert_cancelled(&server, &[0]);
        let seen = server.seen();
        assert_eq!(seen.len(), 2, "no hedge after the commit: {seen:#?}");
        let reset_at = seen[0].reset.unwrap().1;
        assert!(
            reset_at.saturating_duration_since(seen[1].at) < secs(0.6),
            "the first attempt was reset {:?} after the committing hedge came",
            reset_at.saturating_duration_since(seen[1].at)
        );
    }
}

// ---------------------------------------------------------------------------
// Pushback.

/// hedging_pushback_negative: a hedge's pushback saying stop ends the
/// hedging (A6: "no further hedged requests will be sent"), but not the
/// attempts already out: the first one's later OK is the call's answer.
#[test]
fn a_stop_pushback_stops_hedges_but_the_attempts_in_flight_go_on() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            0 => after(1000, Reply::Ok("zero")),
            1 => Reply::Fail(14, "one", pushback("-1")),
            _ => Reply::Ok("later"),
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(4, "0.2s", CODES, ""));
        let (r, took) = call(&ch, started, "", secs(10.0));
        assert_eq!(msg(&r), Ok("zero".to_string()), "started {started}");
        assert!(took >= secs(0.95), "took {took:?}");
        assert_eq!(server.seen().len(), 2, "started {started}");
    }
}

/// A6 summary, case 5 ("Send next hedged request in n ms. Subsequent hedged
/// requests will resume at n + hedgingDelay") and hedging_pushback_positive
/// (which grpc-java now passes by sending at once, #10293; its assertions
/// do not see when): hedge 1 fails with a pushback of 800 ms while the
/// first attempt is in flight; hedge 2 goes 800 ms later, not at the
/// hedging delay nor at once, and hedge 3 one hedging delay after that.
#[test]
fn a_pushback_puts_off_the_next_hedge_and_the_delay_runs_again_after_it() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            1 => Reply::Fail(14, "one", pushback("800")),
            3 => Reply::Ok("three"),
            _ => Reply::Silent,
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(4, "0.5s", CODES, ""));
        let (r, _) = call(&ch, started, "", secs(10.0));
        assert_eq!(msg(&r), Ok("three".to_string()), "started {started}");
        let seen = server.seen();
        assert_eq!(seen.len(), 4, "{seen:#?}");
        let (g1, g2, g3) = (gap(&seen, 0, 1), gap(&seen, 1, 2), gap(&seen, 2, 3));
        assert!(g1 >= secs(0.48) && g1 < secs(1.2), "hedge 1 after {g1:?}");
        assert!(
            g2 >= secs(0.77) && g2 < secs(1.5),
            "started {started}: hedge 2 came {g2:?} after hedge 1's pushback of 800 ms"
        );
        assert!(
            g3 >= secs(0.48) && g3 < secs(1.2),
            "started {started}: hedge 3 came {g3:?} after hedge 2 (delay 500 ms)"
        );
        assert_cancelled(&server, &[0, 2]);
    }
}

// ---------------------------------------------------------------------------
// hedgingDelay 0, the cap, transparent retry.

/// A6's example: "hedgingDelay": "0s" issues maxAttempts RPCs at once; and
/// maxAttempts over 5 is treated as 5 (A6 "Limits on Retries and Hedges";
/// grpc-java's `maxHedgedAttempts` default 5, ManagedChannelImplBuilder).
#[test]
fn a_hedging_delay_of_zero_sends_every_attempt_at_once_five_at_most() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            4 => after(400, Reply::Ok("four")),
            _ => Reply::Silent,
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(7, "0s", CODES, ""));
        let (r, _) = call(&ch, started, "", secs(10.0));
        assert_eq!(msg(&r), Ok("four".to_string()), "started {started}");
        let seen = server.seen();
        let previous: Vec<_> = seen.iter().map(|s| s.previous.as_deref()).collect();
        assert_eq!(
            previous,
            [None, Some("1"), Some("2"), Some("3"), Some("4")],
            "started {started}"
        );
        let spread = gap(&seen, 0, 4);
        assert!(spread < secs(0.3), "all five went within {spread:?}");
        assert_cancelled(&server, &[0, 1, 2, 3]);
        std::thread::sleep(secs(0.3));
        assert_eq!(server.seen().len(), 5);
    }
}

/// hedging_transparentRetry: a hedge the server refuses (RST_STREAM
/// REFUSED_STREAM, never processed) is replaced at once, under the same
/// attempt number (`createSubstream(substream.previousAttemptCount, ...)`),
/// without spending an attempt of maxAttempts.
#[test]
fn a_refused_hedge_is_replaced_at_once_under_the_same_attempt_number() {
    for started in [false, true] {
        let server = Server::start(|r| match (r.attempt, r.nth) {
            (1, 0) => Reply::Refuse,
            (1, _) => Reply::Ok("one"),
            _ => Reply::Silent,
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(2, "0.2s", CODES, ""));
        let (r, _) = call(&ch, started, "", secs(10.0));
        assert_eq!(msg(&r), Ok("one".to_string()), "started {started}");
        let seen = server.seen();
        let previous: Vec<_> = seen.iter().map(|s| s.previous.as_deref()).collect();
        assert_eq!(previous, [None, Some("1"), Some("1")], "started {started}");
        let g = gap(&seen, 1, 2);
        assert!(
            g < secs(0.15),
            "the replacement came {g:?} after the refusal"
        );
        assert_cancelled(&server, &[0]);
    }
}

/// hedging_transparentRetry, second half: only one refusal per call is
/// retried transparently (grpc-java's `noMoreTransparentRetry`); a second
/// refused hedge goes by the policy: its status (UNAVAILABLE on the wire,
/// which this policy's nonFatalStatusCodes does not name) ends the call and
/// cancels the attempts in flight, the first refusal's replacement too.
#[test]
fn a_second_refused_hedge_is_not_replaced_and_goes_by_the_policy() {
    for started in [false, true] {
        let server = Server::start(|r| match (r.attempt, r.nth) {
            (1, 0) | (2, _) => Reply::Refuse,
            (3, _) => Reply::Ok("three"),
            _ => Reply::Silent,
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(4, "0.2s", r#""DATA_LOSS""#, ""));
        let (r, took) = call(&ch, started, "", secs(10.0));
        assert_eq!(
            r.as_ref().map_err(Status::code).err(),
            Some(Code::Unavailable),
            "started {started}: {:?}",
            msg(&r)
        );
        assert!(took < secs(2.0), "took {took:?}");
        let seen = server.seen();
        let attempts: Vec<usize> = seen.iter().map(|s| s.attempt).collect();
        assert_eq!(attempts, [0, 1, 1, 2], "started {started}");
        assert_cancelled(&server, &[0]);
        // The replacement of attempt 1 (its second request) was cancelled.
        let until = Instant::now() + secs(5.0);
        while server.seen()[2].reset.is_none() {
            assert!(Instant::now() < until, "the replacement was never reset");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(server.seen()[2].reset.unwrap().0, h2::Reason::CANCEL);
    }
}

/// hedging_transparentRetryNotAllowed: once an attempt has failed at the
/// server (a non-fatal DATA_LOSS here), a refused hedge is not replaced
/// transparently either: its UNAVAILABLE goes by the policy (fatal here).
#[test]
fn a_refusal_after_a_processed_failure_is_not_replaced() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            1 => Reply::Fail(15, "one", vec![]),
            2 => Reply::Refuse,
            3 => Reply::Ok("three"),
            _ => Reply::Silent,
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(4, "0.2s", r#""DATA_LOSS""#, ""));
        let (r, took) = call(&ch, started, "", secs(10.0));
        assert_eq!(
            r.as_ref().map_err(Status::code).err(),
            Some(Code::Unavailable),
            "started {started}: {:?}",
            msg(&r)
        );
        assert!(took < secs(2.0), "took {took:?}");
        let attempts: Vec<usize> = server.seen().iter().map(|s| s.attempt).collect();
        assert_eq!(attempts, [0, 1, 2], "started {started}");
        assert_cancelled(&server, &[0]);
    }
}

/// A6: "If the value for pushback is negative or unparseble, then it will
/// be seen as the server asking the client not to retry at all" (grpc-java
/// `getPushbackMills`: a NumberFormatException reads as -1): an unreadable
/// pushback on a hedge stops hedging; the first attempt still answers.
#[test]
fn an_unreadable_pushback_stops_hedges() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            0 => after(800, Reply::Ok("zero")),
            1 => Reply::Fail(14, "one", pushback("soon")),
            _ => Reply::Ok("later"),
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(4, "0.2s", CODES, ""));
        let (r, _) = call(&ch, started, "", secs(10.0));
        assert_eq!(msg(&r), Ok("zero".to_string()), "started {started}");
        assert_eq!(server.seen().len(), 2, "started {started}");
    }
}

/// A6 summary, case 3 ("Immediately send next scheduled hedged request")
/// also when a pushback had put it off: hedge 1's pushback of 2 s sets the
/// next hedge to 2.2 s; the first attempt's non-fatal failure (no pushback)
/// at 0.6 s sends it at once. (grpc-java: `pushbackHedging(null)` keeps the
/// 2 s schedule.)
#[test]
fn a_non_fatal_failure_sends_a_hedge_a_pushback_had_put_off_at_once() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            0 => after(600, Reply::Fail(14, "zero", vec![])),
            1 => Reply::Fail(14, "one", pushback("2000")),
            _ => Reply::Ok("two"),
        });
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(3, "0.2s", CODES, ""));
        let (r, took) = call(&ch, started, "", secs(10.0));
        assert_eq!(msg(&r), Ok("two".to_string()), "started {started}");
        assert!(took < secs(1.5), "started {started}: took {took:?}");
        let seen = server.seen();
        assert_eq!(seen.len(), 3);
        let g = gap(&seen, 0, 2);
        assert!(g >= secs(0.55) && g < secs(1.2), "hedge 2 at {g:?}");
    }
}

/// A6: the pushback "is to be an ASCII encoded signed 32-bit integer ...
/// If the value for pushback is negative or unparseble, then it will be
/// seen as the server asking the client not to retry at all". grpc-java
/// (the one gRPC with hedging) parses it with `Integer.valueOf`, so
/// 3000000000 is unparseable: hedging stops, and with no attempt left in
/// flight the call ends at once with that failure (`closed` commits it).
/// gRPC-Go (`strconv.Atoi`) and C-core (`SimpleAtoi` to int64) read it as
/// a 34-day delay instead (for their retries).
#[test]
fn a_pushback_beyond_32_bits_stops_hedges() {
    for started in [false, true] {
        let server = Server::start(|_| Reply::Fail(14, "push", pushback("3000000000")));
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(3, "10s", CODES, ""));
        let (r, took) = call(&ch, started, "", secs(1.5));
        assert_eq!(
            msg(&r),
            Err((Code::Unavailable, "push".to_string())),
            "started {started}: took {took:?}"
        );
        assert!(took < secs(1.0), "took {took:?}");
        assert_eq!(server.seen().len(), 1);
    }
}

/// The deadline ends a hedged call that has nothing in flight and waits
/// out a pushback (A6: "Once a deadline has passed, the operation fails
/// regardless of ... the hedging configuration"): DEADLINE_EXCEEDED at the
/// deadline, not when the 5 s pushback ends, and no hedge goes.
#[test]
fn the_deadline_ends_a_hedged_call_waiting_out_a_pushback() {
    for started in [false, true] {
        let server = Server::start(|_| Reply::Fail(14, "push", pushback("5000")));
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(3, "10s", CODES, ""));
        let (r, took) = call(&ch, started, "", secs(0.6));
        assert_eq!(
            r.as_ref().map_err(Status::code).err(),
            Some(Code::DeadlineExceeded),
            "started {started}: {:?}",
            msg(&r)
        );
        assert!(took >= secs(0.55) && took < secs(2.0), "took {took:?}");
        assert_eq!(server.seen().len(), 1);
    }
}

// ---------------------------------------------------------------------------
// Throttling.

/// hedging_throttledByOtherCall: Throttle(4, 0.8); while the first call's
/// hedge is scheduled, another call's failures take the tokens to 2 (half):
/// grpc-java still sends the hedge already scheduled (the throttle is read
/// when a hedge is scheduled, in `HedgingRunnable`), then schedules no
/// more. (A6's wording, "subsequent hedged RPCs will only be sent if
/// token_count is greater than the threshold", would not send it.)
#[test]
fn a_hedge_already_scheduled_still_goes_when_another_call_spends_the_tokens() {
    for started in [false, true] {
        let server = Server::start(|r| match (r.case.as_str(), r.attempt) {
            ("a", 0) => after(2500, Reply::Ok("a")),
            ("a", 1) => Reply::Silent,
            ("a", _) => Reply::Ok("a-late"),
            _ => Reply::Fail(14, "b", vec![]),
        });
        let rt = Runtime::new().unwrap();
        let sc = hedging(
            3,
            "1s",
            CODES,
            r#","retryThrottling":{"maxTokens":4,"tokenRatio":0.8}"#,
        );
        let ch = ready(&rt, &server, &sc);
        let a = std::thread::scope(|s| {
            let a = s.spawn(|| call(&ch, started, "a", secs(10.0)));
            let until = Instant::now() + secs(5.0);
            while server.seen_case("a").is_empty() {
                assert!(Instant::now() < until, "call a never came");
                std::thread::sleep(Duration::from_millis(5));
            }
            // b: its first failure leaves 3 (its hedge goes at once), its
            // second 2: no more, and b ends.
            let (b, took) = call(&ch, false, "b", secs(10.0));
            assert_eq!(msg(&b), Err((Code::Unavailable, "b".to_string())));
            assert!(took < secs(0.9), "b took {took:?}");
            a.join().unwrap()
        });
        assert_eq!(msg(&a.0), Ok("a".to_string()), "started {started}");
        assert_eq!(server.seen_case("b").len(), 2, "started {started}");
        let attempts: Vec<usize> = server.seen_case("a").iter().map(|s| s.attempt).collect();
        assert_eq!(
            attempts,
            [0, 1],
            "started {started}: the scheduled hedge went, the next did not"
        );
    }
}

/// A6: when throttling stops hedging, "if there are no other already-sent
/// hedged RPCs the failure is returned to the client application": with
/// one still in flight, the call waits for it. Throttle(4, 0.8): hedge 1
/// fails (3 left, hedge 2 goes), hedge 2 fails (2 left: throttled); the
/// first attempt then answers OK. (grpc-java's `makeHedgingDecision` makes
/// the throttled failure not hedgeable, so `closed` commits it and cancels
/// the first attempt: UNAVAILABLE "two" there.)
#[test]
fn a_throttled_non_fatal_failure_waits_for_the_hedge_still_in_flight() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            0 => after(1000, Reply::Ok("zero")),
            1 => Reply::Fail(14, "one", vec![]),
            _ => Reply::Fail(14, "two", vec![]),
        });
        let rt = Runtime::new().unwrap();
        let sc = hedging(
            3,
            "0.2s",
            CODES,
            r#","retryThrottling":{"maxTokens":4,"tokenRatio":0.8}"#,
        );
        let ch = ready(&rt, &server, &sc);
        let (r, _) = call(&ch, started, "", secs(10.0));
        assert_eq!(msg(&r), Ok("zero".to_string()), "started {started}");
        assert_eq!(server.seen().len(), 3);
    }
}

/// Throttling counts a hedged call's failed attempts, not the attempts it
/// cancelled once another answered (grpc-java cancels them with
/// CANCELLED_BECAUSE_COMMITTED after the commit: no throttle decision), and
/// a won call earns tokenRatio once. Throttle(4, 0.1): were each cancelled
/// first attempt a failure, the tokens would be 3.1, 2.2, then no hedge
/// for the third call, whose first attempt never answers.
#[test]
fn attempts_cancelled_by_a_winning_hedge_cost_no_token() {
    for started in [false, true] {
        let server = Server::start(|r| match r.attempt {
            0 => Reply::Silent,
            _ => Reply::Ok("one"),
        });
        let rt = Runtime::new().unwrap();
        let sc = hedging(
            2,
            "0.1s",
            CODES,
            r#","retryThrottling":{"maxTokens":4,"tokenRatio":0.1}"#,
        );
        let ch = ready(&rt, &server, &sc);
        for n in 0..5 {
            let (r, took) = call(&ch, started, "", secs(3.0));
            assert_eq!(
                msg(&r),
                Ok("one".to_string()),
                "started {started}: call {n} (took {took:?})"
            );
        }
        assert_cancelled(&server, &[0]);
        assert_eq!(server.seen().len(), 10);
    }
}

/// Each hedge is picked anew (grpc-java: every `newSubstream` picks; A6:
/// hedges are "typically [executed] by different backends"): with
/// round_robin over two backends, a call's first attempt and its hedge
/// land on different backends.
#[test]
fn each_hedge_is_picked_anew() {
    for started in [false, true] {
        let script = |r: &Req| match (r.case.as_str(), r.attempt) {
            ("warm", _) => Reply::Ok("warm"),
            (_, 0) => Reply::Silent,
            _ => Reply::Ok("hedge"),
        };
        let servers = [Server::start(script), Server::start(script)];
        let rt = Runtime::new().unwrap();
        let sc = format!(
            r#"{{"loadBalancingConfig":[{{"round_robin":{{}}}}],{}"#,
            hedging(2, "0.1s", CODES, "").strip_prefix('{').unwrap()
        );
        let opts = ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            ..Default::default()
        };
        let target = format!("ipv4:{},{}", servers[0].addr, servers[1].addr);
        let ch = Channel::new(&rt, &target, Some(&sc), opts).unwrap();
        ch.connect().unwrap();
        // Both backends serve before the calls that count.
        let until = Instant::now() + secs(10.0);
        while servers.iter().any(|s| s.seen_case("warm").is_empty()) {
            assert!(Instant::now() < until, "both backends never served");
            let _ = call(&ch, false, "warm", secs(2.0));
        }
        for n in 0..4 {
            let case = format!("c{n}");
            let (r, _) = call(&ch, started, &case, secs(5.0));
            assert_eq!(msg(&r), Ok("hedge".to_string()));
            let per: Vec<Vec<usize>> = servers
                .iter()
                .map(|s| s.seen_case(&case).iter().map(|x| x.attempt).collect())
                .collect();
            assert!(
                per[0].len() == 1 && per[1].len() == 1,
                "started {started}: call {n}'s attempts per backend: {per:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The deadline.

/// A6: "gRPC call deadlines apply to the entire chain of hedged requests.
/// Once a deadline has passed, the operation fails regardless of in-flight
/// RPCs": every hedge out is cancelled, each carried the time left of the
/// call's deadline (grpc-timeout), and none goes after it.
#[test]
fn the_deadline_cancels_every_hedge_out_and_each_carried_the_time_left() {
    for started in [false, true] {
        let server = Server::start(|_| Reply::Silent);
        let rt = Runtime::new().unwrap();
        let ch = ready(&rt, &server, &hedging(4, "0.3s", CODES, ""));
        let (r, took) = call(&ch, started, "", secs(0.8));
        assert_eq!(r.unwrap_err().code(), Code::DeadlineExceeded);
        assert!(took < secs(2.0), "took {took:?}");
        assert_cancelled(&server, &[0, 1, 2]);
        std::thread::sleep(secs(0.4));
        let seen = server.seen();
        assert_eq!(seen.len(), 3, "no hedge after the deadline: {seen:#?}");
        // grpc-timeout: the time left (e.g. "799000u", "498000u").
        let left: Vec<Duration> = seen
            .iter()
            .map(|s| parse_timeout(s.timeout.as_deref().expect("a grpc-timeout")))
            .collect();
        assert!(left[0] <= secs(0.8) && left[0] > secs(0.6), "{left:?}");
        for (i, left) in left.iter().enumerate().skip(1) {
            let want = secs(0.8).saturating_sub(gap(&seen, 0, i));
            assert!(
                left.abs_diff(want) < secs(0.1),
                "hedge {i}: grpc-timeout {left:?}, {want:?} left"
            );
        }
    }
}

fn parse_timeout(s: &str) -> Duration {
    let (n, unit) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().unwrap();
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => panic!("bad grpc-timeout {s}"),
    }
}
