//! A dense list of pick entries (one per READY endpoint) that successive
//! pickers share chunk by chunk, for policies that pick by index among the
//! READY endpoints (random, least_request).
//!
//! A picker needs the entries in one indexable table so that a random index
//! below the count is uniform over the READY set. Copying the whole table
//! into every new picker makes bringing up n endpoints one state report at a
//! time cost O(n²). Here the list is cut into fixed-size chunks that pickers
//! hold by reference count: one endpoint coming or going swap-removes or
//! appends, which touches at most two chunks, so a new picker copies at most
//! two chunks of entries plus one pointer per chunk, and readers keep the
//! unchanged chunks in cache.

use crate::balancer::keep::Keep;
use crate::balancer::pick_local::{below, PickLocal};
use crate::balancer::rotation::RotationEntry;
use crate::balancer::subconn::SubConn;
use std::sync::Arc;

/// log2 of the entries per chunk: a pick finds its chunk with a shift.
const SHIFT: u32 = 8;
/// Entries per chunk (256): one change copies at most two chunks.
pub(crate) const CHUNK: usize = 1 << SHIFT;
const MASK: usize = CHUNK - 1;

/// A picker's frozen view of a [`ReadyList`]: `len` entries in chunks of
/// [`CHUNK`] (the last one shorter), shared with other pickers.
pub(crate) struct ReadyChunks<E> {
    chunks: Box<[Arc<[E]>]>,
    len: usize,
    /// The first chunk again (empty when there is none), held in the table
    /// itself: in a table of one chunk, an index finds its entry without
    /// first loading a chunk pointer, a load the random index would
    /// otherwise wait for.
    head: Arc<[E]>,
}

impl<E> ReadyChunks<E> {
    /// How many entries.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entry `i` (`None` at or past `len`).
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> Option<&E> {
        // By the table's size, not the index's: the same way every pick.
        if self.len <= CHUNK {
            return self.head.get(i);
        }
        self.chunks.get(i >> SHIFT)?.get(i & MASK)
    }

    /// Every entry in one slice, when the table is one chunk.
    #[inline(always)]
    pub(crate) fn flat(&self) -> Option<&[E]> {
        (self.len <= CHUNK).then_some(&*self.head)
    }

    /// The chunks, in order (to check what successive pickers share).
    #[cfg(test)]
    pub(crate) fn chunks(&self) -> &[Arc<[E]>] {
        &self.chunks
    }
}

/// READY subchannels that a picker chooses among uniformly at random
/// (`random`), and that readers draw from inline
/// ([`InlineKind::Uniform`](crate::balancer::picker::InlineKind)) as they
/// walk rotations: one random number, one entry read, nothing shared
/// written.
pub struct UniformTable {
    /// Never empty.
    entries: ReadyChunks<RotationEntry>,
    /// Owns the subchannels the entries point to.
    _keep: Keep,
}

impl UniformTable {
    /// A table over `entries`, which point into `keep`; `None` when empty.
    pub(crate) fn new(entries: ReadyChunks<RotationEntry>, keep: Keep) -> Option<UniformTable> {
        (entries.len() > 0).then_some(UniformTable {
            entries,
            _keep: keep,
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

    /// Every entry in one slice, when there are few enough (one chunk):
    /// a reader then draws from it directly (see `Reader::try_pick_ref`).
    #[inline]
    pub(crate) fn flat(&self) -> Option<&[RotationEntry]> {
        self.entries.flat()
    }

    /// An entry drawn uniformly at random with the reader's random source.
    #[inline(always)]
    pub(crate) fn draw(&self, local: &mut PickLocal) -> &RotationEntry {
        self.at(local.random_below(self.entries.len()))
    }

    /// Entry `i` (< len); the fallback keeps the pick path panic-free.
    #[inline(always)]
    fn at(&self, i: usize) -> &RotationEntry {
        match self.entries.get(i) {
            Some(e) => e,
            None => self.first(),
        }
    }

    #[cold]
    fn first(&self) -> &RotationEntry {
        self.entries.get(0).expect("never empty")
    }

    /// The entry `draw` will take `k` draws from now (if nothing else
    /// draws from `local` in between): for prefetching it.
    #[inline(always)]
    pub(crate) fn upcoming(&self, local: &PickLocal, k: u64) -> &RotationEntry {
        self.at(below(local.peek(k) >> 32, self.entries.len()))
    }

    /// A subchannel drawn uniformly at random.
    #[inline]
    pub fn pick(&self, local: &mut PickLocal) -> &SubConn {
        // SAFETY: the entries point into `_keep`, alive as long as `self`.
        unsafe { self.draw(local).ptr().as_ref() }
    }
}

/// The loop's side: the entries in one `Vec` (O(1) to append, overwrite or
/// swap-remove) and, per chunk, the frozen copy the last picker got, dropped
/// when an entry in it changes.
pub(crate) struct ReadyList<E> {
    entries: Vec<E>,
    /// Per chunk of `entries`: its frozen copy, `None` when stale.
    frozen: Vec<Option<Arc<[E]>>>,
    /// Entries copied into frozen chunks so far: what building pickers has
    /// cost (tests check it grows by at most two chunks per change).
    #[cfg_attr(not(test), allow(dead_code))]
    copied: u64,
}

impl<E: Copy> Default for ReadyList<E> {
    fn default() -> ReadyList<E> {
        ReadyList {
            entries: Vec::new(),
            frozen: Vec::new(),
            copied: 0,
        }
    }
}

impl<E: Copy> ReadyList<E> {
    /// Marks the chunk holding entry `i` stale.
    fn touch(&mut self, i: usize) {
        if let Some(f) = self.frozen.get_mut(i >> SHIFT) {
            *f = None;
        }
    }

    /// Drops every entry (and every frozen chunk).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.frozen.clear();
    }

    /// Appends `e` at the end (index `len() - 1`).
    pub(crate) fn push(&mut self, e: E) {
        self.touch(self.entries.len());
        self.entries.push(e);
    }

    /// Overwrites entry `i`; false if there is none.
    pub(crate) fn set(&mut self, i: usize, e: E) -> bool {
        let Some(slot) = self.entries.get_mut(i) else {
            return false;
        };
        *slot = e;
        self.touch(i);
        true
    }

    /// Removes entry `i`, moving the last entry into its place (as
    /// `Vec::swap_remove`); `None` if there is no entry `i`.
    pub(crate) fn swap_remove(&mut self, i: usize) -> Option<E> {
        if i >= self.entries.len() {
            return None;
        }
        self.touch(i);
        self.touch(self.entries.len() - 1);
        Some(self.entries.swap_remove(i))
    }

    /// The entries as a picker holds them: the chunks that did not change
    /// since the last call are shared, the others copied. O(CHUNK × chunks
    /// changed + chunks).
    pub(crate) fn freeze(&mut self) -> ReadyChunks<E> {
        let count = self.entries.len().div_ceil(CHUNK);
        self.frozen.resize(count, None);
        let chunks: Box<[Arc<[E]>]> = self
            .entries
            .chunks(CHUNK)
            .zip(self.frozen.iter_mut())
            .map(|(entries, frozen)| {
                frozen
                    .get_or_insert_with(|| {
                        self.copied += entries.len() as u64;
                        Arc::from(entries)
                    })
                    .clone()
            })
            .collect();
        let head = chunks.first().cloned().unwrap_or_else(|| Arc::from([]));
        ReadyChunks {
            chunks,
            len: self.entries.len(),
            head,
        }
    }

    /// Entries copied into pickers' chunks so far.
    #[cfg(test)]
    pub(crate) fn copied(&self) -> u64 {
        self.copied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(c: &ReadyChunks<u32>) -> Vec<u32> {
        (0..c.len()).map(|i| *c.get(i).unwrap()).collect()
    }

    #[test]
    fn a_change_copies_at_most_two_chunks_and_shares_the_rest() {
        let mut list = ReadyList::default();
        let n = 10 * CHUNK as u32 + 7;
        for i in 0..n {
            list.push(i);
        }
        let first = list.freeze();
        assert_eq!(all(&first), (0..n).collect::<Vec<_>>());
        assert_eq!(first.chunks().len(), 11);
        assert!(first.get(n as usize).is_none());
        let copied = list.copied();
        assert_eq!(copied, u64::from(n));

        // Entry 3 leaves: the last one takes its place.
        assert_eq!(list.swap_remove(3), Some(3));
        let second = list.freeze();
        assert_eq!(second.len(), n as usize - 1);
        assert_eq!(*second.get(3).unwrap(), n - 1);
        let changed: Vec<usize> = (0..11)
            .filter(|c| !Arc::ptr_eq(&first.chunks()[*c], &second.chunks()[*c]))
            .collect();
        assert_eq!(
            changed,
            [0, 10],
            "only the removed slot's and the last chunk"
        );
        assert_eq!(list.copied() - copied, (CHUNK + 6) as u64);

        // Overwriting or appending copies one chunk; nothing changed, none.
        let copied = list.copied();
        assert!(list.set(CHUNK + 1, 99));
        assert!(!list.set(n as usize, 99));
        let third = list.freeze();
        assert_eq!(*third.get(CHUNK + 1).unwrap(), 99);
        assert_eq!(list.copied() - copied, CHUNK as u64);
        let copied = list.copied();
        let fourth = list.freeze();
        assert_eq!(list.copied(), copied);
        assert!(third
            .chunks()
            .iter()
            .zip(fourth.chunks().iter())
            .all(|(a, b)| Arc::ptr_eq(a, b)));
        // The earlier pickers' views are unchanged.
        assert_eq!(all(&first), (0..n).collect::<Vec<_>>());
        assert_eq!(*second.get(CHUNK + 1).unwrap(), CHUNK as u32 + 1);
    }

    #[test]
    fn shrinking_to_a_chunk_boundary_and_growing_again() {
        let mut list = ReadyList::default();
        for i in 0..(CHUNK as u32 + 1) {
            list.push(i);
        }
        let _ = list.freeze();
        assert_eq!(list.swap_remove(CHUNK), Some(CHUNK as u32));
        let c = list.freeze();
        assert_eq!((c.len(), c.chunks().len()), (CHUNK, 1));
        list.push(7);
        let c = list.freeze();
        assert_eq!((c.len(), c.chunks().len()), (CHUNK + 1, 2));
        assert_eq!(*c.get(CHUNK).unwrap(), 7);
        assert_eq!(list.swap_remove(CHUNK + 1), None);
        list.clear();
        let c = list.freeze();
        assert_eq!((c.len(), c.chunks().len()), (0, 0));
        assert!(c.get(0).is_none());
    }
}
