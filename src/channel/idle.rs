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

use super::core::ChannelCore;
use crate::balancer::picker::{IdlePicker, QueuePicker};
use crate::balancer::WorkScheduler;
use crate::connectivity::ConnectivityState;
use crate::resolver::{Resolver, ResolverClientConn};
use crate::runtime::{panic_message, LoopContext, LoopHandle, Task, TimerKey};
use crate::trace;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
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
    timer: Option<u64>,
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

    fn arm(&mut self, core_id: crate::runtime::TaskId, cx: &mut LoopContext) {
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

/// The picker of an IDLE channel: its first pick asks the loop to leave
/// IDLE, and every pick queues until then (wait-for-ready or not, as gRPC).
pub(crate) fn idle_picker(handle: LoopHandle, id: crate::runtime::TaskId) -> IdlePicker {
    IdlePicker::new(WorkScheduler::new(move || {
        handle.run_on(id, |core: &mut ChannelCore, cx| core.exit_channel_idle(cx));
    }))
}

impl ChannelCore {
    /// Leaves IDLE: builds the resolver (or hands the policy the host's
    /// endpoints) and starts watching for idleness. CONNECTING until the
    /// policy says otherwise.
    pub(crate) fn exit_channel_idle(&mut self, cx: &mut LoopContext) {
        if self.is_finished() || !self.idle.idle {
            return;
        }
        self.idle.idle = false;
        log::info!(target: trace::CHANNEL, "channel {}: leaving IDLE", self.out.shared.id);
        self.out
            .publish(ConnectivityState::Connecting, Box::new(QueuePicker));
        self.out.shared.picked.store(false, Ordering::Relaxed);
        let id = self.out.shared.id;
        self.idle.arm(id, cx);
        match self.idle.make_resolver.as_mut() {
            Some(make) => {
                let cc = self.resolution.reopen::<ChannelCore>(cx.handle.clone(), id);
                let built = catch_unwind(AssertUnwindSafe(|| make(cc))).unwrap_or_else(|p| {
                    Err(format!("the resolver panicked: {}", panic_message(&*p)))
                });
                match built {
                    Ok(r) => self.resolution.install(r),
                    Err(e) => self.resolver_error(&e, cx),
                }
            }
            None => {
                if let Some(endpoints) = self.endpoints.clone() {
                    self.update_endpoints(endpoints, cx);
                }
            }
        }
    }

    /// The idle timer: idle if nothing picked since the last look, no pick
    /// is waiting and no call is in flight or queued; otherwise look again a
    /// timeout later.
    pub(crate) fn idle_timer(&mut self, cx: &mut LoopContext) {
        self.idle.timer = None;
        if self.is_finished() || self.idle.idle {
            return;
        }
        let shared = &self.out.shared;
        let picked = shared.picked.swap(false, Ordering::Relaxed);
        let in_use = picked
            || shared.waiting.load(Ordering::Relaxed) > 0
            || shared.call_stats.in_flight() > 0
            || self.calls.as_ref().is_some_and(|c| c.active());
        if in_use {
            // Every reader's next pick says so again.
            shared.slot.bump();
            let id = shared.id;
            self.idle.arm(id, cx);
            return;
        }
        self.enter_idle(cx);
    }

    /// Goes IDLE: the resolver and the policy close, and with the policy
    /// every subchannel and connection; the next pick brings them back.
    fn enter_idle(&mut self, cx: &mut LoopContext) {
        let id = self.out.shared.id;
        log::info!(target: trace::CHANNEL, "channel {id}: idle timeout, going IDLE");
        self.idle.idle = true;
        self.resolution.close();
        self.close_balancer(cx);
        if self.idle.make_resolver.is_some() {
            // The resolver resolves again on the way out.
            self.endpoints = None;
        }
        let picker = idle_picker(cx.handle.clone(), id);
        self.out.publish(ConnectivityState::Idle, Box::new(picker));
    }
}
