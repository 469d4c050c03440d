//! A table of shared builders by case-insensitive name, last registration
//! wins, safe from any thread at any time: what the policy registry (by
//! policy name) and the resolver registry (by URI scheme) are.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Something registered under a name.
pub trait Named {
    /// The name it is registered under (compared case-insensitively).
    fn registered_name(&self) -> &str;
}

/// Builders by name.
pub struct NameTable<T: ?Sized + Named> {
    table: RwLock<HashMap<String, Arc<T>>>,
}

impl<T: ?Sized + Named> Default for NameTable<T> {
    fn default() -> Self {
        NameTable {
            table: RwLock::new(HashMap::new()),
        }
    }
}

impl<T: ?Sized + Named> NameTable<T> {
    /// A table holding `items`.
    pub fn with(items: impl IntoIterator<Item = Arc<T>>) -> Self {
        let table = Self::default();
        for item in items {
            table.register(item);
        }
        table
    }

    /// Registers `item` under its name, replacing any earlier one of that name.
    pub fn register(&self, item: Arc<T>) {
        let name = item.registered_name().to_ascii_lowercase();
        let replaced = self
            .table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, item);
        // Dropped after the lock: the last reference's drop may run the
        // host's code (a C policy's `free_builder`), which may use the table.
        drop(replaced);
    }

    /// The item registered under `name` (any case).
    pub fn get(&self, name: &str) -> Option<Arc<T>> {
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
