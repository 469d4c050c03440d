//! Service config (gRPC's `service_config.md`, gRFCs A2, A6, A21, A24):
//! which policy a channel runs and with what configuration, and the
//! per-method call settings (`methodConfig`) its calls follow. Parsing
//! rejects the whole config for any known field with a bad value, naming
//! the JSON path that is wrong; unknown fields are ignored.

mod json;
mod method;
mod retry;

pub use self::method::{MethodConfig, MethodConfigs};
pub(crate) use self::retry::RetryTokens;
pub use self::retry::{HedgingPolicy, RetryPolicy, RetryThrottling, MAX_ATTEMPTS_CAP};

use self::json::Path;
use crate::balancer::json::config_field;
use crate::balancer::{Builder, LbConfig};
use crate::policy::registry;
use serde_json::Value;
use std::sync::Arc;

/// A parsed, valid service config.
#[derive(Clone)]
pub struct ServiceConfig {
    /// The policy the channel runs (`loadBalancingConfig`, else the
    /// deprecated `loadBalancingPolicy`, else pick_first).
    pub policy: Arc<dyn Builder>,
    /// Its parsed config.
    pub policy_config: Option<LbConfig>,
    /// `healthCheckConfig.serviceName`, when client-side health checking is on.
    pub health_check_service: Option<String>,
    /// `methodConfig`, for lookups by method.
    pub methods: Arc<MethodConfigs>,
    /// `retryThrottling`.
    pub retry_throttling: Option<RetryThrottling>,
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("policy", &self.policy.name())
            .field("health_check_service", &self.health_check_service)
            .field("methods", &self.methods)
            .field("retry_throttling", &self.retry_throttling)
            .finish()
    }
}

impl ServiceConfig {
    /// The default: pick_first, no health checking, no method settings.
    pub fn default_config() -> ServiceConfig {
        ServiceConfig {
            policy: registry::get("pick_first").expect("pick_first is built in"),
            policy_config: None,
            health_check_service: None,
            methods: Arc::default(),
            retry_throttling: None,
        }
    }

    /// Parses a service config JSON document. `None` or empty text means
    /// the default. The error names the JSON path that is wrong, as in
    /// `methodConfig[1].timeout: "3" is not a duration`.
    pub fn parse(json: Option<&str>) -> Result<ServiceConfig, String> {
        let text = match json {
            Some(t) if !t.trim().is_empty() => t,
            _ => return Ok(Self::default_config()),
        };
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| format!("service config is not valid JSON: {e}"))?;
        if let Value::String(why) = &doc {
            // A resolver's word that what it found is no config (see
            // `ResolverState::service_config`).
            return Err(why.clone());
        }
        let obj = doc
            .as_object()
            .ok_or("service config must be a JSON object")?;
        let root = Path::root("");

        // The deprecated field is checked even where loadBalancingConfig
        // overrides it: a config with a non-string there is invalid in
        // gRPC-Go (its JSON decoding fails) and C-core alike.
        if let Some(name) = config_field(obj, "loadBalancingPolicy") {
            json::string(name, &root.field("loadBalancingPolicy"))?;
        }
        // An empty name is none at all (C-core skips the field when its
        // string is empty; gRPC-Go falls back to pick_first).
        let deprecated = config_field(obj, "loadBalancingPolicy")
            .filter(|name| name.as_str().is_some_and(|s| !s.is_empty()));
        let (policy, policy_config) = if let Some(list) = config_field(obj, "loadBalancingConfig") {
            select_policy_at(list, &root.field("loadBalancingConfig"))?
        } else if let Some(name) = deprecated {
            let at = root.field("loadBalancingPolicy");
            let name = json::string(name, &at)?;
            // As written, else lower-cased as C-core reads this field (the
            // proto's enum spells it ROUND_ROBIN; built-ins are lower-case).
            let b = registry::get(name)
                .or_else(|| registry::get(&name.to_ascii_lowercase()))
                .ok_or_else(|| at.err(format!("unknown LB policy \"{name}\"")))?;
            let cfg = b
                .parse_config(&Value::Object(Default::default()))
                .map_err(|e| {
                    at.err(format!(
                        "{name} requires a config ({e}); use loadBalancingConfig"
                    ))
                })?;
            (b, cfg)
        } else {
            let d = Self::default_config();
            (d.policy, d.policy_config)
        };

        let health_check_service = match config_field(obj, "healthCheckConfig") {
            None => None,
            Some(h) => {
                let at = root.field("healthCheckConfig");
                let h = json::object(h, &at)?;
                // Enabled only by a `serviceName` ("" = the whole
                // server): C-core's and Java's optional field; an empty
                // object checks nothing.
                match config_field(h, "serviceName") {
                    None => None,
                    Some(s) => Some(json::string(s, &at.field("serviceName"))?.to_string()),
                }
            }
        };
        let mut methods = match config_field(obj, "methodConfig") {
            Some(m) => MethodConfigs::parse(m, &root.field("methodConfig"))?,
            None => MethodConfigs::default(),
        };
        let retry_throttling = config_field(obj, "retryThrottling")
            .map(|t| RetryThrottling::parse(t, &root.field("retryThrottling")))
            .transpose()?;
        methods.tokens = retry_throttling
            .as_ref()
            .map(|t| Arc::new(RetryTokens::new(t)));
        Ok(ServiceConfig {
            policy,
            policy_config,
            health_check_service,
            methods: Arc::new(methods),
            retry_throttling,
        })
    }
}

/// gRFC A24: the first entry naming a registered policy wins; its config must
/// parse (no falling through to the next); none registered is an error.
pub fn select_policy(list: &Value) -> Result<(Arc<dyn Builder>, Option<LbConfig>), String> {
    select_policy_at(list, &Path::root("loadBalancingConfig"))
}

fn select_policy_at(
    list: &Value,
    at: &Path,
) -> Result<(Arc<dyn Builder>, Option<LbConfig>), String> {
    let entries = list.as_array().ok_or_else(|| at.err("must be an array"))?;
    let mut names = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = at.index(i);
        let obj = json::object(entry, &at)?;
        if obj.len() != 1 {
            return Err(at.err(format!(
                "each entry must have exactly one key, found {}",
                obj.len()
            )));
        }
        let (name, config) = obj.iter().next().expect("one key");
        let at = at.field(name);
        if !config.is_object() {
            return Err(at.err(format!("the config of policy \"{name}\" must be an object")));
        }
        if let Some(builder) = registry::get(name) {
            let parsed = builder
                .parse_config(config)
                .map_err(|e| at.err(format!("invalid config for policy \"{name}\": {e}")))?;
            return Ok((builder, parsed));
        }
        names.push(name.clone());
    }
    Err(at.err(format!(
        "no supported policies found in [{}]",
        names.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;
    use std::time::Duration;

    #[test]
    fn absent_means_pick_first() {
        assert_eq!(
            ServiceConfig::parse(None).unwrap().policy.name(),
            "pick_first"
        );
        assert_eq!(
            ServiceConfig::parse(Some("{}")).unwrap().policy.name(),
            "pick_first"
        );
    }

    #[test]
    fn first_registered_policy_wins() {
        let c = ServiceConfig::parse(Some(
            r#"{"loadBalancingConfig":[{"no_such":{}},{"round_robin":{}},{"pick_first":{}}]}"#,
        ))
        .unwrap();
        assert_eq!(c.policy.name(), "round_robin");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = ServiceConfig::parse(Some("{not json")).unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = ServiceConfig::parse(Some(r#"{"loadBalancingConfig":[{"a":{}},{"b":{}}]}"#))
            .unwrap_err();
        assert!(
            e.contains("no supported policies") && e.contains("a, b"),
            "{e}"
        );
        let e = ServiceConfig::parse(Some(r#"{"loadBalancingConfig":[]}"#)).unwrap_err();
        assert!(e.contains("no supported policies"), "{e}");
        let e =
            ServiceConfig::parse(Some(r#"{"loadBalancingConfig":[{"a":{},"b":{}}]}"#)).unwrap_err();
        assert!(e.contains("exactly one key"), "{e}");
        let e = ServiceConfig::parse(Some(r#"{"loadBalancingConfig":{}}"#)).unwrap_err();
        assert!(e.contains("must be an array"), "{e}");
        let e = ServiceConfig::parse(Some(
            r#"{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":"yes"}},{"round_robin":{}}]}"#,
        ))
        .unwrap_err();
        assert!(
            e.contains("pick_first") && e.contains("shuffleAddressList"),
            "{e}"
        );
        let e = ServiceConfig::parse(Some(r#"{"loadBalancingPolicy":"nope"}"#)).unwrap_err();
        assert!(e.contains("unknown LB policy"), "{e}");
    }

    /// gRPC-Go reads configs with encoding/json, whose field matching
    /// ignores case, and its retry tests spell the fields so
    /// ("MaxAttempts"): found. Proto's own names ("max_attempts") are
    /// unknown fields to gRPC-Go, C-core and Java: ignored. The exact name
    /// wins.
    #[test]
    fn fields_are_found_as_grpc_finds_them() {
        let go = r#"{"methodConfig":[{"name":[{"service":"grpc.testing.TestService"}],
            "WaitForReady":true,"Timeout":"2s",
            "RetryPolicy":{"MaxAttempts":4,"InitialBackoff":".01s","MaxBackoff":".01s",
                           "BackoffMultiplier":1.0,"RetryableStatusCodes":["ALREADY_EXISTS"]}}],
            "retryThrottling":{"MaxTokens":10,"TokenRatio":0.5}}"#;
        let c = ServiceConfig::parse(Some(go)).unwrap();
        let m = c.methods.lookup("/grpc.testing.TestService/Call").unwrap();
        assert_eq!(m.wait_for_ready, Some(true));
        assert_eq!(m.timeout, Some(Duration::from_secs(2)));
        let r = m.retry_policy.as_ref().unwrap();
        assert_eq!(r.max_attempts, 4);
        assert_eq!(r.retryable_status_codes, [Code::AlreadyExists]);
        assert_eq!(c.retry_throttling.as_ref().map(|t| t.max_tokens), Some(10));
        let snake = r#"{"methodConfig":[{"name":[{"service":"grpc.testing.TestService"}],
            "wait_for_ready":true,"timeout":"2s",
            "retry_policy":{"max_attempts":4,"initial_backoff":".01s","max_backoff":".01s",
                            "backoff_multiplier":1.0,"retryable_status_codes":["ALREADY_EXISTS"]}}],
            "retry_throttling":{"max_tokens":10,"token_ratio":0.5}}"#;
        let c = ServiceConfig::parse(Some(snake)).unwrap();
        let m = c.methods.lookup("/grpc.testing.TestService/Call").unwrap();
        assert_eq!(m.wait_for_ready, None);
        assert!(m.retry_policy.is_none());
        assert!(c.retry_throttling.is_none());
        let exact = ServiceConfig::parse(Some(
            r#"{"methodConfig":[{"name":[{}],"timeout":"1s","Timeout":"9s"}]}"#,
        ))
        .unwrap();
        assert_eq!(
            exact.methods.lookup("/a/b").unwrap().timeout,
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_null_field_is_an_absent_one() {
        // proto3 JSON reads null as the field's default; gRPC-Go decodes it
        // into a nil pointer.
        let c = ServiceConfig::parse(Some(
            r#"{"loadBalancingConfig":null,"retryThrottling":null,
                "methodConfig":[{"name":[{"service":"s"}],"timeout":null,
                                 "retryPolicy":null,"hedgingPolicy":{"maxAttempts":2,"hedgingDelay":null},
                                 "waitForReady":null,"maxRequestMessageBytes":null}]}"#,
        ))
        .unwrap();
        let m = c.methods.lookup("/s/m").unwrap();
        assert_eq!(m.timeout, None);
        assert_eq!(m.wait_for_ready, None);
        assert!(m.retry_policy.is_none());
        assert!(c.retry_throttling.is_none());
        assert!(ServiceConfig::parse(Some(r#"{"methodConfig":null}"#)).is_ok());
    }

    #[test]
    fn deprecated_policy_field_and_health_check() {
        let c = ServiceConfig::parse(Some(
            r#"{"loadBalancingPolicy":"ROUND_ROBIN","healthCheckConfig":{"serviceName":"echo.Echo"}}"#,
        ))
        .unwrap();
        assert_eq!(c.policy.name(), "round_robin");
        assert_eq!(c.health_check_service.as_deref(), Some("echo.Echo"));
        let whole = ServiceConfig::parse(Some(r#"{"healthCheckConfig":{"serviceName":""}}"#));
        assert_eq!(whole.unwrap().health_check_service.as_deref(), Some(""));
        let none = ServiceConfig::parse(Some(r#"{"healthCheckConfig":{}}"#)).unwrap();
        assert_eq!(none.health_check_service, None, "no serviceName: off");
    }

    /// An empty `loadBalancingPolicy` is no policy named: C-core skips the
    /// field when its string is empty (`client_channel_service_config.cc`,
    /// `if (!parsed_deprecated_lb_policy_.empty())`), gRPC-Go falls back to
    /// pick_first; neither rejects the config. It still does not override
    /// `loadBalancingConfig`.
    #[test]
    fn an_empty_deprecated_policy_name_is_no_policy() {
        let c = ServiceConfig::parse(Some(r#"{"loadBalancingPolicy":""}"#)).unwrap();
        assert_eq!(c.policy.name(), "pick_first");
        let c = ServiceConfig::parse(Some(
            r#"{"loadBalancingPolicy":"","loadBalancingConfig":[{"round_robin":{}}]}"#,
        ))
        .unwrap();
        assert_eq!(c.policy.name(), "round_robin");
    }

    /// gRPC finds a call's entry by its path: the exact "/service/method",
    /// else the service's "/service/" cut at the path's last '/', else the
    /// default (gRPC-Go's `getMethodConfig`, C-core's `GetMethodParsedConfig`);
    /// names are unique as those paths (both reject two names that write
    /// the same one).
    #[test]
    fn method_configs_are_found_by_path_as_grpc_finds_them() {
        let c = ServiceConfig::parse(Some(
            r#"{"methodConfig":[{"name":[{}],"timeout":"1s"},
                {"name":[{"service":"a/b"}],"timeout":"2s"},
                {"name":[{"service":"x","method":"y/z"}],"timeout":"3s"}]}"#,
        ))
        .unwrap();
        let timeout = |p: &str| c.methods.lookup(p).and_then(|m| m.timeout);
        assert_eq!(timeout("/a/b/c"), Some(Duration::from_secs(2)));
        assert_eq!(timeout("/x/y/z"), Some(Duration::from_secs(3)));
        assert_eq!(timeout("/a/c"), Some(Duration::from_secs(1)));
        let e = err(
            r#"{"methodConfig":[{"name":[{"service":"a","method":"b/c"}]},
                        {"name":[{"service":"a/b","method":"c"}]}]}"#,
        );
        assert!(
            e.starts_with("methodConfig[1].name[0]: duplicate name"),
            "{e}"
        );
    }

    fn err(json: &str) -> String {
        ServiceConfig::parse(Some(json)).unwrap_err()
    }

    /// Policy names in `loadBalancingConfig` match exactly (C-core's
    /// registry; gRPC-Go's since 1.82): another case is an unknown policy,
    /// skipped for the next entry.
    #[test]
    fn load_balancing_config_names_are_case_sensitive() {
        let e = err(r#"{"loadBalancingConfig":[{"ROUND_ROBIN":{}}]}"#);
        assert!(e.contains("no supported policies"), "{e}");
        let c = ServiceConfig::parse(Some(
            r#"{"loadBalancingConfig":[{"Round_Robin":{}},{"pick_first":{}}]}"#,
        ))
        .unwrap();
        assert_eq!(c.policy.name(), "pick_first");
        let e = err(
            r#"{"loadBalancingConfig":[{"outlier_detection_experimental":{"childPolicy":[{"Round_Robin":{}}]}}]}"#,
        );
        assert!(e.contains("no supported policies"), "{e}");
    }

    const METHODS: &str = r#"{"methodConfig":[
        {"name":[{}],"timeout":"5s"},
        {"name":[{"service":"echo.Echo"}],"waitForReady":true,"timeout":"1.5s"},
        {"name":[{"service":"echo.Echo","method":"Unary"},{"service":"other.Svc","method":"M"}],
         "maxRequestMessageBytes":100,"maxResponseMessageBytes":"200","timeout":"0.3s"}
    ]}"#;

    #[test]
    fn the_most_specific_method_config_wins() {
        let c = ServiceConfig::parse(Some(METHODS)).unwrap();
        let m = |path: &str| c.methods.lookup(path).map(|c| (**c).clone());
        let exact = m("/echo.Echo/Unary").unwrap();
        assert_eq!(exact.timeout, Some(Duration::from_millis(300)));
        assert_eq!(exact.max_request_message_bytes, Some(100));
        assert_eq!(exact.max_response_message_bytes, Some(200));
        assert_eq!(exact.wait_for_ready, None, "entries do not merge");
        assert_eq!(m("/other.Svc/M"), Some(exact));
        let service = m("/echo.Echo/Other").unwrap();
        assert_eq!(service.wait_for_ready, Some(true));
        assert_eq!(service.timeout, Some(Duration::from_millis(1500)));
        let default = m("/else.Where/X").unwrap();
        assert_eq!(default.timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            m("not a path").unwrap().timeout,
            Some(Duration::from_secs(5))
        );
        assert_eq!(m("/other.Svc/N"), Some(default));

        let none =
            ServiceConfig::parse(Some(r#"{"methodConfig":[{"name":[{"service":"a"}]}]}"#)).unwrap();
        assert!(none.methods.lookup("/b/M").is_none());
        assert!(none.methods.lookup("/a/M").is_some());
    }

    #[test]
    fn method_config_errors_name_the_json_path() {
        let cases = [
            (
                r#"{"methodConfig":[{},{"timeout":"3"}]}"#,
                r#"methodConfig[1].timeout: "3" is not a duration"#,
            ),
            (
                r#"{"methodConfig":[{"timeout":"-1s"}]}"#,
                "methodConfig[0].timeout: \"-1s\" is negative",
            ),
            (r#"{"methodConfig":{}}"#, "methodConfig: {} is not an array"),
            (
                r#"{"methodConfig":[{"waitForReady":"yes"}]}"#,
                "methodConfig[0].waitForReady: \"yes\" is not a boolean",
            ),
            (
                r#"{"methodConfig":[{"maxRequestMessageBytes":-1}]}"#,
                "methodConfig[0].maxRequestMessageBytes: -1 is not a non-negative integer",
            ),
            (
                r#"{"methodConfig":[{"maxResponseMessageBytes":4294967296}]}"#,
                "methodConfig[0].maxResponseMessageBytes: 4294967296 is larger than",
            ),
            (
                r#"{"methodConfig":[{"name":[{"method":"M"}]}]}"#,
                "methodConfig[0].name[0]: method \"M\" is named without its service",
            ),
            (
                r#"{"methodConfig":[{"name":[{"service":7}]}]}"#,
                "methodConfig[0].name[0].service: 7 is not a string",
            ),
            (
                r#"{"methodConfig":[{"name":[{"service":"s","method":"m"}]},{"name":[{"service":"s","method":"m"}]}]}"#,
                "methodConfig[1].name[0]: duplicate name",
            ),
            (
                r#"{"methodConfig":[{"name":[{"service":"s"},{"service":"s"}]}]}"#,
                "methodConfig[0].name[1]: duplicate name",
            ),
            (
                r#"{"methodConfig":[{"name":[{}]},{"name":[{"service":"","method":""}]}]}"#,
                "methodConfig[1].name[0]: duplicate name",
            ),
            (
                r#"{"loadBalancingConfig":[{"round_robin":{}},{"pick_first":{}}],"methodConfig":[{"name":"x"}]}"#,
                "methodConfig[0].name: \"x\" is not an array",
            ),
        ];
        for (json, want) in cases {
            let e = err(json);
            assert!(e.starts_with(want), "{json}\n got: {e}\nwant: {want}");
        }
    }

    #[test]
    fn load_balancing_config_errors_name_the_json_path() {
        assert!(err(
            r#"{"loadBalancingConfig":[{"x":{}},{"pick_first":{"shuffleAddressList":1}}]}"#
        )
        .starts_with("loadBalancingConfig[1].pick_first: invalid config"));
        assert!(err(r#"{"loadBalancingConfig":[{"x":{}},{"a":{},"b":{}}]}"#)
            .starts_with("loadBalancingConfig[1]: each entry must have exactly one key"));
        assert!(err(r#"{"loadBalancingConfig":[{"round_robin":[]}]}"#)
            .starts_with("loadBalancingConfig[0].round_robin: the config"));
        assert!(err(r#"{"loadBalancingConfig":[3]}"#)
            .starts_with("loadBalancingConfig[0]: 3 is not an object"));
        assert!(err(r#"{"loadBalancingPolicy":7}"#)
            .starts_with("loadBalancingPolicy: 7 is not a string"));
        // Even where loadBalancingConfig decides the policy.
        assert!(
            err(r#"{"loadBalancingConfig":[{"round_robin":{}}],"loadBalancingPolicy":["x"]}"#)
                .starts_with("loadBalancingPolicy: [\"x\"] is not a string")
        );
        assert!(err(r#"{"healthCheckConfig":{"serviceName":1}}"#)
            .starts_with("healthCheckConfig.serviceName: 1 is not a string"));
    }

    const RETRY: &str = r#""retryPolicy":{"maxAttempts":9,"initialBackoff":"0.1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE","resource_exhausted",4]}"#;

    #[test]
    fn retry_policy_is_parsed_with_a6_bounds() {
        let c = ServiceConfig::parse(Some(&format!(
            r#"{{"methodConfig":[{{"name":[{{}}],{RETRY}}}],"retryThrottling":{{"maxTokens":10,"tokenRatio":0.1234}}}}"#
        )))
        .unwrap();
        let r = c
            .methods
            .lookup("/a/b")
            .unwrap()
            .retry_policy
            .clone()
            .unwrap();
        assert_eq!(
            r,
            RetryPolicy {
                max_attempts: 5,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                backoff_multiplier: 2.0,
                retryable_status_codes: vec![
                    Code::Unavailable,
                    Code::ResourceExhausted,
                    Code::DeadlineExceeded
                ],
            }
        );
        assert_eq!(
            c.retry_throttling,
            Some(RetryThrottling {
                max_tokens: 10,
                token_ratio: 0.123
            })
        );
        // Three decimals, the rest cut off, without losing one to binary
        // floating point (1.001 * 1000 < 1001).
        for (given, kept) in [
            (1.001, 1.001),
            (1.003, 1.003),
            (0.0019, 0.001),
            (0.0019995, 0.001),
            (2.5, 2.5),
        ] {
            let t = ServiceConfig::parse(Some(&format!(
                r#"{{"retryThrottling":{{"maxTokens":10,"tokenRatio":{given}}}}}"#
            )))
            .unwrap()
            .retry_throttling
            .unwrap();
            assert_eq!(t.token_ratio, kept, "{given}");
        }
        // Any integer above the cap is the cap, however large (A6: "treated
        // as 5 without being considered a validation error").
        for huge in ["10000000000", "18446744073709551615"] {
            let c = ServiceConfig::parse(Some(&format!(
                r#"{{"methodConfig":[{{"name":[{{}}],"retryPolicy":{{"maxAttempts":{huge},"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":1,"retryableStatusCodes":[14]}}}}]}}"#
            )))
            .unwrap();
            let r = c.methods.lookup("/a/b").unwrap().retry_policy.clone();
            assert_eq!(r.unwrap().max_attempts, 5, "{huge}");
        }
        let retry = |body: &str| {
            err(&format!(
                r#"{{"methodConfig":[{{"retryPolicy":{{{body}}}}}]}}"#
            ))
        };
        let good = r#""maxAttempts":2,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":1,"retryableStatusCodes":["UNAVAILABLE"]"#;
        let cases = [
            ("maxAttempts", "1", "methodConfig[0].retryPolicy.maxAttempts: 1 must be at least 2"),
            ("initialBackoff", r#""0s""#, "methodConfig[0].retryPolicy.initialBackoff: \"0s\" must be greater than 0"),
            ("maxBackoff", r#""x""#, "methodConfig[0].retryPolicy.maxBackoff: \"x\" is not a duration"),
            ("backoffMultiplier", "0", "methodConfig[0].retryPolicy.backoffMultiplier: 0 must be greater than 0"),
            ("retryableStatusCodes", "[]", "methodConfig[0].retryPolicy.retryableStatusCodes: must not be empty"),
            ("retryableStatusCodes", r#"["NOPE"]"#, "methodConfig[0].retryPolicy.retryableStatusCodes[0]: \"NOPE\" is not a status code"),
            ("retryableStatusCodes", "[17]", "methodConfig[0].retryPolicy.retryableStatusCodes[0]: 17 is not a status code"),
        ];
        for (field, value, want) in cases {
            let body = good.replace(
                &format!("\"{field}\":{}", field_value(good, field)),
                &format!("\"{field}\":{value}"),
            );
            let e = retry(&body);
            assert!(e.starts_with(want), "{body}\n got: {e}\nwant: {want}");
            // Each required field, left out.
            let without = body
                .split(',')
                .filter(|kv| !kv.starts_with(&format!("\"{field}\"")))
                .collect::<Vec<_>>()
                .join(",");
            if !field.starts_with("retryable") {
                assert!(
                    retry(&without).contains(&format!("{field}: is required")),
                    "{without}"
                );
            }
        }
        let both =
            format!(r#"{{"methodConfig":[{{{RETRY},"hedgingPolicy":{{"maxAttempts":2}}}}]}}"#);
        assert!(err(&both)
            .starts_with("methodConfig[0]: retryPolicy and hedgingPolicy cannot both be set"));
        let h = ServiceConfig::parse(Some(
            r#"{"methodConfig":[{"name":[{}],"hedgingPolicy":{"maxAttempts":7,"hedgingDelay":"0.5s","nonFatalStatusCodes":["UNAVAILABLE"]}}]}"#,
        ))
        .unwrap();
        let h = h.methods.lookup("/x/y").unwrap().hedging_policy.clone();
        assert_eq!(
            h,
            Some(HedgingPolicy {
                max_attempts: 5,
                hedging_delay: Duration::from_millis(500),
                non_fatal_status_codes: vec![Code::Unavailable],
            })
        );
        for (t, want) in [
            (
                r#"{"maxTokens":0,"tokenRatio":1}"#,
                "retryThrottling.maxTokens: must be greater than 0",
            ),
            (
                r#"{"maxTokens":1001,"tokenRatio":1}"#,
                "retryThrottling.maxTokens: 1001 is larger than 1000",
            ),
            (
                r#"{"maxTokens":10,"tokenRatio":0.0001}"#,
                "retryThrottling.tokenRatio: 0.0001 must be greater than 0",
            ),
            (
                r#"{"maxTokens":10,"tokenRatio":0.0009995}"#,
                "retryThrottling.tokenRatio: 0.0009995 must be greater than 0",
            ),
            (
                r#"{"tokenRatio":1}"#,
                "retryThrottling.maxTokens: is required",
            ),
        ] {
            let e = err(&format!(r#"{{"retryThrottling":{t}}}"#));
            assert!(e.starts_with(want), "{t}: {e}");
        }
    }

    /// The JSON text of `field`'s value in the flat object body `body`.
    fn field_value<'a>(body: &'a str, field: &str) -> &'a str {
        let start = body.find(&format!("\"{field}\":")).unwrap() + field.len() + 3;
        let rest = &body[start..];
        let end = if rest.starts_with('[') {
            rest.find(']').unwrap() + 1
        } else {
            rest.find(',').unwrap_or(rest.len())
        };
        &rest[..end]
    }
}
