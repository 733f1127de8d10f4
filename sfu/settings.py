"""Media-plane settings: one frozen dataclass, the only place their defaults are written.

The TOML loader (``[media]`` in signaling/config.py) builds it from the file, the control
process hands it to each worker as JSON (``--settings``), and the worker's classes take
their values from it. A key that is not a field here is an error, never a silent default.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """A value that cannot be a setting; the message names the key."""


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """What the media workers need to know. Field names are the ``[media]`` keys."""

    workers: int = 1
    """Media worker processes, one core each; 0 runs one per core of this machine (a room's
    viewers spread over all of them: signaling/placement.py)."""
    listen: str = "127.0.0.1"
    """Address the workers' UDP ports bind to."""
    announce: str = ""
    """Address written into SDP candidates; empty means the listen address."""
    base_port: int = 0
    """Worker i binds base_port + i; 0 gives each worker an ephemeral port."""
    ice_tcp: bool = True
    """Each worker also listens for ICE-TCP (RFC 6544 passive candidates), for clients whose
    UDP is blocked; the answer then carries a TCP candidate below the UDP one."""
    tcp_base_port: int = 0
    """Worker i's ICE-TCP port is tcp_base_port + i; 0 gives each worker an ephemeral one."""
    publisher_bitrate: int = 2_500_000
    """Bits per second a publisher's connection is told (REMB) it may send."""
    consent_timeout: float = 30.0
    """Seconds without an ICE consent check, or authenticated SRTP/SRTCP from the nominated
    address, before a peer is dropped (RFC 7675)."""
    keyframe_interval: float = 0.5
    """Least seconds between two keyframe requests (PLI) to one publisher stream."""
    audio_red: bool = True
    """Ask publishers that offer it (Chromium) for redundant audio (RFC 2198 RED: each
    packet also carries the previous Opus frame, about 20-25 kbit/s more), and forward it
    to viewers that negotiated it; others, and recordings, get plain Opus (sfu/red.py). On
    a link that loses 5 % of its packets it conceals 0.3-0.7 % of the audio, where plain
    Opus concealed 2.3-5.6 %."""
    report_interval: float = 1.0
    """Seconds between RTCP reports (RR and REMB to publishers, SR to viewers)."""
    log_level: str = "INFO"
    """The worker's log level; set from ``[logging] level``."""
    pacing: bool = True
    """Pace each viewer's sending at 2.5x its bandwidth estimate (sfu/pacer.py): audio
    first, then retransmissions, then video (briefly queued: keyframe bursts leave at the
    estimate's pace); retransmissions are dropped first when over budget."""
    admission_max_cpu: float = 0.8
    """Admission control: a worker whose process used, or waited for, more than this share
    of a core over the last second (its load report) takes no new session; when none is below,
    new sessions are refused (WHIP/WHEP 503 with Retry-After, /ws ``server_busy``). The
    wait is what other processes on the machine take from it; at 1.0 the worker is never
    idle and its queue grows (0.9 let in sites with a p99 delay of 300 ms). At this line
    its viewers also stop probing. 0 turns the check off."""
    admission_max_consumers: int = 0
    """Admission control: a worker with this many consumers (a viewer's track, or a pipe to
    another worker) takes no new session. 0: no limit."""
    admission_max_joins: int = 50
    """Admission control: new sessions a worker takes between two load reports (every
    half second). Handshakes are a worker's costliest work, and a burst of joins must not
    run ahead of the reports that show their cost: a join over the allowance waits for
    the next report (at most 0.7 s, signaling's JOIN_WAIT), then is refused. (25 a report
    refused 13-27 of 120 sites offered at once to a machine that carries 200.) 0: no
    limit."""

    def __post_init__(self) -> None:
        if self.workers == 0:  # one per core; resolved here so every reader sees a count
            object.__setattr__(self, "workers", os.cpu_count() or 1)
        if self.workers < 1:
            raise SettingsError("workers must be 0 (one per core) or more")
        if not 0 <= self.base_port <= 65535:
            raise SettingsError("base_port must be 0-65535")
        if not 0 <= self.tcp_base_port <= 65535:
            raise SettingsError("tcp_base_port must be 0-65535")
        if self.tcp_base_port and self.tcp_base_port + self.workers - 1 > 65535:
            raise SettingsError("tcp_base_port + workers - 1 must be at most 65535")
        for name in (
            "publisher_bitrate",
            "consent_timeout",
            "keyframe_interval",
            "report_interval",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SettingsError(f"{name} must be a positive number")
        if not (math.isfinite(self.admission_max_cpu) and self.admission_max_cpu >= 0):
            raise SettingsError("admission_max_cpu must be 0 (off) or a positive share of a core")
        if self.admission_max_consumers < 0:
            raise SettingsError("admission_max_consumers must be 0 (no limit) or more")
        if self.admission_max_joins < 0:
            raise SettingsError("admission_max_joins must be 0 (no limit) or more")
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
        settings: MediaSettings = from_mapping(cls, data, "media")
        return settings


def from_mapping(
    cls: type[Any],
    data: dict[str, Any],
    table: str,
    index: int | None = None,
    exclude: tuple[str, ...] = (),
) -> Any:
    """Build the frozen dataclass ``cls`` from ``data``: unknown keys, missing required keys
    and values of the wrong type are errors that name the key and its table.

    ``table`` is the TOML table's name; ``index`` the entry's position when the table is an
    array of tables (``[[webhooks]]``); ``exclude`` the fields the caller sets from elsewhere,
    which the table may not hold. Field types, not defaults, say what a value must be, so a
    required field (no default) is checked the same way.
    """
    path = table if index is None else f"{table}[{index}]"
    header = f"[{table}]" if index is None else f"[[{table}]] ({path})"
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in exclude}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise SettingsError(f"unknown key {unknown[0]!r} in {header} (known keys: {known})")
    missing = [
        name
        for name, f in fields.items()
        if name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SettingsError(f"missing key {missing[0]!r} in {header}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, value in data.items():
        values[name] = _coerce(value, hints[name], f"{path}.{name}", fields[name].repr)
    try:
        return cls(**values)
    except SettingsError as exc:
        raise SettingsError(f"{header} {exc}") from None


_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(value: Any, kind: Any, where: str, show: bool = True) -> Any:
    """Check ``value`` against the field's type: bool, int, float, str, ``X | None`` and
    ``tuple[X, ...]`` (a TOML array). A secret's value (a field with repr=False) is not
    repeated in the message."""
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        arms = [arm for arm in typing.get_args(kind) if arm is not type(None)]
        if value is None:
            return None
        if len(arms) == 1:
            return _coerce(value, arms[0], where, show)
    if typing.get_origin(kind) is tuple:
        item, *rest = typing.get_args(kind)
        if rest != [Ellipsis] or item not in _KIND:
            raise TypeError(
                f"{where}: a setting's tuple must be tuple[bool | int | float | str, ...]"
            )
        if not isinstance(value, (list, tuple)) or not all(_fits(v, item) for v in value):
            raise SettingsError(f"{where} must be a list of {_plural(item)}{_shown(value, show)}")
        return tuple(float(v) if item is float else v for v in value)
    if kind not in _KIND:
        raise TypeError(f"{where}: settings of type {kind!r} cannot be read from a table")
    if not _fits(value, kind):
        raise SettingsError(f"{where} must be {_KIND[kind]}{_shown(value, show)}")
    return float(value) if kind is float else value


def _fits(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # True is an int to Python, never a number to a config file
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _plural(kind: type) -> str:
    return {bool: "booleans", int: "integers", float: "numbers", str: "strings"}[kind]


def _shown(value: Any, show: bool) -> str:
    return f", not {value!r}" if show else ""
