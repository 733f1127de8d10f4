"""Sessions and workers over time: vanished peers, worker crashes, several workers, reports."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
import urllib.request

import pytest

from signaling.client import TelebridgeClient
from tests.conftest import RunningServer
from tests.peers import (
    WhepViewer,
    WhipPublisher,
    patch_fragment,
    start_whep_viewer,
    start_whip_publisher,
)
from tests.relay import LossyRelay


def health(server) -> dict:
    try:
        with urllib.request.urlopen(server.base_url + "/healthz", timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.fixture
def short_consent_server(tmp_path):
    running = RunningServer(tmp_path, consent_timeout=8)  # aioice refreshes consent every ~5 s
    yield running
    running.stop()


@pytest.fixture
def api_key_server(tmp_path):
    running = RunningServer(tmp_path, extra=API_KEY_CONFIG)
    yield running
    running.stop()


API_AUTH = "Basic " + base64.b64encode(b"backend:" + b"b" * 40).decode()
API_KEY_CONFIG = """
[[api.keys]]
key = "backend"
secret = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
"""


def participants(server, room: str) -> list[str]:
    request = urllib.request.Request(
        f"{server.base_url}/api/v1/rooms/{room}/participants",
        headers={"Authorization": API_AUTH},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return sorted(p["identity"] for p in json.loads(response.read())["participants"])


@pytest.fixture
def two_worker_server(tmp_path):
    running = RunningServer(tmp_path, workers=2)
    yield running
    running.stop()


async def test_vanished_viewer_is_dropped_after_consent_timeout(short_consent_server):
    server = short_consent_server
    room = "mountain"
    publisher = WhipPublisher(server.base_url, room, server.token(room, "lead", "lead"))
    relay = LossyRelay(("127.0.0.1", health(server)["workers"][0]["port"]), loss=0.0)
    await relay.start()
    try:
        await publisher.start("VP8", audio=False)
        # The viewer reaches the SFU through a relay; closing the relay makes it vanish
        # the way a site does when its link drops: no consent checks, no close_notify.
        viewer = WhepViewer(server.base_url, room, server.token(room, "site", "observer"))
        await viewer.start(via_port=relay.port)
        await viewer.wait_frames(5)
        assert health(server)["workers"][0]["sessions"] == 2
        relay.close()
        await wait_until(
            lambda: health(server)["workers"][0]["sessions"] == 1,
            20,
            "the silent viewer to be dropped",
        )
        assert "ice consent expired" in server.logs()
        await viewer.close(delete=False)
    finally:
        await publisher.close()


async def test_worker_crash_is_contained_and_the_worker_restarts(server):
    room = "crash"
    before = health(server)["workers"][0]
    publisher = await start_whip_publisher(
        server.base_url, room, server.token(room, "lead", "lead"), "VP8", audio=False
    )
    await publisher.wait_connected()
    os.kill(before["pid"], signal.SIGKILL)
    await wait_until(
        lambda: health(server)["ok"] and health(server)["workers"][0]["pid"] != before["pid"],
        15,
        "restart",
    )
    # The control process survived, forgot the lost session, and serves new ones.
    assert health(server)["workers"][0]["sessions"] == 0
    await publisher.close(delete=False)
    again = await start_whip_publisher(
        server.base_url, room, server.token(room, "lead", "lead"), "VP8", audio=False
    )
    viewer = await start_whep_viewer(server.base_url, room, server.token(room, "obs", "observer"))
    try:
        await viewer.wait_frames(5)
    finally:
        await viewer.close()
        await again.close()


async def test_whip_and_whep_clients_of_a_dead_worker(api_key_server):
    """A worker dies under a WHIP publisher and a WHEP viewer: the server forgets them at
    once (404, participant_left media_lost); the clients themselves only learn it from
    ICE consent, since nothing answers on the dead worker's port any more."""
    server = api_key_server
    room = "lost"
    observer = await TelebridgeClient.connect(
        server.base_url, server.token(room, "watcher", "observer")
    )
    publisher = await start_whip_publisher(
        server.base_url, room, server.token(room, "lead", "lead"), "VP8", audio=False
    )
    viewer = await start_whep_viewer(server.base_url, room, server.token(room, "site", "observer"))
    try:
        await viewer.wait_frames(5)
        assert participants(server, room) == ["lead", "site", "watcher"]
        since = observer.mark()
        os.kill(health(server)["workers"][0]["pid"], signal.SIGKILL)
        killed = time.monotonic()

        left = {}
        for _ in range(2):
            data = await observer.wait_for(
                "participant_left",
                lambda d: d["identity"] in ("lead", "site") and d["identity"] not in left,
                timeout=10,
                since=since,
            )
            left[data["identity"]] = data["reason"]
        assert left == {"lead": "media_lost", "site": "media_lost"}
        told = time.monotonic() - killed
        assert participants(server, room) == ["watcher"]
        for peer in (publisher, viewer):
            status, _, _ = await patch_fragment(peer, "a=ice-ufrag:abcd\r\na=ice-pwd:" + "p" * 24)
            assert status == 404
            async with peer.http.delete(
                server.base_url + peer.location, headers={"Authorization": f"Bearer {peer.token}"}
            ) as response:
                assert response.status == 404

        # aioice checks consent every 5 s (+-20 %) and gives up after 6 unanswered checks,
        # and an unconnected UDP socket hears no ICMP: nothing the server can send makes it
        # faster (an error response counts as one more failure). Measure it.
        noticed = {}
        deadline = killed + 50
        while len(noticed) < 2:
            assert time.monotonic() < deadline, "aiortc never noticed the dead worker"
            for name, peer in (("publisher", publisher), ("viewer", viewer)):
                if name not in noticed and peer.pc.iceConnectionState in ("failed", "closed"):
                    noticed[name] = time.monotonic() - killed
            await asyncio.sleep(0.2)
        print(
            f"server told the room {told:.1f} s after the kill; aiortc ICE failed after "
            + ", ".join(f"{name} {t:.1f} s" for name, t in noticed.items())
        )
        assert all(20 < t < 45 for t in noticed.values()), noticed
    finally:
        await viewer.close(delete=False)
        await publisher.close(delete=False)
        await observer.close()


async def test_rooms_spread_over_two_workers(two_worker_server):
    server = two_worker_server
    publishers = []
    try:
        for room in ("ward-a", "ward-b"):
            publishers.append(
                await start_whip_publisher(
                    server.base_url, room, server.token(room, "lead", "lead"), "VP8", audio=False
                )
            )
        workers = health(server)["workers"]
        assert len(workers) == 2 and workers[0]["port"] != workers[1]["port"]
        assert sorted(w["sessions"] for w in workers) == [1, 1], workers
        viewers = [
            await start_whep_viewer(server.base_url, room, server.token(room, "obs", "observer"))
            for room in ("ward-a", "ward-b")
        ]
        ports = {v.server_port() for v in viewers}
        assert ports == {w["port"] for w in workers}, (
            "each room's viewer talks to that room's worker"
        )
        for viewer in viewers:
            await viewer.wait_frames(5)
            await viewer.close()
    finally:
        for publisher in publishers:
            await publisher.close()


async def test_sender_and_receiver_reports_flow_both_ways(server):
    room = "reports"
    publisher = await start_whip_publisher(
        server.base_url, room, server.token(room, "lead", "lead"), "VP8"
    )
    viewer = await start_whep_viewer(server.base_url, room, server.token(room, "obs", "observer"))
    try:
        await viewer.wait_frames(5)
        # Reports go out every second, and a round trip needs one of the publisher's SRs
        # to have been answered: wait for both, with a deadline (this machine is slow).
        deadline = time.monotonic() + 20
        while True:
            publisher_stats = await publisher.pc.getStats()
            viewer_stats = await viewer.pc.getStats()
            remote_inbound = [s for s in publisher_stats.values() if s.type == "remote-inbound-rtp"]
            remote_outbound = [s for s in viewer_stats.values() if s.type == "remote-outbound-rtp"]
            done = (
                {s.kind for s in remote_inbound} == {"audio", "video"}
                and all(s.roundTripTime is not None for s in remote_inbound)
                and {s.kind for s in remote_outbound} == {"audio", "video"}
            )
            if done or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        # The publisher got our receiver reports (with a round trip from LSR/DLSR) ...
        assert {s.kind for s in remote_inbound} == {"audio", "video"}
        assert all(s.roundTripTime is not None and 0 <= s.roundTripTime < 1 for s in remote_inbound)
        # ... and the viewer got our sender reports, carrying the publisher's counts.
        assert {s.kind for s in remote_outbound} == {"audio", "video"}
        assert all(s.packetsSent > 0 for s in remote_outbound)
    finally:
        await viewer.close()
        await publisher.close()
