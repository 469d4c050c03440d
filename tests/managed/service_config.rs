//! The service config's `methodConfig` applied to the library's own calls,
//! blocking and started, against real backends on 127.0.0.1: the method's
//! timeout, waitForReady and message size limits; and an invalid config
//! leaving the channel TRANSIENT_FAILURE instead of failing its creation.

use super::support::*;
use crossbeam_channel::bounded;
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

const ECHO: &str = "/echo.Echo/Unary";

fn config(method_config: &str) -> String {
    format!(r#"{{"methodConfig":[{method_config}]}}"#)
}

/// A started call's result, waited for (bounded).
fn started(ch: &Channel, request: &[u8], options: &CallOptions<'_>) -> CallResult {
    let (tx, rx) = bounded(1);
    ch.unary_start(ECHO, request, options, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the call completes")
}

#[test]
fn the_methods_timeout_ends_a_slow_call_near_it() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let sc = config(r#"{"name":[{"service":"echo.Echo"}],"timeout":"0.3s"}"#);
    let ch = channel(&rt, &target(&servers), Some(&sc), plaintext());
    let mut r = ch.reader();
    echo(&mut r, true).unwrap();
    assert_eq!(
        r.method_config(ECHO).unwrap().timeout,
        Some(Duration::from_millis(300))
    );
    // The backend takes 2.5 s; the caller set no deadline.
    let slow = vec![("x-delay-ms".to_string(), "2500".to_string())];
    let options = CallOptions {
        metadata: &slow,
        ..Default::default()
    };
    let t = Instant::now();
    let e = r.unary(ECHO, b"x", &options).unwrap_err();
    let blocking = t.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    let t = Instant::now();
    let e = started(&ch, b"x", &options).unwrap_err();
    let start = t.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    for took in [blocking, start] {
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(2000),
            "ended after {took:?}, not near 0.3 s"
        );
    }
    // Another service's calls have no timeout.
    assert!(r.method_config("/other.Svc/M").is_none());
    // A caller's earlier deadline wins over the method's timeout: with a 5 s
    // timeout the 2.5 s call would succeed; 50 ms ends it.
    let sc = config(r#"{"name":[{"service":"echo.Echo"}],"timeout":"5s"}"#);
    let ch = channel(&rt, &target(&servers), Some(&sc), plaintext());
    let mut r = ch.reader();
    echo(&mut r, true).unwrap();
    let t = Instant::now();
    let e = r
        .unary(
            ECHO,
            b"x",
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_millis(50)),
                metadata: &slow,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

/// A port nothing listens on (yet).
fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn wait_for_ready_from_the_config_waits_unless_the_call_says_false() {
    let addr = free_port();
    let rt = Runtime::new().unwrap();
    let target = format!("ipv4:{addr}");
    let deadline = || Some(Instant::now() + Duration::from_secs(10));

    // Without it, a call to a backend that refuses connections fails fast.
    let plain = channel(&rt, &target, None, plaintext_fast_backoff());
    let e = plain
        .reader()
        .unary(
            ECHO,
            b"x",
            &CallOptions {
                deadline: deadline(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");

    let sc = config(r#"{"name":[{}],"waitForReady":true}"#);
    let ch = channel(&rt, &target, Some(&sc), plaintext_fast_backoff());
    ch.connect().unwrap();
    let mut state = ch.state();
    while state != TransientFailure {
        state = ch
            .wait_for_state_change(state, deadline())
            .expect("the channel fails to connect");
    }
    // An explicit false stands over the config (gRPC's WaitForReady(false)
    // call option): both ways fail fast.
    let fail_fast = CallOptions {
        deadline: deadline(),
        wait_for_ready: Some(false),
        ..Default::default()
    };
    let t = Instant::now();
    let blocking = ch.reader().unary(ECHO, b"f", &fail_fast).unwrap_err();
    let start = started(&ch, b"f", &fail_fast).unwrap_err();
    for e in [blocking, start] {
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    }
    assert!(t.elapsed() < Duration::from_secs(5), "they did not wait");
    let blocking = {
        let mut r = ch.reader();
        std::thread::spawn(move || {
            r.unary(
                ECHO,
                b"w",
                &CallOptions {
                    deadline: Some(Instant::now() + Duration::from_secs(10)),
                    ..Default::default()
                },
            )
        })
    };
    let (tx, rx) = bounded(1);
    ch.unary_start(
        ECHO,
        b"w",
        &CallOptions {
            deadline: deadline(),
            ..Default::default()
        },
        move |r| {
            let _ = tx.send(r);
        },
    )
    .unwrap();
    // Both wait through TRANSIENT_FAILURE: a backend coming up serves them.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !blocking.is_finished() && rx.is_empty(),
        "neither failed fast"
    );
    let server = TestServer::start(Listen::Tcp(addr), ServerOptions::default()).unwrap();
    let resp = blocking
        .join()
        .unwrap()
        .expect("the waiting call is served");
    assert!(resp.message.starts_with(b"w|port="));
    let resp = rx.recv_timeout(Duration::from_secs(15)).unwrap().unwrap();
    assert!(resp.message.starts_with(b"w|port="));
    assert_eq!(server.requests(), 2);
}

#[test]
fn message_size_limits_are_enforced_both_ways() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let sc = config(
        r#"{"name":[{"service":"echo.Echo","method":"Unary"}],
            "maxRequestMessageBytes":10,"maxResponseMessageBytes":20}"#,
    );
    let ch = channel(&rt, &target(&servers), Some(&sc), plaintext());
    let mut r = ch.reader();
    let options = CallOptions {
        wait_for_ready: Some(true),
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        ..Default::default()
    };
    // "hello|port=NNNNN": 16 bytes in, 5 out.
    assert!(r.unary(ECHO, b"hello", &options).is_ok());
    assert!(started(&ch, b"hello", &options).is_ok());
    let sent = servers[0].requests();

    // 11 bytes: refused before it is sent.
    for e in [
        r.unary(ECHO, b"hello world", &options).unwrap_err(),
        started(&ch, b"hello world", &options).unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("larger than max (11 vs. 10)"), "{e:?}");
    }
    assert_eq!(servers[0].requests(), sent, "nothing was sent");

    // 10 bytes: sent, but the 21-byte answer is over the limit.
    for e in [
        r.unary(ECHO, b"0123456789", &options).unwrap_err(),
        started(&ch, b"0123456789", &options).unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("larger than max") && e.message().contains("20"),
            "{e:?}"
        );
    }
    assert_eq!(servers[0].requests(), sent + 2);
    assert_eq!(
        ch.state(),
        Ready,
        "a refused message is the call's, not the channel's"
    );
}

/// `maxResponseMessageBytes` above gRPC's 4 MiB default raises a call's
/// limit where the channel sets none, and the smaller of the two applies
/// where it does (gRPC-Go's `getMaxSize`).
#[test]
fn a_method_receive_limit_above_the_default_applies_unless_the_channel_sets_less() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let sc = config(r#"{"name":[{"service":"echo.Echo"}],"maxResponseMessageBytes":8388608}"#);
    let five_mib = (5 << 20).to_string();
    let metadata = [("x-response-bytes".to_string(), five_mib)];
    let options = CallOptions {
        wait_for_ready: Some(true),
        deadline: Some(Instant::now() + Duration::from_secs(20)),
        metadata: &metadata,
        ..Default::default()
    };
    let ch = channel(&rt, &target(&servers), Some(&sc), plaintext());
    let resp = ch.reader().unary(ECHO, b"x", &options).unwrap();
    assert_eq!(resp.message.len(), 5 << 20);
    assert_eq!(started(&ch, b"x", &options).unwrap().message.len(), 5 << 20);

    // Without the config: gRPC's 4 MiB.
    let ch = channel(&rt, &target(&servers), None, plaintext());
    let e = ch.reader().unary(ECHO, b"x", &options).unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");

    // The channel's own limit, smaller than the method's, stands.
    let mut opts = plaintext();
    if let Some(t) = opts.transport.as_mut() {
        t.max_recv_message_size = Some(1 << 20);
    }
    let ch = channel(&rt, &target(&servers), Some(&sc), opts);
    let e = started(&ch, b"x", &options).unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains(&(1usize << 20).to_string()), "{e:?}");
}

#[test]
fn an_invalid_config_leaves_the_channel_failing_with_its_error() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let bad = config(r#"{"name":[{}]},{"name":[{"service":"s"}],"timeout":"3"}"#);
    let ch = Channel::new(&rt, &target(&servers), Some(&bad), plaintext())
        .expect("an invalid config does not fail the constructor");
    ch.sync().unwrap();
    assert_eq!(ch.state(), TransientFailure);
    let mut r = ch.reader();
    let options = CallOptions {
        wait_for_ready: Some(false),
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        ..Default::default()
    };
    let blocking = r.unary(ECHO, b"x", &options).unwrap_err();
    let start = started(&ch, b"x", &options).unwrap_err();
    for e in [blocking, start] {
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(
            e.message()
                .contains(r#"methodConfig[1].timeout: "3" is not a duration"#),
            "{e:?}"
        );
    }
    assert_eq!(servers[0].requests(), 0, "no policy ran");

    // A valid config brings the channel up on the addresses it kept; the
    // error's picker is gone with it (a fail-fast call queues, then goes).
    ch.update_service_config(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#)
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(echo(&mut r, false).unwrap(), servers[0].port());
    assert_eq!(ch.snapshot().unwrap().policy, "round_robin");
}

/// Through the library's own connections too: once a valid config is in,
/// the invalid one's error is gone at once (a fail-fast pick queues while
/// the new policy connects, here to a backend that never answers).
#[test]
fn a_valid_config_takes_the_errors_picker_away_at_once() {
    let hole = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions {
            black_hole: true,
            ..Default::default()
        },
    )
    .unwrap();
    let rt = Runtime::new().unwrap();
    let target = format!("ipv4:{}", hole.addr());
    let ch = Channel::new(&rt, &target, Some("{]"), plaintext()).unwrap();
    ch.sync().unwrap();
    let mut r = ch.reader();
    // Dropped: wait-for-ready picks fail too. The pick also takes the
    // channel out of IDLE (its resolver runs: a valid config could come
    // from it), keeping the addresses for when one does.
    assert!(matches!(
        r.try_pick(&PickInfo::default()),
        Err(PickError::Dropped(_))
    ));
    ch.update_service_config(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#)
        .unwrap();
    ch.sync().unwrap();
    // The error's picker is gone: the pick queues while the policy
    // connects.
    match r.try_pick(&PickInfo::default()) {
        Err(PickError::NoSubConnAvailable) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a black hole cannot be READY"),
    }
    ch.sync().unwrap();
    assert_eq!(ch.state(), Connecting);
}
