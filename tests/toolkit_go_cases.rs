//! gRPC-Go's unit tests of its reusable parent policies, ported
//! case by case onto switchyard's policy toolkit (public API only):
//!
//! - graceful switch: grpc-go `internal/balancer/gracefulswitch/
//!   gracefulswitch_test.go` against `switchyard::balancer::graceful_switch`;
//! - endpoint sharding / balancer group: grpc-go `balancer/endpointsharding`
//!   and `internal/balancergroup` against `ChildManager` and the policies
//!   built on it (round_robin).
//!
//! The child policies here are scripted mocks (gRPC-Go's `mockBalancer`): a
//! mock logs every call it gets, makes one subchannel per address it is
//! given, publishes the states its config scripts when it gets an update,
//! and mirrors each of its subchannels' states (or plays a scripted list).
//! Its picker completes on its first subchannel when the step says so:
//! which subchannel a pick lands on tells whose picker is published.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use switchyard::balancer::child_manager::{ChildManager, ChildParent, ChildUpdate};
use switchyard::balancer::graceful_switch::{GracefulSwitch, SwitchTo, Switching};
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::{
    Address, Balancer, Builder, ClientConn, ClientConnState, Code, ConnectivityState, DoneHooks,
    Endpoint, LbConfig, PickInfo, PickLocal, PickResult, Picker, Status, SubConn, SubConnId,
    SubConnState, TimerToken,
};
use ConnectivityState::{Connecting, Idle, Ready, TransientFailure};

const A: &str = "127.0.0.1:3001";
const B: &str = "127.0.0.1:3002";
const C: &str = "127.0.0.1:3003";

type Log = Arc<Mutex<Vec<String>>>;

fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

fn has(log: &Log, line: &str) -> bool {
    lines(log).iter().any(|l| l == line)
}

fn count(log: &Log, line: &str) -> usize {
    lines(log).iter().filter(|l| *l == line).count()
}

/// One scripted publish: a state, and whether the picker completes (on
/// the mock's first subchannel) rather than queueing / failing.
#[derive(Clone, Copy, Debug)]
struct Step(ConnectivityState, bool);

/// A mock's config.
#[derive(Default)]
struct Script {
    /// Published in order when the mock gets an update.
    on_update: Vec<Step>,
    /// Published in order on every subchannel state (instead of mirroring
    /// the state) when not empty.
    on_state: Vec<Step>,
    /// Asks for re-resolution on every subchannel state.
    resolve_on_state: bool,
}

fn script(on_update: &[Step]) -> Option<LbConfig> {
    Some(Arc::new(Script {
        on_update: on_update.to_vec(),
        ..Script::default()
    }))
}

struct MockBuilder {
    name: &'static str,
    log: Log,
    built: Arc<AtomicUsize>,
}

impl MockBuilder {
    fn built(name: &'static str, log: &Log) -> Arc<dyn Builder> {
        Arc::new(MockBuilder {
            name,
            log: log.clone(),
            built: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl Builder for MockBuilder {
    fn name(&self) -> &str {
        self.name
    }
    fn build(&self) -> Box<dyn Balancer> {
        let n = self.built.fetch_add(1, Ordering::SeqCst) + 1;
        Box::new(Mock {
            tag: format!("{}#{n}", self.name),
            log: self.log.clone(),
            subconns: Vec::new(),
            script: None,
        })
    }
}

struct Mock {
    tag: String,
    log: Log,
    subconns: Vec<Arc<SubConn>>,
    script: Option<Arc<Script>>,
}

impl Mock {
    fn note(&self, what: String) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {what}", self.tag));
    }
    fn publish(&self, cc: &mut dyn ClientConn, step: Step) {
        let picker = MockPicker {
            sc: self.subconns.first().cloned().filter(|_| step.1),
            fail: (step.0 == TransientFailure)
                .then(|| Status::new(Code::Unavailable, format!("{} failed", self.tag))),
        };
        cc.update_state(step.0, Box::new(picker));
    }
}

impl Balancer for Mock {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        self.note(format!("update {}", state.addresses.len()));
        if let Some(s) = state
            .config
            .clone()
            .and_then(|c| c.downcast::<Script>().ok())
        {
            self.script = Some(s);
        }
        for a in &state.addresses {
            if self.subconns.iter().any(|s| s.addr() == a.addr) {
                continue;
            }
            match cc.new_subconn(a.clone()) {
                Ok(sc) => {
                    cc.connect(sc.id());
                    self.subconns.push(sc);
                }
                Err(e) => self.note(format!("new_subconn error: {e}")),
            }
        }
        let steps = self
            .script
            .as_ref()
            .map(|s| s.on_update.clone())
            .unwrap_or_default();
        for step in steps {
            self.publish(cc, step);
        }
        Ok(())
    }
    fn resolver_error(&mut self, _cc: &mut dyn ClientConn, error: &str) {
        self.note(format!("resolver_error {error}"));
    }
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, sc: SubConnId, s: &SubConnState) {
        self.note(format!("sc{} {}", sc.0, s.state));
        if s.state == ConnectivityState::Shutdown {
            self.subconns.retain(|x| x.id() != sc);
            return;
        }
        let script = self.script.clone().unwrap_or_default();
        if script.resolve_on_state {
            cc.resolve_now();
        }
        if script.on_state.is_empty() {
            self.publish(cc, Step(s.state, s.state == Ready));
        } else {
            for step in &script.on_state {
                self.publish(cc, *step);
            }
        }
    }
    fn exit_idle(&mut self, _cc: &mut dyn ClientConn) {
        self.note("exit_idle".into());
    }
    fn timer(&mut self, _cc: &mut dyn ClientConn, _token: TimerToken) {}
    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.note("close".into());
        // A closing policy may create no subchannel (gRPC-Go refuses it).
        if let Err(e) = cc.new_subconn(Address::new(C)) {
            self.note(format!("new_subconn in close refused: {e}"));
        }
    }
}

struct MockPicker {
    sc: Option<Arc<SubConn>>,
    fail: Option<Status>,
}

impl Picker for MockPicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        match (&self.sc, &self.fail) {
            (Some(sc), _) => PickResult::Complete {
                subconn: sc,
                done: DoneHooks::NONE,
            },
            (None, Some(s)) => PickResult::Fail(s),
            (None, None) => PickResult::Queue,
        }
    }
}

/// Gives the switch an update naming `builder` (gRPC-Go's
/// `UpdateClientConnState` with a `gracefulswitch.ParseConfig` config).
fn switch(
    cc: &mut TestClientConn,
    gs: &mut GracefulSwitch,
    builder: &Arc<dyn Builder>,
    addrs: &[&str],
    config: Option<LbConfig>,
) {
    let state = ClientConnState::from_addresses(
        addrs.iter().map(|a| Address::new(*a)).collect(),
        SwitchTo::config(builder.clone(), config),
    );
    cc.update(gs, state).expect("update");
}

fn id(cc: &TestClientConn, addr: &str) -> SubConnId {
    cc.subconn_for(addr).expect("a subchannel").id()
}

fn on(sc: SubConnId) -> Picked {
    Picked::Complete {
        subconn: sc,
        hooks: 0,
    }
}

/// mock_1 current on A, READY (published); mock_2 pending on B, having
/// published `pending` (as scripted for its first update).
fn current_ready_then_pending(
    log: &Log,
    pending: &[Step],
) -> (
    TestClientConn,
    GracefulSwitch,
    Arc<dyn Builder>,
    Arc<dyn Builder>,
) {
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    let m1 = MockBuilder::built("mock_1", log);
    let m2 = MockBuilder::built("mock_2", log);
    switch(&mut cc, &mut gs, &m1, &[A], None);
    let a = id(&cc, A);
    cc.set_state(&mut gs, a, Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert_eq!(cc.pick(), on(a));
    switch(&mut cc, &mut gs, &m2, &[B], script(pending));
    (cc, gs, m1, m2)
}

// ---------------------------------------------------------------------------
// Graceful switch (gracefulswitch_test.go).

/// TestSuccessfulFirstUpdate + TestTwoBalancersSameType (through the
/// config path): the first policy is current at once; with a pending one,
/// updates go to the pending only; the pending's CONNECTING is not
/// forwarded; its READY is, and the old current is closed and its
/// subchannels shut down (their SHUTDOWN reaches nobody).
#[test]
fn gs_pending_ready_swaps_in_and_closes_the_old_current() {
    let log: Log = Default::default();
    let (mut cc, mut gs, m1, m2) = current_ready_then_pending(&log, &[Step(Connecting, false)]);
    let (a, b) = (id(&cc, A), id(&cc, B));
    assert_eq!(gs.current_policy(), Some("mock_1"));
    assert_eq!(gs.pending_policy(), Some("mock_2"));
    assert_eq!(count(&log, "mock_1#1 update 1"), 1);
    assert_eq!(count(&log, "mock_2#1 update 1"), 1);
    assert_eq!(cc.states(), [Ready], "the pending's CONNECTING is kept");
    // Another update (same policy named): to the pending only.
    switch(&mut cc, &mut gs, &m2, &[B], script(&[]));
    assert_eq!(count(&log, "mock_1#1 update 1"), 1);
    assert_eq!(count(&log, "mock_2#1 update 1"), 2);
    // The pending goes READY: swapped in.
    cc.set_state(&mut gs, b, Ready);
    assert_eq!(cc.states(), [Ready, Ready]);
    assert_eq!(cc.pick(), on(b));
    assert!(has(&log, "mock_1#1 close"));
    assert_eq!(cc.shutdowns(), [a]);
    assert!(!has(&log, "mock_1#1 sc1 SHUTDOWN"), "{:?}", lines(&log));
    assert_eq!(gs.current_policy(), Some("mock_2"));
    assert_eq!(gs.pending_policy(), None);
    // The new current's own states now reach the channel.
    cc.set_state(&mut gs, b, Idle);
    assert_eq!(cc.states(), [Ready, Ready, Idle]);
    let _ = m1;
}

/// TestCurrentNotReadyPendingUpdate: the current not READY, any update of
/// the pending (even CONNECTING) swaps it in, its state and picker
/// forwarded.
#[test]
fn gs_current_not_ready_pending_connecting_swaps_in() {
    let log: Log = Default::default();
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    let m1 = MockBuilder::built("mock_1", &log);
    let m2 = MockBuilder::built("mock_2", &log);
    switch(&mut cc, &mut gs, &m1, &[A], None);
    let a = id(&cc, A);
    assert_eq!(cc.pickers_published(), 0);
    switch(
        &mut cc,
        &mut gs,
        &m2,
        &[B],
        script(&[Step(Connecting, true)]),
    );
    assert_eq!(cc.states(), [Connecting]);
    assert_eq!(cc.pick(), on(id(&cc, B)));
    assert!(has(&log, "mock_1#1 close"));
    assert_eq!(cc.shutdowns(), [a]);
}

/// TestCurrentLeavingReady: the current leaving READY with a pending one
/// swaps the pending in with its cached state and picker; the old one's
/// non-READY state is not forwarded.
#[test]
fn gs_current_leaving_ready_swaps_in_the_cached_pending_state() {
    let log: Log = Default::default();
    let (mut cc, mut gs, _m1, _m2) = current_ready_then_pending(&log, &[Step(Connecting, true)]);
    let (a, b) = (id(&cc, A), id(&cc, B));
    assert_eq!(cc.states(), [Ready]);
    cc.set_state(&mut gs, a, Idle);
    assert_eq!(cc.states(), [Ready, Connecting], "no IDLE from the old one");
    assert_eq!(cc.pick(), on(b), "the pending's cached picker");
    assert!(has(&log, "mock_1#1 close"));
    assert!(has(&log, "mock_1#1 new_subconn in close refused: balancer is being closed; no new SubConns allowed"), "{:?}", lines(&log));
    assert_eq!(cc.shutdowns(), [a]);
}

/// TestBalancerSubconns + ResolveNow: subchannel states reach the policy
/// that made the subchannel, current or pending; re-resolution asked by
/// the current while a pending one exists is ignored (gRPC-Go's
/// `balancerWrapper.ResolveNow`: only the latest policy's).
#[test]
fn gs_subconn_states_reach_their_owner_and_only_the_latest_resolves() {
    let log: Log = Default::default();
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    let m1 = MockBuilder::built("mock_1", &log);
    let m2 = MockBuilder::built("mock_2", &log);
    let resolving = |on_state: Vec<Step>| -> Option<LbConfig> {
        Some(Arc::new(Script {
            on_update: vec![],
            on_state,
            resolve_on_state: true,
        }))
    };
    switch(&mut cc, &mut gs, &m1, &[A], resolving(vec![]));
    let a = id(&cc, A);
    cc.set_state(&mut gs, a, Ready);
    assert_eq!(cc.resolve_now_requests(), 1, "current alone: passed on");
    switch(
        &mut cc,
        &mut gs,
        &m2,
        &[B],
        resolving(vec![Step(Connecting, false)]),
    );
    let b = id(&cc, B);
    let published = cc.pickers_published();
    cc.set_state(&mut gs, a, Ready);
    assert!(has(&log, "mock_1#1 sc1 READY"));
    assert_eq!(
        cc.pickers_published(),
        published + 1,
        "current still forwarded"
    );
    assert_eq!(cc.resolve_now_requests(), 1, "the current's ignored");
    cc.set_state(&mut gs, b, Connecting);
    assert!(has(&log, &format!("mock_2#1 sc{} CONNECTING", b.0)));
    assert!(!has(&log, &format!("mock_1#1 sc{} CONNECTING", b.0)));
    assert_eq!(cc.resolve_now_requests(), 2, "the pending's passed on");
    assert_eq!(gs.pending_policy(), Some("mock_2"), "no swap yet");
    assert_eq!(cc.pick(), on(a));
}

/// TestBalancerClose: closing closes both and shuts down every subchannel
/// either made.
#[test]
fn gs_close_closes_both_and_shuts_down_every_subchannel() {
    let log: Log = Default::default();
    let (mut cc, mut gs, _m1, _m2) = current_ready_then_pending(&log, &[Step(Connecting, false)]);
    let (a, b) = (id(&cc, A), id(&cc, B));
    cc.close(&mut gs);
    assert!(has(&log, "mock_1#1 close"));
    assert!(has(&log, "mock_2#1 close"));
    let mut shut = cc.shutdowns().to_vec();
    shut.sort();
    assert_eq!(shut, [a, b]);
}

/// TestResolverError + TestExitIdle: both go to the latest policy only.
#[test]
fn gs_resolver_error_and_exit_idle_go_to_the_latest() {
    let log: Log = Default::default();
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    let m1 = MockBuilder::built("mock_1", &log);
    let m2 = MockBuilder::built("mock_2", &log);
    switch(&mut cc, &mut gs, &m1, &[A], None);
    cc.resolver_error(&mut gs, "e1");
    cc.exit_idle(&mut gs);
    assert!(has(&log, "mock_1#1 resolver_error e1"));
    assert!(has(&log, "mock_1#1 exit_idle"));
    cc.set_state(&mut gs, id(&cc, A), Ready);
    switch(
        &mut cc,
        &mut gs,
        &m2,
        &[B],
        script(&[Step(Connecting, false)]),
    );
    cc.resolver_error(&mut gs, "e2");
    cc.exit_idle(&mut gs);
    assert!(has(&log, "mock_2#1 resolver_error e2"));
    assert!(!has(&log, "mock_1#1 resolver_error e2"));
    assert_eq!(count(&log, "mock_1#1 exit_idle"), 1);
    assert_eq!(count(&log, "mock_2#1 exit_idle"), 1);
}

/// gracefulswitch `UpdateClientConnState` compares the config's policy
/// with the *latest* one: naming the current policy again while another is
/// pending builds a fresh one as pending (closing the pending), and the
/// serving one keeps serving and gets nothing.
#[test]
fn gs_switching_back_to_the_current_policy_builds_a_new_pending() {
    let log: Log = Default::default();
    let (mut cc, mut gs, m1, _m2) = current_ready_then_pending(&log, &[Step(Connecting, false)]);
    let a = id(&cc, A);
    switch(
        &mut cc,
        &mut gs,
        &m1,
        &[C],
        script(&[Step(Connecting, false)]),
    );
    assert!(has(&log, "mock_2#1 close"));
    assert!(has(&log, "mock_1#2 update 1"));
    assert_eq!(count(&log, "mock_1#1 update 1"), 1);
    assert_eq!(gs.pending_policy(), Some("mock_1"));
    assert_eq!(cc.pick(), on(a));
}

/// gracefulswitch `ResolverError` with no policy yet: TRANSIENT_FAILURE
/// with a picker failing with the resolver's error (UNAVAILABLE).
#[test]
fn gs_resolver_error_without_a_policy_fails_with_the_error() {
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    cc.resolver_error(&mut gs, "dns: no such host");
    assert_eq!(cc.states(), [TransientFailure]);
    match cc.pick() {
        Picked::Fail(s) => {
            assert_eq!(s.code(), Code::Unavailable);
            assert_eq!(s.message(), "dns: no such host");
        }
        other => panic!("{other:?}"),
    }
}

/// TestPendingReplacedByAnotherPending: a new pending closes the old
/// pending (and shuts down its subchannels); the current leaving READY
/// then swaps in the new pending with its default state: CONNECTING,
/// queueing (`ErrNoSubConnAvailable`).
#[test]
fn gs_pending_replaced_by_another_pending() {
    let log: Log = Default::default();
    let (mut cc, mut gs, _m1, _m2) = current_ready_then_pending(&log, &[Step(Connecting, true)]);
    let (a, b) = (id(&cc, A), id(&cc, B));
    let m3 = MockBuilder::built("mock_3", &log);
    switch(&mut cc, &mut gs, &m3, &[C], None);
    assert!(has(&log, "mock_2#1 close"));
    assert_eq!(cc.shutdowns(), [b]);
    assert_eq!(gs.pending_policy(), Some("mock_3"));
    assert_eq!(cc.states(), [Ready]);
    cc.set_state(&mut gs, a, Idle);
    assert_eq!(cc.states(), [Ready, Connecting]);
    assert_eq!(cc.pick(), Picked::Queue);
    assert_eq!(gs.current_policy(), Some("mock_3"));
}

// ---------------------------------------------------------------------------
// Child manager / endpoint sharding (endpointsharding, balancergroup).

/// A bare endpoint-sharding parent over mocks: one child per endpoint,
/// publishing nothing itself (the tests read the children).
struct Sharding {
    children: ChildManager,
    child: Arc<dyn Builder>,
}

impl ChildParent for Sharding {
    fn children(&mut self) -> &mut ChildManager {
        &mut self.children
    }
    fn child_changed(&mut self, _cc: &mut dyn ClientConn, _key: &str) {}
}

impl Balancer for Sharding {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let child = self.child.clone();
        self.children
            .update_endpoints(cc, &state.endpoints, &child, state.config.clone());
        Ok(())
    }
    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.children.resolver_error(cc, error);
    }
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, sc: SubConnId, s: &SubConnState) {
        self.route_subconn_state(cc, sc, s);
    }
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        self.exit_idle_children(cc);
    }
    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.children.close(cc);
    }
}

fn ep(addrs: &[&str]) -> Endpoint {
    Endpoint::new(addrs.iter().map(|a| Address::new(*a)).collect())
}

/// endpointsharding: one child per unique endpoint (duplicates skipped);
/// an endpoint of several addresses is one child given all of them;
/// resolver errors and ExitIdle reach every child; a removed endpoint's
/// child is closed and its subchannels shut down.
#[test]
fn sharding_children_follow_the_endpoints() {
    let log: Log = Default::default();
    let mut cc = TestClientConn::new();
    let mut p = Sharding {
        children: ChildManager::new(),
        child: MockBuilder::built("leaf", &log),
    };
    let state = ClientConnState::new(vec![ep(&[A, B]), ep(&[C]), ep(&[B, A])], None);
    cc.update(&mut p, state).unwrap();
    assert_eq!(p.children.len(), 2, "{:?}", p.children.keys());
    assert_eq!(count(&log, "leaf#1 update 2"), 1, "{:?}", lines(&log));
    assert_eq!(count(&log, "leaf#2 update 1"), 1);
    cc.resolver_error(&mut p, "boom");
    cc.exit_idle(&mut p);
    for leaf in ["leaf#1", "leaf#2"] {
        assert!(has(&log, &format!("{leaf} resolver_error boom")));
        assert!(has(&log, &format!("{leaf} exit_idle")));
    }
    let c = id(&cc, C);
    cc.update(&mut p, ClientConnState::new(vec![ep(&[A, B])], None))
        .unwrap();
    assert!(has(&log, "leaf#2 close"));
    assert_eq!(cc.shutdowns(), [c]);
    assert_eq!(p.children.len(), 1);
}

/// balancergroup's TestBalancerGracefulSwitch: a parent's named child run
/// through a graceful switch (`Switching` + `SwitchTo`) switches its
/// policy gracefully: the new policy's CONNECTING is not published up, its
/// READY is, and the old policy's subchannels are shut down.
#[test]
fn child_switching_policy_gracefully() {
    let log: Log = Default::default();
    let mut cc = TestClientConn::new();
    let m1 = MockBuilder::built("mock_1", &log);
    let m2 = MockBuilder::built("mock_2", &log);
    let switching: Arc<dyn Builder> = Arc::new(Switching::labelled("x"));
    let mut p = Sharding {
        children: ChildManager::new(),
        child: m1.clone(),
    };
    let update =
        |p: &mut Sharding, cc: &mut TestClientConn, b: &Arc<dyn Builder>, addrs: &[&str]| {
            let state = ClientConnState::from_addresses(
                addrs.iter().map(|a| Address::new(*a)).collect(),
                SwitchTo::config(b.clone(), None),
            );
            p.children
                .update(
                    cc,
                    vec![ChildUpdate {
                        key: "x".into(),
                        builder: switching.clone(),
                        state,
                    }],
                )
                .unwrap();
        };
    update(&mut p, &mut cc, &m1, &[A, B]);
    let (a, b) = (id(&cc, A), id(&cc, B));
    cc.set_state(&mut p, a, Ready);
    let x = |p: &Sharding| {
        let c = p.children.get("x").unwrap();
        (c.state(), c.picker().clone())
    };
    assert_eq!(x(&p).0, Ready);
    let ready_picker = x(&p).1;
    update(&mut p, &mut cc, &m2, &[C]);
    let c = id(&cc, C);
    cc.set_state(&mut p, c, Connecting);
    assert!(has(&log, &format!("mock_2#1 sc{} CONNECTING", c.0)));
    assert!(
        Arc::ptr_eq(&x(&p).1, &ready_picker),
        "nothing new published"
    );
    cc.set_state(&mut p, c, Ready);
    assert_eq!(x(&p).0, Ready);
    assert!(!Arc::ptr_eq(&x(&p).1, &ready_picker));
    assert!(has(&log, "mock_1#1 close"));
    let mut shut = cc.shutdowns().to_vec();
    shut.sort();
    assert_eq!(shut, [a, b]);
    // The new policy's subchannel still reaches it, through both layers.
    cc.set_state(&mut p, c, Idle);
    assert!(has(&log, &format!("mock_2#1 sc{} IDLE", c.0)));
    assert_eq!(x(&p).0, Idle);
}

/// The same for the current: gRPC-Go swaps the pending in as soon as the
/// current reports anything but READY while a pending one exists, even if
/// the current reports READY again within the same call.
#[test]
fn gs_current_leaving_ready_within_one_call_swaps_in_the_pending() {
    let log: Log = Default::default();
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    let m1 = MockBuilder::built("mock_1", &log);
    let m2 = MockBuilder::built("mock_2", &log);
    let bouncing = Some(Arc::new(Script {
        on_update: vec![],
        on_state: vec![Step(Idle, false), Step(Ready, true)],
        resolve_on_state: false,
    }) as LbConfig);
    switch(&mut cc, &mut gs, &m1, &[A], bouncing);
    let a = id(&cc, A);
    cc.set_state(&mut gs, a, Ready);
    switch(
        &mut cc,
        &mut gs,
        &m2,
        &[B],
        script(&[Step(Connecting, false)]),
    );
    // The current reports IDLE then READY in one callback.
    cc.set_state(&mut gs, a, Ready);
    assert_eq!(
        gs.current_policy(),
        Some("mock_2"),
        "states {:?}",
        cc.states()
    );
    assert!(has(&log, "mock_1#1 close"));
    assert_eq!(cc.pick(), Picked::Queue, "the pending's cached CONNECTING");
}

/// Without any switching: gRPC-Go forwards every `UpdateState` of the
/// current policy to the channel (`bw.gsb.cc.UpdateState(state)` per
/// call); switchyard forwards only the last one of a callback, so a
/// channel whose policy reports CONNECTING then TRANSIENT_FAILURE in one
/// update never reports CONNECTING.
#[test]
fn gs_forwards_every_publish_of_the_current() {
    let log: Log = Default::default();
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    let m1 = MockBuilder::built("mock_1", &log);
    switch(
        &mut cc,
        &mut gs,
        &m1,
        &[A],
        script(&[Step(Connecting, false), Step(TransientFailure, false)]),
    );
    assert_eq!(cc.states(), [Connecting, TransientFailure]);
}

/// gracefulswitch `balancerWrapper.UpdateState` runs the switch rules on
/// *every* `UpdateState` call of a child, as it is made: a pending policy
/// that reports TRANSIENT_FAILURE is swapped in at once ("state !=
/// CONNECTING"), whatever it reports next in the same call (here
/// CONNECTING, which, from the new current, is forwarded too). Switchyard's
/// `ChildManager` keeps only a child's last publish of a callback, so the
/// switch never sees the TRANSIENT_FAILURE and keeps the old policy.
#[test]
fn gs_pending_publishing_tf_then_connecting_in_one_call_is_swapped_in() {
    let log: Log = Default::default();
    let (cc, gs, _m1, _m2) = current_ready_then_pending(
        &log,
        &[Step(TransientFailure, false), Step(Connecting, false)],
    );
    // gRPC-Go: swap at the TF (TF forwarded), then the new current's
    // CONNECTING forwarded; the old current closed.
    assert_eq!(
        cc.states(),
        [Ready, TransientFailure, Connecting],
        "current={:?} pending={:?}",
        gs.current_policy(),
        gs.pending_policy()
    );
    assert_eq!(gs.current_policy(), Some("mock_2"));
    assert!(has(&log, "mock_1#1 close"));
}
