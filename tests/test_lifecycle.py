"""Sessions and workers over time: vanished peers, worker crashes, several workers, reports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

import pytest

from tests.conftest import RunningServer
from tests.peers import WhepViewer, WhipPublisher, start_whep_viewer, start_whip_publisher
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
