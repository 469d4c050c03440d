//! The external connector: the host stack owns the transports and reports
//! what they do (`Channel::report_subconn_state`).

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
    fn enforces_deadline(&self) -> bool {
        false
    }
}
