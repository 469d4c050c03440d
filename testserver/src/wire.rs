//! The few lines of gRPC framing and grpc.health.v1 protobuf the server
//! side needs (the client side's full versions live in switchyard-lb, which
//! this crate must not depend on).

use bytes::{BufMut, Bytes, BytesMut};

/// HealthCheckResponse.ServingStatus: the service is serving.
pub const SERVING: u32 = 1;
/// HealthCheckResponse.ServingStatus: the service is not serving.
pub const NOT_SERVING: u32 = 2;
/// HealthCheckResponse.ServingStatus, Watch only: the server does not know
/// the service.
pub const SERVICE_UNKNOWN: u32 = 3;

/// One uncompressed gRPC message: flag 0, 4-byte big-endian length, bytes.
pub fn encode_message(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

/// The message of a unary request body: exactly one uncompressed message and
/// nothing after it; `None` for anything else.
pub fn decode_unary(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let msg = &rest[4..];
    (flag == 0 && usize::try_from(len).ok()? == msg.len()).then_some(msg)
}

/// HealthCheckResponse { ServingStatus status = 1; } (proto3 omits 0).
pub fn encode_health_response(status: u32) -> Vec<u8> {
    let mut out = Vec::new();
    if status != 0 {
        out.push(0x08);
        put_varint(&mut out, status.into());
    }
    out
}

/// HealthCheckRequest { string service = 1; }: the service name; `None` if
/// malformed. Unknown fields are skipped, as protobuf requires.
pub fn decode_health_request(mut buf: &[u8]) -> Option<String> {
    let mut service = String::new();
    while !buf.is_empty() {
        let key = get_varint(&mut buf)?;
        match key & 7 {
            0 => {
                get_varint(&mut buf)?;
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            2 => {
                let n = usize::try_from(get_varint(&mut buf)?).ok()?;
                let bytes = buf.get(..n)?;
                buf = &buf[n..];
                if key >> 3 == 1 {
                    service = String::from_utf8(bytes.to_vec()).ok()?;
                }
            }
            _ => return None,
        }
    }
    Some(service)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_framing_round_trips_and_rejects_the_rest() {
        assert_eq!(decode_unary(&encode_message(b"hi")), Some(&b"hi"[..]));
        assert_eq!(decode_unary(&encode_message(b"")), Some(&b""[..]));
        let mut two = encode_message(b"a").to_vec();
        two.extend_from_slice(&encode_message(b"b"));
        assert_eq!(decode_unary(&two), None, "a second message");
        assert_eq!(decode_unary(&[0, 0, 0, 0, 3, b'x']), None, "short");
        assert_eq!(decode_unary(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(decode_unary(&[0, 0, 0]), None, "no prefix");
        assert_eq!(decode_unary(&[]), None);
    }

    #[test]
    fn health_messages() {
        assert_eq!(decode_health_request(&[]), Some(String::new()));
        assert_eq!(
            decode_health_request(&[0x0a, 3, b'a', b'.', b'B']),
            Some("a.B".into())
        );
        // Unknown fields (varint, fixed32, fixed64, bytes) are skipped.
        let buf = [
            0x10, 0x05, 0x1d, 1, 2, 3, 4, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 1, b'z', 0x0a, 1,
            b's',
        ];
        assert_eq!(decode_health_request(&buf), Some("s".into()));
        assert_eq!(decode_health_request(&[0x0a, 5, b'a']), None, "truncated");
        assert_eq!(decode_health_request(&[0x0a, 1, 0xff]), None, "not UTF-8");
        assert_eq!(decode_health_request(&[0x0b]), None, "bad wire type");
        assert_eq!(encode_health_response(0), Vec::<u8>::new());
        assert_eq!(encode_health_response(SERVING), vec![0x08, 1]);
        assert_eq!(encode_health_response(300), vec![0x08, 0xac, 0x02]);
    }
}
