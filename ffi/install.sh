#!/bin/sh
# Installs libswitchyard (shared + static), its header and a pkg-config file:
#
#   ffi/install.sh PREFIX            # builds and installs the release libraries
#   PROFILE=debug ffi/install.sh DIR # installs the debug build (tests use this)
#
# Layout: PREFIX/lib/libswitchyard.so.X.Y.Z, the SONAME link (.so.0.MINOR
# until 1.0, .so.MAJOR after) and libswitchyard.so; PREFIX/lib/libswitchyard.a;
# PREFIX/include/switchyard.h; PREFIX/lib/pkgconfig/switchyard.pc;
# PREFIX/lib/cmake/switchyard/switchyardConfig{,Version}.cmake. Afterwards
#   cc app.c $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs switchyard)
# works (add --static for the static library; outside the loader's default
# paths the application adds its own -Wl,-rpath,PREFIX/lib or sets
# LD_LIBRARY_PATH: an rpath is the application's choice, not the .pc's), and so does
#   find_package(switchyard REQUIRED)   # with CMAKE_PREFIX_PATH=PREFIX
#   target_link_libraries(app PRIVATE switchyard::switchyard)
set -eu
PREFIX=${1:?usage: ffi/install.sh PREFIX}
PROFILE=${PROFILE:-release}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$PREFIX" in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac

case "$PROFILE" in
  debug | dev) cargo build -p switchyard-lb-ffi --manifest-path "$ROOT/Cargo.toml"; DIR=debug ;;
  *) cargo build --profile "$PROFILE" -p switchyard-lb-ffi --manifest-path "$ROOT/Cargo.toml"; DIR=$PROFILE ;;
esac
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/$DIR

VERSION=$(sed -n 's/^#define SY_VERSION_STRING "\(.*\)"/\1/p' "$ROOT/include/switchyard.h")
SONAME=$(readelf -d "$TARGET/libswitchyard.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ -n "$VERSION" ] && [ -n "$SONAME" ] || { echo "cannot read version/SONAME" >&2; exit 1; }

mkdir -p "$PREFIX/lib/pkgconfig" "$PREFIX/lib/cmake/switchyard" "$PREFIX/include"
install -m 0755 "$TARGET/libswitchyard.so" "$PREFIX/lib/libswitchyard.so.$VERSION"
ln -sf "libswitchyard.so.$VERSION" "$PREFIX/lib/$SONAME"
ln -sf "$SONAME" "$PREFIX/lib/libswitchyard.so"
install -m 0644 "$TARGET/libswitchyard.a" "$PREFIX/lib/libswitchyard.a"
install -m 0644 "$ROOT/include/switchyard.h" "$PREFIX/include/switchyard.h"
cat > "$PREFIX/lib/pkgconfig/switchyard.pc" <<PC
prefix=$PREFIX
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: switchyard
Description: Client-side gRPC load-balancing core (C ABI)
Version: $VERSION
Cflags: -I\${includedir}
Libs: -L\${libdir} -lswitchyard
Libs.private: -lpthread -ldl -lm -lrt
PC
MAJOR=${VERSION%%.*}
MINOR=${VERSION#*.}; MINOR=${MINOR%%.*}
PTR=$(($(getconf LONG_BIT) / 8))
for f in switchyardConfig switchyardConfigVersion; do
  sed -e "s/@VERSION@/$VERSION/g" -e "s/@VERSION_MAJOR@/$MAJOR/g" -e "s/@VERSION_MINOR@/$MINOR/g" \
    -e "s/@SONAME@/$SONAME/g" -e "s/@SIZEOF_VOID_P@/$PTR/g" \
    "$ROOT/ffi/cmake/$f.cmake.in" > "$PREFIX/lib/cmake/switchyard/$f.cmake"
done
# As root, refresh the loader's cache: a prefix it covers (/usr/local) finds
# the new SONAME only through it.
if [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null 2>&1; then
  ldconfig || true
fi
echo "installed switchyard $VERSION ($SONAME) into $PREFIX"
