//! gRPC status codes and the status a picker fails or drops a call with.

use std::fmt;
use std::sync::Arc;

/// gRPC status codes (numbers are the wire values).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
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
    fn is_restricted(self) -> bool {
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: Arc<str>,
}

impl Status {
    pub fn new(code: Code, message: impl Into<Arc<str>>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

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

    pub fn code(&self) -> Code {
        self.code
    }

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
    fn code_numbers() {
        assert_eq!(Code::from_u32(14), Some(Code::Unavailable));
        assert_eq!(Code::from_u32(17), None);
    }
}
