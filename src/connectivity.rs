//! Connectivity states and how many of them aggregate into one.

use std::ffi::CStr;
use std::fmt;

/// The five connectivity states of gRPC. The numbers are ABI (C-core and
/// gRPC-Go use the same ones) and never change.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectivityState {
    /// Not connected, and not trying to be until asked (a call, `connect`).
    Idle = 0,
    /// Connecting (or waiting for a health verdict).
    Connecting = 1,
    /// Ready for calls.
    Ready = 2,
    /// Failing: calls fail fast (unless wait-for-ready) while it retries
    /// with backoff.
    TransientFailure = 3,
    /// Closed for good.
    Shutdown = 4,
}

impl ConnectivityState {
    /// The state with ABI number `n`, if there is one.
    pub fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            0 => Self::Idle,
            1 => Self::Connecting,
            2 => Self::Ready,
            3 => Self::TransientFailure,
            4 => Self::Shutdown,
            _ => return None,
        })
    }

    /// The state's name ("READY").
    pub fn as_str(self) -> &'static str {
        // The names are ASCII, so never "".
        self.as_cstr().to_str().unwrap_or("")
    }

    /// The state's name as a static NUL-terminated string (for C).
    pub fn as_cstr(self) -> &'static CStr {
        match self {
            Self::Idle => c"IDLE",
            Self::Connecting => c"CONNECTING",
            Self::Ready => c"READY",
            Self::TransientFailure => c"TRANSIENT_FAILURE",
            Self::Shutdown => c"SHUTDOWN",
        }
    }
}

impl fmt::Display for ConnectivityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The picker error of an aggregate with nothing to aggregate.
pub const NO_CHILDREN: &str = "no children to pick from";

/// gRPC's default aggregation rule: any READY wins, then CONNECTING, then IDLE,
/// else TRANSIENT_FAILURE — including when there is nothing at all. SHUTDOWN
/// children are ignored. (The loop keeps `StateCounts` instead; this is the
/// rule as the tests state it.)
#[cfg(test)]
pub fn aggregate<I: IntoIterator<Item = ConnectivityState>>(states: I) -> ConnectivityState {
    let mut counts = StateCounts::default();
    for s in states {
        counts.add(s);
    }
    counts.aggregate()
}

/// Per-state counters that are cheaper than re-scanning every child on each
/// transition (gRPC-Go's `ConnectivityStateEvaluator`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub idle: usize,
    pub connecting: usize,
    pub ready: usize,
    pub transient_failure: usize,
}

impl StateCounts {
    pub fn add(&mut self, s: ConnectivityState) {
        if let Some(c) = self.slot(s) {
            *c += 1;
        }
    }

    pub fn remove(&mut self, s: ConnectivityState) {
        if let Some(c) = self.slot(s) {
            *c = c.saturating_sub(1);
        }
    }

    /// Moves one child from `old` to `new` and returns the new aggregate.
    /// Pass SHUTDOWN as `old` for a new child and as `new` for a removed one.
    pub fn record(&mut self, old: ConnectivityState, new: ConnectivityState) -> ConnectivityState {
        self.remove(old);
        self.add(new);
        self.aggregate()
    }

    pub fn aggregate(&self) -> ConnectivityState {
        if self.ready > 0 {
            ConnectivityState::Ready
        } else if self.connecting > 0 {
            ConnectivityState::Connecting
        } else if self.idle > 0 {
            ConnectivityState::Idle
        } else {
            ConnectivityState::TransientFailure
        }
    }

    fn slot(&mut self, s: ConnectivityState) -> Option<&mut usize> {
        match s {
            ConnectivityState::Idle => Some(&mut self.idle),
            ConnectivityState::Connecting => Some(&mut self.connecting),
            ConnectivityState::Ready => Some(&mut self.ready),
            ConnectivityState::TransientFailure => Some(&mut self.transient_failure),
            ConnectivityState::Shutdown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectivityState::*;
    use super::*;

    #[test]
    fn abi_numbers_are_fixed() {
        assert_eq!(
            [
                Idle as u8,
                Connecting as u8,
                Ready as u8,
                TransientFailure as u8,
                Shutdown as u8
            ],
            [0, 1, 2, 3, 4]
        );
        for n in 0..5 {
            assert_eq!(ConnectivityState::from_u8(n).unwrap() as u8, n);
        }
        assert_eq!(ConnectivityState::from_u8(5), None);
    }

    #[test]
    fn aggregation_precedence() {
        assert_eq!(
            aggregate([TransientFailure, Idle, Connecting, Ready]),
            Ready
        );
        assert_eq!(aggregate([TransientFailure, Idle, Connecting]), Connecting);
        assert_eq!(aggregate([TransientFailure, Idle]), Idle);
        assert_eq!(
            aggregate([TransientFailure, TransientFailure]),
            TransientFailure
        );
        assert_eq!(aggregate([Shutdown, Idle]), Idle);
        assert_eq!(aggregate([]), TransientFailure);
        assert_eq!(aggregate([Shutdown]), TransientFailure);
    }

    #[test]
    fn counts_track_transitions() {
        let mut c = StateCounts::default();
        assert_eq!(c.record(Shutdown, Idle), Idle);
        assert_eq!(c.record(Shutdown, Connecting), Connecting);
        assert_eq!(c.record(Connecting, Ready), Ready);
        assert_eq!(c.record(Ready, TransientFailure), Idle);
        assert_eq!(c.record(Idle, Shutdown), TransientFailure);
    }
}
