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

mod common;

use common::{bench_threads, sizes, HostChannel, Work};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use switchyard::{DoneInfo, PickInfo, Reader, SubConn};

/// Counting on (so every pick carries the hook); sweeps every 10 s, never
/// in a measurement's way (no endpoint fails).
const OD: &str = r#"{"loadBalancingConfig":[{"outlier_detection_experimental":{
    "failurePercentageEjection":{},"childPolicy":[{"round_robin":{}}]}}]}"#;
const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// A channel of `config`'s policy over `n` addresses, every subchannel
/// reported READY.
fn fixture(n: usize, config: &str) -> HostChannel {
    let t0 = Instant::now();
    let hc = HostChannel::all_ready(config, n);
    eprintln!(
        "SETUP n={n}: {} READY, bring-up {:.1} ms",
        hc.ready.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    hc
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
    for n in sizes("POLICY_BENCH_SIZES", &[3, 100, 10_000, 100_000]) {
        let od = fixture(n, OD);
        let rr = fixture(n, RR);
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
            bench_threads(&mut group, &format!("od_{threads}t"), threads, |_| {
                reader_work(od.ch.reader())
            });
            if threads == 1 {
                bench_threads(&mut group, "rr_1t", 1, |_| reader_work(rr.ch.reader()));
            }
            bench_threads(&mut group, &format!("atomic_{threads}t"), threads, |_| {
                let p = atomic.clone();
                Box::new(move |iters| {
                    for _ in 0..iters {
                        let i = p.cursor.fetch_add(1, Ordering::Relaxed) % p.list.len();
                        black_box(&p.list[i]);
                        p.counts[i].fetch_add(1, Ordering::Relaxed);
                    }
                })
            });
            bench_threads(&mut group, &format!("mutex_{threads}t"), threads, |_| {
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
    config = common::short_runs();
    targets = bench
}
criterion_main!(benches);
