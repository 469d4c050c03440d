//! What the policies made of one pick_first child per endpoint (gRFC A61's
//! petioles: round_robin, weighted_round_robin, least_request, random) do
//! alike with an address update and a resolver error, as gRPC-Go's
//! `endpointsharding` does it for each of them.

use super::pick_first::{PickFirstBuilder, NO_CHILDREN_ZERO_ADDRESSES};
use crate::balancer::child_manager::ChildParent;
use crate::balancer::picker::{FailPicker, Picker};
use crate::balancer::{Builder, ClientConn, ClientConnState};
use std::sync::Arc;

/// A [`ChildParent`] whose children are its endpoints, each a pick_first.
pub(crate) trait Petiole: ChildParent {
    /// Publishes TRANSIENT_FAILURE with `picker`: there is no child to pick
    /// from.
    fn fail_all(&mut self, cc: &mut dyn ClientConn, picker: Box<dyn Picker>);

    /// Publishes what every child's state and picker now make.
    fn republish(&mut self, cc: &mut dyn ClientConn);

    /// `Balancer::update_client_conn_state`'s children: one pick_first per
    /// endpoint of `state` (kept, added, removed by endpoint); the policy
    /// then publishes what they make. With no address at all: no child,
    /// every pick fails, and so does the update (gRPC's message for both).
    fn take_endpoints(
        &mut self,
        cc: &mut dyn ClientConn,
        state: &ClientConnState,
    ) -> Result<(), String> {
        if state.addresses.is_empty() {
            self.children().close(cc);
            self.fail_all(
                cc,
                Box::new(FailPicker::unavailable(NO_CHILDREN_ZERO_ADDRESSES)),
            );
            return Err(NO_CHILDREN_ZERO_ADDRESSES.into());
        }
        let pick_first: Arc<dyn Builder> = Arc::new(PickFirstBuilder);
        self.children()
            .update_endpoints(cc, &state.endpoints, &pick_first, None);
        Ok(())
    }

    /// `Balancer::resolver_error`: passed to the children; with none (no
    /// address ever resolved, or none left) every pick fails with it,
    /// else the children go on with what they have.
    fn take_resolver_error(&mut self, cc: &mut dyn ClientConn, error: &str) {
        self.children().resolver_error(cc, error);
        if self.children().is_empty() {
            self.fail_all(cc, Box::new(FailPicker::resolver_error(error)));
        } else {
            self.republish(cc);
        }
    }
}
