//! The `ClientConn` a channel's policy sees during one callback: subchannels
//! from the channel's pool, pickers to its publisher, timers on its loop.

use super::publisher::StatePublisher;
use super::shared::ChannelId;
use crate::address::Address;
use crate::balancer::picker::Picker;
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::balancer::{ClientConn, LoadReportListener, OobListenerId, TimerToken, WorkScheduler};
use crate::clock::Clock;
use crate::connectivity::ConnectivityState;
use crate::runtime::{LoopContext, TimerKey};
use crate::subchannel::SubchannelPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The kind of the timers a policy arms (`ClientConn::schedule_timer`).
pub(crate) const BALANCER_TIMER: u8 = 4;

/// The `ClientConn` a policy sees during one callback.
pub(super) struct PolicyClientConn<'a> {
    /// Has the loop call this policy's `Balancer::work`.
    pub(super) work: &'a WorkScheduler,
    pub(super) subs: &'a mut SubchannelPool,
    pub(super) out: &'a mut StatePublisher,
    pub(super) env: &'a mut LoopContext,
    pub(super) timers: &'a mut HashMap<TimerToken, u64>,
    pub(super) next_timer: &'a mut u64,
    pub(super) resolve: &'a mut bool,
    pub(super) channel: ChannelId,
}

impl ClientConn for PolicyClientConn<'_> {
    fn new_subconn(&mut self, address: Address) -> Result<Arc<SubConn>, String> {
        if self.out.closed {
            return Err("channel is closed; no new subchannels".into());
        }
        Ok(self.subs.create(address, self.env))
    }

    fn connect(&mut self, sc: SubConnId) {
        self.subs.connect(sc, self.env);
    }

    fn shutdown_subconn(&mut self, sc: SubConnId) {
        self.subs.shutdown(sc, self.env);
    }

    fn update_state(&mut self, state: ConnectivityState, picker: Box<dyn Picker>) {
        if state == ConnectivityState::Shutdown {
            // Only closing the channel makes it SHUTDOWN, and for good: a
            // policy saying so is ignored (grpc-java's LbHelperImpl).
            log::warn!(
                target: crate::trace::CHANNEL,
                "channel {}: the policy published SHUTDOWN; ignored",
                self.out.shared.id
            );
            return;
        }
        self.out.publish(state, picker);
    }

    fn resolve_now(&mut self) {
        *self.resolve = true;
    }

    fn target(&self) -> &str {
        &self.out.shared.target
    }

    fn authority(&self) -> Option<&str> {
        self.out.shared.authority.as_deref()
    }

    fn schedule_timer(&mut self, after: Duration) -> TimerToken {
        let token = TimerToken(*self.next_timer);
        *self.next_timer += 1;
        let at = self.env.clock.now() + after;
        let id = self
            .env
            .timers
            .schedule(at, self.channel, TimerKey::new(BALANCER_TIMER, token.0));
        self.timers.insert(token, id);
        token
    }

    fn cancel_timer(&mut self, token: TimerToken) {
        if let Some(id) = self.timers.remove(&token) {
            self.env.timers.cancel(id);
        }
    }

    fn now(&self) -> Instant {
        self.env.clock.now()
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.env.clock.clone()
    }

    fn random(&mut self) -> u64 {
        self.env.rng.next_u64()
    }

    fn work_scheduler(&self) -> WorkScheduler {
        self.work.clone()
    }

    fn register_oob_listener(
        &mut self,
        sc: SubConnId,
        period: Duration,
        listener: Arc<dyn LoadReportListener>,
    ) -> OobListenerId {
        self.subs.register_oob(sc, period, listener, self.env)
    }

    fn unregister_oob_listener(&mut self, id: OobListenerId) {
        self.subs.unregister_oob(id, self.env);
    }
}
