//! A channel: one target, one policy, its subchannels, and the published picker.
//!
//! `Channel` is the handle any thread holds; `ChannelCore` is its loop-side half,
//! touched only by the event loop. Every policy callback goes through
//! `ChannelCore::run_balancer`, one at a time, with subchannel transitions queued
//! and delivered after the callback that caused them returns.

mod core;
mod idle;
mod policy_cc;
mod publisher;
mod resolver_wrapper;
mod shared;

use self::core::{idle_picker, CoreGone};
pub(crate) use self::core::{ChannelCore, StartedCalls, CALL_TIMER, CALL_WAKE};
pub use self::idle::DEFAULT_IDLE_TIMEOUT;
use self::idle::{Idleness, MakeResolver};
use self::publisher::StatePublisher;
use self::resolver_wrapper::ResolverWrapper;
pub(crate) use self::shared::{ChannelId, ChannelShared, Table};
use crate::address::{Address, Endpoint};
use crate::backoff::BackoffConfig;
use crate::balancer::subconn::SubConnId;
use crate::balancer::SubConnState;
use crate::connectivity::ConnectivityState;
use crate::connector::managed::ManagedConnector;
use crate::connector::{Connector, TransportEvent};
use crate::error::Error;
use crate::publish::{Coalesce, Slot, Watched};
use crate::resolver;
use crate::runtime::{panic_message, JoinOnDrop, LoopContext, Runtime};
use crate::service_config::{MethodConfig, MethodConfigs, ServiceConfig};
use crate::snapshot::ChannelSnapshot;
use crate::subchannel::SubchannelPool;
use crate::trace;
use crate::transport::{Credentials, TransportConfig};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Called on the loop thread whenever the channel's state changes.
pub type StateCallback = Arc<dyn Fn(ConnectivityState) + Send + Sync>;

/// How a channel is built.
#[derive(Default)]
pub struct ChannelOptions {
    /// How subchannels connect. `None`: the library's own TCP / TLS / HTTP/2
    /// connections (`ManagedConnector`) configured by `transport`.
    pub connector: Option<Box<dyn Connector>>,
    /// For library-managed connections. `None` (like
    /// `TransportConfig::default()`) means TLS with the system's trusted roots,
    /// verifying the target's host name; plaintext HTTP/2 only when asked for
    /// by name (`TransportConfig::insecure()`).
    pub transport: Option<TransportConfig>,
    /// Backoff between a subchannel's connection attempts.
    pub backoff: BackoffConfig,
    /// The `:authority` of every call on the library's own connections, and
    /// the TLS server name unless `TlsSettings::server_name` is set
    /// (gRPC's `WithAuthority`). `None`: the target's default authority
    /// (`host:port` of `dns:///host:port`, "localhost" for unix sockets; for
    /// an empty target or a list of addresses, each connection's address).
    pub authority: Option<String>,
    /// What the resolver is asked to do: DNS service configs (TXT), the
    /// least time between re-resolutions.
    pub resolver: resolver::ResolverOptions,
    /// A channel starts IDLE (no resolution, no connection) and leaves it on
    /// its first pick or call, or `Channel::connect` (a channel whose host
    /// supplies the addresses, empty target, also when the host pushes them). With no pick and no
    /// call in flight for this long it goes back to IDLE: resolver and
    /// policy closed, every connection with them (the next pick brings them
    /// back, and waits for them). `None`: [`DEFAULT_IDLE_TIMEOUT`] (30
    /// minutes, gRPC's); zero: never goes back. The channel notices within a
    /// sixteenth of a timeout.
    pub idle_timeout: Option<Duration>,
    /// Called on the loop thread whenever the channel's aggregate state
    /// changes (keep it short: it runs on the event loop).
    pub on_state_change: Option<StateCallback>,
    /// Called on the loop thread when the policy or a subchannel asks for
    /// re-resolution and the host is the resolver (empty target; other
    /// targets' resolvers hear it through `Resolver::resolve_now`). Keep it
    /// short: it runs on the event loop.
    pub on_resolve_now: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Called on the loop thread for every subchannel transition, before the
    /// policy sees it (tracing, metrics, tests).
    pub on_subconn_state: Option<SubConnCallback>,
    /// A host-transport channel counts each pick and its outcome for
    /// [`Channel::snapshot`] (per reader, with no shared write; see
    /// [`crate::snapshot`]). `true` turns that off, for a host that wants
    /// the last nanosecond of a pick + done (its counts stay zero): about
    /// 1 ns a kept pick over a few endpoints, and over many endpoints picked
    /// at random a cache miss per pick (the counters are one more table).
    /// The channel then cannot see the host's RPCs in flight either: only
    /// picks keep it out of IDLE, so an RPC outliving `idle_timeout` with
    /// no pick meanwhile may see its connection closed (give such a host
    /// `idle_timeout` zero).
    pub skip_pick_counts: bool,
    /// Client-side health checking (gRFC A17) is off whatever the service
    /// config's `healthCheckConfig` says: subchannels are READY once
    /// connected (gRPC-Go's `WithDisableHealthCheck`, C-core's
    /// `grpc.inhibit_health_checking`).
    pub disable_health_check: bool,
    /// The library's calls are never retried or hedged by the service
    /// config's `retryPolicy` / `hedgingPolicy` (gRPC-Go's
    /// `WithDisableRetry`); transparent retries (gRFC A6: attempts that
    /// never reached the server's application) still happen.
    pub disable_retry: bool,
}

/// See `ChannelOptions::on_subconn_state`.
pub type SubConnCallback = Arc<dyn Fn(SubConnId, &SubConnState) + Send + Sync>;

/// A load-balanced channel. Dropping it closes it.
pub struct Channel {
    shared: Arc<ChannelShared>,
    /// What the call layer attached to finish with the channel (the started
    /// calls' completion dispatcher, from the first `unary_start` on).
    completions: OnceLock<Arc<dyn Completions>>,
}

impl Channel {
    /// Creates a channel on `rt`. `target` names its resolver by scheme
    /// (see [`crate::resolver`]; `host:port` is a DNS name), or is empty
    /// when the host supplies addresses (`update_addresses`);
    /// `service_config` is the default service config (JSON) or `None`
    /// (pick_first; empty text is `None` too, where gRPC-Go and C-core
    /// refuse it): a service config from the resolver replaces it. An
    /// invalid one does not fail the constructor: the channel is
    /// TRANSIENT_FAILURE from the start and its RPCs fail UNAVAILABLE with
    /// the parse error (as C-core's lame channel; gRPC-Go and grpc-java
    /// refuse to build it), until a valid config arrives from the resolver
    /// (where C-core stays lame) or `update_service_config`. The channel
    /// starts IDLE (TRANSIENT_FAILURE with an invalid config): its
    /// resolver is built when it is first used (see
    /// `ChannelOptions::idle_timeout`); the target is checked here
    /// (`ResolverBuilder::check`), its refusal is `Error::InvalidTarget`.
    pub fn new(
        rt: &Runtime,
        target: &str,
        service_config: Option<&str>,
        options: ChannelOptions,
    ) -> Result<Channel, Error> {
        trace::init();
        let mut parsed = resolver::channel_target(target).map_err(Error::InvalidTarget)?;
        // The library's own connections dial addresses, not names.
        if options.connector.is_none() {
            if let Some(by_name) = parsed.as_ref().and_then(resolver::passthrough_by_name) {
                parsed = Some(by_name);
            }
        }
        let builder = match &parsed {
            Some(t) => Some(resolver::get(&t.scheme).ok_or_else(|| {
                Error::InvalidTarget(format!("no resolver for scheme \"{}\"", t.scheme))
            })?),
            None => None,
        };
        if let (Some(t), Some(b)) = (&parsed, &builder) {
            catch_unwind(AssertUnwindSafe(|| b.check(t)))
                .unwrap_or_else(|p| {
                    Err(format!(
                        "the {} resolver panicked: {}",
                        t.scheme,
                        panic_message(&*p)
                    ))
                })
                .map_err(Error::InvalidTarget)?;
        }
        // Calls carry the target's host (or the one given) as `:authority`,
        // and TLS verifies that host unless told otherwise.
        if let Some(a) = &options.authority {
            if !resolver::valid_authority(a) {
                return Err(Error::InvalidArgument(format!(
                    "\"{a}\" is not a valid :authority (host[:port])"
                )));
            }
        }
        if let Some(t) = &options.transport {
            t.user_agent_header().map_err(Error::InvalidArgument)?;
        }
        // gRPC-Go's order: the authority given, else the TLS name given
        // (a server-name override names the server for HTTP/2 as well),
        // else the target's.
        let tls_name = match (&options.connector, &options.transport) {
            (None, Some(t)) => t
                .tls_settings()
                .map(|tls| tls.server_name.clone())
                .filter(|n| resolver::valid_authority(n)),
            _ => None,
        };
        let authority = options
            .authority
            .clone()
            .or(tls_name)
            .or_else(|| parsed.as_ref().and_then(resolver::default_authority));
        let tls_host = authority.as_deref().and_then(resolver::authority_host);
        // gRPC's rule for an invalid config (A21): the channel is made, and
        // stays TRANSIENT_FAILURE with the parse error until a valid config
        // comes (from the resolver, or `update_service_config`).
        let (config, config_error) = match ServiceConfig::parse(service_config) {
            Ok(c) => (c, None),
            Err(e) => (
                ServiceConfig::default_config(),
                Some(format!("invalid service config: {e}")),
            ),
        };
        let handle = rt.handle().clone();
        let id = handle.next_task_id();
        let ChannelOptions {
            connector,
            transport,
            backoff,
            authority: _,
            resolver: resolver_options,
            idle_timeout,
            on_state_change,
            on_resolve_now,
            on_subconn_state,
            skip_pick_counts,
            disable_health_check,
            disable_retry,
        } = options;
        let managed = connector.is_none();
        let count_picks = !managed && !skip_pick_counts;
        let connector = connector.unwrap_or_else(|| {
            let mut config = transport.unwrap_or_default();
            if let (Credentials::Tls(tls), Some(host)) = (&mut config.credentials, &tls_host) {
                if tls.server_name.is_empty() {
                    tls.server_name = host.clone();
                }
            }
            Box::new(ManagedConnector::new(config).with_authority(authority.clone()))
        });
        // IDLE until used: the first pick asks the loop to leave IDLE. With
        // an invalid config, TRANSIENT_FAILURE from the start (what the
        // loop publishes first: `ChannelCore::begin`), picks dropped with
        // the parse error, the first still asking the loop to leave IDLE.
        let idle = idle_picker(handle.clone(), id);
        let (picker, initial_state) = match &config_error {
            None => (idle, ConnectivityState::Idle),
            Some(e) => (
                idle.dropping(crate::status::Status::unavailable(e.clone())),
                ConnectivityState::TransientFailure,
            ),
        };
        let initial = Table::new(Box::new(picker), 0, false, initial_state);
        let call_stats: Arc<crate::snapshot::CallStats> = Default::default();
        let shared = Arc::new(ChannelShared {
            slot: crate::sync::Arc::new(Slot::new(initial)),
            state: Watched::new(initial_state as u8),
            closed: AtomicBool::new(false),
            core_gone: AtomicBool::new(false),
            handle: handle.clone(),
            id,
            // Readers' seeds start from entropy: the channel's address alone
            // repeats from run to run where addresses do (no ASLR).
            seeds: AtomicU64::new(crate::clock::Rng::from_entropy().next_u64()),
            rotation_starts: AtomicU64::new(crate::clock::Rng::from_entropy().next_u64()),
            managed,
            target: target.to_string(),
            authority,
            call_stats: call_stats.clone(),
            counter_slots: Default::default(),
            methods: Slot::new(config.methods.clone()),
            picked: AtomicBool::new(false),
            waiting: Default::default(),
            retry_disabled: disable_retry,
        });
        log::info!(
            target: trace::CHANNEL,
            "channel {id} created for {target:?}, policy {}",
            config.policy.name()
        );
        if let Some(e) = &config_error {
            log::warn!(target: trace::CHANNEL, "channel {id}: {e}");
        }
        let core_shared = shared.clone();
        let gone_shared = shared.clone();
        // The policy's work requests: one scheduler for the channel's life.
        let work_pending = Arc::new(Coalesce::new());
        let core_handle = handle.clone();
        let resolution = ResolverWrapper::new(on_resolve_now)
            .with_options(resolver_options)
            .with_backoff(backoff);
        let make_resolver = match (parsed, builder) {
            (Some(target), Some(builder)) => {
                let make: MakeResolver = Box::new(move |cc| builder.build(&target, cc));
                Some(make)
            }
            _ => None,
        };
        let idle = Idleness::new(
            Some(idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)),
            make_resolver,
        );
        let make = move || ChannelCore {
            subs: SubchannelPool::new(id, connector, backoff, count_picks.then_some(call_stats)),
            out: StatePublisher {
                shared: core_shared,
                seq: 0,
                // As the first table: its first publish of that state is no
                // change (a waiter would wake for nothing).
                state: initial_state,
                on_state: on_state_change,
                closed: false,
                cause: None,
            },
            default_config: config_error.is_none().then(|| config.clone()),
            config,
            config_error,
            balancer: None,
            endpoints: None,
            resolution,
            on_subconn_state,
            timers: HashMap::new(),
            next_timer: 1,
            resolve_requested: false,
            work_pending: work_pending.clone(),
            work: ChannelCore::work_scheduler(core_handle, id, work_pending),
            calls: None,
            idle,
            disable_health_check,
            _gone: CoreGone(gone_shared),
        };
        if !handle.add(id, Box::new(move || Box::new(make()))) {
            return Err(Error::RuntimeGone);
        }
        Ok(Channel {
            shared,
            completions: OnceLock::new(),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<ChannelShared> {
        &self.shared
    }

    /// What the call layer keeps for this channel, made with `make` (and
    /// joined when the runtime drops) on first use.
    pub(crate) fn completions<T: Completions + 'static>(
        &self,
        make: impl FnOnce() -> Arc<T>,
    ) -> Arc<T> {
        let any = self.completions.get_or_init(|| {
            let made = make();
            let joiner: Arc<dyn JoinOnDrop> = made.clone();
            // Dropping the runtime waits for the channel's completions too.
            self.shared.handle.join_on_drop(Arc::downgrade(&joiner));
            made
        });
        any.clone()
            .into_any()
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("one kind of completions per channel"))
    }

    fn run(
        &self,
        f: impl FnOnce(&mut ChannelCore, &mut LoopContext) + Send + 'static,
    ) -> Result<(), Error> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.shared.handle.run_on(self.shared.id, f) {
            Ok(())
        } else {
            Err(Error::RuntimeGone)
        }
    }

    /// Replaces the address list (the host acting as resolver). Applied
    /// incrementally by the policy.
    pub fn update_addresses(&self, addresses: Vec<Address>) -> Result<(), Error> {
        self.update_endpoints(addresses.into_iter().map(Endpoint::from).collect())
    }

    /// Replaces the endpoints (the host acting as resolver), each a list of
    /// addresses of one backend. An empty address is refused
    /// (`Error::InvalidArgument`), as from a resolver.
    pub fn update_endpoints(&self, endpoints: Vec<Endpoint>) -> Result<(), Error> {
        resolver::check_endpoints(&endpoints)?;
        self.run(move |core, env| core.update_endpoints(endpoints, env))
    }

    /// Switches to a new service config (the host acting as resolver); an
    /// invalid one is rejected with the error naming the JSON path that is
    /// wrong, and the current one kept. Returns once the loop has the
    /// config, before it applies it: calls made right after may still see
    /// the old one (`sync` waits until it applies).
    pub fn update_service_config(&self, json: &str) -> Result<(), Error> {
        let config = ServiceConfig::parse(Some(json)).map_err(Error::InvalidServiceConfig)?;
        self.run(move |core, env| {
            // The host's choice: also what a resolver update without a
            // config falls back to from now on.
            core.default_config = Some(config.clone());
            core.apply_config(config, env)
        })
    }

    /// The resolver failed (the host acting as resolver).
    pub fn report_resolver_error(&self, message: &str) -> Result<(), Error> {
        let message = message.to_string();
        self.run(move |core, env| core.resolver_error(&message, env))
    }

    /// External connector: the host reports what its transport for `sc` did.
    /// READY = connected; TRANSIENT_FAILURE = the attempt failed; IDLE = an
    /// established connection ended. CONNECTING is accepted and ignored.
    /// Not for channels whose connections are the library's own
    /// (`Error::InvalidArgument`): their transports report themselves.
    pub fn report_subconn_state(
        &self,
        sc: SubConnId,
        state: ConnectivityState,
        message: &str,
    ) -> Result<(), Error> {
        if self.shared.managed {
            return Err(Error::InvalidArgument(
                "this channel's connections are the library's own: their states come from \
                 their transports, not from reports"
                    .into(),
            ));
        }
        let event = match state {
            ConnectivityState::Ready => TransportEvent::Ready,
            ConnectivityState::TransientFailure => TransportEvent::Failed(message.to_string()),
            ConnectivityState::Idle => TransportEvent::Lost(message.to_string()),
            // Ignored, but a closed channel says so, as for every report.
            ConnectivityState::Connecting if self.is_closed() => return Err(Error::Closed),
            ConnectivityState::Connecting => return Ok(()),
            ConnectivityState::Shutdown => {
                return Err(Error::InvalidArgument(
                    "a host cannot report SHUTDOWN; the channel decides that".into(),
                ))
            }
        };
        self.run(move |core, env| core.transport_event(sc, event, env))
    }

    /// External connector: the host reports the health of subchannel `sc`'s
    /// backend (gRFC A17), as its own check finds it, apart from the
    /// transport's connectivity: `serving` makes a connected subchannel
    /// READY, not serving makes it TRANSIENT_FAILURE with `message` (the
    /// transport stays open). Counts only while the channel has asked the
    /// host to check that subchannel (`HostTransport::start_health`);
    /// reports before, after `stop_health`, or for subchannels that no longer
    /// exist are ignored. Not for channels whose connections are the
    /// library's own: their health comes from their own health streams.
    pub fn report_subconn_health(
        &self,
        sc: SubConnId,
        serving: bool,
        message: &str,
    ) -> Result<(), Error> {
        if self.shared.managed {
            return Err(Error::InvalidArgument(
                "this channel's connections are the library's own: their health comes from \
                 their grpc.health.v1 streams, not from reports"
                    .into(),
            ));
        }
        let event = if serving {
            TransportEvent::Healthy
        } else {
            TransportEvent::Unhealthy(message.to_string())
        };
        self.run(move |core, env| core.transport_event(sc, event, env))
    }

    /// Leaves IDLE (gRPC's `Connect`): a channel starts IDLE and goes back
    /// after its idle timeout; this resolves and connects it without a pick
    /// or call. On a channel in use, asks an IDLE policy to connect (its
    /// `exit_idle`; ring_hash, as gRPC's, connects only where picks land);
    /// that is not use of the channel, which goes IDLE one idle timeout
    /// after its last call all the same (gRPC-Go's `Connect`).
    /// Returns once the loop has done so (at once inside a callback on the
    /// loop): a channel that was IDLE says CONNECTING by then, as gRPC-Go's
    /// `Connect` leaves it.
    pub fn connect(&self) -> Result<(), Error> {
        self.request_connect()?;
        self.sync()
    }

    /// `connect` without waiting: the loop leaves IDLE when it gets to it
    /// (what gRPC's `GetState(true)` does, and `connect` inside callbacks,
    /// where waiting for the loop could wait on a lock the caller holds).
    pub fn request_connect(&self) -> Result<(), Error> {
        self.run(|core, env| core.exit_idle(env))
    }

    /// gRPC's ResetConnectBackoff: every subchannel's connection backoff
    /// starts over from its initial delay, and those waiting out a backoff
    /// after a failed attempt (TRANSIENT_FAILURE) go IDLE at once, so that
    /// their policy reconnects them now instead of after the backoff (for
    /// when the application knows the network is back); a re-resolution
    /// waiting out its pacing (after a rejected update) goes now too, as
    /// in C-core and grpc-java.
    pub fn reset_connect_backoff(&self) -> Result<(), Error> {
        self.run(|core, env| core.reset_connect_backoff(env))
    }

    /// The channel's aggregate connectivity state, as its policy last
    /// published it; SHUTDOWN from the moment `close` is called. Read from
    /// the table its picker came in: a pick from a picker sees that
    /// picker's state, and a state seen is picked from its own picker.
    pub fn state(&self) -> ConnectivityState {
        if self.is_closed() {
            return ConnectivityState::Shutdown;
        }
        self.shared.slot.load().state
    }

    /// gRPC's `GetState(try_to_connect)`: the state now and, if it is IDLE
    /// and `try_to_connect`, leaves IDLE as `connect` does (the idle timer
    /// starts again: only calls keep the channel from going back, as in
    /// gRPC-Go). SHUTDOWN after close. Never blocks.
    pub fn get_state(&self, try_to_connect: bool) -> ConnectivityState {
        let state = self.state();
        if try_to_connect && state == ConnectivityState::Idle {
            // Queued, not waited for: GetState never blocks (the loop may
            // be busy, or wait on a lock the caller holds). Closed in
            // between: nothing to connect (SHUTDOWN next time).
            let _ = self.request_connect();
        }
        state
    }

    /// The service config's settings for calls to `method`
    /// ("/pkg.Service/Method"): the most specific `methodConfig` entry that
    /// names it, or `None`. For RPC threads, `Reader::method_config` is
    /// the cheaper lookup (no atomic read-modify-write).
    pub fn method_config(&self, method: &str) -> Option<Arc<MethodConfig>> {
        self.shared.methods.load().lookup(method).cloned()
    }

    /// The service config's method table (and retry tokens) now.
    pub(crate) fn method_configs(&self) -> Arc<MethodConfigs> {
        Arc::clone(&self.shared.methods.load())
    }

    /// Blocks until the state differs from `from` or changes after this
    /// call (gRPC's WaitForStateChange: a change undone before the waiter
    /// wakes, READY -> TRANSIENT_FAILURE -> READY, counts), returning the
    /// state now (`from` again in that case; it may change again at once),
    /// or `None` when `deadline` passes first. On the loop thread (inside
    /// a callback) it does not wait: the state if it already differs, else
    /// `None`; nor from SHUTDOWN without a deadline once the channel is
    /// shut down (no state follows it: `None` at once, where gRPC's would
    /// wait for ever; with a deadline it waits for it, as gRPC-Go's).
    pub fn wait_for_state_change(
        &self,
        from: ConnectivityState,
        deadline: Option<Instant>,
    ) -> Option<ConnectivityState> {
        if from == ConnectivityState::Shutdown && deadline.is_none() && self.shared.state() == from
        {
            return None;
        }
        if self.shared.handle.on_loop_thread() {
            // Only the loop changes the state: waiting here (a state or
            // policy callback) would wait for ever, or till the deadline.
            let now = self.shared.state();
            return (now != from).then_some(now);
        }
        let seen =
            self.shared
                .state
                .wait_for_change(self.shared.slot.signal(), from as u8, deadline)?;
        Some(ConnectivityState::from_u8(seen).unwrap_or(ConnectivityState::Shutdown))
    }

    /// A consistent view of the channel and its subchannels with their call
    /// counters (see [`crate::snapshot`]), taken on the event loop. Not
    /// from the loop thread itself (a policy or state callback):
    /// `Error::InvalidArgument` there.
    pub fn snapshot(&self) -> Result<ChannelSnapshot, Error> {
        if self.shared.handle.on_loop_thread() {
            return Err(Error::InvalidArgument(
                "a snapshot cannot be taken on the event loop thread".into(),
            ));
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.run(move |core, _| {
            let _ = tx.send(core.snapshot());
        })?;
        rx.recv().map_err(|_| Error::RuntimeGone)
    }

    /// How many pickers were published so far.
    pub fn picker_generation(&self) -> u64 {
        self.shared.slot.generation()
    }

    /// Waits until the loop has processed everything sent to this channel
    /// so far, and the policy work that asked for (a weighted_round_robin
    /// defers its rebuild, and the state it publishes, to a run queued
    /// behind what was already sent).
    pub fn sync(&self) -> Result<(), Error> {
        if self.shared.handle.on_loop_thread() {
            return Ok(());
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.run(move |core, env| {
            core.run_pending_work(env);
            let _ = tx.send(());
        })?;
        rx.recv().map_err(|_| Error::RuntimeGone)
    }

    /// Closes the channel: shuts every subchannel down, wakes waiting picks with
    /// CLOSED, completes started calls (CANCELLED "the channel is closed") and
    /// waits until their completion closures have returned. Idempotent, and
    /// a caller racing another closer (a second `close`, the runtime
    /// dropping) waits as the first does; blocks until done unless called
    /// from the loop thread (or from a completion closure, which does not
    /// wait for the others).
    pub fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            self.await_close();
            return;
        }
        self.close_loop_side();
        if self.shared.handle.on_loop_thread() {
            // Closed from a callback on the loop, which gets to the close
            // command only after it: SHUTDOWN now (the loop is the table's
            // only writer, and this is the loop), and nothing published
            // after it (`StatePublisher::publish`).
            StatePublisher::closed_table(&self.shared);
        } else {
            // The loop has completed (or dropped) every call by now.
            if let Some(completions) = self.completions.get() {
                completions.close_and_join();
            }
        }
    }

    /// What a later `close` waits for, as the first does: the loop done
    /// with the channel (its core dropped: subchannels shut down, resolver
    /// closed, the SHUTDOWN callback told; bounded as the first closer's
    /// wait for it), then the completion closures (`close_and_join` waits
    /// for the thread another closer joins).
    fn await_close(&self) {
        if self.shared.handle.on_loop_thread() {
            return;
        }
        self.wait_core_gone();
        if let Some(completions) = self.completions.get() {
            completions.close_and_join();
        }
    }

    /// Waits (at most 30 s) until the loop has dropped the channel's core:
    /// closed (it is dropped right after its close command) or gone with
    /// the runtime.
    fn wait_core_gone(&self) {
        let _ = self.shared.slot.signal().wait_until(
            || self.shared.core_gone.load(Ordering::Acquire),
            Some(Instant::now() + Duration::from_secs(30)),
        );
    }

    fn close_loop_side(&self) {
        let sent = self
            .shared
            .handle
            .run_on(self.shared.id, |core: &mut ChannelCore, env| {
                crate::runtime::Task::close(core, env);
            });
        if !sent {
            // No loop left to do it: publish the closed table ourselves (the
            // loop, the only other writer, is gone).
            StatePublisher::closed_table(&self.shared);
            return;
        }
        if !self.shared.handle.on_loop_thread() {
            // Only the loop publishes while it runs: if it has not answered,
            // a publish from here could race its own. It closes the channel
            // when it gets to the command, or when it shuts down.
            self.wait_core_gone();
        }
    }

    /// Whether `close` was called (or the channel dropped).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

/// The call layer's per-channel state that must finish with the channel:
/// joined by `Channel::close` and when the runtime drops.
pub(crate) trait Completions: JoinOnDrop {
    /// For the call layer to get its own type back.
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.close();
    }
}
