"""Server configuration from a TOML file, with the embedded defaults."""

from __future__ import annotations

import logging
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class ConfigError(Exception):
    pass


MIN_SECRET = 32  # characters; HS256 wants a key of at least 32 bytes (RFC 7518 3.2)


def _check_secret(value: str, where: str) -> str:
    if len(value) < MIN_SECRET:
        raise ConfigError(f"{where}: the secret must be at least {MIN_SECRET} characters")
    return value


@dataclass
class Config:
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    dev_tokens: bool = False
    cors_origins: list[str] = field(default_factory=list)
    jwt_secret: str = ""
    token_issuer: str = "telebridge"
    max_token_ttl: int = 24 * 3600
    workers: int = 1
    media_host: str = "127.0.0.1"
    media_announce: str = "127.0.0.1"
    media_base_port: int = 0
    publisher_bitrate: int = 2_500_000
    consent_timeout: float = 30.0
    log_level: str = "INFO"
    source: Path | None = None


def _secret(auth: dict[str, Any], base: Path) -> str:
    """The token key: inline, from $TELEBRIDGE_SECRET, or a file created with mode 0600."""
    env = os.environ.get("TELEBRIDGE_SECRET")
    if env:
        return _check_secret(env, "$TELEBRIDGE_SECRET")
    inline = str(auth.get("secret", ""))
    if inline:
        return _check_secret(inline, "auth.secret")
    path = Path(str(auth.get("secret_file", "secret")))
    if not path.is_absolute():
        path = base / path
    try:
        if path.exists():
            return _check_secret(path.read_text().strip(), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value + "\n")
    except (OSError, UnicodeDecodeError) as exc:  # unreadable, a directory, no permission
        raise ConfigError(f"{path}: cannot read or create the token secret: {exc}") from None
    logger.info("created a new token secret in %s (mode 0600)", path)
    return value


def _table(data: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    return value


def load(path: str | Path | None) -> Config:
    if path is None:
        env = os.environ.get("TELEBRIDGE_SECRET")
        secret = _check_secret(env, "$TELEBRIDGE_SECRET") if env else secrets.token_urlsafe(48)
        return Config(jwt_secret=secret, dev_tokens=True)
    source = Path(path)
    try:
        data = tomllib.loads(source.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {source} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    server = _table(data, "server", source)
    auth = _table(data, "auth", source)
    media = _table(data, "media", source)
    log = _table(data, "logging", source)
    origins = server.get("cors_origins", [])
    if not isinstance(origins, list):
        raise ConfigError(f"{source}: server.cors_origins must be a list")
    base = source.resolve().parent
    try:
        config = Config(
            http_host=str(server.get("host", "127.0.0.1")),
            http_port=int(server.get("port", 8080)),
            dev_tokens=bool(server.get("dev_tokens", False)),
            cors_origins=[str(o) for o in origins],
            jwt_secret=_secret(auth, base),
            token_issuer=str(auth.get("issuer", "telebridge")),
            max_token_ttl=int(auth.get("max_token_ttl", 24 * 3600)),
            workers=int(media.get("workers", 1)),
            media_host=str(media.get("listen", "127.0.0.1")),
            media_announce=str(media.get("announce", media.get("listen", "127.0.0.1"))),
            media_base_port=int(media.get("base_port", 0)),
            publisher_bitrate=int(media.get("publisher_bitrate", 2_500_000)),
            consent_timeout=float(media.get("consent_timeout", 30.0)),
            log_level=str(log.get("level", "INFO")),
            source=source,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if config.workers < 1:
        raise ConfigError(f"{source}: media.workers must be at least 1")
    for name, port in (("server.port", config.http_port), ("media.base_port", config.media_base_port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{source}: {name} must be 0-65535")
    for name, number in (
        ("auth.max_token_ttl", config.max_token_ttl),
        ("media.publisher_bitrate", config.publisher_bitrate),
        ("media.consent_timeout", config.consent_timeout),
    ):
        if not number > 0:  # also refuses NaN
            raise ConfigError(f"{source}: {name} must be positive")
    return config
