//! random through a `Reader`, which draws from the policy's table inline:
//! every kind of pick spreads evenly over the READY endpoints only, and
//! follows the READY set as it changes.

use crate::support::*;
use switchyard::ConnectivityState::*;
use switchyard::*;

const RANDOM: &str = r#"{"loadBalancingConfig":[{"random":{}}]}"#;

#[test]
fn every_kind_of_pick_spreads_evenly_over_the_ready_endpoints() {
    let host = Host::new();
    let rt = Runtime::new().unwrap();
    let ch = Channel::new(&rt, "", Some(RANDOM), options(&host)).unwrap();
    ch.update_addresses(addrs(&["a:1", "b:1", "c:1", "d:1"]))
        .unwrap();
    host.wait("all connecting", |evs| {
        evs.iter().filter(|e| matches!(e, Ev::Connect(_))).count() == 4
    });
    report(&ch, &host, &["a:1", "b:1", "c:1"], Ready);
    report(&ch, &host, &["d:1"], TransientFailure);
    // The policy rebuilds its picker in a `work` it queued behind the reports.
    ch.sync().unwrap();
    let mut r = ch.reader();
    for kind in PICK_KINDS {
        let seen = split_by_kind(&mut r, kind, 6000, |_| Vec::new());
        assert_eq!(seen.len(), 3, "{kind}: READY endpoints only: {seen:?}");
        assert!(
            seen.values().all(|n| (1700..=2300).contains(n)),
            "{kind}: about 2000 each: {seen:?}"
        );
    }
    // b:1 leaves READY: the next picks (a new table) never land on it.
    report(&ch, &host, &["b:1"], TransientFailure);
    ch.sync().unwrap();
    for kind in PICK_KINDS {
        let seen = split_by_kind(&mut r, kind, 2000, |_| Vec::new());
        assert_eq!(seen.len(), 2, "{kind}: {seen:?}");
        assert!(!seen.contains_key("b:1"), "{kind}: {seen:?}");
    }
}
