"""Audio redundancy (RFC 2198 RED) as Chromium sends it for Opus: each packet carries the
current Opus frame (the primary) and copies of earlier ones, so a receiver that loses a
packet plays the copy from the next one instead of concealing the gap.

Sans-I/O helpers for the forwarding path. The producer parses each RED packet once
(:func:`primary`): any viewer without RED, and the recorder, gets the primary alone as
plain Opus; a viewer that negotiated RED gets the packet as sent, its block payload types
renumbered to the viewer's Opus (:func:`renumber`, from the offsets found then).

The payload starts with one header per block: redundant blocks have four bytes (F=1,
block PT, 14-bit timestamp offset, 10-bit length), the last (primary) block one byte (F=0,
block PT). The blocks' data follow in the same order; the primary's runs to the end.
"""

from __future__ import annotations

MAX_BLOCKS = 16  # far more than any sender uses (Chromium: up to 2 redundant)


class RedError(ValueError):
    """A payload that is not well-formed RED."""


def _headers(payload: bytes | bytearray | memoryview) -> tuple[list[int], int, int]:
    """The block header offsets, where the data start, and the redundant data's length."""
    offsets: list[int] = []
    pos = 0
    redundant = 0
    size = len(payload)
    while True:
        if pos >= size:
            raise RedError("RED header runs past the payload")
        offsets.append(pos)
        if not payload[pos] & 0x80:
            pos += 1
            break
        if pos + 4 > size:
            raise RedError("RED block header runs past the payload")
        redundant += ((payload[pos + 2] & 0x03) << 8) | payload[pos + 3]
        pos += 4
        if len(offsets) > MAX_BLOCKS:
            raise RedError("too many RED blocks")
    if pos + redundant > size:
        raise RedError("RED block lengths run past the payload")
    return offsets, pos, redundant


def primary(payload: bytes | bytearray | memoryview) -> tuple[int, bytes, tuple[int, ...]]:
    """The primary block's payload type and data, and where each block header is (for
    :func:`renumber`). Raises RedError."""
    offsets, start, redundant = _headers(payload)
    return payload[offsets[-1]] & 0x7F, bytes(payload[start + redundant :]), tuple(offsets)


def renumber(
    buf: bytearray, offset: int, headers: tuple[int, ...], source_pt: int, viewer_pt: int
) -> None:
    """Rewrite the block payload types of the RED payload at ``buf[offset:]`` (its block
    ``headers`` as :func:`primary` found them, once per packet) from the publisher's Opus
    number to the viewer's, in place."""
    if source_pt == viewer_pt:
        return
    for pos in headers:
        at = offset + pos
        if buf[at] & 0x7F == source_pt:
            buf[at] = (buf[at] & 0x80) | viewer_pt
