"""H.264 simulcast end to end: the same path as VP8 (tests/test_simulcast.py), with layer
sizes read from each encoding's SPS and switches at IDR frames.

The publisher is :class:`bench.loadclient.SimulcastPublisher` sending three sizes encoded
once with libx264 (through PyAV and aiortc's H.264 packetiser), announced as
``a=ssrc-group:SIM``; the viewers are aiortc WHEP clients that decode what they get."""

from __future__ import annotations

import pytest

from bench.loadclient import Clip, make_clip
from tests.test_simulcast import (
    SIZES,
    big_and_small_viewers,
    post_layer,
    simulcast_publisher,
    size,
    wait_for,
)


@pytest.fixture(scope="module")
def h264_clips() -> list[Clip]:
    return [make_clip(0, 2.0, 15, w, h, bitrate=b, codec="h264") for w, h, b in SIZES]


async def test_h264_viewers_decode_the_layer_each_asked_for_and_switch_cleanly(server, h264_clips):
    async with (
        simulcast_publisher(server, h264_clips) as publisher,
        big_and_small_viewers(server) as (big, small, small_token),
    ):
        assert "H264/90000" in big.pc.remoteDescription.sdp, "the viewer was sent H.264"
        await post_layer(server, small, small_token, {"maxHeight": 100})
        await wait_for(lambda: size(big) == (640, 360), 20, "the top layer at the big screen")
        await wait_for(lambda: size(small) == (160, 90), 20, "the low layer at the small one")
        await post_layer(server, small, small_token, {"encodingId": "1"})
        await wait_for(lambda: size(small) == (320, 180), 20, "the middle layer")
        frames_before = small.video_frames
        await post_layer(server, small, small_token, {})
        await wait_for(lambda: size(small) == (640, 360), 20, "the top layer again")
        await small.wait_frames(frames_before + 15)
        # Each switch waited for an IDR of its new layer, asked of that layer.
        assert publisher.layers[0].plis >= 1 and publisher.layers[1].plis >= 1
        assert size(big) == (640, 360)
