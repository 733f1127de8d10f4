"""The layer policy's pure parts: how a link's estimate is shared, and what a viewer's
preferences allow (the end-to-end behaviour is in tests/test_simulcast.py)."""

from __future__ import annotations

from types import SimpleNamespace

from sfu.layers import (
    Preferences,
    Track,
    allocate,
    cap_for,
    probe_goal,
    probe_was_clean,
    temporal_steps,
    warm_layer,
)

RATES = (150_000.0, 500_000.0, 1_500_000.0)


def streams(*heights: int) -> list:
    return [SimpleNamespace(index=i, rid="qhf"[i], height=h) for i, h in enumerate(heights)]


def test_without_an_estimate_every_track_gets_its_cap():
    assert allocate(None, 40_000, [Track(RATES, 2), Track(RATES, 1)]) == [2, 1]


def test_audio_comes_first_then_every_lowest_layer_then_steps_in_turn():
    lead, site = Track(RATES, 2), Track(RATES, 2)
    assert allocate(100_000, 40_000, [lead]) == [None], "audio + lowest does not fit: no video"
    assert allocate(200_000, 40_000, [lead]) == [0]
    # Two tracks on 800 kbit/s: both small pictures and one step, not one big and one frozen.
    assert allocate(800_000, 40_000, [lead, site]) == [1, 0]
    assert allocate(1_200_000, 40_000, [lead, site]) == [1, 1]
    assert allocate(10_000_000, 40_000, [lead, site]) == [2, 2]


def test_a_track_never_goes_above_its_cap():
    assert allocate(10_000_000, 0, [Track(RATES, 0), Track(RATES, 1)]) == [0, 1]


def test_preferences_cap_the_layer():
    layers = streams(180, 360, 720)
    assert cap_for(layers, Preferences()) == 2
    assert cap_for(layers, Preferences(max_height=400)) == 1
    assert cap_for(layers, Preferences(max_height=100)) == 0, "all taller: the smallest"
    assert cap_for(layers, Preferences(max_layer=0)) == 0
    assert cap_for(layers, Preferences(encoding="h")) == 1
    assert cap_for(layers, Preferences(encoding="2")) == 2, "an index for SSRC simulcast"
    assert cap_for(streams(0, 0, 0), Preferences(max_height=200)) == 2, "sizes not known yet"


def test_a_probe_never_floods_a_thin_link():
    top = 40_000 + 1_500_000
    assert probe_goal(top, 300_000, failed=False) == 600_000, "2x what the link carries"
    assert probe_goal(top, 300_000, failed=True) == 390_000, "1.3x after a failure"
    assert probe_goal(200_000, 1_000_000, failed=False) == 200_000 * 1.15, "no more than needed"


def test_a_probe_is_clean_without_more_loss_or_a_falling_estimate():
    assert probe_was_clean(loss=13, loss_before=12, estimate=400_000, base=300_000)
    assert not probe_was_clean(20, 12, 400_000, 300_000), "more loss than the link's own"
    assert not probe_was_clean(0, 0, 250_000, 300_000), "the estimate fell"


def test_a_probe_warms_the_highest_layer_it_could_show_the_link_carries():
    track = Track(RATES, 2)
    assert warm_layer(track, 2, 600_000) == 1, "the top needs 1.5 Mbit/s: warm the middle"
    assert warm_layer(track, 2, 2_000_000) == 2
    assert warm_layer(track, 1, 2_000_000) == 1, "no further than the probe's step"
    assert warm_layer(Track(RATES, 0), 2, 2_000_000) == 0, "nor above the viewer's cap"
    assert warm_layer(track, 2, 100_000) is None


def test_lower_temporal_layers_are_steps_before_video_pauses():
    """Chromium's encodings carry three temporal layers: T0 of the lowest is a quarter
    of its frames at well under its bitrate, the last step before audio only."""
    low = SimpleNamespace(index=0, temporal_layers=3, tid_rates=(60_000.0, 100_000.0, 150_000.0))
    layers = [low, *streams(180, 360, 720)[1:]]
    steps = temporal_steps(layers)
    assert steps == (60_000.0, 100_000.0), "T0, T0+T1; the full rate is the layer itself"
    ladder = Track(steps + RATES, 2 + len(steps))
    assert allocate(90_000, 40_000, [ladder]) == [None], "not even T0 and audio: audio only"
    assert allocate(110_000, 40_000, [ladder]) == [0], "T0 of the lowest encoding"
    assert allocate(150_000, 40_000, [ladder]) == [1], "T0 and T1"
    assert allocate(200_000, 40_000, [ladder]) == [2], "the lowest encoding, every frame"
    assert allocate(10_000_000, 40_000, [ladder]) == [4]
    assert temporal_steps([SimpleNamespace(temporal_layers=0, tid_rates=())]) == ()
    unmeasured = SimpleNamespace(temporal_layers=3, tid_rates=())
    assert temporal_steps([unmeasured]) == (), "no steps until each layer's rate is known"


# -- audio first with a real transport (the media-model rig) -------------------------------


class ThinSingleLayer:
    """One VP8 encoding at about 300 kbit/s and one viewer whose receiver reports a REMB
    and a loss twice a second, as an aiortc viewer behind a thin link does."""

    def __init__(self, rtx: bool) -> None:
        from tests.test_media_model import MID, Rig

        self.rig = Rig()
        self.mid = MID
        self.seq = 100
        self.view, self.sock, self.consumer = self.rig.viewer(rtx=rtx)

    def second(self, remb: int, loss: int) -> list:
        """A second of 30 fps media and reports; what the viewer was sent in it."""
        from sfu import rtcp
        from tests.sansio import VIEWER_ADDR, VP8_DELTA, VP8_KEY, rtp

        rig, consumer = self.rig, self.consumer
        sent = []
        for i in range(30):
            self.seq += 1
            payload = (VP8_KEY if self.seq % 60 == 1 else VP8_DELTA) + bytes(1200)
            rig.send(rtp(0x1111, self.seq, self.seq * 3000, payload, extensions=self.mid))
            rig.tick(1 / 30)
            sent += self.sock.rtp()
            if i % 15 == 0:
                self.report(loss)
                self.view.receive(rtcp.remb(9, remb, [consumer.ssrc]), VIEWER_ADDR, rig.now)
        return sent

    def report(self, loss: int) -> None:
        """A receiver report on the video: ``loss`` /256 since the one before."""
        from sfu import rtcp
        from tests.sansio import VIEWER_ADDR

        report = rtcp.RtcpReceiverInfo(
            ssrc=self.consumer.ssrc,
            fraction_lost=loss,
            packets_lost=0,
            highest_sequence=max(self.consumer.last_seq, 0),
            jitter=0,
            lsr=0,
            dlsr=0,
        )
        self.view.receive(rtcp.receiver_report(9, [report]), VIEWER_ADDR, self.rig.now)

    def pause(self) -> None:
        """Heavy loss at 100 kbit/s until video pauses for the viewer (audio first)."""
        for _ in range(12):
            self.second(remb=100_000, loss=60)
            if self.view.layers.video_paused:
                break
        assert self.view.layers.video_paused == {self.consumer}
        assert pause_events(self.rig.events) == [True], "the viewer hears of it"


def pause_events(events: list) -> list[bool]:
    return [data["paused"] for name, data in events if name == "video_paused"]


def test_a_paused_viewer_is_probed_with_padding_on_its_rtx_stream():
    """Probing is how a paused viewer's link shows it can take video again: the padding
    goes on the paused consumer's RTX stream, no media goes out meanwhile, and once the
    probes carry cleanly (the reports say so) the video resumes."""
    thin = ThinSingleLayer(rtx=True)
    thin.pause()
    while_paused = []
    for _ in range(10):
        sent = thin.second(remb=100_000, loss=0)
        if not thin.view.layers.video_paused:
            break
        while_paused += sent
    assert while_paused, "probes went out"
    assert {p.ssrc for p in while_paused} == {thin.consumer.rtx_ssrc}, "on the RTX stream"
    assert all(not p.payload for p in while_paused), "padding only (no payload)"
    assert pause_events(thin.rig.events) == [True, False], "clean probes: video resumes"


def test_the_ceiling_stands_until_a_probe_carries_it():
    """A failed probe's goal becomes the ceiling; a clean probe below it leaves it; a
    clean probe at or above it lifts it (2x growth again)."""
    thin = ThinSingleLayer(rtx=True)
    thin.second(remb=1_000_000, loss=0)
    layers, now = thin.view.layers, thin.rig.now
    layers._start_probe(390_000, now)
    layers.probe_troubled = True  # the link said no during it
    layers._finish_probe(now)
    assert layers.probe_ceiling == 390_000
    layers._start_probe(350_000, now)
    layers._finish_probe(now)
    assert not layers.probe_failed, "clean"
    assert layers.probe_ceiling == 390_000, "it carried less than where the link said no"
    layers._start_probe(400_000, now)
    layers._finish_probe(now)
    assert layers.probe_ceiling == 0.0, "carried: no ceiling any more"


def test_a_probe_is_judged_by_reports_on_its_own_time():
    """A receiver report gives the loss since the one before it (a second apart from
    Chromium): the first one to arrive during a probe speaks of the time before it and
    must not fail it; one mostly about the probe's own packets does."""
    thin = ThinSingleLayer(rtx=True)
    thin.second(remb=1_000_000, loss=0)
    layers, rig = thin.view.layers, thin.rig
    layers._start_probe(400_000, rig.now)
    rig.tick(0.05)
    thin.report(loss=60)
    assert not layers._probe_in_trouble(rig.now), "a report on the time before the probe"
    rig.tick(0.6)
    thin.report(loss=60)
    assert layers._probe_in_trouble(rig.now), "a report on the probe's own packets"


def test_a_probe_that_could_send_nothing_does_not_resume_video():
    """A viewer without RTX has nothing to carry padding. Its probes used to be judged
    clean (no loss, no falling estimate: nothing was sent), which resumed its video into
    a link that could not carry it, and the pause came back seconds later, over and over
    (an aiortc viewer behind a 300 kbit/s link got 3 video frames in 20 s)."""
    thin = ThinSingleLayer(rtx=False)
    thin.pause()
    probes = thin.view.layers.probes
    for _ in range(12):
        assert thin.second(remb=100_000, loss=0) == []
    assert thin.view.layers.probes > probes, "it did try"
    assert thin.view.layers.video_paused == {thin.consumer}
    assert pause_events(thin.rig.events) == [True], "no resume, no second pause"


def test_a_probe_pads_what_goes_on_the_wire_up_to_its_goal_resends_included():
    """A probe's goal is what the viewer's link must carry: the padding tops up the
    transport's real output (media, retransmissions) to it. Topped up over the source
    stream's rate, a probe sent its goal plus every resend: 480 kbit/s for a 400 kbit/s
    goal here, into a link that may carry just the goal."""
    from sfu.nack import build_nack
    from sfu.streams import Encoding
    from tests.sansio import VIEWER_ADDR, VP8_DELTA, VP8_KEY, rtp
    from tests.test_media_model import MID, Rig

    rig = Rig([Encoding(ssrc=0xA1), Encoding(ssrc=0xA2), Encoding(ssrc=0xA3)])
    view, sock, consumer = rig.viewer()
    consumer.set_preferred(0, rig.now)
    seq = 100
    media_seqs: list[int] = []

    def second(lose: int) -> tuple[int, int]:
        """A second of the lowest encoding at 34 fps (about 170 kbit/s) in which the
        viewer asks for ``lose`` of its packets again: (bytes it was sent, resends)."""
        nonlocal seq
        total = resends = 0
        for tick in range(100):  # the worker's timers fire on time: every 10 ms
            rig.tick(0.01)
            if tick % 3 == 0:
                seq += 1
                payload = (VP8_KEY if seq == 101 else VP8_DELTA) + bytes(600)
                rig.send(rtp(0xA1, seq, seq * 3000, payload, extensions=MID))
            if tick % 6 == 0 and tick // 6 < lose and len(media_seqs) > 3:
                view.receive(build_nack(9, consumer.ssrc, [media_seqs[-3]]), VIEWER_ADDR, rig.now)
            for data in sock.take():
                total += len(data)
                if 192 <= data[1] <= 223:
                    continue  # RTCP
                if data[1] & 0x7F == consumer.pt:
                    media_seqs.append(int.from_bytes(data[2:4], "big"))
                elif len(data) > 600:  # RTX with a payload (padding is under 300 bytes)
                    resends += 1
        return total, resends

    second(lose=0)
    second(lose=0)
    goal = 400_000.0
    view.layers._start_probe(goal, rig.now)
    sent, resends = second(lose=15)  # the probe's first second
    assert resends >= 10, "the viewer's resends are part of the test"
    assert 0.9 * goal <= sent * 8 <= 1.1 * goal, (sent * 8, goal)


def test_a_probe_after_a_late_timer_sends_no_catch_up_burst():
    """A busy worker's timer fires late; the padding owed for the gap is forgiven beyond
    a short burst, which a thin link's queue would otherwise take at once."""
    from sfu.layers import PROBE_BURST
    from sfu.streams import Encoding
    from tests.sansio import VP8_KEY, rtp
    from tests.test_media_model import MID, Rig

    rig = Rig([Encoding(ssrc=0xA1), Encoding(ssrc=0xA2)])
    view, sock, consumer = rig.viewer()
    consumer.set_preferred(0, rig.now)
    rig.send(rtp(0xA1, 100, 3000, VP8_KEY + bytes(600), extensions=MID))
    sock.take()
    goal = 400_000.0
    view.layers._start_probe(goal, rig.now)
    rig.tick(0.3)  # the first burst is due at once; the timer runs 300 ms late
    burst = sum(len(data) for data in sock.take())
    assert 0 < burst <= goal / 8 * PROBE_BURST + 300, burst
    rig.tick(0.02)
    assert 0 < sum(len(data) for data in sock.take()) <= goal / 8 * 0.02 + 300
