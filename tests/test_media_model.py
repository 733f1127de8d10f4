"""Producer -> consumer forwarding with no sockets: two plain transports wired together.

Each test feeds a publisher's RTP/RTCP into one transport and reads what the other sends
its receiver, with a clock that is a number. What a receiver's jitter buffer and decoder
depend on is checked exactly: sequence numbers and timestamps continue across a pause,
an SSRC change and an encoding switch; retransmissions fill holes; feedback is relayed
and throttled.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from sfu import rtcp, sdp
from sfu.codecs import vp8_picture_ids
from sfu.consumer import PipeConsumer, SimpleConsumer, SimulcastConsumer
from sfu.feedback import FeedbackUnit
from sfu.nack import build_nack
from sfu.negotiation import encodings_of
from sfu.plain_transport import PlainTransport
from sfu.rtp import ExtensionLayout, RtpPacket, parse_rtp, read_map
from sfu.sdp import URI_TWCC
from sfu.streams import Encoding
from sfu.timers import TimerQueue
from tests import sansio
from tests.sansio import (
    PUBLISH_EXTENSIONS,
    PUBLISHER_ADDR,
    VIEWER_ADDR,
    VP8_DELTA,
    VP8_KEY,
    rtp,
    rtx,
)

MID = [(4, b"0")]  # the publisher's mid extension (id 4)


def rid(name: str) -> list[tuple[int, bytes]]:
    return [(4, b"0"), (10, name.encode())]


class Rig:
    """A publisher's plain transport with one producer, and viewers on their own."""

    def __init__(self, encodings: list[Encoding] | None = None, kind: str = "video") -> None:
        self.now = 10.0
        self.timers = TimerQueue()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.pub, self.pub_sock = sansio.plain(
            self.timers,
            "pub",
            PUBLISHER_ADDR,
            events=self.events,
            extensions=PUBLISH_EXTENSIONS,
            now=self.now,
        )
        self.producer = sansio.producer(self.pub, kind, encodings)

    def viewer(
        self, name: str = "view", rtx: bool = True
    ) -> tuple[PlainTransport, sansio.FakeSocket, SimpleConsumer]:
        transport, sock = sansio.plain(
            self.timers, name, VIEWER_ADDR, events=self.events, now=self.now
        )
        consumer = sansio.consumer(transport, self.producer, rtx=rtx)
        return transport, sock, consumer

    def send(self, data: bytes, dt: float = 0.0) -> None:
        self.now += dt
        self.pub.receive(data, PUBLISHER_ADDR, self.now)

    def tick(self, dt: float) -> None:
        self.now += dt
        self.timers.run(self.now)

    def publisher_feedback(self) -> list[Any]:
        """RTCP the SFU sent the publisher since the last call."""
        return [p for data in self.pub_sock.take() for p in rtcp.parse_compound(data)]


def plis(packets: list[Any]) -> list[int]:
    return [
        p.media_ssrc
        for p in packets
        if isinstance(p, rtcp.RtcpPsfbPacket) and p.fmt == rtcp.RTCP_PSFB_PLI
    ]


def test_a_viewer_starts_at_a_keyframe_and_gets_its_own_numbering():
    rig = Rig()
    _view, sock, consumer = rig.viewer()
    assert plis(rig.publisher_feedback()) == [0x1111], (
        "a new viewer asks the publisher for a keyframe"
    )
    rig.send(rtp(0x1111, 99, 9000, VP8_DELTA, extensions=MID))
    assert sock.rtp() == [], "nothing before the keyframe: the viewer could not decode it"
    rig.send(rtp(0x1111, 100, 12000, VP8_KEY, extensions=MID), 0.033)
    rig.send(rtp(0x1111, 101, 12000, VP8_DELTA, marker=True, extensions=MID))
    rig.send(rtp(0x1111, 102, 15000, VP8_DELTA, extensions=MID), 0.033)
    out = sock.rtp()
    assert [p.ssrc for p in out] == [consumer.ssrc] * 3 and consumer.ssrc != 0x1111
    assert [(p.seq - out[0].seq) & 0xFFFF for p in out] == [0, 1, 2]
    assert [(p.ts - out[0].ts) & 0xFFFFFFFF for p in out] == [0, 0, 3000]
    assert [p.marker for p in out] == [0, 0x80, 0]
    assert [p.payload for p in out] == [VP8_KEY, VP8_DELTA, VP8_DELTA]


def test_pause_and_resume_keep_sequence_and_timestamps_continuous():
    rig = Rig()
    _view, sock, consumer = rig.viewer()
    rig.send(rtp(0x1111, 500, 90000, VP8_KEY, extensions=MID))
    rig.send(rtp(0x1111, 501, 93000, VP8_DELTA, extensions=MID), 0.033)
    before = sock.rtp()
    rig.producer.set_paused(True, rig.now)
    rig.publisher_feedback()
    for seq in range(502, 560):
        rig.send(rtp(0x1111, seq, 93000 + (seq - 501) * 3000, VP8_DELTA, extensions=MID), 0.033)
    assert sock.rtp() == [], "a paused producer forwards nothing"
    rig.producer.set_paused(False, rig.now)
    assert plis(rig.publisher_feedback()) == [0x1111], "resuming asks for a keyframe"
    rig.send(rtp(0x1111, 560, 93000 + 59 * 3000, VP8_DELTA, extensions=MID), 0.033)
    rig.send(rtp(0x1111, 561, 93000 + 60 * 3000, VP8_KEY, extensions=MID), 0.033)
    after = sock.rtp()
    assert len(after) == 1 and after[0].payload == VP8_KEY
    assert after[0].seq == (before[-1].seq + 1) & 0xFFFF, "no gap for the viewer to NACK"
    elapsed = (after[0].ts - before[-1].ts) & 0xFFFFFFFF
    assert elapsed == pytest.approx(60 * 0.033 * 90000, abs=2), (
        "timestamps advance with the wall clock"
    )


def test_a_late_packet_before_a_pause_does_not_make_the_resumed_numbering_repeat():
    """Reordered on the way in, 501 arrives after 502 and goes out with its own number.
    The resumed stream must continue after 502's: continuing after 501's gave the
    keyframe 502's number, and a receiver drops a packet whose number it already has."""
    rig = Rig()
    _view, sock, _consumer = rig.viewer()
    rig.send(rtp(0x1111, 500, 90000, VP8_KEY, extensions=MID))
    rig.send(rtp(0x1111, 502, 96000, VP8_DELTA, extensions=MID), 0.033)
    rig.send(rtp(0x1111, 501, 93000, VP8_DELTA, extensions=MID), 0.005)
    before = sock.rtp()
    assert [p.seq - before[0].seq for p in before] == [0, 2, 1], "the late one keeps its place"
    rig.producer.set_paused(True, rig.now)
    rig.producer.set_paused(False, rig.now)
    rig.send(rtp(0x1111, 600, 99000, VP8_KEY, extensions=MID), 0.5)
    after = sock.rtp()
    assert len(after) == 1
    assert after[0].seq == (before[0].seq + 3) & 0xFFFF, "after the highest number sent"


def test_an_ssrc_change_restarts_at_a_keyframe_and_keeps_numbering():
    rig = Rig([Encoding()])  # nothing signalled: SSRCs are learned by mid
    _view, sock, _consumer = rig.viewer()
    rig.send(rtp(0xAAAA, 10, 1000, VP8_KEY, extensions=MID))
    rig.send(rtp(0xAAAA, 11, 4000, VP8_DELTA, extensions=MID), 0.033)
    first = sock.rtp()
    rig.publisher_feedback()
    # The publisher's encoder restarts: new SSRC, new numbering.
    rig.send(rtp(0xBBBB, 40000, 777, VP8_DELTA, extensions=MID), 0.6)
    assert plis(rig.publisher_feedback()) == [0xBBBB], "a new SSRC is asked for a keyframe"
    rig.send(rtp(0xBBBB, 40001, 3777, VP8_KEY, extensions=MID), 0.033)
    rig.send(rtp(0xBBBB, 40002, 6777, VP8_DELTA, extensions=MID), 0.033)
    second = sock.rtp()
    assert [p.seq for p in second] == [(first[-1].seq + 1) & 0xFFFF, (first[-1].seq + 2) & 0xFFFF]
    assert rig.producer.streams[0].ssrc == 0xBBBB
    assert 0xAAAA not in rig.pub.streams_by_ssrc


def test_a_hole_is_nacked_and_filled_by_rtx_and_unasked_rtx_is_dropped():
    rig = Rig()
    _view, sock, _consumer = rig.viewer()
    rig.send(rtp(0x1111, 100, 0, VP8_KEY, extensions=MID))
    rig.send(rtp(0x1111, 101, 0, VP8_DELTA, extensions=MID))
    rig.send(rtp(0x1111, 103, 3000, VP8_DELTA, extensions=MID), 0.01)
    forwarded = sock.rtp()
    rig.publisher_feedback()
    rig.tick(0.02)  # past the reorder delay
    nacks = [p for p in rig.publisher_feedback() if isinstance(p, rtcp.RtcpRtpfbPacket)]
    assert [(p.media_ssrc, rtcp.nack_seqs(p)) for p in nacks] == [(0x1111, [102])]
    missing_payload = b"\x00repaired" + bytes(10)
    rig.send(rtx(0x2222, 1, 0, 102, missing_payload), 0.005)
    repaired = sock.rtp()
    assert len(repaired) == 1 and repaired[0].payload == missing_payload
    assert repaired[0].seq == (forwarded[0].seq + 2) & 0xFFFF, "it lands in the hole"
    dropped = rig.pub.counters.dropped
    rig.send(rtx(0x2222, 2, 0, 101, b"\x00duplicate"))  # never asked for (a probe, a duplicate)
    assert sock.rtp() == [] and rig.pub.counters.dropped == dropped + 1


def test_a_viewer_nack_is_answered_from_the_cache_as_rtx():
    rig = Rig()
    view, sock, consumer = rig.viewer()
    rig.send(rtp(0x1111, 100, 0, VP8_KEY, extensions=MID))
    rig.send(rtp(0x1111, 101, 3000, VP8_DELTA + b"x", extensions=MID))
    out = sock.rtp()
    rig.publisher_feedback()
    view.receive(build_nack(0x5555, consumer.ssrc, [out[1].seq]), VIEWER_ADDR, rig.now)
    (resent,) = sock.rtp()
    assert (resent.ssrc, resent.pt) == (consumer.rtx_ssrc, consumer.rtx_pt)
    assert struct.unpack_from("!H", resent.payload)[0] == out[1].seq, (
        "RFC 4588: the original seq leads"
    )
    assert resent.payload[2:] == VP8_DELTA + b"x" and resent.ts == out[1].ts
    assert view.counters.nacks_in == 1 and view.counters.retransmissions == 1
    assert rig.publisher_feedback() == [], "the publisher is not asked again"


def test_keyframe_requests_from_many_viewers_reach_the_publisher_throttled():
    rig = Rig()
    viewers = [rig.viewer(f"v{i}") for i in range(5)]
    assert plis(rig.publisher_feedback()) == [0x1111], "five joins within the interval: one PLI now"
    rig.tick(0.2)
    assert plis(rig.publisher_feedback()) == []
    rig.tick(0.31)
    assert plis(rig.publisher_feedback()) == [0x1111], "and one when the interval ends"
    rig.send(rtp(0x1111, 1, 0, VP8_KEY, extensions=MID))
    view, _sock, consumer = viewers[0]
    view.receive(
        bytes(rtcp.RtcpPsfbPacket(fmt=rtcp.RTCP_PSFB_PLI, ssrc=1, media_ssrc=consumer.ssrc)),
        VIEWER_ADDR,
        rig.now,
    )
    assert view.counters.plis_in == 1
    assert plis(rig.publisher_feedback()) == [], "0.51 s after the last PLI it waits its turn"
    rig.tick(0.5)
    assert plis(rig.publisher_feedback()) == [0x1111], (
        "a viewer's PLI is relayed once the interval allows"
    )


def test_an_encoding_switch_happens_at_a_keyframe_of_the_new_encoding():
    rig = Rig([Encoding(rid="q"), Encoding(rid="h"), Encoding(rid="f")])
    layers = {"q": 0xA0, "h": 0xB0, "f": 0xC0}
    seqs = {"q": 1000, "h": 2000, "f": 3000}

    def frame(layer: str, key: bool, ts: int, dt: float = 0.0) -> None:
        seqs[layer] += 1
        rig.send(
            rtp(
                layers[layer], seqs[layer], ts, VP8_KEY if key else VP8_DELTA, extensions=rid(layer)
            ),
            dt,
        )

    for layer in "qhf":
        frame(layer, True, 0)
    _view, sock, consumer = rig.viewer()
    assert isinstance(consumer, SimulcastConsumer) and consumer.stream.rid == "f", (
        "the best arriving layer"
    )
    rig.publisher_feedback()
    for layer in "qhf":
        frame(layer, True, 3000, 0.001)
    start = sock.rtp()
    assert len(start) == 1 and start[0].payload == VP8_KEY, "only f's keyframe reached the viewer"

    for i in range(20):  # 0.66 s of f, so the next keyframe request is not held back
        frame("f", False, 3000 + i, 0.033)
    kept = sock.rtp()
    consumer.set_preferred(0, rig.now)  # the viewer's link or screen wants the low layer
    assert plis(rig.publisher_feedback()) == [layers["q"]]
    frame("q", False, 6000, 0.033)
    frame("f", False, 6000)
    kept += sock.rtp()
    assert [p.payload for p in kept] == [VP8_DELTA] * 21, "f flows until q has a keyframe"
    frame("q", True, 9000, 0.033)
    frame("f", False, 9000)
    frame("q", False, 12000, 0.033)
    switched = sock.rtp()
    assert [p.payload for p in switched] == [VP8_KEY, VP8_DELTA], "then only q"
    assert [p.seq for p in switched] == [(kept[-1].seq + 1) & 0xFFFF, (kept[-1].seq + 2) & 0xFFFF]
    assert (switched[0].ts - kept[-1].ts) & 0xFFFFFFFF == pytest.approx(0.033 * 90000, abs=2)
    assert {p.ssrc for p in start + kept + switched} == {consumer.ssrc}, "one stream to the viewer"
    assert consumer.stream.rid == "q" and consumer.target is None


def test_simulcast_ssrcs_come_from_the_sim_group():
    offer = sdp.parse(
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:0\r\na=sendonly\r\n"
        "a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
        "a=ssrc-group:SIM 11 22 33\r\na=ssrc-group:FID 11 111\r\na=ssrc-group:FID 22 222\r\n"
        "a=ssrc-group:FID 33 333\r\n"
        + "".join(f"a=ssrc:{s} cname:x\r\n" for s in (11, 22, 33, 111, 222, 333))
    )
    encodings = encodings_of(offer.media[0])
    assert encodings == [
        Encoding(ssrc=11, rtx_ssrc=111),
        Encoding(ssrc=22, rtx_ssrc=222),
        Encoding(ssrc=33, rtx_ssrc=333),
    ]
    rig = Rig(encodings)
    _view, sock, consumer = rig.viewer()
    assert consumer.stream.ssrc == 33
    rig.send(rtp(22, 1, 0, VP8_KEY))  # signalled SSRCs need no extension to be told apart
    assert consumer.stream.ssrc == 22, "the first encoding to arrive starts the viewer"
    rig.send(rtp(33, 1, 0, VP8_KEY))
    assert consumer.stream.ssrc == 33, "and the one it wants takes over at its keyframe"
    got = sock.rtp()
    assert [p.payload for p in got] == [VP8_KEY, VP8_KEY]
    assert got[1].seq == (got[0].seq + 1) & 0xFFFF
    assert [s.stats.received for s in rig.producer.streams] == [0, 1, 1]


def test_a_pipe_carries_every_encoding_to_a_far_producer():
    """Worker A pipes a two-encoding producer over a plain transport; worker B makes a
    producer of what arrives and serves its own viewer from it."""
    rig = Rig([Encoding(ssrc=0xA1), Encoding(ssrc=0xA2)])
    pipe_out, pipe_sock = sansio.plain(rig.timers, "pipe-a", ("127.0.0.1", 9999), now=rig.now)
    pipe = PipeConsumer("pipe", rig.producer, pipe_out, ExtensionLayout({}, ""))
    pipe_out.add_consumer(pipe)
    rig.publisher_feedback()
    far_timers = TimerQueue()
    pipe_in, _ = sansio.plain(far_timers, "pipe-b", pipe_sock.local, now=rig.now)
    far = sansio.producer(pipe_in, encodings=[Encoding(ssrc=s) for s in pipe.out_ssrcs])
    viewer, viewer_sock = sansio.plain(far_timers, "far-view", VIEWER_ADDR, now=rig.now)
    far_consumer = sansio.consumer(viewer, far, rtx=False)
    assert isinstance(far_consumer, SimulcastConsumer)
    sent = []
    for seq in range(5):
        for ssrc in (0xA1, 0xA2):
            payload = VP8_KEY if seq == 0 else VP8_DELTA
            rig.send(rtp(ssrc, 700 + seq, 90 * seq, payload, marker=True), 0.001)
            sent.append((ssrc, 700 + seq, 90 * seq, payload))
    piped = [parse_rtp(d, read_map({})) for d in pipe_sock.take()]
    index = {0xA1: 0, 0xA2: 1}
    assert [(p.ssrc, p.seq, p.ts, p.payload) for p in piped] == [
        (pipe.out_ssrcs[index[s]], seq, ts, payload) for s, seq, ts, payload in sent
    ], "unchanged but for the SSRC"
    for ssrc, seq, ts, payload in sent:
        data = rtp(pipe.out_ssrcs[index[ssrc]], seq, ts, payload, marker=True)
        pipe_in.receive(data, pipe_sock.local, rig.now)
    far_out = viewer_sock.rtp()
    # The far viewer starts on the first encoding to arrive, then takes the top one at its
    # keyframe (sent right after), and stays there.
    assert [p.payload for p in far_out] == [VP8_KEY, VP8_KEY] + [VP8_DELTA] * 4
    assert far_consumer.stream.index == 1, "the far viewer ends on the top encoding"
    assert [p.seq for p in far_out] == [(far_out[0].seq + i) & 0xFFFF for i in range(6)]


def test_sender_reports_map_to_the_publisher_clock_and_rtt_uses_our_send_time():
    rig = Rig(kind="audio", encodings=[Encoding(ssrc=0x3333)])
    view, sock, consumer = rig.viewer(rtx=False)
    rig.send(rtp(0x3333, 1, 48000, b"\xfc" + bytes(40), pt=111, extensions=MID))
    sr_ntp = (3_900_000_000 << 32) | (1 << 31)  # the publisher's wall clock, unlike ours
    sr = rtcp.RtcpSrPacket(ssrc=0x3333, sender_info=rtcp.RtcpSenderInfo(sr_ntp, 48000, 1, 40))
    rig.send(bytes(sr))
    rig.tick(1.0)
    sent = sock.take()
    reports = [p for d in sent if 200 <= d[1] <= 204 for p in rtcp.parse_compound(d)]
    (ours,) = [p for p in reports if isinstance(p, rtcp.RtcpSrPacket) and p.ssrc == consumer.ssrc]
    elapsed = ours.sender_info.ntp_timestamp - sr_ntp
    assert elapsed / 2**32 == pytest.approx(1.0, abs=0.001), (
        "the publisher's NTP, moved on by the elapsed time"
    )
    assert (
        ours.sender_info.rtp_timestamp - consumer.ts_offset - 48000
    ) & 0xFFFFFFFF == pytest.approx(48000, abs=2)
    lsr = (ours.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
    block = rtcp.RtcpReceiverInfo(
        ssrc=consumer.ssrc,
        fraction_lost=12,
        packets_lost=1,
        highest_sequence=1,
        jitter=0,
        lsr=lsr,
        dlsr=65536 // 10,
    )
    rig.now += 0.25
    view.receive(bytes(rtcp.RtcpRrPacket(ssrc=9, reports=[block])), VIEWER_ADDR, rig.now)
    assert consumer.rtt == pytest.approx(0.15, abs=0.001), (
        "0.25 s since our SR, minus the 0.1 s it held it"
    )
    assert consumer.fraction_lost == 12


def test_a_report_on_the_rtx_stream_is_not_read_as_the_links_loss():
    """Chromium reports on the RTX SSRC too; its gaps are retransmissions our pacer
    dropped. A viewer whose link is clean (0 lost on the media SSRC) is not losing."""
    rig = Rig()
    view, _sock, consumer = rig.viewer()
    assert consumer.rtx_ssrc is not None

    def block(ssrc: int, lost: int) -> rtcp.RtcpReceiverInfo:
        return rtcp.RtcpReceiverInfo(
            ssrc=ssrc,
            fraction_lost=lost,
            packets_lost=lost,
            highest_sequence=1,
            jitter=0,
            lsr=0,
            dlsr=0,
        )

    rig.now += 5.0  # no transport-cc from this viewer: its reports are its loss signal
    report = rtcp.RtcpRrPacket(
        ssrc=9, reports=[block(consumer.ssrc, 0), block(consumer.rtx_ssrc, 127)]
    )
    view.receive(bytes(report), VIEWER_ADDR, rig.now)
    assert consumer.fraction_lost == 0
    assert view.bandwidth.loss == 0.0
    report = rtcp.RtcpRrPacket(
        ssrc=9, reports=[block(consumer.rtx_ssrc, 0), block(consumer.ssrc, 64)]
    )
    view.receive(bytes(report), VIEWER_ADDR, rig.now + 1.0)
    assert consumer.fraction_lost == 64, "the media stream's report is the loss"
    assert view.bandwidth.loss == pytest.approx(0.25)


def test_a_probe_for_the_top_encoding_keeps_every_encoding_on_its_way_running():
    """A viewer on the lowest encoding probes for the top one; if the probe carries less
    than its goal the viewer moves up one step, onto the middle encoding, which must not
    be paused at the publisher then (resuming one took 2-3 s of a weak-link viewer's
    climb back)."""
    from sfu.layers import Track

    rig = Rig([Encoding(ssrc=0xA1), Encoding(ssrc=0xA2), Encoding(ssrc=0xA3)])
    view, _sock, consumer = rig.viewer()
    assert isinstance(consumer, SimulcastConsumer)
    consumer.set_preferred(0, rig.now)
    assert rig.producer.layer_demand() == [True, False, False], "nobody needs the others"
    view.layers._maybe_probe(
        budget=200_000.0,
        audio=40_000.0,
        videos=[consumer],
        tracks=[Track((150_000.0, 500_000.0, 1_500_000.0), 2)],
        roomy=[0],
        holding=False,
        now=rig.now,
        currents=[0],
    )
    assert view.layers.probe_goal > 0
    assert rig.producer.layer_demand() == [True, True, True]


def test_a_simulcast_publisher_is_limited_by_its_viewers_screens_not_their_links():
    """The limit (REMB) a publisher gets covers every encoding up to the highest a viewer
    would take on a good link: a viewer whose link carries only the lowest one now keeps
    the top one coming (a WHIP publisher starved of it climbed back at 8 %/s, 10-20 s);
    a viewer that wants only thumbnails lets the limit fall to the floor."""
    from sfu.layers import PUBLISHER_FLOOR, Preferences, publisher_limit

    rig = Rig([Encoding(ssrc=0xA1), Encoding(ssrc=0xA2), Encoding(ssrc=0xA3)])
    view, _sock, consumer = rig.viewer()
    assert isinstance(consumer, SimulcastConsumer)
    cap = 2_500_000
    consumer.set_preferred(0, rig.now)  # its link carries the lowest encoding only
    assert publisher_limit(rig.pub, cap) == cap, "150k + 500k + 1.5M, with headroom"
    view.layers.preferences = Preferences(max_layer=0)  # a thumbnail
    assert publisher_limit(rig.pub, cap) == PUBLISHER_FLOOR
    view.layers.preferences = Preferences(max_layer=1)
    assert publisher_limit(rig.pub, cap) == int((150_000 + 500_000) * 1.25)


def test_the_loss_a_layer_decision_reads_is_the_videos():
    """Chromium reports on audio every five seconds and on video every second: a link
    that recovered must not read as lossy from an old audio report."""
    rig = Rig()
    view, _sock, video = rig.viewer()
    audio_rig = Rig(kind="audio", encodings=[Encoding(ssrc=0x3333)])
    audio = sansio.consumer(view, audio_rig.producer, rtx=False)
    video.activate(rig.now)
    audio.fraction_lost = 20  # the last audio report, from the weak spell
    video.fraction_lost = 0
    assert view.layers._loss() == 0
    video.fraction_lost = 12
    assert view.layers._loss() == 12


def test_reports_are_compound_and_start_with_a_report():
    rig = Rig()
    rig.send(rtp(0x1111, 1, 0, VP8_KEY, extensions=MID))
    rig.publisher_feedback()
    rig.tick(1.0)
    (compound,) = rig.pub_sock.take()
    parts = rtcp.parse_compound(compound)
    assert isinstance(parts[0], rtcp.RtcpRrPacket) and parts[0].reports[0].ssrc == 0x1111
    remb = [p for p in parts if isinstance(p, rtcp.RtcpPsfbPacket) and p.fmt == rtcp.RTCP_PSFB_APP]
    assert rtcp.unpack_remb_fci(remb[0].fci) == (1_000_000, [0x1111])


def test_a_feedback_unit_sees_every_sent_transport_wide_sequence_number():
    class Recorder(FeedbackUnit):
        def __init__(self, transport: Any) -> None:
            super().__init__(transport)
            self.sent: list[tuple[int, int, float]] = []

        def on_sent(self, twcc_seq: int, size: int, now: float) -> None:
            self.sent.append((twcc_seq, size, now))

    rig = Rig()
    view, sock, consumer = rig.viewer()
    recorder = Recorder(view)
    view.add_unit(recorder)
    consumer.layout = ExtensionLayout({URI_TWCC: 3}, "0")
    consumer.stream.detach(consumer)
    consumer.stream.attach(consumer)
    rig.send(rtp(0x1111, 1, 0, VP8_KEY, extensions=MID))
    rig.send(rtp(0x1111, 2, 0, VP8_DELTA, extensions=MID), 0.01)
    out = [d for d in sock.take() if not 192 <= d[1] <= 223]
    numbers = [struct.unpack_from("!H", d, 12 + 4 + 1)[0] for d in out]
    assert [n for n, _, _ in recorder.sent] == numbers == [1, 2]
    assert [size for _, size, _ in recorder.sent] == [len(d) for d in out]


def test_closing_a_producer_closes_its_consumers_and_tells_the_viewer_transport():
    rig = Rig()
    view, _sock, consumer = rig.viewer()
    rig.producer.close()
    assert consumer.closed and view.consumers == []
    assert ("consumer_closed", {"session": "view", "consumer": consumer.id}) in rig.events
    assert rig.producer.streams[0].groups == []


def test_packets_from_another_address_are_dropped():
    rig = Rig()
    _view, sock, _consumer = rig.viewer()
    rig.pub.receive(rtp(0x1111, 1, 0, VP8_KEY, extensions=MID), ("127.0.0.1", 1234), rig.now)
    assert sock.rtp() == [] and rig.pub.counters.dropped == 1


def test_parsed_packets_are_what_the_model_forwards():
    """The test helper's packets parse as a publisher's would (guards the other tests)."""
    packet = parse_rtp(
        rtp(5, 6, 7, VP8_KEY, marker=True, extensions=rid("h")), read_map(PUBLISH_EXTENSIONS)
    )
    assert isinstance(packet, RtpPacket)
    assert (packet.ssrc, packet.seq, packet.ts, packet.marker, packet.mid, packet.rid) == (
        5,
        6,
        7,
        0x80,
        b"0",
        b"h",
    )


def vp8(key: bool, picture_id: int, tl0: int) -> bytes:
    """A VP8 packet with a 15-bit PictureID and TL0PICIDX in its descriptor."""
    descriptor = bytes([0x90, 0xC0, 0x80 | picture_id >> 8, picture_id & 0xFF, tl0])
    return descriptor + (VP8_KEY if key else VP8_DELTA)[1:]


def test_picture_ids_continue_across_an_encoding_switch():
    """A decoder tracks VP8 PictureID/TL0PICIDX for its references: the encodings number
    theirs independently, so a switch must not make them jump."""
    rig = Rig([Encoding(rid="q"), Encoding(rid="f")])
    ssrcs = {"q": 0xA0, "f": 0xC0}
    seqs = {"q": 100, "f": 500}
    pids = {"q": 20000, "f": 7}  # far apart, as two encoders start anywhere
    tl0s = {"q": 250, "f": 3}

    def frame(layer: str, key: bool, ts: int, dt: float = 0.0) -> None:
        seqs[layer] += 1
        pids[layer] = (pids[layer] + 1) & 0x7FFF
        tl0s[layer] = (tl0s[layer] + 1) & 0xFF
        payload = vp8(key, pids[layer], tl0s[layer])
        rig.send(rtp(ssrcs[layer], seqs[layer], ts, payload, extensions=rid(layer)), dt)

    frame("q", True, 0)
    frame("f", True, 0)
    _view, sock, consumer = rig.viewer()
    rig.publisher_feedback()
    frame("q", True, 3000, 0.001)
    frame("f", True, 3000)
    for i in range(20):
        frame("q", False, 6000 + i, 0.033)
        frame("f", False, 6000 + i)
    consumer.set_preferred(0, rig.now)
    frame("q", True, 9000, 0.033)
    frame("f", False, 9000)
    frame("q", False, 12000, 0.033)
    seen = [vp8_picture_ids(p.payload) for p in sock.rtp()]
    out_pids = [pid for _pos, pid, _tl0_pos, _tl0 in seen]
    out_tl0s = [tl0 for _pos, _pid, _tl0_pos, tl0 in seen]
    assert len(out_pids) == 23, "f's keyframe and 20 frames, then q's keyframe and a frame"
    assert all((b - a) & 0x7FFF == 1 for a, b in zip(out_pids, out_pids[1:], strict=False))
    assert all((b - a) & 0xFF == 1 for a, b in zip(out_tl0s, out_tl0s[1:], strict=False))
    assert out_pids[0] == pids["f"] - 21 & 0x7FFF, "the first encoding's own ids, untouched"


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_a_long_consultation_keeps_flowing_past_the_sequence_number_half_range(kind):
    """A viewer that started at sequence number S must still get packet S + 32,768 and on:
    audio at 50 packets/s reaches that 11 minutes in, with no new start in between (a
    stable call has no keyframe requests). Once it went silent there for 11 minutes."""
    rig = Rig(kind=kind)
    _view, sock, consumer = rig.viewer()
    ssrc = 0x1111
    first = 60000  # the start sits near the wrap as well
    payload = VP8_KEY if kind == "video" else b"\xfc\x01\x02"
    pt = 96 if kind == "video" else 111
    rig.send(rtp(ssrc, first, 0, payload, pt=pt, extensions=MID))
    count = 70_000
    gaps = []
    [start] = sock.rtp()
    last = start.seq
    delta = VP8_DELTA if kind == "video" else payload
    for i in range(1, count):
        rig.send(rtp(ssrc, first + i, i * 960, delta, pt=pt, extensions=MID), 0.02)
        if i % 1000 == 0:
            got = sock.rtp()
            if len(got) != 1000 or (got[0].seq - last) & 0xFFFF != 1:
                gaps.append((i, len(got)))
            if got:
                last = got[-1].seq
    assert gaps == [], f"packets missing after the start (at packet, forwarded of 1000): {gaps}"
    assert consumer.packets == count
