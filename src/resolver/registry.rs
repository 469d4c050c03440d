//! A registry of resolver builders by case-insensitive URI scheme, last
//! registration wins, safe from any thread at any time (the shape of the
//! policy registry, `balancer::registry`). The process-wide one, seeded with
//! the built-in resolvers, is reached through `resolver::{register, get}`.

use super::ResolverBuilder;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Resolver builders by scheme.
#[derive(Default)]
pub struct ResolverRegistry {
    table: RwLock<HashMap<String, Arc<dyn ResolverBuilder>>>,
}

impl ResolverRegistry {
    /// A registry holding `builders`.
    pub fn with(builders: impl IntoIterator<Item = Arc<dyn ResolverBuilder>>) -> ResolverRegistry {
        let registry = ResolverRegistry::default();
        for b in builders {
            registry.register(b);
        }
        registry
    }

    /// Registers `builder` under its scheme, replacing any earlier one.
    pub fn register(&self, builder: Arc<dyn ResolverBuilder>) {
        let scheme = builder.scheme().to_ascii_lowercase();
        self.table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(scheme, builder);
    }

    /// The builder registered for `scheme` (any case).
    pub fn get(&self, scheme: &str) -> Option<Arc<dyn ResolverBuilder>> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&scheme.to_ascii_lowercase())
            .cloned()
    }

    /// Every registered scheme (lower-cased), sorted.
    pub fn schemes(&self) -> Vec<String> {
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
