#!/usr/bin/env python3
"""Real gRPC backends (grpcio, i.e. gRPC C-core) for switchyard's interop tests.

Starts --count servers on 127.0.0.1 (ephemeral ports; --ports P1,P2,... for
fixed ones), each serving:
  /echo.Echo/Unary        bytes in, request + b"|port=<port>" out (generic
                          handler, identity serializers: no protoc), with
                          "x-backend-port: <port>" as initial and trailing
                          metadata.
  /echo.Echo/Delay        request is a number of milliseconds (ASCII): waits
                          that long (less if the call ends first), then
                          answers like Unary. For deadline tests.
  and, for the scenarios of doc/interop-test-descriptions.md
  (tests/interop/grpcio_scenarios.rs):
  /echo.Echo/Echo         request bytes back as they are; the request's
                          "x-grpc-test-echo-initial" is echoed in initial
                          metadata, its "x-grpc-test-echo-trailing-bin" in
                          trailing metadata (interop custom_metadata), with
                          an "x-backend-port: <port>" trailer.
  /echo.Echo/Large        interop large_unary: a 271828-byte all-zero request
                          gets a 314159-byte all-zero response, anything else
                          INVALID_ARGUMENT.
  /echo.Echo/Size         request ASCII N: an N-byte response of b"z".
  /echo.Echo/Status       request JSON {"code": C, "message": M, "how": "set"
                          or "abort", "body": bool, "initial": bool,
                          "trailing": bool}: set_code/set_details (returning
                          b"body" if body, else b"") or context.abort(C, M);
                          "initial" sends initial metadata "x-init" first,
                          "trailing" sets trailers "x-trail" and "x-trail-bin"
                          (bytes 00 ff ab).
  /echo.Echo/Sleep        request ASCII milliseconds: waits like Delay, then
                          answers "port=<port> remaining=<time_remaining() at
                          the start>".
  /echo.Echo/Meta         JSON {"metadata": [[key, value], ...], "remaining":
                          time_remaining(), "peer": peer()} of the call as
                          the server saw it (-bin values as "b64:<base64>").
  grpc.health.v1.Health   the standard servicer from grpcio-health-checking,
                          SERVING for "" and "echo.Echo" at start.
With --orca U1,U2,... backend i starts out as if told "orca <port> Ui 100 0"
(see below): an ORCA load report of application utilization Ui at 100 qps
on every echo response. With --tls-cert/--tls-key the servers speak TLS; with --no-health they have
no health service (Watch fails UNIMPLEMENTED); with --compression gzip|deflate
they compress every response (grpcio's server-wide compression). Each
--option NAME=INT adds a server channel option (grpc.max_concurrent_streams=1,
grpc.keepalive_time_ms=200, ...). With --black-hole it instead
opens one plain TCP listener that accepts connections and never says a word.

Prints "READY <port> ..." on stdout once every listener is bound. Then reads
one command per line on stdin and answers "OK" (or "OK <n>" where a number is
asked for, or "ERR <why>") on stdout:
  serving <port> on|off   health of "" and "echo.Echo" -> SERVING / NOT_SERVING
  failing <port> on|off   Unary and Delay fail every call UNAVAILABLE, with
                          "port=<port>" in the message (outlier detection)
  stop <port>             close that server's listener and connections
  stop <port> <grace_s>   server.stop(grace_s), not waited for: GOAWAY, calls
                          in flight get grace_s seconds, then are cancelled
  start <port>            serve again on the same port
  orca <port> <app_utilization> <rps> <eps>
                          from now on every echo response carries an ORCA
                          per-call load report (trailer endpoint-load-metrics-bin,
                          a serialized xds.data.orca.v3.OrcaLoadReport) with
                          these application_utilization, rps_fractional and eps
  peak <port>             "OK <n>": the most Delay and Sleep calls that server
                          has had in progress at once
  ended <port>            "OK <n>": Delay and Sleep calls that server saw end
                          before their wait was over (deadline, cancel)
End of stdin (the test went away) stops everything and exits.
"""
import argparse
import base64
import json
import socket
import struct
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "echo.Echo"


def identity(b):
    return b


def orca_load_report(app_utilization, rps, eps):
    """A serialized xds.data.orca.v3.OrcaLoadReport with three double fields:
    rps_fractional (6), eps (7), application_utilization (9). The wire format
    of a double field is its tag byte (field << 3 | 1) and 8 little-endian
    bytes; encoded here so the servers need no generated code."""
    out = b""
    for field, value in ((6, rps), (7, eps), (9, app_utilization)):
        if value:
            out += bytes([field << 3 | 1]) + struct.pack("<d", value)
    return out


class Backend:
    def __init__(self, port, credentials, with_health, compression=None, options=()):
        self.port = port
        self.options = list(options)
        self.compression = compression
        self.credentials = credentials
        self.with_health = with_health
        self.server = None
        self.health = None
        self.serving = True
        self.failing = False
        self.orca = None  # serialized OrcaLoadReport for each response
        self.lock = threading.Lock()
        self.waiting = 0  # Delay and Sleep calls in progress
        self.peak = 0
        self.ended_early = 0

    def start(self):
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            # Binding a port someone else holds must fail, not share it.
            options=[("grpc.so_reuseport", 0)] + self.options,
            compression=self.compression,
        )
        methods = {
            "Unary": self.unary,
            "Delay": self.delay,
            "Echo": self.echo,
            "Large": self.large,
            "Size": self.size,
            "Status": self.status,
            "Sleep": self.sleep,
            "Meta": self.meta,
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                f, request_deserializer=identity, response_serializer=identity
            )
            for name, f in methods.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        if self.with_health:
            self.health = health.HealthServicer(experimental_non_blocking=True)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"127.0.0.1:{self.port}"
        if self.credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, self.credentials)
        if bound == 0 or (self.port != 0 and bound != self.port):
            raise RuntimeError(f"cannot bind {address}")
        self.port = bound
        server.start()
        self.server = server
        self.publish()

    def stop(self, grace=None):
        if self.server is not None:
            done = self.server.stop(grace)
            if grace is None:
                done.wait()
            self.server = None

    def unary(self, request, context):
        if self.failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"failing on purpose|port={self.port}")
        if request == b"rich-error":
            # gRPC's richer error model: a google.rpc.Status (code 9,
            # message "why") in grpc-status-details-bin, beside metadata.
            details = b"\x08\x09\x12\x03why"
            context.set_trailing_metadata(
                (("grpc-status-details-bin", details), ("x-why", "because"))
            )
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "rich error")
        md = (("x-backend-port", str(self.port)),)
        if self.compression is not None:
            context.set_compression(self.compression)
        context.send_initial_metadata(md)
        if self.orca is not None:
            md += (("endpoint-load-metrics-bin", self.orca),)
        context.set_trailing_metadata(md)
        return request + b"|port=" + str(self.port).encode()

    def wait(self, method, request, context):
        """Waits the request's milliseconds or until the call ends first;
        `method` names the call in the error for a request that is no number."""
        try:
            ms = int(request.decode() or "0")
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method} takes milliseconds")
        with self.lock:
            self.waiting += 1
            self.peak = max(self.peak, self.waiting)
        try:
            ended = threading.Event()
            context.add_callback(ended.set)  # deadline, cancel, connection lost
            if ended.wait(min(ms, 60_000) / 1000):
                with self.lock:
                    self.ended_early += 1
        finally:
            with self.lock:
                self.waiting -= 1

    def delay(self, request, context):
        self.wait("Delay", request, context)
        return self.unary(request, context)

    def sleep(self, request, context):
        remaining = context.time_remaining()
        self.wait("Sleep", request, context)
        return f"port={self.port} remaining={remaining}".encode()

    def echo(self, request, context):
        md = dict(context.invocation_metadata())
        initial = md.get("x-grpc-test-echo-initial")
        if initial is not None:
            context.send_initial_metadata((("x-grpc-test-echo-initial", initial),))
        trailing = [("x-backend-port", str(self.port))]
        if "x-grpc-test-echo-trailing-bin" in md:
            trailing.append(("x-grpc-test-echo-trailing-bin", md["x-grpc-test-echo-trailing-bin"]))
        context.set_trailing_metadata(tuple(trailing))
        return request

    def large(self, request, context):
        if len(request) != 271828 or request.count(0) != len(request):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request of {len(request)} bytes")
        return bytes(314159)

    def size(self, request, context):
        return b"z" * int(request.decode())

    def status(self, request, context):
        req = json.loads(request.decode("utf-8"))
        code = next(c for c in grpc.StatusCode if c.value[0] == req["code"])
        if req.get("initial"):
            context.send_initial_metadata((("x-init", "initial value"),))
        if req.get("trailing"):
            context.set_trailing_metadata(
                (("x-trail", "trailing value"), ("x-trail-bin", b"\x00\xff\xab"))
            )
        if req.get("how") == "abort":
            context.abort(code, req["message"])
        context.set_code(code)
        context.set_details(req["message"])
        return b"body" if req.get("body") else b""

    def meta(self, request, context):
        md = []
        for k, v in context.invocation_metadata():
            if isinstance(v, bytes):
                v = "b64:" + base64.b64encode(v).decode()
            md.append([k, v])
        out = {"metadata": md, "remaining": context.time_remaining(), "peer": context.peer()}
        return json.dumps(out).encode()

    def publish(self):
        if self.health is None:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE):
            self.health.set(service, status)


def black_hole():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []

    def accept():
        while True:
            conn, _ = listener.accept()
            held.append(conn)  # never read, never written, never closed

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def command(line, backends):
    words = line.split()
    if len(words) < 2 or not words[1].isdigit() or int(words[1]) not in backends:
        return f"ERR unknown command or port: {line!r}"
    b = backends[int(words[1])]
    if words[0] == "serving" and len(words) == 3 and words[2] in ("on", "off"):
        b.serving = words[2] == "on"
        if b.server is not None:
            b.publish()
    elif words[0] == "failing" and len(words) == 3 and words[2] in ("on", "off"):
        b.failing = words[2] == "on"
    elif words[0] == "stop" and len(words) == 2:
        b.stop()
    elif words[0] == "stop" and len(words) == 3:
        b.stop(float(words[2]))
    elif words[0] == "peak" and len(words) == 2:
        return f"OK {b.peak}"
    elif words[0] == "ended" and len(words) == 2:
        return f"OK {b.ended_early}"
    elif words[0] == "orca" and len(words) == 5:
        b.orca = orca_load_report(*map(float, words[2:]))
    elif words[0] == "start":
        if b.server is None:
            b.start()
    else:
        return f"ERR unknown command: {line!r}"
    return "OK"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--ports", help="fixed ports, comma-separated, instead of --count ephemeral ones")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--no-health", action="store_true")
    ap.add_argument("--black-hole", action="store_true")
    ap.add_argument("--compression", choices=["gzip", "deflate"])
    ap.add_argument("--orca", help="per-backend application_utilization, comma-separated")
    ap.add_argument(
        "--option",
        action="append",
        default=[],
        help="server channel option NAME=INT (e.g. grpc.max_receive_message_length=1000)",
    )
    args = ap.parse_args()

    if args.black_hole:
        print(f"READY {black_hole()}", flush=True)
        sys.stdin.read()
        return

    credentials = None
    if args.tls_cert:
        with open(args.tls_key, "rb") as k, open(args.tls_cert, "rb") as c:
            credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
    loads = [float(u) for u in args.orca.split(",")] if args.orca else []
    options = [(k, int(v)) for k, v in (o.split("=", 1) for o in args.option)]
    ports = [int(p) for p in args.ports.split(",")] if args.ports else [0] * args.count
    backends = {}
    for i, port in enumerate(ports):
        compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}.get(
            args.compression
        )
        b = Backend(port, credentials, not args.no_health, compression, options)
        if i < len(loads):
            b.orca = orca_load_report(loads[i], 100.0, 0.0)
        b.start()
        backends[b.port] = b
    print("READY " + " ".join(map(str, backends)), flush=True)
    print(
        f"interop server: grpcio {grpc.__version__} on {list(backends)} {options}",
        file=sys.stderr,
        flush=True,
    )
    for line in sys.stdin:
        if line.strip():
            try:
                reply = command(line.strip(), backends)
            except Exception as e:  # report, keep serving
                reply = f"ERR {e}"
            print(reply, flush=True)
    for b in backends.values():
        b.stop()


if __name__ == "__main__":
    main()
