"""The recorder process: ``python -m recording.process``, started by the control process.

It is the only process that writes recordings: media workers send each recorded track to
it as plain RTP on loopback UDP (a plain transport and a consumer per track, so a slow
disk or a crash here never touches forwarding). The control process drives it with one
JSON object per line on stdin and reads answers and events, one per line, on stdout:

- ``{"id", "op": "open", "track"}`` -> ``{"id", "port"}``: a UDP socket on 127.0.0.1 for
  the track; the worker's plain transport is then pointed at it;
- ``{"id", "op": "start", "track", "path", "origin", "worker": [host, port], "spec"}``:
  record the track (``spec`` is what the worker's ``consume`` answered) to ``path``;
  times in the file are milliseconds since ``origin`` (Unix seconds, the recording's
  start), so every file of a recording shares one time line;
- ``{"id", "op": "close", "track"}`` -> ``{"id", "file": {...}}``: flush and close;
- events: ``{"event": "failed", "track", "error"}`` (e.g. the disk is full: the track's
  file is closed with what it has).

Closing stdin (the control process went away) closes every file cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

import av

from recording.recorder import TrackRecorder, TrackSpec
from recording.writer import TrackWriter

logger = logging.getLogger("recording.process")

POLL_INTERVAL = 0.02  # seconds between releases from the reorder buffers


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.track: RecordedTrack | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.track is not None:
            self.track.datagram(data, addr)


class RecordedTrack:
    """A track's socket, its sans-I/O recorder and its file."""

    def __init__(self, name: str, transport: asyncio.DatagramTransport) -> None:
        self.name = name
        self.transport = transport
        self.recorder: TrackRecorder | None = None
        self.writer: TrackWriter | None = None
        self.worker: tuple[str, int] | None = None
        self.failed: str | None = None

    @property
    def port(self) -> int:
        return int(self.transport.get_extra_info("sockname")[1])

    def datagram(self, data: bytes, addr: Any) -> None:
        if self.recorder is None or self.worker is None or tuple(addr[:2]) != self.worker:
            return  # only the worker we were told about feeds this track
        self.recorder.datagram(data, time.time())

    def pump(self, now: float, final: bool = False) -> str | None:
        """Write what is ready; an error message if the file cannot take it."""
        recorder, writer = self.recorder, self.writer
        if recorder is None or writer is None or self.failed:
            return None
        frames = recorder.flush() if final else recorder.poll(now)
        try:
            for frame in frames:
                writer.write(frame)
        except (OSError, av.FFmpegError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            self.failed = f"cannot write {writer.path.name}: {reason}"
            self._close_writer()
            return self.failed
        if self.worker is not None and recorder.keyframe_wanted(now):
            self.transport.sendto(recorder.pli(), self.worker)
        return None

    def _close_writer(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError as exc:  # the tail may be lost; what was flushed stays playable
                logger.warning("closing %s: %s", self.writer.path, exc)

    def close(self) -> dict[str, Any]:
        error = self.pump(time.time(), final=True)
        self._close_writer()
        self.transport.close()
        writer, recorder = self.writer, self.recorder
        info: dict[str, Any] = {"track": self.name, "error": self.failed or error}
        if writer is not None and recorder is not None:
            info.update(
                name=writer.path.name,
                codec=recorder.spec.codec,
                kind=recorder.spec.kind,
                bytes=writer.bytes_written(),
                frames=writer.frames,
                start=writer.first_time,
                end=writer.last_time,
                width=writer.size[0] if writer.size else None,
                height=writer.size[1] if writer.size else None,
                packets=recorder.packets,
                lost=recorder.lost,
                timing="sender_reports" if recorder.clock.from_sr else "arrival",
            )
        return info


class RecorderProcess:
    def __init__(self, out: Any) -> None:
        self.out = out
        self.tracks: dict[str, RecordedTrack] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        name = str(request.get("track", ""))
        if op == "open":
            if name in self.tracks:
                raise ValueError(f"track {name!r} is open already")
            loop = asyncio.get_running_loop()
            transport, receiver = await loop.create_datagram_endpoint(
                _Receiver, local_addr=("127.0.0.1", 0), family=socket.AF_INET
            )
            track = RecordedTrack(name, transport)
            receiver.track = track
            self.tracks[name] = track
            return {"port": track.port}
        track_or_none = self.tracks.get(name)
        if track_or_none is None:
            raise ValueError(f"no track {name!r}")
        track = track_or_none
        if op == "start":
            spec = TrackSpec.from_dict({**request["spec"], "track": name})
            host, port = request["worker"]
            track.worker = (str(host), int(port))
            track.recorder = TrackRecorder(spec)
            track.writer = TrackWriter(spec, Path(request["path"]), float(request["origin"]))
            if spec.kind == "video":  # start at a fresh keyframe rather than wait for one
                track.transport.sendto(track.recorder.pli(), track.worker)
            return {}
        if op == "close":
            del self.tracks[name]
            return {"file": track.close()}
        raise ValueError(f"unknown op {op!r}")

    async def pump(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            now = time.time()
            for track in list(self.tracks.values()):
                error = track.pump(now)
                if error:
                    logger.error("track %s failed: %s", track.name, error)
                    self.send({"event": "failed", "track": track.name, "error": error})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        pump = asyncio.create_task(self.pump())
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                except ValueError as exc:
                    self.send({"error": f"bad request: {exc}"})
                    continue
                try:
                    answer = await self.handle(request)
                except (ValueError, KeyError, TypeError, OSError) as exc:
                    self.send({"id": request.get("id"), "error": str(exc)})
                except Exception as exc:  # a fault in one request must not end every recording
                    logger.exception("request %s failed", request.get("op"))
                    self.send({"id": request.get("id"), "error": f"recorder fault: {exc}"})
                else:
                    self.send({"id": request.get("id"), **answer})
        finally:
            pump.cancel()
            for track in list(self.tracks.values()):
                track.close()
            self.tracks.clear()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Telebridge recorder (started by the server)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s recorder %(message)s"
    )
    asyncio.run(RecorderProcess(sys.stdout).run())


if __name__ == "__main__":
    main()
