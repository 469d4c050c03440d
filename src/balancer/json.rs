//! Reading proto3 JSON values as gRPC does, for the policies' config
//! parsers and the service config alike: integers and floats that may come
//! as strings, and `google.protobuf.Duration`s.

use serde_json::{Map, Value};
use std::time::Duration;

/// Field `name` (lowerCamelCase) of a config object (a `Value` or its
/// `Map`), found as gRPC's parsers find it: by that name, else by a name
/// that differs only in ASCII case ("MaxAttempts": gRPC-Go reads configs
/// with encoding/json, which matches fields that way, and its tests spell
/// them so). Not by proto's own field name ("max_attempts"): gRPC-Go,
/// C-core and Java all ignore that as an unknown field. `None` for no such
/// field, a field set to `null` (proto3 JSON reads null as the field's
/// default: absent), or a value that is not an object.
pub(crate) fn config_field<'a, T: Fields + ?Sized>(object: &'a T, name: &str) -> Option<&'a Value> {
    object
        .fields()
        .and_then(|o| member(o, name))
        .filter(|v| !v.is_null())
}

/// What `config_field` looks fields up in.
pub(crate) trait Fields {
    fn fields(&self) -> Option<&Map<String, Value>>;
}

impl Fields for Value {
    fn fields(&self) -> Option<&Map<String, Value>> {
        self.as_object()
    }
}

impl Fields for Map<String, Value> {
    fn fields(&self) -> Option<&Map<String, Value>> {
        Some(self)
    }
}

fn member<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = object.get(name) {
        return Some(v);
    }
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The largest proto `Duration` (10,000 years, in seconds).
pub(crate) const MAX_DURATION_SECS: u64 = 315_576_000_000;

/// Why a value is not a duration a config field can take. Displayed as
/// what follows the value in a message (`"3" is not a duration`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// Not a string of decimal seconds with an `s` suffix.
    Malformed,
    /// Below zero (no config field takes one).
    Negative,
    /// Longer than a proto `Duration` can be.
    OutOfRange,
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DurationError::Malformed => "is not a duration",
            DurationError::Negative => "is negative",
            DurationError::OutOfRange => "is out of range",
        })
    }
}

/// A `google.protobuf.Duration` in JSON: a string of decimal seconds with
/// an `s` suffix and at most nine fraction digits ("10s", "0.5s",
/// "1.000340012s"). As gRPC-Go reads it, the whole or the fraction part may
/// be left out (".5s", "1.s", not both) and a sign may lead ("+1s", "-0s");
/// a negative duration is refused.
pub(crate) fn duration(v: &Value) -> Result<Duration, DurationError> {
    duration_str(v.as_str().ok_or(DurationError::Malformed)?)
}

/// `duration` of the string itself.
fn duration_str(s: &str) -> Result<Duration, DurationError> {
    let body = s.strip_suffix('s').ok_or(DurationError::Malformed)?;
    let (negative, body) = match body.as_bytes().first() {
        Some(b'-') => (true, &body[1..]),
        Some(b'+') => (false, &body[1..]),
        _ => (false, body),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) || frac.len() > 9 {
        return Err(DurationError::Malformed);
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        // Only digits: too many of them is the one way to fail.
        whole.parse().map_err(|_| DurationError::OutOfRange)?
    };
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")
            .parse()
            .map_err(|_| DurationError::Malformed)?
    };
    if negative && (secs, nanos) != (0, 0) {
        return Err(DurationError::Negative);
    }
    if secs > MAX_DURATION_SECS {
        return Err(DurationError::OutOfRange);
    }
    Ok(Duration::new(secs, nanos))
}

/// A proto3 unsigned integer: a JSON number without a fraction (`5`, or
/// `5.0`) or its decimal string (`"5"`).
pub(crate) fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.parse::<u64>().ok(),
        _ => None,
    }
}

/// A proto3 floating-point number: a finite JSON number or its decimal
/// string (`1.5` or `"1.5"`).
pub(crate) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_as_grpc_reads_them() {
        let ok = |s: &str| duration(&json!(s)).unwrap();
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("0.25s"), Duration::from_millis(250));
        assert_eq!(ok("1.000340012s"), Duration::new(1, 340_012));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("+2s"), Duration::from_secs(2));
        assert_eq!(ok("-0s"), Duration::ZERO);
        assert_eq!(ok("-0.000s"), Duration::ZERO);
        assert_eq!(
            ok("315576000000.999999999s"),
            Duration::new(MAX_DURATION_SECS, 999_999_999)
        );
        for bad in [
            "",
            "3",
            "s",
            ".s",
            "+s",
            "1.s5",
            "1.0000000001s",
            "abc",
            "1 s",
            " 1s",
            "1e3s",
            "1.5",
            "++1s",
            "+-1s",
            "1..5s",
            "0x10s",
        ] {
            assert_eq!(
                duration(&json!(bad)),
                Err(DurationError::Malformed),
                "{bad:?}"
            );
        }
        for bad in ["-1s", "-0.5s", "-.1s"] {
            assert_eq!(
                duration(&json!(bad)),
                Err(DurationError::Negative),
                "{bad:?}"
            );
        }
        for bad in ["315576000001s", "99999999999999999999999s"] {
            assert_eq!(
                duration(&json!(bad)),
                Err(DurationError::OutOfRange),
                "{bad:?}"
            );
        }
        assert_eq!(duration(&json!(3)), Err(DurationError::Malformed));
        assert_eq!(duration(&json!(null)), Err(DurationError::Malformed));
    }

    #[test]
    fn numbers_come_as_numbers_or_strings() {
        assert_eq!(uint(&json!(5)), Some(5));
        assert_eq!(uint(&json!(5.0)), Some(5));
        assert_eq!(uint(&json!("5")), Some(5));
        for bad in [
            json!(-1),
            json!(1.5),
            json!("x"),
            json!("-1"),
            json!(null),
            json!([]),
        ] {
            assert_eq!(uint(&bad), None, "{bad}");
        }
        assert_eq!(number(&json!(1.5)), Some(1.5));
        assert_eq!(number(&json!("1.5")), Some(1.5));
        assert_eq!(number(&json!(2)), Some(2.0));
        for bad in [json!("NaN"), json!("inf"), json!("x"), json!(true)] {
            assert_eq!(number(&bad), None, "{bad}");
        }
    }
}
