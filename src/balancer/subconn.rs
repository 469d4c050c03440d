//! Subchannels as policies, pickers and RPC threads see them (gRPC's
//! `SubConn`): an address with an identity. The state machine that drives
//! them lives on the loop (`crate::subchannel`).

use crate::address::{Address, UserData};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A subchannel's identity, unique within its channel and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubConnId(pub u64);

/// What a picker returns: one address of one channel. Immutable; shared by the
/// loop, the policy and every table that can pick it.
pub struct SubConn {
    id: SubConnId,
    /// The channel's dense index for this subchannel (`NO_SLOT`: none),
    /// where readers count its host picks (see `crate::snapshot`).
    slot: u32,
    address: Address,
    /// What RPCs are sent on, when a connector attached one (the managed
    /// connector's HTTP/2 connection while READY). Swapped by the loop; read
    /// once per RPC. Opaque here: the policy API knows no transport.
    attached: arc_swap::ArcSwapOption<Attached>,
    /// Its transport is up (see `is_connected`). Written and read on the
    /// loop only; atomic because the handle is shared.
    connected: AtomicBool,
}

/// `SubConn::slot` of a subchannel that is not counted.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// A connection a connector attached to its subchannel (see `SubConn::attached`).
pub(crate) struct Attached(pub(crate) Arc<dyn std::any::Any + Send + Sync>);

impl SubConn {
    /// `n` subchannels with ids `0..n`, at 127.0.0.1:1000 on (unit tests).
    #[cfg(test)]
    pub(crate) fn numbered(n: u64) -> Vec<Arc<SubConn>> {
        (0..n)
            .map(|i| {
                Arc::new(SubConn::new(
                    SubConnId(i),
                    Address::new(format!("127.0.0.1:{}", 1000 + i)),
                ))
            })
            .collect()
    }

    pub(crate) fn new(id: SubConnId, address: Address) -> SubConn {
        SubConn::with_slot(id, NO_SLOT, address)
    }

    /// A subchannel whose host picks readers count at `slot`.
    pub(crate) fn with_slot(id: SubConnId, slot: u32, address: Address) -> SubConn {
        SubConn {
            id,
            slot,
            address,
            attached: arc_swap::ArcSwapOption::empty(),
            connected: AtomicBool::new(false),
        }
    }

    /// Whether its transport is up: READY, or connected and still waiting
    /// for (or failing) its health check (gRFC A17), when the state says
    /// CONNECTING (or TRANSIENT_FAILURE). gRPC-Go's pick_first tells the raw
    /// connection state from the health state this way: a connection made
    /// wins its pass, whatever health then says. For policies, on the loop.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    /// Where readers count this subchannel's host picks (`NO_SLOT`: nowhere).
    #[inline(always)]
    pub(crate) fn slot(&self) -> u32 {
        self.slot
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

    /// What the connector attached for RPCs to use, if anything.
    pub(crate) fn attached(&self) -> Option<Arc<Attached>> {
        self.attached.load_full()
    }

    /// Attaches (or, with `None`, detaches) what RPCs send on.
    pub(crate) fn attach(&self, connection: Option<Arc<dyn std::any::Any + Send + Sync>>) {
        self.attached
            .store(connection.map(|c| Arc::new(Attached(c))));
    }
}

impl fmt::Debug for SubConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubConn({}, {})", self.id.0, self.address.addr)
    }
}
