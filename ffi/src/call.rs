//! Unary RPCs from C over library-managed connections: the blocking
//! `sy_call_unary` (on the caller's reader) and `sy_call_unary_start` (on the
//! channel's completion threads), with responses as `sy_buffer`s.
//!
//! Concurrency: a blocking call runs entirely on the calling thread with that
//! thread's reader; calls on different readers share nothing in this crate
//! (no lock, no shared counter) and meet only in the core's picker table
//! (read-only) and the subchannel's HTTP/2 connection. `sy_call_unary_start`
//! adds one mutex hold to enqueue the call and one to dequeue it. The enqueue
//! is short unless it starts a completion thread: that thread's reader is
//! created and the thread spawned under the lock (so the thread count and
//! `sy_channel_close`'s join see it at once); it happens at most
//! `call_threads` times per channel.

use crate::channel::{channel_ref, timeout_deadline, ChannelBox};
use crate::error::{Error, Message};
use crate::macros::{boundary, boundary_or, in_callback, refuse_in_callback};
use crate::reader::sy_reader;
use crate::status::sy_status;
use crate::strings::{slice_arg, str_arg};
use std::collections::VecDeque;
use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::Instant;
use switchyard::{CallOptions, Code, ConnectivityState, Reader, Status, UnaryResponse};

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
/// values printable ASCII. Keys ending in "-bin" carry base64 text, sent
/// as given. Keys the transport owns ("grpc-*", "content-type", "te",
/// "user-agent", "connection") are refused.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sy_metadata {
    pub key: *const c_char,
    pub value: *const c_char,
}

/// Hears how a `sy_call_unary_start` call ended. Called exactly once per call
/// the start function accepted (it returned SY_OK), on one of the channel's
/// completion threads (never on the starting thread, never on the loop
/// thread), possibly concurrently with other calls' callbacks.
///
/// - `status`: SY_OK; SY_RPC_FAILED (the call failed: `grpc_code` says how);
///   SY_CLOSED (the channel was closed or its runtime freed before or while
///   the call ran); SY_PANIC.
/// - `grpc_code`: the call's gRPC status code (0 on success).
/// - `message`: NUL-terminated UTF-8, the gRPC status message ("" on
///   success); valid during the callback only.
/// - `response`: on SY_OK the response, owned by the callee from now on (free
///   it with `sy_buffer_free`, on any thread, whenever); NULL otherwise.
///
/// It may start further calls and use any `sy_*` function that does not
/// block; a blocking one (`sy_call_unary`, `sy_channel_close`,
/// `sy_channel_wait_for_state_change`, ...) returns SY_WRONG_CONTEXT. It
/// must not free the channel or its runtime. A callback that blocks holds up
/// one completion thread.
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
/// usually put per-call results; "grpc-status" is there too).
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
    wait_for_ready: bool,
}

const RESERVED_KEYS: [&str; 4] = ["content-type", "te", "user-agent", "connection"];

/// Checks and copies a call's arguments (nothing is sent on failure).
#[allow(clippy::too_many_arguments)]
fn call_args(
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    metadata: *const sy_metadata,
    metadata_len: usize,
    request_hash: *const u64,
    timeout_ms: u64,
    wait_for_ready: bool,
) -> Result<CallArgs, Error> {
    // SAFETY: NUL-terminated per the contract.
    let method = unsafe { str_arg(method, "method") }?;
    if !method.starts_with('/') || method.len() < 2 || method.bytes().any(|b| b <= b' ') {
        return Err(Error::invalid(format!(
            "method {method:?} is not a gRPC path (\"/package.Service/Method\")"
        )));
    }
    if request_len > u32::MAX as usize {
        return Err(Error::invalid(format!(
            "request_len {request_len} exceeds a gRPC message's 4 GiB limit (a negative number?)"
        )));
    }
    // SAFETY: `request_len` readable bytes per the contract.
    let request = unsafe { slice_arg(request, request_len, "request") }?;
    // SAFETY: `metadata_len` entries per the contract.
    let entries = unsafe { slice_arg(metadata, metadata_len, "metadata") }?;
    let mut md = Vec::with_capacity(entries.len());
    for e in entries {
        // SAFETY: NUL-terminated per the contract.
        let key = unsafe { str_arg(e.key, "metadata key") }?.to_ascii_lowercase();
        // SAFETY: as above.
        let value = unsafe { str_arg(e.value, "metadata value") }?;
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b"-_.".contains(&b));
        if !key_ok {
            return Err(Error::invalid(format!("metadata key {key:?} is not valid")));
        }
        if key.starts_with("grpc-") || RESERVED_KEYS.contains(&key.as_str()) {
            return Err(Error::invalid(format!(
                "metadata key {key:?} belongs to the transport"
            )));
        }
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(Error::invalid(format!(
                "metadata value for {key:?} is not printable ASCII"
            )));
        }
        md.push((key, value.to_string()));
    }
    let hash = if request_hash.is_null() {
        None
    } else {
        // SAFETY: non-NULL, points to a u64 per the contract.
        Some(unsafe { request_hash.read_unaligned() })
    };
    // 0 is "no deadline" too for a call (it never means "do not wait").
    let deadline = if timeout_ms == 0 {
        None
    } else {
        timeout_deadline(timeout_ms)
    };
    Ok(CallArgs {
        method: method.to_string(),
        request: request.to_vec(),
        metadata: md,
        hash,
        deadline,
        wait_for_ready,
    })
}

/// Runs one call on `reader`.
fn run_call(reader: &mut Reader, args: &CallArgs) -> Result<UnaryResponse, Status> {
    let options = CallOptions {
        deadline: args.deadline,
        wait_for_ready: args.wait_for_ready,
        metadata: &args.metadata,
        hash: args.hash,
    };
    reader.unary(&args.method, &args.request, &options)
}

/// `pool`: the channel's, whose `closing` flag is set before the channel
/// starts closing (a call can be failed by the closing connection before the
/// loop publishes SHUTDOWN).
fn call_error(reader: &Reader, pool: &CallPool, s: &Status) -> Error {
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
/// server never saw (refused stream, GOAWAY) is retried once, transparently.
///
/// - `method`: "/package.Service/Method", NUL-terminated.
/// - `request`, `request_len`: the serialized request message (NULL only
///   with length 0), copied; at most 4 GiB - 1.
/// - `metadata`, `metadata_len`: request metadata (see `sy_metadata`); NULL/0
///   for none.
/// - `request_hash`: NULL, or the request's hash for hashing policies.
/// - `timeout_ms`: the call's deadline, sent to the server as grpc-timeout
///   and covering the pick too; 0 or `SY_WAIT_FOREVER`: none.
/// - `wait_for_ready`: wait through TRANSIENT_FAILURE for a subchannel
///   instead of failing at once with UNAVAILABLE.
///
/// On SY_OK `*response_out` is the response, owned by the caller
/// (`sy_buffer_free`). On SY_RPC_FAILED `sy_last_grpc_code()` is the gRPC
/// status code (e.g. 12 UNIMPLEMENTED from the server, 4 DEADLINE_EXCEEDED,
/// 14 UNAVAILABLE) and `sy_last_error` has "grpc status N (NAME): message".
/// SY_CLOSED: the channel was closed (or its runtime freed) before or during
/// the call. Argument errors (nothing sent): SY_NULL_PARAMETER,
/// SY_INVALID_UTF8, SY_INVALID_ARGUMENT (a malformed method, metadata or
/// length, a freed reader, or a reader of a channel whose transports belong
/// to the host: pick with `sy_pick` and send on your own transport there).
///
/// Threading: the reader's thread; never inside a callback of this library
/// (SY_WRONG_CONTEXT). Calls on different readers run in parallel, sharing
/// only the subchannel's HTTP/2 connection (multiplexed streams).
#[no_mangle]
#[must_use]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn sy_call_unary(
    reader: *mut sy_reader,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    metadata: *const sy_metadata,
    metadata_len: usize,
    request_hash: *const u64,
    timeout_ms: u64,
    wait_for_ready: bool,
    response_out: *mut *mut sy_buffer,
) -> sy_status {
    boundary(|| {
        // Entered (busy) for the whole call: the policy's pick callback runs
        // in it, and must not use this reader.
        let mut r = crate::reader::enter(reader)?;
        let out = try_out!(response_out, "response_out");
        if !r.managed {
            return Err(host_managed());
        }
        let args = call_args(
            method,
            request,
            request_len,
            metadata,
            metadata_len,
            request_hash,
            timeout_ms,
            wait_for_ready,
        )?;
        refuse_in_callback(
            "a blocking call inside a switchyard callback (use sy_call_unary_start)",
        )?;
        let response =
            run_call(&mut r.reader, &args).map_err(|s| call_error(&r.reader, &r.pool, &s))?;
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
/// (`user_ctx` is passed through untouched).
///
/// The call runs on one of the channel's completion threads, each with its
/// own reader: started on demand, at most `sy_channel_options_set_call_threads`
/// of them (default 8); calls beyond that wait in the channel's queue (their
/// deadline keeps running). `sy_channel_close`, `sy_channel_free` and
/// `sy_runtime_free` end the channel's calls (queued ones complete with
/// SY_CLOSED, running ones fail fast as their connections close) and join
/// the threads: when they return, every callback of the channel has returned
/// and no completion thread is left.
///
/// Returns SY_OK if the call was accepted: `callback` then runs exactly once.
/// Otherwise it never runs: SY_NULL_PARAMETER (`channel`, `method` or
/// `callback`), SY_INVALID_UTF8, SY_INVALID_ARGUMENT (as `sy_call_unary`),
/// SY_CLOSED (channel closed or runtime freed), SY_IO (no thread could be
/// started). Any thread, including inside this library's callbacks (it
/// never blocks on the network).
#[no_mangle]
#[must_use]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn sy_call_unary_start(
    channel: *const crate::channel::sy_channel,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    metadata: *const sy_metadata,
    metadata_len: usize,
    request_hash: *const u64,
    timeout_ms: u64,
    wait_for_ready: bool,
    callback: sy_call_done_fn,
    user_ctx: *mut c_void,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(channel)?;
        let Some(callback) = callback else {
            return Err(Error::null("callback is NULL"));
        };
        if !ch.managed {
            return Err(host_managed());
        }
        let args = call_args(
            method,
            request,
            request_len,
            metadata,
            metadata_len,
            request_hash,
            timeout_ms,
            wait_for_ready,
        )?;
        if ch.channel.is_closed() {
            return Err(Error::new(sy_status::SY_CLOSED, "the channel is closed"));
        }
        ch.pool.submit(
            ch,
            Job {
                args,
                callback,
                ctx: UserCtx(user_ctx),
            },
        )
    })
}

struct UserCtx(*mut c_void);
// SAFETY: only handed back to the caller's callback, which the header says
// runs on a completion thread: the caller accepted that when starting.
unsafe impl Send for UserCtx {}

type DoneFn = unsafe extern "C" fn(*mut c_void, sy_status, u32, *const c_char, *mut sy_buffer);

struct Job {
    args: CallArgs,
    callback: DoneFn,
    ctx: UserCtx,
}

impl Job {
    /// Runs the call and its callback; never unwinds.
    fn run(self, reader: &mut Reader, pool: &CallPool) {
        let Job {
            args,
            callback,
            ctx,
        } = self;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if pool.is_closing() || reader.channel_state() == ConnectivityState::Shutdown {
                return Err((
                    sy_status::SY_CLOSED,
                    Code::Cancelled as u32,
                    "the channel is closed".to_string(),
                ));
            }
            run_call(reader, &args).map_err(|s| {
                let status = failed_status(reader, pool);
                (status, s.code() as u32, s.message().to_string())
            })
        }))
        .unwrap_or_else(|_| {
            Err((
                sy_status::SY_PANIC,
                Code::Unknown as u32,
                "panic inside switchyard while running a call".to_string(),
            ))
        });
        let (status, code, message, response) = match outcome {
            Ok(response) => (
                sy_status::SY_OK,
                0,
                String::new(),
                Box::into_raw(Box::new(sy_buffer { response })),
            ),
            Err((status, code, message)) => (status, code, message, ptr::null_mut()),
        };
        let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the caller's callback with its own ctx; `message` outlives
        // the call; `response` is handed over.
        in_callback(|| unsafe { callback(ctx.0, status, code, message.as_ptr(), response) });
    }
}

/// A channel's completion threads: a queue, lazily started workers (each with
/// its own reader), and their join handles.
pub(crate) struct CallPool {
    /// Set before the channel closes (sy_channel_close / _free,
    /// sy_runtime_free): failures from then on are SY_CLOSED.
    closing: AtomicBool,
    state: Mutex<PoolState>,
    work: Condvar,
    max_threads: usize,
}

struct PoolState {
    queue: VecDeque<Job>,
    threads: Vec<(ThreadId, JoinHandle<()>)>,
    idle: usize,
    closed: bool,
}

impl CallPool {
    pub(crate) fn new(max_threads: usize) -> Arc<CallPool> {
        Arc::new(CallPool {
            closing: AtomicBool::new(false),
            state: Mutex::new(PoolState {
                queue: VecDeque::new(),
                threads: Vec::new(),
                idle: 0,
                closed: false,
            }),
            work: Condvar::new(),
            max_threads: max_threads.max(1),
        })
    }

    /// Closes channels with `close` between marking `pools` closing (so
    /// their calls' failures from then on are SY_CLOSED) and joining their
    /// completion threads (`shutdown`).
    pub(crate) fn close_joined(pools: &[Arc<CallPool>], close: impl FnOnce()) {
        for pool in pools {
            pool.mark_closing();
        }
        close();
        for pool in pools {
            pool.shutdown();
        }
    }

    /// Called before the channel closes.
    fn mark_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Nothing panics while holding it; a poisoned lock's state is intact.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn submit(self: &Arc<Self>, ch: &ChannelBox, job: Job) -> Result<(), Error> {
        let mut st = self.lock();
        if st.closed {
            return Err(Error::new(sy_status::SY_CLOSED, "the channel is closed"));
        }
        // Start a thread when none is waiting for work (idle counts threads
        // parked in `next`; queued jobs already claim some of them).
        if st.idle <= st.queue.len() && st.threads.len() < self.max_threads {
            let pool = Arc::clone(self);
            let mut reader = ch.channel.reader();
            let n = st.threads.len();
            let spawned = std::thread::Builder::new()
                .name(format!("sy-call-{n}"))
                .spawn(move || pool.work_loop(&mut reader));
            match spawned {
                Ok(h) => st.threads.push((h.thread().id(), h)),
                Err(e) if st.threads.is_empty() => {
                    return Err(Error::new(
                        sy_status::SY_IO,
                        format!("cannot start a completion thread: {e}"),
                    ));
                }
                // Others are running: the job waits for one of them.
                Err(_) => {}
            }
        }
        st.queue.push_back(job);
        drop(st);
        self.work.notify_one();
        Ok(())
    }

    fn work_loop(&self, reader: &mut Reader) {
        while let Some(job) = self.next() {
            job.run(reader, self);
        }
    }

    /// The next job; `None` once closed and drained.
    fn next(&self) -> Option<Job> {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.queue.pop_front() {
                return Some(job);
            }
            if st.closed {
                return None;
            }
            st.idle += 1;
            st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
        }
    }

    /// Stops taking calls, lets the threads finish what is queued (the channel
    /// is closed by now, so that is quick) and joins them. Idempotent. Called
    /// on a completion thread (from a callback, against the contract), it
    /// does not wait for that thread itself, which exits on its own.
    fn shutdown(&self) {
        self.mark_closing();
        let threads = {
            let mut st = self.lock();
            st.closed = true;
            std::mem::take(&mut st.threads)
        };
        self.work.notify_all();
        let me = std::thread::current().id();
        for (id, h) in threads {
            if id != me {
                let _ = h.join();
            }
        }
    }
}
