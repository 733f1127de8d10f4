"""Answers receivers' NACKs from the SFU's own cache, as RTX where negotiated.

The publisher is never asked again for a packet a viewer lost on its own link.
"""

from __future__ import annotations

from aiortc.rtp import RtcpRtpfbPacket

from sfu import rtcp
from sfu.feedback.base import FeedbackUnit


class NackResponder(FeedbackUnit):
    handles = (RtcpRtpfbPacket,)

    def on_rtcp(self, packet: RtcpRtpfbPacket, now: float) -> None:
        if packet.fmt != rtcp.RTCP_RTPFB_NACK:
            return
        consumer = self.transport.consumers_by_ssrc.get(packet.media_ssrc)
        if consumer is None:
            return
        counters = self.transport.counters
        counters.nacks_in += 1
        counters.retransmissions += consumer.retransmit(
            packet.media_ssrc, rtcp.nack_seqs(packet), now
        )
