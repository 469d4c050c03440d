//! The per-thread detail of the last failed call (`sy_last_error`), and the
//! error type entry points return internally.

use crate::macros::boundary;
use crate::status::sy_status;
use crate::strings::str_arg;
use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::c_char;
use std::sync::Arc;
use switchyard::{Code, Status};

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
    /// The status of this thread's last failed call, with what its server
    /// sent (`sy_last_call_details`, `sy_last_call_trailer`).
    static LAST_CALL: RefCell<Option<Status>> = const { RefCell::new(None) };
}

/// Records `s` as the status of this thread's last failed call.
pub(crate) fn set_last_call(s: &Status) {
    let _ = LAST_CALL.try_with(|l| {
        if let Ok(mut slot) = l.try_borrow_mut() {
            *slot = Some(s.clone());
        }
    });
}

/// Copies `bytes` out as the two lookups below do: their first `len` bytes
/// into `buf`, their whole length into `*size`.
fn copy_out(bytes: &[u8], buf: *mut u8, len: usize, size: *mut usize) -> Result<(), Error> {
    let size = try_out!(size, "size");
    if len > 0 && buf.is_null() {
        return Err(Error::null("buf must not be NULL when len > 0"));
    }
    if len > isize::MAX as usize {
        return Err(Error::invalid("len is larger than any buffer"));
    }
    let n = bytes.len().min(len);
    if n > 0 {
        // SAFETY: the caller promises `buf` has room for `len >= n` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, n) };
    }
    // SAFETY: non-NULL and writable per the contract.
    unsafe { size.write(bytes.len()) };
    Ok(())
}

fn no_call_record() -> Error {
    Error::new(sy_status::SY_NOT_FOUND, "no call has failed on this thread")
}

/// The error details of this thread's last failed call (`sy_call_unary`
/// that returned SY_RPC_FAILED or SY_CLOSED; inside a started call's
/// callback, that call if it failed): the server's
/// `grpc-status-details-bin`, decoded from base64 (by convention a
/// serialized `google.rpc.Status`: gRPC's richer error model). Copies the
/// first `len` bytes into `buf` (NULL allowed when `len` is 0) and sets
/// `*size` to their whole length: call with `len` 0 to size a buffer.
/// SY_NOT_FOUND when that call carried no details (or none failed).
/// Successful calls do not clear it (like errno). Any thread; reads only
/// the calling thread's record, which the lookups' own errors leave as is.
#[no_mangle]
pub extern "C" fn sy_last_call_details(buf: *mut u8, len: usize, size: *mut usize) -> sy_status {
    boundary(|| {
        let record = LAST_CALL.with(|l| l.borrow().clone());
        let status = record.ok_or_else(no_call_record)?;
        let details = status.details().ok_or_else(|| {
            Error::new(
                sy_status::SY_NOT_FOUND,
                "the last failed call carried no error details",
            )
        })?;
        copy_out(details, buf, len, size)
    })
}

/// The `index`-th (0 = first, in the order sent) metadata entry that came
/// with the status of this thread's last failed call (as
/// `sy_last_call_trailer` counts them): its key into `key` (`key_len`
/// bytes, NUL-terminated, truncated as `sy_last_error` truncates; the key's
/// length into `*key_size`), its value as `sy_last_call_details` copies.
/// SY_NOT_FOUND past the last entry: for listing them all.
#[no_mangle]
pub extern "C" fn sy_last_call_trailer_at(
    index: usize,
    key: *mut c_char,
    key_len: usize,
    key_size: *mut usize,
    value: *mut u8,
    value_len: usize,
    value_size: *mut usize,
) -> sy_status {
    boundary(|| {
        let key_size = try_out!(key_size, "key_size");
        if key_len > 0 && key.is_null() {
            return Err(Error::null("key must not be NULL when key_len > 0"));
        }
        let record = LAST_CALL.with(|l| l.borrow().clone());
        let status = record.ok_or_else(no_call_record)?;
        let (k, v) = status.trailers().get(index).ok_or_else(|| {
            Error::new(
                sy_status::SY_NOT_FOUND,
                format!(
                    "the last failed call came with {} entries",
                    status.trailers().len()
                ),
            )
        })?;
        copy_out(v.as_bytes(), value, value_len, value_size)?;
        if key_len > 0 && key_len <= isize::MAX as usize {
            let n = k.len().min(key_len - 1);
            // SAFETY: the caller promises `key` has room for `key_len > n`
            // bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(k.as_ptr(), key.cast::<u8>(), n);
                *key.add(n) = 0;
            }
        }
        // SAFETY: non-NULL and writable per the contract.
        unsafe { key_size.write(k.len()) };
        Ok(())
    })
}

/// The `index`-th value (0 = first) of metadata `key` (NUL-terminated,
/// case-insensitive) that the server sent with the status of this thread's
/// last failed call (its trailers, or the headers of a trailers-only
/// answer; as `sy_last_call_details` says which call). Copied as
/// `sy_last_call_details` copies ("-bin" values as their base64 text).
/// "grpc-status", "grpc-message", "grpc-status-details-bin",
/// "grpc-encoding" and "content-type" are the transport's: never found.
/// SY_NOT_FOUND if there is no such value.
#[no_mangle]
pub extern "C" fn sy_last_call_trailer(
    key: *const c_char,
    index: usize,
    buf: *mut u8,
    len: usize,
    size: *mut usize,
) -> sy_status {
    boundary(|| {
        // SAFETY: NUL-terminated per the contract.
        let key = unsafe { str_arg(key, "key") }?;
        let record = LAST_CALL.with(|l| l.borrow().clone());
        let status = record.ok_or_else(no_call_record)?;
        let value = status
            .trailers()
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .nth(index)
            .ok_or_else(|| {
                Error::new(
                    sy_status::SY_NOT_FOUND,
                    format!("no value {index} of {key:?} came with the last failed call"),
                )
            })?;
        copy_out(value.1.as_bytes(), buf, len, size)
    })
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
