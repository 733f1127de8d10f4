"""Transport-cc on both sides, with no sockets: plain transports back to back and a clock
that is a number (tests/sansio.py).

Publisher side: packets carrying transport-wide sequence numbers come in; the SFU's
feedback must name each one with its arrival time (to the 250 us tick), report a gap as
lost, and go out every 50 ms while packets arrive. Viewer side: the viewer's feedback
about what we sent reaches the transport's estimator, matched to our send times and sizes.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sfu import rtcp
from sfu.feedback.twcc import FEEDBACK_INTERVAL, MAX_STATUSES
from sfu.rtp import ExtensionLayout
from sfu.sdp import URI_MID, URI_RID, URI_RRID, URI_TWCC
from sfu.timers import TimerQueue
from tests import sansio
from tests.sansio import PUBLISHER_ADDR, VIEWER_ADDR, VP8_DELTA, VP8_KEY, rtp

PUBLISH = {URI_MID: 4, URI_RID: 10, URI_RRID: 11, URI_TWCC: 5}


def with_twcc(seq: int) -> list[tuple[int, bytes]]:
    return [(4, b"0"), (5, struct.pack("!H", seq & 0xFFFF))]


class Publisher:
    def __init__(self) -> None:
        self.now = 100.0
        self.timers = TimerQueue()
        self.transport, self.sock = sansio.plain(
            self.timers, "pub", PUBLISHER_ADDR, extensions=PUBLISH, now=self.now
        )
        self.producer = sansio.producer(self.transport)
        self.sock.take()

    def send(self, media_seq: int, twcc: int, dt: float, ssrc: int = 0x1111) -> None:
        self.now += dt
        data = rtp(ssrc, media_seq, 0, VP8_DELTA, extensions=with_twcc(twcc))
        self.transport.receive(data, PUBLISHER_ADDR, self.now)
        self.timers.run(self.now)

    def feedback(self) -> list[rtcp.TransportFeedback]:
        return [
            p
            for data in self.sock.take()
            for p in rtcp.parse_compound(data)
            if isinstance(p, rtcp.TransportFeedback)
        ]


def test_every_received_packet_is_reported_with_its_arrival_time_and_gaps_as_lost():
    pub = Publisher()
    arrivals = {}
    for i, twcc in enumerate([65530, 65531, 65533, 65534, 0, 1]):  # 65532, 65535 lost
        pub.send(1000 + i, twcc, 0.002)
        arrivals[twcc] = pub.now
    assert pub.feedback() == [], "not before the interval"
    pub.now += FEEDBACK_INTERVAL
    pub.timers.run(pub.now)
    [fb] = pub.feedback()
    assert fb.base_seq == 65530 and fb.media_ssrc == 0x1111
    assert [a is not None for a in fb.arrivals] == [
        True,
        True,
        False,
        True,
        True,
        False,
        True,
        True,
    ]
    received = [a for a in fb.arrivals if a is not None]
    deltas = [b - a for a, b in zip(received, received[1:], strict=False)]
    assert all(abs(d - 0.002) < 0.00026 for d in deltas), deltas
    assert pub.transport.twcc_receiver.feedback_sent == 1


def test_feedback_continues_where_the_last_left_off_and_counts_up():
    pub = Publisher()
    for twcc in range(10):
        pub.send(twcc, twcc, 0.01)
    pub.send(10, 12, 0.06)  # the 50 ms timer fired before this one; 10 and 11 lost
    pub.now += 0.1
    pub.timers.run(pub.now)
    feedback = pub.feedback()
    assert len(feedback) == 2
    first, second = feedback
    assert first.base_seq == 0 and second.base_seq == first.base_seq + len(first.arrivals)
    assert second.fb_count == (first.fb_count + 1) & 0xFF
    assert [a is None for a in second.arrivals][-3:] == [True, True, False]
    assert sum(a is not None for f in feedback for a in f.arrivals) == 11


def test_many_packets_are_split_into_feedback_packets_that_fit_the_mtu():
    pub = Publisher()
    for twcc in range(MAX_STATUSES * 2 + 5):
        pub.now += 0.0001
        data = rtp(0x1111, twcc, 0, VP8_DELTA, extensions=with_twcc(twcc))
        pub.transport.receive(data, PUBLISHER_ADDR, pub.now)
    pub.now += FEEDBACK_INTERVAL
    pub.timers.run(pub.now)
    sent = pub.sock.take()
    assert len(sent) == 3 and max(len(d) for d in sent) <= 1200
    feedback = [p for d in sent for p in rtcp.parse_compound(d)]
    assert sum(len(f.arrivals) for f in feedback) == MAX_STATUSES * 2 + 5


def test_a_padding_probe_on_an_unknown_ssrc_still_counts():
    pub = Publisher()
    pub.send(1, 1, 0.0)
    pub.send(7, 2, 0.001, ssrc=0x9999)  # Chromium's probes: dropped, but they were received
    pub.now += FEEDBACK_INTERVAL
    pub.timers.run(pub.now)
    [fb] = pub.feedback()
    assert all(a is not None for a in fb.arrivals) and len(fb.arrivals) == 2


def viewer_rig() -> tuple[Any, Any, Any, Any]:
    timers = TimerQueue()
    pub, _ = sansio.plain(timers, "pub", PUBLISHER_ADDR, extensions=PUBLISH, now=10.0)
    producer = sansio.producer(pub)
    view, sock = sansio.plain(timers, "view", VIEWER_ADDR, now=10.0)
    consumer = sansio.consumer(view, producer)
    consumer.layout = ExtensionLayout({URI_TWCC: 3}, "0")
    consumer.stream.detach(consumer)
    consumer.stream.attach(consumer)
    return pub, view, sock, consumer


def test_a_viewers_feedback_reaches_the_estimate_matched_to_what_was_sent():
    pub, view, sock, _consumer = viewer_rig()
    now = 10.0
    pub.receive(rtp(0x1111, 0, 0, VP8_KEY, extensions=with_twcc(0)), PUBLISHER_ADDR, now)
    for seq in range(1, 300):
        now += 0.005
        pub.receive(rtp(0x1111, seq, 0, VP8_DELTA, extensions=with_twcc(seq)), PUBLISHER_ADDR, now)
    sent = [d for d in sock.take() if not 192 <= d[1] <= 223]
    numbers = [struct.unpack_from("!H", d, 17)[0] for d in sent]
    assert numbers == list(range(1, 301))
    # The viewer saw every packet 30 ms after we sent it (a clean path) but lost every
    # 10th; its feedback, in its own clock (500 s ahead of ours), as 250 us ticks.
    for chunk in range(0, 300, 100):
        arrivals = [
            None if (i + 1) % 10 == 0 else int((510.0 + 0.005 * i) * 4000)
            for i in range(chunk, chunk + 100)
        ]
        data = rtcp.build_transport_feedback(0x5555, 0, numbers[chunk], chunk // 100, arrivals)
        view.receive(data, VIEWER_ADDR, now + 0.03)
    bandwidth = view.bandwidth
    unit = next(u for u in view.units if type(u).__name__ == "TwccSender")
    assert unit.feedback_received == 3
    assert abs(bandwidth.loss - 0.1) < 0.02
    acked = bandwidth.acked_rate_bps
    size = len(sent[5])
    assert acked is not None and abs(acked - size * 8 * 0.9 / 0.005) / acked < 0.1
    assert bandwidth.detector.state == "normal"


def test_set_limit_tells_the_publisher_at_once():
    pub = Publisher()
    pub.transport.remb.set_limit(300_000)
    packets = [p for d in pub.sock.take() for p in rtcp.parse_compound(d)]
    [remb] = [p for p in packets if isinstance(p, rtcp.RtcpPsfbPacket)]
    assert rtcp.unpack_remb_fci(remb.fci) == (300_000, [0x1111])
    pub.transport.remb.set_limit(300_000)
    assert pub.sock.take() == [], "no change, nothing sent"


# -- the parser and builder, fuzzed (tests/test_fuzz.py style) ---------------------------------

FUZZ = settings(max_examples=300, deadline=None)
arrival_lists = st.lists(
    st.one_of(st.none(), st.integers(-300, 30000)), min_size=1, max_size=600
).map(lambda steps: _absolute(steps))


def _absolute(steps: list[int | None]) -> list[int | None]:
    """Steps to absolute tick values (a delta of at most 30000 ticks always fits)."""
    out: list[int | None] = []
    now = 10_000_000
    for step in steps:
        if step is None:
            out.append(None)
        else:
            now += step
            out.append(now)
    return out


@FUZZ
@given(arrival_lists, st.integers(0, 0xFFFF), st.integers(0, 255))
def test_feedback_round_trips(arrivals, base, count):
    data = rtcp.build_transport_feedback(1, 2, base, count, arrivals)
    [fb] = rtcp.parse_compound(data)
    assert isinstance(fb, rtcp.TransportFeedback)
    assert (fb.base_seq, fb.fb_count, len(fb.arrivals)) == (base, count, len(arrivals))
    assert [a is None for a in fb.arrivals] == [a is None for a in arrivals]
    got = [round(a / rtcp.TWCC_TICK) for a in fb.arrivals if a is not None]
    sent = [a for a in arrivals if a is not None]
    assert [b - a for a, b in zip(got, got[1:], strict=False)] == [
        b - a for a, b in zip(sent, sent[1:], strict=False)
    ]


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_feedback_bodies_parse_or_raise_rtcp_error(body, padded):
    body += bytes(-len(body) % 4)
    first = 0x80 | 15 | (0x20 if padded and body else 0)
    data = struct.pack("!BBH", first, 205, len(body) // 4) + body
    try:
        packets = rtcp.parse_compound(data)
    except rtcp.RtcpError:
        return
    for packet in packets:
        assert all(a is None or isinstance(a, float) for a in packet.arrivals)


@FUZZ
@given(arrival_lists, st.data())
def test_mutated_feedback_never_raises_anything_else_and_the_estimator_takes_it(arrivals, data):
    packet = bytearray(rtcp.build_transport_feedback(1, 2, 0, 0, arrivals))
    for _ in range(data.draw(st.integers(1, 4))):
        packet[data.draw(st.integers(4, len(packet) - 1))] = data.draw(st.integers(0, 255))
    _pub, view, _sock, _consumer = viewer_rig()
    view.receive(bytes(packet), VIEWER_ADDR, 11.0)  # must not raise
    assert view.bandwidth.min_bps <= view.bandwidth.estimate_bps <= view.bandwidth.max_bps


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.floats(0, 0.2)), max_size=300))
def test_any_arrival_order_gives_feedback_that_parses(packets):
    pub = Publisher()
    for twcc, dt in packets:
        pub.now += dt
        pub.transport.twcc_receiver.on_received(twcc, 1, pub.now)
    for data in pub.transport.twcc_receiver.feedback():
        assert len(data) <= 1200
        [fb] = rtcp.parse_compound(data)
        assert 0 < len(fb.arrivals) <= MAX_STATUSES
