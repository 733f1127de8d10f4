"""End to end over real sockets: aiortc publishers and viewers through the SFU."""

from __future__ import annotations

import pytest

from tests.peers import start_whep_viewer, start_whip_publisher


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_one_publisher_many_viewers_decode(server, codec):
    publisher = await start_whip_publisher(
        server.base_url, "consult", server.token("consult", "lead-hospital", "lead"), codec
    )
    viewers = []
    try:
        await publisher.wait_connected()
        for n in range(3):
            viewers.append(
                await start_whep_viewer(
                    server.base_url, "consult", server.token("consult", f"site-{n}", "observer")
                )
            )
        for viewer in viewers:
            await viewer.wait_frames(90, timeout=30)  # three seconds of a 30 fps source
            await viewer.wait_audio_frames(50, timeout=10)
        for viewer in viewers:
            assert viewer.audio_frames > 50, "audio frames should arrive alongside video"
            frame = viewer.last_video_frame
            assert frame is not None and (frame.width, frame.height) == (320, 240)
            assert viewer.rate(2.0) > 15, f"decoded {viewer.rate(2.0)} fps of a 30 fps source"
    finally:
        for viewer in viewers:
            await viewer.close()
        await publisher.close()
