//! The policy registry: builders by case-insensitive name, last registration
//! wins, safe from any thread at any time.

use crate::balancer::Builder;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

fn table() -> &'static RwLock<HashMap<String, Arc<dyn Builder>>> {
    static TABLE: OnceLock<RwLock<HashMap<String, Arc<dyn Builder>>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map: HashMap<String, Arc<dyn Builder>> = HashMap::new();
        for b in crate::policy::builtins() {
            map.insert(b.name().to_ascii_lowercase(), b);
        }
        RwLock::new(map)
    })
}

/// Registers `builder` under its name, replacing any earlier one of that name.
pub fn register(builder: Arc<dyn Builder>) {
    let name = builder.name().to_ascii_lowercase();
    table()
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name, builder);
}

/// The builder registered under `name` (any case).
pub fn get(name: &str) -> Option<Arc<dyn Builder>> {
    table()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name.to_ascii_lowercase())
        .cloned()
}

/// Every registered name (lower-cased), sorted.
pub fn names() -> Vec<String> {
    let mut v: Vec<String> = table()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    v.sort();
    v
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
