"""The send-side estimator (sfu/bwe.py) against a simulated bottleneck, on a numeric clock.

The sender is elastic (it sends what the estimate allows, as a paced source with padding
would), the link is a FIFO queue drained at rate R with a bounded queue (tail drop) and
20 ms of propagation, and the receiver reports arrivals every 50 ms as transport-cc does.
What a viewer would feel is checked: the estimate settles near R and mostly below it, falls
within a second or two when R halves, climbs back when R is restored, and follows loss
alone on a path that never queues.
"""

from __future__ import annotations

import random

import pytest

from sfu import bwe
from sfu.bwe import INITIAL_BPS, BandwidthEstimator

PACKET = 1200
FPS = 30


class Bottleneck:
    """A link of ``rate`` bits per second with a queue of at most ``max_queue`` seconds."""

    def __init__(self, rate: float, delay: float = 0.02, max_queue: float = 0.3) -> None:
        self.rate = rate
        self.delay = delay
        self.max_queue = max_queue
        self.loss = 0.0
        self.free_at = 0.0
        self.rng = random.Random(7)

    def send(self, sent: float, size: int) -> float | None:
        start = max(sent, self.free_at)
        if start - sent > self.max_queue or self.rng.random() < self.loss:
            return None
        self.free_at = start + size * 8 / self.rate
        return self.free_at + self.delay


def drive(
    bwe: BandwidthEstimator, link: Bottleneck, start: float, end: float
) -> list[tuple[float, int]]:
    """Send frames at the estimate, report every 50 ms; the estimate every 50 ms."""
    pending: list[tuple[float, int, float | None]] = []
    samples = []
    step = 0
    t = start
    while t < end:
        if step % 33 == 0:  # a frame
            count = max(1, round(bwe.estimate_bps / FPS / (8 * PACKET)))
            pending += [(t, PACKET, link.send(t, PACKET)) for _ in range(count)]
        if step % 50 == 0:
            arrived = [i for i, p in enumerate(pending) if p[2] is not None and p[2] <= t]
            if arrived:
                batch, pending[: arrived[-1] + 1] = pending[: arrived[-1] + 1], []
                bwe.on_packets(batch, t + link.delay)
            samples.append((t, bwe.estimate_bps))
        step += 1
        t = start + step / 1000
    return samples


def between(samples: list[tuple[float, int]], t0: float, t1: float) -> list[int]:
    return [e for t, e in samples if t0 <= t < t1]


def test_the_estimate_settles_below_a_bottleneck_falls_when_it_halves_and_recovers():
    bwe = BandwidthEstimator()
    link = Bottleneck(2_000_000)
    samples = drive(bwe, link, 0.0, 40.0)
    settled = between(samples, 25.0, 40.0)
    mean = sum(settled) / len(settled)
    assert 0.75 * 2e6 <= mean <= 1.0 * 2e6, mean
    assert max(settled) <= 1.2 * 2e6
    assert bwe.decreases > 0

    link.rate = 1_000_000  # the path halves
    samples = drive(bwe, link, 40.0, 60.0)
    assert max(between(samples, 41.5, 60.0)) <= 1.2e6, "down within 1.5 s"
    late = between(samples, 50.0, 60.0)
    assert 0.7e6 <= sum(late) / len(late) <= 1.0e6

    link.rate = 2_000_000  # and is restored
    samples = drive(bwe, link, 60.0, 85.0)
    late = between(samples, 75.0, 85.0)
    assert sum(late) / len(late) >= 0.75 * 2e6


def test_without_congestion_the_estimate_grows_from_its_start():
    bwe = BandwidthEstimator()
    samples = drive(bwe, Bottleneck(50_000_000), 0.0, 10.0)
    assert samples[0][1] == INITIAL_BPS
    assert samples[-1][1] >= 1.8 * INITIAL_BPS, "8%/s for 10 s"
    assert bwe.decreases == 0


def test_loss_alone_lowers_the_estimate_and_steady_small_loss_does_not_freeze_it():
    bwe = BandwidthEstimator()
    link = Bottleneck(100_000_000)  # never queues: the delay signal stays flat
    drive(bwe, link, 0.0, 5.0)
    before = bwe.estimate_bps
    link.loss = 0.25
    drive(bwe, link, 5.0, 10.0)
    assert bwe.estimate_bps < 0.5 * before
    assert 0.15 < bwe.loss < 0.4
    # A radio link that loses 5 % whatever is sent: that loss is its baseline, not
    # congestion, so the rate climbs again (classic GCC would hold it where it is).
    link.loss = 0.05
    low = bwe.estimate_bps
    drive(bwe, link, 10.0, 30.0)
    assert bwe.estimate_bps > 1.5 * low
    assert bwe.loss_baseline == pytest.approx(0.05, abs=0.03)
    # Loss well above that baseline is congestion again.
    high = bwe.estimate_bps
    link.loss = 0.30
    drive(bwe, link, 30.0, 33.0)
    assert bwe.estimate_bps < 0.8 * high


def test_receiver_reports_carry_loss_when_there_is_no_transport_cc():
    bwe = BandwidthEstimator()
    bwe.on_remb(1_500_000, 1.0)
    assert bwe.estimate_bps == 1_500_000, "a REMB-only receiver's estimate is the estimate"
    for second in range(2, 6):
        bwe.on_loss_report(0.3, float(second))
    # Heavy loss is never taken for a link's steady share: each report cuts 15 %.
    assert bwe.estimate_bps <= 1_500_000 * 0.85**4 + 1
    assert bwe.loss == 0.3


def test_remb_caps_a_transport_cc_estimate():
    bwe = BandwidthEstimator()
    drive(bwe, Bottleneck(50_000_000), 0.0, 3.0)
    bwe.on_remb(200_000, 3.0)
    assert bwe.estimate_bps == 200_000


def test_the_send_rate_is_measured_from_the_byte_count():
    bwe = BandwidthEstimator()
    for i in range(11):
        bwe.on_bytes_sent(i * 125_000, i * 0.5)  # 2 Mbps
    assert abs(bwe.send_rate_bps - 2_000_000) < 1


def test_bad_feedback_never_raises():
    bwe = BandwidthEstimator()
    bwe.on_packets([], 1.0)
    bwe.on_packets([(1.0, 100, None)] * 50, 1.0)  # everything lost
    bwe.on_packets([(2.0, 100, 5.0), (1.0, 100, 0.0), (1.0, 100, -1e9)], 2.0)  # reordered
    assert bwe.min_bps <= bwe.estimate_bps <= bwe.max_bps


def _direct_slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return num / den if den > 0 else 0.0


def test_the_running_trendline_is_the_least_squares_slope_of_its_window():
    """The O(1) trendline gives what a pass over the last 20 points gives, also hours into a
    connection (x in ms since the first arrival: ~10^7) and across its rebases."""
    rng = random.Random(7)
    line = bwe.Trendline(20)
    window: list[tuple[float, float]] = []
    x, y = 3.6e6 * 3, 0.0  # three hours in; y: the smoothed accumulated delay, ms
    for i in range(5000):
        x += rng.uniform(0.0, 40.0)
        y += rng.gauss(0.5 if i % 700 < 350 else -0.2, 3.0)  # queues building, draining
        window = (window + [(x, y)])[-20:]
        slope = line.add(x, y)
        if len(window) < 20:
            assert slope is None
        else:
            assert slope == pytest.approx(_direct_slope(window), rel=1e-6, abs=1e-7)


def test_a_clean_probe_moves_the_estimate_up_at_once():
    estimator = BandwidthEstimator()
    estimator.delay_bps = 300_000.0
    estimator.loss_bps = 250_000.0  # left low by a lossy spell
    estimator.on_probe_result(900_000)
    assert estimator.estimate_bps == 900_000
    estimator.on_probe_result(500_000)
    assert estimator.estimate_bps == 900_000, "a smaller probe never lowers it"


def test_loss_from_a_sender_that_cannot_slow_down_yet_stops_at_what_got_through():
    """Before a viewer's layer switch lands (a keyframe and two decisions away) the old
    layer keeps flooding its link: loss goes on whatever the estimate says. The loss
    cuts used to compound (to 92 kbit/s here; 83 kbit/s on the Chromium weak-link test,
    whose viewer then spent 21 s on a temporal step); they stop at the delay-based cut
    of the rate the receiver acknowledged."""
    bwe = BandwidthEstimator()
    link = Bottleneck(300_000, delay=0.15)
    pending: list[tuple[float, int, float | None]] = []
    lowest = bwe.estimate_bps
    for step in range(3000):  # 3 s of a 1.5 Mbit/s layer, reported every 50 ms
        t = step / 1000
        if step % 33 == 0:
            pending += [(t, PACKET, link.send(t, PACKET)) for _ in range(5)]
        if step % 50 == 0:
            done = [i for i, p in enumerate(pending) if p[2] is None or p[2] <= t]
            if done:
                batch, pending[: done[-1] + 1] = pending[: done[-1] + 1], []
                bwe.on_packets(batch, t)
        if t > 1.0:
            lowest = min(lowest, bwe.estimate_bps)
    assert bwe.loss > 0.5, "the link loses most of it"
    assert lowest >= 0.6 * link.rate, lowest
