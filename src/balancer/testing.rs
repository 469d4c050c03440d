//! A `ClientConn` for unit-testing a policy without a loop, a channel or a
//! connector (gRPC-Go's `testutils.BalancerClientConn`): it records what the
//! policy asks for (subchannels, connects, shutdowns, states and pickers,
//! resolve-now, timers, work) and lets the test deliver what the channel
//! would (subchannel states, timers, work, resolver updates) and pick from
//! the last picker as a reader does.
//!
//! As in a channel, a subchannel shut down by the policy gets its SHUTDOWN
//! state delivered once, after the policy callback that shut it down returns
//! (except after `close`: nothing reaches a closed policy); every other
//! state change is the test's to deliver.
//!
//! ```
//! use switchyard::balancer::testing::{Picked, TestClientConn};
//! use switchyard::{registry, Address, ConnectivityState};
//!
//! let mut cc = TestClientConn::new();
//! let mut rr = registry::get("round_robin").unwrap().build();
//! cc.update_addresses(&mut *rr, ["127.0.0.1:1", "127.0.0.1:2"]).unwrap();
//! assert_eq!(cc.connects().len(), 2);
//! assert_eq!(cc.state(), Some(ConnectivityState::Connecting));
//! let first = cc.connects()[0];
//! cc.set_state(&mut *rr, first, ConnectivityState::Ready);
//! assert_eq!(cc.state(), Some(ConnectivityState::Ready));
//! assert_eq!(cc.pick(), Picked::Complete { subconn: first, hooks: 0 });
//! ```

use crate::address::Address;
use crate::balancer::picker::{DoneInfo, PickInfo, PickLocal, PickResult, Picker};
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::balancer::{
    Balancer, ClientConn, ClientConnState, LoadReportListener, OobListenerId, SubConnState,
    TimerToken, WorkScheduler,
};
use crate::clock::{Clock, ManualClock};
use crate::connectivity::ConnectivityState;
use crate::status::Status;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a pick from the last published picker came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Picked {
    /// Use this subchannel; `hooks` done hooks came with it (0 for a
    /// rotation, which readers walk without calling the picker).
    Complete {
        /// The chosen subchannel.
        subconn: SubConnId,
        /// How many done hooks the pick carried.
        hooks: usize,
    },
    /// The picker queues the pick.
    Queue,
    /// The picker fails the pick (fail-fast RPCs fail with this status).
    Fail(Status),
    /// The picker drops the pick.
    Drop(Status),
    /// The policy has published no picker yet.
    NoPicker,
}

/// A `ClientConn` that records and lets the test drive (see the module).
pub struct TestClientConn {
    next_subconn: u64,
    subconns: Vec<Arc<SubConn>>,
    connects: Vec<SubConnId>,
    shutdowns: Vec<SubConnId>,
    /// Shut down by the policy, SHUTDOWN not yet delivered.
    unannounced: Vec<SubConnId>,
    states: Vec<ConnectivityState>,
    picker: Option<Arc<dyn Picker>>,
    resolve_now: usize,
    next_timer: u64,
    /// Armed and neither fired nor cancelled, with their deadlines.
    timers: BTreeMap<TimerToken, Instant>,
    cancelled: Vec<TimerToken>,
    /// Moves only with `advance` (and the timers it fires).
    clock: Arc<ManualClock>,
    rng: PickLocal,
    /// Work requests not yet run (from any thread, through the scheduler).
    work: Arc<AtomicUsize>,
    work_requests: Arc<AtomicUsize>,
    local: PickLocal,
    next_oob: u64,
    /// Out-of-band listeners registered and not unregistered.
    oob: BTreeMap<OobListenerId, OobRegistration>,
    target: String,
    authority: Option<String>,
    /// A policy's `close` is running: `new_subconn` is refused.
    closing: bool,
}

/// One `register_oob_listener` call the policy made and has not undone.
struct OobRegistration {
    subconn: SubConnId,
    period: Duration,
    listener: Arc<dyn LoadReportListener>,
}

impl Default for TestClientConn {
    fn default() -> TestClientConn {
        TestClientConn::new()
    }
}

impl std::fmt::Debug for TestClientConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClientConn")
            .field("subconns", &self.subconns)
            .field("states", &self.states)
            .finish_non_exhaustive()
    }
}

/// The most SHUTDOWN rounds one drive delivers (a policy that creates and
/// shuts down a subchannel on every SHUTDOWN would otherwise never stop).
const MAX_SHUTDOWN_ROUNDS: usize = 1000;

impl TestClientConn {
    /// A fresh one: no subchannel, no picker, the clock at now, a fixed
    /// random seed (so runs repeat).
    pub fn new() -> TestClientConn {
        TestClientConn {
            next_subconn: 1,
            subconns: Vec::new(),
            connects: Vec::new(),
            shutdowns: Vec::new(),
            unannounced: Vec::new(),
            states: Vec::new(),
            picker: None,
            resolve_now: 0,
            next_timer: 1,
            timers: BTreeMap::new(),
            cancelled: Vec::new(),
            clock: Arc::new(ManualClock::new()),
            rng: PickLocal::new(0x9e37_79b9_7f4a_7c15),
            next_oob: 1,
            oob: BTreeMap::new(),
            work: Arc::new(AtomicUsize::new(0)),
            work_requests: Arc::new(AtomicUsize::new(0)),
            local: PickLocal::new(1),
            target: String::new(),
            authority: None,
            closing: false,
        }
    }

    /// What `ClientConn::target` and `ClientConn::authority` say (a
    /// channel's target and `:authority`; none by default).
    pub fn with_target(mut self, target: &str, authority: Option<&str>) -> TestClientConn {
        self.target = target.to_string();
        self.authority = authority.map(str::to_string);
        self
    }

    // --- What the policy did -------------------------------------------

    /// Every subchannel the policy created, in creation order (ids 1, 2, ...).
    pub fn subconns(&self) -> &[Arc<SubConn>] {
        &self.subconns
    }

    /// The subchannel with this id, if the policy created it.
    pub fn subconn(&self, id: SubConnId) -> Option<&Arc<SubConn>> {
        // Ids count up from 1 in creation order: O(1) for a test driving
        // tens of thousands of subchannels.
        let at = usize::try_from(id.0).ok()?.checked_sub(1)?;
        self.subconns
            .get(at)
            .filter(|sc| sc.id() == id)
            .or_else(|| self.subconns.iter().find(|sc| sc.id() == id))
    }

    /// The latest subchannel created for `addr` that is not shut down.
    pub fn subconn_for(&self, addr: &str) -> Option<&Arc<SubConn>> {
        self.subconns
            .iter()
            .rev()
            .find(|sc| sc.addr() == addr && !self.shutdowns.contains(&sc.id()))
    }

    /// Every `connect`, in order.
    pub fn connects(&self) -> &[SubConnId] {
        &self.connects
    }

    /// Every `shutdown_subconn`, in order.
    pub fn shutdowns(&self) -> &[SubConnId] {
        &self.shutdowns
    }

    /// Every state published with `update_state`, in order.
    pub fn states(&self) -> &[ConnectivityState] {
        &self.states
    }

    /// The state last published.
    pub fn state(&self) -> Option<ConnectivityState> {
        self.states.last().copied()
    }

    /// How many pickers were published (one per `update_state`).
    pub fn pickers_published(&self) -> usize {
        self.states.len()
    }

    /// The picker last published.
    pub fn picker(&self) -> Option<&Arc<dyn Picker>> {
        self.picker.as_ref()
    }

    /// How many times the policy asked to re-resolve.
    pub fn resolve_now_requests(&self) -> usize {
        self.resolve_now
    }

    /// The timers armed and neither fired nor cancelled, earliest first.
    pub fn timers(&self) -> Vec<(TimerToken, Instant)> {
        let mut t: Vec<_> = self.timers.iter().map(|(k, v)| (*k, *v)).collect();
        t.sort_by_key(|(k, at)| (*at, *k));
        t
    }

    /// Every `cancel_timer` of a timer still armed, in order.
    pub fn cancelled_timers(&self) -> &[TimerToken] {
        &self.cancelled
    }

    /// How many times a picker (or the policy) asked for `Balancer::work`.
    pub fn work_requests(&self) -> usize {
        self.work_requests.load(Ordering::Acquire)
    }

    // --- Driving the policy, as the channel would ------------------------

    /// Gives the policy a resolver update.
    pub fn update(
        &mut self,
        balancer: &mut dyn Balancer,
        state: ClientConnState,
    ) -> Result<(), String> {
        let r = balancer.update_client_conn_state(self, state);
        self.announce_shutdowns(balancer);
        r
    }

    /// Gives the policy one endpoint per address, no config.
    pub fn update_addresses<'s>(
        &mut self,
        balancer: &mut dyn Balancer,
        addresses: impl IntoIterator<Item = &'s str>,
    ) -> Result<(), String> {
        let addresses = addresses.into_iter().map(Address::new).collect();
        self.update(balancer, ClientConnState::from_addresses(addresses, None))
    }

    /// Tells the policy the resolver failed.
    pub fn resolver_error(&mut self, balancer: &mut dyn Balancer, error: &str) {
        balancer.resolver_error(self, error);
        self.announce_shutdowns(balancer);
    }

    /// Delivers a subchannel state, TRANSIENT_FAILURE with the error
    /// "connection refused (test)" (`set_subconn_state` chooses another).
    pub fn set_state(
        &mut self,
        balancer: &mut dyn Balancer,
        sc: SubConnId,
        state: ConnectivityState,
    ) {
        let error = matches!(state, ConnectivityState::TransientFailure)
            .then(|| Arc::from("connection refused (test)"));
        // READY is connected; IDLE, TRANSIENT_FAILURE and SHUTDOWN are not
        // (a connection lost or failed: a test that means a failing health
        // check on a live connection says so with `set_connected` first and
        // `set_health_failed`); CONNECTING leaves it.
        if let Some(s) = self.subconn(sc) {
            match state {
                ConnectivityState::Ready => s.set_connected(true),
                ConnectivityState::Connecting => {}
                _ => s.set_connected(false),
            }
        }
        self.set_subconn_state(balancer, sc, SubConnState { state, error });
    }

    /// `sc`'s transport comes up while its health check is still to
    /// answer (gRFC A17): it is connected (`SubConn::is_connected`), still
    /// CONNECTING, and the policy hears so, as a channel tells it.
    pub fn set_connected(&mut self, balancer: &mut dyn Balancer, sc: SubConnId) {
        if let Some(s) = self.subconn(sc) {
            s.set_connected(true);
        }
        self.set_state(balancer, sc, ConnectivityState::Connecting);
    }

    /// `sc`, connected, fails its health check (gRFC A17): TRANSIENT_FAILURE
    /// on a live connection (`SubConn::is_connected` stays true).
    pub fn set_health_failed(&mut self, balancer: &mut dyn Balancer, sc: SubConnId) {
        self.set_subconn_state(
            balancer,
            sc,
            SubConnState {
                state: ConnectivityState::TransientFailure,
                error: Some(Arc::from("health check failed (test)")),
            },
        );
    }

    /// Delivers a subchannel state as given.
    pub fn set_subconn_state(
        &mut self,
        balancer: &mut dyn Balancer,
        sc: SubConnId,
        state: SubConnState,
    ) {
        balancer.update_subconn_state(self, sc, &state);
        self.announce_shutdowns(balancer);
    }

    /// Asks the policy to leave IDLE.
    pub fn exit_idle(&mut self, balancer: &mut dyn Balancer) {
        balancer.exit_idle(self);
        self.announce_shutdowns(balancer);
    }

    /// Runs `Balancer::work` once if any was requested since the last run
    /// (requests coalesce, as on the loop); whether it ran.
    pub fn run_work(&mut self, balancer: &mut dyn Balancer) -> bool {
        if self.work.swap(0, Ordering::AcqRel) == 0 {
            return false;
        }
        balancer.work(self);
        self.announce_shutdowns(balancer);
        true
    }

    /// Fires one armed timer now, whatever its deadline; false if it is not
    /// armed (fired, cancelled or unknown).
    pub fn fire_timer(&mut self, balancer: &mut dyn Balancer, token: TimerToken) -> bool {
        if self.timers.remove(&token).is_none() {
            return false;
        }
        balancer.timer(self, token);
        self.announce_shutdowns(balancer);
        true
    }

    /// Moves the clock to `at` unless it is already past it.
    fn set_now(&mut self, at: Instant) {
        let now = self.clock.now();
        if at > now {
            self.clock.advance(at - now);
        }
    }

    /// Moves the clock on by `by`, firing the timers that fall due on the
    /// way, in deadline order (each with the clock at its deadline). How
    /// many fired. Timers armed by a firing timer fire too if they fall
    /// within `by`.
    pub fn advance(&mut self, balancer: &mut dyn Balancer, by: Duration) -> usize {
        let end = self.clock.now() + by;
        let mut fired = 0;
        // Bounded: each round fires one timer, and a policy arming one
        // timer per fire at zero delay is stopped by the bound.
        for _ in 0..100_000 {
            let Some((token, at)) = self
                .timers()
                .into_iter()
                .next()
                .filter(|(_, at)| *at <= end)
            else {
                break;
            };
            self.set_now(at);
            self.fire_timer(balancer, token);
            fired += 1;
        }
        self.set_now(end);
        fired
    }

    /// Closes the policy: its last call. The subchannels it shut down and
    /// whose SHUTDOWN has not come reach nobody now (as in a channel, and
    /// gRPC-Go, where nothing reaches a closed balancer).
    /// A policy may create no subchannel in `close` (gRPC-Go refuses it).
    pub fn close(&mut self, balancer: &mut dyn Balancer) {
        self.closing = true;
        balancer.close(self);
        self.closing = false;
        self.unannounced.clear();
    }

    /// SHUTDOWN, once, for every subchannel the policy shut down since.
    fn announce_shutdowns(&mut self, balancer: &mut dyn Balancer) {
        for _ in 0..MAX_SHUTDOWN_ROUNDS {
            if self.unannounced.is_empty() {
                return;
            }
            for sc in std::mem::take(&mut self.unannounced) {
                let state = SubConnState {
                    state: ConnectivityState::Shutdown,
                    error: None,
                };
                balancer.update_subconn_state(self, sc, &state);
            }
        }
    }

    // --- Picking, as a reader would ----------------------------------------

    /// Picks once from the last picker as a reader does: through its
    /// rotation when it offers one, else `Picker::pick`. The pick's done
    /// hooks are not called (see `pick_done`).
    pub fn pick(&mut self) -> Picked {
        self.pick_with(&PickInfo::default(), None)
    }

    /// Picks once and reports `outcome` to every done hook the pick
    /// carried, outermost first, as `Pick::done` does.
    pub fn pick_done(&mut self, outcome: &DoneInfo<'_>) -> Picked {
        self.pick_with(&PickInfo::default(), Some(outcome))
    }

    /// Picks once with `info`; reports `outcome` to the pick's done hooks
    /// if given.
    pub fn pick_with(&mut self, info: &PickInfo<'_>, outcome: Option<&DoneInfo<'_>>) -> Picked {
        let Some(picker) = &self.picker else {
            return Picked::NoPicker;
        };
        if let Some(rotation) = picker.rotation() {
            return Picked::Complete {
                subconn: rotation.pick(&mut self.local).id(),
                hooks: 0,
            };
        }
        match picker.pick(info, &mut self.local) {
            PickResult::Complete { subconn, done } => {
                if let Some(outcome) = outcome {
                    done.report(subconn, outcome);
                }
                Picked::Complete {
                    subconn: subconn.id(),
                    hooks: done.len(),
                }
            }
            PickResult::Queue => Picked::Queue,
            PickResult::Fail(s) => Picked::Fail(s.clone()),
            PickResult::Drop(s) => Picked::Drop(s.clone()),
        }
    }

    /// The out-of-band listeners registered now: (subchannel, period), in
    /// registration order.
    pub fn oob_listeners(&self) -> Vec<(SubConnId, Duration)> {
        self.oob.values().map(|r| (r.subconn, r.period)).collect()
    }

    /// Delivers one out-of-band load report for `sc` to every listener
    /// registered on it, as the channel's ORCA stream would; returns how
    /// many heard it.
    pub fn oob_report(&mut self, sc: SubConnId, load: &[(&str, f64)]) -> usize {
        let mut heard = 0;
        for r in self.oob.values().filter(|r| r.subconn == sc) {
            r.listener.on_load_report(load);
            heard += 1;
        }
        heard
    }

    /// `n` picks' subchannels, in order (`None` for a pick that did not
    /// complete).
    pub fn picks(&mut self, n: usize) -> Vec<Option<SubConnId>> {
        (0..n)
            .map(|_| match self.pick() {
                Picked::Complete { subconn, .. } => Some(subconn),
                _ => None,
            })
            .collect()
    }
}

impl ClientConn for TestClientConn {
    fn new_subconn(&mut self, address: Address) -> Result<Arc<SubConn>, String> {
        if self.closing {
            return Err("balancer is being closed; no new SubConns allowed".into());
        }
        let id = SubConnId(self.next_subconn);
        self.next_subconn += 1;
        let sc = Arc::new(SubConn::new(id, address));
        self.subconns.push(sc.clone());
        Ok(sc)
    }

    fn connect(&mut self, sc: SubConnId) {
        self.connects.push(sc);
    }

    fn shutdown_subconn(&mut self, sc: SubConnId) {
        if self.subconn(sc).is_some() && !self.shutdowns.contains(&sc) {
            // As in a channel: its out-of-band registrations go with it.
            self.oob.retain(|_, r| r.subconn != sc);
            self.shutdowns.push(sc);
            self.unannounced.push(sc);
        }
    }

    fn update_state(&mut self, state: ConnectivityState, picker: Box<dyn Picker>) {
        self.states.push(state);
        self.picker = Some(Arc::from(picker));
    }

    fn resolve_now(&mut self) {
        self.resolve_now += 1;
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn authority(&self) -> Option<&str> {
        self.authority.as_deref()
    }

    fn schedule_timer(&mut self, after: Duration) -> TimerToken {
        let token = TimerToken(self.next_timer);
        self.next_timer += 1;
        self.timers.insert(token, self.clock.now() + after);
        token
    }

    fn cancel_timer(&mut self, token: TimerToken) {
        if self.timers.remove(&token).is_some() {
            self.cancelled.push(token);
        }
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// A fixed-seed generator of its own (so runs repeat), apart from the
    /// one picks use.
    fn random(&mut self) -> u64 {
        self.rng.random()
    }

    fn register_oob_listener(
        &mut self,
        sc: SubConnId,
        period: Duration,
        listener: Arc<dyn LoadReportListener>,
    ) -> OobListenerId {
        let id = OobListenerId(self.next_oob);
        self.next_oob += 1;
        self.oob.insert(
            id,
            OobRegistration {
                subconn: sc,
                period,
                listener,
            },
        );
        id
    }

    fn unregister_oob_listener(&mut self, id: OobListenerId) {
        self.oob.remove(&id);
    }

    fn work_scheduler(&self) -> WorkScheduler {
        let (work, requests) = (self.work.clone(), self.work_requests.clone());
        WorkScheduler::new(move || {
            work.fetch_add(1, Ordering::AcqRel);
            requests.fetch_add(1, Ordering::AcqRel);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::Builder;
    use crate::policy::pick_first::PickFirstBuilder;
    use crate::policy::round_robin::RoundRobinBuilder;
    use ConnectivityState::{Connecting, Idle, Ready, Shutdown, TransientFailure};

    const A: &str = "127.0.0.1:1001";
    const B: &str = "127.0.0.1:1002";
    const C: &str = "127.0.0.1:1003";

    fn id(cc: &TestClientConn, addr: &str) -> SubConnId {
        cc.subconn_for(addr).expect("a subchannel for addr").id()
    }

    #[test]
    fn round_robin_rotates_over_the_ready_subchannels_only() {
        let mut cc = TestClientConn::new();
        let mut rr = RoundRobinBuilder.build();
        cc.update_addresses(&mut *rr, [A, B, C]).unwrap();
        assert_eq!(cc.subconns().len(), 3);
        assert_eq!(cc.connects().len(), 3, "every subchannel connects");
        assert_eq!(cc.state(), Some(Connecting));
        assert_eq!(cc.pick(), Picked::Queue);
        let (a, b, c) = (id(&cc, A), id(&cc, B), id(&cc, C));
        cc.set_state(&mut *rr, a, Ready);
        cc.set_state(&mut *rr, b, Ready);
        cc.set_state(&mut *rr, c, TransientFailure);
        assert_eq!(cc.state(), Some(Ready));
        let picks = cc.picks(6);
        for sc in [a, b] {
            assert_eq!(picks.iter().filter(|p| **p == Some(sc)).count(), 3);
        }
    }

    /// round_robin over A and B, A READY: the policy, A's and B's ids.
    fn rr_with_a_ready() -> (TestClientConn, Box<dyn Balancer>, SubConnId, SubConnId) {
        let mut cc = TestClientConn::new();
        let mut rr = RoundRobinBuilder.build();
        cc.update_addresses(&mut *rr, [A, B]).unwrap();
        let (a, b) = (id(&cc, A), id(&cc, B));
        cc.set_state(&mut *rr, a, Ready);
        (cc, rr, a, b)
    }

    #[test]
    fn round_robin_publishes_no_picker_when_nothing_pickable_changed() {
        let (mut cc, mut rr, _, b) = rr_with_a_ready();
        let published = cc.pickers_published();
        // b fails, then connects again: a is still the only READY one.
        cc.set_state(&mut *rr, b, TransientFailure);
        cc.set_state(&mut *rr, b, Connecting);
        // The same addresses again: same children, same rotation.
        cc.update_addresses(&mut *rr, [A, B]).unwrap();
        assert_eq!(cc.pickers_published(), published);
        cc.set_state(&mut *rr, b, Ready);
        assert_eq!(cc.pickers_published(), published + 1, "b joined");
    }

    /// A failing endpoint asks for re-resolution when its child reports the
    /// failure, not again on each later event while it stays failed (its
    /// backoff ending, the next attempt starting): gRPC-Go's pickers ask
    /// once per failed pass.
    #[test]
    fn round_robin_asks_for_re_resolution_once_per_reported_failure() {
        let (mut cc, mut rr, _, b) = rr_with_a_ready();
        cc.set_state(&mut *rr, b, ConnectivityState::Connecting);
        let before = cc.resolve_now_requests();
        cc.set_state(&mut *rr, b, ConnectivityState::TransientFailure);
        let after_failure = cc.resolve_now_requests();
        assert!(after_failure > before, "the failure is reported");
        // Sticky TRANSIENT_FAILURE: backoff over, a new attempt.
        cc.set_state(&mut *rr, b, Idle);
        cc.set_state(&mut *rr, b, ConnectivityState::Connecting);
        assert_eq!(cc.resolve_now_requests(), after_failure);
        // The attempt fails too: reported again, asked again.
        cc.set_state(&mut *rr, b, ConnectivityState::TransientFailure);
        assert!(cc.resolve_now_requests() > after_failure);
        cc.close(&mut *rr);
    }

    /// A health check failing on a live connection fails the endpoint but
    /// asks for no re-resolution (gRPC-Go's pick_first and endpointsharding,
    /// C-core's health watcher: re-resolution follows connection failures).
    #[test]
    fn round_robin_does_not_re_resolve_on_a_failed_health_check() {
        let (mut cc, mut rr, _, b) = rr_with_a_ready();
        cc.set_state(&mut *rr, b, Ready);
        let before = cc.resolve_now_requests();
        cc.set_health_failed(&mut *rr, b);
        assert_eq!(cc.resolve_now_requests(), before);
        // Its connection then fails: that does.
        cc.set_state(&mut *rr, b, Idle);
        assert!(cc.resolve_now_requests() > before);
        cc.close(&mut *rr);
    }

    #[test]
    fn round_robin_shuts_down_a_removed_address_and_stops_picking_it() {
        let mut cc = TestClientConn::new();
        let mut rr = RoundRobinBuilder.build();
        cc.update_addresses(&mut *rr, [A, B]).unwrap();
        let (a, b) = (id(&cc, A), id(&cc, B));
        cc.set_state(&mut *rr, a, Ready);
        cc.set_state(&mut *rr, b, Ready);
        cc.update_addresses(&mut *rr, [B]).unwrap();
        assert_eq!(cc.shutdowns(), [a]);
        assert_eq!(cc.picks(4), [Some(b); 4]);
        // A lost connection (IDLE) reconnects at once and re-resolves.
        let resolves = cc.resolve_now_requests();
        cc.set_state(&mut *rr, b, Idle);
        assert_eq!(cc.connects().iter().filter(|s| **s == b).count(), 2);
        assert!(cc.resolve_now_requests() > resolves);
        cc.close(&mut *rr);
        assert_eq!(cc.shutdowns(), [a, b]);
    }

    #[test]
    fn pick_first_tries_addresses_in_order_and_sticks_to_the_first_ready() {
        let mut cc = TestClientConn::new();
        let mut pf = PickFirstBuilder.build();
        cc.update_addresses(&mut *pf, [A, B]).unwrap();
        let a = id(&cc, A);
        assert_eq!(cc.connects(), [a], "only the first address at first");
        // Happy eyeballs: the next address after 250 ms without an answer.
        let timer = cc.timers().first().expect("an attempt timer").0;
        cc.set_state(&mut *pf, a, Connecting);
        cc.set_state(&mut *pf, a, TransientFailure);
        assert_eq!(cc.cancelled_timers(), [timer]);
        let b = id(&cc, B);
        assert_eq!(cc.connects(), [a, b]);
        cc.set_state(&mut *pf, b, Connecting);
        cc.set_state(&mut *pf, b, Ready);
        assert_eq!(cc.state(), Some(Ready));
        assert_eq!(cc.picks(3), [Some(b); 3]);
        assert!(cc.shutdowns().contains(&a), "the others are shut down");
    }

    #[test]
    fn pick_first_happy_eyeballs_timer_starts_the_next_attempt() {
        let mut cc = TestClientConn::new();
        let mut pf = PickFirstBuilder.build();
        cc.update_addresses(&mut *pf, [A, B]).unwrap();
        let a = id(&cc, A);
        cc.set_state(&mut *pf, a, Connecting);
        assert_eq!(cc.advance(&mut *pf, Duration::from_millis(249)), 0);
        assert_eq!(cc.connects(), [a]);
        assert_eq!(cc.advance(&mut *pf, Duration::from_millis(1)), 1);
        assert_eq!(cc.connects(), [a, id(&cc, B)], "without cancelling a");
    }

    #[test]
    fn pick_first_goes_idle_and_a_pick_asks_for_work() {
        let mut cc = TestClientConn::new();
        let mut pf = PickFirstBuilder.build();
        cc.update_addresses(&mut *pf, [A]).unwrap();
        let a = id(&cc, A);
        cc.set_state(&mut *pf, a, Ready);
        cc.set_state(&mut *pf, a, Idle);
        assert_eq!(cc.state(), Some(Idle));
        assert!(!cc.run_work(&mut *pf), "no work asked for yet");
        assert_eq!(cc.pick(), Picked::Queue);
        assert_eq!(cc.pick(), Picked::Queue);
        assert_eq!(cc.work_requests(), 1, "the first pick asks, once");
        assert!(cc.run_work(&mut *pf));
        assert_eq!(cc.connects(), [a, a], "reconnecting");
        assert_eq!(cc.state(), Some(Connecting));
    }

    #[test]
    fn shutdown_is_delivered_once_after_the_callback() {
        let mut cc = TestClientConn::new();
        let mut pf = PickFirstBuilder.build();
        cc.update_addresses(&mut *pf, [A]).unwrap();
        let a = id(&cc, A);
        cc.update_addresses(&mut *pf, [B]).unwrap();
        assert_eq!(cc.shutdowns(), [a]);
        assert!(cc.unannounced.is_empty());
        // A second shutdown of the same subchannel is ignored.
        cc.shutdown_subconn(a);
        assert_eq!(cc.shutdowns(), [a]);
        let _ = Shutdown;
    }
}
