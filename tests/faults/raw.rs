//! A hand-written HTTP/2 server on 127.0.0.1 that misbehaves on request:
//! frames are encoded by hand (HPACK literals without indexing), so it can
//! send what no real server library would.
//!
//! Every connection thread reads with a short timeout and ends when the
//! peer goes away, the server is dropped, or after `CONN_LIFETIME` at the
//! latest. When the mode changes, a connection whose fault broke it (silent,
//! garbage, frozen, ...) is closed, as by a server restart, so the client
//! reconnects to the well-behaved server; one whose fault is per call (RST,
//! bad status, oversized) answers its next calls correctly instead.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// No thread of the toolkit lives longer than this.
const CONN_LIFETIME: Duration = Duration::from_secs(60);
/// How often blocked reads look at the mode and the stop flag.
const TICK: Duration = Duration::from_millis(20);

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const PUSH_PROMISE: u8 = 0x5;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// The client's SETTINGS_MAX_FRAME_SIZE (h2's default, never raised).
const MAX_FRAME: usize = 16_384;

/// How the server treats connections accepted while this mode is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A correct gRPC server: answers every call with "ok".
    Good,
    /// Accepts, reads, never writes a byte.
    Silent,
    /// Answers the preface with bytes that are not HTTP/2.
    Garbage,
    /// A valid SETTINGS, then, when a request arrives, a frame no HTTP/2
    /// server may send: see [`invalid_frame`] for the kinds.
    InvalidFrames(u8),
    /// An HTTP/1.1 reply to the HTTP/2 preface.
    Http1,
    /// Once `n` requests are in flight on the first connection: GOAWAY
    /// with this error code naming only the first stream as processed, the
    /// rest never answered; later connections are well-behaved. NO_ERROR
    /// (0): the first stream is answered and the connection stays open,
    /// draining; any other code: the server hangs up without answering it.
    GoawayBelowInflight(usize, u32),
    /// SETTINGS_MAX_CONCURRENT_STREAMS 1 on the first connection, so that
    /// one request goes out and the client queues the rest; then a graceful
    /// GOAWAY (last stream id 2^31 - 1), the one request answered, and any
    /// request opened on this connection after the GOAWAY (RFC 9113 6.8:
    /// "MUST NOT open additional streams") never answered. Later
    /// connections are well-behaved.
    GoawayWithQueued,
    /// As `GoawayWithQueued`, but the server hangs up instead of sending a
    /// GOAWAY, the one request it took unanswered.
    HangUpWithQueued,
    /// Once two requests are in flight: a GOAWAY whose last stream id is 2,
    /// which no client-initiated stream can have (a connection error,
    /// PROTOCOL_ERROR, in gRPC-Go); nothing answered, the connection kept
    /// open. Later connections are well-behaved.
    GoawayEvenId,
    /// Once `n` requests are in flight on the first connection: a graceful
    /// shutdown's two GOAWAYs (A9, RFC 9113 6.8): the first with last stream
    /// id 2^31 - 1, then one naming only the first stream as processed; that
    /// stream is answered, the others never. Later connections are
    /// well-behaved.
    GoawayTwice(usize),
    /// Every request answered with RST_STREAM carrying this error code.
    RstStream(u32),
    /// A response whose gRPC length prefix announces this many bytes
    /// (16 KiB of them actually sent).
    Oversized(u32),
    /// `count` messages of `size` bytes in one unary response (kept within
    /// the client's initial 64 KiB window: this server ignores flow control).
    ManyMessages { count: usize, size: usize },
    /// Response headers of about this many bytes (HEADERS + CONTINUATION).
    HugeHeaders(usize),
    /// A message, then trailers of about this many bytes, `grpc-status: 0`
    /// first.
    HugeTrailers(usize),
    /// Every answer carries one field HTTP cannot represent: in the
    /// response headers, or (`trailers`) in the trailers after the message.
    BadField {
        name: &'static [u8],
        value: &'static [u8],
        trailers: bool,
    },
    /// HEADERS without END_HEADERS, then CONTINUATION frames without end.
    ContinuationFlood,
    /// A correct server that writes one byte every `ms` milliseconds.
    SlowLoris(u64),
    /// A prompt handshake, then each response one byte every `ms`
    /// milliseconds.
    SlowResponse(u64),
    /// Correct until the first request, then never reads or writes again
    /// (no PING ack either), the socket left open.
    Frozen,
    /// Answers with status 200, a message, and these raw trailers
    /// (`None`: trailers without grpc-status).
    BadStatus(Option<&'static [u8]>),
    /// Answers with status 200 and a message whose DATA frame ends the
    /// stream: no trailers at all.
    NoTrailers,
    /// Holds requests until `n` are in flight (or 2 s), then answers the
    /// `bad`-th (0-based) with a trailers-only response whose grpc-message
    /// carries a NUL byte, and every other one correctly. The bad block
    /// adds `grpc-status: 0` and then the bad grpc-message to the HPACK
    /// dynamic table; later answers send their status as index 63, which is
    /// `grpc-status: 0` only if the client's table took in the bad entry too.
    NulMessage { n: usize, bad: usize },
}

pub struct RawServer {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl RawServer {
    pub fn start(mode: Mode) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (m, st, acc) = (mode.clone(), stop.clone(), accepted.clone());
        let thread = thread::spawn(move || {
            let end = Instant::now() + CONN_LIFETIME;
            let mut conns = Vec::new();
            while !st.load(Ordering::Acquire) && Instant::now() < end {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let index = acc.fetch_add(1, Ordering::AcqRel);
                        let mode = *m.lock().unwrap();
                        let (m, st) = (m.clone(), st.clone());
                        conns.push(thread::spawn(move || {
                            let _ = serve(sock, mode, index, &m, &st);
                        }));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(TICK / 4),
                    Err(_) => break,
                }
            }
            st.store(true, Ordering::Release);
            for c in conns {
                let _ = c.join();
            }
        });
        RawServer {
            addr,
            mode,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }

    /// New connections get `mode`; open ones of another mode are closed.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

impl Drop for RawServer {
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
    payload: Vec<u8>,
}

/// One accepted connection: buffered frame reads with a short timeout.
struct Conn<'a> {
    sock: TcpStream,
    buf: Vec<u8>,
    preface: bool,
    mode: Mode,
    current: &'a Mutex<Mode>,
    stop: &'a AtomicBool,
    end: Instant,
    trickle: Option<Duration>,
    /// Close when the mode changes (the fault broke the connection).
    restart: bool,
}

impl Conn<'_> {
    /// Whether this connection should end: server stopped or restarted.
    fn over(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            || (self.restart && self.now_mode() != self.mode)
            || Instant::now() >= self.end
    }

    fn now_mode(&self) -> Mode {
        *self.current.lock().unwrap()
    }

    /// Reads more bytes; `Ok(false)` on timeout, `Err` on EOF or error.
    fn fill(&mut self) -> io::Result<bool> {
        let mut tmp = [0u8; 16_384];
        match self.sock.read(&mut tmp) {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The next frame, or `None` if none arrived within one tick.
    fn frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if !self.preface {
                if self.buf.len() >= 24 {
                    self.buf.drain(..24);
                    self.preface = true;
                    continue;
                }
            } else if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Ok(Some(f));
                }
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.trickle {
            None => self.sock.write_all(bytes),
            Some(gap) => {
                for b in bytes {
                    if self.over() {
                        return Err(io::ErrorKind::Interrupted.into());
                    }
                    self.sock.write_all(std::slice::from_ref(b))?;
                    thread::sleep(gap);
                }
                Ok(())
            }
        }
    }

    /// Answers SETTINGS and PING as a live peer must; returns the frame
    /// when it is anything else.
    fn control(&mut self, f: Frame) -> io::Result<Option<Frame>> {
        match f.kind {
            SETTINGS if f.flags & ACK == 0 => self.send(&frame(SETTINGS, ACK, 0, &[]))?,
            PING if f.flags & ACK == 0 => self.send(&frame(PING, ACK, 0, &f.payload))?,
            DATA if !f.payload.is_empty() => {
                // Give the connection window back: no call stalls on it.
                let n = (f.payload.len() as u32).to_be_bytes();
                self.send(&frame(WINDOW_UPDATE, 0, 0, &n))?;
                return Ok(Some(f));
            }
            SETTINGS | PING | WINDOW_UPDATE => {}
            _ => return Ok(Some(f)),
        }
        Ok(None)
    }

    /// The next complete request's stream id, answering control frames on
    /// the way; `None` if none completed within one tick.
    fn request(&mut self) -> io::Result<Option<u32>> {
        while let Some(f) = self.frame()? {
            let Some(f) = self.control(f)? else { continue };
            if matches!(f.kind, HEADERS | DATA) && f.flags & END_STREAM != 0 {
                return Ok(Some(f.stream));
            }
        }
        Ok(None)
    }

    fn answer_ok(&mut self, stream: u32) -> io::Result<()> {
        self.answer_ok_with(stream, &lit(b"grpc-status", b"0"))
    }

    /// "ok" with `trailers` as the trailer block.
    fn answer_ok_with(&mut self, stream: u32, trailers: &[u8]) -> io::Result<()> {
        let mut out = headers(stream, &response_head(), false);
        out.extend(frame(DATA, 0, stream, &grpc_message(b"ok")));
        out.extend(headers(stream, trailers, true));
        self.send(&out)
    }
}

/// Serves one connection in `mode` until it is over.
fn serve(
    sock: TcpStream,
    mode: Mode,
    index: usize,
    current: &Mutex<Mode>,
    stop: &AtomicBool,
) -> io::Result<()> {
    sock.set_read_timeout(Some(TICK))?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))?;
    sock.set_nodelay(true)?;
    let mut c = Conn {
        sock,
        buf: Vec::new(),
        preface: false,
        mode,
        current,
        stop,
        end: Instant::now() + CONN_LIFETIME,
        trickle: match mode {
            Mode::SlowLoris(ms) => Some(Duration::from_millis(ms)),
            _ => None,
        },
        restart: !matches!(
            mode,
            Mode::Good
                | Mode::RstStream(_)
                | Mode::Oversized(_)
                | Mode::HugeHeaders(_)
                | Mode::HugeTrailers(_)
                | Mode::ManyMessages { .. }
                | Mode::BadField { .. }
                | Mode::BadStatus(_)
                | Mode::NoTrailers
                | Mode::NulMessage { .. }
                | Mode::GoawayBelowInflight(..)
                | Mode::GoawayWithQueued
                | Mode::HangUpWithQueued
                | Mode::GoawayEvenId
                | Mode::GoawayTwice(_)
        ),
    };
    match mode {
        Mode::Silent => {
            while !c.over() {
                c.fill()?;
                c.buf.clear();
            }
            return Ok(());
        }
        Mode::Garbage => {
            c.fill()?;
            let junk: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            c.send(&junk)?;
            return idle(&mut c);
        }
        Mode::Http1 => {
            c.fill()?;
            c.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        _ => {}
    }
    let first_queues =
        matches!(mode, Mode::GoawayWithQueued | Mode::HangUpWithQueued) && index == 0;
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) = 1 where the client must queue.
    let settings: &[u8] = if first_queues {
        &[0, 3, 0, 0, 0, 1]
    } else {
        &[]
    };
    c.send(&frame(SETTINGS, 0, 0, settings))?;
    match mode {
        Mode::Good
        | Mode::SlowLoris(_)
        | Mode::GoawayBelowInflight(..)
        | Mode::GoawayWithQueued
        | Mode::HangUpWithQueued
        | Mode::GoawayEvenId
        | Mode::GoawayTwice(_)
            if index > 0 =>
        {
            serve_good(&mut c)
        }
        Mode::Good | Mode::SlowLoris(_) => serve_good(&mut c),
        Mode::SlowResponse(ms) => {
            // Prompt until READY: the trickle starts with the first answer.
            while !c.over() {
                if let Some(s) = c.request()? {
                    c.trickle = Some(Duration::from_millis(ms));
                    c.answer_ok(s)?;
                }
            }
            Ok(())
        }
        Mode::GoawayBelowInflight(n, code) => {
            let streams = gather(&mut c, n)?;
            let first = *streams.iter().min().unwrap_or(&1);
            let mut goaway = first.to_be_bytes().to_vec();
            goaway.extend(code.to_be_bytes());
            // With "too_many_pings" as debug data, as a server enforcing
            // its keepalive policy sends it.
            if code != 0 {
                goaway.extend(b"too_many_pings");
            }
            c.send(&frame(GOAWAY, 0, 0, &goaway))?;
            if code != 0 {
                // An error: the server hangs up (after the client has read
                // the GOAWAY: its cut-off call says what it got).
                std::thread::sleep(Duration::from_millis(200));
                return Ok(());
            }
            c.answer_ok(first)?;
            // A draining server: keeps the connection until the client goes.
            idle(&mut c)
        }
        Mode::GoawayWithQueued | Mode::HangUpWithQueued => {
            let first = gather(&mut c, 1)?;
            // The other calls reach the client's queue meanwhile.
            let settle = Instant::now() + Duration::from_millis(300);
            while Instant::now() < settle && !c.over() {
                if c.request()?.is_some() {
                    // Over the limit: never answered (the call times out).
                }
            }
            if mode == Mode::HangUpWithQueued {
                return Ok(());
            }
            let mut goaway = 0x7fff_ffffu32.to_be_bytes().to_vec();
            goaway.extend(0u32.to_be_bytes());
            c.send(&frame(GOAWAY, 0, 0, &goaway))?;
            for s in first {
                c.answer_ok(s)?;
            }
            // Streams opened after the GOAWAY are left unanswered.
            idle(&mut c)
        }
        Mode::GoawayTwice(n) => {
            let streams = gather(&mut c, n)?;
            let first = *streams.iter().min().unwrap_or(&1);
            let mut goaway = 0x7fff_ffffu32.to_be_bytes().to_vec();
            goaway.extend(0u32.to_be_bytes());
            goaway.extend(b"graceful_stop");
            c.send(&frame(GOAWAY, 0, 0, &goaway))?;
            // A grace period (a server would send a PING and wait for its
            // ack), then the real last stream id.
            std::thread::sleep(Duration::from_millis(100));
            let mut goaway = first.to_be_bytes().to_vec();
            goaway.extend(0u32.to_be_bytes());
            c.send(&frame(GOAWAY, 0, 0, &goaway))?;
            c.answer_ok(first)?;
            idle(&mut c)
        }
        Mode::GoawayEvenId => {
            gather(&mut c, 2)?;
            let mut goaway = 2u32.to_be_bytes().to_vec();
            goaway.extend(0u32.to_be_bytes());
            c.send(&frame(GOAWAY, 0, 0, &goaway))?;
            idle(&mut c)
        }
        Mode::NulMessage { n, bad } => {
            let streams = gather(&mut c, n)?;
            let mut indexed = false;
            for (i, s) in streams.iter().enumerate() {
                if i == bad {
                    let mut block = response_head();
                    block.extend(lit_indexed(b"grpc-status", b"0"));
                    block.extend(lit_indexed(b"grpc-message", b"bad\0message"));
                    c.send(&headers(*s, &block, true))?;
                    indexed = true;
                } else if indexed {
                    c.answer_ok_with(*s, &[0x80 | 63])?;
                } else {
                    c.answer_ok(*s)?;
                }
            }
            while !c.over() {
                if let Some(s) = c.request()? {
                    if indexed {
                        c.answer_ok_with(s, &[0x80 | 63])?;
                    } else {
                        c.answer_ok(s)?;
                    }
                }
            }
            Ok(())
        }
        _ => loop {
            if c.over() {
                return Ok(());
            }
            let Some(s) = c.request()? else { continue };
            if c.now_mode() == Mode::Good {
                c.answer_ok(s)?;
                continue;
            }
            match mode {
                Mode::InvalidFrames(kind) => c.send(&invalid_frame(kind, s))?,
                Mode::RstStream(code) => c.send(&frame(RST_STREAM, 0, s, &code.to_be_bytes()))?,
                Mode::Oversized(announced) => {
                    let mut body = vec![0u8];
                    body.extend(announced.to_be_bytes());
                    body.extend(std::iter::repeat_n(7u8, 16_384 - 5));
                    let mut out = headers(s, &response_head(), false);
                    out.extend(frame(DATA, 0, s, &body));
                    c.send(&out)?;
                }
                Mode::HugeHeaders(size) => {
                    let mut block = response_head();
                    block.extend(filler(size));
                    c.send(&headers(s, &block, false))?;
                }
                Mode::ManyMessages { count, size } => {
                    let mut out = headers(s, &response_head(), false);
                    let msg = grpc_message(&vec![b'm'; size]);
                    for _ in 0..count {
                        out.extend(frame(DATA, 0, s, &msg));
                    }
                    out.extend(headers(s, &lit(b"grpc-status", b"0"), true));
                    c.send(&out)?;
                }
                Mode::HugeTrailers(size) => {
                    let mut block = lit(b"grpc-status", b"0");
                    block.extend(filler(size));
                    c.answer_ok_with(s, &block)?;
                }
                Mode::BadField {
                    name,
                    value,
                    trailers,
                } => {
                    let mut head = response_head();
                    let mut tail = lit(b"grpc-status", b"0");
                    let bad = lit(name, value);
                    if trailers {
                        tail.extend(bad);
                    } else {
                        head.extend(bad);
                    }
                    let mut out = headers(s, &head, false);
                    out.extend(frame(DATA, 0, s, &grpc_message(b"ok")));
                    out.extend(headers(s, &tail, true));
                    c.send(&out)?;
                }
                Mode::ContinuationFlood => {
                    c.send(&frame(HEADERS, 0, s, &response_head()))?;
                    let piece = lit(b"x-flood", &[b'f'; 200]);
                    // Until the client hangs up, at most 100k frames / 10 s.
                    let end = Instant::now() + Duration::from_secs(10);
                    for _ in 0..100_000 {
                        if c.over() || Instant::now() >= end {
                            break;
                        }
                        c.send(&frame(CONTINUATION, 0, s, &piece))?;
                    }
                }
                Mode::Frozen => {
                    // Stop reading and writing; keep the socket open.
                    while !c.over() {
                        thread::sleep(TICK);
                    }
                    return Ok(());
                }
                Mode::BadStatus(trailer) => {
                    let mut out = headers(s, &response_head(), false);
                    out.extend(frame(DATA, 0, s, &grpc_message(b"ok")));
                    let block = match trailer {
                        Some(v) => lit(b"grpc-status", v),
                        None => lit(b"x-not-status", b"0"),
                    };
                    out.extend(headers(s, &block, true));
                    c.send(&out)?;
                }
                Mode::NoTrailers => {
                    let mut out = headers(s, &response_head(), false);
                    out.extend(frame(DATA, END_STREAM, s, &grpc_message(b"ok")));
                    c.send(&out)?;
                }
                _ => unreachable!("handled above"),
            }
        },
    }
}

/// Reads without answering until the connection is over.
fn idle(c: &mut Conn<'_>) -> io::Result<()> {
    while !c.over() {
        while let Some(f) = c.frame()? {
            c.control(f)?;
        }
    }
    Ok(())
}

/// Answers every request correctly until the connection is over.
fn serve_good(c: &mut Conn<'_>) -> io::Result<()> {
    while !c.over() {
        if let Some(s) = c.request()? {
            c.answer_ok(s)?;
        }
    }
    Ok(())
}

/// Collects requests until `n` are in flight or 2 s passed.
fn gather(c: &mut Conn<'_>, n: usize) -> io::Result<Vec<u32>> {
    let end = Instant::now() + Duration::from_secs(2);
    let mut streams = Vec::new();
    while streams.len() < n && Instant::now() < end && !c.over() {
        if let Some(s) = c.request()? {
            streams.push(s);
        }
    }
    Ok(streams)
}

/// Frames RFC 9113 makes connection errors, by `kind`: DATA on stream 0;
/// SETTINGS of a length not a multiple of 6; WINDOW_UPDATE of 0 on the
/// connection; DATA over the client's max frame size; PUSH_PROMISE to a
/// client that disabled push; an unknown-length PING.
pub fn invalid_frame(kind: u8, stream: u32) -> Vec<u8> {
    match kind % INVALID_FRAME_KINDS {
        0 => frame(DATA, 0, 0, b"nonsense"),
        1 => frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 1]),
        2 => frame(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()),
        3 => {
            let mut f = headers(stream, &response_head(), false);
            f.extend(frame(DATA, 0, stream, &vec![0u8; MAX_FRAME + 1]));
            f
        }
        4 => {
            let mut p = 2u32.to_be_bytes().to_vec();
            p.extend(lit(b":method", b"GET"));
            frame(PUSH_PROMISE, END_HEADERS, stream, &p)
        }
        _ => frame(PING, 0, 0, &[1, 2, 3]),
    }
}

/// How many kinds [`invalid_frame`] knows.
pub const INVALID_FRAME_KINDS: u8 = 6;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block as HEADERS plus CONTINUATION frames of at most the
/// client's frame size.
pub fn headers(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = if block.is_empty() {
        vec![&[]]
    } else {
        block.chunks(MAX_FRAME).collect()
    };
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let (kind, mut flags) = if i == 0 {
            (HEADERS, if end_stream { END_STREAM } else { 0 })
        } else {
            (CONTINUATION, 0)
        };
        if last {
            flags |= END_HEADERS;
        }
        out.extend(frame(kind, flags, stream, chunk));
    }
    out
}

/// About `size` bytes of distinct 1000-byte header fields.
fn filler(size: usize) -> Vec<u8> {
    let value = vec![b'v'; 1000];
    let mut block = Vec::with_capacity(size + 1100);
    let mut i = 0;
    while block.len() < size {
        block.extend(lit(format!("x-filler-{i}").as_bytes(), &value));
        i += 1;
    }
    block
}

/// `:status: 200` (static table index 8) and the gRPC content-type.
fn response_head() -> Vec<u8> {
    let mut b = vec![0x88];
    b.extend(lit(b"content-type", b"application/grpc"));
    b
}

/// HPACK literal header field without indexing, new name, no Huffman.
pub fn lit(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x00];
    hpack_int(&mut b, 0, 7, name.len());
    b.extend_from_slice(name);
    hpack_int(&mut b, 0, 7, value.len());
    b.extend_from_slice(value);
    b
}

/// HPACK literal header field with incremental indexing, new name: it
/// enters the dynamic table at index 62, pushing older entries up.
pub fn lit_indexed(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = lit(name, value);
    b[0] = 0x40;
    b
}

/// RFC 7541 §5.1 integer with an `n`-bit prefix (`first` holds the bits
/// above the prefix).
fn hpack_int(b: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        b.push(first | v as u8);
        return;
    }
    b.push(first | max as u8);
    v -= max;
    while v >= 128 {
        b.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    b.push(v as u8);
}

fn grpc_message(msg: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend((msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    b
}
