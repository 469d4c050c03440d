//! grpc-java's ring_hash tests (xds/src/test/java/io/grpc/xds/
//! RingHashLoadBalancerTest.java, RingHashLoadBalancerProviderTest.java)
//! ported onto switchyard's `TestClientConn`, for what the gRPC-Go port
//! (ring_hash_go_cases.rs) and the C-core port (core_lb_policy_cases.rs)
//! do not already pin.
//!
//! Java's test helper creates every child's subchannel up front and hands
//! states to subchannels nobody asked to connect; here an endpoint gets its
//! subchannel the way a channel would: a pick landing on it (or the A61
//! recovery rule). Java's child states also lag (its pick_first reports
//! CONNECTING only when the subchannel does), which makes some of its
//! `verifyConnection(n)` counts count the same request twice: the ports
//! assert the A61/A76 rule those counts stand for.
//!
//! Where implementations disagree the test pins switchyard's choice and
//! says who does what: duplicate addresses (Java fails the update, A42 and
//! C-core add them up as weight), a sum of weights above u32::MAX (Java
//! fails, C-core and gRPC-Go leave that to the xDS layer), ring sizes above
//! 8M (Java caps them, A42, C-core and gRPC-Go reject them), the recovery
//! rule's choice of IDLE endpoint (A61: "left up to the implementation"),
//! a resolver error while not READY (Java fails, C-core and gRPC-Go keep
//! the endpoints), an empty update while READY (Java keeps serving, C-core
//! and gRPC-Go fail), a resolver error while READY (Java and C-core publish
//! nothing, gRPC-Go republishes).

use serde_json::{json, Value};
use std::collections::HashMap;
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::policy::ring_hash::RingHashBuilder;
use switchyard::ConnectivityState::{Connecting, Idle, Ready, TransientFailure};
use switchyard::*;
use xxhash_rust::xxh64::xxh64;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const NAME: &str = "ring_hash_experimental";

fn build() -> Box<dyn Balancer> {
    registry::get(NAME).expect("registered").build()
}

fn cfg(v: Value) -> Option<LbConfig> {
    registry::get(NAME)
        .unwrap()
        .parse_config(&v)
        .unwrap_or_else(|e| panic!("config {v}: {e}"))
}

fn parse(v: Value) -> Result<Option<LbConfig>, String> {
    registry::get(NAME).unwrap().parse_config(&v)
}

fn addr(i: usize) -> String {
    format!("127.0.0.1:{}", 31000 + i)
}

fn addrs(n: usize) -> Vec<String> {
    (0..n).map(addr).collect()
}

fn eps(list: &[String]) -> Vec<Endpoint> {
    list.iter()
        .map(|a| Endpoint::from(Address::new(a.as_str())))
        .collect()
}

/// XXH64("<key>_0"): the endpoint's first ring entry (Java's
/// `getDefaultPickSubchannelArgsForServer`).
fn h(key: &str) -> u64 {
    xxh64(format!("{key}_0").as_bytes(), 0)
}

fn pick_hash(cc: &mut TestClientConn, hash: u64) -> Picked {
    cc.pick_with(
        &PickInfo {
            hash: Some(hash),
            ..PickInfo::default()
        },
        None,
    )
}

fn pick_md(cc: &mut TestClientConn, md: &[(String, String)]) -> Picked {
    cc.pick_with(
        &PickInfo {
            metadata: md,
            ..PickInfo::default()
        },
        None,
    )
}

fn flush(cc: &mut TestClientConn, lb: &mut dyn Balancer) {
    for _ in 0..100 {
        if !cc.run_work(lb) {
            return;
        }
    }
}

fn sc(cc: &TestClientConn, a: &str) -> SubConnId {
    cc.subconn_for(a)
        .unwrap_or_else(|| panic!("no subchannel for {a}"))
        .id()
}

fn addr_of(cc: &TestClientConn, id: SubConnId) -> String {
    cc.subconn(id).unwrap().addr().to_string()
}

fn picked(cc: &TestClientConn, p: &Picked) -> String {
    match p {
        Picked::Complete { subconn, .. } => addr_of(cc, *subconn),
        other => panic!("pick did not complete: {other:?}"),
    }
}

fn set(cc: &mut TestClientConn, lb: &mut dyn Balancer, a: &str, s: ConnectivityState) {
    let id = sc(cc, a);
    cc.set_state(lb, id, s);
    flush(cc, lb);
}

/// TRANSIENT_FAILURE with its own error (Java's `forTransientFailure(...)`).
fn fail(cc: &mut TestClientConn, lb: &mut dyn Balancer, a: &str, msg: &str) {
    let id = sc(cc, a);
    cc.set_subconn_state(
        lb,
        id,
        SubConnState {
            state: TransientFailure,
            error: Some(msg.into()),
        },
    );
    flush(cc, lb);
}

fn connects_to(cc: &TestClientConn, a: &str) -> usize {
    cc.connects()
        .iter()
        .filter(|id| addr_of(cc, **id) == a)
        .count()
}

/// A pick on `a`'s own entry: `a` (IDLE, no subchannel yet) is asked to
/// connect; then its subchannel reports CONNECTING.
fn activate(cc: &mut TestClientConn, lb: &mut dyn Balancer, a: &str) {
    assert!(cc.subconn_for(a).is_none(), "{a} already has a subchannel");
    assert_eq!(pick_hash(cc, h(a)), Picked::Queue, "{a}: IDLE pick queues");
    flush(cc, lb);
    assert_eq!(connects_to(cc, a), 1, "the pick connects {a}");
    set(cc, lb, a, Connecting);
}

/// gRPC's ring (gRPC-Go `newRing`, Java `buildRing`): (hash, key) by hash.
fn model_ring(keys: &[(&str, u32)], min: u64, max: u64) -> Vec<(u64, String)> {
    let sum: f64 = keys.iter().map(|(_, w)| f64::from(*w)).sum();
    let mut sorted: Vec<(&str, f64)> = keys
        .iter()
        .map(|(k, w)| (*k, f64::from(*w) / sum))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let min_w = sorted.iter().map(|(_, w)| *w).fold(1.0f64, f64::min);
    let scale = ((min_w * min as f64).ceil() / min_w).min(max as f64);
    let (mut cur, mut target) = (0f64, 0f64);
    let mut ring = Vec::new();
    for (k, w) in sorted {
        target += scale * w;
        let mut n = 0;
        while cur < target {
            ring.push((xxh64(format!("{k}_{n}").as_bytes(), 0), k.to_string()));
            n += 1;
            cur += 1.0;
        }
    }
    ring.sort();
    ring
}

/// The endpoint after `key`'s only entry on a one-entry-each ring.
fn successor(ring: &[(u64, String)], key: &str) -> String {
    let i = ring.iter().position(|(_, k)| k == key).unwrap();
    ring[(i + 1) % ring.len()].1.clone()
}

// ---------------------------------------------------------------------------
// RingHashLoadBalancerTest
// ---------------------------------------------------------------------------

/// subchannelLazyConnectUntilPicked + subchannelNotAutoReconnectAfterReenteringIdle:
/// nothing is created before a pick; the pick creates one subchannel,
/// connects it and the policy reports CONNECTING at once (Java:
/// updateBalancingState(CONNECTING) right after the pick); READY serves;
/// a lost connection makes the policy IDLE without reconnecting; the next
/// pick reconnects the same subchannel.
#[test]
fn java_lazy_connect_until_picked_and_no_auto_reconnect_after_idle() {
    let a = addr(0);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(
            eps(std::slice::from_ref(&a)),
            cfg(json!({"minRingSize": 10, "maxRingSize": 100})),
        ),
    )
    .unwrap();
    assert_eq!(cc.state(), Some(Idle));
    assert!(cc.subconns().is_empty(), "no subchannel before a pick");
    assert_eq!(pick_hash(&mut cc, 12345), Picked::Queue);
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.subconns().len(), 1);
    assert_eq!(cc.connects().len(), 1);
    assert_eq!(
        cc.state(),
        Some(Connecting),
        "CONNECTING once the pick asked"
    );
    set(&mut cc, &mut *lb, &a, Connecting);
    assert_eq!(cc.state(), Some(Connecting));
    set(&mut cc, &mut *lb, &a, Ready);
    assert_eq!(cc.state(), Some(Ready));
    let first = sc(&cc, &a);
    assert_eq!(
        pick_hash(&mut cc, 12345),
        Picked::Complete {
            subconn: first,
            hooks: 0
        }
    );
    // The connection drops: IDLE, nothing reconnects by itself.
    set(&mut cc, &mut *lb, &a, Idle);
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(cc.connects().len(), 1, "no reconnection without a pick");
    // Picking again reconnects that subchannel.
    assert_eq!(pick_hash(&mut cc, 12345), Picked::Queue);
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.connects().len(), 2);
    assert_eq!(*cc.connects().last().unwrap(), first, "the same subchannel");
    assert_eq!(cc.subconns().len(), 1);
}

/// aggregateSubchannelStates_connectingReadyIdleFailure, two endpoints:
/// [CONNECTING, IDLE] → CONNECTING; [CONNECTING, CONNECTING] → CONNECTING;
/// [CONNECTING, READY] → READY; [TF, READY] → READY and no connection
/// attempt; [TF, IDLE] (the READY one lost its connection) → CONNECTING
/// and exactly one connection attempt, on that IDLE endpoint (A61).
#[test]
fn java_aggregate_connecting_ready_idle_failure() {
    let l = addrs(2);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(eps(&l), cfg(json!({"minRingSize": 10, "maxRingSize": 100}))),
    )
    .unwrap();
    activate(&mut cc, &mut *lb, &l[0]);
    assert_eq!(cc.state(), Some(Connecting), "[CONNECTING, IDLE]");
    assert_eq!(cc.connects().len(), 1);
    activate(&mut cc, &mut *lb, &l[1]);
    assert_eq!(cc.state(), Some(Connecting), "[CONNECTING, CONNECTING]");
    assert_eq!(cc.connects().len(), 2);
    set(&mut cc, &mut *lb, &l[1], Ready);
    assert_eq!(cc.state(), Some(Ready), "[CONNECTING, READY]");
    fail(&mut cc, &mut *lb, &l[0], "unknown failure");
    assert_eq!(cc.state(), Some(Ready), "[TF, READY]");
    assert_eq!(cc.connects().len(), 2, "[TF, READY]: no connection attempt");
    set(&mut cc, &mut *lb, &l[1], Idle);
    assert_eq!(cc.state(), Some(Connecting), "[TF, IDLE]");
    assert_eq!(cc.connects().len(), 3, "[TF, IDLE]: one connection attempt");
    assert_eq!(addr_of(&cc, *cc.connects().last().unwrap()), l[1]);
}

/// aggregateSubchannelStates_allSubchannelsInTransientFailure: four
/// endpoints CONNECTING; 1 TF → still CONNECTING; 2, 3, 4 TF → TF; a
/// failed endpoint's retry (its subchannel CONNECTING again) changes
/// nothing (sticky TF) and starts no other connection; its READY → READY,
/// and then every hash (also the failed endpoints' own) lands on it.
#[test]
fn java_all_transient_failure_sticky_then_ready() {
    let l = addrs(4);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(eps(&l), cfg(json!({"minRingSize": 10, "maxRingSize": 100}))),
    )
    .unwrap();
    for a in &l {
        activate(&mut cc, &mut *lb, a);
    }
    assert_eq!(cc.state(), Some(Connecting));
    let connects = cc.connects().len();
    fail(&mut cc, &mut *lb, &l[0], "also not found");
    assert_eq!(cc.state(), Some(Connecting), "1 TF of 4, 3 CONNECTING");
    fail(&mut cc, &mut *lb, &l[1], "also not found");
    assert_eq!(cc.state(), Some(TransientFailure), "2 TF");
    fail(&mut cc, &mut *lb, &l[2], "also not found");
    fail(&mut cc, &mut *lb, &l[3], "also not found");
    assert_eq!(cc.state(), Some(TransientFailure), "4 TF");
    assert_eq!(
        cc.connects().len(),
        connects,
        "nothing IDLE to recover with"
    );
    // Endpoint 2 retries after its backoff: IDLE, then CONNECTING.
    set(&mut cc, &mut *lb, &l[2], Idle);
    let retry = cc.connects().len();
    set(&mut cc, &mut *lb, &l[2], Connecting);
    assert_eq!(cc.state(), Some(TransientFailure), "sticky TF");
    assert_eq!(cc.connects().len(), retry, "no other connection attempt");
    assert!(matches!(pick_hash(&mut cc, h(&l[2])), Picked::Fail(_)));
    set(&mut cc, &mut *lb, &l[2], Ready);
    assert_eq!(cc.state(), Some(Ready));
    for a in &l {
        let p = pick_hash(&mut cc, h(a));
        assert_eq!(picked(&cc, &p), l[2], "hash of {a}");
    }
}

/// deterministicPickWithHostsPartiallyRemoved: five endpoints READY; the
/// hash of server1's entry picks server1; the resolver keeps only server0
/// and server1 (new address attributes: here new user data): the same
/// subchannels stay (no new subchannel, no reconnection), the removed ones
/// are shut down, the policy stays READY and the hash still picks
/// server1's subchannel. (A changed `tag` instead makes pick_first replace
/// the subchannel, as gRPC-Go does for changed address attributes; Java
/// keeps it with `updateAddresses`: documented in pick_first.rs.)
#[test]
fn java_hosts_partially_removed_keep_pick_and_connections() {
    let l = addrs(5);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    let config = cfg(json!({"minRingSize": 10, "maxRingSize": 100}));
    cc.update(&mut *lb, ClientConnState::new(eps(&l), config.clone()))
        .unwrap();
    for a in &l {
        activate(&mut cc, &mut *lb, a);
        set(&mut cc, &mut *lb, a, Ready);
    }
    assert_eq!(cc.state(), Some(Ready));
    let p = pick_hash(&mut cc, h(&l[1]));
    let chosen = match p {
        Picked::Complete { subconn, .. } => subconn,
        other => panic!("{other:?}"),
    };
    assert_eq!(addr_of(&cc, chosen), l[1]);
    let (created, connects) = (cc.subconns().len(), cc.connects().len());
    let kept: Vec<Endpoint> = l[..2]
        .iter()
        .map(|a| {
            let data: UserData = std::sync::Arc::new("custom value");
            Endpoint::from(Address::new(a.as_str()).with_user_data(data))
        })
        .collect();
    cc.update(&mut *lb, ClientConnState::new(kept, config))
        .unwrap();
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.subconns().len(), created, "no new subchannel");
    assert_eq!(cc.connects().len(), connects, "no reconnection");
    for a in &l[2..] {
        let id = cc
            .subconns()
            .iter()
            .find(|s| s.addr() == a.as_str())
            .unwrap()
            .id();
        assert!(cc.shutdowns().contains(&id), "{a} shut down");
    }
    for a in &l[..2] {
        let id = cc
            .subconns()
            .iter()
            .find(|s| s.addr() == a.as_str())
            .unwrap()
            .id();
        assert!(!cc.shutdowns().contains(&id), "{a} kept");
    }
    assert_eq!(cc.state(), Some(Ready));
    assert_eq!(
        pick_hash(&mut cc, h(&l[1])),
        Picked::Complete {
            subconn: chosen,
            hooks: 0
        }
    );
}

/// deterministicPickWithNewHostsAdded: two READY, three more added: READY,
/// the hash of server1's entry still picks the same subchannel, and the
/// new endpoints stay lazy (nothing created or connected).
#[test]
fn java_new_hosts_added_keep_pick() {
    let l = addrs(5);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    let config = cfg(json!({"minRingSize": 10, "maxRingSize": 100}));
    cc.update(&mut *lb, ClientConnState::new(eps(&l[..2]), config.clone()))
        .unwrap();
    for a in &l[..2] {
        activate(&mut cc, &mut *lb, a);
        set(&mut cc, &mut *lb, a, Ready);
    }
    let chosen = match pick_hash(&mut cc, h(&l[1])) {
        Picked::Complete { subconn, .. } => subconn,
        other => panic!("{other:?}"),
    };
    let (created, connects) = (cc.subconns().len(), cc.connects().len());
    cc.update(&mut *lb, ClientConnState::new(eps(&l), config))
        .unwrap();
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.state(), Some(Ready));
    assert_eq!(
        pick_hash(&mut cc, h(&l[1])),
        Picked::Complete {
            subconn: chosen,
            hooks: 0
        }
    );
    assert_eq!(cc.subconns().len(), created, "new endpoints stay lazy");
    assert_eq!(cc.connects().len(), connects);
}

/// pickWithRandomHash_firstSubchannelInTransientFailure_remainingSubchannelsIdle
/// (A76): requestHashHeader set, three endpoints on a ring of three; one
/// fails → CONNECTING and the recovery rule connects one IDLE endpoint;
/// RPCs without the header (random hash) queue and start no further
/// connection while that one is CONNECTING ("at most one").
/// (Java counts one more requestConnection here: its picker still sees the
/// recovering endpoint as IDLE because Java's pick_first reports
/// CONNECTING only when the subchannel does.)
#[test]
fn java_random_hash_first_tf_rest_idle_queues_behind_one_connection() {
    let l = addrs(3);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(
            eps(&l),
            cfg(json!({"minRingSize": 3, "maxRingSize": 3, "requestHashHeader": "dummy-random-hash"})),
        ),
    )
    .unwrap();
    // The header's value hashes onto l[0]'s entry.
    let md0 = vec![("dummy-random-hash".to_string(), format!("{}_0", l[0]))];
    assert_eq!(pick_md(&mut cc, &md0), Picked::Queue);
    flush(&mut cc, &mut *lb);
    assert_eq!(connects_to(&cc, &l[0]), 1);
    set(&mut cc, &mut *lb, &l[0], Connecting);
    fail(&mut cc, &mut *lb, &l[0], "unreachable");
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(
        cc.connects().len(),
        2,
        "the recovery rule connects one IDLE"
    );
    let recovering = addr_of(&cc, *cc.connects().last().unwrap());
    assert_ne!(recovering, l[0]);
    let other = vec![("x-other".to_string(), "v".to_string())];
    for _ in 0..30 {
        assert_eq!(pick_md(&mut cc, &other), Picked::Queue);
        flush(&mut cc, &mut *lb);
    }
    assert_eq!(cc.connects().len(), 2, "random-hash picks connected more");
    assert_eq!(cc.subconns().len(), 2);
    // Once it is READY every random pick uses it.
    set(&mut cc, &mut *lb, &recovering, Connecting);
    set(&mut cc, &mut *lb, &recovering, Ready);
    for _ in 0..30 {
        let p = pick_md(&mut cc, &other);
        assert_eq!(picked(&cc, &p), recovering);
    }
}

/// skipFailingHosts_pickNextNonFailingHost: ring of three, one entry each.
/// The endpoint hit by the hash fails → CONNECTING, and the recovery rule
/// connects an IDLE one that is also the next on the ring: a pick at the
/// failed endpoint's hash queues on it without any further subchannel
/// ("no excessive connection"); CONNECTING queues; READY serves.
#[test]
fn java_skip_failing_host_pick_next_non_failing_host() {
    let l = addrs(3);
    let keys: Vec<(&str, u32)> = l.iter().map(|a| (a.as_str(), 1)).collect();
    let ring = model_ring(&keys, 3, 3);
    assert_eq!(ring.len(), 3);
    // The failing endpoint: the one whose ring successor is the first (in
    // address order) of the other two, the one the recovery rule connects
    // in switchyard (and, for Java's FakeSocketAddress names, in Java).
    let f = l
        .iter()
        .find(|a| {
            let mut others: Vec<&String> = l.iter().filter(|b| b != a).collect();
            others.sort();
            successor(&ring, a) == *others[0]
        })
        .expect("some endpoint's successor is the first of the others")
        .clone();
    let next = successor(&ring, &f);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(eps(&l), cfg(json!({"minRingSize": 3, "maxRingSize": 3}))),
    )
    .unwrap();
    activate(&mut cc, &mut *lb, &f);
    fail(&mut cc, &mut *lb, &f, "unreachable");
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(connects_to(&cc, &next), 1, "recovery connected {next}");
    assert_eq!(pick_hash(&mut cc, h(&f)), Picked::Queue);
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.subconns().len(), 2, "no excessive connection");
    assert_eq!(connects_to(&cc, &next), 1);
    set(&mut cc, &mut *lb, &next, Connecting);
    assert_eq!(pick_hash(&mut cc, h(&f)), Picked::Queue);
    set(&mut cc, &mut *lb, &next, Ready);
    assert_eq!(cc.state(), Some(Ready));
    let p = pick_hash(&mut cc, h(&f));
    assert_eq!(picked(&cc, &p), next);
}

/// firstSubchannelFailure (A61 picker walk): the failed endpoint's ring
/// successor is IDLE (the recovery rule connected another one): a pick
/// at the failed endpoint's hash skips it and asks that successor to
/// connect (queueing), touching neither the failed one nor the third.
#[test]
fn java_first_subchannel_failure_pick_connects_ring_successor() {
    let l = addrs(3);
    let keys: Vec<(&str, u32)> = l.iter().map(|a| (a.as_str(), 1)).collect();
    let ring = model_ring(&keys, 3, 3);
    let f = l
        .iter()
        .find(|a| {
            let mut others: Vec<&String> = l.iter().filter(|b| b != a).collect();
            others.sort();
            successor(&ring, a) == *others[1]
        })
        .expect("some endpoint's successor is the second of the others")
        .clone();
    let next = successor(&ring, &f);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(eps(&l), cfg(json!({"minRingSize": 3, "maxRingSize": 3}))),
    )
    .unwrap();
    activate(&mut cc, &mut *lb, &f);
    fail(&mut cc, &mut *lb, &f, "unreachable");
    assert_eq!(cc.state(), Some(Connecting));
    let recovering = addr_of(&cc, *cc.connects().last().unwrap());
    assert_ne!(recovering, next);
    let before = connects_to(&cc, &f);
    assert_eq!(pick_hash(&mut cc, h(&f)), Picked::Queue);
    flush(&mut cc, &mut *lb);
    assert_eq!(connects_to(&cc, &next), 1, "the pick connects {next}");
    assert_eq!(connects_to(&cc, &f), before, "not the failed one");
    assert_eq!(connects_to(&cc, &recovering), 1);
}

/// skipFailingHosts_firstTwoHostsFailed_pickNextFirstReady +
/// allSubchannelsInTransientFailure: server1 and server2 fail → TF; a
/// pick at server1's hash queues while server0 connects; server0 fails
/// too: every pick fails UNAVAILABLE with the error of the endpoint the
/// hash hit (not another's); server1 retrying (CONNECTING) still fails
/// picks the same way; server1 READY serves every hash; picks start no
/// connection while everything is failing.
#[test]
fn java_all_failed_pick_fails_with_hashed_endpoints_error_then_first_ready() {
    let l = addrs(3);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(eps(&l), cfg(json!({"minRingSize": 3, "maxRingSize": 3}))),
    )
    .unwrap();
    let errors = [
        "server0 permission denied again",
        "server1 unreachable",
        "server2 permission denied",
    ];
    // Fail server1, then server2 (connecting them first if the recovery
    // rule has not).
    for i in [1usize, 2] {
        if cc.subconn_for(&l[i]).is_none() {
            activate(&mut cc, &mut *lb, &l[i]);
        }
        fail(&mut cc, &mut *lb, &l[i], errors[i]);
    }
    assert_eq!(cc.state(), Some(TransientFailure));
    // The recovery rule has server0 connecting by now.
    assert_eq!(connects_to(&cc, &l[0]), 1, "server0 connects (recovery)");
    set(&mut cc, &mut *lb, &l[0], Connecting);
    let connects = cc.connects().len();
    assert_eq!(pick_hash(&mut cc, h(&l[1])), Picked::Queue);
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.connects().len(), connects);
    fail(&mut cc, &mut *lb, &l[0], errors[0]);
    assert_eq!(cc.state(), Some(TransientFailure));
    let connects = cc.connects().len();
    for i in 0..3 {
        match pick_hash(&mut cc, h(&l[i])) {
            Picked::Fail(s) => {
                assert_eq!(s.code(), Code::Unavailable);
                assert!(
                    s.message().contains(errors[i]),
                    "hash of server{i}: {:?}, want the error of server{i} ({:?})",
                    s.message(),
                    errors[i]
                );
            }
            other => panic!("hash of server{i}: want Fail, got {other:?}"),
        }
    }
    flush(&mut cc, &mut *lb);
    assert_eq!(
        cc.connects().len(),
        connects,
        "failing picks connect nothing"
    );
    // server1 retries.
    set(&mut cc, &mut *lb, &l[1], Idle);
    set(&mut cc, &mut *lb, &l[1], Connecting);
    match pick_hash(&mut cc, h(&l[1])) {
        Picked::Fail(s) => {
            assert_eq!(s.code(), Code::Unavailable);
            assert!(s.message().contains(errors[1]), "{:?}", s.message());
        }
        other => panic!("want Fail, got {other:?}"),
    }
    set(&mut cc, &mut *lb, &l[1], Ready);
    assert_eq!(cc.state(), Some(Ready));
    for a in &l {
        let p = pick_hash(&mut cc, h(a));
        assert_eq!(picked(&cc, &p), l[1], "hash of {a}");
    }
}

/// tfWithReadyChild_doesNotTriggerIdleChildConnection: [TF, READY, IDLE]
/// is READY and connects nothing.
#[test]
fn java_tf_with_ready_child_does_not_trigger_idle_connection() {
    let l = addrs(3);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(eps(&l), cfg(json!({"minRingSize": 10, "maxRingSize": 100}))),
    )
    .unwrap();
    activate(&mut cc, &mut *lb, &l[1]);
    set(&mut cc, &mut *lb, &l[1], Ready);
    activate(&mut cc, &mut *lb, &l[0]);
    let connects = cc.connects().len();
    fail(&mut cc, &mut *lb, &l[0], "unreachable");
    assert_eq!(cc.state(), Some(Ready));
    assert_eq!(cc.connects().len(), connects, "no IDLE endpoint connected");
    assert!(cc.subconn_for(&l[2]).is_none());
}

/// hostSelectionProportionalToWeights: weights 1:10:100 (ring
/// 10000..100000, capped to 4096 as in Java), every endpoint READY, 10,000
/// hashes: the pick ratios are 1/10 and 10/100 within 0.03.
#[test]
fn java_host_selection_proportional_to_weights() {
    let l = addrs(3);
    let weights = [1u32, 10, 100];
    let mut cc = TestClientConn::new();
    let mut lb = build();
    let endpoints: Vec<Endpoint> = l
        .iter()
        .zip(weights)
        .map(|(a, w)| Endpoint::from(Address::new(a.as_str())).with_weight(w))
        .collect();
    cc.update(
        &mut *lb,
        ClientConnState::new(
            endpoints,
            cfg(json!({"minRingSize": 10000, "maxRingSize": 100000})),
        ),
    )
    .unwrap();
    for a in &l {
        activate(&mut cc, &mut *lb, a);
        set(&mut cc, &mut *lb, a, Ready);
    }
    let mut count: HashMap<String, usize> = HashMap::new();
    for i in 0..10_000u32 {
        let p = pick_hash(&mut cc, xxh64(&i.to_be_bytes(), 0));
        *count.entry(picked(&cc, &p)).or_default() += 1;
    }
    let c = |i: usize| count.get(&l[i]).copied().unwrap_or(0) as f64;
    let (r01, r12) = (c(0) / c(1), c(1) / c(2));
    assert!((r01 - 0.1).abs() < 0.03, "ratio01 {r01} ({count:?})");
    assert!((r12 - 0.1).abs() < 0.03, "ratio12 {r12} ({count:?})");
}

/// largeWeights: weights near and above i32::MAX are accepted and build a
/// working ring. Java also rejects a sum of weights above u32::MAX
/// (MAX:MAX:100) in the policy; C-core and gRPC-Go leave that check to the
/// xDS layer (A42 validates EDS), and so does switchyard: the update is
/// accepted and the ring works.
#[test]
fn java_large_weights_accepted() {
    let l = addrs(3);
    let config = cfg(json!({"minRingSize": 10000, "maxRingSize": 100000}));
    for weights in [
        vec![i32::MAX as u32, 10, 100],
        vec![i32::MAX as u32 + 100, 100],
        vec![i32::MAX as u32, i32::MAX as u32, 100],
        vec![u32::MAX, u32::MAX, u32::MAX],
    ] {
        let mut cc = TestClientConn::new();
        let mut lb = build();
        let endpoints: Vec<Endpoint> = l
            .iter()
            .zip(&weights)
            .map(|(a, w)| Endpoint::from(Address::new(a.as_str())).with_weight(*w))
            .collect();
        cc.update(&mut *lb, ClientConnState::new(endpoints, config.clone()))
            .unwrap_or_else(|e| panic!("{weights:?}: {e}"));
        assert_eq!(cc.state(), Some(Idle), "{weights:?}");
        // Connect whatever the picks reach (an endpoint of tiny weight may
        // have no entry at all).
        for i in 0..20u64 {
            if pick_hash(&mut cc, xxh64(&i.to_le_bytes(), 0)) == Picked::Queue {
                flush(&mut cc, &mut *lb);
                for s in cc.subconns().to_vec() {
                    cc.set_state(&mut *lb, s.id(), Connecting);
                    cc.set_state(&mut *lb, s.id(), Ready);
                }
            }
        }
        assert_eq!(cc.state(), Some(Ready), "{weights:?}");
        for i in 0..200u64 {
            assert!(
                matches!(
                    pick_hash(&mut cc, xxh64(&i.to_le_bytes(), 0)),
                    Picked::Complete { .. }
                ),
                "{weights:?}"
            );
        }
    }
}

/// duplicateAddresses (Java: the update fails, TRANSIENT_FAILURE "there
/// were duplicate addresses"). A42 ("The ring_hash policy will accept both
/// multiple instances of the same address and the per-address weight
/// attribute") and C-core (SameAddressListedMultipleTimes) accept them;
/// switchyard adds each repeat as weight: 1:2:3 listed as repeats gives
/// the 1:2:3 shares, on three subchannels.
#[test]
fn java_duplicate_addresses_count_as_weight_per_a42() {
    let l = addrs(3);
    let mut list = Vec::new();
    for (i, reps) in [1usize, 2, 3].iter().enumerate() {
        for _ in 0..*reps {
            list.push(l[i].clone());
        }
    }
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(
            eps(&list),
            cfg(json!({"minRingSize": 10, "maxRingSize": 100})),
        ),
    )
    .expect("duplicates accepted (A42)");
    assert_eq!(cc.state(), Some(Idle));
    for a in &l {
        activate(&mut cc, &mut *lb, a);
        set(&mut cc, &mut *lb, a, Ready);
    }
    assert_eq!(cc.subconns().len(), 3);
    // Against the model ring of weights 1:2:3 (ring of 10..100).
    let ring = model_ring(&[(&l[0], 1), (&l[1], 2), (&l[2], 3)], 10, 100);
    let mut wrong = 0;
    for (hash, key) in &ring {
        let p = pick_hash(&mut cc, *hash);
        if picked(&cc, &p) != *key {
            wrong += 1;
        }
    }
    assert_eq!(wrong, 0, "entries owned elsewhere than in the 1:2:3 ring");
}

/// nameResolutionErrorWithNoActiveSubchannels: TRANSIENT_FAILURE, picks
/// fail UNAVAILABLE with the resolver's error.
#[test]
fn java_name_resolution_error_without_endpoints() {
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.resolver_error(&mut *lb, "not reachable");
    assert_eq!(cc.state(), Some(TransientFailure));
    match pick_hash(&mut cc, 1) {
        Picked::Fail(s) => {
            assert_eq!(s.code(), Code::Unavailable);
            assert!(s.message().contains("not reachable"), "{:?}", s.message());
        }
        other => panic!("{other:?}"),
    }
}

/// nameResolutionErrorWithActiveSubchannels: READY, then a resolver
/// error: the policy stays READY and picks keep going to the endpoint.
/// (Java's helper sees no interaction at all, C-core publishes nothing
/// either; switchyard republishes READY with an equivalent picker, as
/// gRPC-Go's endpointsharding `ResolverError` does with `updateState()`:
/// not asserted.)
#[test]
fn java_name_resolution_error_with_active_endpoints_changes_nothing() {
    let a = addr(0);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(
            eps(std::slice::from_ref(&a)),
            cfg(json!({"minRingSize": 10, "maxRingSize": 100})),
        ),
    )
    .unwrap();
    activate(&mut cc, &mut *lb, &a);
    set(&mut cc, &mut *lb, &a, Ready);
    let s = sc(&cc, &a);
    let connects = cc.connects().len();
    cc.resolver_error(&mut *lb, "target not found");
    assert_eq!(cc.state(), Some(Ready));
    assert_eq!(
        pick_hash(&mut cc, 1),
        Picked::Complete {
            subconn: s,
            hooks: 0
        }
    );
    assert_eq!(cc.connects().len(), connects);
    assert_eq!(cc.states().last(), Some(&Ready));
}

// ---------------------------------------------------------------------------
// RingHashLoadBalancerProviderTest
// ---------------------------------------------------------------------------

/// parseLoadBalancingConfig_valid / _missingRingSize_useDefaults /
/// _invalid_negativeSize / _invalid_minGreaterThanMax /
/// _minRingSizeGreaterThanMaxRingSize / _zeroMinRingSize with max 100.
#[test]
fn java_provider_parse_valid_and_invalid_sizes() {
    assert!(parse(json!({"minRingSize": 10, "maxRingSize": 100}))
        .unwrap()
        .is_some());
    assert!(parse(json!({})).unwrap().is_some());
    assert!(parse(json!({"minRingSize": -10})).is_err(), "negative");
    assert!(parse(json!({"minRingSize": 1000, "maxRingSize": 100})).is_err());
    assert!(parse(json!({"minRingSize": 100, "maxRingSize": 10})).is_err());
    // Java: "Invalid 'minRingSize'/'maxRingSize'" (0 is invalid). switchyard
    // (as gRPC-Go) reads 0 as unset, 1024, which exceeds 100: rejected too.
    assert!(parse(json!({"minRingSize": 0, "maxRingSize": 100})).is_err());
}

/// parseLoadBalancingConfig_ringTooLargeUsesCap / _ringCapIsClampedTo8M:
/// Java caps a maxRingSize above 8M (8,388,608) to the cap and accepts it.
/// A42 ("values above 8M will be NACKed"), C-core and gRPC-Go reject it;
/// so does switchyard (pinned here).
#[test]
fn java_provider_ring_size_above_8m_rejected_as_a42() {
    let limit = 8_388_608u64;
    assert!(parse(json!({"minRingSize": 10, "maxRingSize": limit + 1})).is_err());
    let b = RingHashBuilder::new().with_ring_size_cap(limit + 1);
    assert!(b
        .parse_config(&json!({"minRingSize": limit + 1, "maxRingSize": limit + 1}))
        .is_err());
    // At the limit, with the cap raised to it: accepted
    // (parseLoadBalancingConfig_ringCapCanBeRaised).
    let b = RingHashBuilder::new().with_ring_size_cap(limit);
    assert!(b
        .parse_config(&json!({"minRingSize": limit, "maxRingSize": limit}))
        .unwrap()
        .is_some());
}

/// parseLoadBalancingConfig_ringCapCanBeLowered / _ringCapLowerLimitIs1:
/// a cap of 1 (or 0, clamped to 1) turns {2, 2} into a ring of one entry:
/// every hash lands on the same endpoint.
#[test]
fn java_provider_ring_cap_lowered_to_one() {
    for cap in [1u64, 0] {
        let b = RingHashBuilder::new().with_ring_size_cap(cap);
        let config = b
            .parse_config(&json!({"minRingSize": 2, "maxRingSize": 2}))
            .unwrap_or_else(|e| panic!("cap {cap}: {e}"));
        let l = addrs(2);
        let mut cc = TestClientConn::new();
        let mut lb = b.build();
        cc.update(&mut *lb, ClientConnState::new(eps(&l), config))
            .unwrap();
        // Picks anywhere: only the one entry's endpoint is ever connected.
        let mut owners = std::collections::BTreeSet::new();
        for i in 0..50u64 {
            let p = pick_hash(&mut cc, xxh64(&i.to_le_bytes(), 0));
            assert_eq!(p, Picked::Queue);
            flush(&mut cc, &mut *lb);
        }
        for s in cc.subconns().to_vec() {
            owners.insert(s.addr().to_string());
        }
        assert_eq!(
            owners.len(),
            1,
            "cap {cap}: one ring entry, one endpoint connected: {owners:?}"
        );
        let only = owners.into_iter().next().unwrap();
        set(&mut cc, &mut *lb, &only, Connecting);
        set(&mut cc, &mut *lb, &only, Ready);
        for i in 0..50u64 {
            let p = pick_hash(&mut cc, xxh64(&i.to_be_bytes(), 0));
            assert_eq!(picked(&cc, &p), only, "cap {cap}");
        }
    }
}

// ---------------------------------------------------------------------------
// Beyond Java's tests: rows where Java's MultiChildLoadBalancer base and
// C-core / gRPC-Go part ways, and A61's walk past a CONNECTING endpoint.
// ---------------------------------------------------------------------------

/// A resolver error while endpoints are CONNECTING: C-core
/// (RingHash::UpdateLocked: "keep using the existing list") and gRPC-Go
/// (endpointsharding forwards it to the pick_first children, which keep
/// their addresses) keep the endpoints and the state; Java's
/// MultiChildLoadBalancer.handleNameResolutionError reports
/// TRANSIENT_FAILURE with the resolver's error whenever it is not READY.
/// switchyard keeps them (pinned).
#[test]
fn resolver_error_while_connecting_keeps_endpoints_as_c_core() {
    let l = addrs(2);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(&mut *lb, ClientConnState::new(eps(&l), cfg(json!({}))))
        .unwrap();
    activate(&mut cc, &mut *lb, &l[0]);
    assert_eq!(cc.state(), Some(Connecting));
    cc.resolver_error(&mut *lb, "target not found");
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(pick_hash(&mut cc, h(&l[0])), Picked::Queue);
    set(&mut cc, &mut *lb, &l[0], Ready);
    let p = pick_hash(&mut cc, h(&l[0]));
    assert_eq!(picked(&cc, &p), l[0]);
}

/// An update with no endpoints while READY: C-core clears its endpoint map
/// and reports TRANSIENT_FAILURE ("empty address list"), gRPC-Go too
/// (ErrBadResolverState); Java's validateAddrList routes it to
/// handleNameResolutionError, which while READY changes nothing (the old
/// children keep serving). switchyard follows C-core (pinned).
#[test]
fn empty_update_while_ready_fails_as_c_core() {
    let a = addr(0);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(eps(std::slice::from_ref(&a)), cfg(json!({}))),
    )
    .unwrap();
    activate(&mut cc, &mut *lb, &a);
    set(&mut cc, &mut *lb, &a, Ready);
    let id = sc(&cc, &a);
    assert!(cc
        .update(&mut *lb, ClientConnState::new(Vec::new(), cfg(json!({}))))
        .is_err());
    assert_eq!(cc.state(), Some(TransientFailure));
    assert!(matches!(pick_hash(&mut cc, 1), Picked::Fail(_)));
    assert!(cc.shutdowns().contains(&id));
}

/// A61's picker walk (Java RingHashPicker, C-core Picker::Pick): from the
/// hashed entry, TRANSIENT_FAILURE endpoints are skipped and the first
/// CONNECTING one queues the pick: an IDLE endpoint further on is not
/// asked to connect.
#[test]
fn a61_walk_stops_at_first_connecting_endpoint() {
    let l = addrs(3);
    let keys: Vec<(&str, u32)> = l.iter().map(|a| (a.as_str(), 1)).collect();
    let ring = model_ring(&keys, 3, 3);
    // Ring order f → c → i: f fails, c connecting, i IDLE; make the
    // recovery rule (first IDLE in address order) pick c, so choose f with
    // that successor.
    let f = l
        .iter()
        .find(|a| {
            let mut others: Vec<&String> = l.iter().filter(|b| b != a).collect();
            others.sort();
            successor(&ring, a) == *others[0]
        })
        .unwrap()
        .clone();
    let c = successor(&ring, &f);
    let i = successor(&ring, &c);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(eps(&l), cfg(json!({"minRingSize": 3, "maxRingSize": 3}))),
    )
    .unwrap();
    activate(&mut cc, &mut *lb, &f);
    fail(&mut cc, &mut *lb, &f, "unreachable");
    assert_eq!(connects_to(&cc, &c), 1, "recovery connected {c}");
    set(&mut cc, &mut *lb, &c, Connecting);
    for _ in 0..3 {
        assert_eq!(pick_hash(&mut cc, h(&f)), Picked::Queue);
        flush(&mut cc, &mut *lb);
    }
    assert_eq!(
        connects_to(&cc, &i),
        0,
        "{i} (after the CONNECTING one) untouched"
    );
    assert!(cc.subconn_for(&i).is_none());
}

/// A weight change rebuilds the ring but keeps every connection (Java
/// acceptResolvedAddresses → updateChildrenWithResolvedAddresses keeps
/// children by endpoint; C-core's endpoint_map_ likewise): the READY
/// endpoints stay READY and each entry lands where the new ring says.
#[test]
fn weight_change_keeps_connections() {
    let l = addrs(3);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    let config = cfg(json!({"minRingSize": 10, "maxRingSize": 100}));
    cc.update(&mut *lb, ClientConnState::new(eps(&l), config.clone()))
        .unwrap();
    for a in &l {
        activate(&mut cc, &mut *lb, a);
        set(&mut cc, &mut *lb, a, Ready);
    }
    let (created, connects) = (cc.subconns().len(), cc.connects().len());
    let weighted: Vec<Endpoint> = l
        .iter()
        .zip([1u32, 2, 3])
        .map(|(a, w)| Endpoint::from(Address::new(a.as_str())).with_weight(w))
        .collect();
    cc.update(&mut *lb, ClientConnState::new(weighted, config))
        .unwrap();
    flush(&mut cc, &mut *lb);
    assert_eq!(cc.state(), Some(Ready));
    assert_eq!(cc.subconns().len(), created);
    assert_eq!(cc.connects().len(), connects);
    assert!(cc.shutdowns().is_empty());
    let ring = model_ring(&[(&l[0], 1), (&l[1], 2), (&l[2], 3)], 10, 100);
    for (hash, key) in &ring {
        let p = pick_hash(&mut cc, *hash);
        assert_eq!(picked(&cc, &p), *key);
    }
}

/// stickyTransientFailure: one endpoint failed (CONNECTING overall, the
/// recovery rule connecting another); its subchannel going IDLE after the
/// backoff (and reconnecting) is hidden by pick_first: no state or picker
/// update reaches the channel (Java: `verify(helper, never())
/// .updateBalancingState(any(), any())`; C-core and gRPC-Go publish only
/// when the pick_first child does, which it does not here), and a pick on
/// its hash still skips it. (Switchyard republished CONNECTING with a
/// fresh picker on each of the two events until ring_hash looked at
/// whether the child had published.)
#[test]
fn sticky_tf_retry_publishes_no_state_or_picker() {
    let l = addrs(3);
    let mut cc = TestClientConn::new();
    let mut lb = build();
    cc.update(
        &mut *lb,
        ClientConnState::new(eps(&l), cfg(json!({"minRingSize": 3, "maxRingSize": 3}))),
    )
    .unwrap();
    activate(&mut cc, &mut *lb, &l[0]);
    fail(&mut cc, &mut *lb, &l[0], "unreachable");
    assert_eq!(cc.state(), Some(Connecting));
    let recovering = addr_of(&cc, *cc.connects().last().unwrap());
    set(&mut cc, &mut *lb, &recovering, Connecting);
    let (states, pickers) = (cc.states().len(), cc.pickers_published());
    set(&mut cc, &mut *lb, &l[0], Idle);
    set(&mut cc, &mut *lb, &l[0], Connecting);
    assert_eq!(
        cc.states().len(),
        states,
        "no state update: {:?}",
        &cc.states()[states..]
    );
    assert_eq!(cc.pickers_published(), pickers, "no picker update");
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(pick_hash(&mut cc, h(&l[0])), Picked::Queue);
}
