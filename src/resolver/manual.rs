//! A resolver driven by hand, as gRPC-Go's `resolver/manual`: register it
//! for a scheme (`resolver::register`), make a channel with a target of
//! that scheme, then push states and errors to it. For tests of channels
//! and policies, and for hosts that learn addresses some other way.
//!
//! ```
//! use switchyard::resolver::manual::ManualResolver;
//! use switchyard::resolver::{self, ResolverState};
//! use switchyard::{Address, Channel, ChannelOptions, Endpoint, Runtime};
//! use std::sync::Arc;
//!
//! let state = |addr: &str| ResolverState {
//!     endpoints: vec![Endpoint::from(Address::new(addr))],
//!     service_config: None,
//! };
//! let rt = Runtime::new()?;
//! let r = ManualResolver::new("doc-manual");
//! r.set_initial_state(Some(state("127.0.0.1:50051")));
//! resolver::register(Arc::new(r.clone()));
//! let ch = Channel::new(&rt, "doc-manual:///anything", None, ChannelOptions::default())?;
//! ch.request_connect()?; // the channel resolves: its initial state comes
//! ch.sync()?;
//! assert_eq!(r.builds(), 1);
//! r.update(state("127.0.0.1:50052"))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::{Resolver, ResolverBuilder, ResolverClientConn, ResolverState, Target};
use crate::error::Error;
use crate::sync::{lock, Mutex};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the resolver does when its channel asks it to resolve again.
type ResolveNow = Arc<dyn Fn(&ResolverClientConn) + Send + Sync>;

/// A resolver for one scheme whose states come from whoever holds it. A
/// clone is the same resolver. Built again (a channel leaving IDLE, a
/// second channel), it serves the latest build.
#[derive(Clone)]
pub struct ManualResolver(Arc<Shared>);

struct Shared {
    scheme: String,
    inner: Mutex<Inner>,
    builds: AtomicUsize,
    closes: AtomicUsize,
    resolve_nows: AtomicUsize,
    rejected: AtomicUsize,
}

#[derive(Default)]
struct Inner {
    /// The latest build's channel, until that build is closed.
    cc: Option<ResolverClientConn>,
    /// Pushed from inside every build (gRPC-Go's `InitialState`).
    initial: Option<ResolverState>,
    on_resolve_now: Option<ResolveNow>,
}

impl ManualResolver {
    /// A resolver for targets `scheme:...`.
    pub fn new(scheme: impl Into<String>) -> ManualResolver {
        ManualResolver(Arc::new(Shared {
            scheme: scheme.into(),
            inner: Mutex::new(Inner::default()),
            builds: AtomicUsize::new(0),
            closes: AtomicUsize::new(0),
            resolve_nows: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
        }))
    }

    /// What each build pushes before it returns (gRPC-Go's
    /// `InitialState`): a channel that resolves (again, leaving IDLE) gets
    /// it at once. `None`: nothing.
    pub fn set_initial_state(&self, state: Option<ResolverState>) {
        lock(&self.0.inner).initial = state;
    }

    /// Runs `f` with the channel's client conn on every re-resolution the
    /// channel asks for (gRPC-Go's `ResolveNowCallback`), on the channel's
    /// loop: it may push an answer (`ResolverClientConn::update` queues it)
    /// or an error.
    pub fn on_resolve_now(&self, f: impl Fn(&ResolverClientConn) + Send + Sync + 'static) {
        lock(&self.0.inner).on_resolve_now = Some(Arc::new(f));
    }

    /// The client conn of the latest build, while that build is open.
    pub fn client_conn(&self) -> Option<ResolverClientConn> {
        lock(&self.0.inner).cc.clone()
    }

    /// Pushes `state` to the channel of the latest build (gRPC-Go's
    /// `UpdateState`). `Error::Closed` when no build is open (never built,
    /// or closed: an IDLE channel), or when its channel refuses it.
    pub fn update(&self, state: ResolverState) -> Result<(), Error> {
        self.client_conn().ok_or(Error::Closed)?.update(state)
    }

    /// Reports a resolution error to the channel of the latest build
    /// (gRPC-Go's `ReportError`); `Error::Closed` as for `update`.
    pub fn report_error(&self, message: &str) -> Result<(), Error> {
        self.client_conn()
            .ok_or(Error::Closed)?
            .report_error(message)
    }

    /// How many times a channel built it.
    pub fn builds(&self) -> usize {
        self.0.builds.load(Ordering::Acquire)
    }

    /// How many of its builds were closed.
    pub fn closes(&self) -> usize {
        self.0.closes.load(Ordering::Acquire)
    }

    /// How many re-resolutions channels asked for (`Resolver::resolve_now`).
    pub fn resolve_nows(&self) -> usize {
        self.0.resolve_nows.load(Ordering::Acquire)
    }

    /// How many times a channel rejected a pushed state and asked again
    /// (`Resolver::update_rejected`).
    pub fn rejected(&self) -> usize {
        self.0.rejected.load(Ordering::Acquire)
    }
}

impl ResolverBuilder for ManualResolver {
    fn scheme(&self) -> &str {
        &self.0.scheme
    }

    fn build(&self, _: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
        let build = self.0.builds.fetch_add(1, Ordering::AcqRel) + 1;
        let initial = lock(&self.0.inner).initial.clone();
        if let Some(state) = initial {
            // Queued for the channel, which reads it once the build is done.
            cc.update(state).map_err(|e| e.to_string())?;
        }
        lock(&self.0.inner).cc = Some(cc.clone());
        Ok(Box::new(Built {
            shared: self.0.clone(),
            cc,
            build,
        }))
    }
}

/// One build of a `ManualResolver`.
struct Built {
    shared: Arc<Shared>,
    cc: ResolverClientConn,
    /// Which build this is (the latest owns `Inner::cc`).
    build: usize,
}

impl Resolver for Built {
    fn resolve_now(&mut self) {
        self.shared.resolve_nows.fetch_add(1, Ordering::AcqRel);
        let callback = lock(&self.shared.inner).on_resolve_now.clone();
        if let Some(f) = callback {
            f(&self.cc);
        }
    }

    fn update_rejected(&mut self) {
        self.shared.rejected.fetch_add(1, Ordering::AcqRel);
        // As gRPC-Go's manual resolver: a rejected update is a request to
        // resolve again.
        self.resolve_now();
    }

    fn close(&mut self) {
        self.shared.closes.fetch_add(1, Ordering::AcqRel);
        if self.shared.builds.load(Ordering::Acquire) == self.build {
            lock(&self.shared.inner).cc = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::testing::TestResolverClientConn;
    use crate::{Address, Endpoint};

    fn state(addr: &str) -> ResolverState {
        ResolverState {
            endpoints: vec![Endpoint::from(Address::new(addr))],
            service_config: None,
        }
    }

    /// The first address of each state.
    fn addrs(states: &[ResolverState]) -> Vec<String> {
        states
            .iter()
            .map(|s| s.endpoints[0].addresses[0].addr.clone())
            .collect()
    }

    #[test]
    fn each_build_gets_the_initial_state_and_the_latest_build_the_pushes() {
        let r = ManualResolver::new("m");
        let target = Target::parse("m:///x").unwrap();
        assert_eq!(r.update(state("127.0.0.1:1")), Err(Error::Closed));
        r.set_initial_state(Some(state("127.0.0.1:1")));
        let (first, second) = (TestResolverClientConn::new(), TestResolverClientConn::new());
        let mut a = r.build(&target, first.client_conn()).unwrap();
        assert_eq!(addrs(&first.updates()), ["127.0.0.1:1"]);
        let mut b = r.build(&target, second.client_conn()).unwrap();
        assert_eq!(addrs(&second.updates()), ["127.0.0.1:1"]);
        r.update(state("127.0.0.1:2")).unwrap();
        r.report_error("gone").unwrap();
        assert_eq!(first.updates().len(), 1, "the older build hears nothing");
        assert_eq!(addrs(&second.updates()), ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(second.errors(), ["gone"]);
        // Closing the older build leaves the latest's channel in place.
        a.close();
        assert!(r.client_conn().is_some());
        b.close();
        assert!(r.client_conn().is_none());
        assert_eq!(r.update(state("127.0.0.1:3")), Err(Error::Closed));
        assert_eq!((r.builds(), r.closes()), (2, 2));
    }

    #[test]
    fn re_resolutions_are_counted_and_answered_by_the_callback() {
        let r = ManualResolver::new("m");
        let cc = TestResolverClientConn::new();
        let mut built = r
            .build(&Target::parse("m:///x").unwrap(), cc.client_conn())
            .unwrap();
        built.resolve_now();
        assert!(cc.updates().is_empty());
        r.on_resolve_now(|cc| cc.update(state("127.0.0.1:9")).unwrap());
        built.resolve_now();
        // A rejected update asks again, as gRPC-Go's ErrBadResolverState.
        built.update_rejected();
        assert_eq!(addrs(&cc.updates()), ["127.0.0.1:9", "127.0.0.1:9"]);
        assert_eq!((r.resolve_nows(), r.rejected()), (3, 1));
    }
}
