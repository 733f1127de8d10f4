"""The recording routes of the server API (/api/v1, authenticated by signaling/api.py's
middleware, and listed in its OpenAPI document): start, stop, list, manifest, download
(Range requests; every download logged and announced), delete."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from aiohttp import web

from signaling.recordings import RECORDING_ID, Recording, RecordingService
from signaling.rooms import NAME_PATTERN, RoomError

logger = logging.getLogger(__name__)


class RecordingsApi:
    def __init__(self, service: RecordingService) -> None:
        self.service = service

    def _recording(self, request: web.Request) -> Recording:
        return self.service.get(request.match_info["recording"])

    async def create(self, request: web.Request) -> web.Response:
        room = _room_name(request.match_info["room"])
        recording = await self.service.start_recording(room, by=None)
        logger.info(
            "api key %s: started recording %s of %s", request.get("api_key"), recording.id, room
        )
        return web.json_response(recording.summary(), status=201)

    async def stop(self, request: web.Request) -> web.Response:
        recording = self._recording(request)
        await self.service.stop_recording(recording.id, by=None)
        return web.json_response(recording.manifest())

    async def list(self, request: web.Request) -> web.Response:
        room = request.query.get("room")
        if room is not None:
            _room_name(room)
        return web.json_response({"recordings": [r.summary() for r in self.service.find(room)]})

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self._recording(request).manifest())

    async def download(self, request: web.Request) -> web.StreamResponse:
        recording = self._recording(request)
        name = request.match_info["name"]
        path = self.service.file_path(recording, name)
        who = request.get("api_key")
        logger.info(
            "download: api key %s, recording %s, file %s, range %s, from %s",
            who,
            recording.id,
            name,
            request.headers.get("Range", "all"),
            request.remote,
        )
        # Webhooks hear of every download (patient data); so does the room, if it is live.
        self.service.conference.emit(
            "recording_downloaded",
            recording.room,
            {
                "recording": recording.id,
                "file": name,
                "api_key": who,
                "range": request.headers.get("Range"),
            },
        )
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "video/webm" if name.endswith(".webm") else "video/x-matroska"
            },
        )

    async def delete(self, request: web.Request) -> web.Response:
        recording = self._recording(request)
        await self.service.delete(recording.id)
        return web.Response(status=204)


_RECORDING_PARAM = {
    "name": "recording",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": RECORDING_ID.pattern.replace("\\Z", "$")},
}
_SUMMARY: dict[str, Any] = {
    "type": "object",
    "required": ["id", "room", "state"],
    "properties": {
        "id": {"type": "string"},
        "room": {"type": "string"},
        "state": {"type": "string", "enum": ["recording", "stopping", "stopped", "failed"]},
        "started_at": {"type": "number"},
        "stopped_at": {"type": ["number", "null"]},
    },
}
_MANIFEST: dict[str, Any] = {
    "type": "object",
    "required": ["id", "room", "state", "participants", "tracks", "files"],
    "properties": {
        **_SUMMARY["properties"],
        "error": {"type": ["string", "null"]},
        "participants": {"type": "array", "items": {"type": "object"}},
        "tracks": {"type": "array", "items": {"type": "object"}},
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "codec", "size"],
                "properties": {
                    "name": {"type": "string"},
                    "codec": {"type": ["string", "null"]},
                    "size": {"type": "integer"},
                    "start": {"type": ["number", "null"]},
                    "end": {"type": ["number", "null"]},
                },
            },
        },
    },
}


def _room_name(value: str) -> str:
    if not NAME_PATTERN.match(value) or value in (".", ".."):
        raise RoomError("invalid", "room: 1-64 letters, digits or _.-")
    return value


class Route(NamedTuple):
    """As signaling/api.py's, but served by :class:`RecordingsApi`."""

    method: str
    path: str  # under /api/v1
    handler: str
    operation: dict[str, Any]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


NAME_SCHEMA = {"type": "string", "pattern": NAME_PATTERN.pattern, "not": {"enum": [".", ".."]}}
_NOT_FOUND = _error("No such room, recording or file (code not_found)")


def _operation(op_id: str, summary: str, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "tags": ["recordings"],
        "summary": summary,
        "responses": responses,
        **more,
    }


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/rooms/{room}/recordings",
        "create",
        _operation(
            "startRecording",
            "Record every track of a live room (and those published later)",
            {
                "201": _json(_SUMMARY, "Recording"),
                "400": _error("Bad room name (code invalid)"),
                "403": _error("Recording is disabled (code forbidden)"),
                "404": _NOT_FOUND,
                "409": _error("The room is being recorded (conflict)"),
            },
            parameters=[{"$ref": "#/components/parameters/room"}],
        ),
    ),
    Route(
        "GET",
        "/recordings",
        "list",
        _operation(
            "listRecordings",
            "Recordings, oldest first",
            {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["recordings"],
                        "properties": {"recordings": {"type": "array", "items": _SUMMARY}},
                    },
                    "The recordings",
                ),
                "400": _error("Bad room name (code invalid)"),
            },
            parameters=[{"name": "room", "in": "query", "required": False, "schema": NAME_SCHEMA}],
        ),
    ),
    Route(
        "GET",
        "/recordings/{recording}",
        "get",
        _operation(
            "getRecording",
            "A recording's manifest: room, participants, tracks, files",
            {"200": _json(_MANIFEST, "The manifest"), "404": _NOT_FOUND},
            parameters=[_RECORDING_PARAM],
        ),
    ),
    Route(
        "POST",
        "/recordings/{recording}/stop",
        "stop",
        _operation(
            "stopRecording",
            "Stop a recording (its files are closed)",
            {"200": _json(_MANIFEST, "The manifest"), "404": _NOT_FOUND},
            parameters=[_RECORDING_PARAM],
        ),
    ),
    Route(
        "GET",
        "/recordings/{recording}/files/{name}",
        "download",
        _operation(
            "downloadRecordingFile",
            "One track's file (Range requests work); every download is logged",
            {
                "200": {
                    "description": "The file",
                    "content": {"video/webm": {}, "video/x-matroska": {}},
                },
                "206": {"description": "Part of it"},
                "404": _NOT_FOUND,
                "416": {"description": "The range is outside the file"},
            },
            parameters=[
                _RECORDING_PARAM,
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
        ),
    ),
    Route(
        "DELETE",
        "/recordings/{recording}",
        "delete",
        _operation(
            "deleteRecording",
            "Delete a finished recording and its files",
            {
                "204": {"description": "Deleted"},
                "404": _NOT_FOUND,
                "409": _error("Still recording (conflict)"),
            },
            parameters=[_RECORDING_PARAM],
        ),
    ),
)


def setup(app: web.Application, service: RecordingService) -> RecordingsApi:
    """Add the recording routes under /api/v1 (signaling/api.py's middleware authenticates
    them) and start/stop the service with the app."""
    handlers = RecordingsApi(service)
    for route in ROUTES:
        app.router.add_route(route.method, "/api/v1" + route.path, getattr(handlers, route.handler))

    async def on_startup(app: web.Application) -> None:
        await service.start()

    async def on_cleanup(app: web.Application) -> None:
        await service.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.insert(0, on_cleanup)
    return handlers
