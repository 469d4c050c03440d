//! Subchannels as RPC threads and pickers see them: an address with an identity.
//! The state machine that drives them lives in `subchannel.rs` on the loop.

use crate::address::{Address, UserData};
use std::fmt;
use std::sync::Arc;

/// A subchannel's identity, unique within its channel and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubConnId(pub u64);

/// What a picker returns: one address of one channel. Immutable; shared by the
/// loop, the policy and every table that can pick it.
pub struct SubConn {
    id: SubConnId,
    address: Address,
    /// The HTTP/2 connection RPCs use, when the managed connector has one
    /// READY. Swapped by the loop; read once per RPC.
    transport: arc_swap::ArcSwapOption<crate::transport::Handle>,
}

impl SubConn {
    pub(crate) fn new(id: SubConnId, address: Address) -> SubConn {
        SubConn {
            id,
            address,
            transport: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// The subchannel's id (what `Channel::report_subconn_state` takes).
    pub fn id(&self) -> SubConnId {
        self.id
    }

    /// The address it connects to, with weight, user data and tag.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The address string (`Address::addr`).
    pub fn addr(&self) -> &str {
        &self.address.addr
    }

    /// The address's user data.
    pub fn user_data(&self) -> Option<&UserData> {
        self.address.user_data.as_ref()
    }

    /// The address's `tag`.
    pub fn tag(&self) -> u64 {
        self.address.tag
    }

    /// The connection to send on, if the library manages one and it is READY.
    #[doc(hidden)] // for the raw transport benchmark (benches/rpc.rs) only
    pub fn transport(&self) -> Option<Arc<crate::transport::Handle>> {
        self.transport.load_full()
    }

    pub(crate) fn set_transport(&self, handle: Option<Arc<crate::transport::Handle>>) {
        self.transport.store(handle);
    }
}

impl fmt::Debug for SubConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubConn({}, {})", self.id.0, self.address.addr)
    }
}
