//! A server-streaming gRPC call as a poll-driven state machine, so the loop
//! thread that owns the connection can run it without a task or a thread of
//! its own: what the health Watch (gRFC A17) and the out-of-band ORCA
//! stream (gRFC A51's `StreamCoreMetrics`) are built on.
//!
//! The owner polls [`ServerStream::poll`] with the connection's own waker:
//! h2 wakes it when frames for the stream arrive, which lands in the same
//! `Connector::notified` call that drives the connection. Dropping the
//! stream cancels it (RST_STREAM CANCEL), which is how it is stopped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::Request;

use super::grpc::{
    build_request, check_response_head, grpc_status, h2_error, missing_status, no_trailers,
    request_body, take_message, CallError, Inflight,
};
use super::h2conn::Handle;

/// What a stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamEvent {
    /// One whole response message (unframed).
    Message(Bytes),
    /// The call is over, with this status (OK included: the owner decides
    /// whether a stream may end).
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

/// One server-streaming call with a single request message.
pub(crate) struct ServerStream {
    state: State,
    buf: BytesMut,
    /// The response's HTTP status, once its head came: the code of a
    /// stream that ends without grpc-status ([`missing_status`]).
    http: http::StatusCode,
    /// The stream is a call in flight on its connection until dropped, so
    /// keepalive pings a connection that carries nothing else. (Only the
    /// connection's count: the channel's call counters, which idleness and
    /// snapshots read, never see it.)
    _inflight: Inflight,
}

impl std::fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Opening { .. } => "opening",
            State::Headers { .. } => "headers",
            State::Messages { .. } => "messages",
            State::Trailers { .. } => "trailers",
            State::Done => "done",
        };
        f.debug_struct("ServerStream")
            .field("state", &state)
            .finish()
    }
}

impl ServerStream {
    /// Prepares `method(request)` on the connection behind `handle`;
    /// nothing is sent until the first [`ServerStream::poll`].
    pub(crate) fn start(handle: &Handle, method: &str, request: &[u8]) -> Result<Self, CallError> {
        let head = build_request(&handle.shared, method, &[], None, None)?;
        Ok(ServerStream {
            state: State::Opening {
                send: handle.send.clone(),
                request: Some(Box::new(head)),
                body: request_body(request)?,
            },
            buf: BytesMut::new(),
            http: http::StatusCode::OK,
            _inflight: Inflight::enter(&handle.shared),
        })
    }

    /// Advances the call. Returns the next event, or `None` when nothing more
    /// can happen until `cx`'s waker fires. Call until `None`: several
    /// messages may be buffered. After `Ended`, always `None`.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Option<StreamEvent> {
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
                    if let Err(e) = stream_head(&parts) {
                        return self.end(e);
                    }
                    self.http = parts.status;
                    let State::Headers { _send, .. } =
                        std::mem::replace(&mut self.state, State::Done)
                    else {
                        unreachable!()
                    };
                    self.state = State::Messages { body, _send };
                }
                State::Messages { body, .. } => {
                    match take_message(&mut self.buf) {
                        Err(e) => return self.end(e),
                        Ok(Some(msg)) => return Some(StreamEvent::Message(msg)),
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
                        Poll::Ready(Ok(trailers)) => stream_end(trailers.as_ref(), self.http),
                    };
                    return self.end(status);
                }
                State::Done => return None,
            }
        }
    }

    /// Ends the call now (RST_STREAM CANCEL if it was open): the owner
    /// gave up on it, for a message it could not decode.
    pub(crate) fn close(&mut self) {
        self.state = State::Done;
    }

    /// Whether the call is over (`Ended` was returned).
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn end(&mut self, status: CallError) -> Option<StreamEvent> {
        self.state = State::Done;
        Some(StreamEvent::Ended(status))
    }
}

// The decoding half of `ServerStream::poll`, pure (no h2): one code path for
// streams and for the fuzzer (`crate::fuzzing::health`).

/// A streaming response's head: `Err` ends the stream (a trailers-only
/// status, UNIMPLEMENTED typically, or not a gRPC response).
pub(crate) fn stream_head(parts: &http::response::Parts) -> Result<(), CallError> {
    // Not gRPC's: its HTTP status decides, as for a unary call.
    check_response_head(parts)?;
    match grpc_status(&parts.headers) {
        Some((code, message)) => Err(CallError::new(code, message)),
        None => Ok(()),
    }
}

/// The status a stream ends with, from its trailers (`None`: none came)
/// and its head's HTTP status (`http`), as a unary call's.
pub(crate) fn stream_end(trailers: Option<&http::HeaderMap>, http: http::StatusCode) -> CallError {
    let Some(trailers) = trailers else {
        return no_trailers();
    };
    match grpc_status(trailers) {
        Some((code, message)) => CallError::new(code, message),
        None => missing_status(http),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::grpc::code;

    /// A stream's end status, as a unary call's: no trailers at all (the
    /// stream ended on DATA) is INTERNAL, trailers without grpc-status
    /// UNKNOWN at HTTP 200 (else the HTTP status's code), and the
    /// trailers' grpc-status otherwise.
    #[test]
    fn stream_end_is_a_unary_calls() {
        let ok = http::StatusCode::OK;
        assert_eq!(stream_end(None, ok).code, code::INTERNAL);
        let empty = http::HeaderMap::new();
        assert_eq!(stream_end(Some(&empty), ok).code, code::UNKNOWN);
        let unavailable = http::StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            stream_end(Some(&empty), unavailable).code,
            code::UNAVAILABLE
        );
        let mut status = http::HeaderMap::new();
        status.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(stream_end(Some(&status), ok).code, 5);
    }
}
