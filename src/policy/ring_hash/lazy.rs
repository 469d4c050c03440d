//! A pick_first that waits to be asked (gRPC-Go's `lazy` balancer): ring_hash
//! connects an endpoint only when a pick lands on it or its recovery rule
//! says so, never all of them at once. Until then the child reports IDLE
//! with a picker that asks for `work` (which leaves IDLE) on its first pick.

use crate::balancer::picker::IdlePicker;
use crate::balancer::subconn::SubConnId;
use crate::balancer::{Balancer, Builder, ClientConn, ClientConnState, SubConnState, TimerToken};
use crate::connectivity::ConnectivityState;
use crate::policy::pick_first::PickFirstBuilder;

/// Builds [`LazyPickFirst`] children (not registered: ring_hash's own).
pub(crate) struct LazyPickFirstBuilder;

impl Builder for LazyPickFirstBuilder {
    fn name(&self) -> &str {
        "lazy_pick_first"
    }

    fn build(&self) -> Box<dyn Balancer> {
        Box::new(LazyPickFirst::default())
    }
}

/// IDLE until `exit_idle`; then a pick_first given the latest update.
#[derive(Default)]
pub(crate) struct LazyPickFirst {
    /// The pick_first, once asked to connect.
    inner: Option<Box<dyn Balancer>>,
    /// The latest update, kept for the pick_first until then.
    latest: Option<ClientConnState>,
    /// IDLE was published.
    idle_published: bool,
}

impl Balancer for LazyPickFirst {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        if let Some(inner) = &mut self.inner {
            return inner.update_client_conn_state(cc, state);
        }
        self.latest = Some(state);
        if !self.idle_published {
            self.idle_published = true;
            let work = cc.work_scheduler();
            cc.update_state(ConnectivityState::Idle, Box::new(IdlePicker::new(work)));
        }
        Ok(())
    }

    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        // Not started: nothing to fail, it stays IDLE with its endpoint.
        if let Some(inner) = &mut self.inner {
            inner.resolver_error(cc, error);
        }
    }

    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        if let Some(inner) = &mut self.inner {
            inner.update_subconn_state(cc, sc, state);
        }
    }

    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        match &mut self.inner {
            Some(inner) => inner.exit_idle(cc),
            None => {
                let mut inner = PickFirstBuilder.build();
                if let Some(state) = self.latest.take() {
                    // An endpoint always has an address (ChildManager).
                    let _ = inner.update_client_conn_state(cc, state);
                }
                self.inner = Some(inner);
            }
        }
    }

    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        if let Some(inner) = &mut self.inner {
            inner.timer(cc, token);
        }
    }

    fn close(&mut self, cc: &mut dyn ClientConn) {
        if let Some(inner) = &mut self.inner {
            inner.close(cc);
        }
    }
}
