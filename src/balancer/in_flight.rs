//! Requests in flight per endpoint (least_request's counts), counted with
//! no locked instruction for the picks a reader keeps or lends.
//!
//! An endpoint's count is one cache line of [`SLOTS`] counters, and the
//! count is their sum. Slot 0 is shared: a pick that leaves its reader (a
//! `Pick`, a C token pick) may end on any thread, so it adds and takes its
//! one there with atomic read-modify-writes. Every other slot has a single
//! writer, the reader that claimed it from its channel's [`ReaderSlots`]:
//! that reader's kept and borrowed picks end through the reader itself, so
//! they count with a plain load and store. (A locked RMW costs about as
//! much as the rest of a pick; a least_request pick + done paid two.)
//! A slot passes from a dropped reader to the next one through the claim's
//! release / acquire, so its count carries on exactly (one left behind by
//! a leaked pick stays counted, as a leaked shared one does).
//! `loom-tests/tests/in_flight.rs` checks both.

use crate::sync::{AtomicUsize, Ordering};

/// Counters per endpoint: one shared, seven for readers (8 words, one
/// cache line).
pub const SLOTS: usize = 8;

/// One endpoint's requests in flight, on a cache line of its own: two
/// threads picking different endpoints never write the same line. 64 bytes,
/// not crossbeam's 128 (which also keeps the adjacent-line prefetcher's
/// pair apart): with 100,000 endpoints a pick reads two counts at random,
/// and the counters' footprint (6.4 MB) decides whether those reads hit
/// the cache.
#[repr(align(64))]
pub struct InFlight([AtomicUsize; SLOTS]);

impl Default for InFlight {
    fn default() -> InFlight {
        InFlight(std::array::from_fn(|_| AtomicUsize::new(0)))
    }
}

impl InFlight {
    /// Requests in flight: every slot's count. Relaxed, as gRPC-Go's
    /// counters are read: a pick racing another may see either count.
    #[inline(always)]
    pub fn total(&self) -> usize {
        // No slot goes below zero (each takes off only what it added), so
        // the sum is exact; wrapping only keeps the pick path panic-free.
        self.0
            .iter()
            .fold(0, |sum, c| sum.wrapping_add(c.load(Ordering::Relaxed)))
    }

    /// One more in flight, counted in `slot`.
    #[inline(always)]
    pub fn add(&self, slot: Slot) {
        self.shift(slot, 1);
    }

    /// One fewer in flight, taken off `slot` (where it was added).
    #[inline(always)]
    pub fn sub(&self, slot: Slot) {
        // Adding -1, wrapping (as atomic adds do).
        self.shift(slot, 1usize.wrapping_neg());
    }

    #[inline(always)]
    fn shift(&self, slot: Slot, by: usize) {
        let c = &self.0[slot.index()];
        if slot == Slot::SHARED {
            c.fetch_add(by, Ordering::Relaxed);
        } else {
            // The slot's only writer (see `Slot`).
            c.store(
                c.load(Ordering::Relaxed).wrapping_add(by),
                Ordering::Relaxed,
            );
        }
    }
}

/// Which of an endpoint's counters a pick counts in: [`Slot::SHARED`], or a
/// reader's own, claimed from [`ReaderSlots`] and written only by that
/// reader (a pick counted there must end through it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u8);

impl Slot {
    /// Slot 0, for picks that may end on any thread.
    pub const SHARED: Slot = Slot(0);

    #[inline(always)]
    fn index(self) -> usize {
        // Always below `SLOTS`: no bounds check on the pick path.
        usize::from(self.0) & (SLOTS - 1)
    }
}

/// A channel's reader slots (1 to `SLOTS - 1`), each claimed by one reader
/// at a time.
#[derive(Default)]
pub struct ReaderSlots(AtomicUsize);

impl ReaderSlots {
    /// Claims a free slot, or gives `Slot::SHARED` when all are taken.
    /// Acquire: the slot's counts as its last reader left them.
    pub fn claim(&self) -> Slot {
        let mut taken = self.0.load(Ordering::Relaxed);
        loop {
            // Bit i stands for slot i + 1.
            let free = !taken & ((1 << (SLOTS - 1)) - 1);
            if free == 0 {
                return Slot::SHARED;
            }
            let bit = free & free.wrapping_neg();
            match self.0.compare_exchange_weak(
                taken,
                taken | bit,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Slot(bit.trailing_zeros() as u8 + 1),
                Err(now) => taken = now,
            }
        }
    }

    /// Gives `slot` back (`Slot::SHARED`: nothing to give). Release: its
    /// counts as this reader leaves them, for the next claim. The caller
    /// counts nothing more in it.
    pub fn release(&self, slot: Slot) {
        if slot != Slot::SHARED {
            self.0.fetch_and(!(1 << (slot.0 - 1)), Ordering::Release);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn seven_reader_slots_then_the_shared_one() {
        let slots = ReaderSlots::default();
        let claimed: Vec<Slot> = (0..SLOTS - 1).map(|_| slots.claim()).collect();
        let mut indexes: Vec<u8> = claimed.iter().map(|s| s.0).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(slots.claim(), Slot::SHARED, "all taken");
        slots.release(claimed[3]);
        assert_eq!(
            slots.claim(),
            claimed[3],
            "a released slot is claimed again"
        );
        slots.release(Slot::SHARED);
        assert_eq!(slots.claim(), Slot::SHARED);
    }

    #[test]
    fn the_count_is_every_slots_sum() {
        let c = InFlight::default();
        let (a, b) = (Slot(1), Slot(7));
        c.add(Slot::SHARED);
        c.add(a);
        c.add(a);
        c.add(b);
        assert_eq!(c.total(), 4);
        c.sub(a);
        c.sub(Slot::SHARED);
        assert_eq!(c.total(), 2);
        c.sub(a);
        c.sub(b);
        assert_eq!(c.total(), 0);
    }
}
