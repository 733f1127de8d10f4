"""Who in a room receives which event over /ws, and the paged participant list (sans-I/O).

A room of 2,000 observing sites cannot tell every site about every other site: that is
N^2 messages for N joins. Past the room's ``observer_view`` threshold its observers get
the compact view: the lead and the participants (the stage), changes of role, and a
coalesced observer count, but not each other's joins, leaves, hands or link quality.
Everyone else (the lead, participants) keeps the full view, so the lead sees every
raised hand. The full list is there on request, a page at a time.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any

from signaling.rooms import Participant, Room, RoomError, join_position

FULL = "full"
COMPACT = "compact"
COUNT_INTERVAL = 1.0  # seconds: observer_count is sent at most this often per room
PAGE_DEFAULT = 100
PAGE_MAX = 500

# Events about one participant, by the key of its identity in the event's data: an
# observer's are kept from the compact view (its own still reach it).
_SUBJECT = {
    "participant_left": "identity",
    "hand_raised": "identity",
    "connection_quality": "identity",
}


@dataclass(frozen=True)
class Audience:
    """Which of a room's connections get an event: the full view, the compact view, and
    ``also`` one more identity (the observer the event is about)."""

    full: bool = True
    compact: bool = True
    also: str | None = None


EVERYONE = Audience()


def audience(event: str, data: dict[str, Any], observers: set[str]) -> Audience:
    """The audience of a room-wide event (targeted events go to their target alone);
    ``observers``: the room's observers before the event."""
    if event == "participant_joined":
        participant = data.get("participant")
        role = participant.get("role") if isinstance(participant, dict) else None
        return Audience(compact=False) if role == "observer" else EVERYONE
    key = _SUBJECT.get(event)
    if key is None:
        return EVERYONE
    identity = str(data.get(key))
    return Audience(compact=False, also=identity) if identity in observers else EVERYONE


def track_observers(event: str, data: dict[str, Any], observers: set[str]) -> None:
    """Keep a room's set of observers in step with its events."""
    if event == "participant_joined":
        participant = data.get("participant")
        if isinstance(participant, dict) and participant.get("role") == "observer":
            observers.add(str(participant.get("identity")))
    elif event == "participant_left":
        observers.discard(str(data.get("identity")))
    elif event == "role_changed":
        if data.get("role") == "observer":
            observers.add(str(data.get("identity")))
        else:
            observers.discard(str(data.get("identity")))


def goes_compact(room: Room) -> bool:
    """Has the room outgrown the full view for its observers? The caller keeps it compact
    from then on: a client's list is never asked to grow back what it was told to forget."""
    return room.viewers() > room.options.observer_view


def view_of(participant: Participant, compact_room: bool) -> str:
    return COMPACT if compact_room and participant.role == "observer" else FULL


def join_view(room: Room, participant: Participant, view: str) -> list[Participant]:
    """The participants a join answer lists: everyone (full), or the stage and oneself."""
    if view == FULL:
        return list(room.participants.values())
    stage = room.stage()
    return stage if participant in stage else [*stage, participant]


CURSOR = r"^[0-9]{1,20}-[A-Za-z0-9_.-]{1,64}$"
_CURSOR = re.compile(CURSOR)


def _cursor(participant: Participant) -> str:
    micros, identity = join_position(participant)
    return f"{micros}-{identity}"


def _parse_cursor(cursor: str) -> tuple[int, str]:
    if not _CURSOR.match(cursor):
        raise RoomError("invalid", "cursor: not one this server gave (pass next back as it came)")
    micros, _, identity = cursor.partition("-")
    return int(micros), identity


def page(
    room: Room, cursor: str | None, limit: int = PAGE_DEFAULT
) -> tuple[list[Participant], str | None]:
    """One page of the room's participants, earliest joined first, after ``cursor`` (the
    ``next`` of the page before); the cursor of the next page, or None at the end: a
    bisect and a slice of the room's cached order. The
    cursor names a position, not an index, so a leave between pages skips nobody else,
    and each participant in the room throughout is listed exactly once."""
    if not 1 <= limit <= PAGE_MAX:
        raise RoomError("invalid", f"limit: 1 to {PAGE_MAX}")
    people = room.in_join_order()
    start = 0
    if cursor:
        start = bisect.bisect_right(people, _parse_cursor(cursor), key=join_position)
    chunk = people[start : start + limit]
    more = start + limit < len(people)
    return chunk, (_cursor(chunk[-1]) if more and chunk else None)


class CountCoalescer:
    """Rooms whose observer count changed, sent at most once per ``interval`` each."""

    def __init__(self, interval: float = COUNT_INTERVAL) -> None:
        self.interval = interval
        self.dirty: set[str] = set()
        self.sent: dict[str, int] = {}
        self.due_at: float | None = None

    def changed(self, room: str, now: float) -> float | None:
        """Note a change; the time to flush if none is set yet (the caller arms a timer)."""
        self.dirty.add(room)
        if self.due_at is None:
            self.due_at = now + self.interval
            return self.due_at
        return None

    def flush(self, counts: dict[str, int]) -> dict[str, int]:
        """The rooms (of the dirty ones, with their counts now) whose count differs from
        the last one sent."""
        self.due_at = None
        out = {}
        for room in self.dirty:
            count = counts.get(room)
            if count is not None and self.sent.get(room) != count:
                self.sent[room] = out[room] = count
        self.dirty.clear()
        return out

    def forget(self, room: str) -> None:
        self.dirty.discard(room)
        self.sent.pop(room, None)
