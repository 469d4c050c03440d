//! The part `least_request` and `random` share: endpoint sharding over
//! pick_first children (one per endpoint, all kept connected, as
//! round_robin and gRPC-Go's endpointsharding do), aggregated as round_robin
//! aggregates, with a picker over the READY endpoints that the policy builds
//! from a dense list of its own entries (one per READY endpoint) kept up to
//! date one child at a time. The list is a [`ReadyList`]: successive pickers
//! share its unchanged chunks, so one endpoint turning READY or leaving costs
//! at most two chunks and a pointer per chunk, not a copy of every entry
//! (bringing n endpoints up one report at a time is not O(n²)).
//!
//! A policy plugs in through [`ReadyPicking`]: it is told when the children
//! change (to key its own per-endpoint state, such as in-flight counters),
//! makes each READY endpoint's entry and builds the READY picker.
//! Everything else (children, subchannel states, reconnection,
//! re-resolution, the CONNECTING and TRANSIENT_FAILURE pickers) is here
//! once.

use super::petiole::Petiole;
use super::round_robin::Failing;
use crate::balancer::child_manager::{Child, ChildManager, ChildParent};
use crate::balancer::keep::{Keep, KeepPool};
use crate::balancer::picker::{FailPicker, Picker, QueuePicker};
use crate::balancer::ready_list::{ReadyChunks, ReadyList};
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::balancer::{Balancer, ClientConn, ClientConnState, LbConfig, SubConnState, TimerToken};
use crate::connectivity::{ConnectivityState, StateCounts, NO_CHILDREN};
use std::ptr::NonNull;
use std::sync::Arc;

/// A READY endpoint: its child's position (in `ChildManager` order, for
/// the policy's per-endpoint state) and its READY subchannel, a plain
/// pointer to one the picker keeps alive (see [`ReadyPicking::picker`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadyEndpoint {
    /// The child's position among the children.
    pub(crate) member: usize,
    /// The child's READY subchannel, one the picker's `keep` holds.
    pub(crate) subconn: NonNull<SubConn>,
}

/// What a policy over READY endpoints adds to [`ReadyEndpoints`].
pub(crate) trait ReadyPicking {
    /// What the policy's picker holds per READY endpoint.
    type Entry: Copy;

    /// The policy's parsed config, on every resolver update; true when the
    /// READY picker must be rebuilt because of it.
    fn configure(&mut self, config: Option<&LbConfig>) -> Result<bool, String>;

    /// The children changed (came, went, or renumbered: a new
    /// `ChildManager::layout`): `children` in position order, for the
    /// policy's per-endpoint state.
    fn members(&mut self, children: &ChildManager);

    /// The picker entry for `ready`, made after the last `members` call
    /// (entries are made again after every `members` call); `None` leaves
    /// the endpoint out of pickers.
    fn entry(&self, ready: ReadyEndpoint) -> Option<Self::Entry>;

    /// A picker over `ready` (never empty, in no particular order), entries
    /// made by `entry`. `keep` holds every entry's subchannel: a picker
    /// that holds `keep` may dereference them for as long as it lives.
    fn picker(&mut self, keep: Keep, ready: ReadyChunks<Self::Entry>) -> Box<dyn Picker>;
}

/// A policy made of pick_first children per endpoint and a `ReadyPicking`.
pub(crate) struct ReadyEndpoints<P: ReadyPicking> {
    picking: P,
    children: ChildManager,
    /// The `ChildManager::layout` the fields below are for (positions).
    layout: Option<u64>,
    /// Every subchannel listed since the last full refresh: what pickers
    /// keep alive. A child's new subchannel joins it as it is listed, so
    /// an endpoint moving to another address costs O(1), not a pool
    /// rebuilt over every endpoint's subchannels.
    pool: KeepPool,
    /// Per child: its last state, and where it is in `ready` if listed.
    states: Vec<ConnectivityState>,
    slots: Vec<Option<usize>>,
    /// The READY children's subchannels, dense (swap-removed).
    ready: Vec<ReadyEndpoint>,
    /// `ready`'s subchannels, in the same order: what the pool keeps when
    /// it sheds the others.
    held: Vec<Arc<SubConn>>,
    /// The policy's entries for `ready`, in the same order: what pickers
    /// pick from.
    table: ReadyList<P::Entry>,
    counts: StateCounts,
    /// The state last published; `None` before the first.
    reported: Option<ConnectivityState>,
    failing: Failing,
    /// `ready` changed since the last READY picker was published.
    stale: bool,
}

impl<P: ReadyPicking> ReadyEndpoints<P> {
    pub(crate) fn new(picking: P) -> ReadyEndpoints<P> {
        ReadyEndpoints {
            picking,
            children: ChildManager::new(),
            layout: None,
            pool: KeepPool::default(),
            states: Vec::new(),
            slots: Vec::new(),
            ready: Vec::new(),
            held: Vec::new(),
            table: ReadyList::default(),
            counts: StateCounts::default(),
            reported: None,
            failing: Failing::default(),
            stale: true,
        }
    }

    /// The policy's own part.
    #[cfg(test)]
    pub(crate) fn picking(&self) -> &P {
        &self.picking
    }

    /// The child's READY subchannel, if it has one it owns (pick_first's
    /// READY picker is always one subchannel).
    fn ready_subconn(c: &Child) -> Option<&Arc<SubConn>> {
        if c.state() != ConnectivityState::Ready {
            return None;
        }
        let sc = c.picker().single()?;
        c.subconns().any(|own| Arc::ptr_eq(own, sc)).then_some(sc)
    }

    /// Lists child `i` (`c`) in `ready` (and its entry in `table`) or
    /// takes it out. O(1).
    fn list(&mut self, i: usize, c: &Child) {
        let now = Self::ready_subconn(c).and_then(|sc| {
            let ready = ReadyEndpoint {
                member: i,
                subconn: NonNull::from(&**sc),
            };
            Some((sc, ready, self.picking.entry(ready)?))
        });
        if let Some((sc, ..)) = now {
            // Held before any picker can list it.
            self.pool.add(sc);
        }
        match (self.slots[i], now) {
            (Some(at), Some((sc, ready, entry))) => {
                if self.ready[at].subconn != ready.subconn {
                    self.ready[at] = ready;
                    self.held[at] = sc.clone();
                    self.table.set(at, entry);
                    self.stale = true;
                }
            }
            (None, Some((sc, ready, entry))) => {
                self.slots[i] = Some(self.ready.len());
                self.ready.push(ready);
                self.held.push(sc.clone());
                self.table.push(entry);
                self.stale = true;
            }
            (Some(at), None) => {
                self.ready.swap_remove(at);
                self.held.swap_remove(at);
                self.table.swap_remove(at);
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
    /// the children are where they were last time (their subchannels may
    /// have changed: only a listed one matters, and the pool takes it as it
    /// is listed), else all of them.
    fn refresh(&mut self, changed: Option<&str>) {
        let layout = self.children.layout();
        let one = changed
            .filter(|_| self.layout == Some(layout))
            .and_then(|key| self.children.position(key));
        if let Some(i) = one {
            let children = std::mem::take(&mut self.children);
            if let Some(c) = children.at(i) {
                self.counts.record(self.states[i], c.state());
                self.states[i] = c.state();
                self.list(i, c);
            }
            if self.pool.bloated(self.held.len()) {
                // Subchannels listed once and long gone: shed them (O(1)
                // per subchannel added since the last time).
                self.pool.reset(&self.held);
            }
            self.children = children;
            return;
        }
        let children = std::mem::take(&mut self.children);
        let (before, was_stale) = (self.listed(), self.stale);
        let renumbered = self.layout != Some(layout);
        self.layout = Some(layout);
        self.pool = KeepPool::default();
        self.states.clear();
        self.slots = vec![None; children.len()];
        self.ready.clear();
        self.held.clear();
        self.table.clear();
        self.counts = StateCounts::default();
        // Before listing: entries are made from the new members' state.
        if renumbered {
            self.picking.members(&children);
        }
        for (i, c) in children.iter().enumerate() {
            self.states.push(c.state());
            self.counts.add(c.state());
            self.list(i, c);
        }
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
            let picker = self.picking.picker(self.pool.keep(), self.table.freeze());
            (ConnectivityState::Ready, picker)
        } else if self.counts.ready > 0 || self.counts.connecting > 0 || self.counts.idle > 0 {
            // (READY children without a subchannel of their own to list
            // cannot happen with pick_first children; they would queue.)
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
            self.stale = true;
        }
        self.reported = Some(state);
        cc.update_state(state, picker);
    }
}

impl<P: ReadyPicking> Petiole for ReadyEndpoints<P> {
    fn fail_all(&mut self, cc: &mut dyn ClientConn, picker: Box<dyn Picker>) {
        self.reported = Some(ConnectivityState::TransientFailure);
        self.stale = true;
        cc.update_state(ConnectivityState::TransientFailure, picker);
    }

    fn republish(&mut self, cc: &mut dyn ClientConn) {
        self.regenerate(cc, None);
    }
}

impl<P: ReadyPicking> ChildParent for ReadyEndpoints<P> {
    fn children(&mut self) -> &mut ChildManager {
        &mut self.children
    }

    /// After a child changed: reconnect it if it went IDLE (and re-resolve
    /// when its connection was lost or failed, not on a health verdict: see
    /// `ChildManager::keep_connected`), then republish.
    fn child_changed(&mut self, cc: &mut dyn ClientConn, key: &str) {
        self.children.keep_connected(cc, key);
        self.regenerate(cc, Some(key));
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
    use crate::balancer::ready_list::CHUNK;
    use crate::balancer::testing::{Picked, TestClientConn};
    use crate::balancer::LbConfig;
    use crate::connectivity::ConnectivityState::{Connecting, Ready, TransientFailure};
    use crate::policy::least_request::LeastRequest;
    use crate::policy::random::Random;
    use crate::Address;

    fn addrs(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("127.0.0.1:{}", 10_000 + i))
            .collect()
    }

    /// A policy over `n` endpoints, none READY yet, and their subchannels.
    fn over<P: ReadyPicking>(
        picking: P,
        n: usize,
    ) -> (TestClientConn, ReadyEndpoints<P>, Vec<SubConnId>) {
        let mut cc = TestClientConn::new();
        let mut policy = ReadyEndpoints::new(picking);
        let addrs = addrs(n);
        let state = ClientConnState::from_addresses(addrs.iter().map(Address::new).collect(), None);
        cc.update(&mut policy, state).unwrap();
        let ids = addrs
            .iter()
            .map(|a| cc.subconn_for(a).unwrap().id())
            .collect();
        (cc, policy, ids)
    }

    /// gRFC A61: an endpoint whose addresses come in a new order (same
    /// set, same child) gets the new order: its pick_first stays on the
    /// connected address, and reconnects from the new first one after
    /// losing that connection.
    #[test]
    fn a_reordered_endpoint_gets_its_new_order() {
        let (a, b) = ("127.0.0.1:10001", "127.0.0.1:10002");
        let endpoint = |first: &str, second: &str| {
            ClientConnState::new(
                vec![crate::Endpoint::new(vec![
                    Address::new(first),
                    Address::new(second),
                ])],
                None,
            )
        };
        let mut cc = TestClientConn::new();
        let mut policy = ReadyEndpoints::new(Random);
        cc.update(&mut policy, endpoint(a, b)).unwrap();
        let sa = cc.subconn_for(a).unwrap().id();
        assert_eq!(cc.connects(), &[sa], "the first address first");
        cc.set_state(&mut policy, sa, Ready);
        cc.update(&mut policy, endpoint(b, a)).unwrap();
        assert_eq!(cc.connects(), &[sa], "no churn while connected");
        assert_eq!(cc.shutdowns(), &[] as &[SubConnId]);
        // The connection is lost: the endpoint reconnects at once (as
        // round_robin's do), starting from the new first address.
        cc.set_state(&mut policy, sa, crate::ConnectivityState::Idle);
        cc.run_work(&mut policy);
        let sb = cc.subconn_for(b).expect("b's subchannel").id();
        assert_eq!(cc.connects().get(1), Some(&sb), "{:?}", cc.connects());
    }

    /// Bringing endpoints up (and down) one state report at a time: each
    /// report publishes a new picker, which copies at most two chunks of
    /// entries, however many endpoints there are (a picker copying every
    /// entry, as before, copies up to `n` and fails this from the 513th).
    #[test]
    #[cfg_attr(miri, ignore = "thousands of reports: minutes under Miri")]
    fn each_ready_change_copies_at_most_two_chunks() {
        const N: usize = 6 * CHUNK + 10;
        let (mut cc, mut lr, ids) = over(LeastRequest::default(), N);
        let bound = 2 * CHUNK as u64;
        let mut copied = lr.table.copied();
        let mut worst = 0;
        let mut report = |cc: &mut TestClientConn,
                          lr: &mut ReadyEndpoints<LeastRequest>,
                          id,
                          state,
                          listed: usize| {
            let published = cc.pickers_published();
            cc.set_state(lr, id, state);
            assert_eq!(cc.pickers_published(), published + 1);
            assert_eq!(lr.table.freeze().len(), listed);
            worst = worst.max(lr.table.copied() - copied);
            copied = lr.table.copied();
        };
        for (i, id) in ids.iter().enumerate() {
            report(&mut cc, &mut lr, *id, Ready, i + 1);
        }
        // Down again from the front: every removal moves the last entry.
        for (i, id) in ids.iter().take(N - 1).enumerate() {
            report(&mut cc, &mut lr, *id, TransientFailure, N - 1 - i);
        }
        assert!(worst <= bound, "{worst} entries copied for one change");
        // Only the last one is left, and picks go there.
        assert_eq!(cc.picks(3), [Some(ids[N - 1]); 3]);
    }

    /// A `ReadyPicking` that counts `members` calls (the policy's
    /// per-endpoint state rebuilt).
    struct CountMembers<P>(P, usize);

    impl<P: ReadyPicking> ReadyPicking for CountMembers<P> {
        type Entry = P::Entry;
        fn configure(&mut self, config: Option<&LbConfig>) -> Result<bool, String> {
            self.0.configure(config)
        }
        fn members(&mut self, children: &ChildManager) {
            self.1 += 1;
            self.0.members(children)
        }
        fn entry(&self, ready: ReadyEndpoint) -> Option<Self::Entry> {
            self.0.entry(ready)
        }
        fn picker(&mut self, keep: Keep, ready: ReadyChunks<Self::Entry>) -> Box<dyn Picker> {
            self.0.picker(keep, ready)
        }
    }

    /// Dual-address endpoints whose first addresses fail to connect, one
    /// endpoint after another (a fleet whose IPv6 is down): each
    /// endpoint's pick_first makes a subchannel for its second address,
    /// which comes up. Each step is one
    /// endpoint's change, whatever the number of endpoints: the policy's
    /// per-endpoint state is not rebuilt (least_request's counters), a
    /// picker copies at most two chunks, and the subchannels pickers keep
    /// stay bounded by the READY ones (the failed first ones are shed).
    #[test]
    #[cfg_attr(miri, ignore = "thousands of reports: minutes under Miri")]
    fn endpoints_moving_to_their_next_address_cost_one_change_each() {
        const N: usize = 2 * CHUNK + 10;
        let second = |i: usize| crate::Endpoint::second_of(i, 10_000);
        let endpoints = crate::Endpoint::dual_address(N, 10_000);
        let mut cc = TestClientConn::new();
        let mut lr = ReadyEndpoints::new(CountMembers(LeastRequest::default(), 0));
        cc.update(&mut lr, ClientConnState::new(endpoints, None))
            .unwrap();
        let firsts: Vec<SubConnId> = cc.subconns().iter().map(|sc| sc.id()).collect();
        assert_eq!(firsts.len(), N, "one subchannel per endpoint to start");
        assert_eq!(lr.picking().1, 1, "per-endpoint state made once");
        let mut copied = lr.table.copied();
        let mut worst = 0;
        let mut seconds = Vec::new();
        for (i, id) in firsts.iter().enumerate() {
            cc.set_state(&mut lr, *id, Connecting);
            cc.set_state(&mut lr, *id, TransientFailure);
            let next = cc.subconn_for(&second(i)).expect("the next address's").id();
            cc.set_state(&mut lr, next, Ready);
            seconds.push(next);
            worst = worst.max(lr.table.copied() - copied);
            copied = lr.table.copied();
        }
        assert_eq!(lr.picking().1, 1, "no endpoint came or went");
        assert!(
            worst <= 2 * CHUNK as u64,
            "{worst} entries copied for one change"
        );
        assert!(
            lr.pool.len() <= 2 * N + 256,
            "{} subchannels kept",
            lr.pool.len()
        );
        assert_eq!(cc.state(), Some(Ready));
        let picked: std::collections::HashSet<_> = cc.picks(4 * N).into_iter().flatten().collect();
        assert!(
            picked.iter().all(|id| seconds.contains(id)),
            "only second addresses"
        );
        assert!(
            picked.len() > N / 2,
            "spread: {} endpoints picked",
            picked.len()
        );
    }

    /// Uniform over the READY set when it spans several chunks and has had
    /// entries swap-removed from the middle: 700 endpoints, every third one
    /// failed after all were READY; 100 picks per READY endpoint on average
    /// pass a chi-square test (far tail of 466 degrees of freedom), and no
    /// pick goes to a failed one.
    #[test]
    #[cfg_attr(miri, ignore = "tens of thousands of picks: minutes under Miri")]
    fn random_stays_uniform_across_chunks_after_removals() {
        const N: usize = 700;
        let (mut cc, mut random, ids) = over(Random, N);
        for id in &ids {
            cc.set_state(&mut random, *id, Ready);
        }
        for id in ids.iter().step_by(3) {
            cc.set_state(&mut random, *id, TransientFailure);
        }
        let ready = N - N.div_ceil(3);
        let picks = 100 * ready;
        let mut counts = vec![0usize; N];
        let index: std::collections::HashMap<SubConnId, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        for _ in 0..picks {
            match cc.pick() {
                Picked::Complete { subconn, .. } => counts[index[&subconn]] += 1,
                other => panic!("{other:?}"),
            }
        }
        let expected = picks as f64 / ready as f64;
        let mut chi2 = 0.0;
        for (i, c) in counts.iter().enumerate() {
            if i % 3 == 0 {
                assert_eq!(*c, 0, "failed endpoint {i} picked");
            } else {
                chi2 += (*c as f64 - expected).powi(2) / expected;
            }
        }
        let df = (ready - 1) as f64;
        assert!(
            chi2 < df + 5.0 * (2.0 * df).sqrt(),
            "chi-square {chi2} over {df} degrees of freedom"
        );
    }
}
