"""The pipe control methods of two worker cores, sans-I/O: ``pipe_out`` on the home worker,
``pipe_in`` on the far one, ``plain_connect``; datagrams move through a fake loopback.

A far viewer receives the home publisher's packets, its keyframe request reaches the
publisher as a PLI for the publisher's own SSRC, and the pipe's home side closes with its
producer. Bad requests get a clear error.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiortc.rtcdtlstransport import RTCCertificate

from sfu import rtcp
from sfu.control import ControlError
from sfu.plain_transport import PlainAddress
from sfu.rtp import is_rtcp, parse_rtp, read_map
from sfu.streams import Encoding
from sfu.worker import WorkerCore
from tests import sansio
from tests.sansio import VP8_DELTA, VP8_KEY, rtp

PUBLISHER = ("127.0.0.1", 5000)
VIEWER = ("127.0.0.1", 6000)


class Net:
    """Loopback without sockets: what is sent waits in a queue until ``pump``."""

    def __init__(self) -> None:
        self.sockets: dict[PlainAddress, NetSocket] = {}
        self.queue: list[tuple[bytes, PlainAddress, PlainAddress]] = []
        self.outside: dict[PlainAddress, list[bytes]] = {PUBLISHER: [], VIEWER: []}
        self.port = 20000
        self.pump_filter: Any = None  # (data, to) -> False drops the datagram

    def opener(self, unix: bool, bind: str, on_datagram: Any) -> NetSocket:
        self.port += 1
        sock = NetSocket(self, (bind, self.port), on_datagram)
        self.sockets[sock.local] = sock
        return sock

    def pump(self, now: float) -> None:
        while self.queue:
            data, source, to = self.queue.pop(0)
            if self.pump_filter is not None and not self.pump_filter(data, to):
                continue
            if to in self.outside:
                self.outside[to].append(data)
            elif to in self.sockets:
                self.sockets[to].on_datagram(data, source, now)


class NetSocket:
    def __init__(self, net: Net, local: tuple[str, int], on_datagram: Any) -> None:
        self.net = net
        self.local: PlainAddress = local
        self.on_datagram = on_datagram

    def sendto(self, data: bytes | bytearray, addr: PlainAddress) -> None:
        self.net.queue.append((bytes(data), self.local, addr))

    def close(self) -> None:
        self.net.sockets.pop(self.local, None)


CERTIFICATE = RTCCertificate.generateCertificate()


def core(net: Net, events: list[tuple[str, dict[str, Any]]]) -> WorkerCore:
    return WorkerCore(
        CERTIFICATE,
        "127.0.0.1",
        40000,
        lambda d, a: None,
        lambda name, data: events.append((name, data)),
        sansio.SETTINGS,
        net.opener,
    )


@pytest.fixture
def rig() -> Any:
    net = Net()
    home_events: list[tuple[str, dict[str, Any]]] = []
    home, far = core(net, home_events), core(net, [])
    home.plain_transport(
        {"session": "pub", "room": "r", "remote_host": PUBLISHER[0], "remote_port": PUBLISHER[1]},
        0.0,
    )
    publisher = home.sessions["pub"]
    producer = sansio.producer(publisher, encodings=[Encoding(ssrc=0x1111)], rtx=False)  # type: ignore[arg-type]
    home.producers[producer.id] = producer
    home.rooms["r"].add_producer(producer)
    producer.on_close.append(home._producer_closed)
    return net, home, far, producer, home_events


def connect_pipe(net: Net, home: WorkerCore, far: WorkerCore, producer_id: str) -> dict[str, Any]:
    out = home.handle("pipe_out", {"session": "out", "room": "r", "producer": producer_id}, 0.0)
    keys = ("kind", "codec", "clock_rate", "channels", "payload_type", "red_payload_type")
    params = {k: out[k] for k in keys if k in out}
    inbound = far.handle(
        "pipe_in",
        {
            "session": "in",
            "room": "r",
            "producer": producer_id,
            "fmtp": out["fmtp"],
            "ssrcs": out["ssrcs"],
            "remote_host": out["local_host"],
            "remote_port": out["local_port"],
            **params,
        },
        0.0,
    )
    home.handle(
        "plain_connect",
        {
            "session": "out",
            "remote_host": inbound["local_host"],
            "remote_port": inbound["local_port"],
        },
        0.0,
    )
    return out


def test_a_far_viewer_gets_the_packets_and_its_keyframe_request_reaches_the_publisher(rig):
    net, home, far, producer, home_events = rig
    out = connect_pipe(net, home, far, producer.id)
    assert out["kind"] == "video" and out["codec"] == "vp8" and len(out["ssrcs"]) == 1
    far.plain_transport(
        {"session": "view", "room": "r", "remote_host": VIEWER[0], "remote_port": VIEWER[1]}, 0.0
    )
    consumed = far.handle("consume", {"session": "view", "producer": producer.id}, 0.0)
    publisher_local = home.sessions["pub"].socket.local  # type: ignore[attr-defined]
    now = 1.0
    for seq in range(5):
        payload = VP8_KEY if seq == 0 else VP8_DELTA
        net.queue.append(
            (rtp(0x1111, 100 + seq, 90 * seq, payload, marker=True), PUBLISHER, publisher_local)
        )
        now += 0.03
        net.pump(now)
    got = [parse_rtp(d, read_map({})) for d in net.outside[VIEWER] if not 192 <= d[1] <= 223]
    assert [p.payload for p in got] == [VP8_KEY] + [VP8_DELTA] * 4
    assert {p.ssrc for p in got} == set(consumed["ssrcs"])

    net.outside[PUBLISHER].clear()
    now += 2.0  # past every keyframe throttle
    view_local = far.sessions["view"].socket.local  # type: ignore[attr-defined]
    net.queue.append((rtcp.pli(0x5555, consumed["ssrcs"][0]), VIEWER, view_local))
    for _ in range(3):
        net.pump(now)
        home.run_timers(now)
        far.run_timers(now)
        now += 0.6
    plis = [
        p
        for d in net.outside[PUBLISHER]
        for p in rtcp.parse_compound(d)
        if isinstance(p, rtcp.RtcpPsfbPacket) and p.fmt == rtcp.RTCP_PSFB_PLI
    ]
    assert plis and all(p.media_ssrc == 0x1111 for p in plis), "a PLI for the publisher's SSRC"

    home.handle("producer_close", {"producer": producer.id}, now)
    assert ("closed", {"session": "out", "reason": "source ended"}) in home_events
    assert "out" not in home.sessions


def test_pipe_requests_that_cannot_work_are_refused_clearly(rig):
    net, home, far, producer, _ = rig
    with pytest.raises(ControlError, match="no such producer"):
        home.handle("pipe_out", {"session": "out", "room": "r", "producer": "nope"}, 0.0)
    with pytest.raises(ControlError, match="no such producer in this room"):
        home.handle("pipe_out", {"session": "out", "room": "other", "producer": producer.id}, 0.0)
    good = {
        "session": "in",
        "room": "r",
        "producer": "p",
        "kind": "video",
        "codec": "vp8",
        "clock_rate": 90000,
        "channels": 1,
        "payload_type": 96,
        "fmtp": {},
        "ssrcs": [1234],
        "remote_host": "127.0.0.1",
        "remote_port": 7000,
    }
    for change, message in [
        ({"kind": "text"}, "kind must be audio or video"),
        ({"ssrcs": []}, "ssrcs must be"),
        ({"ssrcs": [1 << 32]}, "ssrcs must be"),
        ({"remote_port": 0}, "remote_port"),
        ({"payload_type": 200}, "payload_type"),
        ({"ssrcs": "1"}, "pipe_in.ssrcs must be a list"),
        ({"red_payload_type": 128}, "red_payload_type 0-127"),
    ]:
        with pytest.raises(ControlError, match=message):
            far.handle("pipe_in", {**good, **change}, 0.0)
    far.handle("pipe_in", good, 0.0)
    with pytest.raises(ControlError, match="exists"):
        far.handle("pipe_in", {**good, "session": "in2"}, 0.0)
    with pytest.raises(ControlError, match="has its peer already"):
        far.handle(
            "plain_connect", {"session": "in", "remote_host": "127.0.0.1", "remote_port": 9}, 0.0
        )
    with pytest.raises(ControlError, match="no such plain transport"):
        far.handle(
            "plain_connect", {"session": "x", "remote_host": "127.0.0.1", "remote_port": 9}, 0.0
        )


def test_a_packet_lost_on_the_pipe_is_nacked_back_and_resent(rig):
    net, home, far, producer, _ = rig
    connect_pipe(net, home, far, producer.id)
    far.plain_transport(
        {"session": "view", "room": "r", "remote_host": VIEWER[0], "remote_port": VIEWER[1]}, 0.0
    )
    far.handle("consume", {"session": "view", "producer": producer.id}, 0.0)
    publisher_local = home.sessions["pub"].socket.local  # type: ignore[attr-defined]
    pipe_far = far.sessions["in"].socket.local  # type: ignore[attr-defined]
    now = 1.0
    for seq in range(8):
        payload = VP8_KEY if seq == 0 else VP8_DELTA
        net.queue.append(
            (rtp(0x1111, 100 + seq, 90 * seq, payload, marker=True), PUBLISHER, publisher_local)
        )
        if seq == 4:  # the pipe loses this one
            net.pump_filter = lambda data, to: to != pipe_far or is_rtcp(data)
        now += 0.03
        net.pump(now)
        net.pump_filter = None
    for _ in range(10):
        now += 0.02
        far.run_timers(now)
        net.pump(now)
        home.run_timers(now)
        net.pump(now)
    got = [parse_rtp(d, read_map({})) for d in net.outside[VIEWER] if not 192 <= d[1] <= 223]
    seqs = sorted((p.seq - got[0].seq) & 0xFFFF for p in got)
    assert seqs == list(range(8)), "the lost packet reached the far viewer after a NACK"
    counters = home.sessions["out"].counters
    assert counters.nacks_in >= 1, "the far producer asked the home side"
    assert counters.retransmissions == 1, "which resent the one packet from its cache"


def test_a_simulcast_publisher_keeps_sending_only_the_layers_far_viewers_need():
    net = Net()
    far_events: list[tuple[str, dict[str, Any]]] = []
    home, far = core(net, []), core(net, far_events)
    home.plain_transport(
        {"session": "pub", "room": "r", "remote_host": PUBLISHER[0], "remote_port": PUBLISHER[1]},
        0.0,
    )
    encodings = [Encoding(ssrc=0x1111), Encoding(ssrc=0x2222)]
    producer = sansio.producer(home.sessions["pub"], encodings=encodings, rtx=False)  # type: ignore[arg-type]
    home.producers[producer.id] = producer
    home.rooms["r"].add_producer(producer)
    connect_pipe(net, home, far, producer.id)
    assert producer.layer_demand() == [True, True], "every layer until the far side says"

    now = 0.0
    while not any(name == "layers" for name, _ in far_events) and now < 20:
        now += 0.5
        far.run_timers(now)
    (layers,) = [data for name, data in far_events if name == "layers"]
    assert layers["session"] == "in" and layers["active"] == [True, False], (
        "nobody on the far worker watches the top layer"
    )
    home.handle("pipe_demand", {"session": "out", "active": layers["active"]}, now)
    assert producer.layer_demand() == [True, False]
    with pytest.raises(ControlError, match="2 flags"):
        home.handle("pipe_demand", {"session": "out", "active": [True]}, now)
    with pytest.raises(ControlError, match="no such pipe"):
        home.handle("pipe_demand", {"session": "pub", "active": [True, True]}, now)


def test_a_piped_producer_keeps_the_publishers_redundant_audio(rig):
    """The far producer is told the RED number (sfu/red.py), so its viewers get RED
    or plain Opus as they negotiated, like the home worker's."""
    net, home, far, _, _ = rig
    publisher = home.sessions["pub"]
    audio = sansio.producer(publisher, "audio", [Encoding(ssrc=0x3333)], mid="1")  # type: ignore[arg-type]
    audio.red_pt = 63
    home.producers[audio.id] = audio
    home.rooms["r"].add_producer(audio)
    out = connect_pipe(net, home, far, audio.id)
    assert out["red_payload_type"] == 63
    assert far.producers[audio.id].red_pt == 63
