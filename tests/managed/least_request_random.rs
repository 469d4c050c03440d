//! least_request and random with real backends on 127.0.0.1: least_request
//! sends calls away from a backend with requests in flight and back once
//! they end (including picks dropped without done); random spreads calls
//! evenly.

use crate::support::*;
use switchyard::*;
use switchyard_testserver::TestServer;

const LEAST_REQUEST_3: &str =
    r#"{"loadBalancingConfig":[{"least_request_experimental":{"choiceCount":3}}]}"#;
const RANDOM: &str = r#"{"loadBalancingConfig":[{"random":{}}]}"#;

/// Calls until every backend has answered once (every one is READY).
fn warm_up(r: &mut Reader, servers: &[TestServer]) {
    let mut seen = vec![false; servers.len()];
    for _ in 0..500 {
        let port = echo(r, true).unwrap();
        if let Some(i) = servers.iter().position(|s| s.port() == port) {
            seen[i] = true;
        }
        if seen.iter().all(|s| *s) {
            return;
        }
    }
    panic!("not every backend answered: {seen:?}");
}

/// `n` sequential calls, counted per backend (in `servers` order).
fn spread(r: &mut Reader, servers: &[TestServer], n: usize) -> Vec<usize> {
    let mut counts = vec![0; servers.len()];
    for _ in 0..n {
        let port = echo(r, false).unwrap();
        let i = servers.iter().position(|s| s.port() == port).unwrap();
        counts[i] += 1;
    }
    counts
}

/// With picks held in flight on backends 1 and 2 and none on 0, a call
/// goes to backend 0 whenever one of its three draws does: 1 - (2/3)^3 =
/// 70 % of calls (uniform: 33 %). Once the held picks are dropped (without
/// `done`: the reader reports them), the calls spread evenly again, which
/// also shows that every call of the library's own decremented its count.
#[test]
fn least_request_avoids_backends_with_requests_in_flight() {
    let servers = start_servers(3);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), Some(LEAST_REQUEST_3), plaintext());
    let mut r = ch.reader();
    warm_up(&mut r, &servers);
    let addr0 = servers[0].addr().to_string();

    // Hold 10 picks on each of backends 1 and 2 (picks landing on 0 end
    // at once). Bounded: 0 is chosen only while it has fewest in flight.
    let mut picker = ch.reader();
    let (mut held, mut on) = (Vec::new(), [0usize; 3]);
    for _ in 0..10_000 {
        if on[1] >= 10 && on[2] >= 10 {
            break;
        }
        let pick = picker.try_pick(&PickInfo::default()).unwrap();
        assert!(pick.reports_outcome(), "least_request counts every pick");
        let addr = pick.subconn().addr().to_string();
        if addr == addr0 {
            pick.done(&DoneInfo::default());
        } else {
            let i = servers
                .iter()
                .position(|s| s.addr().to_string() == addr)
                .unwrap();
            on[i] += 1;
            held.push(pick);
        }
    }
    assert!(on[1] >= 10 && on[2] >= 10, "{on:?}");

    let skewed = spread(&mut r, &servers, 300);
    assert!(
        skewed[0] > 170,
        "backend 0 got {skewed:?}, want about 210 of 300"
    );

    drop(held);
    let even = spread(&mut r, &servers, 300);
    for (i, n) in even.iter().enumerate() {
        assert!(
            (60..=140).contains(n),
            "backend {i}: {even:?}, want about 100 each"
        );
    }
}

/// 600 calls over three backends: about 200 each (standard deviation 11.5).
#[test]
fn random_spreads_calls_evenly() {
    let servers = start_servers(3);
    let rt = Runtime::new().unwrap();
    let ch = channel(&rt, &target(&servers), Some(RANDOM), plaintext());
    let mut r = ch.reader();
    warm_up(&mut r, &servers);
    let pick = r.try_pick(&PickInfo::default()).unwrap();
    assert!(!pick.reports_outcome(), "random wants no outcome");
    drop(pick);
    let counts = spread(&mut r, &servers, 600);
    for (i, n) in counts.iter().enumerate() {
        assert!(
            (140..=260).contains(n),
            "backend {i}: {counts:?}, want about 200 each"
        );
    }
}
