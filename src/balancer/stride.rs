//! The static stride scheduler (gRFC A58's, as gRPC C++ and gRPC-Go
//! implement it) as a part any weighted policy can publish, and that
//! readers run inline, as they walk a [`Rotation`](crate::Rotation): no
//! call through the picker, no result written and read back.
//!
//! Weights are scaled so the largest is 65535. Pick number `s` looks at
//! entry `i = s mod n` of generation `g = s div n` and takes it iff
//! `(w_i·g + i·32767) mod 65535 >= 65535 − w_i`, else moves on to `s + 1`:
//! over 65535 generations entry `i` is taken exactly `w_i` times, spread
//! out by the per-entry offset. No lock; the sequence `s` is kept in each
//! reader (`PickLocal::sequence`), not in the schedule, so picking writes
//! nothing shared.
//!
//! A reader works the schedule out 64 steps at a time, into a mask of the
//! steps taken that it then hands out one by one (`PickLocal`'s batch): the
//! 64 stride tests have no branch and none depends on another, so they run
//! as 16-bit vector arithmetic (`mod 65535` is one's-complement addition),
//! where testing one step at a time cost a branch per step that the
//! processor cannot predict (whether an entry is taken follows the
//! weights). The picks are the same, in the same order; a pick costs about
//! what a round-robin one does (2.0-2.3 ns against 5.8 one step at a time,
//! the scheduler alone).
//!
//! Readers of a schedule over few endpoints skip even that: when whole
//! generations of the schedule fit a few hundred kilobytes and give every
//! entry at least `CYCLE_LEAST` picks, the schedule works them out once, as
//! it is built (its `Cycle`), and readers walk those steps round and round
//! from a random start, as they walk a rotation. Taken over whole
//! generations, each entry's share of a pass is its weight's to within one
//! pick of at least `CYCLE_LEAST` (1 %; the steps are the scheduler's own,
//! so this is what gRPC's sequence gives over the same generations).
//! Working batches out was a third of a reader's weighted pick.

use crate::balancer::done::DoneHook;
use crate::balancer::pick_local::{Batch, PickLocal};
use crate::balancer::rotation::RotationEntry;
use crate::balancer::subconn::SubConn;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The largest scaled weight (and every entry's in an unweighted schedule).
pub const MAX_WEIGHT: u16 = u16::MAX;

/// A scheduled endpoint: its subchannel and the hook that hears the load
/// its picks report.
///
/// The hook is a **load listener**: a done that carries load metrics
/// reaches it; one without may not (a reader's kept pick skips it then).
/// That is all a weighted policy needs (gRPC-Go's weighted_round_robin
/// acts on load reports only), and it lets a pick's done cost nothing when
/// the RPC reports no load.
///
/// One cache line each (what a pick reads, and the subchannel's owner): a
/// reader streaming through 100,000 entries reads a line per pick, not
/// 1.25.
#[repr(align(64))]
pub struct ScheduleEntry {
    listed: RotationEntry,
    /// From `Arc::into_raw`: the entry owns one count of the hook, given
    /// back in `drop` (one fat pointer, not a pointer and an `Arc` too).
    hook: NonNull<dyn DoneHook>,
    /// Owns what `listed` points to.
    _subconn: Arc<SubConn>,
}

// SAFETY: pointers into what the entry owns (`SubConn` and the hook are
// `Send + Sync`), only ever read.
unsafe impl Send for ScheduleEntry {}
// SAFETY: as above.
unsafe impl Sync for ScheduleEntry {}

impl Drop for ScheduleEntry {
    fn drop(&mut self) {
        // SAFETY: `hook` came from `Arc::into_raw` in `new` and is given
        // back once, here; nothing uses it after.
        drop(unsafe { Arc::from_raw(self.hook.as_ptr().cast_const()) });
    }
}

impl ScheduleEntry {
    /// `subconn`, whose picks' load reports go to `hook`.
    pub fn new(subconn: Arc<SubConn>, hook: Arc<dyn DoneHook>) -> ScheduleEntry {
        // SAFETY: the entry owns `subconn`, so the pointers stay valid for
        // as long as the entry (an `Arc`'s value never moves).
        let listed = unsafe { RotationEntry::new(&subconn) };
        // SAFETY: `Arc::into_raw` never returns null.
        let hook = unsafe { NonNull::new_unchecked(Arc::into_raw(hook).cast_mut()) };
        ScheduleEntry {
            listed,
            hook,
            _subconn: subconn,
        }
    }

    /// The subchannel.
    pub fn subconn(&self) -> &SubConn {
        // SAFETY: points into `_subconn`, alive as long as `self`.
        unsafe { self.listed.ptr().as_ref() }
    }

    /// The hook that hears the load of this entry's picks.
    pub fn hook(&self) -> &(dyn DoneHook + 'static) {
        // SAFETY: the entry holds a count of the hook's `Arc` (see `hook`):
        // alive as long as `self`.
        unsafe { self.hook.as_ref() }
    }

    /// What a reader hands out for a pick of this entry (id, address, tag).
    #[inline(always)]
    pub(crate) fn listed(&self) -> &RotationEntry {
        &self.listed
    }

    /// The hook as a pointer, for a pick that outlives the borrow.
    pub(crate) fn hook_ptr(&self) -> NonNull<dyn DoneHook> {
        self.hook
    }
}

/// A schedule's endpoints, shared by the schedules built over the same
/// READY set: a weight update rebuilds only the strides, touching no
/// reference count per endpoint.
pub type ScheduleEntries = Arc<[ScheduleEntry]>;

/// A static stride schedule over weighted entries.
pub struct StrideSchedule {
    strides: Strides,
    entries: ScheduleEntries,
    /// Its first generations' steps, for readers to walk (`None`: too many
    /// to be worth keeping; readers work batches out, see `Hand`).
    cycle: Option<Cycle>,
    /// Entries too many for the cache (`prefetch::large_table_len`): a
    /// reader's step misses on its entry unless started early (see
    /// `Hand::next`). A schedule with a cycle is small enough.
    ahead: bool,
}

impl StrideSchedule {
    /// A schedule over `entries` with scaled `weights` (`None`: all equal,
    /// a plain rotation): the largest should be 65535, as
    /// `weighted_round_robin`'s scaling makes it (else picks still end, but
    /// the heaviest entry stands in whenever a batch of at least `n` steps
    /// takes none). `None` when there is no entry, the lengths differ or
    /// there are more than `u32::MAX − 64` entries.
    pub fn new(entries: ScheduleEntries, weights: Option<&[u16]>) -> Option<StrideSchedule> {
        let strides = Strides::new(entries.len(), weights)?;
        let cycle = strides.cycle();
        let ahead = cycle.is_none() && entries.len() >= crate::prefetch::large_table_len();
        Some(StrideSchedule {
            strides,
            entries,
            cycle,
            ahead,
        })
    }

    /// Its entries, for the next schedule over the same READY set.
    pub fn entries(&self) -> &ScheduleEntries {
        &self.entries
    }

    /// How many entries (at least one).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The scaled weight of each entry, in order.
    pub fn weights(&self) -> impl Iterator<Item = u16> + '_ {
        self.strides.weights()
    }

    /// The entry to pick next for the reader whose scratch is `local`
    /// (which moves on).
    #[inline(always)]
    pub fn next(&self, local: &mut PickLocal) -> &ScheduleEntry {
        let i = self.strides.next_index(local);
        self.entry(i)
    }

    /// `next`, and the steps after it put in `hand`, named `generation`
    /// (the caller's name for this schedule: a hand from it is good only
    /// while the caller still holds this schedule under that name): the
    /// schedule's cycle (from a random step on a hand from another
    /// schedule, from its start on a hand that walked it to its end), else
    /// a batch's worth worked out for this reader.
    pub(crate) fn fill(
        &self,
        local: &mut PickLocal,
        hand: &mut Hand,
        generation: u64,
    ) -> &ScheduleEntry {
        hand.entries = NonNull::from(&self.entries[..]).cast();
        hand.ahead = self.ahead;
        let (steps, at, first) = match &self.cycle {
            Some(cycle) => {
                // `fill` is called when the hand has no step left: one of
                // this schedule's has walked the cycle to its end.
                let at = if hand.generation == generation {
                    0
                } else {
                    local.random_below(cycle.steps.len())
                };
                let steps = &cycle.steps[..];
                (NonNull::from(steps), at, steps.get(at).copied())
            }
            None => {
                let own = *hand
                    .own
                    .get_or_insert_with(|| NonNull::from(Box::leak(Box::new([0; BATCH]))));
                // SAFETY: `own` is the hand's own, made above or before
                // (alive until the hand is dropped), and nothing else
                // refers to it: the hand's `steps` are not read while this
                // `&mut` lives, and are set anew below.
                let own = unsafe { &mut *own.as_ptr() };
                let mut len = 0;
                self.strides.drain(local, |i| {
                    debug_assert!(len < BATCH);
                    // `drain` hands out at most `BATCH` steps; the mask
                    // changes nothing and drops the bounds check.
                    own[len % BATCH] = i as u32;
                    len += 1;
                });
                let steps = &own[..len];
                if hand.ahead {
                    // The steps `Hand::next` takes before the first whose
                    // entry it starts loading.
                    for &i in steps.iter().skip(1).take(AHEAD as usize) {
                        crate::prefetch::prefetch(self.entry(i as usize));
                    }
                }
                (NonNull::from(steps), 0, steps.first().copied())
            }
        };
        hand.generation = generation;
        hand.steps = steps.cast();
        // At most `CYCLE_PICKS` or `BATCH` long.
        hand.len = steps.len() as u32;
        hand.at = at as u32 + 1;
        match first {
            Some(i) => self.entry(i as usize),
            // A cycle has a step, and `drain` hands out at least one:
            // never.
            None => self.next(local),
        }
    }

    #[inline(always)]
    fn entry(&self, i: usize) -> &ScheduleEntry {
        debug_assert!(i < self.entries.len());
        // SAFETY: every index `Strides` hands out is below `n` (see
        // `next_index_at_hand`), which is `entries.len()`
        // (`Strides::new(entries.len(), ..)`).
        unsafe { self.entries.get_unchecked(i) }
    }
}

/// Names each schedule built, so a reader's batch of picks is never taken
/// from a schedule other than the one that worked it out (even one built
/// at the same address after that one was freed).
static SCHEDULES: AtomicU64 = AtomicU64::new(1);

/// How many steps a batch works out: one bit each in the reader's mask.
const BATCH: usize = 64;

/// The steps of a stride schedule a reader takes next (`fill`), as indices
/// of its entries: the schedule's cycle, walked round and round, or a
/// batch worked out for this reader alone. A step at hand is then a
/// rotation's step (no batch to look into, no schedule to check but by
/// its name).
pub(crate) struct Hand {
    /// The name `fill` was given (`EMPTY`: none).
    generation: u64,
    /// The next step, and where they end (`at <= len`, or `at == len + 1`
    /// after a `fill` that found no step).
    at: u32,
    len: u32,
    /// `len` steps: the cycle of the schedule named `generation`, or in
    /// `own`. Each is an index into `entries`, below its length.
    steps: NonNull<u32>,
    /// The entries of the schedule named `generation`.
    entries: NonNull<ScheduleEntry>,
    /// Steps worked out for this reader (made on first use: readers of a
    /// schedule with a cycle never need it). From `Box::leak`, freed in
    /// `drop`: a `Box` here would be retagged each time the reader moves,
    /// invalidating `steps` taken from it (Stacked Borrows).
    own: Option<NonNull<[u32; BATCH]>>,
    /// Each step starts loading the entry `AHEAD` steps on.
    ahead: bool,
}

/// How many steps ahead a hand over a large schedule starts loading an
/// entry.
const AHEAD: u32 = 8;

// SAFETY: pointers into a `StrideSchedule` (`Send + Sync`) or into `own`
// (owned), only ever used by the one reader that holds the hand.
unsafe impl Send for Hand {}

impl Drop for Hand {
    fn drop(&mut self) {
        if let Some(own) = self.own.take() {
            // SAFETY: from `Box::leak` in `fill`, given back once, here.
            drop(unsafe { Box::from_raw(own.as_ptr()) });
        }
    }
}

impl Hand {
    /// A name no schedule is given.
    pub(crate) const EMPTY: u64 = u64::MAX;

    pub(crate) fn new() -> Hand {
        Hand {
            generation: Hand::EMPTY,
            at: 0,
            len: 0,
            steps: NonNull::dangling(),
            entries: NonNull::dangling(),
            own: None,
            ahead: false,
        }
    }

    /// The next step at hand, if the hand is from the schedule named
    /// `generation` and has one left. The entry lives in that schedule.
    #[inline(always)]
    pub(crate) fn next(&mut self, generation: u64) -> Option<NonNull<ScheduleEntry>> {
        if generation != self.generation || self.at >= self.len {
            return None;
        }
        // SAFETY: the caller still holds the schedule named `generation`
        // (see `fill`), so `steps` points to `len` indices (its cycle, or
        // `own`, which never moves once made) and `entries` to its
        // entries, each index below their number (`Strides` hands out no
        // other); `at < len`.
        let e = unsafe {
            let i = *self.steps.as_ptr().add(self.at as usize);
            self.entries.add(i as usize)
        };
        if self.ahead && self.at + AHEAD < self.len {
            // SAFETY: as above, with `at + AHEAD < len`.
            crate::prefetch::prefetch(unsafe {
                let i = *self.steps.as_ptr().add((self.at + AHEAD) as usize);
                self.entries.add(i as usize).as_ptr()
            });
        }
        self.at += 1;
        Some(e)
    }

    /// Forgets the steps (their schedule is no longer held).
    pub(crate) fn clear(&mut self) {
        self.generation = Hand::EMPTY;
        self.len = 0;
    }
}

/// A schedule's first `g` generations of steps, worked out once (see the
/// module's doc).
struct Cycle {
    /// The entries taken, in order: `g` generations of `n` steps.
    steps: Box<[u32]>,
}

/// A cycle gives its lightest entry about this many picks a pass ...
const CYCLE_AIM: u64 = 256;
/// ... and at least this many (else readers work batches out).
const CYCLE_LEAST: u64 = 100;
/// A cycle is at most this many picks (4 bytes each) ...
const CYCLE_PICKS: u64 = 1 << 16;
/// ... and this many steps of the schedule (its cost to build).
const CYCLE_STEPS: u64 = 1 << 18;

/// The schedule's arithmetic, apart from what it schedules.
///
/// Kept as `n + BATCH` lanes, a column per field, so that a batch starting
/// at any entry `i < n` reads lanes `i..i + BATCH` in a row: lane `j` is
/// entry `j mod n` seen from generation `g + j div n` when the batch
/// starts at generation `g`, the extra generations folded into its offset
/// (`w·(g + d) + o ≡ w·g + (o + w·d)` mod 65535).
struct Strides {
    /// This schedule's name (see `SCHEDULES`).
    id: u64,
    /// How many entries.
    n: u32,
    /// Per lane: the scaled weight (1..=65535).
    weight: Box<[u16]>,
    /// Per lane: `(j mod n)·32767 + weight·(j div n)`, mod 65535.
    offset: Box<[u16]>,
    /// Per lane: `j mod n`, the entry.
    entry: Box<[u32]>,
    /// An entry of the largest weight: with weight 65535 the stride test
    /// always takes it, so `work_out` finds a step taken within its first
    /// `n` steps; the fallback when no step is taken.
    heaviest: u32,
    /// Every weight is the largest (no weights yet, or all equal): the
    /// stride test would take every entry, so a pick just steps on.
    unweighted: bool,
}

impl Strides {
    /// See `StrideSchedule::new`.
    fn new(n: usize, weights: Option<&[u16]>) -> Option<Strides> {
        if n == 0 || weights.is_some_and(|w| w.len() != n) || n > u32::MAX as usize - BATCH {
            return None;
        }
        let m = u64::from(MAX_WEIGHT);
        let weight_of = |i: usize| weights.map_or(MAX_WEIGHT, |w| w[i].max(1));
        let weight: Box<[u16]> = lanes(n, |i, _| weight_of(i));
        let offset = lanes(n, |i, d| {
            ((i as u64 * 32767 + u64::from(weight_of(i)) * d) % m) as u16
        });
        let entry = lanes(n, |i, _| i as u32);
        let heaviest = (0..n).max_by_key(|i| weight_of(*i)).unwrap_or(0) as u32;
        let unweighted = weight[..n].iter().all(|w| *w == MAX_WEIGHT);
        Some(Strides {
            id: SCHEDULES.fetch_add(1, Ordering::Relaxed),
            n: n as u32,
            weight,
            offset,
            entry,
            heaviest,
            unweighted,
        })
    }

    fn weights(&self) -> impl Iterator<Item = u16> + '_ {
        self.weight[..self.n as usize].iter().copied()
    }

    /// The schedule's cycle: its steps over the first `g` generations,
    /// `g` as many as give the lightest entry `CYCLE_AIM` picks (or the
    /// whole period, 65535) where that fits the budget, fewer where not;
    /// `None` when what fits gives it fewer than `CYCLE_LEAST`.
    fn cycle(&self) -> Option<Cycle> {
        let (n, m) = (u64::from(self.n), u64::from(MAX_WEIGHT));
        if self.unweighted {
            // One generation: every entry once, in order.
            return (n <= CYCLE_PICKS).then(|| Cycle {
                steps: (0..self.n).collect(),
            });
        }
        let weights = self.weight[..self.n as usize].iter().map(|w| u64::from(*w));
        let (lightest, sum) = (weights.clone().min()?, weights.sum::<u64>());
        // Over `g` generations an entry of weight `w` is taken `w·g / m`
        // times, give or take one.
        let fits = (CYCLE_STEPS / n).min((CYCLE_PICKS.checked_sub(n)?) * m / sum);
        let g = (CYCLE_AIM * m).div_ceil(lightest).min(m).min(fits);
        // The whole period takes each entry exactly its weight's times.
        if g == 0 || (g < m && g * lightest / m < CYCLE_LEAST) {
            return None;
        }
        let total = g * n;
        let mut steps = Vec::with_capacity((g * sum / m + n) as usize);
        let mut s = 0;
        while s < total {
            // Lanes `i..i + BATCH` are steps `s..s + BATCH` (see `Strides`).
            let (i, gen) = ((s % n) as usize, (s / n) as u16);
            let mut taken = self.taken_at(i, gen)?;
            if total - s < BATCH as u64 {
                taken &= (1u64 << (total - s)) - 1;
            }
            while taken != 0 {
                let k = taken.trailing_zeros() as usize;
                taken &= taken - 1;
                steps.push(self.entry[i + k]);
            }
            s += BATCH as u64;
        }
        (!steps.is_empty()).then(|| Cycle {
            steps: steps.into_boxed_slice(),
        })
    }

    /// The steps of lanes `lane..lane + BATCH` that the stride test takes
    /// in generation `gen` (see `taken_steps`): `None` past the last lane
    /// (not for `lane < n`), without a panic.
    #[inline(always)]
    fn taken_at(&self, lane: usize, gen: u16) -> Option<u64> {
        let lanes = lane..lane.checked_add(BATCH)?;
        let w = self.weight.get(lanes.clone())?.try_into().ok()?;
        let o = self.offset.get(lanes)?.try_into().ok()?;
        Some(taken_steps(w, o, gen))
    }

    /// The index of the next entry for the reader whose scratch is `local`:
    /// the next step taken in its batch, working out the next batch first
    /// when it has none left from this schedule.
    #[inline(always)]
    fn next_index(&self, local: &mut PickLocal) -> usize {
        if self.unweighted {
            return self.step_unweighted(local.sequence());
        }
        if !self.has_batch(local) {
            self.work_out(local);
        }
        self.take(local)
    }

    /// Whether the reader's batch is this schedule's and has a step left.
    #[inline(always)]
    fn has_batch(&self, local: &mut PickLocal) -> bool {
        let batch = local.batch();
        batch.schedule == self.id && batch.taken != 0
    }

    /// `next_index`'s next steps, in order, to `f`: what is left of the
    /// reader's batch from this schedule, else a batch worked out (a
    /// `BATCH` of steps if unweighted). 1 to `BATCH` of them; the batch is
    /// left with none.
    #[inline(always)]
    fn drain(&self, local: &mut PickLocal, mut f: impl FnMut(usize)) {
        if self.unweighted {
            // `step_unweighted`, a batch of times.
            let seq = local.sequence();
            let (mut i, gen) = self.position(*seq);
            for _ in 0..BATCH {
                f(i as usize);
                i = if i + 1 == self.n { 0 } else { i + 1 };
            }
            *seq = (u64::from(gen) << 32) | u64::from(i);
            return;
        }
        if !self.has_batch(local) {
            self.work_out(local);
        }
        // `take` until none is left, with the batch in registers.
        let batch = local.batch();
        let (mut taken, from) = (batch.taken, batch.from as usize);
        batch.taken = 0;
        // `work_out` left `from < n`: lanes `from..from + BATCH` exist
        // (`get` keeps this panic-free all the same).
        let Some(lanes) = self
            .entry
            .get(from..from + BATCH)
            .and_then(|l| <&[u32; BATCH]>::try_from(l).ok())
        else {
            return;
        };
        while taken != 0 {
            let k = taken.trailing_zeros() as usize;
            taken &= taken - 1;
            // `k < BATCH`: the mask changes nothing.
            f(lanes[k % BATCH] as usize);
        }
    }

    /// The next step taken in the reader's batch, which is this
    /// schedule's and has one left (checked by the caller, or just worked
    /// out).
    #[inline(always)]
    fn take(&self, local: &mut PickLocal) -> usize {
        let batch = local.batch();
        debug_assert!(batch.schedule == self.id && batch.taken != 0);
        let k = batch.taken.trailing_zeros() as usize;
        batch.taken &= batch.taken.wrapping_sub(1);
        let lane = batch.from as usize + k;
        debug_assert!(lane < self.entry.len());
        // SAFETY: the batch is this schedule's (its id, unique per
        // schedule, was checked, or `work_out` just wrote it), whose
        // `work_out` left `from < n` and at least one step taken, so
        // `k < 64 = BATCH`: `lane` is below `n + BATCH`, the lanes there
        // are. Each lane holds an entry below `n` (`lanes`), so the index
        // returned is below `n` too.
        unsafe { *self.entry.get_unchecked(lane) as usize }
    }

    /// The next step of a schedule whose every entry is taken (a
    /// rotation): the low 32 bits of the sequence hold the entry, the high
    /// 32 the generation, kept for a weighted schedule after this one.
    #[inline(always)]
    fn step_unweighted(&self, seq: &mut u64) -> usize {
        let (i, gen) = self.position(*seq);
        let next = if i + 1 == self.n { 0 } else { i + 1 };
        *seq = (u64::from(gen) << 32) | u64::from(next);
        i as usize
    }

    /// The sequence `seq` as (entry, generation); one left by another
    /// schedule (out of range) starts anywhere.
    #[inline(always)]
    fn position(&self, seq: u64) -> (u32, u32) {
        let (i, gen) = (seq as u32, (seq >> 32) as u32);
        if i >= self.n || gen >= u32::from(MAX_WEIGHT) {
            (i % self.n, gen % u32::from(MAX_WEIGHT))
        } else {
            (i, gen)
        }
    }

    /// Works out which of the next `BATCH` steps from the reader's sequence
    /// are taken, into its batch (batch after batch until one has a step
    /// taken: the heaviest entry comes up within `n` steps), moving the
    /// sequence past them. Leaves at least one step taken.
    #[cold]
    #[inline(never)]
    fn work_out(&self, local: &mut PickLocal) {
        let m = usize::from(MAX_WEIGHT);
        let (mut i, mut gen) = self.position(*local.sequence());
        let (mut taken, mut from) = (0, 0);
        for _ in 0..=self.n as usize / BATCH {
            from = i;
            // `from < n`: lanes `from..from + BATCH` exist.
            let Some(t) = self.taken_at(from as usize, gen as u16) else {
                break;
            };
            taken = t;
            let after = from as usize + BATCH;
            i = (after % self.n as usize) as u32;
            gen = ((gen as usize + after / self.n as usize) % m) as u32;
            if taken != 0 {
                break;
            }
        }
        if taken == 0 {
            // Not reached with the heaviest weight 65535.
            (taken, from) = (1, self.heaviest);
        }
        *local.sequence() = (u64::from(gen) << 32) | u64::from(i);
        *local.batch() = Batch {
            schedule: self.id,
            taken,
            from,
        };
    }
}

/// A column of `n + BATCH` lanes: `f(entry, generations ahead)` for each,
/// with no division per entry (this runs on every weight update).
fn lanes<T>(n: usize, f: impl Fn(usize, u64) -> T) -> Box<[T]> {
    (0..n)
        .map(|i| f(i, 0))
        .chain((n..n + BATCH).map(|j| f(j % n, (j / n) as u64)))
        .collect()
}

/// The steps of a batch that the stride test takes, a bit each: step `k`
/// (weight `w[k]`, offset `o[k]`, generation `g`) iff
/// `(w·g + o) mod 65535 >= 65535 − w`.
///
/// In 16-bit lanes, without a branch, so it vectorizes (eight steps an
/// instruction with SSE2): `2^16 ≡ 1` mod 65535, so `w·g ≡ hi + lo` of the
/// 32-bit product, and adding mod 65535 is one's-complement addition (the
/// carry out comes back in at the bottom), where 65535 stands for 0 too.
#[inline(always)]
fn taken_steps(w: &[u16; BATCH], o: &[u16; BATCH], g: u16) -> u64 {
    let mut taken = [0u8; BATCH];
    for k in 0..BATCH {
        let (w, o) = (w[k], o[k]);
        let lo = w.wrapping_mul(g);
        let hi = ((u32::from(w) * u32::from(g)) >> 16) as u16;
        let r = ones_add(ones_add(lo, hi), o);
        let r = if r == u16::MAX { 0 } else { r };
        // `r + w >= 65535`, with `r <= 65534`.
        taken[k] = u8::from(r.saturating_add(w) == u16::MAX);
    }
    // Eight 0-or-1 bytes to eight bits: the multiply moves byte `k` to bit
    // `56 + k` (and nothing else there; checked for all 256 in the tests).
    let mut mask = 0u64;
    for (c, bytes) in taken.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        mask |= (u64::from_le_bytes(b).wrapping_mul(BYTES_TO_BITS) >> 56) << (8 * c);
    }
    mask
}

/// See `taken_steps`.
const BYTES_TO_BITS: u64 = 0x0102_0408_1020_4080;

/// `a + b` mod 65535 (either may be 65535, standing for 0).
#[inline(always)]
fn ones_add(a: u16, b: u16) -> u16 {
    let (s, carry) = a.overflowing_add(b);
    s.wrapping_add(u16::from(carry))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gRFC A58's scheduler as written: one step at a time.
    fn reference(weights: &[u16], seq: &mut (u32, u32)) -> usize {
        let n = weights.len() as u32;
        let m = u32::from(MAX_WEIGHT);
        loop {
            let (i, gen) = *seq;
            *seq = if i + 1 == n {
                (0, (gen + 1) % m)
            } else {
                (i + 1, gen)
            };
            if stride_takes(weights[i as usize], i, gen) {
                return i as usize;
            }
        }
    }

    /// gRFC A58's stride test: entry `i` of weight `w` is taken in
    /// generation `gen` (its offset is `i · 32767`).
    fn stride_takes(w: u16, i: u32, gen: u32) -> bool {
        let (w, m) = (u64::from(w.max(1)), u64::from(MAX_WEIGHT));
        (w * u64::from(gen) + u64::from(i) * 32767 % m) % m >= m - w
    }

    fn rng(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn the_stride_test_is_grpcs() {
        let m = u32::from(MAX_WEIGHT);
        let mut r = 3u64;
        for round in 0..if cfg!(miri) { 20 } else { 2_000 } {
            let g = match round {
                0 => 0,
                1 => m - 1,
                _ => (rng(&mut r) % u64::from(m)) as u32,
            };
            let w: [u16; BATCH] = std::array::from_fn(|k| match (round + k) % 5 {
                0 => MAX_WEIGHT,
                1 => 1,
                _ => 1 + (rng(&mut r) % u64::from(m)) as u16,
            });
            let o: [u16; BATCH] = std::array::from_fn(|k| match (round + k) % 7 {
                0 => 0,
                1 => MAX_WEIGHT - 1,
                _ => (rng(&mut r) % u64::from(m)) as u16,
            });
            let mask = taken_steps(&w, &o, g as u16);
            for k in 0..BATCH {
                let (w, o) = (u32::from(w[k]), u32::from(o[k]));
                let taken = (w * g + o) % m >= m - w;
                assert_eq!(mask >> k & 1 == 1, taken, "w {w} g {g} o {o}");
            }
        }
    }

    #[test]
    fn eight_bytes_become_eight_bits() {
        for v in 0..=255u64 {
            let bytes: u64 = (0..8).map(|k| (v >> k & 1) << (8 * k)).sum();
            assert_eq!(bytes.wrapping_mul(BYTES_TO_BITS) >> 56, v);
        }
    }

    #[test]
    fn batches_pick_exactly_what_one_step_at_a_time_picks() {
        let mut r = 7u64;
        for n in [1usize, 2, 3, 4, 5, 7, 63, 64, 65, 100, 1000] {
            for spread in [1u64, 3, 10, 100, 65535] {
                let mut weights: Vec<u16> = (0..n)
                    .map(|_| (u64::from(MAX_WEIGHT) - rng(&mut r) % spread) as u16)
                    .collect();
                // As scaled: the largest is 65535.
                weights[(rng(&mut r) % n as u64) as usize] = MAX_WEIGHT;
                let strides = Strides::new(n, Some(&weights)).unwrap();
                // From anywhere in the schedule, across generation wraps.
                let anywhere = ((rng(&mut r) % n as u64) as u32, 7);
                for start in [(0, 0), (n as u32 - 1, 65534), anywhere] {
                    let mut want = start;
                    let mut local = PickLocal::new(1);
                    *local.sequence() = (u64::from(start.1) << 32) | u64::from(start.0);
                    for step in 0..if cfg!(miri) { 150 } else { 3_000 } {
                        let expected = reference(&weights, &mut want);
                        let got = strides.next_index(&mut local);
                        assert_eq!(got, expected, "n {n}, weights {weights:?}, pick {step}");
                    }
                }
            }
        }
    }

    #[test]
    fn one_period_takes_each_entry_its_weight_times() {
        let weights = [1u16, 2, 3, 65535, 40000];
        let strides = Strides::new(weights.len(), Some(&weights)).unwrap();
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut counts = [0u64; 5];
        let mut local = PickLocal::new(9);
        for _ in 0..total {
            counts[strides.next_index(&mut local)] += 1;
        }
        assert_eq!(counts.map(|c| c as u16), weights);
    }

    #[test]
    fn a_batch_from_another_schedule_is_never_used() {
        // Same length, different weights: entries alone cannot tell the
        // two apart, only the picks' order can.
        let (wa, wb) = ([MAX_WEIGHT, 1, 2], [1, 2, MAX_WEIGHT]);
        let a = Strides::new(3, Some(&wa)).unwrap();
        let b = Strides::new(3, Some(&wb)).unwrap();
        let mut local = PickLocal::new(5);
        *local.sequence() = 0;
        // `a` works out a batch of 64 steps and hands out one pick of it,
        // leaving the rest (and the sequence 64 steps on).
        assert_eq!(a.next_index(&mut local), reference(&wa, &mut (0, 0)));
        assert_ne!(local.batch().taken, 0);
        // `b` goes on from the sequence with picks of its own.
        let mut want = (1, 21);
        assert_eq!(*local.sequence(), (21 << 32) | 1);
        for step in 0..200 {
            assert_eq!(
                b.next_index(&mut local),
                reference(&wb, &mut want),
                "pick {step}"
            );
        }
    }

    /// Steps drained a batch at a time are `next_index`'s steps, from any
    /// sequence (one left out of range by another schedule too), after
    /// any number of steps taken one at a time.
    #[test]
    fn drained_steps_are_the_next_steps() {
        let weights = [1, 2, MAX_WEIGHT, 300, MAX_WEIGHT];
        for w in [Some(&weights[..]), None] {
            let s = Strides::new(5, w).unwrap();
            for seq in [
                0,
                3,
                (4 << 32) | 2,
                (65_534 << 32) | 4,
                70_000 << 32,
                9,
                u64::MAX,
            ] {
                for singles in [0, 1, 7] {
                    let (mut drained, mut general) = (PickLocal::new(5), PickLocal::new(5));
                    *drained.sequence() = seq;
                    *general.sequence() = seq;
                    let mut got = Vec::new();
                    for _ in 0..singles {
                        got.push(s.next_index(&mut drained));
                    }
                    while got.len() < 300 {
                        let before = got.len();
                        s.drain(&mut drained, |i| got.push(i));
                        assert!((1..=BATCH).contains(&(got.len() - before)));
                    }
                    let want: Vec<usize> =
                        (0..got.len()).map(|_| s.next_index(&mut general)).collect();
                    assert_eq!(got, want, "{w:?} from {seq:#x}, {singles} singles");
                }
            }
        }
    }

    /// The steps of gRFC A58's scheduler in generation `gen`, onto `steps`.
    fn steps_in(weights: &[u16], gen: u32, steps: &mut Vec<u32>) {
        for (i, w) in (0u32..).zip(weights) {
            if stride_takes(*w, i, gen) {
                steps.push(i);
            }
        }
    }

    /// The steps of gRFC A58's scheduler over generations `0..g`.
    fn steps_over(weights: &[u16], g: u32) -> Vec<u32> {
        let mut steps = Vec::new();
        for gen in 0..g {
            steps_in(weights, gen, &mut steps);
        }
        steps
    }

    /// A cycle's picks are the scheduler's over its first generations, and
    /// a pass gives each entry its weight's share to within one pick.
    #[test]
    fn a_cycle_is_the_schedules_first_whole_generations() {
        let mut r = 11u64;
        let m = u64::from(MAX_WEIGHT);
        let (sizes, spreads): (&[usize], &[u64]) = if cfg!(miri) {
            (&[3, 65], &[2])
        } else {
            (&[2, 3, 5, 10, 63, 64, 65, 100], &[1, 2, 10, 30])
        };
        for &n in sizes {
            for &spread in spreads {
                let mut weights: Vec<u16> = (0..n)
                    .map(|_| (m - rng(&mut r) % (m - m / spread).max(1)) as u16)
                    .collect();
                weights[(rng(&mut r) % n as u64) as usize] = MAX_WEIGHT;
                let strides = Strides::new(n, Some(&weights)).unwrap();
                let Some(cycle) = strides.cycle() else {
                    // Only when the budget leaves the lightest too few.
                    let lightest = u64::from(*weights.iter().min().unwrap());
                    let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
                    let g = (CYCLE_STEPS / n as u64).min((CYCLE_PICKS - n as u64) * m / sum);
                    assert!(g * lightest / m < CYCLE_LEAST, "n {n} {weights:?}");
                    continue;
                };
                // Every generation takes the heaviest: the number of
                // generations is the one whose steps are as many.
                let mut g = 0;
                let mut want = Vec::new();
                while want.len() < cycle.steps.len() {
                    steps_in(&weights, g, &mut want);
                    g += 1;
                }
                assert_eq!(&cycle.steps[..], &want[..], "n {n} {weights:?}");
                let g = u64::from(g);
                for (i, w) in weights.iter().enumerate() {
                    let picks = cycle.steps.iter().filter(|s| **s as usize == i).count() as f64;
                    let share = (u64::from(*w) * g) as f64 / m as f64;
                    assert!(
                        (picks - share).abs() <= 1.0,
                        "entry {i}: {picks} vs {share}"
                    );
                    if !strides.unweighted {
                        assert!(picks >= CYCLE_LEAST as f64 - 1.0, "entry {i}: {picks}");
                    }
                }
            }
        }
    }

    #[test]
    fn which_schedules_have_a_cycle() {
        // Unweighted: one generation, every entry once.
        let even = Strides::new(5, None).unwrap().cycle().unwrap();
        assert_eq!(&even.steps[..], &[0, 1, 2, 3, 4]);
        // Weights that fit their whole period take each entry exactly its
        // weight's times (with no heaviest of 65535 every generation).
        let whole = Strides::new(3, Some(&[1, 2, 3])).unwrap().cycle().unwrap();
        assert_eq!(whole.steps.len(), 6);
        assert_eq!(&whole.steps[..], &steps_over(&[1, 2, 3], 65535)[..]);
        // Too many endpoints for the lightest to get enough picks in a
        // cycle that fits: readers work batches out.
        let n = CYCLE_STEPS as usize / 50;
        let weights: Vec<u16> = (0..n)
            .map(|i| if i == 0 { MAX_WEIGHT } else { 30_000 })
            .collect();
        assert!(Strides::new(n, Some(&weights)).unwrap().cycle().is_none());
        // A weight the budget cannot give enough picks.
        assert!(Strides::new(3, Some(&[MAX_WEIGHT, 50, 60_000]))
            .unwrap()
            .cycle()
            .is_none());
        if !cfg!(miri) {
            let many = CYCLE_PICKS as usize + 1;
            assert!(Strides::new(many, None).unwrap().cycle().is_none());
        }
    }

    struct NoHook;
    impl DoneHook for NoHook {
        fn done(&self, _: &SubConn, _: &crate::balancer::done::DoneInfo<'_>) {}
    }

    fn schedule(weights: Option<&[u16]>, n: usize) -> StrideSchedule {
        let entries: ScheduleEntries = (0..n)
            .map(|i| {
                let sc = Arc::new(SubConn::new(
                    crate::balancer::subconn::SubConnId(i as u64),
                    crate::Address::new(format!("127.0.0.1:{}", 1000 + i)),
                ));
                ScheduleEntry::new(sc, Arc::new(NoHook))
            })
            .collect();
        StrideSchedule::new(entries, weights).unwrap()
    }

    /// What a reader does: `Hand::next`, else `fill`.
    fn hand_pick(s: &StrideSchedule, local: &mut PickLocal, hand: &mut Hand, gen: u64) -> usize {
        let e = match hand.next(gen) {
            // SAFETY: `s`, named `gen`, is alive.
            Some(e) => unsafe { e.as_ref() },
            None => s.fill(local, hand, gen),
        };
        e.subconn().id().0 as usize
    }

    /// A reader walks the cycle from a random step, round and round; a
    /// reader of a schedule without one takes the scheduler's steps.
    #[test]
    fn readers_walk_the_cycle_round_and_round_from_anywhere() {
        let weights = [MAX_WEIGHT, 30_000, 2_000];
        let s = schedule(Some(&weights), 3);
        let cycle: Vec<usize> = s
            .cycle
            .as_ref()
            .unwrap()
            .steps
            .iter()
            .map(|i| *i as usize)
            .collect();
        let mut starts = std::collections::HashSet::new();
        for seed in 0..if cfg!(miri) { 3 } else { 20 } {
            let (mut local, mut hand) = (PickLocal::new(seed), Hand::new());
            let first = hand_pick(&s, &mut local, &mut hand, 7);
            let start = hand.at as usize - 1;
            starts.insert(start);
            assert_eq!(first, cycle[start]);
            for k in 1..if cfg!(miri) { 50 } else { 3 * cycle.len() } {
                let got = hand_pick(&s, &mut local, &mut hand, 7);
                assert_eq!(
                    got,
                    cycle[(start + k) % cycle.len()],
                    "seed {seed}, pick {k}"
                );
            }
            // The same hand under another name: a new start, anywhere.
            hand_pick(&s, &mut local, &mut hand, 8);
            assert_eq!(hand.generation, 8);
        }
        assert!(starts.len() > 1, "every reader starts at {starts:?}");

        // No cycle (a weight too light for the budget): steps worked out
        // in batches, the scheduler's own; the same when the hand loads
        // entries ahead (as over a schedule larger than the cache).
        let weights = [MAX_WEIGHT, 50, 60_000, 30_000];
        let mut s = schedule(Some(&weights), 4);
        assert!(s.cycle.is_none());
        assert!(!s.ahead, "four entries fit any cache");
        for ahead in [false, true] {
            s.ahead = ahead;
            let (mut local, mut hand) = (PickLocal::new(3), Hand::new());
            *local.sequence() = 0;
            let mut want = (0, 0);
            for k in 0..if cfg!(miri) { 100 } else { 5_000 } {
                let got = hand_pick(&s, &mut local, &mut hand, 1);
                assert_eq!(got, reference(&weights, &mut want), "pick {k}");
            }
            assert_eq!(hand.ahead, ahead);
        }
    }

    #[test]
    fn a_sequence_left_by_another_schedule_still_picks_in_range() {
        let strides = Strides::new(3, Some(&[1, 2, MAX_WEIGHT])).unwrap();
        for seq in [u64::MAX, 5, 70_000 << 32, (70_000 << 32) | 9] {
            let mut local = PickLocal::new(5);
            *local.sequence() = seq;
            assert!(strides.next_index(&mut local) < 3);
            let seq = *local.sequence();
            assert!((seq as u32) < 3 && ((seq >> 32) as u32) < u32::from(MAX_WEIGHT));
        }
        let even = Strides::new(3, None).unwrap();
        let mut local = PickLocal::new(5);
        *local.sequence() = 1;
        assert_eq!([0; 4].map(|_| even.next_index(&mut local)), [1, 2, 0, 1]);
    }
}
