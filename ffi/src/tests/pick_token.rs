//! `sy_pick` / `sy_pick_done` from Rust, through the result's token, so that
//! Miri (scripts/sanitizers.sh) checks what the token carries: the
//! subchannel, the hold and a chain of two done hooks (`dyn` pointers,
//! vtables included), written by `sy_pick`, copied bitwise as C copies a struct, and
//! turned back into a pick by `sy_pick_done` on the copy.

use crate::callback::sy_host_transport;
use crate::*;
use std::ffi::{c_char, c_void, CStr};
use std::mem::{size_of, MaybeUninit};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use switchyard::{
    registry, Balancer, Builder, ClientConn, ClientConnState, ConnectivityState, DoneHook,
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
struct Outcomes(Mutex<Vec<(&'static str, Option<String>)>>);

struct Hook(Arc<Outcomes>, &'static str);

impl DoneHook for Hook {
    fn done(&self, _: &SubConn, info: &DoneInfo<'_>) {
        let error = info.error.map(str::to_string);
        self.0 .0.lock().unwrap().push((self.1, error));
    }
}

struct Hooked {
    sc: Arc<SubConn>,
    inner: Hook,
    outer: Hook,
}

impl Picker for Hooked {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
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
        if let (ConnectivityState::Ready, Some(sc)) = (s.state, &self.sc) {
            let picker = Hooked {
                sc: sc.clone(),
                inner: Hook(self.outcomes.clone(), "inner"),
                outer: Hook(self.outcomes.clone(), "outer"),
            };
            cc.update_state(ConnectivityState::Ready, Box::new(picker));
        }
    }
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

struct HookBuilder(Arc<Outcomes>);

impl Builder for HookBuilder {
    fn name(&self) -> &str {
        "ffi_token_hook"
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(HookPolicy {
            outcomes: self.0.clone(),
            sc: None,
        })
    }
}

/// A channel over one READY host-managed address under `config` (its user
/// data: `released`), with a reader; freed (reader, channel, runtime) by the
/// returned closure.
fn ready_channel(
    host: &Host,
    released: &AtomicUsize,
    config: &CStr,
) -> (*mut sy_reader, impl FnOnce()) {
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
        Some(release),
        &mut ch,
    ));
    let address = sy_address {
        address: c"127.0.0.1:443".as_ptr(),
        weight: 0,
        user_data: ptr::from_ref(released).cast_mut().cast(),
    };
    ok(sy_channel_update_addresses(ch, &address, 1));
    ok(sy_channel_sync(ch));
    let id = *host.0.lock().unwrap().last().expect("a connect");
    ok(sy_channel_report_subconn_state(
        ch,
        id,
        sy_state::SY_STATE_READY as u32,
        ptr::null(),
    ));
    ok(sy_channel_sync(ch));
    let mut r = ptr::null_mut();
    ok(sy_reader_new(ch, &mut r));
    (r, move || {
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

fn zeroed_result() -> sy_pick_result {
    // SAFETY: all-zero is a valid (not live) sy_pick_result: integers and
    // NULL pointers.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

#[test]
fn a_hooked_pick_survives_a_bitwise_copy_of_its_result() {
    let outcomes = Arc::new(Outcomes::default());
    registry::register(Arc::new(HookBuilder(outcomes.clone())));
    let host = Host::default();
    let released = AtomicUsize::new(0);
    let config = c"{\"loadBalancingConfig\":[{\"ffi_token_hook\":{}}]}";
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
    // Each hook once per pick, innermost first.
    let unavailable = Some("UNAVAILABLE".to_string());
    assert_eq!(
        *outcomes.0.lock().unwrap(),
        [
            ("inner", unavailable.clone()),
            ("outer", unavailable),
            ("inner", None),
            ("outer", None)
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
