//! The subchannel state machine, on the loop: IDLE → CONNECTING → READY or
//! TRANSIENT_FAILURE → (backoff) → IDLE …, READY → IDLE on loss, SHUTDOWN final.
//! Every transition is queued for the policy, which sees them one at a time.
//!
//! With client-side health checking (gRFC A17) the connector reports
//! `HealthPending` instead of `Ready`: the subchannel is then *connected* (no
//! deadline, backoff reset) but stays CONNECTING until the first health status.
//! While connected, `Healthy` / `Unhealthy` move it between READY and
//! TRANSIENT_FAILURE without touching the connection or arming a backoff;
//! losing the connection is IDLE, from either.

use crate::address::Address;
use crate::backoff::{Backoff, BackoffConfig};
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::balancer::SubConnState;
use crate::connectivity::ConnectivityState;
use crate::connector::{Connector, ConnectorCtx, TransportEvent};
use crate::runtime::{LoopContext, TaskId, TimerKey};
use crate::snapshot::SubchannelSnapshot;
use crate::trace;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

const TIMED_OUT: &str = "connection attempt timed out";

/// The kinds of the timers subchannels arm (see `crate::runtime::TimerKey`).
pub(crate) const BACKOFF_TIMER: u8 = 2;
pub(crate) const CONNECT_DEADLINE_TIMER: u8 = 3;

struct Subchannel {
    sc: Arc<SubConn>,
    state: ConnectivityState,
    backoff: Backoff,
    /// The backoff or connect-deadline timer, whichever is armed.
    timer: Option<u64>,
    /// The transport is up (READY or health pending); the state the policy
    /// sees may still be CONNECTING or TRANSIENT_FAILURE (health).
    connected: bool,
    /// The latest error (for snapshots; kept after recovery).
    last_error: Option<String>,
}

/// One channel's subchannels, their connector, and the transitions not yet
/// delivered to the policy.
pub(crate) struct SubchannelPool {
    channel: TaskId,
    map: BTreeMap<SubConnId, Subchannel>,
    connector: Box<dyn Connector>,
    backoff: BackoffConfig,
    next_id: u64,
    pub(crate) pending: VecDeque<(SubConnId, SubConnState)>,
    /// A connection failed or was lost: the resolver should look again.
    pub(crate) resolve_requested: bool,
}

impl SubchannelPool {
    pub(crate) fn new(
        channel: TaskId,
        connector: Box<dyn Connector>,
        backoff: BackoffConfig,
    ) -> Self {
        SubchannelPool {
            channel,
            map: BTreeMap::new(),
            connector,
            backoff,
            next_id: 1,
            pending: VecDeque::new(),
            resolve_requested: false,
        }
    }

    pub(crate) fn create(&mut self, address: Address, env: &mut LoopContext) -> Arc<SubConn> {
        let id = SubConnId(self.next_id);
        self.next_id += 1;
        let sc = Arc::new(SubConn::new(id, address));
        self.map.insert(
            id,
            Subchannel {
                sc: sc.clone(),
                state: ConnectivityState::Idle,
                backoff: Backoff::new(self.backoff),
                timer: None,
                connected: false,
                last_error: None,
            },
        );
        log::debug!(target: trace::SUBCHANNEL, "channel {} subchannel {} created for {}", self.channel, id.0, sc.addr());
        self.with_connector(env, |c, ctx| c.created(&sc, ctx));
        sc
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
        self.transition(id, ConnectivityState::Connecting, None);
        self.with_connector(env, |c, ctx| c.connect(&sc, deadline, ctx));
    }

    pub(crate) fn shutdown(&mut self, id: SubConnId, env: &mut LoopContext) {
        let Some(s) = self.map.remove(&id) else {
            return;
        };
        if let Some(t) = s.timer {
            env.timers.cancel(t);
        }
        self.with_connector(env, |c, ctx| c.shutdown(&s.sc, ctx));
        log::info!(
            target: trace::SUBCHANNEL,
            "channel {} subchannel {} {}: {} -> SHUTDOWN",
            self.channel,
            id.0,
            s.sc.addr(),
            s.state
        );
        self.pending.push_back((
            id,
            SubConnState {
                state: ConnectivityState::Shutdown,
                error: None,
            },
        ));
    }

    pub(crate) fn shutdown_all(&mut self, env: &mut LoopContext) {
        let ids: Vec<SubConnId> = self.map.keys().copied().collect();
        for id in ids {
            self.shutdown(id, env);
        }
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
            TransportEvent::Ready | TransportEvent::HealthPending
                if s.state == Connecting && !s.connected =>
            {
                // The transport is up: the attempt succeeded whatever health
                // says, so the deadline goes and the backoff starts over.
                if let Some(t) = s.timer.take() {
                    env.timers.cancel(t);
                }
                s.backoff.reset();
                s.connected = true;
                if event == TransportEvent::Ready {
                    self.transition(id, Ready, None);
                }
            }
            TransportEvent::Healthy if s.connected && s.state != Ready => {
                self.transition(id, Ready, None);
            }
            TransportEvent::Unhealthy(e) if s.connected && s.state != TransientFailure => {
                self.transition(id, TransientFailure, Some(e));
            }
            TransportEvent::Lost(e) | TransportEvent::Failed(e) if s.connected => {
                s.connected = false;
                self.resolve_requested = true;
                self.transition(id, ConnectivityState::Idle, Some(e));
            }
            TransportEvent::Failed(e) | TransportEvent::Lost(e) if s.state == Connecting => {
                self.fail(id, e, env);
            }
            // Reports that don't fit the state (late, duplicate) change nothing.
            _ => {}
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
                if s.state == ConnectivityState::TransientFailure && !s.connected {
                    self.transition(id, ConnectivityState::Idle, None);
                }
            }
            CONNECT_DEADLINE_TIMER => {
                let Some(s) = self.map.get_mut(&id) else {
                    return;
                };
                s.timer = None;
                if s.state == ConnectivityState::Connecting && !s.connected {
                    let sc = s.sc.clone();
                    self.with_connector(env, |c, ctx| c.cancel(&sc, ctx));
                    self.fail(id, TIMED_OUT.into(), env);
                }
            }
            crate::connector::TIMER_KIND => self.with_connector(env, |c, ctx| c.timer(key.id, ctx)),
            _ => {}
        }
    }

    /// Passes the service config's health-checking setting to the connector.
    pub(crate) fn configure_health(&mut self, service: Option<&str>, env: &mut LoopContext) {
        self.with_connector(env, |c, ctx| c.configure_health(service, ctx));
    }

    pub(crate) fn io_event(&mut self, key: u64, event: &mio::event::Event, env: &mut LoopContext) {
        self.with_connector(env, |c, ctx| c.io_event(key, event, ctx));
    }

    pub(crate) fn notified(&mut self, key: u64, env: &mut LoopContext) {
        self.with_connector(env, |c, ctx| c.notified(key, ctx));
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
        self.transition(id, ConnectivityState::TransientFailure, Some(error));
    }

    fn transition(&mut self, id: SubConnId, state: ConnectivityState, error: Option<String>) {
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
        self.pending.push_back((
            id,
            SubConnState {
                state,
                error: error.map(Into::into),
            },
        ));
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
