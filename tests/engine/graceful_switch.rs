//! Graceful policy switch, rule by rule (gRPC-Go's gracefulswitch tests),
//! driven through a channel with the external connector: which policy's
//! picker is published, when the new one is swapped in, and what reaches the
//! old one until it is closed.

use crate::support::*;
use std::sync::{Arc, Mutex};
use switchyard::ConnectivityState::*;
use switchyard::*;

const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
const PF: &str = r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#;

/// A channel, its host, and every state it published.
fn setup(
    config: Option<&str>,
) -> (
    Runtime,
    Channel,
    Arc<Host>,
    Arc<Mutex<Vec<ConnectivityState>>>,
) {
    // A clock that stands still: no timer of a policy (pick_first's Happy
    // Eyeballs delay, backoffs) fires behind a test's back, however slowly
    // it runs (Miri).
    let rt = Runtime::with_config(RuntimeConfig {
        clock: Arc::new(ManualClock::new()),
        seed: None,
    })
    .unwrap();
    let host = Host::new();
    let states = Arc::new(Mutex::new(Vec::new()));
    let mut opts = options(&host);
    let seen = states.clone();
    opts.on_state_change = Some(Arc::new(move |s| seen.lock().unwrap().push(s)));
    let ch = Channel::new(&rt, "", config, opts).unwrap();
    (rt, ch, host, states)
}

/// The subchannel a fresh pick lands on.
fn pick_id(ch: &Channel) -> SubConnId {
    ch.reader()
        .try_pick(&PickInfo::default())
        .expect("pick")
        .subconn()
        .id()
}

/// The subchannels several fresh picks land on.
fn pick_ids(ch: &Channel, n: usize) -> std::collections::HashSet<SubConnId> {
    let mut r = ch.reader();
    (0..n)
        .map(|_| {
            r.try_pick(&PickInfo::default())
                .expect("pick")
                .subconn()
                .id()
        })
        .collect()
}

fn shutdowns(ev: &[Ev]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            Ev::Shutdown(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// pick_first READY on a:1 (its subchannel's id returned).
fn pick_first_ready(ch: &Channel, host: &Host) -> SubConnId {
    ch.update_addresses(addrs(&["a:1", "b:1"])).unwrap();
    ch.sync().unwrap();
    report(ch, host, &["a:1"], Ready);
    assert_eq!(ch.state(), Ready);
    host.id("a:1")
}

#[test]
fn a_connecting_pending_policy_waits_while_the_current_one_serves() {
    let (_rt, ch, host, states) = setup(None);
    let old = pick_first_ready(&ch, &host);
    host.take();
    ch.update_service_config(RR).unwrap();
    ch.sync().unwrap();
    let ev = host.take();
    assert!(
        ev.contains(&Ev::Connect("a:1".into())) && ev.contains(&Ev::Connect("b:1".into())),
        "round_robin is built beside pick_first and connects: {ev:?}"
    );
    assert!(
        shutdowns(&ev).is_empty(),
        "nothing of the old policy goes yet: {ev:?}"
    );
    assert_eq!(ch.state(), Ready);
    assert_eq!(pick_id(&ch), old, "pick_first still serves");

    // One round_robin subchannel READY: round_robin is READY, swapped in.
    report(&ch, &host, &["b:1"], Ready);
    let fresh_b = host.id("b:1");
    assert_eq!(pick_ids(&ch, 4), [fresh_b].into(), "round_robin serves");
    assert_eq!(
        shutdowns(&host.take()),
        ["a:1"],
        "then pick_first's subchannel goes"
    );
    assert_eq!(
        *states.lock().unwrap(),
        [Connecting, Ready],
        "never left READY"
    );
}

#[test]
fn a_pending_policy_in_transient_failure_is_swapped_in() {
    let (_rt, ch, host, states) = setup(None);
    pick_first_ready(&ch, &host);
    ch.update_service_config(RR).unwrap();
    ch.sync().unwrap();
    host.take();
    report(&ch, &host, &["a:1", "b:1"], TransientFailure);
    assert_eq!(
        ch.state(),
        TransientFailure,
        "round_robin's state is published"
    );
    assert_eq!(shutdowns(&host.take()), ["a:1"], "pick_first is closed");
    let e = ch
        .reader()
        .try_pick(&PickInfo::default())
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("test report"), "{e}");
    assert_eq!(
        *states.lock().unwrap(),
        [Connecting, Ready, TransientFailure]
    );
}

#[test]
fn the_current_policy_leaving_ready_swaps_in_the_pending_one() {
    let (_rt, ch, host, states) = setup(None);
    let old = pick_first_ready(&ch, &host);
    ch.update_service_config(RR).unwrap();
    ch.sync().unwrap();
    host.take();
    // pick_first's connection ends: it would go IDLE; round_robin (still
    // CONNECTING) takes over at once instead.
    ch.report_subconn_state(old, Idle, "lost").unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), Connecting);
    let ev = host.take();
    assert_eq!(shutdowns(&ev), ["a:1"], "{ev:?}");
    assert!(
        !ev.iter().any(|e| matches!(e, Ev::Connect(_))),
        "the old policy is not asked to reconnect: {ev:?}"
    );
    report(&ch, &host, &["a:1"], Ready);
    assert_eq!(ch.state(), Ready);
    assert_eq!(pick_ids(&ch, 4), [host.id("a:1")].into());
    assert_eq!(
        *states.lock().unwrap(),
        [Connecting, Ready, Connecting, Ready]
    );
}

#[test]
fn a_switch_away_from_a_policy_that_is_not_ready_is_immediate() {
    let (_rt, ch, host, _states) = setup(None);
    ch.update_addresses(addrs(&["a:1", "b:1"])).unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), Connecting);
    host.take();
    ch.update_service_config(RR).unwrap();
    ch.sync().unwrap();
    let ev = host.take();
    assert_eq!(
        shutdowns(&ev),
        ["a:1"],
        "round_robin's first state swaps it in and pick_first goes: {ev:?}"
    );
    report(&ch, &host, &["a:1", "b:1"], Ready);
    assert_eq!(pick_ids(&ch, 8).len(), 2, "round_robin serves both");
}

#[test]
fn the_old_policy_hears_its_subchannels_until_it_is_closed() {
    let (_rt, ch, host, _states) = setup(Some(RR));
    ch.update_addresses(addrs(&["a:1", "b:1"])).unwrap();
    ch.sync().unwrap();
    report(&ch, &host, &["a:1", "b:1"], Ready);
    let (old_a, old_b) = (host.id("a:1"), host.id("b:1"));
    assert_eq!(pick_ids(&ch, 8), [old_a, old_b].into());

    ch.update_service_config(PF).unwrap();
    ch.sync().unwrap();
    host.take();
    // round_robin is still current: it hears b:1 go and stops picking it.
    ch.report_subconn_state(old_b, Idle, "lost").unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), Ready);
    assert_eq!(pick_ids(&ch, 8), [old_a].into(), "round_robin saw b:1 go");
    // It reconnects its IDLE child, as round_robin does.
    assert!(host.take().contains(&Ev::Connect("b:1".into())));

    // pick_first READY: swapped in; round_robin's subchannels shut down.
    report(&ch, &host, &["a:1"], Ready);
    let new_a = host.id("a:1");
    assert_eq!(pick_ids(&ch, 8), [new_a].into());
    let mut gone = shutdowns(&host.take());
    gone.sort();
    assert_eq!(gone, ["a:1", "b:1"]);
    // Late words from the closed policy's subchannels reach nobody.
    ch.report_subconn_state(old_a, Idle, "late").unwrap();
    ch.sync().unwrap();
    assert_eq!(pick_ids(&ch, 8), [new_a].into());
    assert_eq!(ch.state(), Ready);
}

#[test]
fn a_newer_switch_replaces_the_pending_policy_and_same_name_is_an_update() {
    let (_rt, ch, host, states) = setup(None);
    let old = pick_first_ready(&ch, &host);
    ch.update_service_config(RR).unwrap();
    ch.sync().unwrap();
    host.take();
    // Back to pick_first while round_robin is pending: a new pick_first is
    // pending in its place (as in gRPC-Go); round_robin goes; the old one
    // still serves.
    ch.update_service_config(PF).unwrap();
    ch.sync().unwrap();
    let ev = host.take();
    let mut gone = shutdowns(&ev);
    gone.sort();
    assert_eq!(gone, ["a:1", "b:1"], "round_robin's subchannels: {ev:?}");
    assert_eq!(pick_id(&ch), old);
    assert_eq!(ch.state(), Ready);
    // The same policy again (the deprecated field, which takes any case):
    // an update of the pending one, nothing rebuilt.
    ch.update_service_config(r#"{"loadBalancingPolicy":"PICK_FIRST"}"#)
        .unwrap();
    ch.sync().unwrap();
    assert!(
        !host
            .take()
            .iter()
            .any(|e| matches!(e, Ev::Create(_) | Ev::Shutdown(_))),
        "no churn"
    );
    report(&ch, &host, &["a:1"], Ready);
    let new = host.id("a:1");
    assert_ne!(new, old);
    assert_eq!(pick_id(&ch), new);
    assert_eq!(shutdowns(&host.take()), ["a:1"]);
    assert_eq!(*states.lock().unwrap(), [Connecting, Ready]);
}
