//! Requests in flight per endpoint, and the table of READY endpoints a
//! pick draws a few of at random to take the least loaded (gRFC A48's
//! `least_request`), as a part readers run inline
//! ([`InlineKind::LeastLoaded`](crate::balancer::picker::InlineKind)): the
//! draws, the comparison and the winner's increment happen in the reader,
//! and a kept pick's done takes the one back off directly, with no call
//! through the picker or a done hook.

use crate::balancer::done::{DoneHook, DoneInfo};
pub(crate) use crate::balancer::in_flight::{InFlight, Slot};
use crate::balancer::pick_local::{below, PickLocal};
use crate::balancer::ready_list::ReadyChunks;
use crate::balancer::rotation::RotationEntry;
use crate::balancer::subconn::SubConn;
use std::ptr::NonNull;

/// A READY endpoint in a least-loaded table: what a pick hands out (id,
/// address, tag) and its counter, plain pointers into what the table's
/// picker keeps alive. It is also the done hook its token picks carry
/// (taking one off its counter).
#[derive(Clone, Copy)]
pub(crate) struct LoadedEntry {
    listed: RotationEntry,
    in_flight: NonNull<InFlight>,
}

// SAFETY: a `RotationEntry` (Send + Sync) and a pointer to an atomic
// counter, both kept alive by every picker whose chunks hold the entry.
unsafe impl Send for LoadedEntry {}
// SAFETY: as above; the counters are only touched atomically.
unsafe impl Sync for LoadedEntry {}

impl LoadedEntry {
    /// # Safety
    /// Every picker whose table holds the entry keeps `sc` and `in_flight`
    /// alive for as long as it lives.
    pub(crate) unsafe fn new(sc: &SubConn, in_flight: &InFlight) -> LoadedEntry {
        LoadedEntry {
            // SAFETY: forwarded contract.
            listed: unsafe { RotationEntry::of(sc) },
            in_flight: NonNull::from(in_flight),
        }
    }

    /// What a pick of this entry hands out.
    #[inline(always)]
    pub(crate) fn listed(&self) -> &RotationEntry {
        &self.listed
    }

    /// The subchannel.
    #[inline(always)]
    pub(crate) fn subconn(&self) -> &SubConn {
        // SAFETY: per `new`'s contract, alive while the entry is reachable.
        unsafe { self.listed.ptr().as_ref() }
    }

    /// The endpoint's counters.
    #[inline(always)]
    pub(crate) fn in_flight(&self) -> &InFlight {
        // SAFETY: per `new`'s contract, alive while the entry is reachable.
        unsafe { self.in_flight.as_ref() }
    }
}

impl DoneHook for LoadedEntry {
    #[inline]
    fn done(&self, _: &SubConn, _: &DoneInfo<'_>) {
        // Once per pick that added one (every hook is told once); a pick
        // that leaves its reader counts in the shared slot.
        self.in_flight().sub(Slot::SHARED);
    }
}

/// READY endpoints a pick draws `choice_count` of, uniformly at random with
/// replacement, taking the one with the fewest requests in flight (a tie
/// keeps the earlier draw, as A48 says) and adding one to its count, in
/// the pick's counter slot (see `in_flight`).
pub struct LeastLoadedTable {
    /// Never empty; chunks shared with the policy's other pickers.
    entries: ReadyChunks<LoadedEntry>,
    /// 2..=10 (A48's bounds, checked by the policy's config).
    choice_count: u32,
}

impl LeastLoadedTable {
    /// A table over `entries` (`None` when empty). The picker that holds it
    /// keeps what the entries point to alive (`LoadedEntry::new`).
    pub(crate) fn new(
        entries: ReadyChunks<LoadedEntry>,
        choice_count: u32,
    ) -> Option<LeastLoadedTable> {
        (entries.len() > 0).then_some(LeastLoadedTable {
            entries,
            choice_count: choice_count.max(1),
        })
    }

    /// How many entries (at least one).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Entry `i` (< len); the fallback keeps the pick path panic-free.
    #[inline(always)]
    fn at(&self, i: usize) -> &LoadedEntry {
        match self.entries.get(i) {
            Some(e) => e,
            None => self.first(),
        }
    }

    #[cold]
    fn first(&self) -> &LoadedEntry {
        self.entries.get(0).expect("never empty")
    }

    /// `pick` for the default two choices over one chunk (up to 256
    /// endpoints), `None` (nothing drawn) for any other table.
    #[inline(always)]
    pub(crate) fn pick_two_at_hand(
        &self,
        local: &mut PickLocal,
        slot: Slot,
    ) -> Option<&LoadedEntry> {
        if self.choice_count != 2 {
            return None;
        }
        Some(Self::pick_two(self.entries.flat()?, local, slot))
    }

    /// `pick` for two choices over one chunk: the same two draws from one
    /// random word and the same choice, with no loop and no chunk lookup.
    #[inline(always)]
    fn pick_two<'t>(flat: &'t [LoadedEntry], local: &mut PickLocal, slot: Slot) -> &'t LoadedEntry {
        let (bits, n) = (local.random(), flat.len());
        let (i, j) = (below(bits >> 32, n), below(bits, n));
        debug_assert!(i < n && j < n);
        // SAFETY: `below(_, n)` is below `n` (multiply-shift of 32 bits).
        let (first, second) = unsafe { (flat.get_unchecked(i), flat.get_unchecked(j)) };
        // Strictly fewer: a tie keeps the earlier draw (A48).
        let best = if second.in_flight().total() < first.in_flight().total() {
            second
        } else {
            first
        };
        best.in_flight().add(slot);
        best
    }

    /// Calls `f` with each entry the pick `k` picks from now (`k >= 1`)
    /// will draw, if nothing else draws from `local` in between: for
    /// prefetching them. (A pick's draws take the halves of
    /// `ceil(choice_count / 2)` random words, high half first.)
    #[inline(always)]
    pub(crate) fn upcoming(&self, local: &PickLocal, k: u64, mut f: impl FnMut(&LoadedEntry)) {
        let n = self.entries.len();
        let first = (k - 1) * u64::from(self.choice_count.div_ceil(2)) + 1;
        for c in 0..self.choice_count {
            let bits = local.peek(first + u64::from(c / 2));
            f(self.at(below(if c % 2 == 0 { bits >> 32 } else { bits }, n)));
        }
    }

    /// The least loaded of `choice_count` random draws, its count already
    /// up by one in `slot`: the caller owes it one off that slot when the
    /// RPC ends (or the pick is dropped).
    #[inline(always)]
    pub(crate) fn pick(&self, local: &mut PickLocal, slot: Slot) -> &LoadedEntry {
        if let Some(e) = self.pick_two_at_hand(local, slot) {
            return e;
        }
        self.pick_drawn(local, slot)
    }

    /// `pick` for any table: `choice_count` draws, walked one by one.
    #[inline(always)]
    fn pick_drawn(&self, local: &mut PickLocal, slot: Slot) -> &LoadedEntry {
        let n = self.entries.len();
        // Two draws per random word.
        let mut bits = local.random();
        let mut best = self.at(below(bits >> 32, n));
        let mut fewest = best.in_flight().total();
        for k in 1..self.choice_count {
            let half = if k % 2 == 1 {
                bits
            } else {
                bits = local.random();
                bits >> 32
            };
            let e = self.at(below(half, n));
            let count = e.in_flight().total();
            // Strictly fewer: a tie keeps the earlier draw (A48).
            if count < fewest {
                (best, fewest) = (e, count);
            }
        }
        best.in_flight().add(slot);
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::ready_list::{ReadyList, CHUNK};
    use crate::balancer::subconn::SubConnId;
    use crate::Address;
    use std::sync::Arc;

    /// The two-choice shortcut draws and chooses exactly as the general
    /// walk does: the same entries from the same random words, ties to the
    /// first draw, over tables of one endpoint up to a whole chunk.
    #[test]
    fn two_choices_over_one_chunk_pick_as_the_general_walk() {
        for n in [1, 2, 3, 100, CHUNK] {
            let subconns: Vec<Arc<SubConn>> = (0..n)
                .map(|i| {
                    let addr = Address::new(format!("127.0.0.1:{}", 1000 + i));
                    Arc::new(SubConn::new(SubConnId(i as u64 + 1), addr))
                })
                .collect();
            // Two tables over the same endpoints, each with its own
            // counters, one picked through `pick`, one through the walk.
            let counters: [Vec<InFlight>; 2] =
                [0, 1].map(|_| (0..n).map(|_| InFlight::default()).collect());
            let tables = counters.each_ref().map(|c| {
                let mut list = ReadyList::default();
                for (sc, counter) in subconns.iter().zip(c) {
                    // SAFETY: `subconns` and the counters outlive the tables.
                    list.push(unsafe { LoadedEntry::new(sc, counter) });
                }
                LeastLoadedTable::new(list.freeze(), 2).unwrap()
            });
            // The shortcut's case (its picks below are the fast path's).
            assert!(tables[0].choice_count == 2 && tables[0].entries.flat().is_some());
            let (mut fast, mut walk) = (PickLocal::new(7), PickLocal::new(7));
            for k in 0..5_000 {
                let a = tables[0].pick(&mut fast, Slot::SHARED).listed().id();
                let b = tables[1].pick_drawn(&mut walk, Slot::SHARED).listed().id();
                assert_eq!(a, b, "n={n}, pick {k}");
                // Some picks end, so counts differ and ties happen too.
                if k % 3 == 0 {
                    for c in &counters {
                        let i = (a.0 - 1) as usize;
                        c[i].sub(Slot::SHARED);
                    }
                }
            }
        }
    }
}
