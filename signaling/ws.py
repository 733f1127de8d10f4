"""The client protocol on WebSocket /ws (docs/protocol.md): one Connection per socket.

A connection validates each message against its schema, checks the token's expiry and
the participant's current role, calls the conference service, and answers. Events from
the conference reach each socket through a bounded queue and a writer task, so a slow
client never holds up a room.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import WSMsgType, web

from signaling import schema, tokens, views
from signaling.conference import Conference
from signaling.rooms import NAME_PATTERN, Participant, Room, RoomError

logger = logging.getLogger(__name__)

SEND_QUEUE = 1000  # messages waiting for a slow client before it is disconnected
ExtraHandler = Callable[[Room, Participant, dict[str, Any]], Awaitable[dict[str, Any]]]
RATE = 20.0  # messages per second per connection
BURST = 40.0
MAX_STRIKES = 50  # rate-limited messages before the connection is closed
JOINS_PER_WINDOW = 300  # joins per address per window: a burst guard (one NAT, many clients)
IDENTITY_JOINS_PER_WINDOW = 10  # joins per room and identity per window: a reconnect loop
JOIN_WINDOW = 10.0
MAX_DEPTH = 32  # JSON nesting; the protocol's deepest message is 3 levels
# Below the queue, what a client that stops reading can hold: the kernel's send buffer
# (Linux grows it to 4 MiB: ~30,000 events before the queue even starts), the transport's
# buffer and aiohttp's writer, which checks the transport only every writer_limit bytes.
SEND_BUFFER = 32 * 1024
WRITE_BUFFER = 32 * 1024
WRITER_LIMIT = 16 * 1024
CLOSE_TIMEOUT = 2.0  # a close the client does not take in this time becomes an abort
PING_INTERVAL = 20.0  # seconds of silence before we ping
PONG_GRACE = 10.0  # seconds a ping may go unanswered

CLOSE_CODES = {
    "unauthorized": 4401,
    "room_full": 4403,
    "room_ended": 4410,
    "rate_limited": 4429,
    "removed": 4001,
    "replaced": 4009,
    "slow": 4008,
}


def decode(text: str) -> dict[str, Any]:
    """A message's JSON object, or SchemaError("bad_json"): never RecursionError, which
    ``json.loads`` raises for deep nesting, nor anything else."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise schema.SchemaError("bad_json", "not JSON, or nested too deeply") from None
    if not isinstance(message, dict):
        raise schema.SchemaError("bad_json", "a message is a JSON object")
    stack: list[tuple[Any, int]] = [(message, 1)]
    while stack:  # without recursion: the schema validator would recurse into it
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise schema.SchemaError("bad_json", f"nested deeper than {MAX_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return message


class Liveness:
    """When to ping a quiet client, and when to give up on it (sans-I/O, ``now`` in).

    aiohttp's own heartbeat re-arms its timer when data arrives after the socket closed,
    which kept every closed connection's objects alive for 30 s (issue 10, finding 9).
    """

    def __init__(
        self, now: float, interval: float = PING_INTERVAL, grace: float = PONG_GRACE
    ) -> None:
        self.interval = interval
        self.grace = grace
        self.heard_at = now
        self.pinged_at: float | None = None

    def heard(self, now: float) -> None:
        """Any frame from the client (a pong included) shows it is there."""
        self.heard_at = now
        self.pinged_at = None

    def next_deadline(self) -> float:
        if self.pinged_at is None:
            return self.heard_at + self.interval
        return self.pinged_at + self.grace

    def poll(self, now: float) -> Literal["ping", "dead"] | None:
        if self.pinged_at is not None:
            return "dead" if now >= self.pinged_at + self.grace else None
        if now >= self.heard_at + self.interval:
            self.pinged_at = now
            return "ping"
        return None


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class JoinLimiter:
    """Joins per key (a remote address, or a room and identity) in a sliding window."""

    def __init__(self, limit: int = JOINS_PER_WINDOW, window: float = JOIN_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self.seen: dict[str, collections.deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        stamps = self.seen.setdefault(key, collections.deque())
        while stamps and now - stamps[0] > self.window:
            stamps.popleft()
        if len(stamps) >= self.limit:
            return False
        stamps.append(now)
        if len(self.seen) > 10000:
            self.seen = {a: d for a, d in self.seen.items() if d and now - d[-1] < self.window}
        return True


class RoomConnections:
    """A room's open /ws connections by the view they get (signaling/views.py)."""

    __slots__ = ("compact", "compact_view", "full", "observers")

    def __init__(self) -> None:
        self.full: dict[str, Connection] = {}
        self.compact_view: dict[str, Connection] = {}
        self.compact = False  # observers get the compact view (sticky once set)
        # The room's observers, /ws or not (from the events: participant_left comes after
        # the room forgot the participant, and an observer's leave is not for everyone).
        self.observers: set[str] = set()

    def get(self, identity: str) -> Connection | None:
        return self.full.get(identity) or self.compact_view.get(identity)

    def pop(self, identity: str) -> None:
        self.full.pop(identity, None)
        self.compact_view.pop(identity, None)


class Hub:
    """Every open connection, indexed by room and view, and the conference events fanned
    out to them: each event serialised once and queued, as the same text, only to the
    connections of its room that should see it."""

    def __init__(
        self,
        conference: Conference,
        secret: str,
        issuer: str,
        observe_join: Callable[[float], None] | None = None,
        join_limit: int = JOINS_PER_WINDOW,
        forwarded_for: bool = False,
        ice_servers: Callable[[str], list[dict[str, Any]]] | None = None,
        identity_join_limit: int = IDENTITY_JOINS_PER_WINDOW,
        on_fanout: Callable[[int], None] | None = None,
    ) -> None:
        self.conference = conference
        self.ice_servers = ice_servers  # identity -> RTCIceServer dicts (signaling/turn.py)
        self.secret = secret
        self.issuer = issuer
        self.observe_join = observe_join
        self.on_fanout = on_fanout  # an event serialised, and to how many connections
        self.forwarded_for = forwarded_for
        self.connections: dict[tuple[str, str], Connection] = {}
        self.rooms: dict[str, RoomConnections] = {}
        self.counts = views.CountCoalescer()
        self.joins = JoinLimiter(join_limit) if join_limit else None
        self.identity_joins = JoinLimiter(identity_join_limit) if identity_join_limit else None
        # Request types served elsewhere (signaling/recordings.py): type -> handler, and what
        # they add to a join's answer.
        self.handlers: dict[str, ExtraHandler] = {}
        self.join_extras: list[Callable[[Room], dict[str, Any]]] = []
        conference.add_listener(self.on_event)

    # -- the index ----------------------------------------------------------------------------
    def attach(self, room: Room, participant: Participant, connection: Connection) -> str:
        """Index a joined connection; its view ("full" or "compact")."""
        key = (room.name, participant.identity)
        previous = self.connections.get(key)
        self.connections[key] = connection
        group = self.rooms.setdefault(room.name, RoomConnections())
        group.pop(participant.identity)
        view = views.view_of(participant, group.compact)
        (group.compact_view if view == views.COMPACT else group.full)[participant.identity] = (
            connection
        )
        if previous is not None and previous is not connection:
            previous.close_after_flush(CLOSE_CODES["replaced"], "replaced by a newer connection")
        return view

    def detach(self, room: str, identity: str, connection: Connection) -> bool:
        """Forget a connection (False if a newer one of the participant replaced it)."""
        if self.connections.get((room, identity)) is not connection:
            return False
        del self.connections[(room, identity)]
        group = self.rooms.get(room)
        if group is not None:
            group.pop(identity)
        return True

    def _regroup(self, room: Room, group: RoomConnections, identity: str) -> None:
        """Move a connection whose view changed (the room went compact, a role changed);
        it is told its new view, with the observer count."""
        connection = group.get(identity)
        participant = room.participants.get(identity)
        if connection is None or participant is None:
            return
        view = views.view_of(participant, group.compact)
        now_in = group.compact_view if view == views.COMPACT else group.full
        if identity in now_in:
            return
        group.pop(identity)
        now_in[identity] = connection
        connection.send(self._event("view", {"view": view, "observers": room.viewers()}))

    # -- events -------------------------------------------------------------------------------
    def _event(self, event: str, data: dict[str, Any]) -> str:
        message = {"v": schema.VERSION, "type": "event", "event": event, "data": data}
        return json.dumps(message, separators=(",", ":"))

    def on_event(self, event: str, room: str, data: dict[str, Any], target: str | None) -> None:
        if event == "room_started":
            return
        state = self.conference.rooms.get(room)
        group = self.rooms.get(room)
        if group is None:
            if event != "participant_joined":
                return  # no /ws connection has joined: nobody to tell
            group = self.rooms[room] = RoomConnections()
        if target is not None:
            recipients = [c for c in (group.get(target),) if c is not None]
        else:
            audience = views.audience(event, data, group.observers)
            recipients = list(group.full.values()) if audience.full else []
            if audience.compact:
                recipients.extend(group.compact_view.values())
            elif audience.also is not None and audience.also in group.compact_view:
                recipients.append(group.compact_view[audience.also])
            if group.compact and not audience.compact:
                self._count_changed(room)
        views.track_observers(event, data, group.observers)
        if event == "role_changed" and state is not None:
            who = state.participants.get(str(data.get("identity")))
            if who is not None:  # for a compact view that never saw them join
                data = {**data, "participant": who.as_dict()}
        text = self._event(event, data)
        if self.on_fanout is not None:
            self.on_fanout(len(recipients))
        for connection in recipients:
            connection.send(text)
        if event == "participant_joined" and state is not None and not group.compact:
            if views.goes_compact(state):
                group.compact = True
                for identity in list(group.full):
                    self._regroup(state, group, identity)
        elif event == "participant_left" and data.get("reason") != "disconnected":
            leaving = group.get(str(data.get("identity")))
            if leaving is not None:
                leaving.close_after_flush(
                    CLOSE_CODES.get(str(data.get("reason")), 1000), str(data.get("reason"))
                )
        elif event == "role_changed" and state is not None:
            self._regroup(state, group, str(data.get("identity")))
            if group.compact:
                self._count_changed(room)
        elif event == "room_ended":
            for connection in recipients:
                connection.close_after_flush(CLOSE_CODES["room_ended"], "room ended")
            self.rooms.pop(room, None)
            self.counts.forget(room)

    def _count_changed(self, room: str) -> None:
        due = self.counts.changed(room, time.monotonic())
        if due is not None:
            asyncio.get_running_loop().call_at(
                asyncio.get_running_loop().time() + self.counts.interval, self._send_counts
            )

    def _send_counts(self) -> None:
        """The coalesced observer counts, to every connection of each compact room."""
        counts = {
            name: state.viewers()
            for name in self.counts.dirty
            if (state := self.conference.rooms.get(name)) is not None
        }
        for name, count in self.counts.flush(counts).items():
            group = self.rooms.get(name)
            if group is None or not group.compact:
                continue
            recipients = [*group.full.values(), *group.compact_view.values()]
            text = self._event("observer_count", {"count": count})
            if self.on_fanout is not None:
                self.on_fanout(len(recipients))
            for connection in recipients:
                connection.send(text)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        # No aiohttp heartbeat (see Liveness); pings and pongs reach Connection.run.
        ws = web.WebSocketResponse(
            max_msg_size=schema.MAX_MESSAGE_BYTES, autoping=False, writer_limit=WRITER_LIMIT
        )
        await ws.prepare(request)
        if request.transport is not None:
            request.transport.set_write_buffer_limits(high=WRITE_BUFFER)
            sock = request.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        address = request.remote or "?"
        if self.forwarded_for and request.headers.get("X-Forwarded-For"):
            address = request.headers["X-Forwarded-For"].split(",")[0].strip()[:64]
        connection = Connection(self, ws, request, address)
        await connection.run()
        return ws


class Connection:
    def __init__(
        self, hub: Hub, ws: web.WebSocketResponse, request: web.Request, address: str
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.request = request
        self.address = address
        self.opened = time.monotonic()
        self.room: Room | None = None
        self.participant: Participant | None = None
        self.grant: tokens.Grant | None = None
        self.bucket = TokenBucket(RATE, BURST)
        self.strikes = 0
        # A message (a dict), an event already serialised (str), or a close (code, reason).
        self.queue: asyncio.Queue[dict[str, Any] | str | tuple[int, str]] = asyncio.Queue(
            SEND_QUEUE
        )
        self.closing = False
        self.left = False
        self.dispatching = False  # a request is being served: a close waits for its answer
        self.pending_close: tuple[int, str] | None = None
        self.liveness = Liveness(time.monotonic())
        self.writer: asyncio.Task[None] | None = None
        self.shutdown: asyncio.Task[None] | None = None
        self.abort_timer: asyncio.TimerHandle | None = None

    @property
    def label(self) -> str:
        if self.participant is not None and self.room is not None:
            return f"{self.room.name}/{self.participant.identity}"
        return self.address

    # -- output -----------------------------------------------------------------------------
    def send(self, message: dict[str, Any] | str) -> None:
        """Queue a message, or an event the hub serialised once for all its recipients."""
        if self.closing:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning(
                "ws %s: client too slow, %d messages waiting; disconnecting", self.label, SEND_QUEUE
            )
            self.closing = True
            self.shutdown = asyncio.ensure_future(self._drop_slow())

    def close_after_flush(self, code: int, reason: str) -> None:
        """Close once what is queued has been sent (and the request in hand answered)."""
        if self.dispatching:
            self.pending_close = self.pending_close or (code, reason)
            return
        if self.closing:
            return
        self.closing = True
        try:
            self.queue.put_nowait((code, reason))
        except asyncio.QueueFull:
            self.shutdown = asyncio.ensure_future(self._close(code, reason))

    def error(self, request_id: Any, code: str, message: str) -> None:
        out: dict[str, Any] = {
            "v": schema.VERSION,
            "type": "error",
            "code": code,
            "message": message,
        }
        if request_id is not None:
            out["id"] = request_id
        self.send(out)

    async def _writer(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, tuple):
                await self._close(*item)
                return
            if not isinstance(item, str):
                item = json.dumps(item, separators=(",", ":"))
            try:
                await self.ws.send_str(item)
            except (ConnectionError, RuntimeError):
                return

    async def _close(self, code: int, reason: str) -> None:
        """Close the WebSocket; the TCP connection is aborted if it is still there after
        CLOSE_TIMEOUT: a client that reads nothing never drains our close frame, and
        aiohttp's close, done on its side, leaves the transport flushing forever."""
        self._abort_later()
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()[:120]), CLOSE_TIMEOUT + 1
            )
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        except asyncio.CancelledError:
            # aiohttp's writers share one drain future: a writer cancelled while blocked
            # cancels it under the close too. Only our own cancellation goes on up.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise

    def _abort_later(self) -> None:
        if self.request.transport is not None and self.abort_timer is None:
            self.abort_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._reset)

    def _reset(self) -> None:
        """Abort the connection with a TCP reset. A plain abort closes the descriptor, but
        the kernel then goes on for minutes trying to deliver the buffered bytes to a peer
        that reads nothing, and the peer sees its connection open all that time."""
        transport = self.request.transport
        if transport is None:  # the connection is gone already
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def _drop_slow(self) -> None:
        """A client too slow to read its events: take the participant out of the room now,
        rather than when the reader notices (it may never), and close (bounded)."""
        self._abort_later()  # the writer, blocked on the socket, then ends too
        room, participant = self.room, self.participant
        if room is not None and participant is not None:
            if self.hub.detach(room.name, participant.identity, self):
                self.left = True
                await self.hub.conference.leave(room.name, participant.identity, "slow")
        await self._close(CLOSE_CODES["slow"], "too slow")

    async def _keepalive(self) -> None:
        """Ping a quiet client; abort one that does not answer (see Liveness)."""
        while True:
            await asyncio.sleep(max(0.0, self.liveness.next_deadline() - time.monotonic()))
            action = self.liveness.poll(time.monotonic())
            if action == "ping":
                try:
                    await asyncio.wait_for(self.ws.ping(), self.liveness.grace)
                except (TimeoutError, ConnectionError, RuntimeError):
                    pass
            elif action == "dead":
                logger.info("ws %s: no answer to a ping; closing", self.label)
                self._reset()
                return

    # -- input ------------------------------------------------------------------------------
    async def run(self) -> None:
        self.writer = writer = asyncio.ensure_future(self._writer())
        keepalive = asyncio.ensure_future(self._keepalive())
        try:
            async for msg in self.ws:
                self.liveness.heard(time.monotonic())
                if msg.type == WSMsgType.TEXT:
                    await self.on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.error(None, "bad_json", "messages are JSON text frames")
                elif msg.type == WSMsgType.PING:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await self.ws.pong(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
                if self.closing:
                    break
        finally:
            keepalive.cancel()
            await self._closed()
            try:
                await asyncio.wait_for(writer, CLOSE_TIMEOUT + 0.5)
            except (TimeoutError, asyncio.CancelledError):
                writer.cancel()
            if self.shutdown is not None:  # shielded: cancelling us must not cancel it
                await asyncio.shield(self.shutdown)
            if not self.ws.closed:
                await self._close(1000, "")
            if self.abort_timer is not None and self.request.transport is None:
                self.abort_timer.cancel()  # the connection is gone: let it be collected now

    async def _closed(self) -> None:
        room, participant = self.room, self.participant
        if room is None or participant is None:
            return
        if not self.hub.detach(room.name, participant.identity, self):
            return  # replaced by a newer connection of the same participant
        if not self.left and participant.identity in room.participants and not room.ended:
            logger.info(
                "ws %s: connection lost; keeping the media for the resume grace", self.label
            )
            self.hub.conference.disconnected(room, participant)

    async def on_text(self, text: str) -> None:
        limited = not self.bucket.take()
        problem: schema.SchemaError | None = None
        message: dict[str, Any] | None = None
        try:
            message = decode(text)
        except schema.SchemaError as exc:
            problem = exc
        request_id = message.get("id") if message is not None else None
        if isinstance(request_id, (str, int)) and not isinstance(request_id, bool):
            request_id = request_id if not isinstance(request_id, str) else request_id[:64]
        else:
            request_id = None
        if limited:
            self.strikes += 1
            self.error(request_id, "rate_limited", f"more than {RATE:.0f} messages per second")
            if self.strikes > MAX_STRIKES:
                self.close_after_flush(CLOSE_CODES["rate_limited"], "rate limited")
            return
        if message is None:
            assert problem is not None
            self.error(None, problem.code, problem.message)
            return
        try:
            kind = schema.validate(message)
        except schema.SchemaError as exc:
            self.error(request_id, exc.code, exc.message)
            return
        self.dispatching = True
        try:
            await self.serve(kind, message, request_id)
        finally:
            self.dispatching = False
            if self.pending_close is not None:
                self.close_after_flush(*self.pending_close)

    async def serve(self, kind: str, message: dict[str, Any], request_id: Any) -> None:
        try:
            data = await self.dispatch(kind, message)
        except RoomError as exc:
            self.error(request_id, exc.code, exc.message)
            if exc.code in ("unauthorized", "room_full", "room_ended") and kind == "join":
                self.close_after_flush(CLOSE_CODES[exc.code], exc.message)
            elif exc.code == "unauthorized":
                self.close_after_flush(CLOSE_CODES["unauthorized"], exc.message)
            return
        except Exception:
            logger.exception("ws %s: %s failed", self.label, kind)
            self.error(request_id, "internal", "server error; nothing was changed")
            return
        response: dict[str, Any] = {"v": schema.VERSION, "type": "response", "data": data}
        if request_id is not None:
            response["id"] = request_id
        self.send(response)
        if kind == "leave":
            self.close_after_flush(1000, "left")

    # -- requests -----------------------------------------------------------------------------
    async def dispatch(self, kind: str, message: dict[str, Any]) -> dict[str, Any]:
        if kind == "ping":
            return {"time": time.time()}
        if kind == "join":
            return await self.join(message)
        room, participant = self.room, self.participant
        if room is None or participant is None or self.grant is None:
            raise RoomError("not_joined", "send join first")
        if time.time() > self.grant.expires + 5:
            raise RoomError("unauthorized", "token expired")
        if room.ended or participant.identity not in room.participants:
            raise RoomError("room_ended", "you are no longer in the room")
        conference = self.hub.conference
        if kind == "publish":
            answer, _added = await conference.publish(
                room, participant, message["sdp"], message["tracks"]
            )
            return {
                "sdp": answer,
                "tracks": [
                    {**t.as_dict(), "mid": t.mid} for t in room.tracks_of(participant.identity)
                ],
            }
        if kind == "unpublish":
            await conference.unpublish(room, message["track"], participant)
            return {}
        if kind in ("subscribe", "unsubscribe"):
            if kind == "subscribe":
                await conference.check_capacity(participant)
                conference.subscribe(room, participant, message["tracks"])
            else:
                conference.unsubscribe(room, participant, message["tracks"])
            # The offer follows the response, from the conference, as an event.
            asyncio.get_running_loop().call_soon(self._renegotiate, room, participant)
            return {}
        if kind == "restart_ice":
            # The subscribe connection's offer with new ICE credentials follows as an event
            # (the publish connection restarts by the client's own offer, with publish).
            asyncio.get_running_loop().call_soon(self._renegotiate, room, participant, True)
            return {}
        if kind == "answer":
            await conference.answer(room, participant, message["sdp"], message["version"])
            return {}
        if kind == "mute":
            await conference.mute(room.name, message["track"], message["muted"], participant)
            return {}
        if kind == "raise_hand":
            conference.raise_hand(room, participant, message["raised"])
            return {}
        if kind == "preferences":
            wishes: dict[str, Any] = {
                k: message[k] for k in ("max_height", "max_layer", "max_temporal") if k in message
            }
            await conference.set_preferences(room, participant, wishes)
            return {}
        if kind == "set_role":
            await conference.set_role(room.name, message["identity"], message["role"], participant)
            return {}
        if kind == "remove":
            await conference.remove(room.name, message["identity"], participant)
            return {}
        if kind == "end_room":
            room.check_moderator(participant, "end the room")
            await conference.end_room(room.name, participant.identity)
            return {}
        if kind == "list_participants":
            people, after = views.page(
                room, message.get("cursor"), message.get("limit", views.PAGE_DEFAULT)
            )
            return {
                "participants": [p.as_dict() for p in people],
                "next": after,
                "total": len(room.participants),
            }
        if kind == "leave":
            self.left = True
            await conference.leave(room.name, participant.identity, "left")
            return {}
        handler = self.hub.handlers.get(kind)
        if handler is not None:
            return await handler(room, participant, message)
        raise RoomError("unknown_type", kind)  # pragma: no cover - the schema lists every type

    def _renegotiate(self, room: Room, participant: Participant, ice_restart: bool = False) -> None:
        async def run() -> None:
            try:
                await self.hub.conference.renegotiate(room, participant, ice_restart)
            except RoomError as exc:
                self.error(None, exc.code, f"renegotiation failed: {exc.message}")

        asyncio.ensure_future(run())

    async def join(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.participant is not None:
            raise RoomError("invalid", "already joined")
        if self.hub.joins is not None and not self.hub.joins.allow(self.address):
            raise RoomError("rate_limited", "too many joins from this address; wait a few seconds")
        try:
            grant = tokens.verify(self.hub.secret, message["token"], self.hub.issuer)
        except tokens.TokenError as exc:
            raise RoomError("unauthorized", str(exc)) from None
        if not NAME_PATTERN.match(grant.room) or not NAME_PATTERN.match(grant.identity):
            raise RoomError(
                "unauthorized", "the token's room and identity must be 1-64 letters, digits or _.-"
            )
        if self.hub.identity_joins is not None and not self.hub.identity_joins.allow(
            f"{grant.room}/{grant.identity}"
        ):
            raise RoomError("rate_limited", "too many joins as this identity; wait a few seconds")
        conference = self.hub.conference
        existing_room = conference.rooms.get(grant.room)
        existing = (
            existing_room.participants.get(grant.identity) if existing_room is not None else None
        )
        resume = message.get("resume")
        if resume is not None and (existing is None or existing.resume_key != resume):
            raise RoomError(
                "invalid", "nothing to resume: the grace period is over or the key is wrong"
            )
        role = existing.role if existing is not None else grant.role
        room, participant, _is_new = conference.join(
            grant.room, grant.identity, role, message.get("name") or grant.name
        )
        view = self.hub.attach(room, participant, self)
        self.room, self.participant, self.grant = room, participant, grant
        if self.hub.observe_join is not None:
            self.hub.observe_join(time.monotonic() - self.opened)
        logger.info(
            "ws %s joined as %s%s", self.label, participant.role, " (resumed)" if resume else ""
        )
        extras: dict[str, Any] = {}
        for extra in self.hub.join_extras:
            extras.update(extra(room))
        return {
            **extras,
            "participant": participant.as_dict(),
            "room": room.as_dict(),
            "participants": [p.as_dict() for p in views.join_view(room, participant, view)],
            "view": view,
            "observers": room.viewers(),
            "tracks": [t.as_dict() for t in room.tracks.values()],
            "resume": participant.resume_key,
            "protocol": schema.VERSION,
            "ice_servers": (
                self.hub.ice_servers(participant.identity) if self.hub.ice_servers else []
            ),
        }
