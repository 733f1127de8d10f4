"""Bounded retransmission and the pacer, with two plain transports back to back and a
numeric clock (tests/sansio.py, as in tests/test_media_model.py).

What a viewer on a weak link would notice: a NACK storm for the same packets gives one
resend per round trip, not one per NACK; packets it can no longer use (older than a second,
or older than the keyframe it already has) are not resent; with pacing on, audio always
goes, video over budget waits briefly then is dropped, and retransmissions go ahead of
queued video and are dropped first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sfu import rtcp
from sfu.nack import build_nack
from sfu.pacer import Pacer
from sfu.timers import TimerQueue
from tests import sansio
from tests.sansio import PUBLISHER_ADDR, VIEWER_ADDR, VP8_DELTA, VP8_KEY, rtp

MID = [(4, b"0")]


class Rig:
    def __init__(self, pacing: bool = False) -> None:
        self.now = 10.0
        self.timers = TimerQueue()
        settings = dataclasses.replace(sansio.SETTINGS, pacing=pacing)
        self.orig = sansio.SETTINGS
        sansio.SETTINGS = settings  # plain() reads it when it makes the context
        try:
            self.pub, _ = sansio.plain(
                self.timers, "pub", PUBLISHER_ADDR, extensions=sansio.PUBLISH_EXTENSIONS
            )
            self.producer = sansio.producer(self.pub)
            self.view, self.sock = sansio.plain(self.timers, "view", VIEWER_ADDR, now=self.now)
        finally:
            sansio.SETTINGS = self.orig
        self.consumer = sansio.consumer(self.view, self.producer)
        self.seq = 100

    def publish(self, count: int, dt: float = 0.01, key: bool = False) -> list[Any]:
        for i in range(count):
            self.now += dt
            payload = VP8_KEY if key and i == 0 else VP8_DELTA
            self.pub.receive(
                rtp(0x1111, self.seq, self.seq * 3000, payload, extensions=MID),
                PUBLISHER_ADDR,
                self.now,
            )
            self.seq += 1
        return self.sock.rtp()

    def big_packet(self) -> list[Any]:
        """One 1 kB video packet from the publisher now; what the viewer was sent."""
        self.pub.receive(
            rtp(0x1111, self.seq, 0, VP8_DELTA + bytes(1000), extensions=MID),
            PUBLISHER_ADDR,
            self.now,
        )
        self.seq += 1
        return self.sock.rtp()

    def nack(self, seqs: list[int], dt: float = 0.0) -> list[Any]:
        self.now += dt
        self.view.receive(build_nack(0x5555, self.consumer.ssrc, seqs), VIEWER_ADDR, self.now)
        return self.sock.rtp()


def test_a_nack_storm_gets_one_resend_per_round_trip():
    rig = Rig()
    out = rig.publish(10, key=True)
    lost = [out[3].seq, out[4].seq]
    rig.view.bandwidth.on_rtt(0.1)
    resends = 0
    for _ in range(50):  # 50 NACKs for the same two packets over 0.25 s
        resends += len(rig.nack(lost, 0.005))
    assert resends == 2 * 3, "at 0, 0.1 and 0.2 s: one per RTT per packet"
    responder = next(u for u in rig.view.units if type(u).__name__ == "NackResponder")
    assert responder.suppressed == 100 - 6


def test_the_round_trip_window_has_a_floor():
    rig = Rig()
    out = rig.publish(5, key=True)
    rig.view.bandwidth.on_rtt(0.001)
    counts = [len(rig.nack([out[2].seq], 0.005)) for _ in range(8)]
    assert sum(counts) == 2, "20 ms floor: at 0 and 20 ms of 40"


def test_packets_older_than_a_second_or_the_last_keyframe_are_not_resent():
    rig = Rig()
    old = rig.publish(5, key=True)
    rig.now += 1.5
    fresh = rig.publish(3)
    assert rig.nack([old[1].seq]) == [], "older than a second"
    assert len(rig.nack([fresh[1].seq])) == 1
    rig.publish(1, key=True)  # a new keyframe: what came before is moot
    assert rig.nack([fresh[2].seq], 0.5) == []


def test_pacing_spreads_a_burst_over_the_budget_and_drops_only_beyond_its_bound():
    rig = Rig(pacing=True)
    pacer = rig.view.pacer
    assert isinstance(pacer, Pacer)
    rig.view.bandwidth.delay_bps = 200_000  # 2.5x: 500 kbps of budget, ~62 bytes/ms
    rig.view.bandwidth.last_feedback = rig.now  # the viewer sends transport-cc
    sent = rig.publish(1, dt=0.1, key=True)
    assert len(sent) == 1

    def burst(count: int) -> list[Any]:  # a keyframe's packets arriving at once
        return [p for _ in range(count) for p in rig.big_packet()]

    first = burst(20)  # 21 kB: 0.33 s of budget
    assert len(first) <= 3, "only the bucket's burst goes at once"
    assert pacer.queued > 0 and pacer.dropped_video == 0, "the rest waits; nothing is lost"
    times = []
    start = rig.now
    while pacer.queue:
        rig.now += 0.005
        rig.timers.run(rig.now)
        times += [rig.now - start] * len(rig.sock.rtp())
    assert len(first) + len(times) == 20
    assert 0.25 < times[-1] < 0.4, "sent at the budget's pace (500 kbps), not at once"

    burst(60)  # 62 kB: over 0.5 s of budget, so the queue drains faster than the budget
    start = rig.now
    while pacer.queue:
        rig.now += 0.005
        rig.timers.run(rig.now)
    assert rig.now - start < 0.6, "a long queue drains within MAX_QUEUE_DELAY"
    assert pacer.dropped_video == 0

    burst(300)  # 310 kB: more than MAX_QUEUE_BYTES
    assert pacer.dropped_video > 0, "a bound on what a stuck viewer may hold"


def test_pacing_sends_retransmissions_before_queued_video_and_drops_them_first():
    rig = Rig(pacing=True)
    rig.view.bandwidth.delay_bps = 200_000  # 2.5x: 500 kbps of budget, ~62 bytes/ms
    rig.view.bandwidth.last_feedback = rig.now  # the viewer sends transport-cc
    out = rig.publish(3, dt=0.1, key=True)
    assert len(rig.nack([out[1].seq], 0.1)) == 1, "within budget: resent at once"
    pacer = rig.view.pacer
    assert pacer is not None
    for _ in range(10):  # a frame over budget: queued
        rig.big_packet()
    assert pacer.queue, "video waits"
    pacer.tokens = 0
    assert rig.nack([out[2].seq]) == [], "the bucket is short: the resend waits too"
    rig.now += 0.02
    rig.timers.run(rig.now)
    first = rig.sock.rtp()
    assert first and first[0].ssrc == rig.consumer.rtx_ssrc, "but ahead of the queued video"
    for _ in range(100):  # the queue drains
        rig.now += 0.005
        rig.timers.run(rig.now)
    assert not pacer.queue
    rig.sock.rtp()
    big = []
    for _ in range(12):  # sent one at a time, within budget
        rig.now += 0.05
        rig.timers.run(rig.now)
        big += rig.big_packet()
    assert len(big) == 12
    # Far more resends than 100 ms of budget, with the bucket empty: the rest is dropped.
    pacer.tokens = 0
    rig.nack([p.seq for p in big])
    assert pacer.dropped_retransmissions > 0
    assert pacer.dropped_video == 0, "video is not what gives way"


def test_audio_is_never_held():
    timers = TimerQueue()
    settings = dataclasses.replace(sansio.SETTINGS, pacing=True)
    orig = sansio.SETTINGS
    sansio.SETTINGS = settings
    try:
        pub, _ = sansio.plain(timers, "pub", PUBLISHER_ADDR, extensions=sansio.PUBLISH_EXTENSIONS)
        view, sock = sansio.plain(timers, "view", VIEWER_ADDR)
    finally:
        sansio.SETTINGS = orig
    producer = sansio.producer(pub, kind="audio")
    sansio.consumer(view, producer)
    view.bandwidth.delay_bps = 30_000
    view.bandwidth.last_feedback = 1.0
    for seq in range(50):  # 50 packets of 200 bytes at once: far over a 30 kbps budget
        pub.receive(rtp(0x1111, seq, seq * 960, bytes(200), pt=111), PUBLISHER_ADDR, 1.0)
    assert len(sock.rtp()) == 50


def test_without_transport_cc_feedback_nothing_is_paced():
    rig = Rig(pacing=True)
    rig.view.bandwidth.delay_bps = 400_000  # an estimate nothing confirms
    rig.publish(1, dt=0.1, key=True)
    sent = [p for _ in range(40) for p in rig.big_packet()]  # 40 kB at once: far over it
    assert len(sent) == 40, "a receiver without transport-cc is not held back"


def test_a_remb_only_viewer_is_not_held_but_its_resends_come_from_what_its_remb_leaves():
    """aiortc sends REMB and no transport-cc. Its video is not paced (its estimator dips
    on keyframe bursts), but behind a thin link its NACKs had the SFU send it 850 kbit/s
    into 200 kbit/s, mostly resends of what the link had dropped."""
    rig = Rig(pacing=True)
    pacer = rig.view.pacer
    assert pacer is not None

    def remb(bps: int) -> None:
        rig.view.receive(rtcp.remb(0x5555, bps, [rig.consumer.ssrc]), VIEWER_ADDR, rig.now)

    remb(100_000)  # 2.5x: 250 kbit/s of budget, ~31 bytes/ms
    rig.publish(1, dt=0.1, key=True)
    sent = []
    for _ in range(40):  # 40 kB at once: far over that budget, and not held
        sent += rig.big_packet()
    assert len(sent) == 40 and pacer.dropped_video == 0, "media goes at once"
    assert rig.nack([p.seq for p in sent[:30]], 0.01) == [], "over budget: nothing resent now"
    resent = []
    for _ in range(40):
        rig.now += 0.005
        rig.timers.run(rig.now)
        resent += rig.sock.rtp()
    assert 0 < len(resent) <= 5, "100 ms of budget's worth of resends, spread out"
    assert pacer.dropped_retransmissions >= 25, "the rest is dropped"
    assert pacer.dropped_video == 0

    remb(20_000_000)  # a good link: resends go at once
    rig.now += 0.1
    more = rig.publish(5, dt=0.01)
    assert len(rig.nack([p.seq for p in more], 0.05)) == 5


def test_a_remb_that_went_stale_no_longer_budgets_resends():
    rig = Rig(pacing=True)
    rig.view.receive(rtcp.remb(0x5555, 10_000, [rig.consumer.ssrc]), VIEWER_ADDR, rig.now)
    rig.now += 10  # no REMB for 10 s: it says nothing of the link now
    out = rig.publish(10, dt=0.01, key=True)
    assert len(out) == 10
    assert len(rig.nack([p.seq for p in out], 0.05)) == 10
