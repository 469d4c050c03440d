//! Subchannels, on the loop: the connectivity state machine (`pool`) IDLE →
//! CONNECTING → READY or TRANSIENT_FAILURE → (backoff) → IDLE …, READY →
//! IDLE on loss, SHUTDOWN final, and client-side health checking (gRFC A17)
//! on top of it (`health`), whatever the connector. Every transition is
//! queued for the policy, which sees them one at a time.
//!
//! With health checking on, a transport that comes up makes the subchannel
//! *connected* (no deadline, backoff reset) but it stays CONNECTING until the
//! first health verdict; the subchannel asks the connector to check
//! (`Connector::start_health`) and owns the rest: the service name, what a
//! report means, when a broken health stream is retried. While connected,
//! verdicts move it between READY and TRANSIENT_FAILURE without touching the
//! connection or arming a connection backoff; losing the connection is IDLE,
//! from either. A connector that cannot check health says so, and its
//! connected subchannels are READY.
//!
//! Out-of-band load reports (gRFC A51, `oob`) ride the same way: a policy
//! registers listeners on a subchannel (`ClientConn::register_oob_listener`),
//! and while it is READY the subchannel asks the connector to keep an ORCA
//! stream open (`Connector::start_load_reports`) and hands its reports to
//! the listeners. The stream is not a call: the channel's call counts
//! (idleness, snapshots) never see it.

mod health;
mod oob;
mod pool;
mod stream_end;

pub(crate) use pool::SubchannelPool;

/// The kinds of the timers subchannels arm (see `crate::runtime::TimerKey`).
pub(crate) const BACKOFF_TIMER: u8 = 2;
pub(crate) const CONNECT_DEADLINE_TIMER: u8 = 3;
/// A broken health stream's retry is due.
pub(crate) const HEALTH_RETRY_TIMER: u8 = 7;
/// An ended out-of-band ORCA stream's retry is due.
pub(crate) const OOB_RETRY_TIMER: u8 = 9;
