//! The method's `retryPolicy` and the channel's `retryThrottling` (gRFC A6)
//! on the library's own calls, blocking and started, against real backends
//! on 127.0.0.1 that fail as each call's metadata asks (the test server's
//! `x-fail-*` headers): what is retried, how often, where, and when not.

use super::support::*;
use crossbeam_channel::bounded;
use std::time::{Duration, Instant};
use switchyard::*;
use switchyard_testserver::TestServer;

const ECHO: &str = "/echo.Echo/Unary";

/// A service config retrying echo calls on `codes` up to `attempts` times,
/// after 10-50 ms backoffs; `more` adds top-level fields.
fn retry_config(attempts: u32, codes: &str, more: &str) -> String {
    format!(
        r#"{{"methodConfig":[{{"name":[{{"service":"echo.Echo"}}],"retryPolicy":{{"maxAttempts":{attempts},"initialBackoff":"0.01s","maxBackoff":"0.05s","backoffMultiplier":2,"retryableStatusCodes":[{codes}]}}}}]{more}}}"#
    )
}

/// Retries UNAVAILABLE after 24-36 s: longer than any test waits.
fn slow_retry_config() -> String {
    retry_config(5, r#""UNAVAILABLE""#, "")
        .replace("0.01s", "30s")
        .replace("0.05s", "60s")
}

/// One call each way, blocking then started, with `metadata` and a 10 s
/// deadline (`deadline` overrides it).
fn both(
    ch: &Channel,
    metadata: &[(String, String)],
    deadline: Option<Duration>,
) -> [Result<UnaryResponse, Status>; 2] {
    both_sending(ch, b"ping", metadata, deadline)
}

/// `both`, sending `request`.
fn both_sending(
    ch: &Channel,
    request: &[u8],
    metadata: &[(String, String)],
    deadline: Option<Duration>,
) -> [Result<UnaryResponse, Status>; 2] {
    let options = || CallOptions {
        deadline: Some(Instant::now() + deadline.unwrap_or(Duration::from_secs(10))),
        metadata,
        ..Default::default()
    };
    let blocking = ch.reader().unary(ECHO, request, &options());
    let (tx, rx) = bounded(1);
    ch.unary_start(ECHO, request, &options(), move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    let started = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the started call completes");
    [blocking, started]
}

#[test]
fn a_retryable_failure_is_retried_until_an_attempt_succeeds() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &retry_config(4, r#""UNAVAILABLE""#, ""));
    let md = meta(&[("x-fail-attempts", "2")]);
    for r in both(&ch, &md, None) {
        let resp = r.expect("the third attempt succeeds");
        assert_eq!(
            resp.message,
            format!("ping|port={}", servers[0].port()).as_bytes()
        );
        // The third attempt said two came before it.
        assert_eq!(
            resp.headers.get("x-previous-rpc-attempts").unwrap(),
            "2",
            "{:?}",
            resp.headers
        );
    }
    // Three attempts per call.
    assert_eq!(requests(&servers), 1 + 2 * 3);
}

/// `disable_retry` (gRPC-Go's `WithDisableRetry`): the config's retry and
/// hedging policies are not followed; one attempt per call.
#[test]
fn a_channel_with_retries_disabled_makes_one_attempt() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let hedging = r#"{"methodConfig":[{"name":[{"service":"echo.Echo","method":"Unary"}],"hedgingPolicy":{"maxAttempts":3,"hedgingDelay":"0s","nonFatalStatusCodes":["UNAVAILABLE"]}}]}"#;
    for config in [retry_config(4, r#""UNAVAILABLE""#, ""), hedging.to_string()] {
        let opts = ChannelOptions {
            disable_retry: true,
            ..plaintext()
        };
        let ch = channel(&rt, &target(&servers), Some(&config), opts);
        echo(&mut ch.reader(), true).expect("the channel serves");
        let before = requests(&servers);
        let md = meta(&[("x-fail-attempts", "2")]);
        for r in both(&ch, &md, None) {
            assert_eq!(r.unwrap_err().code(), Code::Unavailable, "{config}");
        }
        assert_eq!(
            requests(&servers) - before,
            2,
            "one attempt per call: {config}"
        );
    }
}

#[test]
fn attempts_stop_at_max_attempts_and_five_at_most() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    for (given, made) in [(3, 3), (9, 5)] {
        let ch = ready_channel(&rt, &servers, &retry_config(given, "14", ""));
        let md = meta(&[("x-fail-attempts", "100")]);
        let before = requests(&servers);
        for r in both(&ch, &md, None) {
            let e = r.unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            assert_eq!(e.message(), "failed as asked");
        }
        assert_eq!(
            requests(&servers) - before,
            2 * made,
            "maxAttempts {given}: {made} attempts per call"
        );
    }
}

#[test]
fn no_retry_for_a_code_not_named_a_committed_call_or_a_pushback_saying_stop() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &retry_config(5, r#""unavailable""#, ""));
    let cases = [
        // INTERNAL is not in retryableStatusCodes.
        (
            meta(&[("x-fail-attempts", "1"), ("x-fail-code", "13")]),
            Code::Internal,
        ),
        // Headers came first: committed.
        (meta(&[("x-fail-after-headers", "14")]), Code::Unavailable),
        // The server says not to retry (negative, or not a number).
        (
            meta(&[("x-fail-attempts", "1"), ("x-pushback-ms", "-1")]),
            Code::Unavailable,
        ),
        (
            meta(&[("x-fail-attempts", "1"), ("x-pushback-ms", "soon")]),
            Code::Unavailable,
        ),
    ];
    for (md, code) in cases {
        let before = requests(&servers);
        for r in both(&ch, &md, None) {
            assert_eq!(r.unwrap_err().code(), code, "{md:?}");
        }
        assert_eq!(
            requests(&servers) - before,
            2,
            "one attempt per call: {md:?}"
        );
    }
    // Without a retry policy, nothing is retried either.
    let plain = ready_channel(&rt, &servers, "{}");
    let before = requests(&servers);
    for r in both(&plain, &meta(&[("x-fail-attempts", "1")]), None) {
        assert_eq!(r.unwrap_err().code(), Code::Unavailable);
    }
    assert_eq!(requests(&servers) - before, 2);
}

/// A trailers-only answer (HEADERS ending the stream) commits nothing,
/// even without a grpc-status: its UNKNOWN (gRPC's code for a gRPC
/// response without one) is retried as the policy says. gRPC-Go sees no
/// response headers there (`TrailersOnly()`), so `shouldRetry` goes on.
#[test]
fn a_trailers_only_answer_without_a_status_is_not_committed() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &retry_config(3, r#""UNKNOWN""#, ""));
    let md = meta(&[("x-fail-attempts", "2"), ("x-fail-code", "none")]);
    let before = requests(&servers);
    for r in both(&ch, &md, None) {
        let resp = r.expect("the third attempt succeeds");
        assert_eq!(resp.headers.get("x-previous-rpc-attempts").unwrap(), "2");
    }
    assert_eq!(requests(&servers) - before, 2 * 3);
    // Not retryable by this policy: one attempt, UNKNOWN.
    let plain = ready_channel(&rt, &servers, &retry_config(3, r#""UNAVAILABLE""#, ""));
    let before = requests(&servers);
    for r in both(&plain, &md, None) {
        assert_eq!(r.unwrap_err().code(), Code::Unknown);
    }
    assert_eq!(requests(&servers) - before, 2);
}

/// A request larger than the retry buffer (gRPC-Go's 256 KiB
/// `maxRetryRPCBufferSize`, its 5-byte prefix counted) commits the call
/// once sent: no retry by the policy, no transparent retry of a refused
/// stream. One that fits is retried as usual.
#[test]
fn a_request_over_the_retry_buffer_is_not_retried_once_sent() {
    let servers = start_servers_with(
        1,
        switchyard_testserver::ServerOptions {
            refuse_streams: 1,
            ..Default::default()
        },
    );
    let rt = Runtime::new().unwrap();
    let ch = channel(
        &rt,
        &target(&servers),
        Some(&retry_config(3, r#""UNAVAILABLE""#, "")),
        plaintext(),
    );
    let fits = vec![b'f'; 256 * 1024 - 5];
    let over = vec![b'o'; 256 * 1024 - 4];
    // The first stream is refused: gRPC would retry it transparently, but
    // not once its request has overflowed the buffer.
    let opts = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        ..Default::default()
    };
    let e = ch.reader().unary(ECHO, &over, &opts).err();
    assert_eq!(e.map(|e| e.code()), Some(Code::Unavailable));
    assert_eq!(requests(&servers), 1);
    let md = meta(&[("x-fail-attempts", "1")]);
    let before = requests(&servers);
    for r in both_sending(&ch, &fits, &md, None) {
        assert_eq!(r.err(), None, "a request that fits is retried");
    }
    assert_eq!(requests(&servers) - before, 2 * 2);
    let before = requests(&servers);
    for r in both_sending(&ch, &over, &md, None) {
        assert_eq!(r.err().map(|e| e.code()), Some(Code::Unavailable));
    }
    assert_eq!(requests(&servers) - before, 2, "one attempt per call");
}

#[test]
fn a_pushback_sets_the_delay_before_the_retry() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &retry_config(2, r#""UNAVAILABLE""#, ""));
    let md = meta(&[("x-fail-attempts", "1"), ("x-pushback-ms", "400")]);
    let t = Instant::now();
    for r in both(&ch, &md, None) {
        r.expect("the retry after the pushback succeeds");
    }
    // Two calls, each waiting the server's 400 ms (the policy's own
    // backoff is at most 60 ms).
    assert!(
        t.elapsed() >= Duration::from_millis(790),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn each_attempt_picks_again_so_a_failing_backend_is_retried_on_another() {
    let servers = start_servers(2);
    let rt = Runtime::new().unwrap();
    let sc = retry_config(3, r#""UNAVAILABLE""#, "").replacen(
        '{',
        r#"{"loadBalancingConfig":[{"round_robin":{}}],"#,
        1,
    );
    let ch = channel(&rt, &target(&servers), Some(&sc), plaintext());
    warm_up(&mut ch.reader(), 2);
    let bad = servers[0].port().to_string();
    let md = meta(&[("x-fail-port", &bad)]);
    for _ in 0..10 {
        for r in both(&ch, &md, None) {
            let resp = r.expect("the retry goes to the other backend");
            let text = String::from_utf8(resp.message).unwrap();
            assert_eq!(text, format!("ping|port={}", servers[1].port()));
        }
    }
}

#[test]
fn throttling_stops_retries_at_half_the_tokens() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let sc = retry_config(
        5,
        r#""UNAVAILABLE""#,
        r#","retryThrottling":{"maxTokens":10,"tokenRatio":0.5}"#,
    );
    let ch = ready_channel(&rt, &servers, &sc);
    let md = meta(&[("x-fail-attempts", "100")]);
    let before = requests(&servers);
    let [first, second] = both(&ch, &md, None);
    first.unwrap_err();
    second.unwrap_err();
    // The first call's failures take 10 tokens to 5 (its 5 attempts: the
    // fifth would need more than 5 left anyway); the second call's first
    // failure leaves 4: no retry.
    assert_eq!(requests(&servers) - before, 5 + 1);
    // Successes earn tokens back, 0.5 each: ten make 4 into 9, and a
    // failing call retries again.
    let ok = meta(&[]);
    for _ in 0..5 {
        for r in both(&ch, &ok, None) {
            r.unwrap();
        }
    }
    let before = requests(&servers);
    let [again, _] = both(&ch, &md, None);
    again.unwrap_err();
    // 9 -> 8, 7, 6: three retries, then 5 is not above half.
    assert_eq!(requests(&servers) - before, 4 + 1);
}

#[test]
fn the_deadline_ends_a_call_waiting_to_retry() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &slow_retry_config());
    let md = meta(&[("x-fail-attempts", "100")]);
    let t = Instant::now();
    for r in both(&ch, &md, Some(Duration::from_millis(300))) {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        assert!(e.message().contains("retry"), "{e:?}");
    }
    // Each call ends at its deadline, not after the 24-36 s backoff.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_failed_fail_fast_pick_is_retried_by_the_policy() {
    let rt = Runtime::new().unwrap();
    let sc = retry_config(5, r#""UNAVAILABLE""#, "")
        .replace("0.01s", "1s")
        .replace("0.05s", "1s");
    for started in [false, true] {
        // Nothing listens yet: the channel fails, and so does a fail-fast
        // pick; its retry, a second later, finds the backend started since.
        let port = free_port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let ch = channel(
            &rt,
            &format!("ipv4:{addr}"),
            Some(&sc),
            plaintext_fast_backoff(),
        );
        wait_state(&ch, ConnectivityState::TransientFailure);
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            TestServer::start(switchyard_testserver::Listen::Tcp(addr), Default::default()).unwrap()
        });
        let options = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            ..Default::default()
        };
        let result = echo_call(&ch, started, &options);
        let server = server.join().unwrap();
        let resp = result.unwrap_or_else(|e| panic!("started {started}: {e:?}"));
        assert_eq!(resp.message, format!("ping|port={port}").as_bytes());
        server.stop();
    }
}

/// A fail-fast pick the policy retried was the call's first attempt: a
/// stream refused after it is no longer transparently retried, the policy
/// decides (gRPC-Go's `firstAttempt`, cleared by any retry, a failed
/// pick's included). With `maxAttempts: 2` the refused stream ends the call.
#[test]
fn after_a_retried_pick_a_refused_stream_goes_by_the_policy() {
    let rt = Runtime::new().unwrap();
    let sc = retry_config(2, r#""UNAVAILABLE""#, "")
        .replace("0.01s", "1s")
        .replace("0.05s", "1s");
    for started in [false, true] {
        let port = free_port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let ch = channel(
            &rt,
            &format!("ipv4:{addr}"),
            Some(&sc),
            plaintext_fast_backoff(),
        );
        wait_state(&ch, ConnectivityState::TransientFailure);
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let opts = switchyard_testserver::ServerOptions {
                refuse_streams: 1,
                ..Default::default()
            };
            TestServer::start(switchyard_testserver::Listen::Tcp(addr), opts).unwrap()
        });
        let options = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            ..Default::default()
        };
        let result = echo_call(&ch, started, &options);
        let server = server.join().unwrap();
        let e = result.expect_err("the refused second attempt is the last");
        assert_eq!(e.code(), Code::Unavailable, "started {started}: {e:?}");
        server.stop();
    }
}

#[test]
fn closing_the_channel_ends_a_call_waiting_to_retry() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &slow_retry_config());
    let md = meta(&[("x-fail-attempts", "100")]);
    let options = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(20)),
        metadata: &md,
        ..Default::default()
    };
    let (tx, rx) = bounded(1);
    ch.unary_start(ECHO, b"ping", &options, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    let blocking = blocking_call(&ch, md.clone());
    // Both have failed once and wait out a 24-36 s backoff.
    // The warm-up call and both first attempts.
    wait_until("both first attempts", || servers[0].requests() == 3);
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    ch.close();
    let started = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("ended by the close");
    let blocking = blocking.join().unwrap();
    for r in [started, blocking] {
        assert_eq!(r.unwrap_err().code(), Code::Cancelled);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// The same wait ended by dropping the runtime (which closes the channel
/// without `Channel::close`): the blocking call waiting out its backoff
/// wakes at once, not when the backoff ends.
#[test]
fn dropping_the_runtime_ends_a_blocking_call_waiting_to_retry() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &slow_retry_config());
    let md = meta(&[("x-fail-attempts", "100")]);
    let blocking = blocking_call(&ch, md);
    // The warm-up call and the first attempt; then a 24-36 s backoff.
    wait_until("the first attempt", || servers[0].requests() == 2);
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    drop(rt);
    let r = blocking.join().unwrap();
    assert_eq!(r.unwrap_err().code(), Code::Cancelled);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// A blocking echo call with `metadata` and a 20 s deadline, on a thread of
/// its own.
fn blocking_call(
    ch: &Channel,
    metadata: Vec<(String, String)>,
) -> std::thread::JoinHandle<Result<UnaryResponse, Status>> {
    let mut reader = ch.reader();
    std::thread::spawn(move || {
        let options = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(20)),
            metadata: &metadata,
            ..Default::default()
        };
        reader.unary(ECHO, b"ping", &options)
    })
}
