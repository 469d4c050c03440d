//! Built-in load-balancing policies.

pub mod least_request;
pub mod outlier_detection;
mod petiole;
pub mod pick_first;
pub mod random;
mod ready_endpoints;
pub mod registry;
pub mod ring_hash;
pub mod round_robin;
pub mod weighted_round_robin;

use crate::balancer::json::config_field;
use crate::balancer::Builder;
use std::sync::Arc;

/// The policies every registry starts with.
pub(crate) fn builtins() -> Vec<Arc<dyn Builder>> {
    vec![
        Arc::new(pick_first::PickFirstBuilder),
        Arc::new(round_robin::RoundRobinBuilder),
        Arc::new(weighted_round_robin::WeightedRoundRobinBuilder),
        Arc::new(least_request::LeastRequestBuilder::EXPERIMENTAL),
        Arc::new(least_request::LeastRequestBuilder::SHORT),
        Arc::new(random::RandomBuilder),
        Arc::new(ring_hash::RingHashBuilder::new()),
        Arc::new(ring_hash::RingHashBuilder::new().named("ring_hash")),
        Arc::new(outlier_detection::OutlierDetectionBuilder),
    ]
}

/// Reads an optional boolean field of a policy config.
pub(crate) fn opt_bool(config: &serde_json::Value, field: &str) -> Result<Option<bool>, String> {
    match config_field(config, field) {
        None => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!("{field} must be a boolean, got {other}")),
    }
}
