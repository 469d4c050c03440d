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
//! each time the loop looks (every `idle_timeout`), it moves the published
//! generation on (`Slot::bump`), so that each reader's next pick takes the
//! slow path once and says it picked (`ChannelShared::note_pick`). A channel
//! goes idle between one and two timeouts after its last pick.

use crate::resolver::{Resolver, ResolverClientConn};
use crate::runtime::{LoopContext, TimerKey};
use std::time::Duration;

/// The kind of the channel's idle timer (`TimerKey::kind`).
pub(crate) const IDLE_TIMER: u8 = 8;

/// gRPC's default idle timeout (A62: 30 minutes).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Builds the channel's resolver each time it leaves IDLE.
pub(crate) type MakeResolver =
    Box<dyn FnMut(ResolverClientConn) -> Result<Box<dyn Resolver>, String> + Send>;

/// A channel's idleness, loop side.
pub(crate) struct Idleness {
    /// `None`: never goes idle once used.
    timeout: Option<Duration>,
    /// No resolver, no policy, no connections: the channel is IDLE.
    pub(crate) idle: bool,
    /// The pending idle timer's id, to cancel when the channel closes.
    pub(crate) timer: Option<u64>,
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
            make_resolver,
        }
    }

    pub(crate) fn arm(&mut self, core_id: crate::runtime::TaskId, cx: &mut LoopContext) {
        if let Some(t) = self.timeout {
            let at = cx.clock.now() + t;
            let id = cx
                .timers
                .schedule(at, core_id, TimerKey::new(IDLE_TIMER, 0));
            self.timer = Some(id);
        }
    }

    pub(crate) fn cancel(&mut self, cx: &mut LoopContext) {
        if let Some(id) = self.timer.take() {
            cx.timers.cancel(id);
        }
    }
}
