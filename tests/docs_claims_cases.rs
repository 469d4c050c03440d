//! switchyard's own documentation (README.md, rustdoc) checked
//! against its behaviour, for claims no other suite pins. Each test names
//! the doc line it checks.

mod common;
use common::*;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{ServerOptions, TestServer};

fn md(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn secs(n: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(n))
}

fn opts_md(m: &[(String, String)]) -> CallOptions<'_> {
    CallOptions {
        deadline: secs(5),
        wait_for_ready: Some(true),
        metadata: m,
        ..Default::default()
    }
}

// ------------------------------------------------------------- defaults

/// README "Idleness" (default 30 minutes), channel/mod.rs:74; README's
/// architecture diagram and backoff.rs:9 (1 s x1.6 +-20 %, at most 120 s,
/// at least 20 s); README "Re-resolution ... at most once per 30 s";
/// README "dns_service_config ... off by default"; transport/mod.rs:59
/// (keepalive off by default), :71 (16 MiB header list), :63 (no recv
/// limit set: 4 MiB applies); TLS is the default credentials.
#[test]
fn documented_defaults_hold() {
    assert_eq!(
        switchyard::channel::DEFAULT_IDLE_TIMEOUT,
        Duration::from_secs(1800)
    );
    let o = ChannelOptions::default();
    assert!(o.idle_timeout.is_none() && o.transport.is_none() && o.authority.is_none());
    assert!(!o.disable_health_check && !o.disable_retry && !o.skip_pick_counts);
    let b = BackoffConfig::default();
    assert_eq!(b.initial, Duration::from_secs(1));
    assert_eq!(b.multiplier, 1.6);
    assert_eq!(b.jitter, 0.2);
    assert_eq!(b.max, Duration::from_secs(120));
    assert_eq!(b.min_connect_timeout, Duration::from_secs(20));
    let r = o.resolver;
    assert_eq!(r.min_resolution_interval, Duration::from_secs(30));
    assert!(!r.dns_service_config && !r.disable_service_config);
    let t = TransportConfig::default();
    assert!(t.keepalive.is_none());
    assert_eq!(t.max_header_list_size, 16 << 20);
    assert!(t.max_recv_message_size.is_none());
    assert!(t.user_agent.is_none());
    assert!(t.tls_settings().is_some(), "TLS is the default");
    assert!(TransportConfig::insecure().tls_settings().is_none());
}

// ------------------------------------------------ calls refused up front

/// snapshot.rs:69-72 / README "Logging and introspection": the channel
/// counts each library call once, "also one that failed before any
/// subchannel was picked or before anything was sent"; call/mod.rs:157-168
/// and :221-225: bad metadata / bad method (INTERNAL), a passed deadline
/// (DEADLINE_EXCEEDED) and an oversized request (RESOURCE_EXHAUSTED) fail
/// before anything is picked or sent ("here only the channel's [counts
/// show it]").
#[test]
fn calls_refused_before_pick_count_on_the_channel_only() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"loadBalancingConfig":[{"round_robin":{}}],
        "methodConfig":[{"name":[{"service":"echo.Echo","method":"Small"}],"maxRequestMessageBytes":4}]}"#;
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(cfg),
        plaintext(),
    );
    let mut r = ch.reader();
    echo(&mut r, true).unwrap();
    let before = server.requests();

    let bad = md(&[("Bad-Key", "v")]);
    let e = r
        .unary("/echo.Echo/Unary", b"x", &opts_md(&bad))
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e}");
    let e = r
        .unary("/echo.Echo/Un ary", b"x", &opts_md(&[]))
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e}");
    let past = CallOptions {
        deadline: Some(Instant::now() - Duration::from_millis(1)),
        ..Default::default()
    };
    let e = r.unary("/echo.Echo/Unary", b"x", &past).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    let e = r
        .unary("/echo.Echo/Small", b"too long", &opts_md(&[]))
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert_eq!(server.requests(), before, "nothing was sent");

    let s = ch.snapshot().unwrap();
    assert_eq!(
        (
            s.calls_started,
            s.calls_succeeded,
            s.calls_failed,
            s.calls_in_flight
        ),
        (5, 1, 4, 0),
        "{s:?}"
    );
    assert_eq!(s.subchannels.len(), 1);
    let sc = &s.subchannels[0];
    assert_eq!(
        (sc.calls_started, sc.calls_succeeded, sc.calls_failed),
        (1, 1, 0),
        "{sc:?}"
    );
}

/// The same for a started call (`unary_start`): call/mod.rs:166-168 (a
/// passed deadline: DEADLINE_EXCEEDED before anything is picked or sent),
/// counted once on the channel (snapshot.rs:69).
#[test]
fn started_call_with_passed_deadline_is_unsent_and_counted() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &format!("ipv4:{}", server.addr()), RR, plaintext());
    echo(&mut ch.reader(), true).unwrap();
    let before = server.requests();
    let past = CallOptions {
        deadline: Some(Instant::now() - Duration::from_millis(1)),
        ..Default::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let started = ch.unary_start("/echo.Echo/Unary", b"x", &past, move |res| {
        let _ = tx.send(res.map(|r| r.message));
    });
    let code = match started {
        Err(e) => panic!("unary_start refused: {e}"),
        Ok(_) => rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap_err()
            .code(),
    };
    assert_eq!(code, Code::DeadlineExceeded);
    assert_eq!(server.requests(), before, "nothing was sent");
    let s = ch.snapshot().unwrap();
    assert_eq!((s.calls_started, s.calls_failed), (2, 1), "{s:?}");
}

// --------------------------------------------------------------- metadata

/// call/mod.rs:89-91: `-bin` values are their base64 text, "padded or
/// not; sent unpadded, as the gRPC spec asks".
#[test]
fn bin_metadata_padded_or_not_is_sent_unpadded() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &format!("ipv4:{}", server.addr()), RR, plaintext());
    let mut r = ch.reader();
    for v in ["AQI=", "AQI"] {
        let m = md(&[("x-echo-data-bin", v)]);
        let resp = r.unary("/echo.Echo/Unary", b"x", &opts_md(&m)).unwrap();
        let got = resp
            .headers
            .get("x-echo-data-bin")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(got.as_deref(), Some("AQI"), "sent {v:?}");
    }
    // Not base64 at all: refused before sending.
    let m = md(&[("x-echo-data-bin", "*not base64*")]);
    let e = r.unary("/echo.Echo/Unary", b"x", &opts_md(&m)).unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e}");
}

/// call/mod.rs:82-85: keys are non-empty `[0-9a-z_.-]`, and the error
/// "says which entry and why".
#[test]
fn metadata_key_charset_and_error_names_the_entry() {
    for key in ["", "x+y", "x y", "x/y", "é"] {
        let m = md(&[("ok", "v"), (key, "v")]);
        let e = check_metadata(&m).expect_err(key);
        assert!(
            e.contains(key) || key.is_empty() || e.contains("1") || e.contains("entry"),
            "key {key:?}: {e}"
        );
    }
    for key in ["a", "0-9._-z", "x-trace-bin"] {
        let v = if key.ends_with("-bin") { "AA" } else { "v" };
        check_metadata(&md(&[(key, v)])).unwrap_or_else(|e| panic!("{key:?}: {e}"));
    }
    // Printable ASCII values only (call/mod.rs:89).
    assert!(check_metadata(&md(&[("k", "a\tb")])).is_err());
    assert!(check_metadata(&md(&[("k", "caf\u{e9}")])).is_err());
    assert!(check_metadata(&md(&[("k", " a ~")])).is_ok());
}

/// call/mod.rs:83-88: each listed reserved key is refused by `check_metadata`.
#[test]
fn every_reserved_key_listed_is_refused() {
    for key in [
        ":path",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "host",
        "content-length",
        "content-type",
        "user-agent",
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
        "grpc-message",
        "grpc-message-type",
        "grpc-status",
        "grpc-previous-rpc-attempts",
    ] {
        assert!(
            check_metadata(&md(&[(key, "v")])).is_err(),
            "{key} accepted"
        );
    }
}

/// call/mod.rs:139-143: a method that HTTP/2 cannot carry as a path
/// (spaces, controls, `?`, `#`) is refused.
#[test]
fn check_method_refuses_what_the_doc_lists() {
    assert!(check_method("/echo.Echo/Unary").is_ok());
    for m in ["/a/b c", "/a/b?x", "/a/b#x", "/a/b\u{1}", "/a/\u{e9}"] {
        assert!(check_method(m).is_err(), "{m:?} accepted");
    }
}

// --------------------------------------------------------------- user agent

/// transport/mod.rs:75-79 and :134-135: the application's user agent,
/// printable ASCII; "An error names a value that is no printable ASCII".
/// Where does a bad one surface? Channel::new (or the first call).
#[test]
fn non_printable_user_agent_is_refused_with_the_value() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let mut t = TransportConfig::insecure();
    t.user_agent = Some("app\u{1}/1".into());
    let made = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr()),
        RR,
        ChannelOptions {
            transport: Some(t),
            ..Default::default()
        },
    );
    match made {
        Err(e) => assert!(e.to_string().contains("user"), "{e}"),
        Ok(ch) => {
            let e = rpc(&ch, true, Duration::from_secs(3)).unwrap_err();
            panic!("Channel::new accepted it; the call said: {e}");
        }
    }
}

// --------------------------------------------------------------- TLS

fn tls_server(pki: &TestPki) -> TestServer {
    start_server(
        0,
        ServerOptions {
            tls: Some(pki.server_tls(&[b"h2"])),
            ..Default::default()
        },
    )
}

/// transport/mod.rs:189-196: `server_name` "Given with a port
/// (`host:port`), the host is the name verified", and "Set, it is the
/// calls' `:authority` too".
#[test]
fn tls_server_name_with_port_verifies_the_host_and_is_the_authority() {
    let pki = TestPki::new();
    let server = tls_server(&pki);
    let rt = Runtime::new().unwrap();
    let opts = ChannelOptions {
        transport: Some(TransportConfig::tls(TlsSettings {
            server_name: "localhost:8443".into(),
            roots_pem: Some(pki.ca_pem.clone()),
            client_cert: None,
        })),
        ..Default::default()
    };
    let ch = channel(&rt, &format!("ipv4:{}", server.addr()), RR, opts);
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
    assert_eq!(server.last_authority().as_deref(), Some("localhost:8443"));
}

/// channel/mod.rs:60-62 / README "Idleness, authority": the
/// `ChannelOptions::authority` is "the TLS server name unless
/// `TlsSettings::server_name` is set".
#[test]
fn channel_authority_is_the_tls_name_verified() {
    let pki = TestPki::new();
    let server = tls_server(&pki);
    let rt = Runtime::new().unwrap();
    let opts = |authority: &str| ChannelOptions {
        transport: Some(TransportConfig::tls(TlsSettings {
            server_name: String::new(),
            roots_pem: Some(pki.ca_pem.clone()),
            client_cert: None,
        })),
        authority: Some(authority.into()),
        ..Default::default()
    };
    let target = format!("ipv4:{}", server.addr());
    let good = channel(&rt, &target, RR, opts("localhost"));
    rpc(&good, true, Duration::from_secs(5)).unwrap();
    assert_eq!(server.last_authority().as_deref(), Some("localhost"));
    let bad = channel(&rt, &target, None, opts("wrong.example"));
    wait_state(&bad, TransientFailure);
    let e = pick_error(&bad);
    assert!(e.contains("certificate") || e.contains("TLS"), "{e}");
}

// --------------------------------------------------------------- limits

/// transport/mod.rs:61-66: with no channel limit, the method's
/// `maxResponseMessageBytes` applies "larger or smaller" than 4 MiB; with
/// both set, "the smaller of the two applies".
#[test]
fn receive_limit_method_over_default_and_smaller_of_two() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let target = format!("ipv4:{}", server.addr());
    let cfg = |n: usize| {
        format!(
            r#"{{"loadBalancingConfig":[{{"round_robin":{{}}}}],
            "methodConfig":[{{"name":[{{}}],"maxResponseMessageBytes":{n}}}]}}"#
        )
    };
    let call = |ch: &Channel, n: usize| {
        let m = md(&[("x-response-bytes", &n.to_string())]);
        ch.reader()
            .unary("/echo.Echo/Unary", b"x", &opts_md(&m))
            .map(|r| r.message.len())
    };
    // Method 8 MiB, channel unset: a 5 MiB reply passes.
    let big = channel(&rt, &target, Some(&cfg(8 << 20)), plaintext());
    assert_eq!(call(&big, 5 << 20).unwrap(), 5 << 20);
    // Channel 100, method 1000: 200 fails.
    let mut t = TransportConfig::insecure();
    t.max_recv_message_size = Some(100);
    let ch = channel(
        &rt,
        &target,
        Some(&cfg(1000)),
        ChannelOptions {
            transport: Some(t),
            ..Default::default()
        },
    );
    assert_eq!(call(&ch, 100).unwrap(), 100);
    assert_eq!(call(&ch, 200).unwrap_err().code(), Code::ResourceExhausted);
    // Channel 1000, method 100: 200 fails.
    let mut t = TransportConfig::insecure();
    t.max_recv_message_size = Some(1000);
    let ch = channel(
        &rt,
        &target,
        Some(&cfg(100)),
        ChannelOptions {
            transport: Some(t),
            ..Default::default()
        },
    );
    assert_eq!(call(&ch, 200).unwrap_err().code(), Code::ResourceExhausted);
}

// --------------------------------------------------------------- lifecycle

/// channel/mod.rs:473-475: `connect` "Returns once the loop has done so
/// ...: a channel that was IDLE says CONNECTING by then".
#[test]
fn connect_returns_with_an_idle_channel_connecting() {
    let server = start_server(
        0,
        ServerOptions {
            black_hole: true,
            ..Default::default()
        },
    );
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), RR, plaintext()).unwrap();
    assert_eq!(ch.state(), Idle);
    ch.connect().unwrap();
    assert_eq!(ch.state(), Connecting);
}

/// channel/mod.rs:499-501 (SHUTDOWN from the moment close is called),
/// :513 (get_state: SHUTDOWN after close), :601-602 (close wakes waiting
/// picks with CLOSED), :564-566 / README: snapshot of a closed channel.
#[test]
fn close_wakes_waiting_pick_closed_and_state_is_shutdown() {
    let server = start_server(
        0,
        ServerOptions {
            black_hole: true,
            ..Default::default()
        },
    );
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        RR,
        plaintext(),
    ));
    let c2 = ch.clone();
    let waiter = std::thread::spawn(move || {
        let t0 = Instant::now();
        let res = c2.reader().pick(
            &PickInfo::default(),
            &PickOptions {
                deadline: secs(8),
                wait_for_ready: true,
            },
        );
        (res.map(|_| ()), t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    ch.close();
    assert_eq!(ch.state(), Shutdown);
    assert_eq!(ch.get_state(true), Shutdown);
    let (res, took) = waiter.join().unwrap();
    assert_eq!(res.unwrap_err(), PickError::Closed);
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A blocking call on the closed channel.
    let e = rpc(&ch, true, Duration::from_secs(2)).unwrap_err();
    assert!(
        matches!(e.code(), Code::Unavailable | Code::Cancelled),
        "{e}"
    );
}

/// call/mod.rs:18-21 / README: a started call's closure runs on "the
/// channel's dispatch thread (one per channel, started with the first
/// call), never on the loop".
#[test]
fn started_call_closures_run_on_one_dispatch_thread_not_the_loop() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let loop_thread: Arc<Mutex<Option<std::thread::ThreadId>>> = Default::default();
    let lt = loop_thread.clone();
    let mut opts = plaintext();
    opts.on_state_change = Some(Arc::new(move |_| {
        *lt.lock().unwrap() = Some(std::thread::current().id());
    }));
    let ch = channel(&rt, &format!("ipv4:{}", server.addr()), RR, opts);
    wait_state(&ch, Ready);
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..3 {
        let tx = tx.clone();
        ch.unary_start("/echo.Echo/Unary", b"x", &opts_md(&[]), move |res| {
            let _ = tx.send((res.is_ok(), std::thread::current().id()));
        })
        .unwrap();
    }
    let ids: Vec<_> = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert!(ids.iter().all(|(ok, _)| *ok));
    assert!(
        ids.windows(2).all(|w| w[0].1 == w[1].1),
        "one thread: {ids:?}"
    );
    let lt = loop_thread.lock().unwrap().unwrap();
    assert_ne!(ids[0].1, lt, "never on the loop");
    assert_ne!(ids[0].1, std::thread::current().id());
}

/// channel/mod.rs:542-544: "On the loop thread (inside a callback) it
/// does not wait: the state if it already differs, else `None`."
#[test]
fn wait_for_state_change_inside_a_callback_does_not_wait() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let slot: Arc<OnceLock<Channel>> = Arc::new(OnceLock::new());
    // (the state heard, what get_state said inside the callback, when)
    type Heard = Vec<(ConnectivityState, Option<ConnectivityState>, Duration)>;
    let seen: Arc<Mutex<Heard>> = Default::default();
    let (s2, seen2) = (slot.clone(), seen.clone());
    let mut opts = plaintext();
    opts.on_state_change = Some(Arc::new(move |st| {
        if let Some(ch) = s2.get() {
            let t0 = Instant::now();
            let got = ch.wait_for_state_change(st, Some(Instant::now() + Duration::from_secs(3)));
            let other =
                ch.wait_for_state_change(Shutdown, Some(Instant::now() + Duration::from_secs(3)));
            assert!(other.is_some());
            seen2.lock().unwrap().push((st, got, t0.elapsed()));
        }
    }));
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), RR, opts).unwrap();
    assert!(slot.set(ch).is_ok());
    let ch = slot.get().unwrap();
    ch.connect().unwrap();
    wait_state(ch, Ready);
    ch.sync().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for (st, got, took) in &seen {
        assert!(*took < Duration::from_millis(500), "{st}: waited {took:?}");
        assert!(got.is_none() || *got != Some(*st), "{st}: {got:?}");
    }
}

// ------------------------------------------------------------ service config

/// channel/mod.rs:130-136 / README "Service config": an invalid config
/// makes the channel TRANSIENT_FAILURE from the start (not IDLE), its
/// calls fail UNAVAILABLE naming the JSON path, wait-for-ready too.
#[test]
fn invalid_default_config_is_transient_failure_at_once_naming_the_path() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"methodConfig":[{"name":[{}]},{"name":[{"service":"s"}],"timeout":"3"}]}"#;
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(cfg),
        plaintext(),
    )
    .unwrap();
    assert_eq!(ch.state(), TransientFailure);
    let e = rpc(&ch, true, Duration::from_secs(3)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        e.message()
            .contains(r#"methodConfig[1].timeout: "3" is not a duration"#),
        "{e}"
    );
    assert_eq!(server.requests(), 0);
    // update_service_config with a valid one brings it to life (ch/mod.rs:134).
    // `update_service_config` returns before the loop applies it: a call
    // made at once may still fail with the old error (3 runs in 6 did,
    // wait-for-ready as it is); `sync` waits for it.
    ch.update_service_config(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#)
        .unwrap();
    ch.sync().unwrap();
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
}

/// channel/mod.rs:128: empty service config text is `None` (pick_first),
/// snapshot's `policy` names it; README ("else none (pick_first)").
#[test]
fn empty_config_text_is_pick_first() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(""),
        plaintext(),
    );
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
    assert_eq!(ch.snapshot().unwrap().policy, "pick_first");
}

/// README "Service config": "its `timeout` caps the caller's deadline" and
/// "`waitForReady: true` makes a call wait through TRANSIENT_FAILURE (a
/// caller's explicit wait_for_ready, true or false, stands over it)".
#[test]
fn method_wait_for_ready_and_caller_override() {
    let port = free_port();
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"loadBalancingConfig":[{"round_robin":{}}],
        "methodConfig":[{"name":[{}],"waitForReady":true,"timeout":"0.4s"}]}"#;
    let ch = channel(
        &rt,
        &format!("ipv4:127.0.0.1:{port}"),
        Some(cfg),
        plaintext(),
    );
    wait_state(&ch, TransientFailure);
    let call = |wfr: Option<bool>| {
        let o = CallOptions {
            deadline: secs(5),
            wait_for_ready: wfr,
            ..Default::default()
        };
        let t0 = Instant::now();
        let e = ch.reader().unary("/echo.Echo/Unary", b"x", &o).unwrap_err();
        (e.code(), t0.elapsed())
    };
    let (code, took) = call(None);
    assert_eq!(code, Code::DeadlineExceeded, "config's waitForReady");
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let (code, took) = call(Some(false));
    assert_eq!(code, Code::Unavailable);
    assert!(took < Duration::from_millis(350), "{took:?}");
}

// ---------------------------------------------------------------- snapshot JSON

/// snapshot.rs:110-115: `to_json` fields.
#[test]
fn snapshot_json_has_the_documented_fields() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &format!("ipv4:{}", server.addr()), RR, plaintext());
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
    let j = ch.snapshot().unwrap().to_json();
    for f in [
        "\"target\"",
        "\"policy\":\"round_robin\"",
        "\"state\":\"READY\"",
        "\"calls_started\":1",
        "\"calls_succeeded\":1",
        "\"calls_failed\":0",
        "\"calls_in_flight\":0",
        "\"last_call_unix_ms\":",
        "\"subchannels\"",
        "\"id\"",
        "\"address\"",
        "\"last_error\":null",
    ] {
        assert!(j.contains(f), "{f} missing in {j}");
    }
}

// ------------------------------------------------------- credentials mismatch

/// README "Using it from C": a credentials mismatch says so: "the server
/// answered in plaintext", or "the server answered in TLS" (or "a TLS
/// server does so to a plaintext client"); lib.rs:50-53: the channel goes
/// TRANSIENT_FAILURE, "a fail-fast call fails with UNAVAILABLE and the
/// connection error (a wait-for-ready call waits for its deadline
/// instead)".
#[test]
fn credentials_mismatch_messages_and_codes() {
    let plain = start_server(0, ServerOptions::default());
    let pki = TestPki::new();
    let tls = tls_server(&pki);
    let rt = Runtime::new().unwrap();
    let tls_opts = ChannelOptions {
        transport: Some(TransportConfig::tls(TlsSettings {
            server_name: "localhost".into(),
            roots_pem: Some(pki.ca_pem.clone()),
            client_cert: None,
        })),
        ..Default::default()
    };
    let a = channel(&rt, &format!("ipv4:{}", plain.addr()), None, tls_opts);
    wait_state(&a, TransientFailure);
    let e = rpc(&a, false, Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        e.message().contains("the server answered in plaintext"),
        "{e}"
    );
    let t0 = Instant::now();
    let e = rpc(&a, true, Duration::from_millis(600)).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(550));

    let b = channel(&rt, &format!("ipv4:{}", tls.addr()), None, plaintext());
    wait_state(&b, TransientFailure);
    let e = rpc(&b, false, Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        e.message().contains("the server answered in TLS")
            || e.message()
                .contains("a TLS server does so to a plaintext client"),
        "{e}"
    );
}

// ------------------------------------------------------------ retries

fn retry_cfg(max_attempts: u32) -> String {
    format!(
        r#"{{"loadBalancingConfig":[{{"round_robin":{{}}}}],
        "methodConfig":[{{"name":[{{}}],"retryPolicy":{{"maxAttempts":{max_attempts},
        "initialBackoff":"0.01s","maxBackoff":"0.05s","backoffMultiplier":2,
        "retryableStatusCodes":["UNAVAILABLE"]}}}}]}}"#
    )
}

/// README "Service config": a call the server never processed is retried
/// transparently "once"; transparent retries happen whatever the
/// retryPolicy (and with `disable_retry`).
#[test]
fn refused_stream_is_retried_transparently_once() {
    let rt = Runtime::new().unwrap();
    let one = start_server(
        0,
        ServerOptions {
            refuse_streams: 1,
            ..Default::default()
        },
    );
    let mut o = plaintext();
    o.disable_retry = true;
    let ch = channel(&rt, &format!("ipv4:{}", one.addr()), Some(&retry_cfg(5)), o);
    rpc(&ch, true, Duration::from_secs(5)).expect("one refusal: retried transparently");
    assert_eq!(one.requests(), 2);

    let two = start_server(
        0,
        ServerOptions {
            refuse_streams: 2,
            ..Default::default()
        },
    );
    let ch = channel(&rt, &format!("ipv4:{}", two.addr()), RR, plaintext());
    let e = rpc(&ch, true, Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert_eq!(two.requests(), 2, "one transparent retry only");
}

/// README "Service config": maxAttempts "(at most 5)", and a pushback
/// "past a signed 32-bit integer, stops retries".
#[test]
fn max_attempts_capped_at_5_and_huge_pushback_stops() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(&retry_cfg(9)),
        plaintext(),
    );
    echo(&mut ch.reader(), true).unwrap();
    let before = server.requests();
    let m = md(&[("x-fail-attempts", "100")]);
    let e = ch
        .reader()
        .unary("/echo.Echo/Unary", b"x", &opts_md(&m))
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(server.requests() - before, 5);

    for pushback in ["2147483648", "-5", "1e3"] {
        let before = server.requests();
        let m = md(&[("x-fail-attempts", "100"), ("x-pushback-ms", pushback)]);
        let t0 = Instant::now();
        let e = ch
            .reader()
            .unary("/echo.Echo/Unary", b"x", &opts_md(&m))
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{pushback}: {e}");
        assert_eq!(server.requests() - before, 1, "{pushback}: no retry");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
    // The largest valid one (i32::MAX ms) is a wait, bounded by the deadline.
    let before = server.requests();
    let m = md(&[("x-fail-attempts", "100"), ("x-pushback-ms", "2147483647")]);
    let o = CallOptions {
        deadline: Some(Instant::now() + Duration::from_millis(500)),
        metadata: &m,
        ..Default::default()
    };
    let e = ch.reader().unary("/echo.Echo/Unary", b"x", &o).unwrap_err();
    assert_eq!(server.requests() - before, 1);
    assert!(
        matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{e}"
    );
}

// ------------------------------------------------------------ ORCA streams

/// README "Load reports": the OOB stream "is not a call: it keeps no
/// channel out of IDLE and snapshots do not count it".
#[test]
fn oob_stream_is_not_a_call() {
    let server = start_server(
        0,
        ServerOptions {
            orca_min_interval: Some(Duration::from_millis(20)),
            ..Default::default()
        },
    );
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"loadBalancingConfig":[{"weighted_round_robin":{"enableOobLoadReport":true,"oobReportingPeriod":"0.05s"}}]}"#;
    let mut o = plaintext();
    o.idle_timeout = Some(Duration::from_millis(400));
    let ch = channel(&rt, &format!("ipv4:{}", server.addr()), Some(cfg), o);
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
    wait_until("the ORCA stream", || server.orca_streams() >= 1);
    let s = ch.snapshot().unwrap();
    assert_eq!(s.calls_started, 1, "{s:?}");
    let sc: u64 = s.subchannels.iter().map(|s| s.calls_started).sum();
    assert_eq!(sc, 1, "{s:?}");
    wait_state(&ch, Idle);
}

/// README "Load reports": `oobReportingPeriod` "default 10 s".
#[test]
fn oob_default_period_is_10s() {
    let server = start_server(
        0,
        ServerOptions {
            orca_min_interval: Some(Duration::from_millis(1)),
            ..Default::default()
        },
    );
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"loadBalancingConfig":[{"weighted_round_robin":{"enableOobLoadReport":true}}]}"#;
    let ch = channel(
        &rt,
        &format!("ipv4:{}", server.addr()),
        Some(cfg),
        plaintext(),
    );
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
    wait_until("the ORCA stream", || server.orca_interval().is_some());
    assert_eq!(server.orca_interval(), Some(Duration::from_secs(10)));
}

// ------------------------------------------------------------ ring_hash hash

fn ring_call(ch: &Channel, hash: Option<u64>, m: &[(String, String)]) -> Result<u16, Status> {
    let o = CallOptions {
        deadline: secs(5),
        wait_for_ready: Some(true),
        metadata: m,
        hash,
    };
    ch.reader()
        .unary("/echo.Echo/Unary", b"ping", &o)
        .map(port_of)
}

/// call/mod.rs:57-60 and policy/ring_hash/mod.rs:8-17: with
/// `requestHashHeader`, a call with metadata hashes the header (random
/// when missing, whatever `hash` says), a call with no metadata uses
/// `hash`; without a header configured, a call without `hash` fails
/// INTERNAL.
#[test]
fn ring_hash_request_hash_rules() {
    let servers: Vec<TestServer> = (0..3)
        .map(|_| start_server(0, ServerOptions::default()))
        .collect();
    let list: Vec<String> = servers.iter().map(|s| s.addr().to_string()).collect();
    let target = format!("ipv4:{}", list.join(","));
    let rt = Runtime::new().unwrap();
    let cfg = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"requestHashHeader":"x-h"}}]}"#;
    let ch = channel(&rt, &target, Some(cfg), plaintext());
    // Connect them all: many different hashes, no metadata.
    let mut seen = std::collections::HashSet::new();
    for h in 0..200u64 {
        seen.insert(ring_call(&ch, Some(h.wrapping_mul(0x9E37_79B9_7F4A_7C15)), &[]).unwrap());
    }
    assert_eq!(seen.len(), 3, "hash spreads over the ring");
    // No metadata: the caller's hash, consistently.
    let one: std::collections::HashSet<u16> = (0..20)
        .map(|_| ring_call(&ch, Some(42), &[]).unwrap())
        .collect();
    assert_eq!(one.len(), 1);
    // The header: consistent whatever `hash` is.
    let m = md(&[("x-h", "abc")]);
    let by_header: std::collections::HashSet<u16> = (0..20u64)
        .map(|h| ring_call(&ch, Some(h * 7919), &m).unwrap())
        .collect();
    assert_eq!(by_header.len(), 1);
    // Metadata without the header: random, the caller's hash ignored.
    let m = md(&[("x-other", "1")]);
    let random: std::collections::HashSet<u16> = (0..60)
        .map(|_| ring_call(&ch, Some(42), &m).unwrap())
        .collect();
    assert!(random.len() >= 2, "{random:?}");

    // No header configured, no hash: INTERNAL (fail fast).
    let cfg = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{}}]}"#;
    let ch = channel(&rt, &target, Some(cfg), plaintext());
    ring_call(&ch, Some(1), &[]).unwrap();
    let o = CallOptions {
        deadline: secs(5),
        ..Default::default()
    };
    let e = ch.reader().unary("/echo.Echo/Unary", b"x", &o).unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e}");
}

// ------------------------------------------------------------ snapshot details

/// snapshot.rs:93-95: `last_error` is "the latest error of a failed
/// connection attempt, lost connection or failed health check; kept after
/// the subchannel recovers".
#[test]
fn snapshot_last_error_is_kept_after_recovery() {
    let mut server = start_server(0, ServerOptions::default());
    let port = server.port();
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("ipv4:127.0.0.1:{port}"),
        RR,
        plaintext_fast_backoff(),
    );
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
    assert_eq!(ch.snapshot().unwrap().subchannels[0].last_error, None);
    server.stop();
    wait_until("the loss seen", || {
        ch.snapshot().unwrap().subchannels[0].last_error.is_some()
    });
    server = start_server(port, ServerOptions::default());
    rpc(&ch, true, Duration::from_secs(10)).unwrap();
    let s = ch.snapshot().unwrap();
    assert_eq!(s.subchannels[0].state, Ready);
    assert!(s.subchannels[0].last_error.is_some(), "{s:?}");
    drop(server);
}

/// channel/mod.rs:563-566: `snapshot` "Not from the loop thread itself (a
/// policy or state callback): `Error::InvalidArgument` there"; :403-407 and
/// :444-445: host reports on a managed channel are InvalidArgument.
#[test]
fn snapshot_in_a_callback_and_host_reports_on_managed_channels() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let slot: Arc<OnceLock<Channel>> = Arc::new(OnceLock::new());
    let got: Arc<Mutex<Vec<String>>> = Default::default();
    let (s2, g2) = (slot.clone(), got.clone());
    let mut opts = plaintext();
    opts.on_state_change = Some(Arc::new(move |_| {
        if let Some(ch) = s2.get() {
            g2.lock().unwrap().push(match ch.snapshot() {
                Ok(_) => "ok".into(),
                Err(e) => format!("{e:?}"),
            });
        }
    }));
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), RR, opts).unwrap();
    assert!(slot.set(ch).is_ok());
    let ch = slot.get().unwrap();
    rpc(ch, true, Duration::from_secs(5)).unwrap();
    let got = got.lock().unwrap().clone();
    assert!(!got.is_empty());
    assert!(
        got.iter().all(|g| g.starts_with("InvalidArgument")),
        "{got:?}"
    );
    let id = ch.snapshot().unwrap().subchannels[0].id;
    assert!(matches!(
        ch.report_subconn_state(id, Ready, "x"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ch.report_subconn_health(id, true, "x"),
        Err(Error::InvalidArgument(_))
    ));
}

// ------------------------------------------------------------ idleness

/// channel/mod.rs:469-472: `connect` on a channel in use "is not use of
/// the channel, which goes IDLE one idle timeout after its last call all
/// the same"; get_state(true) likewise (:512-513).
#[test]
fn connect_and_get_state_are_not_use() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let mut o = plaintext();
    o.idle_timeout = Some(Duration::from_millis(800));
    let ch = channel(&rt, &format!("ipv4:{}", server.addr()), RR, o);
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
    let t0 = Instant::now();
    let mut went_idle = None;
    while t0.elapsed() < Duration::from_secs(4) {
        ch.connect().unwrap();
        let _ = ch.get_state(true);
        std::thread::sleep(Duration::from_millis(20));
        // connect() would leave IDLE again at once: look at the snapshot's
        // state through the state callback instead: a change to IDLE.
        if ch.state() == Idle || ch.state() == Connecting {
            went_idle = Some(t0.elapsed());
            break;
        }
    }
    let took = went_idle.expect("never went IDLE while connect/get_state were called");
    assert!(took >= Duration::from_millis(700), "{took:?}");
}

/// TlsSettings::check (transport/mod.rs:208-213): refuses "a PEM block of
/// roots whose contents is no certificate".
#[test]
fn tls_settings_check_refuses_bad_roots() {
    let s = |roots: &[u8]| TlsSettings {
        server_name: String::new(),
        roots_pem: Some(roots.to_vec()),
        client_cert: None,
    };
    assert!(s(&TestPki::new().ca_pem).check().is_ok());
    let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(s(bad).check().is_err(), "a block that is no certificate");
    let r = s(b"no pem here at all").check();
    println!("roots with no PEM block: {r:?}");
    let r = s(b"").check();
    println!("empty roots: {r:?}");
}

/// README "Idleness": "no resolution and no connection until its first
/// pick or call": a `try_pick` (a pick) on an IDLE channel brings it out.
#[test]
fn try_pick_on_an_idle_channel_leaves_idle() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), RR, plaintext()).unwrap();
    assert_eq!(ch.state(), Idle);
    let mut r = ch.reader();
    let first = r.try_pick(&PickInfo::default()).map(|_| ());
    println!("first try_pick: {first:?}");
    wait_state(&ch, Ready);
    r.try_pick(&PickInfo::default()).expect("READY now");
}

// ------------------------------------------------------------ logging

/// README "Logging and introspection" and trace.rs: the library logs from
/// its event loop (and from the thread creating a channel, and the DNS
/// lookup threads), never on the pick path: a call made on this thread
/// logs nothing on it.
#[test]
fn the_call_path_never_logs_and_the_loop_does() {
    let me = std::thread::current().id();
    let in_call = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(String, String)>>> = Default::default();
    let on_call: Arc<Mutex<Vec<String>>> = Default::default();
    let (s2, c2, flag) = (seen.clone(), on_call.clone(), in_call.clone());
    switchyard::trace::set_callback(
        Some(Arc::new(move |_lvl, _target: &str, msg: &str| {
            let t = std::thread::current();
            if t.id() == me && flag.load(std::sync::atomic::Ordering::SeqCst) {
                c2.lock().unwrap().push(msg.to_string());
            }
            let name = t.name().unwrap_or("<unnamed>").to_string();
            s2.lock().unwrap().push((name, msg.to_string()));
        })),
        switchyard::trace::LevelFilter::Trace,
    )
    .unwrap();
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &format!("dns:///localhost:{}", server.port()),
        RR,
        plaintext(),
    );
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
    in_call.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..20 {
        rpc(&ch, true, Duration::from_secs(5)).unwrap();
        let mut r = ch.reader();
        let p = r.pick(
            &PickInfo::default(),
            &PickOptions {
                deadline: Some(Instant::now() + Duration::from_secs(5)),
                wait_for_ready: true,
            },
        );
        let p = p.expect("a pick");
        r.finish(p, &DoneInfo::default());
    }
    in_call.store(false, std::sync::atomic::Ordering::SeqCst);
    ch.close();
    switchyard::trace::set_callback(None, switchyard::trace::LevelFilter::Off).unwrap();
    let on_call = on_call.lock().unwrap().clone();
    assert!(on_call.is_empty(), "logged on the call path: {on_call:#?}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(t, _)| t == "switchyard-loop"),
        "nothing from the loop: {seen:#?}"
    );
}

/// transport/mod.rs:68-71: a response header list over
/// `max_header_list_size` "fails its call with INTERNAL; one over 4x this
/// ends the connection".
#[test]
fn header_list_limit_fails_the_call_and_4x_ends_the_connection() {
    let server = start_server(0, ServerOptions::default());
    let rt = Runtime::new().unwrap();
    let mut t = TransportConfig::insecure();
    t.max_header_list_size = 1024;
    let (mut opts, seen) = recorded_plaintext();
    opts.transport = Some(t);
    let ch = channel(&rt, &format!("ipv4:{}", server.addr()), RR, opts);
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
    let call = |n: usize| {
        let m = md(&[("x-echo-big", &"a".repeat(n))]);
        ch.reader()
            .unary("/echo.Echo/Unary", b"x", &opts_md(&m))
            .map(|_| ())
    };
    let e = call(2000).unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e}");
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
    assert_eq!(seen.attempts().len(), 1, "the connection survived");
    let e = call(5000).unwrap_err();
    println!("over 4x: {e:?}");
    rpc(&ch, true, Duration::from_secs(5)).unwrap();
    assert_eq!(
        seen.attempts().len(),
        2,
        "the connection ended: {:?}",
        seen.all()
    );
}
