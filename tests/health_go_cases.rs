//! gRPC-Go's client-side health checking tests
//! (`test/healthcheck_test.go`, `health/client.go`) and ORCA out-of-band
//! producer behaviour (`orca/producer.go`, `orca/producer_test.go`), case by
//! case against real servers on 127.0.0.1: the project's testserver, and a
//! small scripted h2 server below whose Watch streams answer only when told.

#[path = "common/mod.rs"]
mod common;
#[path = "common/tokio_host.rs"]
mod tokio_host;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::transport::health_proto::{NOT_SERVING, SERVICE_UNKNOWN, SERVING, UNKNOWN};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};
use tokio_host::Host;

fn start(opts: ServerOptions) -> TestServer {
    TestServer::start(Listen::Tcp("127.0.0.1:0".parse().unwrap()), opts).unwrap()
}

fn rr_health(service: &str) -> String {
    format!(
        r#"{{"loadBalancingConfig":[{{"round_robin":{{}}}}],
            "healthCheckConfig":{{"serviceName":"{service}"}}}}"#
    )
}

fn delayed(ms: u64) -> Vec<(String, String)> {
    vec![("x-delay-ms".to_string(), ms.to_string())]
}

/// Starts a unary echo that the server holds `ms`; its result comes on the
/// returned receiver.
fn start_slow_call(
    ch: &Channel,
    ms: u64,
) -> crossbeam_channel::Receiver<Result<UnaryResponse, Status>> {
    let md = delayed(ms);
    let (tx, rx) = crossbeam_channel::bounded(1);
    ch.unary_start(
        "/echo.Echo/Unary",
        b"ping",
        &CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(20)),
            wait_for_ready: Some(true),
            metadata: &md,
            ..Default::default()
        },
        move |r| {
            let _ = tx.send(r);
        },
    )
    .unwrap();
    rx
}

// ------------------------------------------------------------ scripted server

/// An h2 gRPC server whose Watch streams send the status in `status` (each
/// change once) and nothing while it is `None`; echo answers as the
/// testserver's.
struct Scripted {
    addr: SocketAddr,
    st: Arc<ScriptState>,
    /// Dropped last: the connections go with it.
    _host: Host,
}

#[derive(Default)]
struct ScriptState {
    status: Mutex<Option<u32>>,
    /// Watch streams opened.
    watches: AtomicU64,
    /// Watch streams the client reset (RST_STREAM) or whose connection went.
    watch_ends: AtomicU64,
    /// The service names Watches asked for.
    services: Mutex<Vec<String>>,
    echoes: AtomicU64,
    connections: AtomicU64,
    /// Once set, open Watch streams end with this grpc-status (trailers
    /// after what they sent).
    end_with: Mutex<Option<u32>>,
    /// ORCA StreamCoreMetrics streams opened; each sends one (empty, valid)
    /// OrcaLoadReport, then ends UNAVAILABLE 50 ms later.
    orca_streams: AtomicU64,
    /// If not zero: a Watch that has sent nothing ends UNAVAILABLE after
    /// this many ms, and an ORCA stream sends no report and ends UNAVAILABLE
    /// after this many ms.
    silent_end_ms: AtomicU64,
    /// When each Watch / ORCA stream opened and ended (server side).
    watch_times: Mutex<Vec<(Instant, Option<Instant>)>>,
    orca_times: Mutex<Vec<(Instant, Option<Instant>)>>,
}

impl Scripted {
    fn start(status: Option<u32>) -> Scripted {
        let st = Arc::new(ScriptState::default());
        *st.status.lock().unwrap() = status;
        let sh = st.clone();
        let host = Host::start(move |sock| {
            let port = sock.local_addr().unwrap().port();
            serve_conn(sock, sh.clone(), port)
        });
        Scripted {
            addr: host.addr,
            st,
            _host: host,
        }
    }

    fn set(&self, status: Option<u32>) {
        *self.st.status.lock().unwrap() = status;
    }

    fn watches(&self) -> u64 {
        self.st.watches.load(Ordering::SeqCst)
    }

    fn watch_ends(&self) -> u64 {
        self.st.watch_ends.load(Ordering::SeqCst)
    }

    fn target(&self) -> String {
        format!("ipv4:{}", self.addr)
    }
}

fn frame(msg: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out.into()
}

fn grpc_ok_headers() -> http::Response<()> {
    let mut r = http::Response::new(());
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    r
}

async fn serve_conn(sock: tokio::net::TcpStream, st: Arc<ScriptState>, port: u16) {
    let Ok(mut conn) = h2::server::handshake(sock).await else {
        return;
    };
    st.connections.fetch_add(1, Ordering::SeqCst);
    while let Some(Ok((req, respond))) = conn.accept().await {
        tokio::spawn(serve_stream(req, respond, st.clone(), port));
    }
}

async fn serve_stream(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    st: Arc<ScriptState>,
    port: u16,
) {
    let (parts, mut body) = req.into_parts();
    let mut raw = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        raw.extend_from_slice(&chunk);
    }
    let msg = raw.get(5..).unwrap_or_default().to_vec();
    match parts.uri.path() {
        "/grpc.health.v1.Health/Watch" => {
            st.watches.fetch_add(1, Ordering::SeqCst);
            let service =
                switchyard::transport::health_proto::decode_request(&msg).unwrap_or_default();
            st.services.lock().unwrap().push(service);
            let Ok(mut stream) = respond.send_response(grpc_ok_headers(), false) else {
                return;
            };
            let opened = Instant::now();
            let idx = {
                let mut t = st.watch_times.lock().unwrap();
                t.push((opened, None));
                t.len() - 1
            };
            let silent_end = st.silent_end_ms.load(Ordering::SeqCst);
            let mut sent = None;
            loop {
                if silent_end > 0
                    && sent.is_none()
                    && opened.elapsed() >= Duration::from_millis(silent_end)
                {
                    let mut t = http::HeaderMap::new();
                    t.insert("grpc-status", http::HeaderValue::from_static("14"));
                    let _ = stream.send_trailers(t);
                    st.watch_times.lock().unwrap()[idx].1 = Some(Instant::now());
                    break;
                }
                let now = *st.status.lock().unwrap();
                if let Some(status) = now.filter(|_| now != sent) {
                    sent = now;
                    let m = switchyard::transport::health_proto::encode_response(status);
                    if stream.send_data(frame(&m), false).is_err() {
                        break;
                    }
                }
                if let Some(code) = *st.end_with.lock().unwrap() {
                    let mut t = http::HeaderMap::new();
                    t.insert("grpc-status", code.into());
                    t.insert(
                        "grpc-message",
                        http::HeaderValue::from_static("ended by test"),
                    );
                    let _ = stream.send_trailers(t);
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => break,
                }
            }
            st.watch_ends.fetch_add(1, Ordering::SeqCst);
        }
        "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics" => {
            st.orca_streams.fetch_add(1, Ordering::SeqCst);
            let Ok(mut stream) = respond.send_response(grpc_ok_headers(), false) else {
                return;
            };
            let silent_end = st.silent_end_ms.load(Ordering::SeqCst);
            if silent_end > 0 {
                let opened = Instant::now();
                tokio::time::sleep(Duration::from_millis(silent_end)).await;
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", http::HeaderValue::from_static("14"));
                let _ = stream.send_trailers(t);
                st.orca_times
                    .lock()
                    .unwrap()
                    .push((opened, Some(Instant::now())));
                return;
            }
            if stream.send_data(frame(&[]), false).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("14"));
            let _ = stream.send_trailers(t);
        }
        _ => {
            st.echoes.fetch_add(1, Ordering::SeqCst);
            let Ok(mut stream) = respond.send_response(grpc_ok_headers(), false) else {
                return;
            };
            let mut out = msg;
            out.extend_from_slice(format!("|port={port}").as_bytes());
            let _ = stream.send_data(frame(&out), false);
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            let _ = stream.send_trailers(t);
        }
    }
}

// ------------------------------------------------------------------- health

/// TestHealthCheckWatchStateChange: service "foo" NOT_SERVING → TF; SERVING
/// → READY; SERVICE_UNKNOWN → TF; SERVING → READY; UNKNOWN (a response with
/// status 0, an empty message on the wire) → TF.
#[test]
fn watch_state_change_follows_every_status() {
    let server = start(ServerOptions::default());
    server.set_serving("foo", NOT_SERVING);
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(&rr_health("foo")),
        plaintext(),
    );
    wait_state(&ch, TransientFailure);
    for (status, want) in [
        (SERVING, Ready),
        (SERVICE_UNKNOWN, TransientFailure),
        (SERVING, Ready),
        (UNKNOWN, TransientFailure),
    ] {
        server.set_serving("foo", status);
        wait_state(&ch, want);
    }
    // One Watch carried every change.
    assert_eq!(server.health_watches(), 1);
}

/// TestHealthCheckWithoutSetConnectivityStateCalled: a Watch that never
/// answers leaves the subchannel (and a one-backend round_robin channel)
/// CONNECTING, past any connect deadline, on its one connection and its one
/// Watch; a call that does not wait for ready waits in the queue until its
/// deadline (DEADLINE_EXCEEDED, not UNAVAILABLE). The first status decides.
#[test]
fn a_silent_watch_keeps_the_subchannel_connecting() {
    let server = Scripted::start(None);
    let rt = Runtime::new().unwrap();
    let (mut opts, seen) = recorded_plaintext();
    opts.backoff.min_connect_timeout = Duration::from_millis(100);
    opts.backoff.initial = Duration::from_millis(100);
    let ch = channel(&rt, &server.target(), Some(&rr_health("delay")), opts);
    wait_until("the watch", || server.watches() >= 1);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(ch.state(), Connecting);
    let e = ch
        .reader()
        .unary(
            "/echo.Echo/Unary",
            b"ping",
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_millis(300)),
                wait_for_ready: Some(false),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert_eq!(server.watches(), 1);
    assert_eq!(server.st.connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.st.services.lock().unwrap().as_slice(),
        ["delay".to_string()]
    );
    let sc = seen.all()[0].sc;
    assert_eq!(seen.states_of(sc), [Connecting]);
    server.set(Some(SERVING));
    wait_state(&ch, Ready);
    assert_eq!(seen.states_of(sc), [Connecting, Ready]);
}

/// TestHealthCheckWithoutSetConnectivityStateCalledAddrConnShutDown: the
/// address leaves the list while the Watch has said nothing: the Watch is
/// cancelled (the server sees its stream end).
#[test]
fn removing_the_address_cancels_a_silent_watch() {
    let server = Scripted::start(None);
    let other = Scripted::start(Some(SERVING));
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server.target(),
        Some(&rr_health("delay")),
        plaintext(),
    );
    wait_until("the watch", || server.watches() >= 1);
    assert_eq!(server.watch_ends(), 0);
    ch.update_addresses(vec![Address::new(other.addr.to_string())])
        .unwrap();
    wait_until("the removed address's watch to end", || {
        server.watch_ends() >= 1
    });
    wait_state(&ch, Ready);
    assert_eq!(server.watches(), 1);
}

/// TestHealthCheckWithGoAway: GOAWAY ends the health stream (gRPC-Go cancels
/// the health check's context in the transport's onClose), while a call in
/// flight on the connection finishes; the server's graceful stop then sees
/// every connection close by itself.
#[test]
fn goaway_ends_the_watch_and_the_call_in_flight_finishes() {
    let server = start(ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(&rr_health("")),
        plaintext(),
    );
    echo(&mut ch.reader(), true).unwrap();
    let rx = start_slow_call(&ch, 1000);
    wait_until("the slow call and the watch in flight", || {
        server.in_flight() >= 2
    });
    let drained = server.graceful_stop(Duration::from_secs(4));
    let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(r.is_ok(), "the call in flight finishes: {r:?}");
    assert!(
        drained,
        "the connection did not close by itself: the Watch outlived the GOAWAY"
    );
}

/// TestHealthCheckWithAddrConnDrain: the address leaves the resolver's list:
/// the health stream ends at once, a call in flight on the connection
/// finishes.
#[test]
fn removed_address_ends_the_watch_and_its_call_in_flight_finishes() {
    let server = start(ServerOptions::default());
    let other = start(ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(&rr_health("")),
        plaintext(),
    );
    echo(&mut ch.reader(), true).unwrap();
    let rx = start_slow_call(&ch, 1500);
    wait_until("the slow call and the watch in flight", || {
        server.in_flight() == 2
    });
    ch.update_addresses(vec![Address::new(other.addr().to_string())])
        .unwrap();
    wait_until("the watch to end, the call still running", || {
        server.in_flight() == 1
    });
    let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(r.is_ok(), "the call in flight finishes: {r:?}");
    assert_eq!(server.health_watches(), 1);
}

/// TestHealthCheckWithClientConnClose: closing the channel ends the health
/// stream (and its connection).
#[test]
fn closing_the_channel_ends_the_watch() {
    let server = start(ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(&rr_health("")),
        plaintext(),
    );
    echo(&mut ch.reader(), true).unwrap();
    assert_eq!(server.in_flight(), 1, "the watch");
    ch.close();
    wait_until("the watch to end", || server.in_flight() == 0);
    wait_until("the connection to close", || server.connections() == 0);
}

/// TestHealthCheckWithConnClose (and a new connection): the server goes away
/// (the Watch with it); once it is back on the same port, the new connection
/// gets a new Watch, whose verdict decides again.
#[test]
fn a_new_connection_gets_a_new_watch() {
    let server = start(ServerOptions::default());
    let addr = server.addr();
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext_fast_backoff();
    opts.backoff.max = Duration::from_millis(100);
    let ch = channel(&rt, &format!("ipv4:{addr}"), Some(&rr_health("")), opts);
    wait_state(&ch, Ready);
    server.stop();
    wait_until("the channel to leave READY", || ch.state() != Ready);
    let back = TestServer::start(Listen::Tcp(addr), ServerOptions::default()).unwrap();
    back.set_serving("", NOT_SERVING);
    wait_until("the new connection's watch", || back.health_watches() >= 1);
    wait_state(&ch, TransientFailure);
    back.set_serving("", SERVING);
    wait_state(&ch, Ready);
    assert_eq!(back.health_watches(), 1);
}

// --------------------------------------------------------------------- ORCA

fn wrr_oob(period: &str) -> String {
    format!(
        r#"{{"loadBalancingConfig":[{{"weighted_round_robin":{{
            "enableOobLoadReport":true,"oobReportingPeriod":"{period}",
            "blackoutPeriod":"0s","weightUpdatePeriod":"0.1s"}}}}]}}"#
    )
}

/// gRPC-Go's WRR (re)registers its OOB listener when the reporting period
/// changes (`endpointWeight.updateConfig` → `updateORCAListener`): the old
/// listener's stop closes the producer, the new registration builds one and
/// `updateRunLocked` opens a stream asking for the new interval.
#[test]
fn a_new_oob_period_reopens_the_stream_with_it() {
    let server = start(ServerOptions {
        orca_min_interval: Some(Duration::from_millis(10)),
        ..Default::default()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(&wrr_oob("1s")),
        plaintext(),
    );
    echo(&mut ch.reader(), true).unwrap();
    wait_until("the first stream", || server.orca_streams() == 1);
    assert_eq!(server.orca_interval(), Some(Duration::from_secs(1)));
    ch.update_service_config(&wrr_oob("0.5s")).unwrap();
    wait_until("a stream with the new period", || {
        server.orca_interval() == Some(Duration::from_millis(500))
    });
    assert_eq!(server.orca_streams(), 2);
}

/// gRPC-Go's producer stops after UNIMPLEMENTED only for its own run
/// (`producer.run` returns): a new registration (here the WRR config's new
/// reporting period, which stops the old listener, closing the producer,
/// and registers a new one) builds a new producer whose run opens a new
/// stream on the same connection (`orca/producer.go`: `registerListener` →
/// `updateRunLocked` → `go p.run`).
#[test]
fn a_new_oob_registration_after_unimplemented_asks_again() {
    let server = start(ServerOptions {
        no_orca: true,
        ..Default::default()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(&wrr_oob("1s")),
        plaintext(),
    );
    echo(&mut ch.reader(), true).unwrap();
    wait_until("the first (UNIMPLEMENTED) stream", || {
        server.orca_streams() == 1
    });
    std::thread::sleep(Duration::from_millis(200));
    ch.update_service_config(&wrr_oob("0.5s")).unwrap();
    echo(&mut ch.reader(), true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.orca_streams() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        server.orca_streams(),
        2,
        "the new listener's producer asks the server again"
    );
    assert_eq!(server.connections(), 1, "on the same connection");
}

/// `health/client.go`: UNIMPLEMENTED ends the health check for good whenever
/// it comes, even after statuses: READY (`setConnectivityState(Ready)`,
/// `return err`), no new Watch on that connection.
#[test]
fn unimplemented_after_statuses_is_ready_for_good() {
    let server = Scripted::start(Some(NOT_SERVING));
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server.target(), Some(&rr_health("")), plaintext());
    wait_state(&ch, TransientFailure);
    *server.st.end_with.lock().unwrap() = Some(12);
    wait_state(&ch, Ready);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(server.watches(), 1, "never reopened");
    assert_eq!(ch.state(), Ready);
    assert_eq!(echo(&mut ch.reader(), false).unwrap(), server.addr.port());
}

/// `orca/producer.go` (`runStream`: `resetBackoff = true` on any report;
/// `backoff.RunF` runs again at once on ErrResetBackoff): a stream that
/// delivered a report (an empty OrcaLoadReport is one) and then ended is
/// opened again at once, every time, not after the 1 s backoff.
#[test]
fn an_orca_stream_that_delivered_a_report_is_reopened_at_once() {
    let server = Scripted::start(Some(SERVING));
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server.target(), Some(&wrr_oob("1s")), plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("the first stream", || {
        server.st.orca_streams.load(Ordering::SeqCst) >= 1
    });
    std::thread::sleep(Duration::from_millis(1200));
    let n = server.st.orca_streams.load(Ordering::SeqCst);
    // 50 ms a stream: some 20 in 1.2 s; on the backoff it would be 2.
    assert!(
        n >= 6,
        "only {n} streams in 1.2 s: the reopen waited a backoff"
    );
}

/// gRPC-Go's health stream is not a call of the channel: it goes through
/// `acBalancerWrapper.NewStream` → `newNonRetryClientStream`, which applies
/// no method config (no timeout), so a service config whose wildcard
/// methodConfig sets a 300 ms timeout does not end the Watch: one Watch,
/// READY throughout.
#[test]
fn a_method_config_timeout_does_not_end_the_watch() {
    let server = start(ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let config = r#"{"loadBalancingConfig":[{"round_robin":{}}],
        "healthCheckConfig":{"serviceName":""},
        "methodConfig":[{"name":[{}],"timeout":"0.3s"}]}"#;
    let (opts, seen) = recorded_plaintext();
    let ch = channel(&rt, &format!("ipv4:{}", server.addr()), Some(config), opts);
    wait_state(&ch, Ready);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        server.health_watches(),
        1,
        "the Watch was ended and reopened"
    );
    let sc = seen.all()[0].sc;
    assert_eq!(seen.states_of(sc), [Connecting, Ready]);
}

/// gRPC-Go counts only the channel's calls for idleness (`idlenessMgr`
/// `OnCallBegin`/`OnCallEnd` in `newClientStream`), not the health stream:
/// with health checking on and no call for the idle timeout, the channel
/// goes IDLE, its connection (and Watch) closed.
#[test]
fn an_open_watch_does_not_keep_the_channel_out_of_idle() {
    let server = start(ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.idle_timeout = Some(Duration::from_millis(300));
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(&rr_health("")),
        opts,
    );
    echo(&mut ch.reader(), true).unwrap();
    wait_state(&ch, Idle);
    wait_until("the connection to close", || server.connections() == 0);
    assert_eq!(server.in_flight(), 0);
}

/// WRR with OOB reports on and no `oobReportingPeriod`: the listener asks
/// for gRPC's default, 10 s (gRFC A58; gRPC-Go's `defaultOOBReportingPeriod`
/// passed as `OOBListenerOptions.ReportInterval`). The ORCA stream, not a
/// call of the channel either, takes no method config timeout.
#[test]
fn the_default_oob_period_is_ten_seconds_and_no_timeout_ends_the_stream() {
    let server = start(ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let config = r#"{"loadBalancingConfig":[{"weighted_round_robin":{
            "enableOobLoadReport":true}}],
        "methodConfig":[{"name":[{}],"timeout":"0.3s"}]}"#;
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(config),
        plaintext(),
    );
    echo(&mut ch.reader(), true).unwrap();
    wait_until("the stream", || server.orca_streams() >= 1);
    assert_eq!(server.orca_interval(), Some(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        server.orca_streams(),
        1,
        "the stream was ended and reopened"
    );
}

/// `health/client.go`: after a stream that delivered no message, the next
/// one waits the backoff *from the failure* (`backoffFunc(ctx, tryCnt-1)`
/// sleeps `backoffStrategy.Backoff(0)`, 0.8-1.2 s, at the top of the retry
/// loop, after the stream ended). A Watch that says nothing for 1.5 s and
/// then ends UNAVAILABLE is followed by the next one at least 0.8 s later,
/// not at once (a backoff counted from the stream's start is long past).
#[test]
fn a_silent_watch_that_fails_late_is_retried_a_backoff_after_its_end() {
    let server = Scripted::start(None);
    server.st.silent_end_ms.store(1500, Ordering::SeqCst);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server.target(), Some(&rr_health("")), plaintext());
    wait_until("the second watch", || server.watches() >= 2);
    let times = server.st.watch_times.lock().unwrap().clone();
    let ended = times[0].1.expect("the first watch ended");
    let gap = times[1].0 - ended;
    assert!(
        gap >= Duration::from_millis(700),
        "the second Watch opened {gap:?} after the first ended (gRPC-Go: the 0.8-1.2 s backoff)"
    );
    drop(ch);
}

/// `orca/producer.go` + `internal/backoff.RunF`: a stream that ended without
/// a report is followed by the next one `backoff(attempt)` after it ended
/// (`timer.Reset(backoff(attempt))` once `f` returns). An ORCA stream that
/// sends nothing for 1.5 s and then ends UNAVAILABLE is followed by the
/// next one at least 0.8 s later, not at once.
#[test]
fn a_silent_orca_stream_that_fails_late_is_retried_a_backoff_after_its_end() {
    let server = Scripted::start(Some(SERVING));
    server.st.silent_end_ms.store(1500, Ordering::SeqCst);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server.target(), Some(&wrr_oob("1s")), plaintext());
    echo(&mut ch.reader(), true).unwrap();
    wait_until("the second stream", || {
        server.st.orca_streams.load(Ordering::SeqCst) >= 2
    });
    let ended = server.st.orca_times.lock().unwrap()[0].1.unwrap();
    // The second stream opened when it was counted (within the poll).
    let gap = Instant::now().saturating_duration_since(ended);
    assert!(
        gap >= Duration::from_millis(700),
        "the second stream opened {gap:?} after the first ended (gRPC-Go: the 0.8-1.2 s backoff)"
    );
}
