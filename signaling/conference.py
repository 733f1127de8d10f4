"""The conference service: rooms and roles (signaling/rooms.py) joined to the media workers.

The WebSocket protocol (signaling/ws.py) and the REST API (signaling/api.py) both act
through this class, and every change it makes is announced once to its listeners (the
WebSocket fan-out, webhooks, metrics) as ``(event, room, data, target)``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from sfu.pool import WorkerError, WorkerHandle, WorkerPool
from signaling.placement import ADMIT_BY, BUSY, JOIN_WAIT, WORKER_EXITED, Placement
from signaling.rooms import LAYERS, SOURCES, Participant, Room, RoomError, RoomOptions, Track

logger = logging.getLogger(__name__)

Listener = Callable[[str, str, dict[str, Any], str | None], None]

_ICE_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)


def ice_ufrag(sdp: str) -> str:
    """The first a=ice-ufrag of a description ("" without one)."""
    match = _ICE_UFRAG.search(sdp)
    return match.group(1) if match else ""


class Conference:
    def __init__(self, pool: WorkerPool, resume_grace: float = 20.0) -> None:
        self.pool = pool
        self.placement = Placement(pool)  # which worker serves a request; pipes
        self.placement.on_source_lost = self._source_lost
        self._sources_lost: set[str] = set()
        self.resume_grace = resume_grace
        self.rooms: dict[str, Room] = {}
        self.listeners: list[Listener] = []
        # media session id -> (room, identity, "publish" | "subscribe")
        self.media_sessions: dict[str, tuple[str, str, str]] = {}
        self._offer_locks: dict[tuple[str, str], asyncio.Lock] = {}
        # WHIP/WHEP session id -> the server's current ice-ufrag: the session's ETag (it
        # names the ICE session, RFC 9725 section 4.3) until an ICE restart replaces it.
        self.ice_tags: dict[str, str] = {}
        self._janitor: asyncio.Task[None] | None = None

    # -- events -------------------------------------------------------------------------------
    def add_listener(self, callback: Listener) -> None:
        self.listeners.append(callback)

    def emit(self, event: str, room: str, data: dict[str, Any], target: str | None = None) -> None:
        for listener in self.listeners:
            try:
                listener(event, room, data, target)
            except Exception:  # a broken listener must not break the room
                logger.exception("listener failed on %s", event)

    # -- rooms ----------------------------------------------------------------------------------
    def create_room(self, name: str, options: RoomOptions) -> Room:
        existing = self.rooms.get(name)
        if existing is not None and not existing.ended:
            raise RoomError("conflict", f"room {name!r} exists")
        room = Room(name=name, options=options)
        room.empty_since = time.time()
        self.rooms[name] = room
        self.emit("room_started", name, {"room": room.as_dict()})
        logger.info("room %s created %s", name, options.as_dict())
        return room

    def get_room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None or room.ended:
            raise RoomError("not_found", f"no room {name!r}")
        return room

    def list_rooms(self) -> list[Room]:
        return [room for room in self.rooms.values() if not room.ended]

    async def end_room(self, name: str, by: str | None = None, reason: str = "ended") -> None:
        room = self.get_room(name)
        room.ended = True
        self.emit("room_ended", name, {"reason": reason, "by": by})
        for identity in list(room.participants):
            await self._drop(room, identity, "room_ended")
        self.rooms.pop(name, None)
        logger.info("room %s ended (%s, by %s)", name, reason, by)

    # -- participants ---------------------------------------------------------------------------
    def join(
        self, room_name: str, identity: str, role: str, name: str, via: str = "ws"
    ) -> tuple[Room, Participant, bool]:
        """Admit (or re-admit) a participant. Returns (room, participant, is_new)."""
        room = self.rooms.get(room_name)
        if room is None or room.ended:
            room = self.create_room(room_name, RoomOptions())
        room.check_admit(identity, role)
        existing = room.participants.get(identity)
        if existing is not None:
            if existing.via != via:
                raise RoomError(
                    "conflict", f"{identity!r} is in this room already, over {existing.via}"
                )
            existing.connected = True
            existing.disconnected_at = None
            return room, existing, False
        participant = Participant(
            identity=identity, name=name, role=role, joined_at=time.time(), via=via
        )
        room.add(participant)
        room.empty_since = None
        self.emit("participant_joined", room.name, {"participant": participant.as_dict()})
        return room, participant, True

    def disconnected(self, room: Room, participant: Participant) -> None:
        """The WebSocket dropped: keep media for the grace period, then leave."""
        participant.connected = False
        participant.disconnected_at = time.monotonic()

    async def leave(self, room_name: str, identity: str, reason: str = "left") -> None:
        room = self.rooms.get(room_name)
        if room is not None and identity in room.participants:
            await self._drop(room, identity, reason)

    async def _drop(self, room: Room, identity: str, reason: str) -> None:
        participant = room.discard(identity)
        if participant is None:
            return
        self._offer_locks.pop((room.name, identity), None)
        for track in room.tracks_of(identity):
            await self._remove_track(room, track)
        for session in (
            participant.publish_session,
            participant.subscribe_session,
            *participant.view_sessions,
        ):
            if session is not None:
                self.media_sessions.pop(session, None)
                self.ice_tags.pop(session, None)
                await self._request(
                    room.name, "close", {"session": session, "reason": reason}, quiet=True
                )
        participant.view_sessions.clear()
        if room.active_speaker == identity:
            room.active_speaker = None
        self.emit("participant_left", room.name, {"identity": identity, "reason": reason})
        if not room.participants:
            room.empty_since = time.time()

    async def set_role(
        self, room_name: str, identity: str, role: str, actor: Participant | None = None
    ) -> None:
        room = self.get_room(room_name)
        target = room.participant(identity)
        room.check_role_change(actor, target, role)
        if target.role == role:
            return
        room.set_role(target, role)
        if role == "observer":  # the floor is taken back: stop what they publish
            for track in room.tracks_of(identity):
                await self._remove_track(room, track)
        self.emit(
            "role_changed",
            room.name,
            {"identity": identity, "role": role, "by": actor.identity if actor else None},
        )
        self.raise_hand(room, target, False)  # given the floor or not, the hand comes down

    async def remove(self, room_name: str, identity: str, actor: Participant | None = None) -> None:
        room = self.get_room(room_name)
        room.check_moderator(actor, "remove someone")
        room.participant(identity)
        if actor is not None and actor.identity == identity:
            raise RoomError("invalid", "use leave to leave")
        self.emit("removed", room.name, {"by": actor.identity if actor else None}, target=identity)
        await self._drop(room, identity, "removed")

    def raise_hand(self, room: Room, participant: Participant, raised: bool) -> None:
        if participant.hand_raised != raised:
            participant.hand_raised = raised
            self.emit(
                "hand_raised", room.name, {"identity": participant.identity, "raised": raised}
            )

    # -- tracks ---------------------------------------------------------------------------------
    async def publish(
        self, room: Room, participant: Participant, sdp: str, sources: list[dict[str, str]]
    ) -> tuple[str, list[Track]]:
        if not participant.can_publish:
            raise RoomError("forbidden", f"{participant.role}s cannot publish")
        by_mid = {item["mid"]: item["source"] for item in sources}
        renegotiate = participant.publish_session is not None
        session = participant.publish_session or secrets.token_urlsafe(12)
        params: dict[str, Any] = {
            "room": room.name,
            "session": session,
            "identity": participant.identity,
            "offer": sdp,
        }
        params["renegotiate"] = renegotiate
        if not renegotiate:
            self.media_sessions[session] = (room.name, participant.identity, "publish")
        try:
            result = await self._request(room.name, "publish", params)
        except RoomError:
            if not renegotiate:
                self.media_sessions.pop(session, None)
            raise
        participant.publish_session = session
        for producer_id in result.get("removed", []):
            track = room.tracks.get(producer_id)
            if track is not None:
                await self._remove_track(room, track, close_producer=False)
        added = []
        for info in result.get("tracks", []):
            if info["id"] in room.tracks:
                continue
            source = by_mid.get(info["mid"]) or (
                "microphone" if info["kind"] == "audio" else "camera"
            )
            if source not in SOURCES:
                source = "camera"
            track = Track(
                id=info["id"],
                owner=participant.identity,
                kind=info["kind"],
                source=source,
                mid=info["mid"],
                producer_id=info["id"],
                session=session,
            )
            room.tracks[track.id] = track
            added.append(track)
            self.emit("track_published", room.name, {"track": track.as_dict()})
        return str(result["answer"]), added

    # -- WHIP and WHEP: HTTP clients as participants ---------------------------------------------
    async def whip(
        self, room_name: str, identity: str, role: str, name: str, offer: str
    ) -> tuple[str, str]:
        """A WHIP publisher joins the room as a participant whose publish connection is this
        session; its tracks are the room's like any other. A new WHIP session of the same
        identity replaces the old one. Returns the session id and the SDP answer."""
        room, participant, is_new = self.join(room_name, identity, role, name, via="whip")
        previous = participant.publish_session
        old_tracks = room.tracks_of(identity)
        participant.publish_session = None  # a fresh connection, not a renegotiation
        try:
            answer, _tracks = await self.publish(room, participant, offer, [])
        except RoomError:
            participant.publish_session = previous
            if is_new:
                await self._drop(room, identity, "whip_failed")
            raise
        if previous is not None:
            for track in old_tracks:
                await self._remove_track(room, track, close_producer=False)
            self.media_sessions.pop(previous, None)
            self.ice_tags.pop(previous, None)
            await self._request(
                room.name,
                "close",
                {"session": previous, "reason": "replaced by a new WHIP session"},
                quiet=True,
            )
        session = participant.publish_session
        assert session is not None
        self.ice_tags[session] = ice_ufrag(answer)
        return session, answer

    async def whep(
        self, room_name: str, identity: str, role: str, name: str, offer: str, source: str | None
    ) -> tuple[str, str]:
        """A WHEP viewer joins the room as a participant viewing ``source`` (an identity;
        the room's lead when None): its camera and microphone, whether it publishes over
        the WebSocket or WHIP. Several WHEP sessions of one identity view side by side; the
        participant leaves with its last one. Returns the session id and the SDP answer."""
        room = self.get_room(room_name)
        publisher = room.participants.get(source) if source else self._lead(room)
        tracks = sorted(
            room.tracks_of(publisher.identity) if publisher is not None else [],
            key=lambda t: SOURCES.index(t.source) if t.source in SOURCES else len(SOURCES),
        )
        if publisher is None or not tracks:
            who = f"{source[:64]!r}" if source else "the room's lead"
            raise RoomError("not_found", f"{who} is not publishing in this room")
        # Refused before the room hears of it; the check and the placement share one wait.
        admit_by = asyncio.get_running_loop().time() + JOIN_WAIT
        if not await self.placement.has_capacity(admit_by):
            raise RoomError(BUSY, self.placement.refuse("view").message)
        room, participant, is_new = self.join(room_name, identity, role, name, via="whep")
        session = secrets.token_urlsafe(12)
        self.media_sessions[session] = (room.name, identity, "view")
        params = {
            "room": room.name,
            "session": session,
            "identity": identity,
            "offer": offer,
            "producers": [t.producer_id for t in tracks],
            ADMIT_BY: admit_by,
        }
        try:
            result = await self._request(room.name, "view", params)
        except RoomError:
            self.media_sessions.pop(session, None)
            if is_new:
                await self._drop(room, identity, "whep_failed")
            raise
        participant.view_sessions.add(session)
        self.ice_tags[session] = ice_ufrag(str(result["answer"]))
        return session, str(result["answer"])

    async def ice_restart(self, session: str, ufrag: str) -> dict[str, Any]:
        """A WHIP/WHEP client's ICE credentials (its PATCH): the worker's ``ice_restart``
        result; the session's ICE tag follows a restart."""
        owner = self.session_owner(session)
        if owner is None:
            raise RoomError("not_found", "no such session")
        room, participant, _kind = owner
        result = await self._request(room.name, "ice_restart", {"session": session, "ufrag": ufrag})
        if result.get("restarted"):
            self.ice_tags[session] = str(result["ufrag"])
            logger.info("room %s: %s restarted ICE (%s)", room.name, participant.identity, session)
        return result

    @staticmethod
    def _lead(room: Room) -> Participant | None:
        leads = [
            p for p in room.participants.values() if p.role == "lead" and room.tracks_of(p.identity)
        ]
        return max(leads, key=lambda p: p.joined_at) if leads else None

    def session_owner(self, session: str) -> tuple[Room, Participant, str] | None:
        """The room, participant and kind ("publish", "subscribe", "view") of a media session."""
        owner = self.media_sessions.get(session)
        if owner is None:
            return None
        room_name, identity, kind = owner
        room = self.rooms.get(room_name)
        participant = room.participants.get(identity) if room is not None else None
        if room is None or participant is None:
            return None
        return room, participant, kind

    async def end_session(self, session: str, reason: str) -> None:
        """A WHIP or WHEP client ended its session (HTTP DELETE)."""
        owner = self.session_owner(session)
        if owner is None:
            return
        room, participant, kind = owner
        self.media_sessions.pop(session, None)
        self.ice_tags.pop(session, None)
        await self._request(room.name, "close", {"session": session, "reason": reason}, quiet=True)
        await self._media_session_closed(room, participant, kind, session, reason)

    def session_counts(self) -> dict[str, int]:
        counts = {"publish": 0, "subscribe": 0, "view": 0}
        for _room, _identity, kind in self.media_sessions.values():
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    async def unpublish(self, room: Room, track_id: str, actor: Participant | None) -> None:
        track = room.track(track_id)
        room.check_track_control(actor, track)
        await self._remove_track(room, track)

    async def _remove_track(self, room: Room, track: Track, close_producer: bool = True) -> None:
        if room.tracks.pop(track.id, None) is None:
            return
        if close_producer:
            await self._request(
                room.name, "producer_close", {"producer": track.producer_id}, quiet=True
            )
        self.emit("track_unpublished", room.name, {"track": track.id, "owner": track.owner})
        for participant in list(room.participants.values()):
            if track.id in participant.subscriptions:
                participant.subscriptions.discard(track.id)
                try:
                    await self.renegotiate(room, participant)
                except RoomError as exc:
                    logger.warning(
                        "room %s: renegotiating %s failed: %s",
                        room.name,
                        participant.identity,
                        exc.message,
                    )

    async def mute(
        self, room_name: str, track_id: str, muted: bool, actor: Participant | None = None
    ) -> None:
        room = self.get_room(room_name)
        track = room.track(track_id)
        room.check_track_control(actor, track)
        if track.muted == muted:
            return
        await self._request(
            room.name, "producer_pause", {"producer": track.producer_id, "paused": muted}
        )
        track.muted = muted
        self.emit(
            "track_muted",
            room.name,
            {"track": track.id, "muted": muted, "by": actor.identity if actor else None},
        )

    def subscribe(self, room: Room, participant: Participant, track_ids: list[str]) -> None:
        """Add to what the participant receives; ``renegotiate`` then sends the offer (the
        protocol answers the request first, so the caller decides when)."""
        for track_id in track_ids:
            room.track(track_id)
        participant.subscriptions.update(track_ids)

    async def set_preferences(
        self,
        room: Room,
        participant: Participant,
        wishes: dict[str, Any],
        sessions: list[str] | None = None,
    ) -> None:
        """A viewer's layer wishes (``max_height``, ``max_layer`` as "low"/"medium"/"high"
        or 0.., ``encoding``) for every video it receives, now and in later connections;
        or, given ``sessions``, for those media sessions only (one WHEP viewer)."""
        if sessions is None:
            participant.preferences.update(wishes)
            wishes = participant.preferences
            sessions = [participant.subscribe_session or "", *sorted(participant.view_sessions)]
        for session in sessions:
            if session:
                await self._apply_preferences(room, session, wishes)

    async def _apply_preferences(self, room: Room, session: str, wishes: dict[str, Any]) -> None:
        params: dict[str, Any] = {"session": session}
        if "max_height" in wishes:
            params["max_height"] = wishes["max_height"]
        if "max_layer" in wishes:
            layer = wishes["max_layer"]
            params["max_layer"] = LAYERS.index(layer) if layer in LAYERS else layer
        if "encoding" in wishes:
            params["encoding"] = wishes["encoding"]
        if "max_temporal" in wishes:
            params["max_temporal"] = wishes["max_temporal"]
        await self._request(room.name, "preferences", params, quiet=True)

    def unsubscribe(self, room: Room, participant: Participant, track_ids: list[str]) -> None:
        participant.subscriptions.difference_update(track_ids)

    async def renegotiate(
        self, room: Room, participant: Participant, ice_restart: bool = False
    ) -> None:
        """Send the participant a new offer for its current subscriptions (server-driven);
        with ``ice_restart`` the offer carries new ICE credentials (the client asked: its
        network changed) and is sent even if the subscriptions did not change."""
        lock = self._offer_locks.setdefault((room.name, participant.identity), asyncio.Lock())
        async with lock:
            if participant.identity not in room.participants:
                return
            if participant.subscribe_session is None:
                if not participant.subscriptions or ice_restart:
                    return
                session = secrets.token_urlsafe(12)
                self.media_sessions[session] = (room.name, participant.identity, "subscribe")
                try:
                    await self._request(
                        room.name,
                        "subscriber",
                        {"room": room.name, "session": session, "identity": participant.identity},
                    )
                except RoomError:
                    self.media_sessions.pop(session, None)
                    raise
                participant.subscribe_session = session
                if participant.preferences:
                    await self._apply_preferences(room, session, participant.preferences)
            consumers = [
                {"producer": room.tracks[t].producer_id, "stream": room.tracks[t].owner, "track": t}
                for t in sorted(participant.subscriptions)
                if t in room.tracks
            ]
            params: dict[str, Any] = {
                "session": participant.subscribe_session,
                "consumers": consumers,
            }
            if ice_restart:
                params["ice_restart"] = True
            try:
                result = await self._request(room.name, "subscriber_offer", params)
            except RoomError as exc:
                if exc.code != "not_found":
                    raise
                participant.subscribe_session = (
                    None  # the connection died; the next subscribe makes a new one
                )
                return
            if result.get("changed", True):
                self.emit(
                    "offer",
                    room.name,
                    {"sdp": result["offer"], "version": result["version"]},
                    target=participant.identity,
                )

    async def answer(self, room: Room, participant: Participant, sdp: str, version: int) -> None:
        if participant.subscribe_session is None:
            raise RoomError("invalid", "no offer to answer")
        await self._request(
            room.name,
            "subscriber_answer",
            {"session": participant.subscribe_session, "answer": sdp, "version": version},
        )

    # -- media worker plumbing --------------------------------------------------------------------
    async def check_capacity(self, participant: Participant) -> None:
        """Refuse within about a second (``server_busy``) what would need a new media
        session when no worker admits one; sessions already admitted are never refused."""
        if participant.subscribe_session is None and not await self.placement.has_capacity():
            raise RoomError(BUSY, self.placement.refuse("subscribe").message)

    async def _request(
        self, room: str, method: str, params: dict[str, Any], quiet: bool = False
    ) -> dict[str, Any]:
        try:
            return await self.placement.request(room, method, params)
        except WorkerError as exc:
            if quiet:
                logger.debug("%s in room %s: %s", method, room, exc)
                return {}
            code = {
                BUSY: BUSY,
                "bad_sdp": "bad_sdp",
                "not_found": "not_found",
                "bad_request": "invalid",
                "conflict": "conflict",
                "worker_gone": "unavailable",
            }.get(exc.code, "internal")
            raise RoomError(code, exc.message) from None
        except TimeoutError:
            if quiet:
                return {}
            raise RoomError("internal", "the media worker did not answer in time") from None

    def on_worker_event(self, worker: WorkerHandle, event: str, data: dict[str, Any]) -> bool:
        """Media worker events about conference sessions; False if not ours."""
        if self.placement.on_worker_event(worker, event, data):
            return True
        if event == "active_speaker":
            room = self.rooms.get(str(data.get("room")))
            if room is None:
                return True
            producer = data.get("producer")
            track = room.tracks.get(str(producer)) if producer else None
            identity = track.owner if track is not None else None
            if identity != room.active_speaker:
                room.active_speaker = identity
                self.emit(
                    "active_speaker",
                    room.name,
                    {
                        "identity": identity,
                        "track": track.id if track else None,
                        "level": data.get("level", -127),
                    },
                )
            return True
        session = str(data.get("session", ""))
        if session not in self.media_sessions:
            return False
        found = self.session_owner(session)
        if found is None:
            return True
        room, participant, kind = found
        identity = participant.identity
        if event == "connected":
            logger.info(
                "room %s: %s's %s connection is up (%s)",
                room.name,
                identity,
                kind,
                data.get("srtp_profile"),
            )
        elif event == "quality":
            quality = str(data.get("quality"))
            if quality != participant.quality:
                participant.quality = quality
                self.emit(
                    "connection_quality",
                    room.name,
                    {
                        "identity": identity,
                        "quality": quality,
                        "loss": data.get("loss", 0.0),
                        "rtt": data.get("rtt"),
                    },
                )
        elif event == "layers":
            track = room.tracks.get(str(data.get("producer", "")))
            if track is not None:
                rids = data.get("rids") or []
                flags = data.get("active") or []
                active = [
                    rid if rid is not None else str(index)
                    for index, (rid, on) in enumerate(zip(rids, flags, strict=False))
                    if on
                ]
                self.emit(
                    "layers", room.name, {"track": track.id, "active": active}, target=identity
                )
        elif event in ("layer", "video_paused"):
            track = room.tracks.get(str(data.get("producer", "")))
            info = {k: v for k, v in data.items() if k not in ("session", "consumer", "producer")}
            info["identity"] = identity
            info["track"] = track.id if track is not None else None
            self.emit(event, room.name, info, target=identity)
        elif event == "closed":
            self.media_sessions.pop(session, None)
            self.ice_tags.pop(session, None)
            if data.get("reason") == WORKER_EXITED and participant.via == "ws":
                self._media_lost(room, participant, kind)
            asyncio.ensure_future(
                self._media_session_closed(
                    room, participant, kind, session, str(data.get("reason"))
                )
            )
        elif event == "producer_closed":
            track = room.tracks.get(str(data.get("producer")))
            if track is not None:
                asyncio.ensure_future(self._remove_track(room, track, close_producer=False))
        return True

    def _media_lost(self, room: Room, participant: Participant, kind: str) -> None:
        """Tell a /ws client that one of its connections died with its media worker, and
        what it carried, before the room forgets it (every session of the worker is
        reported in one synchronous pass, so the room is still intact here). The client
        opens a new connection: it publishes ``tracks`` again, or subscribes again to the
        tracks of ``tracks``' owners and sources once they are published anew."""
        if kind == "publish":
            tracks = room.tracks_of(participant.identity)
        else:
            tracks = [room.tracks[t] for t in sorted(participant.subscriptions) if t in room.tracks]
        self.emit(
            "media_lost",
            room.name,
            {
                "connection": kind,
                "reason": WORKER_EXITED,
                "tracks": [t.as_dict() for t in tracks],
            },
            target=participant.identity,
        )

    def _source_lost(self, sessions: set[str]) -> None:
        """Viewers on another worker whose source died with its home worker: told and
        closed like the viewers on that worker (``media_lost``; a WHEP viewer leaves with
        reason media_lost). One pass of the dead worker's events may name a session twice."""
        if not self._sources_lost:
            asyncio.get_running_loop().call_soon(self._sources_lost.clear)
        for session in sessions - self._sources_lost:
            self._sources_lost.add(session)
            owner = self.session_owner(session)
            if owner is None:
                continue
            room, participant, kind = owner
            reason = WORKER_EXITED
            if kind == "subscribe" and participant.via == "ws":
                self._media_lost(room, participant, kind)
                reason = "its source's media worker exited"  # media_lost is said already
            asyncio.ensure_future(
                self._request(room.name, "close", {"session": session, "reason": reason}, True)
            )

    async def _media_session_closed(
        self, room: Room, participant: Participant, kind: str, session: str, reason: str
    ) -> None:
        logger.info(
            "room %s: %s's %s connection closed: %s", room.name, participant.identity, kind, reason
        )
        if kind == "publish" and participant.publish_session == session:
            participant.publish_session = None
            for track in room.tracks_of(participant.identity):
                await self._remove_track(room, track, close_producer=False)
            if participant.via == "whip":  # the session was its presence in the room
                await self._drop(room, participant.identity, _left_reason(reason))
        elif kind == "view":
            participant.view_sessions.discard(session)
            if participant.via == "whep" and not participant.view_sessions:
                await self._drop(room, participant.identity, _left_reason(reason))
        elif kind == "subscribe" and participant.subscribe_session == session:
            participant.subscribe_session = None
            if participant.quality != "lost":
                participant.quality = "lost"
                self.emit(
                    "connection_quality",
                    room.name,
                    {"identity": participant.identity, "quality": "lost", "loss": 1.0, "rtt": None},
                )

    # -- housekeeping -------------------------------------------------------------------------
    def start(self) -> None:
        self._janitor = asyncio.ensure_future(self._sweep())

    async def stop(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            await asyncio.gather(self._janitor, return_exceptions=True)

    async def _sweep(self) -> None:
        """Every second: participants past the resume grace leave; empty rooms time out."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.sweep(time.monotonic(), time.time())
            except Exception:
                logger.exception("conference sweep failed")

    async def sweep(self, monotonic: float, wall: float) -> None:
        for room in list(self.rooms.values()):
            for participant in list(room.participants.values()):
                gone = participant.disconnected_at
                if (
                    not participant.connected
                    and gone is not None
                    and monotonic - gone > self.resume_grace
                ):
                    await self._drop(room, participant.identity, "disconnected")
            if not room.ended and not room.participants and room.empty_since is not None:
                if wall - room.empty_since > room.options.empty_timeout:
                    await self.end_room(room.name, None, "empty_timeout")


def _left_reason(closed: str) -> str:
    """participant_left's reason for a WHIP/WHEP client whose session closed."""
    return "media_lost" if closed == WORKER_EXITED else "left"
