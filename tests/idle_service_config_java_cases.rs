//! grpc-java's ManagedChannelImplIdlenessTest and
//! ServiceConfigErrorHandlingTest (with gRPC-Go's internal/idle e2e tests,
//! clientconn.go and gRFC A21 for comparison), ported onto switchyard's
//! Channel with a push resolver and a recording policy (Java's mock_lb: it
//! parses `{"check": "..."}`, refuses `no_check`, records every callback and
//! delegates the real work to pick_first) against real echo backends on
//! 127.0.0.1. Cases already pinned by tests/managed/idle.rs,
//! tests/resolver_api*.rs and tests/channel_states_go_cases.rs are not
//! repeated.
//!
//! Where the gRPC implementations disagree, switchyard's side (pinned here
//! or in those files): an invalid first config with a default set fails the
//! channel (gRPC-Go, C-core, the client channel spec; Java and A21's
//! channel-arguments section use the default); an invalid later config
//! keeps the last good one (Go, C-core, A21; Java prefers the default); a
//! result with no config after a good one brings the default back (Java,
//! C-core, A21; Go keeps the last); the config outlives IDLE (Go, Java;
//! C-core forgets it); a call made while IDLE waits for the new resolver's
//! config (Go, C-core).

#[path = "common/mod.rs"]
mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::picker::QueuePicker;
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverClientConn, ResolverState};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

// ------------------------------------------------------------ resolver

/// The test's push resolver (gRPC-Go's manual resolver, with its
/// InitialState: a resolver rebuilt on leaving IDLE says it again).
type Seen = ManualResolver;

trait Push {
    /// The channel's client conn, once it has built the resolver.
    fn cc(&self) -> ResolverClientConn;
    fn push(&self, endpoints: Vec<Endpoint>, config: Option<&str>);
}

impl Push for ManualResolver {
    fn cc(&self) -> ResolverClientConn {
        wait_until("the resolver built", || self.client_conn().is_some());
        self.client_conn().unwrap()
    }
    fn push(&self, endpoints: Vec<Endpoint>, config: Option<&str>) {
        self.cc()
            .update(ResolverState {
                endpoints,
                service_config: config.map(str::to_string),
            })
            .unwrap();
    }
}

fn pushed(scheme: &'static str) -> Seen {
    let seen = ManualResolver::new(scheme);
    resolver::register(Arc::new(seen.clone()));
    seen
}

// ------------------------------------------------------------ policy

#[derive(Clone, Debug, PartialEq)]
enum Ev {
    /// update_client_conn_state: the addresses and the parsed `check`.
    Update(Vec<String>, Option<String>),
    ResolverError(String),
    Close,
}

#[derive(Default)]
struct Rec {
    events: Mutex<Vec<Ev>>,
    builds: AtomicUsize,
    fail_on_close: std::sync::atomic::AtomicBool,
}

impl Rec {
    fn events(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }
    fn updates(&self) -> Vec<(Vec<String>, Option<String>)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Update(a, c) => Some((a, c)),
                _ => None,
            })
            .collect()
    }
    fn last_update(&self) -> (Vec<String>, Option<String>) {
        self.updates().pop().expect("an update")
    }
    fn count(&self, f: impl Fn(&Ev) -> bool) -> usize {
        self.events().iter().filter(|e| f(e)).count()
    }
}

/// Java's mock_lb: `{"check": "x"}` parses to "x", `no_check` is a parse
/// error. With check "accept_empty" an empty update is accepted
/// (CONNECTING, picks queue); otherwise pick_first does the work.
struct Recording(&'static str, Arc<Rec>);
struct RecordingB {
    rec: Arc<Rec>,
    inner: Box<dyn Balancer>,
}

impl Builder for Recording {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        self.1.builds.fetch_add(1, Ordering::SeqCst);
        Box::new(RecordingB {
            rec: self.1.clone(),
            inner: registry::get("pick_first").unwrap().build(),
        })
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<Option<LbConfig>, String> {
        if config.get("no_check").is_some() {
            return Err("mock_lb: no_check is not a check".into());
        }
        Ok(config
            .get("check")
            .and_then(|c| c.as_str())
            .map(|c| Arc::new(c.to_string()) as LbConfig))
    }
}

impl Balancer for RecordingB {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let check = state.config_as::<String>().cloned();
        let addrs = state.addresses.iter().map(|a| a.addr.clone()).collect();
        self.rec
            .events
            .lock()
            .unwrap()
            .push(Ev::Update(addrs, check.clone()));
        if state.endpoints.is_empty() && check.as_deref() == Some("accept_empty") {
            cc.update_state(ConnectivityState::Connecting, Box::new(QueuePicker));
            return Ok(());
        }
        self.inner
            .update_client_conn_state(cc, ClientConnState::new(state.endpoints, None))
    }
    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.rec
            .events
            .lock()
            .unwrap()
            .push(Ev::ResolverError(error.to_string()));
        self.inner.resolver_error(cc, error)
    }
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, id: SubConnId, s: &SubConnState) {
        self.inner.update_subconn_state(cc, id, s)
    }
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        self.inner.exit_idle(cc)
    }
    fn work(&mut self, cc: &mut dyn ClientConn) {
        self.inner.work(cc)
    }
    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        self.inner.timer(cc, token)
    }
    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.rec.events.lock().unwrap().push(Ev::Close);
        self.inner.close(cc);
        if self.rec.fail_on_close.load(Ordering::SeqCst) {
            // A policy that says something as it goes: nobody should hear.
            cc.update_state(
                ConnectivityState::TransientFailure,
                Box::new(switchyard::picker::FailPicker::unavailable(
                    "closed policy's picker",
                )),
            );
        }
    }
}

fn recording(name: &'static str) -> Arc<Rec> {
    let rec = Arc::new(Rec::default());
    registry::register(Arc::new(Recording(name, rec.clone())));
    rec
}

fn lb(name: &str, check: &str) -> String {
    format!(r#"{{"loadBalancingConfig":[{{"{name}":{{"check":"{check}"}}}}]}}"#)
}

// ------------------------------------------------------------ helpers

fn backend() -> TestServer {
    TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap()
}

fn eps(servers: &[&TestServer]) -> Vec<Endpoint> {
    servers
        .iter()
        .map(|s| Endpoint::from(Address::new(s.addr().to_string())))
        .collect()
}

fn addr_strings(servers: &[&TestServer]) -> Vec<String> {
    servers.iter().map(|s| s.addr().to_string()).collect()
}

const IDLE: Duration = Duration::from_secs(60);

fn manual_runtime() -> (Arc<ManualClock>, Runtime) {
    let clock = Arc::new(ManualClock::new());
    let rt = Runtime::with_config(RuntimeConfig {
        clock: clock.clone(),
        seed: Some(7),
    })
    .unwrap();
    (clock, rt)
}

/// Moves the loop's clock by `by`, in steps the idle looks (a sixteenth of
/// the timeout) follow, letting the loop act after each.
fn advance(clock: &ManualClock, ch: &Channel, by: Duration) {
    let step = IDLE / 64;
    let mut left = by;
    while !left.is_zero() {
        let s = left.min(step);
        clock.advance(s);
        left -= s;
        ch.sync().unwrap();
        ch.sync().unwrap();
    }
}

fn idle_opts() -> ChannelOptions {
    ChannelOptions {
        idle_timeout: Some(IDLE),
        ..plaintext()
    }
}

/// A started call; its result comes on the returned receiver.
fn start(
    ch: &Channel,
    delay_ms: Option<u64>,
    wait_for_ready: bool,
) -> (CallHandle, std::sync::mpsc::Receiver<Result<(), Code>>) {
    let md: Vec<(String, String)> = delay_ms
        .map(|d| vec![("x-delay-ms".to_string(), d.to_string())])
        .unwrap_or_default();
    let opts = CallOptions {
        wait_for_ready: Some(wait_for_ready),
        metadata: &md,
        ..Default::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let h = ch
        .unary_start("/echo.Echo/Unary", b"ping", &opts, move |r| {
            let _ = tx.send(r.map(|_| ()).map_err(|s| s.code()));
        })
        .unwrap();
    (h, rx)
}

// ====================================================================
// ManagedChannelImplIdlenessTest / internal/idle/idle_e2e_test.go
// ====================================================================

/// Java newCallExitsIdleness + gRPC-Go TestChannelIdleness_Enabled_NoActivity
/// and _ExitIdleOnRPC (whose wrapped round_robin reports its Close): going
/// IDLE closes the resolver and the policy (Close called once) and every
/// subchannel; a pick then leaves IDLE, building a new resolver and a new
/// policy, which gets the re-resolved addresses.
#[test]
fn idle_closes_resolver_and_policy_and_a_pick_builds_new_ones() {
    let seen = pushed("java-isc-idle1");
    let rec = recording("java_isc_rec_idle1");
    let b0 = backend();
    seen.set_initial_state(Some(ResolverState {
        endpoints: eps(&[&b0]),
        service_config: None,
    }));
    let (clock, rt) = manual_runtime();
    let config = lb("java_isc_rec_idle1", "default");
    let ch = Channel::new(&rt, "java-isc-idle1:///t", Some(&config), idle_opts()).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::Idle);
    assert_eq!(seen.builds(), 0, "resolver built while IDLE");
    assert_eq!(
        rec.builds.load(Ordering::SeqCst),
        0,
        "policy built while IDLE"
    );

    let mut r = ch.reader();
    assert_eq!(echo(&mut r, false).unwrap(), b0.port());
    assert_eq!(ch.state(), ConnectivityState::Ready);
    assert_eq!(seen.builds(), 1);
    assert_eq!(rec.builds.load(Ordering::SeqCst), 1);
    assert_eq!(
        rec.events(),
        vec![Ev::Update(addr_strings(&[&b0]), Some("default".into()))]
    );

    // No use for a timeout (and a sixteenth): IDLE.
    advance(&clock, &ch, IDLE + IDLE / 8);
    assert_eq!(ch.state(), ConnectivityState::Idle);
    assert_eq!(seen.closes(), 1, "resolver closed");
    assert_eq!(rec.count(|e| *e == Ev::Close), 1, "policy closed once");
    assert!(ch.snapshot().unwrap().subchannels.is_empty());
    wait_until("the connection closed", || b0.connections() == 0);

    // A pick (try_pick: it cannot wait) on the IDLE channel queues and
    // asks the loop to leave IDLE: new resolver, new policy.
    assert!(r.try_pick(&PickInfo::default()).is_err());
    wait_until("a new resolver", || seen.builds() == 2);
    ch.sync().unwrap();
    assert_ne!(ch.state(), ConnectivityState::Idle);
    assert_eq!(echo(&mut r, false).unwrap(), b0.port());
    assert_eq!(rec.builds.load(Ordering::SeqCst), 2, "a new policy");
    assert_eq!(
        rec.events(),
        vec![
            Ev::Update(addr_strings(&[&b0]), Some("default".into())),
            Ev::Close,
            Ev::Update(addr_strings(&[&b0]), Some("default".into())),
        ]
    );
    assert_eq!(ch.state(), ConnectivityState::Ready);
}

/// Java newCallRefreshesIdlenessTimer: a call started (and cancelled at
/// once) just before the timeout restarts it: a whole timeout after that
/// call, not after the first, the channel goes IDLE.
#[test]
fn a_started_and_cancelled_call_refreshes_the_idle_timer() {
    let b0 = backend();
    let (clock, rt) = manual_runtime();
    let ch = Channel::new(&rt, &format!("ipv4:{}", b0.addr()), None, idle_opts()).unwrap();
    let (_h, rx) = start(&ch, None, true);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(()));
    advance(&clock, &ch, IDLE - Duration::from_secs(2));
    assert_eq!(ch.state(), ConnectivityState::Ready);
    // A call the server holds, cancelled once it is there.
    let (h, rx) = start(&ch, Some(5000), true);
    wait_until("the call reached the server", || b0.in_flight() == 1);
    assert!(h.cancel());
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        Err(Code::Cancelled)
    );
    // Most of a timeout since that call, well past one since the first.
    advance(&clock, &ch, IDLE - Duration::from_secs(2));
    assert_eq!(
        ch.state(),
        ConnectivityState::Ready,
        "IDLE less than a timeout after the last call"
    );
    advance(&clock, &ch, IDLE / 8 + Duration::from_secs(4));
    assert_eq!(ch.state(), ConnectivityState::Idle);
}

/// Java delayedTransportHoldsOffIdleness: a started call queued for a
/// connection (resolved, but nothing READY: every connection refused)
/// keeps the channel out of IDLE however long; cancelled, the channel goes
/// IDLE a timeout later.
#[test]
fn a_started_call_waiting_for_a_connection_holds_off_idleness() {
    let port = free_port(); // nothing listens: every attempt is refused
    let (clock, rt) = manual_runtime();
    let ch = Channel::new(&rt, &format!("ipv4:127.0.0.1:{port}"), None, idle_opts()).unwrap();
    let (h, rx) = start(&ch, None, true);
    wait_until("leaving IDLE", || ch.state() != ConnectivityState::Idle);
    advance(&clock, &ch, IDLE * 3);
    assert_ne!(
        ch.state(),
        ConnectivityState::Idle,
        "IDLE under a queued call"
    );
    assert!(rx.try_recv().is_err(), "the queued call ended");
    assert!(h.cancel());
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        Err(Code::Cancelled)
    );
    advance(&clock, &ch, IDLE + IDLE / 8);
    assert_eq!(ch.state(), ConnectivityState::Idle);
}

/// gRPC-Go keeps `cc.sc` across idle mode (enterIdleMode resets the
/// resolver and balancer wrappers, not the service config), and Java keeps
/// `lastServiceConfig` / `serviceConfigUpdated`: a valid config the channel
/// had before going IDLE is a "previously selected valid config" (A21
/// 5.1), so an invalid config from the resolver rebuilt on leaving IDLE
/// keeps it instead of failing the channel. (C-core differs: its
/// DestroyResolverAndLbPolicyLocked clears saved_service_config_.)
#[test]
fn a_valid_config_from_before_idle_outlives_an_invalid_one_after() {
    let seen = pushed("java-isc-keepidle");
    let b0 = backend();
    let (clock, rt) = manual_runtime();
    let ch = Channel::new(&rt, "java-isc-keepidle:///t", None, idle_opts()).unwrap();
    ch.connect().unwrap();
    let good = r#"{"loadBalancingConfig":[{"round_robin":{}}],
                   "methodConfig":[{"name":[{}],"timeout":"2s"}]}"#;
    seen.push(eps(&[&b0]), Some(good));
    let mut r = ch.reader();
    assert_eq!(echo(&mut r, true).unwrap(), b0.port());
    let timeout = |ch: &Channel| ch.method_config("/echo.Echo/Unary").and_then(|m| m.timeout);
    assert_eq!(timeout(&ch), Some(Duration::from_secs(2)));
    advance(&clock, &ch, IDLE + IDLE / 8);
    assert_eq!(ch.state(), ConnectivityState::Idle);
    ch.connect().unwrap();
    wait_until("a new resolver", || seen.builds() == 2);
    seen.push(
        eps(&[&b0]),
        Some(r#"{"loadBalancingConfig":[{"nope":{}}]}"#),
    );
    ch.sync().unwrap();
    assert_ne!(
        ch.state(),
        ConnectivityState::TransientFailure,
        "failed on an invalid config after a valid one"
    );
    assert_eq!(echo(&mut r, true).unwrap(), b0.port());
    assert_eq!(timeout(&ch), Some(Duration::from_secs(2)));
    assert_eq!(ch.snapshot().unwrap().policy, "round_robin");
}

/// Leaving IDLE, the new resolver errs before saying anything: as a new
/// channel (gRPC-Go: the new balancer gets resolverError and, with no
/// addresses, publishes TRANSIENT_FAILURE; Java: handleNameResolutionError
/// on the new LB), RPCs fail fast with the resolver's error; its next
/// result heals the channel.
#[test]
fn after_idle_a_resolver_error_before_any_result_fails_fast_then_heals() {
    let seen = pushed("java-isc-erridle");
    let _rec = recording("java_isc_rec_erridle");
    let b0 = backend();
    let (clock, rt) = manual_runtime();
    let config = lb("java_isc_rec_erridle", "d");
    let ch = Channel::new(&rt, "java-isc-erridle:///t", Some(&config), idle_opts()).unwrap();
    ch.connect().unwrap();
    seen.push(eps(&[&b0]), None);
    let mut r = ch.reader();
    assert_eq!(echo(&mut r, true).unwrap(), b0.port());
    advance(&clock, &ch, IDLE + IDLE / 8);
    assert_eq!(ch.state(), ConnectivityState::Idle);
    ch.connect().unwrap();
    wait_until("a new resolver", || seen.builds() == 2);
    seen.cc().report_error("dns is down").unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    let e = echo(&mut r, false).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("dns is down"), "{e:?}");
    seen.push(eps(&[&b0]), None);
    assert_eq!(echo(&mut r, true).unwrap(), b0.port());
    assert_eq!(ch.state(), ConnectivityState::Ready);
}

// ====================================================================
// ServiceConfigErrorHandlingTest
// ====================================================================

/// emptyAddresses_validConfig_lbDoesNotNeedAddress: an update with no
/// address goes to a policy that accepts it (with its config); no
/// resolver error reaches it, the channel is not TRANSIENT_FAILURE and
/// nobody asks the resolver again.
#[test]
fn empty_addresses_go_to_a_policy_that_accepts_them() {
    let seen = pushed("java-isc-emptyok");
    let rec = recording("java_isc_rec_emptyok");
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.backoff.initial = Duration::from_millis(50);
    opts.backoff.jitter = 0.0;
    let ch = Channel::new(&rt, "java-isc-emptyok:///t", None, opts).unwrap();
    ch.connect().unwrap();
    seen.push(vec![], Some(&lb("java_isc_rec_emptyok", "accept_empty")));
    ch.sync().unwrap();
    assert_eq!(
        rec.events(),
        vec![Ev::Update(vec![], Some("accept_empty".into()))]
    );
    assert_eq!(ch.state(), ConnectivityState::Connecting);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(seen.resolve_nows(), 0, "asked to resolve again");
    assert_eq!(ch.state(), ConnectivityState::Connecting);
}

/// emptyAddresses_validConfig_2ndResolution_lbNeedsAddress: after a good
/// first resolution, an empty second one still reaches the policy (which
/// rejects it), and the resolver is asked again.
#[test]
fn an_empty_second_resolution_reaches_the_policy_and_asks_again() {
    let seen = pushed("java-isc-empty2");
    let rec = recording("java_isc_rec_empty2");
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.backoff.initial = Duration::from_millis(50);
    opts.backoff.jitter = 0.0;
    let ch = Channel::new(&rt, "java-isc-empty2:///t", None, opts).unwrap();
    ch.connect().unwrap();
    let config = lb("java_isc_rec_empty2", "12");
    seen.push(eps(&[&b0]), Some(&config));
    ch.sync().unwrap();
    assert_eq!(
        rec.events(),
        vec![Ev::Update(addr_strings(&[&b0]), Some("12".into()))]
    );
    assert_ne!(ch.state(), ConnectivityState::TransientFailure);
    let before = seen.resolve_nows();
    seen.push(vec![], Some(&config));
    ch.sync().unwrap();
    assert_eq!(rec.last_update(), (vec![], Some("12".into())));
    assert_eq!(rec.count(|e| matches!(e, Ev::ResolverError(_))), 0);
    wait_until("the resolver asked again", || seen.resolve_nows() > before);
}

/// validConfig_lbDoesNotNeedAddress, noConfig_usingDefaultConfig,
/// invalidConfig_2ndResolution and validConfig_thenNoConfig_withDefaultConfig
/// in one sequence: the policy's parsed config is the default's without a
/// resolver config, the resolver's when it sends one, the last good one
/// (with the new addresses) when it sends an invalid one, the default's
/// again when it sends none. One policy instance throughout; never a
/// resolver error; never TRANSIENT_FAILURE.
#[test]
fn the_policy_config_follows_default_resolver_and_last_good() {
    let seen = pushed("java-isc-cfgseq");
    let rec = recording("java_isc_rec_cfgseq");
    let (b0, b1) = (backend(), backend());
    let rt = Runtime::new().unwrap();
    let default = lb("java_isc_rec_cfgseq", "mate");
    let ch = Channel::new(&rt, "java-isc-cfgseq:///t", Some(&default), plaintext()).unwrap();
    ch.connect().unwrap();
    let mut r = ch.reader();
    seen.push(eps(&[&b0]), None);
    ch.sync().unwrap();
    assert_eq!(
        rec.last_update(),
        (addr_strings(&[&b0]), Some("mate".into()))
    );
    assert_eq!(echo(&mut r, true).unwrap(), b0.port());

    seen.push(
        eps(&[&b0]),
        Some(&lb("java_isc_rec_cfgseq", "1st raw config")),
    );
    ch.sync().unwrap();
    assert_eq!(
        rec.last_update(),
        (addr_strings(&[&b0]), Some("1st raw config".into()))
    );

    // Invalid (the policy's parser refuses it), with new addresses.
    let invalid = r#"{"loadBalancingConfig":[{"java_isc_rec_cfgseq":{"no_check":"foo"}}]}"#;
    seen.push(eps(&[&b1]), Some(invalid));
    ch.sync().unwrap();
    assert_eq!(
        rec.last_update(),
        (addr_strings(&[&b1]), Some("1st raw config".into())),
        "the last good config, with the new addresses"
    );
    assert_ne!(ch.state(), ConnectivityState::TransientFailure);
    wait_until("b1 serves", || echo(&mut r, true).unwrap() == b1.port());

    seen.push(eps(&[&b1]), None);
    ch.sync().unwrap();
    assert_eq!(
        rec.last_update(),
        (addr_strings(&[&b1]), Some("mate".into()))
    );
    assert_eq!(echo(&mut r, true).unwrap(), b1.port());
    assert_eq!(rec.builds.load(Ordering::SeqCst), 1, "one policy instance");
    assert_eq!(rec.count(|e| matches!(e, Ev::ResolverError(_))), 0);
    assert_eq!(rec.count(|e| *e == Ev::Close), 0);
}

/// invalidConfig_noDefaultConfig: the resolver's first config has a policy
/// config its parser refuses and there is nothing before it: the channel is
/// TRANSIENT_FAILURE and RPCs fail with the parser's error (Java hands the
/// error to the default LB's handleNameResolutionError; gRPC-Go applies a
/// failing picker, UNAVAILABLE "error parsing service config"); no policy
/// runs.
#[test]
fn a_policy_config_error_in_the_first_config_fails_rpcs_with_it() {
    let seen = pushed("java-isc-badlbcfg");
    let rec = recording("java_isc_rec_badlbcfg");
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "java-isc-badlbcfg:///t", None, plaintext()).unwrap();
    ch.connect().unwrap();
    let invalid = r#"{"loadBalancingConfig":[{"java_isc_rec_badlbcfg":{"no_check":"foo"}}]}"#;
    seen.push(eps(&[&b0]), Some(invalid));
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    let e = echo(&mut ch.reader(), true).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("no_check is not a check"), "{e:?}");
    assert_eq!(rec.builds.load(Ordering::SeqCst), 0);
    assert_eq!(b0.requests(), 0);
}

/// The policy named by the resolver's config against the channel's
/// default one (Java's defaultLoadBalancingPolicy; switchyard's default is
/// the default service config's policy, else pick_first): the resolver's
/// pick_first replaces the default round_robin, an invalid config keeps
/// it, a result without a config brings round_robin back, and a resolver
/// error after that leaves round_robin serving.
#[test]
fn the_resolvers_policy_replaces_the_default_and_gives_way_back() {
    let seen = pushed("java-isc-policy");
    let (b0, b1) = (backend(), backend());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "java-isc-policy:///t", RR, plaintext()).unwrap();
    ch.connect().unwrap();
    let mut r = ch.reader();
    let policy = |ch: &Channel| ch.snapshot().unwrap().policy;
    seen.push(eps(&[&b0, &b1]), None);
    warm_up(&mut r, 2);
    assert_eq!(policy(&ch), "round_robin");

    seen.push(
        eps(&[&b0, &b1]),
        Some(r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#),
    );
    ch.sync().unwrap();
    assert_eq!(policy(&ch), "pick_first");
    wait_until("pick_first serves one backend", || {
        (0..6)
            .map(|_| echo(&mut r, true).unwrap())
            .all(|p| p == b0.port())
    });

    seen.push(eps(&[&b0, &b1]), Some("{not json"));
    ch.sync().unwrap();
    assert_eq!(policy(&ch), "pick_first");
    assert_eq!(ch.state(), ConnectivityState::Ready);

    seen.push(eps(&[&b0, &b1]), None);
    ch.sync().unwrap();
    assert_eq!(policy(&ch), "round_robin");
    warm_up(&mut r, 2);

    seen.cc().report_error("dns is down").unwrap();
    ch.sync().unwrap();
    assert_eq!(policy(&ch), "round_robin");
    assert_eq!(ch.state(), ConnectivityState::Ready);
    let split = split(&mut r, 10);
    assert_eq!(split.len(), 2, "{split:?}");
}

/// Java's handleNameResolutionError after a good result reaches the LB,
/// which keeps its picker (gRPC-Go: the balancer's ResolverError; its
/// pick_first keeps READY). The error reaches the policy; the channel
/// stays READY; RPCs succeed.
#[test]
fn a_resolver_error_after_a_good_result_reaches_the_policy_which_keeps_serving() {
    let seen = pushed("java-isc-errafter");
    let rec = recording("java_isc_rec_errafter");
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let config = lb("java_isc_rec_errafter", "x");
    let ch = Channel::new(&rt, "java-isc-errafter:///t", Some(&config), plaintext()).unwrap();
    ch.connect().unwrap();
    seen.push(eps(&[&b0]), None);
    let mut r = ch.reader();
    assert_eq!(echo(&mut r, true).unwrap(), b0.port());
    seen.cc().report_error("dns is down").unwrap();
    ch.sync().unwrap();
    let errors: Vec<Ev> = rec
        .events()
        .into_iter()
        .filter(|e| matches!(e, Ev::ResolverError(_)))
        .collect();
    assert_eq!(errors.len(), 1, "{:?}", rec.events());
    assert_eq!(ch.state(), ConnectivityState::Ready);
    let t0 = Instant::now();
    assert_eq!(echo(&mut r, false).unwrap(), b0.port());
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// gRPC-Go counts every RPC as activity (OnCallBegin/OnCallEnd, whatever
/// its outcome) and Java's newCall reschedules the idle timer: fail-fast
/// RPCs that fail at once (every connection refused, the channel
/// TRANSIENT_FAILURE) still keep the channel out of IDLE, from one
/// long-lived reader as from started calls.
#[test]
fn failing_fail_fast_rpcs_keep_the_channel_out_of_idle() {
    let port = free_port();
    let (clock, rt) = manual_runtime();
    let ch = Channel::new(&rt, &format!("ipv4:127.0.0.1:{port}"), None, idle_opts()).unwrap();
    let mut r = ch.reader();
    ch.connect().unwrap();
    wait_state(&ch, ConnectivityState::TransientFailure);
    let step = IDLE / 32;
    let mut i = 0;
    let mut passed = Duration::ZERO;
    while passed < IDLE * 3 {
        if i % 2 == 0 {
            let e = echo(&mut r, false).unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        } else {
            let (_h, rx) = start(&ch, None, false);
            let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(got, Err(Code::Unavailable));
        }
        i += 1;
        clock.advance(step);
        passed += step;
        ch.sync().unwrap();
        ch.sync().unwrap();
        assert_ne!(
            ch.state(),
            ConnectivityState::Idle,
            "IDLE after {passed:?} under failing RPCs every {step:?}"
        );
    }
}

/// The states a channel reports through an idle cycle (Go's
/// TestChannelIdleness_Enabled_ExitIdleOnRPC awaits READY, IDLE, READY):
/// CONNECTING, READY, IDLE, CONNECTING, READY, nothing else.
#[test]
fn the_states_through_an_idle_cycle() {
    let seen = pushed("java-isc-states");
    let b0 = backend();
    seen.set_initial_state(Some(ResolverState {
        endpoints: eps(&[&b0]),
        service_config: None,
    }));
    let (clock, rt) = manual_runtime();
    let states = Arc::new(Mutex::new(Vec::new()));
    let s2 = states.clone();
    let mut opts = idle_opts();
    opts.on_state_change = Some(Arc::new(move |s| s2.lock().unwrap().push(s)));
    let ch = Channel::new(&rt, "java-isc-states:///t", RR, opts).unwrap();
    let mut r = ch.reader();
    assert_eq!(echo(&mut r, false).unwrap(), b0.port());
    advance(&clock, &ch, IDLE + IDLE / 8);
    assert_eq!(ch.state(), ConnectivityState::Idle);
    assert_eq!(echo(&mut r, false).unwrap(), b0.port());
    ch.sync().unwrap();
    use ConnectivityState::*;
    assert_eq!(
        *states.lock().unwrap(),
        vec![Connecting, Ready, Idle, Connecting, Ready]
    );
}

/// Java's LbHelperImpl ignores updateBalancingState from an LB that is no
/// longer the channel's (`if (LbHelperImpl.this != lbHelper) return`), and
/// gRPC-Go's balancer wrapper drops a closed balancer's UpdateState: a
/// policy that publishes a picker while it is being closed (going IDLE)
/// changes nothing the channel reports: READY, then IDLE, no TRANSIENT_FAILURE
/// between, and a pick meanwhile never sees the closed policy's picker.
#[test]
fn a_policy_publishing_as_it_closes_for_idle_is_not_heard() {
    let seen = pushed("java-isc-closepub");
    let rec = recording("java_isc_rec_closepub");
    rec.fail_on_close.store(true, Ordering::SeqCst);
    let b0 = backend();
    seen.set_initial_state(Some(ResolverState {
        endpoints: eps(&[&b0]),
        service_config: None,
    }));
    let (clock, rt) = manual_runtime();
    let states = Arc::new(Mutex::new(Vec::new()));
    let s2 = states.clone();
    let mut opts = idle_opts();
    opts.on_state_change = Some(Arc::new(move |s| s2.lock().unwrap().push(s)));
    let config = lb("java_isc_rec_closepub", "x");
    let ch = Channel::new(&rt, "java-isc-closepub:///t", Some(&config), opts).unwrap();
    let mut r = ch.reader();
    assert_eq!(echo(&mut r, false).unwrap(), b0.port());
    advance(&clock, &ch, IDLE + IDLE / 8);
    assert_eq!(ch.state(), ConnectivityState::Idle);
    assert_eq!(rec.count(|e| *e == Ev::Close), 1);
    use ConnectivityState::*;
    assert_eq!(*states.lock().unwrap(), vec![Connecting, Ready, Idle]);
    assert_eq!(echo(&mut r, false).unwrap(), b0.port());
}

/// The same at channel close: SHUTDOWN, and nothing the closing policy
/// publishes after (gRPC: a closed channel's state is final).
#[test]
fn a_policy_publishing_as_the_channel_closes_is_not_heard() {
    let seen = pushed("java-isc-closepub2");
    let rec = recording("java_isc_rec_closepub2");
    rec.fail_on_close.store(true, Ordering::SeqCst);
    let b0 = backend();
    seen.set_initial_state(Some(ResolverState {
        endpoints: eps(&[&b0]),
        service_config: None,
    }));
    let rt = Runtime::new().unwrap();
    let states = Arc::new(Mutex::new(Vec::new()));
    let s2 = states.clone();
    let mut opts = plaintext();
    opts.on_state_change = Some(Arc::new(move |s| s2.lock().unwrap().push(s)));
    let config = lb("java_isc_rec_closepub2", "x");
    let ch = Channel::new(&rt, "java-isc-closepub2:///t", Some(&config), opts).unwrap();
    let mut r = ch.reader();
    assert_eq!(echo(&mut r, false).unwrap(), b0.port());
    ch.close();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ch.state(), ConnectivityState::Shutdown);
    assert_eq!(rec.count(|e| *e == Ev::Close), 1);
    use ConnectivityState::*;
    let got = states.lock().unwrap().clone();
    assert_eq!(got.first(), Some(&Connecting), "{got:?}");
    assert!(!got.contains(&TransientFailure), "{got:?}");
    let e = echo(&mut r, false).unwrap_err();
    assert!(!e.message().contains("closed policy's picker"), "{e:?}");
}

/// Java's RealChannel.onConfigError (initial resolution fails: apply the
/// default config's selector) and gRPC-Go's maybeApplyDefaultServiceConfig
/// on a resolver error: the default config's method settings govern calls
/// made after a resolver error that came before any result. Its
/// `waitForReady: true` makes a call that did not say wait, and the call
/// is served once addresses come.
#[test]
fn after_a_first_resolver_error_the_default_method_config_governs_calls() {
    let seen = pushed("java-isc-errwfr");
    let b0 = backend();
    let rt = Runtime::new().unwrap();
    let default = r#"{"methodConfig":[{"name":[{}],"waitForReady":true}]}"#;
    let ch =
        Arc::new(Channel::new(&rt, "java-isc-errwfr:///t", Some(default), plaintext()).unwrap());
    ch.connect().unwrap();
    seen.cc().report_error("dns is down").unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    let c2 = ch.clone();
    let call = std::thread::spawn(move || {
        let opts = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            ..Default::default() // wait_for_ready: the config's
        };
        c2.reader()
            .unary("/echo.Echo/Unary", b"ping", &opts)
            .map(|_| ())
            .map_err(|s| (s.code(), s.message().to_string()))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !call.is_finished(),
        "the call did not wait: {:?}",
        call.join()
    );
    seen.push(eps(&[&b0]), None);
    assert_eq!(call.join().unwrap(), Ok(()));
}

/// RPCs failing on a channel with no valid config (the resolver's first
/// one invalid) are still RPCs: gRPC-Go's idleness manager counts them
/// (OnCallBegin comes before the failing picker is consulted), so the
/// channel does not go IDLE, and its resolver is not closed and rebuilt,
/// while they keep coming.
#[test]
fn rpcs_failing_on_an_invalid_config_keep_the_channel_out_of_idle() {
    let seen = pushed("java-isc-badcfguse");
    let (clock, rt) = manual_runtime();
    let ch = Channel::new(&rt, "java-isc-badcfguse:///t", None, idle_opts()).unwrap();
    let mut r = ch.reader();
    ch.connect().unwrap();
    seen.push(
        vec![Endpoint::from(Address::new("127.0.0.1:1"))],
        Some(r#"{"loadBalancingConfig":[{"nope":{}}]}"#),
    );
    ch.sync().unwrap();
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    let step = IDLE / 32;
    let mut passed = Duration::ZERO;
    let mut i = 0;
    while passed < IDLE * 3 {
        if i % 2 == 0 {
            let e = echo(&mut r, false).unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        } else {
            let (_h, rx) = start(&ch, None, false);
            let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(got, Err(Code::Unavailable));
        }
        i += 1;
        clock.advance(step);
        passed += step;
        ch.sync().unwrap();
        ch.sync().unwrap();
        assert_ne!(
            ch.state(),
            ConnectivityState::Idle,
            "IDLE after {passed:?} under failing RPCs every {step:?}"
        );
    }
    assert_eq!(seen.builds(), 1, "resolver rebuilt");
    assert_eq!(seen.closes(), 0, "resolver closed");
}

/// A call made on a channel gone IDLE waits for the new resolver, and the
/// config that resolver brings governs it (gRPC-Go: exitIdleMode resets
/// firstResolveEvent, and the call takes its config selector after
/// waitForResolvedAddrs; C-core: going IDLE clears the saved config and
/// the call is queued for the resolver). Here the old config allows the
/// request and the new one (maxRequestMessageBytes 0) does not: the call
/// fails RESOURCE_EXHAUSTED without reaching the backend. (grpc-java keeps
/// its config selector across idle and would apply the old config.)
#[test]
fn a_call_made_while_idle_follows_the_config_the_new_resolver_brings() {
    let seen = pushed("java-isc-idlecfg");
    let b0 = backend();
    let (clock, rt) = manual_runtime();
    let ch = Arc::new(Channel::new(&rt, "java-isc-idlecfg:///t", None, idle_opts()).unwrap());
    ch.connect().unwrap();
    let old = r#"{"methodConfig":[{"name":[{}],"timeout":"9s"}]}"#;
    seen.push(eps(&[&b0]), Some(old));
    assert_eq!(echo(&mut ch.reader(), true).unwrap(), b0.port());
    advance(&clock, &ch, IDLE + IDLE / 8);
    assert_eq!(ch.state(), ConnectivityState::Idle);
    let requests = b0.requests();
    let c2 = ch.clone();
    let call = std::thread::spawn(move || echo(&mut c2.reader(), true).map_err(|s| s.code()));
    wait_until("a new resolver", || seen.builds() == 2);
    std::thread::sleep(Duration::from_millis(100));
    let new = r#"{"methodConfig":[{"name":[{}],"maxRequestMessageBytes":0}]}"#;
    seen.push(eps(&[&b0]), Some(new));
    assert_eq!(call.join().unwrap(), Err(Code::ResourceExhausted));
    assert_eq!(b0.requests(), requests, "sent under the old config");
}
