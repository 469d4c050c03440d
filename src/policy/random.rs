//! `random` (our own policy, not gRPC's): a pick_first child per endpoint,
//! all kept connected, as round_robin; each pick takes a READY endpoint
//! uniformly at random, with the reader's own random source (`PickLocal`),
//! so a pick reads one entry of an immutable array and writes nothing
//! shared. Unlike round_robin's rotation, readers that start together do not
//! walk the endpoints in step, and no reader's cursor is needed.
//!
//! Config: `{"random": {}}` (no fields; unknown ones are ignored).

use super::ready_endpoints::{ReadyEndpoint, ReadyEndpoints, ReadyPicking};
use crate::balancer::child_manager::ChildManager;
use crate::balancer::keep::Keep;
use crate::balancer::picker::{
    DoneHooks, InlineKind, PickInfo, PickLocal, PickResult, Picker, QueuePicker,
};
use crate::balancer::ready_list::{ReadyChunks, UniformTable};
use crate::balancer::rotation::RotationEntry;
use crate::balancer::{Balancer, Builder, LbConfig};

/// The policy's name.
pub const NAME: &str = "random";

/// Builds `random` balancers.
pub struct RandomBuilder;

impl Builder for RandomBuilder {
    fn name(&self) -> &str {
        NAME
    }

    fn build(&self) -> Box<dyn Balancer> {
        Box::new(ReadyEndpoints::new(Random))
    }

    fn parse_config(&self, config: &serde_json::Value) -> Result<Option<LbConfig>, String> {
        if !config.is_object() {
            return Err(format!("{NAME} config must be a JSON object"));
        }
        Ok(None)
    }

    fn health_checks(&self, _config: Option<&LbConfig>) -> bool {
        // Its endpoints' pick_first children use health (A61).
        true
    }
}

/// The policy's side of `ReadyEndpoints`: nothing to keep but the picker.
pub(crate) struct Random;

impl ReadyPicking for Random {
    type Entry = RotationEntry;

    fn configure(&mut self, _: Option<&LbConfig>) -> Result<bool, String> {
        Ok(false)
    }

    fn members(&mut self, _: &ChildManager) {}

    fn entry(&self, ready: ReadyEndpoint) -> Option<RotationEntry> {
        // SAFETY: the subchannel is held by the `keep` of every picker
        // listing the entry (see `ReadyPicking::picker`).
        Some(unsafe { RotationEntry::of(ready.subconn.as_ref()) })
    }

    fn picker(&mut self, keep: Keep, ready: ReadyChunks<RotationEntry>) -> Box<dyn Picker> {
        match UniformTable::new(ready, keep) {
            Some(table) => Box::new(RandomPicker { table }),
            // Never: `ReadyPicking::picker` gets a non-empty list.
            None => Box::new(QueuePicker),
        }
    }
}

/// Picks a READY endpoint uniformly at random: readers draw from its
/// table inline (`InlineKind::Uniform`).
pub(crate) struct RandomPicker {
    /// Chunks shared with the policy's other pickers.
    table: UniformTable,
}

impl Picker for RandomPicker {
    #[inline]
    fn pick<'a>(&'a self, _: &PickInfo<'_>, local: &mut PickLocal) -> PickResult<'a> {
        PickResult::Complete {
            subconn: self.table.pick(local),
            done: DoneHooks::NONE,
        }
    }

    fn inline(&self) -> Option<InlineKind<'_>> {
        Some(InlineKind::Uniform(&self.table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::testing::{Picked, TestClientConn};
    use crate::connectivity::ConnectivityState::{Connecting, Ready, TransientFailure};
    use serde_json::json;

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 3000 + i)).collect()
    }

    #[test]
    fn config_is_an_object_with_no_fields() {
        assert!(RandomBuilder.parse_config(&json!({})).unwrap().is_none());
        assert!(RandomBuilder
            .parse_config(&json!({"future": 1}))
            .unwrap()
            .is_none());
        assert!(RandomBuilder.parse_config(&json!(3)).is_err());
        assert_eq!(crate::policy::registry::get(NAME).unwrap().name(), NAME);
    }

    /// 8 of 10 endpoints READY, 80,000 picks with the test's fixed seed:
    /// only READY ones are picked, and the counts pass a chi-square test
    /// (7 degrees of freedom: 24.3 is the 0.1 % critical value).
    #[test]
    fn covers_the_ready_endpoints_uniformly() {
        let mut cc = TestClientConn::new();
        let mut random = RandomBuilder.build();
        let addrs = addrs(10);
        cc.update_addresses(&mut *random, addrs.iter().map(|a| a.as_str()))
            .unwrap();
        assert_eq!(cc.connects().len(), 10, "every endpoint connects");
        assert_eq!(cc.pick(), Picked::Queue);
        let ids: Vec<_> = addrs
            .iter()
            .map(|a| cc.subconn_for(a).unwrap().id())
            .collect();
        for (i, sc) in ids.iter().enumerate() {
            let state = if i < 8 { Ready } else { TransientFailure };
            cc.set_state(&mut *random, *sc, state);
        }
        assert_eq!(cc.state(), Some(Ready));
        const PICKS: usize = 80_000;
        let mut counts = [0usize; 10];
        for _ in 0..PICKS {
            match cc.pick() {
                Picked::Complete { subconn, hooks: 0 } => {
                    counts[ids.iter().position(|s| *s == subconn).unwrap()] += 1
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(counts[8..], [0, 0], "never a non-READY endpoint");
        let expected = PICKS as f64 / 8.0;
        let chi2: f64 = counts[..8]
            .iter()
            .map(|c| (*c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 24.3, "chi-square {chi2} over {counts:?}");
    }

    #[test]
    fn publishes_only_when_the_ready_set_changes() {
        let mut cc = TestClientConn::new();
        let mut random = RandomBuilder.build();
        let addrs = addrs(3);
        cc.update_addresses(&mut *random, addrs.iter().map(|a| a.as_str()))
            .unwrap();
        let ids: Vec<_> = addrs
            .iter()
            .map(|a| cc.subconn_for(a).unwrap().id())
            .collect();
        cc.set_state(&mut *random, ids[0], Ready);
        let published = cc.pickers_published();
        cc.set_state(&mut *random, ids[1], TransientFailure);
        cc.set_state(&mut *random, ids[1], Connecting);
        cc.update_addresses(&mut *random, addrs.iter().map(|a| a.as_str()))
            .unwrap();
        assert_eq!(cc.pickers_published(), published, "A is still the only one");
        assert_eq!(cc.picks(5), [Some(ids[0]); 5]);
        cc.set_state(&mut *random, ids[1], Ready);
        assert_eq!(cc.pickers_published(), published + 1, "B joined");
        // The last READY one leaves: everyone else is failing or connecting.
        cc.set_state(&mut *random, ids[0], TransientFailure);
        cc.set_state(&mut *random, ids[1], TransientFailure);
        assert_eq!(cc.state(), Some(Connecting), "C is still connecting");
        cc.set_state(&mut *random, ids[2], TransientFailure);
        assert_eq!(cc.state(), Some(TransientFailure));
        assert!(matches!(cc.pick(), Picked::Fail(_)));
    }
}
