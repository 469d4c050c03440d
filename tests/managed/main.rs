//! The managed connector against real HTTP/2 gRPC servers on 127.0.0.1:
//! READY means SETTINGS arrived, RPCs balance exactly, failover, TLS, deadlines,
//! backoff.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use switchyard::backoff::BackoffConfig;
use switchyard::transport::testserver::{Listen, ServerOptions, TestServer};
use switchyard::ConnectivityState::*;
use switchyard::*;

#[test]
fn round_robin_splits_300_rpcs_exactly() {
    let servers = start_servers(3);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), RR, plaintext());
    let mut r = ch.reader();
    warm_up(&mut r, 3);
    let mut per: HashMap<u16, usize> = HashMap::new();
    for _ in 0..300 {
        *per.entry(echo(&mut r, true).unwrap()).or_default() += 1;
    }
    assert_eq!(per.len(), 3);
    assert!(per.values().all(|n| *n == 100), "{per:?}");
}

#[test]
fn pick_first_uses_one_backend_and_ready_means_settings() {
    let servers = start_servers(2);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), None, plaintext());
    let mut r = ch.reader();
    let first = echo(&mut r, true).unwrap();
    assert_eq!(first, servers[0].port());
    for _ in 0..20 {
        assert_eq!(echo(&mut r, false).unwrap(), first);
    }
    assert_eq!(ch.state(), Ready);
}

#[test]
fn stopped_backend_fails_over_without_failed_rpcs_and_rejoins() {
    let mut servers = start_servers(3);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), RR, plaintext_fast_backoff());
    let mut r = ch.reader();
    warm_up(&mut r, 3);
    let victim = servers.remove(1);
    let port = victim.port();
    victim.stop();
    let mut per: HashMap<u16, usize> = HashMap::new();
    for _ in 0..200 {
        *per.entry(echo(&mut r, true).expect("wait-for-ready RPCs never fail"))
            .or_default() += 1;
    }
    // After the loss is noticed, only the survivors serve.
    let late: Vec<u16> = (0..60).map(|_| echo(&mut r, true).unwrap()).collect();
    assert!(!late.contains(&port), "stopped backend still picked");
    assert_eq!(late.iter().filter(|p| **p == servers[0].port()).count(), 30);

    let back = TestServer::start(
        Listen::Tcp(format!("127.0.0.1:{port}").parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "restarted backend never rejoined"
        );
        if (0..30).any(|_| echo(&mut r, true).unwrap() == port) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(back);
}

#[test]
fn connect_deadline_fails_a_silent_listener() {
    let hole = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions {
            black_hole: true,
            ..Default::default()
        },
    )
    .unwrap();
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.backoff = BackoffConfig {
        initial: Duration::from_millis(50),
        min_connect_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let ch = channel(&rt, &format!("ipv4:{}", hole.addr()), None, opts);
    wait_state(&ch, TransientFailure);
    let e = ch.reader().try_pick(&PickInfo::default()).unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
}

#[test]
fn refused_connections_back_off_by_1_6_with_jitter() {
    let port = free_port();
    let rt = Runtime::new().unwrap();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s2 = starts.clone();
    let mut opts = plaintext();
    opts.backoff = BackoffConfig {
        initial: Duration::from_millis(100),
        ..Default::default()
    };
    opts.on_subconn_state = Some(Arc::new(move |_, st: &SubConnState| {
        if st.state == Connecting {
            s2.lock().unwrap().push(Instant::now());
        }
    }));
    let _ch = channel(&rt, &format!("ipv4:127.0.0.1:{port}"), None, opts);
    let deadline = Instant::now() + Duration::from_secs(10);
    while starts.lock().unwrap().len() < 6 {
        assert!(Instant::now() < deadline, "too few attempts");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = starts.lock().unwrap().clone();
    let mut nominal = 0.1;
    for (k, w) in t.windows(2).take(5).enumerate() {
        let got = (w[1] - w[0]).as_secs_f64();
        let (lo, hi) = if k == 0 {
            (nominal, nominal)
        } else {
            (nominal * 0.8, nominal * 1.2)
        };
        assert!(
            got >= lo - 0.002 && got <= hi + 0.05,
            "interval {k}: {got:.3}s, want {lo:.3}..{hi:.3}"
        );
        nominal *= 1.6;
    }
}

#[test]
fn tls_with_the_right_ca_works_and_a_wrong_ca_says_why() {
    let pki = TestPki::new();
    let server = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions {
            tls: Some(pki.server_tls()),
            ..Default::default()
        },
    )
    .unwrap();
    let rt = Runtime::new().unwrap();
    let tls = |roots: Vec<u8>| ChannelOptions {
        transport: Some(TransportConfig {
            tls: Some(TlsSettings {
                server_name: "localhost".into(),
                roots_pem: Some(roots),
                client_cert: None,
            }),
            keepalive: None,
        }),
        ..Default::default()
    };
    let good = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        None,
        tls(pki.ca_pem.clone()),
    );
    assert_eq!(echo(&mut good.reader(), true).unwrap(), server.port());

    let bad = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        None,
        tls(TestPki::new().ca_pem),
    );
    wait_state(&bad, TransientFailure);
    let e = bad.reader().try_pick(&PickInfo::default()).unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
}

#[test]
fn goaway_moves_calls_to_a_new_connection() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), RR, plaintext());
    let mut r = ch.reader();
    echo(&mut r, true).unwrap();
    servers[0].goaway();
    for _ in 0..50 {
        echo(&mut r, true).expect("calls survive a graceful GOAWAY");
    }
}

#[test]
fn deadline_and_errors_come_back_as_statuses() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), None, plaintext());
    let mut r = ch.reader();
    echo(&mut r, true).unwrap();
    let md = vec![("x-delay-ms".to_string(), "500".to_string())];
    let e = r
        .unary(
            "/echo.Echo/Unary",
            b"x",
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_millis(50)),
                metadata: &md,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    let md = vec![
        ("x-respond-status".to_string(), "5".to_string()),
        ("x-respond-message".to_string(), "no such thing".to_string()),
    ];
    let e = r
        .unary(
            "/echo.Echo/Unary",
            b"x",
            &CallOptions {
                metadata: &md,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "no such thing"));
}

#[test]
fn host_managed_channels_do_not_carry_rpcs() {
    struct Nop;
    impl HostTransport for Nop {
        fn connect(&self, _: &Arc<SubConn>) {}
        fn shutdown(&self, _: &Arc<SubConn>) {}
    }
    let rt = Runtime::new().unwrap();
    let opts = ChannelOptions {
        connector: Some(Box::new(ExternalConnector::new(Arc::new(Nop)))),
        ..Default::default()
    };
    let ch = Channel::new(&rt, "", None, opts).unwrap();
    let e = ch
        .reader()
        .unary("/x.Y/Z", b"", &CallOptions::default())
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}

#[test]
fn unix_and_ipv6_targets() {
    let dir = std::env::temp_dir().join(format!("switchyard-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let unix = TestServer::start(Listen::Unix(path.clone()), ServerOptions::default()).unwrap();
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("unix://{}", path.display()),
        None,
        plaintext(),
    );
    let resp = ch
        .reader()
        .unary(
            "/echo.Echo/Unary",
            b"u",
            &CallOptions {
                wait_for_ready: true,
                deadline: Some(Instant::now() + Duration::from_secs(10)),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(resp.message.starts_with(b"u|port="));
    drop(unix);
    std::fs::remove_dir_all(&dir).ok();

    // IPv6 loopback, where the machine has it.
    if let Ok(v6) = TestServer::start(
        Listen::Tcp("[::1]:0".parse().unwrap()),
        ServerOptions::default(),
    ) {
        let ch = channel(&rt, &format!("ipv6:[::1]:{}", v6.port()), None, plaintext());
        assert_eq!(echo(&mut ch.reader(), true).unwrap(), v6.port());
    }
}
