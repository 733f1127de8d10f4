"""Sender reports to receivers, and what their receiver reports say back (RFC 3550 6.4).

Each consumer's SR maps its rewritten timestamps to the publisher's NTP clock, so a
receiver keeps lip sync across the rewrite. The round trip comes from the report blocks
a receiver sends about our SSRCs: LSR names one of our SRs, whose local send time we
remember, so the SFU's own clock is never compared with the publisher's (they differ
across machines).
"""

from __future__ import annotations

from collections import OrderedDict

from aiortc.rtp import RtcpRrPacket, RtcpSrPacket

from sfu import rtcp
from sfu.feedback.base import FeedbackUnit

REMEMBERED_REPORTS = 64  # SRs whose send time we keep (a few seconds of every consumer's)


class SenderReports(FeedbackUnit):
    handles = (RtcpSrPacket, RtcpRrPacket)

    def __init__(self, transport: object) -> None:
        super().__init__(transport)  # type: ignore[arg-type]
        self._sent: OrderedDict[tuple[int, int], float] = OrderedDict()  # (ssrc, LSR) -> when

    def on_rtcp(self, packet: RtcpSrPacket | RtcpRrPacket, now: float) -> None:
        consumers = self.transport.consumers_by_ssrc
        bandwidth = self.transport.bandwidth
        lost = 0
        blocks = 0
        for block in packet.reports:
            consumer = consumers.get(block.ssrc)
            if consumer is None or not consumer.measures_loss(block.ssrc):
                continue
            rtt = None
            sent_at = self._sent.get((block.ssrc, block.lsr)) if block.lsr else None
            if sent_at is not None:
                value = now - sent_at - block.dlsr / 65536.0
                rtt = max(value, 0.0)
                bandwidth.on_rtt(rtt)
            consumer.on_receiver_report(block, rtt, now)
            lost += block.fraction_lost
            blocks += 1
        if blocks:
            bandwidth.on_loss_report(lost / blocks / 256, now)

    def report(self, now: float) -> list[bytes]:
        self.transport.bandwidth.on_bytes_sent(self.transport.bytes_out, now)
        out = []
        for consumer in self.transport.consumers:
            for info in consumer.sender_reports(now):
                out.append(
                    rtcp.sender_report(info.ssrc, info.ntp, info.rtp_ts, info.packets, info.octets)
                )
                self._sent[(info.ssrc, (info.ntp >> 16) & 0xFFFFFFFF)] = now
        while len(self._sent) > max(REMEMBERED_REPORTS, 4 * len(out)):
            self._sent.popitem(last=False)
        return out
