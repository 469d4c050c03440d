"""Picks for a host that owns its transports: the host connects (a real TCP
connection to each grpcio backend), reports READY, picks, sends on its own
connection, and reports the outcome with done()."""
import gc
import socket
import threading
import weakref

import pytest

import switchyard as sy

ROUND_ROBIN = {"loadBalancingConfig": [{"round_robin": {}}]}


class TcpHost(sy.HostTransport):
    """Connects on a thread of its own (callbacks must not block) and
    reports the result to the channel."""

    def __init__(self):
        self.channel = None
        self.sockets = {}
        self.created = []
        self.shut = []
        self.lock = threading.Lock()
        self.threads = []

    def create(self, subchannel_id, address, user_data):
        self.created.append((subchannel_id, address, user_data))

    def connect(self, subchannel_id, address, user_data):
        t = threading.Thread(target=self._connect, args=(subchannel_id, address))
        t.start()
        self.threads.append(t)

    def _connect(self, subchannel_id, address):
        host, port = address.rsplit(":", 1)
        try:
            s = socket.create_connection((host, int(port)), timeout=10)
        except OSError as e:
            self.channel.report_state(subchannel_id, sy.State.TRANSIENT_FAILURE, str(e))
            return
        with self.lock:
            self.sockets[subchannel_id] = s
        self.channel.report_state(subchannel_id, sy.State.READY)

    def wait_connected(self, ch):
        ch.sync()  # the loop has asked for every connection
        for t in list(self.threads):
            t.join(15)
        ch.sync()  # and has applied every report

    def shutdown(self, subchannel_id, address, user_data):
        self.shut.append(subchannel_id)
        with self.lock:
            s = self.sockets.pop(subchannel_id, None)
        if s:
            s.close()


class Backend:
    """The host's per-address data, handed back by picks."""

    def __init__(self, port):
        self.port = port


def test_host_transport_pick_and_done(backends):
    host = TcpHost()
    ch = sy.Channel("", ROUND_ROBIN, host_transport=host)
    host.channel = ch
    ch.update_addresses([(f"127.0.0.1:{p}", Backend(p)) for p in backends.ports])
    host.wait_connected(ch)
    assert len(host.sockets) == 3
    assert sorted(a for _, a, _ in host.created) == sorted(
        f"127.0.0.1:{p}" for p in backends.ports)

    # The library's own calls are not for host-transport channels.
    with pytest.raises(sy.InvalidArgument):
        ch.unary("/echo.Echo/Unary", b"x", timeout=1)

    counts = {}
    with ch.reader() as reader:
        for _ in range(30):
            with reader.pick("/echo.Echo/Unary", timeout=10) as pick:
                assert isinstance(pick.user_data, Backend)
                assert pick.address == f"127.0.0.1:{pick.user_data.port}"
                # "send" on the host's own connection for that subchannel
                assert host.sockets[pick.subchannel_id].fileno() >= 0
                counts[pick.user_data.port] = counts.get(pick.user_data.port, 0) + 1
        assert counts == {p: 10 for p in backends.ports}

        p = reader.pick(timeout=0)  # READY: a wait-free pick succeeds
        p.done(sy.StatusCode.UNAVAILABLE, latency=0.001, load={"cpu_utilization": 0.5})
        with pytest.raises(sy.InvalidArgument):
            p.done()  # once only

        # A failure inside the with block is reported with its code.
        with pytest.raises(sy.RpcError):
            with reader.pick(timeout=10):
                raise sy.RpcError(sy.StatusCode.INTERNAL, "host send failed")

        # The snapshot counts the host's picks and their outcomes.
        subs = ch.snapshot()["subchannels"]
        assert sum(s["calls_started"] for s in subs) == 32
        assert sum(s["calls_succeeded"] for s in subs) == 30
        assert sum(s["calls_failed"] for s in subs) == 2
        assert all(s["calls_in_flight"] == 0 for s in subs)
        assert all(s["state"] == "READY" for s in subs)

        ch.close()
        assert sorted(host.shut) == sorted(i for i, _, _ in host.created)
        with pytest.raises(sy.ChannelClosed):
            reader.pick(timeout=0)


def test_user_data_released_when_nothing_can_return_it(backends):
    host = TcpHost()
    ch = sy.Channel("", ROUND_ROBIN, host_transport=host)
    host.channel = ch
    data = Backend(1)
    gone = weakref.ref(data)
    ch.update_addresses([(f"127.0.0.1:{backends.ports[0]}", data)])
    del data
    host.wait_connected(ch)
    reader = ch.reader()
    pick = reader.pick(timeout=10)
    ch.update_addresses([])  # the address goes; the pick still holds it
    ch.sync()
    gc.collect()
    assert pick.user_data is gone() and gone().port == 1
    pick.done()
    del pick
    reader.close()
    ch.close()
    host.created.clear()  # the test's own reference (from the create callback)
    gc.collect()
    assert gone() is None  # released to Python exactly when C let go


def test_pick_without_ready_subchannel():
    class Never(sy.HostTransport):
        def connect(self, *a):
            pass

        def shutdown(self, *a):
            pass

    with sy.Channel("", ROUND_ROBIN, host_transport=Never()) as ch:
        ch.update_addresses(["127.0.0.1:9"])
        ch.sync()
        with ch.reader() as reader:
            with pytest.raises(sy.NoSubchannel):
                reader.pick(timeout=0)
            with pytest.raises(sy.RpcError) as err:
                reader.pick(timeout=0.05)
            assert err.value.code == sy.StatusCode.DEADLINE_EXCEEDED
            # Out of its C range: refused, not wrapped around.
            with pytest.raises(OverflowError):
                reader.pick(request_hash=-1, timeout=0)
        with pytest.raises(OverflowError):
            ch.update_addresses([("127.0.0.1:9", None, 2**32)])


class Idle(sy.HostTransport):
    def connect(self, *a):
        pass

    def shutdown(self, *a):
        pass


def test_close_wakes_a_waiter_and_later_calls_raise():
    ch = sy.Channel("", ROUND_ROBIN, host_transport=Idle())
    outcome = []

    def waiter():
        try:
            outcome.append(ch.wait_for_state_change(ch.state()))  # no timeout
        except sy.ChannelClosed:
            outcome.append("closed before it waited")

    t = threading.Thread(target=waiter)
    t.start()
    ch.close()  # wakes it, waits for it to leave, then frees the handle
    t.join(10)
    assert not t.is_alive()
    assert outcome in ([sy.State.SHUTDOWN], ["closed before it waited"])
    with pytest.raises(sy.ChannelClosed):
        ch.report_state(1, sy.State.READY)
    with pytest.raises(sy.ChannelClosed):
        ch.update_addresses([("127.0.0.1:1", object())])
    ch.close()  # idempotent


class Broken(Idle):
    def connect(self, subchannel_id, address, user_data):
        raise RuntimeError("a bug in the host's connect")


def test_a_connect_that_raises_fails_the_subchannel(caplog):
    import logging

    caplog.set_level(logging.ERROR, logger="switchyard")
    with sy.Channel("", ROUND_ROBIN, host_transport=Broken()) as ch:
        ch.update_addresses(["127.0.0.1:1"])
        state = ch.state()
        for _ in range(10):  # bounded: IDLE -> CONNECTING -> TRANSIENT_FAILURE
            if state == sy.State.TRANSIENT_FAILURE:
                break
            state = ch.wait_for_state_change(state, timeout=10) or state
        assert state == sy.State.TRANSIENT_FAILURE
        with ch.reader() as reader:
            with pytest.raises(sy.RpcError) as err:
                reader.pick(timeout=0)
            assert err.value.code == sy.StatusCode.UNAVAILABLE
            assert "connect raised" in err.value.message
    assert "a bug in the host's connect" in caplog.text


def test_closing_from_a_callback_is_refused_not_a_deadlock(caplog):
    import logging

    caplog.set_level(logging.ERROR, logger="switchyard")
    holder = {}

    class ClosesItself(Idle):
        def connect(self, subchannel_id, address, user_data):
            holder["ch"].close()  # refused (RuntimeError), logged, reported failed

    with sy.Channel("", ROUND_ROBIN, host_transport=ClosesItself()) as ch:
        holder["ch"] = ch
        ch.update_addresses(["127.0.0.1:1"])
        ch.sync()
        assert ch.state() != sy.State.SHUTDOWN
    assert "cannot be closed inside a library callback" in caplog.text


def test_a_blocking_call_or_close_inside_a_callback_is_wrong_context():
    # Refused as the C ABI refuses them (SY_WRONG_CONTEXT), with the library's
    # error type, which is also a RuntimeError.
    caught = []
    holder = {}

    class CallsFromConnect(Idle):
        def connect(self, subchannel_id, address, user_data):
            for attempt in (lambda: holder["ch"].unary("/echo.Echo/Unary", b"x", timeout=1),
                            holder["ch"].close):
                try:
                    attempt()
                except Exception as e:  # checked below
                    caught.append(e)

    with sy.Channel("", ROUND_ROBIN, host_transport=CallsFromConnect()) as ch:
        holder["ch"] = ch
        ch.update_addresses(["127.0.0.1:1"])
        ch.sync()
        assert ch.state() != sy.State.SHUTDOWN
    assert len(caught) == 2, caught
    for e in caught:
        assert isinstance(e, sy.WrongContext), repr(e)
        assert isinstance(e, sy.SwitchyardError) and isinstance(e, RuntimeError)
        assert e.status_name == "SY_WRONG_CONTEXT"
    assert "blocking call" in str(caught[0]) and "closed" in str(caught[1])
