//! What the streams a subchannel keeps open on its connection (the A17
//! health stream, the A51 ORCA stream) do alike when one ends: an
//! UNIMPLEMENTED server is said once per address, and any other end is
//! followed by a new stream after the backoff, or at once if the ended
//! stream had delivered something (it worked for a while).

use crate::backoff::Backoff;
use std::collections::HashSet;
use std::time::Instant;

/// Logs at ERROR, once per address (`logged` outlives connections), that
/// `addr` has no `service`; `then` says what follows from it. ERROR as gRFC
/// A17 asks for the health service and gRPC-Go logs both ("Subchannel
/// health check is unimplemented at server side, thus health check is
/// disabled"; "Server doesn't support ORCA OOB load reporting protocol").
pub(super) fn log_unimplemented_once(
    logged: &mut HashSet<String>,
    target: &str,
    addr: &str,
    service: &str,
    message: &str,
    then: &str,
) {
    if logged.insert(addr.to_string()) {
        log::error!(target: target, "{addr} does not implement {service} ({message}): {then}");
    }
}

/// When to open the next stream after one ended otherwise: at once, with
/// the backoff anew, if it `delivered`; else the stream's backoff after its
/// end (`now`), as gRPC-Go's health client and ORCA producer wait from the
/// failure: a stream may run long before it fails, unlike a connection
/// attempt, whose backoff counts from its start.
pub(super) fn reopen_at(backoff: &mut Backoff, delivered: bool, now: Instant) -> Instant {
    if delivered {
        backoff.reset();
        now
    } else {
        now + backoff.interval()
    }
}
