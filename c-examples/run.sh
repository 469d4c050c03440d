#!/bin/sh
# Runs every test of the C ABI that needs a C toolchain:
#   - builds the debug libraries (cargo build -p switchyard-ffi),
#   - makes sure the grpcio virtualenv exists (interop/setup.sh; the servers
#     c-examples/unary_call calls),
#   - c-examples/Makefile `check`: header hygiene, each C/C++ program linked
#     static and shared, under ASan+UBSan, and under valgrind (leaks = errors),
#   - the Python (ctypes) example against the shared library,
#   - install.sh into a temporary prefix, then an example compiled with
#     `pkg-config --cflags --libs switchyard` and run.
#
# Needs gcc, g++, make, python3 (present on a fresh Debian with
# build-essential). Installs, with apt-get, whichever of valgrind and
# pkg-config is missing (needs root or sudo; SY_NO_INSTALL=1 to skip and fail
# instead).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

need=""
command -v valgrind >/dev/null 2>&1 || need="$need valgrind"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
if [ -n "$need" ]; then
  if [ "${SY_NO_INSTALL:-0}" = 1 ]; then
    echo "missing:$need (SY_NO_INSTALL=1)" >&2; exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing:$need"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need
fi

cargo build -p switchyard-ffi
bash interop/setup.sh
make -C c-examples -j2 check

echo "== python (ctypes)"
python3 c-examples/distribution.py "${CARGO_TARGET_DIR:-$ROOT/target}/debug/libswitchyard.so"

echo "== install + pkg-config"
PREFIX=$(mktemp -d)
trap 'rm -rf "$PREFIX"' EXIT
PROFILE=debug ffi/install.sh "$PREFIX" >/dev/null
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
pkg-config --exists switchyard
[ "$(pkg-config --modversion switchyard)" = "$(sed -n 's/^#define SY_VERSION_STRING "\(.*\)"/\1/p' include/switchyard.h)" ]
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -pedantic -Ic-examples -o "$PREFIX/round_robin" \
  c-examples/round_robin.c $(pkg-config --cflags --libs switchyard) -lpthread
"$PREFIX/round_robin" >/dev/null
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -pedantic -Ic-examples -o "$PREFIX/round_robin_static" \
  c-examples/round_robin.c $(pkg-config --cflags switchyard) "$PREFIX/lib/libswitchyard.a" \
  $(pkg-config --static --libs-only-l switchyard | sed 's/-lswitchyard//')
"$PREFIX/round_robin_static" >/dev/null
echo "c-examples/run.sh: all passed"
