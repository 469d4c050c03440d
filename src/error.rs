//! Errors of the channel API: what creating, updating or closing a channel
//! can fail with. A call that fails reports a [`Status`](crate::Status)
//! instead, as gRPC does.

use std::fmt;

/// Why a channel operation failed. Implements [`std::error::Error`], so `?`
/// carries it into `Box<dyn std::error::Error>` (and [`std::io::Error`]
/// converts into it, for `?` on [`Runtime::new`](crate::Runtime::new)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The service config was rejected; the message names the problem.
    InvalidServiceConfig(String),
    /// The target could not be parsed.
    InvalidTarget(String),
    /// An argument was out of range (unknown state, subchannel, ...).
    InvalidArgument(String),
    /// The channel was closed.
    Closed,
    /// The runtime that owned the channel is gone.
    RuntimeGone,
    /// An operating-system error (creating the event loop, a socket, ...),
    /// as text so the error stays `Clone` and `Eq`.
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidServiceConfig(m) => write!(f, "invalid service config: {m}"),
            Error::InvalidTarget(m) => write!(f, "invalid target: {m}"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Closed => f.write_str("channel is closed"),
            Error::RuntimeGone => f.write_str("the runtime was dropped"),
            Error::Io(m) => write!(f, "I/O error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_a_std_error() {
        fn boxed() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            Err(Error::InvalidTarget("nope:".into()))?;
            Ok(())
        }
        let err = boxed().unwrap_err();
        assert_eq!(err.to_string(), "invalid target: nope:");
        assert_eq!(
            err.downcast_ref::<Error>(),
            Some(&Error::InvalidTarget("nope:".into()))
        );
    }
}
