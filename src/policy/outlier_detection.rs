//! `outlier_detection_experimental` (gRFC A50, as A61 amends it): a parent
//! that wraps one child policy, counts every call's outcome per endpoint
//! through a done hook chained after the child's, and every `interval`
//! ejects the endpoints that fail more than their peers (success-rate and
//! failure-percentage algorithms). An ejected endpoint's connected
//! subchannels look TRANSIENT_FAILURE to the child, connections kept (A61:
//! a health verdict, passed down as pick_first hears health, never by
//! closing anything; raw connectivity still reaches the child, which
//! manages the connections as usual); when its ejection time is over the
//! child gets their real states back. With neither algorithm
//! configured it is a pass-through: the child's picker as is, no counting.
//!
//! The pick path adds one hook to the child's pick; the hook adds one to a
//! per-endpoint counter (the only shared write, which counting needs), found
//! through an immutable table shared by the pickers and rebuilt only when
//! the child's subchannels change.

use crate::address::Endpoint;
use crate::balancer::child_manager::{endpoint_key, ChildManager, ChildUpdate};
use crate::balancer::graceful_switch::{SwitchTo, Switching};
use crate::balancer::json::config_field;
use crate::balancer::picker::{
    DoneHook, DoneHooks, DoneInfo, FailPicker, ForwardingPicker, PickInfo, PickLocal, PickResult,
    Picker,
};
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::balancer::{
    Balancer, Builder, ClientConn, ClientConnState, LbConfig, SubConnState, TimerToken,
};
use crate::connectivity::ConnectivityState;
use crate::status::{Code, Status};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The policy's name in `loadBalancingConfig`.
pub const NAME: &str = "outlier_detection_experimental";

/// The error an ejected endpoint's subchannels show the child.
const EJECTED: &str = "ejected by outlier detection";

/// The child's key in the `ChildManager` (there is only one).
const CHILD: &str = "child";

/// The longest timer armed: proto durations reach 10,000 years, which an
/// `Instant` cannot always hold; a sweep a year away is as good as never.
const LONGEST_TIMER: Duration = Duration::from_secs(365 * 24 * 3600);

/// `successRateEjection` (gRFC A50).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuccessRateEjection {
    /// Ejects below mean − stdev × `stdev_factor` / 1000. Default 1900.
    pub stdev_factor: u32,
    /// Chance (percent) that an outlier found is ejected. Default 100.
    pub enforcement_percentage: u32,
    /// Endpoints with enough volume needed to run at all. Default 5.
    pub minimum_hosts: u32,
    /// Calls in the last interval for an endpoint to count. Default 100.
    pub request_volume: u32,
}

impl Default for SuccessRateEjection {
    fn default() -> Self {
        SuccessRateEjection {
            stdev_factor: 1900,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 100,
        }
    }
}

/// `failurePercentageEjection` (gRFC A50).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailurePercentageEjection {
    /// Ejects an endpoint whose failure percentage is above this. Default 85.
    pub threshold: u32,
    /// Chance (percent) that an outlier found is ejected. Default 100 (the
    /// proto's and C-core's; gRPC-Go's 0 is Envoy's).
    pub enforcement_percentage: u32,
    /// Endpoints with enough volume needed to run at all. Default 5.
    pub minimum_hosts: u32,
    /// Calls in the last interval for an endpoint to count. Default 50.
    pub request_volume: u32,
}

impl Default for FailurePercentageEjection {
    fn default() -> Self {
        FailurePercentageEjection {
            threshold: 85,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 50,
        }
    }
}

/// The parsed config (see `OutlierDetectionBuilder::parse_config`).
#[derive(Clone)]
pub struct OutlierDetectionConfig {
    /// Time between sweeps. Default 10 s.
    pub interval: Duration,
    /// Ejection time per time ejected. Default 30 s.
    pub base_ejection_time: Duration,
    /// Ejection time cap (never below `base_ejection_time`). Default 300 s.
    pub max_ejection_time: Duration,
    /// Ejections stop once this percentage of endpoints is ejected. Default 10.
    pub max_ejection_percent: u32,
    /// Absent: the success-rate algorithm is off.
    pub success_rate_ejection: Option<SuccessRateEjection>,
    /// Absent: the failure-percentage algorithm is off.
    pub failure_percentage_ejection: Option<FailurePercentageEjection>,
    /// The wrapped policy (first registered entry of `childPolicy`).
    pub child_policy: Arc<dyn Builder>,
    /// Its parsed config.
    pub child_config: Option<LbConfig>,
}

impl OutlierDetectionConfig {
    /// Either algorithm on: outcomes are counted and sweeps run.
    pub fn counting(&self) -> bool {
        self.success_rate_ejection.is_some() || self.failure_percentage_ejection.is_some()
    }

    /// How long an endpoint ejected `multiplier` times stays out.
    fn ejection_time(&self, multiplier: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(multiplier)
            .min(self.base_ejection_time.max(self.max_ejection_time))
    }
}

impl std::fmt::Debug for OutlierDetectionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutlierDetectionConfig")
            .field("interval", &self.interval)
            .field("base_ejection_time", &self.base_ejection_time)
            .field("max_ejection_time", &self.max_ejection_time)
            .field("max_ejection_percent", &self.max_ejection_percent)
            .field("success_rate_ejection", &self.success_rate_ejection)
            .field(
                "failure_percentage_ejection",
                &self.failure_percentage_ejection,
            )
            .field("child_policy", &self.child_policy.name())
            .finish()
    }
}

/// Builds `outlier_detection_experimental` balancers.
pub struct OutlierDetectionBuilder;

impl Builder for OutlierDetectionBuilder {
    fn name(&self) -> &str {
        NAME
    }

    fn build(&self) -> Box<dyn Balancer> {
        Box::new(OutlierDetection::default())
    }

    /// Every field of gRFC A50 with its default; durations are proto JSON
    /// (`"10s"`, `"0.5s"`), non-negative; percentages at most 100;
    /// `childPolicy` is required and chosen as `loadBalancingConfig` is.
    fn parse_config(&self, config: &Value) -> Result<Option<LbConfig>, String> {
        Ok(Some(Arc::new(parse(config)?)))
    }

    fn health_checks(&self, config: Option<&LbConfig>) -> bool {
        // As the child it wraps.
        config
            .and_then(|c| c.downcast_ref::<OutlierDetectionConfig>())
            .is_some_and(|c| c.child_policy.health_checks(c.child_config.as_ref()))
    }
}

fn parse(config: &Value) -> Result<OutlierDetectionConfig, String> {
    let obj = config
        .as_object()
        .ok_or("the config must be a JSON object")?;
    let max_ejection_percent = opt_percent(
        config_field(obj, "maxEjectionPercent"),
        "maxEjectionPercent",
    )?;
    let success_rate_ejection = ejection_section(obj, "successRateEjection", |field| {
        let d = SuccessRateEjection::default();
        Ok(SuccessRateEjection {
            stdev_factor: field("stdevFactor", d.stdev_factor, opt_u32)?,
            enforcement_percentage: field(
                "enforcementPercentage",
                d.enforcement_percentage,
                opt_percent,
            )?,
            minimum_hosts: field("minimumHosts", d.minimum_hosts, opt_u32)?,
            request_volume: field("requestVolume", d.request_volume, opt_u32)?,
        })
    })?;
    let failure_percentage_ejection =
        ejection_section(obj, "failurePercentageEjection", |field| {
            let d = FailurePercentageEjection::default();
            Ok(FailurePercentageEjection {
                threshold: field("threshold", d.threshold, opt_percent)?,
                enforcement_percentage: field(
                    "enforcementPercentage",
                    d.enforcement_percentage,
                    opt_percent,
                )?,
                minimum_hosts: field("minimumHosts", d.minimum_hosts, opt_u32)?,
                request_volume: field("requestVolume", d.request_volume, opt_u32)?,
            })
        })?;
    // The durations before the child: a bad one is named even in a config
    // with no childPolicy (gRPC-Go's parse tests send none).
    let interval =
        opt_duration(config_field(obj, "interval"), "interval")?.unwrap_or(Duration::from_secs(10));
    let base_ejection_time =
        opt_duration(config_field(obj, "baseEjectionTime"), "baseEjectionTime")?
            .unwrap_or(Duration::from_secs(30));
    let max_ejection_time = opt_duration(config_field(obj, "maxEjectionTime"), "maxEjectionTime")?
        .unwrap_or(Duration::from_secs(300));
    let (child_policy, child_config) = match config_field(obj, "childPolicy") {
        None => return Err("childPolicy is required".into()),
        Some(list) => child_policy(list)?,
    };
    Ok(OutlierDetectionConfig {
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent: max_ejection_percent.unwrap_or(10),
        success_rate_ejection,
        failure_percentage_ejection,
        child_policy,
        child_config,
    })
}

/// `childPolicy`: the first entry naming a registered policy wins and its
/// config must parse (gRFC A24, as for `loadBalancingConfig`).
fn child_policy(list: &Value) -> Result<(Arc<dyn Builder>, Option<LbConfig>), String> {
    let entries = list.as_array().ok_or("childPolicy must be an array")?;
    let mut names = Vec::new();
    for entry in entries {
        let obj = entry
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or("each childPolicy entry must be an object with exactly one key")?;
        let (name, config) = obj.iter().next().expect("one key");
        if !config.is_object() {
            return Err(format!(
                "childPolicy: config of \"{name}\" must be an object"
            ));
        }
        if let Some(builder) = super::registry::get(name) {
            let parsed = builder.parse_config(config).map_err(|e| {
                format!("childPolicy: error parsing loadBalancingConfig for policy \"{name}\": {e}")
            })?;
            return Ok((builder, parsed));
        }
        names.push(name.clone());
    }
    Err(format!(
        "childPolicy: invalid loadBalancingConfig: no supported policies found in [{}]",
        names.join(", ")
    ))
}

/// One of the optional ejection objects (`successRateEjection`,
/// `failurePercentageEjection`): `None` when absent, else what `build` makes
/// of it, reading each field through the `field` it is given (name, default,
/// parser; errors name the section and the field).
fn ejection_section<T>(
    obj: &Map<String, Value>,
    section: &str,
    build: impl FnOnce(&dyn Fn(&str, u32, ParseU32) -> Result<u32, String>) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match config_field(obj, section) {
        None => Ok(None),
        Some(Value::Object(o)) => {
            let field =
                |n: &str, default: u32, parse: ParseU32| member(o, section, n, default, parse);
            build(&field).map(Some)
        }
        Some(other) => Err(format!("{section} must be an object, got {other}")),
    }
}

/// `opt_u32` or `opt_percent`.
type ParseU32 = fn(Option<&Value>, &str) -> Result<Option<u32>, String>;

/// Field `name` of the ejection object `object` (called `parent` in errors),
/// read by `parse`; `default` when absent.
fn member(
    object: &Map<String, Value>,
    parent: &str,
    name: &str,
    default: u32,
    parse: ParseU32,
) -> Result<u32, String> {
    parse(config_field(object, name), &format!("{parent}.{name}")).map(|v| v.unwrap_or(default))
}

fn opt_u32(v: Option<&Value>, field: &str) -> Result<Option<u32>, String> {
    match v {
        None => Ok(None),
        Some(n) => crate::balancer::json::uint(n)
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{field} must be an integer from 0 to {}, got {n}", u32::MAX)),
    }
}

fn opt_percent(v: Option<&Value>, field: &str) -> Result<Option<u32>, String> {
    match opt_u32(v, field)? {
        Some(p) if p > 100 => Err(format!("{field} must be at most 100, got {p}")),
        p => Ok(p),
    }
}

fn opt_duration(v: Option<&Value>, field: &str) -> Result<Option<Duration>, String> {
    match v {
        None => Ok(None),
        // Negative ones are refused (A50), as by every config field.
        Some(v) => crate::balancer::json::duration(v)
            .map(Some)
            .map_err(|e| format!("{field}: {v} {e}")),
    }
}

// ---------------------------------------------------------------------------
// Counting (any RPC thread)

/// One endpoint's outcomes since the last sweep. On its own cache line so
/// that threads finishing calls on different endpoints never share one.
#[repr(align(64))]
#[derive(Default)]
struct Counters {
    success: AtomicU64,
    failure: AtomicU64,
}

impl Counters {
    /// The counts since the last call, zeroed: A50's two buckets in one
    /// (the active bucket is swapped for an empty one atomically per field).
    fn take(&self) -> (u64, u64) {
        (
            self.success.swap(0, Ordering::Relaxed),
            self.failure.swap(0, Ordering::Relaxed),
        )
    }
}

/// Hashes a `SubConnId` (unique, often sequential) by one multiplication.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Which counters a subchannel's outcomes go to. Immutable;
/// shared by every picker published while the child's subchannels stay the
/// same. A subchannel of no known endpoint is not counted (A50).
///
/// Subchannel ids are handed out in sequence, so the table is usually
/// dense: indexed by id less the smallest (one bounds check and one load);
/// a hash map holds them instead when ids are spread too thin.
#[derive(Default)]
struct OutcomeTable {
    base: u64,
    dense: Vec<Option<Arc<Counters>>>,
    sparse: HashMap<SubConnId, Arc<Counters>, BuildHasherDefault<IdHasher>>,
}

impl OutcomeTable {
    fn new(entries: Vec<(SubConnId, Arc<Counters>)>) -> OutcomeTable {
        let (Some(min), Some(max)) = (
            entries.iter().map(|(id, _)| id.0).min(),
            entries.iter().map(|(id, _)| id.0).max(),
        ) else {
            return OutcomeTable::default();
        };
        let span = max - min + 1;
        if span > 4 * entries.len() as u64 + 64 {
            return OutcomeTable {
                sparse: entries.into_iter().collect(),
                ..OutcomeTable::default()
            };
        }
        let mut dense = vec![None; span as usize];
        for (id, c) in entries {
            dense[(id.0 - min) as usize] = Some(c);
        }
        OutcomeTable {
            base: min,
            dense,
            sparse: HashMap::default(),
        }
    }

    #[inline]
    fn get(&self, id: SubConnId) -> Option<&Counters> {
        match self.dense.get(id.0.wrapping_sub(self.base) as usize) {
            Some(c) => c.as_deref(),
            None if self.sparse.is_empty() => None,
            None => self.sparse.get(&id).map(|c| &**c),
        }
    }
}

/// The table pickers look outcomes up in: one built over every subchannel
/// at the last full sync (shared by the tables after it), and a small one
/// over the subchannels the child made since. A child's new subchannel
/// (an endpoint moving to its next address) then costs a copy of the
/// small one, not of the whole table; the small one is folded in once it
/// grows past about the square root of the whole (see
/// `OutlierDetection::sync`).
#[derive(Default)]
struct Outcomes {
    all: Arc<OutcomeTable>,
    recent: OutcomeTable,
}

impl Outcomes {
    #[inline]
    fn get(&self, id: SubConnId) -> Option<&Counters> {
        self.all.get(id).or_else(|| self.recent.get(id))
    }
}

/// An endpoint's counters are the done hook its picks carry: the pick
/// finds them (by the subchannel's id), the RPC's end just counts.
impl DoneHook for Counters {
    #[inline]
    fn done(&self, _: &SubConn, info: &DoneInfo<'_>) {
        // Any non-OK outcome is a failure, as in gRPC-Go (by its code, or
        // by an error from a caller that sets only that).
        let counter = if info.code != Code::Ok || info.error.is_some() {
            &self.failure
        } else {
            &self.success
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counting: the child's pick, with the outcome hook added after its own.
struct CountingPicker {
    child: Arc<dyn Picker>,
    outcomes: Arc<Outcomes>,
    /// The child's chain was already full (see `DoneHooks`).
    too_deep: Status,
}

impl Picker for CountingPicker {
    #[inline]
    fn pick<'a>(&'a self, info: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        // A rotation (round_robin's picker) has no hook of its own: pick
        // from it directly, the subchannel coming back in a register rather
        // than in a `PickResult` written and read back.
        // Its entries carry the ids, so the subchannel is not read either.
        if let Some(rotation) = self.child.rotation() {
            let (subconn, id) = rotation.pick_with_id(local);
            let done = match self.outcomes.get(id) {
                Some(counters) => DoneHooks::one(counters),
                None => DoneHooks::NONE,
            };
            return PickResult::Complete { subconn, done };
        }
        match self.child.pick(info, local) {
            PickResult::Complete { subconn, done } => match self.outcomes.get(subconn.id()) {
                None => PickResult::Complete { subconn, done },
                Some(counters) => match done.with_outer(counters) {
                    Ok(done) => PickResult::Complete { subconn, done },
                    Err(_) => PickResult::Fail(&self.too_deep),
                },
            },
            other => other,
        }
    }
}

// ---------------------------------------------------------------------------
// The policy (loop thread)

/// One endpoint's ejection state (A50's address map entry, per endpoint as
/// A61 says).
struct EndpointEntry {
    counters: Arc<Counters>,
    /// When it was ejected; `None` while it is not.
    ejected_at: Option<Instant>,
    /// Times ejected, less one per sweep spent not ejected.
    multiplier: u32,
}

/// A subchannel of the child's, as this parent wraps it.
struct Tracked {
    /// Its endpoint's key, if its address belongs to one.
    endpoint: Option<String>,
    /// The last state the channel reported for it.
    real: SubConnState,
    /// The child is shown TRANSIENT_FAILURE for it instead of `real`.
    hidden: bool,
    /// Its ejections are shown to the child that owns it: decided when it
    /// is first tracked, by the child policy then in force (which made it),
    /// so that while a new child policy is pending the serving one keeps
    /// its own rule (see `ejection_shown`).
    shown: bool,
}

#[derive(Default)]
struct OutlierDetection {
    config: Option<Arc<OutlierDetectionConfig>>,
    children: ChildManager,
    /// By endpoint key, in a stable order (sweeps walk it in that order).
    endpoints: BTreeMap<String, EndpointEntry>,
    /// Address → endpoint key.
    by_addr: HashMap<String, String>,
    subconns: HashMap<SubConnId, Tracked>,
    /// `ChildManager::version` that `subconns` and `outcomes` reflect.
    synced: Option<u64>,
    outcomes: Arc<Outcomes>,
    /// The entries of `outcomes.recent`.
    recent: Vec<(SubConnId, Arc<Counters>)>,
    /// Entries of `outcomes` for subchannels shut down since it was built:
    /// left there (ids are never reused, and the child picks a subchannel
    /// no more once it is shut down) until they outnumber the live ones,
    /// so that each SHUTDOWN costs O(1), not a new table and picker.
    stale_outcomes: usize,
    /// The child picker and mode last wrapped and published.
    published: Option<(Arc<dyn Picker>, bool, usize)>,
    timer: Option<TimerToken>,
    /// When the sweep timer was last started (A50's timer start time).
    timer_started: Option<Instant>,
}

fn schedule(cc: &mut dyn ClientConn, after: Duration) -> TimerToken {
    cc.schedule_timer(after.min(LONGEST_TIMER))
}

/// The least time from one sweep to the next: an `interval` of 0 s, which
/// gRPC accepts, would keep the loop sweeping without a pause.
const SHORTEST_SWEEP: Duration = Duration::from_millis(1);

impl OutlierDetection {
    fn counting(&self) -> bool {
        self.config.as_ref().is_some_and(|c| c.counting())
    }

    /// Whether the configured child policy is shown an ejection (each
    /// tracked subchannel keeps the answer for the policy that made it,
    /// `Tracked::shown`): not when the child is pick_first itself. gRPC signals an ejection as a health failure
    /// (A61), which pick_first hears only as a petiole's child (under
    /// round_robin and the like), never as outlier detection's own child
    /// ("outlier detection should never have worked with pick_first"): there
    /// it is tracked but changes nothing. Any other child (a custom one
    /// too) sees its ejected subchannels failed.
    fn ejection_shown(&self) -> bool {
        self.config
            .as_ref()
            .is_some_and(|c| c.child_policy.name() != super::pick_first::NAME)
    }

    /// Whether `key` was ejected at `at` (by this sweep's success rate).
    fn ejected_at(&self, key: &str, at: Instant) -> bool {
        self.endpoints
            .get(key)
            .is_some_and(|e| e.ejected_at == Some(at))
    }

    fn is_ejected(&self, endpoint: Option<&String>) -> bool {
        endpoint
            .and_then(|k| self.endpoints.get(k))
            .is_some_and(|e| e.ejected_at.is_some())
    }

    /// Gives the child `sc`'s real state (`hidden` false) or, for an
    /// ejected endpoint's, TRANSIENT_FAILURE.
    fn give(&mut self, cc: &mut dyn ClientConn, sc: SubConnId, state: SubConnState, hidden: bool) {
        if let Some(t) = self.subconns.get_mut(&sc) {
            t.hidden = hidden;
        }
        let state = if hidden {
            SubConnState {
                state: ConnectivityState::TransientFailure,
                error: Some(EJECTED.into()),
            }
        } else {
            state
        };
        self.children.subconn_state(cc, sc, &state);
    }

    /// Subchannels shown failed whose endpoint is no longer ejected (it was
    /// returned, or a resolver update moved their address to another
    /// endpoint or none) get their real state back: those of endpoint
    /// `only`, or all.
    fn reveal(&mut self, cc: &mut dyn ClientConn, only: Option<&str>) {
        let mut ids: Vec<SubConnId> = self
            .subconns
            .iter()
            .filter(|(_, t)| only.is_none() || t.endpoint.as_deref() == only)
            .filter(|(_, t)| t.hidden && (!self.is_ejected(t.endpoint.as_ref()) || !t.shown))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(real) = self.subconns.get(&id).map(|t| t.real.clone()) {
                self.give(cc, id, real, false);
            }
        }
    }

    /// Shows the child the endpoint `key`'s subchannels failed (those whose
    /// owner is shown ejections).
    fn hide_endpoint(&mut self, cc: &mut dyn ClientConn, key: &str) {
        // Only connected ones: an ejection is a health verdict (A61), which
        // a subchannel not READY has none of; it is shown failed when it
        // connects (`update_subconn_state`).
        let mut ids: Vec<SubConnId> = self
            .subconns
            .iter()
            .filter(|(_, t)| t.shown && !t.hidden && t.endpoint.as_deref() == Some(key))
            .filter(|(_, t)| t.real.is(ConnectivityState::Ready))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(real) = self.subconns.get(&id).map(|t| t.real.clone()) {
                self.give(cc, id, real, true);
            }
        }
    }

    /// Ejects `key` at `now`, one more on its multiplier; ejected already,
    /// its ejection restarts (A50: eject sets the timestamp, adds one).
    fn eject(&mut self, cc: &mut dyn ClientConn, key: &str, now: Instant) {
        let Some(e) = self.endpoints.get_mut(key) else {
            return;
        };
        e.ejected_at = Some(now);
        e.multiplier = e.multiplier.saturating_add(1);
        log::debug!(target: crate::trace::CHANNEL, "outlier detection: ejecting {key}");
        self.hide_endpoint(cc, key);
    }

    fn uneject(&mut self, cc: &mut dyn ClientConn, key: &str) {
        let Some(e) = self.endpoints.get_mut(key) else {
            return;
        };
        if e.ejected_at.take().is_some() {
            log::debug!(target: crate::trace::CHANNEL, "outlier detection: returning {key}");
            self.reveal(cc, Some(key));
        }
    }

    /// Whether one more endpoint may be ejected: while fewer than
    /// `max_ejection_percent` of them are (gRPC-Go's check). So any
    /// percentage above 0 lets the first one go (the proto's "at least
    /// one"), and 0 ejects none, as gRPC-Go's tests pin.
    fn may_eject(&self, config: &OutlierDetectionConfig) -> bool {
        let total = self.endpoints.len() as u64;
        let ejected = self
            .endpoints
            .values()
            .filter(|e| e.ejected_at.is_some())
            .count() as u64;
        ejected * 100 < u64::from(config.max_ejection_percent) * total
    }

    /// The child's subchannels and the outcome table follow the child (after
    /// any call into it); then its picker is republished if it changed.
    fn after_child(&mut self, cc: &mut dyn ClientConn) {
        self.sync(false);
        self.publish(cc);
    }

    fn sync(&mut self, force: bool) {
        let version = self.children.version();
        if !force && self.synced == Some(version) {
            return;
        }
        self.synced = Some(version);
        if !force && self.stale_outcomes <= self.subconns.len() + 64 {
            match self.untracked_newest() {
                // Subchannels only went away (each untracked by its
                // SHUTDOWN, see `update_subconn_state`): nothing to re-map,
                // the table may wait. Removing n endpoints stays O(n), not
                // n rebuilds of O(n) each.
                Some(0) => return,
                // Only new ones, fewer than the tracked ones: on their own
                // (O(new ones)), while those since the last full sync are
                // few (about 4√n: folding them in, O(n), comes once per
                // that many).
                Some(new)
                    if new <= self.subconns.len()
                        && (self.recent.len() + new).pow(2) <= 16 * self.subconns.len() + 4096 =>
                {
                    self.track_newest(new);
                    return;
                }
                _ => {}
            }
        }
        self.stale_outcomes = 0;
        self.recent.clear();
        let current: Vec<Arc<SubConn>> = self
            .children
            .get(CHILD)
            .map(|c| c.subconns().cloned().collect())
            .unwrap_or_default();
        let mut next = HashMap::with_capacity(current.len());
        let mut outcomes = Vec::with_capacity(current.len());
        let shown = self.ejection_shown();
        for sc in &current {
            let endpoint = self.by_addr.get(sc.addr()).cloned();
            let t = self.subconns.remove(&sc.id()).unwrap_or(Tracked {
                endpoint: None,
                real: SubConnState {
                    state: ConnectivityState::Idle,
                    error: None,
                },
                hidden: false,
                shown,
            });
            if let Some(e) = endpoint.as_ref().and_then(|k| self.endpoints.get(k)) {
                outcomes.push((sc.id(), e.counters.clone()));
            }
            next.insert(sc.id(), Tracked { endpoint, ..t });
        }
        self.subconns = next;
        self.outcomes = Arc::new(Outcomes {
            all: Arc::new(OutcomeTable::new(outcomes)),
            recent: OutcomeTable::default(),
        });
    }

    /// How many subchannels the child made since the last sync, when the
    /// rest are the tracked ones: its newest untracked ones (one made since
    /// comes after every tracked one), and as many more than tracked as
    /// that (every one gone since was untracked by its SHUTDOWN); `None`
    /// otherwise. O(new ones).
    fn untracked_newest(&self) -> Option<usize> {
        let Some(child) = self.children.get(CHILD) else {
            return self.subconns.is_empty().then_some(0);
        };
        let subconns = child.subconns();
        let len = subconns.len();
        let new = subconns
            .rev()
            .take_while(|sc| !self.subconns.contains_key(&sc.id()))
            .count();
        (len == self.subconns.len() + new).then_some(new)
    }

    /// Tracks the child's `new` newest subchannels (`untracked_newest`),
    /// each counted for its endpoint, if any.
    fn track_newest(&mut self, new: usize) {
        let Some(child) = self.children.get(CHILD) else {
            return;
        };
        let shown = self.ejection_shown();
        for sc in child.subconns().rev().take(new) {
            let endpoint = self.by_addr.get(sc.addr()).cloned();
            if let Some(e) = endpoint.as_ref().and_then(|k| self.endpoints.get(k)) {
                self.recent.push((sc.id(), e.counters.clone()));
            }
            self.subconns.insert(
                sc.id(),
                Tracked {
                    endpoint,
                    real: SubConnState {
                        state: ConnectivityState::Idle,
                        error: None,
                    },
                    hidden: false,
                    shown,
                },
            );
        }
        self.outcomes = Arc::new(Outcomes {
            all: self.outcomes.all.clone(),
            recent: OutcomeTable::new(self.recent.clone()),
        });
    }

    fn publish(&mut self, cc: &mut dyn ClientConn) {
        let Some(child) = self.children.get(CHILD) else {
            return;
        };
        let counting = self.counting();
        let picker = child.picker().clone();
        let outcomes = Arc::as_ptr(&self.outcomes) as usize;
        if let Some((p, c, o)) = &self.published {
            if Arc::ptr_eq(p, &picker) && *c == counting && (!counting || *o == outcomes) {
                return;
            }
        }
        let state = child.state();
        self.published = Some((picker.clone(), counting, outcomes));
        let wrapped: Box<dyn Picker> = if counting {
            Box::new(CountingPicker {
                child: picker,
                outcomes: self.outcomes.clone(),
                too_deep: Status::new(
                    Code::Internal,
                    "outlier detection: the child's pick already carries every done hook",
                ),
            })
        } else {
            Box::new(ForwardingPicker(picker))
        };
        cc.update_state(state, wrapped);
    }

    /// A50's sweep: take the interval's counts, run both algorithms, then
    /// decay multipliers and return endpoints whose time is up.
    fn sweep(&mut self, cc: &mut dyn ClientConn) {
        let Some(config) = self.config.clone().filter(|c| c.counting()) else {
            return;
        };
        let now = cc.now();
        self.timer_started = Some(now);
        let counts: Vec<(String, u64, u64)> = self
            .endpoints
            .iter()
            .map(|(k, e)| {
                let (s, f) = e.counters.take();
                (k.clone(), s, f)
            })
            .collect();
        if let Some(sr) = &config.success_rate_ejection {
            self.success_rate(cc, &config, sr, &counts, now);
        }
        if let Some(fp) = &config.failure_percentage_ejection {
            self.failure_percentage(cc, &config, fp, &counts, now);
        }
        let keys: Vec<String> = self.endpoints.keys().cloned().collect();
        for key in keys {
            let Some(e) = self.endpoints.get_mut(&key) else {
                continue;
            };
            match e.ejected_at {
                None => e.multiplier = e.multiplier.saturating_sub(1),
                Some(at) => {
                    let until = at.checked_add(config.ejection_time(e.multiplier));
                    if until.is_some_and(|until| now > until) {
                        self.uneject(cc, &key);
                    }
                }
            }
        }
        self.timer = Some(schedule(cc, config.interval.max(SHORTEST_SWEEP)));
        self.after_child(cc);
    }

    fn success_rate(
        &mut self,
        cc: &mut dyn ClientConn,
        config: &OutlierDetectionConfig,
        sr: &SuccessRateEjection,
        counts: &[(String, u64, u64)],
        now: Instant,
    ) {
        let candidates: Vec<(&str, u64, u64)> = counts
            .iter()
            .filter(|(_, s, f)| s + f >= u64::from(sr.request_volume))
            .map(|(k, s, f)| (k.as_str(), *s, *f))
            .collect();
        if candidates.len() < sr.minimum_hosts as usize || candidates.is_empty() {
            return;
        }
        // With requestVolume 0 an endpoint with no calls is a candidate
        // (it counts towards minimumHosts) whose success rate is 0/0: the
        // mean is then no number and no rate falls below it, so the sweep
        // ejects nothing by success rate (gRPC-Go divides as floats).
        if candidates.iter().any(|(_, s, f)| s + f == 0) {
            return;
        }
        let candidates: Vec<(&str, f64)> = candidates
            .into_iter()
            .map(|(k, s, f)| (k, s as f64 / (s + f) as f64))
            .collect();
        let n = candidates.len() as f64;
        let mean = candidates.iter().map(|(_, r)| r).sum::<f64>() / n;
        let variance = candidates
            .iter()
            .map(|(_, r)| (r - mean) * (r - mean))
            .sum::<f64>()
            / n;
        let required = mean - variance.sqrt() * (f64::from(sr.stdev_factor) / 1000.0);
        for (key, rate) in candidates {
            if !self.may_eject(config) {
                return;
            }
            // An outlier already ejected is ejected again (A50, gRPC-Go):
            // its time restarts now and its multiplier grows.
            if rate < required && cc.random() % 100 < u64::from(sr.enforcement_percentage) {
                self.eject(cc, key, now);
            }
        }
    }

    fn failure_percentage(
        &mut self,
        cc: &mut dyn ClientConn,
        config: &OutlierDetectionConfig,
        fp: &FailurePercentageEjection,
        counts: &[(String, u64, u64)],
        now: Instant,
    ) {
        let candidates: Vec<(&str, u64, u64)> = counts
            .iter()
            // With requestVolume 0 an endpoint with no calls counts towards
            // minimumHosts (gRPC-Go), though it is never above the threshold.
            .filter(|(_, s, f)| s + f >= u64::from(fp.request_volume))
            .map(|(k, s, f)| (k.as_str(), *s, *f))
            .collect();
        if candidates.len() < fp.minimum_hosts as usize {
            return;
        }
        for (key, s, f) in candidates {
            if !self.may_eject(config) {
                return;
            }
            // Strictly above the threshold (A50, C-core, gRPC-Go). Ejected
            // by an earlier sweep and still failing, it is ejected again
            // (A50, gRPC-Go); ejected by success rate in this sweep, it is
            // not ejected twice for one interval's calls (C-core).
            if f * 100 > u64::from(fp.threshold) * (s + f)
                && !self.ejected_at(key, now)
                && cc.random() % 100 < u64::from(fp.enforcement_percentage)
            {
                self.eject(cc, key, now);
            }
        }
    }

    /// The endpoint map follows the resolver's list: new endpoints get a
    /// fresh entry, removed ones lose theirs (and their ejection state).
    fn update_endpoints(&mut self, endpoints: &[Endpoint]) {
        let mut by_addr = HashMap::new();
        let mut kept = BTreeMap::new();
        for e in endpoints {
            let key = endpoint_key(e);
            for a in &e.addresses {
                by_addr.entry(a.addr.clone()).or_insert_with(|| key.clone());
            }
            if kept.contains_key(&key) {
                continue;
            }
            let entry = self.endpoints.remove(&key).unwrap_or(EndpointEntry {
                counters: Arc::default(),
                ejected_at: None,
                multiplier: 0,
            });
            kept.insert(key, entry);
        }
        self.endpoints = kept;
        self.by_addr = by_addr;
    }

    /// A50's config-update rules for the sweep timer.
    fn update_timer(&mut self, cc: &mut dyn ClientConn, config: &OutlierDetectionConfig) {
        if let Some(t) = self.timer.take() {
            cc.cancel_timer(t);
        }
        if config.counting() {
            let now = cc.now();
            let after = match self.timer_started {
                None => {
                    self.timer_started = Some(now);
                    for e in self.endpoints.values() {
                        e.counters.take();
                    }
                    config.interval
                }
                Some(started) => config
                    .interval
                    .saturating_sub(now.saturating_duration_since(started)),
            };
            self.timer = Some(schedule(cc, after));
        } else {
            self.timer_started = None;
            let keys: Vec<String> = self.endpoints.keys().cloned().collect();
            for key in keys {
                self.uneject(cc, &key);
                if let Some(e) = self.endpoints.get_mut(&key) {
                    e.multiplier = 0;
                }
            }
        }
    }
}

impl Balancer for OutlierDetection {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        let config = state
            .config
            .clone()
            .and_then(|c| c.downcast::<OutlierDetectionConfig>().ok())
            .ok_or_else(|| format!("{NAME} needs its config (at least childPolicy)"))?;
        self.update_endpoints(&state.endpoints);
        // Endpoints may have come, gone or changed: re-map the subchannels.
        self.sync(true);
        self.config = Some(config.clone());
        self.update_timer(cc, &config);
        self.reveal(cc, None);
        // The child runs under a graceful switch: a config naming another
        // child policy builds it beside the old one, which keeps serving
        // until the new one is ready (gRPC-Go's outlier detection does so).
        let child = ClientConnState {
            endpoints: state.endpoints,
            addresses: state.addresses,
            config: SwitchTo::config(config.child_policy.clone(), config.child_config.clone()),
        };
        let result = self.children.update(
            cc,
            vec![ChildUpdate {
                key: CHILD.into(),
                builder: Arc::new(Switching::labelled("outlier detection")),
                state: child,
            }],
        );
        self.after_child(cc);
        result
    }

    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        if self.children.get(CHILD).is_none() {
            // No config yet, so no child to tell: fail picks, as a parent
            // without a policy does (grpc-java, gRPC-Go's graceful switch).
            cc.update_state(
                ConnectivityState::TransientFailure,
                Box::new(FailPicker::resolver_error(error)),
            );
            return;
        }
        self.children.resolver_error(cc, error);
        self.after_child(cc);
    }

    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        let ejected = match self.subconns.get_mut(&sc) {
            Some(t) => {
                t.real = state.clone();
                let (e, shown) = (t.endpoint.clone(), t.shown);
                shown && self.is_ejected(e.as_ref())
            }
            None => false,
        };
        if ejected && state.is(ConnectivityState::Ready) {
            // A61: an ejection is a health verdict, not a connectivity
            // state: the child sees the connection made, its health yet to
            // answer (CONNECTING on a connected subchannel: pick_first
            // selects it), then failed. Its READY comes with its return.
            self.children.subconn_state(
                cc,
                sc,
                &SubConnState {
                    state: ConnectivityState::Connecting,
                    error: None,
                },
            );
            self.give(cc, sc, state.clone(), true);
        } else {
            // Raw connectivity goes to the child as is, ejected or not, so
            // that it manages the connection as usual (A61): a connection
            // lost while ejected is made again, or the endpoint's next
            // address tried, by the child.
            self.give(cc, sc, state.clone(), false);
        }
        if state.is(ConnectivityState::Shutdown) && self.subconns.remove(&sc).is_some() {
            // Gone from the child's subchannels too (see `sync`).
            self.stale_outcomes += 1;
        }
        self.after_child(cc);
    }

    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        self.children.exit_idle(cc, CHILD);
        self.after_child(cc);
    }

    fn work(&mut self, cc: &mut dyn ClientConn) {
        self.children.work(cc);
        self.after_child(cc);
    }

    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        if self.timer == Some(token) {
            self.timer = None;
            self.sweep(cc);
        } else if self.children.timer(cc, token).is_some() {
            self.after_child(cc);
        }
    }

    fn close(&mut self, cc: &mut dyn ClientConn) {
        if let Some(t) = self.timer.take() {
            cc.cancel_timer(t);
        }
        self.children.close(cc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::testing::{Picked, TestClientConn};
    use crate::Address;
    use serde_json::json;
    use std::collections::HashSet;

    fn config(v: Value) -> Result<OutlierDetectionConfig, String> {
        parse(&v)
    }

    #[test]
    fn config_defaults_and_every_field() {
        let c = config(json!({"childPolicy": [{"round_robin": {}}]})).unwrap();
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.base_ejection_time, Duration::from_secs(30));
        assert_eq!(c.max_ejection_time, Duration::from_secs(300));
        assert_eq!(c.max_ejection_percent, 10);
        assert!(c.success_rate_ejection.is_none());
        assert!(c.failure_percentage_ejection.is_none());
        assert!(!c.counting());
        assert_eq!(c.child_policy.name(), "round_robin");

        let c = config(json!({
            "childPolicy": [{"no_such_policy": {}}, {"pick_first": {}}],
            "successRateEjection": {}, "failurePercentageEjection": {},
            "unknownField": [1, 2],
        }))
        .unwrap();
        assert_eq!(c.child_policy.name(), "pick_first");
        assert_eq!(
            c.success_rate_ejection,
            Some(SuccessRateEjection::default())
        );
        assert_eq!(
            c.success_rate_ejection.unwrap(),
            SuccessRateEjection {
                stdev_factor: 1900,
                enforcement_percentage: 100,
                minimum_hosts: 5,
                request_volume: 100
            }
        );
        assert_eq!(
            c.failure_percentage_ejection.unwrap(),
            FailurePercentageEjection {
                threshold: 85,
                enforcement_percentage: 100,
                minimum_hosts: 5,
                request_volume: 50
            }
        );

        // proto3 JSON: an integer may come as its string or as 3.0.
        let c = config(json!({
            "interval": "1.5s", "baseEjectionTime": "0.000000001s", "maxEjectionTime": "7s",
            "maxEjectionPercent": 100,
            "successRateEjection": {"stdevFactor": "1000", "enforcementPercentage": 0,
                                    "minimumHosts": 3.0, "requestVolume": 7},
            "failurePercentageEjection": {"threshold": 0, "enforcementPercentage": 50,
                                          "minimumHosts": 0, "requestVolume": 1},
            "childPolicy": [{"round_robin": {}}],
        }))
        .unwrap();
        assert_eq!(c.interval, Duration::from_millis(1500));
        assert_eq!(c.base_ejection_time, Duration::from_nanos(1));
        assert_eq!(c.max_ejection_time, Duration::from_secs(7));
        assert_eq!(c.max_ejection_percent, 100);
        assert_eq!(
            c.success_rate_ejection.unwrap(),
            SuccessRateEjection {
                stdev_factor: 1000,
                enforcement_percentage: 0,
                minimum_hosts: 3,
                request_volume: 7
            }
        );
        assert_eq!(
            c.failure_percentage_ejection.unwrap(),
            FailurePercentageEjection {
                threshold: 0,
                enforcement_percentage: 50,
                minimum_hosts: 0,
                request_volume: 1
            }
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let rr = json!([{"round_robin": {}}]);
        let cases = [
            (json!({}), "childPolicy is required"),
            // A bad duration is named even with no childPolicy (gRPC-Go's
            // Interval_Negative and the like).
            (json!({"interval": "-10s"}), "interval"),
            (json!({"baseEjectionTime": "-10s"}), "baseEjectionTime"),
            (json!({"maxEjectionTime": "-10s"}), "maxEjectionTime"),
            (
                json!({"childPolicy": [{"nope": {}}]}),
                "no supported policies",
            ),
            (json!({"childPolicy": {}}), "childPolicy must be an array"),
            (
                json!({"childPolicy": rr, "maxEjectionPercent": 101}),
                "maxEjectionPercent",
            ),
            (
                json!({"childPolicy": rr, "maxEjectionPercent": -1}),
                "maxEjectionPercent",
            ),
            (json!({"childPolicy": rr, "interval": "-1s"}), "interval"),
            (json!({"childPolicy": rr, "interval": "10"}), "interval"),
            (json!({"childPolicy": rr, "interval": 10}), "interval"),
            (
                json!({"childPolicy": rr, "baseEjectionTime": "1.0000000001s"}),
                "baseEjectionTime",
            ),
            (
                json!({"childPolicy": rr, "maxEjectionTime": "315576000001s"}),
                "maxEjectionTime",
            ),
            (
                json!({"childPolicy": rr, "successRateEjection": {"enforcementPercentage": 101}}),
                "successRateEjection.enforcementPercentage",
            ),
            (
                json!({"childPolicy": rr, "successRateEjection": {"stdevFactor": "x"}}),
                "successRateEjection.stdevFactor",
            ),
            (
                json!({"childPolicy": rr, "failurePercentageEjection": {"threshold": 101}}),
                "failurePercentageEjection.threshold",
            ),
            (
                json!({"childPolicy": rr, "failurePercentageEjection": {"enforcementPercentage": 200}}),
                "failurePercentageEjection.enforcementPercentage",
            ),
            (
                json!({"childPolicy": rr, "failurePercentageEjection": {"requestVolume": 1.5}}),
                "failurePercentageEjection.requestVolume",
            ),
            (
                json!({"childPolicy": rr, "successRateEjection": 3}),
                "successRateEjection",
            ),
            (
                json!({"childPolicy": [{"pick_first": {"shuffleAddressList": 1}}]}),
                "error parsing loadBalancingConfig for policy \"pick_first\"",
            ),
        ];
        for (c, want) in cases {
            let e = config(c.clone()).expect_err(&c.to_string());
            assert!(e.contains(want), "{c}: {e}");
        }
    }

    /// A policy over `n` READY endpoints (round_robin child), configured with `extra`.
    fn ready(n: usize, extra: Value) -> (TestClientConn, Box<dyn Balancer>, Vec<SubConnId>) {
        let mut cfg = json!({"childPolicy": [{"round_robin": {}}]});
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let parsed = OutlierDetectionBuilder.parse_config(&cfg).unwrap();
        let mut cc = TestClientConn::new();
        let mut od = OutlierDetectionBuilder.build();
        cc.update(
            &mut *od,
            ClientConnState::from_addresses(addresses(n), parsed),
        )
        .unwrap();
        let ids: Vec<SubConnId> = cc.connects().to_vec();
        assert_eq!(ids.len(), n);
        for id in &ids {
            cc.set_state(&mut *od, *id, ConnectivityState::Ready);
        }
        assert_eq!(cc.state(), Some(ConnectivityState::Ready));
        (cc, od, ids)
    }

    /// `n` addresses, 127.0.0.1:1000 on.
    fn addresses(n: usize) -> Vec<Address> {
        (0..n)
            .map(|i| Address::new(format!("127.0.0.1:{}", 1000 + i)))
            .collect()
    }

    /// Five READY endpoints (round_robin child, success-rate ejection), the
    /// third ejected after failing every call: the policy and its
    /// subchannels, the ejected one last.
    fn one_ejected() -> (TestClientConn, Box<dyn Balancer>, Vec<SubConnId>, SubConnId) {
        let (mut cc, mut od, ids) = ready(5, json!({"successRateEjection": {}}));
        let bad = ids[2];
        traffic(&mut cc, 1000, &[bad]);
        assert_eq!(cc.advance(&mut *od, Duration::from_secs(10)), 1);
        assert!(!traffic(&mut cc, 1000, &[]).contains(&bad));
        (cc, od, ids, bad)
    }

    /// `n` picks, each finished failed when its subchannel is in `failing`.
    fn traffic(cc: &mut TestClientConn, n: usize, failing: &[SubConnId]) -> HashSet<SubConnId> {
        let picker = cc.picker().unwrap().clone();
        traffic_on(&picker, n, failing)
    }

    /// `traffic` through `picker` (one published earlier, say).
    fn traffic_on(picker: &Arc<dyn Picker>, n: usize, failing: &[SubConnId]) -> HashSet<SubConnId> {
        let mut local = PickLocal::new(7);
        let mut seen = HashSet::new();
        for _ in 0..n {
            match picker.pick(&PickInfo::default(), &mut local) {
                PickResult::Complete { subconn, done } => {
                    let failed = failing.contains(&subconn.id());
                    let code = if failed { Code::Unavailable } else { Code::Ok };
                    done.report(
                        subconn,
                        &DoneInfo {
                            error: failed.then_some("UNAVAILABLE"),
                            code,
                            ..Default::default()
                        },
                    );
                    seen.insert(subconn.id());
                }
                _ => panic!("READY picker did not complete"),
            }
        }
        seen
    }

    /// Endpoints removed: their SHUTDOWNs publish no picker each (the
    /// outcome table keeps their entries a while rather than being rebuilt
    /// per SHUTDOWN, which made removing n endpoints O(n²)), and the ones
    /// left are still counted and ejected, whether the table was rebuilt
    /// (most removed) or not (some).
    #[test]
    fn removed_endpoints_publish_no_picker_each_and_the_rest_are_still_counted() {
        for keep in [60, 10] {
            let extra = json!({"successRateEjection": {}});
            let (mut cc, mut od, ids) = ready(100, extra.clone());
            let mut cfg = json!({"childPolicy": [{"round_robin": {}}]});
            cfg["successRateEjection"] = extra["successRateEjection"].clone();
            let parsed = OutlierDetectionBuilder.parse_config(&cfg).unwrap();
            let published = cc.pickers_published();
            cc.update(
                &mut *od,
                ClientConnState::from_addresses(addresses(keep), parsed),
            )
            .unwrap();
            let mut gone = cc.shutdowns().to_vec();
            gone.sort_unstable();
            assert_eq!(gone, ids[keep..], "keep {keep}");
            let pickers = cc.pickers_published() - published;
            assert!(pickers <= 3, "keep {keep}: {pickers} pickers");
            let bad = ids[2];
            let seen = traffic(&mut cc, 120 * keep, &[bad]);
            assert_eq!(seen.len(), keep);
            assert_eq!(cc.advance(&mut *od, Duration::from_secs(10)), 1);
            let seen = traffic(&mut cc, 120 * keep, &[]);
            assert!(!seen.contains(&bad), "keep {keep}: {bad:?} ejected");
            assert_eq!(seen.len(), keep - 1);
        }
    }

    /// Dual-address endpoints whose first addresses fail to connect (a
    /// fleet whose IPv6 is down), one after another: each endpoint's new
    /// subchannel (its second address) is tracked on its own, the outcome
    /// table over the others shared rather than built again (which made
    /// bringing such a fleet up O(n²)), and the endpoints' outcomes still
    /// count, through whichever subchannel: the one failing every call is
    /// ejected.
    #[test]
    fn endpoints_moving_to_their_next_address_are_tracked_one_at_a_time() {
        const N: usize = 40;
        let second = |i: usize| crate::Endpoint::second_of(i, 1000);
        let endpoints = crate::Endpoint::dual_address(N, 1000);
        let cfg = json!({"childPolicy": [{"round_robin": {}}], "failurePercentageEjection": {}});
        let parsed = OutlierDetectionBuilder.parse_config(&cfg).unwrap();
        let mut cc = TestClientConn::new();
        let mut od = OutlierDetection::default();
        cc.update(&mut od, ClientConnState::new(endpoints, parsed))
            .unwrap();
        let firsts: Vec<SubConnId> = cc.subconns().iter().map(|sc| sc.id()).collect();
        assert_eq!(firsts.len(), N);
        let all = od.outcomes.all.clone();
        let mut seconds = Vec::new();
        for (i, id) in firsts.iter().enumerate() {
            cc.set_state(&mut od, *id, ConnectivityState::Connecting);
            cc.set_state(&mut od, *id, ConnectivityState::TransientFailure);
            let next = cc.subconn_for(&second(i)).expect("the next address's").id();
            cc.set_state(&mut od, next, ConnectivityState::Ready);
            seconds.push(next);
        }
        assert!(
            Arc::ptr_eq(&all, &od.outcomes.all),
            "the table over the first ones, shared"
        );
        assert_eq!(od.recent.len(), N, "one entry per new subchannel");
        assert_eq!(cc.state(), Some(ConnectivityState::Ready));
        let bad = seconds[3];
        assert_eq!(traffic(&mut cc, 200 * N, &[bad]).len(), N);
        assert_eq!(cc.advance(&mut od, Duration::from_secs(10)), 1);
        let seen = traffic(&mut cc, 10 * N, &[]);
        assert!(!seen.contains(&bad), "ejected");
        assert_eq!(seen.len(), N - 1);
    }

    #[test]
    fn ejects_an_endpoint_failing_every_call_and_returns_it_after_the_ejection_time() {
        let (mut cc, mut od, ids) = ready(5, json!({"successRateEjection": {}}));
        let bad = ids[2];
        // Counting: the pick carries the child's hooks (none) and ours.
        assert!(matches!(cc.pick(), Picked::Complete { hooks: 1, .. }));
        let seen = traffic(&mut cc, 1000, &[bad]);
        assert_eq!(seen.len(), 5);
        // The first sweep (10 s): 4 endpoints at 100 %, one at 0 %: mean
        // 0.8, stdev 0.4, bound 0.8 - 0.4 * 1.9 = 0.04: the bad one is out.
        assert_eq!(cc.advance(&mut *od, Duration::from_secs(10)), 1);
        let seen = traffic(&mut cc, 1000, &[]);
        assert_eq!(seen.len(), 4);
        assert!(!seen.contains(&bad));
        assert_eq!(cc.state(), Some(ConnectivityState::Ready));
        // Ejected at 10 s for 30 s: still out at the sweeps at 20, 30 and 40
        // s (A50: back only once the time is strictly past).
        for _ in 0..3 {
            cc.advance(&mut *od, Duration::from_secs(10));
            assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
        }
        // Back at 50 s with its real state (READY); nothing was closed.
        cc.advance(&mut *od, Duration::from_secs(10));
        assert!(traffic(&mut cc, 100, &[]).contains(&bad));
        assert!(cc.shutdowns().is_empty());
    }

    /// An ejection reaches the child as a failed health verdict on a live
    /// connection: no re-resolution (gRPC re-resolves on failed
    /// connections, not on ejections).
    #[test]
    fn an_ejection_asks_for_no_re_resolution() {
        let (mut cc, mut od, ids) = ready(5, json!({"failurePercentageEjection": {}}));
        let before = cc.resolve_now_requests();
        traffic(&mut cc, 1000, &ids[..1]);
        assert_eq!(cc.advance(&mut *od, Duration::from_secs(10)), 1);
        assert!(!traffic(&mut cc, 100, &[]).contains(&ids[0]), "ejected");
        assert_eq!(cc.resolve_now_requests(), before);
    }

    /// gRPC-Go's outlier detection runs its child under a graceful switch: a
    /// config naming another child policy leaves the old child serving
    /// (nothing queued, nothing closed, its ejections still in force) until
    /// the new one is READY.
    #[test]
    fn a_new_child_policy_takes_over_gracefully() {
        let (mut cc, mut od, old, bad) = one_ejected();
        let cfg = json!({"childPolicy": [{"pick_first": {}}], "successRateEjection": {}});
        let parsed = OutlierDetectionBuilder.parse_config(&cfg).unwrap();
        let connects = cc.connects().len();
        cc.update(
            &mut *od,
            ClientConnState::from_addresses(addresses(5), parsed),
        )
        .unwrap();
        let new = cc.connects()[connects..].to_vec();
        assert_eq!(new.len(), 1, "pick_first connects its first address");
        assert!(!old.contains(&new[0]));
        // The new child is CONNECTING: round_robin still serves, the
        // ejected endpoint still out of its rotation (pick_first, which is
        // never shown ejections, is not round_robin's rule).
        assert_eq!(cc.state(), Some(ConnectivityState::Ready));
        let seen = traffic(&mut cc, 100, &[]);
        assert_eq!(seen.len(), 4);
        assert!(!seen.contains(&bad));
        assert!(cc.shutdowns().is_empty());
        // READY: pick_first takes over, round_robin's connections close.
        cc.set_state(&mut *od, new[0], ConnectivityState::Ready);
        assert_eq!(cc.state(), Some(ConnectivityState::Ready));
        assert_eq!(traffic(&mut cc, 30, &[]), HashSet::from([new[0]]));
        let mut closed = cc.shutdowns().to_vec();
        closed.sort_unstable();
        assert_eq!(closed, old);
        // Its picks still carry outlier detection's outcome hook.
        assert!(matches!(cc.pick(), Picked::Complete { hooks: 1, .. }));
    }

    #[test]
    fn a_connection_lost_while_ejected_is_made_again_and_returns_ready() {
        let (mut cc, mut od, _, bad) = one_ejected();
        // Its connection drops while it is out: it is connected again at
        // once (the child, shown it failed, would not ask).
        let connects = cc.connects().len();
        cc.set_state(&mut *od, bad, ConnectivityState::Idle);
        assert_eq!(&cc.connects()[connects..], &[bad]);
        cc.set_state(&mut *od, bad, ConnectivityState::Connecting);
        cc.set_state(&mut *od, bad, ConnectivityState::Ready);
        assert!(!traffic(&mut cc, 1000, &[]).contains(&bad), "still ejected");
        // Returned (at 50 s): READY at once, picked with no reconnect.
        for _ in 0..4 {
            cc.advance(&mut *od, Duration::from_secs(10));
        }
        assert!(traffic(&mut cc, 100, &[]).contains(&bad));
        assert_eq!(cc.connects().len(), connects + 1);
    }

    /// gRPC-Go's TestPickFirstHealthListenerDisabled: with pick_first as
    /// the child, an ejection is tracked but never shown (A61 signals it as
    /// a health failure, which a lone pick_first does not hear): the
    /// channel stays READY and picks go on.
    #[test]
    fn with_pick_first_as_the_child_an_ejection_changes_nothing() {
        let cfg = json!({"childPolicy": [{"pick_first": {}}],
                         "failurePercentageEjection":
                             {"minimumHosts": 0, "requestVolume": 2}});
        let parsed = OutlierDetectionBuilder.parse_config(&cfg).unwrap();
        let mut cc = TestClientConn::new();
        let mut od = OutlierDetectionBuilder.build();
        let addrs = vec![Address::new("127.0.0.1:1000")];
        cc.update(&mut *od, ClientConnState::from_addresses(addrs, parsed))
            .unwrap();
        let sc = cc.connects()[0];
        cc.set_state(&mut *od, sc, ConnectivityState::Connecting);
        cc.set_state(&mut *od, sc, ConnectivityState::Ready);
        assert_eq!(cc.state(), Some(ConnectivityState::Ready));
        traffic(&mut cc, 100, &[sc]);
        cc.advance(&mut *od, Duration::from_secs(10));
        assert_eq!(cc.state(), Some(ConnectivityState::Ready));
        assert_eq!(traffic(&mut cc, 10, &[]).len(), 1);
        // Its connection drops and comes back: pick_first sees it all.
        cc.set_state(&mut *od, sc, ConnectivityState::Idle);
        assert_eq!(cc.state(), Some(ConnectivityState::Idle));
    }

    /// A custom child (one that does not opt in to health checking, as C
    /// and Python policies do not) sees its ejected subchannels failed.
    #[test]
    fn a_custom_child_sees_an_ejection() {
        struct PlainRr;
        impl Builder for PlainRr {
            fn name(&self) -> &str {
                "od_test_plain_rr"
            }
            fn build(&self) -> Box<dyn Balancer> {
                crate::policy::round_robin::RoundRobinBuilder.build()
            }
        }
        crate::policy::registry::register(Arc::new(PlainRr));
        let (mut cc, mut od, ids) = ready(
            5,
            json!({"childPolicy": [{"od_test_plain_rr": {}}], "successRateEjection": {}}),
        );
        let bad = ids[2];
        traffic(&mut cc, 1000, &[bad]);
        assert_eq!(cc.advance(&mut *od, Duration::from_secs(10)), 1);
        let seen = traffic(&mut cc, 1000, &[]);
        assert_eq!(seen.len(), 4);
        assert!(!seen.contains(&bad));
    }

    #[test]
    fn ejection_time_grows_with_repeated_ejections() {
        let (mut cc, mut od, ids) = ready(5, json!({"failurePercentageEjection": {}}));
        let bad = ids[0];
        traffic(&mut cc, 500, &[bad]);
        cc.advance(&mut *od, Duration::from_secs(10)); // ejected at 10 s, ×1
        assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
        cc.advance(&mut *od, Duration::from_secs(40)); // back at 50 s
        assert!(traffic(&mut cc, 100, &[]).contains(&bad));
        // (Its 20 successes of the check above count: 200 failures make 91 %.)
        traffic(&mut cc, 1000, &[bad]);
        cc.advance(&mut *od, Duration::from_secs(10)); // ejected at 60 s, ×2: 60 s
        assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
        cc.advance(&mut *od, Duration::from_secs(60)); // sweep at 120 s: not yet
        assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
        cc.advance(&mut *od, Duration::from_secs(10)); // 130 s: back
        assert!(traffic(&mut cc, 100, &[]).contains(&bad));
    }

    /// A50 (its algorithms eject every outlier found, ejected or not;
    /// gRPC-Go's `successRateAlgorithm` and `failurePercentageAlgorithm`
    /// alike): an ejected endpoint whose calls (through a picker from
    /// before its ejection) still fail is ejected again: ejection time
    /// from this sweep, multiplier one more.
    #[test]
    fn an_ejected_endpoint_still_failing_is_ejected_again() {
        for algorithm in ["successRateEjection", "failurePercentageEjection"] {
            let (mut cc, mut od, ids) = ready(5, json!({"maxEjectionPercent": 100, algorithm: {}}));
            let bad = ids[2];
            let before = cc.picker().unwrap().clone();
            traffic_on(&before, 1000, &[bad]);
            assert_eq!(cc.advance(&mut *od, Duration::from_secs(10)), 1); // ×1
            assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
            traffic_on(&before, 1000, &[bad]);
            // Ejected again at 20 s, ×2: out for 60 s, so still out at the
            // sweeps of 30 to 80 s (once ejected it would be back at 50 s).
            cc.advance(&mut *od, Duration::from_secs(10));
            for at in [30, 40, 50, 60, 70, 80] {
                cc.advance(&mut *od, Duration::from_secs(10));
                let seen = traffic(&mut cc, 100, &[]);
                assert!(!seen.contains(&bad), "{algorithm}: back at {at} s");
            }
            cc.advance(&mut *od, Duration::from_secs(10));
            assert!(traffic(&mut cc, 100, &[]).contains(&bad), "{algorithm}");
        }
    }

    /// A50's sweep runs failure percentage after success rate; an endpoint
    /// success rate just ejected is not ejected again by it for the same
    /// interval's calls (C-core): ×1, back after one base ejection time.
    #[test]
    fn an_outlier_found_by_both_algorithms_is_ejected_once() {
        let (mut cc, mut od, ids) = ready(
            5,
            json!({"maxEjectionPercent": 100, "successRateEjection": {},
                   "failurePercentageEjection": {}}),
        );
        let bad = ids[2];
        traffic(&mut cc, 1000, &[bad]);
        cc.advance(&mut *od, Duration::from_secs(10)); // ×1: out for 30 s
        for at in [20, 30, 40] {
            cc.advance(&mut *od, Duration::from_secs(10));
            assert!(!traffic(&mut cc, 100, &[]).contains(&bad), "back at {at} s");
        }
        cc.advance(&mut *od, Duration::from_secs(10)); // 50 s: past 10 + 30
        assert!(traffic(&mut cc, 100, &[]).contains(&bad));
    }

    /// A50's timer on a config update: the next sweep is `interval` after
    /// the last start (or at once if that is past), counters kept; a
    /// counting config after a non-counting one starts afresh.
    #[test]
    fn a_zero_interval_still_pauses_between_sweeps() {
        let (mut cc, mut od, ids) = ready(
            5,
            json!({"interval": "0s", "failurePercentageEjection": {}}),
        );
        traffic(&mut cc, 100, &ids[..1]);
        // Sweeps, and arms the next one a millisecond on, not at once (the
        // loop would sweep without a pause).
        cc.advance(&mut *od, Duration::ZERO);
        let timers = cc.timers();
        assert_eq!(timers.len(), 1);
        assert_eq!(timers[0].1, cc.now() + Duration::from_millis(1));
    }

    #[test]
    fn a_config_update_rearms_the_sweep_from_the_last_start() {
        let (mut cc, mut od, ids) = ready(5, json!({"failurePercentageEjection": {}}));
        let start = cc.now();
        let update = |cc: &mut TestClientConn, od: &mut Box<dyn Balancer>, extra: Value| {
            let mut cfg = json!({"childPolicy": [{"round_robin": {}}]});
            for (k, v) in extra.as_object().unwrap() {
                cfg[k] = v.clone();
            }
            let parsed = OutlierDetectionBuilder.parse_config(&cfg).unwrap();
            cc.update(
                &mut **od,
                ClientConnState::from_addresses(addresses(5), parsed),
            )
            .unwrap();
        };
        traffic(&mut cc, 1000, &ids[..1]);
        cc.advance(&mut *od, Duration::from_secs(4));
        update(
            &mut cc,
            &mut od,
            json!({"interval": "6s", "failurePercentageEjection": {}}),
        );
        let timers = cc.timers();
        assert_eq!(timers.len(), 1);
        assert_eq!(timers[0].1, start + Duration::from_secs(6));
        // The counts from before the update still count.
        assert_eq!(cc.advance(&mut *od, Duration::from_secs(2)), 1);
        assert_eq!(traffic(&mut cc, 100, &[]).len(), 4);
        assert_eq!(cc.timers()[0].1, start + Duration::from_secs(12));
        // Past due: at once.
        cc.advance(&mut *od, Duration::from_secs(5)); // 11 s
        update(
            &mut cc,
            &mut od,
            json!({"interval": "1s", "failurePercentageEjection": {}}),
        );
        assert_eq!(cc.timers()[0].1, cc.now());
        // Off, then on again: a full interval from now.
        update(&mut cc, &mut od, json!({}));
        assert!(cc.timers().is_empty());
        update(
            &mut cc,
            &mut od,
            json!({"interval": "3s", "failurePercentageEjection": {}}),
        );
        assert_eq!(cc.timers()[0].1, cc.now() + Duration::from_secs(3));
    }

    /// An endpoint of two addresses (127.0.0.1:1000+i, then :2000+i).
    fn two_address_endpoint(i: usize) -> Endpoint {
        Endpoint::new(vec![
            Address::new(format!("127.0.0.1:{}", 1000 + i)),
            Address::new(format!("127.0.0.1:{}", 2000 + i)),
        ])
    }

    /// The address a test subchannel connects to.
    fn addr_of(cc: &TestClientConn, id: SubConnId) -> String {
        cc.subconn(id).unwrap().addr().to_string()
    }

    /// Two endpoints of two addresses under round_robin, both READY on
    /// their first address; the first (127.0.0.1:1000) failed every call
    /// and was ejected at the 10 s sweep for `base` (a duration string).
    /// Returns the config, the ejected endpoint's subchannel and the
    /// other's.
    fn one_of_two_endpoints_ejected(
        base: &str,
    ) -> (
        TestClientConn,
        Box<dyn Balancer>,
        Option<LbConfig>,
        SubConnId,
        SubConnId,
    ) {
        let cfg = OutlierDetectionBuilder
            .parse_config(&json!({"childPolicy": [{"round_robin": {}}],
                "maxEjectionPercent": 100, "baseEjectionTime": base,
                "failurePercentageEjection": {"minimumHosts": 0, "requestVolume": 2,
                                              "threshold": 50}}))
            .unwrap();
        let mut cc = TestClientConn::new();
        let mut od = OutlierDetectionBuilder.build();
        let endpoints = vec![two_address_endpoint(0), two_address_endpoint(1)];
        cc.update(&mut *od, ClientConnState::new(endpoints, cfg.clone()))
            .unwrap();
        let first: Vec<SubConnId> = cc.connects().to_vec();
        assert_eq!(
            first.len(),
            2,
            "pick_first under each endpoint: first address"
        );
        for id in &first {
            cc.set_state(&mut *od, *id, ConnectivityState::Ready);
        }
        let bad = *first
            .iter()
            .find(|id| addr_of(&cc, **id) == "127.0.0.1:1000")
            .unwrap();
        let good = *first.iter().find(|id| **id != bad).unwrap();
        traffic(&mut cc, 10, &[bad]);
        cc.advance(&mut *od, Duration::from_secs(10));
        assert_eq!(traffic(&mut cc, 10, &[]), HashSet::from([good]));
        (cc, od, cfg, bad, good)
    }

    /// A61: one entry per endpoint, whichever of its addresses is used
    /// (gRPC-Go's TestMultipleAddressesPerEndpoint and
    /// TestEjectionStateResetsWhenEndpointAddressesChange).
    #[test]
    fn endpoints_of_several_addresses_are_ejected_whole_and_reset_when_their_addresses_change() {
        let (mut cc, mut od, cfg, _, good) = one_of_two_endpoints_ejected("300s");
        // The endpoint loses its first address: a new endpoint, not ejected.
        cc.update(
            &mut *od,
            ClientConnState::new(
                vec![
                    Endpoint::new(vec![Address::new("127.0.0.1:2000")]),
                    two_address_endpoint(1),
                ],
                cfg,
            ),
        )
        .unwrap();
        for id in cc.connects().to_vec() {
            if cc.subconn(id).is_some() && !cc.shutdowns().contains(&id) && id != good {
                cc.set_state(&mut *od, id, ConnectivityState::Ready);
            }
        }
        let seen: HashSet<String> = traffic(&mut cc, 10, &[])
            .iter()
            .map(|id| addr_of(&cc, *id))
            .collect();
        assert_eq!(
            seen,
            HashSet::from(["127.0.0.1:2000".to_string(), "127.0.0.1:1001".to_string()])
        );
    }

    /// A61 (gRPC-Go's TestMultipleAddressesPerEndpoint): an ejection is a
    /// health signal; raw connectivity still drives pick_first, so an
    /// ejected endpoint whose connection is lost goes on to its next
    /// address while ejected (and is READY as soon as it is returned).
    #[test]
    fn an_ejected_endpoint_fails_over_to_its_next_address_while_ejected() {
        let (mut cc, mut od, _, bad, good) = one_of_two_endpoints_ejected("30s");
        let n = cc.connects().len();
        cc.set_state(&mut *od, bad, ConnectivityState::Idle);
        cc.set_state(&mut *od, bad, ConnectivityState::Connecting);
        cc.set_state(&mut *od, bad, ConnectivityState::TransientFailure);
        let second = *cc.connects()[n..]
            .iter()
            .find(|id| addr_of(&cc, **id) == "127.0.0.1:2000")
            .expect("the endpoint's second address is tried while ejected");
        cc.set_state(&mut *od, second, ConnectivityState::Ready);
        assert_eq!(
            traffic(&mut cc, 10, &[]),
            HashSet::from([good]),
            "still ejected"
        );
        cc.advance(&mut *od, Duration::from_secs(40)); // returned at 50 s
        let seen = traffic(&mut cc, 10, &[]);
        assert_eq!(seen, HashSet::from([good, second]));
    }

    #[test]
    fn never_ejects_more_than_max_ejection_percent() {
        // 10 endpoints, half failing every call, at most 20 %: two ejected.
        let (mut cc, mut od, ids) = ready(
            10,
            json!({"maxEjectionPercent": 20, "failurePercentageEjection": {}}),
        );
        let failing = &ids[..5];
        // (Four sweeps: at the fifth, 50 s, the two ejected at 10 s return.)
        for _ in 0..4 {
            traffic(&mut cc, 1000, failing);
            cc.advance(&mut *od, Duration::from_secs(10));
            let seen = traffic(&mut cc, 1000, &[]);
            assert_eq!(seen.len(), 8, "two of ten out, never more");
        }
        // The default 10 % of five endpoints, two failing: the first
        // outlier is always ejectable (C-core, the proto), then no more.
        let (mut cc, mut od, ids) = ready(5, json!({"failurePercentageEjection": {}}));
        traffic(&mut cc, 1000, &ids[..2]);
        cc.advance(&mut *od, Duration::from_secs(10));
        assert_eq!(traffic(&mut cc, 1000, &[]).len(), 4);
        // requestVolume 0: endpoints with no calls count towards
        // minimumHosts: one failing endpoint of three, only it called.
        let (mut cc, mut od, ids) = ready(
            3,
            json!({"maxEjectionPercent": 100, "failurePercentageEjection":
                   {"minimumHosts": 3, "requestVolume": 0}}),
        );
        for id in &ids[1..] {
            cc.set_state(&mut *od, *id, ConnectivityState::Connecting);
        }
        assert_eq!(traffic(&mut cc, 10, &ids[..1]).len(), 1);
        for id in &ids[1..] {
            cc.set_state(&mut *od, *id, ConnectivityState::Ready);
        }
        cc.advance(&mut *od, Duration::from_secs(10));
        let seen = traffic(&mut cc, 1000, &[]);
        assert_eq!(seen.len(), 2);
        assert!(!seen.contains(&ids[0]));
        // 0 %: none at all (gRPC-Go's "no ejection, max ejection percent").
        let (mut cc, mut od, ids) = ready(
            5,
            json!({"maxEjectionPercent": 0, "failurePercentageEjection": {}}),
        );
        traffic(&mut cc, 1000, &ids[..1]);
        cc.advance(&mut *od, Duration::from_secs(10));
        assert_eq!(traffic(&mut cc, 1000, &[]).len(), 5);
    }

    /// requestVolume 0 (gRPC-Go): an endpoint with no calls is a
    /// success-rate candidate whose rate is 0/0, so no rate is below the
    /// mean and nothing is ejected; with every endpoint called, the
    /// failing one is.
    #[test]
    fn success_rate_with_request_volume_zero_and_an_endpoint_without_calls() {
        for idle_one in [true, false] {
            let (mut cc, mut od, ids) = ready(
                6,
                json!({"maxEjectionPercent": 100, "successRateEjection":
                       {"minimumHosts": 6, "requestVolume": 0, "stdevFactor": 100}}),
            );
            if idle_one {
                cc.set_state(&mut *od, ids[5], ConnectivityState::Connecting);
            }
            traffic(&mut cc, 1000, &ids[..1]);
            if idle_one {
                cc.set_state(&mut *od, ids[5], ConnectivityState::Ready);
            }
            cc.advance(&mut *od, Duration::from_secs(10));
            let seen = traffic(&mut cc, 1000, &[]);
            assert_eq!(seen.contains(&ids[0]), idle_one, "idle one: {idle_one}");
            assert_eq!(seen.len(), if idle_one { 6 } else { 5 });
        }
    }

    #[test]
    fn no_ejection_below_minimum_hosts_or_request_volume() {
        let (mut cc, mut od, ids) = ready(
            4,
            json!({"successRateEjection": {},
                                                    "failurePercentageEjection": {}}),
        );
        traffic(&mut cc, 2000, &ids[..1]);
        cc.advance(&mut *od, Duration::from_secs(10));
        assert_eq!(
            traffic(&mut cc, 100, &[]).len(),
            4,
            "4 hosts < minimumHosts 5"
        );
        let (mut cc, mut od, ids) = ready(5, json!({"failurePercentageEjection": {}}));
        traffic(&mut cc, 5 * 49, &ids[..1]); // 49 calls each < requestVolume 50
        cc.advance(&mut *od, Duration::from_secs(10));
        assert_eq!(traffic(&mut cc, 100, &[]).len(), 5);
    }

    #[test]
    fn the_hook_is_chained_after_the_childs_and_a_full_chain_fails_the_pick() {
        let counting =
            json!({"failurePercentageEjection": {}, "childPolicy": [{"round_robin": {}}]});
        let nest =
            |child: Value| json!({"failurePercentageEjection": {}, "childPolicy": [{NAME: child}]});
        for (depth, cfg) in [
            (2, nest(counting.clone())),
            (3, nest(nest(counting.clone()))),
        ] {
            let parsed = OutlierDetectionBuilder.parse_config(&cfg).unwrap();
            let mut cc = TestClientConn::new();
            let mut od = OutlierDetectionBuilder.build();
            cc.update(
                &mut *od,
                ClientConnState::from_addresses(vec![Address::new("127.0.0.1:1")], parsed),
            )
            .unwrap();
            let sc = cc.connects()[0];
            cc.set_state(&mut *od, sc, ConnectivityState::Ready);
            match cc.pick() {
                // Two: the inner wrapper's hook, then the outer one's.
                Picked::Complete { subconn, hooks } if depth == 2 => {
                    assert_eq!((subconn, hooks), (sc, 2))
                }
                // A third has no room: the pick fails rather than lose one.
                Picked::Fail(s) if depth == 3 => assert_eq!(s.code(), Code::Internal),
                other => panic!("depth {depth}: {other:?}"),
            }
        }
    }

    #[test]
    fn outcome_table_finds_dense_and_sparse_ids() {
        for ids in [vec![5, 6, 8], vec![1, 100_000, 7]] {
            let entries: Vec<_> = ids
                .iter()
                .map(|i| (SubConnId(*i), Arc::new(Counters::default())))
                .collect();
            let t = OutcomeTable::new(entries.clone());
            assert_eq!(t.sparse.is_empty(), ids[1] < 100, "{ids:?}");
            for (id, counters) in &entries {
                assert!(std::ptr::eq(t.get(*id).unwrap(), &**counters));
            }
            for other in [0, 4, 7, 9, 99_999, u64::MAX] {
                if !ids.contains(&other) {
                    assert!(t.get(SubConnId(other)).is_none(), "{other}");
                }
            }
        }
        assert!(OutcomeTable::new(Vec::new()).get(SubConnId(1)).is_none());
    }

    #[test]
    fn without_algorithms_it_is_a_pass_through() {
        let (mut cc, mut od, ids) = ready(3, json!({}));
        // The child's rotation, as is: no hook, no timer.
        assert!(cc.picker().unwrap().rotation().is_some());
        assert!(cc.timers().is_empty());
        traffic(&mut cc, 1000, &ids[..1]);
        cc.advance(&mut *od, Duration::from_secs(100));
        assert_eq!(traffic(&mut cc, 100, &[]).len(), 3);
    }

    #[test]
    fn turning_the_algorithms_off_returns_every_endpoint() {
        let (mut cc, mut od, ids) = ready(5, json!({"failurePercentageEjection": {}}));
        traffic(&mut cc, 1000, &ids[..1]);
        cc.advance(&mut *od, Duration::from_secs(10));
        assert_eq!(traffic(&mut cc, 100, &[]).len(), 4);
        let cfg = OutlierDetectionBuilder
            .parse_config(&json!({"childPolicy": [{"round_robin": {}}]}))
            .unwrap();
        let addrs = (0..5)
            .map(|i| Address::new(format!("127.0.0.1:{}", 1000 + i)))
            .collect();
        cc.update(&mut *od, ClientConnState::from_addresses(addrs, cfg))
            .unwrap();
        assert_eq!(traffic(&mut cc, 100, &[]).len(), 5);
        assert!(cc.timers().is_empty(), "no sweeps once off");
    }

    #[test]
    fn an_ejected_endpoint_keeps_its_latest_real_state_for_its_return() {
        let (mut cc, mut od, ids) = ready(5, json!({"failurePercentageEjection": {}}));
        let bad = ids[1];
        traffic(&mut cc, 1000, &[bad]);
        cc.advance(&mut *od, Duration::from_secs(10));
        // While out it loses its connection and reconnects: the child sees
        // none of it, and gets READY back at the end.
        cc.set_state(&mut *od, bad, ConnectivityState::Idle);
        cc.set_state(&mut *od, bad, ConnectivityState::Connecting);
        cc.set_state(&mut *od, bad, ConnectivityState::Ready);
        assert!(!traffic(&mut cc, 100, &[]).contains(&bad));
        cc.advance(&mut *od, Duration::from_secs(40));
        assert!(traffic(&mut cc, 100, &[]).contains(&bad));
    }
}
