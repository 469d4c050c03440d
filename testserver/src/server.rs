//! The server: options, the accept loop on its own thread and runtime, one
//! task per HTTP/2 connection, and the ways to steer and stop it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};

use crate::handler::handle;
use crate::options::{Listen, OrcaLoad, ServerOptions, Shared, DEFAULT_ORCA_MIN_INTERVAL};
use crate::tls::tls_acceptor;
use crate::wire;

/// An in-process gRPC echo + health server on its own thread; dropping
/// it stops it hard.
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
            Listen::UnixAbstract(name) => (Listener::Unix(bind_abstract(&name)?), None),
        };
        let tls = match &opts.tls {
            Some(t) => Some(tls_acceptor(t)?),
            None => None,
        };
        let mut health = HashMap::new();
        health.insert(String::new(), wire::SERVING);
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
            cut_off: AtomicU64::new(0),
            last_authority: std::sync::Mutex::new(None),
            no_orca: opts.no_orca,
            orca_min_interval: opts.orca_min_interval.unwrap_or(DEFAULT_ORCA_MIN_INTERVAL),
            orca_fail: opts.orca_fail,
            health_fail: opts.health_fail,
            health_watches: AtomicU64::new(0),
            oob_load: std::sync::Mutex::new(OrcaLoad::default()),
            call_load: std::sync::Mutex::new(None),
            orca_streams: AtomicU64::new(0),
            orca_interval: std::sync::Mutex::new(None),
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

    /// The TCP address it listens on. Panics for a Unix socket server.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("TCP server")
    }

    /// Its TCP port.
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

    /// The load every `StreamCoreMetrics` report carries from now on.
    pub fn set_load(&self, load: OrcaLoad) {
        *self
            .shared
            .oob_load
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = load;
    }

    /// The load of the `endpoint-load-metrics-bin` trailer on every echo
    /// reply from now on, error statuses included (`None`: no trailer, the
    /// default).
    pub fn set_call_load(&self, load: Option<OrcaLoad>) {
        *self
            .shared
            .call_load
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = load;
    }

    /// `StreamCoreMetrics` streams opened so far (UNIMPLEMENTED ones too).
    pub fn orca_streams(&self) -> u64 {
        self.shared.orca_streams.load(Ordering::Relaxed)
    }

    /// Health `Watch` streams opened so far (failed ones too).
    pub fn health_watches(&self) -> u64 {
        self.shared.health_watches.load(Ordering::Relaxed)
    }

    /// The report interval the last `StreamCoreMetrics` asked for.
    pub fn orca_interval(&self) -> Option<Duration> {
        *self
            .shared
            .orca_interval
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Requests served so far (all methods).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Streams the client reset (RST_STREAM) while `x-delay-ms` held them.
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::Relaxed)
    }

    /// Streams whose connection closed (not reset) while `x-delay-ms` held
    /// them.
    pub fn cut_off(&self) -> u64 {
        self.shared.cut_off.load(Ordering::Relaxed)
    }

    /// The `:authority` of the last stream received (any method).
    pub fn last_authority(&self) -> Option<String> {
        self.shared
            .last_authority
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

#[cfg(target_os = "linux")]
fn bind_abstract(name: &str) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    std::os::unix::net::UnixListener::bind_addr(&addr)
}

#[cfg(not(target_os = "linux"))]
fn bind_abstract(_name: &str) -> io::Result<std::os::unix::net::UnixListener> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist on Linux only",
    ))
}
