//! The external connector: the host stack owns the transports and reports
//! what they do (`Channel::report_subconn_state`) and, when it checks health,
//! what their backends' health is (`Channel::report_subconn_health`).

use super::{Connector, ConnectorCtx};
use crate::balancer::subconn::SubConn;
use std::sync::Arc;
use std::time::Instant;

/// The host stack's side of the external connector. Called on the loop thread;
/// the host later reports the outcome with `Channel::report_subconn_state`.
pub trait HostTransport: Send + Sync {
    /// A new subchannel exists (IDLE); nothing to connect yet.
    fn create(&self, _sc: &Arc<SubConn>) {}
    /// Start connecting to `sc.addr()`; report READY or TRANSIENT_FAILURE
    /// later with `Channel::report_subconn_state(sc.id(), ..)`. Must not
    /// block, and must not call back into the channel synchronously.
    fn connect(&self, sc: &Arc<SubConn>);
    /// The subchannel is gone: close its transport (calls in flight may
    /// finish first).
    fn shutdown(&self, sc: &Arc<SubConn>);
    /// Client-side health checking (gRFC A17) is on — the service config has
    /// `healthCheckConfig` and the policy is not a top-level pick_first — and
    /// `sc`'s transport is up (the host reported READY): check the health of
    /// `service` (`healthCheckConfig.serviceName`; "" = the whole server)
    /// on it, e.g. with a `grpc.health.v1.Health/Watch` stream, and report
    /// every verdict with `Channel::report_subconn_health(sc.id(), serving,
    /// message)`. Until the first one the subchannel stays CONNECTING; then
    /// it is READY while serving and TRANSIENT_FAILURE (the transport kept)
    /// while not. Retrying a broken check is the host's business.
    ///
    /// Returns whether the host checks health: `false` (the default) and
    /// subchannels are READY as soon as they are connected, health checking
    /// or not. Must not block, nor call back into the channel synchronously.
    fn start_health(&self, _sc: &Arc<SubConn>, _service: &str) -> bool {
        false
    }
    /// Stop checking `sc`'s health: health checking was turned off, or its
    /// service name changed (a `start_health` for the new one follows).
    /// Not called when the transport ends or on `shutdown`: stop then too.
    fn stop_health(&self, _sc: &Arc<SubConn>) {}
}

/// Delegates transports to the host (see `HostTransport`).
pub struct ExternalConnector {
    host: Arc<dyn HostTransport>,
}

impl ExternalConnector {
    /// A connector that hands every subchannel's transport to `host`.
    pub fn new(host: Arc<dyn HostTransport>) -> ExternalConnector {
        ExternalConnector { host }
    }
}

impl Connector for ExternalConnector {
    fn created(&mut self, sc: &Arc<SubConn>, _: &mut ConnectorCtx<'_>) {
        self.host.create(sc);
    }
    fn connect(&mut self, sc: &Arc<SubConn>, _: Instant, _: &mut ConnectorCtx<'_>) {
        self.host.connect(sc);
    }
    fn shutdown(&mut self, sc: &Arc<SubConn>, _: &mut ConnectorCtx<'_>) {
        self.host.shutdown(sc);
    }
    fn start_health(&mut self, sc: &Arc<SubConn>, service: &str, _: &mut ConnectorCtx<'_>) -> bool {
        self.host.start_health(sc, service)
    }
    fn stop_health(&mut self, sc: &Arc<SubConn>, _: &mut ConnectorCtx<'_>) {
        self.host.stop_health(sc);
    }
    fn enforces_deadline(&self) -> bool {
        false
    }
}
