"""grpcio parity: grpcio's own client-side unit tests, ported onto switchyard's Python API.

Sources (github.com/grpc/grpc, src/python/grpcio_tests/tests/unit/):
_metadata_code_details_test.py, _invalid_metadata_test.py, _metadata_test.py,
_compression_test.py (client side), _rpc_part_1_test.py / _rpc_part_2_test.py /
_rpc_test_helpers.py (unary-unary only), _channel_connectivity_test.py,
_channel_ready_future_test.py, _error_message_encoding_test.py, _abort_test.py.

Servers are real grpcio servers (grpc.server, generic handlers) in this process;
where useful, grpcio's own client (grpc.insecure_channel) is asked the same thing
as the oracle. Not ported (switchyard offers no equivalent): streaming RPCs,
server-side APIs, channel options (user agents), client-side compression,
Channel.subscribe/unsubscribe, grpc.channel_ready_future, debug_error_string
contents, with_call's Call object, thread-pool checks of the server.
"""
import concurrent.futures as cf
import contextlib
import socket
import threading
import time

import pytest

import grpc  # noqa: E402  (python/test.sh installs it)

import switchyard as sy  # noqa: E402

SHORT = 1.0  # test_constants.SHORT_TIMEOUT is 4 s; a shorter one does the same here
WAIT = 10.0  # the bound on every wait that should end
THREAD_CONCURRENCY = 25  # test_constants.THREAD_CONCURRENCY

SERVICE = "test"


def method(name):
    return f"/{SERVICE}/{name}"


def metadata_transmitted(original, transmitted):
    """tests/unit/test_common.py's metadata_transmitted: each (key, value) of
    `original` appears in `transmitted` (as often), keys compared as text."""
    remaining = [(k.decode() if isinstance(k, bytes) else k, v) for k, v in transmitted]
    for key, value in original:
        key = key.decode() if isinstance(key, bytes) else key
        try:
            remaining.remove((key, value))
        except ValueError:
            return False
    return True


# --- server side -----------------------------------------------------------
class Defect(Exception):
    """tests/unit/framework/common/test_control.Defect."""


class Control:
    """test_control.PauseFailControl: handlers call control(); pause() holds
    them (bounded by WAIT), fail() makes them raise."""

    def __init__(self):
        self._cv = threading.Condition()
        self._paused = False
        self._fail = False
        self._waiting = 0

    def control(self):
        with self._cv:
            if self._fail:
                raise Defect("test defect")
            end = time.monotonic() + WAIT
            self._waiting += 1
            self._cv.notify_all()
            try:
                while self._paused and time.monotonic() < end:
                    self._cv.wait(end - time.monotonic())
            finally:
                self._waiting -= 1

    @contextlib.contextmanager
    def pause(self):
        with self._cv:
            self._paused = True
        try:
            yield
        finally:
            with self._cv:
                self._paused = False
                self._cv.notify_all()

    @contextlib.contextmanager
    def fail(self):
        with self._cv:
            self._fail = True
        try:
            yield
        finally:
            with self._cv:
                self._fail = False

    def block_until_paused(self):
        with self._cv:
            assert self._cv.wait_for(lambda: self._waiting > 0, WAIT), "handler never ran"


# _metadata_code_details_test.py
CLIENT_METADATA = (("client-md-key", "client-md-key"), ("client-md-key-bin", b"\x00\x01"))
SERVER_INITIAL_METADATA = (
    ("server-initial-md-key", "server-initial-md-value"),
    ("server-initial-md-key-bin", b"\x00\x02"),
)
SERVER_TRAILING_METADATA = (
    ("server-trailing-md-key", "server-trailing-md-value"),
    ("server-trailing-md-key-bin", b"\x00\x03"),
)
DETAILS = "Test details!"

# _metadata_test.py
INVOCATION_METADATA = ((b"invocation-md-key", "invocation-md-value"),
                       ("invocation-md-key-bin", b"\x00\x01"))
EXPECTED_INVOCATION_METADATA = (("invocation-md-key", "invocation-md-value"),
                                ("invocation-md-key-bin", b"\x00\x01"))
INITIAL_METADATA = ((b"initial-md-key", "initial-md-value"), ("initial-md-key-bin", b"\x00\x02"))
EXPECTED_INITIAL_METADATA = (("initial-md-key", "initial-md-value"),
                             ("initial-md-key-bin", b"\x00\x02"))
TRAILING_METADATA = (("server-trailing-md-key", "server-trailing-md-value"),
                     ("server-trailing-md-key-bin", b"\x00\x03"))

# _abort_test.py
ABORT_DETAILS = "Abandon ship!"
ABORT_METADATA = (("a-trailing-metadata", "42"),)
RICH_METADATA = (("x-before", "1"), ("grpc-status-details-bin", b"\x08\x09\x12\x04rich"),
                 ("x-after-bin", b"\xff\x00"))


class _Status(grpc.Status):
    def __init__(self, code, details, trailing_metadata):
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata


class MCDServicer:
    """_metadata_code_details_test._Servicer, unary-unary part."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.lock = threading.Lock()
        self.abort_call = False
        self.code = None
        self.details = None
        self.exception = False
        self.return_none = False
        self.received_client_metadata = None

    def unary_unary(self, request, context):
        with self.lock:
            self.received_client_metadata = context.invocation_metadata()
            context.send_initial_metadata(SERVER_INITIAL_METADATA)
            context.set_trailing_metadata(SERVER_TRAILING_METADATA)
            if self.abort_call:
                context.abort(self.code, self.details)
            else:
                if self.code is not None:
                    context.set_code(self.code)
                if self.details is not None:
                    context.set_details(self.details)
            if self.exception:
                raise Defect()
            return None if self.return_none else b"\x49\x50\x51"


class Server:
    def __init__(self, **kwargs):
        self.control = Control()
        self.mcd = MCDServicer()
        self.calls = 0
        self.last_metadata = None
        self._lock = threading.Lock()
        self.server = grpc.server(cf.ThreadPoolExecutor(max_workers=2 * THREAD_CONCURRENCY + 8),
                                  **kwargs)
        uu = grpc.unary_unary_rpc_method_handler
        handlers = {
            # _rpc_test_helpers._Handler.handle_unary_unary
            "UnaryUnary": uu(self._unary_unary),
            "MCD": uu(self.mcd.unary_unary, response_serializer=lambda r: r),
            "Metadata": uu(self._metadata),
            "Echo": uu(self._echo),
            "ErrorEncoding": uu(self._error_encoding),
            "SetDetails": uu(self._set_details),
            "SetCallGzip": uu(self._set_call_gzip),
            "abort": uu(self._abort),
            "AbortWithStatus": uu(self._abort_with_status),
            "RichStatus": uu(self._rich_status),
            # As _abort_test registers it: a stream-stream handler, called unary.
            "InvalidCode": grpc.stream_stream_rpc_method_handler(self._invalid_code),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def target(self):
        return f"ipv4:127.0.0.1:{self.port}"

    def _count(self, context):
        with self._lock:
            self.calls += 1
            self.last_metadata = tuple(context.invocation_metadata())

    def _unary_unary(self, request, context):
        self._count(context)
        self.control.control()
        context.set_trailing_metadata((("testkey", "testvalue"),))
        context.is_active()
        context.time_remaining()
        return request

    def _echo(self, request, context):
        self._count(context)
        return request

    def _metadata(self, request, context):
        self._count(context)
        assert metadata_transmitted(EXPECTED_INVOCATION_METADATA, context.invocation_metadata())
        context.send_initial_metadata(INITIAL_METADATA)
        context.set_trailing_metadata(TRAILING_METADATA)
        return b"\x00\x00\x00"

    def _error_encoding(self, request, context):
        context.set_code(grpc.StatusCode.UNKNOWN)
        context.set_details(request.decode("utf-8"))
        return b"\x00\x00\x00"

    def _set_details(self, request, context):
        code, _, details = request.decode("utf-8").partition(":")
        context.set_code(grpc.StatusCode[code])
        context.set_details(details)
        return b""

    def _set_call_gzip(self, request, context):
        context.set_compression(grpc.Compression.Gzip)
        return request

    def _abort(self, request, context):
        context.abort(grpc.StatusCode.INTERNAL, ABORT_DETAILS)
        raise Exception("This line should not be executed!")

    def _abort_with_status(self, request, context):
        context.abort_with_status(_Status(grpc.StatusCode.INTERNAL, ABORT_DETAILS, ABORT_METADATA))
        raise Exception("This line should not be executed!")

    def _rich_status(self, request, context):
        # As grpcio-status's rpc_status.to_status: the details travel as
        # grpc-status-details-bin in the trailing metadata.
        context.abort_with_status(_Status(grpc.StatusCode.FAILED_PRECONDITION, "rich",
                                          RICH_METADATA))

    def _invalid_code(self, request_iterator, context):
        context.abort(42, ABORT_DETAILS)

    def stop(self):
        self.server.stop(None)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def srv(server):
    server.mcd.reset()
    yield server
    server.mcd.reset()


@pytest.fixture
def channel(server):
    ch = sy.Channel(server.target, credentials=sy.Insecure())
    yield ch
    ch.close()


@pytest.fixture
def oracle(server):
    """grpcio's own client on the same server."""
    ch = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield ch
    ch.close()


def grpcio_error(oracle_channel, name, request=b"", **kwargs):
    with pytest.raises(grpc.RpcError) as e:
        oracle_channel.unary_unary(name)(request, timeout=WAIT, **kwargs)
    return e.value


class Callback:
    """_rpc_test_helpers.Callback, bounded."""

    def __init__(self):
        self._done = threading.Event()
        self._value = None

    def __call__(self, value):
        self._value = value
        self._done.set()

    def value(self):
        assert self._done.wait(WAIT), "callback never ran"
        return self._value


# === _metadata_code_details_test.py =========================================
def test_mcd_successful_unary_unary(srv, channel):
    srv.mcd.details = DETAILS
    resp = channel.unary(method("MCD"), b"\x46\x47\x48", timeout=WAIT, metadata=CLIENT_METADATA)
    assert metadata_transmitted(CLIENT_METADATA, srv.mcd.received_client_metadata)
    assert metadata_transmitted(SERVER_INITIAL_METADATA, resp.initial_metadata())
    assert metadata_transmitted(SERVER_TRAILING_METADATA, resp.trailing_metadata())
    assert resp.message == b"\x49\x50\x51"


def test_mcd_successful_unary_unary_future(srv, channel):
    srv.mcd.details = DETAILS
    call = channel.unary_future(method("MCD"), b"\x46", timeout=WAIT, metadata=CLIENT_METADATA)
    assert call.result(WAIT).message == b"\x49\x50\x51"
    assert call.code() is sy.StatusCode.OK
    assert metadata_transmitted(SERVER_INITIAL_METADATA, call.initial_metadata())
    assert metadata_transmitted(SERVER_TRAILING_METADATA, call.trailing_metadata())


# abort() with NOT_FOUND, 3 (a bare int), OK: grpcio's client sees these codes/details.
ABORT_CASES = [
    (grpc.StatusCode.NOT_FOUND, sy.StatusCode.NOT_FOUND, DETAILS),
    (3, sy.StatusCode.UNKNOWN, DETAILS),
    (grpc.StatusCode.OK, sy.StatusCode.UNKNOWN, ""),
]


@pytest.mark.parametrize("abort_code,expected_code,expected_details", ABORT_CASES,
                         ids=["NOT_FOUND", "int3", "OK"])
def test_mcd_aborted_unary_unary(srv, channel, abort_code, expected_code, expected_details):
    srv.mcd.code, srv.mcd.details, srv.mcd.abort_call = abort_code, DETAILS, True
    with pytest.raises(sy.RpcError) as e:
        channel.unary(method("MCD"), b"\x46", timeout=WAIT, metadata=CLIENT_METADATA)
    assert metadata_transmitted(CLIENT_METADATA, srv.mcd.received_client_metadata)
    assert metadata_transmitted(SERVER_TRAILING_METADATA, e.value.trailing_metadata())
    assert e.value.code() is expected_code
    assert e.value.details() == expected_details


MODES = ["custom_code", "custom_code_exception", "custom_code_return_none"]


def _set_mode(mcd, mode):
    mcd.code, mcd.details = grpc.StatusCode.NOT_FOUND, DETAILS
    mcd.exception = mode == "custom_code_exception"
    mcd.return_none = mode == "custom_code_return_none"


@pytest.mark.parametrize("mode", MODES)
def test_mcd_custom_code_unary_unary(srv, channel, mode):
    _set_mode(srv.mcd, mode)
    with pytest.raises(sy.RpcError) as e:
        channel.unary(method("MCD"), b"\x46", timeout=WAIT, metadata=CLIENT_METADATA)
    assert metadata_transmitted(CLIENT_METADATA, srv.mcd.received_client_metadata)
    assert metadata_transmitted(SERVER_TRAILING_METADATA, e.value.trailing_metadata())
    assert e.value.code() is sy.StatusCode.NOT_FOUND
    assert e.value.details() == DETAILS


@pytest.mark.parametrize("mode", MODES)
def test_mcd_custom_code_unary_unary_future(srv, channel, mode):
    _set_mode(srv.mcd, mode)
    call = channel.unary_future(method("MCD"), b"\x46", timeout=WAIT, metadata=CLIENT_METADATA)
    with pytest.raises(sy.RpcError) as e:
        call.result(WAIT)
    assert e.value.code() is sy.StatusCode.NOT_FOUND
    assert call.code() is sy.StatusCode.NOT_FOUND
    assert call.details() == DETAILS
    assert metadata_transmitted(SERVER_TRAILING_METADATA, call.trailing_metadata())


# grpcio's RpcError of a failed call (and the failed future) carries the
# server's initial metadata: every testAborted*/testCustomCode* asserts it.
@pytest.mark.parametrize("how", ["aborted_blocking", "custom_code_blocking", "custom_code_future"])
def test_mcd_failed_call_keeps_server_initial_metadata(srv, channel, oracle, how):
    srv.mcd.code, srv.mcd.details = grpc.StatusCode.NOT_FOUND, DETAILS
    srv.mcd.abort_call = how.startswith("aborted")
    theirs = grpcio_error(oracle, method("MCD"), b"\x46")
    assert metadata_transmitted(SERVER_INITIAL_METADATA, theirs.initial_metadata())
    if how.endswith("future"):
        got = channel.unary_future(method("MCD"), b"\x46", timeout=WAIT).initial_metadata()
    else:
        with pytest.raises(sy.RpcError) as e:
            channel.unary(method("MCD"), b"\x46", timeout=WAIT)
        got = e.value.initial_metadata()
    assert metadata_transmitted(SERVER_INITIAL_METADATA, got), got


# === _metadata_test.py ======================================================
def test_metadata_unary_unary(srv, channel):
    before = srv.calls
    resp = channel.unary(method("Metadata"), b"\x00\x00\x00", timeout=WAIT,
                         metadata=INVOCATION_METADATA)
    assert srv.calls == before + 1  # the server's own assertions passed: no UNKNOWN
    assert metadata_transmitted(EXPECTED_INITIAL_METADATA, resp.initial_metadata())
    assert metadata_transmitted(TRAILING_METADATA, resp.trailing_metadata())


def test_metadata_unary_unary_lists_exactly_what_grpcio_lists(srv, channel, oracle):
    """test_common.metadata_transmitted allows extras; grpcio's client lists
    only the server's own metadata (no transport headers such as
    content-type, grpc-encoding, grpc-accept-encoding). switchyard's README:
    initial_metadata() lists the headers "as grpcio does"."""
    _, call = oracle.unary_unary(method("Metadata")).with_call(
        b"\x00\x00\x00", timeout=WAIT, metadata=INVOCATION_METADATA)
    resp = channel.unary(method("Metadata"), b"\x00\x00\x00", timeout=WAIT,
                         metadata=INVOCATION_METADATA)
    assert tuple(call.trailing_metadata()) == resp.trailing_metadata()
    assert tuple(call.initial_metadata()) == resp.initial_metadata()


# === _invalid_metadata_test.py ==============================================
def test_invalid_metadata_uppercase_key_blocking_raises_value_error(srv, channel):
    """testUnaryRequestBlockingUnaryResponse: metadata (("InVaLiD", ...),)."""
    before = srv.calls
    try:
        channel.unary(method("Echo"), b"\x07\x08", timeout=WAIT,
                      metadata=(("InVaLiD", "UnaryRequestBlockingUnaryResponse"),))
        raised = None
    except ValueError as e:
        raised = e
    assert raised is not None and srv.calls == before, f"sent, as {srv.last_metadata}"


def test_invalid_metadata_uppercase_key_future_fails(srv, channel):
    """testUnaryRequestFutureUnaryResponse: grpcio's unit test expects
    ValueError from .future(); the grpcio client (1.85) fails the call with
    INTERNAL instead. Either counts here; sending the call does not."""
    before = srv.calls
    try:
        call = channel.unary_future(method("Echo"), b"\x07\x08", timeout=WAIT,
                                    metadata=(("InVaLiD", "UnaryRequestFutureUnaryResponse"),))
    except ValueError:
        pass
    else:
        error = call.exception(WAIT)
        assert srv.calls == before, f"sent, as {srv.last_metadata}"
        assert isinstance(error, sy.RpcError) and error.code() is sy.StatusCode.INTERNAL
    assert srv.calls == before, f"sent, as {srv.last_metadata}"


INVALID = [
    ("bad key", "v"),
    ("k", "bad\nvalue"),
    ("k", "caf\u00e9"),
    (":path", "/x"),
    ("", ""),
    ("k", "nul\x00"),
]


@pytest.mark.parametrize("kv", INVALID, ids=["space_key", "newline_value", "non_ascii_value",
                                             "pseudo_header", "empty_key", "nul_value"])
@pytest.mark.parametrize("kind", ["blocking", "future"])
def test_invalid_metadata_is_never_sent(srv, channel, kv, kind):
    """Blocking: ValueError (the unit test); future: ValueError (the unit
    test) or a future failing INTERNAL (grpcio 1.85)."""
    before = srv.calls
    if kind == "blocking":
        with pytest.raises(ValueError):
            channel.unary(method("Echo"), b"x", timeout=WAIT, metadata=(kv,))
    else:
        try:
            call = channel.unary_future(method("Echo"), b"x", timeout=WAIT, metadata=(kv,))
        except ValueError:
            pass
        else:
            with pytest.raises(sy.RpcError) as e:
                call.result(WAIT)
            assert e.value.code() is sy.StatusCode.INTERNAL
    assert srv.calls == before


def test_invalid_metadata_not_pairs_raises_type_error(channel):
    """testInvalidMetadata: metadata=42 is a TypeError."""
    with pytest.raises(TypeError):
        channel.unary(method("Echo"), b"", timeout=WAIT, metadata=42)


@pytest.mark.parametrize("kv", [("k-bin", "str value"), ("k", 5)], ids=["bin_str", "int_value"])
def test_invalid_metadata_value_type_raises_type_error(channel, oracle, kv):
    with pytest.raises(TypeError):
        oracle.unary_unary(method("Echo"))(b"x", timeout=WAIT, metadata=(kv,))
    with pytest.raises(TypeError):
        channel.unary(method("Echo"), b"x", timeout=WAIT, metadata=(kv,))


# === _error_message_encoding_test.py ========================================
UNICODE_ERROR_MESSAGES = [
    b"\xe2\x80\x9d".decode("utf-8"),
    b"abc\x80\xd0\xaf".decode("latin-1"),
    b"\xc3\xa9".decode("utf-8"),
]


@pytest.mark.parametrize("message", UNICODE_ERROR_MESSAGES, ids=["rdquo", "latin1", "e_acute"])
def test_error_message_encoding(channel, message):
    with pytest.raises(sy.RpcError) as e:
        channel.unary(method("ErrorEncoding"), message.encode("utf-8"), timeout=WAIT)
    assert e.value.code() is sy.StatusCode.UNKNOWN
    assert e.value.details() == message


# Beyond the file: messages whose percent-encoding (PROTOCOL-HTTP2
# grpc-message) is easy to get wrong; grpcio's client is the oracle.
DETAIL_TEXTS = ["100% sure", "%25 literal", "tab\tnewline\ncr\r", "emoji \U0001F642",
                "trailing space ", "~!@#$^&*()_+{}|:\"<>?`-=[]\\;',./"]


@pytest.mark.parametrize("text", DETAIL_TEXTS, ids=["percent", "percent25", "controls", "emoji",
                                                    "trailing_space", "punctuation"])
def test_error_details_text_matches_grpcio(channel, oracle, text):
    request = ("NOT_FOUND:" + text).encode("utf-8")
    theirs = grpcio_error(oracle, method("SetDetails"), request)
    with pytest.raises(sy.RpcError) as e:
        channel.unary(method("SetDetails"), request, timeout=WAIT)
    assert (e.value.code(), e.value.details()) == (sy.StatusCode.NOT_FOUND, theirs.details())
    assert theirs.details() == text


# === _abort_test.py =========================================================
def test_abort(channel):
    with pytest.raises(sy.RpcError) as e:
        channel.unary(method("abort"), b"\x00\x00\x00", timeout=WAIT)
    assert e.value.code() is sy.StatusCode.INTERNAL
    assert e.value.details() == ABORT_DETAILS


def test_abort_with_status(channel):
    with pytest.raises(sy.RpcError) as e:
        channel.unary(method("AbortWithStatus"), b"\x00\x00\x00", timeout=WAIT)
    assert e.value.code() is sy.StatusCode.INTERNAL
    assert e.value.details() == ABORT_DETAILS
    assert e.value.trailing_metadata() == ABORT_METADATA


def test_abort_with_rich_status_trailing_metadata_matches_grpcio(channel, oracle):
    """Beyond _abort_test: grpcio's RpcError.trailing_metadata() carries
    grpc-status-details-bin (grpc_status.rpc_status.from_call reads it)."""
    theirs = grpcio_error(oracle, method("RichStatus"))
    with pytest.raises(sy.RpcError) as e:
        channel.unary(method("RichStatus"), b"", timeout=WAIT)
    assert (e.value.code(), e.value.details()) == (sy.StatusCode.FAILED_PRECONDITION, "rich")
    assert sorted(e.value.trailing_metadata()) == sorted(tuple(theirs.trailing_metadata()))
    assert sorted(e.value.trailing_metadata()) == sorted(RICH_METADATA)


def test_abort_invalid_code(channel):
    with pytest.raises(sy.RpcError) as e:
        channel.unary(method("InvalidCode"), b"\x00\x00\x00", timeout=WAIT)
    assert e.value.code() is sy.StatusCode.UNKNOWN
    assert e.value.details() == ABORT_DETAILS


# === _rpc_part_1_test.py / _rpc_part_2_test.py (unary-unary) ================
def test_a_method_without_its_slash_is_refused_before_sending(srv, channel):
    """testUnrecognizedMethod sends 'NoSuchMethod' as is (grpcio puts it in
    :path and the server answers UNIMPLEMENTED); switchyard refuses a path
    HTTP/2 cannot carry as a gRPC method before anything is sent (a
    documented choice: check_method). With its slash, see below."""
    before = srv.calls
    with pytest.raises(sy.InvalidArgument):
        channel.unary("NoSuchMethod", b"abc", timeout=WAIT)
    assert srv.calls == before


def test_unrecognized_method_with_path(channel, oracle):
    theirs = grpcio_error(oracle, method("NoSuchMethod"), b"abc")
    with pytest.raises(sy.RpcError) as e:
        channel.unary(method("NoSuchMethod"), b"abc", timeout=WAIT)
    assert e.value.code() is sy.StatusCode.UNIMPLEMENTED
    assert e.value.details() == theirs.details() == "Method not found!"


def test_successful_unary_request_blocking_unary_response(channel):
    resp = channel.unary(method("UnaryUnary"), b"\x07\x08", timeout=WAIT,
                         metadata=(("test", "SuccessfulUnaryRequestBlockingUnaryResponse"),))
    assert resp.message == b"\x07\x08"
    assert ("testkey", "testvalue") in resp.trailing_metadata()


def test_successful_unary_request_future_unary_response(channel):
    call = channel.unary_future(method("UnaryUnary"), b"\x07\x08", timeout=WAIT,
                                metadata=(("test", "SuccessfulUnaryRequestFutureUnaryResponse"),))
    assert call.result(WAIT).message == b"\x07\x08"
    assert isinstance(call, cf.Future)
    assert call.exception() is None
    assert call.code() is sy.StatusCode.OK
    assert not call.is_active() and not call.running() and call.done()


def test_successful_future_traceback_is_none(channel):
    """grpc.Future.traceback(): None on success (testSuccessfulUnaryRequestFutureUnaryResponse)."""
    call = channel.unary_future(method("UnaryUnary"), b"\x07\x08", timeout=WAIT)
    call.result(WAIT)
    assert call.traceback() is None


def test_sequential_invocations(channel):
    m = (("test", "SequentialInvocations"),)
    assert channel.unary(method("UnaryUnary"), b"\x07\x08", timeout=WAIT, metadata=m).message == b"\x07\x08"
    assert channel.unary(method("UnaryUnary"), b"\x0809", timeout=WAIT, metadata=m).message == b"\x0809"


def test_concurrent_blocking_invocations(channel):
    with cf.ThreadPoolExecutor(THREAD_CONCURRENCY) as pool:
        futs = [pool.submit(channel.unary, method("UnaryUnary"), b"\x07\x08%d" % i, WAIT,
                            (("test", "ConcurrentBlockingInvocations"),))
                for i in range(THREAD_CONCURRENCY)]
        got = [f.result(WAIT).message for f in futs]
    assert got == [b"\x07\x08%d" % i for i in range(THREAD_CONCURRENCY)]


def test_concurrent_future_invocations(channel):
    calls = [channel.unary_future(method("UnaryUnary"), b"\x07\x08%d" % i, timeout=WAIT,
                                  metadata=(("test", "ConcurrentFutureInvocations"),))
             for i in range(THREAD_CONCURRENCY)]
    assert [c.result(WAIT).message for c in calls] == [
        b"\x07\x08%d" % i for i in range(THREAD_CONCURRENCY)]


def test_waiting_for_some_but_not_all_concurrent_future_invocations(channel):
    calls = [channel.unary_future(method("UnaryUnary"), b"\x67\x68", timeout=WAIT)
             for _ in range(THREAD_CONCURRENCY)]
    done = 0
    for c in cf.as_completed(calls, timeout=WAIT):
        assert c.result().message == b"\x67\x68"
        done += 1
        if done == THREAD_CONCURRENCY // 2:
            break


def test_failed_unary_request_blocking_unary_response(srv, channel, oracle):
    with srv.control.fail():
        theirs = grpcio_error(oracle, method("UnaryUnary"), b"\x37\x17")
        with pytest.raises(sy.RpcError) as e:
            channel.unary(method("UnaryUnary"), b"\x37\x17", timeout=WAIT,
                          metadata=(("test", "FailedUnaryRequestBlockingUnaryResponse"),))
    assert e.value.code() is sy.StatusCode.UNKNOWN
    assert e.value.details() == theirs.details()  # "Exception calling application: test defect"


def test_failed_unary_request_future_unary_response(srv, channel):
    callback = Callback()
    with srv.control.fail():
        call = channel.unary_future(method("UnaryUnary"), b"\x37\x17", timeout=WAIT,
                                    metadata=(("test", "FailedUnaryRequestFutureUnaryResponse"),))
        call.add_done_callback(callback)
        value_passed_to_callback = callback.value()
    assert isinstance(call, cf.Future)
    with pytest.raises(sy.RpcError) as e:
        call.result()
    assert e.value.code() is sy.StatusCode.UNKNOWN
    assert isinstance(call.exception(), sy.RpcError)
    assert call.exception().code() is sy.StatusCode.UNKNOWN
    assert call.code() is sy.StatusCode.UNKNOWN
    assert value_passed_to_callback is call


def test_failed_future_traceback_is_not_none(srv, channel):
    """grpc.Future.traceback(): the failure's traceback (testFailedUnaryRequestFutureUnaryResponse)."""
    with srv.control.fail():
        call = channel.unary_future(method("UnaryUnary"), b"\x37\x17", timeout=WAIT)
        call.exception(WAIT)
    assert call.traceback() is not None


def test_ignored_unary_request_future_unary_response(server):
    with sy.Channel(server.target, credentials=sy.Insecure()) as ch:
        ch.unary_future(method("UnaryUnary"), b"\x37\x17", timeout=WAIT,
                        metadata=(("test", "IgnoredUnaryRequestFutureUnaryResponse"),))


def test_cancelled_unary_request_unary_response(srv, channel):
    with srv.control.pause():
        call = channel.unary_future(method("UnaryUnary"), b"\x07\x17", timeout=WAIT,
                                    metadata=(("test", "CancelledUnaryRequestUnaryResponse"),))
        srv.control.block_until_paused()
        assert call.cancel()
    assert call.code() is sy.StatusCode.CANCELLED
    assert call.cancelled()
    with pytest.raises(cf.CancelledError):
        call.result()
    with pytest.raises(cf.CancelledError):
        call.exception()


def test_expired_unary_request_blocking_unary_response(srv, channel):
    with srv.control.pause():
        with pytest.raises(sy.RpcError) as e:
            channel.unary(method("UnaryUnary"), b"\x07\x17", timeout=SHORT,
                          metadata=(("test", "ExpiredUnaryRequestBlockingUnaryResponse"),))
    err = e.value
    assert err.initial_metadata() is not None
    assert err.code() is sy.StatusCode.DEADLINE_EXCEEDED
    assert err.details() is not None
    assert err.trailing_metadata() is not None


def test_expired_unary_request_future_unary_response(srv, channel):
    callback = Callback()
    with srv.control.pause():
        call = channel.unary_future(method("UnaryUnary"), b"\x07\x17", timeout=SHORT,
                                    metadata=(("test", "ExpiredUnaryRequestFutureUnaryResponse"),))
        with pytest.raises(cf.TimeoutError):  # grpc.FutureTimeoutError
            call.result(timeout=SHORT / 2.0)
        call.add_done_callback(callback)
        value_passed_to_callback = callback.value()
    assert value_passed_to_callback is call
    assert call.initial_metadata() is not None
    assert call.code() is sy.StatusCode.DEADLINE_EXCEEDED
    assert call.details() is not None
    assert call.trailing_metadata() is not None
    with pytest.raises(sy.RpcError) as e:
        call.result()
    assert e.value.code() is sy.StatusCode.DEADLINE_EXCEEDED
    assert isinstance(call.exception(), sy.RpcError)


def test_expired_details_match_grpcio(srv, channel, oracle):
    """grpcio's client says "Deadline Exceeded" for a deadline that passes in flight."""
    with srv.control.pause():
        with pytest.raises(grpc.RpcError) as g:
            oracle.unary_unary(method("UnaryUnary"))(b"\x07\x17", timeout=SHORT)
        theirs = g.value
        with pytest.raises(sy.RpcError) as e:
            channel.unary(method("UnaryUnary"), b"\x07\x17", timeout=SHORT)
    assert theirs.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert (e.value.code(), e.value.details()) == (sy.StatusCode.DEADLINE_EXCEEDED, theirs.details())


def test_negative_timeout_is_deadline_exceeded(channel, oracle):
    with pytest.raises(grpc.RpcError) as g:
        oracle.unary_unary(method("Echo"))(b"x", timeout=-1)
    theirs = g.value
    assert theirs.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(sy.RpcError) as e:
        channel.unary(method("Echo"), b"x", timeout=-1)
    assert e.value.code() is sy.StatusCode.DEADLINE_EXCEEDED
    call = channel.unary_future(method("Echo"), b"x", timeout=-1)
    assert call.code() is sy.StatusCode.DEADLINE_EXCEEDED


def test_time_remaining(srv, channel):
    with srv.control.pause():
        call = channel.unary_future(method("UnaryUnary"), b"x", timeout=5)
        remaining = call.time_remaining()
        assert 0 < remaining <= 5
        assert call.is_active()
        call.cancel()
    assert channel.unary_future(method("Echo"), b"x").time_remaining() is None


# === _channel_connectivity_test.py / _channel_ready_future_test.py ==========
class States:
    def __init__(self):
        self._cv = threading.Condition()
        self.seen = []

    def __call__(self, state):
        with self._cv:
            self.seen.append(state)
            self._cv.notify_all()

    def wait_for(self, pred, timeout=WAIT):
        with self._cv:
            return self._cv.wait_for(lambda: pred(tuple(self.seen)), timeout)


def unused_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ready_within(ch, timeout):
    """grpc.channel_ready_future(ch).result(timeout), from get_state and
    wait_for_state_change (switchyard has no ready future)."""
    end = time.monotonic() + timeout
    state = ch.get_state(try_to_connect=True)
    while state is not sy.State.READY:
        left = end - time.monotonic()
        if left <= 0:
            return False
        if state is sy.State.IDLE:
            ch.get_state(try_to_connect=True)
        s = ch.wait_for_state_change(state, timeout=min(left, 0.5))
        state = s if s is not None else ch.get_state()
    return True


def test_lonely_channel_connectivity():
    states = States()
    ch = sy.Channel(f"ipv4:127.0.0.1:{unused_port()}", credentials=sy.Insecure(),
                    on_state_change=states)
    try:
        assert ch.get_state(try_to_connect=False) is sy.State.IDLE
        ch.get_state(try_to_connect=True)
        assert states.wait_for(lambda s: len(s) >= 1)
        time.sleep(SHORT)  # a connection that will never happen
        assert sy.State.READY not in states.seen
        assert ch.get_state() is not sy.State.READY
    finally:
        ch.close()
    assert ch.get_state() is sy.State.SHUTDOWN


def test_immediately_connectable_channel_connectivity(server):
    states = States()
    ch = sy.Channel(server.target, credentials=sy.Insecure(), on_state_change=states)
    try:
        time.sleep(SHORT)  # no connection without try_to_connect
        assert ch.get_state() is sy.State.IDLE
        assert sy.State.READY not in states.seen and sy.State.CONNECTING not in states.seen
        ch.get_state(try_to_connect=True)
        assert states.wait_for(lambda s: sy.State.READY in s), states.seen
        assert sy.State.TRANSIENT_FAILURE not in states.seen
        assert sy.State.SHUTDOWN not in states.seen
    finally:
        ch.close()


def test_reachable_then_unreachable_channel_connectivity():
    s = Server()
    states = States()
    ch = sy.Channel(s.target, credentials=sy.Insecure(), on_state_change=states)
    try:
        ch.get_state(try_to_connect=True)
        assert states.wait_for(lambda seen: sy.State.READY in seen)
        s.stop()
        assert states.wait_for(lambda seen: seen[-1] is not sy.State.READY), states.seen
    finally:
        ch.close()
        s.stop()


def test_ready_future_lonely_channel():
    with sy.Channel(f"ipv4:127.0.0.1:{unused_port()}", credentials=sy.Insecure()) as ch:
        assert not ready_within(ch, SHORT)


def test_ready_future_immediately_connectable_channel(server):
    with sy.Channel(server.target, credentials=sy.Insecure()) as ch:
        assert ready_within(ch, WAIT)
        assert ch.get_state() is sy.State.READY


# === _compression_test.py (client side: the server compresses) ==============
class CountingProxy:
    """tests/unit/_tcp_proxy.TcpProxy: counts the bytes each way."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.sent = 0  # client -> server
        self.received = 0  # server -> client
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self._sock.accept()
            except OSError:
                continue
            u = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=WAIT)
            self._conns += [c, u]
            threading.Thread(target=self._pump, args=(c, u, "sent"), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, "received"), daemon=True).start()

    def _pump(self, src, dst, counter):
        src.settimeout(None)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    setattr(self, counter, getattr(self, counter) + len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        self._sock.close()
        for c in self._conns:
            c.close()


REQUEST = b"\x00" * 100
COMPRESSION_RATIO_THRESHOLD = 0.05


def _bytes_received(server_kwargs, name):
    s = Server(**server_kwargs)
    proxy = CountingProxy(s.port)
    try:
        with sy.Channel(f"ipv4:127.0.0.1:{proxy.port}", credentials=sy.Insecure()) as ch:
            resp = ch.unary(method(name), REQUEST, timeout=WAIT)
            assert resp.message == REQUEST
            headers = dict(resp.initial_metadata())
        time.sleep(0.2)  # the proxy's last reads
        with proxy._lock:
            return proxy.received, headers
    finally:
        proxy.close()
        s.stop()


@pytest.mark.parametrize("server_compression,call_gzip", [
    (grpc.Compression.Gzip, False),
    (grpc.Compression.Deflate, False),
    (None, True),
], ids=["ServerGzip", "ServerDeflate", "ServerCallGzip"])
def test_compression_unary_unary_server_compressed(server_compression, call_gzip):
    base, _ = _bytes_received({}, "Echo")
    kwargs = {"compression": server_compression} if server_compression else {}
    got, headers = _bytes_received(kwargs, "SetCallGzip" if call_gzip else "Echo")
    ratio = (got - base) / float(base)
    assert ratio < -COMPRESSION_RATIO_THRESHOLD, f"not compressed: {base} -> {got} bytes"
    # grpcio's client lists no grpc-encoding among the initial metadata.
    assert "grpc-encoding" not in headers
