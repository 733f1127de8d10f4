"""Plain RTP/RTCP on a local socket of its own: no ICE, no DTLS, no SRTP.

For peers on the same machine or a trusted link: a recorder process, or a pipe that
carries a producer to another worker. The socket (UDP on loopback, or a Unix datagram
socket) is opened by the I/O layer through a :data:`SocketOpener`; this class only
decides what to do with datagrams. It answers one remote address: the one it was
given, or (comedia) the first that sends to it. Datagrams from anywhere else are
dropped, so another local process cannot inject media into a room.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from sfu.rtp import U16, is_rtcp
from sfu.transport import Transport, TransportContext

logger = logging.getLogger(__name__)

PlainAddress = tuple[str, int] | str  # (host, port) for UDP, a path for a Unix socket


class PlainSocket(Protocol):
    """What the I/O layer opened for a plain transport."""

    local: PlainAddress

    def sendto(self, data: bytes | bytearray, addr: PlainAddress) -> None: ...

    def close(self) -> None: ...


# (unix, bind host or socket path, on_datagram(data, addr, now)) -> the open socket
SocketOpener = Callable[[bool, str, Callable[[bytes, Any, float], None]], PlainSocket]


class PlainTransport(Transport):
    kind = "plain"

    def __init__(
        self,
        session_id: str,
        room: str,
        identity: str,
        socket: PlainSocket,
        remote: PlainAddress | None,
        context: TransportContext,
        now: float,
        extensions: dict[str, int] | None = None,
        comedia: bool = True,
    ) -> None:
        super().__init__(session_id, room, identity, context, now, extensions)
        self.socket = socket
        self.remote = remote
        # Without comedia a transport with no remote drops everything until connect():
        # a pipe's home side, whose far end is named by the control process.
        self.comedia = comedia

    @property
    def connected(self) -> bool:
        return self.remote is not None and not self.closed

    def start(self, now: float) -> None:
        """Called once the worker has registered the transport: with a known remote, media
        may flow at once."""
        if self.remote is not None:
            self._on_connected(now, {"remote": _printable(self.remote)})

    def connect(self, remote: PlainAddress, now: float) -> None:
        """Name the peer of a transport that has none yet; media flows from now on."""
        if self.remote is not None:
            raise ValueError("this plain transport has its peer already")
        self.remote = remote
        self.start(now)

    # -- input --------------------------------------------------------------------------------
    def receive(self, data: bytes, addr: PlainAddress, now: float) -> None:
        self.now = now
        if self.closed or len(data) < 12 or data[0] >> 6 != 2:
            self.counters.dropped += 1
            return
        if self.remote is None:
            if not self.comedia:
                self.counters.dropped += 1
                return
            self.remote = addr  # comedia: whoever speaks first is the peer
            self._on_connected(now, {"remote": _printable(addr)})
        elif addr != self.remote:
            self.counters.dropped += 1
            return
        if is_rtcp(data):
            self.receive_rtcp(data, now)
        else:
            self.receive_rtp(data, len(data), now)

    # -- output -------------------------------------------------------------------------------
    def send_rtp(self, buf: bytearray, twcc_offset: int, now: float) -> None:
        remote = self.remote
        if remote is None or self.closed:
            return
        pacer = self.pacer
        if pacer is not None and not pacer.admit(buf, twcc_offset, now):
            return  # queued (sent later through here) or dropped
        if twcc_offset >= 0:
            self.twcc_seq = twcc = (self.twcc_seq + 1) & 0xFFFF
            U16.pack_into(buf, twcc_offset, twcc)
            on_sent = self._on_sent
            if on_sent is not None:
                on_sent(twcc, len(buf), now)
        try:
            self.socket.sendto(buf, remote)
        except OSError:  # the peer's socket is gone or full: a datagram lost, not a crash
            self.counters.dropped += 1
            return
        self.packets_out += 1
        self.bytes_out += len(buf)

    def _send_rtcp_packet(self, data: bytes) -> bool:
        if self.remote is None:
            return False
        try:
            self.socket.sendto(data, self.remote)
        except OSError:
            return False
        return True

    def _before_close(self) -> None:
        self.socket.close()


def _printable(addr: PlainAddress) -> str:
    return addr if isinstance(addr, str) else f"{addr[0]}:{addr[1]}"
