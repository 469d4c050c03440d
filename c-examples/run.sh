#!/bin/sh
# Runs every test of the C ABI that needs a C toolchain:
#   - builds the debug libraries (cargo build -p switchyard-lb-ffi),
#   - makes sure the grpcio virtualenv exists (interop/setup.sh; the servers
#     c-examples/unary_call calls),
#   - c-examples/Makefile `check`: header hygiene, each C/C++ program linked
#     static and shared, under ASan+UBSan, and under valgrind (leaks = errors),
#   - the Python (ctypes) example against the shared library,
#   - install.sh into a temporary prefix, then an example compiled with
#     `pkg-config --cflags --libs switchyard` (shared and static) and with
#     CMake through `find_package(switchyard)` (c-examples/cmake), and run.
#
# Needs gcc, g++, make, python3 (present on a fresh Debian with
# build-essential). Installs, with apt-get, whichever of valgrind, pkg-config
# and cmake is missing (needs root or sudo; SY_NO_INSTALL=1 to skip and fail
# instead).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

need=""
command -v valgrind >/dev/null 2>&1 || need="$need valgrind"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
command -v cmake >/dev/null 2>&1 || need="$need cmake"
if [ -n "$need" ]; then
  if [ "${SY_NO_INSTALL:-0}" = 1 ]; then
    echo "missing:$need (SY_NO_INSTALL=1)" >&2; exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing:$need"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=300 $need
fi

echo "== README's C quick start is c-examples/quickstart.c"
# The block after the marker line, without its fences.
awk '/^<!-- c-examples\/quickstart.c -->$/ {on = 1; next}
     on == 1 && /^```c$/ {on = 2; next}
     on == 2 && /^```$/ {exit}
     on == 2 {print}' README.md | diff -u c-examples/quickstart.c - ||
  { echo "README.md's C quick start differs from c-examples/quickstart.c" >&2; exit 1; }

cargo build -p switchyard-lb-ffi
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
VERSION=$(sed -n 's/^#define SY_VERSION_STRING "\(.*\)"/\1/p' include/switchyard.h)
[ "$(pkg-config --modversion switchyard)" = "$VERSION" ]
# Only what every application needs: no rpath forced on it.
libs=$(pkg-config --libs switchyard | sed "s/ *$//")
[ "$libs" = "-L$PREFIX/lib -lswitchyard" ] || { echo "unexpected Libs: $libs" >&2; exit 1; }
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -pedantic -Ic-examples -o "$PREFIX/round_robin" \
  c-examples/round_robin.c $(pkg-config --cflags --libs switchyard) -Wl,-rpath,"$PREFIX/lib" -lpthread
"$PREFIX/round_robin" >/dev/null
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -pedantic -Ic-examples -o "$PREFIX/round_robin_static" \
  c-examples/round_robin.c $(pkg-config --cflags switchyard) "$PREFIX/lib/libswitchyard.a" \
  $(pkg-config --static --libs-only-l switchyard | sed 's/-lswitchyard//')
"$PREFIX/round_robin_static" >/dev/null

echo "== install + CMake find_package"
# Configure quietly (it prints its own errors); build and run each program.
cmake_configure() {
  b=$1; shift
  cmake -S c-examples/cmake -B "$b" -DCMAKE_PREFIX_PATH="$PREFIX" "$@" >"$b.log" 2>&1
}
B=$PREFIX/cmake-build
MINOR=${VERSION#*.}; MINOR=${MINOR%%.*}
cmake_configure "$B" -DSY_FIND_VERSION="${VERSION%%.*}.$MINOR" || { cat "$B.log" >&2; exit 1; }
grep -q "switchyard $VERSION from $PREFIX/lib/cmake/switchyard" "$B.log" || { cat "$B.log" >&2; exit 1; }
cmake --build "$B" -j2 >/dev/null
# Each target links what it says: the shared one needs the SONAME, the static one does not.
soname=$(readelf -d "$PREFIX/lib/libswitchyard.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
readelf -d "$B/round_robin_shared" | grep -q "NEEDED.*\[$soname\]"
readelf -d "$B/round_robin" | grep -q "NEEDED.*\[$soname\]"
if readelf -d "$B/round_robin_static" | grep -q "NEEDED.*libswitchyard"; then
  echo "round_robin_static depends on libswitchyard.so" >&2; exit 1
fi
for p in round_robin_shared round_robin_static round_robin; do "$B/$p" >/dev/null; done
# The version file refuses an ABI this install does not have (the next minor before 1.0).
if cmake_configure "$PREFIX/cmake-refused" -DSY_FIND_VERSION="${VERSION%%.*}.$((MINOR + 1))"; then
  echo "find_package(switchyard ${VERSION%%.*}.$((MINOR + 1))) accepted $VERSION" >&2; exit 1
fi
grep -q "compatible with requested version" "$PREFIX/cmake-refused.log"
# The quick start built as the README says (run by quickstart_test above).
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -pedantic -o "$PREFIX/quickstart" c-examples/quickstart.c \
  $(pkg-config --cflags --libs switchyard) -Wl,-rpath,"$PREFIX/lib"
"$PREFIX/quickstart" 2>/dev/null && { echo "quickstart without a target succeeded" >&2; exit 1; }
echo "c-examples/run.sh: all passed"
