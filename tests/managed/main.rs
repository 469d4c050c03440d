//! The managed connector against real HTTP/2 gRPC servers on 127.0.0.1:
//! READY means SETTINGS arrived, RPCs balance exactly, failover, TLS, deadlines,
//! backoff.

mod calls;
#[path = "../common/mod.rs"]
mod common;
mod dns;
mod drain;
mod health;
mod hedging;
mod idle;
mod least_request_random;
mod orca;
mod retry;
mod service_config;
mod support;
mod switch;
mod transitions;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestPki, TestServer};

#[test]
fn round_robin_splits_300_rpcs_exactly() {
    rr_splits_300_exactly(&InProcess::start(3));
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
    stopped_backend_fails_over_and_rejoins(&mut InProcess::start(3));
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
    silent_listener_fails_at_the_connect_deadline(hole.addr());
}

#[test]
fn refused_connections_back_off_by_1_6_with_jitter() {
    common::refused_connections_back_off_by_1_6_with_jitter();
}

#[test]
fn tls_with_the_right_ca_works_and_a_wrong_ca_says_why() {
    let pki = TestPki::new();
    let server = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions {
            tls: Some(server_tls(&pki)),
            ..Default::default()
        },
    )
    .unwrap();
    tls_right_ca_works_wrong_ca_says_why(server.addr(), &pki.ca_pem);
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

/// `unix-abstract:name` reaches a server on the Linux abstract socket of
/// that name (no file involved).
#[test]
#[cfg(target_os = "linux")]
fn unix_abstract_target() {
    let name = format!("switchyard-abstract-{}", std::process::id());
    let server =
        TestServer::start(Listen::UnixAbstract(name.clone()), ServerOptions::default()).unwrap();
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &format!("unix-abstract:{name}"), None, plaintext());
    let resp = ch
        .reader()
        .unary(
            "/echo.Echo/Unary",
            b"a",
            &CallOptions {
                wait_for_ready: Some(true),
                deadline: Some(Instant::now() + Duration::from_secs(10)),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(resp.message.starts_with(b"a|"));
    drop(server);
    // Nobody listens there any more: a clear connection error, not a file
    // path mistaken for the name.
    let ch = channel(
        &rt,
        &format!("unix-abstract:{name}-none"),
        None,
        plaintext(),
    );
    let e = ch
        .reader()
        .unary(
            "/echo.Echo/Unary",
            b"a",
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(10)),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
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
                wait_for_ready: Some(true),
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

#[test]
fn mutual_tls_presents_the_client_certificate() {
    let pki = TestPki::new();
    let mut tls = pki.server_tls(&[b"h2"]);
    tls.client_ca_pem = Some(pki.ca_pem.clone());
    let opts = ServerOptions {
        tls: Some(tls),
        ..Default::default()
    };
    let server = TestServer::start(Listen::Tcp("127.0.0.1:0".parse().unwrap()), opts).unwrap();
    let rt = Runtime::new().unwrap();
    let with = |client_cert: Option<(Vec<u8>, Vec<u8>)>| ChannelOptions {
        transport: Some(TransportConfig::tls(TlsSettings {
            server_name: "localhost".into(),
            roots_pem: Some(pki.ca_pem.clone()),
            client_cert,
        })),
        ..Default::default()
    };
    let target = format!("ipv4:{}", server.addr());
    let mtls = channel(
        &rt,
        &target,
        None,
        with(Some((pki.client_cert.clone(), pki.client_key.clone()))),
    );
    assert_eq!(echo(&mut mtls.reader(), true).unwrap(), server.port());

    // Without a certificate the server refuses the connection.
    let anonymous = channel(&rt, &target, None, with(None));
    let e = anonymous
        .reader()
        .unary(
            "/echo.Echo/Unary",
            b"x",
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_millis(500)),
                wait_for_ready: Some(false),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{e:?}"
    );
    assert_ne!(anonymous.state(), Ready);
}

/// A stream the server refused (REFUSED_STREAM) is retried transparently on
/// the same, still healthy connection: the call succeeds instead of waiting
/// for a picker that never changes (pick_first: the only connection).
#[test]
fn refused_stream_is_retried_on_the_same_connection() {
    let servers = start_servers_with(
        1,
        ServerOptions {
            refuse_streams: 1,
            ..Default::default()
        },
    );
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), None, plaintext());
    let mut r = ch.reader();
    let resp = r
        .unary(
            "/echo.Echo/Unary",
            b"ping",
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(5)),
                wait_for_ready: Some(true),
                ..Default::default()
            },
        )
        .expect("a refused stream is retried");
    assert!(resp.message.starts_with(b"ping|port="));
    // Both attempts reached the server: the first was refused, not lost.
    assert_eq!(servers[0].requests(), 2);
    assert_eq!(ch.state(), Ready);
}

/// gRPC's ResetConnectBackoff: a subchannel waiting out a 30 s backoff
/// after a refused connection tries again at once, and the backend that has
/// come up meanwhile serves.
#[test]
fn reset_connect_backoff_reconnects_at_once() {
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rt = Runtime::new().unwrap();
    let mut opts = plaintext();
    opts.backoff.initial = Duration::from_secs(30);
    opts.backoff.max = Duration::from_secs(30);
    let ch = channel(&rt, &format!("ipv4:{addr}"), None, opts);
    wait_state(&ch, ConnectivityState::TransientFailure);
    let server = TestServer::start(Listen::Tcp(addr), ServerOptions::default()).unwrap();
    // The backoff holds: no new attempt comes.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ch.state(), ConnectivityState::TransientFailure);
    assert_eq!(server.connections(), 0);
    ch.reset_connect_backoff().unwrap();
    wait_state(&ch, ConnectivityState::Ready);
    assert_eq!(echo(&mut ch.reader(), false).unwrap(), port);
    drop(ch);
    assert!(matches!(
        Channel::new(&rt, "ipv4:127.0.0.1:1", None, plaintext()).and_then(|c| {
            c.close();
            c.reset_connect_backoff()
        }),
        Err(Error::Closed)
    ));
}

/// Every call says who sends it, in PROTOCOL-HTTP2's structured form
/// (grpc-<language>-<implementation>/<version>), blocking and started; a
/// caller's own user-agent metadata is refused (the transport owns it).
#[test]
fn calls_carry_a_grpc_user_agent() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = support::ready_channel(
        &rt,
        &servers,
        r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#,
    );
    let ask = support::meta(&[("x-echo-user-agent", "1")]);
    for started in [false, true] {
        let options = CallOptions {
            metadata: &ask,
            ..Default::default()
        };
        let resp = support::echo_call(&ch, started, &options).unwrap();
        let ua = resp
            .headers
            .get("x-user-agent")
            .expect("sent")
            .to_str()
            .unwrap();
        assert!(ua.starts_with("grpc-rust-switchyard/"), "{ua}");
    }
    let mine = support::meta(&[("user-agent", "mine/1")]);
    let options = CallOptions {
        metadata: &mine,
        ..Default::default()
    };
    assert_eq!(
        support::echo_call(&ch, false, &options).unwrap_err().code(),
        Code::Internal
    );
}
