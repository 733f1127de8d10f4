"""The embedding story from issue 3, end to end with browsers.

An app's backend creates a room and mints tokens through the REST API alone; a lead and
ten observing sites join from Chromium (the served JS client), every observer decodes the
lead's video, the lead gives one observer the floor, that site speaks, and the backend's
webhook receiver gets a signed event for each step.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import aiohttp
import pytest
from aiohttp import web

from signaling.webhooks import verify_signature
from tests.browser import chromium_async, chromium_available, missing_reason, run_async_js_async
from tests.conftest import RunningServer, free_port
from tests.test_api import KEY, SECRET, api_config

pytestmark = pytest.mark.browser

HOOK_SECRET = "w" * 40
OBSERVERS = 10

JOIN = """
const [token, publish] = arguments;
window.tb = await Telebridge.connect("/ws", token, {autoSubscribe: true});
if (publish) {
  const media = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  await tb.publish({camera: media.getVideoTracks()[0], microphone: media.getAudioTracks()[0]});
}
return tb.snapshot().me;
"""

DECODED = """
let total = 0;
for (const remote of tb.snapshot().remoteTracks) {
  if (remote.kind !== "video") continue;
  const stats = await tb.remoteTrackStats(remote.id);
  total += stats && stats.framesDecoded ? stats.framesDecoded : 0;
}
return total;
"""


class Receiver:
    """The embedding app's webhook endpoint: checks every signature, keeps the events."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.bad_signatures = 0
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(HOOK_SECRET, request.headers.get("Telebridge-Signature", ""), body):
            self.bad_signatures += 1
            return web.Response(status=400)
        self.events.append(json.loads(body))
        return web.Response(status=204)

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    async def wait(self, predicate, what: str, timeout: float = 20) -> None:
        for _ in range(int(timeout * 10)):
            if predicate(self):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"webhooks: no {what}; got {self.names()}")


@pytest.fixture
async def receiver():
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", hooks.port).start()
    yield hooks
    await runner.cleanup()


async def test_backend_creates_room_lead_and_ten_sites_join_from_browsers_one_gets_the_floor(
    tmp_path, receiver
):
    if not chromium_available():
        pytest.skip(reason=missing_reason())
    webhook = (
        f'[[webhooks]]\nurl = "http://127.0.0.1:{receiver.port}/hooks"\nsecret = "{HOOK_SECRET}"\n'
    )
    server = RunningServer(tmp_path, dev_tokens=False, extra=api_config(webhook))
    auth = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()}
    try:
        async with aiohttp.ClientSession(headers=auth) as http:
            created = await http.post(
                f"{server.base_url}/api/v1/rooms", json={"name": "tumour-board", "max_viewers": 20}
            )
            assert created.status == 201, await created.text()

            async def token(identity: str, role: str) -> str:
                async with http.post(
                    f"{server.base_url}/api/v1/tokens",
                    json={"room": "tumour-board", "identity": identity, "role": role, "ttl": 600},
                ) as response:
                    assert response.status == 200, await response.text()
                    return (await response.json())["token"]

            lead_token = await token("central", "lead")
            site_tokens = [await token(f"site-{n}", "observer") for n in range(OBSERVERS)]

        async with chromium_async() as driver:
            await asyncio.to_thread(driver.get, server.base_url + "/")
            windows = {"central": driver.current_window_handle}
            me = await run_async_js_async(driver, JOIN, lead_token, True, timeout=60)
            assert me["role"] == "lead"
            for n, site_token in enumerate(site_tokens):
                await asyncio.to_thread(driver.switch_to.new_window, "tab")
                await asyncio.to_thread(driver.get, server.base_url + "/")
                windows[f"site-{n}"] = driver.current_window_handle
                me = await run_async_js_async(driver, JOIN, site_token, False, timeout=60)
                assert me["role"] == "observer"

            # Every site decodes the lead's camera.
            decoded: dict[int, int] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for n in range(OBSERVERS):
                    if decoded.get(n, 0) <= 20:
                        await asyncio.to_thread(driver.switch_to.window, windows[f"site-{n}"])
                        decoded[n] = await run_async_js_async(driver, DECODED)
                if all(frames > 20 for frames in decoded.values()):
                    break
                await asyncio.sleep(0.5)
            assert all(frames > 20 for frames in decoded.values()), decoded

            # The lead gives site-3 the floor; site-3 speaks; the others see its track.
            await asyncio.to_thread(driver.switch_to.window, windows["central"])
            await run_async_js_async(driver, "await tb.setRole('site-3', 'participant');")
            await asyncio.to_thread(driver.switch_to.window, windows["site-3"])
            published = await run_async_js_async(
                driver,
                """
                const media = await navigator.mediaDevices.getUserMedia({audio: true});
                const tracks = await tb.publish({microphone: media.getAudioTracks()[0]});
                return {role: tb.snapshot().me.role, tracks};
                """,
                timeout=30,
            )
            assert published["role"] == "participant" and published["tracks"][0]["kind"] == "audio"
            await asyncio.to_thread(driver.switch_to.window, windows["site-7"])
            for _ in range(50):
                tracks = await run_async_js_async(driver, "return tb.snapshot().tracks;")
                if any(t["owner"] == "site-3" for t in tracks):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("site-7 never saw site-3's microphone")

        # The backend heard about every step, signed.
        await receiver.wait(
            lambda r: any(
                e["event"] == "track_published" and e["data"]["track"]["owner"] == "site-3"
                for e in r.events
            ),
            "track_published for site-3",
        )
        names = receiver.names()
        assert receiver.bad_signatures == 0
        assert names[0] == "room_started"
        joined = {
            e["data"]["participant"]["identity"]
            for e in receiver.events
            if e["event"] == "participant_joined"
        }
        assert joined == {"central"} | {f"site-{n}" for n in range(OBSERVERS)}
        assert {"identity": "site-3", "role": "participant", "by": "central"} in [
            e["data"] for e in receiver.events if e["event"] == "role_changed"
        ]
        lead_tracks = [
            e
            for e in receiver.events
            if e["event"] == "track_published" and e["data"]["track"]["owner"] == "central"
        ]
        assert {e["data"]["track"]["kind"] for e in lead_tracks} == {"audio", "video"}
        assert all(e["room"] == "tumour-board" for e in receiver.events)
    finally:
        server.stop()
