//! A table of shared builders by name, last registration wins, safe from
//! any thread at any time: what the policy registry (by policy name,
//! exactly, as gRPC's registries match) and the resolver registry (by URI
//! scheme, in any case, as URIs compare schemes) are.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Something registered under a name.
pub trait Named {
    /// The name it is registered under.
    fn registered_name(&self) -> &str;
}

/// Builders by name.
pub struct NameTable<T: ?Sized + Named> {
    table: RwLock<HashMap<String, Arc<T>>>,
    /// Names compare in any ASCII case (schemes); else exactly (policies).
    fold_case: bool,
}

impl<T: ?Sized + Named> Default for NameTable<T> {
    fn default() -> Self {
        NameTable {
            table: RwLock::new(HashMap::new()),
            fold_case: true,
        }
    }
}

impl<T: ?Sized + Named> NameTable<T> {
    /// A table holding `items`, names compared in any case.
    pub fn with(items: impl IntoIterator<Item = Arc<T>>) -> Self {
        let table = Self::default();
        for item in items {
            table.register(item);
        }
        table
    }

    /// A table holding `items`, names compared exactly.
    pub fn exact(items: impl IntoIterator<Item = Arc<T>>) -> Self {
        let table = NameTable {
            fold_case: false,
            ..Self::default()
        };
        for item in items {
            table.register(item);
        }
        table
    }

    fn key(&self, name: &str) -> String {
        if self.fold_case {
            name.to_ascii_lowercase()
        } else {
            name.to_string()
        }
    }

    /// Registers `item` under its name, replacing any earlier one of that name.
    pub fn register(&self, item: Arc<T>) {
        let name = self.key(item.registered_name());
        let replaced = self
            .table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, item);
        // Dropped after the lock: the last reference's drop may run the
        // host's code (a C policy's `free_builder`), which may use the table.
        drop(replaced);
    }

    /// The item registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<T>> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.key(name))
            .cloned()
    }

    /// Every registered name (lower-cased in a table that folds case), sorted.
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
