"""One recorded track, sans-I/O: plain RTP and RTCP in, whole encoded frames out.

Packets go through a reorder buffer, then are depacketised (VP8: RFC 7741, H.264:
RFC 6184 with aiortc's depayloaders; Opus: one packet is one frame) and stamped with
wall-clock time through the sender's SRs (recording/timing.py). Video starts at a
keyframe and, after a packet is lost inside a frame, waits for the next one (asking for
it: ``keyframe_wanted``), so a file never holds a frame its decoder cannot use. Nothing
here touches a socket or a file; recording/process.py moves the bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import vp8_depayload

from recording.timing import Clock, ReorderBuffer, Unwrap
from sfu import rtcp
from sfu.codecs import is_keyframe, keyframe_size
from sfu.rtp import RtpError, is_rtcp, parse_rtp, read_map

logger = logging.getLogger(__name__)

CODECS = ("vp8", "h264", "opus")
KEYFRAME_REQUEST_INTERVAL = 1.0  # seconds between our PLIs while waiting for a keyframe
_NO_EXTENSIONS = read_map({})
Held = tuple[int, int, bytes, float]  # RTP timestamp, marker, payload, arrival time
# How long packets wait for the first sender report before arrival times anchor them. The
# first packets may be old (a consumer starts at a cached keyframe), so arrival time is
# only a last resort; the worker sends an SR within a second or two of the first packet.
SR_WAIT = 3.0


@dataclass(frozen=True)
class TrackSpec:
    """What the worker's ``consume`` answered, and where the track belongs."""

    track: str
    kind: str
    codec: str
    clock_rate: int
    channels: int
    payload_type: int
    ssrcs: tuple[int, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackSpec:
        codec = str(data["codec"]).lower()
        if codec not in CODECS:
            raise ValueError(f"cannot record {codec!r} (only {', '.join(CODECS)})")
        return cls(
            track=str(data["track"]),
            kind=str(data["kind"]),
            codec=codec,
            clock_rate=int(data["clock_rate"]),
            channels=int(data.get("channels") or 1),
            payload_type=int(data["payload_type"]),
            ssrcs=tuple(int(s) for s in data["ssrcs"]),
        )


@dataclass(frozen=True)
class Frame:
    data: bytes
    time: float  # Unix seconds at which it was sampled
    keyframe: bool
    size: tuple[int, int] | None  # a video keyframe's picture size


class TrackRecorder:
    """Turns one consumer's plain RTP into frames; see the module docstring."""

    def __init__(self, spec: TrackSpec, reorder_delay: float = 0.15) -> None:
        self.spec = spec
        self.video = spec.kind == "video"
        self.media_ssrc = spec.ssrcs[0]
        self.clock = Clock(spec.clock_rate, spec.track)
        self.seq = Unwrap(16)
        self.buffer: ReorderBuffer[Held] = ReorderBuffer(reorder_delay)
        self.waiting_keyframe = self.video
        self._last_request = float("-inf")
        self._parts: list[bytes] = []
        self._frame_ts: int | None = None
        self._frame_time = 0.0
        self._frame_key = False
        self._frame_size: tuple[int, int] | None = None
        self._frame_broken = False
        self.packets = 0
        self.first_arrival: float | None = None
        self.lost = 0
        self.frames_dropped = 0

    # -- input ---------------------------------------------------------------------------
    def datagram(self, data: bytes, arrival: float) -> None:
        if is_rtcp(data):
            self._rtcp(data)
            return
        try:
            packet = parse_rtp(data, _NO_EXTENSIONS)
        except RtpError:
            return
        if packet.ssrc != self.media_ssrc or packet.pt != self.spec.payload_type:
            return  # RTX, padding probes, or another stream: not media of this track
        if not packet.payload:
            return
        self.packets += 1
        if self.first_arrival is None:
            self.first_arrival = arrival
        self.buffer.push(
            self.seq(packet.seq), (packet.ts, packet.marker, packet.payload, arrival), arrival
        )

    def _rtcp(self, data: bytes) -> None:
        try:
            packets = rtcp.parse_compound(data)
        except Exception:  # a malformed compound: nothing of it is used
            return
        for item in packets:
            if isinstance(item, rtcp.RtcpSrPacket) and item.ssrc == self.media_ssrc:
                info = item.sender_info
                self.clock.sender_report(info.rtp_timestamp, info.ntp_timestamp)

    # -- output --------------------------------------------------------------------------
    def poll(self, now: float) -> list[Frame]:
        """Frames complete by ``now`` (packets held past the reorder delay are released),
        once the stream's timing is known (see :data:`SR_WAIT`)."""
        if not self.clock.from_sr and (
            self.first_arrival is None or now - self.first_arrival < SR_WAIT
        ):
            return []
        return self._frames(self.buffer.pop(now))

    def flush(self) -> list[Frame]:
        frames = self._frames(self.buffer.flush())
        if self._parts and not self.video:
            frames += self._finish()
        return frames

    def keyframe_wanted(self, now: float) -> bool:
        """Whether to send the worker a PLI now (throttled)."""
        if not self.waiting_keyframe or now - self._last_request < KEYFRAME_REQUEST_INTERVAL:
            return False
        self._last_request = now
        return True

    def pli(self) -> bytes:
        return rtcp.pli(0x5EC0DE, self.media_ssrc)

    # -- depacketising -------------------------------------------------------------------
    def _frames(self, released: list[tuple[int, Held, bool]]) -> list[Frame]:
        out: list[Frame] = []
        for _seq, item, gap in released:
            ts, marker, payload, arrival = item
            wall = self.clock.wall(ts, arrival)
            if gap:
                self.lost += 1
            if not self.video:
                out.append(Frame(bytes(payload), wall, True, None))
                continue
            if gap:
                # Lost packets: the frame in progress is incomplete, and a whole lost frame
                # leaves later ones referring to it; either way decode resumes at a keyframe.
                self._frame_broken = self._frame_ts is not None
                self.waiting_keyframe = True
            if self._frame_ts is not None and ts != self._frame_ts:
                out += self._finish()  # a frame whose last packet (marker) never came
            if self._frame_ts is None:
                self._frame_ts, self._frame_time = ts, wall
                self._frame_key = is_keyframe(self.spec.codec, payload)
                self._frame_size = (
                    keyframe_size(self.spec.codec, payload) if self._frame_key else None
                )
            elif not self._frame_key and is_keyframe(self.spec.codec, payload):
                self._frame_key = True  # H.264: the IDR after an SPS/PPS packet, say
                self._frame_size = self._frame_size or keyframe_size(self.spec.codec, payload)
            try:
                self._parts.append(self._depayload(payload))
            except Exception:  # a malformed payload spoils its frame, not the recording
                self._frame_broken = True
            if marker:
                out += self._finish()
        return out

    def _depayload(self, payload: bytes) -> bytes:
        if self.spec.codec == "vp8":
            return bytes(vp8_depayload(payload))
        return bytes(h264_depayload(payload))

    def _finish(self) -> list[Frame]:
        parts, self._parts = self._parts, []
        key, broken = self._frame_key, self._frame_broken
        self._frame_ts = None
        self._frame_broken = False
        if not parts:
            return []
        if broken:
            self.frames_dropped += 1
            self.waiting_keyframe = True  # the decoder's references are gone until one
            return []
        if self.waiting_keyframe and not key:
            self.frames_dropped += 1
            return []
        if key:
            self.waiting_keyframe = False
        return [Frame(b"".join(parts), self._frame_time, key, self._frame_size)]
