"""The server API under /api/v1: what an embedding app's backend calls to run consultations.

It acts through the conference (signaling/conference.py) with ``actor=None``, so the
room rules in signaling/rooms.py apply exactly as they do to the WebSocket protocol,
minus the role checks (the API key is trusted with everything). Every route is declared
once in ``ROUTES`` together with its OpenAPI operation, so the document served at
``GET /api/v1/openapi.json`` cannot drift from what is routed, and request bodies are
checked against the very schemas the document shows.

Authentication is HTTP Basic with an ``[[api.keys]]`` key and secret, checked on every
request under /api/v1 (unknown paths included, so they cannot be probed), except the two
public documents: this API's OpenAPI description and the WebSocket protocol's schema.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from signaling import tokens, views
from signaling.config import ApiKey, Config
from signaling.metrics import Metrics, Pool
from signaling.recordings_api import ROUTES as RECORDING_ROUTES
from signaling.rooms import OBSERVER_VIEW, Participant, Room, RoomError, RoomOptions

if TYPE_CHECKING:
    from signaling.conference import Conference

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
PUBLIC_PATHS = frozenset({f"{PREFIX}/openapi.json", f"{PREFIX}/protocol.schema.json"})
REALM = 'Basic realm="telebridge"'
DEFAULT_TOKEN_TTL = 3600
ERROR_STATUS = {
    "invalid": 400,
    "bad_json": 400,
    "bad_sdp": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "room_full": 409,
    "room_ended": 410,
    "too_large": 413,
    "unsupported_media_type": 415,
    "internal": 500,
    "not_implemented": 501,
    "unavailable": 503,
}

# -- schemas (the OpenAPI document's, and the request validator's) --------------------------

NAME_RE = r"^[A-Za-z0-9_.-]{1,64}$"
# "." and ".." match NAME_RE but cannot be a URL path segment (clients resolve them away).
NAME: dict[str, Any] = {"type": "string", "pattern": NAME_RE, "not": {"enum": [".", ".."]}}
ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "machine-readable, e.g. not_found, conflict, invalid",
                },
                "message": {"type": "string", "description": "for people; do not parse"},
            },
        }
    },
}
ROOM_OPTIONS: dict[str, Any] = {
    "max_publishers": {
        "type": "integer",
        "minimum": 1,
        "maximum": 256,
        "default": 16,
        "description": "leads and participants at once",
    },
    "max_viewers": {
        "type": "integer",
        "minimum": 0,
        "maximum": 100000,
        "default": 1000,
        "description": "observers at once",
    },
    "empty_timeout": {
        "type": "number",
        "minimum": 1,
        "maximum": 604800,
        "default": 300,
        "description": "seconds an empty room lives before it ends",
    },
    "auto_record": {
        "type": "boolean",
        "default": False,
        "description": "start a recording when the first track is published",
    },
    "observer_view": {
        "type": "integer",
        "minimum": 0,
        "maximum": 100000,
        "default": OBSERVER_VIEW,
        "description": "past this many observers, observers get the compact view: the lead, "
        "the participants and an observer count, not each other's joins (0: always)",
    },
}
CREATE_ROOM: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": NAME, **ROOM_OPTIONS},
}
ROOM: dict[str, Any] = {
    "type": "object",
    "required": [
        "name",
        "max_publishers",
        "max_viewers",
        "empty_timeout",
        "auto_record",
        "created_at",
        "participants",
        "by_role",
        "tracks",
    ],
    "properties": {
        "name": {"type": "string"},
        "max_publishers": {"type": "integer"},
        "max_viewers": {"type": "integer"},
        "empty_timeout": {"type": "number"},
        "auto_record": {"type": "boolean"},
        "created_at": {"type": "number", "description": "Unix time, seconds"},
        "participants": {"type": "integer", "description": "how many are in the room"},
        "by_role": {
            "type": "object",
            "properties": {r: {"type": "integer"} for r in tokens.ROLES},
        },
        "tracks": {"type": "integer", "description": "published tracks"},
    },
}
TRACK: dict[str, Any] = {
    "type": "object",
    "required": ["id", "owner", "kind", "source", "muted"],
    "properties": {
        "id": {"type": "string"},
        "owner": {"type": "string"},
        "kind": {"type": "string", "enum": ["audio", "video"]},
        "source": {"type": "string", "enum": ["camera", "microphone", "screen"]},
        "muted": {"type": "boolean"},
    },
}
PARTICIPANT: dict[str, Any] = {
    "type": "object",
    "required": [
        "identity",
        "name",
        "role",
        "hand_raised",
        "joined_at",
        "connected",
        "quality",
        "tracks",
        "via",
    ],
    "properties": {
        "identity": {"type": "string"},
        "name": {"type": "string"},
        "role": {"type": "string", "enum": list(tokens.ROLES)},
        "hand_raised": {"type": "boolean"},
        "joined_at": {"type": "number", "description": "Unix time, seconds"},
        "connected": {
            "type": "boolean",
            "description": "false while the WebSocket is gone but resumable",
        },
        "via": {
            "type": "string",
            "enum": ["ws", "whip", "whep"],
            "description": "the WebSocket protocol, or a WHIP publisher or WHEP viewer",
        },
        "quality": {"type": "string", "enum": ["excellent", "good", "poor", "lost"]},
        "tracks": {"type": "array", "items": {"$ref": "#/components/schemas/Track"}},
    },
}
SET_ROLE: dict[str, Any] = {
    "type": "object",
    "required": ["role"],
    "additionalProperties": False,
    "properties": {
        "role": {
            "type": "string",
            "enum": ["participant", "observer"],
            "description": "give (participant) or take back (observer) the floor; the lead's role is fixed",
        }
    },
}
MUTE: dict[str, Any] = {
    "type": "object",
    "required": ["muted"],
    "additionalProperties": False,
    "properties": {
        "track": {**NAME, "description": "a track id of this participant; left out, all of them"},
        "muted": {"type": "boolean"},
    },
}
CREATE_TOKEN: dict[str, Any] = {
    "type": "object",
    "required": ["room", "identity", "role"],
    "additionalProperties": False,
    "properties": {
        "room": NAME,
        "identity": NAME,
        "role": {"type": "string", "enum": list(tokens.ROLES)},
        "name": {
            "type": "string",
            "pattern": r"^[^\u0000-\u001f\u007f]{1,128}$",
            "description": "display name",
        },
        "ttl": {
            "type": "integer",
            "minimum": 1,
            "maximum": 31536000,
            "default": DEFAULT_TOKEN_TTL,
            "description": "seconds; capped at the server's auth.max_token_ttl (see expires_at)",
        },
    },
}
TOKEN: dict[str, Any] = {
    "type": "object",
    "required": ["token", "expires_at", "room", "identity", "role"],
    "properties": {
        "token": {"type": "string", "description": "give it to the client for the WebSocket join"},
        "expires_at": {"type": "integer", "description": "Unix time, seconds"},
        "room": {"type": "string"},
        "identity": {"type": "string"},
        "role": {"type": "string", "enum": list(tokens.ROLES)},
    },
}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


# -- request validation (the subset of JSON Schema the schemas above use) -----------------

_PATTERNS: dict[str, re.Pattern[str]] = {}


def _pattern(source: str) -> re.Pattern[str]:
    """JSON Schema's ``$`` is the end of the string; Python's also matches before a final newline."""
    compiled = _PATTERNS.get(source)
    if compiled is None:
        compiled = _PATTERNS[source] = re.compile(
            source[:-1] + r"\Z" if source.endswith("$") else source
        )
    return compiled


def check(schema: dict[str, Any], value: Any, where: str) -> None:
    """Raise ApiError(400, "invalid") saying where ``value`` breaks ``schema``."""

    def fail(message: str) -> ApiError:
        return ApiError(400, "invalid", f"{where}: {message}")

    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            raise fail("must be a JSON object")
        for name in schema.get("required", []):
            if name not in value:
                raise fail(f"{name} is required")
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            extra = sorted(set(value) - set(properties))
            if extra:
                raise fail(f"unknown field {extra[0]!r}")
        for name, item in value.items():
            if name in properties:
                check(properties[name], item, f"{where}.{name}" if where != "body" else name)
        return
    if kind == "string":
        if not isinstance(value, str):
            raise fail("must be a string")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            raise fail(f"must match {schema['pattern']}")
    elif kind == "integer":  # JSON Schema: 3.0 is an integer too
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise fail("must be an integer")
    elif kind == "number":
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise fail("must be a number")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise fail("must be true or false")
    if "enum" in schema and value not in schema["enum"]:
        raise fail(f"must be one of {', '.join(map(str, schema['enum']))}")
    if "not" in schema and "enum" in schema["not"] and value in schema["not"]["enum"]:
        raise fail(f"cannot be {value!r}")
    if "minimum" in schema and value < schema["minimum"]:
        raise fail(f"must be at least {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        raise fail(f"must be at most {schema['maximum']}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: web.Request, schema: dict[str, Any]) -> dict[str, Any]:
    """The body as a checked JSON object: 415 if not JSON, 400 if unparsable or invalid."""
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
    raw = await request.read()  # bounded by the app's client_max_size (413 beyond it)
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_json", f"the body is not JSON: {exc}") from None
    check(schema, body, "body")
    checked: dict[str, Any] = body
    return checked


def path_name(request: web.Request, field: str) -> str:
    value = request.match_info[field]
    check(NAME, value, field)
    return value


# -- handlers --------------------------------------------------------------------------------


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def participant_view(room: Room, participant: Participant) -> dict[str, Any]:
    return {
        **participant.as_dict(),
        "connected": participant.connected,
        "quality": participant.quality,
        "tracks": [t.as_dict() for t in room.tracks_of(participant.identity)],
    }


class Api:
    """The handlers, bound to one conference and config."""

    def __init__(
        self, conference: Conference, config: Config, metrics: Metrics, pool: Pool | None
    ) -> None:
        self.conference = conference
        self.config = config
        self.metrics = metrics
        self.pool = pool
        self.keys: list[ApiKey] = list(config.api.keys)
        self._digests = [(k.key, _digest(k.key), _digest(k.secret)) for k in self.keys]

    # -- auth ----------------------------------------------------------------------------
    def authenticate(self, request: web.Request) -> str:
        """The API key's name, or ApiError 401. Compares against every key in constant time."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        user = password = None
        if scheme.lower() == "basic":
            try:
                user, sep, password = (
                    base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
                )
            except (binascii.Error, UnicodeDecodeError):
                user = None
            else:
                if not sep:
                    user = None
        if user is not None and password is not None:
            # Digests, so compare_digest sees equal lengths; every key is tried, so the time
            # taken does not tell which key or which part matched.
            given_key, given_secret = _digest(user), _digest(password)
            found: str | None = None
            for name, key_digest, secret_digest in self._digests:
                key_ok = hmac.compare_digest(key_digest, given_key)
                secret_ok = hmac.compare_digest(secret_digest, given_secret)
                if key_ok and secret_ok:
                    found = name
            if found is not None:
                return found
        if not self.keys:
            message = "the server API is off: no [[api.keys]] in the server's config"
        elif not header:
            message = "HTTP Basic authentication with an API key and secret is required"
        else:
            message = "wrong API key or secret"
        logger.info(
            "api: refused %s %s from %s: %s", request.method, request.path, request.remote, message
        )
        raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": REALM})

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Auth, JSON errors and the request counter for everything under /api/v1."""
        path = request.path
        if not (path == PREFIX or path.startswith(PREFIX + "/")) or path in PUBLIC_PATHS:
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        response: web.StreamResponse
        try:
            request["api_key"] = self.authenticate(request)
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.headers)
        except RoomError as exc:
            response = error_response(ERROR_STATUS.get(exc.code, 400), exc.code, exc.message)
        except web.HTTPMethodNotAllowed as exc:
            allow = ", ".join(sorted(exc.allowed_methods))
            response = error_response(
                405, "method_not_allowed", f"{request.method} is not allowed here", {"Allow": allow}
            )
        except web.HTTPRequestEntityTooLarge:
            response = error_response(413, "too_large", "the body is too large")
        except web.HTTPNotFound:
            response = error_response(404, "not_found", f"no such endpoint {path[:200]}")
        except web.HTTPException as exc:
            response = error_response(exc.status, "http_" + str(exc.status), exc.reason)
        except Exception:
            logger.exception("api: %s %s failed", request.method, path)
            response = error_response(500, "internal", "a server fault; see the server's log")
        self.metrics.api_requests.labels(route, str(response.status)).inc()
        return response

    def _audit(self, request: web.Request, what: str) -> None:
        logger.info("api key %s: %s", request.get("api_key"), what)

    # -- documents -------------------------------------------------------------------------
    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    # -- rooms -----------------------------------------------------------------------------
    async def create_room(self, request: web.Request) -> web.Response:
        body = await read_json(request, CREATE_ROOM)
        defaults = RoomOptions()
        options = RoomOptions(
            max_publishers=int(body.get("max_publishers", defaults.max_publishers)),
            max_viewers=int(body.get("max_viewers", defaults.max_viewers)),
            empty_timeout=float(body.get("empty_timeout", defaults.empty_timeout)),
            auto_record=body.get("auto_record", defaults.auto_record),
            observer_view=int(body.get("observer_view", defaults.observer_view)),
        )
        room = self.conference.create_room(body["name"], options)
        self._audit(request, f"created room {room.name}")
        return web.json_response(
            room.summary(), status=201, headers={"Location": f"{PREFIX}/rooms/{room.name}"}
        )

    async def list_rooms(self, request: web.Request) -> web.Response:
        rooms = sorted(self.conference.list_rooms(), key=lambda r: (r.created_at, r.name))
        return web.json_response({"rooms": [r.summary() for r in rooms]})

    async def get_room(self, request: web.Request) -> web.Response:
        room = self.conference.get_room(path_name(request, "room"))
        return web.json_response(room.summary())

    async def end_room(self, request: web.Request) -> web.Response:
        name = path_name(request, "room")
        self.conference.get_room(name)
        await self.conference.end_room(name, by=None)
        self._audit(request, f"ended room {name}")
        return web.Response(status=204)

    # -- participants ----------------------------------------------------------------------
    def _participant(self, request: web.Request) -> tuple[Room, Participant]:
        room = self.conference.get_room(path_name(request, "room"))
        return room, room.participant(path_name(request, "identity"))

    async def list_participants(self, request: web.Request) -> web.Response:
        room = self.conference.get_room(path_name(request, "room"))
        cursor, limit = request.query.get("cursor"), request.query.get("limit")
        if cursor is None and limit is None:  # everyone, as before paging
            people, after = room.in_join_order(), None
        else:
            if limit is not None and not limit.isdigit():
                raise ApiError(400, "invalid", f"limit: an integer, 1 to {views.PAGE_MAX}")
            people, after = views.page(
                room, cursor, int(limit) if limit is not None else views.PAGE_DEFAULT
            )
        return web.json_response(
            {"participants": [participant_view(room, p) for p in people], "next": after}
        )

    async def get_participant(self, request: web.Request) -> web.Response:
        room, participant = self._participant(request)
        return web.json_response(participant_view(room, participant))

    async def update_participant(self, request: web.Request) -> web.Response:
        room, participant = self._participant(request)
        body = await read_json(request, SET_ROLE)
        await self.conference.set_role(room.name, participant.identity, body["role"], actor=None)
        self._audit(request, f"set {participant.identity}'s role in {room.name} to {body['role']}")
        room, participant = self._participant(request)
        return web.json_response(participant_view(room, participant))

    async def mute(self, request: web.Request) -> web.Response:
        room, participant = self._participant(request)
        body = await read_json(request, MUTE)
        if "track" in body:
            track = room.track(body["track"])
            if track.owner != participant.identity:
                raise RoomError(
                    "not_found", f"{participant.identity} has no track {body['track']!r}"
                )
            targets = [track]
        else:
            targets = room.tracks_of(participant.identity)
        for track in targets:
            await self.conference.mute(room.name, track.id, body["muted"], actor=None)
        self._audit(
            request,
            f"{'muted' if body['muted'] else 'unmuted'} {len(targets)} tracks of {participant.identity} in {room.name}",
        )
        return web.json_response({"tracks": [t.as_dict() for t in targets]})

    async def remove_participant(self, request: web.Request) -> web.Response:
        room, participant = self._participant(request)
        await self.conference.remove(room.name, participant.identity, actor=None)
        self._audit(request, f"removed {participant.identity} from {room.name}")
        return web.Response(status=204)

    # -- tokens ----------------------------------------------------------------------------
    async def create_token(self, request: web.Request) -> web.Response:
        body = await read_json(request, CREATE_TOKEN)
        ttl = min(int(body.get("ttl", DEFAULT_TOKEN_TTL)), self.config.auth.max_token_ttl)
        secret, issuer = self.config.auth.secret, self.config.auth.issuer
        token = tokens.mint(
            secret, body["room"], body["identity"], body["role"], ttl, body.get("name"), issuer
        )
        grant = tokens.verify(secret, token, issuer)
        self._audit(
            request, f"minted a {grant.role} token for {grant.identity} in {grant.room}, {ttl} s"
        )
        return web.json_response(
            {
                "token": token,
                "expires_at": grant.expires,
                "room": grant.room,
                "identity": grant.identity,
                "role": grant.role,
            }
        )

    # -- metrics (not under /api/v1: Prometheus scrapes it) ---------------------------------
    async def prometheus(self, request: web.Request) -> web.Response:
        if self.config.api.metrics_auth:
            try:
                self.authenticate(request)
            except ApiError as exc:
                return error_response(exc.status, exc.code, exc.message, exc.headers)
        started = time.perf_counter()
        await self.metrics.refresh(self.pool)
        for kind, count in self.conference.session_counts().items():
            self.metrics.sessions.labels(kind).set(count)
        logger.debug("metrics refreshed in %.1f ms", (time.perf_counter() - started) * 1000)
        return web.Response(
            body=self.metrics.generate(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


# -- routes and the OpenAPI document ----------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # under PREFIX
    handler: str  # Api method name
    operation: dict[str, Any]


def _json(
    schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "The body or a path parameter is invalid (code invalid or bad_json)",
        404: "No such room, participant or track (code not_found)",
        409: "A live room has that name (conflict), or the room is full (room_full)",
        410: "The room has ended (room_ended)",
        415: "The body is not application/json",
    }
    return {
        str(s): {"$ref": "#/components/responses/Error"}
        if s not in text
        else _json(_ref("Error"), text[s])
        for s in statuses
    }


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


_ROOM_PARAM = {"$ref": "#/components/parameters/room"}
_IDENTITY_PARAM = {"$ref": "#/components/parameters/identity"}

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/rooms",
        "create_room",
        {
            "operationId": "createRoom",
            "tags": ["rooms"],
            "summary": "Create a room",
            "description": "Rooms are also created on the first WebSocket join with a valid token; create one "
            "here to set its limits first.",
            "requestBody": _body("CreateRoom"),
            "responses": {
                "201": {
                    **_json(
                        _ref("Room"),
                        "Created",
                        {
                            "Location": {
                                "schema": {"type": "string"},
                                "description": "the room's URL",
                            }
                        },
                    ),
                    "links": {
                        op: {"operationId": op, "parameters": {"room": "$response.body#/name"}}
                        for op in ("getRoom", "endRoom", "listParticipants")
                    },
                },
                **_errors(400, 409, 415),
            },
        },
    ),
    Route(
        "GET",
        "/rooms",
        "list_rooms",
        {
            "operationId": "listRooms",
            "tags": ["rooms"],
            "summary": "List live rooms",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["rooms"],
                        "properties": {"rooms": {"type": "array", "items": _ref("Room")}},
                    },
                    "The live rooms, oldest first",
                ),
            },
        },
    ),
    Route(
        "GET",
        "/rooms/{room}",
        "get_room",
        {
            "operationId": "getRoom",
            "tags": ["rooms"],
            "summary": "A room's settings and head counts",
            "parameters": [_ROOM_PARAM],
            "responses": {"200": _json(_ref("Room"), "The room"), **_errors(400, 404)},
        },
    ),
    Route(
        "DELETE",
        "/rooms/{room}",
        "end_room",
        {
            "operationId": "endRoom",
            "tags": ["rooms"],
            "summary": "End a room",
            "description": "Everyone is disconnected (participant_left with reason room_ended) and the room is gone.",
            "parameters": [_ROOM_PARAM],
            "responses": {"204": {"description": "Ended"}, **_errors(400, 404)},
        },
    ),
    Route(
        "GET",
        "/rooms/{room}/participants",
        "list_participants",
        {
            "operationId": "listParticipants",
            "tags": ["participants"],
            "summary": "Who is in a room, with their tracks",
            "description": "Everyone at once, or a page at a time with `limit` (and then "
            "`cursor`: the `next` of the page before, until it is null).",
            "parameters": [
                _ROOM_PARAM,
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    "description": "page size (100 if only cursor is given)",
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "pattern": views.CURSOR},
                    "description": "where the page starts: the previous page's next",
                },
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["participants"],
                        "properties": {
                            "participants": {"type": "array", "items": _ref("Participant")},
                            "next": {
                                "type": ["string", "null"],
                                "description": "the next page's cursor; null on the last",
                            },
                        },
                    },
                    "The participants, earliest joined first",
                ),
                **_errors(400, 404),
            },
        },
    ),
    Route(
        "GET",
        "/rooms/{room}/participants/{identity}",
        "get_participant",
        {
            "operationId": "getParticipant",
            "tags": ["participants"],
            "summary": "One participant",
            "parameters": [_ROOM_PARAM, _IDENTITY_PARAM],
            "responses": {
                "200": _json(_ref("Participant"), "The participant"),
                **_errors(400, 404),
            },
        },
    ),
    Route(
        "PATCH",
        "/rooms/{room}/participants/{identity}",
        "update_participant",
        {
            "operationId": "updateParticipant",
            "tags": ["participants"],
            "summary": "Give or take back the floor",
            "description": "participant may publish, observer may not (its tracks are unpublished). The lead's "
            "role cannot be changed (403). Everyone gets role_changed with by null.",
            "parameters": [_ROOM_PARAM, _IDENTITY_PARAM],
            "requestBody": _body("SetRole"),
            "responses": {
                "200": _json(_ref("Participant"), "The participant after the change"),
                **_errors(400, 403, 404, 409, 415),
            },
        },
    ),
    Route(
        "DELETE",
        "/rooms/{room}/participants/{identity}",
        "remove_participant",
        {
            "operationId": "removeParticipant",
            "tags": ["participants"],
            "summary": "Remove a participant",
            "description": "Their connection is closed; a token they still hold lets them join again, so mint "
            "short-lived tokens.",
            "parameters": [_ROOM_PARAM, _IDENTITY_PARAM],
            "responses": {"204": {"description": "Removed"}, **_errors(400, 404)},
        },
    ),
    Route(
        "POST",
        "/rooms/{room}/participants/{identity}/mute",
        "mute",
        {
            "operationId": "muteParticipant",
            "tags": ["participants"],
            "summary": "Mute or unmute one track, or all of a participant's tracks",
            "parameters": [_ROOM_PARAM, _IDENTITY_PARAM],
            "requestBody": _body("Mute"),
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["tracks"],
                        "properties": {"tracks": {"type": "array", "items": _ref("Track")}},
                    },
                    "The tracks changed",
                ),
                **_errors(400, 404, 415),
            },
        },
    ),
    Route(
        "POST",
        "/tokens",
        "create_token",
        {
            "operationId": "createToken",
            "tags": ["tokens"],
            "summary": "Mint an access token for the WebSocket join",
            "description": "An HS256 JWT for one identity in one room with one role. The room need not exist yet.",
            "requestBody": _body("CreateToken"),
            "responses": {"200": _json(_ref("Token"), "The token"), **_errors(400, 415)},
        },
    ),
    Route(
        "GET",
        "/openapi.json",
        "openapi",
        {
            "operationId": "getOpenApi",
            "tags": ["documents"],
            "summary": "This document",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document")},
        },
    ),
)

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Telebridge server API",
        "version": "1.0.0",
        "description": "Rooms, participants and access tokens, for the backend of an app that embeds "
        'Telebridge consultations. Errors are JSON: {"error": {"code", "message"}}. Room events reach '
        "you by webhook (see signaling/webhooks.py for the signature); clients use the WebSocket protocol "
        "(docs/protocol.md).",
    },
    "servers": [{"url": "/"}],
    "security": [{"apiKey": []}],
    "tags": [{"name": t} for t in ("rooms", "participants", "tokens", "recordings", "documents")],
    "paths": {},
    "components": {
        "securitySchemes": {
            "apiKey": {
                "type": "http",
                "scheme": "basic",
                "description": "user: an [[api.keys]] key, password: its secret",
            }
        },
        "parameters": {
            "room": {"name": "room", "in": "path", "required": True, "schema": NAME},
            "identity": {"name": "identity", "in": "path", "required": True, "schema": NAME},
        },
        "responses": {
            "Error": _json(_ref("Error"), "An error"),
            "Unauthorized": _json(
                _ref("Error"),
                "Missing or wrong API key or secret",
                {"WWW-Authenticate": {"schema": {"type": "string"}, "description": REALM}},
            ),
        },
        "schemas": {
            "Error": ERROR,
            "CreateRoom": CREATE_ROOM,
            "Room": ROOM,
            "Track": TRACK,
            "Participant": PARTICIPANT,
            "SetRole": SET_ROLE,
            "Mute": MUTE,
            "CreateToken": CREATE_TOKEN,
            "Token": TOKEN,
        },
    },
}


def _build_paths() -> None:
    paths: dict[str, dict[str, Any]] = OPENAPI["paths"]
    routes: list[Route | Any] = [*ROUTES, *RECORDING_ROUTES]  # recording ones: own handlers
    for route in routes:
        operation = dict(route.operation)
        responses = dict(operation["responses"])
        if operation.get("security") != []:
            responses.setdefault("401", {"$ref": "#/components/responses/Unauthorized"})
        responses.setdefault("default", {"$ref": "#/components/responses/Error"})
        operation["responses"] = responses
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = operation


_build_paths()


def setup(
    app: web.Application,
    conference: Conference,
    config: Config,
    metrics: Metrics,
    pool: Pool | None = None,
) -> Api:
    """Add the /api/v1 routes, the auth-and-errors middleware and GET /metrics to ``app``.

    ``pool`` (the media workers, for /metrics) defaults to ``conference.pool``."""
    api = Api(
        conference, config, metrics, pool if pool is not None else getattr(conference, "pool", None)
    )
    app.middlewares.append(api.middleware)
    for route in ROUTES:
        app.router.add_route(route.method, PREFIX + route.path, getattr(api, route.handler))
    app.router.add_get("/metrics", api.prometheus)
    if not api.keys:
        logger.warning(
            "no [[api.keys]] configured: the server API at %s refuses every request", PREFIX
        )
    return api
