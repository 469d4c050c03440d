//! gRPC-Go's least_request tests (`balancer/leastrequest/
//! leastrequest_test.go`) and round_robin tests (`test/roundrobin_test.go`,
//! endpointsharding as round_robin uses it), case by case, over switchyard's
//! policies driven through the public `TestClientConn` (gRPC-Go's
//! `testutils.BalancerClientConn`): one reader (the TestClientConn's own
//! pick state), so exact rotation order is checkable.
//!
//! Where gRPC-Go injects `randuint32` to make least_request's draws
//! deterministic, switchyard has no such hook: the ports use
//! `choiceCount` 10 (a draw set misses an endpoint with probability
//! (1 - 1/n)^10) over the TestClientConn's fixed seed, so runs repeat.

use std::collections::HashMap;
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::ConnectivityState::{Connecting, Idle, Ready, TransientFailure};
use switchyard::*;

fn lr_config(choice_count: u32) -> LbConfig {
    registry::get("least_request_experimental")
        .unwrap()
        .parse_config(&serde_json::json!({ "choiceCount": choice_count }))
        .unwrap()
        .unwrap()
}

fn eps(list: &[&[&str]]) -> Vec<Endpoint> {
    list.iter()
        .map(|e| Endpoint::new(e.iter().map(|a| Address::new(*a)).collect()))
        .collect()
}

fn id(cc: &TestClientConn, addr: &str) -> SubConnId {
    cc.subconn_for(addr)
        .unwrap_or_else(|| panic!("no subchannel for {addr}"))
        .id()
}

fn addr_of(cc: &TestClientConn, sc: SubConnId) -> String {
    cc.subconn(sc).unwrap().addr().to_string()
}

/// A pick that completes, held in flight (its done hooks not called).
fn held(cc: &mut TestClientConn) -> String {
    match cc.pick() {
        Picked::Complete { subconn, .. } => addr_of(cc, subconn),
        other => panic!("{other:?}"),
    }
}

/// A pick that completes and is done at once (a unary RPC).
fn unary(cc: &mut TestClientConn) -> String {
    match cc.pick_done(&DoneInfo::default()) {
        Picked::Complete { subconn, .. } => addr_of(cc, subconn),
        other => panic!("{other:?}"),
    }
}

const A: &str = "127.0.0.1:4001";
const B: &str = "127.0.0.1:4002";
const C: &str = "127.0.0.1:4003";
const D: &str = "127.0.0.1:4004";
const E: &str = "127.0.0.1:4005";

// ---------------------------------------------------------------------------
// least_request
// ---------------------------------------------------------------------------

/// gRPC-Go `TestLeastRequestE2E` (without the injected draws): streams held
/// open on three READY endpoints land on the least loaded each time, so
/// nine held streams sit three on each.
#[test]
fn lr_e2e_held_streams_spread_by_in_flight_count() {
    let mut cc = TestClientConn::new();
    let mut lr = registry::get("least_request_experimental").unwrap().build();
    cc.update(
        &mut *lr,
        ClientConnState::new(eps(&[&[A], &[B], &[C]]), Some(lr_config(10))),
    )
    .unwrap();
    for a in [A, B, C] {
        let sc = id(&cc, a);
        cc.set_state(&mut *lr, sc, Ready);
    }
    // Unary RPCs first (gRPC-Go's checkRoundRobinRPCs): they leave nothing
    // in flight.
    for _ in 0..30 {
        unary(&mut cc);
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..9 {
        *seen.entry(held(&mut cc)).or_default() += 1;
    }
    assert_eq!(
        (seen.get(A), seen.get(B), seen.get(C)),
        (Some(&3), Some(&3), Some(&3)),
        "{seen:?}"
    );
}

/// gRPC-Go `TestLeastRequestPersistsCounts`: 50 streams held on two
/// endpoints; a resolver update adds a third (and choiceCount 3 → here 10):
/// the counts survive the new picker, so the next 25 streams go to the new
/// endpoint, and after that the three share evenly.
#[test]
fn lr_counts_persist_across_picker_and_address_updates() {
    let mut cc = TestClientConn::new();
    let mut lr = registry::get("least_request_experimental").unwrap().build();
    cc.update(
        &mut *lr,
        ClientConnState::new(eps(&[&[A], &[B]]), Some(lr_config(2))),
    )
    .unwrap();
    for a in [A, B] {
        let sc = id(&cc, a);
        cc.set_state(&mut *lr, sc, Ready);
    }
    let mut first: HashMap<String, usize> = HashMap::new();
    for _ in 0..50 {
        *first.entry(held(&mut cc)).or_default() += 1;
    }
    assert!(first[A].abs_diff(first[B]) <= 2, "{first:?}");
    cc.update(
        &mut *lr,
        ClientConnState::new(eps(&[&[A], &[B], &[C]]), Some(lr_config(10))),
    )
    .unwrap();
    let c = id(&cc, C);
    cc.set_state(&mut *lr, c, Ready);
    let mut to_c = 0;
    for _ in 0..25 {
        if held(&mut cc) == C {
            to_c += 1;
        }
    }
    assert!(
        to_c >= 22,
        "{to_c} of 25 held streams went to the new endpoint"
    );
}

/// gRPC-Go `TestLeastRequestEndpoints_MultipleAddresses`: endpoints of two
/// addresses each; the first address's backend stops, the endpoint's
/// pick_first moves to its second; held streams and a third endpoint; then
/// two endpoints' active backends stop (their streams fail: done), and new
/// RPCs avoid the endpoint that still has streams in flight.
#[test]
fn lr_endpoints_with_multiple_addresses() {
    const A0: &str = "127.0.0.1:4100";
    const A1: &str = "127.0.0.1:4101";
    const B0: &str = "127.0.0.1:4102";
    const B1: &str = "127.0.0.1:4103";
    const C0: &str = "127.0.0.1:4104";
    const C1: &str = "127.0.0.1:4105";
    let mut cc = TestClientConn::new();
    let mut lr = registry::get("least_request_experimental").unwrap().build();
    cc.update(
        &mut *lr,
        ClientConnState::new(eps(&[&[A0, A1], &[B0, B1]]), Some(lr_config(2))),
    )
    .unwrap();
    for a in [A0, B0] {
        let sc = id(&cc, a);
        cc.set_state(&mut *lr, sc, Ready);
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        *seen.entry(unary(&mut cc)).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.contains_key(A0) && seen.contains_key(B0), "{seen:?}");

    // backends[0] stops: A0's connection is lost; pick_first reconnects
    // from A0, which fails, then A1.
    let a0 = id(&cc, A0);
    cc.set_state(&mut *lr, a0, Idle);
    cc.run_work(&mut *lr);
    cc.set_state(&mut *lr, a0, Connecting);
    cc.set_state(&mut *lr, a0, TransientFailure);
    cc.run_work(&mut *lr);
    let a1 = id(&cc, A1);
    assert!(
        cc.connects().contains(&a1),
        "A1 never tried: {:?}",
        cc.connects()
    );
    cc.set_state(&mut *lr, a1, Connecting);
    cc.set_state(&mut *lr, a1, Ready);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        *seen.entry(unary(&mut cc)).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.contains_key(A1) && seen.contains_key(B0), "{seen:?}");

    // 50 streams held on the two endpoints, through one picker (kept
    // with their hooks so they can fail later).
    let picker = cc.picker().unwrap().clone();
    let mut local = PickLocal::new(5);
    let info = PickInfo::default();
    let mut streams = Vec::new();
    for _ in 0..50 {
        match picker.pick(&info, &mut local) {
            PickResult::Complete { subconn, done } => {
                streams.push((subconn.addr().to_string(), subconn, done))
            }
            _ => panic!("READY picker must complete"),
        }
    }

    cc.update(
        &mut *lr,
        ClientConnState::new(eps(&[&[A0, A1], &[B0, B1], &[C0, C1]]), Some(lr_config(10))),
    )
    .unwrap();
    let c0 = id(&cc, C0);
    cc.set_state(&mut *lr, c0, Ready);
    let mut to_c = 0;
    for _ in 0..25 {
        if held(&mut cc) == C0 {
            to_c += 1;
        }
    }
    assert!(
        to_c >= 22,
        "{to_c} of 25 held streams went to the new endpoint"
    );

    // backends[2] (B0) and backends[4] (C0) stop: the streams on them fail
    // (done, whatever the status); the endpoints move to B1 and C1.
    let failed = DoneInfo::new(Code::Unavailable, "connection lost", Default::default());
    for (addr, subconn, done) in streams.iter() {
        if addr == B0 {
            done.report(subconn, &failed);
        }
    }
    // (The 25 held through cc.pick() on C0 cannot be reported, so C's
    // endpoint keeps ~25 in flight; only B's endpoint moves, B0 -> B1.)
    let s = id(&cc, B0);
    cc.set_state(&mut *lr, s, Idle);
    cc.run_work(&mut *lr);
    cc.set_state(&mut *lr, s, Connecting);
    cc.set_state(&mut *lr, s, TransientFailure);
    cc.run_work(&mut *lr);
    let s1 = id(&cc, B1);
    cc.set_state(&mut *lr, s1, Connecting);
    cc.set_state(&mut *lr, s1, Ready);
    // A's endpoint still has ~25 streams in flight, C's ~25: RPCs go to B1.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *seen.entry(unary(&mut cc)).or_default() += 1;
    }
    assert!(seen.get(B1).copied().unwrap_or(0) >= 28, "{seen:?}");
    drop(streams);
}

/// gRPC-Go `TestLeastRequestEndpoints_ResolverError`: the one endpoint's
/// connection fails (channel TRANSIENT_FAILURE), then the resolver reports
/// an error: RPCs fail with the resolver's error (pick_first's
/// `resolverErrorLocked`: "name resolver error: ...").
#[test]
fn lr_and_rr_resolver_error_surfaces_when_endpoints_fail() {
    for policy in ["least_request_experimental", "round_robin"] {
        let mut cc = TestClientConn::new();
        let b = registry::get(policy).unwrap();
        let config = b.parse_config(&serde_json::json!({})).unwrap();
        let mut lb = b.build();
        cc.update(&mut *lb, ClientConnState::new(eps(&[&[A]]), config))
            .unwrap();
        let a = id(&cc, A);
        cc.set_state(&mut *lb, a, Connecting);
        cc.set_state(&mut *lb, a, TransientFailure);
        assert_eq!(cc.state(), Some(TransientFailure), "{policy}");
        cc.resolver_error(&mut *lb, "simulated resolver error");
        for _ in 0..3 {
            match cc.pick() {
                Picked::Fail(s) => {
                    assert_eq!(s.code(), Code::Unavailable, "{policy}");
                    assert!(
                        s.message().contains("simulated resolver error"),
                        "{policy}: {s}"
                    );
                }
                other => panic!("{policy}: {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// round_robin
// ---------------------------------------------------------------------------

fn rr_ready(list: &[&str]) -> (TestClientConn, Box<dyn Balancer>) {
    let mut cc = TestClientConn::new();
    let mut rr = registry::get("round_robin").unwrap().build();
    cc.update_addresses(&mut *rr, list.iter().copied()).unwrap();
    for a in list {
        let sc = id(&cc, a);
        cc.set_state(&mut *rr, sc, Ready);
    }
    (cc, rr)
}

/// gRPC-Go's `rrutil.CheckRoundRobinRPCs`: three rounds of len(want) RPCs;
/// the first holds each wanted address once, all three are the same order.
fn check_round_robin(cc: &mut TestClientConn, want: &[&str]) {
    let rounds: Vec<Vec<String>> = (0..3)
        .map(|_| (0..want.len()).map(|_| unary(cc)).collect())
        .collect();
    let mut first = rounds[0].clone();
    first.sort();
    let mut w: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    w.sort();
    assert_eq!(first, w, "{rounds:?}");
    assert!(
        rounds[0] == rounds[1] && rounds[1] == rounds[2],
        "{rounds:?}"
    );
}

/// gRPC-Go `TestRoundRobin_Basic`.
#[test]
fn rr_basic() {
    let (mut cc, _rr) = rr_ready(&[A, B, C, D, E]);
    assert_eq!(cc.state(), Some(Ready));
    check_round_robin(&mut cc, &[A, B, C, D, E]);
}

/// gRPC-Go `TestRoundRobin_AddressesRemoved`: "no children to pick from".
#[test]
fn rr_addresses_removed() {
    let (mut cc, mut rr) = rr_ready(&[A, B, C]);
    assert!(cc
        .update(&mut *rr, ClientConnState::new(vec![], None))
        .is_err());
    assert_eq!(cc.state(), Some(TransientFailure));
    match cc.pick() {
        Picked::Fail(s) => {
            assert_eq!(s.code(), Code::Unavailable);
            assert!(s.message().contains("no children to pick from"), "{s}");
        }
        other => panic!("{other:?}"),
    }
}

/// gRPC-Go `TestRoundRobin_NewAddressWhileBlocking`.
#[test]
fn rr_new_address_while_blocking() {
    let (mut cc, mut rr) = rr_ready(&[A, B, C]);
    assert!(cc.update_addresses(&mut *rr, []).is_err());
    assert_eq!(cc.state(), Some(TransientFailure));
    cc.update_addresses(&mut *rr, [A]).unwrap();
    let a = id(&cc, A);
    assert_eq!(cc.state(), Some(Connecting));
    assert!(cc.connects().contains(&a), "the new child connects");
    cc.set_state(&mut *rr, a, Ready);
    assert_eq!(cc.state(), Some(Ready));
    check_round_robin(&mut cc, &[A]);
}

/// gRPC-Go `TestRoundRobin_OneServerDown`.
#[test]
fn rr_one_server_down() {
    let (mut cc, mut rr) = rr_ready(&[A, B, C, D, E]);
    let e = id(&cc, E);
    cc.set_state(&mut *rr, e, Idle);
    cc.run_work(&mut *rr);
    cc.set_state(&mut *rr, e, Connecting);
    check_round_robin(&mut cc, &[A, B, C, D]);
    cc.set_state(&mut *rr, e, TransientFailure);
    assert_eq!(cc.state(), Some(Ready));
    check_round_robin(&mut cc, &[A, B, C, D]);
}

/// gRPC-Go `TestRoundRobin_AllServersDown`: TRANSIENT_FAILURE, fail-fast
/// RPCs fail UNAVAILABLE.
#[test]
fn rr_all_servers_down() {
    let list = [A, B, C, D, E];
    let (mut cc, mut rr) = rr_ready(&list);
    for a in list {
        let sc = id(&cc, a);
        cc.set_state(&mut *rr, sc, Idle);
        cc.run_work(&mut *rr);
        cc.set_state(&mut *rr, sc, Connecting);
    }
    assert_eq!(cc.state(), Some(Connecting));
    for a in list {
        let sc = id(&cc, a);
        cc.set_state(&mut *rr, sc, TransientFailure);
    }
    assert_eq!(cc.state(), Some(TransientFailure));
    match cc.pick() {
        Picked::Fail(s) => assert_eq!(s.code(), Code::Unavailable),
        other => panic!("{other:?}"),
    }
}

/// gRPC-Go `TestRoundRobin_UpdateAddressAttributes`: the same address with
/// new attributes (here its tag): RPCs come to carry the new attributes.
#[test]
fn rr_update_address_attributes() {
    let mut cc = TestClientConn::new();
    let mut rr = registry::get("round_robin").unwrap().build();
    cc.update(
        &mut *rr,
        ClientConnState::new(vec![Endpoint::from(Address::new(A))], None),
    )
    .unwrap();
    let a = id(&cc, A);
    cc.set_state(&mut *rr, a, Ready);
    let Picked::Complete { subconn, .. } = cc.pick() else {
        panic!()
    };
    assert_eq!(cc.subconn(subconn).unwrap().tag(), 0);
    cc.update(
        &mut *rr,
        ClientConnState::new(vec![Endpoint::from(Address::new(A).with_tag(7))], None),
    )
    .unwrap();
    let now = id(&cc, A);
    if now != a {
        cc.set_state(&mut *rr, now, Connecting);
        cc.set_state(&mut *rr, now, Ready);
    }
    let Picked::Complete { subconn, .. } = cc.pick() else {
        panic!("{:?}", cc.state())
    };
    assert_eq!(cc.subconn(subconn).unwrap().tag(), 7);
}

/// Endpoints of several addresses under round_robin (endpointsharding over
/// pick_first): the endpoint's first address fails, its second serves;
/// the rotation has one entry per endpoint.
#[test]
fn rr_endpoints_with_multiple_addresses() {
    const A0: &str = "127.0.0.1:4200";
    const A1: &str = "127.0.0.1:4201";
    const B0: &str = "127.0.0.1:4202";
    const B1: &str = "127.0.0.1:4203";
    let mut cc = TestClientConn::new();
    let mut rr = registry::get("round_robin").unwrap().build();
    cc.update(
        &mut *rr,
        ClientConnState::new(eps(&[&[A0, A1], &[B0, B1]]), None),
    )
    .unwrap();
    // One subchannel per endpoint connecting at first (pick_first).
    let a0 = id(&cc, A0);
    let b0 = id(&cc, B0);
    cc.set_state(&mut *rr, b0, Ready);
    cc.set_state(&mut *rr, a0, Connecting);
    cc.set_state(&mut *rr, a0, TransientFailure);
    let a1 = id(&cc, A1);
    cc.set_state(&mut *rr, a1, Connecting);
    cc.set_state(&mut *rr, a1, Ready);
    check_round_robin(&mut cc, &[A1, B0]);
    // The same endpoints with their addresses reordered: same children, no
    // churn, same rotation.
    let before = cc.shutdowns().len();
    cc.update(
        &mut *rr,
        ClientConnState::new(eps(&[&[B1, B0], &[A1, A0]]), None),
    )
    .unwrap();
    assert_eq!(cc.shutdowns().len(), before, "{:?}", cc.shutdowns());
    check_round_robin(&mut cc, &[A1, B0]);
}

/// A resolver error while some endpoints are READY changes nothing that
/// picks see (pick_first children not in TRANSIENT_FAILURE ignore it:
/// `resolverErrorLocked`; endpointsharding republishes the same READY set).
#[test]
fn rr_and_lr_resolver_error_while_ready_keeps_serving() {
    for policy in ["least_request_experimental", "round_robin"] {
        let mut cc = TestClientConn::new();
        let b = registry::get(policy).unwrap();
        let config = b.parse_config(&serde_json::json!({})).unwrap();
        let mut lb = b.build();
        cc.update(&mut *lb, ClientConnState::new(eps(&[&[A], &[B]]), config))
            .unwrap();
        let (a, bb) = (id(&cc, A), id(&cc, B));
        cc.set_state(&mut *lb, a, Ready);
        cc.set_state(&mut *lb, bb, Connecting);
        cc.set_state(&mut *lb, bb, TransientFailure);
        cc.resolver_error(&mut *lb, "simulated resolver error");
        assert_eq!(cc.state(), Some(Ready), "{policy}");
        for _ in 0..4 {
            assert_eq!(unary(&mut cc), A, "{policy}");
        }
        // B comes back: both serve.
        cc.set_state(&mut *lb, bb, Ready);
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..20 {
            *seen.entry(unary(&mut cc)).or_default() += 1;
        }
        assert_eq!(seen.len(), 2, "{policy}: {seen:?}");
    }
}

/// Two endpoints sharing an address ([A] and [A, B]: different address
/// sets, so two children, as gRPC-Go's EndpointMap keys them): each child
/// has its own subchannel to A, and the rotation has both entries.
#[test]
fn rr_overlapping_endpoints_are_two_children() {
    let mut cc = TestClientConn::new();
    let mut rr = registry::get("round_robin").unwrap().build();
    cc.update(
        &mut *rr,
        ClientConnState::new(eps(&[&[A], &[A, B], &[C]]), None),
    )
    .unwrap();
    let on_a: Vec<SubConnId> = cc
        .subconns()
        .iter()
        .filter(|s| s.addr() == A)
        .map(|s| s.id())
        .collect();
    assert_eq!(on_a.len(), 2, "{:?}", cc.subconns());
    for s in on_a.iter().copied() {
        cc.set_state(&mut *rr, s, Ready);
    }
    let c = id(&cc, C);
    cc.set_state(&mut *rr, c, Ready);
    let picks = cc.picks(30);
    for s in on_a.iter().chain([&c]) {
        assert_eq!(
            picks.iter().filter(|p| **p == Some(*s)).count(),
            10,
            "{picks:?}"
        );
    }
}
