//! C callbacks as the core's traits: address user data whose `Drop` is the C
//! release callback, and the host's transport callbacks.

use crate::macros::in_callback;
use crate::strings::{c_bytes, c_text};
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use switchyard::{HostTransport, SubConn, UserData};

/// Releases one address's user data. Called exactly once per non-NULL
/// `user_data` handed to the library, when the last thing that can return it
/// lets go: possibly on the loop thread, an RPC thread (in `sy_pick_done`,
/// `sy_pick`, `sy_reader_refresh`, `sy_reader_free`), or the thread freeing
/// the channel. The reader letting go (if any) is off limits from here
/// (SY_WRONG_CONTEXT), and blocking `sy_*` calls are refused.
pub type sy_release_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// Hears a channel's connectivity changes (`state` is a `sy_state`). Called on
/// the loop thread, never concurrently with itself, with the `ctx` given at
/// channel creation. Must not block; `sy_channel_close`, `sy_channel_free`,
/// `sy_channel_wait_for_state_change`, `sy_runtime_free`, `sy_channel_new*`
/// and the other blocking calls are refused there (SY_WRONG_CONTEXT).
pub type sy_state_fn = Option<unsafe extern "C" fn(ctx: *mut c_void, state: u32)>;

/// A host transport callback about one subchannel. `address` is
/// NUL-terminated (and `address_len` long), valid for the call only;
/// `user_data` is the address's, valid while the subchannel lives.
pub type sy_subchannel_fn = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        subchannel_id: u64,
        address: *const c_char,
        address_len: usize,
        user_data: *mut c_void,
    ),
>;

/// A host transport's health callback (`sy_host_transport.health`), about
/// one subchannel whose transport is up. `service` non-NULL: start checking
/// the health of `service` (`service_len` bytes, NUL-terminated; "" = the
/// whole server) on it and report each verdict with
/// `sy_channel_report_subconn_health`. `service` NULL: stop checking (health
/// checking was turned off, or the service name changed and a start for the
/// new one follows). `address` and `service` are valid for the call only;
/// `user_data` as for `sy_subchannel_fn`.
pub type sy_health_fn = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        subchannel_id: u64,
        address: *const c_char,
        address_len: usize,
        user_data: *mut c_void,
        service: *const c_char,
        service_len: usize,
    ),
>;

/// The host's side of the external connector: the host stack owns the
/// transports, the library tells it when to create, connect and shut one down,
/// and the host reports what happened with `sy_channel_report_subconn_state`.
///
/// Client-side health checking (gRFC A17: the service config's
/// `healthCheckConfig`, under a policy that health-checks its endpoints:
/// round_robin and the other built-in policies over endpoints, outlier
/// detection over one of those; never a top-level pick_first, nor a policy
/// written in C) is the host's to
/// run when it sets `health`: once a subchannel's transport is READY the
/// library calls `health` with the service name, and the subchannel stays
/// CONNECTING until the host's first `sy_channel_report_subconn_health`; then
/// it is READY while serving, TRANSIENT_FAILURE (transport kept) while not.
/// Retrying a broken check is the host's business. With `health` NULL,
/// subchannels are READY as soon as they are connected.
///
/// Every callback runs on the loop thread with `ctx`, one at a time; it must
/// not block (report later, from any thread). `ctx` must stay valid until
/// `sy_channel_free` returns. The struct itself is copied at channel creation.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sy_host_transport {
    pub ctx: *mut c_void,
    /// Optional: a subchannel now exists (IDLE).
    pub create: sy_subchannel_fn,
    /// Required: start connecting; report READY or TRANSIENT_FAILURE.
    pub connect: sy_subchannel_fn,
    /// Required: close the transport at once; no report is expected. When
    /// the policy shuts a subchannel down (its address removed, the policy
    /// switched), this comes once the picker without it is published; as
    /// the channel goes IDLE or closes, it comes first. Either way a pick
    /// made just before, on another thread, may still return it: treat
    /// that as gRPC treats a transport closed under a pick (pick again, or
    /// fail the attempt UNAVAILABLE).
    pub shutdown: sy_subchannel_fn,
    /// Optional: start (`service` non-NULL) or stop (`service` NULL) checking
    /// a connected transport's health. Not called when the transport ends
    /// or on `shutdown`: stop checking then too. NULL: the host does not
    /// check health.
    pub health: sy_health_fn,
}

/// A C `void*` with its release callback: the `UserData` of one address.
pub(crate) struct CUserData {
    pub(crate) ptr: *mut c_void,
    release: sy_release_fn,
}

// SAFETY: the header's contract makes user data usable and releasable from any
// thread; the library never dereferences it.
unsafe impl Send for CUserData {}
// SAFETY: as above; shared access only copies the pointer.
unsafe impl Sync for CUserData {}

impl CUserData {
    pub(crate) fn wrap(ptr: *mut c_void, release: sy_release_fn) -> Option<UserData> {
        if ptr.is_null() {
            None
        } else {
            Some(Arc::new(CUserData { ptr, release }))
        }
    }
}

impl Drop for CUserData {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: the host's callback, called once for this pointer.
            in_callback(|| unsafe { release(self.ptr) });
        }
    }
}

/// The C pointer behind an address's user data (NULL if none): the channel
/// puts it in the address's `tag` (next to the `CUserData` that releases it),
/// so a pick hands it out without reading the user data.
#[inline(always)]
pub(crate) fn user_data_of(tag: u64) -> *mut c_void {
    tag as usize as *mut c_void
}

pub(crate) struct CHost {
    cb: sy_host_transport,
}

// SAFETY: the callbacks and ctx are only used on the loop thread (the
// contract above), one call at a time.
unsafe impl Send for CHost {}
// SAFETY: as above.
unsafe impl Sync for CHost {}

impl CHost {
    pub(crate) fn new(cb: sy_host_transport) -> CHost {
        CHost { cb }
    }

    fn call(&self, f: sy_subchannel_fn, sc: &SubConn) {
        let Some(f) = f else { return };
        // A NUL-terminated copy for C, cut at an interior NUL (which
        // `address_len` then counts up to).
        let addr = c_text(sc.addr());
        let len = addr.len().saturating_sub(1);
        // SAFETY: the host's callback with its own ctx; `addr` outlives the call.
        in_callback(|| unsafe {
            f(
                self.cb.ctx,
                sc.id().0,
                addr.as_ptr().cast(),
                len,
                user_data_of(sc.tag()),
            )
        });
    }
}

impl CHost {
    /// Calls `health` for `sc` with `service` (`None`: stop). False when the
    /// host has no health callback.
    fn health(&self, sc: &SubConn, service: Option<&str>) -> bool {
        let Some(f) = self.cb.health else {
            return false;
        };
        let addr = c_text(sc.addr());
        // All of the name, with its length: one holding a NUL must not reach
        // the host as a shorter name ("" would be the whole server's health).
        let service = service.map(c_bytes);
        let (svc_ptr, svc_len) = match &service {
            Some(s) => (s.as_ptr().cast(), s.len() - 1),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: the host's callback with its own ctx; `addr` and `service`
        // outlive the call.
        in_callback(|| unsafe {
            f(
                self.cb.ctx,
                sc.id().0,
                addr.as_ptr().cast(),
                addr.len().saturating_sub(1),
                user_data_of(sc.tag()),
                svc_ptr,
                svc_len,
            )
        });
        true
    }
}

impl HostTransport for CHost {
    fn create(&self, sc: &Arc<SubConn>) {
        self.call(self.cb.create, sc);
    }
    fn connect(&self, sc: &Arc<SubConn>) {
        self.call(self.cb.connect, sc);
    }
    fn shutdown(&self, sc: &Arc<SubConn>) {
        self.call(self.cb.shutdown, sc);
    }
    fn start_health(&self, sc: &Arc<SubConn>, service: &str) -> bool {
        self.health(sc, Some(service))
    }
    fn stop_health(&self, sc: &Arc<SubConn>) {
        self.health(sc, None);
    }
}
