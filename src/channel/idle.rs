//! Channel idleness (gRPC's idle mode, A62's idle timeout): a channel starts
//! IDLE, resolving nothing and connecting nowhere, and leaves IDLE on its
//! first pick or call (or `Channel::connect`): the resolver is built then,
//! and the policy gets its endpoints. A channel whose host supplies the
//! addresses (empty target) also leaves IDLE when the host pushes them: the
//! host resolving is the host using the channel. After `idle_timeout` with no pick and
//! no call in flight it goes back: resolver and policy closed, every
//! connection with them, the channel IDLE, until the next pick.
//!
//! Telling an idle channel from a busy one costs the pick hit path nothing:
//! each time the loop looks (`LOOKS` times per `idle_timeout`), if it saw
//! use since the last look it moves the published generation on
//! (`Slot::bump`), so that each reader's next pick takes the slow path once
//! and says it picked (`ChannelShared::note_pick`). The channel goes idle at
//! the first look a whole timeout after the last look that saw use: between
//! one timeout and one timeout plus a sixteenth after its last pick or call
//! (gRPC-Go, which timestamps every call, goes at exactly one).

use crate::resolver::{Resolver, ResolverClientConn};
use crate::runtime::{LoopContext, TaskId, TimerKey};
use std::time::{Duration, Instant};

/// The kind of the channel's idle timer (`TimerKey::kind`).
pub(crate) const IDLE_TIMER: u8 = 8;

/// gRPC's default idle timeout (A62: 30 minutes).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Builds the channel's resolver each time it leaves IDLE.
pub(crate) type MakeResolver =
    Box<dyn FnMut(ResolverClientConn) -> Result<Box<dyn Resolver>, String> + Send>;

/// How many times per idle timeout the loop looks for use: the channel
/// goes idle at most a `LOOKS`-th of a timeout late.
const LOOKS: u32 = 16;

/// A channel's idleness, loop side.
pub(crate) struct Idleness {
    /// `None`: never goes idle once used.
    timeout: Option<Duration>,
    /// No resolver, no policy, no connections: the channel is IDLE.
    pub(crate) idle: bool,
    /// The pending idle timer's id, to cancel when the channel closes.
    pub(crate) timer: Option<u64>,
    /// The last look that saw the channel in use (or when it left IDLE).
    last_use: Option<Instant>,
    /// The last look saw a call in flight.
    ongoing: bool,
    /// The target's resolver, built on each exit from IDLE (`None`: the
    /// host is the resolver, empty target).
    pub(crate) make_resolver: Option<MakeResolver>,
}

impl Idleness {
    /// `timeout`: `None` or zero never goes idle.
    pub(crate) fn new(timeout: Option<Duration>, make_resolver: Option<MakeResolver>) -> Idleness {
        Idleness {
            timeout: timeout.filter(|t| !t.is_zero()),
            idle: true,
            timer: None,
            last_use: None,
            ongoing: false,
            make_resolver,
        }
    }

    /// Leaving IDLE: in use now; the first look a `LOOKS`-th of a timeout on.
    pub(crate) fn start(&mut self, core_id: TaskId, cx: &mut LoopContext) {
        self.looked(true, false, core_id, cx);
    }

    /// A look: `in_use` says whether it saw use since the last one, and
    /// `ongoing` whether use was still going on (a call in flight). Arms
    /// the next look and returns false, or returns true when a whole
    /// timeout has passed since the use ended: time to go idle.
    pub(crate) fn looked(
        &mut self,
        in_use: bool,
        ongoing: bool,
        core_id: TaskId,
        cx: &mut LoopContext,
    ) -> bool {
        let Some(timeout) = self.timeout else {
            return false;
        };
        // A call in flight at the last look ended since: at this look, as
        // far as the looks can tell, so the timeout counts from here (gRPC-Go
        // counts it from the last call's end), not from the last look.
        let was_ongoing = std::mem::replace(&mut self.ongoing, ongoing);
        let in_use = in_use || was_ongoing;
        let now = cx.clock.now();
        let last = match self.last_use {
            Some(last) if !in_use => last,
            _ => {
                self.last_use = Some(now);
                now
            }
        };
        let idle_at = last.checked_add(timeout);
        if idle_at.is_some_and(|at| now >= at) {
            return true;
        }
        // Not past the idle time: looks fall on the grid after the last
        // use, the last one exactly at the idle time.
        let next = now
            .checked_add((timeout / LOOKS).max(Duration::from_millis(1)))
            .map(|n| idle_at.map_or(n, |at| n.min(at)));
        if let Some(at) = next {
            let id = cx
                .timers
                .schedule(at, core_id, TimerKey::new(IDLE_TIMER, 0));
            self.timer = Some(id);
        }
        false
    }

    pub(crate) fn cancel(&mut self, cx: &mut LoopContext) {
        if let Some(id) = self.timer.take() {
            cx.timers.cancel(id);
        }
    }
}
