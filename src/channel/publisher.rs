//! Publishes a channel's pickers and aggregate state (loop side): the only
//! writer of the table readers pick from.

use super::shared::{ChannelShared, Table};
use super::StateCallback;
use crate::balancer::picker::{Picker, QueuePicker};
use crate::connectivity::ConnectivityState;
use crate::trace;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Publishes pickers and states for one channel (loop side).
pub(crate) struct StatePublisher {
    pub(crate) shared: Arc<ChannelShared>,
    pub(crate) seq: u64,
    pub(crate) state: ConnectivityState,
    pub(crate) on_state: Option<StateCallback>,
    pub(crate) closed: bool,
    /// Why the channel may be changing state now (the subchannel error or
    /// resolver error being handled), for the log line.
    pub(crate) cause: Option<String>,
}

impl StatePublisher {
    /// Swaps in a new picker (waking every queued pick) and records the state;
    /// observers hear only of real changes.
    pub(crate) fn publish(&mut self, state: ConnectivityState, picker: Box<dyn Picker>) {
        // Also once the user closed the channel and the loop has yet to get
        // to it (a close from a callback on this loop): after SHUTDOWN
        // nothing else is published (gRPC-Go's state manager drops every
        // update once the channel is shut down).
        if self.closed || self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        self.seq += 1;
        let changed = state != self.state;
        if changed {
            let cause = match (&self.cause, state) {
                (Some(c), ConnectivityState::TransientFailure) => format!(" ({c})"),
                _ => String::new(),
            };
            log::info!(
                target: trace::CHANNEL,
                "channel {} {:?}: {} -> {}{}",
                self.shared.id,
                self.shared.target,
                self.state,
                state,
                cause
            );
            self.state = state;
        }
        // The state waiters' record first, then the picker with its state
        // in one table (`Channel::state` reads it there: a state and its
        // picker are seen together), then the waiters are woken. In that
        // order the record is never behind the table: a caller that read
        // the state and waits for a change from it is never answered with
        // an older state (set after the table, the record was for a moment
        // behind it).
        if changed {
            self.shared.set_state(state);
        }
        self.shared
            .slot
            .publish(Table::new(picker, self.seq, false, state));
        if changed {
            self.shared.slot.signal().notify_all();
            if let Some(cb) = &self.on_state {
                cb(state);
            }
        }
    }

    pub(crate) fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        log::info!(
            target: trace::CHANNEL,
            "channel {} {:?}: {} -> SHUTDOWN (closed)",
            self.shared.id,
            self.shared.target,
            self.state
        );
        self.state = ConnectivityState::Shutdown;
        Self::closed_table(&self.shared);
        if let Some(cb) = &self.on_state {
            cb(ConnectivityState::Shutdown);
        }
    }

    pub(crate) fn closed_table(shared: &ChannelShared) {
        if shared.state() != ConnectivityState::Shutdown {
            shared.set_state(ConnectivityState::Shutdown);
        }
        shared.slot.publish(Table::new(
            Box::new(QueuePicker),
            u64::MAX,
            true,
            ConnectivityState::Shutdown,
        ));
    }
}
