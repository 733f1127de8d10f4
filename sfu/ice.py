"""ICE-lite (RFC 8445 section 2.5) for one peer, sans-I/O.

The SFU has a known public address, so it never gathers or checks candidates: it answers
the browser's authenticated binding requests, takes the address the browser nominates, and
drops the peer when consent (RFC 7675) stops arriving.
"""

from __future__ import annotations

import logging
import secrets
import struct

from aioice import stun

logger = logging.getLogger(__name__)

CONSENT_TIMEOUT = 30.0

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


def parse_binding_request(data: bytes) -> tuple[stun.Message, str, str] | None:
    """Parse a datagram as an ICE check: (message, local ufrag, remote ufrag) or None.

    FINGERPRINT is required and verified by the parser; MESSAGE-INTEGRITY is checked later
    by the session that owns the ufrag, because only it knows the password.
    """
    try:
        message = stun.parse_message(data)
    except (ValueError, KeyError, IndexError, struct.error):
        # aioice raises struct.error (not a ValueError) for attributes of the wrong length,
        # e.g. a 2-byte PRIORITY: any sender could otherwise raise into the worker.
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


class IceLiteSession:
    """Answers checks for one peer and remembers the nominated address."""

    __slots__ = (
        "local_ufrag",
        "local_pwd",
        "remote_ufrag",
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
        self.consent_timeout = consent_timeout
        self.selected: Address | None = None
        self.validated: set[Address] = set()
        self.last_consent = now
        self.created = now

    def handle_request(
        self, message: stun.Message, remote_ufrag: str, addr: Address, now: float
    ) -> bytes | None:
        """Check one binding request; return the response to send, or None to drop it.

        A check that fails MESSAGE-INTEGRITY or names another remote ufrag is dropped
        without an answer: an attacker learns nothing and costs us one HMAC.
        """
        if remote_ufrag != self.remote_ufrag:
            return None
        if not message.check_message_integrity(self.local_pwd.encode()):
            return None
        self.validated.add(addr)
        self.last_consent = now
        if "USE-CANDIDATE" in message.attributes and self.selected != addr:
            if self.selected is not None:
                logger.info("ice %s: nominated address moved %s -> %s", self.local_ufrag, self.selected, addr)
            self.selected = addr
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=message.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(self.local_pwd.encode())
        return bytes(response)

    def expired(self, now: float) -> bool:
        """True once the peer has sent no valid check for the consent timeout."""
        return now - self.last_consent > self.consent_timeout
