//! `least_request_experimental` (gRFC A48; also registered as
//! `least_request`): a pick_first child per endpoint, all kept connected;
//! each pick draws `choiceCount` READY endpoints uniformly at random, with
//! replacement, and takes the one with the fewest requests in flight (ties
//! keep the earlier draw).
//!
//! The in-flight counters are the policy's, one per endpoint for as long as
//! the endpoint is in the resolver's list: every picker shares them, so
//! they survive picker updates (and an endpoint's READY → IDLE → READY).
//! Each sits on cache lines of its own, so two threads picking different
//! endpoints never write the same line. A pick adds one to its endpoint's
//! counter; its done takes one off, whatever the outcome (so does a pick
//! dropped without done). Readers run the picker's table inline
//! (`InlineKind::LeastLoaded`): a pick kept in the reader takes its one
//! off directly, one that leaves the reader through its done hook. Counter
//! reads race with other threads' picks, as A48 accepts.

use super::ready_endpoints::{ReadyEndpoint, ReadyEndpoints, ReadyPicking};
use crate::balancer::child_manager::ChildManager;
use crate::balancer::json::config_field;
use crate::balancer::keep::Keep;
use crate::balancer::least_loaded::{InFlight, LeastLoadedTable, LoadedEntry, Slot};
use crate::balancer::picker::{
    DoneHooks, InlineKind, PickInfo, PickLocal, PickResult, Picker, QueuePicker,
};
use crate::balancer::ready_list::ReadyChunks;
use crate::balancer::{Balancer, Builder, LbConfig};
use std::collections::HashMap;
use std::sync::Arc;

/// gRPC's name for the policy.
pub const NAME: &str = "least_request_experimental";
/// The name without the suffix, registered too.
pub const SHORT_NAME: &str = "least_request";
/// `choiceCount` when the config has none (A48).
pub const DEFAULT_CHOICE_COUNT: u32 = 2;
/// The most choices a pick draws; larger `choiceCount`s are capped (A48).
pub const MAX_CHOICE_COUNT: u32 = 10;

/// Builds least_request balancers under one of its two names.
pub struct LeastRequestBuilder {
    name: &'static str,
}

impl LeastRequestBuilder {
    /// The builder registered as `least_request_experimental`.
    pub const EXPERIMENTAL: LeastRequestBuilder = LeastRequestBuilder { name: NAME };
    /// The builder registered as `least_request`.
    pub const SHORT: LeastRequestBuilder = LeastRequestBuilder { name: SHORT_NAME };
}

/// The parsed `{"choiceCount": N}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeastRequestConfig {
    /// How many endpoints a pick compares: 2 to 10.
    pub choice_count: u32,
}

impl Default for LeastRequestConfig {
    fn default() -> LeastRequestConfig {
        LeastRequestConfig {
            choice_count: DEFAULT_CHOICE_COUNT,
        }
    }
}

/// Parses `choiceCount`: a uint32 (as JSON maps it: a number, or a string
/// of digits); below 2 is an error, above 10 becomes 10.
fn parse_choice_count(config: &serde_json::Value) -> Result<u32, String> {
    const FIELD: &str = "choiceCount";
    let n: u64 = match config_field(config, FIELD) {
        None => return Ok(DEFAULT_CHOICE_COUNT),
        // proto3 JSON: 3, 3.0 or "3"; 2.5 and -1 are not a uint32.
        Some(v) => crate::balancer::json::uint(v)
            .ok_or_else(|| format!("{FIELD} must be an unsigned 32-bit integer, got {v}"))?,
    };
    if n > u64::from(u32::MAX) {
        return Err(format!(
            "{FIELD} must be an unsigned 32-bit integer, got {n}"
        ));
    }
    if n < 2 {
        return Err(format!("{FIELD} must be >= 2, got {n}"));
    }
    Ok((n as u32).min(MAX_CHOICE_COUNT))
}

impl Builder for LeastRequestBuilder {
    fn name(&self) -> &str {
        self.name
    }

    fn build(&self) -> Box<dyn Balancer> {
        Box::new(ReadyEndpoints::new(LeastRequest::default()))
    }

    fn parse_config(&self, config: &serde_json::Value) -> Result<Option<LbConfig>, String> {
        if !config.is_object() {
            return Err(format!("{} config must be a JSON object", self.name));
        }
        Ok(Some(Arc::new(LeastRequestConfig {
            choice_count: parse_choice_count(config)?,
        })))
    }

    fn health_checks(&self, _config: Option<&LbConfig>) -> bool {
        // Its endpoints' pick_first children use health (A61).
        true
    }
}

/// Counters per allocation: endpoints' counters sit side by side in
/// blocks, not scattered one per allocation (with its own header).
const BLOCK: usize = 64;

/// An endpoint's counter: a slot of a block. A slot belongs to one
/// endpoint for good (never handed to another: picks of a removed endpoint
/// may still be in flight and decrement it); the block is freed when no
/// endpoint and no picker holds it.
#[derive(Clone)]
struct Counter {
    block: Arc<[InFlight]>,
    slot: usize,
}

impl Counter {
    fn get(&self) -> &InFlight {
        &self.block[self.slot]
    }
}

/// The policy's side of `ReadyEndpoints`: the config and the counters.
#[derive(Default)]
pub(crate) struct LeastRequest {
    config: LeastRequestConfig,
    /// Every endpoint's counter, by endpoint key, while it is a child.
    counters: HashMap<String, Counter>,
    /// `counters` in child position order (what pickers keep alive).
    by_member: Arc<[Counter]>,
    /// The block new counters come from (none yet: empty) and its next slot.
    fresh: (Option<Arc<[InFlight]>>, usize),
}

impl LeastRequest {
    /// A counter for a new endpoint, at 0.
    fn new_counter(&mut self) -> Counter {
        let block = match &self.fresh {
            (Some(block), slot) if *slot < block.len() => block.clone(),
            _ => {
                let block: Arc<[InFlight]> = (0..BLOCK).map(|_| InFlight::default()).collect();
                self.fresh = (Some(block.clone()), 0);
                block
            }
        };
        let slot = self.fresh.1;
        self.fresh.1 += 1;
        Counter { block, slot }
    }
}

impl ReadyPicking for LeastRequest {
    type Entry = LoadedEntry;

    fn configure(&mut self, config: Option<&LbConfig>) -> Result<bool, String> {
        let config = match config {
            None => LeastRequestConfig::default(),
            Some(c) => *c
                .downcast_ref::<LeastRequestConfig>()
                .ok_or("least_request got another policy's config")?,
        };
        let changed = config != self.config;
        self.config = config;
        Ok(changed)
    }

    fn members(&mut self, children: &ChildManager) {
        let mut counters = HashMap::with_capacity(children.len());
        let by_member: Vec<Counter> = children
            .iter()
            .map(|c| {
                let counter = match self.counters.remove(c.key()) {
                    Some(counter) => counter,
                    None => self.new_counter(),
                };
                counters.insert(c.key().to_string(), counter.clone());
                counter
            })
            .collect();
        // Counters of endpoints gone are dropped here; pickers (and the
        // picks they made) that still count on them keep them alive.
        self.counters = counters;
        self.by_member = by_member.into();
    }

    fn entry(&self, ready: ReadyEndpoint) -> Option<LoadedEntry> {
        let counter = self.by_member.get(ready.member)?.get();
        // SAFETY: the subchannel is held by the picker's `keep` and the counter
        // one of `by_member`'s: every picker over this entry keeps both
        // (see `picker`).
        Some(unsafe { LoadedEntry::new(ready.subconn.as_ref(), counter) })
    }

    fn picker(&mut self, keep: Keep, ready: ReadyChunks<LoadedEntry>) -> Box<dyn Picker> {
        // Every entry was made since the last `members` call, so its counter
        // is one of `by_member`'s, which the picker keeps.
        match LeastLoadedTable::new(ready, self.config.choice_count) {
            Some(table) => Box::new(LeastRequestPicker {
                table,
                _subconns: keep,
                _counters: self.by_member.clone(),
            }),
            // Never: `ReadyPicking::picker` gets a non-empty list.
            None => Box::new(QueuePicker),
        }
    }
}

/// Picks the least loaded of `choice_count` random READY endpoints: readers
/// run its table inline (`InlineKind::LeastLoaded`).
pub(crate) struct LeastRequestPicker {
    /// Never empty; chunks shared with the policy's other pickers.
    table: LeastLoadedTable,
    /// Own the subchannels and counters the table's entries point to.
    _subconns: Keep,
    _counters: Arc<[Counter]>,
}

impl Picker for LeastRequestPicker {
    #[inline]
    fn pick<'a>(&'a self, _: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        // Its done may run on any thread: the shared counter slot.
        let best = self.table.pick(local, Slot::SHARED);
        PickResult::Complete {
            subconn: best.subconn(),
            done: DoneHooks::one(best),
        }
    }

    fn inline(&self) -> Option<InlineKind<'_>> {
        Some(InlineKind::LeastLoaded(&self.table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::picker::DoneInfo;
    use crate::balancer::subconn::SubConnId;
    use crate::balancer::testing::{Picked, TestClientConn};
    use crate::balancer::ClientConnState;
    use crate::connectivity::ConnectivityState::{Connecting, Ready, TransientFailure};
    use crate::Address;
    use serde_json::json;

    const A: &str = "127.0.0.1:2001";
    const B: &str = "127.0.0.1:2002";
    const C: &str = "127.0.0.1:2003";

    fn parse(v: serde_json::Value) -> Result<u32, String> {
        let c = LeastRequestBuilder::EXPERIMENTAL.parse_config(&v)?.unwrap();
        Ok(c.downcast_ref::<LeastRequestConfig>().unwrap().choice_count)
    }

    fn state(addrs: &[&str], choice_count: Option<u32>) -> ClientConnState {
        let config =
            choice_count.map(|n| Arc::new(LeastRequestConfig { choice_count: n }) as LbConfig);
        ClientConnState::from_addresses(addrs.iter().map(|a| Address::new(*a)).collect(), config)
    }

    fn id(cc: &TestClientConn, addr: &str) -> SubConnId {
        cc.subconn_for(addr).expect("a subchannel").id()
    }

    /// The policy's counter for `addr`'s endpoint.
    fn in_flight(lr: &ReadyEndpoints<LeastRequest>, addr: &str) -> usize {
        lr.picking().counters[addr].get().total()
    }

    #[test]
    fn choice_count_defaults_to_2_rejects_below_2_and_caps_at_10() {
        assert_eq!(parse(json!({})), Ok(2));
        assert_eq!(parse(json!({"choiceCount": null, "future": [1]})), Ok(2));
        assert_eq!(parse(json!({"choiceCount": 2})), Ok(2));
        assert_eq!(parse(json!({"choiceCount": 7})), Ok(7));
        assert_eq!(parse(json!({"choiceCount": 10})), Ok(10));
        assert_eq!(parse(json!({"choiceCount": 11})), Ok(10));
        assert_eq!(parse(json!({"choiceCount": 4294967295u64})), Ok(10));
        // proto JSON: a uint32 may come as a string, or as 3.0.
        assert_eq!(parse(json!({"choiceCount": "3"})), Ok(3));
        assert_eq!(parse(json!({"choiceCount": 3.0})), Ok(3));
        for bad in [
            json!({"choiceCount": 1}),
            json!({"choiceCount": 0}),
            json!({"choiceCount": "1"}),
            json!({"choiceCount": -3}),
            json!({"choiceCount": 2.5}),
            json!({"choiceCount": "two"}),
            json!({"choiceCount": true}),
            json!({"choiceCount": 4294967296u64}),
        ] {
            let e = parse(bad.clone()).expect_err(&bad.to_string());
            assert!(e.contains("choiceCount"), "{e}");
        }
        assert!(parse(json!([])).is_err());
        for name in [NAME, SHORT_NAME] {
            assert_eq!(crate::policy::registry::get(name).unwrap().name(), name);
        }
    }

    #[test]
    fn service_configs_select_it_by_either_name() {
        use crate::service_config::ServiceConfig;
        let c = ServiceConfig::parse(Some(
            r#"{"loadBalancingConfig":[{"least_request":{"choiceCount":15}}]}"#,
        ))
        .unwrap();
        assert_eq!(c.policy.name(), SHORT_NAME);
        let config = c.policy_config.unwrap();
        assert_eq!(
            config
                .downcast_ref::<LeastRequestConfig>()
                .unwrap()
                .choice_count,
            10
        );
        let c = ServiceConfig::parse(Some(
            r#"{"loadBalancingPolicy":"least_request_experimental"}"#,
        ))
        .unwrap();
        assert_eq!(c.policy.name(), NAME);
        let e = ServiceConfig::parse(Some(
            r#"{"loadBalancingConfig":[{"least_request_experimental":{"choiceCount":1}}]}"#,
        ))
        .unwrap_err();
        assert!(e.contains("choiceCount must be >= 2"), "{e}");
    }

    #[test]
    fn aggregates_as_round_robin_does() {
        let mut cc = TestClientConn::new();
        let mut lr = LeastRequestBuilder::SHORT.build();
        cc.update_addresses(&mut *lr, [A, B]).unwrap();
        assert_eq!(cc.connects().len(), 2, "every endpoint connects");
        assert_eq!(cc.state(), Some(Connecting));
        assert_eq!(cc.pick(), Picked::Queue);
        let (a, b) = (id(&cc, A), id(&cc, B));
        cc.set_state(&mut *lr, a, TransientFailure);
        cc.set_state(&mut *lr, b, TransientFailure);
        assert_eq!(cc.state(), Some(TransientFailure));
        assert!(matches!(cc.pick(), Picked::Fail(_)));
        cc.set_state(&mut *lr, b, Ready);
        assert_eq!(cc.state(), Some(Ready));
        for _ in 0..20 {
            assert_eq!(
                cc.pick(),
                Picked::Complete {
                    subconn: b,
                    hooks: 1
                }
            );
        }
        assert!(cc.update_addresses(&mut *lr, []).is_err());
        assert_eq!(cc.state(), Some(TransientFailure));
    }

    /// gRPC-Go's `TestLeastRequestE2E` in miniature: with requests held in
    /// flight on B and C and none on A, a pick goes to A whenever A is among
    /// its draws: 1 - (2/3)^2 = 5/9 of picks with choiceCount 2 (uniform
    /// would be 1/3), 1 - (2/3)^10 = 98.3 % with 10. The counters outlive
    /// each picker, and done hooks (from old pickers too) bring them back.
    /// What a reader prefetches for a pick `k` picks ahead is what that
    /// pick draws: each winner is one of the entries predicted for it.
    #[test]
    fn upcoming_draws_are_the_draws_picks_make() {
        use crate::balancer::picker::InlineKind;
        let names: Vec<String> = (0..50).map(|i| format!("127.0.0.1:{}", 3000 + i)).collect();
        let list: Vec<&str> = names.iter().map(String::as_str).collect();
        for choice_count in [2, 3, 10] {
            let mut cc = TestClientConn::new();
            let mut lr = ReadyEndpoints::new(LeastRequest::default());
            cc.update(&mut lr, state(&list, Some(choice_count)))
                .unwrap();
            for a in &list {
                let sc = id(&cc, a);
                cc.set_state(&mut lr, sc, Ready);
            }
            let picker = cc.picker().unwrap().clone();
            let Some(InlineKind::LeastLoaded(table)) = picker.inline() else {
                panic!("least_request's picker offers its table");
            };
            let mut local = PickLocal::new(11);
            for _ in 0..500 {
                let mut predicted = Vec::new();
                table.upcoming(&local, 3, |e| predicted.push(e.subconn().id()));
                assert_eq!(predicted.len(), choice_count as usize);
                let mut ahead = local.clone();
                table.pick(&mut ahead, Slot::SHARED);
                table.pick(&mut ahead, Slot::SHARED);
                let winner = table.pick(&mut ahead, Slot::SHARED).subconn().id();
                assert!(
                    predicted.contains(&winner),
                    "{winner:?} not in {predicted:?}"
                );
                // On by one pick (counters only grow here: the winner is
                // one of the draws whatever they hold).
                table.pick(&mut local, Slot::SHARED);
            }
        }
    }

    #[test]
    fn favours_the_idle_endpoint_under_skewed_in_flight_counts() {
        let mut cc = TestClientConn::new();
        let mut lr = ReadyEndpoints::new(LeastRequest::default());
        cc.update(&mut lr, state(&[A, B, C], None)).unwrap();
        let ids = [id(&cc, A), id(&cc, B), id(&cc, C)];
        for sc in ids {
            cc.set_state(&mut lr, sc, Ready);
        }
        let first = cc.picker().unwrap().clone();
        let mut local = PickLocal::new(7);
        let info = PickInfo::default();
        let ok = DoneInfo::default();

        // Skew: every pick that lands on A ends at once, the others stay
        // in flight, until B and C hold 20 each.
        let mut held = Vec::new();
        for _ in 0..10_000 {
            if in_flight(&lr, B) >= 20 && in_flight(&lr, C) >= 20 {
                break;
            }
            let PickResult::Complete { subconn, done } = first.pick(&info, &mut local) else {
                panic!("READY picker must complete");
            };
            assert_eq!(done.len(), 1);
            if subconn.id() == ids[0] {
                done.report(subconn, &ok);
            } else {
                held.push((subconn, done));
            }
        }
        assert_eq!(in_flight(&lr, A), 0);
        assert!(in_flight(&lr, B) >= 20 && in_flight(&lr, C) >= 20);
        // B and C stay within one of each other: each pick between them
        // took the less loaded.
        assert!(in_flight(&lr, B).abs_diff(in_flight(&lr, C)) <= 1);
        let before = (in_flight(&lr, B), in_flight(&lr, C));

        let share_of_a = |cc: &mut TestClientConn| {
            let mut to_a = 0;
            for _ in 0..10_000 {
                match cc.pick_done(&ok) {
                    Picked::Complete { subconn, .. } if subconn == ids[0] => to_a += 1,
                    Picked::Complete { .. } => {}
                    other => panic!("{other:?}"),
                }
            }
            to_a as f64 / 10_000.0
        };
        let two = share_of_a(&mut cc);
        assert!((0.53..0.58).contains(&two), "A got {two}, want 5/9");
        assert_eq!((in_flight(&lr, B), in_flight(&lr, C)), before);

        // choiceCount 10: a new picker over the same counters.
        let published = cc.pickers_published();
        cc.update(&mut lr, state(&[A, B, C], Some(10))).unwrap();
        assert_eq!(cc.pickers_published(), published + 1);
        let ten = share_of_a(&mut cc);
        assert!(ten > 0.97, "A got {ten}, want 98 %");

        // The held picks end through the first picker's hooks.
        for (subconn, done) in held.drain(..) {
            done.report(subconn, &ok);
        }
        for addr in [A, B, C] {
            assert_eq!(in_flight(&lr, addr), 0, "{addr}");
        }
        // Unloaded, A is back to a third.
        let even = share_of_a(&mut cc);
        assert!((0.30..0.37).contains(&even), "A got {even}, want 1/3");
    }

    #[test]
    fn counters_follow_endpoints_across_updates_and_flaps() {
        let mut cc = TestClientConn::new();
        let mut lr = ReadyEndpoints::new(LeastRequest::default());
        // Ten draws: a pick goes to A only if all ten land there (1/1024).
        cc.update(&mut lr, state(&[A, B], Some(10))).unwrap();
        let (a, b) = (id(&cc, A), id(&cc, B));
        cc.set_state(&mut lr, a, Ready);
        // Only A is READY: every pick goes there and stays in flight.
        for _ in 0..5 {
            assert!(matches!(cc.pick(), Picked::Complete { subconn, .. } if subconn == a));
        }
        assert_eq!(in_flight(&lr, A), 5);
        cc.set_state(&mut lr, b, Ready);
        // A flaps (READY -> IDLE -> READY): its calls in flight still count.
        cc.set_state(&mut lr, a, crate::ConnectivityState::Idle);
        cc.set_state(&mut lr, a, Ready);
        assert_eq!(in_flight(&lr, A), 5);
        let picker = cc.picker().unwrap().clone();
        let mut local = PickLocal::new(3);
        for _ in 0..5 {
            let PickResult::Complete { subconn, done } =
                picker.pick(&PickInfo::default(), &mut local)
            else {
                panic!("READY picker must complete");
            };
            assert_eq!(subconn.id(), b, "B has fewer in flight every time");
            // Not reported: the pick stays in flight.
            let _ = done;
        }
        // C joins, A leaves: B keeps its count, A's counter is dropped.
        let counter = |lr: &ReadyEndpoints<LeastRequest>, addr: &str| {
            lr.picking().counters[addr].get() as *const InFlight as usize
        };
        let (was_a, was_b) = (counter(&lr, A), counter(&lr, B));
        cc.update(&mut lr, state(&[B, C], Some(10))).unwrap();
        assert_eq!(in_flight(&lr, B), 5);
        assert_eq!(in_flight(&lr, C), 0);
        assert!(!lr.picking().counters.contains_key(A));
        assert_eq!(lr.picking().counters.len(), 2);
        // Each counter on a cache line of its own; A's never goes to C
        // (A's picks in flight still count down on it).
        let (b, c) = (counter(&lr, B), counter(&lr, C));
        assert_eq!(b, was_b);
        for addr in [was_a, b, c] {
            assert_eq!(addr % 64, 0);
        }
        assert!(c.abs_diff(b) >= 64 && c.abs_diff(was_a) >= 64);
    }
}
