//! gRPC-Go's test/balancer_switching_test.go and
//! test/resolver_update_test.go, the cases NOT already pinned by
//! tests/graceful_switch_go_cases.rs (Basic, Graceful, switches mid-way),
//! tests/resolver_api_go_cases.rs / tests/resolver_api.rs (invalid config
//! during build / as first update / after a good one),
//! tests/idle_service_config_java_cases.rs (last good policy config with new
//! addresses) and tests/managed/switch.rs (a policy shutting down its
//! subchannels in close when switched away from).
//!
//! grpclb itself is not in switchyard: its tests are ported with
//! round_robin standing in for grpclb (the shape: policy A -> policy B ->
//! `{}` brings the default pick_first back, on new addresses), and
//! grpclbNotRegistered as "a deprecated `loadBalancingPolicy` naming an
//! unregistered policy".

#[path = "common/mod.rs"]
mod common;

use common::{plaintext, rpc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverState};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

const PF: &str = r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#;
const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// gRPC-Go's manual resolver: pushed before the build = initial state.
struct Fake {
    r: ManualResolver,
    scheme: String,
}

impl Fake {
    fn new(name: &str) -> Fake {
        let scheme = format!("switching-{name}");
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
            self.r.update(st).expect("channel took the update");
        } else {
            self.r.set_initial_state(Some(st));
        }
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

fn addrs_of(s: &[TestServer]) -> Vec<String> {
    s.iter().map(|s| s.addr().to_string()).collect()
}

/// `n` fail-fast RPCs (2 s each); every one must succeed.
fn rpcs_ok(ch: &Channel, n: usize) -> HashMap<u16, usize> {
    let mut m = HashMap::new();
    for _ in 0..n {
        let p = rpc(ch, false, Duration::from_secs(2))
            .unwrap_or_else(|s| panic!("RPC failed: {:?}: {}", s.code(), s.message()));
        *m.entry(p).or_default() += 1;
    }
    m
}

/// Batches of `n` wait-for-ready RPCs until `pred` holds (bounded, 10 s).
fn until_batch(ch: &Channel, n: usize, what: &str, pred: impl Fn(&HashMap<u16, usize>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut m = HashMap::new();
        for _ in 0..n {
            let p = rpc(ch, true, Duration::from_secs(3))
                .unwrap_or_else(|s| panic!("{what}: RPC failed: {:?}: {}", s.code(), s.message()));
            *m.entry(p).or_default() += 1;
        }
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

fn policy(ch: &Channel) -> String {
    ch.snapshot().unwrap().policy
}

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

// ---------------------------------------------------------------------
// balancer_switching_test.go
// ---------------------------------------------------------------------

/// TestBalancerSwitch_RoundRobinToGRPCLB / _grpclbToPickFirst's last step
/// (round_robin standing in for grpclb): round_robin on addrs[1..]; a
/// config of `{}` (valid, no policy) with addrs[1..] brings the default
/// pick_first back: RPCs go to addrs[1] only; round_robin again spreads.
/// No RPC fails on the way.
#[test]
fn empty_config_object_switches_back_to_default_pick_first() {
    let s = servers(3);
    let addrs = addrs_of(&s);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let fake = Fake::new("emptycfg");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &fake.target(), None, plaintext()).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    fake.push(&addrs[1..], Some(RR));
    until_batch(
        &ch,
        4,
        "round robin over 1..",
        even_over(ports[1..].to_vec()),
    );
    assert_eq!(policy(&ch), "round_robin");

    fake.push(&addrs[1..], Some("{}"));
    until_batch(&ch, 4, "pick_first on addrs[1]", only(ports[1]));
    assert_eq!(policy(&ch), "pick_first");
    rpcs_ok(&ch, 5);

    // Switching back (TestBalancerSwitch_RoundRobinToGRPCLB's last step).
    fake.push(&addrs[1..], Some(RR));
    until_batch(&ch, 4, "round robin again", even_over(ports[1..].to_vec()));
    assert_eq!(s[0].requests(), 0);
}

/// The deprecated `loadBalancingPolicy` field drives switches end to end
/// (gRPC-Go's comment in TestBalancerSwitch_RoundRobinToGRPCLB: the channel
/// looks at loadBalancingConfig first, then loadBalancingPolicy): default
/// pick_first -> "round_robin" -> "pick_first"; and a config naming both
/// follows loadBalancingConfig.
#[test]
fn deprecated_load_balancing_policy_field_switches_policies() {
    let s = servers(3);
    let addrs = addrs_of(&s);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let fake = Fake::new("deprecated");
    fake.push(&addrs, None);
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &fake.target(), None, plaintext()).unwrap();
    until_batch(&ch, 6, "pick_first on 0", only(ports[0]));

    fake.push(&addrs, Some(r#"{"loadBalancingPolicy":"round_robin"}"#));
    until_batch(&ch, 9, "round robin", even_over(ports.clone()));
    assert_eq!(policy(&ch), "round_robin");

    fake.push(&addrs, Some(r#"{"loadBalancingPolicy":"pick_first"}"#));
    until_batch(&ch, 6, "pick_first again", only(ports[0]));
    assert_eq!(policy(&ch), "pick_first");

    fake.push(
        &addrs,
        Some(r#"{"loadBalancingPolicy":"round_robin","loadBalancingConfig":[{"pick_first":{}}]}"#),
    );
    ch.sync().unwrap();
    assert_eq!(policy(&ch), "pick_first");
    let m = rpcs_ok(&ch, 9);
    assert!(only(ports[0])(&m), "{m:?}");
}

/// TestBalancerSwitch_grpclbNotRegistered, with "grpclb" (not registered in
/// switchyard) named by the deprecated field. gRPC-Go falls back to
/// pick_first (service_config.go parseServiceConfig: `if balancer.Get(name)
/// == nil { name = pickfirst.Name }`); C-core (client_channel_service_config
/// .cc: `unknown LB policy`) and Java (selectLbPolicyFromList: "None of ...
/// are available") reject the config. switchyard takes the C-core/Java side
/// (tests/service_config_core_cases.rs c_core_load_balancing_policy_field):
/// as a first config it fails RPCs; after a good round_robin config it is
/// an invalid config, round_robin stays, on the update's new addresses.
#[test]
fn unregistered_deprecated_policy_name_is_an_invalid_config() {
    let s = servers(3);
    let addrs = addrs_of(&s);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let fake = Fake::new("nogrpclb");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &fake.target(), None, plaintext()).unwrap();
    ch.connect().unwrap();
    ch.sync().unwrap();
    let grpclb = r#"{"loadBalancingPolicy":"grpclb"}"#;
    fake.push(&addrs, Some(grpclb));
    ch.sync().unwrap();
    let e = rpc(&ch, false, Duration::from_secs(2)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("error parsing service config")
            && e.message().contains("unknown LB policy"),
        "{e:?}"
    );
    // Go would serve pick_first on addrs[0] here.
    assert_eq!(s[0].requests(), 0);

    fake.push(&addrs, Some(RR));
    // The push is applied on the channel's loop, later (ResolverClientConn::
    // update docs; Go's UpdateState applies it before returning): without
    // this, a wait-for-ready RPC can still meet the failing picker.
    ch.sync().unwrap();
    until_batch(&ch, 9, "round robin", even_over(ports.clone()));
    fake.push(&addrs[1..], Some(grpclb));
    until_batch(
        &ch,
        4,
        "round robin over the new 1..",
        even_over(ports[1..].to_vec()),
    );
    assert_eq!(policy(&ch), "round_robin");
}

static SHUTDOWN_IN_CLOSE_UPDATES: AtomicUsize = AtomicUsize::new(0);
static SHUTDOWN_IN_CLOSE_CLOSES: AtomicUsize = AtomicUsize::new(0);

/// gRPC-Go TestBalancerSwitch_OldBalancerCallsShutdownInClose's stub: one
/// subchannel for the update's addresses; close shuts it down inline.
struct ShutsDownInClose(Vec<SubConnId>);

impl Balancer for ShutsDownInClose {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        for a in state.addresses {
            let sc = cc.new_subconn(a)?;
            cc.connect(sc.id());
            self.0.push(sc.id());
        }
        SHUTDOWN_IN_CLOSE_UPDATES.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, cc: &mut dyn ClientConn) {
        SHUTDOWN_IN_CLOSE_CLOSES.fetch_add(1, Ordering::SeqCst);
        for sc in self.0.drain(..) {
            cc.shutdown_subconn(sc);
        }
    }
}

struct ShutsDownInCloseBuilder;

impl Builder for ShutsDownInCloseBuilder {
    fn name(&self) -> &str {
        "switching_shutdown_in_close"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(ShutsDownInClose(Vec::new()))
    }
}

/// TestBalancerSwitch_OldBalancerCallsShutdownInClose: the stub policy
/// (named by the deprecated field, as in Go) on "dummy-address", switched
/// away from by a resolver update to pick_first: the update returns, the
/// stub is closed once, its subchannel goes, and pick_first serves (here
/// on a real backend, which Go's test does not check).
#[test]
fn old_policy_shutting_down_in_close_does_not_block_the_switch() {
    registry::register(Arc::new(ShutsDownInCloseBuilder));
    let s = servers(1);
    let fake = Fake::new("shutinclose");
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(Channel::new(&rt, &fake.target(), None, plaintext()).unwrap());
    ch.connect().unwrap();
    ch.sync().unwrap();
    fake.push(
        &["dummy-address".to_string()],
        Some(r#"{"loadBalancingPolicy":"switching_shutdown_in_close"}"#),
    );
    common::wait_until("the stub's update", || {
        SHUTDOWN_IN_CLOSE_UPDATES.load(Ordering::SeqCst) >= 1
    });
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let fake_r = fake.r.clone();
        let addr = s[0].addr().to_string();
        std::thread::spawn(move || {
            let r = fake_r.update(ResolverState {
                endpoints: vec![Endpoint::from(Address::new(addr))],
                service_config: Some(PF.into()),
            });
            let _ = tx.send(r);
        });
    }
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the update returned")
        .expect("accepted");
    assert_eq!(
        rpc(&ch, true, Duration::from_secs(5)).expect("pick_first serves"),
        s[0].port()
    );
    common::wait_until("the stub closed", || {
        SHUTDOWN_IN_CLOSE_CLOSES.load(Ordering::SeqCst) == 1
    });
    assert_eq!(sc_addrs(&ch), [s[0].addr().to_string()]);
    assert_eq!(policy(&ch), "pick_first");
}

static CREATES_IN_CLOSE_RESULT: Mutex<Option<Result<(), String>>> = Mutex::new(None);
static CREATES_IN_CLOSE_TARGET: Mutex<Option<String>> = Mutex::new(None);
static CREATES_IN_CLOSE_READY: AtomicBool = AtomicBool::new(false);

/// A policy that, in close, makes a new subchannel to another backend and
/// connects it (a buggy policy). gRPC-Go's gracefulswitch refuses it:
/// balancerWrapper.NewSubConn fails once the wrapper is neither current nor
/// pending ("... that called NewSubConn is deleted"), and swap() removes the
/// old current before calling its Close.
struct CreatesInClose(Box<dyn Balancer>);

impl Balancer for CreatesInClose {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        self.0.update_client_conn_state(cc, state)
    }
    fn resolver_error(&mut self, cc: &mut dyn ClientConn, e: &str) {
        self.0.resolver_error(cc, e)
    }
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, sc: SubConnId, s: &SubConnState) {
        if s.state == ConnectivityState::Ready {
            CREATES_IN_CLOSE_READY.store(true, Ordering::SeqCst);
        }
        self.0.update_subconn_state(cc, sc, s)
    }
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        self.0.exit_idle(cc)
    }
    fn timer(&mut self, cc: &mut dyn ClientConn, t: TimerToken) {
        self.0.timer(cc, t)
    }
    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.0.close(cc);
        let target = CREATES_IN_CLOSE_TARGET.lock().unwrap().clone().unwrap();
        let r = cc.new_subconn(Address::new(target)).map(|sc| {
            cc.connect(sc.id());
        });
        *CREATES_IN_CLOSE_RESULT.lock().unwrap() = Some(r);
    }
}

struct CreatesInCloseBuilder;

impl Builder for CreatesInCloseBuilder {
    fn name(&self) -> &str {
        "switching_creates_in_close"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(CreatesInClose(registry::get("pick_first").unwrap().build()))
    }
}

/// The old policy, closed by a switch, asks for a new subchannel: nothing
/// of it must stay (no subchannel in the channel's snapshot, no lasting
/// connection to that backend). gRPC-Go refuses the NewSubConn outright.
#[test]
fn a_subchannel_made_by_a_closed_policy_does_not_linger() {
    registry::register(Arc::new(CreatesInCloseBuilder));
    let s = servers(2);
    let addrs = addrs_of(&s);
    *CREATES_IN_CLOSE_TARGET.lock().unwrap() = Some(addrs[1].clone());
    let fake = Fake::new("createinclose");
    fake.push(
        &addrs[..1],
        Some(r#"{"loadBalancingConfig":[{"switching_creates_in_close":{}}]}"#),
    );
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &fake.target(), None, plaintext()).unwrap();
    assert_eq!(rpc(&ch, true, Duration::from_secs(5)).unwrap(), s[0].port());
    assert!(CREATES_IN_CLOSE_READY.load(Ordering::SeqCst));

    fake.push(&addrs[..1], Some(RR));
    common::wait_until("the old policy closed", || {
        CREATES_IN_CLOSE_RESULT.lock().unwrap().is_some()
    });
    let r = CREATES_IN_CLOSE_RESULT.lock().unwrap().clone().unwrap();
    eprintln!("new_subconn from close: {r:?}");
    until_batch(&ch, 4, "round robin on 0", only(s[0].port()));
    std::thread::sleep(Duration::from_millis(500));
    ch.sync().unwrap();
    assert_eq!(
        sc_addrs(&ch),
        [addrs[0].clone()],
        "only round_robin's subchannel (new_subconn in close gave {r:?})"
    );
    common::wait_until("no connection to the closed policy's backend", || {
        s[1].connections() == 0
    });
    assert!(
        r.is_err(),
        "gRPC-Go refuses NewSubConn from a closed policy: {r:?}"
    );
}

/// gRPC-Go gracefulswitch.UpdateClientConnState: a config naming the
/// policy already running (another config for it) is an update of that
/// instance, not a switch: pick_first READY on backend 0 keeps its one
/// connection and subchannel; round_robin likewise.
#[test]
fn same_policy_with_another_config_keeps_its_connections() {
    let s = servers(2);
    let addrs = addrs_of(&s);
    let ports: Vec<u16> = s.iter().map(TestServer::port).collect();
    let fake = Fake::new("samepolicy");
    fake.push(&addrs, Some(PF));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &fake.target(), None, plaintext()).unwrap();
    until_batch(&ch, 4, "pick_first on 0", only(ports[0]));
    let before: Vec<SubConnId> = ch
        .snapshot()
        .unwrap()
        .subchannels
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(s[0].connections(), 1);
    fake.push(
        &addrs,
        Some(r#"{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":false}}],"methodConfig":[{"name":[{}],"timeout":"9s"}]}"#),
    );
    ch.sync().unwrap();
    assert_eq!(
        ch.method_config("/echo.Echo/Unary").unwrap().timeout,
        Some(Duration::from_secs(9))
    );
    let m = rpcs_ok(&ch, 6);
    assert!(only(ports[0])(&m), "{m:?}");
    let after: Vec<SubConnId> = ch
        .snapshot()
        .unwrap()
        .subchannels
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(before, after);
    assert_eq!(s[0].connections(), 1, "no new connection");

    fake.push(&addrs, Some(RR));
    until_batch(&ch, 4, "round robin", even_over(ports.clone()));
    let before: Vec<SubConnId> = ch
        .snapshot()
        .unwrap()
        .subchannels
        .iter()
        .map(|s| s.id)
        .collect();
    let conns = (s[0].connections(), s[1].connections());
    fake.push(
        &addrs,
        Some(r#"{"loadBalancingConfig":[{"round_robin":{"unknownField":1}}],"methodConfig":[{"name":[{}],"timeout":"8s"}]}"#),
    );
    ch.sync().unwrap();
    assert_eq!(
        ch.method_config("/echo.Echo/Unary").unwrap().timeout,
        Some(Duration::from_secs(8))
    );
    let m = rpcs_ok(&ch, 6);
    assert!(even_over(ports.clone())(&m), "{m:?}");
    let after: Vec<SubConnId> = ch
        .snapshot()
        .unwrap()
        .subchannels
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(before, after);
    assert_eq!((s[0].connections(), s[1].connections()), conns);
}

// ---------------------------------------------------------------------
// resolver_update_test.go
// ---------------------------------------------------------------------

/// TestResolverUpdateDuringBuild_ServiceConfigParseError, with the
/// resolver's own parse error (Go's `ParseResult{Err: "resolver build
/// err"}`; switchyard's form is a JSON string saying why) in the initial
/// state: the first RPC fails UNAVAILABLE "error parsing service config";
/// the error's text is kept. A good update heals the channel; the same
/// error after it keeps the good config (Go: ErrBadResolverState, cc.sc
/// kept) on the update's addresses, and the resolver is asked again.
#[test]
fn a_resolvers_own_config_error_fails_the_first_rpc_then_is_kept_out() {
    let s = servers(2);
    let addrs = addrs_of(&s);
    let fake = Fake::new("ownerr");
    fake.push(&[], Some(r#""resolver build err""#));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &fake.target(), None, plaintext()).unwrap();
    let e = rpc(&ch, false, Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("error parsing service config")
            && e.message().contains("resolver build err"),
        "{e:?}"
    );
    // Go returns ErrBadResolverState; here the re-resolution is paced.
    common::wait_until("the first update counted as rejected", || {
        fake.r.rejected() >= 1
    });

    fake.push(&addrs[..1], Some(RR));
    ch.sync().unwrap(); // the push is queued for the channel's loop
    assert_eq!(rpc(&ch, true, Duration::from_secs(5)).unwrap(), s[0].port());
    let rejected = fake.r.rejected();
    fake.push(&addrs[1..], Some(r#""resolver build err""#));
    until_batch(&ch, 3, "round robin on the new address", only(s[1].port()));
    assert_eq!(policy(&ch), "round_robin");
    common::wait_until("the update counted as rejected", || {
        fake.r.rejected() > rejected
    });
}

/// TestResolverUpdate_InvalidServiceConfigAsFirstUpdate with addresses
/// and a wait-for-ready RPC queued before the update: the queued RPC
/// fails with the parse error at once (Go's erroring picker fails picks
/// "unconditionally"), it does not wait for its deadline.
#[test]
fn a_queued_wait_for_ready_rpc_fails_on_an_invalid_first_config() {
    let s = servers(1);
    let fake = Fake::new("queuedbad");
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(Channel::new(&rt, &fake.target(), None, plaintext()).unwrap());
    ch.connect().unwrap();
    ch.sync().unwrap();
    let waiting = {
        let ch = ch.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            (rpc(&ch, true, Duration::from_secs(8)), t0.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiting.is_finished());
    fake.push(&addrs_of(&s), Some("bad json service config"));
    let (r, took) = waiting.join().unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("error parsing service config"),
        "{e:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(s[0].requests(), 0);
}
