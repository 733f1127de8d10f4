"""ICE servers for clients: TURN with short-lived credentials (coturn's TURN REST API).

coturn, run with ``use-auth-secret`` and ``static-auth-secret=<secret>``, accepts any
username of the form ``"<expiry unix time>:<anything>"`` whose password is
``base64(HMAC-SHA1(secret, username))`` until that time. So the server never stores a
TURN password: it mints one per client, valid for ``[turn] ttl`` seconds, and hands it out
in the /ws join answer, at ``GET /ice-servers`` and as WHIP/WHEP ``Link`` headers
(RFC 9725 section 4.6). See docs/turn.md for running coturn.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from signaling.config import TurnSettings


def credential(secret: str, username: str) -> str:
    """The password coturn expects for ``username`` under ``static-auth-secret``."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def ice_servers(turn: TurnSettings, identity: str, now: float) -> list[dict[str, Any]]:
    """RTCIceServer dictionaries for one client (empty when no TURN is configured).

    The username carries the identity after the expiry (coturn logs it), with ``:``
    replaced so the expiry stays the first field.
    """
    if not turn.urls:
        return []
    username = f"{int(now) + turn.ttl}:{identity.replace(':', '_')}"
    return [
        {
            "urls": list(turn.urls),
            "username": username,
            "credential": credential(turn.secret, username),
        }
    ]


def link_headers(servers: list[dict[str, Any]]) -> list[str]:
    """``Link`` header values for a WHIP/WHEP answer, one per URL (RFC 9725 4.6)."""
    values = []
    for server in servers:
        for url in server["urls"]:
            value = f'<{url}>; rel="ice-server"'
            if "username" in server:
                value += (
                    f'; username="{server["username"]}"; credential="{server["credential"]}"'
                    '; credential-type="password"'
                )
            values.append(value)
    return values
