//! Targets and the resolvers behind them (gRPC naming: `ipv4:`, `ipv6:`,
//! `unix:`, `dns:`, `passthrough:`; an empty target means the host supplies
//! addresses itself).

use crate::address::Address;
use crate::backoff::{Backoff, BackoffConfig, Jitter};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// Addresses come from `Channel::update_addresses`.
    Manual,
    /// A fixed list, delivered once.
    Static(Vec<String>),
    /// Looked up with the system resolver on a helper thread.
    Dns { host: String, port: u16 },
}

const DEFAULT_PORT: u16 = 443;

pub(crate) fn parse_target(target: &str) -> Result<Resolver, String> {
    let t = target.trim();
    if t.is_empty() {
        return Ok(Resolver::Manual);
    }
    if let Some(list) = t.strip_prefix("ipv4:") {
        return ip_list(list, |a| a.is_ipv4()).map(Resolver::Static);
    }
    if let Some(list) = t.strip_prefix("ipv6:") {
        return ip_list(list, |a| a.is_ipv6()).map(Resolver::Static);
    }
    if let Some(path) = t.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("unix: target has no path".into());
        }
        return Ok(Resolver::Static(vec![format!("unix:{path}")]));
    }
    if let Some(rest) = t.strip_prefix("passthrough:") {
        let addr = rest.trim_start_matches('/');
        if addr.is_empty() {
            return Err("passthrough: target has no address".into());
        }
        return Ok(Resolver::Static(vec![addr.to_string()]));
    }
    let host_port = if let Some(rest) = t.strip_prefix("dns:") {
        // dns:[//authority/]host[:port]
        match rest.strip_prefix("//") {
            Some(r) => r
                .split_once('/')
                .map(|(_, hp)| hp)
                .ok_or("dns: target has no host")?,
            None => rest,
        }
    } else if let Some((scheme, _)) = t.split_once("://") {
        return Err(format!("unsupported target scheme \"{scheme}\""));
    } else {
        t
    };
    let (host, port) = split_host_port(host_port)?;
    Ok(Resolver::Dns { host, port })
}

fn ip_list(list: &str, family: fn(&SocketAddr) -> bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let a: SocketAddr = part
            .parse()
            .map_err(|_| format!("\"{part}\" is not an IP address with a port"))?;
        if !family(&a) {
            return Err(format!("\"{part}\" is not of the target's address family"));
        }
        out.push(a.to_string());
    }
    if out.is_empty() {
        return Err("target lists no addresses".into());
    }
    Ok(out)
}

fn split_host_port(hp: &str) -> Result<(String, u16), String> {
    if hp.is_empty() {
        return Err("target has no host".into());
    }
    if let Some(rest) = hp.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or("unterminated [ in target")?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port \"{p}\""))?,
            None if tail.is_empty() => DEFAULT_PORT,
            None => return Err(format!("unexpected \"{tail}\" after ]")),
        };
        return named_host(host, port);
    }
    match hp.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p.parse().map_err(|_| format!("bad port \"{p}\""))?;
            named_host(h, port)
        }
        _ => Ok((hp.to_string(), DEFAULT_PORT)),
    }
}

/// A port alone (":50051", "[]:80") names no host: refuse it here rather
/// than fail every DNS lookup later.
fn named_host(host: &str, port: u16) -> Result<(String, u16), String> {
    if host.is_empty() {
        return Err("target has no host".into());
    }
    Ok((host.to_string(), port))
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

/// After a successful lookup, re-resolution requests wait until this long
/// after it (gRPC-Go's DNS resolver: a policy asking on every failed
/// connection attempt must not turn into a lookup storm).
pub(crate) const MIN_RESOLUTION_INTERVAL: Duration = Duration::from_secs(30);

/// When a DNS target is looked up: one lookup at a time; a failed one is
/// retried on its own with connection backoff; one asked for within
/// `MIN_RESOLUTION_INTERVAL` of the last success waits for it.
#[derive(Debug)]
pub(crate) struct Lookups {
    backoff: Backoff,
    running: bool,
    /// A later lookup is already scheduled (the caller's timer).
    scheduled: bool,
    not_before: Option<Instant>,
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
    pub(crate) fn new(backoff: BackoffConfig) -> Lookups {
        Lookups {
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
            self.not_before = Some(now + MIN_RESOLUTION_INTERVAL);
            return None;
        }
        self.scheduled = true;
        Some(self.backoff.next_attempt().unwrap_or(now).max(now))
    }

    /// The lookup could not even start (no thread): as if it failed.
    pub(crate) fn not_started(&mut self, now: Instant) -> Instant {
        self.finished(false, now).unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookups() -> (Lookups, Instant) {
        (Lookups::new(BackoffConfig::default()), Instant::now())
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
    fn schemes() {
        assert_eq!(parse_target("").unwrap(), Resolver::Manual);
        assert_eq!(
            parse_target("ipv4:127.0.0.1:1,127.0.0.2:2").unwrap(),
            Resolver::Static(vec!["127.0.0.1:1".into(), "127.0.0.2:2".into()])
        );
        assert_eq!(
            parse_target("ipv6:[::1]:5").unwrap(),
            Resolver::Static(vec!["[::1]:5".into()])
        );
        assert_eq!(
            parse_target("unix:///tmp/s").unwrap(),
            Resolver::Static(vec!["unix:/tmp/s".into()])
        );
        assert_eq!(
            parse_target("dns:///localhost:50051").unwrap(),
            Resolver::Dns {
                host: "localhost".into(),
                port: 50051
            }
        );
        assert_eq!(
            parse_target("localhost").unwrap(),
            Resolver::Dns {
                host: "localhost".into(),
                port: 443
            }
        );
    }

    #[test]
    fn malformed_targets_are_errors() {
        for bad in [
            "ipv4:",
            "ipv4:1.2.3.4",
            "ipv4:[::1]:1",
            "ipv6:127.0.0.1:1",
            "unix:",
            "xds://x/y",
            "dns:///h:notaport",
            "[::1",
            ":50051",
            "dns:///[]:80",
        ] {
            assert!(parse_target(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "DNS lookup: Miri has no getaddrinfo")]
    fn lookup_localhost() {
        let a = lookup("localhost", 80).unwrap();
        assert!(a.iter().all(|a| a.addr.ends_with(":80")));
    }
}
