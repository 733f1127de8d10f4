"""Keyframe request coalescing for one published stream (sans-I/O).

Every viewer that joins, or that loses sync, asks for a keyframe (PLI/FIR). Relaying
each of those to the publisher would make it encode a keyframe per request, and
keyframes are several times larger than delta frames: with many viewers that floods
the publisher's uplink and then every viewer's downlink. One PLI per ``min_interval``
is enough, provided the last request inside an interval is not dropped.
"""

from __future__ import annotations

__all__ = ["KeyFrameRequester"]


class KeyFrameRequester:
    """Rate-limits keyframe requests sent to one publisher stream.

    :meth:`request` answers whether to send a PLI right now; a request that is
    coalesced leaves a pending flag which :meth:`poll` turns into a PLI once
    ``min_interval`` has passed since the last one (:meth:`next_deadline` says when),
    unless a keyframe arrives first (:meth:`on_keyframe`), which satisfies everyone
    who asked before it.
    """

    __slots__ = ("min_interval", "_last_sent", "_pending", "_fir_seq")

    def __init__(self, min_interval: float = 0.5) -> None:
        self.min_interval = min_interval
        self._last_sent: float | None = None
        self._pending = False
        self._fir_seq = 0

    @property
    def pending(self) -> bool:
        """Whether a coalesced request is waiting for the interval to pass."""
        return self._pending

    @property
    def last_sent(self) -> float | None:
        """When a PLI was last approved, or None if never."""
        return self._last_sent

    def request(self, now: float) -> bool:
        """A viewer needs a keyframe; True means send a PLI to the publisher now."""
        last = self._last_sent
        if last is None or now >= last + self.min_interval:
            self._last_sent = now
            self._pending = False
            return True
        self._pending = True
        return False

    def poll(self, now: float) -> bool:
        """True (once) when a coalesced request may now be sent as a PLI."""
        if not self._pending:
            return False
        last = self._last_sent
        if last is not None and now < last + self.min_interval:  # the very sum next_deadline gives
            return False
        self._last_sent = now
        self._pending = False
        return True

    def next_deadline(self) -> float | None:
        """When :meth:`poll` will next return True, or None if nothing is pending."""
        if not self._pending:
            return None
        last = self._last_sent
        # pending implies a PLI was sent before (otherwise request() sends at once).
        return last + self.min_interval if last is not None else 0.0

    def on_keyframe(self, now: float) -> None:
        """A keyframe arrived from the publisher: requests made before it are satisfied.

        ``now`` is accepted for symmetry and future use (e.g. keyframe interval stats).
        """
        self._pending = False

    def next_fir_seq(self) -> int:
        """Sequence number for the next FIR (RFC 5104 §4.3.1.1): 8 bits, wrapping."""
        seq = self._fir_seq
        self._fir_seq = (seq + 1) & 0xFF
        return seq
