//! Out-of-band load reports (gRFC A51, as gRPC's `orca` producer runs them)
//! as a part of the subchannel: the policy's listeners on one subchannel,
//! and the one ORCA `StreamCoreMetrics` stream they share. The connector
//! only opens the stream (`Connector::start_load_reports`) and reports
//! what it delivers; this machine decides:
//!
//! - a stream runs while the subchannel is connected (its transport
//!   READY, healthy or not, as gRPC-Go's producer) and has listeners,
//!   asking for the smallest period any listener wants (a new smallest
//!   period restarts it);
//! - each report goes to every listener;
//! - a stream that ended UNIMPLEMENTED means "no ORCA service": not
//!   retried on that connection unless the period wanted changes (gRPC-Go's
//!   producer runs again when its interval does), logged once per address;
//! - a stream that ended otherwise is opened again a backoff after it ended
//!   (gRPC's default numbers, whatever the channel's connection backoff:
//!   gRPC-Go's producer uses `backoff.DefaultExponential`), at once if it
//!   had delivered a report (gRPC-Go's producer does the same); a new
//!   period or connection starts the backoff over.
//!
//! It is pure (no loop, no connector): `SubchannelPool` applies what it
//! says (the connector calls, the retry timer).

use super::stream_end::{log_unimplemented_once, reopen_at};
use crate::backoff::{Backoff, BackoffConfig, Jitter};
use crate::balancer::{LoadReportListener, OobListenerId};
use crate::trace;
use crate::transport::code;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No stream: not READY, no listener, or the connector cannot.
    Off,
    /// A stream asking for this period runs on the connector's side.
    Streaming(Duration),
    /// The stream ended; a new one (this period) is due at the retry timer.
    Retrying(Duration),
    /// The server has no ORCA service, asked with this period: nothing
    /// more until the connection ends, or until the listeners want another
    /// period (gRPC-Go's producer runs again when its interval changes).
    Unimplemented(Duration),
}

/// What the subchannel should do about its stream now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing changes.
    Keep,
    /// Stop what runs (close the stream if `running`, cancel `retry`),
    /// then open a stream with this period if `Some`.
    Restart {
        running: bool,
        retry: Option<u64>,
        start: Option<Duration>,
    },
}

/// One subchannel's out-of-band reporting, across its connections.
pub(crate) struct OobReports {
    listeners: BTreeMap<OobListenerId, (Duration, Arc<dyn LoadReportListener>)>,
    phase: Phase,
    backoff: Backoff,
    /// The current stream delivered a report (its end retries at once).
    got_report: bool,
    /// The armed retry timer (its loop id), while `Retrying`.
    pub(crate) retry: Option<u64>,
}

impl OobReports {
    pub(crate) fn new(backoff: BackoffConfig) -> OobReports {
        OobReports {
            listeners: BTreeMap::new(),
            phase: Phase::Off,
            backoff: Backoff::new(backoff),
            got_report: false,
            retry: None,
        }
    }

    pub(crate) fn add(
        &mut self,
        id: OobListenerId,
        period: Duration,
        listener: Arc<dyn LoadReportListener>,
    ) {
        self.listeners.insert(id, (period, listener));
    }

    pub(crate) fn remove(&mut self, id: OobListenerId) -> bool {
        self.listeners.remove(&id).is_some()
    }

    /// The ids of every listener (to forget them when the subchannel goes).
    pub(crate) fn ids(&self) -> impl Iterator<Item = OobListenerId> + '_ {
        self.listeners.keys().copied()
    }

    /// The period the stream should ask for: the smallest any listener wants.
    fn period(&self) -> Option<Duration> {
        self.listeners.values().map(|(p, _)| *p).min()
    }

    /// What to do now that the subchannel is or is not `connected` (its
    /// transport READY, health aside), with the listeners it has.
    pub(crate) fn sync(&mut self, connected: bool) -> Action {
        let want = if connected { self.period() } else { None };
        let current = match self.phase {
            Phase::Streaming(p) | Phase::Retrying(p) | Phase::Unimplemented(p) => Some(p),
            Phase::Off => None,
        };
        if want == current {
            return Action::Keep;
        }
        let running = matches!(self.phase, Phase::Streaming(_));
        let retry = self.retry.take();
        self.phase = Phase::Off;
        // A new run, as gRPC-Go's producer starts one (`updateRunLocked`)
        // when its interval or connection changes: its backoff starts over.
        self.backoff.reset();
        Action::Restart {
            running,
            retry,
            start: want,
        }
    }

    /// The connector is about to open a stream with `period`.
    pub(crate) fn starting(&mut self, period: Duration, now: Instant, jitter: &mut dyn Jitter) {
        self.phase = Phase::Streaming(period);
        self.got_report = false;
        self.backoff.start_attempt(now, jitter);
    }

    /// The connector cannot open streams: nothing will come.
    pub(crate) fn unsupported(&mut self) {
        self.phase = Phase::Off;
    }

    /// A report from the stream: the listeners to hand it to (none when no
    /// stream is supposed to run: a late report means nothing).
    pub(crate) fn report(&mut self) -> Vec<Arc<dyn LoadReportListener>> {
        if !matches!(self.phase, Phase::Streaming(_)) {
            return Vec::new();
        }
        self.got_report = true;
        self.listeners.values().map(|(_, l)| l.clone()).collect()
    }

    /// The stream ended with `code`: when to open the next one, if ever.
    pub(crate) fn ended(
        &mut self,
        code: u32,
        message: &str,
        addr: &str,
        now: Instant,
        logged_unimplemented: &mut HashSet<String>,
    ) -> Option<Instant> {
        let Phase::Streaming(period) = self.phase else {
            return None;
        };
        if code == code::UNIMPLEMENTED {
            self.phase = Phase::Unimplemented(period);
            log_unimplemented_once(
                logged_unimplemented,
                trace::SUBCHANNEL,
                addr,
                "xds.service.orca.v3.OpenRcaService",
                message,
                "no out-of-band load reports from it on this connection",
            );
            return None;
        }
        self.phase = Phase::Retrying(period);
        let at = reopen_at(&mut self.backoff, self.got_report, now);
        log::info!(
            target: trace::SUBCHANNEL,
            "ORCA stream to {addr} ended (grpc status {code}: {message}); opening another"
        );
        Some(at)
    }

    /// The retry timer fired: the period to open a stream with, if one is
    /// still due.
    pub(crate) fn retry_due(&mut self) -> Option<Duration> {
        self.retry = None;
        match self.phase {
            Phase::Retrying(p) => Some(p),
            _ => None,
        }
    }

    /// The connection ended (the stream with it): a new connection tries
    /// again, UNIMPLEMENTED or not. Returns the retry timer to cancel.
    pub(crate) fn connection_ended(&mut self) -> Option<u64> {
        self.phase = Phase::Off;
        self.got_report = false;
        self.backoff.reset();
        self.retry.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ADDR: &str = "127.0.0.1:9";

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl LoadReportListener for Count {
        fn on_load_report(&self, _load: &[(&str, f64)]) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn oob() -> OobReports {
        OobReports::new(BackoffConfig {
            jitter: 0.0,
            ..Default::default()
        })
    }

    /// A stream with one listener (1 s period), started at the instant
    /// returned.
    fn streaming() -> (OobReports, Duration, Instant) {
        let mut o = oob();
        let p = Duration::from_secs(1);
        o.add(OobListenerId(1), p, Arc::new(Count::default()));
        o.sync(true);
        let now = Instant::now();
        o.starting(p, now, &mut || 0.5);
        (o, p, now)
    }

    fn start(p: Duration) -> Action {
        Action::Restart {
            running: false,
            retry: None,
            start: Some(p),
        }
    }

    #[test]
    fn a_stream_runs_while_connected_with_listeners_at_the_smallest_period() {
        let mut o = oob();
        let (ten, one) = (Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(o.sync(true), Action::Keep, "no listener, no stream");
        o.add(OobListenerId(1), ten, Arc::new(Count::default()));
        assert_eq!(o.sync(false), Action::Keep, "not READY, no stream");
        assert_eq!(o.sync(true), start(ten));
        o.starting(ten, Instant::now(), &mut || 0.5);
        assert_eq!(o.sync(true), Action::Keep);
        // A smaller period restarts the stream with it; a larger one not.
        o.add(OobListenerId(2), one, Arc::new(Count::default()));
        let restart = |p| Action::Restart {
            running: true,
            retry: None,
            start: p,
        };
        assert_eq!(o.sync(true), restart(Some(one)));
        o.starting(one, Instant::now(), &mut || 0.5);
        o.add(OobListenerId(3), ten, Arc::new(Count::default()));
        assert_eq!(o.sync(true), Action::Keep);
        // Leaving READY stops it; so does losing the last listener.
        assert_eq!(o.sync(false), restart(None));
        assert_eq!(o.sync(true), start(one));
        o.starting(one, Instant::now(), &mut || 0.5);
        for id in 1..=3 {
            assert!(o.remove(OobListenerId(id)));
        }
        assert_eq!(o.sync(true), restart(None));
    }

    #[test]
    fn reports_reach_every_listener_only_while_a_stream_runs() {
        let mut o = oob();
        let (a, b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        o.add(OobListenerId(1), Duration::from_secs(1), a.clone());
        o.add(OobListenerId(2), Duration::from_secs(2), b.clone());
        assert!(o.report().is_empty(), "no stream yet");
        o.sync(true);
        o.starting(Duration::from_secs(1), Instant::now(), &mut || 0.5);
        for l in o.report() {
            l.on_load_report(&[("cpu_utilization", 0.5)]);
        }
        assert_eq!(
            (a.0.load(Ordering::Relaxed), b.0.load(Ordering::Relaxed)),
            (1, 1)
        );
    }

    #[test]
    fn unimplemented_stops_for_the_connection_and_is_logged_once() {
        let (mut o, p, now) = streaming();
        let mut logged = HashSet::new();
        assert_eq!(
            o.ended(code::UNIMPLEMENTED, "no", ADDR, now, &mut logged),
            None
        );
        assert!(logged.contains(ADDR));
        // No retry while the connection lasts, whatever happens.
        assert_eq!(o.sync(true), Action::Keep);
        assert_eq!(o.retry_due(), None);
        assert!(o.report().is_empty());
        // A new connection asks again.
        assert_eq!(o.connection_ended(), None);
        assert_eq!(o.sync(true), start(p));
    }

    #[test]
    fn an_ended_stream_is_reopened_after_the_backoff_or_at_once_after_a_report() {
        let (mut o, p, now) = streaming();
        let mut logged = HashSet::new();
        // No report: the backoff (1 s, no jitter) from the attempt's start.
        let at = o.ended(code::UNAVAILABLE, "gone", ADDR, now, &mut logged);
        assert_eq!(at, Some(now + Duration::from_secs(1)));
        assert!(logged.is_empty());
        o.retry = Some(5);
        assert_eq!(o.sync(true), Action::Keep, "the retry stands");
        assert_eq!(o.retry_due(), Some(p));
        let later = now + Duration::from_secs(1);
        o.starting(p, later, &mut || 0.5);
        assert_eq!(
            o.ended(code::OK, "", ADDR, later, &mut logged),
            Some(later + Duration::from_millis(1600)),
            "the backoff grows"
        );
        o.starting(p, later, &mut || 0.5);
        o.report();
        assert_eq!(
            o.ended(code::UNAVAILABLE, "", ADDR, later, &mut logged),
            Some(later)
        );
        // Leaving READY while a retry is armed cancels it.
        o.retry = Some(9);
        assert_eq!(
            o.sync(false),
            Action::Restart {
                running: false,
                retry: Some(9),
                start: None
            }
        );
    }
}
