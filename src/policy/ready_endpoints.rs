//! The part `least_request` and `random` share: endpoint sharding over
//! pick_first children (one per endpoint, all kept connected, as
//! round_robin and gRPC-Go's endpointsharding do), aggregated as round_robin
//! aggregates, with a picker over the READY endpoints that the policy builds
//! from a dense list ([`ReadyEndpoint`]s) kept up to date one child at a time.
//!
//! A policy plugs in through [`ReadyPicking`]: it is told when the children
//! change (to key its own per-endpoint state, such as in-flight counters) and
//! builds the READY picker. Everything else (children, subchannel states,
//! reconnection, re-resolution, the CONNECTING and TRANSIENT_FAILURE
//! pickers) is here once.

use super::pick_first::{PickFirstBuilder, ZERO_ADDRESSES};
use super::round_robin::{RrEntry, RrPicker};
use crate::balancer::child_manager::{Child, ChildManager};
use crate::balancer::picker::{FailPicker, Picker, QueuePicker};
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::balancer::{
    Balancer, Builder, ClientConn, ClientConnState, LbConfig, SubConnState, TimerToken,
};
use crate::connectivity::{ConnectivityState, StateCounts, NO_CHILDREN};
use std::ptr::NonNull;
use std::sync::Arc;

/// A READY endpoint as a picker lists it: its child's position (in
/// `ChildManager` order, for the policy's per-endpoint state) and its READY
/// subchannel, a plain pointer into the pool the picker keeps alive (see
/// [`ReadyPicking::picker`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadyEndpoint {
    /// The child's position among the children.
    pub(crate) member: usize,
    /// The child's READY subchannel, one of the `keep` pool's.
    pub(crate) subconn: NonNull<SubConn>,
}

/// What a policy over READY endpoints adds to [`ReadyEndpoints`].
pub(crate) trait ReadyPicking {
    /// The policy's parsed config, on every resolver update; true when the
    /// READY picker must be rebuilt because of it.
    fn configure(&mut self, config: Option<&LbConfig>) -> Result<bool, String>;

    /// The children changed (came, went, or renumbered): `children` in
    /// position order, for the policy's per-endpoint state.
    fn members(&mut self, children: &ChildManager);

    /// A picker over `ready` (never empty, in no particular order). Every
    /// entry's subchannel is one of `keep`'s: a picker that keeps `keep`
    /// may dereference them for as long as it lives.
    fn picker(&mut self, keep: &Arc<[Arc<SubConn>]>, ready: &[ReadyEndpoint]) -> Box<dyn Picker>;
}

/// A policy made of pick_first children per endpoint and a `ReadyPicking`.
pub(crate) struct ReadyEndpoints<P> {
    picking: P,
    children: ChildManager,
    /// The `ChildManager::version` the fields below are for.
    version: Option<u64>,
    /// Every child's subchannels at `version`: what pickers keep alive.
    pool: Arc<[Arc<SubConn>]>,
    /// Per child: its last state, and where it is in `ready` if listed.
    states: Vec<ConnectivityState>,
    slots: Vec<Option<usize>>,
    /// The READY children's subchannels, dense (swap-removed).
    ready: Vec<ReadyEndpoint>,
    counts: StateCounts,
    /// The state last published; `None` before the first.
    reported: Option<ConnectivityState>,
    /// `ready` changed since the last READY picker was published.
    stale: bool,
}

impl<P: ReadyPicking> ReadyEndpoints<P> {
    pub(crate) fn new(picking: P) -> ReadyEndpoints<P> {
        ReadyEndpoints {
            picking,
            children: ChildManager::new(),
            version: None,
            pool: Arc::from([]),
            states: Vec::new(),
            slots: Vec::new(),
            ready: Vec::new(),
            counts: StateCounts::default(),
            reported: None,
            stale: true,
        }
    }

    /// The policy's own part.
    #[cfg(test)]
    pub(crate) fn picking(&self) -> &P {
        &self.picking
    }

    /// The child's READY subchannel, if it has one it owns (pick_first's
    /// READY picker is always one subchannel): only those are in `pool`.
    fn ready_subconn(c: &Child) -> Option<NonNull<SubConn>> {
        if c.state() != ConnectivityState::Ready {
            return None;
        }
        let sc = c.picker().single()?;
        c.subconns()
            .iter()
            .any(|own| Arc::ptr_eq(own, sc))
            .then(|| NonNull::from(&**sc))
    }

    /// Lists child `i` (`c`) in `ready` or takes it out.
    fn list(&mut self, i: usize, c: &Child) {
        let now = Self::ready_subconn(c);
        match (self.slots[i], now) {
            (Some(at), Some(sc)) => {
                if self.ready[at].subconn != sc {
                    self.ready[at].subconn = sc;
                    self.stale = true;
                }
            }
            (None, Some(sc)) => {
                self.slots[i] = Some(self.ready.len());
                self.ready.push(ReadyEndpoint {
                    member: i,
                    subconn: sc,
                });
                self.stale = true;
            }
            (Some(at), None) => {
                self.ready.swap_remove(at);
                if let Some(moved) = self.ready.get(at) {
                    self.slots[moved.member] = Some(at);
                }
                self.slots[i] = None;
                self.stale = true;
            }
            (None, None) => {}
        }
    }

    /// Brings the READY list up to date: one child (`changed`, O(1)) when
    /// the children are the same as last time, else all of them.
    fn refresh(&mut self, changed: Option<&str>) {
        let version = self.children.version();
        let one = changed
            .filter(|_| self.version == Some(version))
            .and_then(|key| self.children.position(key));
        if let Some(i) = one {
            let children = std::mem::take(&mut self.children);
            if let Some(c) = children.at(i) {
                self.counts.record(self.states[i], c.state());
                self.states[i] = c.state();
                self.list(i, c);
            }
            self.children = children;
            return;
        }
        let children = std::mem::take(&mut self.children);
        let (before, was_stale) = (self.listed(), self.stale);
        self.version = Some(version);
        self.pool = children
            .iter()
            .flat_map(|c| c.subconns().iter().cloned())
            .collect();
        self.states.clear();
        self.slots = vec![None; children.len()];
        self.ready.clear();
        self.counts = StateCounts::default();
        for (i, c) in children.iter().enumerate() {
            self.states.push(c.state());
            self.counts.add(c.state());
            self.list(i, c);
        }
        self.picking.members(&children);
        self.children = children;
        // Stale only if other subchannels are READY now (the same ones
        // renumbered need no new picker: per-endpoint state follows keys).
        self.stale = was_stale || self.listed() != before;
    }

    /// The READY subchannels, in address order (to compare listings).
    fn listed(&self) -> Vec<NonNull<SubConn>> {
        let mut listed: Vec<_> = self.ready.iter().map(|r| r.subconn).collect();
        listed.sort_unstable();
        listed
    }

    /// After a child changed: reconnect it if it went IDLE (and re-resolve
    /// on IDLE or TRANSIENT_FAILURE, as round_robin does), then republish.
    fn child_changed(&mut self, cc: &mut dyn ClientConn, key: &str) {
        self.children.keep_connected(cc, key);
        self.regenerate(cc, Some(key));
    }

    /// round_robin's aggregation: any READY → READY over the READY
    /// endpoints; else any CONNECTING or IDLE → CONNECTING (queue); else
    /// TRANSIENT_FAILURE, failing with the children's own errors in turn.
    /// A READY picker is built only when the READY list changed.
    fn regenerate(&mut self, cc: &mut dyn ClientConn, changed: Option<&str>) {
        self.refresh(changed);
        let (state, picker): (ConnectivityState, Box<dyn Picker>) = if self.children.is_empty() {
            (
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(NO_CHILDREN)),
            )
        } else if !self.ready.is_empty() {
            if self.reported == Some(ConnectivityState::Ready) && !self.stale {
                return;
            }
            self.stale = false;
            let picker = self.picking.picker(&self.pool, &self.ready);
            (ConnectivityState::Ready, picker)
        } else if self.counts.ready > 0 || self.counts.connecting > 0 || self.counts.idle > 0 {
            // (READY children without a subchannel of their own to list
            // cannot happen with pick_first children; they would queue.)
            if self.reported == Some(ConnectivityState::Connecting) {
                return;
            }
            (ConnectivityState::Connecting, Box::new(QueuePicker))
        } else {
            let failing: Vec<RrEntry> = self
                .children
                .iter()
                .map(|c| RrEntry::Child(c.picker().clone()))
                .collect();
            (
                ConnectivityState::TransientFailure,
                Box::new(RrPicker::new(failing)),
            )
        };
        if state != ConnectivityState::Ready {
            self.stale = true;
        }
        self.reported = Some(state);
        cc.update_state(state, picker);
    }

    fn fail_all(&mut self, cc: &mut dyn ClientConn, message: String) {
        self.reported = Some(ConnectivityState::TransientFailure);
        self.stale = true;
        cc.update_state(
            ConnectivityState::TransientFailure,
            Box::new(FailPicker::unavailable(message)),
        );
    }
}

impl<P: ReadyPicking> Balancer for ReadyEndpoints<P> {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        if self.picking.configure(state.config.as_ref())? {
            self.stale = true;
        }
        if state.addresses.is_empty() {
            self.children.close(cc);
            self.fail_all(cc, ZERO_ADDRESSES.into());
            return Err(ZERO_ADDRESSES.into());
        }
        let pick_first: Arc<dyn Builder> = Arc::new(PickFirstBuilder);
        self.children
            .update_endpoints(cc, &state.endpoints, &pick_first, None);
        self.regenerate(cc, None);
        Ok(())
    }

    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.children.resolver_error(cc, error);
        if self.children.is_empty() {
            self.fail_all(cc, format!("name resolver error: {error}"));
        } else {
            self.regenerate(cc, None);
        }
    }

    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        if let Some(key) = self.children.subconn_state(cc, sc, state) {
            self.child_changed(cc, &key);
        }
    }

    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        for key in self.children.keys() {
            self.children.exit_idle(cc, &key);
        }
        self.regenerate(cc, None);
    }

    fn work(&mut self, cc: &mut dyn ClientConn) {
        for key in self.children.work(cc) {
            self.child_changed(cc, &key);
        }
    }

    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        if let Some(key) = self.children.timer(cc, token) {
            self.child_changed(cc, &key);
        }
    }

    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.children.close(cc);
    }
}
