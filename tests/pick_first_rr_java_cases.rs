//! grpc-java's pick_first and round_robin unit tests
//! (core/src/test/java/io/grpc/internal/PickFirstLeafLoadBalancerTest.java,
//! util/src/test/java/io/grpc/util/RoundRobinLoadBalancerTest.java,
//! util/src/test/java/io/grpc/util/MultiChildLoadBalancerTest.java; grpc-java
//! @ 5fda0c7c) ported onto switchyard's public `TestClientConn`, with Happy
//! Eyeballs on (the `{false, true}` parameterisation: 250 ms attempt delay).
//!
//! Only scenarios not already pinned by tests/pick_first_go_cases.rs,
//! tests/least_request_round_robin_go_cases.rs,
//! tests/channel_states_go_cases.rs and tests/core_lb_policy_cases.rs.
//!
//! Not ported, as known deliberate choices or places where the gRPC
//! implementations disagree and switchyard follows gRPC-Go / C-core / the
//! gRFC:
//! * re-resolution requests at pick_first's pass end and every N failures
//!   (switchyard leaves it to the subchannel pool, as gRPC-Go does);
//! * Java's pick_first going TRANSIENT_FAILURE (and dropping its
//!   subchannels) on any resolver error, even while READY
//!   (`nameResolutionTemporaryError`); gRPC-Go and C-core ignore it;
//! * Java going IDLE (lazy) when a READY pick_first gets a list without its
//!   address (`updateAddresses_disjoint_ready_twice`); gRPC-Go starts a new
//!   pass from CONNECTING (pinned by `go_resolver_updates_while_ready`);
//! * Java continuing from the in-flight address when a CONNECTING
//!   pick_first gets a list that still has it (`seekTo`, as in
//!   `lastAddressFailingNotTransientFailure`); gRFC A61 ("every time the LB
//!   policy receives a new address list, it will start an initial Happy
//!   Eyeballs pass over the new list"), gRPC-Go and C-core restart the pass
//!   (pinned by `go_update_while_connecting_restarts_the_pass`);
//! * a subchannel asked to connect reporting IDLE without CONNECTING first
//!   (`requestConnectionPicker`'s literal sequence): Java goes IDLE, gRPC-Go
//!   and switchyard ignore an IDLE that follows IDLE;
//! * the same address list again in sticky TRANSIENT_FAILURE
//!   (`updateAddresses_identical_transient_failure`): Java publishes
//!   nothing, gRPC-Go and switchyard publish the failing picker again;
//! * round_robin failing picks on a resolver error while its children
//!   connect (`MultiChildLoadBalancer.handleNameResolutionError`): gRPC-Go
//!   and C-core keep the endpoints and go on connecting;
//! * serialized retries (`GRPC_SERIALIZE_RETRIES`), the `Index` class, the
//!   picker-equality and `offsetIterable` helpers: Java internals.

use std::sync::Arc;
use std::time::Duration;
use switchyard::balancer::testing::{Picked, TestClientConn};
use switchyard::balancer::{Balancer, ClientConnState, SubConnState};
use switchyard::ConnectivityState::{self, *};
use switchyard::{registry, Address, Code, Endpoint, SubConnId};

const HE: Duration = Duration::from_millis(250);

fn build(name: &str) -> Box<dyn Balancer> {
    registry::get(name).unwrap().build()
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

/// The live subchannel for `addr`.
#[track_caller]
fn sc(cc: &TestClientConn, addr: &str) -> SubConnId {
    cc.subconn_for(addr)
        .unwrap_or_else(|| panic!("no live subchannel for {addr}"))
        .id()
}

fn has(cc: &TestClientConn, addr: &str) -> bool {
    cc.subconn_for(addr).is_some()
}

fn addr_of(cc: &TestClientConn, id: SubConnId) -> String {
    cc.subconn(id).unwrap().addr().to_string()
}

/// How many connects were asked of `addr`'s subchannels (any of them).
fn connects_to(cc: &TestClientConn, addr: &str) -> usize {
    cc.connects()
        .iter()
        .filter(|id| addr_of(cc, **id) == addr)
        .count()
}

fn set(cc: &mut TestClientConn, lb: &mut dyn Balancer, id: SubConnId, s: ConnectivityState) {
    cc.set_state(lb, id, s);
    while cc.run_work(lb) {}
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
    while cc.run_work(lb) {}
}

#[track_caller]
fn fail_message(cc: &mut TestClientConn) -> String {
    match cc.pick() {
        Picked::Fail(s) => {
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
            s.message().to_string()
        }
        p => panic!("expected a failing picker, got {p:?}"),
    }
}

#[track_caller]
fn picks_to(cc: &mut TestClientConn, addr: &str) {
    for _ in 0..3 {
        match cc.pick() {
            Picked::Complete { subconn, .. } => assert_eq!(addr_of(cc, subconn), addr),
            p => panic!("pick: {p:?}, want {addr}"),
        }
    }
}

/// The set of addresses `3 * n` picks reach (n = want.len()), each equally.
#[track_caller]
fn rr_picks(cc: &mut TestClientConn, want: &[&str]) {
    let n = want.len();
    let mut got: Vec<String> = cc
        .picks(3 * n)
        .into_iter()
        .map(|p| addr_of(cc, p.expect("pick did not complete")))
        .collect();
    got.sort();
    let mut expect: Vec<String> = want
        .iter()
        .flat_map(|a| std::iter::repeat_n(a.to_string(), 3))
        .collect();
    expect.sort();
    assert_eq!(got, expect);
}

const S1: &str = "127.0.0.1:1";
const S2: &str = "127.0.0.2:1";
const S3: &str = "127.0.0.3:1";
const S4: &str = "127.0.0.4:1";
const S5: &str = "127.0.0.5:1";

// ===========================================================================
// PickFirstLeafLoadBalancerTest
// ===========================================================================

/// requestConnectionPicker: the first subchannel, asked to connect, goes
/// IDLE: pick_first goes IDLE with a picker that asks for one connection
/// (twice picked, one new connect). Here the subchannel reports CONNECTING
/// first, as real subchannels do (Java's literal sequence, IDLE straight
/// from IDLE, leaves switchyard's pick_first CONNECTING, as gRPC-Go's).
#[test]
fn java_request_connection_picker_connects_once() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2, S3]);
    assert_eq!(cc.state(), Some(Connecting));
    let s1 = sc(&cc, S1);
    assert_eq!(cc.connects(), [s1]);
    set(&mut cc, &mut *pf, s1, Connecting);
    set(&mut cc, &mut *pf, s1, Idle);
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(cc.pick(), Picked::Queue);
    assert_eq!(cc.pick(), Picked::Queue);
    while cc.run_work(&mut *pf) {}
    assert_eq!(connects_to(&cc, S1), 2, "one more connection request");
    assert_eq!(cc.state(), Some(Connecting));
}

/// refreshNameResolutionAfterSubchannelConnectionBroken: one address fails
/// (TRANSIENT_FAILURE with its error), then connects (READY), then the
/// connection goes (IDLE): re-resolution and IDLE.
#[test]
fn java_refresh_resolution_after_connection_broken() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1]);
    assert_eq!(cc.pick(), Picked::Queue);
    let s1 = sc(&cc, S1);
    fail(&mut cc, &mut *pf, s1, "Simulated connection error");
    assert_eq!(cc.state(), Some(TransientFailure));
    assert_eq!(fail_message(&mut cc), "Simulated connection error");
    set(&mut cc, &mut *pf, s1, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks_to(&mut cc, S1);
    let rr = cc.resolve_now_requests();
    cc.set_state(&mut *pf, s1, Idle);
    assert!(
        cc.resolve_now_requests() > rr,
        "re-resolution on READY -> IDLE"
    );
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(cc.states(), [Connecting, TransientFailure, Ready, Idle]);
}

/// pickAfterResolvedAndUnchanged: the same list again while the first
/// subchannel is CONNECTING: no new connection request, no state update.
#[test]
fn java_pick_after_resolved_and_unchanged() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2, S3, S4, S5]);
    let s1 = sc(&cc, S1);
    set(&mut cc, &mut *pf, s1, Connecting);
    let published = cc.pickers_published();
    update(&mut cc, &mut *pf, &[S1, S2, S3, S4, S5]);
    assert_eq!(connects_to(&cc, S1), 1);
    assert_eq!(cc.pickers_published(), published, "no updateBalancingState");
    assert_eq!(cc.subconns().len(), 1);
}

/// pickAfterResolvedAndChanged: while connecting to server1, a list of
/// server2 only: server1 shut down, server2 asked to connect.
#[test]
fn java_pick_after_resolved_and_changed() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1]);
    assert_eq!(cc.pick(), Picked::Queue);
    let s1 = sc(&cc, S1);
    update(&mut cc, &mut *pf, &[S2]);
    assert!(cc.shutdowns().contains(&s1));
    let s2 = sc(&cc, S2);
    assert_eq!(cc.connects(), [s1, s2]);
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(cc.pick(), Picked::Queue);
}

/// pickAfterStateChangeAfterResolution (Happy Eyeballs): READY, IDLE
/// (re-resolution), a pick reconnects; then every address fails with
/// "boom!" one 250 ms step apart: TRANSIENT_FAILURE with that error; the
/// first address then connects straight from TRANSIENT_FAILURE: READY.
#[test]
fn java_pick_after_state_change_after_resolution() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2, S3, S4]);
    let s1 = sc(&cc, S1);
    set(&mut cc, &mut *pf, s1, Ready);
    let rr = cc.resolve_now_requests();
    cc.set_state(&mut *pf, s1, Idle);
    assert!(cc.resolve_now_requests() > rr);
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(cc.pick(), Picked::Queue);
    while cc.run_work(&mut *pf) {}
    assert_eq!(connects_to(&cc, S1), 2);
    set(&mut cc, &mut *pf, s1, Connecting);
    fail(&mut cc, &mut *pf, s1, "boom!");
    // A failure moves on at once; then one step per address.
    for a in [S2, S3, S4] {
        let id = sc(&cc, a);
        assert_eq!(connects_to(&cc, a), 1, "{a} asked");
        assert_eq!(cc.state(), Some(Connecting));
        fail(&mut cc, &mut *pf, id, "boom!");
        cc.advance(&mut *pf, HE);
    }
    assert_eq!(cc.state(), Some(TransientFailure));
    assert_eq!(fail_message(&mut cc), "boom!");
    set(&mut cc, &mut *pf, s1, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks_to(&mut cc, S1);
}

/// pickAfterResolutionAfterTransientValue, pickWithDupAddressesUpDownUp
/// (one endpoint listing the address twice) and pickWithDupEagsUpDownUp
/// (two endpoints of the same address): one subchannel; its failure is
/// TRANSIENT_FAILURE with its error at once (the pass is over); its
/// CONNECTING afterwards changes nothing (sticky); READY is READY.
#[test]
fn java_pick_with_duplicate_addresses_up_down_up() {
    let one = vec![Endpoint::new(vec![Address::new(S1)])];
    let dup_addrs = vec![Endpoint::new(vec![Address::new(S1), Address::new(S1)])];
    let dup_eps = vec![
        Endpoint::new(vec![Address::new(S1)]),
        Endpoint::new(vec![Address::new(S1)]),
    ];
    for (name, endpoints) in [
        ("single", one),
        ("dup addresses", dup_addrs),
        ("dup endpoints", dup_eps),
    ] {
        let mut cc = TestClientConn::new();
        let mut pf = build("pick_first");
        cc.update(&mut *pf, ClientConnState::new(endpoints, None))
            .unwrap();
        assert_eq!(cc.subconns().len(), 1, "{name}: one subchannel");
        let s1 = sc(&cc, S1);
        fail(&mut cc, &mut *pf, s1, "boom!");
        assert_eq!(cc.state(), Some(TransientFailure), "{name}");
        assert_eq!(fail_message(&mut cc), "boom!", "{name}");
        let published = cc.pickers_published();
        set(&mut cc, &mut *pf, s1, Connecting);
        assert_eq!(cc.pickers_published(), published, "{name}: sticky TF");
        assert_eq!(fail_message(&mut cc), "boom!", "{name}");
        set(&mut cc, &mut *pf, s1, Ready);
        assert_eq!(cc.state(), Some(Ready), "{name}");
        picks_to(&mut cc, S1);
        assert_eq!(cc.subconns().len(), 1, "{name}");
    }
}

/// nameResolutionAfterSufficientTFs_multipleEags / _singleEag, the state
/// side (the re-resolution side is a deliberate difference): the first
/// failure keeps CONNECTING and moves on, the second publishes nothing,
/// the third is TRANSIENT_FAILURE with its error; in sticky TF, once every
/// subchannel's worth of failures came in, the picker carries the latest
/// error, and the policy never goes CONNECTING meanwhile; an IDLE
/// subchannel (backoff over) is asked to connect at once.
#[test]
fn java_sticky_tf_after_sufficient_failures_reports_the_latest_error() {
    for multi in [true, false] {
        let mut cc = TestClientConn::new();
        let mut pf = build("pick_first");
        let endpoints = if multi {
            eps(&[S1, S2, S3])
        } else {
            vec![Endpoint::new(vec![
                Address::new(S1),
                Address::new(S2),
                Address::new(S3),
            ])]
        };
        cc.update(&mut *pf, ClientConnState::new(endpoints, None))
            .unwrap();
        let s1 = sc(&cc, S1);
        fail(&mut cc, &mut *pf, s1, "boom!");
        assert_eq!(cc.state(), Some(Connecting));
        assert_eq!(cc.pick(), Picked::Queue);
        let s2 = sc(&cc, S2);
        let published = cc.pickers_published();
        fail(&mut cc, &mut *pf, s2, "boom!");
        assert_eq!(cc.pickers_published(), published, "second TF: no update");
        let s3 = sc(&cc, S3);
        fail(&mut cc, &mut *pf, s3, "boom! 3");
        assert_eq!(cc.state(), Some(TransientFailure));
        assert_eq!(fail_message(&mut cc), "boom! 3");
        // Sticky TF: subchannels come out of backoff (IDLE: reconnected at
        // once), connect (nothing reported) and fail again.
        let before = connects_to(&cc, S2);
        set(&mut cc, &mut *pf, s2, Idle);
        assert_eq!(connects_to(&cc, S2), before + 1, "IDLE reconnected");
        set(&mut cc, &mut *pf, s2, Connecting);
        fail(&mut cc, &mut *pf, s2, "late 1");
        set(&mut cc, &mut *pf, s2, Connecting);
        fail(&mut cc, &mut *pf, s2, "late 2");
        set(&mut cc, &mut *pf, s2, Connecting);
        fail(&mut cc, &mut *pf, s2, "late 3");
        assert_eq!(cc.state(), Some(TransientFailure));
        assert_eq!(
            fail_message(&mut cc),
            "late 3",
            "after as many failures as subchannels, the latest error"
        );
        assert!(
            !cc.states()[2..].contains(&Connecting),
            "no CONNECTING in sticky TF: {:?}",
            cc.states()
        );
    }
}

/// requestConnection (exitIdle): while CONNECTING it does nothing (no new
/// subchannel, no connection request, no state update).
#[test]
fn java_request_connection_is_a_no_op_while_connecting() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    set(&mut cc, &mut *pf, s1, Connecting);
    let published = cc.pickers_published();
    cc.exit_idle(&mut *pf);
    assert!(!has(&cc, S2));
    assert_eq!(cc.connects(), [s1]);
    fail(&mut cc, &mut *pf, s1, "x");
    let s2 = sc(&cc, S2);
    assert_eq!(cc.connects(), [s1, s2]);
    set(&mut cc, &mut *pf, s2, Connecting);
    cc.exit_idle(&mut *pf);
    assert_eq!(cc.connects(), [s1, s2]);
    assert_eq!(cc.pickers_published(), published);
}

/// updateAddresses_disjoint_idle: READY then IDLE; a disjoint list: no new
/// subchannel until a pick, the old ones shut down, still IDLE; a late
/// READY from a shut-down one changes nothing; a pick connects to the new
/// list's first address (once), which then serves.
#[test]
fn java_update_disjoint_while_idle() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    cc.advance(&mut *pf, HE);
    let s2 = sc(&cc, S2);
    set(&mut cc, &mut *pf, s1, Ready);
    assert!(cc.shutdowns().contains(&s2));
    picks_to(&mut cc, S1);
    set(&mut cc, &mut *pf, s1, Idle);
    assert_eq!(cc.state(), Some(Idle));
    let created = cc.subconns().len();
    update(&mut cc, &mut *pf, &[S3, S4]);
    assert_eq!(
        cc.subconns().len(),
        created,
        "nothing created before a pick"
    );
    assert!(cc.shutdowns().contains(&s1));
    assert_eq!(cc.state(), Some(Idle));
    let published = cc.pickers_published();
    cc.set_state(&mut *pf, s1, Ready);
    cc.set_state(&mut *pf, s2, Ready);
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(cc.pickers_published(), published, "obsolete READY ignored");
    assert_eq!(cc.pick(), Picked::Queue);
    assert_eq!(cc.pick(), Picked::Queue);
    while cc.run_work(&mut *pf) {}
    let s3 = sc(&cc, S3);
    assert_eq!(connects_to(&cc, S3), 1, "once");
    set(&mut cc, &mut *pf, s3, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks_to(&mut cc, S3);
}

/// updateAddresses_disjoint_connecting (Happy Eyeballs): connecting to
/// [1, 2]; a list [3, 4]: 3 then (250 ms) 4 asked, 1 and 2 shut down, still
/// CONNECTING; late READYs of 1 and 2 ignored; 3 fails (CONNECTING); 4
/// connects: READY on 4.
#[test]
fn java_update_disjoint_while_connecting() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    cc.advance(&mut *pf, HE);
    let s2 = sc(&cc, S2);
    assert_eq!(cc.state(), Some(Connecting));
    update(&mut cc, &mut *pf, &[S3, S4]);
    cc.advance(&mut *pf, HE);
    assert_eq!(cc.state(), Some(Connecting));
    let s3 = sc(&cc, S3);
    let s4 = sc(&cc, S4);
    assert_eq!(cc.connects(), [s1, s2, s3, s4]);
    assert!(cc.shutdowns().contains(&s1) && cc.shutdowns().contains(&s2));
    cc.set_state(&mut *pf, s1, Ready);
    cc.set_state(&mut *pf, s2, Ready);
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, s3, "Simulated connection error");
    assert_eq!(cc.state(), Some(Connecting));
    set(&mut cc, &mut *pf, s4, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks_to(&mut cc, S4);
}

/// updateAddresses_disjoint_transient_failure: sticky TF on [1, 2]; a list
/// [3, 4]: still TRANSIENT_FAILURE while 3 is tried; 1 and 2 shut down and
/// their late READYs ignored; 3 fails (still TF), 4 asked; 4 connects:
/// READY, 3 shut down.
#[test]
fn java_update_disjoint_while_transient_failure() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    fail(&mut cc, &mut *pf, s1, "e");
    let s2 = sc(&cc, S2);
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, s2, "e");
    assert_eq!(cc.state(), Some(TransientFailure));
    update(&mut cc, &mut *pf, &[S3, S4]);
    assert_eq!(cc.state(), Some(TransientFailure));
    let s3 = sc(&cc, S3);
    assert_eq!(connects_to(&cc, S3), 1);
    assert!(cc.shutdowns().contains(&s1) && cc.shutdowns().contains(&s2));
    cc.set_state(&mut *pf, s1, Ready);
    cc.set_state(&mut *pf, s2, Ready);
    assert_eq!(cc.state(), Some(TransientFailure));
    fail(&mut cc, &mut *pf, s3, "e");
    assert_eq!(cc.state(), Some(TransientFailure));
    let s4 = sc(&cc, S4);
    assert_eq!(connects_to(&cc, S4), 1);
    set(&mut cc, &mut *pf, s4, Ready);
    assert!(cc.shutdowns().contains(&s3));
    assert_eq!(cc.state(), Some(Ready));
    picks_to(&mut cc, S4);
    assert_eq!(cc.states(), [Connecting, TransientFailure, Ready]);
}

/// updateAddresses_intersecting_idle: READY on 1 then IDLE (re-resolution);
/// a list [1, 3, 4]: nothing created, not even after two 250 ms steps,
/// still IDLE; a pick reconnects the kept subchannel of 1 (once); READY.
#[test]
fn java_update_intersecting_while_idle_reuses_the_kept_subchannel() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    cc.advance(&mut *pf, HE);
    set(&mut cc, &mut *pf, s1, Ready);
    assert_eq!(cc.state(), Some(Ready));
    let rr = cc.resolve_now_requests();
    cc.set_state(&mut *pf, s1, Idle);
    assert!(cc.resolve_now_requests() > rr);
    assert_eq!(cc.state(), Some(Idle));
    let created = cc.subconns().len();
    let published = cc.pickers_published();
    update(&mut cc, &mut *pf, &[S1, S3, S4]);
    cc.advance(&mut *pf, HE);
    cc.advance(&mut *pf, HE);
    assert_eq!(cc.subconns().len(), created);
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(cc.pickers_published(), published);
    assert_eq!(cc.pick(), Picked::Queue);
    assert_eq!(cc.pick(), Picked::Queue);
    while cc.run_work(&mut *pf) {}
    assert_eq!(sc(&cc, S1), s1, "the kept subchannel");
    assert_eq!(connects_to(&cc, S1), 2, "asked once more");
    assert!(!has(&cc, S3));
    set(&mut cc, &mut *pf, s1, Connecting);
    assert_eq!(cc.state(), Some(Connecting));
    set(&mut cc, &mut *pf, s1, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks_to(&mut cc, S1);
}

/// updateAddresses_intersecting_connecting (the list still has the
/// address being connected to): [1, 2, 3], all three asked, 1 CONNECTING;
/// a list [1, 2, 4, 5]: no CONNECTING update, 1 and 2 kept, 4 and 5 not
/// yet asked; two 250 ms steps: 1 not asked again, 4 asked; 1 connects:
/// READY on 1.
#[test]
fn java_update_intersecting_while_connecting() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2, S3]);
    cc.advance(&mut *pf, HE);
    cc.advance(&mut *pf, HE);
    let (s1, s2, s3) = (sc(&cc, S1), sc(&cc, S2), sc(&cc, S3));
    set(&mut cc, &mut *pf, s1, Connecting);
    let published = cc.pickers_published();
    update(&mut cc, &mut *pf, &[S1, S2, S4, S5]);
    assert_eq!(cc.pickers_published(), published, "no CONNECTING update");
    assert_eq!(cc.state(), Some(Connecting));
    assert!(!cc.shutdowns().contains(&s1) && !cc.shutdowns().contains(&s2));
    assert!(cc.shutdowns().contains(&s3));
    assert_eq!(connects_to(&cc, S4), 0);
    assert!(!has(&cc, S5));
    cc.advance(&mut *pf, HE);
    cc.advance(&mut *pf, HE);
    assert_eq!(connects_to(&cc, S1), 1, "1 is CONNECTING: not asked again");
    assert_eq!(connects_to(&cc, S4), 1, "4 asked after two steps");
    set(&mut cc, &mut *pf, s1, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks_to(&mut cc, S1);
}

/// updateAddresses_intersecting_transient_failure: sticky TF on [1, 2]; a
/// list [1, 2, 3]: still TF, 3 created and asked, nothing else asked; 2
/// out of backoff CONNECTING: still TF; 2 READY: READY, 3 shut down.
#[test]
fn java_update_intersecting_while_transient_failure() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    fail(&mut cc, &mut *pf, s1, "e");
    let s2 = sc(&cc, S2);
    fail(&mut cc, &mut *pf, s2, "e");
    assert_eq!(cc.state(), Some(TransientFailure));
    update(&mut cc, &mut *pf, &[S1, S2, S3]);
    assert_eq!(cc.state(), Some(TransientFailure));
    let s3 = sc(&cc, S3);
    assert_eq!(cc.connects(), [s1, s2, s3]);
    set(&mut cc, &mut *pf, s2, Connecting);
    assert_eq!(cc.state(), Some(TransientFailure));
    set(&mut cc, &mut *pf, s2, Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert!(cc.shutdowns().contains(&s3));
    picks_to(&mut cc, S2);
}

/// updateAddresses_intersecting_enter_transient_failure: connecting to
/// [1, 2]; a list [1, 3]: 2 shut down, 3 asked after 250 ms; 1 fails:
/// CONNECTING; 3 fails: TRANSIENT_FAILURE.
#[test]
fn java_update_intersecting_then_enter_transient_failure() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    cc.advance(&mut *pf, HE);
    let s2 = sc(&cc, S2);
    set(&mut cc, &mut *pf, s1, Connecting);
    update(&mut cc, &mut *pf, &[S1, S3]);
    assert_eq!(cc.state(), Some(Connecting));
    assert!(cc.shutdowns().contains(&s2));
    cc.advance(&mut *pf, HE);
    let s3 = sc(&cc, S3);
    assert_eq!(connects_to(&cc, S3), 1);
    fail(&mut cc, &mut *pf, s1, "e");
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, s3, "e");
    assert_eq!(cc.state(), Some(TransientFailure));
}

/// updateAddresses_identical_idle: READY then IDLE; the same list: nothing
/// created or asked; still IDLE; the subchannel READY on its own: READY.
#[test]
fn java_update_identical_while_idle() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    set(&mut cc, &mut *pf, s1, Ready);
    cc.set_state(&mut *pf, s1, Idle);
    assert_eq!(cc.state(), Some(Idle));
    update(&mut cc, &mut *pf, &[S1, S2]);
    assert_eq!(cc.subconns().len(), 1);
    assert_eq!(cc.connects(), [s1]);
    assert_eq!(cc.state(), Some(Idle));
    set(&mut cc, &mut *pf, s1, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks_to(&mut cc, S1);
}

/// updateAddresses_identical_connecting: the same list while connecting:
/// nothing created; after 250 ms the second address as usual; the same
/// list again: no state update, nothing created; READY on 1.
#[test]
fn java_update_identical_while_connecting() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    update(&mut cc, &mut *pf, &[S1, S2]);
    assert_eq!(cc.subconns().len(), 1);
    cc.advance(&mut *pf, HE);
    assert_eq!(cc.subconns().len(), 2);
    let published = cc.pickers_published();
    update(&mut cc, &mut *pf, &[S1, S2]);
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(cc.pickers_published(), published);
    assert_eq!(cc.subconns().len(), 2);
    set(&mut cc, &mut *pf, s1, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks_to(&mut cc, S1);
}

/// updateAddresses_identical_ready: no interaction at all (no new
/// subchannel after 250 ms, no picker).
#[test]
fn java_update_identical_while_ready() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    set(&mut cc, &mut *pf, s1, Ready);
    let published = cc.pickers_published();
    update(&mut cc, &mut *pf, &[S1, S2]);
    cc.advance(&mut *pf, HE);
    assert!(!has(&cc, S2));
    assert_eq!(cc.pickers_published(), published);
    assert_eq!(cc.state(), Some(Ready));
}

/// updateAddresses_identicalSingleAddress_connecting: no state update, no
/// new subchannel, even after 250 ms.
#[test]
fn java_update_identical_single_address_while_connecting() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1]);
    let s1 = sc(&cc, S1);
    set(&mut cc, &mut *pf, s1, Connecting);
    cc.advance(&mut *pf, HE);
    assert_eq!(cc.pick(), Picked::Queue);
    let published = cc.pickers_published();
    update(&mut cc, &mut *pf, &[S1]);
    cc.advance(&mut *pf, HE);
    assert_eq!(cc.subconns().len(), 1);
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(cc.pickers_published(), published);
}

/// multiple_backoffs: both fail (TF); they go through backoff (CONNECTING)
/// and fail again, all in TRANSIENT_FAILURE; 2 READY: READY, 1 shut down;
/// 1's late READY changes nothing.
#[test]
fn java_multiple_backoffs() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    fail(&mut cc, &mut *pf, s1, "e");
    assert_eq!(cc.state(), Some(Connecting));
    let s2 = sc(&cc, S2);
    fail(&mut cc, &mut *pf, s2, "e");
    assert_eq!(cc.state(), Some(TransientFailure));
    cc.advance(&mut *pf, HE);
    for _ in 0..2 {
        set(&mut cc, &mut *pf, s1, Connecting);
        assert_eq!(cc.state(), Some(TransientFailure));
        set(&mut cc, &mut *pf, s2, Connecting);
        assert_eq!(cc.state(), Some(TransientFailure));
        fail(&mut cc, &mut *pf, s1, "e");
        assert_eq!(cc.state(), Some(TransientFailure));
        fail(&mut cc, &mut *pf, s2, "e");
        assert_eq!(cc.state(), Some(TransientFailure));
    }
    set(&mut cc, &mut *pf, s1, Connecting);
    set(&mut cc, &mut *pf, s2, Connecting);
    set(&mut cc, &mut *pf, s2, Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert!(cc.shutdowns().contains(&s1));
    picks_to(&mut cc, S2);
    let published = cc.pickers_published();
    let created = cc.subconns().len();
    cc.set_state(&mut *pf, s1, Ready);
    assert_eq!(cc.pickers_published(), published);
    assert_eq!(cc.subconns().len(), created);
    assert!(cc.timers().is_empty(), "no attempt scheduled");
}

/// backoff_faster_than_serial_connection: 1 fails, 2 asked; 1 comes out of
/// backoff and connects before 2 answers: READY on 1.
#[test]
fn java_backoff_faster_than_serial_connection() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    fail(&mut cc, &mut *pf, s1, "e");
    assert_eq!(connects_to(&cc, S2), 1);
    set(&mut cc, &mut *pf, s1, Connecting);
    assert_eq!(cc.state(), Some(Connecting));
    set(&mut cc, &mut *pf, s1, Ready);
    assert_eq!(cc.state(), Some(Ready));
    picks_to(&mut cc, S1);
}

/// success_from_transient_failure: 1 fails, 2 asked, 1 CONNECTING, 2 fails:
/// TF; 1 fails, 2 CONNECTING (TF), 2 READY: READY, 1 shut down; 1 READY
/// afterwards: nothing.
#[test]
fn java_success_from_transient_failure() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    fail(&mut cc, &mut *pf, s1, "e");
    let s2 = sc(&cc, S2);
    set(&mut cc, &mut *pf, s1, Connecting);
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, s2, "e");
    assert_eq!(cc.state(), Some(TransientFailure));
    fail(&mut cc, &mut *pf, s1, "e");
    set(&mut cc, &mut *pf, s2, Connecting);
    assert_eq!(cc.state(), Some(TransientFailure));
    set(&mut cc, &mut *pf, s2, Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert!(cc.shutdowns().contains(&s1));
    picks_to(&mut cc, S2);
    let published = cc.pickers_published();
    let created = cc.subconns().len();
    cc.set_state(&mut *pf, s1, Ready);
    assert_eq!(cc.pickers_published(), published);
    assert_eq!(cc.subconns().len(), created);
}

/// lastAddressFailingNotTransientFailure, with the gRFC A61 pass restart
/// (grpc-java instead continues from the in-flight address and asks 3 only
/// after 2 fails): [1, 2], 1 fails, 2 connecting; a list [3, 2]: 1 shut
/// down; 2 fails: not TRANSIENT_FAILURE while 3 has not failed; 3 fails:
/// TRANSIENT_FAILURE; 1's late READY: nothing; 2 READY: READY, 3 shut down.
#[test]
fn java_last_address_failing_is_not_transient_failure() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    cc.advance(&mut *pf, HE);
    let s2 = sc(&cc, S2);
    fail(&mut cc, &mut *pf, s1, "e");
    assert_eq!(cc.state(), Some(Connecting));
    update(&mut cc, &mut *pf, &[S3, S2]);
    assert!(cc.shutdowns().contains(&s1));
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, s2, "e");
    cc.advance(&mut *pf, Duration::from_secs(1));
    let s3 = sc(&cc, S3);
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, s3, "e");
    assert_eq!(cc.state(), Some(TransientFailure));
    cc.set_state(&mut *pf, s1, Ready);
    assert_eq!(cc.state(), Some(TransientFailure));
    set(&mut cc, &mut *pf, s2, Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert!(cc.shutdowns().contains(&s3));
    picks_to(&mut cc, S2);
}

/// recreate_shutdown_subchannel and ready_then_transient_failure_again: 1
/// fails, 2 READY (1 shut down), 2 IDLE; a pick (twice) recreates 1 and
/// asks it once; CONNECTING; it fails: CONNECTING, 2 (IDLE) asked; 2 READY:
/// READY on 2, the new 1 shut down.
#[test]
fn java_recreate_shutdown_subchannel() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2]);
    let s1 = sc(&cc, S1);
    fail(&mut cc, &mut *pf, s1, "e");
    let s2 = sc(&cc, S2);
    set(&mut cc, &mut *pf, s2, Ready);
    assert!(cc.shutdowns().contains(&s1));
    assert_eq!(cc.state(), Some(Ready));
    cc.set_state(&mut *pf, s2, Idle);
    assert_eq!(cc.state(), Some(Idle));
    assert_eq!(cc.pick(), Picked::Queue);
    assert_eq!(cc.pick(), Picked::Queue);
    while cc.run_work(&mut *pf) {}
    let s1b = sc(&cc, S1);
    assert_ne!(s1b, s1, "a new subchannel for 1");
    assert_eq!(connects_to(&cc, S1), 2);
    set(&mut cc, &mut *pf, s1b, Connecting);
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, s1b, "e");
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(connects_to(&cc, S2), 2, "2 asked again");
    set(&mut cc, &mut *pf, s2, Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert!(cc.shutdowns().contains(&s1b));
    picks_to(&mut cc, S2);
}

/// happy_eyeballs_connection_results_happen_after_get_to_end: all three
/// asked; 1 fails; the timer runs past the end; 2 fails twice: still
/// CONNECTING (3 pending); 3 fails: TRANSIENT_FAILURE with its error.
#[test]
fn java_happy_eyeballs_results_after_reaching_the_end() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2, S3]);
    cc.advance(&mut *pf, HE);
    cc.advance(&mut *pf, HE);
    let (s1, s2, s3) = (sc(&cc, S1), sc(&cc, S2), sc(&cc, S3));
    assert_eq!(cc.connects(), [s1, s2, s3]);
    fail(&mut cc, &mut *pf, s1, "simulated failure");
    assert_eq!(cc.state(), Some(Connecting));
    cc.advance(&mut *pf, HE);
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, s2, "simulated failure");
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, s2, "simulated failure");
    assert_eq!(cc.state(), Some(Connecting));
    fail(&mut cc, &mut *pf, s3, "simulated failure 3");
    assert_eq!(cc.state(), Some(TransientFailure));
    assert_eq!(fail_message(&mut cc), "simulated failure 3");
}

/// happy_eyeballs_fail_then_trigger_connection_delay: 1 CONNECTING; at
/// 249 ms 1 fails: 2 asked at once, and the next attempt is 250 ms from
/// then (not 1 ms later); 3 asked at 250 ms after 2; 1 out of backoff
/// CONNECTING; 2 READY: READY on 2, 1 shut down.
#[test]
fn java_happy_eyeballs_fail_resets_the_attempt_timer() {
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    update(&mut cc, &mut *pf, &[S1, S2, S3, S4, S5]);
    let s1 = sc(&cc, S1);
    set(&mut cc, &mut *pf, s1, Connecting);
    cc.advance(&mut *pf, HE - Duration::from_millis(1));
    assert!(!has(&cc, S2));
    fail(&mut cc, &mut *pf, s1, "simulated failure");
    assert_eq!(cc.state(), Some(Connecting));
    assert_eq!(connects_to(&cc, S2), 1);
    cc.advance(&mut *pf, Duration::from_millis(1));
    assert!(!has(&cc, S3), "the timer restarted with 2's attempt");
    let s2 = sc(&cc, S2);
    set(&mut cc, &mut *pf, s2, Connecting);
    cc.advance(&mut *pf, HE - Duration::from_millis(2));
    assert!(!has(&cc, S3));
    cc.advance(&mut *pf, Duration::from_millis(1));
    assert_eq!(connects_to(&cc, S3), 1);
    assert_eq!(connects_to(&cc, S1), 1);
    assert_eq!(connects_to(&cc, S2), 1);
    set(&mut cc, &mut *pf, s1, Connecting);
    assert_eq!(cc.state(), Some(Connecting));
    set(&mut cc, &mut *pf, s2, Ready);
    assert_eq!(cc.state(), Some(Ready));
    assert!(cc.shutdowns().contains(&s1));
    picks_to(&mut cc, S2);
}

/// index_interleaving (Happy Eyeballs on): endpoints [1_4, 1_6], [2_4],
/// [3_4], [4_4, 4_6] flatten to 1_4 1_6 2_4 3_4 4_4 4_6 and interleave (A61
/// step 3, RFC 8305 §4) to 1_4 1_6 2_4 4_6 3_4 4_4: the attempt order.
#[test]
fn java_index_interleaving_over_multi_address_endpoints() {
    let (a14, a16) = ("127.1.1.1:1234", "[::1]:1234");
    let (a24, a34) = ("127.1.1.2:1234", "127.1.1.3:1234");
    let (a44, a46) = ("127.1.1.4:1234", "[::1]:1244");
    let endpoints = vec![
        Endpoint::new(vec![Address::new(a14), Address::new(a16)]),
        Endpoint::new(vec![Address::new(a24)]),
        Endpoint::new(vec![Address::new(a34)]),
        Endpoint::new(vec![Address::new(a44), Address::new(a46)]),
    ];
    let mut cc = TestClientConn::new();
    let mut pf = build("pick_first");
    cc.update(&mut *pf, ClientConnState::new(endpoints, None))
        .unwrap();
    for _ in 0..6 {
        cc.advance(&mut *pf, HE);
    }
    let order: Vec<String> = cc.connects().iter().map(|id| addr_of(&cc, *id)).collect();
    assert_eq!(order, [a14, a16, a24, a46, a34, a44]);
}

// ===========================================================================
// RoundRobinLoadBalancerTest / MultiChildLoadBalancerTest
// ===========================================================================

const R0: &str = "127.0.1.1:1";
const R1: &str = "127.0.1.2:1";
const R2: &str = "127.0.1.3:1";

fn rr_start(addrs: &[&str]) -> (TestClientConn, Box<dyn Balancer>) {
    let mut cc = TestClientConn::new();
    let mut rr = build("round_robin");
    update(&mut cc, &mut *rr, addrs);
    (cc, rr)
}

/// pickAfterResolved (RR and MultiChild): every address asked to connect
/// once, none shut down; CONNECTING then READY, the picker holding only
/// the READY one.
#[test]
fn java_rr_pick_after_resolved() {
    let (mut cc, mut rr) = rr_start(&[R0, R1, R2]);
    for a in [R0, R1, R2] {
        assert_eq!(connects_to(&cc, a), 1, "{a}");
    }
    let r0 = sc(&cc, R0);
    set(&mut cc, &mut *rr, r0, Ready);
    assert!(cc.shutdowns().is_empty());
    assert_eq!(cc.states(), [Connecting, Ready]);
    rr_picks(&mut cc, &[R0]);
}

/// pickAfterResolvedUpdatedHosts (RR and MultiChild): [removed, old] both
/// READY; a list [old (another weight: an attribute that is not the
/// connection's), new]: removed shut down, old kept (no second connect),
/// new asked; new READY: the picker holds old and new.
#[test]
fn java_rr_pick_after_resolved_updated_hosts() {
    let (removed, old, new) = (R0, R1, R2);
    let (mut cc, mut rr) = rr_start(&[removed, old]);
    assert_eq!(cc.states(), [Connecting]);
    let (r, o) = (sc(&cc, removed), sc(&cc, old));
    set(&mut cc, &mut *rr, r, Ready);
    set(&mut cc, &mut *rr, o, Ready);
    assert_eq!(cc.states(), [Connecting, Ready, Ready]);
    rr_picks(&mut cc, &[removed, old]);
    let endpoints = vec![
        Endpoint::new(vec![Address::new(old).with_weight(7)]),
        Endpoint::from(Address::new(new)),
    ];
    cc.update(&mut *rr, ClientConnState::new(endpoints, None))
        .unwrap();
    while cc.run_work(&mut *rr) {}
    assert!(cc.shutdowns().contains(&r));
    assert!(!cc.shutdowns().contains(&o));
    assert_eq!(connects_to(&cc, old), 1);
    assert_eq!(connects_to(&cc, new), 1);
    rr_picks(&mut cc, &[old]);
    let n = sc(&cc, new);
    set(&mut cc, &mut *rr, n, Ready);
    assert_eq!(cc.subconns().len(), 3, "three subchannels created in all");
    rr_picks(&mut cc, &[old, new]);
}

/// stayTransientFailureUntilReady: each subchannel fails then goes
/// CONNECTING (backoff over): one TRANSIENT_FAILURE update, after the last
/// failure, and no other update until one is READY.
#[test]
fn java_rr_stay_transient_failure_until_ready() {
    let (mut cc, mut rr) = rr_start(&[R0, R1, R2]);
    for a in [R0, R1, R2] {
        let id = sc(&cc, a);
        fail(&mut cc, &mut *rr, id, "connection broken");
        set(&mut cc, &mut *rr, id, Connecting);
    }
    assert_eq!(cc.states(), [Connecting, TransientFailure]);
    let r0 = sc(&cc, R0);
    set(&mut cc, &mut *rr, r0, Ready);
    assert_eq!(cc.states(), [Connecting, TransientFailure, Ready]);
    rr_picks(&mut cc, &[R0]);
}

/// refreshNameResolutionWhenSubchannelConnectionBroken: each subchannel in
/// turn: CONNECTING, fails, READY (READY update), goes IDLE (GOAWAY):
/// re-resolution, a second connection request, and CONNECTING with the
/// queueing picker.
#[test]
fn java_rr_reconnects_a_subchannel_that_goes_idle() {
    let (mut cc, mut rr) = rr_start(&[R0, R1, R2]);
    let mut want = vec![Connecting];
    for a in [R0, R1, R2] {
        let id = sc(&cc, a);
        assert_eq!(connects_to(&cc, a), 1);
        set(&mut cc, &mut *rr, id, Connecting);
        fail(&mut cc, &mut *rr, id, "connection broken");
        set(&mut cc, &mut *rr, id, Ready);
        want.push(Ready);
        assert_eq!(cc.states(), want, "{a} READY");
        let res = cc.resolve_now_requests();
        set(&mut cc, &mut *rr, id, Idle);
        assert!(cc.resolve_now_requests() > res, "{a}: re-resolution");
        assert_eq!(connects_to(&cc, a), 2, "{a}: reconnection requested");
        want.push(Connecting);
        assert_eq!(cc.states(), want, "{a} IDLE");
        assert_eq!(cc.pick(), Picked::Queue);
    }
}

/// subchannelStateIsolation: three READY, one at a time (a READY update
/// each, the picker growing); 2 goes IDLE: dropped from the picker,
/// reconnection requested; 3 fails: dropped, no reconnection requested.
#[test]
fn java_rr_subchannel_state_isolation() {
    let (mut cc, mut rr) = rr_start(&[R0, R1, R2]);
    let (r0, r1, r2) = (sc(&cc, R0), sc(&cc, R1), sc(&cc, R2));
    set(&mut cc, &mut *rr, r0, Ready);
    rr_picks(&mut cc, &[R0]);
    set(&mut cc, &mut *rr, r1, Ready);
    rr_picks(&mut cc, &[R0, R1]);
    set(&mut cc, &mut *rr, r2, Ready);
    rr_picks(&mut cc, &[R0, R1, R2]);
    set(&mut cc, &mut *rr, r1, Idle);
    rr_picks(&mut cc, &[R0, R2]);
    assert_eq!(connects_to(&cc, R1), 2, "IDLE one reconnected");
    fail(&mut cc, &mut *rr, r2, "UNAVAILABLE");
    rr_picks(&mut cc, &[R0]);
    assert_eq!(connects_to(&cc, R2), 1, "failed one not asked again");
    assert_eq!(cc.states(), [Connecting, Ready, Ready, Ready, Ready, Ready]);
}

/// nameResolutionErrorWithNoChannels: a resolver error before any address:
/// TRANSIENT_FAILURE, picks fail with the resolver's error.
#[test]
fn java_rr_resolver_error_with_no_children() {
    let mut cc = TestClientConn::new();
    let mut rr = build("round_robin");
    cc.resolver_error(&mut *rr, "nameResolutionError");
    assert_eq!(cc.states(), [TransientFailure]);
    let msg = fail_message(&mut cc);
    assert!(msg.contains("nameResolutionError"), "{msg}");
    assert!(cc.subconns().is_empty());
}

/// emptyAddresses: an empty list is refused (not OK), and picks fail
/// UNAVAILABLE (grpc-java: "NameResolver returned no usable address.").
#[test]
fn java_rr_empty_addresses_refused() {
    let mut cc = TestClientConn::new();
    let mut rr = build("round_robin");
    let err = cc
        .update(&mut *rr, ClientConnState::new(vec![], None))
        .unwrap_err();
    assert_eq!(cc.state(), Some(TransientFailure));
    let msg = fail_message(&mut cc);
    eprintln!("empty list: returned {err:?}, picks fail with {msg:?}");
    assert!(
        msg.contains("zero addresses") || msg.contains("no usable address"),
        "{msg}"
    );
}

/// MultiChildLoadBalancer's endpoint map (`Endpoint` key: the address set,
/// order ignored; testEndpoint_equals): the same address listed as two
/// endpoints is one child; [a, b] and [b, a] are one endpoint.
#[test]
fn java_rr_duplicate_endpoints_are_one_child() {
    let mut cc = TestClientConn::new();
    let mut rr = build("round_robin");
    update(&mut cc, &mut *rr, &[R0, R0, R1]);
    assert_eq!(
        cc.subconns().len(),
        2,
        "one subchannel per distinct endpoint"
    );
    let (r0, r1) = (sc(&cc, R0), sc(&cc, R1));
    set(&mut cc, &mut *rr, r0, Ready);
    set(&mut cc, &mut *rr, r1, Ready);
    rr_picks(&mut cc, &[R0, R1]);

    let mut cc = TestClientConn::new();
    let mut rr = build("round_robin");
    let endpoints = vec![
        Endpoint::new(vec![Address::new(R0), Address::new(R1)]),
        Endpoint::new(vec![Address::new(R1), Address::new(R0)]),
        Endpoint::from(Address::new(R2)),
    ];
    cc.update(&mut *rr, ClientConnState::new(endpoints, None))
        .unwrap();
    assert_eq!(connects_to(&cc, R0), 1, "one child for {{R0, R1}}");
    assert_eq!(connects_to(&cc, R1), 0);
    assert_eq!(connects_to(&cc, R2), 1);
}

/// The same assertion as stayTransientFailureUntilReady for the other
/// policies grpc-java builds on MultiChildLoadBalancer (least_request,
/// weighted_round_robin; switchyard's ReadyEndpoints): once every endpoint
/// is failing, a backoff cycle (IDLE, reconnected, CONNECTING) of a child
/// in sticky TRANSIENT_FAILURE publishes nothing — the child published
/// nothing.
#[test]
fn java_endpoint_policies_stay_transient_failure_without_republishing() {
    for name in ["least_request", "weighted_round_robin"] {
        let (mut cc, mut lb) = {
            let mut cc = TestClientConn::new();
            let mut lb = build(name);
            update(&mut cc, &mut *lb, &[R0, R1, R2]);
            (cc, lb)
        };
        for a in [R0, R1, R2] {
            let id = sc(&cc, a);
            fail(&mut cc, &mut *lb, id, "connection broken");
        }
        assert_eq!(cc.states(), [Connecting, TransientFailure], "{name}");
        for a in [R0, R1, R2] {
            let id = sc(&cc, a);
            set(&mut cc, &mut *lb, id, Idle);
            set(&mut cc, &mut *lb, id, Connecting);
        }
        assert_eq!(
            cc.states(),
            [Connecting, TransientFailure],
            "{name}: a backoff cycle republished TRANSIENT_FAILURE"
        );
    }
}
