"""Send-side bandwidth estimation for one transport (after Google Congestion Control).

Sans-I/O: the transport's feedback units hand in what the receiver told us, with ``now``:

* :meth:`BandwidthEstimator.on_packets`: per packet of a transport-cc feedback, when we sent
  it, its size and when it arrived (None: lost). Two controllers read these:
  - delay-based: packets sent within 5 ms form a group; the change in one-way delay between
    groups is accumulated, smoothed, and the slope of the last 20 points (a trendline) is
    compared with an adaptive threshold. A rising queue (overuse) cuts the rate to 85% of
    what the receiver acknowledged; no trend lets it grow (8%/s multiplicatively, or about
    a packet per round trip once near the rate where the last cut happened); a draining
    queue (underuse) holds it.
  - loss-based: above 10% loss the rate falls by half the loss fraction, below 2% it may
    grow again, in between it holds.
* :meth:`BandwidthEstimator.on_loss_report` / :meth:`on_rtt`: receiver reports (RFC 3550),
  the only loss signal from a viewer without transport-cc.
* :meth:`BandwidthEstimator.on_remb`: a receiver's own estimate; a cap, and the estimate
  itself when it is all the receiver sends.

Read ``estimate_bps`` (what to send at most), ``send_rate_bps``, ``acked_rate_bps``,
``loss`` and ``rtt``. The constants are GCC's published defaults
(draft-ietf-rmcat-gcc-02 and its libwebrtc implementation), rewritten here.
"""

from __future__ import annotations

from collections import deque
from math import inf

INITIAL_BPS = 600_000  # what we assume before any feedback (mediasoup's initial value)
MIN_BPS = 30_000
MAX_BPS = 20_000_000

GROUP_SPAN = 0.005  # packets sent within 5 ms are one group
TREND_WINDOW = 20
TREND_SMOOTHING = 0.9
TREND_GAIN = 4.0
MAX_DELTAS = 60
THRESHOLD_INITIAL = 12.5  # ms
THRESHOLD_MIN = 6.0
THRESHOLD_MAX = 600.0
THRESHOLD_UP = 0.0087  # k_u: the threshold rises slowly toward a large trend...
THRESHOLD_DOWN = 0.039  # k_d: ...and falls quickly toward a small one
OVERUSE_TIME = 0.010  # a trend must stay over the threshold this long

BETA = 0.85  # a cut lands at 85% of the acknowledged rate
INCREASE_PER_SECOND = 1.08
ACKED_WINDOW = 0.5  # seconds of arrivals the acknowledged rate is measured over
LOSS_LOW = 0.02
LOSS_HIGH = 0.10
LOSS_BASELINE_S = 4.0  # seconds over which a link's steady loss is averaged
LOSS_BASELINE_CAP = 0.08  # loss above this is congestion however steady it is
LOSS_MIN_PACKETS = 50  # evaluate feedback loss over this many packets,
LOSS_MAX_WAIT = 2.0  # or over this long if that is at least LOSS_FEW_PACKETS
LOSS_FEW_PACKETS = 20
REMB_ONLY_AFTER = 5.0  # no transport-cc feedback for this long: trust the REMB alone
DEFAULT_RTT = 0.1

NORMAL, OVERUSING, UNDERUSING = "normal", "overusing", "underusing"

PacketResult = tuple[float, int, float | None]  # (sent at, bytes, arrived at or None)


class TrendlineDetector:
    """Delay-gradient overuse detection over packet groups (GCC's arrival-time filter)."""

    __slots__ = (
        "group_send",
        "group_first_send",
        "group_arrival",
        "prev_send",
        "prev_arrival",
        "first_arrival",
        "accumulated",
        "smoothed",
        "points",
        "deltas",
        "threshold",
        "last_update",
        "trend",
        "prev_trend",
        "time_over",
        "overuse_count",
        "state",
    )

    def __init__(self) -> None:
        self.group_first_send = -inf
        self.group_send = -inf
        self.group_arrival = -inf
        self.prev_send = -inf  # the last complete group
        self.prev_arrival = -inf
        self.first_arrival = -inf
        self.accumulated = 0.0
        self.smoothed = 0.0
        self.points = Trendline(TREND_WINDOW)
        self.deltas = 0
        self.threshold = THRESHOLD_INITIAL
        self.last_update = -inf
        self.trend = 0.0
        self.prev_trend = 0.0
        self.time_over = -1.0
        self.overuse_count = 0
        self.state = NORMAL

    def on_packets(self, results: list[PacketResult]) -> None:
        """One feedback's packets, in sequence order (the lost ones are skipped). One loop
        with the group in locals: it runs for every packet every viewer is sent."""
        first_send = self.group_first_send
        group_send = self.group_send
        group_arrival = self.group_arrival
        for sent, _size, arrived in results:
            if arrived is None or sent < first_send:
                continue  # lost; or reordered across groups, which GCC ignores
            if sent - first_send <= GROUP_SPAN:
                if sent > group_send:
                    group_send = sent
                if arrived > group_arrival:
                    group_arrival = arrived
                continue
            if group_send > -inf:
                if self.prev_send > -inf:
                    self._on_group_delta(
                        group_send - self.prev_send,
                        group_arrival - self.prev_arrival,
                        group_arrival,
                    )
                self.prev_send = group_send
                self.prev_arrival = group_arrival
            first_send = group_send = sent
            group_arrival = arrived
        self.group_first_send = first_send
        self.group_send = group_send
        self.group_arrival = group_arrival

    def _on_group_delta(self, send_delta: float, arrival_delta: float, arrival: float) -> None:
        delay_ms = (arrival_delta - send_delta) * 1000.0
        self.deltas = min(self.deltas + 1, MAX_DELTAS)
        if self.first_arrival == -inf:
            self.first_arrival = arrival
        self.accumulated += delay_ms
        self.smoothed = TREND_SMOOTHING * self.smoothed + (1 - TREND_SMOOTHING) * self.accumulated
        slope = self.points.add((arrival - self.first_arrival) * 1000.0, self.smoothed)
        if slope is not None:
            self.trend = slope
        self._detect(send_delta, arrival)

    def _detect(self, send_delta: float, now: float) -> None:
        modified = min(self.deltas, MAX_DELTAS) * self.trend * TREND_GAIN
        if modified > self.threshold:
            if self.time_over < 0:
                self.time_over = send_delta / 2  # assume it began halfway since the last
            else:
                self.time_over += send_delta
            self.overuse_count += 1
            if (
                self.time_over > OVERUSE_TIME
                and self.overuse_count > 1
                and self.trend >= self.prev_trend
            ):
                self.time_over = 0.0
                self.overuse_count = 0
                self.state = OVERUSING
        elif modified < -self.threshold:
            self.time_over = -1.0
            self.overuse_count = 0
            self.state = UNDERUSING
        else:
            self.time_over = -1.0
            self.overuse_count = 0
            self.state = NORMAL
        self.prev_trend = self.trend
        self._adapt(modified, now)

    def _adapt(self, modified: float, now: float) -> None:
        """The threshold follows |trend|, so a competing TCP flow is not starved by a
        threshold the ordinary jitter of the path keeps crossing (GCC 5.4)."""
        if self.last_update == -inf:
            self.last_update = now
        excess = abs(modified) - self.threshold
        if excess > 15.0:  # a spike: do not let it move the threshold
            self.last_update = now
            return
        k = THRESHOLD_DOWN if abs(modified) < self.threshold else THRESHOLD_UP
        elapsed_ms = min((now - self.last_update) * 1000.0, 100.0)
        self.threshold += k * excess * elapsed_ms
        self.threshold = min(max(self.threshold, THRESHOLD_MIN), THRESHOLD_MAX)
        self.last_update = now


class Trendline:
    """Least-squares slope of the last ``window`` (x, y) points, in O(1) per point.

    Running sums replace a pass over the window per packet group (that pass was ~15 % of a
    worker's CPU with 400 viewers sending transport-cc feedback). x is kept relative to a
    base that is moved to the oldest point every ``REBASE`` points, the sums recomputed
    then, so they stay small and exact enough however long a connection lives.
    """

    __slots__ = ("window", "points", "base", "sx", "sy", "sxx", "sxy", "added")
    REBASE = 200

    def __init__(self, window: int) -> None:
        self.window = window
        self.points: deque[tuple[float, float]] = deque()
        self.base = 0.0
        self.sx = self.sy = self.sxx = self.sxy = 0.0
        self.added = 0

    def add(self, x: float, y: float) -> float | None:
        """Add a point; the slope once the window is full, else None."""
        points = self.points
        if not points:
            self.base = x
        x -= self.base
        points.append((x, y))
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y
        if len(points) > self.window:
            ox, oy = points.popleft()
            self.sx -= ox
            self.sy -= oy
            self.sxx -= ox * ox
            self.sxy -= ox * oy
        self.added += 1
        if self.added % self.REBASE == 0:
            self._rebase()
        n = len(points)
        if n < self.window:
            return None
        den = n * self.sxx - self.sx * self.sx
        return (n * self.sxy - self.sx * self.sy) / den if den > 0 else 0.0

    def _rebase(self) -> None:
        shift = self.points[0][0]
        self.base += shift
        self.points = deque((x - shift, y) for x, y in self.points)
        self.sx = sum(x for x, _ in self.points)
        self.sy = sum(y for _, y in self.points)
        self.sxx = sum(x * x for x, _ in self.points)
        self.sxy = sum(x * y for x, y in self.points)


class RateMeter:
    """Bits per second over a sliding window of (time, bytes) samples."""

    __slots__ = ("window", "samples", "total")

    def __init__(self, window: float) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()
        self.total = 0

    def add(self, at: float, size: int) -> None:
        self.samples.append((at, size))
        self.total += size
        cutoff = at - self.window
        samples = self.samples
        while samples and samples[0][0] < cutoff:
            self.total -= samples.popleft()[1]

    def rate(self) -> float | None:
        """None until the window holds enough to measure."""
        samples = self.samples
        if len(samples) < 2:
            return None
        span = samples[-1][0] - samples[0][0]
        if span < self.window / 2:
            return None
        return (self.total - samples[0][1]) * 8 / span


class BandwidthEstimator:
    """GCC for one transport; see the module docstring."""

    def __init__(
        self, initial_bps: int = INITIAL_BPS, min_bps: int = MIN_BPS, max_bps: int = MAX_BPS
    ) -> None:
        self.min_bps = min_bps
        self.max_bps = max_bps
        self.delay_bps = float(initial_bps)
        self.loss_bps = inf  # no loss constraint until loss cuts the rate
        self.remb_bps: float | None = None
        self.last_remb = -inf  # when the receiver last sent a REMB
        self.detector = TrendlineDetector()
        self.acked = RateMeter(ACKED_WINDOW)
        self.rtt = DEFAULT_RTT
        self.loss = 0.0  # fraction of packets lost, over the last evaluated batch
        self.loss_baseline = 0.0  # the link's steady loss (slow average)
        self.send_rate_bps = 0.0
        self.state = "increase"  # AIMD: increase, hold or decrease
        self.capacity: float | None = None  # acknowledged rate at the last cut (kbps EWMA)
        self.capacity_var = 0.4
        self.last_change = -inf
        self.last_loss_cut = -inf
        self.last_feedback = -inf
        self.last_loss_update = -inf
        self._batch_lost = 0
        self._batch_total = 0
        self._batch_start = -inf
        self._sent_bytes = -1
        self._sent_at = -inf
        self.decreases = 0  # how many times delay or loss cut the rate (for tests, metrics)

    # -- what others read --------------------------------------------------------------------
    @property
    def estimate_bps(self) -> int:
        """The bitrate the path to the receiver is estimated to carry now."""
        estimate = min(self.delay_bps, self.loss_bps)
        if self.remb_bps is not None:
            estimate = min(estimate, self.remb_bps)
        return int(min(max(estimate, self.min_bps), self.max_bps))

    @property
    def acked_rate_bps(self) -> float | None:
        return self.acked.rate()

    # -- inputs ------------------------------------------------------------------------------
    def on_packets(self, results: list[PacketResult], now: float) -> None:
        """One transport-cc feedback's packets, in sequence order."""
        detector = self.detector
        lost = 0
        acked_bytes = 0
        last_arrival = -inf
        for _sent, size, arrived in results:
            if arrived is None:
                lost += 1
            else:
                acked_bytes += size
                if arrived > last_arrival:
                    last_arrival = arrived
        if acked_bytes:
            # One sample per feedback (~100 ms), not per packet: the window is 0.5 s.
            self.acked.add(last_arrival, acked_bytes)
        detector.on_packets(results)
        if self.last_feedback == -inf:
            self.last_change = now
        self.last_feedback = now
        self._batch_lost += lost
        self._batch_total += len(results)
        if self._batch_start == -inf:
            self._batch_start = now
        total = self._batch_total
        if total >= LOSS_MIN_PACKETS or (
            total >= LOSS_FEW_PACKETS and now - self._batch_start >= LOSS_MAX_WAIT
        ):
            self._on_loss(self._batch_lost / total, now)
            self._batch_lost = self._batch_total = 0
            self._batch_start = now
        self._update_delay_based(detector.state, now)

    def on_loss_report(self, fraction_lost: float, now: float) -> None:
        """A receiver report's fraction lost (0..1); used when transport-cc is not."""
        if now - self.last_feedback > REMB_ONLY_AFTER:
            self._on_loss(fraction_lost, now)

    def on_rtt(self, rtt: float) -> None:
        self.rtt = max(rtt, 0.001)

    def on_probe_result(self, bps: float) -> None:
        """A padding probe showed the path carries ``bps`` (no loss, no delay growth): the
        estimate starts there, as libwebrtc's does after a probe, instead of climbing
        8 %/s from where a weak spell left it (and pacing at the old estimate while a
        higher layer flows, which looks like congestion)."""
        if bps > self.delay_bps:
            self.delay_bps = min(float(bps), float(self.max_bps))
        if bps > self.loss_bps:
            self.loss_bps = inf
        if self.capacity is not None and bps / 1000 > self.capacity:
            self.capacity = None  # the path changed: multiplicative increase again
        self.state = "hold"

    def on_remb(self, bps: int, now: float) -> None:
        self.remb_bps = float(bps)
        self.last_remb = now
        if now - self.last_feedback > REMB_ONLY_AFTER:
            # REMB is all the receiver sends: it is the estimate (loss can still lower it).
            self.delay_bps = float(bps)

    def on_bytes_sent(self, total: int, now: float) -> None:
        """The transport's running byte count; the send rate is measured from it."""
        if self._sent_bytes < 0:
            self._sent_bytes, self._sent_at = total, now
            return
        elapsed = now - self._sent_at
        if elapsed < 0.2:
            return
        rate = (total - self._sent_bytes) * 8 / elapsed
        self.send_rate_bps = rate if self.send_rate_bps == 0 else 0.5 * (self.send_rate_bps + rate)
        self._sent_bytes, self._sent_at = total, now

    # -- controllers ---------------------------------------------------------------------------
    def _update_delay_based(self, signal: str, now: float) -> None:
        acked = self.acked.rate()
        if signal == OVERUSING:
            if self.state != "decrease" or now - self.last_change > self.rtt:
                self._decrease(acked, now)
            return
        if signal == UNDERUSING:
            self.state = "hold"
            self.last_change = now
            return
        if self.state in ("hold", "decrease"):
            self.state = "increase"
            self.last_change = now
            return
        self._increase(acked, now)

    def _decrease(self, acked: float | None, now: float) -> None:
        target = BETA * (acked if acked is not None else self.delay_bps)
        if target < self.delay_bps:
            self.delay_bps = max(target, self.min_bps)
            self.decreases += 1
        if acked is not None:
            kbps = acked / 1000
            if (
                self.capacity is not None
                and abs(kbps - self.capacity) > 3 * (self.capacity_var * self.capacity) ** 0.5
            ):
                self.capacity = None  # the path changed: forget the old capacity
            if self.capacity is None:
                self.capacity = kbps
            else:
                self.capacity = 0.95 * self.capacity + 0.05 * kbps
                norm = max(self.capacity, 1.0)
                self.capacity_var = 0.95 * self.capacity_var + 0.05 * (
                    (self.capacity - kbps) ** 2 / norm
                )
                self.capacity_var = min(max(self.capacity_var, 0.4), 2.5)
        self.state = "decrease"
        self.last_change = now

    def _increase(self, acked: float | None, now: float) -> None:
        elapsed = min(max(now - self.last_change, 0.0), 1.0)
        self.last_change = now
        current = self.delay_bps
        if self.capacity is not None:
            spread = 3 * (self.capacity_var * self.capacity) ** 0.5
            if current / 1000 > self.capacity + spread:
                self.capacity = None  # well past the old capacity: search again
        if self.capacity is not None:
            # Near the rate of the last cut: about one packet more per response time.
            response = self.rtt + 0.1
            packet_bits = 8 * 1200.0
            current += max(1000.0, packet_bits / response) * elapsed
        else:
            current *= INCREASE_PER_SECOND**elapsed
        if acked is not None:
            current = min(current, 1.5 * acked + 10_000)  # never far above what gets through
        if current > self.delay_bps:
            self.delay_bps = min(current, float(self.max_bps))

    def _on_loss(self, fraction: float, now: float) -> None:
        self.loss = fraction
        elapsed = min(max(now - self.last_loss_update, 0.0), 1.0)
        self.last_loss_update = now
        # A radio or satellite link loses a steady share whatever we send; only loss above
        # that baseline (a slow average, capped) says the link is full. Without this, 5 %
        # random loss would freeze the rate wherever the last congestion left it.
        # Heavy loss is congestion, never part of the baseline.
        baseline = self.loss_baseline
        if fraction <= LOSS_BASELINE_CAP * 1.5:
            step = min(1.0, elapsed / LOSS_BASELINE_S)
            self.loss_baseline = min(LOSS_BASELINE_CAP, baseline + (fraction - baseline) * step)
        fraction = max(0.0, fraction - baseline)
        if fraction > LOSS_HIGH:
            if now - self.last_loss_cut >= 0.3 + self.rtt:
                current = min(self.loss_bps, self.delay_bps)
                cut = current * (1 - fraction / 2)
                # Never below the delay-based cut of what got through: loss that goes on
                # while the sender has not yet moved to a smaller layer (a keyframe and
                # two decisions away) compounded cut after cut, to 83 kbit/s on a
                # 300 kbit/s link, and the viewer spent 21 s on a temporal step.
                acked = self.acked.rate()
                floor = min(BETA * acked, current) if acked is not None else 0.0
                self.loss_bps = max(cut, floor, self.min_bps)
                self.last_loss_cut = now
                self.decreases += 1
        elif fraction < LOSS_LOW and self.loss_bps < inf:
            self.loss_bps = self.loss_bps * INCREASE_PER_SECOND**elapsed + 1000 * elapsed
            if self.loss_bps >= self.delay_bps:
                self.loss_bps = inf  # caught up: the delay-based rate leads again

    def __repr__(self) -> str:
        return (
            f"<BandwidthEstimator {self.estimate_bps / 1e6:.2f} Mbps"
            f" (delay {self.delay_bps / 1e6:.2f}, loss {self.loss_bps / 1e6:.2f}),"
            f" {self.detector.state}, loss {self.loss:.1%}, rtt {self.rtt * 1000:.0f} ms>"
        )
