//! One child policy per endpoint (gRPC's endpointsharding): the plumbing that
//! petiole policies such as round_robin share. Children are keyed by address;
//! an update creates children for new addresses, closes removed ones, and
//! leaves kept ones untouched. Each child gets a `ClientConn` that records which
//! subchannels and timers are its own and captures the state it publishes.

use crate::balancer::{Balancer, ClientConn, ClientConnState, SubConnState, TimerToken};
use crate::channel::IdleTrigger;
use crate::picker::{Picker, QueuePicker};
use crate::state::ConnectivityState;
use crate::subconn::{Address, SubConn, SubConnId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct Child {
    balancer: Box<dyn Balancer>,
    pub(crate) state: ConnectivityState,
    pub(crate) picker: Arc<dyn Picker>,
}

#[derive(Default)]
pub(crate) struct Children {
    pub(crate) map: BTreeMap<String, Child>,
    owners: HashMap<SubConnId, String>,
    timers: HashMap<TimerToken, String>,
}

impl Children {
    /// Reconciles children with `addresses` (deduplicated by address). New
    /// children are built with `make` and receive their one address.
    pub(crate) fn update(
        &mut self,
        cc: &mut dyn ClientConn,
        addresses: &[Address],
        make: &dyn Fn() -> Box<dyn Balancer>,
    ) {
        let mut wanted = HashSet::new();
        let mut fresh = Vec::new();
        for a in addresses {
            if !wanted.insert(a.addr.clone()) {
                continue;
            }
            if !self.map.contains_key(&a.addr) {
                self.map.insert(
                    a.addr.clone(),
                    Child {
                        balancer: make(),
                        // A new policy is assumed CONNECTING until it says otherwise.
                        state: ConnectivityState::Connecting,
                        picker: Arc::new(QueuePicker),
                    },
                );
                fresh.push(a.clone());
            }
        }
        let gone: Vec<String> = self
            .map
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.call(&key, cc, |b, cc| b.close(cc));
            self.map.remove(&key);
        }
        for a in fresh {
            let key = a.addr.clone();
            self.call(&key, cc, |b, cc| {
                let _ = b.update_client_conn_state(
                    cc,
                    ClientConnState {
                        addresses: vec![a],
                        config: None,
                    },
                );
            });
        }
    }

    /// Routes a subchannel's state to its owner. Returns the owner's key.
    pub(crate) fn subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) -> Option<String> {
        let key = if state.is(ConnectivityState::Shutdown) {
            self.owners.remove(&sc)?
        } else {
            self.owners.get(&sc)?.clone()
        };
        self.call(&key, cc, |b, cc| b.update_subconn_state(cc, sc, state));
        Some(key)
    }

    /// Routes a timer to the child that armed it. Returns the child's key.
    pub(crate) fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) -> Option<String> {
        let key = self.timers.remove(&token)?;
        self.call(&key, cc, |b, cc| b.timer(cc, token));
        Some(key)
    }

    pub(crate) fn exit_idle(&mut self, cc: &mut dyn ClientConn, key: &str) {
        self.call(key, cc, |b, cc| b.exit_idle(cc));
    }

    pub(crate) fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        let keys: Vec<String> = self.map.keys().cloned().collect();
        for key in keys {
            self.call(&key, cc, |b, cc| b.resolver_error(cc, error));
        }
    }

    pub(crate) fn close(&mut self, cc: &mut dyn ClientConn) {
        let keys: Vec<String> = self.map.keys().cloned().collect();
        for key in keys {
            self.call(&key, cc, |b, cc| b.close(cc));
        }
        self.map.clear();
    }

    /// gRPC's rule over the children's states (zero children: TRANSIENT_FAILURE).
    /// Runs one callback on one child; applies the state it published, if any.
    fn call(
        &mut self,
        key: &str,
        cc: &mut dyn ClientConn,
        f: impl FnOnce(&mut dyn Balancer, &mut dyn ClientConn),
    ) {
        let Children {
            map,
            owners,
            timers,
        } = self;
        let Some(child) = map.get_mut(key) else {
            return;
        };
        let mut published = None;
        {
            let mut ccw = ChildCc {
                parent: cc,
                key,
                owners,
                timers,
                published: &mut published,
            };
            f(&mut *child.balancer, &mut ccw);
        }
        if let Some((state, picker)) = published {
            child.state = state;
            child.picker = Arc::from(picker);
        }
    }
}

struct ChildCc<'a> {
    parent: &'a mut dyn ClientConn,
    key: &'a str,
    owners: &'a mut HashMap<SubConnId, String>,
    timers: &'a mut HashMap<TimerToken, String>,
    published: &'a mut Option<(ConnectivityState, Box<dyn Picker>)>,
}

impl ClientConn for ChildCc<'_> {
    fn new_subconn(&mut self, address: Address) -> Result<Arc<SubConn>, String> {
        let sc = self.parent.new_subconn(address)?;
        self.owners.insert(sc.id(), self.key.to_string());
        Ok(sc)
    }
    fn connect(&mut self, sc: SubConnId) {
        self.parent.connect(sc)
    }
    fn shutdown_subconn(&mut self, sc: SubConnId) {
        self.parent.shutdown_subconn(sc)
    }
    fn update_state(&mut self, state: ConnectivityState, picker: Box<dyn Picker>) {
        *self.published = Some((state, picker));
    }
    fn resolve_now(&mut self) {
        self.parent.resolve_now()
    }
    fn schedule_timer(&mut self, after: Duration) -> TimerToken {
        let t = self.parent.schedule_timer(after);
        self.timers.insert(t, self.key.to_string());
        t
    }
    fn cancel_timer(&mut self, token: TimerToken) {
        self.timers.remove(&token);
        self.parent.cancel_timer(token)
    }
    fn now(&self) -> Instant {
        self.parent.now()
    }
    fn random(&mut self) -> u64 {
        self.parent.random()
    }
    fn idle_trigger(&self) -> IdleTrigger {
        self.parent.idle_trigger()
    }
}
