//! Unary RPCs over the picked subchannel's HTTP/2 connection (managed
//! connector only): pick, send, feed the outcome back to the policy through
//! `done`, and retry once, transparently, a call the server never processed.

use crate::picker::{DoneInfo, PickInfo};
use crate::reader::{PickOptions, Reader};
use crate::status::{Code, Status};
use crate::transport::{self, UnaryResponse};
use std::time::Instant;

/// Per-call options.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallOptions<'a> {
    pub deadline: Option<Instant>,
    pub wait_for_ready: bool,
    /// Request metadata (lower-case keys); reserved gRPC headers are skipped.
    pub metadata: &'a [(String, String)],
    /// Request hash for hashing policies.
    pub hash: Option<u64>,
}

impl Reader {
    /// One blocking unary call: returns the response message, headers and
    /// trailers, or the call's gRPC status.
    pub fn unary(
        &mut self,
        method: &str,
        request: &[u8],
        options: &CallOptions<'_>,
    ) -> Result<UnaryResponse, Status> {
        if !self.is_managed() {
            return Err(Status::new(
                Code::Unimplemented,
                "this channel's transports belong to the host: send on the picked subchannel yourself",
            ));
        }
        let info = PickInfo {
            method,
            hash: options.hash,
        };
        let pick_options = PickOptions {
            deadline: options.deadline,
            wait_for_ready: options.wait_for_ready,
        };
        // One transparent retry. It may go out on the same connection (a
        // REFUSED_STREAM leaves it usable, as in gRPC), but never on one that
        // is closing: such a handle is waited out like a lost connection.
        let mut retried = false;
        loop {
            let pick = self.pick(&info, &pick_options).map_err(|e| e.status())?;
            let usable = pick.subconn().transport().filter(|h| !h.is_closing());
            let Some(handle) = usable else {
                // The connection went away (or is going) after the picker was
                // built: wait for the picker that knows (gRPC treats this as
                // a queued pick). The loop publishes one once it has seen the
                // GOAWAY / loss that made the handle closing.
                self.finish(
                    pick,
                    &DoneInfo {
                        error: Some("subchannel lost its connection"),
                        ..Default::default()
                    },
                );
                if !self.wait_for_next_picker(options.deadline) {
                    return Err(Status::new(
                        Code::DeadlineExceeded,
                        "deadline exceeded waiting for a connection",
                    ));
                }
                continue;
            };
            let timeout = options
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            let started = Instant::now();
            let result = transport::unary(&handle, method, request, options.metadata, timeout);
            let latency = started.elapsed();
            match result {
                Ok(response) => {
                    self.finish(
                        pick,
                        &DoneInfo {
                            error: None,
                            latency,
                            load: &[],
                        },
                    );
                    return Ok(response);
                }
                Err(e) => {
                    self.finish(
                        pick,
                        &DoneInfo {
                            error: Some(&e.message),
                            latency,
                            load: &[],
                        },
                    );
                    if e.transparent_retry_ok && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(Status::new(
                        Code::from_u32(e.code).unwrap_or(Code::Unknown),
                        e.message,
                    ));
                }
            }
        }
    }
}
