//! ORCA load reports (gRFC A51), both ways a backend sends them:
//! per call, the `endpoint-load-metrics-bin` trailer a backend attaches to
//! a response (a serialized `xds.data.orca.v3.OrcaLoadReport`), turned into
//! the named metrics a policy's done hook reads (`DoneInfo::load`); and out
//! of band, the `xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`
//! server stream (`OrcaStream`), which sends one report every interval the
//! client asks for, on a connection of its own choosing.
//!
//! Names: the message's scalar fields by their proto names
//! (`cpu_utilization`, `mem_utilization`, `application_utilization`,
//! `rps_fractional`, `eps`), and its maps' entries as `<map>.<key>`
//! (`named_metrics.foo`, `utilization.foo`, `request_cost.foo`), as gRFC
//! A114 names them. Proto3 has no presence: a scalar that is 0 is absent and
//! left out.

use http::{HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::task::Context;
use std::time::Duration;

use super::grpc::{code, decode_binary, CallError};
use super::h2conn::Handle;
use super::stream::{ServerStream, StreamEvent};

/// The trailer that carries a per-call load report.
pub const TRAILER: &str = super::grpc::LOAD_REPORT_TRAILER;

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

/// The out-of-band reporting method (gRFC A51).
pub const STREAM_CORE_METRICS: &str = "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics";

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds, 0..1e9.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `xds.service.orca.v3.OrcaLoadReportRequest` (xds/service/orca/v3/orca.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct OrcaLoadReportRequest {
    /// How often the server should send a report (it may clamp it to a
    /// minimum of its own).
    #[prost(message, optional, tag = "1")]
    pub report_interval: Option<ProtoDuration>,
    /// Request cost metrics to include (unused by gRPC's clients).
    #[prost(string, repeated, tag = "2")]
    pub request_cost_names: Vec<String>,
}

impl OrcaLoadReportRequest {
    /// A request for a report every `interval`.
    pub fn every(interval: Duration) -> OrcaLoadReportRequest {
        OrcaLoadReportRequest {
            report_interval: Some(ProtoDuration {
                seconds: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
                nanos: interval.subsec_nanos() as i32,
            }),
            request_cost_names: Vec::new(),
        }
    }
}

/// What an out-of-band stream produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OrcaEvent {
    /// One report.
    Report(OrcaLoadReport),
    /// The stream is over (it is never supposed to end: even OK is an
    /// end); UNIMPLEMENTED means the server has no ORCA service.
    Ended(CallError),
}

/// A `StreamCoreMetrics` call on one connection, polled by its owner with
/// the connection's waker (see `super::stream`); dropping it cancels it.
#[derive(Debug)]
pub(crate) struct OrcaStream {
    stream: ServerStream,
}

impl OrcaStream {
    /// Prepares the call asking for a report every `interval`; nothing is
    /// sent until the first poll.
    pub(crate) fn start(handle: &Handle, interval: Duration) -> Result<OrcaStream, CallError> {
        let request = prost::Message::encode_to_vec(&OrcaLoadReportRequest::every(interval));
        Ok(OrcaStream {
            stream: ServerStream::start(handle, STREAM_CORE_METRICS, &request)?,
        })
    }

    /// The next event, or `None` until the waker fires. Call until `None`.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Option<OrcaEvent> {
        match self.stream.poll(cx)? {
            StreamEvent::Message(msg) => match OrcaLoadReport::decode_lenient(msg.as_ref()) {
                Ok(report) => Some(OrcaEvent::Report(report)),
                Err(e) => {
                    self.stream.close();
                    Some(OrcaEvent::Ended(CallError::new(
                        code::INTERNAL,
                        format!("malformed OrcaLoadReport: {e}"),
                    )))
                }
            },
            StreamEvent::Ended(e) => Some(OrcaEvent::Ended(e)),
        }
    }
}

/// Decodes an `OrcaLoadReport` as protobuf-go and protobuf-java do: a known
/// field that arrives with another wire type than its own is an unknown
/// field, skipped, and the rest of the report stands (prost would refuse
/// the whole message). Field decoding itself is prost's.
#[derive(Debug, Default)]
struct Lenient(OrcaLoadReport);

impl prost::Message for Lenient {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        self.0.encode_raw(buf)
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        use prost::encoding::WireType::{LengthDelimited, SixtyFourBit, Varint};
        let own = match tag {
            1 | 2 | 6 | 7 | 9 => Some(SixtyFourBit),
            3 => Some(Varint),
            4 | 5 | 8 => Some(LengthDelimited),
            _ => None,
        };
        match own {
            Some(own) if own != wire_type => prost::encoding::skip_field(wire_type, tag, buf, ctx),
            _ => self.0.merge_field(tag, wire_type, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    fn clear(&mut self) {
        self.0.clear()
    }
}

impl OrcaLoadReport {
    /// Decodes a serialized report (see `Lenient`).
    pub fn decode_lenient(bytes: &[u8]) -> Result<OrcaLoadReport, prost::DecodeError> {
        <Lenient as prost::Message>::decode(bytes).map(|l| l.0)
    }

    /// The report in `trailers`, if there is exactly one and it decodes. A
    /// report that does not decode, or several (which is the one?), is
    /// ignored, as gRPC-Go's `ToLoadReport` does: it must not fail the call
    /// that carried it.
    pub fn from_trailers(trailers: &HeaderMap) -> Option<OrcaLoadReport> {
        let mut values = trailers.get_all(TRAILER).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        OrcaLoadReport::from_value(value)
    }

    /// The report in one `endpoint-load-metrics-bin` value, if it decodes.
    pub fn from_value(value: &HeaderValue) -> Option<OrcaLoadReport> {
        let bytes = decode_binary(value.as_bytes())?;
        OrcaLoadReport::decode_lenient(bytes.as_slice()).ok()
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
    use base64::Engine;
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

    /// Every field of `OrcaLoadReport` as the proto numbers it (a report
    /// written field by field on the wire, not by this struct), fields
    /// this version does not know (tags 10, 1000, every wire type) skipped.
    #[test]
    fn every_field_decodes_and_unknown_fields_are_skipped() {
        fn key(tag: u32, wire: u32, out: &mut Vec<u8>) {
            prost::encoding::encode_varint(u64::from(tag << 3 | wire), out);
        }
        fn double(tag: u32, v: f64, out: &mut Vec<u8>) {
            key(tag, 1, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        fn entry(tag: u32, k: &str, v: f64, out: &mut Vec<u8>) {
            let mut e = Vec::new();
            key(1, 2, &mut e);
            prost::encoding::encode_varint(k.len() as u64, &mut e);
            e.extend_from_slice(k.as_bytes());
            double(2, v, &mut e);
            key(tag, 2, out);
            prost::encoding::encode_varint(e.len() as u64, out);
            out.extend_from_slice(&e);
        }
        let mut b = Vec::new();
        double(1, 0.5, &mut b);
        double(2, 0.25, &mut b);
        key(3, 0, &mut b);
        b.push(7);
        entry(4, "bytes", 3487.0, &mut b);
        entry(5, "gpu", 0.75, &mut b);
        double(6, 120.5, &mut b);
        double(7, 1.5, &mut b);
        entry(8, "queue", 42.0, &mut b);
        double(9, 0.625, &mut b);
        // Unknown: a varint, a fixed64, a length-delimited, a fixed32.
        key(10, 0, &mut b);
        b.push(1);
        key(1000, 1, &mut b);
        b.extend_from_slice(&[0; 8]);
        key(11, 2, &mut b);
        b.extend_from_slice(&[2, 0xde, 0xad]);
        key(12, 5, &mut b);
        b.extend_from_slice(&[0; 4]);
        let got = OrcaLoadReport::from_trailers(&trailers(PADDED.encode(&b))).unwrap();
        let mut m = got.metrics();
        m.sort_by(|a, b| a.0.cmp(&b.0));
        let want: Vec<(String, f64)> = [
            ("application_utilization", 0.625),
            ("cpu_utilization", 0.5),
            ("eps", 1.5),
            ("mem_utilization", 0.25),
            ("named_metrics.queue", 42.0),
            ("request_cost.bytes", 3487.0),
            ("rps_fractional", 120.5),
            ("utilization.gpu", 0.75),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
        assert_eq!(m, want);
        assert_eq!(got.rps, 7);
    }

    /// A known field sent with another wire type (cpu_utilization as a
    /// varint, rps as a fixed64, a map as a fixed32) is an unknown field to
    /// protobuf-go and protobuf-java: skipped, the rest of the report
    /// kept. prost alone would refuse the whole report.
    #[test]
    fn a_known_field_with_another_wire_type_is_skipped() {
        let mut b = Vec::new();
        let key = |tag: u32, wire: u32, out: &mut Vec<u8>| {
            prost::encoding::encode_varint(u64::from(tag << 3 | wire), out)
        };
        key(1, 0, &mut b);
        b.push(3);
        key(3, 1, &mut b);
        b.extend_from_slice(&[0; 8]);
        key(8, 5, &mut b);
        b.extend_from_slice(&[0; 4]);
        key(9, 1, &mut b);
        b.extend_from_slice(&0.5f64.to_le_bytes());
        key(6, 1, &mut b);
        b.extend_from_slice(&100.0f64.to_le_bytes());
        let got = OrcaLoadReport::decode_lenient(&b).unwrap();
        assert_eq!(got.cpu_utilization, 0.0);
        assert_eq!(got.rps, 0);
        assert!(got.named_metrics.is_empty());
        assert_eq!(got.application_utilization, 0.5);
        assert_eq!(got.rps_fractional, 100.0);
        // Truncated input is still refused.
        assert!(OrcaLoadReport::decode_lenient(&b[..b.len() - 1]).is_err());
    }

    /// The unused low bits of the last base64 character need not be zero:
    /// gRPC-Go's decoder (not `Strict`) ignores them, so the report counts.
    #[test]
    fn a_trailer_with_nonzero_trailing_bits_still_decodes() {
        // cpu_utilization (tag 1, fixed64) and rps (tag 3, varint): 11
        // bytes, so the last base64 quantum holds two bytes and two unused
        // bits.
        let mut bytes = vec![0x09];
        bytes.extend_from_slice(&0.5f64.to_le_bytes());
        bytes.extend_from_slice(&[0x18, 0x01]); // rps = 1
        assert_eq!(bytes.len() % 3, 2);
        let canonical = PADDED.encode(&bytes);
        // Two bytes in the last quantum: "XYZ=", Z's low two bits unused.
        let mut odd = canonical.clone().into_bytes();
        let z = odd.len() - 2;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let i = alphabet.iter().position(|c| *c == odd[z]).unwrap();
        assert_eq!(i & 3, 0, "canonical");
        odd[z] = alphabet[i | 1];
        let odd = String::from_utf8(odd).unwrap();
        for v in [
            canonical,
            odd.clone(),
            odd.trim_end_matches('=').to_string(),
        ] {
            let got = OrcaLoadReport::from_trailers(&trailers(v.clone()));
            assert_eq!(
                got.map(|r| (r.cpu_utilization, r.rps)),
                Some((0.5, 1)),
                "{v}"
            );
        }
    }

    #[test]
    fn the_oob_request_carries_the_interval_as_a_proto_duration() {
        let req = OrcaLoadReportRequest::every(Duration::from_millis(2500));
        let bytes = req.encode_to_vec();
        // report_interval (field 1) { seconds: 2, nanos: 500,000,000 }.
        assert_eq!(&bytes[..4], &[0x0a, 8, 0x08, 2]);
        let back = OrcaLoadReportRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            back.report_interval,
            Some(ProtoDuration {
                seconds: 2,
                nanos: 500_000_000
            })
        );
    }

    #[test]
    fn no_trailer_or_a_bad_one_is_no_report() {
        assert!(load_metrics(&HeaderMap::new()).is_empty());
        assert!(load_metrics(&trailers("not base64!".into())).is_empty());
        // Valid base64, not a message (a truncated varint field).
        assert!(load_metrics(&trailers(PADDED.encode([0x18, 0xff]))).is_empty());
        // Two reports, each good: which one? Neither (gRPC-Go's
        // TestToLoadReport, "multiple load reports").
        let good = PADDED.encode(report().encode_to_vec());
        let mut two = trailers(good.clone());
        two.append(TRAILER, HeaderValue::from_str(&good).unwrap());
        assert!(load_metrics(&two).is_empty());
    }
}
