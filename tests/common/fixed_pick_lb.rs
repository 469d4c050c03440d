//! A test policy that, on its first resolver update, publishes one state
//! with a picker that fails (or drops) every pick with one status and
//! counts the picks: for the retry tests of a failed or dropped pick.
//! Included with `#[path = "common/fixed_pick_lb.rs"] mod fixed_pick_lb;`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use switchyard::*;

/// What the picker answers every pick with.
#[derive(Clone, Copy)]
pub enum Verdict {
    /// `PickResult::Fail`: a failure (retryable, queued if wait-for-ready).
    Fail,
    /// `PickResult::Drop`: a drop (never retried).
    Drop,
}

#[derive(Clone)]
struct Spec {
    name: &'static str,
    state: ConnectivityState,
    verdict: Verdict,
    status: Status,
    picks: Arc<AtomicUsize>,
}

struct FixedBuilder(Spec);
struct FixedBalancer(Spec);
struct FixedPicker(Spec);

/// Registers the policy `name` (publishing `state` and a picker answering
/// `verdict` with `status`); returns its count of picks.
pub fn register(
    name: &'static str,
    state: ConnectivityState,
    verdict: Verdict,
    status: Status,
) -> Arc<AtomicUsize> {
    let picks = Arc::new(AtomicUsize::new(0));
    registry::register(Arc::new(FixedBuilder(Spec {
        name,
        state,
        verdict,
        status,
        picks: picks.clone(),
    })));
    picks
}

impl Builder for FixedBuilder {
    fn name(&self) -> &str {
        self.0.name
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(FixedBalancer(self.0.clone()))
    }
}

impl Balancer for FixedBalancer {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        _: ClientConnState,
    ) -> Result<(), String> {
        cc.update_state(self.0.state, Box::new(FixedPicker(self.0.clone())));
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

impl Picker for FixedPicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        self.0.picks.fetch_add(1, Ordering::SeqCst);
        match self.0.verdict {
            Verdict::Fail => PickResult::Fail(&self.0.status),
            Verdict::Drop => PickResult::Drop(&self.0.status),
        }
    }
}
