//! ring_hash pick cost (`cargo bench --bench policy_ring_hash -- --quick`).
//!
//! Groups `ring_hash_n{N}` for N = 3, 100, 10,000 and 100,000 READY
//! endpoints (the ring is capped at 4096 entries, as gRPC's is, so past
//! 4096 endpoints only 4096 of them are on it), medians in ns per pick:
//! - `sy_1t` / `sy_2t`: `Reader::try_pick_ref` with a request hash, on one
//!   thread / on two threads at once (one reader each; throughput is 2
//!   elements per iteration, so the median is one pick on each thread).
//!   The channel is a real one over the external connector, every
//!   endpoint brought up the way ring_hash does it: a pick lands on it, the
//!   policy connects it, the host reports READY.
//! - `mutex_1t` / `mutex_2t`: the shared-state baseline, a ring in an
//!   `Arc<Mutex<BTreeMap<hash, Arc<SubConn>>>>` of the same size: lock,
//!   find the first entry at or after the hash, clone its `Arc`.
//! - `atomic_1t` / `atomic_2t`: gRPC-Go's round-robin picker (one shared
//!   `AtomicUsize` `fetch_add` over an immutable vector, no reference
//!   taken): no hashing at all, a yardstick for how loaded the machine is.
//!
//! - `CPU` lines (stderr, not criterion): one thread's CPU time per pick
//!   (`CLOCK_THREAD_CPUTIME_ID` over 2,000,000 picks, best of 5) for `sy`,
//!   `mutex` and `atomic`: on a machine shared with other work, wall-clock
//!   medians include the time the thread waited for a CPU; this does not.
//!
//! Target (issue 11): ≤ 15 ns per pick at every size; two threads ≥ 1.8×
//! one. Hashes cycle through 4096 precomputed random values, so picks land
//! all over the ring. Worker threads are pinned one per CPU.
//!
//! `cargo test --benches` runs each once with N = 3 and 100 only
//! (`RING_BENCH_SIZES=3,100,10000,100000` overrides, in either mode).

mod common;

use common::{bench_threads, sizes, thread_cpu, HostChannel, Work};
use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use switchyard::ConnectivityState::Ready;
use switchyard::{PickError, PickInfo, Reader, SubConn};

const RING_HASH: &str = r#"{"loadBalancingConfig":[{"ring_hash_experimental":{}}]}"#;
/// Distinct request hashes each worker cycles through (a power of two).
const HASHES: usize = 4096;

fn xxh64(s: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(s.as_bytes(), 0)
}

fn random_hashes(seed: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..HASHES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect()
}

/// A ring_hash channel over `n` endpoints, every endpoint on the ring
/// READY: each pass picks every endpoint's first entry (`<addr>_0`, which
/// lands on it), the policy connects those that were IDLE, and the host
/// reports each new subchannel READY.
fn fixture(n: usize) -> HostChannel {
    let t0 = Instant::now();
    let mut hc = HostChannel::new(Some(RING_HASH), n);
    let ch = hc.ch.clone();
    let mut reader = ch.reader();
    let mut reported = HashSet::new();
    for pass in 0.. {
        assert!(pass < 20, "endpoints still not READY after {pass} passes");
        let mut queued = 0;
        for a in &hc.addrs {
            let info = PickInfo {
                hash: Some(xxh64(&format!("{a}_0"))),
                ..PickInfo::default()
            };
            match reader.try_pick_ref(&info) {
                Ok(_) => {}
                Err(PickError::NoSubConnAvailable) => queued += 1,
                Err(e) => panic!("{e}"),
            }
        }
        if queued == 0 {
            break;
        }
        ch.sync().unwrap();
        for sc in hc.host.created() {
            if reported.insert(sc.id()) {
                ch.report_subconn_state(sc.id(), Ready, "").unwrap();
            }
        }
        ch.sync().unwrap();
    }
    hc.ready = hc.host.created();
    eprintln!(
        "SETUP ring_hash n={n}: {} endpoints READY (on the ring), bring-up {:.1} ms",
        hc.ready.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(ch.state(), Ready);
    hc
}

/// Picks through a reader, the hash changing every pick.
fn reader_work(mut reader: Reader, hashes: Vec<u64>) -> Work {
    let mut i = 0usize;
    let mut failed = 0u64;
    Box::new(move |iters| {
        for _ in 0..iters {
            let info = PickInfo {
                hash: Some(hashes[i & (HASHES - 1)]),
                ..PickInfo::default()
            };
            i = i.wrapping_add(1);
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

/// The baseline: one ring behind a mutex, shared by every thread.
type SharedRing = Arc<Mutex<BTreeMap<u64, Arc<SubConn>>>>;

fn shared_ring(ready: &[Arc<SubConn>]) -> SharedRing {
    // As many entries as ring_hash's ring (1024..4096), spread evenly.
    let per = 1024usize.div_ceil(ready.len()).max(1);
    let mut map = BTreeMap::new();
    for sc in ready {
        for k in 0..per {
            map.insert(xxh64(&format!("{}_{k}", sc.addr())), sc.clone());
        }
    }
    Arc::new(Mutex::new(map))
}

fn mutex_work(ring: SharedRing, hashes: Vec<u64>) -> Work {
    let mut i = 0usize;
    Box::new(move |iters| {
        for _ in 0..iters {
            let h = hashes[i & (HASHES - 1)];
            i = i.wrapping_add(1);
            let map = ring.lock().unwrap();
            let sc = map
                .range(h..)
                .next()
                .or_else(|| map.iter().next())
                .map(|(_, sc)| sc.clone());
            drop(map);
            black_box(sc);
        }
    })
}

/// The atomic-counter baseline.
type SharedCursor = Arc<(std::sync::atomic::AtomicUsize, Vec<Arc<SubConn>>)>;

fn atomic_work(shared: SharedCursor) -> Work {
    Box::new(move |iters| {
        let (cursor, list) = &*shared;
        for _ in 0..iters {
            let i = cursor.fetch_add(1, Ordering::Relaxed) % list.len();
            black_box(&list[i]);
        }
    })
}

/// CPU ns per operation of `work`, best of 5 runs of 2,000,000.
fn cpu_ns(mut work: Work) -> f64 {
    const N: u64 = 2_000_000;
    work(N / 10); // warm up
    (0..5)
        .map(|_| {
            let t0 = thread_cpu();
            work(N);
            (thread_cpu() - t0).as_nanos() as f64 / N as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn picks(c: &mut Criterion) {
    for n in sizes("RING_BENCH_SIZES", &[3, 100, 10_000, 100_000]) {
        let fixture = fixture(n);
        let mut group = c.benchmark_group(format!("ring_hash_n{n}"));
        for threads in [1, 2] {
            let ch = fixture.ch.clone();
            bench_threads(&mut group, &format!("sy_{threads}t"), threads, |t| {
                reader_work(ch.reader(), random_hashes(0x5eed + t as u64))
            });
        }
        let ring = shared_ring(&fixture.ready);
        for threads in [1, 2] {
            bench_threads(&mut group, &format!("mutex_{threads}t"), threads, |t| {
                mutex_work(ring.clone(), random_hashes(0x5eed + t as u64))
            });
        }
        let cursor: SharedCursor = Arc::new((0.into(), fixture.ready.clone()));
        for threads in [1, 2] {
            bench_threads(&mut group, &format!("atomic_{threads}t"), threads, |_| {
                atomic_work(cursor.clone())
            });
        }
        group.finish();
        if std::env::args().any(|a| a == "--bench") {
            let sy = cpu_ns(reader_work(fixture.ch.reader(), random_hashes(7)));
            let mutex = cpu_ns(mutex_work(ring.clone(), random_hashes(7)));
            let atomic = cpu_ns(atomic_work(cursor.clone()));
            eprintln!(
                "CPU ring_hash n={n}: sy {sy:.2} ns/pick, mutex {mutex:.2}, atomic {atomic:.2} (target sy <= 15)"
            );
        }
    }
}

criterion_group!(benches, picks);
criterion_main!(benches);
