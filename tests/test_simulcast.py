"""Simulcast end to end: a publisher sends three encodings, each viewer gets the one it
asked for (or its link carries), switching only at keyframes.

The publisher is :class:`bench.loadclient.SimulcastPublisher` (real ICE, DTLS-SRTP and
VP8 encoded once with PyAV, three sizes announced as ``a=ssrc-group:SIM``); viewers are
aiortc WHEP clients that decode what they get, so a test sees the picture size a viewer
would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from bench.loadclient import Clip, LoadViewer, SimulcastPublisher, make_clip
from tests.conftest import RunningServer
from tests.peers import WhepViewer, start_whep_viewer

ROOM = "simulcast-teaching"
SIZES = ((160, 90, 100_000), (320, 180, 250_000), (640, 360, 600_000))


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    return [make_clip(0, 2.0, 15, w, h, bitrate=b) for w, h, b in SIZES]


async def _drive(peers: Callable[[], list]) -> None:
    while True:
        await asyncio.sleep(0.02)
        now = time.monotonic()
        for peer in peers():
            peer.timer(now)


async def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def simulcast_publisher(
    server: RunningServer, clips: list[Clip]
) -> AsyncIterator[SimulcastPublisher]:
    publisher = SimulcastPublisher(
        server.base_url, ROOM, server.token(ROOM, "central-hospital", "lead"), clips
    )
    await publisher.open()
    timers = asyncio.ensure_future(_drive(lambda: [publisher]))
    async with aiohttp.ClientSession() as http:
        try:
            await publisher.negotiate(http)
            await wait_for(lambda: publisher.connected, 10, "the publisher to connect")
            yield publisher
        finally:
            timers.cancel()
            await publisher.delete(http)
            publisher.close()


async def post_layer(server: RunningServer, viewer: WhepViewer, token: str, body: dict) -> None:
    link = viewer.location + "/layer"  # type: ignore[operator]
    async with aiohttp.ClientSession() as http:
        async with http.post(
            server.base_url + link, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 204, await response.text()


def size(viewer: WhepViewer) -> tuple[int, int] | None:
    frame = viewer.last_video_frame
    return None if frame is None else (frame.width, frame.height)


async def test_each_viewer_decodes_the_layer_it_asked_for(server, clips):
    async with simulcast_publisher(server, clips) as publisher:
        big_token = server.token(ROOM, "city-hospital", "observer")
        small_token = server.token(ROOM, "island-clinic", "observer")
        big = await start_whep_viewer(server.base_url, ROOM, big_token)
        small = await start_whep_viewer(server.base_url, ROOM, small_token)
        try:
            assert 'rel="urn:ietf:params:whep:ext:core:layer"' in small.link
            await post_layer(server, small, small_token, {"encodingId": "0"})
            await wait_for(lambda: size(big) == (640, 360), 15, "the top layer at the big screen")
            await wait_for(lambda: size(small) == (160, 90), 15, "the low layer at the small one")

            # A ceiling by height: the tallest layer that fits.
            await post_layer(server, small, small_token, {"maxHeight": 200})
            await wait_for(lambda: size(small) == (320, 180), 15, "the middle layer (<= 200 px)")
            frames_before = small.video_frames
            # Back to the server's choice: the top layer, with no decoding gap.
            await post_layer(server, small, small_token, {})
            await wait_for(lambda: size(small) == (640, 360), 15, "the top layer again")
            await small.wait_frames(frames_before + 15)
            assert size(big) == (640, 360)
            # Every switch waited for a keyframe of its new layer, asked of that layer.
            assert publisher.layers[0].plis >= 1 and publisher.layers[1].plis >= 1
        finally:
            await big.close()
            await small.close()


async def test_a_hundred_viewers_switching_at_once_cost_the_publisher_few_keyframes(server, clips):
    async with simulcast_publisher(server, clips) as publisher:
        viewers = [
            LoadViewer(server.base_url, ROOM, server.token(ROOM, f"site-{i:03d}", "observer"))
            for i in range(100)
        ]
        timers = asyncio.ensure_future(_drive(lambda: viewers))
        async with aiohttp.ClientSession() as http:
            try:
                for viewer in viewers:
                    await viewer.open()
                await asyncio.gather(*(v.negotiate(http) for v in viewers))
                await wait_for(
                    lambda: all(v.connected for v in viewers), 60, "100 viewers to connect"
                )
                low = publisher.layers[0]
                # Once everyone is on the top layer, nobody has asked the low layer for a
                # keyframe since (its own periodic keyframes aside).
                await asyncio.sleep(0)
                before = low.plis
                started = time.monotonic()

                async def to_low(viewer: LoadViewer) -> None:
                    async with http.post(
                        server.base_url + viewer.location + "/layer",
                        json={"encodingId": "0"},
                        headers={"Authorization": f"Bearer {viewer.token}"},
                    ) as response:
                        assert response.status == 204

                await asyncio.gather(*(to_low(v) for v in viewers))
                burst = time.monotonic() - started
                await wait_for(
                    lambda: low.plis > before, 10, "a keyframe request for the low layer"
                )
                # The switch burst took `burst` seconds; the per-layer throttle allows one
                # request per half second, plus the one that opens the burst.
                await asyncio.sleep(0.6)
                asked = low.plis - before
                print(f"keyframe requests for 100 switches: {asked} in {burst:.2f} s")
                assert asked <= 2 + int(burst / 0.5), (asked, burst)
            finally:
                timers.cancel()
                for viewer in viewers:
                    await viewer.delete(http)
                    viewer.close()


@pytest.mark.browser
async def test_chromium_publishes_three_layers_and_viewers_get_their_own(server):
    """The demo page's camera goes out as three rid encodings (q, h, f of 1280x720); a
    thumbnail viewer gets q, a full-size viewer the top one Chromium sends."""
    from tests.browser import chromium_available, launch_chromium, missing_reason
    from tests.test_browser import _stop_all_pages, open_demo, publish, wait_stats

    if not chromium_available():
        pytest.skip(reason=missing_reason())
    chromium = await asyncio.to_thread(launch_chromium)
    viewers: list[WhepViewer] = []
    try:
        driver = chromium.driver
        await open_demo(driver, server.base_url)
        started = time.monotonic()
        await publish(driver, ROOM, "central-hospital", "lead")
        await wait_stats(driver, lambda s: s["publishState"] == "connected", 15, "publishing")
        thumb_token = server.token(ROOM, "island-clinic", "observer")
        thumb = await start_whep_viewer(server.base_url, ROOM, thumb_token)
        viewers.append(thumb)
        await post_layer(server, thumb, thumb_token, {"encodingId": "q"})
        full = await start_whep_viewer(
            server.base_url, ROOM, server.token(ROOM, "city-hospital", "observer")
        )
        viewers.append(full)
        await wait_for(lambda: size(thumb) == (320, 180), 20, "the thumbnail layer (q)")
        await wait_for(
            lambda: (size(full) or (0, 0))[1] >= 360, 30, "a layer of 360 px or more at full size"
        )
        reached = time.monotonic() - started
        await wait_for(lambda: size(full) == (1280, 720), 40, "the top layer at full size")
        top_after = time.monotonic() - started
        print(f"first >=360p layer {reached:.1f} s, top layer {top_after:.1f} s after publish")
        frames = thumb.video_frames
        await thumb.wait_frames(frames + 20)
        assert size(thumb) == (320, 180)
    finally:
        for viewer in viewers:
            await viewer.close()
        await asyncio.to_thread(_stop_all_pages, chromium.driver)
        await asyncio.to_thread(chromium.quit)


@pytest.mark.browser
async def test_encodings_nobody_watches_are_paused_at_the_lead_and_come_back(server):
    """A lead on the conference page (telebridge.js) sends three encodings; while the
    only viewer wants the thumbnail, the server has the page switch the other two off,
    and when the viewer asks for full size they come back and it gets the top one."""
    from tests.browser import chromium_available, launch_chromium, missing_reason
    from tests.test_demo_conference import app_call, open_app

    if not chromium_available():
        pytest.skip(reason=missing_reason())
    chromium = await asyncio.to_thread(launch_chromium)
    driver = chromium.driver
    viewer: WhepViewer | None = None

    async def encodings() -> list[bool]:
        return await asyncio.to_thread(
            driver.execute_script,
            "const c = window.telebridgeApp.client;"
            "const t = [...c.localTracks.values()].find((t) => t.kind === 'video');"
            "return t.transceiver.sender.getParameters().encodings.map((e) => e.active);",
        )

    async def wait_encodings(expected: list[bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (seen := await encodings()) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"encodings {seen}, expected {expected}")
            await asyncio.sleep(0.2)

    try:
        await asyncio.to_thread(open_app, driver, server.base_url)
        await asyncio.to_thread(
            app_call, driver, "join(arguments[0], arguments[1], arguments[2])", ROOM, "lead", "lead"
        )
        media = {"width": 1280, "height": 720, "frameRate": 20}
        await asyncio.to_thread(app_call, driver, "publish(arguments[0])", media)
        token = server.token(ROOM, "island-clinic", "observer")
        viewer = await start_whep_viewer(server.base_url, ROOM, token)
        await post_layer(server, viewer, token, {"encodingId": "q"})
        await wait_for(lambda: size(viewer) == (320, 180), 20, "the thumbnail layer")
        await wait_encodings([True, False, False], 15)
        paused_at = time.monotonic()
        frames = viewer.video_frames
        await viewer.wait_frames(frames + 20)
        assert size(viewer) == (320, 180), "the thumbnail goes on while the others are off"

        asked = time.monotonic()
        await post_layer(server, viewer, token, {})
        # Back up step by step, each step after a probe shows the link carries it.
        await wait_for(lambda: size(viewer) == (1280, 720), 30, "the top layer again")
        back = time.monotonic() - asked
        assert (await encodings())[::2] == [True, True], "the lowest, and the top it watches"
        print(f"upper layers off {asked - paused_at:.1f} s; top layer {back:.1f} s after asking")
    finally:
        if viewer is not None:
            await viewer.close()
        await asyncio.to_thread(chromium.quit)
