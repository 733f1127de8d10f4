"""REMB (draft-alvestrand-rmcat-remb): the bitrate we tell publishers, and the estimate a
receiver that only does REMB tells us.

Toward a publisher: ``bitrate`` for the whole connection, covering every SSRC of every encoding
(Chromium raises its upper simulcast layers only on feedback that covers them all). It starts
at the configured ``publisher_bitrate``; :meth:`Remb.set_limit` changes it at run time (to what
the publisher's viewers need, say) and tells the publisher at once. With transport-cc
negotiated too, Chromium's own estimate rises from our transport-cc feedback and this stays
its cap.
From a receiver: its estimate is kept as ``estimate`` and handed to ``transport.bandwidth``
(the estimate itself when the receiver sends no transport-cc feedback, else a cap).
"""

from __future__ import annotations

import struct

from aiortc.rtp import RtcpPsfbPacket

from sfu import rtcp
from sfu.feedback.base import FeedbackUnit


class Remb(FeedbackUnit):
    handles = (RtcpPsfbPacket,)

    def __init__(self, transport: object, bitrate: int) -> None:
        super().__init__(transport)  # type: ignore[arg-type]
        self.bitrate = bitrate
        self.default_bitrate = bitrate  # the configured cap (publisher_bitrate)
        self.estimate: int | None = None  # bits per second, from the receiver's REMB
        self.estimate_at = -1.0

    def on_rtcp(self, packet: RtcpPsfbPacket, now: float) -> None:
        if packet.fmt != rtcp.RTCP_PSFB_APP:
            return
        try:
            bitrate, _ssrcs = rtcp.unpack_remb_fci(packet.fci)
        except (ValueError, struct.error, IndexError):
            return  # another application-layer feedback, or a malformed REMB
        self.estimate = bitrate
        self.estimate_at = now
        self.transport.bandwidth.on_remb(bitrate, now)

    def set_limit(self, bps: int) -> None:
        """The bitrate the publisher may send from now on (all its tracks together); sent
        at once when it changes, then with every report."""
        bps = max(int(bps), 0)
        if bps == self.bitrate:
            return
        self.bitrate = bps
        for packet in self.report(self.transport.now):
            self.transport.send_rtcp(packet)

    def report(self, now: float) -> list[bytes]:
        video = [
            stream.ssrc
            for producer in self.transport.producers
            if producer.is_video
            for stream in producer.streams
            if stream.ssrc is not None
        ]
        if not video:
            return []
        return [rtcp.remb(self.transport.rtcp_ssrc, self.bitrate, video)]
