"""Access tokens: HS256 JWTs that scope one person to one room and one role."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ROLES = ("lead", "participant", "observer")
PUBLISH_ROLES = ("lead", "participant")
ALGORITHM = "HS256"


class TokenError(Exception):
    """The token is missing, malformed, badly signed or expired (HTTP 401)."""


@dataclass(frozen=True)
class Grant:
    room: str
    identity: str
    role: str
    name: str
    expires: int

    @property
    def can_publish(self) -> bool:
        return self.role in PUBLISH_ROLES


def mint(
    secret: str,
    room: str,
    identity: str,
    role: str,
    ttl: int = 3600,
    name: str | None = None,
    issuer: str = "telebridge",
) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not room or not identity:
        raise ValueError("room and identity are required")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": identity,
        "room": room,
        "role": role,
        "name": name or identity,
        "iat": now,
        "nbf": now - 5,
        "exp": now + ttl,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str, issuer: str = "telebridge") -> Grant:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=issuer,
            options={"require": ["exp", "sub", "iss"]},
            leeway=5,
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.PyJWTError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    room, identity, role = claims.get("room"), claims.get("sub"), claims.get("role")
    if (
        not isinstance(room, str)
        or not isinstance(identity, str)
        or not room
        or not identity
        or role not in ROLES
    ):
        raise TokenError("invalid token: room, sub and role claims are required")
    return Grant(
        room=room,
        identity=identity,
        role=role,
        name=str(claims.get("name", identity)),
        expires=int(claims["exp"]),
    )
