//! The loop's timers: a min-heap of deadlines, each for one task, with a key
//! only that task reads. Cancelled entries are skipped lazily.

use super::TaskId;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// What a timer is for, as the task that armed it reads it: a kind of the
/// task's own (each owner of timers inside a task names its kinds, see
/// `crate::channel::timer_kinds`) and a number (a subchannel id, a token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    pub(crate) kind: u8,
    pub(crate) id: u64,
}

impl TimerKey {
    pub(crate) fn new(kind: u8, id: u64) -> TimerKey {
        TimerKey { kind, id }
    }
}

/// A min-heap of deadlines; cancelled entries are skipped lazily.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, (TaskId, TimerKey)>,
    next: u64,
}

impl Timers {
    /// Arms a timer for `task` at `at`; the id is for `cancel`.
    pub(crate) fn schedule(&mut self, at: Instant, task: TaskId, key: TimerKey) -> u64 {
        self.next += 1;
        self.heap.push(Reverse((at, self.next)));
        self.live.insert(self.next, (task, key));
        self.next
    }

    /// Disarms a timer; unknown or fired ids are ignored.
    pub(crate) fn cancel(&mut self, id: u64) {
        self.live.remove(&id);
    }

    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if self.live.contains_key(&id) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(TaskId, TimerKey)> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Some(t) = self.live.remove(&id) {
                return Some(t);
            }
        }
        None
    }
}
