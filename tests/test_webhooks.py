"""Webhooks: signed room events POSTed to a real HTTP receiver, retried, ordered, bounded."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from signaling import config
from signaling.config import WebhookConfig
from signaling.metrics import Metrics
from signaling.webhooks import SIGNATURE_HEADER, Webhooks, sign, verify_signature
from tests.conftest import RunningServer
from tests.test_api import AUTH, api_config

SECRET = "whsec-" + "w" * 40


class Receiver:
    """A real HTTP endpoint that records what it gets and answers per ``respond``."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, str], bytes]] = []
        self.respond: Any = lambda payload, attempt: 200  # -> status, or a coroutine to await first
        self.attempts: dict[str, int] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((time.monotonic(), dict(request.headers), body))
        self._changed.set()
        payload = json.loads(body)
        attempt = self.attempts[payload["id"]] = self.attempts.get(payload["id"], 0) + 1
        status = self.respond(payload, attempt)
        if asyncio.iscoroutine(status):
            status = await status
        return web.Response(status=status)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in self.received]

    async def wait(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"got {len(self.received)} of {count} requests: {self.payloads()}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def hooks_factory() -> AsyncIterator[Any]:
    made: list[Webhooks] = []

    async def make(
        *configs: WebhookConfig,
        metrics: Metrics | None = None,
        start: bool = True,
        backoff: float = 0.05,
    ) -> Webhooks:
        hooks = Webhooks(
            list(configs), on_outcome=metrics.on_webhook if metrics else None, backoff=backoff
        )
        made.append(hooks)
        if start:
            await hooks.start()
        return hooks

    yield make
    for hooks in made:
        await hooks.stop(drain=0)


def outcomes(metrics: Metrics) -> dict[str, float]:
    return {
        o: metrics.registry.get_sample_value("telebridge_webhook_deliveries_total", {"outcome": o})
        or 0.0
        for o in ("delivered", "retried", "failed", "dropped")
    }


async def settle(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# -- signatures ------------------------------------------------------------------------------


def test_signature_round_trip_and_replay_protection():
    body = b'{"id":"1","event":"room_ended"}'
    now = 1_767_225_600
    header = sign(SECRET, body, now)
    assert header.startswith(f"t={now},v1=")
    assert verify_signature(SECRET, header, body, now=now)
    assert verify_signature(SECRET, header, body.decode(), now=now + 299)
    # Replayed five minutes later, or stamped in the future: refused.
    assert not verify_signature(SECRET, header, body, now=now + 301)
    assert not verify_signature(SECRET, header, body, now=now - 301)
    assert verify_signature(SECRET, header, body, tolerance=3600, now=now + 1800)
    # A fresh timestamp on an old signature does not verify: t is signed.
    assert not verify_signature(
        SECRET, header.replace(f"t={now}", f"t={now + 600}"), body, now=now + 600
    )
    # Wrong secret, changed body.
    assert not verify_signature("x" * 40, header, body, now=now)
    assert not verify_signature(SECRET, header, body + b" ", now=now)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "t=1767225600",
        "v1=00",
        "t=abc,v1=00",
        "t=-5,v1=00",
        "t=1767225600,t=1767225600,v1={sig}",
        "t=1767225600;v1={sig}",
        "garbage",
        "t=1767225600,v1=é{sig}",
        "t=99999999999999999999999,v1={sig}",
    ],
)
def test_malformed_signature_headers_are_refused(header):
    body = b"{}"
    signature = sign(SECRET, body, 1_767_225_600).split("v1=")[1]
    assert not verify_signature(SECRET, header.format(sig=signature), body, now=1_767_225_600)


def test_several_v1_signatures_any_may_match():
    """During a secret rotation a sender may sign with both; the receiver takes either."""
    body = b"{}"
    good = sign(SECRET, body, 1_767_225_600).split("v1=")[1]
    assert verify_signature(
        SECRET, f"t=1767225600,v1={'0' * 64},v1={good}", body, now=1_767_225_600
    )


# -- delivery --------------------------------------------------------------------------------


async def test_room_events_arrive_signed(receiver, hooks_factory):
    hooks = await hooks_factory(WebhookConfig(url=receiver.url, secret=SECRET))
    before = time.time()
    data = {"participant": {"identity": "site-7", "role": "observer"}}
    hooks.on_event("participant_joined", "consult", data, None)
    hooks.on_event("offer", "consult", {"sdp": "v=0"}, "site-7")  # for one participant: never sent
    hooks.on_event("removed", "consult", {"by": None}, "site-7")
    await receiver.wait(1)
    await asyncio.sleep(0.2)
    assert len(receiver.received) == 1
    _, headers, body = receiver.received[0]
    assert headers["Content-Type"] == "application/json"
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
    assert not verify_signature("other-" + SECRET, headers[SIGNATURE_HEADER], body)
    payload = json.loads(body)
    assert set(payload) == {"id", "event", "room", "data", "created_at"}
    assert (payload["event"], payload["room"], payload["data"]) == (
        "participant_joined",
        "consult",
        data,
    )
    assert uuid.UUID(payload["id"]).version == 4
    assert before <= payload["created_at"] <= time.time()


async def test_event_filter(receiver, hooks_factory):
    hooks = await hooks_factory(
        WebhookConfig(url=receiver.url, secret=SECRET, events=("room_ended",))
    )
    hooks.on_event("room_started", "r", {}, None)
    hooks.on_event("room_ended", "r", {"reason": "ended", "by": None}, None)
    await receiver.wait(1)
    await asyncio.sleep(0.2)
    assert [p["event"] for p in receiver.payloads()] == ["room_ended"]


async def test_retried_with_backoff_until_the_receiver_recovers(receiver, hooks_factory):
    receiver.respond = lambda payload, attempt: 500 if attempt <= 2 else 200
    metrics = Metrics()
    hooks = await hooks_factory(
        WebhookConfig(url=receiver.url, secret=SECRET), metrics=metrics, backoff=0.1
    )
    hooks.on_event("room_started", "r", {}, None)
    await receiver.wait(3)
    await settle(lambda: outcomes(metrics)["delivered"] == 1)
    assert outcomes(metrics) == {"delivered": 1, "retried": 2, "failed": 0, "dropped": 0}
    times = [t for t, _, _ in receiver.received]
    assert times[1] - times[0] >= 0.09 and times[2] - times[1] >= 0.19, "backoff doubles"
    ids = {p["id"] for p in receiver.payloads()}
    assert len(ids) == 1, "a retry is the same event: receivers de-duplicate by id"
    for _, headers, body in receiver.received:  # each attempt signed afresh
        assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 3


async def test_gives_up_after_max_attempts_and_goes_on(receiver, hooks_factory, caplog):
    receiver.respond = lambda payload, attempt: 503 if payload["event"] == "room_started" else 200
    metrics = Metrics()
    hooks = await hooks_factory(
        WebhookConfig(url=receiver.url, secret=SECRET, max_attempts=3), metrics=metrics
    )
    with caplog.at_level(logging.ERROR, logger="signaling.webhooks"):
        hooks.on_event("room_started", "r", {}, None)
        hooks.on_event("room_ended", "r", {}, None)
        await receiver.wait(4)
        await settle(lambda: outcomes(metrics)["delivered"] == 1)
    assert [p["event"] for p in receiver.payloads()] == ["room_started"] * 3 + ["room_ended"]
    assert outcomes(metrics) == {"delivered": 1, "retried": 2, "failed": 1, "dropped": 0}
    assert any("gave up" in r.message for r in caplog.records)


async def test_unreachable_and_slow_receivers_are_retried(receiver, hooks_factory):
    metrics = Metrics()
    dead = "http://127.0.0.1:9/hook"  # discard port: connection refused

    async def slow(payload: dict[str, Any], attempt: int) -> int:
        if attempt == 1:
            await asyncio.sleep(1.0)
        return 200

    receiver.respond = slow
    hooks = await hooks_factory(
        WebhookConfig(url=dead, secret=SECRET, max_attempts=2),
        WebhookConfig(url=receiver.url, secret=SECRET, timeout=0.3),
        metrics=metrics,
    )
    hooks.on_event("room_started", "r", {}, None)
    await settle(lambda: outcomes(metrics)["failed"] == 1 and outcomes(metrics)["delivered"] == 1)
    assert outcomes(metrics)["retried"] == 2  # one refused connection, one timeout
    assert len(receiver.received) == 2


async def test_order_per_url_and_a_failing_url_does_not_hold_up_another(receiver, hooks_factory):
    failing = Receiver()
    await failing.start()
    try:
        failing.respond = lambda payload, attempt: 500 if attempt < 3 else 200
        hooks = await hooks_factory(
            WebhookConfig(url=failing.url, secret=SECRET, max_attempts=3),
            WebhookConfig(url=receiver.url, secret=SECRET),
            backoff=0.05,
        )
        for seq in range(20):
            hooks.on_event("hand_raised", "r", {"identity": f"site-{seq}", "raised": True}, None)
        await receiver.wait(20, timeout=2.0)
        assert len(failing.received) < 10, (
            "the healthy URL got everything while the other still retries"
        )
        assert [p["data"]["identity"] for p in receiver.payloads()] == [
            f"site-{i}" for i in range(20)
        ]
        await failing.wait(60, timeout=30)
        delivered = [p["data"]["identity"] for p in failing.payloads()][2::3]
        assert delivered == [f"site-{i}" for i in range(20)], (
            "retries do not reorder a URL's events"
        )
    finally:
        await failing.stop()


async def test_full_queue_drops_the_oldest(receiver, hooks_factory, caplog):
    metrics = Metrics()
    hooks = await hooks_factory(
        WebhookConfig(url=receiver.url, secret=SECRET, queue_size=3), metrics=metrics, start=False
    )
    with caplog.at_level(logging.WARNING, logger="signaling.webhooks"):
        for seq in range(5):
            hooks.on_event("hand_raised", "r", {"identity": f"site-{seq}", "raised": True}, None)
    assert any("queue full" in r.message for r in caplog.records)
    assert hooks.pending() == 3 and outcomes(metrics)["dropped"] == 2
    await hooks.start()
    await receiver.wait(3)
    await asyncio.sleep(0.2)
    assert [p["data"]["identity"] for p in receiver.payloads()] == ["site-2", "site-3", "site-4"]


async def test_on_event_never_waits_for_the_network(hooks_factory):
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        hooks = await hooks_factory(
            WebhookConfig(url=url, secret=SECRET, queue_size=100, timeout=30)
        )
        started = time.perf_counter()
        for seq in range(20000):
            hooks.on_event(
                "active_speaker", "r", {"identity": f"s{seq}", "track": "t1", "level": -30}, None
            )
        elapsed = time.perf_counter() - started
        assert elapsed < 2.0, f"20000 events took {elapsed:.2f} s"
        assert hooks.pending() <= 101, "the queue is bounded"
        # A clean stop: bounded by the drain time even with a request hanging.
        started = time.monotonic()
        await hooks.stop(drain=0.3)
        assert time.monotonic() - started < 2.0
        assert all(e.task is None for e in hooks.endpoints)
        hooks.on_event("room_ended", "r", {}, None)  # after stop: ignored, no error
    finally:
        release.set()
        await runner.cleanup()


async def test_stop_drains_what_is_queued(receiver, hooks_factory):
    hooks = await hooks_factory(WebhookConfig(url=receiver.url, secret=SECRET))
    for seq in range(5):
        hooks.on_event("hand_raised", "r", {"identity": f"site-{seq}", "raised": True}, None)
    await hooks.stop(drain=5)
    assert len(receiver.received) == 5 and hooks.pending() == 0


async def test_no_webhooks_configured_is_a_no_op(hooks_factory):
    hooks = await hooks_factory()
    hooks.on_event("room_started", "r", {}, None)
    assert hooks.pending() == 0


# -- configuration ---------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "c.toml"
    path.write_text('[auth]\nsecret = "' + "s" * 40 + '"\n' + text)
    return config.load(path)


def test_webhook_config(tmp_path):
    assert load(tmp_path, "").webhooks == ()
    hooks = load(
        tmp_path,
        f'[[webhooks]]\nurl = "https://app.example.org/telebridge"\nsecret = "{SECRET}"\n'
        f'[[webhooks]]\nurl = "http://10.0.0.5:8000/hooks"\nsecret = "{SECRET}"\nevents = ["room_ended"]\n'
        "max_attempts = 3\ntimeout = 2.5\nqueue_size = 50\n",
    ).webhooks
    assert hooks[0] == WebhookConfig(url="https://app.example.org/telebridge", secret=SECRET)
    assert (hooks[1].events, hooks[1].max_attempts, hooks[1].timeout, hooks[1].queue_size) == (
        ("room_ended",),
        3,
        2.5,
        50,
    )
    assert SECRET not in repr(hooks)


def test_the_documented_example_loads(tmp_path):
    """The commented [[webhooks]] example in the shipped config, uncommented, is valid."""
    from tests.conftest import ROOT

    lines = (ROOT / "configs" / "telebridge.toml").read_text().splitlines()
    start = lines.index("# [[webhooks]]")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    hooks = load(tmp_path, "\n".join(block) + "\n").webhooks
    assert len(hooks) == 1 and hooks[0].events is not None and hooks[0].max_attempts == 6


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[webhooks]]\nurl = "ftp://x/"\nsecret = "' + "s" * 40 + '"\n', "http"),
        ('[[webhooks]]\nurl = "http://"\nsecret = "' + "s" * 40 + '"\n', "http"),
        ('[[webhooks]]\nurl = "http://x/"\nsecret = "short"\n', "at least 32"),
        ('[[webhooks]]\nurl = "http://x/"\n', "secret or secret_file"),
        (
            '[[webhooks]]\nurl = "http://x/"\nsecret = "' + "s" * 40 + '"\nevents = ["offer"]\n',
            "unknown offer",
        ),
        (
            '[[webhooks]]\nurl = "http://x/"\nsecret = "' + "s" * 40 + '"\nevents = []\n',
            "non-empty",
        ),
        (
            '[[webhooks]]\nurl = "http://x/"\nsecret = "' + "s" * 40 + '"\nmax_attempts = 0\n',
            "positive",
        ),
        (
            '[[webhooks]]\nurl = "http://x/"\nsecret = "' + "s" * 40 + '"\ntimeout = nan\n',
            "positive",
        ),
        (
            '[[webhooks]]\nurl = "http://x/"\nsecret = "' + "s" * 40 + '"\nqueue_size = "many"\n',
            "many",
        ),
        ('[webhooks]\nurl = "http://x/"\n', "array of tables"),
    ],
)
def test_bad_webhook_config_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(config.ConfigError, match=message):
        load(tmp_path, text)


# -- end to end ------------------------------------------------------------------------------


async def test_a_real_server_posts_room_events(receiver, tmp_path):
    """Room created over the API, joined over the WebSocket, ended: the app hears it all,
    signed, in order, and nothing meant for one participant."""
    from signaling.client import TelebridgeClient

    extra = api_config(f'[[webhooks]]\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n')
    server = RunningServer(tmp_path, extra=extra)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": AUTH}) as http:
            async with http.post(
                server.base_url + "/api/v1/rooms", json={"name": "consult"}
            ) as response:
                assert response.status == 201
            async with http.post(
                server.base_url + "/api/v1/tokens",
                json={"room": "consult", "identity": "central", "role": "lead"},
            ) as response:
                token = (await response.json())["token"]
            lead = await TelebridgeClient.connect(server.base_url, token)
            try:
                await lead.raise_hand(True)
                async with http.delete(server.base_url + "/api/v1/rooms/consult") as response:
                    assert response.status == 204
                await receiver.wait(5)
            finally:
                await lead.close()
        await asyncio.sleep(0.3)
        events = [(p["event"], p["room"]) for p in receiver.payloads()]
        assert [e for e, _ in events] == [
            "room_started",
            "participant_joined",
            "hand_raised",
            "room_ended",
            "participant_left",
        ]
        assert {room for _, room in events} == {"consult"}
        for _, headers, body in receiver.received:
            assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
        payloads = receiver.payloads()
        assert payloads[1]["data"]["participant"]["identity"] == "central"
        assert payloads[4]["data"] == {"identity": "central", "reason": "room_ended"}
    finally:
        server.stop()
