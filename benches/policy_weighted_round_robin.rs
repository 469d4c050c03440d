//! weighted_round_robin picks and weight recomputation
//! (`cargo bench --bench policy_weighted_round_robin -- --noplot`).
//!
//! Groups (criterion ids `<group>/<function>`, medians in ns per pick):
//! - `wrr_n{N}` for N = 3, 100, 10,000, 100,000 READY endpoints (a channel
//!   over the external connector, no socket), each endpoint's weight set
//!   by load reports through its picks' done hooks (qps 1..10 at
//!   utilization 1: a 10:1 spread), the schedule republished every 100 ms
//!   by the policy's own weight-update timer while it runs:
//!   - `sy_1t`: one thread, `Reader::try_pick_ref` (what a blocking RPC
//!     thread does per call);
//!   - `picker_1t`: the same schedule's `Picker::pick` called directly
//!     with a `PickLocal` (no reader): the scheduler's own cost;
//!   - `sy_done_1t`: `Reader::try_pick` + `Reader::finish` with no load
//!     (a pick that outlives the next, its done hooks called);
//!   - `sy_2t`: two threads, one reader each (2 picks per iteration: the
//!     median is the wall time of one pick on each thread);
//!   - baselines, the same static stride schedule over the same
//!     subchannels with its sequence shared: `atomic_*` (gRPC-Go's and gRPC
//!     C++'s picker: one `fetch_add` per step on a shared counter) and
//!     `mutex_*` (`Arc<Mutex<..>>` around the counter).
//! - `recompute_n{N}`: `publish`: one load report and one weight-update
//!   tick on the loop, through `TestClientConn` (every endpoint's
//!   effective weight, scaling, building the schedule, publishing it and
//!   dropping the old one; the report moves one weight by 5 %, so every
//!   tick builds and publishes, which the bench checks). Each
//!   iteration moves the clock 1 s, so the weights are set never to expire
//!   (with the default 3 min, from the 180th iteration on every weight had
//!   expired and the tick measured plain round robin, which builds no
//!   schedule); the schedule is checked to still be weighted afterwards.
//!
//! Worker threads are pinned, one per CPU. `cargo test --benches` runs each
//! once with N = 3 and 100 (`WRR_BENCH_SIZES=...` overrides, in either mode).

mod common;

use common::{addrs, pin_to, sizes, HostChannel};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::balancer::testing::TestClientConn;
use switchyard::ConnectivityState::Ready;
use switchyard::{Address, ClientConnState, DoneInfo, PickInfo, Reader, SubConn, SubConnId};

const WRR: &str = r#"{"loadBalancingConfig":[{"weighted_round_robin":
    {"blackoutPeriod":"0s","weightUpdatePeriod":"0.1s"}}]}"#;

/// Endpoint `i`'s qps at utilization 1, i.e. its weight: 1..=10.
fn qps(i: usize) -> f64 {
    1.0 + (i % 10) as f64
}

/// A WRR channel over `n` READY endpoints whose weights are in use.
fn fixture(n: usize) -> HostChannel {
    let t0 = Instant::now();
    let hc = HostChannel::all_ready(WRR, n);
    let up = t0.elapsed();
    // Load reports: every endpoint is picked (evenly, as no weight counts
    // yet) and reports its qps.
    let index: HashMap<SubConnId, usize> = hc
        .ready
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id(), i))
        .collect();
    let mut r = hc.ch.reader();
    for _ in 0..2 * n {
        let pick = r.try_pick(&PickInfo::default()).unwrap();
        let load = [
            ("rps_fractional", qps(index[&pick.subconn().id()])),
            ("application_utilization", 1.0),
        ];
        let info = DoneInfo {
            load: &load,
            ..Default::default()
        };
        r.finish(pick, &info);
    }
    // The next weight update (every 100 ms) takes them.
    std::thread::sleep(Duration::from_millis(300));
    hc.ch.sync().unwrap();
    let share = weighted_share(&mut r, &index);
    eprintln!(
        "SETUP weighted_round_robin n={n}: bring-up {:.1} ms; share of the \
         weight-10 endpoints {share:.3} (weights in use: > 0.1)",
        up.as_secs_f64() * 1e3
    );
    assert!(n < 10 || share > 0.15, "weights not in use: {share}");
    hc
}

/// The share of picks that go to endpoints of weight 10 (0.1 of them by
/// count; 10/55 of the weight), over at least two rounds of the schedule:
/// fewer picks than endpoints see only a stretch of it, whose share swings
/// (0.14 to 0.20 at 100,000 endpoints over 20,000 picks).
fn weighted_share(r: &mut Reader, index: &HashMap<SubConnId, usize>) -> f64 {
    let picks = (2 * index.len()).max(20_000);
    let heavy = (0..picks)
        .filter(|_| {
            let p = r.try_pick_ref(&PickInfo::default()).unwrap();
            qps(index[&p.subconn().id()]) == 10.0
        })
        .count();
    heavy as f64 / picks as f64
}

// ---------------------------------------------------------------------------
// Baseline: the same static stride scheduler, its sequence shared.

/// gRPC-Go / gRPC C++'s picker: weights scaled to 65535, one shared
/// sequence counter advanced per step.
struct SharedStride<C> {
    subconns: Vec<Arc<SubConn>>,
    weights: Vec<u32>,
    seq: C,
}

trait Counter: Send + Sync {
    fn next(&self) -> u64;
}

impl Counter for AtomicU64 {
    #[inline]
    fn next(&self) -> u64 {
        self.fetch_add(1, Ordering::Relaxed)
    }
}

impl Counter for Arc<Mutex<u64>> {
    #[inline]
    fn next(&self) -> u64 {
        let mut g = self.lock().unwrap();
        *g += 1;
        *g
    }
}

impl<C: Counter> SharedStride<C> {
    fn new(subconns: &[Arc<SubConn>], seq: C) -> Self {
        let max = (0..subconns.len()).map(qps).fold(0.0, f64::max);
        SharedStride {
            subconns: subconns.to_vec(),
            weights: (0..subconns.len())
                .map(|i| (qps(i) / max * 65535.0).round() as u32)
                .collect(),
            seq,
        }
    }

    #[inline]
    fn pick(&self) -> &SubConn {
        let n = self.weights.len() as u64;
        loop {
            let s = self.seq.next();
            let (i, gen) = ((s % n) as usize, s / n);
            let w = self.weights[i] as u64;
            if (w * gen + i as u64 * 32767) % 65535 >= 65535 - w {
                return &self.subconns[i];
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Harness.

/// Wall time for each of `states.len()` pinned threads to run `work`
/// `iters` times on its own state.
fn timed<S: Send>(states: &mut [S], iters: u64, work: impl Fn(&mut S) + Sync) -> Duration {
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for (cpu, st) in states.iter_mut().enumerate() {
            let work = &work;
            s.spawn(move || {
                pin_to(cpu);
                for _ in 0..iters {
                    work(st);
                }
            });
        }
    });
    t0.elapsed()
}

fn picks(c: &mut Criterion) {
    for n in sizes("WRR_BENCH_SIZES", &[3, 100, 10_000, 100_000]) {
        let fx = fixture(n);
        let mut group = c.benchmark_group(format!("wrr_n{n}"));
        let info = PickInfo::default();
        for threads in [1usize, 2] {
            let mut readers: Vec<Reader> = (0..threads).map(|_| fx.ch.reader()).collect();
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_function(BenchmarkId::from_parameter(format!("sy_{threads}t")), |b| {
                b.iter_custom(|iters| {
                    timed(&mut readers, iters, |r| {
                        let p = r.try_pick_ref(&info).unwrap();
                        black_box(p.subconn() as *const SubConn);
                    })
                })
            });
            let atomic = SharedStride::new(&fx.ready, AtomicU64::new(0));
            let mut shared: Vec<&SharedStride<AtomicU64>> = vec![&atomic; threads];
            group.bench_function(
                BenchmarkId::from_parameter(format!("atomic_{threads}t")),
                |b| {
                    b.iter_custom(|iters| {
                        timed(&mut shared, iters, |p| {
                            black_box(p.pick() as *const SubConn);
                        })
                    })
                },
            );
            let mutex = SharedStride::new(&fx.ready, Arc::new(Mutex::new(0u64)));
            let mut shared: Vec<&SharedStride<Arc<Mutex<u64>>>> = vec![&mutex; threads];
            group.bench_function(
                BenchmarkId::from_parameter(format!("mutex_{threads}t")),
                |b| {
                    b.iter_custom(|iters| {
                        timed(&mut shared, iters, |p| {
                            black_box(p.pick() as *const SubConn);
                        })
                    })
                },
            );
        }
        // The same as sy_1t on criterion's own thread (no pinned worker).
        let mut r = fx.ch.reader();
        group.bench_function("sy_main_1t", |b| {
            b.iter(|| {
                let p = r.try_pick_ref(&info).unwrap();
                black_box(p.subconn() as *const SubConn);
            })
        });
        let mut one = vec![fx.ch.reader()];
        group.throughput(Throughput::Elements(1));
        group.bench_function("sy_done_1t", |b| {
            b.iter_custom(|iters| {
                timed(&mut one, iters, |r| {
                    let p = r.try_pick(&info).unwrap();
                    r.finish(p, &DoneInfo::default());
                })
            })
        });
        group.finish();
        drop(fx);
        recompute(c, n);
    }
}

/// One pick from `picker`, whose done reports the endpoint's load: qps by
/// its index (see `qps`) times `shift`, at utilization 1.
fn report_one(
    picker: &dyn switchyard::picker::Picker,
    local: &mut switchyard::PickLocal,
    index: &HashMap<SubConnId, usize>,
    shift: f64,
) {
    if let switchyard::PickResult::Complete { subconn, done } =
        picker.pick(&PickInfo::default(), local)
    {
        let load = [
            ("rps_fractional", qps(index[&subconn.id()]) * shift),
            ("application_utilization", 1.0),
        ];
        done.report(
            subconn,
            &DoneInfo {
                load: &load,
                ..Default::default()
            },
        );
    }
}

/// One weight-update tick over `n` READY endpoints with weights.
fn recompute(c: &mut Criterion, n: usize) {
    let builder = switchyard::registry::get("weighted_round_robin").unwrap();
    // Weights that never expire: every tick below recomputes a weighted
    // schedule however many ticks criterion runs.
    let config = builder
        .parse_config(&serde_json::json!({
            "blackoutPeriod": "0s",
            "weightExpirationPeriod": "1000000000s",
        }))
        .unwrap();
    let mut wrr = builder.build();
    let mut cc = TestClientConn::new();
    let addresses = addrs(n).iter().map(Address::new).collect();
    cc.update(
        &mut *wrr,
        ClientConnState::from_addresses(addresses, config),
    )
    .unwrap();
    for id in cc.connects().to_vec() {
        cc.set_state(&mut *wrr, id, Ready);
    }
    cc.run_work(&mut *wrr);
    let index: HashMap<SubConnId, usize> = cc
        .subconns()
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id(), i))
        .collect();
    let first = cc.picker().unwrap().clone();
    let (mut local, mut turn) = (switchyard::PickLocal::new(3), switchyard::PickLocal::new(5));
    for _ in 0..n {
        report_one(&*first, &mut local, &index, 1.0);
    }
    // The scheduler alone, on the schedule these weights make.
    cc.advance(&mut *wrr, Duration::from_secs(1));
    let picker = cc.picker().unwrap().clone();
    let mut group = c.benchmark_group(format!("wrr_n{n}"));
    group.bench_function("picker_1t", |b| {
        b.iter(|| match picker.pick(&PickInfo::default(), &mut local) {
            switchyard::PickResult::Complete { subconn, .. } => {
                black_box(subconn as *const SubConn);
            }
            _ => unreachable!(),
        })
    });
    group.finish();
    let mut group = c.benchmark_group(format!("recompute_n{n}"));
    group.sample_size(20);
    let before = cc.pickers_published();
    let mut ticks = 0usize;
    group.bench_function("publish", |b| {
        b.iter(|| {
            // One endpoint reports a load 5 % off its last, so its weight
            // and the schedule change and the tick rebuilds and publishes
            // (with loads that never change, a tick finds the same scaled
            // weights and publishes nothing). The first picker's rotation
            // takes the endpoints in turn, so each alternates.
            let shift = if (ticks / n) % 2 == 0 { 1.05 } else { 1.0 };
            report_one(&*first, &mut turn, &index, shift);
            ticks += 1;
            // Exactly one tick (the period is 1 s).
            cc.advance(&mut *wrr, Duration::from_secs(1));
        })
    });
    group.finish();
    let published = cc.pickers_published() - before;
    assert_eq!(published, ticks, "each tick publishes");
    // Still the weighted schedule: the top-qps endpoints get `top` times
    // the picks of qps 1 ones (plain round robin would give them the same).
    let top = qps(n.min(10) - 1);
    let picker = cc.picker().unwrap().clone();
    let (mut heavy, mut light) = (0.0, 0.0);
    for _ in 0..100 * n {
        if let switchyard::PickResult::Complete { subconn, .. } =
            picker.pick(&PickInfo::default(), &mut local)
        {
            let q = qps(index[&subconn.id()]);
            if q == top {
                heavy += 1.0;
            } else if q == 1.0 {
                light += 1.0;
            }
        }
    }
    assert!(
        heavy > light * top / 2.0,
        "not weighted: {heavy} vs {light}"
    );
}

criterion_group! {
    name = benches;
    config = common::short_runs();
    targets = picks
}
criterion_main!(benches);
