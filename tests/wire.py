"""The browser's side of ICE and DTLS for socket-free tests, written once.

Checks come from sfu.ice.binding_request (the load client sends the same ones); the
variants here are the broken ones that parser tests need. ``dtls_handshake`` shuttles
datagrams between any DTLS client and server that speak DtlsSession's sans-I/O calls.
"""

from __future__ import annotations

from typing import Protocol

from sfu import ice
from sfu.dtls import is_dtls

TIE_BREAKER = 0x1122334455667788


def binding_request(
    username: str,
    password: str | None,
    *,
    use_candidate: bool = False,
    fingerprint: bool = True,
    transaction_id: bytes | None = None,
) -> bytes:
    """A browser's connectivity check; ``password=None`` leaves out MESSAGE-INTEGRITY and
    ``fingerprint=False`` FINGERPRINT, as no browser would."""
    message = ice.binding_request(
        username,
        password or "",
        TIE_BREAKER,
        use_candidate=use_candidate,
        transaction_id=transaction_id,
    )
    if password is None:
        del message.attributes["MESSAGE-INTEGRITY"]
        message.add_fingerprint()  # recomputed over the message without integrity
    if not fingerprint:
        del message.attributes["FINGERPRINT"]
    return bytes(message)


class DtlsEndpoint(Protocol):
    """What a handshake needs of each side (DtlsSession has it in both roles)."""

    @property
    def connected(self) -> bool: ...

    def receive(self, data: bytes) -> list[bytes]: ...


class DtlsClientEndpoint(DtlsEndpoint, Protocol):
    def start(self) -> list[bytes]: ...


def dtls_handshake(client: DtlsClientEndpoint, server: DtlsEndpoint, rounds: int = 10) -> None:
    """Shuttle datagrams until both sides are connected (or raise what either side raises)."""
    to_server = client.start()
    for _ in range(rounds):
        to_client: list[bytes] = []
        for datagram in to_server:
            assert is_dtls(datagram), "the client's datagrams must demultiplex as DTLS"
            to_client += server.receive(datagram)
        to_server = [reply for datagram in to_client for reply in client.receive(datagram)]
        if client.connected and server.connected and not to_server:
            return
    raise AssertionError(
        f"no handshake after {rounds} rounds: client {client.connected}, server {server.connected}"
    )
