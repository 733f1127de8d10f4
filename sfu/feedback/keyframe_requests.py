"""Keyframe requests: receivers' PLI/FIR to the consumer's stream, and PLIs to publishers.

A request reaches the publisher at most once per ``keyframe_interval`` per stream (a
viewer joining, a viewer that lost sync, a layer switch all ask; see
:class:`~sfu.keyframe.KeyFrameRequester`); one coalesced within the interval is sent
when it ends, unless a keyframe came first. This unit fires those delayed ones.
"""

from __future__ import annotations

from math import inf

from aiortc.rtp import RtcpPsfbPacket

from sfu import rtcp
from sfu.feedback.base import FeedbackUnit


class KeyframeRequests(FeedbackUnit):
    handles = (RtcpPsfbPacket,)

    def on_rtcp(self, packet: RtcpPsfbPacket, now: float) -> None:
        if packet.fmt == rtcp.RTCP_PSFB_PLI:
            media_ssrc = packet.media_ssrc
        elif packet.fmt == rtcp.RTCP_PSFB_FIR and len(packet.fci) >= 8:
            media_ssrc = int.from_bytes(packet.fci[0:4], "big")
        else:
            return
        consumer = self.transport.consumers_by_ssrc.get(media_ssrc)
        if consumer is not None:
            self.transport.counters.plis_in += 1
            consumer.request_keyframe(media_ssrc, now)

    def on_timer(self, now: float) -> None:
        for producer in self.transport.producers:
            for stream in producer.streams:
                if stream.keyframes.poll(now):
                    self.transport.send_keyframe_request(stream)

    def next_deadline(self) -> float:
        earliest = inf
        for producer in self.transport.producers:
            for stream in producer.streams:
                at = stream.keyframes.next_deadline()
                if at is not None and at < earliest:
                    earliest = at
        return earliest
