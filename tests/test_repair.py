"""Loss repair and late joiners: what a site on a bad link, or arriving late, sees."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import urllib.request

from tests.peers import WhepViewer, WhipPublisher, start_whep_viewer, start_whip_publisher
from tests.relay import LossyRelay
from tests.test_lifecycle import health


def worker_counter(server, name: str) -> float:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("telebridge_worker_events_total{") and f'name="{name}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_five_percent_loss_is_repaired_by_nack_and_rtx(server):
    room = "island"
    publisher = await start_whip_publisher(
        server.base_url, room, server.token(room, "lead", "lead"), "VP8"
    )
    await publisher.wait_connected()
    clean = await start_whep_viewer(
        server.base_url, room, server.token(room, "mainland", "observer")
    )
    lossy = WhepViewer(server.base_url, room, server.token(room, "island-site", "observer"))
    relay = LossyRelay(("127.0.0.1", clean.server_port()), loss=0.05)
    await relay.start()
    try:
        await lossy.start(via_port=relay.port)
        # The SFU answers every NACK (retransmissions counted below); a retransmission lost
        # in turn is the client's to ask for again, and aiortc does so only when a new gap
        # shows up, so one lost RTX can cost it a second of video. This test is about the
        # SFU's repair: the relay spares RTX.
        rtx = re.search(r"a=rtpmap:(\d+) rtx/90000", lossy.answer)
        assert rtx, "the answer offers RTX"
        relay.spare = frozenset({int(rtx.group(1))})
        await clean.wait_frames(10)
        await lossy.wait_frames(10)
        base_clean, base_lossy = clean.video_frames, lossy.video_frames
        await asyncio.sleep(8)
        got_clean = clean.video_frames - base_clean
        got_lossy = lossy.video_frames - base_lossy
        print(
            f"decoded frames: clean {got_clean}, lossy {got_lossy}; relay dropped {relay.dropped} of {relay.dropped + relay.forwarded}"
        )
        assert relay.dropped > 20, f"the relay should have dropped packets, dropped {relay.dropped}"
        assert got_clean > 100
        assert got_lossy >= 0.95 * got_clean, (got_lossy, got_clean, relay.dropped)
        assert worker_counter(server, "retransmissions") > 0
    finally:
        relay.close()
        await lossy.close()
        await clean.close()
        await publisher.close()


async def test_late_viewer_gets_a_picture_within_a_second(server):
    room = "late"
    publisher = await start_whip_publisher(
        server.base_url, room, server.token(room, "lead", "lead"), "VP8"
    )
    viewers = []
    try:
        await publisher.wait_connected()
        await asyncio.sleep(3)  # well past the publisher's first keyframe
        delays = []
        for n in range(3):
            viewer = WhepViewer(server.base_url, room, server.token(room, f"late-{n}", "observer"))
            viewers.append(viewer)
            started = time.monotonic()
            await viewer.start()
            await viewer.wait_frames(1, timeout=5)
            delays.append(viewer.video_frame_times[0] - started)
            await asyncio.sleep(1)
        assert statistics.median(delays) < 1.0, f"time to first decoded frame: {delays}"
    finally:
        for viewer in viewers:
            await viewer.close()
        await publisher.close()


async def test_viewer_of_named_participant_and_session_end(server):
    room = "panel"
    lead = await start_whip_publisher(
        server.base_url, room, server.token(room, "central", "lead"), "VP8", audio=False
    )
    presenter = await start_whip_publisher(
        server.base_url, room, server.token(room, "district", "participant"), "H264"
    )
    try:
        viewer = await start_whep_viewer(
            server.base_url, room, server.token(room, "obs", "observer"), participant="district"
        )
        await viewer.wait_frames(10)
        assert "H264" in viewer.answer, (
            "the viewer must receive the presenter's H.264 track, not the lead's VP8"
        )
        await presenter.close()  # DELETE ends the publisher's session; its viewers stop receiving
        await asyncio.sleep(0.5)
        frozen = viewer.video_frames
        await asyncio.sleep(1.5)
        assert viewer.video_frames <= frozen + 2
        assert health(server)["workers"][0]["sessions"] == 1, (
            "the viewer's session ends with its source"
        )
        await viewer.close(delete=False)
    finally:
        await lead.close()


async def test_lossy_uplink_is_repaired_by_nacks_to_the_publisher(server):
    """A presenting site on a bad link: the SFU NACKs the publisher, which resends."""
    room = "uplink"
    publisher = WhipPublisher(server.base_url, room, server.token(room, "district", "lead"))
    relay = LossyRelay(("127.0.0.1", health(server)["workers"][0]["port"]), loss=0.10, uplink=True)
    await relay.start()
    viewer = None
    try:
        await publisher.start("VP8", audio=False, via_port=relay.port)
        await publisher.wait_connected()
        viewer = await start_whep_viewer(
            server.base_url, room, server.token(room, "central", "observer")
        )
        await viewer.wait_frames(10)
        base = viewer.video_frames
        sent_before = publisher.video.count
        await asyncio.sleep(8)
        decoded = viewer.video_frames - base
        sent = publisher.video.count - sent_before
        print(
            f"frames sent {sent}, decoded {decoded}; relay dropped {relay.dropped} of {relay.dropped + relay.forwarded}"
        )
        assert relay.dropped > 15
        assert decoded >= 0.95 * sent, (decoded, sent)
        assert worker_counter(server, "nacks_out") > 0
        assert worker_counter(server, "rtx_in") > 0, "the publisher's RTX answers should arrive"
    finally:
        relay.close()
        if viewer is not None:
            await viewer.close()
        await publisher.close()
