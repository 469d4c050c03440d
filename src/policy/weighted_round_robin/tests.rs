//! weighted_round_robin through `TestClientConn`: its manual clock drives
//! the weight-update timer, and load reports go through the picks' own done
//! hooks, as a reader's `Pick::done` delivers them.

use super::*;
use crate::balancer::picker::{DoneInfo, PickInfo, PickLocal, PickResult};
use crate::balancer::testing::{Picked, TestClientConn};
use crate::policy::registry;
use std::collections::HashMap;

const SECOND: Duration = Duration::from_secs(1);

fn addrs(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("127.0.0.1:{}", 1000 + i)).collect()
}

/// A WRR policy over `n` READY endpoints, with `config`.
fn ready(n: usize, config: serde_json::Value) -> (TestClientConn, Box<dyn Balancer>) {
    let builder = registry::get(NAME).expect("registered");
    let config = builder.parse_config(&config).unwrap();
    let mut wrr = builder.build();
    let mut cc = TestClientConn::new();
    let addresses = addrs(n).into_iter().map(crate::Address::new).collect();
    cc.update(
        &mut *wrr,
        ClientConnState::from_addresses(addresses, config),
    )
    .unwrap();
    for id in cc.connects().to_vec() {
        cc.set_state(&mut *wrr, id, ConnectivityState::Ready);
    }
    // One rebuild for all of them, when the loop runs the work they asked for.
    assert_eq!(cc.state(), Some(ConnectivityState::Connecting));
    assert_eq!(cc.work_requests(), 1);
    assert!(cc.run_work(&mut *wrr));
    assert_eq!(cc.state(), Some(ConnectivityState::Ready));
    (cc, wrr)
}

/// Delivers a subchannel state and runs the rebuild it asked for, as the
/// loop does right after.
fn set(cc: &mut TestClientConn, wrr: &mut dyn Balancer, id: SubConnId, s: ConnectivityState) {
    cc.set_state(wrr, id, s);
    cc.run_work(wrr);
}

/// Picks `picks` times; each pick's done hooks get the load `load` gives
/// its endpoint (by index), as a finished RPC would report it.
fn report(cc: &TestClientConn, picks: usize, load: impl Fn(usize) -> Vec<(&'static str, f64)>) {
    let picker = cc.picker().unwrap().clone();
    let mut local = PickLocal::new(7);
    let index: HashMap<String, usize> = addrs(64)
        .into_iter()
        .enumerate()
        .map(|(i, a)| (a, i))
        .collect();
    for _ in 0..picks {
        match picker.pick(&PickInfo::default(), &mut local) {
            PickResult::Complete { subconn, done } => {
                let l = load(index[subconn.addr()]);
                done.report(
                    subconn,
                    &DoneInfo {
                        load: &l,
                        ..Default::default()
                    },
                );
            }
            _ => panic!("a READY picker completes every pick"),
        }
    }
}

/// qps = `weights[i]` at utilization 1: endpoint i weighs `weights[i]`.
fn qps_load(weights: &[f64]) -> impl Fn(usize) -> Vec<(&'static str, f64)> + '_ {
    move |i| {
        vec![
            ("rps_fractional", weights[i]),
            ("application_utilization", 1.0),
        ]
    }
}

/// Each endpoint's share of `n` picks, by endpoint index.
fn shares(cc: &mut TestClientConn, endpoints: usize, n: usize) -> Vec<f64> {
    let mut counts = vec![0usize; endpoints];
    for p in cc.picks(n) {
        let id = p.expect("READY picks complete");
        let addr = cc.subconn(id).unwrap().addr().to_string();
        let i = addrs(endpoints).iter().position(|a| *a == addr).unwrap();
        counts[i] += 1;
    }
    counts.iter().map(|c| *c as f64 / n as f64).collect()
}

/// Every share within 1 % (relative) of its weight's share.
fn assert_follows(got: &[f64], weights: &[f64]) {
    let total: f64 = weights.iter().sum();
    for (g, w) in got.iter().zip(weights) {
        let want = w / total;
        assert!(
            (g - want).abs() <= 0.01 * want,
            "shares {got:?}, want {:?}",
            weights.iter().map(|w| w / total).collect::<Vec<_>>()
        );
    }
}

fn assert_even(got: &[f64]) {
    let want = 1.0 / got.len() as f64;
    for g in got {
        assert!((g - want).abs() <= 0.01 * want, "shares {got:?}, want even");
    }
}

#[test]
fn picks_follow_the_weights_within_1_percent_after_the_blackout() {
    for weights in [[1.0, 2.0, 3.0], [17.0, 23.0, 37.0]] {
        let (mut cc, mut wrr) = ready(3, serde_json::json!({}));
        // Before any report: plain round robin, each pick carrying the hook.
        assert!(matches!(cc.pick(), Picked::Complete { hooks: 1, .. }));
        report(&cc, 300, qps_load(&weights));
        // Reports count only after the 10 s blackout.
        cc.advance(&mut *wrr, 5 * SECOND);
        report(&cc, 300, qps_load(&weights));
        assert_even(&shares(&mut cc, 3, 100_000));
        cc.advance(&mut *wrr, 6 * SECOND);
        assert_follows(&shares(&mut cc, 3, 100_000), &weights);
    }
}

/// A58: a report's time is when it arrived, not when the next update saw
/// it: reports at t0 count at the update at t0 + blackout.
#[test]
fn the_blackout_runs_from_the_first_report_itself() {
    let weights = [1.0, 2.0, 3.0];
    let (mut cc, mut wrr) = ready(3, serde_json::json!({"weightUpdatePeriod": "1s"}));
    report(&cc, 300, qps_load(&weights));
    cc.advance(&mut *wrr, 10 * SECOND - Duration::from_millis(1));
    assert_even(&shares(&mut cc, 3, 30_000));
    cc.advance(&mut *wrr, Duration::from_millis(1));
    assert_follows(&shares(&mut cc, 3, 100_000), &weights);
    // Expiry too counts from the last report's arrival: 3 minutes on.
    cc.advance(&mut *wrr, 170 * SECOND - Duration::from_millis(1));
    assert_follows(&shares(&mut cc, 3, 100_000), &weights);
    cc.advance(&mut *wrr, Duration::from_millis(1));
    assert_even(&shares(&mut cc, 3, 30_000));
}

#[test]
fn new_reports_move_the_picks_at_the_next_update() {
    let (mut cc, mut wrr) = ready(3, serde_json::json!({"blackoutPeriod": "2s"}));
    report(&cc, 300, qps_load(&[1.0, 2.0, 3.0]));
    cc.advance(&mut *wrr, 3 * SECOND);
    assert_follows(&shares(&mut cc, 3, 100_000), &[1.0, 2.0, 3.0]);
    // The load shifts: endpoint 0 becomes the lightest-loaded.
    report(&cc, 300, qps_load(&[6.0, 2.0, 1.0]));
    // Not before the schedule is rebuilt ...
    assert_follows(&shares(&mut cc, 3, 100_000), &[1.0, 2.0, 3.0]);
    // ... then at once: these endpoints are past their blackout.
    cc.advance(&mut *wrr, SECOND);
    assert_follows(&shares(&mut cc, 3, 100_000), &[6.0, 2.0, 1.0]);
}

#[test]
fn weights_expire_to_round_robin_and_blackout_applies_again() {
    let (mut cc, mut wrr) = ready(
        3,
        serde_json::json!({"blackoutPeriod": "2s", "weightExpirationPeriod": "10s"}),
    );
    report(&cc, 300, qps_load(&[1.0, 2.0, 3.0]));
    cc.advance(&mut *wrr, 3 * SECOND);
    assert_follows(&shares(&mut cc, 3, 30_000), &[1.0, 2.0, 3.0]);
    cc.advance(&mut *wrr, 10 * SECOND);
    assert_even(&shares(&mut cc, 3, 30_000));
    // Reports again: the blackout runs again from the first of them.
    report(&cc, 300, qps_load(&[1.0, 2.0, 3.0]));
    cc.advance(&mut *wrr, SECOND);
    assert_even(&shares(&mut cc, 3, 30_000));
    cc.advance(&mut *wrr, 2 * SECOND);
    assert_follows(&shares(&mut cc, 3, 30_000), &[1.0, 2.0, 3.0]);
}

#[test]
fn an_endpoint_back_to_ready_waits_out_a_new_blackout() {
    let (mut cc, mut wrr) = ready(3, serde_json::json!({"blackoutPeriod": "5s"}));
    let weights = [1.0, 2.0, 3.0];
    report(&cc, 300, qps_load(&weights));
    cc.advance(&mut *wrr, 6 * SECOND);
    assert_follows(&shares(&mut cc, 3, 30_000), &weights);
    // Endpoint 2 loses its connection and gets it back.
    let sc = cc.subconn_for(&addrs(3)[2]).unwrap().id();
    set(&mut cc, &mut *wrr, sc, ConnectivityState::Idle);
    set(&mut cc, &mut *wrr, sc, ConnectivityState::Connecting);
    set(&mut cc, &mut *wrr, sc, ConnectivityState::Ready);
    report(&cc, 300, qps_load(&weights));
    cc.advance(&mut *wrr, SECOND);
    // Endpoint 2 has no usable weight: it gets the mean of the others (1.5).
    assert_follows(&shares(&mut cc, 3, 30_000), &[1.0, 2.0, 1.5]);
    cc.advance(&mut *wrr, 5 * SECOND);
    assert_follows(&shares(&mut cc, 3, 30_000), &weights);
}

#[test]
fn a_report_from_before_a_reconnect_does_not_count_after_it() {
    let (mut cc, mut wrr) = ready(3, serde_json::json!({"blackoutPeriod": "1s"}));
    let weights = [1.0, 2.0, 3.0];
    report(&cc, 300, qps_load(&weights));
    cc.advance(&mut *wrr, 2 * SECOND);
    assert_follows(&shares(&mut cc, 3, 30_000), &weights);
    // Endpoint 2 reports a much higher weight just before it loses its
    // connection (no rebuild saw that report), gets it back, and then never
    // reports again while the others do.
    report(&cc, 300, qps_load(&[1.0, 2.0, 30.0]));
    let sc = cc.subconn_for(&addrs(3)[2]).unwrap().id();
    set(&mut cc, &mut *wrr, sc, ConnectivityState::Idle);
    set(&mut cc, &mut *wrr, sc, ConnectivityState::Connecting);
    set(&mut cc, &mut *wrr, sc, ConnectivityState::Ready);
    for _ in 0..3 {
        report(&cc, 300, |i| match i {
            2 => vec![],
            _ => qps_load(&weights)(i),
        });
        cc.advance(&mut *wrr, SECOND);
    }
    // As gRPC: a weight needs a report after READY; until then, the mean.
    assert_follows(&shares(&mut cc, 3, 30_000), &[1.0, 2.0, 1.5]);
}

#[test]
fn endpoints_without_a_weight_get_the_mean() {
    let (mut cc, mut wrr) = ready(3, serde_json::json!({"blackoutPeriod": "0s"}));
    // Endpoint 2 never reports.
    report(&cc, 300, |i| match i {
        2 => vec![],
        _ => qps_load(&[1.0, 3.0, 0.0])(i),
    });
    cc.advance(&mut *wrr, SECOND);
    assert_follows(&shares(&mut cc, 3, 100_000), &[1.0, 3.0, 2.0]);
}

#[test]
fn weights_survive_address_updates() {
    let (mut cc, mut wrr) = ready(2, serde_json::json!({"blackoutPeriod": "0s"}));
    report(&cc, 300, qps_load(&[1.0, 3.0]));
    cc.advance(&mut *wrr, SECOND);
    assert_follows(&shares(&mut cc, 2, 40_000), &[1.0, 3.0]);
    // A third endpoint joins: the first two keep their weights.
    let config = registry::get(NAME)
        .unwrap()
        .parse_config(&serde_json::json!({"blackoutPeriod": "0s"}))
        .unwrap();
    let addresses = addrs(3).into_iter().map(crate::Address::new).collect();
    cc.update(
        &mut *wrr,
        ClientConnState::from_addresses(addresses, config),
    )
    .unwrap();
    let third = cc.subconn_for(&addrs(3)[2]).unwrap().id();
    set(&mut cc, &mut *wrr, third, ConnectivityState::Ready);
    // The newcomer has no weight: the mean (2).
    assert_follows(&shares(&mut cc, 3, 60_000), &[1.0, 3.0, 2.0]);
}

#[test]
fn oob_mode_ignores_per_call_reports() {
    let (mut cc, mut wrr) = ready(
        3,
        serde_json::json!({"enableOobLoadReport": true, "blackoutPeriod": "0s"}),
    );
    report(&cc, 300, qps_load(&[1.0, 2.0, 3.0]));
    cc.advance(&mut *wrr, SECOND);
    assert_even(&shares(&mut cc, 3, 30_000));
}

/// The subchannel of endpoint `i`.
fn sc(cc: &TestClientConn, i: usize) -> SubConnId {
    cc.subconn_for(&addrs(64)[i]).expect("a subchannel").id()
}

#[test]
fn oob_reports_weigh_the_endpoints_with_no_per_call_report_at_all() {
    let config = serde_json::json!({
        "enableOobLoadReport": true,
        "oobReportingPeriod": "2s",
        "blackoutPeriod": "0s",
    });
    let (mut cc, mut wrr) = ready(3, config);
    // One listener per READY endpoint, on its subchannel, at the period.
    let mut want: Vec<(SubConnId, Duration)> = (0..3).map(|i| (sc(&cc, i), 2 * SECOND)).collect();
    let mut got = cc.oob_listeners();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let weights = [1.0, 2.0, 3.0];
    let load = qps_load(&weights);
    for i in 0..3 {
        assert_eq!(cc.oob_report(sc(&cc, i), &load(i)), 1);
    }
    cc.advance(&mut *wrr, SECOND);
    assert_follows(&shares(&mut cc, 3, 100_000), &weights);
    // New OOB reports move the picks at the next update, as per-call ones do.
    let load = qps_load(&[6.0, 2.0, 1.0]);
    for i in 0..3 {
        cc.oob_report(sc(&cc, i), &load(i));
    }
    cc.advance(&mut *wrr, SECOND);
    assert_follows(&shares(&mut cc, 3, 100_000), &[6.0, 2.0, 1.0]);
}

#[test]
fn oob_listeners_follow_ready_the_config_and_the_policys_life() {
    let on = |period: &str| serde_json::json!({"enableOobLoadReport": true, "oobReportingPeriod": period});
    let (mut cc, mut wrr) = ready(3, on("10s"));
    assert_eq!(cc.oob_listeners().len(), 3);
    // An endpoint that leaves READY stops listening; back READY, it listens again.
    let first = sc(&cc, 0);
    set(&mut cc, &mut *wrr, first, ConnectivityState::Idle);
    assert_eq!(cc.oob_listeners().len(), 2);
    assert!(cc.oob_listeners().iter().all(|(s, _)| *s != first));
    set(&mut cc, &mut *wrr, first, ConnectivityState::Connecting);
    set(&mut cc, &mut *wrr, first, ConnectivityState::Ready);
    assert_eq!(cc.oob_listeners().len(), 3);
    let update = |cc: &mut TestClientConn, wrr: &mut dyn Balancer, n: usize, c| {
        let config = registry::get(NAME).unwrap().parse_config(&c).unwrap();
        let addresses = addrs(n).into_iter().map(crate::Address::new).collect();
        cc.update(wrr, ClientConnState::from_addresses(addresses, config))
            .unwrap();
    };
    // A new period re-registers with it.
    update(&mut cc, &mut *wrr, 3, on("3s"));
    let periods: Vec<Duration> = cc.oob_listeners().iter().map(|l| l.1).collect();
    assert_eq!(periods, vec![3 * SECOND; 3]);
    // A removed endpoint stops listening.
    update(&mut cc, &mut *wrr, 2, on("3s"));
    assert_eq!(cc.oob_listeners().len(), 2);
    // OOB switched off: no listener; per-call reports count again.
    update(
        &mut cc,
        &mut *wrr,
        2,
        serde_json::json!({"blackoutPeriod": "0s"}),
    );
    assert!(cc.oob_listeners().is_empty());
    report(&cc, 300, qps_load(&[1.0, 3.0]));
    cc.advance(&mut *wrr, SECOND);
    assert_follows(&shares(&mut cc, 2, 40_000), &[1.0, 3.0]);
    update(&mut cc, &mut *wrr, 2, on("3s"));
    assert_eq!(cc.oob_listeners().len(), 2);
    cc.close(&mut *wrr);
    assert!(
        cc.oob_listeners().is_empty(),
        "close unregisters every listener"
    );
}

#[test]
fn a_failed_calls_load_report_counts_with_its_errors() {
    let (mut cc, mut wrr) = ready(2, serde_json::json!({"blackoutPeriod": "0s"}));
    // Both serve 100 qps at utilization 0.5; endpoint 0's calls fail at
    // 50 eps, and its reports come with the failures (as a server attaches
    // the trailer to an error status): 100 / (0.5 + 50/100) = 100 against 200.
    let picker = cc.picker().unwrap().clone();
    let mut local = PickLocal::new(3);
    for _ in 0..200 {
        let PickResult::Complete { subconn, done } = picker.pick(&PickInfo::default(), &mut local)
        else {
            panic!("a READY picker completes every pick");
        };
        let (eps, code) = if subconn.id() == sc(&cc, 0) {
            (50.0, crate::Code::Unavailable)
        } else {
            (0.0, crate::Code::Ok)
        };
        let load = [
            ("rps_fractional", 100.0),
            ("cpu_utilization", 0.5),
            ("eps", eps),
        ];
        done.report(
            subconn,
            &DoneInfo {
                code,
                error: (code != crate::Code::Ok).then_some("backend overloaded"),
                load: &load,
                ..Default::default()
            },
        );
    }
    cc.advance(&mut *wrr, SECOND);
    assert_follows(&shares(&mut cc, 2, 60_000), &[100.0, 200.0]);
}

#[test]
fn the_timer_runs_at_the_update_period_and_stops_on_close() {
    let (mut cc, mut wrr) = ready(2, serde_json::json!({"weightUpdatePeriod": "0.01s"}));
    // Floored at 100 ms.
    let timers = cc.timers();
    assert_eq!(timers.len(), 1);
    assert_eq!(cc.advance(&mut *wrr, Duration::from_millis(99)), 0);
    assert_eq!(cc.advance(&mut *wrr, Duration::from_millis(1)), 1);
    assert_eq!(cc.advance(&mut *wrr, SECOND), 10);
    cc.close(&mut *wrr);
    assert!(cc.timers().is_empty());
    assert_eq!(cc.shutdowns().len(), 2);
}

#[test]
fn no_addresses_fails_and_states_aggregate_as_round_robin() {
    let (mut cc, mut wrr) = ready(2, serde_json::json!({}));
    let ids: Vec<_> = cc.subconns().iter().map(|s| s.id()).collect();
    set(
        &mut cc,
        &mut *wrr,
        ids[0],
        ConnectivityState::TransientFailure,
    );
    assert_eq!(cc.state(), Some(ConnectivityState::Ready));
    assert_eq!(cc.picks(4), vec![Some(ids[1]); 4]);
    set(
        &mut cc,
        &mut *wrr,
        ids[1],
        ConnectivityState::TransientFailure,
    );
    assert_eq!(cc.state(), Some(ConnectivityState::TransientFailure));
    assert!(matches!(cc.pick(), Picked::Fail(_)));
    let err = cc.update_addresses(&mut *wrr, []).unwrap_err();
    assert!(err.contains("zero addresses"), "{err}");
    assert_eq!(cc.state(), Some(ConnectivityState::TransientFailure));
}

#[test]
fn the_weight_is_qps_over_utilization_plus_penalised_errors() {
    let c = WrrConfig::default();
    let w = |load: &[(&str, f64)], c: &WrrConfig| weight_from_report(load, c);
    // 100 / (0.5 + 10/100 × 1.0)
    let load = [
        ("rps_fractional", 100.0),
        ("eps", 10.0),
        ("cpu_utilization", 0.5),
    ];
    assert!((w(&load, &c).unwrap() - 100.0 / 0.6).abs() < 1e-9);
    let c2 = WrrConfig {
        error_utilization_penalty: 2.0,
        ..WrrConfig::default()
    };
    assert!((w(&load, &c2).unwrap() - 100.0 / 0.7).abs() < 1e-9);
    // application_utilization wins over cpu_utilization when set.
    let app = [
        ("qps", 100.0),
        ("cpu_utilization", 0.5),
        ("application_utilization", 0.25),
    ];
    assert_eq!(w(&app, &c), Some(400.0));
    // No utilization, no qps, NaN: the report is ignored.
    assert_eq!(w(&[("rps_fractional", 100.0)], &c), None);
    assert_eq!(w(&[("cpu_utilization", 0.5)], &c), None);
    assert_eq!(
        w(
            &[("rps_fractional", f64::NAN), ("cpu_utilization", 0.5)],
            &c
        ),
        None
    );
    // A114: the largest valid configured metric, else the default.
    let custom = WrrConfig {
        metric_names_for_computing_utilization: vec![
            "named_metrics.a".into(),
            "named_metrics.b".into(),
        ],
        ..WrrConfig::default()
    };
    let load = [
        ("rps_fractional", 100.0),
        ("cpu_utilization", 0.5),
        ("named_metrics.a", 0.2),
        ("named_metrics.b", 0.8),
    ];
    assert_eq!(w(&load, &custom), Some(125.0));
    let invalid = [
        ("rps_fractional", 100.0),
        ("cpu_utilization", 0.5),
        ("named_metrics.a", f64::NAN),
        ("named_metrics.b", -1.0),
    ];
    assert_eq!(w(&invalid, &custom), Some(200.0));
}

#[test]
fn scaling_falls_back_to_round_robin_and_clamps_as_grpc() {
    // One endpoint, fewer than two weights, all equal: round robin.
    assert_eq!(scale(&[5.0]), None);
    assert_eq!(scale(&[5.0, 0.0, 0.0]), None);
    assert_eq!(scale(&[5.0, 5.0, 0.0]), None);
    assert_eq!(scale(&[2.0, 2.0]), None);
    // The largest maps to 65535; a missing weight gets the mean.
    assert_eq!(scale(&[1.0, 3.0, 0.0]), Some(vec![21845, 65535, 43690]));
    // Capped at 10 x the mean: 19 x 1 and one 1000 (mean 50.95).
    let mut w = vec![1.0; 19];
    w.push(1000.0);
    let s = scale(&w).unwrap();
    assert_eq!(s[19], 65535);
    assert_eq!(s[0], (65535.0 / 509.5f64).round() as u16);
    // Floored at 1 % of the mean: 0.001 next to 1, 1, 1 (mean 0.75).
    let s = scale(&[0.001, 1.0, 1.0, 1.0]).unwrap();
    assert_eq!(
        s,
        vec![
            (65535.0 * 0.75 * 0.01f64).round() as u16,
            65535,
            65535,
            65535
        ]
    );
}

#[test]
fn the_stride_schedule_is_exact_over_a_cycle() {
    let config = Arc::new(ArcSwap::from_pointee(WrrConfig::default()));
    let weights = [100u16, 6000, 65535, 1];
    let endpoints = (0..weights.len())
        .map(|i| {
            let sc = Arc::new(crate::balancer::subconn::SubConn::new(
                SubConnId(i as u64),
                crate::Address::new(format!("127.0.0.1:{}", 1000 + i)),
            ));
            (
                sc,
                Arc::new(EndpointWeight::new(
                    config.clone(),
                    Arc::new(crate::clock::SystemClock),
                )),
            )
        })
        .collect();
    let picker = WrrPicker::new(endpoints, Some(&weights)).unwrap();
    // From any starting sequence, one cycle's picks are each entry's weight.
    for start in [0u64, 12_345, u64::MAX] {
        let mut local = PickLocal::new(1);
        *local.sequence() = start;
        let total: usize = weights.iter().map(|w| *w as usize).sum();
        let mut counts = [0usize; 4];
        for _ in 0..total {
            match picker.pick(&PickInfo::default(), &mut local) {
                PickResult::Complete { subconn, .. } => counts[subconn.id().0 as usize] += 1,
                _ => unreachable!(),
            }
        }
        if start == 0 {
            assert_eq!(counts, weights.map(usize::from));
        } else {
            for (c, w) in counts.iter().zip(weights) {
                assert!(c.abs_diff(w as usize) <= 2, "{counts:?} vs {weights:?}");
            }
        }
    }
    assert!(WrrPicker::new(Vec::new(), None).is_none());
}

#[test]
fn the_config_has_grpcs_fields_defaults_and_bounds() {
    let p = |j: serde_json::Value| WrrConfig::parse(&j);
    let d = p(serde_json::json!({})).unwrap();
    assert_eq!(d, WrrConfig::default());
    assert_eq!(d.blackout_period, 10 * SECOND);
    assert_eq!(d.weight_expiration_period, 180 * SECOND);
    assert_eq!(d.weight_update_period, SECOND);
    assert_eq!(d.error_utilization_penalty, 1.0);
    assert!(!d.enable_oob_load_report);
    let c = p(serde_json::json!({
        "enableOobLoadReport": true,
        "oobReportingPeriod": "2.5s",
        "blackoutPeriod": "0s",
        "weightExpirationPeriod": "60s",
        "weightUpdatePeriod": "0.05s",
        "errorUtilizationPenalty": 0,
        "metricNamesForComputingUtilization": ["named_metrics.foo"],
        "someFutureField": {"x": 1}
    }))
    .unwrap();
    assert!(c.enable_oob_load_report);
    assert_eq!(c.oob_reporting_period, Duration::from_millis(2500));
    assert_eq!(c.blackout_period, Duration::ZERO);
    assert_eq!(c.weight_expiration_period, 60 * SECOND);
    assert_eq!(c.weight_update_period, MIN_WEIGHT_UPDATE_PERIOD);
    assert_eq!(c.error_utilization_penalty, 0.0);
    assert_eq!(
        c.metric_names_for_computing_utilization,
        ["named_metrics.foo"]
    );
    // The OOB period means nothing without OOB.
    let c = p(serde_json::json!({"oobReportingPeriod": "2s"})).unwrap();
    assert_eq!(c.oob_reporting_period, Duration::ZERO);
    // proto3 JSON: a float may come as its string, a duration with its
    // whole or fraction part left out (as gRPC-Go reads it).
    let c =
        p(serde_json::json!({"errorUtilizationPenalty": "1.5", "blackoutPeriod": ".5s"})).unwrap();
    assert_eq!(c.error_utilization_penalty, 1.5);
    assert_eq!(c.blackout_period, Duration::from_millis(500));
    for (bad, field) in [
        (
            serde_json::json!({"errorUtilizationPenalty": -0.5}),
            "errorUtilizationPenalty",
        ),
        (
            serde_json::json!({"errorUtilizationPenalty": "x"}),
            "errorUtilizationPenalty",
        ),
        (
            serde_json::json!({"errorUtilizationPenalty": "-1"}),
            "errorUtilizationPenalty",
        ),
        (
            serde_json::json!({"blackoutPeriod": "-1s"}),
            "blackoutPeriod",
        ),
        (serde_json::json!({"blackoutPeriod": 10}), "blackoutPeriod"),
        (
            serde_json::json!({"weightUpdatePeriod": "1"}),
            "weightUpdatePeriod",
        ),
        (
            serde_json::json!({"weightExpirationPeriod": "1.0000000001s"}),
            "weightExpirationPeriod",
        ),
        (
            serde_json::json!({"weightExpirationPeriod": "315576000001s"}),
            "weightExpirationPeriod",
        ),
        (
            serde_json::json!({"oobReportingPeriod": "x"}),
            "oobReportingPeriod",
        ),
        (
            serde_json::json!({"enableOobLoadReport": "yes"}),
            "enableOobLoadReport",
        ),
        (
            serde_json::json!({"metricNamesForComputingUtilization": "a"}),
            "metricNamesForComputingUtilization",
        ),
        (
            serde_json::json!({"metricNamesForComputingUtilization": [1]}),
            "metricNamesForComputingUtilization",
        ),
        (serde_json::json!([]), "config must be an object"),
    ] {
        let err = p(bad.clone()).unwrap_err();
        assert!(err.contains(field), "{bad}: {err}");
    }
}

#[test]
fn a_service_config_selects_it_by_name() {
    let sc = crate::service_config::ServiceConfig::parse(Some(
        r#"{"loadBalancingConfig":[{"weighted_round_robin":{"blackoutPeriod":"1s"}}]}"#,
    ));
    assert!(sc.is_ok(), "{:?}", sc.err());
    let bad = crate::service_config::ServiceConfig::parse(Some(
        r#"{"loadBalancingConfig":[{"weighted_round_robin":{"errorUtilizationPenalty":-1}}]}"#,
    ));
    assert!(bad.unwrap_err().contains("errorUtilizationPenalty"));
    assert!(registry::names().iter().any(|n| n == NAME));
}

#[test]
fn a_weight_update_before_the_pending_rebuild_follows_the_ready_set() {
    let (mut cc, mut wrr) = ready(3, serde_json::json!({"weightUpdatePeriod": "1s"}));
    let ids: Vec<_> = (0..3)
        .map(|i| cc.subconn_for(&addrs(3)[i]).unwrap().id())
        .collect();
    set(
        &mut cc,
        &mut *wrr,
        ids[2],
        ConnectivityState::TransientFailure,
    );
    // Two changes that keep the READY count (0 lost, 2 back) arrive; the
    // timer fires before the rebuild they asked for.
    cc.set_state(&mut *wrr, ids[0], ConnectivityState::TransientFailure);
    cc.set_state(&mut *wrr, ids[2], ConnectivityState::Ready);
    cc.advance(&mut *wrr, SECOND);
    let picks = cc.picks(30);
    assert!(!picks.contains(&Some(ids[0])) && picks.contains(&Some(ids[2])));
    // The rebuild itself changes nothing more.
    cc.run_work(&mut *wrr);
    let picks = cc.picks(30);
    assert!(!picks.contains(&Some(ids[0])) && picks.contains(&Some(ids[2])));
}

#[test]
fn without_weights_each_cycle_visits_every_endpoint_once() {
    let (mut cc, _wrr) = ready(3, serde_json::json!({}));
    let picks = cc.picks(30);
    for cycle in picks.chunks(3) {
        let distinct: std::collections::HashSet<_> = cycle.iter().collect();
        assert_eq!(distinct.len(), 3, "one cycle, each once: {picks:?}");
        assert!(cycle.iter().all(Option::is_some));
    }
}

/// gRFC A114's `GetUtilization`: the configured metrics come first (the
/// largest valid one); only when none of them is reported does
/// `application_utilization` (> 0) count, and only then `cpu_utilization`
/// (grpc-java's `customMetric_priority_overAppUtil`).
#[test]
fn the_configured_metrics_win_over_application_utilization() {
    let custom = WrrConfig {
        metric_names_for_computing_utilization: vec!["named_metrics.a".into()],
        ..WrrConfig::default()
    };
    let load = [
        ("rps_fractional", 100.0),
        ("application_utilization", 0.5),
        ("named_metrics.a", 0.25),
        ("cpu_utilization", 0.8),
    ];
    assert_eq!(weight_from_report(&load, &custom), Some(400.0));
    // The configured metric not reported (or not valid): application
    // utilization, not cpu.
    for missing in [None, Some(0.0), Some(-1.0), Some(f64::NAN)] {
        let mut no_custom = vec![
            ("rps_fractional", 100.0),
            ("application_utilization", 0.5),
            ("cpu_utilization", 0.8),
        ];
        if let Some(v) = missing {
            no_custom.push(("named_metrics.a", v));
        }
        assert_eq!(weight_from_report(&no_custom, &custom), Some(200.0));
    }
    // Neither: cpu.
    let cpu_only = [("rps_fractional", 100.0), ("cpu_utilization", 0.8)];
    assert_eq!(weight_from_report(&cpu_only, &custom), Some(125.0));
}

/// gRFC A114 (and gRPC Java's `MetricReportUtils`): only
/// `application_utilization`, `cpu_utilization`, `mem_utilization`,
/// `utilization.<key>` and `named_metrics.<key>` name a utilization; any
/// other configured name (qps, eps, request costs) finds nothing, and an
/// infinite value is no valid one either.
#[test]
fn only_utilization_metrics_can_be_configured() {
    let config = |names: &[&str]| WrrConfig {
        metric_names_for_computing_utilization: names.iter().map(|n| n.to_string()).collect(),
        ..WrrConfig::default()
    };
    let load = [
        ("rps_fractional", 100.0),
        ("eps", 10.0),
        ("request_cost.x", 5.0),
        ("cpu_utilization", 0.5),
        ("mem_utilization", 0.9),
        ("utilization.disk", 0.4),
        ("named_metrics.inf", f64::INFINITY),
    ];
    // 100 / (u + 10/100): u falls back to cpu (0.5) for unsupported names.
    let w = |names: &[&str]| weight_from_report(&load, &config(names)).unwrap();
    let want = |u: f64| 100.0 / (u + 0.1);
    for unsupported in [
        &["eps"][..],
        &["request_cost.x"],
        &["rps_fractional"],
        &["qps"],
        &["named_metrics.inf"],
    ] {
        assert!((w(unsupported) - want(0.5)).abs() < 1e-9, "{unsupported:?}");
    }
    assert!((w(&["mem_utilization"]) - want(0.9)).abs() < 1e-9);
    assert!((w(&["utilization.disk", "eps"]) - want(0.4)).abs() < 1e-9);
}

/// gRPC C++'s floor is 1 % of the *rounded* scaled mean, rounded again:
/// a scaled mean of 6649.6 rounds to 6650, whose 1 % (66.5) rounds to 67.
#[test]
fn the_floor_is_a_hundredth_of_the_rounded_mean() {
    // 1.0, a tiny weight and 18 of y: the scaled mean is 6649.6 (no cap).
    let sum = 6649.6 / 65535.0 * 20.0;
    let tiny = 1e-6;
    let y = (sum - 1.0 - tiny) / 18.0;
    let mut w = vec![1.0, tiny];
    w.extend(std::iter::repeat_n(y, 18));
    let s = scale(&w).unwrap();
    assert_eq!(s[0], 65535);
    assert_eq!(s[1], 67);
}

#[test]
fn a_health_check_failing_and_passing_again_keeps_the_weight() {
    // The blackout restarts when the endpoint's connection comes up (raw
    // READY), not on a health verdict: a health check failing on a live
    // connection and passing again (or an outlier_detection parent
    // ejecting and returning the endpoint) keeps the weight and its
    // blackout clock.
    let (mut cc, mut wrr) = ready(3, serde_json::json!({"blackoutPeriod": "0s"}));
    let weights = [1.0, 2.0, 3.0];
    report(&cc, 300, qps_load(&weights));
    cc.advance(&mut *wrr, SECOND);
    assert_follows(&shares(&mut cc, 3, 30_000), &weights);
    let sc = cc.subconn_for(&addrs(3)[2]).unwrap().id();
    cc.set_health_failed(&mut *wrr, sc);
    cc.run_work(&mut *wrr);
    set(&mut cc, &mut *wrr, sc, ConnectivityState::Ready);
    // No report since: the old one still counts.
    cc.advance(&mut *wrr, SECOND);
    assert_follows(&shares(&mut cc, 3, 30_000), &weights);
}

#[test]
fn out_of_band_reports_before_health_passes_count() {
    let builder = registry::get(NAME).expect("registered");
    let config = builder
        .parse_config(&serde_json::json!({
            "enableOobLoadReport": true,
            "oobReportingPeriod": "1s",
            "blackoutPeriod": "0s",
        }))
        .unwrap();
    let mut wrr = builder.build();
    let mut cc = TestClientConn::new();
    let addresses = addrs(2).into_iter().map(crate::Address::new).collect();
    cc.update(
        &mut *wrr,
        ClientConnState::from_addresses(addresses, config),
    )
    .unwrap();
    // Connected, health not yet known: the listeners are on and report.
    for id in cc.connects().to_vec() {
        cc.set_connected(&mut *wrr, id);
    }
    cc.run_work(&mut *wrr);
    let ids: Vec<SubConnId> = (0..2)
        .map(|i| cc.subconn_for(&addrs(2)[i]).unwrap().id())
        .collect();
    for (id, qps) in ids.iter().zip([1.0, 10.0]) {
        cc.oob_report(
            *id,
            &[("rps_fractional", qps), ("application_utilization", 1.0)],
        );
    }
    for id in &ids {
        set(&mut cc, &mut *wrr, *id, ConnectivityState::Ready);
    }
    cc.advance(&mut *wrr, SECOND);
    assert_follows(&shares(&mut cc, 2, 22_000), &[1.0, 10.0]);
}

#[test]
fn a_rebuild_to_the_same_schedule_publishes_nothing() {
    // Readers keep their place in an unchanged schedule: republished each
    // update period, a few calls per period would only ever take its
    // first steps.
    let (mut cc, mut wrr) = ready(3, serde_json::json!({"blackoutPeriod": "0s"}));
    report(&cc, 300, qps_load(&[1.0, 2.0, 3.0]));
    cc.advance(&mut *wrr, SECOND);
    let published = cc.pickers_published();
    cc.advance(&mut *wrr, 5 * SECOND);
    assert_eq!(cc.pickers_published(), published);
    // New weights: a new schedule.
    report(&cc, 300, qps_load(&[3.0, 2.0, 1.0]));
    cc.advance(&mut *wrr, SECOND);
    assert!(cc.pickers_published() > published);
    assert_follows(&shares(&mut cc, 3, 30_000), &[3.0, 2.0, 1.0]);
}
