//! Interop: switchyard's own transport and policies against real gRPC servers
//! (Python grpcio = gRPC C-core) started from interop/server.py. Needs the
//! venv that `bash interop/setup.sh` installs; without it every test fails
//! saying so. The scenarios here and in the policy modules are the ones
//! tests/managed runs against the in-process server (tests/common), with the
//! same exact assertions; grpcio_scenarios holds gRPC's own interop cases
//! and C-core server behaviours.

#[path = "../common/mod.rs"]
mod common;
mod grpcio_scenarios;
mod outlier;
mod python;
mod retry;
mod ring_hash;

use common::*;
use python::{serial, PyServer, TempDir};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use switchyard::{CallOptions, Runtime};

#[test]
fn round_robin_splits_300_rpcs_exactly() {
    let _one = serial();
    rr_splits_300_exactly(&PyServer::backends(3));
}

#[test]
fn stopped_backend_fails_over_without_failed_rpcs_and_rejoins() {
    let _one = serial();
    stopped_backend_fails_over_and_rejoins(&mut PyServer::backends(3));
}

#[test]
fn not_serving_backend_is_excluded_only_with_health_checking() {
    let _one = serial();
    not_serving_is_excluded_only_with_health_checking(&mut PyServer::backends(3));
}

#[test]
fn a_server_without_the_health_service_counts_as_healthy() {
    let _one = serial();
    missing_health_service_counts_as_healthy(&PyServer::spawn(&["--count", "3", "--no-health"]));
}

/// A grpcio (C-core) server that compresses its responses (PROTOCOL-HTTP2's
/// grpc-encoding; the client offers identity, deflate and gzip as C-core's
/// do): the client inflates gzip and deflate. C-core sends a message as is
/// when compressing would not shrink it, so the echo is large and
/// compressible; each backend is reached, the echo comes back whole.
#[test]
fn compressed_responses_are_inflated() {
    let _one = serial();
    let request = "compressible ".repeat(5_000);
    for coding in ["gzip", "deflate"] {
        let server = PyServer::spawn(&["--count", "3", "--compression", coding]);
        let rt = Runtime::new().unwrap();
        let ch = channel(&rt, &server.target(), RR, plaintext());
        let mut r = ch.reader();
        warm_up(&mut r, 3);
        let opts = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            wait_for_ready: Some(true),
            ..Default::default()
        };
        let mut ports = HashSet::new();
        for _ in 0..6 {
            let resp = r.unary("/echo.Echo/Unary", request.as_bytes(), &opts);
            let text = String::from_utf8(resp.unwrap_or_else(|s| panic!("{coding}: {s}")).message);
            let text = text.unwrap();
            let port = text
                .strip_prefix(&format!("{request}|port="))
                .expect("the echo");
            ports.insert(port.to_string());
        }
        assert_eq!(ports.len(), 3, "{coding}: every backend answered");
    }
}

#[test]
fn tls_with_the_right_ca_works_and_a_wrong_ca_says_why() {
    let _one = serial();
    let pki = TestPki::new();
    let dir = TempDir::new("interop-tls");
    let (cert, key) = pki.write_server_pems(&dir.0);
    let server = PyServer::spawn(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    tls_right_ca_works_wrong_ca_says_why(server.addr(0), &pki.ca_pem);
}

#[test]
fn connect_deadline_fails_a_silent_listener() {
    let _one = serial();
    let hole = PyServer::spawn(&["--black-hole"]);
    silent_listener_fails_at_the_connect_deadline(hole.addr(0));
}

#[test]
fn refused_connections_back_off_by_1_6_with_jitter() {
    let _one = serial();
    common::refused_connections_back_off_by_1_6_with_jitter();
}

/// weighted_round_robin against grpcio backends that report their load in
/// ORCA trailers: at the same qps, a backend at utilization 0.1 weighs 4×
/// one at 0.4 (weight = qps / utilization), so traffic shifts to the less
/// loaded; when the loads swap, so does the traffic.
#[test]
fn weighted_round_robin_follows_orca_load_reports() {
    let _one = serial();
    let mut f = PyServer::backends(3);
    let ports = f.ports();
    for (i, u) in [0.1, 0.2, 0.4].into_iter().enumerate() {
        f.orca(i, u, 100.0, 0.0);
    }
    let rt = switchyard::Runtime::new().unwrap();
    let config = r#"{"loadBalancingConfig":[{"weighted_round_robin":
        {"blackoutPeriod":"0.3s","weightUpdatePeriod":"0.1s"}}]}"#;
    let ch = channel(&rt, &f.target(), Some(config), plaintext());
    let mut r = ch.reader();
    warm_up(&mut r, 3);
    let share = |r: &mut switchyard::Reader, port: u16| {
        let per = split(r, 140);
        per.get(&port).copied().unwrap_or(0) as f64 / 140.0
    };
    // Reports flow in with every call; the weights count after the blackout.
    wait_until("weights to count", || share(&mut r, ports[0]) > 0.5);
    let per = split(&mut r, 700);
    let got: Vec<f64> = ports.iter().map(|p| per[p] as f64 / 700.0).collect();
    for (g, want) in got.iter().zip([4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0]) {
        assert!((g - want).abs() < 0.03, "shares {got:?}, want 4:2:1");
    }
    // The loads swap: backend 2 is now the least loaded.
    for (i, u) in [0.4, 0.2, 0.1].into_iter().enumerate() {
        f.orca(i, u, 100.0, 0.0);
    }
    wait_until("traffic to follow", || share(&mut r, ports[2]) > 0.5);
    let per = split(&mut r, 700);
    let got: Vec<f64> = ports.iter().map(|p| per[p] as f64 / 700.0).collect();
    for (g, want) in got.iter().zip([1.0 / 7.0, 2.0 / 7.0, 4.0 / 7.0]) {
        assert!((g - want).abs() < 0.03, "shares {got:?}, want 1:2:4");
    }
}
