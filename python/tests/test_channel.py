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
            # Listed in order, as grpcio's metadata tuples.
            trailing = dict(resp.trailing_metadata())
            assert trailing["x-backend-port"] == str(port)
            assert not any(k.startswith("grpc-") for k in trailing)
            assert ("x-backend-port", str(port)) in resp.initial_metadata()
            # As grpcio: without the transport's content-type and
            # grpc-accept-encoding (which `headers`, gRPC-Go's Header(),
            # keeps).
            assert "content-type" in resp.headers
            assert resp.initial_metadata() == tuple(
                kv for kv in resp.headers
                if kv[0] not in ("content-type", "grpc-accept-encoding"))
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
        # grpcio's spellings: code() and details(), the server's own text.
        assert err.value.code() == sy.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "Delay takes milliseconds"
        assert err.value.initial_metadata() == ()
        future = ch.unary_future("/echo.Echo/Delay", b"not a number", timeout=10,
                                 wait_for_ready=True)
        assert future.exception(timeout=20).details() == "Delay takes milliseconds"
        # Picklable, as exceptions crossing process pools must be.
        import pickle
        again = pickle.loads(pickle.dumps(err.value))
        assert (again.code, again.details()) == (err.value.code, err.value.details())
        for e in (sy.ChannelClosed(7, "closed"), sy.CallClosed(), sy.CallCancelled()):
            again = pickle.loads(pickle.dumps(e))
            assert type(again) is type(e) and str(again) == str(e)


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
            assert e.details() == "rich error"
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
        # A negative timeout is a deadline already passed, as in grpcio.
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Unary", b"x", timeout=-1)
        assert err.value.code == sy.StatusCode.DEADLINE_EXCEEDED
        # Beyond any deadline: none (not a wrapped-around tiny one).
        assert ch.unary("/echo.Echo/Unary", b"x", timeout=1e300, wait_for_ready=True)
        assert ch.unary("/echo.Echo/Unary", b"x", timeout=float("inf"), wait_for_ready=True)
        with pytest.raises(TypeError):
            ch.unary("/echo.Echo/Unary", "text, not bytes")
        # Metadata: values of the wrong type and NULs are refused, not
        # silently converted or cut short.
        for md, kind in [([("x-k", 5)], TypeError), ([("x-k", "a\0b")], ValueError),
                         ([("x\0k", "v")], ValueError), ([("x-k",)], TypeError)]:
            with pytest.raises(kind):
                ch.unary("/echo.Echo/Unary", b"x", timeout=5, metadata=md)
        with pytest.raises(ValueError):
            ch.unary("/echo.Echo/Un\0ary", b"x", timeout=5)
        # As grpcio: a -bin value is bytes and a timeout a number; and an
        # integer out of its C range is refused, not wrapped around.
        with pytest.raises(TypeError):
            ch.unary("/echo.Echo/Unary", b"x", timeout=5, metadata=[("x-k-bin", "text")])
        with pytest.raises(TypeError):
            ch.unary("/echo.Echo/Unary", b"x", timeout="5")
        for h in (-1, 2**64):
            with pytest.raises(OverflowError):
                ch.unary("/echo.Echo/Unary", b"x", timeout=5, request_hash=h)
        # Bytes spellings of the method and target work.
        assert ch.unary(b"/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=True)
    with sy.Channel(backends.target.encode(), ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        assert ch.unary("/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=True)
    with pytest.raises(ValueError):
        sy.Channel(backends.target + "\0junk", credentials=sy.Insecure())


def test_closed_channel_refuses_calls(backends):
    ch = sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure())
    with ch:
        ch.unary("/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=True)
    ch.close()  # idempotent
    with pytest.raises(sy.ChannelClosed):
        ch.unary("/echo.Echo/Unary", b"x", timeout=1)
    # As grpcio: a ValueError.
    with pytest.raises(ValueError):
        ch.unary("/echo.Echo/Unary", b"x", timeout=1)
    assert ch.get_state(try_to_connect=True) == sy.State.SHUTDOWN


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
        assert slow.cancelled()  # a Future cancelled, as grpcio's
        with pytest.raises(sy.RpcError) as err:
            slow.result(timeout=20)
        assert err.value.code == sy.StatusCode.CANCELLED
        import concurrent.futures
        with pytest.raises(concurrent.futures.CancelledError):
            slow.result(timeout=20)
        assert not slow.cancel()  # finished

        pending = ch.unary_future("/echo.Echo/Delay", b"30000", timeout=60)
    # Closing the channel ends the calls still running: CANCELLED, as grpcio.
    with pytest.raises(sy.ChannelClosed) as err:
        pending.result(timeout=20)
    assert isinstance(err.value, sy.RpcError)
    assert err.value.code == sy.StatusCode.CANCELLED
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


def test_a_pending_call_keeps_its_channel_alive(backends):
    # Nothing else holds the channel: the call still completes (grpcio's
    # calls keep their channel), and the channel goes once it has.
    import gc
    import weakref
    ch = sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure())
    ref = weakref.ref(ch)
    future = ch.unary_future("/echo.Echo/Delay", b"200", timeout=20, wait_for_ready=True)
    del ch
    gc.collect()
    assert future.result(timeout=20).message
    for _ in range(50):
        gc.collect()
        if ref() is None:
            break
        time.sleep(0.05)
    assert ref() is None


def test_get_state_connects_only_when_asked(backends):
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        assert ch.get_state() == sy.State.IDLE
        time.sleep(0.1)
        assert ch.get_state() == sy.State.IDLE
        assert ch.get_state(try_to_connect=True) == sy.State.IDLE
        state = sy.State.IDLE
        deadline = time.monotonic() + 20
        while state != sy.State.READY and time.monotonic() < deadline:
            state = ch.wait_for_state_change(state, timeout=1) or state
        assert state == sy.State.READY
    assert ch.get_state() == sy.State.SHUTDOWN


def test_a_blocking_call_in_flight_when_the_channel_closes_is_cancelled(backends):
    import threading
    ch = sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure())
    ch.unary("/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=True)
    caught = []
    calling = threading.Event()

    def slow():
        try:
            calling.set()
            ch.unary("/echo.Echo/Delay", b"30000", timeout=60)
        except Exception as e:  # checked below, in the test's thread
            caught.append(e)

    t = threading.Thread(target=slow)
    t.start()
    # The call is made well before the close, however slow the thread's start.
    assert calling.wait(20)
    time.sleep(0.3)
    ch.close()
    t.join(20)
    assert not t.is_alive()
    assert len(caught) == 1
    # grpcio: RpcError CANCELLED; here also a ChannelClosed.
    assert isinstance(caught[0], sy.RpcError) and isinstance(caught[0], sy.ChannelClosed)
    assert caught[0].code() == sy.StatusCode.CANCELLED


def test_callbacks_run_off_the_library_threads_and_may_block(backends):
    # grpcio runs a future's done-callbacks and connectivity callbacks on
    # its own threads: here too, so a callback may make a blocking call.
    import threading
    done, states, state_seen = [], [], threading.Event()

    def on_state(state):
        states.append((state, ch.get_state()))  # a call into the channel: fine
        if state == sy.State.READY:
            state_seen.set()

    ch = sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure(),
                    on_state_change=on_state)
    with ch:
        finished = threading.Event()

        def after(f):
            try:
                done.append(ch.unary("/echo.Echo/Unary", b"nested", timeout=10,
                                     wait_for_ready=True).message)
            except Exception as e:  # checked below
                done.append(e)
            finished.set()

        ch.unary_future("/echo.Echo/Unary", b"x", timeout=10,
                        wait_for_ready=True).add_done_callback(after)
        assert finished.wait(20)
        assert len(done) == 1 and done[0].startswith(b"nested|port="), done
        assert state_seen.wait(20)
        assert (sy.State.READY, sy.State.READY) in states


def test_a_future_is_a_grpc_call_as_grpcio_s_are(backends):
    # grpcio's futures are grpc.Call too: code(), details(), metadata,
    # is_active(), time_remaining(), add_callback(); running() while in
    # flight; a done callback added to a finished future runs at once.
    import threading
    import time
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        done = ch.unary_future("/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=True)
        done.result(timeout=20)
        assert done.code() == sy.StatusCode.OK and done.details() is None
        assert not done.is_active() and not done.running()
        assert isinstance(done.trailing_metadata(), tuple)
        assert not done.add_callback(lambda: None)
        ran = []
        done.add_done_callback(lambda f: ran.append(threading.current_thread()))
        assert ran == [threading.current_thread()]

        slow = ch.unary_future("/echo.Echo/Delay", b"30000", timeout=60)
        ended = threading.Event()
        assert slow.add_callback(ended.set)
        time.sleep(0.2)
        assert slow.running() and slow.is_active()
        assert 0 < slow.time_remaining() <= 60
        assert slow.cancel()
        assert slow.code() == sy.StatusCode.CANCELLED
        assert ended.wait(10)
        assert not slow.running()

        failed = ch.unary_future("/echo.Echo/Delay", b"not a number", timeout=10)
        assert failed.code() != sy.StatusCode.OK and failed.details()
