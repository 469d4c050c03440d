//! Hand-encoded HTTP/2 frames for the test servers that misbehave on
//! purpose (HPACK literals without indexing or Huffman), shared by the test
//! files that include it with `#[path = "common/h2_frames.rs"] mod h2_frames;`.
#![allow(dead_code)]

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;

/// One frame: the 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One HEADERS frame (END_HEADERS) carrying `fields`, literal encoded.
pub fn headers(stream: u32, fields: &[(&str, &[u8])], end_stream: bool) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.extend(lit(name.as_bytes(), value));
    }
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &block)
}

pub fn data(stream: u32, payload: &[u8], end_stream: bool) -> Vec<u8> {
    frame(
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
        payload,
    )
}

/// HPACK literal header field without indexing, new name, no Huffman.
pub fn lit(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x00];
    hpack_int(&mut b, 7, name.len());
    b.extend_from_slice(name);
    hpack_int(&mut b, 7, value.len());
    b.extend_from_slice(value);
    b
}

/// An HPACK integer with an `n`-bit prefix (the prefix's other bits 0).
pub fn hpack_int(b: &mut Vec<u8>, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        b.push(v as u8);
        return;
    }
    b.push(max as u8);
    v -= max;
    while v >= 128 {
        b.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    b.push(v as u8);
}

/// A gRPC length-prefixed message with compressed flag `flag`.
pub fn msg_with_flag(flag: u8, m: &[u8]) -> Vec<u8> {
    let mut b = vec![flag];
    b.extend((m.len() as u32).to_be_bytes());
    b.extend_from_slice(m);
    b
}

/// A gRPC length-prefixed message, uncompressed.
pub fn msg(m: &[u8]) -> Vec<u8> {
    msg_with_flag(0, m)
}

/// A whole OK answer on stream `s`: HEADERS (200, application/grpc), one
/// message "ok", trailers grpc-status 0.
pub fn ok_answer(s: u32) -> Vec<u8> {
    let mut out = headers(
        s,
        &[(":status", b"200"), ("content-type", b"application/grpc")],
        false,
    );
    out.extend(data(s, &msg(b"ok"), false));
    out.extend(headers(s, &[("grpc-status", b"0")], true));
    out
}
