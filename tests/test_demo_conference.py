"""The consultation demo page (/, signaling/static/app.js) and the browser client
(signaling/static/telebridge.js) in headless Chromium.

- ``test_client_library_in_page``: telebridge.js against a fake WebSocket server in the
  page (real RTCPeerConnections for the SDP): id matching and error rejection, the msid
  parsing that groups received tracks by owner, server-driven renegotiation, publish
  renegotiation, resume after a drop.  Needs no server.
- ``test_consultation_demo``: a lead, a participant and an observer in three windows of one
  browser against the real server: video both ways, screenshots not blank, a raised hand
  seen by the lead, who promotes the observer from the participants list.

Chromium's fake camera is asked for 640x360 at 15 fps to keep two cores from drowning.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.browser import (
    JavascriptError,
    browser_fixture,
    console_errors_besides_network,
    read_png_rgb,
    run_async_js,
)

pytestmark = pytest.mark.browser

STATIC = Path(__file__).resolve().parent.parent / "signaling" / "static"
MEDIA = {"width": 640, "height": 360, "frameRate": 15}


browser = browser_fixture((1100, 800))


# -- the client library against a fake server ---------------------------------------------------

UNIT_JS = r"""
const T = window.Telebridge;
const check = (cond, what) => { if (!cond) throw new Error("check failed: " + what); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(fn, what, ms = 8000) {
  const end = Date.now() + ms;
  while (!fn()) { if (Date.now() > end) throw new Error("timed out: " + what); await sleep(20); }
}
const out = {};

// SDP parsing: the server names each section it sends with a=msid:<owner> <track id>.
const sdp = ["v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1 2 3",
  "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:0", "a=sendonly", "a=msid:dr-lead t1",
  "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:1", "a=sendonly", "a=msid:dr-lead t2",
  "m=video 0 UDP/TLS/RTP/SAVPF 96", "a=mid:2", "a=inactive", "a=msid:site-7 t3",
  "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:3", "a=inactive", "a=msid:site-7 t4", ""].join("\r\n");
const offered = T.offeredTracks(sdp);
check(offered.size === 2, "two sections are sent on");
check(offered.get("0").trackId === "t1" && offered.get("0").owner === "dr-lead", "mid 0");
check(offered.get("1").trackId === "t2" && offered.get("1").kind === "audio", "mid 1");
check(T.parseSections(sdp)[2].port === 0 && T.parseSections(sdp)[3].direction === "inactive", "sections");
check(T.resolveUrl("http://127.0.0.1:8080") === "ws://127.0.0.1:8080/ws", "http url");
check(T.resolveUrl("wss://h.example/x/ws") === "wss://h.example/x/ws", "wss url");

// A fake server: a WebSocket look-alike and a real "SFU" peer connection in the page.
class FakeWS extends EventTarget {
  constructor(url) {
    super(); this.url = url; this.readyState = 0; this.sent = []; FakeWS.all.push(this);
    setTimeout(() => { this.readyState = 1; this.dispatchEvent(new Event("open")); }, 0);
  }
  send(text) { const m = JSON.parse(text); this.sent.push(m); setTimeout(() => FakeWS.handler(this, m), 0); }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.dispatchEvent(new CloseEvent("close", {code, reason})), 0);
  }
  push(obj) { this.dispatchEvent(new MessageEvent("message", {data: JSON.stringify(Object.assign({v: 1}, obj))})); }
}
FakeWS.all = [];
const sfu = new RTCPeerConnection({iceServers: []});
const sendV = sfu.addTransceiver("video", {direction: "sendonly"});
const sendA = sfu.addTransceiver("audio", {direction: "sendonly"});
const names = new Map([["0", "dr-lead t1"], ["1", "dr-lead t2"]]);
function renameMsid(text) {
  const lines = text.split("\r\n").filter((l) => !/^a=msid:/.test(l) && !/^a=ssrc:\d+ msid:/.test(l));
  const result = [];
  for (const l of lines) {
    result.push(l);
    const m = /^a=mid:(.*)$/.exec(l);
    if (m && names.has(m[1])) result.push("a=msid:" + names.get(m[1]));
  }
  return result.join("\r\n");
}
let version = 0;
async function sfuOffer() {
  await sfu.setLocalDescription(await sfu.createOffer());
  return {sdp: renameMsid(sfu.localDescription.sdp), version: ++version};
}
const lead = {identity: "dr-lead", name: "Dr Lead", role: "lead", hand_raised: false, joined_at: 1};
const me = {identity: "site-7", name: "Site 7", role: "observer", hand_raised: false, joined_at: 2};
const tracks = [
  {id: "t1", owner: "dr-lead", kind: "video", source: "camera", muted: false},
  {id: "t2", owner: "dr-lead", kind: "audio", source: "microphone", muted: false},
];
const published = [];
const pubServer = new RTCPeerConnection({iceServers: []});
FakeWS.handler = async (ws, m) => {
  const reply = (data) => ws.push({type: "response", id: m.id, data: data || {}});
  if (m.type === "join") {
    const extra = m.resume ? [{id: "t5", owner: "site-9", kind: "video", source: "screen", muted: false}] : [];
    reply({participant: me, room: {name: "r1"}, participants: [lead, me], tracks: tracks.concat(extra), resume: "K1"});
  } else if (m.type === "subscribe") {
    reply();
    if (m.tracks.includes("t1")) ws.push({type: "event", event: "offer", data: await sfuOffer()});
  } else if (m.type === "answer") {
    await sfu.setRemoteDescription({type: "answer", sdp: m.sdp});
    reply();
  } else if (m.type === "mute") {
    ws.push({type: "error", id: m.id, code: "forbidden", message: "observers cannot mute the lead"});
  } else if (m.type === "publish") {
    await pubServer.setRemoteDescription({type: "offer", sdp: m.sdp});
    await pubServer.setLocalDescription(await pubServer.createAnswer());
    for (const t of m.tracks) published.push({id: "p" + t.mid, owner: "site-7", kind: t.source === "microphone" ? "audio" : "video", source: t.source, muted: false});
    // Like the server: every track of the participant, not only the new ones.
    reply({sdp: pubServer.localDescription.sdp, tracks: published});
  } else {
    reply();
  }
};

const client = new T.Client("ws://fake.invalid/ws", "token", {WebSocket: FakeWS, autoSubscribe: true, resumeDelay: 10});
const seen = [];
client.on("*", (name) => seen.push(name));
const joined = await client.join();
check(joined.resume === "K1" && client.me.identity === "site-7" && client.participants.size === 2, "join state");
check(FakeWS.all[0].sent[0].type === "join" && FakeWS.all[0].sent[0].v === 1 && FakeWS.all[0].sent[0].token === "token", "join message");

// Auto-subscribe: one request for both tracks; the offer is answered; tracks grouped by owner.
await until(() => client.remoteStreams.get("dr-lead") && client.remoteStreams.get("dr-lead").getTracks().length === 2, "two tracks of dr-lead");
const subs = FakeWS.all[0].sent.filter((m) => m.type === "subscribe");
check(subs.length === 1 && subs[0].tracks.join() === "t1,t2", "one subscribe for t1,t2: " + JSON.stringify(subs));
await until(() => client.offerVersion === 1, "answer sent");
const answer = FakeWS.all[0].sent.find((m) => m.type === "answer");
check(answer.version === 1 && /a=recvonly/.test(answer.sdp) && /a=candidate/.test(answer.sdp), "answer after gathering");
check(client.remoteTracks.get("t1").kind === "video" && client.remoteTracks.get("t2").kind === "audio", "mid -> track id");
check(client.remoteTracks.get("t1").owner === "dr-lead", "owner");
out.streamIdsFromOntrack = [...client._streamHints.values()];
check(out.streamIdsFromOntrack.length === 2 && out.streamIdsFromOntrack.every((s) => s === "dr-lead"), "event.streams[0].id is the owner");

// Error answers reject with {code, message}; ids are matched.
let err = null;
try { await client.mute("t1", true); } catch (e) { err = e; }
check(err && err.code === "forbidden" && err.message === "observers cannot mute the lead", "rejection");
const pong = await client.ping();
check(pong && typeof pong === "object", "ping");

// Server-driven renegotiation: the audio track goes away.
const removed = [];
client.on("remote_track_removed", (r) => removed.push(r.id));
tracks.splice(1, 1);
FakeWS.all[0].push({type: "event", event: "track_unpublished", data: {track: "t2", owner: "dr-lead"}});
check(!client.tracks.has("t2"), "track_unpublished");
sendA.direction = "inactive";
FakeWS.all[0].push({type: "event", event: "offer", data: await sfuOffer()});
await until(() => client.offerVersion === 2, "second answer");
check(removed.join() === "t2" && client.remoteStreams.get("dr-lead").getTracks().length === 1, "t2 removed");

// Events update the state.
FakeWS.all[0].push({type: "event", event: "hand_raised", data: {identity: "site-7", raised: true}});
FakeWS.all[0].push({type: "event", event: "active_speaker", data: {identity: "dr-lead", track: "t2", level: -30}});
FakeWS.all[0].push({type: "event", event: "role_changed", data: {identity: "site-7", role: "participant", by: "dr-lead"}});
check(client.me.hand_raised === true && client.activeSpeaker === "dr-lead" && client.me.role === "participant", "events");

// Publish, then renegotiate on the same connection to add a track.
const canvas = document.createElement("canvas");
canvas.width = 160; canvas.height = 90;
canvas.getContext("2d").fillRect(0, 0, 80, 45);
const camera = canvas.captureStream(5).getVideoTracks()[0];
const audioContext = new AudioContext();
const microphone = audioContext.createMediaStreamDestination().stream.getAudioTracks()[0];
const first = await client.publish({camera});
check(first.length === 1 && first[0].id === "p0" && first[0].source === "camera", "first publish " + JSON.stringify(first));
const pc = client.publishPc;
const second = await client.publish({microphone});
check(client.publishPc === pc, "same publish connection");
check(second.length === 1 && second[0].id === "p1" && second[0].kind === "audio", "second publish " + JSON.stringify(second));
const pubs = FakeWS.all[0].sent.filter((m) => m.type === "publish");
check(JSON.stringify(pubs.map((m) => m.tracks)) === JSON.stringify([[{mid: "0", source: "camera"}], [{mid: "1", source: "microphone"}]]), "publish tracks " + JSON.stringify(pubs.map((m) => m.tracks)));
check(/a=sendonly/.test(pubs[0].sdp) && /a=candidate/.test(pubs[0].sdp), "publish offer after gathering");
check(client.localTracks.size === 2, "local tracks");

// Unpublish: the section stays, inactive (a stopped BUNDLE-tag section would take the DTLS
// transport down with it), and is offered so on the next publish.
await client.unpublish("p0");
published.splice(0, 1);
check(pc.getTransceivers()[0].direction === "inactive" && !client.localTracks.has("p0"), "unpublished section inactive");
const screen = canvas.captureStream(5).getVideoTracks()[0];
const third = await client.publish({screen});
check(third.length === 1 && third[0].id === "p2" && third[0].source === "screen", "third publish " + JSON.stringify(third));
const offer3 = T.parseSections(FakeWS.all[0].sent.filter((m) => m.type === "publish")[2].sdp);
check(offer3[0].port !== 0 && offer3[0].direction === "inactive" && offer3[2].direction === "sendonly", "third offer " + JSON.stringify(offer3));
screen.stop();

// A drop is resumed once, with the resume key; a final close is not.
let resumed = null;
client.on("resumed", (d) => { resumed = d; });
FakeWS.all[0].close(1006);
await until(() => resumed !== null, "resumed");
check(FakeWS.all.length === 2 && FakeWS.all[1].sent[0].resume === "K1", "join with resume");
check(client.connectionState === "joined" && client.tracks.has("t5"), "state re-read after resume");
await until(() => FakeWS.all[1].sent.some((m) => m.type === "subscribe" && m.tracks.join() === "t5"), "subscribe to a track published while away");
let closed = null;
client.on("closed", (info) => { closed = info; });
FakeWS.all[1].push({type: "event", event: "room_ended", data: {reason: "ended", by: "dr-lead"}});
FakeWS.all[1].close(4410, "room ended");
await until(() => closed !== null, "closed");
await sleep(100);
check(FakeWS.all.length === 2 && client.connectionState === "closed" && closed.code === 4410, "no resume after 4410");
check(client.publishPc.connectionState === "closed", "media closed");

camera.stop(); microphone.stop(); audioContext.close(); sfu.close(); pubServer.close();
out.events = [...new Set(seen)].sort();
return out;
"""


def test_client_library_in_page(browser, tmp_path):
    """telebridge.js: requests, events, offers and resume against a fake server in the page."""
    page = tmp_path / "unit.html"
    page.write_text(
        '<!doctype html><meta charset="utf-8"><title>unit</title>'
        f'<script src="{(STATIC / "telebridge.js").as_uri()}"></script>'
    )
    driver = browser.driver
    driver.get(page.as_uri())
    assert run_async_js(driver, "return typeof window.Telebridge.connect;") == "function"
    result = run_async_js(driver, UNIT_JS, timeout=30)
    expected = {
        "joined",
        "offer",
        "update",
        "remote_track",
        "remote_track_removed",
        "reconnecting",
        "resumed",
        "closed",
    }
    assert expected <= set(result["events"]), result
    assert console_errors_besides_network(browser) == []


# -- the demo page against the real server -------------------------------------------------------


def js(driver, script: str, *args, timeout: float = 30):
    return run_async_js(driver, script, *args, timeout=timeout)


def open_app(driver, base_url: str) -> None:
    driver.get(base_url + "/")
    ok = js(
        driver,
        "return typeof window.telebridgeApp === 'object' && typeof window.Telebridge === 'object';",
    )
    assert ok, "the demo page did not define window.telebridgeApp"


def status_text(driver) -> str:
    return driver.execute_script("return document.getElementById('status').textContent;")


def app_call(driver, call: str, *args):
    try:
        return js(driver, f"return await window.telebridgeApp.{call};", *args)
    except JavascriptError as exc:
        pytest.fail(f"telebridgeApp.{call} failed: {exc}; status line: {status_text(driver)!r}")


def app_state(driver) -> dict:
    return js(driver, "return await window.telebridgeApp.state();")


def wait_state(driver, predicate, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    state = app_state(driver)
    while not predicate(state):
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out waiting for {what}: state={state} status={status_text(driver)!r}"
            )
        time.sleep(0.2)
        state = app_state(driver)
    return state


def tile(state: dict, identity: str) -> dict | None:
    return next((t for t in state["tiles"] if t["identity"] == identity), None)


# The audio parts of the page's publish answer and subscribe answer.
RED_IN_DESCRIPTIONS = """
const c = telebridgeApp.client;
return [c.publishPc.remoteDescription.sdp, c.subscribePc.localDescription.sdp];
"""


def frames(state: dict, identity: str) -> int:
    t = tile(state, identity)
    return t["framesDecoded"] if t else 0


def assert_picture(path: Path) -> None:
    pixels = read_png_rgb(path).astype(np.float32)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50, pixels.shape
    luma = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    # An empty tile is a flat dark box (#111); the fake camera is neither.
    assert luma.std() > 10 and luma.mean() > 30, (
        f"the remote video looks blank (mean {luma.mean():.1f}, std {luma.std():.1f}); see {path}"
    )


def test_consultation_demo(server, browser, tmp_path):
    """Lead and participant see each other; the lead promotes an observer who raised a hand."""
    room = "consult-demo"
    driver = browser.driver
    errors: list[dict] = []

    open_app(driver, server.base_url)
    lead = driver.current_window_handle
    joined = app_call(
        driver, "join(arguments[0], arguments[1], arguments[2])", room, "dr-lead", "lead"
    )
    assert joined == {"identity": "dr-lead", "role": "lead", "room": room}, joined
    app_call(driver, "publish(arguments[0])", MEDIA)
    errors += console_errors_besides_network(browser)

    driver.switch_to.new_window("window")
    participant = driver.current_window_handle
    open_app(driver, server.base_url)
    app_call(
        driver,
        "join(arguments[0], arguments[1], arguments[2])",
        room,
        "patient-site",
        "participant",
    )
    app_call(driver, "publish(arguments[0])", MEDIA)

    # Each sees the other's video, and it keeps coming.
    pages = {lead: "patient-site", participant: "dr-lead"}
    before = {}
    for handle, other in pages.items():
        driver.switch_to.window(handle)
        state = wait_state(driver, lambda s, o=other: frames(s, o) > 0, 25, f"video from {other}")
        before[handle] = frames(state, other)
        assert state["publishState"] == "connected", state
        assert {t["source"] for t in state["tracks"] if t["owner"] == other} == {
            "camera",
            "microphone",
        }, state
    for handle, other in pages.items():
        driver.switch_to.window(handle)
        # Ten more frames (half a second of the fake camera) within 10 s: a fixed 2 s
        # window once caught a start-up stall (4 frames) that then played on.
        state = wait_state(
            driver,
            lambda s, o=other, b=before[handle]: frames(s, o) - b >= 10,
            10,
            f"ten more frames of {other}'s video",
        )
        remote = tile(state, other)
        assert remote["videoWidth"] > 0 and not remote["paused"], remote
        assert remote["audioPackets"] > 0, f"no audio from {other}: {remote}"
        # Chromium sends and takes redundant audio (RED, in both pages' descriptions;
        # its stats name the Opus inside), and plays it.
        assert remote["audioSamples"] > 0, remote
        for sdp_text in js(driver, RED_IN_DESCRIPTIONS):
            audio = sdp_text[sdp_text.index("m=audio") :]
            assert "red/48000/2" in audio.split("m=video")[0], audio
        # Simulcast: each page shows which layer of the other's camera it gets.
        assert remote["layer"] and remote["layer"] <= MEDIA["height"], remote
        # The lead's tile is the large one, on both pages.
        assert tile(state, "dr-lead")["stage"] and not tile(state, "patient-site")["stage"], state[
            "tiles"
        ]

    # The active speaker is highlighted.  The fake microphones beep, but the server's
    # detection is not guaranteed within the test's time: if no active_speaker event came,
    # feed one through the client's message handler, as the server would send it.
    driver.switch_to.window(lead)
    if app_state(driver)["speakerEvents"] == 0:
        js(
            driver,
            "const c = telebridgeApp.client;"
            "c._onMessage(c._ws, {data: JSON.stringify({v: 1, type: 'event', event: 'active_speaker',"
            " data: {identity: 'patient-site', track: null, level: -20}})});",
        )
    wait_state(
        driver,
        lambda s: (
            s["speakerEvents"] > 0
            and all(t["speaking"] == (t["identity"] == s["activeSpeaker"]) for t in s["tiles"])
        ),
        5,
        "the active speaker's tile to be highlighted",
    )

    # The library is importable as an ES module too.
    module = js(
        driver,
        "const m = await import('/static/telebridge.esm.js');"
        "return [typeof m.connect, m.default === window.Telebridge, m.PROTOCOL_VERSION];",
    )
    assert module == ["function", True, 1], module

    # Screenshots: the remote tiles show a picture.
    for handle, other in pages.items():
        driver.switch_to.window(handle)
        driver.save_screenshot(str(tmp_path / f"page-{other}-seen.png"))
        video = driver.find_element("css selector", f'figure.tile[data-identity="{other}"] video')
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", video)
        shot = tmp_path / f"tile-{other}.png"
        assert video.screenshot(str(shot))
        assert_picture(shot)
        errors += console_errors_besides_network(browser)

    # An observer raises a hand; the lead sees it and promotes them from the list.
    driver.switch_to.new_window("window")
    observer = driver.current_window_handle
    open_app(driver, server.base_url)
    app_call(driver, "join(arguments[0], arguments[1], arguments[2])", room, "site-7", "observer")
    assert driver.find_element("id", "publishBtn").is_displayed() is False
    app_call(driver, "raiseHand(true)")

    driver.switch_to.window(lead)
    wait_state(
        driver, lambda s: "site-7" in s["raisedHands"], 10, "the lead to see the raised hand"
    )
    hand = driver.find_elements(
        "css selector", '#people li[data-identity="site-7"][data-hand="true"]'
    )
    assert hand, "the participants list shows no raised hand for site-7"
    click(driver, '#people li[data-identity="site-7"] button[data-action="promote"]')
    wait_state(
        driver,
        lambda s: any(
            p["identity"] == "site-7" and p["role"] == "participant" for p in s["participants"]
        ),
        10,
        "the lead to see site-7 promoted",
    )
    errors += console_errors_besides_network(browser)

    driver.switch_to.window(observer)
    wait_state(driver, lambda s: s["me"]["role"] == "participant", 10, "the observer's role change")
    assert driver.find_element("id", "publishBtn").is_displayed(), (
        "no publish button after promotion"
    )
    assert driver.find_elements(
        "css selector", '#people li[data-identity="site-7"][data-role="participant"]'
    )
    # The promoted observer sees both videos (auto-subscribed).
    wait_state(
        driver,
        lambda s: frames(s, "dr-lead") > 0 and frames(s, "patient-site") > 0,
        20,
        "the observer to decode both videos",
    )
    errors += console_errors_besides_network(browser)

    for handle in (observer, participant, lead):
        driver.switch_to.window(handle)
        js(driver, "await window.telebridgeApp.leave();")
        errors += console_errors_besides_network(browser)
    assert errors == [], errors


def click(driver, css: str, timeout: float = 10.0) -> None:
    """Find and click in one turn of the page's event loop: the people list is rebuilt on
    every room event, so an element found in one call may be gone by the next (stale)."""
    deadline = time.monotonic() + timeout
    while not driver.execute_script(
        "const el = document.querySelector(arguments[0]); if (el) el.click(); return !!el;", css
    ):
        assert time.monotonic() < deadline, f"nothing matches {css}"
        time.sleep(0.05)


def test_moderation_and_resume(server, browser):
    """The lead mutes, demotes and removes a participant from the list; the participant
    republishes on the same connection and survives a dropped WebSocket; the lead ends the room."""
    room = "consult-moderation"
    small = {"width": 320, "height": 180, "frameRate": 10}
    driver = browser.driver
    errors: list[dict] = []

    open_app(driver, server.base_url)
    lead = driver.current_window_handle
    app_call(
        driver,
        "join(arguments[0], arguments[1], arguments[2], {name: 'BS. An'})",
        room,
        "dr-lead",
        "lead",
    )
    driver.switch_to.new_window("window")
    patient = driver.current_window_handle
    open_app(driver, server.base_url)
    app_call(
        driver,
        "join(arguments[0], arguments[1], arguments[2])",
        room,
        "patient-site",
        "participant",
    )
    published = {t["source"]: t["id"] for t in app_call(driver, "publish(arguments[0])", small)}
    assert set(published) == {"camera", "microphone"}, published

    # The lead mutes the patient's microphone from the participants list.
    driver.switch_to.window(lead)
    state = wait_state(driver, lambda s: frames(s, "patient-site") > 0, 20, "the patient's video")
    assert next(p for p in state["participants"] if p["identity"] == "dr-lead")["name"] == "BS. An"
    click(
        driver,
        f'#people li[data-identity="patient-site"] button[data-action="mute"][data-track="{published["microphone"]}"]',
    )
    driver.switch_to.window(patient)
    wait_state(
        driver,
        lambda s: any(t["id"] == published["microphone"] and t["muted"] for t in s["tracks"]),
        10,
        "the patient's page to see its microphone muted",
    )
    enabled = js(
        driver,
        "return telebridgeApp.client.localTracks.get(arguments[0]).track.enabled;",
        published["microphone"],
    )
    assert enabled is False, "the muted microphone still sends sound"

    # Unpublish the camera and publish it again: same publish connection, still connected.
    app_call(driver, "unpublish(arguments[0])", published["camera"])
    again = app_call(driver, "publish(arguments[0])", small)
    assert [t["source"] for t in again] == ["camera"] and again[0]["id"] != published["camera"], (
        again
    )
    state = app_state(driver)
    assert state["publishState"] == "connected", state
    driver.switch_to.window(lead)
    wait_state(
        driver,
        lambda s: (
            again[0]["id"] in tile(s, "patient-site")["tracks"] and frames(s, "patient-site") > 0
        ),
        20,
        "the patient's new camera track",
    )
    errors += console_errors_besides_network(browser)

    # A dropped WebSocket is resumed; media untouched.
    driver.switch_to.window(patient)
    js(driver, "telebridgeApp.client.close(true);")
    state = wait_state(
        driver,
        lambda s: s["connectionState"] == "joined" and (s["closeInfo"] or {}).get("code") == 1006,
        10,
        "the resume",
    )
    assert state["publishState"] == "connected" and len(state["localTracks"]) == 2, state
    assert js(driver, "return (await telebridgeApp.client.ping()).time > 0;")

    # Demoted: the patient's tracks are taken back and the camera released.
    driver.switch_to.window(lead)
    click(driver, '#people li[data-identity="patient-site"] button[data-action="demote"]')
    driver.switch_to.window(patient)
    state = wait_state(
        driver,
        lambda s: s["me"]["role"] == "observer" and not s["localTracks"],
        10,
        "the demotion",
    )
    assert not driver.find_element("id", "publishBtn").is_displayed()
    assert driver.find_element("id", "handBtn").is_displayed()
    live = js(
        driver,
        "return telebridgeApp.client.localStream.getTracks().filter((t) => t.readyState === 'live').length;",
    )
    assert live == 0, "the camera or microphone is still on after the demotion"
    errors += console_errors_besides_network(browser)

    # Removed: the patient's page is back at the join form and says why.
    driver.switch_to.window(lead)
    click(driver, '#people li[data-identity="patient-site"] button[data-action="remove"]')
    wait_state(driver, lambda s: len(s["participants"]) == 1, 10, "the lead to see the removal")
    driver.switch_to.window(patient)
    state = wait_state(driver, lambda s: s["connectionState"] == "closed", 10, "the removal")
    assert state["closeInfo"]["code"] == 4001, state["closeInfo"]
    assert "removed" in status_text(driver), status_text(driver)
    assert driver.find_element("id", "joinForm").is_displayed()
    errors += console_errors_besides_network(browser)

    # The lead ends the room.
    driver.switch_to.window(lead)
    app_call(driver, "endRoom()")
    state = wait_state(
        driver, lambda s: s["connectionState"] == "closed", 10, "the end of the room"
    )
    assert state["closeInfo"]["code"] == 4410 and state["ended"]["by"] == "dr-lead", state
    errors += console_errors_besides_network(browser)
    assert errors == [], errors
