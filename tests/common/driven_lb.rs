//! A test policy the test drives (Java's mock LoadBalancer + helper): the
//! test queues what the policy should do, and the policy does it on the
//! loop, on its resolver updates and in its `work` callback
//! (`WorkScheduler` + `Channel::sync`). What it does is the including
//! suite's [`Driven`]; what it keeps (resolved addresses, the subchannels it
//! made, every subchannel state it heard) is the shared [`Core`].
//!
//! Included with `#[path = "common/driven_lb.rs"] mod driven_lb;`, next to
//! `#[path = "common/mod.rs"] mod common;`, whose `wait_until` it uses.
#![allow(dead_code)]

use crate::common::wait_until;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use switchyard::*;

/// What every driven policy keeps; a [`Driven`] derefs to it.
#[derive(Default)]
pub struct Core {
    pub work: Mutex<Option<WorkScheduler>>,
    pub addrs: Mutex<Vec<Address>>,
    pub subconns: Mutex<Vec<Arc<SubConn>>>,
    /// Every subchannel state the policy heard, in order.
    pub states: Mutex<Vec<(SubConnId, ConnectivityState)>>,
}

impl Core {
    /// Has the policy run its `work` once it has had its first update.
    pub fn schedule(&self) {
        wait_until("the policy's first update", || {
            self.work.lock().unwrap().is_some()
        });
        self.work.lock().unwrap().as_ref().unwrap().schedule_work();
    }
    /// [`Core::schedule`], and returns once the loop has run it.
    pub fn kick(&self, ch: &Channel) {
        self.schedule();
        ch.sync().unwrap();
        ch.sync().unwrap();
    }
    /// The `k`th subchannel the policy made.
    pub fn sc(&self, k: usize) -> Arc<SubConn> {
        self.subconns.lock().unwrap()[k].clone()
    }
    /// The states the policy heard for subchannel `id`, in order.
    pub fn states_of(&self, id: SubConnId) -> Vec<ConnectivityState> {
        self.states
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == id)
            .map(|(_, st)| *st)
            .collect()
    }
    /// Waits until the last state the policy heard for subchannel `k` is `state`.
    pub fn wait_sc_state(&self, k: usize, state: ConnectivityState) {
        let id = self.sc(k).id();
        wait_until(&format!("subchannel {k} {state}"), || {
            self.states_of(id).last() == Some(&state)
        });
    }
}

/// The suite's side of the policy.
pub trait Driven: Deref<Target = Core> + Send + Sync + 'static {
    /// First thing on every resolver update (`first`: the policy's first),
    /// before the addresses are kept.
    fn on_update(&self, _cc: &mut dyn ClientConn, _first: bool) {}
    /// Does what the test queued; on every resolver update and in `work`.
    fn apply(&self, cc: &mut dyn ClientConn);
    fn on_exit_idle(&self) {}
}

/// Registers the policy `name`, driven by `script`.
pub fn register<S: Driven>(name: &'static str, script: S) -> Arc<S> {
    let s = Arc::new(script);
    registry::register(Arc::new(DrivenBuilder(name, s.clone())));
    s
}

/// A service config choosing the policy `name`.
pub fn lb(name: &str) -> String {
    format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]}}"#)
}

struct DrivenBuilder<S>(&'static str, Arc<S>);
struct DrivenLb<S>(Arc<S>);

impl<S: Driven> Builder for DrivenBuilder<S> {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(DrivenLb(self.1.clone()))
    }
}

impl<S: Driven> Balancer for DrivenLb<S> {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let first = self.0.work.lock().unwrap().is_none();
        self.0.on_update(cc, first);
        *self.0.addrs.lock().unwrap() = state.addresses;
        *self.0.work.lock().unwrap() = Some(cc.work_scheduler());
        self.0.apply(cc);
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, id: SubConnId, s: &SubConnState) {
        self.0.states.lock().unwrap().push((id, s.state));
    }
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {
        self.0.on_exit_idle();
    }
    fn work(&mut self, cc: &mut dyn ClientConn) {
        self.0.apply(cc);
    }
    fn close(&mut self, _: &mut dyn ClientConn) {}
}
