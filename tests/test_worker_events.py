"""The worker's periodic reports: active speaker and connection quality (sans-I/O)."""

from __future__ import annotations

import os

from aiortc.rtcdtlstransport import RTCCertificate
from pylibsrtp import Policy

from sfu.dtls import DtlsSession
from sfu.ice import IceLiteSession
from sfu.router import Consumer, Producer, Router
from sfu.rtp import ExtensionLayout
from sfu.sdp import Codec
from sfu.srtp import SrtpContext
from sfu.transport import PeerTransport
from sfu.worker import QUALITY_INTERVAL, SPEAKER_INTERVAL, WorkerCore

CERT = RTCCertificate.generateCertificate()


def make_core() -> tuple[WorkerCore, list[tuple[str, dict]]]:
    events: list[tuple[str, dict]] = []
    core = WorkerCore(CERT, "127.0.0.1", 40000, lambda data, addr: None, lambda e, d: events.append((e, d)))
    return core, events


def connected_transport(core: WorkerCore, session: str, room: str = "r") -> PeerTransport:
    transport = PeerTransport(
        session, room, session, IceLiteSession("u" + session, "p" * 24, "x", 0.0),
        DtlsSession(CERT, [("sha-256", "AA")]), core.sender, core._on_transport_event, {}, 0.0,
    )
    transport.srtp = SrtpContext(Policy.SRTP_PROFILE_AEAD_AES_128_GCM, os.urandom(28), os.urandom(28))
    transport.addr = ("127.0.0.1", 5000)
    core.sessions[session] = transport
    return transport


def audio_producer(core: WorkerCore, transport: PeerTransport, level_sum: int, count: int) -> Producer:
    producer = Producer(f"{transport.session_id}-0", transport, "audio", "0", Codec(111, "opus", 48000, 2), 1, None, False, False)
    producer.level_sum, producer.level_count = level_sum, count
    core.rooms.setdefault(transport.room, Router(transport.room)).add_producer(producer)
    transport.add_producer(producer)
    return producer


def test_the_loudest_speaking_producer_is_reported_once():
    core, events = make_core()
    quiet = audio_producer(core, connected_transport(core, "a"), level_sum=70 * 10, count=10)  # -70 dBov
    loud = audio_producer(core, connected_transport(core, "b"), level_sum=20 * 10, count=10)  # -20 dBov
    core.tick(SPEAKER_INTERVAL)
    assert ("active_speaker", {"room": "r", "producer": loud.id, "level": -20}) in events
    events.clear()
    loud.level_sum, loud.level_count = 20 * 10, 10
    core.tick(2 * SPEAKER_INTERVAL + 0.01)
    assert not [e for e in events if e[0] == "active_speaker"], "no event while the speaker stays the same"
    quiet.level_sum, quiet.level_count = 10 * 10, 10  # now the louder one
    loud.level_sum, loud.level_count = 127 * 10, 10  # silent
    core.tick(3 * SPEAKER_INTERVAL + 0.02)
    assert [d["producer"] for e, d in events if e == "active_speaker"] == [quiet.id]


def test_silence_is_not_a_speaker():
    core, events = make_core()
    audio_producer(core, connected_transport(core, "a"), level_sum=127 * 5, count=5)
    core.tick(SPEAKER_INTERVAL)
    assert not [e for e in events if e[0] == "active_speaker"]


def test_quality_is_reported_when_its_band_changes():
    core, events = make_core()
    publisher = connected_transport(core, "pub")
    producer = audio_producer(core, publisher, 0, 0)
    viewer = connected_transport(core, "view")
    consumer = Consumer("view-0", producer, viewer, 111, None, ExtensionLayout({}, "0"))
    viewer.add_consumer(consumer)
    consumer.fraction_lost = 40  # 40/256 = 15.6 % lost
    consumer.rtt = 0.05
    core.tick(QUALITY_INTERVAL)
    reports = {d["session"]: d for e, d in events if e == "quality"}
    assert reports["view"]["quality"] == "poor" and abs(reports["view"]["loss"] - 40 / 256) < 1e-9
    assert "pub" not in reports, "an unchanged band (excellent) is not reported"
    events.clear()
    consumer.fraction_lost = 0
    core.tick(2 * QUALITY_INTERVAL + 0.01)
    assert [(d["session"], d["quality"]) for e, d in events if e == "quality"] == [("view", "excellent")]
