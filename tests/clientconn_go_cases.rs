//! gRPC-Go's clientconn_test.go / dial_test.go cases that
//! tests/conn_go_cases.rs, tests/channel_states_go_cases.rs,
//! tests/target_go_tables.rs and tests/connect_backoff_go_cases.rs do not
//! cover (grpc-go 4793ad04), ported onto switchyard's Channel with a
//! ManualResolver and raw TCP listeners on 127.0.0.1.
//!
//! Where switchyard differs on purpose (pinned): a custom scheme's endpoint
//! that no `:authority` can carry (slashes, which gRPC-Go %-escapes;
//! userinfo, which it keeps) gives no default authority, each connection
//! sending its address's; an empty default service config is none
//! (gRPC-Go and C-core refuse it); an invalid first resolver config fails
//! the channel though a default exists (gRPC-Go; gRFC A21 would use the
//! default).

#![allow(dead_code)]

#[path = "common/mod.rs"]
mod common;
#[path = "common/raw_server.rs"]
mod raw_server;

use common::*;
use raw_server::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::backoff::BackoffConfig;
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverState};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

// ------------------------------------------------------------ raw servers

// ------------------------------------------------------------ client side

const T: Duration = Duration::from_secs(5);

fn manual(scheme: &str) -> ManualResolver {
    let r = ManualResolver::new(scheme);
    resolver::register(Arc::new(r.clone()));
    r
}

fn state(addrs: &[SocketAddr], sc: Option<&str>) -> ResolverState {
    ResolverState {
        endpoints: addrs
            .iter()
            .map(|a| Endpoint::from(Address::new(a.to_string())))
            .collect(),
        service_config: sc.map(str::to_string),
    }
}

fn echo_server() -> TestServer {
    TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap()
}

fn call(ch: &Channel, wait_for_ready: bool, within: Duration) -> Result<UnaryResponse, Status> {
    let opts = CallOptions {
        deadline: Some(Instant::now() + within),
        wait_for_ready: Some(wait_for_ready),
        ..Default::default()
    };
    ch.reader().unary("/echo.Echo/Unary", b"ping", &opts)
}

/// Go's verifyWaitForReadyEqualsTrue: polls up to 1 s.
fn wfr_true_within(ch: &Channel, method: &str, within: Duration) -> bool {
    let end = Instant::now() + within;
    loop {
        if ch.method_config(method).and_then(|m| m.wait_for_ready) == Some(true) {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const WFR_FOO_BAR: &str =
    r#"{"methodConfig":[{"name":[{"service":"foo","method":"bar"}],"waitForReady":true}]}"#;

// ====================================================================
// clientconn_test.go: service config options
// ====================================================================

/// TestDisableServiceConfigOption: with WithDisableServiceConfig the
/// resolver's config (waitForReady for /foo/Bar) is ignored.
#[test]
fn disable_service_config_ignores_the_resolvers_config() {
    let r = manual("cc-go-disable-sc");
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.resolver.disable_service_config = true;
    let ch = channel(&rt, "cc-go-disable-sc:///non.existent", None, opts);
    ch.sync().unwrap();
    r.update(state(
        &[],
        Some(
            r#"{"methodConfig":[{"name":[{"service":"foo","method":"Bar"}],"waitForReady":true}]}"#,
        ),
    ))
    .unwrap();
    ch.sync().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let m = ch.method_config("/foo/Bar");
    assert!(
        m.as_ref().and_then(|m| m.wait_for_ready).is_none(),
        "resolver's config applied although disabled: {m:?}"
    );
}

/// TestMethodConfigDefaultService: a default config whose name is
/// {"service": ""} applies to every method.
#[test]
fn empty_service_name_in_default_config_applies_to_every_method() {
    let rt = Runtime::new().unwrap();
    let sc = r#"{"methodConfig":[{"name":[{"service":""}],"waitForReady":true}]}"#;
    let ch = channel(&rt, "ipv4:127.0.0.1:1", Some(sc), plaintext());
    assert!(
        wfr_true_within(&ch, "/foo/Bar", Duration::from_secs(1)),
        "default service config's {{service:\"\"}} entry not found for /foo/Bar: {:?}",
        ch.method_config("/foo/Bar")
    );
}

/// TestDefaultServiceConfig/invalid-service-config: gRPC-Go's NewClient
/// fails on WithDefaultServiceConfig("") (invalidDefaultServiceConfigErrPrefix),
/// as C-core's channel creation does. Deliberately switchyard reads empty
/// text as no default service config (`Channel::new` says so): the channel
/// starts IDLE, as with `None`. Pinned.
#[test]
fn an_empty_default_service_config_is_none() {
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "ipv4:127.0.0.1:1", Some(""), plaintext()).unwrap();
    assert_eq!(ch.state(), Idle);
    assert_eq!(ch.snapshot().unwrap().policy, "pick_first");
}

/// TestDefaultServiceConfig/resolver-service-config-disabled: the default
/// applies although the resolver sends "{}" (ignored, disabled).
#[test]
fn default_config_applies_when_resolver_config_is_disabled() {
    let r = manual("cc-go-default-disabled");
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.resolver.disable_service_config = true;
    let ch = channel(
        &rt,
        "cc-go-default-disabled:///non.existent",
        Some(WFR_FOO_BAR),
        opts,
    );
    ch.sync().unwrap();
    r.update(state(&["127.0.0.1:1".parse().unwrap()], Some("{}")))
        .unwrap();
    assert!(wfr_true_within(&ch, "/foo/bar", Duration::from_secs(1)));
}

/// TestDefaultServiceConfig/resolver-does-not-return-service-config.
#[test]
fn default_config_applies_when_resolver_has_none() {
    let r = manual("cc-go-default-none");
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        "cc-go-default-none:///non.existent",
        Some(WFR_FOO_BAR),
        plaintext(),
    );
    ch.sync().unwrap();
    r.update(state(&["127.0.0.1:1".parse().unwrap()], None))
        .unwrap();
    assert!(wfr_true_within(&ch, "/foo/bar", Duration::from_secs(1)));
}

/// The resolver's own (valid) config replaces the default entirely (Go's
/// applyServiceConfigAndBalancer; A21 step 4): "{}" leaves /foo/bar unset.
#[test]
fn resolvers_valid_config_replaces_the_default() {
    let r = manual("cc-go-default-replaced");
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        "cc-go-default-replaced:///x",
        Some(WFR_FOO_BAR),
        plaintext(),
    );
    ch.sync().unwrap();
    r.update(state(&["127.0.0.1:1".parse().unwrap()], Some("{}")))
        .unwrap();
    ch.sync().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        ch.method_config("/foo/bar").and_then(|m| m.wait_for_ready),
        None
    );
}

/// An invalid resolver config on the first resolution, with a default
/// configured. gRPC-Go (clientconn.go updateResolverStateAndUnlock:
/// `if cc.sc == nil { cc.applyFailingLBLocked(...) }`) and C-core put the
/// channel in TRANSIENT_FAILURE; gRFC A21 ("Service Config Channel
/// Arguments") says to fall back on the default. Pins Go's behaviour.
#[test]
fn invalid_first_resolver_config_fails_the_channel_as_grpc_go() {
    let server = echo_server();
    let r = manual("cc-go-default-invalid");
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        "cc-go-default-invalid:///x",
        Some(WFR_FOO_BAR),
        plaintext(),
    );
    ch.sync().unwrap();
    r.update(state(&[server.addr()], Some(r#"{"methodConfig":"nope"}"#)))
        .ok();
    ch.sync().unwrap();
    let e = call(&ch, false, Duration::from_secs(2));
    eprintln!(
        "state {:?}, call {:?}",
        ch.state(),
        e.as_ref().map(|_| "ok")
    );
    let e = e.expect_err("an invalid first config from the resolver did not fail calls");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

// ====================================================================
// clientconn_test.go: resolver updates that must not break the channel
// ====================================================================

/// TestResolverServiceConfigBeforeAddressNotPanic +
/// TestResolverEmptyUpdateNotPanic: a config-only update, then an empty
/// one, then addresses: the channel serves.
#[test]
fn config_only_and_empty_updates_then_addresses_serve() {
    let server = echo_server();
    let r = manual("cc-go-sc-before-addr");
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        "cc-go-sc-before-addr:///test.server",
        None,
        plaintext(),
    );
    ch.sync().unwrap();
    let rr = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
    r.update(state(&[], Some(rr))).ok();
    ch.sync().unwrap();
    r.update(ResolverState::default()).ok();
    ch.sync().unwrap();
    r.update(state(&[server.addr()], Some(rr))).unwrap();
    call(&ch, true, T).expect("call after addresses");
}

/// TestResolverServiceConfigWhileClosingNotPanic: Close races a resolver
/// update, ten times.
#[test]
fn resolver_update_racing_close_does_not_panic() {
    let rt = Runtime::new().unwrap();
    for i in 0..10 {
        let scheme = format!("cc-go-close-race-{i}");
        let r = manual(&scheme);
        let ch = channel(&rt, &format!("{scheme}:///test.server"), None, plaintext());
        ch.sync().unwrap();
        let rr = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
        let t1 = std::thread::spawn(move || ch.close());
        let t2 = std::thread::spawn(move || {
            let _ = r.update(state(&[], Some(rr)));
        });
        t1.join().expect("close panicked");
        t2.join().expect("update panicked");
    }
    // The runtime still works.
    let server = echo_server();
    let ch = channel(&rt, &format!("ipv4:{}", server.addr()), None, plaintext());
    call(&ch, true, T).expect("runtime still serves");
}

// ====================================================================
// TestUpdateAddresses_NoopIfCalledWithSameAddresses
// ====================================================================

/// pick_first is connecting to the second of three addresses (the first
/// closed at once); the resolver sends the same list again; when the
/// second fails, the third is tried: no new pass from the first address,
/// and the second is not tried again.
#[test]
fn same_addresses_while_connecting_do_not_restart_the_pass() {
    let release = Arc::new(AtomicBool::new(false));
    let s1 = Raw::start(close_at_once);
    let rel = release.clone();
    let s2 = Raw::start(move |mut s, i, stop| {
        if i == 0 {
            // Accept, stay silent until released, then close.
            keep_reading(&mut s, stop, || rel.load(Ordering::Acquire))
        } else {
            silent(s, i, stop)
        }
    });
    let s3 = Raw::start(silent);
    let r = manual("cc-go-same-addrs");
    let list = [s1.addr, s2.addr, s3.addr];
    r.set_initial_state(Some(state(&list, None)));
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.backoff = BackoffConfig {
        initial: Duration::from_secs(20),
        max: Duration::from_secs(20),
        min_connect_timeout: Duration::from_secs(20),
        ..BackoffConfig::default()
    };
    let ch = channel(
        &rt,
        "cc-go-same-addrs:///this-gets-overwritten",
        Some(r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#),
        opts,
    );
    s1.wait_accepted(1, T);
    s2.wait_accepted(1, T);
    let s3_before = s3.accepted();
    eprintln!("s3 attempts before the same-address push: {s3_before}");
    r.update(state(&list, None)).unwrap();
    ch.sync().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        s1.accepted(),
        1,
        "same addresses restarted the pass at the first"
    );
    release.store(true, Ordering::Release);
    s3.wait_accepted(s3_before.max(1), T);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        (s1.accepted(), s2.accepted()),
        (1, 1),
        "after the second failed: s1/s2 tried again (s3 before push: {s3_before})"
    );
}

// ====================================================================
// TestURLAuthorityEscape (clientconn.go encodeAuthority), end to end
// ====================================================================

struct SeesAuthority(Arc<Mutex<Vec<Option<String>>>>);
struct SeesAuthorityPolicy(Arc<Mutex<Vec<Option<String>>>>);

impl Builder for SeesAuthority {
    fn name(&self) -> &str {
        "cc_go_sees_authority"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(SeesAuthorityPolicy(self.0.clone()))
    }
}

impl Balancer for SeesAuthorityPolicy {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        _: ClientConnState,
    ) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push(cc.authority().map(str::to_string));
        cc.update_state(Connecting, Box::new(switchyard::picker::QueuePicker));
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

/// The authority a channel on `cc-go-authority:///<endpoint>` gives its
/// policy (`ClientConn::authority`), per row; mismatches listed.
fn authority_rows(rows: &[(&str, Option<&str>)]) -> Vec<String> {
    type Seen = Arc<Mutex<Vec<Option<String>>>>;
    static SEEN: std::sync::OnceLock<(ManualResolver, Seen)> = std::sync::OnceLock::new();
    let (_, seen) = SEEN.get_or_init(|| {
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        registry::register(Arc::new(SeesAuthority(seen.clone())));
        let r = manual("cc-go-authority");
        r.set_initial_state(Some(state(&["127.0.0.1:1".parse().unwrap()], None)));
        (r, seen)
    });
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"loadBalancingConfig":[{"cc_go_sees_authority":{}}]}"#;
    let mut bad = Vec::new();
    for &(endpoint, want) in rows {
        let target = format!("cc-go-authority:///{endpoint}");
        let before = seen.lock().unwrap().len();
        let got = match Channel::new(&rt, &target, Some(cfg), plaintext()) {
            Err(e) => format!("Channel::new refused: {e}"),
            Ok(ch) => {
                ch.connect().unwrap();
                let end = Instant::now() + T;
                loop {
                    ch.sync().unwrap();
                    if let Some(a) = seen.lock().unwrap().get(before) {
                        break format!("{a:?}");
                    }
                    if Instant::now() > end {
                        break "nothing seen".to_string();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        eprintln!("{target}: {got}");
        if got != format!("{want:?}") {
            bad.push(format!("{endpoint}: want {want:?}, got {got}"));
        }
    }
    bad
}

/// TestURLAuthorityEscape rows with a plain host: kept as they are.
#[test]
fn custom_scheme_default_authority_plain_host_kept() {
    let bad = authority_rows(&[("[::1]", Some("[::1]")), ("host:10001", Some("host:10001"))]);
    assert!(bad.is_empty(), "{bad:#?}");
}

/// TestURLAuthorityEscape/with_multiple_slashes: gRPC-Go's default
/// authority of a custom-scheme target is its endpoint with '/' escaped
/// (clientconn.go encodeAuthority: "projects%2F123%2Fnetwork%2Fabc%2Fservice");
/// C-core's ResolverFactory::GetDefaultAuthority does the same
/// (URI::PercentEncodeAuthority). The `http` crate that builds switchyard's
/// requests takes no '%' in an authority: deliberately no default
/// authority then (each connection's address is sent instead), pinned.
/// TestURLAuthorityEscape/with_user_and_host and all_possible_allowed_chars:
/// gRPC-Go keeps userinfo in the authority; RFC 9113 8.3.1 forbids it in
/// `:authority`, and switchyard gives none (pinned).
#[test]
fn custom_scheme_endpoints_no_authority_can_carry_give_none() {
    let bad = authority_rows(&[
        ("projects/123/network/abc/service", None),
        ("userinfo@host:10001", None),
        ("abc123-._~!$&'()*+,;=@:[]", None),
    ]);
    assert!(bad.is_empty(), "{bad:#?}");
}
