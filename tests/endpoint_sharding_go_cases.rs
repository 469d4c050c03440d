//! Ported from gRPC-Go (grpc-go 4793ad04):
//! balancer/endpointsharding (endpointsharding_ext_test.go), A61 endpoint
//! identity (resolver/map_test.go EndpointMap / map.go encodeEndpoint),
//! balancer/base/balancer_test.go (attributes kept on NewSubConn),
//! test/balancer_test.go (a policy's ClientConn calls during close),
//! test/subconn_test.go (empty address list), test/resolver_update_test.go
//! (ReportError keeps the good config) and service_config.go parse rows that
//! tests/service_config_go_tables.rs leaves out.
//!
//! Where gRPC's implementations disagree, pinned: an endpoint is the *set*
//! of its addresses (`[A, A]` is `[A]`: A61, C-core, grpc-java; gRPC-Go
//! keys the sorted list); a negative method timeout is refused (grpc-java;
//! gRPC-Go parses then ignores it); message size limits are read as C-core
//! reads them (a uint32, a decimal string accepted; gRPC-Go an int64).

#[path = "common/mod.rs"]
mod common;

use common::{plaintext, rpc};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::balancer::child_manager::{endpoint_key, ChildManager, ChildParent};
use switchyard::balancer::picker::{FailPicker, ForwardingPicker, QueuePicker, SinglePicker};
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverState};
use switchyard::service_config::ServiceConfig;
use switchyard::ConnectivityState::{Connecting, Idle, Ready, Shutdown, TransientFailure};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

fn ep(addrs: &[&str]) -> Endpoint {
    Endpoint::new(addrs.iter().map(|a| Address::new(*a)).collect())
}

// ---------------------------------------------------------------------------
// resolver/map_test.go: EndpointMap semantics (A61 endpoint identity)
// ---------------------------------------------------------------------------

/// TestEndpointMap_Length / _Get: [a1,a2] and [a2,a1] are one endpoint;
/// [a1,a2,a3] and [a1] are others; attributes are not part of the key.
#[test]
fn endpoint_identity_is_the_unordered_address_set_without_attributes() {
    let e12 = ep(&["addr1", "addr2"]);
    let e21 = ep(&["addr2", "addr1"]);
    let e123 = ep(&["addr1", "addr2", "addr3"]);
    let e1 = ep(&["addr1"]);
    assert_eq!(endpoint_key(&e12), endpoint_key(&e21));
    assert_ne!(endpoint_key(&e12), endpoint_key(&e123));
    assert_ne!(endpoint_key(&e12), endpoint_key(&e1));
    let attrs = Endpoint::new(vec![
        Address::new("addr2").with_tag(9).with_weight(3),
        Address::new("addr1").with_user_data(Arc::new(5u32)),
    ])
    .with_weight(7)
    .with_hash_key("k");
    assert_eq!(endpoint_key(&attrs), endpoint_key(&e12));
}

/// The same through round_robin (endpointsharding): endpoints [A,B], [B,A]
/// and [A,B,C] are two children, so the READY rotation has two entries.
#[test]
fn round_robin_children_follow_endpoint_identity() {
    let mut cc = TestClientConn::new();
    let mut rr = registry::get("round_robin").unwrap().build();
    let (a, b, c) = ("127.0.0.1:4001", "127.0.0.1:4002", "127.0.0.1:4003");
    cc.update(
        &mut *rr,
        ClientConnState::new(vec![ep(&[a, b]), ep(&[b, a]), ep(&[a, b, c])], None),
    )
    .unwrap();
    let connecting: Vec<SubConnId> = cc.connects().to_vec();
    assert_eq!(
        connecting.len(),
        2,
        "one pick_first per endpoint: {connecting:?}"
    );
    for sc in connecting {
        cc.set_state(&mut *rr, sc, Ready);
    }
    let picks = cc.picks(6);
    let mut distinct: Vec<_> = picks.iter().flatten().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "{picks:?}");
}

/// gRPC-Go's encodeEndpoint base64-encodes each address before joining
/// them with a separator ("This allows us to use a delimiter without the
/// need of escape characters"), so an endpoint whose one address string
/// holds the separator is not the endpoint of the two halves. Addresses are
/// opaque strings here ("any string the connector understands").
#[test]
fn endpoint_identity_does_not_collide_on_separator_in_an_address() {
    let joined = ep(&["h1:1,h2:2"]);
    let split = ep(&["h1:1", "h2:2"]);
    // Observable: endpoint sharding must keep two children (two pick_firsts
    // connecting, one to "h1:1,h2:2", one to "h1:1").
    let mut cc = TestClientConn::new();
    let mut rr = registry::get("round_robin").unwrap().build();
    cc.update(
        &mut *rr,
        ClientConnState::new(vec![joined.clone(), split.clone()], None),
    )
    .unwrap();
    let made: Vec<String> = cc
        .subconns()
        .iter()
        .map(|s| s.address().addr.clone())
        .collect();
    assert_eq!(
        cc.connects().len(),
        2,
        "round_robin made one child for two endpoints; subchannels: {made:?}, keys: {:?} / {:?}",
        endpoint_key(&joined),
        endpoint_key(&split)
    );
    assert_ne!(endpoint_key(&joined), endpoint_key(&split));
}

/// Implementations disagree: gRPC-Go's EndpointMap key is the sorted
/// *list* of addresses ([A,A] and [A] are two endpoints); C-core
/// (EndpointAddressSet: a std::set) and grpc-java (a HashSet of the EAG's
/// addresses) use the set, as A61 says ("the set of addresses"). switchyard
/// takes the set: pinned.
#[test]
fn endpoint_with_a_repeated_address_is_the_endpoint_of_that_address() {
    let a = "127.0.0.1:4001";
    assert_eq!(endpoint_key(&ep(&[a, a])), endpoint_key(&ep(&[a])));
    let mut cc = TestClientConn::new();
    let mut rr = registry::get("round_robin").unwrap().build();
    cc.update(
        &mut *rr,
        ClientConnState::new(vec![ep(&[a, a]), ep(&[a])], None),
    )
    .unwrap();
    assert_eq!(cc.connects().len(), 1);
}

// ---------------------------------------------------------------------------
// balancer/base/balancer_test.go TestBaseBalancerReserveAttributes
// ---------------------------------------------------------------------------

/// The subchannels a policy makes carry the resolver's address attributes
/// (weight, tag, user data), for every address of a multi-address endpoint.
#[test]
fn subchannels_keep_the_address_attributes() {
    let (a, b) = ("127.0.0.1:4011", "127.0.0.1:4012");
    let data: UserData = Arc::new(String::from("attr-b"));
    let e = Endpoint::new(vec![
        Address::new(a).with_tag(11).with_weight(2),
        Address::new(b).with_tag(12).with_user_data(data.clone()),
    ]);
    for policy in ["round_robin", "least_request_experimental", "pick_first"] {
        let mut cc = TestClientConn::new();
        let mut p = registry::get(policy).unwrap().build();
        cc.update(&mut *p, ClientConnState::new(vec![e.clone()], None))
            .unwrap();
        let sa = cc.subconn_for(a).expect("subchannel for a").clone();
        assert_eq!(sa.address().tag, 11, "{policy}");
        cc.set_state(&mut *p, sa.id(), Connecting);
        cc.set_state(&mut *p, sa.id(), TransientFailure);
        let sb = cc
            .subconn_for(b)
            .unwrap_or_else(|| panic!("{policy}: second address tried"))
            .clone();
        assert_eq!(sb.address().tag, 12, "{policy}");
        assert!(
            Arc::ptr_eq(sb.address().user_data.as_ref().unwrap(), &data),
            "{policy}"
        );
        cc.set_state(&mut *p, sb.id(), Ready);
        match cc.pick() {
            Picked::Complete { subconn, .. } => assert_eq!(subconn, sb.id(), "{policy}"),
            other => panic!("{policy}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Channel-level helpers
// ---------------------------------------------------------------------------

fn server() -> TestServer {
    TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap()
}

#[derive(Clone, Default)]
struct StateLog(Arc<Mutex<Vec<ConnectivityState>>>);

impl StateLog {
    fn attach(&self, opts: &mut ChannelOptions) {
        let log = self.0.clone();
        opts.on_state_change = Some(Arc::new(move |s| log.lock().unwrap().push(s)));
    }
    fn all(&self) -> Vec<ConnectivityState> {
        self.0.lock().unwrap().clone()
    }
}

fn wait_state(ch: &Channel, want: ConnectivityState, within: Duration) -> bool {
    let end = Instant::now() + within;
    loop {
        let s = ch.state();
        if s == want {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        let _ = ch.wait_for_state_change(s, Some(Instant::now() + Duration::from_millis(100)));
    }
}

struct Builds<F: Fn() -> Box<dyn Balancer> + Send + Sync>(&'static str, F);

impl<F: Fn() -> Box<dyn Balancer> + Send + Sync> Builder for Builds<F> {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        (self.1)()
    }
}

fn config_for(name: &str) -> String {
    format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]}}"#)
}

// ---------------------------------------------------------------------------
// endpointsharding_ext_test.go TestEndpointShardingExitIdle
// ---------------------------------------------------------------------------

/// endpointsharding with DisableAutoReconnect over pick_first: one child
/// per endpoint, its state and picker published as they are; nothing
/// reconnects an IDLE child but ExitIdle.
struct NoAutoReconnect {
    children: ChildManager,
}

impl NoAutoReconnect {
    fn publish(&mut self, cc: &mut dyn ClientConn) {
        if let Some(c) = self.children.iter().next() {
            let (s, p) = (c.state(), c.picker().clone());
            cc.update_state(s, Box::new(ForwardingPicker(p)));
        }
    }
}

impl ChildParent for NoAutoReconnect {
    fn children(&mut self) -> &mut ChildManager {
        &mut self.children
    }
    fn child_changed(&mut self, cc: &mut dyn ClientConn, _key: &str) {
        self.publish(cc);
    }
}

impl Balancer for NoAutoReconnect {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let pf = registry::get("pick_first").unwrap();
        self.children
            .update_endpoints(cc, &state.endpoints, &pf, None);
        self.publish(cc);
        Ok(())
    }
    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.children.resolver_error(cc, error);
        self.publish(cc);
    }
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, sc: SubConnId, s: &SubConnState) {
        self.route_subconn_state(cc, sc, s);
    }
    fn work(&mut self, cc: &mut dyn ClientConn) {
        self.route_work(cc);
    }
    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        self.route_timer(cc, token);
    }
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        self.exit_idle_children(cc);
        self.publish(cc);
    }
    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.children.close(cc);
    }
}

/// One endpoint; an RPC succeeds; the backend stops: the channel goes IDLE
/// and stays IDLE (nothing reconnects on its own); `connect` (cc.Connect)
/// makes the policy leave IDLE: its attempt fails, TRANSIENT_FAILURE.
#[test]
fn sharding_without_auto_reconnect_stays_idle_until_connect() {
    let name = "endpoint_go_no_auto_reconnect";
    registry::register(Arc::new(Builds(name, || {
        Box::new(NoAutoReconnect {
            children: ChildManager::new(),
        })
    })));
    let s = server();
    let addr = s.addr().to_string();
    let r = ManualResolver::new("endpoint-go-exitidle");
    resolver::register(Arc::new(r.clone()));
    r.set_initial_state(Some(ResolverState {
        endpoints: vec![ep(&[&addr])],
        service_config: Some(config_for(name)),
    }));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "endpoint-go-exitidle:///x", None, plaintext()).unwrap();
    rpc(&ch, true, Duration::from_secs(5)).expect("first RPC");
    s.stop();
    assert!(
        wait_state(&ch, Idle, Duration::from_secs(5)),
        "IDLE after the backend stopped: {:?}",
        ch.state()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ch.state(), Idle, "nothing reconnected on its own");
    ch.connect().unwrap();
    assert!(
        wait_state(&ch, TransientFailure, Duration::from_secs(5)),
        "connect: the policy tries and fails: {:?}",
        ch.state()
    );
}

// ---------------------------------------------------------------------------
// test/balancer_test.go: a policy's ClientConn after close
// ---------------------------------------------------------------------------

#[derive(Default)]
struct CloseRecorder {
    sc: Option<Arc<SubConn>>,
    new_subconn_in_close: Arc<Mutex<Option<Result<(), String>>>>,
}

impl Balancer for CloseRecorder {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        if self.sc.is_none() {
            if let Some(a) = state.addresses.first() {
                let sc = cc.new_subconn(a.clone())?;
                cc.connect(sc.id());
                self.sc = Some(sc);
            }
        }
        cc.update_state(Connecting, Box::new(QueuePicker));
        Ok(())
    }
    fn resolver_error(&mut self, _cc: &mut dyn ClientConn, _error: &str) {}
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, _sc: SubConnId, s: &SubConnState) {
        if s.state == Ready {
            let sc = self.sc.clone().unwrap();
            cc.update_state(Ready, Box::new(SinglePicker::new(sc)));
        }
    }
    fn exit_idle(&mut self, _cc: &mut dyn ClientConn) {}
    fn close(&mut self, cc: &mut dyn ClientConn) {
        let r = cc.new_subconn(Address::new("127.0.0.1:1")).map(|_| ());
        *self.new_subconn_in_close.lock().unwrap() = Some(r);
        cc.update_state(Ready, Box::new(QueuePicker));
        cc.update_state(TransientFailure, Box::new(FailPicker::unavailable("late")));
    }
}

/// gRPC-Go's balancer wrapper after close: NewSubConn fails ("grpc:
/// ClientConn balancer wrapper was closed"), UpdateState is dropped (the
/// channel stays SHUTDOWN, no state after it).
#[test]
fn policy_calls_during_channel_close_are_refused_or_dropped() {
    let name = "endpoint_go_close_recorder";
    let seen: Arc<Mutex<Option<Result<(), String>>>> = Default::default();
    let seen2 = seen.clone();
    registry::register(Arc::new(Builds(name, move || {
        Box::new(CloseRecorder {
            sc: None,
            new_subconn_in_close: seen2.clone(),
        })
    })));
    let s = server();
    let log = StateLog::default();
    let mut opts = plaintext();
    log.attach(&mut opts);
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", s.addr()),
        Some(&config_for(name)),
        opts,
    )
    .unwrap();
    rpc(&ch, true, Duration::from_secs(5)).expect("RPC");
    ch.close();
    let end = Instant::now() + Duration::from_secs(3);
    while seen.lock().unwrap().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        matches!(*seen.lock().unwrap(), Some(Err(_))),
        "new_subconn in close: {:?}",
        seen.lock().unwrap()
    );
    let states = log.all();
    let after: Vec<_> = states
        .iter()
        .skip_while(|s| **s != Shutdown)
        .skip(1)
        .collect();
    assert!(states.contains(&Shutdown), "{states:?}");
    assert!(after.is_empty(), "states after SHUTDOWN: {states:?}");
    assert_eq!(ch.state(), Shutdown);
}

// ---------------------------------------------------------------------------
// test/subconn_test.go TestSubConnEmpty
// ---------------------------------------------------------------------------

/// One subchannel kept across updates; an update without addresses reaches
/// the policy (which publishes TRANSIENT_FAILURE "no addresses"); addresses
/// again: a new READY picker, RPCs succeed.
struct KeepOne {
    sc: Option<Arc<SubConn>>,
    empties: Arc<AtomicUsize>,
}

impl Balancer for KeepOne {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        if state.addresses.is_empty() {
            self.empties.fetch_add(1, Ordering::SeqCst);
            cc.update_state(
                TransientFailure,
                Box::new(FailPicker::unavailable("no addresses")),
            );
            return Ok(());
        }
        let want = &state.addresses[0].addr;
        if self.sc.as_ref().is_none_or(|s| &s.address().addr != want) {
            if let Some(old) = self.sc.take() {
                cc.shutdown_subconn(old.id());
            }
            let sc = cc.new_subconn(state.addresses[0].clone())?;
            self.sc = Some(sc);
        }
        let sc = self.sc.clone().unwrap();
        cc.connect(sc.id());
        if sc.is_connected() {
            cc.update_state(Ready, Box::new(SinglePicker::new(sc)));
        } else {
            cc.update_state(Connecting, Box::new(QueuePicker));
        }
        Ok(())
    }
    fn resolver_error(&mut self, _cc: &mut dyn ClientConn, _error: &str) {}
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, sc: SubConnId, s: &SubConnState) {
        let Some(mine) = self.sc.clone() else { return };
        if mine.id() != sc {
            return;
        }
        match s.state {
            Ready => cc.update_state(Ready, Box::new(SinglePicker::new(mine))),
            TransientFailure => cc.update_state(
                TransientFailure,
                Box::new(FailPicker::unavailable(format!(
                    "error connecting: {:?}",
                    s.error
                ))),
            ),
            Idle => cc.connect(sc),
            _ => {}
        }
    }
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        if let Some(sc) = &self.sc {
            cc.connect(sc.id());
        }
    }
    fn close(&mut self, _cc: &mut dyn ClientConn) {}
}

#[test]
fn empty_address_update_reaches_the_policy_and_addresses_come_back() {
    let name = "endpoint_go_keep_one";
    let empties = Arc::new(AtomicUsize::new(0));
    let e2 = empties.clone();
    registry::register(Arc::new(Builds(name, move || {
        Box::new(KeepOne {
            sc: None,
            empties: e2.clone(),
        })
    })));
    let s = server();
    let addr = s.addr().to_string();
    let r = ManualResolver::new("endpoint-go-empty");
    resolver::register(Arc::new(r.clone()));
    r.set_initial_state(Some(ResolverState {
        endpoints: vec![ep(&[&addr])],
        service_config: None,
    }));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(
        &rt,
        "endpoint-go-empty:///x",
        Some(&config_for(name)),
        plaintext(),
    )
    .unwrap();
    rpc(&ch, false, Duration::from_secs(5)).expect("first RPC");
    let _ = r.update(ResolverState {
        endpoints: vec![],
        service_config: None,
    });
    assert!(
        wait_state(&ch, TransientFailure, Duration::from_secs(5)),
        "TRANSIENT_FAILURE after the empty update: {:?}",
        ch.state()
    );
    assert_eq!(
        empties.load(Ordering::SeqCst),
        1,
        "the empty update reached the policy"
    );
    let e = rpc(&ch, false, Duration::from_secs(2)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("no addresses"), "{}", e.message());
    let _ = r.update(ResolverState {
        endpoints: vec![ep(&[&addr])],
        service_config: None,
    });
    rpc(&ch, true, Duration::from_secs(5)).expect("RPC after the addresses came back");
}

// ---------------------------------------------------------------------------
// test/resolver_update_test.go: ReportError after a good update
// ---------------------------------------------------------------------------

/// A good update (round_robin over two backends) then ReportError: gRPC-Go
/// keeps the config and the balancer's READY picker (pick_first children in
/// READY ignore the error), so RPCs keep succeeding on both backends.
#[test]
fn report_error_after_a_good_update_keeps_config_and_serving() {
    let (s1, s2) = (server(), server());
    let r = ManualResolver::new("endpoint-go-reporterror");
    resolver::register(Arc::new(r.clone()));
    r.set_initial_state(Some(ResolverState {
        endpoints: vec![ep(&[&s1.addr().to_string()]), ep(&[&s2.addr().to_string()])],
        service_config: Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#.into()),
    }));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "endpoint-go-reporterror:///x", None, plaintext()).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let mut ports = std::collections::HashSet::new();
    while ports.len() < 2 && Instant::now() < end {
        ports.insert(rpc(&ch, true, Duration::from_secs(3)).unwrap());
    }
    assert_eq!(ports.len(), 2);
    r.report_error("test error").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ch.state(), Ready);
    assert_eq!(ch.snapshot().unwrap().policy, "round_robin");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(rpc(&ch, false, Duration::from_secs(2)).expect("RPC after ReportError"));
    }
    assert_eq!(seen, ports);
}

// ---------------------------------------------------------------------------
// service_config.go parse rows (beyond service_config_test.go's tables)
// ---------------------------------------------------------------------------

fn sc(js: &str) -> Result<ServiceConfig, String> {
    ServiceConfig::parse(Some(js))
}

fn method(body: &str) -> String {
    format!(r#"{{"methodConfig":[{{"name":[{{"service":"foo","method":"Bar"}}],{body}}}]}}"#)
}

/// internal/serviceconfig Duration: nine fractional digits are exact.
#[test]
fn timeout_with_nanoseconds_is_exact() {
    let c = sc(&method(r#""timeout":"1.000000001s""#)).unwrap();
    assert_eq!(
        c.methods.lookup("/foo/Bar").unwrap().timeout,
        Some(Duration::new(1, 1))
    );
    let c = sc(&method(r#""timeout":"0.5s""#)).unwrap();
    assert_eq!(
        c.methods.lookup("/foo/Bar").unwrap().timeout,
        Some(Duration::from_millis(500))
    );
}

/// gRPC-Go accepts a negative timeout ("-1s": Duration.UnmarshalJSON takes
/// the sign) and then ignores it (stream.go: `*mc.Timeout >= 0`); grpc-java
/// refuses it (MethodInfo: "timeoutNanos should be greater than or equal
/// to 0"). switchyard refuses negative durations (json.rs: "no field of the
/// service config takes one"), as Java: pinned.
#[test]
fn negative_timeout_is_refused_as_grpc_java() {
    assert!(sc(&method(r#""timeout":"-1s""#)).is_err());
    assert!(sc(&method(r#""timeout":"-0.5s""#)).is_err());
}

/// maxRequestMessageBytes: gRPC-Go reads an int64 (no string, no fraction,
/// anything above MaxInt clamped, a negative kept); C-core reads a uint32
/// (proto3 JSON: a decimal string too, nothing above 2^32-1 or negative);
/// grpc-java an int. switchyard takes C-core's side: pinned.
#[test]
fn message_size_limits_follow_c_core() {
    let m = |v: &str| sc(&method(&format!(r#""maxRequestMessageBytes":{v}"#)));
    assert_eq!(
        m("4294967295")
            .unwrap()
            .methods
            .lookup("/foo/Bar")
            .unwrap()
            .max_request_message_bytes,
        Some(u32::MAX)
    );
    // Go: a JSON string into *int64 fails; C-core / proto3 JSON take it.
    assert_eq!(
        m(r#""1024""#)
            .unwrap()
            .methods
            .lookup("/foo/Bar")
            .unwrap()
            .max_request_message_bytes,
        Some(1024)
    );
    // Go: clamped to MaxInt / kept negative; refused here (C-core too).
    assert!(m("5000000000").is_err());
    assert!(m("-1").is_err());
    // Everyone refuses a fraction.
    assert!(m("1.5").is_err());
    assert!(m("true").is_err());
}

/// retryPolicy: Go's jsonRetryPolicy reads maxAttempts as an int (a
/// fraction fails json.Unmarshal), backoffs as Durations (a number fails),
/// backoffMultiplier as a float64.
#[test]
fn retry_policy_field_types() {
    let r = |p: &str| {
        sc(&format!(
            r#"{{"methodConfig":[{{"name":[{{"service":"foo"}}],"retryPolicy":{p}}}]}}"#
        ))
    };
    assert!(r(r#"{"maxAttempts":2.5,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":1,"retryableStatusCodes":["UNAVAILABLE"]}"#).is_err());
    assert!(r(r#"{"maxAttempts":2,"initialBackoff":1,"maxBackoff":"1s","backoffMultiplier":1,"retryableStatusCodes":["UNAVAILABLE"]}"#).is_err());
    let c = r(r#"{"maxAttempts":3,"initialBackoff":"0.000000001s","maxBackoff":"1.5s","backoffMultiplier":1.5,"retryableStatusCodes":["UNAVAILABLE"]}"#).unwrap();
    let p = c
        .methods
        .lookup("/foo/x")
        .unwrap()
        .retry_policy
        .clone()
        .unwrap();
    assert_eq!(p.initial_backoff, Duration::from_nanos(1));
    assert_eq!(p.max_backoff, Duration::from_millis(1500));
    assert_eq!(p.backoff_multiplier, 1.5);
}
