//! ORCA load reports (gRFC A51) feeding weighted_round_robin over real
//! connections to the test servers on 127.0.0.1: out of band (the
//! `StreamCoreMetrics` stream each READY subchannel keeps open when the
//! config asks for it), and per call on failed calls too.

use crate::support::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::*;
use switchyard_testserver::{OrcaLoad, ServerOptions, TestServer};

/// Weights are used at once (no blackout) and recomputed every 100 ms.
fn wrr(oob: bool) -> String {
    format!(
        r#"{{"loadBalancingConfig":[{{"weighted_round_robin":{{
            "enableOobLoadReport":{oob},"oobReportingPeriod":"0.02s",
            "blackoutPeriod":"0s","weightUpdatePeriod":"0.1s"}}}}]}}"#
    )
}

/// Servers that honour report intervals down to 10 ms.
fn fast_orca() -> ServerOptions {
    ServerOptions {
        orca_min_interval: Some(Duration::from_millis(10)),
        ..Default::default()
    }
}

/// Utilization `util` at 100 qps: WRR weighs it 100 / util.
fn load(util: f64) -> OrcaLoad {
    OrcaLoad {
        application_utilization: util,
        rps_fractional: 100.0,
        ..Default::default()
    }
}

/// `n` echo calls, counted per backend (in `servers` order).
fn spread(r: &mut Reader, servers: &[TestServer], n: usize) -> Vec<usize> {
    let mut counts = vec![0; servers.len()];
    for _ in 0..n {
        let port = echo(r, true).unwrap();
        let i = servers.iter().position(|s| s.port() == port).unwrap();
        counts[i] += 1;
    }
    counts
}

/// Rounds of `n` calls until backend 1's share reaches `share` (bounded);
/// returns the last round's counts.
fn until_share(r: &mut Reader, servers: &[TestServer], share: f64) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts = spread(r, servers, 200);
        if counts[1] as f64 >= share * 200.0 || Instant::now() > deadline {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Backend 0 at utilization 0.8 (weight 125), backend 1 at 0.2 (weight
/// 500): with OOB reports only (no per-call trailer anywhere), about 80 %
/// of the calls go to backend 1. The stream asks for the configured
/// period, and is not a call: snapshots count only the echo calls.
#[test]
fn oob_reports_shift_traffic_to_the_less_loaded_backend() {
    let servers = start_servers_with(2, fast_orca());
    servers[0].set_load(load(0.8));
    servers[1].set_load(load(0.2));
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), Some(&wrr(true)), plaintext());
    let mut r = ch.reader();
    warm_up(&mut r, 2);
    let counts = until_share(&mut r, &servers, 0.75);
    assert!(
        counts[1] as f64 >= 0.7 * 200.0 && counts[1] as f64 <= 0.9 * 200.0,
        "backend 1 should take about 80 % of the calls: {counts:?}"
    );
    for s in &servers {
        assert_eq!(s.orca_streams(), 1, "one stream per connection");
        assert_eq!(s.orca_interval(), Some(Duration::from_millis(20)));
    }
    // The load moves: so do the calls.
    servers[0].set_load(load(0.1));
    servers[1].set_load(load(0.9));
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let c = spread(&mut r, &servers, 200);
        if c[0] >= 150 || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        counts[0] >= 150,
        "backend 0 is now the light one: {counts:?}"
    );
    // Snapshots count calls, and the streams are none of them.
    let snap = ch.snapshot().unwrap();
    let started: u64 = snap.subchannels.iter().map(|s| s.calls_started).sum();
    let served: u64 = servers.iter().map(|s| s.requests()).sum::<u64>() - 2;
    assert_eq!(started, served, "the two ORCA streams are not calls");
    assert!(snap.subchannels.iter().all(|s| s.calls_in_flight == 0));
}

/// OOB off: no stream is ever opened (the servers count them).
#[test]
fn oob_off_never_opens_an_orca_stream() {
    let servers = start_servers_with(2, fast_orca());
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), Some(&wrr(false)), plaintext());
    let mut r = ch.reader();
    spread(&mut r, &servers, 50);
    std::thread::sleep(Duration::from_millis(100));
    spread(&mut r, &servers, 50);
    assert_eq!(servers[0].orca_streams() + servers[1].orca_streams(), 0);
}

/// A server without the ORCA service answers UNIMPLEMENTED: one attempt
/// per connection, never retried, and the channel serves as plain round
/// robin. A new connection asks again, once.
#[test]
fn unimplemented_orca_is_tried_once_per_connection_and_the_channel_serves() {
    let servers = start_servers_with(
        2,
        ServerOptions {
            no_orca: true,
            ..fast_orca()
        },
    );
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), Some(&wrr(true)), plaintext());
    let mut r = ch.reader();
    warm_up(&mut r, 2);
    for _ in 0..5 {
        assert_eq!(spread(&mut r, &servers, 40), vec![20, 20]);
        std::thread::sleep(Duration::from_millis(60));
    }
    assert_eq!(servers[0].orca_streams(), 1);
    assert_eq!(servers[1].orca_streams(), 1);
    // GOAWAY: backend 0's next connection asks once more.
    servers[0].goaway();
    wait_until("backend 0 reconnected and asked again", || {
        let _ = echo(&mut r, true);
        servers[0].orca_streams() == 2
    });
    std::thread::sleep(Duration::from_millis(100));
    spread(&mut r, &servers, 20);
    assert_eq!(servers[0].orca_streams(), 2);
}

/// Every call fails (RESOURCE_EXHAUSTED), each with the server's load
/// report attached: backend 0 reports 100 eps, backend 1 none, both 100
/// qps at utilization 0.5. The failed calls' reports count, eps and all:
/// weights 100 / (0.5 + 1) against 100 / 0.5, so backend 1 takes 3/4 of
/// the calls (before, reports on failed calls were dropped: an even split).
#[test]
fn load_reports_on_failed_calls_weigh_the_endpoints() {
    let servers = start_servers(2);
    let errors = |eps| OrcaLoad {
        cpu_utilization: 0.5,
        rps_fractional: 100.0,
        eps,
        ..Default::default()
    };
    servers[0].set_call_load(Some(errors(100.0)));
    servers[1].set_call_load(Some(errors(0.0)));
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), Some(&wrr(false)), plaintext());
    let mut r = ch.reader();
    let metadata = [("x-respond-status".to_string(), "8".to_string())];
    let fail = |r: &mut Reader| {
        let opts = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            wait_for_ready: Some(true),
            metadata: &metadata,
            ..Default::default()
        };
        let e = r.unary("/echo.Echo/Unary", b"x", &opts).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    };
    let requests = |s: &[TestServer]| [s[0].requests(), s[1].requests()];
    let deadline = Instant::now() + Duration::from_secs(10);
    let share = loop {
        let before = requests(&servers);
        for _ in 0..200 {
            fail(&mut r);
        }
        let after = requests(&servers);
        let share = (after[1] - before[1]) as f64 / 200.0;
        if share >= 0.7 || Instant::now() > deadline {
            break share;
        }
        std::thread::sleep(Duration::from_millis(150));
    };
    assert!(
        (0.7..=0.8).contains(&share),
        "backend 1 should take 3/4 of the calls, took {share}"
    );
}

/// An open ORCA stream does not keep a channel in use: with no call for
/// two idle timeouts it goes IDLE, stream and connections closed.
#[test]
fn an_orca_stream_does_not_keep_the_channel_out_of_idle() {
    const IDLE: Duration = Duration::from_secs(60);
    let server = &start_servers_with(1, fast_orca())[0];
    let clock = Arc::new(ManualClock::new());
    let rt = Runtime::with_config(RuntimeConfig {
        clock: clock.clone(),
        seed: Some(7),
    })
    .unwrap();
    let opts = ChannelOptions {
        idle_timeout: Some(IDLE),
        ..plaintext()
    };
    let target = format!("ipv4:127.0.0.1:{}", server.port());
    let ch = Channel::new(&rt, &target, Some(&wrr(true)), opts).unwrap();
    let mut r = ch.reader();
    assert_eq!(echo(&mut r, true).unwrap(), server.port());
    wait_until("the ORCA stream is open", || {
        server.orca_streams() == 1 && server.in_flight() == 1
    });
    for _ in 0..2 {
        clock.advance(IDLE + Duration::from_secs(1));
        ch.sync().unwrap();
        ch.sync().unwrap();
    }
    assert_eq!(ch.state(), ConnectivityState::Idle);
    // The server's handler of the stream ends after its connection task
    // (it is told of the close by that task): both are waited for.
    wait_until("the connection closed, the stream with it", || {
        server.connections() == 0 && server.in_flight() == 0
    });
}

/// The stream lives while it is wanted: a config that switches OOB off
/// closes it (the connection stays), switching it on opens a new one, and
/// a removed endpoint's goes with its connection.
#[test]
fn the_stream_follows_the_config_and_the_endpoints() {
    let servers = start_servers_with(2, fast_orca());
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), Some(&wrr(true)), plaintext());
    warm_up(&mut ch.reader(), 2);
    let streaming = |s: &TestServer, opened: u64| s.orca_streams() == opened && s.in_flight() == 1;
    wait_until("both streams open", || {
        servers.iter().all(|s| streaming(s, 1))
    });
    ch.update_service_config(&wrr(false)).unwrap();
    wait_until("both streams closed", || {
        servers.iter().all(|s| s.in_flight() == 0)
    });
    assert!(servers.iter().all(|s| s.connections() == 1));
    ch.update_service_config(&wrr(true)).unwrap();
    wait_until("both streams open again", || {
        servers.iter().all(|s| streaming(s, 2))
    });
    ch.update_addresses(vec![Address::new(servers[1].addr().to_string())])
        .unwrap();
    wait_until("backend 0's connection closed", || {
        servers[0].connections() == 0 && servers[0].in_flight() == 0
    });
    assert!(streaming(&servers[1], 2), "backend 1's stream stays");
}

/// A stream that fails (UNAVAILABLE at once, no report) is opened again
/// after gRPC's backoff, 1 s and then ×1.6 (gRPC-Go's ORCA producer:
/// `backoff.DefaultExponential`), not the channel's connection backoff,
/// here 50 ms.
#[test]
fn a_failed_stream_is_reopened_after_grpcs_backoff_not_the_channels() {
    let server = &start_servers_with(
        1,
        ServerOptions {
            orca_fail: Some(14),
            ..fast_orca()
        },
    )[0];
    let rt = Runtime::new().unwrap();
    let target = format!("ipv4:127.0.0.1:{}", server.port());
    let ch = channel(&rt, &target, Some(&wrr(true)), plaintext_fast_backoff());
    let mut r = ch.reader();
    warm_up(&mut r, 1);
    wait_until("the first stream", || server.orca_streams() >= 1);
    // The channel's 50 ms backoff would have opened three more by now;
    // gRPC's waits 0.8-1.2 s, then 1.28-1.92 s (room for a slow sleep).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.orca_streams() <= 2,
        "reopened on the channel's backoff"
    );
    wait_until("the second stream", || server.orca_streams() >= 2);
    let second = Instant::now();
    wait_until("the third stream", || server.orca_streams() >= 3);
    // At least 1.28 s, less the polling slack: far from the channel's
    // 50 ms × 1.6^n.
    assert!(
        second.elapsed() >= Duration::from_millis(600),
        "the second retry waited {:?}",
        second.elapsed()
    );
    // The channel serves all the while.
    assert_eq!(echo(&mut r, true).unwrap(), server.port());
}

/// The stream follows the connection, not its health (gRPC-Go's WRR
/// listens on the SubConn its raw state listener saw READY, health coming
/// apart through pickfirst's health listener): a backend connected but
/// NOT_SERVING gets its stream, and health flaps neither close it nor
/// open another.
#[test]
fn the_stream_follows_the_connection_not_its_health() {
    use switchyard::transport::health_proto::{NOT_SERVING, SERVING};
    let server = &start_servers_with(1, fast_orca())[0];
    server.set_serving("", NOT_SERVING);
    let config = r#"{"loadBalancingConfig":[{"weighted_round_robin":{
        "enableOobLoadReport":true,"oobReportingPeriod":"0.02s"}}],
        "healthCheckConfig":{"serviceName":""}}"#;
    let rt = Runtime::new().unwrap();
    let target = format!("ipv4:127.0.0.1:{}", server.port());
    let ch = channel(&rt, &target, Some(config), plaintext());
    // The health Watch and the ORCA stream, on a channel that cannot serve.
    wait_until("the stream opened on the unhealthy connection", || {
        server.orca_streams() == 1 && server.in_flight() == 2
    });
    assert_ne!(ch.state(), ConnectivityState::Ready);
    server.set_serving("", SERVING);
    let mut r = ch.reader();
    assert_eq!(echo(&mut r, true).unwrap(), server.port());
    server.set_serving("", NOT_SERVING);
    wait_until("unhealthy again", || {
        ch.state() == ConnectivityState::TransientFailure
    });
    server.set_serving("", SERVING);
    assert_eq!(echo(&mut r, true).unwrap(), server.port());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.orca_streams(), 1, "the one stream ran throughout");
    assert_eq!(server.connections(), 1);
}
