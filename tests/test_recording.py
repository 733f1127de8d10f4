"""Recording consultations end to end: a real server, aiortc publishers, the REST API and
/ws, and the files read back with PyAV.

The publisher sends a test signal: black video with a white flash, and silence with a
1 kHz beep, both every 2 s at the same wall-clock instants, so the recorded audio/video
offset is measurable.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, VideoStreamTrack

from signaling.client import ProtocolError, TelebridgeClient
from tests.conftest import RunningServer
from tests.peers import start_whep_viewer
from tests.test_api import AUTH, api_config
from tests.test_webhooks import Receiver

pytestmark = pytest.mark.timeout(180)

PERIOD = 2.0  # seconds between flashes (and beeps)
PULSE = 0.2  # seconds each lasts


def _in_pulse(t: float, t0: float) -> bool:
    return (t - t0) % PERIOD < PULSE


class FlashTrack(VideoStreamTrack):
    """Black frames, white while a pulse is on (by wall clock from ``t0``)."""

    def __init__(self, t0: float, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.t0 = t0
        self.black = np.zeros((height, width, 3), np.uint8)
        self.white = np.full((height, width, 3), 255, np.uint8)

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = self.white if _in_pulse(time.time(), self.t0) else self.black
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class BeepTrack(MediaStreamTrack):
    """Silence, a 1 kHz tone while a pulse is on; 20 ms frames paced in real time, each
    sample's wall-clock time known."""

    kind = "audio"

    def __init__(self, t0: float, rate: int = 48000) -> None:
        super().__init__()
        self.t0 = t0
        self.rate = rate
        self.samples = rate // 50
        self.pts = 0
        self.start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.start is None:
            self.start = time.time()
        wait = self.start + self.pts / self.rate - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        t = self.start + (np.arange(self.samples) + self.pts) / self.rate
        on = ((t - self.t0) % PERIOD) < PULSE
        data = (np.sin(2 * math.pi * 1000 * t) * 12000 * on).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self.pts += self.samples
        return frame


def recording_config(root: Path, extra: str = "") -> str:
    return api_config() + f'\n[recording]\nroot = "{root}"\n{extra}\n'


@pytest.fixture
def rec_server(tmp_path: Path) -> Any:
    running = RunningServer(tmp_path, extra=recording_config(tmp_path / "recordings"))
    try:
        yield running
    finally:
        running.stop()


async def rest(
    server: RunningServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as http:
        async with http.request(
            method, server.base_url + path, headers={"Authorization": AUTH, **(headers or {})}
        ) as response:
            body = await response.read()
            kind = response.headers.get("Content-Type", "")
            data = json.loads(body) if kind.startswith("application/json") else body
            return response.status, data, dict(response.headers)


async def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def publish_signal(server: RunningServer, room: str, t0: float) -> TelebridgeClient:
    lead = await TelebridgeClient.connect(server.base_url, server.token(room, "dr-lan", "lead"))
    await lead.publish(video=FlashTrack(t0), audio=BeepTrack(t0), video_codec="VP8")
    return lead


async def wait_recorded(server: RunningServer, recording: str, tracks: int) -> dict[str, Any]:
    """The manifest once ``tracks`` files have media in them."""

    async def ready() -> dict[str, Any] | None:
        _, manifest, _ = await rest(server, "GET", f"/api/v1/recordings/{recording}")
        sized = [f for f in manifest["files"] if f["size"] > 1000]
        return manifest if len(sized) >= tracks else None

    try:
        result: dict[str, Any] = await wait_until(ready, 20, f"{tracks} files with media")
    except AssertionError:
        raise AssertionError(server.logs()[-3000:]) from None
    return result


def onsets(times: list[float], levels: list[float], threshold: float) -> list[float]:
    """Times at which ``levels`` rise above ``threshold``."""
    found, above = [], False
    for t, level in zip(times, levels, strict=True):
        if level > threshold and not above:
            found.append(t)
        above = level > threshold
    return found


def flashes(path: Path) -> tuple[list[float], int, tuple[int, int], float, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "vp8"
        times, levels = [], []
        size = (0, 0)
        for frame in container.decode(stream):
            times.append(float(frame.time))
            levels.append(float(frame.to_ndarray(format="gray").mean()))
            size = (frame.width, frame.height)
    return onsets(times, levels, 128), len(times), size, times[0], times[-1]


def beeps(path: Path) -> tuple[list[float], float, float]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        times, levels = [], []
        first = last = None
        for frame in container.decode(stream):
            data = frame.to_ndarray().astype(np.float64)
            data = data.reshape(-1, data.shape[-1]).mean(axis=0)  # planar or packed: one row
            rate = frame.sample_rate
            step = rate // 200  # 5 ms windows
            for i in range(0, len(data) - step + 1, step):
                times.append(float(frame.time) + i / rate)
                levels.append(float(np.sqrt(np.mean(data[i : i + step] ** 2))))
            first = float(frame.time) if first is None else first
            last = float(frame.time) + frame.samples / rate
    assert first is not None and last is not None
    return onsets(times, levels, 0.05 * 32768 if max(levels) > 2 else 0.05), first, last


async def test_a_recorded_consultation_has_synchronised_playable_files(tmp_path: Path) -> None:
    hooks = Receiver()
    await hooks.start()
    events = '["recording_started", "recording_stopped", "recording_downloaded"]'
    rec_server = RunningServer(
        tmp_path,
        extra=recording_config(
            tmp_path / "recordings",
            f'[[webhooks]]\nurl = "{hooks.url}"\nsecret = "{"w" * 40}"\nevents = {events}\n',
        ),
    )
    try:
        await record_and_check(rec_server, hooks, tmp_path)
    finally:
        rec_server.stop()
        await hooks.stop()


async def record_and_check(rec_server: RunningServer, hooks: Receiver, tmp_path: Path) -> None:
    room = "consult"
    t0 = time.time() + 0.5
    lead = await publish_signal(rec_server, room, t0)
    try:
        await asyncio.sleep(1.0)  # media flowing before the recording starts
        status, created, _ = await rest(rec_server, "POST", f"/api/v1/rooms/{room}/recordings")
        assert status == 201, created
        assert created["room"] == room and created["state"] == "recording"
        recording = created["id"]
        status, again, _ = await rest(rec_server, "POST", f"/api/v1/rooms/{room}/recordings")
        assert status == 409 and again["error"]["code"] == "conflict"
        await wait_recorded(rec_server, recording, 2)
        await asyncio.sleep(9.0)
        status, manifest, _ = await rest(rec_server, "POST", f"/api/v1/recordings/{recording}/stop")
        assert status == 200 and manifest["state"] == "stopped", manifest
    finally:
        await lead.close()

    session = manifest["stopped_at"] - manifest["started_at"]
    assert [p["identity"] for p in manifest["participants"]] == ["dr-lan"]
    assert manifest["participants"][0]["role"] == "lead"
    files = {f["kind"]: f for f in manifest["files"]}
    assert files["video"]["codec"] == "vp8" and files["video"]["name"].endswith(".webm")
    assert files["audio"]["codec"] == "opus" and files["audio"]["name"].endswith(".webm")
    assert (files["video"]["width"], files["video"]["height"]) == (320, 240)

    folder = rec_server.config.parent / "recordings" / recording
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for entry in manifest["files"]:
        assert stat.S_IMODE((folder / entry["name"]).stat().st_mode) == 0o600
        assert entry["size"] == (folder / entry["name"]).stat().st_size > 1000

    # A teacher downloads the files (whole, and a range) over the API.
    downloaded = {}
    for kind, entry in files.items():
        url = f"/api/v1/recordings/{recording}/files/{entry['name']}"
        status, body, headers = await rest(rec_server, "GET", url)
        assert status == 200 and len(body) == entry["size"]
        status, part, headers = await rest(rec_server, "GET", url, {"Range": "bytes=0-99"})
        assert status == 206 and part == body[:100]
        downloaded[kind] = tmp_path / entry["name"]
        downloaded[kind].write_bytes(body)
    assert "download: api key backend" in rec_server.logs()

    video_onsets, frames, size, v_first, v_last = flashes(downloaded["video"])
    audio_onsets, a_first, a_last = beeps(downloaded["audio"])
    assert size == (320, 240)
    assert frames >= 25 * session * 0.8, f"{frames} frames in {session:.1f} s"
    for first, last, what in ((v_first, v_last, "video"), (a_first, a_last, "audio")):
        assert abs((last - first) - session) < 0.05 * session, (
            f"{what} lasts {last - first:.2f} s of a {session:.2f} s session"
        )
    assert len(video_onsets) >= 3 and len(audio_onsets) >= 3, (video_onsets, audio_onsets)
    offsets = [min(abs(v - a) for a in audio_onsets) for v in video_onsets]
    assert max(offsets) < 0.1, f"audio/video offsets {offsets}"

    # Webhooks: started, stopped (sizes and durations), and each download.
    await hooks.wait(2 + 2 * len(files))
    by_event: dict[str, list[dict[str, Any]]] = {}
    for payload in hooks.payloads():
        by_event.setdefault(payload["event"], []).append(payload["data"])
    assert by_event["recording_started"][0]["recording"]["id"] == recording
    (stopped,) = by_event["recording_stopped"]
    assert {f["name"]: f["size"] for f in stopped["files"]} == {
        f["name"]: f["size"] for f in manifest["files"]
    }
    assert all(abs(f["duration"] - session) < 0.05 * session for f in stopped["files"])
    assert {d["file"] for d in by_event["recording_downloaded"]} == {
        f["name"] for f in manifest["files"]
    }
    assert all(d["api_key"] == "backend" for d in by_event["recording_downloaded"])

    status, listing, _ = await rest(rec_server, "GET", f"/api/v1/recordings?room={room}")
    assert [r["id"] for r in listing["recordings"]] == [recording]
    status, _, _ = await rest(rec_server, "GET", f"/api/v1/recordings/{recording}/files/x.webm")
    assert status == 404
    status, _, _ = await rest(rec_server, "DELETE", f"/api/v1/recordings/{recording}")
    assert status == 204 and not folder.exists()
    status, _, _ = await rest(rec_server, "GET", f"/api/v1/recordings/{recording}")
    assert status == 404


async def join_raw(server: RunningServer, room: str, identity: str, role: str) -> dict[str, Any]:
    """A bare /ws join: the answer a client gets."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.base_url.replace("http", "ws") + "/ws") as ws:
            await ws.send_json(
                {"v": 1, "type": "join", "id": 1, "token": server.token(room, identity, role)}
            )
            while True:
                message = await ws.receive_json(timeout=10)
                if message.get("type") == "response":
                    data: dict[str, Any] = message["data"]
                    return data


async def test_the_lead_records_from_the_websocket_and_everyone_sees_it(
    rec_server: RunningServer, tmp_path: Path
) -> None:
    room = "ward-round"
    t0 = time.time()
    lead = await publish_signal(rec_server, room, t0)
    nurse = await TelebridgeClient.connect(
        rec_server.base_url, rec_server.token(room, "nurse", "observer")
    )
    try:
        assert (await join_raw(rec_server, room, "student", "observer"))["recording"] is None
        with pytest.raises(ProtocolError) as refused:
            await nurse.request("start_recording")
        assert refused.value.code == "forbidden"

        mark = nurse.mark()
        started = (await lead.request("start_recording"))["recording"]
        assert started["state"] == "recording" and started["room"] == room
        event = await nurse.wait_for("recording_started", since=mark)
        assert event["recording"]["id"] == started["id"] and event["by"] == "dr-lan"
        joined = await join_raw(rec_server, room, "late-student", "observer")
        assert joined["recording"]["id"] == started["id"], "a joiner is told it is recorded"

        await wait_recorded(rec_server, started["id"], 2)
        # A track published during the recording is recorded too.
        resident = await TelebridgeClient.connect(
            rec_server.base_url, rec_server.token(room, "resident", "participant")
        )
        try:
            await resident.publish(video=FlashTrack(t0), video_codec="VP8")
            manifest = await wait_recorded(rec_server, started["id"], 3)
            assert {f["owner"] for f in manifest["files"]} == {"dr-lan", "resident"}
            await asyncio.sleep(5.0)  # a few flashes of both
            mark = nurse.mark()
            with pytest.raises(ProtocolError) as refused:
                await nurse.request("stop_recording")
            assert refused.value.code == "forbidden"
            await lead.request("stop_recording")
            stopped = await nurse.wait_for("recording_stopped", since=mark)
        finally:
            await resident.close()
        assert stopped["recording"]["state"] == "stopped" and stopped["duration"] > 2
        assert len(stopped["files"]) == 3 and all(f["size"] > 1000 for f in stopped["files"])
        assert (await join_raw(rec_server, room, "later", "observer"))["recording"] is None
        _, manifest, _ = await rest(rec_server, "GET", f"/api/v1/recordings/{started['id']}")
        roles = {p["identity"]: p["role"] for p in manifest["participants"]}
        assert roles["dr-lan"] == "lead" and roles["resident"] == "participant"
        assert roles["late-student"] == "observer"
    finally:
        await nurse.close()
        await lead.close()
    check_composed(rec_server, manifest, t0, tmp_path)


def check_composed(
    server: RunningServer, manifest: dict[str, Any], t0: float, tmp_path: Path
) -> None:
    """`telebridge recordings compose`: an H.264 + AAC MP4 as long as the recording, the
    lead large on the left and the resident beside it, both flashing when they did."""
    from recording.compose import HEIGHT, LEAD_BOX, SIDE_H, SIDE_W, WIDTH

    cli = [sys.executable, "-m", "signaling.cli", "recordings", "--config", str(server.config)]
    listed = subprocess.run([*cli, "list"], capture_output=True, text=True, timeout=60)
    assert manifest["id"] in listed.stdout and "stopped" in listed.stdout, listed
    out = tmp_path / "teaching.mp4"
    done = subprocess.run(
        [*cli, "compose", manifest["id"], "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "100.0%" in done.stderr and "lead dr-lan" in done.stdout, (done.stdout, done.stderr)
    span = max(f["end"] for f in manifest["files"]) - manifest["started_at"]
    boxes = {
        "lead": (LEAD_BOX[0], LEAD_BOX[1], LEAD_BOX[2], LEAD_BOX[3]),
        "beside": (LEAD_BOX[2], 0, SIDE_W, SIDE_H),
    }
    bright: dict[str, list[float]] = {"lead": [], "beside": []}
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        duration = float(container.duration or 0) / av.time_base
        times = []
        for frame in container.decode(video=0):
            assert (frame.width, frame.height) == (WIDTH, HEIGHT)
            image = frame.to_ndarray(format="gray")
            t = float(frame.time)
            times.append(t)
            for name, (x, y, w, h) in boxes.items():
                if image[y + h // 4 : y + h // 2, x + w // 4 : x + 3 * w // 4].mean() > 128:
                    bright[name].append(t)
    assert abs(duration - span) < 0.05 * span, (duration, span)
    assert abs(times[-1] - span) < 0.05 * span, (times[-1], span)
    flashes_at = [
        t0 + k * PERIOD - manifest["started_at"]
        for k in range(100)
        if 1.0 < t0 + k * PERIOD - manifest["started_at"] < span - 1.0
    ]
    for name, moments in bright.items():
        seen = [f for f in flashes_at if any(f - 0.1 <= m <= f + PULSE + 0.15 for m in moments)]
        stray = [
            m for m in moments if all(not f - 0.1 <= m <= f + PULSE + 0.15 for f in flashes_at)
        ]
        if name == "beside":  # the resident published later than the lead
            (theirs,) = [f for f in manifest["files"] if f["owner"] == "resident"]
            seen_from = theirs["start"] - manifest["started_at"] + 0.5
            flashes_expected = [f for f in flashes_at if f > seen_from]
        else:
            flashes_expected = flashes_at
        assert len(seen) >= len(flashes_expected) - 1 and len(flashes_expected) >= 1, (
            name,
            flashes_expected,
            moments,
        )
        assert len([m for m in stray if 1.0 < m < span - 1.0]) <= 1, (name, stray)


def recorder_pid(server: RunningServer) -> int:
    out = subprocess.run(
        ["pgrep", "-P", str(server.process.pid), "-f", "recording.process"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


async def test_a_killed_recorder_leaves_playable_files(
    rec_server: RunningServer, tmp_path: Path
) -> None:
    room = "crash"
    lead = await publish_signal(rec_server, room, time.time())
    try:
        _, created, _ = await rest(rec_server, "POST", f"/api/v1/rooms/{room}/recordings")
        await wait_recorded(rec_server, created["id"], 2)
        await asyncio.sleep(5.0)
        killed_at = time.time()
        os.kill(recorder_pid(rec_server), signal.SIGKILL)

        async def failed() -> dict[str, Any] | None:
            _, manifest, _ = await rest(rec_server, "GET", f"/api/v1/recordings/{created['id']}")
            return manifest if manifest["state"] == "failed" else None

        manifest = await wait_until(failed, 20, "the recording to fail")
        assert "recorder" in manifest["error"]
        # The consultation goes on: a viewer still gets the lead's video.
        viewer = await start_whep_viewer(
            rec_server.base_url, room, rec_server.token(room, "viewer", "observer"), "dr-lan"
        )
        try:
            await viewer.wait_frames(10)
        finally:
            await viewer.close()
    finally:
        await lead.close()
    folder = rec_server.config.parent / "recordings" / created["id"]
    for entry in manifest["files"]:
        with av.open(str(folder / entry["name"])) as container:
            stream = container.streams[0]
            frames = [f for f in container.decode(stream)]
        span = float(frames[-1].time) - float(frames[0].time)
        lost = killed_at - manifest["started_at"] - span - float(frames[0].time)
        assert span > 3.0 and lost < 2.5, (
            f"{entry['name']}: {span:.2f} s decoded, {lost:.2f} s lost"
        )


async def test_a_full_disk_stops_the_recording_and_the_consultation_goes_on(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    server = None
    try:
        (disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))  # ~60 KiB left
        server = RunningServer(tmp_path, extra=recording_config(disk / "recordings"))
        room = "full"
        lead = await publish_signal(server, room, time.time())
        try:
            viewer_room = await TelebridgeClient.connect(
                server.base_url, server.token(room, "watcher", "observer")
            )
            mark = viewer_room.mark()
            _, created, _ = await rest(server, "POST", f"/api/v1/rooms/{room}/recordings")
            assert created["state"] == "recording"
            failed = await viewer_room.wait_for("recording_failed", timeout=60, since=mark)
            assert failed["recording"]["id"] == created["id"]
            assert "No space" in failed["error"], failed
            _, manifest, _ = await rest(server, "GET", f"/api/v1/recordings/{created['id']}")
            assert manifest["state"] == "failed"
            viewer = await start_whep_viewer(
                server.base_url, room, server.token(room, "viewer", "observer"), "dr-lan"
            )
            try:
                await viewer.wait_frames(10)
            finally:
                await viewer.close()
            # Space freed: the next recording works.
            (disk / "filler").unlink()
            _, again, _ = await rest(server, "POST", f"/api/v1/rooms/{room}/recordings")
            assert again["state"] == "recording"
            await wait_recorded(server, again["id"], 2)
            await viewer_room.close()
        finally:
            await lead.close()
        assert "Traceback" not in server.logs(), server.logs()[-3000:]
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)


async def test_auto_record_and_retention(tmp_path: Path) -> None:
    server = RunningServer(
        tmp_path,
        extra=recording_config(tmp_path / "rec", f"retention_days = {3 / 86400}"),
    )
    try:
        room = "auto"
        async with aiohttp.ClientSession() as http:
            async with http.post(
                server.base_url + "/api/v1/rooms",
                json={"name": room, "auto_record": True},
                headers={"Authorization": AUTH},
            ) as response:
                assert response.status == 201
        lead = await publish_signal(server, room, time.time())
        try:

            async def listed() -> list[dict[str, Any]]:
                _, data, _ = await rest(server, "GET", f"/api/v1/recordings?room={room}")
                return list(data["recordings"])

            (recording,) = await wait_until(listed, 20, "an automatic recording")
            await wait_recorded(server, recording["id"], 2)
            await rest(server, "POST", f"/api/v1/recordings/{recording['id']}/stop")
            # Stopped by someone: a track published later does not start another.
            other = await TelebridgeClient.connect(
                server.base_url, server.token(room, "resident", "participant")
            )
            try:
                await other.publish(audio=BeepTrack(time.time()))
                await asyncio.sleep(2.0)
                assert len(await listed()) == 1
            finally:
                await other.close()
        finally:
            await lead.close()
        folder = tmp_path / "rec" / recording["id"]
        assert folder.exists()

        async def gone() -> bool:
            status, _, _ = await rest(server, "GET", f"/api/v1/recordings/{recording['id']}")
            return status == 404

        await wait_until(gone, 20, "retention to delete the recording")
        assert not folder.exists()
    finally:
        server.stop()


async def test_h264_is_recorded_to_matroska(rec_server: RunningServer, tmp_path: Path) -> None:
    room = "h264"
    lead = await TelebridgeClient.connect(
        rec_server.base_url, rec_server.token(room, "dr-lan", "lead")
    )
    try:
        await lead.publish(video=FlashTrack(time.time()), video_codec="H264")
        _, created, _ = await rest(rec_server, "POST", f"/api/v1/rooms/{room}/recordings")
        await wait_recorded(rec_server, created["id"], 1)
        await asyncio.sleep(3.0)
        _, manifest, _ = await rest(rec_server, "POST", f"/api/v1/recordings/{created['id']}/stop")
    finally:
        await lead.close()
    (entry,) = manifest["files"]
    assert entry["codec"] == "h264" and entry["name"].endswith(".mkv")
    folder = rec_server.config.parent / "recordings" / created["id"]
    with av.open(str(folder / entry["name"])) as container:
        assert container.format.name == "matroska,webm"
        frames = list(container.decode(video=0))
    assert len(frames) > 30 and (frames[0].width, frames[0].height) == (320, 240)


async def test_a_simulcast_track_is_recorded_at_its_top_layer(rec_server: RunningServer) -> None:
    """Three encodings (bench/loadclient.py's simulcast publisher, as a browser sends
    them): the recording holds the top one, 640x360, from its first frame."""
    from bench.loadclient import make_clip
    from tests.test_simulcast import ROOM, SIZES, simulcast_publisher

    clips = [make_clip(0, 2.0, 15, w, h, bitrate=b) for w, h, b in SIZES]
    async with simulcast_publisher(rec_server, clips):
        _, created, _ = await rest(rec_server, "POST", f"/api/v1/rooms/{ROOM}/recordings")
        await wait_recorded(rec_server, created["id"], 2)
        await asyncio.sleep(3.0)
        _, manifest, _ = await rest(rec_server, "POST", f"/api/v1/recordings/{created['id']}/stop")
    (video,) = [f for f in manifest["files"] if f["kind"] == "video"]
    assert (video["width"], video["height"]) == (640, 360), video
    folder = rec_server.config.parent / "recordings" / created["id"]
    with av.open(str(folder / video["name"])) as container:
        sizes = [(f.width, f.height) for f in container.decode(video=0)]
    assert len(sizes) > 30 and set(sizes) == {(640, 360)}, set(sizes)


async def test_a_killed_server_leaves_playable_files_listed_after_a_restart(
    tmp_path: Path,
) -> None:
    """SIGKILL of the control process: the recorder sees its stdin close and finishes the
    files; the next server lists the recording as failed, with its files downloadable."""
    root = tmp_path / "recordings"
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = RunningServer(tmp_path / "a", extra=recording_config(root))
    room = "power-cut"
    try:
        lead = await publish_signal(first, room, time.time())
        try:
            _, created, _ = await rest(first, "POST", f"/api/v1/rooms/{room}/recordings")
            await wait_recorded(first, created["id"], 2)
            await asyncio.sleep(4.0)
            recorder = recorder_pid(first)
            first.process.kill()
            first.process.wait(10)
            deadline = time.monotonic() + 15
            while Path(f"/proc/{recorder}").exists():
                assert time.monotonic() < deadline, "the recorder outlived its server"
                await asyncio.sleep(0.1)
        finally:
            await lead.close()
    finally:
        first.stop()
    second = RunningServer(tmp_path / "b", extra=recording_config(root))
    try:
        _, manifest, _ = await rest(second, "GET", f"/api/v1/recordings/{created['id']}")
        assert manifest["state"] == "failed" and "stopped while recording" in manifest["error"]
        assert len(manifest["files"]) == 2
        for entry in manifest["files"]:
            status, body, _ = await rest(
                second, "GET", f"/api/v1/recordings/{created['id']}/files/{entry['name']}"
            )
            assert status == 200
            path = tmp_path / entry["name"]
            path.write_bytes(body)
            with av.open(str(path)) as container:
                times = [float(f.time) for f in container.decode(container.streams[0])]
            assert times[-1] - times[0] > 3.0, (entry["name"], times[0], times[-1])
    finally:
        second.stop()
