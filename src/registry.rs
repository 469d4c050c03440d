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
