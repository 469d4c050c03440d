//! gRPC status codes and [`Status`], the outcome of a call that did not
//! succeed (and the status a picker fails or drops a call with).
//!
//! [`Status`] implements [`std::error::Error`], so `?` carries it into a
//! `Box<dyn std::error::Error>` or any error type with a `From<Status>`.

use std::fmt;
use std::sync::Arc;

/// What a call ended by its channel's close says, whether it was waiting
/// for a pick or already on a connection: ours, then gRPC-Go's words
/// (`ErrClientConnClosing`), which its tests look for.
pub(crate) const CLOSED_MESSAGE: &str =
    "the channel is closed (grpc: the client connection is closing)";

/// What a call whose deadline passed says: gRPC-Go's words (its
/// `context.DeadlineExceeded`'s text, which a call's status carries).
pub(crate) const DEADLINE_MESSAGE: &str = "context deadline exceeded";

/// gRPC status codes (numbers are the wire values, as in gRPC's
/// `statuscodes.md`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// Not an error: the call succeeded.
    Ok = 0,
    /// The call was cancelled, typically by the caller.
    Cancelled = 1,
    /// An error the server did not classify (or a status it sent that the
    /// client could not read).
    Unknown = 2,
    /// The caller specified an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the call completed (or before a pick
    /// found a ready subchannel).
    DeadlineExceeded = 4,
    /// A requested entity was not found.
    NotFound = 5,
    /// The entity a caller tried to create already exists.
    AlreadyExists = 6,
    /// The caller may not perform the operation.
    PermissionDenied = 7,
    /// Some resource (quota, message size, ...) is exhausted.
    ResourceExhausted = 8,
    /// The system is not in a state the operation requires.
    FailedPrecondition = 9,
    /// The operation was aborted (a concurrency conflict, typically).
    Aborted = 10,
    /// An operation was attempted past a valid range.
    OutOfRange = 11,
    /// The operation is not implemented or supported.
    Unimplemented = 12,
    /// An invariant the system expects was broken.
    Internal = 13,
    /// The service is currently unavailable; retrying may help (no ready
    /// subchannel, connection failed or lost).
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request lacks valid credentials.
    Unauthenticated = 16,
}

impl Code {
    /// The code with the wire value `n`, or `None` past 16.
    pub fn from_u32(n: u32) -> Option<Code> {
        use Code::*;
        const ALL: [Code; 17] = [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ];
        ALL.get(n as usize).copied()
    }

    /// The code's name as gRPC spells it ("UNAVAILABLE").
    pub fn name(self) -> &'static str {
        use Code::*;
        match self {
            Ok => "OK",
            Cancelled => "CANCELLED",
            Unknown => "UNKNOWN",
            InvalidArgument => "INVALID_ARGUMENT",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            NotFound => "NOT_FOUND",
            AlreadyExists => "ALREADY_EXISTS",
            PermissionDenied => "PERMISSION_DENIED",
            ResourceExhausted => "RESOURCE_EXHAUSTED",
            FailedPrecondition => "FAILED_PRECONDITION",
            Aborted => "ABORTED",
            OutOfRange => "OUT_OF_RANGE",
            Unimplemented => "UNIMPLEMENTED",
            Internal => "INTERNAL",
            Unavailable => "UNAVAILABLE",
            DataLoss => "DATA_LOSS",
            Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// gRFC A54: codes the control plane must never hand to the data plane.
    pub(crate) fn is_restricted(self) -> bool {
        use Code::*;
        matches!(
            self,
            Ok | InvalidArgument
                | NotFound
                | AlreadyExists
                | FailedPrecondition
                | Aborted
                | OutOfRange
                | DataLoss
        )
    }
}

/// A status: code plus message. Cheap to clone (the message is shared).
///
/// It is what a failed call, pick or `done` reports, and an
/// [`std::error::Error`]:
///
/// ```
/// use switchyard::{Code, Status};
///
/// fn call() -> Result<(), Status> {
///     Err(Status::unavailable("no ready subchannel"))
/// }
/// fn main_like() -> Result<(), Box<dyn std::error::Error>> {
///     call()?; // Status converts into Box<dyn Error>
///     Ok(())
/// }
/// let err = main_like().unwrap_err();
/// let status = err.downcast_ref::<Status>().unwrap();
/// assert_eq!(status.code(), Code::Unavailable);
/// assert_eq!(err.to_string(), "Unavailable: no ready subchannel");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: Arc<str>,
    /// What the server sent with it, if anything (a failed call's).
    server: Option<Arc<ServerDetails>>,
}

/// What a server sent with a call's failed status besides code and message.
#[derive(Debug, PartialEq, Eq)]
struct ServerDetails {
    details: Option<Vec<u8>>,
    trailers: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<Arc<str>>) -> Status {
        Status {
            code,
            message: message.into(),
            server: None,
        }
    }

    /// The same status with what the server sent with it: `details` (its
    /// `grpc-status-details-bin`, decoded), `trailers` (its metadata) and
    /// `headers` (the response headers before it).
    pub(crate) fn with_server_details(
        mut self,
        details: Option<Vec<u8>>,
        trailers: Vec<(String, String)>,
        headers: Vec<(String, String)>,
    ) -> Status {
        if details.is_some() || !trailers.is_empty() || !headers.is_empty() {
            self.server = Some(Arc::new(ServerDetails {
                details,
                trailers,
                headers,
            }));
        }
        self
    }

    /// The server's error details: its `grpc-status-details-bin`, decoded
    /// from base64 (by convention a serialized `google.rpc.Status`, gRPC's
    /// richer error model), if it sent one with this status.
    pub fn details(&self) -> Option<&[u8]> {
        self.server.as_ref()?.details.as_deref()
    }

    /// The server's metadata sent with this status (its trailers, or the
    /// headers of a trailers-only answer), as `(key, value)`, grouped by
    /// key (keys in the order they first came, each key's values in the
    /// order sent); a value that is not UTF-8 with its bad bytes replaced:
    /// `-bin` values as their base64 text; `grpc-status`, `grpc-message`
    /// and `grpc-encoding` left out, as gRPC-Go leaves them out of a
    /// call's trailer (which keeps `content-type` and
    /// `grpc-status-details-bin`, as grpc-java's does). Empty for a status
    /// no server sent.
    pub fn trailers(&self) -> &[(String, String)] {
        self.server.as_ref().map_or(&[], |s| &s.trailers)
    }

    /// The response headers the server sent before this status, when it
    /// sent the status in trailers after them (gRPC's initial metadata of a
    /// failed call), listed as `trailers` lists its metadata. Empty for a
    /// trailers-only answer and for a status no server sent.
    pub fn headers(&self) -> &[(String, String)] {
        self.server.as_ref().map_or(&[], |s| &s.headers)
    }

    /// An UNAVAILABLE status (what a channel with no ready subchannel fails
    /// a call with).
    pub fn unavailable(message: impl Into<Arc<str>>) -> Status {
        Status::new(Code::Unavailable, message)
    }

    /// A status a picker hands out, with gRFC A54 applied: restricted codes
    /// become INTERNAL, keeping the original in the message.
    pub fn from_picker(code: Code, message: &str) -> Status {
        if code.is_restricted() {
            Status::new(
                Code::Internal,
                format!("picker returned illegal status {code:?}: {message}"),
            )
        } else {
            Status::new(code, message)
        }
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable message (may be empty).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message itself, shared: keeping it costs no copy.
    pub fn into_message(self) -> Arc<str> {
        self.message
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// A status is the error of a failed call: `reader.unary(...)?` works in a
/// function returning `Box<dyn std::error::Error>`.
impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_codes_become_internal() {
        let s = Status::from_picker(Code::NotFound, "gone");
        assert_eq!(s.code(), Code::Internal);
        assert!(s.message().contains("NotFound") && s.message().contains("gone"));
        let s = Status::from_picker(Code::ResourceExhausted, "busy");
        assert_eq!(s.code(), Code::ResourceExhausted);
    }

    #[test]
    fn status_is_a_std_error() {
        fn fails() -> Result<(), Status> {
            Err(Status::new(Code::DeadlineExceeded, "too slow"))
        }
        fn boxed() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            fails()?;
            Ok(())
        }
        let err = boxed().unwrap_err();
        assert_eq!(err.to_string(), "DeadlineExceeded: too slow");
        let status = err.downcast_ref::<Status>().expect("the Status itself");
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(std::error::Error::source(status).is_none());
    }

    #[test]
    fn code_numbers() {
        assert_eq!(Code::from_u32(14), Some(Code::Unavailable));
        assert_eq!(Code::from_u32(17), None);
    }
}
