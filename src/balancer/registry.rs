//! The policy registry type: builders by policy name, matched exactly as
//! gRPC's registries match them (C-core's; gRPC-Go's since 1.82), last
//! registration wins. The process-wide one, seeded with the built-in
//! policies, is `crate::registry`.

use crate::balancer::Builder;
use crate::named::{NameTable, Named};

/// Policy builders by name.
pub type Registry = NameTable<dyn Builder>;

impl Named for dyn Builder {
    fn registered_name(&self) -> &str {
        self.name()
    }
}
