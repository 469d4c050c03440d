#!/usr/bin/env bash
# Builds the Python package into a virtualenv the way a user installs it
# (`pip install ./python`: setup.py runs cargo and ships libswitchyard.so) and
# runs its pytest suite against real grpcio backends (interop/server.py, under
# the interop virtualenv from interop/setup.sh).
#   python/test.sh            # cargo profile "dev": reuses the workspace's debug build
#   SWITCHYARD_CARGO_PROFILE=release python/test.sh
#   python/test.sh --dist     # also `python -m build` (sdist, then a wheel from it)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
export CARGO_TARGET_DIR=$TARGET
export SWITCHYARD_CARGO_PROFILE=${SWITCHYARD_CARGO_PROFILE:-dev}
unset SWITCHYARD_LIBRARY # test the library the package ships
PY=${PYTHON:-python3}
VENV=$TARGET/python-venv
PIP=(-m pip --disable-pip-version-check -q)

bash interop/setup.sh >/dev/null
if [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi
# grpcio too (the interop servers' pinned version): the grpcio-parity tests
# run real grpc.server instances, and grpcio's own client, in the test
# process.
"$VENV/bin/python" "${PIP[@]}" install "pytest>=7,<9" "$(grep '^grpcio==' interop/requirements.txt)"

echo "python: pip install ./python (cargo profile $SWITCHYARD_CARGO_PROFILE)"
"$VENV/bin/python" "${PIP[@]}" install --force-reinstall --no-deps ./python
# From elsewhere, so that `import switchyard` is the installed copy.
(cd "$TARGET" && "$VENV/bin/python" -c \
    'import switchyard as sy; print("python: switchyard", sy.library_version(), "from", sy.__file__)')

if [ "${1:-}" = --dist ]; then
    "$VENV/bin/python" "${PIP[@]}" install "build>=1"
    rm -rf "$TARGET/python-dist"
    "$VENV/bin/python" -m build --outdir "$TARGET/python-dist" python
    ls -l "$TARGET/python-dist"
fi

SY_INTEROP_PYTHON=$TARGET/interop-venv/bin/python \
    "$VENV/bin/pytest" -q -p no:cacheprovider python/tests
