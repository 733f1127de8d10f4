"""The shared port's datagrams in the order that keeps sessions alive: handshakes first.

A worker reads its one UDP socket in arrival order, so when it falls behind, a peer's
STUN check or DTLS flight waits behind every media packet queued before it, and once the
kernel's queue is full it is dropped with them: new peers' handshakes stall, admitted
peers' consent checks go unanswered. Reading a datagram costs a small share of handling
one (an incoming packet may be forwarded to hundreds of viewers), so the I/O layer reads
everything the kernel holds and puts it here: STUN and DTLS (told apart by their first
byte, RFC 7983) are handled at once; media waits in a queue that is handled in slices,
with the socket read again between two slices. The media queue holds what the kernel's
receive buffer held before (:data:`MEDIA_LIMIT`) and, like it, drops what arrives
when full: the backlog and its loss are what they were; only the handshakes skip it.
(Dropping the oldest media instead, after 0.3 s, was tried: the publisher's
retransmissions of what the worker itself had dropped came back as more load, and a
saturated worker forwarded a quarter less.)
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from sfu.ice import Address

logger = logging.getLogger("sfu.intake")

MEDIA_LIMIT = 4 << 20  # bytes of media queued at most, as the kernel's receive buffer held
OVERHEAD = 768  # bytes counted per datagram beyond its own, about what the kernel counts
# (measured on loopback: 832 for a 100-byte datagram, 2,304 for 1,200), so the queue's
# size reads as the kernel's did, against the same overload threshold
DRAIN_SLICE = 0.005  # seconds of media handling between two reads of the socket

Handler = Callable[[bytes, Address, float], None]


def is_handshake(data: bytes) -> bool:
    """STUN (first byte 0-3) or DTLS (20-63), RFC 7983 section 7."""
    return bool(data) and (data[0] < 4 or 20 <= data[0] < 64)


class Intake:
    """Datagrams read from the socket, handled handshakes first, media in slices."""

    def __init__(self, handle: Handler, clock: Callable[[], float]) -> None:
        self.handle = handle
        self.clock = clock  # read per handshake: a burst of DTLS flights takes milliseconds
        self.media: collections.deque[tuple[bytes, Address]] = collections.deque()
        self.queued_bytes = 0
        self.dropped = 0  # media datagrams that found the queue full
        self.errors = 0

    def put(self, data: bytes, addr: Address) -> None:
        """One datagram just read: a handshake is handled now, media is queued."""
        if is_handshake(data):
            self._handle(data, addr, self.clock())
            return
        if self.queued_bytes >= MEDIA_LIMIT:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                logger.warning(
                    "worker behind: %d media datagrams dropped, %d bytes queued",
                    self.dropped,
                    self.queued_bytes,
                )
            return
        self.media.append((data, addr))
        self.queued_bytes += len(data) + OVERHEAD

    def drain(self) -> bool:
        """Handle queued media, oldest first, for at most :data:`DRAIN_SLICE`; whether
        some is left (the caller reads the socket, then drains again)."""
        media = self.media
        clock = self.clock
        now = clock()
        end = now + DRAIN_SLICE
        while media:
            data, addr = media.popleft()
            self.queued_bytes -= len(data) + OVERHEAD
            self._handle(data, addr, now)
            now = clock()
            if now >= end:
                break
        return bool(media)

    def _handle(self, data: bytes, addr: Address, now: float) -> None:
        try:
            self.handle(data, addr, now)
        except Exception:  # one bad packet must never stop the worker
            self.errors += 1
            if self.errors < 20 or self.errors % 1000 == 0:
                logger.exception(
                    "worker: error handling a datagram from %s (%d so far)", addr, self.errors
                )
