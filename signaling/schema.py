"""JSON Schemas of the client protocol's messages (docs/protocol.md), version 1.

Every message a client sends is validated against its type's schema before anything
acts on it; the same schemas are served at /api/v1/protocol.schema.json for client
authors.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from signaling import views

VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024

_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
_TRACK_ID = {"type": "string", "minLength": 1, "maxLength": 128}
_SDP = {"type": "string", "minLength": 1, "maxLength": 60000}


def _message(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "v": {"const": VERSION},
            "type": {"type": "string"},
            "id": {"type": ["string", "integer"], "maxLength": 64},
            **properties,
        },
        "required": ["v", "type", *required],
        "additionalProperties": False,
    }


MESSAGES: dict[str, dict[str, Any]] = {
    "join": _message(
        ["token"],
        token={"type": "string", "minLength": 1, "maxLength": 4096},
        resume={"type": "string", "minLength": 1, "maxLength": 128},
        name={"type": "string", "minLength": 1, "maxLength": 128},
    ),
    "ping": _message([]),
    "publish": _message(
        ["sdp", "tracks"],
        sdp=_SDP,
        tracks={
            "type": "array",
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {
                    "mid": {"type": "string", "minLength": 1, "maxLength": 16},
                    "source": {"enum": ["camera", "microphone", "screen"]},
                },
                "required": ["mid", "source"],
                "additionalProperties": False,
            },
        },
    ),
    "unpublish": _message(["track"], track=_TRACK_ID),
    "subscribe": _message(
        ["tracks"], tracks={"type": "array", "items": _TRACK_ID, "minItems": 1, "maxItems": 64}
    ),
    "unsubscribe": _message(
        ["tracks"], tracks={"type": "array", "items": _TRACK_ID, "minItems": 1, "maxItems": 64}
    ),
    "answer": _message(["sdp", "version"], sdp=_SDP, version={"type": "integer", "minimum": 1}),
    "mute": _message(["track", "muted"], track=_TRACK_ID, muted={"type": "boolean"}),
    "raise_hand": _message(["raised"], raised={"type": "boolean"}),
    "restart_ice": _message([]),
    "preferences": _message(
        [],
        max_height={"type": "integer", "minimum": 90, "maximum": 4320},
        max_layer={"enum": ["low", "medium", "high"]},
        max_temporal={"type": "integer", "minimum": 0, "maximum": 3},
    ),
    "set_role": _message(
        ["identity", "role"], identity=_NAME, role={"enum": ["participant", "observer"]}
    ),
    "remove": _message(["identity"], identity=_NAME),
    "list_participants": _message(
        [],
        cursor={"type": "string", "pattern": views.CURSOR},
        limit={"type": "integer", "minimum": 1, "maximum": views.PAGE_MAX},
    ),
    "end_room": _message([]),
    "start_recording": _message([]),
    "stop_recording": _message([]),
    "leave": _message([]),
}

_VALIDATORS = {name: jsonschema.Draft202012Validator(schema) for name, schema in MESSAGES.items()}


class SchemaError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def validate(message: Any) -> str:
    """The message's type if it is valid; SchemaError with a protocol error code if not."""
    if not isinstance(message, dict):
        raise SchemaError("bad_json", "a message is a JSON object")
    if message.get("v") != VERSION:
        raise SchemaError("unsupported_version", f"this server speaks protocol version {VERSION}")
    kind = message.get("type")
    validator = _VALIDATORS.get(kind) if isinstance(kind, str) else None
    if validator is None:
        raise SchemaError("unknown_type", f"unknown message type {str(kind)[:40]!r}")
    error = jsonschema.exceptions.best_match(validator.iter_errors(message))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "message"
        raise SchemaError("invalid", f"{where}: {error.message[:200]}")
    return kind  # type: ignore[return-value]


def document() -> dict[str, Any]:
    """All message schemas as one JSON Schema document."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Telebridge client protocol, version 1 (client-to-server messages)",
        "oneOf": [{"$ref": f"#/$defs/{name}"} for name in MESSAGES],
        "$defs": MESSAGES,
    }
