//! The method's `hedgingPolicy` (gRFC A6) on the library's own calls,
//! blocking and started, against real backends on 127.0.0.1 that fail or
//! stall as each call's metadata asks (the test server's `x-fail-*` and
//! `x-delay-first-ms` headers): attempts side by side, the first to end the
//! call wins, the others are cancelled.

use super::support::*;
use crossbeam_channel::bounded;
use std::time::{Duration, Instant};
use switchyard::*;

const ECHO: &str = "/echo.Echo/Unary";

/// Hedges echo calls: up to `attempts`, `delay` apart; `non_fatal` codes.
fn hedging_config(attempts: u32, delay: &str, non_fatal: &str) -> String {
    format!(
        r#"{{"methodConfig":[{{"name":[{{"service":"echo.Echo"}}],"hedgingPolicy":{{"maxAttempts":{attempts},"hedgingDelay":"{delay}","nonFatalStatusCodes":[{non_fatal}]}}}}]}}"#
    )
}

/// One call each way, blocking then started, with `metadata` and a 10 s
/// deadline; each with how long it took.
fn both(
    ch: &Channel,
    metadata: &[(String, String)],
) -> [(Result<UnaryResponse, Status>, Duration); 2] {
    let options = || CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        metadata,
        ..Default::default()
    };
    let t = Instant::now();
    let blocking = ch.reader().unary(ECHO, b"ping", &options());
    let blocking_took = t.elapsed();
    let (tx, rx) = bounded(1);
    let t = Instant::now();
    ch.unary_start(ECHO, b"ping", &options(), move |r| {
        let _ = tx.send((r, t.elapsed()));
    })
    .unwrap();
    let started = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the started call completes");
    [(blocking, blocking_took), started]
}

#[test]
fn a_hedge_answers_when_the_first_attempt_stalls() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &hedging_config(3, "0.1s", ""));
    let md = meta(&[("x-delay-first-ms", "5000")]);
    for (r, took) in both(&ch, &md) {
        let resp = r.expect("the second attempt answers");
        assert_eq!(resp.headers.get("x-previous-rpc-attempts").unwrap(), "1");
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    // The stalled first attempts were cancelled (RST_STREAM), not left to run.
    wait_until("the stalled attempts reset", || servers[0].resets() == 2);
}

/// Response headers commit a hedged call to their attempt (gRFC A6): no
/// hedge goes after them, however long the rest of the answer takes.
#[test]
fn response_headers_commit_the_call_to_their_attempt() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    // Headers at once, the rest 2.5 s later: past the hedging delay by
    // far, yet the headers come well within it even on a loaded machine.
    let ch = ready_channel(&rt, &servers, &hedging_config(3, "1s", r#""UNAVAILABLE""#));
    let md = meta(&[("x-delay-after-headers-ms", "2500")]);
    let before = requests(&servers);
    for (r, took) in both(&ch, &md) {
        r.expect("the committed attempt answers");
        assert!(took >= Duration::from_millis(2450), "took {took:?}");
    }
    assert_eq!(requests(&servers) - before, 2, "one attempt per call");
}

#[test]
fn a_fatal_status_ends_the_call_at_once() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &hedging_config(3, "5s", r#""UNAVAILABLE""#));
    let md = meta(&[("x-fail-attempts", "1"), ("x-fail-code", "13")]);
    let before = requests(&servers);
    for (r, took) in both(&ch, &md) {
        assert_eq!(r.unwrap_err().code(), Code::Internal);
        assert!(
            took < Duration::from_secs(3),
            "took {took:?}, not the 5 s delay"
        );
    }
    assert_eq!(requests(&servers) - before, 2, "one attempt per call");
}

#[test]
fn a_non_fatal_failure_sends_the_next_attempt_at_once() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &hedging_config(3, "5s", r#""UNAVAILABLE""#));
    let md = meta(&[("x-fail-attempts", "1")]);
    let before = requests(&servers);
    for (r, took) in both(&ch, &md) {
        let resp = r.expect("the second attempt succeeds");
        assert_eq!(resp.headers.get("x-previous-rpc-attempts").unwrap(), "1");
        assert!(
            took < Duration::from_secs(3),
            "took {took:?}, not the 5 s hedging delay"
        );
    }
    assert_eq!(requests(&servers) - before, 4);
}

#[test]
fn every_attempt_failing_non_fatally_ends_with_the_last_failure() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(
        &rt,
        &servers,
        &hedging_config(3, "0.05s", r#""UNAVAILABLE""#),
    );
    let md = meta(&[("x-fail-attempts", "100")]);
    let before = requests(&servers);
    for (r, _) in both(&ch, &md) {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert_eq!(e.message(), "failed as asked");
    }
    assert_eq!(requests(&servers) - before, 2 * 3, "maxAttempts per call");
}

#[test]
fn the_deadline_ends_a_hedged_call_and_its_attempts() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &hedging_config(2, "0.05s", ""));
    let md = meta(&[("x-delay-ms", "5000")]);
    // The hedge goes out 50 ms in, well before the deadline.
    let options = CallOptions {
        deadline: Some(Instant::now() + Duration::from_millis(1000)),
        metadata: &md,
        ..Default::default()
    };
    let t = Instant::now();
    let e = ch.reader().unary(ECHO, b"ping", &options).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Both attempts went out and were reset.
    wait_until("both attempts reset", || servers[0].resets() == 2);
}

#[test]
fn throttling_stops_hedges_at_half_the_tokens() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    // A hedging delay no round trip reaches: each next attempt is sent by
    // the failure before it, so the count below does not depend on timing.
    let plain = hedging_config(5, "1s", r#""UNAVAILABLE""#);
    let sc = format!(
        r#"{},"retryThrottling":{{"maxTokens":4,"tokenRatio":0.1}}}}"#,
        plain.strip_suffix('}').unwrap()
    );
    let ch = ready_channel(&rt, &servers, &sc);
    let md = meta(&[("x-fail-attempts", "100")]);
    let before = requests(&servers);
    for (r, _) in both(&ch, &md) {
        assert_eq!(r.unwrap_err().code(), Code::Unavailable);
    }
    // 4 tokens: the first call's failures leave 3 (another may go), then
    // 2 (not above half: no more); the second call's first attempt always
    // goes, and its failure leaves 1.
    assert_eq!(requests(&servers) - before, 2 + 1);
}

/// A fatal status whose pushback says stop still costs a token (A6 counts a
/// pushback "don't retry" as a failure whatever the code): four such calls
/// take 6 tokens to 2, and the next calls send no hedge.
#[test]
fn a_fatal_status_with_a_stop_pushback_costs_a_token() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let plain = hedging_config(2, "0.05s", r#""UNAVAILABLE""#);
    let sc = format!(
        r#"{},"retryThrottling":{{"maxTokens":6,"tokenRatio":0.1}}}}"#,
        plain.strip_suffix('}').unwrap()
    );
    let ch = ready_channel(&rt, &servers, &sc);
    let md = meta(&[
        ("x-fail-attempts", "100"),
        ("x-fail-code", "13"),
        ("x-pushback-ms", "-1"),
    ]);
    for _ in 0..2 {
        for (r, _) in both(&ch, &md) {
            assert_eq!(r.unwrap_err().code(), Code::Internal);
        }
    }
    // The first attempt is slow: with tokens left a hedge would go.
    let md = meta(&[("x-delay-first-ms", "300")]);
    let before = requests(&servers);
    let [(r, _), _] = both(&ch, &md);
    r.expect("the first attempt answers");
    let sent = requests(&servers) - before;
    // Two calls, one attempt each: no hedge for either.
    assert_eq!(sent, 2, "tokens at half: no hedge");
}

/// A pushback saying stop in the trailers of an attempt whose response
/// headers had committed the call costs nothing: a committed attempt is
/// past every retry and hedge decision (gRPC-Go reads the pushback only of
/// a trailers-only answer; Java only before a substream wins). Four such
/// calls leave the 6 tokens whole, and hedges still go.
#[test]
fn a_committed_failure_with_a_stop_pushback_costs_no_token() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let plain = hedging_config(2, "0.05s", r#""UNAVAILABLE""#);
    let sc = format!(
        r#"{},"retryThrottling":{{"maxTokens":6,"tokenRatio":0.1}}}}"#,
        plain.strip_suffix('}').unwrap()
    );
    let ch = ready_channel(&rt, &servers, &sc);
    let md = meta(&[("x-fail-after-headers", "13"), ("x-pushback-ms", "-1")]);
    for _ in 0..2 {
        for (r, _) in both(&ch, &md) {
            assert_eq!(r.unwrap_err().code(), Code::Internal);
        }
    }
    let md = meta(&[("x-delay-first-ms", "300")]);
    let before = requests(&servers);
    for (r, _) in both(&ch, &md) {
        r.expect("the hedge answers");
    }
    assert_eq!(requests(&servers) - before, 4, "a hedge for each call");
}

#[test]
fn cancelling_or_closing_ends_a_started_hedged_call_and_its_attempts() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &hedging_config(2, "0.05s", ""));
    let md = meta(&[("x-delay-ms", "5000")]);
    let options = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(20)),
        metadata: &md,
        ..Default::default()
    };
    let start = |ch: &Channel| {
        let (tx, rx) = bounded(1);
        let h = ch
            .unary_start(ECHO, b"ping", &options, move |r| {
                let _ = tx.send(r);
            })
            .unwrap();
        (h, rx)
    };
    let (h, rx) = start(&ch);
    wait_until("both attempts sent", || servers[0].in_flight() == 2);
    assert!(h.cancel());
    let e = rx
        .recv_timeout(Duration::from_secs(2))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), Code::Cancelled, "{e:?}");
    wait_until("both attempts reset", || servers[0].resets() == 2);

    let (_h, rx) = start(&ch);
    wait_until("both attempts sent", || servers[0].in_flight() == 2);
    let t = Instant::now();
    ch.close();
    let e = rx
        .recv_timeout(Duration::from_secs(2))
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::Cancelled,
            "the channel is closed (grpc: the client connection is closing)"
        )
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_pushback_sets_when_the_next_hedge_goes_or_stops_them() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &hedging_config(3, "5s", r#""UNAVAILABLE""#));
    let md = meta(&[("x-fail-attempts", "1"), ("x-pushback-ms", "300")]);
    for (r, took) in both(&ch, &md) {
        r.expect("the hedge after the pushback succeeds");
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(3),
            "took {took:?}"
        );
    }
    // A pushback later than the hedging delay puts the next hedge off
    // until it says (A6: "issued after the given delay has elapsed").
    let ch = ready_channel(
        &rt,
        &servers,
        &hedging_config(3, "0.1s", r#""UNAVAILABLE""#),
    );
    let md = meta(&[("x-fail-attempts", "1"), ("x-pushback-ms", "1000")]);
    for (r, took) in both(&ch, &md) {
        r.expect("the hedge after the pushback succeeds");
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_secs(5),
            "took {took:?}"
        );
    }
    let md = meta(&[("x-fail-attempts", "1"), ("x-pushback-ms", "-1")]);
    let before = requests(&servers);
    for (r, _) in both(&ch, &md) {
        assert_eq!(r.unwrap_err().code(), Code::Unavailable);
    }
    assert_eq!(
        requests(&servers) - before,
        2,
        "no hedge after a pushback of -1"
    );
}

#[test]
fn a_first_pick_that_waits_for_a_connection_spends_no_attempt() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let sc = hedging_config(2, "0.05s", r#""UNAVAILABLE""#);
    for started in [false, true] {
        // A fresh channel: IDLE until the call, whose first pick waits for
        // the connection through one picker or more.
        let ch = Channel::new(&rt, &target(&servers), Some(&sc), plaintext()).unwrap();
        let md = meta(&[("x-fail-attempts", "100")]);
        let options = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            wait_for_ready: Some(true),
            metadata: &md,
            ..Default::default()
        };
        let before = requests(&servers);
        let r = echo_call(&ch, started, &options);
        assert_eq!(r.unwrap_err().code(), Code::Unavailable);
        assert_eq!(
            requests(&servers) - before,
            2,
            "started {started}: maxAttempts sent"
        );
    }
}

/// A one-address policy whose picker hands out its subchannel to the first
/// pick and drops every later one (a load shedder, say).
mod drop_later {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Picks {
        sc: Arc<SubConn>,
        taken: AtomicUsize,
        shed: Status,
    }
    impl Picker for Picks {
        fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
            if self.taken.fetch_add(1, Ordering::Relaxed) == 0 {
                PickResult::Complete {
                    subconn: &self.sc,
                    done: DoneHooks::NONE,
                }
            } else {
                PickResult::Drop(&self.shed)
            }
        }
    }

    struct Queue;
    impl Picker for Queue {
        fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
            PickResult::Queue
        }
    }

    #[derive(Default)]
    struct DropLater(Option<Arc<SubConn>>);
    impl Balancer for DropLater {
        fn update_client_conn_state(
            &mut self,
            cc: &mut dyn ClientConn,
            s: ClientConnState,
        ) -> Result<(), String> {
            if self.0.is_none() {
                let sc = cc.new_subconn(s.addresses[0].clone())?;
                cc.connect(sc.id());
                self.0 = Some(sc);
            }
            Ok(())
        }
        fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
        fn update_subconn_state(
            &mut self,
            cc: &mut dyn ClientConn,
            _: SubConnId,
            s: &SubConnState,
        ) {
            let Some(sc) = self.0.clone() else { return };
            let picker: Box<dyn Picker> = match s.state {
                ConnectivityState::Ready => Box::new(Picks {
                    sc,
                    taken: AtomicUsize::new(0),
                    shed: Status::new(Code::ResourceExhausted, "shed"),
                }),
                _ => Box::new(Queue),
            };
            cc.update_state(s.state, picker);
        }
        fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
        fn close(&mut self, _: &mut dyn ClientConn) {}
    }

    struct Build;
    impl Builder for Build {
        fn name(&self) -> &str {
            "hedging_test_drop_later"
        }
        fn build(&self) -> Box<dyn Balancer> {
            Box::<DropLater>::default()
        }
    }

    /// A hedge whose pick is dropped ends the call at once with the drop's
    /// status, the first attempt (held by the server) cancelled: gRFC A6,
    /// "If the pick result type was DROP, the RPC will fail immediately,
    /// without any retries". It was picked again every hedging delay, and
    /// the call waited for the first attempt.
    #[test]
    fn a_dropped_hedge_ends_the_call() {
        registry::register(Arc::new(Build));
        let servers = start_servers(1);
        let rt = Runtime::new().unwrap();
        let hedging = hedging_config(3, "0.05s", r#""UNAVAILABLE""#);
        let sc = format!(
            r#"{{"loadBalancingConfig":[{{"hedging_test_drop_later":{{}}}}],{}"#,
            hedging.strip_prefix('{').unwrap()
        );
        let md = meta(&[("x-delay-ms", "3000")]);
        for started in [false, true] {
            // A fresh channel each time: its first picker's first pick.
            let ch = Channel::new(&rt, &target(&servers), Some(&sc), plaintext()).unwrap();
            ch.connect().unwrap();
            wait_state(&ch, ConnectivityState::Ready);
            let options = CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(10)),
                metadata: &md,
                ..Default::default()
            };
            let t0 = Instant::now();
            let e = echo_call(&ch, started, &options).unwrap_err();
            assert_eq!(
                e.code(),
                Code::ResourceExhausted,
                "started {started}: {e:?}"
            );
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "took {:?}",
                t0.elapsed()
            );
        }
    }
}

/// A request larger than the retry buffer (gRPC-Go's 256 KiB, its 5-byte
/// prefix counted) commits the call to its first attempt once sent (gRFC
/// A6: "the client's outgoing message has overflowed the gRPC client
/// library's buffer"): no hedge goes, however long that attempt takes.
#[test]
fn a_request_over_the_retry_buffer_is_not_hedged() {
    let servers = start_servers(1);
    let rt = Runtime::new().unwrap();
    let ch = ready_channel(&rt, &servers, &hedging_config(3, "0.05s", ""));
    let md = meta(&[("x-delay-first-ms", "600")]);
    let over = vec![b'o'; 256 * 1024 - 4];
    let options = || CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        metadata: &md,
        ..Default::default()
    };
    let before = servers[0].requests();
    let blocking = ch.reader().unary(ECHO, &over, &options());
    let (tx, rx) = bounded(1);
    ch.unary_start(ECHO, &over, &options(), move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    let started = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the started call completes");
    for r in [blocking, started] {
        let resp = r.map_err(|e| e.code()).map(|r| r.headers);
        let headers = resp.expect("the first attempt answers");
        assert!(!headers.contains_key("x-previous-rpc-attempts"));
    }
    assert_eq!(servers[0].requests() - before, 2, "one attempt per call");
}
