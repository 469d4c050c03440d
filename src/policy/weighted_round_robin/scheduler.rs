//! The static stride scheduler (gRFC A58 as gRPC C++ and gRPC-Go implement
//! it) and the picker built on it.
//!
//! Weights are scaled so the largest is 65535. Pick number `s` looks at
//! entry `i = s mod n` of generation `g = s div n` and takes it iff
//! `(w_i·g + i·32767) mod 65535 >= 65535 − w_i`, else moves on to `s + 1`:
//! over 65535 generations entry `i` is taken exactly `w_i` times, spread
//! out by the per-entry offset. No heap, no lock; the sequence `s` is kept
//! in each reader (`PickLocal::sequence`), not in the picker, so picking
//! writes nothing shared.

use super::weight::EndpointWeight;
use crate::balancer::picker::{DoneHooks, PickInfo, PickLocal, PickResult, Picker};
use crate::balancer::subconn::SubConn;
use std::sync::Arc;

/// The scaled weight every entry has in a plain rotation, and the largest.
pub const MAX_WEIGHT: u16 = u16::MAX;
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
    let floor = (ratio * mean * MIN_RATIO).round().max(1.0);
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

/// One entry's scheduling constants: its scaled weight and the threshold
/// and offset the stride test needs, precomputed.
#[derive(Clone, Copy, Debug)]
struct Stride {
    /// Scaled weight (1..=65535).
    weight: u32,
    /// `65535 − weight`: taken iff `(weight·g + offset) mod 65535 >= skip_below`.
    skip_below: u32,
    /// `i·32767 mod 65535`.
    offset: u32,
}

/// What a pick hands out for one entry.
pub struct Entry {
    subconn: Arc<SubConn>,
    hook: Arc<EndpointWeight>,
}

/// A schedule's endpoints, shared by the pickers built over the same READY
/// set: a weight update rebuilds only the strides, touching no reference
/// count per endpoint.
pub type Entries = Arc<[Entry]>;

/// `Entries` from (subchannel, weight hook) pairs.
pub fn entries(endpoints: Vec<(Arc<SubConn>, Arc<EndpointWeight>)>) -> Entries {
    endpoints
        .into_iter()
        .map(|(subconn, hook)| Entry { subconn, hook })
        .collect()
}

/// READY endpoints in a static stride schedule; every pick carries its
/// endpoint's weight hook, which turns the RPC's load report into a weight.
pub struct WrrPicker {
    strides: Box<[Stride]>,
    entries: Entries,
    /// An entry of the largest weight: the stride test always takes it, so
    /// a pick ends within `n` steps.
    heaviest: usize,
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
        let n = entries.len();
        if n == 0 || weights.is_some_and(|w| w.len() != n) || n > u32::MAX as usize {
            return None;
        }
        let m = u64::from(MAX_WEIGHT);
        let strides: Box<[Stride]> = (0..n)
            .map(|i| {
                let w = u32::from(weights.map_or(MAX_WEIGHT, |w| w[i].max(1)));
                Stride {
                    weight: w,
                    skip_below: u32::from(MAX_WEIGHT) - w,
                    offset: ((i as u64 * 32767) % m) as u32,
                }
            })
            .collect();
        let heaviest = (0..n).max_by_key(|i| strides[*i].weight).unwrap_or(0);
        Some(WrrPicker {
            strides,
            entries,
            heaviest,
        })
    }

    /// Its endpoints, for the next picker over the same READY set.
    pub fn entries(&self) -> &Entries {
        &self.entries
    }

    /// How many endpoints.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The scaled weight of each entry, in order.
    pub fn weights(&self) -> impl Iterator<Item = u16> + '_ {
        self.strides.iter().map(|s| s.weight as u16)
    }

    /// The next entry for a reader whose sequence is `seq`: the low 32
    /// bits hold the entry index, the high 32 the generation (mod 65535),
    /// so a step needs no division.
    #[inline(always)]
    fn next(&self, seq: &mut u64) -> usize {
        let n = self.strides.len() as u32;
        let mut i = *seq as u32;
        let mut gen = (*seq >> 32) as u32;
        if i >= n || gen >= u32::from(MAX_WEIGHT) {
            // Left by another picker: start anywhere.
            i %= n;
            gen %= u32::from(MAX_WEIGHT);
        }
        // Bounded: the heaviest entry is taken whenever it comes up.
        for _ in 0..n {
            // `i < n` throughout; `get` keeps the pick path panic-free.
            let Some(s) = self.strides.get(i as usize) else {
                break;
            };
            let taken = (s.weight * gen + s.offset) % u32::from(MAX_WEIGHT) >= s.skip_below;
            let chosen = i;
            i += 1;
            if i == n {
                i = 0;
                gen += 1;
                if gen == u32::from(MAX_WEIGHT) {
                    gen = 0;
                }
            }
            if taken {
                *seq = (u64::from(gen) << 32) | u64::from(i);
                return chosen as usize;
            }
        }
        *seq = (u64::from(gen) << 32) | u64::from(i);
        self.heaviest
    }
}

impl Picker for WrrPicker {
    #[inline]
    fn pick<'a>(&'a self, _: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        let i = self.next(local.sequence());
        match self.entries.get(i) {
            Some(e) => PickResult::Complete {
                subconn: &e.subconn,
                done: DoneHooks::one(&*e.hook),
            },
            None => PickResult::Queue, // unreachable: `next` stays below n
        }
    }
}
