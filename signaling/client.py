"""Python client SDK for the Telebridge WebSocket protocol (docs/protocol.md, version 1).

One ``TelebridgeClient`` is one participant: a WebSocket to ``/ws`` for requests and
events, a publish RTCPeerConnection (the client offers) and a subscribe RTCPeerConnection
(the server offers). It is what the integration tests, bots and recorders-as-participants
use, so it keeps a local mirror of the room (participants, tracks, hands, speaker, quality)
that event handlers and tests can read without asking the server.

Local pseudo-events, delivered like server events: ``disconnected`` (``code``,
``reason``), ``reconnected`` (the join answer), ``renegotiated`` (``version``,
``tracks``: the server track ids now received), ``remote_track`` (``track``, ``kind``),
``reconnect_failed`` (``error``) and ``error`` (an error message that matches no pending
request, or an offer that could not be answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from yarl import URL

from sfu.sdp import parse as parse_sdp

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_FRAME = 64 * 1024
DEFAULT_TIMEOUT = 10.0
# Close codes after which the server does not want us back: a normal close (leave), a
# refused join (4401 unauthorized, 4403 room full, 4410 room ended, 4429 rate limited),
# a frame too large (1009), or a policy close (1008). Anything else is a drop we may resume.
_FINAL_CLOSE_CODES = {1000, 1008, 1009}

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]


class TelebridgeError(Exception):
    """Base of the SDK's errors, so callers can catch them all at once."""


class ProtocolError(TelebridgeError):
    """The server answered a request with an ``error`` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(TelebridgeError):
    """The WebSocket closed while a request was waiting for its answer."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"connection closed (code {code}){': ' + reason if reason else ''}")
        self.code = code
        self.reason = reason


@dataclass
class PublishedTrack:
    """One of our own published tracks and the local sender behind it."""

    id: str
    mid: str
    source: str
    kind: str
    transceiver: RTCRtpTransceiver


def ws_url(base_url: str) -> str:
    """``http(s)://host[:port][/prefix]`` (or an explicit ``ws(s)://…/ws``) to the ``/ws`` URL."""
    url = URL(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(url.scheme)
    if scheme is None:
        raise ValueError(f"unsupported URL scheme {url.scheme!r}")
    path = url.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return str(url.with_scheme(scheme).with_path(path).with_query(None).with_fragment(None))


def offered_tracks(text: str) -> dict[str, str]:
    """mid -> protocol track id for every section the server sends on (``a=msid:<stream> <track>``).

    The server wrote the offer with sfu.sdp, so sfu.sdp parses it (SdpError if it cannot)."""
    mapping: dict[str, str] = {}
    for index, section in enumerate(parse_sdp(text).media):
        if (
            section.port == 0
            or section.direction not in ("sendonly", "sendrecv")
            or not section.msid
        ):
            continue
        bits = section.msid.split()
        mapping[section.mid or str(index)] = bits[1] if len(bits) > 1 else bits[0]
    return mapping


class TelebridgeClient:
    """A participant in a Telebridge room: signaling, local room state and media."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        name: str | None = None,
        auto_reconnect: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        heartbeat: float | None = None,
        configuration: RTCConfiguration | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url
        self.url = ws_url(base_url)
        self.token = token
        self.name = name
        self.auto_reconnect = auto_reconnect
        self.timeout = timeout
        self.heartbeat = heartbeat
        # The server is ICE-lite on a known address: no STUN server is wanted (aiortc's
        # default asks a public one, which fails offline and slows gathering).
        self.configuration = configuration or RTCConfiguration(iceServers=[])

        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._on_answer: dict[Any, Callable[[dict[str, Any]], None]] = {}
        self._send_lock = asyncio.Lock()
        self._closing = False
        self._reconnecting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

        # Room state, mirrored from the join answer and events.
        self.joined: dict[str, Any] = {}
        self.participant: dict[str, Any] = {}
        self.room: dict[str, Any] = {}
        self.participants: dict[str, dict[str, Any]] = {}
        # "compact": the room is large and we observe it: ``participants`` holds the lead,
        # the participants and ourselves, ``observers`` the count (list_participants pages
        # through everyone); "full": ``participants`` is everyone.
        self.view = "full"
        self.observers = 0
        self.tracks: dict[str, dict[str, Any]] = {}
        self.resume: str | None = None
        self.active_speaker: str | None = None
        self.speaker: dict[str, Any] = {}
        self.quality: dict[str, dict[str, Any]] = {}
        self.ended: dict[str, Any] | None = None
        self.left_reason: str | None = None
        self.close_code: int | None = None

        # Events.
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._handlers: dict[str, list[Handler]] = {}
        self._waiters: list[
            tuple[str, Callable[[dict[str, Any]], bool] | None, asyncio.Future[dict[str, Any]]]
        ] = []

        # Media.
        self.publish_pc: RTCPeerConnection | None = None
        self.subscribe_pc: RTCPeerConnection | None = None
        self.published: dict[str, PublishedTrack] = {}
        self.remote_tracks: dict[str, MediaStreamTrack] = {}
        self.remote_mids: dict[str, str] = {}
        self.offer_version: int | None = None
        self.frames: dict[str, int] = {}
        self.frame_times: dict[str, list[float]] = {}
        self.last_frames: dict[str, Any] = {}
        self._publish_lock = asyncio.Lock()
        self._offer_lock = asyncio.Lock()
        self._remote_changed = asyncio.Event()
        self._frame_tasks: dict[str, asyncio.Task[None]] = {}

    # -- connection ---------------------------------------------------------------------------
    @classmethod
    async def connect(
        cls,
        base_url: str,
        token: str,
        *,
        name: str | None = None,
        resume: str | None = None,
        auto_reconnect: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        heartbeat: float | None = None,
        configuration: RTCConfiguration | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> TelebridgeClient:
        """Open the WebSocket and join; the join answer seeds the local room state."""
        client = cls(
            base_url,
            token,
            name=name,
            auto_reconnect=auto_reconnect,
            timeout=timeout,
            heartbeat=heartbeat,
            configuration=configuration,
            session=session,
        )
        try:
            await client._open_and_join(resume)
        except BaseException:
            await client.close()
            raise
        return client

    @property
    def identity(self) -> str | None:
        return self.participant.get("identity")

    @property
    def role(self) -> str | None:
        return self.participant.get("role")

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    @property
    def raised_hands(self) -> set[str]:
        return {identity for identity, p in self.participants.items() if p.get("hand_raised")}

    async def _open_and_join(self, resume: str | None) -> dict[str, Any]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        self._ws = await self._session.ws_connect(
            self.url, heartbeat=self.heartbeat, max_msg_size=4 * MAX_FRAME
        )
        self.close_code = None
        self._reader = asyncio.create_task(self._read(self._ws), name="telebridge-reader")
        fields: dict[str, Any] = {"token": self.token}
        if resume is not None:
            fields["resume"] = resume
        if self.name is not None:
            fields["name"] = self.name
        # The answer is applied by the reader, before it reads on: an event right behind
        # the answer must land on the new state, not be overwritten by the snapshot.
        return await self._request("join", fields, on_answer=self._apply_join)

    def _apply_join(self, data: dict[str, Any]) -> None:
        """Replace local state with the join answer: events missed while away are not replayed."""
        self.joined = data
        self.participant = dict(data.get("participant") or {})
        self.room = dict(data.get("room") or {})
        self.participants = {
            p["identity"]: dict(p) for p in data.get("participants") or [] if "identity" in p
        }
        if self.identity and self.identity not in self.participants:
            self.participants[self.identity] = dict(self.participant)
        self.tracks = {t["id"]: dict(t) for t in data.get("tracks") or [] if "id" in t}
        self.view = str(data.get("view") or "full")
        self.observers = int(data.get("observers") or 0)
        self.resume = data.get("resume")
        self.left_reason = None
        logger.info(
            "joined room %s as %s (%s), %d participants, %d tracks",
            self.room.get("name"),
            self.identity,
            self.role,
            len(self.participants),
            len(self.tracks),
        )

    async def reconnect(self) -> dict[str, Any]:
        """Open a new WebSocket and join with ``resume``: the peer connections are kept,
        the server takes the participant back without touching media."""
        if self.resume is None:
            raise TelebridgeError("no resume string: the client never joined")
        running = self._reconnecting
        if running is not None and not running.done() and running is not asyncio.current_task():
            await asyncio.shield(running)  # an automatic reconnect is already on its way
            if self.connected:
                return self.joined
        # Detach the old socket first, so its reader does not report this as a drop.
        old, reader = self._ws, self._reader
        self._ws = None
        if old is not None and not old.closed:
            with contextlib.suppress(Exception):
                await old.close()
        if reader is not None and reader is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(reader, self.timeout)
        self._fail_pending(ConnectionLost(self.close_code, "reconnecting"))
        self._closing = False
        try:
            data = await self._open_and_join(self.resume)
        except BaseException:
            # A refused resume leaves a socket that is open but not joined: drop it quietly.
            ws, self._ws = self._ws, None
            if ws is not None and not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
            raise
        self._dispatch("reconnected", data)
        return data

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Route every frame: answers to their pending request, events to state and handlers."""
        reason = ""
        try:
            while True:
                message = await ws.receive()
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._receive(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    logger.warning("ignoring a binary frame of %d bytes", len(message.data))
                elif message.type == aiohttp.WSMsgType.CLOSE:
                    reason = str(message.extra or "")  # the server's close reason
                    break
                elif message.type == aiohttp.WSMsgType.ERROR:
                    reason = str(ws.exception() or message.data)
                    logger.warning("websocket error: %s", reason)
                    break
                elif message.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    break
        except Exception:
            logger.exception("websocket reader failed")
        finally:
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
            if ws is self._ws:
                self._on_closed(ws, reason)

    def _on_closed(self, ws: aiohttp.ClientWebSocketResponse, reason: str) -> None:
        code = ws.close_code
        self.close_code = code
        self._fail_pending(ConnectionLost(code, reason))
        if self._closing:
            return
        logger.info("websocket closed (code %s)", code)
        self._dispatch("disconnected", {"code": code, "reason": reason})
        if self._resumable(code):
            self._reconnecting = asyncio.create_task(
                self._auto_reconnect(), name="telebridge-reconnect"
            )

    def _fail_pending(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        self._on_answer.clear()

    def _resumable(self, code: int | None) -> bool:
        """Reconnect only after a drop: not after leave, removal, the room's end, or a
        refusal (4xxx codes are the server's deliberate closes)."""
        if (
            not self.auto_reconnect
            or self.resume is None
            or self.ended is not None
            or self.left_reason
        ):
            return False
        return code is None or (code not in _FINAL_CLOSE_CODES and code < 4000)

    async def _auto_reconnect(self) -> None:
        """One attempt per drop: a loop here could hammer a server that keeps refusing."""
        try:
            await self.reconnect()
        except Exception as exc:
            logger.warning("automatic reconnect failed: %s", exc)
            self._dispatch("reconnect_failed", {"error": str(exc)})

    async def wait_reconnected(self, timeout: float | None = None) -> None:
        """Wait for a running automatic reconnect, so tests need not poll."""
        task = self._reconnecting
        if task is not None:
            await asyncio.wait_for(
                asyncio.shield(task), timeout if timeout is not None else self.timeout
            )

    def _receive(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            logger.warning("ignoring a frame that is not JSON: %.80r", text)
            return
        if not isinstance(message, dict):
            logger.warning("ignoring a frame that is not an object")
            return
        if message.get("v") != PROTOCOL_VERSION:
            logger.warning(
                "message of protocol version %r, expected %d", message.get("v"), PROTOCOL_VERSION
            )
        kind = message.get("type")
        if kind == "response":
            future = self._pending.pop(message.get("id"), None)
            hook = self._on_answer.pop(message.get("id"), None)
            if future is None or future.done():
                logger.warning("response to no pending request: id %r", message.get("id"))
                return
            data = message.get("data")
            data = data if isinstance(data, dict) else {}
            if hook is not None:
                try:
                    hook(data)
                except Exception as exc:
                    future.set_exception(exc)
                    return
            future.set_result(data)
        elif kind == "error":
            code = str(message.get("code", "internal"))
            text_ = str(message.get("message", ""))
            future = self._pending.pop(message.get("id"), None)
            if future is not None and not future.done():
                future.set_exception(ProtocolError(code, text_))
            else:
                logger.warning("server error %s: %s", code, text_)
                self._dispatch("error", {"id": message.get("id"), "code": code, "message": text_})
        elif kind == "event":
            event = message.get("event")
            data = message.get("data")
            if not isinstance(event, str):
                logger.warning("event without a name: %.200r", message)
                return
            self._on_event(event, data if isinstance(data, dict) else {})
        else:
            logger.warning("ignoring a message of type %r", kind)

    # -- requests -----------------------------------------------------------------------------
    async def send(self, message: dict[str, Any]) -> None:
        """Send one message as it is (plus ``v``); the server's limit is checked here so an
        oversized SDP fails locally instead of costing the connection (1009)."""
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionLost(self.close_code, "not connected")
        text = json.dumps({"v": PROTOCOL_VERSION, **message}, separators=(",", ":"))
        if len(text.encode()) > MAX_FRAME:
            raise ProtocolError(
                "too_large", f"message of {len(text.encode())} bytes is over {MAX_FRAME}"
            )
        async with self._send_lock:
            await ws.send_str(text)

    async def request(
        self, msg_type: str, /, *, timeout: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Send a request with a fresh id; return the ``response`` data or raise
        ``ProtocolError`` on ``error``, ``TimeoutError`` when nothing comes back."""
        return await self._request(msg_type, fields, timeout=timeout)

    async def _request(
        self,
        msg_type: str,
        fields: dict[str, Any],
        *,
        timeout: float | None = None,
        on_answer: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        if on_answer is not None:
            self._on_answer[request_id] = on_answer
        try:
            await self.send({"type": msg_type, "id": request_id, **fields})
            limit = self.timeout if timeout is None else timeout
            try:
                return await asyncio.wait_for(future, limit)
            except TimeoutError:
                raise TimeoutError(
                    f"no answer to {msg_type} (id {request_id}) within {limit} s"
                ) from None
        finally:
            self._pending.pop(request_id, None)
            self._on_answer.pop(request_id, None)

    async def ping(self) -> dict[str, Any]:
        return await self.request("ping")

    async def raise_hand(self, raised: bool = True) -> dict[str, Any]:
        return await self.request("raise_hand", raised=raised)

    async def list_participants(
        self, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """One page of everyone in the room: ``participants``, ``next`` (the cursor of the
        next page, None on the last) and ``total``."""
        fields: dict[str, Any] = {}
        if cursor is not None:
            fields["cursor"] = cursor
        if limit is not None:
            fields["limit"] = limit
        return await self.request("list_participants", **fields)

    async def all_participants(self, limit: int = 500) -> list[dict[str, Any]]:
        """Everyone in the room, a page at a time."""
        people: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self.list_participants(cursor, limit)
            people.extend(page["participants"])
            cursor = page["next"]
            if cursor is None:
                return people

    async def set_role(self, identity: str, role: str) -> dict[str, Any]:
        return await self.request("set_role", identity=identity, role=role)

    async def remove(self, identity: str) -> dict[str, Any]:
        return await self.request("remove", identity=identity)

    async def end_room(self) -> dict[str, Any]:
        """End the room for everyone. The server may close our socket (4410) before its
        answer arrives; the room did end, so that counts as success."""
        try:
            return await self.request("end_room")
        except ConnectionLost as exc:
            if exc.code == 4410 or self.ended is not None:
                return {}
            raise

    async def preferences(self, **fields: Any) -> dict[str, Any]:
        """``max_height``, ``max_layer`` (``"low"``, ``"medium"``, ``"high"``) and/or
        ``max_temporal`` (0-3: the highest VP8 temporal layer)."""
        return await self.request("preferences", **fields)

    async def mute(self, track_id: str, muted: bool = True) -> dict[str, Any]:
        data = await self.request("mute", track=track_id, muted=muted)
        if track_id in self.tracks:
            self.tracks[track_id]["muted"] = muted
        return data

    async def leave(self) -> None:
        """Say goodbye (the server closes with 1000), then release everything."""
        self._closing = True
        if self.connected:
            with contextlib.suppress(TelebridgeError, TimeoutError):
                await self.request("leave")
        await self.close()

    async def close(self) -> None:
        """Close the peer connections and the WebSocket without a ``leave``: to the server
        this is a drop, and the participant lingers for the grace period."""
        self._closing = True
        if self._reconnecting is not None and not self._reconnecting.done():
            self._reconnecting.cancel()
        for task in list(self._frame_tasks.values()) + list(self._tasks):
            task.cancel()
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None and self._reader is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, self.timeout)
        self._fail_pending(ConnectionLost(self.close_code, "client closed"))
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                await pc.close()
        for _, _, future in self._waiters:
            if not future.done():
                future.cancel()
        self._waiters.clear()
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> TelebridgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.leave()

    # -- events -------------------------------------------------------------------------------
    def on(self, event: str, callback: Handler | None = None) -> Any:
        """Register ``callback(data)`` (sync or async) for ``event``; usable as a decorator."""

        def register(fn: Handler) -> Handler:
            self._handlers.setdefault(event, []).append(fn)
            return fn

        return register(callback) if callback is not None else register

    def off(self, event: str, callback: Handler) -> None:
        handlers = self._handlers.get(event, [])
        if callback in handlers:
            handlers.remove(callback)

    def mark(self) -> int:
        """The current length of ``events``: pass it as ``since`` to ``wait_for`` so an
        event that arrives before the wait starts is not missed."""
        return len(self.events)

    async def wait_for(
        self,
        event: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float | None = 10.0,
        *,
        since: int | None = None,
    ) -> dict[str, Any]:
        """The data of the next ``event`` that satisfies ``predicate``. Only events after
        the call count, unless ``since`` (an index into ``events``) looks back too."""
        if since is not None:
            for name, data in self.events[since:]:
                if name == event and (predicate is None or predicate(data)):
                    return data
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = (event, predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"no {event} event within {timeout} s") from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, data))
        for entry in list(self._waiters):
            name, predicate, future = entry
            if name != event or future.done():
                continue
            try:
                matched = predicate is None or predicate(data)
            except Exception as exc:
                future.set_exception(exc)
                continue
            if matched:
                future.set_result(data)
        for handler in list(self._handlers.get(event, [])):
            try:
                result = handler(data)
                if inspect.isawaitable(result):
                    self._spawn(self._run_handler(event, result))
            except Exception:
                logger.exception("handler for %s failed", event)

    async def _run_handler(self, event: str, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except Exception:
            logger.exception("handler for %s failed", event)

    def _spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_event(self, event: str, data: dict[str, Any]) -> None:
        """Update the local room state first, so handlers see the state after the event."""
        try:
            self._apply_event(event, data)
        except (KeyError, TypeError, AttributeError) as exc:
            logger.warning("malformed %s event %.200r: %s", event, data, exc)
        self._dispatch(event, data)
        if event == "offer":
            self._spawn(self._answer_offer(data))

    def _apply_event(self, event: str, data: dict[str, Any]) -> None:
        if event == "participant_joined":
            participant = data["participant"]
            self.participants[participant["identity"]] = dict(participant)
        elif event == "participant_left":
            identity = data["identity"]
            self.participants.pop(identity, None)
            for track_id in [
                t for t, track in self.tracks.items() if track.get("owner") == identity
            ]:
                self.tracks.pop(track_id, None)
            if identity == self.identity:
                self.left_reason = data.get("reason") or "left"
        elif event == "removed":  # sent to the removed participant only, before it is dropped
            self.left_reason = "removed"
        elif event == "role_changed":
            identity, role = data["identity"], data["role"]
            if identity in self.participants:
                self.participants[identity]["role"] = role
            elif isinstance(data.get("participant"), dict):  # new on our compact stage
                self.participants[identity] = dict(data["participant"])
            if identity == self.identity:
                self.participant["role"] = role
            elif self.view == "compact" and role == "observer":
                self.participants.pop(identity, None)
        elif event == "observer_count":
            self.observers = int(data["count"])
        elif event == "view":
            self.view, self.observers = str(data["view"]), int(data["observers"])
            if self.view == "compact":  # forget the other observers: no leaves will come
                self.participants = {
                    i: p
                    for i, p in self.participants.items()
                    if p.get("role") != "observer" or i == self.identity
                }
        elif event == "track_published":
            track = data["track"]
            self.tracks[track["id"]] = dict(track)
        elif event == "track_unpublished":
            track_id = data["track"]
            self.tracks.pop(track_id, None)
            self._forget_published(track_id)
        elif event == "track_muted":
            track_id = data["track"]
            if track_id in self.tracks:
                self.tracks[track_id]["muted"] = bool(data["muted"])
        elif event == "hand_raised":
            identity = data["identity"]
            if identity in self.participants:
                self.participants[identity]["hand_raised"] = bool(data["raised"])
            if identity == self.identity:
                self.participant["hand_raised"] = bool(data["raised"])
        elif event == "active_speaker":
            self.active_speaker = data.get("identity")
            self.speaker = dict(data)
        elif event == "connection_quality":
            self.quality[data["identity"]] = dict(data)
        elif event == "room_ended":
            self.ended = dict(data)

    # -- publishing ---------------------------------------------------------------------------
    async def publish(
        self,
        *,
        video: MediaStreamTrack | None = None,
        audio: MediaStreamTrack | None = None,
        screen: MediaStreamTrack | None = None,
        video_codec: str | None = None,
    ) -> list[dict[str, Any]]:
        """Add tracks to the publish connection and negotiate (a new offer each call);
        returns the server's track objects for this call's tracks (also in ``published``)."""
        wanted = [
            (track, source)
            for track, source in ((video, "camera"), (audio, "microphone"), (screen, "screen"))
            if track is not None
        ]
        if not wanted:
            raise ValueError("nothing to publish")
        async with self._publish_lock:
            if self.publish_pc is None:
                self.publish_pc = RTCPeerConnection(self.configuration)
            pc = self.publish_pc
            added: list[tuple[RTCRtpTransceiver, str]] = []
            for track, source in wanted:
                transceiver = pc.addTransceiver(track, direction="sendonly")
                if video_codec and track.kind == "video":
                    _prefer_codec(transceiver, "video", video_codec)
                added.append((transceiver, source))
            try:
                await pc.setLocalDescription(await pc.createOffer())
                await _gathered(pc, self.timeout)
                offer = pc.localDescription.sdp
                announced = [
                    {"mid": transceiver.mid, "source": source} for transceiver, source in added
                ]
                data = await self.request("publish", sdp=offer, tracks=announced)
                await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
            except BaseException:
                await self._abandon_publish(added)
                raise
            return self._remember_published(added, [dict(t) for t in data.get("tracks") or []])

    async def _abandon_publish(self, added: list[tuple[RTCRtpTransceiver, str]]) -> None:
        """Undo a refused publish, so a later one (say, after being given the floor) does
        not offer the refused sections again. The caller's tracks stay usable."""
        for transceiver, _ in added:
            transceiver.sender.replaceTrack(None)
            transceiver.direction = "inactive"
        pc = self.publish_pc
        if pc is not None and pc.remoteDescription is None:
            # Never negotiated: start the next publish from a fresh connection.
            self.publish_pc = None
            await pc.close()

    def _remember_published(
        self, added: list[tuple[RTCRtpTransceiver, str]], tracks: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Pair the answer's tracks with our new transceivers and return the new ones.

        The answer may list every track we publish, not only this call's, and its track
        objects carry no ``mid``: a track is new if we did not know its id, and is paired
        by ``mid`` when given, else by source (one of each source per publish call)."""
        remaining = list(added)
        new: list[dict[str, Any]] = []
        for track in tracks:
            if "id" not in track or track["id"] in self.published:
                continue
            pair = next((p for p in remaining if p[0].mid == track.get("mid")), None) or next(
                (p for p in remaining if p[1] == track.get("source")), None
            )
            if pair is None:
                logger.warning("published track %r matches no new local sender", track)
                continue
            remaining.remove(pair)
            transceiver, source = pair
            self.published[track["id"]] = PublishedTrack(
                id=track["id"],
                mid=str(transceiver.mid),
                source=source,
                kind=transceiver.kind,
                transceiver=transceiver,
            )
            if self.identity is not None:
                track.setdefault("owner", self.identity)
            self.tracks[track["id"]] = dict(track)
            new.append(track)
        return new

    def _forget_published(self, track_id: str) -> None:
        published = self.published.pop(track_id, None)
        if published is not None:
            # Stop feeding the sender and offer the section as inactive from now on; it
            # stays (aiortc cannot remove one) and is never reused, so a mid keeps its meaning.
            published.transceiver.sender.replaceTrack(None)
            published.transceiver.direction = "inactive"

    async def unpublish(self, track_id: str) -> dict[str, Any]:
        data = await self.request("unpublish", track=track_id)
        self.tracks.pop(track_id, None)
        self._forget_published(track_id)
        return data

    # -- subscribing --------------------------------------------------------------------------
    async def subscribe(self, track_ids: list[str] | str) -> dict[str, Any]:
        """Ask for tracks; the server follows with an ``offer`` event, answered here."""
        ids = [track_ids] if isinstance(track_ids, str) else list(track_ids)
        return await self.request("subscribe", tracks=ids)

    async def unsubscribe(self, track_ids: list[str] | str) -> dict[str, Any]:
        ids = [track_ids] if isinstance(track_ids, str) else list(track_ids)
        return await self.request("unsubscribe", tracks=ids)

    async def _answer_offer(self, data: dict[str, Any]) -> None:
        """Server-driven renegotiation: one offer at a time, in the order they came."""
        async with self._offer_lock:
            try:
                await self._answer_offer_locked(data)
            except Exception as exc:
                logger.exception("could not answer offer version %r", data.get("version"))
                self._dispatch(
                    "error",
                    {"code": "offer_failed", "message": str(exc), "version": data.get("version")},
                )

    async def _answer_offer_locked(self, data: dict[str, Any]) -> None:
        sdp, version = data["sdp"], data.get("version")
        if self.subscribe_pc is None:
            self.subscribe_pc = RTCPeerConnection(self.configuration)
        pc = self.subscribe_pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await _gathered(pc, self.timeout)
        self._map_remote_tracks(sdp)
        await self.request("answer", sdp=pc.localDescription.sdp, version=version)
        self.offer_version = version
        self._dispatch("renegotiated", {"version": version, "tracks": sorted(self.remote_tracks)})

    def _map_remote_tracks(self, sdp: str) -> None:
        """Key the received tracks by protocol track id, from the offer's ``a=msid`` lines."""
        assert self.subscribe_pc is not None
        mapping = offered_tracks(sdp)
        by_mid = {t.mid: t for t in self.subscribe_pc.getTransceivers() if t.mid is not None}
        current: dict[str, MediaStreamTrack] = {}
        for mid, track_id in mapping.items():
            transceiver = by_mid.get(mid)
            if transceiver is not None and transceiver.receiver.track is not None:
                current[track_id] = transceiver.receiver.track
        new = [
            track_id
            for track_id in current
            if self.remote_tracks.get(track_id) is not current[track_id]
        ]
        self.remote_mids = {
            mid: track_id for mid, track_id in mapping.items() if track_id in current
        }
        self.remote_tracks = current
        self._remote_changed.set()
        self._remote_changed = asyncio.Event()
        for track_id in new:
            self._dispatch("remote_track", {"track": track_id, "kind": current[track_id].kind})

    async def wait_remote_track(
        self, track_id: str, timeout: float | None = 10.0
    ) -> MediaStreamTrack:
        """The received track for ``track_id`` once an offer carrying it has been answered."""

        async def wait() -> MediaStreamTrack:
            while track_id not in self.remote_tracks:
                await self._remote_changed.wait()
            return self.remote_tracks[track_id]

        return await asyncio.wait_for(wait(), timeout)

    def count_frames(self, track_id: str) -> asyncio.Task[None]:
        """Consume a received track, counting decoded frames into ``frames[track_id]``
        (and their arrival times into ``frame_times``); waits for the track if needed."""
        task = self._frame_tasks.get(track_id)
        if task is not None and not task.done():
            return task
        self.frames.setdefault(track_id, 0)
        self.frame_times.setdefault(track_id, [])
        task = asyncio.create_task(self._consume(track_id), name=f"telebridge-frames-{track_id}")
        self._frame_tasks[track_id] = task
        return task

    async def _consume(self, track_id: str) -> None:
        track = await self.wait_remote_track(track_id, timeout=None)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                logger.debug("track %s ended", track_id)
                return
            self.frames[track_id] += 1
            self.frame_times[track_id].append(time.monotonic())
            self.last_frames[track_id] = frame

    async def wait_frames(self, track_id: str, count: int, timeout: float = 15.0) -> int:
        """Wait until ``count`` frames of ``track_id`` were decoded (starts counting if needed)."""
        self.count_frames(track_id)
        deadline = time.monotonic() + timeout
        while self.frames.get(track_id, 0) < count:
            if time.monotonic() > deadline:
                state = self.subscribe_pc.connectionState if self.subscribe_pc else "none"
                raise TimeoutError(
                    f"{self.frames.get(track_id, 0)} frames of {track_id} after {timeout} s (pc {state})"
                )
            await asyncio.sleep(0.05)
        return self.frames[track_id]

    def frame_rate(self, track_id: str, window: float = 2.0) -> float:
        """Frames per second of ``track_id`` over the last ``window`` seconds."""
        times = self.frame_times.get(track_id) or []
        if not times:
            return 0.0
        end = times[-1]
        return sum(1 for t in times if t > end - window) / window


async def _gathered(pc: RTCPeerConnection, timeout: float) -> None:
    """No trickle ICE in this protocol: the SDP must carry every candidate."""
    deadline = time.monotonic() + timeout
    while pc.iceGatheringState != "complete":
        if time.monotonic() > deadline:
            raise TimeoutError("ICE gathering did not complete")
        await asyncio.sleep(0.01)


def _prefer_codec(transceiver: RTCRtpTransceiver, kind: str, codec: str) -> None:
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    wanted = [c for c in codecs if c.mimeType.lower() == f"{kind}/{codec.lower()}"]
    if not wanted:
        raise ValueError(f"aiortc cannot send {codec}")
    rtx = [c for c in codecs if c.mimeType.lower() == f"{kind}/rtx"]
    transceiver.setCodecPreferences(wanted + rtx)
