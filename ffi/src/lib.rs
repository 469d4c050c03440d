//! The C ABI of switchyard: a thin layer over the core crate (no load-balancing
//! logic lives here). `include/switchyard.h` is generated from these sources by
//! cbindgen; see `ffi/cbindgen.toml` and `ffi/tests/header.rs`.
//!
//! Conventions (rustls-ffi's): opaque handles with `_new`/`_free`, `sy_status`
//! results with frozen numbers, out-parameters written only on success, a
//! per-thread `sy_last_error`, enums taken from C as integers and checked, and a
//! panic boundary in every entry point except these, which are panic-free by
//! construction: the pick path's hit paths (`sy_pick`, `sy_pick_done`,
//! `sy_reader_pick`, `sy_reader_done`, `sy_reader_next`: their ways that run
//! a policy's code are guarded; a pick's release that frees its picker runs
//! only drops and the C callbacks `free` and `release`), `sy_buffer_data`,
//! `sy_buffer_len`, `sy_version`, `sy_status_str`, `sy_state_str`,
//! `sy_last_status` and `sy_last_grpc_code`. (Should one panic after all,
//! Rust >= 1.81 aborts at the `extern "C"` boundary instead of unwinding into
//! C.)

// C names are the contract: `sy_channel`, `SY_OK`, ...
#![allow(non_camel_case_types)]
// Entry points take raw pointers from C and are `extern "C" fn`s, not `unsafe
// fn`s: C cannot see Rust's `unsafe`; each one's pointer contract is in its docs
// (and the header), and every dereference has its own SAFETY comment.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

#[macro_use]
mod macros;
mod callback;
mod handle;
mod strings;

// The header's order is not this one: ffi/tests/header.rs sorts cbindgen's
// output into groups by module (its GROUPS table), each with its overview.
// One declaration per group keeps rustfmt from sorting them.
mod call_pool;
mod runtime;

mod channel;
mod snapshot;

mod reader;

mod call;
mod last_call;

mod method_config;

mod balancer_waker;
mod policy;

mod resolver;

mod resolver_api;

mod options;

mod log;

mod error;
mod status;

pub use balancer_waker::*;
pub use call::*;
pub use channel::*;
pub use error::*;
pub use last_call::*;
pub use log::*;
pub use method_config::*;
pub use options::*;
pub use policy::*;
pub use reader::*;
pub use resolver::*;
pub use resolver_api::*;
pub use runtime::*;
pub use snapshot::*;
pub use status::*;

use std::ffi::c_char;

/// The library's version, e.g. "0.1.0": a static NUL-terminated string.
///
/// Compare with the header's `SY_VERSION_*` macros to detect a header/library
/// mismatch. Any thread.
#[no_mangle]
pub extern "C" fn sy_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests;
// The ffi_ops fuzz target's corpus and crash regressions, on stable.
#[cfg(test)]
mod fuzz_replay;
