"""The control channel's table (sfu/control.py): one declaration both processes check."""

from __future__ import annotations

import pytest
from aiortc.rtcdtlstransport import RTCCertificate

from sfu import control
from sfu.control import ControlError
from sfu.worker import WorkerCore


@pytest.fixture(scope="module")
def core() -> WorkerCore:
    return WorkerCore(
        RTCCertificate.generateCertificate(),
        "127.0.0.1",
        40000,
        lambda d, a: None,
        lambda n, d: None,
    )


def test_every_method_has_one_handler(core):
    assert set(core.handlers) == set(control.METHODS)
    assert all(callable(handler) for handler in core.handlers.values())


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        (control.PUBLISH, {"session": "s", "room": "r"}, "publish needs offer"),
        (control.PUBLISH, {"session": "s", "room": "r", "offer": 42}, "publish.offer must be str"),
        (
            control.PUBLISH,
            {"session": "s", "room": "r", "offer": "v=0", "renegotiate": "yes"},
            "publish.renegotiate must be bool",
        ),
        (
            control.PUBLISH,
            {"session": "s", "room": "r", "offer": "v=0", "extra": 1},
            "unknown field 'extra'",
        ),
        (
            control.SUBSCRIBER_OFFER,
            {"session": "s", "consumers": [{"producer": 1, "stream": "a", "track": "t"}]},
            "consumers[0].producer must be str",
        ),
        (
            control.SUBSCRIBER_OFFER,
            {"session": "s", "consumers": "all"},
            "consumers must be a list",
        ),
        (
            control.PLAIN_TRANSPORT,
            {"session": "s", "room": "r", "remote_port": True},
            "remote_port must be int",
        ),
        (control.STATS, [], "stats must be an object"),
    ],
)
def test_a_request_that_does_not_fit_its_shape_is_refused_naming_the_field(method, params, message):
    with pytest.raises(ControlError) as info:
        control.check(method, params)
    assert info.value.code == "bad_request" and message in info.value.message


def test_optional_fields_may_be_left_out_and_a_valid_request_passes_unchanged():
    params = {"session": "s", "room": "r", "offer": "v=0"}
    assert control.check(control.PUBLISH, params) is params
    assert control.check(control.PING, {}) == {}


def test_the_worker_refuses_unknown_methods_and_bad_shapes_before_any_handler(core):
    with pytest.raises(ControlError) as info:
        core.handle("reboot", {}, 0.0)
    assert info.value.code == "unknown_method"
    with pytest.raises(ControlError) as info:
        core.handle("close", {"session": 7}, 0.0)
    assert (info.value.code, info.value.message) == ("bad_request", "close.session must be str")
    assert core.handle("ping", {}, 1.5) == {"now": 1.5}
