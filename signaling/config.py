"""Server configuration from a TOML file: one frozen dataclass per table.

Each table's dataclass holds its defaults (``[media]`` is the workers' own MediaSettings);
the loader only checks keys and types against them, so a default is written once and a key
the server does not know (a typo) stops it rather than being ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfu.settings import MediaSettings, SettingsError, from_mapping

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
    "recording_failed",
    "recording_downloaded",
)


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0  # also refuses NaN and infinity


@dataclass(frozen=True)
class ServerSettings:
    """``[server]``: the HTTP listener (WebSocket, REST API, WHIP/WHEP, demo page)."""

    host: str = "127.0.0.1"
    port: int = 8080
    dev_tokens: bool = False
    """POST /dev/token mints tokens for anyone who asks: the demo page's, never production's."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the HTTP endpoints from a browser; "*" allows any."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError("port must be 0-65535")


@dataclass(frozen=True)
class AuthSettings:
    """``[auth]``: the HS256 key that signs access tokens, and what a token may claim."""

    secret: str = field(default="", repr=False)
    """Inline key as written; after ``load``, the key in use ($TELEBRIDGE_SECRET, inline or
    the file's)."""
    secret_file: str = "secret"
    """Read, or created with mode 0600, when there is no inline key; relative to the config."""
    issuer: str = "telebridge"
    max_token_ttl: int = 24 * 3600
    """Longest lifetime, in seconds, of a token this server mints."""

    def __post_init__(self) -> None:
        if not self.max_token_ttl > 0:
            raise SettingsError("max_token_ttl must be positive")


@dataclass(frozen=True)
class LoggingSettings:
    """``[logging]``: one level for the control process and its media workers."""

    level: str = MediaSettings().log_level  # the workers' own default: one place for it

    def __post_init__(self) -> None:
        if self.level.upper() not in logging.getLevelNamesMapping():
            raise SettingsError(
                f"level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not {self.level!r}"
            )


@dataclass(frozen=True)
class ApiKey:
    """``[[api.keys]]``: one server-API credential (HTTP Basic user and password); several
    allow rotation."""

    key: str
    secret: str = field(default="", repr=False)
    """Inline secret as written; after ``load``, the one in use (inline or the file's)."""
    secret_file: str = ""
    """Read when there is no inline secret; relative to the config."""
    create: bool = False
    """Make secret_file (mode 0600) if it is missing: the embedded default's demo key."""

    def __post_init__(self) -> None:
        if not API_KEY_NAME.match(self.key):
            raise SettingsError("key must be 1-64 letters, digits or _.-")


@dataclass(frozen=True)
class ApiSettings:
    """``[api]``: the server API (/api/v1) is off until a key is listed."""

    metrics_auth: bool = False
    """/metrics wants an API key too; open by default, for scrapers on a private network."""
    keys: tuple[ApiKey, ...] = ()


@dataclass(frozen=True)
class WebhookConfig:
    """``[[webhooks]]``: where room events are POSTed, signed with ``secret``; ``events``
    None means all."""

    url: str
    secret: str = field(default="", repr=False)
    """Inline secret as written; after ``load``, the one in use (inline or the file's)."""
    secret_file: str = ""
    create: bool = False
    events: tuple[str, ...] | None = None
    max_attempts: int = 6  # one try and five retries, 0.5 s .. 8 s apart
    timeout: float = 10.0  # seconds per attempt
    queue_size: int = 1000  # events waiting for this URL before the oldest is dropped

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^/\s?#]+(/\S*)?\Z", self.url):
            raise SettingsError("url must be an http:// or https:// URL")
        if self.events is not None:
            if not self.events:
                raise SettingsError("events must be a non-empty list of event names")
            unknown = sorted(set(self.events) - set(WEBHOOK_EVENTS))
            if unknown:
                raise SettingsError(
                    f"events: unknown {', '.join(unknown)} (known: {', '.join(WEBHOOK_EVENTS)})"
                )
        if self.max_attempts < 1 or self.queue_size < 1 or not _positive(self.timeout):
            raise SettingsError("max_attempts, queue_size and timeout must be positive")


@dataclass(frozen=True)
class WsSettings:
    """``[ws]``: the WebSocket signaling endpoint."""

    join_limit: int = 300
    """Joins per client address per 10 s, a burst guard (a whole site behind one NAT shares
    an address); 0 means no limit."""
    identity_join_limit: int = 10
    """Joins per room and identity per 10 s (a client in a reconnect loop); 0 means no limit."""
    forwarded_for: bool = False
    """Behind a reverse proxy: take the client's address from X-Forwarded-For."""
    resume_grace: float = 20.0
    """Seconds a dropped WebSocket may come back and keep its media."""

    def __post_init__(self) -> None:
        if self.join_limit < 0:
            raise SettingsError("join_limit must be 0 (no limit) or more")
        if self.identity_join_limit < 0:
            raise SettingsError("identity_join_limit must be 0 (no limit) or more")
        if not _positive(self.resume_grace):
            raise SettingsError("resume_grace must be positive")


TURN_URL = re.compile(r"^(turns?|stuns?):[^\s\"<>,;]+\Z")


@dataclass(frozen=True)
class TurnSettings:
    """``[turn]``: a TURN relay (coturn with ``use-auth-secret``) that clients are told about,
    each with its own credentials valid for ``ttl`` seconds (signaling/turn.py)."""

    urls: tuple[str, ...] = ()
    """Relay URLs, e.g. "turn:turn.example.org:3478?transport=udp",
    "turns:turn.example.org:443?transport=tcp"; none means no TURN is handed out."""
    secret: str = field(default="", repr=False)
    """coturn's static-auth-secret, inline; after ``load``, the one in use (inline or the
    file's)."""
    secret_file: str = ""
    """Read when there is no inline secret; relative to the config."""
    ttl: int = 6 * 3600
    """Seconds a handed-out credential stays valid; a call longer than this keeps its
    allocation (coturn checks it when the allocation is made and refreshed)."""

    def __post_init__(self) -> None:
        for url in self.urls:
            if not TURN_URL.match(url):
                raise SettingsError(f"urls: {url!r} is not a turn:, turns:, stun: or stuns: URL")
        if not self.ttl > 0:
            raise SettingsError("ttl must be positive")


@dataclass(frozen=True)
class RecordingSettings:
    """``[recording]``: where recordings go (signaling/recordings.py, recording/)."""

    enabled: bool = True
    """Off: every start is refused (the API answers 403 code forbidden)."""
    root: str = "recordings"
    """Folder of the recordings (made with mode 0700); relative to the config file."""
    retention_days: float = 0
    """Recordings older than this many days are deleted; 0 keeps them."""

    def __post_init__(self) -> None:
        if not self.root:
            raise SettingsError("root must name a folder")
        if not (math.isfinite(self.retention_days) and self.retention_days >= 0):
            raise SettingsError("retention_days must be 0 (keep) or a positive number of days")


@dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen dataclass per TOML table, whose field defaults
    are the only place a default is written."""

    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    media: MediaSettings = MediaSettings()
    """What the media workers get, as is; its log_level follows [logging] level."""
    logging: LoggingSettings = LoggingSettings()
    api: ApiSettings = ApiSettings()
    webhooks: tuple[WebhookConfig, ...] = ()
    ws: WsSettings = WsSettings()
    turn: TurnSettings = TurnSettings()
    recording: RecordingSettings = RecordingSettings()
    source: Path | None = None
    """The file it was read from; None for the built-in defaults."""

    def __post_init__(self) -> None:
        # [logging] level is the one place the level is set, for this process and the workers.
        if self.media.log_level != self.logging.level:
            object.__setattr__(
                self, "media", dataclasses.replace(self.media, log_level=self.logging.level)
            )


def _secret(auth: AuthSettings, base: Path) -> str:
    """The token key: from $TELEBRIDGE_SECRET, inline, or a file created with mode 0600."""
    env = os.environ.get("TELEBRIDGE_SECRET")
    if env:
        return _check_secret(env, "$TELEBRIDGE_SECRET")
    if auth.secret:
        return _check_secret(auth.secret, "auth.secret")
    path = Path(auth.secret_file)
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


def _turn_secret(turn: TurnSettings, base: Path, where: str) -> str:
    """coturn's shared secret, inline or from ``secret_file``; required once urls are set."""
    if not turn.urls:
        return turn.secret
    if turn.secret:
        return turn.secret
    if not turn.secret_file:
        raise ConfigError(f"{where}: secret or secret_file is required when urls are set")
    path = Path(turn.secret_file)
    if not path.is_absolute():
        path = base / path
    try:
        value = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None
    if not value:
        raise ConfigError(f"{where}: {path} is empty")
    return value


def _file_secret(entry: ApiKey | WebhookConfig, base: Path, where: str) -> str:
    """``secret`` inline, else ``secret_file`` (relative to the config), read as is."""
    if entry.secret:
        return _check_secret(entry.secret, f"{where}.secret")
    if not entry.secret_file:
        raise ConfigError(f"{where}: secret or secret_file is required")
    path = Path(entry.secret_file)
    if not path.is_absolute():
        path = base / path
    try:
        if not path.exists() and entry.create:  # the embedded default's demo key
            return _create_secret(path, f"secret for {where}")
        return _check_secret(path.read_text().strip(), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None


def _array(cls: type[Any], value: Any, table: str) -> tuple[Any, ...]:
    """An array of tables (``[[table]]``), each entry a ``cls``."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"{table} must be an array of tables ([[{table}]])")
    return tuple(from_mapping(cls, entry, table, i) for i, entry in enumerate(value))


TABLES = ("server", "auth", "media", "logging", "api", "webhooks", "ws", "turn", "recording")


def _table(data: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    return value


def load(path: str | Path | None) -> Config:
    """The config in ``path`` (None: the built-in defaults with dev tokens on), its secrets
    read or created; any key the dataclasses do not know is an error, never ignored."""
    if path is None:
        env = os.environ.get("TELEBRIDGE_SECRET")
        secret = _check_secret(env, "$TELEBRIDGE_SECRET") if env else secrets.token_urlsafe(48)
        return Config(server=ServerSettings(dev_tokens=True), auth=AuthSettings(secret=secret))
    source = Path(path)
    try:
        data = tomllib.loads(source.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {source} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for name in data:
        if name not in TABLES:
            value = data[name]
            if isinstance(value, dict):
                what = f"table [{name}]"
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                what = f"table [[{name}]]"
            else:
                what = f"top-level key {name!r}"
            raise ConfigError(f"{source}: unknown {what} (known tables: {', '.join(TABLES)})")
    media = _table(data, "media", source)
    if "log_level" in media:
        raise ConfigError(
            f"{source}: unknown key 'log_level' in [media] (set it as [logging] level)"
        )
    api = _table(data, "api", source)
    try:
        config = Config(
            server=from_mapping(ServerSettings, _table(data, "server", source), "server"),
            auth=from_mapping(AuthSettings, _table(data, "auth", source), "auth"),
            media=from_mapping(
                MediaSettings, media, "media", exclude=("log_level",)
            ),  # Config sets it from [logging]
            logging=from_mapping(LoggingSettings, _table(data, "logging", source), "logging"),
            api=dataclasses.replace(
                from_mapping(ApiSettings, {k: v for k, v in api.items() if k != "keys"}, "api"),
                keys=_array(ApiKey, api.get("keys", []), "api.keys"),
            ),
            webhooks=_array(WebhookConfig, data.get("webhooks", []), "webhooks"),
            ws=from_mapping(WsSettings, _table(data, "ws", source), "ws"),
            turn=from_mapping(TurnSettings, _table(data, "turn", source), "turn"),
            recording=from_mapping(
                RecordingSettings, _table(data, "recording", source), "recording"
            ),
            source=source,
        )
    except SettingsError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if not Path(config.recording.root).is_absolute():
        root = str(source.resolve().parent / config.recording.root)
        config = dataclasses.replace(
            config, recording=dataclasses.replace(config.recording, root=root)
        )
    names = [k.key for k in config.api.keys]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{source}: api.keys[{i}]: key {name!r} is listed twice")
    return _with_secrets(config, source.resolve().parent)


def _with_secrets(config: Config, base: Path) -> Config:
    """``config`` with each secret resolved; done last, so a config with a mistake in it
    creates no secret file."""
    source = config.source
    return dataclasses.replace(
        config,
        auth=dataclasses.replace(config.auth, secret=_secret(config.auth, base)),
        api=dataclasses.replace(
            config.api,
            keys=tuple(
                dataclasses.replace(k, secret=_file_secret(k, base, f"{source}: api.keys[{i}]"))
                for i, k in enumerate(config.api.keys)
            ),
        ),
        webhooks=tuple(
            dataclasses.replace(h, secret=_file_secret(h, base, f"{source}: webhooks[{i}]"))
            for i, h in enumerate(config.webhooks)
        ),
        turn=dataclasses.replace(
            config.turn, secret=_turn_secret(config.turn, base, f"{source}: turn")
        ),
    )
