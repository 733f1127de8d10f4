"""Deadlines instead of ticks: one heap of timed objects for a whole worker (sans-I/O).

Every transport (and the worker's own periodic jobs) says when it next needs the clock
(``next_deadline``). The queue keeps the earliest deadline of each; the asyncio layer arms
one ``loop.call_at`` at :meth:`TimerQueue.deadline` and calls :meth:`TimerQueue.run` when
it fires. Something that gains an earlier deadline between two runs (a gap to NACK, a
coalesced keyframe request, a DTLS retransmission) calls :meth:`TimerQueue.schedule`;
the I/O layer re-arms when :attr:`TimerQueue.deadline` moved earlier. A thousand idle
viewers cost nothing between their report times, where a fixed 20 ms tick scanned all.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from math import inf
from typing import Protocol

logger = logging.getLogger(__name__)

MIN_STEP = 0.001  # seconds: the soonest an owner fires again after it fired


class Timed(Protocol):
    """Something that needs the clock: its timer fires at ``next_deadline()``."""

    def on_timer(self, now: float) -> None: ...

    def next_deadline(self) -> float: ...


class TimerQueue:
    """A heap of (deadline, owner) with lazy deletion: a stale entry (its owner's current
    deadline is another) is skipped when it comes up."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._armed: dict[int, tuple[float, int]] = {}  # id(owner) -> its live entry's (at, order)
        self._order = itertools.count()

    @property
    def deadline(self) -> float:
        """The earliest deadline queued (inf when none)."""
        heap = self._heap
        while heap and self._armed.get(id(heap[0][2])) != heap[0][:2]:
            heapq.heappop(heap)  # stale
        return heap[0][0] if heap else inf

    def schedule(self, owner: Timed, at: float) -> None:
        """Make sure ``owner.on_timer`` runs no later than ``at``."""
        key = id(owner)
        current = self._armed.get(key)
        if at >= (current[0] if current is not None else inf):
            return
        entry = (at, next(self._order))
        self._armed[key] = entry
        heapq.heappush(self._heap, (*entry, owner))

    def cancel(self, owner: Timed) -> None:
        self._armed.pop(id(owner), None)

    def run(self, now: float) -> int:
        """Fire every owner whose deadline has come, then queue its next one. Returns how
        many fired. An owner fires at most once per run: one whose next deadline has not
        moved past ``now`` runs again a millisecond later, never in a busy loop."""
        heap = self._heap
        fired: list[Timed] = []
        while heap and heap[0][0] <= now:
            at, order, owner = heapq.heappop(heap)
            key = id(owner)
            if self._armed.get(key) != (at, order):
                continue  # stale entry
            del self._armed[key]
            fired.append(owner)
            try:
                owner.on_timer(now)
            except Exception:  # one broken owner must not stop every other timer
                logger.exception("timer of %r failed", owner)
        for owner in fired:
            try:
                deadline = owner.next_deadline()
            except Exception:
                logger.exception("deadline of %r failed", owner)
                deadline = now + 1.0
            self.schedule(owner, max(deadline, now + MIN_STEP))
        return len(fired)

    def __len__(self) -> int:
        return len(self._armed)
