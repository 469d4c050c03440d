//! unary client-visible cases of gRPC-Go's end-to-end tests
//! (grpc-go 4793ad04: test/end2end_test.go, test/http_header_end2end_test.go,
//! test/goaway_test.go, test/invoke_test.go) that the existing *_go_cases.rs /
//! *_go_tables.rs files do not pin, against real servers on 127.0.0.1: the
//! hand-written frame server of tests/common/scripted_h2.rs (for bytes h2
//! would not send) and tokio + h2 servers on tests/common/tokio_host.rs.

#[path = "common/h2_frames.rs"]
mod h2_frames;
#[path = "common/outcome.rs"]
mod outcome;
#[path = "common/scripted_h2.rs"]
mod scripted_h2;
#[path = "common/tokio_host.rs"]
mod tokio_host;

use bytes::Bytes;
use h2_frames::*;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use outcome::outcome;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::*;
use tokio_host::Host;

const METHOD: &str = "/grpc.testing.TestService/UnaryCall";

// ---------------------------------------------------------------------------
// Client side.

fn channel_to(
    rt: &Runtime,
    addr: std::net::SocketAddr,
    tweak: impl FnOnce(&mut TransportConfig),
) -> Channel {
    let mut transport = TransportConfig::insecure();
    tweak(&mut transport);
    Channel::new(
        rt,
        &format!("ipv4:{addr}"),
        None,
        ChannelOptions {
            transport: Some(transport),
            ..Default::default()
        },
    )
    .unwrap()
}

fn call_md(ch: &Channel, md: &[(String, String)]) -> Result<UnaryResponse, Status> {
    ch.reader().unary(
        METHOD,
        b"hi",
        &CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            wait_for_ready: Some(true),
            metadata: md,
            ..Default::default()
        },
    )
}

fn md(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// Raw frame server (gRPC-Go's httpServer in end2end_test.go): every header
// set in turn, then payloads, then trailer sets; END_STREAM on the last frame.

type Fields = Vec<(&'static str, &'static [u8])>;

fn raw_outcome(head: Vec<Fields>, payloads: Vec<Vec<u8>>, trailers: Vec<Fields>) -> (Code, String) {
    let rt = Runtime::new().unwrap();
    let server = scripted_h2::Server::start(1, move |streams| {
        let mut out = Vec::new();
        for &s in streams {
            let (np, nt) = (payloads.len(), trailers.len());
            for (i, h) in head.iter().enumerate() {
                out.extend(headers(s, h, np == 0 && nt == 0 && i == head.len() - 1));
            }
            for (i, p) in payloads.iter().enumerate() {
                out.extend(data(s, p, nt == 0 && i == np - 1));
            }
            for (i, t) in trailers.iter().enumerate() {
                out.extend(headers(s, t, i == nt - 1));
            }
        }
        out
    });
    let ch = channel_to(&rt, server.addr, |_| {});
    let out = outcome(&call_md(&ch, &[]));
    ch.close();
    out
}

/// (case, got, want code, want message if checked)
type Case = (String, (Code, String), Code, Option<String>);

fn check_all(cases: Vec<Case>) {
    let mut bad = Vec::new();
    for (name, (got, msg), want, want_msg) in cases {
        if got != want || want_msg.as_ref().is_some_and(|m| *m != msg) {
            bad.push(format!(
                "{name}: got {got:?} {msg:?}, gRPC-Go gives {want:?}{}",
                want_msg.map(|m| format!(" {m:?}")).unwrap_or_default()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "cases that differ from gRPC-Go:\n{}",
        bad.join("\n")
    );
}

const CT: (&str, &[u8]) = ("content-type", b"application/grpc");

/// http_header_end2end_test.go: TestHTTPHeaderFrameErrorHandlingHTTPMode,
/// ...InitialHeader, ...NormalTrailer, ...MoreThanTwoHeaders (the rows
/// wire_go_tables.rs does not already have). gRPC-Go's startServer writes
/// every set as a HEADERS frame, END_STREAM on the last.
#[test]
fn http_header_frame_error_handling_matches_go() {
    const CONV: [(&[u8], Code); 8] = [
        (b"400", Code::Internal),
        (b"401", Code::Unauthenticated),
        (b"403", Code::PermissionDenied),
        (b"404", Code::Unimplemented),
        (b"429", Code::Unavailable),
        (b"502", Code::Unavailable),
        (b"503", Code::Unavailable),
        (b"504", Code::Unavailable),
    ];
    let mut cases = Vec::new();
    for (st, want) in CONV {
        // Non-gRPC content-type: grpc-status and a bad details field ignored.
        let set: Fields = vec![
            (":status", st),
            ("content-type", b"text/html"),
            ("grpc-status", b"1"),
            ("grpc-status-details-bin", b"???"),
        ];
        cases.push((
            format!("HTTPMode text/html {}", String::from_utf8_lossy(st)),
            raw_outcome(vec![set], vec![], vec![]),
            want,
            None,
        ));
        let set: Fields = vec![
            (":status", st),
            ("grpc-status", b"1"),
            ("grpc-status-details-bin", b"???"),
        ];
        cases.push((
            format!("HTTPMode no content-type {}", String::from_utf8_lossy(st)),
            raw_outcome(vec![set], vec![], vec![]),
            want,
            None,
        ));
    }
    cases.push((
        "HTTPMode malformed :status abc".into(),
        raw_outcome(
            vec![vec![
                (":status", b"abc"),
                ("grpc-status", b"1"),
                ("grpc-status-details-bin", b"???"),
            ]],
            vec![],
            vec![],
        ),
        Code::Internal,
        None,
    ));
    // InitialHeader.
    cases.push((
        "InitialHeader 502 grpc ct, grpc-status abc".into(),
        raw_outcome(
            vec![vec![(":status", b"502"), CT, ("grpc-status", b"abc")]],
            vec![],
            vec![],
        ),
        Code::Unknown,
        None,
    ));
    cases.push((
        "InitialHeader 502 grpc ct, grpc-status 0, grpc-tags-bin ???".into(),
        raw_outcome(
            vec![vec![
                (":status", b"502"),
                CT,
                ("grpc-status", b"0"),
                ("grpc-tags-bin", b"???"),
            ]],
            vec![],
            vec![],
        ),
        Code::Internal,
        None,
    ));
    cases.push((
        "InitialHeader 502 grpc ct, grpc-status 3".into(),
        raw_outcome(
            vec![vec![(":status", b"502"), CT, ("grpc-status", b"3")]],
            vec![],
            vec![],
        ),
        Code::InvalidArgument,
        None,
    ));
    // NormalTrailer.
    cases.push((
        "NormalTrailer 200 grpc ct, trailer :status 502 without grpc-status".into(),
        raw_outcome(
            vec![vec![(":status", b"200"), CT], vec![(":status", b"502")]],
            vec![],
            vec![],
        ),
        Code::Unknown,
        None,
    ));
    cases.push((
        "NormalTrailer 404 grpc ct, trailer grpc-status 0 + bad details".into(),
        raw_outcome(
            vec![
                vec![(":status", b"404"), CT],
                vec![("grpc-status", b"0"), ("grpc-status-details-bin", b"????")],
            ],
            vec![],
            vec![],
        ),
        Code::Internal,
        None,
    ));
    cases.push((
        "NormalTrailer 404 no ct, trailer grpc-status 0 + bad details".into(),
        raw_outcome(
            vec![
                vec![(":status", b"404")],
                vec![("grpc-status", b"0"), ("grpc-status-details-bin", b"????")],
            ],
            vec![],
            vec![],
        ),
        Code::Unimplemented,
        None,
    ));
    // MoreThanTwoHeaders.
    let h: Fields = vec![(":status", b"200"), CT];
    cases.push((
        "MoreThanTwoHeaders".into(),
        raw_outcome(vec![h.clone(), h.clone(), h], vec![], vec![]),
        Code::Internal,
        None,
    ));
    check_all(cases);
}

/// end2end_test.go TestHTTPServerSendsNonGRPCHeaderSurfaceFurtherData: a
/// non-gRPC answer's error names the HTTP status (200 included), the
/// content-type problem, and up to 1024 bytes of the body
/// (internal/transport/client_stream.go nonGRPCDataMaxLen,
/// http2_client.go operateHeaders `!isGRPC`).
#[test]
fn non_grpc_answer_error_text_surfaces_status_and_body_as_go() {
    const HTML: &[u8] = b"<html><body>Hello World</body></html>";
    let html_q = format!("{:?}", std::str::from_utf8(HTML).unwrap());
    let ct_html: Fields = vec![(":status", b"200"), ("content-type", b"text/html")];
    let ct_401: Fields = vec![(":status", b"401"), ("content-type", b"text/html")];
    let long = vec![b'a'; 1025];
    let cases = vec![
        (
            "200 text/html, no payload".to_string(),
            raw_outcome(vec![ct_html.clone()], vec![], vec![]),
            Code::Unknown,
            Some(
                "unexpected HTTP status code received from server: 200 (OK); transport: received unexpected content-type \"text/html\"".to_string(),
            ),
        ),
        (
            "200 text/html with payload".to_string(),
            raw_outcome(vec![ct_html.clone()], vec![HTML.to_vec()], vec![]),
            Code::Unknown,
            Some(format!(
                "unexpected HTTP status code received from server: 200 (OK); transport: received unexpected content-type \"text/html\"\ndata: {html_q}"
            )),
        ),
        (
            "200 text/html with 1025 bytes".to_string(),
            raw_outcome(vec![ct_html], vec![long], vec![]),
            Code::Unknown,
            Some(format!(
                "unexpected HTTP status code received from server: 200 (OK); transport: received unexpected content-type \"text/html\"\ndata: \"{}\"",
                "a".repeat(1024)
            )),
        ),
        (
            "502 no content-type, payload hello".to_string(),
            raw_outcome(vec![vec![(":status", b"502")]], vec![b"hello".to_vec()], vec![]),
            Code::Unavailable,
            Some(
                "unexpected HTTP status code received from server: 502 (Bad Gateway); malformed header: missing HTTP content-type\ndata: \"hello\"".to_string(),
            ),
        ),
        (
            "401 text/html, empty DATA END_STREAM".to_string(),
            raw_outcome(vec![ct_401.clone()], vec![vec![]], vec![]),
            Code::Unauthenticated,
            Some(
                "unexpected HTTP status code received from server: 401 (Unauthorized); transport: received unexpected content-type \"text/html\"\ndata: \"\"".to_string(),
            ),
        ),
        (
            "401 text/html, payload then empty END_STREAM".to_string(),
            raw_outcome(vec![ct_401], vec![HTML.to_vec(), vec![]], vec![]),
            Code::Unauthenticated,
            Some(format!(
                "unexpected HTTP status code received from server: 401 (Unauthorized); transport: received unexpected content-type \"text/html\"\ndata: {html_q}"
            )),
        ),
    ];
    check_all(cases);
}

/// The codes alone of the same table (what gRPC-Go checks first).
#[test]
fn non_grpc_answer_codes_match_go() {
    let ct_html: Fields = vec![(":status", b"200"), ("content-type", b"text/html")];
    let ct_401: Fields = vec![(":status", b"401"), ("content-type", b"text/html")];
    check_all(vec![
        (
            "200 text/html".into(),
            raw_outcome(vec![ct_html.clone()], vec![], vec![]),
            Code::Unknown,
            None,
        ),
        (
            "200 text/html + body".into(),
            raw_outcome(vec![ct_html], vec![b"<html/>".to_vec()], vec![]),
            Code::Unknown,
            None,
        ),
        (
            "502 no ct + body".into(),
            raw_outcome(
                vec![vec![(":status", b"502")]],
                vec![b"hello".to_vec()],
                vec![],
            ),
            Code::Unavailable,
            None,
        ),
        (
            "401 text/html + empty DATA".into(),
            raw_outcome(vec![ct_401], vec![vec![]], vec![]),
            Code::Unauthenticated,
            None,
        ),
    ]);
}

// ---------------------------------------------------------------------------
// tokio + h2 servers.

fn frame_msg(msg: &[u8]) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    Bytes::from(v)
}

const NOT_ECHOED: [&str; 6] = [
    "content-type",
    "te",
    "user-agent",
    "grpc-timeout",
    "grpc-accept-encoding",
    "grpc-encoding",
];

/// An echo server: each request's custom metadata comes back in the
/// response headers, in order; `trailers` as the trailers (grpc-status
/// included). Records every request's headers. `max_hls`: the
/// SETTINGS_MAX_HEADER_LIST_SIZE it announces.
struct EchoServer {
    host: Host,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

fn echo_server(max_hls: u32, trailers: Vec<(&'static str, String)>) -> EchoServer {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let trailers = Arc::new(trailers);
    let host = Host::start(move |sock| {
        let (seen, trailers) = (seen2.clone(), trailers.clone());
        async move {
            let Ok(mut conn) = h2::server::Builder::new()
                .max_header_list_size(max_hls)
                .handshake::<_, Bytes>(sock)
                .await
            else {
                return;
            };
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                let (seen, trailers) = (seen.clone(), trailers.clone());
                tokio::spawn(async move {
                    let (parts, mut body) = req.into_parts();
                    while let Some(Ok(c)) = body.data().await {
                        let _ = body.flow_control().release_capacity(c.len());
                    }
                    seen.lock().unwrap().push(parts.headers.clone());
                    let mut resp = Response::new(());
                    resp.headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    for (k, v) in parts.headers.iter() {
                        if !NOT_ECHOED.contains(&k.as_str()) {
                            resp.headers_mut().append(k.clone(), v.clone());
                        }
                    }
                    let Ok(mut stream) = respond.send_response(resp, false) else {
                        return;
                    };
                    let _ = stream.send_data(frame_msg(b"ok"), false);
                    let mut t = HeaderMap::new();
                    for (k, v) in trailers.iter() {
                        t.append(
                            HeaderName::from_static(k),
                            HeaderValue::from_str(v).unwrap(),
                        );
                    }
                    let _ = stream.send_trailers(t);
                });
            }
        }
    });
    EchoServer { host, seen }
}

fn ok_trailers() -> Vec<(&'static str, String)> {
    vec![("grpc-status", "0".to_string())]
}

/// end2end_test.go TestMetadataOrderUnaryRPC: values appended to a key
/// keep their order on the wire and in the response headers the server
/// echoes (metadata.Join(testMetadata, Pairs("key1","value2","key1","value3"))).
#[test]
fn metadata_order_of_repeated_keys_is_kept_both_ways() {
    let rt = Runtime::new().unwrap();
    let server = echo_server(1 << 20, ok_trailers());
    let ch = channel_to(&rt, server.host.addr, |_| {});
    let sent = md(&[
        ("key1", "value1"),
        ("key2", "value2"),
        ("key1", "value2"),
        ("key1", "value3"),
    ]);
    let resp = call_md(&ch, &sent).expect("call");
    let seen = server.seen.lock().unwrap()[0].clone();
    let on_wire: Vec<_> = seen
        .get_all("key1")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(on_wire, ["value1", "value2", "value3"], "request headers");
    let back: Vec<_> = resp
        .headers
        .get_all("key1")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        back,
        ["value1", "value2", "value3"],
        "response headers {:?}",
        resp.headers
    );
    assert_eq!(resp.headers.get("key2").unwrap(), "value2");
    ch.close();
}

/// end2end_test.go TestServerMaxHeaderListSizeClientUserViolation (and
/// http2_client.go NewStream `checkForHeaderListSize`): request headers
/// over the server's SETTINGS_MAX_HEADER_LIST_SIZE fail the call INTERNAL
/// ("header list size to send violates the maximum size (216 bytes) set by
/// server") and nothing is sent.
#[test]
fn request_headers_over_the_servers_header_list_limit_fail_internal_unsent() {
    let rt = Runtime::new().unwrap();
    let server = echo_server(216, ok_trailers());
    let ch = channel_to(&rt, server.host.addr, |_| {});
    // A first small call so the server's SETTINGS are known (gRPC-Go's
    // verifyResultWithDelay retries until they are).
    let _ = call_md(&ch, &[]);
    let before = server.seen.lock().unwrap().len();
    let big = "a".repeat(216);
    let r = call_md(&ch, &md(&[("oversize", &big)]));
    let (code, msg) = outcome(&r);
    let after = server.seen.lock().unwrap().len();
    // (A request the h2 server refuses for its size never reaches `seen`;
    // a 431 answer shows it was sent.)
    assert_eq!(
        (code, after - before),
        (Code::Internal, 0),
        "gRPC-Go: INTERNAL \"header list size to send violates the maximum size (216 bytes) \
         set by server\", never sent; got {code:?} {msg:?}"
    );
    ch.close();
}

/// end2end_test.go TestClientMaxHeaderListSizeServerUserViolation: the
/// client announces a header list limit of 1 byte; any response header
/// block violates it, and gRPC-Go fails the call INTERNAL. Switchyard
/// documents the difference (TransportConfig::max_header_list_size: "one
/// over 4x this ends the connection", h2's abuse guard): the call fails
/// UNAVAILABLE with the connection. (Under 4x the limit it fails INTERNAL
/// and the connection stays: core_e2e_cases.rs.)
#[test]
fn response_headers_far_over_the_clients_limit_end_the_connection() {
    let rt = Runtime::new().unwrap();
    let server = echo_server(1 << 20, ok_trailers());
    let ch = channel_to(&rt, server.host.addr, |t| t.max_header_list_size = 1);
    let (code, msg) = outcome(&call_md(&ch, &[]));
    assert_eq!(code, Code::Unavailable, "message {msg:?}");
    ch.close();
}

/// invoke_test.go TestInvokeLargeErr and TestInvokeErrorSpecialChars: a
/// 1 MiB grpc-message reaches the caller whole; "%"-escapes are decoded.
#[test]
fn large_and_special_error_messages_reach_the_caller_whole() {
    let rt = Runtime::new().unwrap();
    let large = "A".repeat(1024 * 1024);
    let server = echo_server(
        1 << 20,
        vec![
            ("grpc-status", "13".to_string()),
            ("grpc-message", large.clone()),
        ],
    );
    let ch = channel_to(&rt, server.host.addr, |_| {});
    let (code, msg) = outcome(&call_md(&ch, &[]));
    assert_eq!(code, Code::Internal);
    assert_eq!(msg.len(), large.len(), "message of {} bytes", msg.len());
    assert!(msg == large);
    ch.close();
    let server = echo_server(
        1 << 20,
        vec![
            ("grpc-status", "13".to_string()),
            ("grpc-message", "format verbs: %25v%25s".to_string()),
        ],
    );
    let ch = channel_to(&rt, server.host.addr, |_| {});
    assert_eq!(
        outcome(&call_md(&ch, &[])),
        (Code::Internal, "format verbs: %v%s".to_string())
    );
    ch.close();
}

/// end2end_test.go TestLargeTimeout: the largest deadlines gRPC-Go can
/// express (math.MaxInt64 ns, 2562047 h) are sent as hours ("2562048H",
/// "2562047H": encodeTimeout rounds up) and the call is served.
#[test]
fn largest_timeouts_are_sent_in_hours_and_served() {
    let rt = Runtime::new().unwrap();
    let server = echo_server(1 << 20, ok_trailers());
    let ch = channel_to(&rt, server.host.addr, |_| {});
    let mut got = Vec::new();
    for d in [
        Duration::from_nanos(i64::MAX as u64),
        Duration::from_secs(2_562_047 * 3600),
    ] {
        let r = ch.reader().unary(
            METHOD,
            b"hi",
            &CallOptions {
                deadline: Some(Instant::now() + d),
                wait_for_ready: Some(true),
                ..Default::default()
            },
        );
        let n = server.seen.lock().unwrap().len();
        let t = (n > 0)
            .then(|| {
                server.seen.lock().unwrap()[n - 1]
                    .get("grpc-timeout")
                    .map(|v| v.to_str().unwrap().to_string())
            })
            .flatten();
        got.push((outcome(&r).0, t));
    }
    assert_eq!(
        got,
        [
            (Code::Ok, Some("2562048H".to_string())),
            (Code::Ok, Some("2562047H".to_string()))
        ]
    );
    ch.close();
}

/// A server whose connection dies (socket closed, no GOAWAY, as gRPC-Go's
/// Server.Stop) once the call's request has arrived; the call's outcome.
fn killed_mid_call() -> (Code, String) {
    let rt = Runtime::new().unwrap();
    let (got_tx, got_rx) = mpsc::channel::<()>();
    let got_tx = Arc::new(Mutex::new(got_tx));
    let (kill_tx, kill_rx) = tokio::sync::watch::channel(false);
    let host = Host::start(move |sock| {
        let (got, mut kill) = (got_tx.clone(), kill_rx.clone());
        async move {
            let Ok(mut conn) = h2::server::handshake(sock).await else {
                return;
            };
            let Some(Ok((_req, _respond))) = conn.accept().await else {
                return;
            };
            let _ = got.lock().unwrap().send(());
            tokio::select! {
                _ = async { while let Some(Ok(_)) = conn.accept().await {} } => {}
                _ = kill.wait_for(|k| *k) => {}
            }
        }
    });
    let ch = Arc::new(channel_to(&rt, host.addr, |_| {}));
    let ch2 = ch.clone();
    let t = std::thread::spawn(move || outcome(&call_md(&ch2, &[])));
    got_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("request reached the server");
    kill_tx.send(true).unwrap();
    let out = t.join().unwrap();
    ch.close();
    out
}

/// end2end_test.go TestDetailedConnectionCloseErrorPropagatesToRPCError:
/// the server's connection dies under a started call: UNAVAILABLE.
#[test]
fn connection_killed_mid_call_is_unavailable() {
    let (code, msg) = killed_mid_call();
    assert_eq!(code, Code::Unavailable, "message {msg:?}");
}

/// The same test's real point: the message names the connection error,
/// "error reading from server: EOF" or "connection reset by peer"
/// (http2_client.go reader: `connectionErrorf(true, err, "error reading
/// from server: %v", err)`).
#[test]
fn connection_killed_mid_call_message_names_the_read_error_as_go() {
    let (code, msg) = killed_mid_call();
    assert!(
        msg.contains("error reading from server: EOF") || msg.contains("connection reset by peer"),
        "gRPC-Go's message contains \"error reading from server: EOF\" or \"connection reset by peer\"; got {code:?} {msg:?}"
    );
}

/// end2end_test.go TestEnable8KBDefaultHeaderListSize_* with the flag off
/// (gRPC-Go's default until v1.82, and switchyard's 16 MiB default): 9000
/// bytes of metadata go out and come back.
#[test]
fn nine_kb_metadata_goes_and_comes_back_under_the_default_limits() {
    let rt = Runtime::new().unwrap();
    let server = echo_server(1 << 20, ok_trailers());
    let ch = channel_to(&rt, server.host.addr, |_| {});
    let big = "a".repeat(9000);
    let resp = call_md(&ch, &md(&[("large-key", &big)])).expect("call");
    assert_eq!(resp.headers.get("large-key").unwrap().len(), 9000);
    ch.close();
}

/// end2end_test.go TestUnexpectedEOF: on one connection, ten times, a
/// response over the 4 MiB default receive limit is RESOURCE_EXHAUSTED and
/// the next, 275075 bytes, is served.
#[test]
fn over_limit_responses_leave_the_connection_serving() {
    use switchyard_testserver::{Listen, ServerOptions, TestServer};
    let ts = TestServer::start(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        ServerOptions::default(),
    )
    .unwrap();
    let suffix = format!("|port={}", ts.port()).len();
    let rt = Runtime::new().unwrap();
    let ch = channel_to(&rt, ts.addr(), |_| {});
    let call = |n: usize| {
        ch.reader().unary(
            "/echo.Echo/Unary",
            &vec![b'a'; n - suffix],
            &CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(20)),
                wait_for_ready: Some(true),
                ..Default::default()
            },
        )
    };
    for i in 0..10 {
        let e = call(4_194_304 + 8).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "round {i}: {e:?}");
        let ok = call(275_075).map(|r| r.message.len());
        assert_eq!(ok.map_err(|s| s.to_string()), Ok(275_075), "round {i}");
    }
    ch.close();
}

/// goaway_test.go TestClientConnCloseAfterGoAwayWithActiveStream: the
/// server starts a graceful stop (GOAWAY) with a call in flight, then the
/// client closes its channel: the call ends and the server's connection
/// is gone within a second (its GracefulStop returns).
#[test]
fn channel_close_after_goaway_with_an_active_call_lets_the_server_finish() {
    let rt = Runtime::new().unwrap();
    let (got_tx, got_rx) = mpsc::channel::<()>();
    let (end_tx, end_rx) = mpsc::channel::<Instant>();
    let (got_tx, end_tx) = (Arc::new(Mutex::new(got_tx)), Arc::new(Mutex::new(end_tx)));
    let host = Host::start(move |sock| {
        let (got, end) = (got_tx.clone(), end_tx.clone());
        async move {
            let Ok(mut conn) = h2::server::handshake(sock).await else {
                return;
            };
            let Some(Ok((req, mut respond))) = conn.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _req = req;
                let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
            });
            conn.graceful_shutdown();
            let _ = got.lock().unwrap().send(());
            while let Some(Ok(_)) = conn.accept().await {}
            let _ = end.lock().unwrap().send(Instant::now());
        }
    });
    let ch = Arc::new(channel_to(&rt, host.addr, |_| {}));
    let ch2 = ch.clone();
    let t = std::thread::spawn(move || outcome(&call_md(&ch2, &[])));
    got_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("request reached the server");
    std::thread::sleep(Duration::from_millis(50));
    let closed = Instant::now();
    ch.close();
    let ended = end_rx.recv_timeout(Duration::from_secs(3));
    let (code, msg) = t.join().unwrap();
    assert!(
        ended.is_ok_and(|e| e.duration_since(closed) < Duration::from_secs(1)),
        "server connection not finished within 1 s of the channel's close: {ended:?}"
    );
    assert_eq!(code, Code::Cancelled, "message {msg:?}");
}

/// goaway_test.go TestConcurrentClientConnCloseAndServerGoAway: after one
/// call, the server's graceful stop and the channel's close race; the
/// server's connection finishes and close returns.
#[test]
fn concurrent_channel_close_and_server_goaway_both_finish() {
    for round in 0..5 {
        let rt = Runtime::new().unwrap();
        let (end_tx, end_rx) = mpsc::channel::<()>();
        let end_tx = Arc::new(Mutex::new(end_tx));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let host = Host::start(move |sock| {
            let (end, mut stop) = (end_tx.clone(), stop_rx.clone());
            async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                let mut stopping = false;
                loop {
                    tokio::select! {
                        r = conn.accept() => match r {
                            Some(Ok((_req, mut respond))) => {
                                let mut resp = Response::new(());
                                resp.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
                                if let Ok(mut s) = respond.send_response(resp, false) {
                                    let _ = s.send_data(frame_msg(b"ok"), false);
                                    let mut t = HeaderMap::new();
                                    t.insert("grpc-status", HeaderValue::from_static("0"));
                                    let _ = s.send_trailers(t);
                                }
                            }
                            _ => break,
                        },
                        _ = stop.wait_for(|s| *s), if !stopping => {
                            stopping = true;
                            conn.graceful_shutdown();
                        }
                    }
                }
                let _ = end.lock().unwrap().send(());
            }
        });
        let ch = Arc::new(channel_to(&rt, host.addr, |_| {}));
        assert_eq!(outcome(&call_md(&ch, &[])).0, Code::Ok);
        let ch2 = ch.clone();
        let closer = std::thread::spawn(move || ch2.close());
        stop_tx.send(true).unwrap();
        let ended = end_rx.recv_timeout(Duration::from_secs(3));
        assert!(
            ended.is_ok(),
            "round {round}: server connection still open 3 s later"
        );
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = closer.join();
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(3)).is_ok(),
            "round {round}: close hangs"
        );
    }
}
