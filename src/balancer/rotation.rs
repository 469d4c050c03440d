//! Rotations: subchannels in a fixed order that readers walk inline, each
//! with its own cursor, without calling the picker (the wait-free fast path
//! of round_robin, pick_first and any policy whose picker is a rotation).
//!
//! A policy builds them with a [`RotationBuilder`], which keeps what the
//! last picker was made of so that one member's change costs O(1) to record
//! and one chunk to rebuild, and tells when nothing pickable changed (then no
//! new picker is needed at all).

use crate::balancer::keep::{Keep, KeepPool};
use crate::balancer::pick_local::PickLocal;
use crate::balancer::subconn::{SubConn, SubConnId};
use std::ptr::NonNull;
use std::sync::Arc;

/// A run of consecutive rotation entries. A new picker reuses the chunks that
/// did not change, so one subchannel coming or going costs a chunk, not the
/// whole list, to build and to pull into every reader's cache.
pub(crate) type Chunk = Arc<[RotationEntry]>;

/// Subchannels in rotation order, in non-empty chunks, together with what
/// keeps them alive: the entries are plain pointers to subchannels `keep`
/// holds. Built only by the crate (policies use a [`RotationBuilder`]) and
/// never cloned, so no entry outlives its subchannel.
pub struct Rotation {
    /// Owns the subchannels the entries point to: held, never read.
    _keep: Keep,
    chunks: Vec<Chunk>,
    /// Where each chunk starts in rotation order (so that `pick` finds an
    /// entry's chunk by binary search, not by walking every chunk).
    starts: Vec<usize>,
    len: usize,
}

impl Rotation {
    /// A rotation over `chunks`, whose entries must point to subchannels
    /// `keep` holds; empty chunks are left out. `None` when there is no
    /// entry at all.
    pub(crate) fn new(keep: Keep, chunks: Vec<Chunk>) -> Option<Rotation> {
        let chunks: Vec<Chunk> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let mut len = 0;
        let starts = chunks
            .iter()
            .map(|c| {
                let start = len;
                len += c.len();
                start
            })
            .collect();
        (len > 0).then_some(Rotation {
            _keep: keep,
            chunks,
            starts,
            len,
        })
    }

    /// Every subchannel of `keep`, in order, in chunks of `chunk` entries.
    pub(crate) fn over(keep: Arc<[Arc<SubConn>]>, chunk: usize) -> Option<Rotation> {
        let chunks = RotationEntry::all(&keep)
            .chunks(chunk)
            .map(Chunk::from)
            .collect();
        Rotation::new(Keep::of(keep), chunks)
    }

    /// The chunks: at least one, none empty.
    pub(crate) fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Entry `i` (below `len`) as (its chunk, its place in the chunk).
    pub(crate) fn locate(&self, i: usize) -> (usize, usize) {
        // The last chunk starting at or before `i` (the first starts at 0).
        let c = self.starts.partition_point(|s| *s <= i) - 1;
        (c, i - self.starts[c])
    }

    /// How many entries (at least one).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a rotation has at least one entry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The entries, in rotation order.
    pub fn entries(&self) -> impl Iterator<Item = &RotationEntry> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// The next subchannel for a caller that keeps no place of its own (a
    /// parent picking through this rotation); readers rotate inline instead.
    #[inline]
    pub fn pick(&self, local: &mut PickLocal) -> &SubConn {
        self.pick_with_id(local).0
    }

    /// `pick`, with the subchannel's id read from the rotation's entry: a
    /// parent that keys something by id never touches the subchannel.
    #[inline]
    pub fn pick_with_id(&self, local: &mut PickLocal) -> (&SubConn, SubConnId) {
        let (c, offset) = self.locate(local.next_index(self.len));
        let entry = self.chunks[c][offset];
        // SAFETY: entries point to subchannels `_keep` holds, alive as long
        // as `self`.
        (unsafe { entry.ptr().as_ref() }, entry.id())
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
    addr_len: u32,
    /// `SubConn::slot`, at hand for the reader's host-pick counters.
    slot: u32,
}

// SAFETY: pointers to an immutable `SubConn` and its address (Send + Sync).
unsafe impl Send for RotationEntry {}
// SAFETY: as above; only ever read.
unsafe impl Sync for RotationEntry {}

impl RotationEntry {
    /// # Safety
    /// The picker holding this entry must keep `sc` alive for its own lifetime.
    pub(crate) unsafe fn new(sc: &Arc<SubConn>) -> RotationEntry {
        // SAFETY: forwarded contract.
        unsafe { RotationEntry::of(sc) }
    }

    /// # Safety
    /// The picker holding this entry must keep `sc` alive for its own lifetime.
    pub(crate) unsafe fn of(sc: &SubConn) -> RotationEntry {
        let addr = sc.addr();
        RotationEntry {
            subconn: NonNull::from(sc),
            id: sc.id(),
            tag: sc.tag(),
            addr: NonNull::from(addr.as_bytes()).cast(),
            // Addresses are short strings (checked where they are parsed);
            // a longer one would only be cut short in a C pick's copy.
            addr_len: u32::try_from(addr.len()).unwrap_or(u32::MAX),
            slot: sc.slot(),
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
        (self.addr, self.addr_len as usize)
    }

    /// Where readers count the subchannel's host picks.
    #[inline(always)]
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }
}

/// Entries per rotation chunk by default: one member's change rebuilds (and
/// moves every reader's cache through) at most this many entries (10 KiB),
/// whatever the number of members.
pub const DEFAULT_CHUNK: usize = 256;

/// Builds the rotations of a policy whose picker rotates over its members
/// (children, endpoints): each member contributes at most one subchannel,
/// and the rotation lists the contributing members' subchannels in member
/// order. This is round_robin's picker machinery as a part any policy can
/// use to get the readers' inline wait-free pick path
/// ([`Picker::rotation`](crate::balancer::picker::Picker::rotation)).
///
/// It keeps two things between pickers, so that a new picker is cheap:
/// - the **pool**: every subchannel listed since the members were set, held
///   in shared chunks (a picker holds them and copies entries, touching no
///   reference count of its own); a member's new subchannel joins as it is
///   listed, so one endpoint moving to another address costs O(1), not a
///   pool rebuilt over every member's subchannels;
/// - the **blocks**: per `chunk` members, the entries of the contributing
///   ones. `list` records one member's contribution in O(1) (plus a search
///   through that member's own subchannels) and marks only its block stale;
///   `build` rebuilds the stale blocks and reuses the others, so readers
///   keep the unchanged chunks in cache.
///
/// `changed` says whether `build` would list anything other than the last
/// rotation it built, so a policy publishes a new picker only when what
/// picks select from changed.
///
/// ```
/// use std::sync::Arc;
/// use switchyard::balancer::rotation::RotationBuilder;
/// # use switchyard::balancer::testing::TestClientConn;
/// # use switchyard::{Address, ClientConn};
/// # let mut cc = TestClientConn::new();
/// # let a = cc.new_subconn(Address::new("127.0.0.1:1")).unwrap();
/// # let b = cc.new_subconn(Address::new("127.0.0.1:2")).unwrap();
/// let mut rotation = RotationBuilder::new();
/// // Two members (say, two endpoints' children), each with its subchannels.
/// rotation.set_members([&[a.clone()][..], &[b.clone()][..]]);
/// rotation.list(1, Some(&b)).unwrap(); // member 1 is READY on b
/// assert!(rotation.changed());
/// let r = rotation.build().expect("one entry");
/// assert_eq!(r.len(), 1);
/// rotation.list(1, Some(&b)).unwrap(); // the same again: nothing to publish
/// assert!(!rotation.changed());
/// ```
pub struct RotationBuilder {
    chunk: usize,
    /// What pickers keep alive: every subchannel listed since `set_members`
    /// (shed now and then, see `KeepPool::bloated`).
    pool: KeepPool,
    /// Every member's subchannels' ids, a run per member (see `runs`); a
    /// member given new ones (`set_member`) gets a new run at the end.
    ids: Vec<SubConnId>,
    /// Per member: where its run starts in `ids`, and how long it is.
    runs: Vec<(usize, usize)>,
    /// How many of `ids` are in some member's run.
    live_ids: usize,
    /// Per member: the subchannel it contributes, and its entry.
    listed: Vec<Option<(Arc<SubConn>, RotationEntry)>>,
    /// How many members contribute.
    count: usize,
    /// Per `chunk` members: the entries of the contributing ones, or `None`
    /// when one of them changed since the block was built.
    blocks: Vec<Option<Chunk>>,
    /// The blocks made stale since the last build (each once), so that
    /// neither filling nor comparing looks at the others.
    dirty: Vec<usize>,
    /// The blocks of the last rotation built, if any.
    last: Option<Vec<Chunk>>,
    /// `set_members` ran since the last build (blocks no longer line up
    /// with `last`'s).
    reset: bool,
}

/// `RotationBuilder::list` was given a subchannel that is not one of the
/// member's, or a member that does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAMember;

impl std::fmt::Display for NotAMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the subchannel is not one of that member's (or no such member)")
    }
}

impl std::error::Error for NotAMember {}

impl Default for RotationBuilder {
    fn default() -> RotationBuilder {
        RotationBuilder::new()
    }
}

impl RotationBuilder {
    /// An empty builder (no member) with `DEFAULT_CHUNK`-member chunks.
    pub fn new() -> RotationBuilder {
        RotationBuilder::with_chunk(DEFAULT_CHUNK)
    }

    /// An empty builder whose chunks cover `chunk` members each (at least 1).
    pub fn with_chunk(chunk: usize) -> RotationBuilder {
        RotationBuilder {
            chunk: chunk.max(1),
            pool: KeepPool::default(),
            ids: Vec::new(),
            runs: Vec::new(),
            live_ids: 0,
            listed: Vec::new(),
            count: 0,
            blocks: Vec::new(),
            dirty: Vec::new(),
            last: None,
            reset: true,
        }
    }

    /// Sets the members, each with the subchannels it may contribute (a
    /// slice, or any iterator of them such as `Child::subconns`), in
    /// rotation order. Every member starts out contributing nothing (`list`
    /// them again). O(subchannels): call it when the members change (come,
    /// go, move), not on every state change; when only one member's
    /// subchannels change, `set_member`.
    pub fn set_members<'s, M>(&mut self, members: impl IntoIterator<Item = M>)
    where
        M: IntoIterator<Item = &'s Arc<SubConn>>,
    {
        self.ids.clear();
        self.runs.clear();
        for m in members {
            let start = self.ids.len();
            self.ids.extend(m.into_iter().map(|sc| sc.id()));
            self.runs.push((start, self.ids.len() - start));
        }
        self.live_ids = self.ids.len();
        self.pool = KeepPool::default();
        let members = self.runs.len();
        self.listed = vec![None; members];
        self.count = 0;
        self.blocks = vec![None; members.div_ceil(self.chunk)];
        self.dirty = (0..self.blocks.len()).collect();
        self.reset = true;
    }

    /// Member `member`'s subchannels are now `subconns` (the others' stay
    /// as they are). O(its subchannels); it stops contributing if the one
    /// it contributed is not among them.
    pub fn set_member<'s>(
        &mut self,
        member: usize,
        subconns: impl IntoIterator<Item = &'s Arc<SubConn>>,
    ) -> Result<(), NotAMember> {
        let &(start, len) = self.runs.get(member).ok_or(NotAMember)?;
        let mut subconns = subconns.into_iter();
        let old = &self.ids[start..start + len];
        // The same ones in the same order (the usual case): nothing to do.
        let mut same = 0;
        let mut first_new = None;
        for sc in subconns.by_ref() {
            if old.get(same) == Some(&sc.id()) {
                same += 1;
            } else {
                first_new = Some(sc.id());
                break;
            }
        }
        if first_new.is_none() && same == len {
            return Ok(());
        }
        let new_start = self.ids.len();
        self.ids.extend_from_within(start..start + same);
        self.ids.extend(first_new);
        self.ids.extend(subconns.map(|sc| sc.id()));
        let new_len = self.ids.len() - new_start;
        self.runs[member] = (new_start, new_len);
        self.live_ids = self.live_ids - len + new_len;
        let listed = self.listed[member].as_ref().map(|(sc, _)| sc.id());
        if listed.is_some_and(|id| !self.ids[new_start..].contains(&id)) {
            self.set_listed(member, None);
        }
        if self.ids.len() > 2 * self.live_ids + 1024 {
            // Runs replaced long ago: pack the live ones (O(1) per id
            // added since the last time).
            let mut ids = Vec::with_capacity(self.live_ids);
            for run in &mut self.runs {
                let at = ids.len();
                ids.extend_from_slice(&self.ids[run.0..run.0 + run.1]);
                run.0 = at;
            }
            self.ids = ids;
        }
        Ok(())
    }

    /// How many subchannels pickers built from now on keep alive.
    #[cfg(test)]
    pub(crate) fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// How many members there are.
    pub fn members(&self) -> usize {
        self.listed.len()
    }

    /// How many members contribute an entry (the next rotation's length).
    pub fn len(&self) -> usize {
        self.count
    }

    /// No member contributes: `build` would return `None`.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Member `member` now contributes `subconn` (one of its own, by
    /// identity), or nothing. O(1) bookkeeping plus a search through the
    /// member's own subchannels; only the member's block is rebuilt, and
    /// only if its contribution changed.
    pub fn list(
        &mut self,
        member: usize,
        subconn: Option<&Arc<SubConn>>,
    ) -> Result<(), NotAMember> {
        let &(start, len) = self.runs.get(member).ok_or(NotAMember)?;
        if let Some(sc) = subconn {
            if !self.ids[start..start + len].contains(&sc.id()) {
                return Err(NotAMember);
            }
        }
        self.set_listed(member, subconn);
        Ok(())
    }

    /// Member `member` (one there is) contributes `subconn`, one of its own.
    fn set_listed(&mut self, member: usize, subconn: Option<&Arc<SubConn>>) {
        let slot = &mut self.listed[member];
        let same = match (&*slot, subconn) {
            (None, None) => true,
            (Some((now, _)), Some(sc)) => Arc::ptr_eq(now, sc),
            _ => false,
        };
        if same {
            return;
        }
        self.count = self.count + usize::from(subconn.is_some()) - usize::from(slot.is_some());
        *slot = subconn.map(|sc| {
            // Held by every picker built from now on (see `build`).
            self.pool.add(sc);
            // SAFETY: pickers listing this entry hold the pool's `Keep`,
            // which holds `sc` (added just above, or shed only after no
            // member lists it: see `build`).
            (sc.clone(), unsafe { RotationEntry::new(sc) })
        });
        let b = member / self.chunk;
        if self.blocks[b].take().is_some() {
            self.dirty.push(b);
        }
    }

    /// Builds the stale blocks.
    fn fill(&mut self) {
        for &b in &self.dirty {
            if self.blocks[b].is_none() {
                let end = ((b + 1) * self.chunk).min(self.listed.len());
                let listed = self.listed[b * self.chunk..end].iter().flatten();
                self.blocks[b] = Some(listed.map(|(_, e)| *e).collect());
            }
        }
    }

    /// The current blocks (after `fill`).
    fn current(&self) -> impl Iterator<Item = &Chunk> + '_ {
        self.blocks.iter().flatten()
    }

    /// Whether `build` would list other subchannels (or another order) than
    /// the last rotation built; true before the first build. Looks only at
    /// the blocks `list` made stale since (all of them after `set_members`).
    pub fn changed(&mut self) -> bool {
        self.fill();
        let Some(last) = &self.last else {
            return true;
        };
        fn entries<'c>(
            blocks: impl Iterator<Item = &'c Chunk> + 'c,
        ) -> impl Iterator<Item = NonNull<SubConn>> + 'c {
            blocks.flat_map(|c| c.iter().map(|e| e.ptr()))
        }
        if self.reset || last.len() != self.blocks.len() {
            return !entries(self.current()).eq(entries(last.iter()));
        }
        let changed = self
            .dirty
            .iter()
            .filter_map(|b| Some((self.blocks[*b].as_ref()?, last.get(*b)?)))
            .any(|(now, then)| {
                !Arc::ptr_eq(now, then)
                    && !entries([now].into_iter()).eq(entries([then].into_iter()))
            });
        if !changed {
            // Back to the last build's own blocks: nothing stale is left,
            // and the next build reuses them.
            for &b in &self.dirty {
                self.blocks[b] = last.get(b).cloned();
            }
            self.dirty.clear();
        }
        changed
    }

    /// The rotation over the contributing members' subchannels, in member
    /// order, reusing the blocks that did not change; `None` when no member
    /// contributes. `changed` compares with this one from now on.
    pub fn build(&mut self) -> Option<Rotation> {
        self.fill();
        if self.pool.bloated(self.count) {
            // Subchannels listed once and no longer: shed them. The blocks
            // (reused or not) list exactly what `listed` does, all kept.
            self.pool
                .reset(self.listed.iter().flatten().map(|(sc, _)| sc));
        }
        let blocks: Vec<Chunk> = self.current().cloned().collect();
        let rotation = Rotation::new(self.pool.keep(), blocks.clone());
        // Empty blocks included: they line up with `blocks` for `changed`.
        self.last = Some(blocks);
        self.dirty.clear();
        self.reset = false;
        rotation
    }

    /// Forgets the last rotation built: `changed` is true until the next
    /// `build` (for a policy that published some other picker meanwhile).
    pub fn forget_built(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subconns(n: u64) -> Vec<Arc<SubConn>> {
        SubConn::numbered(n)
    }

    fn ids(r: &Rotation) -> Vec<u64> {
        r.entries().map(|e| e.id().0).collect()
    }

    /// A builder over one member per subchannel, chunks of `chunk` members.
    fn one_each(scs: &[Arc<SubConn>], chunk: usize) -> RotationBuilder {
        let mut b = RotationBuilder::with_chunk(chunk);
        b.set_members(scs.iter().map(std::slice::from_ref));
        b
    }

    #[test]
    fn lists_contributing_members_in_member_order() {
        let scs = subconns(5);
        let mut b = one_each(&scs, 2);
        assert!(b.build().is_none(), "nobody contributes yet");
        for i in [4, 0, 2] {
            b.list(i, Some(&scs[i])).unwrap();
        }
        assert_eq!(b.len(), 3);
        let r = b.build().unwrap();
        assert_eq!(ids(&r), [0, 2, 4]);
        // Chunks follow the member blocks; the empty middle one is left out.
        assert_eq!(r.chunks().len(), 3);
    }

    #[test]
    fn one_member_change_rebuilds_only_its_block() {
        let scs = subconns(6);
        let mut b = one_each(&scs, 2);
        for (i, sc) in scs.iter().enumerate() {
            b.list(i, Some(sc)).unwrap();
        }
        let first = b.build().unwrap();
        b.list(3, None).unwrap();
        assert!(b.changed());
        let second = b.build().unwrap();
        assert_eq!(ids(&second), [0, 1, 2, 4, 5]);
        let (a, c) = (first.chunks(), second.chunks());
        assert!(
            Arc::ptr_eq(&a[0], &c[0]) && Arc::ptr_eq(&a[2], &c[2]),
            "reused"
        );
        assert!(!Arc::ptr_eq(&a[1], &c[1]), "rebuilt");
    }

    #[test]
    fn changed_only_when_the_listed_entries_change() {
        let scs = subconns(4);
        let mut b = one_each(&scs, 2);
        assert!(b.changed(), "nothing built yet");
        b.list(1, Some(&scs[1])).unwrap();
        b.build().unwrap();
        assert!(!b.changed());
        // Out and back in before the next build: the same entries.
        b.list(1, None).unwrap();
        b.list(1, Some(&scs[1])).unwrap();
        assert!(!b.changed());
        // New members, same listing: nothing changed for pickers.
        b.set_members(scs.iter().map(std::slice::from_ref));
        b.list(1, Some(&scs[1])).unwrap();
        assert!(!b.changed());
        b.list(2, Some(&scs[2])).unwrap();
        assert!(b.changed());
        b.build().unwrap();
        b.forget_built();
        assert!(b.changed(), "forgotten");
    }

    #[test]
    fn pick_walks_uneven_chunks_in_rotation_order() {
        // Chunks of 2, 1 (one member dropped out) and 2 entries.
        let scs = subconns(6);
        let mut b = one_each(&scs, 2);
        for (i, sc) in scs.iter().enumerate() {
            b.list(i, (i != 2).then_some(sc)).unwrap();
        }
        let r = b.build().unwrap();
        assert_eq!(
            r.chunks().iter().map(|c| c.len()).collect::<Vec<_>>(),
            [2, 1, 2]
        );
        let mut local = crate::balancer::pick_local::PickLocal::new(1);
        let first = r.pick(&mut local).id().0;
        let order = [0, 1, 3, 4, 5];
        let at = order.iter().position(|i| *i == first).unwrap();
        for k in 1..15 {
            assert_eq!(r.pick(&mut local).id().0, order[(at + k) % 5]);
        }
    }

    #[test]
    fn a_member_given_new_subchannels_keeps_its_entry_only_if_still_its_own() {
        let scs = subconns(4);
        let mut b = RotationBuilder::with_chunk(2);
        b.set_members([&scs[..1], &scs[1..2]]);
        b.list(0, Some(&scs[0])).unwrap();
        b.list(1, Some(&scs[1])).unwrap();
        let first = b.build().unwrap();
        // Member 0 gets a second subchannel (its next address): nothing
        // picks see changes until it is listed.
        b.set_member(0, [&scs[0], &scs[2]]).unwrap();
        assert!(!b.changed());
        b.list(0, Some(&scs[2])).unwrap();
        assert!(b.changed());
        // Member 1's listed subchannel is no longer its own: unlisted.
        b.set_member(1, [&scs[3]]).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b.list(1, Some(&scs[1])), Err(NotAMember));
        assert_eq!(ids(&b.build().unwrap()), [2]);
        // Many replacements later (the runs packed again and again), each
        // member's subchannels are still exactly its last ones.
        for k in 0..5000 {
            b.set_member(k % 2, [&scs[k % 4], &scs[(k + 1) % 4]])
                .unwrap();
        }
        assert!(b.ids.len() <= 2 * b.live_ids + 1024);
        // Member 0 last got (2, 3) at k = 4998; member 1 (3, 0) at 4999.
        b.list(0, Some(&scs[2])).unwrap();
        assert_eq!(b.list(0, Some(&scs[0])), Err(NotAMember));
        b.list(1, Some(&scs[0])).unwrap();
        assert_eq!(b.list(1, Some(&scs[2])), Err(NotAMember));
        assert_eq!(b.set_member(2, []), Err(NotAMember));
        assert_eq!(ids(&b.build().unwrap()), [2, 0]);
        // The first rotation still picks what it listed.
        drop(b);
        drop(scs);
        let mut local = crate::balancer::pick_local::PickLocal::new(1);
        let mut picked: Vec<u64> = (0..2).map(|_| first.pick(&mut local).id().0).collect();
        picked.sort_unstable();
        assert_eq!(picked, [0, 1]);
    }

    #[test]
    fn a_member_picks_among_its_own_subchannels_only() {
        let scs = subconns(3);
        let mut b = RotationBuilder::new();
        b.set_members([&scs[..2], &scs[2..]]);
        b.list(0, Some(&scs[1])).unwrap();
        assert_eq!(b.list(0, Some(&scs[2])), Err(NotAMember));
        assert_eq!(b.list(2, None), Err(NotAMember));
        b.list(1, Some(&scs[2])).unwrap();
        let r = b.build().unwrap();
        assert_eq!(ids(&r), [1, 2]);
        // The rotation keeps its subchannels alive after the builder moved on.
        b.set_members(std::iter::empty::<&[Arc<SubConn>]>());
        drop(scs);
        let mut local = crate::balancer::pick_local::PickLocal::new(1);
        let picked: Vec<u64> = (0..4).map(|_| r.pick(&mut local).id().0).collect();
        assert_eq!(picked.iter().filter(|i| **i == 1).count(), 2);
    }
}
