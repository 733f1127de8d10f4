"""Receiver reports to publishers, from each stream's statistics (RFC 3550 6.4.2).

The publisher reads loss and jitter from them, and its round trip from LSR/DLSR, which
we fill from its last sender report (whose NTP and RTP times each stream also keeps for
translating sender reports to viewers).
"""

from __future__ import annotations

from aiortc.rtp import RtcpSrPacket

from sfu import rtcp
from sfu.feedback.base import FeedbackUnit


class ReceiverReports(FeedbackUnit):
    handles = (RtcpSrPacket,)

    def on_rtcp(self, packet: RtcpSrPacket, now: float) -> None:
        stream = self.transport.streams_by_ssrc.get(packet.ssrc)
        if stream is not None:
            info = packet.sender_info
            stream.stats.on_sender_report(info.ntp_timestamp, info.rtp_timestamp, now)

    def report(self, now: float) -> list[bytes]:
        blocks = [
            stream.stats.report(stream.ssrc, now)
            for producer in self.transport.producers
            for stream in producer.streams
            if stream.ssrc is not None and stream.stats.received
        ]
        if not blocks:
            return []
        # At most 31 report blocks fit one RR (RFC 3550 6.4.2: the count is 5 bits).
        return [
            rtcp.receiver_report(self.transport.rtcp_ssrc, blocks[i : i + 31])
            for i in range(0, len(blocks), 31)
        ]
