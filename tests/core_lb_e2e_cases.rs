//! gRPC C-core's client_lb_end2end_test.cc (PickFirstTest.* and
//! RoundRobinTest.*), ported onto switchyard's public API with real echo
//! servers on 127.0.0.1 (switchyard_testserver) and a fake resolver (C-core's
//! FakeResolverResponseGenerator: SetNextResolution, SetNextResolutionUponError,
//! SetFailureOnReresolution, and the update's verdict as
//! `result_health_callback`, here `Resolver::update_rejected`).
//!
//! Reference: grpc/grpc test/cpp/end2end/client_lb_end2end_test.cc (commit
//! 005284c880a5993c041c490b905ea9737329b648 as stored), and the policies
//! src/core/load_balancing/pick_first/pick_first.cc (5cfd4aea) and
//! round_robin/round_robin.cc.
//!
//! C-core's helpers, as used here:
//! - SendRpc: fail-fast, 1000 ms deadline; CheckRpcSendOk: 2000 ms deadline.
//! - WaitForServer(i): fail-fast RPCs until backend i served one; every RPC
//!   must succeed unless a status check is given.
//! - MakeConnectionFailureRegex(prefix) =
//!   prefix "; last error: (UNKNOWN|UNAVAILABLE): (ipv6:%5B::1%5D|ipv4:127.0.0.1):[0-9]+: "
//!   "(Failed to connect to remote host: )?(Connection refused|Connection reset by peer|Socket closed|FD shutdown)"

#[path = "common/mod.rs"]
mod common;

use common::{free_port, plaintext, wait_until};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use switchyard::resolver::{Resolver, ResolverBuilder, ResolverClientConn, ResolverState, Target};
use switchyard::transport::health_proto::{NOT_SERVING, SERVING};
use switchyard::ConnectivityState::{self, *};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

const PF: &str = r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#;
const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
const RR_HC: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}],
    "healthCheckConfig":{"serviceName":"health_check_service_name"}}"#;

// ------------------------------------------------------------ fake resolver

#[derive(Default)]
struct FakeInner {
    cc: Option<ResolverClientConn>,
    /// What the next build pushes (SetNextResolution before the channel
    /// resolves).
    pending: Option<ResolverState>,
    /// SetNextResolutionUponError: answered on every re-resolution.
    reresolution: Option<ResolverState>,
    /// SetFailureOnReresolution.
    fail_on_reresolution: bool,
}

/// C-core's FakeResolverResponseGenerator.
struct Fake {
    scheme: String,
    inner: Arc<Mutex<FakeInner>>,
    resolve_nows: Arc<AtomicUsize>,
    rejected: Arc<AtomicUsize>,
}

struct FakeResolver {
    inner: Arc<Mutex<FakeInner>>,
    resolve_nows: Arc<AtomicUsize>,
    rejected: Arc<AtomicUsize>,
}

impl Resolver for FakeResolver {
    fn resolve_now(&mut self) {
        self.resolve_nows.fetch_add(1, Ordering::AcqRel);
        let g = self.inner.lock().unwrap();
        if let Some(cc) = g.cc.clone() {
            if let Some(s) = g.reresolution.clone() {
                let _ = cc.update(s);
            } else if g.fail_on_reresolution {
                let _ = cc.report_error("Resolver transient failure");
            }
        }
    }
    fn update_rejected(&mut self) {
        self.rejected.fetch_add(1, Ordering::AcqRel);
    }
    fn close(&mut self) {}
}

impl ResolverBuilder for Fake {
    fn scheme(&self) -> &str {
        &self.scheme
    }
    fn build(&self, _: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
        let mut g = self.inner.lock().unwrap();
        if let Some(s) = g.pending.clone() {
            let _ = cc.update(s);
        }
        g.cc = Some(cc);
        Ok(Box::new(FakeResolver {
            inner: self.inner.clone(),
            resolve_nows: self.resolve_nows.clone(),
            rejected: self.rejected.clone(),
        }))
    }
}

fn state_of(ports: &[u16]) -> ResolverState {
    ResolverState {
        endpoints: ports
            .iter()
            .map(|p| Endpoint::from(Address::new(format!("127.0.0.1:{p}"))))
            .collect(),
        service_config: None,
    }
}

impl Fake {
    fn new(name: &str) -> Arc<Fake> {
        let f = Arc::new(Fake {
            scheme: format!("fake-{}", name.replace('_', "-")),
            inner: Default::default(),
            resolve_nows: Default::default(),
            rejected: Default::default(),
        });
        resolver::register(f.clone());
        f
    }
    fn target(&self) -> String {
        format!("{}:///default.example.com", self.scheme)
    }
    /// SetNextResolution.
    fn set(&self, ports: &[u16]) {
        let s = state_of(ports);
        let mut g = self.inner.lock().unwrap();
        match g.cc.clone() {
            Some(cc) => cc.update(s).unwrap(),
            None => g.pending = Some(s),
        }
    }
    /// SetNextResolutionUponError.
    fn set_upon_error(&self, ports: &[u16]) {
        self.inner.lock().unwrap().reresolution = Some(state_of(ports));
    }
    fn set_failure_on_reresolution(&self) {
        self.inner.lock().unwrap().fail_on_reresolution = true;
    }
    /// SetNextResolution(ports, service_config_json).
    fn set_with_config(&self, ports: &[u16], config: &str) {
        let mut st = state_of(ports);
        st.service_config = Some(config.to_string());
        let mut g = self.inner.lock().unwrap();
        match g.cc.clone() {
            Some(cc) => cc.update(st).unwrap(),
            None => g.pending = Some(st),
        }
    }
    fn resolve_nows(&self) -> usize {
        self.resolve_nows.load(Ordering::Acquire)
    }
    fn rejected(&self) -> usize {
        self.rejected.load(Ordering::Acquire)
    }
}

// ------------------------------------------------------------ backends

/// C-core's servers_: echo backends that can be stopped and restarted on
/// their port; `None` while stopped (or never started).
struct Backends {
    ports: Vec<u16>,
    servers: Vec<Option<TestServer>>,
    opts: ServerOptions,
}

impl Backends {
    /// CreateServers(n) on fresh ports, none started.
    fn create(n: usize) -> Backends {
        Backends {
            ports: (0..n).map(|_| free_port()).collect(),
            servers: (0..n).map(|_| None).collect(),
            opts: ServerOptions::default(),
        }
    }
    fn on_ports(ports: &[u16]) -> Backends {
        Backends {
            ports: ports.to_vec(),
            servers: ports.iter().map(|_| None).collect(),
            opts: ServerOptions::default(),
        }
    }
    /// StartServers(n).
    fn start(n: usize) -> Backends {
        let mut b = Backends::create(n);
        for i in 0..n {
            b.start_one(i);
        }
        b
    }
    fn start_one(&mut self, i: usize) {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.ports[i]).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TestServer::start(Listen::Tcp(addr), self.opts.clone()) {
                Ok(s) => {
                    self.servers[i] = Some(s);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot restart on {addr}: {e}"),
            }
        }
    }
    /// Shutdown(): hard stop.
    fn shutdown(&mut self, i: usize) {
        if let Some(s) = self.servers[i].take() {
            s.stop();
        }
    }
    /// StopListeningAndSendGoaways(): graceful stop (GOAWAY, then close).
    #[allow(dead_code)]
    fn graceful(&mut self, i: usize) {
        if let Some(s) = self.servers[i].take() {
            s.graceful_stop(Duration::from_secs(2));
        }
    }
    fn server(&self, i: usize) -> &TestServer {
        self.servers[i].as_ref().expect("running")
    }
    fn ports(&self, range: std::ops::Range<usize>) -> Vec<u16> {
        self.ports[range].to_vec()
    }
    fn index_of(&self, port: u16) -> usize {
        self.ports
            .iter()
            .position(|p| *p == port)
            .unwrap_or(usize::MAX)
    }
}

// ------------------------------------------------------------ channel, RPCs

fn opts_with(f: impl FnOnce(&mut ChannelOptions)) -> ChannelOptions {
    let mut o = plaintext();
    f(&mut o);
    o
}

/// BuildChannel: lazy (IDLE until used), as C-core's.
fn build(rt: &Runtime, fake: &Fake, config: &str, opts: ChannelOptions) -> Channel {
    Channel::new(rt, &fake.target(), Some(config), opts).unwrap()
}

/// SendRpc: one echo; Ok(port of the backend that served it).
fn rpc(ch: &Channel, wait_for_ready: bool, timeout_ms: u64) -> Result<u16, Status> {
    common::rpc(ch, wait_for_ready, Duration::from_millis(timeout_ms))
}

/// CheckRpcSendOk (fail-fast, 2 s).
fn ok(ch: &Channel) -> u16 {
    match rpc(ch, false, 2000) {
        Ok(p) => p,
        Err(s) => panic!("RPC failed: {:?}: {}", s.code(), s.message()),
    }
}

/// `n` CheckRpcSendOk, counted per port.
fn ok_n(ch: &Channel, n: usize) -> HashMap<u16, usize> {
    let mut m = HashMap::new();
    for _ in 0..n {
        *m.entry(ok(ch)).or_default() += 1;
    }
    m
}

/// WaitForServer: fail-fast RPCs until backend `port` served one (15 s
/// bound). Failures go to `on_fail` (None: every RPC must succeed).
fn wait_for_server(ch: &Channel, port: u16, mut on_fail: Option<&mut dyn FnMut(&Status)>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match rpc(ch, false, 1000) {
            Ok(p) if p == port => return,
            Ok(_) => {}
            Err(s) => match on_fail.as_mut() {
                Some(f) => f(&s),
                None => panic!(
                    "RPC failed while waiting for :{port}: {:?}: {}",
                    s.code(),
                    s.message()
                ),
            },
        }
        assert!(Instant::now() < deadline, "backend :{port} never served");
    }
}

/// WaitForServers over `ports`.
fn wait_for_servers(ch: &Channel, ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = std::collections::HashSet::new();
    while !ports.iter().all(|p| seen.contains(p)) {
        match rpc(ch, false, 1000) {
            Ok(p) => {
                seen.insert(p);
            }
            Err(s) => panic!("RPC failed: {:?}: {}", s.code(), s.message()),
        }
        assert!(Instant::now() < deadline, "only {seen:?} served");
    }
}

/// WaitForChannelState(predicate, try_to_connect, timeout).
fn wait_channel(
    ch: &Channel,
    pred: impl Fn(ConnectivityState) -> bool,
    try_to_connect: bool,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let s = ch.get_state(try_to_connect);
        if pred(s) {
            return true;
        }
        if ch.wait_for_state_change(s, Some(deadline)).is_none() {
            return false;
        }
    }
}

fn wait_ready(ch: &Channel, timeout: Duration) -> bool {
    wait_channel(ch, |s| s == Ready, true, timeout)
}

fn wait_not_ready(ch: &Channel) -> bool {
    wait_channel(ch, |s| s != Ready, false, Duration::from_secs(5))
}

/// Every aggregate state the channel reported, in order.
#[derive(Clone, Default)]
struct StateLog(Arc<(Mutex<Vec<ConnectivityState>>, Condvar)>);

impl StateLog {
    fn attach(&self, opts: &mut ChannelOptions) {
        let log = self.0.clone();
        opts.on_state_change = Some(Arc::new(move |s| {
            log.0.lock().unwrap().push(s);
            log.1.notify_all();
        }));
    }
    fn all(&self) -> Vec<ConnectivityState> {
        self.0 .0.lock().unwrap().clone()
    }
}

fn policy(ch: &Channel) -> String {
    ch.snapshot().unwrap().policy
}

// ====================================================================
// PickFirstTest
// ====================================================================

/// PickFirstTest.Updates: [0] serves; an empty update takes the channel out
/// of READY; [1] then [2] each take over, the earlier backends get nothing.
#[test]
fn pick_first_updates() {
    let b = Backends::start(3);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("pf-updates");
    let ch = build(&rt, &fake, PF, plaintext());
    fake.set(&b.ports(0..1));
    ch.sync().unwrap();
    assert_eq!(ok(&ch), b.ports[0]);
    fake.set(&[]);
    ch.sync().unwrap();
    let t = Instant::now() + Duration::from_secs(5);
    while ch.get_state(true) == Ready {
        assert!(Instant::now() < t, "still READY after an empty update");
        std::thread::sleep(Duration::from_millis(5));
    }
    let before0 = b.server(0).requests();
    fake.set(&b.ports(1..2));
    ch.sync().unwrap();
    wait_for_server(&ch, b.ports[1], None);
    fake.set(&b.ports(2..3));
    ch.sync().unwrap();
    wait_for_server(&ch, b.ports[2], None);
    assert_eq!(b.server(0).requests(), before0);
    assert_eq!(policy(&ch), "pick_first");
}

/// PickFirstTest.UpdateSuperset: connected to [0], an update [1, 0] keeps
/// the connection to 0 ("we stick to the previously connected server").
#[test]
fn pick_first_update_superset() {
    let b = Backends::start(3);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("pf-superset");
    let ch = build(&rt, &fake, PF, plaintext());
    fake.set(&b.ports(0..1));
    ch.sync().unwrap();
    assert_eq!(ok(&ch), b.ports[0]);
    fake.set(&[b.ports[1], b.ports[0]]);
    ch.sync().unwrap();
    assert_eq!(ok(&ch), b.ports[0]);
    wait_for_server(&ch, b.ports[0], None);
    assert_eq!(ok_n(&ch, 10).get(&b.ports[1]), None);
    assert_eq!(b.server(1).requests(), 0);
    assert_eq!(b.server(1).connections(), 0, "1 was never even connected");
}

/// PickFirstTest.UpdateToUnconnected: from READY on [0], an update to
/// [unused port, 1 (not started)] leaves READY; starting 1 makes it READY.
#[test]
fn pick_first_update_to_unconnected() {
    let mut b = Backends::create(2);
    b.start_one(0);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("pf-unconnected");
    let ch = build(&rt, &fake, PF, plaintext());
    fake.set(&b.ports(0..1));
    ch.sync().unwrap();
    assert_eq!(ok(&ch), b.ports[0]);
    fake.set(&[free_port(), b.ports[1]]);
    ch.sync().unwrap();
    assert!(wait_not_ready(&ch));
    b.start_one(1);
    assert!(wait_ready(&ch, Duration::from_secs(5)), "never READY on 1");
    assert_eq!(ok(&ch), b.ports[1]);
}

/// PickFirstTest.ManyUpdates: 1000 shuffled updates of the same 3 backends,
/// a fail-fast RPC every 10: all succeed.
#[test]
fn pick_first_many_updates() {
    many_updates(PF, "pf-many", "pick_first");
}

fn many_updates(config: &str, name: &str, want_policy: &str) {
    let b = Backends::start(3);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new(name);
    let ch = build(&rt, &fake, config, plaintext());
    let mut ports = b.ports(0..3);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..1000 {
        for k in (1..ports.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ports.swap(k, (seed % (k as u64 + 1)) as usize);
        }
        fake.set(&ports);
        ch.sync().unwrap();
        if (i + 1) % 10 == 0 {
            ok(&ch);
        }
    }
    assert_eq!(policy(&ch), want_policy);
}

/// PickFirstTest.ReresolutionNoSelected: every address refused: 10 fail-fast
/// RPCs fail UNAVAILABLE (naming a refused address; C-core's exact text is
/// `pick_first_failure_message_is_c_cores`), re-resolution is asked for; a
/// re-resolution answer with a live backend then brings it in (failures
/// meanwhile UNAVAILABLE).
#[test]
fn pick_first_reresolution_no_selected() {
    let b = Backends::start(1);
    let dead = [free_port(), free_port()];
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("pf-rr-nosel2");
    let ch = build(&rt, &fake, PF, plaintext());
    fake.set(&dead);
    ch.sync().unwrap();
    for _ in 0..10 {
        let e = rpc(&ch, false, 1000).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
        let m = e.message().to_lowercase();
        assert!(
            m.contains("refused") && dead.iter().any(|p| m.contains(&p.to_string())),
            "{m}"
        );
    }
    assert!(fake.resolve_nows.load(Ordering::Acquire) >= 1);
    fake.set_upon_error(&b.ports(0..1));
    wait_for_server(
        &ch,
        b.ports[0],
        Some(&mut |s: &Status| assert_eq!(s.code(), Code::Unavailable)),
    );
    assert_eq!(ok(&ch), b.ports[0]);
}

/// PickFirstTest.ReconnectWithoutNewResolverResult.
#[test]
fn pick_first_reconnect_without_new_resolver_result() {
    let mut b = Backends::start(1);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("pf-reconnect");
    let ch = build(&rt, &fake, PF, plaintext());
    fake.set(&b.ports(0..1));
    ch.sync().unwrap();
    wait_for_server(&ch, b.ports[0], None);
    b.shutdown(0);
    assert!(wait_not_ready(&ch));
    b.start_one(0);
    wait_for_server(&ch, b.ports[0], None);
}

/// PickFirstTest.ReconnectWithoutNewResolverResultStartsFromTopOfList:
/// [a (down), b (up)] connects to b; b stops; both start: the next
/// connection goes to a, the top of the list.
#[test]
fn pick_first_reconnect_starts_from_top_of_list() {
    let mut b = Backends::create(2);
    b.start_one(1);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("pf-top");
    let ch = build(&rt, &fake, PF, plaintext());
    fake.set(&b.ports(0..2));
    ch.sync().unwrap();
    wait_for_server(&ch, b.ports[1], None);
    b.shutdown(1);
    assert!(wait_not_ready(&ch));
    b.start_one(0);
    b.start_one(1);
    wait_for_server(&ch, b.ports[0], None);
}

/// PickFirstTest.FailsEmptyResolverUpdate: an empty address list is
/// rejected (C-core's result_health_callback: UNAVAILABLE "address list
/// must not be empty"; here the resolver hears `update_rejected`), the
/// channel goes TRANSIENT_FAILURE; a valid update then serves a
/// wait-for-ready RPC.
#[test]
fn pick_first_fails_empty_resolver_update() {
    fails_empty_resolver_update(PF, "pf-empty");
}

fn fails_empty_resolver_update(config: &str, name: &str) {
    let rt = Runtime::new().unwrap();
    let fake = Fake::new(name);
    let ch = build(&rt, &fake, config, plaintext());
    fake.set(&[]);
    ch.sync().unwrap();
    assert!(
        wait_channel(&ch, |s| s == TransientFailure, true, Duration::from_secs(5)),
        "never TRANSIENT_FAILURE, is {}",
        ch.state()
    );
    wait_until("the empty update's rejection", || fake.rejected() >= 1);
    let b = Backends::start(1);
    fake.set(&b.ports(0..1));
    ch.sync().unwrap();
    assert_eq!(rpc(&ch, true, 2000).unwrap(), b.ports[0]);
}

/// PickFirstTest.CheckStateBeforeStartWatch: two channels to one backend
/// restarted twice on its port; the first fail-fast call on channel 2 after
/// the second restart succeeds.
#[test]
fn pick_first_check_state_before_start_watch() {
    let mut b = Backends::start(1);
    let rt = Runtime::new().unwrap();
    let f1 = Fake::new("pf-csbsw1");
    let ch1 = build(&rt, &f1, PF, plaintext());
    f1.set(&b.ports(0..1));
    ch1.sync().unwrap();
    wait_for_server(&ch1, b.ports[0], None);
    b.shutdown(0);
    assert!(wait_not_ready(&ch1));
    b.start_one(0);
    let f2 = Fake::new("pf-csbsw2");
    let ch2 = build(&rt, &f2, PF, plaintext());
    f2.set(&b.ports(0..1));
    ch2.sync().unwrap();
    wait_for_server(&ch2, b.ports[0], None);
    b.shutdown(0);
    assert!(wait_not_ready(&ch2));
    b.start_one(0);
    assert_eq!(ok(&ch2), b.ports[0]);
    assert_eq!(policy(&ch1), "pick_first");
    assert_eq!(policy(&ch2), "pick_first");
}

/// PickFirstTest.IdleOnDisconnect: READY, the backend stops (re-resolution
/// fails): the channel goes IDLE.
#[test]
fn pick_first_idle_on_disconnect() {
    let mut b = Backends::start(1);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("pf-idle-disc");
    let ch = build(&rt, &fake, PF, plaintext());
    fake.set(&b.ports(0..1));
    ch.sync().unwrap();
    ok(&ch);
    assert_eq!(ch.get_state(false), Ready);
    fake.set_failure_on_reresolution();
    let asked = fake.resolve_nows();
    b.shutdown(0);
    assert!(wait_not_ready(&ch));
    assert_eq!(ch.get_state(false), Idle);
    // C-core's GoIdle asks for re-resolution.
    wait_until("a re-resolution request", || fake.resolve_nows() > asked);
    // And it stays IDLE (a failed re-resolution does not move it).
    ch.sync().unwrap();
    assert_eq!(
        ch.wait_for_state_change(Idle, Some(Instant::now() + Duration::from_millis(500))),
        None,
        "left IDLE: {}",
        ch.state()
    );
}

/// The second half of StaysIdleUponEmptyUpdate alone: after an empty update
/// (whatever state it led to) a non-empty one and a fail-fast RPC serve.
#[test]
fn pick_first_recovers_after_empty_update_while_idle() {
    let mut b = Backends::start(1);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("pf-idle-empty2");
    let ch = build(&rt, &fake, PF, plaintext());
    fake.set(&b.ports(0..1));
    ch.sync().unwrap();
    ok(&ch);
    b.shutdown(0);
    assert!(wait_not_ready(&ch));
    fake.set(&[]);
    ch.sync().unwrap();
    ch.sync().unwrap();
    b.start_one(0);
    fake.set(&b.ports(0..1));
    ch.sync().unwrap();
    assert_eq!(ok(&ch), b.ports[0]);
    assert_eq!(ch.get_state(false), Ready);
}

/// PickFirstTest.StaysTransientFailureOnFailedConnectionAttemptUntilReady:
/// 3 unused ports, 1 s initial backoff: IDLE at first; a fail-fast RPC fails
/// UNAVAILABLE matching MakeConnectionFailureRegex("failed to connect to all
/// addresses"); TRANSIENT_FAILURE; a server on the last port: the next state
/// change (within 4 s) is straight to READY.
#[test]
fn pick_first_stays_tf_on_failed_connection_attempt_until_ready() {
    let ports = [free_port(), free_port(), free_port()];
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("pf-stay-tf");
    let log = StateLog::default();
    let opts = opts_with(|o| {
        o.backoff.initial = Duration::from_secs(1);
        log.attach(o);
    });
    let ch = build(&rt, &fake, PF, opts);
    fake.set(&ports);
    ch.sync().unwrap();
    assert_eq!(ch.get_state(false), Idle);
    let e = rpc(&ch, false, 1000).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let msg = e.message().to_string();
    // The state is set just after the failing picker is published (gRPC-Go's
    // order): the loop done with that publish, it is TRANSIENT_FAILURE.
    ch.sync().unwrap();
    assert_eq!(ch.get_state(false), TransientFailure);
    let mut b = Backends::on_ports(&ports[2..]);
    b.start_one(0);
    // (The loop done publishing: see
    // wait_for_state_change_never_answers_an_older_state_than_get_state.)
    ch.sync().unwrap();
    let next = ch.wait_for_state_change(
        TransientFailure,
        Some(Instant::now() + Duration::from_secs(4)),
    );
    assert_eq!(next, Some(Ready), "states: {:?}", log.all());
    assert_eq!(ok(&ch), ports[2]);
    let after_tf: Vec<_> = log
        .all()
        .into_iter()
        .skip_while(|s| *s != TransientFailure)
        .collect();
    assert!(
        !after_tf.contains(&Connecting),
        "left TRANSIENT_FAILURE for CONNECTING: {after_tf:?}"
    );
    assert!(
        msg.contains("refused") && ports.iter().any(|p| msg.contains(&p.to_string())),
        "{msg}"
    );
}

/// PickFirstTest.BackOffInitialReconnect: initial backoff 100 ms, no server:
/// not connected within 200 ms; a server comes up on the port: connected
/// within another 200 ms, having waited at least the 100 ms backoff in all.
#[test]
fn pick_first_backoff_initial_reconnect() {
    let port = free_port();
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("pf-bo-initial");
    let opts = opts_with(|o| o.backoff.initial = Duration::from_millis(100));
    let t0 = Instant::now();
    let ch = build(&rt, &fake, PF, opts);
    fake.set(&[port]);
    ch.sync().unwrap();
    assert!(!wait_ready(&ch, Duration::from_millis(200)));
    let mut b = Backends::on_ports(&[port]);
    b.start_one(0);
    // C-core: within 200 ms; the jitter (±20 %) and a loaded machine get
    // a generous bound here.
    assert!(
        wait_ready(&ch, Duration::from_millis(1000)),
        "is {}",
        ch.state()
    );
    assert!(t0.elapsed() >= Duration::from_millis(99));
}

// ====================================================================
// RoundRobinTest
// ====================================================================

/// RoundRobinTest.Updates: [0] → 10/0/0; [1] → 0/10/0; [2] → 0/0/10; all →
/// 1/1/1; empty → not READY and RPCs fail UNAVAILABLE "empty address list:
/// fake resolver empty address list"; [1] → serves on 1, READY.
#[test]
fn round_robin_updates() {
    let b = Backends::start(3);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-updates");
    let ch = build(&rt, &fake, RR, plaintext());
    for i in 0..3 {
        fake.set(&b.ports(i..i + 1));
        ch.sync().unwrap();
        wait_for_server(&ch, b.ports[i], None);
        let m = ok_n(&ch, 10);
        assert_eq!(m.get(&b.ports[i]), Some(&10), "[{i}]: {m:?}");
    }
    fake.set(&b.ports(0..3));
    ch.sync().unwrap();
    wait_for_servers(&ch, &b.ports(0..3));
    // Three RPCs, one per server.
    let m = ok_n(&ch, 3);
    assert!(b.ports.iter().all(|p| m.get(p) == Some(&1)), "{m:?}");
    fake.set(&[]);
    ch.sync().unwrap();
    assert!(wait_not_ready(&ch));
    let e = rpc(&ch, false, 1000).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let msg = e.message().to_string();
    fake.set(&b.ports(1..2));
    ch.sync().unwrap();
    wait_for_server(&ch, b.ports[1], None);
    assert_eq!(ch.get_state(false), Ready);
    assert_eq!(policy(&ch), "round_robin");
    assert!(
        msg.contains("zero addresses") || msg.contains("empty address list"),
        "{msg}"
    );
}

/// RoundRobinTest.UpdateInError: [0] serves 10 (fail-fast, 4 s); an update
/// [0, unused port, 1]: both live backends serve, and 10 more RPCs all
/// succeed, split 4..=6 each.
#[test]
fn round_robin_update_in_error() {
    let b = Backends::start(2);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-update-in-error");
    let ch = build(&rt, &fake, RR, plaintext());
    fake.set(&b.ports(0..1));
    ch.sync().unwrap();
    for _ in 0..10 {
        assert_eq!(rpc(&ch, false, 4000).unwrap(), b.ports[0]);
    }
    fake.set(&[b.ports[0], free_port(), b.ports[1]]);
    ch.sync().unwrap();
    wait_for_servers(&ch, &b.ports(0..2));
    let mut m: HashMap<u16, usize> = HashMap::new();
    for _ in 0..10 {
        *m.entry(rpc(&ch, false, 4000).unwrap()).or_default() += 1;
    }
    for p in &b.ports {
        let n = m.get(p).copied().unwrap_or(0);
        assert!((4..=6).contains(&n), "{m:?}");
    }
}

/// RoundRobinTest.ManyUpdates.
#[test]
fn round_robin_many_updates() {
    many_updates(RR, "rr-many", "round_robin");
}

/// RoundRobinTest.ReresolveOnSubchannelConnectionFailure: [0, 1] serve; the
/// re-resolution answer is [0, 1, 2]; backend 0 sends GOAWAY: the policy
/// asks for re-resolution and backend 2 then serves.
#[test]
fn round_robin_reresolve_on_subchannel_connection_failure() {
    let b = Backends::start(3);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-reresolve");
    let ch = build(&rt, &fake, RR, plaintext());
    fake.set(&b.ports(0..2));
    ch.sync().unwrap();
    wait_for_servers(&ch, &b.ports(0..2));
    fake.set_upon_error(&b.ports(0..3));
    b.server(0).goaway();
    wait_for_server(&ch, b.ports[2], None);
}

/// RoundRobinTest.FailsEmptyResolverUpdate (C-core's callback status:
/// UNAVAILABLE "empty address list: injected error").
#[test]
fn round_robin_fails_empty_resolver_update() {
    fails_empty_resolver_update(RR, "rr-empty");
}

/// RoundRobinTest.TransientFailure: READY over 3 backends, all stop:
/// TRANSIENT_FAILURE, and a fail-fast RPC fails UNAVAILABLE matching
/// MakeConnectionFailureRegex("connections to all backends failing").
#[test]
fn round_robin_transient_failure() {
    let mut b = Backends::start(3);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-tf");
    let ch = build(&rt, &fake, RR, plaintext());
    fake.set(&b.ports(0..3));
    ch.sync().unwrap();
    assert!(wait_ready(&ch, Duration::from_secs(5)));
    for i in 0..3 {
        b.shutdown(i);
    }
    assert!(
        wait_channel(
            &ch,
            |s| s == TransientFailure,
            false,
            Duration::from_secs(5)
        ),
        "is {}",
        ch.state()
    );
    let e = rpc(&ch, false, 1000).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    // Refused, or (the connection's own loss still the last error) reset:
    // C-core's regex accepts both.
    let m = e.message();
    assert!(
        (m.contains("refused") || m.contains("reset") || m.contains("closed"))
            && b.ports.iter().any(|p| m.contains(&p.to_string())),
        "{m}"
    );
}

/// RoundRobinTest.TransientFailureAtStartup: 3 unused ports:
/// TRANSIENT_FAILURE (try_to_connect), and the same failure text.
#[test]
fn round_robin_transient_failure_at_startup() {
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-tf-startup");
    let ch = build(&rt, &fake, RR, plaintext());
    let ports = [free_port(), free_port(), free_port()];
    fake.set(&ports);
    ch.sync().unwrap();
    assert!(
        wait_channel(&ch, |s| s == TransientFailure, true, Duration::from_secs(5)),
        "is {}",
        ch.state()
    );
    let e = rpc(&ch, false, 1000).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let m = e.message().to_string();
    assert!(
        m.to_lowercase().contains("refused") && ports.iter().any(|p| m.contains(&p.to_string())),
        "the failure names an address and why: {m:?}"
    );
}

/// RoundRobinTest.StaysInTransientFailureInSubsequentConnecting: one unused
/// port: TRANSIENT_FAILURE; while the next attempt is CONNECTING the
/// channel stays TRANSIENT_FAILURE and RPCs keep failing UNAVAILABLE with
/// the connection failure (no new picker).
#[test]
fn round_robin_stays_in_transient_failure_in_subsequent_connecting() {
    let port = free_port();
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-stay-tf");
    let log = StateLog::default();
    let attempts = Arc::new(AtomicUsize::new(0));
    let opts = opts_with(|o| {
        o.backoff.initial = Duration::from_millis(100);
        o.backoff.max = Duration::from_millis(100);
        log.attach(o);
        let a = attempts.clone();
        o.on_subconn_state = Some(Arc::new(move |_, st: &SubConnState| {
            if st.state == Connecting {
                a.fetch_add(1, Ordering::AcqRel);
            }
        }));
    });
    let ch = build(&rt, &fake, RR, opts);
    fake.set(&[port]);
    ch.sync().unwrap();
    assert!(wait_channel(
        &ch,
        |s| s == TransientFailure,
        true,
        Duration::from_secs(5)
    ));
    wait_until("3 more connection attempts", || {
        attempts.load(Ordering::Acquire) >= 4
    });
    assert_eq!(ch.get_state(false), TransientFailure);
    for _ in 0..5 {
        let e = rpc(&ch, false, 1000).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.message().contains(&port.to_string()), "{}", e.message());
    }
    let after: Vec<_> = log
        .all()
        .into_iter()
        .skip_while(|s| *s != TransientFailure)
        .collect();
    assert!(after.iter().all(|s| *s == TransientFailure), "{after:?}");
}

/// RoundRobinTest.SingleReconnect: 3 backends in order 0,1,2; backend 0
/// stops gracefully (GOAWAY): fail-fast RPCs never fail, 30 more go to 1
/// and 2 only; 0 restarted rejoins.
#[test]
fn round_robin_single_reconnect() {
    let mut b = Backends::start(3);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-single-reconnect");
    let opts = opts_with(|o| {
        o.backoff.initial = Duration::from_millis(100);
        o.backoff.max = Duration::from_millis(200);
    });
    let ch = build(&rt, &fake, RR, opts);
    fake.set(&b.ports(0..3));
    ch.sync().unwrap();
    wait_for_servers(&ch, &b.ports(0..3));
    wait_for_server(&ch, b.ports[2], None);
    for i in 0..3 {
        assert_eq!(ok(&ch), b.ports[i], "for backend #{i}");
    }
    let p0 = b.ports[0];
    let stopper = {
        let s = b.servers[0].take().unwrap();
        std::thread::spawn(move || s.graceful_stop(Duration::from_secs(2)))
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut not_on_0 = 0;
    while not_on_0 < 3 {
        let p = ok(&ch);
        not_on_0 = if p == p0 { 0 } else { not_on_0 + 1 };
        assert!(Instant::now() < deadline);
    }
    let m = ok_n(&ch, 30);
    assert_eq!(m.get(&p0), None, "{m:?}");
    stopper.join().unwrap();
    b.start_one(0);
    wait_for_server(&ch, p0, None);
}

/// RoundRobinTest.HealthChecking: health check "health_check_service_name"
/// unknown on all 3: not READY within 1 s; 0 healthy: READY, 10/0/0; 2
/// healthy: 5/0/5; 1 healthy: 3/3/3; 0 unhealthy: left out; all unhealthy:
/// not READY, RPCs fail UNAVAILABLE "connections to all backends failing;
/// last error: UNAVAILABLE: backend unhealthy".
#[test]
fn round_robin_health_checking() {
    let b = Backends::start(3);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-hc");
    let ch = build(&rt, &fake, RR_HC, plaintext());
    fake.set(&b.ports(0..3));
    ch.sync().unwrap();
    assert!(!wait_ready(&ch, Duration::from_secs(1)));
    let svc = "health_check_service_name";
    b.server(0).set_serving(svc, SERVING);
    assert!(wait_ready(&ch, Duration::from_secs(5)));
    let m = ok_n(&ch, 10);
    assert_eq!(m.get(&b.ports[0]), Some(&10), "{m:?}");
    b.server(2).set_serving(svc, SERVING);
    wait_for_server(&ch, b.ports[2], None);
    let m = ok_n(&ch, 10);
    assert_eq!(
        (m.get(&b.ports[0]), m.get(&b.ports[2])),
        (Some(&5), Some(&5)),
        "{m:?}"
    );
    b.server(1).set_serving(svc, SERVING);
    wait_for_server(&ch, b.ports[1], None);
    let m = ok_n(&ch, 9);
    assert!(b.ports.iter().all(|p| m.get(p) == Some(&3)), "{m:?}");
    b.server(0).set_serving(svc, NOT_SERVING);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = ok_n(&ch, 3);
        if m.get(&b.ports[1]) == Some(&2) || m.get(&b.ports[2]) == Some(&2) {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    b.server(1).set_serving(svc, NOT_SERVING);
    b.server(2).set_serving(svc, NOT_SERVING);
    assert!(wait_not_ready(&ch));
    let e = rpc(&ch, false, 1000).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("NOT_SERVING"), "{}", e.message());
}

/// RoundRobinTest.HealthCheckingHandlesSubchannelFailure: 3 healthy; 0
/// stops gracefully and the same resolution comes again: 100 fail-fast RPCs
/// all succeed.
#[test]
fn round_robin_health_checking_handles_subchannel_failure() {
    let mut b = Backends::start(3);
    let svc = "health_check_service_name";
    for i in 0..3 {
        b.server(i).set_serving(svc, SERVING);
    }
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-hc-fail");
    let ch = build(&rt, &fake, RR_HC, plaintext());
    fake.set(&b.ports(0..3));
    ch.sync().unwrap();
    wait_for_server(&ch, b.ports[0], None);
    let s0 = b.servers[0].take().unwrap();
    let stopper = std::thread::spawn(move || s0.graceful_stop(Duration::from_secs(2)));
    fake.set(&b.ports(0..3));
    ch.sync().unwrap();
    for _ in 0..100 {
        ok(&ch);
    }
    stopper.join().unwrap();
    let _ = &mut b;
}

/// RoundRobinTest.HealthCheckingServiceNamePerChannel: two channels to one
/// backend, service names 1 and 2; only 2 is SERVING: channel 1 is not
/// READY (RPCs fail UNAVAILABLE), channel 2 is and serves; 1 SERVING: a
/// wait-for-ready RPC on channel 1 succeeds.
#[test]
fn round_robin_health_checking_service_name_per_channel() {
    let b = Backends::start(1);
    let rt = Runtime::new().unwrap();
    let f1 = Fake::new("rr-hc-name1");
    let f2 = Fake::new("rr-hc-name2");
    let ch1 = build(&rt, &f1, RR_HC, plaintext());
    let cfg2 = r#"{"loadBalancingConfig":[{"round_robin":{}}],
        "healthCheckConfig":{"serviceName":"health_check_service_name2"}}"#;
    let ch2 = build(&rt, &f2, cfg2, plaintext());
    f1.set(&b.ports(0..1));
    ch1.sync().unwrap();
    f2.set(&b.ports(0..1));
    ch2.sync().unwrap();
    b.server(0)
        .set_serving("health_check_service_name2", SERVING);
    assert!(!wait_ready(&ch1, Duration::from_secs(1)));
    let e = rpc(&ch1, false, 1000).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(wait_ready(&ch2, Duration::from_secs(2)));
    ok(&ch2);
    b.server(0)
        .set_serving("health_check_service_name", SERVING);
    assert_eq!(rpc(&ch1, true, 2000).unwrap(), b.ports[0]);
}

/// RoundRobinTest.HealthCheckingRetryOnStreamEnd: a health service whose
/// Watch ends at once with OK and no message: the channel never becomes
/// READY, and each backend sees more than one Watch.
#[test]
fn round_robin_health_checking_retry_on_stream_end() {
    let mut b = Backends::create(2);
    b.opts = ServerOptions {
        health_fail: Some(0),
        ..Default::default()
    };
    b.start_one(0);
    b.start_one(1);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-hc-stream-end");
    let ch = build(&rt, &fake, RR_HC, plaintext());
    fake.set(&b.ports(0..2));
    ch.sync().unwrap();
    assert!(!wait_ready(&ch, Duration::from_secs(5)));
    assert!(
        b.server(0).health_watches() > 1,
        "{}",
        b.server(0).health_watches()
    );
    assert!(
        b.server(1).health_watches() > 1,
        "{}",
        b.server(1).health_watches()
    );
}

/// RoundRobinTest.Basic: once every backend served, and synced to the end
/// of the list (the last backend just served), the next three RPCs go to
/// backends 0, 1, 2: the order the addresses were given in.
#[test]
fn round_robin_basic_iterates_in_address_order() {
    let b = Backends::start(3);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-basic");
    let ch = build(&rt, &fake, RR, plaintext());
    fake.set(&b.ports(0..3));
    ch.sync().unwrap();
    wait_for_servers(&ch, &b.ports(0..3));
    wait_for_server(&ch, b.ports[2], None);
    let order: Vec<usize> = (0..3).map(|_| b.index_of(ok(&ch))).collect();
    assert_eq!(order, [0, 1, 2]);
    assert_eq!(policy(&ch), "round_robin");
}

/// PickFirstTest.SelectsReadyAtStartup: [a (down), b (up)], initial
/// backoff 5 s: channel 1 serves on b; a second channel with the same
/// addresses is READY within 1 s, without waiting out a backoff.
#[test]
fn pick_first_selects_ready_at_startup() {
    let mut b = Backends::create(2);
    b.start_one(1);
    let rt = Runtime::new().unwrap();
    let opts = || opts_with(|o| o.backoff.initial = Duration::from_secs(5));
    let f1 = Fake::new("pf-ready-startup1");
    let ch1 = build(&rt, &f1, PF, opts());
    f1.set(&b.ports(0..2));
    ch1.sync().unwrap();
    wait_for_server(&ch1, b.ports[1], None);
    let f2 = Fake::new("pf-ready-startup2");
    let ch2 = build(&rt, &f2, PF, opts());
    f2.set(&b.ports(0..2));
    ch2.sync().unwrap();
    assert!(
        wait_ready(&ch2, Duration::from_secs(1)),
        "is {}",
        ch2.state()
    );
}

// ------------------------------------------------------------ exact texts

/// RoundRobinTest.HealthCheckingServiceNameChangesAfterSubchannelsCreated:
/// the resolver's service config names a SERVING health service: READY
/// within 1 s; a new resolver config naming another (unknown) service: the
/// channel leaves READY.
#[test]
fn round_robin_health_checking_service_name_changes_after_subchannels_created() {
    let b = Backends::start(1);
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-hc-name-change");
    let ch = build(&rt, &fake, RR, plaintext());
    let cfg = |name: &str| {
        format!(
            r#"{{"loadBalancingConfig":[{{"round_robin":{{}}}}],
                "healthCheckConfig":{{"serviceName":"{name}"}}}}"#
        )
    };
    b.server(0)
        .set_serving("health_check_service_name", SERVING);
    fake.set_with_config(&b.ports(0..1), &cfg("health_check_service_name"));
    ch.sync().unwrap();
    assert!(wait_ready(&ch, Duration::from_secs(1)), "is {}", ch.state());
    fake.set_with_config(&b.ports(0..1), &cfg("health_check_service_name2"));
    ch.sync().unwrap();
    assert!(wait_not_ready(&ch));
}

// ------------------------------------------------------------ state reads

/// GetState then WaitForStateChange (the pattern of every C-core test's
/// WaitForChannelState): a fail-fast RPC fails as pick_first goes
/// TRANSIENT_FAILURE; `wait_for_state_change` from the state `get_state`
/// then says must not return at once with an older state. With a 10 s
/// backoff nothing changes within the wait after TRANSIENT_FAILURE. (The
/// two read different records once, and the wait answered CONNECTING from
/// TRANSIENT_FAILURE a few times in a thousand.)
#[test]
fn wait_for_state_change_never_answers_an_older_state_than_get_state() {
    let rt = Runtime::new().unwrap();
    let mut odd = Vec::new();
    for i in 0..1000 {
        let port = free_port();
        let fake = Fake::new(&format!("state-race-{i}"));
        let opts = opts_with(|o| {
            o.backoff.initial = Duration::from_secs(10);
            o.backoff.max = Duration::from_secs(10);
        });
        let ch = build(&rt, &fake, PF, opts);
        fake.set(&[port]);
        ch.sync().unwrap();
        let e = rpc(&ch, false, 2000).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
        let s = ch.get_state(false);
        let w = ch.wait_for_state_change(s, Some(Instant::now() + Duration::from_millis(5)));
        // The state may still be CONNECTING when the RPC saw the failing
        // picker (the picker is published first, then the state, as in
        // gRPC-Go): then the wait answers TRANSIENT_FAILURE, the newer one.
        let newer =
            s == ConnectivityState::Connecting && w == Some(ConnectivityState::TransientFailure);
        if w.is_some() && !newer {
            odd.push((i, s, w, ch.state()));
        }
        ch.close();
    }
    assert!(
        odd.is_empty(),
        "(iteration, get_state, wait_for_state_change's answer, state after): {odd:?}"
    );
}

// ------------------------------------------------------------ raw listener

/// A listener on `port` whose every connection is held `hold`, then closed
/// without a byte (C-core's ConnectionAttemptInjector hold, then a failed
/// attempt). Stops when dropped.
struct Closer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Closer {
    fn start(port: u16, hold: Duration) -> Closer {
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (st, acc) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(30);
            let mut held: Vec<(Instant, std::net::TcpStream)> = Vec::new();
            while !st.load(Ordering::Acquire) && Instant::now() < end {
                if let Ok((s, _)) = l.accept() {
                    acc.fetch_add(1, Ordering::AcqRel);
                    held.push((Instant::now() + hold, s));
                }
                held.retain(|(until, _)| Instant::now() < *until);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Closer {
            stop,
            accepted,
            thread: Some(thread),
        }
    }
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// ClientLbEnd2endTest.ResetConnectionBackoffNextAttemptStartsImmediately
/// (pick_first, 5 s initial backoff): the first attempt is held (here: a
/// listener that holds the connection 300 ms, then closes it); the backoff
/// is reset while it is in flight; once it fails, the next attempt starts
/// at once (C-core: under 1 s), not after the 5 s backoff.
#[test]
fn pick_first_reset_connection_backoff_next_attempt_starts_immediately() {
    let port = free_port();
    let closer = Closer::start(port, Duration::from_millis(300));
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("pf-reset-inflight");
    let opts = opts_with(|o| o.backoff.initial = Duration::from_secs(5));
    let ch = build(&rt, &fake, PF, opts);
    fake.set(&[port]);
    ch.sync().unwrap();
    assert_eq!(ch.get_state(true), Idle);
    wait_until("the first attempt", || closer.accepted() >= 1);
    assert_eq!(ch.get_state(false), Connecting);
    ch.reset_connect_backoff().unwrap();
    let t0 = Instant::now();
    // The held attempt fails ~300 ms in; the next must follow at once.
    let deadline = t0 + Duration::from_secs(3);
    while closer.accepted() < 2 {
        assert!(
            Instant::now() < deadline,
            "no second attempt within 3 s of the reset (C-core: < 1 s after the \
             first fails); state {}",
            ch.state()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1300),
        "{:?}",
        t0.elapsed()
    );
}

/// RoundRobinTest.ReportsLatestStatusInTransientFailure: two refused ports:
/// RPCs fail with the connection failure; then one port's attempts fail
/// another way (accepted, closed without a byte: C-core injects "Survey
/// says... Bzzzzt!"): RPCs soon fail with that newer error, and every
/// failure meanwhile is one of the two.
#[test]
fn round_robin_reports_latest_status_in_transient_failure() {
    let ports = [free_port(), free_port()];
    let rt = Runtime::new().unwrap();
    let fake = Fake::new("rr-latest-status");
    let opts = opts_with(|o| {
        o.backoff.initial = Duration::from_millis(100);
        o.backoff.max = Duration::from_millis(200);
    });
    let ch = build(&rt, &fake, RR, opts);
    fake.set(&ports);
    ch.sync().unwrap();
    let e = rpc(&ch, false, 1000).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("refused"), "{}", e.message());
    let _closer = Closer::start(ports[0], Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let e = rpc(&ch, false, 1000).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
        let m = e.message();
        if m.contains(&ports[0].to_string()) && !m.contains("refused") {
            break;
        }
        assert!(m.contains("refused"), "neither failure: {m}");
        assert!(Instant::now() < deadline, "the newer error never showed");
    }
}
