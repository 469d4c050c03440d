#!/usr/bin/env bash
# Model-checks switchyard's protocols between the loop and RPC threads with
# loom: publish / wait-wake / release, the channel state word, coalesced work
# requests, WRR weights, least_request's in-flight counter slots.
#
# --cfg loom swaps std's Arc/Mutex/Condvar/atomics for loom's in src/sync.rs.
# RUSTFLAGS changes rebuild every dependency, so the loom build gets its own
# target dir and leaves the normal one alone. Extra args go to `cargo test`
# (e.g. `scripts/loom.sh -- two_readers`). Override the bound with
# LOOM_MAX_PREEMPTIONS=3 for a deeper (slower) local run.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
exec cargo test -p loom-tests --release --tests "$@"
