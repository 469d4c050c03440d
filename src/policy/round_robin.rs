//! `round_robin`: one pick_first child per address, all kept connected; picks
//! rotate over the READY children. The rotation lives in each reader (starting
//! at a random offset), so the picker itself is never written to.

use super::pick_first::{PickFirstBuilder, ZERO_ADDRESSES};
use crate::balancer::child_manager::{Child, ChildManager};
use crate::balancer::picker::{FailPicker, PickInfo, PickLocal, PickResult, Picker, QueuePicker};
use crate::balancer::rotation::{Chunk, Rotation, RotationEntry};
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::balancer::{Balancer, Builder, ClientConn, ClientConnState, SubConnState, TimerToken};
use crate::connectivity::{ConnectivityState, StateCounts, NO_CHILDREN};
use std::ptr::NonNull;
use std::sync::Arc;

/// Builds `round_robin` balancers (registered under that name): a
/// pick_first child per address, calls rotated over the READY ones.
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
#[doc(hidden)] // public for benches/pick.rs only
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

/// Entries per rotation chunk: one subchannel's change rebuilds (and moves
/// every reader's cache through) at most this many (10 KiB), whatever the
/// number of subchannels.
pub(crate) const CHUNK: usize = 256;

/// Rotates over its entries; each reader keeps its own position.
#[doc(hidden)] // public for benches/pick.rs only
pub enum RrPicker {
    /// Every entry is a subchannel (the usual case): readers rotate inline.
    /// Building a new picker over the same subchannels copies entries (or
    /// reuses whole chunks) and touches no subchannel's reference count.
    Direct(Rotation),
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
        RrPicker::Direct(Rotation::over(keep, CHUNK).expect("at least one entry"))
    }
}

impl Picker for RrPicker {
    #[inline]
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        match self {
            RrPicker::Direct(rotation) => PickResult::Complete {
                subconn: rotation.pick(local),
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

    fn rotation(&self) -> Option<&Rotation> {
        match self {
            RrPicker::Direct(rotation) => Some(rotation),
            RrPicker::Mixed(_) => None,
        }
    }
}

/// Whether two rotations list the same subchannels in the same order.
fn same_entries(a: &[Chunk], b: &[Chunk]) -> bool {
    fn entries(chunks: &[Chunk]) -> impl Iterator<Item = NonNull<SubConn>> + '_ {
        chunks.iter().flat_map(|c| c.iter().map(|l| l.ptr()))
    }
    entries(a).eq(entries(b))
}

/// Every child's subchannels in one shared allocation, rebuilt only when the
/// children's subchannels change (not when they merely flip READY), with
/// their rotation entries made once, so that a new picker is a copy of some.
struct Keep {
    version: u64,
    all: Arc<[Arc<SubConn>]>,
    listed: Vec<RotationEntry>,
    /// Where each child's subchannels start in `all`, in children order.
    base: Vec<usize>,
}

impl Keep {
    /// The `Keep` for `children`, built again first if their subchannels
    /// changed since it was made.
    fn current<'a>(slot: &'a mut Option<Keep>, children: &ChildManager) -> &'a Keep {
        let version = children.version();
        if slot.as_ref().is_some_and(|k| k.version != version) {
            *slot = None;
        }
        slot.get_or_insert_with(|| {
            let mut all = Vec::new();
            let mut base = Vec::new();
            for c in children.iter() {
                base.push(all.len());
                all.extend(c.subconns().iter().cloned());
            }
            let all: Arc<[Arc<SubConn>]> = all.into();
            Keep {
                version,
                listed: RotationEntry::all(&all),
                all,
                base,
            }
        })
    }
}

/// What each child contributes to the picker, in `Children`'s order, kept up
/// to date one child at a time: a child's change costs O(1) here, and the
/// picker is then a copy of the READY entries. Rebuilt when the children (or
/// their subchannels) change.
#[derive(Default)]
struct Tally {
    /// The `Children::version` (and so the `Keep`) it is for.
    version: Option<u64>,
    states: Vec<ConnectivityState>,
    /// Per child: where its subchannel is in `Keep` when the child is READY
    /// with a single-subchannel picker (always, for pick_first children).
    entry: Vec<Option<usize>>,
    counts: StateCounts,
    /// READY children whose picker is more than one subchannel.
    mixed: usize,
    /// Per `CHUNK` children: the entries of the READY ones among them, or
    /// `None` when one of them changed since (built again when needed).
    blocks: Vec<Option<Chunk>>,
}

impl Tally {
    /// A child's state, its `Keep` entry if it has one, and whether it is
    /// READY without one (mixed).
    fn contribution(keep: &Keep, i: usize, c: &Child) -> (ConnectivityState, Option<usize>, bool) {
        if c.state() != ConnectivityState::Ready {
            return (c.state(), None, false);
        }
        let found = c.picker().single().and_then(|sc| {
            let base = keep.base[i];
            (base..base + c.subconns().len()).find(|j| Arc::ptr_eq(&keep.all[*j], sc))
        });
        (c.state(), found, found.is_none())
    }

    fn rebuild(&mut self, keep: &Keep, children: &ChildManager, version: u64) {
        *self = Tally {
            version: Some(version),
            ..Tally::default()
        };
        for (i, c) in children.iter().enumerate() {
            let (state, entry, mixed) = Self::contribution(keep, i, c);
            self.counts.add(state);
            self.mixed += usize::from(mixed);
            self.states.push(state);
            self.entry.push(entry);
        }
        self.blocks = vec![None; children.len().div_ceil(CHUNK)];
    }

    /// The chunks of a rotation over the READY entries, in children order,
    /// building only the blocks that changed.
    fn chunks(&mut self, keep: &Keep) -> Vec<Chunk> {
        for (b, block) in self.blocks.iter_mut().enumerate() {
            if block.is_none() {
                let end = ((b + 1) * CHUNK).min(self.entry.len());
                let entries = self.entry[b * CHUNK..end].iter().flatten();
                *block = Some(entries.map(|j| keep.listed[*j]).collect());
            }
        }
        self.blocks
            .iter()
            .flatten()
            .filter(|c| !c.is_empty())
            .cloned()
            .collect()
    }

    /// Takes child `i`'s new contribution; whether what pickers select from
    /// changed.
    fn update(&mut self, keep: &Keep, i: usize, c: &Child) -> bool {
        let (state, entry, mixed) = Self::contribution(keep, i, c);
        let was_mixed = self.states[i] == ConnectivityState::Ready && self.entry[i].is_none();
        self.counts.record(self.states[i], state);
        self.mixed = self.mixed + usize::from(mixed) - usize::from(was_mixed);
        let changed = self.entry[i] != entry || was_mixed != mixed;
        self.states[i] = state;
        self.entry[i] = entry;
        if changed {
            if let Some(block) = self.blocks.get_mut(i / CHUNK) {
                *block = None;
            }
        }
        changed
    }
}

#[derive(Default)]
pub(crate) struct RoundRobin {
    children: ChildManager,
    reported: Option<ConnectivityState>,
    /// The chunks of the last published picker when it was a READY
    /// rotation (to tell, after a full recount, whether anything changed).
    published: Option<Vec<Chunk>>,
    keep: Option<Keep>,
    tally: Tally,
}

impl RoundRobin {
    /// After a child changed: reconnect it if it went IDLE, then republish if
    /// what picks select from changed.
    fn child_changed(&mut self, cc: &mut dyn ClientConn, key: &str) {
        let state = self.children.get(key).map(|c| c.state());
        if matches!(
            state,
            Some(ConnectivityState::Idle | ConnectivityState::TransientFailure)
        ) {
            cc.resolve_now();
        }
        if state == Some(ConnectivityState::Idle) {
            self.children.exit_idle(cc, key);
        }
        self.regenerate(cc, Some(key));
    }

    /// Aggregates: any READY → READY over the READY children; any CONNECTING or
    /// IDLE → CONNECTING (queue); else TRANSIENT_FAILURE, failing with the
    /// children's own errors in rotation.
    ///
    /// `changed`: the one child that changed (O(1) bookkeeping, see `Tally`),
    /// or `None` to look at every child. A picker is built only if what picks
    /// select from changed, as a copy of the READY children's entries: no
    /// reference counts, no subchannel read.
    fn regenerate(&mut self, cc: &mut dyn ClientConn, changed: Option<&str>) {
        let keep = Keep::current(&mut self.keep, &self.children);
        let version = self.children.version();
        let one = changed
            .filter(|_| self.tally.version == Some(version))
            .and_then(|key| self.children.position(key))
            .filter(|i| *i < self.tally.states.len());
        // Some(false): known unchanged; None: compare with the published list.
        let known = match one.and_then(|i| Some((i, self.children.at(i)?))) {
            Some((i, child)) => Some(self.tally.update(keep, i, child)),
            None => {
                self.tally.rebuild(keep, &self.children, version);
                None
            }
        };
        debug_assert_eq!(self.tally.states.len(), self.children.len());
        let counts = self.tally.counts;
        let mixed = self.tally.mixed > 0;
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
                    .filter(|c| c.state() == ConnectivityState::Ready)
                    .map(|c| RrEntry::of(c.picker()))
                    .collect();
                self.published = None;
                (ConnectivityState::Ready, Box::new(RrPicker::new(entries)))
            } else {
                if self.reported == Some(ConnectivityState::Ready) && known == Some(false) {
                    return;
                }
                let chunks = self.tally.chunks(keep);
                if self.reported == Some(ConnectivityState::Ready)
                    && known.is_none()
                    && self
                        .published
                        .as_ref()
                        .is_some_and(|old| same_entries(old, &chunks))
                {
                    return;
                }
                self.published = Some(chunks.clone());
                let rotation = Rotation::new(keep.all.clone(), chunks)
                    .expect("READY children without a mixed picker each have an entry");
                (
                    ConnectivityState::Ready,
                    Box::new(RrPicker::Direct(rotation)),
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
                .map(|c| RrEntry::Child(c.picker().clone()))
                .collect();
            (
                ConnectivityState::TransientFailure,
                Box::new(RrPicker::new(failing)),
            )
        };
        if state != ConnectivityState::Ready {
            self.published = None;
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
            self.published = None;
            cc.update_state(
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(ZERO_ADDRESSES)),
            );
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
            self.reported = Some(ConnectivityState::TransientFailure);
            cc.update_state(
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(format!(
                    "name resolver error: {error}"
                ))),
            );
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
