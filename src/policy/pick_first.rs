//! `pick_first`: the channel default and the leaf under every petiole policy.
//! One subchannel per address, tried in order with happy eyeballs (a new attempt
//! every 250 ms without cancelling earlier ones); the first READY wins and the
//! rest are shut down. After a full failed pass it stays in TRANSIENT_FAILURE
//! (sticky) and reconnects every subchannel as its backoff ends.

use crate::address::Address;
use crate::balancer::picker::{FailPicker, IdlePicker, Picker, QueuePicker, SinglePicker};
use crate::balancer::subconn::{SubConn, SubConnId};
use crate::balancer::{
    Balancer, Builder, ClientConn, ClientConnState, LbConfig, SubConnState, TimerToken,
};
use crate::connectivity::ConnectivityState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// gRFC A61's Connection Attempt Delay.
pub(crate) const HAPPY_EYEBALLS_DELAY: Duration = Duration::from_millis(250);

/// The policy's name.
pub const NAME: &str = "pick_first";

pub(crate) const ZERO_ADDRESSES: &str = "name resolver error: produced zero addresses";

/// The same for a parent of per-endpoint children (round_robin and the
/// like): gRPC-Go's endpointsharding says it has no children, and its
/// tests look for that; the resolver's part follows.
pub(crate) const NO_CHILDREN_ZERO_ADDRESSES: &str =
    "no children to pick from (name resolver error: produced zero addresses)";

/// `{"shuffleAddressList": bool}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PickFirstConfig {
    pub(crate) shuffle_address_list: bool,
}

/// Builds `pick_first` balancers (registered under that name): one
/// subchannel at a time, in address order (gRFC A61, with Happy Eyeballs),
/// all calls to the first that connects. Config:
/// `{"shuffleAddressList": bool}`.
pub struct PickFirstBuilder;

impl Builder for PickFirstBuilder {
    fn name(&self) -> &str {
        NAME
    }

    fn build(&self) -> Box<dyn Balancer> {
        Box::new(PickFirst::default())
    }

    fn parse_config(&self, config: &serde_json::Value) -> Result<Option<LbConfig>, String> {
        let shuffle = super::opt_bool(config, "shuffleAddressList")?.unwrap_or(false);
        Ok(Some(Arc::new(PickFirstConfig {
            shuffle_address_list: shuffle,
        })))
    }
}

struct Entry {
    sc: Arc<SubConn>,
    state: ConnectivityState,
    failed_in_pass: bool,
}

#[derive(Default)]
pub(crate) struct PickFirst {
    /// The address list in attempt order (shuffled, deduplicated, interleaved).
    list: Vec<Address>,
    entries: HashMap<String, Entry>,
    by_id: HashMap<SubConnId, String>,
    selected: Option<SubConnId>,
    cursor: usize,
    timer: Option<TimerToken>,
    /// The last state reported; `None` before the first update.
    reported: Option<ConnectivityState>,
    in_pass: bool,
    sticky_tf: bool,
    tf_count: usize,
    last_error: Option<Arc<str>>,
}

impl PickFirst {
    /// Reports a state, dropping duplicates (except TRANSIENT_FAILURE, which
    /// refreshes the error).
    fn report(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ConnectivityState,
        picker: Box<dyn Picker>,
    ) {
        if state != ConnectivityState::TransientFailure && self.reported == Some(state) {
            return;
        }
        self.reported = Some(state);
        cc.update_state(state, picker);
    }

    fn report_tf(&mut self, cc: &mut dyn ClientConn, message: &str) {
        self.report(
            cc,
            ConnectivityState::TransientFailure,
            Box::new(FailPicker::unavailable(message)),
        );
    }

    /// Reports TRANSIENT_FAILURE with the latest connection error. No
    /// re-resolution asked here: each failing subchannel has asked already
    /// (gRPC-Go's pick_first leaves it to them too). Asking at every pass
    /// end spun the loop with a resolver that answers at once with the same
    /// addresses, still in their backoff: update, pass ended at once,
    /// re-resolve, update...
    fn refresh_failure(&mut self, cc: &mut dyn ClientConn) {
        let msg = self
            .last_error
            .clone()
            .unwrap_or_else(|| "all addresses failed".into());
        self.report_tf(cc, &msg);
    }

    fn cancel_timer(&mut self, cc: &mut dyn ClientConn) {
        if let Some(t) = self.timer.take() {
            cc.cancel_timer(t);
        }
    }

    fn remove_entry(&mut self, cc: &mut dyn ClientConn, addr: &str) {
        if let Some(e) = self.entries.remove(addr) {
            cc.shutdown_subconn(e.sc.id());
        }
    }

    /// Shuts down every subchannel but `addr`'s (its attempt won, or it is
    /// the one whose connection came and went).
    fn remove_all_but(&mut self, cc: &mut dyn ClientConn, addr: &str) {
        let others: Vec<String> = self
            .entries
            .keys()
            .filter(|a| *a != addr)
            .cloned()
            .collect();
        for a in others {
            self.remove_entry(cc, &a);
        }
    }

    fn shutdown_all(&mut self, cc: &mut dyn ClientConn) {
        for (_, e) in self.entries.drain() {
            cc.shutdown_subconn(e.sc.id());
        }
        self.selected = None;
    }

    fn start_pass(&mut self, cc: &mut dyn ClientConn) {
        self.cursor = 0;
        self.in_pass = true;
        for e in self.entries.values_mut() {
            e.failed_in_pass = false;
        }
        self.request_next(cc);
    }

    /// Attempts the address at the cursor, skipping those still in backoff.
    fn request_next(&mut self, cc: &mut dyn ClientConn) {
        while self.cursor < self.list.len() {
            let address = self.list[self.cursor].clone();
            if !self.entries.contains_key(&address.addr) {
                match cc.new_subconn(address.clone()) {
                    Ok(sc) => {
                        self.by_id.insert(sc.id(), address.addr.clone());
                        let e = Entry {
                            sc,
                            state: ConnectivityState::Idle,
                            failed_in_pass: false,
                        };
                        self.entries.insert(address.addr.clone(), e);
                    }
                    Err(_) => return,
                }
            }
            let last = self.cursor + 1 == self.list.len();
            let e = self.entries.get_mut(&address.addr).expect("just ensured");
            match e.state {
                ConnectivityState::Idle | ConnectivityState::Connecting => {
                    // A CONNECTING one counts as asked (A61): only the
                    // timer, as gRPC-Go and C-core do.
                    if e.state == ConnectivityState::Idle {
                        let id = e.sc.id();
                        cc.connect(id);
                    }
                    if !last {
                        self.timer = Some(cc.schedule_timer(HAPPY_EYEBALLS_DELAY));
                    }
                    return;
                }
                ConnectivityState::TransientFailure => {
                    e.failed_in_pass = true;
                    self.cursor += 1;
                }
                ConnectivityState::Ready | ConnectivityState::Shutdown => return,
            }
        }
        self.check_pass_end(cc);
    }

    /// The first pass ends once every address failed: sticky TRANSIENT_FAILURE.
    fn check_pass_end(&mut self, cc: &mut dyn ClientConn) {
        if !self.in_pass
            || self.cursor < self.list.len()
            || !self.entries.values().all(|e| e.failed_in_pass)
        {
            return;
        }
        self.in_pass = false;
        self.sticky_tf = true;
        self.tf_count = 0;
        self.refresh_failure(cc);
        let idle: Vec<SubConnId> = self
            .entries
            .values()
            .filter(|e| e.state == ConnectivityState::Idle)
            .map(|e| e.sc.id())
            .collect();
        for id in idle {
            cc.connect(id);
        }
    }

    /// The addresses to try, in order: `shuffleAddressList` shuffles the
    /// endpoints (each keeps its addresses together, in order: A61, as
    /// gRPC-Go), then they are flattened, de-duplicated and interleaved by
    /// family.
    fn ordered(
        &self,
        cc: &mut dyn ClientConn,
        config: PickFirstConfig,
        state: ClientConnState,
    ) -> Vec<Address> {
        let mut addrs = if config.shuffle_address_list && !state.endpoints.is_empty() {
            let mut endpoints = state.endpoints;
            weighted_shuffle(cc, &mut endpoints, |e| e.weight);
            endpoints.into_iter().flat_map(|e| e.addresses).collect()
        } else {
            let mut addrs = state.addresses;
            if config.shuffle_address_list {
                // A hand-made state with addresses and no endpoints.
                weighted_shuffle(cc, &mut addrs, |a| a.weight);
            }
            addrs
        };
        let mut seen = HashSet::new();
        addrs.retain(|a| seen.insert(a.addr.clone()));
        interleave_families(addrs)
    }
}

/// gRFC A113's weighted shuffle (on by default in gRPC-Go): each item gets
/// the key u^(1/w), u uniform in [0, 1) from the channel's random source
/// and w its weight (0, unset, counts as 1), and they go in descending key
/// order (Efraimidis-Spirakis): an item comes first with probability
/// w / sum(w). Equal weights give a uniform shuffle.
fn weighted_shuffle<T>(cc: &mut dyn ClientConn, items: &mut Vec<T>, weight: impl Fn(&T) -> u32) {
    let mut keyed: Vec<(f64, T)> = items
        .drain(..)
        .map(|item| {
            let u = (cc.random() >> 11) as f64 / (1u64 << 53) as f64;
            let w = f64::from(weight(&item).max(1));
            (u.powf(1.0 / w), item)
        })
        .collect();
    // Stable: equal keys (u = 0) keep their order.
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    items.extend(keyed.into_iter().map(|(_, item)| item));
}

impl Balancer for PickFirst {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        state: ClientConnState,
    ) -> Result<(), String> {
        self.cancel_timer(cc);
        let config = state
            .config_as::<PickFirstConfig>()
            .copied()
            .unwrap_or_default();
        if state.addresses.is_empty() {
            self.shutdown_all(cc);
            self.list.clear();
            self.in_pass = false;
            // Sticky TF is for connection failures: the next list starts
            // CONNECTING (gRPC-Go, after an update with no addresses).
            self.sticky_tf = false;
            self.report_tf(cc, ZERO_ADDRESSES);
            return Err(ZERO_ADDRESSES.into());
        }
        let first = self.reported.is_none();
        self.list = self.ordered(cc, config, state);
        // An address listed again with another tag is another address: its
        // subchannel is replaced, so that picks carry the new tag (gRPC-Go
        // compares addresses with their attributes, and reconnects). Not so
        // for user data: a host's update hands over new user data with
        // every address (C's are released once each), so comparing it
        // would reconnect everything on every update; the subchannel keeps
        // the user data it was made with.
        let changed: Vec<String> = self
            .list
            .iter()
            .filter(|a| {
                // (The weight is the endpoint's business, not the connection's.)
                self.entries
                    .get(&a.addr)
                    .is_some_and(|e| e.sc.tag() != a.tag)
            })
            .map(|a| a.addr.clone())
            .collect();
        for addr in changed {
            if self
                .selected
                .is_some_and(|sel| self.by_id.get(&sel) == Some(&addr))
            {
                self.selected = None;
            }
            self.remove_entry(cc, &addr);
        }
        let keep: HashSet<String> = self.list.iter().map(|a| a.addr.clone()).collect();

        if let Some(sel) = self.selected {
            if self.by_id.get(&sel).is_some_and(|a| keep.contains(a)) {
                // Still connected to a listed address: nothing to do.
                return Ok(());
            }
            self.selected = None;
        }
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|a| !keep.contains(*a))
            .cloned()
            .collect();
        for addr in gone {
            self.remove_entry(cc, &addr);
        }
        if !first && self.reported == Some(ConnectivityState::Idle) {
            // Lazy: connect on the next pick or exit_idle.
            return Ok(());
        }
        if !self.sticky_tf {
            self.report(cc, ConnectivityState::Connecting, Box::new(QueuePicker));
        }
        self.start_pass(cc);
        Ok(())
    }

    fn resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        if self.list.is_empty() || self.reported == Some(ConnectivityState::TransientFailure) {
            self.report_tf(cc, &format!("name resolver error: {error}"));
        }
    }

    fn update_subconn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        sc: SubConnId,
        state: &SubConnState,
    ) {
        let Some(addr) = self.by_id.get(&sc).cloned() else {
            return;
        };
        if state.is(ConnectivityState::Shutdown) {
            self.by_id.remove(&sc);
            return;
        }
        // The entry must still be this subchannel's: one shut down for an
        // address listed again may have events queued for the old one
        // (gRPC-Go compares the subchannel, not the address).
        let Some(entry) = self.entries.get_mut(&addr).filter(|e| e.sc.id() == sc) else {
            return;
        };
        let old = std::mem::replace(&mut entry.state, state.state);
        let connected = entry.sc.is_connected();
        match state.state {
            ConnectivityState::Ready => {
                let chosen = entry.sc.clone();
                self.cancel_timer(cc);
                self.in_pass = false;
                self.sticky_tf = false;
                self.selected = Some(sc);
                self.remove_all_but(cc, &addr);
                self.report(
                    cc,
                    ConnectivityState::Ready,
                    Box::new(SinglePicker::new(chosen)),
                );
            }
            ConnectivityState::Idle
                if self.selected == Some(sc) || old == ConnectivityState::Connecting =>
            {
                // Lost the connection: go IDLE; the next pick brings us back.
                // CONNECTING -> IDLE is a connection made and lost before it
                // was READY (before its first health verdict): the same, as
                // gRPC-Go has it; the other attempts stop.
                if self.selected != Some(sc) {
                    self.cancel_timer(cc);
                    self.in_pass = false;
                    self.remove_all_but(cc, &addr);
                }
                self.selected = None;
                self.cursor = 0;
                cc.resolve_now();
                let trigger = cc.work_scheduler();
                self.report(
                    cc,
                    ConnectivityState::Idle,
                    Box::new(IdlePicker::new(trigger)),
                );
            }
            // After a pass ended in TRANSIENT_FAILURE, every subchannel out
            // of its backoff reconnects; during a pass (a later list's) one
            // waits for its turn (gRPC-Go ignores IDLE in the first pass).
            ConnectivityState::Idle if self.sticky_tf && !self.in_pass => cc.connect(sc),
            ConnectivityState::Connecting if self.selected != Some(sc) && connected => {
                // Connected, its health check not answered yet (A17): the
                // connection wins the pass, as gRPC-Go's pick_first selects
                // on the raw READY; health only decides what it reports
                // (READY, or TRANSIENT_FAILURE while it stays selected).
                self.cancel_timer(cc);
                self.in_pass = false;
                self.sticky_tf = false;
                self.selected = Some(sc);
                self.remove_all_but(cc, &addr);
                self.report(cc, ConnectivityState::Connecting, Box::new(QueuePicker));
            }
            ConnectivityState::Connecting if self.selected == Some(sc) => {
                // The connected subchannel checks its health again (a health
                // stream re-opened): RPCs wait for the verdict (gRPC-Go).
                self.report(cc, ConnectivityState::Connecting, Box::new(QueuePicker));
            }
            ConnectivityState::TransientFailure if self.selected == Some(sc) => {
                // The connected subchannel failed its health check (gRFC
                // A17, A61): it stays selected, connection and all, and picks
                // fail with its message until it reports READY again.
                self.last_error = state.error.clone();
                let msg = self
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "unhealthy".into());
                self.report_tf(cc, &msg);
            }
            ConnectivityState::TransientFailure => {
                self.last_error = state.error.clone();
                entry.failed_in_pass = true;
                if self.in_pass {
                    let at_cursor = self.list.get(self.cursor).is_some_and(|a| a.addr == addr);
                    if at_cursor {
                        self.cancel_timer(cc);
                        self.cursor += 1;
                        self.request_next(cc);
                    } else {
                        self.check_pass_end(cc);
                    }
                } else if self.sticky_tf {
                    self.tf_count += 1;
                    if self.tf_count >= self.entries.len() {
                        self.tf_count = 0;
                        self.refresh_failure(cc);
                    }
                }
            }
            _ => {}
        }
    }

    fn exit_idle(&mut self, cc: &mut dyn ClientConn) {
        if self.reported == Some(ConnectivityState::Idle) && !self.list.is_empty() {
            self.report(cc, ConnectivityState::Connecting, Box::new(QueuePicker));
            self.start_pass(cc);
        }
    }

    fn timer(&mut self, cc: &mut dyn ClientConn, token: TimerToken) {
        if self.timer == Some(token) {
            self.timer = None;
            self.cursor += 1;
            self.request_next(cc);
        }
    }

    fn close(&mut self, cc: &mut dyn ClientConn) {
        self.cancel_timer(cc);
        self.shutdown_all(cc);
    }
}

/// RFC 8305 §4: alternate address families (IPv4, IPv6, anything else), in the
/// order each first appears, keeping the order within a family.
pub(crate) fn interleave_families(list: Vec<Address>) -> Vec<Address> {
    fn family(addr: &str) -> usize {
        // A named zone ("[fe80::1%eth0]:3333") is still IPv6, as Go's
        // netip parses it; Rust's parser takes numeric zones only.
        let unzoned;
        let addr = match (addr.find('%'), addr.find(']')) {
            (Some(z), Some(end)) if addr.starts_with('[') && z < end => {
                unzoned = format!("{}{}", &addr[..z], &addr[end..]);
                unzoned.as_str()
            }
            _ => addr,
        };
        match addr.parse::<SocketAddr>() {
            Ok(SocketAddr::V4(_)) => 0,
            Ok(SocketAddr::V6(a)) if a.ip().to_ipv4_mapped().is_some() => 0,
            Ok(SocketAddr::V6(_)) => 1,
            Err(_) => 2,
        }
    }
    let mut order = Vec::new();
    let mut queues: [VecDeque<Address>; 3] = Default::default();
    let n = list.len();
    for a in list {
        let f = family(&a.addr);
        if !order.contains(&f) {
            order.push(f);
        }
        queues[f].push_back(a);
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        for f in &order {
            if let Some(a) = queues[*f].pop_front() {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interleaved(input: &[&str]) -> Vec<String> {
        interleave_families(input.iter().map(|a| Address::new(*a)).collect())
            .into_iter()
            .map(|a| a.addr)
            .collect()
    }

    /// RFC 8305's interleaving as gRPC-Go does it, on gRPC-Go's own vector
    /// (TestPickFirstLeaf_InterleavingIPv4Preferred: an IPv4-mapped address
    /// counts as IPv4, a zoned link-local one as IPv6) and on ours.
    #[test]
    fn families_interleave_like_grpc_go() {
        let go = [
            "1.1.1.1:1111",
            "2.2.2.2:2",
            "3.3.3.3:3",
            "[::FFFF:192.168.0.1]:2222",
            "[0001:0001:0001:0001:0001:0001:0001:0001]:8080",
            "[0002:0002:0002:0002:0002:0002:0002:0002]:8080",
            "[fe80::1%eth0]:3333",
            "grpc.io:80",
        ];
        assert_eq!(
            interleaved(&go),
            [
                "1.1.1.1:1111",
                "[0001:0001:0001:0001:0001:0001:0001:0001]:8080",
                "grpc.io:80",
                "2.2.2.2:2",
                "[0002:0002:0002:0002:0002:0002:0002:0002]:8080",
                "3.3.3.3:3",
                "[fe80::1%eth0]:3333",
                "[::FFFF:192.168.0.1]:2222",
            ]
        );
        let ours = [
            "1.0.0.1:1",
            "1.0.0.2:1",
            "1.0.0.3:1",
            "[::ffff:1.0.0.4]:1",
            "[2001::1]:1",
            "[2001::2]:1",
            "[fe80::1]:1",
            "host:1",
        ];
        assert_eq!(
            interleaved(&ours),
            [
                "1.0.0.1:1",
                "[2001::1]:1",
                "host:1",
                "1.0.0.2:1",
                "[2001::2]:1",
                "1.0.0.3:1",
                "[fe80::1]:1",
                "[::ffff:1.0.0.4]:1"
            ]
        );
    }

    #[test]
    fn config_parsing() {
        let b = PickFirstBuilder;
        let c = b
            .parse_config(&serde_json::json!({"shuffleAddressList": true, "future": 1}))
            .unwrap()
            .unwrap();
        assert!(
            c.downcast_ref::<PickFirstConfig>()
                .unwrap()
                .shuffle_address_list
        );
        assert!(b
            .parse_config(&serde_json::json!({"shuffleAddressList": 1}))
            .is_err());
    }

    #[test]
    fn shuffling_keeps_each_endpoints_addresses_together_and_in_order() {
        use crate::address::Endpoint;
        use crate::balancer::testing::TestClientConn;
        let mut orders = HashSet::new();
        for round in 0..50 {
            let mut cc = TestClientConn::new();
            for _ in 0..round {
                cc.random();
            }
            let mut pf = PickFirst::default();
            let endpoints: Vec<Endpoint> = (0..4)
                .map(|i| {
                    Endpoint::new(vec![
                        Address::new(format!("127.0.{i}.1:1")),
                        Address::new(format!("127.0.{i}.2:1")),
                    ])
                })
                .collect();
            let cfg: LbConfig = Arc::new(PickFirstConfig {
                shuffle_address_list: true,
            });
            cc.update(&mut pf, ClientConnState::new(endpoints, Some(cfg)))
                .unwrap();
            let order: Vec<String> = pf.list.iter().map(|a| a.addr.clone()).collect();
            for pair in order.chunks(2) {
                assert!(
                    pair[0].ends_with(".1:1") && pair[1] == pair[0].replace(".1:1", ".2:1"),
                    "{order:?}"
                );
            }
            orders.insert(order);
        }
        assert!(orders.len() > 5, "endpoints are shuffled: {orders:?}");
    }

    /// An address listed again with another tag is another address: a new
    /// subchannel carries it (gRPC-Go reconnects when an address's
    /// attributes change), the old one is shut down.
    #[test]
    fn new_attributes_for_a_listed_address_replace_its_subchannel() {
        use crate::address::Endpoint;
        use crate::balancer::testing::{Picked, TestClientConn};
        use ConnectivityState::{Connecting, Ready};
        let mut cc = TestClientConn::new();
        let mut pf = PickFirst::default();
        let with_tag = |tag: u64| {
            ClientConnState::new(
                vec![Endpoint::from(Address::new("127.0.0.1:1").with_tag(tag))],
                None,
            )
        };
        cc.update(&mut pf, with_tag(1)).unwrap();
        let old = cc.connects()[0];
        cc.set_state(&mut pf, old, Connecting);
        cc.set_state(&mut pf, old, Ready);
        // The same attributes: nothing happens.
        cc.update(&mut pf, with_tag(1)).unwrap();
        assert_eq!(cc.connects().len(), 1);
        assert!(cc.shutdowns().is_empty());
        cc.update(&mut pf, with_tag(2)).unwrap();
        assert_eq!(cc.shutdowns(), [old]);
        let new = *cc.connects().last().unwrap();
        assert_ne!(new, old);
        assert_eq!(cc.subconn(new).unwrap().tag(), 2);
        cc.set_state(&mut pf, new, Connecting);
        cc.set_state(&mut pf, new, Ready);
        match cc.pick() {
            Picked::Complete { subconn, .. } => assert_eq!(subconn, new),
            p => panic!("{p:?}"),
        }
    }

    /// Health checking on (pick_first as a petiole's child): a connection
    /// made wins the pass while its health check has yet to answer, as in
    /// gRPC-Go: no other address is tried (not even after the happy
    /// eyeballs delay), and an unhealthy verdict keeps it, failing.
    #[test]
    fn a_connection_made_wins_the_pass_whatever_its_health_says() {
        use crate::balancer::testing::TestClientConn;
        use ConnectivityState::{Connecting, Ready, TransientFailure};
        let mut cc = TestClientConn::new();
        let mut pf = PickFirst::default();
        cc.update_addresses(&mut pf, ["127.0.0.1:1", "127.0.0.2:1"])
            .unwrap();
        let a = cc.connects()[0];
        cc.set_state(&mut pf, a, Connecting);
        cc.set_connected(&mut pf, a);
        assert_eq!(cc.state(), Some(Connecting));
        cc.advance(&mut pf, HAPPY_EYEBALLS_DELAY * 4);
        assert_eq!(cc.connects(), [a], "another address tried");
        // NOT_SERVING: it stays, failing; still no other address.
        cc.set_health_failed(&mut pf, a);
        assert!(cc.subconn(a).unwrap().is_connected());
        assert_eq!(cc.state(), Some(TransientFailure));
        cc.advance(&mut pf, HAPPY_EYEBALLS_DELAY * 4);
        assert_eq!(cc.connects(), [a]);
        // SERVING: READY on it.
        cc.set_state(&mut pf, a, Ready);
        assert_eq!(cc.state(), Some(Ready));
        assert_eq!(cc.connects(), [a]);
    }

    /// gRFC A113: with shuffleAddressList, an endpoint of weight w comes
    /// first w / sum(w) of the time.
    #[test]
    fn shuffling_weighs_endpoints() {
        use crate::address::Endpoint;
        use crate::balancer::testing::TestClientConn;
        let mut cc = TestClientConn::new();
        let mut first = [0usize; 3];
        const ROUNDS: usize = 6000;
        for _ in 0..ROUNDS {
            let mut pf = PickFirst::default();
            let endpoints: Vec<Endpoint> = (1..=3u32)
                .map(|w| {
                    let mut e = Endpoint::new(vec![Address::new(format!("127.0.0.{w}:1"))]);
                    e.weight = w;
                    e
                })
                .collect();
            let cfg: LbConfig = Arc::new(PickFirstConfig {
                shuffle_address_list: true,
            });
            cc.update(&mut pf, ClientConnState::new(endpoints, Some(cfg)))
                .unwrap();
            let lead = &pf.list[0].addr;
            first[lead.as_bytes()[8] as usize - b'1' as usize] += 1;
            Balancer::close(&mut pf, &mut cc);
        }
        for (i, n) in first.iter().enumerate() {
            let want = (i + 1) as f64 / 6.0;
            let got = *n as f64 / ROUNDS as f64;
            assert!(
                (got - want).abs() < 0.03,
                "weight {}: {got} vs {want}",
                i + 1
            );
        }
    }

    /// pick_first over one address, its subchannel asked to connect.
    fn over_one_address() -> (
        crate::balancer::testing::TestClientConn,
        PickFirst,
        SubConnId,
    ) {
        let mut cc = crate::balancer::testing::TestClientConn::new();
        let mut pf = PickFirst::default();
        cc.update_addresses(&mut pf, ["127.0.0.1:1"]).unwrap();
        let sc = cc.connects()[0];
        (cc, pf, sc)
    }

    /// An address listed again gets a new subchannel; an event the old one
    /// sent before its shutdown was announced (the channel queues them in
    /// that order) must not move the new one's entry: a stale READY would
    /// publish a picker over a subchannel that is not connected.
    #[test]
    fn a_replaced_subchannels_late_event_is_ignored() {
        use ConnectivityState::{Connecting, Ready};
        let (mut cc, mut pf, old) = over_one_address();
        let list = |a: &str| ClientConnState::new(vec![Address::new(a).into()], None);
        // Straight to the policy: shutdowns not yet announced.
        pf.update_client_conn_state(&mut cc, list("127.0.0.2:1"))
            .unwrap();
        pf.update_client_conn_state(&mut cc, list("127.0.0.1:1"))
            .unwrap();
        let new = cc.subconn_for("127.0.0.1:1").unwrap().id();
        assert_ne!(new, old);
        let ready = SubConnState {
            state: Ready,
            error: None,
        };
        pf.update_subconn_state(&mut cc, old, &ready);
        assert_eq!(
            cc.state(),
            Some(Connecting),
            "the old subchannel's READY was taken"
        );
        pf.update_subconn_state(&mut cc, new, &ready);
        assert_eq!(cc.state(), Some(Ready));
    }

    /// In TRANSIENT_FAILURE, a new list starts a pass; a kept subchannel
    /// whose backoff ends meanwhile (IDLE) waits for its turn in the pass
    /// instead of reconnecting at once (gRPC-Go ignores IDLE during a pass).
    #[test]
    fn during_a_pass_an_idle_subchannel_waits_for_its_turn() {
        use crate::balancer::testing::TestClientConn;
        use ConnectivityState::{Connecting, Idle, TransientFailure};
        let mut cc = TestClientConn::new();
        let mut pf = PickFirst::default();
        cc.update_addresses(&mut pf, ["127.0.0.1:1"]).unwrap();
        let a = cc.connects()[0];
        cc.set_state(&mut pf, a, Connecting);
        cc.set_state(&mut pf, a, TransientFailure);
        assert_eq!(cc.state(), Some(TransientFailure), "sticky");
        cc.update_addresses(&mut pf, ["127.0.0.3:1", "127.0.0.1:1"])
            .unwrap();
        let c = *cc.connects().last().unwrap();
        assert_ne!(c, a, "the pass starts with the new address");
        let before = cc.connects().len();
        cc.set_state(&mut pf, a, Idle);
        assert_eq!(cc.connects().len(), before, "reconnected out of turn");
        cc.set_state(&mut pf, c, Connecting);
        cc.set_state(&mut pf, c, TransientFailure);
        assert_eq!(cc.connects().last(), Some(&a), "its turn");
    }

    /// A new list restarts the pass; an address whose subchannel is
    /// already CONNECTING counts as asked (gRFC A61: "treat as if a
    /// connection was requested"; gRPC-Go and C-core only arm the timer):
    /// it is not asked to connect again, and the next address waits its
    /// 250 ms as usual.
    #[test]
    fn a_pass_reaching_a_connecting_subchannel_only_arms_the_timer() {
        use crate::balancer::testing::TestClientConn;
        use ConnectivityState::Connecting;
        let mut cc = TestClientConn::new();
        let mut pf = PickFirst::default();
        cc.update_addresses(&mut pf, ["127.0.0.1:1", "127.0.0.2:1"])
            .unwrap();
        let a = cc.connects()[0];
        cc.set_state(&mut pf, a, Connecting);
        cc.update_addresses(&mut pf, ["127.0.0.1:1", "127.0.0.2:1"])
            .unwrap();
        assert_eq!(cc.connects(), [a], "asked to connect again");
        assert_eq!(cc.timers().len(), 1, "the attempt timer");
        cc.advance(&mut pf, HAPPY_EYEBALLS_DELAY);
        let b = cc.subconn_for("127.0.0.2:1").unwrap().id();
        assert_eq!(cc.connects(), [a, b]);
    }

    #[test]
    fn an_update_with_no_addresses_ends_sticky_transient_failure() {
        let (mut cc, mut pf, sc) = over_one_address();
        cc.set_state(&mut pf, sc, ConnectivityState::Connecting);
        cc.set_state(&mut pf, sc, ConnectivityState::TransientFailure);
        assert_eq!(cc.state(), Some(ConnectivityState::TransientFailure));
        assert!(cc.update_addresses(&mut pf, []).is_err());
        cc.update_addresses(&mut pf, ["127.0.0.2:1"]).unwrap();
        assert_eq!(cc.state(), Some(ConnectivityState::Connecting));
    }

    /// A connection made and lost before it was READY (say, before its
    /// first health verdict): the subchannel goes CONNECTING -> IDLE, and
    /// pick_first goes IDLE (gRPC-Go), the other attempts stopped, so that
    /// its parent (or the next pick) reconnects it. Ignoring it left the
    /// policy CONNECTING for good.
    #[test]
    fn a_connection_lost_while_connecting_makes_the_policy_idle() {
        use crate::balancer::testing::TestClientConn;
        let mut cc = TestClientConn::new();
        let mut pf = PickFirst::default();
        cc.update_addresses(&mut pf, ["127.0.0.1:1", "127.0.0.2:1"])
            .unwrap();
        let a = cc.connects()[0];
        cc.set_state(&mut pf, a, ConnectivityState::Connecting);
        cc.set_state(&mut pf, a, ConnectivityState::Idle);
        assert_eq!(cc.state(), Some(ConnectivityState::Idle));
        assert_eq!(pf.entries.len(), 1, "the other attempts stop");
        let connects = cc.connects().len();
        pf.exit_idle(&mut cc);
        assert_eq!(cc.state(), Some(ConnectivityState::Connecting));
        assert_eq!(cc.connects().len(), connects + 1);
    }

    /// The connected subchannel's health stream is re-opened after a
    /// failure (CONNECTING): RPCs wait for its verdict instead of failing
    /// with the old one (gRPC-Go's pick_first with health).
    #[test]
    fn a_health_recheck_of_the_connected_subchannel_queues_picks() {
        use crate::balancer::testing::Picked;
        let (mut cc, mut pf, sc) = over_one_address();
        cc.set_state(&mut pf, sc, ConnectivityState::Ready);
        cc.set_state(&mut pf, sc, ConnectivityState::TransientFailure);
        assert!(matches!(cc.pick(), Picked::Fail(_)));
        cc.set_state(&mut pf, sc, ConnectivityState::Connecting);
        assert_eq!(cc.state(), Some(ConnectivityState::Connecting));
        assert_eq!(cc.pick(), Picked::Queue);
        cc.set_state(&mut pf, sc, ConnectivityState::Ready);
        assert_eq!(cc.state(), Some(ConnectivityState::Ready));
        assert!(matches!(cc.pick(), Picked::Complete { .. }));
    }
}
