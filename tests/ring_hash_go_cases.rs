//! gRPC-Go's ring_hash tests (balancer/ringhash/ringhash_test.go,
//! picker_test.go, ring_test.go, ringhash_e2e_test.go) ported case by case
//! onto switchyard's public API (`TestClientConn` for the policy, a real
//! channel against in-process servers on 127.0.0.1 for the e2e rows).
//!
//! The ring is checked against an independent model of gRPC-Go's `newRing`
//! (ring.go): endpoints sorted by hash key, float64 normalised weights,
//! scale = min(ceil(minW × minRingSize) / minW, maxRingSize), entries
//! XXH64("<hashKey>_<n>") while the running count is below the running
//! target, sorted by hash; a hash goes to the first entry ≥ it, wrapping.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::ConnectivityState::{Connecting, Idle, Ready, TransientFailure};
use switchyard::*;
use xxhash_rust::xxh64::xxh64;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn builder() -> std::sync::Arc<dyn Builder> {
    registry::get("ring_hash_experimental").expect("ring_hash_experimental registered")
}

fn config(json: serde_json::Value) -> Option<LbConfig> {
    builder()
        .parse_config(&json)
        .expect("valid ring_hash config")
}

/// gRPC-Go's `testConfig` in ringhash_test.go: a tiny ring.
fn small() -> Option<LbConfig> {
    config(serde_json::json!({"minRingSize": 1, "maxRingSize": 10}))
}

fn ep(addr: &str) -> Endpoint {
    Endpoint::from(Address::new(addr))
}

fn ep_multi(addrs: &[&str]) -> Endpoint {
    Endpoint::new(addrs.iter().map(|a| Address::new(*a)).collect())
}

fn update(
    cc: &mut TestClientConn,
    lb: &mut dyn Balancer,
    eps: Vec<Endpoint>,
    cfg: Option<LbConfig>,
) {
    cc.update(lb, ClientConnState::new(eps, cfg)).unwrap();
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

fn picked_addr(cc: &TestClientConn, p: &Picked) -> Option<String> {
    match p {
        Picked::Complete { subconn, .. } => Some(cc.subconn(*subconn).unwrap().addr().to_string()),
        _ => None,
    }
}

/// Hash of entry `n` of the endpoint whose hash key is `key`.
fn entry(key: &str, n: usize) -> u64 {
    xxh64(format!("{key}_{n}").as_bytes(), 0)
}

/// gRPC-Go's `newRing` + `normalizeWeights` (ring.go), independently.
/// `eps`: (hash key, weight ≥ 1). Returns (hash, hash key) sorted by hash.
fn model_ring(eps: &[(&str, u32)], min: u64, max: u64) -> Vec<(u64, String)> {
    let mut eps: Vec<(String, u32)> = eps.iter().map(|(k, w)| (k.to_string(), *w)).collect();
    let sum: u32 = eps.iter().map(|(_, w)| *w).sum();
    let mut min_w = 1.0f64;
    let normalized: Vec<f64> = eps
        .iter()
        .map(|(_, w)| {
            let nw = f64::from(*w) / f64::from(sum);
            min_w = min_w.min(nw);
            nw
        })
        .collect();
    let mut order: Vec<usize> = (0..eps.len()).collect();
    order.sort_by(|a, b| eps[*a].0.cmp(&eps[*b].0));
    let scale = ((min_w * min as f64).ceil() / min_w).min(max as f64);
    let mut items = Vec::new();
    let (mut current, mut target) = (0f64, 0f64);
    for i in order {
        target += scale * normalized[i];
        let mut idx = 0;
        while current < target {
            items.push((entry(&eps[i].0, idx), eps[i].0.clone()));
            idx += 1;
            current += 1.0;
        }
    }
    eps.clear();
    items.sort_by_key(|(h, _)| *h);
    items
}

/// gRPC-Go's `ring.pick`: the first entry with hash ≥ h, else the first.
fn model_owner(ring: &[(u64, String)], h: u64) -> String {
    let i = ring.partition_point(|(e, _)| *e < h);
    ring[if i == ring.len() { 0 } else { i }].1.clone()
}

fn probe_hashes(ring: &[(u64, String)]) -> Vec<u64> {
    let mut v = vec![0, 1, u64::MAX];
    for (h, _) in ring {
        v.extend([*h, h.wrapping_sub(1), h.wrapping_add(1)]);
    }
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x);
    }
    v
}

/// Brings up the endpoint whose hash key is `key` (and whose first address
/// is `first_addr`) by a pick on its entry 0, then reports `state`.
fn connect_via_pick(
    cc: &mut TestClientConn,
    lb: &mut dyn Balancer,
    key: &str,
    first_addr: &str,
    state: ConnectivityState,
) -> SubConnId {
    assert_eq!(
        pick_hash(cc, entry(key, 0)),
        Picked::Queue,
        "{key}: IDLE pick queues"
    );
    cc.run_work(lb);
    let sc = cc
        .subconn_for(first_addr)
        .unwrap_or_else(|| panic!("a pick on {key} created its subchannel"))
        .id();
    assert_eq!(cc.connects().last(), Some(&sc), "{key} connects");
    cc.set_state(lb, sc, Connecting);
    cc.set_state(lb, sc, state);
    sc
}

fn addr(i: usize) -> String {
    format!("127.0.0.1:{}", 20000 + i)
}

// ---------------------------------------------------------------------------
// ring_test.go / weights / ring sizes (TestRingNew, TestAddrWeightChange,
// TestUpdateClientConnState_NewRingSize)
// ---------------------------------------------------------------------------

/// Every endpoint READY: each hash goes where gRPC-Go's ring sends it.
fn assert_ring_matches(
    cc: &mut TestClientConn,
    ring: &[(u64, String)],
    by_key: &HashMap<String, String>,
    what: &str,
) {
    let mut wrong = Vec::new();
    for h in probe_hashes(ring) {
        let want = by_key[&model_owner(ring, h)].clone();
        let p = pick_hash(cc, h);
        let got = picked_addr(cc, &p);
        if got.as_deref() != Some(want.as_str()) {
            wrong.push(format!("{h:#x}: got {got:?} want {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: {} of the hashes land elsewhere than in gRPC-Go, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

#[test]
fn ring_new_sizes_and_weights_match_grpc_go() {
    // TestRingNew's endpoints a:3, b:3, c:4, for min in {3,4,6,8} and max
    // in {20,8}; plus the default sizes and a skewed set.
    let sets: Vec<Vec<(usize, u32)>> = vec![
        vec![(0, 3), (1, 3), (2, 4)],
        vec![(0, 1), (1, 2), (2, 3), (3, 7)],
        vec![(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)],
        vec![(0, 1), (1, 100)],
        (0..300).map(|i| (i, 1 + (i as u32 * 7919) % 7)).collect(),
        (0..75).map(|i| (i, 1)).collect(),
    ];
    let sizes: Vec<(u64, u64)> = vec![
        (3, 20),
        (4, 20),
        (6, 20),
        (8, 20),
        (3, 8),
        (4, 8),
        (6, 8),
        (8, 8),
        (1, 10),
        (20, 100),
        (1024, 4096),
        (10, 20),
        (16, 64),
        (1, 300),
        (4096, 4096),
    ];
    for set in &sets {
        for &(min, max) in &sizes {
            let mut cc = TestClientConn::new();
            let mut lb = builder().build();
            let eps: Vec<Endpoint> = set
                .iter()
                .map(|(i, w)| ep(&addr(*i)).with_weight(*w))
                .collect();
            let keys: Vec<(String, u32)> = set.iter().map(|(i, w)| (addr(*i), *w)).collect();
            let keys_ref: Vec<(&str, u32)> = keys.iter().map(|(k, w)| (k.as_str(), *w)).collect();
            let ring = model_ring(&keys_ref, min, max);
            update(
                &mut cc,
                &mut *lb,
                eps,
                config(serde_json::json!({"minRingSize": min, "maxRingSize": max})),
            );
            // Bring every endpoint up by a pick landing on one of its entries.
            let mut up = HashSet::new();
            for (h, k) in &ring {
                if up.insert(k.clone()) {
                    let _ = pick_hash(&mut cc, *h);
                    cc.run_work(&mut *lb);
                    let sc = cc.subconn_for(k).unwrap().id();
                    cc.set_state(&mut *lb, sc, Ready);
                }
            }
            let by_key: HashMap<String, String> =
                keys.iter().map(|(k, _)| (k.clone(), k.clone())).collect();
            assert_ring_matches(
                &mut cc,
                &ring,
                &by_key,
                &format!("{set:?} min {min} max {max}"),
            );
        }
    }
}

/// TestAddrWeightChange: [A, B] then B weight 2: a new ring with B's
/// second entry (B_1) on it; the ring is then [A_0, B_0, B_1].
#[test]
fn weight_change_rebuilds_the_ring() {
    let (a, b) = (addr(0), addr(1));
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(&mut cc, &mut *lb, vec![ep(&a), ep(&b)], small());
    connect_via_pick(&mut cc, &mut *lb, &a, &a, Ready);
    connect_via_pick(&mut cc, &mut *lb, &b, &b, Ready);
    let by_key: HashMap<String, String> = [(a.clone(), a.clone()), (b.clone(), b.clone())].into();
    let before = model_ring(&[(&a, 1), (&b, 1)], 1, 10);
    assert_eq!(before.len(), 2);
    assert_ring_matches(&mut cc, &before, &by_key, "equal weights");
    update(
        &mut cc,
        &mut *lb,
        vec![ep(&a), ep(&b).with_weight(2)],
        small(),
    );
    let after = model_ring(&[(&a, 1), (&b, 2)], 1, 10);
    assert_eq!(after.len(), 3);
    assert_ring_matches(&mut cc, &after, &by_key, "B weight 2");
}

/// TestUpdateClientConnState_NewRingSize: a config with new sizes builds a
/// new ring (1..10 then 20..100).
#[test]
fn new_ring_sizes_rebuild_the_ring() {
    let (a, b) = (addr(0), addr(1));
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(&mut cc, &mut *lb, vec![ep(&a), ep(&b)], small());
    connect_via_pick(&mut cc, &mut *lb, &a, &a, Ready);
    connect_via_pick(&mut cc, &mut *lb, &b, &b, Ready);
    let by_key: HashMap<String, String> = [(a.clone(), a.clone()), (b.clone(), b.clone())].into();
    assert_ring_matches(
        &mut cc,
        &model_ring(&[(&a, 1), (&b, 1)], 1, 10),
        &by_key,
        "1..10",
    );
    let published = cc.pickers_published();
    update(
        &mut cc,
        &mut *lb,
        vec![ep(&a), ep(&b)],
        config(serde_json::json!({"minRingSize": 20, "maxRingSize": 100})),
    );
    assert!(
        cc.pickers_published() > published,
        "a new picker for the new ring"
    );
    assert_ring_matches(
        &mut cc,
        &model_ring(&[(&a, 1), (&b, 1)], 20, 100),
        &by_key,
        "20..100",
    );
}

// ---------------------------------------------------------------------------
// ringhash_test.go
// ---------------------------------------------------------------------------

/// setupTest: no subchannel at first; IDLE with every endpoint IDLE.
/// TestOneEndpoint: a pick queues and connects the only endpoint; READY
/// then completes every pick.
#[test]
fn one_endpoint() {
    let a = addr(0);
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(&mut cc, &mut *lb, vec![ep(&a)], small());
    assert!(
        cc.subconns().is_empty(),
        "no subchannel at first (lazy children)"
    );
    assert_eq!(cc.state(), Some(Idle));
    let h = entry(&a, 0).wrapping_sub(1);
    assert_eq!(pick_hash(&mut cc, h), Picked::Queue);
    cc.run_work(&mut *lb);
    assert_eq!(cc.connects().len(), 1);
    let sc = cc.connects()[0];
    assert_eq!(cc.subconn(sc).unwrap().addr(), a);
    cc.set_state(&mut *lb, sc, Connecting);
    cc.set_state(&mut *lb, sc, Ready);
    assert_eq!(cc.state(), Some(Ready));
    for _ in 0..5 {
        assert_eq!(
            pick_hash(&mut cc, h),
            Picked::Complete {
                subconn: sc,
                hooks: 0
            }
        );
    }
}

/// TestThreeSubConnsAffinity, row by row: the hash lands on the ring's
/// second entry; failures move the automatic connection attempts over
/// the others; with all failing, whichever comes up next on the ring from
/// the hash serves it.
#[test]
fn three_subconns_affinity() {
    let list: Vec<String> = (0..3).map(addr).collect();
    let keys: Vec<(&str, u32)> = list.iter().map(|a| (a.as_str(), 1)).collect();
    let ring = model_ring(&keys, 1, 10);
    assert_eq!(ring.len(), 3);
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(
        &mut cc,
        &mut *lb,
        list.iter().map(|a| ep(a)).collect(),
        small(),
    );
    let test_hash = ring[0].0 + 1;
    assert_eq!(pick_hash(&mut cc, test_hash), Picked::Queue);
    cc.run_work(&mut *lb);
    assert_eq!(cc.connects().len(), 1);
    let mut scs: [Option<SubConnId>; 3] = [None, None, None];
    let first = cc.connects()[0];
    assert_eq!(
        cc.subconn(first).unwrap().addr(),
        ring[1].1,
        "the second entry"
    );
    scs[1] = Some(first);
    let mut remaining: HashSet<String> = list.iter().cloned().collect();
    remaining.remove(&ring[1].1);
    cc.set_state(&mut *lb, first, Connecting);
    cc.set_state(&mut *lb, first, TransientFailure);
    // Another endpoint connects, without a pick.
    assert_eq!(cc.connects().len(), 2, "a new endpoint is tried");
    let sc = cc.connects()[1];
    let sc_addr = cc.subconn(sc).unwrap().addr().to_string();
    assert!(remaining.remove(&sc_addr), "{sc_addr} tried before");
    let slot = ring.iter().position(|(_, k)| *k == sc_addr).unwrap();
    scs[slot] = Some(sc);
    cc.set_state(&mut *lb, sc, Connecting);
    cc.set_state(&mut *lb, sc, TransientFailure);
    assert_eq!(cc.connects().len(), 3, "the last endpoint is tried");
    let sc = cc.connects()[2];
    let sc_addr = cc.subconn(sc).unwrap().addr().to_string();
    assert!(remaining.remove(&sc_addr), "{sc_addr} tried before");
    let slot = ring.iter().position(|(_, k)| *k == sc_addr).unwrap();
    scs[slot] = Some(sc);
    cc.set_state(&mut *lb, sc, Connecting);
    cc.set_state(&mut *lb, sc, TransientFailure);
    assert_eq!(cc.state(), Some(TransientFailure));
    let scs: Vec<SubConnId> = scs.iter().map(|s| s.unwrap()).collect();
    // The first entry's endpoint recovers: picks walk past the failing
    // second and third entries to it.
    for (i, want) in [(0usize, 0usize), (2, 2), (1, 1)] {
        cc.set_state(&mut *lb, scs[i], Idle);
        cc.set_state(&mut *lb, scs[i], Connecting);
        cc.set_state(&mut *lb, scs[i], Ready);
        assert_eq!(cc.state(), Some(Ready));
        for _ in 0..5 {
            assert_eq!(
                pick_hash(&mut cc, test_hash),
                Picked::Complete {
                    subconn: scs[want],
                    hooks: 0
                },
                "entry {i} came up"
            );
        }
    }
}

/// TestThreeBackendsAffinityMultiple: two hashes, each on its own
/// endpoint, each stays.
#[test]
fn three_backends_affinity_multiple() {
    let list: Vec<String> = (0..3).map(addr).collect();
    let keys: Vec<(&str, u32)> = list.iter().map(|a| (a.as_str(), 1)).collect();
    let ring = model_ring(&keys, 1, 10);
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(
        &mut cc,
        &mut *lb,
        list.iter().map(|a| ep(a)).collect(),
        small(),
    );
    let h1 = ring[0].0 + 1;
    assert_eq!(pick_hash(&mut cc, h1), Picked::Queue);
    cc.run_work(&mut *lb);
    let sc0 = *cc.connects().last().unwrap();
    assert_eq!(cc.subconn(sc0).unwrap().addr(), ring[1].1);
    cc.set_state(&mut *lb, sc0, Connecting);
    cc.set_state(&mut *lb, sc0, Ready);
    let h2 = ring[1].0 + 1;
    assert_eq!(pick_hash(&mut cc, h2), Picked::Queue);
    cc.run_work(&mut *lb);
    let sc1 = *cc.connects().last().unwrap();
    assert_eq!(cc.subconn(sc1).unwrap().addr(), ring[2].1);
    cc.set_state(&mut *lb, sc1, Connecting);
    cc.set_state(&mut *lb, sc1, Ready);
    for _ in 0..5 {
        assert_eq!(
            pick_hash(&mut cc, h2),
            Picked::Complete {
                subconn: sc1,
                hooks: 0
            }
        );
        assert_eq!(
            pick_hash(&mut cc, h1),
            Picked::Complete {
                subconn: sc0,
                hooks: 0
            }
        );
    }
}

/// TestAutoConnectEndpointOnTransientFailure, step by step.
#[test]
fn auto_connect_endpoint_on_transient_failure() {
    let list: Vec<String> = (0..4).map(addr).collect();
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(
        &mut cc,
        &mut *lb,
        list.iter().map(|a| ep(a)).collect(),
        small(),
    );
    let _ = pick_hash(&mut cc, 0);
    cc.run_work(&mut *lb);
    assert_eq!(cc.connects().len(), 1);
    let sc0 = cc.connects()[0];
    cc.set_state(&mut *lb, sc0, Connecting);
    cc.set_state(&mut *lb, sc0, TransientFailure);
    assert_eq!(cc.state(), Some(Connecting), "one TF of four");
    assert_eq!(cc.connects().len(), 2, "a second endpoint connects");
    let sc1 = cc.connects()[1];
    assert_ne!(sc1, sc0);
    cc.set_state(&mut *lb, sc1, Connecting);
    cc.set_state(&mut *lb, sc1, TransientFailure);
    assert_eq!(cc.state(), Some(TransientFailure), "two TF");
    assert_eq!(cc.connects().len(), 3, "a third endpoint connects");
    let sc2 = cc.connects()[2];
    cc.set_state(&mut *lb, sc2, Connecting);
    // sc0 READY, then its connection is lost: IDLE.
    cc.set_state(&mut *lb, sc0, Ready);
    assert_eq!(cc.state(), Some(Ready));
    cc.set_state(&mut *lb, sc0, Idle);
    assert_eq!(cc.state(), Some(Connecting), "one TF, one CONNECTING");
    let connects = cc.connects().len();
    let _ = pick_hash(&mut cc, 0);
    cc.run_work(&mut *lb);
    assert_eq!(
        cc.connects().len(),
        connects + 1,
        "the pick reconnects sc0's endpoint"
    );
    let again = *cc.connects().last().unwrap();
    assert_eq!(
        cc.subconn(again).unwrap().addr(),
        cc.subconn(sc0).unwrap().addr()
    );
    cc.set_state(&mut *lb, again, Connecting);
    // sc2 fails while sc0's endpoint connects: nothing new.
    let (connects, subconns) = (cc.connects().len(), cc.subconns().len());
    cc.set_state(&mut *lb, sc2, TransientFailure);
    cc.run_work(&mut *lb);
    assert_eq!(cc.connects().len(), connects, "no new connection attempt");
    assert_eq!(cc.subconns().len(), subconns, "no new subchannel");
}

/// TestAggregatedConnectivityState's rows, reached through real
/// subchannel states.
#[test]
fn aggregated_connectivity_state_rows() {
    type Row = (&'static [ConnectivityState], ConnectivityState);
    let rows: [Row; 5] = [
        (&[Ready], Ready),
        (&[Connecting], Connecting),
        (&[Ready, TransientFailure], Ready),
        (&[Connecting, TransientFailure], Connecting),
        (
            &[Connecting, TransientFailure, TransientFailure],
            TransientFailure,
        ),
    ];
    for (states, want) in rows {
        let list: Vec<String> = (0..states.len()).map(addr).collect();
        let mut cc = TestClientConn::new();
        let mut lb = builder().build();
        update(
            &mut cc,
            &mut *lb,
            list.iter().map(|a| ep(a)).collect(),
            small(),
        );
        // Connect them in order, TF ones first so that the recovery rule
        // does not start anything that the row does not have.
        let mut order: Vec<usize> = (0..states.len()).collect();
        order.sort_by_key(|i| if states[*i] == TransientFailure { 0 } else { 1 });
        for i in order {
            let a = &list[i];
            let sc = match cc.subconn_for(a) {
                Some(sc) => sc.id(),
                None => {
                    let _ = pick_hash(&mut cc, entry(a, 0));
                    cc.run_work(&mut *lb);
                    cc.subconn_for(a).unwrap().id()
                }
            };
            cc.set_state(&mut *lb, sc, Connecting);
            if states[i] != Connecting {
                cc.set_state(&mut *lb, sc, states[i]);
            }
        }
        assert_eq!(cc.state(), Some(want), "{states:?}");
    }
}

/// TestAddrBalancerAttributesChange: the same endpoints again (new
/// attributes of the same content): no new subchannel.
#[test]
fn same_endpoints_again_create_nothing() {
    let a = addr(0);
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(&mut cc, &mut *lb, vec![ep(&a)], small());
    let _ = pick_hash(&mut cc, entry(&a, 0));
    cc.run_work(&mut *lb);
    assert_eq!(cc.subconns().len(), 1);
    update(&mut cc, &mut *lb, vec![ep(&a)], small());
    cc.run_work(&mut *lb);
    assert_eq!(
        cc.subconns().len(),
        1,
        "a new subchannel for the same address"
    );
}

// ---------------------------------------------------------------------------
// picker_test.go
// ---------------------------------------------------------------------------

/// The ring [A, B] (A's entry first) of two equal endpoints with one entry
/// each (min 1, max 2), both brought to the given states. Returns the
/// hash that lands on the first entry and the endpoints in ring order.
fn two_entry_ring(
    states: [ConnectivityState; 2],
    header: Option<&str>,
) -> (TestClientConn, Box<dyn Balancer>, u64, [String; 2]) {
    let (x, y) = (addr(0), addr(1));
    let ring = model_ring(&[(&x, 1), (&y, 1)], 1, 2);
    assert_eq!(ring.len(), 2);
    let order = [ring[0].1.clone(), ring[1].1.clone()];
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    let mut cfg = serde_json::json!({"minRingSize": 1, "maxRingSize": 2});
    if let Some(h) = header {
        cfg["requestHashHeader"] = serde_json::json!(h);
    }
    update(&mut cc, &mut *lb, vec![ep(&x), ep(&y)], config(cfg));
    // TF first (the recovery rule may then connect the other: bring it
    // to what the row says afterwards).
    let mut idx: Vec<usize> = vec![0, 1];
    idx.sort_by_key(|i| if states[*i] == TransientFailure { 0 } else { 1 });
    for i in idx {
        let a = &order[i];
        if states[i] == Idle && cc.subconn_for(a).is_none() {
            continue;
        }
        let sc = match cc.subconn_for(a) {
            Some(sc) => sc.id(),
            None => {
                let _ = pick_hash(&mut cc, entry(a, 0));
                cc.run_work(&mut *lb);
                cc.subconn_for(a).unwrap().id()
            }
        };
        cc.set_state(&mut *lb, sc, Connecting);
        if states[i] != Connecting {
            cc.set_state(&mut *lb, sc, states[i]);
        }
    }
    (cc, lb, ring[0].0, order)
}

/// TestPickerPickFirstTwo, every row.
#[test]
fn picker_pick_first_two() {
    // (states of the first and second entry, want: Some(i) = complete on
    // entry i's endpoint, None = queue; connect = entry whose endpoint the
    // pick asks to connect; fail = the pick fails).
    struct Row {
        states: [ConnectivityState; 2],
        complete: Option<usize>,
        queue: bool,
        connects: Option<usize>,
        fails: bool,
    }
    let rows = [
        Row {
            states: [Ready, Idle],
            complete: Some(0),
            queue: false,
            connects: None,
            fails: false,
        },
        Row {
            states: [Connecting, Idle],
            complete: None,
            queue: true,
            connects: None,
            fails: false,
        },
        Row {
            states: [Idle, Idle],
            complete: None,
            queue: true,
            connects: Some(0),
            fails: false,
        },
        Row {
            states: [TransientFailure, Ready],
            complete: Some(1),
            queue: false,
            connects: None,
            fails: false,
        },
        Row {
            states: [TransientFailure, Connecting],
            complete: None,
            queue: true,
            connects: None,
            fails: false,
        },
        Row {
            states: [TransientFailure, TransientFailure],
            complete: None,
            queue: false,
            connects: None,
            fails: true,
        },
    ];
    for row in rows {
        let (mut cc, mut lb, first, order) = two_entry_ring(row.states, None);
        let p = pick_hash(&mut cc, first);
        if let Some(i) = row.complete {
            assert_eq!(
                picked_addr(&cc, &p).as_deref(),
                Some(order[i].as_str()),
                "{:?}",
                row.states
            );
        }
        if row.queue {
            assert_eq!(p, Picked::Queue, "{:?}", row.states);
        }
        if row.fails {
            match &p {
                Picked::Fail(s) => assert_eq!(s.code(), Code::Unavailable, "{:?}", row.states),
                other => panic!("{:?}: {other:?}", row.states),
            }
        }
        if let Some(i) = row.connects {
            let before = cc.subconns().len();
            assert!(
                cc.run_work(&mut *lb),
                "{:?}: the pick asked for a connection",
                row.states
            );
            assert!(cc.subconns().len() > before || !cc.connects().is_empty());
            let last = *cc.connects().last().unwrap();
            assert_eq!(
                cc.subconn(last).unwrap().addr(),
                order[i],
                "{:?}",
                row.states
            );
        }
    }
    // The remaining row: TF then IDLE: the second entry connects, queued.
    let (mut cc, mut lb, first, order) = two_entry_ring([TransientFailure, Idle], None);
    // The recovery rule (one TF of two: CONNECTING, nothing connecting)
    // has already connected the IDLE one; the pick then queues on it.
    let p = pick_hash(&mut cc, first);
    assert_eq!(p, Picked::Queue);
    cc.run_work(&mut *lb);
    let last = *cc.connects().last().unwrap();
    assert_eq!(cc.subconn(last).unwrap().addr(), order[1]);
}

/// TestPickerRandomHash's rows, as far as a random start can be steered:
/// with requestHashHeader and no header, a READY endpoint anywhere serves
/// the pick; an IDLE one on the way is connected (at most one); with one
/// CONNECTING, the pick queues and connects nothing.
#[test]
fn picker_random_hash_rows() {
    let md = [("other".to_string(), "x".to_string())];
    let pick_md = |cc: &mut TestClientConn| {
        cc.pick_with(
            &PickInfo {
                metadata: &md,
                ..PickInfo::default()
            },
            None,
        )
    };
    // Ready + Idle: every pick completes on the READY one.
    let (mut cc, mut lb, _, order) = two_entry_ring([Ready, Idle], Some("some-header"));
    for _ in 0..50 {
        let p = pick_md(&mut cc);
        assert_eq!(picked_addr(&cc, &p).as_deref(), Some(order[0].as_str()));
    }
    // Walking from the IDLE one asks it to connect (at most one request).
    let _ = cc.run_work(&mut *lb);
    // Connecting + Idle: queue, and no connection requested.
    let (mut cc, mut lb, _, _) = two_entry_ring([Connecting, Idle], Some("some-header"));
    let connects = cc.connects().len();
    for _ in 0..20 {
        assert_eq!(pick_md(&mut cc), Picked::Queue);
    }
    cc.run_work(&mut *lb);
    assert_eq!(
        cc.connects().len(),
        connects,
        "a connection while one was CONNECTING"
    );
}

/// TestPickerRequestHashKey: header set → XXH64 of it; several values →
/// joined with ",".
#[test]
fn picker_request_hash_key() {
    let list: Vec<String> = (0..3).map(addr).collect();
    let keys: Vec<(&str, u32)> = list.iter().map(|a| (a.as_str(), 1)).collect();
    let ring = model_ring(&keys, 1024, 4096);
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(
        &mut cc,
        &mut *lb,
        list.iter().map(|a| ep(a)).collect(),
        config(serde_json::json!({"requestHashHeader": "some-header"})),
    );
    for a in &list {
        connect_via_pick(&mut cc, &mut *lb, a, a, Ready);
    }
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["some-value"], "some-value"),
        (vec!["value1", "value2"], "value1,value2"),
        (vec![""], ""),
    ];
    for (values, joined) in cases {
        let md: Vec<(String, String)> = values
            .iter()
            .map(|v| ("some-header".to_string(), v.to_string()))
            .collect();
        let p = cc.pick_with(
            &PickInfo {
                metadata: &md,
                ..PickInfo::default()
            },
            None,
        );
        assert_eq!(
            picked_addr(&cc, &p),
            Some(model_owner(&ring, xxh64(joined.as_bytes(), 0))),
            "{values:?}"
        );
    }
}

/// TestRingHash_RequestHashKeyRandom / ..RandomHashingDistribution..:
/// with requestHashHeader, RPCs without the header go to random endpoints
/// in proportion to their weights (every endpoint READY, a large ring).
#[test]
fn random_hash_distribution_follows_weights() {
    use switchyard::policy::ring_hash::RingHashBuilder;
    for weights in [vec![1u32, 1, 1, 1], vec![1, 2]] {
        let b = RingHashBuilder::new().with_ring_size_cap(1 << 20);
        let cfg = b
            .parse_config(&serde_json::json!({"minRingSize": 100000, "maxRingSize": 100000, "requestHashHeader": "address_hash"}))
            .unwrap();
        let list: Vec<String> = (0..weights.len()).map(addr).collect();
        let mut cc = TestClientConn::new();
        let mut lb = b.build();
        let eps: Vec<Endpoint> = list
            .iter()
            .zip(&weights)
            .map(|(a, w)| ep(a).with_weight(*w))
            .collect();
        update(&mut cc, &mut *lb, eps, cfg);
        for a in &list {
            connect_via_pick(&mut cc, &mut *lb, a, a, Ready);
        }
        let md = [("other".to_string(), "v".to_string())];
        let n = 40_000;
        let mut per: HashMap<String, usize> = HashMap::new();
        for _ in 0..n {
            let p = cc.pick_with(
                &PickInfo {
                    metadata: &md,
                    ..PickInfo::default()
                },
                None,
            );
            *per.entry(picked_addr(&cc, &p).expect("READY")).or_default() += 1;
        }
        let total: u32 = weights.iter().sum();
        for (a, w) in list.iter().zip(&weights) {
            let got = per.get(a).copied().unwrap_or(0) as f64 / n as f64;
            let want = f64::from(*w) / f64::from(total);
            assert!(
                (got - want).abs() < 0.02,
                "{weights:?}: {a} got {got}, want {want}"
            );
        }
    }
}

/// A42/A61 sticky TRANSIENT_FAILURE: a failed endpoint's pick_first
/// retrying (its subchannel IDLE after the backoff, then CONNECTING) is
/// still TRANSIENT_FAILURE for the ring: picks hashed to it go on to the
/// next (READY) endpoint instead of queueing; alone, the retry does not
/// turn the policy's TRANSIENT_FAILURE into CONNECTING.
#[test]
fn a_retrying_failed_endpoint_stays_transient_failure() {
    let (a, b) = (addr(0), addr(1));
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(&mut cc, &mut *lb, vec![ep(&a), ep(&b)], None);
    let sb = connect_via_pick(&mut cc, &mut *lb, &b, &b, Ready);
    let sa = connect_via_pick(&mut cc, &mut *lb, &a, &a, TransientFailure);
    cc.set_state(&mut *lb, sa, Idle);
    cc.run_work(&mut *lb);
    cc.set_state(&mut *lb, sa, Connecting);
    for n in 0..3 {
        let h = entry(&a, n);
        assert_eq!(
            pick_hash(&mut cc, h),
            Picked::Complete {
                subconn: sb,
                hooks: 0
            },
            "hash {h:#x}"
        );
    }
    // Alone.
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(&mut cc, &mut *lb, vec![ep(&a)], None);
    let sa = connect_via_pick(&mut cc, &mut *lb, &a, &a, TransientFailure);
    assert_eq!(cc.state(), Some(TransientFailure));
    cc.set_state(&mut *lb, sa, Idle);
    cc.run_work(&mut *lb);
    cc.set_state(&mut *lb, sa, Connecting);
    assert_eq!(cc.state(), Some(TransientFailure));
    assert!(matches!(pick_hash(&mut cc, 7), Picked::Fail(_)));
}

// ---------------------------------------------------------------------------
// ringhash_e2e_test.go, at the policy level
// ---------------------------------------------------------------------------

/// TestRingHash_ReorderAddressessWithinEndpoint: the hash key is the
/// endpoint's first address: reversing an endpoint's addresses moves its
/// entries to the new first address's hashes, keeping its connection;
/// swapping the other two leaves the ring as it is.
#[test]
fn reorder_addresses_within_endpoint() {
    let g0: Vec<String> = (0..3).map(addr).collect();
    let g1: Vec<String> = (3..6).map(addr).collect();
    let eps = |a: &[&String], b: &[&String]| -> Vec<Endpoint> {
        vec![
            ep_multi(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
            ep_multi(&b.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
        ]
    };
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(
        &mut cc,
        &mut *lb,
        eps(&[&g0[0], &g0[1], &g0[2]], &[&g1[0], &g1[1], &g1[2]]),
        None,
    );
    let sc_a = connect_via_pick(&mut cc, &mut *lb, &g0[0], &g0[0], Ready);
    let sc_b = connect_via_pick(&mut cc, &mut *lb, &g1[0], &g1[0], Ready);
    let by_key: HashMap<String, String> = [
        (g0[0].clone(), g0[0].clone()),
        (g1[0].clone(), g1[0].clone()),
    ]
    .into();
    assert_ring_matches(
        &mut cc,
        &model_ring(&[(&g0[0], 1), (&g1[0], 1)], 1024, 4096),
        &by_key,
        "initial",
    );
    let connects = cc.connects().len();
    // Reversed: hash keys g0[2] and g1[2], same connections.
    update(
        &mut cc,
        &mut *lb,
        eps(&[&g0[2], &g0[1], &g0[0]], &[&g1[2], &g1[1], &g1[0]]),
        None,
    );
    assert_eq!(cc.state(), Some(Ready));
    let by_key: HashMap<String, String> = [
        (g0[2].clone(), g0[0].clone()),
        (g1[2].clone(), g1[0].clone()),
    ]
    .into();
    let ring = model_ring(&[(&g0[2], 1), (&g1[2], 1)], 1024, 4096);
    assert_ring_matches(&mut cc, &ring, &by_key, "reversed");
    assert_eq!(cc.connects().len(), connects, "reordering reconnected");
    assert_eq!(
        pick_hash(&mut cc, entry(&g0[2], 0)),
        Picked::Complete {
            subconn: sc_a,
            hooks: 0
        }
    );
    assert_eq!(
        pick_hash(&mut cc, entry(&g1[2], 0)),
        Picked::Complete {
            subconn: sc_b,
            hooks: 0
        }
    );
    // Second and third swapped: the ring stays.
    update(
        &mut cc,
        &mut *lb,
        eps(&[&g0[2], &g0[0], &g0[1]], &[&g1[2], &g1[0], &g1[1]]),
        None,
    );
    assert_ring_matches(&mut cc, &ring, &by_key, "swapped");
    assert_eq!(cc.connects().len(), connects);
}

/// TestRingHash_FallBackWithinEndpoint: the first address failing, the
/// endpoint's pick_first goes on to the second; losing it, the endpoint
/// (and with both endpoints IDLE the policy) goes IDLE.
#[test]
fn fall_back_within_endpoint() {
    let l: Vec<String> = (0..4).map(addr).collect();
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(
        &mut cc,
        &mut *lb,
        vec![ep_multi(&[&l[0], &l[1]]), ep_multi(&[&l[2], &l[3]])],
        None,
    );
    assert_eq!(pick_hash(&mut cc, entry(&l[0], 0)), Picked::Queue);
    cc.run_work(&mut *lb);
    let first = cc.subconn_for(&l[0]).unwrap().id();
    cc.set_state(&mut *lb, first, Connecting);
    cc.set_state(&mut *lb, first, Ready);
    assert_eq!(
        pick_hash(&mut cc, entry(&l[0], 0)),
        Picked::Complete {
            subconn: first,
            hooks: 0
        }
    );
    // Backend 0 stops: the endpoint goes IDLE (so does the policy).
    cc.set_state(&mut *lb, first, Idle);
    assert_eq!(cc.state(), Some(Idle));
    // The next pick reconnects it: address 0 is refused, address 1 serves.
    assert_eq!(pick_hash(&mut cc, entry(&l[0], 0)), Picked::Queue);
    cc.run_work(&mut *lb);
    let again = cc.subconn_for(&l[0]).unwrap().id();
    cc.set_state(&mut *lb, again, Connecting);
    cc.set_state(&mut *lb, again, TransientFailure);
    let second = cc
        .subconn_for(&l[1])
        .expect("the second address is tried")
        .id();
    cc.set_state(&mut *lb, second, Connecting);
    cc.set_state(&mut *lb, second, Ready);
    assert_eq!(cc.state(), Some(Ready));
    for _ in 0..5 {
        assert_eq!(
            pick_hash(&mut cc, entry(&l[0], 0)),
            Picked::Complete {
                subconn: second,
                hooks: 0
            }
        );
    }
}

/// Four endpoints brought to [TF, TF, READY, IDLE] as the e2e tests do
/// (a pick on the first, then the recovery rule). Returns the ready
/// subchannel's address and the IDLE one's.
fn tf_tf_ready_idle(
    cc: &mut TestClientConn,
    lb: &mut dyn Balancer,
    list: &[String],
) -> (SubConnId, String) {
    update(cc, lb, list.iter().map(|a| ep(a)).collect(), None);
    let _ = pick_hash(cc, entry(&list[0], 0));
    cc.run_work(lb);
    for _ in 0..2 {
        let sc = *cc.connects().last().unwrap();
        cc.set_state(lb, sc, Connecting);
        cc.set_state(lb, sc, TransientFailure);
    }
    assert_eq!(cc.state(), Some(TransientFailure));
    assert_eq!(cc.connects().len(), 3, "the recovery rule tries a third");
    let ready = *cc.connects().last().unwrap();
    cc.set_state(lb, ready, Connecting);
    cc.set_state(lb, ready, Ready);
    assert_eq!(cc.state(), Some(Ready));
    let used: HashSet<String> = cc.subconns().iter().map(|s| s.addr().to_string()).collect();
    let idle = list.iter().find(|a| !used.contains(*a)).unwrap().clone();
    (ready, idle)
}

/// TestRingHash_RecoverWhenEndpointEntersIdle: the READY endpoint's
/// connection drops: TRANSIENT_FAILURE, and an IDLE endpoint is connected
/// without any pick.
#[test]
fn recover_when_endpoint_enters_idle() {
    let list: Vec<String> = (0..4).map(addr).collect();
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    let (ready, _idle) = tf_tf_ready_idle(&mut cc, &mut *lb, &list);
    let connects = cc.connects().len();
    cc.set_state(&mut *lb, ready, Idle);
    assert_eq!(cc.state(), Some(TransientFailure));
    cc.run_work(&mut *lb);
    assert_eq!(
        cc.connects().len(),
        connects + 1,
        "an IDLE endpoint connects"
    );
}

/// TestRingHash_RecoverWhenResolverRemovesEndpoint: the resolver removes
/// the READY endpoint: TRANSIENT_FAILURE, and the last IDLE one connects.
#[test]
fn recover_when_resolver_removes_endpoint() {
    let list: Vec<String> = (0..4).map(addr).collect();
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    let (ready, idle) = tf_tf_ready_idle(&mut cc, &mut *lb, &list);
    let ready_addr = cc.subconn(ready).unwrap().addr().to_string();
    let rest: Vec<Endpoint> = list
        .iter()
        .filter(|a| **a != ready_addr)
        .map(|a| ep(a))
        .collect();
    let connects = cc.connects().len();
    update(&mut cc, &mut *lb, rest, None);
    assert_eq!(cc.state(), Some(TransientFailure));
    cc.run_work(&mut *lb);
    assert_eq!(
        cc.connects().len(),
        connects + 1,
        "the IDLE endpoint connects"
    );
    let last = *cc.connects().last().unwrap();
    assert_eq!(cc.subconn(last).unwrap().addr(), idle);
}

/// The connecting endpoint removed (updatePickerLocked's note: "this check
/// also covers deleting endpoints"): one remains failing among several,
/// nothing connects: another IDLE endpoint connects.
#[test]
fn removing_the_connecting_endpoint_starts_another() {
    let list: Vec<String> = (0..3).map(addr).collect();
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    update(
        &mut cc,
        &mut *lb,
        list.iter().map(|a| ep(a)).collect(),
        None,
    );
    let _ = pick_hash(&mut cc, entry(&list[0], 0));
    cc.run_work(&mut *lb);
    let sc = *cc.connects().last().unwrap();
    cc.set_state(&mut *lb, sc, Connecting);
    cc.set_state(&mut *lb, sc, TransientFailure);
    assert_eq!(cc.connects().len(), 2);
    let connecting = *cc.connects().last().unwrap();
    cc.set_state(&mut *lb, connecting, Connecting);
    let gone = cc.subconn(connecting).unwrap().addr().to_string();
    let rest: Vec<Endpoint> = list.iter().filter(|a| **a != gone).map(|a| ep(a)).collect();
    update(&mut cc, &mut *lb, rest, None);
    assert_eq!(cc.state(), Some(Connecting), "one TF of two");
    cc.run_work(&mut *lb);
    assert_eq!(
        cc.connects().len(),
        3,
        "the remaining IDLE endpoint connects"
    );
}

/// TestRingHash_ReattemptWhenGoingFromTransientFailureToIdle: no
/// endpoints (TRANSIENT_FAILURE), then one: IDLE, and a pick connects it.
#[test]
fn reattempt_when_going_from_transient_failure_to_idle() {
    let a = addr(0);
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    let _ = cc.update(&mut *lb, ClientConnState::new(Vec::new(), small()));
    assert_eq!(cc.state(), Some(TransientFailure));
    assert!(matches!(pick_hash(&mut cc, 1), Picked::Fail(_)));
    update(&mut cc, &mut *lb, vec![ep(&a)], small());
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(pick_hash(&mut cc, 1), Picked::Queue);
    cc.run_work(&mut *lb);
    let sc = *cc.connects().last().expect("the pick connects");
    cc.set_state(&mut *lb, sc, Connecting);
    cc.set_state(&mut *lb, sc, Ready);
    assert_eq!(cc.state(), Some(Ready));
}

/// TestRingHash_EndpointHashKey: an endpoint's hash key (A76) places it.
#[test]
fn endpoint_hash_key_places_the_endpoint() {
    let l: Vec<String> = (0..4).map(addr).collect();
    let keys = ["ep-a", "ep-b", "ep-c", "ep-d"];
    let mut cc = TestClientConn::new();
    let mut lb = builder().build();
    let eps: Vec<Endpoint> = l
        .iter()
        .zip(keys)
        .map(|(a, k)| ep(a).with_hash_key(k))
        .collect();
    update(&mut cc, &mut *lb, eps, None);
    for (a, k) in l.iter().zip(keys) {
        connect_via_pick(&mut cc, &mut *lb, k, a, Ready);
    }
    let by_key: HashMap<String, String> = l
        .iter()
        .zip(keys)
        .map(|(a, k)| (k.to_string(), a.clone()))
        .collect();
    let model: Vec<(&str, u32)> = keys.iter().map(|k| (*k, 1)).collect();
    assert_ring_matches(
        &mut cc,
        &model_ring(&model, 1024, 4096),
        &by_key,
        "hash keys",
    );
}

// ---------------------------------------------------------------------------
// Real channels (ringhash_e2e_test.go rows that need connections)
// ---------------------------------------------------------------------------

mod e2e {
    use super::*;
    use switchyard_testserver::{Listen, ServerOptions, TestServer};

    fn start(addr: &str) -> TestServer {
        TestServer::start(Listen::Tcp(addr.parse().unwrap()), ServerOptions::default()).unwrap()
    }

    fn free_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    fn fast_opts() -> ChannelOptions {
        let mut o = ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            ..Default::default()
        };
        o.backoff.initial = Duration::from_millis(50);
        o.backoff.max = Duration::from_millis(200);
        o
    }

    const HEADER_RING: &str = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"requestHashHeader":"address_hash"}}]}"#;

    fn call(ch: &Channel, hash_value: &str, wfr: bool, secs: u64) -> Result<u16, Status> {
        let md = vec![("address_hash".to_string(), hash_value.to_string())];
        let opts = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(secs)),
            wait_for_ready: Some(wfr),
            metadata: &md,
            ..Default::default()
        };
        let resp = ch.reader().unary("/echo.Echo/Unary", b"ping", &opts)?;
        let text = String::from_utf8(resp.message).unwrap();
        Ok(text.strip_prefix("ping|port=").unwrap().parse().unwrap())
    }

    fn wait_state(ch: &Channel, state: ConnectivityState, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while ch.state() != state {
            assert!(
                Instant::now() < deadline,
                "never {state}, is {}",
                ch.state()
            );
            ch.wait_for_state_change(
                ch.state(),
                Some(Instant::now() + Duration::from_millis(100)),
            );
        }
    }

    /// TestRingHash_ReattemptWhenAllEndpointsUnreachable: the only backend
    /// down, a fail-fast RPC fails UNAVAILABLE, the channel goes
    /// TRANSIENT_FAILURE; the backend back, the channel goes READY with
    /// no RPC.
    #[test]
    fn reattempt_when_all_endpoints_unreachable() {
        let rt = Runtime::new().unwrap();
        let a = free_addr();
        let ch = Channel::new(&rt, &format!("ipv4:{a}"), Some(HEADER_RING), fast_opts()).unwrap();
        let err = call(&ch, &format!("{a}_0"), false, 5).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        wait_state(&ch, TransientFailure, 10);
        let _server = start(&a);
        wait_state(&ch, Ready, 10);
    }

    /// TestRingHash_TransientFailureCheckNextOne: the hash names the
    /// unreachable endpoint; the RPC goes on to the one that is up.
    #[test]
    fn transient_failure_check_next_one() {
        let rt = Runtime::new().unwrap();
        let dead = free_addr();
        let live = start("127.0.0.1:0");
        let live_addr = live.addr().to_string();
        let target = format!("ipv4:{dead},{live_addr}");
        let ch = Channel::new(&rt, &target, Some(HEADER_RING), fast_opts()).unwrap();
        let port = call(&ch, &format!("{dead}_0"), false, 10).expect("served by the live one");
        assert_eq!(port, live.addr().port());
    }

    /// TestRingHash_TransientFailureSkipToAvailableReady: all down (the
    /// RPC fails), then backend 1 up: READY with no pick; then backend 1
    /// down and 2 up: READY again with no pick, and RPCs hashed to 1 go
    /// to 2.
    #[test]
    fn transient_failure_skip_to_available_ready() {
        let rt = Runtime::new().unwrap();
        let (b1, b2, u1, u2) = (free_addr(), free_addr(), free_addr(), free_addr());
        let target = format!("ipv4:{b1},{b2},{u1},{u2}");
        let ch = Channel::new(&rt, &target, Some(HEADER_RING), fast_opts()).unwrap();
        assert_eq!(ch.state(), Idle);
        let err = call(&ch, &format!("{b1}_0"), false, 10).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        wait_state(&ch, TransientFailure, 10);
        let s1 = start(&b1);
        wait_state(&ch, Ready, 10);
        s1.stop();
        wait_state(&ch, TransientFailure, 10);
        assert!(call(&ch, &format!("{b1}_0"), false, 5).is_err());
        let s2 = start(&b2);
        wait_state(&ch, Ready, 10);
        let want: u16 = b2.rsplit(':').next().unwrap().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(p) = call(&ch, &format!("{b1}_0"), false, 5) {
                if p == want {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "never routed to backend 2");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(s2);
    }

    /// TestRingHash_ContinuesConnectingWithoutPicks: a pick on the
    /// unreachable endpoint, the RPC gone; the channel still connects the
    /// other endpoint and goes READY.
    #[test]
    fn continues_connecting_without_picks() {
        let rt = Runtime::new().unwrap();
        let dead = free_addr();
        let live = start("127.0.0.1:0");
        let target = format!("ipv4:{},{dead}", live.addr());
        let ch = Channel::new(&rt, &target, Some(HEADER_RING), fast_opts()).unwrap();
        // A short RPC whose hash lands on the unreachable endpoint.
        let _ = call(&ch, &format!("{dead}_0"), true, 1);
        wait_state(&ch, Ready, 10);
    }

    /// TestRingHash_IdleToReady: IDLE at first; an RPC makes it READY.
    #[test]
    fn idle_to_ready() {
        let rt = Runtime::new().unwrap();
        let s = start("127.0.0.1:0");
        let ch = Channel::new(
            &rt,
            &format!("ipv4:{}", s.addr()),
            Some(HEADER_RING),
            fast_opts(),
        )
        .unwrap();
        assert_eq!(ch.state(), Idle);
        call(&ch, "k", true, 10).unwrap();
        wait_state(&ch, Ready, 10);
    }

    /// TestRingHash_RequestHashKeyRandom-like: no header on the RPC: a
    /// random hash, yet served (connecting at most one at a time) across
    /// backends; TestRingHash_RequestHashKey: a key stays on one backend.
    #[test]
    fn request_hash_key_and_random() {
        let rt = Runtime::new().unwrap();
        let servers: Vec<TestServer> = (0..4).map(|_| start("127.0.0.1:0")).collect();
        let target = format!(
            "ipv4:{}",
            servers
                .iter()
                .map(|s| s.addr().to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let ch = Channel::new(&rt, &target, Some(HEADER_RING), fast_opts()).unwrap();
        let mut homes = HashMap::new();
        for k in 0..20 {
            let key = format!("user-{k}");
            let first = call(&ch, &key, true, 10).unwrap();
            homes.insert(key.clone(), first);
            for _ in 0..3 {
                assert_eq!(call(&ch, &key, true, 10).unwrap(), first, "{key} moved");
            }
        }
        let used: HashSet<u16> = homes.values().copied().collect();
        assert!(used.len() >= 2, "{homes:?}");
        // No header: served.
        let opts = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            wait_for_ready: Some(true),
            ..Default::default()
        };
        for _ in 0..10 {
            ch.reader()
                .unary("/echo.Echo/Unary", b"ping", &opts)
                .unwrap();
        }
    }

    const PLAIN_RING: &str = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{}}]}"#;

    /// The same, wait-for-ready: gRPC-Go keeps waiting (lastPickErr,
    /// continue) until the deadline; C-core queues a failed pick of a
    /// wait-for-ready call too.
    #[test]
    fn no_hash_wait_for_ready_rpc_waits_for_its_deadline() {
        let rt = Runtime::new().unwrap();
        let s = start("127.0.0.1:0");
        let ch = Channel::new(
            &rt,
            &format!("ipv4:{}", s.addr()),
            Some(PLAIN_RING),
            fast_opts(),
        )
        .unwrap();
        let opts = CallOptions {
            deadline: Some(Instant::now() + Duration::from_millis(500)),
            wait_for_ready: Some(true),
            ..Default::default()
        };
        let started = Instant::now();
        let err = ch
            .reader()
            .unary("/echo.Echo/Unary", b"ping", &opts)
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        assert!(started.elapsed() >= Duration::from_millis(400));
    }

    /// Re-resolution when an endpoint's connection attempt fails (gRPC-Go's
    /// addrConn asks for it on every failed attempt, clientconn.go
    /// resetTransportAndUnlock; A61's pick_first on TF).
    #[test]
    fn a_failing_endpoint_asks_for_re_resolution() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let rt = Runtime::new().unwrap();
        let mut opts = fast_opts();
        opts.on_resolve_now = Some(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let ch = Channel::new(&rt, "", Some(HEADER_RING), opts).unwrap();
        let dead = free_addr();
        ch.update_addresses(vec![Address::new(dead.clone())])
            .unwrap();
        let _ = call(&ch, &format!("{dead}_0"), false, 5);
        let deadline = Instant::now() + Duration::from_secs(5);
        while asked.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "no re-resolution after a failed endpoint"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `Channel::connect` on ring_hash: gRPC-Go's `Connect` exits idle mode
    /// and calls the policy's `ExitIdle`, a no-op for ring_hash: the channel
    /// reports the policy's IDLE and nothing connects.
    #[test]
    fn connect_leaves_ring_hash_idle() {
        let rt = Runtime::new().unwrap();
        let s = start("127.0.0.1:0");
        let ch = Channel::new(
            &rt,
            &format!("ipv4:{}", s.addr()),
            Some(HEADER_RING),
            fast_opts(),
        )
        .unwrap();
        ch.connect().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ch.state(), Idle);
        assert_eq!(s.requests(), 0);
    }

    /// A61: the endpoints' pick_first children use health checking: an
    /// endpoint whose health check says NOT_SERVING is TRANSIENT_FAILURE
    /// and picks hashed to it go on to the next endpoint.
    #[test]
    fn unhealthy_endpoint_is_skipped() {
        use switchyard::transport::health_proto::NOT_SERVING;
        let rt = Runtime::new().unwrap();
        let sick = start("127.0.0.1:0");
        let well = start("127.0.0.1:0");
        sick.set_serving("", NOT_SERVING);
        let cfg = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"requestHashHeader":"address_hash"}}],"healthCheckConfig":{"serviceName":""}}"#;
        let ch = Channel::new(
            &rt,
            &format!("ipv4:{},{}", sick.addr(), well.addr()),
            Some(cfg),
            fast_opts(),
        )
        .unwrap();
        for _ in 0..5 {
            let port = call(&ch, &format!("{}_0", sick.addr()), true, 10).unwrap();
            assert_eq!(port, well.addr().port());
        }
    }
}
