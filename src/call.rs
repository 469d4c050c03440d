//! Unary RPCs over the picked subchannel's HTTP/2 connection (managed
//! connector only): pick, send, feed the outcome back to the policy through
//! `done`, retry once, transparently, a call the server never processed, and
//! retry by the method's `retryPolicy` (gRFC A6: each attempt picks anew,
//! after a jittered exponential backoff or the server's pushback, within the
//! channel's `retryThrottling` tokens, never once the server has answered
//! with headers).
//!
//! Two ways in, one course: a blocking call (`Reader::unary`) picks and waits
//! on its caller's thread; a started call (`Channel::unary_start`) costs no
//! thread while it waits: the event loop picks for it (queueing it until the
//! channel publishes a new picker), polls its HTTP/2 stream with a waker that
//! schedules just that call, and ends it at its deadline with a loop timer.
//! Both hand every pick and attempt to one internal `Course`, which makes the
//! pick / done / retry decisions. A started call's completion closure runs
//! on the channel's dispatch thread (one per channel, started with the first
//! call), never on the loop: a slow closure delays the closures after it,
//! never a call's deadline or the loop.

use crate::balancer::picker::{DoneInfo, PickInfo};
use crate::balancer::subconn::SubConnId;
use crate::channel::{Channel, ChannelShared};
use crate::channel::{ChannelCore, ChannelId, Completions, StartedCalls, CALL_TIMER, CALL_WAKE};
use crate::error::Error;
use crate::reader::{Pick, PickError, PickOptions, PickWait, Reader};
use crate::runtime::{JoinOnDrop, LoopContext, LoopHandle, TimerKey};
use crate::service_config::{MethodConfigs, RetryPolicy, RetryTokens};
use crate::snapshot::ReaderCounts;
use crate::status::{Code, Status};
use crate::transport::{self, code, orca, CallError, CallFuture, Handle, Pushback, UnaryResponse};
use crossbeam_channel::Sender;
use std::borrow::Cow;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Per-call options.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallOptions<'a> {
    /// When the call gives up with DEADLINE_EXCEEDED (waiting for a pick
    /// included); `None`: no deadline.
    pub deadline: Option<Instant>,
    /// Queue while the channel has no READY subchannel (through
    /// TRANSIENT_FAILURE) instead of failing fast with UNAVAILABLE.
    pub wait_for_ready: bool,
    /// Request metadata: lower-case keys, printable ASCII values (see
    /// [`check_metadata`]; a call with bad metadata fails before anything
    /// is picked or sent).
    pub metadata: &'a [(String, String)],
    /// Request hash for hashing policies.
    pub hash: Option<u64>,
}

/// Headers HTTP/2 forbids in a request (RFC 9113 §8.2.2: connection-specific
/// fields; `te` is allowed only as "trailers", which the transport sends
/// itself) and `host` (HTTP/2 carries `:authority`). A server or h2 itself
/// would reject the request as malformed.
const CONNECTION_SPECIFIC: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
];

/// Headers the transport sets for every call.
const TRANSPORT_OWNED: [&str; 2] = ["content-type", "user-agent"];

/// Checks request metadata before anything is sent: keys are non-empty
/// lower-case ASCII (`[0-9a-z_.-]`), neither pseudo-headers (`:path`, ...),
/// nor connection-specific (`connection`, `keep-alive`, `proxy-connection`,
/// `transfer-encoding`, `upgrade`, `te`, `host`), nor the transport's own
/// (`grpc-*`, `content-type`, `user-agent`); values are printable ASCII
/// (`-bin` values too: their base64 text, sent as given). The error says
/// which entry and why. The C ABI's argument check and both Rust call paths
/// use this one function.
pub fn check_metadata(metadata: &[(String, String)]) -> Result<(), String> {
    for (key, value) in metadata {
        check_metadata_key(key)?;
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(format!("metadata value for {key:?} is not printable ASCII"));
        }
    }
    Ok(())
}

fn check_metadata_key(key: &str) -> Result<(), String> {
    if key.starts_with(':') {
        return Err(format!(
            "metadata key {key:?} is an HTTP/2 pseudo-header (the transport sets those)"
        ));
    }
    let charset = |b: u8| b.is_ascii_digit() || b.is_ascii_lowercase() || b"-_.".contains(&b);
    if key.is_empty() || !key.bytes().all(charset) {
        return Err(format!(
            "metadata key {key:?} is not valid (lower-case ASCII letters, digits, '-', '_', '.')"
        ));
    }
    if CONNECTION_SPECIFIC.contains(&key) {
        return Err(format!(
            "metadata key {key:?} is connection-specific: HTTP/2 forbids it in a request"
        ));
    }
    if key.starts_with("grpc-") || TRANSPORT_OWNED.contains(&key) {
        return Err(format!("metadata key {key:?} belongs to the transport"));
    }
    Ok(())
}

/// A call's metadata check as the status `Reader::unary` fails with:
/// INTERNAL, as gRPC clients fail a call whose metadata they cannot send.
/// Nothing was picked, so the policy hears nothing of it.
/// Whether `method` can be a call's path: "/package.Service/Method" as
/// HTTP/2 can carry it (a URI path of printable ASCII: no spaces, controls,
/// `?` or `#`). The
/// C ABI's argument check and both Rust call paths use this one function,
/// before anything is picked.
pub fn check_method(method: &str) -> Result<(), String> {
    let bad = || format!("method {method:?} is not a gRPC path (\"/package.Service/Method\")");
    if !method.starts_with('/')
        || method.len() < 2
        || method.contains(['?', '#'])
        || !method.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    http::uri::PathAndQuery::try_from(method).map_err(|_| bad())?;
    Ok(())
}

/// What a blocking call fails with before picking: INTERNAL for a method or
/// metadata that cannot be sent.
fn request_status(method: &str, metadata: &[(String, String)]) -> Result<(), Status> {
    check_method(method)
        .and_then(|()| check_metadata(metadata))
        .map_err(|m| Status::new(Code::Internal, m))
}

/// One call's way through picks, attempts, the policy's done hook, one
/// transparent retry and its retry policy: the decisions blocking and
/// started calls share. The caller picks (and waits for pickers and
/// backoffs) in its own way and hands each pick and each attempt's result
/// here; `finish` is how it gives a pick back to the policy's done hook.
#[derive(Default)]
pub(crate) struct Course {
    retried: bool,
    /// What the failed picks it waited through said (`Reader::pick`'s rules).
    waiting: PickWait,
    /// Waiting because the picked connection went away.
    lost_connection: bool,
    /// The method's retry policy and how far the call has come under it.
    retry: Option<Retries>,
    /// The channel's retry tokens (`retryThrottling`), if it has any.
    tokens: Option<Arc<RetryTokens>>,
    /// What the last failed attempt (or pick) said, for a deadline that
    /// passes during the backoff after it.
    last_failure: Option<Status>,
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

/// The header that tells a server how many attempts came before this one.
const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// `metadata` with `grpc-previous-rpc-attempts` set to `previous` when a
/// retry has come before (gRFC A6; the first attempt and its transparent
/// retry carry none).
fn attempt_metadata(metadata: &[(String, String)], previous: u32) -> Cow<'_, [(String, String)]> {
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
    /// The course of a call to a method with `retry` as its policy, on a
    /// channel with `tokens`.
    fn new(retry: Option<RetryPolicy>, tokens: Option<Arc<RetryTokens>>) -> Course {
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

    /// Retries made so far under the retry policy: the next attempt's
    /// `grpc-previous-rpc-attempts`.
    pub(crate) fn previous_attempts(&self) -> u32 {
        self.retry.as_ref().map_or(0, |r| r.attempts - 1)
    }

    /// gRFC A6's decision on an attempt (or fail-fast pick) that failed with
    /// `code`: the backoff before the next attempt, or `None` for no retry.
    /// As gRPC-Go decides (`shouldRetry`): never once committed; an
    /// unreadable pushback stops retries and costs a token; a code the
    /// policy does not name is final; a retryable one costs a token, and
    /// retries stop when that leaves half of `maxTokens` or less, or when
    /// `maxAttempts` are spent.
    fn retry_after(
        &mut self,
        code: Code,
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
        if !r.policy.retryable_status_codes.contains(&code) {
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
                finish(
                    pick,
                    &DoneInfo {
                        error: Some("subchannel lost its connection"),
                        code: Code::Unavailable,
                        ..Default::default()
                    },
                );
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
            if let Some(d) = self.retry_after(status.code(), false, None) {
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
                After::Done(Ok(response))
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
                if e.transparent_retry_ok && !self.retried {
                    self.retried = true;
                    return After::Again;
                }
                let status = Status::new(code, e.message);
                match self.retry_after(code, e.committed, e.pushback) {
                    Some(d) => {
                        self.last_failure = Some(status);
                        After::Backoff(d)
                    }
                    None => After::Done(Err(status)),
                }
            }
        }
    }
}

/// gRPC's rule for a deadline that has already passed when a call starts
/// (a timeout of 0 from C): DEADLINE_EXCEEDED, before anything is picked or
/// sent, so the server never sees a call its client has given up on.
fn expired(deadline: Option<Instant>) -> Option<Status> {
    deadline.filter(|d| *d <= Instant::now()).map(|_| {
        Status::new(
            Code::DeadlineExceeded,
            "deadline exceeded before the call started",
        )
    })
}

/// A call's settings once its method's config (`methodConfig`, gRFC A2)
/// is applied.
struct Settings {
    deadline: Option<Instant>,
    wait_for_ready: bool,
    /// The method's `maxResponseMessageBytes` (the connection's own limit
    /// applies too: the smaller wins).
    max_response: Option<usize>,
    /// The method's `retryPolicy`.
    retry: Option<RetryPolicy>,
    /// The channel's retry tokens.
    tokens: Option<Arc<RetryTokens>>,
}

impl Settings {
    fn course(&self) -> Course {
        Course::new(self.retry.clone(), self.tokens.clone())
    }
}

/// Applies the method's config to a call of `request_len` bytes: the
/// deadline is the earlier of the caller's and now plus the `timeout`; the
/// caller's wait-for-ready stands when true, else the config's
/// `waitForReady` decides (the caller's default, false, cannot be told
/// from an explicit false); a request over `maxRequestMessageBytes` fails
/// with RESOURCE_EXHAUSTED before anything is picked or sent, as gRPC's
/// client does.
fn settings(
    configs: &MethodConfigs,
    method: &str,
    request_len: usize,
    options: &CallOptions<'_>,
) -> Result<Settings, Status> {
    // Before anything is picked: a message gRPC cannot frame at all.
    transport::check_message_len(request_len)
        .map_err(|e| Status::new(Code::ResourceExhausted, e.message))?;
    let tokens = configs.tokens.clone();
    let Some(c) = configs.lookup(method) else {
        return Ok(Settings {
            deadline: options.deadline,
            wait_for_ready: options.wait_for_ready,
            max_response: None,
            retry: None,
            tokens,
        });
    };
    if let Some(max) = c.max_request_message_bytes {
        if request_len > max as usize {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!("trying to send message larger than max ({request_len} vs. {max})"),
            ));
        }
    }
    let from_config = c.timeout.and_then(|t| Instant::now().checked_add(t));
    let deadline = match (options.deadline, from_config) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(Settings {
        deadline,
        wait_for_ready: options.wait_for_ready || c.wait_for_ready == Some(true),
        max_response: c.max_response_message_bytes.map(|m| m as usize),
        retry: c.retry_policy.clone(),
        tokens,
    })
}

fn not_managed() -> &'static str {
    "this channel's transports belong to the host: send on the picked subchannel yourself"
}

impl Reader {
    /// One blocking unary call: returns the response message, headers and
    /// trailers, or the call's gRPC status. A method or metadata that cannot
    /// be sent ([`check_method`], [`check_metadata`]) fails with INTERNAL
    /// before anything is picked.
    pub fn unary(
        &mut self,
        method: &str,
        request: &[u8],
        options: &CallOptions<'_>,
    ) -> Result<UnaryResponse, Status> {
        if !self.is_managed() {
            return Err(Status::new(Code::Unimplemented, not_managed()));
        }
        request_status(method, options.metadata)?;
        let set = settings(self.method_configs(), method, request.len(), options)?;
        if let Some(status) = expired(set.deadline) {
            return Err(status);
        }
        let info = PickInfo {
            method,
            hash: options.hash,
            metadata: options.metadata,
        };
        let pick_options = PickOptions {
            deadline: set.deadline,
            wait_for_ready: set.wait_for_ready,
        };
        let mut course = set.course();
        loop {
            let next = match self.pick(&info, &pick_options) {
                Ok(pick) => course.picked(pick, |p, i| self.finish(p, i)),
                Err(e) => course.pick_error(e),
            };
            let backoff = match next {
                Next::Send(pick, handle) => {
                    let timeout = set
                        .deadline
                        .map(|d| d.saturating_duration_since(Instant::now()));
                    let sc = pick.subconn().id();
                    self.call_counts().started(sc);
                    let started = Instant::now();
                    let result = transport::unary_limited(
                        &handle,
                        method,
                        request,
                        &attempt_metadata(options.metadata, course.previous_attempts()),
                        timeout,
                        set.max_response,
                    );
                    let latency = started.elapsed();
                    self.call_counts().ended(sc, result.is_ok());
                    match course.attempt_ended(pick, result, latency, |p, i| self.finish(p, i)) {
                        After::Again => continue,
                        After::Backoff(d) => d,
                        After::Done(r) => return r,
                    }
                }
                Next::Wait => {
                    if !self.wait_for_next_picker(set.deadline) {
                        return Err(course.deadline_waiting());
                    }
                    continue;
                }
                Next::Backoff(d) => d,
                Next::Done(r) => return r,
            };
            // The retry's backoff, cut short by the deadline (or the
            // channel closing: the next pick says so).
            let until = Instant::now() + backoff;
            self.pause_until(set.deadline.map_or(until, |d| d.min(until)));
            if set.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(course.deadline_retrying());
            }
        }
    }
}

/// How a started call ends: its result, handed to the completion closure.
pub type CallResult = Result<UnaryResponse, Status>;

type OnDone = Box<dyn FnOnce(CallResult) + Send>;
type Job = Box<dyn FnOnce() + Send>;

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const CANCELLED: u8 = 2;

/// What a started call's handle and its loop-side task share.
struct CallShared {
    id: u64,
    /// RUNNING until the loop finishes the call (DONE) or the caller
    /// cancels it first (CANCELLED): whoever moves it decides the outcome.
    state: AtomicU8,
    handle: LoopHandle,
    channel: ChannelId,
}

impl CallShared {
    fn cancel(&self) -> bool {
        if self
            .state
            .compare_exchange(RUNNING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        // The loop resets the stream (RST_STREAM CANCEL) and completes the
        // call; if the loop is gone, so is the task, whose drop completes it.
        let id = self.id;
        self.handle
            .run_on(self.channel, move |core: &mut ChannelCore, env| {
                core.started_calls(Calls::default).cancel(id, env)
            });
        true
    }
}

/// A started call (`Channel::unary_start`). Dropping it does not cancel the
/// call.
#[derive(Clone)]
pub struct CallHandle(Arc<CallShared>);

impl CallHandle {
    /// The call's id on its channel (never reused): `Channel::cancel_call`
    /// takes it.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Cancels the call: true if it was still running, and its completion
    /// then gets CANCELLED (its stream, if any, is reset with
    /// RST_STREAM(CANCEL), and the policy hears of it); false if it had
    /// already finished. Any thread, never blocks.
    pub fn cancel(&self) -> bool {
        self.0.cancel()
    }
}

impl std::fmt::Debug for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallHandle({})", self.0.id)
    }
}

/// A channel's completion dispatch: one thread, started with the first
/// started call, that runs completion closures in the order calls end; and
/// the calls still running, by id, for `Channel::cancel_call`.
pub(crate) struct Dispatch {
    state: Mutex<DispatchState>,
    live: Mutex<HashMap<u64, Arc<CallShared>>>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct DispatchState {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these; a poisoned lock's data is intact.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dispatch {
    pub(crate) fn new() -> Dispatch {
        Dispatch {
            state: Mutex::new(DispatchState::default()),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Where finished calls go; starts the thread the first time.
    fn sender(&self) -> Result<Sender<Job>, Error> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(Error::Closed);
        }
        if let Some(tx) = &st.tx {
            return Ok(tx.clone());
        }
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let thread = std::thread::Builder::new()
            .name("switchyard-calls".into())
            .spawn(move || {
                // Ends once every sender is gone: the channel's and those of
                // calls still running (each completes before it lets go).
                for job in rx {
                    if let Err(p) = catch_unwind(AssertUnwindSafe(job)) {
                        eprintln!(
                            "switchyard: a call's completion panicked: {}",
                            crate::runtime::panic_message(&*p)
                        );
                    }
                }
            })
            .map_err(|e| Error::Io(format!("cannot start the completion thread: {e}")))?;
        st.tx = Some(tx.clone());
        st.thread = Some(thread);
        Ok(tx)
    }

    fn cancel(&self, id: u64) -> bool {
        let call = lock(&self.live).get(&id).cloned();
        call.is_some_and(|c| c.cancel())
    }
}

impl JoinOnDrop for Dispatch {
    /// Takes no more calls and waits until every completion has run (the
    /// loop must have completed or dropped the channel's calls, or be about
    /// to). On the dispatch thread itself (a completion closing its own
    /// channel) it does not wait: the thread ends on its own.
    fn close_and_join(&self) {
        let thread = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.tx = None;
            st.thread.take()
        };
        if let Some(t) = thread {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Completions for Dispatch {
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

/// Delivers a started call's result, exactly once: to the dispatch thread,
/// as CANCELLED if the caller cancelled first. Dropped undelivered (its
/// command never reached the loop, the loop went away), it delivers "the
/// channel is closed".
struct Completion {
    call: Arc<CallShared>,
    on_done: Option<OnDone>,
    tx: Option<Sender<Job>>,
    dispatch: Arc<Dispatch>,
}

impl Completion {
    fn deliver(mut self, result: CallResult) {
        self.send(result);
    }

    fn send(&mut self, result: CallResult) {
        let Some(on_done) = self.on_done.take() else {
            return;
        };
        let result = if self.call.state.swap(DONE, Ordering::AcqRel) == CANCELLED {
            Err(Status::new(Code::Cancelled, "call cancelled"))
        } else {
            result
        };
        lock(&self.dispatch.live).remove(&self.call.id);
        let job: Job = Box::new(move || on_done(result));
        match self.tx.take() {
            Some(tx) => {
                // The dispatch thread only stops once every sender is gone,
                // and this is one: the send fails only if it panicked away.
                if let Err(e) = tx.send(job) {
                    let _ = catch_unwind(AssertUnwindSafe(e.into_inner()));
                }
            }
            None => {
                let _ = catch_unwind(AssertUnwindSafe(job));
            }
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.send(Err(closed_status()));
    }
}

fn closed_status() -> Status {
    PickError::Closed.status()
}

/// A started call on its way to the loop.
pub(crate) struct NewCall {
    id: u64,
    method: String,
    request: Vec<u8>,
    metadata: Vec<(String, String)>,
    hash: Option<u64>,
    deadline: Option<Instant>,
    wait_for_ready: bool,
    max_response: Option<usize>,
    /// Its course so far: its retry policy and the channel's tokens.
    course: Course,
    completion: Completion,
}

impl Channel {
    /// Starts one unary call and returns at once; `on_done` hears how it
    /// ended, exactly once, on this channel's dispatch thread (one per
    /// channel; completions run one at a time, in the order calls end: a
    /// closure that blocks delays the ones after it, never a call's
    /// deadline). The call costs no thread while it waits: the event loop
    /// picks for it (a queued pick waits for the channel's next picker),
    /// drives its HTTP/2 stream, retries it as `Reader::unary` does (once
    /// transparently; by the method's retry policy, its backoff a loop
    /// timer), and ends it at its deadline.
    ///
    /// Closing the channel (or dropping it, or its `Runtime`) completes every
    /// call still running with CANCELLED "the channel is closed" and returns
    /// once every `on_done` has returned (unless called from inside one).
    ///
    /// Errors (then `on_done` never runs): `InvalidArgument` for a method
    /// or metadata that cannot be sent ([`check_method`],
    /// [`check_metadata`]) or a channel whose transports
    /// belong to the host, `Closed`, `Io` if the dispatch thread cannot start.
    pub fn unary_start(
        &self,
        method: &str,
        request: &[u8],
        options: &CallOptions<'_>,
        on_done: impl FnOnce(CallResult) + Send + 'static,
    ) -> Result<CallHandle, Error> {
        let shared = self.shared();
        if !shared.managed {
            return Err(Error::InvalidArgument(not_managed().into()));
        }
        check_method(method)
            .and_then(|()| check_metadata(options.metadata))
            .map_err(Error::InvalidArgument)?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let dispatch = self.completions(|| Arc::new(Dispatch::new()));
        let tx = dispatch.sender()?;
        // Applied here, on the caller's thread, so the method's timeout
        // counts from now; a request too large completes like any failed
        // call (below), with RESOURCE_EXHAUSTED.
        let set = settings(&self.method_configs(), method, request.len(), options);
        let (deadline, wait_for_ready, max_response, course, refused) = match set {
            Ok(s) => (
                s.deadline,
                s.wait_for_ready,
                s.max_response,
                s.course(),
                None,
            ),
            Err(status) => (
                options.deadline,
                options.wait_for_ready,
                None,
                Course::default(),
                Some(status),
            ),
        };
        let id = dispatch.next_id.fetch_add(1, Ordering::Relaxed);
        let call = Arc::new(CallShared {
            id,
            state: AtomicU8::new(RUNNING),
            handle: shared.handle.clone(),
            channel: shared.id,
        });
        lock(&dispatch.live).insert(id, call.clone());
        let new = NewCall {
            id,
            method: method.to_string(),
            request: request.to_vec(),
            metadata: options.metadata.to_vec(),
            hash: options.hash,
            deadline,
            wait_for_ready,
            max_response,
            course,
            completion: Completion {
                call: call.clone(),
                on_done: Some(Box::new(on_done)),
                tx: Some(tx),
                dispatch: dispatch.clone(),
            },
        };
        if let Some(status) = refused {
            // Nothing picked or sent: completed on the dispatch thread,
            // like any call.
            new.completion.deliver(Err(status));
            return Ok(CallHandle(call));
        }
        // Accepted from here on: if the command never runs (the channel
        // closed meanwhile, the loop is gone), dropping it completes the call.
        let channel = shared.clone();
        shared
            .handle
            .run_on(shared.id, move |core: &mut ChannelCore, env| {
                core.started_calls(Calls::default).start(new, &channel, env)
            });
        Ok(CallHandle(call))
    }

    /// Cancels the started call `id` (see [`CallHandle::cancel`]): true if
    /// it was still running, false if it already finished (or never was).
    pub fn cancel_call(&self, id: u64) -> bool {
        self.completions(|| Arc::new(Dispatch::new())).cancel(id)
    }
}

/// Wakes the loop to poll one call's stream; at most one wake-up is in
/// flight per call (the flag is cleared just before each poll).
struct CallWaker {
    handle: LoopHandle,
    channel: ChannelId,
    id: u64,
    scheduled: AtomicBool,
}

impl Wake for CallWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.handle.notify(self.channel, CALL_WAKE | self.id);
        }
    }
}

enum TaskState {
    /// Waiting for a picker newer than `tried` (the slot generation its
    /// last pick saw).
    Queued { tried: Option<u64> },
    /// An attempt in flight.
    Sending {
        pick: Pick,
        stream: CallFuture,
        started: Instant,
    },
    /// Waiting out a retry's backoff: its loop timer, `None` when the
    /// deadline comes first.
    Backoff { timer: Option<u64> },
}

/// The bit of a `CALL_TIMER` id that marks a retry's backoff timer (the
/// rest is the call's id); without it the timer is the call's deadline.
const BACKOFF_TIMER: u64 = 1 << 62;

struct Task {
    call: NewCall,
    course: Course,
    state: TaskState,
    /// The deadline's loop timer.
    timer: Option<u64>,
    waker: Arc<CallWaker>,
}

/// A channel's started calls, on the loop.
#[derive(Default)]
pub(crate) struct Calls {
    tasks: HashMap<u64, Task>,
    /// Picks for the calls; dropped whenever no call is left, so that it
    /// keeps no old picker (and its subchannels' user data) alive.
    reader: Option<Reader>,
    /// The slot generation `after_run` last saw.
    seen: u64,
    /// The started calls' counters (`crate::snapshot`), owned by the loop.
    counts: Option<ReaderCounts>,
}

impl Calls {
    pub(crate) fn start(
        &mut self,
        call: NewCall,
        shared: &Arc<ChannelShared>,
        env: &mut LoopContext,
    ) {
        let mut call = call;
        let id = call.id;
        if let Some(status) = expired(call.deadline) {
            // Completed like any call: on the completion thread, once.
            call.completion.deliver(Err(status));
            return;
        }
        let timer = call.deadline.map(|at| {
            env.timers
                .schedule(at, shared.id, TimerKey::new(CALL_TIMER, id))
        });
        let waker = Arc::new(CallWaker {
            handle: env.handle.clone(),
            channel: shared.id,
            id,
            scheduled: AtomicBool::new(false),
        });
        let task = Task {
            course: std::mem::take(&mut call.course),
            call,
            state: TaskState::Queued { tried: None },
            timer,
            waker,
        };
        self.advance(task, shared, env);
    }

    /// The call's stream made progress.
    fn wake_call(&mut self, id: u64, shared: &Arc<ChannelShared>, env: &mut LoopContext) {
        if let Some(task) = self.tasks.remove(&id) {
            task.waker.scheduled.store(false, Ordering::Release);
            self.advance(task, shared, env);
        }
    }

    /// After anything ran on the channel: a new picker re-tries the queued
    /// calls (each picker at most once per call).
    fn picker_published(&mut self, shared: &Arc<ChannelShared>, env: &mut LoopContext) {
        if self.tasks.is_empty() {
            self.reader = None;
            return;
        }
        let generation = shared.slot.generation();
        if generation == self.seen {
            return;
        }
        self.seen = generation;
        if let Some(r) = self.reader.as_mut() {
            // Let go of the old picker even if no call picks now.
            r.refresh();
        }
        let queued: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.state, TaskState::Queued { tried } if tried != Some(generation)))
            .map(|(id, _)| *id)
            .collect();
        for id in queued {
            if let Some(task) = self.tasks.remove(&id) {
                self.advance(task, shared, env);
            }
        }
    }

    /// The call's deadline passed, or its retry's backoff is over.
    fn call_timer(&mut self, id: u64, shared: &Arc<ChannelShared>, env: &mut LoopContext) {
        if id & BACKOFF_TIMER != 0 {
            let id = id & !BACKOFF_TIMER;
            if let Some(mut task) = self.tasks.remove(&id) {
                if let TaskState::Backoff { .. } = task.state {
                    task.state = TaskState::Queued { tried: None };
                }
                self.advance(task, shared, env);
            }
            return;
        }
        if let Some(mut task) = self.tasks.remove(&id) {
            task.timer = None;
            let status = match &task.state {
                TaskState::Queued { .. } => task.course.deadline_waiting(),
                TaskState::Sending { .. } => {
                    Status::new(Code::DeadlineExceeded, "deadline exceeded")
                }
                TaskState::Backoff { .. } => task.course.deadline_retrying(),
            };
            self.end(task, code::DEADLINE_EXCEEDED, status, env);
        }
    }

    /// The caller cancelled the call (its completion says CANCELLED).
    pub(crate) fn cancel(&mut self, id: u64, env: &mut LoopContext) {
        if let Some(task) = self.tasks.remove(&id) {
            let status = Status::new(Code::Cancelled, "call cancelled");
            self.end(task, code::CANCELLED, status, env);
        }
    }

    /// The channel closes: every call ends with CANCELLED "the channel is
    /// closed".
    fn close_all(&mut self, env: &mut LoopContext) {
        let ids: Vec<u64> = self.tasks.keys().copied().collect();
        for id in ids {
            if let Some(task) = self.tasks.remove(&id) {
                self.end(task, code::CANCELLED, closed_status(), env);
            }
        }
        self.reader = None;
    }

    /// Ends a call from outside its course (deadline, cancel, close): an
    /// attempt in flight is dropped, which resets its stream with
    /// RST_STREAM(CANCEL), and the policy hears the attempt failed.
    fn end(&mut self, mut task: Task, code: u32, status: Status, env: &mut LoopContext) {
        match std::mem::replace(&mut task.state, TaskState::Queued { tried: None }) {
            TaskState::Sending { pick, started, .. } => {
                self.count_ended(pick.subconn().id(), false);
                // Committed: the call is over whatever its retry policy says.
                let mut error = CallError::new(code, status.message());
                error.committed = true;
                let _ = task
                    .course
                    .attempt_ended(pick, Err(error), started.elapsed(), |p, i| {
                        self.finish(p, i)
                    });
            }
            TaskState::Backoff { timer: Some(t) } => env.timers.cancel(t),
            _ => {}
        }
        self.complete(task, Err(status), env);
    }

    fn complete(&mut self, task: Task, result: CallResult, env: &mut LoopContext) {
        if let Some(id) = task.timer {
            env.timers.cancel(id);
        }
        task.call.completion.deliver(result);
    }

    fn count_ended(&self, sc: SubConnId, ok: bool) {
        if let Some(c) = &self.counts {
            c.ended(sc, ok);
        }
    }

    fn finish(&mut self, pick: Pick, info: &DoneInfo<'_>) {
        match self.reader.as_mut() {
            Some(r) => r.finish(pick, info),
            None => pick.done(info),
        }
    }

    /// Runs the call's course as far as it goes without waiting; keeps the
    /// task if it waits (for a picker, its stream or a retry's backoff).
    fn advance(&mut self, mut task: Task, shared: &Arc<ChannelShared>, env: &mut LoopContext) {
        // Bounded: each turn either waits (returns), ends the call, or
        // moves Queued -> Sending -> Queued at most twice (one transparent
        // retry, one lost connection per picker); a policy's retry waits.
        loop {
            let mut backoff = None;
            match &mut task.state {
                TaskState::Queued { tried } => {
                    let generation = shared.slot.generation();
                    if *tried == Some(generation) {
                        break;
                    }
                    *tried = Some(generation);
                    let reader = self
                        .reader
                        .get_or_insert_with(|| Reader::new(shared.clone()));
                    let info = PickInfo {
                        method: &task.call.method,
                        hash: task.call.hash,
                        metadata: &task.call.metadata,
                    };
                    let next = match reader.try_pick(&info) {
                        Ok(pick) => task.course.picked(pick, |p, i| reader.finish(p, i)),
                        Err(e) => task.course.pick_failed(e, task.call.wait_for_ready),
                    };
                    let previous = task.course.previous_attempts();
                    match next {
                        Next::Send(pick, handle) => {
                            let timeout = task
                                .call
                                .deadline
                                .map(|d| d.saturating_duration_since(Instant::now()));
                            let sc = pick.subconn().id();
                            let counts = self
                                .counts
                                .get_or_insert_with(|| ReaderCounts::new(&shared.call_stats));
                            counts.started(sc);
                            let c = &task.call;
                            let started = Instant::now();
                            match transport::start(
                                &handle,
                                &c.method,
                                &c.request,
                                &attempt_metadata(&c.metadata, previous),
                                timeout,
                                c.max_response,
                            ) {
                                Ok(stream) => {
                                    task.state = TaskState::Sending {
                                        pick,
                                        stream,
                                        started,
                                    }
                                }
                                Err(e) => {
                                    self.count_ended(sc, false);
                                    match task.course.attempt_ended(
                                        pick,
                                        Err(e),
                                        Duration::ZERO,
                                        |p, i| self.finish(p, i),
                                    ) {
                                        After::Again => {}
                                        After::Backoff(d) => backoff = Some(d),
                                        After::Done(r) => return self.complete(task, r, env),
                                    }
                                }
                            }
                        }
                        Next::Wait => {}
                        Next::Backoff(d) => backoff = Some(d),
                        Next::Done(r) => return self.complete(task, r, env),
                    }
                }
                TaskState::Sending { stream, .. } => {
                    let waker = Waker::from(task.waker.clone());
                    let Poll::Ready(result) =
                        stream.as_mut().poll(&mut Context::from_waker(&waker))
                    else {
                        break;
                    };
                    let TaskState::Sending { pick, started, .. } =
                        std::mem::replace(&mut task.state, TaskState::Queued { tried: None })
                    else {
                        unreachable!("matched Sending above")
                    };
                    self.count_ended(pick.subconn().id(), result.is_ok());
                    let ended =
                        task.course
                            .attempt_ended(pick, result, started.elapsed(), |p, i| {
                                self.finish(p, i)
                            });
                    match ended {
                        After::Again => {}
                        After::Backoff(d) => backoff = Some(d),
                        After::Done(r) => return self.complete(task, r, env),
                    }
                }
                TaskState::Backoff { .. } => break,
            }
            if let Some(d) = backoff {
                // A backoff that outlasts the deadline waits for the
                // deadline's timer alone.
                let at = Instant::now() + d;
                let timer = task.call.deadline.is_none_or(|dl| at < dl).then(|| {
                    let key = TimerKey::new(CALL_TIMER, task.call.id | BACKOFF_TIMER);
                    env.timers.schedule(at, shared.id, key)
                });
                task.state = TaskState::Backoff { timer };
                break;
            }
        }
        self.tasks.insert(task.call.id, task);
    }
}

impl StartedCalls for Calls {
    fn active(&self) -> bool {
        !self.tasks.is_empty()
    }

    fn after_run(&mut self, shared: &Arc<ChannelShared>, cx: &mut LoopContext) {
        self.picker_published(shared, cx);
    }
    fn wake(&mut self, id: u64, shared: &Arc<ChannelShared>, cx: &mut LoopContext) {
        self.wake_call(id, shared, cx);
    }
    fn timer(&mut self, id: u64, shared: &Arc<ChannelShared>, cx: &mut LoopContext) {
        self.call_timer(id, shared, cx);
    }
    fn close(&mut self, cx: &mut LoopContext) {
        self.close_all(cx);
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::{attempt_metadata, check_metadata, check_method, Course};
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

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_max_with_jitter() {
        for _ in 0..50 {
            let mut c = Course::new(Some(policy(5)), None);
            // 100, 200, then 300 (capped), each ×U(0.8, 1.2).
            for (i, base) in [100.0, 200.0, 300.0, 300.0].into_iter().enumerate() {
                let d = c.retry_after(Code::Unavailable, false, None).unwrap();
                assert!(within(d, base), "retry {i}: {d:?} vs {base} ms");
                assert_eq!(c.previous_attempts(), i as u32 + 1);
            }
            // Five attempts made: no sixth.
            assert_eq!(c.retry_after(Code::Unavailable, false, None), None);
        }
    }

    #[test]
    fn a_pushback_is_the_delay_and_restarts_the_growth() {
        let mut c = Course::new(Some(policy(5)), None);
        let d = c.retry_after(Code::Unavailable, false, None).unwrap();
        assert!(within(d, 100.0));
        let pushed = Some(Pushback::After(Duration::from_millis(7)));
        assert_eq!(
            c.retry_after(Code::Unavailable, false, pushed),
            Some(Duration::from_millis(7))
        );
        // Counted from the initial backoff again.
        let d = c.retry_after(Code::Unavailable, false, None).unwrap();
        assert!(within(d, 100.0), "{d:?}");
        // A pushback never makes a code retryable, nor a committed call.
        assert_eq!(c.retry_after(Code::Internal, false, pushed), None);
        assert_eq!(c.retry_after(Code::Unavailable, true, pushed), None);
        assert_eq!(
            c.retry_after(Code::Unavailable, false, Some(Pushback::Stop)),
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

    #[test]
    fn a_method_is_a_uri_path_of_two_parts_or_more() {
        for ok in ["/echo.Echo/Unary", "/a/b", "/a", "/pkg.v1.S/M-x_y~z"] {
            assert_eq!(check_method(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "/", "no-slash", "/a b", "/a\u{7f}", "/a?b", "/a#b", "/a\nb", "/\u{e9}",
        ] {
            let e = check_method(bad).expect_err(bad);
            assert!(e.contains("not a gRPC path"), "{bad}: {e}");
        }
    }

    fn check(key: &str, value: &str) -> Result<(), String> {
        check_metadata(&[("x-fine".into(), "1".into()), (key.into(), value.into())])
    }

    #[test]
    fn metadata_http2_can_carry_passes() {
        for key in [
            "x-trace",
            "a.b_c-0",
            "x-trace-bin",
            "grpcx",
            "tee",
            "hostname",
        ] {
            assert_eq!(check(key, "v a/l=ue~"), Ok(()), "{key}");
        }
        assert_eq!(check_metadata(&[]), Ok(()));
        assert_eq!(check("x-empty", ""), Ok(()));
    }

    #[test]
    fn metadata_http2_cannot_carry_is_refused_naming_the_entry() {
        let cases = [
            ("connection", "connection-specific"),
            ("keep-alive", "connection-specific"),
            ("proxy-connection", "connection-specific"),
            ("transfer-encoding", "connection-specific"),
            ("upgrade", "connection-specific"),
            ("te", "connection-specific"),
            ("host", "connection-specific"),
            (":path", "pseudo-header"),
            (":authority", "pseudo-header"),
            ("grpc-timeout", "belongs to the transport"),
            ("content-type", "belongs to the transport"),
            ("user-agent", "belongs to the transport"),
            ("Upper", "not valid"),
            ("", "not valid"),
            ("sp ace", "not valid"),
            ("x\u{e9}", "not valid"),
        ];
        for (key, why) in cases {
            let e = check(key, "v").unwrap_err();
            assert!(
                e.contains(why) && e.contains(&format!("{key:?}")),
                "{key}: {e}"
            );
        }
        for value in ["line\nbreak", "tab\t", "\u{e9}", "nul\0"] {
            let e = check("x-v", value).unwrap_err();
            assert!(
                e.contains("\"x-v\"") && e.contains("printable ASCII"),
                "{e}"
            );
        }
    }
}
