//! Replays the `ffi_ops` fuzz target's seeds (`fuzz/corpus/ffi_ops/`) and
//! every crash input it found (`fuzz/regressions/ffi_ops/`) on stable, in
//! the normal test run, through the fuzz target's own driver: the same file,
//! compiled here against this crate's `sy_*` functions.

/// The C ABI, as `ffi_ops.rs` expects to find it.
mod sy {
    pub use crate::*;
}

#[path = "../../fuzz/src/ffi_ops.rs"]
mod ffi_ops;

#[test]
#[cfg_attr(
    miri,
    ignore = "the driver keeps one runtime (a loop thread) for the whole process, as the fuzz target does; Miri reports that thread at exit"
)]
fn ffi_ops_corpus_and_regressions() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for dir in ["corpus/ffi_ops", "regressions/ffi_ops"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.expect("readable").path()).collect();
        files.sort();
        for path in files {
            let data = std::fs::read(&path).expect("readable input");
            let r = std::panic::catch_unwind(|| ffi_ops::ffi_ops(&data));
            assert!(r.is_ok(), "{} fails", path.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no ffi_ops seeds under fuzz/corpus/ffi_ops/");
}
