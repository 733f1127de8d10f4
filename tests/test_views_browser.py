"""The demo page (signaling/static/app.js, telebridge.js) in a room large enough for the
compact view: the observer's page shows the stage and a head count, pages the whole list
on request, and sees a promoted observer appear; the lead's page sees a raised hand that
the observer's does not. Headless Chromium against the real server; /ws observers from
Python."""

from __future__ import annotations

import asyncio
import base64
import secrets
from pathlib import Path

import aiohttp
import pytest

from tests.browser import browser_fixture
from tests.conftest import RunningServer
from tests.test_demo_conference import (
    app_call,
    app_state,
    click,
    js,
    open_app,
    wait_state,
)
from tests.test_views import Site

pytestmark = pytest.mark.browser

ROOM = "big-demo"


browser = browser_fixture((1100, 800))


def people_rows(driver) -> int:
    return int(driver.execute_script("return document.querySelectorAll('#people li').length;"))


async def test_the_demo_shows_a_large_room_as_a_count_and_pages_the_list(browser, tmp_path: Path):
    secret = secrets.token_urlsafe(24)
    server = RunningServer(tmp_path, extra=f'[[api.keys]]\nkey = "test"\nsecret = "{secret}"\n')
    auth = base64.b64encode(f"test:{secret}".encode()).decode()
    http = aiohttp.ClientSession()
    sites = [Site(server, ROOM, f"site-{n}", "observer") for n in range(4)]
    driver = browser.driver
    run = asyncio.to_thread
    try:
        async with http.post(
            f"{server.base_url}/api/v1/rooms",
            json={"name": ROOM, "observer_view": 2},
            headers={"Authorization": f"Basic {auth}"},
        ) as response:
            assert response.status == 201, await response.text()
        await run(open_app, driver, server.base_url)
        lead = driver.current_window_handle
        await run(
            app_call,
            driver,
            "join(arguments[0], arguments[1], arguments[2])",
            ROOM,
            "dr-lead",
            "lead",
        )
        for site in sites:
            await site.join(http)
        driver.switch_to.new_window("window")
        observer = driver.current_window_handle
        await run(open_app, driver, server.base_url)
        await run(
            app_call,
            driver,
            "join(arguments[0], arguments[1], arguments[2])",
            ROOM,
            "site-web",
            "observer",
        )

        # The stage (the lead) and ourselves, and a count of everyone.
        # The page renders on the next frame after the state changes: wait for both.
        state = await run(
            wait_state,
            driver,
            lambda s: (
                s["view"] == "compact"
                and s["observers"] == 5
                and driver.find_element("id", "count").text == "6"
                and people_rows(driver) == 3  # the lead, us, and the "4 other observers" row
            ),
            20,
            "the compact view",
        )
        assert {p["identity"] for p in state["participants"]} == {"dr-lead", "site-web"}
        await run(click, driver, '#people li.more button[data-action="all"]')
        await run(wait_state, driver, lambda s: people_rows(driver) == 7, 20, "everyone listed")
        listed = driver.execute_script(
            "return [...document.querySelectorAll('#people li[data-identity]')].map((li) => li.dataset.identity);"
        )
        assert sorted(listed) == sorted(["dr-lead", "site-web", *(s.identity for s in sites)])

        # A raised hand reaches the lead's page, not the other observers'.
        await sites[0].request("raise_hand", raised=True)
        driver.switch_to.window(lead)
        await run(
            wait_state,
            driver,
            lambda s: s["raisedHands"] == ["site-0"],
            20,
            "the lead sees the hand",
        )
        driver.switch_to.window(observer)
        await run(
            js, driver, "return await telebridgeApp.client.ping();"
        )  # events before it are in
        assert (await run(app_state, driver))["raisedHands"] == []

        # The lead gives site-1 the floor: it appears on the observer's stage.
        driver.switch_to.window(lead)
        await run(app_call, driver, "promote(arguments[0])", "site-1")
        driver.switch_to.window(observer)
        state = await run(
            wait_state,
            driver,
            lambda s: (
                any(
                    p["identity"] == "site-1" and p["role"] == "participant"
                    for p in s["participants"]
                )
                and s["observers"] == 4
            ),
            20,
            "site-1 on the stage, and the count down by one",
        )
    finally:
        for site in sites:
            await site.close()
        await http.close()
        server.stop()
