//! outlier_detection_experimental over round_robin: pick + done through a
//! `Reader` (`cargo bench --bench policy_outlier_detection -- --noplot`).
//!
//! Groups `od_n{N}` for N = 3, 100, 10,000 and 100,000 READY endpoints
//! (channels driven through the external connector: no socket), criterion
//! medians in ns per pick + done on each thread (throughput: one element
//! per thread):
//! - `od_1t` / `od_2t`: `Reader::try_pick_ref` + `PickRef::done` on one and
//!   two threads (one reader each), the wrapper counting outcomes (the
//!   failure-percentage algorithm on): the child's rotation, the wrapper's
//!   hook added, and at done the endpoint's counter incremented.
//! - `rr_1t`: the same on a plain round_robin channel, no hook: what the
//!   wrapper costs.
//! - `atomic_1t` / `atomic_2t`: the shared-state baseline, gRPC-Go's way: a
//!   shared `AtomicUsize` cursor over an immutable vector, and at done one
//!   `fetch_add` on the endpoint's shared counter.
//! - `mutex_1t` / `mutex_2t`: a `Mutex<(cursor, counts)>` picker.
//!
//! `cargo test --benches` runs each once with N = 3 and 100 only
//! (`POLICY_BENCH_SIZES=3,100,10000,100000` to override in either mode).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchyard::ConnectivityState::Ready;
use switchyard::{
    Address, Channel, ChannelOptions, DoneInfo, ExternalConnector, HostTransport, PickInfo, Reader,
    Runtime, SubConn,
};

/// Counting on (so every pick carries the hook); sweeps every 10 s, never
/// in a measurement's way (no endpoint fails).
const OD: &str = r#"{"loadBalancingConfig":[{"outlier_detection_experimental":{
    "failurePercentageEjection":{},"childPolicy":[{"round_robin":{}}]}}]}"#;
const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

fn sizes() -> Vec<usize> {
    if let Ok(s) = std::env::var("POLICY_BENCH_SIZES") {
        return s.split(',').map(|n| n.trim().parse().unwrap()).collect();
    }
    if std::env::args().any(|a| a == "--bench") {
        vec![3, 100, 10_000, 100_000]
    } else {
        vec![3, 100]
    }
}

/// The host's transports: remembers each address's subchannel.
#[derive(Default)]
struct Host {
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

/// A channel over `n` addresses, every subchannel reported READY.
struct Fixture {
    ch: Channel,
    ready: Vec<Arc<SubConn>>,
    _rt: Runtime,
}

impl Fixture {
    fn new(n: usize, config: &str) -> Fixture {
        let rt = Runtime::new().unwrap();
        let host = Arc::new(Host::default());
        let options = ChannelOptions {
            connector: Some(Box::new(ExternalConnector::new(host.clone()))),
            ..Default::default()
        };
        let ch = Channel::new(&rt, "", Some(config), options).unwrap();
        let addrs: Vec<String> = (0..n)
            .map(|i| format!("10.{}.{}.{}:443", i >> 16, (i >> 8) & 255, i & 255))
            .collect();
        let t0 = Instant::now();
        ch.update_addresses(addrs.iter().map(Address::new).collect())
            .unwrap();
        ch.sync().unwrap();
        let ready: Vec<Arc<SubConn>> = {
            let map = host.subconns.lock().unwrap();
            addrs.iter().map(|a| map[a].clone()).collect()
        };
        for sc in &ready {
            ch.report_subconn_state(sc.id(), Ready, "").unwrap();
        }
        ch.sync().unwrap();
        assert_eq!(ch.state(), Ready);
        eprintln!(
            "SETUP n={n}: {} READY, bring-up {:.1} ms",
            ready.len(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        Fixture { ch, ready, _rt: rt }
    }
}

type Work = Box<dyn FnMut(u64) + Send>;

/// Persistent worker threads released together per sample.
struct Workers {
    start: Arc<Barrier>,
    end: Arc<Barrier>,
    iters: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    fn new(work: Vec<Work>) -> Workers {
        let parties = work.len() + 1;
        let start = Arc::new(Barrier::new(parties));
        let end = Arc::new(Barrier::new(parties));
        let iters = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = work
            .into_iter()
            .map(|mut w| {
                let (start, end) = (start.clone(), end.clone());
                let (iters, stop) = (iters.clone(), stop.clone());
                std::thread::spawn(move || loop {
                    start.wait();
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    w(iters.load(Ordering::Acquire));
                    end.wait();
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

    fn run(&self, iters: u64) -> Duration {
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

fn bench_threads(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    threads: usize,
    mut make: impl FnMut() -> Work,
) {
    let workers = Workers::new((0..threads).map(|_| make()).collect());
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter_custom(|iters| workers.run(iters))
    });
}

/// Pick + done, as an RPC thread does for each call.
fn reader_work(mut reader: Reader) -> Work {
    let info = PickInfo::default();
    let ok = DoneInfo::default();
    Box::new(move |iters| {
        for _ in 0..iters {
            let pick = reader.try_pick_ref(&info).expect("READY");
            black_box(pick.subconn() as *const SubConn);
            pick.done(&ok);
        }
    })
}

/// gRPC-Go's shape: a shared cursor and a shared per-endpoint counter.
struct AtomicPicker {
    list: Vec<Arc<SubConn>>,
    cursor: AtomicUsize,
    counts: Vec<AtomicU64>,
}

struct MutexPicker {
    list: Vec<Arc<SubConn>>,
    state: Mutex<(usize, Vec<u64>)>,
}

fn bench(c: &mut Criterion) {
    for n in sizes() {
        let od = Fixture::new(n, OD);
        let rr = Fixture::new(n, RR);
        {
            // The wrapper is there: each pick carries one done hook.
            let mut r = od.ch.reader();
            let pick = r.try_pick(&PickInfo::default()).unwrap();
            assert_eq!(pick.done_hooks(), 1);
            pick.done(&DoneInfo::default());
        }
        let atomic = Arc::new(AtomicPicker {
            list: od.ready.clone(),
            cursor: AtomicUsize::new(0),
            counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
        });
        let mutex = Arc::new(MutexPicker {
            list: od.ready.clone(),
            state: Mutex::new((0, vec![0; n])),
        });
        let mut group = c.benchmark_group(format!("od_n{n}"));
        for threads in [1, 2] {
            bench_threads(&mut group, &format!("od_{threads}t"), threads, || {
                reader_work(od.ch.reader())
            });
            if threads == 1 {
                bench_threads(&mut group, "rr_1t", 1, || reader_work(rr.ch.reader()));
            }
            bench_threads(&mut group, &format!("atomic_{threads}t"), threads, || {
                let p = atomic.clone();
                Box::new(move |iters| {
                    for _ in 0..iters {
                        let i = p.cursor.fetch_add(1, Ordering::Relaxed) % p.list.len();
                        black_box(&p.list[i]);
                        p.counts[i].fetch_add(1, Ordering::Relaxed);
                    }
                })
            });
            bench_threads(&mut group, &format!("mutex_{threads}t"), threads, || {
                let p = mutex.clone();
                Box::new(move |iters| {
                    for _ in 0..iters {
                        let i = {
                            let mut g = p.state.lock().unwrap();
                            let i = g.0;
                            g.0 = (i + 1) % p.list.len();
                            i
                        };
                        black_box(p.list[i].clone());
                        p.state.lock().unwrap().1[i] += 1;
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
