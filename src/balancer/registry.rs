//! A registry of policy builders by case-insensitive name, last registration
//! wins, safe from any thread at any time. The process-wide one, seeded with
//! the built-in policies, is `crate::registry`.

use crate::balancer::Builder;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Policy builders by name.
#[derive(Default)]
pub struct Registry {
    table: RwLock<HashMap<String, Arc<dyn Builder>>>,
}

impl Registry {
    /// A registry holding `builders`.
    pub fn with(builders: impl IntoIterator<Item = Arc<dyn Builder>>) -> Registry {
        let registry = Registry::default();
        for b in builders {
            registry.register(b);
        }
        registry
    }

    /// Registers `builder` under its name, replacing any earlier one of that name.
    pub fn register(&self, builder: Arc<dyn Builder>) {
        let name = builder.name().to_ascii_lowercase();
        self.table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, builder);
    }

    /// The builder registered under `name` (any case).
    pub fn get(&self, name: &str) -> Option<Arc<dyn Builder>> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// Every registered name (lower-cased), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}
