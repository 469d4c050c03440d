"""Fixtures: real grpcio backends (interop/server.py) on 127.0.0.1.

The servers run under the interop virtualenv's Python (it has grpcio):
SY_INTEROP_PYTHON, else ${CARGO_TARGET_DIR:-target}/interop-venv/bin/python
(made by interop/setup.sh)."""
import os
import subprocess
import sys
import threading

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def interop_python():
    py = os.environ.get("SY_INTEROP_PYTHON")
    if not py:
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
        py = os.path.join(target, "interop-venv", "bin", "python")
    if not os.path.exists(py):
        pytest.fail(f"no grpcio Python at {py}: run `bash interop/setup.sh` first")
    return py


class Backends:
    def __init__(self, count, *args):
        self.proc = subprocess.Popen(
            [interop_python(), os.path.join(REPO, "interop", "server.py"), "--count", str(count),
             *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )
        line = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(60)  # bounded: a server that never starts fails the test
        if not line or not line[0].startswith("READY"):
            self.close()
            pytest.fail(f"interop server did not start: {line!r}")
        self.ports = [int(p) for p in line[0].split()[1:]]
        assert len(self.ports) == count

    @property
    def target(self):
        return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()  # end of stdin: the server stops
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def backends():
    b = Backends(3)
    yield b
    b.close()
