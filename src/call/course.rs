//! One call's course through picks and attempts: which connection an
//! attempt goes out on, what the policy hears of each, and whether the call
//! is over or tried again: at once (gRPC's transparent retry of a call the
//! server never processed) or after a backoff (the method's `retryPolicy`
//! within the channel's `retryThrottling`, gRFC A6), or, under a
//! `hedgingPolicy`, when the next hedged attempt goes out. Blocking and
//! started calls make the same decisions here, each waiting in its own way.

use super::PREVIOUS_ATTEMPTS;
use crate::balancer::picker::DoneInfo;
use crate::reader::{Pick, PickError, PickWait};
use crate::service_config::{HedgingPolicy, RetryPolicy, RetryTokens};
use crate::status::{Code, Status};
use crate::transport::{orca, CallError, CallFuture, Handle, Pushback, ServerSent, UnaryResponse};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// One call's way through picks, attempts, the policy's done hook, one
/// transparent retry and its retry policy: the decisions blocking and
/// started calls share. The caller picks (and waits for pickers and
/// backoffs) in its own way and hands each pick and each attempt's result
/// here; `finish` is how it gives a pick back to the policy's done hook.
#[derive(Default)]
pub(crate) struct Course {
    /// An attempt has failed before: the transparent retry of an attempt
    /// the server saw but never processed is for the first attempt only.
    failed_before: bool,
    /// Transparent retries of attempts that never left this client.
    unsent: u32,
    /// What the failed picks it waited through said (`Reader::pick`'s rules).
    waiting: PickWait,
    /// Waiting because the picked connection went away.
    lost_connection: bool,
    /// The method's retry policy and how far the call has come under it.
    retry: Option<Retries>,
    /// The channel's retry tokens (`retryThrottling`), if it has any.
    tokens: Option<Arc<RetryTokens>>,
    /// What the last failed attempt (or pick) said, for a deadline that
    /// passes during the backoff after it, or a hedged call whose every
    /// attempt failed.
    last_failure: Option<Status>,
    /// The method's hedging policy and the attempts sent under it.
    hedges: Option<Hedges>,
    /// The request overflows the retry buffer: an attempt that went out
    /// commits the call (gRPC-Go's `bufferForRetryLocked`).
    unbuffered: bool,
}

/// A call's `hedgingPolicy` and the attempts it has sent under it.
struct Hedges {
    policy: HedgingPolicy,
    /// Attempts sent, transparent replacements not counted.
    sent: u32,
    /// No more attempts may go (a pushback said stop, or throttling).
    stopped: bool,
}

/// How many times an attempt that never left this client, or that a
/// server's GOAWAY refused, is replaced at once. gRFC A6 sets no limit for
/// the first (until the deadline): such an attempt failed on a connection
/// that is going away, which picks then avoid; a GOAWAY's refusal is a
/// server's word that it never processed the stream, on a connection going
/// away too (see `CallError::refused_by_goaway`). The bound keeps a call
/// from spinning where a connection fails sends without going away.
const UNSENT_RETRIES: u32 = 16;

/// A failed attempt's status, with what its server sent.
fn failed_status(code: Code, message: String, server: Option<Box<ServerSent>>) -> Status {
    let status = Status::new(code, message);
    match server {
        Some(s) => status.with_server_details(s.details, s.trailers, s.headers),
        None => status,
    }
}

/// A hedged attempt in flight (blocking and started calls both hold them).
pub(super) struct Flight {
    pub(super) pick: Pick,
    pub(super) stream: CallFuture,
    pub(super) started: Instant,
    /// Set by the transport when the attempt's response headers come.
    pub(super) headers: Arc<AtomicBool>,
    /// Its headers have committed the call (`Landed::Committed`).
    committed: bool,
}

/// What a wait on hedged attempts brings.
// Returned and matched at once, never stored: boxing the outcome would
// only add an allocation per attempt.
#[allow(clippy::large_enum_variant)]
pub(super) enum Landed {
    /// Attempt `.0` ended so.
    Ended(usize, Result<UnaryResponse, CallError>),
    /// An attempt received its response headers: the call is committed to
    /// it (`Flight::commit`).
    Committed,
}

impl Flight {
    /// An attempt just sent: `stream`, started with `headers` to set.
    pub(super) fn new(pick: Pick, stream: CallFuture, headers: Arc<AtomicBool>) -> Flight {
        Flight {
            pick,
            stream,
            started: Instant::now(),
            headers,
            committed: false,
        }
    }

    /// The first of `flights` whose attempt ended, or, once, that one
    /// received its response headers.
    pub(super) fn poll_landed(flights: &mut [Flight], cx: &mut Context<'_>) -> Poll<Landed> {
        for (i, f) in flights.iter_mut().enumerate() {
            if let Poll::Ready(r) = f.stream.as_mut().poll(cx) {
                return Poll::Ready(Landed::Ended(i, r));
            }
        }
        for f in flights.iter_mut() {
            if !f.committed && f.headers.load(Ordering::Acquire) {
                f.committed = true;
                return Poll::Ready(Landed::Committed);
            }
        }
        Poll::Pending
    }

    /// The call is committed to the attempt whose response headers came
    /// (gRFC A6: "All other currently in-flight attempts will be
    /// immediately cancelled, and no subsequent attempts will be
    /// started"): the others, taken out of `flights`, for the caller to
    /// cancel.
    pub(super) fn commit(flights: &mut Vec<Flight>) -> Vec<Flight> {
        match flights.iter().position(|f| f.committed) {
            Some(i) => {
                let kept = flights.swap_remove(i);
                std::mem::replace(flights, vec![kept])
            }
            None => Vec::new(),
        }
    }

    /// Ends the attempt: its stream is reset (dropping it sends RST_STREAM
    /// CANCEL) and `finish` tells the policy it failed with `code`.
    pub(super) fn cancel(self, code: Code, why: &str, finish: impl FnOnce(Pick, &DoneInfo<'_>)) {
        drop(self.stream);
        let info = DoneInfo {
            error: Some(why),
            code,
            latency: self.started.elapsed(),
            ..Default::default()
        };
        finish(self.pick, &info);
    }
}

/// What comes after a hedged attempt.
pub(crate) enum Hedged {
    /// The call is over: the others in flight are cancelled.
    Done(Result<UnaryResponse, Status>),
    /// It failed without ending the call: the next attempt may go after
    /// this long from now (zero: at once), or no other may (`None`; the
    /// call ends with this failure once none is in flight).
    Next(Option<Duration>),
}

/// A call's `retryPolicy` and the attempts it has made under it.
struct Retries {
    policy: RetryPolicy,
    /// Attempts made, the first included (transparent retries not).
    attempts: u32,
    /// Retries since the server last pushed back: the backoff's exponent.
    since_pushback: u32,
}

/// What comes after a pick.
pub(crate) enum Next {
    /// Send the attempt on this connection.
    Send(Pick, Arc<Handle>),
    /// Wait for a newer picker, then pick again.
    Wait,
    /// Pick again after this backoff (the retry policy's).
    Backoff(Duration),
    /// The call is over.
    Done(Result<UnaryResponse, Status>),
}

/// What comes after an attempt.
pub(crate) enum After {
    /// Pick again now (a transparent retry).
    Again,
    /// Pick again after this backoff (the retry policy's).
    Backoff(Duration),
    /// The call is over.
    Done(Result<UnaryResponse, Status>),
}

/// The least wait before a hedged attempt that found no pick tries again.
const HEDGE_REPICK: Duration = Duration::from_millis(10);

/// `metadata` with `grpc-previous-rpc-attempts` set to `previous` when a
/// retry has come before (gRFC A6; the first attempt and its transparent
/// retry carry none).
pub(super) fn attempt_metadata(
    metadata: &[(String, String)],
    previous: u32,
) -> Cow<'_, [(String, String)]> {
    if previous == 0 {
        return Cow::Borrowed(metadata);
    }
    let mut m: Vec<(String, String)> = metadata
        .iter()
        .filter(|(k, _)| k != PREVIOUS_ATTEMPTS)
        .cloned()
        .collect();
    m.push((PREVIOUS_ATTEMPTS.to_string(), previous.to_string()));
    Cow::Owned(m)
}

impl Course {
    /// Whether a failed attempt is replaced at once, transparently (gRFC
    /// A6): one that never left this client, or that a server's GOAWAY
    /// refused, up to `UNSENT_RETRIES` times; one the server otherwise saw
    /// but never processed (REFUSED_STREAM), only if it was the call's
    /// first attempt (gRPC-Go's `firstAttempt && unprocessed`: a later one
    /// goes by the retry policy).
    fn transparent(&mut self, e: &CallError) -> bool {
        let first = !std::mem::replace(&mut self.failed_before, true);
        // Committed (the response had begun): whatever reset it, the
        // server had taken it up (gRFC A6; gRPC-Go commits once a message
        // came).
        if !e.transparent_retry_ok || e.committed {
            return false;
        }
        if e.never_sent || e.refused_by_goaway {
            self.unsent += 1;
            return self.unsent <= UNSENT_RETRIES;
        }
        first
    }

    /// The course of a call to a method with `retry` as its policy, on a
    /// channel with `tokens`.
    pub(super) fn new(retry: Option<RetryPolicy>, tokens: Option<Arc<RetryTokens>>) -> Course {
        Course {
            retry: retry.map(|policy| Retries {
                policy,
                attempts: 1,
                since_pushback: 0,
            }),
            tokens,
            ..Course::default()
        }
    }

    /// This call's request overflows the retry buffer (`unbuffered`): once
    /// an attempt is sent, nothing is tried again. A pick that fails before
    /// still goes by the retry policy, as in gRPC-Go, whose buffer only
    /// fills as the message is sent.
    pub(super) fn unbuffered(mut self, unbuffered: bool) -> Course {
        self.unbuffered = unbuffered;
        self
    }

    /// The course of a call to a method with `hedging` as its policy (a
    /// config has a retry or a hedging policy, never both).
    pub(super) fn hedged(hedging: HedgingPolicy, tokens: Option<Arc<RetryTokens>>) -> Course {
        Course {
            hedges: Some(Hedges {
                policy: hedging,
                sent: 0,
                stopped: false,
            }),
            tokens,
            ..Course::default()
        }
    }

    /// The call hedges: the caller runs attempts side by side.
    pub(crate) fn hedging(&self) -> bool {
        self.hedges.is_some()
    }

    /// An attempt goes out now: its `grpc-previous-rpc-attempts` (the
    /// retries before it, or the hedged attempts sent before it, which it
    /// now counts among).
    pub(crate) fn sending(&mut self) -> u32 {
        match (&mut self.hedges, &self.retry) {
            (Some(h), _) => {
                h.sent += 1;
                h.sent - 1
            }
            (None, Some(r)) => r.attempts - 1,
            (None, None) => 0,
        }
    }

    /// How long after one goes out the next hedged attempt may (the
    /// policy's `hedgingDelay`), or `None`: `maxAttempts` are out, a
    /// pushback said stop, or throttling allows no more (gRFC A6).
    pub(crate) fn next_hedge(&self) -> Option<Duration> {
        let h = self.hedges.as_ref()?;
        let throttled = self.tokens.as_deref().is_some_and(|t| !t.allow());
        (!h.stopped && !throttled && h.sent < h.policy.max_attempts)
            .then_some(h.policy.hedging_delay)
    }

    /// An attempt's response headers committed the call: no more hedges.
    pub(crate) fn hedges_committed(&mut self) {
        if let Some(h) = self.hedges.as_mut() {
            h.stopped = true;
        }
    }

    /// When to try again after a hedged attempt found no pick (no READY
    /// subchannel for it now): its next turn, but never sooner than
    /// `HEDGE_REPICK` (with a `hedgingDelay` of 0 it would pick again and
    /// again without waiting for anything).
    pub(crate) fn hedge_repick(&self) -> Option<Duration> {
        self.next_hedge().map(|d| d.max(HEDGE_REPICK))
    }

    /// The failure a hedged call ends with when every attempt failed.
    pub(crate) fn last_failure(&mut self) -> Status {
        self.last_failure
            .take()
            .unwrap_or_else(|| Status::unavailable("no hedged attempt could be sent"))
    }

    /// A hedged attempt ended after `latency`: the policy hears how; an OK,
    /// a committed failure or a status `nonFatalStatusCodes` does not name
    /// ends the call (the caller cancels the others); a non-fatal one lets
    /// the next attempt go at once (or after the server's pushback), unless
    /// no more may (gRFC A6).
    pub(crate) fn hedge_ended(
        &mut self,
        pick: Pick,
        result: Result<UnaryResponse, CallError>,
        latency: Duration,
        finish: impl FnOnce(Pick, &DoneInfo<'_>),
    ) -> Hedged {
        let e = match self.told(pick, result, latency, finish) {
            Ok(response) => return Hedged::Done(Ok(response)),
            Err(e) => e,
        };
        let retry_code = e.retry_code();
        let code = Code::from_u32(e.code).unwrap_or(Code::Unknown);
        let transparent = self.hedges.is_some() && self.transparent(&e);
        let status = failed_status(code, e.message, e.server);
        let Some(h) = self.hedges.as_mut() else {
            return Hedged::Done(Err(status));
        };
        if transparent {
            // Its replacement goes at once and takes no attempt of the
            // policy's.
            h.sent = h.sent.saturating_sub(1);
            self.last_failure = Some(status);
            return Hedged::Next(Some(Duration::ZERO));
        }
        if e.committed || !retry_code.is_some_and(|c| h.policy.non_fatal_status_codes.contains(&c))
        {
            // A pushback saying stop costs a token even then (A6 counts
            // it as a failure whatever the code), unless response headers
            // had committed the call: past every decision, as `retry_after`
            // (gRPC-Go reads a trailers-only answer's pushback only).
            if !e.committed && e.pushback == Some(Pushback::Stop) {
                if let Some(t) = self.tokens.as_deref() {
                    t.failed();
                }
            }
            return Hedged::Done(Err(status));
        }
        self.last_failure = Some(status);
        if let Some(t) = self.tokens.as_deref() {
            if !t.failed() {
                h.stopped = true;
            }
        }
        let delay = match e.pushback {
            Some(Pushback::Stop) => {
                h.stopped = true;
                None
            }
            Some(Pushback::After(d)) => Some(d),
            None => Some(Duration::ZERO),
        };
        Hedged::Next(delay.filter(|_| self.next_hedge().is_some()))
    }

    /// gRFC A6's decision on an attempt (or fail-fast pick) that failed with
    /// `code` (`None`: one gRPC does not define): the backoff before the
    /// next attempt, or `None` for no retry.
    /// As gRPC-Go decides (`shouldRetry`): never once committed; an
    /// unreadable pushback stops retries and costs a token; a code the
    /// policy does not name is final; a retryable one costs a token, and
    /// retries stop when that leaves half of `maxTokens` or less, or when
    /// `maxAttempts` are spent.
    fn retry_after(
        &mut self,
        code: Option<Code>,
        committed: bool,
        pushback: Option<Pushback>,
    ) -> Option<Duration> {
        if committed {
            return None;
        }
        let tokens = self.tokens.as_deref();
        if pushback == Some(Pushback::Stop) {
            // Counts as a failure whatever the code (gRPC-Go's order).
            if let Some(t) = tokens {
                t.failed();
            }
            return None;
        }
        let r = self.retry.as_mut()?;
        if !code.is_some_and(|c| r.policy.retryable_status_codes.contains(&c)) {
            return None;
        }
        if !tokens.is_none_or(RetryTokens::failed) {
            return None;
        }
        if r.attempts >= r.policy.max_attempts {
            return None;
        }
        r.attempts += 1;
        if let Some(Pushback::After(d)) = pushback {
            r.since_pushback = 0;
            return Some(d);
        }
        let p = &r.policy;
        // min(initial × multiplier^n, max) × U(0.8, 1.2).
        let exp = i32::try_from(r.since_pushback).unwrap_or(i32::MAX);
        let grown = p.initial_backoff.as_secs_f64() * p.backoff_multiplier.powi(exp);
        let capped = grown.min(p.max_backoff.as_secs_f64());
        r.since_pushback += 1;
        let jitter = 0.8 + 0.4 * crate::clock::Rng::from_entropy().uniform();
        Some(Duration::try_from_secs_f64(capped * jitter).unwrap_or(p.max_backoff))
    }

    /// A pick came back. Its connection went away (or is going) after the
    /// picker was built: wait for the picker that knows (gRPC treats this
    /// as a queued pick; the loop publishes one once it has seen the
    /// GOAWAY / loss that made the handle closing).
    pub(crate) fn picked(&mut self, pick: Pick, finish: impl FnOnce(Pick, &DoneInfo<'_>)) -> Next {
        // A REFUSED_STREAM leaves a connection usable (a retry may go out on
        // it, as in gRPC), but never one that is closing.
        match pick.subconn().transport().filter(|h| !h.is_closing()) {
            Some(handle) => {
                self.lost_connection = false;
                Next::Send(pick, handle)
            }
            None => {
                // Nothing was sent: the policy hears no failure, as
                // gRPC-Go's picker wrapper calls `Done(DoneInfo{})` (no
                // error) here; outlier detection counted one against a
                // backend the RPC never reached. (So a done hook sees OK
                // with no latency, as gRPC-Go's does.)
                finish(pick, &DoneInfo::OK);
                self.lost_connection = true;
                Next::Wait
            }
        }
    }

    /// A pick that may not wait failed (started calls pick on the loop):
    /// queue it or fail the call, as `Reader::pick` decides for a blocking
    /// pick.
    pub(crate) fn pick_failed(&mut self, e: PickError, wait_for_ready: bool) -> Next {
        match self.waiting.failed(e, wait_for_ready) {
            Ok(()) => Next::Wait,
            Err(e) => self.pick_error(e),
        }
    }

    /// A pick ended the call's wait with `e`: a picker's failure is an
    /// attempt's, for the retry policy (gRFC A6; a drop is never retried),
    /// the rest end the call.
    pub(crate) fn pick_error(&mut self, e: PickError) -> Next {
        let status = e.status();
        if let PickError::Unavailable(_) = e {
            if let Some(d) = self.retry_after(Some(status.code()), false, None) {
                // It was an attempt: the next one is not the call's first,
                // so a stream refused then gets no transparent retry
                // (gRPC-Go clears `firstAttempt` after any retry).
                self.failed_before = true;
                self.last_failure = Some(status);
                return Next::Backoff(d);
            }
        }
        Next::Done(Err(status))
    }

    /// The status of a call whose deadline passed while it waited to retry.
    pub(crate) fn deadline_retrying(&self) -> Status {
        let last = self
            .last_failure
            .as_ref()
            .map(|s| format!(" after {:?}: {}", s.code(), s.message()))
            .unwrap_or_default();
        Status::new(
            Code::DeadlineExceeded,
            format!("deadline exceeded waiting to retry{last}"),
        )
    }

    /// The status of a call whose deadline passed while it waited for a
    /// picker (`Reader::pick`'s error).
    pub(crate) fn deadline_waiting(&self) -> Status {
        if self.lost_connection {
            return Status::new(
                Code::DeadlineExceeded,
                "deadline exceeded waiting for a connection",
            );
        }
        self.waiting.deadline_exceeded().status()
    }

    /// An attempt ended after `latency`: the policy hears how, and the call
    /// is over, or is picked again (at once, once, for a call the server
    /// never processed; after a backoff, as its retry policy allows).
    pub(crate) fn attempt_ended(
        &mut self,
        pick: Pick,
        result: Result<UnaryResponse, CallError>,
        latency: Duration,
        finish: impl FnOnce(Pick, &DoneInfo<'_>),
    ) -> After {
        let e = match self.told(pick, result, latency, finish) {
            Ok(response) => return After::Done(Ok(response)),
            Err(e) => e,
        };
        // Sent, a request the retry buffer cannot hold committed the call
        // (gRPC-Go's `cs.committed`: not even a transparent retry).
        let overflowed = self.unbuffered && !e.never_sent;
        if !overflowed && self.transparent(&e) {
            return After::Again;
        }
        let retry_code = e.retry_code();
        let code = Code::from_u32(e.code).unwrap_or(Code::Unknown);
        let status = failed_status(code, e.message, e.server);
        match self.retry_after(retry_code, e.committed || overflowed, e.pushback) {
            Some(d) => {
                self.last_failure = Some(status);
                After::Backoff(d)
            }
            None => After::Done(Err(status)),
        }
    }

    /// Tells the policy how an attempt ended (its done hook, with the
    /// backend's load report if any), and the channel's retry tokens of a
    /// success; hands the outcome back.
    fn told(
        &mut self,
        pick: Pick,
        result: Result<UnaryResponse, CallError>,
        latency: Duration,
        finish: impl FnOnce(Pick, &DoneInfo<'_>),
    ) -> Result<UnaryResponse, CallError> {
        match result {
            Ok(response) => {
                // The backend's ORCA report, if it sent one, for policies
                // that weigh endpoints by load (weighted_round_robin).
                let load = orca::load_metrics(&response.trailers);
                let load: Vec<(&str, f64)> = load.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                finish(
                    pick,
                    &DoneInfo {
                        latency,
                        load: &load,
                        ..DoneInfo::OK
                    },
                );
                if let Some(t) = &self.tokens {
                    t.succeeded();
                }
                Ok(response)
            }
            Err(e) => {
                let code = Code::from_u32(e.code).unwrap_or(Code::Unknown);
                // A server may attach its load report to an error status
                // (gRFC A51): it counts as much as one on an OK response.
                let load = e
                    .load_report
                    .as_ref()
                    .and_then(orca::OrcaLoadReport::from_value)
                    .map(|r| r.metrics())
                    .unwrap_or_default();
                let load: Vec<(&str, f64)> = load.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                finish(
                    pick,
                    &DoneInfo {
                        error: Some(&e.message),
                        // A failed attempt is never OK to the policy, even
                        // if the server said "0" with an error.
                        code: if code == Code::Ok {
                            Code::Unknown
                        } else {
                            code
                        },
                        latency,
                        load: &load,
                    },
                );
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{attempt_metadata, Course};
    use crate::service_config::RetryPolicy;
    use crate::status::Code;
    use crate::transport::Pushback;
    use std::time::Duration;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            backoff_multiplier: 2.0,
            retryable_status_codes: vec![Code::Unavailable],
        }
    }

    fn within(d: Duration, base_ms: f64) -> bool {
        let ms = d.as_secs_f64() * 1e3;
        ms >= base_ms * 0.8 - 1e-6 && ms <= base_ms * 1.2 + 1e-6
    }

    /// gRFC A6's transparent retry: an attempt that never left the client
    /// is replaced again and again (bounded), one the server saw but never
    /// processed only when it was the first attempt, anything else never.
    #[test]
    fn transparent_retries_unsent_attempts_repeatedly_and_unprocessed_once() {
        use crate::transport::CallError;
        let error = |retry: bool, never_sent: bool| {
            let mut e = CallError::new(14, "x");
            e.transparent_retry_ok = retry;
            e.never_sent = never_sent;
            e
        };
        let mut c = Course::default();
        for _ in 0..super::UNSENT_RETRIES {
            assert!(c.transparent(&error(true, true)));
        }
        assert!(!c.transparent(&error(true, true)), "bounded");
        assert!(
            !c.transparent(&error(true, false)),
            "unprocessed: not after other attempts"
        );
        let mut c = Course::default();
        assert!(c.transparent(&error(true, false)), "unprocessed: the first");
        assert!(!c.transparent(&error(true, false)), "once");
        assert!(c.transparent(&error(true, true)), "unsent: apart from it");
        // Refused by a GOAWAY: as often as an unsent one (bounded), even
        // after other attempts.
        let goaway = || {
            let mut e = error(true, false);
            e.refused_by_goaway = true;
            e
        };
        let mut c = Course::default();
        assert!(c.transparent(&error(true, false)), "unprocessed: the first");
        for _ in 0..super::UNSENT_RETRIES {
            assert!(c.transparent(&goaway()), "refused by GOAWAY");
        }
        assert!(!c.transparent(&goaway()), "bounded");
        let mut c = Course::default();
        assert!(!c.transparent(&error(false, false)));
        assert!(
            !c.transparent(&error(true, false)),
            "unprocessed after a failed attempt: the retry policy decides"
        );
    }

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_max_with_jitter() {
        for _ in 0..50 {
            let mut c = Course::new(Some(policy(5)), None);
            // 100, 200, then 300 (capped), each ×U(0.8, 1.2).
            for (i, base) in [100.0, 200.0, 300.0, 300.0].into_iter().enumerate() {
                let d = c.retry_after(Some(Code::Unavailable), false, None).unwrap();
                assert!(within(d, base), "retry {i}: {d:?} vs {base} ms");
                assert_eq!(c.sending(), i as u32 + 1);
            }
            // Five attempts made: no sixth.
            assert_eq!(c.retry_after(Some(Code::Unavailable), false, None), None);
        }
    }

    #[test]
    fn a_pushback_is_the_delay_and_restarts_the_growth() {
        let mut c = Course::new(Some(policy(5)), None);
        let d = c.retry_after(Some(Code::Unavailable), false, None).unwrap();
        assert!(within(d, 100.0));
        let pushed = Some(Pushback::After(Duration::from_millis(7)));
        assert_eq!(
            c.retry_after(Some(Code::Unavailable), false, pushed),
            Some(Duration::from_millis(7))
        );
        // Counted from the initial backoff again.
        let d = c.retry_after(Some(Code::Unavailable), false, None).unwrap();
        assert!(within(d, 100.0), "{d:?}");
        // A pushback never makes a code retryable, nor a committed call.
        assert_eq!(c.retry_after(Some(Code::Internal), false, pushed), None);
        assert_eq!(c.retry_after(Some(Code::Unavailable), true, pushed), None);
        assert_eq!(
            c.retry_after(Some(Code::Unavailable), false, Some(Pushback::Stop)),
            None
        );
    }

    #[test]
    fn retried_attempts_say_how_many_came_before() {
        let md = vec![("a".to_string(), "1".to_string())];
        assert!(matches!(
            attempt_metadata(&md, 0),
            std::borrow::Cow::Borrowed(_)
        ));
        let m = attempt_metadata(&md, 2);
        assert_eq!(
            &m[..],
            &[
                ("a".to_string(), "1".to_string()),
                ("grpc-previous-rpc-attempts".to_string(), "2".to_string())
            ]
        );
    }
}
