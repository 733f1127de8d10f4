"""The shared port's intake: STUN and DTLS never wait behind queued media (issue 9)."""

from __future__ import annotations

import asyncio
import socket

from sfu.ice import Address
from sfu.intake import DRAIN_SLICE, MEDIA_LIMIT, OVERHEAD, Intake, is_handshake
from sfu.process import Clock, UdpPort
from tests.sansio import VP8_DELTA, rtp
from tests.wire import binding_request

PEER = ("127.0.0.1", 5000)
STUN = binding_request("server:client", "password-of-at-least-22-chars")
DTLS_FLIGHT = bytes([22, 0xFE, 0xFD]) + bytes(20)  # a DTLS 1.2 handshake record's header


def media(n: int) -> bytes:
    return rtp(1234, n, n * 3000, VP8_DELTA)


class Recorder:
    def __init__(self) -> None:
        self.handled: list[bytes] = []

    def __call__(self, data: bytes, addr: Address, now: float) -> None:
        self.handled.append(data)


def test_rfc_7983_first_bytes_tell_a_handshake_from_media():
    assert is_handshake(STUN) and is_handshake(DTLS_FLIGHT)
    rtcp_report = bytes([0x80, 200]) + bytes(6)
    assert not any(is_handshake(d) for d in (media(1), rtcp_report, b"", bytes([64]) + bytes(8)))


def test_a_handshake_is_handled_before_the_media_read_ahead_of_it():
    recorder = Recorder()
    intake = Intake(recorder, lambda: 0.0)
    packets = [media(n) for n in range(3)]
    for packet in packets:
        intake.put(packet, PEER)
    intake.put(STUN, PEER)
    intake.put(DTLS_FLIGHT, PEER)
    assert recorder.handled == [STUN, DTLS_FLIGHT]
    assert intake.queued_bytes == sum(len(p) + OVERHEAD for p in packets)
    assert intake.drain() is False
    assert recorder.handled == [STUN, DTLS_FLIGHT, *packets]  # media keeps its order
    assert intake.queued_bytes == 0


def test_media_is_handled_in_slices_so_the_socket_is_read_between_them():
    recorder = Recorder()
    clock = iter(i * 0.001 for i in range(1000))  # each packet takes a millisecond
    intake = Intake(recorder, lambda: next(clock))
    for n in range(100):
        intake.put(media(n), PEER)
    assert intake.drain() is True
    assert len(recorder.handled) == round(DRAIN_SLICE / 0.001)
    assert len(intake.media) == 100 - len(recorder.handled)


def test_each_handshake_is_handled_at_the_time_it_is_handled_not_when_the_batch_was_read():
    """A burst of DTLS flights takes milliseconds; each one's timers start from its own
    time, not from the moment the batch was read."""
    times: list[float] = []
    clock = iter([1.0, 1.004])
    intake = Intake(lambda data, addr, now: times.append(now), lambda: next(clock))
    intake.put(DTLS_FLIGHT, PEER)
    intake.put(STUN, PEER)
    assert times == [1.0, 1.004]


def test_a_full_media_queue_drops_what_arrives_as_the_kernels_did_but_never_a_handshake():
    recorder = Recorder()
    intake = Intake(recorder, lambda: 0.0)
    size = len(media(0)) + OVERHEAD
    fits = -(-MEDIA_LIMIT // size)  # the last one that fits takes the queue over the line
    for n in range(fits + 5):
        intake.put(media(n), PEER)
    assert len(intake.media) == fits and intake.dropped == 5
    intake.put(STUN, PEER)
    assert recorder.handled == [STUN]
    assert intake.drain() is False
    assert recorder.handled[1:] == [media(n) for n in range(fits)]  # the oldest kept
    assert intake.queued_bytes == 0


def test_a_datagram_whose_handling_fails_does_not_stop_the_others():
    handled: list[bytes] = []

    def handle(data: bytes, addr: Address, now: float) -> None:
        if data == media(1):
            raise ValueError("a broken packet")
        handled.append(data)

    intake = Intake(handle, lambda: 0.0)
    for n in range(3):
        intake.put(media(n), PEER)
    intake.put(STUN, PEER)
    intake.drain()
    assert handled == [STUN, media(0), media(2)] and intake.errors == 1


async def test_a_check_sent_behind_a_backlog_of_media_is_answered_before_that_backlog():
    """Through the kernel: 300 media datagrams and then a STUN check reach the port
    before the worker's loop runs; the check is handled before the media sent ahead of
    it (in arrival order it would be last)."""
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    port = UdpPort(loop, Clock(loop), "127.0.0.1", 0)
    port.start(recorder)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        backlog = [media(n) + bytes(1000) for n in range(300)]
        for packet in backlog:
            client.sendto(packet, ("127.0.0.1", port.port))
        client.sendto(STUN, ("127.0.0.1", port.port))
        deadline = loop.time() + 10
        while len(recorder.handled) < 301 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert len(recorder.handled) == 301, "not every datagram was handled"
        assert recorder.handled.index(STUN) < 300
        assert [d for d in recorder.handled if d != STUN] == backlog
    finally:
        client.close()
        port.close()


async def test_a_send_the_kernel_refuses_is_counted_not_raised():
    loop = asyncio.get_running_loop()
    port = UdpPort(loop, Clock(loop), "127.0.0.1", 0)
    try:
        port.sendto(b"\x80" + bytes(20), ("127.0.0.1", 0))  # port 0: EINVAL
        assert port.send_errors == 1
    finally:
        port.close()
