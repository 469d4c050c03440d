//! The fuzz targets' shared code. `ffi_ops` lives in its own file because
//! the ffi crate's unit tests compile it too (`ffi/src/fuzz_replay.rs`).

/// The C ABI, as `ffi_ops.rs` expects to find it.
mod sy {
    pub use switchyard_ffi::*;
}

mod ffi_ops;

pub use ffi_ops::ffi_ops;
