//! Name resolution, shaped like gRPC's resolver API: a [`ResolverBuilder`]
//! registered by URI scheme builds a [`Resolver`] for each channel whose
//! target has that scheme; the resolver pushes what it finds — endpoints, an
//! optional service config, or an error — through its
//! [`ResolverClientConn`], from any thread, and hears the channel's
//! re-resolution requests (`resolve_now`).
//!
//! Targets are parsed as gRPC's naming doc says ([`Target`]): a target
//! whose scheme is not registered (or that has none: `host:port`) is a DNS
//! name. Built in: `dns` (system lookups on a thread of its own, paced like
//! gRPC-Go's), `ipv4`, `ipv6`, `unix`, `unix-abstract` and `passthrough`.
//! The empty target has no resolver: the host supplies addresses itself
//! (`Channel::update_addresses`) and hears re-resolution requests through
//! `ChannelOptions::on_resolve_now`.
//!
//! A resolver is unit-tested without a channel against
//! [`testing::TestResolverClientConn`], which records what it pushes.
//!
//! ```
//! use std::sync::Arc;
//! use switchyard::resolver::{self, Resolver, ResolverBuilder, ResolverClientConn, ResolverState, Target};
//! use switchyard::{Address, Channel, ChannelOptions, Endpoint, ExternalConnector, HostTransport, Runtime, SubConn};
//!
//! /// `static-list:a,b`: one backend per listed address, pushed once.
//! struct StaticList;
//! struct Quiet;
//! impl Resolver for Quiet {
//!     fn resolve_now(&mut self) {}
//!     fn close(&mut self) {}
//! }
//! impl ResolverBuilder for StaticList {
//!     fn scheme(&self) -> &str {
//!         "static-list"
//!     }
//!     fn build(&self, target: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
//!         let endpoints = target.endpoint().split(',').map(|a| Endpoint::from(Address::new(a))).collect();
//!         cc.update(ResolverState { endpoints, service_config: None }).map_err(|e| e.to_string())?;
//!         Ok(Box::new(Quiet))
//!     }
//! }
//! # struct Host;
//! # impl HostTransport for Host {
//! #     fn connect(&self, _sc: &Arc<SubConn>) {}
//! #     fn shutdown(&self, _sc: &Arc<SubConn>) {}
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! resolver::register(Arc::new(StaticList));
//! let rt = Runtime::new()?;
//! let ch = Channel::new(
//!     &rt,
//!     "static-list:a:1,b:1",
//!     Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
//!     ChannelOptions {
//!         connector: Some(Box::new(ExternalConnector::new(Arc::new(Host)))),
//!         ..Default::default()
//!     },
//! )?;
//! ch.connect()?; // a channel resolves once used
//! ch.sync()?; // the build, which pushes
//! ch.sync()?; // what it pushed
//! let mut seen: Vec<String> = ch.snapshot()?.subchannels.into_iter().map(|s| s.address).collect();
//! seen.sort();
//! assert_eq!(seen, ["a:1", "b:1"]);
//! # Ok(())
//! # }
//! ```

mod addr_sort;
mod dns;
mod dns_client;
mod dns_config;
mod fixed;
pub mod manual;
mod registry;
mod target;
pub mod testing;

pub use self::registry::ResolverRegistry;
pub(crate) use self::target::{
    authority_host, builtin_plan, default_authority, parse_channel_target, passthrough_by_name,
    Plan,
};
pub use self::target::{valid_authority, Target, DEFAULT_PORT};
use crate::address::Endpoint;
use crate::error::Error;
use std::sync::{Arc, OnceLock};

/// What a resolver found (gRPC's `resolver.State`).
#[derive(Clone, Debug, Default)]
pub struct ResolverState {
    /// The backends, in order (pick_first tries them in this order).
    pub endpoints: Vec<Endpoint>,
    /// A service config (JSON) for the channel, if the resolver has one. It
    /// replaces the channel's default; an invalid one is logged and the
    /// last good one kept (with none good yet, the channel fails with its
    /// error). `None` (or empty text) means the channel's default config
    /// (gRPC's rule), so a resolver sends its config with every update. A
    /// resolver that found
    /// a config it cannot read (a malformed DNS TXT record) sends a JSON
    /// string saying why (`"\"not JSON\""`): an invalid config, with that
    /// error.
    pub service_config: Option<String>,
}

/// Builds the resolver of one URI scheme (gRPC's `resolver.Builder`).
/// Registered with [`register`]; any thread may build.
pub trait ResolverBuilder: Send + Sync {
    /// The scheme it resolves (compared case-insensitively).
    fn scheme(&self) -> &str;

    /// Checks `target` when a channel is created (on the creating thread):
    /// an `Err` fails the creation with that message. The default accepts
    /// every target; `build` may still refuse it later.
    fn check(&self, target: &Target) -> Result<(), String> {
        let _ = target;
        Ok(())
    }

    /// A resolver for `target`, which pushes through `cc` (it may do so
    /// before returning). Runs on the event loop thread (do not block), each
    /// time the channel leaves IDLE: a channel resolves only once it is
    /// used (its first pick or call, or `Channel::connect`), and closes its
    /// resolver when it goes idle. An `Err` puts the channel in
    /// TRANSIENT_FAILURE with that message (its picks fail with it) until it
    /// goes idle and is used again.
    fn build(&self, target: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String>;
}

/// A channel's resolver (gRPC's `resolver.Resolver`). Its methods run on
/// the event loop thread and must not block: do the work elsewhere and push
/// the result through the `ResolverClientConn`.
pub trait Resolver: Send {
    /// The channel asks for a new resolution (its policy or a subchannel
    /// lost a backend). A hint: a resolver may pace or ignore it.
    fn resolve_now(&mut self);

    /// The channel rejected the resolver's last update (its policy found no
    /// usable address, or its service config is invalid) and its backoff
    /// says to look again now (gRPC-Go's `UpdateState` returning
    /// `ErrBadResolverState`). A resolver that paces `resolve_now` should
    /// look again at once: the channel has paced this already, and the
    /// resolver's own minimum interval would keep the rejected state. The
    /// default calls `resolve_now`.
    fn update_rejected(&mut self) {
        self.resolve_now();
    }

    /// The channel is done with the resolver: stop. Updates pushed after
    /// this are refused with `Error::Closed`.
    fn close(&mut self);
}

/// The loop-side receiver of a resolver's pushes (the channel's).
pub(crate) trait ResolverSink: Send + Sync {
    fn update(&self, state: ResolverState) -> Result<(), Error>;
    fn report_error(&self, message: String) -> Result<(), Error>;
}

/// What a channel asks of its resolver (gRPC's `resolver.BuildOptions`
/// and the DNS resolver's knobs), from `ChannelOptions::resolver`.
#[derive(Clone, Debug)]
pub struct ResolverOptions {
    /// Look the target's service config up in DNS (gRFC A2: TXT records of
    /// `_grpc_config.<host>`). Off by default, as in gRPC C-core: a name's
    /// owner then cannot change a client's policy behind its back.
    pub dns_service_config: bool,
    /// The channel ignores every service config its resolver gives and
    /// applies its own default (gRPC's `WithDisableServiceConfig`, passed
    /// to resolvers as `BuildOptions.DisableServiceConfig`): a resolver
    /// may skip looking one up (the DNS resolver does). Off by default.
    pub disable_service_config: bool,
    /// The least time between two DNS lookups that the channel asked for
    /// (re-resolution on connection loss). gRPC's: 30 s; shorter for tests.
    pub min_resolution_interval: std::time::Duration,
}

impl Default for ResolverOptions {
    fn default() -> ResolverOptions {
        ResolverOptions {
            dns_service_config: false,
            disable_service_config: false,
            min_resolution_interval: std::time::Duration::from_secs(30),
        }
    }
}

/// How a resolver reaches its channel (gRPC's `resolver.ClientConn`):
/// cloneable and usable from any thread; each push reaches the channel's
/// event loop in order.
#[derive(Clone)]
pub struct ResolverClientConn {
    sink: Arc<dyn ResolverSink>,
    options: Arc<ResolverOptions>,
}

impl ResolverClientConn {
    pub(crate) fn new(sink: Arc<dyn ResolverSink>) -> ResolverClientConn {
        ResolverClientConn {
            sink,
            options: Arc::default(),
        }
    }

    pub(crate) fn with_options(mut self, options: ResolverOptions) -> ResolverClientConn {
        self.options = Arc::new(options);
        self
    }

    /// What the channel asks of its resolver.
    pub fn options(&self) -> &ResolverOptions {
        &self.options
    }

    /// New endpoints (and maybe a service config) for the channel.
    /// `Error::Closed` once the resolver was closed (or its channel),
    /// `Error::RuntimeGone` once the runtime is; `Error::InvalidArgument`
    /// if an address is empty.
    ///
    /// `Ok` means the channel has the update, not that it took it: it is
    /// applied on the loop, later. An update the channel rejects (its
    /// policy found no usable address, or its service config is invalid:
    /// gRPC-Go's `UpdateState` returns `ErrBadResolverState` then) is
    /// answered with `Resolver::update_rejected` calls (by default
    /// `resolve_now`), paced by the channel's backoff, until an update is
    /// accepted: a resolver that polls needs no verdict of its own.
    pub fn update(&self, state: ResolverState) -> Result<(), Error> {
        check_endpoints(&state.endpoints)?;
        self.sink.update(state)
    }

    /// The resolver failed: the channel's policy keeps its last good
    /// endpoints if it has any, else the channel fails RPCs with `message`.
    pub fn report_error(&self, message: &str) -> Result<(), Error> {
        self.sink.report_error(message.to_string())
    }
}

fn global() -> &'static ResolverRegistry {
    static GLOBAL: OnceLock<ResolverRegistry> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let fixed = fixed::SCHEMES
            .into_iter()
            .map(|s| Arc::new(fixed::FixedBuilder(s)) as Arc<dyn ResolverBuilder>);
        ResolverRegistry::with(fixed.chain([Arc::new(dns::DnsBuilder) as Arc<dyn ResolverBuilder>]))
    })
}

/// Registers `builder` process-wide under its scheme, replacing any earlier
/// one (a built-in too). Channels created afterwards use it.
pub fn register(builder: Arc<dyn ResolverBuilder>) {
    global().register(builder)
}

/// The builder registered for `scheme` (any case).
pub fn get(scheme: &str) -> Option<Arc<dyn ResolverBuilder>> {
    global().get(scheme)
}

/// Every registered scheme (lower-cased), sorted.
pub fn schemes() -> Vec<String> {
    global().names()
}

/// A channel's target read with the process-wide registry: `None` for the
/// empty target.
pub(crate) fn channel_target(text: &str) -> Result<Option<Target>, String> {
    parse_channel_target(text, |s| get(s).is_some())
}

/// Endpoints a resolver (or the host acting as one) may hand the channel:
/// none with an empty address.
pub(crate) fn check_endpoints(endpoints: &[Endpoint]) -> Result<(), Error> {
    if endpoints
        .iter()
        .any(|e| e.addresses.iter().any(|a| a.addr.is_empty()))
    {
        return Err(Error::InvalidArgument(
            "an endpoint has an empty address".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str);
    impl ResolverBuilder for Named {
        fn scheme(&self) -> &str {
            self.0
        }
        fn build(&self, _: &Target, _: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
            Err(self.0.to_string())
        }
    }

    #[test]
    fn builtins_registered_and_last_registration_wins() {
        for s in [
            "dns",
            "ipv4",
            "ipv6",
            "unix",
            "unix-abstract",
            "passthrough",
        ] {
            assert!(get(s).is_some(), "{s}");
        }
        assert!(get("DNS").is_some(), "any case");
        register(Arc::new(Named("Reg-Test")));
        register(Arc::new(Named("reg-test")));
        let built = get("REG-TEST").unwrap().build(
            &Target::parse("reg-test:x").unwrap(),
            ResolverClientConn::new(Arc::new(Refuse)),
        );
        assert_eq!(built.err().as_deref(), Some("reg-test"));
        assert_eq!(schemes().iter().filter(|s| *s == "reg-test").count(), 1);
        let t = channel_target("reg-test:///x").unwrap().unwrap();
        assert_eq!(t.scheme, "reg-test");
    }

    struct Refuse;
    impl ResolverSink for Refuse {
        fn update(&self, _: ResolverState) -> Result<(), Error> {
            Err(Error::Closed)
        }
        fn report_error(&self, _: String) -> Result<(), Error> {
            Err(Error::Closed)
        }
    }
}
