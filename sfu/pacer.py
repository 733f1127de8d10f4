"""A send budget per viewer transport: a leaky bucket at ``FACTOR`` x the estimate.

Audio, retransmissions and video share it in that order of priority:

* audio is never held (it is small and late audio is worse than a late frame);
* a retransmission (sent while :attr:`Pacer.retransmitting` is set, by the NACK responder)
  goes ahead of any queued video: a loss then costs the viewer one round trip, not a round
  trip plus the queue. When the bucket is short it waits in its own short queue
  (``MAX_RETRANSMIT_DELAY``), drained first; beyond that it is dropped, first of all
  traffic: repairing the past must not flood a link that is already too full;
* video beyond the budget waits in a queue and is sent as the bucket refills: a keyframe
  burst leaves at the estimate's pace instead of overflowing a thin link's router buffer.
  As in libwebrtc's pacer, video is not dropped for being late: when the queue would
  keep a packet longer than ``MAX_QUEUE_DELAY`` at the budget rate, the pacer drains
  faster, so that none waits longer (a dropped packet of a keyframe costs a NACK round trip, or
  a new keyframe, which is worse than a burst). Only beyond ``MAX_QUEUE_BYTES`` is video
  dropped, and the receiver's NACK/PLI machinery takes over;
* padding probes (sent while :attr:`Pacer.bypass` is set) are not paced: a probe's whole
  point is to go above the estimate for a moment.

It paces only while the viewer sends transport-cc feedback (``FRESH``). A receiver that
sends only REMB (aiortc, for one) is not held back: its estimator starts at what it
receives and dips on keyframe bursts, so pacing to it would hold good video. But its
retransmissions come from the budget its REMB leaves, queued and dropped as above, and
its media spends that budget without waiting: an aiortc viewer's NACKs behind a
200 kbit/s link had the SFU send it 850 kbit/s, mostly resends of what the link had
dropped. A receiver with no feedback at all is not paced. The hot path stays cheap:
while the bucket holds enough, :meth:`admit` is a refill and a subtraction; nothing is
buffered unless the transport is over budget. Packets are queued before their
transport-wide sequence number is stamped, so the estimator sees the time they really
left. Enabled per worker by ``MediaSettings.pacing`` (on by default).
"""

from __future__ import annotations

from collections import deque
from math import inf
from typing import TYPE_CHECKING

from sfu.feedback.base import FeedbackUnit

if TYPE_CHECKING:
    from sfu.transport import Transport

FACTOR = 2.5  # the budget runs this much above the estimate (GCC's pacing factor): it smooths
# bursts and orders traffic; holding a flow to its estimate is the layer choice's job
BURST = 0.04  # seconds of budget the bucket holds when idle
MAX_QUEUE_DELAY = 0.5  # seconds the queue takes to drain at most (libwebrtc: 2 s)
MAX_QUEUE_BYTES = 256_000  # beyond this, video is dropped (a stuck peer's memory)
MAX_RETRANSMIT_DELAY = 0.1  # seconds of queued retransmissions before dropping them
DRAIN_STEP = 0.005  # seconds between sends from the queue
FRESH = 5.0  # seconds transport-cc feedback stands (as Transport.available_bitrate)
RATE_EVERY = 0.005  # seconds between re-reads of the estimate (not per packet)


class Pacer(FeedbackUnit):
    """The leaky bucket of one transport; see the module docstring."""

    def __init__(self, transport: Transport, factor: float = FACTOR) -> None:
        super().__init__(transport)
        self.factor = factor
        self.bandwidth = transport.bandwidth
        self.tokens = 0.0  # bytes that may leave now
        self.last = -inf
        self.queue: deque[tuple[bytearray, int, float]] = deque()  # (packet, offset, since)
        self.queued_bytes = 0
        self.resends: deque[tuple[bytearray, int, float]] = deque()
        self.resend_bytes = 0
        self.bypass = False  # set while the queue drains, or a probe pads, through send_rtp
        self.retransmitting = False  # set by the NACK responder around its resends
        self._due = inf
        self._rate_at = -inf
        self._rate = 0.0
        self._fresh = False
        self._remb_only = False  # REMB and no transport-cc: only retransmissions wait
        self.dropped_video = 0
        self.dropped_retransmissions = 0
        self.queued = 0

    def rate(self, now: float) -> float:
        """Bytes per second of budget, raised so that no queued packet waits longer than
        MAX_QUEUE_DELAY."""
        rate = self.bandwidth.estimate_bps * self.factor / 8
        queued = self.queued_bytes + self.resend_bytes
        if queued:
            oldest = min(q[0][2] for q in (self.queue, self.resends) if q)
            left = oldest + MAX_QUEUE_DELAY - now
            if queued > rate * left:
                return queued / max(left, DRAIN_STEP)
        return rate

    def _update(self, now: float) -> None:
        """Re-read the estimate and feedback freshness (every RATE_EVERY, not per packet)."""
        self._rate_at = now
        self._rate = self.rate(now)
        bandwidth = self.bandwidth
        self._fresh = now - bandwidth.last_feedback <= FRESH
        self._remb_only = not self._fresh and now - bandwidth.last_remb <= FRESH

    def _refill(self, now: float) -> float:
        """Tokens for the time since the last refill, at the rate last read (its callers
        re-read it when due: :meth:`admit` per RATE_EVERY, :meth:`on_timer` always)."""
        rate = self._rate
        elapsed = now - self.last
        self.last = now
        cap = rate * BURST
        tokens = self.tokens + elapsed * rate if elapsed > 0 else self.tokens
        self.tokens = cap if tokens > cap else tokens
        return rate

    def admit(self, buf: bytearray, twcc_offset: int, now: float) -> bool:
        """May ``buf`` leave now? False: it was queued or dropped (the pacer owns it)."""
        if self.bypass:
            return True
        if now - self._rate_at >= RATE_EVERY:
            self._update(now)
        if not self._fresh and not self.queue:
            if self._remb_only:
                return self._admit_against_remb(buf, twcc_offset, now)
            if self._due == inf:
                return True  # no estimate to pace to, and nothing queued to keep order with
        rate = self._refill(now)
        size = len(buf)
        if self.tokens >= size and not self.queue and not self.resends:
            self.tokens -= size  # the hot path: within budget, nothing waiting
            return True
        if self.retransmitting:
            return self._admit_retransmission(buf, twcc_offset, rate, now)
        if self._is_audio(buf):
            self.tokens -= size  # never held; it still spends the budget
            return True
        if self.queued_bytes + size > MAX_QUEUE_BYTES:
            self.dropped_video += 1
            self.transport.counters.dropped += 1
            return False
        self.queue.append((buf, twcc_offset, now))
        self.queued_bytes += size
        self.queued += 1
        self._schedule(now)
        return False

    def _admit_against_remb(self, buf: bytearray, twcc_offset: int, now: float) -> bool:
        """A REMB-only receiver: media goes at once and spends the budget (a debt of at
        most one burst's worth); a retransmission goes from what is left of it."""
        rate = self._refill(now)
        size = len(buf)
        if self.retransmitting:
            return self._admit_retransmission(buf, twcc_offset, rate, now)
        tokens = self.tokens - size
        floor = -rate * BURST
        self.tokens = tokens if tokens > floor else floor
        return True

    def _admit_retransmission(
        self, buf: bytearray, twcc_offset: int, rate: float, now: float
    ) -> bool:
        """Sent if the bucket holds it and no resend waits; else queued behind the others
        up to MAX_RETRANSMIT_DELAY of budget, beyond which it is dropped."""
        size = len(buf)
        if not self.resends and self.tokens >= size:
            self.tokens -= size
            return True
        if self.resend_bytes + size > rate * MAX_RETRANSMIT_DELAY:
            self.dropped_retransmissions += 1
            self.transport.counters.dropped += 1
            return False
        self.resends.append((buf, twcc_offset, now))
        self.resend_bytes += size
        self._schedule(now)
        return False

    def _schedule(self, now: float) -> None:
        if self._due == inf:
            self._due = now + DRAIN_STEP
            self.transport.wake(self._due)

    def _is_audio(self, buf: bytearray) -> bool:
        consumer = self.transport.consumers_by_ssrc.get(int.from_bytes(buf[8:12], "big"))
        return consumer is not None and consumer.kind == "audio"

    def next_deadline(self) -> float:
        return self._due

    def on_timer(self, now: float) -> None:
        self._due = inf
        self._update(now)  # the queue's drain rate follows its length
        self._refill(now)
        self.bypass = True
        try:
            for queue in (self.resends, self.queue):
                while queue and self.tokens >= len(queue[0][0]):
                    buf, twcc_offset, _ = queue.popleft()
                    size = len(buf)
                    if queue is self.resends:
                        self.resend_bytes -= size
                    else:
                        self.queued_bytes -= size
                    self.tokens -= size
                    self.transport.send_rtp(buf, twcc_offset, now)
                if queue:
                    break  # what is left of the resends goes before any video
        finally:
            self.bypass = False
        if self.resends or self.queue:
            self._schedule(now)
