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
        if let (1, Field::Bytes(bytes)) = next_field(&mut buf)? {
            service = String::from_utf8(bytes.to_vec()).ok()?;
        }
    }
    Some(service)
}

/// `xds.data.orca.v3.OrcaLoadReport` with `load`'s fields (doubles are
/// fixed64; proto3 leaves zeros out).
pub fn encode_orca_report(load: &crate::options::OrcaLoad) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, value) in [
        (1u8, load.cpu_utilization),
        (6, load.rps_fractional),
        (7, load.eps),
        (9, load.application_utilization),
    ] {
        if value != 0.0 {
            out.push(field << 3 | 1);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out
}

/// `xds.service.orca.v3.OrcaLoadReportRequest`'s `report_interval` (field 1,
/// a `google.protobuf.Duration`); `Some(ZERO)` when absent, `None` if
/// malformed.
pub fn decode_orca_request(mut buf: &[u8]) -> Option<std::time::Duration> {
    let mut interval = std::time::Duration::ZERO;
    while !buf.is_empty() {
        let (1, Field::Bytes(mut bytes)) = next_field(&mut buf)? else {
            continue;
        };
        let (mut secs, mut nanos) = (0u64, 0u64);
        while !bytes.is_empty() {
            match next_field(&mut bytes)? {
                (1, Field::Varint(v)) => secs = v,
                (2, Field::Varint(v)) => nanos = v.min(999_999_999),
                (_, Field::Varint(_)) => {}
                _ => return None,
            }
        }
        interval = std::time::Duration::new(secs, nanos as u32);
    }
    Some(interval)
}

/// Standard base64 with padding: what gRPC's `-bin` metadata carries.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A protobuf field's value, by wire type.
enum Field<'a> {
    Varint(u64),
    /// 64- or 32-bit: nothing here reads one.
    Fixed,
    /// Length-delimited: a string, bytes or a message.
    Bytes(&'a [u8]),
}

/// The next field of a message (number, value), `buf` advanced past it;
/// `None` if malformed. What the decoders share: they skip the fields they
/// do not read, as protobuf requires.
fn next_field<'a>(buf: &mut &'a [u8]) -> Option<(u64, Field<'a>)> {
    let key = get_varint(buf)?;
    let value = match key & 7 {
        0 => Field::Varint(get_varint(buf)?),
        1 => {
            *buf = buf.get(8..)?;
            Field::Fixed
        }
        5 => {
            *buf = buf.get(4..)?;
            Field::Fixed
        }
        2 => {
            let n = usize::try_from(get_varint(buf)?).ok()?;
            let bytes = buf.get(..n)?;
            *buf = &buf[n..];
            Field::Bytes(bytes)
        }
        _ => return None,
    };
    Some((key >> 3, value))
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
    fn orca_messages() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
        let load = crate::options::OrcaLoad {
            cpu_utilization: 0.5,
            eps: 2.0,
            ..Default::default()
        };
        let mut want = vec![0x09];
        want.extend_from_slice(&0.5f64.to_le_bytes());
        want.push(0x39);
        want.extend_from_slice(&2.0f64.to_le_bytes());
        assert_eq!(encode_orca_report(&load), want);
        // report_interval { seconds: 2, nanos: 500 } and an unknown field.
        let req = [0x0a, 4, 0x08, 2, 0x10, 0xf4, 0x03, 0x12, 1, b'x'];
        assert_eq!(decode_orca_request(&req[..]), None, "truncated nanos");
        let req = [0x0a, 5, 0x08, 2, 0x10, 0xf4, 0x03, 0x12, 1, b'x'];
        assert_eq!(
            decode_orca_request(&req),
            Some(std::time::Duration::new(2, 500))
        );
        assert_eq!(decode_orca_request(&[]), Some(std::time::Duration::ZERO));
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
