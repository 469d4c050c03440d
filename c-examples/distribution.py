#!/usr/bin/env python3
"""A second language over the C ABI: Python with ctypes (standard library only).

Loads the shared library, builds a round_robin channel whose addresses the
host supplies, registers no policy, reports the subchannels READY through the
external connector, picks, and prints the distribution. Exits non-zero if the
distribution is not even.

    python3 c-examples/distribution.py [path/to/libswitchyard.so]
"""
import ctypes as C
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LIB = os.path.join(HERE, "..", "target", "debug", "libswitchyard.so")

SY_OK, SY_NO_SUBCHANNEL = 0, 200
SY_STATE_READY = 2


class Address(C.Structure):
    _fields_ = [("address", C.c_char_p), ("weight", C.c_uint32), ("user_data", C.c_void_p)]


# The header's SY_PICK_TOKEN_WORDS: sy_pick writes the whole struct, so a
# smaller one here is overwritten past its end (checked against the header
# in main()).
SY_PICK_TOKEN_WORDS = 7


class PickResult(C.Structure):
    _fields_ = [
        ("subchannel_id", C.c_uint64),
        ("address", C.POINTER(C.c_char)),
        ("address_len", C.c_size_t),
        ("user_data", C.c_void_p),
        ("_token", C.c_uint64 * SY_PICK_TOKEN_WORDS),
    ]


SUBCHANNEL_FN = C.CFUNCTYPE(None, C.c_void_p, C.c_uint64, C.c_char_p, C.c_size_t, C.c_void_p)
HEALTH_FN = C.CFUNCTYPE(None, C.c_void_p, C.c_uint64, C.c_char_p, C.c_size_t, C.c_void_p,
                        C.c_char_p, C.c_size_t)


class HostTransport(C.Structure):
    _fields_ = [
        ("ctx", C.c_void_p),
        ("create", SUBCHANNEL_FN),
        ("connect", SUBCHANNEL_FN),
        ("shutdown", SUBCHANNEL_FN),
        # Optional (NULL here): the library reads it, so it must be there.
        ("health", HEALTH_FN),
    ]


def check_layout():
    """The structs above against include/switchyard.h: a C struct copied by
    hand into another language is where an ABI change goes unnoticed."""
    import re
    with open(os.path.join(HERE, "..", "include", "switchyard.h")) as f:
        header = f.read()
    words = int(re.search(r"#define SY_PICK_TOKEN_WORDS (\d+)", header).group(1))
    assert words == SY_PICK_TOKEN_WORDS, (words, SY_PICK_TOKEN_WORDS)
    body = re.search(r"typedef struct sy_host_transport \{(.*?)\} sy_host_transport;",
                     header, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    fields = re.findall(r"(\w+);", body)
    assert fields == [name for name, _ in HostTransport._fields_], fields


def load(path):
    lib = C.CDLL(path)
    P = C.c_void_p
    lib.sy_version.restype = C.c_char_p
    lib.sy_status_str.restype = C.c_char_p
    lib.sy_status_str.argtypes = [C.c_uint32]
    lib.sy_last_error.restype = C.c_size_t
    lib.sy_last_error.argtypes = [C.c_char_p, C.c_size_t]
    lib.sy_runtime_new.argtypes = [C.POINTER(P)]
    lib.sy_runtime_free.argtypes = [P]
    lib.sy_channel_new.argtypes = [P, C.c_char_p, C.c_char_p, C.POINTER(HostTransport),
                                   P, P, P, C.POINTER(P)]
    lib.sy_channel_update_addresses.argtypes = [P, C.POINTER(Address), C.c_size_t]
    lib.sy_channel_report_subconn_state.argtypes = [P, C.c_uint64, C.c_uint32, C.c_char_p]
    lib.sy_channel_sync.argtypes = [P]
    lib.sy_channel_free.argtypes = [P]
    lib.sy_reader_new.argtypes = [P, C.POINTER(P)]
    lib.sy_reader_free.argtypes = [P]
    lib.sy_pick.argtypes = [P, C.c_char_p, C.c_size_t, C.POINTER(C.c_uint64), C.c_uint64,
                            C.c_bool, C.POINTER(PickResult)]
    lib.sy_pick_done.argtypes = [C.POINTER(PickResult), C.c_uint32, C.c_uint64, P, C.c_size_t]
    for f in ("sy_runtime_new", "sy_channel_new", "sy_channel_update_addresses",
              "sy_channel_report_subconn_state", "sy_channel_sync", "sy_reader_new",
              "sy_pick", "sy_pick_done"):
        getattr(lib, f).restype = C.c_uint32
    return lib


def main():
    lib = load(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_LIB)

    def ok(status, what):
        if status != SY_OK:
            buf = C.create_string_buffer(512)
            lib.sy_last_error(buf, len(buf))
            sys.exit(f"{what}: {lib.sy_status_str(status).decode()}: {buf.value.decode()}")

    print("switchyard", lib.sy_version().decode())
    check_layout()

    # The host stack: the loop thread asks it to connect; it answers later.
    connects = {}
    lock = threading.Lock()

    def on_connect(ctx, sc_id, address, address_len, user_data):
        with lock:
            connects[address[:address_len].decode()] = sc_id

    def on_shutdown(ctx, sc_id, address, address_len, user_data):
        pass

    # Keep the callbacks referenced for as long as the channel lives.
    host = HostTransport(None, SUBCHANNEL_FN(), SUBCHANNEL_FN(on_connect),
                         SUBCHANNEL_FN(on_shutdown))

    rt, ch, reader = C.c_void_p(), C.c_void_p(), C.c_void_p()
    ok(lib.sy_runtime_new(C.byref(rt)), "sy_runtime_new")
    config = b'{"loadBalancingConfig":[{"round_robin":{}}]}'
    ok(lib.sy_channel_new(rt, b"", config, C.byref(host), None, None, None, C.byref(ch)),
       "sy_channel_new")

    names = [f"127.5.0.{i}:443".encode() for i in range(1, 5)]
    addrs = (Address * len(names))(*[Address(n, 0, None) for n in names])
    ok(lib.sy_channel_update_addresses(ch, addrs, len(names)), "update_addresses")
    ok(lib.sy_channel_sync(ch), "sync")
    with lock:
        ids = dict(connects)
    assert len(ids) == len(names), ids
    for sc_id in ids.values():
        ok(lib.sy_channel_report_subconn_state(ch, sc_id, SY_STATE_READY, None), "report")
    ok(lib.sy_channel_sync(ch), "sync")

    ok(lib.sy_reader_new(ch, C.byref(reader)), "sy_reader_new")
    counts = {}
    result = PickResult()
    picks = 4000
    for _ in range(picks):
        ok(lib.sy_pick(reader, None, 0, None, 0, False, C.byref(result)), "sy_pick")
        addr = C.string_at(result.address, result.address_len).decode()
        counts[addr] = counts.get(addr, 0) + 1
        ok(lib.sy_pick_done(C.byref(result), 0, 0, None, 0), "sy_pick_done")

    lib.sy_reader_free(reader)
    lib.sy_channel_free(ch)
    lib.sy_runtime_free(rt)

    print("distribution over", picks, "picks:")
    for addr in sorted(counts):
        print(f"  {addr}: {counts[addr]}")
    expected = picks // len(names)
    if sorted(counts) != sorted(n.decode() for n in names) or any(
            c != expected for c in counts.values()):
        sys.exit("uneven round_robin distribution")
    print("python: ok")


if __name__ == "__main__":
    main()
