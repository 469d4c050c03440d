//! Pickers: immutable tables RPC threads pick from, and what a pick returns.

pub use crate::balancer::done::{DoneHook, DoneHooks, DoneHooksFull, DoneInfo};
pub(crate) use crate::balancer::done::{RawHooks, DONE_HOOKS};
use crate::balancer::hash_ring::RingTable;
use crate::balancer::least_loaded::LeastLoadedTable;
pub use crate::balancer::pick_local::PickLocal;
use crate::balancer::ready_list::UniformTable;
use crate::balancer::rotation::Rotation;
use crate::balancer::stride::StrideSchedule;
use crate::balancer::subconn::SubConn;
use crate::balancer::WorkScheduler;
use crate::status::Status;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the RPC tells the picker about itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickInfo<'a> {
    /// Full method name, `/pkg.Service/Method`.
    pub method: &'a str,
    /// Request hash for hashing policies (`ring_hash`); `None` when the RPC has none.
    pub hash: Option<u64>,
    /// The RPC's request metadata (lower-case keys), for policies that hash
    /// a header (`ring_hash`'s `requestHashHeader`); empty when the caller
    /// passes none (a host's own pick: it passes `hash` instead).
    pub metadata: &'a [(String, String)],
}

/// A pick's result. `'a` borrows from the picker, which the channel keeps alive
/// until the pick is done.
pub enum PickResult<'a> {
    /// Use this subchannel; the hooks in `done` hear the outcome when the
    /// RPC ends.
    Complete {
        /// The subchannel to send the RPC on.
        subconn: &'a SubConn,
        /// Told the outcome when the RPC ends, outermost first (a wrapping
        /// picker adds its own with `DoneHooks::with_outer`).
        done: DoneHooks<'a>,
    },
    /// Nothing usable yet: wait for the next picker (gRPC's `ErrNoSubConnAvailable`).
    Queue,
    /// Fail the RPC with this status unless it is wait-for-ready (then queue).
    Fail(&'a Status),
    /// Fail the RPC now, even wait-for-ready; never retried.
    Drop(&'a Status),
}

/// An immutable pick table. Called concurrently from any RPC thread: must not
/// block, do I/O or write shared state.
pub trait Picker: Send + Sync + 'static {
    /// Picks for one RPC. Wait-free in practice: no lock, no I/O, no shared write.
    /// Must not panic: a panic goes up the picking thread's stack (the RPC
    /// thread's; the library's own calls, picked on the loop, catch it and
    /// fail the call), as it would from any function it calls there.
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a>;

    /// If this picker always completes with the same subchannel and no done
    /// hook, that subchannel: parents may then pick it directly (flattening).
    fn single(&self) -> Option<&Arc<SubConn>> {
        None
    }

    /// If this picker is a plain rotation (no done hook, each entry once per
    /// cycle), that rotation: readers then rotate inline without calling
    /// `pick`. A policy builds one with
    /// [`RotationBuilder`](crate::balancer::rotation::RotationBuilder).
    fn rotation(&self) -> Option<&Rotation> {
        None
    }

    /// If readers can run this picker's choice themselves from one of the
    /// toolkit's tables (see [`InlineKind`]), that table: readers then pick
    /// from it inline without calling `pick`, which must pick as the table
    /// does.
    fn inline(&self) -> Option<InlineKind<'_>> {
        None
    }

    /// If this picker only forwards every call to another one, unchanged
    /// (a parent publishing its child's picker as it is), that picker:
    /// readers then call it directly, one indirect call fewer per pick.
    fn forwards_to(&self) -> Option<&dyn Picker> {
        None
    }
}

/// A table readers pick from inline, as they walk a rotation (see
/// [`Picker::inline`]): no call through the picker, no result written and
/// read back.
#[derive(Clone, Copy)]
pub enum InlineKind<'a> {
    /// A static stride schedule: each pick carries only its entry's load
    /// hook (told only dones that carry load). A policy builds one with
    /// [`StrideSchedule::new`].
    Schedule(&'a StrideSchedule),
    /// Uniformly at random among a table of subchannels, with no done hook.
    Uniform(&'a UniformTable),
    /// The least loaded of a few random draws (A48): the reader adds one to
    /// the winner's in-flight counter and takes it off when the pick is
    /// done or dropped.
    LeastLoaded(&'a LeastLoadedTable),
    /// A hash ring's READY members, with no done hook; a pick whose hash
    /// lands elsewhere (or that has none) calls `pick`.
    Ring(&'a RingTable),
}

/// A child's picker republished as it is (a parent with nothing to add
/// to its child's picks: the graceful switch, outlier detection with both
/// algorithms off): the same picks, the same single subchannel and inline
/// rotation for parents to flatten, and readers call the child directly.
pub struct ForwardingPicker(pub Arc<dyn Picker>);

impl Picker for ForwardingPicker {
    #[inline]
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        self.0.pick(info, local)
    }

    fn single(&self) -> Option<&Arc<SubConn>> {
        self.0.single()
    }

    fn rotation(&self) -> Option<&Rotation> {
        self.0.rotation()
    }

    fn forwards_to(&self) -> Option<&dyn Picker> {
        Some(&*self.0)
    }
}

/// Queues every pick (CONNECTING, or before the first resolver result).
pub struct QueuePicker;

impl Picker for QueuePicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        PickResult::Queue
    }
}

/// Fails every pick with one status (TRANSIENT_FAILURE).
pub struct FailPicker(pub Status);

impl FailPicker {
    /// Fails every pick with UNAVAILABLE and `message`.
    pub fn unavailable(message: impl Into<Arc<str>>) -> FailPicker {
        FailPicker(Status::unavailable(message))
    }

    /// What a policy fails picks with when the resolver reports `error`
    /// and it has nothing to keep using: UNAVAILABLE, "name resolver
    /// error: ...".
    pub fn resolver_error(error: &str) -> FailPicker {
        FailPicker::unavailable(format!("name resolver error: {error}"))
    }
}

impl Picker for FailPicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        PickResult::Fail(&self.0)
    }
}

/// Drops every pick with one status.
pub struct DropPicker(pub Status);

impl Picker for DropPicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        PickResult::Drop(&self.0)
    }
}

/// Always the same subchannel (pick_first when READY), also offered as a
/// rotation of one entry so that readers pick it inline, as for round_robin,
/// without calling the picker.
pub struct SinglePicker {
    subconn: Arc<SubConn>,
    rotation: Rotation,
}

impl SinglePicker {
    /// Always picks `subconn`.
    pub fn new(subconn: Arc<SubConn>) -> SinglePicker {
        let rotation = Rotation::over(Arc::from([subconn.clone()]), 1).expect("one entry");
        SinglePicker { subconn, rotation }
    }
}

impl Picker for SinglePicker {
    #[inline]
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        PickResult::Complete {
            subconn: &self.subconn,
            done: DoneHooks::NONE,
        }
    }

    fn single(&self) -> Option<&Arc<SubConn>> {
        Some(&self.subconn)
    }

    fn rotation(&self) -> Option<&Rotation> {
        Some(&self.rotation)
    }
}

/// Asks the loop to leave IDLE, once, then queues (pick_first after its
/// connection closed), or drops every pick with a status (a channel with
/// no valid service config, which still builds its resolver on first use:
/// a valid config may come from it).
pub struct IdlePicker {
    work: WorkScheduler,
    fired: AtomicBool,
    /// `Some`: what every pick is dropped with, instead of queueing.
    drop: Option<Status>,
}

impl IdlePicker {
    /// Schedules the policy's `Balancer::work` (whose default leaves IDLE)
    /// on the first pick; `work` comes from `ClientConn::work_scheduler`.
    pub fn new(work: WorkScheduler) -> IdlePicker {
        IdlePicker {
            work,
            fired: AtomicBool::new(false),
            drop: None,
        }
    }

    /// The same, dropping every pick with `status` (wait-for-ready or not)
    /// instead of queueing it.
    pub fn dropping(self, status: Status) -> IdlePicker {
        IdlePicker {
            drop: Some(status),
            ..self
        }
    }
}

impl Picker for IdlePicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        // Load first so repeated picks don't keep writing the shared line.
        if !self.fired.load(Ordering::Relaxed) && !self.fired.swap(true, Ordering::AcqRel) {
            self.work.schedule_work();
        }
        match &self.drop {
            Some(status) => PickResult::Drop(status),
            None => PickResult::Queue,
        }
    }
}
