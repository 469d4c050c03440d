//! One child policy per endpoint (gRPC's endpointsharding): the plumbing that
//! petiole policies such as round_robin share. Children are keyed by address;
//! an update creates children for new addresses, closes removed ones, and
//! leaves kept ones untouched. Each child gets a `ClientConn` that records which
//! subchannels and timers are its own and captures the state it publishes.

use crate::address::Address;
use crate::balancer::picker::{Picker, QueuePicker};
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::balancer::{
    Balancer, ClientConn, ClientConnState, SubConnState, TimerToken, WorkScheduler,
};
use crate::connectivity::ConnectivityState;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) struct Child {
    pub(crate) key: String,
    balancer: Box<dyn Balancer>,
    pub(crate) state: ConnectivityState,
    pub(crate) picker: Arc<dyn Picker>,
    /// Subchannels this child created and has not yet seen shut down.
    pub(crate) subconns: Vec<Arc<SubConn>>,
}

/// Children in a contiguous list (parents walk all of them on every change)
/// with an index by key.
#[derive(Default)]
pub(crate) struct Children {
    list: Vec<Child>,
    index: HashMap<String, usize>,
    owners: HashMap<SubConnId, String>,
    timers: HashMap<TimerToken, String>,
    /// Children whose pickers asked for `Balancer::work` since the last
    /// `work` call (written by pickers on any thread).
    wanting_work: Arc<Mutex<HashSet<String>>>,
    /// Changes whenever a child comes or goes or a child's subchannels change:
    /// parents key caches of `subconns` on it.
    pub(crate) version: u64,
}

impl Children {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Child> {
        self.list.iter()
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Child> {
        self.index.get(key).map(|i| &self.list[*i])
    }

    /// Where the child keyed `key` is in `iter()`'s order; stable until
    /// `version` changes.
    pub(crate) fn position(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    pub(crate) fn at(&self, i: usize) -> Option<&Child> {
        self.list.get(i)
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        self.list.iter().map(|c| c.key.clone()).collect()
    }

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
            if !self.index.contains_key(&a.addr) {
                self.index.insert(a.addr.clone(), self.list.len());
                self.list.push(Child {
                    key: a.addr.clone(),
                    balancer: make(),
                    // A new policy is assumed CONNECTING until it says otherwise.
                    state: ConnectivityState::Connecting,
                    picker: Arc::new(QueuePicker),
                    subconns: Vec::new(),
                });
                self.version += 1;
                fresh.push(a.clone());
            }
        }
        let gone: Vec<String> = self
            .list
            .iter()
            .filter(|c| !wanted.contains(&c.key))
            .map(|c| c.key.clone())
            .collect();
        for key in gone {
            self.call(&key, cc, |b, cc| b.close(cc));
            self.remove(&key);
        }
        for a in fresh {
            let key = a.addr.clone();
            self.call(&key, cc, |b, cc| {
                let _ =
                    b.update_client_conn_state(cc, ClientConnState::from_addresses(vec![a], None));
            });
        }
    }

    fn remove(&mut self, key: &str) {
        let Some(i) = self.index.remove(key) else {
            return;
        };
        self.list.swap_remove(i);
        if let Some(moved) = self.list.get(i) {
            self.index.insert(moved.key.clone(), i);
        }
        self.version += 1;
    }

    /// Routes a subchannel's state to its owner. Returns the owner's key.
    pub(crate) fn subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) -> Option<String> {
        let key = if state.is(ConnectivityState::Shutdown) {
            let key = self.owners.remove(&sc)?;
            if let Some(i) = self.index.get(&key) {
                self.list[*i].subconns.retain(|s| s.id() != sc);
                self.version += 1;
            }
            key
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

    /// Runs `Balancer::work` on every child whose picker asked for it.
    pub(crate) fn work(&mut self, cc: &mut dyn ClientConn) -> Vec<String> {
        let keys: Vec<String> = {
            let mut wanting = self.wanting_work.lock().unwrap_or_else(|p| p.into_inner());
            wanting.drain().collect()
        };
        for key in &keys {
            self.call(key, cc, |b, cc| b.work(cc));
        }
        keys
    }

    pub(crate) fn exit_idle(&mut self, cc: &mut dyn ClientConn, key: &str) {
        self.call(key, cc, |b, cc| b.exit_idle(cc));
    }

    pub(crate) fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        for key in self.keys() {
            self.call(&key, cc, |b, cc| b.resolver_error(cc, error));
        }
    }

    pub(crate) fn close(&mut self, cc: &mut dyn ClientConn) {
        for key in self.keys() {
            self.call(&key, cc, |b, cc| b.close(cc));
        }
        self.list.clear();
        self.index.clear();
        self.version += 1;
    }

    /// Runs one callback on one child; applies the state it published, if any.
    fn call(
        &mut self,
        key: &str,
        cc: &mut dyn ClientConn,
        f: impl FnOnce(&mut dyn Balancer, &mut dyn ClientConn),
    ) {
        let Children {
            list,
            index,
            owners,
            timers,
            version,
            wanting_work,
        } = self;
        let Some(child) = index.get(key).map(|i| &mut list[*i]) else {
            return;
        };
        let mut published = None;
        {
            let mut ccw = ChildCc {
                parent: cc,
                key,
                owners,
                timers,
                subconns: &mut child.subconns,
                version,
                wanting_work,
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
    subconns: &'a mut Vec<Arc<SubConn>>,
    version: &'a mut u64,
    wanting_work: &'a Arc<Mutex<HashSet<String>>>,
    published: &'a mut Option<(ConnectivityState, Box<dyn Picker>)>,
}

impl ClientConn for ChildCc<'_> {
    fn new_subconn(&mut self, address: Address) -> Result<Arc<SubConn>, String> {
        let sc = self.parent.new_subconn(address)?;
        self.owners.insert(sc.id(), self.key.to_string());
        self.subconns.push(sc.clone());
        *self.version += 1;
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
    fn work_scheduler(&self) -> WorkScheduler {
        let parent = self.parent.work_scheduler();
        let wanting = self.wanting_work.clone();
        let key = self.key.to_string();
        WorkScheduler::new(move || {
            wanting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone());
            parent.schedule_work();
        })
    }
}
