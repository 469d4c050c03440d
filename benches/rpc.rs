//! Whole-stack numbers for real connections (prints, no criterion):
//! - unary RPC throughput through switchyard to 3 local backends, concurrency 1 and 32;
//! - latency the library adds (pick + send + done) over a raw h2 call on the same connection;
//! - time to bring 1,000 loopback backends to READY, and memory per READY subchannel.
//!
//! cargo bench --bench rpc
//! The backends run in a child process (this binary re-executed with --serve) so
//! the client's memory is measured alone.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::*;
use switchyard_testserver::{Listen, ServerOptions, TestServer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        return serve(args[i + 1].parse().unwrap());
    }
    if args.iter().any(|a| a == "--test") {
        return; // `cargo test --benches` smoke mode: nothing to check here.
    }
    let secs: f64 = std::env::var("RPC_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let many: usize = std::env::var("RPC_BENCH_BACKENDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);

    let (mut child, ports) = spawn_servers(3);
    let target = ipv4(&ports);
    let rt = Runtime::new().unwrap();
    let ch = Arc::new(channel(&rt, &target));
    warm(&ch, 3);
    println!("unary RPC throughput, 3 backends (in a child process), round_robin");
    for conc in [1usize, 32] {
        let n = throughput(&ch, conc, Duration::from_secs_f64(secs));
        println!("  concurrency {conc:>2}: {:>8.0} RPC/s", n);
    }
    let one = Channel::new(
        &rt,
        &ipv4(&ports[..1]),
        None,
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            ..Default::default()
        },
    )
    .unwrap();
    warm(&one, 1);
    let (lib, raw) = added_latency(&one, 5000);
    println!("latency at concurrency 1 (median of 5000): switchyard {lib:.1} µs, raw h2 on the same connection {raw:.1} µs, added {:.2} µs", lib - raw);
    drop(ch);
    child.kill().ok();
    child.wait().ok();

    let (mut child, ports) = spawn_servers(many);
    let rss0 = rss_kib();
    let ready = Arc::new(AtomicU64::new(0));
    let r2 = ready.clone();
    let mut opts = ChannelOptions {
        transport: Some(TransportConfig::insecure()),
        ..Default::default()
    };
    opts.on_subconn_state = Some(Arc::new(move |_, s: &SubConnState| {
        if s.state == ConnectivityState::Ready {
            r2.fetch_add(1, Ordering::Relaxed);
        }
    }));
    let t0 = Instant::now();
    let ch = Channel::new(&rt, &ipv4(&ports), Some(RR), opts).unwrap();
    while ready.load(Ordering::Relaxed) < many as u64 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "only {} READY",
            ready.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let up = t0.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let rss1 = rss_kib();
    println!("{many} loopback backends to READY: {:.0} ms; memory per READY plaintext subchannel: {:.1} KiB (client RSS {} → {} KiB)",
        up.as_secs_f64() * 1e3, (rss1 - rss0) as f64 / many as f64, rss0, rss1);
    drop(ch);
    child.kill().ok();
    child.wait().ok();
}

const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

fn channel(rt: &Runtime, target: &str) -> Channel {
    Channel::new(
        rt,
        target,
        Some(RR),
        ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            ..Default::default()
        },
    )
    .unwrap()
}

fn ipv4(ports: &[u16]) -> String {
    format!(
        "ipv4:{}",
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn opts() -> CallOptions<'static> {
    CallOptions {
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        wait_for_ready: Some(true),
        ..Default::default()
    }
}

fn warm(ch: &Channel, n: usize) {
    let mut r = ch.reader();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n {
        let resp = r.unary("/echo.Echo/Unary", b"x", &opts()).unwrap();
        seen.insert(resp.message);
    }
}

fn throughput(ch: &Arc<Channel>, conc: usize, dur: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..conc)
        .map(|_| {
            let (ch, stop, count) = (ch.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut r = ch.reader();
                while !stop.load(Ordering::Relaxed) {
                    r.unary("/echo.Echo/Unary", b"0123456789abcdef", &opts())
                        .unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

/// Median µs per call through the channel vs. raw on the same connection
/// (the channel must have one backend, so both go to the same server).
/// Alternates which goes first, so neither always follows the other.
fn added_latency(ch: &Channel, n: usize) -> (f64, f64) {
    let mut r = ch.reader();
    let pick = r.try_pick(&PickInfo::default()).unwrap();
    let handle = pick.subconn().transport().unwrap();
    drop(pick);
    let body = b"0123456789abcdef";
    let mut lib = Vec::with_capacity(n);
    let mut raw = Vec::with_capacity(n);
    for i in 0..n {
        for first in [i % 2 == 0, i % 2 != 0] {
            let t = Instant::now();
            if first {
                r.unary("/echo.Echo/Unary", body, &opts()).unwrap();
                lib.push(t.elapsed());
            } else {
                let timeout = Some(Duration::from_secs(10));
                transport::unary(&handle, "/echo.Echo/Unary", body, &[], timeout).unwrap();
                raw.push(t.elapsed());
            }
        }
    }
    lib.sort();
    raw.sort();
    (
        lib[n / 2].as_secs_f64() * 1e6,
        raw[n / 2].as_secs_f64() * 1e6,
    )
}

fn rss_kib() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

fn spawn_servers(n: usize) -> (Child, Vec<u16>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--serve", &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports = line
        .trim()
        .strip_prefix("PORTS ")
        .expect("server child")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    (child, ports)
}

/// Child process: n echo servers until killed.
fn serve(n: usize) {
    let servers: Arc<Mutex<Vec<TestServer>>> = Arc::new(Mutex::new(Vec::new()));
    let mut ports = Vec::new();
    for _ in 0..n {
        let s = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap();
        ports.push(s.port().to_string());
        servers.lock().unwrap().push(s);
    }
    println!("PORTS {}", ports.join(","));
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
