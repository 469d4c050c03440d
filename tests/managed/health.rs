//! Client-side health checking (gRFC A17) against the in-process server.

use crate::support::*;
use std::time::Duration;
use switchyard::transport::health_proto::{NOT_SERVING, SERVING};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::ServerOptions;

#[test]
fn not_serving_backend_is_excluded_only_with_health_checking() {
    not_serving_is_excluded_only_with_health_checking(&mut InProcess::start(3));
}

/// The first status gates READY; flaps move the subchannel between READY and
/// TRANSIENT_FAILURE on the same connection, well past the connect deadline.
#[test]
fn health_flaps_never_cost_the_connection() {
    let servers = start_servers(1);
    servers[0].set_serving("", NOT_SERVING);
    let rt = Runtime::new().unwrap();
    let (mut opts, seen) = recorded_plaintext();
    opts.backoff.min_connect_timeout = Duration::from_millis(100);
    let ch = channel(&rt, &target(&servers), RR_HEALTH, opts);
    wait_state(&ch, TransientFailure);
    let e = pick_error(&ch);
    assert!(
        e.contains("health check") && e.contains("NOT_SERVING"),
        "{e}"
    );
    // Past the connect deadline (the later of the first backoff, the
    // default 1 s ±20 %, and 100 ms): cancelled when the transport came up.
    std::thread::sleep(Duration::from_millis(1500));
    let requests = servers[0].requests();
    for _ in 0..2 {
        servers[0].set_serving("", SERVING);
        wait_state(&ch, Ready);
        assert_eq!(echo(&mut ch.reader(), false).unwrap(), servers[0].port());
        servers[0].set_serving("", NOT_SERVING);
        wait_state(&ch, TransientFailure);
    }
    let sc = seen.all()[0].sc;
    assert_eq!(
        seen.states_of(sc),
        [
            Connecting,
            TransientFailure,
            Ready,
            TransientFailure,
            Ready,
            TransientFailure
        ]
    );
    // Two echoes and no new Watch: the same stream carried every flap.
    assert_eq!(servers[0].requests(), requests + 2);
}

#[test]
fn a_server_without_the_health_service_counts_as_healthy() {
    missing_health_service_counts_as_healthy(&InProcess::start_with(
        3,
        ServerOptions {
            no_health: true,
            ..Default::default()
        },
    ));
}

#[test]
fn unknown_health_service_is_unhealthy() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let config = r#"{"loadBalancingConfig":[{"round_robin":{}}],
                     "healthCheckConfig":{"serviceName":"no.Such"}}"#;
    let ch = channel(&rt, &target(&servers), Some(config), plaintext());
    wait_state(&ch, TransientFailure);
    let e = pick_error(&ch);
    assert!(e.contains("SERVICE_UNKNOWN"), "{e}");
    servers[0].set_serving("no.Such", SERVING);
    wait_state(&ch, Ready);
}

/// A Watch that ends (not UNIMPLEMENTED) is TRANSIENT_FAILURE until a new
/// stream reports; after a stream that had delivered a status the retry is
/// immediate, and the connection stays.
#[test]
fn a_broken_watch_is_reopened_on_the_same_connection() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let (mut opts, seen) = recorded_plaintext();
    // Far longer than the test: only the immediate retry can bring it back.
    opts.backoff.initial = Duration::from_secs(30);
    let ch = channel(&rt, &target(&servers), RR_HEALTH, opts);
    wait_state(&ch, Ready);
    servers[0].break_health_watches();
    let broken = seen.wait_for("the broken stream's failure", |s| {
        s.state == TransientFailure
    });
    let why = broken.error.unwrap();
    assert!(
        why.contains("health check RPC error") && why.contains("retrying"),
        "{why}"
    );
    let back = seen.wait_for("READY again", |s| s.state == Ready && s.at > broken.at);
    assert!(back.at - broken.at < Duration::from_secs(1));
    // CONNECTING while the new stream opens (gRPC-Go's health client).
    assert_eq!(
        seen.states_of(broken.sc),
        [Connecting, Ready, TransientFailure, Connecting, Ready]
    );
}

/// A Watch that fails at once (UNAVAILABLE, no status delivered) is opened
/// again after gRPC's backoff, 1 s then ×1.6 (gRPC-Go's health client:
/// `backoff.DefaultExponential`; C-core's the same numbers), not the
/// channel's connection backoff, here 50 ms. The connection stays.
#[test]
fn a_failed_watch_is_reopened_after_grpcs_backoff_not_the_channels() {
    let server = &start_servers_with(
        1,
        ServerOptions {
            health_fail: Some(14),
            ..Default::default()
        },
    )[0];
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &target(std::slice::from_ref(server)),
        RR_HEALTH,
        plaintext_fast_backoff(),
    );
    ch.connect().unwrap();
    wait_until("the first watch", || server.health_watches() >= 1);
    // The channel's 50 ms backoff would have opened three more by now;
    // gRPC's waits 0.8-1.2 s, then 1.28-1.92 s (room for a slow sleep).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.health_watches() <= 2,
        "reopened on the channel's backoff"
    );
    wait_until("the second watch", || server.health_watches() >= 2);
    let second = std::time::Instant::now();
    wait_until("the third watch", || server.health_watches() >= 3);
    assert!(
        second.elapsed() >= Duration::from_millis(600),
        "the second retry waited {:?}",
        second.elapsed()
    );
    assert_eq!(ch.state(), TransientFailure);
    assert_eq!(server.connections(), 1, "one connection throughout");
}

/// Turning health checking on and off with a service config update applies
/// to connections already up.
#[test]
fn health_checking_follows_service_config_updates() {
    let servers = start_servers(2);
    servers[1].set_serving("", NOT_SERVING);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), RR, plaintext());
    let mut r = ch.reader();
    warm_up(&mut r, 2);
    let ports = [servers[0].port(), servers[1].port()];
    ch.update_service_config(RR_HEALTH.unwrap()).unwrap();
    wait_until("the unhealthy backend to leave the rotation", || {
        split(&mut r, 10).len() == 1
    });
    assert_split(&split(&mut r, 50), &ports[..1], 50);
    ch.update_service_config(RR.unwrap()).unwrap();
    wait_serves(
        &mut r,
        ports[1],
        "the backend to rejoin with health checking off",
    );
    assert_split(&split(&mut r, 100), &ports, 50);
}

/// gRFC A17: a top-level pick_first never health-checks.
#[test]
fn top_level_pick_first_ignores_health_check_config() {
    let servers = start_servers(1);
    servers[0].set_serving("", NOT_SERVING);
    let rt = Runtime::new().unwrap();
    let config = r#"{"healthCheckConfig":{"serviceName":""}}"#;
    let ch = channel(&rt, &target(&servers), Some(config), plaintext());
    assert_eq!(echo(&mut ch.reader(), true).unwrap(), servers[0].port());
}

/// `disable_health_check` (gRPC-Go's `WithDisableHealthCheck`): a config
/// asking for health checks gets none, so a NOT_SERVING backend serves and
/// no Watch is ever opened.
#[test]
fn a_channel_with_health_checking_disabled_never_checks() {
    let servers = start_servers(1);
    servers[0].set_serving("", NOT_SERVING);
    let rt = Runtime::new().unwrap();
    let opts = ChannelOptions {
        disable_health_check: true,
        ..plaintext()
    };
    let ch = channel(&rt, &target(&servers), RR_HEALTH, opts);
    let before = servers[0].requests();
    assert_eq!(echo(&mut ch.reader(), true).unwrap(), servers[0].port());
    // The echo alone: no Watch was opened.
    assert_eq!(servers[0].requests(), before + 1);
    // The same config without the option: health-checked, so unusable.
    let checked = channel(&rt, &target(&servers), RR_HEALTH, plaintext());
    wait_state(&checked, TransientFailure);
}

/// Health checking over a unix socket: the Watch's :authority is the
/// connection's ("localhost"), not the raw `unix:` address, which is no valid
/// authority (the Watch could never start and the backend stayed unhealthy).
#[test]
fn health_checking_works_over_a_unix_socket() {
    use switchyard_testserver::{Listen, TestServer};
    let dir = std::env::temp_dir().join(format!("switchyard-uh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("health.sock");
    let server = TestServer::start(Listen::Unix(path.clone()), ServerOptions::default()).unwrap();
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("unix://{}", path.display()),
        RR_HEALTH,
        plaintext(),
    );
    let resp = ch.reader().unary(
        "/echo.Echo/Unary",
        b"u",
        &CallOptions {
            wait_for_ready: Some(true),
            deadline: Some(std::time::Instant::now() + Duration::from_secs(5)),
            ..Default::default()
        },
    );
    assert!(resp
        .expect("healthy over unix")
        .message
        .starts_with(b"u|port="));
    // The Watch and the call both reached the server.
    assert!(server.requests() >= 2);
    server.set_serving("", NOT_SERVING);
    wait_state(&ch, TransientFailure);
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}
