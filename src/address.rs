//! Addresses as resolvers produce them and policies consume them: one
//! network address with the host's attributes (weight, tag, user data), and
//! endpoints, each a list of addresses of one backend.

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

/// One backend as a resolver names it: one or more addresses that reach the
/// same server (say its IPv4 and IPv6 addresses), tried in order, and the
/// endpoint's own weight (gRPC's `resolver.Endpoint`). Policies that balance
/// over backends (round_robin, weighted ones) make one child per endpoint;
/// pick_first uses every endpoint's addresses in order.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    /// The endpoint's addresses, in the order to try them.
    pub addresses: Vec<Address>,
    /// The endpoint's weight (0: unset, which weighing policies treat as 1).
    pub weight: u32,
    /// Where `ring_hash` places the endpoint on its ring (gRFC A76's hash
    /// key attribute); `None` or empty: its first address.
    pub hash_key: Option<String>,
}

impl Endpoint {
    /// `n` endpoints of two addresses each (a dual-stack fleet, on
    /// loopback): endpoint `i` at 127.0.0.1:`port + i`, then
    /// `Endpoint::second_of(i, port)` (unit tests).
    #[cfg(test)]
    pub(crate) fn dual_address(n: usize, port: usize) -> Vec<Endpoint> {
        (0..n)
            .map(|i| {
                Endpoint::new(vec![
                    Address::new(format!("127.0.0.1:{}", port + i)),
                    Address::new(Endpoint::second_of(i, port)),
                ])
            })
            .collect()
    }

    /// The second address of `dual_address`'s endpoint `i`.
    #[cfg(test)]
    pub(crate) fn second_of(i: usize, port: usize) -> String {
        format!("127.0.0.2:{}", port + i)
    }

    /// An endpoint of these addresses; its weight is the first address's.
    pub fn new(addresses: Vec<Address>) -> Endpoint {
        let weight = addresses.first().map(|a| a.weight).unwrap_or(0);
        Endpoint {
            addresses,
            weight,
            hash_key: None,
        }
    }

    /// Sets `weight`.
    pub fn with_weight(mut self, weight: u32) -> Endpoint {
        self.weight = weight;
        self
    }

    /// Sets `hash_key`.
    pub fn with_hash_key(mut self, key: impl Into<String>) -> Endpoint {
        self.hash_key = Some(key.into());
        self
    }
}

impl From<Address> for Endpoint {
    /// An endpoint of one address (what a plain address list means).
    fn from(address: Address) -> Endpoint {
        Endpoint::new(vec![address])
    }
}
