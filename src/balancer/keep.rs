//! What pickers keep alive: the subchannels their entries point to (plain
//! pointers, no reference count per pick), gathered by a policy as it lists
//! them and handed to each new picker as a [`Keep`].
//!
//! Successive pickers share the pool's full chunks, so a picker made after
//! one more subchannel was listed costs a pointer per chunk and a copy of the
//! last, partial chunk, not a copy of every subchannel: an endpoint's new
//! subchannel (a dual-stack endpoint moving to its second address) costs
//! O(1) to record, not a pool rebuilt over every endpoint's.

use crate::balancer::subconn::{SubConn, SubConnId};
use std::collections::HashSet;
use std::sync::Arc;

/// Subchannels per shared chunk.
const CHUNK: usize = 256;

/// A picker's hold on the subchannels its entries point to. Held, never
/// read.
#[derive(Clone, Default)]
pub(crate) struct Keep {
    _chunks: Arc<[Arc<[Arc<SubConn>]>]>,
}

impl Keep {
    /// Holds `subconns` (a picker over a fixed list).
    pub(crate) fn of(subconns: Arc<[Arc<SubConn>]>) -> Keep {
        Keep {
            _chunks: Arc::from([subconns]),
        }
    }
}

/// Every subchannel listed since the last `reset`, each once.
#[derive(Default)]
pub(crate) struct KeepPool {
    ids: HashSet<SubConnId>,
    /// Full chunks, shared by the `Keep`s handed out.
    full: Vec<Arc<[Arc<SubConn>]>>,
    /// The chunk being filled.
    tail: Vec<Arc<SubConn>>,
    /// The `Keep` of the pool as it is, until it grows or is reset.
    last: Option<Keep>,
}

impl KeepPool {
    /// How many subchannels it holds.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Holds `sc` too (nothing if it already does). O(1).
    pub(crate) fn add(&mut self, sc: &Arc<SubConn>) {
        if !self.ids.insert(sc.id()) {
            return;
        }
        self.last = None;
        self.tail.push(sc.clone());
        if self.tail.len() == CHUNK {
            self.full.push(std::mem::take(&mut self.tail).into());
        }
    }

    /// Holds exactly `subconns` from now on: to shed the subchannels no
    /// longer listed (pickers already made keep theirs).
    pub(crate) fn reset<'s>(&mut self, subconns: impl IntoIterator<Item = &'s Arc<SubConn>>) {
        *self = KeepPool::default();
        for sc in subconns {
            self.add(sc);
        }
    }

    /// Whether it holds more than twice what is `listed` now (plus some
    /// slack), so that a `reset` to those costs O(1) per subchannel added
    /// since the last one.
    pub(crate) fn bloated(&self, listed: usize) -> bool {
        self.len() > 2 * listed + CHUNK
    }

    /// What a picker made now keeps: everything the pool holds.
    pub(crate) fn keep(&mut self) -> Keep {
        if let Some(keep) = &self.last {
            return keep.clone();
        }
        let mut chunks = self.full.clone();
        if !self.tail.is_empty() {
            chunks.push(self.tail.as_slice().into());
        }
        let keep = Keep {
            _chunks: chunks.into(),
        };
        self.last = Some(keep.clone());
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;

    fn subconns(n: u64) -> Vec<Arc<SubConn>> {
        SubConn::numbered(n)
    }

    #[test]
    fn keeps_each_subchannel_once_and_shares_full_chunks() {
        let scs = subconns(CHUNK as u64 + 3);
        let mut pool = KeepPool::default();
        for sc in scs.iter().chain(&scs) {
            pool.add(sc);
        }
        assert_eq!(pool.len(), scs.len());
        let a = pool.keep();
        // Held by the pool (and the tail's by `a` too).
        assert!(scs.iter().all(|sc| Arc::strong_count(sc) >= 2));
        let b = pool.keep();
        assert!(Arc::ptr_eq(&a._chunks, &b._chunks), "unchanged: the same");
        pool.add(&scs[0]);
        assert!(Arc::ptr_eq(&a._chunks, &pool.keep()._chunks), "no growth");
        let extra = Arc::new(SubConn::new(SubConnId(9999), Address::new("127.0.0.1:9")));
        pool.add(&extra);
        let c = pool.keep();
        assert!(
            Arc::ptr_eq(&a._chunks[0], &c._chunks[0]),
            "full chunk shared"
        );
        assert_eq!(
            c._chunks.iter().map(|c| c.len()).sum::<usize>(),
            scs.len() + 1
        );
    }

    #[test]
    fn a_keep_outlives_a_reset() {
        let scs = subconns(4);
        let mut pool = KeepPool::default();
        for sc in &scs {
            pool.add(sc);
        }
        let kept = pool.keep();
        pool.reset(&scs[..1]);
        assert_eq!(pool.len(), 1);
        assert!(!pool.bloated(1));
        let weak: Vec<_> = scs.iter().map(Arc::downgrade).collect();
        drop(scs);
        assert!(
            weak.iter().all(|w| w.upgrade().is_some()),
            "the keep holds all four"
        );
        drop(kept);
        drop(pool);
        assert!(weak.iter().all(|w| w.upgrade().is_none()));
    }
}
