//! The process-wide policy registry, seeded with the built-in policies:
//! every channel's service config names its policy here.

use super::builtins;
use crate::balancer::registry::Registry;
use crate::balancer::Builder;
use std::sync::{Arc, OnceLock};

fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(|| Registry::with(builtins()))
}

/// Registers `builder` under its name, replacing any earlier one of that
/// name in any case. A `loadBalancingConfig` entry must spell the name as
/// the builder does (see [`get_exact`]).
pub fn register(builder: Arc<dyn Builder>) {
    global().register(builder)
}

/// The builder registered under `name` (any case).
pub fn get(name: &str) -> Option<Arc<dyn Builder>> {
    global().get(name)
}

/// The builder registered under exactly `name`, as a `loadBalancingConfig`
/// entry names it: gRPC's registries match policy names case-sensitively
/// there (C-core; gRPC-Go since 1.82), so `[{"ROUND_ROBIN":{}}]` names no
/// supported policy. (The deprecated `loadBalancingPolicy` string is
/// matched in any case, as C-core lower-cases it.)
pub fn get_exact(name: &str) -> Option<Arc<dyn Builder>> {
    get(name).filter(|b| b.name() == name)
}

/// Every registered name (lower-cased), sorted.
pub fn names() -> Vec<String> {
    global().names()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::Balancer;

    struct Named(String);
    impl Builder for Named {
        fn name(&self) -> &str {
            &self.0
        }
        fn build(&self) -> Box<dyn Balancer> {
            get("round_robin").unwrap().build()
        }
    }

    #[test]
    fn concurrent_registration_and_lookup() {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..200 {
                        register(Arc::new(Named(format!("Reg_Test_{t}_{}", i % 10))));
                        assert!(get(&format!("REG_TEST_{t}_{}", i % 10)).is_some());
                        assert!(get("pick_first").is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let ours = names()
            .into_iter()
            .filter(|n| n.starts_with("reg_test_"))
            .count();
        assert_eq!(ours, 40, "one entry per name, whatever the case");
    }
}
