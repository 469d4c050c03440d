//! loom models of switchyard's concurrency protocols (`switchyard::publish`).
//!
//! The models live in `tests/*.rs` and are compiled only under `--cfg loom`,
//! where switchyard's `sync` shim swaps std's `Arc`, `Mutex`, `Condvar` and
//! atomics for loom's. Run them with `scripts/loom.sh`.
