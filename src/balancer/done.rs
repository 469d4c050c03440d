//! What a finished RPC tells the policy: its outcome and load (`DoneInfo`),
//! and the hooks a pick carries to hear it (`DoneHook`, chained in
//! `DoneHooks`).

use crate::balancer::subconn::SubConn;
use crate::status::Code;
use std::ptr::NonNull;
use std::time::Duration;

/// Outcome and load of a finished RPC, fed back to the picker's done hook.
///
/// `code` and `error` say the same thing at two levels of detail: `code` is
/// `Code::Ok` exactly when `error` is `None`. Policies that count outcomes
/// (outlier detection's success rate, weighted_round_robin's errors per
/// second) read `code`; `error` is for logs. Build one with the
/// constructors or with `..Default::default()` (the default is an OK
/// outcome with no latency and no load), so that fields added later do
/// not break the construction.
#[derive(Clone, Copy, Debug)]
pub struct DoneInfo<'a> {
    /// `None` when the RPC succeeded.
    pub error: Option<&'a str>,
    /// The RPC's gRPC status code (`Code::Ok` when it succeeded).
    pub code: Code,
    /// How long the RPC took.
    pub latency: Duration,
    /// Named load metrics from the server (ORCA-style: `cpu_utilization`, `qps`, `eps`, ...).
    pub load: &'a [(&'a str, f64)],
}

impl Default for DoneInfo<'_> {
    fn default() -> Self {
        DoneInfo::OK
    }
}

impl<'a> DoneInfo<'a> {
    /// A successful RPC, no latency, no load.
    pub const OK: DoneInfo<'static> = DoneInfo {
        error: None,
        code: Code::Ok,
        latency: Duration::ZERO,
        load: &[],
    };

    /// An RPC that ended with `code`: `error` is `message` unless the code
    /// is `Ok` (then `None`, whatever `message` says).
    pub fn new(code: Code, message: &'a str, latency: Duration) -> DoneInfo<'a> {
        DoneInfo {
            error: (code != Code::Ok).then_some(message),
            code,
            latency,
            load: &[],
        }
    }

    /// Whether the RPC succeeded.
    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }
}

/// Called once per completed pick that carried it, from whichever thread ends the RPC.
pub trait DoneHook: Send + Sync {
    /// The RPC that picked `subconn` finished. Must not block.
    fn done(&self, subconn: &SubConn, info: &DoneInfo<'_>);
}

/// The done hooks one pick carries: a short chain, innermost first (the
/// hook of the picker that chose the subchannel), then the hook each
/// wrapping picker added on its way out (outlier detection over
/// weighted_round_robin: WRR's hook, then the outlier detector's).
///
/// When the RPC ends every hook is called exactly once, **outermost
/// first**, as gRPC-Go's wrapping pickers call them: each wrapper's `Done`
/// does its own work and then calls its child's (outlier detection counts,
/// then calls the child's `Done`; least_request decrements its counter,
/// weighted_round_robin takes the load report, each before the child's).
/// A fixed array of plain references:
/// making, copying and passing a chain allocates nothing and takes no lock.
///
/// It holds at most [`DoneHooks::CAPACITY`] hooks. Adding one more is
/// refused (`with_outer` returns `Err`) rather than silently dropping
/// anyone's hook; a picker nested deeper than that should fail the pick
/// (`PickResult::Fail` with an INTERNAL status): it is a policy tree the
/// library does not support.
#[derive(Clone, Copy, Default)]
pub struct DoneHooks<'a> {
    /// Filled from index 0; `None` after the last hook.
    hooks: [Option<&'a (dyn DoneHook + 'static)>; DONE_HOOKS],
}

/// `DoneHooks::CAPACITY`, for array lengths.
pub(crate) const DONE_HOOKS: usize = 2;

/// A chain already holds `DoneHooks::CAPACITY` hooks (see `DoneHooks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoneHooksFull;

impl std::fmt::Display for DoneHooksFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a pick carries at most {} done hooks: the policy tree nests too deep",
            DoneHooks::CAPACITY
        )
    }
}

impl std::error::Error for DoneHooksFull {}

impl<'a> DoneHooks<'a> {
    /// The most hooks one pick carries.
    pub const CAPACITY: usize = DONE_HOOKS;

    /// No hook: nobody wants the outcome.
    pub const NONE: DoneHooks<'static> = DoneHooks {
        hooks: [None; DONE_HOOKS],
    };

    /// A chain of one hook (the picker that chose the subchannel).
    #[inline]
    pub fn one(hook: &'a (dyn DoneHook + 'static)) -> DoneHooks<'a> {
        let mut hooks = [None; DONE_HOOKS];
        hooks[0] = Some(hook);
        DoneHooks { hooks }
    }

    /// This chain with `outer` added after the others: what a wrapping
    /// picker returns for its child's pick. `Err` when the chain is full
    /// (see the type's documentation).
    #[inline]
    pub fn with_outer(
        mut self,
        outer: &'a (dyn DoneHook + 'static),
    ) -> Result<DoneHooks<'a>, DoneHooksFull> {
        match self.hooks.iter_mut().find(|h| h.is_none()) {
            Some(slot) => {
                *slot = Some(outer);
                Ok(self)
            }
            None => Err(DoneHooksFull),
        }
    }

    /// No hook at all.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.hooks[0].is_none()
    }

    /// How many hooks.
    pub fn len(&self) -> usize {
        self.hooks.iter().take_while(|h| h.is_some()).count()
    }

    /// The hooks, innermost first (the order they were chained in;
    /// `report` calls them the other way round).
    pub fn iter(&self) -> impl Iterator<Item = &'a (dyn DoneHook + 'static)> + '_ {
        self.hooks.iter().map_while(|h| *h)
    }

    /// Calls every hook, outermost first (gRPC-Go's order: a wrapping
    /// picker's `Done` before its child's), with the RPC's outcome. The
    /// library does this once per pick (`Pick::done` or drop); a test or
    /// a parent that finishes picks itself calls it once too.
    pub fn report(&self, subconn: &SubConn, info: &DoneInfo<'_>) {
        for hook in self.hooks.iter().rev().flatten() {
            hook.done(subconn, info);
        }
    }

    /// A chain back from `raw`.
    ///
    /// # Safety
    /// `raw` came from `DoneHooks::raw` and what it points to lives for `'a`.
    #[inline(always)]
    pub(crate) unsafe fn from_raw(raw: RawHooks) -> DoneHooks<'a> {
        // SAFETY: per the function's contract.
        DoneHooks {
            hooks: raw.map(|h| h.map(|p| unsafe { &*p.as_ptr() })),
        }
    }

    /// The hooks as raw pointers, for a pick that outlives the borrow.
    #[inline(always)]
    pub(crate) fn raw(&self) -> RawHooks {
        self.hooks.map(|h| h.map(NonNull::from))
    }
}

impl std::fmt::Debug for DoneHooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DoneHooks({})", self.len())
    }
}

/// A chain's hooks as pointers into the picker that returned them (the
/// reader's `Pick` keeps that picker alive).
pub(crate) type RawHooks = [Option<NonNull<dyn DoneHook>>; DONE_HOOKS];
