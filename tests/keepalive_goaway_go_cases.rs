//! Probe: gRPC-Go's client keepalive tests (gRFC A8;
//! internal/transport/keepalive_test.go, dial_test.go) and GOAWAY tests
//! (test/goaway_test.go) ported onto switchyard's managed connector. A
//! hand-written HTTP/2 server on 127.0.0.1 (as in tests/conn_go_cases.rs)
//! scripts SETTINGS, PING acks and GOAWAY frames exactly and logs what the
//! client sends (HEADERS, PING, GOAWAY, EOF) with times.
//!
//! Keepalive floor: gRPC-Go raises a client keepalive time under 10 s to
//! 10 s (`dialoptions.go` `WithKeepaliveParams`, `internal.KeepaliveMinPingTime`),
//! and its tests lower `internal.KeepaliveMinPingTime`. switchyard has the
//! same floor (`transport::MIN_KEEPALIVE_TIME`, applied in
//! `ManagedConnector::new`) and the same hook,
//! `switchyard::transport::set_min_keepalive_time_for_testing`
//! (process-wide): every test here sets it to `FLOOR` (100 ms) before it
//! builds its channel, so tests running in parallel agree.

#[path = "common/h2_frames.rs"]
mod h2_frames;
use h2_frames::*;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use switchyard::backoff::BackoffConfig;
use switchyard::ConnectivityState::*;
use switchyard::*;

/// The keepalive floor every test here uses (see the module docs).
const FLOOR: Duration = Duration::from_millis(100);
/// No server thread lives longer than this.
const LIFETIME: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(5);
const MAX_ID: u32 = 0x7fff_ffff;
const NO_ERROR: u32 = 0x0;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn floor() {
    switchyard::transport::set_min_keepalive_time_for_testing(FLOOR);
}

// ---------------------------------------------------------------------------
// The scripted server.

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Headers(u32),
    Rst(u32, u32),
    GoAway(u32, u32, Vec<u8>),
    Ping,
    Eof,
}

type Log = Arc<Mutex<Vec<(usize, Ev, Instant)>>>;
type Handler = Arc<dyn Fn(&mut H2) -> io::Result<()> + Send + Sync>;

struct Server {
    addr: SocketAddr,
    log: Log,
    accepts: Arc<Mutex<Vec<Instant>>>,
    /// Whether PINGs are acknowledged (server-wide, live).
    acks: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: impl Fn(&mut H2) -> io::Result<()> + Send + Sync + 'static) -> Server {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let accepts: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let acks = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (lg, acc, ak, st) = (log.clone(), accepts.clone(), acks.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let end = Instant::now() + LIFETIME;
            let mut conns = Vec::new();
            while !st.load(Ordering::Acquire) && Instant::now() < end {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let index = {
                            let mut a = acc.lock().unwrap();
                            a.push(Instant::now());
                            a.len() - 1
                        };
                        let (lg, ak, st, h) = (lg.clone(), ak.clone(), st.clone(), handler.clone());
                        conns.push(thread::spawn(move || {
                            sock.set_nonblocking(false).unwrap();
                            sock.set_read_timeout(Some(TICK)).unwrap();
                            let mut c = H2 {
                                sock,
                                index,
                                log: lg,
                                acks: ak,
                                stop: st,
                                end: Instant::now() + LIFETIME,
                                buf: Vec::new(),
                            };
                            let _ = h(&mut c);
                        }));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(TICK),
                    Err(_) => break,
                }
            }
            st.store(true, Ordering::Release);
            for c in conns {
                let _ = c.join();
            }
        });
        Server {
            addr,
            log,
            accepts,
            acks,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> Vec<Instant> {
        self.accepts.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<(usize, Ev, Instant)> {
        self.log.lock().unwrap().clone()
    }

    fn wait_for(&self, within: Duration, pred: impl Fn(&[(usize, Ev, Instant)]) -> bool) -> bool {
        let end = Instant::now() + within;
        loop {
            if pred(&self.events()) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// When connection `conn` saw each PING.
    fn pings(&self, conn: usize) -> Vec<Instant> {
        self.events()
            .into_iter()
            .filter(|(i, e, _)| *i == conn && *e == Ev::Ping)
            .map(|(_, _, t)| t)
            .collect()
    }

    fn eof(&self, conn: usize) -> Option<Instant> {
        self.events()
            .into_iter()
            .find(|(i, e, _)| *i == conn && *e == Ev::Eof)
            .map(|(_, _, t)| t)
    }

    fn wait_eof(&self, conn: usize, within: Duration) -> bool {
        self.wait_for(within, |l| {
            l.iter().any(|(i, e, _)| *i == conn && *e == Ev::Eof)
        })
    }

    /// The streams whose HEADERS connection `conn` saw.
    fn streams(&self, conn: usize) -> Vec<u32> {
        self.events()
            .into_iter()
            .filter_map(|(i, e, _)| match e {
                Ev::Headers(s) if i == conn => Some(s),
                _ => None,
            })
            .collect()
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

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
}

struct H2 {
    sock: TcpStream,
    index: usize,
    log: Log,
    acks: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    end: Instant,
    buf: Vec<u8>,
}

impl H2 {
    fn note(&self, ev: Ev) {
        self.log
            .lock()
            .unwrap()
            .push((self.index, ev, Instant::now()));
    }

    fn over(&self) -> bool {
        self.stop.load(Ordering::Acquire) || Instant::now() >= self.end
    }

    /// Reads more bytes: Ok(Some(false)) on EOF, Ok(None) when `until`
    /// passed first.
    fn fill_until(&mut self, until: Option<Instant>) -> io::Result<Option<bool>> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.over() {
                return Err(io::Error::other("server over"));
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                return Ok(None);
            }
            match self.sock.read(&mut chunk) {
                Ok(0) => return Ok(Some(false)),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(Some(true));
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return if e.kind() == io::ErrorKind::ConnectionReset {
                        Ok(Some(false))
                    } else {
                        Err(e)
                    }
                }
            }
        }
    }

    fn preface(&mut self) -> io::Result<()> {
        while self.buf.len() < 24 {
            if self.fill_until(None)? != Some(true) {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.buf.drain(..24);
        Ok(())
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// Preface read, our SETTINGS sent.
    fn greet(&mut self) -> io::Result<()> {
        self.preface()?;
        self.send(&frame(SETTINGS, 0, 0, &[]))
    }

    /// The next frame (SETTINGS acked here; PINGs acked while `acks`).
    /// Ok(None): EOF (logged). Err(TimedOut): `until` passed.
    fn next_until(&mut self, until: Option<Instant>) -> io::Result<Option<Frame>> {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap())
                            & 0x7fff_ffff,
                    };
                    let payload = self.buf[9..9 + len].to_vec();
                    self.buf.drain(..9 + len);
                    match f.kind {
                        SETTINGS if f.flags & ACK == 0 => {
                            self.send(&frame(SETTINGS, ACK, 0, &[]))?
                        }
                        PING if f.flags & ACK == 0 => {
                            self.note(Ev::Ping);
                            if self.acks.load(Ordering::Acquire) {
                                self.send(&frame(PING, ACK, 0, &payload))?
                            }
                        }
                        HEADERS => self.note(Ev::Headers(f.stream)),
                        RST_STREAM => {
                            let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                            self.note(Ev::Rst(f.stream, code));
                        }
                        GOAWAY => {
                            let last = u32::from_be_bytes(payload[..4].try_into().unwrap());
                            let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                            self.note(Ev::GoAway(last, code, payload[8..].to_vec()));
                        }
                        _ => {}
                    }
                    return Ok(Some(f));
                }
            }
            match self.fill_until(until)? {
                Some(true) => {}
                Some(false) => {
                    self.note(Ev::Eof);
                    return Ok(None);
                }
                None => return Err(io::ErrorKind::TimedOut.into()),
            }
        }
    }

    fn next(&mut self) -> io::Result<Option<Frame>> {
        self.next_until(None)
    }

    /// The next request's stream id (once its HEADERS came).
    fn request(&mut self) -> io::Result<Option<u32>> {
        while let Some(f) = self.next()? {
            if f.kind == HEADERS {
                return Ok(Some(f.stream));
            }
        }
        Ok(None)
    }

    /// The next `n` requests' stream ids.
    fn requests(&mut self, n: usize) -> io::Result<Option<Vec<u32>>> {
        let mut ids = Vec::new();
        while ids.len() < n {
            match self.request()? {
                Some(s) => ids.push(s),
                None => return Ok(None),
            }
        }
        Ok(Some(ids))
    }

    /// Reads (acknowledging) for `d`, answering nothing; Ok(false) on EOF.
    fn idle_for(&mut self, d: Duration) -> io::Result<bool> {
        let until = Instant::now() + d;
        loop {
            match self.next_until(Some(until)) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads (acknowledging) until the client closes.
    fn until_eof(&mut self) -> io::Result<()> {
        while self.next()?.is_some() {}
        Ok(())
    }

    fn answer_ok(&mut self, stream: u32) -> io::Result<()> {
        let mut block = lit(b":status", b"200");
        block.extend(lit(b"content-type", b"application/grpc"));
        let mut all = frame(HEADERS, END_HEADERS, stream, &block);
        all.extend(frame(DATA, 0, stream, &msg(b"ok")));
        all.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &lit(b"grpc-status", b"0"),
        ));
        self.send(&all)
    }

    fn goaway(&mut self, last: u32, code: u32, debug: &[u8]) -> io::Result<()> {
        let mut p = last.to_be_bytes().to_vec();
        p.extend(code.to_be_bytes());
        p.extend_from_slice(debug);
        self.send(&frame(GOAWAY, 0, 0, &p))
    }

    /// SETTINGS, then every request answered "ok".
    fn serve_good(&mut self) -> io::Result<()> {
        self.greet()?;
        while let Some(s) = self.request()? {
            self.answer_ok(s)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Client side.

fn fast_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        ..Default::default()
    }
}

fn channel_ka(rt: &Runtime, server: &Server, ka: Option<Keepalive>) -> Channel {
    floor();
    Channel::new(
        rt,
        &format!("ipv4:{}", server.addr),
        None,
        ChannelOptions {
            transport: Some(TransportConfig {
                keepalive: ka,
                ..TransportConfig::insecure()
            }),
            backoff: fast_backoff(),
            ..Default::default()
        },
    )
    .unwrap()
}

fn channel(rt: &Runtime, server: &Server) -> Channel {
    channel_ka(rt, server, None)
}

fn ka(time_ms: u64, timeout_ms: u64, permit_without_calls: bool) -> Option<Keepalive> {
    Some(Keepalive {
        time: Duration::from_millis(time_ms),
        timeout: Duration::from_millis(timeout_ms),
        permit_without_calls,
    })
}

fn opts(deadline: Duration, wait_for_ready: bool) -> CallOptions<'static> {
    CallOptions {
        deadline: Some(Instant::now() + deadline),
        wait_for_ready: Some(wait_for_ready),
        ..Default::default()
    }
}

fn call(ch: &Channel, deadline: Duration, wait_for_ready: bool) -> Result<UnaryResponse, Status> {
    ch.reader()
        .unary("/echo.Echo/Unary", b"hi", &opts(deadline, wait_for_ready))
}

/// Starts a call on the loop; its result comes on the receiver.
fn start(
    ch: &Channel,
    deadline: Duration,
    wait_for_ready: bool,
) -> mpsc::Receiver<Result<UnaryResponse, Status>> {
    let (tx, rx) = mpsc::channel();
    ch.unary_start(
        "/echo.Echo/Unary",
        b"hi",
        &opts(deadline, wait_for_ready),
        move |r| {
            let _ = tx.send(r);
        },
    )
    .unwrap();
    rx
}

fn outcome(r: &Result<UnaryResponse, Status>) -> Result<Vec<u8>, (Code, String)> {
    r.as_ref()
        .map(|r| r.message.clone())
        .map_err(|s| (s.code(), s.message().to_string()))
}

/// Polls the channel's state until `until` holds (bounded); every
/// distinct state seen on the way.
fn states_until(
    ch: &Channel,
    within: Duration,
    until: impl Fn(ConnectivityState) -> bool,
) -> Vec<ConnectivityState> {
    let end = Instant::now() + within;
    let mut seen = vec![ch.state()];
    while !until(*seen.last().unwrap()) && Instant::now() < end {
        thread::sleep(Duration::from_millis(2));
        let s = ch.state();
        if *seen.last().unwrap() != s {
            seen.push(s);
        }
    }
    seen
}

fn wait_ready(ch: &Channel) {
    ch.connect().unwrap();
    let seen = states_until(ch, Duration::from_secs(5), |s| s == Ready);
    assert_eq!(seen.last(), Some(&Ready), "never READY: {seen:?}");
}

fn gaps(t: &[Instant]) -> Vec<f64> {
    t.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect()
}

// ===========================================================================
// (a) Client keepalive: internal/transport/keepalive_test.go.

/// gRPC-Go `TestKeepaliveClientClosesUnresponsiveServer`: PermitWithoutStream,
/// a server that never acks PINGs: the client closes the transport
/// (`keepalive()`: "keepalive ping failed to receive ACK within timeout"),
/// and (clientconn.go `createTransport`'s onClose) the subchannel goes
/// IDLE; the next use reconnects.
#[test]
fn keepalive_client_closes_unresponsive_server() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        c.until_eof()
    });
    server.acks.store(false, Ordering::Release);
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 100, true));
    wait_ready(&ch);
    assert!(
        server.wait_eof(0, Duration::from_secs(3)),
        "the client kept a connection whose server never acks: {:?}",
        server.events()
    );
    let pings = server.pings(0);
    assert!(
        !pings.is_empty(),
        "closed without pinging: {:?}",
        server.events()
    );
    let waited = (server.eof(0).unwrap() - pings[0]).as_secs_f64();
    assert!(
        (0.08..1.5).contains(&waited),
        "closed {waited:.3} s after the first unacked ping, want ~0.1 s (the timeout)"
    );
    let seen = states_until(&ch, Duration::from_secs(2), |s| s != Ready);
    assert_eq!(
        seen.last(),
        Some(&Idle),
        "after the keepalive timeout: {seen:?}"
    );
    server.acks.store(true, Ordering::Release);
    let r = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r), Ok(b"ok".to_vec()));
    assert_eq!(server.accepted().len(), 2);
    ch.close();
}

/// gRPC-Go `http2Client.Close` (called by `keepalive()` with its error):
/// before closing the transport the client writes GOAWAY(NO_ERROR, "client
/// transport shutdown") (RFC 9113 6.8 SHOULD), also when the close is a
/// keepalive timeout — the server's TCP still takes writes.
#[test]
fn keepalive_timeout_sends_goaway_before_closing() {
    let server = Server::start(|c| {
        c.greet()?;
        c.until_eof()
    });
    server.acks.store(false, Ordering::Release);
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 100, true));
    wait_ready(&ch);
    assert!(
        server.wait_eof(0, Duration::from_secs(3)),
        "{:?}",
        server.events()
    );
    let log: Vec<Ev> = server.events().into_iter().map(|(_, e, _)| e).collect();
    assert!(
        log.iter().any(|e| matches!(e, Ev::GoAway(_, NO_ERROR, _))),
        "no GOAWAY before the keepalive close: {log:?}"
    );
    ch.close();
}

/// gRPC-Go `TestKeepaliveClientOpenWithUnresponsiveServer` (and
/// `TestKeepaliveServerEnforcementWithDormantKeepaliveOnClient`): without
/// PermitWithoutStream and with no stream, keepalive is dormant: no PING
/// at all, so an unresponsive server does not cost the connection; a new
/// stream works on it.
#[test]
fn keepalive_client_open_with_unresponsive_server_without_calls() {
    let server = Server::start(|c| {
        c.greet()?;
        while let Some(s) = c.request()? {
            c.answer_ok(s)?;
        }
        Ok(())
    });
    server.acks.store(false, Ordering::Release);
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 100, false));
    wait_ready(&ch);
    thread::sleep(Duration::from_millis(700));
    assert_eq!(server.pings(0).len(), 0, "pings with no call and no permit");
    assert_eq!(server.eof(0), None);
    assert_eq!(ch.state(), Ready);
    let r = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r), Ok(b"ok".to_vec()));
    assert_eq!(server.accepted().len(), 1);
    ch.close();
}

/// gRPC-Go `TestKeepaliveClientClosesWithActiveStreams`: no
/// PermitWithoutStream, a stream open (the server never answers it), the
/// server stops acking: the client closes the transport; the call on it
/// fails UNAVAILABLE long before its deadline, saying keepalive.
#[test]
fn keepalive_client_closes_with_active_streams() {
    let server = Server::start(|c| {
        c.greet()?;
        if c.request()?.is_some() {
            c.acks.store(false, Ordering::Release);
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 200, false));
    wait_ready(&ch);
    let started = Instant::now();
    let r = call(&ch, Duration::from_secs(8), false);
    let took = started.elapsed();
    let o = outcome(&r);
    assert!(
        matches!(&o, Err((Code::Unavailable, m)) if m.contains("keepalive")),
        "{o:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(!server.pings(0).is_empty());
    assert!(
        server.wait_eof(0, Duration::from_secs(2)),
        "{:?}",
        server.events()
    );
    ch.close();
}

/// gRPC-Go `TestKeepaliveClientStaysHealthyWithResponsiveServer`: pings
/// (PermitWithoutStream) that the server acks keep the transport healthy.
#[test]
fn keepalive_client_stays_healthy_with_responsive_server() {
    let server = Server::start(|c| c.serve_good());
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(110, 1000, true));
    wait_ready(&ch);
    thread::sleep(Duration::from_millis(700));
    assert!(
        server.pings(0).len() >= 3,
        "too few keepalive pings: {:?}",
        server.events()
    );
    assert_eq!(server.eof(0), None);
    assert_eq!(ch.state(), Ready);
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), false)),
        Ok(b"ok".to_vec())
    );
    assert_eq!(server.accepted().len(), 1);
    ch.close();
}

/// gRPC-Go `TestKeepaliveClientFrequency`: with acks, a ping goes out
/// every `Time`, not every `Time + Timeout` (the bug that test guards).
#[test]
fn keepalive_pings_every_time_not_time_plus_timeout() {
    let server = Server::start(|c| c.serve_good());
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(150, 2000, true));
    wait_ready(&ch);
    assert!(
        server.wait_for(Duration::from_secs(3), |_| server.pings(0).len() >= 6),
        "{:?}",
        server.events()
    );
    let g = gaps(&server.pings(0));
    assert!(
        g.iter().all(|g| (0.13..0.5).contains(g)),
        "ping gaps {g:?} s, want ~0.15 s (Time), not 2.15 s"
    );
    ch.close();
}

/// gRPC-Go `dialoptions.go` `WithKeepaliveParams`: a Time under
/// `internal.KeepaliveMinPingTime` (0 included) is raised to it. Here the
/// floor is lowered to `FLOOR` (100 ms), as gRPC-Go's tests lower theirs:
/// 10 ms and 0 both ping every ~100 ms.
#[test]
fn keepalive_time_under_the_floor_is_raised_to_it() {
    for time_ms in [10, 0] {
        let server = Server::start(|c| c.serve_good());
        let rt = Runtime::new().unwrap();
        let ch = channel_ka(&rt, &server, ka(time_ms, 1000, true));
        wait_ready(&ch);
        assert!(
            server.wait_for(Duration::from_secs(3), |_| server.pings(0).len() >= 4),
            "time {time_ms} ms: {:?}",
            server.events()
        );
        let g = gaps(&server.pings(0));
        assert!(
            g.iter().all(|g| *g >= FLOOR.as_secs_f64() * 0.85),
            "time {time_ms} ms: ping gaps {g:?} s, want >= {FLOOR:?}"
        );
        ch.close();
    }
}

/// gRPC-Go `TestClientUpdatesParamsAfterGoAway` (dial_test.go) and gRFC
/// A8: each GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") doubles the
/// keepalive time of the channel's next connections (`addrConn.adjustParams`:
/// 2 x the time the connection that got it used): 100 ms, then 200 ms,
/// then 400 ms, the first ping coming that long after each connection is
/// up. The subchannel goes IDLE each time (never TRANSIENT_FAILURE).
#[test]
fn too_many_pings_doubles_keepalive_time_on_each_new_connection() {
    let server = Server::start(|c| {
        c.greet()?;
        if c.index >= 2 {
            while let Some(s) = c.request()? {
                c.answer_ok(s)?;
            }
            return Ok(());
        }
        while let Some(f) = c.next()? {
            if f.kind == PING && f.flags & ACK == 0 {
                c.goaway(0, ENHANCE_YOUR_CALM, b"too_many_pings")?;
                break;
            }
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 2000, true));
    let mut firsts = Vec::new();
    let mut states = Vec::new();
    for conn in 0..3 {
        ch.connect().unwrap();
        assert!(
            server.wait_for(Duration::from_secs(3), |_| !server.pings(conn).is_empty()),
            "no ping on connection {conn}: {:?}",
            server.events()
        );
        firsts.push((server.pings(conn)[0] - server.accepted()[conn]).as_secs_f64());
        if conn < 2 {
            assert!(
                server.wait_eof(conn, Duration::from_secs(2)),
                "{:?}",
                server.events()
            );
            states.extend(states_until(&ch, Duration::from_secs(2), |s| s == Idle));
        }
    }
    assert!(!states.contains(&TransientFailure), "{states:?}");
    let want = [0.1, 0.2, 0.4];
    for (got, want) in firsts.iter().zip(want) {
        assert!(
            *got >= want * 0.9 && *got <= want * 1.5 + 0.1,
            "first-ping delays {firsts:?} s, want ~{want:?} (doubling each time)"
        );
    }
    ch.close();
}

/// gRPC-Go `TestDetailedGoAwayErrorOnAbruptClosePropagatesToRPCError`: a
/// call in flight when the server sends GOAWAY(ENHANCE_YOUR_CALM,
/// "too_many_pings") (last stream id = that call's, so processed) and then
/// closes the connection fails UNAVAILABLE, its message carrying
/// `received prior goaway: code: ENHANCE_YOUR_CALM, debug data: "too_many_pings"`.
#[test]
fn too_many_pings_goaway_then_close_fails_the_call_saying_so() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        while let Some(f) = c.next()? {
            if f.kind == PING && f.flags & ACK == 0 {
                c.goaway(s, ENHANCE_YOUR_CALM, b"too_many_pings")?;
                thread::sleep(Duration::from_millis(50));
                return Ok(()); // hang up
            }
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 5000, false));
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(5), true);
    let o = outcome(&r);
    let want = r#"received prior goaway: code: ENHANCE_YOUR_CALM, debug data: "too_many_pings""#;
    assert!(
        matches!(&o, Err((Code::Unavailable, m)) if m.contains(want)),
        "{o:?}"
    );
    ch.close();
}

// ===========================================================================
// (b) GOAWAY: test/goaway_test.go.

/// gRPC-Go `TestDetailedGoAwayErrorOnGracefulClosePropagatesToRPCError`
/// (MaxConnectionAge, grace ~0: GOAWAY(2^31-1), GOAWAY(last id), close):
/// the call in flight fails UNAVAILABLE with "received prior goaway: code:
/// NO_ERROR" in its message.
#[test]
fn graceful_goaway_then_close_fails_the_call_saying_prior_goaway() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        c.goaway(MAX_ID, NO_ERROR, b"")?;
        c.idle_for(Duration::from_millis(50))?;
        c.goaway(s, NO_ERROR, b"")?;
        c.idle_for(Duration::from_millis(50))?;
        Ok(()) // hang up
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(5), true);
    let o = outcome(&r);
    assert!(
        matches!(&o, Err((Code::Unavailable, m)) if m.contains("received prior goaway: code: NO_ERROR")),
        "{o:?}"
    );
    ch.close();
}

/// The same, checked against gRPC-Go's exact wording (`setGoAwayReason`):
/// a GOAWAY without debug data is described as `code: NO_ERROR` alone,
/// with no `, debug data: ""` part.
#[test]
fn goaway_without_debug_data_is_described_as_grpc_go_does() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        c.goaway(s, NO_ERROR, b"")?;
        c.idle_for(Duration::from_millis(50))?;
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let r = call(&ch, Duration::from_secs(5), true);
    let o = outcome(&r);
    assert!(
        matches!(&o, Err((Code::Unavailable, m))
            if m.ends_with("received prior goaway: code: NO_ERROR")),
        "{o:?}"
    );
    ch.close();
}

/// gRPC-Go `TestServerGoAwayPendingRPC` / `TestServerMultipleGoAwayPendingRPC`
/// and `handleGoAway`: a call in flight when GOAWAY(NO_ERROR, 2^31-1)
/// comes completes normally on the draining connection; a call started
/// after the GOAWAY goes to a new connection; once the old one's last
/// call is done the client closes it.
#[test]
fn goaway_pending_rpc_completes_and_new_rpcs_use_a_new_connection() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let server = Server::start(move |c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        c.goaway(MAX_ID, NO_ERROR, b"")?;
        // Hold the call until the test says so, reading meanwhile.
        loop {
            if go_rx.lock().unwrap().try_recv().is_ok() {
                break;
            }
            if !c.idle_for(Duration::from_millis(20))? {
                return Ok(());
            }
        }
        c.answer_ok(s)?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let pending = start(&ch, Duration::from_secs(8), false);
    let seen = states_until(&ch, Duration::from_secs(3), |s| s != Ready);
    assert_eq!(seen.last(), Some(&Idle), "after the GOAWAY: {seen:?}");
    // A new fail-fast call: on a new connection.
    let r = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r), Ok(b"ok".to_vec()), "the call after the GOAWAY");
    assert_eq!(server.accepted().len(), 2);
    assert_eq!(server.streams(0).len(), 1, "{:?}", server.events());
    assert_eq!(server.streams(1).len(), 1, "{:?}", server.events());
    go_tx.send(()).unwrap();
    let p = pending
        .recv_timeout(Duration::from_secs(5))
        .expect("pending call");
    assert_eq!(
        outcome(&p),
        Ok(b"ok".to_vec()),
        "the call in flight at the GOAWAY"
    );
    assert!(
        server.wait_eof(0, Duration::from_secs(2)),
        "the drained connection stayed open: {:?}",
        server.events()
    );
    ch.close();
}

/// gRPC-Go `TestServerGoAway`: after the server's graceful stop (GOAWAY,
/// listener closed) a new fail-fast RPC fails UNAVAILABLE (or INTERNAL).
/// Here connections after the first are closed at once.
#[test]
fn goaway_then_server_gone_new_fail_fast_rpc_fails_unavailable() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return Ok(()); // hang up at once
        }
        c.greet()?;
        let Some(s) = c.request()? else { return Ok(()) };
        c.answer_ok(s)?;
        c.idle_for(Duration::from_millis(50))?;
        c.goaway(s, NO_ERROR, b"")?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), true)),
        Ok(b"ok".to_vec())
    );
    states_until(&ch, Duration::from_secs(3), |s| s != Ready);
    let started = Instant::now();
    let r = call(&ch, Duration::from_secs(5), false);
    let o = outcome(&r);
    assert!(
        matches!(&o, Err((Code::Unavailable | Code::Internal, _))),
        "{o:?} after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    ch.close();
}

/// gRPC-Go `handleGoAway` + `shouldRetry` (gRFC A6 transparent retry):
/// streams above the GOAWAY's last-stream-id are "unprocessed" and retried
/// transparently on a new connection, fail-fast calls included; the one
/// at the id is answered on the old connection.
#[test]
fn streams_above_goaway_last_stream_id_are_retried_transparently() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        let Some(ids) = c.requests(3)? else {
            return Ok(());
        };
        let low = *ids.iter().min().unwrap();
        c.goaway(low, NO_ERROR, b"")?;
        c.answer_ok(low)?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let rxs: Vec<_> = (0..3)
        .map(|_| start(&ch, Duration::from_secs(5), false))
        .collect();
    let outs: Vec<_> = rxs
        .iter()
        .map(|rx| outcome(&rx.recv_timeout(Duration::from_secs(8)).expect("no result")))
        .collect();
    assert!(
        outs.iter().all(|o| *o == Ok(b"ok".to_vec())),
        "{outs:?}; server saw {:?}",
        server.events()
    );
    assert_eq!(server.streams(0).len(), 3);
    assert_eq!(server.streams(1).len(), 2, "{:?}", server.events());
    ch.close();
}

/// gRFC A9 / gRPC-Go `handleGoAway` with two GOAWAYs
/// (`TestServerMultipleGoAwayPendingRPC`): GOAWAY(2^31-1) kills nothing;
/// a second GOAWAY with a lower last-stream-id closes the streams between
/// the two ids as unprocessed (retried transparently, here they succeed on
/// a new connection); the stream at or below it completes on the old one,
/// which then closes.
#[test]
fn second_goaway_with_lower_last_stream_id_retries_the_streams_above_it() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        let Some(ids) = c.requests(3)? else {
            return Ok(());
        };
        let low = *ids.iter().min().unwrap();
        c.goaway(MAX_ID, NO_ERROR, b"")?;
        c.idle_for(Duration::from_millis(100))?;
        c.goaway(low, NO_ERROR, b"")?;
        c.idle_for(Duration::from_millis(100))?;
        c.answer_ok(low)?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let rxs: Vec<_> = (0..3)
        .map(|_| start(&ch, Duration::from_secs(5), true))
        .collect();
    let outs: Vec<_> = rxs
        .iter()
        .map(|rx| outcome(&rx.recv_timeout(Duration::from_secs(8)).expect("no result")))
        .collect();
    assert!(
        outs.iter().all(|o| *o == Ok(b"ok".to_vec())),
        "{outs:?}; server saw {:?}",
        server.events()
    );
    assert_eq!(server.streams(1).len(), 2, "{:?}", server.events());
    assert!(
        server.wait_eof(0, Duration::from_secs(2)),
        "{:?}",
        server.events()
    );
    ch.close();
}

/// A call refused by GOAWAY on its first connection and again on its
/// second (never processed either time): gRPC-Go retries such a stream
/// transparently only on the call's first attempt (`shouldRetry`:
/// `cs.firstAttempt && unprocessed`) and fails it UNAVAILABLE; switchyard
/// retries a GOAWAY-refused attempt like an unsent one, up to 16 times
/// (a deliberate difference, in the README: a rolling restart refuses a
/// call more than once), so a third connection serves it.
#[test]
fn a_call_refused_by_goaway_on_two_connections_is_served_by_a_third() {
    let server = Server::start(|c| match c.index {
        0 => {
            c.greet()?;
            let Some(warm) = c.request()? else {
                return Ok(());
            };
            c.answer_ok(warm)?;
            if c.request()?.is_some() {
                c.goaway(warm, NO_ERROR, b"")?;
            }
            c.until_eof()
        }
        1 => {
            c.greet()?;
            if c.request()?.is_some() {
                c.goaway(0, NO_ERROR, b"")?;
            }
            c.until_eof()
        }
        _ => c.serve_good(),
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), true)),
        Ok(b"ok".to_vec())
    );
    let r = call(&ch, Duration::from_secs(5), true);
    assert_eq!(
        outcome(&r),
        Ok(b"ok".to_vec()),
        "server saw {:?}",
        server.events()
    );
    assert_eq!(server.accepted().len(), 3);
    ch.close();
}

/// gRPC-Go `TestGoAwayThenClose`: a long call on connection 1; the server
/// sends GOAWAY; the channel goes IDLE; the next call makes connection 2;
/// then connection 1 is hard-closed: the long call fails, and connection 2
/// is not disturbed (no state change, no new connection, 10 calls succeed
/// on it).
#[test]
fn goaway_then_close_does_not_disturb_the_new_connection() {
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let close_rx = Mutex::new(close_rx);
    let server = Server::start(move |c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        if c.request()?.is_none() {
            return Ok(());
        }
        c.goaway(MAX_ID, NO_ERROR, b"")?;
        loop {
            if close_rx.lock().unwrap().try_recv().is_ok() {
                return Ok(()); // hard close, the call unanswered
            }
            if !c.idle_for(Duration::from_millis(20))? {
                return Ok(());
            }
        }
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    let long = start(&ch, Duration::from_secs(10), false);
    let seen = states_until(&ch, Duration::from_secs(3), |s| s == Idle);
    assert_eq!(seen.last(), Some(&Idle), "{seen:?}");
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), false)),
        Ok(b"ok".to_vec())
    );
    assert_eq!(server.accepted().len(), 2);
    close_tx.send(()).unwrap();
    let l = long
        .recv_timeout(Duration::from_secs(5))
        .expect("the long call never ended");
    assert!(
        matches!(outcome(&l), Err((Code::Unavailable, _))),
        "{:?}",
        outcome(&l)
    );
    let mut states = vec![ch.state()];
    for i in 0..10 {
        let r = call(&ch, Duration::from_secs(5), false);
        assert_eq!(
            outcome(&r),
            Ok(b"ok".to_vec()),
            "call {i} after the old connection closed"
        );
        let s = ch.state();
        if states.last() != Some(&s) {
            states.push(s);
        }
    }
    assert_eq!(states, vec![Ready]);
    assert_eq!(server.accepted().len(), 2);
    ch.close();
}

/// gRPC-Go `TestGoAwayStreamIDSmallerThanCreatedStreams`: GOAWAY(last
/// id 1) while the client is creating many streams: no deadlock; every
/// call ends (here: OK, the unprocessed ones and later ones on a new
/// connection).
#[test]
fn goaway_below_created_streams_while_creating_more_does_not_deadlock() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        let Some(ids) = c.requests(5)? else {
            return Ok(());
        };
        c.goaway(1, NO_ERROR, b"")?;
        if ids.contains(&1) {
            c.answer_ok(1)?;
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    let mut rxs = Vec::new();
    for i in 0..20 {
        rxs.push(start(&ch, Duration::from_secs(6), true));
        if i == 9 {
            server.wait_for(Duration::from_secs(3), |l| {
                l.iter().any(|(_, e, _)| matches!(e, Ev::Headers(_)))
            });
            thread::sleep(Duration::from_millis(50));
        }
    }
    let outs: Vec<_> = rxs
        .iter()
        .map(|rx| {
            rx.recv_timeout(Duration::from_secs(10))
                .map(|r| outcome(&r))
        })
        .collect();
    assert!(
        outs.iter().all(|o| o.is_ok()),
        "calls never ended: {outs:?}"
    );
    assert!(
        outs.iter().all(|o| *o == Ok(Ok(b"ok".to_vec()))),
        "{outs:?}; server saw {:?}",
        server.events()
    );
    ch.close();
}

/// gRPC-Go `TestClientSendsAGoAway`: closing the channel sends the server
/// GOAWAY(NO_ERROR) before the connection closes.
#[test]
fn closing_the_channel_sends_goaway_no_error() {
    let server = Server::start(|c| {
        c.greet()?;
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &server);
    wait_ready(&ch);
    ch.close();
    assert!(
        server.wait_eof(0, Duration::from_secs(3)),
        "{:?}",
        server.events()
    );
    let log: Vec<Ev> = server.events().into_iter().map(|(_, e, _)| e).collect();
    let at = log
        .iter()
        .position(|e| matches!(e, Ev::GoAway(_, NO_ERROR, _)));
    let eof = log.iter().position(|e| *e == Ev::Eof);
    assert!(at.is_some() && at < eof, "{log:?}");
}

/// gRPC-Go `TestGracefulClientOnGoAway`: against a real server that sends
/// a graceful GOAWAY every 100 ms (gRPC-Go's MaxConnectionAge = 100 ms),
/// back-to-back fail-fast RPCs for a second never see an error.
#[test]
fn rpcs_never_fail_while_the_server_goaways_every_100ms() {
    use switchyard_testserver::{Listen, ServerOptions, TestServer};
    let srv = Arc::new(
        TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap(),
    );
    let rt = Runtime::new().unwrap();
    floor();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", srv.addr()),
        None,
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            backoff: fast_backoff(),
            ..Default::default()
        },
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ager = {
        let (srv, stop) = (srv.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                thread::sleep(Duration::from_millis(100));
                srv.goaway();
            }
        })
    };
    let end = Instant::now() + Duration::from_secs(1);
    let mut r = ch.reader();
    let (mut n, mut failed) = (0, Vec::new());
    while Instant::now() < end {
        match r.unary(
            "/echo.Echo/Unary",
            b"hi",
            &opts(Duration::from_secs(5), false),
        ) {
            Ok(_) => n += 1,
            Err(s) => failed.push(s),
        }
    }
    stop.store(true, Ordering::Release);
    ager.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        n + failed.len()
    );
    assert!(n > 10, "only {n} calls");
    ch.close();
}

/// gRPC-Go `TestKeepaliveServerEnforcementWithObeyingClientWithRPC` and
/// `keepalive()`'s dormancy: without PermitWithoutStream, PINGs go out
/// every `Time` while a call is in flight (the call still succeeds), and
/// stop once no call is left.
#[test]
fn keepalive_pings_while_a_call_runs_and_goes_dormant_after() {
    let server = Server::start(|c| {
        c.greet()?;
        while let Some(s) = c.request()? {
            if !c.idle_for(Duration::from_millis(700))? {
                return Ok(());
            }
            c.answer_ok(s)?;
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = channel_ka(&rt, &server, ka(100, 1000, false));
    wait_ready(&ch);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(server.pings(0).len(), 0, "pings before any call");
    let r = call(&ch, Duration::from_secs(5), false);
    assert_eq!(outcome(&r), Ok(b"ok".to_vec()));
    let during = server.pings(0).len();
    assert!(during >= 3, "only {during} pings during a 700 ms call");
    thread::sleep(Duration::from_millis(600));
    let after = server.pings(0).len();
    assert!(
        after <= during + 1,
        "pings went on with no call: {during} -> {after}"
    );
    assert_eq!(server.accepted().len(), 1);
    ch.close();
}

/// gRPC-Go round_robin (`endpointsharding`: a child reporting IDLE gets
/// `ExitIdle` at once): after a GOAWAY and the connection closing, the
/// subchannel goes IDLE and round_robin reconnects it by itself, with no
/// RPC (pick_first waits for the next pick; see conn_go_cases.rs).
#[test]
fn round_robin_reconnects_by_itself_after_goaway_and_close() {
    let server = Server::start(|c| {
        c.greet()?;
        if c.index == 0 {
            c.idle_for(Duration::from_millis(100))?;
            c.goaway(0, NO_ERROR, b"")?;
            c.idle_for(Duration::from_millis(50))?;
            return Ok(()); // close
        }
        while let Some(s) = c.request()? {
            c.answer_ok(s)?;
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    floor();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr),
        Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            backoff: fast_backoff(),
            ..Default::default()
        },
    )
    .unwrap();
    ch.connect().unwrap();
    let end = Instant::now() + Duration::from_secs(3);
    while server.accepted().len() < 2 && Instant::now() < end {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.accepted().len(), 2, "no reconnection without an RPC");
    let seen = states_until(&ch, Duration::from_secs(3), |s| s == Ready);
    assert_eq!(seen.last(), Some(&Ready), "{seen:?}");
    assert_eq!(
        outcome(&call(&ch, Duration::from_secs(5), false)),
        Ok(b"ok".to_vec())
    );
    ch.close();
}

/// gRPC-Go `addrConn.adjustParams` raises `cc.keepaliveParams` — the
/// ClientConn's, shared by every subchannel: after backend A's
/// "too_many_pings" GOAWAY, a new connection to backend B (round_robin)
/// also pings at twice the time (200 ms, not 100 ms).
#[test]
fn too_many_pings_from_one_backend_doubles_keepalive_for_the_whole_channel() {
    let calmed = Arc::new(AtomicBool::new(false));
    let a = {
        let calmed = calmed.clone();
        Server::start(move |c| {
            c.greet()?;
            if c.index > 0 {
                return c.until_eof();
            }
            while let Some(f) = c.next()? {
                if f.kind == PING && f.flags & ACK == 0 {
                    c.goaway(0, ENHANCE_YOUR_CALM, b"too_many_pings")?;
                    calmed.store(true, Ordering::Release);
                    break;
                }
            }
            c.until_eof()
        })
    };
    let b = {
        let calmed = calmed.clone();
        Server::start(move |c| {
            c.greet()?;
            if c.index > 0 {
                return c.until_eof();
            }
            while !calmed.load(Ordering::Acquire) {
                if !c.idle_for(Duration::from_millis(10))? {
                    return Ok(());
                }
            }
            // Let the client take A's GOAWAY first.
            c.idle_for(Duration::from_millis(100))?;
            c.goaway(0, NO_ERROR, b"")?;
            c.idle_for(Duration::from_millis(50))?;
            Ok(())
        })
    };
    let rt = Runtime::new().unwrap();
    floor();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{},{}", a.addr, b.addr),
        Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
        ChannelOptions {
            transport: Some(TransportConfig {
                keepalive: ka(100, 2000, true),
                ..TransportConfig::insecure()
            }),
            backoff: fast_backoff(),
            ..Default::default()
        },
    )
    .unwrap();
    ch.connect().unwrap();
    assert!(
        b.wait_for(Duration::from_secs(4), |_| b.accepted().len() >= 2
            && !b.pings(1).is_empty()),
        "B never reconnected and pinged: {:?}",
        b.events()
    );
    let first = (b.pings(1)[0] - b.accepted()[1]).as_secs_f64();
    assert!(
        (0.18..0.4).contains(&first),
        "B's new connection pinged {first:.3} s after connecting, want ~0.2 s (doubled channel-wide)"
    );
    ch.close();
}
