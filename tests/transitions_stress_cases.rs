//! Graceful transitions under load. Several threads send echo calls
//! back to back (wait_for_ready, generous deadlines, the server holding each
//! a few ms, some for 150 ms) while a control thread switches policies,
//! churns addresses, changes method configs, flips health checking, lets the
//! channel go IDLE between bursts, or stops a backend gracefully.
//! Asserted: no call fails, none outlives its deadline, no thread goes more
//! than a few seconds without a success (a stall, not a speed: the bound is
//! loose for a loaded machine), and the channel's call counts add up.

mod common;

use common::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchyard::resolver::manual::ManualResolver;
use switchyard::resolver::{self, ResolverState};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{ServerOptions, TestServer};

const DEADLINE: Duration = Duration::from_secs(10);
/// The longest a thread may go without a success while the load runs.
const MAX_GAP: Duration = Duration::from_secs(5);

const PF: &str = r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#;
const PF_SHUFFLE: &str = r#"{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}"#;
const RRC: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
const WRR: &str = r#"{"loadBalancingConfig":[{"weighted_round_robin":{"blackoutPeriod":"0s","weightUpdatePeriod":"0.1s"}}]}"#;
const LR: &str = r#"{"loadBalancingConfig":[{"least_request_experimental":{"choiceCount":2}}]}"#;
const RH: &str =
    r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"minRingSize":64,"maxRingSize":256}}]}"#;
const RANDOM: &str = r#"{"loadBalancingConfig":[{"random":{}}]}"#;
const OD: &str = r#"{"loadBalancingConfig":[{"outlier_detection_experimental":{"interval":"0.1s","baseEjectionTime":"0.5s","successRateEjection":{"minimumHosts":2,"requestVolume":5},"failurePercentageEjection":{"minimumHosts":2,"requestVolume":5,"threshold":50},"childPolicy":[{"round_robin":{}}]}}]}"#;

const RH_HDR: &str =
    r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"requestHashHeader":"x-delay-ms"}}]}"#;

const ALL: [(&str, &str); 9] = [
    ("pick_first", PF),
    ("round_robin", RRC),
    ("weighted_round_robin", WRR),
    ("least_request", LR),
    ("ring_hash", RH),
    ("random", RANDOM),
    ("outlier_detection(rr)", OD),
    ("pick_first(shuffle)", PF_SHUFFLE),
    ("ring_hash(header)", RH_HDR),
];

fn servers(n: usize) -> Vec<TestServer> {
    (0..n)
        .map(|_| start_server(0, ServerOptions::default()))
        .collect()
}

fn target_of(s: &[TestServer]) -> String {
    let list: Vec<String> = s.iter().map(|s| s.addr().to_string()).collect();
    format!("ipv4:{}", list.join(","))
}

fn addrs_of(s: &[&TestServer]) -> Vec<Address> {
    s.iter()
        .map(|s| Address::new(s.addr().to_string()))
        .collect()
}

#[derive(Default, Debug)]
struct Stats {
    ok: u64,
    failed: Vec<String>,
    max_latency: Duration,
    max_gap: Duration,
    /// The slowest call the server held only a few ms.
    max_short: Duration,
    per_port: HashMap<u16, u64>,
}

/// Calls from several threads until stopped (bounded at 30 s).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Stats>>,
}

fn parse_port(resp: UnaryResponse) -> Result<u16, String> {
    let text = String::from_utf8(resp.message).map_err(|e| e.to_string())?;
    text.rsplit("port=")
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("bad echo {text:?}"))
}

impl Load {
    /// `threads` threads; thread t % 3 == 2 uses `Channel::unary_start`,
    /// the others `Reader::unary`. `pause`: after every `burst` calls each
    /// thread sleeps this long (for the idle test); gaps then are not
    /// measured.
    fn start(ch: &Arc<Channel>, threads: usize, burst: Option<(u64, Duration)>) -> Load {
        Load::start_with(ch, threads, burst, false)
    }

    /// `fail_fast`: thread t % 4 == 1 sends fail-fast calls (gRPC's graceful
    /// switch holds for those too: the old picker serves until the new
    /// policy is READY, and a CONNECTING policy queues picks).
    fn start_with(
        ch: &Arc<Channel>,
        threads: usize,
        burst: Option<(u64, Duration)>,
        fail_fast: bool,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|t| {
                let (ch, stop) = (ch.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut st = Stats::default();
                    let mut r = ch.reader();
                    let give_up = Instant::now() + Duration::from_secs(30);
                    let mut last_ok: Option<Instant> = None;
                    let mut n: u64 = 0;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
                        n += 1;
                        // Mostly short calls, every 8th held 150 ms: always
                        // some in flight during a transition.
                        let delay = if t == 0 && n % 3 == 0 {
                            1200
                        } else if n % 8 == 0 {
                            150
                        } else {
                            2 + (t as u64 % 4)
                        };
                        let wait_for_ready = !fail_fast || t % 4 != 1;
                        let metadata = [("x-delay-ms".to_string(), delay.to_string())];
                        let start = Instant::now();
                        let opts = CallOptions {
                            deadline: Some(start + DEADLINE),
                            wait_for_ready: Some(wait_for_ready),
                            metadata: &metadata,
                            hash: Some(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t as u64),
                        };
                        let res: Result<UnaryResponse, String> = if t % 3 == 2 {
                            let (tx, rx) = mpsc::channel();
                            match ch.unary_start("/echo.Echo/Unary", b"ping", &opts, move |r| {
                                let _ = tx.send(r);
                            }) {
                                Ok(_h) => {
                                    match rx.recv_timeout(DEADLINE + Duration::from_secs(5)) {
                                        Ok(r) => r.map_err(|s| format!("unary_start: {s}")),
                                        Err(_) => Err("unary_start: on_done never ran".into()),
                                    }
                                }
                                Err(e) => Err(format!("unary_start refused: {e}")),
                            }
                        } else if t % 5 == 4 {
                            // A fresh Reader per call (registered and
                            // retired while the channel switches).
                            ch.reader()
                                .unary("/echo.Echo/Unary", b"ping", &opts)
                                .map_err(|s| format!("fresh reader unary: {s}"))
                        } else {
                            r.unary("/echo.Echo/Unary", b"ping", &opts)
                                .map_err(|s| format!("unary: {s}"))
                        };
                        let took = start.elapsed();
                        st.max_latency = st.max_latency.max(took);
                        match res.and_then(parse_port) {
                            Ok(port) => {
                                st.ok += 1;
                                *st.per_port.entry(port).or_default() += 1;
                                let now = Instant::now();
                                // Thread 0's 1.2 s calls are gaps by design.
                                if let (Some(prev), true) = (last_ok, t != 0) {
                                    st.max_gap = st.max_gap.max(now - prev);
                                }
                                if delay < 100 {
                                    st.max_short = st.max_short.max(took);
                                }
                                last_ok = Some(now);
                            }
                            Err(e) => st.failed.push(format!(
                                "thread {t} (wfr={wait_for_ready}) call {n} after {:.3}s: {e}",
                                took.as_secs_f64()
                            )),
                        }
                        if let Some((every, pause)) = burst {
                            if n % every == 0 {
                                std::thread::sleep(pause);
                                last_ok = None;
                            }
                        }
                    }
                    st
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Stats::default();
        for t in self.threads {
            let s = t.join().unwrap();
            all.ok += s.ok;
            all.failed.extend(s.failed);
            all.max_latency = all.max_latency.max(s.max_latency);
            all.max_gap = all.max_gap.max(s.max_gap);
            all.max_short = all.max_short.max(s.max_short);
            for (p, n) in s.per_port {
                *all.per_port.entry(p).or_default() += n;
            }
        }
        all
    }
}

/// The assertions every scenario shares.
fn check(what: &str, ch: &Channel, st: &Stats, min_ok: u64, check_gap: bool) {
    eprintln!(
        "{what}: ok={} failed={} max_latency={:.3}s max_gap={:.3}s max_short={:.3}s per_port={:?}",
        st.ok,
        st.failed.len(),
        st.max_latency.as_secs_f64(),
        st.max_gap.as_secs_f64(),
        st.max_short.as_secs_f64(),
        st.per_port
    );
    assert!(
        st.failed.is_empty(),
        "{what}: {} of {} calls failed; first ones: {:#?}",
        st.failed.len(),
        st.ok + st.failed.len() as u64,
        &st.failed[..st.failed.len().min(10)]
    );
    assert!(
        st.max_latency <= DEADLINE + Duration::from_millis(300),
        "{what}: a call took {:?}",
        st.max_latency
    );
    if check_gap {
        assert!(
            st.max_gap <= MAX_GAP,
            "{what}: a thread went {:?} without a success",
            st.max_gap
        );
    }
    assert!(st.ok >= min_ok, "{what}: only {} calls ran", st.ok);
    check_counts(what, ch, st.ok + st.failed.len() as u64);
}

/// started = succeeded + failed + in flight; nothing in flight once every
/// caller has its answer; the calls we made are all counted.
fn check_counts(what: &str, ch: &Channel, made: u64) {
    let mut snap = ch.snapshot().unwrap();
    let give_up = Instant::now() + Duration::from_secs(3);
    while snap.calls_in_flight != 0 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(10));
        snap = ch.snapshot().unwrap();
    }
    assert_eq!(
        snap.calls_started,
        snap.calls_succeeded + snap.calls_failed + snap.calls_in_flight,
        "{what}: counts do not add up: {snap:?}"
    );
    assert_eq!(
        snap.calls_in_flight, 0,
        "{what}: calls still in flight: {snap:?}"
    );
    for sc in &snap.subchannels {
        assert_eq!(
            sc.calls_started,
            sc.calls_succeeded + sc.calls_failed + sc.calls_in_flight,
            "{what}: subchannel counts do not add up: {sc:?}"
        );
    }
    assert_eq!(snap.calls_started, made, "{what}: calls made vs counted");
}

fn chan(rt: &Runtime, target: &str, config: Option<&str>) -> Arc<Channel> {
    let mut o = plaintext_fast_backoff();
    o.idle_timeout = Some(Duration::ZERO);
    let ch = Channel::new(rt, target, config, o).unwrap();
    Arc::new(ch)
}

/// No server saw a call of ours cut off (connection closed under it) or
/// reset (the client gave up on it): every transition let calls finish.
fn check_servers(what: &str, s: &[TestServer]) {
    for b in s {
        assert_eq!(
            (b.cut_off(), b.resets()),
            (0, 0),
            "{what}: backend {} saw calls cut off / reset",
            b.port()
        );
    }
}

/// Waits (bounded) until the backends hold exactly `want` connections in
/// all: the replaced policies' and removed addresses' connections drained
/// and closed.
fn wait_connections(what: &str, s: &[TestServer], want: u64) {
    wait_per_server(what, s, &format!("{want} connections in all"), |per| {
        per.iter().sum::<u64>() == want
    });
}

/// Waits until the servers' connection counts satisfy `ok` (bounded 5 s);
/// `wanted` says what for the failure message.
fn wait_per_server(what: &str, s: &[TestServer], wanted: &str, ok: impl Fn(&[u64]) -> bool) {
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let per: Vec<u64> = s.iter().map(TestServer::connections).collect();
        if ok(&per) {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "{what}: want {wanted}, still {per:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `n` successes have happened since `from` (bounded 5 s).
fn let_flow(s: &[TestServer], n: u64) {
    let from: u64 = s.iter().map(TestServer::requests).sum();
    wait_until("calls to flow", || {
        s.iter().map(TestServer::requests).sum::<u64>() >= from + n
    });
}

// ------------------------------------------------------------- (1) policies

/// Every policy to every other under load, through the channel's
/// `update_service_config`.
fn policy_cycle(fail_fast: bool) {
    let s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(RRC));
    let load = Load::start_with(&ch, 6, None, fail_fast);
    let_flow(&s, 20);
    for round in 0..2 {
        for (i, (_, cfg)) in ALL.iter().enumerate() {
            // Round 1 in reverse order: every pair both ways.
            let cfg = if round == 0 {
                cfg
            } else {
                ALL[ALL.len() - 1 - i].1
            };
            ch.update_service_config(cfg).unwrap();
            ch.sync().unwrap();
            let_flow(&s, 10);
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    let st = load.finish();
    check(
        &format!("policy cycle (fail_fast={fail_fast})"),
        &ch,
        &st,
        200,
        true,
    );
    check_servers("policy cycle", &s);
    // The cycle ended on pick_first: one connection left.
    wait_connections("policy cycle ending on pick_first", &s, 1);
}

#[test]
fn every_policy_switch_under_load_fails_no_call() {
    policy_cycle(false);
}

#[test]
fn every_policy_switch_under_load_fails_no_fail_fast_call() {
    policy_cycle(true);
}

/// Switching faster than any policy can become READY: each new config
/// lands while the previous pending one is still connecting.
#[test]
fn policy_switches_back_to_back_fail_no_call() {
    let s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(RRC));
    let load = Load::start(&ch, 6, None);
    let_flow(&s, 20);
    for k in 0..120 {
        ch.update_service_config(ALL[k % ALL.len()].1).unwrap();
        if k % 7 == 0 {
            std::thread::sleep(Duration::from_millis(15));
        }
    }
    ch.sync().unwrap();
    let_flow(&s, 50);
    let st = load.finish();
    check("back-to-back switches", &ch, &st, 40, true);
    check_servers("back-to-back switches", &s);
}

// ---------------------------------------------------- (2) address churn

/// Removes and re-adds addresses (always one left), including the one
/// pick_first is on and the ones calls are in flight on.
fn address_churn(config: &str) {
    address_churn_with(config, false)
}

fn address_churn_with(config: &str, fail_fast: bool) {
    let s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(config));
    let load = Load::start_with(&ch, 6, None, fail_fast);
    let_flow(&s, 20);
    let sets: [&[usize]; 8] = [
        &[1, 2],
        &[2],
        &[0, 1, 2],
        &[0],
        &[1],
        &[0, 2],
        &[2, 1, 0],
        &[1],
    ];
    for round in 0..2 {
        for set in sets {
            let list: Vec<&TestServer> = set.iter().map(|&i| &s[i]).collect();
            ch.update_addresses(addrs_of(&list)).unwrap();
            ch.sync().unwrap();
            std::thread::sleep(Duration::from_millis(if round == 0 { 120 } else { 30 }));
        }
    }
    ch.update_addresses(addrs_of(&s.iter().collect::<Vec<_>>()))
        .unwrap();
    let_flow(&s, 20);
    let st = load.finish();
    check(
        &format!("address churn {config} (fail_fast={fail_fast})"),
        &ch,
        &st,
        100,
        true,
    );
    check_servers("address churn", &s);
    if config.contains("ring_hash") {
        // ring_hash connects an endpoint only when a pick lands on it (A42):
        // a re-added one may stay unconnected once the load stops. No
        // removed address's connection is left over, though.
        wait_at_most_one_each("address churn ending on all three", &s);
    } else {
        let want = if config.contains("pick_first") { 1 } else { 3 };
        wait_connections("address churn ending on all three", &s, want);
    }
}

/// Waits (bounded) until no backend holds more than one connection: the
/// drained ones of removed addresses closed.
fn wait_at_most_one_each(what: &str, s: &[TestServer]) {
    wait_per_server(what, s, "at most one connection each", |per| {
        per.iter().all(|n| *n <= 1)
    });
}

#[test]
fn address_churn_pick_first_fail_fast() {
    address_churn_with(PF, true);
}
#[test]
fn address_churn_round_robin_fail_fast() {
    address_churn_with(RRC, true);
}
#[test]
fn address_churn_ring_hash_fail_fast() {
    address_churn_with(RH, true);
}

#[test]
fn address_churn_pick_first() {
    address_churn(PF);
}
#[test]
fn address_churn_round_robin() {
    address_churn(RRC);
}
#[test]
fn address_churn_weighted_round_robin() {
    address_churn(WRR);
}
#[test]
fn address_churn_least_request() {
    address_churn(LR);
}
#[test]
fn address_churn_ring_hash() {
    address_churn(RH);
}
#[test]
fn address_churn_random() {
    address_churn(RANDOM);
}
#[test]
fn address_churn_outlier_detection() {
    address_churn(OD);
}

/// Address churn and policy switches at once, through a ManualResolver
/// pushing endpoints and config together (and sometimes config only with
/// the same endpoints).
#[test]
fn resolver_pushes_policy_and_addresses_together_under_load() {
    let s = servers(3);
    let scheme = "trstress1";
    let r = ManualResolver::new(scheme);
    resolver::register(Arc::new(r.clone()));
    let state = |set: &[usize], cfg: &str| ResolverState {
        endpoints: set
            .iter()
            .map(|&i| Endpoint::from(Address::new(s[i].addr().to_string())))
            .collect(),
        service_config: Some(cfg.to_string()),
    };
    r.set_initial_state(Some(state(&[0, 1, 2], RRC)));
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &format!("{scheme}:///x"), None);
    let load = Load::start(&ch, 6, None);
    let_flow(&s, 20);
    let sets: [&[usize]; 7] = [&[1, 2], &[2], &[0, 1, 2], &[0], &[1, 0], &[0, 2], &[1]];
    for k in 0..28 {
        let set = sets[k % sets.len()];
        let cfg = ALL[(k * 3) % ALL.len()].1;
        r.update(state(set, cfg)).unwrap();
        ch.sync().unwrap();
        std::thread::sleep(Duration::from_millis(if k % 2 == 0 { 80 } else { 10 }));
    }
    r.update(state(&[0, 1, 2], RRC)).unwrap();
    let_flow(&s, 20);
    let st = load.finish();
    check("resolver pushes", &ch, &st, 100, true);
    check_servers("resolver pushes", &s);
    wait_connections("resolver pushes ending on rr over three", &s, 3);
}

// --------------------------------------------------- (3) method config

fn with_methods(policy: &str, methods: &str) -> String {
    // policy is `{"loadBalancingConfig":[...]}`: splice the methodConfig in.
    format!(
        "{},\"methodConfig\":{methods}}}",
        &policy[..policy.len() - 1]
    )
}

#[test]
fn method_config_changes_mid_flight_fail_no_call() {
    let s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(RRC));
    let name = r#"[{"service":"echo.Echo"}]"#;
    let configs = [
        with_methods(
            RRC,
            &format!(r#"[{{"name":{name},"timeout":"8s","waitForReady":true}}]"#),
        ),
        with_methods(
            RRC,
            &format!(
                r#"[{{"name":{name},"timeout":"9s","retryPolicy":{{"maxAttempts":3,"initialBackoff":"0.01s","maxBackoff":"0.05s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}}}]"#
            ),
        ),
        with_methods(LR, &format!(r#"[{{"name":{name},"timeout":"7s"}}]"#)),
        with_methods(
            PF,
            r#"[{"name":[{}],"timeout":"9.5s","retryPolicy":{"maxAttempts":5,"initialBackoff":"0.02s","maxBackoff":"0.1s","backoffMultiplier":1.5,"retryableStatusCodes":["UNAVAILABLE","RESOURCE_EXHAUSTED"]}}]"#,
        ),
        RRC.to_string(),
        with_methods(
            RRC,
            &format!(r#"[{{"name":{name},"timeout":"6s","waitForReady":false}}]"#),
        ),
    ];
    let load = Load::start(&ch, 6, None);
    let_flow(&s, 20);
    for k in 0..36 {
        ch.update_service_config(&configs[k % configs.len()])
            .unwrap();
        ch.sync().unwrap();
        std::thread::sleep(Duration::from_millis(if k % 3 == 0 { 100 } else { 20 }));
    }
    let st = load.finish();
    check("method config churn", &ch, &st, 100, true);
    check_servers("method config churn", &s);
}

// --------------------------------------------------- (4) health checking

fn health(policy: &str) -> String {
    format!(
        "{},\"healthCheckConfig\":{{\"serviceName\":\"\"}}}}",
        &policy[..policy.len() - 1]
    )
}

/// healthCheckConfig on and off (and the policy under it changing), all
/// backends SERVING.
#[test]
fn health_check_config_flips_under_load_fail_no_call() {
    let s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(RRC));
    let load = Load::start(&ch, 6, None);
    let_flow(&s, 20);
    let pols = [RRC, PF, WRR, LR, RH, OD, RANDOM];
    for k in 0..28 {
        let p = pols[(k / 2) % pols.len()];
        let cfg = if k % 2 == 0 { health(p) } else { p.to_string() };
        ch.update_service_config(&cfg).unwrap();
        ch.sync().unwrap();
        std::thread::sleep(Duration::from_millis(if k % 3 == 0 { 90 } else { 25 }));
    }
    let st = load.finish();
    check("health config flips", &ch, &st, 100, true);
    check_servers("health config flips", &s);
    // Ended without healthCheckConfig: no Watch stream left open.
    wait_until("the Watch streams to close", || {
        s.iter().map(TestServer::in_flight).sum::<u64>() == 0
    });
}

/// Same, while backend 1 goes NOT_SERVING and back (backend 0 and 2 stay
/// SERVING, so a ready backend always exists).
#[test]
fn health_flips_with_a_backend_flapping_fail_no_call() {
    let s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(&health(RRC)));
    let load = Load::start(&ch, 6, None);
    let_flow(&s, 20);
    for k in 0..24 {
        s[1].set_serving("", if k % 2 == 0 { 2 } else { 1 });
        let cfg = match k % 4 {
            0 => health(RRC),
            1 => RRC.to_string(),
            2 => health(LR),
            _ => health(WRR),
        };
        ch.update_service_config(&cfg).unwrap();
        ch.sync().unwrap();
        std::thread::sleep(Duration::from_millis(70));
    }
    s[1].set_serving("", 1);
    let st = load.finish();
    check("health flapping", &ch, &st, 100, true);
    check_servers("health flapping", &s);
}

// ------------------------------------------------------------ (5) idle

/// A 100 ms idle timeout: the threads send bursts and pause 350 ms
/// together, so the channel goes IDLE between bursts; meanwhile the policy
/// and addresses change (also while IDLE).
#[test]
fn bursts_across_idle_with_config_changes_fail_no_call() {
    let s = servers(3);
    let rt = Runtime::new().unwrap();
    let idles = Arc::new(Mutex::new(0u32));
    let seen = idles.clone();
    let mut o = plaintext_fast_backoff();
    o.idle_timeout = Some(Duration::from_millis(100));
    o.on_state_change = Some(Arc::new(move |st| {
        if st == Idle {
            *seen.lock().unwrap() += 1;
        }
    }));
    let ch = Arc::new(Channel::new(&rt, &target_of(&s), Some(RRC), o).unwrap());
    let start = Instant::now();
    // Threads: 15 calls (a few ms each, one 150 ms), then 350 ms pause.
    let load = Load::start(&ch, 4, Some((15, Duration::from_millis(350))));
    let mut k = 0;
    while start.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(170));
        ch.update_service_config(ALL[k % ALL.len()].1).unwrap();
        if k % 2 == 1 {
            let set: Vec<&TestServer> = match k % 3 {
                0 => vec![&s[0], &s[1]],
                1 => vec![&s[2]],
                _ => s.iter().collect(),
            };
            ch.update_addresses(addrs_of(&set)).unwrap();
        }
        k += 1;
    }
    let st = load.finish();
    let idle_count = *idles.lock().unwrap();
    eprintln!("went IDLE {idle_count} times");
    check("bursts across idle", &ch, &st, 60, false);
    check_servers("bursts across idle", &s);
    // Left alone, the channel goes IDLE and closes every connection.
    wait_state(&ch, Idle);
    wait_connections("the idle channel's connections to close", &s, 0);
    assert!(
        idle_count >= 2,
        "the channel went IDLE only {idle_count} times"
    );
}

// ------------------------------------------------------ (6) graceful stop

/// GOAWAY (server stays up), then graceful stop of one backend, then a
/// second: every call completes (in-flight ones finish on the draining
/// connection, new ones go elsewhere or reconnect).
fn graceful_backend_loss(config: &str) {
    graceful_backend_loss_with(config, false)
}

fn graceful_backend_loss_with(config: &str, fail_fast: bool) {
    let mut s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(config));
    let load = Load::start_with(&ch, 6, None, fail_fast);
    let_flow(&s, 30);
    for _ in 0..3 {
        for b in &s {
            b.goaway();
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    let_flow(&s, 20);
    // Graceful stop of the backend with calls in flight (the busiest).
    let busiest = (0..3).max_by_key(|&i| s[i].in_flight()).unwrap();
    let b = s.remove(busiest);
    let clean = b.graceful_stop(Duration::from_secs(5));
    let_flow(&s, 30);
    let b = s.remove(0);
    let clean2 = b.graceful_stop(Duration::from_secs(5));
    let_flow(&s, 30);
    let st = load.finish();
    eprintln!("graceful stops clean: {clean} {clean2}");
    check(
        &format!("graceful stop {config} (fail_fast={fail_fast})"),
        &ch,
        &st,
        100,
        true,
    );
    assert!(
        clean && clean2,
        "a gracefully stopped backend's connections outlived 5 s"
    );
    check_servers("graceful stop", &s);
}

#[test]
fn graceful_stop_under_load_pick_first_fail_fast() {
    graceful_backend_loss_with(PF, true);
}
#[test]
fn graceful_stop_under_load_round_robin_fail_fast() {
    graceful_backend_loss_with(RRC, true);
}

#[test]
fn graceful_stop_under_load_round_robin() {
    graceful_backend_loss(RRC);
}
#[test]
fn graceful_stop_under_load_pick_first() {
    graceful_backend_loss(PF);
}
#[test]
fn graceful_stop_under_load_ring_hash() {
    graceful_backend_loss(RH);
}
#[test]
fn graceful_stop_under_load_least_request() {
    graceful_backend_loss(LR);
}
#[test]
fn graceful_stop_under_load_outlier_detection() {
    graceful_backend_loss(OD);
}

// --------------------------------------------------------- all at once

/// Policy switches, address churn, method configs, health flips and
/// GOAWAYs from three control threads at once.
#[test]
fn everything_at_once_fails_no_call() {
    let s = Arc::new(servers(4));
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(RRC));
    let load = Load::start(&ch, 8, None);
    let_flow(&s, 30);
    let stop = Arc::new(AtomicBool::new(false));
    let mut ctl = Vec::new();
    {
        // configs: policy x health x method config
        let (ch, stop) = (ch.clone(), stop.clone());
        ctl.push(std::thread::spawn(move || {
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) && k < 400 {
                let p = ALL[k % ALL.len()].1;
                let p = if k % 3 == 0 { health(p) } else { p.to_string() };
                let cfg = if k % 2 == 0 {
                    with_methods(
                        &p,
                        r#"[{"name":[{}],"timeout":"9s","retryPolicy":{"maxAttempts":2,"initialBackoff":"0.01s","maxBackoff":"0.01s","backoffMultiplier":1,"retryableStatusCodes":["UNAVAILABLE"]}}]"#,
                    )
                } else {
                    p
                };
                ch.update_service_config(&cfg).unwrap();
                std::thread::sleep(Duration::from_millis(40 + (k as u64 % 5) * 20));
                k += 1;
            }
        }));
    }
    {
        let (ch, stop, s) = (ch.clone(), stop.clone(), s.clone());
        ctl.push(std::thread::spawn(move || {
            let sets: [&[usize]; 6] = [&[0, 1], &[2, 3], &[1], &[0, 1, 2, 3], &[3, 0], &[2]];
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) && k < 400 {
                let list: Vec<&TestServer> = sets[k % sets.len()].iter().map(|&i| &s[i]).collect();
                ch.update_addresses(addrs_of(&list)).unwrap();
                std::thread::sleep(Duration::from_millis(55 + (k as u64 % 3) * 30));
                k += 1;
            }
        }));
    }
    {
        let (stop, s) = (stop.clone(), s.clone());
        ctl.push(std::thread::spawn(move || {
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) && k < 400 {
                s[k % 4].goaway();
                std::thread::sleep(Duration::from_millis(150));
                k += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for t in ctl {
        t.join().unwrap();
    }
    ch.update_addresses(addrs_of(&s.iter().collect::<Vec<_>>()))
        .unwrap();
    let_flow(&s, 20);
    let st = load.finish();
    check("everything at once", &ch, &st, 200, true);
    check_servers("everything at once", &s);
}

/// Reference point (not a graceful transition): a hard kill may lose the
/// calls in flight on it, as in gRPC; only those (UNAVAILABLE), never more
/// than were in flight there.
#[test]
fn hard_kill_loses_at_most_the_calls_in_flight_on_it() {
    let mut s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(RRC));
    let load = Load::start(&ch, 6, None);
    let_flow(&s, 30);
    let b = s.remove(1);
    let in_flight = b.in_flight();
    b.stop();
    let_flow(&s, 40);
    let st = load.finish();
    eprintln!(
        "hard kill: {in_flight} in flight there; ok={} failed={:?}",
        st.ok, st.failed
    );
    assert!(
        st.failed.len() as u64 <= in_flight.max(6),
        "more calls failed ({}) than were in flight on the killed backend ({in_flight})",
        st.failed.len()
    );
    assert!(
        st.failed
            .iter()
            .all(|f| f.contains("UNAVAILABLE") || f.contains("Unavailable")),
        "{:?}",
        st.failed
    );
    check_counts("hard kill", &ch, st.ok + st.failed.len() as u64);
}

/// Multi-address endpoints (gRFC A61: the endpoint's pick_first under the
/// petiole): addresses move between endpoints, endpoints lose the address
/// their connection is on, while calls run.
fn endpoint_churn(config: &str) {
    let s = servers(4);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(config));
    let ep = |ix: &[usize]| {
        Endpoint::new(
            ix.iter()
                .map(|&i| Address::new(s[i].addr().to_string()))
                .collect(),
        )
    };
    ch.update_endpoints(vec![ep(&[0, 1]), ep(&[2, 3])]).unwrap();
    let load = Load::start(&ch, 6, None);
    let_flow(&s, 20);
    let plans: Vec<Vec<Vec<usize>>> = vec![
        vec![vec![1, 0], vec![3, 2]],
        vec![vec![1], vec![3]],
        vec![vec![0, 1], vec![2, 3]],
        vec![vec![2, 0], vec![1, 3]],
        vec![vec![3, 2, 1, 0]],
        vec![vec![0], vec![1], vec![2], vec![3]],
        vec![vec![1, 2]],
        vec![vec![0, 1], vec![2, 3]],
    ];
    for round in 0..2 {
        for plan in &plans {
            ch.update_endpoints(plan.iter().map(|e| ep(e)).collect())
                .unwrap();
            ch.sync().unwrap();
            std::thread::sleep(Duration::from_millis(if round == 0 { 120 } else { 30 }));
        }
    }
    let_flow(&s, 20);
    let st = load.finish();
    check(&format!("endpoint churn {config}"), &ch, &st, 100, true);
    check_servers("endpoint churn", &s);
}

#[test]
fn endpoint_churn_round_robin() {
    endpoint_churn(RRC);
}
#[test]
fn endpoint_churn_weighted_round_robin() {
    endpoint_churn(WRR);
}
#[test]
fn endpoint_churn_least_request() {
    endpoint_churn(LR);
}
#[test]
fn endpoint_churn_ring_hash() {
    endpoint_churn(RH);
}
#[test]
fn endpoint_churn_outlier_detection() {
    endpoint_churn(OD);
}
#[test]
fn endpoint_churn_pick_first() {
    endpoint_churn(PF);
}

/// Short deadlines (600 ms; the server holds most calls 2-5 ms): a
/// transition that stalls picks for longer shows as DEADLINE_EXCEEDED.
#[test]
fn transitions_never_stall_calls_with_short_deadlines() {
    let s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(RRC));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (ch, stop) = (ch.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut r = ch.reader();
                let (mut ok, mut failed, mut worst) = (0u64, Vec::new(), Duration::ZERO);
                let give_up = Instant::now() + Duration::from_secs(30);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
                    n += 1;
                    let metadata = [("x-delay-ms".to_string(), "3".to_string())];
                    let start = Instant::now();
                    let opts = CallOptions {
                        deadline: Some(start + Duration::from_millis(600)),
                        wait_for_ready: Some(true),
                        metadata: &metadata,
                        hash: Some(n ^ (t << 40)),
                    };
                    match r.unary("/echo.Echo/Unary", b"ping", &opts) {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(format!("thread {t} call {n}: {e}")),
                    }
                    worst = worst.max(start.elapsed());
                }
                (ok, failed, worst)
            })
        })
        .collect();
    let_flow(&s, 20);
    for k in 0..40 {
        let cfg = ALL[k % ALL.len()].1;
        ch.update_service_config(cfg).unwrap();
        let set: Vec<&TestServer> = match k % 4 {
            0 => vec![&s[0], &s[1]],
            1 => vec![&s[2]],
            2 => vec![&s[1], &s[2]],
            _ => s.iter().collect(),
        };
        ch.update_addresses(addrs_of(&set)).unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed, mut worst) = (0, Vec::new(), Duration::ZERO);
    for t in threads {
        let (o, f, w) = t.join().unwrap();
        ok += o;
        failed.extend(f);
        worst = worst.max(w);
    }
    eprintln!(
        "short deadlines: ok={ok} failed={} worst={worst:?}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:#?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(10)]
    );
    check_counts("short deadlines", &ch, ok + failed.len() as u64);
}

/// Hedging and retry policies switched in and out (with address churn)
/// while calls run: none fails. (Hedges cancel their losers by design, so
/// server-side resets are not checked here.)
#[test]
fn hedging_and_retry_config_churn_with_address_churn_fail_no_call() {
    let s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(RRC));
    let hedge = r#"[{"name":[{}],"timeout":"9s","hedgingPolicy":{"maxAttempts":3,"hedgingDelay":"0.03s","nonFatalStatusCodes":["UNAVAILABLE"]}}]"#;
    let retry = r#"[{"name":[{}],"timeout":"9s","retryPolicy":{"maxAttempts":4,"initialBackoff":"0.01s","maxBackoff":"0.05s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]"#;
    let load = Load::start(&ch, 6, None);
    let_flow(&s, 20);
    for k in 0..30 {
        let p = ALL[k % ALL.len()].1;
        let cfg = match k % 3 {
            0 => with_methods(p, hedge),
            1 => with_methods(p, retry),
            _ => p.to_string(),
        };
        ch.update_service_config(&cfg).unwrap();
        let set: Vec<&TestServer> = match k % 4 {
            0 => vec![&s[0], &s[1]],
            1 => vec![&s[2]],
            2 => vec![&s[1], &s[2]],
            _ => s.iter().collect(),
        };
        ch.update_addresses(addrs_of(&set)).unwrap();
        ch.sync().unwrap();
        std::thread::sleep(Duration::from_millis(if k % 2 == 0 { 100 } else { 25 }));
    }
    let st = load.finish();
    check("hedging/retry churn", &ch, &st, 100, true);
}

/// A method config applies to the calls that start under it: calls in
/// flight (held 1.2 s) when the config's timeout drops to 50 ms still
/// complete OK (their deadline is the one they started with).
#[test]
fn a_shorter_method_timeout_does_not_cut_calls_already_in_flight() {
    let s = servers(2);
    let rt = Runtime::new().unwrap();
    let long_cfg = with_methods(RRC, r#"[{"name":[{}],"timeout":"9s"}]"#);
    let short_cfg = with_methods(PF, r#"[{"name":[{}],"timeout":"0.05s"}]"#);
    let ch = chan(&rt, &target_of(&s), Some(&long_cfg));
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let ch = ch.clone();
            std::thread::spawn(move || {
                let metadata = [("x-delay-ms".to_string(), "1200".to_string())];
                let opts = CallOptions {
                    wait_for_ready: Some(true),
                    metadata: &metadata,
                    ..Default::default()
                };
                let start = Instant::now();
                let r = if i % 2 == 0 {
                    ch.reader().unary("/echo.Echo/Unary", b"ping", &opts)
                } else {
                    let (tx, rx) = mpsc::channel();
                    ch.unary_start("/echo.Echo/Unary", b"ping", &opts, move |r| {
                        let _ = tx.send(r);
                    })
                    .unwrap();
                    rx.recv_timeout(Duration::from_secs(15)).unwrap()
                };
                (r.map(|_| ()), start.elapsed())
            })
        })
        .collect();
    wait_until("the calls to reach the servers", || {
        s.iter().map(TestServer::in_flight).sum::<u64>() == 6
    });
    ch.update_service_config(&short_cfg).unwrap();
    ch.sync().unwrap();
    // New calls get the new timeout.
    let metadata = [("x-delay-ms".to_string(), "500".to_string())];
    let opts = CallOptions {
        wait_for_ready: Some(true),
        metadata: &metadata,
        ..Default::default()
    };
    let new = ch.reader().unary("/echo.Echo/Unary", b"ping", &opts);
    assert_eq!(
        new.map(|_| ()).unwrap_err().code(),
        Code::DeadlineExceeded,
        "a new call gets the new 50 ms timeout"
    );
    let outcomes: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    eprintln!("in-flight calls: {outcomes:?}");
    assert!(
        outcomes.iter().all(|(r, _)| r.is_ok()),
        "calls in flight were cut by the new config: {outcomes:?}"
    );
    let snap = ch.snapshot().unwrap();
    assert_eq!(
        snap.calls_started,
        snap.calls_succeeded + snap.calls_failed + snap.calls_in_flight,
        "{snap:?}"
    );
    assert_eq!(
        (snap.calls_succeeded, snap.calls_failed),
        (6, 1),
        "{snap:?}"
    );
}

/// Every backend's health Watch breaks (the health service restarts) again
/// and again under load: the connections stay, the Watch is reopened, and
/// wait-for-ready calls never fail nor stall for long.
#[test]
fn health_watches_breaking_under_load_fail_no_call() {
    let s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(&health(RRC)));
    let load = Load::start(&ch, 6, None);
    let_flow(&s, 20);
    for k in 0..12 {
        for b in &s {
            b.break_health_watches();
        }
        if k == 6 {
            ch.update_service_config(&health(LR)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let_flow(&s, 20);
    let st = load.finish();
    check("health watches breaking", &ch, &st, 100, true);
    check_servers("health watches breaking", &s);
}

/// The channel goes IDLE between bursts while a backend drains (GOAWAY)
/// and another stops gracefully: none of it fails a call.
#[test]
fn idle_bursts_while_backends_drain_fail_no_call() {
    let mut s = servers(3);
    let rt = Runtime::new().unwrap();
    let mut o = plaintext_fast_backoff();
    o.idle_timeout = Some(Duration::from_millis(80));
    let ch = Arc::new(Channel::new(&rt, &target_of(&s), Some(PF), o).unwrap());
    let load = Load::start(&ch, 4, Some((12, Duration::from_millis(300))));
    let start = Instant::now();
    let mut stopped = false;
    while start.elapsed() < Duration::from_secs(3) {
        for b in &s {
            b.goaway();
        }
        std::thread::sleep(Duration::from_millis(130));
        if !stopped && start.elapsed() > Duration::from_millis(1500) {
            // The one pick_first is on, most likely.
            let i = (0..3).max_by_key(|&i| s[i].requests()).unwrap();
            s.remove(i).graceful_stop(Duration::from_secs(3));
            stopped = true;
        }
        ch.update_service_config(if start.elapsed().as_millis() % 2 == 0 {
            PF
        } else {
            RRC
        })
        .unwrap();
    }
    let st = load.finish();
    check("idle bursts while draining", &ch, &st, 50, false);
}

/// Snapshots taken while calls run and the channel switches: every one
/// adds up (started = succeeded + failed + in flight, for the channel and
/// each subchannel), and the channel's counts never go backwards.
#[test]
fn snapshots_during_load_and_switches_always_add_up() {
    let s = servers(3);
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(RRC));
    let load = Load::start(&ch, 8, None);
    let_flow(&s, 20);
    let start = Instant::now();
    let (mut bad, mut taken, mut k) = (Vec::new(), 0u64, 0usize);
    let mut prev = (0u64, 0u64, 0u64);
    while start.elapsed() < Duration::from_secs(3) {
        if taken % 200 == 0 {
            ch.update_service_config(ALL[k % ALL.len()].1).unwrap();
            let set: Vec<&TestServer> = match k % 3 {
                0 => vec![&s[0], &s[1]],
                1 => vec![&s[2]],
                _ => s.iter().collect(),
            };
            ch.update_addresses(addrs_of(&set)).unwrap();
            k += 1;
        }
        let snap = ch.snapshot().unwrap();
        taken += 1;
        let sum = snap.calls_succeeded + snap.calls_failed + snap.calls_in_flight;
        if snap.calls_started != sum {
            bad.push(format!(
                "channel: started {} != succeeded {} + failed {} + in flight {}",
                snap.calls_started, snap.calls_succeeded, snap.calls_failed, snap.calls_in_flight
            ));
        }
        let now = (snap.calls_started, snap.calls_succeeded, snap.calls_failed);
        if now.0 < prev.0 || now.1 < prev.1 || now.2 < prev.2 {
            bad.push(format!(
                "channel counts went backwards: {prev:?} -> {now:?}"
            ));
        }
        prev = now;
        for sc in &snap.subchannels {
            if sc.calls_started != sc.calls_succeeded + sc.calls_failed + sc.calls_in_flight {
                bad.push(format!("subchannel {sc:?}"));
            }
        }
    }
    let st = load.finish();
    eprintln!(
        "{taken} snapshots, {} bad: {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    check("snapshots under load", &ch, &st, 100, true);
    assert!(
        bad.is_empty(),
        "{} of {taken} snapshots did not add up: {:#?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
}

/// The harshest mix: 16 threads, a config (policy x health x retry) and an
/// address list (sometimes with a dead address in it, never without a live
/// one) every few ms, GOAWAYs, for 3 s; fail-fast threads included.
#[test]
fn rapid_fire_everything_with_a_dead_address_fails_no_call() {
    let s = servers(3);
    let dead = format!("127.0.0.1:{}", free_port());
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(RRC));
    let load = Load::start_with(&ch, 16, None, true);
    let_flow(&s, 20);
    let start = Instant::now();
    let mut k = 0usize;
    let retry = r#"[{"name":[{}],"timeout":"9s","retryPolicy":{"maxAttempts":2,"initialBackoff":"0.01s","maxBackoff":"0.01s","backoffMultiplier":1,"retryableStatusCodes":["UNAVAILABLE"]}}]"#;
    while start.elapsed() < Duration::from_secs(3) {
        let p = ALL[(k * 7) % ALL.len()].1;
        let cfg = match k % 4 {
            0 => health(p),
            1 => with_methods(p, retry),
            _ => p.to_string(),
        };
        ch.update_service_config(&cfg).unwrap();
        let mut list: Vec<Address> = match k % 5 {
            0 => addrs_of(&[&s[0]]),
            1 => addrs_of(&[&s[2], &s[1]]),
            2 => addrs_of(&[&s[1]]),
            3 => addrs_of(&[&s[0], &s[1], &s[2]]),
            _ => addrs_of(&[&s[2]]),
        };
        if k % 3 == 0 {
            list.insert(0, Address::new(dead.clone()));
        }
        ch.update_addresses(list).unwrap();
        if k % 25 == 0 {
            s[k % 3].goaway();
        }
        std::thread::sleep(Duration::from_millis(2 + (k as u64 % 7)));
        k += 1;
    }
    ch.update_addresses(addrs_of(&s.iter().collect::<Vec<_>>()))
        .unwrap();
    let_flow(&s, 20);
    let st = load.finish();
    eprintln!("{k} updates");
    check("rapid fire", &ch, &st, 200, true);
    check_servers("rapid fire", &s);
}

/// Control calls from several threads at once while calls run: updates,
/// `sync`, `snapshot`, `get_state(true)`, `reset_connect_backoff`. Nothing
/// deadlocks (each control thread finishes its bounded loop within 20 s)
/// and no call fails.
#[test]
fn concurrent_control_calls_under_load_neither_deadlock_nor_fail_calls() {
    let s = Arc::new(servers(3));
    let rt = Runtime::new().unwrap();
    let ch = chan(&rt, &target_of(&s), Some(RRC));
    let load = Load::start(&ch, 6, None);
    let_flow(&s, 20);
    let (tx, rx) = mpsc::channel();
    for c in 0..4usize {
        let (ch, s, tx) = (ch.clone(), s.clone(), tx.clone());
        std::thread::spawn(move || {
            for k in 0..150usize {
                match (c + k) % 6 {
                    0 => ch
                        .update_service_config(ALL[(k + c) % ALL.len()].1)
                        .unwrap(),
                    1 => {
                        let set: Vec<&TestServer> = match k % 3 {
                            0 => vec![&s[0], &s[1]],
                            1 => vec![&s[2]],
                            _ => s.iter().collect(),
                        };
                        ch.update_addresses(addrs_of(&set)).unwrap();
                    }
                    2 => ch.sync().unwrap(),
                    3 => {
                        ch.snapshot().unwrap();
                    }
                    4 => {
                        ch.get_state(true);
                    }
                    _ => ch.reset_connect_backoff().unwrap(),
                }
                std::thread::sleep(Duration::from_millis(3));
            }
            let _ = tx.send(c);
        });
    }
    drop(tx);
    let mut done = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(20);
    while done.len() < 4 {
        match rx.recv_timeout(give_up.saturating_duration_since(Instant::now())) {
            Ok(c) => done.push(c),
            Err(e) => panic!("control threads stuck ({e}); finished: {done:?}"),
        }
    }
    ch.update_addresses(addrs_of(&s.iter().collect::<Vec<_>>()))
        .unwrap();
    let_flow(&s, 20);
    let st = load.finish();
    check("concurrent control", &ch, &st, 100, true);
    check_servers("concurrent control", &s);
}

/// Calls queued (wait-for-ready) on a channel whose only address is dead
/// live through policy switches (each new picker re-picks them) and all
/// complete once a live address arrives.
#[test]
fn queued_calls_survive_policy_switches_until_a_backend_arrives() {
    let s = servers(2);
    let dead = format!("127.0.0.1:{}", free_port());
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(
        Channel::new(
            &rt,
            &format!("ipv4:{dead}"),
            Some(RRC),
            plaintext_fast_backoff(),
        )
        .unwrap(),
    );
    ch.connect().unwrap();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let ch = ch.clone();
            std::thread::spawn(move || {
                let opts = CallOptions {
                    deadline: Some(Instant::now() + DEADLINE),
                    wait_for_ready: Some(true),
                    hash: Some(i * 7919),
                    ..Default::default()
                };
                if i % 2 == 0 {
                    ch.reader()
                        .unary("/echo.Echo/Unary", b"ping", &opts)
                        .map(|_| ())
                } else {
                    let (tx, rx) = mpsc::channel();
                    ch.unary_start("/echo.Echo/Unary", b"ping", &opts, move |r| {
                        let _ = tx.send(r);
                    })
                    .unwrap();
                    rx.recv_timeout(Duration::from_secs(15))
                        .unwrap()
                        .map(|_| ())
                }
            })
        })
        .collect();
    wait_until("the calls to start", || {
        ch.snapshot().unwrap().calls_in_flight == 8
    });
    for (_, cfg) in ALL.iter().chain(ALL.iter()) {
        ch.update_service_config(cfg).unwrap();
        ch.sync().unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    ch.update_service_config(RH).unwrap();
    ch.update_addresses(vec![
        Address::new(dead.clone()),
        Address::new(s[0].addr().to_string()),
        Address::new(s[1].addr().to_string()),
    ])
    .unwrap();
    let outcomes: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    check_counts("queued calls", &ch, 8);
}
