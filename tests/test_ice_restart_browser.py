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

from tests.browser import browser_fixture, run_async_js

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


browser = browser_fixture((800, 600))


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


WHIP_WHEP_JS = r"""
const [room, leadToken, siteToken] = arguments;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
window.until = async (fn, what, ms) => {
  const end = Date.now() + ms;
  while (!(await fn())) { if (Date.now() > end) throw new Error("timed out: " + what); await sleep(50); }
};
window.iceStates = { publisher: [], viewer: [] };
async function open(name, kind, token, setup) {
  const pc = new RTCPeerConnection();
  pc.addEventListener("iceconnectionstatechange",
    () => iceStates[name].push({ at: Date.now(), state: pc.iceConnectionState }));
  await setup(pc);
  await pc.setLocalDescription(await pc.createOffer());
  await until(() => pc.iceGatheringState === "complete", "gathering", 5000);
  const response = await fetch(`/${kind}/${room}`, {
    method: "POST", body: pc.localDescription.sdp,
    headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + token },
  });
  if (response.status !== 201) throw new Error(`${kind}: ${response.status}`);
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  pc.resource = { url: response.headers.get("Location"), token };
  return pc;
}
const media = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240, frameRate: 15 } });
window.publisher = await open("publisher", "whip", leadToken,
  async (pc) => pc.addTransceiver(media.getVideoTracks()[0], { direction: "sendonly" }));
window.viewer = await open("viewer", "whep", siteToken,
  async (pc) => pc.addTransceiver("video", { direction: "recvonly" }));
// What a WHIP/WHEP client does when its ICE goes down (RFC 9725 section 4.3.2): PATCH
// new credentials to its session resource.
window.restartStatus = async (pc) => {
  pc.restartIce();
  await pc.setLocalDescription(await pc.createOffer());
  const ice = (k) => new RegExp(`a=ice-${k}:(\\S+)`).exec(pc.localDescription.sdp)[1];
  const response = await fetch(pc.resource.url, {
    method: "PATCH", body: `a=ice-ufrag:${ice("ufrag")}\r\na=ice-pwd:${ice("pwd")}\r\n`,
    headers: { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*",
               Authorization: "Bearer " + pc.resource.token },
  });
  return response.status;
};
window.framesOf = async () => {
  for (const s of (await viewer.getStats()).values())
    if (s.type === "inbound-rtp" && s.kind === "video") return s.framesDecoded || 0;
  return 0;
};
await until(async () => (await framesOf()) > 10, "the WHEP viewer decodes", 20000);
return true;
"""


def test_whip_whep_chromium_notices_a_dead_worker(server, browser):
    """Chromium as a plain WHIP publisher and WHEP viewer when the worker dies: nothing
    answers its checks any more (the replacement binds another port; an unknown ufrag
    gets no answer), so its ICE goes disconnected on its own timers, and the ICE restart
    a WHIP/WHEP client then PATCHes gets 404 (docs/protocol.md, Lost media)."""
    driver = browser.driver
    room = "whiplost"
    driver.get(server.base_url + "/")
    js(
        driver,
        WHIP_WHEP_JS,
        room,
        server.token(room, "lead", "lead"),
        server.token(room, "site", "observer"),
        timeout=60,
    )
    os.kill(worker_pid(server), signal.SIGKILL)
    killed_ms = js(driver, "return Date.now();")
    js(
        driver,
        "await until(() => publisher.iceConnectionState === 'disconnected'"
        " && viewer.iceConnectionState === 'disconnected', 'ICE disconnected on both', 20000);",
        timeout=30,
    )
    states = js(driver, "return iceStates;")
    seen = {
        name: {s["state"]: (s["at"] - killed_ms) / 1000 for s in log if s["at"] > killed_ms}
        for name, log in states.items()
    }
    print(
        "Chromium after the worker was killed: "
        + "; ".join(f"{name} disconnected {t['disconnected']:.1f} s" for name, t in seen.items())
    )
    # Chromium stays "disconnected" (measured: still not "failed" a minute later); its ICE
    # restart is what tells it the session is gone.
    assert js(driver, "return [await restartStatus(publisher), await restartStatus(viewer)];") == [
        404,
        404,
    ]
