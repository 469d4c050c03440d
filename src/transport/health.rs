//! The client side of `grpc.health.v1.Health/Watch` (gRFC A17) as a
//! poll-driven state machine, so the loop thread that owns the connection can
//! run it without a task or a thread of its own.
//!
//! The owner polls [`HealthWatch::poll`] with the connection's own waker: h2
//! wakes it when frames for the stream arrive, which lands in the same
//! `Connector::notified` call that drives the connection. Dropping the watch
//! cancels the stream (RST_STREAM CANCEL), which is how it is stopped.

use std::task::Context;

use bytes::BytesMut;

use super::grpc::{code, take_message, CallError};
use super::h2conn::Handle;
use super::health_proto;
use super::stream::{ServerStream, StreamEvent};

pub const WATCH_METHOD: &str = "/grpc.health.v1.Health/Watch";

/// What a watch produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A `HealthCheckResponse` arrived, carrying this `ServingStatus`.
    Status(u32),
    /// The call is over. A Watch never ends by itself on a healthy server, so
    /// this is an error even when `code` is OK; UNIMPLEMENTED means the server
    /// has no health service.
    Ended(CallError),
}

/// A `Watch` call: a server stream of `HealthCheckResponse`s.
#[derive(Debug)]
pub struct HealthWatch {
    stream: ServerStream,
}

impl HealthWatch {
    /// Prepares `Watch(HealthCheckRequest{service})` on the connection behind
    /// `handle`; nothing is sent until the first [`HealthWatch::poll`].
    pub fn start(handle: &Handle, service: &str) -> Result<Self, CallError> {
        let request = health_proto::encode_request(service);
        Ok(HealthWatch {
            stream: ServerStream::start(handle, WATCH_METHOD, &request)?,
        })
    }

    /// Advances the call. Returns the next event, or `None` when nothing more
    /// can happen until `cx`'s waker fires. Call until `None`: several
    /// statuses may be buffered. After `Ended`, always `None`.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Option<WatchEvent> {
        match self.stream.poll(cx)? {
            StreamEvent::Message(msg) => match health_proto::decode_response(&msg) {
                Some(status) => Some(WatchEvent::Status(status)),
                None => {
                    // A server that cannot be understood: the watch is over.
                    self.stream.close();
                    Some(WatchEvent::Ended(malformed()))
                }
            },
            StreamEvent::Ended(e) => Some(WatchEvent::Ended(e)),
        }
    }

    /// Whether the call is over (`Ended` was returned).
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.stream.is_done()
    }
}

fn malformed() -> CallError {
    CallError::new(code::INTERNAL, "malformed HealthCheckResponse")
}

// The decoding half of `HealthWatch::poll`, pure (no h2): one code path for
// watches and for the fuzzer (`crate::fuzzing::health`).

/// A Watch response's head: `Err` ends the watch (a trailers-only status,
/// UNIMPLEMENTED typically, or not a gRPC response).
pub(crate) fn watch_head(parts: &http::response::Parts) -> Result<(), CallError> {
    super::stream::stream_head(parts)
}

/// The next `ServingStatus` in a Watch's received bytes, once a whole
/// message is there (taken off `buf`).
pub(crate) fn next_status(buf: &mut BytesMut) -> Result<Option<u32>, CallError> {
    match take_message(buf)? {
        None => Ok(None),
        Some(msg) => health_proto::decode_response(&msg)
            .map(Some)
            .ok_or_else(malformed),
    }
}

/// The status a Watch ends with, from its trailers (`None`: none came) and
/// its head's HTTP status.
pub(crate) fn watch_end(trailers: Option<&http::HeaderMap>, http: http::StatusCode) -> CallError {
    super::stream::stream_end(trailers, http)
}
