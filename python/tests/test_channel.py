"""Unary calls over the library's own connections to real grpcio backends."""
import collections
import time

import pytest

import switchyard as sy

ROUND_ROBIN = {"loadBalancingConfig": [{"round_robin": {}}]}


def port_of(resp):
    return int(resp.message.rsplit(b"|port=", 1)[1])


def test_round_robin_balances_across_three_backends(backends):
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        # Until every backend has answered once, some subchannels may still be
        # connecting (bounded: at most 300 calls).
        seen = set()
        for _ in range(300):
            seen.add(port_of(ch.unary("/echo.Echo/Unary", b"warm", timeout=10,
                                      wait_for_ready=True)))
            if len(seen) == 3:
                break
        assert seen == set(backends.ports)
        counts = collections.Counter()
        for i in range(30):
            resp = ch.unary("/echo.Echo/Unary", b"req%d" % i, timeout=10,
                            metadata={"x-test": "yes"})
            assert resp.message.startswith(b"req%d|port=" % i)
            port = port_of(resp)
            # The backend's metadata comes back as headers and trailers.
            assert resp.headers["x-backend-port"] == str(port)
            assert resp.trailers.get("x-backend-port") == str(port)
            # The status is the call's outcome, not metadata (as gRPC-Go).
            assert resp.trailers.get("grpc-status") is None
            assert resp.headers.get("x-absent") is None
            counts[port] += 1
        # All three READY: round_robin rotates strictly.
        assert counts == {p: 10 for p in backends.ports}


def test_unknown_method_raises_unimplemented(backends):
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/NoSuchMethod", b"x", timeout=10, wait_for_ready=True)
        assert err.value.code == sy.StatusCode.UNIMPLEMENTED


def test_server_status_code_and_message(backends):
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Delay", b"not a number", timeout=10, wait_for_ready=True)
        assert err.value.code == sy.StatusCode.INVALID_ARGUMENT
        assert "Delay takes milliseconds" in err.value.message


def test_a_rich_error_carries_its_details_and_trailing_metadata(backends):
    # gRPC's richer error model: the grpcio server aborts with a
    # google.rpc.Status in grpc-status-details-bin beside other metadata;
    # both reach the RpcError, blocking and started, as grpcio's
    # trailing_metadata() gives them.
    details = b"\x08\x09\x12\x03why"
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        errors = []
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Unary", b"rich-error", timeout=10, wait_for_ready=True)
        errors.append(err.value)
        future = ch.unary_future("/echo.Echo/Unary", b"rich-error", timeout=10, wait_for_ready=True)
        with pytest.raises(sy.RpcError) as err:
            future.result(timeout=20)
        errors.append(err.value)
        for e in errors:
            assert e.code == sy.StatusCode.FAILED_PRECONDITION
            assert "rich error" in e.details()
            md = dict(e.trailing_metadata())
            assert md["grpc-status-details-bin"] == details
            assert md["x-why"] == "because"
            assert "grpc-status" not in md
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Delay", b"30000", timeout=0.2)
        assert err.value.trailing_metadata() == ()


def test_deadline_exceeded(backends):
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        ch.unary("/echo.Echo/Unary", b"warm", timeout=10, wait_for_ready=True)
        start = time.monotonic()
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Delay", b"30000", timeout=0.2)
        assert err.value.code == sy.StatusCode.DEADLINE_EXCEEDED
        # Ended by the deadline, not by the server's 30 s answer.
        assert time.monotonic() - start < 20


def test_zero_timeout_is_an_expired_deadline_and_none_is_no_deadline(backends):
    # timeout=0 is gRPC's expired deadline (sy_call_options with has_timeout
    # and SY_NO_WAIT), for blocking and started calls; None sets no deadline.
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        ch.unary("/echo.Echo/Unary", b"warm", timeout=10, wait_for_ready=True)
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Unary", b"x", timeout=0)
        assert err.value.code == sy.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(sy.RpcError) as err:
            ch.unary_future("/echo.Echo/Unary", b"x", timeout=0).result(timeout=10)
        assert err.value.code == sy.StatusCode.DEADLINE_EXCEEDED
        assert ch.unary("/echo.Echo/Unary", b"y", timeout=None).message.startswith(b"y|")
        resp = ch.unary_future("/echo.Echo/Unary", b"z", request_hash=7).result(timeout=10)
        assert resp.message.startswith(b"z|")


def test_tls_is_the_default(backends):
    # The backends speak plaintext: a default (TLS) channel cannot reach them.
    with sy.Channel(backends.target, ROUND_ROBIN) as ch:
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Unary", b"x", timeout=0.5, wait_for_ready=True)
        assert err.value.code in (sy.StatusCode.UNAVAILABLE, sy.StatusCode.DEADLINE_EXCEEDED)


def test_bad_input_raises_clear_errors(backends):
    # An invalid service config is the channel's state, as in gRPC: its calls
    # fail UNAVAILABLE with the parse error, which names the JSON path.
    for config, why in [("{not json", "not valid JSON"),
                        ({"loadBalancingConfig": [{"no_such_policy": {}}]},
                         "loadBalancingConfig: no supported policies"),
                        ({"methodConfig": [{"timeout": "3"}]},
                         'methodConfig[0].timeout: "3" is not a duration')]:
        with sy.Channel(backends.target, config, credentials=sy.Insecure()) as ch:
            with pytest.raises(sy.RpcError) as err:
                ch.unary("/echo.Echo/Unary", b"x", timeout=5)
            assert err.value.code == sy.StatusCode.UNAVAILABLE
            assert why in err.value.message
    with pytest.raises(sy.InvalidArgument):
        sy.Channel("ipv4:not an address", credentials=sy.Insecure())
    with pytest.raises(TypeError):
        sy.Channel(backends.target, credentials="insecure")
    with pytest.raises(ValueError):
        sy.Channel("", host_transport=sy.HostTransport(), credentials=sy.Insecure())
    with pytest.raises(sy.InvalidArgument):
        sy.Channel(backends.target, credentials=sy.Tls(roots=b"not a certificate"))
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        with pytest.raises(sy.InvalidArgument):
            ch.unary("no slash", b"x", timeout=5)
        with pytest.raises(sy.InvalidArgument):
            ch.unary("/echo.Echo/Unary", b"x", timeout=5, metadata={"grpc-timeout": "1S"})
        with pytest.raises(ValueError):
            ch.unary("/echo.Echo/Unary", b"x", timeout=-1)
        with pytest.raises(TypeError):
            ch.unary("/echo.Echo/Unary", "text, not bytes")


def test_closed_channel_refuses_calls(backends):
    ch = sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure())
    with ch:
        ch.unary("/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=True)
    ch.close()  # idempotent
    with pytest.raises(sy.ChannelClosed):
        ch.unary("/echo.Echo/Unary", b"x", timeout=1)


def test_calls_from_many_threads(backends):
    import threading

    errors, ports = [], collections.Counter()
    lock = threading.Lock()
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:

        def worker(n):
            try:
                for i in range(25):  # each thread gets its own reader
                    resp = ch.unary("/echo.Echo/Unary", b"t%d-%d" % (n, i), timeout=10,
                                    wait_for_ready=True)
                    assert resp.message.startswith(b"t%d-%d|" % (n, i))
                    with lock:
                        ports[port_of(resp)] += 1
            except Exception as e:  # reported below, in the test's thread
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sum(ports.values()) == 100
    assert set(ports) <= set(backends.ports)


def test_connectivity_state(backends):
    import threading

    seen, changed = [], threading.Event()

    def on_state(state):  # loop thread: must not block
        seen.append(state)
        changed.set()

    ch = sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure(),
                    on_state_change=on_state)
    with ch:
        ch.unary("/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=True)
        assert ch.state() == sy.State.READY
        assert ch.wait_for_state_change(sy.State.READY, timeout=0.05) is None  # no change
        assert ch.wait_for_state_change(sy.State.IDLE, timeout=5) == sy.State.READY
        assert changed.wait(10)
        assert sy.State.READY in seen
        ch.reset_connect_backoff()  # nothing waits out a backoff: no change
        assert ch.wait_for_state_change(sy.State.READY, timeout=0.05) is None
    with pytest.raises(sy.ChannelClosed):
        ch.state()
    with pytest.raises(sy.ChannelClosed):
        ch.reset_connect_backoff()


def test_calls_started_on_the_event_loop(backends):
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        calls = [ch.unary_future("/echo.Echo/Unary", b"f%d" % i, timeout=10,
                                 wait_for_ready=True) for i in range(12)]
        for i, call in enumerate(calls):
            assert call.result(timeout=20).message.startswith(b"f%d|port=" % i)

        failing = ch.unary_future("/echo.Echo/Nope", b"", timeout=10)
        assert isinstance(failing.exception(timeout=20), sy.RpcError)
        assert failing.exception().code == sy.StatusCode.UNIMPLEMENTED

        slow = ch.unary_future("/echo.Echo/Delay", b"30000", timeout=60)
        assert slow.cancel()
        with pytest.raises(sy.RpcError) as err:
            slow.result(timeout=20)
        assert err.value.code == sy.StatusCode.CANCELLED
        assert not slow.cancel()  # finished

        pending = ch.unary_future("/echo.Echo/Delay", b"30000", timeout=60)
    # Closing the channel ends the calls still running.
    with pytest.raises(sy.ChannelClosed):
        pending.result(timeout=20)
    with pytest.raises(sy.ChannelClosed):
        ch.unary_future("/echo.Echo/Unary", b"")


def test_wait_for_ready_none_follows_the_config_and_false_overrides_it():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()  # nothing listens there: connections are refused
    config = {"methodConfig": [{"name": [{}], "waitForReady": True}]}
    with sy.Channel("ipv4:127.0.0.1:%d" % dead, config, credentials=sy.Insecure()) as ch:
        # The config's waitForReady: the call waits out its deadline.
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Unary", b"x", timeout=0.3)
        assert err.value.code == sy.StatusCode.DEADLINE_EXCEEDED
        # An explicit False stands over it (gRPC's WaitForReady(false)).
        start = time.monotonic()
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=False)
        assert err.value.code == sy.StatusCode.UNAVAILABLE
        assert time.monotonic() - start < 5
        with pytest.raises(sy.RpcError) as err:
            ch.unary_future("/echo.Echo/Unary", b"x", timeout=10,
                            wait_for_ready=False).result(timeout=10)
        assert err.value.code == sy.StatusCode.UNAVAILABLE
