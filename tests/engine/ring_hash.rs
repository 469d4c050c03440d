//! ring_hash through a `Reader`, which finds READY endpoints from the
//! request hash in the policy's ring table inline and leaves the rest to
//! the picker: every kind of pick (owned, borrowed, kept, and the C ABI's
//! hit paths) sends each hash to the same endpoint; a hash landing on an
//! IDLE endpoint still connects it (gRFC A42), and endpoints in
//! TRANSIENT_FAILURE are skipped (A61).

use crate::support::*;
use switchyard::ConnectivityState::*;
use switchyard::*;

const RING: &str = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{}}]}"#;
const LIST: [&str; 4] = ["a:1", "b:1", "c:1", "d:1"];

fn hashes(n: u64) -> Vec<u64> {
    (0..n)
        .map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555)
        .collect()
}

/// Where each kind of pick sends `hash` (every pick finished OK); `None`
/// for a kind that got no subchannel. All agree, or the test fails.
fn where_to(r: &mut Reader, hash: u64) -> Option<String> {
    let info = PickInfo {
        hash: Some(hash),
        ..PickInfo::default()
    };
    let owned = r.try_pick(&info).ok().map(|p| {
        let addr = p.subconn().addr().to_string();
        p.done(&DoneInfo::OK);
        addr
    });
    let borrowed = r.try_pick_ref(&info).ok().map(|p| {
        let addr = p.subconn().addr().to_string();
        p.done(&DoneInfo::OK);
        addr
    });
    let kept = r.try_pick_kept(&info).ok().map(|sc| sc.addr().to_string());
    if kept.is_some() {
        assert!(r.finish_kept(&DoneInfo::OK));
    }
    // The C ABI's hit paths: `None` means "go the general way".
    let kept_cached = r.try_pick_kept_cached(Some(hash)).map(|e| e.id());
    if kept_cached.is_some() {
        assert!(r.finish_kept(&DoneInfo::OK));
    }
    let cached = r.try_pick_cached(Some(hash)).map(|(p, e)| {
        assert_eq!(p.subconn().id(), e.id());
        e.id()
    });
    assert_eq!(owned, borrowed, "hash {hash:#x}");
    assert_eq!(owned, kept, "hash {hash:#x}");
    // A hit (a READY endpoint; a publish in between may make either miss)
    // lands where the general way does.
    for id in [kept_cached, cached].into_iter().flatten() {
        let addr = owned.as_deref().expect("a hit where the general way picks");
        let general = r.try_pick(&info).unwrap().subconn().id();
        assert_eq!(id, general, "hash {hash:#x} on {addr}");
    }
    owned
}

#[test]
fn every_kind_of_pick_sends_each_hash_to_the_same_endpoint() {
    let host = Host::new();
    let rt = Runtime::new().unwrap();
    let options = ChannelOptions {
        backoff: BackoffConfig {
            initial: std::time::Duration::from_secs(3600),
            ..BackoffConfig::default()
        },
        ..options(&host)
    };
    let ch = Channel::new(&rt, "", Some(RING), options).unwrap();
    ch.update_addresses(addrs(&LIST)).unwrap();
    ch.sync().unwrap();
    let mut r = ch.reader();
    let keys = hashes(300);

    // Nothing is connected until a pick lands on an endpoint: then every
    // kind of pick queues, and that endpoint (only) is asked to connect.
    let first = keys[0];
    assert_eq!(where_to(&mut r, first), None);
    host.wait("the endpoint the pick landed on connects", |evs| {
        evs.iter().any(|e| matches!(e, Ev::Connect(_)))
    });
    let connected = |host: &Host| -> Vec<String> {
        host.events()
            .iter()
            .filter_map(|e| match e {
                Ev::Connect(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    };
    let landed = connected(&host);
    assert_eq!(landed.len(), 1, "{landed:?}");
    report(&ch, &host, &[landed[0].as_str()], Ready);
    ch.sync().unwrap();
    assert_eq!(where_to(&mut r, first).as_deref(), Some(landed[0].as_str()));

    // Every hash's pick connects its endpoint, until all are READY.
    for _ in 0..LIST.len() {
        for k in &keys {
            let _ = where_to(&mut r, *k);
        }
        ch.sync().unwrap();
        let up = connected(&host);
        report(
            &ch,
            &host,
            &up.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            Ready,
        );
        ch.sync().unwrap();
    }
    let owners: Vec<String> = keys
        .iter()
        .map(|k| where_to(&mut r, *k).expect("every endpoint READY"))
        .collect();
    for a in LIST {
        assert!(owners.iter().any(|o| o == a), "{a} owns some of 300 keys");
    }
    // The same again: each hash stays where it went, and with every
    // endpoint READY the C ABI's hit path (the inline table) finds it.
    for (k, owner) in keys.iter().zip(&owners) {
        assert_eq!(where_to(&mut r, *k).as_ref(), Some(owner));
        let hit = r.try_pick_kept_cached(Some(*k)).expect("an inline hit");
        assert_eq!(hit.id(), host.id(owner));
        assert!(r.finish_kept(&DoneInfo::OK));
    }

    // b:1's connection drops: its endpoint goes IDLE, and a pick landing
    // there connects it again (and queues); that attempt fails, and the
    // next waits out the backoff (an hour here): b:1 stays in
    // TRANSIENT_FAILURE. Its hashes move on to the next endpoint on the
    // ring, the others stay; no kind of pick lands on b:1.
    report(&ch, &host, &["b:1"], TransientFailure);
    ch.sync().unwrap();
    let on_b = keys[owners.iter().position(|o| o == "b:1").unwrap()];
    assert_eq!(where_to(&mut r, on_b), None);
    host.wait("b:1 connects again", |evs| {
        evs.iter()
            .filter(|e| **e == Ev::Connect("b:1".into()))
            .count()
            == 2
    });
    report(&ch, &host, &["b:1"], TransientFailure);
    ch.sync().unwrap();
    for (k, owner) in keys.iter().zip(&owners) {
        let now = where_to(&mut r, *k).expect("the next READY endpoint");
        assert_ne!(now, "b:1");
        if owner != "b:1" {
            assert_eq!(&now, owner, "only the failing endpoint's hashes move");
        }
    }
}
