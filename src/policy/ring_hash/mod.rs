//! `ring_hash_experimental` (also `ring_hash`): consistent hashing, gRFC A42
//! as amended by A61 and A76. Each endpoint is placed on a ring (XXH64 of
//! `"<hash key>_<n>"`, sized in proportion to the endpoints' weights) by its
//! hash key (A76's `Endpoint::hash_key`, else its first address); a request goes to the first endpoint at or after its
//! hash that is not in TRANSIENT_FAILURE, so each key keeps its endpoint and
//! an endpoint joining or leaving moves only the keys that belong to it.
//!
//! The request hash is, with a `requestHashHeader` configured: XXH64 of
//! that metadata value (values joined with ","); a random hash when the
//! RPC's metadata lacks it, whatever hash the caller passed (A76: queue
//! behind at most one new connection, never pile onto one endpoint); for a
//! pick carrying no metadata at all, the caller's `PickInfo::hash` (a host
//! picking through the C header passes `sy_pick`'s `request_hash`, XXH64 of
//! the header's value, since a pick there carries no metadata), else a
//! random hash. With no header configured: the caller's hash
//! (`CallOptions::hash`); with none the pick fails (INTERNAL; a
//! wait-for-ready call waits for its deadline, as in gRPC-Go and C-core):
//! gRPC's xDS would supply it.
//!
//! Endpoints are pick_first children created lazily: nothing connects until
//! a pick lands on an IDLE endpoint (its connection is requested and the
//! pick queued) or the recovery rule asks for one: while the policy is
//! CONNECTING or TRANSIENT_FAILURE with nothing connecting, one IDLE
//! endpoint connects. The aggregate state follows A42's own rules.
//!
//! Config (`{"ring_hash_experimental": {...}}`): `minRingSize` (default
//! 1024), `maxRingSize` (default 4096), each at most 8,388,608, min ≤ max,
//! then both capped to the builder's cap (4096, or `GRPC_RING_HASH_CAP`
//! from the environment as gRPC-Go reads it, or
//! [`RingHashBuilder::with_ring_size_cap`]); `requestHashHeader` (A76),
//! lower-cased, a valid header name not ending in `-bin`.

mod lazy;
mod picker;

pub use crate::balancer::hash_ring::RING_SIZE_LIMIT;

use crate::balancer::child_manager::ChildManager;
use crate::balancer::hash_ring::{Placement, Ring};
use crate::balancer::json::config_field;
use crate::balancer::picker::{FailPicker, Picker, QueuePicker};
use crate::balancer::rotation::RotationEntry;
use crate::balancer::subconn::SubConnId;
use crate::balancer::{
    Balancer, Builder, ClientConn, ClientConnState, LbConfig, SubConnState, TimerToken,
};
use crate::connectivity::{ConnectivityState, StateCounts};
use crate::policy::pick_first::ZERO_ADDRESSES;
use lazy::LazyPickFirstBuilder;
use picker::{RingPicker, Slot};
use std::collections::HashMap;
use std::sync::Arc;

/// `minRingSize` when the config has none.
pub const DEFAULT_MIN_RING_SIZE: u64 = 1024;
/// `maxRingSize` when the config has none.
pub const DEFAULT_MAX_RING_SIZE: u64 = 4096;
/// What both sizes are capped to unless the builder says otherwise
/// (gRPC-Go's `GRPC_RING_HASH_CAP` default).
pub const DEFAULT_RING_SIZE_CAP: u64 = 4096;

/// Builds `ring_hash_experimental` balancers (and, [`named`](Self::named),
/// `ring_hash`). See the module documentation.
#[derive(Clone, Debug)]
pub struct RingHashBuilder {
    name: &'static str,
    cap: u64,
}

impl Default for RingHashBuilder {
    fn default() -> RingHashBuilder {
        RingHashBuilder::new()
    }
}

impl RingHashBuilder {
    /// `ring_hash_experimental`, ring sizes capped to 4096, or to what the
    /// environment variable `GRPC_RING_HASH_CAP` says (1..=8,388,608, as
    /// gRPC-Go reads it; a value out of range is clamped, one that is no
    /// number ignored).
    pub fn new() -> RingHashBuilder {
        RingHashBuilder {
            name: "ring_hash_experimental",
            cap: cap_from_env(std::env::var("GRPC_RING_HASH_CAP").ok().as_deref()),
        }
    }

    /// The same policy registered under another name.
    pub fn named(mut self, name: &'static str) -> RingHashBuilder {
        self.name = name;
        self
    }

    /// Caps both ring sizes to `cap` (clamped to 1..=8,388,608) instead of
    /// 4096 or what `GRPC_RING_HASH_CAP` said.
    pub fn with_ring_size_cap(mut self, cap: u64) -> RingHashBuilder {
        self.cap = cap.clamp(1, RING_SIZE_LIMIT);
        self
    }
}

/// The ring size cap `GRPC_RING_HASH_CAP` sets: gRPC-Go's `uint64FromEnv`
/// (a number, clamped to 1..=8,388,608; anything else is the default).
fn cap_from_env(value: Option<&str>) -> u64 {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_RING_SIZE_CAP, |c| c.clamp(1, RING_SIZE_LIMIT))
}

/// A parsed `ring_hash_experimental` config, sizes already capped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RingHashConfig {
    pub(crate) min_ring_size: u64,
    pub(crate) max_ring_size: u64,
    pub(crate) request_hash_header: Option<Arc<str>>,
}

impl RingHashConfig {
    fn defaults(cap: u64) -> RingHashConfig {
        RingHashConfig {
            min_ring_size: DEFAULT_MIN_RING_SIZE.min(cap),
            max_ring_size: DEFAULT_MAX_RING_SIZE.min(cap),
            request_hash_header: None,
        }
    }
}

/// A ring size field: a non-negative integer (a JSON number, or a string as
/// proto3 JSON writes 64-bit integers), at most `RING_SIZE_LIMIT`; absent or
/// 0 means the default.
fn ring_size(config: &serde_json::Value, field: &str, default: u64) -> Result<u64, String> {
    let value = match config_field(config, field) {
        None => return Ok(default),
        Some(v) => v,
    };
    match crate::balancer::json::uint(value) {
        None => Err(format!(
            "{field} must be a non-negative integer, got {value}"
        )),
        Some(n) if n > RING_SIZE_LIMIT => Err(format!(
            "{field} must be at most {RING_SIZE_LIMIT}, got {n}"
        )),
        Some(0) => Ok(default),
        Some(n) => Ok(n),
    }
}

/// `requestHashHeader`: lower-cased; a metadata key (0-9 a-z - _ .) or a
/// pseudo-header (`:path`: never in an RPC's metadata, so its picks hash at
/// random), not binary (`-bin`). Empty means none.
fn request_hash_header(config: &serde_json::Value) -> Result<Option<Arc<str>>, String> {
    let header = match config_field(config, "requestHashHeader") {
        None => return Ok(None),
        Some(serde_json::Value::String(s)) => s.to_ascii_lowercase(),
        Some(other) => return Err(format!("requestHashHeader must be a string, got {other}")),
    };
    if header.is_empty() {
        return Ok(None);
    }
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    // A pseudo-header (":path") passes, as gRPC-Go's `ValidateKey` lets it
    // (C-core checks nothing): an RPC's metadata never carries one, so its
    // picks hash at random.
    if !header.starts_with(':') && !header.chars().all(valid) {
        return Err(format!(
            "requestHashHeader {header:?} is not a valid header name \
             (ASCII letters, digits, '-', '_', '.')"
        ));
    }
    if header.ends_with("-bin") {
        return Err(format!(
            "requestHashHeader {header:?} must not be a binary header (\"-bin\")"
        ));
    }
    Ok(Some(header.into()))
}

impl Builder for RingHashBuilder {
    fn name(&self) -> &str {
        self.name
    }

    fn build(&self) -> Box<dyn Balancer> {
        Box::new(RingHash::new(RingHashConfig::defaults(self.cap)))
    }

    fn parse_config(&self, config: &serde_json::Value) -> Result<Option<LbConfig>, String> {
        if !config.is_object() {
            return Err(format!("{} config must be a JSON object", self.name));
        }
        let min = ring_size(config, "minRingSize", DEFAULT_MIN_RING_SIZE)?;
        let max = ring_size(config, "maxRingSize", DEFAULT_MAX_RING_SIZE)?;
        if min > max {
            return Err(format!(
                "minRingSize ({min}) must not exceed maxRingSize ({max})"
            ));
        }
        Ok(Some(Arc::new(RingHashConfig {
            min_ring_size: min.min(self.cap),
            max_ring_size: max.min(self.cap),
            request_hash_header: request_hash_header(config)?,
        })))
    }

    fn health_checks(&self, _config: Option<&LbConfig>) -> bool {
        // Its endpoints' pick_first children use health (A61).
        true
    }
}

/// One endpoint (deduplicated by its child's key).
#[derive(Clone, Debug, PartialEq, Eq)]
struct RingEndpoint {
    /// The child's key (`endpoint_key`).
    key: String,
    place: Placement,
}

/// A42's aggregate state over `n` endpoints (first rule that matches).
fn aggregate(counts: &StateCounts, n: usize) -> ConnectivityState {
    if counts.ready > 0 {
        ConnectivityState::Ready
    } else if counts.transient_failure >= 2 {
        ConnectivityState::TransientFailure
    } else if counts.connecting > 0 || (counts.transient_failure == 1 && n > 1) {
        // Something connecting, or a single failure among several endpoints.
        ConnectivityState::Connecting
    } else if counts.idle > 0 {
        ConnectivityState::Idle
    } else {
        ConnectivityState::TransientFailure
    }
}

pub(crate) struct RingHash {
    config: RingHashConfig,
    children: ChildManager,
    /// Sorted by hash key (then key): the ring's input order.
    endpoints: Vec<RingEndpoint>,
    /// Child key → index in `endpoints`.
    by_key: HashMap<String, usize>,
    /// Per endpoint, its child's last state.
    states: Vec<ConnectivityState>,
    counts: StateCounts,
    ring: Option<Arc<Ring>>,
    /// Per endpoint, its member index on the ring, if it has entries.
    member: Vec<Option<usize>>,
    /// Per ring member, what the next picker snapshots.
    slots: Vec<Slot>,
    /// Per ring member, its READY entry (`Slot::entry`), kept with
    /// `slots` so that a publish copies them instead of visiting every
    /// member's subchannel.
    ready: Vec<Option<RotationEntry>>,
    /// Something a picker shows changed since the last publish.
    dirty: bool,
    reported: Option<ConnectivityState>,
}

impl RingHash {
    fn new(config: RingHashConfig) -> RingHash {
        RingHash {
            config,
            children: ChildManager::new(),
            endpoints: Vec::new(),
            by_key: HashMap::new(),
            states: Vec::new(),
            counts: StateCounts::default(),
            ring: None,
            member: Vec::new(),
            slots: Vec::new(),
            ready: Vec::new(),
            dirty: true,
            reported: None,
        }
    }

    /// The state and picker of the child keyed `key` (queueing if there
    /// were none, which `update_endpoints` rules out).
    fn child_slot(&self, key: &str) -> (ConnectivityState, Slot) {
        match self.children.get(key) {
            Some(c) => (c.state(), Slot::new(c.state(), c.picker())),
            None => {
                let queue: Arc<dyn Picker> = Arc::new(QueuePicker);
                (
                    ConnectivityState::Connecting,
                    Slot::new(ConnectivityState::Connecting, &queue),
                )
            }
        }
    }

    /// Re-reads every child (after the endpoints changed).
    fn resync(&mut self) {
        self.counts = StateCounts::default();
        self.states.clear();
        let mut slots = Vec::new();
        for e in &self.endpoints {
            let (state, _) = self.child_slot(&e.key);
            self.counts.add(state);
            self.states.push(state);
        }
        if let Some(ring) = &self.ring {
            for k in ring.members() {
                slots.push(self.child_slot(&self.endpoints[*k as usize].key).1);
            }
        }
        self.ready = slots.iter().map(Slot::entry).collect();
        self.slots = slots;
        self.dirty = true;
    }

    /// Takes the new state and picker of the child keyed `key`.
    fn child_changed(&mut self, key: &str) {
        let Some(&i) = self.by_key.get(key) else {
            return;
        };
        if !self
            .children
            .get(key)
            .is_some_and(|c| c.published_in_last_call())
        {
            // Its state and picker are what the ring has: a subchannel
            // event the child kept to itself (pick_first retrying in
            // TRANSIENT_FAILURE) publishes nothing, as in gRPC.
            return;
        }
        let (state, slot) = self.child_slot(key);
        self.counts.record(self.states[i], state);
        // Whether some endpoint is connecting is in the picker (A76's
        // random-hash picks), for endpoints off the ring too.
        let connecting = ConnectivityState::Connecting;
        if (self.states[i] == connecting) != (state == connecting) {
            self.dirty = true;
        }
        self.states[i] = state;
        if let Some(m) = self.member[i] {
            self.ready[m] = slot.entry();
            self.slots[m] = slot;
            self.dirty = true;
        }
    }

    /// A61's recovery rule: CONNECTING or TRANSIENT_FAILURE with no endpoint
    /// connecting ⇒ connect one IDLE endpoint (the first in hash-key order,
    /// on the ring or not, as gRPC-Go's `updatePickerLocked` does), so that
    /// one attempt is always under way.
    fn recover(&mut self, cc: &mut dyn ClientConn) {
        let state = aggregate(&self.counts, self.endpoints.len());
        let stuck = matches!(
            state,
            ConnectivityState::Connecting | ConnectivityState::TransientFailure
        ) && self.counts.connecting == 0;
        if stuck {
            self.connect_one_idle(cc);
        }
    }

    /// Asks the first IDLE endpoint (`endpoints` are in hash-key order) to
    /// connect.
    fn connect_one_idle(&mut self, cc: &mut dyn ClientConn) {
        let idle = |i: &usize| self.states[*i] == ConnectivityState::Idle;
        let Some(i) = (0..self.endpoints.len()).find(idle) else {
            return;
        };
        let key = self.endpoints[i].key.clone();
        self.children.exit_idle(cc, &key);
        self.child_changed(&key);
    }

    /// Publishes the aggregate state and a picker if anything changed.
    fn publish(&mut self, cc: &mut dyn ClientConn) {
        self.recover(cc);
        let state = aggregate(&self.counts, self.endpoints.len());
        if !self.dirty && self.reported == Some(state) {
            return;
        }
        let Some(ring) = &self.ring else {
            return;
        };
        let picker = RingPicker::new(
            ring.clone(),
            self.slots.clone().into_boxed_slice(),
            self.ready.clone().into_boxed_slice(),
            self.counts.connecting > 0,
            self.config.request_hash_header.clone(),
        );
        self.dirty = false;
        self.reported = Some(state);
        cc.update_state(state, Box::new(picker));
    }

    fn fail(&mut self, cc: &mut dyn ClientConn, message: String) {
        self.reported = Some(ConnectivityState::TransientFailure);
        self.dirty = true;
        cc.update_state(
            ConnectivityState::TransientFailure,
            Box::new(FailPicker::unavailable(message)),
        );
    }
}

impl Balancer for RingHash {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let config = state
            .config_as::<RingHashConfig>()
            .cloned()
            .unwrap_or_else(|| self.config.clone());
        if state.endpoints.iter().all(|e| e.addresses.is_empty()) {
            self.children.close(cc);
            self.endpoints.clear();
            self.by_key.clear();
            self.ring = None;
            self.fail(cc, ZERO_ADDRESSES.into());
            return Err(ZERO_ADDRESSES.into());
        }
        // One endpoint per child key; duplicates add their weight (A42).
        let mut endpoints: Vec<RingEndpoint> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for e in state.endpoints.iter().filter(|e| !e.addresses.is_empty()) {
            let key = crate::balancer::child_manager::endpoint_key(e);
            let weight = u64::from(e.weight.max(1));
            match seen.get(&key) {
                Some(&i) => endpoints[i].place.weight += weight,
                None => {
                    let hash_key = match &e.hash_key {
                        Some(k) if !k.is_empty() => k.clone(),
                        _ => e.addresses[0].addr.clone(),
                    };
                    seen.insert(key.clone(), endpoints.len());
                    endpoints.push(RingEndpoint {
                        key,
                        place: Placement { hash_key, weight },
                    });
                }
            }
        }
        endpoints.sort_by(|a, b| (&a.place.hash_key, &a.key).cmp(&(&b.place.hash_key, &b.key)));
        let sizes_changed = (config.min_ring_size, config.max_ring_size)
            != (self.config.min_ring_size, self.config.max_ring_size);
        if sizes_changed || self.ring.is_none() || endpoints != self.endpoints {
            let places: Vec<Placement> = endpoints.iter().map(|e| e.place.clone()).collect();
            let ring = Ring::new(&places, config.min_ring_size, config.max_ring_size);
            self.member = vec![None; endpoints.len()];
            for (m, k) in ring.members().iter().enumerate() {
                self.member[*k as usize] = Some(m);
            }
            self.ring = Some(Arc::new(ring));
            self.endpoints = endpoints;
            self.by_key = self
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| (e.key.clone(), i))
                .collect();
        }
        if config.request_hash_header != self.config.request_hash_header {
            self.dirty = true;
        }
        self.config = config;
        let builder: Arc<dyn Builder> = Arc::new(LazyPickFirstBuilder);
        self.children
            .update_endpoints(cc, &state.endpoints, &builder, None);
        self.resync();
        self.publish(cc);
        Ok(())
    }

    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        if self.endpoints.is_empty() {
            self.fail(cc, format!("name resolver error: {error}"));
            return;
        }
        // Keep the last good endpoints.
        self.children.resolver_error(cc, error);
        self.resync();
        self.publish(cc);
    }

    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        if let Some(key) = self.children.subconn_state(cc, sc, state) {
            self.child_changed(&key);
            self.publish(cc);
        }
    }

    /// `Channel::connect` connects nothing, as in gRPC (gRPC-Go's
    /// `ExitIdle` is a no-op, C-core has none): connections start from picks
    /// landing on IDLE endpoints and from the TRANSIENT_FAILURE recovery rule.
    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        self.publish(cc);
    }

    /// Endpoints whose IDLE pickers were picked: connect them.
    fn work(&mut self, cc: &mut dyn ClientConn) {
        for key in self.children.work(cc) {
            self.child_changed(&key);
        }
        self.publish(cc);
    }

    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        if let Some(key) = self.children.timer(cc, token) {
            self.child_changed(&key);
            self.publish(cc);
        }
    }

    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.children.close(cc);
    }
}

#[cfg(test)]
mod tests;
