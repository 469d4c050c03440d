//! ORCA per-call load reports (gRFC A51): the `endpoint-load-metrics-bin`
//! trailer a backend attaches to a response, a serialized
//! `xds.data.orca.v3.OrcaLoadReport`, turned into the named metrics a
//! policy's done hook reads (`DoneInfo::load`).
//!
//! Names: the message's scalar fields by their proto names
//! (`cpu_utilization`, `mem_utilization`, `application_utilization`,
//! `rps_fractional`, `eps`), and its maps' entries as `<map>.<key>`
//! (`named_metrics.foo`, `utilization.foo`, `request_cost.foo`), as gRFC
//! A114 names them. Proto3 has no presence: a scalar that is 0 is absent and
//! left out.

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::HeaderMap;
use std::collections::HashMap;

/// The trailer that carries a per-call load report.
pub const TRAILER: &str = "endpoint-load-metrics-bin";

/// `xds.data.orca.v3.OrcaLoadReport` (xds/data/orca/v3/orca_load_report.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct OrcaLoadReport {
    /// CPU utilization, normally in [0, 1].
    #[prost(double, tag = "1")]
    pub cpu_utilization: f64,
    /// Memory utilization, in [0, 1].
    #[prost(double, tag = "2")]
    pub mem_utilization: f64,
    /// Deprecated integer queries per second.
    #[prost(uint64, tag = "3")]
    pub rps: u64,
    /// Application-defined costs of this request.
    #[prost(map = "string, double", tag = "4")]
    pub request_cost: HashMap<String, f64>,
    /// Application-defined utilizations, in [0, 1].
    #[prost(map = "string, double", tag = "5")]
    pub utilization: HashMap<String, f64>,
    /// Queries per second.
    #[prost(double, tag = "6")]
    pub rps_fractional: f64,
    /// Errors per second.
    #[prost(double, tag = "7")]
    pub eps: f64,
    /// Application-defined metrics.
    #[prost(map = "string, double", tag = "8")]
    pub named_metrics: HashMap<String, f64>,
    /// Application-specific utilization (preferred over CPU by WRR).
    #[prost(double, tag = "9")]
    pub application_utilization: f64,
}

/// gRPC binary metadata is base64; senders may or may not pad it.
const BINARY_HEADER: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl OrcaLoadReport {
    /// The report in `trailers`, if there is one that decodes. A report
    /// that does not decode is ignored, as gRPC does: it must not fail the
    /// call that carried it.
    pub fn from_trailers(trailers: &HeaderMap) -> Option<OrcaLoadReport> {
        let value = trailers.get(TRAILER)?;
        let bytes = BINARY_HEADER.decode(value.as_bytes().trim_ascii()).ok()?;
        <OrcaLoadReport as prost::Message>::decode(bytes.as_slice()).ok()
    }

    /// The report as named metrics (see the module for the names).
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let scalars = [
            ("cpu_utilization", self.cpu_utilization),
            ("mem_utilization", self.mem_utilization),
            ("application_utilization", self.application_utilization),
            ("rps_fractional", self.rps_fractional),
            ("eps", self.eps),
        ];
        let mut out: Vec<(String, f64)> = scalars
            .into_iter()
            .filter(|(_, v)| *v != 0.0)
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        for (map, entries) in [
            ("request_cost", &self.request_cost),
            ("utilization", &self.utilization),
            ("named_metrics", &self.named_metrics),
        ] {
            out.extend(entries.iter().map(|(k, v)| (format!("{map}.{k}"), *v)));
        }
        out
    }
}

/// The named metrics of the report in `trailers`; empty (no allocation)
/// when there is none.
pub fn load_metrics(trailers: &HeaderMap) -> Vec<(String, f64)> {
    OrcaLoadReport::from_trailers(trailers)
        .map(|r| r.metrics())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD as PADDED, STANDARD_NO_PAD};
    use http::HeaderValue;
    use prost::Message;

    fn report() -> OrcaLoadReport {
        OrcaLoadReport {
            cpu_utilization: 0.5,
            application_utilization: 0.25,
            rps_fractional: 100.0,
            eps: 2.0,
            named_metrics: HashMap::from([("foo".to_string(), 0.75)]),
            ..Default::default()
        }
    }

    fn trailers(value: String) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TRAILER, HeaderValue::from_str(&value).unwrap());
        h
    }

    #[test]
    fn a_trailer_decodes_padded_or_not_into_named_metrics() {
        let bytes = report().encode_to_vec();
        for engine in [PADDED, STANDARD_NO_PAD] {
            let got = OrcaLoadReport::from_trailers(&trailers(engine.encode(&bytes)));
            assert_eq!(got, Some(report()));
        }
        let mut m = load_metrics(&trailers(PADDED.encode(&bytes)));
        m.sort_by(|a, b| a.0.cmp(&b.0));
        let want: Vec<(String, f64)> = [
            ("application_utilization", 0.25),
            ("cpu_utilization", 0.5),
            ("eps", 2.0),
            ("named_metrics.foo", 0.75),
            ("rps_fractional", 100.0),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
        assert_eq!(m, want);
    }

    #[test]
    fn no_trailer_or_a_bad_one_is_no_report() {
        assert!(load_metrics(&HeaderMap::new()).is_empty());
        assert!(load_metrics(&trailers("not base64!".into())).is_empty());
        // Valid base64, not a message (a truncated varint field).
        assert!(load_metrics(&trailers(PADDED.encode([0x18, 0xff]))).is_empty());
    }
}
