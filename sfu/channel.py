"""The control channel between the server process and a media worker.

Length-prefixed JSON messages over a pipe (mediasoup's model): requests carry an ``id``
and a ``method``; responses echo the ``id`` with ``result`` or ``error``; events carry
``event`` and ``data``. The framing is sans-I/O so both ends and the tests share it.
"""

from __future__ import annotations

import json
import struct
from typing import Any

MAX_MESSAGE = 4 * 1024 * 1024
_LENGTH = struct.Struct("!I")


class ChannelError(Exception):
    """The peer sent something that is not a framed JSON object."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE:
        raise ChannelError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE}")
    return _LENGTH.pack(len(body)) + body


class Decoder:
    """Feed bytes as they arrive; take whole messages out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages: list[dict[str, Any]] = []
        while len(self._buffer) >= 4:
            (length,) = _LENGTH.unpack_from(self._buffer, 0)
            if length > MAX_MESSAGE:
                raise ChannelError(f"frame of {length} bytes exceeds {MAX_MESSAGE}")
            if len(self._buffer) < 4 + length:
                break
            body = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            try:
                message = json.loads(body)
            except ValueError as exc:  # includes UnicodeDecodeError
                raise ChannelError(f"frame is not JSON: {exc}") from None
            except RecursionError:  # "[[[[..." nested deeper than the interpreter allows
                raise ChannelError("frame is not JSON: nested too deeply") from None
            if not isinstance(message, dict):
                raise ChannelError("frame is not a JSON object")
            messages.append(message)
        return messages
