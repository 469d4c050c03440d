//! The loop-side half of a channel: its policy, subchannels, resolution and
//! started calls, run by the loop as one task. Every policy callback goes
//! through `ChannelCore::run_balancer`, one at a time, with subchannel
//! transitions queued and delivered after the callback that caused them
//! returns. The policy is always a `GracefulSwitch` around the configured
//! one, so that a service config naming another policy switches gracefully.

use super::idle::{Idleness, IDLE_TIMER};
use super::policy_cc::{PolicyClientConn, BALANCER_TIMER};
use super::publisher::StatePublisher;
use super::resolver_wrapper::{
    ConfigChoice, ResolvedConfig, ResolverUpdates, ResolverWrapper, RESOLVE_RETRY_TIMER,
};
use super::shared::ChannelId;
use super::SubConnCallback;
use crate::address::Endpoint;
use crate::balancer::graceful_switch::GracefulSwitch;
use crate::balancer::picker::{DropPicker, FailPicker, IdlePicker, Picker, QueuePicker};
use crate::balancer::subconn::SubConnId;
use crate::balancer::{Balancer, ClientConn, ClientConnState, TimerToken, WorkScheduler};
use crate::connectivity::ConnectivityState;
use crate::connector::TransportEvent;
use crate::publish::Coalesce;
use crate::runtime::{panic_message, LoopContext, LoopHandle, Task, TimerKey};
use crate::service_config::ServiceConfig;
use crate::snapshot::ChannelSnapshot;
use crate::status::Status;
use crate::subchannel::SubchannelPool;
use crate::trace;
use std::any::Any;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The kind of the timers a channel arms itself (`TimerKey::kind`; the
/// subchannels' and connectors' kinds are theirs, see `timer_kinds_differ`).
/// (5 was the DNS lookup timer's, before resolvers paced themselves.)
pub(crate) const CALL_TIMER: u8 = 6;

/// Notification keys with this bit set wake a started call (the rest of the
/// key is its id); the others are the connector's (`Notifier`).
pub(crate) const CALL_WAKE: u64 = 1 << 63;

/// Calls started on the loop (`Channel::unary_start`), kept by the channel
/// that carries them. The call layer (above the channel) implements it; the
/// channel only forwards what the loop hands it.
pub(crate) trait StartedCalls: Any {
    /// After every command, event or timer run on the channel: queued calls
    /// pick from a newly published picker.
    fn after_run(&mut self, shared: &Arc<super::ChannelShared>, cx: &mut LoopContext);
    /// A started call's stream woke it.
    fn wake(&mut self, id: u64, shared: &Arc<super::ChannelShared>, cx: &mut LoopContext);
    /// A started call's `CALL_TIMER` fired (its deadline, or a retry's
    /// backoff: the call layer tells them apart by `id`).
    fn timer(&mut self, id: u64, shared: &Arc<super::ChannelShared>, cx: &mut LoopContext);
    /// The channel closes: end every call.
    fn close(&mut self, cx: &mut LoopContext);
    /// Calls started and not finished (queued or sent): the channel is in
    /// use (idleness).
    fn active(&self) -> bool;
    /// For the call layer to get its own type back.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// How a policy's subchannels go when the policy does.
#[derive(Clone, Copy)]
pub(super) enum Teardown {
    /// Every connection at once (the channel closes, or its policy failed).
    Hard,
    /// Each drains its calls in flight, then closes (the channel goes IDLE).
    Drain,
}

/// The loop-side half of a channel.
pub(crate) struct ChannelCore {
    pub(super) subs: SubchannelPool,
    pub(super) out: StatePublisher,
    pub(super) config: ServiceConfig,
    /// The caller's default service config (`Channel::new`, then
    /// `update_service_config`), what applies when the resolver gives none;
    /// `None` when the one given was invalid.
    pub(super) default_config: Option<ServiceConfig>,
    /// Why the channel has no valid service config (an invalid default
    /// config, or an invalid first one from the resolver): while set, the
    /// channel is TRANSIENT_FAILURE with this and runs no policy.
    pub(super) config_error: Option<String>,
    /// The configured policy, inside a graceful switch; `None` before the
    /// first addresses and after a panic.
    pub(super) balancer: Option<GracefulSwitch>,
    /// The last endpoints resolved (by the resolver or the host).
    pub(super) endpoints: Option<Vec<Endpoint>>,
    /// The resolver, or the host's re-resolution callback (empty target).
    pub(super) resolution: ResolverWrapper,
    pub(super) on_subconn_state: Option<SubConnCallback>,
    pub(super) timers: HashMap<TimerToken, u64>,
    pub(super) next_timer: u64,
    pub(super) resolve_requested: bool,
    /// The policy asked for `Balancer::work` and the loop has not run it yet.
    pub(super) work_pending: Arc<Coalesce>,
    /// Hands out `work_pending`'s requests (`ClientConn::work_scheduler`).
    pub(super) work: WorkScheduler,
    /// Started calls (`Channel::unary_start`), from the first one on.
    pub(super) calls: Option<Box<dyn StartedCalls>>,
    /// IDLE or in use, and when to look again (see `idle`).
    pub(super) idle: Idleness,
    /// `ChannelOptions::disable_health_check`.
    pub(super) disable_health_check: bool,
    /// Says the core is gone to `Channel::close`, which waits for it (see
    /// `ChannelShared::core_gone`): last of the fields, which drop in
    /// order, so that by then every subchannel, table and address (and
    /// their user data) the core held is gone.
    pub(super) _gone: CoreGone,
}

/// Sets `ChannelShared::core_gone` when dropped (with the core, last).
pub(crate) struct CoreGone(pub(crate) Arc<super::ChannelShared>);

impl Drop for CoreGone {
    fn drop(&mut self) {
        self.0.core_gone.store(true, Ordering::Release);
        self.0.slot.signal().notify_all();
    }
}

impl ChannelCore {
    fn id(&self) -> ChannelId {
        self.out.shared.id
    }

    pub(crate) fn snapshot(&self) -> ChannelSnapshot {
        let subs = self.subs.snapshot();
        let stats = &self.out.shared.call_stats;
        let counts = if self.out.shared.managed {
            stats.sum(&subs.iter().map(|s| s.id).collect())
        } else {
            stats.host_sum(&self.subs.slots())
        };
        let calls = counts
            .get(&crate::snapshot::CHANNEL)
            .copied()
            .unwrap_or_default();
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
            calls_started: calls.started,
            calls_succeeded: calls.succeeded,
            calls_failed: calls.failed,
            calls_in_flight: calls.started.saturating_sub(calls.succeeded + calls.failed),
            last_call: calls.last_call,
        }
    }

    /// The started calls, made with `make` on first use.
    pub(crate) fn started_calls<T: StartedCalls>(&mut self, make: impl FnOnce() -> T) -> &mut T {
        let calls = self.calls.get_or_insert_with(|| Box::new(make()));
        calls
            .as_any_mut()
            .downcast_mut::<T>()
            .expect("one kind of started calls per channel")
    }

    /// First steps of a new channel (run guarded, like every callback: they
    /// reach the connector). Its resolver is installed by a later command.
    fn begin(&mut self, env: &mut LoopContext) {
        self.configure_health(env);
        self.publish_config_error(env);
    }

    /// Without a valid service config: TRANSIENT_FAILURE, every RPC failing
    /// UNAVAILABLE with why, wait-for-ready ones too (gRPC's rule for a
    /// channel with no valid config, A21; gRPC-Go's failing picker ends
    /// them "unconditionally"). An IDLE channel still leaves IDLE on its
    /// first pick: its resolver may bring a valid config.
    fn publish_config_error(&mut self, env: &LoopContext) {
        let Some(e) = &self.config_error else {
            return;
        };
        let status = Status::unavailable(e.clone());
        let picker: Box<dyn Picker> = if self.idle.idle {
            Box::new(idle_picker(env.handle.clone(), self.id()).dropping(status))
        } else {
            Box::new(DropPicker(status))
        };
        self.out
            .publish(ConnectivityState::TransientFailure, picker);
    }

    /// New endpoints (the resolver's, or the host's) to the policy.
    pub(crate) fn update_endpoints(&mut self, endpoints: Vec<Endpoint>, env: &mut LoopContext) {
        self.give_endpoints(endpoints, false, env);
    }

    /// `update_endpoints`, for an update that counts as rejected even if
    /// the policy takes it (`config_rejected`: its service config was
    /// invalid and the last good one stays).
    fn give_endpoints(
        &mut self,
        endpoints: Vec<Endpoint>,
        config_rejected: bool,
        env: &mut LoopContext,
    ) {
        if self.is_finished() {
            return;
        }
        if self.idle.idle {
            // Only the host pushes while IDLE (a resolver is closed then):
            // the host resolving for its channel is using it.
            self.endpoints = Some(endpoints);
            return self.exit_channel_idle(env);
        }
        log::debug!(
            target: trace::RESOLVER,
            "channel {}: {} endpoint(s) to the policy: {}",
            self.id(),
            endpoints.len(),
            endpoints
                .iter()
                .flat_map(|e| e.addresses.iter().map(|a| a.addr.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.endpoints = Some(endpoints.clone());
        if self.config_error.is_some() {
            // Kept for when a valid config comes.
            self.publish_config_error(env);
            return;
        }
        self.ensure_balancer();
        let policy = self.config.policy.clone();
        let config = self.config.policy_config.clone();
        let mut result = Ok(());
        self.run_balancer(env, |b, cc| {
            // Another policy than the latest: built beside the one serving
            // (the same one: just an update). Either way the latest gets
            // the endpoints and config.
            b.switch_to(cc, policy);
            result = b.update_client_conn_state(cc, ClientConnState::new(endpoints, config))
        });
        // Rejected (no usable address, say): the resolver is asked again,
        // paced; accepted: the pacing starts over.
        let channel = self.id();
        match result {
            Ok(()) if !config_rejected => self.resolution.accepted(env),
            _ => self.resolution.rejected(channel, env),
        }
        self.drain(env);
    }

    pub(crate) fn resolver_error(&mut self, error: &str, env: &mut LoopContext) {
        if self.is_finished() {
            return;
        }
        if self.idle.idle {
            if self.idle.make_resolver.is_some() {
                return; // a closed resolver's late word
            }
            // The host resolving (and failing) for its channel is using it.
            self.exit_channel_idle(env);
        }
        log::warn!(target: trace::RESOLVER, "channel {}: resolver error: {error}", self.id());
        if self.config_error.is_none() && self.default_config.is_some() {
            self.resolution.default_in_force();
        }
        self.out.cause = Some(format!("name resolver error: {error}"));
        if self.config_error.is_some() {
            // The config's error says more than the resolver's.
            return;
        }
        if self.balancer.is_none() && self.endpoints.is_none() {
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

    pub(crate) fn apply_config(&mut self, config: ServiceConfig, env: &mut LoopContext) {
        if self.is_finished() {
            return;
        }
        log::info!(
            target: trace::CHANNEL,
            "channel {}: new service config, policy {}",
            self.id(),
            config.policy.name()
        );
        // The policy (switched gracefully if it is another one) gets the
        // config with the next addresses, the current ones if there are any.
        self.out.shared.methods.publish(config.methods.clone());
        self.config = config;
        if self.config_error.take().is_some() {
            // The error's picker goes now. An IDLE channel gets its idle
            // picker back (the next pick brings it up); otherwise picks
            // queue until the policy (which may publish only once a
            // subchannel moves) says more.
            if self.idle.idle {
                let picker = idle_picker(env.handle.clone(), self.id());
                self.out.publish(ConnectivityState::Idle, Box::new(picker));
            } else {
                let state = match self.endpoints {
                    Some(_) => ConnectivityState::Connecting,
                    None => ConnectivityState::Idle,
                };
                self.out.publish(state, Box::new(QueuePicker));
            }
        }
        self.configure_health(env);
        if self.idle.idle {
            // The policy gets it when the channel is used.
            return;
        }
        match self.endpoints.clone() {
            Some(endpoints) => self.update_endpoints(endpoints, env),
            None => self.drain(env),
        }
    }

    /// A resolver's first service config is invalid: no policy runs until
    /// a valid one comes; RPCs fail with why.
    fn config_invalid(&mut self, endpoints: Vec<Endpoint>, error: String, env: &mut LoopContext) {
        log::warn!(
            target: trace::RESOLVER,
            "channel {}: the resolver's service config is invalid and there is no \
             good one before it: {error}",
            self.id()
        );
        // The method settings of the default config do not apply either.
        self.out.shared.methods.publish(Default::default());
        // gRPC-Go's wording (its tests look for it).
        self.config_error = Some(format!("error parsing service config: {error}"));
        // Ask the resolver again (gRPC-Go tells it the state was bad, and a
        // polling resolver re-resolves with backoff), or a resolver that
        // waits to be asked would leave the channel failing.
        self.update_endpoints(endpoints, env);
        let channel = self.id();
        self.resolution.rejected(channel, env);
    }

    /// Client-side health checking (gRFC A17) is on when the service config
    /// has `healthCheckConfig` and its policy opts in
    /// (`Builder::health_checks`): not a top-level pick_first, which never
    /// health-checks (A17; A61 enables it for pick_first as a child, e.g.
    /// under round_robin), nor a policy that does not say it wants it, nor a
    /// channel made with `disable_health_check`.
    fn configure_health(&mut self, env: &mut LoopContext) {
        let wanted = !self.disable_health_check
            && self
                .config
                .policy
                .health_checks(self.config.policy_config.as_ref());
        let service = if wanted {
            self.config.health_check_service.as_deref()
        } else {
            None
        };
        self.subs.configure_health(service, env);
    }

    /// `Channel::reset_connect_backoff`.
    pub(crate) fn reset_connect_backoff(&mut self, env: &mut LoopContext) {
        self.subs.reset_backoff(env);
        self.resolution.reset_backoff(env);
        self.drain(env);
    }

    /// `Channel::connect`: an IDLE channel leaves IDLE; an IDLE policy is
    /// asked to connect.
    pub(crate) fn exit_idle(&mut self, env: &mut LoopContext) {
        if self.idle.idle {
            return self.exit_channel_idle(env);
        }
        // Not use of the channel: only calls (picks) keep it from going
        // IDLE, as in gRPC-Go, whose Connect marks nothing active.
        self.run_balancer(env, |b, cc| b.exit_idle(cc));
        self.drain(env);
    }

    /// The policy's pickers asked for work (`WorkScheduler`).
    pub(crate) fn work(&mut self, env: &mut LoopContext) {
        // Before the work runs: a request that comes while it runs
        // schedules another, and one that found this run pending is seen.
        self.work_pending.serve();
        self.run_balancer(env, |b, cc| b.work(cc));
        self.drain(env);
    }

    /// Runs the policy's `work` now if a run is waiting in the queue (the
    /// queued one then finds nothing left to do).
    pub(crate) fn run_pending_work(&mut self, env: &mut LoopContext) {
        if self.work_pending.pending() {
            self.work(env);
        }
    }

    /// The scheduler that has the loop call this channel's `work` (made
    /// once, with the channel); requests made before the loop gets to one
    /// coalesce.
    pub(super) fn work_scheduler(
        handle: LoopHandle,
        id: ChannelId,
        pending: Arc<Coalesce>,
    ) -> WorkScheduler {
        WorkScheduler::new(move || {
            if pending.request() {
                handle.run_on(id, |core: &mut ChannelCore, env| core.work(env));
            }
        })
    }

    pub(crate) fn transport_event(
        &mut self,
        sc: SubConnId,
        event: TransportEvent,
        env: &mut LoopContext,
    ) {
        self.subs.transport_event(sc, event, env);
        self.drain(env);
    }

    fn shut(&mut self, env: &mut LoopContext) {
        if self.is_finished() {
            return;
        }
        self.resolution.close(env);
        self.idle.cancel(env);
        // First, while their connections are still up to reset the streams.
        if let Some(calls) = &mut self.calls {
            calls.close(env);
        }
        self.close_balancer(env, Teardown::Hard);
        self.out.close();
    }

    /// Something inside the channel panicked: it can't be trusted to manage
    /// connections any more. Fail picks with the message until the next
    /// address update or config builds a new policy.
    fn fail_policy(&mut self, message: String, env: &mut LoopContext) {
        if let Some(b) = self.balancer.take() {
            let _ = catch_unwind(AssertUnwindSafe(|| drop(b)));
        }
        self.release_policy_state(env, Teardown::Hard);
        self.out.publish(
            ConnectivityState::TransientFailure,
            Box::new(FailPicker::unavailable(message)),
        );
    }

    fn ensure_balancer(&mut self) {
        if self.balancer.is_none() {
            let label = format!("channel {}", self.id());
            self.balancer = Some(GracefulSwitch::new().labelled(label));
        }
    }

    /// The channel closes or goes IDLE: the policy goes, and with it every
    /// subchannel, its connection cut (`Teardown::Hard`, closing) or drained
    /// (`Teardown::Drain`, going IDLE). A policy switch closes the old policy
    /// inside the graceful switch instead, whose subchannels drain one by one.
    pub(super) fn close_balancer(&mut self, env: &mut LoopContext, teardown: Teardown) {
        if let Teardown::Hard = teardown {
            // Before the policy shuts its subchannels down, which would
            // drain their connections: a drain flushes the streams of calls
            // just reset, and h2 would then open a call waiting for a slot
            // they freed, its request sent as the channel closes (gRPC-Go's
            // Close and C-core never start a stream still waiting).
            self.subs.close_connections(env);
        }
        if self.balancer.is_some() {
            self.run_balancer(env, |b, cc| b.close(cc));
            self.balancer = None;
        }
        self.release_policy_state(env, teardown);
        // A closing policy's (or its subchannels') request to re-resolve is
        // for the resolver that closed with it, not the next one.
        self.resolve_requested = false;
        self.subs.resolve_requested = false;
    }

    /// What a policy leaves behind when the channel closes, goes IDLE or the
    /// policy panicked: its timers (a new policy must not get them) and its
    /// subchannels, shut down as `teardown` says.
    fn release_policy_state(&mut self, env: &mut LoopContext, teardown: Teardown) {
        for (_, id) in self.timers.drain() {
            env.timers.cancel(id);
        }
        match teardown {
            Teardown::Hard => self.subs.shutdown_all(env),
            Teardown::Drain => self.subs.shutdown_each(env),
        }
        // Nobody is left to hear the old subchannels' last words.
        self.subs.pending.clear();
    }

    /// Runs one policy callback with a `ClientConn` onto this channel. A panic
    /// marks the channel TRANSIENT_FAILURE with the panic's message.
    fn run_balancer(
        &mut self,
        env: &mut LoopContext,
        f: impl FnOnce(&mut GracefulSwitch, &mut dyn ClientConn),
    ) {
        let Some(mut balancer) = self.balancer.take() else {
            return;
        };
        let channel = self.id();
        self.subs.begin_policy_call();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut cc = PolicyClientConn {
                work: &self.work,
                subs: &mut self.subs,
                out: &mut self.out,
                env: &mut *env,
                timers: &mut self.timers,
                next_timer: &mut self.next_timer,
                resolve: &mut self.resolve_requested,
                channel,
            };
            f(&mut balancer, &mut cc);
        }));
        // The connector calls the policy made, guarded as they were when
        // made inside it (a host transport's panic fails the policy).
        let flushed = catch_unwind(AssertUnwindSafe(|| self.subs.end_policy_call(env)));
        match result.and(flushed) {
            Ok(()) => self.balancer = Some(balancer),
            Err(p) => {
                let _ = catch_unwind(AssertUnwindSafe(|| drop(balancer)));
                let message = format!(
                    "balancer {} panicked: {}",
                    self.config.policy.name(),
                    panic_message(&*p)
                );
                log::error!(target: trace::CHANNEL, "channel {channel}: {message}");
                self.fail_policy(message, env);
            }
        }
    }

    /// Delivers queued subchannel transitions, one callback at a time, then
    /// passes on any re-resolution request.
    fn drain(&mut self, env: &mut LoopContext) {
        while let Some(next) = self.subs.pending.pop_front() {
            let (sc, state) = (next.sc, next.state);
            if let Some(cb) = self.on_subconn_state.as_ref().filter(|_| next.observed) {
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
            self.resolution.resolve_now();
        }
    }
}

impl ResolverUpdates for ChannelCore {
    /// A resolver's update: a service config it carries (if valid and new)
    /// is applied with the endpoints, in one policy update.
    fn apply_resolved(
        &mut self,
        endpoints: Vec<Endpoint>,
        config: Option<ResolvedConfig>,
        cx: &mut LoopContext,
    ) {
        if self.is_finished() {
            return;
        }
        let failing = self.config_error.is_some();
        match self.resolution.new_config(config, failing, self.id()) {
            ConfigChoice::Apply(config) => {
                self.endpoints = Some(endpoints);
                self.apply_config(config, cx);
            }
            ConfigChoice::Keep => self.update_endpoints(endpoints, cx),
            ConfigChoice::KeepRejected => self.give_endpoints(endpoints, true, cx),
            ConfigChoice::Default => match self.default_config.clone() {
                Some(config) => {
                    self.endpoints = Some(endpoints);
                    self.apply_config(config, cx);
                }
                // No valid default: the last config stands.
                None => self.update_endpoints(endpoints, cx),
            },
            ConfigChoice::Invalid(e) => self.config_invalid(endpoints, e, cx),
        }
    }

    fn apply_resolver_error(&mut self, error: &str, cx: &mut LoopContext) {
        self.resolver_error(error, cx);
    }
}

impl Task for ChannelCore {
    fn start(&mut self, cx: &mut LoopContext) {
        self.begin(cx);
    }

    fn io_event(&mut self, key: u64, event: &mio::event::Event, cx: &mut LoopContext) {
        self.subs.io_event(key, event, cx);
        self.drain(cx);
    }

    fn notified(&mut self, key: u64, cx: &mut LoopContext) {
        if key & CALL_WAKE != 0 {
            if let Some(calls) = &mut self.calls {
                calls.wake(key & !CALL_WAKE, &self.out.shared, cx);
            }
            return;
        }
        self.subs.notified(key, cx);
        self.drain(cx);
    }

    fn timer(&mut self, key: TimerKey, cx: &mut LoopContext) {
        match key.kind {
            BALANCER_TIMER => {
                let token = TimerToken(key.id);
                if self.timers.remove(&token).is_some() {
                    self.run_balancer(cx, |b, cc| b.timer(cc, token));
                }
            }
            CALL_TIMER => {
                if let Some(calls) = &mut self.calls {
                    calls.timer(key.id, &self.out.shared, cx);
                }
            }
            IDLE_TIMER => self.idle_timer(cx),
            RESOLVE_RETRY_TIMER => self.resolution.retry_due(),
            _ => self.subs.timer(key, cx),
        }
        self.drain(cx);
    }

    fn after_run(&mut self, cx: &mut LoopContext) {
        if let Some(calls) = &mut self.calls {
            calls.after_run(&self.out.shared, cx);
        }
    }

    /// Something inside the channel panicked: it can't be trusted to manage
    /// connections any more. Fail picks with the message until the next
    /// address update or config builds a new policy.
    fn fail(&mut self, message: String, cx: &mut LoopContext) {
        self.fail_policy(message, cx);
    }

    fn close(&mut self, cx: &mut LoopContext) {
        self.shut(cx);
    }

    fn is_finished(&self) -> bool {
        self.out.closed
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The picker of an IDLE channel: its first pick asks the loop to leave
/// IDLE, and every pick queues until then (wait-for-ready or not, as gRPC).
pub(crate) fn idle_picker(handle: LoopHandle, id: crate::runtime::TaskId) -> IdlePicker {
    IdlePicker::new(WorkScheduler::new(move || {
        handle.run_on(id, |core: &mut ChannelCore, cx| core.exit_channel_idle(cx));
    }))
}

impl ChannelCore {
    /// Leaves IDLE: builds the resolver (or hands the policy the host's
    /// endpoints) and starts watching for idleness. CONNECTING until the
    /// policy says otherwise.
    pub(crate) fn exit_channel_idle(&mut self, cx: &mut LoopContext) {
        if self.is_finished() || !self.idle.idle {
            return;
        }
        self.idle.idle = false;
        log::info!(target: trace::CHANNEL, "channel {}: leaving IDLE", self.out.shared.id);
        if self.config_error.is_some() {
            // RPCs keep failing until a valid config comes.
            self.publish_config_error(cx);
        } else {
            self.out
                .publish(ConnectivityState::Connecting, Box::new(QueuePicker));
        }
        self.out.shared.picked.store(false, Ordering::Relaxed);
        let id = self.out.shared.id;
        self.idle.start(id, cx);
        match self.idle.make_resolver.as_mut() {
            Some(make) => {
                let cc = self.resolution.reopen::<ChannelCore>(cx.handle.clone(), id);
                let built = catch_unwind(AssertUnwindSafe(|| make(cc))).unwrap_or_else(|p| {
                    Err(format!("the resolver panicked: {}", panic_message(&*p)))
                });
                match built {
                    Ok(r) => self.resolution.install(r),
                    Err(e) => {
                        self.resolution.refused();
                        self.resolver_error(&e, cx);
                    }
                }
            }
            None => {
                if let Some(endpoints) = self.endpoints.clone() {
                    self.update_endpoints(endpoints, cx);
                }
            }
        }
    }

    /// The idle timer: in use if something picked since the last look, a
    /// pick is waiting or a call is in flight or queued; idle once no look
    /// has seen use for a whole timeout (`Idleness::looked`).
    pub(crate) fn idle_timer(&mut self, cx: &mut LoopContext) {
        self.idle.timer = None;
        if self.is_finished() || self.idle.idle {
            return;
        }
        let shared = &self.out.shared;
        let picked = shared.picked.swap(false, Ordering::Relaxed);
        // Calls (or picks) that last: the use goes on past this look.
        let ongoing = shared.waiting.load(Ordering::Relaxed) > 0
            || shared.call_stats.in_flight() > 0
            || (!shared.managed && shared.call_stats.host_in_flight(&self.subs.slots()) > 0)
            || self.calls.as_ref().is_some_and(|c| c.active());
        let in_use = picked || ongoing;
        if in_use {
            // Every reader's next pick says so again.
            shared.slot.bump();
        }
        let id = shared.id;
        if self.idle.looked(in_use, ongoing, id, cx) {
            self.enter_idle(cx);
        }
    }

    /// Goes IDLE: the resolver and the policy close, and with the policy
    /// every subchannel and connection; the next pick brings them back.
    fn enter_idle(&mut self, cx: &mut LoopContext) {
        let id = self.out.shared.id;
        log::info!(target: trace::CHANNEL, "channel {id}: idle timeout, going IDLE");
        self.idle.idle = true;
        self.resolution.close(cx);
        // Drained, not cut: a call that picked just before the channel
        // looked idle still finishes (gRPC-Go never goes idle under a
        // call); the next pick finds no connection and brings it back.
        self.close_balancer(cx, Teardown::Drain);
        if self.idle.make_resolver.is_some() {
            // The resolver resolves again on the way out.
            self.endpoints = None;
            if let (Some(_), Some(default)) = (&self.config_error, self.default_config.clone()) {
                // An invalid config that came from the resolver goes with
                // it (gRPC-Go's enterIdleMode drops its failing policy and
                // publishes IDLE), the default back in force, its idle
                // picker published: the next resolver says again. Only an
                // invalid default config, which nothing resolved, stays.
                return self.apply_config(default, cx);
            }
        }
        if self.config_error.is_some() {
            return self.publish_config_error(cx);
        }
        let picker = idle_picker(cx.handle.clone(), id);
        self.out.publish(ConnectivityState::Idle, Box::new(picker));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_kinds_differ() {
        let mut kinds = vec![
            crate::connector::TIMER_KIND,
            crate::subchannel::BACKOFF_TIMER,
            crate::subchannel::CONNECT_DEADLINE_TIMER,
            crate::subchannel::HEALTH_RETRY_TIMER,
            crate::subchannel::OOB_RETRY_TIMER,
            BALANCER_TIMER,
            CALL_TIMER,
            IDLE_TIMER,
            RESOLVE_RETRY_TIMER,
        ];
        let n = kinds.len();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), n, "each owner of timers has its own kinds");
    }
}
