//! A method's `retryPolicy` and `hedgingPolicy` (gRFC A6) against real grpcio backends: a
//! backend failing every call with UNAVAILABLE (grpcio's `abort`, a
//! trailers-only answer, so never committed) costs the calls nothing, each
//! retry (or hedge) being picked anew.

use super::common::*;
use super::python::{serial, PyServer};
use std::time::{Duration, Instant};
use switchyard::{CallOptions, Runtime};

const RETRY: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}],
    "methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":3,
    "initialBackoff":"0.01s","maxBackoff":"0.05s","backoffMultiplier":2,
    "retryableStatusCodes":["UNAVAILABLE"]}}]}"#;

#[test]
fn calls_to_a_failing_backend_are_retried_on_the_others() {
    let _one = serial();
    let mut f = PyServer::backends(3);
    let ports = f.ports();
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &f.target(), Some(RETRY), plaintext());
    let mut r = ch.reader();
    warm_up(&mut r, 3);
    f.set_failing(1, true);
    // Round robin sends every third pick to the failing backend; its
    // retry goes to the next one. Every call succeeds, none there.
    for _ in 0..60 {
        let port = echo(&mut r, false).expect("retried on another backend");
        assert_ne!(port, ports[1]);
    }
    // Without the policy the same calls fail a third of the time.
    let plain = channel(
        &rt,
        &f.target(),
        Some(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
        plaintext(),
    );
    let mut r = plain.reader();
    let options = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        wait_for_ready: Some(true),
        ..Default::default()
    };
    let failed = (0..30)
        .filter(|_| r.unary("/echo.Echo/Unary", b"ping", &options).is_err())
        .count();
    assert!(failed >= 5, "{failed} of 30 failed");
}

const HEDGING: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}],
    "methodConfig":[{"name":[{}],"hedgingPolicy":{"maxAttempts":3,
    "hedgingDelay":"1s","nonFatalStatusCodes":["UNAVAILABLE"]}}]}"#;

/// Hedging (gRFC A6): a non-fatal failure from the failing backend sends
/// the next attempt at once, to another backend.
#[test]
fn hedged_calls_to_a_failing_backend_are_answered_by_the_others() {
    let _one = serial();
    let mut f = PyServer::backends(3);
    let ports = f.ports();
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &f.target(), Some(HEDGING), plaintext());
    let mut r = ch.reader();
    warm_up(&mut r, 3);
    f.set_failing(1, true);
    let t = Instant::now();
    for _ in 0..30 {
        let port = echo(&mut r, false).expect("hedged to another backend");
        assert_ne!(port, ports[1]);
    }
    // Ten of them met the failing backend first; none waited the 1 s delay.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
