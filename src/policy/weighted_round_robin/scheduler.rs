//! Weight scaling as gRPC C++ does it, and the picker: READY endpoints in
//! the toolkit's static stride schedule (`balancer::stride`).

use super::weight::EndpointWeight;
use crate::balancer::picker::{DoneHooks, InlineKind, PickInfo, PickLocal, PickResult, Picker};
pub use crate::balancer::stride::MAX_WEIGHT;
use crate::balancer::stride::{ScheduleEntries, ScheduleEntry, StrideSchedule};
use crate::balancer::subconn::SubConn;
use std::sync::Arc;
/// C-core caps a weight at this many times the mean ...
const MAX_RATIO: f64 = 10.0;
/// ... and floors it at this fraction of the mean (and at 1).
const MIN_RATIO: f64 = 0.01;

/// Scales effective weights (0: none) to the scheduler's, as gRPC C++
/// does: zeros become the mean of the others; each weight is capped at 10×
/// the mean and floored at 1 % of it; the largest becomes 65535. `None`
/// means "plain round robin": fewer than two endpoints with a weight, or
/// all weights equal.
pub fn scale(weights: &[f64]) -> Option<Vec<u16>> {
    let n = weights.len();
    let (mut sum, mut max, mut min, mut zeros) = (0.0f64, 0.0f64, f64::INFINITY, 0usize);
    for &w in weights {
        if w > 0.0 {
            sum += w;
            max = max.max(w);
            min = min.min(w);
        } else {
            zeros += 1;
        }
    }
    // All weights equal (the zeros get the mean, which is then everyone's).
    if n < 2 || n - zeros < 2 || max == min {
        return None;
    }
    let mean = sum / (n - zeros) as f64;
    let ratio = f64::from(MAX_WEIGHT) / max.min(mean * MAX_RATIO);
    // As C++: 1 % of the scaled mean once rounded to an integer, rounded.
    let floor = ((ratio * mean).round() * MIN_RATIO).round().max(1.0);
    let scaled = weights
        .iter()
        .map(|&w| {
            let s = if w > 0.0 {
                (w * ratio).min(f64::from(MAX_WEIGHT)).round().max(floor)
            } else {
                (mean * ratio).round()
            };
            s.clamp(1.0, f64::from(MAX_WEIGHT)) as u16
        })
        .collect();
    Some(scaled)
}

/// A schedule's endpoints (see `ScheduleEntries`).
pub type Entries = ScheduleEntries;

/// `Entries` from (subchannel, weight hook) pairs.
pub fn entries(endpoints: Vec<(Arc<SubConn>, Arc<EndpointWeight>)>) -> Entries {
    endpoints
        .into_iter()
        .map(|(subconn, hook)| ScheduleEntry::new(subconn, hook))
        .collect()
}

/// READY endpoints in a static stride schedule, which readers run inline
/// (`InlineKind::Schedule`); every pick carries its endpoint's weight hook,
/// which turns the RPC's load report into a weight.
pub struct WrrPicker {
    schedule: StrideSchedule,
}

impl WrrPicker {
    /// A picker over `endpoints` with scaled `weights` (`None`: all equal).
    /// `None` when there is no endpoint or the lengths differ.
    pub fn new(
        endpoints: Vec<(Arc<SubConn>, Arc<EndpointWeight>)>,
        weights: Option<&[u16]>,
    ) -> Option<WrrPicker> {
        WrrPicker::over(entries(endpoints), weights)
    }

    /// `new` over endpoints already gathered (those of an earlier picker).
    pub fn over(entries: Entries, weights: Option<&[u16]>) -> Option<WrrPicker> {
        StrideSchedule::new(entries, weights).map(|schedule| WrrPicker { schedule })
    }

    /// Its endpoints, for the next picker over the same READY set.
    pub fn entries(&self) -> &Entries {
        self.schedule.entries()
    }

    /// How many endpoints.
    pub fn len(&self) -> usize {
        self.schedule.len()
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The scaled weight of each entry, in order.
    pub fn weights(&self) -> impl Iterator<Item = u16> + '_ {
        self.schedule.weights()
    }
}

impl Picker for WrrPicker {
    #[inline]
    fn pick<'a>(&'a self, _: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        let e = self.schedule.next(local);
        PickResult::Complete {
            subconn: e.subconn(),
            done: DoneHooks::one(e.hook()),
        }
    }

    fn inline(&self) -> Option<InlineKind<'_>> {
        Some(InlineKind::Schedule(&self.schedule))
    }
}
