//! Interop: switchyard's own transport and policies against real gRPC servers
//! (Python grpcio = gRPC C-core) started from interop/server.py. Needs the
//! venv that `bash interop/setup.sh` installs; without it every test fails
//! saying so. The scenarios are the ones tests/managed runs against the
//! in-process server (tests/common), with the same exact assertions.

#[path = "../common/mod.rs"]
mod common;
mod outlier;
mod python;

use common::*;
use python::{serial, PyServer, TempDir};

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
