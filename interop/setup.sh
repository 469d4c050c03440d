#!/usr/bin/env bash
# Installs the Python side of the interop tests (tests/interop): a virtualenv
# with grpcio + grpcio-health-checking at ${CARGO_TARGET_DIR:-target}/interop-venv.
# Idempotent: when the venv already has the pinned versions it exits at once.
#   bash interop/setup.sh && cargo test --test interop
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
VENV=$TARGET/interop-venv
REQS=$ROOT/interop/requirements.txt
STAMP=$VENV/.installed

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && cmp -s "$REQS" "$STAMP"; then
    echo "interop venv up to date: $VENV"
    exit 0
fi

PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
    else
        echo "interop/setup.sh: python3 not found; install python3 and python3-venv" >&2
        exit 1
    fi
fi

mkdir -p "$TARGET"
rm -rf "$VENV"
if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    # Debian/Ubuntu ship venv (ensurepip) separately.
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        apt-get update -qq
        apt-get install -y -qq "python$ver-venv" >/dev/null 2>&1 ||
            apt-get install -y -qq python3-venv >/dev/null
        "$PY" -m venv "$VENV"
    else
        echo "interop/setup.sh: '$PY -m venv' failed; install python3-venv" >&2
        exit 1
    fi
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
"$VENV/bin/python" -c 'import grpc, grpc_health.v1.health; print("grpcio", grpc.__version__)'
cp "$REQS" "$STAMP"
echo "interop venv ready: $VENV"
