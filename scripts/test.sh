#!/usr/bin/env bash
# Every test switchyard has, as CI runs them. Works on a fresh Debian machine
# with Rust, gcc and python3: whatever else is needed is installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "interop peers: grpcio in a virtualenv"
bash interop/setup.sh

step "workspace tests"
cargo test --workspace --all-features

step "C ABI: C and C++ examples (static, shared, ASan+UBSan, valgrind), Python ctypes, pkg-config install"
c-examples/run.sh

step "loom models (LOOM_MAX_PREEMPTIONS=2)"
scripts/loom.sh
