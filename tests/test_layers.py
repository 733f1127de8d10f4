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
    assert probe_goal(200_000, 1_000_000, failed=False) == 200_000 * 1.15 * 1.2, (
        "no more than needed"
    )


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
