//! End-to-end tests of the engine through channels with the external connector.

mod flows;
mod graceful_switch;
mod health;
mod least_request;
mod lifecycle;
mod orca;
mod pick;
mod pick_first;
mod random;
mod ring_hash;
mod round_robin;
mod snapshot;
mod stress;
mod support;
mod weighted;
