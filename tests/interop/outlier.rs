//! outlier_detection_experimental against real grpcio backends: a backend
//! that fails every call stops receiving traffic, the others keep it all.

use super::common::*;
use super::python::{serial, PyServer};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use switchyard::{Code, Runtime};

/// Sweeps every second; an endpoint with at least 10 calls in one that
/// failed more than half of them is out for 30 s (far longer than the test).
/// (Each of the 5 needs 10 calls per sweep: 50 calls a second, which even
/// a loaded machine makes against the Python servers.)
const OUTLIER: &str = r#"{"loadBalancingConfig":[{"outlier_detection_experimental":{
    "interval":"1s","baseEjectionTime":"30s","maxEjectionPercent":20,
    "failurePercentageEjection":{"threshold":50,"minimumHosts":5,"requestVolume":10},
    "childPolicy":[{"round_robin":{}}]}}]}"#;

/// The port a failing backend names in its message (interop/server.py).
fn failed_port(message: &str) -> Option<u16> {
    message.split("port=").nth(1)?.parse().ok()
}

#[test]
fn a_backend_failing_every_call_stops_receiving_traffic() {
    let _one = serial();
    let mut f = PyServer::backends(5);
    let ports = f.ports();
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &f.target(), Some(OUTLIER), plaintext());
    let mut r = ch.reader();
    warm_up(&mut r, 5);
    f.set_failing(2, true);
    let bad = ports[2];

    // Fail-fast calls until 200 in a row succeed (bounded by time): the
    // failures before that all come from the bad backend.
    let mut failed = 0;
    let mut streak = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while streak < 200 {
        assert!(
            Instant::now() < deadline,
            "still failing after 20 s ({failed} failures)"
        );
        match echo(&mut r, false) {
            Ok(_) => streak += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                assert_eq!(failed_port(s.message()), Some(bad), "{s:?}");
                failed += 1;
                streak = 0;
            }
        }
    }
    assert!(
        failed >= 1,
        "the bad backend never failed a call: it was never picked"
    );

    // Ejected: 400 more calls all succeed, spread over the four others.
    let mut per: HashMap<u16, usize> = HashMap::new();
    for _ in 0..400 {
        let port = echo(&mut r, false).expect("no call reaches the ejected backend");
        *per.entry(port).or_default() += 1;
    }
    assert!(!per.contains_key(&bad), "{per:?}");
    assert_eq!(
        per.len(),
        4,
        "the four healthy backends share the load: {per:?}"
    );
    assert!(
        per.values().all(|n| *n >= 80),
        "round_robin among them: {per:?}"
    );
}
