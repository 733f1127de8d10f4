"""End-to-end checks with headless Chromium and the WHIP/WHEP demo page (/static/whip.html).

Chromium's fake camera sends 1280x720 at 20 fps.  Every selenium call blocks, so the tests
run them in worker threads: the server under test lives on the test's event loop.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.browser import (
    JavascriptError,
    chromium_available,
    console_errors_besides_network,
    launch_chromium,
    missing_reason,
    read_png_rgb,
    run_async_js,
)
from tests.peers import start_whep_viewer

pytestmark = pytest.mark.browser

CAMERA_FPS = 20
MEASURE_S = 5.0


@pytest.fixture
async def browser():
    """A headless Chromium (tests.browser.Chromium); its sessions are stopped afterwards."""
    if not chromium_available():
        pytest.skip(reason=missing_reason())
    chromium = await asyncio.to_thread(launch_chromium)
    try:
        yield chromium
    finally:
        await asyncio.to_thread(_stop_all_pages, chromium.driver)
        await asyncio.to_thread(chromium.quit)


def _stop_all_pages(driver) -> None:
    """Best effort: DELETE every WHIP/WHEP session the page still holds."""
    try:
        handles = driver.window_handles
    except Exception:
        return
    for handle in handles:
        try:
            driver.switch_to.window(handle)
            run_async_js(
                driver,
                "if (window.telebridgeDemo) await window.telebridgeDemo.stop();",
                timeout=10,
            )
        except Exception:
            pass


async def js(driver, script: str, *args, timeout: float = 30):
    return await asyncio.to_thread(run_async_js, driver, script, *args, timeout=timeout)


async def open_demo(driver, base_url: str) -> None:
    await asyncio.to_thread(driver.get, base_url + "/static/whip.html")
    ready = await js(driver, "return typeof window.telebridgeDemo === 'object';")
    assert ready, "the demo page did not define window.telebridgeDemo"


async def page_stats(driver) -> dict:
    return await js(driver, "return await window.telebridgeDemo.stats();")


async def status_line(driver) -> dict:
    return await js(
        driver,
        "const el = document.getElementById('status');"
        "return {text: el.textContent, kind: el.dataset.kind};",
    )


async def wait_stats(driver, predicate, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    stats = await page_stats(driver)
    while not predicate(stats):
        if time.monotonic() > deadline:
            status = await status_line(driver)
            pytest.fail(f"timed out waiting for {what}: stats={stats} status={status}")
        await asyncio.sleep(0.25)
        stats = await page_stats(driver)
    return stats


async def wait_smooth(
    driver, fps: float, window: float, timeout: float
) -> list[tuple[float, int, int, str]] | None:
    """Polls the viewer's stats until some stretch of at least ``window`` seconds decoded
    ``fps`` frames a second or more: None then, else every sample after ``timeout``."""
    start = time.monotonic()
    samples: list[tuple[float, dict]] = []
    while True:
        now = time.monotonic()
        stats = await page_stats(driver)
        samples.append((now, stats))
        earlier = [(t, s) for t, s in samples if now - t >= window]
        if earlier:
            t, s = earlier[-1]
            if stats["framesDecoded"] - s["framesDecoded"] >= fps * (now - t):
                return None
        if now - start > timeout:
            return [
                (round(t - start, 2), s["framesDecoded"], s["frameHeight"], s["state"])
                for t, s in samples
            ]
        await asyncio.sleep(0.25)


def server_lines(server, *words: str) -> str:
    """The server log's lines that hold any of ``words`` (the last 40)."""
    lines = server.log.read_text(errors="replace").splitlines()
    return "\n".join([line for line in lines if any(w in line for w in words)][-40:])


async def publish(driver, room: str, identity: str, role: str) -> str:
    try:
        return await js(
            driver,
            "return await window.telebridgeDemo.publish(arguments[0], arguments[1], arguments[2]);",
            room,
            identity,
            role,
        )
    except JavascriptError as exc:
        status = await status_line(driver)
        pytest.fail(f"publish from Chromium failed: {exc}; status line: {status['text']!r}")


async def test_chromium_publishes_whip_aiortc_receives(server, browser):
    """(a) Chromium -> WHIP -> SFU -> WHEP -> aiortc: video at the camera's rate, and audio."""
    room = "browser-whip"
    driver = browser.driver
    await open_demo(driver, server.base_url)
    location = await publish(driver, room, "doctor", "lead")
    assert location.startswith(f"/whip/{room}/"), location
    await wait_stats(
        driver, lambda s: s["publishState"] == "connected", 15, "the publisher to connect"
    )

    viewer = await start_whep_viewer(
        server.base_url, room, server.token(room, "auditor", "observer")
    )
    try:
        deadline = time.monotonic() + 20
        while not viewer.video_frames:
            if time.monotonic() > deadline:
                stats = await page_stats(driver)
                pytest.fail(f"aiortc viewer decoded no video in 20 s; publisher stats: {stats}")
            await asyncio.sleep(0.05)
        # The camera's rate (70 % of it) over some 5 s within 15 s of the first frame:
        # the connection's first seconds (the receiver's first estimate, a busy CI
        # machine) are not what this test is about.
        first = viewer.video_frame_times[0]
        need = int(0.7 * CAMERA_FPS * MEASURE_S)
        while True:
            times = viewer.video_frame_times
            recent = [t for t in times if t > times[-1] - MEASURE_S]
            if times[-1] - first >= MEASURE_S and len(recent) >= need:
                break
            if time.monotonic() > first + 15:
                stats = await page_stats(driver)
                per_second = [
                    len([t for t in times if first + i <= t < first + i + 1]) for i in range(15)
                ]
                pytest.fail(
                    f"aiortc never decoded {need} frames in {MEASURE_S} s within 15 s of its "
                    f"first (camera {CAMERA_FPS} fps): frames per second {per_second}; "
                    f"the publisher sends {stats['sending']}"
                )
            await asyncio.sleep(0.1)
        stats = await page_stats(driver)
        assert viewer.audio_frames > 0, "no audio frame reached the aiortc viewer"
        assert stats["framesSent"] > 0 and stats["publishState"] == "connected", stats
        assert console_errors_besides_network(browser) == []
    finally:
        await viewer.close()


async def test_chromium_views_whep_from_demo_page(server, browser, tmp_path):
    """(b) Chromium publishes in one window, the demo page in another views it with WHEP."""
    room = "browser-whep"
    driver = browser.driver
    await open_demo(driver, server.base_url)
    await publish(driver, room, "patient", "participant")
    publisher_window = driver.current_window_handle
    await wait_stats(
        driver, lambda s: s["publishState"] == "connected", 15, "the publisher to connect"
    )

    await asyncio.to_thread(driver.switch_to.new_window, "window")
    await open_demo(driver, server.base_url)
    try:
        location = await js(
            driver,
            "return await window.telebridgeDemo.view(arguments[0], arguments[1], arguments[2]);",
            room,
            "nurse",
            "patient",
        )
    except JavascriptError as exc:
        status = await status_line(driver)
        pytest.fail(f"WHEP view from Chromium failed: {exc}; status line: {status['text']!r}")
    assert location.startswith(f"/whep/{room}/"), location

    await wait_stats(
        driver,
        lambda s: s["state"] == "connected" and s["framesDecoded"] > 0,
        20,
        "the viewer to connect and decode a frame",
    )
    # Smooth play within 10 s of the first frame: some 3 s at half the camera's rate or
    # better. (A window fixed at the first frame measured the connection's first seconds;
    # on CI it once saw 2 frames, and the reason then went unrecorded.)
    samples = await wait_smooth(driver, 0.5 * CAMERA_FPS, window=3.0, timeout=10.0)
    if samples is not None:
        await asyncio.to_thread(driver.switch_to.window, publisher_window)
        sender = await page_stats(driver)
        pytest.fail(
            "the viewer did not decode 3 s at half the camera's rate within 10 s: "
            f"(s, framesDecoded, height, state): {samples}; "
            f"the publisher sends {sender['sending']}; the server said:\n"
            + server_lines(server, location.rsplit("/", 1)[-1], "layer", "temporal", "pause")
        )

    # The <video> element must be playing the stream, and show a picture.
    playing = await js(
        driver,
        "const v = document.getElementById('remoteVideo');"
        "const t0 = v.currentTime;"
        "for (let i = 0; i < 40 && !(v.videoWidth > 0 && v.currentTime > t0); i++)"
        "  await new Promise((r) => setTimeout(r, 100));"
        "return {w: v.videoWidth, h: v.videoHeight, t: v.currentTime, paused: v.paused};",
    )
    assert playing["w"] > 0 and not playing["paused"], playing

    page_png = tmp_path / "viewer-page.png"
    video_png = tmp_path / "viewer-video.png"
    video = await asyncio.to_thread(driver.find_element, "id", "remoteVideo")
    await asyncio.to_thread(driver.execute_script, "arguments[0].scrollIntoView();", video)
    assert await asyncio.to_thread(driver.save_screenshot, str(page_png))
    assert await asyncio.to_thread(video.screenshot, str(video_png))

    pixels = read_png_rgb(video_png).astype(np.float32)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50, pixels.shape
    luma = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    # An empty <video> is a flat dark box (background #111); the fake camera is neither.
    assert luma.std() > 10 and luma.mean() > 30, (
        f"the remote video looks blank (mean {luma.mean():.1f}, std {luma.std():.1f}); "
        f"see {video_png}"
    )
    assert console_errors_besides_network(browser) == []

    await asyncio.to_thread(driver.switch_to.window, publisher_window)
    sender = await page_stats(driver)
    assert sender["framesSent"] > 0, sender


async def test_observer_cannot_publish_from_demo_page(server, browser):
    """(c) An observer's publish is refused with 403 and the status line says so."""
    room = "browser-observer"
    driver = browser.driver
    await open_demo(driver, server.base_url)

    # Through the form, as a person would.
    def fill_and_click():
        from selenium.webdriver.support.ui import Select

        for field, value in (("room", room), ("identity", "auditor")):
            element = driver.find_element("id", field)
            element.clear()
            element.send_keys(value)
        Select(driver.find_element("id", "role")).select_by_value("observer")
        driver.find_element("id", "publishBtn").click()

    await asyncio.to_thread(fill_and_click)
    deadline = time.monotonic() + 15
    status = await status_line(driver)
    while status["kind"] != "error":
        assert time.monotonic() < deadline, f"no error shown; status line: {status}"
        await asyncio.sleep(0.1)
        status = await status_line(driver)
    assert "403" in status["text"], status

    # Through the API: the promise rejects with the server's status and error code.
    result = await js(
        driver,
        "try { await window.telebridgeDemo.publish(arguments[0], arguments[1], 'observer'); }"
        "catch (e) { return {status: e.status || null, code: e.code || null, message: e.message}; }"
        "return null;",
        room,
        "auditor-2",
    )
    assert result is not None, "publish with an observer token succeeded"
    assert result["status"] == 403, result
    status = await status_line(driver)
    assert status["kind"] == "error" and "403" in status["text"], status
    assert result["code"] and result["code"] in status["text"], (result, status)

    # The camera is released and nothing is left connected.
    released = await js(driver, "return document.getElementById('localVideo').srcObject === null;")
    assert released, "the local preview still holds the camera after a refused publish"
    assert (await page_stats(driver))["state"] == "closed"
    assert console_errors_besides_network(browser) == []


async def test_view_without_publisher_shows_404(server, browser):
    """Viewing a room where nobody publishes shows the server's 404 in the status line."""
    driver = browser.driver
    await open_demo(driver, server.base_url)
    result = await js(
        driver,
        "try { await window.telebridgeDemo.view('browser-empty', 'nobody-home', ''); }"
        "catch (e) { return {status: e.status || null, message: e.message}; }"
        "return null;",
    )
    assert result is not None and result["status"] == 404, result
    status = await status_line(driver)
    assert status["kind"] == "error" and "404" in status["text"], status
