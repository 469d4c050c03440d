"""A load-balancing policy written in Python, driving real connections."""
import logging

import pytest

import switchyard as sy


class FirstOnly(sy.Policy):
    """Connects every address, routes every RPC to the first one."""

    instances = []

    def __init__(self):
        self.ids = []
        self.states = {}
        self.closed = False
        FirstOnly.instances.append(self)

    def update_addresses(self, cc, addresses):
        self.addresses = [a.address for a in addresses]
        if not self.ids:
            for i in range(len(addresses)):
                sc = cc.new_subchannel(i)
                self.ids.append(sc)
                self.states[sc] = sy.State.IDLE
                cc.connect(sc)
        self.publish(cc)
        return True

    def subchannel_state(self, cc, subchannel_id, state, error):
        self.states[subchannel_id] = state
        if state != sy.State.SHUTDOWN:
            self.publish(cc)

    def publish(self, cc):
        first = self.ids[0]
        if self.states[first] == sy.State.READY:
            cc.update_state(sy.State.READY, ToFirst([first]))
        else:
            cc.update_state(sy.State.CONNECTING, sy.Picker())  # queue

    def close(self, cc):
        self.closed = True


class ToFirst(sy.Picker):
    outcomes = []

    def pick(self, info):
        assert info.method == "/echo.Echo/Unary"
        return 0

    def done(self, subchannel_id, error, latency_ns):
        ToFirst.outcomes.append((subchannel_id, error))


def test_python_policy_routes_everything_to_one_backend(backends):
    sy.register_policy("py_first_only", FirstOnly)
    assert sy.policy_registered("py_first_only")
    assert not sy.policy_registered("PY_FIRST_ONLY")  # names match exactly
    config = {"loadBalancingConfig": [{"py_first_only": {}}]}
    FirstOnly.instances.clear()
    with sy.Channel(backends.target, config, credentials=sy.Insecure()) as ch:
        ports = {
            int(ch.unary("/echo.Echo/Unary", b"x", timeout=10, wait_for_ready=True)
                .message.rsplit(b"=", 1)[1])
            for _ in range(20)
        }
        assert ports == {backends.ports[0]}
        (policy,) = FirstOnly.instances
        assert policy.addresses == [f"127.0.0.1:{p}" for p in backends.ports]
        assert len(policy.ids) == 3
        # The picker heard every call's outcome, on the subchannel it chose.
        assert ToFirst.outcomes[-20:] == [(policy.ids[0], None)] * 20
    assert policy.closed


class Raising(sy.Picker):
    def pick(self, info):
        raise RuntimeError("a bug in the picker")


class RaisingPolicy(FirstOnly):
    def publish(self, cc):
        cc.update_state(sy.State.READY, Raising(self.ids[:1]))


class BadIndex(sy.Picker):
    def pick(self, info):
        return 7  # out of range


class BadIndexPolicy(FirstOnly):
    def publish(self, cc):
        cc.update_state(sy.State.READY, BadIndex(self.ids[:1]))


@pytest.mark.parametrize("name,factory", [("py_raising", RaisingPolicy),
                                          ("py_bad_index", BadIndexPolicy)])
def test_broken_picker_fails_the_rpc_and_logs(backends, caplog, name, factory):
    sy.register_policy(name, factory)
    caplog.set_level(logging.ERROR, logger="switchyard")
    with sy.Channel(backends.target, {"loadBalancingConfig": [{name: {}}]},
                    credentials=sy.Insecure()) as ch:
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Unary", b"x", timeout=5)
        assert err.value.code == sy.StatusCode.UNAVAILABLE
    assert "picker pick" in caplog.text


class RejectingPolicy(sy.Policy):
    def update_addresses(self, cc, addresses):
        raise RuntimeError("a bug in update_addresses")

    def subchannel_state(self, cc, subchannel_id, state, error):
        pass


def test_exception_in_policy_callback_is_contained(backends, caplog):
    sy.register_policy("py_rejecting", RejectingPolicy)
    caplog.set_level(logging.ERROR, logger="switchyard")
    with sy.Channel(backends.target, {"loadBalancingConfig": [{"py_rejecting": {}}]},
                    credentials=sy.Insecure()) as ch:
        ch.sync()
        # Nothing was published: the RPC ends at its deadline, the process lives.
        with pytest.raises(sy.RpcError) as err:
            ch.unary("/echo.Echo/Unary", b"x", timeout=0.3)
        assert err.value.code == sy.StatusCode.DEADLINE_EXCEEDED
    assert "update_addresses" in caplog.text


def test_policy_context_outside_callbacks_is_refused():
    saved = []

    class Saver(FirstOnly):
        def update_addresses(self, cc, addresses):
            saved.append(cc)
            return super().update_addresses(cc, addresses)

    sy.register_policy("py_saver", Saver)
    ch = sy.Channel("", {"loadBalancingConfig": [{"py_saver": {}}]},
                    host_transport=NullHost())
    with ch:
        ch.update_addresses(["127.0.0.1:1"])
        ch.sync()
        with pytest.raises(sy.SwitchyardError) as err:
            saved[0].resolve_now()
        assert err.value.status_name == "SY_WRONG_CONTEXT"


class NullHost(sy.HostTransport):
    def connect(self, subchannel_id, address, user_data):
        pass

    def shutdown(self, subchannel_id, address, user_data):
        pass
