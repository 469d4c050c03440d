//! What the library logs, and where it goes.
//!
//! switchyard logs through the [`log`] facade, each record under one of the
//! targets below (`switchyard::channel`, …), from the event loop thread
//! (a channel's creation and its first checks log on the thread creating
//! it, DNS lookups on their own threads): channel and subchannel state changes with their reason, resolver results
//! and errors, policy switches and config changes, connection failures with
//! the peer's address, GOAWAYs and health changes. Nothing is logged on the
//! pick path (`Reader::pick`, `Reader::finish` and the done hooks never log).
//!
//! Where the records go:
//! - **A Rust host with its own logger** (`env_logger`, `tracing-log`, …)
//!   gets them like any crate's: filter by target there, e.g.
//!   `RUST_LOG=switchyard::subchannel=info`. The library never replaces a
//!   logger the host installed.
//! - **No logger installed**: the library's own sink writes to stderr, and
//!   only when switched on by environment variables, read when the first
//!   channel is created (no rebuild needed, as gRPC's `GRPC_TRACE` /
//!   `GRPC_VERBOSITY`):
//!   - `SWITCHYARD_TRACE`: a comma-separated list of `channel`,
//!     `subchannel`, `transport`, `resolver`, `health`, or `all`;
//!   - `SWITCHYARD_VERBOSITY`: `error`, `warn`, `info`, `debug` or `trace`
//!     (default `debug` when `SWITCHYARD_TRACE` is set; set alone, it turns
//!     on every category at that level).
//! - **A callback** ([`set_callback`]; `sy_log_set_callback` in C) receives
//!   every switchyard record up to its level instead of stderr.
//!
//! Installing the sink (for the environment variables when the first channel
//! is created, or for [`set_callback`]) uses `log::set_logger`, so a Rust host
//! that wants its own logger must install it before either.

pub use log::{Level, LevelFilter};
use log::{Log, Metadata, Record};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock};

/// Channel state changes (with the reason), policy switches, config changes.
pub const CHANNEL: &str = "switchyard::channel";
/// Subchannel state changes with the error that caused them.
pub const SUBCHANNEL: &str = "switchyard::subchannel";
/// Connection failures and losses with the peer's address; GOAWAYs.
pub const TRANSPORT: &str = "switchyard::transport";
/// Name resolution results and errors.
pub const RESOLVER: &str = "switchyard::resolver";
/// Client-side health checking (gRFC A17) results.
pub const HEALTH: &str = "switchyard::health";

const CATEGORIES: [&str; 5] = ["channel", "subchannel", "transport", "resolver", "health"];

/// Receives one record: its level, its target (`switchyard::…`) and message.
pub type LogCallback = Arc<dyn Fn(Level, &str, &str) + Send + Sync>;

/// What the environment variables switched on for stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EnvFilter {
    /// Bit `i` set: `CATEGORIES[i]` is on.
    categories: u8,
    level: LevelFilter,
}

impl EnvFilter {
    fn parse(trace: Option<&str>, verbosity: Option<&str>) -> Option<EnvFilter> {
        let level = match verbosity.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => parse_level(v)?,
            None => LevelFilter::Debug,
        };
        let categories = match trace.map(str::trim) {
            None | Some("") if verbosity.is_some() => 0x1f,
            None | Some("") => return None,
            Some(list) => {
                list.split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .fold(0u8, |bits, c| {
                        if c == "all" {
                            0x1f
                        } else {
                            bits | CATEGORIES
                                .iter()
                                .position(|k| *k == c)
                                .map_or(0, |i| 1 << i)
                        }
                    })
            }
        };
        (categories != 0 && level != LevelFilter::Off).then_some(EnvFilter { categories, level })
    }

    fn from_env() -> Option<EnvFilter> {
        let trace = std::env::var("SWITCHYARD_TRACE").ok();
        let verbosity = std::env::var("SWITCHYARD_VERBOSITY").ok();
        EnvFilter::parse(trace.as_deref(), verbosity.as_deref())
    }

    fn allows(&self, level: Level, target: &str) -> bool {
        level <= self.level && category(target).is_some_and(|i| self.categories & (1 << i) != 0)
    }
}

fn parse_level(v: &str) -> Option<LevelFilter> {
    match v.to_ascii_lowercase().as_str() {
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        "none" | "off" => Some(LevelFilter::Off),
        _ => None,
    }
}

fn category(target: &str) -> Option<usize> {
    let rest = target.strip_prefix("switchyard::")?;
    let head = rest.split("::").next().unwrap_or(rest);
    CATEGORIES.iter().position(|k| *k == head)
}

struct Route {
    callback: LogCallback,
    max: LevelFilter,
}

/// The library's own logger: the callback if one is set, else stderr as the
/// environment says.
struct Sink {
    env: OnceLock<Option<EnvFilter>>,
    route: RwLock<Option<Arc<Route>>>,
    /// Signalled whenever a callback invocation lets go of its `Route`.
    released: (Mutex<()>, Condvar),
}

static SINK: Sink = Sink {
    env: OnceLock::new(),
    route: RwLock::new(None),
    released: (Mutex::new(()), Condvar::new()),
};
/// `SINK` is the process's logger.
static INSTALLED: AtomicBool = AtomicBool::new(false);
static INIT: OnceLock<()> = OnceLock::new();

thread_local! {
    /// The route whose callback this thread is inside (null when none):
    /// records it causes are dropped (a callback that calls into the
    /// library must not recurse forever), and `set_callback` called from
    /// it knows which reference to the route is its own.
    static IN_CALLBACK: Cell<*const Route> = const { Cell::new(std::ptr::null()) };
}

/// Whether this thread is inside a log callback (true during thread
/// teardown, when it cannot tell).
fn in_callback() -> bool {
    IN_CALLBACK.try_with(|c| !c.get().is_null()).unwrap_or(true)
}

impl Sink {
    fn env(&self) -> Option<&EnvFilter> {
        self.env.get_or_init(EnvFilter::from_env).as_ref()
    }

    fn route(&self) -> Option<Arc<Route>> {
        self.route
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn max_level(&self) -> LevelFilter {
        let env = self.env().map_or(LevelFilter::Off, |e| e.level);
        // Read under the lock, not through a clone: a clone dropped without
        // `release` would leave `set_callback` waiting for a wake-up that
        // never comes.
        let cb = self
            .route
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(LevelFilter::Off, |r| r.max);
        env.max(cb)
    }

    /// Hands `route` back under the lock `set_callback` waits on, so that
    /// it cannot miss the release.
    fn release(&self, route: Arc<Route>) {
        let guard = self
            .released
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(route);
        self.released.1.notify_all();
        drop(guard);
    }
}

impl Log for Sink {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("switchyard") && metadata.level() <= self.max_level()
    }

    fn log(&self, record: &Record<'_>) {
        let (level, target) = (record.level(), record.target());
        // During thread teardown (no thread-locals left) records are dropped.
        if !target.starts_with("switchyard") || in_callback() {
            return;
        }
        if let Some(route) = self.route() {
            if level <= route.max {
                let message = record.args().to_string();
                let _ = IN_CALLBACK.try_with(|c| c.set(Arc::as_ptr(&route)));
                // A panicking callback loses its record, nothing more.
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    (route.callback)(level, target, &message)
                }));
                let _ = IN_CALLBACK.try_with(|c| c.set(std::ptr::null()));
            }
            self.release(route);
            return;
        }
        if self.env().is_some_and(|e| e.allows(level, target)) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            eprintln!(
                "{}.{:03} {:<5} {}: {}",
                now.as_secs(),
                now.subsec_millis(),
                level,
                target,
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

/// Installs the library's sink when no logger is installed yet; true when
/// it is the process's logger (now or already).
fn install() -> bool {
    if INSTALLED.load(Ordering::Acquire) {
        return true;
    }
    if log::set_logger(&SINK).is_ok() {
        INSTALLED.store(true, Ordering::Release);
    }
    INSTALLED.load(Ordering::Acquire)
}

/// Reads the environment variables once (the first channel calls this) and,
/// when they switch logging on and the host installed no logger, installs
/// the stderr sink.
pub(crate) fn init() {
    INIT.get_or_init(|| {
        if SINK.env().is_some() && install() {
            log::set_max_level(SINK.max_level());
        }
    });
}

/// Routes every switchyard record up to `max` to `callback` (on the thread
/// that logs, usually the event loop's) instead of stderr; `None` removes the
/// callback. Records the callback causes itself (by calling into the library)
/// are dropped; a panic in it is caught.
///
/// When this returns, no other thread is still inside the previous callback,
/// so whatever it captured may be freed (a callback replacing itself does not
/// wait for itself, but does wait for the other threads inside it).
///
/// Fails with `Error::InvalidArgument` when the host installed a logger of its
/// own: records then go to that logger.
pub fn set_callback(
    callback: Option<LogCallback>,
    max: LevelFilter,
) -> Result<(), crate::error::Error> {
    if !install() {
        return Err(crate::error::Error::InvalidArgument(
            "the host installed its own `log` logger; switchyard's records go there".into(),
        ));
    }
    let new = callback.map(|callback| Arc::new(Route { callback, max }));
    let old = std::mem::replace(
        &mut *SINK.route.write().unwrap_or_else(PoisonError::into_inner),
        new,
    );
    log::set_max_level(SINK.max_level());
    if let Some(old) = old {
        // Every other thread's reference must go; a callback replacing
        // itself holds one of its own, which it does not wait for.
        let own = IN_CALLBACK.try_with(Cell::get).unwrap_or(std::ptr::null());
        let mine = usize::from(std::ptr::eq(own, Arc::as_ptr(&old)));
        // Bounded by the callbacks in progress returning.
        let mut guard = SINK
            .released
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while Arc::strong_count(&old) > 1 + mine {
            guard = SINK
                .released
                .1
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_switches_categories_and_level() {
        assert_eq!(EnvFilter::parse(None, None), None);
        let f = EnvFilter::parse(Some("channel, Subchannel"), None).unwrap();
        assert_eq!(f.level, LevelFilter::Debug);
        assert!(f.allows(Level::Info, CHANNEL));
        assert!(f.allows(Level::Debug, SUBCHANNEL));
        assert!(!f.allows(Level::Info, TRANSPORT));
        assert!(!f.allows(Level::Info, "rustls::client"));
        let f = EnvFilter::parse(Some("all"), Some("error")).unwrap();
        assert!(f.allows(Level::Error, HEALTH));
        assert!(!f.allows(Level::Info, HEALTH));
        let f = EnvFilter::parse(None, Some("info")).unwrap();
        assert!(f.allows(Level::Info, RESOLVER));
        // Nothing recognisable switches nothing on.
        assert_eq!(EnvFilter::parse(Some("bogus"), None), None);
        assert_eq!(EnvFilter::parse(Some("all"), Some("loud")), None);
        assert_eq!(EnvFilter::parse(Some("all"), Some("off")), None);
    }
}
