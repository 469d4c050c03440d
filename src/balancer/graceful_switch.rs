//! Graceful policy switch (gRPC-Go's `internal/balancer/gracefulswitch`): a
//! parent policy that runs the channel's policy as its child and, when the
//! service config names another one, builds the new policy beside the old
//! one instead of closing the old one first. The old one keeps serving picks
//! until the new one is worth switching to; then the new one's state and
//! picker are published and the old one is closed, its subchannels shut down
//! one by one (each drains its calls in flight).
//!
//! The rules, exactly gRPC-Go's:
//! - the first policy is *current* at once; a later one is *pending*
//!   (replacing, and closing, any earlier pending one);
//! - resolver updates, resolver errors and `exit_idle` go to the latest
//!   policy (pending if there is one, else current); subchannel states,
//!   timers and picker work go to whichever policy owns them;
//! - the current policy's states are published as they come, except that
//!   when it leaves READY while a pending one exists, the pending one is
//!   swapped in (nothing is connected, nothing to keep serving);
//! - a pending policy's states are kept, not published; it is swapped in as
//!   soon as it reports anything other than CONNECTING, or anything at all
//!   while the current one is not READY.
//!
//! The two children live in a [`ChildManager`], which does the routing; this
//! module only decides which child is which and when to swap.
//!
//! A parent policy whose config names a child policy (outlier detection's
//! `childPolicy`) runs its child through one of these too, as gRPC-Go's
//! parents do: built by [`Switching`] and told the child's policy with each
//! update ([`SwitchTo`]), so a config naming another child policy switches
//! as gracefully as the channel's own policy does.

use crate::balancer::child_manager::{ChildManager, Published};
use crate::balancer::picker::{FailPicker, ForwardingPicker, Picker};
use crate::balancer::subconn::SubConnId;
use crate::balancer::{
    Balancer, Builder, ClientConn, ClientConnState, LbConfig, SubConnState, TimerToken,
};
use crate::connectivity::ConnectivityState;
use crate::trace;
use std::sync::Arc;

/// A parent policy that switches its one child policy gracefully (see the
/// module docs). The channel's policy is always one of these.
pub struct GracefulSwitch {
    children: ChildManager,
    /// The key of the child whose picker is published.
    current: Option<String>,
    /// The key of the child waiting to be swapped in.
    pending: Option<String>,
    /// Makes every child's key unique, so that nothing addressed to a closed
    /// child can reach a later one.
    built: u64,
    /// Who this is in log lines (e.g. "channel 3").
    label: String,
    /// Closed: it builds nothing more and takes no update (gRPC-Go's
    /// `errBalancerClosed`).
    closed: bool,
}

impl Default for GracefulSwitch {
    fn default() -> GracefulSwitch {
        let mut children = ChildManager::default();
        // The rules apply to each publish as it comes, as in gRPC-Go (its
        // balancerWrapper.UpdateState): a child publishing twice in one
        // callback is seen twice.
        children.record_publishes();
        GracefulSwitch {
            children,
            current: None,
            pending: None,
            built: 0,
            label: String::new(),
            closed: false,
        }
    }
}

impl GracefulSwitch {
    /// No policy yet: call [`GracefulSwitch::switch_to`] before anything else.
    pub fn new() -> GracefulSwitch {
        GracefulSwitch::default()
    }

    /// Names this switch in its log lines (the channel passes "channel N").
    pub fn labelled(mut self, label: impl Into<String>) -> GracefulSwitch {
        self.label = label.into();
        self
    }

    /// The policy whose picker is published, if any.
    pub fn current_policy(&self) -> Option<&str> {
        self.policy_of(&self.current)
    }

    /// The policy waiting to be swapped in, if any.
    pub fn pending_policy(&self) -> Option<&str> {
        self.policy_of(&self.pending)
    }

    /// The newest policy (pending, else current): the one updates go to.
    pub fn latest_policy(&self) -> Option<&str> {
        self.pending_policy().or_else(|| self.current_policy())
    }

    /// Starts switching to `builder`'s policy: built beside the current one
    /// (which keeps serving) as the pending policy, replacing and closing an
    /// earlier pending one; with no policy yet it is current at once. A
    /// builder named exactly like the latest policy changes nothing: that
    /// is an update, which the caller sends next (names are case-sensitive,
    /// as in the registry and gRPC-Go's graceful switch). True if a policy
    /// was built.
    ///
    /// The new policy does nothing until it gets its first
    /// `update_client_conn_state`. Once the switch is closed it builds
    /// nothing (false).
    pub fn switch_to(&mut self, cc: &mut dyn ClientConn, builder: Arc<dyn Builder>) -> bool {
        let new = builder.name().to_string();
        if self.closed || self.latest_policy().is_some_and(|latest| latest == new) {
            return false;
        }
        self.built += 1;
        let key = format!("{}:{new}", self.built);
        if let Some(old) = self.pending.take() {
            log::info!(
                target: trace::CHANNEL,
                "{}: policy switch: pending {} dropped for {new}",
                self.label,
                self.children.get(&old).map_or("?", |c| c.policy())
            );
            self.children.remove(cc, &old);
        }
        self.children.add(cc, &key, builder);
        match self.current_policy() {
            None => self.current = Some(key),
            Some(current) => {
                log::info!(
                    target: trace::CHANNEL,
                    "{}: policy switch {current} -> {new}: pending",
                    self.label
                );
                // The serving policy is no longer the latest: its
                // re-resolution requests are ignored, as in gRPC-Go.
                if let Some(serving) = self.current.clone() {
                    self.children.set_resolve_now_passed_on(&serving, false);
                }
                self.pending = Some(key);
            }
        }
        true
    }

    fn policy_of(&self, key: &Option<String>) -> Option<&str> {
        key.as_deref()
            .and_then(|k| self.children.get(k))
            .map(|c| c.policy())
    }

    fn latest(&self) -> Option<String> {
        self.pending.clone().or_else(|| self.current.clone())
    }

    fn picker_of(&self, key: &Option<String>) -> Option<Arc<dyn Picker>> {
        key.as_deref()
            .and_then(|k| self.children.get(k))
            .map(|c| c.picker().clone())
    }

    fn state_of(&self, key: &Option<String>) -> Option<ConnectivityState> {
        key.as_deref()
            .and_then(|k| self.children.get(k))
            .map(|c| c.state())
    }

    /// Applies the switch rules to each publish the children made during
    /// one callback, in order: the current's are forwarded until one leaves
    /// READY while a pending policy waits (then the pending one is swapped
    /// in and the rest, the closed policy's, dropped); the pending's are
    /// kept until one is not CONNECTING, or comes while the current is not
    /// READY (then it is swapped in with that publish, and the ones after
    /// it are forwarded as the current's).
    fn after(&mut self, cc: &mut dyn ClientConn) {
        let current = self.current.clone();
        for (state, picker) in self.publishes(&current) {
            if state != ConnectivityState::Ready && self.pending.is_some() {
                // Nothing connected to keep serving from: take the new one.
                self.swap(cc, "current left READY", None);
                break;
            }
            cc.update_state(state, Box::new(ForwardingPicker(picker)));
        }
        let pending = self.pending.clone();
        let mut publishes = self.publishes(&pending).into_iter();
        while let Some((state, picker)) = publishes.next() {
            let why = if state != ConnectivityState::Connecting {
                "pending left CONNECTING"
            } else if self.state_of(&self.current) != Some(ConnectivityState::Ready) {
                "current not READY"
            } else {
                continue;
            };
            self.swap(cc, why, Some((state, picker)));
            for (state, picker) in publishes.by_ref() {
                cc.update_state(state, Box::new(ForwardingPicker(picker)));
            }
        }
    }

    /// What the child keyed `key` published since last asked.
    fn publishes(&mut self, key: &Option<String>) -> Vec<Published> {
        key.as_deref()
            .map(|k| self.children.take_publishes(k))
            .unwrap_or_default()
    }

    /// Publishes the child's latest state and picker.
    fn forward(&self, cc: &mut dyn ClientConn, key: &Option<String>) {
        if let (Some(state), Some(picker)) = (self.state_of(key), self.picker_of(key)) {
            cc.update_state(state, Box::new(ForwardingPicker(picker)));
        }
    }

    /// Pending becomes current: its state and picker (`publish`, else its
    /// latest) are published, then the old current is closed (its
    /// subchannels shut down, one by one, after readers already have the
    /// new picker).
    fn swap(&mut self, cc: &mut dyn ClientConn, why: &str, publish: Option<Published>) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let old = self.current.replace(pending);
        match publish {
            Some((state, picker)) => cc.update_state(state, Box::new(ForwardingPicker(picker))),
            None => self.forward(cc, &self.current.clone()),
        }
        let old_policy = self.policy_of(&old).unwrap_or("?").to_string();
        log::info!(
            target: trace::CHANNEL,
            "{}: policy switch {old_policy} -> {}: swapped in ({why}, {})",
            self.label,
            self.current_policy().unwrap_or("?"),
            self.state_of(&self.current)
                .unwrap_or(ConnectivityState::Connecting)
        );
        if let Some(old) = old {
            self.children.remove(cc, &old);
        }
    }

    /// Runs `f` (which calls into the children) and applies the switch rules
    /// to what they published.
    fn routed<R>(
        &mut self,
        cc: &mut dyn ClientConn,
        f: impl FnOnce(&mut ChildManager, &mut dyn ClientConn) -> R,
    ) -> R {
        let result = f(&mut self.children, cc);
        self.after(cc);
        result
    }
}

/// Builds [`GracefulSwitch`]es for a parent's child (see the module docs):
/// each update the parent gives it carries a [`SwitchTo`] config.
pub struct Switching {
    label: String,
}

impl Switching {
    /// A builder whose switches say `label` in their log lines.
    pub fn labelled(label: impl Into<String>) -> Switching {
        Switching {
            label: label.into(),
        }
    }
}

impl Builder for Switching {
    /// Never registered: a parent builds it directly.
    fn name(&self) -> &str {
        "graceful_switch"
    }

    fn build(&self) -> Box<dyn Balancer> {
        Box::new(GracefulSwitch::new().labelled(self.label.clone()))
    }
}

/// The config a [`Switching`]-built child gets: the policy to run (switched
/// to gracefully when it is not the latest one) and that policy's config.
pub struct SwitchTo {
    /// The child's policy.
    pub policy: Arc<dyn Builder>,
    /// Its parsed config.
    pub config: Option<LbConfig>,
}

impl SwitchTo {
    /// As an update's config.
    pub fn config(policy: Arc<dyn Builder>, config: Option<LbConfig>) -> Option<LbConfig> {
        Some(Arc::new(SwitchTo { policy, config }))
    }
}

impl Balancer for GracefulSwitch {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        mut state: ClientConnState,
    ) -> Result<(), String> {
        if self.closed {
            return Err("graceful switch is closed".into());
        }
        // A parent's update names the policy (gRPC-Go's gracefulswitch
        // takes the child's builder with its config the same way).
        if let Some(to) = state
            .config
            .clone()
            .and_then(|c| c.downcast::<SwitchTo>().ok())
        {
            self.switch_to(cc, to.policy.clone());
            state.config = to.config.clone();
        }
        let Some(latest) = self.latest() else {
            return Err("graceful switch has no policy (switch_to first)".into());
        };
        self.routed(cc, |children, cc| children.update_child(cc, &latest, state))
    }

    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        if self.closed {
            return;
        }
        match self.latest() {
            // Only the latest policy has this resolver's state.
            Some(latest) => self.routed(cc, |children, cc| {
                children.child_resolver_error(cc, &latest, error)
            }),
            None => cc.update_state(
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(error.to_string())),
            ),
        }
    }

    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        // The owner gets it, current or pending; a closed policy's
        // subchannels (their SHUTDOWN) reach nobody.
        self.routed(cc, |children, cc| children.subconn_state(cc, sc, state));
    }

    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        if let Some(latest) = self.latest() {
            self.routed(cc, |children, cc| children.exit_idle(cc, &latest));
        }
    }

    fn work(&mut self, cc: &mut dyn ClientConn) {
        let latest = self.latest();
        self.routed(cc, |children, cc| {
            // Work goes to the pickers' own policies; asked for by nobody's
            // picker, it is a request to leave IDLE, for the latest.
            if children.work(cc).is_empty() {
                if let Some(latest) = latest {
                    children.exit_idle(cc, &latest);
                }
            }
        });
    }

    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        self.routed(cc, |children, cc| children.timer(cc, token));
    }

    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.closed = true;
        self.current = None;
        self.pending = None;
        self.children.close(cc);
    }
}
