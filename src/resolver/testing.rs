//! A `ResolverClientConn` for unit tests of a resolver, with no channel or
//! runtime (gRPC-Go's resolver tests implement `resolver.ClientConn`
//! themselves): it records what the resolver pushes, and can stand for a
//! channel that closed its resolver.

use super::{ResolverClientConn, ResolverOptions, ResolverSink, ResolverState};
use crate::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Records a resolver's pushes. Hand `client_conn()` to
/// `ResolverBuilder::build`; read what came with `updates` and `errors`.
#[derive(Default)]
pub struct TestResolverClientConn {
    recorded: Arc<Recorded>,
    options: ResolverOptions,
}

#[derive(Default)]
struct Recorded {
    pushes: Mutex<Pushes>,
    changed: Condvar,
    closed: AtomicBool,
}

#[derive(Default)]
struct Pushes {
    updates: Vec<ResolverState>,
    errors: Vec<String>,
}

impl TestResolverClientConn {
    /// Records with the default `ResolverOptions`.
    pub fn new() -> TestResolverClientConn {
        TestResolverClientConn::default()
    }

    /// Records, telling the resolver `options` (`ResolverClientConn::options`).
    pub fn with_options(options: ResolverOptions) -> TestResolverClientConn {
        TestResolverClientConn {
            recorded: Arc::default(),
            options,
        }
    }

    /// What the resolver under test pushes through (cloneable, any thread).
    pub fn client_conn(&self) -> ResolverClientConn {
        ResolverClientConn::new(self.recorded.clone()).with_options(self.options.clone())
    }

    /// Every update pushed so far, in order.
    pub fn updates(&self) -> Vec<ResolverState> {
        self.recorded.lock().updates.clone()
    }

    /// Every error reported so far, in order.
    pub fn errors(&self) -> Vec<String> {
        self.recorded.lock().errors.clone()
    }

    /// Waits up to `timeout` until at least `n` updates and errors in all
    /// have come (a resolver that pushes from a thread of its own); whether
    /// they did.
    pub fn wait_for_pushes(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pushes = self.recorded.lock();
        loop {
            if pushes.updates.len() + pushes.errors.len() >= n {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            pushes = self
                .recorded
                .changed
                .wait_timeout(pushes, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// From now on pushes are refused with `Error::Closed`, as after the
    /// channel closed the resolver.
    pub fn close(&self) {
        self.recorded.closed.store(true, Ordering::Release);
    }
}

impl Recorded {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pushes> {
        self.pushes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, f: impl FnOnce(&mut Pushes)) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        f(&mut self.lock());
        self.changed.notify_all();
        Ok(())
    }
}

impl ResolverSink for Recorded {
    fn update(&self, state: ResolverState) -> Result<(), Error> {
        self.push(|p| p.updates.push(state))
    }

    fn report_error(&self, message: String) -> Result<(), Error> {
        self.push(|p| p.errors.push(message))
    }
}
