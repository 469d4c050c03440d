"""Exceptions and the enums they carry."""
import base64
import concurrent.futures
import ctypes as C
import enum

from . import _ffi


class StatusCode(enum.IntEnum):
    """gRPC status codes (the numbers are gRPC's, as in grpc.StatusCode)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    def __call__(self):
        # grpcio spells it e.code(); here e.code is the code itself, and
        # calling it gives it back: both spellings work.
        return self

    @classmethod
    def of(cls, number):
        try:
            return cls(number)
        except ValueError:
            return cls.UNKNOWN


class State(enum.IntEnum):
    """Connectivity states (gRPC's numbers)."""

    IDLE = 0
    CONNECTING = 1
    READY = 2
    TRANSIENT_FAILURE = 3
    SHUTDOWN = 4


class SwitchyardError(Exception):
    """A call into the library failed for a reason other than an RPC's status:
    `status` is the library's numbered status (`status_name` its name, e.g.
    "SY_CLOSED") and `detail` what sy_last_error said."""

    def __init__(self, status, detail):
        self.status = status
        self.status_name = _ffi.status_name(status)
        self.detail = detail
        super().__init__(detail or self.status_name)

    def __reduce__(self):  # picklable (ProcessPoolExecutor, ...)
        return (type(self), (self.status, self.detail))


class InvalidArgument(SwitchyardError, ValueError):
    """Bad input: a malformed target, service config, method, metadata, ..."""


class ChannelClosed(SwitchyardError, ValueError):
    """The channel (or its runtime) was closed. A ValueError, as grpcio's
    "Cannot invoke RPC on closed channel!"."""


class WrongContext(SwitchyardError, RuntimeError):
    """A call made where it may not be (SY_WRONG_CONTEXT): a blocking call or
    a close inside one of the library's callbacks, a reader used inside a
    callback that it is running, a policy's context outside its callback."""

    def __init__(self, status=_ffi.SY_WRONG_CONTEXT, detail=None):
        super().__init__(status, detail)


# What the library says of a call whose deadline passed (gRPC-Go's words).
_LIBRARY_DEADLINE = "context deadline exceeded"


class RpcError(Exception):
    """An RPC (or a pick for one) failed with gRPC status `code` (a
    StatusCode; `code()` too, as grpcio spells it) and `message` (also
    `details()`: the server's own text); `trailing_metadata()` is what the
    server sent with the status."""

    def __init__(self, code, message="", trailing_metadata=(), initial_metadata=()):
        self.code = StatusCode.of(int(code))
        if self.code == StatusCode.DEADLINE_EXCEEDED and message == _LIBRARY_DEADLINE:
            # The library's own deadline, in grpcio's words.
            message = "Deadline Exceeded"
        self.message = message
        self._trailing = tuple(trailing_metadata)
        self._initial = tuple(initial_metadata)
        # Not super(): in CallClosed the next class is SwitchyardError.
        Exception.__init__(self, f"{self.code.name}: {message}" if message else self.code.name)

    def __reduce__(self):  # picklable (ProcessPoolExecutor, ...)
        return (type(self), (int(self.code), self.message, self._trailing, self._initial))

    def details(self):  # grpc.RpcError's spelling
        return self.message

    def initial_metadata(self):
        """grpc.Call's: the response headers the server sent before the
        failed status (empty when its answer was the status alone, or no
        server answered); "-bin" values as bytes."""
        return self._initial

    def debug_error_string(self):
        return f"{self.code.name}: {self.message}"

    def trailing_metadata(self):
        """The server's metadata with the failed status, as grpcio gives it:
        (key, value) pairs, "-bin" values as bytes, and the error details
        (gRPC's richer error model: a serialized google.rpc.Status) as
        "grpc-status-details-bin". Empty when no server answered."""
        return self._trailing


def last_call_trailers():
    """What the server sent with the status of this thread's last failed
    call (sy_last_call_details / sy_last_call_trailer_at), as
    RpcError.trailing_metadata() gives it."""
    lib = _ffi.lib
    out = []
    size = C.c_size_t()
    if lib.sy_last_call_details(None, 0, C.byref(size)) == _ffi.SY_OK:
        buf = (C.c_uint8 * max(size.value, 1))()
        if lib.sy_last_call_details(buf, size.value, C.byref(size)) == _ffi.SY_OK:
            out.append(("grpc-status-details-bin", bytes(buf[: size.value])))
    # The details were added just above, decoded; content-type is the
    # transport's (grpcio lists it in neither metadata).
    rest = _last_call_entries(lib.sy_last_call_trailer_at)
    return tuple(out) + tuple(
        (k, v) for k, v in rest if k not in ("grpc-status-details-bin", "content-type")
    )


def last_call_headers():
    """The response headers that came before the status of this thread's
    last failed call (sy_last_call_header_at), as
    RpcError.initial_metadata() gives them."""
    return tuple(
        (k, v)
        for k, v in _last_call_entries(_ffi.lib.sy_last_call_header_at)
        if k != "content-type"
    )


def _last_call_entries(entry_at):
    """Every entry `entry_at` (sy_last_call_trailer_at's shape) lists, as
    (key, value) pairs: "-bin" values decoded to bytes."""
    out = []
    i = 0
    while True:
        ks, vs = C.c_size_t(), C.c_size_t()
        if entry_at(i, None, 0, C.byref(ks), None, 0, C.byref(vs)) != _ffi.SY_OK:
            break
        key = C.create_string_buffer(ks.value + 1)
        value = (C.c_uint8 * max(vs.value, 1))()
        entry_at(i, key, ks.value + 1, C.byref(ks), value, vs.value, C.byref(vs))
        k, v = key.value.decode("ascii", "replace"), bytes(value[: vs.value])
        if k.endswith("-bin"):
            out.append((k, base64.b64decode(v + b"=" * (-len(v) % 4))))
        else:
            out.append((k, v.decode("latin-1")))
        i += 1
    return tuple(out)


class CallClosed(RpcError, ChannelClosed):
    """A call in flight when its channel closed: CANCELLED, as grpcio ends
    such calls ("Channel closed!"); also a ChannelClosed."""

    def __init__(
        self, code=StatusCode.CANCELLED, message="channel closed", trailing_metadata=(),
        initial_metadata=(),
    ):
        RpcError.__init__(self, code, message, trailing_metadata, initial_metadata)
        self.status = _ffi.SY_CLOSED
        self.status_name = _ffi.status_name(_ffi.SY_CLOSED)
        self.detail = message


class CallCancelled(RpcError, concurrent.futures.CancelledError):
    """The result of a call its caller cancelled: CANCELLED, and a
    concurrent.futures.CancelledError (grpcio's FutureCancelledError is
    one)."""

    def __init__(
        self, code=StatusCode.CANCELLED, message="cancelled", trailing_metadata=(),
        initial_metadata=(),
    ):
        RpcError.__init__(self, code, message, trailing_metadata, initial_metadata)


class NoSubchannel(RpcError):
    """A pick that was not allowed to wait found nothing ready yet; a later
    pick may succeed."""


_ARGUMENT_STATUSES = {
    _ffi.SY_NULL_PARAMETER,
    _ffi.SY_INVALID_ARGUMENT,
    _ffi.SY_INVALID_UTF8,
    _ffi.SY_INVALID_SERVICE_CONFIG,
    _ffi.SY_INVALID_TARGET,
    _ffi.SY_NOT_FOUND,
}


def error_for(status):
    """The exception for a failed call's status, read on the failing thread
    right after the call (sy_last_error is per thread)."""
    detail = _ffi.last_error()
    if status == _ffi.SY_RPC_FAILED:
        # A call's failure: what its server sent with the status too, and
        # its message as sent (sy_last_error's text has a prefix).
        code = _ffi.lib.sy_last_grpc_code()
        message = _ffi.last_call_message()
        return RpcError(
            code,
            detail if message is None else message,
            last_call_trailers(),
            last_call_headers(),
        )
    if status in (
        _ffi.SY_UNAVAILABLE,
        _ffi.SY_DROPPED,
        _ffi.SY_DEADLINE_EXCEEDED,
    ):
        return RpcError(_ffi.lib.sy_last_grpc_code(), detail)
    if status == _ffi.SY_NO_SUBCHANNEL:
        return NoSubchannel(StatusCode.UNAVAILABLE, detail)
    if status in (_ffi.SY_CLOSED, _ffi.SY_RUNTIME_GONE):
        return ChannelClosed(status, detail)
    if status in _ARGUMENT_STATUSES:
        return InvalidArgument(status, detail)
    if status == _ffi.SY_WRONG_CONTEXT:
        return WrongContext(status, detail)
    return SwitchyardError(status, detail)


def check(status):
    if status != _ffi.SY_OK:
        raise error_for(status)
