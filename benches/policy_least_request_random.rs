//! Picks of `least_request_experimental` and `random` through a `Reader`
//! (`cargo bench --bench policy_least_request_random -- --noplot`), beside
//! shared-state baselines in the same run.
//!
//! Groups `lr_random_n{N}`, N = 3, 100, 10,000 and 100,000 READY endpoints
//! (channels driven through the external connector: no socket), medians in
//! ns per iteration:
//! - `lr_1t`: one thread, `Reader::try_pick_ref` + `PickRef::done`: what one
//!   least_request call costs the balancer (two random draws, two counter
//!   reads, the winner's increment, the done hook's decrement). Target ≤ 15 ns.
//! - `random_1t`: one thread, `Reader::try_pick_ref` + `PickRef::done`
//!   (random has no done hook; the done only counts the outcome for
//!   snapshots). Target ≤ 4 ns.
//! - `*_2t`: the same on two threads, one reader each; an iteration is one
//!   pick on each thread (throughput 2 elements), so the 2t/1t scaling is
//!   2 × median(1t) / median(2t). Target ≥ 1.8.
//! - baselines, same choice rules: `mutex_lr_*` (counters and random source
//!   in one `Arc<Mutex<..>>`, locked for the pick and again for the done),
//!   `atomic_lr_*` (unpadded `AtomicUsize` counters side by side and a
//!   shared atomic random sequence: the naive lock-free design),
//!   `mutex_random_*` (a shared `Mutex` random source) and `atomic_random_*`
//!   (a shared atomic sequence, gRPC-Go-picker style).
//!
//! - `rr_1t`: round_robin's inline rotation through the same kind of
//!   channel (pick + done), a calibration point for the machine.
//!
//! `SY_BENCH_PICK_COUNTS=0` runs every case on channels that do not count
//! picks for snapshots (`ChannelOptions::skip_pick_counts`).
//!
//! A `SCALING` line per size (stderr) prints each 2t/1t ratio from the
//! criterion medians of this run; a `CPU` line the 1t cases again, timed by
//! the thread's own CPU clock (on a shared machine wall-clock medians also
//! count the time other processes ran). `cargo test --benches` runs each once with
//! N = 3 and 100 only (`LR_BENCH_SIZES=3,100,10000,100000` overrides).

mod common;

use common::{sizes, thread_cpu, HostChannel, Work, Workers};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use switchyard::{DoneInfo, PickInfo, Reader, SubConn};

const LR: &str = r#"{"loadBalancingConfig":[{"least_request_experimental":{}}]}"#;
const RANDOM: &str = r#"{"loadBalancingConfig":[{"random":{}}]}"#;
const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;

/// A channel of `config`'s policy over `n` endpoints, every one READY.
fn fixture(config: &str, n: usize) -> HostChannel {
    let t0 = Instant::now();
    let hc = HostChannel::all_ready(config, n);
    eprintln!(
        "SETUP {config} n={n}: bring-up {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    hc
}

// ---------------------------------------------------------------------------
// What one iteration does.

/// least_request pick + done through a reader.
fn lr_pick_done(r: &mut Reader) {
    let pick = r.try_pick_ref(&PickInfo::default()).unwrap();
    black_box(pick.subconn() as *const SubConn);
    pick.done(&DoneInfo::default());
}

/// random (or round_robin) pick through a reader, and its done: a pick
/// dropped without one counts as a cancelled call, which an RPC that ends
/// well does not pay for.
fn random_pick(r: &mut Reader) {
    let pick = r.try_pick_ref(&PickInfo::default()).unwrap();
    black_box(pick.subconn() as *const SubConn);
    pick.done(&DoneInfo::OK);
}

/// CPU time (this thread's, so not the time other processes had the CPU)
/// per call of `f`, over `iters` calls.
fn cpu_ns_per_op(iters: u64, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    let t0 = thread_cpu();
    for _ in 0..iters {
        f();
    }
    (thread_cpu() - t0).as_nanos() as f64 / iters as f64
}

/// xorshift64*, one per baseline thread or behind the baseline's lock.
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn below(bits: u64, n: usize) -> usize {
    (((bits & 0xffff_ffff) * n as u64) >> 32) as usize
}

/// Baseline: everything behind one lock, taken for the pick and the done.
struct MutexLr(Mutex<(u64, Vec<usize>)>);

impl MutexLr {
    fn pick_done(&self) {
        let i = {
            let mut g = self.0.lock().unwrap();
            let (rng, counts) = &mut *g;
            let bits = next(rng);
            let n = counts.len();
            let (a, b) = (below(bits >> 32, n), below(bits, n));
            let i = if counts[b] < counts[a] { b } else { a };
            counts[i] += 1;
            i
        };
        black_box(i);
        self.0.lock().unwrap().1[i] -= 1;
    }
}

/// Baseline: counters side by side (unpadded) and a shared atomic sequence.
struct AtomicLr {
    seq: AtomicU64,
    counts: Vec<AtomicUsize>,
}

impl AtomicLr {
    fn pick_done(&self) {
        let mut s = self.seq.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) | 1;
        let bits = next(&mut s);
        let n = self.counts.len();
        let (a, b) = (below(bits >> 32, n), below(bits, n));
        let (ca, cb) = (
            self.counts[a].load(Ordering::Relaxed),
            self.counts[b].load(Ordering::Relaxed),
        );
        let i = if cb < ca { b } else { a };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        black_box(i);
        self.counts[i].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Baseline: one random source behind a lock.
struct MutexRandom(Mutex<u64>, usize);

impl MutexRandom {
    fn pick(&self) {
        let bits = next(&mut self.0.lock().unwrap());
        black_box(below(bits, self.1));
    }
}

/// Baseline: a shared atomic sequence, hashed.
struct AtomicRandom(AtomicU64, usize);

impl AtomicRandom {
    fn pick(&self) {
        let mut s = self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) | 1;
        black_box(below(next(&mut s), self.1));
    }
}

// ---------------------------------------------------------------------------

fn bench(c: &mut Criterion) {
    for n in sizes("LR_BENCH_SIZES", &[3, 100, 10_000, 100_000]) {
        let lr = fixture(LR, n);
        let random = fixture(RANDOM, n);
        let rr = fixture(RR, n);
        let mutex_lr = Arc::new(MutexLr(Mutex::new((7, vec![0; n]))));
        let atomic_lr = Arc::new(AtomicLr {
            seq: AtomicU64::new(7),
            counts: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        });
        let mutex_random = Arc::new(MutexRandom(Mutex::new(7), n));
        let atomic_random = Arc::new(AtomicRandom(AtomicU64::new(7), n));

        let mut g = c.benchmark_group(format!("lr_random_n{n}"));
        g.throughput(Throughput::Elements(1));
        {
            let mut r = lr.ch.reader();
            g.bench_function("lr_1t", |b| b.iter(|| lr_pick_done(&mut r)));
            let mut r = random.ch.reader();
            g.bench_function("random_1t", |b| b.iter(|| random_pick(&mut r)));
            let mut r = rr.ch.reader();
            g.bench_function("rr_1t", |b| b.iter(|| random_pick(&mut r)));
            let m = mutex_lr.clone();
            g.bench_function("mutex_lr_1t", |b| b.iter(|| m.pick_done()));
            let a = atomic_lr.clone();
            g.bench_function("atomic_lr_1t", |b| b.iter(|| a.pick_done()));
            let m = mutex_random.clone();
            g.bench_function("mutex_random_1t", |b| b.iter(|| m.pick()));
            let a = atomic_random.clone();
            g.bench_function("atomic_random_1t", |b| b.iter(|| a.pick()));
        }

        g.throughput(Throughput::Elements(2));
        let two = |make: &dyn Fn() -> Work| Workers::new(vec![make(), make()]);
        let cases: Vec<(&str, Workers)> = vec![
            (
                "lr_2t",
                two(&|| {
                    let mut r = lr.ch.reader();
                    Box::new(move |iters| (0..iters).for_each(|_| lr_pick_done(&mut r)))
                }),
            ),
            (
                "random_2t",
                two(&|| {
                    let mut r = random.ch.reader();
                    Box::new(move |iters| (0..iters).for_each(|_| random_pick(&mut r)))
                }),
            ),
            (
                "mutex_lr_2t",
                two(&|| {
                    let m = mutex_lr.clone();
                    Box::new(move |iters| (0..iters).for_each(|_| m.pick_done()))
                }),
            ),
            (
                "atomic_lr_2t",
                two(&|| {
                    let a = atomic_lr.clone();
                    Box::new(move |iters| (0..iters).for_each(|_| a.pick_done()))
                }),
            ),
            (
                "mutex_random_2t",
                two(&|| {
                    let m = mutex_random.clone();
                    Box::new(move |iters| (0..iters).for_each(|_| m.pick()))
                }),
            ),
            (
                "atomic_random_2t",
                two(&|| {
                    let a = atomic_random.clone();
                    Box::new(move |iters| (0..iters).for_each(|_| a.pick()))
                }),
            ),
        ];
        for (name, workers) in &cases {
            g.bench_function(*name, |b| b.iter_custom(|iters| workers.run(iters)));
        }
        drop(cases);
        g.finish();
        report_scaling(n);
        report_cpu(n, &lr, &random, &rr);
    }
}

/// Prints 2 × median(1t) / median(2t) per implementation, from the
/// estimates criterion just wrote (nothing when they are not there, as
/// under `cargo test --benches`).
fn report_scaling(n: usize) {
    let dir = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
    )
    .join(format!("criterion/lr_random_n{n}"));
    let median = |name: &str| -> Option<f64> {
        let text = std::fs::read_to_string(dir.join(name).join("new/estimates.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["median"]["point_estimate"].as_f64()
    };
    let mut line = format!("SCALING n={n}:");
    for imp in [
        "lr",
        "random",
        "mutex_lr",
        "atomic_lr",
        "mutex_random",
        "atomic_random",
    ] {
        if let (Some(one), Some(two)) = (median(&format!("{imp}_1t")), median(&format!("{imp}_2t")))
        {
            line += &format!(
                " {imp} 1t {one:.2} ns, 2t {two:.2} ns/iter -> {:.2}x;",
                2.0 * one / two
            );
        }
    }
    eprintln!("{line}");
}

/// The 1t cases again, timed by this thread's CPU clock: on a shared
/// machine, criterion's wall-clock medians include the time other
/// processes had the CPU; these do not (cache misses and stalls still
/// count).
fn report_cpu(n: usize, lr: &HostChannel, random: &HostChannel, rr: &HostChannel) {
    let iters = if std::env::args().any(|a| a == "--bench") {
        2_000_000
    } else {
        1_000
    };
    let mut r = lr.ch.reader();
    let lr_ns = cpu_ns_per_op(iters, || lr_pick_done(&mut r));
    let mut r = random.ch.reader();
    let random_ns = cpu_ns_per_op(iters, || random_pick(&mut r));
    let mut r = rr.ch.reader();
    let rr_ns = cpu_ns_per_op(iters, || random_pick(&mut r));
    let a = AtomicRandom(AtomicU64::new(7), n);
    let atomic_ns = cpu_ns_per_op(iters, || a.pick());
    eprintln!(
        "CPU n={n}: lr pick+done {lr_ns:.2} ns, random {random_ns:.2} ns, \
         round_robin {rr_ns:.2} ns, atomic_random {atomic_ns:.2} ns (thread CPU time per op)"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
