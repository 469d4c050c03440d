//! `weighted_round_robin`'s config (gRFC A58, A114), every field with its
//! default and bound as gRPC has them.

use crate::balancer::json::config_field;
use std::time::Duration;

/// A parsed `{"weighted_round_robin": {...}}` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct WrrConfig {
    /// `enableOobLoadReport` (default false): load reports come from an
    /// out-of-band ORCA stream on each READY endpoint's connection instead
    /// of per-call trailers (which are then ignored, as in gRPC). The
    /// stream needs the library's own connections: on a channel whose
    /// host owns the transports no report comes, and every endpoint weighs
    /// the same; a host feeds load through `done` with this off.
    pub enable_oob_load_report: bool,
    /// `oobReportingPeriod` (default 10 s; zero when OOB is off): the
    /// interval the ORCA stream asks the backend for.
    pub oob_reporting_period: Duration,
    /// `blackoutPeriod` (default 10 s; zero disables it): how long an
    /// endpoint must have reported before its weight counts.
    pub blackout_period: Duration,
    /// `weightExpirationPeriod` (default 3 min): a weight not refreshed for
    /// this long no longer counts.
    pub weight_expiration_period: Duration,
    /// `weightUpdatePeriod` (default 1 s, at least 100 ms): how often the
    /// schedule is rebuilt from the weights.
    pub weight_update_period: Duration,
    /// `errorUtilizationPenalty` (default 1.0, not negative).
    pub error_utilization_penalty: f64,
    /// `metricNamesForComputingUtilization` (A114): metrics whose largest
    /// valid value is the utilization, ahead of `application_utilization`
    /// and `cpu_utilization`, which count only when none of them is
    /// reported (only utilization metrics: the three fields,
    /// `utilization.<key>`, `named_metrics.<key>`).
    pub metric_names_for_computing_utilization: Vec<String>,
}

/// The floor gRPC puts under `weightUpdatePeriod`.
pub const MIN_WEIGHT_UPDATE_PERIOD: Duration = Duration::from_millis(100);

impl Default for WrrConfig {
    fn default() -> WrrConfig {
        WrrConfig {
            enable_oob_load_report: false,
            oob_reporting_period: Duration::ZERO,
            blackout_period: Duration::from_secs(10),
            weight_expiration_period: Duration::from_secs(180),
            weight_update_period: Duration::from_secs(1),
            error_utilization_penalty: 1.0,
            metric_names_for_computing_utilization: Vec::new(),
        }
    }
}

impl WrrConfig {
    /// Parses the policy's JSON object. Unknown fields are ignored; a known
    /// field of the wrong type or out of bounds is an error naming it.
    pub fn parse(json: &serde_json::Value) -> Result<WrrConfig, String> {
        let obj = match json {
            serde_json::Value::Object(o) => o,
            serde_json::Value::Null => return Ok(WrrConfig::default()),
            other => {
                return Err(format!(
                    "weighted_round_robin config must be an object, got {other}"
                ))
            }
        };
        let mut c = WrrConfig::default();
        if let Some(b) = crate::policy::opt_bool(json, "enableOobLoadReport")? {
            c.enable_oob_load_report = b;
        }
        let duration = |field: &str, default: Duration| -> Result<Duration, String> {
            match config_field(obj, field) {
                None => Ok(default),
                Some(v) => parse_duration(v).map_err(|e| format!("{field}: {e}")),
            }
        };
        c.oob_reporting_period = duration("oobReportingPeriod", Duration::from_secs(10))?;
        if !c.enable_oob_load_report {
            c.oob_reporting_period = Duration::ZERO;
        }
        c.blackout_period = duration("blackoutPeriod", c.blackout_period)?;
        c.weight_expiration_period =
            duration("weightExpirationPeriod", c.weight_expiration_period)?;
        c.weight_update_period =
            duration("weightUpdatePeriod", c.weight_update_period)?.max(MIN_WEIGHT_UPDATE_PERIOD);
        match config_field(obj, "errorUtilizationPenalty") {
            None => {}
            Some(v) => match crate::balancer::json::number(v) {
                Some(p) if p >= 0.0 => c.error_utilization_penalty = p,
                Some(p) => {
                    return Err(format!(
                        "errorUtilizationPenalty must not be negative, got {p}"
                    ))
                }
                None => return Err(format!("errorUtilizationPenalty must be a number, got {v}")),
            },
        }
        match config_field(obj, "metricNamesForComputingUtilization") {
            None => {}
            Some(serde_json::Value::Array(names)) => {
                for n in names {
                    match n.as_str() {
                        Some(s) => c.metric_names_for_computing_utilization.push(s.to_string()),
                        None => {
                            return Err(format!(
                                "metricNamesForComputingUtilization must hold strings, got {n}"
                            ))
                        }
                    }
                }
            }
            Some(v) => {
                return Err(format!(
                    "metricNamesForComputingUtilization must be a list of strings, got {v}"
                ))
            }
        }
        Ok(c)
    }
}

/// A JSON `google.protobuf.Duration`: seconds with up to nine decimals and
/// an `s` suffix (`"10s"`, `"0.5s"`; as gRPC-Go reads it, `".5s"` and
/// `"+1s"` too). Negative or out-of-range is an error.
pub fn parse_duration(v: &serde_json::Value) -> Result<Duration, String> {
    crate::balancer::json::duration(v).map_err(|e| format!("{v} {e}"))
}
