//! Unary RPCs from C over library-managed connections: the blocking
//! `sy_call_unary` (on the caller's reader) and `sy_call_unary_start` (on the
//! event loop, `Channel::unary_start`; its callback on the channel's
//! completion thread), with responses as `sy_buffer`s; `sy_call_cancel`.
//!
//! Concurrency: a blocking call runs entirely on the calling thread with that
//! thread's reader; calls on different readers share nothing in this crate
//! (no lock, no shared counter) and meet only in the core's picker table
//! (read-only) and the subchannel's HTTP/2 connection. A started call costs
//! no thread while it runs, however many are in flight.

use crate::call_pool::CallPool;
use crate::channel::{channel_ref, timeout_deadline};
use crate::error::{Error, Message};
use crate::last_call::set_last_call;
use crate::macros::{boundary, boundary_or, in_callback, refuse_in_callback};
use crate::reader::sy_reader;
use crate::status::sy_status;
use crate::strings::{slice_arg, str_arg, str_slice_arg};
use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::sync::Arc;
use std::time::Instant;
use switchyard::{CallOptions, CallResult, ConnectivityState, Reader, Status, UnaryResponse};

/// Owned bytes from the library: an RPC's response message, with the
/// response's headers and trailers. Opaque; freed with `sy_buffer_free`. Not
/// tied to any channel, reader or thread: keep it as long as needed, free it
/// on any thread. Never modified after it is handed out, so concurrent reads
/// are fine.
pub struct sy_buffer {
    response: UnaryResponse,
}

/// One request metadata entry: `key` and `value` are NUL-terminated and
/// copied. Keys are ASCII `[0-9a-z_.-]` (upper case is folded to lower);
/// values printable ASCII. Keys ending in "-bin" carry base64 text (padded
/// or not), sent unpadded. Refused with SY_INVALID_ARGUMENT, before anything
/// is sent: a "-bin" value that is not base64,
/// pseudo-headers (":path", ...), connection-specific keys HTTP/2 forbids
/// ("connection", "keep-alive", "proxy-connection", "transfer-encoding",
/// "upgrade", "te", "host"), and keys the transport owns ("content-length",
/// "content-type", "user-agent", "grpc-timeout", "grpc-encoding",
/// "grpc-accept-encoding", "grpc-message", "grpc-message-type",
/// "grpc-status", "grpc-previous-rpc-attempts"); other "grpc-" keys
/// ("grpc-trace-bin", ...) are sent, as gRPC-Go sends them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sy_metadata {
    pub key: *const c_char,
    pub value: *const c_char,
}

/// How to make one call (`sy_call_unary`, `sy_call_unary_start`).
/// Zero-initialize it (`sy_call_options opts = {0};`), then set what
/// applies: all zero, like a NULL options pointer, means gRPC's defaults: no
/// deadline (a service config's `methodConfig` timeout still applies), fail
/// fast, no metadata, no request hash. Read during the call to
/// `sy_call_unary` / `sy_call_unary_start` only: everything is copied.
///
/// A value set without its `has_` flag (`timeout_ms` or `request_hash`
/// non-zero with `has_timeout` / `has_request_hash` false) is refused with
/// SY_INVALID_ARGUMENT rather than silently ignored.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sy_call_options {
    /// The call's deadline, in milliseconds from the start of the call, if
    /// `has_timeout`: sent to the server as grpc-timeout and covering the
    /// pick too. `SY_NO_WAIT` (0) is a deadline already passed, as
    /// everywhere in this header: the call fails with 4 DEADLINE_EXCEEDED
    /// before anything is picked or sent. `SY_WAIT_FOREVER`: no deadline.
    pub timeout_ms: u64,
    /// Whether `timeout_ms` applies; false (zero): no deadline.
    pub has_timeout: bool,
    /// Wait through TRANSIENT_FAILURE for a subchannel instead of failing
    /// at once with 14 UNAVAILABLE (gRPC's wait-for-ready). True always
    /// stands. False (zero): fail fast, unless the service config's
    /// `waitForReady` says otherwise and `has_wait_for_ready` is false.
    pub wait_for_ready: bool,
    /// Whether `wait_for_ready` was set explicitly, so that a false one
    /// fails fast even when the method's `waitForReady` is true (gRPC's
    /// explicit `WaitForReady(false)`, C-core's
    /// `GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET`). False (zero):
    /// only a true `wait_for_ready` overrides the config.
    pub has_wait_for_ready: bool,
    /// Request metadata: `metadata_len` entries (see `sy_metadata`); NULL/0
    /// for none.
    pub metadata: *const sy_metadata,
    pub metadata_len: usize,
    /// The request's hash for hashing policies (ring_hash), if
    /// `has_request_hash`. Under ring_hash with `requestHashHeader` a call
    /// with metadata hashes that header's value (a random hash when it is
    /// missing, as gRPC does); this hash serves only a call with none.
    pub request_hash: u64,
    pub has_request_hash: bool,
}

/// All defaults: what a zeroed struct (or a NULL pointer) means.
impl Default for sy_call_options {
    fn default() -> Self {
        sy_call_options {
            timeout_ms: 0,
            has_timeout: false,
            wait_for_ready: false,
            has_wait_for_ready: false,
            metadata: ptr::null(),
            metadata_len: 0,
            request_hash: 0,
            has_request_hash: false,
        }
    }
}

/// Hears how a `sy_call_unary_start` call ended. Called exactly once per call
/// the start function accepted (it returned SY_OK), on the channel's
/// completion thread: one per channel, started with its first started call,
/// that runs the channel's callbacks one at a time, in the order the calls
/// end. Never on the loop thread, never inside `sy_call_unary_start`. A
/// callback that blocks delays the channel's later callbacks, never a call's
/// deadline (calls run on the event loop and end there, on time).
///
/// - `status`: SY_OK; SY_RPC_FAILED (the call failed: `grpc_code` says how;
///   1 CANCELLED after `sy_call_cancel`); SY_CLOSED (the channel was closed
///   or its runtime freed before or while the call ran); SY_PANIC.
/// - `grpc_code`: the call's gRPC status code (0 on success).
/// - `message`: NUL-terminated UTF-8, the gRPC status message ("" on
///   success); valid during the callback only.
/// - `response`: on SY_OK the response, owned by the callee from now on (free
///   it with `sy_buffer_free`, on any thread, whenever); NULL otherwise.
///
/// On SY_RPC_FAILED, `sy_last_call_details`, `sy_last_call_trailer` and
/// `sy_last_call_trailer_at` inside the callback read what the server sent
/// with the call's status (error details, metadata).
///
/// It may start further calls, cancel calls, and use any `sy_*` function
/// that does not block; a blocking one (`sy_call_unary`, `sy_channel_close`,
/// `sy_channel_wait_for_state_change`, ...) returns SY_WRONG_CONTEXT. It
/// must not free the channel or its runtime.
pub type sy_call_done_fn = Option<
    unsafe extern "C" fn(
        user_ctx: *mut c_void,
        status: sy_status,
        grpc_code: u32,
        message: *const c_char,
        response: *mut sy_buffer,
    ),
>;

/// The response message: `sy_buffer_len` bytes (NULL only for a NULL
/// buffer). Valid until `sy_buffer_free`. Any thread.
#[no_mangle]
pub extern "C" fn sy_buffer_data(buf: *const sy_buffer) -> *const u8 {
    if buf.is_null() {
        return ptr::null();
    }
    // SAFETY: non-NULL; a live buffer per the contract.
    unsafe { &*buf }.response.message.as_ptr()
}

/// The response message's length in bytes; 0 for a NULL buffer. Any thread.
#[no_mangle]
pub extern "C" fn sy_buffer_len(buf: *const sy_buffer) -> usize {
    if buf.is_null() {
        return 0;
    }
    // SAFETY: non-NULL; a live buffer per the contract.
    unsafe { &*buf }.response.message.len()
}

/// Frees a buffer. NULL is a no-op; a second free is undefined, like
/// free(3). Any thread.
#[no_mangle]
pub extern "C" fn sy_buffer_free(buf: *mut sy_buffer) {
    boundary_or((), || {
        if !buf.is_null() {
            // SAFETY: handed out by this library, freed once per the contract.
            drop(unsafe { Box::from_raw(buf) });
        }
    })
}

/// Looks up response metadata: the `index`-th value (0 = first) of header
/// `key` (NUL-terminated, case-insensitive) in the response's initial
/// metadata. On SY_OK `*value` / `*value_len` are the raw value's bytes, not
/// NUL-terminated ("-bin" values are base64 as sent), valid until
/// `sy_buffer_free`. SY_NOT_FOUND if there is no such value. Any thread.
#[no_mangle]
pub extern "C" fn sy_buffer_header(
    buf: *const sy_buffer,
    key: *const c_char,
    index: usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> sy_status {
    metadata_lookup(buf, false, key, index, value, value_len)
}

/// As `sy_buffer_header`, in the response's trailing metadata (where servers
/// usually put per-call results). "grpc-status", "grpc-message" and
/// "grpc-encoding" are the transport's, not metadata: never found, as in
/// gRPC-Go ("grpc-status-details-bin" is found, as there).
#[no_mangle]
pub extern "C" fn sy_buffer_trailer(
    buf: *const sy_buffer,
    key: *const c_char,
    index: usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> sy_status {
    metadata_lookup(buf, true, key, index, value, value_len)
}

/// The `index`-th entry (0 = first) of the response's initial metadata,
/// for listing them all: entries are grouped by key, keys in the order they
/// first came. Its key goes into `*key` / `*key_len` (lower-case, not
/// NUL-terminated) and its value as `sy_buffer_header` gives it, both valid
/// until `sy_buffer_free`. SY_NOT_FOUND past the last entry. Any thread.
#[no_mangle]
pub extern "C" fn sy_buffer_header_at(
    buf: *const sy_buffer,
    index: usize,
    key: *mut *const u8,
    key_len: *mut usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> sy_status {
    metadata_entry(buf, false, index, key, key_len, value, value_len)
}

/// As `sy_buffer_header_at`, in the response's trailing metadata (the
/// transport's own fields, such as "grpc-status", are not in it).
#[no_mangle]
pub extern "C" fn sy_buffer_trailer_at(
    buf: *const sy_buffer,
    index: usize,
    key: *mut *const u8,
    key_len: *mut usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> sy_status {
    metadata_entry(buf, true, index, key, key_len, value, value_len)
}

fn metadata_entry(
    buf: *const sy_buffer,
    trailers: bool,
    index: usize,
    key: *mut *const u8,
    key_len: *mut usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> sy_status {
    boundary(|| {
        let buf = try_ref!(buf, "buffer");
        let key = try_out!(key, "key");
        let key_len = try_out!(key_len, "key_len");
        let value = try_out!(value, "value");
        let value_len = try_out!(value_len, "value_len");
        let map = if trailers {
            &buf.response.trailers
        } else {
            &buf.response.headers
        };
        let Some((k, v)) = map.iter().nth(index) else {
            return Err(Error::new(
                sy_status::SY_NOT_FOUND,
                format!("no metadata entry {index}"),
            ));
        };
        // SAFETY: non-NULL out-parameters; the bytes live as long as `buf`.
        unsafe {
            key.write(k.as_str().as_ptr());
            key_len.write(k.as_str().len());
            value.write(v.as_bytes().as_ptr());
            value_len.write(v.as_bytes().len());
        }
        Ok(())
    })
}

fn metadata_lookup(
    buf: *const sy_buffer,
    trailers: bool,
    key: *const c_char,
    index: usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> sy_status {
    boundary(|| {
        let buf = try_ref!(buf, "buffer");
        // SAFETY: NUL-terminated per the contract.
        let key = unsafe { str_arg(key, "key") }?;
        let value = try_out!(value, "value");
        let value_len = try_out!(value_len, "value_len");
        let map = if trailers {
            &buf.response.trailers
        } else {
            &buf.response.headers
        };
        let Some(v) = map.get_all(key).iter().nth(index) else {
            return Err(Error::new(
                sy_status::SY_NOT_FOUND,
                format!("no value {index} for metadata key {key:?}"),
            ));
        };
        // SAFETY: non-NULL out-parameters; the bytes live as long as `buf`.
        unsafe {
            value.write(v.as_bytes().as_ptr());
            value_len.write(v.as_bytes().len());
        }
        Ok(())
    })
}

/// What one call needs, copied out of C's arguments.
struct CallArgs {
    method: String,
    request: Vec<u8>,
    metadata: Vec<(String, String)>,
    hash: Option<u64>,
    deadline: Option<Instant>,
    wait_for_ready: Option<bool>,
}

impl CallArgs {
    fn options(&self) -> CallOptions<'_> {
        CallOptions {
            deadline: self.deadline,
            wait_for_ready: self.wait_for_ready,
            metadata: &self.metadata,
            hash: self.hash,
        }
    }
}

/// Checks and copies a call's arguments (nothing is sent on failure).
///
/// # Safety
/// As the call functions' contracts: `method` has `method_len` readable
/// bytes, `request` `request_len`, `options` is NULL or a readable
/// `sy_call_options` whose `metadata` has `metadata_len` entries, each with
/// NUL-terminated strings.
unsafe fn call_args(
    method: *const c_char,
    method_len: usize,
    request: *const u8,
    request_len: usize,
    options: *const sy_call_options,
) -> Result<CallArgs, Error> {
    if method.is_null() {
        return Err(Error::null("method"));
    }
    // SAFETY: `method_len` readable bytes per the contract; a length no
    // object can have is refused first.
    let method = unsafe { str_slice_arg(method.cast(), method_len, "method") }?;
    switchyard::check_method(method).map_err(Error::invalid)?;
    if request_len > u32::MAX as usize {
        return Err(Error::invalid(format!(
            "request_len {request_len} exceeds a gRPC message's 4 GiB limit (a negative number?)"
        )));
    }
    // SAFETY: `request_len` readable bytes per the contract.
    let request = unsafe { slice_arg(request, request_len, "request") }?;
    let options = if options.is_null() {
        sy_call_options::default()
    } else {
        // SAFETY: non-NULL, a readable sy_call_options per the contract
        // (read unaligned: nothing is assumed of the pointer's alignment).
        unsafe { options.read_unaligned() }
    };
    if options.timeout_ms != 0 && !options.has_timeout {
        return Err(Error::invalid(format!(
            "options.timeout_ms is {} but options.has_timeout is false: set \
             has_timeout for a deadline (a zeroed sy_call_options has none)",
            options.timeout_ms
        )));
    }
    if options.request_hash != 0 && !options.has_request_hash {
        return Err(Error::invalid(
            "options.request_hash is set but options.has_request_hash is false",
        ));
    }
    // SAFETY: `metadata_len` entries per the contract.
    let entries = unsafe { slice_arg(options.metadata, options.metadata_len, "options.metadata") }?;
    let mut md = Vec::with_capacity(entries.len());
    for e in entries {
        // SAFETY: NUL-terminated per the contract.
        let key = unsafe { str_arg(e.key, "metadata key") }?.to_ascii_lowercase();
        // SAFETY: as above.
        let value = unsafe { str_arg(e.value, "metadata value") }?;
        md.push((key, value.to_string()));
    }
    // The core's rules, the same for Rust callers.
    switchyard::check_metadata(&md).map_err(Error::invalid)?;
    // SY_NO_WAIT (0) is a deadline already passed: the core fails the call
    // with DEADLINE_EXCEEDED before it picks or sends anything.
    let deadline = if options.has_timeout {
        timeout_deadline(options.timeout_ms)
    } else {
        None
    };
    Ok(CallArgs {
        method: method.to_string(),
        request: request.to_vec(),
        metadata: md,
        hash: options.has_request_hash.then_some(options.request_hash),
        deadline,
        wait_for_ready: (options.wait_for_ready || options.has_wait_for_ready)
            .then_some(options.wait_for_ready),
    })
}

/// `pool`: the channel's, whose `closing` flag is set before the channel
/// starts closing (a call can be failed by the closing connection before the
/// loop publishes SHUTDOWN).
fn call_error(reader: &Reader, pool: &CallPool, s: &Status) -> Error {
    set_last_call(s);
    let code = s.code();
    let n = code as u32;
    Error {
        status: failed_status(reader, pool),
        message: Message::Text(
            format!("grpc status {n} ({}): {}", code.name(), s.message()).into(),
        ),
        grpc_code: n,
    }
}

/// The status of a failed call: SY_CLOSED once the channel is closing,
/// SY_RPC_FAILED before. `pool` as for `call_error`.
fn failed_status(reader: &Reader, pool: &CallPool) -> sy_status {
    if pool.is_closing() || reader.channel_state() == ConnectivityState::Shutdown {
        sy_status::SY_CLOSED
    } else {
        sy_status::SY_RPC_FAILED
    }
}

/// One blocking unary RPC on a library-managed channel: picks a subchannel
/// with `reader` (as `sy_pick`), sends the request on its HTTP/2 connection,
/// waits for the response, and reports the outcome to the policy. A call the
/// server never saw (refused stream, GOAWAY) is retried once, transparently;
/// a failed one as the method's `retryPolicy` says (gRFC A6: each attempt
/// picks anew after a jittered backoff or the server's
/// `grpc-retry-pushback-ms`, up to `maxAttempts`, within the service
/// config's `retryThrottling`, never once the server has sent response
/// headers; every attempt within the call's deadline), or hedged as its
/// `hedgingPolicy` says (attempts side by side, the first to end the call
/// wins, the others are cancelled).
///
/// - `method`, `method_len`: the full method name ("/package.Service/Method"),
///   `method_len` bytes of UTF-8, not necessarily NUL-terminated; never NULL.
/// - `request`, `request_len`: the serialized request message (NULL only
///   with length 0), copied; at most 4 GiB - 1.
/// - `options`: deadline, wait-for-ready, metadata, request hash (see
///   `sy_call_options`); NULL for every default (no deadline, fail fast).
///
/// On SY_OK `*response_out` is the response, owned by the caller
/// (`sy_buffer_free`). On SY_RPC_FAILED `sy_last_grpc_code()` is the gRPC
/// status code (e.g. 12 UNIMPLEMENTED from the server, 4 DEADLINE_EXCEEDED,
/// 14 UNAVAILABLE) and `sy_last_error` has "grpc status N (NAME): message".
/// SY_CLOSED: the channel was closed (or its runtime freed) before or during
/// the call. Argument errors (nothing sent, the policy hears nothing):
/// SY_NULL_PARAMETER, SY_INVALID_UTF8, SY_INVALID_ARGUMENT (a malformed
/// method, options (see `sy_call_options`) or metadata (see `sy_metadata`),
/// a length larger than any object, a freed reader, or a reader of a
/// channel whose transports belong to the host: pick with `sy_pick` and
/// send on your own transport there).
///
/// Threading: the reader's thread; never inside a callback of this library
/// (SY_WRONG_CONTEXT). Calls on different readers run in parallel, sharing
/// only the subchannel's HTTP/2 connection (multiplexed streams).
#[no_mangle]
#[must_use]
pub extern "C" fn sy_call_unary(
    reader: *mut sy_reader,
    method: *const c_char,
    method_len: usize,
    request: *const u8,
    request_len: usize,
    options: *const sy_call_options,
    response_out: *mut *mut sy_buffer,
) -> sy_status {
    boundary(|| {
        // Entered (busy) for the whole call: the policy's pick callback runs
        // in it, and must not use this reader.
        let mut r = crate::reader::enter(reader)?;
        let out = try_out!(response_out, "response_out");
        // The arguments first, as the header lists the errors.
        // SAFETY: the pointers and lengths as this function's contract says.
        let args = unsafe { call_args(method, method_len, request, request_len, options) }?;
        if !r.managed {
            return Err(host_managed());
        }
        refuse_in_callback(
            "a blocking call inside a switchyard callback (use sy_call_unary_start)",
        )?;
        let response = r
            .reader
            .unary(&args.method, &args.request, &args.options())
            .map_err(|s| call_error(&r.reader, &r.pool, &s))?;
        let buf = Box::into_raw(Box::new(sy_buffer { response }));
        // SAFETY: non-NULL out-parameter, written on success only.
        unsafe { out.write(buf) };
        Ok(())
    })
}

fn host_managed() -> Error {
    Error::invalid(
        "the channel's transports belong to the host (sy_host_transport): \
         pick with sy_pick and send on your own transport",
    )
}

/// Starts one unary RPC and returns at once; `callback` hears how it ended.
/// Arguments as `sy_call_unary`'s, all copied before this returns
/// (`user_ctx` is passed through untouched). `call_id_out` (NULL allowed)
/// receives the call's id for `sy_call_cancel`, on SY_OK only, before the
/// callback can run (which may be before this returns, on another thread: a
/// callback may read the id from memory it then frees); ids are never
/// reused on a channel.
///
/// The call costs no thread while it runs, however many are in flight: the
/// channel's event loop picks for it (waiting, like `sy_call_unary`, for a
/// READY subchannel when none is yet, or through TRANSIENT_FAILURE with
/// `wait_for_ready`), drives its HTTP/2 stream, retries it as
/// `sy_call_unary` does (a backoff is a loop timer, not a thread), reports
/// each attempt's outcome to the policy, and ends it at its deadline (a
/// hedged call's attempts run side by side, all driven by the loop). The
/// callback runs on the channel's completion thread (see
/// `sy_call_done_fn`). `sy_channel_close`, `sy_channel_free` and
/// `sy_runtime_free` complete every call still running with SY_CLOSED and
/// return once every callback of the channel has returned.
///
/// Returns SY_OK if the call was accepted: `callback` then runs exactly once.
/// Otherwise it never runs: SY_NULL_PARAMETER (`channel`, `method` or
/// `callback`), SY_INVALID_UTF8, SY_INVALID_ARGUMENT (as `sy_call_unary`'s),
/// SY_CLOSED (channel closed or runtime freed), SY_IO (the completion thread
/// could not be started). Any thread, including inside this library's
/// callbacks (it never blocks on the network).
#[no_mangle]
#[must_use]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn sy_call_unary_start(
    channel: *const crate::channel::sy_channel,
    method: *const c_char,
    method_len: usize,
    request: *const u8,
    request_len: usize,
    options: *const sy_call_options,
    callback: sy_call_done_fn,
    user_ctx: *mut c_void,
    call_id_out: *mut u64,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(channel)?;
        let Some(callback) = callback else {
            return Err(Error::null("callback is NULL"));
        };
        // The arguments first, then closed, as the header lists the errors.
        // SAFETY: the pointers and lengths as this function's contract says.
        let args = unsafe { call_args(method, method_len, request, request_len, options) }?;
        if ch.pool.is_closing() || ch.channel.is_closed() {
            return Err(Error::new(sy_status::SY_CLOSED, "the channel is closed"));
        }
        if !ch.managed {
            return Err(host_managed());
        }
        let pool = Arc::clone(&ch.pool);
        let ctx = UserCtx(user_ctx);
        let done = move |result: CallResult| {
            // `ctx` is moved whole (not just its pointer field) so the
            // closure is Send.
            let ctx = ctx;
            complete(callback, ctx.0, &pool, result);
        };
        // The id is written before the call can complete: its callback may
        // run on another thread before this returns, and may read (or free)
        // the memory `call_id_out` points into.
        let note_id = |id: u64| {
            if !call_id_out.is_null() {
                // SAFETY: non-NULL out-parameter per the contract; written
                // only for a started call (success).
                unsafe { call_id_out.write_unaligned(id) };
            }
        };
        ch.channel
            .unary_start_noting_id(&args.method, &args.request, &args.options(), note_id, done)
            .map_err(|e| match e {
                switchyard::Error::Closed | switchyard::Error::RuntimeGone => {
                    Error::new(sy_status::SY_CLOSED, "the channel is closed")
                }
                switchyard::Error::Io(m) => Error::new(sy_status::SY_IO, m),
                e => Error::invalid(e.to_string()),
            })?;
        Ok(())
    })
}

/// Cancels a call started with `sy_call_unary_start` on `channel`: SY_OK if
/// it was still running (its callback then runs with SY_RPC_FAILED and gRPC
/// code 1 CANCELLED, or SY_CLOSED if the channel is closing meanwhile; its
/// HTTP/2 stream, if it had one, is reset with RST_STREAM(CANCEL) and the
/// policy hears the attempt failed); SY_NOT_FOUND if it already finished
/// (its callback has run or is about to) or no such call was started here.
/// Never blocks. Any thread, including inside this library's callbacks.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_call_cancel(
    channel: *const crate::channel::sy_channel,
    call_id: u64,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(channel)?;
        if ch.channel.cancel_call(call_id) {
            Ok(())
        } else {
            Err(Error::new(
                sy_status::SY_NOT_FOUND,
                format!("no call {call_id} is running on this channel"),
            ))
        }
    })
}

struct UserCtx(*mut c_void);
// SAFETY: only handed back to the caller's callback, which the header says
// runs on the channel's completion thread: the caller accepted that when
// starting the call.
unsafe impl Send for UserCtx {}

type DoneFn = unsafe extern "C" fn(*mut c_void, sy_status, u32, *const c_char, *mut sy_buffer);

/// Runs a started call's callback (on the completion thread).
fn complete(callback: DoneFn, ctx: *mut c_void, pool: &CallPool, result: CallResult) {
    let (status, code, message, response) = match result {
        Ok(response) => (
            sy_status::SY_OK,
            0,
            String::new(),
            Box::into_raw(Box::new(sy_buffer { response })),
        ),
        Err(s) => {
            // For `sy_last_call_details` / `_trailer` inside the callback.
            set_last_call(&s);
            let status = if pool.is_closing() {
                sy_status::SY_CLOSED
            } else {
                sy_status::SY_RPC_FAILED
            };
            (
                status,
                s.code() as u32,
                s.message().to_string(),
                ptr::null_mut(),
            )
        }
    };
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: the caller's callback with its own ctx; `message` outlives
    // the call; `response` is handed over.
    in_callback(|| unsafe { callback(ctx, status, code, message.as_ptr(), response) });
}

#[cfg(test)]
mod tests {
    //! Started calls and cancellation through the C ABI, against the
    //! in-process test server on 127.0.0.1.

    use crate::channel::*;
    use crate::options::*;
    use crate::runtime::*;
    use crate::status::sy_status;
    use crate::*;
    use std::ffi::{c_char, c_void, CStr, CString};
    use std::ptr;
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::time::{Duration, Instant};
    use switchyard_testserver::{Listen, ServerOptions, TestServer};

    type Outcome = (sy_status, u32, String, bool);

    fn ok(s: sy_status) {
        assert_eq!(s, sy_status::SY_OK);
    }

    /// The callback: sends (status, code, message, had a response) to the
    /// `Sender` behind `ctx` (leaked per call: at most one callback each).
    unsafe extern "C" fn on_done(
        ctx: *mut c_void,
        status: sy_status,
        code: u32,
        message: *const c_char,
        response: *mut sy_buffer,
    ) {
        // SAFETY: `ctx` is a Box<Sender> from `start`, used once.
        let tx = unsafe { Box::from_raw(ctx.cast::<Sender<Outcome>>()) };
        // SAFETY: NUL-terminated for the callback's duration.
        let message = unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned();
        let _ = tx.send((status, code, message, !response.is_null()));
        sy_buffer_free(response);
    }

    struct Fixture {
        rt: *mut sy_runtime,
        ch: *mut sy_channel,
        server: TestServer,
    }

    impl Fixture {
        fn new() -> Fixture {
            let server = TestServer::start(
                Listen::Tcp("127.0.0.1:0".parse().unwrap()),
                ServerOptions::default(),
            )
            .unwrap();
            let mut rt = ptr::null_mut();
            ok(sy_runtime_new(&mut rt));
            let mut o = ptr::null_mut();
            ok(sy_channel_options_new(&mut o));
            ok(sy_channel_options_set_insecure(o, true));
            // Deprecated, accepted, and no longer a limit on calls in flight.
            ok(sy_channel_options_set_call_threads(o, 1));
            let target = CString::new(format!("127.0.0.1:{}", server.port())).unwrap();
            let mut ch = ptr::null_mut();
            ok(sy_channel_new_with_options(
                rt,
                target.as_ptr(),
                ptr::null(),
                o,
                ptr::null(),
                None,
                ptr::null_mut(),
                None,
                &mut ch,
            ));
            sy_channel_options_free(o);
            Fixture { rt, ch, server }
        }

        /// Starts a wait-for-ready call with `metadata` and a timeout; its
        /// outcome arrives on the receiver.
        fn start(
            &self,
            metadata: &[(&CStr, &CStr)],
            timeout_ms: u64,
        ) -> (sy_status, u64, Receiver<Outcome>) {
            let md: Vec<sy_metadata> = metadata
                .iter()
                .map(|(k, v)| sy_metadata {
                    key: k.as_ptr(),
                    value: v.as_ptr(),
                })
                .collect();
            let opts = sy_call_options {
                timeout_ms,
                has_timeout: true,
                wait_for_ready: true,
                metadata: md.as_ptr(),
                metadata_len: md.len(),
                ..Default::default()
            };
            self.start_with(METHOD.as_bytes(), METHOD.len(), &opts)
        }

        /// Starts a call of `method` (`method_len` bytes of it) with
        /// `options` as given.
        fn start_with(
            &self,
            method: &[u8],
            method_len: usize,
            options: *const sy_call_options,
        ) -> (sy_status, u64, Receiver<Outcome>) {
            let (tx, rx) = channel();
            let ctx = Box::into_raw(Box::new(tx));
            let mut id = 0;
            let st = sy_call_unary_start(
                self.ch,
                method.as_ptr().cast(),
                method_len,
                b"hi".as_ptr(),
                2,
                options,
                Some(on_done),
                ctx.cast(),
                &mut id,
            );
            if st != sy_status::SY_OK {
                // SAFETY: not handed over: the callback never runs.
                drop(unsafe { Box::from_raw(ctx) });
            }
            (st, id, rx)
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            sy_channel_free(self.ch);
            sy_runtime_free(self.rt);
        }
    }

    const SILENT: (&CStr, &CStr) = (c"x-delay-ms", c"600000");

    /// A started call's callback reads what the server sent with its
    /// failed status (`sy_last_call_details`, `sy_last_call_trailer`).
    unsafe extern "C" fn on_done_details(
        ctx: *mut c_void,
        _: sy_status,
        _: u32,
        _: *const c_char,
        response: *mut sy_buffer,
    ) {
        // SAFETY: `ctx` is a Box<Sender> from the test, used once.
        let tx = unsafe { Box::from_raw(ctx.cast::<Sender<(Vec<u8>, Vec<u8>)>>()) };
        let mut details = [0u8; 16];
        let mut port = [0u8; 16];
        let (mut n, mut m) = (0, 0);
        ok(crate::last_call::sy_last_call_details(
            details.as_mut_ptr(),
            16,
            &mut n,
        ));
        ok(crate::last_call::sy_last_call_trailer(
            c"x-backend-port".as_ptr(),
            0,
            port.as_mut_ptr(),
            16,
            &mut m,
        ));
        let _ = tx.send((details[..n].to_vec(), port[..m].to_vec()));
        sy_buffer_free(response);
    }

    #[test]
    #[cfg_attr(miri, ignore = "a real server on 127.0.0.1: Miri has no sockets")]
    fn a_failed_calls_details_reach_its_callback() {
        let f = Fixture::new();
        let md = [
            sy_metadata {
                key: c"x-respond-status".as_ptr(),
                value: c"9".as_ptr(),
            },
            sy_metadata {
                key: c"x-respond-details".as_ptr(),
                value: c"CAkSAm5v".as_ptr(),
            },
        ];
        let opts = sy_call_options {
            timeout_ms: 5000,
            has_timeout: true,
            wait_for_ready: true,
            metadata: md.as_ptr(),
            metadata_len: md.len(),
            ..Default::default()
        };
        let (tx, rx) = channel::<(Vec<u8>, Vec<u8>)>();
        let ctx = Box::into_raw(Box::new(tx));
        ok(sy_call_unary_start(
            f.ch,
            METHOD.as_ptr().cast(),
            METHOD.len(),
            b"x".as_ptr(),
            1,
            &opts,
            Some(on_done_details),
            ctx.cast(),
            ptr::null_mut(),
        ));
        let (details, port) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(details, [8, 9, 18, 2, b'n', b'o']);
        assert_eq!(port, f.server.port().to_string().as_bytes());
    }

    #[test]
    #[cfg_attr(miri, ignore = "a real server on 127.0.0.1: Miri has no sockets")]
    fn a_200_ms_call_ends_on_time_behind_eight_silent_calls_with_one_call_thread() {
        let f = Fixture::new();
        let silent: Vec<_> = (0..9)
            .map(|_| f.start(&[SILENT], SY_WAIT_FOREVER))
            .collect();
        assert!(silent.iter().all(|(st, ..)| *st == sy_status::SY_OK));
        let t0 = Instant::now();
        let (st, _, rx) = f.start(&[SILENT], 200);
        ok(st);
        let (status, code, ..) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((status, code), (sy_status::SY_RPC_FAILED, 4));
        let took = t0.elapsed();
        assert!(took < Duration::from_millis(2500), "{took:?}");
        // Close completes the silent ones, each once, with SY_CLOSED, before
        // it returns.
        ok(sy_channel_close(f.ch));
        for (_, _, rx) in silent {
            let (status, code, _, response) = rx.try_recv().unwrap();
            assert_eq!((status, code, response), (sy_status::SY_CLOSED, 1, false));
            assert!(rx.try_recv().is_err());
        }
        let (st, ..) = f.start(&[], SY_WAIT_FOREVER);
        assert_eq!(st, sy_status::SY_CLOSED);
    }

    #[test]
    #[cfg_attr(miri, ignore = "a real server on 127.0.0.1: Miri has no sockets")]
    fn cancel_ends_a_call_with_cancelled_and_resets_its_stream() {
        let f = Fixture::new();
        let (st, id, rx) = f.start(&[SILENT], SY_WAIT_FOREVER);
        ok(st);
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.server.requests() == 0 {
            assert!(
                Instant::now() < deadline,
                "the call never reached the server"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        ok(sy_call_cancel(f.ch, id));
        let (status, code, message, response) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            (status, code, response),
            (sy_status::SY_RPC_FAILED, 1, false)
        );
        assert_eq!(message, "call cancelled");
        while f.server.resets() == 0 {
            assert!(Instant::now() < deadline, "the server saw no RST_STREAM");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sy_call_cancel(f.ch, id), sy_status::SY_NOT_FOUND);
        assert_eq!(sy_call_cancel(f.ch, id + 1000), sy_status::SY_NOT_FOUND);
        assert_eq!(
            sy_call_cancel(ptr::null(), id),
            sy_status::SY_NULL_PARAMETER
        );

        // A finished call is not found; ids are not reused.
        let (st, id2, rx) = f.start(&[], 5000);
        ok(st);
        assert!(id2 > id);
        let (status, _, _, response) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((status, response), (sy_status::SY_OK, true));
        assert_eq!(sy_call_cancel(f.ch, id2), sy_status::SY_NOT_FOUND);
    }

    const METHOD: &str = "/echo.Echo/Unary";

    /// One blocking wait-for-ready call on a fresh reader of the fixture's
    /// channel: (status, gRPC code).
    fn blocking_call(f: &Fixture, timeout_ms: u64) -> (sy_status, u32) {
        let opts = sy_call_options {
            timeout_ms,
            has_timeout: true,
            wait_for_ready: true,
            ..Default::default()
        };
        blocking_call_with(f.ch, METHOD.as_bytes(), METHOD.len(), &opts)
    }

    /// One blocking call of `method` (`method_len` bytes of it) with
    /// `options` as given, on a fresh reader of `ch`: (status, gRPC code).
    fn blocking_call_with(
        ch: *mut sy_channel,
        method: &[u8],
        method_len: usize,
        options: *const sy_call_options,
    ) -> (sy_status, u32) {
        let mut r = ptr::null_mut();
        ok(crate::reader::sy_reader_new(ch, &mut r));
        let sentinel = ptr::NonNull::<sy_buffer>::dangling().as_ptr();
        let mut resp = sentinel;
        let st = sy_call_unary(
            r,
            method.as_ptr().cast(),
            method_len,
            b"hi".as_ptr(),
            2,
            options,
            &mut resp,
        );
        let code = if st == sy_status::SY_OK {
            assert!(!resp.is_null() && resp != sentinel);
            sy_buffer_free(resp);
            0
        } else {
            assert_eq!(resp, sentinel, "written on success only");
            sy_last_grpc_code()
        };
        crate::reader::sy_reader_free(r);
        (st, code)
    }

    /// A timeout of 0 means what it means for a pick: no time at all. A call
    /// given `SY_NO_WAIT` fails with DEADLINE_EXCEEDED and the server never
    /// sees it (it used to mean "no deadline"); `SY_WAIT_FOREVER` is the
    /// call without a deadline. Both through both call functions.
    #[test]
    #[cfg_attr(miri, ignore = "a real server on 127.0.0.1: Miri has no sockets")]
    fn a_zero_timeout_is_an_expired_deadline_and_wait_forever_is_none() {
        let f = Fixture::new();
        assert_eq!(blocking_call(&f, SY_NO_WAIT), (sy_status::SY_RPC_FAILED, 4));
        let (st, _, rx) = f.start(&[], SY_NO_WAIT);
        ok(st);
        let (status, code, message, response) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            (status, code, response),
            (sy_status::SY_RPC_FAILED, 4, false)
        );
        assert_eq!(message, "deadline exceeded before the call started");
        assert_eq!(f.server.requests(), 0, "an expired call is never sent");

        assert_eq!(blocking_call(&f, SY_WAIT_FOREVER), (sy_status::SY_OK, 0));
        let (st, _, rx) = f.start(&[], SY_WAIT_FOREVER);
        ok(st);
        let (status, code, _, response) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((status, code, response), (sy_status::SY_OK, 0, true));
        assert_eq!(f.server.requests(), 2);
    }

    #[test]
    #[cfg_attr(miri, ignore = "a real server on 127.0.0.1: Miri has no sockets")]
    fn connection_specific_metadata_is_an_invalid_argument() {
        let f = Fixture::new();
        for key in [
            c"connection",
            c"Keep-Alive",
            c"proxy-connection",
            c"transfer-encoding",
            c"upgrade",
            c"te",
            c"host",
            c":authority",
        ] {
            let (st, id, rx) = f.start(&[(c"x-ok", c"1"), (key, c"v")], 1000);
            assert_eq!(st, sy_status::SY_INVALID_ARGUMENT, "{key:?}");
            assert_eq!(id, 0, "written on success only");
            drop(rx);
            let mut r = ptr::null_mut();
            ok(crate::reader::sy_reader_new(f.ch, &mut r));
            let md = [sy_metadata {
                key: key.as_ptr(),
                value: c"v".as_ptr(),
            }];
            let opts = sy_call_options {
                metadata: md.as_ptr(),
                metadata_len: 1,
                ..Default::default()
            };
            let mut resp = ptr::null_mut();
            let st = sy_call_unary(
                r,
                METHOD.as_ptr().cast(),
                METHOD.len(),
                ptr::null(),
                0,
                &opts,
                &mut resp,
            );
            assert_eq!(st, sy_status::SY_INVALID_ARGUMENT, "{key:?}");
            assert!(resp.is_null());
            crate::reader::sy_reader_free(r);
        }
        assert_eq!(f.server.requests(), 0, "nothing was sent");
    }

    /// The struct C and Python (ctypes) lay out themselves: on 64-bit
    /// targets, 48 bytes in this order.
    #[test]
    fn call_options_layout_is_frozen() {
        use std::mem::{align_of, offset_of, size_of};
        if size_of::<usize>() == 8 {
            assert_eq!(size_of::<sy_call_options>(), 48);
            assert_eq!(
                [
                    offset_of!(sy_call_options, timeout_ms),
                    offset_of!(sy_call_options, has_timeout),
                    offset_of!(sy_call_options, wait_for_ready),
                    offset_of!(sy_call_options, has_wait_for_ready),
                    offset_of!(sy_call_options, metadata),
                    offset_of!(sy_call_options, metadata_len),
                    offset_of!(sy_call_options, request_hash),
                    offset_of!(sy_call_options, has_request_hash),
                ],
                [0, 8, 9, 10, 16, 24, 32, 40]
            );
        }
        assert_eq!(align_of::<sy_call_options>(), 8);
    }

    /// This thread's `sy_last_error`.
    fn last_error() -> String {
        let mut buf = vec![0u8; 512];
        let n = sy_last_error(buf.as_mut_ptr().cast(), buf.len());
        buf.truncate(n.min(511));
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A NULL `sy_call_options` and a zeroed one are the same thing, gRPC's
    /// defaults: no deadline (a zero `timeout_ms` is not an expired deadline
    /// unless `has_timeout` says it applies) and fail fast; for both call
    /// functions.
    #[test]
    #[cfg_attr(miri, ignore = "a real server on 127.0.0.1: Miri has no sockets")]
    fn null_options_and_zeroed_options_are_the_defaults() {
        let f = Fixture::new();
        // SAFETY: all-zero bytes are a valid sy_call_options (NULL pointer,
        // zero numbers, false flags): what C's `= {0}` makes.
        let zeroed: sy_call_options = unsafe { std::mem::zeroed() };
        for opts in [ptr::null(), &zeroed as *const sy_call_options] {
            assert_eq!(
                blocking_call_with(f.ch, METHOD.as_bytes(), METHOD.len(), opts),
                (sy_status::SY_OK, 0)
            );
            let (st, _, rx) = f.start_with(METHOD.as_bytes(), METHOD.len(), opts);
            ok(st);
            let (status, code, _, response) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!((status, code, response), (sy_status::SY_OK, 0, true));
        }
        assert_eq!(f.server.requests(), 4);
        // The same zero with has_timeout set is SY_NO_WAIT: an expired
        // deadline, never sent.
        let expired = sy_call_options {
            has_timeout: true,
            ..zeroed
        };
        assert_eq!(
            blocking_call_with(f.ch, METHOD.as_bytes(), METHOD.len(), &expired),
            (sy_status::SY_RPC_FAILED, 4)
        );
        assert_eq!(f.server.requests(), 4);

        // Fail fast by default: with nothing listening, the call fails with
        // UNAVAILABLE once the connection attempt fails; wait_for_ready
        // waits instead, until its deadline.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut o = ptr::null_mut();
        ok(sy_channel_options_new_insecure(&mut o));
        let target = CString::new(format!("127.0.0.1:{port}")).unwrap();
        let mut dead = ptr::null_mut();
        ok(sy_channel_new_simple(
            f.rt,
            target.as_ptr(),
            ptr::null(),
            o,
            &mut dead,
        ));
        sy_channel_options_free(o);
        for opts in [ptr::null(), &zeroed as *const sy_call_options] {
            assert_eq!(
                blocking_call_with(dead, METHOD.as_bytes(), METHOD.len(), opts),
                (sy_status::SY_RPC_FAILED, 14)
            );
        }
        let wait = sy_call_options {
            wait_for_ready: true,
            has_timeout: true,
            timeout_ms: 200,
            ..zeroed
        };
        assert_eq!(
            blocking_call_with(dead, METHOD.as_bytes(), METHOD.len(), &wait),
            (sy_status::SY_RPC_FAILED, 4)
        );
        sy_channel_free(dead);
    }

    /// Options and lengths that cannot be right are refused with a status
    /// and a message naming the argument, before anything is sent: the
    /// out-parameter is untouched and (for started calls) the callback never
    /// runs.
    #[test]
    #[cfg_attr(miri, ignore = "a real server on 127.0.0.1: Miri has no sockets")]
    fn bad_options_and_absurd_lengths_are_refused_with_clear_errors() {
        let f = Fixture::new();
        let md = [sy_metadata {
            key: c"x-ok".as_ptr(),
            value: c"1".as_ptr(),
        }];
        let bad_md = [sy_metadata {
            key: c"grpc-timeout".as_ptr(),
            value: c"1S".as_ptr(),
        }];
        let null_key = [sy_metadata {
            key: ptr::null(),
            value: c"1".as_ptr(),
        }];
        let base = sy_call_options::default();
        // (what, method, method_len, options, status, what the message says)
        type Case<'a> = (
            &'a str,
            &'a [u8],
            usize,
            sy_call_options,
            sy_status,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "timeout without has_timeout",
                METHOD.as_bytes(),
                METHOD.len(),
                sy_call_options {
                    timeout_ms: 5000,
                    ..base
                },
                sy_status::SY_INVALID_ARGUMENT,
                "has_timeout",
            ),
            (
                "hash without has_request_hash",
                METHOD.as_bytes(),
                METHOD.len(),
                sy_call_options {
                    request_hash: 7,
                    ..base
                },
                sy_status::SY_INVALID_ARGUMENT,
                "has_request_hash",
            ),
            (
                "metadata NULL with a length",
                METHOD.as_bytes(),
                METHOD.len(),
                sy_call_options {
                    metadata_len: 1,
                    ..base
                },
                sy_status::SY_NULL_PARAMETER,
                "options.metadata",
            ),
            (
                "a negative metadata_len",
                METHOD.as_bytes(),
                METHOD.len(),
                sy_call_options {
                    metadata: md.as_ptr(),
                    metadata_len: usize::MAX,
                    ..base
                },
                sy_status::SY_INVALID_ARGUMENT,
                "larger than any object",
            ),
            (
                "a key the transport owns",
                METHOD.as_bytes(),
                METHOD.len(),
                sy_call_options {
                    metadata: bad_md.as_ptr(),
                    metadata_len: 1,
                    ..base
                },
                sy_status::SY_INVALID_ARGUMENT,
                "grpc-timeout",
            ),
            (
                "a NULL key",
                METHOD.as_bytes(),
                METHOD.len(),
                sy_call_options {
                    metadata: null_key.as_ptr(),
                    metadata_len: 1,
                    ..base
                },
                sy_status::SY_NULL_PARAMETER,
                "metadata key",
            ),
            (
                "a negative method_len",
                METHOD.as_bytes(),
                usize::MAX,
                base,
                sy_status::SY_INVALID_ARGUMENT,
                "larger than any object",
            ),
            (
                "a method cut short",
                METHOD.as_bytes(),
                1,
                base,
                sy_status::SY_INVALID_ARGUMENT,
                "not a gRPC path",
            ),
            (
                "a method that is not UTF-8",
                b"/a/\xff",
                4,
                base,
                sy_status::SY_INVALID_UTF8,
                "method",
            ),
        ];
        for (what, method, method_len, opts, want, says) in cases {
            assert_eq!(
                blocking_call_with(f.ch, method, method_len, &opts).0,
                want,
                "{what}"
            );
            let message = last_error();
            assert!(message.contains(says), "{what}: {message:?}");
            let (st, id, rx) = f.start_with(method, method_len, &opts);
            assert_eq!((st, id), (want, 0), "{what}");
            assert!(last_error().contains(says), "{what}");
            assert!(
                rx.recv_timeout(Duration::from_millis(50)).is_err(),
                "{what}"
            );
        }
        // A NULL method, and a request of more than 4 GiB.
        let mut r = ptr::null_mut();
        ok(crate::reader::sy_reader_new(f.ch, &mut r));
        let mut resp = ptr::null_mut();
        let st = sy_call_unary(r, ptr::null(), 0, ptr::null(), 0, ptr::null(), &mut resp);
        assert_eq!(st, sy_status::SY_NULL_PARAMETER);
        assert!(last_error().contains("method"), "{}", last_error());
        let st = sy_call_unary(
            r,
            METHOD.as_ptr().cast(),
            METHOD.len(),
            b"x".as_ptr(),
            1 << 32,
            ptr::null(),
            &mut resp,
        );
        assert_eq!(st, sy_status::SY_INVALID_ARGUMENT);
        assert!(last_error().contains("4 GiB"), "{}", last_error());
        assert!(resp.is_null());
        crate::reader::sy_reader_free(r);
        assert_eq!(f.server.requests(), 0, "nothing was sent");
    }
}
