//! `sy_balancer_waker`: how a policy written in C acts outside its own
//! callbacks (a timer thread of its own, a done callback on an RPC thread
//! that wants new weights published): it posts a function from any thread,
//! and the loop runs it as a callback of that balancer, with its `sy_cc`,
//! as gRPC-Go's policies call `UpdateState` from their own goroutines.
//!
//! Soundness, in short: the waker is a heap shell (see `handle.rs`) holding
//! an `Arc` of the balancer's queue of posted runs, never a pointer to the
//! balancer itself; the balancer takes its runs off the queue inside its
//! `work` callback, on the loop thread, and closes the queue (later posts
//! are SY_CLOSED, runs still queued are dropped unrun) before its `close`
//! callback. A waker outlives its balancer safely; after `_free` it is
//! quarantined like every freed handle.

use crate::error::{set_last, Error};
use crate::handle::{bury, Shell};
use crate::macros::{boundary, boundary_or};
use crate::policy::{sy_cc, Run, Wakeups};
use crate::status::sy_status;
use std::ffi::c_void;
use std::ptr::addr_of_mut;
use std::sync::Arc;

/// Runs in a C policy's balancer on the loop thread (see
/// `sy_balancer_waker_run`), with the balancer's own pointer, the `sy_cc`
/// to call back through, and the `arg` posted with it.
pub type sy_balancer_run_fn =
    Option<unsafe extern "C" fn(balancer: *mut c_void, cc: *mut sy_cc, arg: *mut c_void)>;

/// Lets any thread run a function in one C balancer (see
/// `sy_cc_waker_new`). Opaque; owned by the caller (`sy_balancer_waker_free`);
/// it may outlive its balancer (posts are then refused).
pub struct sy_balancer_waker(Shell<Arc<Wakeups>>);

/// A new waker for the balancer whose callback is running: call it inside
/// one of that balancer's callbacks (SY_WRONG_CONTEXT elsewhere), keep it,
/// and post to it from any thread with `sy_balancer_waker_run`. Free it with
/// `sy_balancer_waker_free` (before or after the balancer closes). On
/// success `*out` is the new waker; on failure it is left as it was.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_cc_waker_new(cc: *mut sy_cc, out: *mut *mut sy_balancer_waker) -> sy_status {
    boundary(|| {
        let out = try_out!(out, "out");
        let wakeups = crate::policy::with_client_conn(cc, |sycc, conn| {
            let wakeups = sycc.wakeups().clone();
            wakeups.set_work(conn.work_scheduler());
            Ok(wakeups)
        })?;
        let waker = Box::into_raw(Box::new(sy_balancer_waker(Shell::new(wakeups))));
        // SAFETY: non-NULL out-parameter, written on success only.
        unsafe { out.write(waker) };
        Ok(())
    })
}

/// Runs `run(balancer, cc, arg)` on the loop thread as soon as it can, as a
/// callback of the waker's balancer (its `sy_cc_*` calls work there: publish
/// a picker, connect, shut down), after the runs posted before it. Any
/// thread, concurrently, also inside this library's callbacks (a picker's
/// done callback on an RPC thread, say); never blocks. SY_CLOSED once the
/// balancer is closing or closed (`run` will not run; `arg` is still
/// yours); a run accepted but not yet run when the balancer closes does not
/// run either, so a policy that posts owned `arg`s frees what is left in its
/// `close` callback. SY_NULL_PARAMETER for a NULL `waker` or `run`.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_balancer_waker_run(
    waker: *const sy_balancer_waker,
    run: sy_balancer_run_fn,
    arg: *mut c_void,
) -> sy_status {
    boundary(|| {
        if waker.is_null() {
            return Err(Error::null("waker is NULL"));
        }
        let Some(f) = run else {
            return Err(Error::null("run is NULL"));
        };
        // SAFETY: non-NULL; the caller promises a waker from
        // `sy_cc_waker_new`, live or recently freed (quarantined). A
        // projection, no reference to the shell.
        let wakeups = unsafe { Shell::live_value(std::ptr::addr_of!((*waker).0)) }
            .ok_or_else(|| Error::invalid("the waker was freed"))?;
        wakeups.post(Run::new(f, arg))
    })
}

/// Frees a waker (runs it posted still run). NULL is a no-op; a second free
/// is caught (SY_INVALID_ARGUMENT in `sy_last_error`) while the handle is
/// in the library's bounded quarantine. Any thread.
#[no_mangle]
pub extern "C" fn sy_balancer_waker_free(waker: *mut sy_balancer_waker) {
    boundary_or((), || {
        if waker.is_null() {
            return;
        }
        // SAFETY: from `sy_cc_waker_new` per the contract (or a stale handle
        // in the quarantine, which `bury` recognises); the projection makes
        // no reference.
        if !unsafe { bury(waker, |w| addr_of_mut!((*w).0)) } {
            set_last(Error::invalid(
                "sy_balancer_waker_free: the waker was already freed",
            ));
        }
    })
}
