//! The loom shim: concurrency-relevant code imports from here, never from `std::sync`
//! directly, so `RUSTFLAGS="--cfg loom"` swaps in loom's model-checked types (the
//! tokio / crossbeam pattern). Only the protocols between the loop and RPC threads
//! (`publish`, `signal`) use it; everything else is single-threaded loop code.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

/// Locks, ignoring poisoning: our critical sections never leave data half-written
/// (they only guard wake-ups or swap one `Arc`), so a panic elsewhere cannot
/// corrupt what the mutex protects.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
