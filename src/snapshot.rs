//! A channel's introspection snapshot (what gRPC's channelz shows): target,
//! policy, state, and each subchannel with its address, state, last error and
//! call counters.
//!
//! # Where the counters live
//!
//! The pick path stays free of shared writes: picks are not counted at all.
//! Calls are counted where the library sends them (`Reader::unary` and the
//! loop's started calls), per *attempt*, into counters owned by the
//! [`Reader`](crate::Reader) (or the loop's started-call table) that made
//! them: a small map from subchannel to counts behind a mutex that only that
//! reader's thread locks, except for the moment a snapshot reads it. An
//! uncontended lock on a line only one thread writes costs a call about what
//! its two `Instant::now()`s cost, and never bounces a cache line between RPC
//! threads; a single counter per subchannel shared by all threads would.
//! Each reader registers its counts with the channel on its first call; when
//! it is dropped its counts are folded into the channel's retired totals.
//!
//! A snapshot is taken on the event loop ([`Channel::snapshot`] sends it a
//! command and waits for the reply), so the subchannel list, states and
//! errors are one consistent view; the counters are summed over the readers
//! at that moment (each reader's entry consistent in itself).
//!
//! Host-transport channels (the host sends on picked subchannels) have no
//! library calls: their counters stay zero.
//!
//! [`Channel::snapshot`]: crate::Channel::snapshot

use crate::balancer::subconn::SubConnId;
use crate::connectivity::ConnectivityState;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

/// One channel at one moment (see [`Channel::snapshot`](crate::Channel::snapshot)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// The target the channel was created with (empty: the host resolves).
    pub target: String,
    /// The load-balancing policy's name, as in the service config.
    pub policy: String,
    /// The channel's aggregate connectivity state.
    pub state: ConnectivityState,
    /// The policy's current subchannels, in creation order.
    pub subchannels: Vec<SubchannelSnapshot>,
}

/// One subchannel of a [`ChannelSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubchannelSnapshot {
    /// The subchannel's id (as in the policy API and the C ABI).
    pub id: SubConnId,
    /// The address it connects to.
    pub address: String,
    /// Its connectivity state (as the policy sees it).
    pub state: ConnectivityState,
    /// The latest error of a failed connection attempt, lost connection or
    /// failed health check; kept after the subchannel recovers.
    pub last_error: Option<String>,
    /// Call attempts sent on this subchannel's connections (a transparent
    /// retry on another subchannel counts there).
    pub calls_started: u64,
    /// Attempts that ended with status OK.
    pub calls_succeeded: u64,
    /// Attempts that ended otherwise (including deadline and cancellation).
    pub calls_failed: u64,
    /// Attempts started and not yet ended.
    pub calls_in_flight: u64,
    /// When the latest attempt started.
    pub last_call: Option<SystemTime>,
}

impl ChannelSnapshot {
    /// The snapshot as one JSON object (the C ABI's form): `target`,
    /// `policy`, `state` (e.g. `"READY"`) and `subchannels`, each with `id`,
    /// `address`, `state`, `last_error` (string or null), `calls_started`,
    /// `calls_succeeded`, `calls_failed`, `calls_in_flight` and
    /// `last_call_unix_ms` (number or null).
    pub fn to_json(&self) -> String {
        let subchannels: Vec<serde_json::Value> = self
            .subchannels
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id.0,
                    "address": s.address,
                    "state": s.state.as_str(),
                    "last_error": s.last_error,
                    "calls_started": s.calls_started,
                    "calls_succeeded": s.calls_succeeded,
                    "calls_failed": s.calls_failed,
                    "calls_in_flight": s.calls_in_flight,
                    "last_call_unix_ms": s.last_call.map(|t| {
                        t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
                    }),
                })
            })
            .collect();
        serde_json::json!({
            "target": self.target,
            "policy": self.policy,
            "state": self.state.as_str(),
            "subchannels": subchannels,
        })
        .to_string()
    }
}

/// Counts of one subchannel's attempts, in one reader (or summed).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) started: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) last_call: Option<SystemTime>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.started += other.started;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.last_call = self.last_call.max(other.last_call);
    }

    fn in_flight(&self) -> u64 {
        self.started.saturating_sub(self.succeeded + self.failed)
    }
}

type CountMap = HashMap<SubConnId, Counts>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A channel's registry of per-reader counts (in `ChannelShared`).
#[derive(Default)]
pub(crate) struct CallStats {
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    live: Vec<Weak<Mutex<CountMap>>>,
    /// Counts of readers that are gone.
    retired: CountMap,
}

impl CallStats {
    /// Sums every reader's counts for the subchannels in `live`, dropping
    /// what is kept for subchannels that are gone and have nothing in flight.
    pub(crate) fn sum(&self, live: &HashSet<SubConnId>) -> CountMap {
        let mut reg = lock(&self.inner);
        reg.retired.retain(|id, _| live.contains(id));
        let mut total = reg.retired.clone();
        reg.live.retain(|w| w.strong_count() > 0);
        for map in reg.live.iter().filter_map(Weak::upgrade) {
            let mut map = lock(&map);
            map.retain(|id, c| live.contains(id) || c.in_flight() > 0);
            for (id, c) in map.iter().filter(|(id, _)| live.contains(id)) {
                total.entry(*id).or_default().add(c);
            }
        }
        total
    }

    /// Library calls in flight on the channel, over every reader (idleness:
    /// a channel with a call still running is not idle).
    pub(crate) fn in_flight(&self) -> u64 {
        let mut reg = lock(&self.inner);
        reg.live.retain(|w| w.strong_count() > 0);
        // A reader's calls end before it goes: retired counts have none.
        reg.live
            .iter()
            .filter_map(Weak::upgrade)
            .map(|m| lock(&m).values().map(Counts::in_flight).sum::<u64>())
            .sum()
    }

    /// Folds a reader's counts into the retired totals; under the registry
    /// lock, so that a snapshot sees them in one place or the other.
    fn retire(&self, map: &Mutex<CountMap>) {
        let mut reg = lock(&self.inner);
        let counts = std::mem::take(&mut *lock(map));
        for (id, c) in &counts {
            reg.retired.entry(*id).or_default().add(c);
        }
    }
}

/// One reader's counts, registered with its channel on first use; folded
/// into the channel's retired totals when dropped.
pub(crate) struct ReaderCounts {
    map: Arc<Mutex<CountMap>>,
    stats: Arc<CallStats>,
}

impl ReaderCounts {
    pub(crate) fn new(stats: &Arc<CallStats>) -> ReaderCounts {
        let map = Arc::new(Mutex::new(CountMap::new()));
        lock(&stats.inner).live.push(Arc::downgrade(&map));
        ReaderCounts {
            map,
            stats: stats.clone(),
        }
    }

    pub(crate) fn started(&self, sc: SubConnId) {
        let now = SystemTime::now();
        let mut map = lock(&self.map);
        let c = map.entry(sc).or_default();
        c.started += 1;
        c.last_call = Some(now);
    }

    pub(crate) fn ended(&self, sc: SubConnId, ok: bool) {
        let mut map = lock(&self.map);
        let c = map.entry(sc).or_default();
        if ok {
            c.succeeded += 1;
        } else {
            c.failed += 1;
        }
    }
}

impl Drop for ReaderCounts {
    fn drop(&mut self) {
        self.stats.retire(&self.map);
    }
}

/// Fills a subchannel's counters from the summed counts.
pub(crate) fn with_counts(mut s: SubchannelSnapshot, c: Option<&Counts>) -> SubchannelSnapshot {
    if let Some(c) = c {
        s.calls_started = c.started;
        s.calls_succeeded = c.succeeded;
        s.calls_failed = c.failed;
        s.calls_in_flight = c.in_flight();
        s.last_call = c.last_call;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_counts_sum_and_survive_the_reader() {
        let stats = Arc::new(CallStats::default());
        let (a, b, gone) = (SubConnId(1), SubConnId(2), SubConnId(3));
        let live: HashSet<SubConnId> = [a, b].into_iter().collect();
        let r1 = ReaderCounts::new(&stats);
        let r2 = ReaderCounts::new(&stats);
        for _ in 0..3 {
            r1.started(a);
            r1.ended(a, true);
        }
        r1.started(b);
        r2.started(b);
        r2.ended(b, false);
        r2.started(gone);
        r2.ended(gone, true);
        let sum = stats.sum(&live);
        assert_eq!(
            (sum[&a].started, sum[&a].succeeded, sum[&a].in_flight()),
            (3, 3, 0)
        );
        assert_eq!(
            (sum[&b].started, sum[&b].failed, sum[&b].in_flight()),
            (2, 1, 1)
        );
        assert!(sum[&a].last_call.is_some());
        // A gone subchannel is not reported, and its finished counts go.
        assert!(!sum.contains_key(&gone));
        assert!(!lock(&r2.map).contains_key(&gone));
        // A dropped reader's counts stay in the totals.
        drop(r1);
        drop(r2);
        let sum = stats.sum(&live);
        assert_eq!(sum[&a].succeeded, 3);
        assert_eq!(sum[&b].started, 2);
        assert!(lock(&stats.inner).live.is_empty());
    }
}
