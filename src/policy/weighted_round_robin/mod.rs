//! `weighted_round_robin` (gRFC A58, with A114's custom utilization
//! metrics): one pick_first child per endpoint, as round_robin, but calls
//! spread over the READY endpoints in proportion to weights the backends'
//! load reports give them — weight = qps / (utilization + eps/qps ×
//! errorUtilizationPenalty) — through a static stride schedule.
//!
//! Reports arrive through each pick's done hook (`DoneInfo::load`: what
//! the host reports, or, for the library's own calls, the backend's ORCA
//! `endpoint-load-metrics-bin` trailer). The hook only stores the weight;
//! the policy reads the weights on the loop every `weightUpdatePeriod`
//! (and whenever the READY set changes), applies blackout and expiry, and
//! publishes a new schedule: RPC threads only ever read a published one.
//! Subchannel state changes are batched: the rebuild they need runs in the
//! policy's next `Balancer::work` call, which the loop makes right after.
//! Out-of-band ORCA streams (`enableOobLoadReport`) are accepted in the
//! config but not opened.

mod config;
mod scheduler;
mod weight;

#[cfg(test)]
mod tests;

pub use config::{parse_duration, WrrConfig, MIN_WEIGHT_UPDATE_PERIOD};
pub use scheduler::{scale, WrrPicker, MAX_WEIGHT};
pub use weight::{weight_from_report, EndpointWeight};

use super::pick_first::{PickFirstBuilder, ZERO_ADDRESSES};
use super::round_robin::{RrEntry, RrPicker};
use crate::balancer::child_manager::ChildManager;
use crate::balancer::picker::{FailPicker, Picker, QueuePicker};
use crate::balancer::subconn::SubConnId;
use crate::balancer::{
    Balancer, Builder, ClientConn, ClientConnState, LbConfig, SubConnState, TimerToken,
};
use crate::connectivity::{ConnectivityState, StateCounts, NO_CHILDREN};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use weight::WeightTracker;

/// The policy's registered name.
pub const NAME: &str = "weighted_round_robin";

/// Builds `weighted_round_robin` balancers.
pub struct WeightedRoundRobinBuilder;

impl Builder for WeightedRoundRobinBuilder {
    fn name(&self) -> &str {
        NAME
    }

    fn build(&self) -> Box<dyn Balancer> {
        Box::new(WeightedRoundRobin::default())
    }

    fn parse_config(&self, config: &serde_json::Value) -> Result<Option<LbConfig>, String> {
        Ok(Some(Arc::new(WrrConfig::parse(config)?)))
    }
}

/// One endpoint's weight bookkeeping, by endpoint key.
struct Weighted {
    tracker: WeightTracker,
    /// READY when last seen (a return to READY restarts the blackout).
    ready: bool,
}

pub(crate) struct WeightedRoundRobin {
    children: ChildManager,
    /// Shared with every endpoint's done hook.
    config: Arc<ArcSwap<WrrConfig>>,
    weights: HashMap<String, Weighted>,
    /// The schedule-rebuild timer and the period it was armed with.
    timer: Option<(TimerToken, Duration)>,
    reported: Option<ConnectivityState>,
    /// A child changed since the last rebuild; a `work` call is scheduled
    /// to rebuild once for however many change before the loop gets to it.
    dirty: bool,
}

impl Default for WeightedRoundRobin {
    fn default() -> WeightedRoundRobin {
        WeightedRoundRobin {
            children: ChildManager::default(),
            config: Arc::new(ArcSwap::from_pointee(WrrConfig::default())),
            weights: HashMap::new(),
            timer: None,
            reported: None,
            dirty: false,
        }
    }
}

impl WeightedRoundRobin {
    /// Arms the rebuild timer unless it runs at the configured period.
    fn arm_timer(&mut self, cc: &mut dyn ClientConn) {
        let period = self.config.load().weight_update_period;
        match self.timer {
            Some((_, p)) if p == period => {}
            old => {
                if let Some((token, _)) = old {
                    cc.cancel_timer(token);
                }
                self.timer = Some((cc.schedule_timer(period), period));
            }
        }
    }

    fn stop_timer(&mut self, cc: &mut dyn ClientConn) {
        if let Some((token, _)) = self.timer.take() {
            cc.cancel_timer(token);
        }
    }

    /// After a child changed: reconnect it if it went IDLE, restart its
    /// blackout if it came back to READY, republish.
    fn child_changed(&mut self, cc: &mut dyn ClientConn, key: &str) {
        let state = self.children.get(key).map(|c| c.state());
        if matches!(
            state,
            Some(ConnectivityState::Idle | ConnectivityState::TransientFailure)
        ) {
            cc.resolve_now();
        }
        if state == Some(ConnectivityState::Idle) {
            self.children.exit_idle(cc, key);
        }
        let ready = state == Some(ConnectivityState::Ready);
        if let Some(w) = self.weights.get_mut(key) {
            if ready && !w.ready {
                w.tracker.ready_again();
            }
            w.ready = ready;
        }
        // Rebuilding is O(endpoints): deferred to `work`, so a burst of
        // changes (10,000 endpoints connecting) costs one rebuild, not one
        // each. The loop runs it right after the changes already queued.
        if !self.dirty {
            self.dirty = true;
            cc.work_scheduler().schedule_work();
        }
    }

    /// Aggregates as round_robin does: any READY → READY over a schedule
    /// of the READY endpoints; any CONNECTING or IDLE → CONNECTING (queue);
    /// else TRANSIENT_FAILURE with the children's own errors in rotation.
    fn regenerate(&mut self, cc: &mut dyn ClientConn) {
        self.dirty = false;
        let mut counts = StateCounts::default();
        for c in self.children.iter() {
            counts.add(c.state());
        }
        let (state, picker): (ConnectivityState, Box<dyn Picker>) = if self.children.is_empty() {
            (
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(NO_CHILDREN)),
            )
        } else if counts.ready > 0 {
            match self.schedule(cc) {
                Some(p) => (ConnectivityState::Ready, Box::new(p)),
                None => (ConnectivityState::Connecting, Box::new(QueuePicker)),
            }
        } else if counts.connecting > 0 || counts.idle > 0 {
            if self.reported == Some(ConnectivityState::Connecting) {
                return;
            }
            (ConnectivityState::Connecting, Box::new(QueuePicker))
        } else {
            let failing = self
                .children
                .iter()
                .map(|c| RrEntry::Child(c.picker().clone()))
                .collect();
            (
                ConnectivityState::TransientFailure,
                Box::new(RrPicker::new(failing)),
            )
        };
        self.reported = Some(state);
        cc.update_state(state, picker);
    }

    /// The schedule over the READY endpoints with the weights that count
    /// now. `None` if no READY child has a subchannel to pick (a pick_first
    /// child always has one).
    fn schedule(&mut self, cc: &mut dyn ClientConn) -> Option<WrrPicker> {
        let now = cc.now();
        let config = self.config.load();
        let mut endpoints = Vec::new();
        let mut weights = Vec::new();
        for c in self.children.iter() {
            if c.state() != ConnectivityState::Ready {
                continue;
            }
            let (Some(sc), Some(w)) = (c.picker().single(), self.weights.get_mut(c.key())) else {
                continue;
            };
            weights.push(w.tracker.effective(now, &config));
            endpoints.push((sc.clone(), w.tracker.hook.clone()));
        }
        let scaled = scale(&weights);
        WrrPicker::new(endpoints, scaled.as_deref())
    }
}

impl Balancer for WeightedRoundRobin {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let config = state
            .config
            .as_ref()
            .and_then(|c| c.downcast_ref::<WrrConfig>())
            .cloned()
            .unwrap_or_default();
        self.config.store(Arc::new(config));
        if state.addresses.is_empty() {
            self.children.close(cc);
            self.weights.clear();
            self.stop_timer(cc);
            self.reported = Some(ConnectivityState::TransientFailure);
            cc.update_state(
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(ZERO_ADDRESSES)),
            );
            return Err(ZERO_ADDRESSES.into());
        }
        let pick_first: Arc<dyn Builder> = Arc::new(PickFirstBuilder);
        self.children
            .update_endpoints(cc, &state.endpoints, &pick_first, None);
        // Weights follow the endpoints: kept for those that stay, new for
        // new ones, dropped with removed ones.
        let children = &self.children;
        self.weights.retain(|key, _| children.get(key).is_some());
        for c in self.children.iter() {
            self.weights
                .entry(c.key().to_string())
                .or_insert_with(|| Weighted {
                    tracker: WeightTracker::new(Arc::new(EndpointWeight::new(self.config.clone()))),
                    ready: false,
                });
        }
        self.arm_timer(cc);
        self.regenerate(cc);
        Ok(())
    }

    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.children.resolver_error(cc, error);
        if self.children.is_empty() {
            self.reported = Some(ConnectivityState::TransientFailure);
            cc.update_state(
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(format!(
                    "name resolver error: {error}"
                ))),
            );
        } else {
            self.regenerate(cc);
        }
    }

    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        if let Some(key) = self.children.subconn_state(cc, sc, state) {
            self.child_changed(cc, &key);
        }
    }

    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        for key in self.children.keys() {
            self.children.exit_idle(cc, &key);
        }
        self.regenerate(cc);
    }

    fn work(&mut self, cc: &mut dyn ClientConn) {
        for key in self.children.work(cc) {
            self.child_changed(cc, &key);
        }
        if self.dirty {
            self.regenerate(cc);
        }
    }

    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        if let Some(key) = self.children.timer(cc, token) {
            self.child_changed(cc, &key);
            return;
        }
        if self.timer.is_some_and(|(t, _)| t == token) {
            self.timer = None;
            self.arm_timer(cc);
            // New weights (reports, blackouts ending, expiry) take effect.
            if self.reported == Some(ConnectivityState::Ready) {
                self.regenerate(cc);
            }
        }
    }

    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.stop_timer(cc);
        self.children.close(cc);
        self.weights.clear();
    }
}
