"""A full server refuses a browser viewer at once; telebridge.js tells the page and tries
again, and gets in when a place frees up (docs/protocol.md, "A full server").

Headless Chromium runs the demo page (telebridge.js with automatic subscriptions); an
aiortc WHIP lead publishes, and two aiortc WHEP viewers fill the one media worker
(`admission_max_consumers = 3`: each viewer holds two consumers)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.browser import browser_fixture
from tests.conftest import RunningServer
from tests.peers import WhepViewer, start_whep_viewer, start_whip_publisher
from tests.test_demo_conference import app_call, app_state, open_app, status_text
from tests.test_pipes import metric, wait_metric

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

ROOM = "teaching-round"


browser = browser_fixture((1000, 700))


async def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)
    return found


async def test_a_refused_browser_viewer_is_told_and_gets_in_when_a_place_frees(
    browser, tmp_path: Path
):
    server = RunningServer(tmp_path, workers=1, extra="admission_max_consumers = 3")
    publisher = await start_whip_publisher(
        server.base_url, ROOM, server.token(ROOM, "central-hospital", "lead")
    )
    viewers: list[WhepViewer] = []
    driver = browser.driver
    run = asyncio.to_thread
    try:
        await publisher.wait_connected()
        for n in range(2):
            viewer = await start_whep_viewer(
                server.base_url, ROOM, server.token(ROOM, f"district-{n}", "observer")
            )
            viewers.append(viewer)
            await viewer.wait_frames(5, timeout=30)
        await wait_metric(
            server, "telebridge_worker_load", {"worker": "0", "measure": "consumers"}, 4
        )

        await run(open_app, driver, server.base_url)
        await run(
            app_call,
            driver,
            "join(arguments[0], arguments[1], arguments[2])",
            ROOM,
            "island-clinic",
            "observer",
        )

        async def told_full() -> bool:
            return "Server full" in await run(status_text, driver)

        await wait_for(told_full, 30, "the page to say the server is full")
        assert await metric(server, "telebridge_sessions_refused_total", {"kind": "subscribe"}) >= 1
        state = await run(app_state, driver)
        assert not [t for t in state["tiles"] if not t["local"] and t["framesDecoded"]], (
            "refused: no media yet"
        )

        await viewers.pop().close()  # a district hospital leaves: two consumers free
        await wait_metric(
            server, "telebridge_worker_load", {"worker": "0", "measure": "consumers"}, 2
        )

        async def decoding() -> bool:
            state = await run(app_state, driver)
            return any(t["framesDecoded"] > 10 for t in state["tiles"] if not t["local"])

        # The retries come 5 s, then 10 s, then 20 s after a refusal (±20 %).
        await wait_for(decoding, 60, "the page to get in and decode the lead's video")
        assert "Admitted" in await run(status_text, driver)
        before = viewers[0].video_frames  # the viewer admitted first kept its media
        await viewers[0].wait_frames(before + 10, timeout=30)
    finally:
        for viewer in viewers:
            await viewer.close()
        await publisher.close(delete=False)
        server.stop()
