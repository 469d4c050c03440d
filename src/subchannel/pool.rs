//! One channel's subchannels: the connectivity state machine, on the loop
//! (see the module above), with each subchannel's health check
//! (`super::health`) layered on its connection.

use crate::address::Address;
use crate::backoff::{Backoff, BackoffConfig};
use crate::balancer::subconn::{SubConn, SubConnId, NO_SLOT};
use crate::balancer::{LoadReportListener, OobListenerId, SubConnState};
use crate::connectivity::ConnectivityState;
use crate::connector::{Connector, ConnectorCtx, TransportEvent};
use crate::runtime::{LoopContext, TaskId, TimerKey};
use crate::snapshot::{CallStats, HostSlot, SubchannelSnapshot};
use crate::trace;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::health::{HealthCheck, Verdict};
use super::oob::{Action, OobReports};
use super::{BACKOFF_TIMER, CONNECT_DEADLINE_TIMER, HEALTH_RETRY_TIMER, OOB_RETRY_TIMER};

const TIMED_OUT: &str = "connection attempt timed out";

struct Subchannel {
    sc: Arc<SubConn>,
    state: ConnectivityState,
    backoff: Backoff,
    /// The backoff or connect-deadline timer, whichever is armed.
    timer: Option<u64>,
    /// Its health checking (gRFC A17), while connected (`sc.is_connected()`:
    /// the transport is up, whether the state the policy sees is READY,
    /// CONNECTING with no health verdict yet, or TRANSIENT_FAILURE unhealthy).
    health: HealthCheck,
    /// Its out-of-band load reports (gRFC A51): listeners and stream.
    oob: OobReports,
    /// The latest error (for snapshots; kept after recovery).
    last_error: Option<String>,
}

/// A subchannel's state for its policy.
pub(crate) struct PendingState {
    pub(crate) sc: SubConnId,
    pub(crate) state: SubConnState,
    /// A transition (the channel's `on_subconn_state` hears it), not a
    /// notice with no new state (a connection made while CONNECTING for
    /// its health check).
    pub(crate) observed: bool,
}

/// One channel's subchannels, their connector, and the transitions not yet
/// delivered to the policy.
pub(crate) struct SubchannelPool {
    channel: TaskId,
    map: BTreeMap<SubConnId, Subchannel>,
    connector: Box<dyn Connector>,
    backoff: BackoffConfig,
    next_id: u64,
    /// Where readers count host picks (see `crate::snapshot`); `None` on a
    /// channel with the library's own connections (its calls are counted
    /// as calls, not picks), whose subchannels get no slot.
    stats: Option<Arc<CallStats>>,
    /// Slots of subchannels shut down, given to new ones once nothing
    /// holds the old subchannel any more (oldest first).
    freed_slots: VecDeque<(u32, Weak<SubConn>)>,
    /// What the policy hears next, in order.
    pub(crate) pending: VecDeque<PendingState>,
    /// A connection failed or was lost: the resolver should look again.
    pub(crate) resolve_requested: bool,
    /// `healthCheckConfig.serviceName` while health checking is on.
    health_service: Option<String>,
    /// Addresses already logged as lacking the health service.
    logged_unimplemented: HashSet<String>,
    /// Whether "the connector cannot check health" was logged.
    logged_no_health: bool,
    /// Which subchannel each out-of-band listener is registered on.
    oob_owners: HashMap<OobListenerId, SubConnId>,
    next_oob: u64,
    /// Addresses already logged as lacking the ORCA service.
    logged_no_orca: HashSet<String>,
    /// Whether "the connector cannot open ORCA streams" was logged.
    logged_no_oob: bool,
    /// While a policy callback runs: the connector calls it caused, in
    /// order, made when it returns (`end_policy_call`), so that a transport
    /// is closed only once the picker published without it is out.
    deferred: Option<Vec<ConnectorCall>>,
}

/// A connector call a policy callback caused (see `SubchannelPool::deferred`).
enum ConnectorCall {
    Created(Arc<SubConn>),
    Connect(Arc<SubConn>, Instant),
    Shutdown(Arc<SubConn>),
}

impl SubchannelPool {
    pub(crate) fn new(
        channel: TaskId,
        connector: Box<dyn Connector>,
        backoff: BackoffConfig,
        stats: Option<Arc<CallStats>>,
    ) -> Self {
        SubchannelPool {
            channel,
            map: BTreeMap::new(),
            connector,
            backoff,
            next_id: 1,
            stats,
            freed_slots: VecDeque::new(),
            pending: VecDeque::new(),
            resolve_requested: false,
            health_service: None,
            logged_unimplemented: HashSet::new(),
            logged_no_health: false,
            oob_owners: HashMap::new(),
            next_oob: 1,
            logged_no_orca: HashSet::new(),
            logged_no_oob: false,
            deferred: None,
        }
    }

    /// A policy callback starts: the connector calls it causes wait for
    /// its end.
    pub(crate) fn begin_policy_call(&mut self) {
        self.deferred.get_or_insert_with(Vec::new);
    }

    /// The policy callback returned (its picker, if any, is published):
    /// the connector hears what it did, in order. A host transport told to
    /// close before the new picker is out would still be handed out by the
    /// old picker until then.
    pub(crate) fn end_policy_call(&mut self, env: &mut LoopContext) {
        for call in self.deferred.take().into_iter().flatten() {
            self.call_connector(call, env);
        }
    }

    /// Makes `call` now, or at the end of the policy callback running.
    fn tell_connector(&mut self, call: ConnectorCall, env: &mut LoopContext) {
        match &mut self.deferred {
            Some(later) => later.push(call),
            None => self.call_connector(call, env),
        }
    }

    fn call_connector(&mut self, call: ConnectorCall, env: &mut LoopContext) {
        match call {
            ConnectorCall::Created(sc) => self.with_connector(env, |c, ctx| c.created(&sc, ctx)),
            ConnectorCall::Connect(sc, deadline) => {
                self.with_connector(env, |c, ctx| c.connect(&sc, deadline, ctx))
            }
            ConnectorCall::Shutdown(sc) => self.with_connector(env, |c, ctx| c.shutdown(&sc, ctx)),
        }
    }

    pub(crate) fn create(&mut self, address: Address, env: &mut LoopContext) -> Arc<SubConn> {
        let id = SubConnId(self.next_id);
        self.next_id += 1;
        let slot = match self.stats.clone() {
            Some(stats) => stats.take_slot(self.reusable_slot()),
            None => NO_SLOT,
        };
        let sc = Arc::new(SubConn::with_slot(id, slot, address));
        self.map.insert(
            id,
            Subchannel {
                sc: sc.clone(),
                state: ConnectivityState::Idle,
                backoff: Backoff::new(self.backoff),
                timer: None,
                // The health and ORCA streams back off by gRPC's own
                // numbers (1 s, ×1.6, ±20 %, 120 s), not the channel's
                // connection backoff: gRPC-Go's health client and ORCA
                // producer use `backoff.DefaultExponential` whatever the
                // channel's ConnectParams, as C-core's stream clients do.
                health: HealthCheck::new(BackoffConfig::default()),
                oob: OobReports::new(BackoffConfig::default()),
                last_error: None,
            },
        );
        log::debug!(target: trace::SUBCHANNEL, "channel {} subchannel {} created for {}", self.channel, id.0, sc.addr());
        self.tell_connector(ConnectorCall::Created(sc.clone()), env);
        sc
    }

    /// A freed slot whose subchannel is gone, if one of the oldest few is
    /// (bounded: a slot still held waits for a later subchannel).
    fn reusable_slot(&mut self) -> Option<u32> {
        for _ in 0..self.freed_slots.len().min(4) {
            let (slot, old) = self.freed_slots.pop_front()?;
            if old.strong_count() == 0 {
                // The count is read `Relaxed`: acquire the last owner's
                // release, so its final counts are seen by the slot's reuse.
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                return Some(slot);
            }
            self.freed_slots.push_back((slot, old));
        }
        None
    }

    /// Starts an attempt; a no-op unless IDLE.
    pub(crate) fn connect(&mut self, id: SubConnId, env: &mut LoopContext) {
        let Some(s) = self.map.get_mut(&id) else {
            return;
        };
        if s.state != ConnectivityState::Idle {
            return;
        }
        let now = env.clock.now();
        let rng = &mut env.rng;
        let deadline = s.backoff.start_attempt(now, &mut || rng.uniform());
        if self.connector.enforces_deadline() {
            s.timer = Some(env.timers.schedule(
                deadline,
                self.channel,
                TimerKey::new(CONNECT_DEADLINE_TIMER, id.0),
            ));
        }
        let sc = s.sc.clone();
        self.transition(id, ConnectivityState::Connecting, None, env);
        self.tell_connector(ConnectorCall::Connect(sc, deadline), env);
    }

    pub(crate) fn shutdown(&mut self, id: SubConnId, env: &mut LoopContext) {
        let Some(mut s) = self.map.remove(&id) else {
            return;
        };
        for t in [s.timer, s.health.stop(), s.oob.connection_ended()]
            .into_iter()
            .flatten()
        {
            env.timers.cancel(t);
        }
        for l in s.oob.ids() {
            self.oob_owners.remove(&l);
        }
        self.tell_connector(ConnectorCall::Shutdown(s.sc.clone()), env);
        if s.sc.slot() != NO_SLOT {
            self.freed_slots
                .push_back((s.sc.slot(), Arc::downgrade(&s.sc)));
        }
        log::info!(
            target: trace::SUBCHANNEL,
            "channel {} subchannel {} {}: {} -> SHUTDOWN",
            self.channel,
            id.0,
            s.sc.addr(),
            s.state
        );
        self.pending.push_back(PendingState {
            sc: id,
            state: SubConnState {
                state: ConnectivityState::Shutdown,
                error: None,
            },
            observed: true,
        });
    }

    /// Shuts every subchannel down, each draining its calls in flight (as
    /// one address removed does).
    pub(crate) fn shutdown_each(&mut self, env: &mut LoopContext) {
        let ids: Vec<SubConnId> = self.map.keys().copied().collect();
        for id in ids {
            self.shutdown(id, env);
        }
    }

    /// Shuts every subchannel down and closes every connection at once,
    /// calls in flight and all.
    pub(crate) fn shutdown_all(&mut self, env: &mut LoopContext) {
        self.shutdown_each(env);
        self.close_connections(env);
    }

    /// Closes every connection at once, calls in flight and all (the
    /// subchannels stay, without connections).
    pub(crate) fn close_connections(&mut self, env: &mut LoopContext) {
        self.with_connector(env, |c, ctx| c.close_all(ctx));
    }

    /// Applies what a transport reported.
    pub(crate) fn transport_event(
        &mut self,
        id: SubConnId,
        event: TransportEvent,
        env: &mut LoopContext,
    ) {
        let Some(s) = self.map.get_mut(&id) else {
            return;
        };
        use ConnectivityState::{Connecting, Ready, TransientFailure};
        match event {
            TransportEvent::Ready if s.state == Connecting && !s.sc.is_connected() => {
                // The transport is up: the attempt succeeded whatever health
                // says, so the deadline goes and the backoff starts over.
                if let Some(t) = s.timer.take() {
                    env.timers.cancel(t);
                }
                s.backoff.reset();
                s.sc.set_connected(true);
                if self.health_service.is_some() {
                    // CONNECTING until the first verdict (gRFC A17); the
                    // policy hears that the connection is made (pick_first
                    // ends its pass on it), observers hear no new state.
                    self.pending.push_back(PendingState {
                        sc: id,
                        state: SubConnState {
                            state: Connecting,
                            error: None,
                        },
                        observed: false,
                    });
                    self.start_health(id, env);
                    // Listeners already registered get their stream now.
                    self.sync_oob(id, env);
                } else {
                    self.transition(id, Ready, None, env);
                }
            }
            TransportEvent::Healthy
            | TransportEvent::Unhealthy(_)
            | TransportEvent::HealthStatus(_)
            | TransportEvent::HealthStreamEnded { .. }
                if s.sc.is_connected() =>
            {
                let now = env.clock.now();
                let out = s
                    .health
                    .report(event, s.sc.addr(), now, &mut self.logged_unimplemented);
                if let Some(at) = out.retry_at {
                    let key = TimerKey::new(HEALTH_RETRY_TIMER, id.0);
                    s.health.retry = Some(env.timers.schedule(at, self.channel, key));
                }
                match out.verdict {
                    Some(Verdict::Healthy) if s.state != Ready => {
                        self.transition(id, Ready, None, env)
                    }
                    // Another unhealthy verdict while unhealthy is news
                    // too when it says something else (NOT_SERVING, then
                    // SERVICE_UNKNOWN): the failure picks report follows
                    // it, as gRPC-Go, Java and C-core report every verdict.
                    Some(Verdict::Unhealthy(e))
                        if s.state != TransientFailure
                            || s.last_error.as_deref() != Some(e.as_str()) =>
                    {
                        self.transition(id, TransientFailure, Some(e), env);
                    }
                    _ => {}
                }
            }
            TransportEvent::LoadReport(metrics) if s.sc.is_connected() => {
                let load: Vec<(&str, f64)> =
                    metrics.0.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                for listener in s.oob.report() {
                    listener.on_load_report(&load);
                }
            }
            TransportEvent::LoadReportStreamEnded { code, message } if s.sc.is_connected() => {
                let now = env.clock.now();
                let at = s
                    .oob
                    .ended(code, &message, s.sc.addr(), now, &mut self.logged_no_orca);
                if let Some(at) = at {
                    let key = TimerKey::new(OOB_RETRY_TIMER, id.0);
                    s.oob.retry = Some(env.timers.schedule(at, self.channel, key));
                }
            }
            TransportEvent::Lost(e) | TransportEvent::Failed(e) if s.sc.is_connected() => {
                s.sc.set_connected(false);
                for t in [s.health.stop(), s.oob.connection_ended()]
                    .into_iter()
                    .flatten()
                {
                    env.timers.cancel(t);
                }
                self.resolve_requested = true;
                self.transition(id, ConnectivityState::Idle, Some(e), env);
            }
            TransportEvent::Failed(e) | TransportEvent::Lost(e) if s.state == Connecting => {
                self.fail(id, e, env);
            }
            // Reports that don't fit the state (late, duplicate) change nothing.
            _ => {}
        }
    }

    /// Has the connector check the health of a connected subchannel (first
    /// time, retry, or a new service name). Its state stays as it is until
    /// the first verdict; if the connector cannot check health it is READY
    /// at once.
    fn start_health(&mut self, id: SubConnId, env: &mut LoopContext) {
        let Some(service) = self.health_service.clone() else {
            return;
        };
        let Some(s) = self.map.get_mut(&id).filter(|s| s.sc.is_connected()) else {
            return;
        };
        let now = env.clock.now();
        let rng = &mut env.rng;
        s.health.starting(now, &mut || rng.uniform());
        let sc = s.sc.clone();
        let mut checks = false;
        self.with_connector(env, |c, ctx| checks = c.start_health(&sc, &service, ctx));
        if checks {
            return;
        }
        if !std::mem::replace(&mut self.logged_no_health, true) {
            log::warn!(
                target: trace::HEALTH,
                "channel {}: healthCheckConfig is set but this channel's connector does not \
                 check health: connected subchannels count as healthy",
                self.channel
            );
        }
        let Some(s) = self.map.get_mut(&id).filter(|s| s.sc.is_connected()) else {
            return;
        };
        s.health.unsupported();
        if s.state != ConnectivityState::Ready {
            self.transition(id, ConnectivityState::Ready, None, env);
        }
    }

    /// A timer of one of the kinds above, or a connector's, is due.
    pub(crate) fn timer(&mut self, key: TimerKey, env: &mut LoopContext) {
        let id = SubConnId(key.id);
        match key.kind {
            BACKOFF_TIMER => {
                let Some(s) = self.map.get_mut(&id) else {
                    return;
                };
                s.timer = None;
                if s.state == ConnectivityState::TransientFailure && !s.sc.is_connected() {
                    self.transition(id, ConnectivityState::Idle, None, env);
                }
            }
            HEALTH_RETRY_TIMER => {
                let Some(s) = self.map.get_mut(&id) else {
                    return;
                };
                s.health.retry = None;
                if s.sc.is_connected() && s.health.is_retrying() {
                    // CONNECTING while the stream is opened again, as
                    // gRPC-Go's health client says before every attempt.
                    if s.state != ConnectivityState::Connecting {
                        self.transition(id, ConnectivityState::Connecting, None, env);
                    }
                    self.start_health(id, env);
                }
            }
            OOB_RETRY_TIMER => {
                let Some(s) = self.map.get_mut(&id) else {
                    return;
                };
                if let Some(period) = s.oob.retry_due() {
                    if s.sc.is_connected() {
                        self.start_oob(id, period, env);
                    }
                }
            }
            CONNECT_DEADLINE_TIMER => {
                let Some(s) = self.map.get_mut(&id) else {
                    return;
                };
                s.timer = None;
                if s.state == ConnectivityState::Connecting && !s.sc.is_connected() {
                    let sc = s.sc.clone();
                    self.with_connector(env, |c, ctx| c.cancel(&sc, ctx));
                    self.fail(id, TIMED_OUT.into(), env);
                }
            }
            crate::connector::TIMER_KIND => self.with_connector(env, |c, ctx| c.timer(key.id, ctx)),
            _ => {}
        }
    }

    /// The service config's health-checking setting (`Some(service)`: on,
    /// `None`: off); connected subchannels adopt it at once. Turned on or to
    /// another service, a READY subchannel stays READY until the new check's
    /// first verdict, and one that is not (the old service's verdict was
    /// unhealthy) is CONNECTING until then: the old verdict no longer
    /// stands (grpc-java, C-core's new `HealthChecker`). Turned off, it is
    /// READY.
    pub(crate) fn configure_health(&mut self, service: Option<&str>, env: &mut LoopContext) {
        if self.health_service.as_deref() == service {
            return;
        }
        self.health_service = service.map(str::to_string);
        let connected: Vec<SubConnId> = self
            .map
            .iter()
            .filter(|(_, s)| s.sc.is_connected())
            .map(|(id, _)| *id)
            .collect();
        for id in connected {
            let Some(s) = self.map.get_mut(&id) else {
                continue;
            };
            let running = s.health.is_checking();
            if let Some(t) = s.health.stop() {
                env.timers.cancel(t);
            }
            let sc = s.sc.clone();
            if running {
                self.with_connector(env, |c, ctx| c.stop_health(&sc, ctx));
            }
            if self.health_service.is_some() {
                if self
                    .map
                    .get(&id)
                    .is_some_and(|s| s.state == ConnectivityState::TransientFailure)
                {
                    self.transition(id, ConnectivityState::Connecting, None, env);
                }
                self.start_health(id, env);
            } else if self
                .map
                .get(&id)
                .is_some_and(|s| s.sc.is_connected() && s.state != ConnectivityState::Ready)
            {
                // No more verdicts: usable as it is.
                self.transition(id, ConnectivityState::Ready, None, env);
            }
        }
    }

    /// Registers a policy's out-of-band load report listener on `sc` (see
    /// `ClientConn::register_oob_listener`); a stream starts if it is
    /// connected.
    /// An unknown subchannel (already shut down) gets an id that does nothing.
    pub(crate) fn register_oob(
        &mut self,
        sc: SubConnId,
        period: Duration,
        listener: Arc<dyn LoadReportListener>,
        env: &mut LoopContext,
    ) -> OobListenerId {
        let id = OobListenerId(self.next_oob);
        self.next_oob += 1;
        if let Some(s) = self.map.get_mut(&sc) {
            s.oob.add(id, period, listener);
            self.oob_owners.insert(id, sc);
            self.sync_oob(sc, env);
        }
        id
    }

    /// Ends a registration; the stream stops or slows with it.
    pub(crate) fn unregister_oob(&mut self, id: OobListenerId, env: &mut LoopContext) {
        let Some(sc) = self.oob_owners.remove(&id) else {
            return;
        };
        if let Some(s) = self.map.get_mut(&sc) {
            s.oob.remove(id);
            self.sync_oob(sc, env);
        }
    }

    /// Starts, restarts or stops a subchannel's out-of-band stream to fit
    /// its state and listeners.
    fn sync_oob(&mut self, id: SubConnId, env: &mut LoopContext) {
        let Some(s) = self.map.get_mut(&id) else {
            return;
        };
        // Connected is enough: health does not stop the stream (gRPC-Go's
        // producer runs on the SubConn's transport, whatever its health).
        let connected = s.sc.is_connected();
        let Action::Restart {
            running,
            retry,
            start,
        } = s.oob.sync(connected)
        else {
            return;
        };
        if let Some(t) = retry {
            env.timers.cancel(t);
        }
        let sc = s.sc.clone();
        if running {
            self.with_connector(env, |c, ctx| c.stop_load_reports(&sc, ctx));
        }
        if let Some(period) = start {
            self.start_oob(id, period, env);
        }
    }

    /// Has the connector open an ORCA stream on a READY subchannel's
    /// connection (first time, retry, or a new period).
    fn start_oob(&mut self, id: SubConnId, period: Duration, env: &mut LoopContext) {
        let Some(s) = self.map.get_mut(&id) else {
            return;
        };
        let now = env.clock.now();
        let rng = &mut env.rng;
        s.oob.starting(period, now, &mut || rng.uniform());
        let sc = s.sc.clone();
        let mut opened = false;
        self.with_connector(env, |c, ctx| {
            opened = c.start_load_reports(&sc, period, ctx)
        });
        if opened {
            return;
        }
        if !std::mem::replace(&mut self.logged_no_oob, true) {
            log::warn!(
                target: trace::SUBCHANNEL,
                "channel {}: a policy asks for out-of-band load reports but this channel's \
                 connector cannot open ORCA streams (the host owns the connections): \
                 report load through done instead",
                self.channel
            );
        }
        if let Some(s) = self.map.get_mut(&id) {
            s.oob.unsupported();
        }
    }

    pub(crate) fn io_event(&mut self, key: u64, event: &mio::event::Event, env: &mut LoopContext) {
        self.with_connector(env, |c, ctx| c.io_event(key, event, ctx));
    }

    pub(crate) fn notified(&mut self, key: u64, env: &mut LoopContext) {
        self.with_connector(env, |c, ctx| c.notified(key, ctx));
    }

    /// gRPC's ResetConnectBackoff: every subchannel's backoff starts over,
    /// and one waiting out a backoff (TRANSIENT_FAILURE, not connected)
    /// goes IDLE now, so that its policy may connect it at once.
    pub(crate) fn reset_backoff(&mut self, env: &mut LoopContext) {
        let mut waiting = Vec::new();
        for (id, s) in &mut self.map {
            s.backoff.reset();
            if s.state == ConnectivityState::TransientFailure && !s.sc.is_connected() {
                if let Some(t) = s.timer.take() {
                    env.timers.cancel(t);
                }
                waiting.push(*id);
            }
        }
        for id in waiting {
            self.transition(id, ConnectivityState::Idle, None, env);
        }
    }

    /// CONNECTING → TRANSIENT_FAILURE, then IDLE once the backoff allows the
    /// next attempt (measured from this attempt's start).
    fn fail(&mut self, id: SubConnId, error: String, env: &mut LoopContext) {
        let Some(s) = self.map.get_mut(&id) else {
            return;
        };
        if let Some(t) = s.timer.take() {
            env.timers.cancel(t);
        }
        let now = env.clock.now();
        let at = s.backoff.next_attempt().unwrap_or(now).max(now);
        s.timer = Some(
            env.timers
                .schedule(at, self.channel, TimerKey::new(BACKOFF_TIMER, id.0)),
        );
        self.resolve_requested = true;
        self.transition(id, ConnectivityState::TransientFailure, Some(error), env);
    }

    fn transition(
        &mut self,
        id: SubConnId,
        state: ConnectivityState,
        error: Option<String>,
        env: &mut LoopContext,
    ) {
        if let Some(s) = self.map.get_mut(&id) {
            let reason = error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            log::info!(
                target: trace::SUBCHANNEL,
                "channel {} subchannel {} {}: {} -> {}{}",
                self.channel,
                id.0,
                s.sc.addr(),
                s.state,
                state,
                reason
            );
            s.state = state;
            if error.is_some() {
                s.last_error.clone_from(&error);
            }
        }
        self.pending.push_back(PendingState {
            sc: id,
            state: SubConnState {
                state,
                error: error.map(Into::into),
            },
            observed: true,
        });
        // A connection made starts the out-of-band stream (health aside),
        // one lost stops it.
        self.sync_oob(id, env);
    }

    /// Every subchannel's id and slot (host-pick counts).
    pub(crate) fn slots(&self) -> Vec<HostSlot> {
        self.map
            .values()
            .map(|s| (s.sc.id(), s.sc.slot()))
            .collect()
    }

    /// Every subchannel as a snapshot sees it (counters not filled in).
    pub(crate) fn snapshot(&self) -> Vec<SubchannelSnapshot> {
        self.map
            .values()
            .map(|s| SubchannelSnapshot {
                id: s.sc.id(),
                address: s.sc.addr().to_string(),
                state: s.state,
                last_error: s.last_error.clone(),
                calls_started: 0,
                calls_succeeded: 0,
                calls_failed: 0,
                calls_in_flight: 0,
                last_call: None,
            })
            .collect()
    }

    /// Calls the connector with a context, then applies what it reported.
    fn with_connector(
        &mut self,
        env: &mut LoopContext,
        f: impl FnOnce(&mut dyn Connector, &mut ConnectorCtx<'_>),
    ) {
        let mut events = Vec::new();
        {
            let mut ctx = ConnectorCtx {
                env,
                task: self.channel,
                events: &mut events,
            };
            f(&mut *self.connector, &mut ctx);
        }
        for (id, ev) in events {
            self.transport_event(id, ev, env);
        }
    }
}
