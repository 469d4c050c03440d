//! `sy_log_set_callback`: the library's log records (channel and subchannel
//! state changes with their reason, resolver results, connection errors,
//! GOAWAYs, health changes) delivered to a C function.
//!
//! Without a callback, records go to stderr only when the environment asks:
//! `SWITCHYARD_TRACE=channel,subchannel,transport,resolver,health` (or
//! `all`) and/or `SWITCHYARD_VERBOSITY=error|warn|info|debug|trace`, read
//! when the first channel is created.

use crate::error::Error;
use crate::macros::{boundary, in_callback};
use crate::status::sy_status;
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use switchyard::trace::{self, Level, LevelFilter, LogCallback};

// Log levels (`sy_log_set_callback`'s `max_level`, a record's `level`).

/// No records (as `max_level`: removes the callback).
pub const SY_LOG_OFF: u32 = 0;
/// Something failed that the library cannot recover from by itself.
pub const SY_LOG_ERROR: u32 = 1;
/// Connection failures and losses, resolver errors.
pub const SY_LOG_WARN: u32 = 2;
/// State changes, GOAWAYs, health changes, resolver results, policy switches.
pub const SY_LOG_INFO: u32 = 3;
/// Subchannels created, address lists handed to the policy.
pub const SY_LOG_DEBUG: u32 = 4;
/// Everything.
pub const SY_LOG_TRACE: u32 = 5;

/// Receives one log record: its level (`SY_LOG_ERROR` ... `SY_LOG_TRACE`), its
/// target (`switchyard::channel`, `switchyard::subchannel`,
/// `switchyard::transport`, `switchyard::resolver`, `switchyard::health`)
/// and its message, both UTF-8 `(pointer, length)` pairs that are also
/// NUL-terminated, valid for the call only. Called on whichever thread logs
/// (mostly the event loop's; also threads creating channels and the DNS
/// resolver's), possibly concurrently: it must be thread-safe and must not
/// block. It may call `sy_*` functions that do not block; blocking ones give
/// SY_WRONG_CONTEXT. Records its own calls cause are dropped.
pub type sy_log_fn = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        level: u32,
        target: *const c_char,
        target_len: usize,
        message: *const c_char,
        message_len: usize,
    ),
>;

struct LogCtx(*mut c_void);
// SAFETY: only handed back to the host's callback, which the contract of
// `sy_log_set_callback` makes callable from any thread with this ctx.
unsafe impl Send for LogCtx {}
// SAFETY: as above.
unsafe impl Sync for LogCtx {}

impl LogCtx {
    // A method, so closures capture the whole (Send) wrapper, not the field.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

fn level_filter(n: u32) -> Option<LevelFilter> {
    use LevelFilter::*;
    [Off, Error, Warn, Info, Debug, Trace]
        .get(n as usize)
        .copied()
}

/// `text` followed by a NUL, for C (the length passed excludes the NUL, so
/// an interior NUL cuts nothing for a reader that uses it).
fn nul_terminated(text: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(text.len() + 1);
    v.extend_from_slice(text.as_bytes());
    v.push(0);
    v
}

/// Sends the library's log records up to `max_level` (`SY_LOG_ERROR` ...
/// `SY_LOG_TRACE`) to `callback` with `ctx`, instead of stderr. A NULL
/// `callback` or `SY_LOG_OFF` removes it. Process-wide; any thread.
///
/// Without a callback, records go to stderr only when the environment asks:
/// `SWITCHYARD_TRACE=channel,subchannel,transport,resolver,health` (or `all`)
/// and/or `SWITCHYARD_VERBOSITY=error|warn|info|debug|trace`, read when the
/// first channel is created.
///
/// When this returns, no other thread is still running the previous callback,
/// so its `ctx` may be freed (when called from inside the callback itself it
/// does not wait for itself). SY_INVALID_ARGUMENT: an unknown level, or (in a
/// Rust program) a `log` logger of the program's own is installed.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_log_set_callback(
    callback: sy_log_fn,
    ctx: *mut c_void,
    max_level: u32,
) -> sy_status {
    boundary(|| {
        let max = level_filter(max_level)
            .ok_or_else(|| Error::invalid(format!("unknown log level {max_level}")))?;
        let callback: Option<LogCallback> = match callback {
            Some(f) if max != LevelFilter::Off => {
                let ctx = LogCtx(ctx);
                Some(Arc::new(
                    move |level: Level, target: &str, message: &str| {
                        let t = nul_terminated(target);
                        let m = nul_terminated(message);
                        in_callback(|| {
                            // SAFETY: the host gave a function of this type and
                            // promised it callable from any thread with `ctx`;
                            // both strings live until it returns.
                            unsafe {
                                f(
                                    ctx.get(),
                                    level as u32,
                                    t.as_ptr().cast(),
                                    target.len(),
                                    m.as_ptr().cast(),
                                    message.len(),
                                )
                            }
                        })
                    },
                ))
            }
            _ => None,
        };
        trace::set_callback(callback, max)?;
        Ok(())
    })
}

// The numbers are `log::Level`'s, which the cast above relies on.
const _: () = {
    assert!(Level::Error as u32 == SY_LOG_ERROR);
    assert!(Level::Warn as u32 == SY_LOG_WARN);
    assert!(Level::Info as u32 == SY_LOG_INFO);
    assert!(Level::Debug as u32 == SY_LOG_DEBUG);
    assert!(Level::Trace as u32 == SY_LOG_TRACE);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sy_status_str;
    use std::sync::Mutex;

    struct Seen {
        lines: Mutex<Vec<(u32, String, String)>>,
    }

    unsafe extern "C" fn record(
        ctx: *mut c_void,
        level: u32,
        target: *const c_char,
        target_len: usize,
        message: *const c_char,
        message_len: usize,
    ) {
        // SAFETY: ctx is the test's `Seen`, alive until the callback is
        // removed; the strings are valid for the call.
        let (seen, target, message) = unsafe {
            (
                &*(ctx as *const Seen),
                std::slice::from_raw_parts(target.cast::<u8>(), target_len),
                std::slice::from_raw_parts(message.cast::<u8>(), message_len),
            )
        };
        // Re-entrant: a callback may set the callback (here: itself again),
        // and call a non-blocking entry point, without deadlock.
        if message.ends_with(b"-> READY") {
            assert_eq!(
                sy_log_set_callback(Some(record), ctx, SY_LOG_INFO),
                sy_status::SY_OK
            );
            // SAFETY: a static string.
            let _ = unsafe { std::ffi::CStr::from_ptr(sy_status_str(0)) };
        }
        seen.lines.lock().unwrap().push((
            level,
            String::from_utf8_lossy(target).into_owned(),
            String::from_utf8_lossy(message).into_owned(),
        ));
    }

    #[test]
    fn c_callback_hears_a_channels_state_changes() {
        use switchyard_testserver::{Listen, ServerOptions, TestServer};
        let seen = Box::new(Seen {
            lines: Mutex::new(Vec::new()),
        });
        let ctx = &*seen as *const Seen as *mut c_void;
        assert_eq!(
            sy_log_set_callback(Some(record), ctx, 9),
            sy_status::SY_INVALID_ARGUMENT
        );
        assert_eq!(
            sy_log_set_callback(Some(record), ctx, SY_LOG_INFO),
            sy_status::SY_OK
        );

        let backend = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap();
        let addr = backend.addr().to_string();
        let rt = switchyard::Runtime::new().unwrap();
        let ch = switchyard::Channel::new(
            &rt,
            &format!("ipv4:{addr}"),
            None,
            switchyard::ChannelOptions {
                transport: Some(switchyard::TransportConfig::insecure()),
                ..Default::default()
            },
        )
        .unwrap();
        ch.connect().unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        ch.wait_for_state_change(switchyard::ConnectivityState::Idle, Some(until));
        ch.wait_for_state_change(switchyard::ConnectivityState::Connecting, Some(until));
        ch.close();
        // Removed: after this returns the ctx may go.
        assert_eq!(
            sy_log_set_callback(None, std::ptr::null_mut(), SY_LOG_OFF),
            sy_status::SY_OK
        );
        let lines = seen.lines.lock().unwrap().clone();
        drop(seen);
        let ours: Vec<_> = lines.iter().filter(|(_, _, m)| m.contains(&addr)).collect();
        assert!(
            ours.iter().any(|(l, t, m)| *l == SY_LOG_INFO
                && t == "switchyard::subchannel"
                && m.ends_with("CONNECTING -> READY")),
            "{ours:#?}"
        );
        assert!(
            ours.iter()
                .any(|(_, t, m)| t == "switchyard::channel" && m.contains("-> SHUTDOWN")),
            "{ours:#?}"
        );
        // Nothing above the level asked for.
        assert!(
            lines.iter().all(|(l, _, _)| *l <= SY_LOG_INFO),
            "{lines:#?}"
        );
    }
}
