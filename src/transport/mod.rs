//! The library's own client transport: mio-driven TCP / Unix / TLS
//! connections speaking HTTP/2, plus gRPC unary framing on top.
//!
//! What users set is [`TransportConfig`]: [`Credentials`] (verified TLS by
//! default, [`TlsSettings`] for other roots, a server name or a client
//! certificate; plaintext only as [`TransportConfig::insecure`]),
//! [`Keepalive`] and the size limits. A call's response is an
//! [`UnaryResponse`]. The in-process gRPC echo and health server that tests
//! and examples run against is not here: it is the workspace's
//! `switchyard-testserver` crate, so the library links no async runtime.
//!
//! Inside, everything is a state machine owned by one event-loop thread.
//! `Connection::start` registers the socket under the loop's token; the
//! loop calls `Connection::on_event` for every readiness event on that
//! token and whenever the waker it handed to `start` fires, and
//! `Connection::on_timer` when `Connection::next_timer` is due. No async
//! runtime is involved: h2's futures are polled by hand with a `Context`
//! built from that waker; RPC threads block in `unary` with a park/unpark
//! waker, and the loop polls the future `start` returns for calls it drives
//! itself.

pub(crate) mod grpc;
mod h2conn;
pub(crate) mod health;
pub mod health_proto;
mod io;
pub(crate) mod orca;
mod stream;
mod tls;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use grpc::UnaryResponse;
pub(crate) use grpc::{
    block_on, check_message_len, code, start, unary_limited, CallError, CallFuture, Pushback,
    ServerSent,
};
pub(crate) use h2conn::Connection;
pub(crate) use health::{HealthWatch, WatchEvent};
pub(crate) use tls::TlsClient;
// A connection's handle and a blocking call on it, public only for the raw
// transport benchmark (benches/rpc.rs); not part of the API.
#[doc(hidden)]
pub use grpc::unary;
#[doc(hidden)]
pub use h2conn::Handle;

/// How to talk to a backend. The default is verified TLS (the system's
/// trusted roots, the target's host name); plaintext only when named:
/// [`TransportConfig::insecure`] or [`Credentials::Insecure`].
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// TLS (the default) or, only when asked for by name, plaintext.
    pub credentials: Credentials,
    /// Off by default, as in gRPC.
    pub keepalive: Option<Keepalive>,
    /// The largest response message a call accepts, in bytes (the gRPC
    /// framing's length prefix); a larger one fails its call with
    /// RESOURCE_EXHAUSTED before it is buffered. `None` (the default):
    /// gRPC's 4 MiB, unless the method's `maxResponseMessageBytes` says
    /// otherwise (larger or smaller); set, the smaller of the two applies,
    /// as gRPC-Go's `MaxCallRecvMsgSize` with a service config.
    pub max_recv_message_size: Option<usize>,
    /// SETTINGS_MAX_HEADER_LIST_SIZE we announce: the largest decoded
    /// response header (or trailer) list, in RFC 9113 bytes (name + value +
    /// 32 per field). A larger one fails its call with INTERNAL; one over 4x
    /// this ends the connection (h2's abuse guard). Default 16 MiB, gRPC-Go's
    /// `defaultClientMaxHeaderListSize` (PROTOCOL-HTTP2 suggests clients may
    /// go as low as 8 KiB).
    pub max_header_list_size: u32,
    /// The application's name and version (`myapp/1.2`), sent in every
    /// call's `user-agent` before the library's own, as gRPC-Go's
    /// `WithUserAgent`, grpc-java's `userAgent` and C-core's
    /// `grpc.primary_user_agent` do. Printable ASCII; `None`: the library's
    /// alone.
    pub user_agent: Option<String>,
}

/// gRPC's default receive message limit (`MaxCallRecvMsgSize`), 4 MiB: a
/// call's limit where neither the channel nor the method sets one.
pub const DEFAULT_MAX_RECV_MESSAGE_SIZE: usize = 4 << 20;
/// gRPC-Go's default client header list limit, 16 MiB.
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 16 << 20;

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            credentials: Credentials::default(),
            keepalive: None,
            max_recv_message_size: None,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            user_agent: None,
        }
    }
}

/// The per-connection limits taken from a [`TransportConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See `TransportConfig::max_recv_message_size`.
    pub max_recv_message_size: Option<usize>,
    /// See `TransportConfig::max_header_list_size`.
    pub max_header_list_size: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        TransportConfig::default().limits()
    }
}

impl TransportConfig {
    /// Plaintext HTTP/2 with prior knowledge (h2c), as gRPC's insecure
    /// credentials: for loopback, tests, or a mesh that encrypts for you.
    pub fn insecure() -> TransportConfig {
        TransportConfig {
            credentials: Credentials::Insecure,
            ..Default::default()
        }
    }

    /// Verified TLS with these settings.
    pub fn tls(settings: TlsSettings) -> TransportConfig {
        TransportConfig {
            credentials: Credentials::Tls(settings),
            ..Default::default()
        }
    }

    /// Every call's `user-agent`: the application's (if given), then the
    /// library's. An error names a value that is no printable ASCII.
    pub fn user_agent_header(&self) -> Result<http::HeaderValue, String> {
        match &self.user_agent {
            None => Ok(http::HeaderValue::from_static(grpc::USER_AGENT_VALUE)),
            Some(app) => {
                let full = format!("{app} {}", grpc::USER_AGENT_VALUE);
                match http::HeaderValue::from_str(&full) {
                    Ok(v) if app.bytes().all(|b| (b' '..=b'~').contains(&b)) => Ok(v),
                    _ => Err(format!(
                        "user agent {app:?} is not printable ASCII (a header value)"
                    )),
                }
            }
        }
    }

    /// The size limits every connection of this config enforces.
    pub fn limits(&self) -> Limits {
        Limits {
            max_recv_message_size: self.max_recv_message_size,
            max_header_list_size: self.max_header_list_size,
        }
    }

    /// The TLS settings, `None` for plaintext.
    pub fn tls_settings(&self) -> Option<&TlsSettings> {
        match &self.credentials {
            Credentials::Tls(t) => Some(t),
            Credentials::Insecure => None,
        }
    }
}

/// A channel's transport credentials. There is no implicit plaintext: the
/// default is TLS with verification, and `Insecure` must be spelled out.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// TLS, verifying the server's certificate.
    Tls(TlsSettings),
    /// Plaintext HTTP/2 (h2c): no encryption, no server authentication.
    Insecure,
}

impl Default for Credentials {
    fn default() -> Credentials {
        Credentials::Tls(TlsSettings::default())
    }
}

#[derive(Debug, Clone, Default)]
/// How to verify the server, and the client certificate for mutual TLS.
/// The default: the system's trusted roots, the target's host name, no
/// client certificate.
pub struct TlsSettings {
    /// SNI and certificate name to verify; empty = the authority's host
    /// (the target's: its IP address, or "localhost" for a Unix socket).
    /// Set, it is the calls' `:authority` too (as gRPC-Go's server-name
    /// override is) unless the channel is given one
    /// (`ChannelOptions::authority`): then the two may differ, as C-core's
    /// `ssl_target_name_override` and `default_authority` may (gRPC-Go
    /// refuses that pair). Given with a port (`host:port`), the host is the
    /// name verified.
    pub server_name: String,
    /// PEM bundle of trusted roots; `None` = gRPC's default: the file
    /// `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH` names, else the system's store
    /// (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured), else the Mozilla roots
    /// built in; read once per process.
    pub roots_pem: Option<Vec<u8>>,
    /// (certificate chain PEM, private key PEM) for mutual TLS.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsSettings {
    /// Builds the TLS client configuration these settings make, as a
    /// channel does for its connections, and says why it cannot be built:
    /// a PEM block of roots whose contents is no certificate, a client
    /// certificate or key that rustls refuses. A check for settings taken
    /// from outside (the C ABI's option setters), so that they are refused
    /// when set rather than failing every connection later.
    pub fn check(&self) -> Result<(), String> {
        tls::TlsClient::new(self).map(|_| ())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// HTTP/2 keepalive PINGs (gRFC A8), off unless set: a PING after `time`
/// without reading anything, the connection dropped if nothing at all is
/// read within `timeout` after it. Without `permit_without_calls` it is
/// dormant while no call is in flight, and a call that starts on a
/// connection quiet for `time` pings at once. A server's "too_many_pings"
/// GOAWAY doubles `time`. On Linux, TCP connections also get
/// TCP_USER_TIMEOUT = `timeout` (gRFC A18). A channel raises a `time`
/// under 10 s, 0 included, to 10 s (gRFC A8's client minimum, as gRPC-Go's
/// `WithKeepaliveParams` and gRPC Java's `keepAliveTime` do, with a
/// warning); `None` is keepalive off, as is a `time` longer than any
/// connection lives, and a `timeout` of 0 is 20 s, as gRPC-Go's transport
/// takes them.
pub struct Keepalive {
    /// Idle time (no bytes read) after which a PING is sent.
    pub time: Duration,
    /// How long to wait for the PING ack before declaring the connection lost.
    pub timeout: Duration,
    /// Ping even when no call is in flight.
    pub permit_without_calls: bool,
}

/// Longer than this is forever (and keeps `Instant` arithmetic in range).
const KEEPALIVE_FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// gRFC A8's least client keepalive time (gRPC-Go's
/// `internal.KeepaliveMinPingTime`, gRPC Java's `KEEPALIVE_TIME_NANOS_MIN`).
pub const MIN_KEEPALIVE_TIME: Duration = Duration::from_secs(10);

/// The floor channels apply, in milliseconds: [`MIN_KEEPALIVE_TIME`] unless
/// a test lowered it (`set_min_keepalive_time_for_testing`).
static MIN_KEEPALIVE_MS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(MIN_KEEPALIVE_TIME.as_millis() as u64);

/// Lowers (or restores) the keepalive floor channels apply, for tests that
/// cannot wait 10 s for a ping, as gRPC-Go's tests set
/// `internal.KeepaliveMinPingTime`. Process-wide; not part of the API.
#[doc(hidden)]
pub fn set_min_keepalive_time_for_testing(min: Duration) {
    let ms = u64::try_from(min.as_millis()).unwrap_or(u64::MAX);
    MIN_KEEPALIVE_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

impl Keepalive {
    /// As gRPC-Go takes its settings: a `time` of 0 (or longer than any
    /// connection lives) is keepalive off, a `timeout` of 0 is the default
    /// 20 s.
    pub(crate) fn normalized(self) -> Option<Keepalive> {
        if self.time.is_zero() || self.time >= KEEPALIVE_FOREVER {
            return None;
        }
        let timeout = if self.timeout.is_zero() {
            Duration::from_secs(20)
        } else {
            self.timeout.min(KEEPALIVE_FOREVER)
        };
        Some(Keepalive { timeout, ..self })
    }

    /// As a channel takes its setting (gRPC-Go's `WithKeepaliveParams`): a
    /// `time` under [`MIN_KEEPALIVE_TIME`], 0 included, is raised to it,
    /// with a warning.
    pub(crate) fn with_min_time(self) -> Keepalive {
        let min =
            Duration::from_millis(MIN_KEEPALIVE_MS.load(std::sync::atomic::Ordering::Relaxed));
        if self.time >= min {
            return self;
        }
        log::warn!(
            target: crate::trace::TRANSPORT,
            "adjusting keepalive ping interval {:?} to the minimum period of {:?}",
            self.time,
            min
        );
        Keepalive { time: min, ..self }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
    /// A Linux abstract unix socket: its name, without the leading NUL.
    UnixAbstract(Vec<u8>),
}

impl Target {
    /// The `:authority` of calls to this target: `ip:port` (`[v6]:port`), or
    /// "localhost" for unix sockets, as gRPC does.
    pub fn authority(&self) -> String {
        match self {
            Target::Tcp(a) => a.to_string(),
            Target::Unix(_) | Target::UnixAbstract(_) => "localhost".into(),
        }
    }

    /// The TLS server name to verify when none is configured: the IP
    /// address, or "localhost" for unix sockets (as for the authority).
    pub fn host(&self) -> String {
        match self {
            Target::Tcp(a) => a.ip().to_string(),
            Target::Unix(_) | Target::UnixAbstract(_) => "localhost".into(),
        }
    }
}

/// What a connection reports back to the loop after being driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Nothing new to report.
    Pending,
    /// The server's SETTINGS were received and applied. Reported once.
    Ready,
    /// The attempt failed before READY (refused, TLS error, EOF, ALPN, ...).
    Failed(String),
    /// An established connection died (reset, EOF, keepalive timeout).
    Lost(String),
    /// The peer sent GOAWAY: start no new streams; in-flight ones may finish.
    /// A `Lost` follows once the connection actually closes.
    /// `too_many_pings` = ENHANCE_YOUR_CALM with debug data "too_many_pings":
    /// the caller should double its keepalive time (gRFC A8).
    GoAway { too_many_pings: bool },
}

impl crate::balancer::subconn::SubConn {
    /// The connection to send on, if the library manages one and it is READY.
    #[doc(hidden)] // for the raw transport benchmark (benches/rpc.rs) only
    pub fn transport(&self) -> Option<std::sync::Arc<Handle>> {
        self.attached()?.0.clone().downcast::<Handle>().ok()
    }

    pub(crate) fn set_transport(&self, handle: Option<std::sync::Arc<Handle>>) {
        self.attach(handle.map(|h| h as std::sync::Arc<dyn std::any::Any + Send + Sync>));
    }
}
