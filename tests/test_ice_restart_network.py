"""ICE restart after a network outage, with nobody calling restartIce.

A lead publishes Chromium's fake camera from the conference page (telebridge.js) through
the link emulator (bench/linkemu.py); an observer in the same page subscribes directly.
The emulator then drops everything both ways, STUN included, until Chromium has noticed
(iceConnectionState disconnected or failed) and telebridge.js has tried to restart; then
the link comes back. telebridge.js must get media flowing again on its own, within the
issue's 5 s of the network returning.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.linkemu import LinkEmulator
from tests.browser import (
    chromium_async,
    chromium_available,
    missing_reason,
    run_async_js_async,
)
from tests.test_lifecycle import health

pytestmark = pytest.mark.browser

RECOVERY_TARGET_S = 5.0

# Only answers are rewritten: the publish connection gets answers from the server, the
# observer's subscribe connection gets offers (and answers them), so only the lead's
# media crosses the emulator. The rewrite is what bench.linkemu.via_relay does.
SETUP_JS = r"""
const [leadToken, siteToken, relayHost, relayPort] = arguments;
const viaRelay = (sdp) => sdp.split("\r\n").flatMap((line) => {
  const m = /^a=candidate:(\S+) (\d) (\S+) (\d+) \S+ \d+( .*)?$/.exec(line);
  if (!m) return [line];
  if (m[3].toLowerCase() !== "udp") return [];
  return [`a=candidate:${m[1]} ${m[2]} ${m[3]} ${m[4]} ${relayHost} ${relayPort}${m[5] || ""}`];
}).join("\r\n");
const setRemote = RTCPeerConnection.prototype.setRemoteDescription;
RTCPeerConnection.prototype.setRemoteDescription = function (d) {
  if (d && d.type === "answer") d = { type: "answer", sdp: viaRelay(d.sdp) };
  return setRemote.call(this, d);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
window.until = async (fn, what, ms) => {
  const end = Date.now() + ms;
  while (!(await fn())) { if (Date.now() > end) throw new Error("timed out: " + what); await sleep(20); }
};
window.lead = await Telebridge.connect("/ws", leadToken, {});
window.site = await Telebridge.connect("/ws", siteToken, { autoSubscribe: true });
window.restarts = [];
window.iceStates = [];
lead.on("ice_restart", (d) => restarts.push({ at: Date.now(), connection: d.connection }));
const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360, frameRate: 15 } });
await lead.publish({ camera: media.getVideoTracks()[0] });
lead.publishPc.addEventListener("iceconnectionstatechange",
  () => iceStates.push({ at: Date.now(), state: lead.publishPc.iceConnectionState }));
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
async def driver():
    if not chromium_available():
        pytest.skip(reason=missing_reason())
    async with chromium_async(window_size=(800, 600)) as chromium:
        yield chromium


async def js(driver, script: str, *args, timeout: float = 30):
    return await run_async_js_async(driver, script, *args, timeout=timeout)


@pytest.mark.parametrize("tries", [2, 5], ids=["short", "long"])
async def test_network_outage_restarts_ice_by_itself(server, driver, tries: int):
    """``tries``: how many restarts telebridge.js sends into the outage before the link
    comes back (one every 2 s while down), i.e. how long the outage lasts."""
    room = "outage"
    worker = health(server)["workers"][0]
    relay = LinkEmulator(("127.0.0.1", worker["port"]))
    await relay.start()
    try:
        await asyncio.to_thread(driver.get, server.base_url + "/")
        await js(
            driver,
            SETUP_JS,
            server.token(room, "lead", "lead"),
            server.token(room, "site", "observer"),
            *relay.address,
            timeout=60,
        )
        assert relay.up.counters.bytes_out > 20_000, "the lead publishes through the relay"

        # The network breaks: nothing gets through, STUN and DTLS included.
        for direction in ("up", "down"):
            relay.update(direction, loss=1.0, spare_handshake=False)
        broken = time.monotonic()
        await js(
            driver,
            "await until(() => ['disconnected', 'failed'].includes(lead.publishPc.iceConnectionState)"
            " && restarts.length >= arguments[0], 'Chromium notices and telebridge.js retries',"
            " 40000);",
            tries,
            timeout=50,
        )
        outage = time.monotonic() - broken
        frames = await js(driver, "return await framesOf();")

        # It comes back: media must flow again without anyone calling restartIce.
        for direction in ("up", "down"):
            relay.update(direction, loss=0.0, spare_handshake=True)
        restored = time.monotonic()
        restored_ms = await js(driver, "return Date.now();")
        await js(
            driver,
            "await until(async () => (await framesOf()) > arguments[0] + 5,"
            " 'frames after the network came back', 20000);",
            frames,
            timeout=30,
        )
        recovery = time.monotonic() - restored
        states = await js(driver, "return iceStates;")
        restarts = await js(driver, "return restarts;")
        trace = ", ".join(f"{(s['at'] - restored_ms) / 1000:+.1f} {s['state']}" for s in states)
        print(
            f"outage {outage:.1f} s, {len(restarts)} restarts; media back {recovery:.2f} s after"
            f" the network; publish ICE states (s from the network's return): {trace}"
        )
        assert all(r["connection"] == "publish" for r in restarts), restarts
        assert "restart completed, old credentials retired" in server.logs(), (
            "media came back on the restarted ICE session, not on the old credentials"
        )
        assert recovery < RECOVERY_TARGET_S, f"media back only after {recovery:.1f} s"
        assert await js(driver, "return [lead.connectionState, site.remoteTracks.size];") == [
            "joined",
            1,
        ]
    finally:
        relay.close()
