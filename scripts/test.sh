#!/usr/bin/env bash
# Every test switchyard has, as CI runs them. Works on a fresh Debian machine
# with Rust, gcc and python3: whatever else is needed is installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

# Everything below also goes to a log, summed up at the end.
mkdir -p target
LOG=target/test-all.log
exec > >(tee "$LOG") 2>&1

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "interop peers: grpcio in a virtualenv"
bash interop/setup.sh

step "workspace tests"
cargo test --workspace --all-features

step "the README's main job: the demo, 5 short runs, each must exit 0"
scripts/demo-test.sh 5 3

step "C ABI: C and C++ examples (static, shared, ASan+UBSan, valgrind), Python ctypes, pkg-config install"
c-examples/run.sh

step "loom models (LOOM_MAX_PREEMPTIONS=2)"
scripts/loom.sh

# One closing line for the whole run: every `test result:` line summed, plus
# the C programs (each prints "... all passed" only when its checks held).
summary=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' "$LOG")
printf '\nswitchyard: %s\n' "$summary"

