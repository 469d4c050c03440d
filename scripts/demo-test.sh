#!/usr/bin/env bash
# The README's main job, checked: builds the demo (examples/demo.rs) once and
# runs it RUNS times with a short duration, checking each run's exit status
# (0 = no RPC failed, the restarted backend rejoined; calls lost in flight to
# the hard kill are reported, not failures). A failed run's output is shown.
#
#   scripts/demo-test.sh [RUNS (5)] [SECONDS per run (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
secs=${2:-3}

cargo build --example demo
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
demo="$target_dir/debug/examples/demo"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0
failed=0
for i in $(seq 1 "$runs"); do
    # Bounded: a run takes SECONDS plus at most a few gates of 10 s.
    if timeout 120 "$demo" --duration "$secs" >"$log" 2>&1; then
        passed=$((passed + 1))
        # The summary rows' last column is the run's total.
        failed_rpcs=$(awk '/^  failed RPCs/ { print $NF }' "$log")
        lost=$(awk '/^  lost to the hard kill/ { print $NF }' "$log")
        printf 'demo run %d: passed (%s RPCs failed, %s lost in flight to the hard kill)\n' \
            "$i" "$failed_rpcs" "$lost"
    else
        rc=$?
        failed=$((failed + 1))
        printf 'demo run %d: FAILED (exit %d); its output:\n' "$i" "$rc"
        sed 's/^/    /' "$log"
    fi
done
printf 'demo: %d runs, %d passed, %d failed\n' "$runs" "$passed" "$failed"
[ "$failed" -eq 0 ]
