"""Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-extensions-01).

:class:`TwccReceiver`, on a publisher's transport: every received packet's transport-wide
sequence number and arrival time, reported back every ``FEEDBACK_INTERVAL`` as RTPFB FMT=15,
so the publisher's own estimator (Chromium's GCC) ramps up in seconds, not the tens of
seconds a REMB-only publisher takes.

:class:`TwccSender`, on a viewer's transport: remembers when and how big each packet we sent
was (``on_sent``), matches the viewer's feedback against it and feeds the transport's
:class:`~sfu.bwe.BandwidthEstimator` (``transport.bandwidth``).
"""

from __future__ import annotations

from math import inf

from sfu import rtcp
from sfu.bwe import PacketResult
from sfu.feedback.base import FeedbackUnit

FEEDBACK_INTERVAL = 0.05  # seconds between feedback packets while packets arrive
MAX_STATUSES = 400  # packets per feedback packet: about 1 KB at most, below any MTU
MAX_DELTA_TICKS = 0x7FFF  # 8.19 s in 250 us ticks: a longer gap starts a new packet
MAX_GAP = 1000  # unreported sequence numbers before which we stop reporting losses
SENT_HISTORY = 1024  # packets whose send time we remember (power of two): ~1 s of video


class TwccReceiver(FeedbackUnit):
    """Transport-cc feedback on what a publisher sends us."""

    def __init__(self, transport: object) -> None:
        super().__init__(transport)  # type: ignore[arg-type]
        self._arrivals: dict[int, float] = {}  # unwrapped sequence -> arrival time
        self._highest = -1  # unwrapped
        self._next_base = -1  # the first sequence number not yet reported
        self._media_ssrc = 0
        self._fb_count = 0
        self._due = inf
        self.feedback_sent = 0

    def on_received(self, seq: int, ssrc: int, now: float) -> None:
        """A packet with transport-wide sequence number ``seq`` (16-bit) arrived."""
        highest = self._highest
        if highest < 0:
            ext = seq + 0x10000  # room below for reordering
            self._next_base = ext
        else:
            ext = highest + ((seq - highest + 0x8000) & 0xFFFF) - 0x8000
        if ext > highest:
            self._highest = ext
        if ext < self._next_base:
            return  # already reported (as lost, or a duplicate)
        self._arrivals[ext] = now
        self._media_ssrc = ssrc
        if self._due == inf:
            self._due = now + FEEDBACK_INTERVAL
            self.transport.wake(self._due)

    def next_deadline(self) -> float:
        return self._due

    def on_timer(self, now: float) -> None:
        self._due = inf
        for packet in self.feedback():
            self.transport.send_rtcp(packet)
            self.feedback_sent += 1

    def feedback(self) -> list[bytes]:
        """Feedback packets for everything received since the last call."""
        arrivals = self._arrivals
        if not arrivals:
            return []
        first = min(arrivals)
        base = self._next_base
        if first - base > MAX_GAP:
            base = first  # a long silence or a jump: do not report thousands of losses
        end = self._highest + 1
        packets = []
        while base < end:
            statuses: list[int | None] = []
            previous = -1
            seq = base
            while seq < end and len(statuses) < MAX_STATUSES:
                arrived = arrivals.pop(seq, None)
                if arrived is None:
                    statuses.append(None)
                else:
                    ticks = int(arrived * 4000)  # 250 us ticks
                    if previous >= 0 and abs(ticks - previous) > MAX_DELTA_TICKS:
                        arrivals[seq] = arrived  # back for the next packet, its own reference
                        break
                    previous = ticks
                    statuses.append(ticks)
                seq += 1
            while statuses and statuses[-1] is None:
                statuses.pop()  # never end on a loss: the next packet may still come
                seq -= 1
            if not statuses:
                break
            packets.append(
                rtcp.build_transport_feedback(
                    self.transport.rtcp_ssrc,
                    self._media_ssrc,
                    base & 0xFFFF,
                    self._fb_count,
                    statuses,
                )
            )
            self._fb_count = (self._fb_count + 1) & 0xFF
            base = seq
        self._next_base = base
        return packets


class TwccSender(FeedbackUnit):
    """Send history and the viewer's transport-cc feedback, into ``transport.bandwidth``."""

    handles = (rtcp.TransportFeedback,)

    def __init__(self, transport: object) -> None:
        super().__init__(transport)  # type: ignore[arg-type]
        # One list of (seq, sent at, size): one store per forwarded copy into one slot (three
        # parallel lists touched three cache lines per copy, measurably slower at 100 viewers).
        self._sent: list[tuple[int, float, int] | None] = [None] * SENT_HISTORY
        self.feedback_received = 0

    def on_sent(self, twcc_seq: int, size: int, now: float) -> None:
        self._sent[twcc_seq & 1023] = (twcc_seq, now, size)  # 1023: SENT_HISTORY - 1

    def on_rtcp(self, packet: rtcp.TransportFeedback, now: float) -> None:
        self.feedback_received += 1
        results: list[PacketResult] = []
        sent = self._sent
        mask = SENT_HISTORY - 1
        seq = packet.base_seq
        for arrived in packet.arrivals:
            record = sent[seq & mask]
            if record is not None and record[0] == seq:
                sent[seq & mask] = None  # each packet counts once, even if reported again
                results.append((record[1], record[2], arrived))
            seq = (seq + 1) & 0xFFFF
        bandwidth = self.transport.bandwidth
        bandwidth.on_bytes_sent(self.transport.bytes_out, now)
        if results:
            bandwidth.on_packets(results, now)
