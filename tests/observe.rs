//! What an operator sees: log records through a channel's life and channel
//! snapshots, against real HTTP/2 test backends on 127.0.0.1. A test binary
//! of its own, because the log callback is process-wide.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

fn server() -> TestServer {
    TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap()
}

fn options() -> ChannelOptions {
    let mut o = ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    };
    o.backoff.initial = Duration::from_millis(50);
    o.backoff.max = Duration::from_millis(200);
    o
}

fn call_options<'a>() -> CallOptions<'a> {
    CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        wait_for_ready: Some(true),
        ..Default::default()
    }
}

/// Waits (at most 10 s) until the channel's snapshot satisfies `done`.
fn snapshot_until(ch: &Channel, done: impl Fn(&ChannelSnapshot) -> bool) -> ChannelSnapshot {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let s = ch.snapshot().unwrap();
        if done(&s) || Instant::now() > until {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

type Records = Arc<Mutex<Vec<(log::Level, String, String)>>>;

/// Sends the library's log records at `level` and above into the returned
/// list (the caller holds `CALLBACK`: one callback per process).
fn record_logs(level: log::LevelFilter) -> Records {
    let records: Records = Default::default();
    let sink = records.clone();
    let callback: trace::LogCallback = Arc::new(move |level, target: &str, message: &str| {
        sink.lock()
            .unwrap()
            .push((level, target.to_string(), message.to_string()));
    });
    trace::set_callback(Some(callback), level).unwrap();
    records
}

/// The log callback is process-wide: tests that set it take turns.
static CALLBACK: Mutex<()> = Mutex::new(());

#[test]
fn log_records_follow_a_channel_through_ready_and_a_stopped_backend() {
    let _turn = CALLBACK.lock().unwrap_or_else(|e| e.into_inner());
    let records = record_logs(log::LevelFilter::Debug);

    let backend = server();
    let addr = backend.addr().to_string();
    let target = format!("ipv4:{addr}");
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target, None, options()).unwrap();
    let mut reader = ch.reader();
    reader
        .unary("/echo.Echo/Unary", b"hi", &call_options())
        .unwrap();
    // Calls and their picks log nothing (the pick path has no log call).
    let ours = |records: &Records| {
        records
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, m)| m.contains(&addr))
            .count()
    };
    let before = ours(&records);
    for _ in 0..50 {
        reader
            .unary("/echo.Echo/Unary", b"hi", &call_options())
            .unwrap();
    }
    assert_eq!(ours(&records), before);
    backend.stop();
    // pick_first goes IDLE when its connection ends; asked to connect
    // again, it fails against the closed port.
    let until = Instant::now() + Duration::from_secs(10);
    while ch.state() != TransientFailure && Instant::now() < until {
        let _ = ch.connect();
        ch.wait_for_state_change(
            ch.state(),
            Some(Instant::now() + Duration::from_millis(100)),
        );
    }
    assert_eq!(ch.state(), TransientFailure);
    ch.close();
    trace::set_callback(None, log::LevelFilter::Off).unwrap();

    // Only this channel's records (other tests may log concurrently).
    let lines: Vec<(log::Level, String, String)> = records
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, m)| m.contains(&addr))
        .cloned()
        .collect();
    let has = |target: &str, what: &[&str]| {
        lines
            .iter()
            .any(|(_, t, m)| t == target && what.iter().all(|w| m.contains(w)))
    };
    let dump = || format!("{lines:#?}");
    assert!(
        has(trace::CHANNEL, &["created", "pick_first"]),
        "{}",
        dump()
    );
    assert!(
        has(trace::SUBCHANNEL, &["CONNECTING -> READY"]),
        "{}",
        dump()
    );
    assert!(has(trace::CHANNEL, &["CONNECTING -> READY"]), "{}", dump());
    assert!(has(trace::TRANSPORT, &["connection lost"]), "{}", dump());
    assert!(has(trace::SUBCHANNEL, &["READY -> IDLE"]), "{}", dump());
    assert!(has(trace::TRANSPORT, &["connection failed"]), "{}", dump());
    // The channel's TRANSIENT_FAILURE line names the subchannel's error.
    assert!(
        lines.iter().any(|(l, t, m)| *l == log::Level::Info
            && t == trace::CHANNEL
            && m.contains("-> TRANSIENT_FAILURE (subchannel ")
            && m.to_lowercase().contains("refused")),
        "{}",
        dump()
    );
    assert!(has(trace::CHANNEL, &["-> SHUTDOWN (closed)"]), "{}", dump());
}

#[test]
fn snapshot_counts_each_backends_calls_and_shows_a_stopped_ones_error() {
    let mut backends: Vec<Option<TestServer>> = (0..3).map(|_| Some(server())).collect();
    let addrs: Vec<String> = backends
        .iter()
        .map(|b| b.as_ref().unwrap().addr().to_string())
        .collect();
    let target = format!("ipv4:{}", addrs.join(","));
    let rt = Runtime::new().unwrap();
    let config = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
    let ch = Channel::new(&rt, &target, Some(config), options()).unwrap();

    let before = ch.snapshot().unwrap();
    assert_eq!(before.target, target);
    assert_eq!(before.policy, "round_robin");

    // 30 blocking calls from this thread, 12 from a reader that is gone
    // before the snapshot, 6 started calls, 3 that fail (unknown method).
    let mut reader = ch.reader();
    for _ in 0..30 {
        reader
            .unary("/echo.Echo/Unary", b"a", &call_options())
            .unwrap();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut r = ch.reader();
            for _ in 0..12 {
                r.unary("/echo.Echo/Unary", b"b", &call_options()).unwrap();
            }
        });
    });
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..6 {
        let tx = tx.clone();
        ch.unary_start("/echo.Echo/Unary", b"c", &call_options(), move |r| {
            let _ = tx.send(r.is_ok());
        })
        .unwrap();
    }
    for _ in 0..6 {
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    }
    for _ in 0..3 {
        let e = reader
            .unary("/echo.Echo/Nope", b"d", &call_options())
            .unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);
    }

    let snap = ch.snapshot().unwrap();
    assert_eq!(snap.state, Ready);
    assert_eq!(snap.subchannels.len(), 3);
    let mut total = (0, 0, 0);
    for (sub, backend) in snap.subchannels.iter().zip(&backends) {
        let backend = backend.as_ref().unwrap();
        assert_eq!(sub.address, backend.addr().to_string());
        assert_eq!(sub.state, Ready);
        // The backend saw exactly the calls the snapshot says went there.
        assert_eq!(sub.calls_started, backend.requests(), "{sub:?}");
        assert_eq!(sub.calls_started, sub.calls_succeeded + sub.calls_failed);
        assert_eq!(sub.calls_in_flight, 0);
        assert!(sub.last_call.is_some());
        total.0 += sub.calls_started;
        total.1 += sub.calls_succeeded;
        total.2 += sub.calls_failed;
    }
    assert_eq!(total, (51, 48, 3));
    // round_robin spreads them: every backend got some.
    assert!(
        snap.subchannels.iter().all(|s| s.calls_succeeded >= 10),
        "{snap:?}"
    );

    // A call held by the backend shows in flight.
    let metadata = [("x-delay-ms".to_string(), "3000".to_string())];
    let slow = CallOptions {
        metadata: &metadata,
        ..call_options()
    };
    let handle = ch
        .unary_start("/echo.Echo/Unary", b"slow", &slow, |_| {})
        .unwrap();
    let held = snapshot_until(&ch, |s| {
        s.subchannels.iter().any(|s| s.calls_in_flight == 1)
    });
    assert_eq!(
        held.subchannels
            .iter()
            .map(|s| s.calls_in_flight)
            .sum::<u64>(),
        1,
        "{held:?}"
    );
    assert!(handle.cancel());
    let cancelled = snapshot_until(&ch, |s| {
        s.subchannels.iter().all(|s| s.calls_in_flight == 0)
    });
    assert_eq!(
        cancelled
            .subchannels
            .iter()
            .map(|s| s.calls_failed)
            .sum::<u64>(),
        4,
        "{cancelled:?}"
    );

    // Backend 0 stops: its subchannel leaves READY and says why.
    backends[0].take().unwrap().stop();
    let down = snapshot_until(&ch, |s| {
        let s = &s.subchannels[0];
        matches!(s.state, TransientFailure | Connecting) && s.last_error.is_some()
    });
    let sub = &down.subchannels[0];
    assert!(
        matches!(sub.state, TransientFailure | Connecting),
        "{sub:?}"
    );
    assert!(sub.last_error.is_some(), "{sub:?}");
    assert_eq!(down.state, Ready);
    // Its counts stay; the JSON form carries the same.
    let json: serde_json::Value = serde_json::from_str(&down.to_json()).unwrap();
    assert_eq!(json["policy"], "round_robin");
    assert_eq!(json["subchannels"][0]["address"], addrs[0]);
    assert_eq!(
        json["subchannels"][0]["calls_started"],
        down.subchannels[0].calls_started
    );
    assert!(json["subchannels"][0]["last_error"].is_string());
}

#[test]
fn a_resolver_error_is_logged_and_named_as_the_channels_reason() {
    let _turn = CALLBACK.lock().unwrap_or_else(|e| e.into_inner());
    // Other tests' channels log too: this test's records are told apart by
    // their unique error text.
    let records = record_logs(log::LevelFilter::Info);
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", None, options()).unwrap();
    ch.report_resolver_error("no such host: observe.invalid")
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), TransientFailure);
    trace::set_callback(None, log::LevelFilter::Off).unwrap();
    let lines = records.lock().unwrap().clone();
    let ours: Vec<_> = lines
        .iter()
        .filter(|(_, _, m)| m.contains("observe.invalid"))
        .collect();
    assert!(
        ours.iter()
            .any(|(l, t, _)| *l == log::Level::Warn && t == trace::RESOLVER),
        "{ours:#?}"
    );
    assert!(
        ours.iter().any(|(_, t, m)| t == trace::CHANNEL
            && m.contains("CONNECTING -> TRANSIENT_FAILURE (name resolver error: no such host")),
        "{ours:#?}"
    );
}

#[test]
fn health_changes_are_logged_with_the_backend() {
    use switchyard::transport::health_proto::NOT_SERVING;
    let _turn = CALLBACK.lock().unwrap_or_else(|e| e.into_inner());
    let records = record_logs(log::LevelFilter::Info);
    let backend = server();
    let addr = backend.addr().to_string();
    let rt = Runtime::new().unwrap();
    let config = r#"{"loadBalancingConfig":[{"round_robin":{}}],
                     "healthCheckConfig":{"serviceName":""}}"#;
    let ch = Channel::new(&rt, &format!("ipv4:{addr}"), Some(config), options()).unwrap();
    ch.reader()
        .unary("/echo.Echo/Unary", b"hi", &call_options())
        .unwrap();
    backend.set_serving("", NOT_SERVING);
    let until = Instant::now() + Duration::from_secs(10);
    while ch.state() != TransientFailure && Instant::now() < until {
        ch.wait_for_state_change(Ready, Some(Instant::now() + Duration::from_millis(100)));
    }
    assert_eq!(ch.state(), TransientFailure);
    trace::set_callback(None, log::LevelFilter::Off).unwrap();
    let lines = records.lock().unwrap().clone();
    let ours: Vec<_> = lines.iter().filter(|(_, _, m)| m.contains(&addr)).collect();
    let has =
        |target: &str, what: &str| ours.iter().any(|(_, t, m)| t == target && m.contains(what));
    assert!(has(trace::HEALTH, "reports SERVING"), "{ours:#?}");
    assert!(has(trace::HEALTH, "reports NOT_SERVING"), "{ours:#?}");
    assert!(
        has(
            trace::SUBCHANNEL,
            "READY -> TRANSIENT_FAILURE: connection active but health check failed"
        ),
        "{ours:#?}"
    );
}

/// gRFC A17: a backend without the health service (Watch ends
/// UNIMPLEMENTED) counts as healthy, and that is logged at ERROR, as
/// gRPC-Go's "Subchannel health check is unimplemented at server side, thus
/// health check is disabled".
#[test]
fn a_missing_health_service_is_logged_as_an_error() {
    let _turn = CALLBACK.lock().unwrap_or_else(|e| e.into_inner());
    let records = record_logs(log::LevelFilter::Info);
    let backend = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions {
            no_health: true,
            ..Default::default()
        },
    )
    .unwrap();
    let addr = backend.addr().to_string();
    let rt = Runtime::new().unwrap();
    let config = r#"{"loadBalancingConfig":[{"round_robin":{}}],
                     "healthCheckConfig":{"serviceName":""}}"#;
    let ch = Channel::new(&rt, &format!("ipv4:{addr}"), Some(config), options()).unwrap();
    ch.reader()
        .unary("/echo.Echo/Unary", b"hi", &call_options())
        .unwrap();
    assert_eq!(ch.state(), Ready);
    ch.close();
    trace::set_callback(None, log::LevelFilter::Off).unwrap();
    let lines = records.lock().unwrap().clone();
    let ours: Vec<_> = lines
        .iter()
        .filter(|(_, t, m)| m.contains(&addr) && t == trace::HEALTH)
        .collect();
    assert!(
        ours.iter()
            .any(|(l, _, m)| *l == log::Level::Error && m.contains("does not implement")),
        "{ours:#?}"
    );
}
