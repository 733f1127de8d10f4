"""/ws ICE restart and a dead media worker, with telebridge.js in headless Chromium.

A lead publishes Chromium's fake camera; an observer in the same page subscribes. Both
restart ICE on their existing connections and the observer keeps decoding; then the media
worker is SIGKILLed and the clients, told ``media_lost``, publish and subscribe again on
the replacement without rejoining.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request

import pytest

from tests.browser import chromium_available, launch_chromium, missing_reason, run_async_js

pytestmark = pytest.mark.browser

SETUP_JS = r"""
const [leadToken, siteToken] = arguments;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
window.until = async (fn, what, ms) => {
  const end = Date.now() + ms;
  while (!(await fn())) { if (Date.now() > end) throw new Error("timed out: " + what); await sleep(50); }
};
window.events = { lead: [], site: [] };
window.lead = await Telebridge.connect("/ws", leadToken, {});
window.site = await Telebridge.connect("/ws", siteToken, { autoSubscribe: true });
for (const [name, c] of [["lead", lead], ["site", site]]) {
  c.on("*", (event, data) => {
    if (["ice_restart", "media_lost", "republished", "remote_track"].includes(event))
      window.events[name].push({ event, at: Date.now(), data: event === "remote_track" ? data.id : data });
  });
}
const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360, frameRate: 15 } });
await lead.publish({ camera: media.getVideoTracks()[0] });
const ufrag = (d) => (d && /a=ice-ufrag:(\S+)/.exec(d.sdp) || [])[1];
window.ufrags = () => ({
  publish: ufrag(lead.publishPc.currentRemoteDescription),
  subscribe: ufrag(site.subscribePc && site.subscribePc.currentRemoteDescription),
  site_local: ufrag(site.subscribePc && site.subscribePc.currentLocalDescription),
});
window.framesOf = async () => {
  const ids = [...site.remoteTracks.keys()];
  if (!ids.length) return 0;
  const s = await site.remoteTrackStats(ids[ids.length - 1]);
  return s ? s.framesDecoded || 0 : 0;
};
await until(async () => (await framesOf()) > 10, "the observer decodes the lead's camera", 20000);
return true;
"""


@pytest.fixture
def browser():
    if not chromium_available():
        pytest.skip(reason=missing_reason())
    chromium = launch_chromium(window_size=(800, 600))
    try:
        yield chromium
    finally:
        chromium.quit()


def js(driver, script: str, *args, timeout: float = 30):
    return run_async_js(driver, script, *args, timeout=timeout)


def worker_pid(server) -> int:
    with urllib.request.urlopen(server.base_url + "/healthz", timeout=5) as response:
        return int(json.loads(response.read())["workers"][0]["pid"])


def wait_frames_beyond(driver, frames: int, timeout_ms: int, what: str) -> int:
    js(
        driver,
        "await until(async () => (await framesOf()) > arguments[0], arguments[1], arguments[2]);",
        frames,
        what,
        timeout_ms,
        timeout=timeout_ms / 1000 + 10,
    )
    return js(driver, "return await framesOf();")


def test_ws_ice_restart_and_worker_death(server, browser):
    driver = browser.driver
    room = "icews"
    driver.get(server.base_url + "/")
    js(
        driver,
        SETUP_JS,
        server.token(room, "lead", "lead"),
        server.token(room, "site", "observer"),
        timeout=60,
    )
    before = js(driver, "return ufrags();")
    handshakes = server.logs().count("connection is up")

    # ICE restart on both existing connections: new credentials, media goes on.
    js(driver, "await Promise.all([lead.restartIce(), site.restartIce()]);")
    js(
        driver,
        "const b = arguments[0]; await until(() => ufrags().publish !== b.publish"
        " && ufrags().subscribe !== b.subscribe, 'new credentials on both connections', 10000);",
        before,
    )
    after = js(driver, "return ufrags();")
    assert after["site_local"] != before["site_local"], "Chromium answered with new credentials"
    frames = js(driver, "return await framesOf();")
    wait_frames_beyond(driver, frames + 30, 10000, "frames after the ICE restart")
    logs = server.logs()
    assert logs.count("ICE restart") >= 2
    assert logs.count("restart completed, old credentials retired") >= 2, (
        "Chromium checked the new credentials on both connections"
    )
    assert logs.count("connection is up") == handshakes, "no new DTLS handshake"
    assert js(driver, "return site.remoteTracks.size;") == 1

    # The media worker dies: each client is told what it lost and gets it back.
    os.kill(worker_pid(server), signal.SIGKILL)
    killed = time.monotonic()
    js(
        driver,
        "await until(() => events.lead.some((e) => e.event === 'republished')"
        " && events.site.some((e) => e.event === 'media_lost'), 'media_lost and republish', 20000);",
        timeout=40,
    )
    lost = js(driver, "return events.site.find((e) => e.event === 'media_lost').data;")
    assert lost["connection"] == "subscribe" and lost["tracks"][0]["owner"] == "lead"
    assert (
        js(driver, "return events.lead.find((e) => e.event === 'media_lost').data.connection;")
        == "publish"
    )
    wait_frames_beyond(driver, 10, 20000, "frames from the republished camera")
    back = time.monotonic() - killed
    assert js(driver, "return [lead.connectionState, site.connectionState];") == [
        "joined",
        "joined",
    ]
    print(f"media back {back:.1f} s after the worker was killed")
    assert re.search(r"worker 0 restarted", server.logs())
