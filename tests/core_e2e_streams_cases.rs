//! More of gRPC C-core's end2end tests (grpc/grpc
//! test/core/end2end/tests/) that tests/core_e2e_cases.rs,
//! tests/core_e2e_limits_cases.rs, tests/retry_core_cases.rs and
//! tests/chttp2_core_cases.rs leave out, ported onto switchyard's managed
//! unary calls: many_calls.cc, shutdown_finishes_calls.cc,
//! large_metadata.cc (request side), retry_lb_fail.cc, and
//! max_concurrent_streams.cc's rule with the limit changed by SETTINGS
//! mid-connection (RFC 9113 5.1.2 / 6.5.2; C-core's chttp2 re-checks
//! `waiting_for_concurrency` on every peer SETTINGS), with calls ending
//! while queued, and with the channel closing while calls are queued.
//!
//! Not portable: high_initial_seqno.cc (no API for the first stream id;
//! h2's `client::Builder::initial_stream_id` is not exposed),
//! cancel_with_status.cc (no caller-chosen cancel status), cancel_in_a_vacuum
//! (a unary call starts when created), connection_scaling.cc (C-core's
//! experimental `connectionScaling` service config: not in switchyard).
//! C-core's tests end calls OK with no message; a unary call needs one
//! (gRPC-Go "cardinality violation", C++ "No message returned for unary
//! request"), so the servers here send one.

#[path = "common/fixed_pick_lb.rs"]
mod fixed_pick_lb;
#[path = "common/h2_frames.rs"]
mod h2_frames;
#[path = "common/outcome.rs"]
mod outcome;
#[path = "common/raw_server.rs"]
mod raw_server;
#[path = "common/tokio_host.rs"]
mod tokio_host;

use bytes::Bytes;
use h2_frames::*;
use http::{HeaderMap, HeaderValue, Request, Response};
use outcome::{outcome, wait, Rx};
use raw_server::Raw;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::*;
use tokio_host::Host;

const METHOD: &str = "/service/method";

/// What a server thread records for the test to read.
type Shared<T> = Arc<Mutex<T>>;

fn channel(rt: &Runtime, target: &str, config: Option<&str>) -> Channel {
    let opts = ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    };
    let ch = Channel::new(rt, target, config, opts).unwrap();
    ch.connect().unwrap();
    ch
}

fn start_md(
    ch: &Channel,
    method: &str,
    request: &[u8],
    md: &[(String, String)],
    deadline: Duration,
    wfr: bool,
) -> (CallHandle, Rx) {
    let (tx, rx) = mpsc::channel();
    let opts = CallOptions {
        deadline: Some(Instant::now() + deadline),
        wait_for_ready: Some(wfr),
        metadata: md,
        ..Default::default()
    };
    let h = ch
        .unary_start(method, request, &opts, move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    (h, rx)
}

fn start(ch: &Channel, request: &[u8], deadline: Duration, wfr: bool) -> (CallHandle, Rx) {
    start_md(ch, METHOD, request, &[], deadline, wfr)
}

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    Bytes::from(v)
}

async fn read_body(req: Request<h2::RecvStream>) -> (String, HeaderMap, Vec<u8>) {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let mut body = req.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { break };
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    (path, headers, data)
}

fn ok_headers() -> Response<()> {
    let mut r = Response::new(());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

fn status_trailers(code: u32, msg: &'static str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", code.into());
    t.insert("grpc-message", HeaderValue::from_static(msg));
    t
}

// ---------------------------------------------------------------------------
// many_calls.cc (ManyCallsOrder2): 100 calls started at once, each sending
// "hello world" to /foo with a 30 s deadline; the server takes all 100
// before answering any, then ends each OK "xyz". Every call ends OK, the
// server saw "hello world" 100 times and no stream was reset.

#[test]
fn core_many_calls_100_at_once_all_answered_after_the_server_has_them_all() {
    const N: usize = 100;
    let seen: Shared<Vec<(String, Vec<u8>)>> = Arc::default();
    let conns = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(tokio::sync::Semaphore::new(0));
    let (seen2, conns2, arrived2) = (seen.clone(), conns.clone(), arrived.clone());
    let host = Host::start(move |sock| {
        conns2.fetch_add(1, Ordering::SeqCst);
        let (seen, arrived) = (seen2.clone(), arrived2.clone());
        async move {
            let Ok(mut c) = h2::server::Builder::new().handshake::<_, Bytes>(sock).await else {
                return;
            };
            while let Some(Ok((req, mut respond))) = c.accept().await {
                let (seen, arrived) = (seen.clone(), arrived.clone());
                tokio::spawn(async move {
                    let (path, _, body) = read_body(req).await;
                    seen.lock().unwrap().push((path, body));
                    arrived.add_permits(1);
                    // Wait until all N are in: take N permits, give them back.
                    let all = arrived.acquire_many(N as u32).await.unwrap();
                    drop(all);
                    let Ok(mut s) = respond.send_response(ok_headers(), false) else {
                        return;
                    };
                    let _ = s.send_data(grpc_frame(b"ok"), false);
                    let _ = s.send_trailers(status_trailers(0, "xyz"));
                });
            }
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &host.target(), None);
    let calls: Vec<_> = (0..N)
        .map(|_| {
            start_md(
                &ch,
                "/foo",
                b"hello world",
                &[],
                Duration::from_secs(30),
                true,
            )
        })
        .collect();
    for (i, (_h, rx)) in calls.iter().enumerate() {
        let r = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("call {i} never completed"));
        let u = r.unwrap_or_else(|s| panic!("call {i}: {s:?}"));
        assert_eq!(u.message, b"ok", "call {i}");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), N);
    for (path, body) in &seen {
        assert_eq!(path, "/foo");
        assert_eq!(&body[5..], b"hello world");
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one connection");
    ch.close();
}

// ---------------------------------------------------------------------------
// shutdown_finishes_calls.cc (EarlyServerShutdownFinishesInflightCalls): a
// call the server has accepted; the server shuts down (GOAWAY) and cancels
// all calls (C-core's chttp2 `close_from_api`: a trailers-only response
// grpc-status 14 "Cancelled all calls", the stream's RST_STREAM NO_ERROR).
// The client gets UNAVAILABLE; the request was processed, so it is not
// retried transparently: the server saw it once.

#[test]
fn core_shutdown_finishes_calls_unavailable_and_not_retried() {
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let host = Host::start(move |sock| {
        let seen = seen2.clone();
        async move {
            let Ok(mut c) = h2::server::Builder::new().handshake::<_, Bytes>(sock).await else {
                return;
            };
            let Some(Ok((req, mut respond))) = c.accept().await else {
                return;
            };
            seen.fetch_add(1, Ordering::SeqCst);
            let conn = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                c.graceful_shutdown();
                while let Some(Ok(_)) = c.accept().await {}
            });
            let _ = read_body(req).await;
            tokio::time::sleep(Duration::from_millis(600)).await;
            let mut r = ok_headers();
            r.headers_mut().insert("grpc-status", 14u32.into());
            r.headers_mut().insert(
                "grpc-message",
                HeaderValue::from_static("Cancelled all calls"),
            );
            let _ = respond.send_response(r, true);
            let _ = conn.await;
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &host.target(), None);
    let (_h, rx) = start_md(&ch, "/foo", b"", &[], Duration::from_secs(5), false);
    assert_eq!(
        wait(&rx, Duration::from_secs(10)),
        (Code::Unavailable, "Cancelled all calls".into())
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seen.load(Ordering::SeqCst), 1, "not retried transparently");
    ch.close();
}

// ---------------------------------------------------------------------------
// large_metadata.cc (test_request_with_large_metadata): one request
// metadata entry "key" of 64 KiB of 'a' (more than one 16 KiB frame: the
// header block goes out as HEADERS + CONTINUATION) plus "hello world";
// the server gets both intact and answers OK "xyz".

#[test]
fn core_request_with_64_kib_metadata_reaches_the_server_intact() {
    let seen: Shared<Option<(HeaderMap, Vec<u8>)>> = Arc::default();
    let seen2 = seen.clone();
    let host = Host::start(move |sock| {
        let seen = seen2.clone();
        async move {
            let mut b = h2::server::Builder::new();
            b.max_header_list_size(64 * 1024 + 1024 + 4096);
            let Ok(mut c) = b.handshake::<_, Bytes>(sock).await else {
                return;
            };
            while let Some(Ok((req, mut respond))) = c.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let (_, headers, body) = read_body(req).await;
                    *seen.lock().unwrap() = Some((headers, body));
                    let Ok(mut s) = respond.send_response(ok_headers(), false) else {
                        return;
                    };
                    let _ = s.send_data(grpc_frame(b"ok"), false);
                    let _ = s.send_trailers(status_trailers(0, "xyz"));
                });
            }
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &host.target(), None);
    let big = "a".repeat(64 * 1024);
    let md = vec![("key".to_string(), big.clone())];
    let (_h, rx) = start_md(
        &ch,
        "/foo",
        b"hello world",
        &md,
        Duration::from_secs(5),
        false,
    );
    assert_eq!(wait(&rx, Duration::from_secs(10)), (Code::Ok, "ok".into()));
    let (headers, body) = seen.lock().unwrap().clone().expect("the server got it");
    assert_eq!(headers.get("key").map(|v| v.len()), Some(64 * 1024));
    assert_eq!(headers.get("key").unwrap().as_bytes(), big.as_bytes());
    assert_eq!(&body[5..], b"hello world");
    ch.close();
}

// ---------------------------------------------------------------------------
// retry_lb_fail.cc (RetryTest.RetryLbFail): a policy whose picker fails
// every pick UNAVAILABLE "LB pick failed" (a failure, not a drop); the
// retry policy allows 2 attempts on UNAVAILABLE. C-core retries the failed
// pick: the call ends UNAVAILABLE "LB pick failed" after 2 picks.

/// The policy "core_e2e_streams_fail_lb" (TRANSIENT_FAILURE, every pick
/// failed UNAVAILABLE "LB pick failed"); returns its count of picks.
fn fail_lb() -> Arc<AtomicUsize> {
    fixed_pick_lb::register(
        "core_e2e_streams_fail_lb",
        ConnectivityState::TransientFailure,
        fixed_pick_lb::Verdict::Fail,
        Status::new(Code::Unavailable, "LB pick failed"),
    )
}

#[test]
fn core_retry_lb_fail_is_retried_by_the_retry_policy() {
    let picks = fail_lb();
    let host = Host::start(|_sock| async move {});
    let rt = Runtime::new().unwrap();
    let sc = r#"{"loadBalancingConfig":[{"core_e2e_streams_fail_lb":{}}],
        "methodConfig":[{"name":[{"service":"service","method":"method"}],
        "retryPolicy":{"maxAttempts":2,"initialBackoff":"0.05s","maxBackoff":"0.05s",
        "backoffMultiplier":1.6,"retryableStatusCodes":["UNAVAILABLE"]}}]}"#;
    let ch = channel(&rt, &host.target(), Some(sc));
    let (_h, rx) = start(&ch, b"", Duration::from_secs(5), false);
    let (code, msg) = wait(&rx, Duration::from_secs(10));
    assert_eq!(code, Code::Unavailable);
    assert!(msg.contains("LB pick failed"), "{msg}");
    assert_eq!(
        picks.load(Ordering::SeqCst),
        2,
        "C-core: two picks (one retry)"
    );
    ch.close();
}

// ---------------------------------------------------------------------------
// A hand-written HTTP/2 server whose SETTINGS the test sends when it
// likes: for the server's SETTINGS_MAX_CONCURRENT_STREAMS changing
// mid-connection.

#[derive(Clone, Debug, PartialEq)]
enum Ev {
    Headers(u32),
    Rst(u32, u32),
    SettingsAck,
    GoAway(u32, u32),
    Data(u32, bool),
}

struct RawH2 {
    log: Arc<Mutex<Vec<(usize, Ev)>>>,
    /// Streams open now / at most at once (auto-answer mode).
    open: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    writers: Arc<Mutex<Vec<TcpStream>>>,
    raw: Raw,
}

fn settings_frame(mcs: Option<u32>) -> Vec<u8> {
    let mut p = Vec::new();
    if let Some(n) = mcs {
        p.extend(0x3u16.to_be_bytes());
        p.extend(n.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

impl RawH2 {
    fn start(initial_mcs: Option<u32>) -> RawH2 {
        RawH2::start_auto(initial_mcs, None)
    }

    /// `auto`: answer every request this long after its END_STREAM.
    fn start_auto(initial_mcs: Option<u32>, auto: Option<Duration>) -> RawH2 {
        let log: Arc<Mutex<Vec<(usize, Ev)>>> = Arc::default();
        let writers: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let open = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let (lg, wr, op, mo) = (log.clone(), writers.clone(), open.clone(), max_open.clone());
        let raw = Raw::start(move |mut sock, ci, _stop| {
            let sock_w = sock.try_clone().unwrap();
            let answer_later = |id: u32| {
                let Some(d) = auto else { return };
                let w = sock_w.try_clone().unwrap();
                let wlock = wr.clone();
                let op = op.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(d);
                    let mut b = headers(
                        id,
                        &[(":status", b"200"), ("content-type", b"application/grpc")],
                        false,
                    );
                    b.extend(data(id, &msg(b"ok"), false));
                    b.extend(headers(id, &[("grpc-status", b"0")], true));
                    let _g = wlock.lock().unwrap();
                    op.fetch_sub(1, Ordering::SeqCst);
                    let _ = (&w).write_all(&b);
                });
            };
            let _ = sock.set_nodelay(true);
            let mut w = sock.try_clone().unwrap();
            wr.lock().unwrap().push(sock.try_clone().unwrap());
            let mut preface = [0u8; 24];
            if sock.read_exact(&mut preface).is_err() {
                return true;
            }
            let _ = w.write_all(&settings_frame(initial_mcs));
            loop {
                let mut h = [0u8; 9];
                if sock.read_exact(&mut h).is_err() {
                    return true;
                }
                let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                let (kind, flags) = (h[3], h[4]);
                let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                let mut p = vec![0u8; len];
                if sock.read_exact(&mut p).is_err() {
                    return true;
                }
                match kind {
                    SETTINGS if flags & ACK == 0 => {
                        let _g = wr.lock().unwrap();
                        let _ = w.write_all(&frame(SETTINGS, ACK, 0, &[]));
                    }
                    SETTINGS => lg.lock().unwrap().push((ci, Ev::SettingsAck)),
                    PING if flags & ACK == 0 => {
                        let _g = wr.lock().unwrap();
                        let _ = w.write_all(&frame(PING, ACK, 0, &p));
                    }
                    HEADERS => {
                        lg.lock().unwrap().push((ci, Ev::Headers(id)));
                        let now = op.fetch_add(1, Ordering::SeqCst) + 1;
                        mo.fetch_max(now, Ordering::SeqCst);
                        if flags & END_STREAM != 0 {
                            answer_later(id);
                        }
                    }
                    DATA => {
                        lg.lock()
                            .unwrap()
                            .push((ci, Ev::Data(id, flags & END_STREAM != 0)));
                        if flags & END_STREAM != 0 {
                            answer_later(id);
                        }
                    }
                    GOAWAY => {
                        let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                        let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                        lg.lock().unwrap().push((ci, Ev::GoAway(last, code)));
                    }
                    RST_STREAM => {
                        let code = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                        lg.lock().unwrap().push((ci, Ev::Rst(id, code)));
                    }
                    _ => {}
                }
            }
        });
        RawH2 {
            log,
            open,
            max_open,
            writers,
            raw,
        }
    }

    fn target(&self) -> String {
        self.raw.target()
    }

    fn send(&self, conn: usize, bytes: &[u8]) {
        let g = self.writers.lock().unwrap();
        (&g[conn]).write_all(bytes).unwrap();
    }

    fn streams(&self) -> Vec<(usize, u32)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(c, e)| match e {
                Ev::Headers(id) => Some((*c, *id)),
                _ => None,
            })
            .collect()
    }

    fn wait_streams(&self, n: usize, within: Duration) -> Vec<(usize, u32)> {
        let end = Instant::now() + within;
        loop {
            let s = self.streams();
            if s.len() >= n {
                return s;
            }
            assert!(Instant::now() < end, "only {} streams: {s:?}", s.len());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn acks(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| *e == Ev::SettingsAck)
            .count()
    }

    fn wait_acks(&self, n: usize) {
        let end = Instant::now() + Duration::from_secs(5);
        while self.acks() < n {
            assert!(Instant::now() < end, "SETTINGS not acked");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Headers, one message `m`, trailers grpc-status 0.
    fn answer(&self, conn: usize, id: u32, m: &[u8]) {
        let mut b = headers(
            id,
            &[(":status", b"200"), ("content-type", b"application/grpc")],
            false,
        );
        b.extend(data(id, &msg(m), false));
        b.extend(headers(id, &[("grpc-status", b"0")], true));
        self.send(conn, &b);
    }
}

impl Drop for RawH2 {
    fn drop(&mut self) {
        for w in self.writers.lock().unwrap().iter() {
            let _ = w.shutdown(Shutdown::Both);
        }
    }
}

// max_concurrent_streams.cc's rule (a call over the server's limit waits,
// then goes) with the limit raised later: the server's first SETTINGS says
// MAX_CONCURRENT_STREAMS 0; a call waits (no HEADERS); the server raises
// it to 1: the call goes out on the same connection and is answered.

#[test]
fn max_concurrent_streams_raised_from_zero_by_settings_lets_the_waiting_call_go() {
    let server = RawH2::start(Some(0));
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server.target(), None);
    let (_h, rx) = start(&ch, b"alpha", Duration::from_secs(8), true);
    server.wait_acks(1);
    std::thread::sleep(Duration::from_millis(400));
    assert!(server.streams().is_empty(), "sent over a limit of 0");
    assert!(rx.try_recv().is_err(), "the call waits");
    server.send(0, &settings_frame(Some(1)));
    let s = server.wait_streams(1, Duration::from_secs(3));
    assert_eq!(s[0].0, 0, "the same connection");
    server.answer(0, s[0].1, b"alpha-reply");
    assert_eq!(
        wait(&rx, Duration::from_secs(5)),
        (Code::Ok, "alpha-reply".into())
    );
    assert_eq!(server.raw.accepted(), 1);
    ch.close();
}

// The limit lowered below the streams already open: three calls in flight
// (no limit), then SETTINGS MAX_CONCURRENT_STREAMS 1 (acked). A fourth
// call must wait until fewer than one stream is open: it is not sent while
// any of the three is unanswered, and goes once all three are done.

#[test]
fn max_concurrent_streams_lowered_below_open_streams_holds_new_calls_until_under_it() {
    let server = RawH2::start(None);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server.target(), None);
    let rxs: Vec<_> = (0..3)
        .map(|_| start(&ch, b"x", Duration::from_secs(10), true))
        .collect();
    let s = server.wait_streams(3, Duration::from_secs(5));
    let acks = server.acks();
    server.send(0, &settings_frame(Some(1)));
    server.wait_acks(acks + 1);
    let (_h4, rx4) = start(&ch, b"fourth", Duration::from_secs(10), true);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.streams().len(),
        3,
        "sent with 3 open over a limit of 1"
    );
    server.answer(0, s[0].1, b"r0");
    server.answer(0, s[1].1, b"r1");
    assert_eq!(wait(&rxs[0].1, Duration::from_secs(5)).0, Code::Ok);
    assert_eq!(wait(&rxs[1].1, Duration::from_secs(5)).0, Code::Ok);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.streams().len(),
        3,
        "sent with 1 open over a limit of 1"
    );
    server.answer(0, s[2].1, b"r2");
    assert_eq!(wait(&rxs[2].1, Duration::from_secs(5)).0, Code::Ok);
    let s = server.wait_streams(4, Duration::from_secs(3));
    assert_eq!(s[3].0, 0, "the same connection");
    server.answer(0, s[3].1, b"r3");
    assert_eq!(wait(&rx4, Duration::from_secs(5)), (Code::Ok, "r3".into()));
    ch.close();
}

// many_calls.cc under max_concurrent_streams.cc's limit: SETTINGS
// MAX_CONCURRENT_STREAMS 10; 100 calls started at once, each answered 20 ms
// after its request ended. All 100 end OK on one connection, and the
// server never has more than 10 streams open at once (RFC 9113 5.1.2: a
// client MUST NOT open more).

#[test]
fn many_calls_under_max_concurrent_streams_10_never_exceed_it() {
    let server = RawH2::start_auto(Some(10), Some(Duration::from_millis(20)));
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server.target(), None);
    let calls: Vec<_> = (0..100)
        .map(|_| start(&ch, b"hello world", Duration::from_secs(20), true))
        .collect();
    for (i, (_h, rx)) in calls.iter().enumerate() {
        let r = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("call {i} never completed"));
        assert_eq!(outcome(&r), (Code::Ok, "ok".into()), "call {i}");
    }
    assert_eq!(server.streams().len(), 100, "no stream was opened twice");
    assert!(
        server.max_open.load(Ordering::SeqCst) <= 10,
        "{} streams open at once over a limit of 10",
        server.max_open.load(Ordering::SeqCst)
    );
    assert_eq!(server.open.load(Ordering::SeqCst), 0);
    assert_eq!(server.raw.accepted(), 1);
    ch.close();
}

// max_concurrent_streams.cc (TimeoutOnSecond) and cancel_after_invoke.cc
// together: a call that ends while queued for the only stream slot held
// no slot, so its end frees none. MAX_CONCURRENT_STREAMS 1: A holds the
// slot; B, C, D, E queue behind it; B is cancelled, C's deadline passes.
// D and E must still wait while A is open (C-core: the cancelled stream
// leaves `waiting_for_concurrency` and the open count is untouched); once
// A is answered, exactly one of them goes (D, the older), then E after D.

#[test]
fn calls_ending_while_queued_for_the_only_slot_free_no_slot() {
    let server = RawH2::start(Some(1));
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server.target(), None);
    let (_ha, rxa) = start(&ch, b"A", Duration::from_secs(10), true);
    let s = server.wait_streams(1, Duration::from_secs(5));
    let (hb, rxb) = start(&ch, b"B", Duration::from_secs(10), true);
    let (_hc, rxc) = start(&ch, b"C", Duration::from_millis(300), true);
    let (_hd, rxd) = start(&ch, b"D", Duration::from_secs(10), true);
    std::thread::sleep(Duration::from_millis(20));
    let (_he, rxe) = start(&ch, b"E", Duration::from_secs(10), true);
    std::thread::sleep(Duration::from_millis(100));
    assert!(hb.cancel());
    assert_eq!(wait(&rxb, Duration::from_secs(5)).0, Code::Cancelled);
    assert_eq!(wait(&rxc, Duration::from_secs(5)).0, Code::DeadlineExceeded);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.streams().len(),
        1,
        "a stream opened while A held the only slot: {:?}",
        server.log.lock().unwrap()
    );
    server.answer(0, s[0].1, b"a");
    assert_eq!(wait(&rxa, Duration::from_secs(5)), (Code::Ok, "a".into()));
    let s = server.wait_streams(2, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.streams().len(),
        2,
        "more than one stream opened for one freed slot: {:?}",
        server.log.lock().unwrap()
    );
    server.answer(0, s[1].1, b"second");
    let s = server.wait_streams(3, Duration::from_secs(3));
    server.answer(0, s[2].1, b"third");
    assert_eq!(
        wait(&rxd, Duration::from_secs(5)),
        (Code::Ok, "second".into()),
        "D went first"
    );
    assert_eq!(
        wait(&rxe, Duration::from_secs(5)),
        (Code::Ok, "third".into())
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.streams().len(), 3, "B or C was opened after all");
    ch.close();
}

// Channel close with calls queued for a stream slot (MAX_CONCURRENT_STREAMS
// 1: A open, then queued behind it a started call B or a blocking call C):
// every call ends at once CANCELLED "the client connection is closing",
// as gRPC-Go's ClientConn.Close ends them (the form
// tests/cancel_deadline_go_cases.rs pins for calls in flight), and the
// queued call is never opened: gRPC-Go's Close finishes the controlbuf
// (a stream still waiting in `waitingOnStreamQuota` is never written) and
// C-core's transport close cancels `waiting_for_concurrency` streams
// unstarted (chttp2 `cancel_unstarted_streams`).

fn close_with_a_queued_call(blocking_queued: bool) {
    let server = RawH2::start(Some(1));
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server.target(), None);
    let (_ha, rxa) = start(&ch, b"A", Duration::from_secs(10), true);
    server.wait_streams(1, Duration::from_secs(5));
    let queued: Box<dyn FnOnce() -> Result<UnaryResponse, Status>> = if blocking_queued {
        let mut r = ch.reader();
        let t = std::thread::spawn(move || {
            r.unary(
                METHOD,
                b"C",
                &CallOptions {
                    deadline: Some(Instant::now() + Duration::from_secs(10)),
                    wait_for_ready: Some(true),
                    ..Default::default()
                },
            )
        });
        Box::new(move || t.join().unwrap())
    } else {
        let (hb, rxb) = start(&ch, b"B", Duration::from_secs(10), true);
        Box::new(move || {
            let _hb = hb;
            rxb.recv_timeout(Duration::from_secs(3))
                .expect("B completes")
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    ch.close();
    let a = rxa
        .recv_timeout(Duration::from_secs(3))
        .expect("A completes");
    let q = queued();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    for (name, r) in [("open", a), ("queued", q)] {
        let (code, msg) = outcome(&r);
        assert_eq!(code, Code::Cancelled, "{name}: {msg}");
        assert!(
            msg.contains("the client connection is closing"),
            "{name}: {msg}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        server.streams().len(),
        1,
        "the queued call was opened while the channel closed: {:?}",
        server.log.lock().unwrap()
    );
}

#[test]
fn closing_the_channel_never_opens_a_started_call_queued_for_a_stream_slot() {
    close_with_a_queued_call(false);
}

// FAILS: the blocking call's stream is opened (HEADERS + DATA END_STREAM)
// between A's RST_STREAM and the closing GOAWAY: the channel's close
// drains each subchannel first (subchannel/pool.rs `shutdown_all` ->
// `shutdown_each` -> connector/managed.rs `shutdown`: `conn.drain()` then
// `drive`, a poll that flushes A's reset and lets h2 pop the queued stream
// from `pending_open`) and only then `close_all`. A started call is safe
// (its stream was dropped before, PATCHED.md 9); a blocking call's stream
// is alive on its RPC thread until the connection dies.
#[test]
fn closing_the_channel_never_opens_a_blocking_call_queued_for_a_stream_slot() {
    close_with_a_queued_call(true);
}

// retry_lb_fail.cc's policy with a wait-for-ready call: a pick failure
// does not fail a wait-for-ready call (it waits for a new picker, gRPC's
// rule), so no attempt ends and none is retried: the call ends at its
// deadline DEADLINE_EXCEEDED, mentioning the pick's error as gRPC-Go does
// ("... while waiting for connections to become ready"/ last picker error).

#[test]
fn core_retry_lb_fail_wait_for_ready_waits_to_its_deadline() {
    let picks = fail_lb();
    let host = Host::start(|_sock| async move {});
    let rt = Runtime::new().unwrap();
    let sc = r#"{"loadBalancingConfig":[{"core_e2e_streams_fail_lb":{}}],
        "methodConfig":[{"name":[{"service":"service","method":"method"}],
        "retryPolicy":{"maxAttempts":2,"initialBackoff":"0.05s","maxBackoff":"0.05s",
        "backoffMultiplier":1.6,"retryableStatusCodes":["UNAVAILABLE"]}}]}"#;
    let ch = channel(&rt, &host.target(), Some(sc));
    let t = Instant::now();
    let (_h, rx) = start(&ch, b"", Duration::from_millis(500), true);
    let (code, msg) = wait(&rx, Duration::from_secs(5));
    assert_eq!(code, Code::DeadlineExceeded, "{msg}");
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    eprintln!(
        "wfr lb-fail deadline message: {msg:?}; picks {}",
        picks.load(Ordering::SeqCst)
    );
    ch.close();
}
