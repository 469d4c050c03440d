//! The policy toolkit is enough from outside the crate: this file uses only
//! the public API to write two policies out of its parts, unit-tests them
//! with `TestClientConn` and runs them in a real `Channel`.
//!
//! - `first_two`: endpoint sharding (a pick_first child per endpoint, through
//!   `ChildManager`), picks rotating over the first two READY endpoints
//!   (through `RotationBuilder`), and optionally a done hook counting
//!   outcomes. Without the hook its picker is a plain rotation, which
//!   readers walk inline.
//! - `counting`: one child policy by name (`ChildManager` keyed by any name),
//!   whose picker wraps the child's and chains its own done hook after the
//!   child's (what outlier detection does over its child).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::balancer::child_manager::ChildManager;
use switchyard::balancer::rotation::{Rotation, RotationBuilder};
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::picker::{FailPicker, QueuePicker};
use switchyard::{
    registry, Address, Balancer, Builder, CallOptions, Channel, ChannelOptions, ClientConn,
    ClientConnState, Code, ConnectivityState, DoneHook, DoneHooks, DoneInfo, ExternalConnector,
    HostTransport, LbConfig, PickInfo, PickLocal, PickOptions, PickResult, Picker, Reader, Runtime,
    Status, SubConn, SubConnId, SubConnState, TimerToken, TransportConfig,
};
use switchyard_testserver::{Listen, ServerOptions, TestServer};
use ConnectivityState::{Connecting, Idle, Ready, TransientFailure};

// ---------------------------------------------------------------------------
// A done hook that counts outcomes and logs which hook ran, in order.

/// Outcomes seen by every counting hook of one test, and the order the
/// hooks ran in.
#[derive(Default)]
struct Outcomes {
    ok: Mutex<HashMap<&'static str, u64>>,
    failed: Mutex<HashMap<&'static str, u64>>,
    order: Mutex<Vec<&'static str>>,
}

impl Outcomes {
    fn ok(&self, who: &'static str) -> u64 {
        self.ok.lock().unwrap().get(who).copied().unwrap_or(0)
    }
    fn failed(&self, who: &'static str) -> u64 {
        self.failed.lock().unwrap().get(who).copied().unwrap_or(0)
    }
    fn order(&self) -> Vec<&'static str> {
        self.order.lock().unwrap().clone()
    }
}

/// Counts each outcome under its policy's name. (A test hook may lock; a
/// real one would count with atomics.)
struct CountingHook {
    who: &'static str,
    outcomes: Arc<Outcomes>,
    picked: AtomicU64,
}

impl CountingHook {
    fn new(who: &'static str, outcomes: Arc<Outcomes>) -> CountingHook {
        CountingHook {
            who,
            outcomes,
            picked: AtomicU64::new(0),
        }
    }
}

impl DoneHook for CountingHook {
    fn done(&self, _: &SubConn, info: &DoneInfo<'_>) {
        let tally = if info.error.is_none() {
            &self.outcomes.ok
        } else {
            &self.outcomes.failed
        };
        *tally.lock().unwrap().entry(self.who).or_default() += 1;
        self.outcomes.order.lock().unwrap().push(self.who);
        self.picked.fetch_add(1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// first_two: endpoint sharding + a rotation over the first two READY.

struct FirstTwoBuilder {
    /// Where the done hook counts; `None`: no hook, a plain rotation.
    outcomes: Option<Arc<Outcomes>>,
    name: &'static str,
}

impl Builder for FirstTwoBuilder {
    fn name(&self) -> &str {
        self.name
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(FirstTwo {
            outcomes: self.outcomes.clone(),
            children: ChildManager::new(),
            rotation: RotationBuilder::new(),
            members_of: None,
            ready_published: false,
        })
    }
}

struct FirstTwo {
    outcomes: Option<Arc<Outcomes>>,
    children: ChildManager,
    rotation: RotationBuilder,
    /// The `ChildManager::version` the rotation's members are for.
    members_of: Option<u64>,
    /// The last published picker is the rotation's last build.
    ready_published: bool,
}

impl FirstTwo {
    fn regenerate(&mut self, cc: &mut dyn ClientConn) {
        if self.members_of != Some(self.children.version()) {
            self.rotation
                .set_members(self.children.iter().map(|c| c.subconns()));
            self.members_of = Some(self.children.version());
        }
        let mut listed = 0;
        for (i, child) in self.children.iter().enumerate() {
            let single = child.picker().single().filter(|_| child.state() == Ready);
            let single = single.filter(|_| listed < 2);
            listed += usize::from(single.is_some());
            self.rotation
                .list(i, single)
                .expect("a pick_first child picks its own subchannel");
        }
        if !self.rotation.is_empty() {
            if self.ready_published && !self.rotation.changed() {
                return; // nothing pickable changed: no new picker
            }
            let rotation = self.rotation.build().expect("not empty");
            let hook = self
                .outcomes
                .clone()
                .map(|o| CountingHook::new("first_two", o));
            self.ready_published = true;
            cc.update_state(Ready, Box::new(FirstTwoPicker { rotation, hook }));
            return;
        }
        self.ready_published = false;
        let waiting = self
            .children
            .iter()
            .any(|c| matches!(c.state(), Connecting | Idle));
        if waiting {
            cc.update_state(Connecting, Box::new(QueuePicker));
        } else {
            cc.update_state(
                TransientFailure,
                Box::new(FailPicker::unavailable("first_two: no READY endpoint")),
            );
        }
    }

    fn child_changed(&mut self, cc: &mut dyn ClientConn, key: &str) {
        if self.children.get(key).map(|c| c.state()) == Some(Idle) {
            self.children.exit_idle(cc, key);
        }
        self.regenerate(cc);
    }
}

impl Balancer for FirstTwo {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let pick_first = registry::get("pick_first").expect("a built-in");
        self.children
            .update_endpoints(cc, &state.endpoints, &pick_first, None);
        self.regenerate(cc);
        Ok(())
    }
    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.children.resolver_error(cc, error);
        self.regenerate(cc);
    }
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, sc: SubConnId, s: &SubConnState) {
        if let Some(key) = self.children.subconn_state(cc, sc, s) {
            self.child_changed(cc, &key);
        }
    }
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        for key in self.children.keys() {
            self.children.exit_idle(cc, &key);
        }
        self.regenerate(cc);
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

struct FirstTwoPicker {
    rotation: Rotation,
    hook: Option<CountingHook>,
}

impl Picker for FirstTwoPicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        PickResult::Complete {
            subconn: self.rotation.pick(local),
            done: match &self.hook {
                Some(hook) => DoneHooks::one(hook),
                None => DoneHooks::NONE,
            },
        }
    }

    /// Readers walk the rotation inline, without calling `pick`, unless a
    /// hook must hear the outcomes.
    fn rotation(&self) -> Option<&Rotation> {
        self.hook.is_none().then_some(&self.rotation)
    }
}

// ---------------------------------------------------------------------------
// counting: one named child, its picker wrapped, a hook chained after the
// child's.

struct CountingBuilder {
    outcomes: Arc<Outcomes>,
    name: &'static str,
}

/// `{"childPolicy": "<registered name>"}`.
struct CountingConfig {
    child: String,
}

impl Builder for CountingBuilder {
    fn name(&self) -> &str {
        self.name
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(Counting {
            who: self.name,
            outcomes: self.outcomes.clone(),
            children: ChildManager::new(),
            seen: None,
        })
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<Option<LbConfig>, String> {
        let child = config
            .get("childPolicy")
            .and_then(|c| c.as_str())
            .ok_or("childPolicy: a policy name is required")?;
        if registry::get(child).is_none() {
            return Err(format!("childPolicy: no policy named {child:?}"));
        }
        Ok(Some(Arc::new(CountingConfig {
            child: child.to_string(),
        })))
    }
}

struct Counting {
    who: &'static str,
    outcomes: Arc<Outcomes>,
    children: ChildManager,
    /// The child's picker and state last wrapped and published.
    seen: Option<(Arc<dyn Picker>, ConnectivityState)>,
}

const CHILD: &str = "child";

impl Counting {
    /// Publishes the child's state, with its picker wrapped, unless the
    /// child published nothing new.
    fn publish(&mut self, cc: &mut dyn ClientConn) {
        if let Some(child) = self.children.get(CHILD) {
            let seen = self.seen.as_ref();
            if seen.is_some_and(|(p, s)| Arc::ptr_eq(p, child.picker()) && *s == child.state()) {
                return;
            }
            self.seen = Some((child.picker().clone(), child.state()));
            let picker = CountingPicker {
                child: child.picker().clone(),
                hook: CountingHook::new(self.who, self.outcomes.clone()),
                too_deep: Status::new(Code::Internal, "done hook chain is full"),
            };
            cc.update_state(child.state(), Box::new(picker));
        }
    }
}

impl Balancer for Counting {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let config = state
            .config
            .clone()
            .and_then(|c| c.downcast::<CountingConfig>().ok())
            .ok_or("counting: no config")?;
        let builder = registry::get(&config.child).ok_or("counting: unknown child")?;
        if self.children.get(CHILD).map(|c| c.policy()) != Some(builder.name()) {
            self.children.add(cc, CHILD, builder);
        }
        let child_state = ClientConnState::new(state.endpoints, None);
        let result = self.children.update_child(cc, CHILD, child_state);
        self.publish(cc);
        result
    }
    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.children.resolver_error(cc, error);
        self.publish(cc);
    }
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, sc: SubConnId, s: &SubConnState) {
        if self.children.subconn_state(cc, sc, s).is_some() {
            self.publish(cc);
        }
    }
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        self.children.exit_idle(cc, CHILD);
        self.publish(cc);
    }
    fn work(&mut self, cc: &mut dyn ClientConn) {
        if !self.children.work(cc).is_empty() {
            self.publish(cc);
        }
    }
    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        if self.children.timer(cc, token).is_some() {
            self.publish(cc);
        }
    }
    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.children.close(cc);
    }
}

struct CountingPicker {
    child: Arc<dyn Picker>,
    hook: CountingHook,
    too_deep: Status,
}

impl Picker for CountingPicker {
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        match self.child.pick(info, local) {
            PickResult::Complete { subconn, done } => match done.with_outer(&self.hook) {
                Ok(done) => PickResult::Complete { subconn, done },
                // Nested deeper than a pick can carry: refuse rather than
                // lose a hook.
                Err(_) => PickResult::Fail(&self.too_deep),
            },
            other => other,
        }
    }
}

// ---------------------------------------------------------------------------
// Registration: each test registers its own names (the registry is
// process-wide and tests run in parallel).

fn register_first_two(name: &'static str, outcomes: Option<Arc<Outcomes>>) -> Arc<dyn Builder> {
    let b: Arc<dyn Builder> = Arc::new(FirstTwoBuilder { outcomes, name });
    registry::register(b.clone());
    b
}

fn register_counting(name: &'static str, outcomes: &Arc<Outcomes>) -> Arc<dyn Builder> {
    let b: Arc<dyn Builder> = Arc::new(CountingBuilder {
        outcomes: outcomes.clone(),
        name,
    });
    registry::register(b.clone());
    b
}

const A: &str = "127.0.0.1:2001";
const B: &str = "127.0.0.1:2002";
const C: &str = "127.0.0.1:2003";
const D: &str = "127.0.0.1:2004";

fn id(cc: &TestClientConn, addr: &str) -> SubConnId {
    cc.subconn_for(addr).expect("a subchannel").id()
}

fn ok() -> DoneInfo<'static> {
    DoneInfo::default()
}

fn failed() -> DoneInfo<'static> {
    DoneInfo {
        error: Some("UNAVAILABLE"),
        code: switchyard::Code::Unavailable,
        ..DoneInfo::default()
    }
}

// ---------------------------------------------------------------------------
// Unit tests, through TestClientConn.

#[test]
fn first_two_rotates_over_the_first_two_ready_endpoints() {
    let builder = register_first_two("first_two_unit", None);
    let mut cc = TestClientConn::new();
    let mut ft = builder.build();
    cc.update_addresses(&mut *ft, [A, B, C, D]).unwrap();
    assert_eq!(cc.connects().len(), 4, "a pick_first child per endpoint");
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(cc.pick(), Picked::Queue);
    let (a, b, c, d) = (id(&cc, A), id(&cc, B), id(&cc, C), id(&cc, D));
    for sc in [b, c, d] {
        cc.set_state(&mut *ft, sc, Ready);
    }
    assert_eq!(cc.state(), Some(Ready));
    let mut picks = cc.picks(6);
    picks.sort();
    assert_eq!(
        picks,
        [Some(b), Some(b), Some(b), Some(c), Some(c), Some(c)]
    );
    // The picker is a rotation: readers pick inline, with no hook.
    assert!(cc.picker().unwrap().rotation().is_some());
    // a comes up first in endpoint order: now a and b.
    cc.set_state(&mut *ft, a, Ready);
    let mut picks = cc.picks(4);
    picks.sort();
    assert_eq!(picks, [Some(a), Some(a), Some(b), Some(b)]);
    // b fails: a and c.
    cc.set_state(&mut *ft, b, TransientFailure);
    let mut picks = cc.picks(4);
    picks.sort();
    assert_eq!(picks, [Some(a), Some(a), Some(c), Some(c)]);
}

#[test]
fn first_two_publishes_no_picker_when_only_a_third_endpoint_changes() {
    let builder = register_first_two("first_two_reuse", None);
    let mut cc = TestClientConn::new();
    let mut ft = builder.build();
    cc.update_addresses(&mut *ft, [A, B, C]).unwrap();
    let (a, b, c) = (id(&cc, A), id(&cc, B), id(&cc, C));
    cc.set_state(&mut *ft, a, Ready);
    cc.set_state(&mut *ft, b, Ready);
    let published = cc.pickers_published();
    cc.set_state(&mut *ft, c, Ready);
    cc.set_state(&mut *ft, c, TransientFailure);
    cc.set_state(&mut *ft, c, Connecting);
    assert_eq!(
        cc.pickers_published(),
        published,
        "c is never among the first two"
    );
    cc.set_state(&mut *ft, c, Ready);
    cc.set_state(&mut *ft, a, TransientFailure);
    assert_eq!(cc.pickers_published(), published + 1, "now b and c");
}

#[test]
fn a_wrapping_policy_chains_its_hook_after_its_childs() {
    let outcomes = Arc::new(Outcomes::default());
    register_first_two("first_two_hooked_unit", Some(outcomes.clone()));
    let counting = register_counting("counting_unit", &outcomes);
    let config = counting
        .parse_config(&serde_json::json!({"childPolicy": "first_two_hooked_unit"}))
        .unwrap();
    let mut cc = TestClientConn::new();
    let mut policy = counting.build();
    let state = ClientConnState::from_addresses(vec![Address::new(A), Address::new(B)], config);
    cc.update(&mut *policy, state).unwrap();
    let (a, b) = (id(&cc, A), id(&cc, B));
    cc.set_state(&mut *policy, a, Ready);
    cc.set_state(&mut *policy, b, Ready);
    assert_eq!(cc.state(), Some(Ready));
    // A hooked picker is no rotation: readers call it.
    assert!(cc.picker().unwrap().rotation().is_none());
    for _ in 0..3 {
        assert!(matches!(
            cc.pick_done(&ok()),
            Picked::Complete { hooks: 2, .. }
        ));
    }
    assert!(matches!(
        cc.pick_done(&failed()),
        Picked::Complete { hooks: 2, .. }
    ));
    // Every hook once per pick, outermost first (the wrapper's, then the
    // child's: gRPC-Go's wrapping pickers call their child's Done last).
    assert_eq!(outcomes.ok("first_two"), 3);
    assert_eq!(outcomes.ok("counting_unit"), 3);
    assert_eq!(outcomes.failed("first_two"), 1);
    assert_eq!(outcomes.failed("counting_unit"), 1);
    assert_eq!(
        outcomes.order(),
        ["counting_unit", "first_two"].repeat(4),
        "outermost first"
    );
}

#[test]
fn a_chain_deeper_than_a_pick_carries_is_refused_not_truncated() {
    let outcomes = Arc::new(Outcomes::default());
    assert_eq!(DoneHooks::CAPACITY, 2);
    // A counting picker over a counting picker over first_two's hooked
    // picker: three hooks.
    let mut cc = TestClientConn::new();
    let mut ft = register_first_two("first_two_deep2", Some(outcomes.clone())).build();
    cc.update_addresses(&mut *ft, [A]).unwrap();
    cc.set_state(&mut *ft, id(&cc, A), Ready);
    let leaf = cc.picker().unwrap().clone();
    let wrap = |child: Arc<dyn Picker>, who| -> Arc<dyn Picker> {
        Arc::new(CountingPicker {
            child,
            hook: CountingHook::new(who, outcomes.clone()),
            too_deep: Status::new(Code::Internal, "done hook chain is full"),
        })
    };
    let two = wrap(leaf, "inner");
    let three = wrap(two.clone(), "outer");
    let mut local = PickLocal::new(7);
    let info = PickInfo::default();
    match two.pick(&info, &mut local) {
        PickResult::Complete { done, .. } => assert_eq!(done.len(), 2),
        _ => panic!("two hooks fit"),
    }
    match three.pick(&info, &mut local) {
        PickResult::Fail(s) => assert_eq!(s.code(), Code::Internal),
        _ => panic!("a third hook must be refused"),
    }
}

// ---------------------------------------------------------------------------
// In a real channel, with the host's transports (external connector).

/// The host's transports: the subchannels the library asked to connect.
#[derive(Default)]
struct Host {
    connecting: Mutex<Vec<Arc<SubConn>>>,
}

impl HostTransport for Host {
    fn connect(&self, sc: &Arc<SubConn>) {
        self.connecting.lock().unwrap().push(sc.clone());
    }
    fn shutdown(&self, _: &Arc<SubConn>) {}
}

fn channel(rt: &Runtime, host: &Arc<Host>, config: &str) -> Channel {
    Channel::new(
        rt,
        "",
        Some(config),
        ChannelOptions {
            connector: Some(Box::new(ExternalConnector::new(host.clone()))),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Reports every subchannel the host was asked to connect READY.
fn all_ready(ch: &Channel, host: &Host) {
    ch.sync().unwrap();
    let connecting: Vec<_> = host.connecting.lock().unwrap().drain(..).collect();
    for sc in connecting {
        ch.report_subconn_state(sc.id(), Ready, "connected")
            .unwrap();
    }
    ch.sync().unwrap();
}

fn options() -> PickOptions {
    PickOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        wait_for_ready: true,
    }
}

#[test]
fn first_two_in_a_channel_picks_inline_over_the_first_two() {
    register_first_two("first_two_channel", None);
    let rt = Runtime::new().unwrap();
    let host = Arc::new(Host::default());
    let ch = channel(
        &rt,
        &host,
        r#"{"loadBalancingConfig":[{"first_two_channel":{}}]}"#,
    );
    ch.update_addresses(vec![
        Address::new(A).with_tag(1),
        Address::new(B).with_tag(2),
        Address::new(C).with_tag(3),
    ])
    .unwrap();
    all_ready(&ch, &host);
    let mut reader = ch.reader();
    let info = PickInfo::default();
    let mut tags = Vec::new();
    for _ in 0..6 {
        let pick = reader.pick(&info, &options()).unwrap();
        assert!(!pick.reports_outcome());
        tags.push(pick.subconn().tag());
        reader.finish(pick, &ok());
    }
    tags.sort();
    assert_eq!(tags, [1, 1, 1, 2, 2, 2]);
    ch.close();
}

#[test]
fn chained_hooks_in_a_channel_hear_every_outcome_once_outermost_first() {
    let outcomes = Arc::new(Outcomes::default());
    register_first_two("first_two_chain", Some(outcomes.clone()));
    register_counting("counting_chain", &outcomes);
    let rt = Runtime::new().unwrap();
    let host = Arc::new(Host::default());
    let ch = channel(
        &rt,
        &host,
        r#"{"loadBalancingConfig":[{"counting_chain":{"childPolicy":"first_two_chain"}}]}"#,
    );
    ch.update_addresses(vec![
        Address::new(A).with_tag(1),
        Address::new(B).with_tag(2),
        Address::new(C).with_tag(3),
    ])
    .unwrap();
    all_ready(&ch, &host);
    let mut reader = ch.reader();
    let info = PickInfo::default();
    let mut tags = Vec::new();
    // Done (owned picks, from another thread too), finish, and drop.
    for i in 0..4 {
        let pick = reader.pick(&info, &options()).unwrap();
        assert_eq!(pick.done_hooks(), 2);
        tags.push(pick.subconn().tag());
        match i {
            0 => pick.done(&ok()),
            1 => reader.finish(pick, &failed()),
            2 => std::thread::spawn(move || pick.done(&ok())).join().unwrap(),
            _ => drop(pick), // reported as a failure ("dropped without done")
        }
    }
    // Borrowed picks: done, and dropped.
    let pick = reader.try_pick_ref(&info).unwrap();
    tags.push(pick.subconn().tag());
    pick.done(&ok());
    let pick = reader.try_pick_ref(&info).unwrap();
    tags.push(pick.subconn().tag());
    drop(pick);
    tags.sort();
    assert_eq!(tags, [1, 1, 1, 2, 2, 2], "only the first two endpoints");
    for who in ["first_two", "counting_chain"] {
        assert_eq!(outcomes.ok(who), 3, "{who}");
        assert_eq!(outcomes.failed(who), 3, "{who}");
    }
    assert_eq!(
        outcomes.order(),
        ["counting_chain", "first_two"].repeat(6),
        "each pick's hooks once, outermost first"
    );
    ch.close();
}

// ---------------------------------------------------------------------------
// With real HTTP/2 backends on 127.0.0.1: the library's own calls (blocking
// and started) report their outcomes through the chain too.

fn echo_port(reader: &mut Reader) -> u16 {
    let options = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        wait_for_ready: Some(true),
        ..Default::default()
    };
    let resp = reader.unary("/echo.Echo/Unary", b"ping", &options).unwrap();
    let text = String::from_utf8(resp.message).unwrap();
    text.strip_prefix("ping|port=").unwrap().parse().unwrap()
}

#[test]
fn the_librarys_own_calls_report_through_the_chain() {
    let outcomes = Arc::new(Outcomes::default());
    register_first_two("first_two_calls", Some(outcomes.clone()));
    register_counting("counting_calls", &outcomes);
    let servers: Vec<TestServer> = (0..3)
        .map(|_| {
            let listen = Listen::Tcp("127.0.0.1:0".parse().unwrap());
            TestServer::start(listen, ServerOptions::default()).unwrap()
        })
        .collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.port()).collect();
    let target = format!(
        "ipv4:{}",
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &target,
        Some(r#"{"loadBalancingConfig":[{"counting_calls":{"childPolicy":"first_two_calls"}}]}"#),
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            ..Default::default()
        },
    )
    .unwrap();
    let mut reader = ch.reader();
    // Until both of the first two endpoints serve (bounded: they connect
    // within a few attempts on loopback).
    let mut seen = std::collections::HashSet::new();
    for _ in 0..500 {
        seen.insert(echo_port(&mut reader));
        if seen.contains(&ports[0]) && seen.contains(&ports[1]) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        seen.contains(&ports[0]) && seen.contains(&ports[1]),
        "{seen:?}"
    );
    let before = outcomes.order().len();
    let mut served = Vec::new();
    for _ in 0..4 {
        served.push(echo_port(&mut reader));
    }
    // Two started calls, finished on the loop.
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..2 {
        let tx = tx.clone();
        let options = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            wait_for_ready: Some(true),
            ..Default::default()
        };
        ch.unary_start("/echo.Echo/Unary", b"ping", &options, move |r| {
            let _ = tx.send(r.is_ok());
        })
        .unwrap();
    }
    for _ in 0..2 {
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    }
    served.sort();
    let mut expected = [ports[0], ports[0], ports[1], ports[1]];
    expected.sort();
    assert_eq!(served, expected, "only the first two endpoints");
    let order = outcomes.order();
    assert_eq!(
        order[before..],
        ["counting_calls", "first_two"].repeat(6),
        "every call's hooks once, outermost first"
    );
    assert_eq!(outcomes.failed("first_two"), 0);
    assert_eq!(outcomes.ok("first_two"), outcomes.ok("counting_calls"));
    ch.close();
}

/// A policy that creates its subchannels and stays CONNECTING whatever they do.
struct StaysConnecting;

impl Builder for StaysConnecting {
    fn name(&self) -> &str {
        "toolkit_stays_connecting"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(StaysConnectingPolicy)
    }
}

struct StaysConnectingPolicy;

impl Balancer for StaysConnectingPolicy {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        for a in state.addresses {
            let sc = cc.new_subconn(a)?;
            cc.connect(sc.id());
        }
        cc.update_state(Connecting, Box::new(QueuePicker));
        Ok(())
    }
    fn resolver_error(&mut self, _cc: &mut dyn ClientConn, _error: &str) {}
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, _sc: SubConnId, _s: &SubConnState) {
        cc.update_state(Connecting, Box::new(QueuePicker));
    }
    fn exit_idle(&mut self, _cc: &mut dyn ClientConn) {}
    fn close(&mut self, _cc: &mut dyn ClientConn) {}
}

/// gRPC-Go's graceful switch ignores re-resolution requests from a policy
/// that is no longer the latest: while a new policy is pending, the serving
/// one's requests do not reach the resolver; the pending one's do.
#[test]
fn a_graceful_switch_passes_on_re_resolution_from_the_latest_policy_only() {
    use switchyard::balancer::graceful_switch::GracefulSwitch;
    use switchyard::policy::round_robin::RoundRobinBuilder;

    let mut tcc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    gs.switch_to(&mut tcc, Arc::new(RoundRobinBuilder));
    tcc.update_addresses(&mut gs, ["127.0.0.1:1", "127.0.0.2:1"])
        .unwrap();
    let a = tcc.subconn_for("127.0.0.1:1").unwrap().id();
    let b = tcc.subconn_for("127.0.0.2:1").unwrap().id();
    tcc.set_state(&mut gs, a, Ready);
    tcc.set_state(&mut gs, b, Ready);
    assert_eq!(tcc.state(), Some(Ready));

    // Serving alone: a lost connection asks for re-resolution.
    let asked = tcc.resolve_now_requests();
    tcc.set_state(&mut gs, b, Idle);
    assert!(
        tcc.resolve_now_requests() > asked,
        "the latest policy is heard"
    );

    // A pending policy beside it: round_robin is no longer the latest.
    assert!(gs.switch_to(&mut tcc, Arc::new(StaysConnecting)));
    tcc.update_addresses(&mut gs, ["127.0.0.1:1", "127.0.0.2:1"])
        .unwrap();
    assert_eq!(tcc.state(), Some(Ready), "the old policy keeps serving");
    let asked = tcc.resolve_now_requests();
    tcc.set_state(&mut gs, b, TransientFailure);
    assert_eq!(tcc.state(), Some(Ready), "still serving over a");
    assert_eq!(
        tcc.resolve_now_requests(),
        asked,
        "the old policy is not heard"
    );
}

/// Each channel's (target, authority) as its policy saw them.
type Sightings = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// What a policy sees of its channel (gRPC-Go's `ClientConn.Target()` and
/// `BuildOptions.Authority`), recorded at its first update.
struct SeesChannel(Sightings);

impl Builder for SeesChannel {
    fn name(&self) -> &str {
        "toolkit_sees_channel"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(SeesChannelPolicy(self.0.clone()))
    }
}

struct SeesChannelPolicy(Sightings);

impl Balancer for SeesChannelPolicy {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        _: ClientConnState,
    ) -> Result<(), String> {
        let seen = (cc.target().to_string(), cc.authority().map(str::to_string));
        self.0.lock().unwrap().push(seen);
        cc.update_state(Connecting, Box::new(QueuePicker));
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

#[test]
fn a_policy_sees_its_channels_target_and_authority() {
    let seen: Sightings = Arc::default();
    registry::register(Arc::new(SeesChannel(seen.clone())));
    let rt = Runtime::new().unwrap();
    let config = r#"{"loadBalancingConfig":[{"toolkit_sees_channel":{}}]}"#;
    let cases = [
        ("ipv4:127.0.0.1:9", None, Some("127.0.0.1:9")),
        ("ipv4:127.0.0.1:9,127.0.0.1:10", None, None),
        (
            "ipv4:127.0.0.1:9",
            Some("svc.test:443"),
            Some("svc.test:443"),
        ),
    ];
    for (i, (target, given, want)) in cases.into_iter().enumerate() {
        let opts = ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            authority: given.map(str::to_string),
            ..Default::default()
        };
        let ch = Channel::new(&rt, target, Some(config), opts).unwrap();
        ch.connect().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().len() <= i && Instant::now() < deadline {
            ch.sync().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let got = seen.lock().unwrap()[i].clone();
        assert_eq!(
            got,
            (target.to_string(), want.map(str::to_string)),
            "{target}"
        );
    }
    // Outside a channel: what the test ClientConn is given.
    let cc = TestClientConn::new().with_target("dns:///svc.test:443", Some("svc.test:443"));
    assert_eq!(
        (cc.target(), cc.authority()),
        ("dns:///svc.test:443", Some("svc.test:443"))
    );
}

/// A policy under any name that counts its builds and publishes the name
/// it was built under in its failing picker.
struct NamedPolicy(&'static str, Arc<AtomicU64>);

impl Builder for NamedPolicy {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        self.1.fetch_add(1, Ordering::SeqCst);
        Box::new(NamedPolicyBalancer(self.0))
    }
}

struct NamedPolicyBalancer(&'static str);

impl Balancer for NamedPolicyBalancer {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        _: ClientConnState,
    ) -> Result<(), String> {
        cc.update_state(TransientFailure, Box::new(FailPicker::unavailable(self.0)));
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

/// Policy names are case-sensitive (gRPC-Go's registry since 1.82, and its
/// graceful switch compares `Builder.Name()` exactly): "Toolkit_Case" and
/// "toolkit_case" are two policies, and a service config that moves from
/// one to the other switches policies, in the graceful switch and in a
/// `ChildManager` alike.
#[test]
fn policies_whose_names_differ_in_case_only_are_switched_between() {
    use switchyard::balancer::child_manager::ChildUpdate;
    use switchyard::balancer::graceful_switch::GracefulSwitch;

    let upper_builds = Arc::new(AtomicU64::new(0));
    let lower_builds = Arc::new(AtomicU64::new(0));
    let upper: Arc<dyn Builder> = Arc::new(NamedPolicy("Toolkit_Case", upper_builds.clone()));
    let lower: Arc<dyn Builder> = Arc::new(NamedPolicy("toolkit_case", lower_builds.clone()));

    let mut tcc = TestClientConn::new();
    let mut gs = GracefulSwitch::new();
    assert!(gs.switch_to(&mut tcc, upper.clone()));
    tcc.update_addresses(&mut gs, [A]).unwrap();
    assert!(gs.switch_to(&mut tcc, lower.clone()), "another policy");
    tcc.update_addresses(&mut gs, [A]).unwrap();
    assert_eq!(gs.current_policy(), Some("toolkit_case"));
    assert_eq!(lower_builds.load(Ordering::SeqCst), 1);

    let mut children = ChildManager::new();
    let mut tcc = TestClientConn::new();
    let update = |builder: &Arc<dyn Builder>| {
        vec![ChildUpdate {
            key: "only".into(),
            builder: builder.clone(),
            state: ClientConnState::default(),
        }]
    };
    children.update(&mut tcc, update(&upper)).unwrap();
    children.update(&mut tcc, update(&lower)).unwrap();
    assert_eq!(children.get("only").unwrap().policy(), "toolkit_case");
    assert_eq!(lower_builds.load(Ordering::SeqCst), 2, "rebuilt");

    // In a channel: the service config names one, then the other.
    registry::register(upper);
    registry::register(lower);
    let rt = Runtime::new().unwrap();
    let host = Arc::new(Host::default());
    let ch = channel(
        &rt,
        &host,
        r#"{"loadBalancingConfig":[{"Toolkit_Case":{}}]}"#,
    );
    ch.update_addresses(vec![Address::new(A)]).unwrap();
    ch.sync().unwrap();
    let mut reader = ch.reader();
    let no_wait = PickOptions::default();
    let err = reader.pick(&PickInfo::default(), &no_wait).unwrap_err();
    assert!(err.to_string().contains("Toolkit_Case"), "{err}");
    ch.update_service_config(r#"{"loadBalancingConfig":[{"toolkit_case":{}}]}"#)
        .unwrap();
    ch.sync().unwrap();
    let err = reader.pick(&PickInfo::default(), &no_wait).unwrap_err();
    assert!(err.to_string().contains("toolkit_case"), "{err}");
    ch.close();
}

/// Counts every callback it gets after `close`.
struct ShutsDownOnClose {
    subconns: Vec<SubConnId>,
    closed: bool,
    after_close: Arc<AtomicU64>,
    /// `new_subconn` calls refused inside `close`.
    refused_in_close: Arc<AtomicU64>,
}

impl Builder for ShutsDownOnClose {
    fn name(&self) -> &str {
        "toolkit_shuts_down_on_close"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(ShutsDownOnClose {
            subconns: Vec::new(),
            closed: false,
            after_close: self.after_close.clone(),
            refused_in_close: self.refused_in_close.clone(),
        })
    }
}

impl Balancer for ShutsDownOnClose {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        for a in state.addresses {
            let sc = cc.new_subconn(a)?;
            cc.connect(sc.id());
            self.subconns.push(sc.id());
        }
        cc.update_state(Connecting, Box::new(QueuePicker));
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {
        if self.closed {
            self.after_close.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.closed = true;
        for sc in self.subconns.drain(..) {
            cc.shutdown_subconn(sc);
        }
        // gRPC-Go: "balancer is being closed; no new SubConns allowed".
        if cc.new_subconn(Address::new(C)).is_err() {
            self.refused_in_close.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `Balancer::close` is the last call a policy gets (gRPC-Go: nothing
/// reaches a closed balancer), in `TestClientConn` as in a channel: the
/// subchannels it shuts down in `close` send it no SHUTDOWN afterwards, and
/// it may create none in `close` (gRPC-Go refuses a closing balancer's
/// `NewSubConn`).
#[test]
fn nothing_reaches_a_closed_policy_and_it_creates_no_subchannel_in_close() {
    let after_close = Arc::new(AtomicU64::new(0));
    let refused_in_close = Arc::new(AtomicU64::new(0));
    let builder = Arc::new(ShutsDownOnClose {
        subconns: Vec::new(),
        closed: false,
        after_close: after_close.clone(),
        refused_in_close: refused_in_close.clone(),
    });
    let mut policy = builder.build();
    let mut cc = TestClientConn::new();
    cc.update_addresses(&mut *policy, [A, B]).unwrap();
    cc.close(&mut *policy);
    assert_eq!(cc.shutdowns().len(), 2, "both shut down");
    assert_eq!(cc.subconns().len(), 2, "none made in close");
    assert_eq!(after_close.load(Ordering::SeqCst), 0, "nothing after close");
    assert_eq!(refused_in_close.load(Ordering::SeqCst), 1);

    // In a channel: closed by a policy switch, then with its channel.
    registry::register(builder);
    let rt = Runtime::new().unwrap();
    let host = Arc::new(Host::default());
    let ch = channel(
        &rt,
        &host,
        r#"{"loadBalancingConfig":[{"toolkit_shuts_down_on_close":{}}]}"#,
    );
    ch.update_addresses(vec![Address::new(A), Address::new(B)])
        .unwrap();
    ch.sync().unwrap();
    ch.update_service_config(r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#)
        .unwrap();
    ch.sync().unwrap();
    ch.update_service_config(r#"{"loadBalancingConfig":[{"toolkit_shuts_down_on_close":{}}]}"#)
        .unwrap();
    ch.sync().unwrap();
    ch.close();
    assert_eq!(refused_in_close.load(Ordering::SeqCst), 3);
    assert_eq!(after_close.load(Ordering::SeqCst), 0, "nothing after close");
}

/// Endpoint sharding under a new child policy rebuilds the children it
/// already has with it, as `ChildManager::update` does for a named child
/// (the docs say every child runs the builder given): they used to keep
/// the policy they were built with.
#[test]
fn endpoint_children_are_rebuilt_under_a_new_child_policy() {
    let mut cc = TestClientConn::new();
    let mut children = ChildManager::new();
    let pick_first = registry::get("pick_first").expect("a built-in");
    let round_robin = registry::get("round_robin").expect("a built-in");
    let endpoints = vec![switchyard::Endpoint::from(Address::new("127.0.0.1:1"))];
    children.update_endpoints(&mut cc, &endpoints, &pick_first, None);
    let key = children.keys().pop().expect("one child");
    assert_eq!(children.get(&key).unwrap().policy(), "pick_first");
    children.update_endpoints(&mut cc, &endpoints, &round_robin, None);
    assert_eq!(children.keys(), std::slice::from_ref(&key));
    assert_eq!(children.get(&key).unwrap().policy(), "round_robin");
    children.close(&mut cc);
}
