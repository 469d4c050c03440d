//! Resolvers written in C: `sy_resolver_register` a scheme with a vtable;
//! a channel whose target has that scheme builds one through it, and the C
//! resolver pushes address lists, service configs and errors through its
//! `sy_resolver_cc` from any thread.
//!
//! Soundness, in short: the `sy_resolver_cc` handed to `build` is a heap
//! shell with a magic word (see `handle.rs`). It stays live until the
//! resolver's `close` callback has returned (or `build` failed); then it is
//! marked dead (an atomic word) and quarantined, so a late call (after
//! `close` returned) reads valid memory, finds it dead and gets SY_CLOSED.
//! A call still running on another thread when `close` returns, and a call
//! long after it (the quarantine is bounded), are the C resolver's to
//! prevent: its `close` stops its threads, as documented.

use crate::callback::{sy_release_fn, CUserData};
use crate::error::Error;
use crate::handle::{bury, Shell};
use crate::macros::{boundary, in_callback};
use crate::resolver::sy_address;
use crate::status::sy_status;
use crate::strings::{c_text, opt_str_arg, slice_arg, str_arg};
use std::ffi::{c_char, c_void};
use std::ptr::{self, addr_of_mut};
use std::sync::Arc;
use switchyard::resolver::{
    self, Resolver, ResolverBuilder, ResolverClientConn, ResolverState, Target,
};
use switchyard::{Address, Endpoint};

/// The handle a C resolver pushes through. Opaque; owned by the library.
/// Valid from the `build` callback that receives it until the resolver's
/// `close` callback returns. A call after that uses a retired handle: it
/// gets SY_CLOSED while the handle sits in the library's bounded quarantine
/// of freed handles (as a second free of a channel does), and is undefined
/// after, like any use after free.
pub struct sy_resolver_cc {
    shell: Shell<CcBox>,
    /// Outside the shell's value: still readable while a retired handle is
    /// quarantined, to release the user data of a push that came too late
    /// (the header says SY_CLOSED has released it).
    release: sy_release_fn,
}

pub(crate) struct CcBox {
    cc: ResolverClientConn,
}

/// The target a C resolver is built for: NUL-terminated UTF-8 strings, valid
/// during the `build` call only. For "dns://8.8.8.8/example.com:443":
/// scheme "dns", authority "8.8.8.8", path "/example.com:443", endpoint
/// "example.com:443"; for "unix:rel/path" the path is "rel/path".
#[repr(C)]
pub struct sy_target {
    /// The whole target, as parsed (scheme lower-cased).
    pub target: *const c_char,
    pub scheme: *const c_char,
    /// Empty when the target has none.
    pub authority: *const c_char,
    /// The URI path as written.
    pub path: *const c_char,
    /// The path without its leading '/': the name to resolve.
    pub endpoint: *const c_char,
}

/// Builds a resolver for `target`: return true and set `*out_resolver` to
/// the resolver's own pointer (passed to its other callbacks; may be NULL),
/// or return false to refuse the target (the channel is then
/// TRANSIENT_FAILURE and its RPCs fail UNAVAILABLE saying so). A channel
/// starts IDLE: this runs on the loop thread when it is first used (its
/// first pick or call, or `sy_channel_connect`), and again each time it is
/// used after its idle timeout closed the resolver; it must not block. It
/// may keep `cc` and push through it at once or later, from any thread.
/// Blocking `sy_*` calls are refused inside it.
pub type sy_resolver_build_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        target: *const sy_target,
        cc: *mut sy_resolver_cc,
        out_resolver: *mut *mut c_void,
    ) -> bool,
>;

/// A resolver callback (`resolve_now`, `close`), with the pointer its
/// `build` returned. Runs on the loop thread; must not block.
pub type sy_resolver_fn = Option<unsafe extern "C" fn(resolver: *mut c_void)>;

/// A resolver written in C. Copied by `sy_resolver_register`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sy_resolver_vtable {
    /// Required.
    pub build: sy_resolver_build_fn,
    /// Optional: the channel asks for a new resolution (a backend was lost,
    /// the policy found the addresses unusable). A hint; may be paced. After
    /// the channel rejected an update (no usable address, an invalid service
    /// config) it asks again on its own backoff: a resolver that paces these
    /// calls should not hold those back for long.
    pub resolve_now: sy_resolver_fn,
    /// Optional: the channel is done with the resolver. Stop pushing and
    /// free the resolver; make sure no `sy_resolver_cc_*` call on its `cc`
    /// is still running when this returns (join the resolver's threads):
    /// the `cc` is invalid from then on (see `sy_resolver_cc`).
    pub close: sy_resolver_fn,
    /// Optional: releases the `user_data` of addresses pushed with
    /// `sy_resolver_cc_update`, once each, when nothing can return it any
    /// more (as `sy_release_fn` says). NULL: user data is never released.
    pub release_user_data: sy_release_fn,
}

struct CBuilder {
    scheme: String,
    vtable: sy_resolver_vtable,
    user_data: *mut c_void,
}

// SAFETY: the header's contract makes `build` callable from any thread with
// its user data; the library only passes the pointer back.
unsafe impl Send for CBuilder {}
// SAFETY: as above.
unsafe impl Sync for CBuilder {}

impl ResolverBuilder for CBuilder {
    fn scheme(&self) -> &str {
        &self.scheme
    }

    fn build(&self, target: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
        let Some(build) = self.vtable.build else {
            return Err("the C resolver has no build callback".into());
        };
        let texts = [
            c_text(&target.to_string()),
            c_text(&target.scheme),
            c_text(&target.authority),
            c_text(&target.path),
            c_text(target.endpoint()),
        ];
        let view = sy_target {
            target: texts[0].as_ptr().cast(),
            scheme: texts[1].as_ptr().cast(),
            authority: texts[2].as_ptr().cast(),
            path: texts[3].as_ptr().cast(),
            endpoint: texts[4].as_ptr().cast(),
        };
        let handle = Box::into_raw(Box::new(sy_resolver_cc {
            shell: Shell::new(CcBox { cc }),
            release: self.vtable.release_user_data,
        }));
        let mut resolver: *mut c_void = ptr::null_mut();
        // SAFETY: the host's callback with its user data; `view`'s strings
        // and `handle` outlive the call, `resolver` is a valid out-pointer.
        let ok = in_callback(|| unsafe { build(self.user_data, &view, handle, &mut resolver) });
        if !ok {
            // SAFETY: `handle` is ours, live, from Box::into_raw.
            unsafe { retire(handle) };
            return Err(format!(
                "the {} resolver refused target \"{target}\"",
                self.scheme
            ));
        }
        Ok(Box::new(CResolver {
            resolver,
            handle,
            vtable: self.vtable,
            closed: false,
        }))
    }
}

/// Marks a cc handle dead and quarantines it.
///
/// # Safety
/// `handle` is from `Box::into_raw`, retired once.
unsafe fn retire(handle: *mut sy_resolver_cc) {
    // SAFETY: per the contract; the projection makes no reference.
    unsafe { bury(handle, |h| addr_of_mut!((*h).shell)) };
}

struct CResolver {
    resolver: *mut c_void,
    handle: *mut sy_resolver_cc,
    vtable: sy_resolver_vtable,
    closed: bool,
}

// SAFETY: the resolver pointer is only passed back to its callbacks, which
// the channel calls on its loop thread one at a time; the handle is only
// retired here, once.
unsafe impl Send for CResolver {}

impl Resolver for CResolver {
    fn resolve_now(&mut self) {
        if let (false, Some(f)) = (self.closed, self.vtable.resolve_now) {
            // SAFETY: the host's callback with its resolver pointer.
            in_callback(|| unsafe { f(self.resolver) });
        }
    }

    fn close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        if let Some(f) = self.vtable.close {
            // SAFETY: the host's callback with its resolver pointer, once.
            in_callback(|| unsafe { f(self.resolver) });
        }
        // SAFETY: the handle is ours, from Box::into_raw, retired once (here).
        unsafe { retire(self.handle) };
    }
}

impl Drop for CResolver {
    fn drop(&mut self) {
        // The channel closes its resolver; should it not, close here.
        self.close();
    }
}

/// Registers a resolver written in C for URI `scheme` (compared
/// case-insensitively; letters, digits, '+', '-', '.', starting with a
/// letter), replacing any earlier one, a built-in too. Channels created
/// afterwards with a target of that scheme build one through `vtable`
/// (copied), with `user_data` (which must stay valid for as long as the
/// process may create such channels). SY_INVALID_ARGUMENT for a bad scheme
/// or a missing `build`. Any thread.
#[no_mangle]
pub extern "C" fn sy_resolver_register(
    scheme: *const c_char,
    vtable: *const sy_resolver_vtable,
    user_data: *mut c_void,
) -> sy_status {
    boundary(|| {
        // SAFETY: NUL-terminated per the contract.
        let scheme = unsafe { str_arg(scheme, "scheme") }?;
        let vtable = *try_ref!(vtable, "vtable");
        let valid =
            Target::parse(&format!("{scheme}:x")).is_ok_and(|t| t.scheme.len() == scheme.len());
        if !valid {
            return Err(Error::invalid(format!("\"{scheme}\" is not a URI scheme")));
        }
        if vtable.build.is_none() {
            return Err(Error::invalid("the resolver vtable needs a build callback"));
        }
        resolver::register(Arc::new(CBuilder {
            scheme: scheme.to_ascii_lowercase(),
            vtable,
            user_data,
        }));
        Ok(())
    })
}

fn cc_ref<'a>(cc: *mut sy_resolver_cc) -> Result<&'a CcBox, Error> {
    if cc.is_null() {
        return Err(Error::null("cc is NULL"));
    }
    // SAFETY: non-NULL; the caller promises a cc its resolver was given,
    // live or recently closed (quarantined). A projection, no reference.
    unsafe { Shell::live_value(std::ptr::addr_of!((*cc).shell)) }.ok_or_else(closed)
}

fn closed() -> Error {
    Error::new(
        sy_status::SY_CLOSED,
        "the resolver was closed (its close callback returned)",
    )
}

/// Pushes a new address list (one endpoint per address, in order) and a
/// service config for the channel: an invalid one is logged and the channel
/// keeps its last good one; NULL (or an empty string) means the channel's
/// default config (as in gRPC), so send the config with every update.
/// `addresses` may be NULL when `len` is 0. Any thread; applied on the
/// loop thread in the order pushed.
///
/// Ownership of user data as in `sy_channel_update_addresses`, released
/// with the vtable's `release_user_data`: nothing is taken if the call
/// fails argument checks (SY_NULL_PARAMETER, SY_INVALID_ARGUMENT,
/// SY_INVALID_UTF8); otherwise the library owns every non-NULL user data
/// (already released if the call returned SY_CLOSED or SY_RUNTIME_GONE).
/// SY_CLOSED once the resolver or its channel is closed.
#[no_mangle]
pub extern "C" fn sy_resolver_cc_update(
    cc: *mut sy_resolver_cc,
    addresses: *const sy_address,
    len: usize,
    service_config_json: *const c_char,
) -> sy_status {
    boundary(|| {
        if cc.is_null() {
            return Err(Error::null("cc is NULL"));
        }
        // SAFETY: `len` valid sy_address entries per the contract.
        let list = unsafe { slice_arg(addresses, len, "addresses") }?;
        // SAFETY: NUL-terminated per the contract.
        let texts = unsafe { crate::resolver::address_texts(list) }?;
        // SAFETY: NUL-terminated or NULL per the contract.
        let config = unsafe { opt_str_arg(service_config_json, "service_config_json") }?;
        // Past the checks: from here on the user data is ours, even on a
        // retired handle (its `release` outlives its value).
        // SAFETY: non-NULL, live or quarantined per the contract; a plain
        // field read, no reference to the shell.
        let release = unsafe { std::ptr::addr_of!((*cc).release).read() };
        let endpoints: Vec<Endpoint> = list
            .iter()
            .zip(texts)
            .map(|(a, text)| {
                Endpoint::from(Address {
                    addr: text.to_string(),
                    weight: a.weight,
                    user_data: CUserData::wrap(a.user_data, release),
                    tag: a.user_data as usize as u64,
                })
            })
            .collect();
        // Dropping `endpoints` on the way out releases the user data.
        let cc = cc_ref(cc)?;
        cc.cc.update(ResolverState {
            endpoints,
            service_config: config.map(str::to_string),
        })?;
        Ok(())
    })
}

/// The resolver failed (`message`: NUL-terminated UTF-8): the channel's
/// policy keeps its last good addresses if it has any; otherwise RPCs fail
/// UNAVAILABLE with the message. SY_CLOSED once the resolver or its channel
/// is closed. Any thread.
#[no_mangle]
pub extern "C" fn sy_resolver_cc_report_error(
    cc: *mut sy_resolver_cc,
    message: *const c_char,
) -> sy_status {
    boundary(|| {
        let cc = cc_ref(cc)?;
        // SAFETY: NUL-terminated per the contract.
        let message = unsafe { str_arg(message, "message") }?;
        cc.cc.report_error(message)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::sy_host_transport;
    use crate::{
        sy_channel, sy_channel_free, sy_channel_new_with_options, sy_channel_sync, sy_runtime,
        sy_runtime_free, sy_runtime_new,
    };
    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

    static CC: AtomicPtr<sy_resolver_cc> = AtomicPtr::new(ptr::null_mut());
    static CLOSES: AtomicUsize = AtomicUsize::new(0);
    static RELEASES: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn build(
        _: *mut c_void,
        _: *const sy_target,
        cc: *mut sy_resolver_cc,
        _: *mut *mut c_void,
    ) -> bool {
        CC.store(cc, Ordering::SeqCst);
        true
    }
    unsafe extern "C" fn close(_: *mut c_void) {
        CLOSES.fetch_add(1, Ordering::SeqCst);
    }
    unsafe extern "C" fn release(_: *mut c_void) {
        RELEASES.fetch_add(1, Ordering::SeqCst);
    }

    unsafe extern "C" fn nothing(
        _: *mut c_void,
        _: u64,
        _: *const c_char,
        _: usize,
        _: *mut c_void,
    ) {
    }

    fn ok(s: sy_status) {
        let mut buf = [0u8; 512];
        let n = crate::sy_last_error(buf.as_mut_ptr().cast(), buf.len()).min(511);
        assert_eq!(
            s,
            sy_status::SY_OK,
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }

    /// Bad input is refused without taking user data; a cc is refused with
    /// SY_CLOSED once its resolver was closed; user data pushed is released
    /// once.
    #[test]
    fn bad_input_and_a_closed_cc_are_refused() {
        let vt = sy_resolver_vtable {
            build: Some(build),
            resolve_now: None,
            close: Some(close),
            release_user_data: Some(release),
        };
        let bad = [0xffu8, 0];
        assert_eq!(
            sy_resolver_register(bad.as_ptr().cast(), &vt, ptr::null_mut()),
            sy_status::SY_INVALID_UTF8
        );
        assert_eq!(
            sy_resolver_register(c"".as_ptr(), &vt, ptr::null_mut()),
            sy_status::SY_INVALID_ARGUMENT
        );
        ok(sy_resolver_register(
            c"ffi-unit".as_ptr(),
            &vt,
            ptr::null_mut(),
        ));

        // A host transport that does nothing: no sockets (Miri runs this).
        let host = sy_host_transport {
            ctx: ptr::null_mut(),
            create: None,
            connect: Some(nothing),
            shutdown: Some(nothing),
            health: None,
        };
        let mut rt: *mut sy_runtime = ptr::null_mut();
        let mut ch: *mut sy_channel = ptr::null_mut();
        ok(sy_runtime_new(&mut rt));
        ok(sy_channel_new_with_options(
            rt,
            c"ffi-unit:///x".as_ptr(),
            ptr::null(),
            ptr::null(),
            &host,
            None,
            ptr::null_mut(),
            None,
            &mut ch,
        ));
        // Built when the channel is first used.
        assert!(CC.load(Ordering::SeqCst).is_null(), "built while IDLE");
        ok(crate::sy_channel_connect(ch));
        ok(sy_channel_sync(ch));
        let cc = CC.load(Ordering::SeqCst);
        assert!(!cc.is_null());
        let mut datum = 7u8;
        let one = sy_address {
            address: c"127.0.0.1:1".as_ptr(),
            weight: 0,
            user_data: (&mut datum as *mut u8).cast(),
        };
        // An impossible length and bad text: refused, nothing taken.
        assert_eq!(
            sy_resolver_cc_update(cc, &one, usize::MAX, ptr::null()),
            sy_status::SY_INVALID_ARGUMENT
        );
        let bad_addr = sy_address {
            address: bad.as_ptr().cast(),
            ..one
        };
        assert_eq!(
            sy_resolver_cc_update(cc, &bad_addr, 1, ptr::null()),
            sy_status::SY_INVALID_UTF8
        );
        assert_eq!(
            sy_resolver_cc_update(cc, ptr::null(), 1, ptr::null()),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(
            sy_resolver_cc_report_error(cc, ptr::null()),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(RELEASES.load(Ordering::SeqCst), 0);
        ok(sy_resolver_cc_update(cc, &one, 1, ptr::null()));
        ok(sy_resolver_cc_report_error(cc, c"oops".as_ptr()));
        ok(sy_channel_sync(ch));

        sy_channel_free(ch);
        assert_eq!(CLOSES.load(Ordering::SeqCst), 1);
        // The channel lets go of the address (its loop task drops right
        // after the close): its user data is released, once.
        for _ in 0..500 {
            if RELEASES.load(Ordering::SeqCst) > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(RELEASES.load(Ordering::SeqCst), 1);
        // The cc is dead (quarantined, still readable): refused; the user
        // data of a push it refuses is released at once, as SY_CLOSED
        // promises, but not that of a push refused for bad arguments.
        assert_eq!(
            sy_resolver_cc_update(cc, ptr::null(), 0, ptr::null()),
            sy_status::SY_CLOSED
        );
        assert_eq!(
            sy_resolver_cc_update(cc, &bad_addr, 1, ptr::null()),
            sy_status::SY_INVALID_UTF8
        );
        assert_eq!(RELEASES.load(Ordering::SeqCst), 1);
        assert_eq!(
            sy_resolver_cc_update(cc, &one, 1, ptr::null()),
            sy_status::SY_CLOSED
        );
        assert_eq!(RELEASES.load(Ordering::SeqCst), 2);
        assert_eq!(
            sy_resolver_cc_report_error(cc, c"late".as_ptr()),
            sy_status::SY_CLOSED
        );
        sy_runtime_free(rt);
    }
}
