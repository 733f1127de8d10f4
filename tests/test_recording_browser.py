"""A consultation recorded from the demo page in headless Chromium: the lead presses
"Ghi hình / Record", everyone sees the "Đang ghi hình / Recording" mark (a late joiner
too), and the files of Chromium's tracks (VP8 simulcast: the top layer) play."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import av
import pytest

from tests.browser import browser_fixture
from tests.conftest import RunningServer
from tests.test_demo_conference import app_call, app_state, frames, js, open_app, tile, wait_state
from tests.test_recording import recording_config

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]
MEDIA = {"width": 640, "height": 360, "frameRate": 15}


browser = browser_fixture((1000, 700))


def mark_shown(driver: Any) -> bool:
    return bool(js(driver, "return !document.getElementById('recMark').hidden;"))


def wait_mark(driver: Any, shown: bool, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while mark_shown(driver) != shown:
        assert time.monotonic() < deadline, f"the recording mark is not {'on' if shown else 'off'}"
        time.sleep(0.2)


def test_recording_from_the_demo_page(browser: Any, tmp_path: Path) -> None:
    server = RunningServer(tmp_path, extra=recording_config(tmp_path / "rec"))
    driver = browser.driver
    try:
        room = "demo-rec"
        open_app(driver, server.base_url)
        lead = driver.current_window_handle
        app_call(driver, "join(arguments[0], arguments[1], arguments[2])", room, "dr-lead", "lead")
        app_call(driver, "publish(arguments[0])", MEDIA)
        assert not mark_shown(driver)
        time.sleep(5)  # let Chromium's estimate bring up its upper layers
        driver.find_element("id", "recBtn").click()
        wait_mark(driver, True)
        started = time.time()

        driver.switch_to.new_window("window")
        open_app(driver, server.base_url)
        app_call(
            driver, "join(arguments[0], arguments[1], arguments[2])", room, "student", "observer"
        )
        wait_mark(driver, True)  # a late joiner sees it at once
        assert js(driver, "return document.getElementById('recBtn').hidden;"), "lead only"
        state = wait_state(driver, lambda s: frames(s, "dr-lead") > 0, 25, "the lead's video")
        time.sleep(max(0.0, started + 8 - time.time()))
        viewed = (tile(app_state(driver), "dr-lead") or {}).get("layer") or 0
        observer = driver.current_window_handle

        driver.switch_to.window(lead)
        driver.find_element("id", "recBtn").click()
        wait_mark(driver, False)
        driver.switch_to.window(observer)
        wait_mark(driver, False)
    finally:
        server.stop()

    (folder,) = [p for p in (tmp_path / "rec").iterdir() if p.is_dir()]
    manifest = json.loads((folder / "manifest.json").read_text())
    session = manifest["stopped_at"] - manifest["started_at"]
    files = sorted(folder.glob("*.webm"))
    assert [f.name.split("-", 1)[1] for f in files] == [
        "dr-lead-camera.webm",
        "dr-lead-microphone.webm",
    ] or len(files) == 2, files
    for path in files:
        with av.open(str(path)) as container:  # (PyAV objects are used inside only)
            stream = container.streams[0]
            kind, codec = stream.type, stream.codec_context.name
            times, heights = [], []
            for frame in container.decode(stream):
                times.append(float(frame.time))
                heights.append(getattr(frame, "height", 0))
        span = times[-1] - times[0]
        # Chromium's first keyframe takes up to a second or so to come (aiortc's: 0.1 s).
        assert span > 0.75 * session, f"{path.name}: {span:.1f} s of a {session:.1f} s session"
        if kind == "video":
            assert codec == "vp8"
            # The top layer Chromium sends: at least what a viewer with a good link gets.
            assert heights[-1] >= viewed > 0, (heights[-1], viewed, state)
        else:
            assert codec == "opus"
