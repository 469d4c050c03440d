//! The status of this thread's last failed call, with what its server sent
//! besides code and message (error details, trailing metadata), and the C
//! lookups that read it (`sy_last_call_message`, `sy_last_call_details`,
//! `sy_last_call_trailer`, `sy_last_call_trailer_at`). Kept apart from `sy_last_error`'s record so
//! that the lookups' own errors leave it as it was.

use crate::error::Error;
use crate::macros::boundary;
use crate::status::sy_status;
use crate::strings::str_arg;
use std::cell::RefCell;
use std::ffi::c_char;
use switchyard::Status;

thread_local! {
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

/// Checks a copy's destination (`buf`, `len`, `size`) before anything is
/// looked up, so that a bad argument is reported as such whatever the
/// thread's record holds (and nothing is written).
fn check_dest(buf: *mut u8, len: usize, size: *mut usize) -> Result<(), Error> {
    try_out!(size, "size");
    if len > 0 && buf.is_null() {
        return Err(Error::null("buf must not be NULL when len > 0"));
    }
    if len > isize::MAX as usize {
        return Err(Error::invalid("len is larger than any buffer"));
    }
    Ok(())
}

/// Copies `bytes` out as the lookups below do: their first `len` bytes
/// into `buf`, their whole length into `*size`.
fn copy_out(bytes: &[u8], buf: *mut u8, len: usize, size: *mut usize) -> Result<(), Error> {
    check_dest(buf, len, size)?;
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
        check_dest(buf, len, size)?;
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

/// The status message of this thread's last failed call (which calls, as
/// `sy_last_call_details` says), exactly as the server sent it in
/// `grpc-message` (percent-decoded) or as the library wrote it for a
/// failure of its own: what gRPC's `details()` gives, without the prefix
/// `sy_last_error` adds. UTF-8, not NUL-terminated; copied as
/// `sy_last_call_details` copies (`len` 0 to size a buffer). SY_NOT_FOUND
/// when no call has failed on this thread. Any thread.
#[no_mangle]
pub extern "C" fn sy_last_call_message(buf: *mut u8, len: usize, size: *mut usize) -> sy_status {
    boundary(|| {
        check_dest(buf, len, size)?;
        let record = LAST_CALL.with(|l| l.borrow().clone());
        let status = record.ok_or_else(no_call_record)?;
        copy_out(status.message().as_bytes(), buf, len, size)
    })
}

/// The `index`-th (0 = first) metadata entry that came with the status of
/// this thread's last failed call (as `sy_last_call_trailer` counts them):
/// its key into `key` (`key_len` bytes, NUL-terminated, truncated as
/// `sy_last_error` truncates; the key's length into `*key_size`), its value
/// as `sy_last_call_details` copies (a `key_len` or `value_len` larger than
/// any buffer is SY_INVALID_ARGUMENT, nothing written). SY_NOT_FOUND past
/// the last entry: for listing them all: entries are grouped by key, keys
/// in the order they first came, each key's values in the order sent.
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
        // SAFETY: as this function's contract.
        unsafe {
            entry_at(
                Status::trailers,
                index,
                key,
                key_len,
                key_size,
                value,
                value_len,
                value_size,
            )
        }
    })
}

/// The `index`-th (0 = first) response header of this thread's last failed
/// call, as `sy_last_call_trailer_at` gives its trailers: the initial
/// metadata the server sent before the failed status, when it sent the
/// status in trailers after them (the transport's own fields left out:
/// "grpc-status", "grpc-message", "grpc-encoding"). SY_NOT_FOUND past the
/// last entry, and for a call
/// whose answer was its status alone (trailers-only) or that no server
/// answered.
#[no_mangle]
pub extern "C" fn sy_last_call_header_at(
    index: usize,
    key: *mut c_char,
    key_len: usize,
    key_size: *mut usize,
    value: *mut u8,
    value_len: usize,
    value_size: *mut usize,
) -> sy_status {
    boundary(|| {
        // SAFETY: as this function's contract.
        unsafe {
            entry_at(
                Status::headers,
                index,
                key,
                key_len,
                key_size,
                value,
                value_len,
                value_size,
            )
        }
    })
}

/// `sy_last_call_trailer_at` over the entries `list` gives of the last
/// failed call's status.
///
/// # Safety
/// As `sy_last_call_trailer_at`'s contract.
#[allow(clippy::too_many_arguments)]
unsafe fn entry_at(
    list: fn(&Status) -> &[(String, String)],
    index: usize,
    key: *mut c_char,
    key_len: usize,
    key_size: *mut usize,
    value: *mut u8,
    value_len: usize,
    value_size: *mut usize,
) -> Result<(), Error> {
    let key_size = try_out!(key_size, "key_size");
    if key_len > 0 && key.is_null() {
        return Err(Error::null("key must not be NULL when key_len > 0"));
    }
    if key_len > isize::MAX as usize {
        return Err(Error::invalid("key_len is larger than any buffer"));
    }
    check_dest(value, value_len, value_size)?;
    let record = LAST_CALL.with(|l| l.borrow().clone());
    let status = record.ok_or_else(no_call_record)?;
    let entries = list(&status);
    let (k, v) = entries.get(index).ok_or_else(|| {
        Error::new(
            sy_status::SY_NOT_FOUND,
            format!("the last failed call came with {} entries", entries.len()),
        )
    })?;
    copy_out(v.as_bytes(), value, value_len, value_size)?;
    if key_len > 0 {
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
}

/// The `index`-th value (0 = first) of metadata `key` (NUL-terminated,
/// case-insensitive) that the server sent with the status of this thread's
/// last failed call (its trailers, or the headers of a trailers-only
/// answer; as `sy_last_call_details` says which call). Copied as
/// `sy_last_call_details` copies ("-bin" values as their base64 text).
/// "grpc-status", "grpc-message" and "grpc-encoding" are the transport's:
/// never found ("content-type" and "grpc-status-details-bin" are, as in
/// gRPC-Go's trailer metadata). SY_NOT_FOUND if there is no such value.
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
        check_dest(buf, len, size)?;
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
