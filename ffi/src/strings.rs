//! C strings coming in: checked for NULL and UTF-8.

use crate::error::Error;
use crate::status::sy_status;
use std::ffi::{c_char, CStr};

/// A required NUL-terminated UTF-8 argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged for `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &'static str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::null(name));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    utf8(bytes, name)
}

/// A required UTF-8 argument given as (pointer, length), not necessarily
/// NUL-terminated; NULL is allowed only with length 0 (""), and a length no
/// object can have is refused (see `slice_arg`).
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes that stay valid and
/// unchanged for `'a`.
pub(crate) unsafe fn str_slice_arg<'a>(
    p: *const u8,
    len: usize,
    name: &'static str,
) -> Result<&'a str, Error> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { slice_arg(p, len, name) }?;
    utf8(bytes, name)
}

/// An optional one: NULL is `None`.
///
/// # Safety
/// As `str_arg`.
pub(crate) unsafe fn opt_str_arg<'a>(
    p: *const c_char,
    name: &'static str,
) -> Result<Option<&'a str>, Error> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { str_arg(p, name) }.map(Some)
    }
}

/// A NUL-terminated copy of `s` for C, cut at an interior NUL (C would stop
/// reading there anyway).
pub(crate) fn c_text(s: &str) -> Vec<u8> {
    c_bytes(s.split('\0').next().unwrap_or(""))
}

/// All of `s`, then a NUL: for C that is given the length too, where a
/// text cut at an interior NUL would be another text.
pub(crate) fn c_bytes(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

fn utf8<'a>(bytes: &'a [u8], name: &'static str) -> Result<&'a str, Error> {
    std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            sy_status::SY_INVALID_UTF8,
            format!("{name} is not valid UTF-8 ({e})"),
        )
    })
}

/// A slice from C; NULL is allowed only with length 0. A length no object can
/// have (more than `isize::MAX` bytes: typically a negative number converted to
/// `size_t`) is refused with SY_INVALID_ARGUMENT instead of being trusted.
///
/// # Safety
/// `p` is NULL or points to `len` valid `T`s for `'a`.
pub(crate) unsafe fn slice_arg<'a, T>(
    p: *const T,
    len: usize,
    name: &'static str,
) -> Result<&'a [T], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if len > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(Error::invalid(format!(
            "{name}: length {len} is larger than any object (a negative number?)"
        )));
    }
    if p.is_null() {
        return Err(Error::null(name));
    }
    // SAFETY: non-NULL, `len` elements per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}
