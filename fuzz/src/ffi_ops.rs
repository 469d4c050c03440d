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
//! their out-parameters untouched; a pick's address and user data are valid
//! until its done, and its user data not yet released; after the loop
//! applied everything, a pick returns only a subchannel reported READY and
//! not shut down; every user datum handed over is released exactly once.

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

/// A pick result as `sy_pick` left it, with the user data it returned.
struct Held {
    result: Box<sy_pick_result>,
}

fn sentinel() -> sy_pick_result {
    sy_pick_result {
        subchannel_id: 0xdead,
        address: std::ptr::dangling(),
        address_len: 0xbeef,
        user_data: 0x5a5a as *mut c_void,
        _token: MaybeUninit::new([0x5a5a; SY_PICK_TOKEN_WORDS]),
    }
}

fn untouched(r: &sy_pick_result) -> bool {
    r.subchannel_id == 0xdead
        && r.address == std::ptr::dangling()
        && r.address_len == 0xbeef
        && r.user_data as usize == 0x5a5a
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
        match input.below(16) {
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
                    }
                }
                _ if !readers.is_empty() => {
                    let r = readers.swap_remove(input.below(readers.len()));
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
                let r = readers[input.below(readers.len())];
                let (method, len, utf8): (*const c_char, usize, bool) = match input.below(5) {
                    0 | 1 => (null(), 0, true),
                    2 => (c"/pkg.Svc/Method".as_ptr(), 15, true),
                    3 => (c"\xff\xfe".as_ptr(), 2, false),
                    _ => (null(), 5, true),
                };
                let hash = input.u64();
                let hash_ptr = if input.bool() {
                    &hash as *const u64
                } else {
                    null()
                };
                // Waiting picks wait at most a millisecond.
                let timeout = u64::from(input.byte().is_multiple_of(32));
                let wait_for_ready = input.bool();
                let mut result = Box::new(sentinel());
                let st = sy_pick(
                    r,
                    method,
                    len,
                    hash_ptr,
                    timeout,
                    wait_for_ready,
                    &mut *result,
                );
                if st != OK {
                    assert!(untouched(&result), "sy_pick {st:?} wrote its out-parameter");
                    if method.is_null() && len > 0 {
                        assert_eq!(st, sy_status::SY_NULL_PARAMETER);
                    } else if !utf8 {
                        assert_eq!(st, sy_status::SY_INVALID_UTF8);
                    } else if closed || channel.is_none() {
                        assert_eq!(st, sy_status::SY_CLOSED);
                    }
                    continue;
                }
                assert!(method.is_null() || utf8, "picked with a bad method");
                check_address(result.address, result.address_len);
                let ud = result.user_data as usize;
                if ud != 0 {
                    assert_eq!(released(ud), 0, "a pick returned released user data");
                }
                if synced {
                    let id = result.subchannel_id;
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
                if picks.len() < MAX_PICKS {
                    picks.push(Held { result });
                } else {
                    assert_eq!(sy_pick_done(&mut *result, 0, 0, null(), 0), OK);
                }
            }
            11 if !picks.is_empty() => {
                let i = input.below(picks.len());
                let code = u32::from(input.byte() % 18);
                let latency = input.u64();
                let names = [
                    c"cpu_utilization".as_ptr(),
                    c"qps".as_ptr(),
                    c"\xff".as_ptr(),
                ];
                let mut metrics = Vec::new();
                let mut bad = false;
                let (mptr, mlen) = match input.below(5) {
                    0 | 1 => (null(), 0),
                    2 => {
                        for _ in 0..input.below(3) + 1 {
                            let n = input.below(3);
                            bad |= n == 2;
                            metrics.push(sy_load_metric {
                                name: names[n],
                                value: f64::from(input.byte()),
                            });
                        }
                        (metrics.as_ptr(), metrics.len())
                    }
                    3 => {
                        bad = true;
                        (null(), 1)
                    }
                    _ => {
                        bad = true;
                        metrics = vec![
                            sy_load_metric {
                                name: names[0],
                                value: 1.0
                            };
                            SY_MAX_LOAD_METRICS + 1
                        ];
                        (metrics.as_ptr(), metrics.len())
                    }
                };
                // Still valid until done, whatever happened to the channel.
                check_address(picks[i].result.address, picks[i].result.address_len);
                let st = sy_pick_done(&mut *picks[i].result, code, latency, mptr, mlen);
                if code > 16 || bad {
                    assert_ne!(st, OK, "done accepted code {code} / bad metrics");
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
                let r = readers[input.below(readers.len())];
                assert_eq!(sy_reader_refresh(r), OK);
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
    for r in readers.drain(..) {
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

/// Waits for the loop to apply what was sent (SY_CLOSED once closed).
fn sync(ch: *mut sy_channel, closed: bool) {
    let st = sy_channel_sync(ch);
    assert_eq!(st, if closed { sy_status::SY_CLOSED } else { OK });
}
