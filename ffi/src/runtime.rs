//! `sy_runtime`: one event-loop thread shared by any number of channels.

use crate::call_pool::CallPool;
use crate::error::Error;
use crate::macros::{boundary, boundary_or, free_refused_in_callback};
use crate::status::sy_status;
use std::sync::{Arc, Mutex, Weak};
use switchyard::Runtime;

/// An event loop (one thread). Opaque; owned by the caller (Box).
pub struct sy_runtime {
    inner: Runtime,
    /// The completion threads of its channels, stopped with it.
    pools: Mutex<Vec<Weak<CallPool>>>,
}

impl sy_runtime {
    pub(crate) fn get(&self) -> &Runtime {
        &self.inner
    }

    pub(crate) fn register_pool(&self, pool: &Arc<CallPool>) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        // Forget freed channels' pools so the list does not grow forever.
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }
}

/// Starts a runtime: one event-loop thread that runs every policy callback,
/// subchannel state machine and timer of the channels created on it.
///
/// On success `*out` is a new runtime, owned by the caller, to be freed with
/// `sy_runtime_free`. Any thread.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_runtime_new(out: *mut *mut sy_runtime) -> sy_status {
    boundary(|| {
        let out = try_out!(out, "out");
        let inner = Runtime::new()
            .map_err(|e| Error::new(sy_status::SY_IO, format!("cannot start the loop: {e}")))?;
        let rt = Box::into_raw(Box::new(sy_runtime {
            inner,
            pools: Mutex::new(Vec::new()),
        }));
        // SAFETY: `out` is non-NULL and writable per the contract.
        unsafe { out.write(rt) };
        Ok(())
    })
}

/// Stops the runtime: closes every channel still on it (waking their waiting
/// picks and calls with SY_CLOSED) and joins its thread, then the channels'
/// completion threads (every `sy_call_unary_start` callback has returned).
/// Channels created on it stay valid handles, but every call that needs the
/// loop returns SY_RUNTIME_GONE or SY_CLOSED; they must still be freed. NULL
/// is a no-op.
///
/// Any thread, called once; from inside a switchyard callback (which the
/// runtime's shutdown would have to wait for) nothing happens and
/// SY_WRONG_CONTEXT is recorded for `sy_last_error`.
#[no_mangle]
pub extern "C" fn sy_runtime_free(rt: *mut sy_runtime) {
    boundary_or((), || {
        if rt.is_null() {
            return;
        }
        if free_refused_in_callback(
            "sy_runtime_free: cannot free a runtime inside a switchyard callback",
        ) {
            return;
        }
        // SAFETY: from `sy_runtime_new`, freed once per the contract.
        let rt = unsafe { Box::from_raw(rt) };
        let pools: Vec<_> = (rt.pools.lock().unwrap_or_else(|p| p.into_inner()))
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        // Dropping the loop closes every channel: calls in flight fail,
        // queued ones too. The whole box goes, so its memory outlives the
        // loop's last callbacks (which may still name the runtime, if only
        // to be refused).
        CallPool::close_joined(&pools, || drop(rt));
    })
}
