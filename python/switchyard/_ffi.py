"""The C ABI of libswitchyard, declared for ctypes: every struct, callback type
and function signature the package uses lives here (and only here), so a change
to include/switchyard.h is one edit in this file.

ctypes releases the GIL for every foreign call (CDLL), so blocking calls such as
sy_call_unary do not stall other Python threads, and the library's callbacks
into Python take the GIL back themselves.
"""
import ctypes as C
import numbers
import os

# sy_status numbers (stable, from the header).
SY_OK = 0
SY_NULL_PARAMETER = 1
SY_INVALID_ARGUMENT = 2
SY_INVALID_UTF8 = 3
SY_INVALID_SERVICE_CONFIG = 4
SY_INVALID_TARGET = 5
SY_NOT_FOUND = 6
SY_WRONG_CONTEXT = 7
SY_CLOSED = 100
SY_RUNTIME_GONE = 101
SY_TIMEOUT = 102
SY_IO = 103
SY_NO_SUBCHANNEL = 200
SY_UNAVAILABLE = 201
SY_DROPPED = 202
SY_DEADLINE_EXCEEDED = 203
SY_RPC_FAILED = 204
SY_PANIC = 900

# sy_pick_decision
SY_PICK_COMPLETE = 0
SY_PICK_QUEUE = 1
SY_PICK_FAIL = 2
SY_PICK_DROP = 3

SY_WAIT_FOREVER = 2**64 - 1
SY_PICK_TOKEN_WORDS = 7
SY_MAX_LOAD_METRICS = 16


# Longer than this (about 285,000 years, or inf) is no deadline at all.
MAX_TIMEOUT_MS = float(2**53)


def seconds(timeout):
    """`timeout` as a float number of seconds: a real number (as grpcio
    takes), not a str or a bool."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    return float(timeout)


def unsigned(value, bits, what):
    """`value` as a C unsigned integer of `bits` bits: an int in range (a
    ctypes integer would wrap one outside it without a word)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    value = int(value)
    if not 0 <= value < 1 << bits:
        raise OverflowError(f"{what} must be from 0 to 2**{bits} - 1, not {value}")
    return value


def call_timeout_ms(timeout):
    """A call's timeout in seconds as sy_call_options' (timeout_ms,
    has_timeout): None is no deadline (has_timeout false); 0 or less is a
    deadline already passed (as in grpcio: DEADLINE_EXCEEDED); a positive
    timeout below 1 ms rounds up to 1 ms."""
    if timeout is None:
        return 0, False
    timeout = seconds(timeout)
    if timeout != timeout:
        raise ValueError("timeout must be a number of seconds or None, not NaN")
    if timeout <= 0:
        # A deadline already passed, as grpcio computes it (now + timeout):
        # the call fails DEADLINE_EXCEEDED.
        return 0, True
    ms = timeout * 1000
    if ms >= MAX_TIMEOUT_MS:
        return 0, False  # beyond any deadline (inf included): none
    return max(1, int(round(ms))), True


def pick_timeout_ms(timeout):
    """A pick's wait in seconds as sy_pick's `timeout_ms`: None (or one
    beyond any deadline, inf) waits without limit, 0 does not wait at all
    (sy_pick's wait-free mode)."""
    if timeout is None:
        return SY_WAIT_FOREVER
    timeout = seconds(timeout)
    if timeout != timeout:
        raise ValueError("timeout must be a number of seconds or None, not NaN")
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, not {timeout!r}")
    if timeout == 0:
        return 0
    ms = timeout * 1000
    if ms >= MAX_TIMEOUT_MS:
        return SY_WAIT_FOREVER
    return max(1, int(round(ms)))


# sy_channel_wait_for_state_change takes the same: None forever, 0 no wait.
wait_timeout_ms = pick_timeout_ms

P = C.c_void_p


class Address(C.Structure):
    _fields_ = [("address", C.c_char_p), ("weight", C.c_uint32), ("user_data", P)]


class Metadata(C.Structure):
    _fields_ = [("key", C.c_char_p), ("value", C.c_char_p)]


class CallOptions(C.Structure):
    """sy_call_options: all zero (the default) is gRPC's defaults."""

    _fields_ = [
        ("timeout_ms", C.c_uint64),
        ("has_timeout", C.c_bool),
        ("wait_for_ready", C.c_bool),
        ("has_wait_for_ready", C.c_bool),
        ("metadata", C.POINTER(Metadata)),
        ("metadata_len", C.c_size_t),
        ("request_hash", C.c_uint64),
        ("has_request_hash", C.c_bool),
    ]


def call_options(timeout, wait_for_ready, metadata, metadata_len, request_hash):
    """A CallOptions for `sy_call_unary` / `sy_call_unary_start`; `metadata`
    an array of Metadata (or None), `request_hash` an int or None;
    `wait_for_ready` None lets the service config decide, True or False
    overrides it (gRPC's explicit WaitForReady)."""
    timeout_ms, has_timeout = call_timeout_ms(timeout)
    opts = CallOptions(
        timeout_ms=timeout_ms,
        has_timeout=has_timeout,
        wait_for_ready=bool(wait_for_ready),
        has_wait_for_ready=wait_for_ready is not None,
        metadata_len=metadata_len,
    )
    if metadata is not None:
        opts.metadata = C.cast(metadata, C.POINTER(Metadata))
    if request_hash is not None:
        opts.request_hash = unsigned(request_hash, 64, "request_hash")
        opts.has_request_hash = True
    return opts


class LoadMetric(C.Structure):
    _fields_ = [("name", C.c_char_p), ("value", C.c_double)]


class PickResult(C.Structure):
    _fields_ = [
        ("subchannel_id", C.c_uint64),
        ("address", C.POINTER(C.c_char)),
        ("address_len", C.c_size_t),
        ("user_data", P),
        ("_token", C.c_uint64 * SY_PICK_TOKEN_WORDS),
    ]


class PickArgs(C.Structure):
    _fields_ = [
        ("method", C.POINTER(C.c_char)),
        ("method_len", C.c_size_t),
        ("request_hash", C.c_uint64),
        ("has_request_hash", C.c_bool),
        ("random", C.c_uint64),
    ]


SUBCHANNEL_FN = C.CFUNCTYPE(None, P, C.c_uint64, C.c_char_p, C.c_size_t, P)
HEALTH_FN = C.CFUNCTYPE(None, P, C.c_uint64, C.c_char_p, C.c_size_t, P, C.c_char_p, C.c_size_t)
STATE_FN = C.CFUNCTYPE(None, P, C.c_uint32)
CALL_DONE_FN = C.CFUNCTYPE(None, P, C.c_uint32, C.c_uint32, C.c_char_p, P)
RELEASE_FN = C.CFUNCTYPE(None, P)
PICKER_PICK_FN = C.CFUNCTYPE(C.c_uint32, P, C.POINTER(PickArgs), C.POINTER(C.c_size_t))
PICKER_DONE_FN = C.CFUNCTYPE(None, P, C.c_uint64, C.POINTER(C.c_char), C.c_size_t, C.c_uint64)
PICKER_FREE_FN = C.CFUNCTYPE(None, P)
BUILD_FN = C.CFUNCTYPE(P, P)
UPDATE_ADDRESSES_FN = C.CFUNCTYPE(C.c_bool, P, P, C.POINTER(Address), C.c_size_t)
SUBCHANNEL_STATE_FN = C.CFUNCTYPE(None, P, P, C.c_uint64, C.c_uint32, C.c_char_p)
RESOLVER_ERROR_FN = C.CFUNCTYPE(None, P, P, C.c_char_p)
EXIT_IDLE_FN = C.CFUNCTYPE(None, P, P)
CLOSE_FN = C.CFUNCTYPE(None, P, P)
FREE_BUILDER_FN = C.CFUNCTYPE(None, P)


class HostTransport(C.Structure):
    _fields_ = [
        ("ctx", P),
        ("create", SUBCHANNEL_FN),
        ("connect", SUBCHANNEL_FN),
        ("shutdown", SUBCHANNEL_FN),
        # Optional (left NULL here): the host checks health itself.
        ("health", HEALTH_FN),
    ]


class Picker(C.Structure):
    _fields_ = [
        ("ctx", P),
        ("pick", PICKER_PICK_FN),
        ("done", PICKER_DONE_FN),
        ("free", PICKER_FREE_FN),
        ("subchannels", C.POINTER(C.c_uint64)),
        ("subchannels_len", C.c_size_t),
        ("error_code", C.c_uint32),
        ("error_message", C.c_char_p),
        # Optional (left NULL here): the done callback with code, latency
        # and load (sy_picker_done_info_fn); `done` above is called instead.
        ("done_info", P),
    ]


class BalancerCallbacks(C.Structure):
    _fields_ = [
        ("build", BUILD_FN),
        ("update_addresses", UPDATE_ADDRESSES_FN),
        ("subchannel_state", SUBCHANNEL_STATE_FN),
        ("resolver_error", RESOLVER_ERROR_FN),
        ("exit_idle", EXIT_IDLE_FN),
        ("close", CLOSE_FN),
        ("free_builder", FREE_BUILDER_FN),
    ]


u32, u64, sz, b = C.c_uint32, C.c_uint64, C.c_size_t, C.c_bool
PP = C.POINTER(P)
BYTES = C.POINTER(C.c_uint8)

# name: (restype, argtypes)
SIGNATURES = {
    "sy_version": (C.c_char_p, []),
    "sy_status_str": (C.c_char_p, [u32]),
    "sy_state_str": (C.c_char_p, [u32]),
    "sy_last_error": (sz, [C.c_char_p, sz]),
    "sy_last_status": (u32, []),
    "sy_last_grpc_code": (u32, []),
    "sy_last_call_message": (u32, [BYTES, sz, C.POINTER(sz)]),
    "sy_last_call_details": (u32, [BYTES, sz, C.POINTER(sz)]),
    "sy_last_call_trailer_at": (
        u32,
        [sz, C.c_char_p, sz, C.POINTER(sz), BYTES, sz, C.POINTER(sz)],
    ),
    "sy_last_call_header_at": (
        u32,
        [sz, C.c_char_p, sz, C.POINTER(sz), BYTES, sz, C.POINTER(sz)],
    ),
    "sy_runtime_new": (u32, [PP]),
    "sy_runtime_free": (None, [P]),
    "sy_channel_options_new": (u32, [PP]),
    "sy_channel_options_free": (None, [P]),
    "sy_channel_options_set_insecure": (u32, [P, b]),
    "sy_channel_options_set_tls_roots_pem": (u32, [P, C.c_char_p, sz]),
    "sy_channel_options_set_tls_server_name": (u32, [P, C.c_char_p]),
    "sy_channel_options_set_client_cert": (u32, [P, C.c_char_p, sz, C.c_char_p, sz]),
    "sy_channel_new_with_options": (
        u32,
        [P, C.c_char_p, C.c_char_p, P, C.POINTER(HostTransport), STATE_FN, P, RELEASE_FN, PP],
    ),
    "sy_channel_update_addresses": (u32, [P, C.POINTER(Address), sz]),
    "sy_channel_update_service_config": (u32, [P, C.c_char_p]),
    "sy_channel_report_resolver_error": (u32, [P, C.c_char_p]),
    "sy_channel_report_subconn_state": (u32, [P, u64, u32, C.c_char_p]),
    "sy_channel_connect": (u32, [P]),
    "sy_channel_reset_connect_backoff": (u32, [P]),
    "sy_channel_state": (u32, [P, C.POINTER(u32)]),
    "sy_channel_get_state": (u32, [P, b, C.POINTER(u32)]),
    "sy_channel_wait_for_state_change": (u32, [P, u32, u64, C.POINTER(u32)]),
    "sy_channel_sync": (u32, [P]),
    "sy_channel_snapshot_json": (u32, [P, C.POINTER(C.c_void_p), C.POINTER(sz)]),
    "sy_snapshot_json_free": (None, [C.c_void_p]),
    "sy_channel_close": (u32, [P]),
    "sy_channel_free": (None, [P]),
    "sy_reader_new": (u32, [P, PP]),
    "sy_reader_refresh": (u32, [P]),
    "sy_reader_free": (None, [P]),
    "sy_pick": (u32, [P, C.c_char_p, sz, C.POINTER(u64), u64, b, C.POINTER(PickResult)]),
    "sy_pick_done": (u32, [C.POINTER(PickResult), u32, u64, C.POINTER(LoadMetric), sz]),
    "sy_call_unary": (
        u32,
        [P, C.c_char_p, sz, C.c_char_p, sz, C.POINTER(CallOptions), PP],
    ),
    "sy_call_unary_start": (
        u32,
        [P, C.c_char_p, sz, C.c_char_p, sz, C.POINTER(CallOptions), CALL_DONE_FN, P,
         C.POINTER(u64)],
    ),
    "sy_call_cancel": (u32, [P, u64]),
    "sy_buffer_data": (BYTES, [P]),
    "sy_buffer_len": (sz, [P]),
    "sy_buffer_free": (None, [P]),
    "sy_buffer_header": (u32, [P, C.c_char_p, sz, C.POINTER(BYTES), C.POINTER(sz)]),
    "sy_buffer_trailer": (u32, [P, C.c_char_p, sz, C.POINTER(BYTES), C.POINTER(sz)]),
    "sy_buffer_header_at": (
        u32, [P, sz, C.POINTER(BYTES), C.POINTER(sz), C.POINTER(BYTES), C.POINTER(sz)]
    ),
    "sy_buffer_trailer_at": (
        u32, [P, sz, C.POINTER(BYTES), C.POINTER(sz), C.POINTER(BYTES), C.POINTER(sz)]
    ),
    "sy_balancer_register": (u32, [C.c_char_p, C.POINTER(BalancerCallbacks), P]),
    "sy_balancer_registered": (b, [C.c_char_p]),
    "sy_cc_new_subconn": (u32, [P, sz, C.POINTER(u64)]),
    "sy_cc_connect": (u32, [P, u64]),
    "sy_cc_shutdown_subconn": (u32, [P, u64]),
    "sy_cc_resolve_now": (u32, [P]),
    "sy_cc_update_state": (u32, [P, u32, C.POINTER(Picker)]),
}

LIBRARY_NAME = "libswitchyard.so"


def library_path():
    """SWITCHYARD_LIBRARY if set (a build of your own), else the copy shipped
    inside this package."""
    override = os.environ.get("SWITCHYARD_LIBRARY")
    if override:
        return override
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME)


def _load():
    path = library_path()
    try:
        lib = C.CDLL(path)
    except OSError as e:
        raise ImportError(
            f"switchyard: cannot load the C library {path!r} ({e}); reinstall the "
            "package (pip install ./python builds it with cargo) or set SWITCHYARD_LIBRARY"
        ) from e
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


lib = _load()


def last_error():
    """This thread's last failure detail (sy_last_error), as text."""
    size = 512
    while True:
        buf = C.create_string_buffer(size)
        full = lib.sy_last_error(buf, size)
        if full < size:
            return buf.value.decode("utf-8", "replace")
        size = full + 1


def last_call_message():
    """The server's status message of this thread's last failed call
    (sy_last_call_message), or None."""
    size = C.c_size_t()
    if lib.sy_last_call_message(None, 0, C.byref(size)) != SY_OK:
        return None
    buf = (C.c_uint8 * max(size.value, 1))()
    if lib.sy_last_call_message(buf, size.value, C.byref(size)) != SY_OK:
        return None
    return bytes(buf[: size.value]).decode("utf-8", "replace")


def status_name(status):
    return lib.sy_status_str(status).decode()
