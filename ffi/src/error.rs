//! The per-thread detail of the last failed call (`sy_last_error`), and the
//! error type entry points return internally.

use crate::status::sy_status;
use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::c_char;
use std::sync::Arc;
use switchyard::Code;

/// A failure on its way out through the boundary.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) status: sy_status,
    pub(crate) message: Message,
    /// The gRPC status code an RPC should fail with (pick and call failures).
    pub(crate) grpc_code: u32,
}

/// A message: static ones cost no allocation, and a status's shared one
/// (a failed pick's) is kept as it is, without a copy.
#[derive(Debug, Clone)]
pub(crate) enum Message {
    Text(Cow<'static, str>),
    Shared(Arc<str>),
}

impl Message {
    fn as_str(&self) -> &str {
        match self {
            Message::Text(t) => t,
            Message::Shared(s) => s,
        }
    }
}

impl Error {
    pub(crate) fn new(status: sy_status, message: impl Into<Cow<'static, str>>) -> Error {
        Error {
            status,
            message: Message::Text(message.into()),
            grpc_code: Code::Unknown as u32,
        }
    }

    pub(crate) fn null(what: &'static str) -> Error {
        Error::new(sy_status::SY_NULL_PARAMETER, what)
    }

    pub(crate) fn invalid(message: impl Into<Cow<'static, str>>) -> Error {
        Error::new(sy_status::SY_INVALID_ARGUMENT, message)
    }
}

impl From<switchyard::Error> for Error {
    fn from(e: switchyard::Error) -> Error {
        use switchyard::Error as E;
        let status = match &e {
            E::InvalidServiceConfig(_) => sy_status::SY_INVALID_SERVICE_CONFIG,
            E::InvalidTarget(_) => sy_status::SY_INVALID_TARGET,
            E::InvalidArgument(_) => sy_status::SY_INVALID_ARGUMENT,
            E::Closed => sy_status::SY_CLOSED,
            E::RuntimeGone => sy_status::SY_RUNTIME_GONE,
            E::Io(_) => sy_status::SY_IO,
        };
        Error::new(status, e.to_string())
    }
}

thread_local! {
    static LAST: RefCell<Option<Error>> = const { RefCell::new(None) };
}

/// Records `e` as this thread's last error and returns its status.
pub(crate) fn set_last(e: Error) -> sy_status {
    let status = e.status;
    // Dropping the previous message here is the only work besides the store.
    let _ = LAST.try_with(|l| {
        if let Ok(mut slot) = l.try_borrow_mut() {
            *slot = Some(e);
        }
    });
    status
}

/// Copies the detail of this thread's last failed call into `buf` as a
/// NUL-terminated string, truncated to `len - 1` bytes, and returns the full
/// length of the message (like snprintf): call with `buf` NULL and `len` 0 to
/// size a buffer. Returns 0 (and writes "" when `len` > 0) if no call on this
/// thread has failed. Successful calls do not clear it (like errno). A `len`
/// no buffer can have (more than `PTRDIFF_MAX`: a negative number converted
/// to `size_t`) writes nothing.
///
/// The message starts with the status name, e.g. "SY_CLOSED: channel is
/// closed". Any thread; reads only the calling thread's record.
#[no_mangle]
pub extern "C" fn sy_last_error(buf: *mut c_char, len: usize) -> usize {
    let r = std::panic::catch_unwind(|| {
        LAST.with(|l| {
            let l = l.borrow();
            let (name, msg) = match &*l {
                Some(last) => (last.status.as_str(), last.message.as_str()),
                None => ("", ""),
            };
            let sep = if name.is_empty() { "" } else { ": " };
            let total = name.len() + sep.len() + msg.len();
            // A length no object has is a caller's mistake, not a buffer:
            // trusting it would write past whatever `buf` really is.
            if !buf.is_null() && len > 0 && len <= isize::MAX as usize {
                let mut out = Vec::with_capacity(total);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(sep.as_bytes());
                out.extend_from_slice(msg.as_bytes());
                let n = out.len().min(len - 1);
                // SAFETY: the caller promises `buf` has room for `len` bytes;
                // we write `n + 1 <= len` of them.
                unsafe {
                    std::ptr::copy_nonoverlapping(out.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            total
        })
    });
    r.unwrap_or(0)
}

/// The status of this thread's last failed call, or `SY_OK` if none failed.
/// Any thread.
#[no_mangle]
pub extern "C" fn sy_last_status() -> u32 {
    LAST.try_with(|l| l.try_borrow().ok()?.as_ref().map(|x| x.status as u32))
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// For a failed `sy_pick`: the gRPC status code the RPC should fail with
/// (e.g. 14 UNAVAILABLE, 4 DEADLINE_EXCEEDED, or whatever code the policy
/// chose). For a failed `sy_call_unary` (SY_RPC_FAILED, SY_CLOSED): the
/// call's gRPC status code, the server's (e.g. 12 UNIMPLEMENTED) or the
/// client's. 2 (UNKNOWN) after other failures, 0 if none. Any thread; reads
/// only the calling thread's record.
#[no_mangle]
pub extern "C" fn sy_last_grpc_code() -> u32 {
    LAST.try_with(|l| l.try_borrow().ok()?.as_ref().map(|x| x.grpc_code))
        .ok()
        .flatten()
        .unwrap_or(0)
}
