//! Integration-style tests over real loopback sockets. The loop is driven by
//! hand, as the core's event loop will; every wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::grpc::{self, code};
use super::*;
use switchyard_testserver::{Listen, ServerOptions, TestPki, TestServer};

const WAKE: Token = Token(0);
const CONN: Token = Token(1);
/// Generous bound for anything that should happen "soon" on loopback.
const SOON: Duration = Duration::from_secs(10);

struct Notify {
    mio: mio::Waker,
    woke: AtomicBool,
}

impl Wake for Notify {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woke.store(true, Ordering::Release);
        let _ = self.mio.wake();
    }
}

/// A minimal stand-in for the core's loop: one connection, one thread.
struct Driver {
    poll: Poll,
    notify: Arc<Notify>,
    conn: Connection,
}

impl Driver {
    fn start(target: &Target, cfg: &TransportConfig) -> std::io::Result<Driver> {
        let poll = Poll::new()?;
        let notify = Arc::new(Notify {
            mio: mio::Waker::new(poll.registry(), WAKE)?,
            woke: AtomicBool::new(false),
        });
        let waker = Waker::from(notify.clone());
        let tls = match cfg.tls_settings() {
            Some(t) => Some(TlsClient::new(t).map_err(std::io::Error::other)?),
            None => None,
        };
        let conn = Connection::start(
            target,
            tls.as_ref(),
            None,
            cfg.keepalive,
            cfg.limits(),
            cfg.user_agent_header().map_err(std::io::Error::other)?,
            poll.registry(),
            CONN,
            waker,
        )?;
        Ok(Driver { poll, notify, conn })
    }

    /// Runs the loop for at most `max`, returning the first non-Pending event.
    fn next(&mut self, max: Duration) -> Option<Progress> {
        let end = Instant::now() + max;
        let mut events = Events::with_capacity(16);
        loop {
            let now = Instant::now();
            if now >= end {
                return None;
            }
            let mut timeout = end - now;
            if let Some(t) = self.conn.next_timer() {
                timeout = timeout.min(t.saturating_duration_since(now));
            }
            self.poll.poll(&mut events, Some(timeout)).unwrap();
            let mut out = Progress::Pending;
            for ev in events.iter() {
                if ev.token() == CONN {
                    out = self.conn.on_event();
                    if out != Progress::Pending {
                        return Some(out);
                    }
                }
            }
            if self.notify.woke.swap(false, Ordering::AcqRel) {
                out = self.conn.on_event();
            }
            if out == Progress::Pending {
                if let Some(t) = self.conn.next_timer() {
                    if Instant::now() >= t {
                        out = self.conn.on_timer(Instant::now());
                    }
                }
            }
            if out != Progress::Pending {
                return Some(out);
            }
        }
    }
}

/// The driver's next event, which must be `Failed`: its message.
fn expect_failed(d: &mut Driver) -> String {
    match d.next(SOON) {
        Some(Progress::Failed(m)) => m,
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// A driver on its own thread, so RPC threads can block on calls.
struct LoopThread {
    events: Receiver<Progress>,
    handle: Arc<Mutex<Option<Handle>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LoopThread {
    fn spawn(target: Target, cfg: TransportConfig) -> LoopThread {
        let (tx, events) = mpsc::channel();
        let handle = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (handle.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut d = match Driver::start(&target, &cfg) {
                Ok(d) => d,
                Err(e) => return drop(tx.send(Progress::Failed(format!("start: {e}")))),
            };
            while !s.load(Ordering::Acquire) {
                if let Some(p) = d.next(Duration::from_millis(20)) {
                    if p == Progress::Ready {
                        *h.lock().unwrap() = d.conn.send_handle();
                    }
                    let _ = tx.send(p);
                }
            }
            d.conn.close(d.poll.registry());
        });
        LoopThread {
            events,
            handle,
            stop,
            thread: Some(thread),
        }
    }

    fn next(&self) -> Progress {
        self.events.recv_timeout(SOON).expect("loop event")
    }

    fn ready(&self) -> Handle {
        assert_eq!(self.next(), Progress::Ready);
        self.handle
            .lock()
            .unwrap()
            .clone()
            .expect("handle once ready")
    }
}

impl Drop for LoopThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn plain_server() -> TestServer {
    server_with(ServerOptions::default())
}

fn server_with(opts: ServerOptions) -> TestServer {
    TestServer::start(Listen::Tcp(localhost()), opts).unwrap()
}

fn echo(h: &Handle, msg: &[u8], md: &[(&str, &str)]) -> Result<UnaryResponse, CallError> {
    let md: Vec<(String, String)> = md
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    unary(h, "/echo.Echo/Unary", msg, &md, Some(SOON))
}

fn tls_server(p: &TestPki, alpn: &[&[u8]]) -> TestServer {
    let opts = ServerOptions {
        tls: Some(p.server_tls(alpn)),
        ..Default::default()
    };
    TestServer::start(Listen::Tcp(localhost()), opts).unwrap()
}

fn tls_cfg(roots_pem: &[u8]) -> TransportConfig {
    TransportConfig::tls(TlsSettings {
        server_name: "localhost".into(),
        roots_pem: Some(roots_pem.to_vec()),
        client_cert: None,
    })
}

#[test]
fn handle_is_send_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Handle>();
    fn send<T: Send>() {}
    send::<Connection>();
}

#[test]
fn framing_and_status_helpers() {
    assert_eq!(grpc::encode_timeout(Duration::from_millis(100)), "100000u");
    assert_eq!(grpc::encode_timeout(Duration::from_nanos(5)), "5n");
    assert_eq!(grpc::encode_timeout(Duration::from_secs(1000)), "1000000m");
    assert_eq!(
        grpc::encode_timeout(Duration::from_secs(3600 * 100_000_000)),
        "99999999H"
    );
    assert_eq!(grpc::percent_decode(b"a%20b%zz%4"), "a b%zz%4");
    assert_eq!(grpc::percent_decode("%E2%9C%93".as_bytes()), "\u{2713}");
    let framed = grpc::encode_message(b"hi");
    assert_eq!(&framed[..], &[0, 0, 0, 0, 2, b'h', b'i']);
    let mut buf = bytes::BytesMut::from(&framed[..]);
    assert_eq!(&grpc::take_message(&mut buf).unwrap().unwrap()[..], b"hi");
    assert!(buf.is_empty());
    let mut short = bytes::BytesMut::from(&framed[..6]);
    assert_eq!(grpc::take_message(&mut short).unwrap(), None);
    for (http, grpc) in [
        (400, 13),
        (401, 16),
        (403, 7),
        (404, 12),
        (429, 14),
        (502, 14),
        (503, 14),
        (504, 14),
        (431, 13),
        (500, 2),
        (200, 2),
    ] {
        assert_eq!(grpc::http_to_grpc(http), grpc, "{http}");
    }
    // A 200 whose content-type is no gRPC one: UNKNOWN; gRPC's own types
    // (with a subtype or parameters) pass, gRPC-Web's and look-alikes not.
    let head = |ct: &str| {
        let (parts, ()) = http::Response::builder()
            .status(200)
            .header("content-type", ct)
            .body(())
            .unwrap()
            .into_parts();
        grpc::check_response_head(&parts).map_err(|e| e.code)
    };
    for ok in [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc;charset=utf-8",
    ] {
        assert_eq!(head(ok), Ok(()), "{ok}");
    }
    for bad in [
        "text/html",
        "application/grpc-web+proto",
        "application/grpcfoo",
        "application/json",
    ] {
        assert_eq!(head(bad), Err(code::UNKNOWN), "{bad}");
    }
    // What it says, in gRPC-Go's words (its tests look for them).
    let said = |status: u16, ct: Option<&str>| {
        let mut b = http::Response::builder().status(status);
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        grpc::check_response_head(&parts).unwrap_err().message
    };
    assert_eq!(
        said(200, Some("text/html")),
        "unexpected HTTP status code received from server: 200 (OK); \
         transport: received unexpected content-type \"text/html\""
    );
    assert_eq!(
        said(502, None),
        "unexpected HTTP status code received from server: 502 (Bad Gateway); \
         malformed header: missing HTTP content-type"
    );
    for (reason, grpc) in [
        (h2::Reason::NO_ERROR, code::INTERNAL),
        (h2::Reason::PROTOCOL_ERROR, code::INTERNAL),
        (h2::Reason::FLOW_CONTROL_ERROR, code::INTERNAL),
        (h2::Reason::HTTP_1_1_REQUIRED, code::INTERNAL),
        (h2::Reason::CANCEL, code::CANCELLED),
        (h2::Reason::ENHANCE_YOUR_CALM, code::RESOURCE_EXHAUSTED),
        (h2::Reason::INADEQUATE_SECURITY, code::PERMISSION_DENIED),
        (h2::Reason::from(0xe), code::UNKNOWN),
        (h2::Reason::from(0x1234), code::UNKNOWN),
    ] {
        assert_eq!(
            grpc::h2_error(&reason.into(), true).code,
            grpc,
            "{reason:?}"
        );
    }
    let refused = grpc::h2_error(&h2::Reason::REFUSED_STREAM.into(), true);
    assert_eq!(
        (refused.code, refused.transparent_retry_ok),
        (code::UNAVAILABLE, true)
    );
    for (r, c) in [
        (h2::Reason::CANCEL, code::CANCELLED),
        (h2::Reason::ENHANCE_YOUR_CALM, code::RESOURCE_EXHAUSTED),
        (h2::Reason::INADEQUATE_SECURITY, code::PERMISSION_DENIED),
        (h2::Reason::PROTOCOL_ERROR, code::INTERNAL),
    ] {
        let e = grpc::h2_error(&r.into(), true);
        assert_eq!((e.code, e.transparent_retry_ok), (c, false), "{r:?}");
    }
}

#[test]
fn authority_and_tls_host_come_from_the_target() {
    let v4 = Target::Tcp("127.0.0.1:50051".parse().unwrap());
    let v6 = Target::Tcp("[::1]:443".parse().unwrap());
    let unix = Target::Unix("/tmp/x.sock".into());
    assert_eq!(v4.authority(), "127.0.0.1:50051");
    assert_eq!(v6.authority(), "[::1]:443");
    assert_eq!(unix.authority(), "localhost");
    assert_eq!(v4.host(), "127.0.0.1");
    assert_eq!(v6.host(), "::1");
    assert_eq!(unix.host(), "localhost");
    for t in [&v4, &v6, &unix] {
        assert!(
            http::uri::Authority::try_from(t.authority()).is_ok(),
            "{t:?}"
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn ready_only_after_server_settings() {
    // A black hole completes TCP but never sends SETTINGS: never READY.
    let hole = server_with(ServerOptions {
        black_hole: true,
        ..Default::default()
    });
    let mut d = Driver::start(&Target::Tcp(hole.addr()), &TransportConfig::insecure()).unwrap();
    assert_eq!(d.next(Duration::from_millis(300)), None);
    assert!(d.conn.send_handle().is_none());

    let srv = plain_server();
    let mut d = Driver::start(&Target::Tcp(srv.addr()), &TransportConfig::insecure()).unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    assert!(d.conn.send_handle().is_some());
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn connection_refused_fails_clearly() {
    let addr = std::net::TcpListener::bind(localhost())
        .unwrap()
        .local_addr()
        .unwrap(); // listener dropped: nothing listens there now
    let msg = match Driver::start(&Target::Tcp(addr), &TransportConfig::insecure()) {
        Err(e) => e.to_string(),
        Ok(mut d) => expect_failed(&mut d),
    };
    assert!(
        msg.contains("refused") && msg.contains(&addr.to_string()),
        "{msg}"
    );
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn unary_echo_round_trip_with_metadata_and_trailers() {
    let srv = plain_server();
    let lp = LoopThread::spawn(Target::Tcp(srv.addr()), TransportConfig::insecure());
    let h = lp.ready();
    let r = echo(&h, b"hello", &[("x-echo-a", "1"), ("x-other", "2")]).unwrap();
    let port = srv.port().to_string();
    assert_eq!(r.message, format!("hello|port={port}").into_bytes());
    assert_eq!(r.headers["x-backend-port"], port.as_str());
    assert_eq!(r.headers["x-echo-a"], "1");
    assert!(r.headers.get("x-other").is_none());
    assert_eq!(r.trailers["x-backend-port"], port.as_str());
    // The status is the call's outcome, not metadata (as gRPC-Go).
    assert!(r.trailers.get("grpc-status").is_none());
    // Empty message round trip.
    assert_eq!(
        echo(&h, b"", &[]).unwrap().message,
        format!("|port={port}").into_bytes()
    );
}

/// A `-bin` field that is not base64, in the headers or the trailers, fails
/// the call INTERNAL (gRPC-Go: "transport: malformed ..."); base64, padded
/// or not, passes.
#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn malformed_binary_metadata_fails_the_call() {
    let srv = plain_server();
    let lp = LoopThread::spawn(Target::Tcp(srv.addr()), TransportConfig::insecure());
    let h = lp.ready();
    for key in ["x-echo-data-bin", "x-echo-trailer-data-bin"] {
        let e = echo(&h, b"x", &[(key, "!!!")]).unwrap_err();
        assert_eq!(e.code, code::INTERNAL, "{key}: {e:?}");
        let name = key.strip_prefix("x-echo-").unwrap();
        assert!(
            e.message.contains("malformed") && e.message.contains(name),
            "{e:?}"
        );
        for good in ["aGk", "aGk="] {
            let r = echo(&h, b"x", &[(key, good)]).unwrap();
            let fields = if key.contains("trailer") {
                &r.trailers
            } else {
                &r.headers
            };
            // Sent unpadded (PROTOCOL-HTTP2), so echoed unpadded.
            assert_eq!(fields.get(key).unwrap(), "aGk", "{key}");
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn error_statuses_map() {
    let srv = plain_server();
    let lp = LoopThread::spawn(Target::Tcp(srv.addr()), TransportConfig::insecure());
    let h = lp.ready();
    let e = echo(
        &h,
        b"x",
        &[
            ("x-respond-status", "5"),
            ("x-respond-message", "no such thing ✓ 100%"),
        ],
    )
    .unwrap_err();
    assert_eq!((e.code, e.message.as_str()), (5, "no such thing ✓ 100%"));
    assert!(!e.transparent_retry_ok);
    let e = echo(&h, b"x", &[("x-http-status", "503")]).unwrap_err();
    assert_eq!(e.code, code::UNAVAILABLE);
    let e = echo(&h, b"x", &[("x-http-status", "404")]).unwrap_err();
    assert_eq!(e.code, code::UNIMPLEMENTED);
    let e = unary(&h, "/no.Such/Method", b"", &[], None).unwrap_err();
    assert_eq!(e.code, code::UNIMPLEMENTED);
    // A gRPC response (gRPC's content-type) under a non-200 status: the
    // grpc-status it sends decides ("it must be used"), success included;
    // only without one does the HTTP status map to the code.
    let e = echo(
        &h,
        b"x",
        &[("x-grpc-http-status", "502"), ("x-trailer-status", "3")],
    )
    .unwrap_err();
    assert_eq!(e.code, 3, "{e:?}");
    let ok = echo(&h, b"x", &[("x-grpc-http-status", "404")]).unwrap();
    assert!(ok.message.starts_with(b"x|port="));
    let e = echo(
        &h,
        b"x",
        &[("x-grpc-http-status", "404"), ("x-trailer-status", "none")],
    )
    .unwrap_err();
    assert_eq!(e.code, code::UNIMPLEMENTED, "{e:?}");
    let e = echo(&h, b"x", &[("x-trailer-status", "none")]).unwrap_err();
    assert_eq!(e.code, code::UNKNOWN, "{e:?}");
    let md = [("x-delay-ms".to_string(), "2000".to_string())];
    let e = unary(
        &h,
        "/echo.Echo/Unary",
        b"",
        &md,
        Some(Duration::from_millis(50)),
    )
    .unwrap_err();
    assert_eq!(e.code, code::DEADLINE_EXCEEDED);
    // The connection survives all of that.
    assert!(echo(&h, b"ok", &[]).is_ok());
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn concurrent_calls_share_one_connection() {
    let srv = plain_server();
    let lp = LoopThread::spawn(Target::Tcp(srv.addr()), TransportConfig::insecure());
    let h = lp.ready();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let h = h.clone();
            thread::spawn(move || {
                for i in 0..25 {
                    let msg = format!("t{t}-{i}");
                    let r = echo(&h, msg.as_bytes(), &[]).unwrap();
                    assert!(r.message.starts_with(msg.as_bytes()));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(srv.requests(), 200);
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn tls_with_right_ca_works() {
    let p = TestPki::new();
    let srv = tls_server(&p, &[b"h2"]);
    let lp = LoopThread::spawn(Target::Tcp(srv.addr()), tls_cfg(&p.ca_pem));
    let h = lp.ready();
    let r = echo(&h, b"secure", &[]).unwrap();
    assert!(r.message.starts_with(b"secure|port="));
    // Bigger than a TLS record and the default 64 KiB window.
    let big = vec![7u8; 300_000];
    let r = echo(&h, &big, &[]).unwrap();
    assert_eq!(&r.message[..big.len()], &big[..]);
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn tls_with_wrong_ca_fails_with_rustls_error() {
    let (p, other) = (TestPki::new(), TestPki::new());
    let srv = tls_server(&p, &[b"h2"]);
    let mut d = Driver::start(&Target::Tcp(srv.addr()), &tls_cfg(&other.ca_pem)).unwrap();
    let m = expect_failed(&mut d);
    assert!(m.contains("invalid peer certificate"), "{m}");
}

/// Plaintext only when named: a config built from the default with one
/// field changed (keepalive here) is still verified TLS, and against a
/// plaintext server it fails rather than falling back to h2c.
#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn credentials_are_tls_unless_insecure_is_named() {
    let cfg = TransportConfig {
        keepalive: Some(Keepalive {
            time: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            permit_without_calls: false,
        }),
        ..Default::default()
    };
    assert!(cfg.tls_settings().is_some());
    assert!(TransportConfig::insecure().tls_settings().is_none());
    let srv = plain_server();
    let mut d = Driver::start(&Target::Tcp(srv.addr()), &cfg).unwrap();
    let m = expect_failed(&mut d);
    assert!(!m.is_empty());
    assert_eq!(srv.requests(), 0);
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn tls_without_h2_alpn_fails() {
    let p = TestPki::new();
    let srv = tls_server(&p, &[]);
    let mut d = Driver::start(&Target::Tcp(srv.addr()), &tls_cfg(&p.ca_pem)).unwrap();
    let m = expect_failed(&mut d);
    assert!(m.contains("ALPN"), "{m}");
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn goaway_reported_and_in_flight_call_finishes() {
    let srv = plain_server();
    let lp = LoopThread::spawn(Target::Tcp(srv.addr()), TransportConfig::insecure());
    let h = lp.ready();
    assert!(!h.is_closing());
    let h2 = h.clone();
    let slow = thread::spawn(move || echo(&h2, b"slow", &[("x-delay-ms", "300")]));
    // Let the slow call reach the server before the GOAWAY.
    let t0 = Instant::now();
    while srv.requests() == 0 && t0.elapsed() < SOON {
        thread::sleep(Duration::from_millis(5));
    }
    srv.goaway();
    assert_eq!(
        lp.next(),
        Progress::GoAway {
            too_many_pings: false
        }
    );
    assert!(
        lp.handle.lock().unwrap().is_some(),
        "old handle kept by test"
    );
    // Calls must not start on it any more (a transparent retry included).
    assert!(h.is_closing());
    let r = slow.join().unwrap().unwrap();
    assert!(r.message.starts_with(b"slow|port="));
    // New streams on the old connection are rejected as never processed.
    let e = echo(&h, b"late", &[]).unwrap_err();
    assert!(e.transparent_retry_ok, "{e:?}");
    assert_eq!(e.code, code::UNAVAILABLE);
    // The server then closes the idle connection.
    assert!(matches!(lp.next(), Progress::Lost(_)));
}

fn fd_target(fd: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn close_releases_fd() {
    let srv = plain_server();
    let mut d = Driver::start(&Target::Tcp(srv.addr()), &TransportConfig::insecure()).unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    let fd = d.conn.raw_fd();
    let before = fd_target(fd).expect("open fd");
    assert!(before.to_string_lossy().starts_with("socket:"));
    let h = d.conn.send_handle().expect("ready");
    assert!(!h.is_closing());
    d.conn.close(d.poll.registry());
    assert!(h.is_closing());
    // Tests run in parallel, so the number may be reused at once; the
    // socket inode behind it must be gone either way.
    assert_ne!(fd_target(fd), Some(before));
    assert!(d.conn.send_handle().is_none());
}

/// A closing client says so before it hangs up, as gRPC-Go's does (RFC
/// 9113 6.8): GOAWAY, NO_ERROR, no server stream processed, gRPC-Go's debug
/// data; the last frame the server reads.
#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn close_sends_goaway_before_hanging_up() {
    use std::io::Write;
    let l = std::net::TcpListener::bind(localhost()).unwrap();
    let addr = l.local_addr().unwrap();
    let peer = thread::spawn(move || {
        let mut s = accept_h2(&l);
        s.set_read_timeout(Some(SOON)).unwrap();
        let mut seen = Vec::new();
        while let Some((ty, flags, payload)) = read_frame(&mut s) {
            if (ty, flags & 1) == (4, 0) {
                s.write_all(&frame(4, 1, &[])).unwrap();
            }
            seen.push((ty, payload));
        }
        seen
    });
    let mut d = Driver::start(&Target::Tcp(addr), &TransportConfig::insecure()).unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    d.conn.close(d.poll.registry());
    let seen = peer.join().unwrap();
    let (ty, payload) = seen.last().expect("frames before the hang-up");
    assert_eq!(*ty, 7, "the last frame is GOAWAY: {seen:?}");
    assert_eq!(
        &payload[..4],
        &[0, 0, 0, 0],
        "last stream id: none of the server's"
    );
    assert_eq!(&payload[4..8], &[0, 0, 0, 0], "NO_ERROR");
    assert_eq!(&payload[8..], b"client transport shutdown");
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn closing_a_tls_connection_sends_goaway_then_close_notify() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
    let p = TestPki::new();
    let chain = CertificateDer::pem_slice_iter(&p.server_cert)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&p.server_key).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let l = std::net::TcpListener::bind(localhost()).unwrap();
    let addr = l.local_addr().unwrap();
    // A hand-written TLS peer: reads everything the client sends up to
    // the end, and says how the TLS stream ended.
    let peer = thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(SOON)).unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(cfg)).unwrap();
        let mut s = rustls::StreamOwned::new(conn, sock);
        let mut preface = [0u8; 24];
        s.read_exact(&mut preface).unwrap();
        s.write_all(&frame(4, 0, &[])).unwrap();
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            match s.read(&mut buf) {
                // rustls says Ok(0) only after close_notify; a TCP end
                // without one is UnexpectedEof.
                Ok(0) => break Ok(()),
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e.kind()),
            }
        };
        (bytes, end)
    });
    let mut d = Driver::start(&Target::Tcp(addr), &tls_cfg(&p.ca_pem)).unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    d.conn.close(d.poll.registry());
    let (bytes, end) = peer.join().unwrap();
    assert_eq!(end, Ok(()), "the TLS stream ends with close_notify");
    let mut rest = &bytes[..];
    let frames: Vec<_> = std::iter::from_fn(|| read_frame(&mut rest)).collect();
    let (ty, _, payload) = frames.last().expect("frames before the hang-up");
    assert_eq!(*ty, 7, "the last frame is GOAWAY: {frames:?}");
    assert_eq!(&payload[8..], b"client transport shutdown");
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn unix_socket_works() {
    let path = std::env::temp_dir().join(format!("switchyard-t-{}.sock", std::process::id()));
    let srv = TestServer::start(Listen::Unix(path.clone()), ServerOptions::default()).unwrap();
    let lp = LoopThread::spawn(Target::Unix(path.clone()), TransportConfig::insecure());
    let h = lp.ready();
    assert_eq!(echo(&h, b"uds", &[]).unwrap().message, b"uds|port=0");
    drop(lp);
    srv.stop();
    let _ = std::fs::remove_file(path);
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn server_stop_is_lost() {
    let srv = plain_server();
    let lp = LoopThread::spawn(Target::Tcp(srv.addr()), TransportConfig::insecure());
    let h = lp.ready();
    srv.stop();
    assert!(matches!(lp.next(), Progress::Lost(_)));
    let e = echo(&h, b"x", &[]).unwrap_err();
    assert_eq!(e.code, code::UNAVAILABLE);
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn health_check_and_status() {
    let srv = plain_server();
    srv.set_serving("svc", health_proto::NOT_SERVING);
    let lp = LoopThread::spawn(Target::Tcp(srv.addr()), TransportConfig::insecure());
    let h = lp.ready();
    let check = |svc: &str| {
        unary(
            &h,
            "/grpc.health.v1.Health/Check",
            &health_proto::encode_request(svc),
            &[],
            Some(SOON),
        )
        .map(|r| health_proto::decode_response(&r.message).unwrap())
    };
    assert_eq!(check(""), Ok(health_proto::SERVING));
    assert_eq!(check("svc"), Ok(health_proto::NOT_SERVING));
    srv.set_serving("svc", health_proto::SERVING);
    assert_eq!(check("svc"), Ok(health_proto::SERVING));
    assert_eq!(check("nope").unwrap_err().code, 5);
}

/// TCP relay that can be frozen (stops forwarding, keeps sockets open) to
/// simulate a peer that went silent. Counts client->server bytes.
struct Proxy {
    addr: SocketAddr,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    upstream_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind(localhost()).unwrap();
        l.set_nonblocking(true).unwrap();
        let p = Proxy {
            addr: l.local_addr().unwrap(),
            paused: Arc::default(),
            stop: Arc::default(),
            upstream_bytes: Arc::default(),
        };
        let (paused, stop, count) = (p.paused.clone(), p.stop.clone(), p.upstream_bytes.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let Ok((client, _)) = l.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let server = std::net::TcpStream::connect(upstream).unwrap();
                for (mut from, mut to, up) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        true,
                    ),
                    (server, client, false),
                ] {
                    let (paused, stop, count) = (paused.clone(), stop.clone(), count.clone());
                    from.set_read_timeout(Some(Duration::from_millis(10)))
                        .unwrap();
                    thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while !stop.load(Ordering::Acquire) {
                            if paused.load(Ordering::Acquire) {
                                thread::sleep(Duration::from_millis(5));
                                continue;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => {
                                    if up {
                                        count.fetch_add(n, Ordering::Relaxed);
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if e.kind() == std::io::ErrorKind::WouldBlock
                                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
        p
    }

    fn sent(&self) -> usize {
        self.upstream_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn keepalive_cfg(time_ms: u64, timeout_ms: u64, permit_without_calls: bool) -> TransportConfig {
    TransportConfig {
        credentials: Credentials::Insecure,
        keepalive: Some(Keepalive {
            time: Duration::from_millis(time_ms),
            timeout: Duration::from_millis(timeout_ms),
            permit_without_calls,
        }),
        ..Default::default()
    }
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn keepalive_pings_idle_connection_when_permitted() {
    let srv = plain_server();
    let px = Proxy::start(srv.addr());
    let mut d = Driver::start(&Target::Tcp(px.addr), &keepalive_cfg(20, 5_000, true)).unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    assert!(d.conn.next_timer().is_some());
    let before = px.sent();
    // Acked pings keep it alive; nothing to report.
    assert_eq!(d.next(Duration::from_millis(300)), None);
    assert!(px.sent() > before, "keepalive PINGs should have gone out");
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn keepalive_without_calls_stays_quiet_unless_permitted() {
    let srv = plain_server();
    let px = Proxy::start(srv.addr());
    let mut d = Driver::start(&Target::Tcp(px.addr), &keepalive_cfg(20, 5_000, false)).unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    // Let the SETTINGS ack / PING settle, then expect silence.
    assert_eq!(d.next(Duration::from_millis(250)), None);
    let before = px.sent();
    assert_eq!(d.next(Duration::from_millis(200)), None);
    assert_eq!(px.sent(), before);
}

/// An open health Watch is a call in flight: without
/// `permit_without_calls`, keepalive pings while it is open and stops after.
#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn keepalive_pings_while_only_a_health_watch_is_open() {
    let srv = plain_server();
    let px = Proxy::start(srv.addr());
    let mut d = Driver::start(&Target::Tcp(px.addr), &keepalive_cfg(20, 5_000, false)).unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    let waker = Waker::from(d.notify.clone());
    let mut w = HealthWatch::start(&d.conn.send_handle().unwrap(), "").unwrap();
    // Opens the stream; the rest of the Watch stays quiet (SERVING once).
    assert_eq!(w.poll(&mut std::task::Context::from_waker(&waker)), None);
    assert_eq!(d.next(Duration::from_millis(250)), None);
    let before = px.sent();
    assert_eq!(d.next(Duration::from_millis(200)), None);
    assert!(px.sent() > before, "keepalive PINGs should have gone out");
    drop(w);
    assert_eq!(d.next(Duration::from_millis(250)), None);
    let before = px.sent();
    assert_eq!(d.next(Duration::from_millis(200)), None);
    assert_eq!(px.sent(), before);
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn keepalive_timeout_loses_silent_connection() {
    let srv = plain_server();
    let px = Proxy::start(srv.addr());
    let mut d = Driver::start(&Target::Tcp(px.addr), &keepalive_cfg(20, 100, true)).unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    let h = d.conn.send_handle().unwrap();
    px.paused.store(true, Ordering::Release);
    assert_eq!(
        d.next(SOON),
        Some(Progress::Lost("keepalive ping timeout".into()))
    );
    // Streams on the dead connection fail instead of hanging.
    let e = echo(&h, b"x", &[]).unwrap_err();
    assert_eq!(e.code, code::UNAVAILABLE);
}

/// An HTTP/2 frame on stream 0, for the hand-rolled peers below.
fn frame(ty: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([ty, flags, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A hand-rolled peer's start: the client's connection, its preface read
/// and our (empty) SETTINGS sent.
fn accept_h2(l: &std::net::TcpListener) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let (mut s, _) = l.accept().unwrap();
    let mut preface = [0u8; 24];
    s.read_exact(&mut preface).unwrap();
    s.write_all(&frame(4, 0, &[])).unwrap();
    s
}

/// The next frame a hand-rolled peer reads: (type, flags, payload), or
/// `None` once the client is gone.
fn read_frame(s: &mut impl std::io::Read) -> Option<(u8, u8, Vec<u8>)> {
    let mut hdr = [0u8; 9];
    s.read_exact(&mut hdr).ok()?;
    let len = u32::from_be_bytes([0, hdr[0], hdr[1], hdr[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    Some((hdr[3], hdr[4], payload))
}

/// A hand-rolled HTTP/2 "server": SETTINGS, then, once the client acked
/// them, GOAWAY with ENHANCE_YOUR_CALM + "too_many_pings" (h2's server API
/// cannot send GOAWAY debug data).
fn calm_down_server() -> (SocketAddr, JoinHandle<()>) {
    use std::io::Write;
    let l = std::net::TcpListener::bind(localhost()).unwrap();
    let addr = l.local_addr().unwrap();
    let t = thread::spawn(move || {
        let mut s = accept_h2(&l);
        s.set_read_timeout(Some(SOON)).unwrap();
        while let Some((ty, flags, _)) = read_frame(&mut s) {
            // Once the client acked our SETTINGS (it is READY).
            if ty == 4 && flags & 1 == 1 {
                let mut ga = vec![0, 0, 0, 0, 0, 0, 0, 0x0b];
                ga.extend_from_slice(b"too_many_pings");
                s.write_all(&frame(7, 0, &ga)).unwrap();
            }
        }
    });
    (addr, t)
}

/// A hand-rolled HTTP/2 peer that acks no PING, but keeps talking: a
/// WINDOW_UPDATE on the connection every 30 ms, until the client goes away.
fn chatty_peer_that_acks_no_keepalive() -> (SocketAddr, JoinHandle<()>) {
    use std::io::Write;
    let l = std::net::TcpListener::bind(localhost()).unwrap();
    let addr = l.local_addr().unwrap();
    let t = thread::spawn(move || {
        let mut s = accept_h2(&l);
        let mut writer = s.try_clone().unwrap();
        let talker = thread::spawn(move || {
            for _ in 0..70 {
                thread::sleep(Duration::from_millis(30));
                if writer.write_all(&frame(8, 0, &[0, 0, 0, 1])).is_err() {
                    return;
                }
            }
        });
        while let Some((ty, flags, _)) = read_frame(&mut s) {
            if (ty, flags & 1) == (4, 0) {
                s.write_all(&frame(4, 1, &[])).unwrap();
            }
        }
        talker.join().unwrap();
    });
    (addr, t)
}

/// gRFC A8 as gRPC-Go reads it: bytes from the peer after a keepalive
/// PING went out show it alive, ack or not: the connection is not dropped
/// at the PING's timeout while the peer keeps talking.
#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn keepalive_takes_any_bytes_from_the_peer_as_an_answer() {
    let (addr, srv) = chatty_peer_that_acks_no_keepalive();
    let mut d = Driver::start(&Target::Tcp(addr), &keepalive_cfg(20, 600, true)).unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    // The peer is quiet for longer than `time` (20 ms), so pings go out;
    // none is acked, but bytes come well within every ping's 600 ms
    // timeout (every 30 ms, for 2.1 s), over more than two timeouts.
    assert_eq!(d.next(Duration::from_millis(1500)), None);
    d.conn.close(d.poll.registry());
    drop(d);
    srv.join().unwrap();
}

/// A hand-rolled HTTP/2 peer: `first` (its first frames, ending with
/// SETTINGS for a valid peer), then it acks the client's SETTINGS and
/// nothing else, and after the first PING it sends `on_ping` (frames) once,
/// until the client goes away.
fn scripted_peer(first: Vec<Vec<u8>>, on_ping: Vec<Vec<u8>>) -> (SocketAddr, JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind(localhost()).unwrap();
    let addr = l.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut preface = [0u8; 24];
        s.read_exact(&mut preface).unwrap();
        for f in &first {
            s.write_all(f).unwrap();
        }
        let mut on_ping = Some(on_ping);
        while let Some((ty, flags, _)) = read_frame(&mut s) {
            match (ty, flags & 1) {
                (4, 0) => s.write_all(&frame(4, 1, &[])).unwrap(),
                (6, 0) => {
                    for f in on_ping.take().unwrap_or_default() {
                        let _ = s.write_all(&f);
                    }
                }
                _ => {}
            }
        }
    });
    (addr, t)
}

/// Runs `check` on a connection to a `scripted_peer(first, on_ping)` made
/// with `cfg`, then closes it and waits for the peer.
fn against_peer(
    first: Vec<Vec<u8>>,
    on_ping: Vec<Vec<u8>>,
    cfg: &TransportConfig,
    check: impl FnOnce(&mut Driver),
) {
    let (addr, srv) = scripted_peer(first, on_ping);
    let mut d = Driver::start(&Target::Tcp(addr), cfg).unwrap();
    check(&mut d);
    d.conn.close(d.poll.registry());
    drop(d);
    srv.join().unwrap();
}

/// gRPC's readiness: the server's SETTINGS read, the connection is READY;
/// nothing else is waited for (a server that never answers a PING is
/// READY all the same).
#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn ready_once_the_servers_settings_are_read() {
    let settings = frame(4, 0, &[0, 3, 0, 0, 0, 7]);
    against_peer(vec![settings], vec![], &TransportConfig::insecure(), |d| {
        assert_eq!(d.next(SOON), Some(Progress::Ready));
    });
}

/// gRPC-Go: "initial http2 frame from server is not a settings frame":
/// the attempt fails, never READY.
#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn a_first_frame_other_than_settings_fails_the_attempt() {
    let first = vec![frame(8, 0, &[0, 0, 0, 1]), frame(4, 0, &[])];
    against_peer(first, vec![], &TransportConfig::insecure(), |d| {
        match d.next(SOON) {
            Some(Progress::Failed(why)) => assert!(why.contains("not SETTINGS"), "{why}"),
            other => panic!("{other:?}"),
        }
    });
}

/// A keepalive PING answered by other bytes but never acked, then silence:
/// the connection still ends at a keepalive timeout (h2 lets one ping out
/// at a time, so the unacked one once kept any other from going out, and
/// keepalive went quiet for good).
#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn keepalive_outlives_a_ping_answered_only_by_other_bytes() {
    let window_update = frame(8, 0, &[0, 0, 0, 1]);
    let cfg = keepalive_cfg(100, 300, true);
    against_peer(vec![frame(4, 0, &[])], vec![window_update], &cfg, |d| {
        assert_eq!(d.next(SOON), Some(Progress::Ready));
        match d.next(Duration::from_secs(3)) {
            Some(Progress::Lost(why)) => assert!(why.contains("keepalive"), "{why}"),
            other => panic!("{other:?}"),
        }
    });
}

/// Frames a peer saw: (type, when).
type Frames = Vec<(u8, Instant)>;

/// A hand-rolled HTTP/2 peer that acks SETTINGS and every PING, never
/// answers a stream, and records when each PING and HEADERS frame came.
fn recording_peer() -> (SocketAddr, Arc<Mutex<Frames>>, JoinHandle<()>) {
    use std::io::Write;
    let l = std::net::TcpListener::bind(localhost()).unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let t = thread::spawn(move || {
        let mut s = accept_h2(&l);
        while let Some((ty, flags, payload)) = read_frame(&mut s) {
            let ack = flags & 1 == 1;
            if matches!(ty, 1 | 6) && !ack {
                log.lock().unwrap().push((ty, Instant::now()));
            }
            let reply = match (ty, ack) {
                (4, false) => frame(4, 1, &[]),
                (6, false) => frame(6, 1, &payload),
                _ => continue,
            };
            if s.write_all(&reply).is_err() {
                return;
            }
        }
    });
    (addr, seen, t)
}

/// gRFC A8: with no call in flight (and pings without calls not
/// permitted) keepalive is dormant; a call that starts on a connection
/// quiet for longer than the keepalive time pings at once, not at the next
/// periodic check.
#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn a_call_after_a_quiet_spell_pings_at_once() {
    let (addr, seen, srv) = recording_peer();
    let lt = LoopThread::spawn(Target::Tcp(addr), keepalive_cfg(1000, 5000, false));
    let h = lt.ready();
    // 2.5 keepalive times without a call: no ping (checks at 1 s and 2 s
    // find none in flight; the next is due at 3 s).
    thread::sleep(Duration::from_millis(2500));
    let ended = grpc::unary(
        &h,
        "/echo.Echo/Unary",
        b"x",
        &[],
        Some(Duration::from_millis(800)),
    );
    assert_eq!(ended.unwrap_err().code, code::DEADLINE_EXCEEDED);
    drop(lt);
    srv.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    let headers = seen
        .iter()
        .find(|(ty, _)| *ty == 1)
        .expect("the call's HEADERS")
        .1;
    let pings: Vec<Instant> = seen
        .iter()
        .filter(|(ty, _)| *ty == 6)
        .map(|(_, at)| *at)
        .collect();
    // No ping before the call: readiness needs none, and keepalive was
    // dormant.
    assert_eq!(
        pings.iter().filter(|at| **at < headers).count(),
        0,
        "{seen:?}"
    );
    let first_after = pings
        .iter()
        .find(|at| **at >= headers)
        .expect("a keepalive ping");
    assert!(
        *first_after - headers < Duration::from_millis(250),
        "pinged {:?} after the call started",
        *first_after - headers
    );
}

/// gRFC A18: keepalive on sets TCP_USER_TIMEOUT to its timeout; off leaves
/// the system default (0).
#[test]
#[cfg(any(target_os = "linux", target_os = "android"))]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn keepalive_sets_tcp_user_timeout() {
    let srv = plain_server();
    let mut d = Driver::start(
        &Target::Tcp(srv.addr()),
        &keepalive_cfg(10_000, 1_500, false),
    )
    .unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    assert_eq!(
        d.conn.tcp_user_timeout(),
        Some(Duration::from_millis(1_500))
    );
    d.conn.close(d.poll.registry());
    let mut d = Driver::start(&Target::Tcp(srv.addr()), &TransportConfig::insecure()).unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    assert_eq!(d.conn.tcp_user_timeout(), None);
    d.conn.close(d.poll.registry());
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn too_many_pings_goaway_is_flagged() {
    let (addr, srv) = calm_down_server();
    let mut d = Driver::start(&Target::Tcp(addr), &TransportConfig::insecure()).unwrap();
    assert_eq!(d.next(SOON), Some(Progress::Ready));
    assert_eq!(
        d.next(SOON),
        Some(Progress::GoAway {
            too_many_pings: true
        })
    );
    assert!(d.conn.too_many_pings());
    d.conn.close(d.poll.registry());
    srv.join().unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn eof_before_settings_fails() {
    let l = std::net::TcpListener::bind(localhost()).unwrap();
    let addr = l.local_addr().unwrap();
    let t = thread::spawn(move || drop(l.accept()));
    let mut d = Driver::start(&Target::Tcp(addr), &TransportConfig::insecure()).unwrap();
    assert!(!expect_failed(&mut d).is_empty());
    assert!(format!("{:?}", d.conn).contains("dead"));
    t.join().unwrap();
}

/// The next event of a watch polled from this thread (h2 wakes it when the
/// loop thread has processed frames for the stream).
fn next_watch_event(w: &mut HealthWatch) -> WatchEvent {
    let next = std::future::poll_fn(|cx| match w.poll(cx) {
        Some(e) => std::task::Poll::Ready(e),
        None => std::task::Poll::Pending,
    });
    grpc::block_on(next, Some(Instant::now() + SOON)).expect("watch event")
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn health_watch_streams_statuses_and_ends_with_a_status() {
    use super::health_proto::{NOT_SERVING, SERVICE_UNKNOWN, SERVING};
    let server = plain_server();
    let lt = LoopThread::spawn(Target::Tcp(server.addr()), TransportConfig::insecure());
    let h = lt.ready();
    let mut w = HealthWatch::start(&h, "").unwrap();
    assert_eq!(next_watch_event(&mut w), WatchEvent::Status(SERVING));
    server.set_serving("", NOT_SERVING);
    assert_eq!(next_watch_event(&mut w), WatchEvent::Status(NOT_SERVING));
    server.break_health_watches();
    match next_watch_event(&mut w) {
        WatchEvent::Ended(e) => assert_eq!(e.code, code::UNAVAILABLE, "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(w.is_done());

    let mut unknown = HealthWatch::start(&h, "no.Such").unwrap();
    assert_eq!(
        next_watch_event(&mut unknown),
        WatchEvent::Status(SERVICE_UNKNOWN)
    );
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn health_watch_without_a_health_service_ends_unimplemented() {
    let server = server_with(ServerOptions {
        no_health: true,
        ..Default::default()
    });
    let lt = LoopThread::spawn(Target::Tcp(server.addr()), TransportConfig::insecure());
    let mut w = HealthWatch::start(&lt.ready(), "").unwrap();
    match next_watch_event(&mut w) {
        WatchEvent::Ended(e) => assert_eq!(e.code, code::UNIMPLEMENTED, "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn streamed_messages_are_taken_whole() {
    let mut buf = bytes::BytesMut::new();
    let two = [grpc::encode_message(b"ab"), grpc::encode_message(b"")].concat();
    buf.extend_from_slice(&two[..4]);
    assert_eq!(grpc::take_message(&mut buf).unwrap(), None);
    buf.extend_from_slice(&two[4..]);
    assert_eq!(&grpc::take_message(&mut buf).unwrap().unwrap()[..], b"ab");
    assert_eq!(&grpc::take_message(&mut buf).unwrap().unwrap()[..], b"");
    assert!(buf.is_empty());
    buf.extend_from_slice(&[1, 0, 0, 0, 0]);
    assert!(grpc::take_message(&mut buf).is_err());
}

/// A compressed message (flag 1) in the response's grpc-encoding: gzip and
/// deflate (zlib) inflate, held to the receive limit once inflated; gRPC-Go's
/// codes otherwise (checkRecvPayload, decompress).
#[test]
fn compressed_messages_inflate_by_their_encoding() {
    use grpc::Encoding;
    use std::io::Write;
    let message = b"compressible ".repeat(100);
    let frame = |flag: u8, payload: &[u8]| {
        let mut f = vec![flag];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        bytes::BytesMut::from(&f[..])
    };
    let gzip = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&message).unwrap();
        e.finish().unwrap()
    };
    let zlib = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&message).unwrap();
        e.finish().unwrap()
    };
    assert!(gzip.len() < message.len() / 4);
    let take = |f: &[u8], enc, max| grpc::take_message_in(&mut bytes::BytesMut::from(f), max, enc);
    let max = message.len();
    let got = take(&frame(1, &gzip), Encoding::Gzip, max)
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], &message[..]);
    let got = take(&frame(1, &zlib), Encoding::Deflate, max)
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], &message[..]);
    // Uncompressed messages of a compressing stream pass as they are.
    let got = take(&frame(0, b"plain"), Encoding::Gzip, max)
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], b"plain");
    // Inflated past the limit: RESOURCE_EXHAUSTED, though the wire was small.
    let e = take(&frame(1, &gzip), Encoding::Gzip, max - 1).unwrap_err();
    assert_eq!(e.code, code::RESOURCE_EXHAUSTED, "{e}");
    assert!(e.message.contains("after decompression"), "{e}");
    // The flag without an encoding, an encoding unknown here, bad data, an
    // unknown flag: INTERNAL.
    let e = take(&frame(1, &gzip), Encoding::Identity, max).unwrap_err();
    assert_eq!(e.code, code::INTERNAL);
    assert!(e.message.contains("identity or empty encoding"), "{e}");
    let e = take(&frame(1, &gzip), Encoding::Other("snappy"), max).unwrap_err();
    assert_eq!(e.code, code::INTERNAL);
    assert!(e.message.contains("\"snappy\""), "{e}");
    let e = take(&frame(1, &gzip), Encoding::Deflate, max).unwrap_err();
    assert_eq!(e.code, code::INTERNAL);
    assert!(e.message.contains("failed to decompress"), "{e}");
    let e = take(&frame(2, b"x"), Encoding::Gzip, max).unwrap_err();
    assert_eq!(e.code, code::INTERNAL);
    // The encoding as a response head names it.
    let mut h = http::HeaderMap::new();
    assert_eq!(Encoding::of(&h), Encoding::Identity);
    for (v, want) in [
        ("gzip", Encoding::Gzip),
        ("deflate", Encoding::Deflate),
        ("identity", Encoding::Identity),
        ("br", Encoding::Other("br")),
    ] {
        h.insert("grpc-encoding", http::HeaderValue::from_static(v));
        assert_eq!(Encoding::of(&h), want);
    }
}

/// The next event of an ORCA stream polled from this thread.
fn next_orca_event(s: &mut orca::OrcaStream) -> orca::OrcaEvent {
    let next = std::future::poll_fn(|cx| match s.poll(cx) {
        Some(e) => std::task::Poll::Ready(e),
        None => std::task::Poll::Pending,
    });
    grpc::block_on(next, Some(Instant::now() + SOON)).expect("ORCA event")
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn orca_stream_asks_for_its_interval_and_delivers_each_report() {
    let server = server_with(ServerOptions {
        orca_min_interval: Some(Duration::from_millis(1)),
        ..Default::default()
    });
    server.set_load(switchyard_testserver::OrcaLoad {
        cpu_utilization: 0.25,
        rps_fractional: 40.0,
        ..Default::default()
    });
    let lt = LoopThread::spawn(Target::Tcp(server.addr()), TransportConfig::insecure());
    let mut s = orca::OrcaStream::start(&lt.ready(), Duration::from_millis(5)).unwrap();
    let want = orca::OrcaLoadReport {
        cpu_utilization: 0.25,
        rps_fractional: 40.0,
        ..Default::default()
    };
    for _ in 0..3 {
        assert_eq!(
            next_orca_event(&mut s),
            orca::OrcaEvent::Report(want.clone())
        );
    }
    assert_eq!(server.orca_interval(), Some(Duration::from_millis(5)));
    assert_eq!(server.orca_streams(), 1);
}

#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn orca_stream_without_the_service_ends_unimplemented() {
    let server = server_with(ServerOptions {
        no_orca: true,
        ..Default::default()
    });
    let lt = LoopThread::spawn(Target::Tcp(server.addr()), TransportConfig::insecure());
    let mut s = orca::OrcaStream::start(&lt.ready(), Duration::from_secs(1)).unwrap();
    match next_orca_event(&mut s) {
        orca::OrcaEvent::Ended(e) => assert_eq!(e.code, code::UNIMPLEMENTED, "{e}"),
        other => panic!("{other:?}"),
    }
}

/// A server's load report on an error status stays with the call's error
/// (trailers-only here, as servers answer errors), for `done`.
#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn an_error_keeps_the_load_report_it_came_with() {
    let server = plain_server();
    let lt = LoopThread::spawn(Target::Tcp(server.addr()), TransportConfig::insecure());
    let h = lt.ready();
    let md = [("x-respond-status".to_string(), "8".to_string())];
    let e = grpc::unary(&h, "/echo.Echo/Unary", b"x", &md, Some(SOON)).unwrap_err();
    assert_eq!((e.code, e.load_report), (8, None));
    server.set_call_load(Some(switchyard_testserver::OrcaLoad {
        eps: 3.0,
        rps_fractional: 9.0,
        ..Default::default()
    }));
    let e = grpc::unary(&h, "/echo.Echo/Unary", b"x", &md, Some(SOON)).unwrap_err();
    assert_eq!(e.code, 8);
    let report = e
        .load_report
        .as_ref()
        .and_then(orca::OrcaLoadReport::from_value);
    assert_eq!(report.map(|r| (r.eps, r.rps_fractional)), Some((3.0, 9.0)));
}

/// Several load reports with an error are none, as with an OK answer
/// (gRPC-Go's `ToLoadReport` refuses "multiple orca load reports" from
/// whatever `Trailer()` holds, failed calls' included).
#[test]
fn an_error_with_two_load_reports_keeps_neither() {
    use base64::Engine;
    let one = base64::engine::general_purpose::STANDARD.encode(prost::Message::encode_to_vec(
        &orca::OrcaLoadReport {
            eps: 3.0,
            rps_fractional: 9.0,
            ..Default::default()
        },
    ));
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "8".parse().unwrap());
    trailers.append(orca::TRAILER, one.parse().unwrap());
    let e = CallError::new(8, "x").with_trailers(&trailers);
    assert!(e.load_report.is_some(), "one report counts");
    trailers.append(orca::TRAILER, one.parse().unwrap());
    let e = CallError::new(8, "x").with_trailers(&trailers);
    assert_eq!(e.load_report, None);
}

/// Keepalive settings as gRPC-Go takes them: a time of 0 (or longer than
/// any connection lives) is off, a timeout of 0 the default 20 s.
#[test]
fn keepalive_zero_and_forever_are_grpcs() {
    use crate::transport::Keepalive;
    let ka = |time: Duration, timeout: Duration| Keepalive {
        time,
        timeout,
        permit_without_calls: false,
    };
    assert_eq!(
        ka(Duration::ZERO, Duration::from_secs(1)).normalized(),
        None
    );
    assert_eq!(ka(Duration::MAX, Duration::from_secs(1)).normalized(), None);
    let n = ka(Duration::from_secs(10), Duration::ZERO)
        .normalized()
        .unwrap();
    assert_eq!(
        (n.time, n.timeout),
        (Duration::from_secs(10), Duration::from_secs(20))
    );
    let n = ka(Duration::from_secs(10), Duration::MAX)
        .normalized()
        .unwrap();
    assert!(n.timeout < Duration::MAX && n.timeout > Duration::from_secs(1_000_000));
    let same = ka(Duration::from_secs(10), Duration::from_secs(3));
    assert_eq!(same.normalized(), Some(same));
}

/// A call whose deadline has passed by the time it would be sent is not
/// sent: DEADLINE_EXCEEDED, and no HEADERS with "grpc-timeout: 0n" (gRPC-Go's
/// createHeaderFields fails such a stream before writing it).
#[test]
#[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
fn a_call_out_of_time_is_never_sent() {
    let (addr, seen, srv) = recording_peer();
    let lt = LoopThread::spawn(Target::Tcp(addr), TransportConfig::insecure());
    let h = lt.ready();
    let call = |timeout| grpc::unary(&h, "/echo.Echo/Unary", b"x", &[], Some(timeout));
    assert_eq!(
        call(Duration::ZERO).unwrap_err().code,
        code::DEADLINE_EXCEEDED
    );
    // A call with time left goes out after it on the same connection: the
    // peer has seen whatever the first one sent by the time it sees this.
    let sent = call(Duration::from_millis(300)).unwrap_err();
    assert_eq!(sent.code, code::DEADLINE_EXCEEDED);
    drop(lt);
    srv.join().unwrap();
    let headers = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(ty, _)| *ty == 1)
        .count();
    assert_eq!(headers, 1, "only the call with time left was sent");
}
