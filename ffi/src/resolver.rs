//! The host as resolver: addresses, service config and resolver errors
//! delivered to a channel (gRPC's resolver API, driven from C).

use crate::callback::CUserData;
use crate::channel::{channel_ref, sy_channel};
use crate::error::Error;
use crate::macros::boundary;
use crate::status::sy_status;
use crate::strings::{slice_arg, str_arg};
use std::ffi::{c_char, c_void};
use switchyard::Address;

/// One address the host resolved.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sy_address {
    /// NUL-terminated UTF-8: "ip:port", "[v6]:port", or anything the host's
    /// transport understands. Copied.
    pub address: *const c_char,
    /// Endpoint weight; 0 means unset (treated as 1 by weighing policies).
    pub weight: u32,
    /// The host's data for this address, returned by picks and passed to the
    /// transport callbacks. NULL for none. See `sy_channel_update_addresses`
    /// for ownership.
    pub user_data: *mut c_void,
}

/// Each address's text, checked: UTF-8 and not empty (the checks of
/// `sy_channel_update_addresses` and `sy_resolver_cc_update`).
///
/// # Safety
/// Each entry's `address` is NULL (refused) or NUL-terminated.
pub(crate) unsafe fn address_texts(list: &[sy_address]) -> Result<Vec<&str>, Error> {
    list.iter()
        .map(|a| {
            // SAFETY: per the function's contract.
            let text = unsafe { str_arg(a.address, "address") }?;
            if text.is_empty() {
                return Err(Error::invalid("an address is empty"));
            }
            Ok(text)
        })
        .collect()
}

/// Replaces the channel's address list (the host acting as resolver); the
/// policy applies it incrementally (subchannels for unchanged addresses are
/// kept). `addresses` may be NULL when `len` is 0 (an empty list); an
/// empty address string is SY_INVALID_ARGUMENT.
///
/// Ownership of user data: if the call fails argument checks
/// (SY_NULL_PARAMETER, SY_INVALID_ARGUMENT, SY_INVALID_UTF8), nothing was
/// taken. Otherwise each non-NULL `user_data` now belongs to the library,
/// which calls `release_user_data` on it exactly once (already done if the
/// call returned SY_CLOSED or SY_RUNTIME_GONE). A pointer listed twice is released twice.
/// The array and strings are copied. Any thread.
#[no_mangle]
pub extern "C" fn sy_channel_update_addresses(
    ch: *const sy_channel,
    addresses: *const sy_address,
    len: usize,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        // SAFETY: `len` valid sy_address entries per the contract.
        let list = unsafe { slice_arg(addresses, len, "addresses") }?;
        // SAFETY: as above.
        let texts = unsafe { address_texts(list) }?;
        // Past the checks: from here on the user data is ours.
        let converted: Vec<Address> = list
            .iter()
            .zip(texts)
            .map(|(a, text)| Address {
                addr: text.to_string(),
                weight: a.weight,
                user_data: CUserData::wrap(a.user_data, ch.release),
                tag: a.user_data as usize as u64,
            })
            .collect();
        ch.channel.update_addresses(converted)?;
        Ok(())
    })
}

/// Switches to a new service config (JSON). An invalid one gives
/// SY_INVALID_SERVICE_CONFIG (`sy_last_error` names the JSON path that is
/// wrong) and the current one is kept; a valid one ends the
/// TRANSIENT_FAILURE of a channel created with an invalid one. Any thread.
#[no_mangle]
pub extern "C" fn sy_channel_update_service_config(
    ch: *const sy_channel,
    service_config_json: *const c_char,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        // SAFETY: NUL-terminated per the contract.
        let json = unsafe { str_arg(service_config_json, "service_config_json") }?;
        ch.channel.update_service_config(json)?;
        Ok(())
    })
}

/// The host's resolver failed (`message`: NUL-terminated UTF-8). The policy
/// keeps its last good addresses if it has any. Any thread.
#[no_mangle]
pub extern "C" fn sy_channel_report_resolver_error(
    ch: *const sy_channel,
    message: *const c_char,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        // SAFETY: NUL-terminated per the contract.
        let message = unsafe { str_arg(message, "message") }?;
        ch.channel.report_resolver_error(message)?;
        Ok(())
    })
}
