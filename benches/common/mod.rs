//! What the criterion benches share (each includes it with `mod common;`):
//! the sizes to run, a channel whose connections the bench stands in for
//! (the external connector: no socket), and worker threads released
//! together per sample.

// Each bench is its own crate and uses a part of this.
#![allow(dead_code)]

use criterion::{BenchmarkGroup, BenchmarkId, Throughput};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::Ready;
use switchyard::{
    Address, Channel, ChannelOptions, ExternalConnector, HostTransport, Runtime, SubConn,
};

/// The sizes (endpoint counts) to run: `var` (comma-separated) if set;
/// else `full` when criterion measures (cargo passes `--bench`), and 3 and
/// 100 only under `cargo test --benches`, which runs each once.
pub fn sizes(var: &str, full: &[usize]) -> Vec<usize> {
    if let Ok(s) = std::env::var(var) {
        return s.split(',').map(|n| n.trim().parse().unwrap()).collect();
    }
    if std::env::args().any(|a| a == "--bench") {
        full.to_vec()
    } else {
        vec![3, 100]
    }
}

/// `n` distinct addresses, in order.
pub fn addrs(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("127.{}.{}.{}:443", i >> 16, (i >> 8) & 255, i & 255))
        .collect()
}

/// The host's transports: remembers each address's subchannel.
#[derive(Default)]
pub struct Host {
    subconns: Mutex<HashMap<String, Arc<SubConn>>>,
}

impl HostTransport for Host {
    fn create(&self, sc: &Arc<SubConn>) {
        self.subconns
            .lock()
            .unwrap()
            .insert(sc.addr().to_string(), sc.clone());
    }
    fn connect(&self, _: &Arc<SubConn>) {}
    fn shutdown(&self, _: &Arc<SubConn>) {}
}

impl Host {
    /// The subchannel of `addr`.
    pub fn get(&self, addr: &str) -> Arc<SubConn> {
        self.subconns.lock().unwrap()[addr].clone()
    }

    /// Every subchannel the library created so far, by id.
    pub fn created(&self) -> Vec<Arc<SubConn>> {
        let mut all: Vec<Arc<SubConn>> = self.subconns.lock().unwrap().values().cloned().collect();
        all.sort_by_key(|sc| sc.id());
        all
    }
}

/// A channel on its own runtime whose connections `host` stands in for;
/// closed before its runtime is dropped.
pub struct HostChannel {
    pub ch: Arc<Channel>,
    pub host: Arc<Host>,
    pub addrs: Vec<String>,
    /// The subchannels reported READY, in address order.
    pub ready: Vec<Arc<SubConn>>,
    rt: Option<Runtime>,
}

impl HostChannel {
    /// A channel of `config`'s policy (None: pick_first) over `n`
    /// addresses, pushed and synced: the subchannels are created, none is
    /// READY yet.
    pub fn new(config: Option<&str>, n: usize) -> HostChannel {
        let rt = Runtime::new().unwrap();
        let host = Arc::new(Host::default());
        let options = ChannelOptions {
            connector: Some(Box::new(ExternalConnector::new(host.clone()))),
            // SY_BENCH_PICK_COUNTS=0: what picks cost without the counts
            // snapshots show (see `ChannelOptions::skip_pick_counts`).
            skip_pick_counts: std::env::var("SY_BENCH_PICK_COUNTS").is_ok_and(|v| v == "0"),
            ..Default::default()
        };
        let ch = Channel::new(&rt, "", config, options).unwrap();
        let addrs = addrs(n);
        ch.update_addresses(addrs.iter().map(Address::new).collect())
            .unwrap();
        ch.sync().unwrap();
        HostChannel {
            ch: Arc::new(ch),
            host,
            addrs,
            ready: Vec::new(),
            rt: Some(rt),
        }
    }

    /// `new`, with every subchannel READY.
    pub fn all_ready(config: &str, n: usize) -> HostChannel {
        let mut hc = HostChannel::new(Some(config), n);
        hc.report_ready(n);
        hc
    }

    /// Reports the subchannels of the first `count` addresses READY, one
    /// report each as a transport would, and waits for the policy's
    /// picker: policies that rebuild in a work call queued behind the
    /// reports have published by the second sync.
    pub fn report_ready(&mut self, count: usize) {
        self.ready = self.addrs[..count]
            .iter()
            .map(|a| self.host.get(a))
            .collect();
        for sc in &self.ready {
            self.ch.report_subconn_state(sc.id(), Ready, "").unwrap();
        }
        self.ch.sync().unwrap();
        self.ch.sync().unwrap();
        assert_eq!(self.ch.state(), Ready);
    }
}

impl Drop for HostChannel {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            self.ch.close();
            drop(rt);
        }
    }
}

/// What one worker does for a sample of `iters` iterations.
pub type Work = Box<dyn FnMut(u64) + Send>;

/// Persistent worker threads, each running its own `Work` for the same
/// number of iterations, released together per sample.
pub struct Workers {
    start: Arc<Barrier>,
    end: Arc<Barrier>,
    iters: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Worker `i` is pinned to CPU `i`: left alone, the scheduler sometimes
    /// stacks two workers woken together on one CPU for a whole
    /// measurement (seen as 2t/1t ratios near 1.0 for every implementation
    /// at once).
    pub fn new(work: Vec<Work>) -> Workers {
        let parties = work.len() + 1;
        let start = Arc::new(Barrier::new(parties));
        let end = Arc::new(Barrier::new(parties));
        let iters = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = work
            .into_iter()
            .enumerate()
            .map(|(cpu, mut w)| {
                let (start, end) = (start.clone(), end.clone());
                let (iters, stop) = (iters.clone(), stop.clone());
                std::thread::spawn(move || {
                    pin_to(cpu);
                    loop {
                        start.wait();
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        w(iters.load(Ordering::Acquire));
                        end.wait();
                    }
                })
            })
            .collect();
        Workers {
            start,
            end,
            iters,
            stop,
            threads,
        }
    }

    /// Wall time for every worker to do `iters` operations.
    pub fn run(&self, iters: u64) -> Duration {
        self.iters.store(iters, Ordering::Release);
        self.start.wait();
        let t0 = Instant::now();
        self.end.wait();
        t0.elapsed()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.start.wait();
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// Benchmark `id`: `threads` workers, worker `i` running `make(i)`; an
/// iteration is one operation on each (throughput `threads` elements), so
/// the median is the wall time of one operation per thread.
pub fn bench_threads(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    threads: usize,
    make: impl FnMut(usize) -> Work,
) {
    let workers = Workers::new((0..threads).map(make).collect());
    group.throughput(Throughput::Elements(threads as u64));
    group.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter_custom(|iters| workers.run(iters))
    });
}

/// Criterion with a 0.5 s warm-up and 2 s of measurement per benchmark:
/// enough samples for a stable median, and a full run that stays short.
pub fn short_runs() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// Pins the calling thread to one CPU (best effort; Linux only).
pub fn pin_to(cpu: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within
    // it for cpu < CPU_SETSIZE; sched_setaffinity(0, ..) affects this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu < libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpu;
}

/// This thread's CPU time (not the time other processes had the CPU;
/// Linux: wall time elsewhere).
pub fn thread_cpu() -> Duration {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
    #[cfg(not(target_os = "linux"))]
    {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }
}
