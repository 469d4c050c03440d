//! Client-side health checking (gRFC A17) as a part of the subchannel: what
//! one subchannel makes of its connection's health reports, whatever the
//! connector. The connector only runs the check (`Connector::start_health`:
//! the managed connector's `grpc.health.v1.Health/Watch` stream, or the
//! host's own check) and reports what it finds; this machine decides:
//!
//! - a verdict (a host's `Healthy` / `Unhealthy`) or a `ServingStatus` from
//!   the stream (SERVING is healthy, anything else is not) is READY or
//!   TRANSIENT_FAILURE, the connection kept either way;
//! - a stream that ended UNIMPLEMENTED means "no health service": healthy,
//!   never retried, logged once per address;
//! - a stream that ended otherwise is ill health, and a new stream is due
//!   a backoff after it ended (gRPC's default numbers, as gRPC-Go's health client
//!   and C-core's: not the channel's connection backoff), at once if
//!   the ended stream had delivered a status.
//!
//! It is pure (no loop, no connector): `SubchannelPool` applies its outcomes
//! (transitions, the retry timer, the connector calls).

use super::stream_end::{log_unimplemented_once, reopen_at};
use crate::backoff::{Backoff, BackoffConfig, Jitter};
use crate::connector::TransportEvent;
use crate::trace;
use crate::transport::{code, health_proto};
use std::collections::HashSet;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No check on this transport: health checking is off, the transport is
    /// not up, or the connector does not check health.
    Off,
    /// The connector runs a check; reports count.
    Checking,
    /// The health stream ended; a new one is due when the retry timer fires.
    Retrying,
    /// The server has no health service: healthy until the transport ends.
    Unimplemented,
}

/// What a health report makes of the subchannel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// READY.
    Healthy,
    /// TRANSIENT_FAILURE with this message (the connection stays).
    Unhealthy(String),
}

/// What the subchannel does after a health report.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The state the policy should see, if the report says one.
    pub(crate) verdict: Option<Verdict>,
    /// Ask the connector for a new health stream at this time.
    pub(crate) retry_at: Option<Instant>,
}

/// One subchannel's health checking, across its connections.
pub(crate) struct HealthCheck {
    phase: Phase,
    /// Paces new streams after ones that ended without a status.
    backoff: Backoff,
    /// The current check delivered a status (its end retries at once).
    got_status: bool,
    /// The armed retry timer (its loop id), while `Retrying`.
    pub(crate) retry: Option<u64>,
}

impl HealthCheck {
    pub(crate) fn new(backoff: BackoffConfig) -> HealthCheck {
        HealthCheck {
            phase: Phase::Off,
            backoff: Backoff::new(backoff),
            got_status: false,
            retry: None,
        }
    }

    /// The connector is about to start a check (first, retry, or a new
    /// service name) on the connected transport.
    pub(crate) fn starting(&mut self, now: Instant, jitter: &mut dyn Jitter) {
        self.phase = Phase::Checking;
        self.got_status = false;
        self.backoff.start_attempt(now, jitter);
    }

    /// The connector does not check health: the transport counts as healthy.
    pub(crate) fn unsupported(&mut self) {
        self.phase = Phase::Off;
    }

    /// A check runs on the connector's side (one `stop_health` would end).
    pub(crate) fn is_checking(&self) -> bool {
        self.phase == Phase::Checking
    }

    /// A new stream is due at the retry timer.
    pub(crate) fn is_retrying(&self) -> bool {
        self.phase == Phase::Retrying
    }

    /// Health checking ends on this transport (it ended, the subchannel shut
    /// down, or the setting changed); the next check starts afresh. Returns
    /// the retry timer to cancel, if one was armed.
    pub(crate) fn stop(&mut self) -> Option<u64> {
        self.phase = Phase::Off;
        self.got_status = false;
        self.backoff.reset();
        self.retry.take()
    }

    /// What a health report from the connector means. Reports outside a
    /// check (late, stale, before the transport is up) mean nothing;
    /// connectivity events are not health reports.
    pub(crate) fn report(
        &mut self,
        event: TransportEvent,
        addr: &str,
        now: Instant,
        logged_unimplemented: &mut HashSet<String>,
    ) -> Outcome {
        if self.phase != Phase::Checking {
            return Outcome::default();
        }
        let verdict = match event {
            TransportEvent::Healthy => Verdict::Healthy,
            TransportEvent::Unhealthy(message) if message.is_empty() => Verdict::Unhealthy(
                format!("connection active but health check failed: {addr} is not serving"),
            ),
            TransportEvent::Unhealthy(message) => Verdict::Unhealthy(message),
            TransportEvent::HealthStatus(status) => {
                let name = health_proto::status_name(status);
                log::info!(target: trace::HEALTH, "health check: {addr} reports {name}");
                if status == health_proto::SERVING {
                    Verdict::Healthy
                } else {
                    // gRPC-Go's words, as they are ("connection active but
                    // health check failed. status=NOT_SERVING"), then which
                    // backend.
                    Verdict::Unhealthy(format!(
                        "connection active but health check failed. status={name} (from {addr})"
                    ))
                }
            }
            TransportEvent::HealthStreamEnded { code, message } => {
                return self.ended(code, &message, addr, now, logged_unimplemented)
            }
            TransportEvent::Ready
            | TransportEvent::Failed(_)
            | TransportEvent::Lost(_)
            | TransportEvent::LoadReport(_)
            | TransportEvent::LoadReportStreamEnded { .. } => return Outcome::default(),
        };
        self.got_status = true;
        Outcome {
            verdict: Some(verdict),
            retry_at: None,
        }
    }

    /// The health stream is over: UNIMPLEMENTED means healthy for good;
    /// anything else is ill health until a new stream delivers a status.
    fn ended(
        &mut self,
        code: u32,
        message: &str,
        addr: &str,
        now: Instant,
        logged_unimplemented: &mut HashSet<String>,
    ) -> Outcome {
        if code == code::UNIMPLEMENTED {
            self.phase = Phase::Unimplemented;
            log_unimplemented_once(
                logged_unimplemented,
                trace::HEALTH,
                addr,
                "grpc.health.v1.Health",
                message,
                "treating it as healthy; health checking is disabled for this subchannel",
            );
            return Outcome {
                verdict: Some(Verdict::Healthy),
                retry_at: None,
            };
        }
        self.phase = Phase::Retrying;
        let at = reopen_at(&mut self.backoff, self.got_status, now);
        // gRPC-Go's words, as they are (its status error's text, "rpc
        // error: code = Unavailable desc = ...", or "EOF" for a stream the
        // server ended OK), then which backend.
        let error = match crate::status::Code::from_u32(code) {
            Some(crate::status::Code::Ok) => "EOF".to_string(),
            Some(c) => format!("rpc error: code = {c:?} desc = {message}"),
            None => format!("rpc error: code = Code({code}) desc = {message}"),
        };
        let message = format!(
            "connection active but received health check RPC error: {error} \
             (from {addr}; retrying)"
        );
        log::info!(target: trace::HEALTH, "{message}");
        Outcome {
            verdict: Some(Verdict::Unhealthy(message)),
            retry_at: Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ADDR: &str = "127.0.0.1:9";

    fn checking() -> (HealthCheck, Instant) {
        let mut h = HealthCheck::new(BackoffConfig {
            jitter: 0.0,
            ..Default::default()
        });
        let now = Instant::now();
        h.starting(now, &mut || 0.5);
        (h, now)
    }

    fn report(h: &mut HealthCheck, event: TransportEvent, now: Instant) -> Outcome {
        h.report(event, ADDR, now, &mut HashSet::new())
    }

    fn ended(code: u32) -> TransportEvent {
        TransportEvent::HealthStreamEnded {
            code,
            message: "why".into(),
        }
    }

    #[test]
    fn only_serving_is_healthy() {
        let (mut h, now) = checking();
        let healthy = Some(Verdict::Healthy);
        assert_eq!(
            report(
                &mut h,
                TransportEvent::HealthStatus(health_proto::SERVING),
                now
            )
            .verdict,
            healthy
        );
        for (status, name) in [
            (health_proto::NOT_SERVING, "NOT_SERVING"),
            (health_proto::UNKNOWN, "UNKNOWN"),
            (health_proto::SERVICE_UNKNOWN, "SERVICE_UNKNOWN"),
            (77, "77"),
        ] {
            let got = report(&mut h, TransportEvent::HealthStatus(status), now);
            // gRPC-Go's health client's words, then the backend.
            let want = Verdict::Unhealthy(format!(
                "connection active but health check failed. status={name} (from {ADDR})"
            ));
            assert_eq!(
                got,
                Outcome {
                    verdict: Some(want),
                    retry_at: None
                }
            );
        }
        // A host's verdicts pass through; an empty reason gets one.
        assert_eq!(
            report(&mut h, TransportEvent::Healthy, now).verdict,
            healthy
        );
        assert_eq!(
            report(&mut h, TransportEvent::Unhealthy("draining".into()), now).verdict,
            Some(Verdict::Unhealthy("draining".into()))
        );
        assert_eq!(
            report(&mut h, TransportEvent::Unhealthy(String::new()), now).verdict,
            Some(Verdict::Unhealthy(format!(
                "connection active but health check failed: {ADDR} is not serving"
            )))
        );
    }

    #[test]
    fn unimplemented_is_healthy_for_good_and_logged_once_per_address() {
        let (mut h, now) = checking();
        let mut logged = HashSet::new();
        let got = h.report(ended(code::UNIMPLEMENTED), ADDR, now, &mut logged);
        assert_eq!(
            got,
            Outcome {
                verdict: Some(Verdict::Healthy),
                retry_at: None
            }
        );
        assert!(!h.is_checking() && !h.is_retrying());
        assert!(logged.contains(ADDR));
        // No check runs any more: later reports change nothing.
        let late = h.report(
            TransportEvent::HealthStatus(health_proto::NOT_SERVING),
            ADDR,
            now,
            &mut logged,
        );
        assert_eq!(late, Outcome::default());
    }

    #[test]
    fn an_ended_stream_retries_after_the_backoff_or_at_once_after_a_status() {
        let (mut h, now) = checking();
        // Ended without a status: the backoff (1 s, no jitter) from the end,
        // as gRPC-Go's health client waits.
        let end = now + Duration::from_millis(10);
        let got = report(&mut h, ended(code::UNAVAILABLE), end);
        assert_eq!(got.retry_at, Some(end + Duration::from_secs(1)));
        let Some(Verdict::Unhealthy(why)) = got.verdict else {
            panic!("ill health expected")
        };
        assert_eq!(
            why,
            format!(
                "connection active but received health check RPC error: \
                 rpc error: code = Unavailable desc = why (from {ADDR}; retrying)"
            )
        );
        assert!(h.is_retrying());
        // The retry grows ×1.6 when it fails the same way.
        let later = now + Duration::from_secs(1);
        h.starting(later, &mut || 0.5);
        let got = report(&mut h, ended(code::OK), later);
        assert_eq!(got.retry_at, Some(later + Duration::from_millis(1600)));
        // Ended OK: gRPC-Go's stream reads io.EOF.
        assert_eq!(
            got.verdict,
            Some(Verdict::Unhealthy(format!(
                "connection active but received health check RPC error: EOF \
                 (from {ADDR}; retrying)"
            )))
        );
        // A stream that delivered a status retries at once.
        h.starting(later, &mut || 0.5);
        report(
            &mut h,
            TransportEvent::HealthStatus(health_proto::SERVING),
            later,
        );
        let at = later + Duration::from_secs(5);
        assert_eq!(
            report(&mut h, ended(code::UNAVAILABLE), at).retry_at,
            Some(at)
        );
    }

    #[test]
    fn reports_outside_a_check_mean_nothing() {
        let mut h = HealthCheck::new(BackoffConfig::default());
        let now = Instant::now();
        assert_eq!(
            report(&mut h, TransportEvent::Healthy, now),
            Outcome::default()
        );
        h.starting(now, &mut || 0.5);
        assert_eq!(
            report(&mut h, TransportEvent::Ready, now),
            Outcome::default()
        );
        assert!(report(&mut h, ended(code::UNAVAILABLE), now)
            .retry_at
            .is_some());
        h.retry = Some(7);
        assert_eq!(h.stop(), Some(7));
        assert_eq!(
            report(&mut h, TransportEvent::Unhealthy("x".into()), now),
            Outcome::default()
        );
    }
}
