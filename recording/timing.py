"""Ordering and timing of one recorded RTP stream: sans-I/O, time passed in.

- :class:`Unwrap` turns 16-bit sequence numbers and 32-bit timestamps into ever-growing
  integers, so ordering and durations survive wrap-around.
- :class:`ReorderBuffer` holds packets for a short delay and gives them back in sequence
  order; a packet still missing when its successor has waited ``delay`` is a gap for good
  (loss, or a consumer that skipped), and the caller is told.
- :class:`Clock` maps RTP timestamps to wall-clock seconds through the sender's SR
  (NTP time, RTP time) pairs: the worker's sender reports carry the publisher's own NTP
  clock, so one participant's audio and video (and, on synchronised hosts, every
  participant) land on one time line. Before the first SR it falls back to arrival time,
  and says so once.
"""

from __future__ import annotations

import heapq
import logging
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)


def ntp_to_unix(ntp: int) -> float:
    """A 64-bit NTP timestamp (seconds.fraction) as Unix seconds."""
    return (ntp >> 32) - NTP_EPOCH_OFFSET + (ntp & 0xFFFFFFFF) / 2**32


class Unwrap:
    """Extends a wrapping counter of ``bits`` bits; a value more than half the range
    behind the highest seen is taken as older, not as a wrap forward."""

    __slots__ = ("bits", "highest")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.highest: int | None = None

    def __call__(self, value: int) -> int:
        if self.highest is None:
            self.highest = value
            return value
        size = 1 << self.bits
        half = size >> 1
        delta = (value - self.highest) & (size - 1)
        extended = self.highest + delta if delta < half else self.highest + delta - size
        if extended > self.highest:
            self.highest = extended
        return extended


T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    """Packets out in sequence order, each held at most ``delay`` seconds for a gap before
    it to fill. ``pop(now)`` returns ``(seq, item, gap_before)`` tuples."""

    def __init__(self, delay: float = 0.15, capacity: int = 2000) -> None:
        self.delay = delay
        self.capacity = capacity
        self.next_seq: int | None = None
        self._heap: list[tuple[int, float, T]] = []
        self._seen: set[int] = set()

    def push(self, seq: int, item: T, now: float) -> None:
        if self.next_seq is not None and seq < self.next_seq:
            return  # too late: its place has been given up, or a duplicate
        if seq in self._seen:
            return
        self._seen.add(seq)
        heapq.heappush(self._heap, (seq, now, item))

    def pop(self, now: float) -> list[tuple[int, T, bool]]:
        out: list[tuple[int, T, bool]] = []
        heap = self._heap
        while heap:
            seq, arrived, item = heap[0]
            in_order = self.next_seq is None or seq == self.next_seq
            if not in_order and now - arrived < self.delay and len(heap) < self.capacity:
                break  # wait a little for the missing packet(s)
            heapq.heappop(heap)
            self._seen.discard(seq)
            out.append((seq, item, not in_order))
            self.next_seq = seq + 1
        return out

    def flush(self) -> list[tuple[int, T, bool]]:
        """Everything held, in order (the track is ending)."""
        return self.pop(float("inf"))

    def __len__(self) -> int:
        return len(self._heap)


class Clock:
    """RTP time to wall-clock seconds for one stream of ``clock_rate`` Hz."""

    def __init__(self, clock_rate: int, label: str = "") -> None:
        self.clock_rate = clock_rate
        self.label = label
        self.unwrap = Unwrap(32)
        self._anchor: tuple[int, float] | None = None  # (extended RTP ts, wall seconds)
        self.from_sr = False
        self._warned = False

    def sender_report(self, rtp_ts: int, ntp: int) -> None:
        """An SR: ``rtp_ts`` was sampled at NTP time ``ntp`` on the sender's clock."""
        self._anchor = (self.unwrap(rtp_ts), ntp_to_unix(ntp))
        self.from_sr = True

    def wall(self, rtp_ts: int, arrival: float) -> float:
        """When the sample stamped ``rtp_ts`` was taken (Unix seconds)."""
        extended = self.unwrap(rtp_ts)
        if self._anchor is None:
            if not self._warned:
                logger.warning(
                    "recording %s: no sender report yet, timing from arrival", self.label
                )
                self._warned = True
            self._anchor = (extended, arrival)
        base_ts, base_wall = self._anchor
        return base_wall + (extended - base_ts) / self.clock_rate
