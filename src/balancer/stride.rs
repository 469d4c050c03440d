//! The static stride scheduler (gRFC A58's, as gRPC C++ and gRPC-Go
//! implement it) as a part any weighted policy can publish, and that
//! readers run inline, as they walk a [`Rotation`](crate::Rotation): no
//! call through the picker, no result written and read back.
//!
//! Weights are scaled so the largest is 65535. Pick number `s` looks at
//! entry `i = s mod n` of generation `g = s div n` and takes it iff
//! `(w_i·g + i·32767) mod 65535 >= 65535 − w_i`, else moves on to `s + 1`:
//! over 65535 generations entry `i` is taken exactly `w_i` times, spread
//! out by the per-entry offset. No heap, no lock; the sequence `s` is kept
//! in each reader (`PickLocal::sequence`), not in the schedule, so picking
//! writes nothing shared.

use crate::balancer::done::DoneHook;
use crate::balancer::rotation::RotationEntry;
use crate::balancer::subconn::SubConn;
use std::ptr::NonNull;
use std::sync::Arc;

/// The largest scaled weight (and every entry's in an unweighted schedule).
pub const MAX_WEIGHT: u16 = u16::MAX;

/// One entry's scheduling constants: its scaled weight and the threshold
/// and offset the stride test needs, precomputed.
#[derive(Clone, Copy, Debug)]
struct Stride {
    /// Scaled weight (1..=65535).
    weight: u32,
    /// `65535 − weight`: taken iff `(weight·g + offset) mod 65535 >= skip_below`.
    skip_below: u32,
    /// `i·32767 mod 65535`.
    offset: u32,
}

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
    strides: Box<[Stride]>,
    entries: ScheduleEntries,
    /// An entry of the largest weight: the stride test always takes it, so
    /// a pick ends within `n` steps.
    heaviest: usize,
    /// Every weight is the largest (no weights yet, or all equal): the
    /// stride test would take every entry, so a pick just steps on.
    unweighted: bool,
}

impl StrideSchedule {
    /// A schedule over `entries` with scaled `weights` (`None`: all equal,
    /// a plain rotation). `None` when there is no entry, the lengths differ
    /// or there are more than `u32::MAX` entries.
    pub fn new(entries: ScheduleEntries, weights: Option<&[u16]>) -> Option<StrideSchedule> {
        let n = entries.len();
        if n == 0 || weights.is_some_and(|w| w.len() != n) || n > u32::MAX as usize {
            return None;
        }
        let m = u64::from(MAX_WEIGHT);
        let strides: Box<[Stride]> = (0..n)
            .map(|i| {
                let w = u32::from(weights.map_or(MAX_WEIGHT, |w| w[i].max(1)));
                Stride {
                    weight: w,
                    skip_below: u32::from(MAX_WEIGHT) - w,
                    offset: ((i as u64 * 32767) % m) as u32,
                }
            })
            .collect();
        let heaviest = (0..n).max_by_key(|i| strides[*i].weight).unwrap_or(0);
        let unweighted = strides.iter().all(|s| s.skip_below == 0);
        Some(StrideSchedule {
            strides,
            entries,
            heaviest,
            unweighted,
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
        self.strides.iter().map(|s| s.weight as u16)
    }

    /// The entry to pick for a reader whose sequence is `seq` (which it
    /// moves on).
    #[inline(always)]
    pub fn next(&self, seq: &mut u64) -> &ScheduleEntry {
        let i = self.next_index(seq);
        // `next_index` stays below `n`, and `heaviest < n`: the fallback is
        // never taken, and keeps the pick path panic-free.
        match self.entries.get(i) {
            Some(e) => e,
            None => &self.entries[self.heaviest.min(self.entries.len() - 1)],
        }
    }

    /// The index of the next entry for a reader whose sequence is `seq`:
    /// the low 32 bits hold the entry index, the high 32 the generation
    /// (mod 65535), so a step needs no division.
    #[inline(always)]
    fn next_index(&self, seq: &mut u64) -> usize {
        let n = self.strides.len() as u32;
        let mut i = *seq as u32;
        let mut gen = (*seq >> 32) as u32;
        if i >= n || gen >= u32::from(MAX_WEIGHT) {
            // Left by another schedule: start anywhere.
            i %= n;
            gen %= u32::from(MAX_WEIGHT);
        }
        if self.unweighted {
            // The test below would take `i`: the same pick, without it.
            let next = if i + 1 == n { 0 } else { i + 1 };
            *seq = (u64::from(gen) << 32) | u64::from(next);
            return i as usize;
        }
        // Bounded: the heaviest entry is taken whenever it comes up.
        for _ in 0..n {
            // `i < n` throughout; `get` keeps the pick path panic-free.
            let Some(s) = self.strides.get(i as usize) else {
                break;
            };
            let taken = (s.weight * gen + s.offset) % u32::from(MAX_WEIGHT) >= s.skip_below;
            let chosen = i;
            i += 1;
            if i == n {
                i = 0;
                gen += 1;
                if gen == u32::from(MAX_WEIGHT) {
                    gen = 0;
                }
            }
            if taken {
                *seq = (u64::from(gen) << 32) | u64::from(i);
                return chosen as usize;
            }
        }
        *seq = (u64::from(gen) << 32) | u64::from(i);
        self.heaviest
    }
}
