//! An in-process gRPC echo and health server (tokio + h2::server +
//! tokio-rustls) for switchyard's tests, benches and demo: real HTTP/2
//! backends on 127.0.0.1 (or a Unix socket) that a test can steer and stop.
//! Its own crate, so the library itself never links an async runtime.
//! Serves:
//! - `/echo.Echo/Unary`: replies `request ++ "|port=<port>"`, with
//!   `x-backend-port` in headers and trailers. Request metadata steers it:
//!   `x-echo-*` headers are copied back, `x-delay-ms` sleeps first,
//!   `x-respond-status: N` answers trailers-only with grpc-status N (and
//!   `grpc-message` from `x-respond-message`), `x-http-status: N` answers a
//!   bare HTTP status, `x-respond-early: N` answers trailers-only with
//!   grpc-status N as soon as the request headers arrive, without reading
//!   the body (as a server rejecting a call does). A client that resets a
//!   stream during `x-delay-ms` is counted ([`TestServer::resets`]).
//!   [`ServerOptions::refuse_streams`] refuses the first echo streams with
//!   REFUSED_STREAM. `x-response-bytes: N` replies N bytes instead of the
//!   echo; `x-grpc-http-status: N` sends the (gRPC) response under HTTP
//!   status N, `x-trailer-status: C` ends it with grpc-status C (`none`:
//!   without one).
//!   For retry tests (gRFC A6): `x-fail-attempts: N` fails a call's first N
//!   attempts (by its `grpc-previous-rpc-attempts`, which the reply echoes
//!   as `x-previous-rpc-attempts`), `x-fail-port: P` fails every call on
//!   the backend listening on port P, both trailers-only with grpc-status
//!   `x-fail-code` (default 14, UNAVAILABLE; `none`: no grpc-status at
//!   all, the trailers-only answer ending as gRPC's missing-status rules
//!   say) and, with `x-pushback-ms: V`,
//!   the trailer `grpc-retry-pushback-ms: V`; `x-fail-after-headers: N`
//!   sends the response headers, then trailers with grpc-status N (and the
//!   pushback, if asked);
//!   `x-delay-first-ms: D` delays only a call's first attempt (no
//!   `grpc-previous-rpc-attempts`), as `x-delay-ms` does.
//! - `/grpc.health.v1.Health/Check` and `/Watch` with per-service status
//!   (UNIMPLEMENTED instead with [`ServerOptions::no_health`]).
//! - ORCA (gRFC A51): `/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`
//!   sends an `OrcaLoadReport` with the load [`TestServer::set_load`] sets,
//!   every interval the client asks for but no more often than
//!   [`ServerOptions::orca_min_interval`] (UNIMPLEMENTED instead with
//!   [`ServerOptions::no_orca`]; [`TestServer::orca_streams`] counts the
//!   streams opened). [`TestServer::set_call_load`] attaches the
//!   `endpoint-load-metrics-bin` trailer to every echo reply, error
//!   statuses included.
//!
//! Modes: plaintext h2c, TLS (cert/key PEM, configurable ALPN, optional
//! client certificates; [`TestPki`] makes throwaway ones), or "black hole"
//! (accepts TCP, never speaks).
//!
//! Two ways to stop: [`TestServer::stop`] is a hard kill (every connection
//! dropped, calls in flight lost); [`TestServer::graceful_stop`] is what a
//! deployment does (stop accepting, GOAWAY, finish the calls in flight, close).

#![warn(missing_docs)]

mod handler;
mod options;
mod server;
mod tls;
pub mod wire;

pub use options::{Listen, OrcaLoad, ServerOptions, ServerTls, DEFAULT_ORCA_MIN_INTERVAL};
pub use server::TestServer;
pub use tls::TestPki;
pub use wire::{NOT_SERVING, SERVICE_UNKNOWN, SERVING};
