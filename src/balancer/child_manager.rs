//! A parent policy's children (gRPC's endpointsharding and balancergroup in
//! one piece): child policies keyed by any name, each built by its own
//! [`Builder`] and fed its own [`ClientConnState`]. Each child gets a
//! [`ClientConn`] that records which subchannels and timers are its own,
//! routes their events back to it, gives it its own [`WorkScheduler`], and
//! captures the state and picker it publishes; the parent reads those and
//! publishes its own picker.
//!
//! Endpoint sharding — one child per endpoint, what round_robin and the
//! weighted policies are made of — is [`ChildManager::update_endpoints`].

use crate::address::{Address, Endpoint};
use crate::balancer::picker::{Picker, QueuePicker};
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::balancer::{
    Balancer, Builder, ClientConn, ClientConnState, LbConfig, LoadReportListener, OobListenerId,
    SubConnState, TimerToken, WorkScheduler,
};
use crate::connectivity::ConnectivityState;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A parent policy made of a [`ChildManager`] that reconsiders its state
/// and picker whenever one child changed (round_robin, weighted_round_robin,
/// random, least_request). Its [`Balancer`] methods for subchannel states,
/// work, timers and `exit_idle` route to the children through the provided
/// methods here, every child that changed reaching
/// [`child_changed`](Self::child_changed).
pub trait ChildParent {
    /// The children.
    fn children(&mut self) -> &mut ChildManager;

    /// Child `key` changed (its state, picker or subchannels).
    fn child_changed(&mut self, cc: &mut dyn ClientConn, key: &str);

    /// [`Balancer::update_subconn_state`]: to the child that owns `sc`.
    fn route_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        if let Some(key) = self.children().subconn_state(cc, sc, state) {
            self.child_changed(cc, &key);
        }
    }

    /// [`Balancer::work`]: to every child whose picker asked for it.
    fn route_work(&mut self, cc: &mut dyn ClientConn) {
        for key in self.children().work(cc) {
            self.child_changed(cc, &key);
        }
    }

    /// [`Balancer::timer`]: to the child that armed `token`; false if no
    /// child did (a timer of the parent's own).
    fn route_timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) -> bool {
        let Some(key) = self.children().timer(cc, token) else {
            return false;
        };
        self.child_changed(cc, &key);
        true
    }

    /// [`Balancer::exit_idle`]: every child leaves IDLE (the parent then
    /// publishes what follows).
    fn exit_idle_children(&mut self, cc: &mut dyn ClientConn) {
        let children = self.children();
        for key in children.keys() {
            children.exit_idle(cc, &key);
        }
    }
}

/// One child policy and what it last published.
pub struct Child {
    key: String,
    builder: Arc<dyn Builder>,
    balancer: Box<dyn Balancer>,
    state: ConnectivityState,
    picker: Arc<dyn Picker>,
    /// Subchannels this child created and has not yet seen shut down.
    subconns: OwnedSubConns,
    /// What `update_endpoints` last gave it (endpoint children only).
    given: Option<(Endpoint, Option<LbConfig>)>,
    /// It published during the last callback made into it.
    reported: bool,
    /// Each of its publishes since the parent last took them, in order
    /// (only while the manager records them: `record_publishes`).
    publishes: Vec<Published>,
    /// Its `close` is running: no new subchannels (gRPC-Go refuses a
    /// closing balancer's `NewSubConn`).
    closing: bool,
}

impl Child {
    /// The child's key (for endpoint children, `endpoint_key` of its endpoint).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The name of the policy the child runs.
    pub fn policy(&self) -> &str {
        self.builder.name()
    }

    /// The state the child last published (CONNECTING until it publishes).
    pub fn state(&self) -> ConnectivityState {
        self.state
    }

    /// The picker the child last published (queueing until it publishes).
    pub fn picker(&self) -> &Arc<dyn Picker> {
        &self.picker
    }

    /// Whether it published during the last callback made into it.
    pub fn published_in_last_call(&self) -> bool {
        self.reported
    }

    /// The subchannels the child created and has not yet seen shut down, in
    /// creation order.
    pub fn subconns(&self) -> SubConns<'_> {
        self.subconns.iter()
    }

    /// The subchannel it is connected on (its transport up, healthy or
    /// not: `SubConn::is_connected`), if any.
    pub fn connected_subconn(&self) -> Option<&Arc<SubConn>> {
        self.subconns.iter().find(|sc| sc.is_connected())
    }
}

/// A child's publish: its state and picker.
pub type Published = (ConnectivityState, Arc<dyn Picker>);

/// What one child is told in [`ChildManager::update`].
pub struct ChildUpdate {
    /// The child's name among its siblings.
    pub key: String,
    /// The policy it runs; a child whose policy changes is rebuilt.
    pub builder: Arc<dyn Builder>,
    /// Its endpoints and config.
    pub state: ClientConnState,
}

/// Child policies in a contiguous list (parents walk all of them on every
/// change) with an index by key. Every method runs inside one of the
/// parent's own `Balancer` callbacks, with the parent's `ClientConn`.
#[derive(Default)]
pub struct ChildManager {
    list: Vec<Child>,
    index: HashMap<String, usize>,
    owners: HashMap<SubConnId, String>,
    timers: TimerOwners,
    /// Children whose pickers asked for `Balancer::work` since the last
    /// `work` call (written by pickers on any thread).
    wanting_work: Arc<Mutex<HashSet<String>>>,
    /// Changes whenever a child comes or goes or a child's subchannels change.
    version: u64,
    /// Changes whenever a child comes or goes.
    layout: u64,
    /// Children whose re-resolution requests are not passed on.
    quiet: HashSet<String>,
    /// Each child's publishes are kept for `take_publishes`.
    record: bool,
    /// Counts children's publishes and comings and goings (see
    /// `published`).
    published: u64,
}

/// An endpoint's identity (A61): the set of its addresses, whatever their
/// order or attributes; the key of its child, and of whatever else a policy
/// keeps per endpoint (outlier detection's ejection state). The addresses
/// sorted, joined by `,`, with `,` and `\` inside an address escaped by a
/// `\` (an address is any string, a Unix path may hold a comma): the
/// endpoint `["a,b"]` is not the endpoint `["a", "b"]`, as gRPC-Go's
/// `EndpointMap` keeps them apart.
pub fn endpoint_key(endpoint: &Endpoint) -> String {
    let mut addrs: Vec<&str> = endpoint.addresses.iter().map(|a| a.addr.as_str()).collect();
    addrs.sort_unstable();
    addrs.dedup();
    let mut key = String::with_capacity(addrs.iter().map(|a| a.len() + 1).sum());
    for (i, a) in addrs.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        for c in a.chars() {
            if c == ',' || c == '\\' {
                key.push('\\');
            }
            key.push(c);
        }
    }
    key
}

/// The same addresses in the same order with the same attributes (the
/// same user data: the same allocation).
fn same_addresses(a: &Endpoint, b: &Endpoint) -> bool {
    a.addresses.len() == b.addresses.len()
        && a.addresses.iter().zip(&b.addresses).all(|(x, y)| {
            x.addr == y.addr
                && x.weight == y.weight
                && x.tag == y.tag
                && match (&x.user_data, &y.user_data) {
                    (None, None) => true,
                    (Some(p), Some(q)) => Arc::ptr_eq(p, q),
                    _ => false,
                }
        })
}

/// The same config: both none, or the same parsed one.
fn same_config(a: Option<&LbConfig>, b: Option<&LbConfig>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

impl ChildManager {
    /// No children.
    pub fn new() -> ChildManager {
        ChildManager::default()
    }

    /// The children, in a stable order (see `position`).
    pub fn iter(&self) -> impl Iterator<Item = &Child> {
        self.list.iter()
    }

    /// The child keyed `key`.
    pub fn get(&self, key: &str) -> Option<&Child> {
        self.index.get(key).map(|i| &self.list[*i])
    }

    /// Where the child keyed `key` is in `iter()`'s order; stable until
    /// `version` changes.
    pub fn position(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// The child at `position` `i`.
    pub fn at(&self, i: usize) -> Option<&Child> {
        self.list.get(i)
    }

    /// How many children there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every child's key, in `iter()`'s order.
    pub fn keys(&self) -> Vec<String> {
        self.list.iter().map(|c| c.key.clone()).collect()
    }

    /// Changes whenever a child comes or goes or a child's subchannels
    /// change: parents key caches of children's subchannels on it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Changes whenever a child comes or goes: while it stays the same,
    /// every child keeps its `position` (its subchannels may change: see
    /// `version`). Parents key what they keep per position on it.
    pub fn layout(&self) -> u64 {
        self.layout
    }

    /// Changes whenever a child publishes, comes or goes: while it stays
    /// the same, every child's state and picker are what the parent last
    /// read, so a picker built from them alone would be the same (gRPC
    /// parents update only when a child does; a subchannel event that a
    /// child keeps to itself, as pick_first's retries in TRANSIENT_FAILURE,
    /// changes nothing).
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Adds a child keyed `key` running `builder`'s policy (CONNECTING with a
    /// queueing picker until it publishes). A child already there is closed
    /// and replaced.
    pub fn add(&mut self, cc: &mut dyn ClientConn, key: &str, builder: Arc<dyn Builder>) {
        self.remove(cc, key);
        self.index.insert(key.to_string(), self.list.len());
        self.list.push(Child {
            key: key.to_string(),
            balancer: builder.build(),
            builder,
            state: ConnectivityState::Connecting,
            picker: Arc::new(QueuePicker),
            subconns: OwnedSubConns::default(),
            given: None,
            reported: false,
            publishes: Vec::new(),
            closing: false,
        });
        self.version += 1;
        self.layout += 1;
        self.published += 1;
    }

    /// Closes the child keyed `key` and forgets it. Its subchannels are shut
    /// down by the child (or, if it leaves any, here): each drains its calls
    /// in flight. False if there was none.
    pub fn remove(&mut self, cc: &mut dyn ClientConn, key: &str) -> bool {
        let Some(&i) = self.index.get(key) else {
            return false;
        };
        self.list[i].closing = true;
        self.call(key, cc, |b, cc| b.close(cc));
        let Some(i) = self.index.remove(key) else {
            return false;
        };
        let child = self.list.swap_remove(i);
        if let Some(moved) = self.list.get(i) {
            self.index.insert(moved.key.clone(), i);
        }
        for sc in child.subconns.iter() {
            // Left behind by the child: shut down for it (SHUTDOWN reaches
            // nobody: the owner is gone).
            self.owners.remove(&sc.id());
            cc.shutdown_subconn(sc.id());
        }
        // Its timers must not outlive it (nor keep the loop busy).
        for token in self.timers.take_owner(key) {
            cc.cancel_timer(token);
        }
        self.wanting_work
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.quiet.remove(key);
        self.version += 1;
        self.layout += 1;
        self.published += 1;
        true
    }

    /// Keeps every publish of every child, in order, until the parent takes
    /// them (`take_publishes`), for a parent that acts on each as it comes
    /// rather than on where a callback left the child (a child may publish
    /// several times in one callback; `Child::state` is the last).
    pub fn record_publishes(&mut self) {
        self.record = true;
    }

    /// The publishes of the child keyed `key` since they were last taken
    /// (none unless `record_publishes`).
    pub fn take_publishes(&mut self, key: &str) -> Vec<Published> {
        match self.index.get(key).map(|i| &mut self.list[*i]) {
            Some(child) => std::mem::take(&mut child.publishes),
            None => Vec::new(),
        }
    }

    /// Whether the child keyed `key` may ask for re-resolution: a parent
    /// silences a child whose view of the resolver is out of date (gRPC's
    /// graceful switch ignores `ResolveNow` from all but the latest policy).
    pub fn set_resolve_now_passed_on(&mut self, key: &str, passed_on: bool) {
        if passed_on {
            self.quiet.remove(key);
        } else if self.index.contains_key(key) {
            self.quiet.insert(key.to_string());
        }
    }

    /// Gives the child keyed `key` new endpoints and config; its result
    /// (`Err`: the child asks for re-resolution). `Ok` if there is no such child.
    pub fn update_child(
        &mut self,
        cc: &mut dyn ClientConn,
        key: &str,
        state: ClientConnState,
    ) -> Result<(), String> {
        let mut result = Ok(());
        self.call(key, cc, |b, cc| {
            result = b.update_client_conn_state(cc, state)
        });
        result
    }

    /// Reconciles the children with `updates`: children for new keys are
    /// built, every listed child gets its state (a child whose policy changed
    /// is rebuilt first), children not listed are closed. The first error a
    /// child returns is returned (the others still get their updates).
    pub fn update(
        &mut self,
        cc: &mut dyn ClientConn,
        updates: Vec<ChildUpdate>,
    ) -> Result<(), String> {
        let wanted: HashSet<&str> = updates.iter().map(|u| u.key.as_str()).collect();
        for key in self.keys() {
            if !wanted.contains(key.as_str()) {
                self.remove(cc, &key);
            }
        }
        let mut result = Ok(());
        for u in updates {
            let same_policy = self
                .get(&u.key)
                .is_some_and(|c| c.builder.name() == u.builder.name());
            if !same_policy {
                self.add(cc, &u.key, u.builder);
            }
            if let Err(e) = self.update_child(cc, &u.key, u.state) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Endpoint sharding: one child per endpoint (keyed by `endpoint_key`,
    /// duplicates dropped), each running `builder`'s policy with `config`.
    /// New children get their endpoint, and so do children whose endpoint
    /// changed under the same key (its addresses reordered, or their
    /// attributes changed: A61 pushes the new order down to pick_first) or
    /// whose config changed (a child running another policy is rebuilt
    /// with `builder`'s); children whose endpoint is unchanged are not
    /// told again (so a resolver update over thousands of endpoints touches
    /// only the ones that changed); removed ones are closed.
    pub fn update_endpoints(
        &mut self,
        cc: &mut dyn ClientConn,
        endpoints: &[Endpoint],
        builder: &Arc<dyn Builder>,
        config: Option<LbConfig>,
    ) {
        let mut wanted = HashSet::new();
        let mut fresh = Vec::new();
        for e in endpoints {
            let key = endpoint_key(e);
            if !wanted.insert(key.clone()) {
                continue;
            }
            match self.index.get(&key) {
                None => {
                    self.add(cc, &key, builder.clone());
                    fresh.push((key, e.clone()));
                }
                // Another policy than the child runs: rebuilt, as `update`
                // does for a named child (its connections go with the old
                // child). gRPC-Go's endpointsharding fixes its child policy
                // when made; here the caller names it with each update.
                Some(i) if self.list[*i].builder.name() != builder.name() => {
                    self.add(cc, &key, builder.clone());
                    fresh.push((key, e.clone()));
                }
                Some(i) => {
                    let unchanged = self.list[*i].given.as_ref().is_some_and(|(was, cfg)| {
                        same_addresses(was, e) && same_config(cfg.as_ref(), config.as_ref())
                    });
                    if !unchanged {
                        fresh.push((key, e.clone()));
                    }
                }
            }
        }
        let gone: Vec<String> = self
            .list
            .iter()
            .filter(|c| !wanted.contains(&c.key))
            .map(|c| c.key.clone())
            .collect();
        for key in gone {
            self.remove(cc, &key);
        }
        for (key, endpoint) in fresh {
            if let Some(i) = self.index.get(&key) {
                self.list[*i].given = Some((endpoint.clone(), config.clone()));
            }
            let state = ClientConnState::new(vec![endpoint], config.clone());
            let _ = self.update_child(cc, &key, state);
        }
    }

    /// Convenience for address lists: one endpoint per address.
    pub fn update_addresses(
        &mut self,
        cc: &mut dyn ClientConn,
        addresses: &[Address],
        builder: &Arc<dyn Builder>,
    ) {
        let endpoints: Vec<Endpoint> = addresses.iter().cloned().map(Endpoint::from).collect();
        self.update_endpoints(cc, &endpoints, builder, None);
    }

    /// Routes a subchannel's state to the child that owns it; its key, or
    /// `None` if no child owns it (the parent's own, or a removed child's).
    pub fn subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) -> Option<String> {
        let key = if state.is(ConnectivityState::Shutdown) {
            let key = self.owners.remove(&sc)?;
            if let Some(i) = self.index.get(&key) {
                // O(1): one child may own thousands (the graceful
                // switch's one child owns all of the channel's), and
                // removing them all must stay O(n), not O(n²).
                self.list[*i].subconns.remove(sc);
                self.version += 1;
            }
            key
        } else {
            self.owners.get(&sc)?.clone()
        };
        self.call(&key, cc, |b, cc| b.update_subconn_state(cc, sc, state));
        Some(key)
    }

    /// Routes a timer to the child that armed it; its key, or `None`.
    pub fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) -> Option<String> {
        let key = self.timers.remove(&token)?;
        self.call(&key, cc, |b, cc| b.timer(cc, token));
        Some(key)
    }

    /// Runs `Balancer::work` on every child whose picker asked for it; their keys.
    pub fn work(&mut self, cc: &mut dyn ClientConn) -> Vec<String> {
        let keys: Vec<String> = {
            let mut wanting = self.wanting_work.lock().unwrap_or_else(|p| p.into_inner());
            wanting.drain().collect()
        };
        for key in &keys {
            self.call(key, cc, |b, cc| b.work(cc));
        }
        keys
    }

    /// What a parent that keeps every endpoint connected (round_robin and
    /// the policies like it, gRPC's endpointsharding) does after a callback
    /// into child `key`: a child that has just reported losing its
    /// connection (IDLE) or failing to connect (TRANSIENT_FAILURE with no
    /// subchannel connected) asks for re-resolution, once per report (not
    /// again on every later event while it stays there), and one that is
    /// IDLE reconnects at once. A child failing over a live connection
    /// (its health check failing, an outlier_detection parent ejecting it)
    /// does not: gRPC re-resolves when connections fail, not on health
    /// verdicts. The child's state (`None`: no such child).
    pub fn keep_connected(
        &mut self,
        cc: &mut dyn ClientConn,
        key: &str,
    ) -> Option<ConnectivityState> {
        let child = self.get(key);
        let state = child.map(|c| c.state());
        let reported = child.is_some_and(|c| c.reported);
        let lost = match state {
            Some(ConnectivityState::Idle) => true,
            Some(ConnectivityState::TransientFailure) => {
                child.is_none_or(|c| c.connected_subconn().is_none())
            }
            _ => false,
        };
        if reported && lost {
            cc.resolve_now();
        }
        if state == Some(ConnectivityState::Idle) {
            self.exit_idle(cc, key);
        }
        state
    }

    /// Asks the child keyed `key` to leave IDLE.
    pub fn exit_idle(&mut self, cc: &mut dyn ClientConn, key: &str) {
        self.call(key, cc, |b, cc| b.exit_idle(cc));
    }

    /// Passes a resolver error to every child.
    pub fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        for key in self.keys() {
            self.child_resolver_error(cc, &key, error);
        }
    }

    /// Passes a resolver error to the child keyed `key` only.
    pub fn child_resolver_error(&mut self, cc: &mut dyn ClientConn, key: &str, error: &str) {
        self.call(key, cc, |b, cc| b.resolver_error(cc, error));
    }

    /// Closes every child.
    pub fn close(&mut self, cc: &mut dyn ClientConn) {
        for key in self.keys() {
            self.remove(cc, &key);
        }
    }

    /// Runs one callback on one child; applies the state it published, if any.
    fn call(
        &mut self,
        key: &str,
        cc: &mut dyn ClientConn,
        f: impl FnOnce(&mut dyn Balancer, &mut dyn ClientConn),
    ) {
        let ChildManager {
            list,
            index,
            owners,
            timers,
            version,
            layout: _,
            wanting_work,
            quiet,
            record,
            published: publishes,
        } = self;
        let Some(child) = index.get(key).map(|i| &mut list[*i]) else {
            return;
        };
        let mut published = None;
        {
            let mut ccw = ChildClientConn {
                parent: cc,
                key,
                owners,
                timers,
                subconns: &mut child.subconns,
                version,
                wanting_work,
                quiet: quiet.contains(key),
                closing: child.closing,
                published: &mut published,
                log: record.then_some(&mut child.publishes),
            };
            f(&mut *child.balancer, &mut ccw);
        }
        child.reported = published.is_some();
        if let Some((state, picker)) = published {
            child.state = state;
            child.picker = picker;
            *publishes += 1;
        }
    }
}

/// A child's subchannels in creation order, any one removed in O(1)
/// (amortized: by id, when its SHUTDOWN comes). A removed one leaves a
/// hole; the holes are squeezed out once they outnumber the subchannels
/// (so a walk costs O(subchannels) still). Past `INDEXED` slots an index
/// finds a subchannel by id; below, a scan does (an endpoint's child, the
/// common case, has one subchannel: no map to allocate).
#[derive(Default)]
struct OwnedSubConns {
    slots: Vec<Option<Arc<SubConn>>>,
    /// How many slots hold a subchannel.
    live: usize,
    /// Id → slot, for every subchannel held; kept while there are more
    /// than `INDEXED` slots, empty otherwise.
    index: HashMap<SubConnId, usize>,
}

/// Up to this many slots a scan finds a subchannel.
const INDEXED: usize = 16;

impl OwnedSubConns {
    /// Adds a subchannel after every other. One already there (the same
    /// id) keeps its place.
    fn push(&mut self, sc: Arc<SubConn>) {
        if self.slot(sc.id()).is_some() {
            return;
        }
        let id = sc.id();
        self.slots.push(Some(sc));
        self.live += 1;
        if self.slots.len() == INDEXED + 1 {
            self.reindex();
        } else if self.slots.len() > INDEXED {
            self.index.insert(id, self.slots.len() - 1);
        }
    }

    /// Takes subchannel `id` out; the others keep their order. False if it
    /// was not there.
    fn remove(&mut self, id: SubConnId) -> bool {
        let Some(at) = self.slot(id) else {
            return false;
        };
        self.slots[at] = None;
        self.index.remove(&id);
        self.live -= 1;
        if self.slots.len() > 2 * self.live {
            self.slots.retain(Option::is_some);
            self.reindex();
        }
        true
    }

    /// The slot holding `id`.
    fn slot(&self, id: SubConnId) -> Option<usize> {
        if self.slots.len() > INDEXED {
            return self.index.get(&id).copied();
        }
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.id() == id))
    }

    fn reindex(&mut self) {
        self.index.clear();
        if self.slots.len() > INDEXED {
            let held = self.slots.iter().enumerate();
            self.index
                .extend(held.filter_map(|(i, s)| Some((s.as_ref()?.id(), i))));
        }
    }

    fn iter(&self) -> SubConns<'_> {
        SubConns {
            slots: self.slots.iter(),
            left: self.live,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.live
    }

    #[cfg(test)]
    fn contains(&self, id: SubConnId) -> bool {
        self.slot(id).is_some()
    }
}

/// A child's subchannels, in creation order ([`Child::subconns`]).
#[derive(Clone)]
pub struct SubConns<'a> {
    slots: std::slice::Iter<'a, Option<Arc<SubConn>>>,
    /// How many the slots left hold.
    left: usize,
}

impl<'a> Iterator for SubConns<'a> {
    type Item = &'a Arc<SubConn>;

    fn next(&mut self) -> Option<&'a Arc<SubConn>> {
        if self.left == 0 {
            return None;
        }
        let sc = self.slots.find_map(Option::as_ref)?;
        self.left -= 1;
        Some(sc)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }

    fn last(mut self) -> Option<&'a Arc<SubConn>> {
        self.next_back()
    }
}

impl DoubleEndedIterator for SubConns<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let sc = self.slots.rfind(|s| s.is_some())?.as_ref();
        self.left -= 1;
        sc
    }
}

impl ExactSizeIterator for SubConns<'_> {}

impl std::iter::FusedIterator for SubConns<'_> {}

impl std::fmt::Debug for SubConns<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// Which child armed each timer, indexed both ways: a child leaving takes
/// its own timers without a walk over every child's (removing many
/// children at once stays linear).
#[derive(Default)]
struct TimerOwners {
    by_token: HashMap<TimerToken, String>,
    by_owner: HashMap<String, HashSet<TimerToken>>,
}

impl TimerOwners {
    fn insert(&mut self, token: TimerToken, owner: &str) {
        self.by_token.insert(token, owner.to_string());
        self.by_owner
            .entry(owner.to_string())
            .or_default()
            .insert(token);
    }

    /// The owner of a timer that fired or was cancelled, forgotten.
    fn remove(&mut self, token: &TimerToken) -> Option<String> {
        let owner = self.by_token.remove(token)?;
        if let Some(tokens) = self.by_owner.get_mut(&owner) {
            tokens.remove(token);
            if tokens.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
        Some(owner)
    }

    /// Every timer `owner` armed, forgotten.
    fn take_owner(&mut self, owner: &str) -> Vec<TimerToken> {
        let tokens: Vec<TimerToken> = self
            .by_owner
            .remove(owner)
            .map(|t| t.into_iter().collect())
            .unwrap_or_default();
        for t in &tokens {
            self.by_token.remove(t);
        }
        tokens
    }
}

/// The `ClientConn` one child sees: the parent's, with ownership recorded
/// and the published state captured.
struct ChildClientConn<'a> {
    parent: &'a mut dyn ClientConn,
    key: &'a str,
    owners: &'a mut HashMap<SubConnId, String>,
    timers: &'a mut TimerOwners,
    subconns: &'a mut OwnedSubConns,
    version: &'a mut u64,
    wanting_work: &'a Arc<Mutex<HashSet<String>>>,
    /// Its re-resolution requests are not passed on.
    quiet: bool,
    /// The child is being closed: it may create no subchannel.
    closing: bool,
    published: &'a mut Option<Published>,
    /// Where every publish goes too, if the manager records them.
    log: Option<&'a mut Vec<Published>>,
}

impl ClientConn for ChildClientConn<'_> {
    fn new_subconn(&mut self, address: Address) -> Result<Arc<SubConn>, String> {
        if self.closing {
            // gRPC-Go's words (its balancer wrapper's).
            return Err("balancer is being closed; no new SubConns allowed".into());
        }
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
        let picker: Arc<dyn Picker> = Arc::from(picker);
        if let Some(log) = &mut self.log {
            log.push((state, picker.clone()));
        }
        *self.published = Some((state, picker));
    }
    fn resolve_now(&mut self) {
        if !self.quiet {
            self.parent.resolve_now()
        }
    }
    fn target(&self) -> &str {
        self.parent.target()
    }
    fn authority(&self) -> Option<&str> {
        self.parent.authority()
    }
    fn schedule_timer(&mut self, after: Duration) -> TimerToken {
        let t = self.parent.schedule_timer(after);
        self.timers.insert(t, self.key);
        t
    }
    fn cancel_timer(&mut self, token: TimerToken) {
        self.timers.remove(&token);
        self.parent.cancel_timer(token)
    }
    fn now(&self) -> Instant {
        self.parent.now()
    }
    fn clock(&self) -> Arc<dyn crate::clock::Clock> {
        self.parent.clock()
    }
    fn random(&mut self) -> u64 {
        self.parent.random()
    }
    fn register_oob_listener(
        &mut self,
        sc: SubConnId,
        period: Duration,
        listener: Arc<dyn LoadReportListener>,
    ) -> OobListenerId {
        self.parent.register_oob_listener(sc, period, listener)
    }
    fn unregister_oob_listener(&mut self, id: OobListenerId) {
        self.parent.unregister_oob_listener(id)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::testing::TestClientConn;
    use crate::policy::round_robin::RoundRobinBuilder;

    fn addr(i: usize) -> String {
        format!("127.0.0.1:{}", 1000 + i)
    }

    fn shutdown() -> SubConnState {
        SubConnState {
            state: ConnectivityState::Shutdown,
            error: None,
        }
    }

    fn ids(subconns: SubConns<'_>) -> Vec<u64> {
        subconns.map(|s| s.id().0).collect()
    }

    #[test]
    fn owned_subconns_keep_creation_order_through_removals() {
        let mut cc = TestClientConn::new();
        let scs: Vec<Arc<SubConn>> = (0..10)
            .map(|i| cc.new_subconn(Address::new(addr(i))).unwrap())
            .collect();
        let mut owned = OwnedSubConns::default();
        for sc in &scs {
            owned.push(sc.clone());
        }
        assert_eq!(ids(owned.iter()), (1..=10).collect::<Vec<_>>());
        // The first, the last, one in the middle; one twice; one never there.
        for i in [0, 9, 4] {
            assert!(owned.remove(scs[i].id()));
        }
        assert!(!owned.remove(scs[4].id()), "already gone");
        assert!(!owned.remove(SubConnId(99)), "never there");
        assert_eq!(ids(owned.iter()), [2, 3, 4, 6, 7, 8, 9]);
        assert_eq!((owned.len(), owned.iter().len()), (7, 7));
        assert!(owned.contains(scs[1].id()) && !owned.contains(scs[4].id()));
        // A new one comes last; one pushed again keeps its place.
        let late = cc.new_subconn(Address::new(addr(10))).unwrap();
        owned.push(late.clone());
        owned.push(scs[1].clone());
        assert_eq!(ids(owned.iter()), [2, 3, 4, 6, 7, 8, 9, 11]);
        assert_eq!(
            owned.iter().rev().map(|s| s.id().0).collect::<Vec<_>>(),
            [11, 9, 8, 7, 6, 4, 3, 2]
        );
        assert_eq!(owned.iter().last().map(|s| s.id()), Some(late.id()));
        // Emptied in any order.
        for sc in scs.iter().chain([&late]).rev() {
            owned.remove(sc.id());
        }
        assert_eq!(owned.len(), 0);
        assert!(owned.iter().next().is_none());
    }

    /// Against a plain list (what `Child::subconns` was), through holes,
    /// squeezes and the index coming and going: the same subchannels in
    /// the same order after every push and removal.
    #[test]
    fn owned_subconns_match_a_plain_list_through_any_removals() {
        let mut cc = TestClientConn::new();
        let mut owned = OwnedSubConns::default();
        let mut model: Vec<Arc<SubConn>> = Vec::new();
        let mut rng = crate::balancer::pick_local::PickLocal::new(5);
        let check = |owned: &OwnedSubConns, model: &[Arc<SubConn>]| {
            let want: Vec<u64> = model.iter().map(|s| s.id().0).collect();
            assert_eq!(ids(owned.iter()), want);
            let mut back: Vec<u64> = owned.iter().rev().map(|s| s.id().0).collect();
            back.reverse();
            assert_eq!(back, want);
            assert_eq!(
                (owned.len(), owned.iter().len()),
                (model.len(), model.len())
            );
            assert_eq!(
                owned.iter().last().map(|s| s.id()),
                model.last().map(|s| s.id())
            );
        };
        for round in 0..6 {
            // Grow past the index's threshold (or not), then remove at random
            // down to a few (or none), pushing now and then.
            let grow = [40, 5, 100, 17, 16, 60][round];
            for i in 0..grow {
                let sc = cc.new_subconn(Address::new(addr(i))).unwrap();
                owned.push(sc.clone());
                model.push(sc);
            }
            check(&owned, &model);
            let floor = round % 3;
            while model.len() > floor {
                let at = rng.random_below(model.len());
                let sc = model.remove(at);
                assert!(owned.remove(sc.id()));
                assert!(!owned.remove(sc.id()));
                assert!(!owned.contains(sc.id()));
                if rng.random_below(7) == 0 {
                    let sc = cc.new_subconn(Address::new(addr(0))).unwrap();
                    owned.push(sc.clone());
                    model.push(sc);
                }
                check(&owned, &model);
            }
        }
    }

    /// The graceful switch's case: one child (round_robin) owns every
    /// subchannel; endpoints removed, their SHUTDOWNs come in any order.
    #[test]
    fn a_childs_subconns_follow_their_shutdowns_and_keep_creation_order() {
        let mut cc = TestClientConn::new();
        let mut m = ChildManager::new();
        let before = m.layout();
        m.add(&mut cc, "rr", Arc::new(RoundRobinBuilder));
        assert_ne!(m.layout(), before, "a child came");
        let update = |keep: &[usize]| {
            ClientConnState::from_addresses(
                keep.iter().map(|i| Address::new(addr(*i))).collect(),
                None,
            )
        };
        let addrs = |m: &ChildManager| -> Vec<String> {
            let c = m.get("rr").unwrap();
            assert_eq!(c.subconns().len(), c.subconns().count());
            c.subconns().map(|s| s.addr().to_string()).collect()
        };
        let all: Vec<usize> = (0..8).collect();
        m.update_child(&mut cc, "rr", update(&all)).unwrap();
        assert_eq!(addrs(&m), all.iter().map(|i| addr(*i)).collect::<Vec<_>>());

        let kept = [1, 3, 5, 6];
        m.update_child(&mut cc, "rr", update(&kept)).unwrap();
        let gone = cc.shutdowns().to_vec();
        assert_eq!(gone.len(), 4);
        assert_eq!(addrs(&m).len(), 8, "owned until their SHUTDOWN comes");
        let (version, layout) = (m.version(), m.layout());
        // Last first, then the rest.
        for id in gone.iter().rev() {
            assert_eq!(
                m.subconn_state(&mut cc, *id, &shutdown()),
                Some("rr".into())
            );
        }
        assert!(m.version() > version);
        // A child's subchannels changed; the children did not move.
        assert_eq!(m.layout(), layout);
        assert_eq!(m.position("rr"), Some(0));
        assert_eq!(addrs(&m), kept.iter().map(|i| addr(*i)).collect::<Vec<_>>());
        // A SHUTDOWN heard again reaches nobody.
        assert_eq!(m.subconn_state(&mut cc, gone[0], &shutdown()), None);
        assert_eq!(addrs(&m).len(), 4);

        // A new endpoint's subchannel comes after the rest.
        m.update_child(&mut cc, "rr", update(&[1, 3, 5, 6, 9]))
            .unwrap();
        assert_eq!(
            addrs(&m),
            [1, 3, 5, 6, 9].iter().map(|i| addr(*i)).collect::<Vec<_>>()
        );

        // The child leaving shuts down what it still owns.
        assert!(m.remove(&mut cc, "rr"));
        assert_eq!(cc.shutdowns().len(), 9);
        assert!(m.owners.is_empty());
    }
}
