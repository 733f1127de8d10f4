"""A send budget per viewer transport: a leaky bucket at ``FACTOR`` x the estimate.

Audio, retransmissions and video share it in that order of priority:

* audio is never held (it is small and late audio is worse than a late frame);
* a retransmission is dropped when the bucket is short (:meth:`Pacer.retransmission_allowed`,
  asked by the NACK responder before it builds anything): repairing the past must not add
  to a queue that is already too long;
* video beyond the budget waits in a short queue (at most ``MAX_QUEUE_DELAY`` of it at the
  current rate) and is sent as the bucket refills; beyond that it is dropped, and the
  receiver's NACK/PLI machinery takes over.

The hot path stays cheap: while the bucket holds enough, :meth:`admit` is a refill and a
subtraction; nothing is buffered unless the transport is over budget. Packets are queued
before their transport-wide sequence number is stamped, so the estimator sees the time
they really left. Enabled per worker by ``MediaSettings.pacing``.
"""

from __future__ import annotations

from collections import deque
from math import inf
from typing import TYPE_CHECKING

from sfu.feedback.base import FeedbackUnit

if TYPE_CHECKING:
    from sfu.transport import Transport

FACTOR = 1.25  # the budget runs this much above the estimate (GCC's pacing factor is 2.5)
BURST = 0.04  # seconds of budget the bucket holds when idle
MAX_QUEUE_DELAY = 0.1  # seconds of queued video, at the budget rate, before dropping
DRAIN_STEP = 0.005  # seconds between sends from the queue


class Pacer(FeedbackUnit):
    """The leaky bucket of one transport; see the module docstring."""

    def __init__(self, transport: Transport, factor: float = FACTOR) -> None:
        super().__init__(transport)
        self.factor = factor
        self.tokens = 0.0  # bytes that may leave now
        self.last = -inf
        self.queue: deque[tuple[bytearray, int]] = deque()
        self.queued_bytes = 0
        self.bypass = False  # set while the queue drains through send_rtp
        self._due = inf
        self.dropped_video = 0
        self.dropped_retransmissions = 0
        self.queued = 0

    def rate(self) -> float:
        """Bytes per second of budget."""
        return self.transport.bandwidth.estimate_bps * self.factor / 8

    def _refill(self, now: float) -> float:
        rate = self.rate()
        elapsed = now - self.last
        self.last = now
        cap = rate * BURST
        tokens = self.tokens + elapsed * rate if elapsed > 0 else self.tokens
        self.tokens = tokens = cap if tokens > cap else tokens
        return rate

    def admit(self, buf: bytearray, twcc_offset: int, now: float) -> bool:
        """May ``buf`` leave now? False: it was queued or dropped (the pacer owns it)."""
        if self.bypass:
            return True
        self._refill(now)
        size = len(buf)
        if self._is_audio(buf):
            self.tokens -= size  # never held; it still spends the budget
            return True
        if not self.queue and self.tokens >= size:
            self.tokens -= size
            return True
        if self.queued_bytes + size > self.rate() * MAX_QUEUE_DELAY:
            self.dropped_video += 1
            self.transport.counters.dropped += 1
            return False
        self.queue.append((buf, twcc_offset))
        self.queued_bytes += size
        self.queued += 1
        if self._due == inf:
            self._due = now + DRAIN_STEP
            self.transport.wake(self._due)
        return False

    def retransmission_allowed(self, size: int, now: float) -> bool:
        """A retransmission of ``size`` bytes fits the budget (and spends it); else it is
        dropped, first of all traffic."""
        self._refill(now)
        if self.queue or self.tokens < size:
            self.dropped_retransmissions += 1
            return False
        self.tokens -= size
        return True

    def _is_audio(self, buf: bytearray) -> bool:
        consumer = self.transport.consumers_by_ssrc.get(int.from_bytes(buf[8:12], "big"))
        return consumer is not None and consumer.kind == "audio"

    def next_deadline(self) -> float:
        return self._due

    def on_timer(self, now: float) -> None:
        self._due = inf
        self._refill(now)
        queue = self.queue
        self.bypass = True
        try:
            while queue and self.tokens >= len(queue[0][0]):
                buf, twcc_offset = queue.popleft()
                self.queued_bytes -= len(buf)
                self.tokens -= len(buf)
                self.transport.send_rtp(buf, twcc_offset, now)
        finally:
            self.bypass = False
        if queue:
            self._due = now + DRAIN_STEP
            self.transport.wake(self._due)
