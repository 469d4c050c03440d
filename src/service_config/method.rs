//! `methodConfig` (gRFC A2, `service_config.md`): per-method call settings,
//! found by the call's path with gRPC's rule — the entry naming the method
//! wins over the one naming its service, which wins over the default (the
//! entry with an empty name).

use super::json::{self, Path};
use super::retry::{HedgingPolicy, RetryPolicy, RetryTokens};
use crate::balancer::json::config_field;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One `methodConfig` entry's settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MethodConfig {
    /// Wait through TRANSIENT_FAILURE by default (`None`: not set, the
    /// caller's choice stands).
    pub wait_for_ready: Option<bool>,
    /// The call's timeout: its deadline is the earlier of the caller's and
    /// now plus this.
    pub timeout: Option<Duration>,
    /// The largest request message, in bytes; a larger one fails with
    /// RESOURCE_EXHAUSTED before it is sent.
    pub max_request_message_bytes: Option<u32>,
    /// The largest response message, in bytes (the smaller of this and the
    /// channel's limit applies); a larger one fails with RESOURCE_EXHAUSTED.
    pub max_response_message_bytes: Option<u32>,
    /// The library's own unary calls retry by it (gRFC A6).
    pub retry_policy: Option<RetryPolicy>,
    /// The library's own unary calls hedge by it (gRFC A6).
    pub hedging_policy: Option<HedgingPolicy>,
}

/// A service config's `methodConfig` list, ready for lookups by path.
#[derive(Debug, Default)]
pub struct MethodConfigs {
    entries: Vec<Arc<MethodConfig>>,
    /// Entries by the path gRPC writes a name as: "/service/method" for
    /// one method, "/service/" for all of a service's.
    paths: HashMap<String, usize>,
    default: Option<usize>,
    /// The channel's retry tokens under this config's `retryThrottling`
    /// (fresh with each config, as in gRPC-Go), published with the method
    /// table so a call finds both with one lookup.
    pub(crate) tokens: Option<Arc<RetryTokens>>,
}

impl MethodConfigs {
    /// The config of the call to `path` ("/pkg.Service/Method"): the most
    /// specific entry that names it, or `None`. As gRPC looks it up (gRPC-Go's
    /// `getMethodConfig`, C-core's `GetMethodParsedConfig`): the path itself,
    /// else the path up to its last '/' (the service's entry), else the
    /// default. No allocation, no lock.
    pub fn lookup(&self, path: &str) -> Option<&Arc<MethodConfig>> {
        let index = self
            .paths
            .get(path)
            .or_else(|| path.rfind('/').and_then(|i| self.paths.get(&path[..=i])))
            .copied()
            .or(self.default)?;
        self.entries.get(index)
    }

    /// Whether there are no entries at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn parse(v: &Value, at: &Path) -> Result<MethodConfigs, String> {
        let list = json::array(v, at)?;
        let mut out = MethodConfigs::default();
        for (i, entry) in list.iter().enumerate() {
            let at = at.index(i);
            let obj = json::object(entry, &at)?;
            let config = Arc::new(parse_entry(obj, &at)?);
            let index = out.entries.len();
            out.entries.push(config);
            let names = match config_field(obj, "name") {
                Some(n) => json::array(n, &at.field("name"))?.as_slice(),
                None => &[],
            };
            for (j, name) in names.iter().enumerate() {
                let at = at.field("name").index(j);
                let name = json::object(name, &at)?;
                let field = |f: &str| -> Result<&str, String> {
                    match config_field(name, f) {
                        None => Ok(""),
                        Some(v) => json::string(v, &at.field(f)),
                    }
                };
                let (service, method) = (field("service")?, field("method")?);
                let taken = match (service.is_empty(), method.is_empty()) {
                    (true, true) => out.default.replace(index).is_some(),
                    (true, false) => {
                        return Err(
                            at.err(format!("method {method:?} is named without its service"))
                        )
                    }
                    // Unique as the path gRPC writes: {"service":"a","method":
                    // "b/c"} and {"service":"a/b","method":"c"} are one name.
                    (false, _) => out
                        .paths
                        .insert(format!("/{service}/{method}"), index)
                        .is_some(),
                };
                if taken {
                    return Err(at.err(format!(
                        "duplicate name {{\"service\":{service:?},\"method\":{method:?}}}"
                    )));
                }
            }
        }
        Ok(out)
    }
}

fn parse_entry(obj: &serde_json::Map<String, Value>, at: &Path) -> Result<MethodConfig, String> {
    let mut c = MethodConfig::default();
    if let Some(v) = config_field(obj, "waitForReady") {
        c.wait_for_ready = Some(json::boolean(v, &at.field("waitForReady"))?);
    }
    if let Some(v) = config_field(obj, "timeout") {
        c.timeout = Some(json::duration(v, &at.field("timeout"))?);
    }
    let bytes = |name: &str| -> Result<Option<u32>, String> {
        config_field(obj, name)
            .map(|v| json::uint(v, &at.field(name), u64::from(u32::MAX)).map(|n| n as u32))
            .transpose()
    };
    c.max_request_message_bytes = bytes("maxRequestMessageBytes")?;
    c.max_response_message_bytes = bytes("maxResponseMessageBytes")?;
    if let Some(v) = config_field(obj, "retryPolicy") {
        c.retry_policy = Some(RetryPolicy::parse(v, &at.field("retryPolicy"))?);
    }
    if let Some(v) = config_field(obj, "hedgingPolicy") {
        if c.retry_policy.is_some() {
            return Err(at.err("retryPolicy and hedgingPolicy cannot both be set"));
        }
        c.hedging_policy = Some(HedgingPolicy::parse(v, &at.field("hedgingPolicy"))?);
    }
    Ok(c)
}
