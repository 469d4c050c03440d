//! pick_first (gRFC A61/A62/A113) scenarios from gRPC-Go's
//! balancer/pickfirst/pickfirst_ext_test.go (grpc-go @ 4793ad04) and
//! grpc-java's PickFirstLeafLoadBalancerTest.java that
//! tests/pick_first_go_cases.rs, tests/pick_first_rr_java_cases.rs and
//! tests/core_lb_policy_cases.rs do not cover: the Happy Eyeballs timer
//! (TriggerConnectionDelay, Ignore_Inflight_Cancellations), health-driven
//! states (HealthUpdates, healthCheckFlow), weighted / endpoint-preserving
//! shuffling (ShuffleAddressList_WeightedShuffling, NoEndpoints,
//! pickAfterResolved_shuffle*), address attribute updates and the
//! StopConnectedServer_* restarts, at policy level over `TestClientConn`.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::balancer::{Balancer, ClientConnState, SubConnState};
use switchyard::ConnectivityState::{self, *};
use switchyard::{registry, Address, Code, Endpoint, LbConfig, SubConnId};

const HE: Duration = Duration::from_millis(250);

fn pf() -> Box<dyn Balancer> {
    registry::get("pick_first").unwrap().build()
}

fn cfg(shuffle: bool) -> Option<LbConfig> {
    registry::get("pick_first")
        .unwrap()
        .parse_config(&json!({ "shuffleAddressList": shuffle }))
        .unwrap()
}

fn eps(addrs: &[&str]) -> Vec<Endpoint> {
    addrs
        .iter()
        .map(|a| Endpoint::from(Address::new(*a)))
        .collect()
}

fn update(cc: &mut TestClientConn, lb: &mut dyn Balancer, addrs: &[&str]) {
    cc.update(lb, ClientConnState::new(eps(addrs), None))
        .unwrap();
}

fn sc(cc: &TestClientConn, addr: &str) -> SubConnId {
    cc.subconns()
        .iter()
        .rev()
        .find(|s| s.addr() == addr)
        .unwrap_or_else(|| panic!("no subchannel for {addr}"))
        .id()
}

fn addr_of(cc: &TestClientConn, id: SubConnId) -> String {
    cc.subconn(id).unwrap().addr().to_string()
}

fn set(cc: &mut TestClientConn, lb: &mut dyn Balancer, id: SubConnId, s: ConnectivityState) {
    cc.set_state(lb, id, s);
}

fn fail(cc: &mut TestClientConn, lb: &mut dyn Balancer, id: SubConnId, msg: &str) {
    cc.set_subconn_state(
        lb,
        id,
        SubConnState {
            state: TransientFailure,
            error: Some(Arc::from(msg)),
        },
    );
}

fn fail_message(cc: &mut TestClientConn) -> String {
    match cc.pick() {
        Picked::Fail(s) => {
            assert_eq!(s.code(), Code::Unavailable);
            s.message().to_string()
        }
        p => panic!("expected a failing picker, got {p:?}"),
    }
}

fn picks(cc: &mut TestClientConn, id: SubConnId) {
    match cc.pick() {
        Picked::Complete { subconn, .. } => assert_eq!(subconn, id),
        p => panic!("expected a pick of {id:?}, got {p:?}"),
    }
}

// ---------------------------------------------------------------------------
// Happy Eyeballs timer
// ---------------------------------------------------------------------------

/// TestPickFirstLeaf_HappyEyeballs_TriggerConnectionDelay and
/// _Ignore_Inflight_Cancellations (pickfirst_ext_test.go:2022, 2168), with
/// grpc-java's happy_eyeballs_trigger_connection_delay: only the first
/// address is contacted until the 250 ms delay passes (not at 249 ms);
/// then the second; the second wins: READY, the first (still connecting)
/// shut down, and its late result changes nothing.
#[test]
fn happy_eyeballs_second_attempt_only_after_the_delay_and_wins() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1", "10.0.0.2:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    assert_eq!(cc.connects(), [a]);
    set(&mut cc, &mut *lb, a, Connecting);
    assert_eq!(cc.state(), Some(Connecting));
    cc.advance(&mut *lb, Duration::from_millis(249));
    assert_eq!(cc.connects(), [a], "second address contacted before 250 ms");
    assert_eq!(cc.subconns().len(), 1);
    cc.advance(&mut *lb, Duration::from_millis(1));
    let b = sc(&cc, "10.0.0.2:1");
    assert_eq!(cc.connects(), [a, b]);
    set(&mut cc, &mut *lb, b, Connecting);
    set(&mut cc, &mut *lb, b, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks(&mut cc, b);
    assert!(
        cc.shutdowns().contains(&a),
        "the losing attempt is shut down"
    );
    assert!(
        cc.timers().is_empty(),
        "no attempt timer left: {:?}",
        cc.timers()
    );
    let n = cc.states().len();
    // The cancelled attempt finishing late (either way) is ignored.
    set(&mut cc, &mut *lb, a, Ready);
    fail(&mut cc, &mut *lb, a, "late");
    assert_eq!(cc.states().len(), n);
    picks(&mut cc, b);
}

/// TestPickFirstLeaf_HappyEyeballs_TriggerConnectionDelay's three-address
/// form (A61: "if the connection attempt fails before the timer fires,
/// start the next one immediately"): 1 CONNECTING, 250 ms: 2 asked; 2
/// fails at once: 3 asked without waiting for another 250 ms; the timer
/// after the last address does not exist.
#[test]
fn happy_eyeballs_failure_before_the_timer_moves_on_at_once() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(
        &mut cc,
        &mut *lb,
        &["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"],
    );
    let a = sc(&cc, "10.0.0.1:1");
    set(&mut cc, &mut *lb, a, Connecting);
    cc.advance(&mut *lb, HE);
    let b = sc(&cc, "10.0.0.2:1");
    set(&mut cc, &mut *lb, b, Connecting);
    fail(&mut cc, &mut *lb, b, "b down");
    let c = sc(&cc, "10.0.0.3:1");
    assert_eq!(cc.connects(), [a, b, c]);
    assert_eq!(cc.state(), Some(Connecting));
    assert!(cc.timers().is_empty(), "no timer after the last address");
    set(&mut cc, &mut *lb, c, Connecting);
    set(&mut cc, &mut *lb, a, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks(&mut cc, a);
    assert!(cc.shutdowns().contains(&b) && cc.shutdowns().contains(&c));
}

// ---------------------------------------------------------------------------
// Health-driven states (gRFC A17 through pick_first's health listener)
// ---------------------------------------------------------------------------

/// TestPickFirstLeaf_HealthUpdates (pickfirst_ext_test.go:2470): the
/// connection up with its health still unknown: CONNECTING (no READY);
/// health TF: TRANSIENT_FAILURE with the health error; health CONNECTING:
/// CONNECTING; health READY: READY and picks; health TF again: TF.
#[test]
fn health_updates_drive_the_reported_state() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    set(&mut cc, &mut *lb, a, Connecting);
    cc.set_connected(&mut *lb, a);
    assert_eq!(cc.state(), Some(Connecting));
    assert!(!cc.states().contains(&Ready));
    assert_eq!(cc.pick(), Picked::Queue);
    cc.set_health_failed(&mut *lb, a);
    assert_eq!(cc.state(), Some(TransientFailure));
    assert!(fail_message(&mut cc).contains("health check failed"));
    set(&mut cc, &mut *lb, a, Connecting);
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(cc.pick(), Picked::Queue);
    set(&mut cc, &mut *lb, a, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks(&mut cc, a);
    cc.set_health_failed(&mut *lb, a);
    assert_eq!(cc.state(), Some(TransientFailure));
    assert!(cc.shutdowns().is_empty(), "the connection is kept");
}

/// gRPC-Go's updateSubConnState (pickfirst.go, raw READY with the health
/// listener on: "Send a CONNECTING update to take the SubConn out of
/// sticky-TF"): in sticky TRANSIENT_FAILURE, a subchannel that connects
/// with its health pending moves the policy to CONNECTING and wins (the
/// others shut down); its health READY: READY.
#[test]
fn health_pending_connection_leaves_sticky_tf() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1", "10.0.0.2:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    fail(&mut cc, &mut *lb, a, "a down");
    let b = sc(&cc, "10.0.0.2:1");
    fail(&mut cc, &mut *lb, b, "b down");
    assert_eq!(cc.state(), Some(TransientFailure));
    set(&mut cc, &mut *lb, a, Idle);
    set(&mut cc, &mut *lb, a, Connecting);
    assert_eq!(
        cc.state(),
        Some(TransientFailure),
        "sticky while connecting"
    );
    cc.set_connected(&mut *lb, a);
    assert_eq!(cc.state(), Some(Connecting));
    assert!(cc.shutdowns().contains(&b));
    set(&mut cc, &mut *lb, a, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks(&mut cc, a);
}

/// A health-failed selected connection (TF, connection kept) and a new
/// list that still has its address: kept, nothing created, no state
/// update (gRPC-Go: the raw state is READY, `seekTo` keeps it).
#[test]
fn health_failed_selected_kept_across_an_update_that_lists_it() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1", "10.0.0.2:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    set(&mut cc, &mut *lb, a, Ready);
    cc.set_health_failed(&mut *lb, a);
    assert_eq!(cc.state(), Some(TransientFailure));
    let (n_states, n_subs) = (cc.states().len(), cc.subconns().len());
    update(&mut cc, &mut *lb, &["10.0.0.3:1", "10.0.0.1:1"]);
    assert_eq!(cc.subconns().len(), n_subs, "no new subchannel");
    assert_eq!(cc.states().len(), n_states, "no state update");
    set(&mut cc, &mut *lb, a, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks(&mut cc, a);
}

/// healthCheckFlow / healthCheckWithTF_AllowsStateInconsistency, the part
/// where the implementations disagree: a selected connection whose health
/// failed (TF) then loses its transport (IDLE). grpc-java stays in
/// TRANSIENT_FAILURE and reconnects at once (refreshNameResolution +
/// requestConnection); gRPC-Go (oldState == READY: IDLE, reset the list)
/// and switchyard go IDLE with a re-resolution and connect on the next
/// pick. Pinned to gRPC-Go's behaviour.
#[test]
fn health_failed_selected_losing_its_transport_goes_idle_like_grpc_go() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1", "10.0.0.2:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    set(&mut cc, &mut *lb, a, Ready);
    cc.set_health_failed(&mut *lb, a);
    assert_eq!(cc.state(), Some(TransientFailure));
    let rr = cc.resolve_now_requests();
    set(&mut cc, &mut *lb, a, Idle);
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(cc.resolve_now_requests(), rr + 1);
    assert_eq!(cc.pick(), Picked::Queue);
    assert!(cc.run_work(&mut *lb));
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(
        cc.connects().last(),
        Some(&a),
        "restarts at the first address"
    );
}

// ---------------------------------------------------------------------------
// Restarts after the connected server stops
// ---------------------------------------------------------------------------

/// TestPickFirstLeaf_StopConnectedServer_SecondServerRestart and
/// _SecondServerToFirst (pickfirst_ext_test.go:1674, 1743): 1 fails, 2
/// READY (1 shut down); 2 goes IDLE: IDLE; a pick starts over at the first
/// address (a new subchannel for 1); 1 READY this time: READY on 1, 2
/// shut down. Sequence READY, IDLE, CONNECTING, READY.
#[test]
fn stop_connected_second_server_restarts_at_the_first_address() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1", "10.0.0.2:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    fail(&mut cc, &mut *lb, a, "a down");
    let b = sc(&cc, "10.0.0.2:1");
    set(&mut cc, &mut *lb, b, Ready);
    assert!(cc.shutdowns().contains(&a));
    let start = cc.states().len() - 1;
    set(&mut cc, &mut *lb, b, Idle);
    assert_eq!(cc.pick(), Picked::Queue);
    assert!(cc.run_work(&mut *lb));
    let a2 = sc(&cc, "10.0.0.1:1");
    assert_ne!(a2, a);
    assert_eq!(cc.connects().last(), Some(&a2));
    set(&mut cc, &mut *lb, a2, Connecting);
    set(&mut cc, &mut *lb, a2, Ready);
    picks(&mut cc, a2);
    assert!(cc.shutdowns().contains(&b));
    assert_eq!(&cc.states()[start..], [Ready, Idle, Connecting, Ready]);
}

/// TestPickFirstLeaf_StopConnectedServer_FirstServerToSecond
/// (pickfirst_ext_test.go:1812): READY on 1; 1 goes IDLE; a pick starts
/// over at 1, which fails: 2 asked at once; 2 READY: READY on 2. The
/// sequence READY, IDLE, CONNECTING, READY (no TRANSIENT_FAILURE).
#[test]
fn stop_connected_first_server_fails_over_to_second() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1", "10.0.0.2:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    set(&mut cc, &mut *lb, a, Ready);
    let start = cc.states().len() - 1;
    set(&mut cc, &mut *lb, a, Idle);
    cc.exit_idle(&mut *lb);
    assert_eq!(cc.connects().last(), Some(&a));
    set(&mut cc, &mut *lb, a, Connecting);
    fail(&mut cc, &mut *lb, a, "a stopped");
    let b = sc(&cc, "10.0.0.2:1");
    assert_eq!(cc.connects().last(), Some(&b));
    set(&mut cc, &mut *lb, b, Connecting);
    set(&mut cc, &mut *lb, b, Ready);
    picks(&mut cc, b);
    assert_eq!(&cc.states()[start..], [Ready, Idle, Connecting, Ready]);
}

// ---------------------------------------------------------------------------
// Address attributes on updates
// ---------------------------------------------------------------------------

/// TestPickFirst_AddressUpdateWithAttributes / _WithBalancerAttributes /
/// TestPickFirstLeaf_AddressUpdateWithMetadata (pickfirst_ext_test.go:761,
/// 839, 2570): READY on 1; the same address with another weight (a
/// balancer attribute): connection kept, nothing new; the same address
/// with another tag (a connection attribute): a new subchannel, the old
/// one shut down, and a fresh pass (CONNECTING).
#[test]
fn address_attribute_updates_reconnect_only_for_connection_attributes() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    set(&mut cc, &mut *lb, a, Ready);
    let n = cc.states().len();
    cc.update(
        &mut *lb,
        ClientConnState::new(
            vec![Endpoint::new(vec![Address::new("10.0.0.1:1").with_weight(9)]).with_weight(9)],
            None,
        ),
    )
    .unwrap();
    assert_eq!(cc.subconns().len(), 1, "weight change: no new subchannel");
    assert!(cc.shutdowns().is_empty());
    assert_eq!(cc.states().len(), n);
    picks(&mut cc, a);
    cc.update(
        &mut *lb,
        ClientConnState::new(
            vec![Endpoint::new(vec![Address::new("10.0.0.1:1").with_tag(7)])],
            None,
        ),
    )
    .unwrap();
    let a2 = sc(&cc, "10.0.0.1:1");
    assert_ne!(a2, a, "tag change: a new subchannel");
    assert_eq!(cc.subconn(a2).unwrap().tag(), 7);
    assert!(cc.shutdowns().contains(&a));
    assert_eq!(cc.connects().last(), Some(&a2));
    assert_eq!(cc.state(), Some(Connecting));
    set(&mut cc, &mut *lb, a2, Ready);
    picks(&mut cc, a2);
}

// ---------------------------------------------------------------------------
// Shuffling (A62 shuffleAddressList, A113 weighted shuffling)
// ---------------------------------------------------------------------------

/// The address each of `trials` fresh policies tries first, counted per
/// index of `addrs` (grpc-java's countAddressSelections).
fn first_tried_counts(
    state: impl Fn() -> ClientConnState,
    addrs: &[&str],
    trials: usize,
) -> Vec<usize> {
    let mut cc = TestClientConn::new();
    let mut counts = vec![0; addrs.len()];
    for _ in 0..trials {
        let mut lb = pf();
        let before = cc.connects().len();
        cc.update(&mut *lb, state()).unwrap();
        let first = cc.connects()[before];
        let a = addr_of(&cc, first);
        counts[addrs.iter().position(|x| *x == a).unwrap()] += 1;
        cc.close(&mut *lb);
    }
    counts
}

fn within(got: usize, want: usize, tol: usize) -> bool {
    got.abs_diff(want) <= tol
}

/// pickAfterResolved_shuffleWeighted_weightedShuffling (grpc-java) and
/// TestPickFirst_ShuffleAddressList_WeightedShuffling (gRPC-Go), gRFC A113:
/// with shuffleAddressList, endpoint weights 12:3:1 make each endpoint
/// first with probability w / sum(w) (75%, 19%, 6%).
#[test]
fn weighted_shuffle_first_choice_follows_endpoint_weights() {
    let a = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"];
    let w = [12, 3, 1];
    let counts = first_tried_counts(
        || {
            ClientConnState::new(
                a.iter()
                    .zip(w)
                    .map(|(x, w)| Endpoint::new(vec![Address::new(*x)]).with_weight(w))
                    .collect(),
                cfg(true),
            )
        },
        &a,
        800,
    );
    assert!(
        within(counts[0], 600, 60) && within(counts[1], 150, 45) && within(counts[2], 50, 30),
        "first-choice counts over 800 trials: {counts:?}, want about [600, 150, 50]"
    );
}

/// pickAfterResolved_shuffleImplicitUniform / _shuffleExplicitUniform:
/// no weights (or equal ones): each endpoint first about a third of the
/// time.
#[test]
fn shuffle_without_weights_is_uniform() {
    let a = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"];
    for w in [0u32, 111] {
        let counts = first_tried_counts(
            || {
                ClientConnState::new(
                    a.iter()
                        .map(|x| Endpoint::new(vec![Address::new(*x)]).with_weight(w))
                        .collect(),
                    cfg(true),
                )
            },
            &a,
            600,
        );
        assert!(
            counts.iter().all(|c| within(*c, 200, 50)),
            "weight {w}: first-choice counts over 600 trials: {counts:?}"
        );
    }
}

/// pickAfterResolved_shuffleWeighted_noWeightedShuffling's other half:
/// without shuffleAddressList, weights change nothing: resolver order.
#[test]
fn weights_without_shuffle_keep_resolver_order() {
    let a = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"];
    let counts = first_tried_counts(
        || {
            ClientConnState::new(
                a.iter()
                    .zip([1u32, 3, 12])
                    .map(|(x, w)| Endpoint::new(vec![Address::new(*x)]).with_weight(w))
                    .collect(),
                cfg(false),
            )
        },
        &a,
        50,
    );
    assert_eq!(counts, [50, 0, 0]);
}

/// TestPickFirst_ShuffleAddressListNoEndpoints (pickfirst_ext_test.go:491):
/// a state with addresses and no endpoints is shuffled too.
#[test]
fn shuffle_applies_to_an_address_only_state() {
    let a = ["10.0.0.1:1", "10.0.0.2:1"];
    let counts = first_tried_counts(
        || ClientConnState {
            endpoints: Vec::new(),
            addresses: a.iter().map(|x| Address::new(*x)).collect(),
            config: cfg(true),
        },
        &a,
        200,
    );
    assert!(
        counts.iter().all(|c| within(*c, 100, 35)),
        "first-choice counts over 200 trials: {counts:?}"
    );
}

/// gRFC A61 ("shuffle the list of endpoints ... then flatten"): endpoints
/// with several addresses move as a whole: the attempt order is always
/// one endpoint's addresses, in order, then the other's; both orders
/// occur.
#[test]
fn shuffle_keeps_each_endpoints_addresses_together() {
    let mut cc = TestClientConn::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let mut lb = pf();
        let first = cc.subconns().len();
        cc.update(
            &mut *lb,
            ClientConnState::new(
                vec![
                    Endpoint::new(vec![Address::new("10.0.0.1:1"), Address::new("10.0.0.2:1")]),
                    Endpoint::new(vec![Address::new("10.0.0.3:1"), Address::new("10.0.0.4:1")]),
                ],
                cfg(true),
            ),
        )
        .unwrap();
        for _ in 0..3 {
            cc.advance(&mut *lb, HE);
        }
        let order: Vec<String> = cc.subconns()[first..]
            .iter()
            .map(|s| s.addr().to_string())
            .collect();
        assert!(
            order == ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"]
                || order == ["10.0.0.3:1", "10.0.0.4:1", "10.0.0.1:1", "10.0.0.2:1"],
            "endpoint split by the shuffle: {order:?}"
        );
        seen.insert(order);
        cc.close(&mut *lb);
    }
    assert_eq!(seen.len(), 2, "both endpoint orders occur: {seen:?}");
}

// ---------------------------------------------------------------------------
// Resolver errors and shutdown (grpc-java)
// ---------------------------------------------------------------------------

/// nameResolutionErrorWithStateChanges (grpc-java): TF from the only
/// subchannel, then a resolver error: TF with the resolver's error; a
/// second one: TF with the second error. failChannelWhenSubchannelsFail:
/// the TF picker before that carries the connection error.
#[test]
fn resolver_errors_in_tf_replace_the_picker_each_time() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1", "10.0.0.2:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    fail(&mut cc, &mut *lb, a, "conn error A");
    let b = sc(&cc, "10.0.0.2:1");
    fail(&mut cc, &mut *lb, b, "conn error B");
    assert_eq!(cc.state(), Some(TransientFailure));
    assert!(fail_message(&mut cc).contains("conn error B"));
    cc.resolver_error(&mut *lb, "nameResolutionError");
    assert_eq!(cc.state(), Some(TransientFailure));
    assert!(fail_message(&mut cc).contains("nameResolutionError"));
    cc.resolver_error(&mut *lb, "nameResolutionError2");
    assert!(fail_message(&mut cc).contains("nameResolutionError2"));
}

/// shutdown (grpc-java): with Happy Eyeballs every subchannel created is
/// shut down on close, and the timer cancelled.
#[test]
fn close_shuts_down_every_attempt_and_the_timer() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    let a = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"];
    update(&mut cc, &mut *lb, &a);
    cc.advance(&mut *lb, HE);
    cc.advance(&mut *lb, HE);
    assert_eq!(cc.subconns().len(), 3);
    assert_eq!(cc.timers().len(), 1);
    cc.close(&mut *lb);
    let mut shut: Vec<_> = cc.shutdowns().to_vec();
    shut.sort();
    let mut all: Vec<_> = cc.subconns().iter().map(|s| s.id()).collect();
    all.sort();
    assert_eq!(shut, all);
    assert!(cc.timers().is_empty(), "timer left armed after close");
}

/// A health-failed selected connection (TF) and a list without its
/// address: gRPC-Go (raw state READY: `isPrevRawConnectivityStateReady`)
/// reports CONNECTING and starts a pass over the new list; the old
/// subchannel is shut down.
#[test]
fn health_failed_selected_removed_by_update_starts_a_connecting_pass() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    set(&mut cc, &mut *lb, a, Ready);
    cc.set_health_failed(&mut *lb, a);
    assert_eq!(cc.state(), Some(TransientFailure));
    update(&mut cc, &mut *lb, &["10.0.0.2:1"]);
    let b = sc(&cc, "10.0.0.2:1");
    assert!(cc.shutdowns().contains(&a));
    assert_eq!(cc.connects().last(), Some(&b));
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(cc.pick(), Picked::Queue);
}

/// advance_index_then_request_connection (grpc-java): exit_idle before any
/// update and after the timers ran past the end does nothing (no panic, no
/// state, no subchannel, no new connect).
#[test]
fn exit_idle_before_any_update_and_past_the_end_is_harmless() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    cc.exit_idle(&mut *lb);
    assert!(cc.states().is_empty() && cc.subconns().is_empty());
    update(
        &mut cc,
        &mut *lb,
        &["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"],
    );
    for _ in 0..4 {
        cc.advance(&mut *lb, HE);
    }
    let (n, s) = (cc.connects().len(), cc.states().len());
    assert_eq!(n, 3);
    cc.exit_idle(&mut *lb);
    assert_eq!((cc.connects().len(), cc.states().len()), (n, s));
}

/// healthCheckWithTF_AllowsStateInconsistency (grpc-java #12796), as it
/// plays out where the transport loss means IDLE (gRPC-Go, switchyard):
/// [1, 3], 1 selected and health-failed, its transport goes IDLE; a list
/// [2, 1]: still IDLE, 1 kept, nothing created; a pick: 2 created and
/// asked first; 1 (kept, IDLE) not asked yet; the same list again: no new
/// subchannel, no state change; 2 fails: 1 asked; 1 READY: READY on 1.
#[test]
fn health_failed_then_idle_then_reordered_list_stays_consistent() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1", "10.0.0.3:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    set(&mut cc, &mut *lb, a, Connecting);
    set(&mut cc, &mut *lb, a, Ready);
    cc.set_health_failed(&mut *lb, a);
    set(&mut cc, &mut *lb, a, Idle);
    assert_eq!(cc.state(), Some(Idle));
    let subs = cc.subconns().len();
    update(&mut cc, &mut *lb, &["10.0.0.2:1", "10.0.0.1:1"]);
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(cc.subconns().len(), subs, "nothing created while IDLE");
    assert!(!cc.shutdowns().contains(&a), "1 kept");
    cc.exit_idle(&mut *lb);
    let b = sc(&cc, "10.0.0.2:1");
    assert_eq!(cc.connects().last(), Some(&b));
    set(&mut cc, &mut *lb, b, Connecting);
    let (subs, states) = (cc.subconns().len(), cc.states().len());
    update(&mut cc, &mut *lb, &["10.0.0.2:1", "10.0.0.1:1"]);
    assert_eq!((cc.subconns().len(), cc.states().len()), (subs, states));
    fail(&mut cc, &mut *lb, b, "b down");
    assert_eq!(cc.connects().last(), Some(&a));
    assert_eq!(cc.state(), Some(Connecting));
    set(&mut cc, &mut *lb, a, Connecting);
    set(&mut cc, &mut *lb, a, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks(&mut cc, a);
}

/// A connection up with its health pending wins the pass (gRPC-Go selects
/// on the raw READY): the attempt timer is cancelled, no further address
/// is tried, and a later health failure keeps the connection (TF) without
/// new attempts.
#[test]
fn health_pending_connection_stops_happy_eyeballs() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(
        &mut cc,
        &mut *lb,
        &["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"],
    );
    let a = sc(&cc, "10.0.0.1:1");
    set(&mut cc, &mut *lb, a, Connecting);
    cc.advance(&mut *lb, HE);
    let b = sc(&cc, "10.0.0.2:1");
    cc.set_connected(&mut *lb, a);
    assert!(cc.shutdowns().contains(&b));
    assert!(cc.timers().is_empty(), "timer left: {:?}", cc.timers());
    cc.advance(&mut *lb, HE * 4);
    assert!(cc.subconn_for("10.0.0.3:1").is_none());
    cc.set_health_failed(&mut *lb, a);
    assert_eq!(cc.state(), Some(TransientFailure));
    cc.advance(&mut *lb, HE * 4);
    assert_eq!(cc.connects().last(), Some(&b), "no new attempt");
    assert!(cc.subconn_for("10.0.0.3:1").is_none());
}

// ---------------------------------------------------------------------------
// Happy Eyeballs in later passes (A61: every pass, not just the first)
// ---------------------------------------------------------------------------

/// In sticky TRANSIENT_FAILURE, a new list starts a pass with the 250 ms
/// attempt timer too: 3 asked, 4 only after 250 ms; still TF meanwhile.
#[test]
fn happy_eyeballs_timer_runs_in_a_pass_started_from_sticky_tf() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1", "10.0.0.2:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    fail(&mut cc, &mut *lb, a, "a");
    let b = sc(&cc, "10.0.0.2:1");
    fail(&mut cc, &mut *lb, b, "b");
    assert_eq!(cc.state(), Some(TransientFailure));
    update(&mut cc, &mut *lb, &["10.0.0.3:1", "10.0.0.4:1"]);
    let c = sc(&cc, "10.0.0.3:1");
    assert_eq!(cc.connects().last(), Some(&c));
    set(&mut cc, &mut *lb, c, Connecting);
    cc.advance(&mut *lb, Duration::from_millis(249));
    assert!(cc.subconn_for("10.0.0.4:1").is_none());
    cc.advance(&mut *lb, Duration::from_millis(1));
    let d = sc(&cc, "10.0.0.4:1");
    assert_eq!(cc.connects().last(), Some(&d));
    assert_eq!(cc.state(), Some(TransientFailure));
}

/// After READY then IDLE, the pass a pick starts uses the timer as well:
/// 1 asked at once, 2 (shut down when 1 won, so created anew) 250 ms later.
#[test]
fn happy_eyeballs_timer_runs_in_the_pass_after_idle() {
    let mut cc = TestClientConn::new();
    let mut lb = pf();
    update(&mut cc, &mut *lb, &["10.0.0.1:1", "10.0.0.2:1"]);
    let a = sc(&cc, "10.0.0.1:1");
    cc.advance(&mut *lb, HE);
    let b = sc(&cc, "10.0.0.2:1");
    set(&mut cc, &mut *lb, a, Ready);
    assert!(cc.shutdowns().contains(&b));
    set(&mut cc, &mut *lb, a, Idle);
    cc.exit_idle(&mut *lb);
    assert_eq!(cc.connects().last(), Some(&a));
    set(&mut cc, &mut *lb, a, Connecting);
    cc.advance(&mut *lb, Duration::from_millis(249));
    assert_eq!(sc(&cc, "10.0.0.2:1"), b, "no new attempt before 250 ms");
    cc.advance(&mut *lb, Duration::from_millis(1));
    let b2 = sc(&cc, "10.0.0.2:1");
    assert_ne!(b2, b);
    assert_eq!(cc.connects().last(), Some(&b2));
}

// ---------------------------------------------------------------------------
// End to end (real sockets on 127.0.0.1)
// ---------------------------------------------------------------------------

#[path = "common/mod.rs"]
mod common;

mod e2e {
    use super::common::*;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use switchyard::ConnectivityState::*;
    use switchyard::*;
    use switchyard_testserver::{Listen, ServerOptions, TestServer};

    fn hang_up_listener() -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
        addr
    }

    /// TestPickFirst_StickyTransientFailure (pickfirst_ext_test.go:358): a
    /// backend that closes every connection: the channel goes
    /// TRANSIENT_FAILURE and stays there through the reconnection attempts
    /// (fast backoff: several in 1.5 s), never CONNECTING again.
    #[test]
    fn sticky_transient_failure_through_reconnects() {
        let a = hang_up_listener();
        let rt = Runtime::new().unwrap();
        let states = Arc::new(Mutex::new(Vec::new()));
        let (mut opts, seen) = recorded_plaintext();
        opts.backoff.initial = Duration::from_millis(50);
        opts.backoff.max = Duration::from_millis(200);
        let st = states.clone();
        opts.on_state_change = Some(Arc::new(move |x| st.lock().unwrap().push(x)));
        let ch = Channel::new(&rt, "", None, opts).unwrap();
        ch.update_addresses(vec![Address::new(a.to_string())])
            .unwrap();
        ch.connect().unwrap();
        wait_state(&ch, TransientFailure);
        let attempts_before = seen.attempts().len();
        std::thread::sleep(Duration::from_millis(1500));
        ch.sync().unwrap();
        assert!(
            seen.attempts().len() >= attempts_before + 2,
            "it kept reconnecting: {} then {}",
            attempts_before,
            seen.attempts().len()
        );
        let got = states.lock().unwrap().clone();
        let first_tf = got.iter().position(|s| *s == TransientFailure).unwrap();
        assert!(
            got[first_tf..].iter().all(|s| *s == TransientFailure),
            "left TRANSIENT_FAILURE: {got:?}"
        );
    }

    /// TestPickFirstLeaf_HappyEyeballs_TriggerConnectionDelay end to end: the
    /// first address accepts TCP (kernel backlog) and never speaks HTTP/2;
    /// the second is a real server: a wait-for-ready RPC is served by the
    /// second within a few seconds (the Happy Eyeballs delay, not the
    /// connect timeout), and the channel is READY.
    #[test]
    fn happy_eyeballs_reaches_the_second_server_past_a_silent_first() {
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap();
        let rt = Runtime::new().unwrap();
        let ch = Channel::new(&rt, "", None, plaintext_fast_backoff()).unwrap();
        ch.update_addresses(vec![
            Address::new(silent.local_addr().unwrap().to_string()),
            Address::new(good.addr().to_string()),
        ])
        .unwrap();
        let start = Instant::now();
        let mut r = ch.reader();
        let opts = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            wait_for_ready: Some(true),
            ..Default::default()
        };
        let resp = r.unary("/echo.Echo/Unary", b"ping", &opts).expect("served");
        let text = String::from_utf8(resp.message).unwrap();
        assert_eq!(text, format!("ping|port={}", good.addr().port()));
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(ch.state(), Ready);
        drop(silent);
    }

    /// TestPickFirstLeaf_SimpleResolverUpdate_FirstServerUnReady and
    /// _DuplicateAddrs (pickfirst_ext_test.go:1257, 1299): [down, down
    /// (listed twice), up]: the channel goes CONNECTING then READY (no
    /// TRANSIENT_FAILURE), served by the live one; two subchannels in all
    /// (the duplicate gets none), the failed one shut down.
    #[test]
    fn first_server_down_with_duplicate_goes_connecting_then_ready() {
        let down = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let good = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap();
        let rt = Runtime::new().unwrap();
        let states = Arc::new(Mutex::new(Vec::new()));
        let (mut opts, seen) = recorded_plaintext();
        let st = states.clone();
        opts.on_state_change = Some(Arc::new(move |x| st.lock().unwrap().push(x)));
        let ch = Channel::new(&rt, "", None, opts).unwrap();
        ch.update_addresses(vec![
            Address::new(down.to_string()),
            Address::new(down.to_string()),
            Address::new(good.addr().to_string()),
        ])
        .unwrap();
        let mut r = ch.reader();
        assert_eq!(echo(&mut r, true).unwrap(), good.addr().port());
        ch.sync().unwrap();
        let got: Vec<_> = states
            .lock()
            .unwrap()
            .iter()
            .copied()
            .skip_while(|s| *s == Idle)
            .collect();
        assert_eq!(got, [Connecting, Ready]);
        let mut ids: Vec<_> = seen.all().iter().map(|s| s.sc).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 2, "subchannels: {:?}", seen.all());
        let failed = ids
            .iter()
            .find(|id| seen.states_of(**id).contains(&TransientFailure))
            .copied()
            .expect("the down one failed");
        wait_until("the failed subchannel shut down", || {
            seen.states_of(failed).contains(&Shutdown)
        });
    }
}
