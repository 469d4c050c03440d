//! The half of a channel every thread can see: the published picker table
//! readers pick from, the aggregate state, and the loop to send work to.

use crate::balancer::picker::Picker;
use crate::connectivity::ConnectivityState;
use crate::publish::{Slot, Watched};
use crate::runtime::{LoopHandle, TaskId};
use crate::service_config::MethodConfigs;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A channel's identity: its task on the loop.
pub(crate) type ChannelId = TaskId;

/// What readers pick from: one published picker generation.
pub(crate) struct Table {
    pub(crate) picker: Box<dyn Picker>,
    /// Increases with every publish; identifies a generation without its address.
    pub(crate) seq: u64,
    pub(crate) closed: bool,
    /// The channel's state with this picker: published together, so that
    /// whoever picks from a picker reads its state (`Channel::state`).
    pub(crate) state: ConnectivityState,
}

impl Table {
    pub(crate) fn new(
        picker: Box<dyn Picker>,
        seq: u64,
        closed: bool,
        state: ConnectivityState,
    ) -> Table {
        Table {
            picker,
            seq,
            closed,
            state,
        }
    }
}

/// The half of a channel every thread can see.
pub(crate) struct ChannelShared {
    pub(crate) slot: crate::sync::Arc<Slot<Table>>,
    /// The aggregate connectivity state (a `ConnectivityState` as `u8`),
    /// with its changes counted (see `Watched`); written with `set_state`
    /// only.
    pub(crate) state: Watched,
    pub(crate) closed: AtomicBool,
    /// The loop has dropped the channel's core (closed: subchannels shut
    /// down, resolver closed, state callback told), set as it goes; what
    /// every closer waits for (with `slot`'s signal).
    pub(crate) core_gone: AtomicBool,
    pub(crate) handle: LoopHandle,
    pub(crate) id: ChannelId,
    pub(crate) seeds: AtomicU64,
    /// Where the next reader to copy a rotation starts in it (see
    /// `rotation_start`).
    pub(crate) rotation_starts: AtomicU64,
    /// Connections are the library's own (RPCs can be sent through it).
    pub(crate) managed: bool,
    /// As given to `Channel::new` (snapshots and logs).
    pub(crate) target: String,
    /// Every call's `:authority` (`ClientConn::authority`).
    pub(crate) authority: Option<String>,
    /// The readers' call counters (snapshots).
    pub(crate) call_stats: Arc<crate::snapshot::CallStats>,
    /// The in-flight counter slots readers claim for their own
    /// least_request picks (`balancer::in_flight`).
    pub(crate) counter_slots: crate::balancer::in_flight::ReaderSlots,
    /// The service config's `methodConfig`, published apart from the
    /// pickers (it changes only with the config): calls look it up through
    /// their reader's cached copy, wait-free.
    pub(crate) methods: Slot<Arc<MethodConfigs>>,
    /// A pick happened since the loop last looked (idleness). Written by a
    /// reader's slow path only, once per generation it moves to: the loop
    /// moves the generation on (`Slot::bump`) each time it looks, so that
    /// the hit path never writes it.
    pub(crate) picked: AtomicBool,
    /// Picks (and the library's blocking calls) waiting for a picker now: a
    /// channel with one is in use, however long the wait (idleness).
    pub(crate) waiting: AtomicUsize,
    /// `ChannelOptions::disable_retry`: the library's calls follow no
    /// `retryPolicy` or `hedgingPolicy`.
    pub(crate) retry_disabled: bool,
}

impl ChannelShared {
    pub(crate) fn state(&self) -> ConnectivityState {
        ConnectivityState::from_u8(self.state.get()).unwrap_or(ConnectivityState::Shutdown)
    }

    /// Records a new aggregate state (different from the last); the
    /// publish that follows wakes the waiters.
    pub(crate) fn set_state(&self, state: ConnectivityState) {
        self.state.set(state as u8);
    }

    /// A reader picked after moving to a new generation.
    #[inline]
    pub(crate) fn note_pick(&self) {
        // Load first: readers catching up together don't all write the line.
        if !self.picked.load(Ordering::Relaxed) {
            self.picked.store(true, Ordering::Relaxed);
        }
    }

    /// Where a reader copying a rotation starts in it: each one the entry
    /// after the one before, so that picks from readers that each pick
    /// once (a reader per call) still go round the rotation in order, as
    /// gRPC-Go's picker's shared counter does, and long-lived readers
    /// start spread out. Read on the slow path only.
    pub(crate) fn rotation_start(&self) -> usize {
        self.rotation_starts.fetch_add(1, Ordering::Relaxed) as usize
    }

    /// A distinct seed for each reader's rotation and random source.
    pub(crate) fn reader_seed(&self) -> u64 {
        let n = self
            .seeds
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        crate::clock::Rng::new(n ^ (self as *const _ as u64)).next_u64()
    }
}
