//! Per-reader pick scratch: a rotation cursor and a random source that live
//! in the reader, so that picking never writes shared state.

/// Per-reader scratch a picker may use instead of shared mutable state: a
/// round-robin cursor (starting at a random offset), a scheduler sequence
/// (weighted_round_robin's stride counter) with the picks a stride schedule
/// worked out ahead, and a random generator. Living in the reader, it keeps
/// the pick path free of shared writes.
#[derive(Clone, Debug)]
pub struct PickLocal {
    cursor: usize,
    sequence: u64,
    rng: u64,
    batch: Batch,
}

/// The steps of a stride schedule a reader worked out ahead
/// (`balancer::stride`), handed out in order. Written only by
/// `Strides::work_out`, whose picks index lanes by it unchecked: a batch
/// names its schedule, and its `from` and `taken` are in that schedule's
/// range.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Batch {
    /// The schedule that worked them out (0: none).
    pub(crate) schedule: u64,
    /// Bit `k`: step `k` is taken and not handed out yet.
    pub(crate) taken: u64,
    /// The schedule's lane of step 0.
    pub(crate) from: u32,
}

impl PickLocal {
    /// Scratch seeded with `seed` (the cursor starts at a seed-derived offset).
    pub fn new(seed: u64) -> PickLocal {
        let mut local = PickLocal {
            cursor: 0,
            sequence: 0,
            rng: seed,
            batch: Batch::default(),
        };
        local.cursor = (local.random() >> 1) as usize;
        local.sequence = local.random();
        local
    }

    /// The next index of a rotation over `len` entries (`len > 0`; 0 for an
    /// empty one rather than a panic, so the pick path has no panic at all).
    #[inline]
    pub fn next_index(&mut self, len: usize) -> usize {
        let mut i = self.cursor;
        if i >= len {
            i = i.checked_rem(len).unwrap_or(0);
        }
        self.cursor = if i + 1 == len { 0 } else { i + 1 };
        i
    }

    /// A sequence counter a scheduler keeps here rather than in its shared
    /// picker (where every pick would write one cache line from every
    /// thread). It starts at a seed-derived value; what it means is the
    /// scheduler's, which must accept any value (another picker may have
    /// used it last).
    #[inline(always)]
    pub fn sequence(&mut self) -> &mut u64 {
        &mut self.sequence
    }

    /// The steps a stride schedule worked out ahead (see `sequence`).
    #[inline(always)]
    pub(crate) fn batch(&mut self) -> &mut Batch {
        &mut self.batch
    }

    /// wyrand: a Weyl sequence mixed by one wide multiply. Good enough for
    /// load balancing, and fast where it matters: from one pick to the next
    /// the state depends on itself through a single add, so back-to-back
    /// picks overlap (xorshift64*'s six dependent shifts and xors made the
    /// state the critical path of a random pick).
    #[inline]
    pub fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(WEYL);
        wymix(self.rng)
    }

    /// What `random()` returns `k` calls from now (`k >= 1`), if nothing
    /// else draws in between: wyrand's state is a Weyl sequence, so its
    /// value any number of steps on is known now. Moves nothing.
    #[inline(always)]
    pub(crate) fn peek(&self, k: u64) -> u64 {
        wymix(self.rng.wrapping_add(k.wrapping_mul(WEYL)))
    }

    /// A uniform index below `n` (`n > 0`), without a division.
    #[inline]
    pub fn random_below(&mut self, n: usize) -> usize {
        below(self.random() >> 32, n)
    }
}

/// wyrand's step: its state moves by this much per draw.
const WEYL: u64 = 0xa076_1d64_78bd_642f;

/// wyrand's output for state `s`.
#[inline(always)]
fn wymix(s: u64) -> u64 {
    let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
    ((t >> 64) as u64) ^ (t as u64)
}

/// A uniform index below `n` from the low 32 bits of `bits` (multiply-shift,
/// no division): how every draw from a table turns random bits into an index.
#[inline(always)]
pub(crate) fn below(bits: u64, n: usize) -> usize {
    (((bits & 0xffff_ffff) * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_visits_each_index_once_per_cycle() {
        let mut l = PickLocal::new(42);
        let mut seen = [0u32; 7];
        for _ in 0..70 {
            seen[l.next_index(7)] += 1;
        }
        assert_eq!(seen, [10; 7]);
        // Shrinking the table keeps indices in range.
        for _ in 0..10 {
            assert!(l.next_index(2) < 2);
        }
    }

    #[test]
    fn peek_sees_the_draws_to_come() {
        let mut l = PickLocal::new(99);
        let ahead: Vec<u64> = (1..=8).map(|k| l.peek(k)).collect();
        let drawn: Vec<u64> = (0..8).map(|_| l.random()).collect();
        assert_eq!(ahead, drawn);
        // Peeking moves nothing.
        assert_eq!(l.peek(1), l.clone().random());
    }

    #[test]
    fn random_below_covers_range() {
        let mut l = PickLocal::new(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            seen[l.random_below(5)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
