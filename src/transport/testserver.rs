//! In-process gRPC test/demo server (tokio + h2::server + tokio-rustls).
//!
//! Only built for tests or with the `testserver` feature, so the library
//! proper never links a runtime. Serves:
//! - `/echo.Echo/Unary`: replies `request ++ "|port=<port>"`, with
//!   `x-backend-port` in headers and trailers. Request metadata steers it:
//!   `x-echo-*` headers are copied back, `x-delay-ms` sleeps first,
//!   `x-respond-status: N` answers trailers-only with grpc-status N (and
//!   `grpc-message` from `x-respond-message`), `x-http-status: N` answers a
//!   bare HTTP status, `x-respond-early: N` answers trailers-only with
//!   grpc-status N as soon as the request headers arrive, without reading
//!   the body (as a server rejecting a call does). A client that resets a
//!   stream during `x-delay-ms` is counted ([`TestServer::resets`]). `ServerOptions::refuse_streams` refuses the first
//!   echo streams with REFUSED_STREAM.
//! - `/grpc.health.v1.Health/Check` and `/Watch` with per-service status
//!   (UNIMPLEMENTED instead with `ServerOptions::no_health`).
//!
//! Modes: plaintext h2c, TLS (cert/key PEM, configurable ALPN), or
//! "black hole" (accepts TCP, never speaks).
//!
//! Two ways to stop: [`TestServer::stop`] is a hard kill (every connection
//! dropped, calls in flight lost); [`TestServer::graceful_stop`] is what a
//! deployment does (stop accepting, GOAWAY, finish the calls in flight, close).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::rustls;

use super::grpc::{encode_message, take_message};
use super::health_proto;

pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Clone)]
pub struct ServerTls {
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// ALPN protocols offered; empty = no ALPN (for mismatch tests).
    pub alpn: Vec<Vec<u8>>,
    /// Require a client certificate signed by this CA (mutual TLS).
    pub client_ca_pem: Option<Vec<u8>>,
}

#[derive(Clone, Default)]
pub struct ServerOptions {
    pub tls: Option<ServerTls>,
    /// Accept connections and never read or write them.
    pub black_hole: bool,
    /// No health service: `/grpc.health.v1.Health/*` answers UNIMPLEMENTED,
    /// like a server that never registered it.
    pub no_health: bool,
    /// Refuse this many `/echo.Echo/Unary` streams first, with
    /// RST_STREAM(REFUSED_STREAM) (the server never processed them).
    pub refuse_streams: u64,
}

struct Shared {
    port: u16,
    health: watch::Sender<HashMap<String, u32>>,
    /// Bumped to make every connection send a graceful GOAWAY.
    goaway: watch::Sender<u64>,
    /// Bumped to end every open health Watch with UNAVAILABLE.
    break_watches: watch::Sender<u64>,
    /// Set once by a graceful stop: every connection, open or still in its
    /// handshake, sends GOAWAY and closes once its streams are done.
    draining: watch::Sender<bool>,
    no_health: bool,
    requests: AtomicU64,
    /// Streams accepted and not yet answered (or dropped).
    in_flight: AtomicU64,
    /// HTTP/2 connections open.
    connections: AtomicU64,
    /// Echo streams still to refuse.
    refuse: AtomicU64,
    /// Streams the client reset while their reply was delayed.
    resets: AtomicU64,
}

pub struct TestServer {
    addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<Stop>>,
    /// Returns whether every connection closed by itself (graceful stop).
    thread: Option<JoinHandle<bool>>,
}

enum Stop {
    Now,
    Graceful(Duration),
}

enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl TestServer {
    /// Binds synchronously (so the port is known and errors surface here),
    /// then serves on its own thread with a current-thread runtime.
    pub fn start(listen: Listen, opts: ServerOptions) -> io::Result<TestServer> {
        let (listener, addr) = match listen {
            Listen::Tcp(a) => {
                let l = std::net::TcpListener::bind(a)?;
                let addr = l.local_addr()?;
                (Listener::Tcp(l), Some(addr))
            }
            Listen::Unix(p) => {
                let _ = std::fs::remove_file(&p);
                (
                    Listener::Unix(std::os::unix::net::UnixListener::bind(p)?),
                    None,
                )
            }
        };
        let tls = match &opts.tls {
            Some(t) => Some(tls_acceptor(t)?),
            None => None,
        };
        let mut health = HashMap::new();
        health.insert(String::new(), health_proto::SERVING);
        let shared = Arc::new(Shared {
            port: addr.map_or(0, |a| a.port()),
            health: watch::channel(health).0,
            goaway: watch::channel(0).0,
            break_watches: watch::channel(0).0,
            draining: watch::channel(false).0,
            no_health: opts.no_health,
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            refuse: AtomicU64::new(opts.refuse_streams),
            resets: AtomicU64::new(0),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let sh = shared.clone();
        let black_hole = opts.black_hole;
        let thread = std::thread::Builder::new()
            .name("testserver".into())
            .spawn(move || {
                let drained = rt.block_on(async move {
                    // Every connection task holds a clone of `open_tx`: once
                    // all of them (and the accept loop) are gone, recv()
                    // answers None.
                    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
                    let how = tokio::select! {
                        _ = accept_loop(listener, tls, black_hole, sh.clone(), open_tx) => Stop::Now,
                        how = stop_rx => how.unwrap_or(Stop::Now),
                    };
                    // The accept loop is dropped here, listener and all: no
                    // new connections from now on.
                    let Stop::Graceful(grace) = how else {
                        return false;
                    };
                    sh.draining.send_replace(true);
                    tokio::time::timeout(grace, open_rx.recv()).await.is_ok()
                });
                // Dropping the runtime drops every connection task left:
                // their sockets close, calls still on them are lost.
                drop(rt);
                drained
            })?;
        Ok(TestServer {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("TCP server")
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Sets the health status of `service` ("" = the whole server).
    pub fn set_serving(&self, service: &str, status: u32) {
        self.shared.health.send_modify(|m| {
            m.insert(service.to_string(), status);
        });
    }

    /// Graceful GOAWAY on every open connection; in-flight calls finish.
    pub fn goaway(&self) {
        self.shared.goaway.send_modify(|g| *g += 1);
    }

    /// Ends every open health Watch stream with UNAVAILABLE (the connection
    /// stays up), as a server whose health service restarts would.
    pub fn break_health_watches(&self) {
        self.shared.break_watches.send_modify(|g| *g += 1);
    }

    /// Requests served so far (all methods).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Streams the client reset (RST_STREAM) while `x-delay-ms` held them.
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::Relaxed)
    }

    /// Calls (streams of any method) accepted and not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// HTTP/2 connections open now (past their handshake, not yet closed).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Hard kill: stops listening and drops every connection at once, calls
    /// in flight included (their clients see the connection end); returns
    /// once done.
    pub fn stop(mut self) {
        self.shutdown(Stop::Now);
    }

    /// Stops the way a deployment does: stops accepting, sends GOAWAY on
    /// every connection (h2's graceful shutdown: GOAWAY, a PING round trip,
    /// then the final GOAWAY with the last stream it will process), lets the
    /// calls in flight finish, and closes each connection once its calls are
    /// done. Connections still open after `grace` are dropped as by
    /// [`TestServer::stop`]. Returns once the server is gone: `true` if every
    /// connection had closed by itself within `grace`.
    pub fn graceful_stop(mut self, grace: Duration) -> bool {
        self.shutdown(Stop::Graceful(grace))
    }

    fn shutdown(&mut self, how: Stop) -> bool {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(how);
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(false),
            None => false,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown(Stop::Now);
    }
}

fn tls_acceptor(t: &ServerTls) -> io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let chain = CertificateDer::pem_slice_iter(&t.cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&t.key_pem).map_err(|e| bad(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?;
    let builder = match &t.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| bad(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| bad(e.to_string()))?;
    cfg.alpn_protocols = t.alpn.clone();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

async fn accept_loop(
    listener: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    black_hole: bool,
    shared: Arc<Shared>,
    open: mpsc::Sender<()>,
) -> io::Result<()> {
    match listener {
        Listener::Tcp(l) => {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            // Black-holed sockets are parked here until the server stops.
            let mut parked = Vec::new();
            loop {
                let (sock, _) = l.accept().await?;
                if black_hole {
                    parked.push(sock);
                    continue;
                }
                let _ = sock.set_nodelay(true);
                let (tls, shared, open) = (tls.clone(), shared.clone(), open.clone());
                tokio::spawn(async move {
                    let _open = open;
                    match tls {
                        Some(acc) => {
                            if let Ok(s) = acc.accept(sock).await {
                                serve_conn(s, shared).await;
                            }
                        }
                        None => serve_conn(sock, shared).await,
                    }
                });
            }
        }
        Listener::Unix(l) => {
            l.set_nonblocking(true)?;
            let l = tokio::net::UnixListener::from_std(l)?;
            loop {
                let (sock, _) = l.accept().await?;
                let (shared, open) = (shared.clone(), open.clone());
                tokio::spawn(async move {
                    let _open = open;
                    serve_conn(sock, shared).await
                });
            }
        }
    }
}

async fn serve_conn<T>(io: T, shared: Arc<Shared>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Subscribed before the handshake, so a drain that starts meanwhile is
    // seen (wait_for also answers at once if it already started).
    let mut draining = shared.draining.subscribe();
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let _open = Counted(&shared.connections);
    let mut goaway = shared.goaway.subscribe();
    let mut goaway_live = true;
    let mut drain_started = false;
    loop {
        tokio::select! {
            req = conn.accept() => match req {
                Some(Ok((req, respond))) => {
                    shared.requests.fetch_add(1, Ordering::Relaxed);
                    shared.in_flight.fetch_add(1, Ordering::Relaxed);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        handle(req, respond, shared.clone()).await;
                        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                // accept() drives the connection; None = it is finished
                // (after a GOAWAY: once its last stream is done).
                _ => return,
            },
            r = goaway.changed(), if goaway_live => match r {
                Ok(()) => conn.graceful_shutdown(),
                Err(_) => goaway_live = false,
            },
            r = draining.wait_for(|d| *d), if !drain_started => {
                drain_started = true;
                if r.is_ok() {
                    conn.graceful_shutdown();
                }
            },
        }
    }
}

/// Decrements its counter when dropped (a connection task ends or is dropped).
struct Counted<'a>(&'a AtomicU64);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn read_body(body: &mut RecvStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    Some(buf)
}

fn grpc_headers(port: u16) -> Response<()> {
    let mut resp = Response::new(());
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("x-backend-port", port.into());
    resp
}

/// Trailers-only response (HEADERS with END_STREAM carrying the status).
fn trailers_only(respond: &mut SendResponse<Bytes>, port: u16, code: u32, msg: &str) {
    let mut resp = grpc_headers(port);
    resp.headers_mut().insert("grpc-status", code.into());
    if let Ok(v) = HeaderValue::from_str(&percent_encode(msg)) {
        resp.headers_mut().insert("grpc-message", v);
    }
    let _ = respond.send_response(resp, true);
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn handle(req: Request<RecvStream>, mut respond: SendResponse<Bytes>, shared: Arc<Shared>) {
    let (parts, mut body) = req.into_parts();
    let port = shared.port;
    if parts.uri.path() == "/echo.Echo/Unary"
        && shared
            .refuse
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    if let Some(code) = header("x-respond-early").and_then(|v| v.parse().ok()) {
        return trailers_only(&mut respond, port, code, "answered before the body");
    }
    let Some(raw) = read_body(&mut body).await else {
        return;
    };
    let mut raw = bytes::BytesMut::from(&raw[..]);
    let msg = match take_message(&mut raw) {
        Ok(Some(m)) if raw.is_empty() => m.to_vec(),
        _ => return trailers_only(&mut respond, port, 13, "bad request framing"),
    };
    if let Some(ms) = header("x-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            reset = std::future::poll_fn(|cx| respond.poll_reset(cx)) => {
                // Err: the connection is gone, not a reset of this stream.
                if reset.is_ok() {
                    shared.resets.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
    }
    if let Some(code) = header("x-http-status").and_then(|v| v.parse::<u16>().ok()) {
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        let _ = respond.send_response(resp, true);
        return;
    }
    if let Some(code) = header("x-respond-status").and_then(|v| v.parse().ok()) {
        let m = header("x-respond-message").unwrap_or_default();
        return trailers_only(&mut respond, port, code, &m);
    }
    if shared.no_health && parts.uri.path().starts_with("/grpc.health.v1.Health/") {
        return trailers_only(
            &mut respond,
            port,
            12,
            "unknown service grpc.health.v1.Health",
        );
    }
    match parts.uri.path() {
        "/echo.Echo/Unary" => {
            let mut out = msg;
            out.extend_from_slice(format!("|port={port}").as_bytes());
            let mut resp = grpc_headers(port);
            for (k, v) in &parts.headers {
                if k.as_str().starts_with("x-echo-") {
                    resp.headers_mut().append(k, v.clone());
                }
            }
            send_unary(respond, resp, &out, port);
        }
        "/grpc.health.v1.Health/Check" => {
            let service = health_proto::decode_request(&msg).unwrap_or_default();
            let status = shared.health.borrow().get(&service).copied();
            match status {
                Some(s) => send_unary(
                    respond,
                    grpc_headers(port),
                    &health_proto::encode_response(s),
                    port,
                ),
                None => trailers_only(&mut respond, port, 5, "unknown service"),
            }
        }
        "/grpc.health.v1.Health/Watch" => {
            let service = health_proto::decode_request(&msg).unwrap_or_default();
            watch_health(respond, service, shared).await;
        }
        _ => trailers_only(&mut respond, port, 12, "unknown method"),
    }
}

fn send_unary(mut respond: SendResponse<Bytes>, resp: Response<()>, msg: &[u8], port: u16) {
    let Ok(mut stream) = respond.send_response(resp, false) else {
        return;
    };
    // h2 buffers the data until the window allows it; fine for tests.
    let _ = stream.send_data(encode_message(msg), false);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("x-backend-port", port.into());
    let _ = stream.send_trailers(trailers);
}

/// Server-streaming Watch: sends the status now and on every change, until
/// the client resets the stream or the server stops.
async fn watch_health(mut respond: SendResponse<Bytes>, service: String, shared: Arc<Shared>) {
    let Ok(mut stream) = respond.send_response(grpc_headers(shared.port), false) else {
        return;
    };
    let mut rx = shared.health.subscribe();
    let mut broken = shared.break_watches.subscribe();
    let mut last = None;
    loop {
        let now = rx
            .borrow_and_update()
            .get(&service)
            .copied()
            .unwrap_or(health_proto::SERVICE_UNKNOWN);
        if last != Some(now) {
            last = Some(now);
            let frame = encode_message(&health_proto::encode_response(now));
            if stream.send_data(frame, false).is_err() {
                return;
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => return,
            r = broken.changed() => if r.is_ok() {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("14"));
                trailers.insert("grpc-message", HeaderValue::from_static("health watch broken by test"));
                let _ = stream.send_trailers(trailers);
                return;
            },
        }
    }
}

/// A throwaway CA and a "localhost" server certificate it signed, for TLS
/// tests (each call makes a new CA, so two of them distrust each other).
pub struct TestPki {
    pub ca_pem: Vec<u8>,
    pub server_cert: Vec<u8>,
    pub server_key: Vec<u8>,
    /// A client certificate the same CA signed, for mutual TLS.
    pub client_cert: Vec<u8>,
    pub client_key: Vec<u8>,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names, so a wrong CA fails as an unknown issuer.
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("switchyard test CA {} {n}", std::process::id()),
        );
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(vec!["client.test".to_string()]).unwrap();
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client.signed_by(&client_key, &issuer).unwrap();
        TestPki {
            ca_pem: ca.pem().into_bytes(),
            server_cert: cert.pem().into_bytes(),
            server_key: key.serialize_pem().into_bytes(),
            client_cert: client.pem().into_bytes(),
            client_key: client_key.serialize_pem().into_bytes(),
        }
    }

    /// The server side, offering `alpn` (empty = no ALPN).
    pub fn server_tls(&self, alpn: &[&[u8]]) -> ServerTls {
        ServerTls {
            cert_chain_pem: self.server_cert.clone(),
            key_pem: self.server_key.clone(),
            alpn: alpn.iter().map(|a| a.to_vec()).collect(),
            client_ca_pem: None,
        }
    }

    /// Writes the server's certificate and key as PEM files into `dir`.
    pub fn write_server_pems(&self, dir: &std::path::Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert, &self.server_cert).unwrap();
        std::fs::write(&key, &self.server_key).unwrap();
        (cert, key)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallOptions, Channel, ChannelOptions, Runtime, TransportConfig};
    use std::time::Instant;

    const CALLS: u64 = 4;

    /// Slow calls that had reached the server when it was stopped: a
    /// graceful stop lets every one finish before it closes (a hard stop
    /// fails them all: "stream closed because of a broken pipe").
    #[test]
    fn graceful_stop_finishes_the_calls_in_flight() {
        let srv = TestServer::start(
            Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
            ServerOptions::default(),
        )
        .unwrap();
        let rt = Runtime::new().unwrap();
        let opts = ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            ..Default::default()
        };
        let target = format!("ipv4:{}", srv.addr());
        let ch = Arc::new(Channel::new(&rt, &target, None, opts).unwrap());
        let calls: Vec<_> = (0..CALLS)
            .map(|_| {
                let ch = ch.clone();
                std::thread::spawn(move || {
                    let metadata = [("x-delay-ms".to_string(), "300".to_string())];
                    let opts = CallOptions {
                        deadline: Some(Instant::now() + Duration::from_secs(20)),
                        wait_for_ready: true,
                        metadata: &metadata,
                        ..Default::default()
                    };
                    ch.reader().unary("/echo.Echo/Unary", b"slow", &opts)
                })
            })
            .collect();
        for _ in 0..2000 {
            if srv.in_flight() == CALLS {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(srv.in_flight(), CALLS, "the calls never reached the server");
        assert!(
            srv.graceful_stop(Duration::from_secs(20)),
            "connections still open at the end of the grace"
        );
        for call in calls {
            let resp = call
                .join()
                .unwrap()
                .expect("a call in flight at a graceful stop finishes");
            assert!(resp.message.starts_with(b"slow|port="));
        }
    }
}
