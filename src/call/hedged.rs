//! Hedged blocking calls (a method's `hedgingPolicy`, gRFC A6): attempts
//! side by side on the caller's thread, one more each `hedgingDelay` (or at
//! once after a non-fatal failure, or after the server's pushback), each
//! picked anew, up to `maxAttempts`, within the call's deadline. The first
//! OK, committed or fatal outcome ends the call and cancels the others
//! (RST_STREAM CANCEL; the policy hears each as cancelled).
//!
//! Started calls hedge on the loop (`call/started.rs`), by the same
//! decisions (`Course::hedge_ended`, `Course::next_hedge`).

use super::course::{attempt_metadata, Course, Flight, Hedged, Landed, Next};
use super::{CallOptions, Settings};
use crate::balancer::picker::PickInfo;
use crate::reader::{PickError, PickOptions, Reader};
use crate::status::DEADLINE_MESSAGE;
use crate::status::{Code, Status};
use crate::transport::{self, UnaryResponse};
use std::future::poll_fn;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Reader {
    /// `unary` for a method with a hedging policy: `course` is hedged.
    pub(super) fn unary_hedged(
        &mut self,
        method: &str,
        request: &[u8],
        options: &CallOptions<'_>,
        set: &Settings,
        mut course: Course,
    ) -> Result<UnaryResponse, Status> {
        let info = PickInfo {
            method,
            hash: options.hash,
            metadata: options.metadata,
        };
        let mut flights: Vec<Flight> = Vec::new();
        // When the next attempt goes: the first at once.
        let mut next_at = Some(Instant::now());
        // Bounded: each turn sends an attempt (at most maxAttempts, plus one
        // transparent replacement), ends one, or waits until the next is
        // due or the deadline.
        loop {
            let now = Instant::now();
            if set.deadline.is_some_and(|d| now >= d) {
                self.cancel_flights(flights, Code::DeadlineExceeded, DEADLINE_MESSAGE);
                return Err(Status::new(Code::DeadlineExceeded, DEADLINE_MESSAGE));
            }
            if next_at.is_some_and(|t| t <= now) {
                next_at = None;
                // The first attempt waits for a pick as any call does; a
                // later one must not hold up those in flight.
                let picked = if flights.is_empty() {
                    let first = PickOptions {
                        deadline: set.deadline,
                        wait_for_ready: set.wait_for_ready,
                    };
                    self.pick(&info, &first)
                } else {
                    self.try_pick(&info)
                };
                let next = match picked {
                    Ok(pick) => course.picked(pick, |p, i| self.finish(p, i)),
                    Err(e) if flights.is_empty() => course.pick_error(e),
                    // A drop fails the call at once, attempts in flight
                    // or not (A6: "without any retries").
                    Err(PickError::Dropped(s)) => {
                        self.cancel_flights(flights, Code::Cancelled, "call ended");
                        return Err(s);
                    }
                    Err(_) => Next::Wait,
                };
                match next {
                    Next::Send(pick, handle) => {
                        let previous = course.sending();
                        let timeout = set.deadline.map(|d| d.saturating_duration_since(now));
                        let sc = pick.subconn().id();
                        self.call_counts().started(sc);
                        let md = attempt_metadata(options.metadata, previous);
                        let headers = Arc::new(AtomicBool::new(false));
                        match transport::start(
                            &handle,
                            method,
                            request,
                            &md,
                            timeout,
                            set.max_response,
                            Some(headers.clone()),
                        ) {
                            Ok(stream) => flights.push(Flight::new(pick, stream, headers)),
                            Err(e) => {
                                self.call_counts().ended(sc, false);
                                match course.hedge_ended(pick, Err(e), Duration::ZERO, |p, i| {
                                    self.finish(p, i)
                                }) {
                                    Hedged::Done(r) => {
                                        self.cancel_flights(flights, Code::Cancelled, "call ended");
                                        return r;
                                    }
                                    Hedged::Next(d) => next_at = d.map(|d| now + d),
                                }
                            }
                        }
                        if next_at.is_none() {
                            next_at = course.next_hedge().map(|d| now + d);
                        }
                    }
                    Next::Wait if flights.is_empty() => {
                        if !self.wait_for_next_picker(set.deadline) {
                            return Err(course.deadline_waiting());
                        }
                        next_at = Some(Instant::now());
                    }
                    // No pick now: the next attempt's turn comes again after
                    // a hedging delay. (No backoff comes to a hedged call: it
                    // has no retry policy.)
                    Next::Wait | Next::Backoff(_) => {
                        next_at = course.hedge_repick().map(|d| now + d)
                    }
                    Next::Done(r) => return r,
                }
                continue;
            }
            if flights.is_empty() {
                match next_at {
                    // Nothing in flight, the next attempt not due yet.
                    Some(t) => self.pause_until(set.deadline.map_or(t, |d| d.min(t))),
                    None => return Err(course.last_failure()),
                }
                continue;
            }
            let until = match (next_at, set.deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let landed =
                transport::block_on(poll_fn(|cx| Flight::poll_landed(&mut flights, cx)), until);
            let (i, result) = match landed {
                None => continue,
                Some(Landed::Ended(i, result)) => (i, result),
                Some(Landed::Committed) => {
                    course.hedges_committed();
                    next_at = None;
                    let others = Flight::commit(&mut flights);
                    self.cancel_flights(
                        others,
                        Code::Cancelled,
                        "another hedged attempt committed the call",
                    );
                    continue;
                }
            };
            let f = flights.swap_remove(i);
            self.call_counts()
                .ended(f.pick.subconn().id(), result.is_ok());
            let latency = f.started.elapsed();
            match course.hedge_ended(f.pick, result, latency, |p, i| self.finish(p, i)) {
                Hedged::Done(r) => {
                    self.cancel_flights(
                        flights,
                        Code::Cancelled,
                        "another hedged attempt ended the call",
                    );
                    return r;
                }
                Hedged::Next(Some(d)) => {
                    // In `d`, whatever was scheduled: at once after a
                    // non-fatal failure, or when a pushback says, even
                    // later than the hedging delay would have (A6).
                    next_at = Some(Instant::now() + d);
                }
                Hedged::Next(None) => {
                    next_at = None;
                    if flights.is_empty() {
                        return Err(course.last_failure());
                    }
                }
            }
        }
    }

    /// Ends the attempts still in flight: each stream is reset (dropping it
    /// sends RST_STREAM CANCEL) and the policy hears it failed with `code`.
    fn cancel_flights(&mut self, flights: Vec<Flight>, code: Code, why: &str) {
        for f in flights {
            self.call_counts().ended(f.pick.subconn().id(), false);
            f.cancel(code, why, |p, i| self.finish(p, i));
        }
    }
}
