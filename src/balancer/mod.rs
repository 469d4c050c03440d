//! The policy API, shaped like gRPC-Go's `balancer` package: a `Builder` makes a
//! `Balancer`; the balancer talks to the channel through a `ClientConn`; it
//! publishes `Picker`s. Every `Balancer` method runs on the channel's event-loop
//! thread, one at a time, and may call back into the `ClientConn` freely.

pub mod child_manager;
pub mod done;
pub mod graceful_switch;
pub(crate) mod hash_ring;
pub use hash_ring::RingTable;
// The in-flight counting protocol, public only for its loom model; not
// part of the API.
#[doc(hidden)]
pub mod in_flight;
pub(crate) mod json;
pub(crate) mod keep;
pub(crate) mod least_loaded;
pub use least_loaded::LeastLoadedTable;
pub mod pick_local;
pub mod picker;
pub(crate) mod ready_list;
pub use ready_list::UniformTable;
pub mod registry;
pub mod rotation;
pub mod stride;
pub mod subconn;
pub mod testing;

use crate::address::{Address, Endpoint};
use crate::balancer::picker::Picker;
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::clock::Clock;
use crate::connectivity::ConnectivityState;
use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A policy's parsed configuration (downcast by the policy that parsed it).
pub type LbConfig = Arc<dyn Any + Send + Sync>;

/// Builds balancers of one policy. Registered by name in the `registry`.
pub trait Builder: Send + Sync {
    /// The policy's name as it appears in `loadBalancingConfig`.
    fn name(&self) -> &str;

    /// A new balancer for one channel. Called on the loop thread.
    fn build(&self) -> Box<dyn Balancer>;

    /// Parses this policy's entry of `loadBalancingConfig`. Unknown fields are
    /// ignored (forward compatibility); invalid known ones are an error.
    fn parse_config(&self, _config: &serde_json::Value) -> Result<Option<LbConfig>, String> {
        Ok(None)
    }

    /// Whether the channel health-checks the subchannels of this policy
    /// (with `config`, what `parse_config` made) when the service config
    /// has `healthCheckConfig` (gRFC A17). A policy opts in, as gRPC's do:
    /// those that balance over endpoints with a pick_first each
    /// (round_robin and the like, A61) say yes; pick_first itself, at the
    /// top, never health-checks; a parent asks its child. Default: no.
    fn health_checks(&self, _config: Option<&LbConfig>) -> bool {
        false
    }
}

/// The resolver's output as a policy receives it.
#[derive(Clone, Default)]
pub struct ClientConnState {
    /// The resolved endpoints, in resolver order.
    pub endpoints: Vec<Endpoint>,
    /// Every endpoint's addresses, flattened in order (what pick_first
    /// tries; kept in step with `endpoints` by `ClientConnState::new`).
    pub addresses: Vec<Address>,
    /// This policy's parsed config (`Builder::parse_config`), if it has one.
    pub config: Option<LbConfig>,
}

impl ClientConnState {
    /// This policy's parsed config as the type its builder parsed it into
    /// (`None`: no config, or another type).
    pub fn config_as<T: 'static>(&self) -> Option<&T> {
        self.config.as_ref()?.downcast_ref::<T>()
    }

    /// The state for `endpoints` and `config`, with `addresses` filled in.
    pub fn new(endpoints: Vec<Endpoint>, config: Option<LbConfig>) -> ClientConnState {
        let addresses = endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        ClientConnState {
            endpoints,
            addresses,
            config,
        }
    }

    /// One endpoint per address.
    pub fn from_addresses(addresses: Vec<Address>, config: Option<LbConfig>) -> ClientConnState {
        ClientConnState::new(addresses.into_iter().map(Endpoint::from).collect(), config)
    }
}

impl std::fmt::Debug for ClientConnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnState")
            .field("endpoints", &self.endpoints)
            .field("config", &self.config.is_some())
            .finish()
    }
}

/// A subchannel's state as delivered to its policy. `error` is set in
/// TRANSIENT_FAILURE (and on the IDLE that follows a lost connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubConnState {
    /// The subchannel's new state.
    pub state: ConnectivityState,
    /// Why it failed (TRANSIENT_FAILURE, or IDLE after a lost connection).
    pub error: Option<Arc<str>>,
}

/// A token for a timer a policy armed (see `ClientConn::schedule_timer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerToken(pub u64);

/// A load-balancing policy instance. Callbacks are serialized on the loop thread.
pub trait Balancer {
    /// New addresses and/or config. `Err` means "bad resolver state": the channel
    /// asks the resolver to re-resolve.
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String>;

    /// The resolver failed; keep using the last good addresses if there are any.
    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str);

    /// A subchannel this balancer created changed state. SHUTDOWN is delivered
    /// exactly once, after `shutdown_subconn`. CONNECTING may come twice in
    /// a row: again when the connection is made while its health check has
    /// yet to answer (`SubConn::is_connected`; pick_first ends its pass on
    /// it); a policy that has no use for it ignores the repeat.
    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    );

    /// Leave IDLE: reconnect if appropriate.
    fn exit_idle(&mut self, cc: &mut dyn ClientConn);

    /// Work a picker asked for through `ClientConn::work_scheduler`. The
    /// default leaves IDLE (`exit_idle`), which is what pickers ask for.
    fn work(&mut self, cc: &mut dyn ClientConn) {
        self.exit_idle(cc);
    }

    /// A timer this balancer armed fired.
    fn timer(&mut self, _cc: &mut dyn ClientConn, _token: TimerToken) {}

    /// The balancer is being replaced or the channel closed. The channel shuts
    /// down whatever subchannels the balancer leaves behind.
    fn close(&mut self, cc: &mut dyn ClientConn);
}

/// The channel as a balancer sees it. Only usable inside balancer callbacks.
pub trait ClientConn {
    /// A new subchannel, IDLE, doing nothing until `connect`.
    fn new_subconn(&mut self, address: Address) -> Result<Arc<SubConn>, String>;

    /// Start connecting; a no-op unless the subchannel is IDLE.
    fn connect(&mut self, sc: SubConnId);

    /// Shut the subchannel down. Its final SHUTDOWN state is delivered once.
    fn shutdown_subconn(&mut self, sc: SubConnId);

    /// Publish a new picker and the balancer's aggregate state.
    fn update_state(&mut self, state: ConnectivityState, picker: Box<dyn Picker>);

    /// Ask the resolver to resolve again.
    fn resolve_now(&mut self);

    /// The channel's target as given to `Channel::new` (gRPC-Go's
    /// `ClientConn.Target()`, `BuildOptions.Target`): empty for a channel
    /// whose host supplies the addresses, and outside a channel.
    fn target(&self) -> &str {
        ""
    }

    /// The `:authority` the channel's calls carry (gRPC-Go's
    /// `BuildOptions.Authority`): the one given, else the TLS server name
    /// given, else the target's; `None` when there is none (each address
    /// is its own, as for an `ipv4:` list of several).
    fn authority(&self) -> Option<&str> {
        None
    }

    /// Arm a one-shot timer; `Balancer::timer` receives its token.
    fn schedule_timer(&mut self, after: Duration) -> TimerToken;

    /// Disarm a timer armed with `schedule_timer`; unknown or fired tokens are ignored.
    fn cancel_timer(&mut self, token: TimerToken);

    /// The loop's clock.
    fn now(&self) -> Instant;

    /// The loop's clock itself, for what a policy hands to other threads
    /// (a done hook stamping the load reports it takes, as gRPC's
    /// weighted_round_robin does): the same time `now` gives.
    fn clock(&self) -> Arc<dyn Clock>;

    /// The loop's random source.
    fn random(&mut self) -> u64;

    /// A handle this policy's pickers (any thread) use to have
    /// `Balancer::work` called on this policy, on the loop, soon.
    fn work_scheduler(&self) -> WorkScheduler;

    /// Asks for `sc`'s out-of-band load reports (gRFC A51; gRPC-Go's
    /// `orca.RegisterOOBListener`): while the subchannel is connected
    /// (READY as its transport goes, whatever health checking says), the
    /// channel keeps an ORCA `StreamCoreMetrics` stream open on its
    /// connection asking for a report every `period`, and hands each
    /// report to `listener`. With several listeners on one subchannel the
    /// smallest period wins. The stream needs the library's own
    /// connections: on a channel whose host owns the transports nothing is
    /// ever reported (the host feeds load through `done`). Registration
    /// outlives state changes; it ends with `unregister_oob_listener` or
    /// the subchannel's shutdown.
    fn register_oob_listener(
        &mut self,
        sc: SubConnId,
        period: Duration,
        listener: Arc<dyn LoadReportListener>,
    ) -> OobListenerId;

    /// Ends a registration; the stream closes with the last one. Unknown
    /// ids (already ended, or their subchannel gone) are ignored.
    fn unregister_oob_listener(&mut self, id: OobListenerId);
}

/// Receives a subchannel's out-of-band load reports (gRPC's
/// `orca.OOBListener`). Called on the loop thread, once per report, with
/// the report's named metrics (the names `DoneInfo::load` uses: see
/// `crate::transport`'s ORCA module): keep it short and non-blocking.
pub trait LoadReportListener: Send + Sync {
    /// One report arrived.
    fn on_load_report(&self, load: &[(&str, f64)]);
}

/// One `ClientConn::register_oob_listener` registration, unique within
/// its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OobListenerId(pub u64);

/// Asks the loop to call one policy's `Balancer::work` (gRPC's
/// `WorkScheduler`): how a picker, which may not touch policy state, gets
/// its policy to connect. Cheap to clone; usable from any thread; never
/// blocks. Requests made before the loop gets to them coalesce into one call.
#[derive(Clone)]
pub struct WorkScheduler(Arc<dyn Fn() + Send + Sync>);

impl WorkScheduler {
    /// A scheduler that runs `schedule` on every request. A `ClientConn`
    /// makes one for its policy; a parent makes one per child that forwards
    /// to its own.
    pub fn new(schedule: impl Fn() + Send + Sync + 'static) -> WorkScheduler {
        WorkScheduler(Arc::new(schedule))
    }

    /// Requests a `Balancer::work` call.
    pub fn schedule_work(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for WorkScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkScheduler")
    }
}

impl SubConnState {
    pub(crate) fn is(&self, s: ConnectivityState) -> bool {
        self.state == s
    }
}
