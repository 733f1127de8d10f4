"""A plain transport out of a real media worker: what a local recorder or a pipe receives.

An aiortc publisher sends VP8 to a worker process over ICE + DTLS-SRTP; the control
channel opens a plain transport toward a UDP (or Unix datagram) socket of this test and
a consumer on it. The test then decodes the plain RTP it receives with PyAV, reads the
worker's sender reports, and asks for a keyframe with a PLI of its own.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.vpx import vp8_depayload

from sfu import control, rtcp
from sfu.codecs import is_keyframe
from sfu.pool import WorkerPool
from sfu.rtp import is_rtcp, parse_rtp, read_map
from sfu.settings import MediaSettings
from tests.peers import MovingVideoTrack, prefer_codec

pytestmark = pytest.mark.timeout(120)


class Vp8Receiver:
    """Reassembles VP8 frames from RTP (RFC 7741) and decodes them with PyAV."""

    def __init__(self, ssrcs: list[int], payload_type: int) -> None:
        self.ssrcs = ssrcs
        self.payload_type = payload_type
        self.decoder = av.CodecContext.create("vp8", "r")
        self.frames: list[av.VideoFrame] = []
        self.keyframes = 0
        self.sender_reports: list[rtcp.RtcpSrPacket] = []
        self.parts: list[bytes] = []
        self.expected_seq: int | None = None

    def datagram(self, data: bytes) -> None:
        if is_rtcp(data):
            self.sender_reports += [
                p for p in rtcp.parse_compound(data) if isinstance(p, rtcp.RtcpSrPacket)
            ]
            return
        packet = parse_rtp(data, read_map({}))
        assert packet.ssrc in self.ssrcs and packet.pt == self.payload_type
        if self.expected_seq is not None and packet.seq != self.expected_seq:
            self.parts = []  # a gap: drop the frame in progress
        self.expected_seq = (packet.seq + 1) & 0xFFFF
        if is_keyframe("vp8", packet.payload):
            self.keyframes += 1
        self.parts.append(vp8_depayload(packet.payload))
        if packet.marker:
            frame, self.parts = b"".join(self.parts), []
            self.frames += self.decoder.decode(av.Packet(frame))


async def publish(worker: object, room: str) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(MovingVideoTrack(320, 240), direction="sendonly")
    prefer_codec(pc, "video", "VP8")
    await pc.setLocalDescription(await pc.createOffer())
    while pc.iceGatheringState != "complete":
        await asyncio.sleep(0.01)
    result = await worker.call(  # type: ignore[attr-defined]
        control.PUBLISH,
        {"session": "lead", "room": room, "identity": "lead", "offer": pc.localDescription.sdp},
    )
    await pc.setRemoteDescription(RTCSessionDescription(result["answer"], "answer"))
    (video,) = [t for t in result["tracks"] if t["kind"] == "video"]
    return pc, video["id"]


@pytest.mark.parametrize("family", ["udp", "unix"])
async def test_a_plain_receiver_decodes_the_publishers_video(family: str, tmp_path: Path) -> None:
    pool = WorkerPool(MediaSettings(), lambda worker, event, data: None)
    await pool.start()
    worker = pool.workers[0]
    sock = socket.socket(socket.AF_UNIX if family == "unix" else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    pc: RTCPeerConnection | None = None
    try:
        if family == "unix":
            sock.bind(str(tmp_path / "recorder.sock"))
            remote: dict[str, object] = {"remote_path": str(tmp_path / "recorder.sock")}
        else:
            sock.bind(("127.0.0.1", 0))
            remote = {"remote_host": "127.0.0.1", "remote_port": sock.getsockname()[1]}
        pc, producer = await publish(worker, "teaching")
        local = await worker.call(
            control.PLAIN_TRANSPORT, {"session": "recorder", "room": "teaching", **remote}
        )  # type: ignore[typeddict-item]
        consumer = await worker.call(control.CONSUME, {"session": "recorder", "producer": producer})
        assert (consumer["kind"], consumer["codec"], consumer["clock_rate"]) == (
            "video",
            "vp8",
            90000,
        )
        worker_addr: object = (
            local["local_path"] if family == "unix" else (local["local_host"], local["local_port"])
        )
        if family == "unix":
            assert (Path(local["local_path"]).stat().st_mode & 0o777) == 0o600, (
                "only this user may talk to it"
            )

        receiver = Vp8Receiver(consumer["ssrcs"], consumer["payload_type"])
        loop = asyncio.get_running_loop()
        asked = False
        deadline = time.monotonic() + 30
        while len(receiver.frames) < 30 or not receiver.sender_reports or receiver.keyframes < 2:
            assert time.monotonic() < deadline, (
                f"{len(receiver.frames)} frames, {len(receiver.sender_reports)} SRs, {receiver.keyframes} keyframes"
            )
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 1.0)
            except TimeoutError:
                continue
            receiver.datagram(data)
            if len(receiver.frames) >= 10 and not asked:
                # A recorder that lost sync asks for a keyframe like any receiver.
                pli = rtcp.pli(0x5EC0DE, consumer["ssrcs"][0])
                await loop.sock_sendto(sock, pli, worker_addr)
                asked = True
        assert receiver.frames[0].width == 320 and receiver.frames[0].height == 240
        assert receiver.keyframes >= 2, "the first keyframe, and the one the PLI asked for"
        assert {sr.ssrc for sr in receiver.sender_reports} == set(consumer["ssrcs"])
        stats = await worker.call(control.STATS, {})
        assert stats["counters"]["plis_in"] >= 1
    finally:
        if pc is not None:
            await pc.close()
        sock.close()
        await pool.stop()


async def test_a_stranger_cannot_feed_a_plain_transport() -> None:
    """Only the configured remote may send: another local process's packets are dropped."""
    pool = WorkerPool(MediaSettings(), lambda worker, event, data: None)
    await pool.start()
    worker = pool.workers[0]
    mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        mine.bind(("127.0.0.1", 0))
        stranger.bind(("127.0.0.1", 0))
        local = await worker.call(
            control.PLAIN_TRANSPORT,
            {
                "session": "pipe",
                "room": "r",
                "remote_host": "127.0.0.1",
                "remote_port": mine.getsockname()[1],
            },
        )
        target = (local["local_host"], local["local_port"])
        rtp_packet = bytes([0x80, 96, 0, 1]) + bytes(8) + b"payload"
        for _ in range(5):
            stranger.sendto(rtp_packet, target)
        deadline = time.monotonic() + 10
        while True:
            stats = await worker.call(control.STATS, {})
            if stats["counters"].get("dropped", 0) >= 5:
                break
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.05)
        assert stats["counters"]["packets_in"] == 0
        with pytest.raises(Exception, match="remote_host and remote_port"):
            await worker.call(
                control.PLAIN_TRANSPORT, {"session": "bad", "room": "r", "remote_host": "127.0.0.1"}
            )
    finally:
        mine.close()
        stranger.close()
        await pool.stop()
