//! The static built-ins: `ipv4`, `ipv6`, `unix`, `unix-abstract` and
//! `passthrough` targets name their addresses themselves, so their resolver
//! pushes one update when built and has nothing to do after.

use super::target::{builtin_plan, Plan, Target};
use super::{Resolver, ResolverBuilder, ResolverClientConn, ResolverState};
use crate::address::{Address, Endpoint};

/// Builds the resolver of one static scheme.
pub(crate) struct FixedBuilder(pub(crate) &'static str);

/// The static schemes.
pub(crate) const SCHEMES: [&str; 5] = ["ipv4", "ipv6", "unix", "unix-abstract", "passthrough"];

impl ResolverBuilder for FixedBuilder {
    fn scheme(&self) -> &str {
        self.0
    }

    fn check(&self, target: &Target) -> Result<(), String> {
        match builtin_plan(target) {
            Some(Ok(Plan::Static(_))) => Ok(()),
            Some(Err(e)) => Err(e),
            _ => Err(format!("\"{target}\" is no {} target", self.0)),
        }
    }

    fn build(&self, target: &Target, cc: ResolverClientConn) -> Result<Box<dyn Resolver>, String> {
        let list = match builtin_plan(target) {
            Some(Ok(Plan::Static(list))) => list,
            Some(Err(e)) => return Err(e),
            _ => return Err(format!("\"{target}\" is no {} target", self.0)),
        };
        // Each listed address is a backend of its own.
        let endpoints = list
            .into_iter()
            .map(|a| Endpoint::from(Address::new(a)))
            .collect();
        cc.update(ResolverState {
            endpoints,
            service_config: None,
        })
        .map_err(|e| e.to_string())?;
        Ok(Box::new(Fixed))
    }
}

/// Nothing to re-resolve: the addresses are the target's.
pub(super) struct Fixed;

impl Resolver for Fixed {
    fn resolve_now(&mut self) {}
    fn close(&mut self) {}
}
