#!/bin/sh
# Builds the release shared library and the C benchmark (-O2, linked against
# the .so like an application would be) and runs it.
#   benches/c/run.sh [iterations per thread, default 20000000]
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
cargo build --release -p switchyard-lb-ffi
OUT=target/bench-c
mkdir -p "$OUT/lib"
SONAME=$(readelf -d target/release/libswitchyard.so | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
cp target/release/libswitchyard.so "$OUT/lib/$SONAME"
ln -sf "$SONAME" "$OUT/lib/libswitchyard.so"
cc -std=c11 -O2 -Wall -Wextra -Werror -pedantic -Iinclude -o "$OUT/pick_bench" \
  benches/c/pick_bench.c -L"$OUT/lib" -Wl,-rpath,"$ROOT/$OUT/lib" -lswitchyard -lpthread
"$OUT/pick_bench" "$@"
