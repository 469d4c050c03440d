//! ring_hash_experimental with `requestHashHeader` (gRFC A76) against real
//! grpcio backends: each key stays on one backend, and another channel
//! (another client) sends it to the same one.

use crate::common::*;
use crate::python::{serial, PyServer};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use switchyard::*;

const RING_HASH: Option<&str> = Some(
    r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"requestHashHeader":"x-user-id"}}]}"#,
);

/// One echo RPC as `user` (none: no header); the port that served it.
fn echo_as(r: &mut Reader, user: Option<&str>) -> u16 {
    let metadata: Vec<(String, String)> = user
        .map(|u| vec![("x-user-id".to_string(), u.to_string())])
        .unwrap_or_default();
    let opts = CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        wait_for_ready: Some(true),
        metadata: &metadata,
        ..Default::default()
    };
    let resp = r
        .unary("/echo.Echo/Unary", b"ping", &opts)
        .unwrap_or_else(|s| panic!("{user:?}: {s}"));
    let text = String::from_utf8(resp.message).unwrap();
    text.strip_prefix("ping|port=")
        .unwrap_or_else(|| panic!("bad echo {text:?}"))
        .parse()
        .unwrap()
}

/// Where each of `users` is served, checked over `rounds` calls each.
fn homes(r: &mut Reader, users: &[String], rounds: usize) -> HashMap<String, u16> {
    let mut home = HashMap::new();
    for _ in 0..rounds {
        for user in users {
            let port = echo_as(r, Some(user));
            let first = *home.entry(user.clone()).or_insert(port);
            assert_eq!(port, first, "{user} moved from backend {first} to {port}");
        }
    }
    home
}

#[test]
fn ring_hash_keeps_each_key_on_one_backend() {
    let _one = serial();
    let servers = PyServer::backends(3);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &servers.target(), RING_HASH, plaintext());
    let mut r = ch.reader();
    let users: Vec<String> = (0..30).map(|k| format!("user-{k}")).collect();
    let home = homes(&mut r, &users, 5);
    let used: HashSet<u16> = home.values().copied().collect();
    let ports: HashSet<u16> = servers.ports().into_iter().collect();
    assert!(used.is_subset(&ports), "{used:?} vs {ports:?}");
    assert!(used.len() >= 2, "30 keys all on one backend: {home:?}");
    // Without the header each call gets a random hash: still served.
    for _ in 0..10 {
        assert!(ports.contains(&echo_as(&mut r, None)));
    }
    // Calls started on the loop hash the header the same way.
    for user in &users[..10] {
        let metadata = vec![("x-user-id".to_string(), user.clone())];
        let opts = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            wait_for_ready: Some(true),
            metadata: &metadata,
            ..Default::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        ch.unary_start("/echo.Echo/Unary", b"ping", &opts, move |r| {
            let _ = tx.send(r.map(|resp| resp.message));
        })
        .unwrap();
        let message = rx.recv_timeout(Duration::from_secs(15)).unwrap().unwrap();
        let port: u16 = String::from_utf8(message).unwrap()["ping|port=".len()..]
            .parse()
            .unwrap();
        assert_eq!(port, home[user], "{user}, started on the loop");
    }
    // Another client with the same backends agrees on every key.
    let other = channel(&rt, &servers.target(), RING_HASH, plaintext());
    assert_eq!(homes(&mut other.reader(), &users, 1), home);
}
