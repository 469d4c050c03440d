//! What a test server is started with, and the state its connections
//! share (below the server, the handler and TLS, which all read them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;
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
    /// No ORCA service: `StreamCoreMetrics` answers UNIMPLEMENTED, like a
    /// server that never registered it.
    pub no_orca: bool,
    /// The smallest report interval `StreamCoreMetrics` honours: a client
    /// asking for less gets this (gRPC servers clamp the same way, to 30 s
    /// by default: `None`). Tests set a few milliseconds to run fast.
    pub orca_min_interval: Option<Duration>,
    /// `StreamCoreMetrics` answers at once with this grpc-status
    /// (trailers-only), as a server whose ORCA service is failing would
    /// (`no_orca` wins); the stream is counted all the same.
    pub orca_fail: Option<u32>,
    /// Health `Watch` answers at once with this grpc-status (trailers-only,
    /// no status delivered), as a server whose health service is failing
    /// would (`no_health` wins); the stream is counted all the same.
    pub health_fail: Option<u32>,
}

/// gRPC's default minimum ORCA reporting interval (gRPC-Go's
/// `orca.ServiceOptions.MinReportingInterval`).
pub const DEFAULT_ORCA_MIN_INTERVAL: Duration = Duration::from_secs(30);

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
    /// Streams whose connection went away while their reply was delayed.
    pub(crate) cut_off: AtomicU64,
    /// The `:authority` of the last stream (`None` before the first).
    pub(crate) last_authority: std::sync::Mutex<Option<String>>,
    pub(crate) no_orca: bool,
    pub(crate) orca_min_interval: Duration,
    pub(crate) orca_fail: Option<u32>,
    pub(crate) health_fail: Option<u32>,
    /// Health `Watch` streams opened.
    pub(crate) health_watches: AtomicU64,
    /// What `StreamCoreMetrics` reports (each report reads it afresh).
    pub(crate) oob_load: Mutex<OrcaLoad>,
    /// The per-call `endpoint-load-metrics-bin` trailer's load, on echo
    /// replies OK or not (`None`: no trailer).
    pub(crate) call_load: Mutex<Option<OrcaLoad>>,
    /// `StreamCoreMetrics` streams opened.
    pub(crate) orca_streams: AtomicU64,
    /// The interval the last `StreamCoreMetrics` asked for.
    pub(crate) orca_interval: Mutex<Option<Duration>>,
}

/// The load a test server reports (`xds.data.orca.v3.OrcaLoadReport`'s
/// fields WRR reads; 0 leaves a field out, as proto3 does).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OrcaLoad {
    /// `cpu_utilization`.
    pub cpu_utilization: f64,
    /// `application_utilization`.
    pub application_utilization: f64,
    /// `rps_fractional` (queries per second).
    pub rps_fractional: f64,
    /// `eps` (errors per second).
    pub eps: f64,
}
