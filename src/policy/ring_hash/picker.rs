//! ring_hash's picker (gRFC A61's walk, A76's header and random hash): a
//! snapshot of every ring member's state over the shared ring. A pick finds
//! its entry in O(1), skips endpoints in TRANSIENT_FAILURE through a table
//! precomputed when the picker is built, and hands READY endpoints' picks
//! out directly: no lock, no allocation, no shared write (an IDLE
//! endpoint's first pick asks its policy to connect it, once).

use crate::balancer::hash_ring::{Ring, RingTable};
use crate::balancer::picker::{DoneHooks, InlineKind, PickInfo, PickLocal, PickResult, Picker};
use crate::balancer::rotation::RotationEntry;
use crate::balancer::subconn::SubConn;
use crate::connectivity::ConnectivityState;
use crate::status::{Code, Status};
use std::sync::Arc;
use xxhash_rust::xxh64::{xxh64, Xxh64};

/// What a picker knows of one ring member.
#[derive(Clone)]
pub(crate) enum Slot {
    /// READY with one subchannel (pick_first always is): picked directly.
    Ready(Arc<SubConn>),
    /// Anything else: the child's own picker decides (queue, connect on
    /// first pick when IDLE, fail with its error in TRANSIENT_FAILURE).
    Child {
        state: ConnectivityState,
        picker: Arc<dyn Picker>,
    },
}

impl Slot {
    pub(crate) fn new(state: ConnectivityState, picker: &Arc<dyn Picker>) -> Slot {
        match picker.single() {
            Some(sc) if state == ConnectivityState::Ready => Slot::Ready(sc.clone()),
            _ => Slot::Child {
                state,
                picker: picker.clone(),
            },
        }
    }

    /// What a pick of this member hands out when it is READY (`None`:
    /// not READY, its child's picker decides).
    pub(crate) fn entry(&self) -> Option<RotationEntry> {
        match self {
            // SAFETY: every picker made with this entry keeps this slot
            // (and so the subchannel) too: `RingPicker::new`'s contract.
            Slot::Ready(sc) => Some(unsafe { RotationEntry::new(sc) }),
            Slot::Child { .. } => None,
        }
    }

    #[inline(always)]
    fn state(&self) -> ConnectivityState {
        match self {
            Slot::Ready(_) => ConnectivityState::Ready,
            Slot::Child { state, .. } => *state,
        }
    }

    #[inline(always)]
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        match self {
            Slot::Ready(sc) => PickResult::Complete {
                subconn: sc,
                done: DoneHooks::NONE,
            },
            Slot::Child { picker, .. } => picker.pick(info, local),
        }
    }
}

/// Picks over one ring with one snapshot of its members' states. Readers
/// pick READY members inline from its table (`InlineKind::Ring`) and call
/// `pick` for the rest.
pub(crate) struct RingPicker {
    /// The ring, A61's walk and the READY members' entries (pointing into
    /// `slots`' subchannels).
    table: RingTable,
    /// Per ring member (`Ring::owner`).
    slots: Box<[Slot]>,
    /// Some endpoint, on the ring or not, is CONNECTING (random-hash picks
    /// then start no connection: gRPC-Go's `hasEndpointInConnectingState`).
    connecting: bool,
    /// `requestHashHeader`.
    header: Option<Arc<str>>,
    /// The failure of a pick with no hash to use.
    no_hash: Status,
}

impl RingPicker {
    /// A picker over `ring` with its members' `slots` and `ready` entries
    /// (`Slot::entry` of each slot, in order: the picker keeps `slots`, and
    /// with them the subchannels the entries point to); `connecting`: some
    /// endpoint (a ring member or not) is CONNECTING.
    pub(crate) fn new(
        ring: Arc<Ring>,
        slots: Box<[Slot]>,
        ready: Box<[Option<RotationEntry>]>,
        connecting: bool,
        header: Option<Arc<str>>,
    ) -> RingPicker {
        debug_assert!(slots.len() == ready.len());
        let failing = |m: usize| {
            slots
                .get(m)
                .is_some_and(|s| s.state() == ConnectivityState::TransientFailure)
        };
        let table = RingTable::new(ring, failing, ready, header.is_some());
        RingPicker {
            table,
            slots,
            connecting,
            header,
            no_hash: Status::new(
                Code::Internal,
                "ring_hash: the pick has no request hash: pass one (PickInfo::hash, \
                 CallOptions::hash, sy_pick's request_hash) or configure requestHashHeader",
            ),
        }
    }

    #[inline(always)]
    fn ring(&self) -> &Ring {
        self.table.ring()
    }

    #[inline(always)]
    fn slot(&self, entry: usize) -> &Slot {
        &self.slots[self.ring().owner(entry)]
    }

    /// The request's hash: with a header configured, the header's
    /// value(s); for a pick carrying metadata without it, none (A76: a
    /// random hash, whatever hash the caller passed); for a pick carrying
    /// no metadata at all (a host's `sy_pick`, which cannot pass any), the
    /// caller's hash. With no header configured, the caller's hash. `None`:
    /// no hash.
    #[inline]
    fn request_hash(&self, info: &PickInfo<'_>) -> Option<u64> {
        match &self.header {
            Some(header) if !info.metadata.is_empty() => header_hash(info.metadata, header),
            _ => info.hash,
        }
    }

    /// A76's random-hash pick: the first READY endpoint from `first` on;
    /// meanwhile one IDLE endpoint is asked to connect unless one is
    /// already connecting; queue while a connection is under way.
    fn pick_random<'a>(
        &'a self,
        first: usize,
        info: &PickInfo<'_>,
        local: &mut PickLocal,
    ) -> PickResult<'a> {
        let mut requested = self.connecting;
        let mut i = first;
        let len = self.ring().len();
        for _ in 0..len {
            let slot = self.slot(i);
            match slot.state() {
                ConnectivityState::Ready => return slot.pick(info, local),
                ConnectivityState::Idle if !requested => {
                    requested = true;
                    // Its picker asks for the connection and queues.
                    let _ = slot.pick(info, local);
                }
                _ => {}
            }
            i += 1;
            if i == len {
                i = 0;
            }
        }
        if requested {
            PickResult::Queue
        } else {
            self.slot(first).pick(info, local)
        }
    }
}

impl Picker for RingPicker {
    #[inline]
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        let Some(hash) = self.request_hash(info) else {
            if self.header.is_none() {
                return PickResult::Fail(&self.no_hash);
            }
            let first = self.ring().find(local.random());
            return self.pick_random(first, info, local);
        };
        // A61: the first entry from there whose endpoint is not failing;
        // if every one is, the first entry's failure.
        self.slot(self.table.usable(hash)).pick(info, local)
    }

    fn inline(&self) -> Option<InlineKind<'_>> {
        Some(InlineKind::Ring(&self.table))
    }
}

/// XXH64 of the values of `header` in `metadata`, joined with "," when it
/// appears more than once; `None` when it does not appear (A76's pseudo
/// code: a header that is there is hashed, an empty value too, as gRPC-Go
/// and C-core do; only a missing one gets a random hash).
#[inline]
pub(crate) fn header_hash(metadata: &[(String, String)], header: &str) -> Option<u64> {
    let mut values = metadata
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(header))
        .map(|(_, v)| v.as_bytes());
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(xxh64(first, 0));
    };
    let mut h = Xxh64::new(0);
    h.update(first);
    for v in std::iter::once(second).chain(values) {
        h.update(b",");
        h.update(v);
    }
    Some(h.digest())
}
