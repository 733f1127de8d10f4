"""Bounded retransmission and the pacer, with two plain transports back to back and a
numeric clock (tests/sansio.py, as in tests/test_media_model.py).

What a viewer on a weak link would notice: a NACK storm for the same packets gives one
resend per round trip, not one per NACK; packets it can no longer use (older than a second,
or older than the keyframe it already has) are not resent; with pacing on, audio always
goes, video over budget waits briefly then is dropped, and retransmissions go first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

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


def test_pacing_queues_video_over_budget_drops_beyond_and_keeps_audio():
    rig = Rig(pacing=True)
    pacer = rig.view.pacer
    assert isinstance(pacer, Pacer)
    rig.view.bandwidth.delay_bps = 400_000  # 500 kbps of budget: ~62 bytes/ms
    sent = rig.publish(1, dt=0.1, key=True)
    assert len(sent) == 1
    burst = 0
    for _ in range(40):  # a 40-packet frame arriving at once: far over budget
        rig.pub.receive(
            rtp(0x1111, rig.seq, 0, VP8_DELTA + bytes(1000), extensions=MID),
            PUBLISHER_ADDR,
            rig.now,
        )
        rig.seq += 1
        burst += 1
    first = rig.sock.rtp()
    assert len(first) <= 3, "only the bucket's burst goes at once"
    assert pacer.queued > 0 and pacer.dropped_video > 0, "queued up to 100 ms, rest dropped"
    drained = 0
    for _ in range(40):
        rig.now += 0.005
        rig.timers.run(rig.now)
        drained += len(rig.sock.rtp())
    assert drained == pacer.queued, "the queue drains as the bucket refills"
    assert len(first) + drained + pacer.dropped_video == burst
    assert not pacer.queue


def test_pacing_drops_retransmissions_first():
    rig = Rig(pacing=True)
    rig.view.bandwidth.delay_bps = 400_000
    out = rig.publish(3, dt=0.1, key=True)
    assert len(rig.nack([out[1].seq], 0.1)) == 1, "within budget: resent"
    pacer = rig.view.pacer
    assert pacer is not None
    pacer.tokens = 0  # a bucket just emptied by video
    assert rig.nack([out[2].seq]) == []
    assert pacer.dropped_retransmissions == 1


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
    for seq in range(50):  # 50 packets of 200 bytes at once: far over a 30 kbps budget
        pub.receive(rtp(0x1111, seq, seq * 960, bytes(200), pt=111), PUBLISHER_ADDR, 1.0)
    assert len(sock.rtp()) == 50
