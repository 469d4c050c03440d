//! A host stack for the external connector: records what the library asks of it
//! and lets tests report transport states back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use switchyard::{
    Address, Channel, ChannelOptions, ConnectivityState, ExternalConnector, HostTransport, SubConn,
    SubConnId,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Create(String),
    Connect(String),
    Shutdown(String),
    /// `start_health(addr, service)`, or `stop_health(addr)` (`None`).
    Health(String, Option<String>),
}

#[derive(Default)]
pub struct Host {
    log: Mutex<(Vec<Ev>, HashMap<String, SubConnId>)>,
    cv: Condvar,
    /// Whether it checks health (`HostTransport::start_health` says so).
    checks_health: bool,
}

impl Host {
    pub fn new() -> Arc<Host> {
        Arc::new(Host::default())
    }

    /// A host that checks health when asked (and logs `Ev::Health`).
    pub fn checking_health() -> Arc<Host> {
        Arc::new(Host {
            checks_health: true,
            ..Host::default()
        })
    }

    fn push(&self, ev: Ev, sc: &SubConn) {
        let mut g = self.log.lock().unwrap();
        // The newest subchannel for the address, not the last one heard of
        // (an old one may shut down after a new one was made).
        if matches!(ev, Ev::Create(_)) || !g.1.contains_key(sc.addr()) {
            g.1.insert(sc.addr().to_string(), sc.id());
        }
        g.0.push(ev);
        self.cv.notify_all();
    }

    pub fn events(&self) -> Vec<Ev> {
        self.log.lock().unwrap().0.clone()
    }

    pub fn take(&self) -> Vec<Ev> {
        std::mem::take(&mut self.log.lock().unwrap().0)
    }

    pub fn count(&self, ev: &Ev) -> usize {
        self.events().iter().filter(|e| *e == ev).count()
    }

    /// The id of the most recent subchannel for `addr`.
    pub fn id(&self, addr: &str) -> SubConnId {
        *self
            .log
            .lock()
            .unwrap()
            .1
            .get(addr)
            .unwrap_or_else(|| panic!("no subchannel for {addr}"))
    }

    /// Waits (bounded) until `pred` holds over the event log.
    pub fn wait(&self, what: &str, pred: impl Fn(&[Ev]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut g = self.log.lock().unwrap();
        while !pred(&g.0) {
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; log: {:?}",
                g.0
            );
            g = self.cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }
}

impl HostTransport for Host {
    fn create(&self, sc: &Arc<SubConn>) {
        self.push(Ev::Create(sc.addr().into()), sc);
    }
    fn connect(&self, sc: &Arc<SubConn>) {
        self.push(Ev::Connect(sc.addr().into()), sc);
    }
    fn shutdown(&self, sc: &Arc<SubConn>) {
        self.push(Ev::Shutdown(sc.addr().into()), sc);
    }
    fn start_health(&self, sc: &Arc<SubConn>, service: &str) -> bool {
        if self.checks_health {
            self.push(Ev::Health(sc.addr().into(), Some(service.into())), sc);
        }
        self.checks_health
    }
    fn stop_health(&self, sc: &Arc<SubConn>) {
        self.push(Ev::Health(sc.addr().into(), None), sc);
    }
}

pub fn options(host: &Arc<Host>) -> ChannelOptions {
    ChannelOptions {
        connector: Some(Box::new(ExternalConnector::new(host.clone()))),
        ..Default::default()
    }
}

pub fn addrs(list: &[&str]) -> Vec<Address> {
    list.iter().map(|a| Address::new(*a)).collect()
}

/// A channel under `config` over `n` addresses (`127.<net>.x.y:1`), every
/// one READY: for policies that connect every endpoint at once (all
/// subchannels exist once the loop has taken the update). Returns what
/// keeps it going, and the addresses.
pub fn many_ready(
    config: &str,
    n: usize,
    net: u8,
) -> (
    Arc<Host>,
    switchyard::Runtime,
    switchyard::Channel,
    Vec<String>,
) {
    let host = Host::new();
    let rt = switchyard::Runtime::new().unwrap();
    let ch = switchyard::Channel::new(&rt, "", Some(config), options(&host)).unwrap();
    let names: Vec<String> = (0..n)
        .map(|i| format!("127.{net}.{}.{}:1", i / 250, i % 250 + 1))
        .collect();
    let list: Vec<&str> = names.iter().map(String::as_str).collect();
    ch.update_addresses(addrs(&list)).unwrap();
    ch.sync().unwrap();
    report(&ch, &host, &list, ConnectivityState::Ready);
    (host, rt, ch, names)
}

/// Reports `state` for each address and waits for the loop to apply it.
pub fn report(ch: &Channel, host: &Host, list: &[&str], state: ConnectivityState) {
    for a in list {
        ch.report_subconn_state(host.id(a), state, "test report")
            .unwrap();
    }
    ch.sync().unwrap();
}

/// User data that counts its releases.
pub struct Tracked {
    pub name: String,
    released: Arc<AtomicUsize>,
}

impl Tracked {
    pub fn new(name: &str, released: &Arc<AtomicUsize>) -> Arc<Tracked> {
        Arc::new(Tracked {
            name: name.into(),
            released: released.clone(),
        })
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.released.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn pick_addr(r: &mut switchyard::Reader) -> String {
    let p = r.try_pick(&switchyard::PickInfo::default()).expect("pick");
    p.subconn().addr().to_string()
}

/// The ways a `Reader` picks: an owned `Pick`, a borrowed `PickRef`, a
/// pick kept in the reader (through `try_pick_kept`, and through the hit
/// paths first, as the C ABI's `sy_reader_pick` does).
pub const PICK_KINDS: [&str; 4] = ["owned", "borrowed", "kept", "kept_hit"];

/// How `n` picks of one kind (`PICK_KINDS`, or "raw": an owned pick taken
/// apart into `RawPick` words and back) split over the backends, each
/// finished OK with the load `load` gives for its backend's address.
pub fn split_by_kind(
    r: &mut switchyard::Reader,
    kind: &str,
    n: usize,
    load: impl Fn(&str) -> Vec<(&'static str, f64)>,
) -> HashMap<String, usize> {
    use switchyard::{DoneInfo, PickInfo};
    let mut seen: HashMap<String, usize> = HashMap::new();
    let info = PickInfo::default();
    for _ in 0..n {
        // The kinds differ in how they pick and finish; the rest is one.
        type Finish<'a> = Box<dyn FnOnce(&DoneInfo<'_>) + 'a>;
        let (addr, finish): (String, Finish<'_>) = match kind {
            "owned" => {
                let pick = r.try_pick(&info).unwrap();
                let addr = pick.subconn().addr().to_string();
                (addr, Box::new(move |d: &DoneInfo<'_>| pick.done(d)))
            }
            "borrowed" => {
                let pick = r.try_pick_ref(&info).unwrap();
                let addr = pick.subconn().addr().to_string();
                (addr, Box::new(move |d: &DoneInfo<'_>| pick.done(d)))
            }
            // An owned pick through the words a C ABI keeps (`sy_pick`).
            "raw" => {
                let raw = r.try_pick(&info).unwrap().into_raw();
                // SAFETY: from `into_raw`, taken back once.
                let pick = unsafe { switchyard::Pick::from_raw(raw) };
                let addr = pick.subconn().addr().to_string();
                (addr, Box::new(move |d: &DoneInfo<'_>| pick.done(d)))
            }
            // A kept pick the way `sy_reader_pick` takes it: the direct
            // hit path (rotation, flat table, a schedule's step at hand),
            // then the other inline tables, then the general way.
            "kept_hit" => {
                let addr = match r
                    .try_pick_kept_direct()
                    .or_else(|| r.try_pick_kept_cached(None))
                {
                    Some(listed) => {
                        let (p, len) = listed.addr_raw();
                        // SAFETY: the entry's address lives in the reader's
                        // cached table, which nothing retires before its
                        // next pick.
                        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) };
                        String::from_utf8(bytes.to_vec()).unwrap()
                    }
                    None => r.try_pick_kept(&info).unwrap().addr().to_string(),
                };
                (addr, Box::new(|d: &DoneInfo<'_>| assert!(r.finish_kept(d))))
            }
            _ => {
                let addr = r.try_pick_kept(&info).unwrap().addr().to_string();
                (addr, Box::new(|d: &DoneInfo<'_>| assert!(r.finish_kept(d))))
            }
        };
        let load = load(&addr);
        finish(&DoneInfo {
            load: &load,
            ..DoneInfo::OK
        });
        *seen.entry(addr).or_default() += 1;
    }
    seen
}
