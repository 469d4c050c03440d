#!/bin/sh
# Builds the release shared library and the C benchmark (-O2, linked against
# the .so like an application would be) and runs it for each policy: pick +
# done through the header (sy_reader_pick/sy_reader_done and
# sy_pick/sy_pick_done), one and two threads.
#
#   benches/c/run.sh [-p POLICY [-c SERVICE_CONFIG]] [-n SIZES] [picks per thread] [trials]
#
# Without -p, every policy of issue 11 in turn, each with its default config
# (outlier detection over round_robin); one not registered yet is reported
# as skipped. Without -n, 3, 100, 10,000 and 100,000 addresses, each with a
# "setup" line (bring-up and warming times; ring_hash connects endpoints as
# picks land on them, so its ring is warmed before the timed picks). See
# pick_bench.c for the options.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
cargo build --release -p switchyard-lb-ffi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/bench-c
mkdir -p "$OUT/lib"
SONAME=$(readelf -d "$TARGET/release/libswitchyard.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
cp "$TARGET/release/libswitchyard.so" "$OUT/lib/$SONAME"
ln -sf "$SONAME" "$OUT/lib/libswitchyard.so"
cc -std=c11 -O2 -Wall -Wextra -Werror -pedantic -Iinclude -o "$OUT/pick_bench" \
  benches/c/pick_bench.c -L"$OUT/lib" -Wl,-rpath,"$OUT/lib" -lswitchyard -lpthread

case " $* " in
*" -p "*) exec "$OUT/pick_bench" "$@" ;;
esac
for policy in pick_first round_robin weighted_round_robin least_request_experimental random \
  ring_hash_experimental outlier_detection_experimental; do
  case $policy in
  outlier_detection_experimental)
    "$OUT/pick_bench" -p "$policy" -c \
      '{"loadBalancingConfig":[{"outlier_detection_experimental":{"childPolicy":[{"round_robin":{}}]}}]}' "$@"
    ;;
  *) "$OUT/pick_bench" -p "$policy" "$@" ;;
  esac
done
