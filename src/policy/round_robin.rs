//! `round_robin`: one pick_first child per address, all kept connected; picks
//! rotate over the READY children. The rotation lives in each reader (starting
//! at a random offset), so the picker itself is never written to.

use super::children::Children;
use super::pick_first::{PickFirst, ZERO_ADDRESSES};
use crate::balancer::{Balancer, Builder, ClientConn, ClientConnState, SubConnState, TimerToken};
use crate::picker::{FailPicker, Listed, PickInfo, PickLocal, PickResult, Picker, QueuePicker};
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

/// Rotates over its entries; each reader keeps its own position.
pub enum RrPicker {
    /// Every entry is a subchannel (the usual case): readers rotate inline.
    /// `keep` owns the subchannels; `list` points into it, so building a new
    /// picker over the same subchannels copies pointers and touches no
    /// reference count, and dropping one frees two allocations.
    Direct {
        keep: Arc<[Arc<SubConn>]>,
        list: Vec<Listed>,
    },
    Mixed(Vec<RrEntry>),
}

impl RrPicker {
    pub fn new(entries: Vec<RrEntry>) -> RrPicker {
        assert!(!entries.is_empty(), "a rotation needs at least one entry");
        if !entries.iter().all(|e| matches!(e, RrEntry::Direct(_))) {
            return RrPicker::Mixed(entries);
        }
        let keep: Arc<[Arc<SubConn>]> = entries
            .into_iter()
            .map(|e| match e {
                RrEntry::Direct(sc) => sc,
                RrEntry::Child(_) => unreachable!("checked above"),
            })
            .collect();
        let list = (0..keep.len()).collect::<Vec<_>>();
        RrPicker::listed(keep, &list)
    }

    /// A rotation over `keep[i]` for each `i` in `indices` (non-empty).
    fn listed(keep: Arc<[Arc<SubConn>]>, indices: &[usize]) -> RrPicker {
        // SAFETY: every entry points into `keep`, which the picker owns.
        let list = indices
            .iter()
            .map(|i| unsafe { Listed::new(&keep[*i]) })
            .collect();
        RrPicker::Direct { keep, list }
    }
}

impl Picker for RrPicker {
    #[inline]
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        match self {
            RrPicker::Direct { list, .. } => {
                let listed = list[local.next_index(list.len())];
                PickResult::Complete {
                    // SAFETY: `listed` points into `keep`, alive as long as `self`.
                    subconn: unsafe { listed.ptr().as_ref() },
                    done: None,
                }
            }
            RrPicker::Mixed(entries) => match &entries[local.next_index(entries.len())] {
                RrEntry::Direct(sc) => PickResult::Complete {
                    subconn: sc,
                    done: None,
                },
                RrEntry::Child(p) => p.pick(info, local),
            },
        }
    }

    fn rotation(&self) -> Option<&[Listed]> {
        match self {
            RrPicker::Direct { list, .. } => Some(list),
            RrPicker::Mixed(_) => None,
        }
    }
}

/// Every child's subchannels in one shared allocation, rebuilt only when the
/// children's subchannels change (not when they merely flip READY).
struct Keep {
    version: u64,
    all: Arc<[Arc<SubConn>]>,
    /// Where each child's subchannels start in `all`, in children order.
    base: Vec<usize>,
}

#[derive(Default)]
pub struct RoundRobin {
    children: Children,
    reported: Option<ConnectivityState>,
    /// Identities of the READY entries the last published picker rotates over.
    published_ready: Vec<usize>,
    keep: Option<Keep>,
}

impl RoundRobin {
    /// After a child changed: reconnect it if it went IDLE, then republish if
    /// what picks select from changed.
    fn child_changed(&mut self, cc: &mut dyn ClientConn, key: &str) {
        let state = self.children.get(key).map(|c| c.state);
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

    fn keep(&mut self) -> &Keep {
        let version = self.children.version;
        if self.keep.as_ref().is_none_or(|k| k.version != version) {
            let mut all = Vec::new();
            let mut base = Vec::new();
            for c in self.children.iter() {
                base.push(all.len());
                all.extend(c.subconns.iter().cloned());
            }
            self.keep = Some(Keep {
                version,
                all: all.into(),
                base,
            });
        }
        self.keep.as_ref().expect("just built")
    }

    /// Aggregates: any READY → READY over the READY children; any CONNECTING or
    /// IDLE → CONNECTING (queue); else TRANSIENT_FAILURE, failing with the
    /// children's own errors in rotation.
    ///
    /// O(children) pointer work on every child change, no reference counts:
    /// one walk counts states and finds each READY child's subchannel in the
    /// shared `Keep`; a picker is built only if that list changed.
    fn regenerate(&mut self, cc: &mut dyn ClientConn) {
        self.keep();
        let keep = self.keep.as_ref().expect("built above");
        let mut counts = StateCounts::default();
        let mut ready: Vec<usize> = Vec::with_capacity(self.published_ready.len() + 1);
        let mut mixed = false;
        for (i, c) in self.children.iter().enumerate() {
            counts.add(c.state);
            if c.state != ConnectivityState::Ready {
                continue;
            }
            let found = c.picker.single().and_then(|sc| {
                let base = keep.base[i];
                (base..base + c.subconns.len()).find(|j| Arc::ptr_eq(&keep.all[*j], sc))
            });
            match found {
                Some(j) => ready.push(j),
                None => mixed = true,
            }
        }
        let (state, picker): (ConnectivityState, Box<dyn Picker>) = if self.children.is_empty() {
            (
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(NO_CHILDREN)),
            )
        } else if counts.ready > 0 {
            if mixed {
                // A child whose picker is more than one subchannel: delegate.
                let entries = self
                    .children
                    .iter()
                    .filter(|c| c.state == ConnectivityState::Ready)
                    .map(|c| RrEntry::of(&c.picker))
                    .collect();
                self.published_ready.clear();
                (ConnectivityState::Ready, Box::new(RrPicker::new(entries)))
            } else {
                let ids = ready.iter().map(|j| Arc::as_ptr(&keep.all[*j]) as usize);
                if self.reported == Some(ConnectivityState::Ready)
                    && ids.clone().eq(self.published_ready.iter().copied())
                {
                    return;
                }
                self.published_ready.clear();
                self.published_ready.extend(ids);
                (
                    ConnectivityState::Ready,
                    Box::new(RrPicker::listed(keep.all.clone(), &ready)),
                )
            }
        } else if counts.connecting > 0 || counts.idle > 0 {
            if self.reported == Some(ConnectivityState::Connecting) {
                return;
            }
            (ConnectivityState::Connecting, Box::new(QueuePicker))
        } else {
            let failing: Vec<RrEntry> = self
                .children
                .iter()
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
        if self.children.is_empty() {
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
        for key in self.children.keys() {
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
