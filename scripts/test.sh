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

step "API docs: every public item documented, no broken links (rustdoc warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc -p switchyard-lb --no-deps --all-features

step "interop peers: grpcio in a virtualenv"
bash interop/setup.sh

step "DNS server for the dns resolver's tests: dnsmasq"
bash scripts/setup-dns.sh

step "workspace tests"
cargo test --workspace --all-features

step "the README's main job: the demo, 5 short runs, each must exit 0"
scripts/demo-test.sh 5 3

step "C ABI: C and C++ examples (static, shared, ASan+UBSan, valgrind), Python ctypes, pkg-config install"
c-examples/run.sh

step "packaging: cargo package both crates (builds them as published, with upstream h2; publishes nothing)"
# cargo verifies the ffi crate against the core crate from a temporary local
# registry and, as for any registry crate, takes an earlier build of the same
# version as current: on a second run the ffi crate would build against the
# previous run's core. So: a target dir of its own, our crates' builds and
# unpacked copies dropped first (dependencies stay cached).
PKG_TARGET=target/package-verify
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/switchyard-lb-[0-9]* \
  "$PKG_TARGET"/debug/.fingerprint/switchyard-lb-* "$PKG_TARGET"/package
CARGO_TARGET_DIR=$PKG_TARGET cargo package -p switchyard-lb -p switchyard-lb-ffi --allow-dirty

step "loom models (LOOM_MAX_PREEMPTIONS=2)"
scripts/loom.sh

# After the C examples: their `cargo build` of the C library is the one the
# package reuses (cargo profile dev).
step "Python package: pip install ./python into a venv, pytest against grpcio backends; python -m build (sdist, then a wheel built from it)"
python/test.sh --dist

# One closing line for the whole run: every cargo `test result:` line and
# pytest's closing line summed (the C programs and the demo runs fail the
# script by their exit status; each prints its own closing line).
summary=$(awk '
  /^test result:/ { p += $4; f += $6 }
  /^(=+ )?[0-9]+ (passed|failed).* in [0-9.]+s/ {
    for (i = 1; i < NF; i++) {
      if ($(i + 1) ~ /^passed/) p += $i
      if ($(i + 1) ~ /^failed/) f += $i
    }
  }
  END { printf "%d passed, %d failed", p, f }' "$LOG")
printf '\nswitchyard: %s\n' "$summary"

