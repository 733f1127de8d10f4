"""One track's file: encoded frames muxed as they are (no transcoding) with PyAV.

VP8 and Opus go to WebM, H.264 to Matroska. The muxer runs in live mode (no cues or
seek head to write at the end; clusters of at most a second, each flushed to the file as
it closes), so a recorder killed at any moment leaves a file that plays up to its last
second or so. Files are created 0600 before PyAV opens them.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from recording.recorder import Frame, TrackSpec

TIME_BASE = Fraction(1, 1000)  # Matroska's usual millisecond ticks
CONTAINERS = {"vp8": ("webm", ".webm"), "opus": ("webm", ".webm"), "h264": ("matroska", ".mkv")}
MUXER_OPTIONS = {"live": "1", "cluster_time_limit": "1000", "flush_packets": "1"}


def file_name(spec: TrackSpec, stem: str) -> str:
    return stem + CONTAINERS[spec.codec][1]


class TrackWriter:
    """Opens its file at the first frame it can start with (video: a keyframe, whose
    picture size the stream header needs); times are milliseconds since ``origin``."""

    def __init__(self, spec: TrackSpec, path: Path, origin: float) -> None:
        self.spec = spec
        self.path = path
        self.origin = origin
        self.container: av.container.OutputContainer | None = None
        self.stream: Any = None
        self.last_pts = -1
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.frames = 0
        self.size: tuple[int, int] | None = None

    def write(self, frame: Frame) -> None:
        """Mux one frame; OSError (a full disk, say) propagates to the caller."""
        if self.container is None:
            if self.spec.kind == "video" and (not frame.keyframe or frame.size is None):
                return
            self._open(frame)
        pts = max(round((frame.time - self.origin) * 1000), 0, self.last_pts + 1)
        packet = av.Packet(frame.data)
        packet.stream = self.stream
        packet.time_base = TIME_BASE
        packet.pts = packet.dts = pts
        packet.is_keyframe = frame.keyframe
        assert self.container is not None
        self.container.mux(packet)
        self.last_pts = pts
        if self.first_time is None:
            self.first_time = self.origin + pts / 1000
        self.last_time = self.origin + pts / 1000
        self.frames += 1

    def _open(self, frame: Frame) -> None:
        fmt, _ = CONTAINERS[self.spec.codec]
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)  # made private first; PyAV reopens it by name
        container = av.open(str(self.path), "w", format=fmt, options=dict(MUXER_OPTIONS))
        stream: Any
        if self.spec.codec == "opus":
            stream = container.add_stream("libopus", rate=self.spec.clock_rate)
            stream.codec_context.layout = "stereo" if self.spec.channels == 2 else "mono"
        else:
            stream = container.add_stream(self.spec.codec)
            assert frame.size is not None
            stream.codec_context.width, stream.codec_context.height = frame.size
            self.size = frame.size
        stream.time_base = TIME_BASE
        self.container, self.stream = container, stream

    def close(self) -> None:
        if self.container is not None:
            container, self.container = self.container, None
            container.close()

    def bytes_written(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0
