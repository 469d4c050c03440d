//! The client side of `grpc.health.v1.Health/Watch` (gRFC A17) as a
//! poll-driven state machine, so the loop thread that owns the connection can
//! run it without a task or a thread of its own.
//!
//! The owner polls [`HealthWatch::poll`] with the connection's own waker: h2
//! wakes it when frames for the stream arrive, which lands in the same
//! `Connector::notified` call that drives the connection. Dropping the watch
//! cancels the stream (RST_STREAM CANCEL), which is how it is stopped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::Request;

use super::grpc::{
    build_request, check_response_head, code, encode_message, grpc_status, h2_error, take_message,
    CallError, Inflight,
};
use super::h2conn::Handle;
use super::health_proto;

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

enum State {
    /// Waiting for h2 to allow one more stream.
    Opening {
        send: SendRequest<Bytes>,
        /// Boxed: a request head dwarfs the other states.
        request: Option<Box<Request<()>>>,
        body: Bytes,
    },
    Headers {
        response: ResponseFuture,
        _send: SendStream<Bytes>,
    },
    Messages {
        body: RecvStream,
        _send: SendStream<Bytes>,
    },
    Trailers {
        body: RecvStream,
        _send: SendStream<Bytes>,
    },
    Done,
}

pub struct HealthWatch {
    state: State,
    buf: BytesMut,
    /// The Watch is a call in flight until dropped, so keepalive pings a
    /// connection that carries nothing else.
    _inflight: Inflight,
}

impl std::fmt::Debug for HealthWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Opening { .. } => "opening",
            State::Headers { .. } => "headers",
            State::Messages { .. } => "messages",
            State::Trailers { .. } => "trailers",
            State::Done => "done",
        };
        f.debug_struct("HealthWatch")
            .field("state", &state)
            .finish()
    }
}

impl HealthWatch {
    /// Prepares `Watch(HealthCheckRequest{service})` on the connection behind
    /// `handle`; nothing is sent until the first [`HealthWatch::poll`].
    pub fn start(handle: &Handle, service: &str) -> Result<Self, CallError> {
        let request = build_request(&handle.shared, WATCH_METHOD, &[], None)?;
        Ok(HealthWatch {
            state: State::Opening {
                send: handle.send.clone(),
                request: Some(Box::new(request)),
                body: encode_message(&health_proto::encode_request(service)),
            },
            buf: BytesMut::new(),
            _inflight: Inflight::enter(&handle.shared),
        })
    }

    /// Advances the call. Returns the next event, or `None` when nothing more
    /// can happen until `cx`'s waker fires. Call until `None`: several
    /// statuses may be buffered. After `Ended`, always `None`.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Option<WatchEvent> {
        loop {
            match &mut self.state {
                State::Opening {
                    send,
                    request,
                    body,
                } => {
                    match send.poll_ready(cx) {
                        Poll::Pending => return None,
                        Poll::Ready(Err(e)) => return self.end(h2_error(&e, false)),
                        Poll::Ready(Ok(())) => {}
                    }
                    let request = *request.take().expect("sent once");
                    let (response, mut stream) = match send.send_request(request, false) {
                        Ok(r) => r,
                        Err(e) => return self.end(h2_error(&e, false)),
                    };
                    if let Err(e) = stream.send_data(body.clone(), true) {
                        return self.end(h2_error(&e, true));
                    }
                    self.state = State::Headers {
                        response,
                        _send: stream,
                    };
                }
                State::Headers { response, .. } => {
                    let response = match Pin::new(response).poll(cx) {
                        Poll::Pending => return None,
                        Poll::Ready(Err(e)) => return self.end(h2_error(&e, true)),
                        Poll::Ready(Ok(r)) => r,
                    };
                    let (parts, body) = response.into_parts();
                    if let Err(e) = watch_head(&parts) {
                        return self.end(e);
                    }
                    let State::Headers { _send, .. } =
                        std::mem::replace(&mut self.state, State::Done)
                    else {
                        unreachable!()
                    };
                    self.state = State::Messages { body, _send };
                }
                State::Messages { body, .. } => {
                    match next_status(&mut self.buf) {
                        Err(e) => return self.end(e),
                        Ok(Some(status)) => return Some(WatchEvent::Status(status)),
                        Ok(None) => {}
                    }
                    match body.poll_data(cx) {
                        Poll::Pending => return None,
                        Poll::Ready(Some(Ok(chunk))) => {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            self.buf.extend_from_slice(&chunk);
                        }
                        Poll::Ready(Some(Err(e))) => return self.end(h2_error(&e, true)),
                        Poll::Ready(None) => {
                            let State::Messages { body, _send } =
                                std::mem::replace(&mut self.state, State::Done)
                            else {
                                unreachable!()
                            };
                            self.state = State::Trailers { body, _send };
                        }
                    }
                }
                State::Trailers { body, .. } => {
                    let status = match body.poll_trailers(cx) {
                        Poll::Pending => return None,
                        Poll::Ready(Err(e)) => h2_error(&e, true),
                        Poll::Ready(Ok(trailers)) => watch_end(trailers.as_ref()),
                    };
                    return self.end(status);
                }
                State::Done => return None,
            }
        }
    }

    /// Whether the call is over (`Ended` was returned).
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn end(&mut self, status: CallError) -> Option<WatchEvent> {
        self.state = State::Done;
        Some(WatchEvent::Ended(status))
    }
}

// The decoding half of `HealthWatch::poll`, pure (no h2): one code path for
// watches and for the fuzzer (`crate::fuzzing::health`).

/// A Watch response's head: `Err` ends the watch (a trailers-only status,
/// UNIMPLEMENTED typically, or not a gRPC response).
pub(crate) fn watch_head(parts: &http::response::Parts) -> Result<(), CallError> {
    if let Some((code, message)) = grpc_status(&parts.headers) {
        return Err(CallError::new(code, message));
    }
    check_response_head(parts)
}

/// The next `ServingStatus` in a Watch's received bytes, once a whole
/// message is there (taken off `buf`).
pub(crate) fn next_status(buf: &mut BytesMut) -> Result<Option<u32>, CallError> {
    match take_message(buf)? {
        None => Ok(None),
        Some(msg) => health_proto::decode_response(&msg)
            .map(Some)
            .ok_or_else(|| CallError::new(code::INTERNAL, "malformed HealthCheckResponse")),
    }
}

/// The status a Watch ends with, from its trailers (`None`: none came).
pub(crate) fn watch_end(trailers: Option<&http::HeaderMap>) -> CallError {
    match trailers.and_then(grpc_status) {
        Some((code, message)) => CallError::new(code, message),
        None => CallError::new(
            code::INTERNAL,
            "server closed the stream without grpc-status",
        ),
    }
}
