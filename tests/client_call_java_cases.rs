//! grpc-java's client-call tests (grpc/grpc-java 5fda0c7c:
//! core/src/test/java/io/grpc/internal/ClientCallImplTest.java,
//! GrpcUtilTest.java, MessageDeframerTest.java, MessageFramerTest.java,
//! stub/src/test/java/io/grpc/stub/ClientCallsTest.java,
//! api/src/test/java/io/grpc/StatusTest.java, MetadataTest.java) where
//! they define client-visible behaviour that the other suites do not pin:
//! gRFC A54's control-plane status restriction on picker errors and drops
//! (GrpcUtilTest.getTransportFromPickResult_*), the authority override
//! check (GrpcUtilTest.checkAuthority_*), the advertised message
//! encodings (ClientCallImplTest.advertisedEncodingsAreSent,
//! prepareHeaders_*), grpc-message decoding of 4-byte UTF-8 and invalid
//! UTF-8 (StatusTest.metadataDecode_*), binary key names
//! (MetadataTest.shortBinaryKeyName).
//!
//! Where grpc-java and gRPC-Go disagree, pinned: a wait-for-ready call waits
//! through a picker error with a restricted code (grpc-java; gRPC-Go's
//! picker wrapper fails it as a drop); switchyard advertises
//! `identity,deflate,gzip` (C-core's list; grpc-java never lists identity);
//! grpc-message bytes that are no UTF-8 decode to U+FFFD (grpc-java; gRPC-Go
//! keeps the raw bytes); a metadata key of just `-bin` is accepted (gRPC-Go
//! and C-core; grpc-java refuses it).

#[path = "common/mod.rs"]
mod common;
#[path = "common/h2_frames.rs"]
mod h2_frames;
#[path = "common/hpack.rs"]
mod hpack;
#[path = "common/scripted_h2.rs"]
mod scripted_h2;

use common::*;
use h2_frames::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::picker::{DropPicker, FailPicker};
use switchyard::ConnectivityState::*;
use switchyard::*;

const ECHO: &str = "/echo.Echo/Unary";

// ------------------------------------------------------------ fixed policy

/// What the fixed policy publishes on every resolver update.
#[derive(Clone)]
enum Publish {
    Fail(Status),
    Drop(Status),
    /// A failing picker counting its picks.
    CountedFail(Status, Arc<AtomicUsize>),
}

struct CountingFail(Status, Arc<AtomicUsize>);

impl Picker for CountingFail {
    fn pick<'a>(&'a self, _: &PickInfo<'_>, _: &mut PickLocal) -> PickResult<'a> {
        self.1.fetch_add(1, Ordering::SeqCst);
        PickResult::Fail(&self.0)
    }
}

struct FixedBuilder(String, Arc<Mutex<Publish>>);
struct FixedLb(Arc<Mutex<Publish>>);

impl Builder for FixedBuilder {
    fn name(&self) -> &str {
        &self.0
    }
    fn build(&self) -> Box<dyn Balancer> {
        Box::new(FixedLb(self.1.clone()))
    }
}

impl FixedLb {
    fn publish(&self, cc: &mut dyn ClientConn) {
        match self.0.lock().unwrap().clone() {
            Publish::Fail(s) => cc.update_state(TransientFailure, Box::new(FailPicker(s))),
            Publish::Drop(s) => cc.update_state(Ready, Box::new(DropPicker(s))),
            Publish::CountedFail(s, n) => {
                cc.update_state(TransientFailure, Box::new(CountingFail(s, n)))
            }
        }
    }
}

impl Balancer for FixedLb {
    fn update_client_conn_state(
        &mut self,
        cc: &mut dyn ClientConn,
        _: ClientConnState,
    ) -> Result<(), String> {
        self.publish(cc);
        Ok(())
    }
    fn resolver_error(&mut self, _: &mut dyn ClientConn, _: &str) {}
    fn update_subconn_state(&mut self, _: &mut dyn ClientConn, _: SubConnId, _: &SubConnState) {}
    fn exit_idle(&mut self, _: &mut dyn ClientConn) {}
    fn work(&mut self, _: &mut dyn ClientConn) {}
    fn close(&mut self, _: &mut dyn ClientConn) {}
}

/// A channel whose policy publishes `p`, under a policy name of its own.
fn fixed_channel(rt: &Runtime, name: &str, p: Publish) -> Channel {
    fixed_channel_with(rt, name, p, "")
}

/// The same, with more service config (`extra`: `,"methodConfig":[...]`).
fn fixed_channel_with(rt: &Runtime, name: &str, p: Publish, extra: &str) -> Channel {
    registry::register(Arc::new(FixedBuilder(
        name.to_string(),
        Arc::new(Mutex::new(p)),
    )));
    let config = format!(r#"{{"loadBalancingConfig":[{{"{name}":{{}}}}]{extra}}}"#);
    Channel::new(rt, "ipv4:127.0.0.1:1", Some(&config), plaintext()).unwrap()
}

fn call(ch: &Channel, wait_for_ready: bool, deadline: Duration) -> Result<UnaryResponse, Status> {
    ch.reader().unary(
        ECHO,
        b"hi",
        &CallOptions {
            deadline: Some(Instant::now() + deadline),
            wait_for_ready: Some(wait_for_ready),
            ..Default::default()
        },
    )
}

const RESTRICTED: [Code; 7] = [
    Code::InvalidArgument,
    Code::NotFound,
    Code::AlreadyExists,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::DataLoss,
];

/// GrpcUtilTest.getTransportFromPickResult_errorPickResult_failFast,
/// _noInappropriateControlPlaneStatus and _appropriateControlPlaneStatus
/// (GrpcUtil.replaceInappropriateControlPlaneStatus; gRFC A54): a
/// fail-fast call whose pick fails with a code the control plane may not
/// give fails INTERNAL, naming the original code and keeping its message;
/// an allowed code (UNAVAILABLE, RESOURCE_EXHAUSTED, PERMISSION_DENIED ...)
/// goes through as it is. gRPC-Go's picker wrapper does the same
/// ("received picker error with illegal status: ...").
#[test]
fn a54_restricted_error_pick_codes_fail_fail_fast_calls_internal() {
    let rt = Runtime::new().unwrap();
    let mut bad = Vec::new();
    for (i, code) in RESTRICTED.iter().enumerate() {
        let ch = fixed_channel(
            &rt,
            &format!("client_call_java_fail_{i}"),
            Publish::Fail(Status::new(*code, "from the control plane")),
        );
        match call(&ch, false, Duration::from_secs(5)) {
            Err(s)
                if s.code() == Code::Internal && s.message().contains("from the control plane") => {
            }
            other => bad.push(format!("{code:?}: {other:?}")),
        }
        ch.close();
    }
    for (i, code) in [
        Code::Unavailable,
        Code::ResourceExhausted,
        Code::PermissionDenied,
        Code::Unauthenticated,
        Code::Unknown,
        Code::Internal,
    ]
    .iter()
    .enumerate()
    {
        let ch = fixed_channel(
            &rt,
            &format!("client_call_java_ok_fail_{i}"),
            Publish::Fail(Status::new(*code, "allowed")),
        );
        match call(&ch, false, Duration::from_secs(5)) {
            Err(s) if s.code() == *code && s.message() == "allowed" => {}
            other => bad.push(format!("allowed {code:?}: {other:?}")),
        }
        ch.close();
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// GrpcUtilTest.getTransportFromPickResult_dropPickResult_waitForReady and
/// _failFast: a drop fails the call whatever its wait-for-ready, with the
/// status restricted as A54 asks (GrpcUtil.getTransportFromPickResult
/// passes a drop's status through replaceInappropriateControlPlaneStatus
/// too; gRPC-Go's dropError likewise).
#[test]
fn a54_restricted_drop_codes_are_internal_for_wait_for_ready_calls_too() {
    let rt = Runtime::new().unwrap();
    let mut bad = Vec::new();
    for (i, code) in RESTRICTED.iter().enumerate() {
        let ch = fixed_channel(
            &rt,
            &format!("client_call_java_drop_{i}"),
            Publish::Drop(Status::new(*code, "dropped by policy")),
        );
        for wfr in [false, true] {
            match call(&ch, wfr, Duration::from_secs(5)) {
                Err(s)
                    if s.code() == Code::Internal && s.message().contains("dropped by policy") => {}
                other => bad.push(format!("{code:?} wait_for_ready={wfr}: {other:?}")),
            }
            // The same through a started call.
            let (tx, rx) = std::sync::mpsc::channel();
            ch.unary_start(
                ECHO,
                b"hi",
                &CallOptions {
                    deadline: Some(Instant::now() + Duration::from_secs(5)),
                    wait_for_ready: Some(wfr),
                    ..Default::default()
                },
                move |r| {
                    let _ = tx.send(r);
                },
            )
            .unwrap();
            match rx.recv_timeout(Duration::from_secs(8)) {
                Ok(Err(s))
                    if s.code() == Code::Internal && s.message().contains("dropped by policy") => {}
                other => bad.push(format!("started {code:?} wait_for_ready={wfr}: {other:?}")),
            }
        }
        ch.close();
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// GrpcUtilTest.getTransportFromPickResult_errorPickResult_waitForReady: an
/// error pick leaves a wait-for-ready call waiting (null transport),
/// whatever the code, restricted ones included: it ends at its deadline,
/// DEADLINE_EXCEEDED, never INTERNAL. (gRPC-Go differs for a picker
/// error that is a status error: picker_wrapper.go treats it as a drop and
/// fails wait-for-ready calls too; switchyard's FailPicker is Java's error
/// pick / Go's plain-error pick, its DropPicker Go's status error.)
#[test]
fn a_wait_for_ready_call_waits_through_a_restricted_error_pick() {
    let rt = Runtime::new().unwrap();
    let ch = fixed_channel(
        &rt,
        "client_call_java_wfr_restricted",
        Publish::Fail(Status::new(Code::InvalidArgument, "bad config")),
    );
    let t0 = Instant::now();
    let r = call(&ch, true, Duration::from_millis(400));
    let took = t0.elapsed();
    eprintln!("wait-for-ready through a restricted error pick: {r:?}");
    assert_eq!(
        r.as_ref().err().map(|s| s.code()),
        Some(Code::DeadlineExceeded),
        "{r:?}"
    );
    assert!(took >= Duration::from_millis(350), "ended after {took:?}");
    ch.close();
}

/// GrpcUtilTest.getTransportFromPickResult_errorPickResult_failFast: a
/// fail-fast call's failed pick ends the attempt as PROCESSED (not DROPPED),
/// so the method's retryPolicy applies (RetriableStream.closed ->
/// makeRetryDecision). C-core's retry_lb_fail.cc pins the same: a pick
/// failing UNAVAILABLE "LB pick failed" under maxAttempts 2 retrying
/// UNAVAILABLE is picked twice and ends UNAVAILABLE "LB pick failed".
/// gRPC-Go too (stream.go shouldRetry: no stream, not a drop -> the retry
/// policy), for a picker error that is not a status error (a status error
/// is a drop there).
#[test]
fn a_fail_fast_pick_failure_is_retried_by_the_retry_policy() {
    let rt = Runtime::new().unwrap();
    let picks = Arc::new(AtomicUsize::new(0));
    let ch = fixed_channel_with(
        &rt,
        "client_call_java_retry_pick_fail",
        Publish::CountedFail(
            Status::new(Code::Unavailable, "LB pick failed"),
            picks.clone(),
        ),
        r#","methodConfig":[{"name":[{"service":"echo.Echo"}],"retryPolicy":{"maxAttempts":2,"initialBackoff":"0.05s","maxBackoff":"0.05s","backoffMultiplier":1.0,"retryableStatusCodes":["UNAVAILABLE"]}}]"#,
    );
    let mut bad = Vec::new();
    for started in [false, true] {
        let before = picks.load(Ordering::SeqCst);
        let r = if started {
            let (tx, rx) = std::sync::mpsc::channel();
            ch.unary_start(
                ECHO,
                b"hi",
                &CallOptions {
                    deadline: Some(Instant::now() + Duration::from_secs(5)),
                    wait_for_ready: Some(false),
                    ..Default::default()
                },
                move |r| {
                    let _ = tx.send(r);
                },
            )
            .unwrap();
            rx.recv_timeout(Duration::from_secs(8)).expect("no result")
        } else {
            call(&ch, false, Duration::from_secs(5))
        };
        let n = picks.load(Ordering::SeqCst) - before;
        match &r {
            Err(s) if s.code() == Code::Unavailable && s.message() == "LB pick failed" && n == 2 => {}
            other => bad.push(format!(
                "started={started}: {other:?} after {n} picks; grpc-java / C-core: UNAVAILABLE \"LB pick failed\" after 2 picks"
            )),
        }
    }
    ch.close();
    // Without a retry policy: one pick, no transparent retry (Java:
    // PROCESSED, not REFUSED; Go: allowTransparentRetry is only set when
    // the stream could not be created).
    let picks = Arc::new(AtomicUsize::new(0));
    let ch = fixed_channel(
        &rt,
        "client_call_java_no_retry_pick_fail",
        Publish::CountedFail(
            Status::new(Code::Unavailable, "LB pick failed"),
            picks.clone(),
        ),
    );
    let r = call(&ch, false, Duration::from_secs(5));
    let n = picks.load(Ordering::SeqCst);
    if !(matches!(&r, Err(s) if s.code() == Code::Unavailable) && n == 1) {
        bad.push(format!(
            "no retry policy: {r:?} after {n} picks; want UNAVAILABLE after 1"
        ));
    }
    ch.close();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ------------------------------------------------------------ authority

/// GrpcUtilTest.checkAuthority_*: an authority override of host[:port] or a
/// bracketed IPv6 address is taken; one with userinfo
/// (checkAuthority_userInfoNotAllowed) or not parseable
/// (checkAuthority_failsOnInvalidAuthority: "[ : : 1]") is refused up
/// front (Java: IllegalArgumentException from overrideAuthority).
#[test]
fn authority_override_is_checked_as_java_checks_it() {
    let rt = Runtime::new().unwrap();
    let mut bad = Vec::new();
    for (a, ok) in [
        ("valid:1234", true),
        ("valid", true),
        ("[::1]", true),
        ("[::1]:443", true),
        ("[ : : 1]", false),
        ("foo@valid", false),
        ("foo@valid:1234", false),
    ] {
        let r = Channel::new(
            &rt,
            "ipv4:127.0.0.1:1",
            None,
            ChannelOptions {
                authority: Some(a.to_string()),
                ..plaintext()
            },
        );
        if r.is_ok() != ok {
            bad.push(format!(
                "{a:?}: accepted={}, grpc-java accepts={ok}",
                r.is_ok()
            ));
        }
        if let Ok(ch) = r {
            ch.close();
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ------------------------------------------------------------ scripted server

fn to(rt: &Runtime, server: &scripted_h2::Server) -> Channel {
    Channel::new(rt, &format!("ipv4:{}", server.addr), None, plaintext()).unwrap()
}

/// ClientCallImplTest.advertisedEncodingsAreSent,
/// prepareHeaders_acceptedMessageEncodingsAdded,
/// prepareHeaders_ignoreIdentityEncoding and
/// prepareHeaders_noAcceptedContentEncodingsWithoutFullStreamDecompressionEnabled:
/// grpc-java advertises the message encodings it decodes in
/// `grpc-accept-encoding` ("gzip" by default), never "identity", and sends
/// no HTTP `accept-encoding`. gRPC implementations disagree on
/// "identity": gRPC-Go lists its registered compressors only ("gzip" with
/// encoding/gzip imported); C-core offers "identity,deflate,gzip".
/// switchyard offers C-core's list on purpose (README "Requests go
/// uncompressed ...", src/transport/grpc.rs unary_request): pinned here,
/// with grpc-java's other two points (gzip listed, no `accept-encoding`).
#[test]
fn grpc_accept_encoding_offers_c_cores_list_and_no_http_accept_encoding() {
    let rt = Runtime::new().unwrap();
    let server = scripted_h2::Server::start(1, |streams| {
        streams.iter().flat_map(|s| ok_answer(*s)).collect()
    });
    let ch = to(&rt, &server);
    let r = call(&ch, true, Duration::from_secs(5));
    assert!(r.is_ok(), "{r:?}");
    ch.close();
    let blocks = server.blocks.lock().unwrap().clone();
    let mut dec = hpack::Hpack::new();
    let fields = dec.decode(&blocks[0]);
    let get = |k: &str| -> Vec<String> {
        fields
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    let gae = get("grpc-accept-encoding");
    assert_eq!(gae.len(), 1, "grpc-accept-encoding: {gae:?} in {fields:?}");
    let names: Vec<&str> = gae[0].split(',').map(str::trim).collect();
    assert_eq!(names, ["identity", "deflate", "gzip"], "{gae:?}");
    assert!(get("accept-encoding").is_empty(), "{fields:?}");
}

/// StatusTest.metadataDecode_surrogate (a 4-byte UTF-8 sequence,
/// percent-encoded, is one character) and what Status.MESSAGE_KEY's
/// parseBytes does with bytes that are not UTF-8 (`new String(bytes,
/// UTF_8)`: each bad sequence becomes U+FFFD). gRPC-Go keeps the raw
/// bytes in its Go string (not valid UTF-8); a Rust `&str` cannot, so the
/// Java reading is the one to compare with.
#[test]
fn grpc_message_decodes_utf8_as_java() {
    let rt = Runtime::new().unwrap();
    let mut bad = Vec::new();
    for (wire, want) in [
        (&b"%F0%90%80%81"[..], "\u{10001}"),
        (&b"%C3"[..], "\u{FFFD}"),
        (&b"a%FFb"[..], "a\u{FFFD}b"),
        (&b"%E2%82"[..], "\u{FFFD}"),
    ] {
        let wire: &'static [u8] = wire;
        let server = scripted_h2::Server::start(1, move |streams| {
            streams
                .iter()
                .flat_map(|s| {
                    headers(
                        *s,
                        &[
                            (":status", b"200"),
                            ("content-type", b"application/grpc"),
                            ("grpc-status", b"5"),
                            ("grpc-message", wire),
                        ],
                        true,
                    )
                })
                .collect()
        });
        let ch = to(&rt, &server);
        match call(&ch, true, Duration::from_secs(5)) {
            Err(s) if s.code() == Code::NotFound && s.message() == want => {}
            other => bad.push(format!(
                "{:?}: {other:?}, grpc-java gives {want:?}",
                String::from_utf8_lossy(wire)
            )),
        }
        ch.close();
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// MetadataTest.invalidKeyName: '/' is not a key character (refused
/// before anything is sent, as gRPC-Go's Validate does too).
/// MetadataTest.shortBinaryKeyName: "-bin" alone is no key for grpc-java
/// (Metadata.Key.of: IllegalArgumentException "empty key name"); gRPC-Go
/// (internal/metadata Validate checks characters only) and C-core
/// (grpc_header_key_is_legal) take it, and so does switchyard: pinned as
/// the Go/C-core choice.
#[test]
fn metadata_key_names_checked_as_go_where_java_differs() {
    let mut bad = Vec::new();
    for (k, v, ok) in [
        ("-bin", "AAEC", true),
        ("io.grpc/key1", "x", false),
        ("a-bin", "AAEC", true),
        ("valid.key_1-x", "x", true),
    ] {
        let r = check_metadata(&[(k.to_string(), v.to_string())]);
        if r.is_ok() != ok {
            bad.push(format!("{k:?}: {r:?}, expected accepted={ok}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
