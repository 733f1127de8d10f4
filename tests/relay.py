"""A UDP relay between one client and the SFU that drops a share of the media packets.

It stands in for a lossy island or mountain link: STUN and DTLS pass untouched (losing a
handshake only slows the start), RTP/RTCP toward the client is dropped at random.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

Address = tuple[str, int]


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Any) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_datagram(data, addr)


class LossyRelay:
    """``loss`` applies toward the client (downlink) or, with ``uplink=True``, toward the SFU."""

    def __init__(
        self,
        server: Address,
        loss: float,
        seed: int = 7,
        uplink: bool = False,
        spare_payload_types: frozenset[int] = frozenset(),
    ) -> None:
        self.server = server
        self.loss = loss
        self.uplink = uplink
        # RTP payload types never dropped (SRTP leaves the header in the clear): a test of
        # the SFU's repair can spare retransmissions, whose second loss only the client's
        # own NACK policy can repair.
        self.spare = spare_payload_types
        self.random = random.Random(seed)
        self.client: Address | None = None
        self.forwarded = 0
        self.dropped = 0
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._down, self._down_proto = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_client), local_addr=("127.0.0.1", 0)
        )
        self._up, self._up_proto = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_server), local_addr=("127.0.0.1", 0)
        )
        self.port = self._down.get_extra_info("sockname")[1]

    def _lose(self, data: bytes, lossy: bool) -> bool:
        spared = len(data) > 1 and data[1] & 0x7F in self.spare and not 192 <= data[1] <= 223
        if lossy and 127 < data[0] < 192 and not spared and self.random.random() < self.loss:
            self.dropped += 1
            return True
        self.forwarded += 1
        return False

    def _from_client(self, data: bytes, addr: Address) -> None:
        self.client = addr
        if not self._lose(data, self.uplink):
            self._up.sendto(data, self.server)

    def _from_server(self, data: bytes, addr: Address) -> None:
        if self.client is not None and not self._lose(data, not self.uplink):
            self._down.sendto(data, self.client)

    def close(self) -> None:
        self._down.close()
        self._up.close()
