//! Pick throughput and publish cost (`cargo bench --bench pick -- --noplot`;
//! `scripts/bench-ratio.sh` prints the figures against the targets).
//!
//! Groups (criterion ids `<group>/<function>`, medians in ns per iteration):
//! - `pick_n{N}` for N = 3, 100, 10000 READY subchannels:
//!   - `sy_rr_1t` / `sy_pf_1t`: one thread, `Reader::try_pick_ref` (round_robin
//!     / pick_first channels driven through the external connector) — what a
//!     blocking RPC thread does per call: the generation check and the
//!     picker's choice (inline for round_robin), no atomic operation.
//!   - `sy_rr_owned_1t`: `Reader::try_pick` + `Reader::finish`, for picks that
//!     may outlive the next one: adds lending a hold and taking it back (a
//!     plain decrement while the reader caches that picker).
//!   - `sy_rr_2t` / `sy_pf_2t`: two threads, one reader each, while a third
//!     thread makes the channel publish a new picker every millisecond (one
//!     subchannel flips IDLE/READY: a real rebuild on the loop thread).
//!     Throughput is 2 elements per iteration, so the median is the wall time of
//!     one pick on each thread.
//!   - baselines, same rotation over the same `Arc`s: `mutex_*` (a
//!     `Mutex<(Vec<Arc<_>>, cursor)>`, cloning the chosen `Arc`), `rwlock_*`
//!     (`RwLock<Vec<Arc<_>>>` + shared atomic cursor, cloning the `Arc`) and
//!     `atomic_*` (gRPC-Go's picker: one shared `AtomicUsize` `fetch_add` over an
//!     immutable vector, no reference taken). In `_2t` a third thread swaps a
//!     fresh vector into the mutex / rwlock every millisecond; gRPC-Go's
//!     vector is immutable, so `atomic_2t` has no writer.
//!   - `SCALING` lines (stderr, not criterion): `sy_rr` two threads against
//!     one in back-to-back pairs (see `scaling`), a cross-check of the
//!     criterion ratio; `CEILING` lines: the same pairs with ALU work, what
//!     the machine and the publisher alone allow.
//! - `publish_n{N}` (largest N):
//!   - `rr_visible`: from `report_subconn_state` (one subchannel IDLE or READY)
//!     to `picker_generation()` changing, i.e. command + loop wake-up + policy +
//!     round_robin rebuild over N children + publish.
//!   - `rr_build_publish`: building an `RrPicker` over N subchannels and
//!     `Slot::publish`ing it (the old one is dropped inside), no loop.
//!
//! Worker threads are pinned one per CPU (see `common::Workers::new`).
//!
//! `cargo test --benches` runs each once with N = 3 and 100 only (set
//! `PICK_BENCH_SIZES=3,100,10000` to override, in either mode).

mod common;

use common::{bench_threads, sizes, HostChannel, Work, Workers};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchyard::policy::round_robin::{RrEntry, RrPicker};
use switchyard::publish::{Cache, Slot};
use switchyard::ConnectivityState::{Idle, Ready};
use switchyard::{
    Channel, DoneInfo, PickInfo, PickLocal, PickResult, Picker, Reader, SubConn, SubConnId,
};

const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
const PUBLISH_EVERY: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------
// Channels driven through the external connector.

/// Makes a channel publish a new picker.
#[derive(Clone)]
struct Flipper {
    ch: Arc<Channel>,
    /// The subchannel that flips IDLE/READY.
    sc: SubConnId,
    pick_first: bool,
}

impl Flipper {
    /// round_robin loses (`up == false`) or regains one READY child: one
    /// rebuild over the READY children and one publish. pick_first's only
    /// subchannel goes IDLE and back: IDLE publishes, then `connect` and READY
    /// publish again (its picks fail in between).
    fn flip(&self, up: bool) {
        if self.pick_first {
            self.ch.report_subconn_state(self.sc, Idle, "").unwrap();
            self.ch.connect().unwrap();
            self.ch.report_subconn_state(self.sc, Ready, "").unwrap();
        } else {
            let state = if up { Ready } else { Idle };
            self.ch.report_subconn_state(self.sc, state, "").unwrap();
        }
    }

    /// A thread flipping every `PUBLISH_EVERY` until dropped.
    fn publisher(&self) -> Ticker {
        self.publisher_named("channel")
    }

    /// `publisher`, silent on drop when `what` is empty.
    fn publisher_named(&self, what: &'static str) -> Ticker {
        let me = self.clone();
        Ticker::start(what, move |tick| me.flip(tick % 2 == 1))
    }
}

/// A channel over `n` addresses with every subchannel the policy created
/// reported READY, and what flips it.
struct Fixture {
    hc: HostChannel,
    flipper: Flipper,
}

impl Fixture {
    fn new(n: usize, pick_first: bool) -> Fixture {
        let t0 = Instant::now();
        let config = if pick_first { None } else { Some(RR) };
        let mut hc = HostChannel::new(config, n);
        // pick_first attempts one address at a time: its first one wins.
        hc.report_ready(if pick_first { 1 } else { n });
        let policy = if pick_first {
            "pick_first"
        } else {
            "round_robin"
        };
        eprintln!(
            "SETUP {policy} n={n}: {} READY, bring-up {:.1} ms",
            hc.ready.len(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        Fixture {
            flipper: Flipper {
                ch: hc.ch.clone(),
                sc: hc.ready[0].id(),
                pick_first,
            },
            hc,
        }
    }
}

// ---------------------------------------------------------------------------
// Harness: the shared one (common), and a publisher thread.

/// Runs `tick(i)` every `PUBLISH_EVERY` on its own thread until dropped.
struct Ticker {
    what: &'static str,
    stop: Arc<AtomicBool>,
    ticks: Arc<AtomicU64>,
    started: Instant,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(what: &'static str, mut tick: impl FnMut(u64) + Send + 'static) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(AtomicU64::new(0));
        let (s, t) = (stop.clone(), ticks.clone());
        let thread = std::thread::spawn(move || {
            let mut next = Instant::now();
            let mut i = 0;
            while !s.load(Ordering::Acquire) {
                tick(i);
                i += 1;
                t.store(i, Ordering::Relaxed);
                next += PUBLISH_EVERY;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        });
        Ticker {
            what,
            stop,
            ticks,
            started: Instant::now(),
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        if self.what.is_empty() {
            return;
        }
        let ticks = self.ticks.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "PUBLISHER {}: {ticks} changes in {secs:.2} s ({:.0}/s)",
            self.what,
            ticks as f64 / secs
        );
    }
}

/// `owned`: `try_pick` + `Reader::finish` (picks that may outlive the next
/// one: a hold is lent, and given back to the reader without an atomic
/// when it still caches that picker). Otherwise `try_pick_ref`, what a blocking RPC thread uses: the pick
/// borrows the reader and costs no hold and no atomic operation.
fn reader_work(mut reader: Reader, owned: bool) -> Work {
    let info = PickInfo::default();
    // pick_first fails picks between its IDLE and READY publishes: those
    // are counted, not timed apart.
    let mut failed = 0u64;
    if owned {
        Box::new(move |iters| {
            for _ in 0..iters {
                match reader.try_pick(&info) {
                    Ok(pick) => {
                        black_box(pick.subconn() as *const SubConn);
                        reader.finish(pick, &DoneInfo::default());
                    }
                    Err(_) => failed += 1,
                }
            }
            black_box(failed);
        })
    } else {
        Box::new(move |iters| {
            for _ in 0..iters {
                match reader.try_pick_ref(&info) {
                    Ok(pick) => {
                        black_box(pick.subconn() as *const SubConn);
                    }
                    Err(_) => failed += 1,
                }
            }
            black_box(failed);
        })
    }
}

// ---------------------------------------------------------------------------
// Baselines: the same rotation over the same subchannel `Arc`s.

struct MutexRr(Mutex<(Vec<Arc<SubConn>>, usize)>);

impl MutexRr {
    #[inline]
    fn pick(&self) -> Arc<SubConn> {
        let mut g = self.0.lock().unwrap();
        let (list, cursor) = &mut *g;
        let i = *cursor;
        *cursor = if i + 1 == list.len() { 0 } else { i + 1 };
        list[i].clone()
    }
}

struct RwLockRr {
    list: RwLock<Vec<Arc<SubConn>>>,
    cursor: AtomicUsize,
}

impl RwLockRr {
    #[inline]
    fn pick(&self) -> Arc<SubConn> {
        let list = self.list.read().unwrap();
        list[self.cursor.fetch_add(1, Ordering::Relaxed) % list.len()].clone()
    }
}

/// gRPC-Go's round_robin picker: `next := atomic.AddUint32(&p.next, 1)` over
/// an immutable slice (Go's GC keeps the subchannel alive, so no reference).
struct AtomicRr {
    list: Vec<Arc<SubConn>>,
    next: AtomicUsize,
}

impl AtomicRr {
    #[inline]
    fn pick(&self) -> &SubConn {
        &self.list[self.next.fetch_add(1, Ordering::Relaxed) % self.list.len()]
    }
}

fn baselines(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    list: &[Arc<SubConn>],
) {
    let mutex = Arc::new(MutexRr(Mutex::new((list.to_vec(), 0))));
    let rwlock = Arc::new(RwLockRr {
        list: RwLock::new(list.to_vec()),
        cursor: AtomicUsize::new(0),
    });
    let atomic = Arc::new(AtomicRr {
        list: list.to_vec(),
        next: AtomicUsize::new(0),
    });
    let mutex_work = |_| -> Work {
        let m = mutex.clone();
        Box::new(move |iters| {
            for _ in 0..iters {
                black_box(m.pick());
            }
        })
    };
    let rwlock_work = |_| -> Work {
        let r = rwlock.clone();
        Box::new(move |iters| {
            for _ in 0..iters {
                black_box(r.pick());
            }
        })
    };
    let atomic_work = |_| -> Work {
        let a = atomic.clone();
        Box::new(move |iters| {
            for _ in 0..iters {
                black_box(a.pick() as *const SubConn);
            }
        })
    };
    bench_threads(group, "mutex_1t", 1, mutex_work);
    bench_threads(group, "rwlock_1t", 1, rwlock_work);
    bench_threads(group, "atomic_1t", 1, atomic_work);
    {
        // A writer swapping in a fresh list every millisecond, built outside the lock.
        let (m, r, list) = (mutex.clone(), rwlock.clone(), list.to_vec());
        let _writer = Ticker::start("mutex+rwlock", move |_| {
            let fresh = list.clone();
            let old = std::mem::replace(&mut m.0.lock().unwrap().0, fresh);
            drop(old);
            let fresh = list.clone();
            let old = std::mem::replace(&mut *r.list.write().unwrap(), fresh);
            drop(old);
        });
        bench_threads(group, "mutex_2t", 2, mutex_work);
        bench_threads(group, "rwlock_2t", 2, rwlock_work);
    }
    bench_threads(group, "atomic_2t", 2, atomic_work);
}

// ---------------------------------------------------------------------------

fn picks(c: &mut Criterion) {
    let sizes = sizes("PICK_BENCH_SIZES", &[3, 100, 10_000]);
    let largest = *sizes.iter().max().unwrap();
    for &n in &sizes {
        let rr = Fixture::new(n, false);
        let pf = Fixture::new(n, true);
        let mut group = c.benchmark_group(format!("pick_n{n}"));
        if n >= 10_000 {
            // Enough samples for a stable median; keeps the full run short.
            group.sample_size(50);
        }
        for f in [&rr, &pf] {
            let name = if f.flipper.pick_first {
                "sy_pf"
            } else {
                "sy_rr"
            };
            bench_threads(&mut group, &format!("{name}_1t"), 1, |_| {
                reader_work(f.hc.ch.reader(), false)
            });
            if name == "sy_rr" {
                bench_threads(&mut group, "sy_rr_owned_1t", 1, |_| {
                    reader_work(f.hc.ch.reader(), true)
                });
            }
            {
                let _publisher = f.flipper.publisher();
                bench_threads(&mut group, &format!("{name}_2t"), 2, |_| {
                    reader_work(f.hc.ch.reader(), false)
                });
            }
            // The publisher may have stopped with the subchannel down.
            f.flipper.flip(true);
            f.hc.ch.sync().unwrap();
            if name == "sy_rr" {
                scaling(f, name, n);
            }
        }
        baselines(&mut group, &rr.hc.ready);
        group.finish();
        drop(pf);
        if n == sizes[0] {
            parts(c, &rr);
        }
        if n == largest {
            publish(c, &rr);
        }
    }
}

/// A cross-check of criterion's `_2t` / `_1t` ratio: two threads against
/// one in back-to-back pairs (one thread alone, no publisher; then two threads
/// while the publisher runs; the same work per thread), the ratio of a pair
/// being 2 * t1 / t2. Criterion measures `_1t` and `_2t` seconds apart; a
/// pair sees the same neighbours on a shared VM, but each half is one 50 ms
/// sample, so one disturbed half moves the pair (criterion's median over many
/// short samples filters those). Prints the median over the pairs.
///
/// The same pairs run with pure ALU work in place of picks (`CEILING`): what
/// this machine gives two threads at that moment (a VM's second vCPU is not
/// always a whole core), and what the publisher and loop threads alone take
/// from two busy CPUs. A pick ratio below 1.8x next to a ceiling below it is
/// the machine, not the picks.
fn scaling(f: &Fixture, name: &str, n: usize) {
    let full = std::env::args().any(|a| a == "--bench");
    let (pairs, half) = if full {
        (21, Duration::from_millis(50))
    } else {
        (1, Duration::from_millis(1))
    };
    let picks = paired(
        f,
        pairs,
        half,
        || reader_work(f.hc.ch.reader(), false),
        true,
    );
    let alu = paired(f, pairs, half, alu_work, false);
    let alu_published = paired(f, pairs, half, alu_work, true);
    eprintln!(
        "SCALING {name} n={n}: 2t/1t {picks} over {pairs} pairs of {} ms per thread, \
         publisher on for the 2-thread half",
        half.as_millis()
    );
    eprintln!("CEILING n={n}: ALU work 2t/1t {alu}; with the publisher on {alu_published}");
}

/// Median (min, max) of `pairs` ratios 2 * t1 / t2, where t1 is one thread
/// doing about `half` of `make()`'s work and t2 two threads doing as much
/// each, with the publisher running when `publish`.
fn paired(
    f: &Fixture,
    pairs: usize,
    half: Duration,
    mut make: impl FnMut() -> Work,
    publish: bool,
) -> String {
    let one = Workers::new(vec![make()]);
    let two = Workers::new((0..2).map(|_| make()).collect());
    // Work per thread for one half to take about `half` on one thread.
    let mut iters = 10_000u64;
    loop {
        let t = one.run(iters);
        if t >= half / 4 || iters >= 1 << 40 {
            iters = (iters as f64 * half.as_secs_f64() / t.as_secs_f64().max(1e-9)) as u64;
            break;
        }
        iters *= 4;
    }
    let iters = iters.max(1);
    let mut ratios: Vec<f64> = (0..pairs)
        .map(|_| {
            let t1 = one.run(iters);
            let t2 = if publish {
                let _publisher = f.flipper.publisher_named("");
                two.run(iters)
            } else {
                two.run(iters)
            };
            // The publisher may have stopped with the subchannel down: up
            // again before the next one starts by taking it down.
            f.flipper.flip(true);
            f.hc.ch.sync().unwrap();
            2.0 * t1.as_secs_f64() / t2.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    format!(
        "median {:.2}x (min {:.2}x, max {:.2}x)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
    )
}

/// Register-only work that shares nothing: a 64-bit LCG step per iteration.
fn alu_work() -> Work {
    let mut x = 1u64;
    Box::new(move |iters| {
        for _ in 0..iters {
            x = black_box(x)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        black_box(x);
    })
}

/// What a `sy_rr_1t` pick is made of, each alone on one thread.
fn parts(c: &mut Criterion, rr: &Fixture) {
    let mut group = c.benchmark_group("parts");
    let slot = Arc::new(Slot::new(0u64));
    let mut cache = Cache::new(slot);
    // The hit path: one load of the generation, one compare.
    group.bench_function("cache_current", |b| b.iter(|| *black_box(cache.current())));
    // Lending a hold and returning it (one RMW on the reader's own line).
    group.bench_function("hold_release", |b| b.iter(|| drop(black_box(cache.hold()))));
    // The round_robin picker's choice through `dyn Picker`.
    let picker = RrPicker::new(rr.hc.ready.iter().cloned().map(RrEntry::Direct).collect());
    let picker: &dyn Picker = &picker;
    let mut local = PickLocal::new(1);
    let info = PickInfo::default();
    group.bench_function("rr_picker_pick", |b| {
        b.iter(|| match black_box(picker).pick(&info, &mut local) {
            PickResult::Complete { subconn, .. } => black_box(subconn as *const SubConn),
            _ => unreachable!(),
        })
    });
    group.finish();
}

fn publish(c: &mut Criterion, rr: &Fixture) {
    let n = rr.hc.ready.len();
    let mut group = c.benchmark_group(format!("publish_n{n}"));
    group.sample_size(30);
    // A reader that looks after every change, as RPC threads would.
    let mut reader = rr.hc.ch.reader();
    let mut up = false;
    group.bench_function("rr_visible", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let g = rr.hc.ch.picker_generation();
                let t0 = Instant::now();
                rr.flipper.flip(up);
                while rr.hc.ch.picker_generation() == g {
                    std::hint::spin_loop();
                }
                total += t0.elapsed();
                up = !up;
                reader.refresh();
                // Let the loop finish the rest of the command before the next.
                rr.hc.ch.sync().unwrap();
            }
            total
        })
    });
    if up {
        // Left with one child down: bring it back.
        rr.flipper.flip(true);
    }
    rr.hc.ch.sync().unwrap();
    let slot = Arc::new(Slot::new(RrPicker::new(vec![RrEntry::Direct(
        rr.hc.ready[0].clone(),
    )])));
    group.bench_function("rr_build_publish", |b| {
        b.iter(|| {
            let entries = rr.hc.ready.iter().cloned().map(RrEntry::Direct).collect();
            slot.publish(RrPicker::new(entries));
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::short_runs();
    targets = picks
}
criterion_main!(benches);
