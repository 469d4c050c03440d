//! What a test server is started with, and the state its connections
//! share (below the server, the handler and TLS, which all read them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use tokio::sync::watch;

/// Where a test server listens.
pub enum Listen {
    /// A TCP address (`127.0.0.1:0` for a free port).
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
    /// A Linux abstract unix socket name (no file; what a
    /// `unix-abstract:name` target reaches).
    UnixAbstract(String),
}

#[derive(Clone)]
/// A TLS test server's certificate and settings.
pub struct ServerTls {
    /// The server's certificate chain, PEM.
    pub cert_chain_pem: Vec<u8>,
    /// The server's private key, PEM.
    pub key_pem: Vec<u8>,
    /// ALPN protocols offered; empty = no ALPN (for mismatch tests).
    pub alpn: Vec<Vec<u8>>,
    /// Require a client certificate signed by this CA (mutual TLS).
    pub client_ca_pem: Option<Vec<u8>>,
}

#[derive(Clone, Default)]
/// How a test server behaves. The default: plaintext h2c, health service
/// on, every call answered.
pub struct ServerOptions {
    /// TLS instead of plaintext h2c.
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

pub(crate) struct Shared {
    pub(crate) port: u16,
    pub(crate) health: watch::Sender<HashMap<String, u32>>,
    /// Bumped to make every connection send a graceful GOAWAY.
    pub(crate) goaway: watch::Sender<u64>,
    /// Bumped to end every open health Watch with UNAVAILABLE.
    pub(crate) break_watches: watch::Sender<u64>,
    /// Set once by a graceful stop: every connection, open or still in its
    /// handshake, sends GOAWAY and closes once its streams are done.
    pub(crate) draining: watch::Sender<bool>,
    pub(crate) no_health: bool,
    pub(crate) requests: AtomicU64,
    /// Streams accepted and not yet answered (or dropped).
    pub(crate) in_flight: AtomicU64,
    /// HTTP/2 connections open.
    pub(crate) connections: AtomicU64,
    /// Echo streams still to refuse.
    pub(crate) refuse: AtomicU64,
    /// Streams the client reset while their reply was delayed.
    pub(crate) resets: AtomicU64,
    /// The `:authority` of the last stream (`None` before the first).
    pub(crate) last_authority: std::sync::Mutex<Option<String>>,
}
