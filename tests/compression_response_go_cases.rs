//! Probe: the response side of gRPC-Go's client (rpc_util.go
//! recvAndDecompress / checkRecvPayload / decompress, stream.go's
//! csAttempt.recvMsg and invoke's unary cardinality check, and
//! internal/transport/http2_client.go operateHeaders / handleData /
//! handleRSTStream) replayed against switchyard through its public API,
//! with a scripted hand-written HTTP/2 server on 127.0.0.1.
//!
//! Only what tests/wire_go_tables.rs does not already cover: the codecs
//! themselves (gzip, deflate, corrupt and bomb payloads), exact error texts,
//! framing across DATA frames, truncation without trailers, missing
//! grpc-message, grpc-status-details-bin, more 1xx shapes, and the header
//! list limit's text.
//!
//! gRPC-Go reference: grpc/grpc-go 4793ad0474669eafbd5346c8a3d098fdfa542498.
//! A Go client decompresses gzip only with `encoding/gzip` imported (as
//! test/compressor_test.go does); that client is the reference below.

#[path = "common/h2_frames.rs"]
mod h2_frames;
#[path = "common/outcome.rs"]
mod outcome;
use h2_frames::*;
use outcome::outcome;
use std::io::Write;
use std::time::{Duration, Instant};
use switchyard::*;

#[path = "common/scripted_h2.rs"]
mod scripted_h2;
use scripted_h2::Server;

// ---------------------------------------------------------------------------
// Client side.

fn call_on(ch: &Channel) -> Result<UnaryResponse, Status> {
    let mut r = ch.reader();
    r.unary(
        "/echo.Echo/Unary",
        b"hi",
        &CallOptions {
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            wait_for_ready: Some(true),
            ..Default::default()
        },
    )
}

/// One call against a server answering every request with `script`.
fn run(
    script: impl Fn(u32) -> Vec<u8> + Send + Sync + 'static,
    tweak: impl FnOnce(&mut TransportConfig),
) -> Result<UnaryResponse, Status> {
    let rt = Runtime::new().unwrap();
    let server = Server::start(1, move |streams| {
        streams.iter().flat_map(|s| script(*s)).collect()
    });
    let mut transport = TransportConfig::insecure();
    tweak(&mut transport);
    let ch = Channel::new(
        &rt,
        &format!("ipv4:{}", server.addr),
        None,
        ChannelOptions {
            transport: Some(transport),
            ..Default::default()
        },
    )
    .unwrap();
    let out = call_on(&ch);
    ch.close();
    let _ = server.accepted();
    let _ = server.requests();
    let _ = server.blocks.lock().unwrap().len();
    out
}

fn against(
    script: impl Fn(u32) -> Vec<u8> + Send + Sync + 'static,
    tweak: impl FnOnce(&mut TransportConfig),
) -> (Code, String) {
    outcome(&run(script, tweak))
}

/// How a case's message is judged.
#[derive(Clone, Copy)]
enum Want<'a> {
    Any,
    Exact(&'a str),
    Prefix(&'a str),
}

type Case<'a> = (String, (Code, String), Code, Want<'a>);

fn check_all(cases: Vec<Case<'_>>) {
    let mut bad = Vec::new();
    for (name, (got, msg), want, want_msg) in cases {
        let short: String = msg.chars().take(120).collect();
        eprintln!("{name}: {got:?} {short:?}");
        let msg_ok = match want_msg {
            Want::Any => true,
            Want::Exact(m) => msg == m,
            Want::Prefix(m) => msg.starts_with(m),
        };
        if got != want || !msg_ok {
            let w = match want_msg {
                Want::Any => String::new(),
                Want::Exact(m) => format!(" {m:?}"),
                Want::Prefix(m) => format!(" {m:?}..."),
            };
            bad.push(format!(
                "{name}: got {got:?} {msg:?}, gRPC-Go gives {want:?}{w}"
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
const S200: (&str, &[u8]) = (":status", b"200");
const OK: (&str, &[u8]) = ("grpc-status", b"0");

/// Response headers with `grpc-encoding: enc` (none if empty).
fn head_with(enc: &'static [u8]) -> Vec<(&'static str, &'static [u8])> {
    let mut h = vec![S200, CT];
    if !enc.is_empty() {
        h.push(("grpc-encoding", enc));
    }
    h
}

/// A whole response: headers, one DATA with `body`, trailers.
fn response(s: u32, head: &[(&str, &[u8])], body: &[u8], tail: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = headers(s, head, false);
    out.extend(data(s, body, false));
    out.extend(headers(s, tail, true));
    out
}

/// A script answering with one message framed with `flag`, in `enc`.
fn compressed(
    enc: &'static [u8],
    flag: u8,
    payload: Vec<u8>,
) -> impl Fn(u32) -> Vec<u8> + Send + Sync + 'static {
    move |s| response(s, &head_with(enc), &msg_with_flag(flag, &payload), &[OK])
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn limit(n: usize) -> impl FnOnce(&mut TransportConfig) {
    move |t: &mut TransportConfig| t.max_recv_message_size = Some(n)
}

/// google.rpc.Status{code, message} as protobuf bytes.
fn rpc_status(code: u8, message: &str) -> Vec<u8> {
    let mut b = vec![0x08, code, 0x12, message.len() as u8];
    b.extend_from_slice(message.as_bytes());
    b
}

fn b64(b: &[u8]) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i)) as usize & 63]);
        }
    }
    out
}

fn leak(v: Vec<u8>) -> &'static [u8] {
    Box::leak(v.into_boxed_slice())
}

/// A gzip stream whose deflate data is one block of the reserved type 3.
fn gzip_bad_block() -> Vec<u8> {
    let mut g = gzip(b"hello")[..10].to_vec();
    g.extend([0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    g
}

fn gzip_bad_crc() -> Vec<u8> {
    let mut g = gzip(b"hello");
    let n = g.len();
    g[n - 8] ^= 0xff;
    g
}

fn gzip_truncated() -> Vec<u8> {
    let g = gzip(&b"hello world ".repeat(50));
    g[..g.len() - 6].to_vec()
}

// ---------------------------------------------------------------------------
// Codecs: what decodes, and the codes of what does not.

/// checkRecvPayload (rpc_util.go) and the gzip codec (encoding/gzip):
/// flag 1 in gzip inflates; flag 0 under any encoding is as sent; flag 1
/// without an encoding, with "identity" or "", or with a name not
/// registered (names are case-sensitive: encoding.GetCompressor is a map
/// lookup) is INTERNAL with Go's words; flag >= 2 is INTERNAL "grpc:
/// received unexpected payload format N". The encoding is the response
/// headers' (operateHeaders sets recvCompress only from them), never the
/// trailers'.
#[test]
fn compressed_flag_and_grpc_encoding_decode_as_go() {
    let big = "compressible ".repeat(2000);
    let big_s: &'static str = Box::leak(big.clone().into_boxed_str());
    let cases = vec![
        (
            "gzip, flag 1".to_string(),
            against(compressed(b"gzip", 1, gzip(b"hello")), |_| {}),
            Code::Ok,
            Want::Exact("hello"),
        ),
        (
            "gzip, flag 1, 26 KB compressible".to_string(),
            against(compressed(b"gzip", 1, gzip(big.as_bytes())), |_| {}),
            Code::Ok,
            Want::Exact(big_s),
        ),
        (
            "gzip, flag 1, gzip of an empty message".to_string(),
            against(compressed(b"gzip", 1, gzip(b"")), |_| {}),
            Code::Ok,
            Want::Exact(""),
        ),
        (
            "gzip, flag 0".to_string(),
            against(compressed(b"gzip", 0, b"plain".to_vec()), |_| {}),
            Code::Ok,
            Want::Exact("plain"),
        ),
        (
            "gzip, flag 1, inflates to exactly the limit (1000)".to_string(),
            against(compressed(b"gzip", 1, gzip(&[b'z'; 1000])), limit(1000)),
            Code::Ok,
            Want::Any,
        ),
        (
            "GZIP (upper case), flag 1".to_string(),
            against(compressed(b"GZIP", 1, gzip(b"hello")), |_| {}),
            Code::Internal,
            Want::Exact("grpc: Decompressor is not installed for grpc-encoding \"GZIP\""),
        ),
        (
            "snappy, flag 1".to_string(),
            against(compressed(b"snappy", 1, b"x".to_vec()), |_| {}),
            Code::Internal,
            Want::Exact("grpc: Decompressor is not installed for grpc-encoding \"snappy\""),
        ),
        (
            "identity, flag 1".to_string(),
            against(compressed(b"identity", 1, b"x".to_vec()), |_| {}),
            Code::Internal,
            Want::Exact("grpc: compressed flag set with identity or empty encoding"),
        ),
        (
            "no grpc-encoding, flag 1".to_string(),
            against(compressed(b"", 1, b"x".to_vec()), |_| {}),
            Code::Internal,
            Want::Exact("grpc: compressed flag set with identity or empty encoding"),
        ),
        (
            "grpc-encoding \"\", flag 1".to_string(),
            against(
                |s| {
                    response(
                        s,
                        &[S200, CT, ("grpc-encoding", b"")],
                        &msg_with_flag(1, b"x"),
                        &[OK],
                    )
                },
                |_| {},
            ),
            Code::Internal,
            Want::Exact("grpc: compressed flag set with identity or empty encoding"),
        ),
        (
            "grpc-encoding gzip only in the trailers, flag 1".to_string(),
            against(
                |s| {
                    response(
                        s,
                        &[S200, CT],
                        &msg_with_flag(1, &gzip(b"hello")),
                        &[OK, ("grpc-encoding", b"gzip")],
                    )
                },
                |_| {},
            ),
            Code::Internal,
            Want::Exact("grpc: compressed flag set with identity or empty encoding"),
        ),
        (
            "flag 2".to_string(),
            against(compressed(b"", 2, b"x".to_vec()), |_| {}),
            Code::Internal,
            Want::Exact("grpc: received unexpected payload format 2"),
        ),
        (
            "flag 255, gzip".to_string(),
            against(compressed(b"gzip", 255, gzip(b"x")), |_| {}),
            Code::Internal,
            Want::Exact("grpc: received unexpected payload format 255"),
        ),
    ];
    check_all(cases);
}

/// grpc-encoding deflate: gRPC-Go registers no "deflate" compressor, so a
/// Go client fails it INTERNAL "grpc: Decompressor is not installed for
/// grpc-encoding \"deflate\"" (checkRecvPayload). switchyard offers and
/// inflates deflate (zlib) on purpose, as gRPC C-core and Java do
/// (src/transport/grpc.rs `Encoding`, documented): kept as switchyard's
/// behaviour, not Go's.
#[test]
fn deflate_is_inflated_by_design_where_go_has_no_decompressor() {
    check_all(vec![
        (
            "deflate (zlib), flag 1".to_string(),
            against(compressed(b"deflate", 1, zlib(b"hello")), |_| {}),
            Code::Ok,
            Want::Exact("hello"),
        ),
        (
            "deflate, flag 1, inflating past the limit".to_string(),
            against(compressed(b"deflate", 1, zlib(&[0u8; 1001])), limit(1000)),
            Code::ResourceExhausted,
            Want::Any,
        ),
    ]);
}

/// decompress (rpc_util.go): bytes that do not inflate are INTERNAL,
/// whether the gzip header, a deflate block, the CRC or the length is
/// wrong, or the stream is cut short.
#[test]
fn corrupt_gzip_is_internal() {
    let cases = vec![
        ("not gzip at all", b"definitely not gzip".to_vec()),
        ("reserved deflate block type", gzip_bad_block()),
        ("wrong CRC-32", gzip_bad_crc()),
        ("cut short", gzip_truncated()),
    ];
    check_all(
        cases
            .into_iter()
            .map(|(name, body)| {
                (
                    name.to_string(),
                    against(compressed(b"gzip", 1, body), |_| {}),
                    Code::Internal,
                    Want::Any,
                )
            })
            .collect(),
    );
}

/// A compressed message of zero bytes under gzip: Go's gzip
/// `Decompress` (gzip.NewReader on an empty reader) fails with io.EOF, so
/// decompress returns INTERNAL "grpc: failed to decompress the message:
/// EOF". (gRPC-Go never sends one: compress() leaves an empty message
/// uncompressed.)
#[test]
fn empty_payload_with_compressed_flag_is_internal() {
    check_all(vec![(
        "gzip, flag 1, zero bytes".to_string(),
        against(compressed(b"gzip", 1, Vec::new()), |_| {}),
        Code::Internal,
        Want::Any,
    )]);
}

/// Go's compress/gzip reader is multistream by default: a payload of two
/// gzip members inflates to both members' bytes, and one member followed
/// by bytes that are not a gzip header fails when the reader looks for
/// the next member ("gzip: invalid header" from Read, so decompress says
/// INTERNAL "grpc: failed to read decompressed data: gzip: invalid
/// header"). RFC 1952 2.2: a gzip file is a series of members.
#[test]
fn gzip_payload_is_read_as_a_series_of_members() {
    let mut two = gzip(b"hello ");
    two.extend(gzip(b"world"));
    let mut trailing = gzip(b"hello");
    trailing.extend(b"garbage!!!");
    check_all(vec![
        (
            "two gzip members".to_string(),
            against(compressed(b"gzip", 1, two), |_| {}),
            Code::Ok,
            Want::Exact("hello world"),
        ),
        (
            "one member then garbage".to_string(),
            against(compressed(b"gzip", 1, trailing), |_| {}),
            Code::Internal,
            Want::Any,
        ),
    ]);
}

/// decompress: the inflated size is held to the receive limit (reading at
/// most limit + 1 bytes), RESOURCE_EXHAUSTED past it, even for a payload
/// far under the limit on the wire; a 16 MiB bomb against the default
/// 4 MiB limit ends quickly.
#[test]
fn gzip_inflating_past_the_receive_limit_is_resource_exhausted() {
    let bomb = gzip(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 40_000, "{}", bomb.len());
    let start = Instant::now();
    check_all(vec![
        (
            "1001 bytes inflated, limit 1000".to_string(),
            against(compressed(b"gzip", 1, gzip(&[0u8; 1001])), limit(1000)),
            Code::ResourceExhausted,
            Want::Any,
        ),
        (
            "16 MiB inflated, default limit".to_string(),
            against(compressed(b"gzip", 1, bomb), |_| {}),
            Code::ResourceExhausted,
            Want::Any,
        ),
    ]);
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
}

/// The exact words of decompress's errors in gRPC-Go's default path (an
/// `encoding.Compressor`, encoding/gzip): a failing Decompress (bad
/// header, empty input) "grpc: failed to decompress the message: %v", a
/// failing read "grpc: failed to read decompressed data: %v", too large
/// "grpc: received message after decompression larger than max %d". (The
/// %v part is Go's own library text and is not compared.) The words
/// switchyard uses, "grpc: failed to decompress the received message: "
/// and "... larger than max (N vs. M)", are those of the legacy
/// `Decompressor` path (WithDecompressor), whose too-large text is
/// "grpc: message after decompression larger than max (%d vs. %d)".
#[test]
fn decompression_error_texts_match_go() {
    check_all(vec![
        (
            "not gzip".to_string(),
            against(
                compressed(b"gzip", 1, b"definitely not gzip".to_vec()),
                |_| {},
            ),
            Code::Internal,
            Want::Prefix("grpc: failed to decompress the message: "),
        ),
        (
            "reserved deflate block type".to_string(),
            against(compressed(b"gzip", 1, gzip_bad_block()), |_| {}),
            Code::Internal,
            Want::Prefix("grpc: failed to read decompressed data: "),
        ),
        (
            "wrong CRC-32".to_string(),
            against(compressed(b"gzip", 1, gzip_bad_crc()), |_| {}),
            Code::Internal,
            Want::Prefix("grpc: failed to read decompressed data: "),
        ),
        (
            "1001 bytes inflated, limit 1000".to_string(),
            against(compressed(b"gzip", 1, gzip(&[0u8; 1001])), limit(1000)),
            Code::ResourceExhausted,
            Want::Exact("grpc: received message after decompression larger than max 1000"),
        ),
    ]);
}

// ---------------------------------------------------------------------------
// Framing across DATA frames (handleData hands each DATA's bytes to the
// stream's buffer; parser.recvMsg reads across them).

fn split_response(s: u32, head: &[(&str, &[u8])], body: &[u8], pieces: usize) -> Vec<u8> {
    let mut out = headers(s, head, false);
    let n = body.len().div_ceil(pieces.max(1)).max(1);
    for c in body.chunks(n) {
        out.extend(data(s, c, false));
    }
    out.extend(headers(s, &[OK], true));
    out
}

#[test]
fn messages_read_across_data_frames_as_go() {
    let hello = msg(b"hello world");
    let big: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let big_s: &'static str = Box::leak(String::from_utf8(big.clone()).unwrap().into_boxed_str());
    let big_msg = msg(&big);
    let gz = msg_with_flag(1, &gzip(b"hello gzip"));
    let cases = vec![
        (
            "one byte per DATA frame".to_string(),
            against(
                move |s| split_response(s, &[S200, CT], &hello, 1000),
                |_| {},
            ),
            Code::Ok,
            Want::Exact("hello world"),
        ),
        (
            "prefix, then body".to_string(),
            against(
                |s| {
                    let m = msg(b"two frames");
                    let mut out = headers(s, &[S200, CT], false);
                    out.extend(data(s, &m[..5], false));
                    out.extend(data(s, &m[5..], false));
                    out.extend(headers(s, &[OK], true));
                    out
                },
                |_| {},
            ),
            Code::Ok,
            Want::Exact("two frames"),
        ),
        (
            "empty DATA frames between the pieces".to_string(),
            against(
                |s| {
                    let m = msg(b"gaps");
                    let mut out = headers(s, &[S200, CT], false);
                    out.extend(data(s, &[], false));
                    for c in m.chunks(3) {
                        out.extend(data(s, c, false));
                        out.extend(data(s, &[], false));
                    }
                    out.extend(headers(s, &[OK], true));
                    out
                },
                |_| {},
            ),
            Code::Ok,
            Want::Exact("gaps"),
        ),
        (
            "50 KB in 16 KiB DATA frames".to_string(),
            against(move |s| split_response(s, &[S200, CT], &big_msg, 4), |_| {}),
            Code::Ok,
            Want::Exact(big_s),
        ),
        (
            "gzip message, one byte per DATA frame".to_string(),
            against(
                move |s| split_response(s, &head_with(b"gzip"), &gz, 1000),
                |_| {},
            ),
            Code::Ok,
            Want::Exact("hello gzip"),
        ),
        (
            "zero-length message".to_string(),
            against(|s| response(s, &[S200, CT], &msg(b""), &[OK]), |_| {}),
            Code::Ok,
            Want::Exact(""),
        ),
        (
            "zero-length message, prefix one byte per frame".to_string(),
            against(|s| split_response(s, &[S200, CT], &msg(b""), 5), |_| {}),
            Code::Ok,
            Want::Exact(""),
        ),
        (
            "two zero-length messages in one DATA frame".to_string(),
            against(
                |s| {
                    let mut b = msg(b"");
                    b.extend(msg(b""));
                    response(s, &[S200, CT], &b, &[OK])
                },
                |_| {},
            ),
            Code::Internal,
            Want::Any,
        ),
    ];
    check_all(cases);
}

// ---------------------------------------------------------------------------
// Streams that end early.

fn truncated_body() -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend(10u32.to_be_bytes());
    b.extend(b"abc");
    b
}

/// Ending short: handleData closes a stream that DATA ends with status
/// INTERNAL "server closed the stream without sending trailers" (and io.EOF
/// to the reader). A complete message then no trailers: the unary
/// invoke's second RecvMsg returns that status. A message cut short: its
/// read hits io.EOF, parser.recvMsg makes it io.ErrUnexpectedEOF and
/// toRPCErr INTERNAL. Codes only here (texts below).
#[test]
fn streams_ending_early_are_internal() {
    let no_trailers = "server closed the stream without sending trailers";
    let cases = vec![
        (
            "message, DATA with END_STREAM, no trailers".to_string(),
            against(
                |s| {
                    let mut out = headers(s, &[S200, CT], false);
                    out.extend(data(s, &msg(b"ok"), true));
                    out
                },
                |_| {},
            ),
            Code::Internal,
            Want::Exact(no_trailers),
        ),
        (
            "message, then an empty DATA with END_STREAM".to_string(),
            against(
                |s| {
                    let mut out = headers(s, &[S200, CT], false);
                    out.extend(data(s, &msg(b"ok"), false));
                    out.extend(data(s, &[], true));
                    out
                },
                |_| {},
            ),
            Code::Internal,
            Want::Exact(no_trailers),
        ),
        (
            "headers, then an empty DATA with END_STREAM".to_string(),
            against(
                |s| {
                    let mut out = headers(s, &[S200, CT], false);
                    out.extend(data(s, &[], true));
                    out
                },
                |_| {},
            ),
            Code::Internal,
            Want::Exact(no_trailers),
        ),
        (
            "prefix says 10, 3 bytes, DATA END_STREAM".to_string(),
            against(
                |s| {
                    let mut out = headers(s, &[S200, CT], false);
                    out.extend(data(s, &truncated_body(), true));
                    out
                },
                |_| {},
            ),
            Code::Internal,
            Want::Any,
        ),
        (
            "prefix says 10, 3 bytes, trailers OK".to_string(),
            against(
                |s| response(s, &[S200, CT], &truncated_body(), &[OK]),
                |_| {},
            ),
            Code::Internal,
            Want::Any,
        ),
        (
            "3 bytes of a prefix, trailers OK".to_string(),
            against(|s| response(s, &[S200, CT], &[0, 0, 0], &[OK]), |_| {}),
            Code::Internal,
            Want::Any,
        ),
        (
            "a message and 2 bytes of another's prefix, trailers OK".to_string(),
            against(
                |s| {
                    let mut b = msg(b"ok");
                    b.extend([0, 0]);
                    response(s, &[S200, CT], &b, &[OK])
                },
                |_| {},
            ),
            Code::Internal,
            Want::Any,
        ),
    ];
    check_all(cases);
}

/// The words for the cases above and the unary cardinality checks:
/// a read cut short is `status.Error(codes.Internal, err.Error())` for
/// io.ErrUnexpectedEOF, "unexpected EOF" (rpc_util.go toRPCErr), also when
/// DATA ended the stream (closeStream hands the reader io.EOF, not its
/// status); a second message is "cardinality violation: expected <EOF> for
/// non server-streaming RPCs, but received another message" (call.go
/// invoke); none at all with grpc-status 0 "cardinality violation:
/// received no response message from non-server-streaming RPC"
/// (stream.go csAttempt.recvMsg).
#[test]
fn truncation_and_cardinality_texts_match_go() {
    let cases = vec![
        (
            "prefix says 10, 3 bytes, DATA END_STREAM".to_string(),
            against(
                |s| {
                    let mut out = headers(s, &[S200, CT], false);
                    out.extend(data(s, &truncated_body(), true));
                    out
                },
                |_| {},
            ),
            Code::Internal,
            Want::Exact("unexpected EOF"),
        ),
        (
            "prefix says 10, 3 bytes, trailers OK".to_string(),
            against(|s| response(s, &[S200, CT], &truncated_body(), &[OK]), |_| {}),
            Code::Internal,
            Want::Exact("unexpected EOF"),
        ),
        (
            "3 bytes of a prefix, trailers OK".to_string(),
            against(|s| response(s, &[S200, CT], &[0, 0, 0], &[OK]), |_| {}),
            Code::Internal,
            Want::Exact("unexpected EOF"),
        ),
        (
            "a message and 2 bytes of another's prefix".to_string(),
            against(
                |s| {
                    let mut b = msg(b"ok");
                    b.extend([0, 0]);
                    response(s, &[S200, CT], &b, &[OK])
                },
                |_| {},
            ),
            Code::Internal,
            Want::Exact("unexpected EOF"),
        ),
        (
            "two messages".to_string(),
            against(
                |s| {
                    let mut b = msg(b"a");
                    b.extend(msg(b"b"));
                    response(s, &[S200, CT], &b, &[OK])
                },
                |_| {},
            ),
            Code::Internal,
            Want::Exact(
                "cardinality violation: expected <EOF> for non server-streaming RPCs, but received another message",
            ),
        ),
        (
            "headers, no message, trailers OK".to_string(),
            against(
                |s| {
                    let mut out = headers(s, &[S200, CT], false);
                    out.extend(headers(s, &[OK], true));
                    out
                },
                |_| {},
            ),
            Code::Internal,
            Want::Exact("cardinality violation: received no response message from non-server-streaming RPC"),
        ),
    ];
    check_all(cases);
}

// ---------------------------------------------------------------------------
// Trailers: grpc-message and grpc-status-details-bin.

/// operateHeaders: grpcMessage stays "" without a grpc-message;
/// decodeGrpcMessage keeps bytes that are not an escape as they are (raw
/// UTF-8, '+', a '%' at the end) and decodes escapes to bytes that join
/// into multibyte UTF-8.
#[test]
fn grpc_message_reads_as_go() {
    let status5 = |m: Option<&'static [u8]>| {
        move |s: u32| {
            let mut t: Vec<(&str, &[u8])> = vec![("grpc-status", b"5")];
            if let Some(m) = m {
                t.push(("grpc-message", m));
            }
            response(s, &[S200, CT], &msg(b"ok"), &t)
        }
    };
    let cases = vec![
        ("no grpc-message", None, ""),
        ("raw UTF-8", Some("caf\u{e9}".as_bytes()), "caf\u{e9}"),
        ("plus", Some(&b"a+b"[..]), "a+b"),
        ("escape then lone %", Some(&b"%41%"[..]), "A%"),
        (
            "mixed escape and raw",
            Some(&b"%E2%82%AC 5 \xe2\x82\xac"[..]),
            "\u{20ac} 5 \u{20ac}",
        ),
        ("lower-case hex", Some(&b"%c3%a9"[..]), "\u{e9}"),
    ];
    check_all(
        cases
            .into_iter()
            .map(|(name, m, want)| {
                (
                    name.to_string(),
                    against(status5(m), |_| {}),
                    Code::NotFound,
                    Want::Exact(want),
                )
            })
            .collect(),
    );
    // grpc-status 0 without grpc-message: OK with the message.
    assert_eq!(
        against(|s| response(s, &[S200, CT], &msg(b"ok"), &[OK]), |_| {}),
        (Code::Ok, "ok".to_string())
    );
}

fn with_details(
    status: &'static [u8],
    message: &'static [u8],
    details: Vec<&'static [u8]>,
    trailers_only: bool,
) -> impl Fn(u32) -> Vec<u8> + Send + Sync + 'static {
    move |s| {
        let mut t: Vec<(&str, &[u8])> = vec![("grpc-status", status), ("grpc-message", message)];
        for d in &details {
            t.push(("grpc-status-details-bin", d));
        }
        if trailers_only {
            let mut h = vec![S200, CT];
            h.extend(t);
            headers(s, &h, true)
        } else {
            response(s, &[S200, CT], &msg(b"ok"), &t)
        }
    }
}

/// grpc-status-details-bin reaches the caller decoded (Status::details),
/// from trailers and from a trailers-only answer, padded or not; a value
/// that is base64 but no google.rpc.Status keeps the headers' code and
/// message (internal/status NewWithProto ignores it).
#[test]
fn status_details_pass_through() {
    let proto = rpc_status(5, "nope");
    let padded = leak(b64(&proto));
    let unpadded = leak(b64(&proto).into_iter().filter(|c| *c != b'=').collect());
    let mut bad = Vec::new();
    for (name, script) in [
        (
            "trailers, padded",
            with_details(b"5", b"nope", vec![padded], false),
        ),
        (
            "trailers, unpadded",
            with_details(b"5", b"nope", vec![unpadded], false),
        ),
        (
            "trailers-only",
            with_details(b"5", b"nope", vec![padded], true),
        ),
    ] {
        match run(script, |_| {}) {
            Err(s)
                if s.code() == Code::NotFound
                    && s.message() == "nope"
                    && s.details() == Some(&proto[..]) => {}
            other => bad.push(format!("{name}: {other:?}")),
        }
    }
    // Not a google.rpc.Status (a wire type 7 field): Go keeps code and
    // message from the headers.
    let junk = leak(b64(&[0xff, 0xff]));
    match run(with_details(b"5", b"nope", vec![junk], false), |_| {}) {
        Err(s) if s.code() == Code::NotFound && s.message() == "nope" => {}
        other => bad.push(format!("not a Status proto: {other:?}")),
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// A -bin field that is not base64 fails the call INTERNAL (operateHeaders:
/// decodeMetadataHeader fails, headerError "transport: malformed %s: %v",
/// %v being Go's base64 error "illegal base64 data at input byte N").
#[test]
fn malformed_details_text_matches_go() {
    check_all(vec![
        (
            "details-bin \"!!!\" in trailers".to_string(),
            against(with_details(b"5", b"m", vec![b"!!!"], false), |_| {}),
            Code::Internal,
            Want::Prefix(
                "transport: malformed grpc-status-details-bin: illegal base64 data at input byte 0",
            ),
        ),
        (
            "details-bin \"!!!\" trailers-only".to_string(),
            against(with_details(b"5", b"m", vec![b"!!!"], true), |_| {}),
            Code::Internal,
            Want::Prefix(
                "transport: malformed grpc-status-details-bin: illegal base64 data at input byte 0",
            ),
        ),
    ]);
}

// ---------------------------------------------------------------------------
// Informational headers, misplaced HEADERS, header list limit, RST_STREAM.

/// operateHeaders returns on a 1xx without END_STREAM (any number of them,
/// with or without other fields), so the later HEADERS is the response.
#[test]
fn informational_headers_are_skipped() {
    let then_ok = |pre: Vec<Vec<(&'static str, &'static [u8])>>| {
        move |s: u32| {
            let mut out = Vec::new();
            for h in &pre {
                out.extend(headers(s, h, false));
            }
            out.extend(response(s, &[S200, CT], &msg(b"ok"), &[OK]));
            out
        }
    };
    check_all(vec![
        (
            "103 with a link field, then the response".to_string(),
            against(
                then_ok(vec![vec![
                    (":status", b"103"),
                    ("link", b"</a>; rel=preload"),
                ]]),
                |_| {},
            ),
            Code::Ok,
            Want::Exact("ok"),
        ),
        (
            "100, 103, 102, then the response".to_string(),
            against(
                then_ok(vec![
                    vec![(":status", b"100")],
                    vec![(":status", b"103")],
                    vec![(":status", b"102")],
                ]),
                |_| {},
            ),
            Code::Ok,
            Want::Exact("ok"),
        ),
    ]);
}

/// Transport errors: their codes (INTERNAL) for the errors h2 finds
/// itself (it reports them all as one local reset, so their words are
/// h2's, not gRPC-Go's); gRPC-Go's words for a server's reset. Go says:
/// operateHeaders' "protocol error:
/// informational header with status code %d must not have END_STREAM set",
/// "a HEADERS frame cannot appear in the middle of a stream" and, for a
/// header list over the limit (the framer's MaxHeaderListSize marks it
/// Truncated), "peer header list size exceeded limit"; handleRSTStream's
/// "stream terminated by RST_STREAM with error code: %v" (http2.ErrCode's
/// String: the code's name, or "unknown error code 0x%x").
#[test]
fn transport_error_texts_match_go() {
    let big: &'static [u8] = leak(vec![b'x'; 3000]);
    let small = |t: &mut TransportConfig| t.max_header_list_size = 1024;
    let rst = |code: u32| {
        move |s: u32| {
            let mut out = headers(s, &[S200, CT], false);
            out.extend(frame(RST_STREAM, 0, s, &code.to_be_bytes()));
            out
        }
    };
    check_all(vec![
        (
            "100 with END_STREAM".to_string(),
            against(|s| headers(s, &[(":status", b"100")], true), |_| {}),
            Code::Internal,
            Want::Prefix(""),
        ),
        (
            "HEADERS in the middle of the stream".to_string(),
            against(
                |s| {
                    let mut out = headers(s, &[S200, CT], false);
                    out.extend(data(s, &msg(b"ok"), false));
                    out.extend(headers(s, &[("x-more", b"1")], false));
                    out.extend(headers(s, &[OK], true));
                    out
                },
                |_| {},
            ),
            Code::Internal,
            Want::Prefix(""),
        ),
        (
            "3 KB response headers, limit 1 KiB".to_string(),
            against(
                move |s| response(s, &[S200, CT, ("x-big", big)], &msg(b"ok"), &[OK]),
                small,
            ),
            Code::Internal,
            Want::Prefix(""),
        ),
        (
            "3 KB trailers, limit 1 KiB".to_string(),
            against(
                move |s| response(s, &[S200, CT], &msg(b"ok"), &[OK, ("x-big", big)]),
                small,
            ),
            Code::Internal,
            Want::Prefix(""),
        ),
        (
            "RST_STREAM(PROTOCOL_ERROR) after the headers".to_string(),
            against(rst(1), |_| {}),
            Code::Internal,
            Want::Exact("stream terminated by RST_STREAM with error code: PROTOCOL_ERROR"),
        ),
        (
            "RST_STREAM(0x20) after the headers".to_string(),
            against(rst(0x20), |_| {}),
            Code::Unknown,
            Want::Exact("stream terminated by RST_STREAM with error code: unknown error code 0x20"),
        ),
    ]);
}
