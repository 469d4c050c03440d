//! Publication of immutable tables from one writer (the event loop) to many
//! readers (RPC threads), plus the wait/wake signal queued picks sleep on.
//!
//! Five protocols live here, each model-checked in `loom-tests/`:
//! - **publish / refresh**: the writer stores a new table, then bumps a generation
//!   counter. A reader's hit path is one `Acquire` load of that counter compared
//!   with the generation it cached: no lock, no thread-local, no RMW. Only on a
//!   miss does it fetch the table (`ArcSwap::load_full`, wait-free).
//! - **retire / release**: a reader lends out `Hold`s on its cached table (one per
//!   pick that must outlive the call). Lending is a plain increment of a counter
//!   only that reader touches; returning is one RMW on a line private to that
//!   reader's epoch. When the reader moves on it *seals* the epoch with the number
//!   it lent; whoever brings the count to zero (the reader or the last returner)
//!   frees it, and with it the table — exactly once.
//! - **wait / wake**: `Signal` is a mutex + condvar that every publish notifies
//!   after its state change, so a waiter that checked under the lock can't miss it.
//! - **watched values**: `Watched`, a value the loop sets (the channel's
//!   connectivity state) and threads wait to see change, with a count of
//!   its changes so that one undone before a waiter wakes still counts.
//! - **coalesced requests**: `Coalesce`, the flag that folds requests made
//!   from any thread (a picker asking for its policy's `work`) into one run
//!   on the loop, without losing one made while a run is pending.

use crate::sync::{lock, Arc, AtomicBool, AtomicU64, Condvar, Mutex, Ordering};
use crossbeam_utils::CachePadded;
use std::ptr::NonNull;
use std::time::Instant;

#[cfg(not(loom))]
struct Current<T>(arc_swap::ArcSwap<T>);

#[cfg(not(loom))]
impl<T> Current<T> {
    fn new(t: Arc<T>) -> Self {
        Current(arc_swap::ArcSwap::new(t))
    }
    fn load(&self) -> Arc<T> {
        self.0.load_full()
    }
    fn swap(&self, t: Arc<T>) -> Arc<T> {
        self.0.swap(t)
    }
}

// loom cannot see inside arc-swap, so the model uses a mutex with the same
// contract (a load returns the latest store or a later one).
#[cfg(loom)]
struct Current<T>(Mutex<Arc<T>>);

#[cfg(loom)]
impl<T> Current<T> {
    fn new(t: Arc<T>) -> Self {
        Current(Mutex::new(t))
    }
    fn load(&self) -> Arc<T> {
        lock(&self.0).clone()
    }
    fn swap(&self, t: Arc<T>) -> Arc<T> {
        std::mem::replace(&mut *lock(&self.0), t)
    }
}

/// The published table and its generation. One writer, any number of readers.
pub struct Slot<T> {
    generation: CachePadded<AtomicU64>,
    current: Current<T>,
    signal: Signal,
}

impl<T> Slot<T> {
    pub fn new(initial: T) -> Slot<T> {
        Slot {
            generation: CachePadded::new(AtomicU64::new(0)),
            current: Current::new(Arc::new(initial)),
            signal: Signal::new(),
        }
    }

    /// Replaces the table and wakes every waiter. Only the owning loop calls this.
    pub fn publish(&self, table: T) {
        let old = self.current.swap(Arc::new(table));
        // Release: a reader that sees the new generation also sees the new table.
        self.generation.fetch_add(1, Ordering::Release);
        self.signal.notify_all();
        // Last: if the slot held the only reference, the old table's destructor
        // (O(size) for a big picker) runs after readers and waiters can already
        // move on, not before.
        drop(old);
    }

    /// Moves the generation on without a new table: every reader's next
    /// pick takes its slow path once (where the channel counts activity).
    /// Wakes nobody: nothing a waiter waits for has changed.
    pub fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The latest table (slow path: clones an `Arc`).
    pub fn load(&self) -> Arc<T> {
        self.current.load()
    }

    /// Blocks until the generation differs from `seen` or `deadline` passes.
    /// Returns false on deadline.
    pub fn wait_for_change(&self, seen: u64, deadline: Option<Instant>) -> bool {
        self.signal
            .wait_until(|| self.generation() != seen, deadline)
    }

    /// The signal publishes wake, for waiting on something else that changes
    /// only with a publish (such as the channel's state).
    pub fn signal(&self) -> &Signal {
        &self.signal
    }
}

/// Wakes every waiter whose condition may have changed. A notifier changes the
/// condition first, then calls `notify_all`; a waiter checks the condition under
/// the mutex, so the two can't interleave into a lost wake-up.
pub struct Signal {
    mutex: Mutex<()>,
    condvar: Condvar,
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

impl Signal {
    pub fn new() -> Signal {
        Signal {
            mutex: Mutex::new(()),
            condvar: Condvar::new(),
        }
    }

    pub fn notify_all(&self) {
        drop(lock(&self.mutex));
        self.condvar.notify_all();
    }

    /// Waits until `ready()` holds (true) or `deadline` passes (false).
    pub fn wait_until(&self, mut ready: impl FnMut() -> bool, deadline: Option<Instant>) -> bool {
        let mut guard = lock(&self.mutex);
        loop {
            if ready() {
                return true;
            }
            guard = match deadline {
                None => match self.condvar.wait(guard) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                },
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    match self.condvar.wait_timeout(guard, d - now) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    }
                }
            };
        }
    }
}

/// Bias that keeps an unsealed epoch's count far from zero whatever the returns.
const UNSEALED: u64 = 1 << 63;

struct Epoch<T> {
    /// `UNSEALED - returned` until sealed, then `lent - returned`.
    outstanding: CachePadded<AtomicU64>,
    table: Arc<T>,
    /// What the cache's owner hung on the epochs it made (see
    /// `Cache::set_sidecar`): a pointer for holds to reach, kept alive here.
    sidecar: Sidecar,
}

/// Something of the cache owner's that each hold can reach (see
/// `Cache::set_sidecar`): its address and what keeps it alive. Not part of
/// the modelled protocol (written once per epoch, before any hold exists).
#[derive(Clone)]
struct Sidecar {
    ptr: *const (),
    _keep: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

impl Sidecar {
    const NONE: Sidecar = Sidecar {
        ptr: std::ptr::null(),
        _keep: None,
    };
}

/// Drops the epoch when `prev` (the value before our RMW) and `delta` bring it to zero.
///
/// # Safety
/// `epoch` came from `Box::leak` (`new_epoch`) and the caller held one unit of its count.
unsafe fn settle<T>(epoch: NonNull<Epoch<T>>, prev: u64, delta: u64) {
    if prev.wrapping_add(delta) == 0 {
        // SAFETY: the count reached zero in our RMW (AcqRel), so every other
        // holder has released its unit and no one can reach the epoch any more.
        drop(unsafe { Box::from_raw(epoch.as_ptr()) });
    }
}

/// A reader's cached view of a `Slot`. Thread-affine (`&mut self`), movable.
pub struct Cache<T> {
    slot: Arc<Slot<T>>,
    generation: u64,
    epoch: NonNull<Epoch<T>>,
    lent: u64,
    /// Hung on each new epoch.
    sidecar: Sidecar,
}

// SAFETY: the epoch is owned by this cache (plus returned-count RMWs from `Hold`s,
// which are atomic); moving the cache to another thread moves that ownership.
unsafe impl<T: Send + Sync> Send for Cache<T> {}

impl<T> Cache<T> {
    pub fn new(slot: Arc<Slot<T>>) -> Cache<T> {
        let generation = slot.generation();
        let table = slot.load();
        Cache {
            slot,
            generation,
            epoch: Self::new_epoch(table, Sidecar::NONE),
            lent: 0,
            sidecar: Sidecar::NONE,
        }
    }

    fn new_epoch(table: Arc<T>, sidecar: Sidecar) -> NonNull<Epoch<T>> {
        let epoch = Box::new(Epoch {
            outstanding: CachePadded::new(AtomicU64::new(UNSEALED)),
            table,
            sidecar,
        });
        NonNull::from(Box::leak(epoch))
    }

    /// Hangs `value` on every epoch made from now on (this table's next one
    /// included):
    /// holds lent from them reach it (`Hold::sidecar`) wherever they go,
    /// and keep it alive.
    pub fn set_sidecar<S: Send + Sync + 'static>(&mut self, value: std::sync::Arc<S>) {
        self.sidecar = Sidecar {
            ptr: std::sync::Arc::as_ptr(&value).cast(),
            _keep: Some(value),
        };
        // The cached table's next holds carry it too: a new epoch for the
        // same table (the old one retires once its holds are back).
        // SAFETY: unsealed epoch, alive (see `current`).
        let table = unsafe { self.epoch.as_ref() }.table.clone();
        let old = std::mem::replace(
            &mut self.epoch,
            Self::new_epoch(table, self.sidecar.clone()),
        );
        let lent = std::mem::take(&mut self.lent);
        Self::seal(old, lent);
    }

    /// The current table: one atomic load when nothing was published since.
    #[inline]
    pub fn current(&mut self) -> &T {
        if self.slot.generation() != self.generation {
            self.refresh();
        }
        // SAFETY: our epoch is unsealed, so its count can't reach zero: it's alive.
        unsafe { &self.epoch.as_ref().table }
    }

    /// The cached table, without looking for a newer one.
    #[inline]
    pub fn cached(&self) -> &T {
        // SAFETY: as in `current`.
        unsafe { &self.epoch.as_ref().table }
    }

    /// The generation the cached table is at least as new as.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn slot(&self) -> &Arc<Slot<T>> {
        &self.slot
    }

    /// Lends out the cached table until the `Hold` is dropped.
    #[inline(always)]
    pub fn hold(&mut self) -> Hold<T> {
        self.lent += 1;
        Hold { epoch: self.epoch }
    }

    /// Takes back a hold lent by this cache without an atomic operation, if it
    /// is on the table still cached (the usual case for a pick finished on the
    /// thread that made it). Otherwise hands it back to be dropped normally.
    #[inline(always)]
    pub fn give_back(&mut self, hold: Hold<T>) -> Result<(), Hold<T>> {
        if hold.epoch != self.epoch {
            return Err(hold);
        }
        // The unit was counted in `lent` and never returned atomically:
        // uncounting it here is the same as never having lent it.
        self.lent -= 1;
        std::mem::forget(hold);
        Ok(())
    }

    /// Moves to the latest table, retiring the old one once its holds are back.
    #[cold]
    pub fn refresh(&mut self) {
        // Generation first: the table loaded after it is at least that new.
        let generation = self.slot.generation();
        let table = self.slot.load();
        self.generation = generation;
        // SAFETY: unsealed epoch, alive (see `current`).
        if Arc::ptr_eq(&table, unsafe { &self.epoch.as_ref().table }) {
            return;
        }
        let old = std::mem::replace(
            &mut self.epoch,
            Self::new_epoch(table, self.sidecar.clone()),
        );
        let lent = std::mem::take(&mut self.lent);
        Self::seal(old, lent);
    }

    fn seal(epoch: NonNull<Epoch<T>>, lent: u64) {
        let delta = lent.wrapping_sub(UNSEALED);
        // SAFETY: the epoch is alive (unsealed until this RMW) and ours to seal.
        let prev = unsafe { epoch.as_ref() }
            .outstanding
            .fetch_add(delta, Ordering::AcqRel);
        // SAFETY: from `Box::leak` (`new_epoch`); the cache's unit is given up here.
        unsafe { settle(epoch, prev, delta) }
    }
}

impl<T> Drop for Cache<T> {
    fn drop(&mut self) {
        Self::seal(self.epoch, self.lent);
    }
}

/// Keeps one cached table alive (see the module docs). `Send`: it may be returned
/// from any thread.
pub struct Hold<T> {
    epoch: NonNull<Epoch<T>>,
}

// SAFETY: a Hold only reads the immutable table and does one atomic RMW on release.
unsafe impl<T: Send + Sync> Send for Hold<T> {}
// SAFETY: shared access is read-only.
unsafe impl<T: Send + Sync> Sync for Hold<T> {}

impl<T> Hold<T> {
    pub fn table(&self) -> &T {
        // SAFETY: this hold's unit keeps the epoch's count above zero.
        unsafe { &self.epoch.as_ref().table }
    }

    /// The sidecar its cache hung on its epoch (`Cache::set_sidecar`), as
    /// a pointer to what was set (null: none). Alive as long as the hold.
    #[inline(always)]
    pub fn sidecar(&self) -> *const () {
        // SAFETY: this hold's unit keeps the epoch alive.
        unsafe { self.epoch.as_ref() }.sidecar.ptr
    }

    /// The hold as a plain pointer (never null), to carry through C.
    #[inline(always)]
    pub fn into_raw(self) -> NonNull<()> {
        let epoch = self.epoch.cast();
        std::mem::forget(self);
        epoch
    }

    /// # Safety
    /// `raw` came from `into_raw` on a `Hold<T>` and is turned back only once.
    #[inline(always)]
    pub unsafe fn from_raw(raw: NonNull<()>) -> Hold<T> {
        Hold { epoch: raw.cast() }
    }
}

impl<T> Drop for Hold<T> {
    fn drop(&mut self) {
        let delta = 1u64.wrapping_neg();
        // SAFETY: our unit keeps the epoch alive until this RMW.
        let prev = unsafe { self.epoch.as_ref() }
            .outstanding
            .fetch_add(delta, Ordering::AcqRel);
        // SAFETY: the epoch came from `Box::leak` (`new_epoch`); we gave up our unit.
        unsafe { settle(self.epoch, prev, delta) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counted(u32, Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn reader_sees_new_table_after_publish() {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Slot::new(Counted(1, drops.clone())));
        let mut cache = Cache::new(slot.clone());
        assert_eq!(cache.current().0, 1);
        slot.publish(Counted(2, drops.clone()));
        // The slot let go of table 1; the cache still holds it until it looks again.
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert_eq!(cache.current().0, 2);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(cache);
        drop(slot);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn held_table_outlives_refresh_and_cache() {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Slot::new(Counted(1, drops.clone())));
        let mut cache = Cache::new(slot.clone());
        let _ = cache.current();
        let h1 = cache.hold();
        let h2 = cache.hold();
        slot.publish(Counted(2, drops.clone()));
        assert_eq!(cache.current().0, 2);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "two holds keep table 1");
        drop(h1);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        let h3 = cache.hold();
        drop(cache);
        assert_eq!(h2.table().0, 1);
        drop(h2);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "table 1 released with its last hold"
        );
        assert_eq!(h3.table().0, 2);
        drop(slot);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(h3);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn waiter_wakes_on_publish_and_times_out() {
        let slot = Arc::new(Slot::new(0u32));
        let g = slot.generation();
        let past = Instant::now();
        assert!(!slot.wait_for_change(g, Some(past)));
        let s2 = slot.clone();
        let t = std::thread::spawn(move || s2.wait_for_change(g, None));
        std::thread::sleep(std::time::Duration::from_millis(20));
        slot.publish(1);
        assert!(t.join().unwrap());
    }
}

/// Requests made from any thread that the loop serves in runs: a request
/// made while a run is pending schedules nothing more and is served by that
/// run, which sees whatever the requester wrote before asking. Both sides
/// write the flag with a read-modify-write: a plain store by the loop could
/// sit in its store buffer while the run reads the requesters' data, and a
/// request that found the flag still set would be lost.
pub struct Coalesce {
    pending: AtomicBool,
}

impl Default for Coalesce {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalesce {
    /// No run pending.
    pub fn new() -> Coalesce {
        Coalesce {
            pending: AtomicBool::new(false),
        }
    }

    /// A request (any thread, after writing what the run needs): true when
    /// the caller must schedule a run, none being pending.
    pub fn request(&self) -> bool {
        // Release: the run that serves this request sees what came before.
        !self.pending.swap(true, Ordering::AcqRel)
    }

    /// Whether a run is scheduled and has not started (the loop, to run it
    /// early; a request that has just been made may not show yet).
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The loop, as a run starts (before it reads the requesters' data):
    /// requests from now on schedule another run.
    pub fn serve(&self) {
        // Acquire from the last request that found the flag set.
        self.pending.swap(false, Ordering::AcqRel);
    }
}

/// A one-byte value one writer (the loop) sets and any thread waits to see
/// change (the channel's connectivity state), with a count of its changes:
/// a waiter for a change away from a value sees one that was undone before
/// it woke (READY -> TRANSIENT_FAILURE -> READY), as gRPC's
/// `WaitForStateChange` does. Value and count are one word (the count
/// above the low byte), so a reader never sees one without the other: a
/// change in progress never reads as one undone.
pub struct Watched {
    word: AtomicU64,
}

impl Watched {
    /// Starts at `value`, unchanged.
    pub fn new(value: u8) -> Watched {
        Watched {
            word: AtomicU64::new(u64::from(value)),
        }
    }

    /// The value now.
    pub fn get(&self) -> u8 {
        self.word.load(Ordering::Acquire) as u8
    }

    /// The writer sets a new value (different from the last); waiters wake
    /// at its next `notify_all` of the signal they wait on.
    pub fn set(&self, value: u8) {
        // One writer: a load and a store, not a read-modify-write.
        let changes = (self.word.load(Ordering::Relaxed) >> 8).wrapping_add(1);
        self.word
            .store(changes << 8 | u64::from(value), Ordering::Release);
    }

    /// Blocks on `signal` (which the writer notifies after each `set`)
    /// until the value differs from `from` or changes after this call
    /// begins, returning the value then (`from` again when a change was
    /// undone), or `None` when `deadline` passes first.
    pub fn wait_for_change(
        &self,
        signal: &Signal,
        from: u8,
        deadline: Option<Instant>,
    ) -> Option<u8> {
        let start = self.word.load(Ordering::Acquire) >> 8;
        let mut seen = from;
        let changed = signal.wait_until(
            || {
                let now = self.word.load(Ordering::Acquire);
                seen = now as u8;
                seen != from || now >> 8 != start
            },
            deadline,
        );
        changed.then_some(seen)
    }
}
