//! Entry points for the fuzz targets in `fuzz/` and for the stable replay of
//! their corpora and crash regressions (`tests/fuzz_regressions.rs`): one
//! function per target, taking the fuzzer's bytes. Not API: hidden, and free
//! to change with the library.
//!
//! Each function must never panic on any input; the asserts in them are the
//! oracles (a round trip that does not come back, a pick of a subchannel that
//! was shut down, user data never released), so a failed assert is a bug
//! found, like a crash or a sanitizer report.

use crate::resolver::{builtin_plan, channel_target, Plan};
use crate::service_config::ServiceConfig;
use crate::transport::grpc::{
    self, encode_message, encode_timeout, grpc_status, percent_decode, take_message_max,
};
use crate::transport::DEFAULT_MAX_RECV_MESSAGE_SIZE;
use crate::transport::{health, health_proto};
use crate::{
    Address, Channel, ChannelOptions, ConnectivityState, DoneInfo, ExternalConnector,
    HostTransport, Pick, PickInfo, PickOptions, Reader, Runtime, RuntimeConfig, SubConn, SubConnId,
};
use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A cursor over the fuzzer's bytes. Reads past the end give zeros (and empty
/// slices), so every input decodes to something.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A length-prefixed (one byte) slice.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte());
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

// ---------------------------------------------------------------------------
// (1) service config

/// `ServiceConfig::parse` on arbitrary text: never panics; the verdict is
/// the same for the same document, and survives a JSON round trip.
pub fn service_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = config_summary(ServiceConfig::parse(Some(text)));
    assert_eq!(
        first,
        config_summary(ServiceConfig::parse(Some(text))),
        "same text, different verdict"
    );
    let Ok((policy, _)) = &first else { return };
    assert!(
        crate::policy::registry::get(policy).is_some(),
        "parsed to an unregistered policy {policy:?}"
    );
    // What was accepted means the same written back out by serde_json.
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) {
        let again = config_summary(ServiceConfig::parse(Some(&doc.to_string())));
        assert_eq!(first, again, "a JSON round trip changed the config");
    }
}

fn config_summary(c: Result<ServiceConfig, String>) -> Result<(String, Option<String>), ()> {
    match c {
        Ok(c) => Ok((c.policy.name().to_string(), c.health_check_service)),
        Err(e) => {
            assert!(!e.is_empty(), "an error must say what is wrong");
            Err(())
        }
    }
}

// ---------------------------------------------------------------------------
// (2) targets

/// Target parsing (and the built-in schemes' reading of it) on arbitrary
/// text: never panics; what it accepts is usable (addresses that parse, a
/// non-empty host) and survives being written back as a target.
pub fn target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = match channel_target(text) {
        Err(e) => return assert!(!e.is_empty(), "an error must say what is wrong"),
        Ok(None) => return assert!(text.trim().is_empty(), "{text:?} taken as manual"),
        Ok(Some(t)) => t,
    };
    // Only the built-ins: a scheme some test registered is not ours to check.
    let Some(plan) = builtin_plan(&parsed) else {
        return;
    };
    match &plan {
        Err(e) => assert!(!e.is_empty(), "an error must say what is wrong"),
        Ok(Plan::Static(list)) => {
            assert!(!list.is_empty(), "{text:?}: a static list with nothing");
            assert!(
                list.iter().all(|a| !a.is_empty()),
                "{text:?}: empty address"
            );
            if let scheme @ ("ipv4" | "ipv6") = parsed.scheme.as_str() {
                for a in list {
                    assert!(a.parse::<SocketAddr>().is_ok(), "{a:?} from {text:?}");
                }
                let again = channel_target(&format!("{scheme}:{}", list.join(",")))
                    .unwrap()
                    .unwrap();
                assert_eq!(builtin_plan(&again), Some(Ok(Plan::Static(list.clone()))));
            }
        }
        Ok(Plan::Dns {
            authority,
            host,
            port,
        }) => {
            assert!(!host.is_empty(), "{text:?}: accepted with an empty host");
            // Hosts with brackets, slashes or commas cannot be written back
            // unambiguously; the lookup rejects them anyway.
            if !host.contains(['[', ']']) && !authority.contains('/') {
                let again = if host.contains(':') {
                    format!("dns://{authority}/[{host}]:{port}")
                } else {
                    format!("dns://{authority}/{host}:{port}")
                };
                let t = channel_target(&again).unwrap().unwrap();
                assert_eq!(builtin_plan(&t), Some(plan.clone()), "{again:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (3) gRPC message framing, grpc-message, grpc-status, grpc-timeout

/// The gRPC codec's pieces on arbitrary bytes; the first byte picks which.
pub fn grpc_message(data: &[u8]) {
    let mut input = Input::new(data);
    match input.below(4) {
        0 => frames(&mut input),
        1 => percent(input.rest()),
        2 => status_headers(&mut input),
        _ => timeout(&mut input),
    }
}

/// Outcome of taking messages off a buffer until one is incomplete or bad.
#[derive(Debug, PartialEq, Eq)]
struct Framed {
    messages: Vec<Vec<u8>>,
    /// The error's code, if the stream ended in one.
    error: Option<u32>,
    left: Vec<u8>,
}

/// A receive limit from one byte: 0 (and what a short input reads past
/// its end) is gRPC's default, 1..=64 a limit of 0..=63 bytes.
fn receive_limit(b: u8) -> usize {
    match b {
        1..=64 => usize::from(b - 1),
        _ => DEFAULT_MAX_RECV_MESSAGE_SIZE,
    }
}

fn take_all(buf: &mut BytesMut, max: usize, out: &mut Framed) -> bool {
    // Each message takes at least 5 bytes: this bounds the loop.
    for _ in 0..=buf.len() / 5 + 1 {
        match take_message_max(buf, max) {
            Ok(Some(m)) => {
                assert!(m.len() <= max, "a message over the limit");
                assert_eq!(
                    encode_message(&m).len(),
                    m.len() + 5,
                    "message framing is 5 bytes"
                );
                out.messages.push(m.to_vec());
            }
            Ok(None) => return true,
            Err(e) => {
                out.error = Some(e.code);
                return false;
            }
        }
    }
    panic!("take_message made no progress");
}

/// `take_message` gives the same messages whether the bytes come at once or
/// in pieces, and gives back what `encode_message` framed.
fn frames(input: &mut Input<'_>) {
    let mut seed = input.byte();
    let max = receive_limit(input.byte());
    let data = input.rest();

    let mut whole = Framed {
        messages: Vec::new(),
        error: None,
        left: Vec::new(),
    };
    let mut buf = BytesMut::from(data);
    if take_all(&mut buf, max, &mut whole) {
        whole.left = buf.to_vec();
    }

    let mut pieces = Framed {
        messages: Vec::new(),
        error: None,
        left: Vec::new(),
    };
    let mut buf = BytesMut::new();
    let mut rest = data;
    let mut ok = true;
    while ok && !rest.is_empty() {
        seed = seed.wrapping_mul(37).wrapping_add(11);
        let (piece, tail) = rest.split_at((usize::from(seed % 17) + 1).min(rest.len()));
        rest = tail;
        buf.extend_from_slice(piece);
        ok = take_all(&mut buf, max, &mut pieces);
    }
    if ok {
        pieces.left = buf.to_vec();
    }
    assert_eq!(whole, pieces, "framing depends on how the bytes arrive");

    // Framing what came out gives back the bytes that went in.
    if whole.error.is_none() {
        let mut again: Vec<u8> = whole
            .messages
            .iter()
            .flat_map(|m| encode_message(m).to_vec())
            .collect();
        again.extend_from_slice(&whole.left);
        assert_eq!(again, data);
    }
}

/// grpc-message's percent-encoding (PROTOCOL-HTTP2): bytes outside
/// 0x20..=0x7E, and '%', as %XX.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent(data: &[u8]) {
    let decoded = percent_decode(data);
    if !data.contains(&b'%') {
        assert_eq!(decoded, String::from_utf8_lossy(data));
    }
    // Whatever a server encodes per the spec comes back as sent.
    let text = String::from_utf8_lossy(data);
    let encoded = percent_encode(&text);
    assert_eq!(percent_decode(encoded.as_bytes()), text);
}

fn status_headers(input: &mut Input<'_>) {
    let status = input.chunk();
    let message = input.chunk();
    let mut map = HeaderMap::new();
    let with_status = match HeaderValue::from_bytes(status) {
        Ok(v) if input.bool() => {
            map.insert("grpc-status", v);
            true
        }
        _ => false,
    };
    let with_message = match HeaderValue::from_bytes(message) {
        Ok(v) => {
            map.insert("grpc-message", v);
            true
        }
        Err(_) => false,
    };
    match grpc_status(&map) {
        None => assert!(!with_status),
        Some((code, text)) => {
            assert!(with_status);
            let parsed = std::str::from_utf8(status)
                .ok()
                .and_then(|s| s.parse::<i32>().ok());
            assert_eq!(code, parsed.map_or(grpc::code::UNKNOWN, |c| c as u32));
            if parsed.is_none() {
                // Malformed: gRPC-Go's words, whatever grpc-message said.
                assert!(
                    text.starts_with("transport: malformed grpc-status: "),
                    "{text}"
                );
            } else if with_message {
                assert_eq!(text, percent_decode(message));
            } else {
                assert!(text.is_empty());
            }
        }
    }
}

/// Parses a grpc-timeout value (up to 8 digits and a unit) as nanoseconds.
fn decode_timeout(s: &str) -> Option<u128> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u128 = digits.parse().ok()?;
    let per = match unit {
        'n' => 1,
        'u' => 1_000,
        'm' => 1_000_000,
        'S' => 1_000_000_000,
        'M' => 60_000_000_000,
        'H' => 3_600_000_000_000,
        _ => return None,
    };
    Some(v * per)
}

/// `encode_timeout` writes a valid grpc-timeout that is never shorter than
/// asked (up to the largest one it can write) and longer by under one unit.
fn timeout(input: &mut Input<'_>) {
    let t = Duration::new(input.u64(), input.u32() % 1_000_000_000);
    let s = encode_timeout(t);
    let nanos = decode_timeout(&s).unwrap_or_else(|| panic!("{t:?} -> invalid {s:?}"));
    let max = 99_999_999 * 3_600_000_000_000u128;
    let asked = t.as_nanos().min(max);
    assert!(nanos >= asked, "{t:?} -> {s:?} is shorter");
    let unit = decode_timeout(&format!("1{}", &s[s.len() - 1..])).expect("unit");
    assert!(nanos - asked < unit, "{t:?} -> {s:?} is too long");
}

// ---------------------------------------------------------------------------
// (4) unary responses: head, body, trailers

const NAMES: &[&str] = &[
    "content-type",
    "grpc-status",
    "grpc-message",
    "grpc-encoding",
    "grpc-status-details-bin",
    "x-custom",
];
const VALUES: &[&[u8]] = &[
    b"application/grpc",
    b"application/grpc+proto",
    b"text/html",
    b"0",
    b"1",
    b"13",
    b"16",
    b"17",
    b"4294967296",
    b"%00%ZZ%e2%98%83",
    b"",
];

/// A header map from the input: names and values from small dictionaries
/// or raw bytes (those HTTP/2 would not carry are left out).
fn header_map(input: &mut Input<'_>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for _ in 0..input.below(6) {
        let name = match input.below(8) {
            i if i < NAMES.len() => HeaderName::from_static(NAMES[i]),
            _ => match HeaderName::from_bytes(input.chunk()) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        let value = match input.below(16) {
            i if i < VALUES.len() => HeaderValue::from_bytes(VALUES[i]).ok(),
            _ => HeaderValue::from_bytes(input.chunk()).ok(),
        };
        if let Some(v) = value {
            map.append(name, v);
        }
    }
    map
}

fn response_head(input: &mut Input<'_>) -> http::response::Parts {
    let status = match input.below(4) {
        0 => 100 + input.u16() % 900,
        _ => 200,
    };
    let mut head = http::Response::new(());
    *head.status_mut() = StatusCode::from_u16(status).expect("100..=999");
    *head.headers_mut() = header_map(input);
    head.into_parts().0
}

/// DATA chunks: raw bytes, or whole gRPC frames of raw payloads.
fn body_chunks<'a>(input: &mut Input<'a>) -> Vec<Vec<u8>> {
    (0..input.below(5))
        .map(|_| match input.below(3) {
            0 => encode_message(input.chunk()).to_vec(),
            _ => input.chunk().to_vec(),
        })
        .collect()
}

/// The unary call's response decoding (`grpc::unary_head`,
/// `unary_body_chunk`, `unary_message`, as `call` runs them) on an arbitrary
/// head, body, trailers and receive limit: a response is accepted only when
/// it is exactly one message (as framed, or inflated from the head's gzip or
/// deflate) within the limit under a gRPC head and OK trailers.
pub fn grpc_response(data: &[u8]) {
    let mut input = Input::new(data);
    let head = response_head(&mut input);
    let chunks = body_chunks(&mut input);
    let trailers = header_map(&mut input);
    let max = receive_limit(input.byte());

    // Nothing after the head: its HEADERS ended the stream, and are the
    // trailers too (as `call` takes a trailers-only answer).
    let trailers_only = chunks.is_empty() && trailers.is_empty();
    let outcome = grpc::unary_head(&head, trailers_only).and_then(|()| {
        let mut buf = BytesMut::new();
        for c in &chunks {
            grpc::unary_body_chunk(&mut buf, c, max)?;
        }
        let trailers = if trailers_only {
            &head.headers
        } else {
            &trailers
        };
        let encoding = grpc::Encoding::of(&head.headers);
        grpc::unary_message(buf, head.status, encoding, trailers, max)
    });
    match outcome {
        Ok(message) => {
            assert!(message.len() <= max, "a message over the limit");
            assert!(!trailers_only, "a trailers-only answer has no message");
            assert!(matches!(grpc_status(&trailers), Some((0, _))));
            let body: Vec<u8> = chunks.concat();
            // An uncompressed message is the body itself, framed.
            if body.first() == Some(&0) {
                assert_eq!(body, encode_message(&message).to_vec());
            }
        }
        Err(e) => {
            assert_ne!(e.code, grpc::code::OK, "failed with OK: {e}");
            // Only a status the server sent may come without a message.
            let sent = grpc_status(&head.headers).or_else(|| grpc_status(&trailers));
            assert!(!e.message.is_empty() || sent.is_some(), "{e}");
        }
    }
}

// ---------------------------------------------------------------------------
// (5) health checking: grpc.health.v1 protobuf and the Watch stream

/// The health protocol on arbitrary bytes; the first byte picks the part.
pub fn health(data: &[u8]) {
    let mut input = Input::new(data);
    match input.below(3) {
        0 => {
            let bytes = input.rest();
            if let Some(service) = health_proto::decode_request(bytes) {
                let again = health_proto::decode_request(&health_proto::encode_request(&service));
                assert_eq!(again.as_deref(), Some(service.as_str()));
            }
            if let Some(status) = health_proto::decode_response(bytes) {
                let again = health_proto::decode_response(&health_proto::encode_response(status));
                assert_eq!(again, Some(status));
                let _ = health_proto::status_name(status);
            }
        }
        1 => {
            let service = String::from_utf8_lossy(input.chunk()).into_owned();
            let status = input.u32();
            assert_eq!(
                health_proto::decode_request(&health_proto::encode_request(&service)),
                Some(service)
            );
            assert_eq!(
                health_proto::decode_response(&health_proto::encode_response(status)),
                Some(status)
            );
        }
        _ => watch(&mut input),
    }
}

/// A Watch's decoding (`health::watch_head`, `next_status`, `watch_end`, as
/// `HealthWatch::poll` runs them): the statuses do not depend on how the
/// body is cut into DATA frames, and a Watch always ends in an error.
fn watch(input: &mut Input<'_>) {
    let head = response_head(input);
    let chunks = body_chunks(input);
    let trailers = if input.bool() {
        Some(header_map(input))
    } else {
        None
    };
    if health::watch_head(&head).is_err() {
        return;
    }
    let statuses = |pieces: &[&[u8]]| {
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            for _ in 0..=buf.len() / 5 + 1 {
                match health::next_status(&mut buf) {
                    Ok(Some(s)) => seen.push(Ok(s)),
                    Ok(None) => break,
                    Err(e) => {
                        seen.push(Err(e.code));
                        return seen;
                    }
                }
            }
        }
        seen
    };
    let pieces: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
    let whole = chunks.concat();
    assert_eq!(statuses(&pieces), statuses(&[whole.as_slice()]));
    let end = health::watch_end(trailers.as_ref(), StatusCode::OK);
    match &trailers {
        // Ended on DATA (gRPC-Go's handleData).
        None => assert_eq!(end.code, grpc::code::INTERNAL),
        Some(t) if grpc_status(t).is_none() => assert_eq!(end.code, grpc::code::UNKNOWN),
        Some(_) => {}
    }
}

// ---------------------------------------------------------------------------
// (6) channel / reader / pick / done / close through the public Rust API

/// The host's side of an external-connector channel: which subchannels the
/// library created and which it shut down.
#[derive(Default)]
struct Host {
    subconns: Mutex<Vec<SubConnId>>,
    shut_down: Mutex<HashSet<SubConnId>>,
}

impl HostTransport for Host {
    fn create(&self, sc: &Arc<SubConn>) {
        self.subconns.lock().unwrap().push(sc.id());
    }
    fn connect(&self, _: &Arc<SubConn>) {}
    fn shutdown(&self, sc: &Arc<SubConn>) {
        self.shut_down.lock().unwrap().insert(sc.id());
    }
}

/// Counts its releases: user data must be let go of exactly when the last
/// thing that could return it does.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The service configs the op sequences switch between.
pub const CONFIGS: &[&str] = &[
    "",
    r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#,
    r#"{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}"#,
    r#"{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":""}}"#,
    r#"{"loadBalancingPolicy":"round_robin"}"#,
];

/// The addresses op sequences draw from (never dialled: the host owns the
/// transports).
pub const ADDRESSES: &[&str] = &[
    "127.0.0.1:10001",
    "127.0.0.1:10002",
    "127.0.0.1:10003",
    "127.0.0.1:10004",
    "127.0.0.1:10005",
    "[::1]:10006",
];

const STATES: [ConnectivityState; 5] = [
    ConnectivityState::Idle,
    ConnectivityState::Connecting,
    ConnectivityState::Ready,
    ConnectivityState::TransientFailure,
    ConnectivityState::Shutdown,
];

/// One loop thread for every sequence: starting one per input would
/// dominate the run time. Seeded, so shuffles repeat.
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::with_config(RuntimeConfig {
            seed: Some(1),
            ..Default::default()
        })
        .expect("the fuzzing runtime starts")
    })
}

/// Bounds on what a sequence holds at once.
const MAX_READERS: usize = 4;
const MAX_PICKS: usize = 16;

/// Random sequences of channel operations on an external-connector channel:
/// address updates (with user data, duplicates, empty lists), subchannel
/// reports in any state, config switches, resolver errors, readers created
/// and dropped, picks of every kind finished, dropped or finished through
/// another reader, refreshes, close and drop of the channel with readers and
/// picks still out. Oracles: no panic; after the loop applied everything, a
/// pick only returns a subchannel last reported READY and not shut down;
/// every pick fails after close; all user data is released once everything
/// is dropped.
pub fn channel_ops(data: &[u8]) {
    let mut input = Input::new(data);
    let host = Arc::new(Host::default());
    let config = CONFIGS[input.below(CONFIGS.len())];
    let options = ChannelOptions {
        connector: Some(Box::new(ExternalConnector::new(host.clone()))),
        ..Default::default()
    };
    let mut channel =
        Some(Channel::new(runtime(), "", Some(config), options).expect("a valid channel"));
    let mut closed = false;
    let mut readers: Vec<Reader> = Vec::new();
    let mut picks: Vec<Pick> = Vec::new();
    // What this host last reported for each subchannel.
    let mut reported: HashMap<SubConnId, ConnectivityState> = HashMap::new();
    let released = Arc::new(AtomicUsize::new(0));
    let mut handed_out = 0usize;
    // Sent to the loop but maybe not applied yet. Picks sync first (the
    // oracle needs it); address and config changes sync at once (they
    // create the subchannels that reports name).
    let mut dirty = false;

    for _ in 0..256 {
        if input.is_empty() {
            break;
        }
        match input.below(16) {
            0 | 1 => {
                let mut list = Vec::new();
                for _ in 0..input.below(ADDRESSES.len() + 2) {
                    let mut a = Address::new(ADDRESSES[input.below(ADDRESSES.len())])
                        .with_weight(u32::from(input.byte()))
                        .with_tag(input.u16().into());
                    if input.bool() {
                        a = a.with_user_data(Arc::new(Tracked(released.clone())));
                        handed_out += 1;
                    }
                    list.push(a);
                }
                if let Some(ch) = &channel {
                    let r = ch.update_addresses(list);
                    assert_eq!(r.is_err(), closed, "update_addresses: {r:?}");
                    let _ = ch.sync();
                }
            }
            2..=4 => {
                let ids = host.subconns.lock().unwrap().clone();
                // Now and then an id the channel never had.
                let id = match ids.len() {
                    0 => SubConnId(input.u64()),
                    n => ids[input.below(n)],
                };
                let state = STATES[input.below(STATES.len())];
                if let Some(ch) = &channel {
                    let r = ch.report_subconn_state(id, state, "fuzz");
                    match state {
                        ConnectivityState::Shutdown => assert!(r.is_err()),
                        ConnectivityState::Connecting => assert_eq!(r.is_err(), closed),
                        _ => {
                            assert_eq!(r.is_err(), closed, "report: {r:?}");
                            reported.insert(id, state);
                        }
                    }
                    dirty = true;
                }
            }
            5 => {
                if let Some(ch) = &channel {
                    let r = ch.update_service_config(CONFIGS[input.below(CONFIGS.len())]);
                    assert_eq!(r.is_err(), closed, "config: {r:?}");
                    let _ = ch.sync();
                }
            }
            6 => {
                if let Some(ch) = &channel {
                    match input.below(3) {
                        0 => assert_eq!(ch.report_resolver_error("fuzz").is_err(), closed),
                        1 => assert_eq!(ch.connect().is_err(), closed),
                        _ => {
                            let _ = ch.wait_for_state_change(ch.state(), Some(Instant::now()));
                        }
                    }
                    dirty = true;
                }
            }
            7 => {
                if let Some(ch) = &channel {
                    if readers.len() < MAX_READERS {
                        readers.push(ch.reader());
                    }
                } else if !readers.is_empty() {
                    let i = input.below(readers.len());
                    drop(readers.swap_remove(i));
                }
            }
            8..=10 if !readers.is_empty() => {
                if let (true, Some(ch)) = (dirty, &channel) {
                    let _ = ch.sync();
                    dirty = false;
                }
                let synced = !closed && channel.is_some();
                let i = input.below(readers.len());
                let how = input.below(4);
                let method = ["", "/pkg.Svc/M", "/\u{0}", "x"][input.below(4)];
                let info = PickInfo {
                    method,
                    hash: input.bool().then(|| input.u64()),
                    metadata: &[],
                };
                let r = &mut readers[i];
                let result = match how {
                    0 => r.try_pick(&info),
                    1 => r.pick(
                        &info,
                        &PickOptions {
                            // Already passed: one try, no wait.
                            deadline: Some(Instant::now()),
                            wait_for_ready: input.bool(),
                        },
                    ),
                    2 => match r.try_pick_cached(None) {
                        Some((p, listed)) => {
                            assert_eq!(listed.id(), p.subconn().id());
                            Ok(p)
                        }
                        None => continue,
                    },
                    _ => {
                        match r.try_pick_ref(&info) {
                            Ok(p) => {
                                let id = p.subconn().id();
                                check_pick(id, synced, &reported, &host);
                                p.done(&DoneInfo::default());
                            }
                            Err(e) => {
                                if closed || channel.is_none() {
                                    assert_eq!(e, crate::PickError::Closed);
                                }
                            }
                        }
                        continue;
                    }
                };
                match result {
                    Ok(p) => {
                        check_pick(p.subconn().id(), synced, &reported, &host);
                        if picks.len() < MAX_PICKS {
                            picks.push(p);
                        }
                    }
                    Err(e) => {
                        if closed || channel.is_none() {
                            assert_eq!(e, crate::PickError::Closed, "pick after close");
                        }
                    }
                }
            }
            11 if !picks.is_empty() => {
                let p = picks.swap_remove(input.below(picks.len()));
                let (error, code) = [
                    (None, crate::Code::Ok),
                    (Some("UNAVAILABLE"), crate::Code::Unavailable),
                    (Some(""), crate::Code::Internal),
                ][input.below(3)];
                let load: &[(&str, f64)] = &[("cpu_utilization", 0.5), ("qps", f64::NAN)];
                let info = DoneInfo {
                    error,
                    code,
                    latency: Duration::from_nanos(input.u64()),
                    load: &load[..input.below(3)],
                };
                match input.below(4) {
                    0 => p.done(&info),
                    1 => drop(p),
                    // A reader that may or may not be the one that picked.
                    _ if !readers.is_empty() => {
                        let i = input.below(readers.len());
                        readers[i].finish(p, &info);
                    }
                    _ => p.done(&info),
                }
            }
            12 if !readers.is_empty() => {
                let i = input.below(readers.len());
                readers[i].refresh();
                let _ = readers[i].channel_state();
            }
            13 if !picks.is_empty() => {
                // Through the raw form the C ABI keeps picks in.
                let p = picks.swap_remove(input.below(picks.len()));
                let raw = p.into_raw();
                // SAFETY: `raw` came from `into_raw` just now and is turned
                // back once.
                picks.push(unsafe { Pick::from_raw(raw) });
            }
            14 => {
                if let Some(ch) = &channel {
                    ch.close();
                    closed = true;
                    assert_eq!(ch.state(), ConnectivityState::Shutdown);
                    assert!(ch.is_closed());
                }
            }
            15 => {
                // The channel goes (closing it) with readers and picks out.
                channel = None;
            }
            _ => {}
        }
    }
    drop(channel);
    drop(picks);
    drop(readers);
    // The loop lets go of closed channels' state on its own thread: wait
    // for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    for spin in 0.. {
        if released.load(Ordering::SeqCst) >= handed_out || Instant::now() >= deadline {
            break;
        }
        if spin < 1000 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(
        released.load(Ordering::SeqCst),
        handed_out,
        "user data released {} times for {} handed out",
        released.load(Ordering::SeqCst),
        handed_out
    );
}

/// After the loop applied every report (the sequence syncs after each), a
/// pick returns only a subchannel last reported READY and not shut down.
fn check_pick(
    id: SubConnId,
    synced: bool,
    reported: &HashMap<SubConnId, ConnectivityState>,
    host: &Host,
) {
    if !synced {
        return;
    }
    assert_eq!(
        reported.get(&id),
        Some(&ConnectivityState::Ready),
        "picked {id:?}, which was not reported READY"
    );
    assert!(
        !host.shut_down.lock().unwrap().contains(&id),
        "picked {id:?}, which was shut down"
    );
}
