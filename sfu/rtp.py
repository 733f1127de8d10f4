"""RTP on the forwarding path: parse a header once, write it many times.

An incoming packet is parsed into :class:`RtpPacket` (fixed header, the few header
extensions the SFU reads, the payload as a slice). Each viewer's copy is built from a
template made once per incoming packet and per extension layout, then patched with
``struct.pack_into``: the per-viewer work is one buffer copy and a few integer writes.
"""

from __future__ import annotations

import struct

from sfu.sdp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_RID,
    URI_RRID,
    URI_TWCC,
    URI_VIDEO_ORIENTATION,
)

_HEADER = struct.Struct("!BBHII")
SEQ_TS_SSRC = struct.Struct("!HII")
U16 = struct.Struct("!H")

# Small integer codes for the extensions we read from publishers.
EXT_NONE, EXT_MID, EXT_RID, EXT_RRID, EXT_AUDIO_LEVEL, EXT_ORIENTATION, EXT_TWCC = range(7)
_READ_CODES = {
    URI_MID: EXT_MID,
    URI_TWCC: EXT_TWCC,
    URI_RID: EXT_RID,
    URI_RRID: EXT_RRID,
    URI_AUDIO_LEVEL: EXT_AUDIO_LEVEL,
    URI_VIDEO_ORIENTATION: EXT_ORIENTATION,
}


def is_rtcp(data: bytes) -> bool:
    """RFC 5761: with rtcp-mux, payload types 64..95 (200..223 with the marker) are RTCP."""
    return len(data) >= 8 and 192 <= data[1] <= 223


def read_map(extensions: dict[str, int]) -> bytes:
    """A 256-entry table from extension id to the EXT_* code we care about."""
    table = bytearray(256)
    for uri, ext_id in extensions.items():
        code = _READ_CODES.get(uri)
        if code is not None and 0 < ext_id < 256:
            table[ext_id] = code
    return bytes(table)


class RtpPacket:
    """One received RTP packet, decrypted and parsed once."""

    __slots__ = (
        "ssrc",
        "seq",
        "ts",
        "pt",
        "marker",
        "payload",
        "mid",
        "rid",
        "rrid",
        "audio_level",
        "orientation",
        "twcc",
        "keyframe",
        "size",
        "pid",
        "tid",
        "tsync",
    )

    def __init__(self, ssrc: int, seq: int, ts: int, pt: int, marker: int, payload: bytes) -> None:
        self.ssrc = ssrc
        self.seq = seq
        self.ts = ts
        self.pt = pt
        self.marker = marker
        self.payload = payload
        self.mid: bytes | None = None
        self.rid: bytes | None = None
        self.rrid: bytes | None = None
        self.audio_level = -1
        self.orientation = -1
        self.twcc = -1  # the publisher's transport-wide sequence number, if it sent one
        self.keyframe = False
        self.size = 0
        # VP8 simulcast only (set by the receive stream): PictureID, temporal layer id
        # and whether this packet starts a layer-sync frame; -1 where absent.
        self.pid = -1
        self.tid = -1
        self.tsync = False


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet."""


def parse_rtp(data: bytes, ext_map: bytes) -> RtpPacket:
    """Parse header, CSRCs, header extensions and padding. Raises RtpError."""
    size = len(data)
    if size < 12:
        raise RtpError("shorter than an RTP header")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data, 0)
    if b0 >> 6 != 2:
        raise RtpError("RTP version is not 2")
    pos = 12 + 4 * (b0 & 0x0F)
    end = size
    if b0 & 0x20:
        if size <= pos or data[-1] == 0 or data[-1] > size - pos:
            raise RtpError("bad RTP padding")
        end -= data[-1]
    packet = RtpPacket(ssrc, seq, ts, b1 & 0x7F, b1 & 0x80, b"")
    if b0 & 0x10:
        if pos + 4 > end:
            raise RtpError("truncated header extension")
        profile, words = struct.unpack_from("!HH", data, pos)
        ext_start = pos + 4
        pos = ext_start + 4 * words
        if pos > end:
            raise RtpError("truncated header extension")
        if profile == 0xBEDE:
            _read_one_byte(packet, data, ext_start, pos, ext_map)
        elif profile & 0xFFF0 == 0x1000:
            _read_two_byte(packet, data, ext_start, pos, ext_map)
    if pos > end:
        raise RtpError("header longer than packet")
    packet.payload = data[pos:end]
    packet.size = size
    return packet


def _store(packet: RtpPacket, code: int, value: bytes) -> None:
    if code == EXT_MID:
        packet.mid = value
    elif code == EXT_RID:
        packet.rid = value
    elif code == EXT_RRID:
        packet.rrid = value
    elif code == EXT_AUDIO_LEVEL:
        packet.audio_level = value[0]
    elif code == EXT_ORIENTATION:
        packet.orientation = value[0]
    elif code == EXT_TWCC and len(value) == 2:
        packet.twcc = (value[0] << 8) | value[1]


def _read_one_byte(packet: RtpPacket, data: bytes, pos: int, end: int, ext_map: bytes) -> None:
    while pos < end:
        byte = data[pos]
        if byte == 0:  # padding between elements
            pos += 1
            continue
        ext_id = byte >> 4
        length = (byte & 0x0F) + 1
        if ext_id == 15 or pos + 1 + length > end:
            return
        code = ext_map[ext_id]
        if code:
            _store(packet, code, data[pos + 1 : pos + 1 + length])
        pos += 1 + length


def _read_two_byte(packet: RtpPacket, data: bytes, pos: int, end: int, ext_map: bytes) -> None:
    while pos + 1 < end:
        ext_id = data[pos]
        if ext_id == 0:
            pos += 1
            continue
        length = data[pos + 1]
        if pos + 2 + length > end:
            return
        code = ext_map[ext_id]
        if code and length:
            _store(packet, code, data[pos + 2 : pos + 2 + length])
        pos += 2 + length


def unwrap_rtx(packet: RtpPacket, media_ssrc: int, media_pt: int) -> RtpPacket | None:
    """RFC 4588: the original sequence number leads the payload. Padding probes give None."""
    payload = packet.payload
    if len(payload) < 3:
        return None
    original = RtpPacket(
        media_ssrc, U16.unpack_from(payload, 0)[0], packet.ts, media_pt, packet.marker, payload[2:]
    )
    original.mid = packet.mid
    original.audio_level = packet.audio_level
    original.orientation = packet.orientation
    original.size = packet.size - 2
    return original


def abs_send_time(now: float) -> int:
    """6.18 fixed-point seconds, 24 bits (abs-send-time)."""
    return int(now * 262144) & 0xFFFFFF


class ExtensionLayout:
    """The header extensions one viewer negotiated, and how to write them.

    Viewers with equal layouts share one template per forwarded packet, so the key holds
    everything that changes the bytes except per-viewer counters (transport-cc).
    """

    __slots__ = ("mid_id", "mid", "abs_id", "twcc_id", "level_id", "cvo_id", "key")

    def __init__(self, negotiated: dict[str, int], mid: str) -> None:
        self.mid_id = negotiated.get(URI_MID, 0)
        self.mid = mid.encode()
        self.abs_id = negotiated.get(URI_ABS_SEND_TIME, 0)
        self.twcc_id = negotiated.get(URI_TWCC, 0)
        self.level_id = negotiated.get(URI_AUDIO_LEVEL, 0)
        self.cvo_id = negotiated.get(URI_VIDEO_ORIENTATION, 0)
        self.key = (self.mid_id, self.mid, self.abs_id, self.twcc_id, self.level_id, self.cvo_id)

    def block(self, packet: RtpPacket, send_time: int) -> tuple[bytes, int]:
        """The extension block (with its 4-byte header) and the offset of the
        transport-cc value inside it (-1 when absent)."""
        items: list[tuple[int, bytes]] = []
        twcc_index = -1
        if self.mid_id:
            items.append((self.mid_id, self.mid))
        if self.abs_id:
            items.append((self.abs_id, send_time.to_bytes(3, "big")))
        if self.twcc_id:
            twcc_index = len(items)
            items.append((self.twcc_id, b"\x00\x00"))
        if self.level_id and packet.audio_level >= 0:
            items.append((self.level_id, bytes((packet.audio_level,))))
        if self.cvo_id and packet.orientation >= 0:
            items.append((self.cvo_id, bytes((packet.orientation,))))
        if not items:
            return b"", -1
        return pack_extensions(items, twcc_index)


def pack_extensions(items: list[tuple[int, bytes]], mark: int = -1) -> tuple[bytes, int]:
    """RFC 8285 one-byte form when every id < 15 and value <= 16 bytes, else two-byte.

    Returns the block and the offset of item ``mark``'s value in it (-1 if none)."""
    one_byte = all(0 < i < 15 and 0 < len(v) <= 16 for i, v in items)
    body = bytearray()
    offset = -1
    for index, (ext_id, value) in enumerate(items):
        if one_byte:
            body.append((ext_id << 4) | (len(value) - 1))
        else:
            body += bytes((ext_id, len(value)))
        if index == mark:
            offset = 4 + len(body)
        body += value
    body += bytes(-len(body) % 4)
    profile = 0xBEDE if one_byte else 0x1000
    return struct.pack("!HH", profile, len(body) // 4) + bytes(body), offset


def template(packet: RtpPacket, block: bytes) -> bytearray:
    """Header (fields patched per viewer) + extension block + payload."""
    head = bytearray(12)
    head[0] = 0x90 if block else 0x80
    head += block
    head += packet.payload
    return head


def patch(buf: bytearray, pt_marker: int, seq: int, ts: int, ssrc: int) -> None:
    buf[1] = pt_marker
    SEQ_TS_SSRC.pack_into(buf, 2, seq, ts, ssrc)


def patch_u16(buf: bytearray, offset: int, value: int) -> None:
    U16.pack_into(buf, offset, value)
