"""What a worker reports about its rooms without being asked: the active speaker of each
room and the quality band of each connection, both only when they change (sans-I/O).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sfu.layers import publisher_limit
from sfu.producer import Producer

if TYPE_CHECKING:
    from sfu.router import Router
    from sfu.transport import Transport

SPEAKER_INTERVAL = 0.5  # seconds between active-speaker decisions
SPEAKER_THRESHOLD = 60  # an average level under this (louder than -60 dBov) is speech
QUALITY_INTERVAL = 2.0
LAYER_INTERVAL = 1.0
UNUSED_LAYER_PAUSE = 4.0  # seconds nobody needs an encoding before the publisher pauses it


def quality_band(loss: float, rtt: float | None) -> str:
    """Three bands a person can act on: fine, watch it, fix it."""
    if loss < 0.02 and (rtt is None or rtt < 0.3):
        return "excellent"
    if loss < 0.08 and (rtt is None or rtt < 0.6):
        return "good"
    return "poor"


class RoomMonitor:
    """A timed job of the worker (see :mod:`sfu.timers`)."""

    def __init__(
        self,
        rooms: dict[str, Router],
        sessions: dict[str, Transport],
        emit: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.rooms = rooms
        self.sessions = sessions
        self.emit = emit
        self.speakers: dict[str, str] = {}  # room -> producer id of its active speaker
        self.next_speaker_check = 0.0
        self.next_quality_check = 0.0
        self.next_layer_check = 0.0

    def forget(self, room: str) -> None:
        self.speakers.pop(room, None)

    def next_deadline(self) -> float:
        return min(self.next_speaker_check, self.next_quality_check, self.next_layer_check)

    def on_timer(self, now: float) -> None:
        if now >= self.next_speaker_check:
            self.next_speaker_check = now + SPEAKER_INTERVAL
            self.active_speakers()
        if now >= self.next_quality_check:
            self.next_quality_check = now + QUALITY_INTERVAL
            self.quality()
        if now >= self.next_layer_check:
            self.next_layer_check = now + LAYER_INTERVAL
            self.layer_demand(now)

    def layer_demand(self, now: float) -> None:
        """Tell a simulcast publisher which encodings to send: one nobody has needed for
        :data:`UNUSED_LAYER_PAUSE` s is paused (the lead's uplink is often the thinnest
        link of all), and resumed as soon as a viewer wants it."""
        publishers: set[Transport] = set()
        for router in self.rooms.values():
            for producer in router.producers.values():
                if not producer.simulcast or producer.closed:
                    continue
                wanted = producer.layer_demand()
                active = list(producer.layers_active)
                for index, needed in enumerate(wanted):
                    if needed:
                        producer.unneeded_since[index] = -1.0
                        active[index] = True
                    elif producer.unneeded_since[index] < 0:
                        producer.unneeded_since[index] = now
                    elif now - producer.unneeded_since[index] >= UNUSED_LAYER_PAUSE:
                        active[index] = False
                publishers.add(producer.transport)
                if active != producer.layers_active:
                    producer.layers_active = active
                    self.emit(
                        "layers",
                        {
                            "session": producer.transport.session_id,
                            "producer": producer.id,
                            "active": active,
                            "rids": [s.rid for s in producer.streams],
                        },
                    )
        # What each simulcast publisher is told it may send follows what is watched.
        for transport in publishers:
            if not transport.closed:
                limit = publisher_limit(transport, transport.remb.default_bitrate)
                if abs(limit - transport.remb.bitrate) > 0.1 * transport.remb.bitrate:
                    transport.remb.set_limit(limit)

    def active_speakers(self) -> None:
        """The loudest audio producer of each room over the last interval, if it speaks."""
        for name, router in self.rooms.items():
            best: Producer | None = None
            best_level = 128.0
            for producer in router.producers.values():
                if producer.is_video or not producer.level_count:
                    continue
                level = producer.level_sum / producer.level_count
                producer.level_sum = producer.level_count = 0
                if not producer.paused and level < best_level:
                    best, best_level = producer, level
            if (
                best is not None
                and best_level <= SPEAKER_THRESHOLD
                and self.speakers.get(name) != best.id
            ):
                self.speakers[name] = best.id
                self.emit(
                    "active_speaker",
                    {"room": name, "producer": best.id, "level": -round(best_level)},
                )

    def quality(self) -> None:
        """Report a connection's quality band when it changes (loss from RTCP, both ways)."""
        for transport in self.sessions.values():
            if not transport.connected:
                continue
            rtts = [c.rtt for c in transport.consumers if c.rtt is not None]
            if transport.consumers:
                loss = max(c.fraction_lost for c in transport.consumers) / 256
            elif transport.producers:
                loss = (
                    max(s.stats.last_fraction for p in transport.producers for s in p.streams) / 256
                )
            else:
                continue
            rtt = max(rtts) if rtts else None
            band = quality_band(loss, rtt)
            if band != transport.quality:
                transport.quality = band
                self.emit(
                    "quality",
                    {"session": transport.session_id, "quality": band, "loss": loss, "rtt": rtt},
                )
