//! How subchannels get connections. The loop owns the subchannel state machine
//! (backoff, deadlines, states, health verdicts); a `Connector` only makes and
//! breaks transports, runs a health check on one when the subchannel asks
//! (`Connector::start_health`, if it can), and reports what happened. All
//! methods run on the loop thread.
//!
//! Two kinds plug in here: the **external** connector, where the host stack owns
//! its transports and reports their states back (`Channel::report_subconn_state`,
//! and `Channel::report_subconn_health` when it checks health), and managed
//! connectors that register sockets with the loop's `mio::Poll` through
//! `ConnectorCtx` and drive them on I/O events, timers and wake-ups.

pub mod external;
pub mod managed;

pub use external::{ExternalConnector, HostTransport};

use crate::balancer::subconn::{SubConn, SubConnId};
use crate::runtime::{LoopContext, LoopHandle, TaskId, TimerKey};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a transport did. Connectivity (`Ready`, `Failed`, `Lost`) and health
/// (the rest) are reported apart: the subchannel combines them
/// (`crate::subchannel`'s health machine, gRFC A17).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// The connection is fully up (for HTTP/2: the server's SETTINGS arrived).
    /// With health checking on, the subchannel then asks the connector to
    /// check health (`Connector::start_health`) and stays CONNECTING until
    /// the first verdict.
    Ready,
    /// The attempt failed before READY.
    Failed(String),
    /// An established connection ended (error, EOF, GOAWAY drained).
    Lost(String),
    /// The health check on the connected transport says it is serving (a
    /// host's verdict: `Channel::report_subconn_health`).
    Healthy,
    /// The health check on the connected transport says it is not serving,
    /// with why: TRANSIENT_FAILURE, the connection kept open. Only `Lost`
    /// ends the connection.
    Unhealthy(String),
    /// The health stream (`grpc.health.v1.Health/Watch`) delivered this
    /// `ServingStatus` (`transport::health_proto`): SERVING is healthy,
    /// anything else is not.
    HealthStatus(u32),
    /// The health stream ended with this gRPC status. UNIMPLEMENTED means
    /// the server has no health service: healthy, never retried. Anything
    /// else is ill health, and the subchannel asks for a new stream after
    /// its backoff (`Connector::start_health` again).
    HealthStreamEnded {
        /// The gRPC status code the stream ended with.
        code: u32,
        /// Its message.
        message: String,
    },
    /// The out-of-band ORCA stream (`Connector::start_load_reports`)
    /// delivered a report, as named metrics: the subchannel hands it to
    /// its listeners.
    LoadReport(LoadMetrics),
    /// The out-of-band ORCA stream ended with this gRPC status.
    /// UNIMPLEMENTED means the server has no ORCA service: not retried on
    /// this connection. Anything else: the subchannel asks for a new
    /// stream after its backoff.
    LoadReportStreamEnded {
        /// The gRPC status code the stream ended with.
        code: u32,
        /// Its message.
        message: String,
    },
}

/// One load report's named metrics (`TransportEvent::LoadReport`). Equal
/// when every name and value is bit for bit the same.
#[derive(Clone, Debug, Default)]
pub struct LoadMetrics(pub Vec<(String, f64)>);

impl PartialEq for LoadMetrics {
    fn eq(&self, other: &LoadMetrics) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|((a, x), (b, y))| a == b && x.to_bits() == y.to_bits())
    }
}

impl Eq for LoadMetrics {}

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

    /// Client-side health checking (gRFC A17) is on and `sc`'s transport is
    /// up: check the health of `service` ("" = the whole server) on it and
    /// report what the check finds (`Healthy` / `Unhealthy`, or a health
    /// stream's raw `HealthStatus` / `HealthStreamEnded`). The subchannel
    /// stays CONNECTING until the first report. Called again when the
    /// subchannel retries an ended health stream, and after `stop_health`
    /// when the service name changes. Returns whether this connector checks
    /// health at all: `false` (the default) and the subchannel counts every
    /// connected transport as healthy.
    fn start_health(
        &mut self,
        _sc: &Arc<SubConn>,
        _service: &str,
        _ctx: &mut ConnectorCtx<'_>,
    ) -> bool {
        false
    }

    /// Stop the health check `start_health` started on `sc`'s transport
    /// (health checking was turned off, or the service name changed). Not
    /// called when the transport ends or the subchannel shuts down: the
    /// check goes with its transport.
    fn stop_health(&mut self, _sc: &Arc<SubConn>, _ctx: &mut ConnectorCtx<'_>) {}

    /// Out-of-band load reports (gRFC A51) are wanted for `sc`, which is
    /// READY: open an ORCA `StreamCoreMetrics` stream on its connection
    /// asking for a report every `period`, and report what it delivers
    /// (`LoadReport`, `LoadReportStreamEnded`). Called again to retry an
    /// ended stream, and after `stop_load_reports` when the period
    /// changes. Returns whether this connector can open such streams at
    /// all: `false` (the default, a host's transports) and no report ever
    /// comes.
    fn start_load_reports(
        &mut self,
        _sc: &Arc<SubConn>,
        _period: Duration,
        _ctx: &mut ConnectorCtx<'_>,
    ) -> bool {
        false
    }

    /// Close the stream `start_load_reports` opened on `sc`'s connection
    /// (the subchannel left READY, no listener is left, or the period
    /// changed). Not called when the transport ends or the subchannel
    /// shuts down: the stream goes with its transport.
    fn stop_load_reports(&mut self, _sc: &Arc<SubConn>, _ctx: &mut ConnectorCtx<'_>) {}

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
