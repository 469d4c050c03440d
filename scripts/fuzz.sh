#!/usr/bin/env bash
# Fuzzes every target in fuzz/ for SECONDS_PER_TARGET (default 60), one at a
# time in one process each (no -jobs/-workers: the machine is shared),
# starting from the committed seeds in fuzz/corpus/<target>/,
# then prints the executions per target and their total.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Needs the nightly toolchain (present on CI) and cargo-fuzz, installed here
# if missing. Inputs the fuzzer adds go to fuzz/work/<target>/ (ignored by
# git), not to the seeds. A crash input is copied to
# fuzz/regressions/<target>/: commit it with the fix, and the normal test
# run (stable) replays it from then on: tests/fuzz_regressions.rs, or for
# ffi_ops ffi/src/fuzz_replay.rs. The script exits 1 if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

# cargo-fuzz builds with --cfg fuzzing, which turns on vendor/h2's own fuzz
# module; that crate denies missing_docs, and as a path dependency its lints
# are not capped the way registry crates' are. Not ours to lint (the main
# workspace excludes it too): cap lints at warnings.
export RUSTFLAGS="${RUSTFLAGS:-} --cap-lints=warn"

# One build for every target (AddressSanitizer, debug assertions on).
cargo +nightly fuzz build --fuzz-dir fuzz

mkdir -p fuzz/work fuzz/artifacts
declare -A execs
total=0
crashed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t" "fuzz/corpus/$t"
    # Only this run's crash inputs: older ones are in fuzz/regressions/.
    rm -f "fuzz/artifacts/$t"/*
    log="fuzz/work/$t.log"
    echo "==> $t: ${secs}s"
    dict=()
    if [ -f "fuzz/dict/$t.dict" ]; then
        dict=(-dict="fuzz/dict/$t.dict")
    fi
    # First corpus dir: where new inputs go; the seeds are only read.
    # -rss_limit_mb: ASan's shadow memory counts too.
    status=0
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 -timeout=30 \
        -artifact_prefix="fuzz/artifacts/$t/" "${dict[@]}" >"$log" 2>&1 || status=$?
    # libFuzzer's own count (-print_final_stats), else the last status line.
    n=$(awk '/stat::number_of_executed_units:/ { n = $2 } END { print n + 0 }' "$log")
    if [ "$n" -eq 0 ]; then
        n=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
        n=${n:-0}
    fi
    execs[$t]=$n
    total=$((total + n))
    if [ "$status" -ne 0 ]; then
        crashed+=("$t")
        mkdir -p "fuzz/regressions/$t"
        for f in "fuzz/artifacts/$t"/*; do
            [ -f "$f" ] || continue
            cp "$f" "fuzz/regressions/$t/"
            echo "    crash input: fuzz/regressions/$t/$(basename "$f")"
        done
        tail -n 40 "$log"
    fi
done

echo
printf '%-16s %14s\n' target execs
for t in "${targets[@]}"; do
    printf '%-16s %14s\n' "$t" "${execs[$t]}"
done
printf '%-16s %14s\n' total "$total"

if [ ${#crashed[@]} -gt 0 ]; then
    echo "crashed: ${crashed[*]} (inputs in fuzz/regressions/; logs in fuzz/work/)" >&2
    exit 1
fi
