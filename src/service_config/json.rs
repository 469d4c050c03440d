//! Reading proto3-JSON values with errors that name the JSON path that is
//! wrong (`methodConfig[1].timeout: "3" is not a duration`).

use crate::balancer::json as proto;
use serde_json::{Map, Value};
use std::time::Duration;

/// A JSON path, built as the parser descends.
#[derive(Clone, Debug)]
pub(super) struct Path(String);

impl Path {
    pub(super) fn root(name: &str) -> Path {
        Path(name.to_string())
    }
    pub(super) fn field(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }
    pub(super) fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }
    /// `path: what`.
    pub(super) fn err(&self, what: impl std::fmt::Display) -> String {
        format!("{}: {what}", self.0)
    }
}

/// The value as text for an error message, shortened.
pub(super) fn shown(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 40 {
        let mut end = 37;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

pub(super) fn object<'a>(v: &'a Value, at: &Path) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| at.err(format!("{} is not an object", shown(v))))
}

pub(super) fn array<'a>(v: &'a Value, at: &Path) -> Result<&'a Vec<Value>, String> {
    v.as_array()
        .ok_or_else(|| at.err(format!("{} is not an array", shown(v))))
}

pub(super) fn string<'a>(v: &'a Value, at: &Path) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| at.err(format!("{} is not a string", shown(v))))
}

pub(super) fn boolean(v: &Value, at: &Path) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| at.err(format!("{} is not a boolean", shown(v))))
}

/// A proto3 unsigned integer: a JSON number or a decimal string.
pub(super) fn uint(v: &Value, at: &Path, max: u64) -> Result<u64, String> {
    let n = proto::uint(v);
    let n = n.ok_or_else(|| at.err(format!("{} is not a non-negative integer", shown(v))))?;
    if n > max {
        return Err(at.err(format!("{n} is larger than {max}")));
    }
    Ok(n)
}

/// A JSON number (or its decimal string).
pub(super) fn number(v: &Value, at: &Path) -> Result<f64, String> {
    proto::number(v).ok_or_else(|| at.err(format!("{} is not a number", shown(v))))
}

/// A `google.protobuf.Duration` in JSON (see `balancer::json::duration`).
/// Negative durations are refused (no field of the service config takes one).
pub(super) fn duration(v: &Value, at: &Path) -> Result<Duration, String> {
    proto::duration(v).map_err(|e| at.err(format!("{} {e}", shown(v))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_are_proto3_json() {
        let at = Path::root("t");
        let ok = |s: &str| duration(&json!(s), &at).unwrap();
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("0.25s"), Duration::from_millis(250));
        assert_eq!(ok("1.000340012s"), Duration::new(1, 340_012));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        for bad in ["3", "s", "1.s5", "1.0000000001s", "abc", "1 s"] {
            let e = duration(&json!(bad), &at).unwrap_err();
            assert!(
                e.starts_with("t: ") && e.contains("not a duration"),
                "{bad}: {e}"
            );
        }
        assert!(duration(&json!("-1s"), &at)
            .unwrap_err()
            .contains("negative"));
        assert!(duration(&json!("315576000001s"), &at)
            .unwrap_err()
            .contains("out of range"));
        assert!(duration(&json!(3), &at)
            .unwrap_err()
            .contains("not a duration"));
    }

    #[test]
    fn integers_take_numbers_and_strings() {
        let at = Path::root("n");
        assert_eq!(uint(&json!(5), &at, 10).unwrap(), 5);
        assert_eq!(uint(&json!("5"), &at, 10).unwrap(), 5);
        assert_eq!(uint(&json!(5.0), &at, 10).unwrap(), 5);
        assert!(uint(&json!(11), &at, 10)
            .unwrap_err()
            .contains("larger than 10"));
        assert!(uint(&json!(-1), &at, 10)
            .unwrap_err()
            .contains("non-negative integer"));
        assert!(uint(&json!(1.5), &at, 10)
            .unwrap_err()
            .contains("non-negative integer"));
        assert!(uint(&json!(true), &at, 10)
            .unwrap_err()
            .contains("non-negative integer"));
    }
}
