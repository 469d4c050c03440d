//! The RPC-thread side of a channel: a `Reader` caches the published picker and
//! picks from it wait-free; `pick` adds queueing, wait-for-ready and deadlines.

use crate::balancer::hash_ring::RingTable;
use crate::balancer::in_flight::Slot as CounterSlot;
use crate::balancer::least_loaded::{LeastLoadedTable, LoadedEntry};
use crate::balancer::picker::{
    DoneHook, DoneHooks, DoneInfo, InlineKind, PickInfo, PickLocal, PickResult, Picker,
    QueuePicker, RawHooks, DONE_HOOKS,
};
use crate::balancer::ready_list::UniformTable;
use crate::balancer::rotation::{Chunk, RotationEntry};
use crate::balancer::stride::{Hand, ScheduleEntry, StrideSchedule};
use crate::balancer::subconn::SubConn;
use crate::channel::{Channel, ChannelShared, Table};
use crate::publish::{Cache, Hold, Slot};
use crate::service_config::{MethodConfig, MethodConfigs};
use crate::status::{Code, Status};
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Instant;

use crate::status::CLOSED_MESSAGE;

/// Why a pick on the event loop's thread did not wait.
pub(crate) const LOOP_WAIT: &str = "a pick cannot wait on the event loop thread (inside a \
     switchyard callback): the loop publishes the picker it would wait for; pick with \
     try_pick, or call unary_start";

/// Why a pick did not produce a subchannel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PickError {
    /// `try_pick` only: nothing usable yet; a later picker may have something.
    NoSubConnAvailable,
    /// The picker failed the pick (fail-fast RPCs fail with this status).
    Unavailable(Status),
    /// The picker dropped the call: fail now, never retry.
    Dropped(Status),
    /// The deadline passed while waiting; the message says what for.
    DeadlineExceeded(String),
    /// The channel is closed.
    Closed,
}

impl PickError {
    /// The gRPC status an RPC fails with.
    pub fn status(&self) -> Status {
        match self {
            PickError::NoSubConnAvailable => Status::unavailable("no subchannel is available yet"),
            PickError::Unavailable(s) | PickError::Dropped(s) => s.clone(),
            PickError::DeadlineExceeded(m) => Status::new(Code::DeadlineExceeded, m.as_str()),
            PickError::Closed => Status::new(Code::Cancelled, CLOSED_MESSAGE),
        }
    }

    /// The gRPC code of `status()`, without building the status (no
    /// allocation, no reference count touched).
    pub fn code(&self) -> Code {
        match self {
            PickError::NoSubConnAvailable => Code::Unavailable,
            PickError::Unavailable(s) | PickError::Dropped(s) => s.code(),
            PickError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            PickError::Closed => Code::Cancelled,
        }
    }
}

impl fmt::Display for PickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickError::NoSubConnAvailable => f.write_str("no subchannel available"),
            PickError::Unavailable(s) => write!(f, "unavailable: {}", s.message()),
            PickError::Dropped(s) => write!(f, "dropped: {s}"),
            PickError::DeadlineExceeded(m) => write!(f, "deadline exceeded: {m}"),
            PickError::Closed => f.write_str("channel closed"),
        }
    }
}

impl std::error::Error for PickError {}

/// How long and how patiently `pick` waits.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickOptions {
    /// `None`: wait as long as it takes.
    pub deadline: Option<Instant>,
    /// Queue through TRANSIENT_FAILURE instead of failing fast.
    pub wait_for_ready: bool,
}

/// One RPC thread's view of a channel. Not shared between threads (`&mut`), but
/// may move between them. Holds the last picker it saw until it picks again or
/// `refresh`es: an idle reader keeps old subchannels' user data alive.
///
/// Aligned to (a pair of) cache lines: every pick writes to it, and two
/// readers allocated one after the other must not share a line (or the
/// adjacent-line prefetch pair), or their threads would stall each other on
/// every pick.
#[repr(align(128))]
pub struct Reader {
    cache: Cache<Table>,
    /// The cached table's rotation, copied out so the hit path reads it from
    /// the reader instead of through the table; valid while the slot's
    /// generation is still `rotation_generation` (`NO_ROTATION` when the
    /// cached picker has none).
    rotation: Cursor,
    rotation_generation: u64,
    /// The generation `sync_rotation` last looked at, so that a picker
    /// without a rotation is not looked at again on every pick.
    synced_generation: u64,
    /// The cached table's inline table (`Picker::inline`: a stride
    /// schedule, a uniform, least-loaded or ring table), valid while the
    /// slot's generation is still `inline_generation` (`NO_ROTATION` when
    /// the cached picker has none): picked from inline, like the rotation.
    inline: InlinePtr,
    inline_generation: u64,
    /// A uniform inline table of one chunk (`random` over up to 256
    /// endpoints), drawn from directly: no dispatch on the table's kind,
    /// no table pointer to load first. Valid while the slot's generation
    /// is still `flat_generation` (`NO_ROTATION` when the cached table
    /// has none).
    flat: Flat,
    flat_generation: u64,
    /// The cached table's picker, past pickers that only forward to
    /// another (`Picker::forwards_to`): valid while the slot's generation
    /// is still `synced_generation`, so that a pick from any picker costs
    /// one generation check and one call.
    picker: PickerPtr,
    local: PickLocal,
    /// The cached stride schedule's next steps, taken ahead (named by
    /// `inline_generation` when taken): a weighted_round_robin pick at
    /// hand is a rotation's step.
    hand: Hand,
    /// The done hooks of the `PickRef` that borrows this reader, if any.
    ref_hooks: RefHooks,
    /// The pick kept in the reader (see `try_pick_kept`), if not finished.
    kept: Kept,
    shared: Arc<ChannelShared>,
    /// This reader's call counters, made on its first library call (never
    /// touched by picks; see `crate::snapshot`).
    counts: Option<crate::snapshot::ReaderCounts>,
    /// This reader's host-pick counters (empty on a channel with the
    /// library's own connections; see `crate::snapshot`).
    tally: crate::snapshot::ReaderTally,
    /// The service config's method settings as last seen, and the
    /// generation of the channel's `methods` slot they came with.
    methods: (u64, Arc<MethodConfigs>),
    /// Inline tables at least this long prefetch their upcoming draws
    /// (`crate::prefetch::large_table_len`).
    large_table: usize,
    /// The in-flight counter slot this reader's kept and borrowed
    /// least_request picks count in: its own (claimed from the channel
    /// when it first caches a least-loaded table, given back when it is
    /// dropped), or the shared one when all were taken.
    counter_slot: CounterSlot,
}

impl Channel {
    /// A reader for one RPC thread.
    pub fn reader(&self) -> Reader {
        Reader::new(self.shared().clone())
    }
}

impl Reader {
    pub(crate) fn new(shared: Arc<ChannelShared>) -> Reader {
        let local = PickLocal::new(shared.reader_seed());
        let reader = Reader {
            cache: Cache::new(shared.slot.clone()),
            rotation: Cursor::NONE,
            rotation_generation: NO_ROTATION,
            synced_generation: NO_ROTATION,
            inline: InlinePtr(Inline::Uniform(NonNull::dangling())),
            inline_generation: NO_ROTATION,
            flat: Flat::NONE,
            flat_generation: NO_ROTATION,
            picker: PickerPtr::placeholder(),
            local,
            hand: Hand::new(),
            ref_hooks: RefHooks {
                picker: NO_HOOKS,
                owed: Owed::Nothing,
            },
            methods: (
                shared.methods.generation(),
                Arc::clone(&shared.methods.load()),
            ),
            kept: Kept::NONE,
            tally: crate::snapshot::ReaderTally::new(&shared.call_stats),
            shared,
            counts: None,
            large_table: crate::prefetch::large_table_len(),
            counter_slot: CounterSlot::SHARED,
        };
        // Not synced here: the first pick goes the slow way, which tells
        // the loop the channel is in use. A thread that makes a reader
        // per RPC (a C or Python caller) would otherwise pick on the hit
        // path only, and the channel would go IDLE between its calls.
        reader
    }

    /// Picks from the current picker without waiting. Wait-free. The `Pick`
    /// may outlive later picks and be finished on any thread.
    #[inline(always)]
    pub fn try_pick(&mut self, info: &PickInfo<'_>) -> Result<Pick, PickError> {
        // The hit path builds its `Pick` from constants and registers; the
        // slow path's result (with hooks) never merges into it by value.
        let generation = self.hit_generation();
        // A rotation's step or a flat table's draw: no hooks either way.
        let direct = if generation == self.rotation_generation {
            Some(self.rotate())
        } else if generation == self.flat_generation {
            Some(self.draw_flat())
        } else {
            None
        };
        if let Some(listed) = direct {
            // SAFETY: see `Listed`.
            let listed = unsafe { listed.as_ref() };
            self.tally.started(listed.slot());
            return Ok(Pick {
                subconn: listed.ptr(),
                done: NO_HOOKS,
                hold: Some(self.cache.hold()),
                slot: listed.slot(),
                load_only: false,
            });
        }
        if generation == self.inline_generation {
            if let Some((listed, owed)) =
                self.pick_inline(|| info.hash, !info.metadata.is_empty(), CounterSlot::SHARED)
            {
                // SAFETY: see `Listed`.
                let listed = unsafe { listed.as_ref() };
                self.tally.started(listed.slot());
                return Ok(Pick {
                    subconn: listed.ptr(),
                    done: owed.hooks(),
                    hold: Some(self.cache.hold()),
                    slot: listed.slot(),
                    load_only: owed.load_only(),
                });
            }
        }
        self.try_pick_slow(info)
    }

    #[inline(never)]
    fn try_pick_slow(&mut self, info: &PickInfo<'_>) -> Result<Pick, PickError> {
        let (subconn, done, owed) = self.choose_slow(info, CounterSlot::SHARED)?;
        // SAFETY: chosen from the cached table, which the cache keeps alive.
        let slot = unsafe { subconn.as_ref() }.slot();
        self.tally.started(slot);
        Ok(Pick {
            subconn,
            done: owed.hooks_or(done),
            hold: Some(self.cache.hold()),
            slot,
            load_only: owed.load_only(),
        })
    }

    /// Like `try_pick`, for an RPC that ends before this reader picks again
    /// (a blocking RPC thread): the pick borrows the reader, which keeps the
    /// picker alive, so it costs no hold and no atomic operation at all.
    // Always inlined (the slow path is not), and the `PickRef` built once
    // from what each way of choosing found: a `PickRef` met from several
    // branches (or returned through memory) is stored word by word and
    // reloaded wider, a store-forwarding stall that tripled the cost of a
    // rotation pick.
    #[inline(always)]
    pub fn try_pick_ref(&mut self, info: &PickInfo<'_>) -> Result<PickRef<'_>, PickError> {
        let generation = self.hit_generation();
        let (subconn, slot, hooked) = if generation == self.rotation_generation {
            // SAFETY: see `Listed`.
            let listed = unsafe { self.rotate().as_ref() };
            (listed.ptr(), listed.slot(), false)
        } else if generation == self.flat_generation {
            // SAFETY: see `Listed`.
            let listed = unsafe { self.draw_flat().as_ref() };
            (listed.ptr(), listed.slot(), false)
        } else if let Some(e) = self.step_at_hand(generation) {
            // SAFETY: see `step_at_hand`.
            let e = unsafe { e.as_ref() };
            self.ref_hooks.owed = Owed::Load(e.hook_ptr());
            (e.listed().ptr(), e.listed().slot(), true)
        } else if let Some(e) = self.two_choices_at_hand(generation) {
            self.ref_hooks.owed = Owed::InFlight(e, self.counter_slot);
            // SAFETY: see `two_choices_at_hand`.
            let listed = unsafe { e.as_ref() }.listed();
            (listed.ptr(), listed.slot(), true)
        } else {
            // The other inline tables, and the slow path, out of line: the
            // four ways above need so few registers that a caller's loop
            // around them saves none.
            match self.choose_ref_inline(info, generation) {
                Some((subconn, slot_hooked)) => {
                    (subconn, slot_hooked as u32, slot_hooked >> 32 != 0)
                }
                None => self.choose_ref_slow(info)?,
            }
        };
        self.tally.opened(slot, true);
        // SAFETY: it points into the cached table, which cannot be retired
        // while `self` is mutably borrowed by the returned value; so do the
        // hooks, if any.
        Ok(PickRef {
            subconn: unsafe { subconn.as_ref() },
            done: hooked.then_some(&self.ref_hooks),
            tally: &self.tally,
            slot,
        })
    }

    /// `try_pick_ref` past its first four ways (see there): an inline
    /// table's pick at `generation`, as its subchannel and its slot with
    /// whether it has hooks in bit 32 (two words: returned in registers);
    /// `None` for the slow path.
    #[inline(never)]
    fn choose_ref_inline(
        &mut self,
        info: &PickInfo<'_>,
        generation: u64,
    ) -> Option<(NonNull<SubConn>, u64)> {
        if generation != self.inline_generation {
            return None;
        }
        let slot = self.counter_slot;
        let (listed, owed) = self.pick_inline(|| info.hash, !info.metadata.is_empty(), slot)?;
        // SAFETY: see `Listed`.
        let listed = unsafe { listed.as_ref() };
        let hooked = self.ref_hooks_for(NO_HOOKS, owed);
        Some((
            listed.ptr(),
            u64::from(listed.slot()) | u64::from(hooked) << 32,
        ))
    }

    /// `try_pick_ref` past the hit path: the subchannel, its slot, and
    /// whether the pick has hooks (they wait in the reader, which the
    /// `PickRef` borrows).
    #[inline(never)]
    fn choose_ref_slow(
        &mut self,
        info: &PickInfo<'_>,
    ) -> Result<(NonNull<SubConn>, u32, bool), PickError> {
        let (subconn, hooks, owed) = self.choose_slow(info, self.counter_slot)?;
        // SAFETY: chosen from the cached table, which the cache keeps alive.
        let slot = unsafe { subconn.as_ref() }.slot();
        Ok((subconn, slot, self.ref_hooks_for(hooks, owed)))
    }

    /// Keeps a `PickRef`'s hooks in the reader, for a pick with `hooks`
    /// (from a picker) or owing `owed` (an inline pick); false when it has
    /// none.
    #[inline(always)]
    fn ref_hooks_for(&mut self, hooks: RawHooks, owed: Owed) -> bool {
        if matches!(owed, Owed::Nothing) {
            if hooks[0].is_none() {
                return false;
            }
            // Only a picker's hooks are kept: what an inline pick owes
            // names its hooks (see `RefHooks::hooks`), three words fewer to
            // store on every weighted pick.
            self.ref_hooks.picker = hooks;
        }
        self.ref_hooks.owed = owed;
        true
    }

    /// `try_pick`'s hit path alone, for callers that want the shortest
    /// possible one (the C ABI): a pick when the cached picker is still the
    /// published one and readers pick from it inline (a rotation, or an
    /// inline table: see `Picker::inline`), for a pick with the request
    /// `hash` and no method or metadata, with its rotation entry (the
    /// pick's id, address and tag at hand); `None` means "call `try_pick`".
    #[inline(always)]
    pub fn try_pick_cached(&mut self, hash: Option<u64>) -> Option<(Pick, RotationEntry)> {
        self.try_pick_cached_with(|| hash)
    }

    /// `try_pick_cached`, with the request hash read only when the cached
    /// table needs one (a ring's): a rotation's pick costs nothing for it.
    #[inline(always)]
    pub fn try_pick_cached_with(
        &mut self,
        hash: impl FnOnce() -> Option<u64>,
    ) -> Option<(Pick, RotationEntry)> {
        let generation = self.hit_generation();
        let (listed, done, load_only) = if generation == self.rotation_generation {
            (self.rotate(), NO_HOOKS, false)
        } else if generation == self.flat_generation {
            (self.draw_flat(), NO_HOOKS, false)
        } else if generation == self.inline_generation {
            let (listed, owed) = self.pick_inline(hash, false, CounterSlot::SHARED)?;
            (listed, owed.hooks(), owed.load_only())
        } else {
            return None;
        };
        // SAFETY: see `Listed`.
        let listed = *unsafe { listed.as_ref() };
        self.tally.started(listed.slot());
        Some((
            Pick {
                subconn: listed.ptr(),
                done,
                hold: Some(self.cache.hold()),
                slot: listed.slot(),
                load_only,
            },
            listed,
        ))
    }

    /// `try_pick_kept`'s hit path alone (for the C ABI): a pick from the
    /// cached rotation or inline table (for a pick with the request `hash`
    /// and no method or metadata), kept in the reader, with its rotation
    /// entry (id, address, tag at hand). `None` means "call
    /// `try_pick_kept`": the cached picker is not current or not picked
    /// inline (or not for this hash), or the kept pick before this one
    /// still waits for its outcome (its hooks must hear of it first, and
    /// they may run code that the caller has to guard).
    #[inline(always)]
    pub fn try_pick_kept_cached(&mut self, hash: Option<u64>) -> Option<RotationEntry> {
        self.try_pick_kept_cached_with(|| hash)
    }

    /// `try_pick_kept_cached`, with the request hash read only when the
    /// cached table needs one (a ring's): a rotation's pick costs nothing
    /// for it.
    #[inline(always)]
    pub fn try_pick_kept_cached_with(
        &mut self,
        hash: impl FnOnce() -> Option<u64>,
    ) -> Option<RotationEntry> {
        if self.kept.reports_outcome() {
            return None;
        }
        if self.kept.subconn.is_some() {
            self.kept_abandoned();
        }
        let generation = self.generation();
        let (listed, owed) = if generation == self.rotation_generation {
            (self.rotate(), Owed::Nothing)
        } else if generation == self.flat_generation {
            (self.draw_flat(), Owed::Nothing)
        } else if generation == self.inline_generation {
            let slot = self.counter_slot;
            self.pick_inline(hash, false, slot)?
        } else {
            return None;
        };
        Some(self.keep(listed, owed))
    }

    /// `try_pick_kept_cached`'s direct cases alone: a pick from the cached
    /// rotation (round_robin, pick_first, outlier_detection over them), a
    /// draw from the cached flat uniform table (random over a few
    /// endpoints) or a step of the cached stride schedule
    /// (weighted_round_robin) already at hand (`Hand`), kept in the
    /// reader; `None` for anything else. It touches few registers and calls
    /// nothing, so a C entry point that tries it first (and only then the
    /// other inline tables) saves and restores none on these picks.
    /// A kept pick never finished is left to `try_pick_kept_cached` too
    /// (no call out of this path at all).
    #[inline(always)]
    pub fn try_pick_kept_direct(&mut self) -> Option<RotationEntry> {
        // A kept pick with hooks is a kept pick: one test covers both
        // (finished or dropped, a pick's hooks are gone first).
        debug_assert!(self.kept.subconn.is_some() || !self.kept.reports_outcome());
        if self.kept.subconn.is_some() {
            return None;
        }
        // Without a kept pick nothing is owed (finishing or dropping one
        // settles it first): only a schedule's pick has to say what it
        // owes, and no value of it is carried to the common tail below.
        debug_assert!(matches!(self.kept.owed, Owed::Nothing));
        let generation = self.generation();
        let listed = if generation == self.rotation_generation {
            self.rotate()
        } else if generation == self.flat_generation {
            self.draw_flat()
        } else if let Some(e) = self.step_at_hand(generation) {
            // A stride schedule's step, while the reader's hand has one
            // (taking the next batch is a call, left to
            // `try_pick_kept_cached`).
            // SAFETY: see `step_at_hand`.
            let e = unsafe { e.as_ref() };
            self.kept.owed = Owed::Load(e.hook_ptr());
            NonNull::from(e.listed())
        } else {
            let e = self.two_choices_at_hand(generation)?;
            self.kept.owed = Owed::InFlight(e, self.counter_slot);
            // SAFETY: see `two_choices_at_hand`.
            NonNull::from(unsafe { e.as_ref() }.listed())
        };
        Some(self.keep_owing_as_set(listed))
    }

    /// Keeps the pick of `listed` (owing `owed`) in the reader and counts it.
    #[inline(always)]
    fn keep(&mut self, listed: Listed, owed: Owed) -> RotationEntry {
        self.kept.owed = owed;
        self.keep_owing_as_set(listed)
    }

    /// `keep`, with what the pick owes already in `kept.owed`.
    #[inline(always)]
    fn keep_owing_as_set(&mut self, listed: Listed) -> RotationEntry {
        // SAFETY: see `Listed`.
        let listed = *unsafe { listed.as_ref() };
        self.tally.opened(listed.slot(), false);
        self.kept.subconn = Some(listed.ptr());
        self.kept.slot = listed.slot();
        listed
    }

    /// Picks like `try_pick_ref`, for a caller that cannot hold a borrow (a
    /// C ABI): the pick is kept in the reader, which keeps its picker alive
    /// with no hold and no atomic operation, until `finish_kept` or the
    /// reader's next pick. A pick kept before this one and not finished is
    /// reported to its hooks as dropped (CANCELLED) first. The returned
    /// subchannel (its address, its tag) stays valid until then as well.
    #[inline(never)]
    pub fn try_pick_kept(&mut self, info: &PickInfo<'_>) -> Result<&SubConn, PickError> {
        let subconn = self.pick_kept_raw(info)?;
        // SAFETY: it points into the cached table, which cannot be retired
        // while `self` is borrowed by the returned reference.
        Ok(unsafe { subconn.as_ref() })
    }

    /// `try_pick_kept`, waiting as `pick` does.
    pub fn pick_kept(
        &mut self,
        info: &PickInfo<'_>,
        options: &PickOptions,
    ) -> Result<&SubConn, PickError> {
        let subconn = self.pick_with(info, options, Reader::pick_kept_raw)?;
        // SAFETY: as in `try_pick_kept`.
        Ok(unsafe { subconn.as_ref() })
    }

    fn pick_kept_raw(&mut self, info: &PickInfo<'_>) -> Result<NonNull<SubConn>, PickError> {
        self.drop_kept();
        let generation = self.generation();
        let inline = if generation == self.rotation_generation {
            Some((self.rotate(), Owed::Nothing))
        } else if generation == self.inline_generation {
            let slot = self.counter_slot;
            self.pick_inline(|| info.hash, !info.metadata.is_empty(), slot)
        } else {
            None
        };
        let (subconn, slot, hooks, owed) = match inline {
            Some((listed, owed)) => {
                // SAFETY: see `Listed`.
                let listed = unsafe { listed.as_ref() };
                (listed.ptr(), listed.slot(), NO_HOOKS, owed)
            }
            None => {
                let (subconn, hooks, owed) = self.choose_slow(info, self.counter_slot)?;
                // SAFETY: chosen from the cached table, which the cache keeps alive.
                (subconn, unsafe { subconn.as_ref() }.slot(), hooks, owed)
            }
        };
        self.tally.opened(slot, false);
        self.kept = Kept {
            subconn: Some(subconn),
            slot,
            hooks,
            owed,
        };
        Ok(subconn)
    }

    /// Whether the kept pick has done hooks (its `finish_kept` will call
    /// them: code of the policy's runs).
    #[inline(always)]
    pub fn kept_reports_outcome(&self) -> bool {
        self.kept.reports_outcome()
    }

    /// Finishes the kept pick: reports the outcome to its hooks (outermost
    /// first), if it has any. False when there is no kept pick (never
    /// picked, already finished, or dropped by a later pick or `refresh`).
    #[inline(always)]
    pub fn finish_kept(&mut self, info: &DoneInfo<'_>) -> bool {
        let Some(subconn) = self.kept.subconn.take() else {
            return false;
        };
        // Taken with the pick: no kept pick, nothing owed, even if a hook
        // below panics (see `try_pick_kept_direct`).
        let owed = std::mem::replace(&mut self.kept.owed, Owed::Nothing);
        self.tally
            .closed(self.kept.slot, false, info.code == Code::Ok);
        if self.kept.reports_outcome() {
            let hooks = std::mem::replace(&mut self.kept.hooks, NO_HOOKS);
            report(hooks, subconn, info);
        }
        match owed {
            Owed::Nothing => {}
            Owed::Load(hook) => {
                if !info.load.is_empty() {
                    report(hooks_of(hook), subconn, info);
                }
            }
            // Directly: no call through a hook.
            Owed::InFlight(entry, slot) => release(entry, slot),
        }
        true
    }

    /// `finish_kept` for a done without load, when the kept pick has no
    /// hooks (`!kept_reports_outcome()`): counts it (`ok`: its code is OK)
    /// and settles what it owes. With hooks, it does not finish the pick
    /// and says false.
    #[inline(always)]
    pub fn finish_kept_quietly(&mut self, ok: bool) -> bool {
        if self.kept.reports_outcome() {
            return false;
        }
        let Some(_) = self.kept.subconn.take() else {
            return false;
        };
        self.tally.closed(self.kept.slot, false, ok);
        // A done without load: a schedule's load hook hears nothing.
        self.settle_owed();
        true
    }

    /// The kept pick before this one (without hooks), never finished: it
    /// counts as dropped, and what it owes is settled (its in-flight
    /// count: no code of the policy's runs).
    #[cold]
    #[inline(never)]
    fn kept_abandoned(&mut self) {
        self.kept.subconn = None;
        self.tally.closed(self.kept.slot, false, false);
        self.settle_owed();
    }

    /// Settles what an inline kept pick, dropped, owes: its in-flight
    /// counter's one (a dropped pick reports no load).
    #[inline(always)]
    fn settle_owed(&mut self) {
        if let Owed::InFlight(entry, slot) = std::mem::replace(&mut self.kept.owed, Owed::Nothing) {
            release(entry, slot);
        }
    }

    /// Reports a kept pick that was never finished as dropped, before the
    /// table its hooks point into may go.
    #[inline(always)]
    fn drop_kept(&mut self) {
        if self.kept.reports_outcome() {
            self.dropped_kept();
        }
        if self.kept.subconn.take().is_some() {
            // Abandoned: counted as gRPC counts a cancelled RPC.
            self.tally.closed(self.kept.slot, false, false);
        }
        self.settle_owed();
    }

    #[cold]
    #[inline(never)]
    fn dropped_kept(&mut self) {
        let hooks = std::mem::replace(&mut self.kept.hooks, NO_HOOKS);
        if let Some(subconn) = self.kept.subconn {
            report(hooks, subconn, &DROPPED);
        }
    }

    /// `generation()` for a pick's hit path, or one that matches no cached
    /// table while a kept pick is pending: any pick ends the kept one, and
    /// only the slow path drops it (its hooks may run policy code, which a
    /// C caller's hit path does not guard).
    #[inline(always)]
    fn hit_generation(&self) -> u64 {
        if self.kept.subconn.is_some() {
            KEPT_PENDING
        } else {
            self.generation()
        }
    }

    /// The generation last published: the rotation is current when it is
    /// `rotation_generation` (nothing published since the rotation was
    /// copied), the inline table when it is `inline_generation`. Loaded
    /// once per pick and compared with both (two atomic loads are not
    /// merged).
    #[inline(always)]
    fn generation(&self) -> u64 {
        self.cache.slot().generation()
    }

    /// A pick from the cached table's inline table (a least-loaded one's
    /// counted in `slot`), and what it owes its
    /// policy when it ends; `None` when this table leaves the pick to the
    /// picker (a ring's hash landing on a member that is not READY, or a
    /// hash that may come from `metadata`). Only while
    /// the inline table is current (or just synced).
    #[inline(always)]
    fn pick_inline(
        &mut self,
        hash: impl FnOnce() -> Option<u64>,
        has_metadata: bool,
        slot: CounterSlot,
    ) -> Option<(Listed, Owed)> {
        match self.inline.0 {
            Inline::Schedule(s) => {
                let e = match self.hand.next(self.inline_generation) {
                    // SAFETY: see `step_at_hand`.
                    Some(e) => unsafe { e.as_ref() },
                    // SAFETY: found in the picker of the cached table at
                    // the current generation, which the cache keeps alive.
                    None => unsafe { s.as_ref() }.fill(
                        &mut self.local,
                        &mut self.hand,
                        self.inline_generation,
                    ),
                };
                Some((NonNull::from(e.listed()), Owed::Load(e.hook_ptr())))
            }
            Inline::Uniform(u) => {
                // SAFETY: as above.
                let table = unsafe { u.as_ref() };
                if table.len() >= self.large_table {
                    // Over a table larger than the cache, a draw misses
                    // twice in a row: its entry, then (with the slot read
                    // there) the counters' row. Start both early: the
                    // entry `FAR` draws ahead, the row of the entry `NEAR`
                    // draws ahead (which was started `FAR - NEAR` ago).
                    crate::prefetch::prefetch(table.upcoming(&self.local, FAR));
                    self.tally
                        .prefetch(table.upcoming(&self.local, NEAR).slot());
                }
                Some((NonNull::from(table.draw(&mut self.local)), Owed::Nothing))
            }
            Inline::LeastLoaded(t) => {
                // SAFETY: as above.
                let table = unsafe { t.as_ref() };
                if table.len() >= self.large_table {
                    // As for `Uniform`, and each draw's counter (which the
                    // entry points to) with its row.
                    table.upcoming(&self.local, FAR, |e| crate::prefetch::prefetch(e));
                    let tally = &self.tally;
                    table.upcoming(&self.local, NEAR, |e| {
                        crate::prefetch::prefetch(e.in_flight());
                        tally.prefetch(e.listed().slot());
                    });
                }
                let e = table.pick(&mut self.local, slot);
                Some((
                    NonNull::from(e.listed()),
                    Owed::InFlight(NonNull::from(e), slot),
                ))
            }
            Inline::Ring(t) => {
                // SAFETY: as above.
                let table = unsafe { t.as_ref() };
                Some((
                    NonNull::from(table.ready(hash(), has_metadata)?),
                    Owed::Nothing,
                ))
            }
        }
    }

    /// The cached inline table, if the current table (at `generation`) is
    /// the one it was taken from.
    #[inline(always)]
    fn inline_at(&self, generation: u64) -> Option<Inline> {
        (generation == self.inline_generation).then_some(self.inline.0)
    }

    /// The next step of the cached stride schedule when the current table
    /// (at `generation`) is the one the reader's hand was taken from and
    /// the hand has a step left; `None`, having changed nothing, otherwise.
    /// The entry lives in the cached table's picker (as a `Listed`'s
    /// does): the hand is taken from the inline table at
    /// `inline_generation` (`pick_inline`), and the cache keeps the table
    /// at a generation as long as that generation is current (it moves
    /// only in `sync_rotation`, which forgets a hand of another).
    #[inline(always)]
    fn step_at_hand(&mut self, generation: u64) -> Option<NonNull<ScheduleEntry>> {
        self.hand.next(generation)
    }

    /// A least-loaded pick from the cached table at `generation` when it
    /// is a least-loaded table of two choices over one chunk (see
    /// `LeastLoadedTable::pick_two`); `None`, having changed nothing,
    /// otherwise. The entry lives in the cached table's picker (as a
    /// `Listed`'s does); the pick counts in its in-flight counter.
    #[inline(always)]
    fn two_choices_at_hand(&mut self, generation: u64) -> Option<NonNull<LoadedEntry>> {
        let Some(Inline::LeastLoaded(t)) = self.inline_at(generation) else {
            return None;
        };
        // SAFETY: as in `step_at_hand`.
        let e = unsafe { t.as_ref() }.pick_two_at_hand(&mut self.local, self.counter_slot)?;
        Some(NonNull::from(e))
    }

    /// The next entry of the cached table's rotation. Only while
    /// the rotation is current (see `generation`).
    #[inline(always)]
    fn rotate(&mut self) -> Listed {
        let r = &mut self.rotation;
        if r.offset >= r.len {
            // One chunk (a few endpoints, pick_first's one): back to its
            // start, with nothing to reload; that happens every few picks.
            if r.count == 1 {
                r.offset = 0;
            } else {
                r.next_chunk();
            }
        }
        // SAFETY: `offset < len` (just ensured; chunks are non-empty), and the
        // chunk lives in the picker of the cached table (the rotation was
        // copied from it at the current generation), which the cache keeps
        // alive.
        let listed = unsafe { r.entries.add(r.offset) };
        r.offset += 1;
        listed
    }

    /// An entry of the cached flat uniform table, drawn at random. Only
    /// while that table is current (see `flat_generation`).
    #[inline(always)]
    fn draw_flat(&mut self) -> Listed {
        let i = self.local.random_below(self.flat.len);
        // SAFETY: `random_below(len)` is below `len` (multiply-shift of 32
        // random bits), and the entries live in the picker of the cached
        // table, which the cache keeps alive.
        unsafe { self.flat.entries.add(i) }
    }

    /// The current picker's choice past the hit path, as pointers into the
    /// cached table.
    #[inline(always)]
    fn choose_slow(&mut self, info: &PickInfo<'_>, slot: CounterSlot) -> Result<Choice, PickError> {
        // The cache may move to another table below: a kept pick's hooks
        // must hear of it while theirs is still alive.
        self.drop_kept();
        if self.cache.slot().generation() != self.synced_generation {
            self.sync_rotation();
            // Once per generation per reader, never on the hit path: enough
            // for the loop to tell an idle channel from a busy one.
            self.shared.note_pick();
        }
        if self.rotation_generation != NO_ROTATION {
            // SAFETY: see `Listed`.
            return Ok((
                unsafe { self.rotate().as_ref() }.ptr(),
                NO_HOOKS,
                Owed::Nothing,
            ));
        }
        if self.inline_generation != NO_ROTATION {
            if let Some((listed, owed)) =
                self.pick_inline(|| info.hash, !info.metadata.is_empty(), slot)
            {
                // SAFETY: see `Listed`.
                return Ok((unsafe { listed.as_ref() }.ptr(), NO_HOOKS, owed));
            }
        }
        // SAFETY: synced just now or at this generation: the picker of the
        // cached table, which the cache keeps alive while `self` is borrowed.
        let picker = unsafe { self.picker.0.as_ref() };
        match picker.pick(info, &mut self.local) {
            PickResult::Complete { subconn, done } => {
                Ok((NonNull::from(subconn), done.raw(), Owed::Nothing))
            }
            other => Err(self.not_picked(other)),
        }
    }

    /// Why the cached picker gave no subchannel.
    #[cold]
    #[inline(never)]
    fn not_picked(&self, result: PickResult<'_>) -> PickError {
        // The slot's generation is still the synced one: no refresh here.
        if self.cache.cached().closed {
            return PickError::Closed;
        }
        match result {
            PickResult::Complete { .. } | PickResult::Queue => PickError::NoSubConnAvailable,
            PickResult::Fail(s) => PickError::Unavailable(from_picker(s)),
            PickResult::Drop(s) => PickError::Dropped(from_picker(s)),
        }
    }

    /// Moves to the latest table and copies its rotation, if it has one,
    /// starting at the entry the channel says (`rotation_start`).
    #[cold]
    fn sync_rotation(&mut self) {
        // The cache moves first, then the tally grows: the loop takes a
        // subchannel's slot before it publishes a table listing it, so the
        // slots read after the table's generation cover the table (read
        // before, a table published in between could list one they miss).
        // Growing gives the cached table a new epoch whose holds carry a
        // table of picks finished elsewhere that covers them.
        // One look at the cache: a second `current()` could move it to a
        // newer table and free the one the pointers below were taken from.
        let _ = self.cache.current();
        if let Some(elsewhere) = self.tally.grow() {
            self.cache.set_sidecar(elsewhere);
        }
        let table = self.cache.cached();
        let picker = PickerPtr::innermost(&*table.picker);
        // SAFETY: just made from the cached table's picker.
        let inner = unsafe { picker.0.as_ref() };
        let inline = inner.inline().map(|kind| match kind {
            InlineKind::Schedule(s) => Inline::Schedule(NonNull::from(s)),
            InlineKind::Uniform(u) => Inline::Uniform(NonNull::from(u)),
            InlineKind::LeastLoaded(t) => Inline::LeastLoaded(NonNull::from(t)),
            InlineKind::Ring(t) => Inline::Ring(NonNull::from(t)),
        });
        let rotation = inner.rotation().map(|r| {
            let chunks = r.chunks();
            // From the whole slice, not its first element: the cursor
            // indexes every chunk through this pointer.
            let start = r.locate(self.shared.rotation_start() % r.len());
            (NonNull::from(chunks).cast::<Chunk>(), chunks.len(), start)
        });
        let generation = self.cache.generation();
        if generation != self.synced_generation {
            // Its entries may be gone with the table moved from.
            self.hand.clear();
        }
        if matches!(inline, Some(Inline::LeastLoaded(_)))
            && self.counter_slot == CounterSlot::SHARED
        {
            // Once, unless all were taken (then at each new table).
            self.counter_slot = self.shared.counter_slots.claim();
        }
        self.picker = picker;
        self.synced_generation = generation;
        self.inline_generation = match inline {
            Some(inline) => {
                self.inline = InlinePtr(inline);
                generation
            }
            None => NO_ROTATION,
        };
        let flat = match inline {
            // SAFETY: just made from the cached table's picker.
            Some(Inline::Uniform(u)) => unsafe { u.as_ref() }.flat(),
            _ => None,
        };
        self.flat_generation = match flat {
            Some(entries) => {
                self.flat = Flat {
                    entries: NonNull::from(entries).cast(),
                    len: entries.len(),
                };
                generation
            }
            None => {
                self.flat = Flat::NONE;
                NO_ROTATION
            }
        };
        self.rotation_generation = match rotation {
            Some((chunks, count, (chunk, offset))) => {
                let r = &mut self.rotation;
                (r.chunks, r.count) = (chunks, count);
                r.chunk = chunk;
                r.enter_chunk();
                r.offset = offset;
                generation
            }
            None => {
                self.rotation = Cursor::NONE;
                NO_ROTATION
            }
        };
    }

    /// Picks, waiting for new pickers while the current one queues (or fails,
    /// for wait-for-ready), until `deadline`. Each picker is tried at most once.
    /// On the event loop's thread (inside a callback) it never waits: a pick
    /// that would is dropped with INTERNAL (the loop it would wait for is
    /// this thread).
    pub fn pick(&mut self, info: &PickInfo<'_>, options: &PickOptions) -> Result<Pick, PickError> {
        self.pick_with(info, options, Reader::try_pick)
    }

    /// `pick`'s loop around one kind of try.
    fn pick_with<T>(
        &mut self,
        info: &PickInfo<'_>,
        options: &PickOptions,
        mut try_pick: impl FnMut(&mut Reader, &PickInfo<'_>) -> Result<T, PickError>,
    ) -> Result<T, PickError> {
        // Before `current` may move the cache (see `choose_slow`).
        self.drop_kept();
        let mut waiting = PickWait::default();
        let mut tried: Option<u64> = None;
        loop {
            let seq = self.cache.current().seq;
            if tried != Some(seq) {
                tried = Some(seq);
                match try_pick(self, info) {
                    Ok(p) => return Ok(p),
                    Err(e) => waiting.failed(e, options.wait_for_ready)?,
                }
            }
            if self.on_loop_thread() {
                // Only the loop publishes the picker this would wait for.
                return Err(PickError::Dropped(Status::new(Code::Internal, LOOP_WAIT)));
            }
            if !self.wait_for_next_picker(options.deadline) {
                return Err(waiting.deadline_exceeded());
            }
        }
    }

    /// Moves to the latest picker now, letting go of the old one (and what only
    /// it kept alive).
    pub fn refresh(&mut self) {
        self.drop_kept();
        self.cache.refresh();
        // The refresh may have moved to a table published a moment before its
        // generation: the copied rotation must follow the table, not wait
        // for the generation.
        self.sync_rotation();
    }

    /// Finishes a pick this reader made: reports the outcome to the policy
    /// (like `Pick::done`) and, when the reader still caches the pick's
    /// picker, takes the pick's hold back without an atomic operation.
    #[inline(always)]
    pub fn finish(&mut self, pick: Pick, info: &DoneInfo<'_>) {
        // Taken apart by value: a `Pick` whose address reached the cold hook
        // call would be copied through the stack on every finish.
        let ((subconn, done), hold, slot, load_only) = pick.into_parts();
        if done[0].is_some() && hooks_hear(load_only, info) {
            report(done, subconn, info);
        }
        let ok = info.code == Code::Ok;
        if let Some(hold) = hold {
            match self.cache.give_back(hold) {
                Ok(()) => {
                    // Made by this reader (its hold was lent by this cache).
                    self.tally.finished(slot, ok);
                }
                Err(hold) => {
                    finished_elsewhere(&hold, slot, ok);
                    drop(hold);
                }
            }
        }
    }

    /// Blocks until a picker newer than the cached one is published (true) or
    /// `deadline` passes (false).
    pub(crate) fn wait_for_next_picker(&mut self, deadline: Option<Instant>) -> bool {
        let seen = self.cache.generation();
        self.waiting(|slot| slot.wait_for_change(seen, deadline))
    }

    /// Runs `wait` (on the picker slot) counted as a call waiting: it keeps
    /// the channel in use however long it takes (see `channel/idle.rs`).
    fn waiting<T>(&self, wait: impl FnOnce(&Slot<Table>) -> T) -> T {
        let waiting = &self.shared.waiting;
        waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = wait(self.cache.slot());
        waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        out
    }

    /// This reader's call counters (library calls only, never picks).
    pub(crate) fn call_counts(&mut self) -> &crate::snapshot::ReaderCounts {
        let stats = &self.shared.call_stats;
        self.counts
            .get_or_insert_with(|| crate::snapshot::ReaderCounts::new(stats))
    }

    pub(crate) fn is_managed(&self) -> bool {
        self.shared.managed
    }

    /// Whether this thread is the channel's event loop (a callback of the
    /// channel's, or of another channel on its runtime): nothing there may
    /// wait for the loop.
    pub(crate) fn on_loop_thread(&self) -> bool {
        self.shared.handle.on_loop_thread()
    }

    /// `ChannelOptions::disable_retry`.
    pub(crate) fn retry_disabled(&self) -> bool {
        self.shared.retry_disabled
    }

    /// The service config's settings for calls to `method`
    /// ("/pkg.Service/Method"): the most specific `methodConfig` entry that
    /// names it (the method, else its service, else the default), or
    /// `None`. Wait-free: one atomic load when the config has not changed
    /// since this reader last looked, no allocation.
    pub fn method_config(&mut self, method: &str) -> Option<&MethodConfig> {
        self.method_configs().lookup(method).map(|c| &**c)
    }

    /// Which service config's method table is in force (it moves on with
    /// each new config).
    pub(crate) fn methods_generation(&self) -> u64 {
        self.shared.methods.generation()
    }

    /// The service config's method table (and retry tokens), as
    /// `method_config` finds it.
    pub(crate) fn method_configs(&mut self) -> &MethodConfigs {
        let slot = &self.shared.methods;
        let generation = slot.generation();
        if generation != self.methods.0 {
            // A load returns this generation's table or a later one.
            self.methods = (generation, Arc::clone(&slot.load()));
        }
        &self.methods.1
    }

    /// Waits until `until` (a retry's backoff, a hedge's turn), or less if
    /// the channel closes meanwhile. A call waiting so keeps the channel in
    /// use (idleness), as a queued pick does.
    pub(crate) fn pause_until(&mut self, until: Instant) {
        let shared = &self.shared;
        self.waiting(|slot| {
            // Checked under the signal's mutex, and the closed table is
            // published (notifying) after both are set: a close is never
            // slept through (a generation read after the check could
            // already be the closed table's). The flag: `Channel::close`;
            // SHUTDOWN: every way a channel ends, a dropped runtime's too.
            slot.signal().wait_until(
                || {
                    shared.closed.load(std::sync::atomic::Ordering::Acquire)
                        || shared.state() == crate::connectivity::ConnectivityState::Shutdown
                },
                Some(until),
            );
        });
    }

    /// The channel's state as last published.
    pub fn channel_state(&self) -> crate::connectivity::ConnectivityState {
        self.shared.state()
    }
}

impl Drop for Reader {
    /// A kept pick not finished is reported as dropped, while its table
    /// is still alive.
    fn drop(&mut self) {
        self.drop_kept();
        // Nothing is counted in it any more: the kept pick is settled, and
        // a borrowed one borrows the reader.
        self.shared.counter_slots.release(self.counter_slot);
    }
}

type Chosen = (NonNull<SubConn>, RawHooks);

/// What `choose_slow` chose: the subchannel, its done hooks (a picker's)
/// and what it owes (an inline pick's).
type Choice = (NonNull<SubConn>, RawHooks, Owed);

/// What an inline pick owes its policy when it ends.
#[derive(Clone, Copy)]
enum Owed {
    Nothing,
    /// A schedule's load hook (`StrideSchedule`): told only a done that
    /// carries load, so the pick's done costs nothing without.
    Load(NonNull<dyn DoneHook>),
    /// One off the entry's in-flight count (`LeastLoadedTable`), in the
    /// slot it was counted in, done or dropped: directly for a kept or
    /// borrowed pick (the reader's own slot, or the shared one), through
    /// the entry as a done hook for a pick that leaves the reader (always
    /// the shared slot).
    InFlight(NonNull<LoadedEntry>, CounterSlot),
}

impl Owed {
    /// The done hooks of a pick that leaves the reader owing this.
    #[inline(always)]
    fn hooks(self) -> RawHooks {
        match self {
            Owed::Nothing => NO_HOOKS,
            Owed::Load(hook) => hooks_of(hook),
            Owed::InFlight(entry, slot) => {
                // Only a pick counted in the shared slot may leave the
                // reader (its done may run on any thread).
                debug_assert_eq!(slot, CounterSlot::SHARED);
                hooks_of(entry)
            }
        }
    }

    /// Whether the hooks this owes want only dones that carry load (a
    /// schedule's load hook).
    #[inline(always)]
    fn load_only(&self) -> bool {
        matches!(self, Owed::Load(_))
    }

    /// `hooks()`, or a picker's `hooks` when this owes nothing.
    #[inline(always)]
    fn hooks_or(self, hooks: RawHooks) -> RawHooks {
        match self {
            Owed::Nothing => hooks,
            owed => owed.hooks(),
        }
    }
}

/// Takes a finished or dropped pick's one off its entry's count, in the
/// `slot` it was counted in (the reader's own, or the shared one: this
/// runs only through the reader that picked, so a reader's slot still has
/// one writer).
#[inline(always)]
fn release(entry: NonNull<LoadedEntry>, slot: CounterSlot) {
    // SAFETY: an entry of the cached table's least-loaded table, which the
    // cache keeps alive while the reader keeps the pick (a kept pick is
    // settled before the cache moves: see `drop_kept`).
    unsafe { entry.as_ref() }.in_flight().sub(slot);
}

/// A pointer to the picker of the table a reader caches (see
/// `Reader::picker`).
struct PickerPtr(NonNull<dyn Picker>);

// SAFETY: it points to a picker (`Send + Sync`) that the reader's cache keeps
// alive, and it is used only through that reader: moving the reader moves both.
unsafe impl Send for PickerPtr {}

/// What a reader points to before its first sync: a picker that lives forever.
static PLACEHOLDER_PICKER: QueuePicker = QueuePicker;

/// How many forwarding pickers a reader looks through (a parent of a parent
/// of ...; any deeper one is simply called).
const MAX_FORWARDS: usize = 8;

impl PickerPtr {
    fn placeholder() -> PickerPtr {
        PickerPtr(NonNull::from(&PLACEHOLDER_PICKER as &dyn Picker))
    }

    /// The picker that does the work behind `picker`'s forwarders.
    fn innermost(mut picker: &dyn Picker) -> PickerPtr {
        for _ in 0..MAX_FORWARDS {
            match picker.forwards_to() {
                Some(inner) => picker = inner,
                None => break,
            }
        }
        PickerPtr(NonNull::from(picker))
    }
}

/// The pick a reader keeps for a caller that cannot borrow it (see
/// `Reader::try_pick_kept`).
struct Kept {
    /// `None` when there is no kept pick (or it is finished).
    subconn: Option<NonNull<SubConn>>,
    /// Its subchannel's slot (host-pick counters).
    slot: u32,
    /// The kept pick's done hooks (`NO_HOOKS` for none or once reported).
    hooks: RawHooks,
    /// What an inline kept pick owes (`Owed::Nothing` once settled).
    owed: Owed,
}

impl Kept {
    const NONE: Kept = Kept {
        subconn: None,
        slot: 0,
        hooks: NO_HOOKS,
        owed: Owed::Nothing,
    };

    #[inline(always)]
    fn reports_outcome(&self) -> bool {
        self.hooks[0].is_some()
    }
}

// SAFETY: as `RefHooks`: the pointers target the picker of the table the
// reader's cache keeps alive (Send + Sync data), and are used only through
// the reader; moving the reader moves both.
unsafe impl Send for Kept {}

/// A pick without done hooks (every rotation pick).
const NO_HOOKS: RawHooks = [None; DONE_HOOKS];

/// A chain of one hook.
#[inline(always)]
fn hooks_of(hook: NonNull<dyn DoneHook>) -> RawHooks {
    let mut hooks = NO_HOOKS;
    hooks[0] = Some(hook);
    hooks
}

/// What a reader picks from inline besides rotations (see `Reader::inline`).
#[derive(Clone, Copy)]
enum Inline {
    Schedule(NonNull<StrideSchedule>),
    Uniform(NonNull<UniformTable>),
    LeastLoaded(NonNull<LeastLoadedTable>),
    Ring(NonNull<RingTable>),
}

/// An `Inline` a reader keeps.
struct InlinePtr(Inline);

// SAFETY: as `PickerPtr`: it points into a picker (`Send + Sync`) that the
// reader's cache keeps alive, and is used only through that reader.
unsafe impl Send for InlinePtr {}

/// What a pick that waits for pickers makes of each failed try: gRPC's
/// queued-pick rules, shared by blocking picks and the loop's started calls.
#[derive(Default)]
pub(crate) struct PickWait {
    /// The latest error a wait-for-ready pick waited through.
    last_error: Option<Status>,
}

impl PickWait {
    /// `Ok` to wait for the next picker (the picker queues, or fails and
    /// the pick is wait-for-ready); `Err` ends the pick with that error.
    pub(crate) fn failed(&mut self, e: PickError, wait_for_ready: bool) -> Result<(), PickError> {
        match e {
            PickError::NoSubConnAvailable => Ok(()),
            PickError::Unavailable(s) if wait_for_ready => {
                self.last_error = Some(s);
                Ok(())
            }
            e => Err(e),
        }
    }

    /// The error of a pick whose deadline passed while it waited.
    pub(crate) fn deadline_exceeded(&self) -> PickError {
        PickError::DeadlineExceeded(match &self.last_error {
            Some(s) => format!("latest balancer error: {}", s.message()),
            None => "waiting for connections to become ready".to_string(),
        })
    }
}

/// Where a reader is in a rotation: its chunks, the chunk it is in, and its
/// position there.
struct Cursor {
    /// The rotation's `count` chunks, derived from the whole slice (so that
    /// indexing past the first stays inside what the pointer may reach).
    chunks: NonNull<Chunk>,
    count: usize,
    chunk: usize,
    /// The current chunk's entries.
    entries: NonNull<RotationEntry>,
    len: usize,
    offset: usize,
}

// SAFETY: a cursor lives only inside a `Reader` and points into the picker of
// the table that reader's cache keeps alive (a `Cache<Table>` is `Send`);
// moving the reader moves both together.
unsafe impl Send for Cursor {}

impl Cursor {
    const NONE: Cursor = Cursor {
        chunks: NonNull::dangling(),
        count: 0,
        chunk: 0,
        entries: NonNull::dangling(),
        len: 0,
        offset: 0,
    };

    /// On to the next chunk (the first after the last).
    #[inline]
    fn next_chunk(&mut self) {
        self.chunk = if self.chunk + 1 >= self.count {
            0
        } else {
            self.chunk + 1
        };
        self.enter_chunk();
    }

    /// Loads chunk `self.chunk` (< count) and starts at its first entry.
    #[inline]
    fn enter_chunk(&mut self) {
        // SAFETY: `chunk < count`, and the chunks live in the cached table's
        // picker (see `Reader::rotate`).
        let entries: &[RotationEntry] = unsafe { &*self.chunks.as_ptr().add(self.chunk) };
        self.entries = NonNull::from(entries).cast();
        self.len = entries.len();
        self.offset = 0;
    }
}

/// The entry a hit-path pick chose, where it lies in the cached table's
/// picker (a rotation chunk or an inline table): one pointer, so that the
/// branches of a pick (rotation, the four inline tables) meet in a
/// register. Passed by value, the 40-byte entry met on the stack, stored
/// in pieces and reloaded whole: a store-forwarding stall on every pick.
/// Dereferenced only while the cache still holds that table (until the
/// reader's next pick or sync), which keeps the entry alive.
type Listed = NonNull<RotationEntry>;

/// A flat uniform table's entries (see `Reader::flat`).
struct Flat {
    entries: NonNull<RotationEntry>,
    len: usize,
}

impl Flat {
    const NONE: Flat = Flat {
        entries: NonNull::dangling(),
        len: 0,
    };
}

// SAFETY: as `Cursor`'s: it points into the picker of the table its
// reader's cache keeps alive, and moves with the reader.
unsafe impl Send for Flat {}

/// `rotation_generation` when the cached picker has no rotation (a slot's
/// generation never gets there).
const NO_ROTATION: u64 = u64::MAX;
/// `hit_generation` while a kept pick is pending: never a cached table's
/// (generations count up from 0; `NO_ROTATION` is none).
const KEPT_PENDING: u64 = u64::MAX - 1;

/// A `PickRef`'s done hooks, kept in its reader.
struct RefHooks {
    /// A picker's hooks; left from an earlier pick (and not read) when
    /// `owed` is not `Nothing`.
    picker: RawHooks,
    /// What an inline pick owes: a schedule's load hook (told only a done
    /// that carries load) or an in-flight count (taken off directly).
    owed: Owed,
}

impl RefHooks {
    /// The hooks to tell: what an inline pick owes, else the picker's.
    #[inline(always)]
    fn hooks(&self) -> RawHooks {
        self.owed.hooks_or(self.picker)
    }
}

// SAFETY: the hooks point into the picker of the table the reader's cache
// keeps alive (they are `Send + Sync`), and are read only through the
// `PickRef` that borrows the reader; moving the reader moves both.
unsafe impl Send for RefHooks {}

/// A pick that borrows its reader (see `Reader::try_pick_ref`).
// Every field is read-only, and nothing takes the pick's address (`done`
// forgets it, the cold report gets its fields by value): so the pick stays
// in registers. A field taken out through `&mut self` put it in memory,
// written word by word and moved wider, a store-forwarding stall that cost
// a rotation pick 4x (round_robin 3.2 -> 18 ns).
pub struct PickRef<'r> {
    subconn: &'r SubConn,
    /// `None` when the pick has no done hook (every rotation pick).
    done: Option<&'r RefHooks>,
    /// The reader's host-pick counters.
    tally: &'r crate::snapshot::ReaderTally,
    /// The subchannel's slot there, at hand (reading it from the
    /// subchannel is a cache miss over many endpoints).
    slot: u32,
}

impl<'r> PickRef<'r> {
    /// The picked subchannel: send the RPC on its transport.
    pub fn subconn(&self) -> &'r SubConn {
        self.subconn
    }

    /// Reports the RPC's outcome to the policy: every done hook the pick
    /// carries, outermost first (see `DoneHooks`).
    // Always inlined: a pick without hooks (every rotation pick) only
    // counts its outcome, and calls nothing.
    #[inline(always)]
    pub fn done(self, info: &DoneInfo<'_>) {
        // Ended here: the drop's report must not run too.
        let this = std::mem::ManuallyDrop::new(self);
        this.tally.closed(this.slot, true, info.code == Code::Ok);
        match this.done {
            None => {}
            Some(hooks) => match hooks.owed {
                Owed::InFlight(entry, slot) => release(entry, slot),
                Owed::Load(_) if info.load.is_empty() => {}
                _ => report_ref(hooks, this.subconn, info),
            },
        }
    }
}

/// Tells a borrowed pick's hooks its outcome (out of line: most picks
/// have none, or only an in-flight count).
#[cold]
#[inline(never)]
fn report_ref(hooks: &RefHooks, subconn: &SubConn, info: &DoneInfo<'_>) {
    // SAFETY: the hooks point into the table the borrowed reader keeps
    // alive while the pick borrows it.
    unsafe { DoneHooks::from_raw(hooks.hooks()) }.report(subconn, info);
}

impl Drop for PickRef<'_> {
    /// Like `Pick`: a pick dropped without `done` reports so (not to a
    /// load hook: a dropped pick reports no load).
    #[inline]
    fn drop(&mut self) {
        self.tally.closed(self.slot, true, false);
        if let Some(hooks) = self.done {
            match hooks.owed {
                Owed::InFlight(entry, slot) => release(entry, slot),
                Owed::Nothing => report_ref(hooks, self.subconn, &DROPPED),
                _ => {}
            }
        }
    }
}

/// What the hooks of a pick dropped without `done` hear: CANCELLED, as
/// gRPC reports an RPC its caller abandoned.
const DROPPED: DoneInfo<'static> = DoneInfo {
    error: Some("pick dropped without done"),
    code: Code::Cancelled,
    latency: std::time::Duration::ZERO,
    load: &[],
};

/// How many draws ahead an entry is prefetched, and its counters' row.
const FAR: u64 = 8;
const NEAR: u64 = 4;

/// A successful pick. Keeps its subchannel (and the picker that chose it) alive
/// until `done` or drop. May be finished on any thread.
pub struct Pick {
    subconn: NonNull<SubConn>,
    /// The chain of done hooks, innermost first, `None` after the last.
    done: RawHooks,
    /// Keeps the table this pick came from alive; released on drop (or given
    /// back to its reader by `Reader::finish`).
    hold: Option<Hold<Table>>,
    /// The subchannel's slot in its reader's counters (`SubConn::slot`),
    /// carried so that a done reads no subchannel: over many endpoints
    /// that read is a cache miss.
    slot: u32,
    /// The hooks are a schedule's load hook, which hears only dones that
    /// carry load: a done without load (or a drop) skips calling it.
    load_only: bool,
}

// SAFETY: the pointers target data owned by the held table (immutable, Send +
// Sync); `hold` keeps that table alive wherever the Pick goes.
unsafe impl Send for Pick {}
// SAFETY: shared access only reads the same immutable data.
unsafe impl Sync for Pick {}

impl Pick {
    /// The picked subchannel: send the RPC on its transport.
    pub fn subconn(&self) -> &SubConn {
        // SAFETY: `hold` keeps the table, and the picker that owns this
        // subchannel, alive for as long as `self`.
        unsafe { self.subconn.as_ref() }
    }

    /// Whether the policy wants this pick's outcome (it has a done hook).
    /// When not, dropping the pick is all `done` would do.
    #[inline(always)]
    pub fn reports_outcome(&self) -> bool {
        self.done[0].is_some()
    }

    /// Whether a done without load has hooks to call (`reports_outcome`,
    /// less a load hook that hears only dones with load). For a C ABI that
    /// takes the quick way when not.
    #[doc(hidden)]
    #[inline(always)]
    pub fn wants_outcome_without_load(&self) -> bool {
        self.reports_outcome() && !self.load_only
    }

    /// How many done hooks the pick carries (see `DoneHooks`).
    pub fn done_hooks(&self) -> usize {
        self.done.iter().take_while(|h| h.is_some()).count()
    }

    /// Reports the RPC's outcome to the policy (every done hook, outermost
    /// first, once) and releases the pick.
    #[inline]
    pub fn done(mut self, info: &DoneInfo<'_>) {
        if self.reports_outcome() && hooks_hear(self.load_only, info) {
            self.finish(info);
        }
        // Away from its reader (any thread).
        if let Some(hold) = self.hold.take() {
            finished_elsewhere(&hold, self.slot, info.code == Code::Ok);
        }
        // Counted and released: nothing is left for the destructor.
        std::mem::forget(self);
    }

    #[cold]
    fn finish(&mut self, info: &DoneInfo<'_>) {
        let hooks = std::mem::replace(&mut self.done, NO_HOOKS);
        report(hooks, self.subconn, info);
    }

    /// The pick's parts, its destructor disarmed.
    #[inline(always)]
    fn into_parts(mut self) -> (Chosen, Option<Hold<Table>>, u32, bool) {
        let done = std::mem::replace(&mut self.done, NO_HOOKS);
        let parts = (
            (self.subconn, done),
            self.hold.take(),
            self.slot,
            self.load_only,
        );
        // Both fields are taken: nothing is left for Pick's destructor.
        std::mem::forget(self);
        parts
    }
}

/// Counts a pick finished away from its reader, in the picking reader's
/// table of such picks, which its hold carries. That table is as large as
/// the reader's tally was when the pick was made (both grow together, and
/// a growth starts a new epoch), so a pick whose start was not counted (a
/// slot beyond it) has its end not counted either. A reader that counts
/// nothing (a channel with the library's connections, or told not to
/// count) hangs no table: nothing to do.
#[inline]
fn finished_elsewhere(hold: &Hold<Table>, slot: u32, ok: bool) {
    let table = hold.sidecar().cast::<crate::snapshot::Elsewhere>();
    // SAFETY: a reader's cache is the only one that sets sidecars on the
    // epochs of `Table`s, always to an `Elsewhere`, which the hold's epoch
    // keeps alive.
    let Some(table) = (unsafe { table.as_ref() }) else {
        return;
    };
    table.finished(slot, ok);
}

/// Whether a pick's hooks hear of `info`: always, unless they are a
/// schedule's load hook (`load_only`) and the done carries no load.
#[inline(always)]
fn hooks_hear(load_only: bool, info: &DoneInfo<'_>) -> bool {
    !(load_only && info.load.is_empty())
}

/// Hands an outcome to a pick's done hooks, outermost first. Only while the
/// pick's hold is still alive.
#[cold]
fn report(hooks: RawHooks, subconn: NonNull<SubConn>, info: &DoneInfo<'_>) {
    // SAFETY: the hooks and the subchannel live in the picker the pick's
    // hold keeps alive, and the caller still has that hold.
    unsafe { DoneHooks::from_raw(hooks).report(subconn.as_ref(), info) }
}

impl Drop for Pick {
    /// A pick dropped without `done` reports a cancelled outcome, so policies
    /// that count in-flight calls stay balanced.
    #[inline]
    fn drop(&mut self) {
        // Inlined so that a pick without a hook costs only its hold's release
        // (and its count).
        // A dropped pick reports no load: a load hook hears nothing.
        if self.wants_outcome_without_load() {
            self.dropped_without_done();
        }
        if let Some(hold) = &self.hold {
            finished_elsewhere(hold, self.slot, false);
        }
    }
}

impl Pick {
    #[cold]
    fn dropped_without_done(&mut self) {
        self.finish(&DROPPED);
    }
}

/// Words in a `RawPick`: the subchannel, two per done hook, the slot, the
/// hold.
pub const RAW_PICK_WORDS: usize = 3 + 2 * DONE_HOOKS;

/// The word of a `RawPick` that holds the subchannel's slot.
const RAW_PICK_SLOT_WORD: usize = RAW_PICK_WORDS - 2;

/// The word of a `RawPick` that holds the hold: never null in a live pick.
pub const RAW_PICK_HOLD_WORD: usize = RAW_PICK_WORDS - 1;

/// A `Pick` as `RAW_PICK_WORDS` pointer-sized words (the subchannel, each
/// done hook's two words, the subchannel's slot, the hold), for a C ABI
/// that keeps it in the caller's memory between pick and done. The last
/// word (the hold) is never null in a live pick.
///
/// Every word is a pointer: what a pick keeps (subchannel, done hooks,
/// hold) goes in as pointers and comes back out as the same pointers,
/// provenance and all, so nothing is rebuilt from integers (a `dyn`
/// pointer's vtable cannot be). The slot is a number, stored as a pointer
/// without provenance that is never dereferenced. Storage that holds the words must copy
/// them as pointers or as bytes (a C struct copy does), not through integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct RawPick(pub [*mut (); RAW_PICK_WORDS]);

// SAFETY: a `RawPick` is a `Pick` (Send + Sync) in another form; the words
// are only read, and turned back into a `Pick` by `from_raw`, whose contract
// (once only) is what guards the pick.
unsafe impl Send for RawPick {}
// SAFETY: as above.
unsafe impl Sync for RawPick {}

/// One done hook as two pointer words (both null for none).
type HookWords = [*mut (); 2];

const _: () =
    assert!(std::mem::size_of::<NonNull<dyn DoneHook>>() == std::mem::size_of::<HookWords>());

impl Pick {
    /// Gives up the pick as words; `from_raw` takes it back.
    #[inline(always)]
    pub fn into_raw(self) -> RawPick {
        let ((subconn, done), hold, slot, load_only) = self.into_parts();
        let mut words = [std::ptr::null_mut(); RAW_PICK_WORDS];
        // The slot and the load-only flag as a pointer without provenance
        // (null, moved by that many bytes): never dereferenced, only its
        // address read back. (On a 32-bit target a slot of 2^31 or more
        // reads back as another slot that large, beyond every table: not
        // counted.)
        words[RAW_PICK_SLOT_WORD] = std::ptr::null_mut::<u8>()
            .wrapping_add((slot as usize) << 1 | usize::from(load_only))
            .cast();
        words[0] = subconn.as_ptr().cast();
        for (i, hook) in done.into_iter().enumerate() {
            if let Some(d) = hook {
                // SAFETY: same size (asserted above), no padding (two
                // pointer-sized parts), and any initialized bytes, with or
                // without provenance, are a valid `*mut ()`. The bytes come
                // back unchanged, so `from_raw` rebuilds exactly this
                // pointer, whatever the order of its data and vtable parts.
                let [d0, d1] =
                    unsafe { std::mem::transmute::<NonNull<dyn DoneHook>, HookWords>(d) };
                words[1 + 2 * i] = d0;
                words[2 + 2 * i] = d1;
            }
        }
        words[RAW_PICK_HOLD_WORD] = hold.map_or(std::ptr::null_mut(), |h| h.into_raw().as_ptr());
        RawPick(words)
    }

    /// # Safety
    /// `raw` came from `into_raw` (copied as pointers or bytes since) and is
    /// turned back only once.
    #[inline(always)]
    pub unsafe fn from_raw(raw: RawPick) -> Pick {
        let words = raw.0;
        let done: RawHooks = std::array::from_fn(|i| {
            let (d0, d1) = (words[1 + 2 * i], words[2 + 2 * i]);
            // Both parts of a `NonNull<dyn _>` are non-null (data and
            // vtable), so two nulls stand for `None` whatever their order.
            if d0.is_null() && d1.is_null() {
                None
            } else {
                // SAFETY: the words `into_raw` made from a hook pointer,
                // bytes unchanged (see there).
                Some(unsafe { std::mem::transmute::<HookWords, NonNull<dyn DoneHook>>([d0, d1]) })
            }
        });
        Pick {
            // SAFETY: `into_raw` stored a `NonNull` there.
            subconn: unsafe { NonNull::new_unchecked(words[0].cast()) },
            done,
            // SAFETY: per the contract, a hold's own pointer, taken back once.
            hold: NonNull::new(words[RAW_PICK_HOLD_WORD]).map(|h| unsafe { Hold::from_raw(h) }),
            // `into_raw` stored the slot and the flag there.
            slot: (words[RAW_PICK_SLOT_WORD] as usize >> 1) as u32,
            load_only: words[RAW_PICK_SLOT_WORD] as usize & 1 != 0,
        }
    }
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pick({:?})", self.subconn())
    }
}

/// A picker's failure as the call sees it: a code the control plane may not
/// give a call (gRFC A54: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
/// FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, DATA_LOSS) becomes INTERNAL,
/// the message kept, as gRPC-Go's picker wrapper does.
fn from_picker(s: &Status) -> Status {
    if s.code().is_restricted() {
        Status::from_picker(s.code(), s.message())
    } else {
        s.clone()
    }
}
