//! round_robin: exact rotation over READY children only, per-child sticky
//! failure, pickers rebuilt only when the READY set changes.

use crate::support::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;

const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

fn rr(host: &Arc<Host>, list: &[&str]) -> (Runtime, Channel) {
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", Some(RR), options(host)).unwrap();
    ch.update_addresses(addrs(list)).unwrap();
    ch.sync().unwrap();
    (rt, ch)
}

#[test]
fn picks_only_ready_children() {
    let host = Host::new();
    let (_rt, ch) = rr(&host, &["a:1", "b:1", "c:1"]);
    report(&ch, &host, &["a:1", "c:1"], Ready);
    report(&ch, &host, &["b:1"], TransientFailure);
    let mut r = ch.reader();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        *seen.entry(pick_addr(&mut r)).or_default() += 1;
    }
    assert_eq!(seen.len(), 2);
    assert_eq!((seen["a:1"], seen["c:1"]), (50, 50));
}

#[test]
fn all_failed_fails_fast_with_a_child_error_and_wait_for_ready_waits() {
    let host = Host::new();
    let (_rt, ch) = rr(&host, &["a:1", "b:1"]);
    ch.report_subconn_state(host.id("a:1"), TransientFailure, "a refused")
        .unwrap();
    ch.report_subconn_state(host.id("b:1"), TransientFailure, "b refused")
        .unwrap();
    ch.sync().unwrap();
    assert_eq!(ch.state(), TransientFailure);
    let mut r = ch.reader();
    let mut msgs = HashSet::new();
    for _ in 0..4 {
        match r.pick(&PickInfo::default(), &PickOptions::default()) {
            Err(PickError::Unavailable(s)) => msgs.insert(s.message().to_string()),
            other => panic!("{other:?}"),
        };
    }
    assert_eq!(
        msgs,
        HashSet::from(["a refused".to_string(), "b refused".to_string()])
    );
    let e = r
        .pick(
            &PickInfo::default(),
            &PickOptions {
                deadline: Some(Instant::now() + Duration::from_millis(20)),
                wait_for_ready: true,
            },
        )
        .unwrap_err();
    assert!(
        matches!(e, PickError::DeadlineExceeded(m) if m.starts_with("latest balancer error: "))
    );
}

#[test]
fn picker_rebuilt_only_when_the_ready_set_changes() {
    let host = Host::new();
    let (_rt, ch) = rr(&host, &["a:1", "b:1", "c:1"]);
    report(&ch, &host, &["a:1", "b:1"], Ready);
    let g = ch.picker_generation();
    // c fails and backs off: the READY set does not change.
    report(&ch, &host, &["c:1"], TransientFailure);
    assert_eq!(ch.picker_generation(), g);
    // A late or duplicate report changes nothing either.
    report(&ch, &host, &["a:1"], Ready);
    assert_eq!(ch.picker_generation(), g);
    report(&ch, &host, &["b:1"], Idle);
    assert_eq!(ch.picker_generation(), g + 1, "b left the READY set");
    assert_eq!(pick_addr(&mut ch.reader()), "a:1");
    report(&ch, &host, &["b:1"], Ready);
    assert_eq!(ch.picker_generation(), g + 2, "b is back");
}

#[test]
fn duplicate_addresses_share_one_child() {
    let host = Host::new();
    let (_rt, ch) = rr(&host, &["a:1", "a:1", "b:1"]);
    assert_eq!(host.count(&Ev::Create("a:1".into())), 1);
    report(&ch, &host, &["a:1", "b:1"], Ready);
    let mut r = ch.reader();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        *seen.entry(pick_addr(&mut r)).or_default() += 1;
    }
    assert_eq!((seen["a:1"], seen["b:1"]), (50, 50));
}

#[test]
fn readers_start_at_random_offsets() {
    let host = Host::new();
    let list: Vec<String> = (0..16).map(|i| format!("n{i}:1")).collect();
    let list: Vec<&str> = list.iter().map(String::as_str).collect();
    let (_rt, ch) = rr(&host, &list);
    report(&ch, &host, &list, Ready);
    let firsts: HashSet<String> = (0..20).map(|_| pick_addr(&mut ch.reader())).collect();
    assert!(
        firsts.len() > 3,
        "readers all started at the same backend: {firsts:?}"
    );
}
