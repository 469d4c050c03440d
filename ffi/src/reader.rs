//! Picking: a per-thread `sy_reader`, the pick the reader keeps
//! (`sy_reader_pick` / `sy_reader_done`: no hold taken, a 32-byte result;
//! `sy_reader_next`: one's done and the next pick in one call, the cheapest
//! way through the header) and the pick that may be finished anywhere
//! (`sy_pick` / `sy_pick_done`: an opaque token in the result).
//!
//! The hot path (`sy_pick` / `sy_reader_pick` / `sy_reader_next` with
//! `SY_NO_WAIT` on a hit, `sy_pick_done` / `sy_reader_done` /
//! `sy_reader_next` without hooks) does no allocation, no
//! TLS access, no lock and no shared-line RMW beyond what the core's
//! `Reader::try_pick` does, and has no `catch_unwind`: it runs the library's
//! own tables only, and nothing in it panics by construction (checked-only
//! arithmetic, no indexing that can fail, no unwrap). Every way that runs a
//! policy's code (a picker, a done hook, a release) is guarded: a panic
//! there is SY_PANIC.

use crate::call_pool::CallPool;
use crate::callback::user_data_of;
use crate::channel::{channel_ref, sy_channel, timeout_deadline, SY_NO_WAIT};
use crate::error::{set_last, Error, Message};
use crate::handle::{bury, Shell, BUSY, LIVE};
use crate::macros::{boundary, boundary_or, inside_callback, refuse_in_callback};
use crate::status::sy_status;
use crate::strings::slice_arg;
use std::ffi::{c_char, c_void, CStr};
use std::mem::{size_of, MaybeUninit};
use std::ptr::{addr_of, addr_of_mut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard::{
    Code, DoneInfo, Pick, PickError, PickInfo, PickOptions, RawPick, Reader, RotationEntry,
    SubConn, RAW_PICK_HOLD_WORD, RAW_PICK_WORDS,
};

/// One RPC thread's view of a channel. Opaque; owned by the caller (Box).
///
/// Thread-affine: use it from one thread at a time (typically one reader per
/// RPC thread, created there and kept); it may move to another thread only
/// with external synchronization. Independent of the channel handle's
/// lifetime: it may be freed before or after `sy_channel_free`.
pub struct sy_reader(Shell<ReaderBox>);

pub(crate) struct ReaderBox {
    pub(crate) reader: Reader,
    /// Its channel's connections are the library's (`sy_call_unary` works).
    pub(crate) managed: bool,
    /// The channel's call pool: tells a call whether its channel is closing.
    pub(crate) pool: Arc<CallPool>,
}

/// The reader's magic word (`LIVE`, `BUSY`, `DEAD`), read through the raw
/// pointer: no reference is formed over a reader that a call further up this
/// thread's stack (the one running a C callback) is still using.
///
/// # Safety
/// `reader` is non-NULL and from `sy_reader_new`, live or quarantined.
#[inline(always)]
unsafe fn magic(reader: *const sy_reader) -> u64 {
    // SAFETY: per the function's contract; a reference to the word only,
    // which is only ever accessed atomically. Relaxed: a reader is used by
    // one thread at a time.
    unsafe { (*addr_of!((*reader).0.magic)).load(Ordering::Relaxed) }
}

/// The reader's value, as `&mut`, covering the value only (not the magic
/// word, which a re-entrant call reads).
///
/// # Safety
/// `reader` is live (not busy, not dead) and used by this thread only, and
/// nothing else borrows its value for `'a`.
#[inline(always)]
unsafe fn value_mut<'a>(reader: *mut sy_reader) -> &'a mut ReaderBox {
    // SAFETY: per the function's contract; `ManuallyDrop` is
    // `repr(transparent)`, so the cast keeps layout.
    unsafe { &mut *addr_of_mut!((*reader).0.value).cast::<ReaderBox>() }
}

/// A reader inside one of its entry points that may run C code: a policy's
/// pick callback (`sy_pick` past the hit path, `sy_call_unary`), or a free or
/// release callback (the reader letting go of a picker table: any pick past
/// the hit path, `sy_reader_refresh`). While entered its magic word is `BUSY`,
/// so a call on the same reader from inside such a callback is refused with
/// SY_WRONG_CONTEXT instead of moving the reader to another table (and
/// freeing the one the outer call is still reading) under its feet. Back to
/// `LIVE` when dropped.
///
/// Only the C ABI needs this: in Rust, `Reader::try_pick`/`pick` hold the
/// reader by `&mut` for the whole pick, and a `Picker` (`Send + Sync +
/// 'static`, picking through `&self`) has no way to that borrowed reader
/// without `unsafe`: one kept in a `Mutex` or `RefCell` is locked or
/// borrowed by the outer pick, so re-entry deadlocks or panics instead.
pub(crate) struct Entered<'a> {
    magic: *const AtomicU64,
    value: &'a mut ReaderBox,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        // SAFETY: the magic word of the reader entered (still allocated: it
        // cannot be freed while busy), written by this thread only.
        unsafe { (*self.magic).store(LIVE, Ordering::Relaxed) };
    }
}

impl std::ops::Deref for Entered<'_> {
    type Target = ReaderBox;
    fn deref(&self) -> &ReaderBox {
        self.value
    }
}

impl std::ops::DerefMut for Entered<'_> {
    fn deref_mut(&mut self) -> &mut ReaderBox {
        self.value
    }
}

/// Enters `reader` (see `Entered`): SY_NULL_PARAMETER, SY_WRONG_CONTEXT
/// (already entered further up this thread's stack: a call from inside a
/// callback that the same reader is running) or SY_INVALID_ARGUMENT (freed).
/// The contract is the header's: a reader from `sy_reader_new`, used by one
/// thread at a time.
pub(crate) fn enter<'a>(reader: *mut sy_reader) -> Result<Entered<'a>, Error> {
    if reader.is_null() {
        return Err(Error::null("reader is NULL"));
    }
    // SAFETY: non-NULL; from `sy_reader_new`, live or quarantined, per the
    // contract.
    let state = unsafe { magic(reader) };
    if state != LIVE {
        return Err(not_live(state));
    }
    // SAFETY: live: allocated, and its value used by no one else (an outer
    // call on this thread would have left it `BUSY`; other threads are
    // excluded by the contract). The magic word is written through the raw
    // pointer and the reference covers the value only.
    unsafe {
        let magic = addr_of!((*reader).0.magic);
        (*magic).store(BUSY, Ordering::Relaxed);
        Ok(Entered {
            magic,
            value: value_mut(reader),
        })
    }
}

/// Why a reader whose magic word is `state` (not `LIVE`) cannot be used.
#[cold]
#[inline(never)]
fn not_live(state: u64) -> Error {
    if state == BUSY {
        reentered()
    } else {
        Error::invalid("reader was already freed")
    }
}

#[cold]
#[inline(never)]
fn reentered() -> Error {
    Error::new(
        sy_status::SY_WRONG_CONTEXT,
        "the reader is running this callback (a pick callback, or a picker's free or \
         user data's release): it cannot be used from inside it",
    )
}

/// Words of opaque storage in `sy_pick_result` for the pick's token: the
/// subchannel, two per done hook (a pick carries up to two, chained), the
/// subchannel's slot in the reader's counters, and what keeps the pick's
/// picker alive.
pub const SY_PICK_TOKEN_WORDS: usize = 7;
const TOKEN_WORDS: usize = SY_PICK_TOKEN_WORDS;

// The token area holds a `RawPick`, word for word (the literal above is
// for cbindgen, which cannot evaluate the core's constant).
const _: () = assert!(TOKEN_WORDS == RAW_PICK_WORDS);
const _: () = assert!(size_of::<RawPick>() <= TOKEN_WORDS * size_of::<u64>());
const _: () = assert!(std::mem::align_of::<RawPick>() <= std::mem::align_of::<u64>());

/// A successful pick, written by `sy_pick` into caller-provided storage (stack
/// is fine), finished by `sy_pick_done`.
///
/// `address` and `user_data` stay valid until `sy_pick_done` is called on this
/// result, whatever happens to the channel meanwhile. The struct may be copied
/// bitwise, but `sy_pick_done` must be called on exactly one copy.
#[repr(C)]
pub struct sy_pick_result {
    /// The chosen subchannel (as in the transport callbacks).
    pub subchannel_id: u64,
    /// The subchannel's address: `address_len` bytes of UTF-8, NOT
    /// NUL-terminated.
    pub address: *const c_char,
    pub address_len: usize,
    /// The address's user data from `sy_channel_update_addresses` (NULL if none).
    pub user_data: *mut c_void,
    /// Opaque: what `sy_pick_done` needs. All zero once done.
    // Pointers live here: `MaybeUninit` (still `uint64_t[N]` to C) keeps their
    // provenance when Rust code moves or copies the struct, which integers
    // would not.
    pub _token: MaybeUninit<[u64; SY_PICK_TOKEN_WORDS]>,
}

/// A named load metric reported with an RPC's outcome (ORCA-style:
/// "cpu_utilization", "qps", ...). `name` is NUL-terminated UTF-8.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sy_load_metric {
    pub name: *const c_char,
    pub value: f64,
}

/// The most load metrics `sy_pick_done` takes at once.
pub const SY_MAX_LOAD_METRICS: usize = 16;

/// Creates a reader for the calling RPC thread. SY_CLOSED if the channel is
/// closed (or its runtime freed). On success `*out` belongs to the caller (`sy_reader_free`). Any
/// thread.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_reader_new(ch: *const sy_channel, out: *mut *mut sy_reader) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        let out = try_out!(out, "out");
        // Closed by `sy_channel_close`, or by its runtime's end (which
        // publishes SHUTDOWN without closing the handle).
        if ch.channel.is_closed() || ch.channel.state() == switchyard::ConnectivityState::Shutdown {
            return Err(Error::new(sy_status::SY_CLOSED, "the channel is closed"));
        }
        let r = Box::into_raw(Box::new(sy_reader(Shell::new(ReaderBox {
            reader: ch.channel.reader(),
            managed: ch.managed,
            pool: Arc::clone(&ch.pool),
        }))));
        // SAFETY: non-NULL out-parameter, written on success only.
        unsafe { out.write(r) };
        Ok(())
    })
}

/// Lets go of the picker generation this reader cached, so what only it kept
/// alive (old subchannels' user data) can be released now rather than at the
/// next pick. For RPC threads that go idle. The reader's thread.
/// SY_WRONG_CONTEXT, doing nothing, from a callback that this reader is
/// running (a C picker's pick or free, a user data release).
#[no_mangle]
pub extern "C" fn sy_reader_refresh(reader: *mut sy_reader) -> sy_status {
    boundary(|| {
        enter(reader)?.reader.refresh();
        Ok(())
    })
}

/// Frees a reader. Allowed before or after `sy_channel_free`. Picks made
/// through it stay valid until done. NULL is a no-op. A second free is
/// detected while the freed handle is in a bounded quarantine (nothing
/// happens; SY_INVALID_ARGUMENT in `sy_last_error`); after that it is
/// undefined, like free(3). The reader's thread. From a callback that this
/// reader is running (a C picker's pick or free, a user data release)
/// nothing happens and SY_WRONG_CONTEXT is recorded for `sy_last_error`.
#[no_mangle]
pub extern "C" fn sy_reader_free(reader: *mut sy_reader) {
    boundary_or((), || {
        if reader.is_null() {
            return;
        }
        // SAFETY: from `sy_reader_new`, live or quarantined per the
        // double-free note above.
        if unsafe { magic(reader) } == BUSY {
            set_last(reentered());
            return;
        }
        // SAFETY: as above, and not busy: no call up this thread's stack is
        // using it. The projection forms no reference.
        if !unsafe { bury(reader, |h| addr_of_mut!((*h).0)) } {
            set_last(Error::invalid("sy_reader_free: reader already freed"));
        }
    })
}

/// What an RPC tells `sy_reader_pick`. Zero-initialize it (`= {0}`), then
/// set what applies; a NULL request means all zero: no method, no hash,
/// `SY_NO_WAIT`.
///
/// A `request_hash` set (non-zero) without `has_request_hash` is refused
/// with SY_INVALID_ARGUMENT rather than silently ignored, whatever the
/// policy (as in `sy_call_options`).
#[repr(C)]
pub struct sy_pick_request {
    /// The full method name ("/pkg.Service/Method"): `method_len` bytes of
    /// UTF-8, not necessarily NUL-terminated; NULL/0 for none (cheapest).
    pub method: *const c_char,
    pub method_len: usize,
    /// The request's hash for hashing policies, if `has_request_hash`
    /// (under ring_hash with `requestHashHeader`: XXH64 of the header's
    /// value, as for `sy_pick`).
    pub request_hash: u64,
    pub has_request_hash: bool,
    /// Queue through TRANSIENT_FAILURE instead of failing (a waiting
    /// pick). With `SY_NO_WAIT` nothing waits: TRANSIENT_FAILURE still
    /// answers SY_UNAVAILABLE, which a wait-for-ready RPC does not fail on
    /// (its host picks again when the channel changes).
    pub wait_for_ready: bool,
    /// `SY_NO_WAIT` (0): do not wait (wait-free; SY_NO_SUBCHANNEL when the
    /// policy has nothing ready yet). Otherwise wait up to that long
    /// (`SY_WAIT_FOREVER`: no limit) for a picker that has something.
    pub timeout_ms: u64,
}

/// A pick the reader keeps, written by `sy_reader_pick` or `sy_reader_next`
/// into caller storage (stack is fine): what a host needs to send the RPC,
/// and nothing to give back. `address` and `user_data` stay valid until the
/// reader's next pick (any: `sy_reader_pick`, `sy_reader_next`, `sy_pick`, a
/// call), `sy_reader_done`, `sy_reader_refresh` or `sy_reader_free`.
#[repr(C)]
pub struct sy_borrowed_pick {
    /// The chosen subchannel (as in the transport callbacks).
    pub subchannel_id: u64,
    /// The subchannel's address: `address_len` bytes of UTF-8, NOT
    /// NUL-terminated.
    pub address: *const c_char,
    pub address_len: usize,
    /// The address's user data from `sy_channel_update_addresses` (NULL if none).
    pub user_data: *mut c_void,
}

/// Picks a subchannel for one RPC that ends on this thread before the
/// reader's next pick (a blocking RPC thread, or an event loop that finishes
/// each call before starting the next on this reader): the cheapest pick
/// through the header (with `sy_reader_next`, which also finishes the pick
/// before). The reader keeps the pick, and the picker it came from, until
/// `sy_reader_done` or its next pick: no reference is counted per pick and
/// the result is four words.
///
/// `request`: NULL (no method, no hash, `SY_NO_WAIT`) or see
/// `sy_pick_request`. On SY_OK `*out` holds the pick; finish it with
/// `sy_reader_done` on the same reader. A pick not finished when the reader
/// picks again (or is refreshed or freed) is reported to the policy as
/// CANCELLED. An RPC that must outlive the reader's next pick, or end on
/// another thread, takes `sy_pick` / `sy_pick_done` instead.
///
/// Failures (nothing written to `*out`) and threading are `sy_pick`'s: the
/// reader's thread; SY_WRONG_CONTEXT from a callback that this reader is
/// running, or for a waiting pick inside any switchyard callback.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_reader_pick(
    reader: *mut sy_reader,
    request: *const sy_pick_request,
    out: *mut sy_borrowed_pick,
) -> sy_status {
    // The hit path: a current rotation or inline table (see
    // `Reader::try_pick_kept_cached`), which looks at no method and never
    // waits. A request with a method, or with a hash set without its flag,
    // goes the general way, which checks them first (so that bad input is
    // refused whatever the picker).
    // SAFETY: non-NULL; the caller promises a reader from `sy_reader_new`
    // used by this thread only; live, so nothing up the stack borrows it.
    // `request` is NULL or readable, `out` non-NULL and writable, per the
    // contract.
    if !reader.is_null()
        && !out.is_null()
        && (request.is_null()
            || unsafe {
                addr_of!((*request).method_len).read() == 0
                    && (addr_of!((*request).request_hash).read() == 0
                        || addr_of!((*request).has_request_hash).read())
            })
        && unsafe { magic(reader) } == LIVE
    {
        // A rotation, a flat uniform table or a stride schedule's step at
        // hand first: their picks need so few registers that this
        // function saves none (the other inline tables' picks, and a
        // schedule's batch work-out, do, so they are another function's).
        // SAFETY: as above.
        if let Some(listed) = unsafe { value_mut(reader) }.reader.try_pick_kept_direct() {
            // SAFETY: as above.
            unsafe { write_borrowed(out, Handout::listed(&listed)) };
            return sy_status::SY_OK;
        }
        // SAFETY: the checks above are its contract's.
        return unsafe { reader_pick_inline(reader, request, out) };
    }
    reader_pick_general(reader, request, out)
}

/// `sy_reader_pick`'s hit path for an inline table (least_request,
/// weighted_round_robin, ring_hash, random over many endpoints), then the
/// general way. `extern "C"`
/// with the same arguments, for a tail call.
///
/// # Safety
/// As `sy_reader_pick`'s hit path has checked: `reader` non-NULL and live
/// (used by this thread only), `out` non-NULL and writable, `request` NULL
/// or readable with no method and a hash only with its flag.
#[inline(never)]
unsafe extern "C" fn reader_pick_inline(
    reader: *mut sy_reader,
    request: *const sy_pick_request,
    out: *mut sy_borrowed_pick,
) -> sy_status {
    // SAFETY: per the contract (read only if the cached table needs it).
    let hash = || unsafe { request_hash_of(request) };
    // SAFETY: per the contract.
    if let Some(listed) = unsafe { value_mut(reader) }
        .reader
        .try_pick_kept_cached_with(hash)
    {
        // SAFETY: per the contract.
        unsafe { write_borrowed(out, Handout::listed(&listed)) };
        return sy_status::SY_OK;
    }
    reader_pick_general(reader, request, out)
}

/// The request's hash, if it has one.
///
/// # Safety
/// `request` is NULL or readable.
#[inline(always)]
unsafe fn request_hash_of(request: *const sy_pick_request) -> Option<u64> {
    // SAFETY: per the function's contract.
    let r = unsafe { request.as_ref() }?;
    r.has_request_hash.then_some(r.request_hash)
}

/// `sy_reader_pick` past the hit path. `extern "C"` with the same
/// arguments, so that the hit path reaches it by a tail call and saves
/// nothing on the stack.
#[inline(never)]
extern "C" fn reader_pick_general(
    reader: *mut sy_reader,
    request: *const sy_pick_request,
    out: *mut sy_borrowed_pick,
) -> sy_status {
    // Policy code runs here (pickers, done hooks, releases): guarded.
    boundary_or(sy_status::SY_PANIC, || {
        if reader.is_null() || out.is_null() {
            return pick_fail(Error::null("reader and out must not be NULL"));
        }
        // SAFETY: NULL or readable per the contract.
        let request = match unsafe { checked_request(request) } {
            Ok(r) => r,
            Err(e) => return pick_fail(e),
        };
        // Entered: a policy's pick or done callback (the kept pick before this
        // one hears it was dropped), a picker's free or a release may run.
        match enter(reader) {
            // SAFETY: `out` is non-NULL and writable per the contract.
            Ok(mut r) => unsafe { pick_entered(&mut r, &request, out) },
            Err(e) => pick_fail(e),
        }
    })
}

/// A `sy_pick_request` whose fields have been checked.
struct CheckedRequest<'a> {
    /// A host's pick carries no metadata: ring_hash uses the hash (see
    /// `sy_pick`).
    info: PickInfo<'a>,
    timeout_ms: u64,
    wait_for_ready: bool,
}

/// Checks a request (NULL: all zero): a hash only with its flag, a method
/// of readable UTF-8.
///
/// # Safety
/// `request` is NULL or readable, its method `method_len` readable bytes.
unsafe fn checked_request<'a>(
    request: *const sy_pick_request,
) -> Result<CheckedRequest<'a>, Error> {
    // SAFETY: per the function's contract.
    let Some(r) = (unsafe { request.as_ref() }) else {
        return Ok(CheckedRequest {
            info: PickInfo::default(),
            timeout_ms: SY_NO_WAIT,
            wait_for_ready: false,
        });
    };
    if r.request_hash != 0 && !r.has_request_hash {
        return Err(Error::invalid(
            "request.request_hash is set but request.has_request_hash is false",
        ));
    }
    Ok(CheckedRequest {
        info: PickInfo {
            // SAFETY: per the function's contract.
            method: unsafe { method_str(r.method, r.method_len) }?,
            hash: r.has_request_hash.then_some(r.request_hash),
            ..PickInfo::default()
        },
        timeout_ms: r.timeout_ms,
        wait_for_ready: r.wait_for_ready,
    })
}

/// Makes a kept pick for a checked request on an entered reader, waiting
/// if the request says so, and writes it to `out`.
///
/// # Safety
/// `out` is non-NULL and writable.
unsafe fn pick_entered(
    r: &mut Entered<'_>,
    request: &CheckedRequest<'_>,
    out: *mut sy_borrowed_pick,
) -> sy_status {
    let result = if request.timeout_ms == SY_NO_WAIT {
        r.reader.try_pick_kept(&request.info)
    } else {
        if let Err(e) = refuse_waiting_in_callback() {
            return pick_fail(e);
        }
        let options = PickOptions {
            deadline: timeout_deadline(request.timeout_ms),
            wait_for_ready: request.wait_for_ready,
        };
        r.reader.pick_kept(&request.info, &options)
    };
    match result {
        Ok(sc) => {
            // SAFETY: per the function's contract.
            unsafe { write_borrowed(out, Handout::subconn(sc)) };
            sy_status::SY_OK
        }
        Err(e) => pick_fail(pick_error(e)),
    }
}

/// SY_WRONG_CONTEXT for a pick that may wait, inside one of this library's
/// callbacks.
fn refuse_waiting_in_callback() -> Result<(), Error> {
    refuse_in_callback("a waiting pick inside a switchyard callback would block the loop")
}

/// Fills `*out` with a kept pick: four plain stores.
///
/// # Safety
/// `out` is non-NULL and writable.
#[inline(always)]
unsafe fn write_borrowed(out: *mut sy_borrowed_pick, h: Handout) {
    // SAFETY: per the function's contract.
    unsafe {
        out.write(sy_borrowed_pick {
            subchannel_id: h.id,
            address: h.addr,
            address_len: h.addr_len,
            user_data: h.user_data,
        })
    };
}

/// Finishes the reader's kept pick (`sy_reader_pick`, `sy_reader_next`):
/// reports the RPC's outcome to the policy. After it the pick's `address`
/// and `user_data` may dangle.
///
/// - `grpc_code`: the RPC's gRPC status code, 0 = OK (0..=16).
/// - `latency_ns`: how long the RPC took.
/// - `metrics`, `metrics_len`: optional named load metrics from the server
///   (at most `SY_MAX_LOAD_METRICS`); NULL/0 for none.
///
/// Errors, with the pick left as it was so the call can be repeated with
/// valid arguments: SY_NULL_PARAMETER, SY_INVALID_ARGUMENT (an unknown
/// code, too many metrics, a freed reader, or no pick to finish: never
/// picked, already done, or dropped by a later pick), SY_INVALID_UTF8 (a
/// metric name), SY_WRONG_CONTEXT (from a callback that this reader is
/// running). The reader's thread. Never blocks; allocates nothing.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_reader_done(
    reader: *mut sy_reader,
    grpc_code: u32,
    latency_ns: u64,
    metrics: *const sy_load_metric,
    metrics_len: usize,
) -> sy_status {
    // The hit path: a pick without done hooks (every rotation pick), so
    // there is nothing to tell and no code of the policy's to guard.
    if let Some(code) = Code::from_u32(grpc_code) {
        // SAFETY: as in `sy_reader_pick`.
        if !reader.is_null() && metrics_len == 0 && unsafe { magic(reader) } == LIVE {
            // SAFETY: live, so nothing up the stack borrows it.
            let r = &mut unsafe { value_mut(reader) }.reader;
            // The code still counts (snapshots).
            if r.finish_kept_quietly(code == Code::Ok) {
                return sy_status::SY_OK;
            }
        }
    }
    // SAFETY: forwarded contract.
    unsafe { reader_done_general(reader, grpc_code, latency_ns, metrics, metrics_len) }
}

/// `sy_reader_done` past the hit path: checks every argument, then reports.
/// `extern "C"` for a tail call, as `reader_pick_general`.
///
/// # Safety
/// `sy_reader_done`'s contract.
#[inline(never)]
unsafe extern "C" fn reader_done_general(
    reader: *mut sy_reader,
    grpc_code: u32,
    latency_ns: u64,
    metrics: *const sy_load_metric,
    metrics_len: usize,
) -> sy_status {
    let Some(code) = Code::from_u32(grpc_code) else {
        return unknown_code(grpc_code);
    };
    // The pick's done hooks (policy code) run inside: guarded.
    boundary_or(sy_status::SY_PANIC, || {
        // SAFETY: per the contract.
        let done = unsafe {
            with_load(metrics, metrics_len, |load| {
                // Entered: the pick's done hooks may be a C policy's callback.
                let mut r = enter(reader)?;
                let info = DoneInfo {
                    load,
                    ..done_info(code, latency_ns)
                };
                Ok(r.reader.finish_kept(&info))
            })
        };
        match done {
            Ok(true) => sy_status::SY_OK,
            Ok(false) => no_kept_pick(),
            Err(e) => pick_fail(e),
        }
    })
}

#[cold]
#[inline(never)]
fn no_kept_pick() -> sy_status {
    pick_fail(Error::invalid(
        "the reader has no pick to finish (never picked with sy_reader_pick, already done, \
         or dropped by a later pick)",
    ))
}

/// How an RPC ended, for `sy_reader_next`: what `sy_reader_done` takes, as
/// a struct. Zero-initialized it is an OK with no latency and no load.
#[repr(C)]
pub struct sy_outcome {
    /// The RPC's gRPC status code, 0 = OK (0..=16).
    pub grpc_code: u32,
    /// How long the RPC took.
    pub latency_ns: u64,
    /// Optional named load metrics from the server (at most
    /// `SY_MAX_LOAD_METRICS`); NULL/0 for none.
    pub metrics: *const sy_load_metric,
    pub metrics_len: usize,
}

/// Finishes the reader's kept pick with `done` and makes the next kept
/// pick, in one call: `sy_reader_done` then `sy_reader_pick`, for an RPC
/// thread whose RPCs follow one another on this reader (a blocking RPC
/// thread's loop). One call instead of two is what a pick + done costs
/// when its work is a few nanoseconds: each call into a shared library
/// costs about as much again.
///
/// - `done`: the outcome of the reader's kept pick (see `sy_outcome`); NULL
///   when there is none to finish (the thread's first pick, or one after a
///   `sy_reader_done`): then it is `sy_reader_pick`.
/// - `request`, `out`: as for `sy_reader_pick`.
///
/// Errors in the arguments change nothing (the kept pick is left as it
/// was, nothing written to `*out`, so the call can be repeated with valid
/// ones): SY_NULL_PARAMETER, SY_INVALID_ARGUMENT (an unknown code, too
/// many metrics, a bad request, a freed reader, or `done` with no pick to
/// finish), SY_INVALID_UTF8 (a metric name, the method), SY_WRONG_CONTEXT
/// (from a callback that this reader is running, or a waiting pick inside
/// any switchyard callback). Otherwise the outcome has been reported, and
/// the status is the pick's, as `sy_reader_pick`'s (SY_OK with `*out`
/// written; SY_NO_SUBCHANNEL, SY_UNAVAILABLE, ...: no kept pick then), or
/// SY_PANIC if a policy's code panicked (the pick's done hooks or picker).
/// The reader's thread.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_reader_next(
    reader: *mut sy_reader,
    done: *const sy_outcome,
    request: *const sy_pick_request,
    out: *mut sy_borrowed_pick,
) -> sy_status {
    // The hit path: `sy_reader_done`'s (a kept pick without hooks, a code
    // without load) then `sy_reader_pick`'s, reached by a tail call.
    // SAFETY: as in `sy_reader_pick`; `done` is NULL or readable.
    if !reader.is_null()
        && !out.is_null()
        && !done.is_null()
        && unsafe { addr_of!((*done).metrics_len).read() } == 0
        && (request.is_null()
            || unsafe {
                addr_of!((*request).method_len).read() == 0
                    && (addr_of!((*request).request_hash).read() == 0
                        || addr_of!((*request).has_request_hash).read())
            })
        && unsafe { magic(reader) } == LIVE
    {
        // SAFETY: as above.
        if request.is_null() || unsafe { addr_of!((*request).timeout_ms).read() } == SY_NO_WAIT {
            // SAFETY: the checks above are its contract's.
            return unsafe { next_hit(reader, done, request, out) };
        }
        // SAFETY: as above.
        return unsafe { reader_next_waiting(reader, done, request, out) };
    }
    // SAFETY: forwarded contract.
    unsafe { reader_next_general(reader, done, request, out) }
}

/// `sy_reader_next`'s hit path for a request that may wait: a waiting
/// pick inside a callback is refused before the outcome is reported (the
/// general way's). Out of line, so that the check's thread-local lookup
/// (`__tls_get_addr` in a shared library), which the compiler hoists to
/// the top of a function, costs the other requests nothing.
///
/// # Safety
/// As `next_hit`.
#[inline(never)]
unsafe extern "C" fn reader_next_waiting(
    reader: *mut sy_reader,
    done: *const sy_outcome,
    request: *const sy_pick_request,
    out: *mut sy_borrowed_pick,
) -> sy_status {
    if inside_callback() {
        // SAFETY: forwarded contract.
        return unsafe { reader_next_general(reader, done, request, out) };
    }
    // SAFETY: forwarded contract.
    unsafe { next_hit(reader, done, request, out) }
}

/// Finishes the kept pick when it has no hooks and the code is known, then
/// picks (`sy_reader_pick`'s hit path onward); the general way otherwise.
///
/// # Safety
/// As `sy_reader_next`'s hit path has checked: `reader` non-NULL and live
/// (used by this thread only), `out` non-NULL and writable, `done` readable
/// with no metrics, `request` NULL or readable with no method and a hash
/// only with its flag, and not a waiting pick inside a callback.
#[inline(always)]
unsafe fn next_hit(
    reader: *mut sy_reader,
    done: *const sy_outcome,
    request: *const sy_pick_request,
    out: *mut sy_borrowed_pick,
) -> sy_status {
    // SAFETY: per the function's contract.
    if let Some(code) = Code::from_u32(unsafe { addr_of!((*done).grpc_code).read() }) {
        // SAFETY: per the function's contract.
        let r = &mut unsafe { value_mut(reader) }.reader;
        // The code still counts (snapshots).
        if r.finish_kept_quietly(code == Code::Ok) {
            if let Some(listed) = r.try_pick_kept_direct() {
                // SAFETY: per the function's contract.
                unsafe { write_borrowed(out, Handout::listed(&listed)) };
                return sy_status::SY_OK;
            }
            // SAFETY: per the function's contract (`sy_reader_pick`'s
            // general way refuses a waiting pick inside a callback only
            // after this outcome was reported: excluded by the contract).
            return unsafe { reader_pick_inline(reader, request, out) };
        }
    }
    // SAFETY: forwarded contract.
    unsafe { reader_next_general(reader, done, request, out) }
}

/// `sy_reader_next` past the hit path: checks every argument, then
/// reports and picks. `extern "C"` for a tail call, as
/// `reader_pick_general`.
///
/// # Safety
/// `sy_reader_next`'s contract.
#[inline(never)]
unsafe extern "C" fn reader_next_general(
    reader: *mut sy_reader,
    done: *const sy_outcome,
    request: *const sy_pick_request,
    out: *mut sy_borrowed_pick,
) -> sy_status {
    if done.is_null() {
        return sy_reader_pick(reader, request, out);
    }
    // Policy code runs here (done hooks, pickers, releases): guarded.
    boundary_or(sy_status::SY_PANIC, || {
        if reader.is_null() || out.is_null() {
            return pick_fail(Error::null("reader and out must not be NULL"));
        }
        // SAFETY: non-NULL and readable per the contract.
        let done = unsafe { done.read() };
        let Some(code) = Code::from_u32(done.grpc_code) else {
            return unknown_code(done.grpc_code);
        };
        // Every argument is checked before anything is reported, so that an
        // error in one changes nothing.
        // SAFETY: NULL or readable per the contract.
        let request = match unsafe { checked_request(request) } {
            Ok(r) => r,
            Err(e) => return pick_fail(e),
        };
        if request.timeout_ms != SY_NO_WAIT {
            if let Err(e) = refuse_waiting_in_callback() {
                return pick_fail(e);
            }
        }
        // SAFETY: per the contract.
        let result = unsafe {
            with_load(done.metrics, done.metrics_len, |load| {
                // Entered: the pick's done hooks may be a C policy's callback.
                let mut r = enter(reader)?;
                let info = DoneInfo {
                    load,
                    ..done_info(code, done.latency_ns)
                };
                if !r.reader.finish_kept(&info) {
                    return Ok(None);
                }
                // `out` is non-NULL and writable per the contract.
                Ok(Some(pick_entered(&mut r, &request, out)))
            })
        };
        match result {
            Ok(Some(status)) => status,
            Ok(None) => no_kept_pick(),
            Err(e) => pick_fail(e),
        }
    })
}

/// Picks a subchannel for one RPC, as a pick that may outlive the reader's
/// next pick and be finished on any thread (`sy_pick_done`). An RPC that
/// ends on the picking thread before its next pick is cheaper with
/// `sy_reader_pick` / `sy_reader_done`.
///
/// - `method`, `method_len`: the full method name ("/pkg.Service/Method"),
///   UTF-8, not necessarily NUL-terminated; NULL/0 for none (cheapest).
/// - `request_hash`: NULL, or the request's hash for hashing policies. A
///   pick carries no metadata: under ring_hash with `requestHashHeader`,
///   pass XXH64 (seed 0) of the header's value here (NULL: a random hash).
/// - `timeout_ms`: `SY_NO_WAIT` (0) = do not wait: wait-free, returns
///   SY_NO_SUBCHANNEL if the policy has nothing ready yet. Otherwise wait up
///   to that long (`SY_WAIT_FOREVER`: no limit) for a picker that has
///   something.
/// - `wait_for_ready`: queue through TRANSIENT_FAILURE instead of failing.
///
/// On SY_OK `*out` holds the pick; call `sy_pick_done` on it exactly once.
/// Failures (nothing written to `*out`): SY_NO_SUBCHANNEL (`SY_NO_WAIT` only),
/// SY_UNAVAILABLE (fail the RPC unless wait-for-ready),
/// SY_DROPPED (fail it, never retry), SY_DEADLINE_EXCEEDED, SY_CLOSED,
/// SY_NULL_PARAMETER, SY_INVALID_UTF8, SY_INVALID_ARGUMENT (freed reader),
/// SY_WRONG_CONTEXT (inside a callback, a pick that would have to wait; or
/// any pick on the reader that is running the callback: a C picker's pick or
/// free, a user data release); `sy_last_grpc_code()` gives the gRPC code to
/// fail the RPC with. A `method_len` larger than any object (a negative number
/// converted to `size_t`) is SY_INVALID_ARGUMENT.
///
/// Threading: the reader's thread. Called concurrently on different readers,
/// policies' pick callbacks run on the calling thread. With `SY_NO_WAIT` it never
/// blocks, allocates or takes a lock on success.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_pick(
    reader: *mut sy_reader,
    method: *const c_char,
    method_len: usize,
    request_hash: *const u64,
    timeout_ms: u64,
    wait_for_ready: bool,
    out: *mut sy_pick_result,
) -> sy_status {
    // The hit path: a current rotation picker (round_robin), which needs
    // neither the method, nor the hash, nor a wait. It saves no register
    // and builds nothing of the general path (`PickInfo`, `Result`), which
    // it reaches by a tail call with the same arguments.
    // A busy reader (this call comes from a callback it is running) is not
    // `LIVE` and goes on to `pick_general`, which refuses it.
    // SAFETY: non-NULL; the caller promises a reader from `sy_reader_new`
    // used by this thread only; live, so nothing up the stack borrows it.
    // `out` is non-NULL and writable per the contract.
    if !reader.is_null()
        && !out.is_null()
        && method_len == 0
        && unsafe { magic(reader) } == LIVE
        && unsafe { pick_cached(&mut value_mut(reader).reader, request_hash, out) }
    {
        return sy_status::SY_OK;
    }
    pick_general(
        reader,
        method,
        method_len,
        request_hash,
        timeout_ms,
        wait_for_ready,
        out,
    )
}

/// `sy_pick` past the hit path: checks every argument, then picks from any
/// picker, waiting when asked to.
#[inline(never)]
extern "C" fn pick_general(
    reader: *mut sy_reader,
    method: *const c_char,
    method_len: usize,
    request_hash: *const u64,
    timeout_ms: u64,
    wait_for_ready: bool,
    out: *mut sy_pick_result,
) -> sy_status {
    // Policy code runs here (pickers, releases): guarded.
    boundary_or(sy_status::SY_PANIC, || {
        if reader.is_null() || out.is_null() {
            return pick_fail(Error::null("reader and out must not be NULL"));
        }
        // SAFETY: non-NULL; from `sy_reader_new`, live or quarantined, per the
        // contract.
        let state = unsafe { magic(reader) };
        if state != LIVE {
            return pick_fail(not_live(state));
        }
        // SAFETY: `method_len` readable bytes per the contract.
        let method = match unsafe { method_str(method, method_len) } {
            Ok(m) => m,
            Err(e) => return pick_fail(e),
        };
        // Without a method `sy_pick` has just tried the cached rotation and
        // missed (every other way here fails above); with one it has not. The
        // rotation runs no C code, so this needs no `enter`.
        // SAFETY: live (checked above), so nothing up the stack borrows it;
        // `out` is non-NULL and writable per the contract.
        if method_len != 0
            && unsafe { pick_cached(&mut value_mut(reader).reader, request_hash, out) }
        {
            return sy_status::SY_OK;
        }
        // Entered for the rest of the pick: a policy's pick callback, a picker's
        // free or a release may run in it.
        let mut r = match enter(reader) {
            Ok(r) => r,
            Err(e) => return pick_fail(e),
        };
        pick_slow(
            &mut r.reader,
            method,
            request_hash,
            timeout_ms,
            wait_for_ready,
            out,
        )
    })
}

/// The hit path: a pick from the reader's current rotation or inline
/// table, written to `*out`; false (nothing written) when the reader has
/// none (or it leaves this pick to the picker).
///
/// # Safety
/// `out` is non-NULL and writable; `request_hash` is NULL or readable.
#[inline(always)]
unsafe fn pick_cached(
    reader: &mut Reader,
    request_hash: *const u64,
    out: *mut sy_pick_result,
) -> bool {
    // SAFETY: per the function's contract. Read only if the cached table
    // needs it (a ring's).
    let hash = || (!request_hash.is_null()).then(|| unsafe { request_hash.read_unaligned() });
    match reader.try_pick_cached_with(hash) {
        Some((pick, listed)) => {
            // SAFETY: per the function's contract.
            unsafe { write_pick(out, pick, Handout::listed(&listed)) };
            true
        }
        None => false,
    }
}

/// The method name as `&str` ("" for none).
///
/// # Safety
/// `method` has `method_len` readable bytes, or `method_len` is 0.
#[inline(always)]
unsafe fn method_str<'a>(method: *const c_char, method_len: usize) -> Result<&'a str, Error> {
    if method_len == 0 {
        // The common case for a host's pick: nothing to check.
        return Ok("");
    }
    // SAFETY: per the function's contract; the length is checked against
    // what any object can have (SIZE_MAX from a negative number) first.
    let bytes = unsafe { slice_arg(method.cast::<u8>(), method_len, "method") }?;
    std::str::from_utf8(bytes)
        .map_err(|_| Error::new(sy_status::SY_INVALID_UTF8, "method is not valid UTF-8"))
}

/// `sy_pick` past the hit path: any picker, waiting when asked to.
#[inline(never)]
fn pick_slow(
    reader: &mut Reader,
    method: &str,
    request_hash: *const u64,
    timeout_ms: u64,
    wait_for_ready: bool,
    out: *mut sy_pick_result,
) -> sy_status {
    let hash = if request_hash.is_null() {
        None
    } else {
        // SAFETY: non-NULL, points to a u64 per the contract.
        Some(unsafe { request_hash.read_unaligned() })
    };
    // A host's pick carries no metadata: ring_hash uses `hash` (see sy_pick).
    let info = PickInfo {
        method,
        hash,
        ..PickInfo::default()
    };
    let result = if timeout_ms == SY_NO_WAIT {
        reader.try_pick(&info)
    } else {
        if let Err(e) = refuse_waiting_in_callback() {
            return pick_fail(e);
        }
        let options = PickOptions {
            deadline: timeout_deadline(timeout_ms),
            wait_for_ready,
        };
        reader.pick(&info, &options)
    };
    match result {
        Ok(pick) => {
            let h = Handout::subconn(pick.subconn());
            // SAFETY: `out` is non-NULL and writable per the contract.
            unsafe { write_pick(out, pick, h) };
            sy_status::SY_OK
        }
        Err(e) => pick_fail(pick_error(e)),
    }
}

/// What `sy_pick` hands out besides the token: id, address, user data.
struct Handout {
    id: u64,
    addr: *const c_char,
    addr_len: usize,
    user_data: *mut c_void,
}

impl Handout {
    /// From a rotation entry: no access to the subchannel itself.
    #[inline(always)]
    fn listed(listed: &RotationEntry) -> Handout {
        let (addr, addr_len) = listed.addr_raw();
        Handout {
            id: listed.id().0,
            addr: addr.as_ptr().cast(),
            addr_len,
            user_data: user_data_of(listed.tag()),
        }
    }

    fn subconn(sc: &SubConn) -> Handout {
        let addr = sc.addr();
        Handout {
            id: sc.id().0,
            addr: addr.as_ptr().cast(),
            addr_len: addr.len(),
            user_data: user_data_of(sc.tag()),
        }
    }
}

/// Fills `*out` with a pick, which its token then owns until `sy_pick_done`.
/// One plain store per field: the token is built in registers, so that
/// `sy_pick_done` reading it right after never waits on a store it straddles.
///
/// # Safety
/// `out` is non-NULL and writable.
#[inline(always)]
unsafe fn write_pick(out: *mut sy_pick_result, pick: Pick, h: Handout) {
    let raw = pick.into_raw().0;
    // SAFETY: per the function's contract.
    unsafe {
        addr_of_mut!((*out).subchannel_id).write(h.id);
        addr_of_mut!((*out).address).write(h.addr);
        addr_of_mut!((*out).address_len).write(h.addr_len);
        addr_of_mut!((*out).user_data).write(h.user_data);
        // Pointer stores, not integers: the words keep their provenance.
        let token = addr_of_mut!((*out)._token).cast::<*mut ()>();
        for (i, word) in raw.into_iter().enumerate() {
            token.add(i).write(word);
        }
    }
}

#[cold]
#[inline(never)]
fn pick_fail(e: Error) -> sy_status {
    set_last(e)
}

#[cold]
#[inline(never)]
fn pick_error(e: PickError) -> Error {
    let grpc_code = e.code() as u32;
    // Each message is moved, not copied: a policy's status keeps its shared
    // text, the deadline's `String` becomes the record's.
    let (status, message) = match e {
        PickError::NoSubConnAvailable => (
            sy_status::SY_NO_SUBCHANNEL,
            Message::Text("no subchannel is ready yet".into()),
        ),
        PickError::Unavailable(s) => (sy_status::SY_UNAVAILABLE, Message::Shared(s.into_message())),
        PickError::Dropped(s) => (sy_status::SY_DROPPED, Message::Shared(s.into_message())),
        PickError::DeadlineExceeded(m) => {
            (sy_status::SY_DEADLINE_EXCEEDED, Message::Text(m.into()))
        }
        PickError::Closed => (
            sy_status::SY_CLOSED,
            Message::Text("the channel is closed".into()),
        ),
    };
    Error {
        status,
        message,
        grpc_code,
    }
}

/// Finishes a pick: reports the RPC's outcome to the policy and releases what
/// the pick kept alive (after this, `result->address` and `user_data` may
/// dangle).
///
/// - `grpc_code`: the RPC's gRPC status code, 0 = OK (0..=16).
/// - `latency_ns`: how long the RPC took.
/// - `metrics`, `metrics_len`: optional named load metrics from the server
///   (at most `SY_MAX_LOAD_METRICS`); NULL/0 for none.
///
/// Errors, with the pick left untouched so the call can be repeated with
/// valid arguments: SY_NULL_PARAMETER, SY_INVALID_ARGUMENT (an unknown code,
/// too many metrics, or a result that is not a live pick: already done, or
/// zeroed), SY_INVALID_UTF8 (a metric name).
///
/// Threading: any thread (not only the picking one), once per pick; not
/// concurrently on the same result. Never blocks; allocates nothing.
#[no_mangle]
pub extern "C" fn sy_pick_done(
    result: *mut sy_pick_result,
    grpc_code: u32,
    latency_ns: u64,
    metrics: *const sy_load_metric,
    metrics_len: usize,
) -> sy_status {
    if result.is_null() {
        return pick_fail(Error::null("result is NULL"));
    }
    // SAFETY: non-NULL; the caller promises a sy_pick_result it owns.
    let token = unsafe { addr_of_mut!((*result)._token) }.cast();
    // SAFETY: the caller's result, readable.
    let words = unsafe { read_words(token) };
    if words[HOLD_WORD].is_null() {
        return pick_fail(Error::invalid(
            "pick result is not a live pick (already done, or never picked)",
        ));
    }
    let Some(code) = Code::from_u32(grpc_code) else {
        return unknown_code(grpc_code);
    };
    if metrics_len > 0 {
        // SAFETY: forwarded contract (the checks above passed).
        return unsafe { done_with_metrics(result, code, latency_ns, metrics, metrics_len) };
    }
    // SAFETY: `result` is a live pick (checked above) whose token we read.
    let pick = unsafe { take_pick(token, words) };
    if pick.wants_outcome_without_load() {
        return report(pick, code, latency_ns);
    }
    // No hook to tell (or only a load hook, and this done has no load): the
    // outcome is only counted (snapshots), and the pick's hold released.
    pick.done(&DoneInfo {
        code,
        ..DoneInfo::OK
    });
    sy_status::SY_OK
}

#[cold]
#[inline(never)]
fn unknown_code(grpc_code: u32) -> sy_status {
    pick_fail(Error::invalid(format!(
        "unknown gRPC status code {grpc_code}"
    )))
}

/// The error a policy's done hook sees for a gRPC code: its name
/// ("UNAVAILABLE"), `None` for OK.
fn outcome(code: Code) -> Option<&'static str> {
    match code {
        Code::Ok => None,
        c => Some(c.name()),
    }
}

/// Hands a finished pick's outcome to its policy's done hook (policy code:
/// guarded, a panic in it is SY_PANIC).
#[inline(never)]
fn report(pick: Pick, code: Code, latency_ns: u64) -> sy_status {
    boundary_or(sy_status::SY_PANIC, || {
        pick.done(&done_info(code, latency_ns));
        sy_status::SY_OK
    })
}

/// The token word that is never zero in a live pick (`RawPick`'s hold).
const HOLD_WORD: usize = RAW_PICK_HOLD_WORD;

/// The token word by word. `sy_pick` wrote it as separate 8-byte stores; one
/// wide load straddling them would stall on store forwarding when done
/// follows pick closely, which is the common case.
///
/// # Safety
/// `token` points to a readable token.
#[inline(always)]
unsafe fn read_words(token: *const [u64; TOKEN_WORDS]) -> [*mut (); TOKEN_WORDS] {
    // Read as pointers, as `write_pick` stored them (they fit in the token
    // and need no more alignment than its u64s: asserted with `RawPick`).
    let base = token.cast::<*mut ()>();
    // SAFETY: TOKEN_WORDS readable u64s per the contract; volatile keeps the
    // loads separate (and so forwardable).
    std::array::from_fn(|i| unsafe { base.add(i).read_volatile() })
}

/// Takes the `Pick` out of a live result's token (`words`, as just read) and
/// zeroes the token: this is the only take, and a second done is detected.
///
/// # Safety
/// `words` is the token of a live pick (its hold word nonzero), read from
/// `token`.
#[inline(always)]
unsafe fn take_pick(token: *mut [u64; TOKEN_WORDS], words: [*mut (); TOKEN_WORDS]) -> Pick {
    // SAFETY: the caller's token, writable.
    unsafe { token.write([0; TOKEN_WORDS]) };
    // SAFETY: the words `write_pick` stored from `Pick::into_raw`, taken once
    // (the token is zero now).
    unsafe { Pick::from_raw(RawPick(words)) }
}

/// `sy_pick_done` with load metrics, off the common path (the metrics are
/// validated before the pick is consumed). Keeping the 16-entry scratch array
/// out of `sy_pick_done` took ~6 ns off every done without metrics.
///
/// # Safety
/// As `take_pick`; `metrics` is NULL (refused) or has `metrics_len` entries.
#[cold]
#[inline(never)]
unsafe fn done_with_metrics(
    result: *mut sy_pick_result,
    code: Code,
    latency_ns: u64,
    metrics: *const sy_load_metric,
    metrics_len: usize,
) -> sy_status {
    let finish = |load: &[(&str, f64)]| {
        // SAFETY: forwarded contract.
        let pick = unsafe {
            let token = addr_of_mut!((*result)._token).cast();
            take_pick(token, read_words(token))
        };
        pick.done(&DoneInfo {
            load,
            ..done_info(code, latency_ns)
        });
        Ok(())
    };
    // The done hooks (policy code) run inside: guarded.
    boundary_or(sy_status::SY_PANIC, || {
        // SAFETY: forwarded contract.
        match unsafe { with_load(metrics, metrics_len, finish) } {
            Ok(()) => sy_status::SY_OK,
            Err(e) => pick_fail(e),
        }
    })
}

/// Room for a done's load metrics, as the policy's hooks get them.
type Load<'a> = [(&'a str, f64); SY_MAX_LOAD_METRICS];
const NO_LOAD: Load<'static> = [("", 0.0); SY_MAX_LOAD_METRICS];

/// Runs `f` with the load metrics a done was given, checked; without any,
/// the room for them is not even initialized (most dones carry none).
///
/// # Safety
/// As `load_arg`'s.
#[inline(always)]
unsafe fn with_load<R>(
    metrics: *const sy_load_metric,
    metrics_len: usize,
    f: impl FnOnce(&[(&str, f64)]) -> Result<R, Error>,
) -> Result<R, Error> {
    if metrics_len == 0 {
        return f(&[]);
    }
    let mut room: Load<'_> = NO_LOAD;
    // SAFETY: forwarded contract.
    let load = unsafe { load_arg(metrics, metrics_len, &mut room) }?;
    f(load)
}

/// The load metrics a done was given, checked, in `room`.
///
/// # Safety
/// `metrics` is NULL (refused) or has `metrics_len` entries whose names are
/// NULL (refused) or NUL-terminated, alive for `'a`.
unsafe fn load_arg<'a>(
    metrics: *const sy_load_metric,
    metrics_len: usize,
    room: &'a mut Load<'a>,
) -> Result<&'a [(&'a str, f64)], Error> {
    if metrics_len == 0 {
        return Ok(&[]);
    }
    if metrics.is_null() {
        return Err(Error::null("metrics is NULL with a nonzero length"));
    }
    if metrics_len > SY_MAX_LOAD_METRICS {
        return Err(Error::invalid(format!(
            "too many load metrics: {metrics_len} (at most {SY_MAX_LOAD_METRICS})"
        )));
    }
    // SAFETY: `metrics_len` entries per the contract.
    let given = unsafe { std::slice::from_raw_parts(metrics, metrics_len) };
    for (slot, m) in room.iter_mut().zip(given) {
        if m.name.is_null() {
            return Err(Error::null("a load metric name is NULL"));
        }
        // SAFETY: NUL-terminated per the contract.
        let name = unsafe { CStr::from_ptr(m.name) }.to_bytes();
        let Ok(name) = std::str::from_utf8(name) else {
            return Err(Error::new(
                sy_status::SY_INVALID_UTF8,
                "a load metric name is not valid UTF-8",
            ));
        };
        *slot = (name, m.value);
    }
    Ok(room.get(..metrics_len).unwrap_or(&[]))
}

/// The outcome a done hook hears for a gRPC code and latency (no load).
#[inline]
fn done_info(code: Code, latency_ns: u64) -> DoneInfo<'static> {
    DoneInfo {
        error: outcome(code),
        code,
        latency: Duration::from_nanos(latency_ns),
        load: &[],
    }
}
