//! gRPC C++'s end-to-end tests, client-side unary behaviour, ported
//! onto switchyard's public API with real servers on 127.0.0.1
//! (grpc/grpc test/cpp/end2end/end2end_test.cc, service_config_end2end_test.cc,
//! flaky_network_test.cc, shutdown_test.cc).
//!
//! flaky_network_test.cc's `iptables` / `ip addr` network flaps are
//! approximated by a TCP proxy on 127.0.0.1 that can stop forwarding
//! (holding the bytes, as TCP retransmission would deliver them once the
//! network is back) and add a delay per chunk.
//!
//! Not portable (no switchyard API): context.peer(), per-call authority
//! (SimpleRpcWithHost), per-call credentials, request
//! compression, cancel before the call starts (a unary call starts when
//! created), server-side limits (RpcMaxMessageSize is the server's limit),
//! GetServiceConfigJSON (method_config is used instead), streaming calls.
//!
//! Already pinned elsewhere, not redone: ChannelState / ChannelStateTimeout
//! (core_e2e_cases.rs connectivity_watch_follows_c_core), HugeResponse
//! (large_payloads_round_trip_byte_exact), empty messages
//! (grpc_docs_cases.rs zero limits), ClientCancelsRpc / CancelRpcAfterStart
//! (cancel_deadline_go_cases.rs caller_cancel_*: CANCELLED; the message is
//! switchyard's "call cancelled", C++'s "CANCELLED", gRPC-Go's "context
//! canceled"), RpcDeadlineExpires / RpcLongDeadline / EchoDeadline*
//! (cancel_deadline_go_cases.rs, end2end_go_cases.rs), the service-config
//! cases NoServiceConfigUpdateAfterValid* and NoServiceConfigAfterInvalid
//! (resolver_api.rs), InvalidDefaultServiceConfigTestWithValidServiceConfig
//! (switchyard heals on purpose where C++ stays lame and gRPC-Go / grpc-java
//! refuse the channel: resolver_api.rs
//! an_invalid_default_config_still_builds_the_resolver_which_can_heal_it),
//! wait-for-ready with an invalid first config (fails at once as gRPC-Go;
//! C-core queues it: balancer_switching_go_cases.rs
//! a_queued_wait_for_ready_rpc_fails_on_an_invalid_first_config).

#[path = "common/tokio_host.rs"]
mod tokio_host;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use switchyard::backoff::BackoffConfig;
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverState};
use switchyard::transport::Keepalive;
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};
use tokio_host::Host;

const ECHO: &str = "/echo.Echo/Unary";
const PF: &str = r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#;

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(v)
}

fn b64_decode(v: &str) -> Vec<u8> {
    let t = v.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(t)
        .unwrap_or_else(|e| panic!("{v:?} is not base64: {e}"))
}

fn plaintext() -> ChannelOptions {
    ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    }
}

fn start_server(addr: SocketAddr) -> TestServer {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TestServer::start(Listen::Tcp(addr), ServerOptions::default()) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot start on {addr}: {e}"),
        }
    }
}

fn echo_server() -> TestServer {
    start_server("127.0.0.1:0".parse().unwrap())
}

fn md(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn opts(
    timeout: Option<Duration>,
    wait_for_ready: bool,
    metadata: &[(String, String)],
) -> CallOptions<'_> {
    CallOptions {
        deadline: timeout.map(|t| Instant::now() + t),
        wait_for_ready: Some(wait_for_ready),
        metadata,
        ..Default::default()
    }
}

fn rpc(ch: &Channel, timeout_ms: u64, wfr: bool) -> Result<UnaryResponse, Status> {
    ch.reader().unary(
        ECHO,
        b"Hello",
        &opts(Some(Duration::from_millis(timeout_ms)), wfr, &[]),
    )
}

fn wait_not_ready(ch: &Channel, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let s = ch.get_state(false);
        if s != Ready {
            return true;
        }
        if ch.wait_for_state_change(s, Some(deadline)).is_none() {
            return false;
        }
    }
}

fn wait_ready(ch: &Channel, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let s = ch.get_state(true);
        if s == Ready {
            return true;
        }
        if ch.wait_for_state_change(s, Some(deadline)).is_none() {
            return false;
        }
    }
}

// ---------------------------------------------------------------------------
// A scripted h2 server answering every call trailers-only with given fields.

fn put(map: &mut HeaderMap, k: &str, v: &str) {
    map.append(
        HeaderName::from_bytes(k.as_bytes()).unwrap(),
        HeaderValue::from_str(v).unwrap(),
    );
}

fn frame_msg(msg: &[u8]) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    Bytes::from(v)
}

/// What the scripted server answers a request with (by its path and
/// headers): `Ok(message)` (full answer, grpc-status 0), `Err(fields)`
/// (trailers-only with these fields).
type Answer = Result<Vec<u8>, Vec<(String, String)>>;

fn scripted(reply: impl Fn(&http::request::Parts) -> Answer + Send + Sync + 'static) -> Host {
    let reply = Arc::new(reply);
    Host::start(move |sock| {
        let reply = reply.clone();
        async move {
            let Ok(mut conn) = h2::server::handshake(sock).await else {
                return;
            };
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                let (parts, mut body) = req.into_parts();
                let answer = reply(&parts);
                tokio::spawn(async move {
                    while let Some(chunk) = body.data().await {
                        let Ok(chunk) = chunk else { break };
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    let mut resp = Response::new(());
                    put(resp.headers_mut(), "content-type", "application/grpc");
                    match answer {
                        Err(fields) => {
                            for (k, v) in &fields {
                                put(resp.headers_mut(), k, v);
                            }
                            let _ = respond.send_response(resp, true);
                        }
                        Ok(msg) => {
                            let Ok(mut s) = respond.send_response(resp, false) else {
                                return;
                            };
                            let _ = s.send_data(frame_msg(&msg), false);
                            let mut t = HeaderMap::new();
                            put(&mut t, "grpc-status", "0");
                            let _ = s.send_trailers(t);
                        }
                    }
                });
            }
        }
    })
}

// ---------------------------------------------------------------------------
// A TCP proxy that can hold its traffic (a network black hole that TCP
// retransmission heals) or delay it.

struct Proxy {
    addr: SocketAddr,
    paused: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// New connections are closed at once (no route: the interface is down).
    refuse: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let refuse = Arc::new(AtomicBool::new(false));
        let (p, d, s, no) = (
            paused.clone(),
            delay_ms.clone(),
            stop.clone(),
            refuse.clone(),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) if no.load(Ordering::SeqCst) => drop(c),
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let Ok(u) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        for (from, to) in [(c.try_clone().unwrap(), u.try_clone().unwrap()), (u, c)]
                        {
                            let (p, d, s) = (p.clone(), d.clone(), s.clone());
                            std::thread::spawn(move || pump(from, to, p, d, s));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            addr,
            paused,
            delay_ms,
            stop,
            refuse,
        }
    }

    fn target(&self) -> String {
        format!("ipv4:{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    paused: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::SeqCst) {
            let _ = from.shutdown(std::net::Shutdown::Both);
            let _ = to.shutdown(std::net::Shutdown::Both);
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => {
                while paused.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let d = delay_ms.load(Ordering::SeqCst);
                if d > 0 {
                    std::thread::sleep(Duration::from_millis(d));
                }
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

// ===========================================================================
// end2end_test.cc

/// End2endTest.EmptyBinaryMetadata: `custom-bin` with an empty value goes
/// out and the call succeeds (echoed back empty).
#[test]
fn cpp_empty_binary_metadata_value_is_sent_and_the_call_succeeds() {
    let server = echo_server();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), None, plaintext()).unwrap();
    let m = md(&[("custom-bin", ""), ("x-echo-empty-bin", "")]);
    let resp = ch
        .reader()
        .unary(
            ECHO,
            b"Hello hello hello hello",
            &opts(Some(Duration::from_secs(5)), false, &m),
        )
        .unwrap_or_else(|s| panic!("{:?}: {}", s.code(), s.message()));
    assert!(resp.message.starts_with(b"Hello hello hello hello"));
    let echoed = resp
        .headers
        .get("x-echo-empty-bin")
        .map(|v| v.as_bytes().to_vec());
    assert_eq!(echoed, Some(vec![]), "headers {:?}", resp.headers);
}

/// End2endTest.MultipleRpcsWithVariedBinaryMetadataValue: 10 threads x 10
/// RPCs on one channel, each with 8 bytes of binary metadata whose last
/// byte varies (0..=9, NULs included); every one succeeds and its bytes
/// come back intact.
#[test]
fn cpp_multiple_rpcs_with_varied_binary_metadata_from_ten_threads() {
    let server = echo_server();
    let rt = Runtime::new().unwrap();
    let ch =
        Arc::new(Channel::new(&rt, &format!("ipv4:{}", server.addr()), None, plaintext()).unwrap());
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let ch = ch.clone();
            std::thread::spawn(move || {
                let mut r = ch.reader();
                let mut bad = Vec::new();
                for i in 0..10u8 {
                    let bytes = [0u8, 1, 2, 3, 4, 5, 6, i];
                    let m = md(&[("x-echo-custom-bin", &b64(&bytes))]);
                    match r.unary(
                        ECHO,
                        b"Hello hello hello hello",
                        &opts(Some(Duration::from_secs(10)), false, &m),
                    ) {
                        Ok(resp) => {
                            let got = resp
                                .headers
                                .get("x-echo-custom-bin")
                                .map(|v| b64_decode(v.to_str().unwrap()));
                            if got.as_deref() != Some(&bytes[..]) {
                                bad.push(format!("{i}: echoed {got:?}"));
                            }
                        }
                        Err(s) => bad.push(format!("{i}: {:?} {}", s.code(), s.message())),
                    }
                }
                bad
            })
        })
        .collect();
    let bad: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}

/// End2endTest.ReconnectChannel: one RPC, the server restarts on its port,
/// and after a pause a fail-fast RPC (no deadline in C++) is served: the
/// channel reconnects by itself (pick_first: IDLE after the GOAWAY, the
/// RPC's pick connects it again).
#[test]
fn cpp_reconnect_channel_after_the_server_restarts_on_its_port() {
    let server = echo_server();
    let addr = server.addr();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{addr}"), None, plaintext()).unwrap();
    rpc(&ch, 5000, false).unwrap();
    assert!(server.graceful_stop(Duration::from_secs(1)));
    let _server = start_server(addr);
    std::thread::sleep(Duration::from_millis(1000));
    let r = rpc(&ch, 10_000, false);
    assert!(
        r.is_ok(),
        "{:?}",
        r.err().map(|s| (s.code(), s.message().to_string()))
    );
}

/// End2endTest.ChannelStateOnLameChannel: C++ makes a lame channel for
/// "dns:///" (TRANSIENT_FAILURE at once, for ever); gRPC-Go's NewClient
/// also makes the channel and fails it when its resolver is built
/// (dns resolver: "missing address"). switchyard refuses the target at
/// creation (documented on `Channel::new`: `Error::InvalidTarget`).
#[test]
fn dns_target_without_a_host_is_refused_at_creation_where_cpp_makes_a_lame_channel() {
    let rt = Runtime::new().unwrap();
    match Channel::new(&rt, "dns:///", None, plaintext()) {
        Err(Error::InvalidTarget(why)) => eprintln!("refused: {why}"),
        Err(e) => panic!("refused, but not as an invalid target: {e}"),
        Ok(ch) => {
            // C++'s behaviour: TRANSIENT_FAILURE at once, never changing.
            assert_eq!(ch.get_state(true), TransientFailure);
            let mut s = TransientFailure;
            for _ in 0..3 {
                ch.wait_for_state_change(s, Some(Instant::now() + Duration::from_millis(300)));
                s = ch.get_state(false);
                assert_eq!(s, TransientFailure);
            }
        }
    }
}

/// End2endTest.NonExistingService / ProxyEnd2endTest.UnimplementedRpc: the
/// server answers UNIMPLEMENTED without a grpc-message; the caller sees
/// UNIMPLEMENTED with an empty message (nothing made up by the client).
#[test]
fn cpp_unimplemented_without_a_message_reaches_the_caller_with_an_empty_message() {
    let server = scripted(|_| Err(vec![("grpc-status".into(), "12".into())]));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &server.target(), None, plaintext()).unwrap();
    let s = ch
        .reader()
        .unary(
            "/grpc.testing.UnimplementedEchoService/Unimplemented",
            b"Hello",
            &opts(Some(Duration::from_secs(5)), false, &[]),
        )
        .unwrap_err();
    assert_eq!(s.code(), Code::Unimplemented);
    assert_eq!(s.message(), "");
}

/// End2endTest.ExpectErrorTest: INTERNAL with no message and no details;
/// with a message and text details; with a message and binary details
/// (NUL included): code, message and details reach the caller exactly.
#[test]
fn cpp_expect_error_code_message_and_binary_details_exactly() {
    let cases: Vec<(&str, &[u8])> = vec![
        ("", b""),
        ("text error message", b"text error details"),
        (
            "text error message",
            b"\x00\x01\x02\x03\x04\x05\x06\x08\x09\x0A\x0B",
        ),
    ];
    let server = scripted(|parts| {
        let i: usize = parts.headers["x-case"].to_str().unwrap().parse().unwrap();
        let (msg, details): (&str, &[u8]) = [
            ("", &b""[..]),
            ("text error message", &b"text error details"[..]),
            (
                "text error message",
                &b"\x00\x01\x02\x03\x04\x05\x06\x08\x09\x0A\x0B"[..],
            ),
        ][i];
        let mut f = vec![("grpc-status".to_string(), "13".to_string())];
        if !msg.is_empty() {
            f.push(("grpc-message".into(), msg.replace(' ', "%20")));
        }
        if !details.is_empty() {
            f.push(("grpc-status-details-bin".into(), b64(details)));
        }
        Err(f)
    });
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &server.target(), None, plaintext()).unwrap();
    let mut bad = Vec::new();
    for (i, (msg, details)) in cases.iter().enumerate() {
        let m = md(&[("x-case", &i.to_string())]);
        let s = ch
            .reader()
            .unary(
                ECHO,
                b"Hello",
                &opts(Some(Duration::from_secs(5)), false, &m),
            )
            .unwrap_err();
        let want_details = (!details.is_empty()).then_some(*details);
        if s.code() != Code::Internal || s.message() != *msg || s.details() != want_details {
            bad.push(format!(
                "case {i}: {:?} {:?} details {:?}",
                s.code(),
                s.message(),
                s.details()
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}

/// End2endTest.BinaryTrailerTest: a failed call's binary trailer (a
/// serialized proto) comes back exactly once, its bytes intact.
#[test]
fn cpp_binary_trailer_on_a_failed_call_reaches_the_caller_once_intact() {
    // A DebugInfo{stack_entries: ["stack_entry_1".."3"], detail: "..."}.
    let mut info = Vec::new();
    for e in ["stack_entry_1", "stack_entry_2", "stack_entry_3"] {
        info.push(0x0a);
        info.push(e.len() as u8);
        info.extend_from_slice(e.as_bytes());
    }
    info.push(0x12);
    info.push(19);
    info.extend_from_slice(b"detailed debug info");
    let sent = b64(&info);
    let server = scripted(move |_| {
        Err(vec![
            ("grpc-status".into(), "2".into()),
            ("debug-info-bin".into(), sent.clone()),
        ])
    });
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &server.target(), None, plaintext()).unwrap();
    let s = ch
        .reader()
        .unary(
            ECHO,
            b"Hello",
            &opts(Some(Duration::from_secs(5)), false, &[]),
        )
        .unwrap_err();
    let found: Vec<&(String, String)> = s
        .trailers()
        .iter()
        .filter(|(k, _)| k == "debug-info-bin")
        .collect();
    assert_eq!(found.len(), 1, "trailers {:?}", s.trailers());
    assert_eq!(b64_decode(&found[0].1), info);
}

fn common_wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ===========================================================================
// service_config_end2end_test.cc (FakeResolverResponseGenerator: a
// ManualResolver; the channel's service config: method_config).

struct Gen {
    r: ManualResolver,
    scheme: String,
}

impl Gen {
    fn new(name: &str) -> Gen {
        let scheme = format!("cpp-e2e-sc-{name}");
        let r = ManualResolver::new(scheme.clone());
        resolver::register(Arc::new(r.clone()));
        Gen { r, scheme }
    }
    fn target(&self) -> String {
        format!("{}:///", self.scheme)
    }
    fn set(&self, server: &TestServer, config: Option<&str>) {
        let st = ResolverState {
            endpoints: vec![Endpoint::from(Address::new(server.addr().to_string()))],
            service_config: config.map(str::to_string),
        };
        self.r.set_initial_state(Some(st.clone()));
        let _ = self.r.update(st);
    }
}

fn sc_channel(rt: &Runtime, g: &Gen, default: Option<&str>) -> Channel {
    Channel::new(rt, &g.target(), default, plaintext()).unwrap()
}

/// CheckRpcSendOk: fail-fast, 2 s deadline (wait-for-ready where C++
/// waits for the server).
fn send_ok(ch: &Channel) {
    if let Err(s) = rpc(ch, 2000, true) {
        panic!("RPC failed: {:?}: {}", s.code(), s.message());
    }
}

/// CheckRpcSendFailure: fail-fast, 1 s deadline.
fn send_fails(ch: &Channel) -> Status {
    match rpc(ch, 1000, false) {
        Ok(_) => panic!("RPC succeeded where C++'s fails"),
        Err(s) => s,
    }
}

const V1: &str =
    r#"{"version":"1","methodConfig":[{"name":[{"service":"echo.Echo"}],"timeout":"11s"}]}"#;
const V2: &str =
    r#"{"version":"2","methodConfig":[{"name":[{"service":"echo.Echo"}],"timeout":"22s"}]}"#;
const INVALID: &str = "{";

fn timeout_of(ch: &Channel) -> Option<Duration> {
    ch.method_config(ECHO).and_then(|m| m.timeout)
}

/// NoServiceConfigTest: the resolver gives no config, the channel has no
/// default: RPCs are served (C++: the channel's config is "{}").
#[test]
fn cpp_no_service_config_anywhere_serves() {
    let server = echo_server();
    let g = Gen::new("none");
    let rt = Runtime::new().unwrap();
    let ch = sc_channel(&rt, &g, None);
    g.set(&server, None);
    send_ok(&ch);
    assert_eq!(timeout_of(&ch), None);
}

/// ValidServiceConfigUpdatesTest: configs with an unknown top-level field
/// ("version", as C++'s are) are valid; the second replaces the first.
#[test]
fn cpp_valid_service_config_updates_with_an_unknown_field() {
    let server = echo_server();
    let g = Gen::new("updates");
    let rt = Runtime::new().unwrap();
    let ch = sc_channel(&rt, &g, None);
    g.set(&server, Some(r#"{"version": "1"}"#));
    send_ok(&ch);
    g.set(&server, Some(V1));
    ch.sync().unwrap();
    send_ok(&ch);
    assert_eq!(timeout_of(&ch), Some(Duration::from_secs(11)));
    g.set(&server, Some(V2));
    ch.sync().unwrap();
    send_ok(&ch);
    assert_eq!(timeout_of(&ch), Some(Duration::from_secs(22)));
}

/// InvalidServiceConfigTest / AnotherInvalidServiceConfigAfterInvalid /
/// ValidServiceConfigAfterInvalidServiceConfigTest: an invalid first config
/// fails RPCs, a second invalid one too, a valid one then serves.
#[test]
fn cpp_invalid_first_config_fails_until_a_valid_one_comes() {
    let server = echo_server();
    let g = Gen::new("invalid-first");
    let rt = Runtime::new().unwrap();
    let ch = sc_channel(&rt, &g, None);
    g.set(&server, Some(INVALID));
    let s = send_fails(&ch);
    assert_eq!(s.code(), Code::Unavailable, "{}", s.message());
    g.set(&server, Some(INVALID));
    ch.sync().unwrap();
    send_fails(&ch);
    g.set(&server, Some("{}"));
    ch.sync().unwrap();
    send_ok(&ch);
}

/// InvalidServiceConfigUpdateAfterValidServiceConfigTest (with and
/// without a default): the valid config stays in force, RPCs are served.
#[test]
fn cpp_invalid_config_after_a_valid_one_keeps_the_valid_one() {
    for default in [None, Some(r#"{"version": "valid_default"}"#)] {
        let server = echo_server();
        let g = Gen::new(if default.is_some() { "keep-d" } else { "keep" });
        let rt = Runtime::new().unwrap();
        let ch = sc_channel(&rt, &g, default);
        g.set(&server, Some(V1));
        send_ok(&ch);
        assert_eq!(timeout_of(&ch), Some(Duration::from_secs(11)));
        g.set(&server, Some(INVALID));
        ch.sync().unwrap();
        send_ok(&ch);
        assert_eq!(
            timeout_of(&ch),
            Some(Duration::from_secs(11)),
            "default {default:?}"
        );
    }
}

/// InvalidDefaultServiceConfigTest and ...WithNoServiceConfig /
/// ...WithInvalidServiceConfig: an invalid default config fails every RPC,
/// and still does when the resolver brings no config or an invalid one.
/// (...WithValidServiceConfig: C++ stays lame, gRPC-Go and grpc-java refuse
/// to build the channel; switchyard heals with the resolver's valid config,
/// on purpose: tests/resolver_api.rs
/// an_invalid_default_config_still_builds_the_resolver_which_can_heal_it.)
#[test]
fn cpp_invalid_default_config_fails_with_no_or_an_invalid_resolver_config() {
    for (name, resolver_config) in [
        ("bad-default-none", None),
        ("bad-default-bad", Some(INVALID)),
    ] {
        let server = echo_server();
        let g = Gen::new(name);
        let rt = Runtime::new().unwrap();
        let ch = sc_channel(&rt, &g, Some(r#"{"version": "invalid_default""#));
        let s = send_fails(&ch);
        assert_eq!(s.code(), Code::Unavailable, "{}", s.message());
        g.set(&server, resolver_config);
        ch.sync().unwrap();
        let s = send_fails(&ch);
        assert_eq!(s.code(), Code::Unavailable, "{name}: {}", s.message());
    }
}

/// ChannelStateOnLameChannel's other half, on the channel switchyard keeps
/// failing (an invalid default config, a resolver without configs): it is
/// TRANSIENT_FAILURE when asked to connect, stays so, and fails RPCs,
/// wait-for-ready ones too, as C++'s lame channel does.
#[test]
fn cpp_lame_channel_from_an_invalid_default_config_stays_transient_failure() {
    let server = echo_server();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(r#"{"version": "invalid_default""#),
        plaintext(),
    )
    .unwrap();
    assert_eq!(ch.get_state(true), TransientFailure);
    let mut s = TransientFailure;
    for _ in 0..5 {
        ch.wait_for_state_change(s, Some(Instant::now() + Duration::from_millis(200)));
        s = ch.get_state(false);
        assert_eq!(s, TransientFailure);
    }
    for wfr in [false, true] {
        let e = rpc(&ch, 1000, wfr).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "wfr {wfr}: {}", e.message());
    }
    assert_eq!(server.requests(), 0);
    assert_eq!(ch.get_state(false), TransientFailure);
}

/// Config changes while calls run: a call keeps the method config it
/// started with (gRPC applies the config at the call's start); a call
/// started after the change gets the new one.
#[test]
fn a_config_change_while_a_call_runs_leaves_the_running_call_its_config() {
    let server = echo_server();
    let g = Gen::new("in-flight");
    let rt = Runtime::new().unwrap();
    let ch = sc_channel(&rt, &g, None);
    let long = r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],"timeout":"5s"}]}"#;
    let short = r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],"timeout":"0.3s"}]}"#;
    g.set(&server, Some(long));
    send_ok(&ch);
    let (tx, rx) = mpsc::channel();
    let m = md(&[("x-delay-ms", "1200")]);
    let _call = ch
        .unary_start(ECHO, b"Hello", &opts(None, false, &m), move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    common_wait("the server to hold the call", || server.in_flight() == 1);
    g.set(&server, Some(short));
    ch.sync().unwrap();
    let r = rx.recv_timeout(Duration::from_secs(5)).expect("no outcome");
    assert!(
        r.is_ok(),
        "the running call took the new timeout: {:?}",
        r.err().map(|s| (s.code(), s.message().to_string()))
    );
    let s = ch
        .reader()
        .unary(ECHO, b"Hello", &opts(None, false, &m))
        .unwrap_err();
    assert_eq!(s.code(), Code::DeadlineExceeded, "{}", s.message());
}

// ===========================================================================
// flaky_network_test.cc, through the proxy.

fn keepalive_channel(rt: &Runtime, target: &str, ka: bool, backoff: BackoffConfig) -> Channel {
    switchyard::transport::set_min_keepalive_time_for_testing(Duration::from_millis(100));
    let keepalive = ka.then_some(Keepalive {
        time: Duration::from_millis(1000),
        timeout: Duration::from_millis(1000),
        permit_without_calls: true,
    });
    Channel::new(
        rt,
        target,
        Some(PF),
        ChannelOptions {
            transport: Some(TransportConfig {
                keepalive,
                ..TransportConfig::insecure()
            }),
            backoff,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A background sender of fail-fast RPCs every `every` (C++: every 1 s, no
/// deadline; here 3 s), stopped on drop.
struct Sender(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Sender {
    fn start(ch: Arc<Channel>, every: Duration) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let _ = rpc(&ch, 3000, false);
                std::thread::sleep(every);
            }
        });
        Sender(stop, Some(t))
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// FlakyNetworkTest.ServerUnreachableWithKeepalive: keepalive 1 s / 1 s
/// (without calls too), connect timeout and backoff 1 s; the traffic is
/// black-holed: keepalive takes the channel out of READY; the network comes
/// back: the channel is READY again.
#[test]
fn cpp_server_unreachable_with_keepalive_leaves_ready_and_comes_back() {
    let server = echo_server();
    let proxy = Proxy::start(server.addr());
    let rt = Runtime::new().unwrap();
    let backoff = BackoffConfig {
        initial: Duration::from_millis(1000),
        max: Duration::from_millis(1000),
        min_connect_timeout: Duration::from_millis(1000),
        ..Default::default()
    };
    let ch = Arc::new(keepalive_channel(&rt, &proxy.target(), true, backoff));
    rpc(&ch, 5000, false).unwrap();
    assert_eq!(ch.get_state(false), Ready);
    let sender = Sender::start(ch.clone(), Duration::from_millis(1000));
    proxy.paused.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    assert!(wait_not_ready(&ch, Duration::from_secs(8)), "still READY");
    eprintln!("left READY after {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_millis(2000));
    proxy.paused.store(false, Ordering::SeqCst);
    assert!(
        wait_ready(&ch, Duration::from_secs(10)),
        "not READY again: {:?}",
        ch.state()
    );
    drop(sender);
    assert_eq!(ch.get_state(false), Ready);
}

/// FlakyNetworkTest.ServerUnreachableNoKeepalive: no keepalive; the traffic
/// is black-holed: a wait-for-ready RPC with a 500 ms deadline fails, one
/// without a deadline (bounded at 10 s here) succeeds once the network
/// comes back 2 s later.
#[test]
fn cpp_server_unreachable_no_keepalive_deadline_fails_then_no_deadline_succeeds() {
    let server = echo_server();
    let proxy = Proxy::start(server.addr());
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(keepalive_channel(
        &rt,
        &proxy.target(),
        false,
        BackoffConfig::default(),
    ));
    rpc(&ch, 5000, false).unwrap();
    assert_eq!(ch.get_state(false), Ready);
    proxy.paused.store(true, Ordering::SeqCst);
    let c = ch.clone();
    let sender = std::thread::spawn(move || {
        let first = rpc(&c, 500, true).map(|_| ()).map_err(|s| s.code());
        let t = Instant::now();
        let second = rpc(&c, 10_000, true)
            .map(|_| ())
            .map_err(|s| (s.code(), s.message().to_string()));
        (first, second, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(2000));
    proxy.paused.store(false, Ordering::SeqCst);
    let (first, second, took) = sender.join().unwrap();
    assert_eq!(first, Err(Code::DeadlineExceeded));
    assert_eq!(second, Ok(()), "after {took:?}");
}

/// FlakyNetworkTest.NetworkTransition: keepalive 1 s / 1 s; the network
/// goes down (the connection black-holed, new connections refused, the
/// name no longer resolving): the channel leaves READY; the interface
/// comes back, then (1 s later) the name: the channel is READY again.
#[test]
fn cpp_network_transition_with_dns_down_then_back_is_ready_again() {
    let server = echo_server();
    let proxy = Proxy::start(server.addr());
    let g = Gen::new("transition");
    let state = ResolverState {
        endpoints: vec![Endpoint::from(Address::new(proxy.addr.to_string()))],
        service_config: None,
    };
    g.r.set_initial_state(Some(state.clone()));
    let dns_up = Arc::new(AtomicBool::new(true));
    let up = dns_up.clone();
    g.r.on_resolve_now(move |cc| {
        if up.load(Ordering::SeqCst) {
            let _ = cc.update(state.clone());
        } else {
            let _ = cc.report_error("grpctest: name does not resolve");
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(keepalive_channel(
        &rt,
        &g.target(),
        true,
        BackoffConfig::default(),
    ));
    rpc(&ch, 5000, false).unwrap();
    assert_eq!(ch.get_state(false), Ready);
    let sender = Sender::start(ch.clone(), Duration::from_millis(1000));
    proxy.paused.store(true, Ordering::SeqCst);
    proxy.refuse.store(true, Ordering::SeqCst);
    dns_up.store(false, Ordering::SeqCst);
    assert!(wait_not_ready(&ch, Duration::from_secs(8)), "still READY");
    proxy.refuse.store(false, Ordering::SeqCst);
    proxy.paused.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1000));
    dns_up.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let ready = wait_ready(&ch, Duration::from_secs(10));
    drop(sender);
    assert!(
        ready,
        "not READY again: {:?}; resolve_nows {}",
        ch.state(),
        g.r.resolve_nows()
    );
    eprintln!("READY again {:?} after the name came back", t0.elapsed());
    assert_eq!(ch.get_state(false), Ready);
}

/// Wait-for-ready across a flap (flaky_network_test.cc's sender, with
/// wait-for-ready as doc/wait-for-ready.md has it): keepalive has taken
/// the black-holed connection down; a wait-for-ready RPC started then
/// waits through the reconnection attempts that time out in the black
/// hole, and is served once the network is back.
#[test]
fn wait_for_ready_rpc_started_during_a_flap_is_served_when_the_network_returns() {
    let server = echo_server();
    let proxy = Proxy::start(server.addr());
    let rt = Runtime::new().unwrap();
    let backoff = BackoffConfig {
        initial: Duration::from_millis(300),
        max: Duration::from_millis(300),
        min_connect_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let ch = Arc::new(keepalive_channel(&rt, &proxy.target(), true, backoff));
    rpc(&ch, 5000, false).unwrap();
    proxy.paused.store(true, Ordering::SeqCst);
    assert!(wait_not_ready(&ch, Duration::from_secs(8)), "still READY");
    let c = ch.clone();
    let t = std::thread::spawn(move || {
        rpc(&c, 15_000, true)
            .map(|_| ())
            .map_err(|s| (s.code(), s.message().to_string()))
    });
    std::thread::sleep(Duration::from_millis(1500));
    // A fail-fast RPC meanwhile fails (the channel is not READY).
    let ff = rpc(&ch, 3000, false);
    proxy.paused.store(false, Ordering::SeqCst);
    assert_eq!(t.join().unwrap(), Ok(()));
    assert!(ff.is_err(), "a fail-fast RPC succeeded in the black hole");
    eprintln!(
        "fail-fast in the flap: {:?}",
        ff.err().map(|s| (s.code(), s.message().to_string()))
    );
}

/// FlakyNetworkTest.FlakyNetwork (delays only: no loss on loopback): with
/// keepalive on and every chunk delayed, RPCs of C++'s sizes (one emoji,
/// 1 KiB, 32 KiB, 1 MiB) all succeed and the channel stays READY.
#[test]
fn cpp_flaky_network_delays_keep_the_channel_ready() {
    let server = echo_server();
    let proxy = Proxy::start(server.addr());
    let rt = Runtime::new().unwrap();
    let ch = keepalive_channel(&rt, &proxy.target(), true, BackoffConfig::default());
    rpc(&ch, 5000, false).unwrap();
    assert_eq!(ch.get_state(false), Ready);
    proxy.delay_ms.store(20, Ordering::SeqCst);
    let mut msgs: Vec<Vec<u8>> = vec!["🖖".as_bytes().to_vec()];
    let mut k = 1;
    while k < 4 * 1024 * 1024 / 1024 {
        msgs.push((0..k * 1024).map(|i| b'a' + (i % 26) as u8).collect());
        k *= 32;
    }
    let mut r = ch.reader();
    let mut bad = Vec::new();
    for (i, m) in msgs.iter().cycle().take(12).enumerate() {
        match r.unary(ECHO, m, &opts(Some(Duration::from_secs(10)), false, &[])) {
            Ok(resp) if resp.message.starts_with(m) => {}
            Ok(_) => bad.push(format!("{i}: wrong echo")),
            Err(s) => bad.push(format!(
                "{i} ({} bytes): {:?} {}",
                m.len(),
                s.code(),
                s.message()
            )),
        }
    }
    proxy.delay_ms.store(0, Ordering::SeqCst);
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(ch.get_state(false), Ready);
}

/// FlakyNetworkTest.ServerRestartKeepaliveEnabled /
/// ServerRestartKeepaliveDisabled: the server shuts down: the channel
/// leaves READY and a fail-fast RPC fails; it restarts on its port: the
/// channel is READY again.
#[test]
fn cpp_server_restart_leaves_ready_fails_fast_then_ready_again() {
    for ka in [true, false] {
        let server = echo_server();
        let addr = server.addr();
        let rt = Runtime::new().unwrap();
        let ch = keepalive_channel(&rt, &format!("ipv4:{addr}"), ka, BackoffConfig::default());
        rpc(&ch, 5000, false).unwrap();
        assert_eq!(ch.get_state(false), Ready);
        server.graceful_stop(Duration::from_millis(0));
        assert!(
            wait_not_ready(&ch, Duration::from_secs(5)),
            "keepalive {ka}: still READY"
        );
        let s = rpc(&ch, 1000, false).unwrap_err();
        assert_eq!(
            s.code(),
            Code::Unavailable,
            "keepalive {ka}: {}",
            s.message()
        );
        std::thread::sleep(Duration::from_millis(1000));
        let _server = start_server(addr);
        assert!(
            wait_ready(&ch, Duration::from_secs(10)),
            "keepalive {ka}: not READY again: {:?}",
            ch.state()
        );
    }
}

// ===========================================================================
// shutdown_test.cc

/// ShutdownTest: a `dns:localhost:PORT` channel's call the server holds;
/// the server shuts down with a deadline already near: the call ends (any
/// status) promptly instead of hanging.
#[test]
fn cpp_server_shutdown_with_a_short_deadline_ends_the_held_call() {
    let server = echo_server();
    let rt = Runtime::new().unwrap();
    let target = format!("dns:localhost:{}", server.port());
    let ch = Channel::new(&rt, &target, None, plaintext()).unwrap();
    let (tx, rx) = mpsc::channel();
    let m = md(&[("x-delay-ms", "20000")]);
    let _call = ch
        .unary_start(ECHO, b"Hello", &opts(None, false, &m), move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    common_wait("the server to hold the call", || server.in_flight() == 1);
    let t0 = Instant::now();
    server.graceful_stop(Duration::from_micros(100));
    let r = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the call never ended");
    let s = r.expect_err("the held call succeeded");
    eprintln!(
        "after shutdown: {:?} {:?} in {:?}",
        s.code(),
        s.message(),
        t0.elapsed()
    );
}
