"""Consultation rooms, participants, tracks and what each role may do: plain state, no I/O.

The conference service (signaling/conference.py) drives media and events around this
model; the WebSocket protocol and the REST API both act through it, so a rule (an
observer cannot publish, only the lead moderates, a room's limits) lives in one place.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

ROLES = ("lead", "participant", "observer")
# How a participant is connected: the WebSocket protocol, or a WHIP or WHEP client (which
# has no signalling channel: its HTTP session is its presence in the room).
VIAS = ("ws", "whip", "whep")
PUBLISH_ROLES = ("lead", "participant")
SOURCES = ("camera", "microphone", "screen")
LAYERS = ("low", "medium", "high")  # max_layer names, lowest first (simulcast encodings)
# Room names and identities: also safe as SDP msid tokens and in URLs.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Above this many observers a room's observers stop receiving each other's joins and
# leaves (a count instead): a list of 50 sites is still readable, and each join then costs
# the room O(1) messages rather than one per connection.
OBSERVER_VIEW = 50


class RoomError(Exception):
    """A request the room's rules refuse. ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class RoomOptions:
    max_publishers: int = 16
    max_viewers: int = 1000
    empty_timeout: float = 300.0  # seconds an empty room lives before it ends
    auto_record: bool = False  # record from the first published track (signaling/recordings.py)
    # Observers get the compact view (signaling/views.py) once the room has had more than
    # this many observers: 0 from the first one on.
    observer_view: int = OBSERVER_VIEW

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_publishers": self.max_publishers,
            "max_viewers": self.max_viewers,
            "empty_timeout": self.empty_timeout,
            "auto_record": self.auto_record,
            "observer_view": self.observer_view,
        }


@dataclass
class Track:
    id: str
    owner: str
    kind: str  # "audio" or "video"
    source: str  # "camera", "microphone" or "screen"
    mid: str
    producer_id: str
    muted: bool = False
    session: str = ""  # the media session (publish connection) its producer lives on

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "kind": self.kind,
            "source": self.source,
            "muted": self.muted,
        }


@dataclass
class Participant:
    identity: str
    name: str
    role: str
    joined_at: float
    hand_raised: bool = False
    connected: bool = True
    resume_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    publish_session: str | None = None
    subscribe_session: str | None = None
    subscriptions: set[str] = field(default_factory=set)
    preferences: dict[str, Any] = field(default_factory=dict)
    quality: str = "excellent"
    disconnected_at: float | None = None
    via: str = "ws"
    view_sessions: set[str] = field(default_factory=set)  # WHEP sessions

    @property
    def can_publish(self) -> bool:
        return self.role in PUBLISH_ROLES

    def as_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "name": self.name,
            "role": self.role,
            "hand_raised": self.hand_raised,
            "joined_at": self.joined_at,
            "via": self.via,
        }


def join_position(participant: Participant) -> tuple[int, str]:
    """Where a participant sits in the room's list: join time in microseconds (a paging
    cursor carries it as an integer), then identity."""
    return int(participant.joined_at * 1_000_000), participant.identity


@dataclass
class Room:
    name: str
    options: RoomOptions
    created_at: float = field(default_factory=time.time)
    participants: dict[str, Participant] = field(default_factory=dict)
    tracks: dict[str, Track] = field(default_factory=dict)
    ended: bool = False
    empty_since: float | None = None
    active_speaker: str | None = None
    # An index of participants by role, kept by add/discard/set_role (conference.py is
    # the only writer) so head counts and the stage cost O(1) per join, not O(room);
    # rebuilt if ``participants`` was filled directly (as the rule tests do).
    _by_role: dict[str, int] = field(default_factory=dict, repr=False)
    _stage: dict[str, Participant] = field(default_factory=dict, repr=False)
    _indexed: int = field(default=-1, repr=False)
    _in_order: list[Participant] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options.as_dict(), "created_at": self.created_at}

    def summary(self) -> dict[str, Any]:
        """The room as the REST API lists it."""
        self._index()
        return {
            **self.as_dict(),
            "participants": len(self.participants),
            "by_role": {role: self._by_role.get(role, 0) for role in ROLES},
            "tracks": len(self.tracks),
        }

    # -- membership (the index) -------------------------------------------------------------
    def add(self, participant: Participant) -> None:
        self._index()
        self.participants[participant.identity] = participant
        self._count(participant, 1)
        self._indexed += 1
        self._in_order = None

    def discard(self, identity: str) -> Participant | None:
        self._index()
        participant = self.participants.pop(identity, None)
        if participant is not None:
            self._count(participant, -1)
            self._indexed -= 1
            self._in_order = None
        return participant

    def set_role(self, participant: Participant, role: str) -> None:
        self._index()
        self._count(participant, -1)
        participant.role = role
        self._count(participant, 1)

    def stage(self) -> list[Participant]:
        """Everyone but the observers (the lead and participants), earliest joined first."""
        self._index()
        return list(self._stage.values())

    def in_join_order(self) -> list[Participant]:
        """Everyone, earliest joined first (then by identity); kept until someone joins or
        leaves, so paging through a large room does not sort it for every page."""
        self._index()
        if self._in_order is None:
            self._in_order = sorted(self.participants.values(), key=join_position)
        return self._in_order

    def _count(self, participant: Participant, step: int) -> None:
        self._by_role[participant.role] = self._by_role.get(participant.role, 0) + step
        if participant.role == "observer":
            return
        if step > 0:
            self._stage[participant.identity] = participant
        else:
            self._stage.pop(participant.identity, None)

    def _index(self) -> None:
        if self._indexed == len(self.participants):
            return
        self._by_role, self._stage, self._in_order = {}, {}, None
        for participant in self.participants.values():
            self._count(participant, 1)
        self._indexed = len(self.participants)

    # -- rules ------------------------------------------------------------------------------
    def publishers(self) -> int:
        self._index()
        return sum(self._by_role.get(role, 0) for role in PUBLISH_ROLES)

    def viewers(self) -> int:
        self._index()
        return len(self.participants) - self.publishers()

    def check_admit(self, identity: str, role: str) -> None:
        """May a participant with this role join (a rejoin of the same identity always may)?"""
        if self.ended:
            raise RoomError("room_ended", "the room has ended")
        if identity in self.participants:
            return
        if role in PUBLISH_ROLES and self.publishers() >= self.options.max_publishers:
            raise RoomError(
                "room_full", f"the room allows {self.options.max_publishers} publishers"
            )
        if role not in PUBLISH_ROLES and self.viewers() >= self.options.max_viewers:
            raise RoomError("room_full", f"the room allows {self.options.max_viewers} viewers")

    def check_role_change(self, actor: Participant | None, target: Participant, role: str) -> None:
        """Only the lead (or the server API, actor None) changes roles; the lead role itself is fixed."""
        if actor is not None and actor.role != "lead":
            raise RoomError("forbidden", "only the lead can change roles")
        if role not in ("participant", "observer"):
            raise RoomError("invalid", "a role can be changed to participant or observer")
        if target.role == "lead":
            raise RoomError("forbidden", "the lead's role cannot be changed")
        if (
            role == "participant"
            and target.role != "participant"
            and self.publishers() >= self.options.max_publishers
        ):
            raise RoomError(
                "room_full", f"the room allows {self.options.max_publishers} publishers"
            )

    def check_moderator(self, actor: Participant | None, what: str) -> None:
        if actor is not None and actor.role != "lead":
            raise RoomError("forbidden", f"only the lead can {what}")

    def check_track_control(self, actor: Participant | None, track: Track) -> None:
        if actor is not None and actor.identity != track.owner and actor.role != "lead":
            raise RoomError("forbidden", "only the track's owner or the lead can do that")

    def track(self, track_id: str) -> Track:
        track = self.tracks.get(track_id)
        if track is None:
            raise RoomError("not_found", f"no track {track_id!r} in this room")
        return track

    def participant(self, identity: str) -> Participant:
        participant = self.participants.get(identity)
        if participant is None:
            raise RoomError("not_found", f"no participant {identity!r} in this room")
        return participant

    def tracks_of(self, identity: str) -> list[Track]:
        return [t for t in self.tracks.values() if t.owner == identity]
