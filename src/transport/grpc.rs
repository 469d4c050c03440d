//! gRPC unary calls over a [`Handle`]: request framing, response decoding,
//! and HTTP/2 -> gRPC status mapping (per PROTOCOL-HTTP2.md / statuscodes).
//!
//! The calling thread blocks without a runtime: [`block_on`] polls the call
//! future with a waker that unparks this thread. h2 wakes it when the loop
//! thread (which owns the socket) has processed frames for our stream.

use crate::status::DEADLINE_MESSAGE;
use std::future::{poll_fn, Future};
use std::num::IntErrorKind;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use h2::Reason;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, TE, USER_AGENT};
use http::{HeaderMap, Method, Request, Uri};

use super::h2conn::{Handle, HandleShared};

/// gRPC status codes used by the transport.
pub mod code {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const UNKNOWN: u32 = 2;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// gRPC's default max receive message size, for streams without a
/// configured limit (health watches, the test server).
const MAX_RECV_MESSAGE: usize = super::DEFAULT_MAX_RECV_MESSAGE_SIZE;

#[derive(Debug, Clone, Default)]
/// A successful unary call's response (grpc-status 0).
pub struct UnaryResponse {
    /// The response message (unframed).
    pub message: Vec<u8>,
    /// The response headers: the server's metadata (`grpc-status`,
    /// `grpc-message` and `grpc-encoding` are the transport's, left out as
    /// gRPC-Go does; `content-type` and `grpc-status-details-bin` stay, as
    /// in gRPC-Go and grpc-java).
    pub headers: HeaderMap,
    /// The trailers: the server's metadata, without those fields (the
    /// status is the call's outcome, not metadata).
    pub trailers: HeaderMap,
}

/// Response fields that are the transport's, not metadata: gRPC leaves
/// them out of what it hands the caller (gRPC-Go's operateHeaders, whose
/// metadata keeps `content-type` and `grpc-status-details-bin`, which
/// grpc-java's trailers keep too).
pub(crate) const TRANSPORT_FIELDS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-encoding"];

/// gRPC binary metadata (`-bin` keys) is base64, read as gRPC-Go's
/// `decodeBinHeader` reads it: padded when its length is a multiple of 4
/// (`base64.StdEncoding`), unpadded otherwise (`RawStdEncoding`), so a
/// partial padding ("AQ=") is malformed; the unused low bits of the last
/// character need not be zero (Go's decoders are not `Strict`).
const BINARY_METADATA_PADDED: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);
const BINARY_METADATA_UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// The bytes of a `-bin` metadata value, or the offset of its first bad
/// byte as gRPC-Go's base64 decoder reports it (`CorruptInputError`).
fn decode_binary_at(value: &[u8]) -> Result<Vec<u8>, usize> {
    let padded = value.len() % 4 == 0;
    let engine = if padded {
        &BINARY_METADATA_PADDED
    } else {
        &BINARY_METADATA_UNPADDED
    };
    engine.decode(value).map_err(|e| match e {
        // Padding ends a padded value: Go reports what follows it.
        base64::DecodeError::InvalidByte(at, b'=') if padded => {
            let end = at + value[at..].iter().take_while(|c| **c == b'=').count();
            if end % 4 == 0 && end < value.len() {
                end
            } else {
                at
            }
        }
        base64::DecodeError::InvalidByte(at, _)
        | base64::DecodeError::InvalidLastSymbol { offset: at, .. } => at,
        // A lone last character (Go: the quantum it starts).
        base64::DecodeError::InvalidLength(_) => value.len().saturating_sub(1),
        // Padding where none may be: Go stops at its first '='.
        base64::DecodeError::InvalidPadding => {
            value.iter().position(|c| *c == b'=').unwrap_or(value.len())
        }
    })
}

/// The bytes of a `-bin` metadata value, if it is base64.
pub(crate) fn decode_binary(value: &[u8]) -> Option<Vec<u8>> {
    decode_binary_at(value).ok()
}

/// A response's `-bin` fields must be base64: one that is not fails the
/// call INTERNAL, whatever its status said (gRPC-Go's operateHeaders:
/// "transport: malformed ...").
fn check_binary_metadata(fields: &HeaderMap) -> Result<(), CallError> {
    for (name, value) in fields {
        if !name.as_str().ends_with("-bin") {
            continue;
        }
        if let Err(at) = decode_binary_at(value.as_bytes()) {
            // gRPC-Go's words (`decodeBinHeader`'s base64 error).
            return Err(CallError::new(
                code::INTERNAL,
                format!("transport: malformed {name}: illegal base64 data at input byte {at}"),
            ));
        }
    }
    Ok(())
}

/// The trailer that carries a per-call ORCA load report (decoded by
/// `super::orca`, which names it `TRAILER`).
pub(crate) const LOAD_REPORT_TRAILER: &str = "endpoint-load-metrics-bin";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// gRPC status code.
    pub code: u32,
    pub message: String,
    /// The server never processed the call (REFUSED_STREAM, rejected by
    /// GOAWAY, or it never left this client): safe to retry elsewhere.
    pub transparent_retry_ok: bool,
    /// It never left this client (the stream was never handed to HTTP/2):
    /// gRFC A6 retries such a call transparently as often as it takes,
    /// where a call the server saw but never processed gets one retry.
    pub never_sent: bool,
    /// The peer's GOAWAY refused it (its stream was above the GOAWAY's
    /// last-stream-id): sent, but the server says it never processed it,
    /// and its connection takes no new calls. Retried transparently as
    /// often as a call that never left this client (see `never_sent`):
    /// h2 may write the HEADERS of a stream opened just before the
    /// client read a graceful GOAWAY after its ack of the server's PING,
    /// so a server's two-phase shutdown refuses streams gRPC's transports
    /// would have had processed, and during a rolling restart the one
    /// retry gRFC A6 allows can be refused again.
    pub refused_by_goaway: bool,
    /// The ORCA `endpoint-load-metrics-bin` value the server sent with its
    /// error status, if any: a failed call's load report counts too (its
    /// `eps` is what A58's error penalty weighs).
    pub load_report: Option<HeaderValue>,
    /// The server sent its response headers before this error (not a
    /// trailers-only answer): gRFC A6 calls the RPC committed, and a retry
    /// policy no longer applies to it.
    pub committed: bool,
    /// The server's `grpc-retry-pushback-ms` with this error, if it sent one.
    pub pushback: Option<Pushback>,
    /// What the server sent with this error besides its code and message
    /// (boxed: most errors have none, and every call result carries this).
    pub server: Option<Box<ServerSent>>,
    /// The server's own status was OK: the call fails (`code`, INTERNAL:
    /// a unary answer without its message) but a retry policy decides by
    /// the server's code, as gRPC-Go's `shouldRetry` reads the stream's.
    pub server_said_ok: bool,
}

/// What a server sent with an error status besides code and message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerSent {
    /// Its `grpc-status-details-bin`, decoded.
    pub details: Option<Vec<u8>>,
    /// Its metadata (see `Status::trailers`).
    pub trailers: Vec<(String, String)>,
    /// The response headers that came before the status, if it came in
    /// trailers (see `Status::headers`).
    pub headers: Vec<(String, String)>,
}

/// What a server's `grpc-retry-pushback-ms` trailer says (gRFC A6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Retry (if the policy allows) after exactly this long.
    After(Duration),
    /// Do not retry: a negative or unreadable value, or more than one.
    Stop,
}

impl Pushback {
    /// The pushback in `trailers`, if any: one value, a non-negative decimal
    /// integer of milliseconds (a sign is allowed, as gRPC-Go's
    /// `strconv.Atoi` allows it) that fits gRFC A6's "signed 32-bit
    /// integer" (grpc-java's `Integer.valueOf`): a larger one is
    /// unparseable, so no retry, not a wait of weeks (gRPC-Go reads 64 bits).
    pub(crate) fn from_trailers(trailers: &HeaderMap) -> Option<Pushback> {
        let mut values = trailers.get_all("grpc-retry-pushback-ms").iter();
        let first = values.next()?;
        if values.next().is_some() {
            return Some(Pushback::Stop);
        }
        let ms = first.to_str().ok().and_then(|s| s.parse::<i32>().ok());
        Some(match ms.and_then(|ms| u64::try_from(ms).ok()) {
            Some(ms) => Pushback::After(Duration::from_millis(ms)),
            None => Pushback::Stop,
        })
    }
}

impl CallError {
    pub(crate) fn new(code: u32, message: impl Into<String>) -> Self {
        CallError {
            code,
            message: message.into(),
            transparent_retry_ok: false,
            never_sent: false,
            refused_by_goaway: false,
            load_report: None,
            committed: false,
            pushback: None,
            server: None,
            server_said_ok: false,
        }
    }

    /// The code a retry or hedging policy decides by: the server's (`None`
    /// for a number gRPC does not define, which no policy can name: gRPC-Go
    /// keeps such a code as it came, so none retries it).
    pub(crate) fn retry_code(&self) -> Option<crate::status::Code> {
        if self.server_said_ok {
            return Some(crate::status::Code::Ok);
        }
        crate::status::Code::from_u32(self.code)
    }

    /// Keeps what the server's trailers (or trailers-only headers) that
    /// came with this error say to the policy (its load report) and to the
    /// retry policy (its pushback).
    pub(crate) fn with_trailers(mut self, trailers: &HeaderMap) -> Self {
        // Exactly one report, or none: several are ignored, as on an OK
        // answer (gRPC-Go's `ToLoadReport`: "multiple orca load reports").
        let mut reports = trailers.get_all(LOAD_REPORT_TRAILER).iter();
        self.load_report = match (reports.next(), reports.next()) {
            (Some(one), None) => Some(one.clone()),
            _ => None,
        };
        self.pushback = Pushback::from_trailers(trailers);
        if !trailers.contains_key("grpc-status") {
            // Not the server's status (a proxy's page, a broken answer):
            // nothing of it is the status's metadata.
            return self;
        }
        let details = trailers
            .get("grpc-status-details-bin")
            .and_then(|v| decode_binary(v.as_bytes()));
        let metadata = metadata_list(trailers);
        if details.is_some() || !metadata.is_empty() {
            let server = self.server.get_or_insert_with(Default::default);
            server.details = details;
            server.trailers = metadata;
        }
        self
    }

    /// Keeps the response headers that came before this error's trailers
    /// (gRPC's initial metadata, which a failed call still has).
    pub(crate) fn with_headers(mut self, headers: &HeaderMap) -> Self {
        let metadata = metadata_list(headers);
        if !metadata.is_empty() {
            self.server.get_or_insert_with(Default::default).headers = metadata;
        }
        self
    }

    /// This error came after the server's response headers.
    fn committed(mut self) -> Self {
        self.committed = true;
        self
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "grpc status {}: {}", self.code, self.message)
    }
}

impl std::error::Error for CallError {}

/// A started unary call: poll it to completion (it resets its stream with
/// CANCEL when dropped before that).
pub type CallFuture = Pin<Box<dyn Future<Output = Result<UnaryResponse, CallError>> + Send>>;

/// Performs one blocking unary call. `method` is the path, "/pkg.Svc/M".
/// Metadata keys must be lowercase; reserved headers are skipped.
pub fn unary(
    handle: &Handle,
    method: &str,
    request: &[u8],
    metadata: &[(String, String)],
    timeout: Option<Duration>,
) -> Result<UnaryResponse, CallError> {
    unary_limited(handle, method, request, metadata, timeout, None)
}

/// [`unary`] with a response limit of its own (a method config's
/// `maxResponseMessageBytes`): the smaller of it and the connection's
/// applies.
pub(crate) fn unary_limited(
    handle: &Handle,
    method: &str,
    request: &[u8],
    metadata: &[(String, String)],
    timeout: Option<Duration>,
    max_response: Option<usize>,
) -> Result<UnaryResponse, CallError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let req = unary_request(&handle.shared, method, metadata, timeout)?;
    let body = request_body(request)?;
    let _inflight = Inflight::enter(&handle.shared);
    // Pinned on this stack (`start` boxes it): no allocation per call.
    // Each call gets its own SendRequest clone: poll_ready state is per clone.
    let call = call(
        handle.send.clone(),
        &handle.shared,
        req,
        body,
        max_response,
        deadline,
        None,
    );
    match block_on(call, deadline) {
        Some(r) => r,
        // Dropping the call future resets the stream with CANCEL.
        None => Err(CallError::new(code::DEADLINE_EXCEEDED, DEADLINE_MESSAGE)),
    }
}

/// Starts one unary call on `handle` without waiting: the returned future
/// does the work whoever polls it (a blocked RPC thread, or the event loop
/// for started calls). It knows nothing of the deadline beyond sending
/// grpc-timeout: its poller ends it at the deadline by dropping it.
/// `max_response` as for [`unary_limited`]; `headers`, if given, is set
/// when the response headers come (a hedged call commits to that attempt).
pub fn start(
    handle: &Handle,
    method: &str,
    request: &[u8],
    metadata: &[(String, String)],
    timeout: Option<Duration>,
    max_response: Option<usize>,
    headers: Option<Arc<AtomicBool>>,
) -> Result<CallFuture, CallError> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let req = unary_request(&handle.shared, method, metadata, timeout)?;
    let body = request_body(request)?;
    let inflight = Inflight::enter(&handle.shared);
    // Each call gets its own SendRequest clone: poll_ready state is per clone.
    let send = handle.send.clone();
    let shared = handle.shared.clone();
    Ok(Box::pin(async move {
        let _inflight = inflight;
        call(send, &shared, req, body, max_response, deadline, headers).await
    }))
}

async fn call(
    mut send: h2::client::SendRequest<Bytes>,
    shared: &HandleShared,
    req: Request<()>,
    body: Bytes,
    max_response: Option<usize>,
    deadline: Option<Instant>,
    headers: Option<Arc<AtomicBool>>,
) -> Result<UnaryResponse, CallError> {
    // A GOAWAY or I/O error means the connection is going away. Say so now:
    // the loop may not have noticed yet, and a transparent retry must not
    // come back here.
    let fail = |e: h2::Error, opened: bool| {
        if e.is_go_away() || e.is_io() {
            shared.mark_closing();
        }
        if shared.is_cancelled() {
            return CallError::new(code::CANCELLED, crate::status::CLOSED_MESSAGE);
        }
        let remote_cancel = e.is_remote() && e.reason() == Some(Reason::CANCEL);
        let mut error = h2_error(&e, opened);
        if let Some(goaway) = shared
            .goaway
            .get()
            .filter(|_| error.code == code::UNAVAILABLE)
        {
            // Cut off by a connection the server had sent GOAWAY on: say so,
            // as gRPC-Go does.
            error.message = format!("{}; received prior goaway: {goaway}", error.message);
        }
        past_deadline(error, remote_cancel, deadline, Instant::now())
    };
    // Errors before the stream exists mean the request never left us.
    poll_fn(|cx| send.poll_ready(cx))
        .await
        .map_err(|e| fail(e, false))?;
    if let Some(max) = send.peer_max_header_list_size() {
        check_header_list_size(&req, max)?;
    }
    let (resp, mut stream) = send.send_request(req, false).map_err(|e| fail(e, false))?;
    // The server may answer (trailers-only: UNIMPLEMENTED, PERMISSION_DENIED,
    // a rate limit) and close the stream before reading the body, so that
    // sending it fails ("inactive stream"). Its answer is the call's real
    // outcome, so the send error is not: a stream that cannot take data is
    // closed, and the response (or the reset / connection error that closed
    // it, which says more than "inactive stream") is what the call reports.
    #[cfg(test)]
    tests::pause_before_body();
    let _ = stream.send_data(body, true);
    let resp = resp.await.map_err(|e| fail(e, true))?;
    let (parts, body) = resp.into_parts();
    // HEADERS that ended the stream are a trailers-only answer, even
    // without a grpc-status: no response headers came, nothing is
    // committed (gRPC-Go's `TrailersOnly()`, which `shouldRetry` asks).
    let trailers_only = body.is_end_stream();
    if let Err(e) = unary_head(&parts, trailers_only) {
        if trailers_only {
            answered(&mut stream);
        } else if !is_grpc_response(&parts) {
            return Err(with_non_grpc_data(e, body, &fail).await);
        }
        return Err(e);
    }
    if trailers_only {
        return unary_rest(parts, body, &mut stream, shared, max_response, &fail).await;
    }
    // Response headers: a hedged call is committed to this attempt.
    if let Some(h) = headers {
        h.store(true, Ordering::Release);
    }
    // Response headers came: whatever fails from here, the call is
    // committed (gRFC A6).
    unary_rest(parts, body, &mut stream, shared, max_response, &fail)
        .await
        .map_err(CallError::committed)
}

/// Upstream h2 keeps no record of the server's SETTINGS_MAX_HEADER_LIST_SIZE;
/// the vendored h2 does (`peer_max_header_list_size`, patch 6 in
/// `vendor/h2/PATCHED.md`), as an inherent method, which method resolution
/// takes over this trait's. So this workspace's builds check requests
/// against it, and the crate built as published (against upstream h2, as
/// `cargo package` verifies it) compiles and sends them unchecked, as
/// `h2conn`'s `HangUp` does for patch 5.
#[allow(dead_code)]
trait PeerLimits {
    fn peer_max_header_list_size(&self) -> Option<u32> {
        None
    }
}
impl PeerLimits for h2::client::SendRequest<Bytes> {}

/// INTERNAL, never sent, for a request whose header list is larger than
/// the server's SETTINGS_MAX_HEADER_LIST_SIZE (`max`), counted as RFC 9113
/// §6.5.2 counts it (name + value + 32 per field, pseudo-headers too) and
/// refused in gRPC-Go's words (`checkForHeaderListSize`): sent, the server
/// would only answer 431.
fn check_header_list_size(req: &Request<()>, max: u32) -> Result<(), CallError> {
    let field = |name: usize, value: usize| (name + value + 32) as u64;
    let uri = req.uri();
    let scheme = uri.scheme_str().unwrap_or("http");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or("", |a| a.as_str());
    let pseudo = field(":method".len(), req.method().as_str().len())
        + field(":scheme".len(), scheme.len())
        + field(":path".len(), path.len())
        + field(":authority".len(), authority.len());
    let size = req.headers().iter().fold(pseudo, |sum, (name, value)| {
        sum + field(name.as_str().len(), value.len())
    });
    if size > u64::from(max) {
        return Err(CallError {
            never_sent: true,
            ..CallError::new(
                code::INTERNAL,
                format!("header list size to send violates the maximum size ({max} bytes) set by server"),
            )
        });
    }
    Ok(())
}

/// How much of a non-gRPC answer's body its error quotes (gRPC-Go's
/// `nonGRPCDataMaxLen`).
const NON_GRPC_DATA_MAX: usize = 1024;

/// A non-gRPC answer's error (`e`, from its status and content-type) with
/// the start of its body, as gRPC-Go reports it: up to 1 KiB, read until
/// that much came or the stream ended, quoted after `\ndata: ` (a proxy's
/// error page says what went wrong). A reset by the server or a lost
/// connection meanwhile is the outcome instead, as in gRPC-Go; h2's own
/// reset of the answer (a second HEADERS frame that does not end it, which
/// gRPC-Go and grpc-java ignore in a non-gRPC answer) leaves the HTTP
/// status's error with what came before.
async fn with_non_grpc_data(
    mut e: CallError,
    mut body: h2::RecvStream,
    fail: &impl Fn(h2::Error, bool) -> CallError,
) -> CallError {
    let mut data = Vec::new();
    while data.len() < NON_GRPC_DATA_MAX {
        match poll_fn(|cx| body.poll_data(cx)).await {
            Some(Ok(chunk)) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                let room = NON_GRPC_DATA_MAX - data.len();
                data.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Some(Err(err)) if err.is_reset() && !err.is_remote() => break,
            Some(Err(err)) => return fail(err, true),
            // The stream ended (by DATA or by trailers).
            None => break,
        }
    }
    e.message = format!("{}\ndata: {}", e.message, go_quoted(&data));
    e
}

/// The server's answer is complete: what of the request it has not read
/// is never sent. A server may answer before reading the whole request
/// (RFC 9113 8.1) without resetting the stream; h2 would keep the rest
/// queued for it and the stream counted against the server's concurrent
/// streams, with a few such calls blocking the connection. gRPC-Go resets
/// it NO_ERROR (`closeStream` on a stream still sending); h2 sends nothing
/// when the request was all sent. Only once the answer has been read: the
/// stream then reads as reset.
fn answered(send: &mut h2::SendStream<Bytes>) {
    send.send_reset(Reason::NO_ERROR);
}

/// A unary response past its headers: the message and the trailers.
async fn unary_rest(
    parts: http::response::Parts,
    mut body: h2::RecvStream,
    send: &mut h2::SendStream<Bytes>,
    shared: &HandleShared,
    max_response: Option<usize>,
    fail: &impl Fn(h2::Error, bool) -> CallError,
) -> Result<UnaryResponse, CallError> {
    let max = recv_limit(shared.max_recv_message_size, max_response);
    // A HEADERS frame that ended the stream has no trailers to come (its
    // missing grpc-status is UNKNOWN, below); a stream that DATA ended
    // lacks them (INTERNAL, as gRPC-Go's handleData says).
    let ended_with_headers = body.is_end_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = poll_fn(|cx| body.poll_data(cx)).await {
        let chunk = chunk.map_err(|e| fail(e, true))?;
        // Give the window back or the server stalls after 64 KiB.
        let _ = body.flow_control().release_capacity(chunk.len());
        unary_body_chunk(&mut buf, &chunk, max)?;
    }
    let trailers = poll_fn(|cx| body.poll_trailers(cx))
        .await
        .map_err(|e| fail(e, true))?;
    answered(send);
    let trailers = match trailers {
        Some(trailers) => trailers,
        // Trailers-only: the headers are the trailers (a pushback there
        // counts, as gRPC-Go's `Trailer()` holds them).
        None if ended_with_headers => parts.headers.clone(),
        // The message is read first (gRPC-Go's `recvMsg`): one cut short
        // says so before the missing trailers do.
        None if ends_mid_message(&buf) => return Err(unexpected_eof()),
        None => return Err(no_trailers()),
    };
    let encoding = Encoding::of(&parts.headers);
    let message = unary_message(buf, parts.status, encoding, &trailers, max).map_err(|e| {
        let e = e.with_trailers(&trailers);
        // Headers apart from the trailers carrying the server's status: the
        // call's initial metadata.
        if ended_with_headers || !trailers.contains_key("grpc-status") {
            e
        } else {
            e.with_headers(&parts.headers)
        }
    })?;
    Ok(UnaryResponse {
        message,
        headers: without_transport_fields(parts.headers),
        trailers: without_transport_fields(trailers),
    })
}

/// `map`'s metadata as a status carries it: without `TRANSPORT_FIELDS`,
/// keys grouped as `map` lists them.
fn metadata_list(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .filter(|(k, _)| !TRANSPORT_FIELDS.contains(&k.as_str()))
        // Outside gRPC's printable ASCII, a value still counts (gRPC-Go
        // passes it on): kept, its bytes as UTF-8 where they are.
        .map(|(k, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.to_string(), value)
        })
        .collect()
}

/// `map` without `TRANSPORT_FIELDS`, its other entries in their order:
/// keys as they first came, each key's values together (what listing
/// metadata promises). Not `HeaderMap::remove`, which moves the last key
/// into the removed one's place.
fn without_transport_fields(map: HeaderMap) -> HeaderMap {
    if !TRANSPORT_FIELDS.iter().any(|f| map.contains_key(*f)) {
        return map;
    }
    let mut out = HeaderMap::with_capacity(map.len());
    let mut name = None;
    for (first, value) in map {
        // `None`: another value of the key before.
        if let Some(n) = first {
            name = (!TRANSPORT_FIELDS.contains(&n.as_str())).then_some(n);
        }
        if let Some(n) = &name {
            out.append(n.clone(), value);
        }
    }
    out
}

// The decoding half of `call`, pure (no h2), so that it is one code path for
// calls and for the fuzzer (`crate::fuzzing::grpc_response`).

/// A unary response's head: `Err` when it already ends the call (a
/// trailers-only status, or not a gRPC response). `trailers_only`: the
/// HEADERS ended the stream. Only then is a grpc-status there the call's:
/// response headers that do not end the stream carry none (gRPC-Go's
/// operateHeaders reads it only with END_STREAM; gRPC Java strips it).
/// A response without a gRPC content-type is not gRPC's, so its HTTP
/// status decides even when it carries a grpc-status (gRPC-Go's
/// operateHeaders looks at grpc-status only once it knows the answer is
/// gRPC; a proxy's error page may carry anything), and nothing else of it
/// is read: only a gRPC answer's errors carry what its headers say to the
/// policy and the retry policy (`CallError::with_trailers`).
pub(crate) fn unary_head(
    parts: &http::response::Parts,
    trailers_only: bool,
) -> Result<(), CallError> {
    check_response_head(parts)?;
    let said = |e: CallError| e.with_trailers(&parts.headers);
    check_binary_metadata(&parts.headers).map_err(said)?;
    // Trailers-only response: the status lives in the headers.
    match grpc_status(&parts.headers).filter(|_| trailers_only) {
        Some((code::OK, _)) => Err(said(CallError {
            server_said_ok: true,
            ..CallError::new(code::INTERNAL, NO_MESSAGE)
        })),
        Some((code, message)) => Err(said(CallError::new(code, message))),
        None => Ok(()),
    }
}

/// A call's receive limit from the channel's (`channel`) and the method
/// config's (`method`): the smaller where both are set, either alone where
/// one is, else gRPC's 4 MiB (gRPC-Go's `getMaxSize`).
pub(crate) fn recv_limit(channel: Option<usize>, method: Option<usize>) -> usize {
    match (channel, method) {
        (Some(c), Some(m)) => c.min(m),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => MAX_RECV_MESSAGE,
    }
}

/// Adds one DATA chunk to a unary response's body, within the receive
/// limit `max`, which bounds each message (gRPC-Go's `recvMsg`), not the
/// body: the buffer holds at most one message within it and the next one's
/// prefix, which is enough to fail as gRPC-Go's unary receive does when a
/// second message follows (it reads it: over the limit by its prefix,
/// RESOURCE_EXHAUSTED; else a protocol violation, INTERNAL).
pub(crate) fn unary_body_chunk(
    buf: &mut BytesMut,
    chunk: &[u8],
    max: usize,
) -> Result<(), CallError> {
    let room = max.saturating_add(2 * 5).saturating_sub(buf.len());
    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    // Refuse by the length prefix, before buffering what it announces.
    let Some(first) = check_announced_len(buf, max)? else {
        return Ok(());
    };
    // A full buffer always gets here: `first <= max`, so the second
    // prefix is in it.
    if let Some(rest) = buf.get(5 + first..) {
        if check_announced_len(rest, max)?.is_some() {
            return Err(more_than_one_message());
        }
    }
    Ok(())
}

fn more_than_one_message() -> CallError {
    CallError::new(
        code::INTERNAL,
        "cardinality violation: expected <EOF> for non server-streaming RPCs, but received another message",
    )
}

/// A unary answer with OK and no message (gRPC-Go's words).
const NO_MESSAGE: &str =
    "cardinality violation: received no response message from non-server-streaming RPC";

/// A message cut short: gRPC-Go's reader meets `io.ErrUnexpectedEOF`.
fn unexpected_eof() -> CallError {
    CallError::new(code::INTERNAL, "unexpected EOF")
}

/// Whether `buf` ends inside a message (its prefix, or its bytes).
fn ends_mid_message(buf: &[u8]) -> bool {
    let mut rest = buf;
    while !rest.is_empty() {
        if rest.len() < 5 {
            return true;
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        match rest.get(5 + len..) {
            Some(next) => rest = next,
            None => return true,
        }
    }
    false
}

/// The unary call's outcome from its whole body and its trailers: the one
/// response message, or the status that failed the call. The message is
/// read first, as gRPC-Go's `recvMsg` reads it before the status: one that
/// cannot be read (truncated, a second one, compressed without a coding)
/// fails the call INTERNAL whatever the trailers say.
pub(crate) fn unary_message(
    mut buf: BytesMut,
    http: http::StatusCode,
    encoding: Encoding<'_>,
    trailers: &HeaderMap,
    max: usize,
) -> Result<Vec<u8>, CallError> {
    check_binary_metadata(trailers)?;
    let message = match take_message_in(&mut buf, max, encoding)? {
        Some(m) if buf.is_empty() => Some(m.to_vec()),
        // What follows is cut short (gRPC-Go reads on and meets the end),
        // or a whole second message.
        Some(_) if ends_mid_message(&buf) => return Err(unexpected_eof()),
        Some(_) => return Err(more_than_one_message()),
        None if buf.is_empty() => None,
        None => return Err(unexpected_eof()),
    };
    match grpc_status(trailers) {
        Some((code::OK, _)) => message.ok_or_else(|| CallError::new(code::INTERNAL, NO_MESSAGE)),
        Some((code, message)) => Err(CallError::new(code, message)),
        None => Err(missing_status(http)),
    }
}

/// A response head that is not trailers-only must have a gRPC content-type;
/// without one, its HTTP status maps to the call's code (a 200: UNKNOWN).
/// With one, the response is gRPC's whatever its HTTP status: the
/// grpc-status to come decides, as the HTTP mapping says ("if grpc-status
/// was provided, it must be used") and gRPC-Go does; only a response that
/// then ends without one takes its code from the HTTP status
/// ([`missing_status`]).
pub(crate) fn check_response_head(parts: &http::response::Parts) -> Result<(), CallError> {
    if is_grpc_response(parts) {
        return Ok(());
    }
    // gRPC-Go's words, which its tests look for.
    let content_type = match parts.headers.get(CONTENT_TYPE) {
        None => "malformed header: missing HTTP content-type".to_string(),
        Some(v) => format!(
            "transport: received unexpected content-type {:?}",
            String::from_utf8_lossy(v.as_bytes())
        ),
    };
    let status = parts.status;
    // The HTTP status leads, 200 too, as gRPC-Go words it now.
    Err(CallError::new(
        http_to_grpc(status.as_u16()),
        format!(
            "unexpected HTTP status code received from server: {} ({}); {content_type}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("unknown"),
        ),
    ))
}

/// A gRPC answer: its content-type is gRPC's (see `is_grpc_content_type`).
fn is_grpc_response(parts: &http::response::Parts) -> bool {
    parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

/// A response whose stream ended on DATA, with no trailers (gRPC-Go's
/// `handleData`: INTERNAL, where trailers without grpc-status are UNKNOWN).
pub(crate) fn no_trailers() -> CallError {
    CallError::new(
        code::INTERNAL,
        "server closed the stream without sending trailers",
    )
}

/// The status of a gRPC response that ended without a grpc-status: its
/// HTTP status mapped where that is not 200, else UNKNOWN (gRPC's HTTP
/// mapping; grpc-go and grpc-java say UNKNOWN for a 200 without one).
pub(crate) fn missing_status(http: http::StatusCode) -> CallError {
    if http == http::StatusCode::OK {
        CallError::new(
            code::UNKNOWN,
            "server closed the stream without grpc-status",
        )
    } else {
        CallError::new(
            http_to_grpc(http.as_u16()),
            format!(
                "unexpected HTTP status code received from server: {} ({}); no grpc-status",
                http.as_u16(),
                http.canonical_reason().unwrap_or("unknown"),
            ),
        )
    }
}

/// `bytes` quoted as gRPC-Go's errors quote them (`%q`): control
/// characters as `\x19`, `\n`, `\u0085`, ..., bytes that are not UTF-8
/// as `\xff`, not Rust's `\u{19}`.
pub(crate) fn go_quoted(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// `application/grpc`, alone or with a subtype (`+proto`) or parameters
/// (`;charset=...`), as gRPC-Go accepts it (`grpcutil.ContentSubtype`:
/// case-sensitive, and not `application/grpc-web`).
fn is_grpc_content_type(v: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    v.starts_with(GRPC) && matches!(v.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// (grpc-status, percent-decoded grpc-message) if a status is present.
/// A field sent twice counts by its last value, as gRPC-Go's
/// operateHeaders (each overwrites the one before) and gRPC Java read it.
pub(crate) fn grpc_status(map: &HeaderMap) -> Option<(u32, String)> {
    let raw = map.get_all("grpc-status").iter().next_back()?;
    // A signed 32-bit decimal, as gRPC-Go reads it (`strconv.ParseInt(v,
    // 10, 32)`; a negative one is a code no status has: UNKNOWN later).
    // Anything else is UNKNOWN in Go's words, whatever grpc-message says.
    let code = match std::str::from_utf8(raw.as_bytes()).map(str::parse::<i32>) {
        Ok(Ok(code)) => code as u32,
        parsed => {
            let why = match parsed {
                Ok(Err(e))
                    if matches!(
                        e.kind(),
                        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
                    ) =>
                {
                    "value out of range"
                }
                _ => "invalid syntax",
            };
            let message = format!(
                "transport: malformed grpc-status: strconv.ParseInt: parsing {}: {why}",
                go_quoted(raw.as_bytes())
            );
            return Some((code::UNKNOWN, message));
        }
    };
    let message = map
        .get_all("grpc-message")
        .iter()
        .next_back()
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    Some((code, message))
}

/// A unary call's request: [`build_request`]'s, offering the codings this
/// client inflates (`grpc-accept-encoding`, as gRPC C-core's clients offer
/// "identity, deflate, gzip"), so that a server configured to compress may.
fn unary_request(
    shared: &HandleShared,
    method: &str,
    metadata: &[(String, String)],
    timeout: Option<Duration>,
) -> Result<Request<()>, CallError> {
    build_request(
        shared,
        method,
        metadata,
        timeout,
        Some(HeaderValue::from_static("identity,deflate,gzip")),
    )
}

/// A call's request head: the call definition (pseudo-headers, `te`,
/// `content-type`, `user-agent`, `grpc-timeout`, `grpc-accept-encoding` when
/// given), then the caller's metadata, in the order PROTOCOL-HTTP2 gives
/// (`Call-Definition *Custom-Metadata`).
pub(crate) fn build_request(
    shared: &HandleShared,
    method: &str,
    metadata: &[(String, String)],
    timeout: Option<Duration>,
    accept_encoding: Option<HeaderValue>,
) -> Result<Request<()>, CallError> {
    // Out of time before it is sent: never sent, as gRPC-Go's
    // createHeaderFields fails a stream whose deadline has passed rather
    // than send "grpc-timeout: 0n".
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err(CallError::new(code::DEADLINE_EXCEEDED, DEADLINE_MESSAGE));
    }
    let uri = Uri::builder()
        .scheme(shared.scheme.clone())
        .authority(shared.authority.clone())
        .path_and_query(method)
        .build()
        .map_err(|e| CallError::new(code::INTERNAL, format!("bad method {method:?}: {e}")))?;
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .body(())
        .map_err(|e| CallError::new(code::INTERNAL, e.to_string()))?;
    let h = req.headers_mut();
    // The timeout right after the pseudo-headers (fields go out in the
    // order inserted), as PROTOCOL-HTTP2 asks.
    if let Some(t) = timeout {
        let v = HeaderValue::from_str(&encode_timeout(t)).expect("ascii");
        h.insert("grpc-timeout", v);
    }
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(TE, HeaderValue::from_static("trailers"));
    h.insert(USER_AGENT, shared.user_agent.clone());
    if let Some(v) = accept_encoding {
        h.insert("grpc-accept-encoding", v);
    }
    for (k, v) in metadata {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| CallError::new(code::INTERNAL, format!("bad metadata key {k:?}: {e}")))?;
        if is_reserved(&name) {
            continue;
        }
        // Binary values go out unpadded, as PROTOCOL-HTTP2 asks of
        // senders (and gRPC-Go's `encodeBinHeader` does); a receiver
        // takes either.
        let v = if k.ends_with("-bin") {
            v.trim_end_matches('=')
        } else {
            v
        };
        let value = HeaderValue::from_str(v)
            .map_err(|e| CallError::new(code::INTERNAL, format!("bad metadata value: {e}")))?;
        h.append(name, value);
    }
    Ok(req)
}

/// The library's part of every request's `user-agent` (PROTOCOL-HTTP2's
/// structured form, `grpc-<language>-<implementation>/<version>`, as
/// gRPC-Go's "grpc-go/1.x"), after the application's if it gave one.
pub(crate) const USER_AGENT_VALUE: &str =
    concat!("grpc-rust-switchyard/", env!("CARGO_PKG_VERSION"));

/// Headers the transport sets on a request, or a server answers with, that
/// a caller's metadata may not carry (gRPC-Go's `isReservedHeader`, with
/// `grpc-accept-encoding`, which the transport offers itself, and
/// `content-length`: the transport frames the body, and a length of the
/// caller's would make a server reset the request; C-core drops it). Other
/// `grpc-` keys (`grpc-trace-bin`, `grpc-previous-rpc-attempts`, ...) are
/// sent as given, as in gRPC-Go.
pub(crate) fn owned_by_transport(key: &str) -> bool {
    matches!(
        key,
        "content-type"
            | "content-length"
            | "user-agent"
            | "grpc-timeout"
            | "grpc-encoding"
            | "grpc-accept-encoding"
            | "grpc-message"
            | "grpc-message-type"
            | "grpc-status"
    )
}

/// What `build_request` leaves out of a caller's metadata (the call layer
/// refuses these before anything is picked; this keeps the transport's
/// own fields its own whoever calls it).
fn is_reserved(name: &HeaderName) -> bool {
    let n = name.as_str();
    owned_by_transport(n) || matches!(n, "te" | "connection")
}

/// 1-byte compressed flag (0) + u32 big-endian length + message.
/// A request's body: its one message, framed; RESOURCE_EXHAUSTED for one
/// too long for the 32-bit length prefix (as gRPC-Go).
pub(crate) fn request_body(msg: &[u8]) -> Result<Bytes, CallError> {
    check_message_len(msg.len())?;
    Ok(encode_message(msg))
}

/// RESOURCE_EXHAUSTED for a message too long for gRPC's 32-bit length
/// prefix: the calls' check before picking and the framing's.
pub(crate) fn check_message_len(len: usize) -> Result<(), CallError> {
    if len > u32::MAX as usize {
        return Err(CallError::new(
            code::RESOURCE_EXHAUSTED,
            format!("trying to send a {len}-byte message: gRPC's limit is 4 GiB"),
        ));
    }
    Ok(())
}

pub(crate) fn encode_message(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

/// Takes the first complete message off a receive buffer (a message may
/// arrive in pieces); `None` until one is complete.
pub(crate) fn take_message(buf: &mut BytesMut) -> Result<Option<Bytes>, CallError> {
    take_message_max(buf, MAX_RECV_MESSAGE)
}

/// [`take_message`] with a receive limit of `max` bytes.
pub(crate) fn take_message_max(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, CallError> {
    take_message_in(buf, max, Encoding::Identity)
}

/// [`take_message_max`] for a stream whose messages may be compressed with
/// `encoding` (its `grpc-encoding`): a message with the compressed flag is
/// inflated, its inflated size held to `max` as well.
pub(crate) fn take_message_in(
    buf: &mut BytesMut,
    max: usize,
    encoding: Encoding<'_>,
) -> Result<Option<Bytes>, CallError> {
    let Some(len) = frame_len_max(buf, max)? else {
        return Ok(None);
    };
    let frame = buf.split_to(5 + len).freeze();
    let message = frame.slice(5..);
    if frame[0] == 0 {
        return Ok(Some(message));
    }
    encoding.inflate(&message, max).map(Some)
}

/// How a response's messages are compressed: its `grpc-encoding` (gRPC's
/// compression, PROTOCOL-HTTP2 "Message-Encoding"). Unary calls offer
/// gzip and deflate (zlib), the codings gRPC C-core, Java and Go (with its
/// gzip package) know, and inflate them; health and ORCA streams offer
/// none and read identity only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding<'a> {
    /// No `grpc-encoding`, or `identity`.
    Identity,
    Gzip,
    Deflate,
    /// Anything else: a compressed message in it cannot be read.
    Other(&'a str),
}

impl<'a> Encoding<'a> {
    /// The encoding `headers` (a response's) name.
    pub(crate) fn of(headers: &'a HeaderMap) -> Encoding<'a> {
        match headers.get("grpc-encoding").map(|v| v.to_str()) {
            None => Encoding::Identity,
            Some(Ok("identity" | "")) => Encoding::Identity,
            Some(Ok("gzip")) => Encoding::Gzip,
            Some(Ok("deflate")) => Encoding::Deflate,
            Some(Ok(other)) => Encoding::Other(other),
            Some(Err(_)) => Encoding::Other("(not ASCII)"),
        }
    }

    /// A message sent with the compressed flag, inflated; gRPC-Go's codes
    /// and words (`checkRecvPayload`, `decompress`): INTERNAL for a flag
    /// without an encoding, an encoding this client cannot read or data
    /// that does not inflate; RESOURCE_EXHAUSTED past `max`.
    fn inflate(self, data: &[u8], max: usize) -> Result<Bytes, CallError> {
        use std::io::Read;
        let mut out = Vec::new();
        // One byte over the limit tells "too large" from "just fits".
        let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
        // A stream whose header does not parse fails as gRPC-Go's
        // `Decompress` (making the reader) fails; one whose data does not
        // inflate, as its read does.
        let header_ok = match self {
            Encoding::Gzip => data.len() >= 10 && data[..3] == [0x1f, 0x8b, 8],
            Encoding::Deflate => {
                data.len() >= 2
                    && data[0] & 0x0f == 8
                    && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0
            }
            Encoding::Identity | Encoding::Other(_) => true,
        };
        if !header_ok {
            let kind = if matches!(self, Encoding::Gzip) {
                "gzip"
            } else {
                "zlib"
            };
            return Err(CallError::new(
                code::INTERNAL,
                format!("grpc: failed to decompress the message: {kind}: invalid header"),
            ));
        }
        let read = match self {
            Encoding::Identity => {
                return Err(CallError::new(
                    code::INTERNAL,
                    "grpc: compressed flag set with identity or empty encoding",
                ))
            }
            Encoding::Other(name) => {
                return Err(CallError::new(
                    code::INTERNAL,
                    format!("grpc: Decompressor is not installed for grpc-encoding {name:?}"),
                ))
            }
            // Every member of a gzip stream (RFC 1952 allows a series; Go's
            // gzip reader reads them all), not the first alone.
            Encoding::Gzip => flate2::read::MultiGzDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out),
            Encoding::Deflate => flate2::read::ZlibDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out),
        };
        if let Err(e) = read {
            return Err(CallError::new(
                code::INTERNAL,
                format!("grpc: failed to read decompressed data: {e}"),
            ));
        }
        if out.len() > max {
            return Err(CallError::new(
                code::RESOURCE_EXHAUSTED,
                format!("grpc: received message after decompression larger than max {max}"),
            ));
        }
        Ok(Bytes::from(out))
    }
}

/// The length of the message at the start of `buf` once all of it is there;
/// errors for frames this client can never accept.
fn frame_len_max(buf: &[u8], max: usize) -> Result<Option<usize>, CallError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] > 1 {
        return Err(CallError::new(
            code::INTERNAL,
            format!("grpc: received unexpected payload format {}", buf[0]),
        ));
    }
    let len = check_announced_len(buf, max)?.unwrap_or_default();
    Ok((buf.len() - 5 >= len).then_some(len))
}

/// The length the message at the start of `buf` announces, once its prefix
/// is there; an error if that exceeds `max`.
fn check_announced_len(buf: &[u8], max: usize) -> Result<Option<usize>, CallError> {
    let Some(&[_, a, b, c, d]) = buf.get(..5) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > max {
        return Err(CallError::new(
            code::RESOURCE_EXHAUSTED,
            format!("grpc: received message larger than max ({len} vs. {max})"),
        ));
    }
    Ok(Some(len))
}

/// grpc-timeout: at most 8 digits plus a unit; round up so we never send a
/// shorter deadline than asked.
pub(crate) fn encode_timeout(t: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = t.as_nanos();
    for (unit, div) in [
        ("n", 1u128),
        ("u", 1_000),
        ("m", 1_000_000),
        ("S", 1_000_000_000),
        ("M", 60_000_000_000),
        ("H", 3_600_000_000_000),
    ] {
        let v = nanos.div_ceil(div);
        if v <= MAX {
            return format!("{v}{unit}");
        }
    }
    format!("{MAX}H")
}

/// grpc-message is percent-encoded UTF-8; invalid escapes pass through.
pub(crate) fn percent_decode(s: &[u8]) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// HTTP status -> gRPC code when no grpc-status was sent: gRPC's table
/// (doc/http-grpc-status-mapping.md, grpc-java's `httpStatusToGrpcCode`).
/// gRPC-Go and C-core lack its 431 row (UNKNOWN there).
pub(crate) fn http_to_grpc(status: u16) -> u32 {
    match status {
        400 | 431 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// Maps an h2 error. `opened` = the stream had been handed to h2; before
/// that the request provably never reached the server.
pub(crate) fn h2_error(e: &h2::Error, opened: bool) -> CallError {
    let (code, retry) = if e.is_reset() || (!e.is_go_away() && !e.is_io() && e.reason().is_some()) {
        match e.reason().unwrap_or(Reason::INTERNAL_ERROR) {
            Reason::REFUSED_STREAM => (code::UNAVAILABLE, true),
            Reason::CANCEL => (code::CANCELLED, false),
            Reason::ENHANCE_YOUR_CALM => (code::RESOURCE_EXHAUSTED, false),
            Reason::INADEQUATE_SECURITY => (code::PERMISSION_DENIED, false),
            // Every other code RFC 9113 defines is INTERNAL (PROTOCOL-HTTP2's
            // table); one it does not, UNKNOWN (gRPC-Go's http2ErrConvTab).
            r if u32::from(r) <= 0xd => (code::INTERNAL, false),
            _ => (code::UNKNOWN, false),
        }
    } else if e.is_go_away() {
        // Only a stream above the peer's GOAWAY's last-stream-id gets the
        // peer's GOAWAY as its error, whatever its code (h2's
        // `recv_go_away`; the streams it processed end with the connection,
        // by an I/O error): never processed, so retried elsewhere, as
        // gRPC-Go's handleGoAway does. Our own GOAWAY says nothing of that.
        (code::UNAVAILABLE, !opened || e.is_remote())
    } else {
        (code::UNAVAILABLE, !opened)
    };
    let message = match e.reason().filter(|_| e.is_reset() && e.is_remote()) {
        // gRPC-Go's words (`handleRSTStream`), with the detail
        // PROTOCOL-HTTP2's table asks for these two (grpc-java's).
        Some(r) => format!(
            "stream terminated by RST_STREAM with error code: {}{}",
            reason_name(r),
            match r {
                Reason::ENHANCE_YOUR_CALM => " (bandwidth exhausted)",
                Reason::INADEQUATE_SECURITY => {
                    " (permission denied: the protocol is not secure enough for the call)"
                }
                _ => "",
            }
        ),
        None => e
            .get_io()
            .and_then(read_error)
            .unwrap_or_else(|| e.to_string()),
    };
    CallError {
        transparent_retry_ok: retry,
        never_sent: !opened,
        refused_by_goaway: opened && e.is_go_away() && e.is_remote(),
        ..CallError::new(code, message)
    }
}

/// The connection's end as gRPC-Go's reader words it (`error reading from
/// server: EOF`, `...: connection reset by peer`), for the I/O errors h2
/// ends its streams with when the connection goes ("stream closed because
/// of a broken pipe" is h2's name for the read side's EOF); `None` for
/// other I/O errors (TLS, timeouts, our own aborts: a keepalive's), whose
/// own words say more.
fn read_error(io: &std::io::Error) -> Option<String> {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    let what = match io.kind() {
        BrokenPipe | UnexpectedEof => "EOF",
        ConnectionReset => "connection reset by peer",
        _ => return None,
    };
    Some(format!("error reading from server: {what}"))
}

/// An HTTP/2 error code's name as RFC 9113 (and gRPC-Go's `http2.ErrCode`)
/// spells it; "unknown error code 0x.." for one it does not define.
fn reason_name(r: Reason) -> String {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    let n = u32::from(r);
    match NAMES.get(n as usize) {
        Some(name) => (*name).to_string(),
        None => format!("unknown error code 0x{n:x}"),
    }
}

/// The server's RST_STREAM(CANCEL) (`remote_cancel`) once the call's
/// deadline has passed is most likely the deadline's doing: the call ends
/// DEADLINE_EXCEEDED, not CANCELLED (gRPC-Go's handleRSTStream).
fn past_deadline(
    mut error: CallError,
    remote_cancel: bool,
    deadline: Option<Instant>,
    now: Instant,
) -> CallError {
    if remote_cancel && error.code == code::CANCELLED && deadline.is_some_and(|d| now >= d) {
        error.code = code::DEADLINE_EXCEEDED;
    }
    error
}

/// Counts a call (unary, or a health Watch for its whole life) as in
/// flight on its connection while alive: keepalive without
/// `permit_without_calls` pings only while some call is.
pub(crate) struct Inflight(Arc<HandleShared>);

impl Inflight {
    pub(crate) fn enter(shared: &Arc<HandleShared>) -> Self {
        shared.inflight.fetch_add(1, Ordering::Relaxed);
        Inflight(shared.clone())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Unparker(Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on this thread until it completes or `deadline` passes
/// (`None` is returned then). Spurious unparks just cause a re-poll.
pub(crate) fn block_on<F: Future>(fut: F, deadline: Option<Instant>) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(Unparker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        match deadline {
            None => thread::park(),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                thread::park_timeout(d - now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{code, h2_error, past_deadline, without_transport_fields};
    use crate::{CallOptions, Channel, ChannelOptions, Code, Runtime, TransportConfig};
    use http::{HeaderMap, HeaderValue};
    use std::cell::Cell;
    use std::time::Duration;
    use switchyard_testserver::{Listen, ServerOptions, TestServer};

    thread_local! {
        /// How long a blocking call on this thread waits between sending
        /// the request headers and the body: room for the server's early
        /// answer to close the stream first, every time.
        static PAUSE: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }

    pub(super) fn pause_before_body() {
        let pause = PAUSE.with(Cell::get);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }

    #[test]
    fn a_pushback_is_one_non_negative_integer_of_milliseconds() {
        use super::Pushback;
        let read = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append("grpc-retry-pushback-ms", v.parse().unwrap());
            }
            Pushback::from_trailers(&h)
        };
        let after = |ms| Some(Pushback::After(Duration::from_millis(ms)));
        assert_eq!(read(&[]), None);
        assert_eq!(read(&["0"]), after(0));
        assert_eq!(read(&["250"]), after(250));
        assert_eq!(read(&["+5"]), after(5));
        assert_eq!(read(&["2147483647"]), after(2_147_483_647));
        // Past gRFC A6's signed 32-bit integer: unparseable, no retry.
        for stop in [
            &["-1"][..],
            &["x"],
            &["1.5"],
            &[""],
            &["1", "2"],
            &["2147483648"],
            &["3000000000"],
        ] {
            assert_eq!(read(stop), Some(Pushback::Stop), "{stop:?}");
        }
    }

    /// The server answers trailers-only (PERMISSION_DENIED) on the request
    /// headers, without reading the body, and h2 closes the stream before
    /// the body is sent: the call reports the server's status, not
    /// UNAVAILABLE "inactive stream".
    #[test]
    #[cfg_attr(miri, ignore = "real sockets: Miri has no network")]
    fn a_status_that_closes_the_stream_before_the_body_is_sent_is_the_outcome() {
        let server = TestServer::start(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            ServerOptions::default(),
        )
        .unwrap();
        let rt = Runtime::new().unwrap();
        let options = ChannelOptions {
            transport: Some(TransportConfig::insecure()),
            ..Default::default()
        };
        let ch = Channel::new(&rt, &format!("ipv4:{}", server.addr()), None, options).unwrap();
        let mut r = ch.reader();
        let ready = CallOptions {
            wait_for_ready: Some(true),
            ..Default::default()
        };
        r.unary("/echo.Echo/Unary", b"warm-up", &ready).unwrap();
        let md = vec![("x-respond-early".to_string(), "7".to_string())];
        let options = CallOptions {
            metadata: &md,
            ..ready
        };
        PAUSE.with(|p| p.set(Duration::from_millis(100)));
        for body in [&b"x"[..], &[7u8; 100_000][..]] {
            let e = r.unary("/echo.Echo/Unary", body, &options).unwrap_err();
            assert_eq!(
                (e.code(), e.message()),
                (Code::PermissionDenied, "answered before the body")
            );
        }
        PAUSE.with(|p| p.set(Duration::ZERO));
    }

    #[test]
    fn a_servers_cancel_after_the_deadline_is_deadline_exceeded() {
        let now = std::time::Instant::now();
        let cancel = || h2_error(&h2::Error::from(h2::Reason::CANCEL), true);
        assert_eq!(cancel().code, code::CANCELLED);
        let at = |remote, deadline| past_deadline(cancel(), remote, deadline, now).code;
        // The server's cancel at or after the deadline: the deadline's.
        assert_eq!(at(true, Some(now)), code::DEADLINE_EXCEEDED);
        assert_eq!(
            at(true, Some(now - Duration::from_millis(5))),
            code::DEADLINE_EXCEEDED
        );
        // Before it, without one, or not the server's: CANCELLED.
        assert_eq!(
            at(true, Some(now + Duration::from_millis(5))),
            code::CANCELLED
        );
        assert_eq!(at(true, None), code::CANCELLED);
        assert_eq!(at(false, Some(now)), code::CANCELLED);
        // Other codes are left alone.
        let refused = h2_error(&h2::Error::from(h2::Reason::REFUSED_STREAM), true);
        assert_eq!(
            past_deadline(refused, true, Some(now), now).code,
            code::UNAVAILABLE
        );
    }

    /// What a caller lists of a response's metadata: the transport's
    /// fields gone, the rest grouped by key in the order keys first came.
    #[test]
    fn leaving_out_the_transport_fields_keeps_the_order() {
        let mut m = HeaderMap::new();
        for (k, v) in [
            ("grpc-status", "0"),
            ("x-t", "1"),
            ("grpc-message", "m"),
            ("x-u", "2"),
            ("x-t", "3"),
            ("x-t-bin", "AQ"),
        ] {
            m.append(k, HeaderValue::from_static(v));
        }
        let listed: Vec<(String, String)> = without_transport_fields(m)
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let want = [("x-t", "1"), ("x-t", "3"), ("x-u", "2"), ("x-t-bin", "AQ")];
        assert_eq!(listed, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }
}
