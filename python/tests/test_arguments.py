"""Arguments the package checks before they reach the library (a NUL would
cut a C string short, a ctypes integer would wrap a number out of range),
and what close() waits for."""
import math
import threading
import time

import pytest

import switchyard as sy

ROUND_ROBIN = {"loadBalancingConfig": [{"round_robin": {}}]}


class Quiet(sy.HostTransport):
    """A host transport that connects nothing."""

    def connect(self, subchannel_id, address, user_data):
        pass

    def shutdown(self, subchannel_id, address, user_data):
        pass


def test_text_with_a_nul_is_refused_not_cut_short():
    with sy.Channel("", ROUND_ROBIN, host_transport=Quiet()) as ch:
        with pytest.raises(ValueError):
            ch.update_addresses(["127.0.0.1:1\0junk"])
        with pytest.raises(ValueError):
            ch.report_state(1, sy.State.TRANSIENT_FAILURE, "before\0after")
        with pytest.raises(ValueError):
            ch.report_resolver_error("bad\0resolver")
    with pytest.raises(ValueError):
        sy.register_policy("nul\0name", sy.Policy)
    with pytest.raises(ValueError):
        sy.policy_registered("round_robin\0junk")
    assert sy.policy_registered("round_robin")


def test_wrong_argument_types_are_type_errors():
    with sy.Channel("", ROUND_ROBIN, host_transport=Quiet()) as ch:
        for bad in ([(5, None)], [(None,)]):
            with pytest.raises(TypeError):
                ch.update_addresses(bad)
        with pytest.raises(TypeError):
            ch.report_state(1, sy.State.READY, message=5)
        with pytest.raises(TypeError):
            ch.report_resolver_error(None)
        # bytes are text too, as everywhere in the package
        ch.update_addresses([b"127.0.0.1:1"])
    for bad in (None, 5):
        with pytest.raises(TypeError):
            sy.register_policy(bad, sy.Policy)
        with pytest.raises(TypeError):
            sy.policy_registered(bad)


def test_numbers_out_of_their_c_range_are_refused_not_wrapped():
    with sy.Channel("", ROUND_ROBIN, host_transport=Quiet()) as ch:
        for bad in (-1, 2**64):
            with pytest.raises(OverflowError):
                ch.report_state(bad, sy.State.READY)


def test_a_pick_done_checks_its_latency_and_metric_names(backends):
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        ch.unary("/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=True)
        reader = ch.reader()
        pick = reader.pick(timeout=10)
        with pytest.raises(OverflowError):
            pick.done(latency=-1)
        with pytest.raises(ValueError):
            pick.done(load={"m\0x": 1.0})
        with pytest.raises(TypeError):
            pick.done(load={1: 2.0})
        pick.done(latency=0.001, load={"cpu": 0.5})  # nothing was done before
        reader.close()


def test_an_infinite_timeout_is_no_deadline_for_the_future_too(backends):
    with sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure()) as ch:
        for timeout in (math.inf, 1e300):
            call = ch.unary_future("/echo.Echo/Unary", b"x", timeout=timeout, wait_for_ready=True)
            assert call.time_remaining() is None
            call.result(timeout=20)


def test_close_ends_every_blocking_call_in_flight(backends):
    ch = sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure())
    ch.unary("/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=True)
    started = threading.Barrier(5)
    caught = []

    def slow():
        started.wait(20)
        try:
            ch.unary("/echo.Echo/Delay", b"30000", timeout=60)
        except sy.RpcError as e:
            caught.append(e)

    threads = [threading.Thread(target=slow) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait(20)
    time.sleep(0.3)  # the calls are on the wire
    ch.close()
    # close() returned once every blocking call in flight had left the
    # library (each then raises in its own thread).
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert len(caught) == 4, caught
    assert all(e.code() == sy.StatusCode.CANCELLED for e in caught)


def test_a_call_on_a_channel_of_a_closed_runtime_is_a_plain_channel_closed(backends):
    rt = sy.Runtime()
    ch = sy.Channel(backends.target, ROUND_ROBIN, credentials=sy.Insecure(), runtime=rt)
    ch.unary("/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=True)
    rt.close()
    with pytest.raises(sy.ChannelClosed) as e:
        ch.unary("/echo.Echo/Unary", b"x", timeout=1)
    assert not isinstance(e.value, sy.RpcError)
    ch.close()
