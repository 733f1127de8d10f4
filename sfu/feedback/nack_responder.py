"""Answers receivers' NACKs from the SFU's own cache, as RTX where negotiated.

The publisher is never asked again for a packet a viewer lost on its own link. Bounded, so
a NACK storm cannot turn into a retransmission storm into a link that is already weak:

* a packet is resent to a viewer at most once per round trip (the transport's RTT from
  receiver reports, at least ``MIN_RTT``): a repeated NACK before the first resend could
  have arrived is a duplicate;
* nothing older than ``MAX_AGE`` (past any jitter buffer) or, for video, older than the
  newest keyframe (the decoder restarts from it) is resent;
* with pacing on, retransmissions go ahead of queued video, and are dropped first when
  the send budget is short (sfu/pacer.py).
"""

from __future__ import annotations

from aiortc.rtp import RtcpRtpfbPacket

from sfu import rtcp
from sfu.consumer import SimpleConsumer
from sfu.feedback.base import FeedbackUnit

MIN_RTT = 0.02
MAX_AGE = 1.0  # seconds a packet may have been cached and still be worth resending
REMEMBERED = 2048  # resends remembered before old entries are swept


class NackResponder(FeedbackUnit):
    handles = (RtcpRtpfbPacket,)

    def __init__(self, transport: object) -> None:
        super().__init__(transport)  # type: ignore[arg-type]
        self._resent: dict[tuple[int, int], float] = {}  # (our SSRC, seq) -> when
        self.suppressed = 0  # NACKed packets not resent (duplicate, too old, over budget)

    def on_rtcp(self, packet: RtcpRtpfbPacket, now: float) -> None:
        if packet.fmt != rtcp.RTCP_RTPFB_NACK:
            return
        transport = self.transport
        consumer = transport.consumers_by_ssrc.get(packet.media_ssrc)
        if consumer is None:
            return
        counters = transport.counters
        counters.nacks_in += 1
        asked = rtcp.nack_seqs(packet)
        wanted = self._worth_resending(consumer, packet.media_ssrc, asked, now)
        self.suppressed += len(asked) - len(wanted)
        if not wanted:
            return
        pacer = transport.pacer
        if pacer is not None:
            pacer.retransmitting = True  # ahead of queued video; dropped first when over budget
        try:
            counters.retransmissions += consumer.retransmit(packet.media_ssrc, wanted, now)
        finally:
            if pacer is not None:
                pacer.retransmitting = False

    def _worth_resending(
        self, consumer: object, media_ssrc: int, seqs: list[int], now: float
    ) -> list[int]:
        window = max(self.transport.bandwidth.rtt, MIN_RTT)
        resent = self._resent
        buffer = None
        offset = 0
        if isinstance(consumer, SimpleConsumer) and consumer.stream.buffer is not None:
            buffer = consumer.stream.buffer
            offset = consumer.seq_offset
        out = []
        for seq in seqs:
            key = (media_ssrc, seq)
            last = resent.get(key)
            if last is not None and now - last < window:
                continue
            if buffer is not None:
                source = (seq - offset) & 0xFFFF
                stored = buffer.stored_at(source)
                if stored is None or now - stored > MAX_AGE or buffer.before_keyframe(source):
                    continue
            resent[key] = now
            out.append(seq)
        if len(resent) > REMEMBERED:
            for key in [k for k, at in resent.items() if now - at > MAX_AGE]:
                del resent[key]
        return out
