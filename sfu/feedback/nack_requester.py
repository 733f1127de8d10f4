"""NACKs to publishers for what did not arrive (RFC 4585 generic NACK).

Each receive stream's :class:`~sfu.nack.NackGenerator` knows what is missing and when to
ask; this unit asks, and turns loss too heavy to repair into a keyframe request.
"""

from __future__ import annotations

from math import inf

from sfu.feedback.base import FeedbackUnit
from sfu.nack import build_nack


class NackRequester(FeedbackUnit):
    def on_timer(self, now: float) -> None:
        transport = self.transport
        for producer in transport.producers:
            for stream in producer.streams:
                nack = stream.nack
                if nack is None or stream.ssrc is None:
                    continue
                seqs = nack.due(now)
                if seqs:
                    transport.counters.nacks_out += 1
                    transport.send_rtcp(build_nack(transport.rtcp_ssrc, stream.ssrc, seqs))
                if nack.take_keyframe_request():
                    stream.request_keyframe(now)

    def next_deadline(self) -> float:
        earliest = inf
        for producer in self.transport.producers:
            for stream in producer.streams:
                if stream.nack is not None:
                    at = stream.nack.next_deadline()
                    if stream.nack.needs_keyframe:
                        at = 0.0  # as soon as possible
                    if at is not None and at < earliest:
                        earliest = at
        return earliest
