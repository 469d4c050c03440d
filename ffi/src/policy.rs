//! Load-balancing policies written in C: a `Builder`/`Balancer` that forwards
//! to C callbacks, the `sy_cc` they call back through, and C pickers.
//!
//! Soundness, in short:
//! - `sy_cc` lives in the balancer's heap allocation and holds a pointer to the
//!   core's `ClientConn` only while one of its callbacks runs on the loop
//!   thread. A `sy_cc_*` call is accepted only if the calling thread is inside
//!   that balancer's callback (a thread-local names the active `sy_cc`) and no
//!   other `sy_cc_*` call is in progress (no two `&mut ClientConn` at once);
//!   anything else gets SY_WRONG_CONTEXT.
//! - A C picker returns an index into the subchannel list given when it was
//!   published. The Rust picker owns an `Arc` of each listed subchannel, so the
//!   subchannel it hands out lives as long as the table (and thus every pick
//!   made from it). Out-of-range indices and unknown decisions fail the pick.
//! - The picker's `free` runs from the table's `Drop`: once no reader and no
//!   pick can reach it, on whichever thread lets go last.
//! - What a `sy_balancer_waker` posts waits in the balancer's queue (an
//!   `Arc` the waker shares, never a pointer to the balancer) and runs in
//!   its `work` callback, as any other callback does.

use crate::callback::CUserData;
use crate::error::Error;
use crate::macros::{boundary, in_callback};
use crate::status::{state_from_c, sy_status};
use crate::strings::{c_text, opt_str_arg, slice_arg, str_arg};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_void};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use switchyard::{
    Address, Balancer, Builder, ClientConn, ClientConnState, Code, ConnectivityState, DoneHook,
    DoneHooks, DoneInfo, PickInfo, PickLocal, PickResult, Picker, Status, SubConn, SubConnId,
    SubConnState, WorkScheduler,
};

/// The channel as a C policy sees it during one of its callbacks. Opaque;
/// owned by the library. The pointer a callback receives is the same for the
/// whole life of that balancer, but `sy_cc_*` calls are accepted only on the
/// loop thread while one of this balancer's callbacks is running
/// (SY_WRONG_CONTEXT otherwise).
pub struct sy_cc {
    cc: Cell<Option<NonNull<dyn ClientConn + 'static>>>,
    busy: Cell<bool>,
    subconns: RefCell<HashMap<u64, Arc<SubConn>>>,
    /// Of `subconns`, those shut down whose SHUTDOWN has not come yet:
    /// refused as unknown meanwhile (a picker must not hand them out).
    shut: RefCell<std::collections::HashSet<u64>>,
    /// The latest address list, for `sy_cc_new_subconn`'s index.
    addresses: RefCell<Vec<Address>>,
    /// What its wakers post (see `balancer_waker`).
    wakeups: Arc<Wakeups>,
}

impl sy_cc {
    pub(crate) fn wakeups(&self) -> &Arc<Wakeups> {
        &self.wakeups
    }
}

thread_local! {
    static ACTIVE: Cell<*const sy_cc> = const { Cell::new(ptr::null()) };
}

/// What a C picker decided (the value its pick callback returns).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sy_pick_decision {
    /// Use the subchannel at `*out_index` of the picker's list.
    SY_PICK_COMPLETE = 0,
    /// Nothing usable yet: wait for the next picker.
    SY_PICK_QUEUE = 1,
    /// Fail the RPC with the picker's error (unless wait-for-ready).
    SY_PICK_FAIL = 2,
    /// Fail the RPC with the picker's error, even wait-for-ready.
    SY_PICK_DROP = 3,
}

/// What a pick callback learns about the RPC. Valid for the call only.
#[repr(C)]
pub struct sy_pick_args {
    /// The method name: `method_len` bytes of UTF-8, not NUL-terminated.
    pub method: *const c_char,
    pub method_len: usize,
    /// The request hash, if `has_request_hash`.
    pub request_hash: u64,
    pub has_request_hash: bool,
    /// A fresh random number from the calling reader's own generator.
    pub random: u64,
}

/// Picks for one RPC: return a `sy_pick_decision` and, for
/// SY_PICK_COMPLETE, the index into the picker's `subchannels` in
/// `*out_index`. Called on RPC threads (inside `sy_pick` / `sy_call_unary`),
/// concurrently from many threads on the same `ctx`: it must be thread-safe,
/// must not block, and should not write shared memory (it is on every RPC's
/// path).
///
/// What it may call: the reader that is running it is off limits, since the
/// pick is using it: `sy_pick`, `sy_reader_refresh`, `sy_reader_free` and
/// `sy_call_unary` on that reader return (or, for `sy_reader_free`, record)
/// SY_WRONG_CONTEXT and do nothing. Non-blocking calls on other objects are
/// fine: `sy_pick` with `SY_NO_WAIT` on another reader (a policy that delegates
/// to a child channel's picker does this), `sy_pick_done`, `sy_reader_new`,
/// `sy_channel_update_addresses`, `sy_channel_report_*`. Blocking ones
/// (`sy_pick` with a timeout, `sy_call_unary`, `sy_channel_close`, `_sync`,
/// `_wait_for_state_change`) return SY_WRONG_CONTEXT. It must not free a
/// channel or a runtime.
pub type sy_picker_pick_fn = Option<
    unsafe extern "C" fn(ctx: *mut c_void, args: *const sy_pick_args, out_index: *mut usize) -> u32,
>;

/// Hears a finished RPC that this picker picked: the subchannel, the outcome
/// (`error`: NULL/0 on success, else `error_len` bytes, not NUL-terminated)
/// and latency. Called from any thread that calls `sy_pick_done`,
/// concurrently; must not block (blocking `sy_*` calls return
/// SY_WRONG_CONTEXT). `sy_picker_done_info_fn` hears more (the gRPC code,
/// the load metrics); when a picker sets both, only that one is called.
pub type sy_picker_done_fn = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        subchannel_id: u64,
        error: *const c_char,
        error_len: usize,
        latency_ns: u64,
    ),
>;

/// A server-reported load metric as a done callback sees it (ORCA-style:
/// "cpu_utilization", "qps", "eps", or a named one). `name` is `name_len`
/// bytes of UTF-8, NOT NUL-terminated. Valid for the call only.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sy_done_metric {
    pub name: *const c_char,
    pub name_len: usize,
    pub value: f64,
}

/// A finished RPC, as a C picker's `done_info` callback hears it: what a
/// Rust policy's done hook gets (`DoneInfo`). Valid for the call only.
#[repr(C)]
pub struct sy_done_info {
    /// The subchannel the RPC was sent on.
    pub subchannel_id: u64,
    /// The RPC's gRPC status code (0 = OK). A pick dropped without done is
    /// CANCELLED (1).
    pub grpc_code: u32,
    /// NULL/0 on success; else a description, `error_len` bytes, not
    /// NUL-terminated.
    pub error: *const c_char,
    pub error_len: usize,
    /// How long the RPC took.
    pub latency_ns: u64,
    /// The load metrics the server reported (NULL/0 for none).
    pub metrics: *const sy_done_metric,
    pub metrics_len: usize,
}

/// Hears a finished RPC that this picker picked, with everything a Rust
/// policy's done hook gets: the gRPC code, latency and load metrics (enough
/// for a weighted or outlier-ejecting policy). Called as
/// `sy_picker_done_fn` is: from any thread that finishes the RPC
/// (`sy_pick_done`, `sy_reader_done`, the library's own calls),
/// concurrently; must not block.
pub type sy_picker_done_info_fn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, info: *const sy_done_info)>;

/// Frees a picker's ctx, once, when no reader and no pick can reach the
/// picker any more: on whichever thread lets go last (the loop, an RPC thread
/// in `sy_pick`/`sy_pick_done`/`sy_reader_refresh`/`sy_reader_free`, or one
/// freeing a channel). The reader letting go (if any) is off limits and
/// blocking calls are refused, as for `sy_picker_pick_fn`.
pub type sy_picker_free_fn = Option<unsafe extern "C" fn(ctx: *mut c_void)>;

/// A picker written in C, published with `sy_cc_update_state`. The struct is
/// copied; `ctx` is owned by the library from a successful publish on.
#[repr(C)]
pub struct sy_picker {
    pub ctx: *mut c_void,
    /// Required.
    pub pick: sy_picker_pick_fn,
    /// Optional.
    pub done: sy_picker_done_fn,
    /// Optional.
    pub free: sy_picker_free_fn,
    /// The subchannels this picker may return, by index (ids from
    /// `sy_cc_new_subconn`; copied). May be NULL when the length is 0.
    pub subchannels: *const u64,
    pub subchannels_len: usize,
    /// For SY_PICK_FAIL / SY_PICK_DROP: a gRPC code (0 means UNAVAILABLE;
    /// codes gRPC reserves for the control plane become INTERNAL) and a
    /// NUL-terminated message (NULL for a generic one). Copied.
    pub error_code: u32,
    pub error_message: *const c_char,
    /// Optional: the done callback that hears the code, latency and load
    /// (`sy_picker_done_info_fn`); when set, `done` is not called. Last, so
    /// that a picker zero-initialized before this field existed has none.
    pub done_info: sy_picker_done_info_fn,
}

/// A policy written in C. Every callback except `build` and `free_builder`
/// runs on the loop thread of the channel the balancer belongs to, one at a
/// time per balancer, with the balancer's own pointer (what `build`
/// returned) and the `sy_cc` to call back through. Callbacks must not block.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sy_balancer_callbacks {
    /// Required: a new balancer for one channel; returns its state (may be
    /// NULL). Called on that channel's loop thread; different runtimes may
    /// call it concurrently.
    pub build: Option<unsafe extern "C" fn(builder_ctx: *mut c_void) -> *mut c_void>,
    /// Required: the address list (valid for the call; strings are
    /// NUL-terminated). Create subchannels with `sy_cc_new_subconn(cc, index)`.
    /// Return false to reject the list (the channel re-resolves).
    pub update_addresses: Option<
        unsafe extern "C" fn(
            balancer: *mut c_void,
            cc: *mut sy_cc,
            addresses: *const crate::resolver::sy_address,
            len: usize,
        ) -> bool,
    >,
    /// Required: one of this balancer's subchannels changed state (a
    /// `sy_state`; `error` is NUL-terminated or NULL). SHUTDOWN comes exactly
    /// once per subchannel: after `sy_cc_shutdown_subconn`, or, for those
    /// still open, just before `close`.
    pub subchannel_state: Option<
        unsafe extern "C" fn(
            balancer: *mut c_void,
            cc: *mut sy_cc,
            subchannel_id: u64,
            state: u32,
            error: *const c_char,
        ),
    >,
    /// Optional: the resolver failed (`error` NUL-terminated).
    pub resolver_error:
        Option<unsafe extern "C" fn(balancer: *mut c_void, cc: *mut sy_cc, error: *const c_char)>,
    /// Optional: leave IDLE (reconnect).
    pub exit_idle: Option<unsafe extern "C" fn(balancer: *mut c_void, cc: *mut sy_cc)>,
    /// Optional: the balancer is being replaced or its channel closed; free
    /// `balancer` here. Called exactly once per built balancer, and the last
    /// callback it gets. Subchannels left behind are shut down by the
    /// channel; `sy_cc_new_subconn` is refused here (SY_CLOSED), as gRPC
    /// refuses a closing balancer's new subchannels.
    pub close: Option<unsafe extern "C" fn(balancer: *mut c_void, cc: *mut sy_cc)>,
    /// Optional: frees `builder_ctx` when the registration is replaced and no
    /// channel uses it any more (any thread).
    pub free_builder: Option<unsafe extern "C" fn(builder_ctx: *mut c_void)>,
}

struct CBuilder {
    name: String,
    cbs: sy_balancer_callbacks,
    ctx: *mut c_void,
}

// SAFETY: the header's contract: `build` may run on several loop threads at
// once and `free_builder` on any thread; ctx is only handed to those.
unsafe impl Send for CBuilder {}
// SAFETY: as above.
unsafe impl Sync for CBuilder {}

impl Drop for CBuilder {
    fn drop(&mut self) {
        if let Some(f) = self.cbs.free_builder {
            // SAFETY: the policy's callback, once, with its ctx.
            in_callback(|| unsafe { f(self.ctx) });
        }
    }
}

impl Builder for CBuilder {
    fn name(&self) -> &str {
        &self.name
    }

    fn build(&self) -> Box<dyn Balancer> {
        let ctx = match self.cbs.build {
            // SAFETY: the policy's callback with its builder ctx.
            Some(f) => in_callback(|| unsafe { f(self.ctx) }),
            None => ptr::null_mut(),
        };
        Box::new(CBalancer {
            cbs: self.cbs,
            ctx,
            cc: Box::new(sy_cc {
                cc: Cell::new(None),
                busy: Cell::new(false),
                subconns: RefCell::new(HashMap::new()),
                shut: RefCell::new(Default::default()),
                addresses: RefCell::new(Vec::new()),
                wakeups: Arc::new(Wakeups::new()),
            }),
            closed: false,
            connecting: HashSet::new(),
        })
    }
}

struct CBalancer {
    cbs: sy_balancer_callbacks,
    ctx: *mut c_void,
    cc: Box<sy_cc>,
    closed: bool,
    /// Subchannels last told CONNECTING: the channel repeats it when a
    /// connection is made whose health check has yet to answer (for
    /// pick_first); a C policy hears changes only, as its header says.
    connecting: HashSet<u64>,
}

/// Clears the active `sy_cc` when a callback ends.
struct Active<'a> {
    cc: &'a sy_cc,
    prev: *const sy_cc,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.cc.cc.set(None);
        ACTIVE.with(|a| a.set(self.prev));
    }
}

impl CBalancer {
    /// Runs a C callback with `cc` reachable through this balancer's `sy_cc`.
    fn with_cc<T>(&mut self, cc: &mut dyn ClientConn, f: impl FnOnce(*mut sy_cc) -> T) -> T {
        let p: NonNull<dyn ClientConn + '_> = NonNull::from(cc);
        // SAFETY: only the trait object's lifetime bound is erased. The pointer
        // is stored for the duration of this call and cleared (by `Active`)
        // before the borrow it came from ends.
        let p: NonNull<dyn ClientConn + 'static> = unsafe { std::mem::transmute(p) };
        self.cc.cc.set(Some(p));
        let prev = ACTIVE.with(|a| a.replace(&*self.cc));
        let _active = Active { cc: &self.cc, prev };
        let sycc = (&*self.cc as *const sy_cc).cast_mut();
        in_callback(|| f(sycc))
    }
}

impl Balancer for CBalancer {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let Some(f) = self.cbs.update_addresses else {
            return Ok(());
        };
        let texts: Vec<Vec<u8>> = state.addresses.iter().map(|a| c_text(&a.addr)).collect();
        let views: Vec<crate::resolver::sy_address> = state
            .addresses
            .iter()
            .zip(&texts)
            .map(|(a, t)| crate::resolver::sy_address {
                address: t.as_ptr().cast(),
                weight: a.weight,
                user_data: a
                    .user_data
                    .as_ref()
                    .and_then(|d| d.downcast_ref::<CUserData>())
                    .map_or(ptr::null_mut(), |c| c.ptr),
            })
            .collect();
        *self.cc.addresses.borrow_mut() = state.addresses;
        let ctx = self.ctx;
        // SAFETY: the policy's callback; `views` and `texts` outlive it.
        let accepted = self.with_cc(cc, |sycc| unsafe {
            f(ctx, sycc, views.as_ptr(), views.len())
        });
        if accepted {
            Ok(())
        } else {
            Err("the C policy rejected the address list".into())
        }
    }

    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        if let Some(f) = self.cbs.resolver_error {
            let text = c_text(error);
            let ctx = self.ctx;
            // SAFETY: the policy's callback; `text` outlives it.
            self.with_cc(cc, |sycc| unsafe { f(ctx, sycc, text.as_ptr().cast()) });
        }
    }

    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        if self.closed {
            return;
        }
        let connecting = state.state == ConnectivityState::Connecting;
        if connecting && !self.connecting.insert(sc.0) {
            return;
        }
        if !connecting {
            self.connecting.remove(&sc.0);
        }
        if let Some(f) = self.cbs.subchannel_state {
            let text = state.error.as_deref().map(c_text);
            let err = text.as_ref().map_or(ptr::null(), |t| t.as_ptr().cast());
            let ctx = self.ctx;
            let s = state.state as u32;
            // SAFETY: the policy's callback; `text` outlives it.
            self.with_cc(cc, |sycc| unsafe { f(ctx, sycc, sc.0, s, err) });
        }
        if state.state == ConnectivityState::Shutdown {
            self.cc.subconns.borrow_mut().remove(&sc.0);
            self.cc.shut.borrow_mut().remove(&sc.0);
        }
    }

    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        if let Some(f) = self.cbs.exit_idle {
            let ctx = self.ctx;
            // SAFETY: the policy's callback.
            self.with_cc(cc, |sycc| unsafe { f(ctx, sycc) });
        }
    }

    /// Runs what its wakers posted. Only they ask for a C balancer's work
    /// (its pickers cannot): a request finding nothing (its runs taken by
    /// the call before) is no request to leave IDLE, unlike the default.
    fn work(&mut self, cc: &mut dyn ClientConn) {
        if self.closed {
            return;
        }
        let Some(runs) = self.cc.wakeups.take() else {
            return;
        };
        for run in runs {
            if self.closed {
                break;
            }
            let ctx = self.ctx;
            // SAFETY: on the loop thread, inside this balancer's callback
            // scope, with its own pointer and `sy_cc`.
            self.with_cc(cc, |sycc| unsafe { run.call(ctx, sycc) });
        }
    }

    fn close(&mut self, cc: &mut dyn ClientConn) {
        if self.closed {
            return;
        }
        // Posts from now on are refused; runs still queued go unrun.
        self.cc.wakeups.close();
        // Its subchannels still open go with it: each one's SHUTDOWN first.
        for id in self.open_subconns() {
            if let Some(f) = self.cbs.subchannel_state {
                let ctx = self.ctx;
                let s = ConnectivityState::Shutdown as u32;
                // SAFETY: the policy's callback.
                self.with_cc(cc, |sycc| unsafe { f(ctx, sycc, id, s, ptr::null()) });
            }
        }
        self.closed = true;
        if let Some(f) = self.cbs.close {
            let ctx = self.ctx;
            // SAFETY: the policy's callback, once.
            self.with_cc(cc, |sycc| unsafe { f(ctx, sycc) });
        }
    }
}

impl CBalancer {
    /// Its subchannels whose SHUTDOWN has not come, in id order; forgotten.
    fn open_subconns(&mut self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .cc
            .subconns
            .borrow_mut()
            .drain()
            .map(|(id, _)| id)
            .collect();
        self.cc.shut.borrow_mut().clear();
        ids.sort_unstable();
        ids
    }
}

impl Drop for CBalancer {
    /// A balancer dropped without `close` (its channel failed) still gets its
    /// subchannels' SHUTDOWN and its close callback, with a `sy_cc` that
    /// refuses every call.
    fn drop(&mut self) {
        self.cc.wakeups.close();
        if !self.closed {
            let sycc = (&*self.cc as *const sy_cc).cast_mut();
            for id in self.open_subconns() {
                if let Some(f) = self.cbs.subchannel_state {
                    let s = ConnectivityState::Shutdown as u32;
                    // SAFETY: the policy's callback.
                    in_callback(|| unsafe { f(self.ctx, sycc, id, s, ptr::null()) });
                }
            }
            self.closed = true;
            if let Some(f) = self.cbs.close {
                let sycc = (&*self.cc as *const sy_cc).cast_mut();
                // SAFETY: the policy's callback, once.
                in_callback(|| unsafe { f(self.ctx, sycc) });
            }
        }
    }
}

/// The `ClientConn` behind `cc`, if the calling thread is inside its callback.
/// `f` runs with exclusive access to it.
pub(crate) fn with_client_conn<T>(
    cc: *mut sy_cc,
    f: impl FnOnce(&sy_cc, &mut dyn ClientConn) -> Result<T, Error>,
) -> Result<T, Error> {
    if cc.is_null() {
        return Err(Error::null("cc is NULL"));
    }
    if ACTIVE.with(|a| a.get()) != cc.cast_const() {
        return Err(Error::new(
            sy_status::SY_WRONG_CONTEXT,
            "sy_cc_* called outside its balancer's callback (or off the loop thread)",
        ));
    }
    // SAFETY: `cc` is the active sy_cc of this thread: alive (its balancer is
    // running a callback) and only touched by this thread.
    let sycc = unsafe { &*cc };
    let Some(mut conn) = sycc.cc.get() else {
        return Err(Error::new(
            sy_status::SY_WRONG_CONTEXT,
            "sy_cc_* called outside its balancer's callback",
        ));
    };
    if sycc.busy.replace(true) {
        return Err(Error::new(
            sy_status::SY_WRONG_CONTEXT,
            "sy_cc_* called from inside another sy_cc_* call",
        ));
    }
    struct NotBusy<'a>(&'a Cell<bool>);
    impl Drop for NotBusy<'_> {
        fn drop(&mut self) {
            self.0.set(false);
        }
    }
    let _g = NotBusy(&sycc.busy);
    // SAFETY: set by `with_cc` from a live `&mut dyn ClientConn` whose
    // callback is still running; `busy` makes this the only reference made
    // from it at a time, and the callback's own borrow is not used meanwhile.
    let conn = unsafe { conn.as_mut() };
    f(sycc, conn)
}

/// Registers a policy written in C under `name`, matched exactly as gRPC's
/// registries match policy names ("MyPolicy" and "mypolicy" are two; a
/// later registration of the same name replaces it, built-ins included).
/// Channels select it by that name in their service config's
/// `loadBalancingConfig`; its
/// config object is ignored. `callbacks` is copied; `builder_ctx` is passed to
/// `build` and `free_builder`. Errors: SY_NULL_PARAMETER, SY_INVALID_UTF8,
/// SY_INVALID_ARGUMENT (empty name; missing build, update_addresses or
/// subchannel_state). Any thread.
#[no_mangle]
pub extern "C" fn sy_balancer_register(
    name: *const c_char,
    callbacks: *const sy_balancer_callbacks,
    builder_ctx: *mut c_void,
) -> sy_status {
    boundary(|| {
        // SAFETY: NUL-terminated per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        let cbs = *try_ref!(callbacks, "callbacks");
        if name.is_empty() {
            return Err(Error::invalid("policy name is empty"));
        }
        if cbs.build.is_none() || cbs.update_addresses.is_none() || cbs.subchannel_state.is_none() {
            return Err(Error::invalid(
                "build, update_addresses and subchannel_state are required",
            ));
        }
        switchyard::registry::register(Arc::new(CBuilder {
            name: name.to_string(),
            cbs,
            ctx: builder_ctx,
        }));
        Ok(())
    })
}

/// Whether a policy is registered under exactly `name` (built-ins:
/// "pick_first", "round_robin", ...). False for NULL or invalid UTF-8 (with the reason in
/// `sy_last_error`). Any thread.
#[no_mangle]
pub extern "C" fn sy_balancer_registered(name: *const c_char) -> bool {
    let mut found = false;
    let status = boundary(|| {
        // SAFETY: NUL-terminated per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        found = switchyard::registry::get(name).is_some();
        Ok(())
    });
    status == sy_status::SY_OK && found
}

/// Creates a subchannel (IDLE) for the address at `address_index` of the list
/// the latest `update_addresses` callback received (its user data comes
/// along). On success `*out_subchannel_id` is its id. Errors:
/// SY_NULL_PARAMETER, SY_WRONG_CONTEXT, SY_INVALID_ARGUMENT (index out of
/// range), SY_CLOSED (the channel is closed, or this balancer is: inside
/// its `close` callback). Inside this balancer's callbacks only (loop
/// thread).
#[no_mangle]
pub extern "C" fn sy_cc_new_subconn(
    cc: *mut sy_cc,
    address_index: usize,
    out_subchannel_id: *mut u64,
) -> sy_status {
    boundary(|| {
        let out = try_out!(out_subchannel_id, "out_subchannel_id");
        with_client_conn(cc, |sycc, conn| {
            let Some(addr) = sycc.addresses.borrow().get(address_index).cloned() else {
                return Err(Error::invalid(format!(
                    "address index {address_index} is out of range"
                )));
            };
            let sc = conn
                .new_subconn(addr)
                .map_err(|e| Error::new(sy_status::SY_CLOSED, e))?;
            let id = sc.id().0;
            sycc.subconns.borrow_mut().insert(id, sc);
            // SAFETY: non-NULL out-parameter.
            unsafe { out.write(id) };
            Ok(())
        })
    })
}

/// The subchannel `id` of this balancer, not shut down, or SY_NOT_FOUND.
fn known(sycc: &sy_cc, id: u64) -> Result<Arc<SubConn>, Error> {
    if sycc.shut.borrow().contains(&id) {
        return Err(Error::new(
            sy_status::SY_NOT_FOUND,
            format!("subchannel {id} is shut down"),
        ));
    }
    sycc.subconns.borrow().get(&id).cloned().ok_or_else(|| {
        Error::new(
            sy_status::SY_NOT_FOUND,
            format!("subchannel {id} is not one of this balancer's"),
        )
    })
}

/// Starts connecting an IDLE subchannel (no-op otherwise). SY_NOT_FOUND for
/// an id this balancer did not create (or one already shut down). Inside this
/// balancer's callbacks only.
#[no_mangle]
pub extern "C" fn sy_cc_connect(cc: *mut sy_cc, subchannel_id: u64) -> sy_status {
    boundary(|| {
        with_client_conn(cc, |sycc, conn| {
            conn.connect(known(sycc, subchannel_id)?.id());
            Ok(())
        })
    })
}

/// Shuts a subchannel down; its SHUTDOWN state is delivered once, later.
/// SY_NOT_FOUND as for `sy_cc_connect`. Inside this balancer's callbacks only.
#[no_mangle]
pub extern "C" fn sy_cc_shutdown_subconn(cc: *mut sy_cc, subchannel_id: u64) -> sy_status {
    boundary(|| {
        with_client_conn(cc, |sycc, conn| {
            let id = known(sycc, subchannel_id)?.id();
            sycc.shut.borrow_mut().insert(subchannel_id);
            conn.shutdown_subconn(id);
            Ok(())
        })
    })
}

/// Asks the resolver to resolve again. Inside this balancer's callbacks only.
#[no_mangle]
pub extern "C" fn sy_cc_resolve_now(cc: *mut sy_cc) -> sy_status {
    boundary(|| {
        with_client_conn(cc, |_, conn| {
            conn.resolve_now();
            Ok(())
        })
    })
}

/// Publishes the balancer's aggregate state (a `sy_state` other than
/// SHUTDOWN) and a new picker; queued picks wake and try it. On SY_OK the
/// library owns `picker->ctx` (see `sy_picker_free_fn`); on failure nothing
/// was taken. Errors: SY_NULL_PARAMETER (cc, picker, picker->pick),
/// SY_INVALID_ARGUMENT (state, error code), SY_NOT_FOUND (a subchannel id not
/// of this balancer), SY_INVALID_UTF8, SY_WRONG_CONTEXT. Inside this
/// balancer's callbacks only.
#[no_mangle]
pub extern "C" fn sy_cc_update_state(
    cc: *mut sy_cc,
    state: u32,
    picker: *const sy_picker,
) -> sy_status {
    boundary(|| {
        let p = try_ref!(picker, "picker");
        let Some(pick) = p.pick else {
            return Err(Error::null("picker->pick is NULL"));
        };
        let state = match state_from_c(state) {
            Some(ConnectivityState::Shutdown) | None => {
                return Err(Error::invalid(format!(
                    "state {state} cannot be published (0..=3 allowed)"
                )))
            }
            Some(s) => s,
        };
        let code = match p.error_code {
            0 => Code::Unavailable,
            n => {
                Code::from_u32(n).ok_or_else(|| Error::invalid(format!("unknown gRPC code {n}")))?
            }
        };
        // SAFETY: NUL-terminated or NULL per the contract.
        let message = unsafe { opt_str_arg(p.error_message, "picker->error_message") }?
            .unwrap_or("the policy failed the pick");
        // SAFETY: `subchannels_len` ids per the contract.
        let ids = unsafe { slice_arg(p.subchannels, p.subchannels_len, "picker->subchannels") }?;
        with_client_conn(cc, |sycc, conn| {
            let subconns = ids
                .iter()
                .map(|&id| known(sycc, id))
                .collect::<Result<Vec<_>, _>>()?;
            conn.update_state(
                state,
                Box::new(CPicker {
                    ctx: p.ctx,
                    pick,
                    done: p.done,
                    done_info: p.done_info,
                    free: p.free,
                    subconns,
                    // gRFC A54's restricted codes become INTERNAL where
                    // every picker's failure reaches the call (the reader).
                    error: Status::new(code, message),
                    bad_index: Status::new(
                        Code::Internal,
                        "the C picker returned an index outside its subchannel list",
                    ),
                    bad_decision: Status::new(
                        Code::Internal,
                        "the C picker returned an unknown decision",
                    ),
                }),
            );
            Ok(())
        })
    })
}

struct CPicker {
    ctx: *mut c_void,
    pick: unsafe extern "C" fn(*mut c_void, *const sy_pick_args, *mut usize) -> u32,
    done: sy_picker_done_fn,
    done_info: sy_picker_done_info_fn,
    free: sy_picker_free_fn,
    subconns: Vec<Arc<SubConn>>,
    error: Status,
    bad_index: Status,
    bad_decision: Status,
}

// SAFETY: the header's contract: the pick and done callbacks are thread-safe
// on their ctx, and free may run on any thread.
unsafe impl Send for CPicker {}
// SAFETY: as above.
unsafe impl Sync for CPicker {}

impl Picker for CPicker {
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        let args = sy_pick_args {
            method: info.method.as_ptr().cast(),
            method_len: info.method.len(),
            request_hash: info.hash.unwrap_or(0),
            has_request_hash: info.hash.is_some(),
            random: local.random(),
        };
        let mut index = usize::MAX;
        // Marked as a callback: a blocking `sy_*` call from it is refused.
        // (The reader running it is marked busy by its entry point.) Only
        // C pickers pay for the thread-local: the rotation hit path never
        // comes here.
        // SAFETY: the policy's pick callback with its ctx; `args` and `index`
        // outlive the call.
        let decision = in_callback(|| unsafe { (self.pick)(self.ctx, &args, &mut index) });
        const COMPLETE: u32 = sy_pick_decision::SY_PICK_COMPLETE as u32;
        const QUEUE: u32 = sy_pick_decision::SY_PICK_QUEUE as u32;
        const FAIL: u32 = sy_pick_decision::SY_PICK_FAIL as u32;
        const DROP: u32 = sy_pick_decision::SY_PICK_DROP as u32;
        match decision {
            COMPLETE => match self.subconns.get(index) {
                Some(sc) => PickResult::Complete {
                    subconn: sc,
                    done: if self.done.is_some() || self.done_info.is_some() {
                        DoneHooks::one(self)
                    } else {
                        DoneHooks::NONE
                    },
                },
                None => PickResult::Fail(&self.bad_index),
            },
            QUEUE => PickResult::Queue,
            FAIL => PickResult::Fail(&self.error),
            DROP => PickResult::Drop(&self.error),
            _ => PickResult::Fail(&self.bad_decision),
        }
    }
}

impl DoneHook for CPicker {
    fn done(&self, subconn: &SubConn, info: &DoneInfo<'_>) {
        if let Some(f) = self.done_info {
            report_done_info(f, self.ctx, subconn, info);
        } else if let Some(f) = self.done {
            let (err, len) = info
                .error
                .map_or((ptr::null(), 0), |e| (e.as_ptr().cast::<c_char>(), e.len()));
            let ns = u64::try_from(info.latency.as_nanos()).unwrap_or(u64::MAX);
            // SAFETY: the policy's done callback with its ctx.
            in_callback(|| unsafe { f(self.ctx, subconn.id().0, err, len, ns) });
        }
    }
}

/// Metrics passed without allocating; more than this many are copied to
/// the heap (the header's own `sy_pick_done` takes at most 16).
const METRICS_ON_STACK: usize = 16;

/// Calls a C `done_info` callback with `info` laid out for C.
fn report_done_info(
    f: unsafe extern "C" fn(*mut c_void, *const sy_done_info),
    ctx: *mut c_void,
    subconn: &SubConn,
    info: &DoneInfo<'_>,
) {
    let view = |&(name, value): &(&str, f64)| sy_done_metric {
        name: name.as_ptr().cast(),
        name_len: name.len(),
        value,
    };
    let mut stack = [sy_done_metric {
        name: ptr::null(),
        name_len: 0,
        value: 0.0,
    }; METRICS_ON_STACK];
    let heap: Vec<sy_done_metric>;
    let metrics: &[sy_done_metric] = if info.load.len() <= METRICS_ON_STACK {
        for (slot, m) in stack.iter_mut().zip(info.load) {
            *slot = view(m);
        }
        stack.get(..info.load.len()).unwrap_or(&[])
    } else {
        heap = info.load.iter().map(view).collect();
        &heap
    };
    let (error, error_len) = info
        .error
        .map_or((ptr::null(), 0), |e| (e.as_ptr().cast::<c_char>(), e.len()));
    let c = sy_done_info {
        subchannel_id: subconn.id().0,
        grpc_code: info.code as u32,
        error,
        error_len,
        latency_ns: u64::try_from(info.latency.as_nanos()).unwrap_or(u64::MAX),
        metrics: if metrics.is_empty() {
            ptr::null()
        } else {
            metrics.as_ptr()
        },
        metrics_len: metrics.len(),
    };
    // SAFETY: the policy's done callback with its ctx; `c` and what it
    // points to outlive the call.
    in_callback(|| unsafe { f(ctx, &c) });
}

impl Drop for CPicker {
    fn drop(&mut self) {
        if let Some(f) = self.free {
            // SAFETY: the policy's free callback, once, with its ctx.
            in_callback(|| unsafe { f(self.ctx) });
        }
    }
}

// ---------------------------------------------------------------------------
// What `sy_balancer_waker`s post to a balancer (see `balancer_waker`): a queue
// the balancer's `work` callback empties on the loop thread.

/// One balancer's posted runs.
pub(crate) struct Wakeups {
    /// Not yet run, in order; `None` once the balancer is closing.
    queue: std::sync::Mutex<Option<Vec<Run>>>,
    /// Asks the loop for the balancer's `work` callback (set by the first
    /// `sy_cc_waker_new`, inside one of its callbacks).
    work: std::sync::OnceLock<WorkScheduler>,
}

/// A posted function and its argument.
pub(crate) struct Run {
    f: unsafe extern "C" fn(*mut c_void, *mut sy_cc, *mut c_void),
    arg: *mut c_void,
}

// SAFETY: the header's contract: a posted function and its argument are
// the policy's to run on the loop thread, whichever thread posted them; the
// library only carries the pointer there.
unsafe impl Send for Run {}

impl Run {
    pub(crate) fn new(
        f: unsafe extern "C" fn(*mut c_void, *mut sy_cc, *mut c_void),
        arg: *mut c_void,
    ) -> Run {
        Run { f, arg }
    }

    /// Calls it.
    ///
    /// # Safety
    /// On the loop thread, inside the balancer's callback scope, with its
    /// own pointer and `sy_cc`.
    pub(crate) unsafe fn call(self, balancer: *mut c_void, cc: *mut sy_cc) {
        // SAFETY: per the contract; the policy's function with its argument.
        unsafe { (self.f)(balancer, cc, self.arg) }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding it: a poisoned lock's data is intact.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Wakeups {
    pub(crate) fn new() -> Wakeups {
        Wakeups {
            queue: std::sync::Mutex::new(Some(Vec::new())),
            work: std::sync::OnceLock::new(),
        }
    }

    /// The runs posted so far (the balancer's `work`); `None` when there
    /// were none.
    pub(crate) fn take(&self) -> Option<Vec<Run>> {
        let mut q = lock(&self.queue);
        let runs = std::mem::take(q.as_mut()?);
        (!runs.is_empty()).then_some(runs)
    }

    /// Where `work` requests go (the first waker's, made inside one of the
    /// balancer's callbacks).
    pub(crate) fn set_work(&self, work: WorkScheduler) {
        let _ = self.work.set(work);
    }

    /// The balancer is closing: later posts are refused, queued runs go
    /// unrun.
    pub(crate) fn close(&self) {
        *lock(&self.queue) = None;
    }

    pub(crate) fn post(&self, run: Run) -> Result<(), Error> {
        {
            let mut q = lock(&self.queue);
            let Some(q) = q.as_mut() else {
                return Err(closed());
            };
            q.push(run);
        }
        if let Some(work) = self.work.get() {
            work.schedule_work();
        }
        Ok(())
    }
}

fn closed() -> Error {
    Error::new(
        sy_status::SY_CLOSED,
        "the balancer was closed (replaced, or its channel closed)",
    )
}
