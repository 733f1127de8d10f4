"""GStreamer 1.22 webrtcbin peers (libnice ICE, max-bundle offers) against a real server.

webrtcbin's max-bundle offers mark every section after the first a=bundle-only with port 0
(RFC 8843), and libnice keeps a nominated pair alive without consent requests. The peers
run as subprocesses of Debian's /usr/bin/python3 (tests/gst_peer.py), the only interpreter
here that imports gi; the server is the real one (bench/server.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningServer
from tests.peers import start_whep_viewer

GST_PYTHON = "/usr/bin/python3"
DRIVER = Path(__file__).with_name("gst_peer.py")
ROOM = "district-theatre"
# Short enough that a session dropped at the consent timeout shows within the test, long
# enough for a receive-only libnice viewer, whose only traffic is RTCP at rtpbin's default
# 5 s minimum interval (randomised up to 1.5x).
CONSENT_TIMEOUT = 8.0


def _missing() -> str | None:
    """Why the GStreamer peers cannot run here, or None."""
    if not os.access(GST_PYTHON, os.X_OK):
        return f"{GST_PYTHON} not found: the GStreamer tests need Debian's python3-gi"
    try:
        probe = subprocess.run(
            [GST_PYTHON, str(DRIVER), "probe"], capture_output=True, text=True, timeout=60
        )
        answer = json.loads(probe.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return f"the GStreamer probe failed: {exc!r}"
    return None if answer.get("ok") else str(answer.get("reason"))


@pytest.fixture(scope="module")
def gstreamer() -> None:
    reason = _missing()
    if reason is not None:
        pytest.skip(f"{reason}. As root, .ci/run installs python3-gi and the GStreamer packages.")


@pytest.fixture
async def server(tmp_path: Path, gstreamer: None) -> AsyncIterator[RunningServer]:
    running = RunningServer(tmp_path, consent_timeout=CONSENT_TIMEOUT)
    try:
        yield running
    finally:
        running.stop()


class GstPeer:
    """One tests/gst_peer.py subprocess and the JSON lines it prints."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(
        cls, role: str, url: str, token: str, seconds: float, late_after: float = 0.0
    ) -> GstPeer:
        process = await asyncio.create_subprocess_exec(
            GST_PYTHON,
            str(DRIVER),
            role,
            url,
            token,
            "--seconds",
            str(seconds),
            "--late-after",
            str(late_after),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return cls(process)

    async def _next(self, deadline: float) -> dict[str, Any] | None:
        assert self.process.stdout is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"gst peer said: {self.lines}")
        line = await asyncio.wait_for(self.process.stdout.readline(), remaining)
        if not line:
            return None
        try:
            item: dict[str, Any] = json.loads(line)
        except ValueError:
            return {}
        self.lines.append(item)
        return item

    async def wait_for(self, key: str, value: str, timeout: float = 20.0) -> dict[str, Any]:
        """The first line whose ``key`` is ``value`` (fails on the result line or EOF)."""
        deadline = time.monotonic() + timeout
        for seen in self.lines:
            if seen.get(key) == value:
                return seen
        while True:
            item = await self._next(deadline)
            if item is None or "result" in item:
                raise AssertionError(f"gst peer ended before {key}={value}: {self.lines}")
            if item.get(key) == value:
                return item

    async def result(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            item = await self._next(deadline)
            if item is None:
                raise AssertionError(f"gst peer ended without a result: {self.lines}")
            if "result" in item:
                await self.process.wait()
                return item

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def test_gstreamer_publisher_to_gstreamer_viewer_past_the_consent_timeout(server):
    """Video and audio decoded by a webrtcbin viewer from a webrtcbin publisher, both still
    flowing more than twice the consent timeout after they connected."""
    publisher = await GstPeer.start(
        "whip", f"{server.base_url}/whip/{ROOM}", server.token(ROOM, "gst-encoder", "lead"), 26
    )
    viewer: GstPeer | None = None
    try:
        await publisher.wait_for("state", "connected")
        late = 2 * CONSENT_TIMEOUT + 1
        viewer = await GstPeer.start(
            "whep",
            f"{server.base_url}/whep/{ROOM}",
            server.token(ROOM, "gst-wall", "observer"),
            late + 3,
            late_after=late,
        )
        seen = await viewer.result(timeout=late + 30)
        assert seen["error"] is None, seen
        assert seen["states"] == ["connecting", "connected"], seen
        assert seen["connection_state"] == "connected", seen
        # 3 s at 15 frames/s and 50 Opus packets/s, after twice the consent timeout.
        assert seen["late_frames"]["video"] >= 20, seen
        assert seen["late_frames"]["audio"] >= 75, seen
        published = await publisher.result(timeout=30)
        assert published["error"] is None and published["connection_state"] == "connected"
        assert published["states"] == ["connecting", "connected"], published
        assert "consent expired" not in server.logs()
    finally:
        if viewer is not None:
            await viewer.stop()
        await publisher.stop()


async def test_aiortc_viewer_decodes_a_gstreamer_publisher(server):
    publisher = await GstPeer.start(
        "whip", f"{server.base_url}/whip/{ROOM}", server.token(ROOM, "gst-encoder", "lead"), 30
    )
    try:
        await publisher.wait_for("state", "connected")
        viewer = await start_whep_viewer(
            server.base_url, ROOM, server.token(ROOM, "aiortc-wall", "observer")
        )
        try:
            await viewer.wait_frames(20, timeout=20)
            await viewer.wait_audio_frames(50, timeout=20)
            assert viewer.last_video_frame is not None
            assert (viewer.last_video_frame.width, viewer.last_video_frame.height) == (320, 240)
        finally:
            await viewer.close()
    finally:
        await publisher.stop()
