//! Service config: which policy a channel runs, with what configuration.

use crate::balancer::{Builder, LbConfig};
use crate::policy::registry;
use serde_json::Value;
use std::sync::Arc;

/// The parts of a service config the channel acts on.
#[derive(Clone)]
pub struct ServiceConfig {
    pub policy: Arc<dyn Builder>,
    pub policy_config: Option<LbConfig>,
    /// `healthCheckConfig.serviceName`, when client-side health checking is on.
    pub health_check_service: Option<String>,
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("policy", &self.policy.name())
            .field("health_check_service", &self.health_check_service)
            .finish()
    }
}

impl ServiceConfig {
    /// The default: pick_first, no health checking.
    pub fn default_config() -> ServiceConfig {
        ServiceConfig {
            policy: registry::get("pick_first").expect("pick_first is built in"),
            policy_config: None,
            health_check_service: None,
        }
    }

    /// Parses a service config JSON document. `None` or empty text means default.
    pub fn parse(json: Option<&str>) -> Result<ServiceConfig, String> {
        let text = match json {
            Some(t) if !t.trim().is_empty() => t,
            _ => return Ok(Self::default_config()),
        };
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| format!("service config is not valid JSON: {e}"))?;
        let obj = doc
            .as_object()
            .ok_or("service config must be a JSON object")?;

        let (policy, policy_config) = if let Some(list) = obj.get("loadBalancingConfig") {
            select_policy(list)?
        } else if let Some(name) = obj.get("loadBalancingPolicy") {
            let name = name
                .as_str()
                .ok_or("loadBalancingPolicy must be a string")?;
            let b = registry::get(name).ok_or_else(|| format!("unknown LB policy \"{name}\""))?;
            let cfg = b
                .parse_config(&Value::Object(Default::default()))
                .map_err(|e| format!("{name} requires a config ({e}); use loadBalancingConfig"))?;
            (b, cfg)
        } else {
            let d = Self::default_config();
            (d.policy, d.policy_config)
        };

        let health_check_service = match obj.get("healthCheckConfig") {
            None => None,
            Some(h) => {
                let h = h.as_object().ok_or("healthCheckConfig must be an object")?;
                match h.get("serviceName") {
                    None => Some(String::new()),
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => return Err("healthCheckConfig.serviceName must be a string".into()),
                }
            }
        };
        Ok(ServiceConfig {
            policy,
            policy_config,
            health_check_service,
        })
    }
}

/// gRFC A24: the first entry naming a registered policy wins; its config must
/// parse (no falling through to the next); none registered is an error.
pub fn select_policy(list: &Value) -> Result<(Arc<dyn Builder>, Option<LbConfig>), String> {
    let entries = list
        .as_array()
        .ok_or("loadBalancingConfig must be an array")?;
    let mut names = Vec::new();
    for entry in entries {
        let obj = entry
            .as_object()
            .ok_or("each loadBalancingConfig entry must be an object")?;
        if obj.len() != 1 {
            return Err(format!(
                "each loadBalancingConfig entry must have exactly one key, found {}",
                obj.len()
            ));
        }
        let (name, config) = obj.iter().next().expect("one key");
        if !config.is_object() {
            return Err(format!("config of policy \"{name}\" must be an object"));
        }
        if let Some(builder) = registry::get(name) {
            let parsed = builder
                .parse_config(config)
                .map_err(|e| format!("invalid config for policy \"{name}\": {e}"))?;
            return Ok((builder, parsed));
        }
        names.push(name.clone());
    }
    Err(format!(
        "no supported policies found in loadBalancingConfig: [{}]",
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn deprecated_policy_field_and_health_check() {
        let c = ServiceConfig::parse(Some(
            r#"{"loadBalancingPolicy":"ROUND_ROBIN","healthCheckConfig":{"serviceName":"echo.Echo"}}"#,
        ))
        .unwrap();
        assert_eq!(c.policy.name(), "round_robin");
        assert_eq!(c.health_check_service.as_deref(), Some("echo.Echo"));
    }
}
