"""Runtime, channels, readers, picks and unary calls."""
import atexit
import base64
import concurrent.futures
import contextlib
import ctypes as C
import itertools
import json
import logging
import queue
import threading
import time
import weakref

from . import _ffi
from ._errors import (
    CallCancelled,
    CallClosed,
    ChannelClosed,
    InvalidArgument,
    RpcError,
    State,
    StatusCode,
    SwitchyardError,
    WrongContext,
    check,
    last_call_headers,
    last_call_trailers,
)
from ._ffi import lib

log = logging.getLogger("switchyard")


# --- Python objects handed to C as opaque pointers --------------------------
# C sees a small integer; the object stays here until the library releases it.
# This keeps Python objects alive exactly as long as C can hand them back.
_handles = {}
# Reentrant: a finalizer (a Pick's or Reader's __del__, whose C call may
# release user data through _pop) can run on a thread inside _put.
_handles_lock = threading.RLock()
_next_handle = itertools.count(1)


def _put(obj):
    with _handles_lock:
        h = next(_next_handle)
        _handles[h] = obj
    return h


def _get(h):
    with _handles_lock:
        return _handles.get(h)


def _pop(h):
    with _handles_lock:
        return _handles.pop(h, None)


_in_callback = threading.local()


# --- user callbacks, off the library's threads ------------------------------
# A future's done-callbacks and state-change callbacks run on one Python
# thread of ours, in order, as grpcio runs them on its own threads: never on
# the library's loop or completion thread, so they may block (make a call,
# wait on another future: futures are settled on the completion thread, so
# such a wait ends) without stalling the channel. They must not wait for
# another callback: that one runs after them, on the same thread.
_dispatch_queue = None
_dispatch_lock = threading.Lock()


def _dispatch(fn, *args):
    global _dispatch_queue
    q = _dispatch_queue
    if q is None:
        with _dispatch_lock:
            if _dispatch_queue is None:
                q = queue.SimpleQueue()
                threading.Thread(target=_dispatch_loop, args=(q,), daemon=True,
                                 name="switchyard-callbacks").start()
                _dispatch_queue = q
            q = _dispatch_queue
    q.put((fn, args))


def _dispatch_loop(q):
    while True:
        fn, args = q.get()
        try:
            fn(*args)
        except BaseException:  # noqa: B902 - one bad callback stops no other
            log.exception("switchyard: exception in a callback (ignored)")


def _guarded(what, default=None):
    """Wraps a Python function called from C: an exception never reaches C (it
    is logged and `default` returned), and the thread is marked as inside a
    library callback so that nothing blocking is started from there."""

    def wrap(fn):
        def call(*args):
            depth = getattr(_in_callback, "depth", 0)
            _in_callback.depth = depth + 1
            try:
                return fn(*args)
            except BaseException:  # noqa: B902 - nothing may unwind into C
                log.exception("switchyard: exception in %s callback (ignored)", what)
                return default
            finally:
                _in_callback.depth = depth

        return call

    return wrap


def in_callback():
    return getattr(_in_callback, "depth", 0) > 0


@_ffi.RELEASE_FN
@_guarded("user data release")
def _release_user_data(ptr):
    _pop(ptr)


# --- owned handles ----------------------------------------------------------
class _Owned:
    """A handle freed by close(): usable with `with`, closed when collected."""

    def close(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# --- runtime ----------------------------------------------------------------
class Runtime(_Owned):
    """One event loop thread; channels share the process's default runtime
    unless given one. Closing it closes every channel on it."""

    def __init__(self):
        ptr = C.c_void_p()
        check(lib.sy_runtime_new(C.byref(ptr)))
        self._ptr = ptr
        self._lock = threading.Lock()

    def close(self):
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr:
            lib.sy_runtime_free(ptr)

    def __del__(self):
        if in_callback():
            # Never free a runtime on its own loop thread.
            threading.Thread(target=self.close, daemon=True).start()
        else:
            self.close()


_default_runtime = None
_default_lock = threading.Lock()
_open_channels = weakref.WeakSet()


def default_runtime():
    global _default_runtime
    with _default_lock:
        if _default_runtime is None:
            _default_runtime = Runtime()
        return _default_runtime


@atexit.register
def _shutdown():
    # Before the interpreter goes away: no Python callback may run after it.
    for ch in list(_open_channels):
        ch.close()
    global _default_runtime
    with _default_lock:
        rt, _default_runtime = _default_runtime, None
    if rt is not None:
        rt.close()


# --- credentials ------------------------------------------------------------
class Insecure:
    """Plaintext HTTP/2 (h2c). Named, never a default."""

    def _apply(self, opts):
        check(lib.sy_channel_options_set_insecure(opts, True))


class Tls:
    """TLS (the default): `roots` PEM (bytes or str) instead of the system's
    trusted roots, `server_name` to verify instead of each address's host,
    `client_cert` + `client_key` (PEM) for mutual TLS."""

    def __init__(self, roots=None, server_name=None, client_cert=None, client_key=None):
        if (client_cert is None) != (client_key is None):
            raise ValueError("client_cert and client_key go together")
        self.roots = _as_bytes(roots, "roots")
        self.server_name = server_name
        self.client_cert = _as_bytes(client_cert, "client_cert")
        self.client_key = _as_bytes(client_key, "client_key")

    def _apply(self, opts):
        if self.roots is not None:
            check(lib.sy_channel_options_set_tls_roots_pem(opts, self.roots, len(self.roots)))
        if self.server_name is not None:
            check(lib.sy_channel_options_set_tls_server_name(opts, _c_text(self.server_name, "server_name")))
        if self.client_cert is not None:
            check(
                lib.sy_channel_options_set_client_cert(
                    opts,
                    self.client_cert,
                    len(self.client_cert),
                    self.client_key,
                    len(self.client_key),
                )
            )


def _as_bytes(v, what):
    if v is None or isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    raise TypeError(f"{what} must be bytes or str, not {type(v).__name__}")


def _c_text(v, what):
    """`v` (str or bytes) as a C string's bytes: a NUL inside would cut it
    short without a word, so it is refused."""
    b = _as_bytes(v, what)
    if b is None:
        raise TypeError(f"{what} must be bytes or str, not None")
    if b"\0" in b:
        raise ValueError(f"{what} must not contain NUL characters")
    return b


def _service_config_json(service_config):
    if service_config is None:
        return None
    if isinstance(service_config, (dict, list)):
        return json.dumps(service_config).encode()
    if isinstance(service_config, (str, bytes)):
        return _c_text(service_config, "service_config")
    raise TypeError("service_config must be a dict, a JSON string or None")


# --- responses --------------------------------------------------------------
def _metadata_value(key, raw):
    """A metadata value as grpcio gives it: "-bin" keys' base64-decoded
    bytes, others text (UTF-8, else Latin-1)."""
    if key.lower().endswith("-bin"):
        return base64.b64decode(raw + b"=" * (-len(raw) % 4))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class Metadata:
    """Response headers or trailers, looked up by key (case-insensitive),
    or listed in order (`items()`, iteration: (key, value) pairs, as
    grpcio's metadata tuples). Values are str ("-bin" keys: bytes,
    base64-decoded)."""

    def __init__(self, response, getter, lister):
        self._response = response
        self._getter = getter
        self._lister = lister

    def items(self):
        """Every (key, value) entry, grouped by key, keys in the order they first came."""
        buf = self._response._buf
        if not buf:
            raise ValueError("response is closed")
        out = []
        for index in itertools.count():
            k, kn = _ffi.BYTES(), C.c_size_t()
            v, vn = _ffi.BYTES(), C.c_size_t()
            if self._lister(buf, index, C.byref(k), C.byref(kn), C.byref(v),
                            C.byref(vn)) != _ffi.SY_OK:
                return tuple(out)
            key = C.string_at(k, kn.value).decode("ascii", "replace")
            out.append((key, _metadata_value(key, C.string_at(v, vn.value))))

    def __iter__(self):
        return iter(self.items())

    def __len__(self):
        return len(self.items())

    def get_all(self, key):
        buf = self._response._buf
        if not buf:
            raise ValueError("response is closed")
        k = _c_text(key, "a metadata key")
        out = []
        for index in itertools.count():
            data, n = _ffi.BYTES(), C.c_size_t()
            if self._getter(buf, k, index, C.byref(data), C.byref(n)) != _ffi.SY_OK:
                return out
            out.append(_metadata_value(key, C.string_at(data, n.value)))

    def get(self, key, default=None):
        values = self.get_all(key)
        return values[0] if values else default

    def __getitem__(self, key):
        values = self.get_all(key)
        if not values:
            raise KeyError(key)
        return values[0]

    def __contains__(self, key):
        return bool(self.get_all(key))


# Response headers the transport uses itself, which grpcio's
# initial_metadata() does not list.
_TRANSPORT_HEADERS = ("content-type", "grpc-accept-encoding")


class Response(_Owned):
    """A unary RPC's result: `message` (bytes), `headers` and `trailers`
    (Metadata, valid until `close()`; the response frees itself when
    collected)."""

    def __init__(self, buf):
        self._buf = buf
        n = lib.sy_buffer_len(buf)
        self.message = C.string_at(lib.sy_buffer_data(buf), n) if n else b""
        self.headers = Metadata(self, lib.sy_buffer_header, lib.sy_buffer_header_at)
        self.trailers = Metadata(self, lib.sy_buffer_trailer, lib.sy_buffer_trailer_at)

    def initial_metadata(self):
        """grpcio's spelling: the response headers as (key, value) pairs,
        without content-type and grpc-accept-encoding (the transport's;
        grpcio lists neither)."""
        return tuple(
            (k, v) for k, v in self.headers.items() if k not in _TRANSPORT_HEADERS
        )

    def trailing_metadata(self):
        """grpcio's spelling: the response trailers as (key, value) pairs."""
        return self.trailers.items()

    def close(self):
        buf, self._buf = self._buf, None
        if buf:
            lib.sy_buffer_free(buf)


    def __repr__(self):
        return f"Response(message={self.message!r})"


def _metadata_array(metadata):
    if not metadata:
        return None, 0, []
    items = metadata.items() if isinstance(metadata, dict) else metadata
    keep = []
    for item in items:
        try:
            key, value = item
        except (TypeError, ValueError):
            raise TypeError(f"metadata entries are (key, value) pairs, not {item!r}") from None
        key = _c_text(key, "metadata key")
        if key != key.lower():
            # grpcio refuses such a key (the C API folds it to lower case,
            # as gRPC-Go's metadata.Pairs does).
            raise InvalidArgument(
                _ffi.SY_INVALID_ARGUMENT,
                f"header key {key.decode(errors='replace')!r} contains illegal characters not in [0-9a-z-_.]",
            )
        if value is None:
            value = b""  # as grpcio sends None
        if key.lower().endswith(b"-bin"):
            # Binary values are bytes (a str raises TypeError, as in
            # grpcio) and travel as base64.
            if isinstance(value, (bytearray, memoryview)):
                value = bytes(value)
            if not isinstance(value, bytes):
                raise TypeError(
                    f"a -bin metadata value must be bytes, not {type(value).__name__}"
                )
            value = base64.b64encode(value).rstrip(b"=")
        else:
            # The library checks it is printable ASCII.
            value = _c_text(value, "metadata value")
        keep.append(_ffi.Metadata(key, value))
    arr = (_ffi.Metadata * len(keep))(*keep)
    return arr, len(keep), keep


# --- picks ------------------------------------------------------------------
class Pick:
    """A subchannel picked for one RPC on a host transport: `subchannel_id`,
    `address` and the address's `user_data`. Finish it with `done(...)` exactly
    once (a `with` block does it: OK, or the RpcError's code, or UNKNOWN)."""

    def __init__(self, result):
        self._result = result
        self._start = time.monotonic_ns()
        self.subchannel_id = result.subchannel_id
        self.address = C.string_at(result.address, result.address_len).decode()
        self.user_data = _get(result.user_data) if result.user_data else None
        self._done = False
        self._done_lock = threading.Lock()

    def done(self, code=StatusCode.OK, latency=None, load=None):
        """Reports the RPC's outcome to the policy: `code` a StatusCode,
        `latency` seconds (default: since the pick), `load` a dict of named
        load metrics. Once; from any thread."""
        with self._done_lock:
            self._done_locked(code, latency, load)

    def _done_locked(self, code, latency, load):
        if self._done:
            raise InvalidArgument(_ffi.SY_INVALID_ARGUMENT, "pick already done")
        latency_ns = (
            time.monotonic_ns() - self._start
            if latency is None
            else _ffi.unsigned(int(latency * 1e9), 64, "latency (in ns)")
        )
        metrics, n = None, 0
        if load:
            metrics = (_ffi.LoadMetric * len(load))(
                *[
                    _ffi.LoadMetric(_c_text(k, "a load metric's name"), float(v))
                    for k, v in load.items()
                ]
            )
            n = len(load)
        check(lib.sy_pick_done(C.byref(self._result), int(code), latency_ns, metrics, n))
        self._done = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self._done:
            code = StatusCode.OK
            if exc is not None:
                code = exc.code if isinstance(exc, RpcError) else StatusCode.UNKNOWN
            self.done(code)

    def __del__(self):
        if not self._done:
            # Forgotten: report it cancelled so what it holds is released.
            try:
                self.done(StatusCode.CANCELLED)
            except Exception:
                pass

    def __repr__(self):
        return f"Pick(subchannel_id={self.subchannel_id}, address={self.address!r})"


class Reader(_Owned):
    """One thread's view of a channel, for picks. Use it from one thread at a
    time (channel.unary keeps one per thread by itself)."""

    def __init__(self, channel):
        ptr = C.c_void_p()
        with channel._use() as ch:
            check(lib.sy_reader_new(ch, C.byref(ptr)))
        self._ptr = ptr
        self._channel = channel

    def pick(self, method=None, request_hash=None, timeout=None, wait_for_ready=False):
        """Picks a subchannel. `timeout` seconds: None waits without limit for
        something ready, 0 does not wait (NoSubchannel if nothing is ready).
        Raises RpcError (UNAVAILABLE, DEADLINE_EXCEEDED, ...) or ChannelClosed."""
        if not self._ptr:
            raise ValueError("reader is closed")
        m = _c_text(method, "method") if method else None
        h = (
            C.byref(C.c_uint64(_ffi.unsigned(request_hash, 64, "request_hash")))
            if request_hash is not None
            else None
        )
        result = _ffi.PickResult()
        check(
            lib.sy_pick(
                self._ptr,
                m,
                len(m) if m else 0,
                h,
                _ffi.pick_timeout_ms(timeout),
                bool(wait_for_ready),
                C.byref(result),
            )
        )
        return Pick(result)

    def close(self):
        ptr, self._ptr = self._ptr, None
        if ptr:
            lib.sy_reader_free(ptr)



# --- calls on the event loop -------------------------------------------------
class Call(concurrent.futures.Future):
    """A unary RPC started with `Channel.unary_future`: a Future whose result
    is the Response, or whose exception is an RpcError (ChannelClosed if the
    channel closed first; CallClosed if it closed during the call). Done
    callbacks run in order on the package's callback thread and may block
    (one added to a finished call runs at once, as grpcio's). Also a
    grpc.Call, as grpcio's futures are: `code()`, `details()`,
    `initial_metadata()` and `trailing_metadata()` wait for the outcome;
    `is_active()`, `time_remaining()` and `add_callback()` do not."""

    def __init__(self, channel, timeout=None):
        super().__init__()
        self._channel = weakref.ref(channel)
        # While the call runs it keeps its channel alive (as grpcio's calls
        # do): a channel nobody else holds is not closed under it.
        self._keep_channel = channel
        self.call_id = None
        # A timeout beyond any deadline (inf included) is none, as the call's.
        no_deadline = timeout is None or _ffi.call_timeout_ms(timeout) == (0, False)
        self._deadline = None if no_deadline else time.monotonic() + float(timeout)

    def running(self):
        """True while the call is in flight (started, not finished), as
        grpcio's. (The Future itself stays PENDING: a running Future could
        not be cancelled.)"""
        return self.call_id is not None and not self.done()

    def is_active(self):
        """grpc.RpcContext's: the call has not ended."""
        return not self.done()

    def time_remaining(self):
        """grpc.RpcContext's: seconds left before the deadline (never below
        0), or None without one."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def add_callback(self, callback):
        """grpc.RpcContext's: `callback()` runs when the call ends. True if
        registered, False if the call had already ended (not run then)."""
        if self.done():
            return False
        self.add_done_callback(lambda _call: callback())
        return True

    def _failure(self):
        """The call's error once it ended (None if it succeeded)."""
        try:
            return self.exception()
        except RpcError as cancelled:
            return cancelled

    def code(self):
        """grpc.Call's: the call's StatusCode (OK on success); waits for it."""
        e = self._failure()
        if e is None:
            return StatusCode.OK
        return e.code if isinstance(e, RpcError) else StatusCode.UNKNOWN

    def details(self):
        """grpc.Call's: the status message (None on success); waits for it."""
        e = self._failure()
        if e is None:
            return None
        return e.details() if isinstance(e, RpcError) else str(e)

    def initial_metadata(self):
        """grpc.Call's: the response headers; waits for the call to end."""
        e = self._failure()
        if e is None:
            return self.result().initial_metadata()
        return e.initial_metadata() if isinstance(e, RpcError) else ()

    def trailing_metadata(self):
        """grpc.Call's: the trailers; waits for the call to end."""
        e = self._failure()
        if e is None:
            return self.result().trailing_metadata()
        return e.trailing_metadata() if isinstance(e, RpcError) else ()

    def cancel(self):
        """Ends the call with CANCELLED if it is still running: returns True
        then (and `cancelled()` is True; `result()` raises CallCancelled, an
        RpcError and a concurrent.futures.CancelledError), False if it
        already finished."""
        ch = self._channel()
        # The future first: the completion that the cancel brings (on the
        # completion thread, at once) then finds it cancelled and leaves it.
        if ch is None or self.call_id is None or self.done() or not super().cancel():
            return False
        try:
            with ch._use() as ptr:
                lib.sy_call_cancel(ptr, self.call_id)
        except ChannelClosed:
            pass  # closing: the call ends anyway
        return True

    def add_done_callback(self, fn):
        """As Future's: on a finished call `fn` runs at once, on this thread
        (grpcio's); else, when it ends, on the package's callback thread (in
        order with the other callbacks), where it may block: a call, a wait
        on another future."""
        if self.done():
            fn(self)
            return
        super().add_done_callback(lambda f: _dispatch(fn, f))

    def result(self, timeout=None):
        return _cancelled_as_rpc_error(super().result, timeout)

    def exception(self, timeout=None):
        return _cancelled_as_rpc_error(super().exception, timeout)

    def traceback(self, timeout=None):
        """grpcio's: the traceback of the call's failure, None if it
        succeeded (waits as `exception` does)."""
        e = self.exception(timeout)
        if e is None:
            return None
        if e.__traceback__ is None:
            try:
                raise e
            except type(e):
                pass
        return e.__traceback__


def _cancelled_as_rpc_error(get, timeout):
    """`get(timeout)`, a cancelled future's CancelledError raised as
    CallCancelled (an RpcError CANCELLED, and a CancelledError)."""
    try:
        return get(timeout)
    except concurrent.futures.CancelledError as e:
        if isinstance(e, RpcError):
            raise
        raise CallCancelled() from None


@_ffi.CALL_DONE_FN
@_guarded("call completion")
def _call_done(ctx, status, grpc_code, message, response):
    call = _pop(ctx)
    if call is None:  # cannot happen; never leak the buffer
        if response:
            lib.sy_buffer_free(response)
        return
    call._keep_channel = None
    if call.cancelled():  # its caller cancelled it: the outcome is that
        if response:
            lib.sy_buffer_free(response)
        return
    try:
        text = message.decode("utf-8", "replace") if message else ""
        if status == _ffi.SY_OK:
            outcome = Response(response)
        elif status == _ffi.SY_RPC_FAILED:
            outcome = RpcError(grpc_code, text, last_call_trailers(), last_call_headers())
        elif status == _ffi.SY_CLOSED:
            # Ended by its channel's close: CANCELLED, as grpcio ends them.
            outcome = CallClosed(StatusCode.CANCELLED, text or "channel closed", last_call_trailers())
        elif status == _ffi.SY_RUNTIME_GONE:
            outcome = ChannelClosed(status, text or "channel is closed")
        else:
            outcome = SwitchyardError(status, text)
    except BaseException as e:  # noqa: B902 - the future must still end
        outcome = e
    # Settled here, so that waiters wake at once; its done-callbacks run on
    # the package's callback thread (Call.add_done_callback).
    _settle(call, outcome)


def _settle(call, outcome):
    try:
        if isinstance(outcome, BaseException):
            call.set_exception(outcome)
        else:
            call.set_result(outcome)
    except concurrent.futures.InvalidStateError:
        # Cancelled meanwhile: a response nobody will read is freed now.
        if isinstance(outcome, Response):
            outcome.close()


# --- host transports --------------------------------------------------------
class HostTransport:
    """Subclass for a channel whose connections the host owns. The library
    calls these on its loop thread; they must not block: start the work and
    report later with `channel.report_state(subchannel_id, State.READY)` (or
    TRANSIENT_FAILURE, IDLE) from any thread."""

    def create(self, subchannel_id, address, user_data):
        """A subchannel now exists (IDLE)."""

    def connect(self, subchannel_id, address, user_data):
        raise NotImplementedError

    def shutdown(self, subchannel_id, address, user_data):
        raise NotImplementedError


# --- channels ---------------------------------------------------------------
class Channel(_Owned):
    """A load-balanced channel.

    `target`: "ipv4:127.0.0.1:50051,127.0.0.1:50052", "dns:///host:port",
    "host:port", or "" when addresses come from `update_addresses`.
    `service_config`: a dict or JSON text (`{"loadBalancingConfig":
    [{"round_robin": {}}]}`), None for pick_first. `credentials`: Tls() (the
    default) or Insecure(). `host_transport`: a HostTransport when the host
    owns the connections (then pick with `reader().pick()`; no credentials).
    `on_state_change(State)`: called in order on the package's callback
    thread (not the library's loop), so it may block.
    """

    def __init__(
        self,
        target,
        service_config=None,
        credentials=None,
        host_transport=None,
        on_state_change=None,
        runtime=None,
    ):
        self._ptr = None
        target = _c_text(target, "target")
        self._runtime = runtime or default_runtime()
        if not self._runtime._ptr:
            raise ChannelClosed(_ffi.SY_RUNTIME_GONE, "the runtime is closed")
        self._local = threading.local()
        # Calls in flight on the handle: close() frees it only after they end.
        self._cv = threading.Condition()
        self._busy = 0
        self._closing = False
        host = None
        if host_transport is not None:
            if credentials is not None:
                raise ValueError(
                    "credentials are for the library's own connections; "
                    "a host transport brings its own"
                )
            host = self._host_callbacks(host_transport)
        elif credentials is None:
            credentials = Tls()
        elif not isinstance(credentials, (Tls, Insecure)):
            raise TypeError("credentials must be switchyard.Tls(...) or switchyard.Insecure()")
        self._on_state = (
            _ffi.STATE_FN(
                _guarded("state change")(
                    lambda ctx, s: _dispatch(on_state_change, State(s))
                )
            )
            if on_state_change
            else _ffi.STATE_FN()
        )
        opts = C.c_void_p()
        check(lib.sy_channel_options_new(C.byref(opts)))
        try:
            if credentials is not None:
                credentials._apply(opts)
            ptr = C.c_void_p()
            check(
                lib.sy_channel_new_with_options(
                    self._runtime._ptr,
                    target,
                    _service_config_json(service_config),
                    opts if host is None else None,
                    C.byref(host) if host is not None else None,
                    self._on_state,
                    None,
                    _release_user_data,
                    C.byref(ptr),
                )
            )
        finally:
            lib.sy_channel_options_free(opts)
        self._ptr = ptr
        _open_channels.add(self)

    def _host_callbacks(self, transport):
        channel = weakref.ref(self)  # no cycle: the channel owns the callbacks

        def adapt(method, what):
            @_guarded(f"host transport {what}")
            def cb(ctx, sc_id, address, address_len, user_data):
                data = _get(user_data) if user_data else None
                try:
                    method(sc_id, address[:address_len].decode(), data)
                except Exception as e:
                    if what != "connect":
                        raise
                    # A connect that raised will never report: say it failed,
                    # so the policy moves on (and backs off) instead of waiting.
                    log.exception("switchyard: host transport connect raised; "
                                  "reporting TRANSIENT_FAILURE")
                    ch = channel()
                    if ch is not None:
                        ch.report_state(sc_id, State.TRANSIENT_FAILURE,
                                        f"host transport connect raised {e!r}")

            return _ffi.SUBCHANNEL_FN(cb)

        # Kept on the channel: C calls them until sy_channel_free returns.
        self._host = _ffi.HostTransport(
            None,
            adapt(transport.create, "create"),
            adapt(transport.connect, "connect"),
            adapt(transport.shutdown, "shutdown"),
        )
        return self._host

    @contextlib.contextmanager
    def _use(self):
        """The live handle, for one call: sy_channel_free waits for it."""
        with self._cv:
            if not self._ptr or self._closing:
                raise ChannelClosed(_ffi.SY_CLOSED, "channel is closed")
            self._busy += 1
            ptr = self._ptr
        try:
            yield ptr
        finally:
            with self._cv:
                self._busy -= 1
                if self._busy == 0:
                    self._cv.notify_all()

    # -- calls --
    def _thread_reader(self):
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = Reader(self)
        return reader

    def unary(self, method, request=b"", timeout=None, metadata=None, wait_for_ready=None,
              request_hash=None):
        """One blocking unary RPC on the library's own connections. `request`
        bytes; `timeout` seconds (None: no deadline); `metadata` a dict or
        (key, value) pairs; `wait_for_ready` True or False overrides the
        service config's waitForReady (None: the config decides, else fail
        fast); `request_hash` an int below 2**64 for ring_hash (under a
        `requestHashHeader` it serves only a call without metadata: one with
        metadata hashes that header, at random when it lacks it, as gRPC
        does). Returns a Response; raises RpcError with the gRPC
        code (the server's, or DEADLINE_EXCEEDED, UNAVAILABLE, ...)."""
        if in_callback():
            raise WrongContext(detail="switchyard: no blocking call inside a library callback")
        if not isinstance(request, (bytes, bytearray, memoryview)):
            raise TypeError("request must be bytes")
        request = bytes(request)
        reader = self._thread_reader()
        md, md_len, _keep = _metadata_array(metadata)
        opts = _ffi.call_options(timeout, wait_for_ready, md, md_len, request_hash)
        method = _c_text(method, "method")
        out = C.c_void_p()
        # Counted as in use: close() fails it, then waits for it to return.
        with self._use():
            was_open = bool(self._runtime._ptr)
            status = lib.sy_call_unary(
                reader._ptr,
                method,
                len(method),
                request,
                len(request),
                C.byref(opts),
                C.byref(out),
            )
        if status == _ffi.SY_CLOSED and was_open:
            # Closed while the call ran: CANCELLED, as grpcio ends it (a
            # call made on a closed channel is a plain ChannelClosed).
            raise CallClosed(StatusCode.CANCELLED, "channel closed")
        check(status)
        return Response(out)

    def unary_future(self, method, request=b"", timeout=None, metadata=None,
                     wait_for_ready=None, request_hash=None):
        """Starts a unary RPC on the event loop (no thread waits for it) and
        returns a Call, a concurrent.futures.Future of its Response;
        `call.cancel()` ends it with CANCELLED. Arguments as `unary`."""
        if not isinstance(request, (bytes, bytearray, memoryview)):
            raise TypeError("request must be bytes")
        request = bytes(request)
        md, md_len, _keep = _metadata_array(metadata)
        opts = _ffi.call_options(timeout, wait_for_ready, md, md_len, request_hash)
        method = _c_text(method, "method")
        call = Call(self, timeout)
        handle = _put(call)
        call_id = C.c_uint64()
        try:
            with self._use() as ptr:
                check(
                    lib.sy_call_unary_start(
                        ptr,
                        method,
                        len(method),
                        request,
                        len(request),
                        C.byref(opts),
                        _call_done,
                        handle,
                        C.byref(call_id),
                    )
                )
        except BaseException:
            _pop(handle)  # not accepted: the callback never runs
            raise
        call.call_id = call_id.value
        return call

    def reader(self):
        """A new Reader (for picks on a host transport channel)."""
        return Reader(self)

    def snapshot(self):
        """What the channel is doing now, as gRPC's channelz shows it: a dict
        with `target`, `policy`, `state` ("READY", ...), the channel's own
        `calls_started`, `calls_succeeded`, `calls_failed`, `calls_in_flight`
        and `last_call_unix_ms` (each call once), and `subchannels`, each
        with `id`, `address`, `state`, `last_error` and the same counts
        (per attempt). Calls are the library's own on its connections;
        on a host-transport channel, the host's picks with the outcomes their
        done() reported."""
        out = C.c_void_p()
        with self._use() as ptr:
            check(lib.sy_channel_snapshot_json(ptr, C.byref(out), None))
        try:
            return json.loads(C.string_at(out).decode())
        finally:
            lib.sy_snapshot_json_free(out)

    # -- the host as resolver and transport --
    def update_addresses(self, addresses):
        """Replaces the address list: each an "ip:port" string, or a tuple
        (address, user_data) or (address, user_data, weight). user_data (any
        Python object) comes back with picks and transport callbacks."""
        entries, handles = [], []
        try:
            for a in addresses:
                if isinstance(a, (str, bytes)):
                    a = (a,)
                a = tuple(a)
                if not 1 <= len(a) <= 3:
                    raise ValueError(f"an address is a str or (address, user_data[, weight]), not {a!r}")
                address, user_data, weight = a + (None, 0)[len(a) - 1:]
                h = _put(user_data) if user_data is not None else 0
                if h:
                    handles.append(h)
                weight = _ffi.unsigned(weight, 32, "an address's weight")
                entries.append(_ffi.Address(_c_text(address, "an address"), weight, h or None))
        except BaseException:
            for h in handles:
                _pop(h)
            raise
        arr = (_ffi.Address * len(entries))(*entries)
        try:
            with self._use() as ptr:
                status = lib.sy_channel_update_addresses(ptr, arr, len(entries))
        except ChannelClosed:
            for h in handles:
                _pop(h)
            raise
        if status in (_ffi.SY_NULL_PARAMETER, _ffi.SY_INVALID_ARGUMENT, _ffi.SY_INVALID_UTF8):
            for h in handles:  # nothing was taken
                _pop(h)
        check(status)

    def report_state(self, subchannel_id, state, message=None):
        """Host transport: what the connection for `subchannel_id` did."""
        with self._use() as ptr:
            check(
                lib.sy_channel_report_subconn_state(
                    ptr,
                    _ffi.unsigned(subchannel_id, 64, "subchannel_id"),
                    int(state),
                    _c_text(message, "message") if message else None,
                )
            )

    def report_resolver_error(self, message):
        with self._use() as ptr:
            check(lib.sy_channel_report_resolver_error(ptr, _c_text(message, "message")))

    def update_service_config(self, service_config):
        config = _service_config_json(service_config) or b""
        with self._use() as ptr:
            check(lib.sy_channel_update_service_config(ptr, config))

    # -- state --
    def state(self):
        s = C.c_uint32()
        with self._use() as ptr:
            check(lib.sy_channel_state(ptr, C.byref(s)))
        return State(s.value)

    def get_state(self, try_to_connect=False):
        """gRPC's GetState: the State now; with `try_to_connect` an IDLE
        channel starts connecting. SHUTDOWN once closed."""
        s = C.c_uint32()
        with self._cv:
            if not self._ptr or self._closing:
                return State.SHUTDOWN
        try:
            with self._use() as ptr:
                check(lib.sy_channel_get_state(ptr, bool(try_to_connect), C.byref(s)))
        except ChannelClosed:
            return State.SHUTDOWN
        return State(s.value)

    def wait_for_state_change(self, from_state, timeout=None):
        """Blocks until the state differs from `from_state` (returns the new
        State) or `timeout` seconds pass (returns None)."""
        s = C.c_uint32()
        ms = _ffi.wait_timeout_ms(timeout)
        with self._use() as ptr:
            status = lib.sy_channel_wait_for_state_change(ptr, int(from_state), ms, C.byref(s))
        if status == _ffi.SY_TIMEOUT:
            return None
        check(status)
        return State(s.value)

    def connect(self):
        with self._use() as ptr:
            check(lib.sy_channel_connect(ptr))

    def reset_connect_backoff(self):
        """gRPC's ResetConnectBackoff: subchannels waiting out a connection
        backoff try again now, and every backoff starts over."""
        with self._use() as ptr:
            check(lib.sy_channel_reset_connect_backoff(ptr))

    def sync(self):
        """Waits until the loop has applied everything sent so far (tests)."""
        with self._use() as ptr:
            check(lib.sy_channel_sync(ptr))

    def close(self):
        """Closes and frees the channel: calls in flight fail, readers' picks
        raise ChannelClosed. Idempotent; never from a library callback."""
        if in_callback():
            raise WrongContext(
                detail="switchyard: a channel cannot be closed inside a library callback")
        with self._cv:
            ptr = self._ptr
            if not ptr or self._closing:
                return
            self._closing = True
        # Wakes every wait on the channel; calls from here on get SY_CLOSED.
        lib.sy_channel_close(ptr)
        with self._cv:
            while self._busy:  # each returns promptly now that it is closed
                self._cv.wait()
            self._ptr = None
        _open_channels.discard(self)
        lib.sy_channel_free(ptr)

    def __del__(self):
        if getattr(self, "_ptr", None):
            if in_callback():
                # Freeing waits for the loop: never from a library callback.
                threading.Thread(target=self.close, daemon=True).start()
            else:
                self.close()
