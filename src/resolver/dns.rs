//! The `dns` resolver: looks its host up on a thread of its own (never on
//! the loop), with the system resolver, or with our own DNS client when the
//! target names a server (`dns://127.0.0.1:5353/host:port`); also the
//! name's TXT service config (gRFC A2) when the channel asks for it. Once
//! at start and then when asked (`resolve_now`), paced by `Lookups` as
//! gRPC-Go's DNS resolver is: at most one lookup per minimum interval (30 s
//! unless the channel says otherwise) after a success, failures retried
//! with backoff without being asked, and an update the channel rejected
//! looked up again when the channel's backoff says (`update_rejected`). An
//! IP literal is answered once, when built, and never looked up.

use super::dns_client;
use super::dns_config::{self, Client};
use super::fixed::Fixed;
use super::target::{builtin_plan, Plan, Target};
use super::{Resolver, ResolverBuilder, ResolverClientConn, ResolverState};
use crate::address::{Address, Endpoint};
use crate::backoff::{Backoff, BackoffConfig, Jitter};
use crate::clock::Rng;
use crate::error::Error;
use crate::trace;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Builds `dns` resolvers.
pub(crate) struct DnsBuilder;

impl ResolverBuilder for DnsBuilder {
    fn scheme(&self) -> &str {
        "dns"
    }

    fn check(&self, target: &Target) -> Result<(), String> {
        self.name(target).map(drop)
    }

    fn build(&self, target: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
        let name = self.name(target)?;
        // An IP literal is its own answer: one update, nothing to look up
        // or re-resolve, no TXT (gRPC-Go's DNS resolver does the same).
        if let Ok(ip) = name.host.parse::<IpAddr>() {
            cc.update(ResolverState {
                endpoints: vec![Endpoint::from(Address::new(
                    SocketAddr::new(ip, name.port).to_string(),
                ))],
                service_config: None,
            })
            .map_err(|e| e.to_string())?;
            return Ok(Box::new(Fixed));
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("switchyard-dns".into())
            .spawn(move || run(name, cc, rx))
            .map_err(|e| format!("dns: no thread for lookups: {e}"))?;
        Ok(Box::new(DnsResolver { tx }))
    }
}

impl DnsBuilder {
    /// What `target` asks to look up, and where.
    fn name(&self, target: &Target) -> Result<Name, String> {
        let Some(Ok(Plan::Dns {
            authority,
            host,
            port,
        })) = builtin_plan(target)
        else {
            return Err(match builtin_plan(target) {
                Some(Err(e)) => e,
                _ => format!("\"{target}\" is no dns target"),
            });
        };
        // An IP literal is never looked up, so its authority (the DNS
        // server) is never read: gRPC-Go takes any.
        let server = match authority.as_str() {
            "" => None,
            _ if host.parse::<IpAddr>().is_ok() => None,
            a => Some(dns_client::parse_server(a)?),
        };
        Ok(Name { host, port, server })
    }
}

/// What one resolver looks up, and where.
struct Name {
    host: String,
    port: u16,
    /// The server named in the target; `None`: the system resolver.
    server: Option<SocketAddr>,
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.server {
            Some(s) => write!(f, "dns://{s}/{}:{}", self.host, self.port),
            None => write!(f, "dns:{}:{}", self.host, self.port),
        }
    }
}

enum Request {
    ResolveNow,
    /// The channel rejected the last update and has paced this retry.
    Retry,
    Close,
}

struct DnsResolver {
    tx: Sender<Request>,
}

impl Resolver for DnsResolver {
    fn resolve_now(&mut self) {
        let _ = self.tx.send(Request::ResolveNow);
    }

    /// At once, not after the minimum interval: gRPC-Go's DNS resolver
    /// retries a rejected state with backoff (which the channel ran).
    fn update_rejected(&mut self) {
        let _ = self.tx.send(Request::Retry);
    }

    fn close(&mut self) {
        // The thread ends at its next wake-up; a lookup in progress is not
        // waited for (getaddrinfo cannot be interrupted; our own client's
        // waits are bounded).
        let _ = self.tx.send(Request::Close);
    }
}

/// The lookup thread: one lookup now, then as `Lookups` says, until closed
/// or the channel refuses updates.
fn run(name: Name, cc: ResolverClientConn, rx: Receiver<Request>) {
    let options = cc.options().clone();
    let mut lookups = Lookups::new(BackoffConfig::default(), options.min_resolution_interval);
    let mut rng = Rng::from_entropy();
    let hostname = dns_config::hostname();
    let mut next: Option<Instant> = None;
    let mut lookup_now = true;
    // The last valid TXT outcome (a config or none), given again when a
    // lookup fails (gRPC-Go ignores TXT errors and keeps the config it has).
    let mut last_config: Option<String> = None;
    loop {
        if lookup_now {
            lookup_now = false;
            let now = Instant::now();
            lookups.started(now, &mut || rng.uniform());
            let result = lookup_name(&name);
            next = lookups.finished(result.is_ok(), Instant::now());
            let pushed = match result {
                Ok(addrs) => {
                    log::info!(
                        target: trace::RESOLVER,
                        "{name} resolved to {} address(es): {}",
                        addrs.len(),
                        addrs.iter().map(|a| a.addr.as_str()).collect::<Vec<_>>().join(", ")
                    );
                    let service_config =
                        if options.dns_service_config && !options.disable_service_config {
                            let mut client = Client {
                                hostname: &hostname,
                                percentile: &mut || (rng.uniform() * 100.0) as u32 % 100,
                            };
                            match service_config(&name, &mut client) {
                                Txt::Found(config) => {
                                    last_config.clone_from(&config);
                                    config
                                }
                                // Said, not kept: a later failed lookup
                                // gives the last valid one (or none).
                                Txt::Invalid(complaint) => Some(complaint),
                                Txt::Failed => last_config.clone(),
                            }
                        } else {
                            None
                        };
                    // DNS cannot group addresses: one endpoint each.
                    cc.update(ResolverState {
                        endpoints: addrs.into_iter().map(Endpoint::from).collect(),
                        service_config,
                    })
                }
                Err(e) => {
                    log::warn!(target: trace::RESOLVER, "resolving {name} failed: {e}");
                    cc.report_error(&e)
                }
            };
            if matches!(pushed, Err(Error::Closed | Error::RuntimeGone)) {
                return;
            }
        }
        let request = match next {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match request {
            Ok(Request::ResolveNow) => match lookups.request(Instant::now()) {
                Next::Now => lookup_now = true,
                Next::At(at) => next = Some(at),
                Next::Nothing => {}
            },
            Ok(Request::Retry) => {
                lookups.due();
                next = None;
                lookup_now = true;
            }
            Err(RecvTimeoutError::Timeout) => {
                lookups.due();
                next = None;
                lookup_now = true;
            }
            Ok(Request::Close) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The addresses of `name`: from its server, or the system resolver's.
fn lookup_name(name: &Name) -> Result<Vec<Address>, String> {
    let Some(server) = name.server else {
        return lookup(&name.host, name.port);
    };
    let mut ips = dns_client::lookup_ips(server, &name.host)
        .map_err(|e| format!("DNS resolution of {} failed: {e}", name.host))?;
    // In RFC 6724's order, as gRPC's resolvers give them (the system
    // resolver's getaddrinfo sorts its own).
    super::addr_sort::sort(&mut ips);
    if ips.is_empty() {
        return Err(format!(
            "DNS resolution of {} returned no addresses (server {server})",
            name.host
        ));
    }
    Ok(ips
        .into_iter()
        .map(|ip| Address::new(SocketAddr::new(ip, name.port).to_string()))
        .collect())
}

/// What a TXT lookup for the service config found.
enum Txt {
    /// A valid record's choice (`None`: no record, or no choice for us).
    Found(Option<String>),
    /// A record that is no valid list of choices: the channel's reading of
    /// a resolver's complaint (a JSON string), an invalid config.
    Invalid(String),
    /// The lookup failed (timeout, server failure).
    Failed,
}

/// The service config `name` publishes in TXT (A2), if any. Not looked up
/// for IP literals and localhost (A10). No record (NXDOMAIN, no TXT data)
/// is none: the channel's default. A lookup that failed is logged and
/// `Failed`: the caller keeps what it had, as gRPC-Go ignores TXT errors.
/// A record that is no valid list of choices is an invalid config (the
/// channel keeps its last good one, or fails with none), as in gRPC-Go.
fn service_config(name: &Name, client: &mut Client<'_>) -> Txt {
    let host = name.host.as_str();
    if host.parse::<IpAddr>().is_ok() || host.eq_ignore_ascii_case("localhost") {
        return Txt::Found(None);
    }
    let Some(server) = name.server.or_else(dns_client::system_server) else {
        log::warn!(
            target: trace::RESOLVER,
            "{name}: no DNS server known for the TXT service config lookup"
        );
        return Txt::Found(None);
    };
    let txt_name = format!("_grpc_config.{host}");
    let records = match dns_client::lookup_txt(server, &txt_name) {
        Ok(records) => records,
        Err(e) => {
            log::warn!(
                target: trace::RESOLVER,
                "{name}: TXT service config: {e} (keeping the last one)"
            );
            return Txt::Failed;
        }
    };
    match dns_config::choose(&records, client) {
        Ok(config) => Txt::Found(config),
        Err(e) => {
            log::warn!(target: trace::RESOLVER, "{name}: TXT service config: {e}");
            Txt::Invalid(serde_json::Value::String(e).to_string())
        }
    }
}

/// Resolves `host:port` with the system resolver (blocking: call off the loop).
pub(crate) fn lookup(host: &str, port: u16) -> Result<Vec<Address>, String> {
    let addrs: Vec<Address> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("DNS resolution of {host} failed: {e}"))?
        .map(|a| Address::new(a.to_string()))
        .collect();
    if addrs.is_empty() {
        return Err(format!("DNS resolution of {host} returned no addresses"));
    }
    Ok(addrs)
}

/// When a DNS target is looked up: one lookup at a time; a failed one is
/// retried on its own with connection backoff; one asked for within
/// `min_interval` of the last success waits for it (gRPC-Go's DNS resolver:
/// a policy asking on every failed connection attempt must not turn into a
/// lookup storm).
#[derive(Debug)]
pub(crate) struct Lookups {
    backoff: Backoff,
    running: bool,
    /// A later lookup is already scheduled (the caller's timer).
    scheduled: bool,
    not_before: Option<Instant>,
    min_interval: Duration,
}

/// What to do about a request for a lookup.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Now,
    At(Instant),
    /// One is running or scheduled already.
    Nothing,
}

impl Lookups {
    pub(crate) fn new(backoff: BackoffConfig, min_interval: Duration) -> Lookups {
        Lookups {
            min_interval,
            backoff: Backoff::new(backoff),
            running: false,
            scheduled: false,
            not_before: None,
        }
    }

    /// A lookup is wanted at `now`. `At` means: call `due` at that time.
    pub(crate) fn request(&mut self, now: Instant) -> Next {
        if self.running || self.scheduled {
            return Next::Nothing;
        }
        match self.not_before {
            Some(at) if now < at => {
                self.scheduled = true;
                Next::At(at)
            }
            _ => Next::Now,
        }
    }

    /// A scheduled lookup is due: start it.
    pub(crate) fn due(&mut self) {
        self.scheduled = false;
    }

    /// A lookup starts at `now`.
    pub(crate) fn started(&mut self, now: Instant, jitter: &mut dyn Jitter) {
        self.running = true;
        self.backoff.start_attempt(now, jitter);
    }

    /// The lookup ended at `now`; `Some(at)`: it failed, look again at `at`.
    pub(crate) fn finished(&mut self, ok: bool, now: Instant) -> Option<Instant> {
        self.running = false;
        if ok {
            self.backoff.reset();
            self.not_before = Some(now + self.min_interval);
            return None;
        }
        self.scheduled = true;
        Some(self.backoff.next_attempt().unwrap_or(now).max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN_RESOLUTION_INTERVAL: Duration = Duration::from_secs(30);

    fn lookups() -> (Lookups, Instant) {
        (
            Lookups::new(BackoffConfig::default(), MIN_RESOLUTION_INTERVAL),
            Instant::now(),
        )
    }

    /// The service configs a DNS resolver pushes over successive lookups
    /// when the TXT record answers, lookup after lookup, each of `txts`
    /// (`None`: SERVFAIL), for a name whose A record is 127.0.0.1.
    fn txt_configs(txts: Vec<Option<String>>) -> Vec<Option<String>> {
        use crate::resolver::dns_client::tests::{reply, serve};
        use crate::resolver::testing::TestResolverClientConn;
        use crate::resolver::ResolverOptions;
        use hickory_proto::op::ResponseCode;
        use hickory_proto::rr::rdata::{A, TXT};
        use hickory_proto::rr::{RData, Record, RecordType};
        let lookups = txts.len();
        let mut answers = txts.into_iter();
        let server = serve(2 * lookups, move |q| {
            let query = &q.queries()[0];
            let name = query.name().clone();
            if query.query_type() != RecordType::TXT {
                let a = RData::A(A::new(127, 0, 0, 1));
                let records = vec![Record::from_rdata(name, 60, a)];
                return reply(&q, ResponseCode::NoError, records);
            }
            match answers.next().flatten() {
                None => reply(&q, ResponseCode::ServFail, vec![]),
                Some(text) => {
                    let txt = RData::TXT(TXT::new(vec![text]));
                    let records = vec![Record::from_rdata(name, 60, txt)];
                    reply(&q, ResponseCode::NoError, records)
                }
            }
        });
        let cc = TestResolverClientConn::with_options(ResolverOptions {
            dns_service_config: true,
            min_resolution_interval: Duration::ZERO,
            ..Default::default()
        });
        let target = Target::parse(&format!("dns://{server}/svc.test:1")).unwrap();
        let mut r = DnsBuilder.build(&target, cc.client_conn()).unwrap();
        for n in 1..=lookups {
            assert!(cc.wait_for_pushes(n, Duration::from_secs(10)));
            if n < lookups {
                r.resolve_now();
            }
        }
        r.close();
        assert!(cc.errors().is_empty());
        cc.updates().into_iter().map(|u| u.service_config).collect()
    }

    /// A TXT lookup that fails (SERVFAIL here; a timeout alike) gives the
    /// last valid outcome again, as gRPC-Go ignores TXT errors, rather than
    /// none (the channel's default policy); an invalid record is said once
    /// and never given again.
    #[test]
    fn a_failed_txt_lookup_keeps_the_last_valid_config() {
        const RR: &str = r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#;
        let good = Some(format!("grpc_config=[{{\"serviceConfig\":{RR}}}]"));
        let got = txt_configs(vec![good, None]);
        assert_eq!(got, [Some(RR.to_string()), Some(RR.to_string())]);
        let bad = Some("grpc_config={}".to_string());
        let got = txt_configs(vec![bad, None]);
        assert!(
            got[0].as_deref().is_some_and(|c| c.starts_with('"')),
            "{got:?}"
        );
        assert_eq!(got[1], None, "the invalid record is not given again");
    }

    /// gRPC-Go's TestIPResolver: an IP literal is answered once, whatever
    /// the authority (the DNS server it never asks), and a re-resolution
    /// brings no update.
    #[test]
    fn an_ip_literal_is_answered_once_whatever_the_authority() {
        use crate::resolver::testing::TestResolverClientConn;
        for (target, want) in [
            ("dns:///127.0.0.1:5", "127.0.0.1:5"),
            ("dns://ns.example/127.0.0.1", "127.0.0.1:443"),
            ("dns://8.8.8.8:53/[::1]:7", "[::1]:7"),
        ] {
            let cc = TestResolverClientConn::new();
            let target = Target::parse(target).unwrap();
            let mut r = DnsBuilder.build(&target, cc.client_conn()).unwrap();
            let updates = cc.updates();
            assert_eq!(updates.len(), 1, "{target}");
            assert_eq!(updates[0].endpoints[0].addresses[0].addr, want);
            r.resolve_now();
            r.update_rejected();
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(cc.updates().len(), 1, "{target}");
            r.close();
        }
    }

    #[test]
    fn failed_lookups_retry_with_backoff_without_being_asked() {
        let (mut l, t0) = lookups();
        let mut jitter = || 0.5; // no spread
        assert_eq!(l.request(t0), Next::Now);
        l.started(t0, &mut jitter);
        assert_eq!(l.request(t0), Next::Nothing, "one at a time");
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(l.finished(false, t1), Some(t0 + Duration::from_secs(1)));
        assert_eq!(l.request(t1), Next::Nothing, "the retry is scheduled");
        l.due();
        let t2 = t0 + Duration::from_secs(1);
        l.started(t2, &mut jitter);
        assert_eq!(
            l.finished(false, t2),
            Some(t2 + Duration::from_millis(1600))
        );
    }

    #[test]
    fn requests_soon_after_a_success_wait_for_the_minimum_interval() {
        let (mut l, t0) = lookups();
        let mut jitter = || 0.5;
        l.started(t0, &mut jitter);
        assert_eq!(l.finished(true, t0), None);
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(l.request(soon), Next::At(t0 + MIN_RESOLUTION_INTERVAL));
        assert_eq!(l.request(soon), Next::Nothing, "coalesced");
        l.due();
        l.started(t0 + MIN_RESOLUTION_INTERVAL, &mut jitter);
        let later = t0 + 2 * MIN_RESOLUTION_INTERVAL + Duration::from_secs(1);
        assert_eq!(l.finished(true, t0 + MIN_RESOLUTION_INTERVAL), None);
        assert_eq!(l.request(later), Next::Now);
        // A success resets the backoff: the next failure waits 1 s again.
        l.started(later, &mut jitter);
        assert_eq!(
            l.finished(false, later),
            Some(later + Duration::from_secs(1))
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "DNS lookup: Miri has no getaddrinfo")]
    fn lookup_localhost() {
        let a = lookup("localhost", 80).unwrap();
        assert!(a.iter().all(|a| a.addr.ends_with(":80")));
    }
}
