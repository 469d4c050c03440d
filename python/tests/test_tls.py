"""TLS credentials against a grpcio backend serving a certificate from a
test CA (made with the openssl command line)."""
import shutil
import subprocess

import pytest

import switchyard as sy
from conftest import Backends

NAME = "backend.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not found")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=switchyard test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={NAME}")
    (d / "ext").write_text(f"subjectAltName=DNS:{NAME}\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext")
    return d


@pytest.fixture(scope="module")
def tls_backend(pki):
    b = Backends(1, "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"))
    yield b
    b.close()


def test_tls_with_the_right_roots_and_name(tls_backend, pki):
    creds = sy.Tls(roots=(pki / "ca.pem").read_bytes(), server_name=NAME)
    with sy.Channel(tls_backend.target, credentials=creds) as ch:
        resp = ch.unary("/echo.Echo/Unary", b"secret", timeout=10, wait_for_ready=True)
        assert resp.message == b"secret|port=%d" % tls_backend.ports[0]


def test_tls_with_the_default_roots_refuses_an_unknown_ca(tls_backend):
    with sy.Channel(tls_backend.target, credentials=sy.Tls(server_name=NAME)) as ch:
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Unary", b"x", timeout=3)
        assert err.value.code == sy.StatusCode.UNAVAILABLE
        assert "UnknownIssuer" in err.value.message  # says why
