"""ICE-lite (RFC 8445 section 2.5) for one peer, sans-I/O.

The SFU has a known public address, so it never gathers or checks candidates: it answers
the browser's authenticated binding requests, takes the address the browser nominates, and
drops the peer when it stops hearing from it (RFC 7675's 30 s).

What counts as hearing from the peer: an authenticated check (a browser's consent request),
or SRTP/SRTCP that passed authentication and came from the nominated address. RFC 7675
section 4: with two-party keys (DTLS-SRTP), an authenticated packet is strong assurance it
came from the peer; libnice (GStreamer) sends no consent requests after nomination, only
RTCP and media. STUN Binding Indications (its NAT keepalives) are not counted: they carry no
authentication, so anyone who can forge the peer's source address could keep a gone
viewer's media flowing to it forever, which is what consent expiry exists to stop.

The browser's half (the controlling agent's checks and the check of their answers) is here
too, for the load client and tests that play the browser toward the SFU.
"""

from __future__ import annotations

import logging
import secrets
import struct
from collections.abc import Container

from aioice import stun

logger = logging.getLogger(__name__)

CONSENT_TIMEOUT = 30.0
# RFC 8445 7.1.1: a check carries the priority its candidate would have as peer-reflexive
# (type preference 110, component 1); with one host candidate any local preference will do.
CHECK_PRIORITY = (110 << 24) | (32542 << 8) | (256 - 1)

Address = tuple[str, int]


def is_stun(data: bytes) -> bool:
    """RFC 7983 demultiplexing: STUN starts with 0..3 and carries the magic cookie."""
    return len(data) >= 20 and data[0] < 4 and data[4:8] == b"\x21\x12\xa4\x42"


def new_credentials() -> tuple[str, str]:
    """A fresh ufrag (8 chars) and pwd (24+ chars), both from the ICE char set."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    ufrag = "".join(secrets.choice(alphabet) for _ in range(8))
    pwd = "".join(secrets.choice(alphabet) for _ in range(24))
    return ufrag, pwd


def _parse(data: bytes) -> stun.Message | None:
    try:
        return stun.parse_message(data)
    except (ValueError, KeyError, IndexError, struct.error):
        # aioice raises struct.error (not a ValueError) for attributes of the wrong length,
        # e.g. a 2-byte PRIORITY: any sender could otherwise raise into the worker.
        return None


def parse_binding_request(data: bytes) -> tuple[stun.Message, str, str] | None:
    """Parse a datagram as an ICE check: (message, local ufrag, remote ufrag) or None.

    FINGERPRINT is required and verified by the parser; MESSAGE-INTEGRITY is checked later
    by the session that owns the ufrag, because only it knows the password.
    """
    message = _parse(data)
    if message is None:
        return None
    if message.message_method != stun.Method.BINDING or message.message_class != stun.Class.REQUEST:
        return None
    if "FINGERPRINT" not in message.attributes or "MESSAGE-INTEGRITY" not in message.attributes:
        return None
    username = message.attributes.get("USERNAME")
    if not isinstance(username, str) or ":" not in username:
        return None
    local, _, remote = username.partition(":")
    return message, local, remote


def binding_request(
    username: str,
    password: str,
    tie_breaker: int,
    *,
    use_candidate: bool = False,
    priority: int = CHECK_PRIORITY,
    transaction_id: bytes | None = None,
) -> stun.Message:
    """A controlling agent's connectivity check (a browser's, toward ICE-lite).

    ``username`` is ``"<their ufrag>:<our ufrag>"`` and ``password`` their ice-pwd, both
    from their SDP; ``tie_breaker`` is the agent's random 64-bit number, the same in every
    check. Send ``bytes()`` of the result and keep its transaction_id for the response.
    """
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=transaction_id)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = priority
    message.attributes["ICE-CONTROLLING"] = tie_breaker
    if use_candidate:
        message.attributes["USE-CANDIDATE"] = None
    message.add_message_integrity(password.encode())  # adds FINGERPRINT after it
    return message


def check_binding_response(
    data: bytes, transaction_ids: Container[bytes], password: str
) -> stun.Message | None:
    """The success response to one of our checks, or None.

    Only a response to a transaction we started, signed with their ice-pwd and carrying a
    FINGERPRINT (verified by the parser) counts: anything else on the socket could be
    forged or stale. ``password`` is their ice-pwd.
    """
    message = _parse(data)
    if message is None:
        return None
    if (
        message.message_method != stun.Method.BINDING
        or message.message_class != stun.Class.RESPONSE
    ):
        return None
    if "FINGERPRINT" not in message.attributes:
        return None
    if message.transaction_id not in transaction_ids:
        return None
    if not message.check_message_integrity(password.encode()):
        return None
    return message


class IceLiteSession:
    """Answers checks for one peer and remembers the nominated address."""

    __slots__ = (
        "local_ufrag",
        "local_pwd",
        "remote_ufrag",
        "previous",
        "ufrags",
        "consent_timeout",
        "selected",
        "validated",
        "last_consent",
        "created",
    )

    def __init__(
        self,
        local_ufrag: str,
        local_pwd: str,
        remote_ufrag: str,
        now: float,
        consent_timeout: float = CONSENT_TIMEOUT,
    ) -> None:
        self.local_ufrag = local_ufrag
        self.local_pwd = local_pwd
        self.remote_ufrag = remote_ufrag
        # After an ICE restart, the credentials in use before it (local ufrag, pwd, remote
        # ufrag) answer checks until the peer's first check with the new ones: media and
        # consent keep going on the old pair while the new one is being set up.
        self.previous: tuple[str, str, str] | None = None
        self.ufrags = [local_ufrag]  # local ufrags the demux may route here (pruned by it)
        self.consent_timeout = consent_timeout
        self.selected: Address | None = None
        self.validated: set[Address] = set()
        self.last_consent = now
        self.created = now

    def restart(self, local_ufrag: str, local_pwd: str, remote_ufrag: str) -> None:
        """ICE restart (RFC 8445 section 9): new local credentials, and the peer's new ufrag
        ("" when it is learned later, from the answer to a server's offer). The selected
        address stays until the peer nominates another: DTLS and SRTP are not touched."""
        if self.previous is None:  # two restarts before any new check: keep the proven ones
            self.previous = (self.local_ufrag, self.local_pwd, self.remote_ufrag)
        self.local_ufrag = local_ufrag
        self.local_pwd = local_pwd
        self.remote_ufrag = remote_ufrag
        self.ufrags.append(local_ufrag)

    def accepts(self, local_ufrag: str) -> bool:
        """Whether checks naming this local ufrag are still answered."""
        return local_ufrag == self.local_ufrag or (
            self.previous is not None and local_ufrag == self.previous[0]
        )

    def handle_request(
        self,
        message: stun.Message,
        remote_ufrag: str,
        addr: Address,
        now: float,
        local_ufrag: str | None = None,
    ) -> bytes | None:
        """Check one binding request; return the response to send, or None to drop it.

        A check that fails MESSAGE-INTEGRITY or names another remote ufrag is dropped
        without an answer: an attacker learns nothing and costs us one HMAC.
        ``local_ufrag`` is the one the check names (the current one when None).
        """
        current = local_ufrag is None or local_ufrag == self.local_ufrag
        if current:
            expected_remote, pwd = self.remote_ufrag, self.local_pwd
        elif self.previous is not None and local_ufrag == self.previous[0]:
            expected_remote, pwd = self.previous[2], self.previous[1]
        else:
            return None
        if remote_ufrag != expected_remote or not expected_remote:
            return None
        if not message.check_message_integrity(pwd.encode()):
            return None
        if current and self.previous is not None:
            logger.info("ice %s: restart completed, old credentials retired", self.local_ufrag)
            self.previous = None
        self.validated.add(addr)
        self.last_consent = now
        if "USE-CANDIDATE" in message.attributes and self.selected != addr:
            if self.selected is not None:
                logger.info(
                    "ice %s: nominated address moved %s -> %s",
                    self.local_ufrag,
                    self.selected,
                    addr,
                )
            self.selected = addr
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=message.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(pwd.encode())
        return bytes(response)

    def media_received(self, addr: Address, now: float) -> bool:
        """Authenticated SRTP/SRTCP arrived from ``addr``: the peer is alive if that is the
        nominated address. The caller must call this only after the packet passed SRTP
        authentication; a packet from any other address refreshes nothing."""
        if addr != self.selected:
            return False
        if now > self.last_consent:
            self.last_consent = now
        return True

    def expired(self, now: float) -> bool:
        """True once the peer has sent neither a valid check nor authenticated media from
        the nominated address for the consent timeout."""
        return now - self.last_consent > self.consent_timeout
