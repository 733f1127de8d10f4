"""Socket-free helpers for the SFU's state machines: fake sockets, transports, packets.

Two plain transports wired back to back (aioquic's ``transfer`` idea): what one sends is
handed to the other's ``receive``, with no loop, no socket and no crypto in between, so
forwarding can be checked packet by packet with a clock that is just a number.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from sfu.consumer import SimpleConsumer, consumer_for
from sfu.plain_transport import PlainAddress, PlainTransport
from sfu.producer import Producer
from sfu.rtp import ExtensionLayout, RtpPacket, parse_rtp, read_map
from sfu.sdp import URI_MID, URI_RID, URI_RRID, Codec
from sfu.settings import MediaSettings
from sfu.streams import Encoding
from sfu.timers import TimerQueue
from sfu.transport import TransportContext

VP8 = Codec(96, "vp8", 90000, rtx_payload_type=97)
OPUS = Codec(111, "opus", 48000, 2)
SETTINGS = MediaSettings(publisher_bitrate=1_000_000)
PUBLISHER_ADDR = ("127.0.0.1", 5000)
VIEWER_ADDR = ("127.0.0.1", 6000)
# Publisher extension ids, as Chromium numbers them.
PUBLISH_EXTENSIONS = {URI_MID: 4, URI_RID: 10, URI_RRID: 11}

# A VP8 payload descriptor (S=1, PID 0) + frame tag with the P bit clear and the keyframe
# start code (RFC 7741, RFC 6386): the SFU starts viewers on it. Deltas: P bit set.
VP8_KEY = bytes([0x10, 0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A]) + bytes(20)
VP8_DELTA = bytes([0x10, 0x01, 0x00, 0x00]) + bytes(20)


class FakeSocket:
    """What a plain transport sends, kept in a list."""

    def __init__(self, local: PlainAddress = ("127.0.0.1", 7000)) -> None:
        self.local = local
        self.sent: list[tuple[bytes, PlainAddress]] = []
        self.closed = False

    def sendto(self, data: bytes | bytearray, addr: PlainAddress) -> None:
        self.sent.append((bytes(data), addr))

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[bytes]:
        out = [data for data, _ in self.sent]
        self.sent.clear()
        return out

    def rtp(self) -> list[RtpPacket]:
        """What was sent that is RTP (not RTCP), parsed; and forget it."""
        return [parse_rtp(d, read_map({})) for d in self.take() if not 192 <= d[1] <= 223]


def plain(
    timers: TimerQueue,
    session: str,
    remote: PlainAddress = VIEWER_ADDR,
    room: str = "r",
    events: list[tuple[str, dict[str, Any]]] | None = None,
    extensions: dict[str, int] | None = None,
    now: float = 0.0,
) -> tuple[PlainTransport, FakeSocket]:
    """A connected plain transport on a fake socket."""
    sock = FakeSocket()
    sink = events if events is not None else []
    context = TransportContext(timers, lambda name, data: sink.append((name, data)), SETTINGS)
    transport = PlainTransport(session, room, session, sock, remote, context, now, extensions)
    transport.start(now)
    return transport, sock


def producer(
    transport: PlainTransport,
    kind: str = "video",
    encodings: list[Encoding] | None = None,
    mid: str = "0",
    nack: bool = True,
    rtx: bool = True,
) -> Producer:
    codec = VP8 if kind == "video" else OPUS
    made = Producer(
        f"{transport.session_id}-{mid}",
        transport,
        kind,
        mid,
        codec,
        encodings or [Encoding(ssrc=0x1111, rtx_ssrc=0x2222)],
        use_nack=nack and kind == "video",
        use_rtx=rtx and kind == "video",
    )
    transport.add_producer(made)
    return made


def consumer(
    viewer: PlainTransport, source: Producer, rtx: bool = True, mid: str = "0"
) -> SimpleConsumer:
    codec = source.codec
    made = consumer_for(
        f"{viewer.session_id}-{mid}",
        source,
        viewer,
        codec.payload_type,
        codec.rtx_payload_type if rtx and source.is_video else None,
        ExtensionLayout({}, mid),
    )
    viewer.add_consumer(made)
    return made


def rtp(
    ssrc: int,
    seq: int,
    ts: int,
    payload: bytes,
    pt: int = 96,
    marker: bool = False,
    extensions: list[tuple[int, bytes]] | None = None,
) -> bytes:
    """An RTP packet as a publisher sends it (one-byte header extensions if any)."""
    b0 = 0x80
    ext = b""
    if extensions:
        b0 |= 0x10
        body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in extensions)
        body += bytes(-len(body) % 4)
        ext = struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    header = struct.pack(
        "!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc
    )
    return header + ext + payload


def rtx(ssrc: int, seq: int, ts: int, original_seq: int, payload: bytes, pt: int = 97) -> bytes:
    """An RFC 4588 retransmission: the original sequence number leads the payload."""
    return rtp(ssrc, seq, ts, struct.pack("!H", original_seq) + payload, pt=pt)


def random_payload(size: int = 100) -> bytes:
    return bytes([0x00]) + os.urandom(size - 1)  # VP8: S=0, not a frame start
