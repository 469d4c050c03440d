//! The resolver registry type: builders by case-insensitive URI scheme,
//! last registration wins (the same table as the policy registry). The
//! process-wide one, seeded with the built-in resolvers, is reached through
//! `resolver::{register, get}`.

use super::ResolverBuilder;
use crate::named::{NameTable, Named};

/// Resolver builders by scheme.
pub type ResolverRegistry = NameTable<dyn ResolverBuilder>;

impl Named for dyn ResolverBuilder {
    fn registered_name(&self) -> &str {
        self.scheme()
    }
}
