//! The main job: real HTTP/2 gRPC backends on loopback, unary RPCs balanced
//! across them from several threads, and the three things that happen to
//! backends in production:
//!
//! 1. a **graceful stop** (the server stops accepting, sends GOAWAY, finishes
//!    the calls in flight, then closes): the channel moves new calls to the
//!    others and **no RPC fails**;
//! 2. a **restart** at a fresh address, announced to the channel as a
//!    resolver update (as a rescheduled instance is): it rejoins;
//! 3. a **hard kill** (every connection dropped at once): the calls in flight
//!    on it are lost, as in gRPC; they are counted apart, and any other
//!    failure is still a failure.
//!
//! Exits 0 only if nothing failed, every phase saw traffic and (under
//! round_robin) the restarted backend rejoined; 1 otherwise; 2 for bad flags
//! or setup.
//!
//! cargo run --release --example demo -- [--policy round_robin]
//!     [--backends 3] [--duration 12] [--threads 4] [--service-config JSON]
//!     [--target TARGET]
//!
//! `--policy NAME` runs any registered policy with its defaults (outlier
//! detection over round_robin; every RPC carries a random request hash, for
//! ring_hash); an unknown name is refused up front.
//! `--service-config` replaces the config `--policy` makes (its policy is
//! the one shown); an invalid one is refused up front with the JSON path
//! that is wrong (a channel would start in TRANSIENT_FAILURE with it).
//! `--target` names the channel's target; `{addrs}` in it stands for the
//! backends' addresses, comma-separated (the default is `ipv4:{addrs}`), and
//! `{port}` for the first backend's port (`dns:///localhost:{port}`
//! resolves through DNS). The checks assume the target reaches every
//! backend, as the default does.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

struct Args {
    policy: String,
    backends: usize,
    duration: Duration,
    threads: usize,
    service_config: Option<String>,
    target: String,
}

const USAGE: &str =
    "usage: demo [--policy NAME] [--backends N] [--duration SECONDS] [--threads N] \
                     [--service-config JSON] \
                     [--target TARGET ({addrs}: the backends' addresses; default ipv4:{addrs})]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        policy: "round_robin".into(),
        backends: 3,
        duration: Duration::from_secs(12),
        threads: 4,
        service_config: None,
        target: "ipv4:{addrs}".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--policy" => a.policy = value()?,
            "--backends" => {
                a.backends = value()?.parse().map_err(|_| "--backends takes a number")?
            }
            "--duration" => {
                let secs: f64 = value()?.parse().map_err(|_| "--duration takes seconds")?;
                if !(3.0..=3600.0).contains(&secs) {
                    return Err("--duration must be between 3 and 3600 seconds".into());
                }
                a.duration = Duration::from_secs_f64(secs);
            }
            "--threads" => a.threads = value()?.parse().map_err(|_| "--threads takes a number")?,
            "--service-config" => a.service_config = Some(value()?),
            "--target" => a.target = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if !(2..=16).contains(&a.backends) {
        return Err("--backends must be 2 to 16 (one is stopped, one killed)".into());
    }
    if !(1..=256).contains(&a.threads) {
        return Err("--threads must be 1 to 256".into());
    }
    match &a.service_config {
        Some(json) => {
            let parsed = service_config::ServiceConfig::parse(Some(json))
                .map_err(|e| format!("--service-config is invalid: {e}"))?;
            a.policy = parsed.policy.name().to_string();
        }
        None => {
            // Refused up front too: an unknown name, say.
            let json = policy_config(&a.policy);
            service_config::ServiceConfig::parse(Some(&json))
                .map_err(|e| format!("--policy {}: {e}", a.policy))?;
            a.service_config = Some(json);
        }
    }
    Ok(a)
}

/// The service config `--policy NAME` stands for: the policy with its
/// defaults; outlier detection wraps round_robin (it needs a child).
/// ring_hash hashes each RPC's own hash (the RPC threads give every call a
/// random one).
fn policy_config(policy: &str) -> String {
    let config = match policy {
        "outlier_detection_experimental" => r#"{"childPolicy":[{"round_robin":{}}]}"#,
        _ => "{}",
    };
    format!(r#"{{"loadBalancingConfig":[{{{policy:?}:{config}}}]}}"#)
}

/// The demo's phases, in order; each starts with the event that names it.
const PHASES: [&str; 4] = ["all up", "drained", "rejoined", "killed"];
const ALL_UP: usize = 0;
const DRAINED: usize = 1;
const REJOINED: usize = 2;
const KILLED: usize = 3;

/// The backend that serves most in `phase` among `candidates` (the first
/// candidate on a tie): the one whose loss shows, whatever the policy.
fn busiest(stats: &Stats, phase: usize, candidates: impl Iterator<Item = usize>) -> usize {
    let mut best: Option<usize> = None;
    for b in candidates {
        if best.is_none_or(|x| stats.served(b, phase) > stats.served(x, phase)) {
            best = Some(b);
        }
    }
    best.unwrap_or(0)
}

/// How long a graceful stop may take before it is cut short (a deployment's
/// termination grace period; the echo calls here take microseconds).
const GRACE: Duration = Duration::from_secs(5);
/// How long a phase may wait past its planned end for the traffic it needs
/// (every backend serving, the restarted one rejoining) on a busy machine.
const GATE: Duration = Duration::from_secs(10);
/// Failures described one by one; the rest are only counted.
const DESCRIBED: u64 = 5;

struct Backend {
    /// Its first port and its current one (different after the restart).
    first_port: AtomicU16,
    port: AtomicU16,
    /// RPCs it answered, per phase.
    served: [AtomicU64; 4],
}

struct Stats {
    backends: Vec<Backend>,
    phase: AtomicUsize,
    /// RPCs that failed for any reason but the hard kill, per phase.
    failed: [AtomicU64; 4],
    /// RPCs lost in flight to the hard kill.
    lost: AtomicU64,
    /// The picker generation the channel had when the hard kill began:
    /// u64::MAX until then. A call that started on a picker no newer than
    /// this may have been on the killed backend's connections before the
    /// client could know they were gone.
    kill_generation: AtomicU64,
    killed: AtomicBool,
    /// The backends stopped gracefully (then restarted) and killed; the
    /// latter is usize::MAX until chosen.
    drained_victim: AtomicUsize,
    killed_victim: AtomicUsize,
    /// Lines for the main thread to print above the live view.
    events: Mutex<Vec<String>>,
    stop: AtomicBool,
    start: Instant,
}

impl Stats {
    fn event(&self, line: String) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn backend_of(&self, port: u16) -> Option<usize> {
        self.backends.iter().position(|b| {
            b.port.load(Ordering::Relaxed) == port || b.first_port.load(Ordering::Relaxed) == port
        })
    }

    fn served(&self, backend: usize, phase: usize) -> u64 {
        self.backends[backend].served[phase].load(Ordering::Relaxed)
    }

    fn total(&self, backend: usize) -> u64 {
        (0..PHASES.len()).map(|p| self.served(backend, p)).sum()
    }

    /// Counts a failure in the current phase; returns the failures before it.
    fn fail(&self) -> u64 {
        let before = self.failed_total();
        self.failed[self.phase.load(Ordering::Relaxed)].fetch_add(1, Ordering::Relaxed);
        before
    }

    fn failed_total(&self) -> u64 {
        self.failed.iter().map(|f| f.load(Ordering::Relaxed)).sum()
    }

    fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// Stops the RPC threads however main ends (a panic included), so they never
/// run on against a closed channel.
struct StopOnDrop(Arc<Stats>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

fn start_backend() -> Result<TestServer, String> {
    TestServer::start(
        Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
        ServerOptions::default(),
    )
    .map_err(|e| format!("cannot start a backend on 127.0.0.1: {e}"))
}

/// `--target` with the backends' addresses and first port filled in.
fn target_of(template: &str, addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    template
        .replace("{addrs}", &list.join(","))
        .replace("{port}", &addrs[0].port().to_string())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(2);
        }
    }
}

/// Ok(passed), or Err for a setup problem (no backends, bad policy).
fn run(args: &Args) -> Result<bool, String> {
    let mut servers: Vec<Option<TestServer>> = Vec::new();
    for _ in 0..args.backends {
        servers.push(Some(start_backend()?));
    }
    let mut addrs: Vec<SocketAddr> = servers.iter().flatten().map(|s| s.addr()).collect();
    let target = target_of(&args.target, &addrs);
    println!(
        "switchyard demo: {} backends on 127.0.0.1, policy {}, {} RPC threads, {:.0} s",
        args.backends,
        args.policy,
        args.threads,
        args.duration.as_secs_f64()
    );
    println!("target {target}\n");

    let rt = Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    let config = args
        .service_config
        .clone()
        .unwrap_or_else(|| policy_config(&args.policy));
    let mut opts = ChannelOptions {
        // Plaintext on purpose: the demo's backends speak h2c on loopback.
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    };
    opts.backoff.max = Duration::from_secs(1);
    let channel = Channel::new(&rt, &target, Some(&config), opts)
        .map(Arc::new)
        .map_err(|e| format!("cannot create the channel: {e}"))?;

    let stats = Arc::new(Stats {
        backends: addrs
            .iter()
            .map(|a| Backend {
                first_port: AtomicU16::new(a.port()),
                port: AtomicU16::new(a.port()),
                served: Default::default(),
            })
            .collect(),
        phase: AtomicUsize::new(ALL_UP),
        failed: Default::default(),
        lost: AtomicU64::new(0),
        kill_generation: AtomicU64::new(u64::MAX),
        killed: AtomicBool::new(false),
        drained_victim: AtomicUsize::new(usize::MAX),
        killed_victim: AtomicUsize::new(usize::MAX),
        events: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        start: Instant::now(),
    });
    let _stop_workers = StopOnDrop(stats.clone());
    let workers: Vec<_> = (0..args.threads)
        .map(|_| {
            let (channel, stats) = (channel.clone(), stats.clone());
            std::thread::spawn(move || rpc_thread(&channel, &stats))
        })
        .collect();

    let tty = std::io::stdout().is_terminal();
    let mut view = LiveView::new(tty);
    // round_robin: backend 1 is stopped and restarted, backend 2 killed (0
    // with two backends); other policies: the busiest, so the loss shows.
    let n = args.backends;
    let (mut drained_victim, mut killed_victim) = (usize::MAX, usize::MAX);
    let phase_len = args.duration / PHASES.len() as u32;
    let mut problems: Vec<String> = Vec::new();
    let mut phase = ALL_UP;
    let mut phase_end = stats.start + phase_len;
    let mut last_total = 0u64;
    let mut last_tick = Instant::now();
    // round_robin uses every READY backend, so each must serve, and the
    // restarted one must rejoin; other policies (pick_first) need not.
    let spreads = args.policy == "round_robin";
    let tick = Duration::from_millis(if tty { 200 } else { 1000 });
    let mut next_draw = Instant::now() + tick;
    let mut live = SubchannelRates::default();
    let mut seen = HashMap::new();
    loop {
        let wake = next_draw
            .min(phase_end)
            .max(Instant::now() + Duration::from_millis(10));
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        if now >= phase_end {
            // The gate for leaving this phase: the traffic it is there to show.
            let quiet = |phase: usize, b: usize| stats.served(b, phase) == 0;
            let waiting_for = match phase {
                ALL_UP if spreads => (0..args.backends)
                    .find(|&b| quiet(ALL_UP, b))
                    .map(|b| format!("backend {b} to serve")),
                REJOINED if spreads => quiet(REJOINED, drained_victim)
                    .then(|| format!("backend {drained_victim} to rejoin")),
                ALL_UP | REJOINED => None,
                DRAINED => (0..args.backends)
                    .all(|b| quiet(DRAINED, b))
                    .then(|| "any backend to serve".to_string()),
                _ => (0..args.backends)
                    .all(|b| quiet(KILLED, b))
                    .then(|| "the survivors to serve after the kill".to_string()),
            };
            match waiting_for {
                Some(_) if now < phase_end + GATE => {}
                Some(what) => {
                    let msg = format!("gave up waiting {:.0} s for {what}", GATE.as_secs_f64());
                    stats.event(format!("!!! {:5.1} s  {msg}", stats.secs()));
                    problems.push(msg);
                    break;
                }
                None if phase == KILLED => break,
                None => {
                    phase += 1;
                    phase_end = now + phase_len;
                    if phase == DRAINED {
                        drained_victim = match spreads {
                            true => 1,
                            false => busiest(&stats, ALL_UP, (1..n).chain([0])),
                        };
                        stats
                            .drained_victim
                            .store(drained_victim, Ordering::Relaxed);
                    }
                    if phase == KILLED {
                        let mut others = (2..n).chain(0..2).filter(|&b| b != drained_victim);
                        killed_victim = match spreads {
                            true => others.next().unwrap_or(0),
                            false => busiest(&stats, REJOINED, others),
                        };
                        stats.killed_victim.store(killed_victim, Ordering::Relaxed);
                    }
                    enter_phase(
                        phase,
                        &mut servers,
                        &mut addrs,
                        drained_victim,
                        killed_victim,
                        &stats,
                        &channel,
                        &mut problems,
                    )?;
                }
            }
        }
        if now >= next_draw {
            next_draw = now + tick;
            let total: u64 = (0..args.backends).map(|b| stats.total(b)).sum();
            let rate = (total - last_total) as f64 / last_tick.elapsed().as_secs_f64();
            last_total = total;
            last_tick = now;
            if let Ok(snapshot) = channel.snapshot() {
                seen = live.update(&snapshot, now);
            }
            view.draw(
                &stats.take_events(),
                &frame(args, &stats, rate, &channel, &seen),
            );
        }
    }

    stats.stop.store(true, Ordering::Relaxed);
    for w in workers {
        if w.join().is_err() {
            problems.push("an RPC thread panicked".into());
        }
    }
    let wall = stats.secs();
    let grand: u64 = (0..args.backends).map(|b| stats.total(b)).sum();
    let average = grand as f64 / wall;
    // The subchannels as the run ends (rates since the last tick).
    if let Ok(snapshot) = channel.snapshot() {
        seen = live.update(&snapshot, Instant::now());
    }
    view.draw(
        &stats.take_events(),
        &frame(args, &stats, average, &channel, &seen),
    );
    drop(channel);
    drop(rt);
    drop(servers);

    let failed = stats.failed_total();
    let lost = stats.lost.load(Ordering::Relaxed);
    println!(
        "\nsummary ({wall:.1} s, {} threads, policy {})",
        args.threads, args.policy
    );
    let row = |name: &str, per_phase: &dyn Fn(usize) -> u64| {
        let mut line = format!("  {name:<24}");
        for p in 0..PHASES.len() {
            line += &format!(" {:>9}", per_phase(p));
        }
        let total: u64 = (0..PHASES.len()).map(per_phase).sum();
        println!("{line} {total:>9}");
    };
    print!("  {:<24}", "RPCs served by");
    for p in PHASES {
        print!(" {p:>9}");
    }
    println!(" {:>9}", "total");
    for (i, b) in stats.backends.iter().enumerate() {
        let (first, now) = (
            b.first_port.load(Ordering::Relaxed),
            b.port.load(Ordering::Relaxed),
        );
        let name = if first == now {
            format!("{i} 127.0.0.1:{now}")
        } else {
            format!("{i} 127.0.0.1:{first}>:{now}")
        };
        row(&name, &|p| stats.served(i, p));
    }
    row("failed RPCs", &|p| stats.failed[p].load(Ordering::Relaxed));
    row("lost to the hard kill", &|p| {
        if p == KILLED {
            lost
        } else {
            0
        }
    });
    println!("  {:<24} {:>49.0}", "RPCs/s", average);

    if failed > 0 {
        problems.push(format!("{failed} RPCs failed"));
    }
    // Each RPC thread has at most one call on a connection when it dies, and
    // a failed call marks it closing, so its next call goes elsewhere.
    if lost > args.threads as u64 {
        problems.push(format!(
            "{lost} calls lost to the hard kill, more than one per RPC thread"
        ));
    }
    println!();
    if phase >= DRAINED {
        let d = drained_victim;
        println!(
            "graceful stop of backend {d}: {} RPCs failed while it drained and was down",
            stats.failed[DRAINED].load(Ordering::Relaxed)
        );
    }
    if phase >= REJOINED {
        let d = drained_victim;
        println!(
            "restart of backend {d} at a new address: it served {} RPCs after the resolver \
             update, {} failed",
            stats.served(d, REJOINED) + stats.served(d, KILLED),
            stats.failed[REJOINED].load(Ordering::Relaxed)
        );
    }
    if phase >= KILLED {
        println!(
            "hard kill of backend {killed_victim}: {lost} calls in flight on its connections \
             were lost (UNAVAILABLE; as in gRPC they are not retried, the server may have \
             processed them); {} other RPCs failed",
            stats.failed[KILLED].load(Ordering::Relaxed)
        );
    }
    if problems.is_empty() {
        println!("demo: passed");
        Ok(true)
    } else {
        println!("demo: FAILED: {}", problems.join("; "));
        Ok(false)
    }
}

/// What starts each phase: the graceful stop, the restart at a new address,
/// the hard kill.
#[allow(clippy::too_many_arguments)]
fn enter_phase(
    phase: usize,
    servers: &mut [Option<TestServer>],
    addrs: &mut [SocketAddr],
    drained_victim: usize,
    killed_victim: usize,
    stats: &Stats,
    channel: &Channel,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    match phase {
        DRAINED => {
            let server = servers[drained_victim]
                .take()
                .ok_or(format!("backend {drained_victim} is not running"))?;
            let t0 = Instant::now();
            stats.event(format!(
                ">>> {:5.1} s  graceful stop of backend {drained_victim} ({}): \
                 stops accepting, sends GOAWAY, finishes its calls in flight",
                stats.secs(),
                addrs[drained_victim]
            ));
            // Counted in the new phase from here: calls that finish
            // during the drain already belong to "drained".
            stats.phase.store(DRAINED, Ordering::Relaxed);
            if server.graceful_stop(GRACE) {
                stats.event(format!(
                    "    {:5.1} s  backend {drained_victim} drained and closed in {:.1} ms",
                    stats.secs(),
                    t0.elapsed().as_secs_f64() * 1e3
                ));
            } else {
                let msg = format!(
                    "backend {drained_victim} still had calls after {:.0} s of grace",
                    GRACE.as_secs_f64()
                );
                stats.event(format!("!!! {:5.1} s  {msg}", stats.secs()));
                problems.push(msg);
            }
        }
        REJOINED => {
            // A restarted instance comes back at a new address and
            // the resolver says so; rebinding the old ephemeral port
            // could fail (another socket may hold it by now).
            let server = start_backend()?;
            let old = addrs[drained_victim];
            addrs[drained_victim] = server.addr();
            stats.backends[drained_victim]
                .port
                .store(server.port(), Ordering::Relaxed);
            servers[drained_victim] = Some(server);
            stats.phase.store(REJOINED, Ordering::Relaxed);
            let update = addrs.iter().map(|a| Address::new(a.to_string())).collect();
            channel
                .update_addresses(update)
                .map_err(|e| format!("resolver update refused: {e}"))?;
            stats.event(format!(
                ">>> {:5.1} s  backend {drained_victim} restarted at {} \
                 (was {old}); resolver update sent to the channel",
                stats.secs(),
                addrs[drained_victim]
            ));
        }
        KILLED => {
            let server = servers[killed_victim]
                .take()
                .ok_or(format!("backend {killed_victim} is not running"))?;
            // Before the kill: calls that started on this picker or
            // an older one may be on the killed connections.
            stats
                .kill_generation
                .store(channel.picker_generation(), Ordering::SeqCst);
            // Announced first: the losses it causes are reported after it.
            stats.event(format!(
                ">>> {:5.1} s  hard kill of backend {killed_victim} ({}): every \
                 connection dropped, its calls in flight are lost",
                stats.secs(),
                addrs[killed_victim]
            ));
            stats.killed.store(true, Ordering::SeqCst);
            stats.phase.store(KILLED, Ordering::Relaxed);
            server.stop();
        }
        _ => {}
    }
    Ok(())
}

fn rpc_thread(channel: &Channel, stats: &Stats) {
    let mut reader = channel.reader();
    // Each call's request hash (ring_hash sends it to the key's backend;
    // other policies ignore it): keys spread over the ring.
    let mut key = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        std::thread::current().id(),
    ) | 1;
    while !stats.stop.load(Ordering::Relaxed) && !channel.is_closed() {
        key ^= key << 13;
        key ^= key >> 7;
        key ^= key << 17;
        let opts = CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            wait_for_ready: Some(true),
            hash: Some(key),
            ..Default::default()
        };
        let generation = channel.picker_generation();
        match reader.unary("/echo.Echo/Unary", b"hello", &opts) {
            Ok(resp) => {
                let port = std::str::from_utf8(&resp.message)
                    .ok()
                    .and_then(|s| s.rsplit("port=").next())
                    .and_then(|p| p.parse::<u16>().ok());
                match port.and_then(|p| stats.backend_of(p)) {
                    Some(b) => {
                        let phase = stats.phase.load(Ordering::Relaxed);
                        stats.backends[b].served[phase].fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        if stats.fail() < DESCRIBED {
                            stats.event(format!(
                                "!!! {:5.1} s  answer from no known backend: {:?}",
                                stats.secs(),
                                String::from_utf8_lossy(&resp.message)
                            ));
                        }
                    }
                }
            }
            Err(e) => {
                // Lost to the kill: UNAVAILABLE, failed after the kill began,
                // and started before the channel's picker could leave the
                // killed backend out. Anything else is a failure.
                let lost = e.code() == Code::Unavailable
                    && stats.killed.load(Ordering::SeqCst)
                    && generation <= stats.kill_generation.load(Ordering::SeqCst);
                let (seen, label) = if lost {
                    let n = stats.lost.fetch_add(1, Ordering::Relaxed);
                    (n, "--- call in flight lost to the kill")
                } else {
                    (stats.fail(), "!!! RPC failed")
                };
                if seen < DESCRIBED {
                    stats.event(format!("{label} ({:.1} s): {e}", stats.secs()));
                }
            }
        }
    }
}

/// Each backend's subchannel state and RPC rate as the channel itself
/// reports them (`Channel::snapshot`): successful calls per second on the
/// subchannel(s) for its address between two snapshots.
#[derive(Default)]
struct SubchannelRates {
    /// Calls succeeded per subchannel id at the previous snapshot.
    last: HashMap<u64, u64>,
    at: Option<Instant>,
}

/// A backend's subchannel state and RPC rate.
type SubchannelView = (ConnectivityState, f64);
/// Per address.
type Seen = HashMap<String, SubchannelView>;

impl SubchannelRates {
    fn update(&mut self, snapshot: &ChannelSnapshot, now: Instant) -> Seen {
        let secs = self
            .at
            .map_or(0.0, |at| now.duration_since(at).as_secs_f64());
        let mut seen = Seen::new();
        let mut last = HashMap::new();
        for sub in &snapshot.subchannels {
            let before = self.last.get(&sub.id.0).copied().unwrap_or(0);
            let rate = if secs > 0.0 {
                sub.calls_succeeded.saturating_sub(before) as f64 / secs
            } else {
                0.0
            };
            last.insert(sub.id.0, sub.calls_succeeded);
            // A backend briefly has two subchannels (one draining): the READY
            // one's state, both their calls.
            let entry = seen.entry(sub.address.clone()).or_insert((sub.state, 0.0));
            if sub.state == ConnectivityState::Ready {
                entry.0 = sub.state;
            }
            entry.1 += rate;
        }
        self.last = last;
        self.at = Some(now);
        seen
    }
}

/// What the live view shows at one tick.
struct Frame {
    /// Time, channel state, rate, failures.
    head: String,
    /// Share of the run done, 0 to 1.
    done: f64,
    /// Per backend: port, RPCs served (the demo's count), its subchannel's
    /// state and RPC rate (the channel's snapshot; None when the channel has
    /// no subchannel for it), what happened to it.
    backends: Vec<(u16, u64, Option<SubchannelView>, &'static str)>,
}

fn frame(args: &Args, stats: &Stats, rate: f64, channel: &Channel, seen: &Seen) -> Frame {
    let secs = stats.secs();
    let phase = stats.phase.load(Ordering::Relaxed);
    let drained_victim = stats.drained_victim.load(Ordering::Relaxed);
    let killed_victim = stats.killed_victim.load(Ordering::Relaxed);
    Frame {
        head: format!(
            "{secs:5.1} s  {:<17} {rate:>7.0} RPC/s  failed {}  lost {}",
            channel.state().to_string(),
            stats.failed_total(),
            stats.lost.load(Ordering::Relaxed)
        ),
        done: (secs / args.duration.as_secs_f64()).min(1.0),
        backends: (0..args.backends)
            .map(|i| {
                let note = match phase {
                    KILLED if i == killed_victim => "killed",
                    DRAINED if i == drained_victim => "stopped",
                    REJOINED | KILLED if i == drained_victim => "restarted",
                    _ => "",
                };
                let port = stats.backends[i].port.load(Ordering::Relaxed);
                let sub = seen.get(&format!("127.0.0.1:{port}")).copied();
                (port, stats.total(i), sub, note)
            })
            .collect(),
    }
}

/// Draws the frame in place on a terminal: event lines are printed above it
/// and stay; the frame is redrawn whole, each line cleared to its end, with
/// autowrap off so a line never takes two rows (the cursor-up count stays
/// right). Not a terminal: plain lines, no escape codes.
struct LiveView {
    tty: bool,
    /// Rows of the frame on screen now.
    drawn: usize,
}

impl LiveView {
    fn new(tty: bool) -> LiveView {
        LiveView { tty, drawn: 0 }
    }

    fn draw(&mut self, events: &[String], frame: &Frame) {
        let mut out = String::new();
        if self.tty {
            // Every line stays under 80 columns.
            let mut lines = vec![format!(
                "[{:<20}] {}",
                "#".repeat((frame.done * 20.0) as usize),
                frame.head
            )];
            let max = frame.backends.iter().map(|b| b.1).max().unwrap_or(0).max(1);
            for (i, (port, n, sub, note)) in frame.backends.iter().enumerate() {
                let (state, rate) = match sub {
                    Some((state, rate)) => (state.as_str(), format!("{rate:>6.0}/s")),
                    None => ("-", format!("{:>8}", "-")),
                };
                lines.push(format!(
                    "  backend {i} :{port:<5} {state:<17} {rate} {n:>8} {:<14} {note}",
                    "=".repeat((n * 14 / max) as usize),
                ));
            }
            if self.drawn > 0 {
                // Back to the frame's first row, and clear it and all below.
                out += &format!("\r\x1b[{}A\x1b[J", self.drawn);
            }
            for e in events {
                out += e;
                out += "\x1b[K\n";
            }
            out += "\x1b[?7l";
            for l in &lines {
                out += l;
                out += "\x1b[K\n";
            }
            out += "\x1b[?7h";
            self.drawn = lines.len();
        } else {
            // One plain line per tick.
            for e in events {
                out += e;
                out += "\n";
            }
            let served: Vec<String> = frame.backends.iter().map(|b| b.1.to_string()).collect();
            let subs: Vec<String> = frame
                .backends
                .iter()
                .map(|b| match b.2 {
                    Some((state, rate)) => format!("{state} {rate:.0}/s"),
                    None => "-".into(),
                })
                .collect();
            out += &format!(
                "{}  served {}  subchannels {}\n",
                frame.head,
                served.join("/"),
                subs.join(", ")
            );
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}
