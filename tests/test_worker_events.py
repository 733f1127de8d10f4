"""The worker's unasked reports: active speaker and connection quality (sans-I/O)."""

from __future__ import annotations

from typing import Any

from sfu.monitor import QUALITY_INTERVAL, SPEAKER_INTERVAL, RoomMonitor
from sfu.router import Router
from sfu.streams import Encoding
from sfu.timers import TimerQueue
from sfu.transport import Transport
from tests import sansio


class Rig:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.timers = TimerQueue()
        self.rooms: dict[str, Router] = {}
        self.sessions: dict[str, Transport] = {}
        self.monitor = RoomMonitor(
            self.rooms, self.sessions, lambda e, d: self.events.append((e, d))
        )
        self.timers.schedule(self.monitor, self.monitor.next_deadline())

    def transport(self, session: str) -> Transport:
        transport, _sock = sansio.plain(self.timers, session)
        self.sessions[session] = transport
        return transport

    def audio(self, session: str, level_sum: int, count: int) -> Any:
        producer = sansio.producer(
            self.transport(session), "audio", [Encoding(ssrc=hash(session) & 0xFFFF)]
        )
        producer.level_sum, producer.level_count = level_sum, count
        self.rooms.setdefault("r", Router("r")).add_producer(producer)
        return producer

    def speakers(self) -> list[str]:
        return [d["producer"] for e, d in self.events if e == "active_speaker"]


def test_the_loudest_speaking_producer_is_reported_once():
    rig = Rig()
    quiet = rig.audio("a", level_sum=70 * 10, count=10)  # -70 dBov
    loud = rig.audio("b", level_sum=20 * 10, count=10)  # -20 dBov
    rig.timers.run(SPEAKER_INTERVAL)
    assert ("active_speaker", {"room": "r", "producer": loud.id, "level": -20}) in rig.events
    rig.events.clear()
    loud.level_sum, loud.level_count = 20 * 10, 10
    rig.timers.run(2 * SPEAKER_INTERVAL + 0.01)
    assert rig.speakers() == [], "no event while the speaker stays the same"
    quiet.level_sum, quiet.level_count = 10 * 10, 10  # now the louder one
    loud.level_sum, loud.level_count = 127 * 10, 10  # silent
    rig.timers.run(3 * SPEAKER_INTERVAL + 0.02)
    assert rig.speakers() == [quiet.id]


def test_silence_is_not_a_speaker():
    rig = Rig()
    rig.audio("a", level_sum=127 * 5, count=5)
    rig.timers.run(SPEAKER_INTERVAL)
    assert rig.speakers() == []


def test_quality_is_reported_when_its_band_changes():
    rig = Rig()
    producer = rig.audio("pub", 0, 0)
    consumer = sansio.consumer(rig.transport("view"), producer)
    consumer.fraction_lost = 40  # 40/256 = 15.6 % lost
    consumer.rtt = 0.05
    rig.timers.run(QUALITY_INTERVAL)
    reports = {d["session"]: d for e, d in rig.events if e == "quality"}
    assert reports["view"]["quality"] == "poor" and abs(reports["view"]["loss"] - 40 / 256) < 1e-9
    assert "pub" not in reports, "an unchanged band (excellent) is not reported"
    rig.events.clear()
    consumer.fraction_lost = 0
    rig.timers.run(2 * QUALITY_INTERVAL + 0.01)
    assert [(d["session"], d["quality"]) for e, d in rig.events if e == "quality"] == [
        ("view", "excellent")
    ]
