//! The loop-side half of a channel: its policy, subchannels, resolution and
//! started calls, run by the loop as one task. Every policy callback goes
//! through `ChannelCore::run_balancer`, one at a time, with subchannel
//! transitions queued and delivered after the callback that caused them
//! returns.

use super::policy_cc::{PolicyClientConn, BALANCER_TIMER};
use super::publisher::StatePublisher;
use super::shared::ChannelId;
use super::SubConnCallback;
use crate::address::Address;
use crate::balancer::picker::FailPicker;
use crate::balancer::subconn::SubConnId;
use crate::balancer::{Balancer, ClientConn, ClientConnState, TimerToken, WorkScheduler};
use crate::connectivity::ConnectivityState;
use crate::connector::TransportEvent;
use crate::resolver::{self, Lookups, Next, Resolver};
use crate::runtime::{panic_message, LoopContext, Task, TimerKey};
use crate::service_config::ServiceConfig;
use crate::snapshot::ChannelSnapshot;
use crate::subchannel::SubchannelPool;
use crate::trace;
use std::any::Any;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The kinds of the timers a channel arms itself (`TimerKey::kind`; the
/// subchannels' and connectors' kinds are theirs, see `timer_kinds_differ`).
pub(crate) const RESOLVE_TIMER: u8 = 5;
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
    /// A started call's deadline (a `CALL_TIMER`) passed.
    fn expire(&mut self, id: u64, cx: &mut LoopContext);
    /// The channel closes: end every call.
    fn close(&mut self, cx: &mut LoopContext);
    /// For the call layer to get its own type back.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The loop-side half of a channel.
pub(crate) struct ChannelCore {
    pub(super) subs: SubchannelPool,
    pub(super) out: StatePublisher,
    pub(super) config: ServiceConfig,
    pub(super) balancer: Option<Box<dyn Balancer>>,
    pub(super) addresses: Option<Vec<Address>>,
    pub(super) resolver: Resolver,
    pub(super) on_resolve_now: Option<Arc<dyn Fn() + Send + Sync>>,
    pub(super) on_subconn_state: Option<SubConnCallback>,
    /// When the DNS resolver looks up next (unused for other resolvers).
    pub(super) lookups: Lookups,
    pub(super) timers: HashMap<TimerToken, u64>,
    pub(super) next_timer: u64,
    pub(super) resolve_requested: bool,
    /// The policy asked for `Balancer::work` and the loop has not run it yet.
    pub(super) work_pending: Arc<AtomicBool>,
    /// Started calls (`Channel::unary_start`), from the first one on.
    pub(super) calls: Option<Box<dyn StartedCalls>>,
}

impl ChannelCore {
    fn id(&self) -> ChannelId {
        self.out.shared.id
    }

    pub(crate) fn snapshot(&self) -> ChannelSnapshot {
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

    /// The started calls, made with `make` on first use.
    pub(crate) fn started_calls<T: StartedCalls>(&mut self, make: impl FnOnce() -> T) -> &mut T {
        let calls = self.calls.get_or_insert_with(|| Box::new(make()));
        calls
            .as_any_mut()
            .downcast_mut::<T>()
            .expect("one kind of started calls per channel")
    }

    /// First steps of a new channel (run guarded, like every callback: they
    /// reach the connector and the policy's builder).
    fn begin(&mut self, env: &mut LoopContext) {
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
    fn resolve(&mut self, env: &mut LoopContext) {
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
                    env.timers
                        .schedule(at, self.id(), TimerKey::new(RESOLVE_TIMER, 0));
                }
                Next::Nothing => {}
            },
        }
    }

    /// Starts a DNS lookup on a helper thread; its result comes back as a
    /// command, and a failure schedules the next try.
    fn lookup(&mut self, env: &mut LoopContext) {
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
                handle.run_on(id, move |core: &mut ChannelCore, env| {
                    let retry = core.lookups.finished(result.is_ok(), env.clock.now());
                    if let Some(at) = retry {
                        env.timers
                            .schedule(at, core.id(), TimerKey::new(RESOLVE_TIMER, 0));
                    }
                    match result {
                        Ok(addrs) => core.update_addresses(addrs, env),
                        Err(e) => core.resolver_error(&e, env),
                    }
                });
            });
        if spawned.is_err() {
            let at = self.lookups.not_started(env.clock.now());
            env.timers.schedule(at, id, TimerKey::new(RESOLVE_TIMER, 0));
        }
    }

    pub(crate) fn update_addresses(&mut self, addresses: Vec<Address>, env: &mut LoopContext) {
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
            result =
                b.update_client_conn_state(cc, ClientConnState::from_addresses(addresses, config))
        });
        if result.is_err() {
            self.resolve_requested = true;
        }
        self.drain(env);
    }

    pub(crate) fn resolver_error(&mut self, error: &str, env: &mut LoopContext) {
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

    pub(crate) fn apply_config(&mut self, config: ServiceConfig, env: &mut LoopContext) {
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
    fn configure_health(&mut self, env: &mut LoopContext) {
        let service = if self.config.policy.name().eq_ignore_ascii_case("pick_first") {
            None
        } else {
            self.config.health_check_service.as_deref()
        };
        self.subs.configure_health(service, env);
    }

    pub(crate) fn exit_idle(&mut self, env: &mut LoopContext) {
        self.run_balancer(env, |b, cc| b.exit_idle(cc));
        self.drain(env);
    }

    /// The policy's pickers asked for work (`WorkScheduler`).
    pub(crate) fn work(&mut self, env: &mut LoopContext) {
        self.work_pending.store(false, Ordering::Relaxed);
        self.run_balancer(env, |b, cc| b.work(cc));
        self.drain(env);
    }

    /// A scheduler that has the loop call this channel's `work`; requests
    /// made before the loop gets to one coalesce.
    pub(super) fn work_scheduler(&self, env: &LoopContext) -> WorkScheduler {
        let handle = env.handle.clone();
        let pending = self.work_pending.clone();
        let id = self.id();
        WorkScheduler::new(move || {
            if !pending.swap(true, Ordering::Relaxed) {
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
        // First, while their connections are still up to reset the streams.
        if let Some(calls) = &mut self.calls {
            calls.close(env);
        }
        self.close_balancer(env);
        self.out.close();
    }

    /// Something inside the channel panicked: it can't be trusted to manage
    /// connections any more. Fail picks with the message until the next
    /// address update or config builds a new policy.
    fn fail_policy(&mut self, message: String, env: &mut LoopContext) {
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

    fn close_balancer(&mut self, env: &mut LoopContext) {
        if self.balancer.is_some() {
            self.run_balancer(env, |b, cc| b.close(cc));
            self.balancer = None;
        }
        self.release_policy_state(env);
    }

    /// What a policy leaves behind when it goes: its timers (a new policy
    /// must not get them) and its subchannels.
    fn release_policy_state(&mut self, env: &mut LoopContext) {
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
        env: &mut LoopContext,
        f: impl FnOnce(&mut dyn Balancer, &mut dyn ClientConn),
    ) {
        let Some(mut balancer) = self.balancer.take() else {
            return;
        };
        let channel = self.id();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let work = self.work_scheduler(env);
            let mut cc = PolicyClientConn {
                work,
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
                self.fail_policy(message, env);
            }
        }
    }

    /// Delivers queued subchannel transitions, one callback at a time, then
    /// passes on any re-resolution request.
    fn drain(&mut self, env: &mut LoopContext) {
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
            RESOLVE_TIMER => {
                self.lookups.due();
                self.lookup(cx);
            }
            CALL_TIMER => {
                if let Some(calls) = &mut self.calls {
                    calls.expire(key.id, cx);
                }
            }
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
            BALANCER_TIMER,
            RESOLVE_TIMER,
            CALL_TIMER,
        ];
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), 7, "each owner of timers has its own kinds");
    }
}
