"""Which layer of each video track a viewer gets, from its link and its wishes (sans-I/O).

One :class:`LayerControl` per transport. Once a second (and at once when the viewer's
preferences change) it shares the link's estimated capacity among the transport's video
consumers: audio first, then the lowest layer of every video track in order, then one
layer step at a time round the tracks while the budget lasts (:func:`allocate`). A
viewer's preferences cap each track (``max_height``, ``max_layer`` or one fixed
encoding). The moves follow the anchors' lessons (../shared/ANCHORS.md):

* down at once when the link no longer carries the current choice; up only with
  :data:`UP_HEADROOM` to spare and not within :data:`HOLD_AFTER_DOWN` of a downgrade, so
  a link at the edge does not flap;
* the switch itself waits for a keyframe of the new layer (the consumer and the
  producer do that, with a coalesced, throttled keyframe request per layer);
* when even audio plus the lowest layer does not fit, video pauses for this viewer
  (an event says so) and resumes when the link has room again.

Bandwidth estimation is the transport's (:meth:`Transport.available_bitrate`); without
an estimate every track gets its cap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from math import inf
from typing import TYPE_CHECKING

from sfu.bwe import LOSS_HIGH, OVERUSING
from sfu.consumer import Consumer, SimpleConsumer, SimulcastConsumer
from sfu.feedback.base import FeedbackUnit

if TYPE_CHECKING:
    from sfu.producer import Producer
    from sfu.streams import RecvStream
    from sfu.transport import Transport

logger = logging.getLogger(__name__)

DECIDE_EVERY = 1.0  # seconds
UP_HEADROOM = 1.15  # an upgrade must fit with this much to spare (Jitsi ignores < 15 %)
DOWN_CONFIRM = 2  # decisions in a row the estimate must say "down" before we go down
PAUSE_CONFIRM = 4  # decisions in a row that not even the lowest layer fits, to pause video
HEAVY_LOSS = 26  # receiver-reported loss (/256, about 10 %) that goes down at once
DOWN_SLACK = 1.25  # a downgrade waits until the estimate is this far below the need:
# estimates wobble around what a receiver gets, and a REMB-only receiver's starts there
HOLD_AFTER_DOWN = 8.0  # seconds without upgrades after a bandwidth downgrade (mediasoup: 10)
# A temporal step (a lower VP8 temporal layer of the lowest encoding) costs no keyframe to
# undo, so its hold is short; taking one needs the confirmation pausing needs: a weak-link
# run spent 12 s at half the frame rate after one dip of the estimate (6.8 fps measured).
TEMPORAL_HOLD = 2.0
PROBE_INTERVAL = 3.0  # seconds between probes at first (LiveKit: 3 s, x1.5 after a failure)
PROBE_MAX_INTERVAL = 4.0  # LiveKit backs off to 2 min; a site's link that recovers
# should see its picture come back within seconds, and failed probes are kept small
PROBE_AFTER_SUCCESS = 0.0  # a clean probe may be followed by a bigger one at once
PROBE_VERDICT_WAIT = 0.5  # at most this long (else one RTT) after a probe for its reports
PROBE_DURATION = 1.0  # seconds of padding per probe
PROBE_GROWTH = 2.0  # a probe goes at most this many times what the link is known to carry,
PROBE_GROWTH_AFTER_FAILURE = 1.3  # or this many after a failed probe or a downgrade
PROBE_STEP = 0.02  # seconds between padding bursts
PROBE_BURST = 2 * PROBE_STEP  # seconds of the goal one burst may send at most
# A probe is clean only if the receiver acknowledged (transport-cc) this share of its goal.
# A 438 kbit/s probe into a 300 kbit/s link with a 300 ms buffer passed on loss and estimate
# (its drops hit padding, which reports do not count) at 0.64 of its goal; the 2x probe
# and the layer that followed sent 1.6x the link for seconds. Probes the link carried
# read 0.90-1.30 (14 in 3 weak-link runs, 5 % random loss included).
PROBE_RECEIVED = 0.8
# After a failed probe (or a downgrade) probes grow 1.3x, not 2x, below the rate where
# the link said no, for this long: a weak spell's failures keep it fresh.
CEILING_FOR = 15.0
PROBE_LOSS = 5  # receiver-reported loss (/256, about 2 %) that fails a probe or a verified rate
VERIFIED_FOR = 10.0  # a rate a probe carried stands while reports stay clean this long
AUDIO_NOMINAL = 40_000  # bits/s of an audio track not measured yet
VIDEO_NOMINAL = (150_000, 500_000, 1_500_000)  # a layer not measured yet, lowest first
LAYER_NAMES = ("low", "medium", "high")


def probe_goal(need: float, known: float, failed: bool) -> float:
    """The rate to probe at for a step that needs ``need`` bits/s: with the upgrade's
    headroom, which a clean probe must show (a 1.2x overshoot on top sent probes for the
    lowest encoding's full frame rate above a 300 kbit/s link's rate, where they failed),
    but never more than PROBE_GROWTH times what the link is ``known`` to carry
    (PROBE_GROWTH_AFTER_FAILURE after a failed probe or a downgrade): a probe into a thin
    link must not be the flood that breaks it."""
    growth = PROBE_GROWTH_AFTER_FAILURE if failed else PROBE_GROWTH
    return min(need * UP_HEADROOM, known * growth)


def warm_layer(track: Track, step: int | None, room: float) -> int | None:
    """The highest layer up to ``step`` that a probe leaving ``room`` bits/s for this
    track could show the link carries (None: not even the lowest)."""
    if step is None:
        return None
    best = None
    for layer in range(min(step, track.cap) + 1):
        if track.rates[layer] <= room:
            best = layer
    return best


def probe_was_clean(
    loss: int, loss_before: int, estimate: float | None, base: float | None
) -> bool:
    """A probe carried cleanly: the receiver lost no more than before (a lossy radio link
    loses some whatever we send; a full one loses more: ``loss`` in 1/256), and its
    estimate did not fall."""
    if loss >= max(PROBE_LOSS, loss_before + PROBE_LOSS):
        return False
    return estimate is None or base is None or estimate >= base * 0.9


@dataclass(frozen=True, slots=True)
class Preferences:
    """What the viewer asked for: the biggest picture it wants, the highest layer, or
    one encoding by rid (or index, for SSRC simulcast)."""

    max_height: int | None = None
    max_layer: int | None = None
    encoding: str | None = None
    max_temporal: int | None = None  # the highest VP8 temporal layer (TID) wanted


@dataclass(frozen=True, slots=True)
class Track:
    """One video track for :func:`allocate`: each layer's bitrate (lowest first) and the
    highest layer the viewer wants."""

    rates: tuple[float, ...]
    cap: int


def allocate(budget: float | None, audio: float, tracks: list[Track]) -> list[int | None]:
    """Each track's layer (None: no video) within ``budget`` bits/s after ``audio``.

    Lowest layers first, in track order (the first track is the most important: the
    lead), then one step at a time round the tracks, so two tracks share a thin link
    as two small pictures rather than one big one and a frozen one."""
    if budget is None:
        return [track.cap for track in tracks]
    left = budget - audio
    choice: list[int | None] = [None] * len(tracks)
    for index, track in enumerate(tracks):
        if track.rates and left >= track.rates[0]:
            choice[index] = 0
            left -= track.rates[0]
    raised = True
    while raised:
        raised = False
        for index, track in enumerate(tracks):
            layer = choice[index]
            if layer is None or layer >= track.cap:
                continue
            step = track.rates[layer + 1] - track.rates[layer]
            if left >= step:
                choice[index] = layer + 1
                left -= step
                raised = True
    return choice


def cap_for(streams: list[RecvStream], preferences: Preferences) -> int:
    """The highest layer the viewer's preferences allow."""
    top = len(streams) - 1
    if preferences.encoding is not None:
        for stream in streams:
            if preferences.encoding in (stream.rid, str(stream.index)):
                return stream.index
    cap = top
    if preferences.max_layer is not None:
        cap = min(cap, max(0, preferences.max_layer))
    if preferences.max_height is not None:
        fitting = [s.index for s in streams if s.height and s.height <= preferences.max_height]
        known = any(s.height for s in streams)
        if fitting:
            cap = min(cap, max(fitting))
        elif known:
            cap = 0  # every layer is taller than wanted: the smallest will do
    return cap


def layer_rates(streams: list[RecvStream], now: float, watched: int = -1) -> tuple[float, ...]:
    """Each layer's bitrate: measured, else the last measured, else nominal; kept
    increasing so a step up never looks free. Encodings above the one the viewer
    ``watched`` are priced at their peak (decaying 2 % a measurement): the publisher
    sends an encoding few watch at a low rate, or is restarting it, and raises it once
    watched. Weak-link viewers moved up at that low rate went back down as it grew
    (and then held 8 s): 14-18 s to the top layer after the link recovered."""
    rates: list[float] = []
    for stream in streams:
        rate = stream.bitrate(now)
        if not rate or stream.index > watched:
            rate = max(rate, stream.peak_bitrate)  # measured now, or when it last ran
        if not rate:
            rate = VIDEO_NOMINAL[min(stream.index, len(VIDEO_NOMINAL) - 1)]
        if rates and rate <= rates[-1]:
            rate = rates[-1] * 1.5
        rates.append(rate)
    return tuple(rates)


PUBLISHER_HEADROOM = 1.25  # what a publisher may send above what its viewers need
PUBLISHER_FLOOR = 300_000  # never tell a publisher less (its lowest layer and audio fit)


def temporal_steps(streams: list[RecvStream]) -> tuple[float, ...]:
    """Rates of the lowest encoding's lower temporal layers (T0, T0+T1; measured per
    TID): steps below its full frame rate, tried before video pauses. Empty without
    temporal layers. A track's ladder is these, then one step per encoding."""
    lowest = streams[0]
    if lowest.temporal_layers < 2 or len(lowest.tid_rates) < lowest.temporal_layers:
        return ()
    return lowest.tid_rates[:-1]


def screen_demand(producer: Producer) -> int:
    """The highest encoding of a simulcast producer that any viewer would take on a good
    link: its preferences' cap (``max_height``, ``max_layer``, a fixed encoding), or
    what a pipe's far side asks for."""
    top = 0
    for pipe in producer.streams[0].pipes:
        for index, on in enumerate(pipe.wanted):
            if on:
                top = max(top, index)
    for consumer in producer.consumers:
        if isinstance(consumer, SimulcastConsumer) and not consumer.closed:
            top = max(top, cap_for(producer.streams, consumer.transport.layers.preferences))
    return top


def publisher_limit(transport: Transport, cap: int) -> int:
    """The bitrate a publisher's viewers need of it (all its tracks), for its REMB: for a
    simulcast track, every encoding up to the highest that some viewer's screen and
    wishes call for (:func:`screen_demand`); for a single-encoding track, what its
    best-connected viewer can take; audio at a generous Opus rate. Between
    :data:`PUBLISHER_FLOOR` and the configured cap.

    Not only what the viewers' links carry now: a limit under an encoding the publisher
    keeps sending (a WHIP publisher cannot be told to pause one) starves it, and
    Chromium's loss-based target, pulled down to the limit, then climbs back at 8 % a
    second once the limit rises: a weak viewer's top layer came back 10-20 s after its
    link recovered. Encodings nobody watches are paused by telebridge.js instead
    (sfu/monitor.py), which costs the uplink nothing whatever the limit. Every encoding
    below the top counts: Chromium fills its encodings lowest first."""
    need = 0.0
    for producer in transport.producers:
        if producer.closed:
            continue
        if not producer.is_video:
            need += 64_000
        elif producer.simulcast:
            for stream in producer.streams[: screen_demand(producer) + 1]:
                nominal = VIDEO_NOMINAL[min(stream.index, len(VIDEO_NOMINAL) - 1)]
                need += max(stream.peak_bitrate, nominal)
        else:
            budgets = [
                c.transport.layers.budget
                for c in producer.consumers
                if not c.closed and isinstance(c, SimpleConsumer)
            ]
            if not budgets or any(b is None for b in budgets):
                return cap  # someone's link is unknown (or nobody watches): no limit
            need += max(b for b in budgets if b is not None)
    return int(max(PUBLISHER_FLOOR, min(cap, need * PUBLISHER_HEADROOM)))


class LayerControl(FeedbackUnit):
    """The layer policy of one viewer transport (see the module docstring)."""

    def __init__(self, transport: object) -> None:
        super().__init__(transport)  # type: ignore[arg-type]
        self.preferences = Preferences()
        self.deadline = inf
        self.last_down = -inf
        self.low_count = 0
        self.starved_count = 0
        self.heavy_count = 0  # decisions in a row with heavy loss reported
        self.thin_count = 0  # decisions in a row that some track's lowest encoding did not fit
        self.last_temporal_down = -inf
        self.budget: float | None = None
        self.video_paused: set[SimpleConsumer] = set()
        # How many temporal steps (lower VP8 temporal layers of the lowest encoding) lead
        # each track's ladder of choices, as of the last decision (see temporal_steps).
        self.steps: dict[SimpleConsumer, int] = {}
        # Probing: padding at the rate the next layer step needs, so the estimate can
        # rise where a viewer receives too little to show what its link carries.
        self.probe_until = -inf
        self.probe_goal = 0.0
        self.probe_start = 0.0  # moved on past a late timer's gap (see _pad)
        self.probe_began = 0.0
        self.probe_bytes_out = 0  # the transport's bytes out when the probe started
        self.probe_next = inf
        self.probe_interval = PROBE_INTERVAL
        self.next_probe_at = 0.0
        self.verified = 0.0
        self.verified_until = -inf
        self.verified_base = 0.0  # the receiver's estimate when a probe verified a rate
        self.probe_base: float | None = None
        self.probe_loss = 0
        self.probe_failed = False
        self.probe_troubled = False  # cut short because the link said no: a failure
        # The rate where the link last said no (a failed probe's goal, or what a viewer
        # was sent when it went down), until a probe carries that much or CEILING_FOR ends.
        self.probe_ceiling = 0.0
        self.ceiling_at = -inf
        # Encodings a probe aims at, per consumer: counted as wanted (Producer.layer_demand),
        # so a publisher that paused them resumes them while the probe runs, and the
        # layer is there when the probe shows the link carries it.
        self.warming: dict[SimpleConsumer, int] = {}
        self.probes = 0

    # -- inputs ---------------------------------------------------------------------------------
    def set_preferences(self, preferences: Preferences, now: float) -> None:
        self.preferences = preferences
        self.decide(now, forced=True)

    def consumer_started(self, now: float) -> None:
        """A video consumer became active: decide soon, and then every second."""
        if self.deadline == inf:
            self.deadline = now
            self.transport.wake(now)

    # -- the timer ------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        return min(self.deadline, self.probe_next)

    def on_timer(self, now: float) -> None:
        if now >= self.probe_next:
            self._pad(now)
        if now >= self.deadline:
            self.decide(now)

    # -- probing ----------------------------------------------------------------------------------
    def _loss(self) -> int:
        """The highest loss (/256) the viewer reports, from the video it is being sent when
        there is some: Chromium reports on video every second and on audio every five, so
        a link that recovered read as lossy for seconds longer, and its probes stayed in
        small careful steps."""
        return max((c.fraction_lost for c in self._reporting()), default=0)

    def _reporting(self) -> list[Consumer]:
        """The consumers whose receiver reports speak for the link: the open ones sending
        video if any (see :meth:`_loss`), else all the open ones."""
        consumers = [c for c in self.transport.consumers if not c.closed]
        sending: list[Consumer] = [
            c
            for c in consumers
            if isinstance(c, SimpleConsumer)
            and c.kind == "video"
            and c.active
            and c not in self.video_paused
        ]
        return sending or consumers

    def _probe_loss(self) -> int:
        """The loss to judge the probe by: from reports of which at least half speaks of
        what was sent since the probe began. A report gives the loss since the one
        before it, a second apart from Chromium: the first one in a probe is mostly
        about the time before it. On the weak link, such reports (9-18/256 of a 5 %-loss
        link, the viewer's media only) failed probes in their first 0.1 s, as the link
        recovered, and the next try came 4 s later."""
        rtt = self.transport.bandwidth.rtt
        covering = [
            c.fraction_lost
            for c in self._reporting()
            if c.report_at - rtt - self.probe_began >= 0.5 * (c.report_at - c.report_from)
        ]
        return max(covering, default=self.probe_loss)

    def _estimate(self, now: float) -> float | None:
        """The transport's estimate, raised to a rate a probe carried cleanly (for
        receivers whose own estimate climbs slowly: REMB-only ones)."""
        estimate = self.transport.available_bitrate(now)
        if (
            estimate is not None
            and self.transport.estimate_source == "remb"
            and self._loss() < PROBE_LOSS
        ):
            # A REMB-only receiver's estimator starts at what it receives and dips on
            # keyframe bursts: without loss it is no reason to send less than now.
            estimate = max(estimate, self._media_rate(now) * 0.95)
        if not self.verified:
            return estimate
        falling = estimate is not None and estimate < self.verified_base * 0.85
        if now < self.verified_until and self._loss() < PROBE_LOSS and not falling:
            self.verified_until = now + VERIFIED_FOR  # clean so far: it stands
            if estimate is None or self.verified > estimate:
                return self.verified
            return estimate
        self.verified = 0.0  # loss, or the receiver's own estimate fell: trust it again
        return estimate

    def _carrying(self, now: float) -> bool:
        """The link visibly carries what the viewer gets now: transport-cc acknowledges
        about all of it, with no delay growth and loss under GCC's congestion line above
        the link's steady share. An estimate below that is the estimator catching up
        (GCC climbs 8 %/s after a weak spell), no reason for a temporal step: weak-link
        runs spent 10-20 s at half the frame rate while their link carried the full one."""
        if self.transport.estimate_source != "twcc":
            return False
        bandwidth = self.transport.bandwidth
        acked = bandwidth.acked_rate_bps
        return (
            acked is not None
            and acked >= 0.9 * self._media_rate(now)
            and bandwidth.detector.state != OVERUSING
            and bandwidth.loss - bandwidth.loss_baseline < LOSS_HIGH  # GCC's congestion line
        )

    def _padding_carrier(self) -> SimpleConsumer | None:
        """The video consumer whose RTX stream carries a probe's padding (None: none has
        one): one that sends, else one whose video is paused (its RTX stream is still the
        viewer's, and probing is how a paused viewer's link shows it can take video again)."""
        videos = [
            c
            for c in self.transport.consumers
            if isinstance(c, SimpleConsumer)
            and c.kind == "video"
            and not c.closed
            and c.rtx_ssrc is not None
        ]
        sending = next((c for c in videos if c.active), None)
        return sending or next((c for c in videos if c in self.video_paused), None)

    def _media_rate(self, now: float) -> float:
        return sum(
            c.stream.bitrate(now)
            for c in self.transport.consumers
            if isinstance(c, SimpleConsumer) and c.active and not c.closed
        )

    def _start_probe(self, goal: float, now: float) -> None:
        self.probes += 1
        self.probe_goal = goal
        self.probe_base = self.transport.available_bitrate(now)
        self.probe_loss = self._loss()
        self.probe_until = now + PROBE_DURATION
        self.probe_troubled = False
        self.probe_start = self.probe_began = now
        self.probe_bytes_out = self.transport.bytes_out
        self.probe_next = now
        self.transport.wake(now)
        logger.info(
            "session %s: probing at %d bit/s for %.1f s (estimate %s)",
            self.transport.session_id,
            goal,
            PROBE_DURATION,
            self.estimate,
        )

    def _finish_probe(self, now: float) -> None:
        estimate = self.transport.available_bitrate(now)
        base = self.probe_base
        # Clean: no more loss than the link had before (a lossy radio link loses some
        # packets whatever we send; a full one loses more), and no falling estimate.
        received = self.transport.bandwidth.acked_rate_bps
        clean = (
            not self.probe_troubled
            and probe_was_clean(self._probe_loss(), self.probe_loss, estimate, base)
            and (received is None or received >= PROBE_RECEIVED * self.probe_goal)
        )
        if clean:
            if received:  # what got through, probe included
                self.transport.bandwidth.on_probe_result(min(self.probe_goal, received))
            self.verified = max(self.verified, self.probe_goal)
            self.verified_until = now + VERIFIED_FOR
            self.verified_base = estimate or 0.0
            self.probe_interval = PROBE_INTERVAL
            self.probe_failed = False
            if self.probe_goal >= self.probe_ceiling:
                self.probe_ceiling = 0.0
            self.next_probe_at = now + PROBE_AFTER_SUCCESS
        else:
            self.probe_interval = min(self.probe_interval * 1.5, PROBE_MAX_INTERVAL)
            self.probe_failed = True
            self.probe_ceiling, self.ceiling_at = self.probe_goal, now
            self.next_probe_at = now + self.probe_interval
            self.warming.clear()
        logger.info(
            "session %s: probe at %d bit/s %s (received %s; loss %d/256, before %d; estimate %s,"
            " before %s)",
            self.transport.session_id,
            self.probe_goal,
            "carried cleanly" if clean else "failed",
            received,
            self._probe_loss(),
            self.probe_loss,
            estimate,
            base,
        )
        self.probe_goal = 0.0

    def _probe_in_trouble(self, now: float) -> bool:
        """The link has said no before the probe's end: the receiver's estimate fell or its
        loss rose. A 1.5 s probe at twice a 300 kbit/s link's rate overflowed its 300 ms
        buffer: 82 packets dropped in one 10 s measurement, media among them."""
        estimate = self.transport.available_bitrate(now)
        return not probe_was_clean(self._probe_loss(), self.probe_loss, estimate, self.probe_base)

    def _pad(self, now: float) -> None:
        """Pad what the transport sends up to the probe's goal, on the wire."""
        if now < self.probe_until:
            if self._probe_in_trouble(now):
                self.probe_troubled = True  # a failure, whatever the next reports say
                self.probe_until = now
            elif self.transport.load.overloaded:
                # Cut short and judged as it stands: an overloaded worker's own delay reads
                # as congestion, and its viewers' padding would add to the overload.
                self.probe_until = now
        if now >= self.probe_until:
            self.probe_next = inf
            # The verdict once the receiver's reports on the probe's last packets are in,
            # not at the next once-a-second decision: a recovered link climbs faster.
            wait = min(self.transport.bandwidth.rtt, PROBE_VERDICT_WAIT)
            if now + wait < self.deadline:
                self.deadline = now + wait
                self.transport.wake(self.deadline)
            return
        carrier = self._padding_carrier()
        if carrier is None:
            # Nothing to pad on: a probe that sent nothing proves nothing. Judged clean, it
            # resumed a paused viewer's video into a link that could not carry it, and the
            # pause came back 5 s later, over and over.
            self.probe_troubled = True
            self.probe_next = inf
            return
        # Padding tops up what the transport really sent since the probe began (media,
        # retransmissions, SRTP's overhead) to the goal: topping up the source streams'
        # rate instead overshot by all of those (by 20 % with 15 resends a second).
        sent = self.transport.bytes_out - self.probe_bytes_out
        owed = self.probe_goal / 8 * (now - self.probe_start) - sent
        burst = self.probe_goal / 8 * PROBE_BURST
        if owed > burst:  # a late timer: no catch-up burst into a thin link's queue
            self.probe_start += (owed - burst) / (self.probe_goal / 8)
            owed = burst
        pacer = self.transport.pacer
        if pacer is not None:
            pacer.bypass = True  # a probe goes above the estimate on purpose
        try:
            while owed > 0:
                padded = carrier.send_padding(255, now)
                if not padded:
                    break
                owed -= padded
        finally:
            if pacer is not None:
                pacer.bypass = False
        self.probe_next = now + PROBE_STEP
        self.transport.wake(self.probe_next)

    def decide(self, now: float, forced: bool = False) -> None:
        videos = [
            c
            for c in self.transport.consumers
            if isinstance(c, SimpleConsumer) and c.kind == "video" and not c.closed and c.active
        ]
        if not videos and not self.video_paused:
            self.deadline = inf
            return
        self.deadline = now + DECIDE_EVERY
        self.transport.wake(self.deadline)
        audio = sum(
            c.stream.bitrate(now) or AUDIO_NOMINAL
            for c in self.transport.consumers
            if isinstance(c, SimpleConsumer) and c.kind == "audio" and not c.closed
        )
        videos += [c for c in self.video_paused if not c.closed and c not in videos]
        tracks = []
        self.steps = {}
        for consumer in videos:
            streams = consumer.producer.streams
            steps: tuple[float, ...] = ()
            watched = -1
            if isinstance(consumer, SimulcastConsumer):
                steps = temporal_steps(streams)
                if consumer not in self.video_paused:
                    watched = consumer.preferred
            self.steps[consumer] = len(steps)
            rates = steps + layer_rates(streams, now, watched)
            tracks.append(Track(rates, cap_for(streams, self.preferences) + len(steps)))
        if self.probe_goal and now >= self.probe_until:
            self._finish_probe(now)
        budget = self._estimate(now)
        self.budget = budget
        fits = allocate(None if budget is None else budget * DOWN_SLACK, audio, tracks)
        fits_with_room = allocate(None if budget is None else budget / UP_HEADROOM, audio, tracks)
        holding = now - self.last_down < HOLD_AFTER_DOWN and not forced
        temporal_holding = now - self.last_temporal_down < TEMPORAL_HOLD and not forced
        currents = [self._current(c) for c in videos]
        pressed = any(
            current is not None and (fit is None or fit < min(current, track.cap))
            for current, fit, track in zip(currents, fits, tracks, strict=True)
        )
        # On a temporal step the next step up is back to the full lowest encoding, which
        # only the short temporal hold delays; probe for it.
        on_step = any(
            current is not None and current < self.steps[consumer]
            for consumer, current in zip(videos, currents, strict=True)
        )
        if not pressed:  # never probe a link that is already too thin for what it gets
            probe_hold = temporal_holding if on_step else holding
            self._maybe_probe(
                budget, audio, videos, tracks, fits_with_room, probe_hold, now, currents
            )
        self.low_count = self.low_count + 1 if pressed else 0
        # One low estimate may be a dip (a keyframe burst, a REMB-only receiver's
        # estimator settling): go down on the second in a row, or at once on heavy loss.
        confirmed = self.low_count >= DOWN_CONFIRM or self._loss() >= HEAVY_LOSS
        # Pausing video is the last resort: the estimate must stay too low for it a while
        # (after a step down it needs a moment to show what the smaller layer costs).
        starved = any(fit is None for fit in fits)
        self.starved_count = self.starved_count + 1 if starved else 0
        # ... and the receiver must be losing a lot: an estimator that collapsed on a
        # lossy link is not proof that the lowest layer does not get through.
        if starved:
            logger.debug(
                "session %s: starved: budget %s, audio %d, layers %s, loss %d/256",
                self.transport.session_id,
                budget,
                audio,
                [t.rates for t in tracks],
                self._loss(),
            )
        heavy = self._loss() >= HEAVY_LOSS
        self.heavy_count = self.heavy_count + 1 if heavy else 0
        # Below the full lowest encoding (a temporal step) only when it stays too thin for
        # it, as for pausing, or loss is heavy: an estimate's dip halves the frame rate.
        thin = not self._carrying(now) and any(
            fit is None or fit < self.steps[consumer]
            for consumer, fit in zip(videos, fits, strict=True)
        )
        self.thin_count = self.thin_count + 1 if thin else 0
        thinned = self.thin_count >= PAUSE_CONFIRM or self.heavy_count >= DOWN_CONFIRM
        pause = self.starved_count >= PAUSE_CONFIRM and (
            self.heavy_count >= PAUSE_CONFIRM or (budget is not None and budget < audio)
        )
        rows = zip(videos, tracks, fits, fits_with_room, currents, strict=True)
        for consumer, track, fit, roomy, current in rows:
            if current is None:  # paused: resume only with room to spare
                if roomy is not None and not holding:
                    self._resume(consumer, roomy, now)
                continue
            if current > track.cap:  # the viewer wants less: no bandwidth hold-down
                self._move(consumer, track.cap, now)
                current = track.cap
            full_lowest = self.steps[consumer]  # the rung of the lowest encoding at full rate
            floor = 0 if thinned else min(current, full_lowest)  # how far down it may go now
            if fit is None and pause:
                self._pause(consumer, now)
                continue
            if fit is None or fit < current:
                if confirmed and max(fit or 0, floor) < current:
                    self._down(consumer, current, max(fit or 0, floor), now)
                continue
            target = current
            if roomy is not None and roomy > current:
                if not holding:
                    target = roomy
                elif current < full_lowest and not temporal_holding:
                    target = min(roomy, full_lowest)  # back to the full frame rate first
            self._move(consumer, target, now)  # a wished-for layer may have come back

    def _maybe_probe(
        self,
        budget: float | None,
        audio: float,
        videos: list[SimpleConsumer],
        tracks: list[Track],
        roomy: list[int | None],
        holding: bool,
        now: float,
        currents: list[int | None],
    ) -> None:
        """Probe when some track is below what the viewer wants and the estimate is the
        reason: at the rate of every track at its cap (a viewer on a good link climbs
        in one go), or after a failed probe one step for the first such track.

        Not for a track already at its cap (``currents``: each track's rung now) whose
        estimate merely lacks the upgrade headroom: there is nothing to climb to, and
        a thumbnail observer whose estimate wobbled under its layer plus 15 % was sent
        5-29k padding packets in 20 s (a busy worker's delay reads as congestion)."""
        if budget is None or holding or self.probe_goal or now < self.next_probe_at:
            return
        if self.transport.load.overloaded or self.transport.load.busy:
            return  # the delay the estimate sees may be the worker's own: padding adds to it
        if self._loss() >= HEAVY_LOSS:
            return  # congested now: a probe would only add to it
        for index, (track, layer) in enumerate(zip(tracks, roomy, strict=True)):
            if layer is not None and layer >= track.cap:
                continue
            current = currents[index]
            if current is not None and current >= track.cap:
                continue
            if self.probe_failed:
                step = [
                    (c if i != index else (0 if c is None else c + 1)) for i, c in enumerate(roomy)
                ]
            else:
                step = [t.cap for t in tracks]
            need = audio + sum(
                t.rates[c] for t, c in zip(tracks, step, strict=True) if c is not None
            )
            known = max(budget, self._media_rate(now))  # audio included
            # On a lossy link (a radio or satellite hop loses some whatever we send) a
            # probe can pass by chance; the next one at 2x would flood a thin link's
            # queue. Such a link climbs in the small steps used after a failure.
            # Careful too below the ceiling: a chance clean probe just under a weak link's
            # rate, most often the first after the downgrade, was followed by one at twice
            # it, which overflowed the link's buffer (18-32 packets dropped).
            below_ceiling = known < self.probe_ceiling and now - self.ceiling_at < CEILING_FOR
            careful = self.probe_failed or self._loss() >= PROBE_LOSS or below_ceiling
            goal = probe_goal(need, known, careful)
            # A probe for every track's cap (after a clean one) warms the caps: an upper
            # encoding the publisher paused takes seconds to come back (its encoder and
            # its own estimate ramp up), so it starts while the probes run. After a
            # failure, only what this probe could show the link carries.
            room = inf if not self.probe_failed else goal - audio
            self.warming = {
                consumer: layer
                for consumer, track, step_layer in zip(videos, tracks, step, strict=True)
                if (rung := warm_layer(track, step_layer, room)) is not None
                for layer in [self._rung(consumer, rung)[0]]  # the rung's encoding
            }
            self._start_probe(goal, now)
            return

    # -- moves ------------------------------------------------------------------------------------
    def _current(self, consumer: SimpleConsumer) -> int | None:
        if consumer in self.video_paused:
            return None
        if isinstance(consumer, SimulcastConsumer):
            steps = self.steps.get(consumer, 0)
            if consumer.preferred == 0 and consumer.max_temporal < steps:
                return consumer.max_temporal
            return consumer.preferred + steps
        return 0

    def _rung(self, consumer: SimpleConsumer, layer: int) -> tuple[int, int]:
        """A ladder position as (encoding, highest temporal layer; 3: all of them)."""
        steps = self.steps.get(consumer, 0)
        wanted = self.preferences.max_temporal
        cap = 3 if wanted is None else max(0, wanted)
        if layer < steps:
            return 0, min(layer, cap)
        return layer - steps, cap

    def _move(self, consumer: SimpleConsumer, rung: int, now: float) -> None:
        if not isinstance(consumer, SimulcastConsumer):
            return
        layer, temporal = self._rung(consumer, rung)
        if temporal != consumer.max_temporal:
            logger.info(
                "session %s: %s temporal layers up to T%d (estimate %s bit/s)",
                self.transport.session_id,
                consumer.id,
                temporal,
                self.estimate,
            )
            consumer.set_max_temporal(temporal)
        on = consumer.target or consumer.stream
        if layer != consumer.preferred or consumer.choose(now) is not on:
            logger.log(
                logging.INFO if layer != consumer.preferred else logging.DEBUG,
                "session %s: %s layer %d -> %d (estimate %s bit/s)",
                self.transport.session_id,
                consumer.id,
                consumer.preferred,
                layer,
                self.estimate,
            )
            consumer.set_preferred(layer, now)

    def _down(self, consumer: SimpleConsumer, current: int, target: int, now: float) -> None:
        """A step down for bandwidth: the hold before climbing again is long for a change
        of encoding (a keyframe each way), short for a temporal step."""
        steps = self.steps.get(consumer, 0)
        if current > steps:
            self.last_down = now
            self.probe_ceiling, self.ceiling_at = self._media_rate(now), now
            self.thin_count = 0  # the smaller encoding has to show it does not fit either
            # The loss that sent it down was the bigger encoding's flood of the link: a
            # temporal step on it as well halved the frame rate 1 s later, for 15-21 s.
            self.heavy_count = 0
        if target < steps:
            self.last_temporal_down = now
        self.probe_failed = True  # climb back a step at a time
        self._move(consumer, target, now)

    def _pause(self, consumer: SimpleConsumer, now: float) -> None:
        logger.info(
            "session %s: %s video paused: the link carries %s bit/s, too little for "
            "audio and the lowest layer (loss %.1f%%)",
            self.transport.session_id,
            consumer.id,
            self.estimate,
            self._loss() / 2.56,
        )
        self.video_paused.add(consumer)
        consumer.suspend()
        # Climb back in careful steps, as after a downgrade: a first probe at twice what
        # the link was thought to carry dropped half the audio of a paused viewer's
        # 200 kbit/s link for a second.
        self.probe_failed = True
        self.transport.on_event(
            "video_paused",
            {
                "session": self.transport.session_id,
                "consumer": consumer.id,
                "producer": consumer.producer.id,
                "paused": True,
                "estimate": int(self.budget or 0),
            },
        )

    def _resume(self, consumer: SimpleConsumer, layer: int, now: float) -> None:
        logger.info(
            "session %s: %s video resumes at layer %d (estimate %s bit/s)",
            self.transport.session_id,
            consumer.id,
            layer,
            self.estimate,
        )
        self.video_paused.discard(consumer)
        if isinstance(consumer, SimulcastConsumer):
            consumer.preferred, temporal = self._rung(consumer, layer)
            consumer.set_max_temporal(temporal)
        consumer.resume(now)
        self.transport.on_event(
            "video_paused",
            {
                "session": self.transport.session_id,
                "consumer": consumer.id,
                "producer": consumer.producer.id,
                "paused": False,
                "estimate": int(self.budget or 0),
            },
        )

    @property
    def estimate(self) -> int | None:
        return None if self.budget is None else int(self.budget)

    def state(self) -> dict[str, object]:
        """For stats: the viewer's budget and each video consumer's layer."""
        return {
            "estimate": None if self.budget is None else int(self.budget),
            "preferences": {
                "max_height": self.preferences.max_height,
                "max_layer": self.preferences.max_layer,
                "encoding": self.preferences.encoding,
                "max_temporal": self.preferences.max_temporal,
            },
            "paused": sorted(c.id for c in self.video_paused),
        }
