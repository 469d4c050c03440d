//! The `ffi_ops` fuzz target's logic: random sequences of C ABI calls
//! (`sy_*`, called from Rust as C would call them) on a host-transport
//! channel. One file for two crates: the fuzz crate (`fuzz/src/lib.rs`)
//! and the ffi crate's unit tests (`ffi/src/fuzz_replay.rs`, which replay
//! the seeds and crash regressions on stable), each providing the C ABI as
//! `super::sy`.
//!
//! Every call keeps to the header's contract (live handles, valid lengths,
//! one `sy_pick_done` per pick); anything goes within it: NULLs where the
//! header says they are checked, invalid UTF-8, unknown enum numbers, a
//! second free inside the quarantine, a second done, close and free with
//! readers and picks out. Oracles: no panic or abort; failed calls leave
//! their out-parameters untouched (and a refused `sy_reader_done` /
//! `sy_reader_next` the reader's kept pick); a pick's address and user data
//! are valid until its done (a kept pick's, `sy_reader_pick` /
//! `sy_reader_next`, until the reader's next pick, done, refresh or free),
//! and its user data not yet released; a kept pick is finished once; after
//! the loop applied everything, a pick returns only a subchannel reported
//! READY and not shut down; every user datum handed over is released exactly once.

use super::sy::*;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_void, CString};
use std::mem::MaybeUninit;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use switchyard::fuzzing::{Input, ADDRESSES, CONFIGS};

const OK: sy_status = sy_status::SY_OK;

/// One runtime for every sequence (a loop thread per input would dominate).
fn runtime() -> *const sy_runtime {
    static RT: OnceLock<usize> = OnceLock::new();
    *RT.get_or_init(|| {
        let mut rt = null_mut();
        assert_eq!(sy_runtime_new(&mut rt), OK);
        rt as usize
    }) as *const sy_runtime
}

/// Releases seen per user-data token (all sequences: tokens are never reused).
fn releases() -> &'static Mutex<HashMap<usize, u32>> {
    static R: OnceLock<Mutex<HashMap<usize, u32>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn released(token: usize) -> u32 {
    releases().lock().unwrap().get(&token).copied().unwrap_or(0)
}

unsafe extern "C" fn release(user_data: *mut c_void) {
    let mut r = releases().lock().unwrap_or_else(|p| p.into_inner());
    let n = r.entry(user_data as usize).or_insert(0);
    *n += 1;
    if *n > 1 {
        // A panic cannot unwind out of this C callback: abort, which the
        // fuzzer reports as a crash.
        eprintln!("user data {user_data:p} released {n} times");
        std::process::abort();
    }
}

/// Fresh user-data tokens: never dereferenced, only compared.
fn new_token() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0x1000);
    NEXT.fetch_add(8, Ordering::Relaxed)
}

type SubchannelFn = unsafe extern "C" fn(*mut c_void, u64, *const c_char, usize, *mut c_void);

/// `sy_host_transport` as include/switchyard.h lays it out.
#[repr(C)]
struct HostTransport {
    ctx: *mut c_void,
    create: Option<SubchannelFn>,
    connect: Option<SubchannelFn>,
    shutdown: Option<SubchannelFn>,
    /// `sy_health_fn`: none (the library then runs no health checks over
    /// the host's transports). Left out, the library would read past the
    /// struct for it.
    health: Option<unsafe extern "C" fn()>,
}

/// The host's transport side: what the library created and shut down.
#[derive(Default)]
struct Host {
    created: Mutex<Vec<u64>>,
    shut_down: Mutex<HashSet<u64>>,
}

unsafe extern "C" fn on_create(
    ctx: *mut c_void,
    id: u64,
    addr: *const c_char,
    len: usize,
    _: *mut c_void,
) {
    check_address(addr, len);
    // SAFETY: ctx is the `Host` given at channel creation, alive until after
    // sy_channel_free.
    let host = unsafe { &*(ctx as *const Host) };
    host.created.lock().unwrap().push(id);
}

unsafe extern "C" fn on_connect(
    ctx: *mut c_void,
    id: u64,
    addr: *const c_char,
    len: usize,
    _: *mut c_void,
) {
    check_address(addr, len);
    // SAFETY: as in on_create. (Without a `create` callback this is where
    // the host first hears of a subchannel.)
    let host = unsafe { &*(ctx as *const Host) };
    host.created.lock().unwrap().push(id);
}

unsafe extern "C" fn on_shutdown(
    ctx: *mut c_void,
    id: u64,
    addr: *const c_char,
    len: usize,
    _: *mut c_void,
) {
    check_address(addr, len);
    // SAFETY: as in on_create.
    let host = unsafe { &*(ctx as *const Host) };
    host.shut_down.lock().unwrap().insert(id);
}

unsafe extern "C" fn on_state(_: *mut c_void, state: u32) {
    assert!(state <= 4, "state {state}");
}

/// An address handed to C: `len` bytes of one of ADDRESSES, NUL after them
/// in callbacks.
fn check_address(addr: *const c_char, len: usize) {
    assert!(!addr.is_null());
    // SAFETY: the library promises `len` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(addr.cast::<u8>(), len) };
    assert!(
        ADDRESSES.iter().any(|a| a.as_bytes() == bytes),
        "address {bytes:?}"
    );
}

const MAX_READERS: usize = 4;
const MAX_PICKS: usize = 16;

/// What a reader keeps from `sy_reader_pick` / `sy_reader_next`, as far
/// as the sequence can tell.
#[derive(Clone, Copy)]
enum Kept {
    /// None: never picked, finished, or dropped by a later pick.
    Nothing,
    /// The address of the pick it wrote (pointer, length): valid until
    /// the reader's next pick, done, refresh or free.
    Pick(*const c_char, usize),
    /// A call that failed may or may not have dropped it.
    Unknown,
}

/// A pick request from the input: method (pointer, length, whether its
/// bytes are UTF-8), hash (if any), timeout and wait-for-ready.
struct Request {
    method: *const c_char,
    len: usize,
    utf8: bool,
    hash: Option<u64>,
    timeout_ms: u64,
    wait_for_ready: bool,
}

impl Request {
    fn from(input: &mut Input) -> Request {
        let (method, len, utf8): (*const c_char, usize, bool) = match input.below(5) {
            0 | 1 => (null(), 0, true),
            2 => (c"/pkg.Svc/Method".as_ptr(), 15, true),
            3 => (c"\xff\xfe".as_ptr(), 2, false),
            _ => (null(), 5, true),
        };
        let hash = input.u64();
        let hash = input.bool().then_some(hash);
        // Waiting picks wait at most a millisecond.
        let timeout_ms = u64::from(input.byte().is_multiple_of(32));
        let wait_for_ready = input.bool();
        Request {
            method,
            len,
            utf8,
            hash,
            timeout_ms,
            wait_for_ready,
        }
    }

    fn c(&self) -> sy_pick_request {
        sy_pick_request {
            method: self.method,
            method_len: self.len,
            request_hash: self.hash.unwrap_or(0),
            has_request_hash: self.hash.is_some(),
            wait_for_ready: self.wait_for_ready,
            timeout_ms: self.timeout_ms,
        }
    }

    /// The status a refused request must get, if it is refused for itself.
    fn refusal(&self) -> Option<sy_status> {
        if self.method.is_null() && self.len > 0 {
            Some(sy_status::SY_NULL_PARAMETER)
        } else if !self.utf8 {
            Some(sy_status::SY_INVALID_UTF8)
        } else {
            None
        }
    }
}

/// An RPC's outcome from the input (code, latency, load metrics kept in
/// `store`), and whether a done must refuse it (an unknown code, bad
/// metrics).
fn outcome(input: &mut Input, store: &mut Vec<sy_load_metric>) -> (sy_outcome, bool) {
    let code = u32::from(input.byte() % 18);
    let latency_ns = input.u64();
    let (metrics, metrics_len, bad) = metrics(input, store);
    let outcome = sy_outcome {
        grpc_code: code,
        latency_ns,
        metrics,
        metrics_len,
    };
    (outcome, bad || code > 16)
}

/// Load metrics from the input, kept in `store`: (pointer, length,
/// whether the done must refuse them).
fn metrics(
    input: &mut Input,
    store: &mut Vec<sy_load_metric>,
) -> (*const sy_load_metric, usize, bool) {
    let names = [
        c"cpu_utilization".as_ptr(),
        c"qps".as_ptr(),
        c"\xff".as_ptr(),
    ];
    match input.below(5) {
        0 | 1 => (null(), 0, false),
        2 => {
            let mut bad = false;
            for _ in 0..input.below(3) + 1 {
                let n = input.below(3);
                bad |= n == 2;
                store.push(sy_load_metric {
                    name: names[n],
                    value: f64::from(input.byte()),
                });
            }
            (store.as_ptr(), store.len(), bad)
        }
        3 => (null(), 1, true),
        _ => {
            *store = vec![
                sy_load_metric {
                    name: names[0],
                    value: 1.0
                };
                SY_MAX_LOAD_METRICS + 1
            ];
            (store.as_ptr(), store.len(), true)
        }
    }
}

fn borrowed_sentinel() -> sy_borrowed_pick {
    sy_borrowed_pick {
        subchannel_id: 0xdead,
        address: std::ptr::dangling(),
        address_len: 0xbeef,
        user_data: 0x5a5a as *mut c_void,
    }
}

fn borrowed_untouched(p: &sy_borrowed_pick) -> bool {
    p.subchannel_id == 0xdead
        && p.address == std::ptr::dangling()
        && p.address_len == 0xbeef
        && p.user_data as usize == 0x5a5a
}

/// A pick result as `sy_pick` left it, with the user data it returned.
struct Held {
    result: Box<sy_pick_result>,
}

/// `borrowed_sentinel`'s values, and a token of the same filler.
fn sentinel() -> sy_pick_result {
    let b = borrowed_sentinel();
    sy_pick_result {
        subchannel_id: b.subchannel_id,
        address: b.address,
        address_len: b.address_len,
        user_data: b.user_data,
        _token: MaybeUninit::new([0x5a5a; SY_PICK_TOKEN_WORDS]),
    }
}

fn untouched(r: &sy_pick_result) -> bool {
    borrowed_untouched(&sy_borrowed_pick {
        subchannel_id: r.subchannel_id,
        address: r.address,
        address_len: r.address_len,
        user_data: r.user_data,
    })
        // SAFETY: written by `sentinel`; a failed pick must not touch it.
        && unsafe { r._token.assume_init() } == [0x5a5a; SY_PICK_TOKEN_WORDS]
}

/// Random C ABI call sequences; see the crate docs.
pub fn ffi_ops(data: &[u8]) {
    let mut input = Input::new(data);
    let host = Box::new(Host::default());
    let transport = HostTransport {
        ctx: &*host as *const Host as *mut c_void,
        create: if input.bool() { Some(on_create) } else { None },
        connect: Some(on_connect),
        shutdown: Some(on_shutdown),
        health: None,
    };
    let config = CString::new(CONFIGS[input.below(CONFIGS.len())]).unwrap();
    let mut ch = null_mut();
    let st = sy_channel_new(
        runtime(),
        c"".as_ptr(),
        config.as_ptr(),
        // The crate does not export the type by name (C gets it from the
        // header): the same layout, cast.
        (&transport as *const HostTransport).cast(),
        Some(on_state),
        null_mut(),
        Some(release),
        &mut ch,
    );
    assert_eq!(st, OK);
    let mut channel: Option<*mut sy_channel> = Some(ch);
    let mut closed = false;
    let mut readers: Vec<*mut sy_reader> = Vec::new();
    // Each reader's kept pick, by the same index.
    let mut kept: Vec<Kept> = Vec::new();
    let mut picks: Vec<Held> = Vec::new();
    let mut reported: HashMap<u64, u32> = HashMap::new();
    let mut handed_over: Vec<usize> = Vec::new();
    // Sent to the loop but maybe not applied yet: picks sync first (the
    // oracle needs it); address and config changes sync at once.
    let mut dirty = false;

    for _ in 0..256 {
        if input.is_empty() {
            break;
        }
        // Ops 0..16 read their byte as `below(16)` did before the kept
        // picks' ops: the committed seeds replay as they were written.
        match input.below(20) {
            0 | 1 => {
                let Some(ch) = channel else { continue };
                let n = input.below(ADDRESSES.len() + 2);
                let mut texts = Vec::new();
                let mut tokens = Vec::new();
                let mut bad_utf8 = false;
                for _ in 0..n {
                    texts.push(match input.below(16) {
                        15 => {
                            bad_utf8 = true;
                            CString::new(vec![0xffu8, 0xfe]).unwrap()
                        }
                        i => CString::new(ADDRESSES[i % ADDRESSES.len()]).unwrap(),
                    });
                    tokens.push(if input.bool() { new_token() } else { 0 });
                }
                let list: Vec<sy_address> = texts
                    .iter()
                    .zip(&tokens)
                    .map(|(t, &u)| sy_address {
                        address: t.as_ptr(),
                        weight: u32::from(input.byte()),
                        user_data: u as *mut c_void,
                    })
                    .collect();
                let ptr = if list.is_empty() && input.bool() {
                    null()
                } else {
                    list.as_ptr()
                };
                let st = sy_channel_update_addresses(ch, ptr, list.len());
                if bad_utf8 {
                    assert_eq!(st, sy_status::SY_INVALID_UTF8);
                } else {
                    let expect = if closed { sy_status::SY_CLOSED } else { OK };
                    assert_eq!(st, expect);
                    // Taken: released exactly once from now on.
                    handed_over.extend(tokens.iter().filter(|&&t| t != 0));
                }
                sync(ch, closed);
            }
            2..=4 => {
                let Some(ch) = channel else { continue };
                let ids = host.created.lock().unwrap().clone();
                let id = match ids.len() {
                    0 => input.u64(),
                    n => ids[input.below(n)],
                };
                let state = u32::from(input.byte() % 7);
                let message: *const c_char = match input.below(3) {
                    0 => null(),
                    1 => c"fuzz".as_ptr(),
                    _ => c"\xff".as_ptr(),
                };
                let st = sy_channel_report_subconn_state(ch, id, state, message);
                let bad_message = !message.is_null() && message != c"fuzz".as_ptr();
                if state > 4 {
                    assert_eq!(st, sy_status::SY_INVALID_ARGUMENT, "state {state}");
                } else if bad_message {
                    assert_eq!(st, sy_status::SY_INVALID_UTF8);
                } else if state == 4 {
                    // A host cannot report SHUTDOWN.
                    assert_eq!(st, sy_status::SY_INVALID_ARGUMENT);
                } else if closed {
                    assert_eq!(st, sy_status::SY_CLOSED);
                } else {
                    assert_eq!(st, OK);
                    if state != 1 {
                        reported.insert(id, state);
                    }
                }
                dirty = true;
            }
            5 => {
                let Some(ch) = channel else { continue };
                let i = input.below(CONFIGS.len() + 2);
                let text = match CONFIGS.get(i) {
                    Some(c) => CString::new(*c).unwrap(),
                    None => CString::new(r#"{"loadBalancingConfig":[{"no_such":{}}]}"#).unwrap(),
                };
                let st = sy_channel_update_service_config(ch, text.as_ptr());
                if i >= CONFIGS.len() {
                    assert_eq!(st, sy_status::SY_INVALID_SERVICE_CONFIG);
                } else {
                    assert_eq!(st, if closed { sy_status::SY_CLOSED } else { OK });
                }
                sync(ch, closed);
            }
            6 => {
                let Some(ch) = channel else { continue };
                match input.below(5) {
                    0 => {
                        let st = sy_channel_report_resolver_error(ch, c"fuzz".as_ptr());
                        assert_eq!(st, if closed { sy_status::SY_CLOSED } else { OK });
                    }
                    1 => {
                        let st = if input.bool() {
                            sy_channel_connect(ch)
                        } else {
                            sy_channel_reset_connect_backoff(ch)
                        };
                        assert_eq!(st, if closed { sy_status::SY_CLOSED } else { OK });
                    }
                    2 => {
                        let mut state = 99;
                        assert_eq!(sy_channel_state(ch, &mut state), OK);
                        assert!(state <= 4);
                        assert_eq!(closed, state == 4, "state {state} closed {closed}");
                        assert_eq!(
                            sy_channel_state(ch, null_mut()),
                            sy_status::SY_NULL_PARAMETER
                        );
                    }
                    3 => {
                        let from = u32::from(input.byte() % 6);
                        let mut out = 99;
                        let st = sy_channel_wait_for_state_change(ch, from, 0, &mut out);
                        if st != OK {
                            assert_eq!(out, 99, "out written on failure");
                        }
                    }
                    _ => {
                        let mut buf = [0 as c_char; 8];
                        let n = sy_last_error(buf.as_mut_ptr(), input.below(9));
                        assert_eq!(n, sy_last_error(null_mut(), 0));
                        let _ = sy_last_status();
                        let _ = sy_last_grpc_code();
                        let _ = sy_status_str(input.u32());
                        let _ = sy_state_str(input.u32());
                    }
                }
                dirty = true;
            }
            7 => match channel {
                Some(ch) if readers.len() < MAX_READERS => {
                    let mut r = null_mut();
                    let st = sy_reader_new(ch, &mut r);
                    if closed {
                        assert_eq!(st, sy_status::SY_CLOSED);
                        assert!(r.is_null());
                    } else {
                        assert_eq!(st, OK);
                        readers.push(r);
                        kept.push(Kept::Nothing);
                    }
                }
                _ if !readers.is_empty() => {
                    let i = input.below(readers.len());
                    let r = readers.swap_remove(i);
                    kept.swap_remove(i);
                    sy_reader_free(r);
                    if input.bool() {
                        // Inside the quarantine: detected, nothing happens.
                        sy_reader_free(r);
                    }
                }
                _ => {}
            },
            8..=10 if !readers.is_empty() => {
                if let (true, Some(ch)) = (dirty, channel) {
                    sync(ch, closed);
                    dirty = false;
                }
                let synced = channel.is_some() && !closed;
                let ri = input.below(readers.len());
                let r = readers[ri];
                let req = Request::from(&mut input);
                let hash = req.hash.unwrap_or(0);
                let hash_ptr = if req.hash.is_some() {
                    &hash as *const u64
                } else {
                    null()
                };
                let mut result = Box::new(sentinel());
                let st = sy_pick(
                    r,
                    req.method,
                    req.len,
                    hash_ptr,
                    req.timeout_ms,
                    req.wait_for_ready,
                    &mut *result,
                );
                if st != OK {
                    assert!(untouched(&result), "sy_pick {st:?} wrote its out-parameter");
                    check_pick_refusal(st, &req, closed || channel.is_none());
                    kept[ri] = Kept::Unknown;
                    continue;
                }
                // The reader's next pick drops its kept one.
                kept[ri] = Kept::Nothing;
                assert!(req.utf8, "picked with a bad method");
                check_picked(
                    result.subchannel_id,
                    result.address,
                    result.address_len,
                    result.user_data,
                    synced.then_some((&reported, &*host)),
                );
                if picks.len() < MAX_PICKS {
                    picks.push(Held { result });
                } else {
                    assert_eq!(sy_pick_done(&mut *result, 0, 0, null(), 0), OK);
                }
            }
            11 if !picks.is_empty() => {
                let i = input.below(picks.len());
                let mut store = Vec::new();
                let (o, bad) = outcome(&mut input, &mut store);
                // Still valid until done, whatever happened to the channel.
                check_address(picks[i].result.address, picks[i].result.address_len);
                let st = sy_pick_done(
                    &mut *picks[i].result,
                    o.grpc_code,
                    o.latency_ns,
                    o.metrics,
                    o.metrics_len,
                );
                if bad {
                    assert_ne!(st, OK, "done accepted {} / bad metrics", o.grpc_code);
                    // The pick is untouched: finish it properly later.
                    continue;
                }
                assert_eq!(st, OK);
                let mut held = picks.swap_remove(i);
                if input.bool() {
                    // A second done is detected (the token is zeroed).
                    let st = sy_pick_done(&mut *held.result, 0, 0, null(), 0);
                    assert_eq!(st, sy_status::SY_INVALID_ARGUMENT);
                }
            }
            12 if !readers.is_empty() => {
                let i = input.below(readers.len());
                assert_eq!(sy_reader_refresh(readers[i]), OK);
                kept[i] = Kept::Nothing;
            }
            13 => {
                if let Some(ch) = channel {
                    assert_eq!(sy_channel_close(ch), OK);
                    closed = true;
                }
            }
            14 => {
                if let Some(ch) = channel.take() {
                    sy_channel_free(ch);
                    if input.bool() {
                        // Inside the quarantine: detected, nothing happens.
                        sy_channel_free(ch);
                    }
                }
            }
            op @ (16 | 17) if !readers.is_empty() => {
                // A kept pick: `sy_reader_pick` (16), or `sy_reader_next`
                // (17), which may first finish the kept one.
                if let (true, Some(ch)) = (dirty, channel) {
                    sync(ch, closed);
                    dirty = false;
                }
                let synced = channel.is_some() && !closed;
                let i = input.below(readers.len());
                let req = input.bool().then(|| Request::from(&mut input));
                let c_req = req.as_ref().map(Request::c);
                let req_ptr = c_req
                    .as_ref()
                    .map_or(null(), |r| r as *const sy_pick_request);
                let mut store = Vec::new();
                let (outcome, bad_outcome) = if op == 17 && input.bool() {
                    let (o, bad) = outcome(&mut input, &mut store);
                    (Some(o), bad)
                } else {
                    (None, false)
                };
                if let Kept::Pick(address, len) = kept[i] {
                    // Still valid, whatever happened to the channel.
                    check_address(address, len);
                }
                let mut out = borrowed_sentinel();
                let st = if op == 16 {
                    sy_reader_pick(readers[i], req_ptr, &mut out)
                } else {
                    let done = outcome.as_ref().map_or(null(), |o| o as *const sy_outcome);
                    sy_reader_next(readers[i], done, req_ptr, &mut out)
                };
                let refusal = req.as_ref().and_then(Request::refusal);
                let no_kept = outcome.is_some() && matches!(kept[i], Kept::Nothing);
                if st == OK {
                    assert!(
                        !bad_outcome && refusal.is_none() && !no_kept,
                        "picked with bad arguments"
                    );
                    check_picked(
                        out.subchannel_id,
                        out.address,
                        out.address_len,
                        out.user_data,
                        synced.then_some((&reported, &*host)),
                    );
                    kept[i] = Kept::Pick(out.address, out.address_len);
                    continue;
                }
                assert!(borrowed_untouched(&out), "{st:?} wrote the borrowed pick");
                if bad_outcome || refusal.is_some() || no_kept {
                    // Refused: the kept pick is left as it was.
                    match (bad_outcome, refusal, no_kept) {
                        (false, Some(expected), false) => assert_eq!(st, expected),
                        (false, None, true) => assert_eq!(st, sy_status::SY_INVALID_ARGUMENT),
                        _ => {}
                    }
                    continue;
                }
                if closed || channel.is_none() {
                    // (Or the outcome went to no kept pick: Unknown was none.)
                    assert!(
                        st == sy_status::SY_CLOSED || st == sy_status::SY_INVALID_ARGUMENT,
                        "{st:?}"
                    );
                }
                // After an outcome was taken, a failed pick leaves no kept
                // pick; a plain pick's failure may have dropped it or not.
                kept[i] = if outcome.is_some() {
                    Kept::Nothing
                } else {
                    Kept::Unknown
                };
            }
            18 if !readers.is_empty() => {
                let i = input.below(readers.len());
                let mut store = Vec::new();
                let (o, bad) = outcome(&mut input, &mut store);
                if let Kept::Pick(address, len) = kept[i] {
                    check_address(address, len);
                }
                let st = sy_reader_done(
                    readers[i],
                    o.grpc_code,
                    o.latency_ns,
                    o.metrics,
                    o.metrics_len,
                );
                if bad {
                    assert_ne!(st, OK, "done accepted {} / bad metrics", o.grpc_code);
                    continue;
                }
                match kept[i] {
                    Kept::Nothing => assert_eq!(st, sy_status::SY_INVALID_ARGUMENT),
                    Kept::Pick(..) => assert_eq!(st, OK),
                    Kept::Unknown => {
                        assert!(st == OK || st == sy_status::SY_INVALID_ARGUMENT, "{st:?}")
                    }
                }
                kept[i] = Kept::Nothing;
            }
            _ => {
                // Argument checks that must refuse without touching anything.
                let mut out = null_mut();
                assert_eq!(
                    sy_reader_new(null(), &mut out),
                    sy_status::SY_NULL_PARAMETER
                );
                assert!(out.is_null());
                assert_eq!(
                    sy_pick(null_mut(), null(), 0, null(), 0, false, null_mut()),
                    sy_status::SY_NULL_PARAMETER
                );
                assert_eq!(
                    sy_pick_done(null_mut(), 0, 0, null(), 0),
                    sy_status::SY_NULL_PARAMETER
                );
                let mut out = borrowed_sentinel();
                assert_eq!(
                    sy_reader_pick(null_mut(), null(), &mut out),
                    sy_status::SY_NULL_PARAMETER
                );
                assert_eq!(
                    sy_reader_next(null_mut(), null(), null(), &mut out),
                    sy_status::SY_NULL_PARAMETER
                );
                assert!(borrowed_untouched(&out));
                assert_eq!(
                    sy_reader_done(null_mut(), 0, 0, null(), 0),
                    sy_status::SY_NULL_PARAMETER
                );
                let mut zero: sy_pick_result = sy_pick_result {
                    _token: MaybeUninit::new([0; SY_PICK_TOKEN_WORDS]),
                    address: null(),
                    user_data: null_mut(),
                    ..sentinel()
                };
                assert_eq!(
                    sy_pick_done(&mut zero, 0, 0, null(), 0),
                    sy_status::SY_INVALID_ARGUMENT
                );
                if let Some(ch) = channel {
                    assert_eq!(
                        sy_channel_update_addresses(ch, null(), 1),
                        sy_status::SY_NULL_PARAMETER
                    );
                }
            }
        }
    }

    // Wind down in the order the input left things: picks done, readers and
    // channel freed.
    for mut held in picks.drain(..) {
        check_address(held.result.address, held.result.address_len);
        assert_eq!(sy_pick_done(&mut *held.result, 0, 0, null(), 0), OK);
    }
    if let Some(ch) = channel.take() {
        sy_channel_free(ch);
    }
    for (r, k) in readers.drain(..).zip(kept.drain(..)) {
        if let Kept::Pick(address, len) = k {
            check_address(address, len);
        }
        sy_reader_free(r);
    }
    drop(host);
    // The loop may release the last user data on its own thread: bounded wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    for spin in 0.. {
        if handed_over.iter().all(|&t| released(t) > 0) || Instant::now() >= deadline {
            break;
        }
        if spin < 1000 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for &t in &handed_over {
        assert_eq!(
            released(t),
            1,
            "user data {t:#x} released {} times",
            released(t)
        );
    }
    // Forget them, so the record does not grow from input to input (which
    // would also set off libFuzzer's leak check on every run).
    let mut r = releases().lock().unwrap();
    for t in handed_over {
        r.remove(&t);
    }
}

/// Checks what a refused `sy_pick` returned: the request's own fault, or
/// SY_CLOSED on a closed channel (or any status from the pick itself).
fn check_pick_refusal(st: sy_status, req: &Request, closed: bool) {
    match req.refusal() {
        Some(expected) => assert_eq!(st, expected),
        None if closed => assert_eq!(st, sy_status::SY_CLOSED),
        None => {}
    }
}

/// Checks a successful pick (`sy_pick`'s or a kept one): its address is one
/// handed over, its user data not released, and once the loop applied
/// everything sent (`synced`: the subchannels reported and the host), its
/// subchannel was reported READY and not shut down.
fn check_picked(
    id: u64,
    address: *const c_char,
    len: usize,
    user_data: *mut c_void,
    synced: Option<(&HashMap<u64, u32>, &Host)>,
) {
    check_address(address, len);
    let ud = user_data as usize;
    if ud != 0 {
        assert_eq!(released(ud), 0, "a pick returned released user data");
    }
    if let Some((reported, host)) = synced {
        assert_eq!(
            reported.get(&id),
            Some(&2),
            "picked {id}, not reported READY"
        );
        assert!(
            !host.shut_down.lock().unwrap().contains(&id),
            "picked {id}, shut down"
        );
    }
}

/// Waits for the loop to apply what was sent (SY_CLOSED once closed).
fn sync(ch: *mut sy_channel, closed: bool) {
    let st = sy_channel_sync(ch);
    assert_eq!(st, if closed { sy_status::SY_CLOSED } else { OK });
}
