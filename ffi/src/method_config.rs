//! The service config's per-method settings (`methodConfig`) for hosts
//! that send their own RPCs: looked up by method through a reader
//! (wait-free) or a channel, as plain C values.

use crate::channel::{channel_ref, SY_WAIT_FOREVER};
use crate::macros::boundary;
use crate::reader::{enter, sy_reader};
use crate::status::sy_status;
use crate::strings::str_arg;
use std::ffi::c_char;
use std::time::Duration;
use switchyard::{Code, MethodConfig};

/// The service config's settings for one method, as `methodConfig` gives
/// them (gRFC A2); each `has_` flag says whether its field was set.
/// Durations are in milliseconds, rounded up. Status code sets are bit
/// masks: bit `1 << code` for each code (gRPC's numbers, as
/// `sy_last_grpc_code` gives them).
///
/// `retry_*` and `hedging_*` are parsed and validated (gRFC A6 bounds:
/// 2 to 5 attempts, larger values capped at 5). The library's own unary
/// calls (sy_call_unary*) retry by `retry_*` and hedge by `hedging_*` (within
/// the service config's `retryThrottling`); hosts that send calls
/// themselves can read them here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct sy_method_config {
    /// An entry names the method, its service, or is the default (empty
    /// name): the fields below are its. False: no entry applies, and every
    /// `has_` flag is false.
    pub found: bool,
    pub has_wait_for_ready: bool,
    /// Wait through TRANSIENT_FAILURE by default.
    pub wait_for_ready: bool,
    /// The call's timeout (its deadline is the earlier of the caller's and
    /// now plus this); `SY_WAIT_FOREVER` when not set.
    pub timeout_ms: u64,
    pub has_max_request_message_bytes: bool,
    /// A larger request fails RESOURCE_EXHAUSTED before it is sent.
    pub max_request_message_bytes: u32,
    pub has_max_response_message_bytes: bool,
    /// A larger response fails RESOURCE_EXHAUSTED.
    pub max_response_message_bytes: u32,
    pub has_retry_policy: bool,
    pub retry_max_attempts: u32,
    pub retry_initial_backoff_ms: u64,
    pub retry_max_backoff_ms: u64,
    pub retry_backoff_multiplier: f64,
    /// Bit `1 << code` for each retryable status code.
    pub retry_retryable_codes: u32,
    pub has_hedging_policy: bool,
    pub hedging_max_attempts: u32,
    pub hedging_delay_ms: u64,
    /// Bit `1 << code` for each non-fatal status code.
    pub hedging_non_fatal_codes: u32,
}

fn ms_up(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    // Never SY_WAIT_FOREVER by accident (a proto Duration is far below).
    u64::try_from(ms)
        .unwrap_or(SY_WAIT_FOREVER - 1)
        .min(SY_WAIT_FOREVER - 1)
}

fn mask(codes: &[Code]) -> u32 {
    codes.iter().fold(0, |m, c| m | 1 << (*c as u32))
}

impl sy_method_config {
    fn from(config: Option<&MethodConfig>) -> sy_method_config {
        let Some(c) = config else {
            return sy_method_config {
                timeout_ms: SY_WAIT_FOREVER,
                ..Default::default()
            };
        };
        let mut out = sy_method_config {
            found: true,
            has_wait_for_ready: c.wait_for_ready.is_some(),
            wait_for_ready: c.wait_for_ready.unwrap_or(false),
            timeout_ms: c.timeout.map_or(SY_WAIT_FOREVER, ms_up),
            has_max_request_message_bytes: c.max_request_message_bytes.is_some(),
            max_request_message_bytes: c.max_request_message_bytes.unwrap_or(0),
            has_max_response_message_bytes: c.max_response_message_bytes.is_some(),
            max_response_message_bytes: c.max_response_message_bytes.unwrap_or(0),
            ..Default::default()
        };
        if let Some(r) = &c.retry_policy {
            out.has_retry_policy = true;
            out.retry_max_attempts = r.max_attempts;
            out.retry_initial_backoff_ms = ms_up(r.initial_backoff);
            out.retry_max_backoff_ms = ms_up(r.max_backoff);
            out.retry_backoff_multiplier = r.backoff_multiplier;
            out.retry_retryable_codes = mask(&r.retryable_status_codes);
        }
        if let Some(h) = &c.hedging_policy {
            out.has_hedging_policy = true;
            out.hedging_max_attempts = h.max_attempts;
            out.hedging_delay_ms = ms_up(h.hedging_delay);
            out.hedging_non_fatal_codes = mask(&h.non_fatal_status_codes);
        }
        out
    }
}

/// The service config's settings for calls to `method` ("/pkg.Service/Method",
/// NUL-terminated UTF-8): the most specific `methodConfig` entry that names
/// it (the method, else its service, else the default entry), written to
/// `*out` (`found` false when none applies). Wait-free when the config has
/// not changed since the reader last looked: for RPC threads, before each
/// call (its timeout, wait-for-ready and size limits are the host's to apply
/// when it sends the call itself). The reader's thread. SY_NULL_PARAMETER,
/// SY_INVALID_UTF8, SY_WRONG_CONTEXT (from a callback this reader runs).
#[no_mangle]
#[must_use]
pub extern "C" fn sy_reader_method_config(
    reader: *mut sy_reader,
    method: *const c_char,
    out: *mut sy_method_config,
) -> sy_status {
    boundary(|| {
        // SAFETY: NUL-terminated per the contract.
        let method = unsafe { str_arg(method, "method") }?;
        let out = try_out!(out, "out");
        let mut r = enter(reader)?;
        let config = sy_method_config::from(r.reader.method_config(method));
        // SAFETY: non-NULL out-parameter, written on success only.
        unsafe { out.write(config) };
        Ok(())
    })
}

/// As `sy_reader_method_config`, through the channel: any thread (it takes
/// a reference count on the current config; a reader's lookup does not).
/// SY_NULL_PARAMETER, SY_INVALID_UTF8, SY_INVALID_ARGUMENT (a freed channel).
#[no_mangle]
#[must_use]
pub extern "C" fn sy_channel_method_config(
    ch: *const crate::channel::sy_channel,
    method: *const c_char,
    out: *mut sy_method_config,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        // SAFETY: NUL-terminated per the contract.
        let method = unsafe { str_arg(method, "method") }?;
        let out = try_out!(out, "out");
        let config = sy_method_config::from(ch.channel.method_config(method).as_deref());
        // SAFETY: non-NULL out-parameter, written on success only.
        unsafe { out.write(config) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        sy_channel_free, sy_channel_new, sy_channel_update_service_config, sy_reader_free,
        sy_reader_new, sy_runtime_free, sy_runtime_new,
    };
    use std::ptr;

    const CONFIG: &std::ffi::CStr = c"{\"methodConfig\":[
        {\"name\":[{\"service\":\"s\",\"method\":\"m\"}],\"timeout\":\"0.0001s\",
         \"waitForReady\":false,\"maxRequestMessageBytes\":7,
         \"hedgingPolicy\":{\"maxAttempts\":3,\"hedgingDelay\":\"0.25s\",
                            \"nonFatalStatusCodes\":[\"UNAVAILABLE\",1]}},
        {\"name\":[{\"service\":\"s\"}],\"maxResponseMessageBytes\":\"9\",
         \"retryPolicy\":{\"maxAttempts\":2,\"initialBackoff\":\"1.5s\",
                          \"maxBackoff\":\"2s\",\"backoffMultiplier\":1.5,
                          \"retryableStatusCodes\":[\"aborted\"]}}]}";

    #[test]
    fn a_methods_config_as_c_values() {
        let mut rt = ptr::null_mut();
        assert_eq!(sy_runtime_new(&mut rt), sy_status::SY_OK);
        let mut ch = ptr::null_mut();
        let st = sy_channel_new(
            rt,
            c"".as_ptr(),
            ptr::null(),
            ptr::null(),
            None,
            ptr::null_mut(),
            None,
            &mut ch,
        );
        assert_eq!(st, sy_status::SY_OK);
        let mut reader = ptr::null_mut();
        assert_eq!(sy_reader_new(ch, &mut reader), sy_status::SY_OK);
        let marker = sy_method_config {
            retry_max_attempts: 77,
            ..Default::default()
        };
        let mut out = marker;
        // Before any config: nothing applies.
        assert_eq!(
            sy_reader_method_config(reader, c"/s/m".as_ptr(), &mut out),
            sy_status::SY_OK
        );
        assert_eq!(out, sy_method_config::from(None));
        assert!(!out.found && out.timeout_ms == SY_WAIT_FOREVER);

        assert_eq!(
            sy_channel_update_service_config(ch, CONFIG.as_ptr()),
            sy_status::SY_OK
        );
        // Applied on the loop: the reader sees it once it is published.
        let mut tries = 0;
        loop {
            assert_eq!(
                sy_reader_method_config(reader, c"/s/m".as_ptr(), &mut out),
                sy_status::SY_OK
            );
            if out.found || tries == 500 {
                break;
            }
            tries += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        let exact = sy_method_config {
            found: true,
            has_wait_for_ready: true,
            wait_for_ready: false,
            timeout_ms: 1, // 0.1 ms, rounded up
            has_max_request_message_bytes: true,
            max_request_message_bytes: 7,
            has_hedging_policy: true,
            hedging_max_attempts: 3,
            hedging_delay_ms: 250,
            hedging_non_fatal_codes: (1 << 14) | (1 << 1),
            ..Default::default()
        };
        assert_eq!(out, exact);
        assert_eq!(
            sy_channel_method_config(ch, c"/s/other".as_ptr(), &mut out),
            sy_status::SY_OK
        );
        let service = sy_method_config {
            found: true,
            timeout_ms: SY_WAIT_FOREVER,
            has_max_response_message_bytes: true,
            max_response_message_bytes: 9,
            has_retry_policy: true,
            retry_max_attempts: 2,
            retry_initial_backoff_ms: 1500,
            retry_max_backoff_ms: 2000,
            retry_backoff_multiplier: 1.5,
            retry_retryable_codes: 1 << 10,
            ..Default::default()
        };
        assert_eq!(out, service);

        // Bad arguments: an error, and `*out` untouched.
        let mut out = marker;
        assert_eq!(
            sy_reader_method_config(reader, ptr::null(), &mut out),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(
            sy_reader_method_config(reader, c"/s/m".as_ptr(), ptr::null_mut()),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(
            sy_reader_method_config(ptr::null_mut(), c"/s/m".as_ptr(), &mut out),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(
            sy_channel_method_config(ptr::null(), c"/s/m".as_ptr(), &mut out),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(
            sy_channel_method_config(ch, c"/s/\xff".as_ptr(), &mut out),
            sy_status::SY_INVALID_UTF8
        );
        assert_eq!(out, marker);
        sy_reader_free(reader);
        sy_channel_free(ch);
        sy_runtime_free(rt);
    }
}
