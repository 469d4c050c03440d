//! `sy_pick` / `sy_pick_done` from Rust, through the result's token, so that
//! Miri (scripts/sanitizers.sh) checks what the token carries: the
//! subchannel, the hold and a chain of two done hooks (`dyn` pointers,
//! vtables included), written by `sy_pick`, copied bitwise as C copies a struct, and
//! turned back into a pick by `sy_pick_done` on the copy.

use crate::callback::{sy_host_transport, sy_release_fn};
use crate::*;
use std::ffi::{c_char, c_void, CStr};
use std::mem::{size_of, MaybeUninit};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard::{
    registry, Balancer, Builder, ClientConn, ClientConnState, Code, ConnectivityState, DoneHook,
    DoneHooks, DoneInfo, PickInfo, PickLocal, PickResult, Picker, SubConn, SubConnId, SubConnState,
};

fn ok(s: sy_status) {
    assert_eq!(s, sy_status::SY_OK);
}

/// The host's transports: the subchannel ids it was asked to connect.
#[derive(Default)]
struct Host(Mutex<Vec<u64>>);

unsafe extern "C" fn connect(
    ctx: *mut c_void,
    id: u64,
    _: *const c_char,
    _: usize,
    _: *mut c_void,
) {
    // SAFETY: `ctx` is the `Host` the test keeps alive past the channel.
    let host = unsafe { &*ctx.cast::<Host>() };
    host.0.lock().unwrap().push(id);
}

unsafe extern "C" fn ignore(_: *mut c_void, _: u64, _: *const c_char, _: usize, _: *mut c_void) {}

/// The address's user data is its test's release counter.
unsafe extern "C" fn release(user_data: *mut c_void) {
    // SAFETY: the counter the test handed over, alive past the channel.
    unsafe { &*user_data.cast::<AtomicUsize>() }.fetch_add(1, Ordering::SeqCst);
}

/// A policy with done hooks: one subchannel, a picker that hands out two
/// chained hooks with every pick (as a wrapping picker over a child's
/// does), and hooks that record the outcomes, each under its name.
#[derive(Default)]
struct Outcomes(
    Mutex<Vec<(&'static str, Option<String>)>>,
    /// What the inner hook heard besides: code, latency, load.
    Mutex<Vec<Heard>>,
    /// Pickers dropped (with them, their hooks).
    AtomicUsize,
);

#[derive(Debug, PartialEq)]
struct Heard {
    code: Code,
    latency: Duration,
    load: Vec<(String, f64)>,
}

struct Hook(Arc<Outcomes>, &'static str);

impl DoneHook for Hook {
    fn done(&self, _: &SubConn, info: &DoneInfo<'_>) {
        assert!(self.1 != "panics", "a policy's done hook panicked");
        let error = info.error.map(str::to_string);
        self.0 .0.lock().unwrap().push((self.1, error));
        if self.1 == "inner" {
            self.0 .1.lock().unwrap().push(Heard {
                code: info.code,
                latency: info.latency,
                load: info.load.iter().map(|&(n, v)| (n.to_string(), v)).collect(),
            });
        }
    }
}

struct Hooked {
    sc: Arc<SubConn>,
    inner: Hook,
    outer: Hook,
}

impl Drop for Hooked {
    fn drop(&mut self) {
        self.inner.0 .2.fetch_add(1, Ordering::SeqCst);
    }
}

impl Picker for Hooked {
    fn pick<'a>(&'a self, info: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        assert!(info.method != "/panic", "a policy's picker panicked");
        match DoneHooks::one(&self.inner).with_outer(&self.outer) {
            Ok(done) => PickResult::Complete {
                subconn: &self.sc,
                done,
            },
            Err(_) => PickResult::Queue,
        }
    }
}

struct HookPolicy {
    outcomes: Arc<Outcomes>,
    sc: Option<Arc<SubConn>>,
    /// The outer hook panics (a policy named `*_panics`).
    panics: bool,
}

impl Balancer for HookPolicy {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        s: ClientConnState,
    ) -> Result<(), String> {
        let sc = cc.new_subconn(s.addresses[0].clone())?;
        cc.connect(sc.id());
        self.sc = Some(sc);
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, cc: &mut dyn ClientConn, _: SubConnId, s: &SubConnState) {
        if let (ConnectivityState::Idle, Some(sc)) = (s.state, &self.sc) {
            cc.connect(sc.id());
        }
        if let (ConnectivityState::Ready, Some(sc)) = (s.state, &self.sc) {
            let picker = Hooked {
                sc: sc.clone(),
                inner: Hook(self.outcomes.clone(), "inner"),
                outer: Hook(
                    self.outcomes.clone(),
                    if self.panics { "panics" } else { "outer" },
                ),
            };
            cc.update_state(ConnectivityState::Ready, Box::new(picker));
        }
    }
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

/// Registered under a name of each test's own: tests run in parallel, and
/// a channel must build its own test's policy.
struct HookBuilder(Arc<Outcomes>, &'static str);

impl Builder for HookBuilder {
    fn name(&self) -> &str {
        self.1
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(HookPolicy {
            outcomes: self.0.clone(),
            sc: None,
            panics: self.1.ends_with("_panics"),
        })
    }
}

/// Registers the hook policy under `name` (each test its own: tests run in
/// parallel, and a channel must build its own test's policy); returns what
/// its hooks hear and a service config that selects it.
fn hook_policy(name: &'static str) -> (Arc<Outcomes>, std::ffi::CString) {
    let outcomes = Arc::new(Outcomes::default());
    registry::register(Arc::new(HookBuilder(outcomes.clone(), name)));
    let config = format!("{{\"loadBalancingConfig\":[{{\"{name}\":{{}}}}]}}");
    (outcomes, std::ffi::CString::new(config).unwrap())
}

/// A channel over one READY host-managed address under `config` (its user
/// data: `released`), with a reader; freed (reader, channel, runtime) by the
/// returned closure.
fn ready_channel(
    host: &Host,
    released: &AtomicUsize,
    config: &CStr,
) -> (*mut sy_reader, impl FnOnce()) {
    let (r, _, _, free) = ready_channel_and_subchannel(host, released, config);
    (r, free)
}

/// `ready_channel`, with the channel and the subchannel's id.
fn ready_channel_and_subchannel(
    host: &Host,
    released: &AtomicUsize,
    config: &CStr,
) -> (*mut sy_reader, *mut sy_channel, u64, impl FnOnce()) {
    let address = sy_address {
        address: c"127.0.0.1:443".as_ptr(),
        weight: 0,
        user_data: ptr::from_ref(released).cast_mut().cast(),
    };
    let (r, ch, free) = host_channel(host, config, Some(release), &[address]);
    let id = *host.0.lock().unwrap().last().expect("a connect");
    ready(ch, id);
    (r, ch, id, free)
}

/// A channel under `config` whose host is `host`, over `addresses`, with
/// `release` for their user data, nothing reported READY yet (the loop
/// has asked for the connections); returns a reader, the channel, and the
/// free closure.
fn host_channel(
    host: &Host,
    config: &CStr,
    release: sy_release_fn,
    addresses: &[sy_address],
) -> (*mut sy_reader, *mut sy_channel, impl FnOnce()) {
    let mut rt = ptr::null_mut();
    ok(sy_runtime_new(&mut rt));
    let transport = sy_host_transport {
        ctx: ptr::from_ref(host).cast_mut().cast(),
        create: Some(ignore),
        connect: Some(connect),
        shutdown: Some(ignore),
        health: None,
    };
    let mut ch = ptr::null_mut();
    ok(sy_channel_new(
        rt,
        c"".as_ptr(),
        config.as_ptr(),
        &transport,
        None,
        ptr::null_mut(),
        release,
        &mut ch,
    ));
    ok(sy_channel_update_addresses(
        ch,
        addresses.as_ptr(),
        addresses.len(),
    ));
    ok(sy_channel_sync(ch));
    let mut r = ptr::null_mut();
    ok(sy_reader_new(ch, &mut r));
    (r, ch, move || {
        sy_reader_free(r);
        sy_channel_free(ch);
        sy_runtime_free(rt);
    })
}

/// What C does with a struct it was handed: a byte-for-byte copy.
fn c_copy(result: &sy_pick_result) -> sy_pick_result {
    let mut copy = MaybeUninit::<sy_pick_result>::uninit();
    // SAFETY: a plain byte copy into fresh storage of the same type; every
    // byte of a `sy_pick_result` is initialized (no padding on any target
    // it is built for: its fields are all word-sized).
    unsafe {
        ptr::copy_nonoverlapping(
            ptr::from_ref(result).cast::<u8>(),
            copy.as_mut_ptr().cast::<u8>(),
            size_of::<sy_pick_result>(),
        );
        copy.assume_init()
    }
}

/// A token pick with no method, no hash and no wait (it must succeed).
fn token_pick(r: *mut sy_reader) -> sy_pick_result {
    let mut result = zeroed_result();
    ok(sy_pick(
        r,
        ptr::null(),
        0,
        ptr::null(),
        0,
        false,
        &mut result,
    ));
    result
}

fn zeroed_result() -> sy_pick_result {
    // SAFETY: all-zero is a valid (not live) sy_pick_result: integers and
    // NULL pointers.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

#[test]
fn a_hooked_pick_survives_a_bitwise_copy_of_its_result() {
    let (outcomes, config) = hook_policy("ffi_token_hook");
    let config = config.as_c_str();
    let host = Host::default();
    let released = AtomicUsize::new(0);
    let (r, free) = ready_channel(&host, &released, config);
    let mut result = zeroed_result();
    let method = c"/svc/M";
    ok(sy_pick(
        r,
        method.as_ptr(),
        6,
        ptr::null(),
        0,
        false,
        &mut result,
    ));
    assert_eq!(result.user_data, ptr::from_ref(&released).cast_mut().cast());
    let mut copy = c_copy(&result);
    ok(sy_pick_done(&mut copy, 14, 1_000, ptr::null(), 0));
    // Done once: the copy's token is spent, and says so.
    // SAFETY: the token's words are initialized (zeroed by the done).
    assert_eq!(
        unsafe { copy._token.assume_init() },
        [0; SY_PICK_TOKEN_WORDS]
    );
    assert_eq!(
        sy_pick_done(&mut copy, 0, 0, ptr::null(), 0),
        sy_status::SY_INVALID_ARGUMENT
    );
    // With load metrics (the other way a done takes the token).
    ok(sy_pick(
        r,
        method.as_ptr(),
        6,
        ptr::null(),
        0,
        false,
        &mut result,
    ));
    let mut copy = c_copy(&result);
    let metric = sy_load_metric {
        name: c"cpu_utilization".as_ptr(),
        value: 0.5,
    };
    ok(sy_pick_done(&mut copy, 0, 1_000, &metric, 1));
    // Each hook once per pick, outermost first (gRPC-Go's order).
    let unavailable = Some("UNAVAILABLE".to_string());
    assert_eq!(
        *outcomes.0.lock().unwrap(),
        [
            ("outer", unavailable.clone()),
            ("inner", unavailable),
            ("outer", None),
            ("inner", None)
        ]
    );
    free();
    assert_eq!(released.load(Ordering::SeqCst), 1, "released exactly once");
}

#[test]
fn a_cached_rotation_pick_survives_a_bitwise_copy_of_its_result() {
    let host = Host::default();
    let released = AtomicUsize::new(0);
    let config = c"{\"loadBalancingConfig\":[{\"round_robin\":{}}]}";
    let (r, free) = ready_channel(&host, &released, config);
    let mut result = zeroed_result();
    // method_len 0: the hit path (`try_pick_cached`) once the rotation is
    // copied into the reader; the first pick copies it.
    for _ in 0..3 {
        ok(sy_pick(
            r,
            ptr::null(),
            0,
            ptr::null(),
            0,
            false,
            &mut result,
        ));
        assert_eq!(result.user_data, ptr::from_ref(&released).cast_mut().cast());
        let mut copy = c_copy(&result);
        ok(sy_pick_done(&mut copy, 0, 0, ptr::null(), 0));
        assert_eq!(
            sy_pick_done(&mut copy, 0, 0, ptr::null(), 0),
            sy_status::SY_INVALID_ARGUMENT
        );
    }
    free();
    assert_eq!(released.load(Ordering::SeqCst), 1, "released exactly once");
}

fn heard(code: Code, latency_ns: u64, load: &[(&str, f64)]) -> Heard {
    Heard {
        code,
        latency: Duration::from_nanos(latency_ns),
        load: load.iter().map(|&(n, v)| (n.to_string(), v)).collect(),
    }
}

fn kept_pick(r: *mut sy_reader, request: *const sy_pick_request) -> sy_borrowed_pick {
    let mut out = sy_borrowed_pick {
        subchannel_id: 0,
        address: ptr::null(),
        address_len: 0,
        user_data: ptr::null_mut(),
    };
    ok(sy_reader_pick(r, request, &mut out));
    out
}

#[test]
fn a_kept_pick_tells_every_hook_its_code_latency_and_load_once() {
    let (outcomes, config) = hook_policy("ffi_token_hook_kept");
    let config = config.as_c_str();
    let host = Host::default();
    let released = AtomicUsize::new(0);
    let (r, free) = ready_channel(&host, &released, config);
    let method = c"/svc/M";
    let request = sy_pick_request {
        method: method.as_ptr(),
        method_len: 6,
        request_hash: 7,
        has_request_hash: true,
        wait_for_ready: false,
        timeout_ms: 0,
    };
    let pick = kept_pick(r, &request);
    assert_eq!(pick.user_data, ptr::from_ref(&released).cast_mut().cast());
    // SAFETY: `address_len` bytes, valid until the next pick or done.
    let address =
        unsafe { std::slice::from_raw_parts(pick.address.cast::<u8>(), pick.address_len) };
    assert_eq!(address, b"127.0.0.1:443");
    let metrics = [
        sy_load_metric {
            name: c"cpu_utilization".as_ptr(),
            value: 0.25,
        },
        sy_load_metric {
            name: c"qps".as_ptr(),
            value: 40.0,
        },
    ];
    // A bad code leaves the pick as it was; the repeat with a good one
    // finishes it, and a third finds nothing to finish.
    assert_eq!(
        sy_reader_done(r, 17, 5, ptr::null(), 0),
        sy_status::SY_INVALID_ARGUMENT
    );
    ok(sy_reader_done(r, 14, 5_000, metrics.as_ptr(), 2));
    assert_eq!(
        sy_reader_done(r, 0, 0, ptr::null(), 0),
        sy_status::SY_INVALID_ARGUMENT
    );
    // A pick left unfinished is reported CANCELLED by the reader's next
    // pick; the last one, by the reader's free.
    kept_pick(r, ptr::null());
    kept_pick(r, ptr::null());
    ok(sy_reader_done(r, 0, 9, ptr::null(), 0));
    kept_pick(r, ptr::null());
    free();
    let unavailable = Some("UNAVAILABLE".to_string());
    let dropped = Some("pick dropped without done".to_string());
    assert_eq!(
        *outcomes.0.lock().unwrap(),
        [
            ("outer", unavailable.clone()),
            ("inner", unavailable),
            ("outer", dropped.clone()),
            ("inner", dropped.clone()),
            ("outer", None),
            ("inner", None),
            ("outer", dropped.clone()),
            ("inner", dropped),
        ]
    );
    assert_eq!(
        *outcomes.1.lock().unwrap(),
        [
            heard(
                Code::Unavailable,
                5_000,
                &[("cpu_utilization", 0.25), ("qps", 40.0)]
            ),
            heard(Code::Cancelled, 0, &[]),
            heard(Code::Ok, 9, &[]),
            heard(Code::Cancelled, 0, &[]),
        ]
    );
    assert_eq!(released.load(Ordering::SeqCst), 1, "released exactly once");
}

/// A policy's code that panics under a pick or a done through the header
/// (a picker, a done hook) makes that call SY_PANIC: the panic does not
/// cross into C (which would abort the process).
#[test]
fn a_policy_panicking_under_a_pick_or_a_done_is_sy_panic() {
    let (_, config) = hook_policy("ffi_token_hook_panics");
    let config = config.as_c_str();
    let host = Host::default();
    let released = AtomicUsize::new(0);
    let (r, free) = ready_channel(&host, &released, config);
    let panic = c"/panic";
    let fine = c"/svc/M";
    let mut result = zeroed_result();
    let pick = |method: &CStr, result: &mut sy_pick_result| {
        sy_pick(
            r,
            method.as_ptr(),
            method.to_bytes().len(),
            ptr::null(),
            0,
            false,
            result,
        )
    };
    let panicked = |s: sy_status| {
        assert_eq!(s, sy_status::SY_PANIC);
        assert!(
            super::tls::last_error().contains("panicked"),
            "{}",
            super::tls::last_error()
        );
    };
    // The picker: sy_pick and sy_reader_pick.
    panicked(pick(panic, &mut result));
    let request = |method: &CStr| sy_pick_request {
        method: method.as_ptr(),
        method_len: method.to_bytes().len(),
        request_hash: 0,
        has_request_hash: false,
        wait_for_ready: false,
        timeout_ms: 0,
    };
    let mut out = sy_borrowed_pick {
        subchannel_id: 0,
        address: ptr::null(),
        address_len: 0,
        user_data: ptr::null_mut(),
    };
    panicked(sy_reader_pick(r, &request(panic), &mut out));
    // The done hook: sy_pick_done with and without load, sy_reader_done.
    ok(pick(fine, &mut result));
    panicked(sy_pick_done(&mut result, 0, 1, ptr::null(), 0));
    ok(pick(fine, &mut result));
    let metric = sy_load_metric {
        name: c"qps".as_ptr(),
        value: 1.0,
    };
    panicked(sy_pick_done(&mut result, 0, 1, &metric, 1));
    ok(sy_reader_pick(r, &request(fine), &mut out));
    panicked(sy_reader_done(r, 0, 1, ptr::null(), 0));
    free();
    assert_eq!(released.load(Ordering::SeqCst), 1, "released exactly once");
}

#[test]
fn a_kept_rotation_pick_is_done_once() {
    let host = Host::default();
    let released = AtomicUsize::new(0);
    let config = c"{\"loadBalancingConfig\":[{\"round_robin\":{}}]}";
    let (r, free) = ready_channel(&host, &released, config);
    assert_eq!(
        sy_reader_done(r, 0, 0, ptr::null(), 0),
        sy_status::SY_INVALID_ARGUMENT,
        "nothing picked yet"
    );
    // NULL request: the hit path once the first pick copied the rotation.
    for _ in 0..3 {
        let pick = kept_pick(r, ptr::null());
        assert_eq!(pick.user_data, ptr::from_ref(&released).cast_mut().cast());
        ok(sy_reader_done(r, 0, 0, ptr::null(), 0));
        assert_eq!(
            sy_reader_done(r, 0, 0, ptr::null(), 0),
            sy_status::SY_INVALID_ARGUMENT
        );
    }
    // Mixed with a token pick on the same reader: each finishes its own
    // (the token pick outlives the kept one; the other way round the kept
    // pick would end at the token pick).
    let mut result = token_pick(r);
    kept_pick(r, ptr::null());
    ok(sy_reader_done(r, 0, 0, ptr::null(), 0));
    ok(sy_pick_done(&mut result, 0, 0, ptr::null(), 0));
    free();
    assert_eq!(released.load(Ordering::SeqCst), 1, "released exactly once");
}

#[test]
fn a_kept_pick_refuses_bad_input() {
    let host = Host::default();
    let released = AtomicUsize::new(0);
    let config = c"{\"loadBalancingConfig\":[{\"round_robin\":{}}]}";
    let (r, free) = ready_channel(&host, &released, config);
    let mut out = MaybeUninit::<sy_borrowed_pick>::uninit();
    assert_eq!(
        sy_reader_pick(ptr::null_mut(), ptr::null(), out.as_mut_ptr()),
        sy_status::SY_NULL_PARAMETER
    );
    assert_eq!(
        sy_reader_pick(r, ptr::null(), ptr::null_mut()),
        sy_status::SY_NULL_PARAMETER
    );
    let bad = [0xffu8, 0xfe];
    let request = sy_pick_request {
        method: bad.as_ptr().cast(),
        method_len: 2,
        request_hash: 0,
        has_request_hash: false,
        wait_for_ready: false,
        timeout_ms: 0,
    };
    assert_eq!(
        sy_reader_pick(r, &request, out.as_mut_ptr()),
        sy_status::SY_INVALID_UTF8
    );
    let request = sy_pick_request {
        method_len: usize::MAX,
        ..request
    };
    assert_eq!(
        sy_reader_pick(r, &request, out.as_mut_ptr()),
        sy_status::SY_INVALID_ARGUMENT
    );
    assert_eq!(
        sy_reader_done(ptr::null_mut(), 0, 0, ptr::null(), 0),
        sy_status::SY_NULL_PARAMETER
    );
    kept_pick(r, ptr::null());
    // Bad metrics leave the pick to be finished properly.
    assert_eq!(
        sy_reader_done(r, 0, 0, ptr::null(), 1),
        sy_status::SY_NULL_PARAMETER
    );
    let many = [sy_load_metric {
        name: c"qps".as_ptr(),
        value: 1.0,
    }; SY_MAX_LOAD_METRICS + 1];
    assert_eq!(
        sy_reader_done(r, 0, 0, many.as_ptr(), many.len()),
        sy_status::SY_INVALID_ARGUMENT
    );
    let unnamed = sy_load_metric {
        name: ptr::null(),
        value: 1.0,
    };
    assert_eq!(
        sy_reader_done(r, 0, 0, &unnamed, 1),
        sy_status::SY_NULL_PARAMETER
    );
    ok(sy_reader_done(r, 0, 0, many.as_ptr(), 2));
    free();
}

/// A hash set without `has_request_hash` is refused as `sy_call_options`
/// refuses it, even by round_robin, whose rotation reads no hash (the hit
/// path must not take it): the caller meant a hash and would get none.
#[test]
fn a_kept_pick_refuses_a_request_hash_without_its_flag() {
    let host = Host::default();
    let released = AtomicUsize::new(0);
    let config = c"{\"loadBalancingConfig\":[{\"round_robin\":{}}]}";
    let (r, free) = ready_channel(&host, &released, config);
    // The rotation is current: a plain request takes the hit path.
    let first = kept_pick(r, ptr::null());
    let unflagged = sy_pick_request {
        method: ptr::null(),
        method_len: 0,
        request_hash: 42,
        has_request_hash: false,
        wait_for_ready: false,
        timeout_ms: 0,
    };
    let mut out = MaybeUninit::<sy_borrowed_pick>::uninit();
    assert_eq!(
        sy_reader_pick(r, &unflagged, out.as_mut_ptr()),
        sy_status::SY_INVALID_ARGUMENT
    );
    let mut buf = [0u8; 256];
    let n = sy_last_error(buf.as_mut_ptr().cast(), buf.len()).min(buf.len() - 1);
    let message = String::from_utf8_lossy(&buf[..n]);
    assert!(message.contains("has_request_hash"), "{message}");
    // Flagged, the same hash is an ordinary pick; a zero hash unflagged is
    // no hash at all.
    let flagged = sy_pick_request {
        has_request_hash: true,
        ..unflagged
    };
    assert_eq!(kept_pick(r, &flagged).subchannel_id, first.subchannel_id);
    let zero = sy_pick_request {
        request_hash: 0,
        ..unflagged
    };
    assert_eq!(kept_pick(r, &zero).subchannel_id, first.subchannel_id);
    free();
}

/// The subchannel goes down and comes back: the hook policy publishes a
/// new picker.
fn republish(ch: *mut sy_channel, id: u64) {
    for state in [sy_state::SY_STATE_IDLE, sy_state::SY_STATE_READY] {
        ok(sy_channel_report_subconn_state(
            ch,
            id,
            state as u32,
            ptr::null(),
        ));
        ok(sy_channel_sync(ch));
    }
}

/// A kept pick holds nothing: its hooks live in the table the reader
/// caches. When the reader's next pick moves it to a newer table (and the
/// old one is freed at once), the unfinished pick's hooks must have heard
/// of it first; under Miri a report made after the move is a use after
/// free.
#[test]
fn a_kept_pick_is_reported_before_its_table_goes() {
    let (outcomes, config) = hook_policy("ffi_token_hook_table");
    let config = config.as_c_str();
    let host = Host::default();
    let released = AtomicUsize::new(0);
    let (r, ch, id, free) = ready_channel_and_subchannel(&host, &released, config);
    kept_pick(r, ptr::null());
    // The policy publishes a new picker (and the loop drops the old one,
    // which only this reader's cache still keeps).
    let dropped = || outcomes.2.load(Ordering::SeqCst);
    let before = dropped();
    republish(ch, id);
    assert_eq!(dropped(), before, "the reader's cache keeps the old picker");
    kept_pick(r, ptr::null());
    assert_eq!(dropped(), before + 1, "the pick moved to the new picker");
    ok(sy_reader_done(r, 0, 0, ptr::null(), 0));
    // And the same through a refresh.
    kept_pick(r, ptr::null());
    republish(ch, id);
    ok(sy_reader_refresh(r));
    assert_eq!(
        sy_reader_done(r, 0, 0, ptr::null(), 0),
        sy_status::SY_INVALID_ARGUMENT,
        "the refresh dropped the pick"
    );
    let codes: Vec<Code> = outcomes.1.lock().unwrap().iter().map(|h| h.code).collect();
    assert_eq!(codes, [Code::Cancelled, Code::Ok, Code::Cancelled]);
    free();
}

/// A channel under `config` over `addresses` (no user data), nothing
/// reported READY yet; returns a reader, the channel, and the free closure.
fn channel_over(
    host: &Host,
    config: &CStr,
    addresses: &[&CStr],
) -> (*mut sy_reader, *mut sy_channel, impl FnOnce()) {
    let list: Vec<sy_address> = addresses
        .iter()
        .map(|a| sy_address {
            address: a.as_ptr(),
            weight: 0,
            user_data: ptr::null_mut(),
        })
        .collect();
    host_channel(host, config, None, &list)
}

fn ready(ch: *mut sy_channel, id: u64) {
    ok(sy_channel_report_subconn_state(
        ch,
        id,
        sy_state::SY_STATE_READY as u32,
        ptr::null(),
    ));
    ok(sy_channel_sync(ch));
}

/// least_request through the header's hit paths, which run its table
/// inline: a kept pick's done (or its drop by the next pick) and a token
/// pick's done each take its one off the endpoint's in-flight counter.
/// Every pick below lands on the only READY endpoint; had any kind leaked,
/// that endpoint would be left with hundreds in flight, and once a second
/// one is READY every held pick would go there.
#[test]
fn least_request_picks_through_the_header_take_their_one_off() {
    let host = Host::default();
    let config =
        c"{\"loadBalancingConfig\":[{\"least_request_experimental\":{\"choiceCount\":10}}]}";
    let (r, ch, free) = channel_over(&host, config, &[c"127.0.0.1:443", c"127.0.0.2:443"]);
    let ids = host.0.lock().unwrap().clone();
    assert_eq!(ids.len(), 2, "both endpoints connect");
    ready(ch, ids[0]);
    for _ in 0..100 {
        // Done, and dropped by the next pick.
        assert_eq!(kept_pick(r, ptr::null()).subchannel_id, ids[0]);
        ok(sy_reader_done(r, 0, 0, ptr::null(), 0));
        assert_eq!(kept_pick(r, ptr::null()).subchannel_id, ids[0]);
        let mut result = token_pick(r);
        assert_eq!(result.subchannel_id, ids[0]);
        ok(sy_pick_done(&mut result, 0, 0, ptr::null(), 0));
    }
    ok(sy_reader_refresh(r));
    ready(ch, ids[1]);
    let mut held: Vec<sy_pick_result> = (0..40).map(|_| zeroed_result()).collect();
    for res in held.iter_mut() {
        ok(sy_pick(r, ptr::null(), 0, ptr::null(), 0, false, res));
    }
    let first = held.iter().filter(|p| p.subchannel_id == ids[0]).count();
    assert!(
        first.abs_diff(40 - first) <= 4,
        "nothing left in flight: held picks split evenly ({first} of 40 on the first)"
    );
    for res in held.iter_mut() {
        ok(sy_pick_done(res, 0, 0, ptr::null(), 0));
    }
    free();
}

/// ring_hash through the header's hit paths, which find READY endpoints
/// from the request hash inline: each hash lands on the same endpoint
/// through the kept pick, the token pick and a pick with a method (which
/// checks the method first).
#[test]
fn ring_hash_picks_through_the_header_follow_the_hash() {
    let host = Host::default();
    let config = c"{\"loadBalancingConfig\":[{\"ring_hash_experimental\":{}}]}";
    let (r, ch, free) = channel_over(&host, config, &[c"127.0.0.1:443", c"127.0.0.2:443"]);
    let request = |hash: u64| sy_pick_request {
        method: ptr::null(),
        method_len: 0,
        request_hash: hash,
        has_request_hash: true,
        wait_for_ready: false,
        timeout_ms: 0,
    };
    // Picks connect what they land on: report each READY until both are.
    let hashes: Vec<u64> = (1..=64u64)
        .map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    for _ in 0..4 {
        for h in &hashes {
            let mut out = sy_borrowed_pick {
                subchannel_id: 0,
                address: ptr::null(),
                address_len: 0,
                user_data: ptr::null_mut(),
            };
            if sy_reader_pick(r, &request(*h), &mut out) == sy_status::SY_OK {
                ok(sy_reader_done(r, 0, 0, ptr::null(), 0));
            }
        }
        ok(sy_channel_sync(ch));
        for id in host.0.lock().unwrap().clone() {
            ready(ch, id);
        }
    }
    let method = c"/echo.Echo/Unary";
    for h in &hashes {
        let kept = kept_pick(r, &request(*h)).subchannel_id;
        ok(sy_reader_done(r, 0, 0, ptr::null(), 0));
        let mut token = zeroed_result();
        ok(sy_pick(r, ptr::null(), 0, h, 0, false, &mut token));
        ok(sy_pick_done(&mut token, 0, 0, ptr::null(), 0));
        let mut general = zeroed_result();
        ok(sy_pick(
            r,
            method.as_ptr(),
            method.to_bytes().len(),
            h,
            0,
            false,
            &mut general,
        ));
        ok(sy_pick_done(&mut general, 0, 0, ptr::null(), 0));
        assert_eq!(
            (kept, token.subchannel_id),
            (general.subchannel_id, general.subchannel_id)
        );
    }
    free();
}

fn outcome(grpc_code: u32, latency_ns: u64, metrics: &[sy_load_metric]) -> sy_outcome {
    sy_outcome {
        grpc_code,
        latency_ns,
        metrics: if metrics.is_empty() {
            ptr::null()
        } else {
            metrics.as_ptr()
        },
        metrics_len: metrics.len(),
    }
}

/// `sy_reader_next` through the general way (a pick with hooks): each call
/// tells the hooks the outcome of the pick before it, with its latency and
/// load, then picks. An error in any argument, the outcome's or the
/// request's, reports nothing and leaves the kept pick to be finished.
#[test]
fn next_reports_the_kept_pick_then_picks() {
    let (outcomes, config) = hook_policy("ffi_token_hook_next");
    let config = config.as_c_str();
    let host = Host::default();
    let released = AtomicUsize::new(0);
    let (r, id, free) = {
        let (r, _, id, free) = ready_channel_and_subchannel(&host, &released, config);
        (r, id, free)
    };
    let mut out = MaybeUninit::<sy_borrowed_pick>::uninit();
    let out = out.as_mut_ptr();
    let next = |done: Option<&sy_outcome>, request: *const sy_pick_request| {
        sy_reader_next(r, done.map_or(ptr::null(), ptr::from_ref), request, out)
    };
    // No pick yet: a done is refused, NULL picks.
    assert_eq!(
        next(Some(&outcome(0, 0, &[])), ptr::null()),
        sy_status::SY_INVALID_ARGUMENT
    );
    ok(next(None, ptr::null()));
    let metrics = [
        sy_load_metric {
            name: c"cpu_utilization".as_ptr(),
            value: 0.5,
        },
        sy_load_metric {
            name: c"qps".as_ptr(),
            value: 10.0,
        },
    ];
    let unnamed = [sy_load_metric {
        name: ptr::null(),
        value: 1.0,
    }];
    let many = [metrics[1]; SY_MAX_LOAD_METRICS + 1];
    let bad = [0xffu8, 0xfe];
    let bad_method = sy_pick_request {
        method: bad.as_ptr().cast(),
        method_len: 2,
        request_hash: 0,
        has_request_hash: false,
        wait_for_ready: false,
        timeout_ms: 0,
    };
    let unflagged = sy_pick_request {
        method: ptr::null(),
        method_len: 0,
        request_hash: 42,
        ..bad_method
    };
    for (done, request, want) in [
        (
            outcome(17, 0, &[]),
            ptr::null(),
            sy_status::SY_INVALID_ARGUMENT,
        ),
        (
            outcome(0, 0, &many),
            ptr::null(),
            sy_status::SY_INVALID_ARGUMENT,
        ),
        (
            outcome(0, 0, &unnamed),
            ptr::null(),
            sy_status::SY_NULL_PARAMETER,
        ),
        (
            sy_outcome {
                metrics: ptr::null(),
                ..outcome(0, 0, &metrics)
            },
            ptr::null(),
            sy_status::SY_NULL_PARAMETER,
        ),
        (
            outcome(0, 0, &[]),
            &raw const bad_method,
            sy_status::SY_INVALID_UTF8,
        ),
        (
            outcome(0, 0, &[]),
            &raw const unflagged,
            sy_status::SY_INVALID_ARGUMENT,
        ),
    ] {
        assert_eq!(next(Some(&done), request), want);
    }
    assert!(outcomes.1.lock().unwrap().is_empty(), "nothing reported");
    ok(next(Some(&outcome(14, 5_000, &metrics)), ptr::null()));
    // SAFETY: written by the successful call.
    assert_eq!(unsafe { (*out).subchannel_id }, id);
    ok(next(Some(&outcome(0, 9, &[])), ptr::null()));
    ok(sy_reader_done(r, 4, 7, ptr::null(), 0));
    // Nothing left to finish.
    assert_eq!(
        next(Some(&outcome(0, 0, &[])), ptr::null()),
        sy_status::SY_INVALID_ARGUMENT
    );
    assert_eq!(
        sy_reader_next(ptr::null_mut(), ptr::null(), ptr::null(), out),
        sy_status::SY_NULL_PARAMETER
    );
    assert_eq!(
        sy_reader_next(r, &outcome(0, 0, &[]), ptr::null(), ptr::null_mut()),
        sy_status::SY_NULL_PARAMETER
    );
    free();
    assert_eq!(
        *outcomes.1.lock().unwrap(),
        [
            heard(
                Code::Unavailable,
                5_000,
                &[("cpu_utilization", 0.5), ("qps", 10.0)]
            ),
            heard(Code::Ok, 9, &[]),
            heard(Code::DeadlineExceeded, 7, &[]),
        ]
    );
    assert_eq!(released.load(Ordering::SeqCst), 1, "released exactly once");
}

/// The snapshot's count of failed calls, over every subchannel.
fn failed_calls(ch: *mut sy_channel) -> u64 {
    let snapshot = crate::channel::channel_ref(ch)
        .unwrap()
        .channel
        .snapshot()
        .unwrap();
    snapshot.subchannels.iter().map(|s| s.calls_failed).sum()
}

/// `sy_reader_next` on its hit path (round_robin's rotation: no hooks)
/// follows the same rotation as `sy_reader_pick` + `sy_reader_done`, and
/// each outcome counts (a failed code in the snapshot); a pick that fails
/// after the outcome is reported leaves no kept pick.
#[test]
fn next_on_the_rotation_picks_as_pick_and_done_do() {
    let host = Host::default();
    let config = c"{\"loadBalancingConfig\":[{\"round_robin\":{}}]}";
    let (r, ch, free) = channel_over(
        &host,
        config,
        &[c"127.0.0.1:443", c"127.0.0.2:443", c"127.0.0.3:443"],
    );
    let ids = host.0.lock().unwrap().clone();
    assert_eq!(ids.len(), 3);
    for id in &ids {
        ready(ch, *id);
    }
    let mut out = MaybeUninit::<sy_borrowed_pick>::uninit();
    let mut by_next = Vec::new();
    ok(sy_reader_next(
        r,
        ptr::null(),
        ptr::null(),
        out.as_mut_ptr(),
    ));
    for i in 0..30u32 {
        // SAFETY: written by the successful call before.
        by_next.push(unsafe { out.assume_init_ref() }.subchannel_id);
        // Every third fails (UNAVAILABLE).
        let code = if i % 3 == 0 { 14 } else { 0 };
        ok(sy_reader_next(
            r,
            &outcome(code, 1, &[]),
            ptr::null(),
            out.as_mut_ptr(),
        ));
    }
    ok(sy_reader_done(r, 0, 0, ptr::null(), 0));
    assert_eq!(failed_calls(ch), 10);
    let by_pair: Vec<u64> = (0..30)
        .map(|_| {
            let id = kept_pick(r, ptr::null()).subchannel_id;
            ok(sy_reader_done(r, 0, 0, ptr::null(), 0));
            id
        })
        .collect();
    for seq in [&by_next, &by_pair] {
        for id in &ids {
            assert_eq!(seq.iter().filter(|x| *x == id).count(), 10, "{seq:?}");
        }
        assert!(seq
            .windows(3)
            .all(|w| w[0] != w[1] && w[1] != w[2] && w[0] != w[2]));
    }
    // Every subchannel down: the outcome is reported, the pick fails.
    kept_pick(r, ptr::null());
    for id in &ids {
        ok(sy_channel_report_subconn_state(
            ch,
            *id,
            sy_state::SY_STATE_TRANSIENT_FAILURE as u32,
            c"down".as_ptr(),
        ));
    }
    ok(sy_channel_sync(ch));
    // (Whether the channel says so yet or still tries them, nothing is
    // READY: no subchannel to pick, or UNAVAILABLE.)
    let status = sy_reader_next(r, &outcome(14, 1, &[]), ptr::null(), out.as_mut_ptr());
    assert!(
        matches!(
            status,
            sy_status::SY_NO_SUBCHANNEL | sy_status::SY_UNAVAILABLE
        ),
        "{status:?}"
    );
    assert_eq!(failed_calls(ch), 11);
    assert_eq!(
        sy_reader_done(r, 0, 0, ptr::null(), 0),
        sy_status::SY_INVALID_ARGUMENT,
        "no kept pick after a failed pick"
    );
    free();
}
