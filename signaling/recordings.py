"""Recording consultations: control in the control process, bytes in the recorder process.

``RecordingService`` listens to the conference. When a room records, each of its tracks
(and each track published later) gets a plain transport and a consumer on its media
worker, pointed at a socket of the recorder process (recording/process.py), which writes
one file per track. Nothing here touches media or writes media files; this module keeps
each recording's manifest (``manifest.json`` beside its files) and announces
``recording_started`` / ``recording_stopped`` / ``recording_failed`` through the
conference, so the WebSocket clients, webhooks and metrics hear them like any other event.

Recordings are patient data: folders 0700, files 0600, every download logged (and a
``recording_downloaded`` webhook event), old ones deleted after ``retention_days``.
The WebSocket requests ``start_recording`` / ``stop_recording`` (the lead only) are here;
the REST routes in signaling/recordings_api.py; the recorder process's client in
signaling/recorder.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sfu import control
from sfu.pool import WorkerError, WorkerHandle
from signaling.config import RecordingSettings
from signaling.recorder import RecorderClient, RecorderError
from signaling.rooms import Participant, Room, RoomError, Track

if TYPE_CHECKING:
    from signaling.conference import Conference

logger = logging.getLogger(__name__)

RECORDING_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}\Z")


def new_recording_id() -> str:
    """16 URL-safe characters that start with a letter or digit: one id in 32 began with "-"
    or "_", and `telebridge recordings compose -m77...` read the id as an option."""
    while not (candidate := secrets.token_urlsafe(12))[0].isalnum():
        pass
    return candidate


FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}\.(webm|mkv)\Z")
MANIFEST = "manifest.json"


@dataclass
class RecordedTrack:
    track: Track
    key: str  # the recorder's name for it
    session: str  # the plain transport on the media worker
    file: str
    worker: WorkerHandle | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    closed: bool = False


@dataclass
class Recording:
    id: str
    room: str
    started_at: float
    started_by: str | None
    folder: Path
    state: str = "recording"  # then "stopped" or "failed"
    stopped_at: float | None = None
    error: str | None = None
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)
    tracks: dict[str, RecordedTrack] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)  # from a manifest on disk

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room": self.room,
            "state": self.state,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
        }

    def file_entries(self) -> list[dict[str, Any]]:
        if not self.tracks:
            return self.files
        entries = []
        for recorded in self.tracks.values():
            info = recorded.info
            path = self.folder / recorded.file
            start, end = info.get("start"), info.get("end")
            entries.append(
                {
                    "name": recorded.file,
                    "track": recorded.track.id,
                    "owner": recorded.track.owner,
                    "kind": recorded.track.kind,
                    "source": recorded.track.source,
                    "codec": recorded.spec.get("codec"),
                    "size": path.stat().st_size if path.exists() else 0,
                    "start": start,
                    "end": end,
                    "duration": (end - start) if start is not None and end is not None else None,
                    "width": info.get("width"),
                    "height": info.get("height"),
                    "packets": info.get("packets"),
                    "lost": info.get("lost"),
                    "timing": info.get("timing"),
                }
            )
        return entries

    def manifest(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "started_by": self.started_by,
            "error": self.error,
            "participants": [{"identity": k, **v} for k, v in self.participants.items()],
            "tracks": [
                {**r.track.as_dict(), "file": r.file, "codec": r.spec.get("codec")}
                for r in self.tracks.values()
            ],
            "files": self.file_entries(),
        }


class RecordingService:
    """Every recording, live or on disk; see the module docstring."""

    def __init__(self, conference: Conference, settings: RecordingSettings) -> None:
        self.conference = conference
        self.settings = settings
        self.root = Path(settings.root)
        self.recordings: dict[str, Recording] = {}
        self.active: dict[str, str] = {}  # room -> id of its live recording
        self.recorder = RecorderClient(self._on_recorder_event, self._on_recorder_exit)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._auto_started: set[str] = set()  # auto_record rooms whose recording began
        self._retention: asyncio.Task[None] | None = None
        conference.add_listener(self.on_event)

    # -- life ----------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.settings.enabled:
            return
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._load()
        # Started now, not at the first recording: its imports take a second or so, which
        # would otherwise be missing from the start of the first recording's files.
        await self.recorder.start()
        if self.settings.retention_days > 0:
            self._retention = asyncio.create_task(self._retain())

    async def stop(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
        for recording_id in list(self.active.values()):
            await self.stop_recording(recording_id, by=None, reason="server stopping")
        await self.recorder.stop()

    def _load(self) -> None:
        """Recordings made before this start, from their manifests."""
        for manifest in self.root.glob(f"*/{MANIFEST}"):
            try:
                data = json.loads(manifest.read_text())
                recording = Recording(
                    id=data["id"],
                    room=data["room"],
                    started_at=float(data["started_at"]),
                    started_by=data.get("started_by"),
                    folder=manifest.parent,
                    state=data["state"] if data["state"] != "recording" else "failed",
                    stopped_at=data.get("stopped_at"),
                    error=data.get("error")
                    or (
                        "the server stopped while recording"
                        if data["state"] == "recording"
                        else None
                    ),
                    participants={
                        p["identity"]: {k: v for k, v in p.items() if k != "identity"}
                        for p in data.get("participants", [])
                    },
                    files=list(data.get("files", [])),
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("recordings: cannot read %s: %s", manifest, exc)
                continue
            self.recordings[recording.id] = recording

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- conference events ---------------------------------------------------------------
    def on_event(self, event: str, room: str, data: dict[str, Any], target: str | None) -> None:
        if target is not None or not self.settings.enabled:
            return
        recording_id = self.active.get(room)
        recording = self.recordings.get(recording_id) if recording_id else None
        if event == "participant_joined" and recording is not None:
            self._note_participant(recording, data["participant"])
        elif event == "role_changed" and recording is not None:
            entry = recording.participants.get(str(data.get("identity")))
            if entry is not None:
                entry["role"] = data.get("role", entry.get("role"))
        elif event == "track_published":
            live = self.conference.rooms.get(room)
            track = live.tracks.get(data["track"]["id"]) if live is not None else None
            if live is None or track is None:
                return
            if recording is not None:
                self._spawn(self._add_track(recording, track))
            elif live.options.auto_record and room not in self._auto_started:
                self._auto_started.add(room)  # once: a lead who stops it is not overruled
                self._spawn(self._auto_start(room))
        elif event == "track_unpublished" and recording is not None:
            recorded = recording.tracks.get(str(data.get("track")))
            if recorded is not None:
                self._spawn(self._close_track(recording, recorded))
        elif event == "room_ended":
            self._auto_started.discard(room)
            lock = self._locks.get(room)
            if lock is not None and not lock.locked():
                del self._locks[room]
            if recording is not None:
                self._spawn(self.stop_recording(recording.id, by=None, reason="room ended"))

    async def _auto_start(self, room: str) -> None:
        try:
            await self.start_recording(room, by=None)
        except RoomError as exc:
            if exc.code != "conflict":
                logger.warning("auto_record in %s: %s", room, exc.message)

    def _note_participant(self, recording: Recording, participant: dict[str, Any]) -> None:
        recording.participants.setdefault(
            participant["identity"],
            {
                "name": participant.get("name"),
                "role": participant.get("role"),
                "joined_at": participant.get("joined_at"),
            },
        )

    # -- start and stop -----------------------------------------------------------------
    def state_of(self, room: str) -> dict[str, Any] | None:
        """The room's live recording as a joiner is told about it (None: not recording)."""
        recording_id = self.active.get(room)
        recording = self.recordings.get(recording_id) if recording_id else None
        return recording.summary() if recording is not None else None

    async def start_recording(self, room_name: str, by: str | None) -> Recording:
        if not self.settings.enabled:
            raise RoomError("forbidden", "recording is disabled on this server ([recording])")
        async with self._locks.setdefault(room_name, asyncio.Lock()):
            room = self.conference.get_room(room_name)
            if room_name in self.active:
                raise RoomError("conflict", f"room {room_name!r} is being recorded already")
            recording_id = new_recording_id()
            folder = self.root / recording_id
            try:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
                folder.mkdir(mode=0o700)
            except OSError as exc:
                raise RoomError("unavailable", f"cannot make the recording folder: {exc}") from None
            recording = Recording(
                id=recording_id,
                room=room_name,
                started_at=time.time(),
                started_by=by,
                folder=folder,
            )
            for participant in room.participants.values():
                self._note_participant(recording, participant.as_dict())
            self.recordings[recording_id] = recording
            self.active[room_name] = recording_id
            self._write_manifest(recording)
            logger.info("recording %s of room %s started by %s", recording_id, room_name, by)
            self.conference.emit(
                "recording_started", room_name, {"recording": recording.summary(), "by": by}
            )
            for track in list(room.tracks.values()):
                self._spawn(self._add_track(recording, track))
            return recording

    async def _add_track(self, recording: Recording, track: Track) -> None:
        if recording.state != "recording" or track.id in recording.tracks:
            return
        index = len(recording.tracks) + 1
        recorded = RecordedTrack(
            track=track,
            key=f"{recording.id}/{track.id}",
            session=f"rec-{recording.id}-{index}",
            file=f"{index:02d}-{track.owner}-{track.source}",
        )
        recording.tracks[track.id] = recorded
        try:
            worker = self._worker_of(recording.room, track)
            opened = await self.recorder.request("open", track=recorded.key)
            plain: control.PlainTransportParams = {
                "session": recorded.session,
                "room": recording.room,
                "identity": "recorder",
                "remote_host": "127.0.0.1",
                "remote_port": int(opened["port"]),
            }
            local = await worker.call(control.PLAIN_TRANSPORT, plain)
            recorded.worker = worker
            consume: control.ConsumeParams = {
                "session": recorded.session,
                "producer": track.producer_id,
            }
            spec = await worker.call(control.CONSUME, consume)
            recorded.spec = dict(spec)
            recorded.file += ".mkv" if spec["codec"].lower() == "h264" else ".webm"
            await self.recorder.request(
                "start",
                track=recorded.key,
                path=str(recording.folder / recorded.file),
                origin=recording.started_at,
                worker=[local["local_host"], local["local_port"]],
                spec={
                    k: spec[k]
                    for k in ("kind", "codec", "clock_rate", "channels", "payload_type", "ssrcs")
                },
            )
        except (RecorderError, WorkerError, TimeoutError, ValueError) as exc:
            logger.warning("recording %s: track %s not recorded: %s", recording.id, track.id, exc)
            recorded.info["error"] = str(exc)
            await self._close_track(recording, recorded)
            return
        logger.info(
            "recording %s: %s (%s) -> %s", recording.id, track.id, spec["codec"], recorded.file
        )
        self._write_manifest(recording)

    def _worker_of(self, room: str, track: Track) -> WorkerHandle:
        """The worker holding the track's producer (a recording consumes it there: no pipe)."""
        placement = self.conference.placement
        worker = placement.producer_home.get(track.producer_id) or placement.home(room)
        if worker is None or not worker.alive:
            raise WorkerError("worker_gone", f"no live worker holds {track.id}")
        return worker

    async def _close_track(self, recording: Recording, recorded: RecordedTrack) -> None:
        if recorded.closed:
            return
        recorded.closed = True
        if self.recorder.alive:
            with contextlib.suppress(RecorderError, TimeoutError):
                answer = await self.recorder.request("close", track=recorded.key)
                recorded.info.update(
                    {k: v for k, v in answer.get("file", {}).items() if v is not None}
                )
        if recorded.worker is not None:
            with contextlib.suppress(WorkerError, TimeoutError):
                close: control.CloseParams = {
                    "session": recorded.session,
                    "reason": "recording ended",
                }
                await recorded.worker.call(control.CLOSE, close)
        self._write_manifest(recording)

    async def stop_recording(
        self, recording_id: str, by: str | None, reason: str = "stopped"
    ) -> Recording:
        recording = self.get(recording_id)
        if recording.state != "recording":
            return recording
        recording.state = "stopping"
        await asyncio.gather(*(self._close_track(recording, r) for r in recording.tracks.values()))
        recording.state, recording.stopped_at = "stopped", time.time()
        self.active.pop(recording.room, None)
        self._write_manifest(recording)
        files = recording.file_entries()
        logger.info("recording %s stopped (%s, by %s)", recording.id, reason, by)
        self.conference.emit(
            "recording_stopped",
            recording.room,
            {
                "recording": recording.summary(),
                "by": by,
                "reason": reason,
                "duration": recording.stopped_at - recording.started_at,
                "files": [
                    {k: f[k] for k in ("name", "track", "codec", "size", "duration")} for f in files
                ],
            },
        )
        return recording

    async def fail(self, recording: Recording, error: str) -> None:
        """The recording cannot go on (a full disk, the recorder died): keep what was
        written, tell the room; the consultation itself goes on."""
        if recording.state not in ("recording", "stopping"):
            return
        recording.state, recording.error = "failed", error
        recording.stopped_at = time.time()
        self.active.pop(recording.room, None)
        logger.error("recording %s of room %s failed: %s", recording.id, recording.room, error)
        self.conference.emit(
            "recording_failed", recording.room, {"recording": recording.summary(), "error": error}
        )
        await asyncio.gather(*(self._close_track(recording, r) for r in recording.tracks.values()))
        self._write_manifest(recording)

    def _on_recorder_event(self, message: dict[str, Any]) -> None:
        if message.get("event") != "failed":
            return
        recording_id = str(message.get("track", "")).split("/", 1)[0]
        recording = self.recordings.get(recording_id)
        if recording is not None:
            self._spawn(self.fail(recording, str(message.get("error"))))

    def _on_recorder_exit(self) -> None:
        for recording_id in list(self.active.values()):
            recording = self.recordings[recording_id]
            for recorded in recording.tracks.values():
                path = recording.folder / recorded.file
                if path.exists():
                    recorded.info.setdefault("bytes", path.stat().st_size)
            self._spawn(self.fail(recording, "the recorder process exited"))

    # -- reading and removing -----------------------------------------------------------
    def get(self, recording_id: str) -> Recording:
        recording = self.recordings.get(recording_id) if RECORDING_ID.match(recording_id) else None
        if recording is None:
            raise RoomError("not_found", f"no recording {recording_id[:80]!r}")
        return recording

    def find(self, room: str | None = None) -> list[Recording]:
        items = [r for r in self.recordings.values() if room is None or r.room == room]
        return sorted(items, key=lambda r: r.started_at)

    def file_path(self, recording: Recording, name: str) -> Path:
        if not FILE_NAME.match(name) or name not in {f["name"] for f in recording.file_entries()}:
            raise RoomError("not_found", f"no file {name[:80]!r} in recording {recording.id}")
        path = recording.folder / name
        if not path.is_file():
            raise RoomError("not_found", f"file {name!r} was not written (no media arrived)")
        return path

    async def delete(self, recording_id: str) -> None:
        recording = self.get(recording_id)
        if recording.state in ("recording", "stopping", "deleting"):
            raise RoomError("conflict", f"the recording is {recording.state}")
        recording.state = "deleting"
        await asyncio.to_thread(shutil.rmtree, recording.folder, True)
        self.recordings.pop(recording.id, None)
        logger.info("recording %s of room %s deleted", recording.id, recording.room)

    async def _retain(self) -> None:
        keep = self.settings.retention_days * 86400
        while True:
            await self.sweep(time.time())
            await asyncio.sleep(min(3600.0, max(1.0, keep / 4)))

    async def sweep(self, now: float) -> list[str]:
        """Delete the finished recordings older than ``retention_days``."""
        keep = self.settings.retention_days * 86400
        old = [
            r.id
            for r in self.recordings.values()
            if r.state in ("stopped", "failed") and now - (r.stopped_at or r.started_at) > keep
        ]
        for recording_id in old:
            logger.info("retention: deleting recording %s", recording_id)
            await self.delete(recording_id)
        return old

    def _write_manifest(self, recording: Recording) -> None:
        """Atomically, mode 0600; a full disk only costs the manifest's update."""
        path = recording.folder / MANIFEST
        temporary = path.with_suffix(".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(recording.manifest(), handle, indent=1)
            os.replace(temporary, path)
        except OSError as exc:
            logger.warning("recording %s: cannot write its manifest: %s", recording.id, exc)


# -- /ws requests ---------------------------------------------------------------------------


def ws_handlers(service: RecordingService) -> dict[str, Any]:
    """``start_recording`` / ``stop_recording`` for signaling/ws.py (the lead only)."""

    async def start(
        room: Room, participant: Participant, message: dict[str, Any]
    ) -> dict[str, Any]:
        room.check_moderator(participant, "start a recording")
        return {
            "recording": (await service.start_recording(room.name, participant.identity)).summary()
        }

    async def stop(room: Room, participant: Participant, message: dict[str, Any]) -> dict[str, Any]:
        room.check_moderator(participant, "stop a recording")
        recording_id = service.active.get(room.name)
        if recording_id is None:
            raise RoomError("not_found", "this room is not being recorded")
        return {
            "recording": (
                await service.stop_recording(recording_id, participant.identity)
            ).summary()
        }

    return {"start_recording": start, "stop_recording": stop}
