"""Server configuration from a TOML file, with the embedded defaults."""

from __future__ import annotations

import logging
import math
import os
import re
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


API_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
# Room-wide events a webhook can subscribe to: the protocol's events (docs/protocol.md)
# that concern the whole room, plus room_started. Per-participant ones (offer) never leave.
WEBHOOK_EVENTS = (
    "room_started",
    "room_ended",
    "participant_joined",
    "participant_left",
    "role_changed",
    "track_published",
    "track_unpublished",
    "track_muted",
    "active_speaker",
    "connection_quality",
    "hand_raised",
    "recording_started",
    "recording_stopped",
)


@dataclass(frozen=True)
class ApiKey:
    """One server-API credential (HTTP Basic user and password); several allow rotation."""

    key: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class WebhookConfig:
    """Where room events are POSTed, signed with ``secret``; ``events`` None means all."""

    url: str
    secret: str = field(repr=False)
    events: tuple[str, ...] | None = None
    max_attempts: int = 6  # one try and five retries, 0.5 s .. 8 s apart
    timeout: float = 10.0  # seconds per attempt
    queue_size: int = 1000  # events waiting for this URL before the oldest is dropped


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
    api_keys: list[ApiKey] = field(default_factory=list)
    metrics_auth: bool = False  # /metrics open (scrapers on a private network) unless set
    webhooks: list[WebhookConfig] = field(default_factory=list)
    join_limit: int = 20  # WebSocket joins per client address per 10 s; 0 = no limit
    forwarded_for: bool = False  # behind a reverse proxy: take the address from X-Forwarded-For
    resume_grace: float = 20.0  # seconds a dropped WebSocket may come back
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
        return _create_secret(path, "token secret")
    except (OSError, UnicodeDecodeError) as exc:  # unreadable, a directory, no permission
        raise ConfigError(f"{path}: cannot read or create the token secret: {exc}") from None


def _create_secret(path: Path, what: str) -> str:
    """A new random secret in a file only this user can read (mode 0600, never replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    logger.info("created a new %s in %s (mode 0600)", what, path)
    return value


def _file_secret(entry: dict[str, Any], base: Path, where: str) -> str:
    """``secret`` inline, else ``secret_file`` (relative to the config), read as is."""
    inline = entry.get("secret", "")
    if not isinstance(inline, str):
        raise ConfigError(f"{where}.secret must be a string")
    if inline:
        return _check_secret(inline, f"{where}.secret")
    name = entry.get("secret_file")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: secret or secret_file is required")
    path = Path(name)
    if not path.is_absolute():
        path = base / path
    try:
        if not path.exists() and entry.get("create") is True:  # the embedded default's demo key
            return _create_secret(path, f"secret for {where}")
        return _check_secret(path.read_text().strip(), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None


def _tables(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"{where} must be an array of tables ([[{where}]])")
    return value


def _api_keys(api: dict[str, Any], base: Path, source: Path) -> list[ApiKey]:
    keys: list[ApiKey] = []
    for i, entry in enumerate(_tables(api.get("keys", []), "api.keys")):
        where = f"{source}: api.keys[{i}]"
        key = entry.get("key")
        if not isinstance(key, str) or not API_KEY_NAME.match(key):
            raise ConfigError(f"{where}.key must be 1-64 letters, digits or _.-")
        if any(k.key == key for k in keys):
            raise ConfigError(f"{where}: key {key!r} is listed twice")
        keys.append(ApiKey(key=key, secret=_file_secret(entry, base, where)))
    return keys


def _webhooks(entries: Any, base: Path, source: Path) -> list[WebhookConfig]:
    hooks: list[WebhookConfig] = []
    for i, entry in enumerate(_tables(entries, "webhooks")):
        where = f"{source}: webhooks[{i}]"
        url = entry.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s?#]+(/\S*)?\Z", url):
            raise ConfigError(f"{where}.url must be an http:// or https:// URL")
        events = entry.get("events")
        if events is not None:
            if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
                raise ConfigError(f"{where}.events must be a non-empty list of event names")
            unknown = sorted(set(events) - set(WEBHOOK_EVENTS))
            if unknown:
                raise ConfigError(f"{where}.events: unknown {', '.join(unknown)} (known: {', '.join(WEBHOOK_EVENTS)})")
        try:
            hook = WebhookConfig(
                url=url,
                secret=_file_secret(entry, base, where),
                events=tuple(events) if events is not None else None,
                max_attempts=int(entry.get("max_attempts", 6)),
                timeout=float(entry.get("timeout", 10.0)),
                queue_size=int(entry.get("queue_size", 1000)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if hook.max_attempts < 1 or hook.queue_size < 1 or not (math.isfinite(hook.timeout) and hook.timeout > 0):
            raise ConfigError(f"{where}: max_attempts, queue_size and timeout must be positive")
        hooks.append(hook)
    return hooks


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
    api = _table(data, "api", source)
    ws = _table(data, "ws", source)
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
            api_keys=_api_keys(api, base, source),
            metrics_auth=bool(api.get("metrics_auth", False)),
            webhooks=_webhooks(data.get("webhooks", []), base, source),
            join_limit=int(ws.get("join_limit", 20)),
            forwarded_for=bool(ws.get("forwarded_for", False)),
            resume_grace=float(ws.get("resume_grace", 20.0)),
            source=source,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if config.join_limit < 0:
        raise ConfigError(f"{source}: ws.join_limit must be 0 (no limit) or more")
    if config.workers < 1:
        raise ConfigError(f"{source}: media.workers must be at least 1")
    for name, port in (("server.port", config.http_port), ("media.base_port", config.media_base_port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{source}: {name} must be 0-65535")
    for name, number in (
        ("auth.max_token_ttl", config.max_token_ttl),
        ("media.publisher_bitrate", config.publisher_bitrate),
        ("media.consent_timeout", config.consent_timeout),
        ("ws.resume_grace", config.resume_grace),
    ):
        if not number > 0:  # also refuses NaN
            raise ConfigError(f"{source}: {name} must be positive")
    return config
