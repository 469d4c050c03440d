//! Hand-written protobuf for grpc.health.v1: the two messages are one field
//! each, so a codegen dependency is not worth it.

/// HealthCheckResponse.ServingStatus values.
pub const UNKNOWN: u32 = 0;
/// The service is serving.
pub const SERVING: u32 = 1;
/// The service is not serving.
pub const NOT_SERVING: u32 = 2;
/// Watch only: the server does not know the service.
pub const SERVICE_UNKNOWN: u32 = 3;

/// The proto name of a ServingStatus value, for messages; a value the enum
/// lacks as its number (as gRPC-Go prints one).
pub fn status_name(status: u32) -> std::borrow::Cow<'static, str> {
    match status {
        UNKNOWN => "UNKNOWN".into(),
        SERVING => "SERVING".into(),
        NOT_SERVING => "NOT_SERVING".into(),
        SERVICE_UNKNOWN => "SERVICE_UNKNOWN".into(),
        _ => status.to_string().into(),
    }
}

/// HealthCheckRequest { string service = 1; }
pub fn encode_request(service: &str) -> Vec<u8> {
    if service.is_empty() {
        return Vec::new(); // proto3 omits default values
    }
    let mut out = vec![0x0a];
    put_varint(&mut out, service.len() as u64);
    out.extend_from_slice(service.as_bytes());
    out
}

/// Decodes a HealthCheckRequest's service name; `None` if malformed.
pub fn decode_request(buf: &[u8]) -> Option<String> {
    let mut service = String::new();
    for_each_field(buf, |field, value| {
        if let (1, Field::Bytes(b)) = (field, value) {
            service = String::from_utf8(b.to_vec()).ok()?;
        }
        Some(())
    })?;
    Some(service)
}

/// HealthCheckResponse { ServingStatus status = 1; }
pub fn encode_response(status: u32) -> Vec<u8> {
    if status == 0 {
        return Vec::new();
    }
    let mut out = vec![0x08];
    put_varint(&mut out, status.into());
    out
}

/// Decodes a HealthCheckResponse's status; `None` if malformed.
pub fn decode_response(buf: &[u8]) -> Option<u32> {
    let mut status = UNKNOWN;
    for_each_field(buf, |field, value| {
        if let (1, Field::Varint(v)) = (field, value) {
            status = u32::try_from(v).ok()?;
        }
        Some(())
    })?;
    Some(status)
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
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

/// Walks fields, skipping unknown ones (forward compatibility).
fn for_each_field<'a>(
    mut buf: &'a [u8],
    mut f: impl FnMut(u64, Field<'a>) -> Option<()>,
) -> Option<()> {
    while !buf.is_empty() {
        let key = get_varint(&mut buf)?;
        let value = match key & 7 {
            0 => Field::Varint(get_varint(&mut buf)?),
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                buf = buf.get(n..)?;
                Field::Fixed
            }
            2 => {
                let n = usize::try_from(get_varint(&mut buf)?).ok()?;
                let b = buf.get(..n)?;
                buf = &buf[n..];
                Field::Bytes(b)
            }
            _ => return None,
        };
        f(key >> 3, value)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(decode_request(&encode_request("")), Some(String::new()));
        assert_eq!(decode_request(&encode_request("a.B")), Some("a.B".into()));
        for s in [UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN] {
            assert_eq!(decode_response(&encode_response(s)), Some(s));
        }
        // Unknown fields are skipped.
        let mut buf = vec![0x10, 0x05, 0x1d, 1, 2, 3, 4];
        buf.extend(encode_response(SERVING));
        assert_eq!(decode_response(&buf), Some(SERVING));
        assert_eq!(decode_response(&[0x08]), None);
    }
}
