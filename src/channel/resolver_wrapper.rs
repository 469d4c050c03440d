//! A channel's side of name resolution (gRPC-Go's `ccResolverWrapper`): the
//! resolver built from the target through the registry, the handle it
//! pushes through (`ResolverClientConn`, whose pushes reach the channel's
//! loop task as commands), re-resolution requests passed on to it, its
//! updates applied to the policy, and its close when the channel closes.
//! The empty target has no resolver: the host pushes through `Channel`'s
//! own methods and hears re-resolution requests through `on_resolve_now`.

use super::core::ChannelCore;
use super::shared::ChannelId;
use crate::address::Endpoint;
use crate::balancer::picker::FailPicker;
use crate::balancer::ClientConnState;
use crate::connectivity::ConnectivityState;
use crate::error::Error;
use crate::resolver::{Resolver, ResolverClientConn, ResolverSink, ResolverState};
use crate::runtime::{panic_message, LoopContext, LoopHandle};
use crate::service_config::ServiceConfig;
use crate::trace;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The channel's resolver, or the host's callback for the empty target.
pub(crate) struct ResolverWrapper {
    resolver: Option<Box<dyn Resolver>>,
    on_resolve_now: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Set when the resolver is closed: its pushes are refused from then on.
    closed: Arc<AtomicBool>,
    /// The resolver's last service config applied (JSON), so that a resolver
    /// repeating it (DNS on every lookup) does not re-apply it.
    last_config: Option<String>,
}

impl ResolverWrapper {
    pub(crate) fn new(on_resolve_now: Option<Arc<dyn Fn() + Send + Sync>>) -> ResolverWrapper {
        ResolverWrapper {
            resolver: None,
            on_resolve_now,
            closed: Arc::new(AtomicBool::new(false)),
            last_config: None,
        }
    }

    /// The handle a resolver for channel `id` on `handle` pushes through.
    pub(crate) fn client_conn(&self, handle: LoopHandle, id: ChannelId) -> ResolverClientConn {
        ResolverClientConn::new(Arc::new(ChannelSink {
            handle,
            id,
            closed: self.closed.clone(),
        }))
    }

    /// The channel's resolver is `resolver` (built off the loop).
    pub(crate) fn install(&mut self, mut resolver: Box<dyn Resolver>) {
        if self.closed.load(Ordering::Acquire) {
            // The channel closed while it was being built.
            guarded("close", || resolver.close());
            return;
        }
        self.resolver = Some(resolver);
    }

    fn resolve_now(&mut self) {
        match &mut self.resolver {
            Some(r) => guarded("resolve_now", || r.resolve_now()),
            None => {
                if let Some(cb) = &self.on_resolve_now {
                    cb();
                }
            }
        }
    }

    /// Closes the resolver (once): it hears no more, and its pushes are refused.
    pub(crate) fn close(&mut self) {
        self.closed.store(true, Ordering::Release);
        if let Some(mut r) = self.resolver.take() {
            guarded("close", || r.close());
        }
    }
}

/// Runs a resolver callback; a panic is logged and swallowed (the resolver
/// stays: a resolver is not trusted with the channel's state, only asked).
fn guarded(what: &str, f: impl FnOnce()) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        log::error!(
            target: trace::RESOLVER,
            "resolver {what} panicked: {}",
            panic_message(&*p)
        );
    }
}

/// A resolver's pushes, as commands to its channel's loop task.
struct ChannelSink {
    handle: LoopHandle,
    id: ChannelId,
    closed: Arc<AtomicBool>,
}

impl ChannelSink {
    fn send(
        &self,
        f: impl FnOnce(&mut ChannelCore, &mut LoopContext) + Send + 'static,
    ) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let closed = self.closed.clone();
        let sent = self
            .handle
            .run_on(self.id, move |core: &mut ChannelCore, cx| {
                // Pushed before the close, arrived after it: dropped.
                if !closed.load(Ordering::Acquire) {
                    f(core, cx)
                }
            });
        if sent {
            Ok(())
        } else {
            Err(Error::RuntimeGone)
        }
    }
}

impl ResolverSink for ChannelSink {
    fn update(&self, state: ResolverState) -> Result<(), Error> {
        // Parsed here, off the loop.
        let config = state
            .service_config
            .map(|json| ServiceConfig::parse(Some(&json)).map(|c| (json, c)));
        let endpoints = state.endpoints;
        self.send(move |core, cx| core.resolver_update(endpoints, config, cx))
    }

    fn report_error(&self, message: String) -> Result<(), Error> {
        self.send(move |core, cx| core.resolver_error(&message, cx))
    }
}

/// A service config from a resolver: its JSON and what it parsed to.
type ResolvedConfig = Result<(String, ServiceConfig), String>;

impl ChannelCore {
    /// Asks for a new resolution: the resolver's `resolve_now`, or the host's
    /// callback (empty target).
    pub(super) fn resolve(&mut self, _env: &mut LoopContext) {
        self.resolution.resolve_now();
    }

    /// A resolver's update: a service config it carries (if valid and new)
    /// is applied, then the endpoints go to the policy.
    fn resolver_update(
        &mut self,
        endpoints: Vec<Endpoint>,
        config: Option<ResolvedConfig>,
        env: &mut LoopContext,
    ) {
        if self.out.closed {
            return;
        }
        match config {
            Some(Ok((json, config))) if self.resolution.last_config.as_ref() != Some(&json) => {
                self.resolution.last_config = Some(json);
                // The config applies to these endpoints (one policy update).
                self.endpoints = Some(endpoints);
                self.apply_config(config, env);
                return;
            }
            Some(Err(e)) => log::warn!(
                target: trace::RESOLVER,
                "channel {}: the resolver's service config is invalid, keeping the last good one: {e}",
                self.id()
            ),
            _ => {}
        }
        self.update_endpoints(endpoints, env);
    }

    /// New endpoints (the resolver's, or the host's) to the policy.
    pub(crate) fn update_endpoints(&mut self, endpoints: Vec<Endpoint>, env: &mut LoopContext) {
        if self.out.closed {
            return;
        }
        log::debug!(
            target: trace::RESOLVER,
            "channel {}: {} endpoint(s) to the policy: {}",
            self.id(),
            endpoints.len(),
            endpoints
                .iter()
                .flat_map(|e| e.addresses.iter().map(|a| a.addr.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.endpoints = Some(endpoints.clone());
        self.ensure_balancer();
        let config = self.config.policy_config.clone();
        let mut result = Ok(());
        self.run_balancer(env, |b, cc| {
            result = b.update_client_conn_state(cc, ClientConnState::new(endpoints, config))
        });
        if result.is_err() {
            self.resolve_requested = true;
        }
        self.drain(env);
    }

    pub(crate) fn resolver_error(&mut self, error: &str, env: &mut LoopContext) {
        if self.out.closed {
            return;
        }
        log::warn!(target: trace::RESOLVER, "channel {}: resolver error: {error}", self.id());
        self.out.cause = Some(format!("name resolver error: {error}"));
        if self.balancer.is_none() && self.endpoints.is_none() {
            // No policy yet: fail fast with the resolver's own error.
            self.out.publish(
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::unavailable(format!(
                    "name resolver error: {error}"
                ))),
            );
            self.out.cause = None;
            return;
        }
        self.run_balancer(env, |b, cc| b.resolver_error(cc, error));
        self.out.cause = None;
        self.drain(env);
    }
}
