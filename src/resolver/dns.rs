//! The `dns` resolver: looks its host up with the system resolver on a
//! thread of its own (never on the loop), once at start and then when asked
//! (`resolve_now`), paced by `Lookups` as gRPC-Go's DNS resolver is: at
//! most one lookup per `MIN_RESOLUTION_INTERVAL` after a success, failures
//! retried with backoff without being asked.

use super::target::{builtin_plan, Plan, Target};
use super::{Resolver, ResolverBuilder, ResolverClientConn, ResolverState};
use crate::address::{Address, Endpoint};
use crate::backoff::{Backoff, BackoffConfig, Jitter};
use crate::clock::Rng;
use crate::error::Error;
use crate::trace;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

/// Builds `dns` resolvers.
pub(crate) struct DnsBuilder;

impl ResolverBuilder for DnsBuilder {
    fn scheme(&self) -> &str {
        "dns"
    }

    fn build(&self, target: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
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
        if !authority.is_empty() {
            // Issue 12 will ask that server; until then, refuse rather than
            // silently ask the system resolver instead.
            return Err(format!(
                "dns: a DNS server in the target's authority (\"{authority}\") is not supported yet"
            ));
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("switchyard-dns".into())
            .spawn(move || run(host, port, cc, rx))
            .map_err(|e| format!("dns: no thread for lookups: {e}"))?;
        Ok(Box::new(DnsResolver { tx }))
    }
}

enum Request {
    ResolveNow,
    Close,
}

struct DnsResolver {
    tx: Sender<Request>,
}

impl Resolver for DnsResolver {
    fn resolve_now(&mut self) {
        let _ = self.tx.send(Request::ResolveNow);
    }

    fn close(&mut self) {
        // The thread ends at its next wake-up; a lookup in progress is not
        // waited for (getaddrinfo cannot be interrupted).
        let _ = self.tx.send(Request::Close);
    }
}

/// The lookup thread: one lookup now, then as `Lookups` says, until closed
/// or the channel refuses updates.
fn run(host: String, port: u16, cc: ResolverClientConn, rx: Receiver<Request>) {
    let mut lookups = Lookups::new(BackoffConfig::default());
    let mut rng = Rng::from_entropy();
    let mut next: Option<Instant> = None;
    let mut lookup_now = true;
    loop {
        if lookup_now {
            lookup_now = false;
            let now = Instant::now();
            lookups.started(now, &mut || rng.uniform());
            let result = lookup(&host, port);
            next = lookups.finished(result.is_ok(), Instant::now());
            let pushed = match result {
                Ok(addrs) => {
                    log::info!(
                        target: trace::RESOLVER,
                        "dns:{host}:{port} resolved to {} address(es): {}",
                        addrs.len(),
                        addrs.iter().map(|a| a.addr.as_str()).collect::<Vec<_>>().join(", ")
                    );
                    // DNS cannot group addresses: one endpoint each.
                    cc.update(ResolverState {
                        endpoints: addrs.into_iter().map(Endpoint::from).collect(),
                        service_config: None,
                    })
                }
                Err(e) => {
                    log::warn!(target: trace::RESOLVER, "resolving dns:{host}:{port} failed: {e}");
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
            Err(RecvTimeoutError::Timeout) => {
                lookups.due();
                next = None;
                lookup_now = true;
            }
            Ok(Request::Close) | Err(RecvTimeoutError::Disconnected) => return,
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
    #[cfg_attr(miri, ignore = "DNS lookup: Miri has no getaddrinfo")]
    fn lookup_localhost() {
        let a = lookup("localhost", 80).unwrap();
        assert!(a.iter().all(|a| a.addr.ends_with(":80")));
    }
}
