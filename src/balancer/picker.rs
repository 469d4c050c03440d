//! Pickers: immutable tables RPC threads pick from, and what a pick returns.

use crate::status::Status;
use crate::balancer::rotation::Rotation;
use crate::balancer::subconn::SubConn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the RPC tells the picker about itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickInfo<'a> {
    /// Full method name, `/pkg.Service/Method`.
    pub method: &'a str,
    /// Request hash for hashing policies (`ring_hash`); `None` when the RPC has none.
    pub hash: Option<u64>,
}

/// Outcome and load of a finished RPC, fed back to the picker's done hook.
#[derive(Clone, Copy, Debug, Default)]
pub struct DoneInfo<'a> {
    /// `None` when the RPC succeeded.
    pub error: Option<&'a str>,
    /// How long the RPC took.
    pub latency: Duration,
    /// Named load metrics from the server (ORCA-style: `cpu_utilization`, `qps`, `eps`, ...).
    pub load: &'a [(&'a str, f64)],
}

/// Called once per completed pick that carried it, from whichever thread ends the RPC.
pub trait DoneHook: Send + Sync {
    /// The RPC that picked `subconn` finished. Must not block.
    fn done(&self, subconn: &SubConn, info: &DoneInfo<'_>);
}

/// A pick's result. `'a` borrows from the picker, which the channel keeps alive
/// until the pick is done.
pub enum PickResult<'a> {
    /// Use this subchannel; call `done` (if any) when the RPC ends.
    Complete {
        /// The subchannel to send the RPC on.
        subconn: &'a SubConn,
        /// Told the outcome when the RPC ends, if set.
        done: Option<&'a (dyn DoneHook + 'static)>,
    },
    /// Nothing usable yet: wait for the next picker (gRPC's `ErrNoSubConnAvailable`).
    Queue,
    /// Fail the RPC with this status unless it is wait-for-ready (then queue).
    Fail(&'a Status),
    /// Fail the RPC now, even wait-for-ready; never retried.
    Drop(&'a Status),
}

/// Per-reader scratch a picker may use instead of shared mutable state: a
/// round-robin cursor (starting at a random offset) and a random generator.
/// Living in the reader, it keeps the pick path free of shared writes.
#[derive(Clone, Debug)]
pub struct PickLocal {
    cursor: usize,
    rng: u64,
}

impl PickLocal {
    /// Scratch seeded with `seed` (the cursor starts at a seed-derived offset).
    pub fn new(seed: u64) -> PickLocal {
        let mut local = PickLocal {
            cursor: 0,
            rng: seed | 1,
        };
        local.cursor = (local.random() >> 1) as usize;
        local
    }

    /// The next index of a rotation over `len` entries (`len > 0`; 0 for an
    /// empty one rather than a panic, so the pick path has no panic at all).
    #[inline]
    pub fn next_index(&mut self, len: usize) -> usize {
        let mut i = self.cursor;
        if i >= len {
            i = i.checked_rem(len).unwrap_or(0);
        }
        self.cursor = if i + 1 == len { 0 } else { i + 1 };
        i
    }

    /// xorshift64*: fast, good enough for load balancing, never zero.
    #[inline]
    pub fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniform index below `n` (`n > 0`), without a division.
    #[inline]
    pub fn random_below(&mut self, n: usize) -> usize {
        (((self.random() >> 32) * n as u64) >> 32) as usize
    }
}

/// An immutable pick table. Called concurrently from any RPC thread: must not
/// block, do I/O or write shared state.
pub trait Picker: Send + Sync + 'static {
    /// Picks for one RPC. Wait-free in practice: no lock, no I/O, no shared write.
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a>;

    /// If this picker always completes with the same subchannel and no done
    /// hook, that subchannel: parents may then pick it directly (flattening).
    fn single(&self) -> Option<&Arc<SubConn>> {
        None
    }

    /// If this picker is a plain rotation (no done hook, each entry once per
    /// cycle), that rotation: readers then rotate inline without calling
    /// `pick`. Only the crate builds a `Rotation`; a picker of its own can
    /// only pass on the one of a picker it holds.
    fn rotation(&self) -> Option<&Rotation> {
        None
    }
}

/// Queues every pick (CONNECTING, or before the first resolver result).
pub struct QueuePicker;

impl Picker for QueuePicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        PickResult::Queue
    }
}

/// Fails every pick with one status (TRANSIENT_FAILURE).
pub struct FailPicker(pub Status);

impl FailPicker {
    /// Fails every pick with UNAVAILABLE and `message`.
    pub fn unavailable(message: impl Into<Arc<str>>) -> FailPicker {
        FailPicker(Status::unavailable(message))
    }
}

impl Picker for FailPicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        PickResult::Fail(&self.0)
    }
}

/// Drops every pick with one status.
pub struct DropPicker(pub Status);

impl Picker for DropPicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        PickResult::Drop(&self.0)
    }
}

/// Always the same subchannel (pick_first when READY), also offered as a
/// rotation of one entry so that readers pick it inline, as for round_robin,
/// without calling the picker.
pub struct SinglePicker {
    subconn: Arc<SubConn>,
    rotation: Rotation,
}

impl SinglePicker {
    /// Always picks `subconn`.
    pub fn new(subconn: Arc<SubConn>) -> SinglePicker {
        let rotation = Rotation::over(Arc::from([subconn.clone()]), 1).expect("one entry");
        SinglePicker { subconn, rotation }
    }
}

impl Picker for SinglePicker {
    #[inline]
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        PickResult::Complete {
            subconn: &self.subconn,
            done: None,
        }
    }

    fn single(&self) -> Option<&Arc<SubConn>> {
        Some(&self.subconn)
    }

    fn rotation(&self) -> Option<&Rotation> {
        Some(&self.rotation)
    }
}

/// Asks the loop to leave IDLE, once, then queues (pick_first after its
/// connection closed).
pub struct IdlePicker {
    trigger: crate::channel::IdleTrigger,
    fired: AtomicBool,
}

impl IdlePicker {
    /// Fires `trigger` on the first pick (`ClientConn::idle_trigger`).
    pub fn new(trigger: crate::channel::IdleTrigger) -> IdlePicker {
        IdlePicker {
            trigger,
            fired: AtomicBool::new(false),
        }
    }
}

impl Picker for IdlePicker {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        // Load first so repeated picks don't keep writing the shared line.
        if !self.fired.load(Ordering::Relaxed) && !self.fired.swap(true, Ordering::AcqRel) {
            self.trigger.exit_idle();
        }
        PickResult::Queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_visits_each_index_once_per_cycle() {
        let mut l = PickLocal::new(42);
        let mut seen = [0u32; 7];
        for _ in 0..70 {
            seen[l.next_index(7)] += 1;
        }
        assert_eq!(seen, [10; 7]);
        // Shrinking the table keeps indices in range.
        for _ in 0..10 {
            assert!(l.next_index(2) < 2);
        }
    }

    #[test]
    fn random_below_covers_range() {
        let mut l = PickLocal::new(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            seen[l.random_below(5)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
