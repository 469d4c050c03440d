//! switchyard: a client-side load-balancing core for gRPC-style RPC stacks.
//!
//! A single-threaded mio event loop ([`Runtime`]) owns connection management,
//! timers and every state transition of every [`Channel`]; it publishes
//! immutable picker tables that RPC threads read wait-free through a
//! per-thread [`Reader`]. Policies plug in through a [`registry`] by name,
//! shaped like gRPC-Go's `balancer` package.
//!
//! # Overview
//!
//! - [`Runtime`]: the event loop thread. One per process is typical; every
//!   channel created on it shares it.
//! - [`Channel`]: a target (`ipv4:127.0.0.1:50051,...`, or empty when the
//!   host supplies addresses), a service config (JSON, selecting the policy
//!   with `loadBalancingConfig`) and [`ChannelOptions`]. Its
//!   [`ConnectivityState`] is the aggregate of its subchannels'.
//! - [`Reader`]: one per RPC thread ([`Channel::reader`]). It picks a
//!   subchannel ([`Reader::pick`], [`Reader::try_pick`]) and, for channels
//!   with the library's own connections, carries unary calls
//!   ([`Reader::unary`]); [`Channel::unary_start`] starts one on the loop
//!   instead, with no thread blocked while it runs.
//! - Connections: by default the library's own TCP / TLS / HTTP/2
//!   ([`TransportConfig`]); a host stack that owns its transports passes an
//!   [`ExternalConnector`] over its [`HostTransport`] and reports each
//!   subchannel's state with [`Channel::report_subconn_state`].
//! - Policies: `pick_first`, `round_robin`, `weighted_round_robin` (with
//!   ORCA load reports per call or out of band, see
//!   [`ClientConn::register_oob_listener`]),
//!   `least_request_experimental`, `ring_hash_experimental`, `random` and
//!   `outlier_detection_experimental` (around any child policy) are built
//!   in; your own is a
//!   [`Builder`] making [`Balancer`]s that talk to the channel through a
//!   [`ClientConn`] and publish [`Picker`]s, registered with
//!   [`registry::register`].
//! - Failures: calls fail with a gRPC [`Status`] ([`Code`] plus message),
//!   picks with a [`PickError`] (whose [`PickError::status`] is the status
//!   the RPC fails with), channel operations with an [`Error`]. All three
//!   implement [`std::error::Error`], so `?` works in a function returning
//!   `Box<dyn std::error::Error>`.
//!
//! # Credentials are explicit
//!
//! A channel with the library's own connections speaks **verified TLS**
//! unless told otherwise: `ChannelOptions::transport` left at `None` is
//! [`TransportConfig::default()`], TLS with the system's trusted roots,
//! checking the target's host name ([`TlsSettings`] sets other roots, a
//! server name override or a client certificate). Plaintext HTTP/2 (h2c) is
//! only ever chosen by name: [`TransportConfig::insecure()`] or
//! [`Credentials::Insecure`]. Talking TLS to a plaintext backend (or the
//! reverse) fails every connection attempt: the channel goes to
//! TRANSIENT_FAILURE, and a fail-fast call fails with UNAVAILABLE and the
//! connection error (a wait-for-ready call waits for its deadline instead).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use switchyard_testserver::{Listen, ServerOptions, TestServer};
//! use switchyard::{CallOptions, Channel, ChannelOptions, Code, Runtime};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A plaintext backend, and a channel left at the default: verified TLS.
//! let backend = TestServer::start(Listen::Tcp("127.0.0.1:0".parse()?), ServerOptions::default())?;
//! let rt = Runtime::new()?;
//! let ch = Channel::new(&rt, &format!("ipv4:{}", backend.addr()), None, ChannelOptions::default())?;
//! let options = CallOptions {
//!     deadline: Some(Instant::now() + Duration::from_secs(10)),
//!     ..Default::default() // fail fast
//! };
//! let status = ch.reader().unary("/echo.Echo/Unary", b"hi", &options).unwrap_err();
//! assert_eq!(status.code(), Code::Unavailable, "{status}");
//! # Ok(())
//! # }
//! ```
//!
//! # A channel with the library's connections
//!
//! Three plaintext backends on 127.0.0.1 (the in-process echo server of the
//! workspace's `switchyard-testserver` crate), `round_robin`, and a few
//! blocking calls:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use switchyard_testserver::{Listen, ServerOptions, TestServer};
//! use switchyard::{CallOptions, Channel, ChannelOptions, Runtime, TransportConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let loopback = "127.0.0.1:0".parse()?; // a free port, on loopback only
//! let backends = (0..3)
//!     .map(|_| TestServer::start(Listen::Tcp(loopback), ServerOptions::default()))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let addrs: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
//!
//! let rt = Runtime::new()?;
//! let ch = Channel::new(
//!     &rt,
//!     &format!("ipv4:{}", addrs.join(",")),
//!     Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
//!     // These backends speak plaintext: say so. The default is verified TLS.
//!     ChannelOptions { transport: Some(TransportConfig::insecure()), ..Default::default() },
//! )?;
//!
//! let mut reader = ch.reader(); // one per RPC thread
//! let options = CallOptions {
//!     wait_for_ready: Some(true), // wait for a connection instead of failing fast
//!     deadline: Some(Instant::now() + Duration::from_secs(10)),
//!     ..Default::default()
//! };
//! for _ in 0..6 {
//!     let response = reader.unary("/echo.Echo/Unary", b"hi", &options)?; // Err: a Status
//!     assert!(response.message.starts_with(b"hi|port="));
//! }
//!
//! // Or started on the event loop: no thread waits; the closure runs on the
//! // channel's completion thread (`handle.cancel()` would end it early).
//! let (tx, rx) = std::sync::mpsc::channel();
//! let _handle = ch.unary_start("/echo.Echo/Unary", b"async", &options, move |result| {
//!     let _ = tx.send(result.map(|r| r.message));
//! })?;
//! let message = rx.recv_timeout(Duration::from_secs(10))??;
//! assert!(message.starts_with(b"async|port="));
//! ch.close();
//! # Ok(())
//! # }
//! ```
//!
//! # A host stack that owns its transports
//!
//! The host creates and connects transports when the library asks
//! ([`HostTransport`], called on the loop thread: record and return), reports
//! their states, picks, runs the RPC on the picked subchannel's transport
//! (found through its address, [`Address::with_tag`] or
//! [`Address::with_user_data`]) and finishes every pick with
//! [`Pick::done`], which feeds the outcome back to the policy:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, Instant};
//! use switchyard::{
//!     Address, Channel, ChannelOptions, ConnectivityState, DoneInfo, ExternalConnector,
//!     HostTransport, PickInfo, PickOptions, Runtime, SubConn, SubConnId,
//! };
//!
//! /// The host's side: which subchannels the library asked to connect.
//! #[derive(Default)]
//! struct Host {
//!     connecting: Mutex<Vec<SubConnId>>,
//! }
//!
//! impl HostTransport for Host {
//!     fn connect(&self, sc: &Arc<SubConn>) {
//!         // A real host starts a connection to sc.addr() here and reports
//!         // its progress later, from any thread.
//!         self.connecting.lock().unwrap().push(sc.id());
//!     }
//!     fn shutdown(&self, _sc: &Arc<SubConn>) {}
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Arc::new(Host::default());
//! let rt = Runtime::new()?;
//! let ch = Channel::new(
//!     &rt,
//!     "", // no resolver: the host supplies the addresses
//!     Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
//!     ChannelOptions {
//!         connector: Some(Box::new(ExternalConnector::new(host.clone()))),
//!         ..Default::default()
//!     },
//! )?;
//! ch.update_addresses(vec![
//!     Address::new("127.0.0.1:50051").with_tag(1),
//!     Address::new("127.0.0.1:50052").with_tag(2),
//! ])?;
//! ch.sync()?; // the policy has asked for connections by now
//!
//! let connecting = host.connecting.lock().unwrap().clone();
//! assert_eq!(connecting.len(), 2);
//! for id in connecting {
//!     ch.report_subconn_state(id, ConnectivityState::Ready, "connected")?;
//! }
//! ch.sync()?; // the picker over both READY subchannels is published
//!
//! let mut reader = ch.reader(); // one per RPC thread
//! let info = PickInfo { method: "/echo.Echo/Unary", hash: None, metadata: &[] };
//! let options = PickOptions {
//!     deadline: Some(Instant::now() + Duration::from_secs(5)),
//!     wait_for_ready: true,
//! };
//! let mut tags = Vec::new();
//! for _ in 0..4 {
//!     let pick = reader.pick(&info, &options)?; // Err: a PickError
//!     tags.push(pick.subconn().tag()); // run the RPC on this transport
//!     pick.done(&DoneInfo { latency: Duration::from_millis(3), ..DoneInfo::OK });
//! }
//! tags.sort();
//! assert_eq!(tags, [1, 1, 2, 2]); // round_robin over both
//! # Ok(())
//! # }
//! ```
//!
//! # A custom policy, registered by name
//!
//! A [`Builder`] names the policy and makes one [`Balancer`] per channel;
//! every balancer callback runs on the loop thread, one at a time. This one
//! connects to every address and sends each call to the first READY one in
//! address order:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use switchyard::picker::{FailPicker, QueuePicker, SinglePicker};
//! use switchyard::{
//!     registry, Address, Balancer, Builder, Channel, ChannelOptions, ClientConn, ClientConnState,
//!     ConnectivityState, ExternalConnector, HostTransport, PickInfo, Runtime, SubConn,
//!     SubConnId, SubConnState,
//! };
//!
//! struct FirstReadyBuilder;
//!
//! impl Builder for FirstReadyBuilder {
//!     fn name(&self) -> &str {
//!         "first_ready"
//!     }
//!     fn build(&self) -> Box<dyn Balancer> {
//!         Box::new(FirstReady { subconns: Vec::new() })
//!     }
//! }
//!
//! struct FirstReady {
//!     subconns: Vec<(Arc<SubConn>, ConnectivityState)>,
//! }
//!
//! impl FirstReady {
//!     fn publish(&self, cc: &mut dyn ClientConn) {
//!         let ready = self.subconns.iter().find(|(_, s)| *s == ConnectivityState::Ready);
//!         match ready {
//!             Some((sc, _)) => {
//!                 cc.update_state(ConnectivityState::Ready, Box::new(SinglePicker::new(sc.clone())))
//!             }
//!             None if self.subconns.is_empty() => cc.update_state(
//!                 ConnectivityState::TransientFailure,
//!                 Box::new(FailPicker::unavailable("no addresses")),
//!             ),
//!             // Every one failing: the channel fails fast (gRPC's aggregation).
//!             None if self
//!                 .subconns
//!                 .iter()
//!                 .all(|(_, s)| *s == ConnectivityState::TransientFailure) =>
//!             {
//!                 cc.update_state(
//!                     ConnectivityState::TransientFailure,
//!                     Box::new(FailPicker::unavailable("every backend is failing")),
//!                 )
//!             }
//!             None => cc.update_state(ConnectivityState::Connecting, Box::new(QueuePicker)),
//!         }
//!     }
//! }
//!
//! impl Balancer for FirstReady {
//!     fn update_client_conn_state(
//!         &mut self,
//!         cc: &mut dyn ClientConn,
//!         state: ClientConnState,
//!     ) -> Result<(), String> {
//!         for (old, _) in self.subconns.drain(..) {
//!             cc.shutdown_subconn(old.id());
//!         }
//!         for address in state.addresses {
//!             let sc = cc.new_subconn(address)?;
//!             cc.connect(sc.id());
//!             self.subconns.push((sc, ConnectivityState::Idle));
//!         }
//!         self.publish(cc);
//!         Ok(())
//!     }
//!     fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
//!         if self.subconns.is_empty() {
//!             let picker = FailPicker::unavailable(error.to_string());
//!             cc.update_state(ConnectivityState::TransientFailure, Box::new(picker));
//!         }
//!     }
//!     fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, id: SubConnId, state: &SubConnState) {
//!         if let Some(entry) = self.subconns.iter_mut().find(|(sc, _)| sc.id() == id) {
//!             entry.1 = state.state;
//!             if state.state == ConnectivityState::Idle {
//!                 cc.connect(id); // reconnect after a lost connection
//!             }
//!             self.publish(cc);
//!         }
//!     }
//!     fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
//!         for (sc, _) in &self.subconns {
//!             cc.connect(sc.id());
//!         }
//!     }
//!     fn close(&mut self, _cc: &mut dyn ClientConn) {}
//! }
//!
//! # #[derive(Default)]
//! # struct Host(Mutex<Vec<(String, SubConnId)>>);
//! # impl HostTransport for Host {
//! #     fn connect(&self, sc: &Arc<SubConn>) { self.0.lock().unwrap().push((sc.addr().into(), sc.id())); }
//! #     fn shutdown(&self, _sc: &Arc<SubConn>) {}
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! registry::register(Arc::new(FirstReadyBuilder));
//!
//! // Any channel can now name it in its service config.
//! # let host = Arc::new(Host::default());
//! let rt = Runtime::new()?;
//! let ch = Channel::new(
//!     &rt,
//!     "",
//!     Some(r#"{"loadBalancingConfig":[{"first_ready":{}}]}"#),
//!     ChannelOptions {
//!         connector: Some(Box::new(ExternalConnector::new(host.clone()))),
//!         ..Default::default()
//!     },
//! )?;
//! ch.update_addresses(vec![Address::new("a:1"), Address::new("b:1")])?;
//! ch.sync()?;
//! // The host's transport to b:1 comes up first: calls go there.
//! let b = host.0.lock().unwrap().iter().find(|(a, _)| a == "b:1").unwrap().1;
//! ch.report_subconn_state(b, ConnectivityState::Ready, "connected")?;
//! ch.sync()?;
//! assert_eq!(ch.state(), ConnectivityState::Ready);
//! let pick = ch.reader().try_pick(&PickInfo::default())?;
//! assert_eq!(pick.subconn().addr(), "b:1");
//! # Ok(())
//! # }
//! ```
//!
//! Bigger policies are built from the toolkit in [`balancer`] rather than
//! from scratch: [`ChildManager`](balancer::child_manager::ChildManager)
//! runs child policies (one per endpoint, or by any name);
//! [`RotationBuilder`](balancer::rotation::RotationBuilder) makes the
//! chunked rotations that readers pick from inline, wait-free, rebuilding
//! only what changed; [`StrideSchedule`](balancer::stride::StrideSchedule)
//! (weighted), [`UniformTable`](balancer::UniformTable) (random),
//! [`LeastLoadedTable`](balancer::LeastLoadedTable) (least_request) and
//! [`RingTable`](balancer::RingTable) (ring_hash) are the other tables
//! readers pick from inline ([`Picker::inline`]); [`DoneHooks`] lets a wrapping picker add its done hook
//! after its child's; and
//! [`TestClientConn`](balancer::testing::TestClientConn) unit-tests a policy
//! without a loop. `tests/toolkit.rs` builds a policy from these parts using
//! only the public API. The channel's own policy sits inside a
//! [`GracefulSwitch`](balancer::graceful_switch::GracefulSwitch), which keeps
//! the serving policy until the one a new service config names is ready.
//!
//! A custom resolver is registered by URI scheme, as gRPC's are: its
//! builder gets the parsed target and a [`ResolverClientConn`](resolver::ResolverClientConn)
//! to push endpoints, a service config or an error through (from any
//! thread), and the channel asks it to look again (`resolve_now`) when a
//! backend is lost. The built-in schemes (`dns:`, `ipv4:`, `ipv6:`, `unix:`,
//! `unix-abstract:`, `passthrough:`; a `passthrough:` host name, which gRPC
//! hands to its dialer, is looked up by DNS for the library's own
//! connections) work the same way; with an empty target
//! the host supplies addresses itself ([`Channel::update_addresses`]) and
//! hears re-resolution requests through `ChannelOptions::on_resolve_now`.
//! [`ManualResolver`](resolver::manual::ManualResolver) (gRPC-Go's
//! `resolver/manual`) is a registered scheme whose states are pushed by hand.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use switchyard::resolver::{self, Resolver, ResolverBuilder, ResolverClientConn, ResolverState, Target};
//! use switchyard::{Address, Channel, ChannelOptions, Endpoint, ExternalConnector, HostTransport, Runtime, SubConn};
//!
//! /// `inventory:///name`: the backends a service inventory lists, pushed
//! /// again whenever the channel asks.
//! struct Inventory(Arc<Mutex<Vec<String>>>);
//! struct InventoryResolver(Arc<Mutex<Vec<String>>>, ResolverClientConn);
//!
//! impl InventoryResolver {
//!     fn push(&self) {
//!         let endpoints = self.0.lock().unwrap().iter().map(|a| Endpoint::from(Address::new(a.as_str()))).collect();
//!         // Refused once the channel is closed: nothing left to do then.
//!         let _ = self.1.update(ResolverState { endpoints, service_config: None });
//!     }
//! }
//! impl Resolver for InventoryResolver {
//!     fn resolve_now(&mut self) {
//!         self.push() // cheap here; a real lookup goes to another thread
//!     }
//!     fn close(&mut self) {}
//! }
//! impl ResolverBuilder for Inventory {
//!     fn scheme(&self) -> &str {
//!         "inventory"
//!     }
//!     fn check(&self, target: &Target) -> Result<(), String> {
//!         match target.endpoint() {
//!             "echo" => Ok(()),
//!             other => Err(format!("no service {other:?} in the inventory")),
//!         }
//!     }
//!     fn build(&self, _target: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
//!         let r = InventoryResolver(self.0.clone(), cc);
//!         r.push();
//!         Ok(Box::new(r))
//!     }
//! }
//! # struct Host;
//! # impl HostTransport for Host {
//! #     fn connect(&self, _sc: &Arc<SubConn>) {}
//! #     fn shutdown(&self, _sc: &Arc<SubConn>) {}
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inventory = Arc::new(Mutex::new(vec!["127.0.0.1:50051".to_string()]));
//! resolver::register(Arc::new(Inventory(inventory.clone())));
//! let rt = Runtime::new()?;
//! # let options = || ChannelOptions {
//! #     connector: Some(Box::new(ExternalConnector::new(Arc::new(Host)))),
//! #     ..Default::default()
//! # };
//! let ch = Channel::new(&rt, "inventory:///echo", None, options())?;
//! // A channel resolves once used (its first pick or call, or `connect`).
//! ch.connect()?;
//! ch.sync()?; // the build, which pushes
//! ch.sync()?; // what it pushed
//! assert_eq!(ch.snapshot()?.subchannels[0].address, "127.0.0.1:50051");
//! // Its builder refuses a target it cannot resolve: the channel is not made.
//! assert!(Channel::new(&rt, "inventory:///nope", None, options()).is_err());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

// Base: no import of anything above.
pub mod address;
pub mod backoff;
pub(crate) mod clock;
pub(crate) mod connectivity;
pub(crate) mod error;
pub mod named;
// The wait-free publication protocol, public only for the loom models and
// the pick benchmark; not part of the API.
pub(crate) mod prefetch;
#[doc(hidden)]
pub mod publish;
pub(crate) mod status;
pub(crate) mod sync;
pub mod trace;
// The policy API, then the built-in policies.
pub mod balancer;
pub mod policy;
pub mod resolver;
pub mod service_config;
// The loop, transports, connectors, the subchannel machine.
pub mod connector;
pub mod runtime;
pub(crate) mod subchannel;
pub mod transport;
// Channels, then what RPC threads use.
pub mod call;
pub mod channel;
pub mod reader;
pub mod snapshot;
// Entry points for the fuzz targets and their stable replays; not API.
#[doc(hidden)]
pub mod fuzzing;

pub use backoff::BackoffConfig;
pub use balancer::picker;
pub use balancer::picker::{
    DoneHook, DoneHooks, DoneHooksFull, DoneInfo, PickInfo, PickLocal, PickResult, Picker,
};
pub use balancer::rotation::{Rotation, RotationEntry};
pub use balancer::{
    Balancer, Builder, ClientConn, ClientConnState, LbConfig, LoadReportListener, OobListenerId,
    SubConnState, TimerToken, WorkScheduler,
};
pub use call::{check_metadata, check_method, CallHandle, CallOptions, CallResult};
pub use channel::{Channel, ChannelOptions, StateCallback, SubConnCallback};
pub use clock::{Clock, ManualClock, SystemClock};
pub use connector::managed::ManagedConnector;
pub use connector::{
    Connector, ConnectorCtx, ExternalConnector, HostTransport, LoadMetrics, Notifier,
    TransportEvent,
};
pub use error::Error;
pub use policy::registry;
pub use reader::{Pick, PickError, PickOptions, PickRef, Reader};
// A pick as plain words, for the C ABI crate.
pub use address::{Address, Endpoint, UserData};
pub use balancer::subconn::{SubConn, SubConnId};
pub use connectivity::ConnectivityState;
#[doc(hidden)]
pub use reader::{RawPick, RAW_PICK_HOLD_WORD, RAW_PICK_WORDS};
pub use runtime::{Runtime, RuntimeConfig};
pub use service_config::{MethodConfig, RetryPolicy};
pub use snapshot::{ChannelSnapshot, SubchannelSnapshot};
pub use status::{Code, Status};
pub use transport::{Credentials, Keepalive, Limits, TlsSettings, TransportConfig, UnaryResponse};

/// The README's Rust examples, compiled (and run where they can be) by the
/// doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
