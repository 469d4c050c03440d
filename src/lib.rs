//! switchyard: a client-side load-balancing core for gRPC-style RPC stacks.
//!
//! A single-threaded mio event loop ([`Runtime`]) owns connection management,
//! timers and every state transition of every [`Channel`]; it publishes
//! immutable picker tables that RPC threads read wait-free through a
//! per-thread [`Reader`]. Policies plug in through a registry by name, shaped
//! like gRPC-Go's `balancer` package.

pub mod backoff;
pub mod balancer;
pub mod call;
pub mod channel;
pub mod clock;
pub mod connector;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod managed;
pub mod picker;
pub mod policy;
pub mod publish;
pub mod reader;
pub mod registry;
pub(crate) mod resolver;
pub mod runtime;
pub mod service_config;
pub mod state;
pub mod status;
pub(crate) mod subchannel;
pub mod subconn;
pub(crate) mod sync;
pub mod transport;

pub use balancer::{
    Balancer, Builder, ClientConn, ClientConnState, LbConfig, SubConnState, TimerToken,
};
pub use call::{check_metadata, CallHandle, CallOptions, CallResult};
pub use channel::{Channel, ChannelOptions, IdleTrigger, StateCallback, SubConnCallback};
pub use clock::{Clock, ManualClock, SystemClock};
pub use connector::{
    Connector, ConnectorCtx, ExternalConnector, HostTransport, Notifier, TransportEvent,
};
pub use error::Error;
pub use picker::{DoneHook, DoneInfo, Listed, PickInfo, PickLocal, PickResult, Picker};
pub use reader::{Pick, PickError, PickOptions, PickRef, RawPick, Reader};
pub use runtime::{Runtime, RuntimeConfig};
pub use state::ConnectivityState;
pub use status::{Code, Status};
pub use subconn::{Address, SubConn, SubConnId, UserData};
pub use transport::{Credentials, Keepalive, Limits, TlsSettings, TransportConfig, UnaryResponse};
