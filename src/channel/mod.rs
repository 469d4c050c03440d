//! A channel: one target, one policy, its subchannels, and the published picker.
//!
//! `Channel` is the handle any thread holds; `ChannelCore` is its loop-side half,
//! touched only by the event loop. Every policy callback goes through
//! `ChannelCore::run_balancer`, one at a time, with subchannel transitions queued
//! and delivered after the callback that caused them returns.

use crate::backoff::BackoffConfig;
use crate::balancer::{Balancer, ClientConn, ClientConnState, SubConnState, TimerToken};
use crate::call::{Calls, Dispatch, NewCall};
use crate::connector::{Connector, TransportEvent};
use crate::error::Error;
use crate::connector::managed::ManagedConnector;
use crate::balancer::picker::{FailPicker, Picker, QueuePicker};
use crate::publish::Slot;
use crate::reader::Reader;
use crate::resolver::{self, Resolver};
use crate::resolver::{Lookups, Next};
use crate::runtime::{panic_message, ChannelId, Command, Env, LoopHandle, Runtime, TimerKind};
use crate::service_config::ServiceConfig;
use crate::snapshot::ChannelSnapshot;
use crate::connectivity::ConnectivityState;
use crate::subchannel::Subchannels;
use crate::address::Address;
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::trace;
use crate::transport::{Credentials, TransportConfig};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What readers pick from: one published picker generation.
pub(crate) struct Table {
    pub(crate) picker: Box<dyn Picker>,
    /// Increases with every publish; identifies a generation without its address.
    pub(crate) seq: u64,
    pub(crate) closed: bool,
}

impl Table {
    pub(crate) fn new(picker: Box<dyn Picker>, seq: u64, closed: bool) -> Table {
        Table {
            picker,
            seq,
            closed,
        }
    }
}

/// The half of a channel every thread can see.
pub(crate) struct ChannelShared {
    pub(crate) slot: crate::sync::Arc<Slot<Table>>,
    state: AtomicU8,
    closed: AtomicBool,
    pub(crate) handle: LoopHandle,
    pub(crate) id: ChannelId,
    seeds: AtomicU64,
    /// Connections are the library's own (RPCs can be sent through it).
    pub(crate) managed: bool,
    /// As given to `Channel::new` (snapshots and logs).
    pub(crate) target: String,
    /// The readers' call counters (snapshots).
    pub(crate) call_stats: Arc<crate::snapshot::CallStats>,
}

impl ChannelShared {
    pub(crate) fn state(&self) -> ConnectivityState {
        ConnectivityState::from_u8(self.state.load(Ordering::Acquire))
            .unwrap_or(ConnectivityState::Shutdown)
    }

    /// A distinct seed for each reader's rotation and random source.
    pub(crate) fn reader_seed(&self) -> u64 {
        let n = self
            .seeds
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        crate::clock::Rng::new(n ^ (self as *const _ as u64)).next_u64()
    }
}

/// Called on the loop thread whenever the channel's state changes.
pub type StateCallback = Arc<dyn Fn(ConnectivityState) + Send + Sync>;

/// How a channel is built.
#[derive(Default)]
pub struct ChannelOptions {
    /// How subchannels connect. `None`: the library's own TCP / TLS / HTTP/2
    /// connections (`ManagedConnector`) configured by `transport`.
    pub connector: Option<Box<dyn Connector>>,
    /// For library-managed connections. `None` (like
    /// `TransportConfig::default()`) means TLS with the bundled Mozilla roots,
    /// verifying the target's host name; plaintext HTTP/2 only when asked for
    /// by name (`TransportConfig::insecure()`).
    pub transport: Option<TransportConfig>,
    /// Backoff between a subchannel's connection attempts.
    pub backoff: BackoffConfig,
    /// Called on the loop thread whenever the channel's aggregate state
    /// changes (keep it short: it runs on the event loop).
    pub on_state_change: Option<StateCallback>,
    /// Called on the loop thread when the policy or a subchannel asks for
    /// re-resolution and the host is the resolver (empty target).
    pub on_resolve_now: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Called on the loop thread for every subchannel transition, before the
    /// policy sees it (tracing, metrics, tests).
    pub on_subconn_state: Option<SubConnCallback>,
}

/// See `ChannelOptions::on_subconn_state`.
pub type SubConnCallback = Arc<dyn Fn(SubConnId, &SubConnState) + Send + Sync>;

/// A load-balanced channel. Dropping it closes it.
pub struct Channel {
    shared: Arc<ChannelShared>,
    /// Started calls' completions (`Channel::unary_start`).
    dispatch: Arc<Dispatch>,
}

impl Channel {
    /// Creates a channel on `rt`. `target` may be empty when the host supplies
    /// addresses (`update_addresses`); `service_config` is JSON or `None`.
    pub fn new(
        rt: &Runtime,
        target: &str,
        service_config: Option<&str>,
        options: ChannelOptions,
    ) -> Result<Channel, Error> {
        trace::init();
        let resolver = resolver::parse_target(target).map_err(Error::InvalidTarget)?;
        let config = ServiceConfig::parse(service_config).map_err(Error::InvalidServiceConfig)?;
        let handle = rt.handle().clone();
        let id = handle.next_channel_id();
        let ChannelOptions {
            connector,
            transport,
            backoff,
            on_state_change,
            on_resolve_now,
            on_subconn_state,
        } = options;
        let managed = connector.is_none();
        let connector = connector.unwrap_or_else(|| {
            let mut config = transport.unwrap_or_default();
            if let (Credentials::Tls(tls), Resolver::Dns { host, .. }) =
                (&mut config.credentials, &resolver)
            {
                if tls.server_name.is_empty() {
                    tls.server_name = host.clone();
                }
            }
            Box::new(ManagedConnector::new(config).with_health_backoff(backoff))
        });
        let initial = Table::new(Box::new(QueuePicker), 0, false);
        let shared = Arc::new(ChannelShared {
            slot: crate::sync::Arc::new(Slot::new(initial)),
            state: AtomicU8::new(ConnectivityState::Idle as u8),
            closed: AtomicBool::new(false),
            handle: handle.clone(),
            id,
            seeds: AtomicU64::new(0),
            managed,
            target: target.to_string(),
            call_stats: Default::default(),
        });
        log::info!(
            target: trace::CHANNEL,
            "channel {id} created for {target:?}, policy {}",
            config.policy.name()
        );
        let core_shared = shared.clone();
        let make = move || ChannelCore {
            subs: Subchannels::new(id, connector, backoff),
            out: Outbox {
                shared: core_shared,
                seq: 0,
                state: ConnectivityState::Idle,
                on_state: on_state_change,
                closed: false,
                cause: None,
            },
            config,
            balancer: None,
            addresses: None,
            resolver,
            on_resolve_now,
            on_subconn_state,
            lookups: Lookups::new(backoff),
            timers: HashMap::new(),
            next_timer: 1,
            resolve_requested: false,
            calls: Calls::default(),
        };
        if !handle.send(Command::AddChannel(id, Box::new(make))) {
            return Err(Error::RuntimeGone);
        }
        let dispatch = Arc::new(Dispatch::new());
        // Dropping the runtime waits for the channel's completions too.
        handle.register_dispatch(&dispatch);
        Ok(Channel { shared, dispatch })
    }

    pub(crate) fn shared(&self) -> &Arc<ChannelShared> {
        &self.shared
    }

    pub(crate) fn dispatch(&self) -> &Arc<Dispatch> {
        &self.dispatch
    }

    fn run(
        &self,
        f: impl FnOnce(&mut ChannelCore, &mut Env) + Send + 'static,
    ) -> Result<(), Error> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.shared.handle.run(self.shared.id, f) {
            Ok(())
        } else {
            Err(Error::RuntimeGone)
        }
    }

    /// Replaces the address list (the host acting as resolver). Applied
    /// incrementally by the policy.
    pub fn update_addresses(&self, addresses: Vec<Address>) -> Result<(), Error> {
        self.run(move |core, env| core.update_addresses(addresses, env))
    }

    /// Switches to a new service config; an invalid one is rejected and the
    /// current one kept.
    pub fn update_service_config(&self, json: &str) -> Result<(), Error> {
        let config = ServiceConfig::parse(Some(json)).map_err(Error::InvalidServiceConfig)?;
        self.run(move |core, env| core.apply_config(config, env))
    }

    /// The resolver failed (the host acting as resolver).
    pub fn report_resolver_error(&self, message: &str) -> Result<(), Error> {
        let message = message.to_string();
        self.run(move |core, env| core.resolver_error(&message, env))
    }

    /// External connector: the host reports what its transport for `sc` did.
    /// READY = connected; TRANSIENT_FAILURE = the attempt failed; IDLE = an
    /// established connection ended. CONNECTING is accepted and ignored.
    pub fn report_subconn_state(
        &self,
        sc: SubConnId,
        state: ConnectivityState,
        message: &str,
    ) -> Result<(), Error> {
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

    /// Asks an IDLE policy to connect.
    pub fn connect(&self) -> Result<(), Error> {
        self.run(|core, env| core.exit_idle(env))
    }

    /// The channel's aggregate connectivity state, as its policy last
    /// published it.
    pub fn state(&self) -> ConnectivityState {
        self.shared.state()
    }

    /// Blocks until the state differs from `from`, returning the state seen
    /// (it may change again at once), or `None` when `deadline` passes first.
    pub fn wait_for_state_change(
        &self,
        from: ConnectivityState,
        deadline: Option<Instant>,
    ) -> Option<ConnectivityState> {
        let mut seen = from;
        let changed = self.shared.slot.signal().wait_until(
            || {
                seen = self.shared.state();
                seen != from
            },
            deadline,
        );
        changed.then_some(seen)
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

    /// A reader for one RPC thread.
    pub fn reader(&self) -> Reader {
        Reader::new(self.shared.clone())
    }

    /// Waits until the loop has processed everything sent to this channel so far.
    pub fn sync(&self) -> Result<(), Error> {
        if self.shared.handle.on_loop_thread() {
            return Ok(());
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.run(move |_, _| {
            let _ = tx.send(());
        })?;
        rx.recv().map_err(|_| Error::RuntimeGone)
    }

    /// Closes the channel: shuts every subchannel down, wakes waiting picks with
    /// CLOSED, completes started calls (CANCELLED "the channel is closed") and
    /// waits until their completion closures have returned. Idempotent;
    /// blocks until done unless called from the loop thread (or from a
    /// completion closure, which does not wait for the others).
    pub fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.close_loop_side();
        if !self.shared.handle.on_loop_thread() {
            // The loop has completed (or dropped) every call by now.
            self.dispatch.close_and_join();
        }
    }

    fn close_loop_side(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sent = self.shared.handle.run(self.shared.id, move |core, env| {
            core.close(env);
            let _ = tx.send(());
        });
        if !sent {
            // No loop left to do it: publish the closed table ourselves (the
            // loop, the only other writer, is gone).
            Outbox::closed_table(&self.shared);
            return;
        }
        if !self.shared.handle.on_loop_thread() {
            // Only the loop publishes while it runs: if it has not answered,
            // a publish from here could race its own. It closes the channel
            // when it gets to the command, or when it shuts down.
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Whether `close` was called (or the channel dropped).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.close();
    }
}

/// Lets a picker ask the loop to take its policy out of IDLE (from any thread).
#[derive(Clone)]
pub struct IdleTrigger {
    handle: LoopHandle,
    channel: ChannelId,
}

impl IdleTrigger {
    /// Asks the loop to call the policy's `Balancer::exit_idle`. Any thread;
    /// never blocks.
    pub fn exit_idle(&self) {
        self.handle
            .run(self.channel, |core, env| core.exit_idle(env));
    }
}

/// Publishes pickers and states for one channel (loop side).
struct Outbox {
    shared: Arc<ChannelShared>,
    seq: u64,
    state: ConnectivityState,
    on_state: Option<StateCallback>,
    closed: bool,
    /// Why the channel may be changing state now (the subchannel error or
    /// resolver error being handled), for the log line.
    cause: Option<String>,
}

impl Outbox {
    /// Swaps in a new picker (waking every queued pick) and records the state;
    /// observers hear only of real changes.
    fn publish(&mut self, state: ConnectivityState, picker: Box<dyn Picker>) {
        if self.closed {
            return;
        }
        self.seq += 1;
        let changed = state != self.state;
        if changed {
            let cause = match (&self.cause, state) {
                (Some(c), ConnectivityState::TransientFailure) => format!(" ({c})"),
                _ => String::new(),
            };
            log::info!(
                target: trace::CHANNEL,
                "channel {} {:?}: {} -> {}{}",
                self.shared.id,
                self.shared.target,
                self.state,
                state,
                cause
            );
            self.state = state;
            self.shared.state.store(state as u8, Ordering::Release);
        }
        self.shared
            .slot
            .publish(Table::new(picker, self.seq, false));
        if changed {
            if let Some(cb) = &self.on_state {
                cb(state);
            }
        }
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        log::info!(
            target: trace::CHANNEL,
            "channel {} {:?}: {} -> SHUTDOWN (closed)",
            self.shared.id,
            self.shared.target,
            self.state
        );
        self.state = ConnectivityState::Shutdown;
        Self::closed_table(&self.shared);
        if let Some(cb) = &self.on_state {
            cb(ConnectivityState::Shutdown);
        }
    }

    fn closed_table(shared: &ChannelShared) {
        shared
            .state
            .store(ConnectivityState::Shutdown as u8, Ordering::Release);
        shared
            .slot
            .publish(Table::new(Box::new(QueuePicker), u64::MAX, true));
    }
}

/// The loop-side half of a channel.
pub(crate) struct ChannelCore {
    subs: Subchannels,
    out: Outbox,
    config: ServiceConfig,
    balancer: Option<Box<dyn Balancer>>,
    addresses: Option<Vec<Address>>,
    resolver: Resolver,
    on_resolve_now: Option<Arc<dyn Fn() + Send + Sync>>,
    on_subconn_state: Option<SubConnCallback>,
    /// When the DNS resolver looks up next (unused for other resolvers).
    lookups: Lookups,
    timers: HashMap<TimerToken, u64>,
    next_timer: u64,
    resolve_requested: bool,
    /// Started calls (`Channel::unary_start`).
    calls: Calls,
}

impl ChannelCore {
    fn id(&self) -> ChannelId {
        self.out.shared.id
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.out.closed
    }

    fn snapshot(&self) -> ChannelSnapshot {
        let subs = self.subs.snapshot();
        let live = subs.iter().map(|s| s.id).collect();
        let counts = self.out.shared.call_stats.sum(&live);
        ChannelSnapshot {
            target: self.out.shared.target.clone(),
            policy: self.config.policy.name().to_string(),
            state: self.out.state,
            subchannels: subs
                .into_iter()
                .map(|s| {
                    let c = counts.get(&s.id);
                    crate::snapshot::with_counts(s, c)
                })
                .collect(),
        }
    }

    /// A started call arrives.
    pub(crate) fn start_call(&mut self, call: NewCall, env: &mut Env) {
        self.calls.start(call, &self.out.shared, env);
    }

    /// A started call's stream woke it.
    pub(crate) fn poll_call(&mut self, id: u64, env: &mut Env) {
        self.calls.wake(id, &self.out.shared, env);
    }

    pub(crate) fn cancel_call(&mut self, id: u64, env: &mut Env) {
        self.calls.cancel(id, env);
    }

    /// After every command, event or timer the loop ran on this channel:
    /// queued started calls pick from a newly published picker.
    pub(crate) fn after_run(&mut self, env: &mut Env) {
        self.calls.after_run(&self.out.shared, env);
    }

    /// First steps of a new channel (run guarded, like every callback: they
    /// reach the connector and the policy's builder).
    pub(crate) fn start(&mut self, env: &mut Env) {
        self.configure_health(env);
        match self.resolver.clone() {
            Resolver::Manual => {}
            Resolver::Static(list) => {
                self.update_addresses(list.into_iter().map(Address::new).collect(), env)
            }
            Resolver::Dns { .. } => self.resolve(env),
        }
    }

    /// Asks the resolver to look again: the host (empty target) through its
    /// callback; DNS off the loop, paced by `Lookups`.
    fn resolve(&mut self, env: &mut Env) {
        match &self.resolver {
            Resolver::Manual => {
                if let Some(cb) = &self.on_resolve_now {
                    cb();
                }
            }
            Resolver::Static(_) => {}
            Resolver::Dns { .. } => match self.lookups.request(env.clock.now()) {
                Next::Now => self.lookup(env),
                Next::At(at) => {
                    env.timers.schedule(at, self.id(), TimerKind::Resolve);
                }
                Next::Nothing => {}
            },
        }
    }

    /// Starts a DNS lookup on a helper thread; its result comes back as a
    /// command, and a failure schedules the next try.
    fn lookup(&mut self, env: &mut Env) {
        let Resolver::Dns { host, port } = self.resolver.clone() else {
            return;
        };
        let rng = &mut env.rng;
        self.lookups.started(env.clock.now(), &mut || rng.uniform());
        let handle = env.handle.clone();
        let id = self.id();
        let spawned = std::thread::Builder::new()
            .name("switchyard-dns".into())
            .spawn(move || {
                let result = resolver::lookup(&host, port);
                match &result {
                    Ok(addrs) => log::info!(
                        target: trace::RESOLVER,
                        "channel {id}: dns:{host}:{port} resolved to {} address(es): {}",
                        addrs.len(),
                        addrs.iter().map(|a| a.addr.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    Err(e) => log::warn!(
                        target: trace::RESOLVER,
                        "channel {id}: resolving dns:{host}:{port} failed: {e}"
                    ),
                }
                handle.run(id, move |core, env| {
                    let retry = core.lookups.finished(result.is_ok(), env.clock.now());
                    if let Some(at) = retry {
                        env.timers.schedule(at, core.id(), TimerKind::Resolve);
                    }
                    match result {
                        Ok(addrs) => core.update_addresses(addrs, env),
                        Err(e) => core.resolver_error(&e, env),
                    }
                });
            });
        if spawned.is_err() {
            let at = self.lookups.not_started(env.clock.now());
            env.timers.schedule(at, id, TimerKind::Resolve);
        }
    }

    pub(crate) fn update_addresses(&mut self, addresses: Vec<Address>, env: &mut Env) {
        if self.is_finished() {
            return;
        }
        log::debug!(
            target: trace::RESOLVER,
            "channel {}: {} address(es) to the policy: {}",
            self.id(),
            addresses.len(),
            addresses.iter().map(|a| a.addr.as_str()).collect::<Vec<_>>().join(", ")
        );
        self.addresses = Some(addresses.clone());
        self.ensure_balancer();
        let config = self.config.policy_config.clone();
        let mut result = Ok(());
        self.run_balancer(env, |b, cc| {
            result = b.update_client_conn_state(cc, ClientConnState { addresses, config })
        });
        if result.is_err() {
            self.resolve_requested = true;
        }
        self.drain(env);
    }

    pub(crate) fn resolver_error(&mut self, error: &str, env: &mut Env) {
        if self.is_finished() {
            return;
        }
        log::warn!(target: trace::RESOLVER, "channel {}: resolver error: {error}", self.id());
        self.out.cause = Some(format!("name resolver error: {error}"));
        if self.balancer.is_none() && self.addresses.is_none() {
            // No policy yet: fail fast with the resolver's own error.
            self.out.publish(
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(format!(
                    "name resolver error: {error}"
                ))),
            );
            self.out.cause = None;
            return;
        }
        self.run_balancer(env, |b, cc| b.resolver_error(cc, error));
        self.out.cause = None;
        self.drain(env);
    }

    pub(crate) fn apply_config(&mut self, config: ServiceConfig, env: &mut Env) {
        if self.is_finished() {
            return;
        }
        let same_policy = self
            .balancer
            .as_ref()
            .map(|_| {
                self.config
                    .policy
                    .name()
                    .eq_ignore_ascii_case(config.policy.name())
            })
            .unwrap_or(false);
        let (old, new) = (self.config.policy.name().to_string(), config.policy.name());
        if same_policy {
            log::info!(target: trace::CHANNEL, "channel {}: new service config, policy {new}", self.id());
        } else {
            log::info!(
                target: trace::CHANNEL,
                "channel {}: policy switch {old} -> {new}",
                self.id()
            );
        }
        self.config = config;
        if !same_policy {
            self.close_balancer(env);
        }
        self.configure_health(env);
        match self.addresses.clone() {
            Some(addresses) => self.update_addresses(addresses, env),
            None => self.drain(env),
        }
    }

    /// Client-side health checking (gRFC A17) is on when the service config
    /// has `healthCheckConfig`, except under a top-level pick_first, which
    /// never health-checks (A17; A61 only enables it for pick_first as a
    /// child, e.g. under round_robin).
    fn configure_health(&mut self, env: &mut Env) {
        let service = if self.config.policy.name().eq_ignore_ascii_case("pick_first") {
            None
        } else {
            self.config.health_check_service.as_deref()
        };
        self.subs.configure_health(service, env);
    }

    pub(crate) fn exit_idle(&mut self, env: &mut Env) {
        self.run_balancer(env, |b, cc| b.exit_idle(cc));
        self.drain(env);
    }

    pub(crate) fn transport_event(&mut self, sc: SubConnId, event: TransportEvent, env: &mut Env) {
        self.subs.transport_event(sc, event, env);
        self.drain(env);
    }

    pub(crate) fn io_event(&mut self, key: u64, event: &mio::event::Event, env: &mut Env) {
        self.subs.io_event(key, event, env);
        self.drain(env);
    }

    pub(crate) fn notified(&mut self, key: u64, env: &mut Env) {
        self.subs.notified(key, env);
        self.drain(env);
    }

    pub(crate) fn timer(&mut self, kind: TimerKind, env: &mut Env) {
        match kind {
            TimerKind::Balancer(token) => {
                if self.timers.remove(&token).is_some() {
                    self.run_balancer(env, |b, cc| b.timer(cc, token));
                }
            }
            TimerKind::Resolve => {
                self.lookups.due();
                self.lookup(env);
            }
            TimerKind::Call(id) => self.calls.expire(id, env),
            other => self.subs.timer(other, env),
        }
        self.drain(env);
    }

    pub(crate) fn close(&mut self, env: &mut Env) {
        if self.is_finished() {
            return;
        }
        // First, while their connections are still up to reset the streams.
        self.calls.close(env);
        self.close_balancer(env);
        self.out.close();
    }

    /// Something inside the channel panicked: it can't be trusted to manage
    /// connections any more. Fail picks with the message until the next
    /// address update or config builds a new policy.
    pub(crate) fn fail(&mut self, message: String, env: &mut Env) {
        if let Some(b) = self.balancer.take() {
            let _ = catch_unwind(AssertUnwindSafe(|| drop(b)));
        }
        self.release_policy_state(env);
        self.out.publish(
            ConnectivityState::TransientFailure,
            Box::new(FailPicker::unavailable(message)),
        );
    }

    fn ensure_balancer(&mut self) {
        if self.balancer.is_none() {
            self.balancer = Some(self.config.policy.build());
        }
    }

    fn close_balancer(&mut self, env: &mut Env) {
        if self.balancer.is_some() {
            self.run_balancer(env, |b, cc| b.close(cc));
            self.balancer = None;
        }
        self.release_policy_state(env);
    }

    /// What a policy leaves behind when it goes: its timers (a new policy
    /// must not get them) and its subchannels.
    fn release_policy_state(&mut self, env: &mut Env) {
        for (_, id) in self.timers.drain() {
            env.timers.cancel(id);
        }
        self.subs.shutdown_all(env);
        // Nobody is left to hear the old subchannels' last words.
        self.subs.pending.clear();
    }

    /// Runs one policy callback with a `ClientConn` onto this channel. A panic
    /// marks the channel TRANSIENT_FAILURE with the panic's message.
    fn run_balancer(
        &mut self,
        env: &mut Env,
        f: impl FnOnce(&mut dyn Balancer, &mut dyn ClientConn),
    ) {
        let Some(mut balancer) = self.balancer.take() else {
            return;
        };
        let channel = self.id();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut cc = Cc {
                subs: &mut self.subs,
                out: &mut self.out,
                env: &mut *env,
                timers: &mut self.timers,
                next_timer: &mut self.next_timer,
                resolve: &mut self.resolve_requested,
                channel,
            };
            f(&mut *balancer, &mut cc);
        }));
        match result {
            Ok(()) => self.balancer = Some(balancer),
            Err(p) => {
                let _ = catch_unwind(AssertUnwindSafe(|| drop(balancer)));
                let message = format!(
                    "balancer {} panicked: {}",
                    self.config.policy.name(),
                    panic_message(&*p)
                );
                log::error!(target: trace::CHANNEL, "channel {channel}: {message}");
                self.fail(message, env);
            }
        }
    }

    /// Delivers queued subchannel transitions, one callback at a time, then
    /// passes on any re-resolution request.
    fn drain(&mut self, env: &mut Env) {
        while let Some((sc, state)) = self.subs.pending.pop_front() {
            if let Some(cb) = &self.on_subconn_state {
                cb(sc, &state);
            }
            if self.balancer.is_none() {
                self.subs.pending.clear();
                break;
            }
            self.out.cause = state
                .error
                .as_ref()
                .map(|e| format!("subchannel {}: {e}", sc.0));
            self.run_balancer(env, |b, cc| b.update_subconn_state(cc, sc, &state));
            self.out.cause = None;
        }
        if std::mem::take(&mut self.subs.resolve_requested)
            | std::mem::take(&mut self.resolve_requested)
        {
            self.resolve(env);
        }
    }
}

/// The `ClientConn` a policy sees during one callback.
struct Cc<'a> {
    subs: &'a mut Subchannels,
    out: &'a mut Outbox,
    env: &'a mut Env,
    timers: &'a mut HashMap<TimerToken, u64>,
    next_timer: &'a mut u64,
    resolve: &'a mut bool,
    channel: ChannelId,
}

impl ClientConn for Cc<'_> {
    fn new_subconn(&mut self, address: Address) -> Result<Arc<SubConn>, String> {
        if self.out.closed {
            return Err("channel is closed; no new subchannels".into());
        }
        Ok(self.subs.create(address, self.env))
    }

    fn connect(&mut self, sc: SubConnId) {
        self.subs.connect(sc, self.env);
    }

    fn shutdown_subconn(&mut self, sc: SubConnId) {
        self.subs.shutdown(sc, self.env);
    }

    fn update_state(&mut self, state: ConnectivityState, picker: Box<dyn Picker>) {
        self.out.publish(state, picker);
    }

    fn resolve_now(&mut self) {
        *self.resolve = true;
    }

    fn schedule_timer(&mut self, after: Duration) -> TimerToken {
        let token = TimerToken(*self.next_timer);
        *self.next_timer += 1;
        let at = self.env.clock.now() + after;
        let id = self
            .env
            .timers
            .schedule(at, self.channel, TimerKind::Balancer(token));
        self.timers.insert(token, id);
        token
    }

    fn cancel_timer(&mut self, token: TimerToken) {
        if let Some(id) = self.timers.remove(&token) {
            self.env.timers.cancel(id);
        }
    }

    fn now(&self) -> Instant {
        self.env.clock.now()
    }

    fn random(&mut self) -> u64 {
        self.env.rng.next_u64()
    }

    fn idle_trigger(&self) -> IdleTrigger {
        IdleTrigger {
            handle: self.env.handle.clone(),
            channel: self.channel,
        }
    }
}

impl SubConnState {
    pub(crate) fn is(&self, s: ConnectivityState) -> bool {
        self.state == s
    }
}
