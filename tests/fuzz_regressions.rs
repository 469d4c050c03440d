//! Replays the fuzz targets' seed corpora (`fuzz/corpus/<target>/`) and every
//! crash input the fuzzer ever found (`fuzz/regressions/<target>/`) through
//! the same entry functions the targets call (`switchyard::fuzzing`), on
//! stable, in the normal test run. `scripts/fuzz.sh` runs the fuzzer itself.
//! (The C ABI target, `ffi_ops`, is replayed by the ffi crate's unit tests,
//! `ffi/src/fuzz_replay.rs`, which compile its driver against the `sy_*`
//! functions.)

use std::path::{Path, PathBuf};
use switchyard::fuzzing;

/// Every file under `fuzz/{corpus,regressions}/<target>/`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("readable directory").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `entry` on each input, naming the file that fails.
fn replay(target: &str, entry: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no seed corpus for {target} under fuzz/corpus/{target}/"
    );
    for path in files {
        let data = std::fs::read(&path).expect("readable input");
        let result = std::panic::catch_unwind(|| entry(&data));
        assert!(result.is_ok(), "{target}: {} fails", path.display());
    }
}

/// Inputs made up here (a fixed pseudo-random stream), so the entry
/// functions get some variety even where no fuzzer runs.
fn generated(count: usize, max_len: usize, entry: fn(&[u8])) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..count {
        let len = (next() as usize) % (max_len + 1);
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let result = std::panic::catch_unwind(|| entry(&data));
        assert!(result.is_ok(), "generated input {data:?} fails");
    }
}

#[test]
fn service_config() {
    replay("service_config", fuzzing::service_config);
}

#[test]
fn target() {
    replay("target", fuzzing::target);
}

#[test]
fn grpc_message() {
    replay("grpc_message", fuzzing::grpc_message);
    generated(2000, 64, fuzzing::grpc_message);
}

#[test]
fn grpc_response() {
    replay("grpc_response", fuzzing::grpc_response);
    generated(2000, 96, fuzzing::grpc_response);
}

#[test]
fn health() {
    replay("health", fuzzing::health);
    generated(2000, 64, fuzzing::health);
}

#[test]
fn channel_ops() {
    replay("channel_ops", fuzzing::channel_ops);
    generated(200, 128, fuzzing::channel_ops);
}
