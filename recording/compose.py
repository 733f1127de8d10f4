"""A teaching video from a recording: one H.264 + AAC MP4, offline, outside the SFU.

The lead's camera fills most of the picture; the other sites' cameras sit beside it in a
column (the one speaking loudest over the last second first, so the active speaker or
presenting site is at the top), each tile labelled with the site's name and role. Every
participant's audio is mixed. Files share one time line (milliseconds since the
recording started, recording/writer.py), so a file that starts late, or has a gap,
shows a dark tile there rather than shifting anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1280, 720
FPS = 15
RATE = 48000
AUDIO_CHUNK = 1024  # AAC frame size
LEAD_BOX = (0, 90, 853, 480)  # x, y, w, h: 16:9, left
SIDE_W, SIDE_H = 427, 240  # each other site, in a column on the right
STALE = 1.0  # seconds a tile keeps its last frame before it goes dark


class ComposeError(Exception):
    pass


@dataclass
class Site:
    identity: str
    label: str
    role: str
    video: Path | None = None
    audio: Path | None = None
    loudness: float = 0.0  # recent audio level, for the order of the side tiles


class VideoSource:
    """A video file's frames, scaled to a tile, asked for at increasing times."""

    def __init__(self, path: Path, size: tuple[int, int]) -> None:
        self.container = av.open(str(path))
        self.size = size
        self._frames = self.container.decode(video=0)
        self._next: tuple[float, np.ndarray] | None = self._read()
        self.current: tuple[float, np.ndarray] | None = None

    def _read(self) -> tuple[float, np.ndarray] | None:
        try:
            frame = next(self._frames)
        except (StopIteration, av.FFmpegError):  # the end, or a file cut short by a crash
            return None
        image = frame.reformat(width=self.size[0], height=self.size[1], format="rgb24")
        return float(frame.time or 0.0), image.to_ndarray()

    def at(self, t: float) -> np.ndarray | None:
        while self._next is not None and self._next[0] <= t:
            self.current = self._next
            self._next = self._read()
        if self.current is None or t - self.current[0] > STALE:
            return None
        return self.current[1]

    def close(self) -> None:
        self.container.close()


class AudioSource:
    """An audio file as mono float samples at :data:`RATE`, placed by their time."""

    def __init__(self, path: Path) -> None:
        self.container = av.open(str(path))
        self._frames = self.container.decode(audio=0)
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        self.pending: list[tuple[int, np.ndarray]] = []
        self.done = False
        self._position: int | None = None  # the next sample index after what is pending

    def _pull(self) -> None:
        try:
            frame = next(self._frames)
        except (StopIteration, av.FFmpegError):
            self.done = True
            return
        start = round(float(frame.time or 0.0) * RATE)
        if self._position is not None and abs(start - self._position) < RATE // 50:
            start = self._position  # continuous audio stays continuous (no rounding clicks)
        for out in self.resampler.resample(frame):
            data = out.to_ndarray().reshape(-1).astype(np.float32)
            self.pending.append((start, data))
            start += len(data)
        self._position = start

    def read(self, start: int, count: int) -> np.ndarray:
        """Samples ``start`` .. ``start + count`` (silence where the file has none)."""
        out = np.zeros(count, np.float32)
        end = start + count
        while not self.done and (
            not self.pending or self.pending[-1][0] + len(self.pending[-1][1]) < end
        ):
            self._pull()
        keep = []
        for at, data in self.pending:
            lo, hi = max(at, start), min(at + len(data), end)
            if hi > lo:
                out[lo - start : hi - start] += data[lo - at : hi - at]
            if at + len(data) > end:
                keep.append((at, data))
        self.pending = keep
        return out

    def close(self) -> None:
        self.container.close()


@dataclass
class Layout:
    lead: Site | None
    others: list[Site] = field(default_factory=list)


def sites_of(manifest: dict[str, Any], folder: Path) -> Layout:
    """Who is in the recording and which files are theirs."""
    roles = {p["identity"]: p for p in manifest.get("participants", [])}
    sites: dict[str, Site] = {}
    for entry in manifest.get("files", []):
        path = folder / entry["name"]
        if not path.is_file() or not entry.get("size"):
            continue
        owner = entry.get("owner") or entry["name"]
        person = roles.get(owner, {})
        site = sites.setdefault(
            owner,
            Site(owner, str(person.get("name") or owner), str(person.get("role") or "")),
        )
        if entry.get("kind") == "video" and site.video is None:
            site.video = path
        elif entry.get("kind") == "audio" and site.audio is None:
            site.audio = path
    if not sites:
        raise ComposeError("the recording has no files with media")
    ordered = sorted(sites.values(), key=lambda s: (s.role != "lead", s.video is None, s.identity))
    return Layout(lead=ordered[0], others=ordered[1:])


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _label(canvas: np.ndarray, text: str, x: int, y: int, size: int = 18) -> None:
    """The site's name on a dark band at the bottom left of its tile."""
    font = _font(size)
    image = Image.new("RGB", (min(len(text) * size, WIDTH - x), size + 10), (20, 20, 20))
    ImageDraw.Draw(image).text((6, 3), text, font=font, fill=(255, 255, 255))
    band = np.asarray(image)
    h, w = band.shape[:2]
    canvas[y : y + h, x : x + w] = band


def compose(
    folder: Path,
    out: Path,
    progress: Callable[[float, float], None] | None = None,
) -> dict[str, Any]:
    """Render the recording in ``folder`` (its manifest.json and files) to ``out``."""
    manifest = json.loads((folder / "manifest.json").read_text())
    layout = sites_of(manifest, folder)
    sites = [s for s in (layout.lead, *layout.others) if s is not None]
    ends = [f.get("end") for f in manifest.get("files", []) if f.get("end")]
    start = float(manifest["started_at"])
    duration = (max(ends) - start) if ends else _probe_duration(sites)
    if duration <= 0:
        raise ComposeError("the recording has no duration")
    boxes: dict[str, tuple[int, int, int, int]] = {}
    if layout.lead is not None:
        boxes[layout.lead.identity] = LEAD_BOX
    videos = {
        s.identity: VideoSource(
            s.video, (LEAD_BOX[2], LEAD_BOX[3]) if s is layout.lead else (SIDE_W, SIDE_H)
        )
        for s in sites
        if s.video is not None
    }
    audios = {s.identity: AudioSource(s.audio) for s in sites if s.audio is not None}
    container = av.open(str(out), "w", format="mp4")
    try:
        vstream: Any = container.add_stream("libx264", rate=FPS)
        vstream.width, vstream.height, vstream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vstream.options = {"preset": "veryfast", "crf": "23"}
        astream: Any = container.add_stream("aac", rate=RATE)
        astream.layout = "mono"
        frames = int(duration * FPS) + 1
        samples_done = 0
        for index in range(frames):
            t = index / FPS
            canvas = np.full((HEIGHT, WIDTH, 3), 24, np.uint8)
            side = sorted(layout.others, key=lambda s: -s.loudness)[: HEIGHT // SIDE_H]
            for row, site in enumerate(side):
                boxes[site.identity] = (LEAD_BOX[2], row * SIDE_H, SIDE_W, SIDE_H)
            shown = [layout.lead, *side] if layout.lead is not None else side
            for site in shown:
                x, y, w, h = boxes[site.identity]
                source = videos.get(site.identity)
                picture = source.at(t) if source is not None else None
                if picture is not None:
                    canvas[y : y + h, x : x + w] = picture
                role = f" ({site.role})" if site.role else ""
                _label(canvas, site.label + role, x + 8, y + h - 36)
            frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, FPS)
            container.mux(vstream.encode(frame))
            # Audio up to this frame's end, mixed; each site's level orders the side tiles.
            until = round((index + 1) / FPS * RATE)
            while samples_done + AUDIO_CHUNK <= until:
                mix = np.zeros(AUDIO_CHUNK, np.float32)
                for identity, audio in audios.items():
                    chunk = audio.read(samples_done, AUDIO_CHUNK)
                    mix += chunk
                    site = next(s for s in sites if s.identity == identity)
                    site.loudness = 0.98 * site.loudness + 0.02 * float(np.abs(chunk).mean())
                aframe = av.AudioFrame.from_ndarray(
                    np.clip(mix, -1, 1).reshape(1, -1), format="flt", layout="mono"
                )
                aframe.sample_rate = RATE
                aframe.pts = samples_done
                aframe.time_base = Fraction(1, RATE)
                container.mux(astream.encode(aframe))
                samples_done += AUDIO_CHUNK
            if progress is not None:
                progress(t, duration)
        container.mux(vstream.encode(None))
        container.mux(astream.encode(None))
        if progress is not None:
            progress(duration, duration)
    finally:
        container.close()
        for video in videos.values():
            video.close()
        for audio in audios.values():
            audio.close()
    return {
        "duration": duration,
        "frames": frames,
        "lead": layout.lead.identity if layout.lead else None,
        "others": [s.identity for s in layout.others],
    }


def _probe_duration(sites: list[Site]) -> float:
    """The longest file's end, for a manifest without end times (a crashed recorder)."""
    longest = 0.0
    for site in sites:
        for path in (site.video, site.audio):
            if path is None:
                continue
            with av.open(str(path)) as container:
                for packet in container.demux():
                    if packet.pts is not None and packet.time_base is not None:
                        longest = max(longest, float(packet.pts * packet.time_base))
    return longest
