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

__all__ = [
    "is_frame_start",
    "is_keyframe",
    "keyframe_size",
    "vp8_picture_ids",
    "vp8_temporal",
]

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


def keyframe_size(codec: str, payload: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) a keyframe packet announces, or None: the VP8 keyframe header
    (RFC 6386 section 9.1) or an H.264 SPS (alone or in a STAP-A). Read once per keyframe
    so a viewer's ``max_height`` can be matched to a simulcast layer."""
    try:
        if codec == "vp8":
            off = _vp8_partition_start(payload)
            if off < 0 or len(payload) < off + 10 or not _vp8_is_keyframe(payload):
                return None
            width = (payload[off + 6] | payload[off + 7] << 8) & 0x3FFF
            height = (payload[off + 8] | payload[off + 9] << 8) & 0x3FFF
            return (width, height) if width and height else None
        if codec == "h264":
            return _h264_sps_size(payload)
    except (IndexError, ValueError, TypeError):
        return None
    return None


class _Bits:
    """An H.264 RBSP bit reader (emulation-prevention bytes removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def bit(self) -> int:
        byte = self.data[self.pos >> 3]  # IndexError past the end: the caller gives up
        value = (byte >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("exp-Golomb code too long")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def _h264_sps_size(payload: bytes | memoryview) -> tuple[int, int] | None:
    data = bytes(payload)
    nal_type = data[0] & 0x1F
    if nal_type == _H264_STAP_A:
        off = 1
        while off + 2 < len(data):
            size = data[off] << 8 | data[off + 1]
            inner = data[off + 2 : off + 2 + size]
            if inner and inner[0] & 0x1F == _H264_SPS:
                return _sps_dimensions(inner[1:])
            off += 2 + size
        return None
    if nal_type == _H264_SPS:
        return _sps_dimensions(data[1:])
    return None


def _sps_dimensions(rbsp: bytes) -> tuple[int, int] | None:
    """Width and height from a sequence parameter set (H.264 section 7.3.2.1.1)."""
    r = _Bits(rbsp)
    profile = r.bits(8)
    r.bits(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format = r.ue()
        if chroma_format == 3:
            r.bit()  # separate_colour_plane_flag
        r.ue()  # bit_depth_luma
        r.ue()  # bit_depth_chroma
        r.bit()  # qpprime_y_zero_transform_bypass
        if r.bit():  # seq_scaling_matrix_present
            for index in range(8 if chroma_format != 3 else 12):
                if r.bit():
                    last, next_scale = 8, 8
                    for _ in range(16 if index < 6 else 64):
                        if next_scale:
                            next_scale = (last + r.se()) % 256
                        last = next_scale or last
    r.ue()  # log2_max_frame_num
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit()
        r.se()
        r.se()
        for _ in range(min(r.ue(), 255)):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()  # gaps_in_frame_num_allowed
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()  # mb_adaptive_frame_field
    r.bit()  # direct_8x8_inference
    width = width_mbs * 16
    height = height_units * 16 * (2 - frame_mbs_only)
    if r.bit():  # frame_cropping
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        crop_x = 2 if chroma_format in (1, 2) else 1
        crop_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    return (width, height) if 0 < width <= 16384 and 0 < height <= 16384 else None


def vp8_picture_ids(payload: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """Where a VP8 payload descriptor (RFC 7741 section 4.2) keeps its PictureID and
    TL0PICIDX, and their values: (pid_offset, pid, tl0_offset, tl0); an offset is -1
    when the field is absent. A 7-bit PictureID is reported with pid < 0x80 and its
    offset's byte has the M bit clear. Never raises."""
    n = len(payload)
    if n < 3 or not payload[0] & 0x80:
        return -1, 0, -1, 0
    ext = payload[1]
    off = 2
    pid_offset, pid = -1, 0
    if ext & 0x80:
        pid_offset = off
        if payload[off] & 0x80:
            if off + 1 >= n:
                return -1, 0, -1, 0
            pid = (payload[off] & 0x7F) << 8 | payload[off + 1]
            off += 2
        else:
            pid = payload[off]
            off += 1
    tl0_offset, tl0 = -1, 0
    if ext & 0x40 and off < n:
        tl0_offset, tl0 = off, payload[off]
    return pid_offset, pid, tl0_offset, tl0


def vp8_temporal(payload: bytes | bytearray | memoryview) -> tuple[int, bool]:
    """The temporal layer (TID) of a VP8 packet and its layer-sync (Y) bit, from the
    payload descriptor's T/K byte (RFC 7741 section 4.2); TID -1 when the descriptor has
    none (no temporal layers). Never raises."""
    n = len(payload)
    if n < 3 or not payload[0] & 0x80:
        return -1, False
    ext = payload[1]
    if not ext & 0x20:  # T: TID present
        return -1, False
    off = 2
    if ext & 0x80:
        off += 2 if payload[off] & 0x80 else 1
    if ext & 0x40:
        off += 1
    if off >= n:
        return -1, False
    byte = payload[off]
    return byte >> 6, bool(byte & 0x20)


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
