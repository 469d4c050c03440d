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
//!
//! With `enableOobLoadReport`, reports come out of band instead (gRFC A51,
//! as gRPC's WRR does): the policy registers each connected endpoint's
//! weight as a listener on its subchannel (healthy or not) (`ClientConn::register_oob_listener`,
//! period `oobReportingPeriod`), the channel keeps an ORCA stream open on
//! that connection, and each report goes through the same weight
//! computation; per-call reports are then ignored. Registrations follow
//! the endpoint's connected subchannel, the config, and the policy's life.
//! That needs the library's own connections: a host-transport channel
//! feeds load through `done` instead.

mod config;
mod scheduler;
mod weight;

#[cfg(test)]
mod tests;

pub use config::{parse_duration, WrrConfig, MIN_WEIGHT_UPDATE_PERIOD};
pub use scheduler::{scale, Entries, WrrPicker, MAX_WEIGHT};
pub use weight::{weight_from_report, EndpointWeight};

use super::petiole::Petiole;
use super::round_robin::Failing;
use crate::balancer::child_manager::{ChildManager, ChildParent};
use crate::balancer::picker::{FailPicker, Picker, QueuePicker};
use crate::balancer::subconn::SubConnId;
use crate::balancer::{
    Balancer, Builder, ClientConn, ClientConnState, LbConfig, OobListenerId, SubConnState,
    TimerToken,
};
use crate::connectivity::{ConnectivityState, StateCounts, NO_CHILDREN};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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

    fn health_checks(&self, _config: Option<&LbConfig>) -> bool {
        // Its endpoints' pick_first children use health (A61).
        true
    }
}

/// One endpoint's weight bookkeeping.
struct Weighted {
    /// The endpoint's child's key.
    key: String,
    /// What its picks' done hooks (and its ORCA listener) write.
    weight: Arc<EndpointWeight>,
    /// The subchannel it was connected on when last seen: a new connection
    /// restarts the blackout (gRFC A58's `OnSubchannelBecomesReady`, on the
    /// subchannel's raw state, as gRPC-Go listens for it); a health verdict
    /// on a live connection (a health check failing and passing again, an
    /// outlier_detection parent's ejection and return) does not.
    connected: Option<SubConnId>,
    /// Its out-of-band listener while OOB reporting is on and it is
    /// connected: on which subchannel, asking for which period.
    oob: Option<(SubConnId, Duration, OobListenerId)>,
}

pub(crate) struct WeightedRoundRobin {
    children: ChildManager,
    /// Shared with every endpoint's done hook.
    config: Arc<ArcSwap<WrrConfig>>,
    /// Per child, in `ChildManager` position order (so a rebuild over
    /// 10,000 endpoints hashes no key), for `weights_layout`.
    weights: Vec<Weighted>,
    /// The `ChildManager::layout` `weights` is aligned with (positions:
    /// a child's new subchannel moves nothing, so it costs no realignment,
    /// which would be O(endpoints) per subchannel).
    weights_layout: Option<u64>,
    /// The READY endpoints of the last schedule, while no child changed:
    /// a weight update reuses them.
    ready_entries: Option<Entries>,
    /// The schedule-rebuild timer and the period it was armed with.
    timer: Option<(TimerToken, Duration)>,
    reported: Option<ConnectivityState>,
    failing: Failing,
    /// The scaled weights of the schedule last published over
    /// `ready_entries` (`None`: plain round robin, or none published): a
    /// rebuild that comes to the same schedule publishes nothing, so
    /// readers keep their place in it (a new picker starts its sequence
    /// again: republished every `weightUpdatePeriod` at a few calls per
    /// period, traffic would follow the schedule's first steps, not its
    /// weights).
    published: Option<Option<Vec<u16>>>,
    /// A child changed since the last rebuild; a `work` call is scheduled
    /// to rebuild once for however many change before the loop gets to it.
    dirty: bool,
}

impl Default for WeightedRoundRobin {
    fn default() -> WeightedRoundRobin {
        WeightedRoundRobin {
            children: ChildManager::default(),
            config: Arc::new(ArcSwap::from_pointee(WrrConfig::default())),
            weights: Vec::new(),
            weights_layout: None,
            ready_entries: None,
            timer: None,
            reported: None,
            failing: Failing::default(),
            published: None,
            dirty: false,
        }
    }
}

impl WeightedRoundRobin {
    /// Lines `weights` up with the children again if they changed: kept
    /// for endpoints that stay (weights survive address updates), new for
    /// new ones, dropped with removed ones.
    fn align(&mut self, cc: &mut dyn ClientConn) {
        let layout = self.children.layout();
        if self.weights_layout == Some(layout) {
            return;
        }
        let mut old: HashMap<String, Weighted> =
            self.weights.drain(..).map(|w| (w.key.clone(), w)).collect();
        let config = &self.config;
        let clock = cc.clock();
        self.weights = self
            .children
            .iter()
            .map(|c| {
                old.remove(c.key()).unwrap_or_else(|| Weighted {
                    key: c.key().to_string(),
                    weight: Arc::new(EndpointWeight::new(config.clone(), clock.clone())),
                    connected: None,
                    oob: None,
                })
            })
            .collect();
        self.weights_layout = Some(layout);
        // Removed endpoints stop listening.
        for gone in old.into_values() {
            if let Some((_, _, id)) = gone.oob {
                cc.unregister_oob_listener(id);
            }
        }
    }

    /// Keeps the endpoint at `at`'s out-of-band listener in step with the
    /// config and its connection: registered on its connected subchannel
    /// with the configured period while OOB reporting is on, else not at
    /// all. Connected, not READY: gRPC-Go's WRR registers on the SubConn
    /// its raw state listener saw READY, whatever health checking says
    /// (that comes through pickfirst's health listener), so a connected
    /// endpoint that is unhealthy, or not yet known healthy, reports too.
    fn sync_oob(&mut self, cc: &mut dyn ClientConn, at: usize) {
        let config = self.config.load();
        let want = config
            .enable_oob_load_report
            .then(|| self.connected(at))
            .flatten()
            .map(|sc| (sc, config.oob_reporting_period));
        let Some(w) = self.weights.get_mut(at) else {
            return;
        };
        if w.oob.map(|(sc, period, _)| (sc, period)) == want {
            return;
        }
        if let Some((_, _, id)) = w.oob.take() {
            cc.unregister_oob_listener(id);
        }
        if let Some((sc, period)) = want {
            let id = cc.register_oob_listener(sc, period, w.weight.clone());
            w.oob = Some((sc, period, id));
        }
    }

    /// The subchannel the endpoint at `at` is connected on (its transport
    /// up, healthy or not), if any.
    fn connected(&self, at: usize) -> Option<SubConnId> {
        Some(self.children.at(at)?.connected_subconn()?.id())
    }

    /// Every endpoint stops listening (the policy closes, or loses them all).
    fn stop_oob(&mut self, cc: &mut dyn ClientConn) {
        for w in &mut self.weights {
            if let Some((_, _, id)) = w.oob.take() {
                cc.unregister_oob_listener(id);
            }
        }
    }

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

    /// Aggregates as round_robin does: any READY → READY over a schedule
    /// of the READY endpoints; any CONNECTING or IDLE → CONNECTING (queue);
    /// else TRANSIENT_FAILURE with the children's own errors in rotation.
    fn regenerate(&mut self, cc: &mut dyn ClientConn) {
        // Something else than the weights may have changed: the READY set too.
        self.ready_entries = None;
        self.regenerate_keeping_endpoints(cc);
    }

    /// `regenerate` for a weight update: reuses the last schedule's
    /// endpoints if no child changed since.
    fn regenerate_keeping_endpoints(&mut self, cc: &mut dyn ClientConn) {
        if self.dirty {
            // A child changed and its rebuild has not run yet.
            self.ready_entries = None;
        }
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
                Some(Scheduled::New(p)) => (ConnectivityState::Ready, Box::new(p)),
                Some(Scheduled::Same) => return,
                None => (ConnectivityState::Connecting, Box::new(QueuePicker)),
            }
        } else if counts.connecting > 0 || counts.idle > 0 {
            if self.reported == Some(ConnectivityState::Connecting) {
                return;
            }
            (ConnectivityState::Connecting, Box::new(QueuePicker))
        } else {
            let Some(picker) = self.failing.picker(&self.children, self.reported) else {
                return;
            };
            (ConnectivityState::TransientFailure, picker)
        };
        self.reported = Some(state);
        cc.update_state(state, picker);
    }

    /// The schedule over the READY endpoints with the weights that count
    /// now. `None` if no READY child has a subchannel to pick (a pick_first
    /// child always has one).
    fn schedule(&mut self, cc: &mut dyn ClientConn) -> Option<Scheduled> {
        let now = cc.now();
        let config = self.config.load();
        if self.weights_layout != Some(self.children.layout()) {
            self.ready_entries = None;
            self.align(cc);
        }
        let reuse = self.ready_entries.take();
        let mut weights = Vec::with_capacity(reuse.as_ref().map_or(0, |e| e.len()));
        for (c, w) in self.children.iter().zip(self.weights.iter_mut()) {
            if c.state() == ConnectivityState::Ready && c.picker().single().is_some() {
                weights.push(w.weight.effective(now, &config));
            }
        }
        let scaled = scale(&weights);
        let entries = match reuse {
            Some(e) if e.len() == weights.len() => {
                if self.reported == Some(ConnectivityState::Ready)
                    && self.published.as_ref() == Some(&scaled)
                {
                    // The schedule already published: nothing to publish.
                    self.ready_entries = Some(e);
                    return Some(Scheduled::Same);
                }
                e
            }
            _ => {
                // Same filter and order as the weights above.
                let endpoints = self
                    .children
                    .iter()
                    .zip(&self.weights)
                    .filter(|(c, _)| c.state() == ConnectivityState::Ready)
                    .filter_map(|(c, w)| Some((c.picker().single()?.clone(), w.weight.clone())))
                    .collect();
                scheduler::entries(endpoints)
            }
        };
        let picker = WrrPicker::over(entries, scaled.as_deref())?;
        self.ready_entries = Some(picker.entries().clone());
        self.published = Some(scaled);
        Some(Scheduled::New(picker))
    }
}

/// What a schedule rebuild came to.
enum Scheduled {
    /// A new schedule, to publish.
    New(WrrPicker),
    /// The one already published, unchanged.
    Same,
}

impl Petiole for WeightedRoundRobin {
    fn fail_all(&mut self, cc: &mut dyn ClientConn, picker: Box<dyn Picker>) {
        self.reported = Some(ConnectivityState::TransientFailure);
        cc.update_state(ConnectivityState::TransientFailure, picker);
    }

    fn republish(&mut self, cc: &mut dyn ClientConn) {
        self.regenerate(cc);
    }
}

impl ChildParent for WeightedRoundRobin {
    fn children(&mut self) -> &mut ChildManager {
        &mut self.children
    }

    /// After a child changed: reconnect it if it went IDLE, restart its
    /// blackout if it connected anew, republish.
    fn child_changed(&mut self, cc: &mut dyn ClientConn, key: &str) {
        self.children.keep_connected(cc, key);
        self.align(cc);
        if let Some(at) = self.children.position(key) {
            let connected = self.connected(at);
            if let Some(w) = self.weights.get_mut(at) {
                if connected.is_some() && connected != w.connected {
                    w.weight.connected_anew();
                }
                w.connected = connected;
            }
            self.sync_oob(cc, at);
        }
        // Rebuilding is O(endpoints): deferred to `work`, so a burst of
        // changes (10,000 endpoints connecting) costs one rebuild, not one
        // each. The loop runs it right after the changes already queued.
        if !self.dirty {
            self.dirty = true;
            cc.work_scheduler().schedule_work();
        }
    }
}

impl Balancer for WeightedRoundRobin {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let config = state.config_as::<WrrConfig>().cloned().unwrap_or_default();
        self.config.store(Arc::new(config));
        if state.addresses.is_empty() {
            // No endpoint left: nothing to weigh or listen to.
            self.stop_oob(cc);
            self.weights.clear();
            self.weights_layout = None;
            self.stop_timer(cc);
        }
        self.take_endpoints(cc, &state)?;
        self.align(cc);
        // The config may have turned OOB reporting on or off, or changed
        // its period.
        for at in 0..self.weights.len() {
            self.sync_oob(cc, at);
        }
        self.arm_timer(cc);
        self.regenerate(cc);
        Ok(())
    }

    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.take_resolver_error(cc, error);
    }

    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        self.route_subconn_state(cc, sc, state);
    }

    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        self.exit_idle_children(cc);
        self.regenerate(cc);
    }

    fn work(&mut self, cc: &mut dyn ClientConn) {
        self.route_work(cc);
        if self.dirty {
            self.regenerate(cc);
        }
    }

    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        if self.route_timer(cc, token) {
            return;
        }
        if self.timer.is_some_and(|(t, _)| t == token) {
            self.timer = None;
            self.arm_timer(cc);
            // New weights (reports, blackouts ending, expiry) take effect.
            if self.reported == Some(ConnectivityState::Ready) {
                self.regenerate_keeping_endpoints(cc);
            }
        }
    }

    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.stop_timer(cc);
        self.stop_oob(cc);
        self.children.close(cc);
        self.weights.clear();
        self.weights_layout = None;
    }
}
