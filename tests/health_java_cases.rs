//! grpc-java's client-side health checking tests
//! (`services/src/test/java/io/grpc/protobuf/services/
//! HealthCheckingLoadBalancerFactoryTest.java`), compared with gRPC-Go's
//! `health/client.go` and C-core's `src/core/load_balancing/
//! health_check_client.cc`, against switchyard channels whose service config
//! has `healthCheckConfig`, with real h2 servers on 127.0.0.1 whose Watch
//! streams follow a per-stream script. Only what `health_go_cases.rs`,
//! `managed/health.rs` and `core_lb_e2e_cases.rs` do not already pin.

#[path = "common/mod.rs"]
mod common;
#[path = "common/tokio_host.rs"]
mod tokio_host;

use common::*;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::transport::health_proto::{NOT_SERVING, SERVICE_UNKNOWN, SERVING, UNKNOWN};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};
use tokio_host::Host;

fn rr_hc(service: &str) -> String {
    format!(
        r#"{{"loadBalancingConfig":[{{"round_robin":{{}}}}],
            "healthCheckConfig":{{"serviceName":"{service}"}}}}"#
    )
}

const RR_ONLY: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

// ------------------------------------------------------------ scripted server

/// What one Watch stream does, step by step; when the steps run out without
/// an `End`, the stream stays open (silent) until the client resets it.
#[derive(Clone, Debug)]
enum Step {
    /// A HealthCheckResponse with this status.
    Send(u32),
    /// A raw message body (framed).
    Raw(Vec<u8>),
    Sleep(u64),
    /// Trailers with this grpc-status (and a grpc-message).
    End(u32),
    /// Only valid first: answers with this HTTP status and no gRPC status
    /// (end of stream on the headers), as a proxy might.
    Http(u16),
}

#[derive(Clone, Debug)]
struct WatchRec {
    service: String,
    raw: Vec<u8>,
    headers: http::HeaderMap,
    opened: Instant,
    /// When it ended (either side).
    ended: Option<Instant>,
    /// The client reset it (RST_STREAM) or its connection went.
    reset_by_client: bool,
}

#[derive(Default)]
struct State {
    /// One script per Watch, in order; `default` once they run out.
    plans: Mutex<VecDeque<Vec<Step>>>,
    default: Mutex<Vec<Step>>,
    watches: Mutex<Vec<WatchRec>>,
    connections: AtomicU64,
    echoes: AtomicU64,
}

struct Server {
    addr: SocketAddr,
    st: Arc<State>,
    kill: tokio::sync::watch::Sender<u64>,
    /// Dropped last: the connections go with it.
    _host: Host,
}

impl Server {
    fn start(plans: Vec<Vec<Step>>, default: Vec<Step>) -> Server {
        let st = Arc::new(State::default());
        *st.plans.lock().unwrap() = plans.into();
        *st.default.lock().unwrap() = default;
        let (kill, kill_rx) = tokio::sync::watch::channel(0u64);
        let sh = st.clone();
        let host = Host::start(move |sock| {
            let port = sock.local_addr().unwrap().port();
            serve_conn(sock, sh.clone(), port, kill_rx.clone())
        });
        Server {
            addr: host.addr,
            st,
            kill,
            _host: host,
        }
    }

    fn target(&self) -> String {
        format!("ipv4:{}", self.addr)
    }

    fn watches(&self) -> Vec<WatchRec> {
        self.st.watches.lock().unwrap().clone()
    }

    fn n(&self) -> usize {
        self.st.watches.lock().unwrap().len()
    }

    fn services(&self) -> Vec<String> {
        self.watches().into_iter().map(|w| w.service).collect()
    }

    fn connections(&self) -> u64 {
        self.st.connections.load(Ordering::SeqCst)
    }

    /// Drops every open connection (TCP closed without GOAWAY).
    fn kill_connections(&self) {
        self.kill.send_modify(|g| *g += 1);
    }
}

fn frame(msg: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out.into()
}

fn grpc_headers() -> http::Response<()> {
    let mut r = http::Response::new(());
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    r
}

async fn serve_conn(
    sock: tokio::net::TcpStream,
    st: Arc<State>,
    port: u16,
    mut kill: tokio::sync::watch::Receiver<u64>,
) {
    let Ok(mut conn) = h2::server::handshake(sock).await else {
        return;
    };
    st.connections.fetch_add(1, Ordering::SeqCst);
    kill.borrow_and_update();
    let mut tasks = Vec::new();
    loop {
        tokio::select! {
            r = conn.accept() => match r {
                Some(Ok((req, respond))) => {
                    tasks.push(tokio::spawn(serve_stream(req, respond, st.clone(), port)));
                }
                _ => break,
            },
            _ = kill.changed() => break,
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// Decodes a HealthCheckRequest by hand (field 1, wire type 2), so the
/// client's own codec is not what checks the client.
fn decode_service(msg: &[u8]) -> String {
    if msg.is_empty() {
        return String::new();
    }
    assert_eq!(msg[0], 0x0a, "field 1, length-delimited: {msg:?}");
    let (mut len, mut shift, mut i) = (0usize, 0, 1);
    loop {
        let b = msg[i];
        len |= ((b & 0x7f) as usize) << shift;
        shift += 7;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    assert_eq!(msg.len(), i + len, "one field only: {msg:?}");
    String::from_utf8(msg[i..].to_vec()).unwrap()
}

async fn serve_stream(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    st: Arc<State>,
    port: u16,
) {
    let (parts, mut body) = req.into_parts();
    let mut raw = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        raw.extend_from_slice(&chunk);
    }
    if parts.uri.path() != "/grpc.health.v1.Health/Watch" {
        st.echoes.fetch_add(1, Ordering::SeqCst);
        let Ok(mut stream) = respond.send_response(grpc_headers(), false) else {
            return;
        };
        let mut out = raw.get(5..).unwrap_or_default().to_vec();
        out.extend_from_slice(format!("|port={port}").as_bytes());
        let _ = stream.send_data(frame(&out), false);
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        let _ = stream.send_trailers(t);
        return;
    }
    let msg = raw.get(5..).unwrap_or_default().to_vec();
    let idx = {
        let mut w = st.watches.lock().unwrap();
        w.push(WatchRec {
            service: decode_service(&msg),
            raw: raw.clone(),
            headers: parts.headers.clone(),
            opened: Instant::now(),
            ended: None,
            reset_by_client: false,
        });
        w.len() - 1
    };
    let plan = st
        .plans
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| st.default.lock().unwrap().clone());
    // Marks the record ended when the task ends (aborted with the
    // connection included).
    struct Mark(Arc<State>, usize, bool);
    impl Drop for Mark {
        fn drop(&mut self) {
            let mut w = self.0.watches.lock().unwrap();
            if w[self.1].ended.is_none() {
                w[self.1].ended = Some(Instant::now());
                w[self.1].reset_by_client = !self.2;
            }
        }
    }
    let mut mark = Mark(st.clone(), idx, false);
    if let Some(Step::Http(code)) = plan.first() {
        let mut r = http::Response::new(());
        *r.status_mut() = http::StatusCode::from_u16(*code).unwrap();
        mark.2 = true;
        let _ = respond.send_response(r, true);
        return;
    }
    let Ok(mut stream) = respond.send_response(grpc_headers(), false) else {
        return;
    };
    for step in plan {
        let ok = match step {
            Step::Send(s) => stream
                .send_data(
                    frame(&switchyard::transport::health_proto::encode_response(s)),
                    false,
                )
                .is_ok(),
            Step::Raw(m) => stream.send_data(frame(&m), false).is_ok(),
            Step::Sleep(ms) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => true,
                    _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => false,
                }
            }
            Step::End(code) => {
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", code.into());
                t.insert(
                    "grpc-message",
                    http::HeaderValue::from_static("ended by test"),
                );
                mark.2 = true;
                let _ = stream.send_trailers(t);
                return;
            }
            Step::Http(_) => unreachable!("first only"),
        };
        if !ok {
            return;
        }
    }
    // Silent until the client resets the stream.
    let _ = std::future::poll_fn(|cx| stream.poll_reset(cx)).await;
}

// ------------------------------------------------------------------ helpers

fn sc_states(seen: &Transitions) -> Vec<ConnectivityState> {
    match seen.all().first() {
        Some(first) => seen.states_of(first.sc),
        None => Vec::new(),
    }
}

fn sc_errors(seen: &Transitions) -> Vec<(ConnectivityState, Option<String>)> {
    let all = seen.all();
    let sc = all[0].sc;
    all.into_iter()
        .filter(|s| s.sc == sc)
        .map(|s| (s.state, s.error))
        .collect()
}

fn wait_watches(s: &Server, n: usize) {
    wait_until(&format!("{n} watches"), || s.n() >= n);
}

fn wait_ended(s: &Server, i: usize) -> WatchRec {
    wait_until(&format!("watch {i} to end"), || {
        s.watches().get(i).is_some_and(|w| w.ended.is_some())
    });
    s.watches()[i].clone()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn fail_fast(ch: &Channel) -> Result<UnaryResponse, Status> {
    ch.reader().unary(
        "/echo.Echo/Unary",
        b"ping",
        &CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(3)),
            wait_for_ready: Some(false),
            // ring_hash needs one (switchyard has no random hash).
            hash: Some(42),
            ..Default::default()
        },
    )
}

// -------------------------------------------------------------------- tests

/// typicalWorkflow: the Watch asks for "FooService"; a first response of
/// UNKNOWN (an empty message on the wire) is TRANSIENT_FAILURE, not READY;
/// SERVING is READY; NOT_SERVING and SERVICE_UNKNOWN are TRANSIENT_FAILURE;
/// one stream carries them all, the subchannel's error naming the status.
#[test]
fn typical_workflow_maps_each_status_on_one_watch() {
    let server = Server::start(
        vec![vec![
            Step::Send(UNKNOWN),
            Step::Sleep(300),
            Step::Send(SERVING),
            Step::Sleep(300),
            Step::Send(SERVICE_UNKNOWN),
            Step::Sleep(300),
            Step::Send(SERVING),
        ]],
        vec![],
    );
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let ch = channel(&rt, &server.target(), Some(&rr_hc("FooService")), opts);
    wait_until("the whole script", || sc_states(&seen).len() >= 5);
    std::thread::sleep(Duration::from_millis(200));
    let got = sc_errors(&seen);
    let states: Vec<_> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        states,
        [Connecting, TransientFailure, Ready, TransientFailure, Ready]
    );
    assert!(got[1].1.as_deref().unwrap().contains("UNKNOWN"), "{got:?}");
    assert!(
        got[3].1.as_deref().unwrap().contains("SERVICE_UNKNOWN"),
        "{got:?}"
    );
    assert_eq!(server.services(), ["FooService"]);
    assert_eq!(ch.state(), Ready);
}

/// typicalWorkflow (UNKNOWN → NOT_SERVING → SERVICE_UNKNOWN): grpc-java
/// delivers every non-SERVING response as a new TRANSIENT_FAILURE whose
/// description names that response's status ("Health-check service
/// responded NOT_SERVING for 'FooService'"); gRPC-Go's health client calls
/// `setConnectivityState(TransientFailure, "...status=X")` on each, and its
/// pick_first builds a new failing picker with that error each time;
/// C-core notifies its watchers on each. So after NOT_SERVING then
/// SERVICE_UNKNOWN, the subchannel's (and the failing picker's) error says
/// SERVICE_UNKNOWN.
#[test]
fn a_new_unhealthy_status_updates_the_failure_it_reports() {
    let server = Server::start(
        vec![vec![
            Step::Send(NOT_SERVING),
            Step::Sleep(400),
            Step::Send(SERVICE_UNKNOWN),
        ]],
        vec![],
    );
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let ch = channel(&rt, &server.target(), Some(&rr_hc("FooService")), opts);
    wait_state(&ch, TransientFailure);
    assert!(
        pick_error(&ch).contains("NOT_SERVING"),
        "{}",
        pick_error(&ch)
    );
    std::thread::sleep(Duration::from_millis(1000));
    let got = sc_errors(&seen);
    let last = got.last().unwrap().1.clone().unwrap_or_default();
    let e = pick_error(&ch);
    assert!(
        last.contains("SERVICE_UNKNOWN") && e.contains("SERVICE_UNKNOWN"),
        "the failing picker still says: {e}; the subchannel's reports: {got:?}"
    );
}

/// backoffRetriesWhenServerErroneouslyClosesRpcBeforeAnyResponse: the
/// server ends the Watch with OK before any response: TRANSIENT_FAILURE,
/// and a new Watch after the backoff (1 s); that one ends CANCELLED:
/// TRANSIENT_FAILURE saying so, and the next Watch after the grown backoff
/// (1.6 s ±20 %); that one answers SERVING: READY. CONNECTING before each
/// new Watch; one connection throughout.
#[test]
fn a_watch_closed_ok_or_cancelled_before_any_response_backs_off_and_grows() {
    let server = Server::start(
        vec![vec![Step::End(0)], vec![Step::End(1)]],
        vec![Step::Send(SERVING)],
    );
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let ch = channel(&rt, &server.target(), Some(&rr_hc("TeeService")), opts);
    wait_state(&ch, Ready);
    let w = server.watches();
    assert_eq!(w.len(), 3);
    let gap1 = secs(w[1].opened - w[0].ended.unwrap());
    let gap2 = secs(w[2].opened - w[1].ended.unwrap());
    assert!((0.7..1.5).contains(&gap1), "first backoff {gap1:.3}s");
    assert!((1.2..2.3).contains(&gap2), "second backoff {gap2:.3}s");
    let got = sc_errors(&seen);
    let states: Vec<_> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        states,
        [
            Connecting,
            TransientFailure,
            Connecting,
            TransientFailure,
            Connecting,
            Ready
        ]
    );
    let second = got[3].1.as_deref().unwrap();
    assert!(second.contains("Cancelled"), "{second}");
    assert_eq!(server.services(), ["TeeService"; 3]);
    assert_eq!(server.connections(), 1);
}

/// Java's `handleStreamClosed`, Go's health client and C-core's stream
/// client: any end but UNIMPLEMENTED is ill health and is retried (none
/// disables health checking), the error saying which code.
#[test]
fn every_other_status_is_retried_and_names_its_code() {
    let codes = [
        (2, "Unknown"),
        (4, "DeadlineExceeded"),
        (5, "NotFound"),
        (7, "PermissionDenied"),
        (8, "ResourceExhausted"),
        (13, "Internal"),
        (14, "Unavailable"),
        (16, "Unauthenticated"),
    ];
    let rt = Runtime::new().unwrap();
    let runs: Vec<_> = codes
        .iter()
        .map(|&(code, _)| {
            let server = Server::start(vec![vec![Step::End(code)]], vec![Step::Send(SERVING)]);
            let (opts, seen) = recorded_plaintext();
            let ch = channel(&rt, &server.target(), Some(&rr_hc("x")), opts);
            (server, seen, ch)
        })
        .collect();
    for ((server, seen, ch), (code, name)) in runs.iter().zip(codes) {
        wait_state(ch, Ready);
        assert_eq!(server.n(), 2, "code {code}");
        let got = sc_errors(seen);
        let states: Vec<_> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            states,
            [Connecting, TransientFailure, Connecting, Ready],
            "code {code}"
        );
        let e = got[1].1.as_deref().unwrap();
        assert!(e.contains(name), "code {code}: {e}");
    }
}

/// serverRespondResetsBackoff: a Watch fails before any response (backoff
/// 1 s); the next answers SERVING, then fails: retried at once (CONNECTING);
/// that one fails with no response: the backoff starts over at its first
/// value (1 s), not the grown one (1.6 s, 2.56 s).
#[test]
fn a_response_resets_the_backoff() {
    let server = Server::start(
        vec![
            vec![Step::End(1)],
            vec![Step::Send(SERVING), Step::Sleep(300), Step::End(14)],
            vec![Step::End(14)],
        ],
        vec![Step::Send(SERVING)],
    );
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let _ch = channel(&rt, &server.target(), Some(&rr_hc("TeeService")), opts);
    wait_watches(&server, 4);
    let w = server.watches();
    let gap1 = secs(w[1].opened - w[0].ended.unwrap());
    let gap2 = secs(w[2].opened - w[1].ended.unwrap());
    let gap3 = secs(w[3].opened - w[2].ended.unwrap());
    assert!((0.7..1.5).contains(&gap1), "first backoff {gap1:.3}s");
    assert!(gap2 < 0.3, "after a response: at once, not {gap2:.3}s");
    assert!(
        (0.7..1.3).contains(&gap3),
        "the backoff after the reset: {gap3:.3}s (want the first value, 1 s)"
    );
    wait_until("READY again", || {
        sc_states(&seen).last() == Some(&Ready) && sc_states(&seen).len() >= 9
    });
    assert_eq!(
        sc_states(&seen),
        [
            Connecting,
            TransientFailure,
            Connecting,
            Ready,
            TransientFailure,
            Connecting,
            TransientFailure,
            Connecting,
            Ready
        ]
    );
}

/// healthCheckDisabledWhenServiceNotImplemented: UNIMPLEMENTED (here after
/// the response headers, not trailers-only) disables health checking:
/// READY, no new Watch on that connection; a new connection resets that:
/// its Watch runs as normal (SERVICE_UNKNOWN: TRANSIENT_FAILURE).
#[test]
fn unimplemented_disables_health_checks_until_the_next_connection() {
    let server = Server::start(
        vec![vec![Step::End(12)], vec![Step::Send(SERVICE_UNKNOWN)]],
        vec![],
    );
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let mut opts = opts;
    opts.backoff.initial = Duration::from_millis(50);
    opts.backoff.max = Duration::from_millis(100);
    let ch = channel(&rt, &server.target(), Some(&rr_hc("BarService")), opts);
    wait_state(&ch, Ready);
    assert_eq!(sc_states(&seen), [Connecting, Ready]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(server.n(), 1, "no retry after UNIMPLEMENTED");
    assert!(fail_fast(&ch).is_ok());
    server.kill_connections();
    wait_until("the second connection's watch", || server.n() >= 2);
    wait_state(&ch, TransientFailure);
    assert!(
        pick_error(&ch).contains("SERVICE_UNKNOWN"),
        "{}",
        pick_error(&ch)
    );
    assert_eq!(server.services(), ["BarService", "BarService"]);
    assert_eq!(server.connections(), 2);
}

/// serviceConfigChangesServiceNameWhenRpcActive: the same name again changes
/// nothing; a new name cancels the running Watch and starts one with the
/// new name at once, the subchannel staying READY (no CONNECTING) while the
/// new one has not answered, calls still served.
#[test]
fn a_new_service_name_restarts_an_active_watch_staying_ready() {
    let server = Server::start(vec![vec![Step::Send(SERVING)]], vec![]);
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let ch = channel(&rt, &server.target(), Some(&rr_hc("TeeService")), opts);
    wait_state(&ch, Ready);
    ch.update_service_config(&rr_hc("TeeService")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.n(), 1, "the same name: no new Watch");
    assert!(server.watches()[0].ended.is_none());
    let at = Instant::now();
    ch.update_service_config(&rr_hc("FooService")).unwrap();
    wait_watches(&server, 2);
    let w = server.watches();
    assert!(secs(w[1].opened - at) < 0.5, "started at once");
    assert_eq!(server.services(), ["TeeService", "FooService"]);
    let old = wait_ended(&server, 0);
    assert!(old.reset_by_client, "the old Watch was cancelled");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sc_states(&seen), [Connecting, Ready], "stays READY");
    assert!(fail_fast(&ch).is_ok());
}

/// serviceConfigChangesServiceNameWhenRetryPending: after a Watch closed
/// with no response (retry due in 1 s), the same name changes nothing, and a
/// new name cancels the retry timer and starts a Watch with it at once.
#[test]
fn a_new_service_name_while_a_retry_is_pending_starts_at_once() {
    let server = Server::start(vec![vec![Step::End(0)]], vec![]);
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server.target(),
        Some(&rr_hc("TeeService")),
        plaintext(),
    );
    wait_state(&ch, TransientFailure);
    let ended = wait_ended(&server, 0).ended.unwrap();
    ch.update_service_config(&rr_hc("TeeService")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.n(), 1, "the same name: nothing happens");
    ch.update_service_config(&rr_hc("FooService")).unwrap();
    wait_watches(&server, 2);
    let w = server.watches();
    assert!(
        secs(w[1].opened - ended) < 0.7,
        "not on the old retry timer: {:.3}s",
        secs(w[1].opened - ended)
    );
    assert_eq!(server.services(), ["TeeService", "FooService"]);
    // The old retry timer was cancelled: no third Watch.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(server.n(), 2);
}

/// serviceConfigChangesServiceNameWhenRetryPending ("Concluded CONNECTING
/// state"): grpc-java's `startRpc` goes CONNECTING unless the subchannel
/// is READY; C-core's new HealthChecker for the new name starts CONNECTING
/// (`state_(producer_->state_ == READY ? CONNECTING : ...)`). So an
/// unhealthy subchannel whose service name changes is CONNECTING until the
/// new Watch answers, not TRANSIENT_FAILURE with the old name's error.
/// (gRPC-Go differs from both: its health listener reads the config when
/// the connection is made and does not restart on a new one.)
#[test]
fn a_new_service_name_on_an_unhealthy_subchannel_is_connecting_until_it_answers() {
    let server = Server::start(
        vec![
            vec![Step::Send(NOT_SERVING)],
            vec![Step::Sleep(1500), Step::Send(SERVING)],
        ],
        vec![],
    );
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let ch = channel(&rt, &server.target(), Some(&rr_hc("TeeService")), opts);
    wait_state(&ch, TransientFailure);
    ch.update_service_config(&rr_hc("FooService")).unwrap();
    wait_watches(&server, 2);
    std::thread::sleep(Duration::from_millis(500));
    let got = sc_errors(&seen);
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        [Connecting, TransientFailure, Connecting],
        "while the new name's Watch has not answered: {got:?}"
    );
    wait_state(&ch, Ready);
}

/// serviceConfigDisablesHealthCheckWhenRpcActive: healthCheckConfig goes
/// away while the Watch has not answered: the Watch is cancelled, the
/// subchannel READY, no new Watch.
#[test]
fn removing_health_check_config_cancels_the_active_watch_and_is_ready() {
    let server = Server::start(vec![], vec![]);
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let ch = channel(&rt, &server.target(), Some(&rr_hc("TeeService")), opts);
    wait_watches(&server, 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ch.state(), Connecting);
    ch.update_service_config(RR_ONLY).unwrap();
    wait_state(&ch, Ready);
    let w = wait_ended(&server, 0);
    assert!(w.reset_by_client);
    assert_eq!(sc_states(&seen), [Connecting, Ready]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.n(), 1);
    assert!(fail_fast(&ch).is_ok());
}

/// serviceConfigDisablesHealthCheckWhenRetryPending: healthCheckConfig goes
/// away while a retry is pending: the timer is cancelled (no new Watch), the
/// subchannel READY.
#[test]
fn removing_health_check_config_cancels_a_pending_retry_and_is_ready() {
    let server = Server::start(vec![vec![Step::End(0)]], vec![Step::Send(SERVING)]);
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let ch = channel(&rt, &server.target(), Some(&rr_hc("TeeService")), opts);
    wait_state(&ch, TransientFailure);
    ch.update_service_config(RR_ONLY).unwrap();
    wait_state(&ch, Ready);
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(server.n(), 1, "the retry was cancelled");
    assert_eq!(sc_states(&seen), [Connecting, TransientFailure, Ready]);
}

/// serviceConfigHasNoHealthCheckingInitiallyButDoesLater: health checking
/// turned on for a READY subchannel starts a Watch on it; the subchannel
/// stays READY (calls served) until a verdict says otherwise.
#[test]
fn enabling_health_checks_on_a_ready_subchannel_stays_ready_until_a_verdict() {
    let server = Server::start(
        vec![vec![Step::Sleep(800), Step::Send(NOT_SERVING)]],
        vec![],
    );
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let ch = channel(&rt, &server.target(), Some(RR_ONLY), opts);
    wait_state(&ch, Ready);
    assert_eq!(server.n(), 0);
    ch.update_service_config(&rr_hc("FooService")).unwrap();
    wait_watches(&server, 1);
    assert!(
        fail_fast(&ch).is_ok(),
        "still READY while the Watch is silent"
    );
    assert_eq!(sc_states(&seen), [Connecting, Ready]);
    wait_state(&ch, TransientFailure);
    assert_eq!(sc_states(&seen), [Connecting, Ready, TransientFailure]);
    assert_eq!(server.services(), ["FooService"]);
}

/// The Watch request as the server sees it: `/grpc.health.v1.Health/Watch`,
/// `application/grpc`, `te: trailers`, no deadline, one uncompressed
/// HealthCheckRequest whose service is exactly the configured name (the
/// empty name an empty message, as proto3 encodes it; a JSON escape
/// decoded; a name past 127 bytes with a two-byte length).
#[test]
fn the_watch_request_carries_the_exact_service_name() {
    let long = "s".repeat(300);
    let names: Vec<(&str, String)> = vec![
        ("", String::new()),
        ("FooService", "FooService".into()),
        ("grpc.health.v1.Health", "grpc.health.v1.Health".into()),
        ("caf\\u00e9/\u{1F600}", "café/\u{1F600}".into()),
        ("a\\\"b", "a\"b".into()),
        (long.as_str(), long.clone()),
    ];
    let rt = Runtime::new().unwrap();
    let runs: Vec<_> = names
        .iter()
        .map(|(json, _)| {
            let server = Server::start(vec![], vec![Step::Send(SERVING)]);
            let ch = channel(&rt, &server.target(), Some(&rr_hc(json)), plaintext());
            (server, ch)
        })
        .collect();
    for ((server, ch), (json, want)) in runs.iter().zip(&names) {
        wait_state(ch, Ready);
        let w = &server.watches()[0];
        assert_eq!(&w.service, want, "config {json:?}");
        let h = &w.headers;
        assert_eq!(h.get("content-type").unwrap(), "application/grpc");
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert!(h.get("grpc-timeout").is_none(), "{h:?}");
        assert_eq!(w.raw[0], 0, "uncompressed");
        let len = u32::from_be_bytes(w.raw[1..5].try_into().unwrap()) as usize;
        assert_eq!(w.raw.len(), 5 + len, "one message");
        if want.is_empty() {
            assert!(
                w.raw[5..].is_empty() || w.raw[5..] == [0x0a, 0x00],
                "{:?}",
                w.raw
            );
        }
    }
}

/// A HealthCheckResponse that does not parse: grpc-java's call fails in
/// its marshaller (no response counted: backoff), gRPC-Go's RecvMsg fails
/// (TRANSIENT_FAILURE, backoff), C-core goes TRANSIENT_FAILURE "cannot
/// parse health check response" and cancels the call. Here: the client
/// cancels the Watch, TRANSIENT_FAILURE, the next Watch after the backoff.
#[test]
fn an_unparsable_response_is_ill_health_and_retried_after_the_backoff() {
    let server = Server::start(
        vec![vec![Step::Raw(vec![0x08, 0xff])]],
        vec![Step::Send(SERVING)],
    );
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let ch = channel(&rt, &server.target(), Some(&rr_hc("")), opts);
    wait_state(&ch, TransientFailure);
    let w0 = wait_ended(&server, 0);
    assert!(w0.reset_by_client, "the client ends the unparsable Watch");
    wait_state(&ch, Ready);
    let w = server.watches();
    let gap = secs(w[1].opened - w0.ended.unwrap());
    assert!(gap >= 0.7, "retried after {gap:.3}s: no backoff");
    assert_eq!(
        sc_states(&seen),
        [Connecting, TransientFailure, Connecting, Ready]
    );
}

/// Closing the channel while a retry is pending: no Watch (nor connection)
/// afterwards (grpc-java's balancerShutdown: "No more health check call is
/// made or scheduled").
#[test]
fn closing_the_channel_cancels_a_pending_retry() {
    let server = Server::start(vec![vec![Step::End(14)]], vec![Step::Send(SERVING)]);
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server.target(),
        Some(&rr_hc("TeeService")),
        plaintext(),
    );
    wait_state(&ch, TransientFailure);
    ch.close();
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(server.n(), 1);
    assert_eq!(server.connections(), 1);
}

/// After UNIMPLEMENTED, a new service name on the same connection. The
/// implementations disagree: grpc-java keeps health checking disabled until
/// the connection is lost (`disabled` is reset only when the raw state
/// leaves READY; `setServiceName` → `adjustHealthCheck` sees `disabled`);
/// C-core's new HealthChecker for the new name opens a new stream; gRPC-Go
/// does not restart its health check on a config change at all. Switchyard
/// asks again with the new name (as C-core): pinned here.
#[test]
fn a_new_service_name_after_unimplemented_asks_again_on_the_same_connection() {
    let server = Server::start(vec![vec![Step::End(12)]], vec![Step::Send(NOT_SERVING)]);
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &server.target(),
        Some(&rr_hc("BarService")),
        plaintext(),
    );
    wait_state(&ch, Ready);
    ch.update_service_config(&rr_hc("FooService")).unwrap();
    wait_watches(&server, 2);
    wait_state(&ch, TransientFailure);
    assert_eq!(server.services(), ["BarService", "FooService"]);
    assert_eq!(server.connections(), 1);
}

/// Responses parsed as protobuf: unknown fields are skipped, the last
/// `status` wins, an explicit 0 is UNKNOWN (TRANSIENT_FAILURE), as grpc-java,
/// gRPC-Go and C-core (upb) parse them.
#[test]
fn responses_are_parsed_as_protobuf() {
    let server = Server::start(
        vec![vec![
            // status=NOT_SERVING, status=SERVING: the last wins.
            Step::Raw(vec![0x08, 0x02, 0x08, 0x01]),
            Step::Sleep(300),
            // status=0 explicitly: UNKNOWN.
            Step::Raw(vec![0x08, 0x00]),
            Step::Sleep(300),
            // An unknown varint field 2 and a length-delimited field 3
            // around status=SERVING.
            Step::Raw(vec![0x10, 0x05, 0x08, 0x01, 0x1a, 0x02, 0x61, 0x62]),
        ]],
        vec![],
    );
    let rt = Runtime::new().unwrap();
    let (opts, seen) = recorded_plaintext();
    let ch = channel(&rt, &server.target(), Some(&rr_hc("")), opts);
    wait_until("three verdicts", || sc_states(&seen).len() >= 4);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        sc_states(&seen),
        [Connecting, Ready, TransientFailure, Ready]
    );
    assert_eq!(server.n(), 1);
    assert_eq!(ch.state(), Ready);
}

/// A Watch answered with HTTP 404 and no grpc-status (a proxy without the
/// route): gRPC's HTTP-to-status mapping makes that UNIMPLEMENTED, so
/// health checking is off (READY, no retry); an HTTP 503 maps to
/// UNAVAILABLE: ill health, retried after the backoff.
#[test]
fn http_statuses_map_to_grpc_codes_for_the_watch() {
    let s404 = Server::start(vec![vec![Step::Http(404)]], vec![Step::Send(NOT_SERVING)]);
    let s503 = Server::start(vec![vec![Step::Http(503)]], vec![Step::Send(SERVING)]);
    let rt = Runtime::new().unwrap();
    let (o404, seen404) = recorded_plaintext();
    let (o503, seen503) = recorded_plaintext();
    let c404 = channel(&rt, &s404.target(), Some(&rr_hc("")), o404);
    let c503 = channel(&rt, &s503.target(), Some(&rr_hc("")), o503);
    wait_state(&c404, Ready);
    wait_state(&c503, Ready);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s404.n(), 1, "404 is UNIMPLEMENTED: never retried");
    assert_eq!(sc_states(&seen404), [Connecting, Ready]);
    assert_eq!(s503.n(), 2);
    let got = sc_errors(&seen503);
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        [Connecting, TransientFailure, Connecting, Ready]
    );
    assert!(
        got[1].1.as_deref().unwrap().contains("Unavailable"),
        "{got:?}"
    );
}

fn policy_configs() -> Vec<(&'static str, bool)> {
    vec![
        (r#"{"loadBalancingConfig":[{"round_robin":{}}]"#, true),
        (
            r#"{"loadBalancingConfig":[{"weighted_round_robin":{}}]"#,
            true,
        ),
        (
            r#"{"loadBalancingConfig":[{"least_request_experimental":{}}]"#,
            true,
        ),
        (
            r#"{"loadBalancingConfig":[{"ring_hash_experimental":{}}]"#,
            true,
        ),
        (r#"{"loadBalancingConfig":[{"random":{}}]"#, true),
        (
            r#"{"loadBalancingConfig":[{"outlier_detection_experimental":{"childPolicy":[{"round_robin":{}}]}}]"#,
            true,
        ),
        (r#"{"loadBalancingConfig":[{"pick_first":{}}]"#, false),
        (
            r#"{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]"#,
            false,
        ),
        (
            r#"{"loadBalancingConfig":[{"outlier_detection_experimental":{"childPolicy":[{"pick_first":{}}]}}]"#,
            false,
        ),
    ]
}

/// gRFC A17: "The pick_first LB policy will unconditionally set the channel
/// arg to inhibit health checking"; gRPC-Go's round_robin, WRR,
/// least_request and ring_hash turn on their pick_first children's health
/// listener (`pickfirst.EnableHealthListener`), a top-level (or
/// outlier_detection's) pick_first does not. With a NOT_SERVING backend:
/// the policies that check fail a fail-fast call with the health error, the
/// ones that do not serve it and open no Watch.
#[test]
fn health_checking_applies_under_every_policy_but_pick_first() {
    let rt = Runtime::new().unwrap();
    for (lb, checks) in policy_configs() {
        let server = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap();
        server.set_serving("hc", NOT_SERVING);
        let config = format!(r#"{lb},"healthCheckConfig":{{"serviceName":"hc"}}}}"#);
        let ch = channel(
            &rt,
            &format!("ipv4:{}", server.addr()),
            Some(&config),
            plaintext(),
        );
        let r = fail_fast(&ch);
        if checks {
            let e = r.expect_err(lb);
            assert_eq!(e.code(), Code::Unavailable, "{lb}: {e:?}");
            assert!(e.message().contains("NOT_SERVING"), "{lb}: {e:?}");
            assert!(server.health_watches() >= 1, "{lb}");
        } else {
            assert!(r.is_ok(), "{lb}: {r:?}");
            assert_eq!(server.health_watches(), 0, "{lb}");
        }
        ch.close();
    }
}
