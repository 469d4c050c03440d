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
  grpc.health.v1.Health   the standard servicer from grpcio-health-checking,
                          SERVING for "" and "echo.Echo" at start.
With --orca U1,U2,... backend i starts out as if told "orca <port> Ui 100 0"
(see below): an ORCA load report of application utilization Ui at 100 qps
on every echo response. With --tls-cert/--tls-key the servers speak TLS; with --no-health they have
no health service (Watch fails UNIMPLEMENTED); with --compression gzip|deflate
they compress every response (grpcio's server-wide compression). With --black-hole it instead
opens one plain TCP listener that accepts connections and never says a word.

Prints "READY <port> ..." on stdout once every listener is bound. Then reads
one command per line on stdin and answers "OK" (or "ERR <why>") on stdout:
  serving <port> on|off   health of "" and "echo.Echo" -> SERVING / NOT_SERVING
  failing <port> on|off   Unary and Delay fail every call UNAVAILABLE, with
                          "port=<port>" in the message (outlier detection)
  stop <port>             close that server's listener and connections
  start <port>            serve again on the same port
  orca <port> <app_utilization> <rps> <eps>
                          from now on every echo response carries an ORCA
                          per-call load report (trailer endpoint-load-metrics-bin,
                          a serialized xds.data.orca.v3.OrcaLoadReport) with
                          these application_utilization, rps_fractional and eps
End of stdin (the test went away) stops everything and exits.
"""
import argparse
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
    def __init__(self, port, credentials, with_health, compression=None):
        self.port = port
        self.compression = compression
        self.credentials = credentials
        self.with_health = with_health
        self.server = None
        self.health = None
        self.serving = True
        self.failing = False
        self.orca = None  # serialized OrcaLoadReport for each response

    def start(self):
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            # Binding a port someone else holds must fail, not share it.
            options=[("grpc.so_reuseport", 0)],
            compression=self.compression,
        )
        echo = grpc.unary_unary_rpc_method_handler(
            self.unary, request_deserializer=identity, response_serializer=identity
        )
        delay = grpc.unary_unary_rpc_method_handler(
            self.delay, request_deserializer=identity, response_serializer=identity
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Unary": echo, "Delay": delay}),)
        )
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

    def stop(self):
        if self.server is not None:
            self.server.stop(None).wait()
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

    def delay(self, request, context):
        try:
            ms = int(request.decode() or "0")
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Delay takes milliseconds")
        ended = threading.Event()
        context.add_callback(ended.set)  # deadline, cancel, connection lost
        ended.wait(min(ms, 60_000) / 1000)
        return self.unary(request, context)

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
    elif words[0] == "stop":
        b.stop()
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
    ports = [int(p) for p in args.ports.split(",")] if args.ports else [0] * args.count
    backends = {}
    for i, port in enumerate(ports):
        compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}.get(
            args.compression
        )
        b = Backend(port, credentials, not args.no_health, compression)
        if i < len(loads):
            b.orca = orca_load_report(loads[i], 100.0, 0.0)
        b.start()
        backends[b.port] = b
    print("READY " + " ".join(map(str, backends)), flush=True)
    print(f"interop server: grpcio {grpc.__version__} on {list(backends)}", file=sys.stderr, flush=True)
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
