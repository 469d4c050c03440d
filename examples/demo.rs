//! The main job: real HTTP/2 gRPC backends on loopback, unary RPCs balanced
//! across them from several threads, one backend stopped and restarted
//! mid-run — with zero failed wait-for-ready RPCs.
//!
//! cargo run --release --features testserver --example demo -- [--policy round_robin]
//!     [--backends 3] [--duration 9] [--threads 4]

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::transport::testserver::{Listen, ServerOptions, TestServer};
use switchyard::*;

struct Args {
    policy: String,
    backends: usize,
    duration: Duration,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        policy: "round_robin".into(),
        backends: 3,
        duration: Duration::from_secs(9),
        threads: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--policy" => a.policy = value()?,
            "--backends" => {
                a.backends = value()?.parse().map_err(|_| "--backends takes a number")?
            }
            "--duration" => {
                a.duration = Duration::from_secs_f64(
                    value()?.parse().map_err(|_| "--duration takes seconds")?,
                )
            }
            "--threads" => a.threads = value()?.parse().map_err(|_| "--threads takes a number")?,
            "-h" | "--help" => {
                return Err(
                    "usage: demo [--policy NAME] [--backends N] [--duration SECONDS] [--threads N]"
                        .into(),
                )
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.backends < 2 {
        return Err("--backends must be at least 2 (one is stopped mid-run)".into());
    }
    if a.threads == 0 || a.duration < Duration::from_secs(3) {
        return Err("--threads must be positive and --duration at least 3 s".into());
    }
    Ok(a)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Phase {
    AllUp,
    OneDown,
    Rejoined,
}

struct Stats {
    /// [backend][phase] RPC counts.
    served: Vec<[AtomicU64; 3]>,
    failed: AtomicU64,
    phase: std::sync::atomic::AtomicUsize,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut servers: Vec<Option<TestServer>> = (0..args.backends)
        .map(|_| {
            Some(
                TestServer::start(
                    Listen::Tcp("127.0.0.1:0".parse().unwrap()),
                    ServerOptions::default(),
                )
                .expect("bind backend"),
            )
        })
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.as_ref().unwrap().addr()).collect();
    let target = format!(
        "ipv4:{}",
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    println!(
        "switchyard demo: {} backends on 127.0.0.1, policy {}, {} RPC threads, {:.0} s",
        args.backends,
        args.policy,
        args.threads,
        args.duration.as_secs_f64()
    );
    println!("target {target}\n");

    let rt = Runtime::new().expect("runtime");
    let config = format!(r#"{{"loadBalancingConfig":[{{"{}":{{}}}}]}}"#, args.policy);
    let mut opts = ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    };
    opts.backoff.max = Duration::from_secs(1);
    let channel = match Channel::new(&rt, &target, Some(&config), opts) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("cannot create channel: {e}");
            std::process::exit(2);
        }
    };

    let port_index: BTreeMap<u16, usize> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (a.port(), i))
        .collect();
    let stats = Arc::new(Stats {
        served: (0..args.backends).map(|_| Default::default()).collect(),
        failed: AtomicU64::new(0),
        phase: Default::default(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..args.threads)
        .map(|_| {
            let (channel, stats, stop, port_index) = (
                channel.clone(),
                stats.clone(),
                stop.clone(),
                port_index.clone(),
            );
            std::thread::spawn(move || {
                let mut reader = channel.reader();
                while !stop.load(Ordering::Relaxed) {
                    let opts = CallOptions {
                        deadline: Some(Instant::now() + Duration::from_secs(5)),
                        wait_for_ready: true,
                        ..Default::default()
                    };
                    match reader.unary("/echo.Echo/Unary", b"hello", &opts) {
                        Ok(resp) => {
                            let port = std::str::from_utf8(&resp.message)
                                .ok()
                                .and_then(|s| s.rsplit("port=").next())
                                .and_then(|p| p.parse::<u16>().ok());
                            if let Some(i) = port.and_then(|p| port_index.get(&p)) {
                                stats.served[*i][stats.phase.load(Ordering::Relaxed)]
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("RPC failed: {e}");
                        }
                    }
                }
            })
        })
        .collect();

    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let third = args.duration / 3;
    let victim = 1;
    let mut last_total = 0u64;
    let mut last_tick = start;
    let mut phase = Phase::AllUp;
    let mut printed_lines = 0;
    while start.elapsed() < args.duration {
        std::thread::sleep(Duration::from_millis(if tty { 250 } else { 1000 }));
        let elapsed = start.elapsed();
        if phase == Phase::AllUp && elapsed >= third {
            phase = Phase::OneDown;
            stats.phase.store(1, Ordering::Relaxed);
            servers[victim].take().unwrap().stop();
            event(
                tty,
                &mut printed_lines,
                &format!(">>> stopped backend {} ({})", victim, addrs[victim]),
            );
        } else if phase == Phase::OneDown && elapsed >= third * 2 {
            phase = Phase::Rejoined;
            stats.phase.store(2, Ordering::Relaxed);
            servers[victim] = Some(
                TestServer::start(Listen::Tcp(addrs[victim]), ServerOptions::default())
                    .expect("rebind"),
            );
            event(
                tty,
                &mut printed_lines,
                &format!(">>> restarted backend {} ({})", victim, addrs[victim]),
            );
        }
        let totals: Vec<u64> = stats
            .served
            .iter()
            .map(|p| p.iter().map(|c| c.load(Ordering::Relaxed)).sum())
            .collect();
        let total: u64 = totals.iter().sum();
        let rate = (total - last_total) as f64 / last_tick.elapsed().as_secs_f64();
        last_total = total;
        last_tick = Instant::now();
        let frac = (elapsed.as_secs_f64() / args.duration.as_secs_f64()).min(1.0);
        let mut view = format!(
            "[{:<30}] {:>4.1}s  state {:<17} {:>8.0} RPC/s  failed {}\n",
            "#".repeat((frac * 30.0) as usize),
            elapsed.as_secs_f64(),
            channel.state().to_string(),
            rate,
            stats.failed.load(Ordering::Relaxed)
        );
        let max = totals.iter().copied().max().unwrap_or(1).max(1);
        for (i, n) in totals.iter().enumerate() {
            let down = phase == Phase::OneDown && i == victim;
            view += &format!(
                "  backend {i} :{:<5} {:>8} {:<40}{}\n",
                addrs[i].port(),
                n,
                "=".repeat((*n * 40 / max) as usize),
                if down { " (down)" } else { "" }
            );
        }
        if tty && printed_lines > 0 {
            print!("\x1b[{printed_lines}A\x1b[J");
        }
        print!("{view}");
        if !tty {
            println!();
        }
        printed_lines = view.lines().count();
        std::io::stdout().flush().ok();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let wall = start.elapsed().as_secs_f64();

    println!(
        "\nsummary ({:.1} s, {} threads, policy {})",
        wall, args.threads, args.policy
    );
    println!(
        "  {:<22} {:>10} {:>10} {:>10} {:>10}",
        "backend", "all up", "one down", "rejoined", "total"
    );
    let mut grand = 0;
    for (i, p) in stats.served.iter().enumerate() {
        let v: Vec<u64> = p.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let t: u64 = v.iter().sum();
        grand += t;
        println!(
            "  {:<22} {:>10} {:>10} {:>10} {:>10}",
            addrs[i].to_string(),
            v[0],
            v[1],
            v[2],
            t
        );
    }
    let failed = stats.failed.load(Ordering::Relaxed);
    println!(
        "  {:<22} {:>43}",
        "RPCs/s",
        format!("{:.0}", grand as f64 / wall)
    );
    println!("  {:<22} {:>43}", "failed RPCs", failed);
    let down_during = stats.served[victim][1].load(Ordering::Relaxed);
    let rejoined = stats.served[victim][2].load(Ordering::Relaxed);
    println!(
        "\nfailover: backend {victim} served {down_during} RPCs while down, {rejoined} after restarting; {failed} RPCs failed"
    );
    drop(channel);
    drop(rt);
    if failed > 0 || rejoined == 0 {
        std::process::exit(1);
    }
}

fn event(tty: bool, printed_lines: &mut usize, msg: &str) {
    if tty && *printed_lines > 0 {
        print!("\x1b[{}A\x1b[J", *printed_lines);
        *printed_lines = 0;
    }
    println!("{msg}");
}
