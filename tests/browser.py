"""Headless Chromium for the browser tests, driven through selenium.

Uses Debian's ``chromium`` and ``chromium-driver`` packages.  Both paths are named
explicitly: selenium must never try to download a driver (CI has no internet).

Selenium calls block.  In ``async`` tests whose server runs on the test's event loop,
run every call that talks to the browser through ``asyncio.to_thread``; otherwise the
browser waits for a server that cannot answer.  ``launch_chromium_async`` and
``run_async_js_async`` do that for you.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

CHROMIUM_BINARY = os.environ.get("TELEBRIDGE_CHROMIUM", "/usr/lib/chromium/chromium")
CHROMEDRIVER = os.environ.get("TELEBRIDGE_CHROMEDRIVER", "/usr/bin/chromedriver")

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    # Without it Chromium gathers no host candidate on 127.0.0.1.
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    # Keep background tabs (a publisher beside a viewer) running at full speed.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
)


def chromium_available() -> bool:
    """True when both the Chromium binary and chromedriver are installed."""
    return all(os.path.isfile(p) and os.access(p, os.X_OK) for p in (CHROMIUM_BINARY, CHROMEDRIVER))


def missing_reason() -> str:
    missing = [p for p in (CHROMIUM_BINARY, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    return (
        "browser tests need Debian's chromium and chromium-driver; missing: "
        + ", ".join(missing)
        + " (apt-get install chromium chromium-driver)"
    )


class JavascriptError(RuntimeError):
    """A script run by ``run_async_js`` threw or its promise rejected."""


class Chromium:
    """A running headless Chromium: ``.driver`` is the selenium WebDriver."""

    def __init__(self, driver: Any, profile_dir: str) -> None:
        self.driver = driver
        self.profile_dir = profile_dir

    def console_log(self) -> list[dict]:
        """Browser console entries since the last call (selenium's ``get_log``)."""
        try:
            return list(self.driver.get_log("browser"))
        except Exception:  # pragma: no cover - log type unsupported
            return []

    def console_errors(self) -> list[dict]:
        return [e for e in self.console_log() if e.get("level") == "SEVERE"]

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile_dir, ignore_errors=True)


def launch_chromium(window_size: tuple[int, int] = (1280, 900), extra_flags=()) -> Chromium:
    """Start headless Chromium with a fresh profile; the caller must ``quit()`` it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile_dir = tempfile.mkdtemp(prefix="telebridge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM_BINARY
    for flag in (*CHROMIUM_FLAGS, *extra_flags):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={window_size[0]},{window_size[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except BaseException:
        shutil.rmtree(profile_dir, ignore_errors=True)
        raise
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return Chromium(driver, profile_dir)


def browser_fixture(window_size: tuple[int, int]) -> Any:
    """A test module's ``browser`` fixture: ``browser = browser_fixture((w, h))``. A fresh
    headless Chromium per test, quit after it; skipped, with what is missing, when Debian's
    chromium or chromium-driver is not installed."""

    @pytest.fixture
    def browser() -> Iterator[Chromium]:
        if not chromium_available():
            pytest.skip(reason=missing_reason())
        launched = launch_chromium(window_size=window_size)
        try:
            yield launched
        finally:
            launched.quit()

    return browser


@contextlib.contextmanager
def chromium(window_size: tuple[int, int] = (1280, 900), extra_flags=()) -> Iterator[Any]:
    """``with chromium() as driver:`` — a selenium WebDriver, quit on exit."""
    browser = launch_chromium(window_size, extra_flags)
    try:
        yield browser.driver
    finally:
        browser.quit()


@contextlib.asynccontextmanager
async def chromium_async(window_size: tuple[int, int] = (1280, 900), extra_flags=()):
    """Async twin of ``chromium()``: launches and quits in a worker thread."""
    browser = await asyncio.to_thread(launch_chromium, window_size, extra_flags)
    try:
        yield browser.driver
    finally:
        await asyncio.to_thread(browser.quit)


_ASYNC_WRAPPER = """
const __done = arguments[arguments.length - 1];
const __args = Array.prototype.slice.call(arguments, 0, -1);
Promise.resolve()
  .then(() => (async function () {
%s
  }).apply(null, __args))
  .then(
    (value) => __done({ok: true, value: value === undefined ? null : value}),
    (err) => __done({ok: false, error: String((err && (err.stack || err.message)) || err)}),
  );
"""


def run_async_js(driver: Any, script: str, *args: Any, timeout: float = 30) -> Any:
    """Run ``script`` as the body of an ``async function`` in the page and return its result.

    The arguments are visible as ``arguments[0]``, ``arguments[1]``... and the function may
    ``await``.  A throw or a rejected promise raises ``JavascriptError`` with its message.
    """
    driver.set_script_timeout(timeout)
    result = driver.execute_async_script(_ASYNC_WRAPPER % script, *args)
    if not isinstance(result, dict) or "ok" not in result:
        raise JavascriptError(f"unexpected result from the page: {result!r}")
    if not result["ok"]:
        raise JavascriptError(result.get("error", "unknown error"))
    return result["value"]


async def run_async_js_async(driver: Any, script: str, *args: Any, timeout: float = 30) -> Any:
    """``run_async_js`` in a worker thread, for async tests."""
    return await asyncio.to_thread(run_async_js, driver, script, *args, timeout=timeout)


def console_errors_besides_network(chromium: Any) -> list[dict]:
    """SEVERE console entries that are not failed network requests (those are logged too)."""
    return [e for e in chromium.console_errors() if e.get("source") != "network"]


def read_png_rgb(path: Any) -> np.ndarray:
    """A screenshot as an RGB array (PIL when installed, else PyAV)."""
    try:
        from PIL import Image
    except ImportError:
        import av

        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
