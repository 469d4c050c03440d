//! How subchannels get connections. The loop owns the subchannel state machine
//! (backoff, deadlines, states); a `Connector` only makes and breaks transports
//! and reports what happened. All methods run on the loop thread.
//!
//! Two kinds plug in here: the **external** connector, where the host stack owns
//! its transports and reports their states back (`Channel::report_subconn_state`),
//! and managed connectors that register sockets with the loop's `mio::Poll`
//! through `ConnectorCtx` and drive them on I/O events, timers and wake-ups.

pub mod external;
pub mod managed;

pub use external::{ExternalConnector, HostTransport};

use crate::balancer::subconn::{SubConn, SubConnId};
use crate::runtime::{LoopContext, LoopHandle, TaskId, TimerKey};
use std::sync::Arc;
use std::time::Instant;

/// What a transport did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// The connection is fully up (for HTTP/2: the server's SETTINGS arrived).
    Ready,
    /// The attempt failed before READY.
    Failed(String),
    /// An established connection ended (error, EOF, GOAWAY drained).
    Lost(String),
    /// Instead of `Ready` when health checking is on: the connection is up but
    /// no health status has arrived yet. The subchannel stops its connect
    /// deadline and resets its backoff, yet stays CONNECTING to the policy
    /// until `Healthy` or `Unhealthy` (gRFC A17: the first status gates READY).
    HealthPending,
    /// The connected transport's backend reports SERVING (or health checking
    /// ended without a verdict that counts, e.g. UNIMPLEMENTED, or was turned
    /// off): the subchannel is READY.
    Healthy,
    /// The connected transport's backend is not serving (or its health stream
    /// broke and is being retried): TRANSIENT_FAILURE with this message, with
    /// the connection kept open. Only `Lost` ends the connection.
    Unhealthy(String),
}

/// The kind of the timers connectors arm (`ConnectorCtx::schedule_timer`).
pub(crate) const TIMER_KIND: u8 = 1;

/// The loop's services, lent to a connector during each call.
pub struct ConnectorCtx<'a> {
    pub(crate) env: &'a mut LoopContext,
    /// The channel (loop task) the connector belongs to.
    pub(crate) task: TaskId,
    pub(crate) events: &'a mut Vec<(SubConnId, TransportEvent)>,
}

impl ConnectorCtx<'_> {
    /// Reports a transport event; the loop applies it after the call returns.
    pub fn report(&mut self, sc: SubConnId, event: TransportEvent) {
        self.events.push((sc, event));
    }

    /// The loop's mio registry, to register sockets under a `token`.
    pub fn registry(&self) -> &mio::Registry {
        &self.env.registry
    }

    /// A token whose I/O events are routed to `Connector::io_event(key, ..)`.
    pub fn token(&mut self, key: u64) -> mio::Token {
        self.env.alloc_token(self.task, key)
    }

    /// Returns a token from `token` once its socket is deregistered.
    pub fn release_token(&mut self, token: mio::Token) {
        self.env.tokens.remove(&token);
    }

    /// Calls `Connector::timer(key, ..)` at `at`. Returns an id for `cancel_timer`.
    pub fn schedule_timer(&mut self, at: Instant, key: u64) -> u64 {
        self.env
            .timers
            .schedule(at, self.task, TimerKey::new(TIMER_KIND, key))
    }

    /// Disarms a timer from `schedule_timer` (no-op if it already fired).
    pub fn cancel_timer(&mut self, id: u64) {
        self.env.timers.cancel(id);
    }

    /// A handle any thread can use to have `Connector::notified(key, ..)` called.
    pub fn notifier(&self, key: u64) -> Notifier {
        Notifier {
            handle: self.env.handle.clone(),
            task: self.task,
            key,
        }
    }

    /// The loop's clock (`RuntimeConfig::clock`).
    pub fn now(&self) -> Instant {
        self.env.clock.now()
    }

    /// A uniform random number in [0, 1), for backoff jitter.
    pub fn uniform(&mut self) -> f64 {
        self.env.rng.uniform()
    }
}

/// Wakes the loop to call `Connector::notified` (usable as a task waker).
#[derive(Clone)]
pub struct Notifier {
    handle: LoopHandle,
    task: TaskId,
    key: u64,
}

impl Notifier {
    /// Schedules `Connector::notified(key, ..)` on the loop. Any thread;
    /// never blocks.
    pub fn notify(&self) {
        self.handle.notify(self.task, self.key);
    }
}

impl std::task::Wake for Notifier {
    fn wake(self: Arc<Self>) {
        self.notify();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.notify();
    }
}

/// Makes and breaks transports for one channel's subchannels.
pub trait Connector: Send {
    /// Start connecting `sc`; report `Ready` or `Failed` (now or later).
    fn connect(&mut self, sc: &Arc<SubConn>, deadline: Instant, ctx: &mut ConnectorCtx<'_>);

    /// The subchannel is gone: close everything it had. Connections with
    /// calls in flight may drain first (the managed connector's do).
    fn shutdown(&mut self, sc: &Arc<SubConn>, ctx: &mut ConnectorCtx<'_>);

    /// Every subchannel was just shut down (the channel is closing, or its
    /// policy was replaced): close whatever is still draining, at once.
    fn close_all(&mut self, _ctx: &mut ConnectorCtx<'_>) {}

    /// The attempt ran past its deadline: abort it (the loop reports the failure).
    fn cancel(&mut self, sc: &Arc<SubConn>, ctx: &mut ConnectorCtx<'_>) {
        self.shutdown(sc, ctx);
    }

    /// A new subchannel exists (IDLE).
    fn created(&mut self, _sc: &Arc<SubConn>, _ctx: &mut ConnectorCtx<'_>) {}

    /// The channel's service config changed client-side health checking:
    /// `Some(service)` = watch `grpc.health.v1.Health` for `service` ("" = the
    /// whole server) on every connection and report `HealthPending` instead of
    /// `Ready`, then `Healthy`/`Unhealthy`; `None` = off. Called before the
    /// first subchannel exists and again on every config change (connections
    /// already up adopt the new setting). Connectors that cannot check health
    /// ignore it and keep reporting plain `Ready`.
    fn configure_health(&mut self, _service: Option<&str>, _ctx: &mut ConnectorCtx<'_>) {}

    /// Whether the loop should enforce connect deadlines (false when the host does).
    fn enforces_deadline(&self) -> bool {
        true
    }

    /// A socket registered under `ConnectorCtx::token(key)` is ready.
    fn io_event(&mut self, _key: u64, _event: &mio::event::Event, _ctx: &mut ConnectorCtx<'_>) {}
    /// A timer from `ConnectorCtx::schedule_timer(.., key)` fired.
    fn timer(&mut self, _key: u64, _ctx: &mut ConnectorCtx<'_>) {}
    /// A `Notifier` for `key` fired.
    fn notified(&mut self, _key: u64, _ctx: &mut ConnectorCtx<'_>) {}
}
