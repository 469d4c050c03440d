//! gRPC channelz semantics (gRPC-Go `test/channelz_test.go`, client
//! side; gRFC A14) against `Channel::snapshot()`, on the library's own
//! connections (real servers on 127.0.0.1) and on a host-transport channel.
//!
//! Found here and added: the channel's own call counts (A14's
//! ChannelData calls_started / succeeded / failed and the last call's
//! start), each call once, also one that failed before any pick. Pinned
//! where switchyard differs on purpose: an oversized request is refused
//! before any pick (counted on the channel only; Go also on the subchannel
//! it picked); a host pick's `last_call` is when a snapshot first saw it;
//! a host pick that failed counts on no subchannel; the health-check
//! stream is no call on its subchannel (Go counts it).

#[path = "engine/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant, SystemTime};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

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
        deadline: Some(Instant::now() + Duration::from_secs(5)),
        wait_for_ready: Some(true),
        ..Default::default()
    }
}

fn snapshot_until(ch: &Channel, done: impl Fn(&ChannelSnapshot) -> bool) -> ChannelSnapshot {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let s = ch.snapshot().unwrap();
        if done(&s) || Instant::now() > until {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (started, succeeded, failed) summed over the subchannels.
fn sub_totals(s: &ChannelSnapshot) -> (u64, u64, u64) {
    s.subchannels.iter().fold((0, 0, 0), |t, c| {
        (
            t.0 + c.calls_started,
            t.1 + c.calls_succeeded,
            t.2 + c.calls_failed,
        )
    })
}

/// TestCZGetChannel + TestCZGetSubChannel: the channel shows its target and
/// READY; its one subchannel shows the backend's address and READY.
#[test]
fn cz_get_channel_and_subchannel_show_target_and_ready() {
    let backend = server();
    let target = format!("ipv4:{}", backend.addr());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target, None, options()).unwrap();
    ch.reader()
        .unary("/echo.Echo/Unary", b"hi", &call_options())
        .unwrap();
    let s = snapshot_until(&ch, |s| s.state == Ready);
    assert_eq!(s.target, target);
    assert_eq!(s.policy, "pick_first");
    assert_eq!(s.state, Ready);
    assert_eq!(s.subchannels.len(), 1, "{s:?}");
    assert_eq!(s.subchannels[0].address, backend.addr().to_string());
    assert_eq!(s.subchannels[0].state, Ready);
    let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
    assert_eq!(json["target"], target.as_str());
    assert_eq!(json["state"], "READY");
}

/// TestCZClientSubChannelSocketRegistrationAndDeletion: 3 backends under
/// round_robin give 3 subchannels; when the resolver drops one address its
/// subchannel is deleted from the channel's list.
#[test]
fn cz_subchannel_is_deleted_when_its_address_is_removed() {
    let backends: Vec<TestServer> = (0..3).map(|_| server()).collect();
    let list: Vec<Address> = backends
        .iter()
        .map(|b| Address::new(b.addr().to_string()))
        .collect();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", Some(RR), options()).unwrap();
    ch.update_addresses(list.clone()).unwrap();
    ch.connect().unwrap();
    let s = snapshot_until(&ch, |s| {
        s.subchannels.len() == 3 && s.subchannels.iter().all(|c| c.state == Ready)
    });
    assert_eq!(s.subchannels.len(), 3, "{s:?}");
    assert!(s.subchannels.iter().all(|c| c.state == Ready), "{s:?}");
    ch.update_addresses(list[..2].to_vec()).unwrap();
    let s = snapshot_until(&ch, |s| s.subchannels.len() == 2);
    let got: Vec<String> = s.subchannels.iter().map(|c| c.address.clone()).collect();
    let want: Vec<String> = backends[..2].iter().map(|b| b.addr().to_string()).collect();
    assert_eq!(got, want, "{s:?}");
}

/// TestCZChannelMetrics: 3 backends, round_robin, client max send size 8.
/// One OK call, one call whose request is too large (RESOURCE_EXHAUSTED),
/// one call left open. The channel's own counters are gRPC-Go's: 3 started,
/// 1 succeeded, 1 failed, 1 in flight. Over the subchannels gRPC-Go counts
/// 3 / 1 / 1 too (it picks at stream creation, stream.go
/// newClientStreamWithParams `op` -> getTransport, and fails the oversized
/// message in SendMsg, finishing that attempt); switchyard refuses it
/// before picking (as C-core's message-size filter does, at the call), so
/// no subchannel saw it: 2 / 1 / 0, pinned.
#[test]
fn cz_channel_metrics_count_an_oversized_request_on_the_channel_only() {
    let backends: Vec<TestServer> = (0..3).map(|_| server()).collect();
    let list: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    let target = format!("ipv4:{}", list.join(","));
    let config = r#"{"loadBalancingConfig":[{"round_robin":{}}],
        "methodConfig":[{"name":[{"service":"echo.Echo"}],"maxRequestMessageBytes":8}]}"#;
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target, Some(config), options()).unwrap();
    let mut r = ch.reader();
    r.unary("/echo.Echo/Unary", b"a", &call_options()).unwrap();
    let e = r
        .unary("/echo.Echo/Unary", &[7u8; 64], &call_options())
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    let metadata = [("x-delay-ms".to_string(), "3000".to_string())];
    let slow = CallOptions {
        metadata: &metadata,
        ..call_options()
    };
    let handle = ch
        .unary_start("/echo.Echo/Unary", b"b", &slow, |_| {})
        .unwrap();
    // While the third call is open (Go's FullDuplexCall stream).
    let s = snapshot_until(&ch, |s| {
        s.subchannels.iter().any(|c| c.calls_in_flight == 1)
    });
    handle.cancel();
    assert!(
        s.subchannels.iter().any(|c| c.calls_in_flight == 1),
        "{s:?}"
    );
    assert_eq!(s.subchannels.len(), 3);
    assert_eq!(sub_totals(&s), (2, 1, 0), "{s:?}");
    assert_eq!(
        (
            s.calls_started,
            s.calls_succeeded,
            s.calls_failed,
            s.calls_in_flight
        ),
        (3, 1, 1, 1),
        "{s:?}"
    );
}

/// gRFC A14 ("The number of calls started, succeeded, and failed on a
/// channel"; channelz.proto ChannelData.calls_started/...,
/// last_call_started_timestamp) and TestCZChannelMetrics'
/// `tcs[0].ChannelMetrics.CallsStarted/Succeeded/Failed`: the channel keeps
/// its own per-call counts, which include calls that fail before any
/// subchannel is picked (gRPC-Go: stream.go newClientStream
/// `cc.incrCallsStarted()` before the pick, `endOfClientStream`).
#[test]
fn cz_channel_level_call_counts_include_calls_failed_before_a_pick() {
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", None, options()).unwrap();
    ch.report_resolver_error("no addresses yet").unwrap();
    ch.sync().unwrap();
    let mut r = ch.reader();
    // Fail-fast: UNAVAILABLE from the picker.
    let fast = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(5)),
        wait_for_ready: Some(false),
        ..Default::default()
    };
    let e = r.unary("/echo.Echo/Unary", b"a", &fast).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    // Wait-for-ready: DEADLINE_EXCEEDED while queued.
    let wfr = CallOptions {
        deadline: Some(Instant::now() + Duration::from_millis(100)),
        wait_for_ready: Some(true),
        ..Default::default()
    };
    let e = r.unary("/echo.Echo/Unary", b"a", &wfr).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    let s = ch.snapshot().unwrap();
    assert!(s.subchannels.is_empty(), "{s:?}");
    let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
    // gRPC: channel calls_started 2, calls_failed 2, a last-call timestamp.
    assert_eq!(json["calls_started"], 2, "{json}");
    assert_eq!(json["calls_failed"], 2, "{json}");
    assert_eq!(json["calls_succeeded"], 0, "{json}");
}

/// Counts across retries (gRFC A6 + A14; gRPC-Go picks per attempt and
/// counts each pick on the subchannel: picker_wrapper.go
/// doneChannelzWrapper). One backend, maxAttempts 3, the first two attempts
/// fail UNAVAILABLE: the subchannel shows 3 started, 2 failed, 1 succeeded.
#[test]
fn cz_retry_attempts_each_count_on_the_subchannel() {
    let backend = server();
    let target = format!("ipv4:{}", backend.addr());
    let config = r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],"retryPolicy":{"maxAttempts":3,"initialBackoff":"0.01s","maxBackoff":"0.05s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]}"#;
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target, Some(config), options()).unwrap();
    let metadata = [("x-fail-attempts".to_string(), "2".to_string())];
    let opts = CallOptions {
        metadata: &metadata,
        ..call_options()
    };
    ch.reader().unary("/echo.Echo/Unary", b"a", &opts).unwrap();
    let s = ch.snapshot().unwrap();
    assert_eq!(s.subchannels.len(), 1);
    let c = &s.subchannels[0];
    assert_eq!(
        (c.calls_started, c.calls_succeeded, c.calls_failed),
        (3, 1, 2),
        "{s:?}"
    );
    assert_eq!(backend.requests(), 3);
}

/// LastCallStartedTimestamp (gRPC-Go clientconn.go addrConn.incrCallsStarted
/// stores time.Now() at each pick): the subchannel's last call time lies
/// between just before and just after the latest call, and moves with it.
#[test]
fn cz_last_call_started_timestamp_follows_the_latest_call() {
    let backend = server();
    let target = format!("ipv4:{}", backend.addr());
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target, None, options()).unwrap();
    let mut r = ch.reader();
    r.unary("/echo.Echo/Unary", b"a", &call_options()).unwrap();
    let first = ch.snapshot().unwrap().subchannels[0].last_call.unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let before = SystemTime::now();
    r.unary("/echo.Echo/Unary", b"a", &call_options()).unwrap();
    let after = SystemTime::now();
    let s = ch.snapshot().unwrap();
    let last = s.subchannels[0].last_call.unwrap();
    assert!(last >= before && last <= after, "{s:?}");
    assert!(last > first);
    // A snapshot alone does not move it.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(ch.snapshot().unwrap().subchannels[0].last_call, Some(last));
}

/// Host-transport channel, documented (src/snapshot.rs module docs: "Picks
/// carry no clock: a host pick's `last_call` is when a snapshot first saw
/// the subchannel's started count move"): pinned. gRPC would report the
/// pick's own time.
#[test]
fn host_pick_last_call_is_when_a_snapshot_first_saw_it() {
    use support::*;
    let host = Host::new();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", Some(RR), support::options(&host)).unwrap();
    ch.update_addresses(addrs(&["a:1"])).unwrap();
    host.wait("connecting", |evs| evs.contains(&Ev::Connect("a:1".into())));
    report(&ch, &host, &["a:1"], Ready);
    let s = ch.snapshot().unwrap();
    assert_eq!(s.subchannels[0].last_call, None);
    let mut r = ch.reader();
    let picked_at = SystemTime::now();
    r.try_pick(&PickInfo::default())
        .unwrap()
        .done(&DoneInfo::OK);
    std::thread::sleep(Duration::from_millis(50));
    let snapshot_at = SystemTime::now();
    let s = ch.snapshot().unwrap();
    let c = &s.subchannels[0];
    assert_eq!(
        (c.calls_started, c.calls_succeeded, c.calls_failed),
        (1, 1, 0)
    );
    let last = c.last_call.unwrap();
    // Not the pick's time: the first snapshot that saw it.
    assert!(last >= snapshot_at, "{last:?} vs pick {picked_at:?}");
    // Stays until the count moves again.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(ch.snapshot().unwrap().subchannels[0].last_call, Some(last));
}

/// Host-transport channel: a pick that fails (nothing READY) is counted on
/// no subchannel and the snapshot has no channel-level counter for it
/// (gRPC would count the RPC on the channel: A14 channel calls_failed).
/// Pinned switchyard side for the subchannels; see
/// `cz_channel_level_call_counts_include_calls_failed_before_a_pick`.
#[test]
fn host_failed_picks_count_on_no_subchannel() {
    use support::*;
    let host = Host::new();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", Some(RR), support::options(&host)).unwrap();
    ch.update_addresses(addrs(&["a:1"])).unwrap();
    host.wait("connecting", |evs| evs.contains(&Ev::Connect("a:1".into())));
    report(&ch, &host, &["a:1"], TransientFailure);
    let mut r = ch.reader();
    for _ in 0..5 {
        assert!(r.try_pick(&PickInfo::default()).is_err());
    }
    let s = ch.snapshot().unwrap();
    assert_eq!(sub_totals(&s), (0, 0, 0), "{s:?}");
}

/// Not in channelz_test.go; noted: gRPC-Go counts a subchannel's health
/// Watch stream as a call on the subchannel (stream.go
/// newNonRetryClientStream → `ac.incrCallsStarted()`). switchyard's
/// snapshot counts only RPCs (pinned here).
#[test]
fn health_watch_stream_is_not_counted_as_a_subchannel_call() {
    let backend = server();
    let target = format!("ipv4:{}", backend.addr());
    let config =
        r#"{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":""}}"#;
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target, Some(config), options()).unwrap();
    ch.reader()
        .unary("/echo.Echo/Unary", b"a", &call_options())
        .unwrap();
    let s = ch.snapshot().unwrap();
    let c = &s.subchannels[0];
    assert_eq!(
        (c.calls_started, c.calls_succeeded, c.calls_in_flight),
        (1, 1, 0),
        "{s:?}"
    );
}

/// Counts across retries on different subchannels: round_robin over 2
/// backends, backend 0 fails every attempt UNAVAILABLE, maxAttempts 2. Each
/// attempt counts on the subchannel it was sent on (gRPC-Go: one pick per
/// attempt, doneChannelzWrapper), so each subchannel's started equals what
/// its backend received and backend 0's are all failures.
#[test]
fn cz_retry_attempts_count_on_the_subchannel_each_was_sent_on() {
    let backends: Vec<TestServer> = (0..2).map(|_| server()).collect();
    let list: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    let target = format!("ipv4:{}", list.join(","));
    let config = r#"{"loadBalancingConfig":[{"round_robin":{}}],"methodConfig":[{"name":[{"service":"echo.Echo"}],"retryPolicy":{"maxAttempts":2,"initialBackoff":"0.01s","maxBackoff":"0.05s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]}"#;
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &target, Some(config), options()).unwrap();
    let port = backends[0].addr().port().to_string();
    let metadata = [("x-fail-port".to_string(), port)];
    let opts = CallOptions {
        metadata: &metadata,
        ..call_options()
    };
    ch.connect().unwrap();
    let s = snapshot_until(&ch, |s| s.subchannels.iter().all(|c| c.state == Ready));
    assert!(s.subchannels.iter().all(|c| c.state == Ready), "{s:?}");
    let mut r = ch.reader();
    let mut ok = 0;
    for _ in 0..10 {
        ok += r.unary("/echo.Echo/Unary", b"a", &opts).is_ok() as u64;
    }
    let s = ch.snapshot().unwrap();
    for (c, b) in s.subchannels.iter().zip(&backends) {
        assert_eq!(c.calls_started, b.requests(), "{s:?}");
    }
    let (b0, b1) = (&s.subchannels[0], &s.subchannels[1]);
    assert_eq!(b0.calls_failed, b0.calls_started, "{s:?}");
    assert_eq!(b0.calls_succeeded, 0, "{s:?}");
    assert_eq!((b1.calls_succeeded, b1.calls_failed), (ok, 0), "{s:?}");
    assert!(
        ok >= 5,
        "round_robin alternates: {ok} of 10 calls succeeded; {s:?}"
    );
    assert!(b0.calls_started >= 1, "{s:?}");
}
