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
        return env
    inline = str(auth.get("secret", ""))
    if inline:
        return inline
    path = Path(str(auth.get("secret_file", "secret")))
    if not path.is_absolute():
        path = base / path
    if path.exists():
        value = path.read_text().strip()
        if len(value) < 32:
            raise ConfigError(f"{path}: the secret must be at least 32 characters")
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    logger.info("created a new token secret in %s (mode 0600)", path)
    return value


def load(path: str | Path | None) -> Config:
    if path is None:
        return Config(jwt_secret=os.environ.get("TELEBRIDGE_SECRET") or secrets.token_urlsafe(48), dev_tokens=True)
    source = Path(path)
    try:
        data = tomllib.loads(source.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {source} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    server = data.get("server", {})
    auth = data.get("auth", {})
    media = data.get("media", {})
    log = data.get("logging", {})
    base = source.resolve().parent
    try:
        config = Config(
            http_host=str(server.get("host", "127.0.0.1")),
            http_port=int(server.get("port", 8080)),
            dev_tokens=bool(server.get("dev_tokens", False)),
            cors_origins=[str(o) for o in server.get("cors_origins", [])],
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
    return config
