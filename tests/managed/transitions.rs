//! Graceful transitions under load, as gRPC makes them: slow unary RPCs run
//! without a break against three backends on 127.0.0.1 (blocking calls and
//! calls started on the loop, fail-fast and wait-for-ready, each with a
//! request hash) while the channel goes through a transition: a policy
//! switch through every built-in policy, a backend dropped from the address
//! list and added back, a backend's GOAWAY (and its graceful stop and
//! restart), or the channel going IDLE between bursts. No RPC may fail:
//! with some backend always up, gRPC fails none of these (a pick on a
//! connection going away waits for the next picker, a stream the server
//! never processed is retried transparently, a drained connection finishes
//! its calls). Every transition is made with calls held by the servers
//! (`x-delay-ms`), so calls are in flight across each; the picks after it
//! follow the new policy or address list. Bounded throughout: 4 RPC
//! threads, each RPC 20-100 ms, each wait at most 30 s.

use crate::support::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::*;
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

const PF: &str = r#"{"loadBalancingConfig":[{"pick_first":{}}]}"#;
const RR_JSON: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
const WRR: &str = r#"{"loadBalancingConfig":[{"weighted_round_robin":{}}]}"#;
const LR: &str = r#"{"loadBalancingConfig":[{"least_request_experimental":{}}]}"#;
const RH: &str =
    r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"minRingSize":64,"maxRingSize":256}}]}"#;
const OD: &str = r#"{"loadBalancingConfig":[{"outlier_detection_experimental":{"interval":"1s","failurePercentageEjection":{},"childPolicy":[{"round_robin":{}}]}}]}"#;
const RANDOM: &str = r#"{"loadBalancingConfig":[{"random":{}}]}"#;

/// The longest any wait here may take (a loaded 2-CPU machine is slow).
const BOUND: Duration = Duration::from_secs(30);

/// Polls `cond` every 5 ms for up to `BOUND`.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The port in an echo reply to "load".
fn port_of(message: &[u8]) -> u16 {
    let text = std::str::from_utf8(message).unwrap();
    let port = text.rsplit_once("|port=").expect("an echo reply").1;
    port.parse().unwrap()
}

/// One RPC of the load: when it started and ended, and how.
struct Outcome {
    started: Instant,
    ended: Instant,
    wait_for_ready: bool,
    how: &'static str,
    result: Result<u16, Status>,
}

/// A request hash that differs from call to call (ring_hash needs one; the
/// other policies ignore it).
fn hash_of(thread: u64, i: u64) -> u64 {
    (thread << 32 | i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A server hold of 20-100 ms, varying from call to call.
fn delay_of(i: u64) -> String {
    (20 + (i * 37) % 81).to_string()
}

/// Slow RPCs from 4 threads until stopped (each bounded to `MAX_PER_THREAD`
/// RPCs and `BOUND`): a blocking fail-fast one, a blocking wait-for-ready
/// one, and two that keep `STARTED_AT_ONCE` started calls each in flight,
/// fail-fast and wait-for-ready.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Outcome>>>,
}

const MAX_PER_THREAD: u64 = 2000;
const STARTED_AT_ONCE: usize = 3;

impl Load {
    fn start(ch: &Arc<Channel>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..4u64)
            .map(|t| {
                let (ch, stop) = (ch.clone(), stop.clone());
                std::thread::spawn(move || {
                    let wait_for_ready = t % 2 == 1;
                    if t < 2 {
                        blocking(&ch, &stop, t, wait_for_ready)
                    } else {
                        started(&ch, &stop, t, wait_for_ready)
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the load: every RPC's outcome.
    fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    }
}

fn blocking(ch: &Channel, stop: &AtomicBool, t: u64, wait_for_ready: bool) -> Vec<Outcome> {
    let mut r = ch.reader();
    let mut out = Vec::new();
    let give_up = Instant::now() + BOUND * 2;
    for i in 0..MAX_PER_THREAD {
        if stop.load(Ordering::Relaxed) || Instant::now() > give_up {
            break;
        }
        let metadata = [("x-delay-ms".to_string(), delay_of(i))];
        let started = Instant::now();
        let opts = CallOptions {
            deadline: Some(started + BOUND),
            wait_for_ready: Some(wait_for_ready),
            metadata: &metadata,
            hash: Some(hash_of(t, i)),
        };
        let result = r
            .unary("/echo.Echo/Unary", b"load", &opts)
            .map(|resp| port_of(&resp.message));
        out.push(Outcome {
            started,
            ended: Instant::now(),
            wait_for_ready,
            how: "blocking",
            result,
        });
    }
    out
}

fn started(ch: &Channel, stop: &AtomicBool, t: u64, wait_for_ready: bool) -> Vec<Outcome> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut out = Vec::new();
    let mut in_flight = 0;
    let give_up = Instant::now() + BOUND * 2;
    for i in 0..MAX_PER_THREAD {
        let stopping = stop.load(Ordering::Relaxed) || Instant::now() > give_up;
        if !stopping && in_flight < STARTED_AT_ONCE {
            let metadata = [("x-delay-ms".to_string(), delay_of(i))];
            let started = Instant::now();
            let opts = CallOptions {
                deadline: Some(started + BOUND),
                wait_for_ready: Some(wait_for_ready),
                metadata: &metadata,
                hash: Some(hash_of(t, i)),
            };
            let tx = tx.clone();
            ch.unary_start("/echo.Echo/Unary", b"load", &opts, move |r| {
                let _ = tx.send((started, r.map(|resp| port_of(&resp.message))));
            })
            .expect("the call starts");
            in_flight += 1;
            continue;
        }
        if in_flight == 0 {
            break;
        }
        let (started, result) = rx
            .recv_timeout(BOUND + Duration::from_secs(5))
            .expect("a started call completes by its deadline");
        in_flight -= 1;
        out.push(Outcome {
            started,
            ended: Instant::now(),
            wait_for_ready,
            how: "started",
            result,
        });
    }
    // The bound on iterations may leave calls out: wait for them too.
    for _ in 0..in_flight {
        let (started, result) = rx.recv_timeout(BOUND + Duration::from_secs(5)).unwrap();
        out.push(Outcome {
            started,
            ended: Instant::now(),
            wait_for_ready,
            how: "started",
            result,
        });
    }
    out
}

/// No RPC failed; at least `min` ran.
fn assert_none_failed(outcomes: &[Outcome], min: usize) {
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.result.as_ref().err().map(|e| {
                format!(
                    "{} wait_for_ready={} after {:?}: {e}",
                    o.how,
                    o.wait_for_ready,
                    o.ended - o.started
                )
            })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} RPCs failed: {failed:#?}",
        failed.len(),
        outcomes.len()
    );
    assert!(
        outcomes.len() >= min,
        "only {} RPCs ran (want {min})",
        outcomes.len()
    );
}

/// How many RPCs were in flight at `at` (started before, ended after).
/// Every transition in `at` (what, when) had an RPC in flight across it.
fn assert_spanned(outcomes: &[Outcome], at: &[(&str, Instant)], context: &str) {
    for (what, when) in at {
        assert!(
            spanning(outcomes, *when) >= 1,
            "{context}: no RPC was in flight at {what}"
        );
    }
}

fn spanning(outcomes: &[Outcome], at: Instant) -> usize {
    outcomes
        .iter()
        .filter(|o| o.started < at && o.ended > at)
        .count()
}

fn in_flight(servers: &[TestServer]) -> u64 {
    servers.iter().map(TestServer::in_flight).sum()
}

/// Waits until the servers hold at least `n` calls between them.
fn wait_held(servers: &[TestServer], n: u64) {
    eventually(&format!("{n} calls held by the servers"), || {
        in_flight(servers) >= n
    });
}

/// `n` quick wait-for-ready RPCs (no server hold) with hashes from `hash`,
/// counted per port.
fn probe(r: &mut Reader, n: u64, hash: impl Fn(u64) -> u64) -> HashMap<u16, usize> {
    let mut per = HashMap::new();
    for i in 0..n {
        let opts = CallOptions {
            deadline: Some(Instant::now() + BOUND),
            wait_for_ready: Some(true),
            hash: Some(hash(i)),
            ..Default::default()
        };
        let resp = r
            .unary("/echo.Echo/Unary", b"probe", &opts)
            .expect("a wait-for-ready probe never fails");
        *per.entry(port_of(&resp.message)).or_default() += 1;
    }
    per
}

/// The subchannels' count once it is `n`, all READY: the policy that has
/// `n` of them has taken over, the old one's gone.
fn wait_subchannels(ch: &Channel, what: &str, n: usize, all_ready: bool) {
    eventually(what, || {
        let snap = ch.snapshot().unwrap();
        snap.subchannels.len() == n
            && (!all_ready || snap.subchannels.iter().all(|s| s.state == Ready))
    });
}

/// What a policy's picks look like once it has taken over.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// pick_first: one backend, the first address.
    First,
    /// Spread over every backend (round_robin, weighted_round_robin
    /// without load reports, least_request, random, outlier detection
    /// around round_robin).
    Spread,
    /// ring_hash: a hash always lands on the same backend, and hashes
    /// spread.
    Hashed,
}

fn assert_shape(ch: &Channel, shape: Shape, ports: &[u16], name: &str) {
    let mut r = ch.reader();
    let all: HashSet<u16> = ports.iter().copied().collect();
    match shape {
        Shape::First => {
            // The old policy's picks may still be in the reader's table for
            // a moment after the subchannel count settled: look until only
            // the first backend answers (bounded).
            eventually(&format!("{name}: every pick on the first address"), || {
                probe(&mut r, 10, |i| i).keys().eq([&ports[0]])
            });
        }
        Shape::Spread => {
            eventually(&format!("{name}: picks spread over all backends"), || {
                let seen: HashSet<u16> = probe(&mut r, 30, |i| i).keys().copied().collect();
                seen == all
            });
        }
        Shape::Hashed => {
            for h in [1u64, 0xdead_beef, u64::MAX / 3] {
                let per = probe(&mut r, 8, |_| h);
                assert_eq!(per.len(), 1, "{name}: hash {h} went to {per:?}");
            }
            eventually(&format!("{name}: hashes spread over backends"), || {
                probe(&mut r, 30, |i| hash_of(99, i)).len() >= 2
            });
        }
    }
}

/// (1) The service config switches pick_first -> round_robin ->
/// weighted_round_robin -> least_request -> ring_hash -> outlier_detection
/// -> random -> pick_first, each while calls are held on the servers: none
/// fails, wait-for-ready or fail-fast, blocking or started, and each policy
/// picks as it should once it has taken over.
#[test]
fn policy_switches_through_every_policy_under_slow_load_fail_no_rpc() {
    let servers = start_servers(3);
    let ports: Vec<u16> = servers.iter().map(TestServer::port).collect();
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(channel(&rt, &target(&servers), Some(PF), plaintext()));
    echo(&mut ch.reader(), true).unwrap();
    let load = Load::start(&ch);
    let steps = [
        (RR_JSON, "round_robin", Shape::Spread, Some(3)),
        (WRR, "weighted_round_robin", Shape::Spread, Some(3)),
        (LR, "least_request", Shape::Spread, Some(3)),
        // Lazy: its subchannels connect as hashes land on them.
        (RH, "ring_hash", Shape::Hashed, None),
        (OD, "outlier_detection(round_robin)", Shape::Spread, Some(3)),
        (RANDOM, "random", Shape::Spread, Some(3)),
        (PF, "pick_first", Shape::First, Some(1)),
    ];
    let mut switched_at = Vec::new();
    for (config, name, shape, subchannels) in steps.into_iter().cycle().take(2 * steps.len()) {
        // Some RPCs on each policy, and some held at the switch.
        let until = requests(&servers) + 15;
        eventually("RPCs to flow", || requests(&servers) >= until);
        wait_held(&servers, 2);
        switched_at.push((name, Instant::now()));
        ch.update_service_config(config).unwrap();
        ch.sync().unwrap();
        if let Some(n) = subchannels {
            wait_subchannels(&ch, &format!("{name} to take over"), n, true);
        }
        assert_shape(&ch, shape, &ports, name);
        assert_eq!(ch.state(), Ready, "after switching to {name}");
    }
    let outcomes = load.finish();
    assert_none_failed(&outcomes, 100);
    assert_spanned(&outcomes, &switched_at, "switching to");
}

/// (2) Backend 2 leaves the address list and comes back, five times, with
/// calls held on it each time it leaves: those finish OK on it, no call
/// fails, and no call started after the update lands on it until it is
/// back.
#[test]
fn dropping_and_re_adding_a_backend_under_slow_load_fails_no_rpc() {
    for config in [RR_JSON, RH, PF] {
        drop_and_re_add(config);
    }
}

fn drop_and_re_add(config: &str) {
    let servers = start_servers(3);
    let ports: Vec<u16> = servers.iter().map(TestServer::port).collect();
    let addrs: Vec<Address> = servers
        .iter()
        .map(|s| Address::new(s.addr().to_string()))
        .collect();
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(channel(&rt, &target(&servers), Some(config), plaintext()));
    probe(&mut ch.reader(), 1, |i| i);
    let load = Load::start(&ch);
    let mut removals = Vec::new();
    for round in 0..5u64 {
        // The backend that goes: pick_first's only one (it stays on the
        // backend it moved to when the first comes back, as gRPC's does),
        // else the last.
        let gone = if config == PF {
            let per = probe(&mut ch.reader(), 4, |i| i);
            assert_eq!(per.len(), 1, "pick_first uses one backend: {per:?}");
            ports.iter().position(|p| per.contains_key(p)).unwrap()
        } else {
            2
        };
        eventually(
            &format!("{config}: a call held on backend {gone} ({round})"),
            || servers[gone].in_flight() >= 1,
        );
        let removed_at = Instant::now();
        let kept: Vec<Address> = addrs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != gone)
            .map(|(_, a)| a.clone())
            .collect();
        ch.update_addresses(kept).unwrap();
        ch.sync().unwrap();
        let applied_at = Instant::now();
        // New picks avoid it at once.
        let per = probe(&mut ch.reader(), 12, |i| hash_of(7, i));
        assert!(
            !per.contains_key(&ports[gone]),
            "{config}: picked a removed backend: {per:?}"
        );
        // Its calls in flight drain; its connection then closes.
        eventually(
            &format!("{config}: backend {gone} drained ({round})"),
            || servers[gone].connections() == 0,
        );
        let re_added_at = Instant::now();
        removals.push((ports[gone], removed_at, applied_at, re_added_at));
        ch.update_addresses(addrs.clone()).unwrap();
        ch.sync().unwrap();
        if config != PF {
            // New hashes each time: ring_hash sends a hash where it did.
            let mut tries = 0;
            eventually(&format!("{config}: backend {gone} back ({round})"), || {
                tries += 1;
                probe(&mut ch.reader(), 12, |i| hash_of(round << 20 | tries, i))
                    .contains_key(&ports[gone])
            });
        }
    }
    let outcomes = load.finish();
    assert_none_failed(&outcomes, 40);
    let mut drained = 0;
    for (gone_port, removed_at, applied_at, re_added_at) in removals {
        drained += outcomes
            .iter()
            .filter(|o| o.started < removed_at && o.ended > removed_at)
            .filter(|o| o.result.as_ref().is_ok_and(|p| *p == gone_port))
            .count();
        // Nothing started after the update reached the loop, and before
        // the backend was added back, went there.
        let misplaced = outcomes
            .iter()
            .filter(|o| o.started > applied_at && o.started < re_added_at)
            .filter(|o| o.result.as_ref().is_ok_and(|p| *p == gone_port))
            .count();
        assert_eq!(misplaced, 0, "{config}: calls picked a removed backend");
    }
    // Each removal came with a call held there; one that ended just as the
    // update went out (a loaded machine) does not count: over five
    // rounds, some did finish on the removed backend after its removal.
    assert!(
        drained >= 1,
        "{config}: no call on a removed backend finished after its removal"
    );
}

/// (3) A backend's GOAWAY (the server stays up: its connection drains and
/// the channel reconnects), then a backend's graceful stop (GOAWAY, its
/// calls finish, it closes) and restart on the same port, each with calls
/// held on that backend: none fails, and the backend serves again after.
#[test]
fn goaway_graceful_stop_and_restart_under_slow_load_fail_no_rpc() {
    for config in [RR_JSON, PF] {
        goaway_stop_restart(config);
    }
}

fn goaway_stop_restart(config: &str) {
    let mut servers: Vec<Option<TestServer>> = start_servers(3).into_iter().map(Some).collect();
    let addrs: Vec<std::net::SocketAddr> =
        servers.iter().map(|s| s.as_ref().unwrap().addr()).collect();
    let ports: Vec<u16> = addrs.iter().map(std::net::SocketAddr::port).collect();
    let target = format!(
        "ipv4:{}",
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(channel(
        &rt,
        &target,
        Some(config),
        plaintext_fast_backoff(),
    ));
    echo(&mut ch.reader(), true).unwrap();
    let load = Load::start(&ch);
    // The backend to steer: one of round_robin's, pick_first's only one.
    let serving = |ch: &Channel| -> usize {
        if config != PF {
            return 1;
        }
        let per = probe(&mut ch.reader(), 4, |i| i);
        assert_eq!(per.len(), 1, "pick_first uses one backend: {per:?}");
        let port = *per.keys().next().unwrap();
        ports.iter().position(|p| *p == port).unwrap()
    };
    let mut transitions = Vec::new();
    for round in 0..3 {
        let b = serving(&ch);
        let s = servers[b].as_ref().unwrap();
        eventually(
            &format!("{config}: a call held on backend {b} ({round})"),
            || s.in_flight() >= 1,
        );
        transitions.push(("goaway", Instant::now()));
        let before = s.requests();
        s.goaway();
        // Its calls drain, the connection closes, the channel reconnects
        // and calls reach it again.
        eventually(
            &format!("{config}: backend {b} serving again after GOAWAY ({round})"),
            || {
                probe(&mut ch.reader(), 6, |i| i);
                s.requests() > before + 2 && s.connections() >= 1
            },
        );
    }
    for round in 0..3 {
        let b = serving(&ch);
        let s = servers[b].take().unwrap();
        eventually(
            &format!("{config}: a call held on backend {b} ({round})"),
            || s.in_flight() >= 1,
        );
        transitions.push(("graceful stop", Instant::now()));
        assert!(
            s.graceful_stop(BOUND),
            "{config}: the stopping backend's connections did not close by themselves"
        );
        // Down a while: the others serve (pick_first moves on).
        std::thread::sleep(Duration::from_millis(200));
        probe(&mut ch.reader(), 6, |i| i);
        let restarted = TestServer::start(Listen::Tcp(addrs[b]), ServerOptions::default());
        servers[b] = Some(restarted.unwrap());
        if config != PF {
            let s = servers[b].as_ref().unwrap();
            eventually(
                &format!("{config}: backend {b} serving again after restart ({round})"),
                || {
                    probe(&mut ch.reader(), 6, |i| i);
                    s.requests() >= 2
                },
            );
        }
    }
    let outcomes = load.finish();
    assert_none_failed(&outcomes, 100);
    assert_spanned(&outcomes, &transitions, config);
}

/// (4) A channel with a short idle timeout goes IDLE between bursts of
/// RPCs (fail-fast and wait-for-ready, blocking and started, some held
/// longer than the timeout), each burst starting about when the channel
/// goes idle: none fails, and each burst brings it back.
#[test]
fn bursts_across_channel_idleness_fail_no_rpc() {
    let servers = start_servers(3);
    let rt = Runtime::new().unwrap();
    let idle = Duration::from_millis(200);
    for config in [RR_JSON, PF] {
        let opts = ChannelOptions {
            idle_timeout: Some(idle),
            ..plaintext()
        };
        let ch = Arc::new(Channel::new(&rt, &target(&servers), Some(config), opts).unwrap());
        let mut outcomes = Vec::new();
        let mut went_idle = 0;
        for round in 0..12u64 {
            // Start the burst around the moment the channel goes idle:
            // before, at, or after it.
            let wait = match round % 3 {
                0 => idle.mul_f64(0.9),
                1 => idle.mul_f64(1.05),
                _ => idle * 3,
            };
            std::thread::sleep(wait);
            if ch.state() == Idle {
                went_idle += 1;
            }
            let burst: Vec<_> = (0..4u64)
                .map(|t| {
                    let ch = ch.clone();
                    std::thread::spawn(move || {
                        let wait_for_ready = t % 2 == 1;
                        // One held past the idle timeout, the rest short.
                        let hold = if t == 0 { "300" } else { "20" };
                        let metadata = [("x-delay-ms".to_string(), hold.to_string())];
                        let started = Instant::now();
                        let opts = CallOptions {
                            deadline: Some(started + BOUND),
                            wait_for_ready: Some(wait_for_ready),
                            metadata: &metadata,
                            hash: Some(hash_of(t, round)),
                        };
                        let result = if t < 2 {
                            ch.reader().unary("/echo.Echo/Unary", b"load", &opts)
                        } else {
                            echo_call(&ch, true, &opts)
                        };
                        Outcome {
                            started,
                            ended: Instant::now(),
                            wait_for_ready,
                            how: if t < 2 { "blocking" } else { "started" },
                            result: result.map(|r| port_of(&r.message)),
                        }
                    })
                })
                .collect();
            outcomes.extend(burst.into_iter().map(|t| t.join().unwrap()));
        }
        assert_none_failed(&outcomes, 48);
        // The channel went idle between bursts (at least in the rounds
        // that waited three timeouts).
        assert!(went_idle >= 1, "{config}: never went IDLE");
        ch.close();
    }
}

/// (3b) Every backend sends GOAWAY at once (a rolling restart's worst
/// moment: no connection left that takes new calls), under every policy:
/// the servers stay up, so the channel only reconnects, and neither a
/// fail-fast nor a wait-for-ready RPC fails (gRPC queues picks while it
/// connects: the subchannels go IDLE, then CONNECTING, never
/// TRANSIENT_FAILURE).
#[test]
fn every_backend_s_goaway_at_once_fails_no_rpc_under_any_policy() {
    let servers = start_servers(3);
    let rt = Runtime::new().unwrap();
    for config in [PF, RR_JSON, WRR, LR, RH, OD, RANDOM] {
        let ch = Arc::new(channel(&rt, &target(&servers), Some(config), plaintext()));
        probe(&mut ch.reader(), 1, |i| i);
        let load = Load::start(&ch);
        let mut sent_at = Vec::new();
        for round in 0..3 {
            let until = requests(&servers) + 10;
            eventually("RPCs to flow", || requests(&servers) >= until);
            wait_held(&servers, 2);
            sent_at.push(Instant::now());
            for s in &servers {
                s.goaway();
            }
            // Served again on new connections.
            let until = requests(&servers) + 10;
            eventually(&format!("{config}: served again ({round})"), || {
                requests(&servers) >= until
            });
        }
        let outcomes = load.finish();
        assert_none_failed(&outcomes, 30);
        let bursts: Vec<(&str, Instant)> = sent_at.into_iter().map(|at| ("a burst", at)).collect();
        assert_spanned(&outcomes, &bursts, config);
        ch.close();
    }
}
