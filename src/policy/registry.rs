//! The process-wide policy registry, seeded with the built-in policies:
//! every channel's service config names its policy here.

use super::builtins;
use crate::balancer::registry::Registry;
use crate::balancer::Builder;
use std::sync::{Arc, OnceLock};

fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(|| Registry::exact(builtins()))
}

/// Registers `builder` under its name, replacing any earlier one of that
/// name. Names are matched exactly, as gRPC's registries match them (C-core's;
/// gRPC-Go's since 1.82): "MyPolicy" and "mypolicy" are two policies, and a
/// `loadBalancingConfig` entry names one as registered.
pub fn register(builder: Arc<dyn Builder>) {
    global().register(builder)
}

/// The builder registered under exactly `name`.
pub fn get(name: &str) -> Option<Arc<dyn Builder>> {
    global().get(name)
}

/// Every registered name, sorted.
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
                        assert!(get(&format!("Reg_Test_{t}_{}", i % 10)).is_some());
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
            .filter(|n| n.starts_with("Reg_Test_"))
            .count();
        assert_eq!(ours, 40, "one entry per name");
        // Names match exactly: another case is another policy.
        assert!(get("REG_TEST_0_0").is_none());
        register(Arc::new(Named("reg_test_0_0".into())));
        assert_eq!(get("reg_test_0_0").unwrap().name(), "reg_test_0_0");
        assert_eq!(get("Reg_Test_0_0").unwrap().name(), "Reg_Test_0_0");
    }
}
