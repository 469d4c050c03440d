//! A channel's introspection snapshot (what gRPC's channelz shows): target,
//! policy, state, the channel's call counters (each library call once), and
//! each subchannel with its address, state, last error and call counters
//! (per attempt).
//!
//! # Where the counters live
//!
//! No counter costs a pick a shared write.
//!
//! - **Library calls** (channels with the library's own connections) are
//!   counted where the library sends them (`Reader::unary` and the loop's
//!   started calls), per *attempt*, and once per whole call under the
//!   `CHANNEL` key (a started call's by the channel's completion
//!   dispatcher, from its start to its delivered outcome), into counters
//!   owned by the
//!   [`Reader`](crate::Reader) (or the loop's started-call table) that made
//!   them: a small map from subchannel to counts behind a mutex that only
//!   that reader's thread locks, except for the moment a snapshot reads it.
//!   An uncontended lock on a line only one thread writes costs a call about
//!   what its two `Instant::now()`s cost, and never bounces a cache line
//!   between RPC threads.
//! - **Host picks** (channels whose host owns the transports: each pick is
//!   one RPC on the picked subchannel, its done the outcome) are counted by
//!   the reader that picks, in a table of its own indexed by the
//!   subchannel's *slot* (a dense index the channel gives each subchannel):
//!   a plain load and store of a line only that thread writes, at the pick
//!   (started) and, for a failure, at its done; a kept or borrowed pick's
//!   success is derived (see `Tally`). A pick finished elsewhere
//!   (`Pick::done`, `sy_pick_done`, on any thread) counts its outcome with
//!   one atomic add in the picking reader's `Elsewhere` table, which the
//!   pick's hold carries: threads picking on different readers never write
//!   one line. A pick dropped without done counts as failed (CANCELLED, as gRPC counts
//!   an abandoned RPC). Picks carry no clock: a host pick's `last_call` is
//!   when a snapshot first saw the subchannel's started count move (so it
//!   is exact to the interval between snapshots).
//!
//! Each reader registers its counts with the channel; when it is dropped its
//! counts are folded into the channel's retired totals. A slot is given to
//! a new subchannel only once the subchannel that had it is gone (no picker
//! and no pick holds it), and the counts left at it then become that slot's
//! baseline, so a new subchannel starts at zero.
//!
//! A snapshot is taken on the event loop ([`Channel::snapshot`] sends it a
//! command and waits for the reply), so the subchannel list, states and
//! errors are one consistent view; the counters are summed over the readers
//! at that moment (each reader's entry consistent in itself).
//!
//! [`Channel::snapshot`]: crate::Channel::snapshot

use crate::balancer::subconn::SubConnId;
use crate::connectivity::ConnectivityState;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

/// One channel at one moment (see [`Channel::snapshot`](crate::Channel::snapshot)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// The target the channel was created with (empty: the host resolves).
    pub target: String,
    /// The load-balancing policy's name, as in the service config.
    pub policy: String,
    /// The channel's aggregate connectivity state.
    pub state: ConnectivityState,
    /// The policy's current subchannels, in creation order.
    pub subchannels: Vec<SubchannelSnapshot>,
    /// Library calls made on the channel (gRFC A14's channel counts): each
    /// call once, whatever its attempts, also one that failed before any
    /// subchannel was picked or before anything was sent. Zero on a
    /// channel whose host owns the transports (its picks count on their
    /// subchannels).
    pub calls_started: u64,
    /// Calls that ended with status OK.
    pub calls_succeeded: u64,
    /// Calls that ended otherwise.
    pub calls_failed: u64,
    /// Calls started and not yet ended.
    pub calls_in_flight: u64,
    /// When the latest call started.
    pub last_call: Option<SystemTime>,
}

/// One subchannel of a [`ChannelSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubchannelSnapshot {
    /// The subchannel's id (as in the policy API and the C ABI).
    pub id: SubConnId,
    /// The address it connects to.
    pub address: String,
    /// Its connectivity state (as the policy sees it).
    pub state: ConnectivityState,
    /// The latest error of a failed connection attempt, lost connection or
    /// failed health check; kept after the subchannel recovers.
    pub last_error: Option<String>,
    /// Call attempts sent on this subchannel's connections (a transparent
    /// retry on another subchannel counts there).
    pub calls_started: u64,
    /// Attempts that ended with status OK.
    pub calls_succeeded: u64,
    /// Attempts that ended otherwise (including deadline and cancellation).
    pub calls_failed: u64,
    /// Attempts started and not yet ended.
    pub calls_in_flight: u64,
    /// When the latest attempt started.
    pub last_call: Option<SystemTime>,
}

impl ChannelSnapshot {
    /// The snapshot as one JSON object (the C ABI's form): `target`,
    /// `policy`, `state` (e.g. `"READY"`), the channel's `calls_started`,
    /// `calls_succeeded`, `calls_failed`, `calls_in_flight` and
    /// `last_call_unix_ms` (number or null), and `subchannels`, each with
    /// `id`, `address`, `state`, `last_error` (string or null) and the same
    /// five counts.
    pub fn to_json(&self) -> String {
        let subchannels: Vec<serde_json::Value> = self
            .subchannels
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id.0,
                    "address": s.address,
                    "state": s.state.as_str(),
                    "last_error": s.last_error,
                    "calls_started": s.calls_started,
                    "calls_succeeded": s.calls_succeeded,
                    "calls_failed": s.calls_failed,
                    "calls_in_flight": s.calls_in_flight,
                    "last_call_unix_ms": unix_ms(s.last_call),
                })
            })
            .collect();
        serde_json::json!({
            "target": self.target,
            "policy": self.policy,
            "state": self.state.as_str(),
            "calls_started": self.calls_started,
            "calls_succeeded": self.calls_succeeded,
            "calls_failed": self.calls_failed,
            "calls_in_flight": self.calls_in_flight,
            "last_call_unix_ms": unix_ms(self.last_call),
            "subchannels": subchannels,
        })
        .to_string()
    }
}

fn unix_ms(t: Option<SystemTime>) -> Option<u64> {
    t.map(|t| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64)
}

/// Where readers count whole calls (the channel's counts) in their maps
/// of per-subchannel attempts: an id no subchannel has.
pub(crate) const CHANNEL: SubConnId = SubConnId(u64::MAX);

/// Counts of one subchannel's attempts, in one reader (or summed).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) started: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) last_call: Option<SystemTime>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.started += other.started;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.last_call = self.last_call.max(other.last_call);
    }

    fn in_flight(&self) -> u64 {
        self.started.saturating_sub(self.succeeded + self.failed)
    }
}

type CountMap = HashMap<SubConnId, Counts>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A channel's registry of per-reader counts (in `ChannelShared`).
#[derive(Default)]
pub(crate) struct CallStats {
    inner: Mutex<Registry>,
    /// Slots given out so far (every subchannel's slot is below): how large
    /// readers' host-pick tables must be. Raised before the subchannel is
    /// in any published picker.
    slots: AtomicU32,
}

#[derive(Default)]
struct Registry {
    live: Vec<Weak<Mutex<CountMap>>>,
    /// Counts of readers that are gone.
    retired: CountMap,
    /// Every live reader's host-pick table.
    tallies: Vec<Weak<TallyHandle>>,
    /// Every reader's tables of picks finished elsewhere that a pick may
    /// still write to (a reader's or a hold's); folded into
    /// `retired_elsewhere` once nothing else holds them.
    elsewhere: Vec<Arc<Elsewhere>>,
    /// Picks finished elsewhere, of tables nothing writes to any more.
    retired_elsewhere: Vec<[u64; 2]>,
    /// Host-pick counts of readers that are gone, by slot.
    retired_tally: Vec<[u64; 3]>,
    /// What was counted at a slot before its current subchannel got it.
    baseline: Vec<[u64; 3]>,
    /// Per subchannel: its started count at the last snapshot, and when a
    /// snapshot first saw it there (host picks' `last_call`).
    seen: HashMap<SubConnId, (u64, SystemTime)>,
}

/// One reader's host-pick counters, per slot, written by that reader's
/// thread only (a relaxed load and store: single writer), read by
/// snapshots.
///
/// A pick that ends on the reader before its next one (kept, borrowed)
/// costs one count when it succeeds: its start. Its success is what is
/// left of its starts once the failures and the one still open (`open`)
/// are taken away; so an OK done only clears `open`, a store. (A count at
/// the done would be a load and store whose address comes from a value
/// stored by the pick a moment before, which stalls a pick + done pair
/// over a few endpoints by a third.) Owned picks, which may be many and
/// open long, count each end.
pub(crate) struct Tally {
    cells: Columns<COLUMNS>,
    /// `slot + 1` of the open kept pick and of the open borrowed pick, or 0.
    /// On a line of its own: every kept or borrowed pick writes it, so it
    /// must not share a line with anything another thread writes (another
    /// reader's tally, allocated next to this one).
    open: crossbeam_utils::CachePadded<[AtomicU64; 2]>,
}

/// `C` columns of `len` counters, one column after the other, with a cache
/// line of unused counters at either end, so that no other allocation
/// (another reader's, say) shares a line with them: each reader's thread
/// writes its own. A pick counts in one column (kept and borrowed picks in
/// `KB_STARTED`): dense 8-byte counters, so a reader walking 100,000
/// endpoints streams an eighth of a line per pick, not a 40-byte row.
struct Columns<const C: usize> {
    all: Box<[AtomicU64]>,
    len: usize,
}

impl<const C: usize> Columns<C> {
    /// Unused counters at each end: 64 bytes.
    const PAD: usize = 8;

    fn new(len: usize) -> Columns<C> {
        Columns {
            all: (0..C * len + 2 * Self::PAD)
                .map(|_| AtomicU64::new(0))
                .collect(),
            len,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Counter `column` at `slot`.
    fn cell(&self, slot: usize, column: usize) -> Option<&AtomicU64> {
        if slot < self.len && column < C {
            self.all.get(Self::PAD + column * self.len + slot)
        } else {
            None
        }
    }

    /// Every column's count at `slot` (zeros beyond the table).
    fn row(&self, slot: usize) -> [u64; C] {
        std::array::from_fn(|k| self.cell(slot, k).map_or(0, |v| v.load(Ordering::Relaxed)))
    }

    /// The first counter of the first column, for a pointer over the
    /// `C × len()` counters.
    fn start(&self) -> std::ptr::NonNull<AtomicU64> {
        std::ptr::NonNull::from(&self.all[Self::PAD..]).cast()
    }
}

/// Columns of a `Tally` cell.
const KB_STARTED: usize = 0;
const KB_FAILED: usize = 1;
const OWNED_STARTED: usize = 2;
const OWNED_SUCCEEDED: usize = 3;
const OWNED_FAILED: usize = 4;
const COLUMNS: usize = 5;

/// Which of a reader's picks `Tally::open` tracks.
const KEPT: usize = 0;
const BORROWED: usize = 1;

/// Counts as a snapshot reports them.
const STARTED: usize = 0;
const SUCCEEDED: usize = 1;
const FAILED: usize = 2;

impl Tally {
    fn with_len(len: usize) -> Tally {
        Tally {
            cells: Columns::new(len),
            open: Default::default(),
        }
    }

    /// `[started, succeeded, failed]` at `slot`.
    fn get(&self, slot: usize) -> [u64; 3] {
        if slot >= self.cells.len() {
            return [0; 3];
        }
        let c = self.cells.row(slot);
        let open = self
            .open
            .iter()
            .filter(|o| o.load(Ordering::Relaxed) == slot as u64 + 1)
            .count() as u64;
        let kb_succeeded = c[KB_STARTED].saturating_sub(c[KB_FAILED] + open);
        [
            c[KB_STARTED] + c[OWNED_STARTED],
            kb_succeeded + c[OWNED_SUCCEEDED],
            c[KB_FAILED] + c[OWNED_FAILED],
        ]
    }
}

/// A reader's counters of its picks finished away from it (`Pick::done`,
/// `sy_pick_done`, on any thread): `[succeeded, failed]` per slot, each a
/// read-modify-write, but on the picking reader's own table, so threads
/// picking on different readers never write one line. A pick reaches it
/// through its hold (`Hold::sidecar`). Never resized: a reader that needs
/// more slots makes a new one, and every table is summed.
pub(crate) struct Elsewhere {
    /// Succeeded, failed.
    cells: Columns<2>,
}

impl Elsewhere {
    /// Counts a pick at `slot` finished elsewhere (nothing when the slot
    /// is beyond the table: its start was not counted either).
    #[inline]
    pub(crate) fn finished(&self, slot: u32, ok: bool) {
        if let Some(c) = self.cells.cell(slot as usize, usize::from(!ok)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get(&self, slot: usize) -> [u64; 2] {
        self.cells.row(slot)
    }
}

/// Where a reader's current `Tally` is published for snapshots: replaced
/// (never written in place by anyone but its reader) when the reader needs
/// a larger one.
pub(crate) struct TallyHandle {
    table: arc_swap::ArcSwap<Tally>,
}

/// A reader's side of its host-pick counters: the table it writes, as a
/// pointer and length at hand for the pick path.
pub(crate) struct ReaderTally {
    handle: Option<Arc<TallyHandle>>,
    /// Keeps `cells` alive.
    table: Arc<Tally>,
    /// `table.cells`' first counter: column `k` of `slot` is `k × len + slot`
    /// counters on.
    cells: std::ptr::NonNull<AtomicU64>,
    len: usize,
    stats: Arc<CallStats>,
}

// SAFETY: `cells` points into `table`, which the value owns (an Arc of
// atomics: Send + Sync); moving the value moves both.
unsafe impl Send for ReaderTally {}

impl ReaderTally {
    /// A reader's table, empty until `grow` (readers of channels with the
    /// library's own connections never grow it: their calls are counted
    /// as calls).
    pub(crate) fn new(stats: &Arc<CallStats>) -> ReaderTally {
        let table = Arc::new(Tally::with_len(0));
        ReaderTally {
            handle: None,
            cells: table.cells.start(),
            table,
            len: 0,
            stats: stats.clone(),
        }
    }

    /// Makes the table cover every slot given out so far (on a reader's
    /// sync, never on the hit path). Registers it on first use. Returns the
    /// reader's new table for picks finished elsewhere, when it made one
    /// (for the reader's holds to carry).
    #[cold]
    pub(crate) fn grow(&mut self) -> Option<Arc<Elsewhere>> {
        let need = self.stats.slots.load(Ordering::Acquire) as usize;
        if need <= self.len {
            return None;
        }
        let len = need.max(self.len * 2).max(16);
        let table = Tally::with_len(len);
        // No pick of the reader's is open here (it grows on a sync, after
        // dropping its kept pick; a borrowed pick borrows it): `open` is 0.
        for slot in 0..self.len {
            for k in 0..COLUMNS {
                if let (Some(n), Some(o)) =
                    (table.cells.cell(slot, k), self.table.cells.cell(slot, k))
                {
                    n.store(o.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
        }
        let table = Arc::new(table);
        let elsewhere = Arc::new(Elsewhere {
            cells: Columns::new(len),
        });
        lock(&self.stats.inner).elsewhere.push(elsewhere.clone());
        match &self.handle {
            // Copied before it is published: a snapshot sees the old table
            // or the new one, each whole (only this thread writes either).
            Some(h) => h.table.store(table.clone()),
            None => {
                let h = Arc::new(TallyHandle {
                    table: arc_swap::ArcSwap::new(table.clone()),
                });
                lock(&self.stats.inner).tallies.push(Arc::downgrade(&h));
                self.handle = Some(h);
            }
        }
        self.cells = table.cells.start();
        self.len = len;
        self.table = table;
        Some(elsewhere)
    }

    #[inline(always)]
    fn bump(&self, slot: u32, which: usize) {
        let slot = slot as usize;
        // `which` is a constant at every call: its test costs nothing.
        if slot < self.len && which < COLUMNS {
            // SAFETY: `slot < len` and `which < COLUMNS`: within the `COLUMNS × len` counters of
            // `table.cells`, which `self` keeps alive.
            let c = unsafe { &*self.cells.as_ptr().add(which * self.len + slot) };
            // Single writer (this reader's thread): no read-modify-write.
            c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// Starts loading `slot`'s row into the cache, for a pick that will
    /// count there soon.
    #[inline(always)]
    pub(crate) fn prefetch(&self, slot: u32) {
        let slot = slot as usize;
        if slot < self.len {
            // SAFETY: `slot < len`: in bounds of `table.cells` (the
            // `KB_STARTED` column, the first: where kept and borrowed
            // picks count).
            crate::prefetch::prefetch(unsafe { self.cells.as_ptr().add(slot) });
        }
    }

    /// Marks the reader's open kept (`KEPT`) or borrowed (`BORROWED`)
    /// pick: `slot + 1`, or 0 for none. A store.
    #[inline(always)]
    fn set_open(&self, which: usize, value: u64) {
        self.table.open[which].store(value, Ordering::Relaxed);
    }

    /// A kept (`borrowed` false) or borrowed pick handed out at `slot`.
    #[inline(always)]
    pub(crate) fn opened(&self, slot: u32, borrowed: bool) {
        self.bump(slot, KB_STARTED);
        self.set_open(if borrowed { BORROWED } else { KEPT }, u64::from(slot) + 1);
    }

    /// The reader's open kept or borrowed pick at `slot` ended (`ok`: OK).
    #[inline(always)]
    pub(crate) fn closed(&self, slot: u32, borrowed: bool, ok: bool) {
        if !ok {
            self.bump(slot, KB_FAILED);
        }
        self.set_open(if borrowed { BORROWED } else { KEPT }, 0);
    }

    /// An owned pick handed out at `slot`.
    #[inline(always)]
    pub(crate) fn started(&self, slot: u32) {
        self.bump(slot, OWNED_STARTED);
    }

    /// An owned pick at `slot` finished through this reader.
    #[inline(always)]
    pub(crate) fn finished(&self, slot: u32, ok: bool) {
        self.bump(slot, if ok { OWNED_SUCCEEDED } else { OWNED_FAILED });
    }
}

impl Drop for ReaderTally {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        // Folded under the registry lock, with the handle gone from the
        // registry's view at the same time: a snapshot sees these counts
        // in one place or the other.
        let mut reg = lock(&self.stats.inner);
        let table = handle.table.load_full();
        drop(handle);
        if reg.retired_tally.len() < table.cells.len() {
            reg.retired_tally.resize(table.cells.len(), [0; 3]);
        }
        for (slot, total) in reg.retired_tally.iter_mut().enumerate() {
            let c = table.get(slot);
            for k in 0..3 {
                total[k] += c[k];
            }
        }
        reg.tallies.retain(|w| w.strong_count() > 0);
    }
}

impl CallStats {
    /// Sums every reader's counts for the subchannels in `live`, dropping
    /// what is kept for subchannels that are gone and have nothing in flight.
    /// The channel's own counts (`CHANNEL`) are always kept.
    pub(crate) fn sum(&self, live: &HashSet<SubConnId>) -> CountMap {
        let keep = |id: &SubConnId| *id == CHANNEL || live.contains(id);
        let mut reg = lock(&self.inner);
        reg.retired.retain(|id, _| keep(id));
        let mut total = reg.retired.clone();
        reg.live.retain(|w| w.strong_count() > 0);
        for map in reg.live.iter().filter_map(Weak::upgrade) {
            let mut map = lock(&map);
            map.retain(|id, c| keep(id) || c.in_flight() > 0);
            for (id, c) in map.iter().filter(|(id, _)| keep(id)) {
                total.entry(*id).or_default().add(c);
            }
        }
        total
    }

    /// Library calls in flight on the channel, over every reader (idleness:
    /// a channel with a call still running is not idle).
    pub(crate) fn in_flight(&self) -> u64 {
        let mut reg = lock(&self.inner);
        reg.live.retain(|w| w.strong_count() > 0);
        // A reader's calls end before it goes: retired counts have none.
        reg.live
            .iter()
            .filter_map(Weak::upgrade)
            // Attempts, not whole calls: a call waiting for a pick is
            // no use of the channel's connections.
            .map(|m| {
                lock(&m)
                    .iter()
                    .filter(|(id, _)| **id != CHANNEL)
                    .map(|(_, c)| c.in_flight())
                    .sum::<u64>()
            })
            .sum()
    }

    /// A slot for a new subchannel: `reuse` (a slot whose subchannel is
    /// gone) or the next one. What readers counted at a reused slot becomes
    /// its baseline.
    pub(crate) fn take_slot(&self, reuse: Option<u32>) -> u32 {
        let Some(slot) = reuse else {
            return self.slots.fetch_add(1, Ordering::AcqRel);
        };
        let mut reg = lock(&self.inner);
        let total = reg.tally_at(slot as usize);
        let i = slot as usize;
        if reg.baseline.len() <= i {
            reg.baseline.resize(i + 1, [0; 3]);
        }
        reg.baseline[i] = total;
        slot
    }

    /// Host-pick counts of each `(id, slot, finished elsewhere)`, over every
    /// reader, less the slot's baseline; `last_call` as the snapshot first
    /// saw the count move (see the module's docs).
    pub(crate) fn host_sum(&self, subs: &[HostSlot]) -> CountMap {
        let now = SystemTime::now();
        let mut reg = lock(&self.inner);
        reg.fold_elsewhere();
        let mut out = CountMap::new();
        let mut seen = HashMap::with_capacity(subs.len());
        for sub in subs {
            let mut c = reg.host_counts(sub);
            c.last_call = match reg.seen.get(&sub.0) {
                Some(&(started, at)) if started == c.started => Some(at),
                _ if c.started == 0 => None,
                _ => Some(now),
            };
            if let Some(at) = c.last_call {
                seen.insert(sub.0, (c.started, at));
            }
            out.insert(sub.0, c);
        }
        reg.seen = seen;
        out
    }

    /// Host picks not finished yet on the subchannels `subs`: a channel
    /// with one is in use (idleness).
    pub(crate) fn host_in_flight(&self, subs: &[HostSlot]) -> u64 {
        let reg = lock(&self.inner);
        subs.iter().map(|s| reg.host_counts(s).in_flight()).sum()
    }

    /// Folds a reader's counts into the retired totals; under the registry
    /// lock, so that a snapshot sees them in one place or the other.
    fn retire(&self, map: &Mutex<CountMap>) {
        let mut reg = lock(&self.inner);
        let counts = std::mem::take(&mut *lock(map));
        for (id, c) in &counts {
            reg.retired.entry(*id).or_default().add(c);
        }
    }
}

/// A subchannel as host-pick counts see it: its id and its slot.
pub(crate) type HostSlot = (SubConnId, u32);

impl Registry {
    /// Folds the tables of picks finished elsewhere that nothing but the
    /// registry holds (no reader, no hold: nothing writes to them).
    fn fold_elsewhere(&mut self) {
        let mut i = 0;
        while i < self.elsewhere.len() {
            if Arc::strong_count(&self.elsewhere[i]) > 1 {
                i += 1;
                continue;
            }
            // The count is read `Relaxed`: this acquires the last holder's
            // release of its `Arc` (as `Arc::get_mut` does), so the counts
            // it wrote before letting go are seen below.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let e = self.elsewhere.swap_remove(i);
            if self.retired_elsewhere.len() < e.cells.len() {
                self.retired_elsewhere.resize(e.cells.len(), [0; 2]);
            }
            for (slot, total) in self.retired_elsewhere.iter_mut().enumerate() {
                let c = e.get(slot);
                total[0] += c[0];
                total[1] += c[1];
            }
        }
    }

    /// One subchannel's host-pick counts (no `last_call`).
    fn host_counts(&self, &(_, slot): &HostSlot) -> Counts {
        let i = slot as usize;
        let total = self.tally_at(i);
        let base = self.baseline.get(i).copied().unwrap_or([0; 3]);
        let count = |k: usize| total[k].saturating_sub(base[k]);
        Counts {
            started: count(STARTED),
            succeeded: count(SUCCEEDED),
            failed: count(FAILED),
            last_call: None,
        }
    }

    /// Host-pick counts at `slot`, over live and retired readers, picks
    /// finished elsewhere included.
    fn tally_at(&self, slot: usize) -> [u64; 3] {
        let mut total = self.retired_tally.get(slot).copied().unwrap_or([0; 3]);
        for h in self.tallies.iter().filter_map(Weak::upgrade) {
            let c = h.table.load().get(slot);
            for k in 0..3 {
                total[k] += c[k];
            }
        }
        let elsewhere = self.elsewhere.iter().map(|e| e.get(slot));
        let retired = self.retired_elsewhere.get(slot).copied();
        for c in elsewhere.chain(retired) {
            total[SUCCEEDED] += c[0];
            total[FAILED] += c[1];
        }
        total
    }
}

/// One reader's counts, registered with its channel on first use; folded
/// into the channel's retired totals when dropped.
pub(crate) struct ReaderCounts {
    map: Arc<Mutex<CountMap>>,
    stats: Arc<CallStats>,
}

impl ReaderCounts {
    pub(crate) fn new(stats: &Arc<CallStats>) -> ReaderCounts {
        let map = Arc::new(Mutex::new(CountMap::new()));
        lock(&stats.inner).live.push(Arc::downgrade(&map));
        ReaderCounts {
            map,
            stats: stats.clone(),
        }
    }

    pub(crate) fn started(&self, sc: SubConnId) {
        let now = SystemTime::now();
        let mut map = lock(&self.map);
        let c = map.entry(sc).or_default();
        c.started += 1;
        c.last_call = Some(now);
    }

    pub(crate) fn ended(&self, sc: SubConnId, ok: bool) {
        let mut map = lock(&self.map);
        let c = map.entry(sc).or_default();
        if ok {
            c.succeeded += 1;
        } else {
            c.failed += 1;
        }
    }

    /// A whole call started on the channel (the channel's counts).
    pub(crate) fn call_started(&self) {
        self.started(CHANNEL);
    }

    /// A whole call ended (`ok`: with status OK).
    pub(crate) fn call_ended(&self, ok: bool) {
        self.ended(CHANNEL, ok);
    }
}

impl Drop for ReaderCounts {
    fn drop(&mut self) {
        self.stats.retire(&self.map);
    }
}

/// Fills a subchannel's counters from the summed counts.
pub(crate) fn with_counts(mut s: SubchannelSnapshot, c: Option<&Counts>) -> SubchannelSnapshot {
    if let Some(c) = c {
        // The counters are read one at a time while picks go on: a pick
        // that started and ended between two reads would show more ended
        // than started. A snapshot never says so.
        s.calls_started = c.started.max(c.succeeded.saturating_add(c.failed));
        s.calls_succeeded = c.succeeded;
        s.calls_failed = c.failed;
        s.calls_in_flight = c.in_flight();
        s.last_call = c.last_call;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_counts_sum_and_survive_the_reader() {
        let stats = Arc::new(CallStats::default());
        let (a, b, gone) = (SubConnId(1), SubConnId(2), SubConnId(3));
        let live: HashSet<SubConnId> = [a, b].into_iter().collect();
        let r1 = ReaderCounts::new(&stats);
        let r2 = ReaderCounts::new(&stats);
        for _ in 0..3 {
            r1.started(a);
            r1.ended(a, true);
        }
        r1.started(b);
        r2.started(b);
        r2.ended(b, false);
        r2.started(gone);
        r2.ended(gone, true);
        let sum = stats.sum(&live);
        assert_eq!(
            (sum[&a].started, sum[&a].succeeded, sum[&a].in_flight()),
            (3, 3, 0)
        );
        assert_eq!(
            (sum[&b].started, sum[&b].failed, sum[&b].in_flight()),
            (2, 1, 1)
        );
        assert!(sum[&a].last_call.is_some());
        // A gone subchannel is not reported, and its finished counts go.
        assert!(!sum.contains_key(&gone));
        assert!(!lock(&r2.map).contains_key(&gone));
        // A dropped reader's counts stay in the totals.
        drop(r1);
        drop(r2);
        let sum = stats.sum(&live);
        assert_eq!(sum[&a].succeeded, 3);
        assert_eq!(sum[&b].started, 2);
        assert!(lock(&stats.inner).live.is_empty());
    }

    #[test]
    fn host_picks_sum_over_readers_and_a_reused_slot_starts_at_zero() {
        let stats = Arc::new(CallStats::default());
        let (a, b) = (SubConnId(1), SubConnId(2));
        let (sa, sb) = (stats.take_slot(None), stats.take_slot(None));
        let mut r1 = ReaderTally::new(&stats);
        let mut r2 = ReaderTally::new(&stats);
        // Not grown: nothing is counted (a reader of a channel with the
        // library's connections never grows).
        r1.started(sa);
        let elsewhere = r1.grow().expect("a first table");
        r2.grow();
        for _ in 0..3 {
            r1.started(sa);
            r1.finished(sa, true);
        }
        // b: one of r1's picks, finished on another thread (through the
        // table its hold carries); one of r2's failed; one kept pick open.
        r1.started(sb);
        elsewhere.finished(sb, true);
        r2.started(sb);
        r2.finished(sb, false);
        r2.opened(sb, false);
        let subs = [(a, sa), (b, sb)];
        let sum = stats.host_sum(&subs);
        assert_eq!(
            (sum[&a].started, sum[&a].succeeded, sum[&a].in_flight()),
            (3, 3, 0)
        );
        assert_eq!(
            (sum[&b].started, sum[&b].succeeded, sum[&b].failed),
            (3, 1, 1)
        );
        assert!(sum[&a].last_call.is_some());
        assert_eq!(stats.host_in_flight(&subs), 1);
        // The kept pick ends OK: a store, its success derived.
        r2.closed(sb, false, true);
        assert_eq!(stats.host_sum(&subs)[&b].succeeded, 2);
        // A dropped reader's counts stay; a table grown after counting
        // keeps what it had counted; a table of picks finished elsewhere
        // that nothing holds any more is folded, not lost.
        drop(r2);
        for _ in 0..40 {
            stats.take_slot(None);
        }
        // (A reader's cache keeps its current table, as `current` here.)
        let current = r1.grow().expect("a larger table");
        drop(elsewhere);
        let sum = stats.host_sum(&subs);
        assert_eq!(
            (sum[&b].started, sum[&b].succeeded, sum[&b].failed),
            (3, 2, 1)
        );
        assert_eq!(sum[&a].succeeded, 3);
        assert_eq!(
            lock(&stats.inner).elsewhere.len(),
            1,
            "only the table still held stays"
        );
        current.finished(sb, false);
        let sum = stats.host_sum(&subs);
        assert_eq!((sum[&b].succeeded, sum[&b].failed), (2, 2));
        // `a`'s slot goes to a newcomer: it starts at zero.
        let c = SubConnId(3);
        assert_eq!(stats.take_slot(Some(sa)), sa);
        let sum = stats.host_sum(&[(c, sa)]);
        assert_eq!((sum[&c].started, sum[&c].succeeded), (0, 0));
        assert_eq!(sum[&c].last_call, None);
        r1.started(sa);
        assert_eq!(stats.host_in_flight(&[(c, sa)]), 1);
    }
}
