//! Unary RPCs over the picked subchannel's HTTP/2 connection (managed
//! connector only): pick, send, feed the outcome back to the policy through
//! `done`, retry once, transparently, a call the server never processed, and
//! retry by the method's `retryPolicy` (gRFC A6: each attempt picks anew,
//! after a jittered exponential backoff or the server's pushback, within the
//! channel's `retryThrottling` tokens, never once the server has answered
//! with headers), or hedge by its `hedgingPolicy` (attempts side by side:
//! `hedged.rs`).
//!
//! Two ways in, one course: a blocking call (`Reader::unary`) picks and waits
//! on its caller's thread; a started call (`Channel::unary_start`) costs no
//! thread while it waits: the event loop picks for it (queueing it until the
//! channel publishes a new picker), polls its HTTP/2 stream with a waker that
//! schedules just that call, and ends it at its deadline with a loop timer.
//! Both hand every pick and attempt to one internal `Course` (`course.rs`),
//! which makes the pick / done / retry decisions; this file holds what a
//! call is given (options, checks, its method's settings) and the blocking
//! way, `started.rs` the loop's. A started call's completion closure runs
//! on the channel's dispatch thread (one per channel, started with the first
//! call), never on the loop: a slow closure delays the closures after it,
//! never a call's deadline or the loop.

mod course;
mod hedged;
mod started;

pub use self::started::{CallHandle, CallResult};

use self::course::{attempt_metadata, After, Course, Next};
use crate::balancer::done::DoneInfo;
use crate::balancer::picker::PickInfo;
use crate::reader::{PickOptions, Reader};
use crate::service_config::{HedgingPolicy, MethodConfigs, RetryPolicy, RetryTokens};
use crate::status::{Code, Status};
use crate::transport::grpc::go_quoted;
use crate::transport::{self, UnaryResponse};
use std::sync::Arc;
use std::time::Instant;

/// Per-call options.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallOptions<'a> {
    /// When the call gives up with DEADLINE_EXCEEDED (waiting for a pick
    /// included); `None`: no deadline.
    pub deadline: Option<Instant>,
    /// gRPC's wait-for-ready: `Some(true)` queues while the channel has no
    /// READY subchannel (through TRANSIENT_FAILURE) instead of failing fast
    /// with UNAVAILABLE; `Some(false)` fails fast. Either overrides the
    /// method's `waitForReady` in the service config, as an explicit
    /// `WaitForReady` call option does in gRPC; `None` (the default) lets
    /// the config decide, and fails fast without one.
    pub wait_for_ready: Option<bool>,
    /// Request metadata: lower-case keys, printable ASCII values (see
    /// [`check_metadata`]; a call with bad metadata fails before anything
    /// is picked or sent).
    pub metadata: &'a [(String, String)],
    /// Request hash for hashing policies. Under ring_hash with
    /// `requestHashHeader`, a call with `metadata` hashes that header's
    /// value (a random hash when it is missing, as gRPC does): this hash
    /// serves only a call with no metadata.
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

/// The header that tells a server how many attempts came before this one:
/// a call's retries set it themselves (`course`), so callers may not.
const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// Why a blocking call on the event loop's thread is refused.
const LOOP_CALL: &str = "a blocking call cannot run on the event loop thread (inside a \
     switchyard callback): it would wait for the loop; use unary_start";

/// Checks request metadata before anything is sent: keys are non-empty
/// lower-case ASCII (`[0-9a-z_.-]`), neither pseudo-headers (`:path`, ...),
/// nor connection-specific (`connection`, `keep-alive`, `proxy-connection`,
/// `transfer-encoding`, `upgrade`, `te`, `host`), nor the transport's own
/// (`content-length`, `content-type`, `user-agent`, `grpc-timeout`,
/// `grpc-encoding`, `grpc-accept-encoding`, `grpc-message`,
/// `grpc-message-type`, `grpc-status`, `grpc-previous-rpc-attempts`);
/// values are printable ASCII
/// (`-bin` values: their base64 text, padded or not; sent unpadded, as the
/// gRPC spec asks). The error says which entry and why, in gRPC-Go's words
/// where it has some. The C ABI's argument check and both Rust call paths
/// use this one function.
pub fn check_metadata(metadata: &[(String, String)]) -> Result<(), String> {
    for (key, value) in metadata {
        check_metadata_key(key)?;
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(format!(
                "header key {} contains value with non-printable ASCII characters",
                go_quoted(key.as_bytes())
            ));
        }
        if key.ends_with("-bin") && transport::grpc::decode_binary(value.as_bytes()).is_none() {
            return Err(format!(
                "metadata value for {key:?} is not base64 (a -bin key's value is its bytes in base64)"
            ));
        }
    }
    Ok(())
}

fn check_metadata_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("there is an empty key in the header".to_string());
    }
    if key.starts_with(':') {
        return Err(format!(
            "metadata key {key:?} is an HTTP/2 pseudo-header (the transport sets those)"
        ));
    }
    let charset = |b: u8| b.is_ascii_digit() || b.is_ascii_lowercase() || b"-_.".contains(&b);
    if !key.bytes().all(charset) {
        return Err(format!(
            "header key {} contains illegal characters not in [0-9a-z-_.]",
            go_quoted(key.as_bytes())
        ));
    }
    if CONNECTION_SPECIFIC.contains(&key) {
        return Err(format!(
            "metadata key {key:?} is connection-specific: HTTP/2 forbids it in a request"
        ));
    }
    if transport::grpc::owned_by_transport(key) || key == PREVIOUS_ATTEMPTS {
        return Err(format!("metadata key {key:?} belongs to the transport"));
    }
    Ok(())
}

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
/// metadata that cannot be sent, as gRPC clients fail a call whose metadata
/// they cannot send. Nothing was picked, so the policy hears nothing of it.
fn request_status(method: &str, metadata: &[(String, String)]) -> Result<(), Status> {
    check_method(method)
        .and_then(|()| check_metadata(metadata))
        .map_err(|m| Status::new(Code::Internal, m))
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
    /// The method's `hedgingPolicy` (never with a `retryPolicy`).
    hedge: Option<HedgingPolicy>,
    /// The channel's retry tokens.
    tokens: Option<Arc<RetryTokens>>,
    /// The request does not fit the retry buffer (`RETRY_BUFFER`).
    unbuffered: bool,
}

/// How much of a call's request gRPC keeps for its retries and hedges:
/// gRPC-Go's default `maxRetryRPCBufferSize` (256 KiB; C-core's
/// `grpc.per_rpc_retry_buffer_size` is as large). A request whose framed
/// message (5-byte prefix included, as gRPC-Go counts it) is larger commits
/// the call as soon as it is sent (gRFC A6: "the client's outgoing message
/// has overflowed the gRPC client library's buffer"): no retry, hedge or
/// transparent retry of a stream it went out on.
const RETRY_BUFFER: usize = 256 * 1024;

impl Settings {
    fn course(&self) -> Course {
        match &self.hedge {
            Some(h) if !self.unbuffered => Course::hedged(h.clone(), self.tokens.clone()),
            _ => Course::new(self.retry.clone(), self.tokens.clone()).unbuffered(self.unbuffered),
        }
    }
}

/// The largest request a call sends unless its method config allows more.
const DEFAULT_MAX_SEND_MESSAGE: usize = i32::MAX as usize;

/// Applies the method's config to a call of `request_len` bytes: the
/// deadline is the earlier of the caller's and now plus the `timeout`; the
/// caller's wait-for-ready, when given, stands over the config's
/// `waitForReady` (gRPC applies the config first, then the call's
/// options); a request over `maxRequestMessageBytes` (by default 2 GiB - 1,
/// as gRPC-Go's) fails with RESOURCE_EXHAUSTED before anything is picked
/// or sent (C-core's message-size filter refuses it at the call too;
/// gRPC-Go and grpc-java fail it once a subchannel was picked, so their
/// subchannel counts show it: here only the channel's do).
fn settings(
    configs: &MethodConfigs,
    retry_disabled: bool,
    method: &str,
    request_len: usize,
    options: &CallOptions<'_>,
) -> Result<Settings, Status> {
    // Before anything is picked: a message gRPC cannot frame at all.
    transport::check_message_len(request_len)
        .map_err(|e| Status::new(Code::ResourceExhausted, e.message))?;
    let tokens = configs.tokens.clone();
    let unbuffered = request_len.saturating_add(5) > RETRY_BUFFER;
    let c = configs.lookup(method);
    // The method's `maxRequestMessageBytes`, else gRPC-Go's default
    // (`defaultClientMaxSendMessageSize`, math.MaxInt32).
    let max = c
        .and_then(|c| c.max_request_message_bytes)
        .map_or(DEFAULT_MAX_SEND_MESSAGE, |m| m as usize);
    if request_len > max {
        return Err(Status::new(
            Code::ResourceExhausted,
            format!("trying to send message larger than max ({request_len} vs. {max})"),
        ));
    }
    let Some(c) = c else {
        return Ok(Settings {
            deadline: options.deadline,
            wait_for_ready: options.wait_for_ready.unwrap_or(false),
            max_response: None,
            retry: None,
            hedge: None,
            tokens,
            unbuffered,
        });
    };
    let from_config = c.timeout.and_then(|t| Instant::now().checked_add(t));
    let deadline = match (options.deadline, from_config) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(Settings {
        deadline,
        wait_for_ready: options.wait_for_ready.or(c.wait_for_ready).unwrap_or(false),
        max_response: c.max_response_message_bytes.map(|m| m as usize),
        retry: c.retry_policy.clone().filter(|_| !retry_disabled),
        hedge: c.hedging_policy.clone().filter(|_| !retry_disabled),
        tokens,
        unbuffered,
    })
}

fn not_managed() -> &'static str {
    "this channel's transports belong to the host: send on the picked subchannel yourself"
}

impl Reader {
    /// A call's settings from the method table in force, and how it picks;
    /// a deadline already passed is DEADLINE_EXCEEDED.
    fn call_settings(
        &mut self,
        method: &str,
        request_len: usize,
        options: &CallOptions<'_>,
    ) -> Result<(Settings, PickOptions), Status> {
        let retry_disabled = self.retry_disabled();
        let set = settings(
            self.method_configs(),
            retry_disabled,
            method,
            request_len,
            options,
        )?;
        if let Some(status) = expired(set.deadline) {
            return Err(status);
        }
        let pick = PickOptions {
            deadline: set.deadline,
            wait_for_ready: set.wait_for_ready,
        };
        Ok((set, pick))
    }

    /// One blocking unary call: returns the response message, headers and
    /// trailers, or the call's gRPC status. A method or metadata that cannot
    /// be sent ([`check_method`], [`check_metadata`]) fails with INTERNAL
    /// before anything is picked, and so does a call on the event loop's
    /// thread (inside a switchyard callback: `unary_start` from there).
    pub fn unary(
        &mut self,
        method: &str,
        request: &[u8],
        options: &CallOptions<'_>,
    ) -> Result<UnaryResponse, Status> {
        if !self.is_managed() {
            return Err(Status::new(Code::Unimplemented, not_managed()));
        }
        // The channel's count of whole calls (channelz's): from here, so
        // that one refused before any pick counts too, as in gRPC.
        self.call_counts().call_started();
        let result = if self.on_loop_thread() {
            // Its pick, connection and answer all wait for the loop.
            Err(Status::new(Code::Internal, LOOP_CALL))
        } else {
            self.unary_call(method, request, options)
        };
        self.call_counts().call_ended(result.is_ok());
        result
    }

    /// `unary` past its checks and counts.
    fn unary_call(
        &mut self,
        method: &str,
        request: &[u8],
        options: &CallOptions<'_>,
    ) -> Result<UnaryResponse, Status> {
        request_status(method, options.metadata)?;
        let mut generation = self.methods_generation();
        let (mut set, mut pick_options) = self.call_settings(method, request.len(), options)?;
        let info = PickInfo {
            method,
            hash: options.hash,
            metadata: options.metadata,
        };
        let mut course = set.course();
        if course.hedging() {
            return self.unary_hedged(method, request, options, &set, course);
        }
        let mut sent = false;
        loop {
            let next = match self.pick(&info, &pick_options) {
                Ok(pick) => course.picked(pick, |p, i| self.finish(p, i)),
                Err(e) => course.pick_error(e),
            };
            let backoff = match next {
                Next::Send(pick, _) if !sent && self.methods_generation() != generation => {
                    // The service config came (or changed) while the first
                    // pick waited (the channel resolving): before anything
                    // is sent the call takes its method's settings from it,
                    // as gRPC-Go's calls read them once the channel has
                    // resolved. The pick goes back unused.
                    generation = self.methods_generation();
                    self.finish(pick, &DoneInfo::OK);
                    (set, pick_options) = self.call_settings(method, request.len(), options)?;
                    course = set.course();
                    if course.hedging() {
                        return self.unary_hedged(method, request, options, &set, course);
                    }
                    continue;
                }
                Next::Send(pick, handle) => {
                    sent = true;
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
                        &attempt_metadata(options.metadata, course.sending()),
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

#[cfg(test)]
mod tests {
    use super::{check_metadata, check_method, settings, CallOptions};
    use crate::service_config::MethodConfigs;
    use crate::Code;

    #[test]
    fn requests_over_2_gib_are_refused_unless_the_method_config_allows_them() {
        let limit = i32::MAX as usize;
        let options = CallOptions::default();
        let none = MethodConfigs::default();
        let over = settings(&none, false, "/a/b", limit + 1, &options).err();
        assert_eq!(over.map(|s| s.code()), Some(Code::ResourceExhausted));
        assert!(settings(&none, false, "/a/b", limit, &options).is_ok());
        let json = r#"{"methodConfig":[{"name":[{}],"maxRequestMessageBytes":3000000000}]}"#;
        let config = crate::service_config::ServiceConfig::parse(Some(json)).unwrap();
        assert!(settings(&config.methods, false, "/a/b", limit + 1, &options).is_ok());
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
        // gRPC-Go sends every `grpc-` key but its reserved ones
        // (tracing's `grpc-trace-bin` among them).
        for key in [
            "x-trace",
            "a.b_c-0",
            "grpcx",
            "tee",
            "hostname",
            "grpc-custom",
            "grpc-retry-pushback-ms",
        ] {
            assert_eq!(check(key, "v a/l=ue~"), Ok(()), "{key}");
        }
        assert_eq!(check("grpc-trace-bin", "AAEC"), Ok(()));
        assert_eq!(check_metadata(&[]), Ok(()));
        assert_eq!(check("x-empty", ""), Ok(()));
        // -bin values are base64, padded or not.
        for good in ["AAEC", "aGk", "aGk=", ""] {
            assert_eq!(check("x-trace-bin", good), Ok(()), "{good}");
        }
        let e = check("x-trace-bin", "v a/l=ue~").unwrap_err();
        assert!(e.contains("x-trace-bin") && e.contains("not base64"), "{e}");
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
            ("content-length", "belongs to the transport"),
            ("user-agent", "belongs to the transport"),
            ("grpc-encoding", "belongs to the transport"),
            ("grpc-accept-encoding", "belongs to the transport"),
            ("grpc-status", "belongs to the transport"),
            ("grpc-previous-rpc-attempts", "belongs to the transport"),
            ("Upper", "illegal characters not in [0-9a-z-_.]"),
            ("sp ace", "illegal characters"),
            ("x\u{e9}", "illegal characters"),
        ];
        for (key, why) in cases {
            let e = check(key, "v").unwrap_err();
            assert!(
                e.contains(why) && e.contains(&format!("{key:?}")),
                "{key}: {e}"
            );
        }
        assert_eq!(
            check("", "v").unwrap_err(),
            "there is an empty key in the header"
        );
        for value in ["line\nbreak", "tab\t", "\u{e9}", "nul\0"] {
            let e = check("x-v", value).unwrap_err();
            assert!(
                e.contains("\"x-v\"") && e.contains("printable ASCII"),
                "{e}"
            );
        }
    }
}
