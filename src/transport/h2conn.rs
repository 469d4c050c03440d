//! One HTTP/2 client connection as a loop-driven state machine:
//! connect -> (TLS handshake) -> h2 handshake -> the server's SETTINGS ->
//! READY (gRPC's readiness: the server's first frame, which must be
//! SETTINGS, has been read; nothing else is waited for).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Ping, PingPong, Reason};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::io::{
    tls_handshake_step, IoFlags, Socket, Stream, FIRST_FRAME_OTHER, FIRST_FRAME_SETTINGS,
};
use super::{Keepalive, Limits, Progress, Target, TlsClient};

type H2Conn = h2::client::Connection<Stream, Bytes>;
type Handshake =
    Pin<Box<dyn Future<Output = Result<(SendRequest<Bytes>, H2Conn), h2::Error>> + Send>>;

/// The GOAWAY debug data a closing client sends: gRPC-Go's words.
const CLOSE_DEBUG_DATA: &[u8] = b"client transport shutdown";

/// Upstream h2's client can send neither GOAWAY nor shut its transport
/// down; the vendored h2's can (`write_go_away` and `shutdown_write`, patch
/// 5 in `vendor/h2/PATCHED.md`), as inherent methods, which method
/// resolution takes over this trait's. So this workspace's builds say
/// GOAWAY (and TLS close_notify) on close, and the crate built as published
/// (against upstream h2, as `cargo package` verifies it) compiles and hangs
/// up without them, as it does without the other patches' fixes.
#[allow(dead_code)]
trait HangUp {
    fn write_go_away(&mut self, _cx: &mut Context<'_>, _reason: Reason, _debug: Bytes) -> bool {
        false
    }
    fn shutdown_write(&mut self, _cx: &mut Context<'_>) -> bool {
        false
    }
}
impl HangUp for H2Conn {}

enum State {
    Connecting {
        sock: Socket,
        tls: Option<Box<rustls::ClientConnection>>,
    },
    TlsHandshake {
        sock: Socket,
        tls: Box<rustls::ClientConnection>,
    },
    H2Handshake(Handshake),
    Open {
        /// Boxed: h2's connection is large and this enum is moved around.
        conn: Box<H2Conn>,
        /// Dropped by [`Connection::drain`]: h2 closes the connection once
        /// no stream and no other handle is left.
        send: Option<SendRequest<Bytes>>,
        pings: PingPong,
        /// Waiting for the server's first frame (its SETTINGS) to be read.
        barrier: bool,
    },
    /// Failed/lost: keeps whatever owns the fd alive until `close()`, so the
    /// loop deregisters a live fd rather than a closed (maybe reused) number.
    Dead(#[allow(dead_code)] Option<Box<dyn Send>>),
}

struct KeepaliveState {
    cfg: Keepalive,
    next_check: Instant,
    ping_deadline: Option<Instant>,
    /// A ping of ours was sent and its ack not yet taken: h2 keeps one at a
    /// time, so until its ack is taken no other can go out (the one still
    /// out stands for it).
    ping_outstanding: bool,
    /// When bytes last came in (as the loop noticed them): a ping is due
    /// `time` after it, and any read answers an outstanding ping (gRFC A8,
    /// as gRPC-Go reads it).
    last_read: Instant,
}

impl KeepaliveState {
    /// Takes the io layer's "bytes were read" flag: bytes came in by `now`.
    fn note_reads(&mut self, flags: &IoFlags, now: Instant) {
        if flags.activity.swap(false, Ordering::Relaxed) {
            self.last_read = now;
        }
    }
}

/// Cloneable, `Send + Sync` entry point RPC threads use to start streams.
#[derive(Clone)]
pub struct Handle {
    pub(crate) send: SendRequest<Bytes>,
    pub(crate) shared: Arc<HandleShared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("scheme", &self.shared.scheme)
            .field("inflight", &self.shared.inflight.load(Ordering::Relaxed))
            .field("closing", &self.is_closing())
            .finish()
    }
}

impl Handle {
    /// The connection got GOAWAY, died or was closed: start no new calls
    /// here (a call that failed retryably on a live connection may be retried
    /// on it; one that failed on a closing connection must go elsewhere).
    pub fn is_closing(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }
}

pub(crate) struct HandleShared {
    pub(crate) scheme: http::uri::Scheme,
    /// Every call's `:authority`, from the target (see [`Target::authority`]).
    pub(crate) authority: http::uri::Authority,
    /// Calls in flight; keepalive without `permit_without_calls` needs it.
    pub(crate) inflight: AtomicUsize,
    /// The largest response message a call on this connection accepts, if
    /// the channel set one (see `TransportConfig::max_recv_message_size`).
    pub(crate) max_recv_message_size: Option<usize>,
    /// Every call's `user-agent` (see `TransportConfig::user_agent`).
    pub(crate) user_agent: http::HeaderValue,
    /// Set (never cleared) once the connection got GOAWAY, died or was
    /// closed; by the loop, or by an RPC thread that saw the connection fail.
    pub(crate) closing: AtomicBool,
    /// Set (never cleared) before the channel's close drops the connection
    /// under its calls: they end CANCELLED, as gRPC-Go's calls do when their
    /// ClientConn closes, not UNAVAILABLE as for a connection lost.
    pub(crate) cancelled: AtomicBool,
    /// The server's GOAWAY, as the calls it cut off say it (gRPC-Go's
    /// "received prior goaway: code: ..., debug data: ...").
    pub(crate) goaway: std::sync::OnceLock<String>,
}

impl HandleShared {
    pub(crate) fn mark_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// The channel closed under this connection's calls.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

pub struct Connection {
    state: State,
    waker: Waker,
    fd: RawFd,
    peer: String,
    server_name: Option<String>,
    flags: Arc<IoFlags>,
    shared: Arc<HandleShared>,
    events: VecDeque<Progress>,
    ready: bool,
    goaway: bool,
    too_many_pings: bool,
    keepalive: Option<KeepaliveState>,
    keepalive_cfg: Option<Keepalive>,
    max_header_list_size: u32,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Connecting { .. } => "connecting",
            State::TlsHandshake { .. } => "tls-handshake",
            State::H2Handshake(_) => "h2-handshake",
            State::Open { barrier: true, .. } => "awaiting-settings",
            State::Open { send, .. } if self.goaway || send.is_none() => "draining",
            State::Open { .. } => "ready",
            State::Dead(_) => "dead",
        };
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("state", &state)
            .finish()
    }
}

impl Connection {
    /// Starts a non-blocking connect and registers the socket for
    /// edge-triggered read+write readiness under `token`; `tls: None` is
    /// plaintext h2c. Errors here are immediate failures (bad TLS server
    /// name, connect refused synchronously).
    // Each is one independent setting of the connection, given by its owner.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        target: &Target,
        tls: Option<&TlsClient>,
        authority: Option<&str>,
        keepalive: Option<Keepalive>,
        limits: Limits,
        user_agent: http::HeaderValue,
        registry: &Registry,
        token: Token,
        waker: Waker,
    ) -> io::Result<Connection> {
        let server_name = tls.map(|t| t.server_name_for(target));
        let tls = match (tls, &server_name) {
            (Some(t), Some(name)) => Some(Box::new(t.connection(name).map_err(invalid_input)?)),
            _ => None,
        };
        let peer = match target {
            Target::Tcp(a) => a.to_string(),
            Target::Unix(p) => format!("unix:{}", p.display()),
            Target::UnixAbstract(n) => format!("unix-abstract:{}", String::from_utf8_lossy(n)),
        };
        // The channel's authority (its target's host, or the one it was
        // given); without one, the address's own.
        let authority = authority.map_or_else(|| target.authority(), str::to_string);
        let authority = http::uri::Authority::try_from(authority)
            .map_err(|e| invalid_input(format!("no :authority for {peer}: {e}")))?;
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("connect to {peer}: {e}"));
        let sock = match target {
            Target::Tcp(addr) => Socket::Tcp(mio::net::TcpStream::connect(*addr).map_err(ctx)?),
            Target::Unix(path) => Socket::Unix(mio::net::UnixStream::connect(path).map_err(ctx)?),
            Target::UnixAbstract(name) => Socket::Unix(connect_abstract(name).map_err(ctx)?),
        };
        let fd = sock.as_raw_fd();
        registry.register(
            &mut SourceFd(&fd),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let scheme = if tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let state = State::Connecting { sock, tls };
        Ok(Connection {
            state,
            waker,
            fd,
            peer,
            server_name,
            flags: Arc::default(),
            shared: Arc::new(HandleShared {
                scheme,
                authority,
                inflight: AtomicUsize::new(0),
                max_recv_message_size: limits.max_recv_message_size,
                user_agent,
                closing: AtomicBool::new(false),
                cancelled: AtomicBool::new(false),
                goaway: std::sync::OnceLock::new(),
            }),
            events: VecDeque::new(),
            ready: false,
            goaway: false,
            too_many_pings: false,
            keepalive: None,
            keepalive_cfg: keepalive.and_then(Keepalive::normalized),
            max_header_list_size: limits.max_header_list_size,
        })
    }

    /// Call on every mio event for this connection's token, and when the
    /// connection's waker fired (an RPC thread queued a stream, released
    /// window, or we re-queued an event for ourselves).
    pub fn on_event(&mut self) -> Progress {
        self.drive();
        self.next_event()
    }

    /// The socket's TCP_USER_TIMEOUT (tests of gRFC A18).
    #[cfg(all(test, any(target_os = "linux", target_os = "android")))]
    pub(crate) fn tcp_user_timeout(&self) -> Option<std::time::Duration> {
        // SAFETY: `fd` is this connection's open socket for as long as
        // `self`; the borrow ends before this returns.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        socket2::SockRef::from(&fd)
            .tcp_user_timeout()
            .ok()
            .flatten()
    }

    /// When the loop should call [`Connection::on_timer`] next (keepalive).
    pub fn next_timer(&self) -> Option<Instant> {
        let ka = self.keepalive.as_ref()?;
        Some(ka.ping_deadline.unwrap_or(ka.next_check))
    }

    pub fn on_timer(&mut self, now: Instant) -> Progress {
        self.keepalive_tick(now);
        self.drive();
        self.next_event()
    }

    /// A handle for RPC threads, available once READY and until GOAWAY/loss.
    pub fn send_handle(&self) -> Option<Handle> {
        match &self.state {
            State::Open {
                send: Some(send),
                barrier,
                ..
            } if !*barrier && !self.goaway => Some(Handle {
                send: send.clone(),
                shared: self.shared.clone(),
            }),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd
    }

    /// The keepalive time this connection was made with (`None`: off).
    pub fn keepalive_time(&self) -> Option<std::time::Duration> {
        self.keepalive_cfg.map(|k| k.time)
    }

    /// Whether the peer ever told us "too_many_pings" (sticky).
    #[cfg(test)]
    pub fn too_many_pings(&self) -> bool {
        self.too_many_pings
    }

    /// Graceful close from our side (the subchannel is gone but calls may
    /// still be running on it, as gRPC lets them): no new calls start here
    /// (no handle is given out, those out there report closing), the calls
    /// in flight run to their end, then h2 closes the connection (GOAWAY,
    /// FIN) once no stream and no handle is left, and the next drive reports
    /// it ended; the owner then calls [`Connection::close`]. Returns false,
    /// doing nothing, unless the connection is open and was READY (others
    /// carry no calls: close them).
    pub fn drain(&mut self) -> bool {
        let State::Open { send, .. } = &mut self.state else {
            return false;
        };
        if !self.ready {
            return false;
        }
        self.shared.mark_closing();
        *send = None;
        true
    }

    /// The channel is closing: the calls that [`Connection::close`] then
    /// fails end CANCELLED.
    pub fn cancel_calls(&mut self) {
        self.shared.cancelled.store(true, Ordering::Release);
    }

    /// Hard close: deregister and drop the socket (the fd is released now).
    /// In-flight calls fail with UNAVAILABLE (CANCELLED after
    /// [`Connection::cancel_calls`]).
    pub fn close(&mut self, registry: &Registry) {
        if matches!(self.state, State::Dead(None)) {
            return;
        }
        self.shared.mark_closing();
        if let State::Open { conn, .. } = &mut self.state {
            // Tell the server first, as gRPC-Go's client does on close (RFC
            // 9113 6.8: an endpoint SHOULD send GOAWAY before closing a
            // connection). Best effort: a write that would block is given
            // up, the loop never waits on a closing connection.
            // (The transport wakes no one: its readiness comes from mio.)
            let mut cx = Context::from_waker(&self.waker);
            let said = conn.write_go_away(
                &mut cx,
                Reason::NO_ERROR,
                Bytes::from_static(CLOSE_DEBUG_DATA),
            );
            // Then end TLS with close_notify, as gRPC-Go's `tls.Conn.Close`
            // does (and half-close TCP): the server reads a clean end, not
            // a truncated stream. Only after the GOAWAY went out whole.
            if said {
                conn.shutdown_write(&mut cx);
            }
        }
        let _ = registry.deregister(&mut SourceFd(&self.fd));
        // Dropping h2's Connection fails every open stream and wakes its task.
        self.state = State::Dead(None);
        self.keepalive = None;
    }

    fn next_event(&mut self) -> Progress {
        let ev = self.events.pop_front().unwrap_or(Progress::Pending);
        if !self.events.is_empty() {
            // The API returns one event per call; make the loop come back.
            self.waker.wake_by_ref();
        }
        ev
    }

    fn die(&mut self, mut msg: String) {
        self.shared.mark_closing();
        if !self.ready && self.flags.peer_spoke_tls.load(Ordering::Relaxed) {
            // Otherwise all the user sees is an HTTP/2 parse error.
            msg.push_str(
                ": the server answered in TLS, not plaintext \
                 (use TLS credentials, not insecure, for this server?)",
            );
        }
        let ev = if self.ready {
            Progress::Lost(msg)
        } else {
            Progress::Failed(msg)
        };
        self.events.push_back(ev);
        self.keepalive = None;
        let old = std::mem::replace(&mut self.state, State::Dead(None));
        self.state = State::Dead(Some(match old {
            State::Connecting { sock, tls } => Box::new((sock, tls)),
            State::TlsHandshake { sock, tls } => Box::new((sock, tls)),
            State::H2Handshake(f) => Box::new(f),
            State::Open { conn, .. } => Box::new(conn),
            State::Dead(x) => return self.state = State::Dead(x),
        }));
    }

    fn drive(&mut self) {
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        loop {
            let step = match &mut self.state {
                State::Connecting { sock, .. } => match sock.connect_status() {
                    Ok(false) => return,
                    Ok(true) => self.connected(),
                    Err(e) => Err(format!("connect to {}: {e}", self.peer)),
                },
                State::TlsHandshake { sock, tls } => match tls_handshake_step(sock, tls) {
                    Ok(false) => return,
                    Ok(true) => self.tls_done(),
                    Err(e) => Err(format!("TLS handshake with {} failed: {e}", self.peer)),
                },
                State::H2Handshake(fut) => match fut.as_mut().poll(&mut cx) {
                    Poll::Pending => return,
                    Poll::Ready(Ok((send, mut conn))) => {
                        // READY once the server's SETTINGS has been read
                        // (`poll_open`); the PING handle is keepalive's.
                        match conn.ping_pong() {
                            Some(pings) => {
                                self.state = State::Open {
                                    conn: Box::new(conn),
                                    send: Some(send),
                                    pings,
                                    barrier: true,
                                };
                                Ok(())
                            }
                            None => Err("HTTP/2: no PING handle".to_string()),
                        }
                    }
                    Poll::Ready(Err(e)) => Err(format!("HTTP/2 handshake: {e}")),
                },
                State::Open { .. } => return self.poll_open(&mut cx),
                State::Dead(_) => return,
            };
            if let Err(msg) = step {
                return self.die(msg);
            }
        }
    }

    /// TCP/Unix connect finished: go to TLS or straight to h2.
    fn connected(&mut self) -> Result<(), String> {
        let State::Connecting { sock, tls } = std::mem::replace(&mut self.state, State::Dead(None))
        else {
            unreachable!()
        };
        if let Socket::Tcp(s) = &sock {
            // Small gRPC frames must not sit in Nagle's buffer. Best effort:
            // without it the connection is slower, not broken.
            let _ = s.set_nodelay(true);
            // gRFC A18: with keepalive on, data the peer never acknowledges
            // fails the connection after the keepalive timeout too (a ping
            // stuck behind unacknowledged data could not). Best effort.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            if let Some(ka) = &self.keepalive_cfg {
                let _ = socket2::SockRef::from(s).set_tcp_user_timeout(Some(ka.timeout));
            }
        }
        self.state = match tls {
            Some(tls) => State::TlsHandshake { sock, tls },
            None => self.h2_handshake(Stream::new(sock, None, self.flags.clone())),
        };
        Ok(())
    }

    fn tls_done(&mut self) -> Result<(), String> {
        let State::TlsHandshake { sock, tls } =
            std::mem::replace(&mut self.state, State::Dead(None))
        else {
            unreachable!()
        };
        if tls.alpn_protocol() != Some(b"h2") {
            let got = tls
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            // Keep the fd owned until close(), as for any failure.
            self.state = State::TlsHandshake { sock, tls };
            return Err(format!(
                "ALPN negotiation with {} ({}) failed: server selected {:?}, need \"h2\"",
                self.peer,
                self.server_name.as_deref().unwrap_or(""),
                got
            ));
        }
        self.state = self.h2_handshake(Stream::new(sock, Some(tls), self.flags.clone()));
        Ok(())
    }

    fn h2_handshake(&self, stream: Stream) -> State {
        let fut = h2::client::Builder::new()
            // We never accept server push.
            .enable_push(false)
            // Bounds what one response's headers or trailers may cost us.
            .max_header_list_size(self.max_header_list_size)
            .handshake::<_, Bytes>(stream);
        State::H2Handshake(Box::pin(fut))
    }

    fn poll_open(&mut self, cx: &mut Context<'_>) {
        let State::Open {
            conn,
            send,
            barrier,
            ..
        } = &mut self.state
        else {
            return;
        };
        let done = Pin::new(&mut **conn).poll(cx);
        if *barrier {
            // Checked before acting on `done`: SETTINGS and a fatal GOAWAY
            // can arrive in one read, and the connection was READY in
            // between. h2 handles every frame it reads before its poll
            // returns, so a SETTINGS read whole is applied by now.
            match self.flags.first_frame.load(Ordering::Relaxed) {
                FIRST_FRAME_SETTINGS => {
                    *barrier = false;
                    self.ready = true;
                    self.events.push_back(Progress::Ready);
                    if let Some(cfg) = self.keepalive_cfg {
                        let now = Instant::now();
                        self.keepalive = Some(KeepaliveState {
                            cfg,
                            next_check: now + cfg.time,
                            ping_deadline: None,
                            ping_outstanding: false,
                            last_read: now,
                        });
                    }
                }
                // gRPC-Go: "initial http2 frame from server is not a
                // settings frame": the attempt fails.
                FIRST_FRAME_OTHER => {
                    return self.die(format!(
                        "the first HTTP/2 frame from {} is not SETTINGS",
                        self.peer
                    ))
                }
                _ => {}
            }
        }
        if let Poll::Ready(res) = done {
            let msg = match res {
                // A TLS server that gets a plaintext client's HTTP/2
                // preface closes without a word (C-core does): say what
                // that usually means.
                Ok(())
                    if !self.ready
                        && self.server_name.is_none()
                        && self.flags.plaintext_read_nothing() =>
                {
                    format!(
                        "connection to {} closed by peer before it said anything: \
                         a TLS server does so to a plaintext client (use TLS \
                         credentials, not insecure, for this server?)",
                        self.peer
                    )
                }
                Ok(()) => format!("connection to {} closed by peer", self.peer),
                Err(e) => {
                    if e.is_go_away() && e.is_remote() {
                        self.note_goaway(&e);
                    }
                    format!("connection to {} ended: {e}", self.peer)
                }
            };
            return self.die(msg);
        }
        if !self.ready {
            return;
        }
        if let (false, Some(send)) = (self.goaway, send) {
            if let Poll::Ready(Err(e)) = send.poll_ready(cx) {
                if e.is_go_away() && e.is_remote() {
                    self.note_goaway(&e);
                }
            }
        }
        if let Some(ka) = self.keepalive.as_mut() {
            let now = Instant::now();
            ka.note_reads(&self.flags, now);
            if ka.ping_outstanding {
                // Taken whenever it comes, even after other bytes already
                // answered the ping: else h2 never lets another go out.
                let State::Open { pings, .. } = &mut self.state else {
                    return;
                };
                if let Poll::Ready(Ok(_)) = pings.poll_pong(cx) {
                    ka.ping_outstanding = false;
                    if ka.ping_deadline.take().is_some() {
                        ka.next_check = now + ka.cfg.time;
                    }
                }
            }
            if ka.ping_deadline.is_none()
                && ka.next_check > now
                && now >= ka.last_read + ka.cfg.time
                && self.shared.inflight.load(Ordering::Relaxed) > 0
            {
                // gRFC A8: keepalive was dormant (no call in flight) and a
                // call starts on a connection quiet for `time`: ping now,
                // not at the next check (the loop's timer follows).
                ka.next_check = now;
            }
        }
    }

    /// Records a remote GOAWAY once, noting the gRFC A8 "too_many_pings" hint.
    fn note_goaway(&mut self, e: &h2::Error) {
        let debug = goaway_debug_data(e);
        // Exactly the hint A8 names (gRPC-Go compares it so).
        let calm = e.reason() == Some(Reason::ENHANCE_YOUR_CALM) && debug == "too_many_pings";
        self.too_many_pings |= calm;
        // The reason and debug data, which the subchannel's event does not carry.
        log::debug!(target: crate::trace::TRANSPORT, "GOAWAY from {}: {e}", self.peer);
        let code = e
            .reason()
            .map_or_else(|| "?".to_string(), |r| format!("{r:?}"));
        // gRPC-Go's words (`setGoAwayReason`): `code: ENHANCE_YOUR_CALM,
        // debug data: "too_many_pings"`, or `code: NO_ERROR` without any.
        let _ = self.shared.goaway.set(if debug.is_empty() {
            format!("code: {code}")
        } else {
            format!("code: {code}, debug data: \"{debug}\"")
        });
        self.shared.mark_closing();
        // Before READY this is just a failure (the message says why).
        if self.ready && !self.goaway {
            self.goaway = true;
            self.events.push_back(Progress::GoAway {
                too_many_pings: calm,
            });
        }
    }

    fn keepalive_tick(&mut self, now: Instant) {
        let inflight = self.shared.inflight.load(Ordering::Relaxed);
        let Some(ka) = self.keepalive.as_mut() else {
            return;
        };
        ka.note_reads(&self.flags, now);
        if let Some(deadline) = ka.ping_deadline {
            // Bytes came in after the ping went out: the peer is alive,
            // whether or not the ack is among them.
            if ka.last_read + ka.cfg.timeout > deadline {
                ka.ping_deadline = None;
                ka.next_check = ka.last_read + ka.cfg.time;
                return;
            }
            if now >= deadline {
                // Tell the server (best effort, as `close` does: gRPC-Go's
                // keepalive closes with a GOAWAY too), then fail the
                // streams through the io layer, then report.
                if let State::Open { conn, .. } = &mut self.state {
                    let waker = self.waker.clone();
                    let mut cx = Context::from_waker(&waker);
                    conn.write_go_away(
                        &mut cx,
                        Reason::NO_ERROR,
                        Bytes::from_static(CLOSE_DEBUG_DATA),
                    );
                }
                self.flags.abort.store(true, Ordering::Relaxed);
                if let State::Open { conn, .. } = &mut self.state {
                    let waker = self.waker.clone();
                    let _ = Pin::new(&mut **conn).poll(&mut Context::from_waker(&waker));
                }
                self.die("keepalive ping timeout".into());
            }
            return;
        }
        if now < ka.next_check {
            return;
        }
        // Bytes came in less than `time` ago: a ping is due `time` after them.
        if now < ka.last_read + ka.cfg.time {
            ka.next_check = ka.last_read + ka.cfg.time;
            return;
        }
        if inflight == 0 && !ka.cfg.permit_without_calls {
            ka.next_check = now + ka.cfg.time;
            return;
        }
        if let State::Open { pings, .. } = &mut self.state {
            if ka.ping_outstanding {
                // The last ping was answered by other bytes, never acked:
                // it stands for this one (gRPC-Go would send another; h2
                // allows one at a time). Silence until the timeout ends
                // the connection as for a fresh ping.
                ka.ping_deadline = Some(now + ka.cfg.timeout);
            } else if pings.send_ping(Ping::opaque()).is_ok() {
                ka.ping_outstanding = true;
                ka.ping_deadline = Some(now + ka.cfg.timeout);
            } else {
                ka.next_check = now + ka.cfg.time;
            }
        }
    }
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Connects to the abstract unix socket `name` (Linux: the kernel's
/// namespace of sockets without a file; the NUL before the name is added by
/// the address type).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn connect_abstract(name: &[u8]) -> io::Result<mio::net::UnixStream> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    mio::net::UnixStream::connect_addr(&addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn connect_abstract(_name: &[u8]) -> io::Result<mio::net::UnixStream> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist on Linux only",
    ))
}

/// A GOAWAY's debug data as text (escaped as `Bytes` debug-prints it:
/// printable ASCII as is): h2 shows it only in the error's `Display`, as a
/// trailing ` (b"...")`. Empty when there is none.
fn goaway_debug_data(e: &h2::Error) -> String {
    let text = e.to_string();
    text.rfind(" (b\"")
        .and_then(|at| text[at + 4..].strip_suffix("\")"))
        .unwrap_or_default()
        .to_string()
}
