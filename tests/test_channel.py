"""The control channel's framing: length-prefixed JSON objects."""

from __future__ import annotations

import json
import struct

import pytest

from sfu import channel


def frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


def test_round_trip_several_messages_in_one_feed():
    messages = [
        {"id": 1, "method": "ping", "params": {}},
        {"event": "closed", "data": {"session": "é✓"}},
    ]
    data = b"".join(channel.encode(m) for m in messages)
    assert channel.Decoder().feed(data) == messages


def test_message_split_across_feeds_at_every_byte():
    message = {"id": 7, "result": {"answer": "v=0\r\n" * 20}}
    data = channel.encode(message) + channel.encode({"id": 8})
    for cut in range(len(data) + 1):
        decoder = channel.Decoder()
        got = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert got == [message, {"id": 8}], cut


def test_one_byte_at_a_time():
    data = channel.encode({"a": 1}) + channel.encode({"b": [1, 2]})
    decoder = channel.Decoder()
    got = []
    for i in range(len(data)):
        got += decoder.feed(data[i : i + 1])
    assert got == [{"a": 1}, {"b": [1, 2]}]


def test_partial_frame_waits():
    decoder = channel.Decoder()
    data = channel.encode({"x": "y"})
    assert decoder.feed(data[:3]) == []
    assert decoder.feed(data[3:-1]) == []
    assert decoder.feed(data[-1:]) == [{"x": "y"}]


def test_oversize_frame_is_refused_before_its_body_arrives():
    decoder = channel.Decoder()
    with pytest.raises(channel.ChannelError, match="exceeds"):
        decoder.feed(struct.pack("!I", channel.MAX_MESSAGE + 1))


def test_oversize_message_cannot_be_encoded():
    with pytest.raises(channel.ChannelError):
        channel.encode({"blob": "x" * channel.MAX_MESSAGE})


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe\x00garbage",  # not UTF-8
        b"[1, 2, 3]",  # JSON, not an object
        b'"text"',
        b"null",
        b"{",
        b"[" * 100_000,  # nested past the interpreter's recursion limit
        b"",
    ],
    ids=["text", "not-utf8", "array", "string", "null", "truncated", "deep-nesting", "empty"],
)
def test_non_object_frames_raise_channel_error(body):
    with pytest.raises(channel.ChannelError):
        channel.Decoder().feed(frame(body))


def test_encode_is_compact_json_with_length_prefix():
    data = channel.encode({"id": 1, "method": "x"})
    (length,) = struct.unpack("!I", data[:4])
    assert length == len(data) - 4
    assert json.loads(data[4:]) == {"id": 1, "method": "x"}
    assert b" " not in data[4:]
