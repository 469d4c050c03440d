"""Load-balancing policies written in Python, registered with
sy_balancer_register.

Every callback C makes is one module-level ctypes function (kept alive for the
life of the process) that finds its Python object by the integer handle C
carries as `ctx` / `balancer`; exceptions are caught there, logged, and turned
into a safe answer (a failed pick, a rejected address list)."""
import ctypes as C
import threading

from . import _ffi
from ._core import _c_text, _get, _guarded, _pop, _put
from ._errors import State, StatusCode, check
from ._ffi import lib


class Address:
    """One address of the list a policy receives."""

    __slots__ = ("address", "weight", "user_data")

    def __init__(self, address, weight, user_data):
        self.address = address
        self.weight = weight
        self.user_data = user_data

    def __repr__(self):
        return f"Address({self.address!r}, weight={self.weight})"


class PickInfo:
    """What a picker learns about one RPC."""

    __slots__ = ("method", "request_hash", "random")

    def __init__(self, method, request_hash, random):
        self.method = method
        self.request_hash = request_hash
        self.random = random


class Picker:
    """Published with `cc.update_state(state, picker)`; RPC threads call
    `pick` concurrently, so it should only read the picker's own data.

    `pick(info)` returns an index into `subchannels`, or Picker.QUEUE (wait
    for the next picker), Picker.FAIL (fail the RPC with `error_code` /
    `error_message` unless wait-for-ready), Picker.DROP (fail it even then).
    An exception, or an index out of range, fails the pick (logged).
    `done(subchannel_id, error, latency_ns)` (optional) hears each outcome.
    """

    QUEUE = "queue"
    FAIL = "fail"
    DROP = "drop"

    def __init__(self, subchannels=(), error_code=StatusCode.UNAVAILABLE, error_message=None):
        self.subchannels = list(subchannels)
        self.error_code = error_code
        self.error_message = error_message

    def pick(self, info):
        return Picker.QUEUE

    def done(self, subchannel_id, error, latency_ns):
        pass


class PolicyContext:
    """The channel as a policy sees it (sy_cc): usable only inside the
    policy's own callbacks, on the loop thread (ChannelClosed / SwitchyardError
    otherwise)."""

    def __init__(self, ptr):
        self._ptr = ptr

    def new_subchannel(self, address_index):
        """A subchannel (IDLE) for the address at `address_index` of the
        latest list; returns its id."""
        out = C.c_uint64()
        check(lib.sy_cc_new_subconn(self._ptr, address_index, C.byref(out)))
        return out.value

    def connect(self, subchannel_id):
        check(lib.sy_cc_connect(self._ptr, subchannel_id))

    def shutdown_subchannel(self, subchannel_id):
        check(lib.sy_cc_shutdown_subconn(self._ptr, subchannel_id))

    def resolve_now(self):
        check(lib.sy_cc_resolve_now(self._ptr))

    def update_state(self, state, picker):
        """Publishes the policy's state and a new Picker."""
        if not isinstance(picker, Picker):
            raise TypeError("picker must be a switchyard.Picker")
        ids = (C.c_uint64 * len(picker.subchannels))(*picker.subchannels)
        msg = _c_text(picker.error_message, "error_message") if picker.error_message else None
        h = _put(picker)
        c_picker = _ffi.Picker(
            h, _pick, _done, _free, ids, len(picker.subchannels), int(picker.error_code), msg
        )
        status = lib.sy_cc_update_state(self._ptr, int(state), C.byref(c_picker))
        if status != _ffi.SY_OK:
            _pop(h)  # not taken
        check(status)


class Policy:
    """Subclass for a policy; one instance per channel (made by the factory
    given to `register_policy`). Every method runs on the loop thread, one at
    a time, and must not block."""

    def update_addresses(self, cc, addresses):
        """The resolved Address list. Return False to reject it."""
        raise NotImplementedError

    def subchannel_state(self, cc, subchannel_id, state, error):
        """A subchannel of this policy changed State (error: str or None)."""
        raise NotImplementedError

    def resolver_error(self, cc, error):
        pass

    def exit_idle(self, cc):
        pass

    def close(self, cc):
        pass


class _Balancer:
    __slots__ = ("policy", "cc")

    def __init__(self, policy):
        self.policy = policy
        self.cc = None

    def ctx(self, cc_ptr):
        if self.cc is None or self.cc._ptr != cc_ptr:
            self.cc = PolicyContext(cc_ptr)
        return self.cc


# --- the C side: module-level callbacks, alive for the whole process --------
@_ffi.PICKER_PICK_FN
@_guarded("picker pick", _ffi.SY_PICK_FAIL)
def _pick(ctx, args, out_index):
    picker = _get(ctx)
    a = args.contents
    method = C.string_at(a.method, a.method_len).decode() if a.method_len else ""
    info = PickInfo(method, a.request_hash if a.has_request_hash else None, a.random)
    decision = picker.pick(info)
    if decision == Picker.QUEUE:
        return _ffi.SY_PICK_QUEUE
    if decision == Picker.FAIL:
        return _ffi.SY_PICK_FAIL
    if decision == Picker.DROP:
        return _ffi.SY_PICK_DROP
    if isinstance(decision, int) and not isinstance(decision, bool):
        if 0 <= decision < len(picker.subchannels):
            out_index[0] = decision
            return _ffi.SY_PICK_COMPLETE
    raise ValueError(
        f"picker returned {decision!r}: not an index below {len(picker.subchannels)} "
        "nor Picker.QUEUE / FAIL / DROP"
    )


@_ffi.PICKER_DONE_FN
@_guarded("picker done")
def _done(ctx, subchannel_id, error, error_len, latency_ns):
    picker = _get(ctx)
    err = C.string_at(error, error_len).decode("utf-8", "replace") if error else None
    picker.done(subchannel_id, err, latency_ns)


@_ffi.PICKER_FREE_FN
@_guarded("picker free")
def _free(ctx):
    _pop(ctx)


@_ffi.BUILD_FN
@_guarded("policy build")
def _build(builder_ctx):
    factory = _get(builder_ctx)
    return _put(_Balancer(factory()))


@_ffi.UPDATE_ADDRESSES_FN
@_guarded("policy update_addresses", False)
def _update_addresses(balancer, cc, addrs, n):
    b = _get(balancer)
    if b is None:  # build failed
        return False
    addresses = [
        Address(
            addrs[i].address.decode(),
            addrs[i].weight,
            _get(addrs[i].user_data) if addrs[i].user_data else None,
        )
        for i in range(n)
    ]
    return bool(b.policy.update_addresses(b.ctx(cc), addresses))


@_ffi.SUBCHANNEL_STATE_FN
@_guarded("policy subchannel_state")
def _subchannel_state(balancer, cc, sc_id, state, error):
    b = _get(balancer)
    if b is not None:
        b.policy.subchannel_state(b.ctx(cc), sc_id, State(state), error.decode() if error else None)


@_ffi.RESOLVER_ERROR_FN
@_guarded("policy resolver_error")
def _resolver_error(balancer, cc, error):
    b = _get(balancer)
    if b is not None:
        b.policy.resolver_error(b.ctx(cc), error.decode() if error else "")


@_ffi.EXIT_IDLE_FN
@_guarded("policy exit_idle")
def _exit_idle(balancer, cc):
    b = _get(balancer)
    if b is not None:
        b.policy.exit_idle(b.ctx(cc))


@_ffi.CLOSE_FN
@_guarded("policy close")
def _close(balancer, cc):
    b = _pop(balancer)
    if b is not None:
        b.policy.close(b.ctx(cc))


@_ffi.FREE_BUILDER_FN
@_guarded("policy free_builder")
def _free_builder(builder_ctx):
    _pop(builder_ctx)


_CALLBACKS = _ffi.BalancerCallbacks(
    _build, _update_addresses, _subchannel_state, _resolver_error, _exit_idle, _close,
    _free_builder,
)
_register_lock = threading.Lock()


def register_policy(name, factory):
    """Registers a policy under `name`, matched exactly as gRPC matches
    policy names (replaces an earlier one of that name, built-ins
    included). `factory()` returns a new Policy for each channel whose
    service config names it, spelled as registered:
    {"loadBalancingConfig": [{name: {}}]}."""
    if not callable(factory):
        raise TypeError("factory must be callable (a Policy subclass or a function)")
    name = _c_text(name, "a policy name")
    h = _put(factory)
    with _register_lock:
        status = lib.sy_balancer_register(name, C.byref(_CALLBACKS), h)
    if status != _ffi.SY_OK:
        _pop(h)
    check(status)


def policy_registered(name):
    return bool(lib.sy_balancer_registered(_c_text(name, "a policy name")))
