//! A unary call's outcome as `(code, text)`: OK with the response message
//! (lossy UTF-8), or the status's code and message. Shared by the suites
//! that include it with `#[path = "common/outcome.rs"] mod outcome;`.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;
use switchyard::{Code, Status, UnaryResponse};

pub fn outcome(r: &Result<UnaryResponse, Status>) -> (Code, String) {
    match r {
        Ok(resp) => (
            Code::Ok,
            String::from_utf8_lossy(&resp.message).into_owned(),
        ),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

/// Where a started call's callback sends its result.
pub type Rx = mpsc::Receiver<Result<UnaryResponse, Status>>;

/// The outcome of the started call behind `rx`, within `within`.
pub fn wait(rx: &Rx, within: Duration) -> (Code, String) {
    outcome(&rx.recv_timeout(within).expect("the call completes"))
}
