//! Byte-stream adapters that let h2 (written against tokio's
//! `AsyncRead`/`AsyncWrite`) run over mio sockets owned by our event loop.
//!
//! The contract is edge-triggered: an adapter returns `Poll::Pending` only
//! after the socket itself answered `WouldBlock`. That guarantees mio will
//! deliver a new readiness event, on which the loop re-polls the connection,
//! so the `Context` waker passed in here is deliberately never stored.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connected (or connecting) non-blocking socket.
#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Socket {
    /// Non-blocking connect completion check, per mio's `TcpStream::connect`
    /// docs: a pending `SO_ERROR` is the failure; `peer_addr` succeeding means
    /// connected; `NotConnected` means still in progress (spurious event).
    pub(crate) fn connect_status(&self) -> io::Result<bool> {
        let (err, peer) = match self {
            Socket::Tcp(s) => (s.take_error()?, s.peer_addr().map(drop)),
            Socket::Unix(s) => (s.take_error()?, s.peer_addr().map(drop)),
        };
        if let Some(e) = err {
            return Err(e);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            // ECONNREFUSED etc. can surface here instead of via SO_ERROR.
            Err(e) => Err(e),
        }
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Write),
            Socket::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Retries `EINTR`; everything else (including `WouldBlock`) is returned.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Shared between the loop-side connection and its byte stream.
#[derive(Default)]
pub(crate) struct IoFlags {
    /// Set by the stream on every successful read (keepalive activity).
    pub(crate) activity: AtomicBool,
    /// Set by the loop to make every further read/write fail, which is how
    /// we kill an h2 connection (the client side has no abrupt shutdown)
    /// while still owning its fd until `close()`: when a keepalive ping
    /// went unanswered, the one reason it does so (the calls cut off say
    /// it, in gRPC-Go's words).
    pub(crate) abort: AtomicBool,
    /// Set once (plaintext streams only) when the peer's first bytes were a
    /// TLS record: it expects TLS, so the connection's error can say so.
    pub(crate) peer_spoke_tls: AtomicBool,
    /// Whether the plaintext stream has read its first bytes yet.
    first_read_done: AtomicBool,
    /// What the server's first HTTP/2 frame was, once the stream has read
    /// all of it: `FIRST_FRAME_*` (0 until then).
    pub(crate) first_frame: AtomicU8,
}

impl IoFlags {
    /// Whether a plaintext stream has read nothing from its peer yet
    /// (always true on a TLS stream: ask only of a plaintext one).
    pub(crate) fn plaintext_read_nothing(&self) -> bool {
        !self.first_read_done.load(Ordering::Relaxed)
    }
}

// 0 (the default): the server's first frame has not been read whole yet.
/// The server's first frame was SETTINGS, read whole (h2 applies it in the
/// same poll that reads it): the connection is READY (gRPC's rule).
pub(crate) const FIRST_FRAME_SETTINGS: u8 = 1;
/// The server's first frame was another type: the attempt fails.
pub(crate) const FIRST_FRAME_OTHER: u8 = 2;

/// Follows the server's first HTTP/2 frame through the bytes handed to h2
/// (h2 does not tell when it got the server's SETTINGS): its 9-byte header
/// says its type and length, then its payload goes by.
#[derive(Default)]
struct FirstFrame {
    head: [u8; 9],
    got: usize,
    /// Payload bytes still to come, once the header is whole.
    remaining: usize,
    done: bool,
}

impl FirstFrame {
    fn saw(&mut self, mut bytes: &[u8], flags: &IoFlags) {
        if self.done || bytes.is_empty() {
            return;
        }
        if self.got < self.head.len() {
            let take = (self.head.len() - self.got).min(bytes.len());
            self.head[self.got..self.got + take].copy_from_slice(&bytes[..take]);
            self.got += take;
            bytes = &bytes[take..];
            if self.got < self.head.len() {
                return;
            }
            // RFC 9113 §4.1: a 24-bit length, then the type (SETTINGS: 4).
            if self.head[3] != 0x4 {
                self.done = true;
                flags
                    .first_frame
                    .store(FIRST_FRAME_OTHER, Ordering::Relaxed);
                return;
            }
            self.remaining = usize::from(self.head[0]) << 16
                | usize::from(self.head[1]) << 8
                | usize::from(self.head[2]);
        }
        self.remaining = self.remaining.saturating_sub(bytes.len());
        if self.remaining == 0 {
            self.done = true;
            flags
                .first_frame
                .store(FIRST_FRAME_SETTINGS, Ordering::Relaxed);
        }
    }
}

impl IoFlags {
    fn check_abort(&self) -> io::Result<()> {
        if self.abort.load(Ordering::Relaxed) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "keepalive ping failed to receive ACK within timeout",
            ))
        } else {
            Ok(())
        }
    }
}

/// The stream h2 runs over: a socket, optionally wrapped in TLS.
pub(crate) struct Stream {
    sock: Socket,
    tls: Option<Box<rustls::ClientConnection>>,
    flags: Arc<IoFlags>,
    first: FirstFrame,
}

impl Stream {
    pub(crate) fn new(
        sock: Socket,
        tls: Option<Box<rustls::ClientConnection>>,
        flags: Arc<IoFlags>,
    ) -> Self {
        Stream {
            sock,
            tls,
            flags,
            first: FirstFrame::default(),
        }
    }

    /// Writes buffered TLS records. `Ok(true)` = everything flushed,
    /// `Ok(false)` = socket said WouldBlock with data still queued.
    fn flush_tls(&mut self) -> io::Result<bool> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(true);
        };
        while tls.wants_write() {
            match retry(|| tls.write_tls(&mut self.sock)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn poll_read_tls(&mut self, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let tls = self.tls.as_mut().expect("tls stream");
            // Plaintext already decrypted wins over touching the socket.
            match tls.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    self.first.saw(&buf.initialize_unfilled()[..n], &self.flags);
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if would_block(&e) => {}
                // UnexpectedEof: peer closed without close_notify.
                Err(e) => return Poll::Ready(Err(e)),
            }
            match retry(|| tls.read_tls(&mut self.sock)) {
                Ok(n) => {
                    if n > 0 {
                        self.flags.activity.store(true, Ordering::Relaxed);
                    }
                    // On n == 0 rustls records EOF; the next reader() call
                    // then reports Ok(0) or UnexpectedEof instead of WouldBlock.
                    if let Err(e) = tls.process_new_packets() {
                        // Try to get the alert rustls queued out to the peer.
                        let _ = self.flush_tls();
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                    // Key updates / alerts may have queued writes.
                    if let Err(e) = self.flush_tls() {
                        return Poll::Ready(Err(e));
                    }
                }
                Err(e) if would_block(&e) => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write_tls(&mut self, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let tls = self.tls.as_mut().expect("tls stream");
            // rustls buffers up to its limit and returns 0 once full.
            let n = tls.writer().write(buf)?;
            let flushed = self.flush_tls()?;
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            if !flushed {
                return Poll::Pending;
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.flags.check_abort()?;
        if this.tls.is_some() {
            return this.poll_read_tls(buf);
        }
        match retry(|| this.sock.read(buf.initialize_unfilled())) {
            Ok(n) => {
                if n > 0 {
                    this.flags.activity.store(true, Ordering::Relaxed);
                    let read = &buf.initialize_unfilled()[..n];
                    if !this.flags.first_read_done.swap(true, Ordering::Relaxed)
                        && looks_like_tls(read)
                    {
                        this.flags.peer_spoke_tls.store(true, Ordering::Relaxed);
                    }
                    this.first.saw(read, &this.flags);
                }
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Err(e) if would_block(&e) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.flags.check_abort()?;
        if this.tls.is_some() {
            return this.poll_write_tls(buf);
        }
        match retry(|| this.sock.write(buf)) {
            Err(e) if would_block(&e) => Poll::Pending,
            r => Poll::Ready(r),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().flush_tls() {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(tls) = this.tls.as_mut() {
            // send_close_notify is idempotent, so re-entry after Pending is fine.
            tls.send_close_notify();
        }
        match Pin::new(&mut *this).poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        // ENOTCONN after the peer already closed is not worth failing on.
        let _ = this.sock.shutdown_write();
        Poll::Ready(Ok(()))
    }
}

/// Whether a peer's first bytes are a TLS record header: an alert (21) or a
/// handshake (22) in a TLS 1.x record (major version 3). HTTP/2 frames from a
/// plaintext server start with a 24-bit length whose first byte is 0 for any
/// frame a server sends first (SETTINGS), so the two never collide.
fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [21 | 22, 3, ..] | [21 | 22])
}

/// What a failed TLS handshake reports: rustls's error, and the likely cause
/// when the server's first bytes were no TLS record at all (a plaintext
/// HTTP/2 server answers a ClientHello with its SETTINGS frame).
fn tls_failure(e: rustls::Error) -> String {
    match e {
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => format!(
            "{e}: the server answered in plaintext, not TLS \
             (use insecure credentials for a plaintext server?)"
        ),
        e => e.to_string(),
    }
}

/// Drives a TLS handshake one step: write what rustls wants, read what it
/// needs. `Ok(true)` = handshake complete (and flushed).
pub(crate) fn tls_handshake_step(
    sock: &mut Socket,
    tls: &mut rustls::ClientConnection,
) -> io::Result<bool> {
    loop {
        let mut blocked = false;
        while tls.wants_write() {
            match retry(|| tls.write_tls(sock)) {
                Ok(_) => {}
                Err(e) if would_block(&e) => {
                    blocked = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !tls.is_handshaking() {
            // Finished may still be queued; h2 writes go through flush_tls,
            // which will push it out ahead of any application data.
            return Ok(true);
        }
        if tls.wants_read() {
            match retry(|| tls.read_tls(sock)) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed during TLS handshake",
                    ))
                }
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // Deliver our alert so the peer sees why.
                        let _ = tls.write_tls(sock);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, tls_failure(e)));
                    }
                    continue;
                }
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if blocked || !tls.wants_write() {
            // Blocked on write (an edge will come), or rustls wants nothing
            // at all, which it never does mid-handshake.
            return Ok(false);
        }
    }
}
