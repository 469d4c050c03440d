//! Probe: what switchyard's calls put in their request headers, checked
//! against gRPC-Go (test/authority_test.go, internal/transport/
//! http2_client.go createHeaderFields, internal/metadata/metadata.go
//! Validate/ValidatePair, test/metadata_test.go TestInvalidMetadata,
//! test/end2end_test.go testMaxMsgSize*/TestServiceConfigMaxMsgSize) and
//! gRPC's PROTOCOL-HTTP2 spec.
//!
//! A scripted HTTP/2 server (plaintext TCP, TLS, Unix path or abstract
//! socket) decodes every request header block with a full HPACK decoder
//! and records it; it answers each request OK with a message of its
//! script's choosing.

#[path = "common/h2_frames.rs"]
mod h2_frames;
use h2_frames::*;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use switchyard::*;
use switchyard_testserver::TestPki;

const CONTINUATION: u8 = 0x9;

#[path = "common/hpack.rs"]
mod hpack;
use hpack::Hpack;

// ---------------------------------------------------------------------------
// A scripted HTTP/2 server recording decoded request headers.

/// One request as the server saw it.
#[derive(Clone, Debug, Default)]
struct Req {
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    fn get(&self, k: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
    fn names(&self) -> Vec<String> {
        self.headers.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// What the server answers a complete request with (the response frames).
type Script = Arc<dyn Fn(u32, &Req) -> Vec<u8> + Send + Sync>;

enum Listen {
    Tcp(TcpListener),
    Unix(UnixListener),
}

trait Sock: Read + Write + Send {
    fn set_timeout(&mut self, d: Duration) -> io::Result<()>;
}
impl Sock for TcpStream {
    fn set_timeout(&mut self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}
impl Sock for UnixStream {
    fn set_timeout(&mut self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}
impl Sock for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn set_timeout(&mut self, d: Duration) -> io::Result<()> {
        self.sock.set_read_timeout(Some(d))
    }
}

struct Server {
    addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    reqs: Arc<Mutex<Vec<Req>>>,
    thread: Option<JoinHandle<()>>,
    _dir: Option<TempDir>,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "probe_hdr_{tag}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

fn ok_script() -> Script {
    Arc::new(|s, _| ok_response(s, b"ok"))
}

fn ok_response(s: u32, m: &[u8]) -> Vec<u8> {
    let mut out = headers(
        s,
        &[(":status", b"200"), ("content-type", b"application/grpc")],
        false,
    );
    for chunk in msg(m).chunks(16_384) {
        out.extend(data(s, chunk, false));
    }
    out.extend(headers(s, &[("grpc-status", b"0")], true));
    out
}

impl Server {
    fn tcp(script: Script) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        Server::start(Listen::Tcp(l), Some(addr), None, script, None)
    }

    fn tls(script: Script, pki: &TestPki) -> Server {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(&pki.server_cert)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(&pki.server_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        Server::start(
            Listen::Tcp(l),
            Some(addr),
            Some(Arc::new(cfg)),
            script,
            None,
        )
    }

    fn unix(path: &std::path::Path, dir: TempDir, script: Script) -> Server {
        let l = UnixListener::bind(path).unwrap();
        Server::start(Listen::Unix(l), None, None, script, Some(dir))
    }

    fn unix_abstract(name: &str, script: Script) -> Server {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let l = UnixListener::bind_addr(&a).unwrap();
        Server::start(Listen::Unix(l), None, None, script, None)
    }

    fn start(
        listen: Listen,
        addr: Option<SocketAddr>,
        tls: Option<Arc<rustls::ServerConfig>>,
        script: Script,
        dir: Option<TempDir>,
    ) -> Server {
        match &listen {
            Listen::Tcp(l) => l.set_nonblocking(true).unwrap(),
            Listen::Unix(l) => l.set_nonblocking(true).unwrap(),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let reqs: Arc<Mutex<Vec<Req>>> = Arc::default();
        let (st, rq) = (stop.clone(), reqs.clone());
        let thread = thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            let mut conns = Vec::new();
            while !st.load(Ordering::Acquire) && Instant::now() < end {
                let sock: io::Result<Box<dyn Sock>> = match &listen {
                    Listen::Tcp(l) => l.accept().and_then(|(s, _)| {
                        s.set_nonblocking(false)?;
                        s.set_nodelay(true)?;
                        match &tls {
                            None => Ok(Box::new(s) as Box<dyn Sock>),
                            Some(cfg) => {
                                let c = rustls::ServerConnection::new(cfg.clone())
                                    .map_err(io::Error::other)?;
                                Ok(Box::new(rustls::StreamOwned::new(c, s)) as Box<dyn Sock>)
                            }
                        }
                    }),
                    Listen::Unix(l) => l.accept().and_then(|(s, _)| {
                        s.set_nonblocking(false)?;
                        Ok(Box::new(s) as Box<dyn Sock>)
                    }),
                };
                match sock {
                    Ok(sock) => {
                        let (st, script, rq) = (st.clone(), script.clone(), rq.clone());
                        conns.push(thread::spawn(move || {
                            let _ = serve(sock, &script, &st, &rq);
                        }));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            st.store(true, Ordering::Release);
            for c in conns {
                let _ = c.join();
            }
        });
        Server {
            addr,
            stop,
            reqs,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn reqs(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }

    fn last(&self) -> Req {
        self.reqs()
            .last()
            .cloned()
            .expect("the server saw no request")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut sock: Box<dyn Sock>,
    script: &Script,
    stop: &AtomicBool,
    reqs: &Mutex<Vec<Req>>,
) -> io::Result<()> {
    // The TLS handshake (if any) happens on the first write; give it time.
    sock.set_timeout(Duration::from_secs(5))?;
    // SETTINGS_HEADER_TABLE_SIZE 0 is not needed (the decoder keeps a
    // dynamic table per connection), so announce nothing.
    sock.write_all(&frame(SETTINGS, 0, 0, &[]))?;
    sock.flush()?;
    sock.set_timeout(Duration::from_millis(20))?;
    let mut hpack = Hpack::new();
    let mut buf = Vec::new();
    let mut preface = false;
    let mut open: std::collections::HashMap<u32, Req> = Default::default();
    // A header block split over CONTINUATION frames.
    let mut partial: Option<(u32, Vec<u8>, bool)> = None;
    let end = Instant::now() + Duration::from_secs(30);
    while !stop.load(Ordering::Acquire) && Instant::now() < end {
        loop {
            if !preface {
                if buf.len() >= 24 {
                    buf.drain(..24);
                    preface = true;
                    continue;
                }
                break;
            }
            if buf.len() < 9 {
                break;
            }
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            let mut ended = None;
            match kind {
                HEADERS | CONTINUATION => {
                    let (s, mut block, es) = if kind == HEADERS {
                        let mut p = &payload[..];
                        let mut pad = 0;
                        if flags & 0x8 != 0 {
                            pad = p[0] as usize;
                            p = &p[1..];
                        }
                        if flags & 0x20 != 0 {
                            p = &p[5..];
                        }
                        (stream, p[..p.len() - pad].to_vec(), flags & END_STREAM != 0)
                    } else {
                        let (s, mut b, es) = partial.take().expect("stray CONTINUATION");
                        b.extend_from_slice(&payload);
                        (s, b, es)
                    };
                    if flags & END_HEADERS == 0 {
                        partial = Some((s, std::mem::take(&mut block), es));
                    } else {
                        let fields = hpack.decode(&block);
                        // A second block on a stream would be request
                        // trailers: not expected from gRPC clients.
                        open.entry(s)
                            .or_insert_with(|| Req {
                                headers: Vec::new(),
                                body: Vec::new(),
                            })
                            .headers
                            .extend(fields);
                        if es {
                            ended = Some(s);
                        }
                    }
                }
                DATA => {
                    if let Some(r) = open.get_mut(&stream) {
                        r.body.extend_from_slice(&payload);
                    }
                    if !payload.is_empty() {
                        let n = (payload.len() as u32).to_be_bytes();
                        sock.write_all(&frame(WINDOW_UPDATE, 0, 0, &n))?;
                        if flags & END_STREAM == 0 {
                            sock.write_all(&frame(WINDOW_UPDATE, 0, stream, &n))?;
                        }
                    }
                    if flags & END_STREAM != 0 {
                        ended = Some(stream);
                    }
                }
                SETTINGS if flags & ACK == 0 => sock.write_all(&frame(SETTINGS, ACK, 0, &[]))?,
                PING if flags & ACK == 0 => sock.write_all(&frame(PING, ACK, 0, &payload))?,
                _ => {}
            }
            if let Some(s) = ended {
                let r = open.remove(&s).unwrap_or_default();
                reqs.lock().unwrap().push(r.clone());
                let out = script(s, &r);
                sock.write_all(&out)?;
            }
            sock.flush()?;
        }
        let mut tmp = [0u8; 16_384];
        match sock.read(&mut tmp) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Client side.

const METHOD: &str = "/grpc.testing.TestService/EmptyCall";

fn plaintext() -> ChannelOptions {
    ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    }
}

fn opts<'a>(md: &'a [(String, String)]) -> CallOptions<'a> {
    CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(5)),
        wait_for_ready: Some(true),
        metadata: md,
        ..Default::default()
    }
}

fn call_on(ch: &Channel, md: &[(String, String)]) -> Result<UnaryResponse, Status> {
    ch.reader().unary(METHOD, b"hi", &opts(md))
}

fn one_call(
    target: &str,
    options: ChannelOptions,
    config: Option<&str>,
) -> Result<UnaryResponse, Status> {
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, target, config, options).unwrap();
    let r = call_on(&ch, &[]);
    ch.close();
    r
}

fn md(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `:authority` one call to `target` carried.
fn authority_of(server: &Server, target: &str, options: ChannelOptions) -> Result<String, String> {
    let before = server.reqs().len();
    one_call(target, options, None).map_err(|s| format!("call failed: {s:?}"))?;
    let reqs = server.reqs();
    let r = reqs.get(before).ok_or("no request seen")?;
    let a = r.all(":authority");
    if a.len() != 1 {
        return Err(format!(":authority fields: {a:?}"));
    }
    Ok(a[0].clone())
}

fn check_all(bad: Vec<String>) {
    assert!(
        bad.is_empty(),
        "differences from gRPC-Go:\n{}",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------
// (a) :authority — test/authority_test.go, clientconn.go initAuthority.

/// authority_test.go TestUnix rows UnixAbsolute / UnixAbsoluteAlternate:
/// `unix:/path` and `unix:///path` carry `:authority: localhost`
/// (internal/resolver/unix's OverrideAuthority).
#[test]
fn authority_unix_path_targets_are_localhost() {
    let dir = temp_dir("unix");
    let path = dir.0.join("sock.sock");
    let server = Server::unix(&path, dir, ok_script());
    let p = path.display().to_string();
    let mut bad = Vec::new();
    for target in [format!("unix:{p}"), format!("unix://{p}")] {
        match authority_of(&server, &target, plaintext()) {
            Ok(a) if a == "localhost" => {}
            other => bad.push(format!("{target}: {other:?}, Go: \"localhost\"")),
        }
    }
    check_all(bad);
}

/// authority_test.go TestUnix row UnixAbstract: `unix-abstract:abc efg`
/// (a name with a space) connects to "@abc efg" and carries
/// `:authority: localhost`.
#[test]
fn authority_unix_abstract_target_is_localhost() {
    let name = format!("probe hdr {} abs", std::process::id());
    let server = Server::unix_abstract(&name, ok_script());
    let target = format!("unix-abstract:{name}");
    assert_eq!(
        authority_of(&server, &target, plaintext()),
        Ok("localhost".to_string()),
        "{target}"
    );
}

/// TCP targets: `dns:///host:port` and `passthrough:///host:port` carry
/// `host:port` (initAuthority: the endpoint), `:port` carries
/// "localhost:port" (TestColonPortAuthority), and a one-address `ipv4:`
/// target (C-core's scheme; Go has none) its address.
#[test]
fn authority_tcp_targets_are_the_endpoint() {
    let server = Server::tcp(ok_script());
    let port = server.addr.unwrap().port();
    let mut bad = Vec::new();
    for (target, want) in [
        (
            format!("dns:///127.0.0.1:{port}"),
            format!("127.0.0.1:{port}"),
        ),
        (
            format!("dns:///localhost:{port}"),
            format!("localhost:{port}"),
        ),
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}")),
        (format!(":{port}"), format!("localhost:{port}")),
        (
            format!("passthrough:///127.0.0.1:{port}"),
            format!("127.0.0.1:{port}"),
        ),
        (
            format!("ipv4:127.0.0.1:{port}"),
            format!("127.0.0.1:{port}"),
        ),
    ] {
        match authority_of(&server, &target, plaintext()) {
            Ok(a) if a == want => {}
            other => bad.push(format!("{target}: {other:?}, want {want:?}")),
        }
    }
    check_all(bad);
}

/// A multi-address `ipv4:` target has no single endpoint authority:
/// switchyard (documented in resolver/target.rs default_authority) sends
/// each connection's own address. (C-core would send the whole
/// comma-separated list; Go has no ipv4 scheme.) Recorded as a
/// regression check of the documented choice.
#[test]
fn authority_multi_address_ipv4_is_each_address() {
    let a = Server::tcp(ok_script());
    let target = format!("ipv4:{},127.0.0.1:1", a.addr.unwrap());
    assert_eq!(
        authority_of(&a, &target, plaintext()),
        Ok(a.addr.unwrap().to_string())
    );
}

/// grpc.WithAuthority: the dial option's authority wins over the target's
/// (initAuthority), for TCP and Unix targets alike.
#[test]
fn authority_override_wins() {
    let server = Server::tcp(ok_script());
    let mut o = plaintext();
    o.authority = Some("foo.test.example:8443".into());
    assert_eq!(
        authority_of(
            &server,
            &format!("dns:///127.0.0.1:{}", server.addr.unwrap().port()),
            o
        ),
        Ok("foo.test.example:8443".to_string())
    );
    let dir = temp_dir("ov");
    let path = dir.0.join("s.sock");
    let us = Server::unix(&path, dir, ok_script());
    let mut o = plaintext();
    o.authority = Some("over.ride".into());
    assert_eq!(
        authority_of(&us, &format!("unix:{}", path.display()), o),
        Ok("over.ride".to_string())
    );
}

/// initAuthority: with TLS credentials naming a server (`creds.Info().
/// ServerName`, set by `NewClientTLSFromCert(pool, "localhost")`), that
/// name is the `:authority`, and `:scheme` is "https"
/// (http2_client.go newHTTP2Client: `scheme = "https"` when
/// TransportCredentials are set).
#[test]
fn tls_calls_carry_https_and_the_server_name_authority() {
    let pki = TestPki::new();
    let server = Server::tls(ok_script(), &pki);
    let o = ChannelOptions {
        transport: Some(TransportConfig::tls(TlsSettings {
            server_name: "localhost".into(),
            roots_pem: Some(pki.ca_pem.clone()),
            client_cert: None,
        })),
        ..Default::default()
    };
    let target = format!("ipv4:{}", server.addr.unwrap());
    let r = one_call(&target, o, None);
    assert!(r.is_ok(), "{r:?}");
    let req = server.last();
    assert_eq!(req.get(":scheme").as_deref(), Some("https"));
    assert_eq!(req.get(":authority").as_deref(), Some("localhost"));
}

// ---------------------------------------------------------------------------
// (b) the request's header fields — http2_client.go createHeaderFields and
// PROTOCOL-HTTP2 "Requests".

/// The call-definition headers, exactly once each: `:method POST`,
/// `:scheme http` (plaintext), `:path /service/method`, `:authority`,
/// `te: trailers`, `content-type: application/grpc`, a `user-agent`
/// ("grpc-<lang>-..." form), no `grpc-timeout` without a deadline, no
/// `grpc-encoding` (uncompressed), no `grpc-previous-rpc-attempts` on a
/// first attempt, and a body that is one uncompressed length-prefixed
/// message.
#[test]
fn request_carries_the_call_definition_headers() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    let r = ch.reader().unary(
        METHOD,
        b"hi",
        &CallOptions {
            wait_for_ready: Some(true),
            ..Default::default()
        },
    );
    assert!(r.is_ok(), "{r:?}");
    ch.close();
    let req = server.last();
    eprintln!(
        "request headers: {:?}",
        req.headers
            .iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(v)))
            .collect::<Vec<_>>()
    );
    let mut bad = Vec::new();
    for (k, want) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", METHOD),
        (":authority", &*server.addr.unwrap().to_string()),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
    ] {
        let got = req.all(k);
        if got != [want] {
            bad.push(format!("{k}: {got:?}, want [{want:?}]"));
        }
    }
    let ua = req.all("user-agent");
    if ua.len() != 1 || !ua[0].starts_with("grpc-") {
        bad.push(format!("user-agent: {ua:?}"));
    }
    for absent in [
        "grpc-timeout",
        "grpc-encoding",
        "grpc-previous-rpc-attempts",
        "host",
        "connection",
    ] {
        if req.get(absent).is_some() {
            bad.push(format!("{absent} sent: {:?}", req.all(absent)));
        }
    }
    // Pseudo-headers come first (RFC 9113 §8.3).
    let names = req.names();
    let first_regular = names
        .iter()
        .position(|n| !n.starts_with(':'))
        .unwrap_or(names.len());
    if names[first_regular..].iter().any(|n| n.starts_with(':')) {
        bad.push(format!("pseudo-header after a regular one: {names:?}"));
    }
    if req.body != msg(b"hi") {
        bad.push(format!("body {:?}", req.body));
    }
    check_all(bad);
}

/// An application's user agent goes first, then the library's (gRPC-Go's
/// `WithUserAgent`: `ua + " " + grpcUA`; C-core's primary user agent); one
/// that is no header value is refused when the channel is made.
#[test]
fn an_application_user_agent_comes_before_the_librarys() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let with_ua = |ua: &str| ChannelOptions {
        transport: Some(TransportConfig {
            user_agent: Some(ua.to_string()),
            ..TransportConfig::insecure()
        }),
        ..Default::default()
    };
    let target = format!("ipv4:{}", server.addr.unwrap());
    let ch = Channel::new(&rt, &target, None, with_ua("myapp/1.2")).unwrap();
    let r = ch.reader().unary(
        METHOD,
        b"hi",
        &CallOptions {
            wait_for_ready: Some(true),
            ..Default::default()
        },
    );
    assert!(r.is_ok(), "{r:?}");
    ch.close();
    let ua = server.last().all("user-agent");
    assert_eq!(ua.len(), 1, "{ua:?}");
    assert!(
        ua[0].starts_with("myapp/1.2 grpc-rust-switchyard/"),
        "{ua:?}"
    );
    for bad in ["tab\there", "caf\u{e9}", "nl\n"] {
        match Channel::new(&rt, &target, None, with_ua(bad)) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("user agent"), "{m}"),
            other => panic!("{bad:?}: {:?}", other.map(|_| ())),
        }
    }
}

/// Custom metadata goes through as given: several values of one key keep
/// their order, and the values are untouched (createHeaderFields appends
/// every value of every non-reserved key).
#[test]
fn custom_metadata_is_passed_through() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    let m = md(&[
        ("x-one", "1"),
        ("x-multi", "a"),
        ("x-multi", "b"),
        ("x.dots_and-dash", " spaced value ~!"),
        ("authorization", "Bearer t0ken"),
        ("x-multi", "c"),
    ]);
    let r = call_on(&ch, &m);
    assert!(r.is_ok(), "{r:?}");
    ch.close();
    let req = server.last();
    assert_eq!(req.all("x-one"), ["1"]);
    assert_eq!(req.all("x-multi"), ["a", "b", "c"]);
    assert_eq!(req.all("x.dots_and-dash"), [" spaced value ~!"]);
    assert_eq!(req.all("authorization"), ["Bearer t0ken"]);
}

/// PROTOCOL-HTTP2: Custom-Metadata follows the Call-Definition
/// (`Request-Headers → Call-Definition *Custom-Metadata`), and gRPC-Go
/// writes its own fields (incl. grpc-accept-encoding, grpc-timeout)
/// before any metadata (createHeaderFields).
#[test]
fn custom_metadata_follows_the_call_definition_headers() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    let m = md(&[("x-custom", "v")]);
    assert!(call_on(&ch, &m).is_ok());
    ch.close();
    let names = server.last().names();
    let custom = names.iter().position(|n| n == "x-custom").unwrap();
    let after: Vec<_> = names[custom..]
        .iter()
        .filter(|n| {
            n.starts_with("grpc-") || ["te", "content-type", "user-agent"].contains(&n.as_str())
        })
        .collect();
    assert!(
        after.is_empty(),
        "call-definition fields after custom metadata: {names:?}"
    );
}

/// Binary metadata: a `-bin` value goes on the wire as base64; gRPC-Go
/// writes it unpadded (http_util.go encodeBinHeader:
/// base64.RawStdEncoding), and PROTOCOL-HTTP2 says implementations
/// "should emit un-padded values". switchyard takes the base64 text from
/// the caller; given padded text it should still emit it unpadded.
#[test]
fn binary_metadata_goes_on_the_wire_unpadded() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    // Unpadded input goes as is.
    let r = call_on(&ch, &md(&[("x-raw-bin", "AAE")]));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(server.last().all("x-raw-bin"), ["AAE"]);
    // [0x19] (TestInvalidMetadata "-bin key with arbitrary value") and
    // [0, 1] given padded.
    let r = call_on(&ch, &md(&[("test-bin", "GQ=="), ("x-pad-bin", "AAE=")]));
    assert!(r.is_ok(), "{r:?}");
    ch.close();
    let req = server.last();
    assert_eq!(
        (req.all("test-bin"), req.all("x-pad-bin")),
        (vec!["GQ".to_string()], vec!["AAE".to_string()]),
        "Go sends RawStdEncoding (no '=')"
    );
}

/// grpc-timeout as Go's grpcutil.EncodeDuration writes it: at most 8
/// digits, the finest unit that fits, rounded up: 5 s left is micro-
/// seconds ("4999xxxu"), 200 days is seconds ("17280000S"), 50 ms is nanoseconds ("4998xxxxn").
#[test]
fn grpc_timeout_units_follow_go() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    let mut seen = Vec::new();
    for (d, unit, lo, hi) in [
        (Duration::from_secs(5), 'u', 4_000_000u64, 5_000_000u64),
        (
            Duration::from_secs(200 * 86_400),
            'S',
            17_279_990,
            17_280_000,
        ),
        (Duration::from_millis(50), 'n', 1, 50_000_000),
    ] {
        let r = ch.reader().unary(
            METHOD,
            b"hi",
            &CallOptions {
                deadline: Some(Instant::now() + d),
                wait_for_ready: Some(true),
                ..Default::default()
            },
        );
        assert!(r.is_ok(), "{d:?}: {r:?}");
        let t = server.last().get("grpc-timeout").expect("grpc-timeout");
        let (digits, u) = t.split_at(t.len() - 1);
        let n: u64 = digits.parse().unwrap();
        seen.push(t.clone());
        assert!(digits.len() <= 8, "{t}");
        assert_eq!(u.chars().next().unwrap(), unit, "{d:?}: {t}");
        assert!((lo..=hi).contains(&n), "{d:?}: {t}");
    }
    eprintln!("grpc-timeout values: {seen:?}");
    ch.close();
}

/// createHeaderFields: `if timeout <= 0 { return DeadlineExceeded }` —
/// a call whose deadline has passed before it starts fails
/// DEADLINE_EXCEEDED and nothing reaches the server, on a channel that is
/// already connected, for both the blocking and the started call.
#[test]
fn expired_deadline_fails_without_sending() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    assert!(call_on(&ch, &[]).is_ok());
    let before = server.reqs().len();
    for past in [Duration::ZERO, Duration::from_millis(5)] {
        let o = CallOptions {
            deadline: Some(Instant::now() - past),
            wait_for_ready: Some(true),
            ..Default::default()
        };
        let e = ch.reader().unary(METHOD, b"hi", &o).unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        let (tx, rx) = std::sync::mpsc::channel();
        let o = CallOptions {
            deadline: Some(Instant::now() - past),
            wait_for_ready: Some(true),
            ..Default::default()
        };
        let _h = ch
            .unary_start(METHOD, b"hi", &o, move |r| {
                let _ = tx.send(r);
            })
            .map(|_| ());
        match _h {
            Err(e) => panic!("unary_start refused: {e:?}"),
            Ok(()) => {
                let r = rx
                    .recv_timeout(Duration::from_secs(5))
                    .expect("started call never ended");
                assert_eq!(r.unwrap_err().code(), Code::DeadlineExceeded);
            }
        }
    }
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        server.reqs().len(),
        before,
        "an expired call reached the server"
    );
    ch.close();
}

// ---------------------------------------------------------------------------
// (c) invalid metadata — metadata_test.go TestInvalidMetadata, stream.go
// newClientStream (imetadata.Validate -> codes.Internal), createHeaderFields
// (isReservedHeader keys dropped).

fn bad_md_outcome(ch: &Channel, m: &[(String, String)]) -> (Code, String) {
    match call_on(ch, m) {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

/// TestInvalidMetadata's unary rows, by code: every invalid key or
/// non-bin value fails INTERNAL before anything is sent; uppercase keys
/// too (a raw MD map with "Foo" fails ValidateKey).
#[test]
fn invalid_metadata_fails_internal_without_sending() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    assert!(call_on(&ch, &[]).is_ok());
    let before = server.reqs().len();
    let mut bad = Vec::new();
    for (k, v) in [
        ("\u{19}", "testVal"),
        ("test", "\u{19}"),
        ("/", "value"),
        ("", "test"),
        ("Upper", "v"),
        ("x-KEY", "v"),
        ("sp ace", "v"),
        ("x-nl", "a\nb"),
        ("x-del", "a\u{7f}"),
        ("x-utf8", "é"),
    ] {
        let got = bad_md_outcome(&ch, &md(&[(k, v)]));
        if got.0 != Code::Internal {
            bad.push(format!("{k:?}={v:?}: {got:?}, Go: INTERNAL"));
        }
    }
    assert_eq!(server.reqs().len(), before, "an invalid call was sent");
    ch.close();
    check_all(bad);
}

/// TestInvalidMetadata's exact error texts (ValidateKey / ValidatePair):
/// `header key "\x19" contains illegal characters not in [0-9a-z-_.]`,
/// `header key "test" contains value with non-printable ASCII characters`,
/// `there is an empty key in the header`.
#[test]
fn invalid_metadata_error_texts_match_go() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    let mut bad = Vec::new();
    for (k, v, want) in [
        (
            "\u{19}",
            "testVal",
            "header key \"\\x19\" contains illegal characters not in [0-9a-z-_.]",
        ),
        (
            "/",
            "value",
            "header key \"/\" contains illegal characters not in [0-9a-z-_.]",
        ),
        (
            "test",
            "\u{19}",
            "header key \"test\" contains value with non-printable ASCII characters",
        ),
        ("", "test", "there is an empty key in the header"),
    ] {
        let got = bad_md_outcome(&ch, &md(&[(k, v)]));
        if got != (Code::Internal, want.to_string()) {
            bad.push(format!(
                "{k:?}={v:?}: {got:?}\n    Go: (Internal, {want:?})"
            ));
        }
    }
    ch.close();
    check_all(bad);
}

/// Keys the transport sets itself (gRPC-Go's isReservedHeader: content-type,
/// user-agent, te, grpc-message-type, grpc-encoding, grpc-message,
/// grpc-status, grpc-timeout) and pseudo-headers, given as metadata:
/// gRPC-Go drops them silently, C-core refuses keys it cannot send;
/// switchyard refuses them (INTERNAL, naming the key) before anything is
/// sent, as documented in `check_metadata`, so a caller never believes a
/// header went out that did not.
#[test]
fn reserved_metadata_keys_are_refused_before_sending() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    assert!(call_on(&ch, &[]).is_ok());
    let before = server.reqs().len();
    let mut bad = Vec::new();
    for (k, v) in [
        (":path", "/evil/Method"),
        (":foo", "x"),
        ("content-type", "application/json"),
        ("user-agent", "evil/1.0"),
        ("te", "gzip"),
        ("grpc-timeout", "1n"),
        ("grpc-encoding", "gzip"),
        ("grpc-accept-encoding", "gzip"),
        ("grpc-status", "3"),
        ("grpc-message", "hi"),
        ("grpc-message-type", "x"),
    ] {
        let got = bad_md_outcome(&ch, &md(&[(k, v), ("x-ok", "1")]));
        if got.0 != Code::Internal || !got.1.contains(&format!("{k:?}")) {
            bad.push(format!("{k}: {got:?}, want INTERNAL naming the key"));
        }
    }
    assert_eq!(server.reqs().len(), before, "a refused call was sent");
    ch.close();
    check_all(bad);
}

/// Non-reserved `grpc-` keys: gRPC-Go sends them (isReservedHeader
/// "intentionally exclude[s] grpc-previous-rpc-attempts and
/// grpc-retry-pushback-ms ... their API intentionally works via
/// metadata"; any other grpc-* key passes Validate and is sent too).
#[test]
fn unreserved_grpc_prefixed_metadata_is_sent() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    let mut bad = Vec::new();
    for (k, v) in [
        ("grpc-retry-pushback-ms", "10"),
        ("grpc-custom", "v"),
        ("grpc-trace-bin", "AAE"),
    ] {
        let got = bad_md_outcome(&ch, &md(&[(k, v)]));
        if got.0 != Code::Ok {
            bad.push(format!("{k}: {got:?}, Go: OK, sent"));
            continue;
        }
        if server.last().all(k) != [v] {
            bad.push(format!("{k}: not sent ({:?})", server.last().all(k)));
        }
    }
    ch.close();
    check_all(bad);
}

/// Connection-specific headers (RFC 9113 §8.2.2) as metadata: gRPC-Go's
/// client validates only the character set and would put `connection`
/// on the wire (a peer then treats the request as malformed). switchyard
/// refuses them before sending (documented in call/mod.rs
/// CONNECTION_SPECIFIC). Recorded as the documented choice.
#[test]
fn connection_specific_metadata_is_refused_before_sending() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    assert!(call_on(&ch, &[]).is_ok());
    let before = server.reqs().len();
    for k in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "host",
    ] {
        let got = bad_md_outcome(&ch, &md(&[(k, "x")]));
        assert_eq!(got.0, Code::Internal, "{k}: {got:?}");
    }
    assert_eq!(server.reqs().len(), before);
    ch.close();
}

/// A `-bin` value that is not base64 text: switchyard's API takes binary
/// values as base64 (documented: check_metadata), so it fails INTERNAL
/// before sending. (Go's API takes raw bytes, so it has no such error:
/// TestInvalidMetadata "-bin key with arbitrary value" succeeds.)
#[test]
fn non_base64_bin_value_is_refused() {
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        None,
        plaintext(),
    )
    .unwrap();
    let got = bad_md_outcome(&ch, &md(&[("test-bin", "not base64!")]));
    assert_eq!(got.0, Code::Internal, "{got:?}");
    ch.close();
}

// ---------------------------------------------------------------------------
// (d) message size limits — end2end_test.go testMaxMsgSizeClientDefault,
// TestServiceConfigMaxMsgSize; rpc_util.go recvMsg / stream.go SendMsg.

fn sized_script(n: usize) -> Script {
    Arc::new(move |s, _| ok_response(s, &vec![b'x'; n]))
}

/// Default receive limit 4 MiB (defaultClientMaxReceiveMessageSize):
/// exactly 4 MiB is received, 4 MiB + 1 fails RESOURCE_EXHAUSTED
/// (rpc_util.go recvMsg). Uses the echo test server (flow control) with a request
/// sized so the echo is exactly that long.
#[test]
fn default_max_receive_is_4mib() {
    use switchyard_testserver::{Listen, ServerOptions, TestServer};
    let ts = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap();
    let suffix = format!("|port={}", ts.port()).len();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", ts.addr()), None, plaintext()).unwrap();
    let limit = 4 << 20;
    let call = |n: usize| {
        ch.reader().unary(
            "/echo.Echo/Unary",
            &vec![b'a'; n - suffix],
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(20)),
                wait_for_ready: Some(true),
                ..Default::default()
            },
        )
    };
    let ok = call(limit);
    assert_eq!(
        ok.map(|r| r.message.len()).map_err(|s| s.to_string()),
        Ok(limit)
    );
    let e = call(limit + 1).unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message()
            .contains("received message larger than max (4194305 vs. 4194304)"),
        "{e:?}"
    );
    ch.close();
}

/// The same default limit's code, against the scripted server (a response
/// that only announces 5 MiB): RESOURCE_EXHAUSTED.
#[test]
fn default_max_receive_code_is_resource_exhausted() {
    let server = Server::tcp(Arc::new(|s, _| {
        let mut out = headers(
            s,
            &[(":status", b"200"), ("content-type", b"application/grpc")],
            false,
        );
        let mut m = vec![0u8];
        m.extend((5u32 << 20).to_be_bytes());
        m.extend([0u8; 100]);
        out.extend(data(s, &m, false));
        out
    }));
    let r = one_call(&format!("ipv4:{}", server.addr.unwrap()), plaintext(), None);
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message()
            .contains("larger than max (5242880 vs. 4194304)"),
        "{e:?}"
    );
}

const SC_2048: &str = r#"{"methodConfig":[{"name":[{"service":"grpc.testing.TestService","method":"EmptyCall"}],"maxRequestMessageBytes":2048,"maxResponseMessageBytes":2048}]}"#;

/// TestServiceConfigMaxMsgSize case 1: the method config's 2048-byte
/// limits; a 2048-byte response is received, 2049 fails
/// RESOURCE_EXHAUSTED; a 2049-byte request fails RESOURCE_EXHAUSTED
/// ("trying to send message larger than max (2049 vs. 2048)") and is not
/// sent; 2048 is sent.
#[test]
fn service_config_max_message_sizes() {
    let mut bad = Vec::new();
    for (resp, want) in [(2048, Code::Ok), (2049, Code::ResourceExhausted)] {
        let server = Server::tcp(sized_script(resp));
        let r = one_call(
            &format!("ipv4:{}", server.addr.unwrap()),
            plaintext(),
            Some(SC_2048),
        );
        let got = r.as_ref().map(|_| Code::Ok).unwrap_or_else(|s| s.code());
        if got != want {
            bad.push(format!("response {resp}: {r:?}, want {want:?}"));
        }
    }
    let server = Server::tcp(ok_script());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr.unwrap()),
        Some(SC_2048),
        plaintext(),
    )
    .unwrap();
    let send = |n: usize| ch.reader().unary(METHOD, &vec![1u8; n], &opts(&[]));
    assert!(send(2048).is_ok());
    let before = server.reqs().len();
    let e = send(2049).unwrap_err();
    if e.code() != Code::ResourceExhausted
        || e.message() != "trying to send message larger than max (2049 vs. 2048)"
    {
        bad.push(format!("request 2049: {e:?}"));
    }
    if server.reqs().len() != before {
        bad.push("the oversized request was sent".into());
    }
    ch.close();
    check_all(bad);
}

/// TestServiceConfigMaxMsgSize cases 2 and 3 (receive side): the channel's
/// limit (MaxCallRecvMsgSize; here TransportConfig::max_recv_message_size)
/// and the config's combine as the smaller: 1024 with the config's 2048
/// fails a 1025..2048-byte response, 4096 with 2048 fails a 2049..4096 one.
#[test]
fn channel_and_service_config_receive_limits_take_the_smaller() {
    let mut bad = Vec::new();
    for (chan_limit, resp, want) in [
        (1024, 1024, Code::Ok),
        (1024, 1025, Code::ResourceExhausted),
        (4096, 2048, Code::Ok),
        (4096, 2049, Code::ResourceExhausted),
    ] {
        let server = Server::tcp(sized_script(resp));
        let mut t = TransportConfig::insecure();
        t.max_recv_message_size = Some(chan_limit);
        let o = ChannelOptions {
            transport: Some(t),
            ..Default::default()
        };
        let r = one_call(&format!("ipv4:{}", server.addr.unwrap()), o, Some(SC_2048));
        let got = r.as_ref().map(|_| Code::Ok).unwrap_or_else(|s| s.code());
        if got != want {
            bad.push(format!(
                "channel {chan_limit}, response {resp}: {r:?}, want {want:?}"
            ));
        }
    }
    check_all(bad);
}

/// A gzip-compressed response within the limit on the wire but over it
/// once inflated: RESOURCE_EXHAUSTED (rpc_util.go decompress:
/// "grpc: received message after decompression larger than max").
#[test]
fn compressed_response_over_the_limit_after_inflating() {
    use flate2::{write::GzEncoder, Compression};
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    enc.write_all(&[b'z'; 4000]).unwrap();
    let gz = enc.finish().unwrap();
    assert!(gz.len() < 2048);
    let server = Server::tcp(Arc::new(move |s, _| {
        let mut out = headers(
            s,
            &[
                (":status", b"200"),
                ("content-type", b"application/grpc"),
                ("grpc-encoding", b"gzip"),
            ],
            false,
        );
        out.extend(data(s, &msg_with_flag(1, &gz), false));
        out.extend(headers(s, &[("grpc-status", b"0")], true));
        out
    }));
    let r = one_call(
        &format!("ipv4:{}", server.addr.unwrap()),
        plaintext(),
        Some(SC_2048),
    );
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // The request offered the codings it inflates.
    assert!(server.last().get("grpc-accept-encoding").is_some());
}

/// rpc_util.go's exact text for a response over the receive limit (the
/// prefix's length checked before the body is read):
/// `grpc: received message larger than max (%d vs. %d)`, the words
/// gRPC-Go's tests and users grep for. (The send side's text, "trying to
/// send message larger than max (%d vs. %d)", already matches: see
/// service_config_max_message_sizes.)
#[test]
fn receive_limit_error_text_matches_go() {
    let server = Server::tcp(sized_script(2049));
    let r = one_call(
        &format!("ipv4:{}", server.addr.unwrap()),
        plaintext(),
        Some(SC_2048),
    );
    let e = r.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::ResourceExhausted,
            "grpc: received message larger than max (2049 vs. 2048)"
        )
    );
}
