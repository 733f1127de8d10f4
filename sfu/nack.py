"""Loss repair for forwarded RTP streams (sans-I/O, per-packet hot path).

Two halves of RFC 4585 generic NACK handling live here:

* upstream, :class:`NackGenerator` watches a publisher's sequence numbers and decides
  which missing packets to ask for (and when to give up and ask for a keyframe);
* downstream, :class:`RetransmissionBuffer` keeps recent packets so a viewer's NACK
  can be answered from the SFU without bothering the publisher.

Sequence numbers are 16-bit on the wire; internally the generator "unwraps" them into
ever-growing Python ints so ordering and gaps are plain integer comparisons.

Note for consumers of aiortc's parser: ``RtcpRtpfbPacket.parse`` does not wrap the
BLP-derived numbers, so an FCI with PID 65535 yields 65536 in ``.lost``; mask with
``& 0xFFFF`` before use.
"""

from __future__ import annotations

import struct
from math import inf

__all__ = ["NackGenerator", "RetransmissionBuffer", "build_nack"]

_SEQ_MOD = 0x10000
_SEQ_MASK = 0xFFFF
_HALF = 0x8000


class _Missing:
    """Book-keeping for one missing packet; allocated only when loss is detected."""

    __slots__ = ("detected", "sent_at", "retries")

    def __init__(self, detected: float) -> None:
        self.detected = detected
        self.sent_at = 0.0
        self.retries = 0


class NackGenerator:
    """Decides which sequence numbers of one received RTP stream to NACK, and when.

    Feed every received packet (originals and retransmissions) to :meth:`on_packet`
    and call :meth:`due` from a timer (:meth:`next_deadline` says when). A gap is
    NACKed only after ``reorder_delay`` because mild reordering is common and a NACK
    for a packet already in flight wastes publisher uplink. Each missing packet is
    re-NACKed every ``rtt`` seconds, at most ``max_retries`` times, and forgotten
    after ``max_age`` seconds, when a retransmission would arrive too late to be
    useful. When loss is too heavy to repair (more than ``max_missing`` holes, or a
    forward jump over ``max_jump``), the state is cleared and a keyframe request is
    raised instead: see :meth:`take_keyframe_request`.

    ``rtt`` may be updated at any time; the other knobs are meant to be set once.
    """

    __slots__ = (
        "reorder_delay",
        "max_retries",
        "max_age",
        "max_missing",
        "max_jump",
        "_rtt",
        "_highest",
        "_missing",
        "_earliest",
        "_keyframe_needed",
    )

    def __init__(
        self,
        *,
        rtt: float = 0.1,
        reorder_delay: float = 0.01,
        max_retries: int = 10,
        max_age: float = 1.0,
        max_missing: int = 500,
        max_jump: int = 1000,
    ) -> None:
        self._rtt = rtt
        self.reorder_delay = reorder_delay
        self.max_retries = max_retries
        self.max_age = max_age
        self.max_missing = max_missing
        self.max_jump = max_jump
        # Highest sequence number seen, unwrapped (not masked to 16 bits).
        self._highest: int | None = None
        # Unwrapped seq -> state; insertion order is ascending seq because holes are
        # only ever added above everything already tracked.
        self._missing: dict[int, _Missing] = {}
        # Lower bound of the earliest time due() can return something; lets due()
        # skip the scan on timer ticks where nothing can be due.
        self._earliest = inf
        self._keyframe_needed = False

    @property
    def rtt(self) -> float:
        """Interval between NACKs of the same packet; update it from RTCP RR/XR."""
        return self._rtt

    @rtt.setter
    def rtt(self, value: float) -> None:
        self._rtt = value
        # Deadlines derived from the old rtt may now be too late: force a rescan.
        self._earliest = -inf

    @property
    def needs_keyframe(self) -> bool:
        """True when loss could not be repaired by NACKs; read without clearing."""
        return self._keyframe_needed

    @property
    def missing_count(self) -> int:
        """Number of sequence numbers currently tracked as missing."""
        return len(self._missing)

    def take_keyframe_request(self) -> bool:
        """Return and clear the keyframe request, so the caller sends one PLI per event."""
        needed = self._keyframe_needed
        self._keyframe_needed = False
        return needed

    def reset(self) -> None:
        """Forget everything (e.g. SSRC change); the next packet starts afresh."""
        self._highest = None
        self._missing.clear()
        self._earliest = inf

    def on_packet(self, seq: int, now: float) -> bool:
        """Account for one received packet with 16-bit sequence number ``seq``.

        Returns True when it found new loss, so the caller can make sure its timer runs
        :meth:`due` (or :meth:`take_keyframe_request`) ``reorder_delay`` from now."""
        highest = self._highest
        if highest is None:
            self._highest = seq & _SEQ_MASK
            return False
        # Signed distance from the highest seq, in [-32768, 32767].
        diff = ((seq - highest + _HALF) & _SEQ_MASK) - _HALF
        if diff == 1:  # in order: the common case, keep it to a few operations
            self._highest = highest + 1
            return False
        if diff > 1:
            if diff > self.max_jump:
                # Either a sender restart or massive loss: NACKing thousands of
                # packets would be useless, a keyframe repairs the second case.
                self._missing.clear()
                self._earliest = inf
                self._highest = highest + diff
                self._keyframe_needed = True
                return True
            missing = self._missing
            if len(missing) + diff - 1 > self.max_missing:
                missing.clear()
                self._earliest = inf
                self._highest = highest + diff
                self._keyframe_needed = True
                return True
            for ext in range(highest + 1, highest + diff):
                missing[ext] = _Missing(now)
            deadline = now + self.reorder_delay
            if deadline < self._earliest:
                self._earliest = deadline
            self._highest = highest + diff
            return True
        if diff < -self.max_jump:
            # Far behind: most likely the sender restarted its sequence lower. Without
            # a reset every later packet would look "old" and loss would go unnoticed.
            # No keyframe request: a restarting sender starts with one anyway.
            self._missing.clear()
            self._earliest = inf
            self._highest = highest + diff
            return False
        # Late, duplicate or retransmitted packet (diff <= 0): fills a hole if any.
        if self._missing:
            self._missing.pop(highest + diff, None)
        return False

    def repair(self, seq: int) -> bool:
        """A retransmission of ``seq`` arrived: True if we were missing it (and no longer
        are). A retransmission we did not ask for (a duplicate, a bandwidth probe made
        of old packets, or garbage) is not worth forwarding."""
        highest = self._highest
        if highest is None:
            return False
        diff = ((seq - highest + _HALF) & _SEQ_MASK) - _HALF
        return self._missing.pop(highest + diff, None) is not None

    def due(self, now: float) -> list[int]:
        """Sequence numbers (16-bit, oldest first) to put in a NACK now.

        Marks them as sent; packets that reached ``max_retries`` or ``max_age`` are
        dropped here.
        """
        missing = self._missing
        if not missing or now < self._earliest:
            return []
        out: list[int] = []
        expired: list[int] = []
        rtt = self._rtt
        reorder_delay = self.reorder_delay
        max_age = self.max_age
        max_retries = self.max_retries
        earliest = inf
        for ext, m in missing.items():
            if now - m.detected > max_age:
                expired.append(ext)
                continue
            if m.retries == 0:
                at = m.detected + reorder_delay
            else:
                at = m.sent_at + rtt
            if now >= at:
                out.append(ext & _SEQ_MASK)
                m.sent_at = now
                m.retries += 1
                at = now + rtt
                if m.retries >= max_retries or at - m.detected > max_age:
                    expired.append(ext)
                    continue
            if at < earliest:
                earliest = at
        for ext in expired:
            del missing[ext]
        self._earliest = earliest
        return out

    def next_deadline(self) -> float | None:
        """Time at which :meth:`due` will next return something, or None if nothing is missing.

        Exact unless a packet arrives first (then due() may return fewer or none).
        """
        if not self._missing:
            return None
        rtt = self._rtt
        reorder_delay = self.reorder_delay
        earliest = inf
        for m in self._missing.values():
            at = m.detected + reorder_delay if m.retries == 0 else m.sent_at + rtt
            if at < earliest:
                earliest = at
        return earliest


_NACK_HEADER = struct.Struct("!BBHII")
_FCI = struct.Struct("!HH")
_RTPFB = 205
_FMT_GENERIC_NACK = 1


def build_nack(sender_ssrc: int, media_ssrc: int, seqs: list[int]) -> bytes:
    """Serialize an RTCP Generic NACK (RFC 4585 §6.2.1) asking for ``seqs``.

    Each FCI covers a PID and the 16 following sequence numbers (BLP), so up to 17
    losses per 4 bytes. Input order and duplicates do not matter; runs that cross the
    65535 -> 0 wrap are packed together. Raises ValueError on an empty list, since an
    RTPFB packet without FCI is invalid. The packet is not split to fit an MTU.
    """
    if not seqs:
        raise ValueError("a generic NACK needs at least one sequence number")
    ordered = sorted({s & _SEQ_MASK for s in seqs})
    count = len(ordered)
    if count > 1:
        # Start after the largest cyclic gap so a run across the wrap stays contiguous.
        best_gap = ordered[0] + _SEQ_MOD - ordered[-1]
        start = 0
        for i in range(1, count):
            gap = ordered[i] - ordered[i - 1]
            if gap > best_gap:
                best_gap = gap
                start = i
        if start:
            ordered = ordered[start:] + ordered[:start]
    fci = bytearray()
    pid = ordered[0]
    blp = 0
    for s in ordered[1:]:
        d = (s - pid - 1) & _SEQ_MASK
        if d < 16:
            blp |= 1 << d
        else:
            fci += _FCI.pack(pid, blp)
            pid = s
            blp = 0
    fci += _FCI.pack(pid, blp)
    length_words = 2 + len(fci) // 4  # RTCP length: 32-bit words minus one
    header = _NACK_HEADER.pack(
        0x80 | _FMT_GENERIC_NACK,
        _RTPFB,
        length_words,
        sender_ssrc & 0xFFFFFFFF,
        media_ssrc & 0xFFFFFFFF,
    )
    return header + bytes(fci)


class RetransmissionBuffer:
    """Ring of the last ``size`` packets of one stream, to answer NACKs locally.

    O(1) store and lookup by ``seq & (size - 1)``; a slot is valid only if it still
    holds the requested seq and is younger than ``max_age`` (older retransmissions
    arrive after the receiver's jitter buffer gave up on them, wasting bandwidth).
    The stored object is opaque: callers keep whatever per-packet object they forward.
    """

    __slots__ = ("size", "max_age", "keyframe_seq", "_mask", "_seqs", "_packets", "_times")

    def __init__(self, size: int = 1024, max_age: float = 2.0) -> None:
        if size <= 0 or size & (size - 1) or size > _SEQ_MOD:
            raise ValueError(f"size must be a power of two <= 65536, got {size}")
        self.size = size
        self.max_age = max_age
        self.keyframe_seq = -1  # the newest keyframe's first packet (what came before is moot)
        self._mask = size - 1
        self._seqs: list[int] = [-1] * size
        self._packets: list[object | None] = [None] * size
        self._times: list[float] = [0.0] * size

    def store(self, seq: int, packet: object, now: float) -> None:
        """Keep ``packet`` for retransmission; a late older packet never evicts a newer one."""
        seq &= _SEQ_MASK
        i = seq & self._mask
        old = self._seqs[i]
        if (
            old >= 0
            and old != seq
            and ((seq - old + _HALF) & _SEQ_MASK) - _HALF < 0
            and now - self._times[i] <= self.max_age
        ):
            return
        self._seqs[i] = seq
        self._packets[i] = packet
        self._times[i] = now

    def get(self, seq: int, now: float) -> object | None:
        """The stored packet for ``seq``, or None if never stored, overwritten or too old."""
        seq &= _SEQ_MASK
        i = seq & self._mask
        if self._seqs[i] != seq or now - self._times[i] > self.max_age:
            return None
        return self._packets[i]

    def stored_at(self, seq: int) -> float | None:
        """When ``seq`` was stored, if it still is."""
        i = seq & _SEQ_MASK & self._mask
        return self._times[i] if self._seqs[i] == seq & _SEQ_MASK else None

    def on_keyframe(self, seq: int) -> None:
        """A keyframe starts at ``seq``; an older one arriving late moves nothing."""
        seq &= _SEQ_MASK
        old = self.keyframe_seq
        if old < 0 or ((seq - old + _HALF) & _SEQ_MASK) - _HALF > 0:
            self.keyframe_seq = seq

    def before_keyframe(self, seq: int) -> bool:
        """``seq`` precedes the newest keyframe: a receiver that has it does not need it.

        Only while that keyframe is still cached: after it has left, everything cached came
        later, and the 16-bit comparison would in time read newer packets as older (a
        stream with no keyframe for 32,768 packets had its losses left unrepaired)."""
        key = self.keyframe_seq
        if key < 0:
            return False
        if self._seqs[key & self._mask] != key:
            self.keyframe_seq = -1
            return False
        return ((seq - key + _HALF) & _SEQ_MASK) - _HALF < 0

    def clear(self) -> None:
        """Drop every stored packet (e.g. on SSRC change), releasing references."""
        self.keyframe_seq = -1
        size = self.size
        self._seqs = [-1] * size
        self._packets = [None] * size
        self._times = [0.0] * size
