//! loom models of switchyard's concurrency protocols (`switchyard::publish`).
//!
//! The models live in `tests/*.rs` and are compiled only under `--cfg loom`,
//! where switchyard's `sync` shim swaps std's `Arc`, `Mutex`, `Condvar` and
//! atomics for loom's. Run them with `scripts/loom.sh`.

/// Runs the ignored model `name` of the calling test binary in a child
/// process and asserts that loom found it deadlocking (`what` says what the
/// model would have let through). A child, because loom reports a deadlock
/// by panicking, and the unwinding through its generator stacks then aborts
/// the process. How a model shows it has teeth: the buggy order it rules
/// out, kept in the test, is caught.
pub fn assert_deadlocks(name: &str, what: &str) {
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the test binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} went unnoticed");
    assert!(stderr.contains("deadlock"), "unexpected failure: {stderr}");
}
