"""VP8 temporal layers dropped for one viewer, with no sockets (the media-model rig).

A publisher's encoding carries frames in the usual three-layer pattern (T0 T2 T1 T2,
two packets a frame); a viewer limited to T0 must get only T0 frames, numbered as if
nothing had been left out: consecutive sequence numbers (a gap would be NACKed as a
loss), consecutive PictureIDs (libwebrtc holds a frame while an earlier one is missing),
TL0PICIDX as sent. NACKs for the new numbers must bring back the right packets.
"""

from __future__ import annotations

import random
import struct

import pytest

from sfu import rtcp
from sfu.codecs import vp8_picture_ids, vp8_temporal
from sfu.consumer import SimulcastConsumer
from sfu.nack import build_nack
from sfu.streams import Encoding
from tests.sansio import VIEWER_ADDR, VP8_DELTA, VP8_KEY, rtp
from tests.test_media_model import Rig, rid

PATTERN = (0, 2, 1, 2)
SSRC = 0xA0


def descriptor(start: bool, pid: int, tl0: int, tid: int, sync: bool) -> bytes:
    """X, S; I (15-bit PictureID), L, T; TID and Y."""
    return bytes(
        [0x90 if start else 0x80, 0xE0, 0x80 | pid >> 8, pid & 0xFF, tl0, tid << 6 | sync << 5]
    )


def test_the_descriptor_gives_tid_and_layer_sync():
    assert vp8_temporal(descriptor(True, 300, 7, 2, True) + b"\x01") == (2, True)
    assert vp8_temporal(descriptor(False, 300, 7, 1, False) + b"\x01") == (1, False)
    # 7-bit PictureID, no TL0PICIDX, T set: the T byte moves up.
    assert vp8_temporal(bytes([0x90, 0xA0, 0x05, 0x40, 0x00])) == (1, False)
    # K alone (no T): no temporal layer.
    assert vp8_temporal(bytes([0x90, 0x90, 0x05, 0x40, 0x00])) == (-1, False)
    # No extension byte at all, as aiortc sends without X: none.
    assert vp8_temporal(bytes([0x10, 0x00, 0x00, 0x9D])) == (-1, False)
    assert vp8_temporal(b"") == (-1, False)
    assert vp8_temporal(bytes([0x90, 0xE0, 0x80])) == (-1, False), "truncated"
    rng = random.Random(3)
    for _ in range(2000):  # never raises on garbage
        tid, _sync = vp8_temporal(bytes(rng.randrange(256) for _ in range(rng.randrange(8))))
        assert -1 <= tid <= 3


class Publisher:
    """Frames of one encoding in the T0 T2 T1 T2 pattern, each two packets with unique
    payloads; layer sync on the first T1 and T2 after each T0."""

    def __init__(self, rig: Rig, seq: int) -> None:
        self.rig = rig
        self.seq = seq
        self.pid = 0x7FF0  # wraps too
        self.tl0 = 250
        self.frame = 0
        self.ts = 0
        self.sent: dict[int, bytes] = {}  # source seq -> payload
        self.tids: dict[int, int] = {}
        self.pad = (12, 12, 12)  # payload bytes after the header, per TID

    def next_frame(self, key: bool = False, skip: int | None = None, dt: float = 0.033) -> None:
        tid = 0 if key else PATTERN[self.frame % 4]
        if tid == 0:
            self.tl0 = (self.tl0 + 1) & 0xFF
        self.pid = (self.pid + 1) & 0x7FFF
        sync = tid > 0 and self.frame % 4 in (1, 2)
        self.ts += 3000
        for part in range(2):
            self.seq = (self.seq + 1) & 0xFFFF
            head = descriptor(part == 0, self.pid, self.tl0, tid, sync)
            body = VP8_KEY[1:] if key and part == 0 else struct.pack("!HI", self.seq, 0)
            payload = head + body + bytes(self.pad[tid])
            self.sent[self.seq] = payload
            self.tids[self.seq] = tid
            if self.seq != skip:
                data = rtp(SSRC, self.seq, self.ts, payload, marker=part == 1, extensions=rid("q"))
                self.rig.send(data, dt if part == 0 else 0.0)
        self.frame += 1


def setup(seq: int = 0xFFD0) -> tuple[Rig, Publisher, object, object, SimulcastConsumer]:
    rig = Rig([Encoding(rid="q"), Encoding(rid="f")])
    publisher = Publisher(rig, seq)
    publisher.next_frame(key=True)
    view, sock, consumer = rig.viewer()
    assert isinstance(consumer, SimulcastConsumer)
    rig.publisher_feedback()
    publisher.next_frame(key=True)
    return rig, publisher, view, sock, consumer


def continuous(values: list[int], mask: int) -> bool:
    return all((b - a) & mask == 1 for a, b in zip(values, values[1:], strict=False))


def test_a_viewer_limited_to_t0_sees_no_gaps_across_a_sequence_wrap():
    rig, publisher, _view, sock, consumer = setup()
    for _ in range(3):
        publisher.next_frame()
    before = sock.rtp()
    assert len(before) == 8, "the keyframe and three frames, all layers"
    consumer.set_max_temporal(0)
    for _ in range(40):  # the source sequence numbers wrap in here
        publisher.next_frame()
    after = sock.rtp()
    assert len(after) == 20, "one frame in four: the T0 ones, two packets each"
    sources = [struct.unpack_from("!H", p.payload, 6)[0] for p in after]
    assert {publisher.tids[s] for s in sources} == {0}
    packets = before + after
    assert continuous([p.seq for p in packets], 0xFFFF), "dropped packets leave no gap"
    pids = [vp8_picture_ids(p.payload)[1] for p in packets[::2]]
    assert continuous(pids, 0x7FFF), "nor dropped frames a PictureID gap"
    tl0s = [vp8_picture_ids(p.payload)[3] for p in after[::2]]
    assert continuous(tl0s, 0xFF), "TL0PICIDX as sent: every T0 frame goes"
    assert vp8_temporal(after[0].payload) == (0, False)


def test_nacks_for_renumbered_packets_bring_back_the_right_originals():
    rig, publisher, view, sock, consumer = setup()
    consumer.set_max_temporal(1)
    for _ in range(12):
        publisher.next_frame()
    out = sock.rtp()
    assert len(out) == 2 * (1 + 6), "the keyframe, then the T0 and T1 frames (6 of 12)"
    rig.publisher_feedback()
    asked = [out[-1].seq, out[5].seq, out[10].seq]
    view.receive(build_nack(0x5555, consumer.ssrc, asked), VIEWER_ADDR, rig.now)
    resent = {struct.unpack_from("!H", p.payload)[0]: p.payload[2:] for p in sock.rtp()}
    assert sorted(resent) == sorted(asked)
    by_seq = {p.seq: p.payload for p in out}
    for seq in asked:
        assert resent[seq] == by_seq[seq], "the same packet, ids rewritten as first sent"


def test_a_late_packet_gets_the_number_it_would_have_had():
    """The publisher's retransmission of a lost T0 packet arrives after frames were
    dropped since: it fills the viewer's hole instead of landing elsewhere."""
    rig, publisher, _view, sock, consumer = setup()
    consumer.set_max_temporal(0)
    publisher.next_frame()  # T0 at frame index 0? the pattern continues from the keyframes
    while PATTERN[publisher.frame % 4] != 0:
        publisher.next_frame()
    lost = (publisher.seq + 2) & 0xFFFF  # the second packet of the next (T0) frame
    publisher.next_frame(skip=lost)
    for _ in range(6):
        publisher.next_frame()
    got = sock.rtp()
    seqs = [p.seq for p in got]
    hole = [s for s in range(seqs[0], seqs[0] + len(seqs) + 1) if s & 0xFFFF not in seqs]
    assert len(hole) == 1, "the viewer sees one hole: the lost packet"
    rig.send(rtp(SSRC, lost, publisher.ts, publisher.sent[lost], extensions=rid("q")))
    (filled,) = sock.rtp()
    assert filled.seq == hole[0] & 0xFFFF
    assert vp8_picture_ids(filled.payload)[1] == vp8_picture_ids(got[0].payload)[1] + 1 & 0x7FFF


def test_going_up_waits_for_a_layer_sync_frame_one_layer_at_a_time():
    _rig, publisher, _view, sock, consumer = setup()
    consumer.set_max_temporal(0)
    for _ in range(8):
        publisher.next_frame()
    sock.rtp()
    consumer.set_max_temporal(2)
    tids = []
    for _ in range(8):
        publisher.next_frame()
        tids.append([vp8_temporal(p.payload)[0] for p in sock.rtp()][:1])
    # Frames: T1(sync) T2 T0 T2(sync) T1(sync) T2 T0 T2(sync): T1 comes up at its sync
    # frame, T2 not at a frame without sync, but at its next sync frame.
    assert tids == [[1], [], [0], [2], [1], [2], [0], [2]], tids
    consumer.set_max_temporal(1)
    publisher.next_frame()
    publisher.next_frame()
    publisher.next_frame()
    sent = [vp8_temporal(p.payload)[0] for p in sock.rtp()]
    assert sent == [1, 1, 0, 0], "down at the next frame: T1, (T2 dropped), T0"
    consumer.set_max_temporal(0)
    publisher.next_frame()
    publisher.next_frame(key=True)
    consumer.set_max_temporal(2)
    sock.rtp()
    publisher.next_frame(key=True)
    for _ in range(3):
        publisher.next_frame()
    assert len(sock.rtp()) == 8, "a keyframe brings every layer back at once"


def test_a_thin_link_gets_t0_of_the_lowest_encoding_rather_than_no_video():
    """The layer choice's last steps before pausing video are the lowest encoding's lower
    temporal layers, priced at what each TID measures."""
    rig = Rig([Encoding(rid="q"), Encoding(rid="f")])
    low = Publisher(rig, 100)
    low.pad = (600, 300, 150)  # T0 frames cost the most (they carry the most change)
    top_seq = 5000

    def second(with_reports: bool = False) -> None:
        nonlocal top_seq
        for i in range(30):
            low.next_frame(key=low.frame % 30 == 0, dt=0.0)
            top_seq += 1
            payload = (VP8_KEY if i == 0 else VP8_DELTA) + bytes(1500)
            rig.send(rtp(0xC0, top_seq, low.ts, payload, marker=True, extensions=rid("f")))
            rig.tick(1 / 30)
            if with_reports and i % 15 == 0:
                report = rtcp.RtcpReceiverInfo(
                    ssrc=consumer.ssrc,
                    fraction_lost=30,  # 12 %: the link is full
                    packets_lost=10,
                    highest_sequence=consumer.last_seq,
                    jitter=0,
                    lsr=0,
                    dlsr=0,
                )
                view.receive(rtcp.receiver_report(9, [report]), VIEWER_ADDR, rig.now)
                view.receive(rtcp.remb(9, 85_000, [consumer.ssrc]), VIEWER_ADDR, rig.now)

    second()
    view, sock, consumer = rig.viewer()
    assert isinstance(consumer, SimulcastConsumer)
    for _ in range(3):
        second()
    assert consumer.stream.rid == "f" and consumer.max_temporal == 3, "a good link: the top"
    q = rig.producer.streams[0]
    assert q.temporal_layers == 3
    t0, t01, full = q.tid_rates
    assert t0 < t01 < full and t0 == pytest.approx(full / 2, rel=0.15), q.tid_rates
    for _ in range(4):  # the viewer reports 85 kbit/s and heavy loss
        second(with_reports=True)
    assert consumer.stream.rid == "q" and consumer.max_temporal == 0, (
        "T0 (about 70 kbit/s) fits; T0+T1 (about 100) does not"
    )
    assert not view.layers.video_paused
    sock.rtp()
    second(with_reports=True)
    tids = {vp8_temporal(p.payload)[0] for p in sock.rtp()}
    assert tids == {0}, "the viewer gets T0 frames only"


class ThinLinkRig:
    """A publisher of q (three temporal layers; T0 frames the dearest) and f at 30 fps,
    one viewer; each :meth:`second` is a second of media, with the viewer's receiver
    report and REMB twice in it when ``remb`` is given."""

    def __init__(self) -> None:
        self.rig = Rig([Encoding(rid="q"), Encoding(rid="f")])
        self.low = Publisher(self.rig, 100)
        self.low.pad = (600, 300, 150)
        self.top_seq = 5000
        self.second()
        self.view, self.sock, consumer = self.rig.viewer()
        assert isinstance(consumer, SimulcastConsumer)
        self.consumer = consumer

    def second(self, remb: int | None = None, loss: int = 0) -> None:
        for i in range(30):
            self.low.next_frame(key=self.low.frame % 30 == 0, dt=0.0)
            self.top_seq += 1
            payload = (VP8_KEY if i == 0 else VP8_DELTA) + bytes(1500)
            data = rtp(0xC0, self.top_seq, self.low.ts, payload, marker=True, extensions=rid("f"))
            self.rig.send(data)
            self.rig.tick(1 / 30)
            if remb is not None and i % 15 == 0:
                consumer = self.consumer
                report = rtcp.RtcpReceiverInfo(
                    ssrc=consumer.ssrc,
                    fraction_lost=loss,
                    packets_lost=0,
                    highest_sequence=consumer.last_seq,
                    jitter=0,
                    lsr=0,
                    dlsr=0,
                )
                now = self.rig.now
                self.view.receive(rtcp.receiver_report(9, [report]), VIEWER_ADDR, now)
                self.view.receive(rtcp.remb(9, remb, [consumer.ssrc]), VIEWER_ADDR, now)


def test_a_dip_keeps_the_full_frame_rate_and_a_temporal_step_is_undone_quickly():
    """A weak-link run spent 12 s at half the frame rate after one dip of the estimate.
    A temporal step now needs a lasting shortfall on the lowest encoding (as pausing
    does); once that fits again it comes back after the short temporal hold, while the
    change of encoding keeps its long one."""
    from sfu.layers import HOLD_AFTER_DOWN, PAUSE_CONFIRM, TEMPORAL_HOLD

    link = ThinLinkRig()
    consumer = link.consumer
    for _ in range(3):
        link.second()
    assert consumer.stream.rid == "f" and consumer.max_temporal == 3
    # 85 kbit/s and 4 % loss: q at 30 fps (~150 kbit/s) is too much.
    for _ in range(PAUSE_CONFIRM - 2):
        link.second(remb=85_000, loss=10)
    assert consumer.preferred == 0, "down to the lowest encoding"
    assert consumer.max_temporal == 3, "a short dip: still every frame"
    for _ in range(PAUSE_CONFIRM - 1):  # counted afresh on the smaller encoding
        link.second(remb=85_000, loss=10)
    assert consumer.max_temporal == 3
    link.rig.events.clear()
    link.second(remb=85_000, loss=10)
    assert consumer.max_temporal < 3, "a lasting shortfall: a temporal step"
    step = temporal_events(link.rig.events)
    assert step == [(consumer.max_temporal, "q")], "the viewer hears of the lower frame rate"
    down_at = link.rig.now
    while consumer.max_temporal < 3:
        link.second(remb=400_000)
        assert link.rig.now - down_at < TEMPORAL_HOLD + 2.5, "back to the full frame rate"
    assert link.rig.now - down_at < HOLD_AFTER_DOWN
    assert consumer.stream.rid == "q", "the encoding's own hold still stands"
    assert temporal_events(link.rig.events)[-1] == (3, "q"), "and of the full one"


def test_the_loss_that_sent_a_viewer_down_does_not_also_take_a_temporal_step():
    """Heavy loss sends a viewer down from the top encoding at once; the next reports
    still speak of that encoding's flood of the link. Weak-link runs took a temporal step
    on them a second later and stayed at half the frame rate for 15-21 s. The lowest
    encoding has to show heavy loss of its own."""
    from sfu.layers import DOWN_CONFIRM

    link = ThinLinkRig()
    consumer = link.consumer
    for _ in range(3):
        link.second()
    assert consumer.stream.rid == "f"
    for _ in range(4):
        link.second(remb=85_000, loss=60)  # 23 %
        if consumer.preferred == 0:
            break
    assert consumer.preferred == 0, "down at once on heavy loss"
    layers = link.view.layers
    assert layers.probe_ceiling > 300_000, "what it was sent bounds the 2x probes back up"
    link.second(remb=85_000, loss=60)
    assert consumer.max_temporal == 3, "the loss was the top encoding's: every frame"
    for _ in range(DOWN_CONFIRM):
        link.second(remb=85_000, loss=60)
    assert consumer.max_temporal < 3, "heavy loss on the lowest encoding too: a step"


def temporal_events(events: list) -> list[tuple[int, str]]:
    """The ``layer`` events that changed only the temporal layers: (temporal, rid)."""
    return [
        (data["temporal"], data["rid"])
        for name, data in events
        if name == "layer" and data["change"] == "temporal"
    ]


def test_no_temporal_step_while_feedback_shows_the_link_carrying_the_full_rate():
    """After a weak spell GCC's estimate climbs 8 %/s from where it fell: it may read
    85 kbit/s while transport-cc acknowledges all of the lowest encoding's ~150 kbit/s,
    with no delay growth. That is the estimator catching up, not a link too thin for the
    full frame rate; once the acknowledgements fall short, the step is taken."""
    from sfu.layers import PAUSE_CONFIRM

    link = ThinLinkRig()
    consumer = link.consumer
    bandwidth = link.view.bandwidth
    sent_at = link.rig.now

    def second(acked_share: float) -> None:
        """A second of media at 85 kbit/s of estimate; feedback every 100 ms for what
        the viewer was sent, ``acked_share`` of it arriving, evenly spaced."""
        nonlocal sent_at
        for _ in range(10):
            sent = sum(len(p.payload) + 40 for p in link.sock.rtp())
            for _ in range(3):
                link.rig.tick(1 / 30)
                link.low.next_frame(key=link.low.frame % 30 == 0, dt=0.0)
            sent += sum(len(p.payload) + 40 for p in link.sock.rtp())
            packets = max(1, sent // 1000)
            results = []
            for i in range(packets):
                at = sent_at + i * 0.1 / packets
                results.append((at, 1000, at + 0.05 if i < packets * acked_share else None))
            sent_at += 0.1
            bandwidth.on_packets(results, link.rig.now)
            bandwidth.delay_bps = bandwidth.loss_bps = 85_000.0  # the estimate, held low

    for _ in range(3):
        link.second()  # f, then the viewer's first decisions without feedback
    consumer.set_preferred(0, link.rig.now)  # already down on the lowest encoding
    for _ in range(PAUSE_CONFIRM + 2):
        second(acked_share=1.0)
    assert link.view.estimate_source == "twcc" and link.view.layers.budget == 85_000
    assert consumer.max_temporal == 3, "the link carries q at its full frame rate"
    for _ in range(PAUSE_CONFIRM + 1):
        second(acked_share=0.6)
    assert consumer.max_temporal < 3, "40 % lost: a temporal step"


def test_an_encoding_above_the_viewers_is_priced_at_its_peak():
    """A weak-link run moved its viewer onto the medium encoding at the low rate the
    publisher sent it while nobody watched it, then back down as it grew (and held 8 s
    there). Above the viewer's own encoding, the price is the peak; its own is measured."""
    from sfu.layers import layer_rates

    link = ThinLinkRig()
    streams = link.rig.producer.streams
    for _ in range(3):
        link.second()
        layer_rates(streams, link.rig.now)  # measured once a second, as decisions do
    peak = streams[1].peak_bitrate
    assert peak > 300_000
    # Nobody watches f: the publisher sends it at about half its rate.
    for _ in range(5):
        for _ in range(30):
            link.top_seq += 1
            payload = VP8_DELTA + bytes(800)
            data = rtp(0xC0, link.top_seq, link.low.ts, payload, marker=True, extensions=rid("f"))
            link.rig.send(data, 0.0)
            link.low.next_frame(key=False, dt=0.0)
            link.rig.tick(1 / 30)
        below = layer_rates(streams, link.rig.now, watched=0)
        assert below[1] >= 0.85 * peak, "to a viewer of q: f at its peak (decaying 2 %/s)"
    on_it = layer_rates(streams, link.rig.now, watched=1)
    assert on_it[1] < 0.7 * peak, "to a viewer of f: what it measures"
