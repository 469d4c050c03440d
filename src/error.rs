//! Errors of the channel API.

use std::fmt;

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
