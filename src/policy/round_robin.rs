//! `round_robin`: one pick_first child per address, all kept connected; picks
//! rotate over the READY children. The rotation lives in each reader (each
//! new reader starting one entry after the one before, so that readers made
//! per call still go round in order), so the picker itself is never written
//! to.

use super::petiole::Petiole;
use crate::balancer::child_manager::{Child, ChildManager, ChildParent};
use crate::balancer::picker::{
    DoneHooks, FailPicker, PickInfo, PickLocal, PickResult, Picker, QueuePicker,
};
use crate::balancer::rotation::{Rotation, RotationBuilder, DEFAULT_CHUNK};
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::balancer::{Balancer, Builder, ClientConn, ClientConnState, SubConnState, TimerToken};
use crate::connectivity::{ConnectivityState, StateCounts, NO_CHILDREN};
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

    fn health_checks(&self, _config: Option<&crate::balancer::LbConfig>) -> bool {
        // Its endpoints' pick_first children use health (A61).
        true
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

/// round_robin's TRANSIENT_FAILURE picker, also the one of the policies
/// that aggregate as it does: each pick fails with the next child's own
/// error, in turn.
fn failing_picker(children: &ChildManager) -> Box<dyn Picker> {
    Box::new(RrPicker::new(
        children
            .iter()
            .map(|c| RrEntry::Child(c.picker().clone()))
            .collect(),
    ))
}

/// A parent's TRANSIENT_FAILURE picker over its children's own errors,
/// built again only when a child published since the last one (or came or
/// went): gRPC parents publish when a child does, so a failing endpoint's
/// retries, which its pick_first keeps to itself, publish nothing.
#[derive(Default)]
pub(crate) struct Failing {
    /// `ChildManager::published` when the last one was built.
    at: Option<u64>,
}

impl Failing {
    /// The picker to publish, or `None` if the parent's last publish
    /// (`reported`) was this one and still says what the children say.
    pub(crate) fn picker(
        &mut self,
        children: &ChildManager,
        reported: Option<ConnectivityState>,
    ) -> Option<Box<dyn Picker>> {
        let now = children.published();
        if reported == Some(ConnectivityState::TransientFailure) && self.at == Some(now) {
            return None;
        }
        self.at = Some(now);
        Some(failing_picker(children))
    }
}

/// Entries per rotation chunk (see `RotationBuilder`).
pub(crate) const CHUNK: usize = DEFAULT_CHUNK;

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
                done: DoneHooks::NONE,
            },
            RrPicker::Mixed(entries) => match &entries[local.next_index(entries.len())] {
                RrEntry::Direct(sc) => PickResult::Complete {
                    subconn: sc,
                    done: DoneHooks::NONE,
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

/// What each child contributes, kept up to date one child at a time: a
/// child's change (its new subchannels too) costs O(1) here and in the
/// `RotationBuilder`. Recounted when children come or go.
#[derive(Default)]
struct Tally {
    /// The `ChildManager::layout` it (and the builder's members) is for.
    layout: Option<u64>,
    states: Vec<ConnectivityState>,
    /// Per child: READY with a picker that is not one subchannel of its own.
    mixed_at: Vec<bool>,
    counts: StateCounts,
    /// How many `mixed_at`.
    mixed: usize,
}

impl Tally {
    /// Lists child `i` in the rotation (its subchannel when READY with a
    /// single-subchannel picker, always so for pick_first children); its
    /// state, and whether it is READY without such a picker (mixed).
    fn list(rotation: &mut RotationBuilder, i: usize, c: &Child) -> (ConnectivityState, bool) {
        let single = c
            .picker()
            .single()
            .filter(|_| c.state() == ConnectivityState::Ready);
        let mixed = match single {
            // Not one the builder knows the child has: the child made it
            // since (its next address), so the builder learns the child's
            // subchannels again, O(the child's), once per new one it
            // connects on rather than for every one it makes.
            Some(sc) => {
                rotation.list(i, Some(sc)).is_err()
                    && (rotation.set_member(i, c.subconns()).is_err()
                        || rotation.list(i, Some(sc)).is_err())
            }
            None => c.state() == ConnectivityState::Ready,
        };
        if single.is_none() || mixed {
            // Not in the rotation; `i` is a member, so this cannot fail.
            let _ = rotation.list(i, None);
        }
        (c.state(), mixed)
    }

    fn rebuild(&mut self, rotation: &mut RotationBuilder, children: &ChildManager, layout: u64) {
        if self.layout != Some(layout) {
            rotation.set_members(children.iter().map(|c| c.subconns()));
        }
        *self = Tally {
            layout: Some(layout),
            ..Tally::default()
        };
        for (i, c) in children.iter().enumerate() {
            let (state, mixed) = Self::list(rotation, i, c);
            self.counts.add(state);
            self.mixed += usize::from(mixed);
            self.states.push(state);
            self.mixed_at.push(mixed);
        }
    }

    /// Takes child `i`'s new contribution.
    fn update(&mut self, rotation: &mut RotationBuilder, i: usize, c: &Child) {
        let (state, mixed) = Self::list(rotation, i, c);
        self.counts.record(self.states[i], state);
        self.mixed = self.mixed + usize::from(mixed) - usize::from(self.mixed_at[i]);
        self.states[i] = state;
        self.mixed_at[i] = mixed;
    }
}

pub(crate) struct RoundRobin {
    children: ChildManager,
    reported: Option<ConnectivityState>,
    failing: Failing,
    /// The READY children's subchannels, as readers rotate over them.
    rotation: RotationBuilder,
    /// The last published picker is the builder's last rotation.
    rotation_published: bool,
    tally: Tally,
}

impl Default for RoundRobin {
    fn default() -> RoundRobin {
        RoundRobin {
            children: ChildManager::default(),
            reported: None,
            failing: Failing::default(),
            rotation: RotationBuilder::with_chunk(CHUNK),
            rotation_published: false,
            tally: Tally::default(),
        }
    }
}

impl RoundRobin {
    /// Aggregates: any READY → READY over the READY children; any CONNECTING or
    /// IDLE → CONNECTING (queue); else TRANSIENT_FAILURE, failing with the
    /// children's own errors in rotation.
    ///
    /// `changed`: the one child that changed (O(1) bookkeeping, see `Tally`),
    /// or `None` to look at every child. A picker is built only if what picks
    /// select from changed (`RotationBuilder::changed`), reusing the chunks
    /// of unchanged children: no reference counts, no subchannel read.
    fn regenerate(&mut self, cc: &mut dyn ClientConn, changed: Option<&str>) {
        let layout = self.children.layout();
        let one = changed
            .filter(|_| self.tally.layout == Some(layout))
            .and_then(|key| self.children.position(key))
            .filter(|i| *i < self.tally.states.len());
        match one.and_then(|i| Some((i, self.children.at(i)?))) {
            Some((i, child)) => self.tally.update(&mut self.rotation, i, child),
            None => self
                .tally
                .rebuild(&mut self.rotation, &self.children, layout),
        }
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
                self.rotation_published = false;
                (ConnectivityState::Ready, Box::new(RrPicker::new(entries)))
            } else {
                if self.reported == Some(ConnectivityState::Ready)
                    && self.rotation_published
                    && !self.rotation.changed()
                {
                    return;
                }
                let rotation = self
                    .rotation
                    .build()
                    .expect("READY children without a mixed picker each have an entry");
                self.rotation_published = true;
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
            let Some(picker) = self.failing.picker(&self.children, self.reported) else {
                return;
            };
            (ConnectivityState::TransientFailure, picker)
        };
        if state != ConnectivityState::Ready {
            self.rotation_published = false;
        }
        self.reported = Some(state);
        cc.update_state(state, picker);
    }
}

impl Petiole for RoundRobin {
    fn fail_all(&mut self, cc: &mut dyn ClientConn, picker: Box<dyn Picker>) {
        self.reported = Some(ConnectivityState::TransientFailure);
        self.rotation_published = false;
        cc.update_state(ConnectivityState::TransientFailure, picker);
    }

    fn republish(&mut self, cc: &mut dyn ClientConn) {
        self.regenerate(cc, None);
    }
}

impl ChildParent for RoundRobin {
    fn children(&mut self) -> &mut ChildManager {
        &mut self.children
    }

    /// After a child changed: reconnect it if it went IDLE, then republish if
    /// what picks select from changed.
    fn child_changed(&mut self, cc: &mut dyn ClientConn, key: &str) {
        self.children.keep_connected(cc, key);
        self.regenerate(cc, Some(key));
    }
}

impl Balancer for RoundRobin {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        self.take_endpoints(cc, &state)?;
        self.regenerate(cc, None);
        Ok(())
    }

    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.take_resolver_error(cc, error);
    }

    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        self.route_subconn_state(cc, sc, state);
    }

    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        self.exit_idle_children(cc);
        self.regenerate(cc, None);
    }

    fn work(&mut self, cc: &mut dyn ClientConn) {
        self.route_work(cc);
    }

    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        self.route_timer(cc, token);
    }

    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.children.close(cc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::testing::TestClientConn;
    use crate::Endpoint;

    /// Dual-address endpoints whose first addresses fail to connect, one
    /// endpoint after another (a fleet whose IPv6 is down): each
    /// endpoint's pick_first makes a subchannel for its second address,
    /// which comes up. Each step is one endpoint's change: the picker it
    /// publishes rebuilds that endpoint's chunk and shares every other
    /// with the picker before (all of them rebuilt, as before, is O(n) per
    /// endpoint: O(n²) to bring a fleet up).
    #[test]
    #[cfg_attr(miri, ignore = "thousands of reports: minutes under Miri")]
    fn endpoints_moving_to_their_next_address_rebuild_one_chunk_each() {
        const N: usize = 3 * CHUNK + 10;
        let second = |i: usize| Endpoint::second_of(i, 10_000);
        let endpoints = Endpoint::dual_address(N, 10_000);
        let mut cc = TestClientConn::new();
        let mut rr = RoundRobin::default();
        cc.update(&mut rr, ClientConnState::new(endpoints, None))
            .unwrap();
        let firsts: Vec<SubConnId> = cc.subconns().iter().map(|sc| sc.id()).collect();
        assert_eq!(firsts.len(), N, "one subchannel per endpoint to start");
        let chunks = |cc: &TestClientConn| -> Vec<crate::balancer::rotation::Chunk> {
            cc.picker()
                .and_then(|p| p.rotation())
                .map(|r| r.chunks().to_vec())
                .unwrap_or_default()
        };
        let mut seconds = Vec::new();
        for (i, id) in firsts.iter().enumerate() {
            cc.set_state(&mut rr, *id, ConnectivityState::Connecting);
            cc.set_state(&mut rr, *id, ConnectivityState::TransientFailure);
            let next = cc.subconn_for(&second(i)).expect("the next address's").id();
            let before = chunks(&cc);
            cc.set_state(&mut rr, next, ConnectivityState::Ready);
            let after = chunks(&cc);
            let rebuilt = after
                .iter()
                .enumerate()
                .filter(|(c, chunk)| before.get(*c).is_none_or(|b| !Arc::ptr_eq(b, chunk)))
                .count();
            assert!(rebuilt <= 1, "endpoint {i}: {rebuilt} chunks rebuilt");
            seconds.push(next);
        }
        assert_eq!(cc.state(), Some(ConnectivityState::Ready));
        assert_eq!(chunks(&cc).iter().map(|c| c.len()).sum::<usize>(), N);
        let picks = cc.picks(2 * N);
        for (k, p) in picks.iter().enumerate() {
            assert_eq!(
                *p,
                Some(seconds[(seconds.iter().position(|s| Some(*s) == picks[0]).unwrap() + k) % N])
            );
        }
        assert!(
            rr.rotation.pool_len() <= 2 * N + 256,
            "{} kept",
            rr.rotation.pool_len()
        );
    }
}
