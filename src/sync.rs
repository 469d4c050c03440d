//! The loom shim: concurrency-relevant code imports from here, never from `std::sync`
//! directly, so `RUSTFLAGS="--cfg loom"` swaps in loom's model-checked types (the
//! tokio / crossbeam pattern). The protocols between the loop and RPC threads
//! (`publish`: publish / refresh / retire, wait / wake, release, watched values
//! such as the channel's state, coalesced requests; weighted_round_robin's
//! endpoint weights) use it; other shared state (subchannels' transport
//! handles, readers' host-pick counters: single-writer atomics whose table is
//! handed to snapshots through an `ArcSwap`; independent counters such as
//! outlier detection's outcomes) is single atomics or locks that need no
//! model. least_request's in-flight counts (`balancer::in_flight`: slots
//! with one writer each, handed from reader to reader) use it too.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

/// Locks, ignoring poisoning: our critical sections never leave data half-written
/// (they guard wake-ups, swap one `Arc`, or set a few plain fields after the
/// last call that could panic), so a panic elsewhere cannot corrupt what the
/// mutex protects.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
