"""Media-plane settings: one frozen dataclass, the only place their defaults are written.

The TOML loader (``[media]`` in signaling/config.py) builds it from the file, the control
process hands it to each worker as JSON (``--settings``), and the worker's classes take
their values from it. A key that is not a field here is an error, never a silent default.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """A value that cannot be a setting; the message names the key."""


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """What the media workers need to know. Field names are the ``[media]`` keys."""

    workers: int = 1
    """Media worker processes; one core each. The embedded default runs one."""
    listen: str = "127.0.0.1"
    """Address the workers' UDP ports bind to."""
    announce: str = ""
    """Address written into SDP candidates; empty means the listen address."""
    base_port: int = 0
    """Worker i binds base_port + i; 0 gives each worker an ephemeral port."""
    publisher_bitrate: int = 2_500_000
    """Bits per second a publisher's connection is told (REMB) it may send."""
    consent_timeout: float = 30.0
    """Seconds without an ICE consent check before a peer is dropped (RFC 7675)."""
    keyframe_interval: float = 0.5
    """Least seconds between two keyframe requests (PLI) to one publisher stream."""
    report_interval: float = 1.0
    """Seconds between RTCP reports (RR and REMB to publishers, SR to viewers)."""
    log_level: str = "INFO"
    """The worker's log level; set from ``[logging] level``."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise SettingsError("workers must be at least 1")
        if not 0 <= self.base_port <= 65535:
            raise SettingsError("base_port must be 0-65535")
        for name in ("publisher_bitrate", "consent_timeout", "keyframe_interval", "report_interval"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SettingsError(f"{name} must be a positive number")
        if self.base_port and self.base_port + self.workers - 1 > 65535:
            raise SettingsError("base_port + workers - 1 must be at most 65535")

    @property
    def announced(self) -> str:
        return self.announce or self.listen

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> MediaSettings:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise SettingsError("settings must be a JSON object")
        return from_mapping(cls, data, "media")


def from_mapping(cls: type[Any], data: dict[str, Any], table: str) -> Any:
    """Build the frozen dataclass ``cls`` from ``data``: unknown keys and values of the wrong
    type are errors that name the key and its table."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise SettingsError(f"unknown key {unknown[0]!r} in [{table}] (known keys: {known})")
    values: dict[str, Any] = {}
    for name, value in data.items():
        values[name] = _coerce(value, fields[name].default, f"{table}.{name}")
    try:
        return cls(**values)
    except SettingsError as exc:
        raise SettingsError(f"[{table}] {exc}") from None


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Check ``value`` against the type of the field's default (bool, int, float, str)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{where} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where} must be an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where} must be a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise SettingsError(f"{where} must be a string")
        return value
    return value
