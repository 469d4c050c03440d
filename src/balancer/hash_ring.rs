//! A consistent-hashing ring (gRFC A42, the toolkit part of ring_hash):
//! each endpoint placed on a 64-bit circle at XXH64 (seed 0) of
//! `"<hash key>_<n>"`, n = 0, 1, ... per endpoint, as many entries as its
//! share of the weight asks for; a request goes to the first entry at or
//! after its hash, wrapping around. A [`RingTable`] adds one picker's view
//! of the members (which are READY, which are failing) for readers to pick
//! from inline.
//!
//! Lookup is O(1) expected: a bucket table indexed by the hash's top bits
//! gives the range of entries to look at (about one, since entry hashes are
//! uniform), so a pick reads one bucket pair and one or two entries instead
//! of walking a binary search through the whole array.

use crate::balancer::rotation::RotationEntry;
use std::sync::Arc;
use xxhash_rust::xxh64::xxh64;

/// gRFC A42's hard limit on either ring size (2^23).
pub const RING_SIZE_LIMIT: u64 = 8_388_608;

/// One endpoint as the ring sees it: where (its hash key) and how much.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) hash_key: String,
    /// Never 0 (unset weights count as 1).
    pub(crate) weight: u64,
}

/// One point on the ring. The owner sits beside the hash so that the pick
/// that found the hash reads it from the same cache line.
#[derive(Clone, Copy, Debug)]
struct Entry {
    hash: u64,
    /// The member (index into `Ring::members`) the entry belongs to.
    owner: u32,
}

/// An immutable ring, shared by every picker until the endpoints, their
/// weights or hash keys, or the ring sizes change.
#[derive(Debug)]
pub(crate) struct Ring {
    /// The entries, by ascending hash, then `SENTINELS` entries of hash
    /// `u64::MAX` (not counted in `len`).
    entries: Box<[Entry]>,
    /// How many entries, sentinels aside.
    len: usize,
    /// The placements (by index in the input) that got at least one entry,
    /// in input order.
    members: Box<[u32]>,
    /// `buckets[b]..buckets[b + 1]`: the entries whose hash's top bits are `b`.
    buckets: Box<[u32]>,
    /// 64 minus the bits of a bucket index (≤ 63).
    shift: u32,
}

impl Ring {
    /// Places `endpoints` (non-empty, weights ≥ 1, in the order that breaks
    /// ties) on a ring of between `min_size` and `max_size` entries (1 ≤
    /// min ≤ max ≤ `RING_SIZE_LIMIT`).
    ///
    /// gRPC's sizing, in gRPC's own float64 arithmetic (gRPC-Go's
    /// `newRing`, C-core's `Ring::Ring`), so that the ring, and with it
    /// where each key lands, is the one a gRPC client builds: with nw the
    /// normalized weights (w / W) and m the smallest (at most 1.0), scale =
    /// min(ceil(m × min_size) / m, max_size); endpoint k gets entries while
    /// the running count is below the running sum of scale × nw. The
    /// rounding of those sums can give the ring one entry more than
    /// ceil(scale) (100 equal endpoints on a ring of 16 get 17), or an
    /// endpoint one entry more or less than its exact share: kept, as gRPC
    /// has it. (Go on arm64 may fuse the multiply-add; amd64 is the
    /// reference.)
    pub(crate) fn new(endpoints: &[Placement], min_size: u64, max_size: u64) -> Ring {
        let total: u128 = endpoints.iter().map(|e| u128::from(e.weight.max(1))).sum();
        let total = total.max(1) as f64;
        let normalized: Vec<f64> = endpoints
            .iter()
            .map(|e| e.weight.max(1) as f64 / total)
            .collect();
        let lightest = normalized.iter().copied().fold(1.0f64, f64::min);
        let (min_size, max_size) = (min_size.max(1) as f64, max_size.max(1) as f64);
        let scale = ((lightest * min_size).ceil() / lightest).min(max_size);
        let size = (scale.ceil() as usize).min(RING_SIZE_LIMIT as usize);

        let mut entries: Vec<(u64, u32)> = Vec::with_capacity(size + 1);
        let mut key = String::new();
        let (mut current, mut target) = (0f64, 0f64);
        for (k, (e, nw)) in endpoints.iter().zip(&normalized).enumerate() {
            // Not fused (no mul_add): as gRPC-Go computes it on amd64.
            let share = scale * nw;
            target += share;
            let mut n = 0u64;
            // Bounded: `target` ends near scale (≤ 2^23), and each entry
            // adds one to `current`.
            while current < target {
                key.clear();
                key.push_str(&e.hash_key);
                key.push('_');
                key.push_str(&n.to_string());
                entries.push((xxh64(key.as_bytes(), 0), k as u32));
                n += 1;
                current += 1.0;
            }
        }
        // Ties between equal hashes go to the earlier endpoint.
        entries.sort_unstable();

        let mut member_of = vec![u32::MAX; endpoints.len()];
        let mut members = Vec::new();
        for (_, k) in &entries {
            let k = *k as usize;
            if member_of[k] == u32::MAX {
                member_of[k] = 0;
            }
        }
        for (k, m) in member_of.iter_mut().enumerate() {
            if *m != u32::MAX {
                *m = members.len() as u32;
                members.push(k as u32);
            }
        }
        let mut entries: Vec<Entry> = entries
            .iter()
            .map(|(hash, k)| Entry {
                hash: *hash,
                owner: member_of[*k as usize],
            })
            .collect();
        let len = entries.len();

        let bits = len.next_power_of_two().max(2).trailing_zeros();
        let shift = 64 - bits;
        let count = 1usize << bits;
        let mut buckets = Vec::with_capacity(count + 1);
        let mut i = 0usize;
        for b in 0..count as u64 {
            while i < entries.len() && (entries[i].hash >> shift) < b {
                i += 1;
            }
            buckets.push(i as u32);
        }
        buckets.push(len as u32);
        // Past the last entry, hashes no request can exceed (see `find`).
        let owner = entries.first().map_or(0, |e| e.owner);
        entries.extend(
            [Entry {
                hash: u64::MAX,
                owner,
            }; SENTINELS],
        );
        Ring {
            entries: entries.into(),
            len,
            members: members.into(),
            buckets: buckets.into(),
            shift,
        }
    }

    /// How many entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The input indices of the endpoints with at least one entry, in input
    /// order; an entry's owner indexes this.
    pub(crate) fn members(&self) -> &[u32] {
        &self.members
    }

    /// The member that entry `i` (< `len()`) belongs to.
    #[inline(always)]
    pub(crate) fn owner(&self, i: usize) -> usize {
        self.entries[i].owner as usize
    }

    /// The member entry `i` belongs to, `None` past the end (for the pick
    /// path, which must not panic).
    #[inline(always)]
    pub(crate) fn owner_checked(&self, i: usize) -> Option<usize> {
        if i >= self.len {
            return None;
        }
        Some(self.entries.get(i)?.owner as usize)
    }

    /// The entry a request hashed to `hash` lands on: the first whose hash
    /// is ≥ `hash`, or the first of all past the last. The ring is never
    /// empty. Bounded by the entries of one bucket.
    ///
    /// The answer is at or after the bucket's first entry, and no later
    /// than the next bucket's first entry (whose hash is in a later bucket,
    /// so > `hash`) or, past the last bucket, the first sentinel (no hash
    /// is > `u64::MAX`). Buckets hold about one entry each: the first two
    /// candidates are compared at once, without a branch (entries are
    /// sorted, and the sentinels make both loads valid), and only a bucket
    /// with more entries below `hash` walks on.
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64) -> usize {
        let b = (hash >> self.shift) as usize;
        let start = self.buckets.get(b).map_or(self.len, |&i| i as usize);
        let below = |i: usize| self.entries.get(i).is_some_and(|e| e.hash < hash);
        let mut i = start + usize::from(below(start)) + usize::from(below(start + 1));
        // Bounded: the sentinels are not below any hash.
        while below(i) {
            i += 1;
        }
        // Past the last entry: the first of all (wrapping around).
        if i >= self.len {
            0
        } else {
            i
        }
    }

    #[cfg(test)]
    pub(crate) fn hashes(&self) -> Vec<u64> {
        self.entries[..self.len].iter().map(|e| e.hash).collect()
    }
}

/// Entries of hash `u64::MAX` past a ring's last: `Ring::find` compares
/// the two entries from a bucket's first at once, both always there.
const SENTINELS: usize = 2;

/// `RingTable::next_usable` entry for "every member is failing".
const NONE: u32 = u32::MAX;

/// One picker's view of a ring, for picks by hash: A61's walk past members
/// in TRANSIENT_FAILURE precomputed, and the READY members' entries, so
/// that a reader finds a READY endpoint from a hash with no call through
/// the picker ([`InlineKind::Ring`](crate::balancer::picker::InlineKind)).
/// A hash landing on a member that is not READY (IDLE: to be connected;
/// CONNECTING; every member failing) is the picker's to handle.
pub struct RingTable {
    ring: Arc<Ring>,
    /// Per entry: the first entry at or after it (cyclically) whose member
    /// is not failing, or `NONE`. Only when some member is.
    next_usable: Option<Box<[u32]>>,
    /// Per member (`Ring::owner`): its READY subchannel's entry, `None`
    /// when it is not READY.
    ready: Box<[Option<RotationEntry>]>,
    /// The hash may come from a header (`requestHashHeader`): a pick that
    /// carries metadata goes the picker's way.
    header: bool,
}

impl RingTable {
    /// A table over `ring` whose member `m` is failing iff `failing(m)` and
    /// READY with `ready[m]` if `Some` (one per member). The picker holding
    /// the table keeps the READY entries' subchannels alive.
    pub(crate) fn new(
        ring: Arc<Ring>,
        failing: impl Fn(usize) -> bool,
        ready: Box<[Option<RotationEntry>]>,
        header: bool,
    ) -> RingTable {
        let failing_entry = |i: usize| failing(ring.owner(i));
        let next_usable = (0..ring.members().len()).any(&failing).then(|| {
            // Two passes from the end: the first finds where entries past
            // the last usable one wrap to.
            let mut next = vec![NONE; ring.len()].into_boxed_slice();
            let mut at = NONE;
            for pass in 0..2 {
                for i in (0..ring.len()).rev() {
                    if !failing_entry(i) {
                        at = i as u32;
                    }
                    if pass == 1 {
                        next[i] = at;
                    }
                }
            }
            next
        });
        RingTable {
            ring,
            next_usable,
            ready,
            header,
        }
    }

    /// The ring.
    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The entry a pick hashed to `hash` goes to (A61): the first from the
    /// hash's entry on whose member is not failing; if every one is, the
    /// hash's own entry.
    #[inline(always)]
    pub(crate) fn usable(&self, hash: u64) -> usize {
        let first = self.ring.find(hash);
        match &self.next_usable {
            None => first,
            Some(next) => match next.get(first) {
                Some(&at) if at != NONE => at as usize,
                _ => first,
            },
        }
    }

    /// The READY endpoint a pick with `hash` lands on, and none when the
    /// member there is not READY (or the pick's hash may come from its
    /// `metadata`): then the picker decides.
    #[inline(always)]
    pub(crate) fn ready(&self, hash: Option<u64>, has_metadata: bool) -> Option<&RotationEntry> {
        let hash = hash?;
        if self.header && has_metadata {
            return None;
        }
        let member = self.ring.owner_checked(self.usable(hash))?;
        self.ready.get(member)?.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(keys: &[(&str, u64)]) -> Vec<Placement> {
        keys.iter()
            .map(|(k, w)| Placement {
                hash_key: k.to_string(),
                weight: *w,
            })
            .collect()
    }

    fn entries_of(ring: &Ring) -> Vec<usize> {
        let mut per = vec![0; ring.members().len()];
        for i in 0..ring.len() {
            per[ring.owner(i)] += 1;
        }
        per
    }

    #[test]
    fn entry_hashes_are_xxh64_seed_0_of_key_underscore_index() {
        // The XXH64 test vector (empty input, seed 0), then our keys.
        assert_eq!(xxh64(b"", 0), 0xef46_db37_51d8_e999);
        let ring = Ring::new(&place(&[("127.0.0.1:1", 1)]), 4, 4);
        let mut want: Vec<u64> = (0..4)
            .map(|n| xxh64(format!("127.0.0.1:1_{n}").as_bytes(), 0))
            .collect();
        want.sort_unstable();
        assert_eq!(ring.hashes(), want);
    }

    #[test]
    fn sizes_follow_grpc_formula() {
        // Equal weights: the smallest multiple of n that is ≥ min_size.
        let three = place(&[("a", 1), ("b", 1), ("c", 1)]);
        let ring = Ring::new(&three, 1024, 4096);
        assert_eq!(ring.len(), 1026);
        assert_eq!(entries_of(&ring), [342, 342, 342]);
        // Weights 1:2:3 over min 1024: the lightest gets ceil(1024/6) = 171.
        let ring = Ring::new(&place(&[("a", 1), ("b", 2), ("c", 3)]), 1024, 4096);
        assert_eq!(entries_of(&ring), [171, 342, 513]);
        // Capped by max_size: proportions kept as well as whole entries allow.
        let ring = Ring::new(&place(&[("a", 1), ("b", 5000)]), 1024, 4096);
        assert_eq!(ring.len(), 4096);
        assert_eq!(entries_of(&ring), [1, 4095]);
        // More endpoints than entries: some get none.
        let many: Vec<Placement> = (0..100)
            .map(|i| Placement {
                hash_key: format!("e{i}"),
                weight: 1,
            })
            .collect();
        let ring = Ring::new(&many, 16, 16);
        // 100 × 0.16 sums to a little over 16 in float64: gRPC's ring has
        // 17 entries (one endpoint each).
        assert_eq!(ring.len(), 17);
        assert_eq!(ring.members().len(), 17);
    }

    /// Weights whose float64 running sums round differently from exact
    /// fractions: the ring has gRPC's (gRPC-Go's `newRing`) entry counts,
    /// not the exact shares, so keys land where a gRPC client sends them.
    #[test]
    fn entry_counts_round_as_grpc_does() {
        let ring = Ring::new(&place(&[("a", 3), ("b", 4)]), 1024, 4096);
        assert_eq!(entries_of(&ring), [440, 585]);
        let ring = Ring::new(&place(&[("a", 7), ("b", 11), ("c", 13)]), 1024, 4096);
        assert_eq!(entries_of(&ring), [233, 364, 431]);
        let ring = Ring::new(&place(&[("a", 9), ("b", 20)]), 1024, 4096);
        assert_eq!(entries_of(&ring), [319, 706]);
        let equal: Vec<Placement> = (0..75)
            .map(|i| Placement {
                hash_key: format!("e{i:02}"),
                weight: 1,
            })
            .collect();
        let ring = Ring::new(&equal, 1024, 4096);
        assert_eq!(ring.len(), 1051);
        let per = entries_of(&ring);
        assert_eq!(per.iter().filter(|&&n| n == 15).count(), 1);
        assert_eq!(per.iter().filter(|&&n| n == 14).count(), 74);
    }

    #[test]
    fn find_is_the_first_entry_at_or_after_the_hash_wrapping() {
        let keys: Vec<Placement> = (0..37)
            .map(|i| Placement {
                hash_key: format!("127.0.0.{i}:443"),
                weight: 1 + i % 3,
            })
            .collect();
        let ring = Ring::new(&keys, 1024, 4096);
        let hashes = ring.hashes();
        let mut probes: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1];
        for h in hashes.iter().take(50) {
            probes.extend([*h, h.wrapping_sub(1), h.wrapping_add(1)]);
        }
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            probes.push(x);
        }
        for h in probes {
            let want = hashes.partition_point(|e| *e < h);
            let want = if want == hashes.len() { 0 } else { want };
            assert_eq!(ring.find(h), want, "hash {h:#x}");
        }
    }
}
