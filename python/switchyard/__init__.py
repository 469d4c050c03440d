"""switchyard: client-side load balancing for gRPC-style RPC stacks, over the
switchyard C library.

    import switchyard as sy
    with sy.Channel("ipv4:127.0.0.1:50051,127.0.0.1:50052",
                    {"loadBalancingConfig": [{"round_robin": {}}]},
                    credentials=sy.Insecure()) as ch:
        resp = ch.unary("/echo.Echo/Unary", b"hi", timeout=5)
        print(resp.message, resp.headers.get("x-backend-port"))
"""
from ._core import (
    Call,
    Channel,
    HostTransport,
    Insecure,
    Metadata,
    Pick,
    Reader,
    Response,
    Runtime,
    Tls,
)
from ._errors import (
    CallCancelled,
    CallClosed,
    ChannelClosed,
    InvalidArgument,
    NoSubchannel,
    RpcError,
    State,
    StatusCode,
    SwitchyardError,
    WrongContext,
)
from ._ffi import lib as _lib
from ._policy import (
    Address,
    Picker,
    PickInfo,
    Policy,
    PolicyContext,
    policy_registered,
    register_policy,
)

__version__ = "0.1.0"


def library_version():
    """The loaded C library's version, e.g. "0.1.0"."""
    return _lib.sy_version().decode()


__all__ = [
    "Address",
    "Call",
    "CallCancelled",
    "CallClosed",
    "Channel",
    "ChannelClosed",
    "HostTransport",
    "Insecure",
    "InvalidArgument",
    "Metadata",
    "NoSubchannel",
    "Pick",
    "PickInfo",
    "Picker",
    "Policy",
    "PolicyContext",
    "Reader",
    "Response",
    "RpcError",
    "Runtime",
    "State",
    "StatusCode",
    "SwitchyardError",
    "Tls",
    "WrongContext",
    "library_version",
    "policy_registered",
    "register_policy",
]
