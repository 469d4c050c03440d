//! ring_hash through `TestClientConn`: what gRFC A42/A61/A76 and gRPC-Go's
//! ringhash tests check.

use super::*;
use crate::address::{Address, Endpoint};
use crate::balancer::picker::PickInfo;
use crate::balancer::subconn::SubConnId;
use crate::balancer::testing::{Picked, TestClientConn};
use crate::status::Code;
use serde_json::json;
use xxhash_rust::xxh64::xxh64;
use ConnectivityState::{Connecting, Idle, Ready, TransientFailure};

fn addr(i: usize) -> String {
    format!("127.0.{}.{}:443", i / 250, i % 250)
}

fn addrs(n: usize) -> Vec<String> {
    (0..n).map(addr).collect()
}

fn config(json: serde_json::Value) -> Option<LbConfig> {
    RingHashBuilder::new().parse_config(&json).unwrap()
}

fn update(cc: &mut TestClientConn, lb: &mut dyn Balancer, addrs: &[String], cfg: Option<LbConfig>) {
    let endpoints = addrs
        .iter()
        .map(|a| Endpoint::from(Address::new(a.as_str())))
        .collect();
    cc.update(lb, ClientConnState::new(endpoints, cfg)).unwrap();
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

fn pick_header(cc: &mut TestClientConn, metadata: &[(String, String)]) -> Picked {
    cc.pick_with(
        &PickInfo {
            metadata,
            ..PickInfo::default()
        },
        None,
    )
}

/// The hash of an endpoint's entry 0: a pick with it lands on that endpoint.
fn hash_of(a: &str) -> u64 {
    xxh64(format!("{a}_0").as_bytes(), 0)
}

fn addr_of(cc: &TestClientConn, picked: &Picked) -> Option<String> {
    match picked {
        Picked::Complete { subconn, .. } => Some(cc.subconn(*subconn).unwrap().addr().to_string()),
        _ => None,
    }
}

fn hash_addr(cc: &mut TestClientConn, hash: u64) -> Option<String> {
    let p = pick_hash(cc, hash);
    addr_of(cc, &p)
}

fn header_addr(cc: &mut TestClientConn, metadata: &[(String, String)]) -> Option<String> {
    let p = pick_header(cc, metadata);
    addr_of(cc, &p)
}

/// Brings endpoint `a` up the way a pick does: a pick on it asks for work,
/// the work connects it, its subchannel reports `state`.
fn connect(
    cc: &mut TestClientConn,
    lb: &mut dyn Balancer,
    a: &str,
    state: ConnectivityState,
) -> SubConnId {
    let _ = pick_hash(cc, hash_of(a));
    cc.run_work(lb);
    let sc = cc.subconn_for(a).expect("connected on pick").id();
    cc.set_state(lb, sc, state);
    sc
}

/// `n` endpoints, every one READY.
fn ready_ring(n: usize) -> (TestClientConn, Box<dyn Balancer>, Vec<String>) {
    let mut cc = TestClientConn::new();
    let mut lb = RingHashBuilder::new().build();
    let list = addrs(n);
    update(&mut cc, &mut *lb, &list, None);
    for a in &list {
        connect(&mut cc, &mut *lb, a, Ready);
    }
    assert_eq!(cc.state(), Some(Ready));
    (cc, lb, list)
}

fn keys(n: usize) -> Vec<u64> {
    (0..n)
        .map(|k| xxh64(format!("user-{k}").as_bytes(), 0))
        .collect()
}

fn owners(cc: &mut TestClientConn, keys: &[u64]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            let p = pick_hash(cc, *k);
            addr_of(cc, &p).unwrap_or_else(|| panic!("key {k:#x}: {p:?}"))
        })
        .collect()
}

#[test]
fn config_defaults_bounds_and_cap() {
    // The default cap, whatever GRPC_RING_HASH_CAP says in this process.
    let b = RingHashBuilder::new().with_ring_size_cap(DEFAULT_RING_SIZE_CAP);
    let parsed = |v| {
        b.parse_config(&v)
            .map(|c| c.unwrap().downcast_ref::<RingHashConfig>().unwrap().clone())
    };
    let c = parsed(json!({})).unwrap();
    assert_eq!((c.min_ring_size, c.max_ring_size), (1024, 4096));
    assert_eq!(c.request_hash_header, None);
    // Strings (proto3 JSON's 64-bit ints), zero = default, unknown ignored.
    let c = parsed(json!({"minRingSize": "10", "maxRingSize": 0, "future": true})).unwrap();
    assert_eq!((c.min_ring_size, c.max_ring_size), (10, 4096));
    // Up to 8M accepted, then capped to 4096.
    let c = parsed(json!({"minRingSize": 8_388_608, "maxRingSize": 8_388_608})).unwrap();
    assert_eq!((c.min_ring_size, c.max_ring_size), (4096, 4096));
    let big = RingHashBuilder::new().with_ring_size_cap(1 << 20);
    let c = big
        .parse_config(&json!({"maxRingSize": 100_000}))
        .unwrap()
        .unwrap();
    assert_eq!(
        c.downcast_ref::<RingHashConfig>().unwrap().max_ring_size,
        100_000
    );
    for (bad, field) in [
        (json!({"minRingSize": 8_388_609}), "minRingSize"),
        (json!({"maxRingSize": 8_388_609}), "maxRingSize"),
        (json!({"minRingSize": -1}), "minRingSize"),
        (json!({"maxRingSize": 1.5}), "maxRingSize"),
        (json!({"maxRingSize": "x"}), "maxRingSize"),
        (
            json!({"minRingSize": 5000}),
            "minRingSize (5000) must not exceed maxRingSize (4096)",
        ),
        (json!({"requestHashHeader": 7}), "requestHashHeader"),
        (json!({"requestHashHeader": "x-key-bin"}), "-bin"),
        (
            json!({"requestHashHeader": "a b"}),
            "not a valid header name",
        ),
    ] {
        let err = parsed(bad.clone()).unwrap_err();
        assert!(err.contains(field), "{bad}: {err}");
    }
    // gRPC-Go's `ValidateKey` lets a pseudo-header through.
    assert!(parsed(json!({"requestHashHeader": ":path"})).is_ok());
    let c = parsed(json!({"requestHashHeader": "X-User-ID"})).unwrap();
    assert_eq!(c.request_hash_header.as_deref(), Some("x-user-id"));
}

#[test]
fn registered_under_both_names() {
    for name in ["ring_hash_experimental", "ring_hash"] {
        let b = crate::policy::registry::get(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(b.name(), name);
    }
}

#[test]
fn nothing_connects_until_a_pick_lands_on_an_endpoint() {
    let mut cc = TestClientConn::new();
    let mut lb = RingHashBuilder::new().build();
    let list = addrs(3);
    update(&mut cc, &mut *lb, &list, None);
    assert!(cc.subconns().is_empty(), "lazy: no subchannel yet");
    assert_eq!(cc.state(), Some(Idle));
    // `Channel::connect` (ExitIdle) starts nothing either: gRPC-Go's
    // ringhash ExitIdle is a no-op.
    cc.exit_idle(&mut *lb);
    cc.exit_idle(&mut *lb);
    assert!(cc.connects().is_empty(), "exit_idle connected something");
    assert_eq!(cc.state(), Some(Idle));
    // A pick on endpoint 1 queues and asks for work, once.
    assert_eq!(pick_hash(&mut cc, hash_of(&list[1])), Picked::Queue);
    assert_eq!(pick_hash(&mut cc, hash_of(&list[1])), Picked::Queue);
    assert_eq!(cc.work_requests(), 1);
    assert!(cc.run_work(&mut *lb));
    let sc = cc.subconn_for(&list[1]).expect("endpoint 1 connects").id();
    assert_eq!(cc.connects(), [sc], "only the endpoint picked");
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(pick_hash(&mut cc, hash_of(&list[1])), Picked::Queue);
    cc.set_state(&mut *lb, sc, Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert_eq!(
        pick_hash(&mut cc, hash_of(&list[1])),
        Picked::Complete {
            subconn: sc,
            hooks: 0
        }
    );
    // Another key's endpoint is still IDLE: queued, connected on demand.
    assert_eq!(pick_hash(&mut cc, hash_of(&list[2])), Picked::Queue);
    assert_eq!(cc.subconns().len(), 1);
}

#[test]
fn each_key_goes_to_the_same_endpoint_every_time() {
    let (mut cc, mut lb, list) = ready_ring(50);
    let keys = keys(10_000);
    let first = owners(&mut cc, &keys);
    assert_eq!(owners(&mut cc, &keys), first, "same picker, same answers");
    // A new picker over the same endpoints (an unrelated state change).
    let extra = cc.subconn_for(&list[0]).unwrap().id();
    cc.set_state(&mut *lb, extra, Connecting);
    cc.set_state(&mut *lb, extra, Ready);
    assert_eq!(owners(&mut cc, &keys), first, "new picker, same answers");
    // The keys spread over the endpoints.
    let used: std::collections::HashSet<&String> = first.iter().collect();
    assert!(used.len() >= 45, "{} endpoints used", used.len());
}

#[test]
fn a_51st_endpoint_takes_only_keys_that_now_belong_to_it() {
    let (mut cc, mut lb, mut list) = ready_ring(50);
    let keys = keys(10_000);
    let before = owners(&mut cc, &keys);
    list.push(addr(50));
    update(&mut cc, &mut *lb, &list, None);
    connect(&mut cc, &mut *lb, &list[50], Ready);
    let after = owners(&mut cc, &keys);
    let moved: Vec<usize> = (0..keys.len())
        .filter(|i| before[*i] != after[*i])
        .collect();
    for i in &moved {
        assert_eq!(after[*i], list[50], "key {i} moved between old endpoints");
    }
    let share = moved.len() as f64 / keys.len() as f64;
    // About 1/51 (1.96 %) of the keys.
    assert!(
        (0.005..=0.03).contains(&share),
        "{} of {} keys moved",
        moved.len(),
        keys.len()
    );
}

#[test]
fn transient_failure_endpoints_are_skipped_and_all_failing_fails() {
    let (mut cc, mut lb, list) = ready_ring(3);
    let keys = keys(300);
    let before = owners(&mut cc, &keys);
    let down = cc.subconn_for(&list[0]).unwrap().id();
    cc.set_state(&mut *lb, down, TransientFailure);
    assert_eq!(cc.state(), Some(Ready));
    let after = owners(&mut cc, &keys);
    for i in 0..keys.len() {
        assert_ne!(after[i], list[0]);
        if before[i] != list[0] {
            assert_eq!(after[i], before[i], "only the failing endpoint's keys move");
        }
    }
    for a in &list[1..] {
        let sc = cc.subconn_for(a).unwrap().id();
        cc.set_state(&mut *lb, sc, TransientFailure);
    }
    assert_eq!(cc.state(), Some(TransientFailure));
    match pick_hash(&mut cc, keys[0]) {
        Picked::Fail(s) => {
            assert_eq!(s.code(), Code::Unavailable);
            assert!(s.message().contains("connection refused (test)"), "{s:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn aggregate_state_follows_a42() {
    let s = |ready, connecting, idle, tf, n| {
        let counts = StateCounts {
            ready,
            connecting,
            idle,
            transient_failure: tf,
        };
        aggregate(&counts, n)
    };
    assert_eq!(s(1, 0, 0, 5, 6), Ready);
    assert_eq!(s(0, 1, 0, 2, 3), TransientFailure, "two TF beat CONNECTING");
    assert_eq!(s(0, 1, 1, 1, 3), Connecting);
    assert_eq!(s(0, 0, 2, 1, 3), Connecting, "one TF among several");
    assert_eq!(s(0, 0, 2, 0, 2), Idle);
    assert_eq!(
        s(0, 0, 0, 1, 1),
        TransientFailure,
        "the only endpoint failing"
    );
    assert_eq!(s(0, 0, 0, 0, 0), TransientFailure);
}

#[test]
fn a_failing_endpoint_makes_another_connect_so_one_attempt_is_always_under_way() {
    let mut cc = TestClientConn::new();
    let mut lb = RingHashBuilder::new().build();
    let list = addrs(3);
    update(&mut cc, &mut *lb, &list, None);
    let first = connect(&mut cc, &mut *lb, &list[0], Connecting);
    assert_eq!(cc.connects().len(), 1);
    // It fails: one TF of three is CONNECTING, nothing is connecting, so
    // another IDLE endpoint connects without any pick.
    cc.set_state(&mut *lb, first, TransientFailure);
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(cc.connects().len(), 2, "{:?}", cc.connects());
    let second = *cc.connects().last().unwrap();
    assert_ne!(second, first);
    // That one fails too: two TF, so TRANSIENT_FAILURE, and the third connects.
    cc.set_state(&mut *lb, second, TransientFailure);
    assert_eq!(cc.state(), Some(TransientFailure));
    assert_eq!(cc.connects().len(), 3);
    let third = *cc.connects().last().unwrap();
    cc.set_state(&mut *lb, third, Ready);
    assert_eq!(cc.state(), Some(Ready));
}

#[test]
fn request_hash_comes_from_the_header_then_the_caller_else_random() {
    let mut cc = TestClientConn::new();
    let mut lb = RingHashBuilder::new().build();
    let list = addrs(20);
    let cfg = config(json!({"requestHashHeader": "x-user-id"}));
    update(&mut cc, &mut *lb, &list, cfg);
    for a in &list {
        connect(&mut cc, &mut *lb, a, Ready);
    }
    let md = |v: &str| vec![("x-user-id".to_string(), v.to_string())];
    // The header's value is the key: XXH64 of it, every time.
    for user in ["alice", "bob", "carol"] {
        let by_header = header_addr(&mut cc, &md(user));
        let by_hash = hash_addr(&mut cc, xxh64(user.as_bytes(), 0));
        assert_eq!(by_header, by_hash);
        for _ in 0..20 {
            assert_eq!(header_addr(&mut cc, &md(user)), by_header);
        }
    }
    // Several values: joined with ",".
    let two = vec![
        ("x-user-id".to_string(), "a".to_string()),
        ("other".to_string(), "z".to_string()),
        ("x-user-id".to_string(), "b".to_string()),
    ];
    assert_eq!(
        header_addr(&mut cc, &two),
        hash_addr(&mut cc, xxh64(b"a,b", 0))
    );
    // No header: the caller's hash; neither: a random endpoint per pick.
    assert_eq!(hash_addr(&mut cc, hash_of(&list[7])), Some(list[7].clone()));
    let random: std::collections::HashSet<Option<String>> = (0..200)
        .map(|_| {
            let p = pick_header(&mut cc, &[]);
            addr_of(&cc, &p)
        })
        .collect();
    assert!(random.len() > 10 && !random.contains(&None), "{random:?}");
    // A header that is there is hashed, an empty value too (A76's pseudo
    // code; gRPC-Go and C-core): XXH64("") and XXH64(","), one endpoint each.
    for (empty, joined) in [
        (md(""), ""),
        (vec![md("")[0].clone(), md("")[0].clone()], ","),
    ] {
        let spread: std::collections::HashSet<Option<String>> = (0..50)
            .map(|_| {
                let p = pick_header(&mut cc, &empty);
                addr_of(&cc, &p)
            })
            .collect();
        assert_eq!(spread.len(), 1, "{spread:?}");
        assert_eq!(
            spread.into_iter().next().unwrap(),
            hash_addr(&mut cc, xxh64(joined.as_bytes(), 0)),
            "{joined:?}"
        );
    }
}

#[test]
fn without_a_header_or_a_hash_the_pick_fails() {
    let (mut cc, _lb, _) = ready_ring(2);
    match cc.pick() {
        Picked::Fail(s) => {
            assert_eq!(s.code(), Code::Internal);
            assert!(s.message().contains("requestHashHeader"), "{s:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_random_hash_starts_at_most_one_connection_and_queues() {
    let mut cc = TestClientConn::new();
    let mut lb = RingHashBuilder::new().build();
    let list = addrs(5);
    update(
        &mut cc,
        &mut *lb,
        &list,
        config(json!({"requestHashHeader": "k"})),
    );
    // One pick asks one IDLE endpoint to connect, and queues.
    assert_eq!(pick_header(&mut cc, &[]), Picked::Queue);
    assert_eq!(cc.work_requests(), 1, "one IDLE endpoint asked");
    cc.run_work(&mut *lb);
    assert_eq!(cc.connects().len(), 1);
    // While it connects, random picks start nothing more.
    for _ in 0..10 {
        assert_eq!(pick_header(&mut cc, &[]), Picked::Queue);
    }
    assert_eq!(cc.work_requests(), 1);
    assert!(!cc.run_work(&mut *lb));
    let sc = cc.connects()[0];
    cc.set_state(&mut *lb, sc, Ready);
    // Then every random pick finds the READY one.
    for _ in 0..10 {
        assert_eq!(
            pick_header(&mut cc, &[]),
            Picked::Complete {
                subconn: sc,
                hooks: 0
            }
        );
    }
}

#[test]
fn weights_share_the_ring() {
    let mut cc = TestClientConn::new();
    let mut lb = RingHashBuilder::new().build();
    let endpoints = vec![
        Endpoint::from(Address::new("127.0.0.1:443")).with_weight(1),
        Endpoint::from(Address::new("127.0.0.2:443")).with_weight(3),
    ];
    cc.update(&mut *lb, ClientConnState::new(endpoints, None))
        .unwrap();
    for a in ["127.0.0.1:443", "127.0.0.2:443"] {
        connect(&mut cc, &mut *lb, a, Ready);
    }
    let keys = keys(20_000);
    let got = owners(&mut cc, &keys);
    let share = got.iter().filter(|a| *a == "127.0.0.2:443").count() as f64 / keys.len() as f64;
    assert!((0.68..0.82).contains(&share), "weight 3 of 4 got {share}");
}

#[test]
fn a_hash_key_keeps_the_ring_position_when_the_address_changes() {
    let keys = keys(2_000);
    let run = |first: Endpoint| {
        let mut cc = TestClientConn::new();
        let mut lb = RingHashBuilder::new().build();
        let endpoints = vec![first, Endpoint::from(Address::new("127.0.0.2:443"))];
        cc.update(&mut *lb, ClientConnState::new(endpoints, None))
            .unwrap();
        for key in ["127.0.0.1:443", "127.0.0.2:443"] {
            let _ = pick_hash(&mut cc, hash_of(key));
            cc.run_work(&mut *lb);
            let sc = *cc.connects().last().expect("a pick connects");
            cc.set_state(&mut *lb, sc, Ready);
        }
        owners(&mut cc, &keys)
    };
    let before = run(Endpoint::from(Address::new("127.0.0.1:443")));
    // The backend moved to another address; A76's hash key keeps its place.
    let after = run(Endpoint::from(Address::new("127.0.0.9:443")).with_hash_key("127.0.0.1:443"));
    let renamed: Vec<String> = before
        .iter()
        .map(|a| a.replace("127.0.0.1:443", "127.0.0.9:443"))
        .collect();
    assert_eq!(after, renamed);
    assert!(before.iter().any(|a| a == "127.0.0.1:443"));
}

#[test]
fn zero_endpoints_fail_and_a_resolver_error_keeps_the_last_good_ones() {
    let mut cc = TestClientConn::new();
    let mut lb = RingHashBuilder::new().build();
    assert!(cc
        .update(&mut *lb, ClientConnState::new(Vec::new(), None))
        .is_err());
    assert_eq!(cc.state(), Some(TransientFailure));
    cc.resolver_error(&mut *lb, "boom");
    assert!(matches!(cc.pick(), Picked::Fail(s) if s.message().contains("boom")));
    let list = addrs(2);
    update(&mut cc, &mut *lb, &list, None);
    let sc = connect(&mut cc, &mut *lb, &list[0], Ready);
    cc.resolver_error(&mut *lb, "later");
    assert_eq!(cc.state(), Some(Ready));
    assert_eq!(
        pick_hash(&mut cc, hash_of(&list[0])),
        Picked::Complete {
            subconn: sc,
            hooks: 0
        }
    );
    // Removing an endpoint shuts its subchannel down.
    update(&mut cc, &mut *lb, &list[1..], None);
    assert_eq!(cc.shutdowns(), [sc]);
}

/// The table readers pick from inline (`InlineKind::Ring`) agrees with the
/// picker on every hash: where the picker completes with a READY endpoint
/// (no done hook), the table gives that endpoint; everywhere else (IDLE,
/// CONNECTING, every endpoint failing, no hash, a hash that may come from
/// a header) it gives none, and the reader calls the picker.
#[test]
fn the_inline_table_picks_as_the_picker_does() {
    use crate::balancer::picker::InlineKind;
    let mut cc = TestClientConn::new();
    let mut lb = RingHashBuilder::new().build();
    let list = addrs(7);
    update(&mut cc, &mut *lb, &list, None);
    connect(&mut cc, &mut *lb, &list[0], Ready);
    connect(&mut cc, &mut *lb, &list[1], Ready);
    connect(&mut cc, &mut *lb, &list[2], Ready);
    connect(&mut cc, &mut *lb, &list[3], TransientFailure);
    connect(&mut cc, &mut *lb, &list[4], Connecting);
    // list[5] and list[6] stay IDLE (or CONNECTING, if the failure made
    // the policy connect one).
    let keys = keys(3000);
    let (mut inline, mut other) = (0, 0);
    for k in &keys {
        let picker = cc.picker().unwrap().clone();
        let Some(InlineKind::Ring(table)) = picker.inline() else {
            panic!("ring_hash's picker offers its ring table");
        };
        let from_table = table.ready(Some(*k), false);
        // No hash: the picker decides (it fails the pick).
        assert!(table.ready(None, false).is_none());
        match (from_table, pick_hash(&mut cc, *k)) {
            (Some(e), Picked::Complete { subconn, hooks }) => {
                assert_eq!((e.id(), hooks), (subconn, 0), "key {k:#x}");
                let addr = cc.subconn(subconn).unwrap().addr().to_string();
                assert!(list[..3].contains(&addr), "READY only: {addr}");
                inline += 1;
            }
            (None, Picked::Complete { subconn, .. }) => {
                let addr = cc.subconn(subconn).unwrap().addr().to_string();
                assert!(!list[..3].contains(&addr), "key {k:#x}: {addr} READY");
                other += 1;
            }
            (None, _) => other += 1,
            (Some(e), p) => panic!("key {k:#x}: table {:?}, picker {p:?}", e.id()),
        }
        cc.run_work(&mut *lb);
    }
    assert!(inline > 1000 && other > 100, "{inline} inline, {other} not");
}

/// With `requestHashHeader`, a pick that carries metadata may get its hash
/// from it: the table leaves it to the picker; one without takes the
/// caller's hash as the picker does.
#[test]
fn with_a_header_the_inline_table_leaves_picks_with_metadata_to_the_picker() {
    use crate::balancer::picker::InlineKind;
    let mut cc = TestClientConn::new();
    let mut lb = RingHashBuilder::new().build();
    let list = addrs(3);
    let cfg = config(json!({"requestHashHeader": "x-key"}));
    update(&mut cc, &mut *lb, &list, cfg);
    for a in &list {
        connect(&mut cc, &mut *lb, a, Ready);
    }
    let picker = cc.picker().unwrap().clone();
    let Some(InlineKind::Ring(table)) = picker.inline() else {
        panic!("ring_hash's picker offers its ring table");
    };
    for k in keys(100) {
        assert!(table.ready(Some(k), true).is_none());
        let e = table.ready(Some(k), false).expect("every endpoint READY");
        match pick_hash(&mut cc, k) {
            Picked::Complete { subconn, .. } => assert_eq!(e.id(), subconn),
            p => panic!("{p:?}"),
        }
    }
}

/// A76: with `requestHashHeader`, an RPC whose metadata lacks the header
/// gets a random hash, whatever hash its caller passed (gRPC-Go's and
/// C-core's pickers read the call's hash only with no header configured).
#[test]
fn with_a_header_metadata_without_it_hashes_at_random_not_by_the_callers_hash() {
    let mut cc = TestClientConn::new();
    let mut lb = RingHashBuilder::new().build();
    let list = addrs(4);
    update(
        &mut cc,
        &mut *lb,
        &list,
        config(json!({"requestHashHeader": "x-key"})),
    );
    for a in &list {
        connect(&mut cc, &mut *lb, a, Ready);
    }
    let other = [("x-other".to_string(), "v".to_string())];
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let info = PickInfo {
            hash: Some(42),
            metadata: &other,
            ..PickInfo::default()
        };
        match cc.pick_with(&info, None) {
            Picked::Complete { subconn, .. } => seen.insert(subconn),
            p => panic!("{p:?}"),
        };
    }
    assert!(seen.len() > 1, "every pick on one endpoint: {seen:?}");
}

/// gRPC-Go's `GRPC_RING_HASH_CAP`: a number, clamped to 1..=8M; anything
/// else leaves the 4096 default.
#[test]
fn the_ring_size_cap_comes_from_grpc_ring_hash_cap() {
    assert_eq!(cap_from_env(None), 4096);
    assert_eq!(cap_from_env(Some("10000")), 10_000);
    assert_eq!(cap_from_env(Some("0")), 1);
    assert_eq!(cap_from_env(Some("99999999999")), 8_388_608);
    assert_eq!(cap_from_env(Some("lots")), 4096);
    assert_eq!(cap_from_env(Some("-5")), 4096);
}

/// Endpoints 0 (weight 15), 1 (weight 4) and 2 (weight 11) on a ring of
/// 3: gRPC's running sums give endpoint 0 two entries, endpoint 2 one and
/// endpoint 1, between them in hash-key order, none.
fn ring_with_a_gap(cfg: serde_json::Value) -> (TestClientConn, Box<dyn Balancer>, Vec<String>) {
    let list = addrs(3);
    let places: Vec<Placement> = list
        .iter()
        .zip([15, 4, 11])
        .map(|(a, w)| Placement {
            hash_key: a.clone(),
            weight: w,
        })
        .collect();
    let ring = Ring::new(&places, 1, 3);
    assert_eq!(ring.members(), [0, 2], "endpoint 1 is off the ring");
    let mut cc = TestClientConn::new();
    let mut lb = RingHashBuilder::new().build();
    cc.update(&mut *lb, gap_update(&list, cfg)).unwrap();
    (cc, lb, list)
}

fn gap_update(list: &[String], cfg: serde_json::Value) -> ClientConnState {
    let endpoints = list
        .iter()
        .zip([15, 4, 11])
        .map(|(a, w)| Endpoint::from(Address::new(a.as_str())).with_weight(w))
        .collect();
    ClientConnState::new(endpoints, config(cfg))
}

/// gRPC-Go's `updatePickerLocked` (C-core's `idle_endpoint` likewise):
/// CONNECTING or TRANSIENT_FAILURE with nothing connecting connects the
/// first IDLE endpoint in hash-key order, on the ring or not.
#[test]
fn recovery_connects_the_first_idle_endpoint_by_hash_key() {
    let (mut cc, mut lb, list) = ring_with_a_gap(json!({"minRingSize": 1, "maxRingSize": 3}));
    connect(&mut cc, &mut *lb, &list[0], TransientFailure);
    assert_eq!(cc.state(), Some(Connecting), "one TF of three");
    assert_eq!(cc.connects().len(), 2, "{:?}", cc.connects());
    let next = *cc.connects().last().unwrap();
    assert_eq!(cc.subconn(next).unwrap().addr(), list[1]);
}

/// A76: a random-hash pick starts no connection while any endpoint (the
/// picker counts them all, as gRPC-Go's `hasEndpointInConnectingState`
/// does) is CONNECTING, on the ring or not.
#[test]
fn random_picks_start_nothing_while_any_endpoint_connects() {
    let (mut cc, mut lb, list) = ring_with_a_gap(json!({"minRingSize": 1, "maxRingSize": 3}));
    connect(&mut cc, &mut *lb, &list[0], TransientFailure);
    // Endpoint 1 (off the ring) is connecting now (the recovery rule).
    let off = *cc.connects().last().unwrap();
    assert_eq!(cc.subconn(off).unwrap().addr(), list[1]);
    cc.set_state(&mut *lb, off, Connecting);
    let cfg = json!({"minRingSize": 1, "maxRingSize": 3, "requestHashHeader": "k"});
    cc.update(&mut *lb, gap_update(&list, cfg)).unwrap();
    let asked = cc.work_requests();
    for _ in 0..10 {
        assert_eq!(pick_header(&mut cc, &[]), Picked::Queue);
    }
    assert_eq!(cc.work_requests(), asked, "endpoint 2 was asked to connect");
    assert_eq!(cc.connects().len(), 2);
}

/// The picker's "an endpoint is connecting" follows endpoints off the ring
/// too, even when the aggregate state does not move: both members failing
/// (TRANSIENT_FAILURE) while the off-ring endpoint connects, then fails
/// too (still TRANSIENT_FAILURE): a random-hash pick then fails at once,
/// as nothing is connecting any more, rather than queueing.
#[test]
fn an_off_ring_endpoint_ending_its_connection_republishes_the_picker() {
    let cfg = json!({"minRingSize": 1, "maxRingSize": 3, "requestHashHeader": "k"});
    let (mut cc, mut lb, list) = ring_with_a_gap(json!({"minRingSize": 1, "maxRingSize": 3}));
    connect(&mut cc, &mut *lb, &list[0], TransientFailure);
    // Endpoint 1 (off the ring) connects (the recovery rule).
    let off = *cc.connects().last().unwrap();
    assert_eq!(cc.subconn(off).unwrap().addr(), list[1]);
    connect(&mut cc, &mut *lb, &list[2], TransientFailure);
    cc.update(&mut *lb, gap_update(&list, cfg)).unwrap();
    assert_eq!(cc.state(), Some(TransientFailure));
    assert_eq!(
        pick_header(&mut cc, &[]),
        Picked::Queue,
        "one is connecting"
    );
    cc.set_state(&mut *lb, off, TransientFailure);
    assert_eq!(cc.state(), Some(TransientFailure));
    assert!(
        matches!(pick_header(&mut cc, &[]), Picked::Fail(_)),
        "queued with nothing connecting"
    );
}

/// A42: an endpoint whose connection is lost goes IDLE and stays so (no
/// reconnect of its own: gRPC-Go's endpointsharding `DisableAutoReconnect`)
/// until a pick lands on it.
#[test]
fn an_endpoint_that_loses_its_connection_waits_for_a_pick() {
    let (mut cc, mut lb, list) = ready_ring(2);
    let sc = cc.subconn_for(&list[0]).unwrap().id();
    let connects = cc.connects().len();
    cc.set_state(&mut *lb, sc, Idle);
    cc.run_work(&mut *lb);
    assert_eq!(cc.state(), Some(Ready));
    assert_eq!(cc.connects().len(), connects, "reconnected on its own");
    let other = cc.subconn_for(&list[1]).unwrap().id();
    cc.set_state(&mut *lb, other, Idle);
    cc.run_work(&mut *lb);
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(cc.connects().len(), connects, "reconnected on its own");
    assert_eq!(pick_hash(&mut cc, hash_of(&list[0])), Picked::Queue);
    cc.run_work(&mut *lb);
    assert_eq!(cc.connects().len(), connects + 1);
    assert_eq!(*cc.connects().last().unwrap(), sc);
}
