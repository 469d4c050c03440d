//! gRFC normative statements about the client channel (A6, A8, A17,
//! A21, A54) that no existing test pins, each checked against real servers
//! on 127.0.0.1. Each test quotes the sentence it checks.
//!
//! Where switchyard differs from the gRFC text on purpose (pinned
//! elsewhere): a call refused by GOAWAY is retried transparently on further
//! connections, not only once (A6 case 3; keepalive_goaway_cases.rs); the
//! retry buffer (256 KiB) and the maxAttempts cap (5) are constants, as
//! gRPC-Go's cap is. Retry throttling tokens are per channel, as gRPC-Go's
//! and grpc-java's (C-core shares them per server name).

#[path = "common/mod.rs"]
mod common;
#[path = "common/frame_server.rs"]
mod frame_server;
#[path = "common/h2_frames.rs"]
mod h2_frames;

use common::*;
use frame_server::*;
use h2_frames::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use switchyard::backoff::BackoffConfig;
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverState};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

const ECHO: &str = "/echo.Echo/Unary";

// ===========================================================================
// A8 (client-side keepalive), on the scripted frame server.

fn ka_channel(
    rt: &Runtime,
    server: &Server,
    time_ms: u64,
    timeout_ms: u64,
    without: bool,
) -> Channel {
    switchyard::transport::set_min_keepalive_time_for_testing(Duration::from_millis(100));
    Channel::new(
        rt,
        &format!("ipv4:{}", server.addr),
        None,
        ChannelOptions {
            transport: Some(TransportConfig {
                keepalive: Some(Keepalive {
                    time: Duration::from_millis(time_ms),
                    timeout: Duration::from_millis(timeout_ms),
                    permit_without_calls: without,
                }),
                ..TransportConfig::insecure()
            }),
            backoff: BackoffConfig {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(200),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap()
}

fn ka_ready(ch: &Channel) {
    ch.connect().unwrap();
    wait_state(ch, Ready);
}

fn start_call(ch: &Channel, deadline: Duration) -> mpsc::Receiver<Result<UnaryResponse, Status>> {
    let (tx, rx) = mpsc::channel();
    ch.unary_start(
        ECHO,
        b"hi",
        &CallOptions {
            deadline: Some(Instant::now() + deadline),
            wait_for_ready: Some(false),
            ..Default::default()
        },
        move |r| {
            let _ = tx.send(r);
        },
    )
    .unwrap();
    rx
}

/// A8 "Basic Keepalive": "it is important to not reset the _keepalive
/// time_ when a connection becomes active; if a new stream is created and
/// there has been greater than 'keepalive time' since the last read byte,
/// then a keepalive PING should be sent (ideally before the HEADERS frame).
/// Doing so detects the broken connection with a latency of _keepalive
/// timeout_ instead of _keepalive time + timeout_."
/// Keepalive time 1 s, no PINGs without calls; the connection sits quiet
/// 1.6 s; then a call starts: its PING should come with (or before) its
/// HEADERS, not a whole keepalive time later.
/// (gRPC-Go: `keepalive()` goes dormant and on wake-up checks lastRead, so
/// the PING goes at once; grpc-java: KeepAliveManager.onTransportActive
/// sends at once when nextKeepaliveTime has passed.)
#[test]
fn a8_a_stream_after_keepalive_time_of_silence_is_pinged_at_once() {
    let server = Server::start(|c| {
        c.greet()?;
        while let Some(s) = c.request()? {
            if !c.idle_for(Duration::from_millis(1500))? {
                return Ok(());
            }
            c.answer_ok(s)?;
        }
        Ok(())
    });
    let rt = Runtime::new().unwrap();
    let ch = ka_channel(&rt, &server, 1000, 5000, false);
    ka_ready(&ch);
    thread::sleep(Duration::from_millis(1600));
    assert!(server.pings(0).is_empty(), "pings while idle");
    let rx = start_call(&ch, Duration::from_secs(5));
    let r = rx.recv_timeout(Duration::from_secs(8)).expect("no result");
    assert!(r.is_ok(), "{r:?}");
    let ev = server.timed_events();
    let headers = ev
        .iter()
        .find(|(i, e, _)| *i == 0 && matches!(e, Ev::Headers(_)))
        .map(|(_, _, t)| *t)
        .expect("no HEADERS");
    let first_ping = server.pings(0).first().copied().expect("no PING at all");
    let after = first_ping.saturating_duration_since(headers);
    eprintln!(
        "first PING {:?} after HEADERS ({:?} before)",
        after,
        headers.saturating_duration_since(first_ping)
    );
    assert!(
        first_ping <= headers || after < Duration::from_millis(300),
        "first PING came {after:?} after the HEADERS of a stream started {} ms into silence; \
         A8: at once (ideally before HEADERS), not a keepalive time (1 s) later",
        1600
    );
    ch.close();
}

/// A8 "Basic Keepalive": the keepalive timeout is "the time between sending
/// a PING and not receiving any bytes to declare the connection dead".
/// The client PINGs; the server never acks but keeps sending bytes (its own
/// PINGs, every 100 ms, 2 s long, timeout 600 ms): the connection is alive
/// and must not be closed. (gRPC-Go: `keepalive()` checks `lastRead` after
/// the timeout; grpc-java: KeepAliveManager.onDataReceived cancels the
/// shutdown.)
#[test]
fn a8_bytes_read_during_the_keepalive_timeout_keep_the_connection() {
    let server = Server::start(|c| {
        if c.index > 0 {
            return c.serve_good();
        }
        c.greet()?;
        if !c.until_unacked_ping(Duration::from_secs(3))? {
            return Ok(());
        }
        for i in 0..20u64 {
            if !c.idle_for(Duration::from_millis(100))? {
                return Ok(());
            }
            c.send(&frame(PING, 0, 0, &(1000 + i).to_be_bytes()))?;
        }
        c.until_eof()
    });
    server.acks.store(false, Ordering::Release);
    let rt = Runtime::new().unwrap();
    let ch = ka_channel(&rt, &server, 200, 600, true);
    ka_ready(&ch);
    // Wait for the first (unacked) client PING, then 2 s of server bytes.
    assert!(
        server.wait_for(Duration::from_secs(3), |_| !server.pings(0).is_empty()),
        "no client PING"
    );
    let ping = server.pings(0)[0];
    thread::sleep(Duration::from_millis(1900));
    let eof = server.eof(0);
    if let Some(t) = eof {
        panic!(
            "the client closed the connection {:?} after its unacked PING although the \
             server sent bytes every 100 ms (A8: timeout = no bytes received); events {:?}",
            t.saturating_duration_since(ping),
            server.events()
        );
    }
    ch.close();
}

// ===========================================================================
// A54: a picker's restricted status, and retries.

#[derive(Clone)]
struct CountingFail(Status, Arc<AtomicUsize>);

impl Picker for CountingFail {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        self.1.fetch_add(1, Ordering::SeqCst);
        PickResult::Fail(&self.0)
    }
}

struct FixedBuilder(String, CountingFail);
struct FixedLb(CountingFail);

impl Builder for FixedBuilder {
    fn name(&self) -> &str {
        &self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(FixedLb(self.1.clone()))
    }
}

impl Balancer for FixedLb {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        _: ClientConnState,
    ) -> Result<(), String> {
        cc.update_state(TransientFailure, Box::new(self.0.clone()));
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn work(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

fn failing_channel(
    rt: &Runtime,
    name: &str,
    st: Status,
    picks: Arc<AtomicUsize>,
    extra: &str,
) -> Channel {
    registry::register(Arc::new(FixedBuilder(
        name.to_string(),
        CountingFail(st, picks),
    )));
    let config = format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]{extra}}}"#);
    Channel::new(rt, "ipv4:127.0.0.1:1", Some(&config), plaintext()).unwrap()
}

fn ff_call(ch: &Channel) -> Result<UnaryResponse, Status> {
    ch.reader().unary(
        ECHO,
        b"hi",
        &CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            wait_for_ready: Some(false),
            ..Default::default()
        },
    )
}

fn retry_on(code: &str) -> String {
    format!(
        r#","methodConfig":[{{"name":[{{"service":"echo.Echo"}}],"retryPolicy":{{"maxAttempts":3,"initialBackoff":"0.02s","maxBackoff":"0.02s","backoffMultiplier":1.0,"retryableStatusCodes":["{code}"]}}}}]"#
    )
}

/// A54: "If a failed Picker result or CallCredentials failure occurs, retry
/// policy status code matching may only occur after the control plane
/// status check and rewrite." A picker failing ABORTED under a retryPolicy
/// listing ABORTED: the call sees INTERNAL and is not retried (one pick);
/// under a policy listing INTERNAL it is retried (three picks).
/// (grpc-java: GrpcUtil.getTransportFromPickResult rewrites before
/// RetriableStream's makeRetryDecision; C-core likewise.)
#[test]
fn a54_retry_codes_are_matched_against_the_rewritten_status() {
    let rt = Runtime::new().unwrap();
    let mut bad = Vec::new();
    for (listed, want_picks) in [("ABORTED", 1), ("INTERNAL", 3)] {
        let picks = Arc::new(AtomicUsize::new(0));
        let ch = failing_channel(
            &rt,
            &format!("grfc_channel_a54_{}", listed.to_lowercase()),
            Status::new(Code::Aborted, "control plane says aborted"),
            picks.clone(),
            &retry_on(listed),
        );
        let r = ff_call(&ch);
        let n = picks.load(Ordering::SeqCst);
        let ok = matches!(&r, Err(s) if s.code() == Code::Internal) && n == want_picks;
        if !ok {
            bad.push(format!(
                "retryable [{listed}]: {r:?} after {n} picks; want INTERNAL after {want_picks}"
            ));
        }
        ch.close();
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// A54: "Inappropriate statuses" include "`OK` (in some APIs this is okay,
/// but it must not be copied to an RPC)"; "the status should be rewritten
/// to use `INTERNAL`". A picker failing with code OK: the call fails
/// INTERNAL (never succeeds, never OK).
#[test]
fn a54_a_picker_failing_with_ok_fails_the_call_internal() {
    let rt = Runtime::new().unwrap();
    let picks = Arc::new(AtomicUsize::new(0));
    let ch = failing_channel(
        &rt,
        "grfc_channel_a54_ok",
        Status::new(Code::Ok, "ok from the picker"),
        picks.clone(),
        "",
    );
    let r = ff_call(&ch);
    assert!(
        matches!(&r, Err(s) if s.code() == Code::Internal),
        "{r:?}; A54: INTERNAL"
    );
    // The same through a pick (the host's path).
    let e = ch
        .reader()
        .try_pick(&PickInfo::default())
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.status().code(), Code::Internal, "{e:?}");
    ch.close();
}

// ===========================================================================
// A21: an invalid config after a result with no config.

fn backend() -> TestServer {
    TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap()
}

/// A21 "Behavior on receiving a new gRPC Config", 5.1: "If it previously
/// had selected a valid service config or no service config, it should
/// continue using that previous configuration from that config. An empty
/// service config is valid." A channel with no default config: the
/// resolver's first result has no config (the empty config applies), the
/// second an invalid one: the channel keeps serving with the empty config,
/// never TRANSIENT_FAILURE, and its calls succeed.
#[test]
fn a21_an_invalid_config_after_no_config_keeps_the_empty_config() {
    let b = backend();
    let r = ManualResolver::new("grfc-channel-a21");
    resolver::register(Arc::new(r.clone()));
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "grfc-channel-a21:///t", None, plaintext()).unwrap();
    ch.connect().unwrap();
    wait_until("the resolver built", || r.client_conn().is_some());
    let ep = vec![Endpoint::from(Address::new(b.addr().to_string()))];
    let _ = r.update(ResolverState {
        endpoints: ep.clone(),
        service_config: None,
    });
    let mut rd = ch.reader();
    assert!(echo(&mut rd, true).is_ok());
    let _ = r.update(ResolverState {
        endpoints: ep,
        service_config: Some(r#"{"methodConfig":[{"name":[{}],"timeout":"x"}]}"#.into()),
    });
    ch.sync().unwrap();
    let states: Arc<Mutex<Vec<ConnectivityState>>> = Arc::default();
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        states.lock().unwrap().push(ch.state());
        thread::sleep(Duration::from_millis(20));
    }
    let seen = states.lock().unwrap().clone();
    assert!(!seen.contains(&TransientFailure), "states {seen:?}");
    let res = echo(&mut rd, false);
    assert!(
        res.is_ok(),
        "{res:?}; A21 5.1: keep the previous (empty) config"
    );
    ch.close();
}

// ===========================================================================
// A8: the too_many_pings GOAWAY is logged where it is seen by default.

/// A8 "Server Enforcement": "When a client receives a GOAWAY with error code
/// ENHANCE_YOUR_CALM and debug data equal to ASCII "too_many_pings", it
/// should log the occurrence at a log level that is enabled by default".
/// gRPC-Go logs it with `logger.Errorf` (http2_client.go handleGoAway) and
/// C-core with LOG(ERROR) (chttp2 goaway handling), both at ERROR, their
/// only level printed by default (GRPC_GO_LOG_SEVERITY_LEVEL /
/// GRPC_VERBOSITY default ERROR); the `log` ecosystem's default filter
/// (env_logger with no RUST_LOG) also shows only ERROR. The record's level
/// is captured through `trace::set_callback`.
#[test]
fn a8_too_many_pings_goaway_is_logged_at_error() {
    let seen: Arc<Mutex<Vec<(switchyard::trace::Level, String)>>> = Arc::default();
    let s2 = seen.clone();
    switchyard::trace::set_callback(
        Some(Arc::new(move |level, _target: &str, msg: &str| {
            if msg.contains("too_many_pings") {
                s2.lock().unwrap().push((level, msg.to_string()));
            }
        })),
        switchyard::trace::LevelFilter::Trace,
    )
    .unwrap();
    let server = Server::start(|c| {
        c.greet()?;
        if c.index > 0 {
            return c.until_eof();
        }
        while let Some(f) = c.next()? {
            if f.kind == PING && f.flags & ACK == 0 {
                c.goaway(0, 0xb, b"too_many_pings")?;
                break;
            }
        }
        c.until_eof()
    });
    let rt = Runtime::new().unwrap();
    let ch = ka_channel(&rt, &server, 100, 2000, true);
    ka_ready(&ch);
    assert!(
        server.wait_eof(0, Duration::from_secs(3)),
        "{:?}",
        server.events()
    );
    let end = Instant::now() + Duration::from_secs(2);
    while seen.lock().unwrap().is_empty() && Instant::now() < end {
        thread::sleep(Duration::from_millis(10));
    }
    ch.close();
    let got = seen.lock().unwrap().clone();
    switchyard::trace::set_callback(None, switchyard::trace::LevelFilter::Off).unwrap();
    assert!(!got.is_empty(), "no record mentions too_many_pings");
    assert!(
        got.iter()
            .any(|(l, _)| *l == switchyard::trace::Level::Error),
        "logged at {:?}; gRPC-Go and C-core log it at ERROR, the level seen by default",
        got
    );
}

// ===========================================================================
// A6 throttling: "For each server name".

/// A6 "Throttling Retry Attempts and Hedged RPCs": "Throttling may only be
/// specified per server name" and "For each server name, the gRPC client
/// maintains a `token_count`". Two channels to the same target, maxTokens 3
/// (threshold 1.5), every answer UNAVAILABLE, maxAttempts 5:
/// per channel: each channel's first call makes 2 attempts (3 -> 2 retry,
/// 2 -> 1 stop); per server name (C-core's process-wide
/// ServerRetryThrottleMap, keyed by the server name): the second channel's
/// call starts at 1 token and makes 1 attempt. gRPC-Go (per ClientConn)
/// and grpc-java (per ManagedChannel) keep one count per channel.
/// This pins switchyard's side: per channel.
#[test]
fn a6_retry_tokens_are_per_channel_not_per_server_name_as_go_and_java() {
    let server = Server::start(|c| {
        c.greet()?;
        while let Some(s) = c.request()? {
            c.trailers_only(s, "14")?;
        }
        Ok(())
    });
    let sc = r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],"retryPolicy":{"maxAttempts":5,"initialBackoff":"0.01s","maxBackoff":"0.01s","backoffMultiplier":1.0,"retryableStatusCodes":["UNAVAILABLE"]}}],"retryThrottling":{"maxTokens":3,"tokenRatio":0.1}}"#;
    let rt = Runtime::new().unwrap();
    let mut attempts = Vec::new();
    let mut chans = Vec::new();
    for _ in 0..2 {
        let ch =
            Channel::new(&rt, &format!("ipv4:{}", server.addr), Some(sc), plaintext()).unwrap();
        let n0 = server
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, Ev::Headers(_)))
            .count();
        let r = ff_call(&ch);
        assert_eq!(r.unwrap_err().code(), Code::Unavailable);
        let n1 = server
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, Ev::Headers(_)))
            .count();
        attempts.push(n1 - n0);
        chans.push(ch);
    }
    assert_eq!(
        attempts,
        vec![2, 2],
        "attempts per channel's first call: {attempts:?} (per server name, C-core: [2, 1])"
    );
}

// ===========================================================================
// A6 hedging, summary case 3.

/// A6 "Summary of Retry and Hedging Logic", case 3 (non-fatal status
/// without pushback), hedging policy: "Immediately send next scheduled
/// hedged request, if any. Subsequent hedged requests will resume at
/// `hedgingDelay`." hedgingDelay 400 ms, maxAttempts 4: the first attempt
/// fails UNAVAILABLE after 150 ms, so the second goes at once (~150 ms);
/// the third then goes a hedgingDelay after the second (~550 ms) and the
/// fourth a hedgingDelay after that (~950 ms). (grpc-java disagrees: it
/// waits for the scheduled hedge; gRPC-Go and C-core have no hedging.)
#[test]
fn a6_after_a_non_fatal_failure_hedges_resume_at_hedging_delay() {
    let server = Server::start(|c| {
        c.greet()?;
        let Some(s0) = c.request()? else {
            return Ok(());
        };
        if !c.idle_for(Duration::from_millis(150))? {
            return Ok(());
        }
        c.trailers_only(s0, "14")?;
        c.until_eof()
    });
    let sc = r#"{"methodConfig":[{"name":[{"service":"echo.Echo"}],"hedgingPolicy":{"maxAttempts":4,"hedgingDelay":"0.4s","nonFatalStatusCodes":["UNAVAILABLE"]}}]}"#;
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr), Some(sc), plaintext()).unwrap();
    ch.connect().unwrap();
    wait_state(&ch, Ready);
    let r = ch.reader().unary(
        ECHO,
        b"hi",
        &CallOptions {
            deadline: Some(Instant::now() + Duration::from_millis(1600)),
            wait_for_ready: Some(false),
            ..Default::default()
        },
    );
    assert!(r.is_err(), "{r:?}");
    let hs: Vec<Instant> = server
        .timed_events()
        .into_iter()
        .filter(|(_, e, _)| matches!(e, Ev::Headers(_)))
        .map(|(_, _, t)| t)
        .collect();
    let at: Vec<u128> = hs.iter().map(|t| (*t - hs[0]).as_millis()).collect();
    eprintln!("attempts at {at:?} ms");
    assert_eq!(at.len(), 4, "attempts at {at:?} ms");
    let ok = (100..350).contains(&at[1])
        && (at[2] - at[1]).abs_diff(400) < 120
        && (at[3] - at[2]).abs_diff(400) < 120;
    assert!(
        ok,
        "attempts at {at:?} ms; A6: [0, ~150, ~550, ~950] (the next at once, then every hedgingDelay)"
    );
    ch.close();
}

// ===========================================================================
// A21: unknown fields do not affect validation.

/// A21 "Criteria to determine the validity of a service config": "the
/// client validates each field that it recognizes while ignoring the
/// unknown fields, i.e., unknown fields do not affect validation."
/// Unknown fields (of any JSON type) at every level of a valid config.
#[test]
fn a21_unknown_fields_at_every_level_are_ignored() {
    use switchyard::service_config::ServiceConfig;
    let rows = [
        r#"{"zzz":[1,{"a":null}]}"#,
        r#"{"methodConfig":[{"name":[{"service":"s","zzz":1}],"zzz":"x"}]}"#,
        r#"{"methodConfig":[{"name":[{"service":"s"}],"retryPolicy":{"maxAttempts":2,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":[14],"zzz":{}}}]}"#,
        r#"{"methodConfig":[{"name":[{"service":"s"}],"hedgingPolicy":{"maxAttempts":2,"zzz":true}}]}"#,
        r#"{"retryThrottling":{"maxTokens":10,"tokenRatio":0.1,"zzz":-1}}"#,
        r#"{"healthCheckConfig":{"serviceName":"x","zzz":[]}}"#,
        r#"{"loadBalancingConfig":[{"round_robin":{"zzz":1}}]}"#,
        r#"{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true,"zzz":1}}]}"#,
    ];
    let bad: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            ServiceConfig::parse(Some(r))
                .err()
                .map(|e| format!("{r}: {e}"))
        })
        .collect();
    assert!(bad.is_empty(), "rejected:\n{}", bad.join("\n"));
}
