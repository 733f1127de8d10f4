"""Real WebRTC peers for tests and benchmarks: aiortc WHIP publishers and WHEP viewers."""

from __future__ import annotations

import asyncio
import fractions
import math
import re
import time
from typing import Any

import aiohttp
import aioice.ice
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)

from bench.linkemu import via_relay

# aioice leaves 127.0.0.1 out when it lists host addresses; tests talk over loopback only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # type: ignore[assignment]


class MovingVideoTrack(VideoStreamTrack):
    """A bar moving across a gradient, so every frame differs and decoding is checkable."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width = width
        self.height = height
        self.count = 0
        ramp = np.linspace(0, 255, width, dtype=np.uint8)
        self.base = np.repeat(np.repeat(ramp[None, :, None], height, axis=0), 3, axis=2)

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = self.base.copy()
        x = (self.count * 4) % self.width
        image[:, x : x + 16, :] = (0, 0, 255)
        self.count += 1
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class SineAudioTrack(MediaStreamTrack):
    """A 440 Hz tone in 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self, rate: int = 48000) -> None:
        super().__init__()
        self.rate = rate
        self.samples = rate // 50
        self.pts = 0
        self.start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.pts / self.rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(self.samples) + self.pts) / self.rate
        data = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self.pts += self.samples
        return frame


class WhipError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


async def _post_offer(
    http: aiohttp.ClientSession, url: str, token: str | None, sdp: str
) -> tuple[str, str, str]:
    headers = {"Content-Type": "application/sdp"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url, data=sdp, headers=headers) as response:
        body = await response.text()
        if response.status != 201:
            raise WhipError(response.status, body)
        return body, response.headers["Location"], response.headers.get("Link", "")


async def _gathered(pc: RTCPeerConnection) -> None:
    await pc.setLocalDescription(await pc.createOffer())
    while pc.iceGatheringState != "complete":
        await asyncio.sleep(0.01)


def _via(answer: str, port: int | None) -> str:
    """Point the client at a relay on 127.0.0.1 (bench/linkemu.py) instead of the server."""
    if port is None:
        return answer
    return via_relay(answer, ("127.0.0.1", port))


def prefer_codec(pc: RTCPeerConnection, kind: str, codec: str) -> None:
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    wanted = [c for c in codecs if c.mimeType.lower() == f"{kind}/{codec.lower()}"]
    rtx = [c for c in codecs if c.mimeType.lower() == f"{kind}/rtx"]
    for transceiver in pc.getTransceivers():
        if transceiver.kind == kind:
            transceiver.setCodecPreferences(wanted + rtx)


class WhipPublisher:
    def __init__(self, base_url: str, room: str, token: str) -> None:
        self.url = f"{base_url}/whip/{room}"
        self.base_url = base_url
        self.token = token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.http = aiohttp.ClientSession()
        self.location: str | None = None
        self.answer = ""

    async def start(
        self,
        video_codec: str | None = "VP8",
        audio: bool = True,
        width: int = 320,
        height: int = 240,
        via_port: int | None = None,
    ) -> None:
        if video_codec:
            self.video = MovingVideoTrack(width, height)
            self.pc.addTransceiver(self.video, direction="sendonly")
            prefer_codec(self.pc, "video", video_codec)
        if audio:
            self.pc.addTransceiver(SineAudioTrack(), direction="sendonly")
        await _gathered(self.pc)
        self.answer, self.location, self.link = await _post_offer(
            self.http, self.url, self.token, self.pc.localDescription.sdp
        )
        await self.pc.setRemoteDescription(
            RTCSessionDescription(_via(self.answer, via_port), "answer")
        )

    async def wait_connected(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline:
                raise TimeoutError(f"publisher state {self.pc.connectionState}")
            await asyncio.sleep(0.05)

    async def close(self, delete: bool = True) -> None:
        if delete and self.location:
            async with self.http.delete(
                self.base_url + self.location, headers={"Authorization": f"Bearer {self.token}"}
            ):
                pass
        await self.pc.close()
        await self.http.close()


class WhepViewer:
    def __init__(
        self, base_url: str, room: str, token: str, participant: str | None = None
    ) -> None:
        self.url = f"{base_url}/whep/{room}" + (
            f"?participant={participant}" if participant else ""
        )
        self.base_url = base_url
        self.token = token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.http = aiohttp.ClientSession()
        self.location: str | None = None
        self.link = ""  # the answer's Link header (WHEP extensions)
        self.answer = ""
        self.video_frames = 0
        self.audio_frames = 0
        self.video_frame_times: list[float] = []
        self.last_video_frame: av.VideoFrame | None = None
        self.started_at = 0.0
        self._tasks: list[asyncio.Task[Any]] = []

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            if track.kind == "video":
                self.video_frames += 1
                self.video_frame_times.append(time.monotonic())
                self.last_video_frame = frame
            else:
                self.audio_frames += 1

    async def start(self, via_port: int | None = None) -> None:
        """Offer, post, answer. ``via_port`` rewrites the server's candidate port so that
        media flows through a relay listening there (loss tests)."""
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        await _gathered(self.pc)
        self.started_at = time.monotonic()
        self.answer, self.location, self.link = await _post_offer(
            self.http, self.url, self.token, self.pc.localDescription.sdp
        )
        await self.pc.setRemoteDescription(
            RTCSessionDescription(_via(self.answer, via_port), "answer")
        )

    def server_port(self) -> int:
        match = re.search(r"a=candidate:\S+ 1 udp \d+ \S+ (\d+)", self.answer)
        assert match, self.answer
        return int(match.group(1))

    async def wait_frames(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.video_frames < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.video_frames} video frames after {timeout} s (state {self.pc.connectionState})"
                )
            await asyncio.sleep(0.05)

    async def wait_audio_frames(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.audio_frames < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.audio_frames} audio frames after {timeout} s (state {self.pc.connectionState})"
                )
            await asyncio.sleep(0.05)

    def rate(self, window: float) -> float:
        """Decoded video frames per second over the last ``window`` seconds."""
        if not self.video_frame_times:
            return 0.0
        end = self.video_frame_times[-1]
        recent = [t for t in self.video_frame_times if t > end - window]
        return len(recent) / window

    async def close(self, delete: bool = True) -> None:
        if delete and self.location:
            async with self.http.delete(
                self.base_url + self.location, headers={"Authorization": f"Bearer {self.token}"}
            ):
                pass
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        await self.http.close()


async def start_whep_viewer(
    base_url: str, room: str, token: str, participant: str | None = None
) -> WhepViewer:
    viewer = WhepViewer(base_url, room, token, participant)
    try:
        await viewer.start()
    except BaseException:
        await viewer.close(delete=False)  # a refused offer must not leak its HTTP session
        raise
    return viewer


async def start_whip_publisher(
    base_url: str, room: str, token: str, video_codec: str | None = "VP8", audio: bool = True
) -> WhipPublisher:
    publisher = WhipPublisher(base_url, room, token)
    try:
        await publisher.start(video_codec, audio)
    except BaseException:
        await publisher.close(delete=False)
        raise
    return publisher


# -- ICE restart (aiortc has no restartIce: the client half is done on its aioice agent) ----

TRICKLE = "application/trickle-ice-sdpfrag"


def ice_agent(pc: RTCPeerConnection) -> aioice.Connection:
    """The aioice agent under an aiortc connection (one BUNDLE transport)."""
    transport = pc.getTransceivers()[0].receiver.transport.transport
    return transport.iceGatherer._connection  # type: ignore[no-any-return]


async def patch_fragment(
    peer: WhipPublisher | WhepViewer, fragment: str, if_match: str | None = "*"
) -> tuple[int, str, Any]:
    """PATCH the peer's session resource with an sdpfrag: (status, body, headers)."""
    assert peer.location is not None
    headers = {"Authorization": f"Bearer {peer.token}", "Content-Type": TRICKLE}
    if if_match is not None:
        headers["If-Match"] = if_match
    async with peer.http.patch(
        peer.base_url + peer.location, data=fragment, headers=headers
    ) as response:
        return response.status, await response.text(), response.headers.copy()


async def restart_ice(peer: WhipPublisher | WhepViewer) -> tuple[str, str]:
    """What a browser does on pc.restartIce() with WHIP/WHEP (RFC 9725 section 4.3.2):
    new local credentials PATCHed to the session, the server's new ones from the answer
    fragment, then a nominating check with the new credentials over the agent's socket.
    Returns the server's new (ufrag, pwd); raises if the server does not answer."""
    from aioice import stun as aioice_stun

    from sfu.ice import new_credentials
    from signaling import sdpfrag

    agent = ice_agent(peer.pc)
    ufrag, pwd = new_credentials()
    lines = [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}", "m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0"]
    lines += [f"a=candidate:{c.to_sdp()}" for c in agent.local_candidates]
    status, body, _headers = await patch_fragment(peer, "\r\n".join(lines) + "\r\n")
    if status != 200:
        raise WhipError(status, body)
    answer = sdpfrag.parse(body)
    assert answer.ufrag and answer.pwd
    agent._local_username, agent._local_password = ufrag, pwd
    agent.remote_username, agent.remote_password = answer.ufrag, answer.pwd
    pair = next(iter(agent._nominated.values()))
    request = agent.build_request(pair, nominate=True)
    try:
        await pair.protocol.request(
            request, pair.remote_addr, integrity_key=answer.pwd.encode(), retransmissions=3
        )
    except aioice_stun.TransactionError as exc:
        raise AssertionError(f"no answer to a check with the new credentials: {exc}") from None
    return answer.ufrag, answer.pwd
