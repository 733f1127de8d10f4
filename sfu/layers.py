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

from dataclasses import dataclass
from math import inf
from typing import TYPE_CHECKING

from sfu.consumer import SimpleConsumer, SimulcastConsumer
from sfu.feedback.base import FeedbackUnit

if TYPE_CHECKING:
    from sfu.streams import RecvStream

DECIDE_EVERY = 1.0  # seconds
UP_HEADROOM = 1.15  # an upgrade must fit with this much to spare (Jitsi ignores < 15 %)
HOLD_AFTER_DOWN = 8.0  # seconds without upgrades after a bandwidth downgrade (mediasoup: 10)
AUDIO_NOMINAL = 40_000  # bits/s of an audio track not measured yet
VIDEO_NOMINAL = (150_000, 500_000, 1_500_000)  # a layer not measured yet, lowest first
LAYER_NAMES = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class Preferences:
    """What the viewer asked for: the biggest picture it wants, the highest layer, or
    one encoding by rid (or index, for SSRC simulcast)."""

    max_height: int | None = None
    max_layer: int | None = None
    encoding: str | None = None


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


def layer_rates(streams: list[RecvStream], now: float) -> tuple[float, ...]:
    """Each layer's bitrate: measured, else the last measured, else nominal; kept
    increasing so a step up never looks free."""
    rates: list[float] = []
    for stream in streams:
        rate = stream.bitrate(now) or stream.peak_bitrate
        if not rate:
            rate = VIDEO_NOMINAL[min(stream.index, len(VIDEO_NOMINAL) - 1)]
        if rates and rate <= rates[-1]:
            rate = rates[-1] * 1.5
        rates.append(rate)
    return tuple(rates)


class LayerControl(FeedbackUnit):
    """The layer policy of one viewer transport (see the module docstring)."""

    def __init__(self, transport: object) -> None:
        super().__init__(transport)  # type: ignore[arg-type]
        self.preferences = Preferences()
        self.deadline = inf
        self.last_down = -inf
        self.budget: float | None = None
        self.video_paused: set[SimpleConsumer] = set()

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
        return self.deadline

    def on_timer(self, now: float) -> None:
        self.decide(now)

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
        for consumer in videos:
            streams = consumer.producer.streams
            tracks.append(Track(layer_rates(streams, now), cap_for(streams, self.preferences)))
        budget = self.transport.available_bitrate(now)
        self.budget = budget
        fits = allocate(budget, audio, tracks)
        fits_with_room = allocate(None if budget is None else budget / UP_HEADROOM, audio, tracks)
        holding = now - self.last_down < HOLD_AFTER_DOWN and not forced
        for consumer, track, fit, roomy in zip(videos, tracks, fits, fits_with_room, strict=True):
            current = self._current(consumer)
            if fit is None:
                if current is not None:
                    self._pause(consumer, now)
                continue
            if current is None:  # paused: resume only with room to spare
                if roomy is not None and not holding:
                    self._resume(consumer, roomy, now)
                continue
            if fit > track.cap or fit < current:
                self.last_down = now if fit < current and budget is not None else self.last_down
                self._move(consumer, min(fit, track.cap), now)
            elif roomy is not None and roomy > current and not holding:
                self._move(consumer, roomy, now)
            elif current > track.cap:
                self._move(consumer, track.cap, now)

    # -- moves ------------------------------------------------------------------------------------
    def _current(self, consumer: SimpleConsumer) -> int | None:
        if consumer in self.video_paused:
            return None
        if isinstance(consumer, SimulcastConsumer):
            return consumer.preferred
        return 0

    def _move(self, consumer: SimpleConsumer, layer: int, now: float) -> None:
        if isinstance(consumer, SimulcastConsumer) and layer != consumer.preferred:
            consumer.set_preferred(layer, now)

    def _pause(self, consumer: SimpleConsumer, now: float) -> None:
        self.video_paused.add(consumer)
        consumer.suspend()
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
        self.video_paused.discard(consumer)
        if isinstance(consumer, SimulcastConsumer):
            consumer.preferred = layer
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
            },
            "paused": sorted(c.id for c in self.video_paused),
        }
