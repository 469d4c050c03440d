//! The panic boundary and pointer helpers every entry point uses.
//!
//! Entry points keep plain `#[no_mangle] pub extern "C" fn` signatures (cbindgen
//! reads them from source) and wrap their bodies in `boundary(|| ...)`, which
//! catches panics (→ `SY_PANIC`) and records failures for `sy_last_error`.

use crate::error::{set_last, Error};
use crate::status::sy_status;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, turning an `Err` or a panic into a status with a recorded message.
pub(crate) fn boundary(f: impl FnOnce() -> Result<(), Error>) -> sy_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => sy_status::SY_OK,
        Ok(Err(e)) => set_last(e),
        Err(p) => set_last(Error::new(sy_status::SY_PANIC, panic_text(&*p))),
    }
}

/// For entry points with no status to return (`_free`, getters): a panic is
/// recorded and `default` returned.
pub(crate) fn boundary_or<T>(default: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            set_last(Error::new(sy_status::SY_PANIC, panic_text(&*p)));
            default
        }
    }
}

/// Runs a C callback with the "inside a callback" flag set, so blocking entry
/// points called from it can refuse instead of deadlocking.
pub(crate) fn in_callback<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CALLBACK_DEPTH.with(|d| d.set(d.get() - 1));
        }
    }
    CALLBACK_DEPTH.with(|d| d.set(d.get() + 1));
    let _reset = Reset;
    f()
}

pub(crate) fn inside_callback() -> bool {
    CALLBACK_DEPTH.try_with(|d| d.get() > 0).unwrap_or(false)
}

/// SY_WRONG_CONTEXT saying `why` when called inside one of this library's
/// callbacks, where a blocking entry point would hold up (or deadlock) the
/// thread that runs them.
pub(crate) fn refuse_in_callback(why: &'static str) -> Result<(), Error> {
    if inside_callback() {
        Err(Error::new(sy_status::SY_WRONG_CONTEXT, why))
    } else {
        Ok(())
    }
}

/// For the `_free` functions, which return no status: inside a callback,
/// records SY_WRONG_CONTEXT (`why`) for `sy_last_error` and says so.
pub(crate) fn free_refused_in_callback(why: &'static str) -> bool {
    match refuse_in_callback(why) {
        Ok(()) => false,
        Err(e) => {
            crate::error::set_last(e);
            true
        }
    }
}

thread_local! {
    static CALLBACK_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    let what = if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.as_str()
    } else {
        "(non-string payload)"
    };
    format!("panic inside switchyard: {what}")
}

/// `&T` from a non-NULL pointer, or `SY_NULL_PARAMETER` naming the argument.
macro_rules! try_ref {
    ($ptr:expr, $name:literal) => {{
        let p = $ptr;
        if p.is_null() {
            return Err($crate::error::Error::null(concat!($name, " is NULL")));
        }
        // SAFETY: non-NULL; the caller promises it points to a live object of
        // this type (the header's contract for this argument).
        unsafe { &*p }
    }};
}

/// `&mut T` from a non-NULL pointer, or `SY_NULL_PARAMETER`.
macro_rules! try_mut {
    ($ptr:expr, $name:literal) => {{
        let p = $ptr;
        if p.is_null() {
            return Err($crate::error::Error::null(concat!($name, " is NULL")));
        }
        // SAFETY: non-NULL; the caller promises exclusive access to a live
        // object of this type for the duration of the call.
        unsafe { &mut *p }
    }};
}

/// An out-parameter, checked not to be NULL (else `SY_NULL_PARAMETER`
/// naming it); the caller writes it, on success only. Used up front, before
/// any work, so that nothing is done when it is NULL.
macro_rules! try_out {
    ($ptr:expr, $name:literal) => {{
        let p = $ptr;
        if p.is_null() {
            return Err($crate::error::Error::null(concat!($name, " is NULL")));
        }
        p
    }};
}
