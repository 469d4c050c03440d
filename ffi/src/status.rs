//! Result codes and the enums C passes in as integers.
//!
//! The numbers are ABI: once released, a number keeps its meaning forever and a
//! retired one is never reused (`ffi/src/tests.rs` freezes them). Codes are grouped:
//! 1-99 bad input, 100-199 channel/runtime state, 200-299 pick outcomes,
//! 900-999 internal failures.

use std::ffi::c_char;
use switchyard::ConnectivityState;

/// What a call did. `SY_OK` is 0; every other value is a failure whose detail
/// `sy_last_error()` returns on the same thread.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum sy_status {
    SY_OK = 0,
    /// A pointer argument that must not be NULL was NULL.
    SY_NULL_PARAMETER = 1,
    /// An argument was out of range: an unknown enum number, an unknown
    /// subchannel, a pick result already done, ...
    SY_INVALID_ARGUMENT = 2,
    /// A string argument was not valid UTF-8.
    SY_INVALID_UTF8 = 3,
    /// The service config JSON was malformed or named no usable policy.
    SY_INVALID_SERVICE_CONFIG = 4,
    /// The target could not be parsed.
    SY_INVALID_TARGET = 5,
    /// The named thing does not exist.
    SY_NOT_FOUND = 6,
    /// The call is not allowed from here: a `sy_cc_*` call outside its
    /// balancer callback or off the loop thread, or a blocking call made from
    /// inside one of this library's callbacks.
    SY_WRONG_CONTEXT = 7,
    /// The channel is closed.
    SY_CLOSED = 100,
    /// The runtime that owned the channel was freed.
    SY_RUNTIME_GONE = 101,
    /// A bounded wait ended without the awaited change.
    SY_TIMEOUT = 102,
    /// The operating system refused (e.g. no thread for the event loop).
    SY_IO = 103,
    /// Pick with `SY_NO_WAIT` (0): nothing is ready yet; a later pick may succeed.
    SY_NO_SUBCHANNEL = 200,
    /// The policy failed the pick: fail the RPC with gRPC UNAVAILABLE (or the
    /// code in `sy_last_error`'s message), unless it is retried.
    SY_UNAVAILABLE = 201,
    /// The policy dropped the call: fail the RPC, never retry it.
    SY_DROPPED = 202,
    /// The pick's timeout passed while it waited: gRPC DEADLINE_EXCEEDED.
    SY_DEADLINE_EXCEEDED = 203,
    /// An RPC (`sy_call_unary`, `sy_call_unary_start`) ended with a gRPC
    /// status other than OK: the server's, or one the client chose (no
    /// subchannel, deadline, lost connection). `sy_last_grpc_code()` (or the
    /// completion callback's `grpc_code`) has the code.
    SY_RPC_FAILED = 204,
    /// A panic inside the library was caught at the boundary; the object the
    /// call was about may be unusable.
    SY_PANIC = 900,
}

/// Connectivity states (gRPC's numbers), as `uint32_t` in every signature.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sy_state {
    SY_STATE_IDLE = 0,
    SY_STATE_CONNECTING = 1,
    SY_STATE_READY = 2,
    SY_STATE_TRANSIENT_FAILURE = 3,
    SY_STATE_SHUTDOWN = 4,
}

pub(crate) fn state_from_c(n: u32) -> Option<ConnectivityState> {
    u8::try_from(n).ok().and_then(ConnectivityState::from_u8)
}

pub(crate) fn state_to_c(s: ConnectivityState) -> u32 {
    s as u32
}

impl sy_status {
    pub(crate) fn as_str(self) -> &'static str {
        self.as_cstr().trim_end_matches('\0')
    }

    fn as_cstr(self) -> &'static str {
        use sy_status::*;
        match self {
            SY_OK => "SY_OK\0",
            SY_NULL_PARAMETER => "SY_NULL_PARAMETER\0",
            SY_INVALID_ARGUMENT => "SY_INVALID_ARGUMENT\0",
            SY_INVALID_UTF8 => "SY_INVALID_UTF8\0",
            SY_INVALID_SERVICE_CONFIG => "SY_INVALID_SERVICE_CONFIG\0",
            SY_INVALID_TARGET => "SY_INVALID_TARGET\0",
            SY_NOT_FOUND => "SY_NOT_FOUND\0",
            SY_WRONG_CONTEXT => "SY_WRONG_CONTEXT\0",
            SY_CLOSED => "SY_CLOSED\0",
            SY_RUNTIME_GONE => "SY_RUNTIME_GONE\0",
            SY_TIMEOUT => "SY_TIMEOUT\0",
            SY_IO => "SY_IO\0",
            SY_NO_SUBCHANNEL => "SY_NO_SUBCHANNEL\0",
            SY_UNAVAILABLE => "SY_UNAVAILABLE\0",
            SY_DROPPED => "SY_DROPPED\0",
            SY_DEADLINE_EXCEEDED => "SY_DEADLINE_EXCEEDED\0",
            SY_RPC_FAILED => "SY_RPC_FAILED\0",
            SY_PANIC => "SY_PANIC\0",
        }
    }

    /// Every code, for tests and `sy_status_str`.
    pub const ALL: [sy_status; 18] = {
        use sy_status::*;
        [
            SY_OK,
            SY_NULL_PARAMETER,
            SY_INVALID_ARGUMENT,
            SY_INVALID_UTF8,
            SY_INVALID_SERVICE_CONFIG,
            SY_INVALID_TARGET,
            SY_NOT_FOUND,
            SY_WRONG_CONTEXT,
            SY_CLOSED,
            SY_RUNTIME_GONE,
            SY_TIMEOUT,
            SY_IO,
            SY_NO_SUBCHANNEL,
            SY_UNAVAILABLE,
            SY_DROPPED,
            SY_DEADLINE_EXCEEDED,
            SY_RPC_FAILED,
            SY_PANIC,
        ]
    };

    pub fn from_u32(n: u32) -> Option<sy_status> {
        Self::ALL.iter().copied().find(|s| *s as u32 == n)
    }
}

/// The name of a status code ("SY_CLOSED"), or "SY_UNKNOWN_STATUS" for a
/// number that is not one. A static NUL-terminated string; never NULL. Any
/// thread.
#[no_mangle]
pub extern "C" fn sy_status_str(status: u32) -> *const c_char {
    match sy_status::from_u32(status) {
        Some(s) => s.as_cstr().as_ptr().cast(),
        None => c"SY_UNKNOWN_STATUS".as_ptr(),
    }
}

/// The name of a connectivity state ("READY"), or "UNKNOWN" for a number that
/// is not one. A static NUL-terminated string; never NULL. Any thread.
#[no_mangle]
pub extern "C" fn sy_state_str(state: u32) -> *const c_char {
    match state_from_c(state) {
        Some(s) => s.as_cstr().as_ptr(),
        None => c"UNKNOWN".as_ptr(),
    }
}
