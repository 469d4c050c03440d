//! `round_robin`: one pick_first child per address, all kept connected; picks
//! rotate over the READY children. The rotation lives in each reader (starting
//! at a random offset), so the picker itself is never written to.

use super::children::Children;
use super::pick_first::{PickFirst, ZERO_ADDRESSES};
use crate::balancer::{Balancer, Builder, ClientConn, ClientConnState, SubConnState, TimerToken};
use crate::picker::{FailPicker, PickInfo, PickLocal, PickResult, Picker, QueuePicker};
use crate::state::{ConnectivityState, StateCounts, NO_CHILDREN};
use crate::subconn::{SubConn, SubConnId};
use std::sync::Arc;

pub struct RoundRobinBuilder;

impl Builder for RoundRobinBuilder {
    fn name(&self) -> &str {
        "round_robin"
    }

    fn build(&self) -> Box<dyn Balancer> {
        Box::new(RoundRobin::default())
    }
}

/// One pickable child: its subchannel when the child's picker is that simple
/// (always, for pick_first children), else the child's picker.
#[derive(Clone)]
pub enum RrEntry {
    Direct(Arc<SubConn>),
    Child(Arc<dyn Picker>),
}

impl RrEntry {
    pub fn of(picker: &Arc<dyn Picker>) -> RrEntry {
        match picker.single() {
            Some(sc) => RrEntry::Direct(sc.clone()),
            None => RrEntry::Child(picker.clone()),
        }
    }
}

/// An `RrEntry` not yet cloned: what `regenerate` compares before deciding to
/// publish (no reference count touched).
enum RrRef<'a> {
    Direct(&'a Arc<SubConn>),
    Child(&'a Arc<dyn Picker>),
}

impl RrRef<'_> {
    fn identity(&self) -> usize {
        match self {
            RrRef::Direct(sc) => Arc::as_ptr(sc) as usize,
            RrRef::Child(p) => Arc::as_ptr(p) as *const u8 as usize,
        }
    }

    fn to_entry(&self) -> RrEntry {
        match self {
            RrRef::Direct(sc) => RrEntry::Direct(Arc::clone(sc)),
            RrRef::Child(p) => RrEntry::Child(Arc::clone(p)),
        }
    }
}

/// Rotates over its entries; each reader keeps its own position.
pub enum RrPicker {
    /// Every entry is a subchannel (the usual case): readers rotate inline.
    Direct(Vec<Arc<SubConn>>),
    Mixed(Vec<RrEntry>),
}

impl RrPicker {
    pub fn new(entries: Vec<RrEntry>) -> RrPicker {
        assert!(!entries.is_empty(), "a rotation needs at least one entry");
        if entries.iter().all(|e| matches!(e, RrEntry::Direct(_))) {
            let direct = entries
                .into_iter()
                .map(|e| match e {
                    RrEntry::Direct(sc) => sc,
                    RrEntry::Child(_) => unreachable!("checked above"),
                })
                .collect();
            RrPicker::Direct(direct)
        } else {
            RrPicker::Mixed(entries)
        }
    }
}

impl Picker for RrPicker {
    #[inline]
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        match self {
            RrPicker::Direct(list) => PickResult::Complete {
                subconn: &list[local.next_index(list.len())],
                done: None,
            },
            RrPicker::Mixed(entries) => match &entries[local.next_index(entries.len())] {
                RrEntry::Direct(sc) => PickResult::Complete {
                    subconn: sc,
                    done: None,
                },
                RrEntry::Child(p) => p.pick(info, local),
            },
        }
    }

    fn rotation(&self) -> Option<&[Arc<SubConn>]> {
        match self {
            RrPicker::Direct(list) => Some(list),
            RrPicker::Mixed(_) => None,
        }
    }
}

#[derive(Default)]
pub struct RoundRobin {
    children: Children,
    reported: Option<ConnectivityState>,
    /// Identities of the READY entries the last published picker rotates over.
    published_ready: Vec<usize>,
}

impl RoundRobin {
    /// After a child changed: reconnect it if it went IDLE, then republish if
    /// what picks select from changed.
    fn child_changed(&mut self, cc: &mut dyn ClientConn, key: &str) {
        let state = self.children.map.get(key).map(|c| c.state);
        if matches!(
            state,
            Some(ConnectivityState::Idle | ConnectivityState::TransientFailure)
        ) {
            cc.resolve_now();
        }
        if state == Some(ConnectivityState::Idle) {
            self.children.exit_idle(cc, key);
        }
        self.regenerate(cc);
    }

    /// Aggregates: any READY → READY over the READY children; any CONNECTING or
    /// IDLE → CONNECTING (queue); else TRANSIENT_FAILURE, failing with the
    /// children's own errors in rotation.
    ///
    /// O(children), called on every child change: one walk over the children
    /// counts states and lists the READY ones by reference; only if their
    /// identities changed are the entries cloned (from that list, not from
    /// another walk) into a new picker.
    fn regenerate(&mut self, cc: &mut dyn ClientConn) {
        let mut counts = StateCounts::default();
        let mut ready: Vec<(usize, RrRef<'_>)> = Vec::with_capacity(self.published_ready.len() + 1);
        for c in self.children.map.values() {
            counts.add(c.state);
            if c.state == ConnectivityState::Ready {
                let r = match c.picker.single() {
                    Some(sc) => RrRef::Direct(sc),
                    None => RrRef::Child(&c.picker),
                };
                ready.push((r.identity(), r));
            }
        }
        let (state, picker): (ConnectivityState, Box<dyn Picker>) = if self.children.map.is_empty()
        {
            (
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(NO_CHILDREN)),
            )
        } else if counts.ready > 0 {
            if self.reported == Some(ConnectivityState::Ready)
                && ready
                    .iter()
                    .map(|r| r.0)
                    .eq(self.published_ready.iter().copied())
            {
                return;
            }
            self.published_ready.clear();
            self.published_ready.extend(ready.iter().map(|r| r.0));
            let entries = ready.iter().map(|(_, r)| r.to_entry()).collect();
            (ConnectivityState::Ready, Box::new(RrPicker::new(entries)))
        } else if counts.connecting > 0 || counts.idle > 0 {
            if self.reported == Some(ConnectivityState::Connecting) {
                return;
            }
            (ConnectivityState::Connecting, Box::new(QueuePicker))
        } else {
            let failing: Vec<RrEntry> = self
                .children
                .map
                .values()
                .map(|c| RrEntry::Child(c.picker.clone()))
                .collect();
            (
                ConnectivityState::TransientFailure,
                Box::new(RrPicker::new(failing)),
            )
        };
        if state != ConnectivityState::Ready {
            self.published_ready.clear();
        }
        self.reported = Some(state);
        cc.update_state(state, picker);
    }
}

impl Balancer for RoundRobin {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        if state.addresses.is_empty() {
            self.children.close(cc);
            self.reported = Some(ConnectivityState::TransientFailure);
            self.published_ready.clear();
            cc.update_state(
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(ZERO_ADDRESSES)),
            );
            return Err(ZERO_ADDRESSES.into());
        }
        self.children
            .update(cc, &state.addresses, &|| Box::new(PickFirst::default()));
        self.regenerate(cc);
        Ok(())
    }

    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.children.resolver_error(cc, error);
        if self.children.map.is_empty() {
            self.reported = Some(ConnectivityState::TransientFailure);
            cc.update_state(
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(format!(
                    "name resolver error: {error}"
                ))),
            );
        } else {
            self.regenerate(cc);
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
        let keys: Vec<String> = self.children.map.keys().cloned().collect();
        for key in keys {
            self.children.exit_idle(cc, &key);
        }
        self.regenerate(cc);
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
