"""Datagram routing on a worker's shared UDP port (sans-I/O).

STUN is routed by the local ufrag in its USERNAME; the transport that owns the ufrag
checks MESSAGE-INTEGRITY. Every other datagram is routed by the remote address that
passed such a check. An unknown address costs one dict lookup and is dropped.

ICE-TCP connections (:mod:`sfu.ice_tcp`) come in here too, one packet at a time: their
checks are routed and checked exactly like UDP ones, and a connection belongs to the
transport whose check first passed on it.
"""

from __future__ import annotations

from collections.abc import Callable

from sfu.ice import Address, is_stun, parse_binding_request
from sfu.ice_tcp import TcpPath
from sfu.webrtc_transport import WebRtcTransport


class Demux:
    def __init__(self, sender: Callable[[bytes, Address], None]) -> None:
        self.sender = sender
        self.by_ufrag: dict[str, WebRtcTransport] = {}
        self.by_addr: dict[Address, WebRtcTransport] = {}
        self.tcp_paths: dict[Address, TcpPath] = {}  # keyed by TcpAddress
        self.dropped = 0

    def add(self, transport: WebRtcTransport) -> None:
        self.by_ufrag[transport.ice.local_ufrag] = transport

    def remove(self, transport: WebRtcTransport) -> None:
        for ufrag in transport.ice.ufrags:
            if self.by_ufrag.get(ufrag) is transport:
                del self.by_ufrag[ufrag]
        for addr in transport.ice.validated:
            if self.by_addr.get(addr) is transport:
                del self.by_addr[addr]

    def ufrag_taken(self, ufrag: str) -> bool:
        return ufrag in self.by_ufrag

    def sync(self, transport: WebRtcTransport) -> None:
        """Route exactly the local ufrags the transport's ICE still answers (after a
        restart, the new one and, until the peer uses the new one, the old)."""
        ice = transport.ice
        kept = []
        for ufrag in ice.ufrags:
            if ice.accepts(ufrag):
                kept.append(ufrag)
                self.by_ufrag[ufrag] = transport
            elif self.by_ufrag.get(ufrag) is transport:
                del self.by_ufrag[ufrag]
        ice.ufrags = kept

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
        response = transport.handle_stun(message, remote_ufrag, addr, now, local_ufrag)
        if response is None:
            self.dropped += 1
            return
        if len(transport.ice.ufrags) > 1 and transport.ice.previous is None:
            self.sync(transport)  # the peer moved to the restarted credentials
        if self.by_addr.get(addr) is not transport:
            self.by_addr[addr] = transport
        self.sender(response, addr)

    # -- ICE-TCP ----------------------------------------------------------------------------------
    def add_tcp(self, path: TcpPath) -> None:
        """An accepted connection; it carries nothing until a check on it passes."""
        self.tcp_paths[path.addr] = path

    def remove_tcp(self, path: TcpPath) -> None:
        if self.tcp_paths.get(path.addr) is path:
            del self.tcp_paths[path.addr]

    def send_tcp(self, data: bytes, addr: Address) -> None:
        """A transport's sender for a TcpAddress: frame and write, or drop if it closed."""
        path = self.tcp_paths.get(addr)
        if path is None:
            self.dropped += 1
            return
        path.send(data)

    def receive_tcp(self, data: bytes, path: TcpPath, now: float) -> None:
        """One packet (already unframed) from an ICE-TCP connection."""
        if not data:
            self.dropped += 1
            return
        if not is_stun(data):
            transport = path.transport
            if transport is None or transport.closed:
                self.dropped += 1
            else:
                transport.receive(data, path.addr, now)
            return
        parsed = parse_binding_request(data)
        if parsed is None:
            self.dropped += 1
            return
        message, local_ufrag, remote_ufrag = parsed
        transport = self.by_ufrag.get(local_ufrag)
        if transport is None or (path.transport is not None and path.transport is not transport):
            self.dropped += 1  # one connection, one transport (RFC 6544: one candidate pair)
            return
        response = transport.handle_stun(message, remote_ufrag, path.addr, now)
        if response is None:
            self.dropped += 1
            return
        path.transport = transport
        path.send(response)
