"""KeyFrameRequester coalescing with a fake (float) clock."""

from __future__ import annotations

import pytest

from sfu.keyframe import KeyFrameRequester


def test_first_request_sent_immediately():
    kf = KeyFrameRequester()
    assert kf.next_deadline() is None
    assert kf.poll(0.0) is False
    assert kf.request(10.0) is True
    assert kf.last_sent == 10.0
    assert kf.pending is False
    assert kf.next_deadline() is None


def test_requests_within_interval_are_coalesced_into_one():
    kf = KeyFrameRequester(min_interval=0.5)
    assert kf.request(1.0) is True
    assert kf.request(1.1) is False
    assert kf.request(1.3) is False
    assert kf.request(1.49) is False
    assert kf.pending is True
    assert kf.next_deadline() == pytest.approx(1.5)
    assert kf.poll(1.4) is False
    assert kf.poll(1.5) is True
    # Only once.
    assert kf.poll(1.6) is False
    assert kf.pending is False
    assert kf.next_deadline() is None
    assert kf.last_sent == 1.5


def test_interval_counts_from_the_polled_send():
    kf = KeyFrameRequester(min_interval=0.5)
    kf.request(0.0)
    kf.request(0.1)
    assert kf.poll(0.7) is True
    assert kf.request(1.0) is False  # 0.3 after the poll-triggered PLI
    assert kf.next_deadline() == pytest.approx(1.2)
    assert kf.request(1.2) is True  # interval passed: sent directly, pending cleared
    assert kf.pending is False
    assert kf.poll(5.0) is False


def test_request_after_interval_sent_directly():
    kf = KeyFrameRequester(min_interval=0.5)
    assert kf.request(0.0) is True
    assert kf.request(0.5) is True
    assert kf.request(0.99) is False
    assert kf.request(1.0) is True
    assert kf.poll(2.0) is False


def test_keyframe_cancels_pending():
    kf = KeyFrameRequester(min_interval=0.5)
    kf.request(0.0)
    kf.request(0.2)
    kf.on_keyframe(0.3)
    assert kf.pending is False
    assert kf.next_deadline() is None
    assert kf.poll(1.0) is False


def test_request_after_keyframe_is_kept():
    kf = KeyFrameRequester(min_interval=0.5)
    kf.request(0.0)
    kf.on_keyframe(0.1)
    assert kf.request(0.2) is False
    assert kf.poll(0.5) is True


def test_keyframe_without_requests_does_not_block_next_request():
    kf = KeyFrameRequester(min_interval=0.5)
    kf.on_keyframe(0.0)
    assert kf.request(0.1) is True


def test_custom_interval():
    kf = KeyFrameRequester(min_interval=2.0)
    assert kf.request(0.0) is True
    assert kf.request(1.9) is False
    assert kf.poll(1.99) is False
    assert kf.poll(2.0) is True


def test_fir_seq_wraps_at_8_bits():
    kf = KeyFrameRequester()
    seqs = [kf.next_fir_seq() for _ in range(258)]
    assert seqs[:3] == [0, 1, 2]
    assert seqs[255] == 255
    assert seqs[256:] == [0, 1]
