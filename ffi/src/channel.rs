//! `sy_channel`: one target, one policy, its subchannels; addresses and
//! transport states come in from the host.

use crate::call_pool::CallPool;
use crate::callback::{sy_host_transport, sy_release_fn, sy_state_fn, CHost};
use crate::error::Error;
use crate::handle::{bury, Shell};
use crate::macros::{
    boundary, boundary_or, free_refused_in_callback, in_callback, inside_callback,
    refuse_in_callback,
};
use crate::options::{sy_channel_options, Options};
use crate::runtime::sy_runtime;
use crate::status::{state_from_c, state_to_c, sy_status};
use crate::strings::{opt_str_arg, str_arg};
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::{Channel, ChannelOptions, ConnectivityState, ExternalConnector, SubConnId};

/// A `timeout_ms` of no limit: `sy_pick`, `sy_channel_wait_for_state_change`
/// and calls wait as long as it takes (a call then has no deadline).
pub const SY_WAIT_FOREVER: u64 = u64::MAX;

/// A `timeout_ms` of 0, everywhere one is taken: a deadline that has
/// already passed (gRPC's meaning of a zero timeout). `sy_pick` and
/// `sy_channel_wait_for_state_change` do not wait; a call whose
/// `sy_call_options` has `has_timeout` fails with DEADLINE_EXCEEDED before
/// anything is sent (a zeroed `sy_call_options` has no deadline: its
/// `timeout_ms` applies only with `has_timeout`). Any other value is a
/// limit in milliseconds.
pub const SY_NO_WAIT: u64 = 0;

/// A load-balanced channel. Opaque; owned by the caller (Box). Every function
/// taking a `sy_channel*` may be called from any thread, concurrently, except
/// `sy_channel_free`.
pub struct sy_channel(pub(crate) Shell<ChannelBox>);

pub(crate) struct ChannelBox {
    pub(crate) channel: Channel,
    pub(crate) release: sy_release_fn,
    /// The library owns the connections (no `sy_host_transport`).
    pub(crate) managed: bool,
    /// Whether the channel is closing, for `sy_call_unary_start`'s callbacks.
    pub(crate) pool: Arc<CallPool>,
}

impl ChannelBox {
    /// Closes the channel (running calls end, as SY_CLOSED) and waits for
    /// its completion thread's callbacks.
    fn close(&self) {
        CallPool::close_joined(std::slice::from_ref(&self.pool), || self.channel.close());
    }
}

impl Drop for ChannelBox {
    fn drop(&mut self) {
        self.close();
    }
}

struct StateCtx(*mut c_void);
// SAFETY: only passed back to the host's state (or resolve-now) callback, on
// the loop thread.
unsafe impl Send for StateCtx {}
// SAFETY: as above.
unsafe impl Sync for StateCtx {}

impl StateCtx {
    // A method, so closures capture the whole (Send) wrapper, not the field.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

pub(crate) fn channel_ref<'a>(ch: *const sy_channel) -> Result<&'a ChannelBox, Error> {
    if ch.is_null() {
        return Err(Error::null("channel is NULL"));
    }
    // SAFETY: non-NULL; the caller promises a channel from `sy_channel_new`,
    // live or recently freed (quarantined). A projection, no reference.
    unsafe { Shell::live_value(std::ptr::addr_of!((*ch).0)) }
        .ok_or_else(|| Error::invalid("channel was already freed"))
}

/// The deadline `timeout_ms` from now: `None` for `SY_WAIT_FOREVER` (or a
/// time too far to represent); now (already due) for `SY_NO_WAIT`.
pub(crate) fn timeout_deadline(timeout_ms: u64) -> Option<Instant> {
    if timeout_ms == SY_WAIT_FOREVER {
        return None;
    }
    Instant::now().checked_add(Duration::from_millis(timeout_ms))
}

/// The short path to a channel whose connections the library makes:
/// `sy_channel_new_with_options` without a host transport, state callback or
/// user data, and with the credentials named (`options` is required: from
/// `sy_channel_options_new_insecure`, `sy_channel_options_new_tls` or
/// `sy_channel_options_new`, so that plaintext vs TLS is a visible choice).
///
/// - `target`: "ipv4:127.0.0.1:50051,127.0.0.1:50052", "dns:///host:port"
///   or "host:port". Not NULL.
/// - `service_config_json`: selects the policy, e.g.
///   `{"loadBalancingConfig":[{"round_robin":{}}]}`; NULL for pick_first.
///   An invalid one does not fail: as C-core's lame channel, it is then
///   TRANSIENT_FAILURE from the start (not IDLE) and its calls fail
///   UNAVAILABLE with the parse error (which names the JSON path that is
///   wrong) until a valid config comes.
///
/// Errors: SY_NULL_PARAMETER (`rt`, `target`, `options`, `out`),
/// SY_INVALID_UTF8, SY_INVALID_ARGUMENT, SY_INVALID_TARGET, SY_RUNTIME_GONE. On success `*out` is a new
/// channel owned by the caller (`sy_channel_free`); `options` may be freed
/// at once. Any thread; SY_WRONG_CONTEXT from inside a callback.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_channel_new_simple(
    rt: *const sy_runtime,
    target: *const c_char,
    service_config_json: *const c_char,
    options: *const sy_channel_options,
    out: *mut *mut sy_channel,
) -> sy_status {
    if options.is_null() {
        return boundary(|| {
            Err(Error::null(
                "options is NULL: pass sy_channel_options_new_insecure() or \
                 sy_channel_options_new_tls()",
            ))
        });
    }
    sy_channel_new_with_options(
        rt,
        target,
        service_config_json,
        options,
        std::ptr::null(),
        None,
        std::ptr::null_mut(),
        None,
        out,
    )
}

/// The shortest path to a plaintext channel, as gRPC's `insecure_channel`:
/// `sy_channel_new_simple` with options from
/// `sy_channel_options_new_insecure` (plaintext HTTP/2, h2c; every other
/// option its default). The function's name is the credentials' choice; for
/// TLS, or to set other options, use `sy_channel_new_simple`.
///
/// `target` and `service_config_json` as `sy_channel_new_simple`'s.
///
/// Errors: SY_NULL_PARAMETER (`rt`, `target`, `out`), SY_INVALID_UTF8,
/// SY_INVALID_ARGUMENT, SY_INVALID_TARGET, SY_RUNTIME_GONE. On success
/// `*out` is a new channel owned by the caller (`sy_channel_free`); nothing
/// is written otherwise. Any thread; SY_WRONG_CONTEXT from inside a callback.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_channel_new_insecure(
    rt: *const sy_runtime,
    target: *const c_char,
    service_config_json: *const c_char,
    out: *mut *mut sy_channel,
) -> sy_status {
    boundary_or(sy_status::SY_PANIC, || {
        let options = sy_channel_options {
            inner: Options::insecure(),
        };
        sy_channel_new_simple(rt, target, service_config_json, &options, out)
    })
}

/// Creates a channel on `rt` with default options: as
/// `sy_channel_new_with_options` with `options` NULL.
///
/// - `target`: "" when the host supplies addresses with
///   `sy_channel_update_addresses`; otherwise "ipv4:1.2.3.4:80,...",
///   "dns:///host:port" or "host:port". Not NULL.
/// - `service_config_json`: the channel's default service config: the
///   policy (`{"loadBalancingConfig":[{"round_robin":{}}]}`) and the calls'
///   `methodConfig` (see `sy_method_config`); NULL or "" for none
///   (pick_first). A service config from the resolver replaces it. An
///   invalid one does not fail: the channel is TRANSIENT_FAILURE from the
///   start (not IDLE) and picks and calls fail UNAVAILABLE with the parse
///   error (naming the JSON path that is wrong) until a valid one comes
///   (`sy_last_error` after a pick or call shows it).
/// - `host`: the host's transport callbacks (external connector): the host
///   owns connections and reports their states, and RPCs are sent by the
///   host on what `sy_pick` returns. NULL for library-managed connections:
///   the library's own TCP / TLS / HTTP/2 to each address, used by
///   `sy_call_unary` and `sy_call_unary_start`. With default options those
///   are TLS, verifying each address's host name against the system's
///   trusted roots (gRPC's default); `sy_channel_new_with_options` sets plaintext, roots, mTLS, ...
/// - `on_state_change`, `state_ctx`: optional; see `sy_state_fn`.
/// - `release_user_data`: called once for each non-NULL `user_data` given in
///   `sy_channel_update_addresses` when nothing can return it any more. May be
///   NULL if no user data is ever given (it is then never released).
///
/// Errors: SY_NULL_PARAMETER, SY_INVALID_UTF8, SY_INVALID_ARGUMENT (a `host`
/// without `connect` or `shutdown`), SY_INVALID_TARGET, SY_RUNTIME_GONE. On success `*out` is a new
/// channel owned by the caller (`sy_channel_free`). `state_ctx` and
/// `host->ctx` must stay valid until `sy_channel_free` returns. Any thread
/// (SY_WRONG_CONTEXT from inside a callback).
#[no_mangle]
#[must_use]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn sy_channel_new(
    rt: *const sy_runtime,
    target: *const c_char,
    service_config_json: *const c_char,
    host: *const sy_host_transport,
    on_state_change: sy_state_fn,
    state_ctx: *mut c_void,
    release_user_data: sy_release_fn,
    out: *mut *mut sy_channel,
) -> sy_status {
    sy_channel_new_with_options(
        rt,
        target,
        service_config_json,
        std::ptr::null(),
        host,
        on_state_change,
        state_ctx,
        release_user_data,
        out,
    )
}

/// Creates a channel on `rt`, as `sy_channel_new`, with `options` (NULL:
/// the defaults; see `sy_channel_options`). The options are copied: they may
/// be changed or freed as soon as this returns.
///
/// Transport settings (insecure, TLS roots / server name / client
/// certificate, keepalive) are for library-managed channels only: with a
/// `host` they give SY_INVALID_ARGUMENT, as does insecure together with TLS
/// settings. Backoff applies to both kinds (a host bounds each attempt
/// itself: see `sy_channel_options_set_backoff`).
#[no_mangle]
#[must_use]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn sy_channel_new_with_options(
    rt: *const sy_runtime,
    target: *const c_char,
    service_config_json: *const c_char,
    options: *const sy_channel_options,
    host: *const sy_host_transport,
    on_state_change: sy_state_fn,
    state_ctx: *mut c_void,
    release_user_data: sy_release_fn,
    out: *mut *mut sy_channel,
) -> sy_status {
    boundary(|| {
        refuse_in_callback("cannot create a channel inside a switchyard callback")?;
        let rt = try_ref!(rt, "runtime");
        // SAFETY: NUL-terminated strings valid for the call (the contract).
        let target = unsafe { str_arg(target, "target") }?;
        // SAFETY: as above.
        let config = unsafe { opt_str_arg(service_config_json, "service_config_json") }?;
        let out = try_out!(out, "out");
        let defaults = Options::default();
        let opts = if options.is_null() {
            &defaults
        } else {
            // SAFETY: non-NULL, a live sy_channel_options per the contract.
            unsafe { &(*options).inner }
        };
        let connector = if host.is_null() {
            None
        } else {
            // SAFETY: non-NULL, points to a sy_host_transport (copied here).
            let h = unsafe { *host };
            if h.connect.is_none() || h.shutdown.is_none() {
                return Err(Error::invalid(
                    "host transport needs connect and shutdown callbacks",
                ));
            }
            if opts.has_transport_settings() {
                return Err(Error::invalid(
                    "transport options (TLS, insecure, keepalive) are for library-managed \
                     channels; this one has a host transport",
                ));
            }
            Some(Box::new(ExternalConnector::new(Arc::new(CHost::new(h))))
                as Box<dyn switchyard::Connector>)
        };
        let managed = connector.is_none();
        let transport = opts.transport()?;
        let on_state = on_state_change.map(|f| {
            let ctx = StateCtx(state_ctx);
            Arc::new(move |s: ConnectivityState| {
                // SAFETY: the host's callback with its ctx, on the loop thread.
                in_callback(|| unsafe { f(ctx.get(), state_to_c(s)) })
            }) as switchyard::StateCallback
        });
        let on_resolve_now = opts.resolve_now.map(|(f, ctx)| {
            let ctx = StateCtx(ctx);
            Arc::new(move || {
                // SAFETY: the host's callback with its ctx, on the loop thread.
                in_callback(|| unsafe { f(ctx.get()) })
            }) as Arc<dyn Fn() + Send + Sync>
        });
        let options = ChannelOptions {
            connector,
            transport,
            backoff: opts.backoff,
            on_state_change: on_state,
            on_resolve_now,
            authority: opts.authority.clone(),
            idle_timeout: opts.idle_timeout,
            resolver: opts.resolver.clone(),
            skip_pick_counts: opts.skip_pick_counts,
            disable_health_check: opts.disable_health_check,
            disable_retry: opts.disable_retry,
            ..Default::default()
        };
        // Read before `Channel::new`, whose log lines reach the host's log
        // callback, which may change or free the options handle.
        let call_threads = opts.call_threads;
        let channel = Channel::new(rt.get(), target, config, options)?;
        let pool = CallPool::new(call_threads);
        rt.register_pool(&pool);
        let ch = Box::into_raw(Box::new(sy_channel(Shell::new(ChannelBox {
            channel,
            release: release_user_data,
            managed,
            pool,
        }))));
        // SAFETY: non-NULL out-parameter, written on success only.
        unsafe { out.write(ch) };
        Ok(())
    })
}

/// External connector: the host reports what its transport for subchannel
/// `subchannel_id` did. `state` is a `sy_state`: READY = connected;
/// TRANSIENT_FAILURE = the attempt failed; IDLE = an established connection
/// ended; CONNECTING is accepted and ignored; SHUTDOWN and unknown numbers give
/// SY_INVALID_ARGUMENT. `message` (NULL allowed) says why, for failures.
/// Reports for subchannels that no longer exist are ignored, as are those
/// that do not fit the subchannel's state: READY when it is not connecting
/// (between attempts it waits out its backoff, then asks `connect` again),
/// TRANSIENT_FAILURE or IDLE when it is neither connecting nor connected.
/// Asynchronous: applied on the loop thread (use `sy_channel_sync` to wait
/// for it). Any thread, including inside the transport callbacks.
/// SY_INVALID_ARGUMENT on
/// a channel whose connections are the library's own (no `host`).
#[no_mangle]
pub extern "C" fn sy_channel_report_subconn_state(
    ch: *const sy_channel,
    subchannel_id: u64,
    state: u32,
    message: *const c_char,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        let Some(s) = state_from_c(state) else {
            return Err(Error::invalid(format!("unknown state number {state}")));
        };
        // SAFETY: NUL-terminated or NULL per the contract.
        let message = unsafe { opt_str_arg(message, "message") }?.unwrap_or("");
        ch.channel
            .report_subconn_state(SubConnId(subchannel_id), s, message)?;
        Ok(())
    })
}

/// External connector: the host reports the health of subchannel
/// `subchannel_id`'s backend, as its own check finds it (see
/// `sy_host_transport.health`), apart from the transport's state: `serving`
/// makes the connected subchannel READY; not serving makes it
/// TRANSIENT_FAILURE with `message` (NULL allowed: a generic one) as the
/// reason, the transport kept open. Counts only between the `health`
/// callback's start and stop for that subchannel; other reports (before the
/// transport is up, after a stop, for subchannels that no longer exist) are
/// ignored. Asynchronous: applied on the loop thread (use `sy_channel_sync`
/// to wait for it). Any thread, including inside the transport callbacks.
///
/// Errors: SY_NULL_PARAMETER, SY_INVALID_UTF8, SY_INVALID_ARGUMENT (a channel
/// whose connections are the library's own: their health comes from their
/// own health streams), SY_CLOSED, SY_RUNTIME_GONE.
#[no_mangle]
pub extern "C" fn sy_channel_report_subconn_health(
    ch: *const sy_channel,
    subchannel_id: u64,
    serving: bool,
    message: *const c_char,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        // SAFETY: NUL-terminated or NULL per the contract.
        let message = unsafe { opt_str_arg(message, "message") }?.unwrap_or("");
        ch.channel
            .report_subconn_health(SubConnId(subchannel_id), serving, message)?;
        Ok(())
    })
}

/// Leaves IDLE: a channel starts IDLE (no resolution, no connection) and
/// goes back after its idle timeout (`sy_channel_options_set_idle_timeout`);
/// this resolves and connects it without a pick or call. On a channel in
/// use, asks an IDLE policy to connect (ring_hash, as gRPC's, connects only
/// where picks land). Returns once the loop has done so (a channel that was
/// IDLE is CONNECTING by then; inside a callback, at once). Any thread.
#[no_mangle]
pub extern "C" fn sy_channel_connect(ch: *const sy_channel) -> sy_status {
    boundary(|| {
        let channel = &channel_ref(ch)?.channel;
        if inside_callback() {
            // At once, as documented: a callback on an RPC thread (a C
            // picker's, a completion's) must not wait for the loop.
            channel.request_connect()?;
        } else {
            channel.connect()?;
        }
        Ok(())
    })
}

/// gRPC's ResetConnectBackoff: every subchannel's connection backoff starts
/// over, and those waiting out a backoff after a failed attempt go IDLE at
/// once, so that the policy reconnects them now; a re-resolution waiting
/// out its pacing goes now too. Returns at once (the loop
/// does it); SY_CLOSED after `sy_channel_close`. Any thread.
#[no_mangle]
pub extern "C" fn sy_channel_reset_connect_backoff(ch: *const sy_channel) -> sy_status {
    boundary(|| {
        channel_ref(ch)?.channel.reset_connect_backoff()?;
        Ok(())
    })
}

/// Writes the channel's connectivity state (a `sy_state`) to `*out_state`.
/// After close it is SHUTDOWN. Any thread; never blocks (it reads the state
/// published with the channel's picker: after a pick, that picker's state).
#[no_mangle]
pub extern "C" fn sy_channel_state(ch: *const sy_channel, out_state: *mut u32) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        let out = try_out!(out_state, "out_state");
        // SAFETY: non-NULL out-parameter.
        unsafe { out.write(state_to_c(ch.channel.state())) };
        Ok(())
    })
}

/// gRPC's GetState(try_to_connect): writes the channel's connectivity state
/// (a `sy_state`) to `*out_state` and, if it is IDLE and `try_to_connect`,
/// leaves IDLE as `sy_channel_connect` does. After close: SHUTDOWN, SY_OK.
/// Any thread, also inside this library's callbacks; never blocks.
#[no_mangle]
pub extern "C" fn sy_channel_get_state(
    ch: *const sy_channel,
    try_to_connect: bool,
    out_state: *mut u32,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        let out = try_out!(out_state, "out_state");
        let state = ch.channel.get_state(try_to_connect);
        // SAFETY: non-NULL out-parameter.
        unsafe { out.write(state_to_c(state)) };
        Ok(())
    })
}

/// Blocks until the channel's state differs from `from_state` or changes
/// after this call (a change undone before the waiter wakes counts, as in
/// gRPC), or for at most `timeout_ms` milliseconds (`SY_WAIT_FOREVER`: no
/// limit; `SY_NO_WAIT`: only checks, SY_TIMEOUT at once if the state is still
/// `from_state`). On SY_OK the state now is written to `*out_state` (may be
/// NULL; `from_state` again after a change undone). SY_TIMEOUT: no change in
/// time. SY_CLOSED: `from_state` is SHUTDOWN (it never changes). Any thread
/// except inside this library's callbacks (SY_WRONG_CONTEXT).
#[no_mangle]
pub extern "C" fn sy_channel_wait_for_state_change(
    ch: *const sy_channel,
    from_state: u32,
    timeout_ms: u64,
    out_state: *mut u32,
) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        let Some(from) = state_from_c(from_state) else {
            return Err(Error::invalid(format!("unknown state number {from_state}")));
        };
        if from == ConnectivityState::Shutdown && ch.channel.state() == from {
            return Err(Error::new(sy_status::SY_CLOSED, "the channel is shut down"));
        }
        refuse_in_callback("cannot wait inside a switchyard callback (it would block the loop)")?;
        let Some(state) = ch
            .channel
            .wait_for_state_change(from, timeout_deadline(timeout_ms))
        else {
            return Err(Error::new(
                sy_status::SY_TIMEOUT,
                format!("state stayed {from} for {timeout_ms} ms"),
            ));
        };
        if !out_state.is_null() {
            // SAFETY: non-NULL out-parameter.
            unsafe { out_state.write(state_to_c(state)) };
        }
        Ok(())
    })
}

/// Waits until the loop has applied everything sent to this channel so far
/// (addresses, reports, config), and the policy work that asked for (such as
/// weighted_round_robin's rebuild and the state it publishes). Not needed in
/// production; handy in tests.
/// SY_CLOSED after close. Any thread except inside callbacks
/// (SY_WRONG_CONTEXT).
#[no_mangle]
pub extern "C" fn sy_channel_sync(ch: *const sy_channel) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        refuse_in_callback("cannot sync inside a switchyard callback")?;
        ch.channel.sync()?;
        Ok(())
    })
}

/// Closes the channel: shuts every subchannel down (the host's `shutdown`
/// callback runs for each), publishes SHUTDOWN, and wakes waiting picks with
/// SY_CLOSED. Calls in flight fail (SY_CLOSED); `sy_call_unary_start` calls
/// complete and the channel's completion threads are joined before this
/// returns. Later calls on the channel give SY_CLOSED; readers stay valid
/// (their picks give SY_CLOSED). Idempotent (SY_OK again). Blocks until done.
/// Any thread except inside callbacks (SY_WRONG_CONTEXT).
#[no_mangle]
pub extern "C" fn sy_channel_close(ch: *const sy_channel) -> sy_status {
    boundary(|| {
        let ch = channel_ref(ch)?;
        refuse_in_callback("cannot close inside a switchyard callback")?;
        ch.close();
        Ok(())
    })
}

/// Closes (as `sy_channel_close`: every `sy_call_unary_start` callback has
/// returned when this returns) and frees the channel. Readers made from it
/// stay valid and must still be freed (their picks give SY_CLOSED), in any
/// order; picks not yet done stay valid until `sy_pick_done`. NULL is a no-op.
/// A second free of the same handle is detected while the freed handle is in
/// a bounded quarantine (SY_INVALID_ARGUMENT in `sy_last_error`); after that
/// it is undefined, like free(3). Any thread; from inside a switchyard
/// callback (which closing would have to wait for) nothing happens and
/// SY_WRONG_CONTEXT is recorded for `sy_last_error`.
#[no_mangle]
pub extern "C" fn sy_channel_free(ch: *mut sy_channel) {
    boundary_or((), || {
        if ch.is_null() {
            return;
        }
        if free_refused_in_callback(
            "sy_channel_free: cannot free a channel inside a switchyard callback",
        ) {
            return;
        }
        // SAFETY: from `sy_channel_new`, live or quarantined per the
        // double-free note above; the projection forms no reference.
        if !unsafe { bury(ch, |h| std::ptr::addr_of_mut!((*h).0)) } {
            crate::error::set_last(Error::invalid("sy_channel_free: channel already freed"));
        }
    })
}
