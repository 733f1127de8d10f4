"""Keyframe / frame-start detection on real encoder output and hand-made edge cases."""

from __future__ import annotations

import fractions
import struct

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.codecs import is_frame_start, is_keyframe


def _encode_frames(mime: str, count: int) -> list[list[bytes]]:
    """Encode ``count`` frames (the first one forced to a keyframe) with aiortc."""
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96))
    rng = np.random.default_rng(7)
    frames = []
    for i in range(count):
        # Noise makes frames span many packets, so we see non-first packets too.
        image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = i * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        payloads, _timestamp = encoder.encode(frame, force_keyframe=(i == 0))
        frames.append(payloads)
    return frames


@pytest.fixture(scope="module")
def vp8_frames() -> list[list[bytes]]:
    frames = _encode_frames("video/VP8", 3)
    assert all(len(f) > 1 for f in frames)
    return frames


@pytest.fixture(scope="module")
def h264_frames() -> list[list[bytes]]:
    frames = _encode_frames("video/H264", 3)
    assert all(len(f) > 1 for f in frames)
    return frames


# --- VP8 on real packets -----------------------------------------------------------


def test_vp8_keyframe_first_packet_only(vp8_frames):
    key = vp8_frames[0]
    assert is_keyframe("vp8", key[0]) is True
    assert is_frame_start("vp8", key[0]) is True
    # Continuation packets (S=0) neither start a frame nor flag a keyframe.
    assert [is_keyframe("vp8", p) for p in key[1:]] == [False] * (len(key) - 1)
    assert [is_frame_start("vp8", p) for p in key[1:]] == [False] * (len(key) - 1)


def test_vp8_delta_frames_are_not_keyframes(vp8_frames):
    for frame in vp8_frames[1:]:
        assert [is_keyframe("vp8", p) for p in frame] == [False] * len(frame)
        assert is_frame_start("vp8", frame[0]) is True
        assert [is_frame_start("vp8", p) for p in frame[1:]] == [False] * (len(frame) - 1)


def test_vp8_memoryview_accepted(vp8_frames):
    assert is_keyframe("vp8", memoryview(vp8_frames[0][0])) is True
    assert is_keyframe("vp8", memoryview(vp8_frames[1][0])) is False


def _vp8_body(vp8_frames: list[list[bytes]], index: int) -> bytes:
    """The VP8 payload of a frame's first packet, without aiortc's 4-byte descriptor."""
    first = vp8_frames[index][0]
    # aiortc always sends X=1, I=1, M=1 (15-bit PictureID): 4 descriptor bytes.
    assert first[0] & 0x80 and first[1] == 0x80 and first[2] & 0x80
    return first[4:]


@pytest.mark.parametrize(
    "descriptor",
    [
        bytes([0x10]),  # no extensions
        bytes([0x90, 0x00]),  # X with nothing set
        bytes([0x90, 0x80, 0x05]),  # 7-bit PictureID
        bytes([0x90, 0x80, 0x81, 0x23]),  # 15-bit PictureID
        bytes([0x90, 0xC0, 0x81, 0x23, 0x07]),  # + TL0PICIDX
        bytes([0x90, 0xF0, 0x05, 0x07, 0x40]),  # 7-bit PID + L + T/K byte
        bytes([0x90, 0x10, 0x1F]),  # K only
        bytes([0xB0, 0x20, 0x40]),  # N bit set, T only
    ],
)
def test_vp8_descriptor_variants(vp8_frames, descriptor):
    key_body = _vp8_body(vp8_frames, 0)
    delta_body = _vp8_body(vp8_frames, 1)
    assert is_keyframe("vp8", descriptor + key_body) is True
    assert is_keyframe("vp8", descriptor + delta_body) is False
    assert is_frame_start("vp8", descriptor + delta_body) is True
    # Same bytes but S=0, or S=1 with a non-zero partition index: not a frame start.
    not_start = bytes([descriptor[0] & ~0x10]) + descriptor[1:]
    assert is_keyframe("vp8", not_start + key_body) is False
    assert is_frame_start("vp8", not_start + key_body) is False
    other_partition = bytes([descriptor[0] | 0x01]) + descriptor[1:]
    assert is_keyframe("vp8", other_partition + key_body) is False
    assert is_frame_start("vp8", other_partition + key_body) is False


def test_vp8_truncated_keyframe_header_is_not_keyframe(vp8_frames):
    first = vp8_frames[0][0]
    # Descriptor (4) + frame tag (3) + start code (3) is the minimum.
    assert is_keyframe("vp8", first[:10]) is True
    assert [is_keyframe("vp8", first[:n]) for n in range(10)] == [False] * 10


def test_vp8_p_bit_without_start_code_is_not_keyframe():
    assert is_keyframe("vp8", bytes([0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00])) is False
    assert is_keyframe("vp8", bytes([0x10, 0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A])) is True
    assert is_keyframe("vp8", bytes([0x10, 0x01, 0x00, 0x00, 0x9D, 0x01, 0x2A])) is False


# --- H.264 on real packets ---------------------------------------------------------


def test_h264_keyframe_first_packet(h264_frames):
    key = h264_frames[0]
    # aiortc aggregates SPS/PPS into a STAP-A in front of the IDR slice.
    assert key[0][0] & 0x1F == 24
    assert is_keyframe("h264", key[0]) is True
    assert is_frame_start("h264", key[0]) is True


def test_h264_keyframe_fragments(h264_frames):
    key = h264_frames[0]
    fu_a = [p for p in key if p[0] & 0x1F == 28]
    assert fu_a, "expected the IDR slice to be fragmented"
    starts = [p for p in fu_a if p[1] & 0x80]
    middles = [p for p in fu_a if not p[1] & 0x80]
    assert starts and middles
    # Every fragmented unit of this frame is an IDR slice (type 5).
    assert {p[1] & 0x1F for p in fu_a} == {5}
    assert [is_keyframe("h264", p) for p in starts] == [True] * len(starts)
    assert [is_frame_start("h264", p) for p in starts] == [True] * len(starts)
    assert [is_keyframe("h264", p) for p in middles] == [False] * len(middles)
    assert [is_frame_start("h264", p) for p in middles] == [False] * len(middles)


def test_h264_delta_frames_are_not_keyframes(h264_frames):
    for frame in h264_frames[1:]:
        assert [is_keyframe("h264", p) for p in frame] == [False] * len(frame)
        assert is_frame_start("h264", frame[0]) is True


def _nal(nal_type: int, body: bytes = b"\x88\x84") -> bytes:
    return bytes([0x60 | nal_type]) + body


def _stap_a(*units: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(u)) + u for u in units)


@pytest.mark.parametrize(
    ("payload", "keyframe", "start"),
    [
        (_nal(5), True, True),  # IDR
        (_nal(7), True, True),  # SPS
        (_nal(8), False, True),  # PPS alone
        (_nal(1), False, True),  # non-IDR slice
        (_nal(6), False, True),  # SEI
        (_stap_a(_nal(6), _nal(1)), False, True),
        (_stap_a(_nal(8), _nal(5)), True, True),  # IDR as second unit
        (_stap_a(_nal(7), _nal(8)), True, True),
        (_stap_a(_nal(1), _nal(5))[:-3], False, True),  # second unit truncated
        (b"\x78\x00\x00" + _nal(5), False, True),  # zero-length unit is malformed
        (b"\x78", False, True),  # empty STAP-A
        (bytes([0x7C, 0x85, 0xAA]), True, True),  # FU-A start, IDR
        (bytes([0x7C, 0x87, 0xAA]), True, True),  # FU-A start, SPS
        (bytes([0x7C, 0x81, 0xAA]), False, True),  # FU-A start, non-IDR
        (bytes([0x7C, 0x05, 0xAA]), False, False),  # FU-A middle, IDR
        (bytes([0x7C, 0x45, 0xAA]), False, False),  # FU-A end, IDR
        (bytes([0x7C]), False, False),  # FU-A without FU header
        (bytes([0x7D, 0x85, 0x00, 0x00]), False, False),  # FU-B (interleaved only)
        (bytes([0x79, 0x00]), False, False),  # STAP-B (interleaved only)
        (bytes([0x60]), False, False),  # type 0 is unspecified
        (b"", False, False),
    ],
)
def test_h264_handmade(payload, keyframe, start):
    assert is_keyframe("h264", payload) is keyframe
    assert is_frame_start("h264", payload) is start


# --- audio, unknown, fuzz ----------------------------------------------------------


def test_audio_and_unknown_codecs_are_never_keyframes(vp8_frames):
    key = vp8_frames[0][0]
    for codec in ("opus", "pcmu", "g722", "vp9", "VP8", ""):
        assert is_keyframe(codec, key) is False
        assert is_frame_start(codec, key) is False


@settings(max_examples=500, deadline=None)
@given(
    codec=st.sampled_from(["vp8", "h264", "opus", "vp9"]),
    data=st.binary(max_size=64),
    as_view=st.booleans(),
)
def test_fuzz_never_raises(codec, data, as_view):
    payload = memoryview(data) if as_view else data
    assert is_keyframe(codec, payload) in (True, False)
    assert is_frame_start(codec, payload) in (True, False)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([b"\x78", b"\x7c", b"\x10", b"\x90", b"\x90\x80", b"\x90\xf0"]),
    data=st.binary(max_size=40),
)
def test_fuzz_structured_prefixes_never_raise(prefix, data):
    for codec in ("vp8", "h264"):
        assert is_keyframe(codec, prefix + data) in (True, False)
        assert is_frame_start(codec, prefix + data) in (True, False)
