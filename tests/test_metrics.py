"""Prometheus metrics: what /metrics exposes and how the numbers follow the conference."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest
from aiortc.mediastreams import AudioStreamTrack
from prometheus_client.parser import text_string_to_metric_families

from signaling.client import TelebridgeClient
from signaling.metrics import Metrics
from tests.conftest import RunningServer
from tests.test_api import AUTH, api_config

NAMED = (
    "telebridge_rooms",
    "telebridge_participants",
    "telebridge_tracks",
    "telebridge_join_seconds",
    "telebridge_webhook_deliveries",
    "telebridge_api_requests",
    "telebridge_room_events",
    "telebridge_worker_up",
    "telebridge_worker_packets",
    "telebridge_worker_bytes",
    "telebridge_worker_nacks",
    "telebridge_worker_plis",
    "telebridge_worker_retransmissions",
    "telebridge_worker_dropped",
    "telebridge_worker_cpu_seconds",
    "telebridge_worker_loop_lag_seconds",
    "telebridge_worker_events_total",
    "telebridge_sessions",
    "telebridge_http_requests",
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value; each family also as (name, "family") -> 0."""
    out: dict = {}
    for family in text_string_to_metric_families(text):
        out[(family.name, "family")] = 0.0
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# -- from events -----------------------------------------------------------------------------


def joined(identity: str, role: str) -> dict:
    return {
        "participant": {
            "identity": identity,
            "name": identity,
            "role": role,
            "hand_raised": False,
            "joined_at": 0,
        }
    }


def test_gauges_follow_room_events():
    m = Metrics()
    m.on_event("room_started", "a", {"room": {"name": "a"}}, None)
    m.on_event("participant_joined", "a", joined("lead", "lead"), None)
    m.on_event("participant_joined", "a", joined("site-1", "observer"), None)
    m.on_event(
        "participant_joined", "a", joined("site-1", "observer"), None
    )  # a rejoin counts once
    m.on_event("participant_joined", "b", joined("x", "participant"), None)  # room_started not seen
    m.on_event(
        "track_published", "a", {"track": {"id": "t1", "owner": "lead", "kind": "video"}}, None
    )
    m.on_event(
        "track_published", "a", {"track": {"id": "t2", "owner": "lead", "kind": "audio"}}, None
    )
    m.on_event("offer", "a", {"sdp": "v=0", "version": 1}, "site-1")  # targeted: ignored
    assert value(m, "telebridge_rooms") == 2
    assert [
        value(m, "telebridge_participants", role=r) for r in ("lead", "participant", "observer")
    ] == [1, 1, 1]
    assert (
        value(m, "telebridge_tracks", kind="video") == 1
        and value(m, "telebridge_tracks", kind="audio") == 1
    )

    m.on_event("role_changed", "a", {"identity": "site-1", "role": "participant", "by": None}, None)
    assert value(m, "telebridge_participants", role="participant") == 2
    assert value(m, "telebridge_participants", role="observer") == 0
    m.on_event("track_unpublished", "a", {"track": "t1", "owner": "lead"}, None)
    m.on_event("track_unpublished", "a", {"track": "t1", "owner": "lead"}, None)  # twice: once
    assert value(m, "telebridge_tracks", kind="video") == 0
    m.on_event("participant_left", "b", {"identity": "x", "reason": "left"}, None)
    assert value(m, "telebridge_participants", role="participant") == 1

    m.on_event("room_ended", "a", {"reason": "ended", "by": None}, None)
    m.on_event(
        "participant_left", "a", {"identity": "lead", "reason": "room_ended"}, None
    )  # after the end
    assert value(m, "telebridge_rooms") == 1
    assert (
        sum(
            value(m, "telebridge_participants", role=r) for r in ("lead", "participant", "observer")
        )
        == 0
    )
    assert value(m, "telebridge_tracks", kind="audio") == 0
    assert value(m, "telebridge_room_events_total", event="participant_joined") == 4


def test_layer_changes_and_temporal_steps_are_counted_apart():
    """A viewer moved to another encoding, and one whose frame rate was halved on the
    same encoding: two different things an operator looks for on weak links."""
    m = Metrics()
    layer = {"identity": "site-1", "track": "t1", "layer": 0, "rid": "q", "estimate": 250_000}
    m.on_event("layer", "a", {**layer, "temporal": 3, "change": "encoding"}, "site-1")
    m.on_event("layer", "a", {**layer, "temporal": 1, "change": "temporal"}, "site-1")
    m.on_event("layer", "a", {**layer, "temporal": 3, "change": "temporal"}, "site-1")
    assert value(m, "telebridge_layer_switches_total", layer="0") == 1
    assert value(m, "telebridge_temporal_layer_changes_total", temporal="1") == 1
    assert value(m, "telebridge_temporal_layer_changes_total", temporal="3") == 1
    assert value(m, "telebridge_viewer_estimate_bits_per_second_count") == 1


def test_malformed_events_are_logged_not_raised(caplog):
    m = Metrics()
    m.on_event("participant_joined", "a", {"nope": 1}, None)
    m.on_event("track_published", "a", {"track": None}, None)
    assert "unexpected" in caplog.text


def test_join_latency_and_webhook_outcomes():
    m = Metrics()
    m.observe_join(0.2)
    m.observe_join(3.0)
    m.on_webhook("delivered")
    assert value(m, "telebridge_join_seconds_count") == 2
    assert value(m, "telebridge_join_seconds_bucket", le="0.25") == 1
    assert value(m, "telebridge_webhook_deliveries_total", outcome="delivered") == 1
    assert value(m, "telebridge_webhook_deliveries_total", outcome="failed") == 0


# -- a real server ---------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path) -> Iterator[RunningServer]:
    running = RunningServer(tmp_path, extra=api_config())
    try:
        yield running
    finally:
        running.stop()


async def scrape(session: aiohttp.ClientSession, server: RunningServer) -> dict:
    async with session.get(server.base_url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return samples(await response.text())


async def test_metrics_follow_a_consultation(server):
    async with aiohttp.ClientSession() as session:
        before = await scrape(session, server)
        for name in NAMED:
            assert (name, "family") in before, f"{name} missing"
        assert before[("telebridge_rooms", ())] == 0
        assert before[("telebridge_worker_up", (("worker", "0"),))] == 1

        headers = {"Authorization": AUTH}
        async with session.post(
            server.base_url + "/api/v1/rooms", json={"name": "consult"}, headers=headers
        ) as response:
            assert response.status == 201
        token_body = {"room": "consult", "identity": "central", "role": "lead"}
        async with session.post(
            server.base_url + "/api/v1/tokens", json=token_body, headers=headers
        ) as response:
            token = (await response.json())["token"]
        lead = await TelebridgeClient.connect(server.base_url, token)
        try:
            await lead.publish(audio=AudioStreamTrack())
            deadline = time.monotonic() + 10
            while True:  # audio packets reach the worker once ICE and DTLS are done
                during = await scrape(session, server)
                if (
                    during[("telebridge_worker_packets", (("direction", "in"), ("worker", "0")))]
                    > 10
                ):
                    break
                assert time.monotonic() < deadline, "no packets counted by the worker"
                await asyncio.sleep(0.2)
        finally:
            await lead.leave()
        assert during[("telebridge_rooms", ())] == 1
        assert during[("telebridge_participants", (("role", "lead"),))] == 1
        assert during[("telebridge_tracks", (("kind", "audio"),))] == 1
        assert (
            during[("telebridge_join_seconds_count", ())]
            == before[("telebridge_join_seconds_count", ())] + 1
        )
        assert during[("telebridge_worker_bytes", (("direction", "in"), ("worker", "0")))] > 0
        assert during[("telebridge_worker_cpu_seconds", (("worker", "0"),))] > 0
        assert (
            during[
                ("telebridge_api_requests_total", (("route", "/api/v1/rooms"), ("status", "201")))
            ]
            == 1
        )

        async with session.delete(
            server.base_url + "/api/v1/rooms/consult", headers=headers
        ) as response:
            assert response.status == 204
        after = await scrape(session, server)
        assert after[("telebridge_rooms", ())] == 0
        assert after[("telebridge_participants", (("role", "lead"),))] == 0
        assert after[("telebridge_tracks", (("kind", "audio"),))] == 0


async def test_metrics_can_require_the_api_key(tmp_path):
    server = RunningServer(tmp_path, extra=api_config(settings="metrics_auth = true"))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.base_url + "/metrics") as response:
                assert response.status == 401 and response.headers["WWW-Authenticate"].startswith(
                    "Basic"
                )
            async with session.get(
                server.base_url + "/metrics", headers={"Authorization": AUTH}
            ) as response:
                assert response.status == 200 and "telebridge_rooms" in await response.text()
    finally:
        server.stop()
