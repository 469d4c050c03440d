//! Rotations: subchannels in a fixed order that readers walk inline, each
//! with its own cursor, without calling the picker (the wait-free fast path
//! of round_robin, pick_first and any policy whose picker is a rotation).

use crate::balancer::pick_local::PickLocal;
use crate::balancer::subconn::{SubConn, SubConnId};
use std::ptr::NonNull;
use std::sync::Arc;

/// A run of consecutive rotation entries. A new picker reuses the chunks that
/// did not change, so one subchannel coming or going costs a chunk, not the
/// whole list, to build and to pull into every reader's cache.
pub(crate) type Chunk = Arc<[RotationEntry]>;

/// Subchannels in rotation order, in non-empty chunks, together with what
/// keeps them alive: the entries are plain pointers into `keep`. Built only
/// by the crate and never cloned, so no entry outlives its subchannel.
pub struct Rotation {
    /// Owns the subchannels the entries point to: held, never read.
    _keep: Arc<[Arc<SubConn>]>,
    chunks: Vec<Chunk>,
    len: usize,
}

impl Rotation {
    /// A rotation over `chunks`, whose entries must point into `keep`; empty
    /// chunks are left out. `None` when there is no entry at all.
    pub(crate) fn new(keep: Arc<[Arc<SubConn>]>, chunks: Vec<Chunk>) -> Option<Rotation> {
        let chunks: Vec<Chunk> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let len = chunks.iter().map(|c| c.len()).sum();
        (len > 0).then_some(Rotation {
            _keep: keep,
            chunks,
            len,
        })
    }

    /// Every subchannel of `keep`, in order, in chunks of `chunk` entries.
    pub(crate) fn over(keep: Arc<[Arc<SubConn>]>, chunk: usize) -> Option<Rotation> {
        let chunks = RotationEntry::all(&keep)
            .chunks(chunk)
            .map(Chunk::from)
            .collect();
        Rotation::new(keep, chunks)
    }

    /// The chunks: at least one, none empty.
    pub(crate) fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// The next subchannel for a caller that keeps no place of its own (a
    /// parent picking through this rotation); readers rotate inline instead.
    pub fn pick(&self, local: &mut PickLocal) -> &SubConn {
        let mut i = local.next_index(self.len);
        for c in &self.chunks {
            if i < c.len() {
                // SAFETY: entries point into `_keep`, alive as long as `self`.
                return unsafe { c[i].ptr().as_ref() };
            }
            i -= c.len();
        }
        unreachable!("next_index is below len, the sum of the chunks' lengths")
    }
}

/// A subchannel in a picker's rotation: a plain pointer (no reference count),
/// valid for as long as the picker that lists it, which owns the subchannel,
/// plus copies of what a pick hands out (id, address, tag). A pick then reads
/// one entry of one sequential array and never the subchannel itself: with
/// thousands of subchannels, that is the difference between streaming and a
/// cache miss per pick.
#[derive(Clone, Copy, Debug)]
pub struct RotationEntry {
    subconn: NonNull<SubConn>,
    id: SubConnId,
    tag: u64,
    addr: NonNull<u8>,
    addr_len: usize,
}

// SAFETY: pointers to an immutable `SubConn` and its address (Send + Sync).
unsafe impl Send for RotationEntry {}
// SAFETY: as above; only ever read.
unsafe impl Sync for RotationEntry {}

impl RotationEntry {
    /// # Safety
    /// The picker holding this entry must keep `sc` alive for its own lifetime.
    pub(crate) unsafe fn new(sc: &Arc<SubConn>) -> RotationEntry {
        let addr = sc.addr();
        RotationEntry {
            subconn: NonNull::from(&**sc),
            id: sc.id(),
            tag: sc.tag(),
            addr: NonNull::from(addr.as_bytes()).cast(),
            addr_len: addr.len(),
        }
    }

    /// Entries for every subchannel of `keep`, in order.
    pub(crate) fn all(keep: &Arc<[Arc<SubConn>]>) -> Vec<RotationEntry> {
        // SAFETY: the entries point into `keep`, and only a `Rotation` over
        // that same `keep` holds them.
        keep.iter()
            .map(|sc| unsafe { RotationEntry::new(sc) })
            .collect()
    }

    pub(crate) fn ptr(self) -> NonNull<SubConn> {
        self.subconn
    }

    /// The subchannel's id.
    pub fn id(&self) -> SubConnId {
        self.id
    }

    /// The address's `tag`.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The address string's bytes (UTF-8) and length, valid as long as the
    /// pick that returned this entry.
    pub fn addr_raw(&self) -> (NonNull<u8>, usize) {
        (self.addr, self.addr_len)
    }
}
