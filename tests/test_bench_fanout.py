"""Benchmarks of the forwarding hot path through the real objects (run with --benchmark-enable).

One incoming VP8 packet is fanned out to 100 viewers: ``RecvStream.receive`` records it
and ``Producer.forward`` builds one template per extension layout, then per viewer
``SimpleConsumer.send`` copies and patches it, ``WebRtcTransport.send_rtp`` encrypts it
(AEAD_AES_128_GCM, libsrtp called directly) and hands it to the transport's ``sender``,
a real UDP socket's ``sendto`` to a sink socket on 127.0.0.1
(the kernel queues what fits in the sink's buffer and drops the rest, as it would for a
slow viewer). Every benchmark also checks its result, so with benchmarks disabled (the
default) these are ordinary tests.

Per-packet rates: one round is one incoming packet, so ``100 / median`` is forwarded
packets per second on one core (the ``extra_info`` of each result says so too).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator

import pytest
from aiortc.rtcdtlstransport import RTCCertificate
from pylibsrtp import Policy, Session

from sfu.consumer import SimpleConsumer
from sfu.ice import IceLiteSession
from sfu.producer import Producer
from sfu.rtp import ExtensionLayout, RtpPacket, parse_rtp, read_map
from sfu.sdp import URI_ABS_SEND_TIME, URI_MID, URI_TWCC, Codec
from sfu.settings import MediaSettings
from sfu.srtp import SrtpContext
from sfu.streams import Encoding
from sfu.timers import TimerQueue
from sfu.transport import TransportContext
from sfu.webrtc_transport import WebRtcTransport
from sfu.worker import WorkerCore

VIEWERS = 100
ROUNDS = 1500
GCM = Policy.SRTP_PROFILE_AEAD_AES_128_GCM
GCM_KEY_LEN = 16 + 12
PUB_SSRC = 0x11223344
PUB_RTX_SSRC = 0x55667788
PUB_ADDR = ("127.0.0.1", 40000)
# What Chromium offers a receiving video section (ids as in its offers): the SFU writes
# mid and abs-send-time and a per-viewer transport-cc sequence into every copy.
VIEW_EXTENSIONS = {URI_MID: 1, URI_ABS_SEND_TIME: 2, URI_TWCC: 3}
PUBLISH_EXTENSIONS = {URI_MID: 4}

# A VP8 payload descriptor + frame tag whose P bit is clear and with the keyframe start
# code (RFC 7741 / RFC 6386): the SFU starts viewers on it. Deltas: S=0, not a frame start.
VP8_KEY_HEAD = bytes([0x90, 0x80, 0x81, 0x23, 0x50, 0x02, 0x00, 0x9D, 0x01, 0x2A])
VP8_DELTA_HEAD = bytes([0x80, 0x80, 0x81, 0x23])


def rtp_packet(seq: int, ts: int, payload: bytes, marker: bool = False, mid: bytes = b"0") -> bytes:
    """A publisher's RTP packet as a browser sends it: mid in a one-byte extension."""
    ext = bytes([(4 << 4) | (len(mid) - 1)]) + mid
    ext += bytes(-len(ext) % 4)
    header = struct.pack("!BBHII", 0x90, (0x80 if marker else 0) | 96, seq, ts, PUB_SSRC)
    return header + struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext + payload


def payload_of(size: int, keyframe: bool) -> bytes:
    head = VP8_KEY_HEAD if keyframe else VP8_DELTA_HEAD
    body = os.urandom(size - len(head))
    return head + body


def srtp_session(key: bytes, inbound: bool) -> Session:
    policy = Policy(
        key=key,
        ssrc_type=Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=GCM,
    )
    policy.allow_repeat_tx = True
    return Session(policy)


def webrtc_transport(
    timers: TimerQueue,
    session: str,
    sender: Callable[[bytes, tuple[str, int]], object],
    extensions: dict[str, int],
    now: float,
) -> WebRtcTransport:
    context = TransportContext(timers, lambda name, data: None, MediaSettings())
    ice = IceLiteSession(f"{session:>8}", "p" * 24, "remote", now)
    return WebRtcTransport(session, "room", session, ice, None, sender, context, now, extensions)


class FanoutRig:
    """A publisher's Producer with ``viewers`` consumers, each on its own WebRtcTransport with
    real SRTP keys, all sending through one UDP socket to one sink socket."""

    def __init__(self, viewers: int, payload_size: int, send: str = "udp") -> None:
        self.now = 1000.0
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                self.sink.setsockopt(socket.SOL_SOCKET, option, 64 << 20)
                break
            except OSError:
                continue
        self.sink.bind(("127.0.0.1", 0))
        self.sink_addr = self.sink.getsockname()
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.out.bind(("127.0.0.1", 0))
        sender: Callable[[bytes, tuple[str, int]], object]
        if send == "udp":
            sender = self.out.sendto
        else:  # "null": everything but the syscall, to split the cost
            self.null_sent = 0

            def sender(data: bytes, addr: tuple[str, int]) -> None:
                self.null_sent += 1

        self.publisher_out: list[bytes] = []
        self.pub_key_tx = os.urandom(GCM_KEY_LEN)  # the publisher protects with this
        self.timers = TimerQueue()
        self.publisher = webrtc_transport(
            self.timers,
            "pub",
            lambda data, addr: self.publisher_out.append(data),
            PUBLISH_EXTENSIONS,
            self.now,
        )
        self.publisher.addr = PUB_ADDR
        self.publisher.start_srtp(
            SrtpContext(GCM, os.urandom(GCM_KEY_LEN), self.pub_key_tx), self.now, "GCM"
        )
        codec = Codec(96, "vp8", 90000, rtx_payload_type=97)
        self.producer = Producer(
            "pub:0",
            self.publisher,
            "video",
            "0",
            codec,
            [Encoding(ssrc=PUB_SSRC, rtx_ssrc=PUB_RTX_SSRC)],
            use_nack=True,
            use_rtx=True,
        )
        self.publisher.add_producer(self.producer)
        self.stream = self.producer.streams[0]
        self.keys: dict[int, bytes] = {}
        self.consumers: list[SimpleConsumer] = []
        for n in range(viewers):
            transport = webrtc_transport(self.timers, f"v{n}", sender, VIEW_EXTENSIONS, self.now)
            tx_key = os.urandom(GCM_KEY_LEN)
            transport.addr = self.sink_addr
            transport.start_srtp(SrtpContext(GCM, tx_key, os.urandom(GCM_KEY_LEN)), self.now, "GCM")
            consumer = SimpleConsumer(
                f"v{n}:0", self.producer, transport, 96, 97, ExtensionLayout(VIEW_EXTENSIONS, "0")
            )
            transport.add_consumer(consumer)  # SRTP is up: activates, waits for a keyframe
            self.keys[consumer.ssrc] = tx_key
            self.consumers.append(consumer)
        self.ext_map = read_map(PUBLISH_EXTENSIONS)
        self.seq = 1000
        self.ts = 3000
        self.keyframe = rtp_packet(self.seq, self.ts, payload_of(payload_size, True))
        self.delta_payload = payload_of(payload_size, False)
        self.delta = parse_rtp(
            rtp_packet(self.seq + 1, self.ts, self.delta_payload, marker=True), self.ext_map
        )
        self.sent = 0

    def start(self) -> None:
        """Feed the keyframe: every consumer starts on it."""
        self.stream.receive(parse_rtp(self.keyframe, self.ext_map), self.now)
        assert all(not c.waiting_keyframe for c in self.consumers)
        self.seq += 1

    def next_delta(self) -> tuple[tuple[RtpPacket, float], dict[str, object]]:
        """Setup for one round: the same packet object, advanced one sequence number."""
        packet = self.delta
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 1500) & 0xFFFFFFFF
        self.now += 0.001
        packet.seq = self.seq
        packet.ts = self.ts
        if self.sent & 0x3FFF == 0x3FFF:  # keep within each consumer's forward window
            for consumer in self.consumers:
                consumer.start_seq = (self.seq - 1) & 0xFFFF
        self.sent += 1
        return (packet, self.now), {}

    def drain(self) -> list[bytes]:
        self.sink.settimeout(0.5)
        out = []
        try:
            while True:
                out.append(self.sink.recv(2048))
                self.sink.settimeout(0.05)
        except TimeoutError:
            pass
        return out

    def close(self) -> None:
        self.sink.close()
        self.out.close()


def check_forwarded(
    rig: FanoutRig, datagrams: list[bytes], source_seq: int, payload: bytes
) -> None:
    """Every viewer got one copy that decrypts with its own key to the source payload, with
    its own SSRC, its rewritten sequence number and the mid/abs-send-time/twcc extensions."""
    by_ssrc = {c.ssrc: c for c in rig.consumers}
    seen: set[int] = set()
    for data in datagrams:
        ssrc = struct.unpack_from("!I", data, 8)[0]
        consumer = by_ssrc[ssrc]
        plain = srtp_session(rig.keys[ssrc], inbound=True).unprotect(data)
        b0, b1, seq = struct.unpack_from("!BBH", plain, 0)
        if seq != (source_seq + consumer.seq_offset) & 0xFFFF:
            continue  # the keyframe copy (or another packet) for this viewer
        assert b0 == 0x90 and b1 & 0x7F == 96
        profile, words = struct.unpack_from("!HH", plain, 12)
        assert profile == 0xBEDE
        ext = plain[16 : 16 + 4 * words]
        ids = set()
        pos = 0
        while pos < len(ext):
            if ext[pos] == 0:
                pos += 1
                continue
            ext_id, length = ext[pos] >> 4, (ext[pos] & 0x0F) + 1
            ids.add(ext_id)
            if ext_id == 1:
                assert ext[pos + 1 : pos + 1 + length] == b"0"
            pos += 1 + length
        assert ids == {1, 2, 3}
        assert plain[16 + 4 * words :] == payload
        seen.add(ssrc)
    assert seen == set(by_ssrc), f"{len(seen)} of {len(by_ssrc)} viewers got the packet"


@pytest.fixture(params=[1200, 100], ids=["1200B", "100B"])
def payload_size(request) -> int:
    return request.param


@pytest.fixture
def rig(payload_size) -> Iterator[FanoutRig]:
    rig = FanoutRig(VIEWERS, payload_size)
    try:
        yield rig
    finally:
        rig.close()


def test_bench_fanout_1_packet_to_100_viewers_srtp_gcm_udp_sendto(benchmark, rig, payload_size):
    """RecvStream.receive of one VP8 packet -> 100 x (copy, patch, protect, sendto)."""
    rig.start()
    rig.drain()
    benchmark.extra_info.update(
        packets_out_per_round=VIEWERS, payload=payload_size, send="udp sendto"
    )
    benchmark.pedantic(rig.stream.receive, setup=rig.next_delta, rounds=ROUNDS, warmup_rounds=50)
    rig.drain()
    # Correctness, once, on a fresh packet.
    args, _ = rig.next_delta()
    rig.stream.receive(*args)
    check_forwarded(rig, rig.drain(), rig.seq, rig.delta_payload)


def test_bench_fanout_1_packet_to_100_viewers_srtp_gcm_no_syscall(benchmark, payload_size):
    """The same without the sendto syscall: the Python + libsrtp share of the cost."""
    rig = FanoutRig(VIEWERS, payload_size, send="null")
    try:
        rig.start()
        benchmark.extra_info.update(
            packets_out_per_round=VIEWERS, payload=payload_size, send="none"
        )
        benchmark.pedantic(
            rig.stream.receive, setup=rig.next_delta, rounds=ROUNDS, warmup_rounds=50
        )
        before = rig.null_sent
        args, _ = rig.next_delta()
        rig.stream.receive(*args)
        assert rig.null_sent - before == VIEWERS
    finally:
        rig.close()


def test_bench_worker_receive_srtp_to_100_viewers(benchmark, rig, payload_size):
    """WorkerCore.receive of one SRTP datagram from the publisher: demux, unprotect, parse,
    then the fan-out above. The publisher's packets are protected in the (untimed) setup."""
    core = WorkerCore(
        RTCCertificate.generateCertificate(),
        "127.0.0.1",
        0,
        rig.out.sendto,
        lambda name, data: None,
    )
    core.demux.by_addr[PUB_ADDR] = rig.publisher
    publisher_srtp = srtp_session(rig.pub_key_tx, inbound=False)
    rig.start()
    rig.drain()
    state = {"n": 0}

    def next_datagram() -> tuple[tuple[bytes, tuple[str, int], float], dict[str, object]]:
        rig.seq = (rig.seq + 1) & 0xFFFF
        rig.ts = (rig.ts + 1500) & 0xFFFFFFFF
        rig.now += 0.001
        state["n"] += 1
        if state["n"] & 0x3FFF == 0x3FFF:
            for consumer in rig.consumers:
                consumer.start_seq = (rig.seq - 1) & 0xFFFF
        data = publisher_srtp.protect(rtp_packet(rig.seq, rig.ts, rig.delta_payload))
        return (data, PUB_ADDR, rig.now), {}

    benchmark.extra_info.update(
        packets_out_per_round=VIEWERS, payload=payload_size, send="udp sendto"
    )
    benchmark.pedantic(core.receive, setup=next_datagram, rounds=ROUNDS, warmup_rounds=50)
    rig.drain()
    args, _ = next_datagram()
    core.receive(*args)
    check_forwarded(rig, rig.drain(), rig.seq, rig.delta_payload)
    assert rig.publisher.counters.dropped == 0


def test_bench_parse_rtp(benchmark, payload_size):
    ext_map = read_map(PUBLISH_EXTENSIONS)
    data = rtp_packet(4242, 90000, payload_of(payload_size, False), marker=True)
    packet = benchmark(parse_rtp, data, ext_map)
    assert (packet.seq, packet.ts, packet.ssrc, packet.pt, packet.marker) == (
        4242,
        90000,
        PUB_SSRC,
        96,
        0x80,
    )
    assert packet.mid == b"0" and len(packet.payload) == payload_size


def test_bench_srtp_protect_gcm(benchmark, payload_size):
    tx_key = os.urandom(GCM_KEY_LEN)
    context = SrtpContext(GCM, tx_key, os.urandom(GCM_KEY_LEN))
    plain = bytearray(rtp_packet(777, 1234, payload_of(payload_size, False)))
    data = benchmark(context.protect, plain)
    assert len(data) == len(plain) + 16  # the GCM tag
    assert srtp_session(tx_key, inbound=True).unprotect(data) == bytes(plain)
