"""ICE-TCP (RFC 6544) for a worker's passive TCP candidate, sans-I/O.

Over TCP every STUN, DTLS and SRTP packet is framed by RFC 4571 (RFC 6544 section 3): a
two-byte big-endian length, then the packet. :class:`FrameDecoder` turns a byte stream
into packets with a bounded buffer; :func:`frame` does the reverse.

A TCP connection is one more path to a :class:`~sfu.webrtc_transport.WebRtcTransport`:
its STUN checks go through the same ufrag lookup and MESSAGE-INTEGRITY check as UDP ones
(:meth:`sfu.demux.Demux.receive_tcp`), and once a check on it passes the connection
belongs to that transport. Its remote address is a :class:`TcpAddress`, which never
equals a UDP address, so a nomination over TCP moves the transport's sends onto it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct("!H")
MAX_FRAME = 0xFFFF  # the largest length two bytes can say
# A packet larger than this ends the connection: media and DTLS records stay under an MTU,
# and refusing early keeps a peer from making us buffer 64 KiB per connection.
DEFAULT_MAX_PACKET = 4096


class FramingError(ValueError):
    """The stream cannot be RFC 4571 frames we accept; the connection must close."""


def frame(packet: bytes | bytearray | memoryview) -> bytes:
    """One packet with its length prefix, as a new bytes object (safe to queue)."""
    size = len(packet)
    if size > MAX_FRAME:
        raise FramingError(f"a {size}-byte packet does not fit an RFC 4571 frame")
    return HEADER.pack(size) + packet


class FrameDecoder:
    """Bytes of one TCP stream in, whole packets out.

    At most one partial frame is kept, and a frame that says it is longer than
    ``max_packet`` raises :class:`FramingError` as soon as its header arrives, so the
    buffer never holds more than ``max_packet + 1`` bytes between calls. Zero-length
    frames carry nothing and are skipped.
    """

    __slots__ = ("max_packet", "_buffer")

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        if not 0 < max_packet <= MAX_FRAME:
            raise ValueError(f"max_packet must be 1-{MAX_FRAME}")
        self.max_packet = max_packet
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held of an unfinished frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The packets completed by ``data``, in order; raises FramingError on oversize."""
        buffer = self._buffer
        buffer += data
        packets: list[bytes] = []
        offset = 0
        end = len(buffer)
        try:
            while end - offset >= 2:
                (size,) = HEADER.unpack_from(buffer, offset)
                if size > self.max_packet:
                    raise FramingError(
                        f"a {size}-byte frame is over the {self.max_packet}-byte limit"
                    )
                if end - offset - 2 < size:
                    break
                if size:
                    packets.append(bytes(buffer[offset + 2 : offset + 2 + size]))
                offset += 2 + size
        finally:
            del buffer[:offset]
        return packets


class TcpAddress(tuple[str, int]):
    """The remote (host, port) of an ICE-TCP connection.

    It packs into XOR-MAPPED-ADDRESS like any address, but equals only another
    TcpAddress: a UDP peer at the same host and port is another path.
    """

    __slots__ = ()

    def __new__(cls, host: str, port: int) -> TcpAddress:
        return super().__new__(cls, (host, port))

    def __eq__(self, other: object) -> bool:
        return type(other) is TcpAddress and tuple.__eq__(self, other) is True

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(("tcp", self[0], self[1]))

    def __repr__(self) -> str:
        return f"tcp:{self[0]}:{self[1]}"


class TcpPath:
    """One accepted ICE-TCP connection as the demultiplexer sees it.

    ``send`` frames one packet and writes it to the connection (or drops it when the
    connection cannot take more); ``transport`` is the
    WebRtcTransport whose check first passed on it (None until then). The asyncio layer
    (:mod:`sfu.process`) owns the socket and calls :meth:`sfu.demux.Demux.receive_tcp`
    with each packet the decoder yields.
    """

    __slots__ = ("addr", "decoder", "send", "transport", "opened")

    def __init__(
        self,
        addr: TcpAddress,
        send: Callable[[bytes], None],
        now: float,
        max_packet: int = DEFAULT_MAX_PACKET,
    ) -> None:
        self.addr = addr
        self.decoder = FrameDecoder(max_packet)
        self.send = send
        self.transport: Any = None  # sfu.webrtc_transport.WebRtcTransport, once bound
        self.opened = now


def candidate_priority(type_preference: int, local_preference: int, component: int = 1) -> int:
    """RFC 8445 5.1.2.1 priority."""
    return (type_preference << 24) | (local_preference << 8) | (256 - component)


# RFC 6544 4.2: a passive host candidate's local preference is
# (2^13 * direction-pref) + other-pref with direction-pref 4 for passive. Its type
# preference sits below UDP host (126) so that a browser that can use UDP does.
TCP_PASSIVE_PRIORITY = candidate_priority(90, (4 << 13) | 8191)
