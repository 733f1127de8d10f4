"""Datagram routing on a worker's shared UDP port (sans-I/O).

STUN is routed by the local ufrag in its USERNAME; the transport that owns the ufrag
checks MESSAGE-INTEGRITY. Every other datagram is routed by the remote address that
passed such a check. An unknown address costs one dict lookup and is dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from sfu.ice import Address, is_stun, parse_binding_request
from sfu.webrtc_transport import WebRtcTransport


class Demux:
    def __init__(self, sender: Callable[[bytes, Address], None]) -> None:
        self.sender = sender
        self.by_ufrag: dict[str, WebRtcTransport] = {}
        self.by_addr: dict[Address, WebRtcTransport] = {}
        self.dropped = 0

    def add(self, transport: WebRtcTransport) -> None:
        self.by_ufrag[transport.ice.local_ufrag] = transport

    def remove(self, transport: WebRtcTransport) -> None:
        if self.by_ufrag.get(transport.ice.local_ufrag) is transport:
            del self.by_ufrag[transport.ice.local_ufrag]
        for addr in transport.ice.validated:
            if self.by_addr.get(addr) is transport:
                del self.by_addr[addr]

    def ufrag_taken(self, ufrag: str) -> bool:
        return ufrag in self.by_ufrag

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """One datagram from the shared port."""
        if not data:
            self.dropped += 1
            return
        stun = is_stun(data)
        if not stun:
            transport = self.by_addr.get(addr)
            if transport is None:
                self.dropped += 1
            else:
                transport.receive(data, addr, now)
            return
        parsed = parse_binding_request(data)
        if parsed is None:
            self.dropped += 1
            return
        message, local_ufrag, remote_ufrag = parsed
        transport = self.by_ufrag.get(local_ufrag)
        if transport is None:
            self.dropped += 1
            return
        response = transport.handle_stun(message, remote_ufrag, addr, now)
        if response is None:
            self.dropped += 1
            return
        if self.by_addr.get(addr) is not transport:
            self.by_addr[addr] = transport
        self.sender(response, addr)
