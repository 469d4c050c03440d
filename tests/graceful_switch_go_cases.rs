//! gRPC-Go's graceful LB policy switch, beyond what
//! tests/toolkit_go_cases.rs, tests/engine/graceful_switch.rs,
//! tests/managed/switch.rs and tests/toolkit.rs already pin.
//!
//! Sources: grpc-go internal/balancer/gracefulswitch/gracefulswitch.go and
//! gracefulswitch_test.go (unit level, here against `GracefulSwitch` with
//! `TestClientConn` and scripted mocks), test/balancer_switching_test.go
//! (channel level, here with real echo servers on 127.0.0.1 and a fake
//! resolver pushing addresses and service config together, as Go's manual
//! resolver does).

#[path = "common/mod.rs"]
mod common;

use common::{plaintext, rpc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::balancer::graceful_switch::{GracefulSwitch, SwitchTo};
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::ResolverState;
use switchyard::ConnectivityState::{self, *};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

// =====================================================================
// Unit level: GracefulSwitch + TestClientConn + scripted mocks.
// =====================================================================

const A: &str = "127.0.0.1:4001";
const B: &str = "127.0.0.1:4002";
const C: &str = "127.0.0.1:4003";

type Log = Arc<Mutex<Vec<String>>>;

fn has(log: &Log, line: &str) -> bool {
    log.lock().unwrap().iter().any(|l| l == line)
}

/// One scripted publish: a state, and whether its picker completes on the
/// mock's first subchannel (else queue, or fail for TRANSIENT_FAILURE).
#[derive(Clone, Copy, Debug)]
struct Step(ConnectivityState, bool);

#[derive(Default, Clone)]
struct Script {
    on_update: Vec<Step>,
    on_close: Vec<Step>,
    on_timer: Vec<Step>,
    on_resolver_error: Vec<Step>,
    timer_after: Option<Duration>,
    update_err: Option<String>,
}

fn cfg(s: Script) -> Option<LbConfig> {
    Some(Arc::new(s))
}

struct MockBuilder {
    name: &'static str,
    log: Log,
    built: AtomicUsize,
}

fn mock(name: &'static str, log: &Log) -> Arc<dyn Builder> {
    Arc::new(MockBuilder {
        name,
        log: log.clone(),
        built: AtomicUsize::new(0),
    })
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
            script: Script::default(),
            timer: None,
        })
    }
}

struct Mock {
    tag: String,
    log: Log,
    subconns: Vec<Arc<SubConn>>,
    script: Script,
    timer: Option<TimerToken>,
}

impl Mock {
    fn note(&self, what: String) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {what}", self.tag));
    }
    fn publish(&self, cc: &mut dyn ClientConn, steps: &[Step]) {
        for step in steps {
            let picker = MockPicker {
                sc: self.subconns.first().cloned().filter(|_| step.1),
                fail: (step.0 == TransientFailure)
                    .then(|| Status::new(Code::Unavailable, format!("{} failed", self.tag))),
            };
            cc.update_state(step.0, Box::new(picker));
        }
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
            self.script = (*s).clone();
        }
        for a in &state.addresses {
            if self.subconns.iter().any(|s| s.addr() == a.addr) {
                continue;
            }
            let sc = cc.new_subconn(a.clone())?;
            cc.connect(sc.id());
            self.subconns.push(sc);
        }
        if let Some(after) = self.script.timer_after {
            self.timer = Some(cc.schedule_timer(after));
        }
        let steps = self.script.on_update.clone();
        self.publish(cc, &steps);
        match self.script.update_err.clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.note(format!("resolver_error {error}"));
        let steps = self.script.on_resolver_error.clone();
        self.publish(cc, &steps);
    }
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, sc: SubConnId, s: &SubConnState) {
        self.note(format!("sc{} {}", sc.0, s.state));
        if s.state == Shutdown {
            self.subconns.retain(|x| x.id() != sc);
            return;
        }
        self.publish(cc, &[Step(s.state, s.state == Ready)]);
    }
    fn exit_idle(&mut self, _cc: &mut dyn ClientConn) {
        self.note("exit_idle".into());
    }
    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        self.note("timer".into());
        if Some(token) == self.timer {
            let steps = self.script.on_timer.clone();
            self.publish(cc, &steps);
        }
    }
    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.note("close".into());
        let steps = self.script.on_close.clone();
        self.publish(cc, &steps);
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

fn switch(
    cc: &mut TestClientConn,
    gs: &mut GracefulSwitch,
    builder: &Arc<dyn Builder>,
    addrs: &[&str],
    config: Option<LbConfig>,
) -> Result<(), String> {
    let state = ClientConnState::from_addresses(
        addrs.iter().map(|a| Address::new(*a)).collect(),
        SwitchTo::config(builder.clone(), config),
    );
    cc.update(gs, state)
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

/// mock_1 current on A and READY; mock_2 pending on B with `pending`.
fn ready_then_pending(log: &Log, pending: Script) -> (TestClientConn, GracefulSwitch, SubConnId) {
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    let m1 = mock("mock_1", log);
    let m2 = mock("mock_2", log);
    switch(&mut cc, &mut gs, &m1, &[A], None).unwrap();
    let a = id(&cc, A);
    cc.set_state(&mut gs, a, Ready);
    assert_eq!(cc.states(), [Ready]);
    switch(&mut cc, &mut gs, &m2, &[B], cfg(pending)).unwrap();
    (cc, gs, a)
}

/// balancerWrapper.UpdateState handles each publish in order: the
/// pending's CONNECTING is kept, its READY (same callback) swaps it in.
#[test]
fn unit_pending_connecting_then_ready_in_one_update_swaps_in_with_ready() {
    let log: Log = Default::default();
    let (mut cc, gs, a) = ready_then_pending(
        &log,
        Script {
            on_update: vec![Step(Connecting, false), Step(Ready, true)],
            ..Default::default()
        },
    );
    let b = id(&cc, B);
    assert_eq!(cc.states(), [Ready, Ready]);
    assert_eq!(cc.pick(), on(b));
    assert_eq!(cc.shutdowns(), [a]);
    assert_eq!(gs.current_policy(), Some("mock_2"));
    assert!(has(&log, "mock_1#1 close"));
}

/// The pending's READY swaps it in; its IDLE right after (same callback)
/// is the new current's and is forwarded.
#[test]
fn unit_pending_ready_then_idle_in_one_update_forwards_both() {
    let log: Log = Default::default();
    let (mut cc, _gs, _a) = ready_then_pending(
        &log,
        Script {
            on_update: vec![Step(Ready, true), Step(Idle, false)],
            ..Default::default()
        },
    );
    assert_eq!(cc.states(), [Ready, Ready, Idle]);
    assert_eq!(cc.pick(), Picked::Queue);
}

/// TestCurrentNotReadyPendingUpdate, with the current having published
/// TRANSIENT_FAILURE: the pending's CONNECTING swaps it in.
#[test]
fn unit_current_in_transient_failure_pending_connecting_swaps_in() {
    let log: Log = Default::default();
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    let m1 = mock("mock_1", &log);
    let m2 = mock("mock_2", &log);
    switch(&mut cc, &mut gs, &m1, &[A], None).unwrap();
    let a = id(&cc, A);
    cc.set_state(&mut gs, a, TransientFailure);
    assert_eq!(cc.states(), [TransientFailure]);
    switch(
        &mut cc,
        &mut gs,
        &m2,
        &[B],
        cfg(Script {
            on_update: vec![Step(Connecting, true)],
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(cc.states(), [TransientFailure, Connecting]);
    assert_eq!(cc.pick(), on(id(&cc, B)));
    assert_eq!(cc.shutdowns(), [a]);
}

/// A pending reporting IDLE is "not CONNECTING": swapped in, even while
/// the current is READY (gRPC-Go's rule, to the letter).
#[test]
fn unit_pending_idle_swaps_in_even_over_a_ready_current() {
    let log: Log = Default::default();
    let (cc, gs, a) = ready_then_pending(
        &log,
        Script {
            on_update: vec![Step(Idle, false)],
            ..Default::default()
        },
    );
    assert_eq!(cc.states(), [Ready, Idle]);
    assert_eq!(cc.shutdowns(), [a]);
    assert_eq!(gs.current_policy(), Some("mock_2"));
}

/// balancerWrapper.UpdateState: "if !balancerCurrentOrPending(bw) return":
/// the swapped-out current publishing from its Close is ignored.
#[test]
fn unit_old_current_publishing_in_close_is_ignored() {
    let log: Log = Default::default();
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    let m1 = mock("mock_1", &log);
    let m2 = mock("mock_2", &log);
    switch(
        &mut cc,
        &mut gs,
        &m1,
        &[A],
        cfg(Script {
            on_close: vec![Step(TransientFailure, false), Step(Ready, true)],
            ..Default::default()
        }),
    )
    .unwrap();
    let a = id(&cc, A);
    cc.set_state(&mut gs, a, Ready);
    switch(
        &mut cc,
        &mut gs,
        &m2,
        &[B],
        cfg(Script {
            on_update: vec![Step(Connecting, false)],
            ..Default::default()
        }),
    )
    .unwrap();
    let b = id(&cc, B);
    cc.set_state(&mut gs, b, Ready);
    assert!(has(&log, "mock_1#1 close"));
    assert_eq!(cc.states(), [Ready, Ready], "nothing from the closed one");
    assert_eq!(cc.pick(), on(b));
}

/// A pending replaced by a newer pending publishing READY from its Close
/// is neither forwarded nor swapped in.
#[test]
fn unit_replaced_pending_publishing_ready_in_close_is_ignored() {
    let log: Log = Default::default();
    let (mut cc, mut gs, a) = ready_then_pending(
        &log,
        Script {
            on_update: vec![Step(Connecting, false)],
            on_close: vec![Step(Ready, true)],
            ..Default::default()
        },
    );
    let m3 = mock("mock_3", &log);
    switch(
        &mut cc,
        &mut gs,
        &m3,
        &[C],
        cfg(Script {
            on_update: vec![Step(Connecting, false)],
            ..Default::default()
        }),
    )
    .unwrap();
    assert!(has(&log, "mock_2#1 close"));
    assert_eq!(cc.states(), [Ready]);
    assert_eq!(cc.pick(), on(a), "the old current still serves");
    assert_eq!(gs.current_policy(), Some("mock_1"));
    assert_eq!(gs.pending_policy(), Some("mock_3"));
}

/// TestBalancerClose: after Close, what the children publish from their
/// Close reaches nobody.
#[test]
fn unit_publishes_from_close_of_the_switch_are_ignored() {
    let log: Log = Default::default();
    let (mut cc, mut gs, _a) = ready_then_pending(
        &log,
        Script {
            on_update: vec![Step(Connecting, false)],
            on_close: vec![Step(Ready, true), Step(TransientFailure, false)],
            ..Default::default()
        },
    );
    cc.close(&mut gs);
    assert!(has(&log, "mock_2#1 close"));
    assert_eq!(cc.states(), [Ready]);
}

/// TestBalancerClose: once closed, gracefulswitch refuses an update
/// (UpdateClientConnState returns errBalancerClosed; SwitchTo too) and
/// builds nothing.
#[test]
fn unit_update_after_close_is_refused_and_builds_nothing() {
    let log: Log = Default::default();
    let (mut cc, mut gs, _a) = ready_then_pending(
        &log,
        Script {
            on_update: vec![Step(Connecting, false)],
            ..Default::default()
        },
    );
    cc.close(&mut gs);
    let m1 = mock("mock_late", &log);
    let r = switch(&mut cc, &mut gs, &m1, &[C], None);
    let built = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("mock_late"))
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        r.is_err() && built.is_empty() && cc.subconn_for(C).is_none(),
        "closed switch: update returned {r:?}, new policy saw {built:?}, policies now {:?}/{:?}",
        gs.current_policy(),
        gs.pending_policy()
    );
}

/// The pending publishing READY later, from a timer (gRPC-Go's
/// TestBalancerSwitch_Graceful stub forwards its update later from a
/// goroutine): swapped in then.
#[test]
fn unit_pending_ready_from_a_timer_swaps_in() {
    let log: Log = Default::default();
    let (mut cc, mut gs, a) = ready_then_pending(
        &log,
        Script {
            timer_after: Some(Duration::from_millis(100)),
            on_timer: vec![Step(Ready, true)],
            ..Default::default()
        },
    );
    let b = id(&cc, B);
    assert_eq!(cc.states(), [Ready], "nothing published yet");
    assert_eq!(cc.pick(), on(a));
    let fired = cc.advance(&mut gs, Duration::from_millis(150));
    assert!(fired >= 1);
    assert_eq!(cc.states(), [Ready, Ready]);
    assert_eq!(cc.pick(), on(b));
    assert_eq!(cc.shutdowns(), [a]);
}

/// The swapped-out current's timer: cancelled or reaching nobody (the new
/// current does not get it).
#[test]
fn unit_a_closed_policys_timer_reaches_nobody() {
    let log: Log = Default::default();
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    let m1 = mock("mock_1", &log);
    let m2 = mock("mock_2", &log);
    switch(
        &mut cc,
        &mut gs,
        &m1,
        &[A],
        cfg(Script {
            timer_after: Some(Duration::from_secs(5)),
            on_timer: vec![Step(TransientFailure, false)],
            ..Default::default()
        }),
    )
    .unwrap();
    let a = id(&cc, A);
    cc.set_state(&mut gs, a, Ready);
    let token = cc.timers()[0].0;
    switch(
        &mut cc,
        &mut gs,
        &m2,
        &[B],
        cfg(Script {
            on_update: vec![Step(Ready, true)],
            ..Default::default()
        }),
    )
    .unwrap();
    let b = id(&cc, B);
    assert_eq!(gs.current_policy(), Some("mock_2"));
    cc.fire_timer(&mut gs, token);
    assert!(!has(&log, "mock_1#1 timer"));
    assert!(!has(&log, "mock_2#1 timer"));
    assert_eq!(cc.states(), [Ready, Ready]);
    assert_eq!(cc.pick(), on(b));
}

/// UpdateClientConnState returns the latest (pending) child's error; the
/// pending stays pending (no publish, no swap) and the current serves.
#[test]
fn unit_pending_update_error_is_returned_and_changes_nothing() {
    let log: Log = Default::default();
    let mut cc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    let m1 = mock("mock_1", &log);
    let m2 = mock("mock_2", &log);
    switch(&mut cc, &mut gs, &m1, &[A], None).unwrap();
    let a = id(&cc, A);
    cc.set_state(&mut gs, a, Ready);
    let r = switch(
        &mut cc,
        &mut gs,
        &m2,
        &[B],
        cfg(Script {
            update_err: Some("bad resolver state".into()),
            ..Default::default()
        }),
    );
    assert_eq!(r, Err("bad resolver state".to_string()));
    assert_eq!(gs.pending_policy(), Some("mock_2"));
    assert_eq!(cc.states(), [Ready]);
    assert_eq!(cc.pick(), on(a));
}

/// A resolver error goes to the pending only; a pending that answers it
/// with TRANSIENT_FAILURE is swapped in (not CONNECTING).
#[test]
fn unit_resolver_error_making_the_pending_fail_swaps_it_in() {
    let log: Log = Default::default();
    let (mut cc, mut gs, a) = ready_then_pending(
        &log,
        Script {
            on_update: vec![Step(Connecting, false)],
            on_resolver_error: vec![Step(TransientFailure, false)],
            ..Default::default()
        },
    );
    cc.resolver_error(&mut gs, "dns down");
    assert!(has(&log, "mock_2#1 resolver_error dns down"));
    assert!(!has(&log, "mock_1#1 resolver_error dns down"));
    assert_eq!(cc.states(), [Ready, TransientFailure]);
    assert_eq!(cc.shutdowns(), [a]);
}

// =====================================================================
// Channel level: real echo servers, fake resolver.
// =====================================================================

const PF: &str = r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#;
const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// gRPC-Go's manual resolver: what is pushed before the channel built it
/// is its initial state.
struct Fake {
    r: ManualResolver,
    scheme: String,
}

impl Fake {
    fn new(name: &str) -> Fake {
        let scheme = format!("go-switch-{}", name.replace('_', "-"));
        let r = ManualResolver::new(scheme.clone());
        resolver::register(Arc::new(r.clone()));
        Fake { r, scheme }
    }
    fn target(&self) -> String {
        format!("{}:///test.server", self.scheme)
    }
    fn push(&self, addrs: &[String], config: Option<&str>) {
        let st = ResolverState {
            endpoints: addrs
                .iter()
                .map(|a| Endpoint::from(Address::new(a.clone())))
                .collect(),
            service_config: config.map(str::to_string),
        };
        if self.r.client_conn().is_some() {
            let _ = self.r.update(st);
        } else {
            self.r.set_initial_state(Some(st));
        }
    }
    fn error(&self, msg: &str) {
        self.r.report_error(msg).expect("built");
    }
}

fn servers(n: usize) -> Vec<TestServer> {
    (0..n)
        .map(|_| {
            TestServer::start(
                Listen::Tcp("127.0.0.1:0".parse().unwrap()),
                ServerOptions::default(),
            )
            .unwrap()
        })
        .collect()
}

fn black_hole() -> TestServer {
    TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions {
            black_hole: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn addrs_of(s: &[TestServer]) -> Vec<String> {
    s.iter().map(|s| s.addr().to_string()).collect()
}

/// `n` fail-fast RPCs (2 s each), every one must succeed: per port.
fn rpcs_ok(ch: &Channel, n: usize) -> HashMap<u16, usize> {
    let mut m = HashMap::new();
    for _ in 0..n {
        let p = rpc(ch, false, Duration::from_secs(2))
            .unwrap_or_else(|s| panic!("RPC failed: {:?}: {}", s.code(), s.message()));
        *m.entry(p).or_default() += 1;
    }
    m
}

/// Fail-fast RPCs until `pred` holds for a batch of `n` (bounded); every
/// RPC must succeed throughout (no failures across the switch).
fn until_batch(ch: &Channel, n: usize, what: &str, pred: impl Fn(&HashMap<u16, usize>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = rpcs_ok(ch, n);
        if pred(&m) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last batch {m:?}");
    }
}

fn only(port: u16) -> impl Fn(&HashMap<u16, usize>) -> bool {
    move |m| m.len() == 1 && m.contains_key(&port)
}

fn even_over(ports: Vec<u16>) -> impl Fn(&HashMap<u16, usize>) -> bool {
    move |m| {
        m.len() == ports.len()
            && ports
                .iter()
                .all(|p| m.get(p).copied().unwrap_or(0) * ports.len() == m.values().sum::<usize>())
    }
}

/// The addresses of the channel's subchannels (current and pending
/// policies'), sorted.
fn sc_addrs(ch: &Channel) -> Vec<String> {
    let mut v: Vec<String> = ch
        .snapshot()
        .unwrap()
        .subchannels
        .iter()
        .map(|s| s.address.clone())
        .collect();
    v.sort();
    v
}

fn recorded(opts: &mut ChannelOptions) -> Arc<Mutex<Vec<ConnectivityState>>> {
    let states = Arc::new(Mutex::new(Vec::new()));
    let seen = states.clone();
    opts.on_state_change = Some(Arc::new(move |s| seen.lock().unwrap().push(s)));
    states
}

/// TestBalancerSwitch_Basic, all through resolver updates (addresses and
/// service config together): no config -> pick_first (backend 0); RR
/// config -> round robin over all; PF config -> backend 0 again. No RPC
/// fails anywhere, the channel never leaves READY.
#[test]
fn chan_basic_switch_by_resolver_updates_pf_rr_pf() {
    let s = servers(3);
    let addrs = addrs_of(&s);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let fake = Fake::new("basic");
    fake.push(&addrs, None);
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    let states = recorded(&mut opts);
    let ch = Channel::new(&rt, &fake.target(), None, opts).unwrap();
    until_batch(&ch, 6, "pick_first on backend 0", only(ports[0]));
    assert_eq!(ch.snapshot().unwrap().policy, "pick_first");
    fake.push(&addrs, Some(RR));
    until_batch(&ch, 9, "round robin", even_over(ports.clone()));
    assert_eq!(ch.snapshot().unwrap().policy, "round_robin");
    fake.push(&addrs, Some(PF));
    until_batch(&ch, 6, "pick_first again on backend 0", only(ports[0]));
    assert_eq!(ch.snapshot().unwrap().policy, "pick_first");
    assert_eq!(*states.lock().unwrap(), [Connecting, Ready]);
}

static GATE: AtomicBool = AtomicBool::new(false);
static DELAYED_UPDATES: AtomicUsize = AtomicUsize::new(0);
static GATE3: AtomicBool = AtomicBool::new(false);
static DELAYED_UPDATES3: AtomicUsize = AtomicUsize::new(0);
static GATE2: AtomicBool = AtomicBool::new(false);
static DELAYED_UPDATES2: AtomicUsize = AtomicUsize::new(0);

/// gRPC-Go's TestBalancerSwitch_Graceful stub: pick_first underneath, but
/// the update is held (published nothing at all) until the test opens the
/// gate; polled by a timer.
struct Delayed {
    gate: &'static AtomicBool,
    updates: &'static AtomicUsize,
    inner: Box<dyn Balancer>,
    held: Option<ClientConnState>,
    poll: Option<TimerToken>,
}

impl Balancer for Delayed {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        if self.gate.load(Ordering::SeqCst) {
            return self.inner.update_client_conn_state(cc, state);
        }
        self.held = Some(state);
        self.poll = Some(cc.schedule_timer(Duration::from_millis(20)));
        Ok(())
    }
    fn resolver_error(&mut self, cc: &mut dyn ClientConn, e: &str) {
        self.inner.resolver_error(cc, e)
    }
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, sc: SubConnId, s: &SubConnState) {
        self.inner.update_subconn_state(cc, sc, s)
    }
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        if self.held.is_none() {
            self.inner.exit_idle(cc)
        }
    }
    fn work(&mut self, cc: &mut dyn ClientConn) {
        self.inner.work(cc)
    }
    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        if Some(token) != self.poll {
            return self.inner.timer(cc, token);
        }
        self.poll = None;
        if self.gate.load(Ordering::SeqCst) {
            if let Some(st) = self.held.take() {
                let _ = self.inner.update_client_conn_state(cc, st);
            }
        } else {
            self.poll = Some(cc.schedule_timer(Duration::from_millis(20)));
        }
    }
    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.inner.close(cc)
    }
}

struct DelayedBuilder(&'static str, &'static AtomicBool, &'static AtomicUsize);

impl Builder for DelayedBuilder {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(Delayed {
            gate: self.1,
            updates: self.2,
            inner: registry::get("pick_first").unwrap().build(),
            held: None,
            poll: None,
        })
    }
}

/// TestBalancerSwitch_Graceful: round_robin on backends 1..; an update
/// names a policy that holds its update (backend 0 only): RPCs still go
/// round robin over 1.. (fail-fast, none fail); once it goes on, RPCs go
/// to backend 0.
#[test]
fn chan_graceful_new_policy_publishing_nothing_keeps_old_serving_until_ready() {
    registry::register(Arc::new(DelayedBuilder(
        "go_switch_delayed_pf",
        &GATE,
        &DELAYED_UPDATES,
    )));
    let s = servers(3);
    let addrs = addrs_of(&s);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let fake = Fake::new("graceful");
    fake.push(&addrs[1..], Some(RR));
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    let states = recorded(&mut opts);
    let ch = Channel::new(&rt, &fake.target(), None, opts).unwrap();
    until_batch(
        &ch,
        4,
        "round robin over 1..",
        even_over(ports[1..].to_vec()),
    );

    fake.push(
        &addrs[..1],
        Some(r#"{"loadBalancingConfig":[{"go_switch_delayed_pf":{}}]}"#),
    );
    common::wait_until("the new policy's update", || {
        DELAYED_UPDATES.load(Ordering::SeqCst) >= 1
    });
    for _ in 0..5 {
        let m = rpcs_ok(&ch, 4);
        assert!(
            even_over(ports[1..].to_vec())(&m),
            "old policy serves: {m:?}"
        );
    }
    assert_eq!(ch.state(), Ready);
    assert_eq!(s[0].requests(), 0);

    GATE.store(true, Ordering::SeqCst);
    until_batch(&ch, 4, "the new policy serves backend 0", only(ports[0]));
    assert_eq!(*states.lock().unwrap(), [Connecting, Ready]);
}

/// Switch to a policy that never goes READY (pick_first on a black hole),
/// then the old policy's only backend goes away: the current leaving READY
/// swaps in the pending with its cached state (CONNECTING, picks queue):
/// fail-fast RPCs wait (DEADLINE_EXCEEDED), not UNAVAILABLE.
#[test]
fn chan_old_policy_losing_its_backend_swaps_in_the_never_ready_pending() {
    let mut s = servers(1);
    let hole = black_hole();
    let fake = Fake::new("never_ready");
    fake.push(&addrs_of(&s), Some(RR));
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    let states = recorded(&mut opts);
    let ch = Channel::new(&rt, &fake.target(), None, opts).unwrap();
    let port = s[0].port();
    until_batch(&ch, 3, "round robin READY", only(port));

    let old = s[0].addr().to_string();
    let new = hole.addr().to_string();
    fake.push(std::slice::from_ref(&new), Some(PF));
    common::wait_until("both policies' subchannels", || {
        sc_addrs(&ch) == {
            let mut v = vec![old.clone(), new.clone()];
            v.sort();
            v
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let m = rpcs_ok(&ch, 5);
    assert!(only(port)(&m), "{m:?}");

    s.pop().unwrap().stop();
    common::wait_until("pick_first swapped in, round_robin closed", || {
        sc_addrs(&ch) == [new.clone()]
    });
    assert_eq!(ch.state(), Connecting);
    let e = rpc(&ch, false, Duration::from_millis(300)).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    let st = states.lock().unwrap().clone();
    assert_eq!(st, [Connecting, Ready, Connecting], "{st:?}");
}

/// A resolver error while a new policy is pending goes to the pending one
/// (round_robin, connecting to a black hole: ignores it, as gRPC-Go's
/// pick_first children do): the old policy keeps serving, no RPC fails.
#[test]
fn chan_resolver_error_during_a_switch_leaves_the_old_policy_serving() {
    let s = servers(1);
    let hole = black_hole();
    let fake = Fake::new("resolver_error");
    fake.push(&addrs_of(&s), Some(PF));
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    let states = recorded(&mut opts);
    let ch = Channel::new(&rt, &fake.target(), None, opts).unwrap();
    let port = s[0].port();
    until_batch(&ch, 3, "pick_first READY", only(port));
    fake.push(&[hole.addr().to_string()], Some(RR));
    common::wait_until("both policies' subchannels", || sc_addrs(&ch).len() == 2);
    fake.error("dns down");
    std::thread::sleep(Duration::from_millis(200));
    let m = rpcs_ok(&ch, 10);
    assert!(only(port)(&m), "{m:?}");
    assert!(
        sc_addrs(&ch).contains(&s[0].addr().to_string()),
        "pick_first not closed: {:?}",
        sc_addrs(&ch)
    );
    assert_eq!(*states.lock().unwrap(), [Connecting, Ready]);
}

/// An empty address list with a config naming another policy: gRPC-Go
/// passes it on (clientconn updateResolverStateAndUnlock), the graceful
/// switch builds round_robin pending, which with no endpoints reports
/// TRANSIENT_FAILURE ("no children to pick from", endpointsharding) and
/// returns ErrBadResolverState: not CONNECTING, so it is swapped in and
/// the working pick_first is closed; RPCs fail UNAVAILABLE; the resolver
/// is asked again. Addresses again: round_robin serves.
#[test]
fn chan_empty_address_list_with_a_new_policy_swaps_it_in_failing() {
    let s = servers(2);
    let addrs = addrs_of(&s);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let fake = Fake::new("empty");
    fake.push(&addrs, Some(PF));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &fake.target(), None, plaintext()).unwrap();
    until_batch(&ch, 3, "pick_first READY", only(ports[0]));
    let asked = fake.r.resolve_nows();

    fake.push(&[], Some(RR));
    common::wait_until("round_robin swapped in, pick_first closed", || {
        sc_addrs(&ch).is_empty()
    });
    common::wait_state(&ch, TransientFailure);
    let e = rpc(&ch, false, Duration::from_secs(2)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    common::wait_until("re-resolution asked", || fake.r.resolve_nows() > asked);

    fake.push(&addrs, Some(RR));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m: HashMap<u16, usize> = (0..6)
            .filter_map(|_| rpc(&ch, true, Duration::from_secs(2)).ok())
            .fold(HashMap::new(), |mut m, p| {
                *m.entry(p).or_default() += 1;
                m
            });
        if even_over(ports.clone())(&m) {
            break;
        }
        assert!(Instant::now() < deadline, "{m:?}");
    }
}

/// An empty address list with the same policy mid-switch: PF serving, RR
/// pending (black hole), then RR config with no addresses: the update goes
/// to the pending round_robin, which fails (TRANSIENT_FAILURE): swapped
/// in, pick_first closed (gRPC-Go, same rules).
#[test]
fn chan_empty_address_list_to_the_pending_policy_swaps_it_in() {
    let s = servers(1);
    let hole = black_hole();
    let fake = Fake::new("empty_pending");
    fake.push(&addrs_of(&s), Some(PF));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &fake.target(), None, plaintext()).unwrap();
    until_batch(&ch, 3, "pick_first READY", only(s[0].port()));
    fake.push(&[hole.addr().to_string()], Some(RR));
    common::wait_until("both policies' subchannels", || sc_addrs(&ch).len() == 2);
    rpcs_ok(&ch, 3);
    fake.push(&[], Some(RR));
    common::wait_until("round_robin swapped in, pick_first closed", || {
        sc_addrs(&ch).is_empty()
    });
    common::wait_state(&ch, TransientFailure);
    let e = rpc(&ch, false, Duration::from_secs(2)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

/// TestBalancerSwitch_Graceful's stub, but the old policy loses its only
/// backend while the new one still holds its update (published nothing):
/// the pending is swapped in with gracefulswitch's default state
/// (CONNECTING, picks queue); a wait-for-ready RPC started then waits and
/// completes on the new policy's backend once it goes on.
#[test]
fn chan_queued_rpc_across_a_swap_to_a_silent_pending_completes_on_the_new_policy() {
    registry::register(Arc::new(DelayedBuilder(
        "go_switch_delayed_pf2",
        &GATE2,
        &DELAYED_UPDATES2,
    )));
    let mut s = servers(2);
    let addrs = addrs_of(&s);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let fake = Fake::new("silent_pending");
    fake.push(&addrs[1..], Some(RR));
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    let states = recorded(&mut opts);
    let ch = Arc::new(Channel::new(&rt, &fake.target(), None, opts).unwrap());
    until_batch(&ch, 3, "round robin on 1", only(ports[1]));
    fake.push(
        &addrs[..1],
        Some(r#"{"loadBalancingConfig":[{"go_switch_delayed_pf2":{}}]}"#),
    );
    common::wait_until("the new policy's update", || {
        DELAYED_UPDATES2.load(Ordering::SeqCst) >= 1
    });
    rpcs_ok(&ch, 3);

    s.pop().unwrap().stop();
    common::wait_until("round_robin closed", || sc_addrs(&ch).is_empty());
    assert_eq!(ch.state(), Connecting);
    let e = rpc(&ch, false, Duration::from_millis(300)).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "picks queue: {e:?}");
    let waiting = {
        let ch = ch.clone();
        std::thread::spawn(move || rpc(&ch, true, Duration::from_secs(8)))
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiting.is_finished());
    GATE2.store(true, Ordering::SeqCst);
    assert_eq!(waiting.join().unwrap().expect("queued RPC"), ports[0]);
    assert_eq!(
        *states.lock().unwrap(),
        [Connecting, Ready, Connecting, Ready]
    );
}

/// outlier_detection runs its child through a graceful switch too (as
/// gRPC-Go's outlierdetection does with gracefulswitch): a config naming
/// another childPolicy keeps the old child serving (round robin, no RPC
/// failing, channel READY) until the new child (held, publishing nothing)
/// goes on; then pick_first serves backend 0.
#[test]
fn chan_outlier_detection_child_policy_switch_is_graceful() {
    registry::register(Arc::new(DelayedBuilder(
        "go_switch_delayed_pf3",
        &GATE3,
        &DELAYED_UPDATES3,
    )));
    let s = servers(2);
    let addrs = addrs_of(&s);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let od = |child: &str| {
        format!(
            r#"{{"loadBalancingConfig":[{{"outlier_detection_experimental":{{"childPolicy":[{{"{child}":{{}}}}]}}}}]}}"#
        )
    };
    let fake = Fake::new("od_child");
    fake.push(&addrs, Some(&od("round_robin")));
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    let states = recorded(&mut opts);
    let ch = Channel::new(&rt, &fake.target(), None, opts).unwrap();
    until_batch(&ch, 4, "round robin", even_over(ports.clone()));

    fake.push(&addrs, Some(&od("go_switch_delayed_pf3")));
    common::wait_until("the new child's update", || {
        DELAYED_UPDATES3.load(Ordering::SeqCst) >= 1
    });
    for _ in 0..5 {
        let m = rpcs_ok(&ch, 4);
        assert!(even_over(ports.clone())(&m), "old child serves: {m:?}");
    }
    assert_eq!(ch.state(), Ready);
    GATE3.store(true, Ordering::SeqCst);
    until_batch(&ch, 4, "pick_first child on backend 0", only(ports[0]));
    assert_eq!(*states.lock().unwrap(), [Connecting, Ready]);
}
