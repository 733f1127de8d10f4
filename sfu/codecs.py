"""Codec-aware inspection of RTP payloads (sans-I/O, per-packet hot path).

The SFU never decodes media, but it must know where frames and keyframes begin: a
viewer can only start (or recover) decoding at a keyframe, and layer/stream switches
are only safe at a frame boundary. Everything here is a pure function over payload
bytes that never raises: malformed or truncated input simply answers False, because
a hostile publisher must not be able to crash the forwarding loop.

Codec names are lower-case RTP encoding names ("vp8", "h264", "opus", ...). Audio
codecs (opus, pcmu, pcma, g722, ...) have no keyframes: every audio packet is
independently decodable, so both predicates answer False for them and for any codec
this module does not know (VP9/AV1 are not parsed yet).
"""

from __future__ import annotations

__all__ = ["is_frame_start", "is_keyframe"]

# H.264 NAL unit types (RFC 6184 §5.4 and ITU-T H.264 table 7-1).
_H264_IDR = 5
_H264_SPS = 7
_H264_STAP_A = 24
_H264_FU_A = 28


def is_keyframe(codec: str, payload: bytes | memoryview) -> bool:
    """Whether this packet starts a keyframe, i.e. a viewer can start decoding here.

    Only the packet that carries the start of the keyframe answers True (for H.264
    also any packet carrying an SPS or the start of an IDR slice), so callers can
    react once per keyframe rather than once per packet.
    """
    try:
        if codec == "vp8":
            return _vp8_is_keyframe(payload)
        if codec == "h264":
            return _h264_is_keyframe(payload)
    except (IndexError, ValueError, TypeError):  # pragma: no cover - defensive
        return False
    return False


def is_frame_start(codec: str, payload: bytes | memoryview) -> bool:
    """Whether this packet begins a new frame (VP8) or a new NAL unit (H.264).

    For H.264 this is a NAL-unit boundary: a frame made of several slices has several
    such packets, which is still a safe place to cut because decoders resync on NAL
    boundaries. Audio and unknown codecs answer False.
    """
    try:
        if codec == "vp8":
            return _vp8_partition_start(payload) >= 0
        if codec == "h264":
            n = len(payload)
            if n < 1:
                return False
            nal_type = payload[0] & 0x1F
            if 1 <= nal_type <= 23 or nal_type == _H264_STAP_A:
                return True
            if nal_type == _H264_FU_A:
                return n >= 2 and bool(payload[1] & 0x80)
            return False
    except (IndexError, ValueError, TypeError):  # pragma: no cover - defensive
        return False
    return False


def _vp8_partition_start(payload: bytes | memoryview) -> int:
    """Offset of the VP8 payload header if this packet starts a frame, else -1.

    A frame starts where S=1 and PID (partition index) is 0 (RFC 7741 §4.2); the
    optional X/I/L/T/K extension bytes are skipped to find the payload header.
    """
    n = len(payload)
    if n < 1:
        return -1
    b0 = payload[0]
    # S bit (0x10) set and partition index (low 3 bits) zero.
    if b0 & 0x17 != 0x10:
        return -1
    off = 1
    if b0 & 0x80:  # X: extension control byte present
        if n < 2:
            return -1
        ext = payload[1]
        off = 2
        if ext & 0x80:  # I: PictureID present, M bit selects 15-bit form
            if off >= n:
                return -1
            off += 2 if payload[off] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            off += 1
        if ext & 0x30:  # T or K: one byte holding TID/Y/KEYIDX
            off += 1
    return off if off < n else -1


def _vp8_is_keyframe(payload: bytes | memoryview) -> bool:
    """P bit (inverse key frame flag) of the VP8 payload header is 0 on keyframes.

    We also require the 3-byte keyframe start code (RFC 6386 §9.1) that follows the
    3-byte frame tag, so random bytes with a clear P bit are not taken as keyframes.
    """
    off = _vp8_partition_start(payload)
    if off < 0 or len(payload) < off + 6:
        return False
    return (
        payload[off] & 0x01 == 0
        and payload[off + 3] == 0x9D
        and payload[off + 4] == 0x01
        and payload[off + 5] == 0x2A
    )


def _h264_is_keyframe(payload: bytes | memoryview) -> bool:
    """IDR slice or SPS, whether sent alone, aggregated (STAP-A) or fragmented (FU-A).

    STAP-B/MTAP/FU-B only exist in interleaved mode, which WebRTC does not use.
    """
    n = len(payload)
    if n < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == _H264_IDR or nal_type == _H264_SPS:
        return True
    if nal_type == _H264_STAP_A:
        # 1-byte STAP-A header, then (16-bit size, NAL unit) pairs.
        off = 1
        while off + 2 < n:
            size = (payload[off] << 8) | payload[off + 1]
            if size == 0 or off + 2 + size > n:
                return False
            inner = payload[off + 2] & 0x1F
            if inner == _H264_IDR or inner == _H264_SPS:
                return True
            off += 2 + size
        return False
    if nal_type == _H264_FU_A:
        if n < 2:
            return False
        fu_header = payload[1]
        inner = fu_header & 0x1F
        return bool(fu_header & 0x80) and (inner == _H264_IDR or inner == _H264_SPS)
    return False
