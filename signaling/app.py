"""The HTTP server: WHIP (RFC 9725) to publish, WHEP to view, dev tokens, the demo page.

The control process owns no media socket: each WHIP/WHEP request becomes one request to
the media worker that hosts the room, which answers with the SDP answer.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from sfu.pool import WorkerHandle, WorkerPool
from signaling import (
    api,
    metrics,
    recordings,
    recordings_api,
    schema,
    sdpfrag,
    tokens,
    turn,
    webhooks,
)
from signaling.conference import Conference
from signaling.config import Config
from signaling.placement import BUSY, RETRY_AFTER
from signaling.rooms import NAME_PATTERN, RoomError
from signaling.ws import Hub

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
NAME = NAME_PATTERN
MAX_SDP = 64 * 1024
WHEP_LAYER_REL = "urn:ietf:params:whep:ext:core:layer"
MAX_URL = 8190  # longer request targets are answered 414 in JSON
MAX_LINE = 64 * 1024  # aiohttp's parser reads a request line this long before it gives up
# Room errors as WHIP/WHEP statuses.
ROOM_ERROR_STATUS = {
    "bad_sdp": 400,
    "invalid": 400,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "room_full": 409,
    "room_ended": 410,
    "unavailable": 503,
    "server_busy": 503,
    "internal": 500,
}

TRICKLE = "application/trickle-ice-sdpfrag"
# What a browser's WHIP/WHEP client must be allowed to read of our responses.
EXPOSE_HEADERS = "Location, Link, ETag, Accept-Patch"

CONFIG_KEY = web.AppKey("config", Config)
SERVER_KEY: web.AppKey[Server] = web.AppKey("server")


class QuietParseErrors(logging.Filter):
    """aiohttp logs a traceback at ERROR for every request it cannot parse (a request line
    past MAX_LINE, a malformed header, a port scanner's bytes): one INFO line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "unparseable HTTP request from %s: %s"
            record.args = (remote, " ".join(str(exc.message).split())[:200])
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


HTTP_LOGGER = logging.getLogger("signaling.http")
HTTP_LOGGER.addFilter(QuietParseErrors())


def handler_args() -> dict[str, Any]:
    """aiohttp request handler settings for ``web.run_app`` / ``web.AppRunner``: request
    lines up to MAX_LINE reach the app (which answers 414 in JSON past MAX_URL), and the
    parse errors beyond that log one line."""
    return {"max_line_size": MAX_LINE, "logger": HTTP_LOGGER}


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


class Server:
    """The control process: media workers, the conference, and what listens to it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pool = WorkerPool(config.media, self._on_worker_event)
        self.conference = Conference(self.pool, resume_grace=config.ws.resume_grace)
        self.metrics = metrics.Metrics()
        self.conference.add_listener(self.metrics.on_event)
        self.conference.placement.on_refused = self._refused
        self.webhooks = webhooks.Webhooks(config.webhooks, on_outcome=self.metrics.on_webhook)
        self.conference.add_listener(self.webhooks.on_event)

    def ice_servers(self, identity: str) -> list[dict[str, Any]]:
        """TURN servers with credentials for this identity, valid for [turn] ttl."""
        return turn.ice_servers(self.config.turn, identity, time.time())

    def ice_links(self, identity: str) -> list[str]:
        return turn.link_headers(self.ice_servers(identity))

    def _refused(self, kind: str) -> None:
        self.metrics.sessions_refused.labels(kind).inc()

    def _on_worker_event(self, worker: WorkerHandle, event: str, data: dict[str, Any]) -> None:
        self.conference.on_worker_event(worker, event, data)

    # -- auth -------------------------------------------------------------------------------
    def bearer(self, request: web.Request) -> tokens.Grant:
        """The request's access token, checked, for any room."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "Authorization: Bearer <token> required")
        try:
            return tokens.verify(self.config.auth.secret, token.strip(), self.config.auth.issuer)
        except tokens.TokenError as exc:
            raise ApiError(401, "unauthorized", str(exc)) from None

    def grant(self, request: web.Request, room: str) -> tokens.Grant:
        grant = self.bearer(request)
        if grant.room != room:
            raise ApiError(403, "forbidden", "token is for another room")
        return grant


# -- HTTP handlers ---------------------------------------------------------------------------


def _server(request: web.Request) -> Server:
    return request.app[SERVER_KEY]


def _room(request: web.Request) -> str:
    room = request.match_info["room"]
    if not NAME.match(room):
        raise ApiError(400, "bad_request", "room names are 1-64 letters, digits or _.-")
    return room


async def _read_offer(request: web.Request) -> str:
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/sdp":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/sdp")
    if request.content_length is not None and request.content_length > MAX_SDP:
        raise ApiError(413, "too_large", f"SDP offers are limited to {MAX_SDP} bytes")
    body = await _read_limited(request)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_sdp", "SDP must be UTF-8 text") from None


async def _read_limited(request: web.Request) -> bytes:
    """The whole body, refusing more than MAX_SDP bytes (chunked bodies included)."""
    body = bytearray()
    while True:
        chunk = await request.content.read(MAX_SDP + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > MAX_SDP:
            raise ApiError(413, "too_large", f"SDP offers are limited to {MAX_SDP} bytes")


def _etag(server: Server, session: str) -> str:
    """The session's entity tag names its ICE session: the server's current ice-ufrag."""
    return f'"{server.conference.ice_tags.get(session, session)}"'


def _created(
    server: Server,
    kind: str,
    room: str,
    session: str,
    answer: str,
    links: list[str] | None = None,
) -> web.Response:
    headers = CIMultiDict(
        {
            "Location": f"/{kind}/{room}/{session}",
            "ETag": _etag(server, session),
            "Accept-Patch": TRICKLE,
            "Access-Control-Expose-Headers": EXPOSE_HEADERS,
        }
    )
    for link in links or ():  # RFC 9725 4.6: the ICE servers, TURN credentials included
        headers.add("Link", link)
    if kind == "whep":
        headers.add("Link", f'</whep/{room}/{session}/layer>; rel="{WHEP_LAYER_REL}"')
    return web.Response(status=201, text=answer, content_type="application/sdp", headers=headers)


def _room_error(exc: RoomError) -> ApiError:
    # A full server says when to come back (RFC 9110 10.2.3); WHIP/WHEP clients retry then.
    headers = {"Retry-After": str(RETRY_AFTER)} if exc.code == BUSY else None
    return ApiError(ROOM_ERROR_STATUS.get(exc.code, 500), exc.code, exc.message, headers)


async def whip_post(request: web.Request) -> web.Response:
    """Publish: the WHIP client joins the room as a participant with its tracks."""
    server = _server(request)
    room = _room(request)
    grant = server.grant(request, room)
    if not grant.can_publish:
        raise ApiError(403, "forbidden", f"role {grant.role} may not publish")
    offer = await _read_offer(request)
    try:
        session, answer = await server.conference.whip(
            room, grant.identity, grant.role, grant.name or grant.identity, offer
        )
    except RoomError as exc:
        raise _room_error(exc) from None
    server.metrics.requests.labels("whip", "201").inc()
    return _created(server, "whip", room, session, answer, server.ice_links(grant.identity))


async def whep_post(request: web.Request) -> web.Response:
    """View the room's lead, or ``?participant=<identity>``: the WHEP client joins the
    room as a participant (its token's role) viewing that publisher's tracks."""
    server = _server(request)
    room = _room(request)
    grant = server.grant(request, room)
    offer = await _read_offer(request)
    source = request.query.get("participant")
    if source is not None and not NAME.match(source):
        raise ApiError(404, "not_found", f"{source[:64]!r} is not publishing in this room")
    try:
        session, answer = await server.conference.whep(
            room, grant.identity, grant.role, grant.name or grant.identity, offer, source
        )
    except RoomError as exc:
        raise _room_error(exc) from None
    server.metrics.requests.labels("whep", "201").inc()
    return _created(server, "whep", room, session, answer, server.ice_links(grant.identity))


def _session_for(request: web.Request, kind: str) -> tuple[Server, str, tokens.Grant]:
    """The WHIP/WHEP session in the URL, if the caller may change it (its owner or the lead)."""
    server = _server(request)
    room = _room(request)
    grant = server.grant(request, room)
    session = request.match_info["session"]
    owner = server.conference.session_owner(session)
    expected = {"whip": "publish", "whep": "view"}[kind]
    if owner is None or owner[0].name != room or owner[2] != expected or owner[1].via != kind:
        raise ApiError(404, "not_found", "no such session")
    if owner[1].identity != grant.identity and grant.role != "lead":
        raise ApiError(
            403, "forbidden", "only the session's owner or the room's lead may change it"
        )
    return server, session, grant


async def session_delete(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    server, session, grant = _session_for(request, kind)
    await server.conference.end_session(session, f"ended by {grant.identity}")
    return web.Response(status=200)


def _if_match(request: web.Request, etag: str) -> None:
    """RFC 9110 section 13.1.1: ``*`` or a list of tags, one of which must be ours (weak
    tags compare by their opaque part); no If-Match at all is accepted."""
    header = request.headers.get("If-Match")
    if header is None:
        return
    tags = [t.strip() for t in header.split(",") if t.strip()]
    if "*" in tags or any(t.removeprefix("W/") == etag for t in tags):
        return
    raise ApiError(412, "precondition_failed", "If-Match does not name this ICE session")


async def session_patch(request: web.Request) -> web.Response:
    """RFC 9725 section 4.3: a fragment with the session's current ICE credentials (or
    none) is a trickle: an ICE-lite server learns the client's addresses from its checks,
    so 204 and nothing to do. New credentials are an ICE restart: 200 with the server's
    new credentials and candidate; media keeps flowing on the old pair meanwhile."""
    kind = request.match_info["kind"]
    server, session, _grant = _session_for(request, kind)
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != TRICKLE:
        raise ApiError(415, "unsupported_media_type", f"PATCH takes {TRICKLE}")
    _if_match(request, _etag(server, session))
    try:
        fragment = sdpfrag.parse((await _read_limited(request)).decode("utf-8"))
    except (UnicodeDecodeError, sdpfrag.FragmentError) as exc:
        raise ApiError(400, "bad_request", f"bad fragment: {exc}") from None
    if fragment.ufrag is None:
        return web.Response(status=204, headers={"ETag": _etag(server, session)})
    try:
        result = await server.conference.ice_restart(session, fragment.ufrag)
    except RoomError as exc:
        raise _room_error(exc) from None
    headers = {"ETag": _etag(server, session), "Access-Control-Expose-Headers": EXPOSE_HEADERS}
    if not result.get("restarted"):
        return web.Response(status=204, headers=headers)
    body = sdpfrag.write(
        str(result["ufrag"]),
        str(result["pwd"]),
        str(result["candidate"]),
        fragment.mids[0] if fragment.mids else "0",
        *fragment.media[:1],
    )
    return web.Response(status=200, body=body.encode(), content_type=TRICKLE, headers=headers)


async def session_layer(request: web.Request) -> web.Response:
    """WHEP's layer extension: the viewer picks an encoding (``encodingId``, the rid, or
    its index for SSRC simulcast) or a ceiling (``maxSpatialLayerId``, ``maxHeight``,
    ``maxTemporalLayerId``: VP8 temporal layers above it are dropped)
    for its video; ``{}`` gives the choice back to the server. Answered 204."""
    server, session, _grant = _session_for(request, "whep")
    try:
        body = json.loads(await _read_limited(request) or b"{}")
    except ValueError:
        raise ApiError(400, "bad_request", "body must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    wishes: dict[str, Any] = {
        "encoding": None,
        "max_layer": None,
        "max_height": None,
        "max_temporal": None,
    }
    encoding = body.get("encodingId", body.get("spatialLayerId"))
    if encoding is not None:
        if not isinstance(encoding, (str, int)) or isinstance(encoding, bool):
            raise ApiError(400, "bad_request", "encodingId must be a string")
        wishes["encoding"] = str(encoding)[:32]
    for field, key in (
        ("maxSpatialLayerId", "max_layer"),
        ("maxHeight", "max_height"),
        ("maxTemporalLayerId", "max_temporal"),
    ):
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 8192:
            raise ApiError(400, "bad_request", f"{field} must be an integer 0-8192")
        wishes[key] = value
    owner = server.conference.session_owner(session)
    if owner is None:
        raise ApiError(404, "not_found", "no such session")
    await server.conference.set_preferences(owner[0], owner[1], wishes, sessions=[session])
    return web.Response(status=204)


async def dev_token(request: web.Request) -> web.Response:
    server = _server(request)
    if not server.config.server.dev_tokens:
        raise ApiError(404, "not_found", "the dev token endpoint is disabled")
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "bad_request", "body must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    room, identity, role = body.get("room"), body.get("identity"), body.get("role", "observer")
    if (
        not isinstance(room, str)
        or not NAME.match(room)
        or not isinstance(identity, str)
        or not NAME.match(identity)
    ):
        raise ApiError(400, "bad_request", "room and identity are 1-64 letters, digits or _.-")
    if role not in tokens.ROLES:
        raise ApiError(400, "bad_request", f"role must be one of {', '.join(tokens.ROLES)}")
    token = tokens.mint(
        server.config.auth.secret, room, identity, role, ttl=3600, issuer=server.config.auth.issuer
    )
    return web.json_response({"token": token, "room": room, "identity": identity, "role": role})


async def protocol_schema(request: web.Request) -> web.Response:
    return web.json_response(schema.document())


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def ice_servers(request: web.Request) -> web.Response:
    """The caller's ICE servers (TURN with fresh credentials) for an access token of any
    room: what the /ws join answer carries, for clients that connect by WHIP/WHEP."""
    server = _server(request)
    grant = server.bearer(request)
    return web.json_response(
        {"ice_servers": server.ice_servers(grant.identity)}, headers={"Cache-Control": "no-store"}
    )


async def healthz(request: web.Request) -> web.Response:
    server = _server(request)
    workers = [
        {
            "index": w.index,
            "alive": w.alive,
            "pid": w.pid,
            "port": w.port,
            "sessions": len(w.sessions),
            "rooms": sorted(w.rooms),
        }
        for w in server.pool.workers
    ]
    status = 200 if all(w["alive"] for w in workers) else 503
    return web.json_response({"ok": status == 200, "workers": workers}, status=status)


@web.middleware
async def errors_and_cors(request: web.Request, handler: Any) -> web.StreamResponse:
    server = request.app[SERVER_KEY]
    origin = request.headers.get("Origin")
    allowed = origin is not None and (
        "*" in server.config.server.cors_origins or origin in server.config.server.cors_origins
    )
    parts = request.path.split("/")
    endpoint = parts[1] if len(parts) > 1 else ""
    if request.method == "OPTIONS" and (allowed or endpoint in ("whip", "whep")):
        # A CORS preflight, or a WHIP/WHEP client asking what the resource takes.
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, If-Match"
        if endpoint in ("whip", "whep"):
            response.headers["Allow"] = (
                "OPTIONS, POST" if len(parts) == 3 else "OPTIONS, PATCH, DELETE"
            )
            response.headers["Accept-Post" if len(parts) == 3 else "Accept-Patch"] = (
                "application/sdp" if len(parts) == 3 else TRICKLE
            )
    else:
        try:
            if len(request.raw_path) > MAX_URL:
                raise ApiError(414, "uri_too_long", f"URLs are limited to {MAX_URL} bytes")
            response = await handler(request)
        except ApiError as exc:
            if endpoint in ("whip", "whep"):
                server.metrics.requests.labels(endpoint, str(exc.status)).inc()
            logger.info(
                "%s %s -> %d %s: %s",
                request.method,
                request.path[:200],
                exc.status,
                exc.code,
                exc.message,
            )
            response = error_response(exc.status, exc.code, exc.message, exc.headers)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = origin or ""
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[errors_and_cors], client_max_size=MAX_SDP + 1024)
    server = Server(config)
    app[CONFIG_KEY] = config
    app[SERVER_KEY] = server
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/dev/token", dev_token)
    hub = Hub(
        server.conference,
        config.auth.secret,
        config.auth.issuer,
        observe_join=server.metrics.observe_join,
        join_limit=config.ws.join_limit,
        forwarded_for=config.ws.forwarded_for,
        ice_servers=server.ice_servers,
        identity_join_limit=config.ws.identity_join_limit,
        on_fanout=server.metrics.on_ws_fanout,
    )
    api.setup(app, server.conference, config, server.metrics, pool=server.pool)
    recorder = recordings.RecordingService(server.conference, config.recording)
    recordings_api.setup(app, recorder)
    hub.handlers.update(recordings.ws_handlers(recorder))
    hub.join_extras.append(lambda room: {"recording": recorder.state_of(room.name)})
    app.router.add_get("/ws", hub.handle)
    app.router.add_get("/ice-servers", ice_servers)
    app.router.add_get("/api/v1/protocol.schema.json", protocol_schema)
    app.router.add_post("/whip/{room}", whip_post)
    app.router.add_post("/whep/{room}", whep_post)
    app.router.add_delete("/{kind:whip|whep}/{room}/{session}", session_delete)
    app.router.add_patch("/{kind:whip|whep}/{room}/{session}", session_patch)
    app.router.add_post("/whep/{room}/{session}/layer", session_layer)

    async def start_workers(app: web.Application) -> None:
        await server.pool.start()
        server.conference.start()
        await server.webhooks.start()
        for worker in server.pool.workers:
            logger.info(
                "media worker %d: udp %s:%d", worker.index, config.media.listen, worker.port
            )

    async def stop_workers(app: web.Application) -> None:
        await server.conference.stop()
        await server.webhooks.stop()
        await server.pool.stop()

    app.on_startup.append(start_workers)
    app.on_cleanup.append(stop_workers)
    return app
