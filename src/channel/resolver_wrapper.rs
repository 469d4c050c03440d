//! A channel's side of name resolution (gRPC-Go's `ccResolverWrapper`): the
//! resolver built from the target through the registry, the handle it
//! pushes through (`ResolverClientConn`: each push becomes a command to the
//! channel's loop task, which applies it through `ResolverUpdates`), the
//! choice of which of its service configs to apply, re-resolution requests
//! passed on to it, and its close when the channel closes. The empty
//! target has no resolver: the host pushes through `Channel`'s own methods
//! and hears re-resolution requests through `on_resolve_now`.

use super::shared::ChannelId;
use crate::address::Endpoint;
use crate::backoff::{Backoff, BackoffConfig};
use crate::error::Error;
use crate::resolver::{Resolver, ResolverClientConn, ResolverOptions, ResolverSink, ResolverState};
use crate::runtime::{panic_message, LoopContext, LoopHandle, Task, TaskId, TimerKey};
use crate::service_config::ServiceConfig;
use crate::trace;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A service config from a resolver: its JSON and what it parsed to.
pub(super) type ResolvedConfig = Result<(String, ServiceConfig), String>;

/// What a resolver's pushes become on the loop: the channel's loop task
/// implements it.
pub(super) trait ResolverUpdates: Task {
    /// New endpoints, and maybe a service config (see
    /// `ResolverWrapper::new_config`).
    fn apply_resolved(
        &mut self,
        endpoints: Vec<Endpoint>,
        config: Option<ResolvedConfig>,
        cx: &mut LoopContext,
    );
    /// The resolver failed.
    fn apply_resolver_error(&mut self, error: &str, cx: &mut LoopContext);
}

/// The channel's resolver, or the host's callback for the empty target.
pub(crate) struct ResolverWrapper {
    resolver: Option<Box<dyn Resolver>>,
    on_resolve_now: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Set when the resolver is closed: its pushes are refused from then on.
    closed: Arc<AtomicBool>,
    /// The resolver's last service config applied (JSON), so that a resolver
    /// repeating it (DNS on every lookup) does not re-apply it.
    last_config: Option<String>,
    /// A resolver update has brought a valid config (or none, keeping the
    /// channel's own) before: an invalid one keeps that one.
    had_good: bool,
    /// What the channel asks of its resolvers.
    options: ResolverOptions,
    /// Paces the re-resolutions asked for because the policy or the config
    /// rejected what the resolver gave: backing off as gRPC-Go's DNS
    /// resolver does when told its state was bad, so a resolver that
    /// answers every `resolve_now` at once with the same state does not
    /// spin the loop. Reset by an update the policy accepts.
    retry: Backoff,
    /// The pending paced re-resolution's timer.
    retry_timer: Option<u64>,
}

/// The kind of the channel's paced re-resolution timer (`TimerKey::kind`).
pub(crate) const RESOLVE_RETRY_TIMER: u8 = 10;

/// What a resolver's update does to the channel's service config.
pub(super) enum ConfigChoice {
    /// The current one stays.
    Keep,
    /// Invalid, after a good one: the current one stays and the endpoints
    /// go to the policy, but the update counts as rejected (gRPC-Go
    /// returns ErrBadResolverState): the resolver is asked again, paced.
    KeepRejected,
    /// The resolver no longer gives one: the channel's default applies
    /// again (gRPC: a resolver result without a config means the default).
    Default,
    /// A new valid one.
    Apply(ServiceConfig),
    /// Invalid, and no good one before it: the channel fails with this.
    Invalid(String),
}

impl ResolverWrapper {
    pub(crate) fn new(on_resolve_now: Option<Arc<dyn Fn() + Send + Sync>>) -> ResolverWrapper {
        ResolverWrapper {
            resolver: None,
            on_resolve_now,
            closed: Arc::new(AtomicBool::new(false)),
            last_config: None,
            had_good: false,
            options: ResolverOptions::default(),
            retry: Backoff::new(BackoffConfig::default()),
            retry_timer: None,
        }
    }

    /// Paces re-resolution after a rejected update by `backoff` (the
    /// channel's connection backoff).
    pub(crate) fn with_backoff(mut self, backoff: BackoffConfig) -> ResolverWrapper {
        self.retry = Backoff::new(backoff);
        self
    }

    pub(crate) fn with_options(mut self, options: ResolverOptions) -> ResolverWrapper {
        self.options = options;
        self
    }

    /// The handle for a new resolver, each time the channel leaves IDLE:
    /// the previous resolver's pushes stay refused.
    pub(super) fn reopen<T: ResolverUpdates>(
        &mut self,
        handle: LoopHandle,
        id: ChannelId,
    ) -> ResolverClientConn {
        self.closed = Arc::new(AtomicBool::new(false));
        self.client_conn::<T>(handle, id)
            .with_options(self.options.clone())
    }

    /// The handle a resolver for channel `id` (a `T` on `handle`'s loop)
    /// pushes through.
    pub(super) fn client_conn<T: ResolverUpdates>(
        &self,
        handle: LoopHandle,
        id: ChannelId,
    ) -> ResolverClientConn {
        ResolverClientConn::new(Arc::new(ChannelSink::<T> {
            handle,
            id,
            closed: self.closed.clone(),
            task: PhantomData,
        }))
    }

    /// The config to apply with a resolver's update: a valid one that
    /// differs from the last it sent; an invalid one keeps the last good
    /// one (logged) or, when there is none yet, is the channel's error
    /// (gRPC's rule, A21); `None` means the channel's default config, so a
    /// config the resolver stops sending (a TXT record removed) is undone,
    /// and so is a channel `failing` with an invalid one.
    pub(super) fn new_config(
        &mut self,
        config: Option<ResolvedConfig>,
        failing: bool,
        channel: ChannelId,
    ) -> ConfigChoice {
        // Ignored when the channel is told to (`disable_service_config`):
        // as if the resolver gave none, so the default applies.
        let config = config.filter(|_| !self.options.disable_service_config);
        let Some(config) = config else {
            // The channel's own (default) config, a good one: back in force
            // after the resolver's own config, or after its invalid one.
            self.had_good = true;
            return match self.last_config.take() {
                Some(_) => ConfigChoice::Default,
                None if failing => ConfigChoice::Default,
                None => ConfigChoice::Keep,
            };
        };
        match config {
            Ok((json, config)) => {
                self.had_good = true;
                if self.last_config.as_ref() == Some(&json) {
                    return ConfigChoice::Keep;
                }
                self.last_config = Some(json);
                ConfigChoice::Apply(config)
            }
            Err(e) if self.had_good => {
                log::warn!(
                    target: trace::RESOLVER,
                    "channel {channel}: the resolver's service config is invalid, \
                     keeping the last good one: {e}"
                );
                ConfigChoice::KeepRejected
            }
            Err(e) => ConfigChoice::Invalid(e),
        }
    }

    /// The resolver failed while the channel's own (valid) default config
    /// is in force: that config counts as the last good one, so an invalid
    /// config from the resolver later keeps it (gRPC-Go applies the default
    /// on a resolver error when it has no config yet).
    pub(super) fn default_in_force(&mut self) {
        self.had_good = true;
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

    /// The resolver could not be built: what it pushed while building is
    /// dropped, as a closed resolver's is (the channel fails with the
    /// build's error instead).
    pub(crate) fn refused(&mut self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Asks for a new resolution: the resolver's `resolve_now`, or the
    /// host's callback (empty target).
    pub(super) fn resolve_now(&mut self) {
        match &mut self.resolver {
            Some(r) => guarded("resolve_now", || r.resolve_now()),
            None => {
                if let Some(cb) = &self.on_resolve_now {
                    cb();
                }
            }
        }
    }

    /// The policy or the config rejected the resolver's update: ask it
    /// again once the backoff allows (one request pending at a time).
    pub(super) fn rejected(&mut self, channel: TaskId, cx: &mut LoopContext) {
        if self.retry_timer.is_some() {
            return;
        }
        let now = cx.clock.now();
        let rng = &mut cx.rng;
        self.retry.start_attempt(now, &mut || rng.uniform());
        let at = self.retry.next_attempt().unwrap_or(now);
        let key = TimerKey::new(RESOLVE_RETRY_TIMER, 0);
        self.retry_timer = Some(cx.timers.schedule(at, channel, key));
    }

    /// The policy accepted an update: the next rejection waits the least.
    pub(super) fn accepted(&mut self, cx: &mut LoopContext) {
        self.retry.reset();
        if let Some(t) = self.retry_timer.take() {
            cx.timers.cancel(t);
        }
    }

    /// `Channel::reset_connect_backoff`: a paced re-resolution waiting out
    /// its backoff goes now, and the pacing starts over (C-core's
    /// `ResetBackoff` re-resolves so; grpc-java's refreshes the resolver;
    /// gRPC-Go resets only its subchannels).
    pub(super) fn reset_backoff(&mut self, cx: &mut LoopContext) {
        self.retry.reset();
        if let Some(t) = self.retry_timer.take() {
            cx.timers.cancel(t);
            self.retry_due();
        }
    }

    /// The paced re-resolution is due (not for a closed resolver: an IDLE
    /// channel resolves afresh when it is used again).
    pub(super) fn retry_due(&mut self) {
        self.retry_timer = None;
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        match &mut self.resolver {
            Some(r) => guarded("update_rejected", || r.update_rejected()),
            None => self.resolve_now(),
        }
    }

    /// Closes the resolver (once): it hears no more, and its pushes are
    /// refused. A paced re-resolution still pending goes with it, and the
    /// pacing starts over for the next resolver (an IDLE channel's).
    pub(crate) fn close(&mut self, cx: &mut LoopContext) {
        self.accepted(cx);
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

/// A resolver's pushes, as commands to its channel's loop task (a `T`).
struct ChannelSink<T> {
    handle: LoopHandle,
    id: ChannelId,
    closed: Arc<AtomicBool>,
    task: PhantomData<fn() -> T>,
}

impl<T: ResolverUpdates> ChannelSink<T> {
    fn send(&self, f: impl FnOnce(&mut T, &mut LoopContext) + Send + 'static) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let closed = self.closed.clone();
        let sent = self.handle.run_on(self.id, move |task: &mut T, cx| {
            // Pushed before the close, arrived after it: dropped.
            if !closed.load(Ordering::Acquire) {
                f(task, cx)
            }
        });
        if sent {
            Ok(())
        } else {
            Err(Error::RuntimeGone)
        }
    }
}

impl<T: ResolverUpdates> ResolverSink for ChannelSink<T> {
    fn update(&self, state: ResolverState) -> Result<(), Error> {
        // Parsed here, off the loop. Empty text is no config: the channel's
        // default (not the empty config `{}`, which would replace it).
        let config = state
            .service_config
            .filter(|json| !json.trim().is_empty())
            .map(|json| ServiceConfig::parse(Some(&json)).map(|c| (json, c)));
        let endpoints = state.endpoints;
        self.send(move |task, cx| task.apply_resolved(endpoints, config, cx))
    }

    fn report_error(&self, message: String) -> Result<(), Error> {
        self.send(move |task, cx| task.apply_resolver_error(&message, cx))
    }
}
