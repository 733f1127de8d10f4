"""NackGenerator, build_nack and RetransmissionBuffer with a fake (float) clock."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtp import RtcpPacket, RtcpRtpfbPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.nack import NackGenerator, RetransmissionBuffer, build_nack


def feed(gen: NackGenerator, seqs: list[int], now: float) -> None:
    for s in seqs:
        gen.on_packet(s, now)


# --- NackGenerator -----------------------------------------------------------------


def test_in_order_stream_never_nacks():
    gen = NackGenerator()
    for i in range(2000):
        gen.on_packet((60000 + i) & 0xFFFF, i * 0.001)
    assert gen.missing_count == 0
    assert gen.next_deadline() is None
    assert gen.due(10.0) == []
    assert gen.take_keyframe_request() is False


def test_gap_nacked_after_reorder_delay():
    gen = NackGenerator(reorder_delay=0.01)
    feed(gen, [100, 101, 104, 105, 108], 1.0)
    assert gen.missing_count == 4
    assert gen.next_deadline() == pytest.approx(1.01)
    assert gen.due(1.005) == []
    assert gen.due(1.01) == [102, 103, 106, 107]
    # Sent once, not again until rtt has passed.
    assert gen.due(1.02) == []
    assert gen.next_deadline() == pytest.approx(1.11)


def test_reordered_packet_within_delay_is_not_nacked():
    gen = NackGenerator(reorder_delay=0.01)
    feed(gen, [1, 2, 4], 0.0)
    gen.on_packet(3, 0.005)
    assert gen.missing_count == 0
    assert gen.next_deadline() is None
    assert gen.due(0.02) == []


# Times below are dyadic fractions so float sums hit deadlines exactly.


def test_gaps_detected_at_different_times_become_due_separately():
    gen = NackGenerator(reorder_delay=0.25, rtt=1.0)
    feed(gen, [10, 12], 0.0)
    feed(gen, [13, 15], 0.125)
    assert gen.due(0.25) == [11]
    assert gen.next_deadline() == 0.375
    assert gen.due(0.375) == [14]


def test_retransmission_fills_hole():
    gen = NackGenerator()
    feed(gen, [1, 5], 0.0)
    assert gen.due(0.03125) == [2, 3, 4]
    gen.on_packet(3, 0.0625)  # RTX arrived
    assert gen.due(0.125) == []
    assert gen.due(0.25) == [2, 4]
    gen.on_packet(2, 0.13)
    gen.on_packet(4, 0.13)
    assert gen.missing_count == 0
    assert gen.next_deadline() is None
    assert gen.due(1.0) == []


def test_duplicates_are_harmless():
    gen = NackGenerator()
    feed(gen, [1, 2, 2, 4, 4, 1], 0.0)
    assert gen.due(0.02) == [3]


def test_retries_every_rtt_up_to_max_retries():
    gen = NackGenerator(reorder_delay=0.125, max_retries=3, max_age=5.0)
    gen.rtt = 0.25
    feed(gen, [0, 2], 0.0)
    assert gen.due(0.0625) == []
    assert gen.due(0.125) == [1]
    assert gen.next_deadline() == 0.375
    assert gen.due(0.25) == []  # rtt not over yet
    assert gen.due(0.375) == [1]
    assert gen.due(0.5) == []
    assert gen.due(0.625) == [1]
    # Third NACK was the last one.
    assert gen.missing_count == 0
    assert gen.next_deadline() is None
    assert gen.due(0.875) == []


def test_default_max_retries_is_ten():
    gen = NackGenerator(max_age=100.0)
    feed(gen, [0, 2], 0.0)
    sent = 0
    t = 0.0
    while t < 5.0:
        sent += len(gen.due(t))
        t += 0.01
    assert sent == 10


def test_rtt_change_applies_to_pending_retries():
    gen = NackGenerator(reorder_delay=0.0)
    feed(gen, [0, 2], 0.0)
    assert gen.due(0.0) == [1]
    assert gen.next_deadline() == pytest.approx(0.1)
    gen.rtt = 0.03
    assert gen.next_deadline() == pytest.approx(0.03)
    assert gen.due(0.03) == [1]


def test_max_age_drops_old_holes():
    gen = NackGenerator(reorder_delay=0.125, rtt=0.25, max_age=0.7, max_retries=100)
    feed(gen, [0, 2], 0.0)
    assert gen.due(0.125) == [1]
    assert gen.due(0.375) == [1]
    assert gen.due(0.625) == [1]
    # Next retry would be at 0.875, past max_age: dropped right away.
    assert gen.missing_count == 0
    assert gen.next_deadline() is None
    assert gen.due(0.875) == []


def test_max_age_applies_even_if_due_was_not_called():
    gen = NackGenerator(max_age=1.0)
    feed(gen, [0, 2], 0.0)
    assert gen.due(1.5) == []
    assert gen.missing_count == 0


def test_wraparound():
    gen = NackGenerator()
    feed(gen, [65533, 65534, 1, 2], 0.0)
    assert gen.due(0.01) == [65535, 0]
    # Late arrival after the wrap is matched to the right hole.
    gen.on_packet(65535, 0.02)
    assert gen.due(0.2) == [0]


def test_late_packet_before_first_is_ignored():
    gen = NackGenerator()
    feed(gen, [10, 8, 9, 11], 0.0)
    assert gen.missing_count == 0
    assert gen.due(1.0) == []


def test_huge_forward_jump_resets_and_requests_keyframe():
    gen = NackGenerator(max_jump=1000)
    feed(gen, [1, 3], 0.0)
    gen.on_packet(3 + 1001, 0.001)
    assert gen.missing_count == 0
    assert gen.due(0.5) == []
    assert gen.take_keyframe_request() is True
    assert gen.take_keyframe_request() is False
    # Tracking continues from the new position.
    feed(gen, [1005, 1007], 0.6)
    assert gen.due(0.61) == [1006]


def test_jump_of_exactly_max_jump_is_tracked():
    gen = NackGenerator(max_jump=1000, max_missing=5000)
    feed(gen, [0, 1000], 0.0)
    assert gen.missing_count == 999
    assert gen.needs_keyframe is False
    gen.on_packet(1000 + 1001, 0.001)  # one more is a reset, even under the cap
    assert gen.missing_count == 0
    assert gen.needs_keyframe is True


def test_huge_backward_jump_resets_without_keyframe():
    gen = NackGenerator(max_jump=1000)
    feed(gen, [20000, 20002], 0.0)
    gen.on_packet(5000, 0.001)  # sender restarted lower
    assert gen.missing_count == 0
    feed(gen, [5001, 5003], 0.002)
    assert gen.due(0.02) == [5002]
    assert gen.needs_keyframe is False


def test_too_many_missing_clears_and_requests_keyframe():
    gen = NackGenerator(max_missing=500)
    feed(gen, [0, 500], 0.0)  # 499 missing: still under the cap
    assert gen.missing_count == 499
    assert gen.needs_keyframe is False
    gen.on_packet(503, 0.001)  # +2 -> 501 > 500
    assert gen.missing_count == 0
    assert gen.needs_keyframe is True
    assert gen.take_keyframe_request() is True
    assert gen.needs_keyframe is False
    assert gen.due(0.1) == []
    feed(gen, [504, 506], 0.25)
    assert gen.due(0.5) == [505]


def test_reset_forgets_everything():
    gen = NackGenerator()
    feed(gen, [0, 5], 0.0)
    gen.reset()
    feed(gen, [40000, 40002], 0.1)
    assert gen.due(0.2) == [40001]


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(0, 0xFFFF),
    steps=st.lists(
        st.tuples(st.integers(-40, 60), st.floats(0.0, 0.05, allow_nan=False)),
        max_size=300,
    ),
)
def test_never_nacks_a_received_packet(start, steps):
    """Streams spanning far less than 2**15 seqs: 16-bit aliasing cannot occur."""
    gen = NackGenerator()
    received: set[int] = set()
    pos = start
    now = 0.0
    for delta, dt in steps:
        pos += delta
        now += dt
        seq = pos & 0xFFFF
        gen.on_packet(seq, now)
        received.add(seq)
        out = gen.due(now)
        assert not set(out) & received
        assert len(out) == len(set(out))
        assert all(0 <= s <= 0xFFFF for s in out)
        deadline = gen.next_deadline()
        if deadline is None:
            assert gen.missing_count == 0
        else:
            assert gen.missing_count > 0


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(-(2**20), 2**20),  # also out-of-range input
            st.floats(0.0, 0.5, allow_nan=False),
            st.booleans(),
        ),
        max_size=200,
    )
)
def test_arbitrary_input_never_raises(steps):
    gen = NackGenerator()
    now = 0.0
    for seq, dt, call_due in steps:
        now += dt
        gen.on_packet(seq, now)
        if call_due:
            out = gen.due(now)
            assert all(0 <= s <= 0xFFFF for s in out)
            assert len(out) == len(set(out))
        assert gen.missing_count <= gen.max_missing
    gen.take_keyframe_request()


# --- build_nack --------------------------------------------------------------------


def parse_one(data: bytes) -> RtcpRtpfbPacket:
    packets = RtcpPacket.parse(data)
    assert len(packets) == 1
    packet = packets[0]
    assert isinstance(packet, RtcpRtpfbPacket)
    return packet


def test_build_nack_exact_bytes():
    data = build_nack(0x11223344, 0x55667788, [100, 101, 116, 117])
    assert data == bytes.fromhex(
        "81cd0004"  # V=2 FMT=1, PT=205, length 4 words
        "11223344"
        "55667788"
        "00648001"  # PID 100, BLP: 101 (bit 0) and 116 (bit 15)
        "00750000"  # PID 117 is 17 past 100: needs its own FCI
    )


def test_build_nack_parses_with_aiortc():
    seqs = [5, 7, 8, 22, 23, 40, 1000, 1016, 1017, 30000]
    packet = parse_one(build_nack(1, 2, seqs))
    assert packet.fmt == 1
    assert packet.ssrc == 1
    assert packet.media_ssrc == 2
    assert set(packet.lost) == set(seqs)


def test_build_nack_packs_17_per_fci():
    seqs = list(range(200, 217))
    data = build_nack(1, 2, seqs)
    assert len(data) == 12 + 4
    assert struct.unpack("!HH", data[12:16]) == (200, 0xFFFF)
    assert sorted(parse_one(data).lost) == seqs
    assert len(build_nack(1, 2, list(range(200, 218)))) == 12 + 8


def test_build_nack_unordered_and_duplicates():
    a = build_nack(1, 2, [9, 3, 5, 3, 9])
    b = build_nack(1, 2, [3, 5, 9])
    assert a == b
    assert len(a) == 16


def test_build_nack_across_wrap_uses_one_fci():
    data = build_nack(1, 2, [0, 65534, 1, 65535])
    assert len(data) == 16
    assert struct.unpack("!HH", data[12:16]) == (65534, 0b111)
    # aiortc does not wrap BLP-derived numbers (65536, 65537): mask them.
    assert {s & 0xFFFF for s in parse_one(data).lost} == {65534, 65535, 0, 1}


def test_build_nack_from_generator_output():
    gen = NackGenerator()
    feed(gen, [65530, 3, 4, 40, 41], 0.0)
    lost = gen.due(0.01)
    assert lost == [65531, 65532, 65533, 65534, 65535, 0, 1, 2] + list(range(5, 40))
    packet = parse_one(build_nack(7, 8, lost))
    assert {s & 0xFFFF for s in packet.lost} == set(lost)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=300))
def test_build_nack_roundtrip(seqs):
    data = build_nack(0xDEADBEEF, 0xCAFEBABE, seqs)
    packet = parse_one(data)
    assert packet.ssrc == 0xDEADBEEF
    assert packet.media_ssrc == 0xCAFEBABE
    assert {s & 0xFFFF for s in packet.lost} == set(seqs)
    assert len(packet.lost) == len(set(seqs))


def test_build_nack_empty_raises():
    with pytest.raises(ValueError):
        build_nack(1, 2, [])


# --- RetransmissionBuffer ----------------------------------------------------------


def test_buffer_store_get():
    buf = RetransmissionBuffer(size=8, max_age=2.0)
    pkt = object()
    buf.store(5, pkt, 0.0)
    assert buf.get(5, 1.0) is pkt
    assert buf.get(6, 1.0) is None
    assert buf.get(5 + 8, 1.0) is None  # same slot, different seq


def test_buffer_overwrite_by_newer():
    buf = RetransmissionBuffer(size=8)
    buf.store(5, "a", 0.0)
    buf.store(13, "b", 0.1)
    assert buf.get(5, 0.2) is None
    assert buf.get(13, 0.2) == "b"


def test_buffer_late_older_packet_does_not_evict_newer():
    buf = RetransmissionBuffer(size=8)
    buf.store(13, "new", 0.0)
    buf.store(5, "old", 0.1)
    assert buf.get(13, 0.2) == "new"
    assert buf.get(5, 0.2) is None


def test_buffer_expiry():
    buf = RetransmissionBuffer(size=8, max_age=2.0)
    buf.store(1, "x", 10.0)
    assert buf.get(1, 12.0) == "x"
    assert buf.get(1, 12.001) is None
    # An expired newer slot may be replaced by an older seq.
    buf.store(1 - 8 + 0x10000, "older", 12.5)
    assert buf.get(0xFFF9, 12.5) == "older"


def test_buffer_wraparound():
    buf = RetransmissionBuffer(size=16)
    for i in range(40):
        buf.store((65530 + i) & 0xFFFF, i, i * 0.01)
    now = 0.5
    assert [buf.get((65530 + i) & 0xFFFF, now) for i in range(40)] == [None] * 24 + list(
        range(24, 40)
    )


def test_buffer_default_size_and_validation():
    buf = RetransmissionBuffer()
    assert buf.size == 1024
    for i in range(1025):
        buf.store(i, i, 0.0)
    assert buf.get(0, 0.0) is None
    assert buf.get(1, 0.0) == 1
    assert buf.get(1024, 0.0) == 1024
    with pytest.raises(ValueError):
        RetransmissionBuffer(size=1000)
    with pytest.raises(ValueError):
        RetransmissionBuffer(size=0)


def test_buffer_clear():
    buf = RetransmissionBuffer(size=8)
    buf.store(3, "x", 0.0)
    buf.clear()
    assert buf.get(3, 0.0) is None


def test_buffer_keyframe_mark_does_not_hide_packets_32768_later():
    """With no new keyframe (a stable call asks for none), packets half the sequence space
    after the last one are still worth resending."""
    buf = RetransmissionBuffer()
    buf.on_keyframe(100)
    buf.store(100, "key", 0.0)
    for seq in range(101, 100 + 40_000):
        buf.store(seq & 0xFFFF, "delta", 0.0)
        if seq in (150, 100 + 0x8000 + 5, 100 + 39_990):
            assert not buf.before_keyframe(seq & 0xFFFF), seq
    assert buf.before_keyframe(99) is False, "the keyframe has left the cache: no mark"


def test_buffer_keyframe_mark_hides_what_came_before_it():
    buf = RetransmissionBuffer()
    for seq in range(65530, 65536):
        buf.store(seq, "delta", 0.0)
    buf.on_keyframe(2)
    for seq in range(0, 10):
        buf.store(seq, "key" if seq == 2 else "delta", 0.0)
    assert buf.before_keyframe(65533) and buf.before_keyframe(1)
    assert not buf.before_keyframe(2) and not buf.before_keyframe(9)
