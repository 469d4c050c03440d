//! What the C layer keeps per channel for its calls (shared by the runtime,
//! channel, reader and call objects, so it sits below all of them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the C layer keeps per channel for its calls: whether the channel is
/// closing, so that calls failing from then on report SY_CLOSED. (Started
/// calls themselves live on the event loop; the core's channel completes them
/// and waits for their callbacks when it closes.)
pub(crate) struct CallPool {
    /// Set before the channel closes (sy_channel_close / _free,
    /// sy_runtime_free): failures from then on are SY_CLOSED.
    closing: AtomicBool,
}

impl CallPool {
    /// `_call_threads`: `sy_channel_options_set_call_threads`, which no
    /// longer means anything (started calls cost no thread).
    pub(crate) fn new(_call_threads: usize) -> Arc<CallPool> {
        Arc::new(CallPool {
            closing: AtomicBool::new(false),
        })
    }

    /// Closes channels with `close` after marking `pools` closing (so their
    /// calls' failures from then on are SY_CLOSED). `close` returns once
    /// every started call's callback has returned (the core's
    /// `Channel::close` / `Runtime` drop wait for them).
    pub(crate) fn close_joined(pools: &[Arc<CallPool>], close: impl FnOnce()) {
        for pool in pools {
            pool.closing.store(true, Ordering::Release);
        }
        close();
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}
