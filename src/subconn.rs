//! Subchannels as RPC threads and pickers see them: an address with an identity.
//! The state machine that drives them lives in `subchannel.rs` on the loop.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// The host's opaque per-address data (a backend object, a C pointer with its
/// release callback, ...). Released when its last holder lets go: the subchannel
/// and every picker table that can return it, and every pick not yet done.
pub type UserData = Arc<dyn Any + Send + Sync>;

/// One resolved address.
#[derive(Clone)]
pub struct Address {
    /// `ip:port`, `[v6]:port`, `unix:/path` or any string the connector understands.
    pub addr: String,
    /// Endpoint weight (0 means unset, treated as 1 by policies that weigh).
    pub weight: u32,
    /// The host's data for this address, handed back with every pick and
    /// released once nothing can return it any more.
    pub user_data: Option<UserData>,
    /// The host's own word for this address (an index, a pointer it owns),
    /// handed back with every pick of it at no cost. The library never reads
    /// through it or frees it.
    pub tag: u64,
}

impl Address {
    /// An address with no weight, user data or tag.
    pub fn new(addr: impl Into<String>) -> Address {
        Address {
            addr: addr.into(),
            weight: 0,
            user_data: None,
            tag: 0,
        }
    }

    /// Sets `user_data`.
    pub fn with_user_data(mut self, data: UserData) -> Address {
        self.user_data = Some(data);
        self
    }

    /// Sets `weight`.
    pub fn with_weight(mut self, weight: u32) -> Address {
        self.weight = weight;
        self
    }

    /// Sets `tag`.
    pub fn with_tag(mut self, tag: u64) -> Address {
        self.tag = tag;
        self
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Address")
            .field("addr", &self.addr)
            .field("weight", &self.weight)
            .field("user_data", &self.user_data.is_some())
            .field("tag", &self.tag)
            .finish()
    }
}

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
