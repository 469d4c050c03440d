//! A hand-written HTTP/2 server on 127.0.0.1 for the misbehaving-server
//! tests: each accepted connection runs a test's handler on its own thread
//! with an [`H2`] that reads frames (acknowledging client SETTINGS, and
//! PINGs while the server's `acks` flag is on) and logs what the client
//! sends (HEADERS, DATA, WINDOW_UPDATE, RST_STREAM, PING, PING ACK, GOAWAY,
//! EOF), per connection and with times. A handler that gathers whole
//! requests ([`H2::request_done`]) logs each as it ends, with its message.
//!
//! Shared by the test files that include it with
//! `#[path = "common/frame_server.rs"] mod frame_server;`; they include
//! `#[path = "common/h2_frames.rs"] mod h2_frames;` too, which this uses.
#![allow(dead_code)]

use super::h2_frames::*;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// No server thread lives longer than this.
pub const LIFETIME: Duration = Duration::from_secs(30);
/// The sockets' read timeout: how often a blocked read checks the clock.
pub const TICK: Duration = Duration::from_millis(5);
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// What the server saw from the client, per connection (its index).
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Headers(u32),
    /// Stream, payload length, END_STREAM.
    Data(u32, usize, bool),
    /// Stream, increment.
    WindowUpdate(u32, u32),
    /// Stream, error code.
    Rst(u32, u32),
    /// Last stream id, error code, debug data.
    GoAway(u32, u32, Vec<u8>),
    /// A client PING (not an ACK), and when it came.
    Ping(Instant),
    /// The client's ACK of a server PING, with its payload.
    PingAck(Vec<u8>),
    /// A request that ended (END_STREAM): stream, its message (the body
    /// past the 5-byte gRPC prefix) as text. Logged only by
    /// [`H2::request_done`], for handlers that call it.
    Request(u32, String),
    Eof,
}

type Log = Arc<Mutex<Vec<(usize, Ev, Instant)>>>;
type Handler = Arc<dyn Fn(&mut H2) -> io::Result<()> + Send + Sync>;

pub struct Server {
    pub addr: SocketAddr,
    log: Log,
    accepts: Arc<Mutex<Vec<Instant>>>,
    /// Whether PINGs are acknowledged (server-wide, live; on at start).
    pub acks: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Every accepted connection runs `handler` on its own thread.
    pub fn start(handler: impl Fn(&mut H2) -> io::Result<()> + Send + Sync + 'static) -> Server {
        Server::start_on("127.0.0.1:0".parse().unwrap(), handler)
    }

    /// As [`Server::start`], listening on `addr`.
    pub fn start_on(
        addr: SocketAddr,
        handler: impl Fn(&mut H2) -> io::Result<()> + Send + Sync + 'static,
    ) -> Server {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind(addr).unwrap();
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
                            sock.set_nodelay(true).unwrap();
                            sock.set_read_timeout(Some(TICK)).unwrap();
                            let mut c = H2 {
                                sock,
                                index,
                                log: lg,
                                acks: ak,
                                stop: st,
                                end: Instant::now() + LIFETIME,
                                buf: Vec::new(),
                                unacked: Vec::new(),
                                client_initial_window: 65_535,
                                client_max_frame: 16_384,
                                bodies: HashMap::new(),
                            };
                            let _ = h(&mut c);
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
        Server {
            addr,
            log,
            accepts,
            acks,
            stop,
            thread: Some(thread),
        }
    }

    /// When each connection was accepted (index = connection).
    pub fn accepted(&self) -> Vec<Instant> {
        self.accepts.lock().unwrap().clone()
    }

    /// The log: (connection, event).
    pub fn events(&self) -> Vec<(usize, Ev)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(i, e, _)| (*i, e.clone()))
            .collect()
    }

    /// The log with when each event came: (connection, event, time).
    pub fn timed_events(&self) -> Vec<(usize, Ev, Instant)> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until `pred` holds for the log.
    pub fn wait_for(&self, within: Duration, pred: impl Fn(&[(usize, Ev)]) -> bool) -> bool {
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
    pub fn pings(&self, conn: usize) -> Vec<Instant> {
        self.timed_events()
            .into_iter()
            .filter(|(i, e, _)| *i == conn && matches!(e, Ev::Ping(_)))
            .map(|(_, _, t)| t)
            .collect()
    }

    /// When connection `conn` saw the client close.
    pub fn eof(&self, conn: usize) -> Option<Instant> {
        self.timed_events()
            .into_iter()
            .find(|(i, e, _)| *i == conn && *e == Ev::Eof)
            .map(|(_, _, t)| t)
    }

    pub fn wait_eof(&self, conn: usize, within: Duration) -> bool {
        self.wait_for(within, |l| {
            l.iter().any(|(i, e)| *i == conn && *e == Ev::Eof)
        })
    }

    /// The RST_STREAM codes connection `conn` saw for `stream`.
    pub fn rsts(&self, conn: usize, stream: u32) -> Vec<u32> {
        self.events()
            .into_iter()
            .filter_map(|(i, e)| match e {
                Ev::Rst(s, code) if i == conn && s == stream => Some(code),
                _ => None,
            })
            .collect()
    }

    /// Every (connection, stream) whose request ([`Ev::Request`]) carried
    /// the message `what`.
    pub fn streams_of(&self, what: &str) -> Vec<(usize, u32)> {
        self.events()
            .into_iter()
            .filter_map(|(c, e)| match e {
                Ev::Request(s, m) if m == what => Some((c, s)),
                _ => None,
            })
            .collect()
    }

    /// The streams whose HEADERS connection `conn` saw.
    pub fn streams(&self, conn: usize) -> Vec<u32> {
        self.events()
            .into_iter()
            .filter_map(|(i, e)| match e {
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

pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A HEADERS frame's header block: padding and priority removed.
    pub fn header_block(&self) -> Vec<u8> {
        let mut p = &self.payload[..];
        let mut pad = 0;
        if self.flags & 0x8 != 0 {
            pad = p[0] as usize;
            p = &p[1..];
        }
        if self.flags & 0x20 != 0 {
            p = &p[5..];
        }
        p[..p.len() - pad].to_vec()
    }
}

/// One server-side connection.
pub struct H2 {
    pub sock: TcpStream,
    /// Which connection this is (0 for the first accepted).
    pub index: usize,
    log: Log,
    /// The server's `acks` flag (shared by its connections).
    pub acks: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    end: Instant,
    /// Bytes read and not yet taken as frames.
    pub buf: Vec<u8>,
    /// Payloads of PINGs not acknowledged (while `acks` is off).
    pub unacked: Vec<Vec<u8>>,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE (last seen).
    pub client_initial_window: u32,
    /// The client's SETTINGS_MAX_FRAME_SIZE (last seen).
    pub client_max_frame: u32,
    /// Request bodies gathered by `request_done`, by stream.
    bodies: HashMap<u32, Vec<u8>>,
}

impl H2 {
    pub fn note(&self, ev: Ev) {
        self.log
            .lock()
            .unwrap()
            .push((self.index, ev, Instant::now()));
    }

    /// Whether the server is stopping or this connection outlived LIFETIME.
    pub fn over(&self) -> bool {
        self.stop.load(Ordering::Acquire) || Instant::now() >= self.end
    }

    /// Reads more bytes: Ok(Some(false)) on EOF (or a reset connection),
    /// Ok(None) when `until` passed with nothing read.
    pub fn fill_until(&mut self, until: Option<Instant>) -> io::Result<Option<bool>> {
        let mut chunk = [0u8; 64 * 1024];
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

    pub fn preface(&mut self) -> io::Result<()> {
        while self.buf.len() < 24 {
            if self.fill_until(None)? != Some(true) {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.buf.drain(..24);
        Ok(())
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// Preface read, our (empty) SETTINGS sent.
    pub fn greet(&mut self) -> io::Result<()> {
        self.preface()?;
        self.send(&frame(SETTINGS, 0, 0, &[]))
    }

    /// Preface read, SETTINGS with MAX_CONCURRENT_STREAMS = `n` sent.
    pub fn greet_max_streams(&mut self, n: u32) -> io::Result<()> {
        self.preface()?;
        self.settings(&[(SETTINGS_MAX_CONCURRENT_STREAMS, n)])
    }

    pub fn settings(&mut self, pairs: &[(u16, u32)]) -> io::Result<()> {
        let mut p = Vec::new();
        for (id, v) in pairs {
            p.extend(id.to_be_bytes());
            p.extend(v.to_be_bytes());
        }
        self.send(&frame(SETTINGS, 0, 0, &p))
    }

    pub fn window_update(&mut self, stream: u32, inc: u32) -> io::Result<()> {
        self.send(&frame(WINDOW_UPDATE, 0, stream, &inc.to_be_bytes()))
    }

    /// The next frame (client SETTINGS acknowledged, PINGs while `acks`),
    /// `Ok(None)` on EOF (logged as `Ev::Eof`), `Err(TimedOut)` when
    /// `until` passes first.
    pub fn next_until(&mut self, until: Option<Instant>) -> io::Result<Option<Frame>> {
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
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    self.take(&f)?;
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

    /// Logs a frame read, acknowledging SETTINGS and (while `acks`) PINGs.
    fn take(&mut self, f: &Frame) -> io::Result<()> {
        let word = |at: usize| u32::from_be_bytes(f.payload[at..at + 4].try_into().unwrap());
        match f.kind {
            SETTINGS if f.flags & ACK == 0 => {
                for p in f.payload.chunks(6) {
                    let id = u16::from_be_bytes([p[0], p[1]]);
                    let v = u32::from_be_bytes(p[2..6].try_into().unwrap());
                    if id == SETTINGS_MAX_FRAME_SIZE {
                        self.client_max_frame = v;
                    }
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        self.client_initial_window = v;
                    }
                }
                self.send(&frame(SETTINGS, ACK, 0, &[]))?
            }
            PING if f.flags & ACK == 0 => {
                self.note(Ev::Ping(Instant::now()));
                if self.acks.load(Ordering::Acquire) {
                    self.send(&frame(PING, ACK, 0, &f.payload))?
                } else {
                    self.unacked.push(f.payload.clone());
                }
            }
            PING => self.note(Ev::PingAck(f.payload.clone())),
            HEADERS => self.note(Ev::Headers(f.stream)),
            DATA => self.note(Ev::Data(
                f.stream,
                f.payload.len(),
                f.flags & END_STREAM != 0,
            )),
            WINDOW_UPDATE => self.note(Ev::WindowUpdate(f.stream, word(0) & 0x7fff_ffff)),
            RST_STREAM => self.note(Ev::Rst(f.stream, word(0))),
            GOAWAY => self.note(Ev::GoAway(word(0), word(4), f.payload[8..].to_vec())),
            _ => {}
        }
        Ok(())
    }

    /// Gathers requests from the frames read: a DATA frame's payload is
    /// added to its stream's body; when a request ends (END_STREAM on its
    /// HEADERS or DATA) it is logged as [`Ev::Request`] and its stream and
    /// whole body (gRPC prefix included) returned.
    pub fn request_done(&mut self, f: &Frame) -> Option<(u32, Vec<u8>)> {
        if f.kind == DATA {
            self.bodies
                .entry(f.stream)
                .or_default()
                .extend_from_slice(&f.payload);
        }
        if !matches!(f.kind, HEADERS | DATA) || f.flags & END_STREAM == 0 {
            return None;
        }
        let body = self.bodies.remove(&f.stream).unwrap_or_default();
        let text = String::from_utf8_lossy(body.get(5..).unwrap_or(&[])).into_owned();
        self.note(Ev::Request(f.stream, text));
        Some((f.stream, body))
    }

    /// The next frame, as `next_until` with no time limit.
    pub fn next(&mut self) -> io::Result<Option<Frame>> {
        self.next_until(None)
    }

    /// The next request's stream id (once its HEADERS came).
    pub fn request(&mut self) -> io::Result<Option<u32>> {
        while let Some(f) = self.next()? {
            if f.kind == HEADERS {
                return Ok(Some(f.stream));
            }
        }
        Ok(None)
    }

    /// The next `n` requests' stream ids.
    pub fn requests(&mut self, n: usize) -> io::Result<Option<Vec<u32>>> {
        let mut ids = Vec::new();
        while ids.len() < n {
            match self.request()? {
                Some(s) => ids.push(s),
                None => return Ok(None),
            }
        }
        Ok(Some(ids))
    }

    /// Reads until the request on `stream` has ended (END_STREAM).
    pub fn request_end(&mut self, stream: u32) -> io::Result<()> {
        while let Some(f) = self.next()? {
            if f.stream == stream && matches!(f.kind, DATA | HEADERS) && f.flags & END_STREAM != 0 {
                return Ok(());
            }
        }
        Err(io::ErrorKind::UnexpectedEof.into())
    }

    /// Reads (acknowledging) for `d`, answering nothing; Ok(false) on EOF.
    pub fn idle_for(&mut self, d: Duration) -> io::Result<bool> {
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
    pub fn until_eof(&mut self) -> io::Result<()> {
        while self.next()?.is_some() {}
        Ok(())
    }

    /// Acknowledges the PINGs held back while `acks` was off.
    pub fn ack_pending_pings(&mut self) -> io::Result<()> {
        for p in std::mem::take(&mut self.unacked) {
            self.send(&frame(PING, ACK, 0, &p))?;
        }
        Ok(())
    }

    /// Reads until a PING went unacknowledged (bounded by `within`).
    pub fn until_unacked_ping(&mut self, within: Duration) -> io::Result<bool> {
        let end = Instant::now() + within;
        while self.unacked.is_empty() && Instant::now() < end {
            if !self.idle_for(Duration::from_millis(10))? {
                return Ok(false);
            }
        }
        Ok(!self.unacked.is_empty())
    }

    /// Response headers: `:status` 200, gRPC content type.
    pub fn head(&mut self, stream: u32) -> io::Result<()> {
        let mut block = lit(b":status", b"200");
        block.extend(lit(b"content-type", b"application/grpc"));
        self.send(&frame(HEADERS, END_HEADERS, stream, &block))
    }

    /// One uncompressed gRPC message in a DATA frame.
    pub fn message(&mut self, stream: u32, m: &[u8]) -> io::Result<()> {
        self.send(&data(stream, &msg(m), false))
    }

    /// Trailers (END_STREAM) with `grpc-status` `code`.
    pub fn trailers(&mut self, stream: u32, code: &str) -> io::Result<()> {
        self.send(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &lit(b"grpc-status", code.as_bytes()),
        ))
    }

    /// A trailers-only response (one HEADERS, END_STREAM) with `code`.
    pub fn trailers_only(&mut self, stream: u32, code: &str) -> io::Result<()> {
        let mut block = lit(b":status", b"200");
        block.extend(lit(b"content-type", b"application/grpc"));
        block.extend(lit(b"grpc-status", code.as_bytes()));
        self.send(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &block))
    }

    /// Headers, the message "ok" and trailers with status 0, in one write.
    pub fn answer_ok(&mut self, stream: u32) -> io::Result<()> {
        let mut block = lit(b":status", b"200");
        block.extend(lit(b"content-type", b"application/grpc"));
        let mut all = frame(HEADERS, END_HEADERS, stream, &block);
        all.extend(data(stream, &msg(b"ok"), false));
        all.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &lit(b"grpc-status", b"0"),
        ));
        self.send(&all)
    }

    pub fn rst(&mut self, stream: u32, code: u32) -> io::Result<()> {
        self.send(&frame(RST_STREAM, 0, stream, &code.to_be_bytes()))
    }

    pub fn goaway(&mut self, last: u32, code: u32, debug: &[u8]) -> io::Result<()> {
        let mut p = last.to_be_bytes().to_vec();
        p.extend(code.to_be_bytes());
        p.extend_from_slice(debug);
        self.send(&frame(GOAWAY, 0, 0, &p))
    }

    /// A well-behaved server: SETTINGS, then every request answered "ok".
    pub fn serve_good(&mut self) -> io::Result<()> {
        self.greet()?;
        while let Some(s) = self.request()? {
            self.answer_ok(s)?;
        }
        Ok(())
    }
}
