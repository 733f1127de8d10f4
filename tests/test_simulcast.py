"""Simulcast end to end: a publisher sends three encodings, each viewer gets the one it
asked for (or its link carries), switching only at keyframes.

The publisher is :class:`bench.loadclient.SimulcastPublisher` (real ICE, DTLS-SRTP and
VP8 encoded once with PyAV, three sizes announced as ``a=ssrc-group:SIM``); viewers are
aiortc WHEP clients that decode what they get, so a test sees the picture size a viewer
would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest

from bench.loadclient import Clip, LoadViewer, SimulcastPublisher, make_clip
from tests.conftest import RunningServer
from tests.peers import WhepViewer, start_whep_viewer

ROOM = "simulcast-teaching"
SIZES = ((160, 90, 100_000), (320, 180, 250_000), (640, 360, 600_000))


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    return [make_clip(0, 2.0, 15, w, h, bitrate=b) for w, h, b in SIZES]


async def _drive(peers: Callable[[], list]) -> None:
    while True:
        await asyncio.sleep(0.02)
        now = time.monotonic()
        for peer in peers():
            peer.timer(now)


async def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def simulcast_publisher(
    server: RunningServer, clips: list[Clip]
) -> AsyncIterator[SimulcastPublisher]:
    publisher = SimulcastPublisher(
        server.base_url, ROOM, server.token(ROOM, "central-hospital", "lead"), clips
    )
    await publisher.open()
    timers = asyncio.ensure_future(_drive(lambda: [publisher]))
    async with aiohttp.ClientSession() as http:
        try:
            await publisher.negotiate(http)
            await wait_for(lambda: publisher.connected, 10, "the publisher to connect")
            yield publisher
        finally:
            timers.cancel()
            await publisher.delete(http)
            publisher.close()


async def post_layer(server: RunningServer, viewer: WhepViewer, token: str, body: dict) -> None:
    link = viewer.location + "/layer"  # type: ignore[operator]
    async with aiohttp.ClientSession() as http:
        async with http.post(
            server.base_url + link, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 204, await response.text()


@contextlib.asynccontextmanager
async def big_and_small_viewers(
    server: RunningServer,
) -> AsyncIterator[tuple[WhepViewer, WhepViewer, str]]:
    """A city hospital's full-size WHEP viewer and an island clinic's small one (with the
    small one's token, for its layer requests); both closed after."""
    small_token = server.token(ROOM, "island-clinic", "observer")
    big = await start_whep_viewer(
        server.base_url, ROOM, server.token(ROOM, "city-hospital", "observer")
    )
    try:
        small = await start_whep_viewer(server.base_url, ROOM, small_token)
        try:
            yield big, small, small_token
        finally:
            await small.close()
    finally:
        await big.close()


def size(viewer: WhepViewer) -> tuple[int, int] | None:
    frame = viewer.last_video_frame
    return None if frame is None else (frame.width, frame.height)


async def test_each_viewer_decodes_the_layer_it_asked_for(server, clips):
    async with (
        simulcast_publisher(server, clips) as publisher,
        big_and_small_viewers(server) as (big, small, small_token),
    ):
        assert 'rel="urn:ietf:params:whep:ext:core:layer"' in small.link
        await post_layer(server, small, small_token, {"encodingId": "0"})
        await wait_for(lambda: size(big) == (640, 360), 15, "the top layer at the big screen")
        await wait_for(lambda: size(small) == (160, 90), 15, "the low layer at the small one")

        # A ceiling by height: the tallest layer that fits.
        await post_layer(server, small, small_token, {"maxHeight": 200})
        await wait_for(lambda: size(small) == (320, 180), 15, "the middle layer (<= 200 px)")
        frames_before = small.video_frames
        # Back to the server's choice: the top layer, with no decoding gap.
        await post_layer(server, small, small_token, {})
        await wait_for(lambda: size(small) == (640, 360), 15, "the top layer again")
        await small.wait_frames(frames_before + 15)
        assert size(big) == (640, 360)
        # Every switch waited for a keyframe of its new layer, asked of that layer.
        assert publisher.layers[0].plis >= 1 and publisher.layers[1].plis >= 1
        # And each viewer's layer changes are counted for the operator.
        async with aiohttp.ClientSession() as http:
            async with http.get(server.base_url + "/metrics") as response:
                text = await response.text()
        switches = {
            line.split('"')[1]: float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("telebridge_layer_switches_total{")
        }
        assert switches.get("0", 0) >= 1 and switches.get("1", 0) >= 1, switches


async def test_the_publisher_is_told_to_send_what_its_viewers_watch(server, clips):
    """Its REMB follows the encodings watched: with one thumbnail viewer, little; when
    that viewer wants the top layer, enough for it (the configured cap at most)."""
    async with simulcast_publisher(server, clips) as publisher:
        token = server.token(ROOM, "island-clinic", "observer")
        viewer = await start_whep_viewer(server.base_url, ROOM, token)
        try:
            await post_layer(server, viewer, token, {"encodingId": "0"})
            await wait_for(
                lambda: publisher.remb is not None and publisher.remb <= 400_000,
                15,
                "a small limit while only the thumbnail is watched",
            )
            low = publisher.remb
            await post_layer(server, viewer, token, {})
            await wait_for(lambda: (publisher.remb or 0) >= 1_500_000, 20, "room for the top layer")
            print(f"publisher limit {low} bit/s for a thumbnail, then {publisher.remb}")
        finally:
            await viewer.close()


@pytest.fixture
def roomy_server(tmp_path) -> Iterator[RunningServer]:
    """A server whose one worker takes a hundred viewers at once: admission control,
    which spreads such a burst over seconds or refuses part of it on a busy machine (as
    it did here, beside the rest of the suite), is not what the switch burst test is
    about; tests/test_overload.py and tests/test_pipes.py test it."""
    running = RunningServer(tmp_path, extra="admission_max_cpu = 0\nadmission_max_joins = 0")
    try:
        yield running
    finally:
        running.stop()


async def test_a_hundred_viewers_switching_at_once_cost_the_publisher_few_keyframes(
    roomy_server, clips
):
    server = roomy_server
    async with simulcast_publisher(server, clips) as publisher:
        viewers = [
            LoadViewer(server.base_url, ROOM, server.token(ROOM, f"site-{i:03d}", "observer"))
            for i in range(100)
        ]
        timers = asyncio.ensure_future(_drive(lambda: viewers))
        async with aiohttp.ClientSession() as http:
            try:
                for viewer in viewers:
                    await viewer.open()
                await asyncio.gather(*(v.negotiate(http) for v in viewers))
                await wait_for(
                    lambda: all(v.connected for v in viewers), 60, "100 viewers to connect"
                )
                low = publisher.layers[0]
                # Once everyone is on the top layer, nobody has asked the low layer for a
                # keyframe since (its own periodic keyframes aside).
                await asyncio.sleep(0)
                before = low.plis
                started = time.monotonic()

                async def to_low(viewer: LoadViewer) -> None:
                    async with http.post(
                        server.base_url + viewer.location + "/layer",
                        json={"encodingId": "0"},
                        headers={"Authorization": f"Bearer {viewer.token}"},
                    ) as response:
                        assert response.status == 204

                await asyncio.gather(*(to_low(v) for v in viewers))
                burst = time.monotonic() - started
                await wait_for(
                    lambda: low.plis > before, 10, "a keyframe request for the low layer"
                )
                # The switch burst took `burst` seconds; the per-layer throttle allows one
                # request per half second, plus the one that opens the burst.
                await asyncio.sleep(0.6)
                asked = low.plis - before
                print(f"keyframe requests for 100 switches: {asked} in {burst:.2f} s")
                assert asked <= 2 + int(burst / 0.5), (asked, burst)
            finally:
                timers.cancel()
                for viewer in viewers:
                    await viewer.delete(http)
                    viewer.close()


@pytest.mark.browser
async def test_chromium_publishes_three_layers_and_viewers_get_their_own(server):
    """The demo page's camera goes out as three rid encodings (q, h, f of 1280x720); a
    thumbnail viewer gets q, a full-size viewer the top one Chromium sends."""
    from tests.browser import chromium_available, launch_chromium, missing_reason
    from tests.test_browser import _stop_all_pages, open_demo, publish, wait_stats

    if not chromium_available():
        pytest.skip(reason=missing_reason())
    chromium = await asyncio.to_thread(launch_chromium)
    viewers: list[WhepViewer] = []
    try:
        driver = chromium.driver
        await open_demo(driver, server.base_url)
        started = time.monotonic()
        await publish(driver, ROOM, "central-hospital", "lead")
        await wait_stats(driver, lambda s: s["publishState"] == "connected", 15, "publishing")
        thumb_token = server.token(ROOM, "island-clinic", "observer")
        thumb = await start_whep_viewer(server.base_url, ROOM, thumb_token)
        viewers.append(thumb)
        await post_layer(server, thumb, thumb_token, {"encodingId": "q"})
        full = await start_whep_viewer(
            server.base_url, ROOM, server.token(ROOM, "city-hospital", "observer")
        )
        viewers.append(full)
        await wait_for(lambda: size(thumb) == (320, 180), 20, "the thumbnail layer (q)")
        await wait_for(
            lambda: (size(full) or (0, 0))[1] >= 360, 30, "a layer of 360 px or more at full size"
        )
        reached = time.monotonic() - started
        await wait_for(lambda: size(full) == (1280, 720), 40, "the top layer at full size")
        top_after = time.monotonic() - started
        print(f"first >=360p layer {reached:.1f} s, top layer {top_after:.1f} s after publish")
        frames = thumb.video_frames
        await thumb.wait_frames(frames + 20)
        assert size(thumb) == (320, 180)
    finally:
        for viewer in viewers:
            await viewer.close()
        await asyncio.to_thread(_stop_all_pages, chromium.driver)
        await asyncio.to_thread(chromium.quit)


@pytest.mark.browser
async def test_encodings_nobody_watches_are_paused_at_the_lead_and_come_back(server):
    """A lead on the conference page (telebridge.js) sends three encodings; while the
    only viewer wants the thumbnail, the server has the page switch the other two off,
    and when the viewer asks for full size they come back and it gets the top one."""
    from tests.browser import chromium_available, launch_chromium, missing_reason
    from tests.test_demo_conference import app_call, open_app

    if not chromium_available():
        pytest.skip(reason=missing_reason())
    chromium = await asyncio.to_thread(launch_chromium)
    driver = chromium.driver
    viewer: WhepViewer | None = None

    async def encodings() -> list[bool]:
        return await asyncio.to_thread(
            driver.execute_script,
            "const c = window.telebridgeApp.client;"
            "const t = [...c.localTracks.values()].find((t) => t.kind === 'video');"
            "return t.transceiver.sender.getParameters().encodings.map((e) => e.active);",
        )

    async def wait_encodings(expected: list[bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (seen := await encodings()) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"encodings {seen}, expected {expected}")
            await asyncio.sleep(0.2)

    try:
        await asyncio.to_thread(open_app, driver, server.base_url)
        await asyncio.to_thread(
            app_call, driver, "join(arguments[0], arguments[1], arguments[2])", ROOM, "lead", "lead"
        )
        media = {"width": 1280, "height": 720, "frameRate": 20}
        await asyncio.to_thread(app_call, driver, "publish(arguments[0])", media)
        token = server.token(ROOM, "island-clinic", "observer")
        viewer = await start_whep_viewer(server.base_url, ROOM, token)
        await post_layer(server, viewer, token, {"encodingId": "q"})
        await wait_for(lambda: size(viewer) == (320, 180), 20, "the thumbnail layer")
        await wait_encodings([True, False, False], 15)
        paused_at = time.monotonic()
        frames = viewer.video_frames
        await viewer.wait_frames(frames + 20)
        assert size(viewer) == (320, 180), "the thumbnail goes on while the others are off"

        asked = time.monotonic()
        await post_layer(server, viewer, token, {})
        # Back up step by step, each step after a probe shows the link carries it.
        await wait_for(lambda: size(viewer) == (1280, 720), 30, "the top layer again")
        back = time.monotonic() - asked
        assert (await encodings())[::2] == [True, True], "the lowest, and the top it watches"
        print(f"upper layers off {asked - paused_at:.1f} s; top layer {back:.1f} s after asking")
    finally:
        if viewer is not None:
            await viewer.close()
        await asyncio.to_thread(chromium.quit)


VIEW_THROUGH_RELAY = """
const [room, token, relayPort] = arguments;
const pc = new RTCPeerConnection();
pc.addTransceiver("video", { direction: "recvonly" });
pc.addTransceiver("audio", { direction: "recvonly" });
// Played out, as a user hears it: without a sink Chromium pulls no audio, and its
// totalSamplesReceived / concealedSamples stay at 0.
pc.ontrack = (event) => {
  if (event.track.kind !== "audio") return;
  const sink = document.createElement("audio");
  sink.autoplay = true;
  sink.srcObject = new MediaStream([event.track]);
  document.body.appendChild(sink);
};
await pc.setLocalDescription(await pc.createOffer());
const response = await fetch(`/whep/${room}`, {
  method: "POST",
  headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` },
  body: pc.localDescription.sdp,
});
if (response.status !== 201) throw new Error(`WHEP ${response.status}`);
// Through the link emulator: its port in the UDP candidate, no TCP way around it.
const answer = (await response.text())
  .split("\\r\\n")
  .filter((line) => !/^a=candidate:\\S+ \\d+ tcp /i.test(line))
  .map((line) => line.replace(/^(a=candidate:\\S+ \\d+ udp \\d+ \\S+ )\\d+/i, `$1${relayPort}`))
  .join("\\r\\n");
await pc.setRemoteDescription({ type: "answer", sdp: answer });
window.weakViewer = pc;
return true;
"""

VIEWER_STATS = """
const out = {};
for (const s of (await window.weakViewer.getStats()).values()) {
  if (s.type !== "inbound-rtp") continue;
  if (s.kind === "video") {
    Object.assign(out, {
      height: s.frameHeight || 0,
      decoded: s.framesDecoded || 0,
      keyframes: s.keyFramesDecoded || 0,
      freezes: s.freezeCount || 0,
      frozen: s.totalFreezesDuration || 0,
      nacks: s.nackCount || 0,
      plis: s.pliCount || 0,
      lost: s.packetsLost || 0,
      packets: s.packetsReceived || 0,
      dropped: s.framesDropped || 0,
      received: s.framesReceived || 0,
    });
  } else {
    Object.assign(out, { samples: s.totalSamplesReceived || 0, concealed: s.concealedSamples || 0 });
  }
}
return out;
"""


KEEP_PCS = """
const Original = window.RTCPeerConnection;
window.keptPcs = [];
window.RTCPeerConnection = function (...args) {
  const pc = new Original(...args);
  window.keptPcs.push(pc);
  return pc;
};
window.RTCPeerConnection.prototype = Original.prototype;
return true;
"""

LEAD_STATS = """
const out = [];
for (const pc of window.keptPcs) {
  for (const s of (await pc.getStats()).values()) {
    if (s.type === "outbound-rtp" && s.kind === "video") {
      out.push([s.rid, s.frameHeight, s.framesPerSecond, s.framesEncoded, s.qualityLimitationReason]);
    }
  }
}
return out;
"""


@pytest.mark.browser
async def test_a_chromium_viewer_on_a_weak_link_gets_a_lower_layer_and_climbs_back(server):
    """The issue's island site: a Chromium lead sends three layers; a Chromium viewer
    watches the top one until its link turns to 300 kbit/s, 5 % loss, 300 ms round trip
    (tests' user-space link emulator). It moves to a lower layer, keeps its audio, the
    server sends what the link carries; when the link recovers it climbs back."""
    from bench.linkemu import LinkEmulator, LinkParams
    from tests.browser import chromium_available, launch_chromium, missing_reason
    from tests.test_browser import open_demo, publish, wait_stats
    from tests.test_linkemu import worker_port

    if not chromium_available():
        pytest.skip(reason=missing_reason())
    rate = 300_000
    chromium = await asyncio.to_thread(launch_chromium)
    driver = chromium.driver
    emu = LinkEmulator(("127.0.0.1", worker_port(server)), LinkParams(), LinkParams())

    async def page(script: str, *args: object) -> dict:
        from tests.browser import run_async_js

        return await asyncio.to_thread(run_async_js, driver, script, *args)

    async def stats_when(check: Callable[[dict], bool], timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while not check(stats := await page(VIEWER_STATS)):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}: {stats}")
            await asyncio.sleep(0.25)
        return stats

    try:
        await emu.start()
        await open_demo(driver, server.base_url)
        lead = driver.current_window_handle
        await page(KEEP_PCS)
        await publish(driver, ROOM, "central-hospital", "lead")
        await wait_stats(driver, lambda s: s["publishState"] == "connected", 15, "publishing")
        await asyncio.to_thread(driver.switch_to.new_window, "window")
        viewer_window = driver.current_window_handle
        await open_demo(driver, server.base_url)
        token = server.token(ROOM, "island", "observer")
        await page(VIEW_THROUGH_RELAY, ROOM, token, emu.port)
        # Generous: on a loaded 2-core machine the first estimate dips (CPU-starved
        # timestamps look like queueing); the time to the top layer is another test's.
        # In one fresh-clone suite run, the viewer's feedback stalled for a second at a
        # time and its estimate fell to 107 kbit/s on this unlimited link; the server went
        # down to the lowest layer and was climbing back (805 kbit/s carried) at 45 s.
        good = await stats_when(lambda s: s.get("height") == 720, 90, "the top layer")

        # A 300 ms router buffer (mobile and satellite links have at least that): with the
        # emulator's default 80 ms (3 kB at this rate) a keyframe burst overflows it, which
        # only a pacer in front of the link would prevent (off by default, docs/design.md).
        emu.update("down", rate=rate, delay=0.15, loss=0.05, queue_time=0.3)
        emu.update("up", delay=0.15, loss=0.05)
        weak_at = time.monotonic()
        low = await stats_when(lambda s: 0 < s.get("height", 0) < 720, 20, "a lower layer")
        moved = time.monotonic() - weak_at
        await asyncio.sleep(max(0.0, weak_at + 10 - time.monotonic()))
        window = 10.0
        start, sent_before = await page(VIEWER_STATS), emu.down.counters.snapshot()
        await asyncio.sleep(window)  # the measurement window
        end, sent_after = await page(VIEWER_STATS), emu.down.counters.snapshot()
        # What the viewer saw (Chromium's getStats), the link, and the lead's encodings:
        # the figures to read when the frame rate is off.
        changes = {
            k: end[k] - start[k]
            for k in end
            if k != "height" and k in start and isinstance(end[k], int | float)
        }
        link = {
            k: getattr(sent_after, k) - getattr(sent_before, k)
            for k in ("packets_in", "dropped_queue", "dropped_loss")
        }
        await asyncio.to_thread(driver.switch_to.window, lead)
        print(f"viewer over the window: {changes}; link down: {link}")
        print("lead (rid, height, fps, frames, limited by):", await page(LEAD_STATS))
        await asyncio.to_thread(driver.switch_to.window, viewer_window)
        fps = (end["decoded"] - start["decoded"]) / window
        concealed = (end["concealed"] - start["concealed"]) / max(
            1, end["samples"] - start["samples"]
        )
        offered = (sent_after.bytes_in - sent_before.bytes_in) * 8 / window
        print(
            f"weak link: {good['height']}p -> {low['height']}p in {moved:.1f} s; from 10 s on, "
            f"{end['height']}p at {fps:.1f} fps, audio concealed {concealed:.1%}, server sent "
            f"{offered / 1000:.0f} kbit/s ({offered / rate:.2f}x the link)"
        )
        emu.update("down", rate=None, loss=0.0, delay=0.0)
        emu.update("up", loss=0.0, delay=0.0)
        lifted = time.monotonic()
        await stats_when(lambda s: s.get("height") == 720, 40, "the top layer again")
        print(f"top layer {time.monotonic() - lifted:.1f} s after the link recovered")
        assert end["height"] < 720, "still on a lower layer while the link is weak"
        # 16.2-19.1 fps measured (the fake camera sends 20; 3-16 before the pacer and the
        # probing changes; 9-10 with the machine at a load of 10-11 on 2 cores):
        # retransmissions go ahead of queued video, so a loss costs one round trip.
        # With temporal layers the ladder may also take T0+T1 or T0 of the lowest layer
        # (half or a quarter of its 20 fps): 6.8-11 fps before the temporal step waited
        # for the link to show it could not carry the full rate (16.4-17.5 since, idle
        # machine). The 15 fps target is reported, not asserted.
        assert fps >= 4, "the lower layer keeps moving (not paused, not frozen)"
        # Audio first: redundant audio (RED) plays a lost packet's frame from the next
        # one. 0.3-0.7 % concealed with it; plain Opus concealed 2.3-5.6 %, as much as
        # the link loses.
        assert concealed < 0.05, "audio first"
        assert offered <= 1.2 * rate, "the server sends what the link carries"
        await asyncio.to_thread(driver.switch_to.window, lead)
    finally:
        emu.close()
        await asyncio.to_thread(chromium.quit)


class _DecodeErrors(logging.Handler):
    """Counts aiortc's "failed to decode" warnings (its receiver logs and skips them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.at: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.at.append(time.monotonic())


@pytest.mark.browser
async def test_three_viewers_of_a_chromium_lead_each_on_their_layer(server):
    """The issue's "done when": a Chromium lead publishes three layers (q, h, f of
    1280x720), watched at once by a full-size viewer, a thumbnail viewer (max height 180)
    and a viewer on an emulated link that turns weak and recovers. Viewers are aiortc
    (three Chromium viewers are too heavy for two cores); each decodes what it gets. Then
    the thumbnail asks for VP8 temporal layer 0 only (Chromium sends L1T3 per encoding):
    it keeps decoding, error-free, at about a quarter of the frame rate."""
    from bench.linkemu import LinkEmulator, LinkParams
    from tests.browser import chromium_available, launch_chromium, missing_reason
    from tests.test_browser import _stop_all_pages, open_demo, publish, wait_stats
    from tests.test_linkemu import worker_port

    if not chromium_available():
        pytest.skip(reason=missing_reason())
    errors = _DecodeErrors()
    began = time.monotonic()
    logging.getLogger("aiortc.rtcrtpreceiver").addHandler(errors)
    chromium = await asyncio.to_thread(launch_chromium)
    emu = LinkEmulator(("127.0.0.1", worker_port(server)), LinkParams(), LinkParams())
    viewers: list[WhepViewer] = []
    try:
        await emu.start()
        await open_demo(chromium.driver, server.base_url)
        await publish(chromium.driver, ROOM, "central-hospital", "lead")
        await wait_stats(
            chromium.driver, lambda s: s["publishState"] == "connected", 15, "publishing"
        )
        full = await start_whep_viewer(
            server.base_url, ROOM, server.token(ROOM, "city-hospital", "observer")
        )
        viewers.append(full)
        thumb_token = server.token(ROOM, "district-clinic", "observer")
        thumb = await start_whep_viewer(server.base_url, ROOM, thumb_token)
        viewers.append(thumb)
        await post_layer(server, thumb, thumb_token, {"maxHeight": 180})
        weak = WhepViewer(server.base_url, ROOM, server.token(ROOM, "island", "observer"))
        viewers.append(weak)
        await weak.start(via_port=emu.port)

        def height(viewer: WhepViewer) -> int:
            return (size(viewer) or (0, 0))[1]

        async def settle(viewer: WhepViewer, wanted: int, timeout: float, what: str) -> None:
            """``wanted`` px for 3 s in a row: an aiortc viewer's REMB estimate starts at
            what it receives, so the first top-layer frames may be followed by a step down
            and a probe back up."""
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                await wait_for(lambda: height(viewer) == wanted, max(left, 0.1), what)
                held = time.monotonic()
                while height(viewer) == wanted and time.monotonic() - held < 3.0:
                    await asyncio.sleep(0.1)
                if height(viewer) == wanted:
                    return

        # Seconds on an idle machine; aiortc's REMB estimate dips when the cores are busy.
        await wait_for(lambda: height(full) == 720, 90, "the top layer at full size")
        await wait_for(lambda: size(thumb) == (320, 180), 30, "the thumbnail layer")
        await settle(weak, 720, 120, "the top layer on the good link")

        # The island's link turns weak: 400 kbit/s, 100 ms each way, a 300 ms buffer.
        emu.update("down", rate=400_000, delay=0.1, queue_time=0.3)
        emu.update("up", delay=0.1)
        weak_at = time.monotonic()
        await wait_for(lambda: 0 < height(weak) < 720, 60, "a lower layer on the weak link")
        moved = time.monotonic() - weak_at
        low = height(weak)
        frames = weak.video_frames
        await weak.wait_frames(frames + 20, timeout=30)
        assert size(thumb) == (320, 180), "the thumbnail keeps its layer"
        # The full-size viewer's layer follows its own (aiortc, REMB) estimate, which dips
        # when the machine is busy: it must keep its picture; its layer is checked below.
        full_during = height(full)
        await full.wait_frames(full.video_frames + 20, timeout=20)

        emu.update("down", rate=None, delay=0.0)
        emu.update("up", delay=0.0)
        lifted = time.monotonic()
        await wait_for(lambda: height(weak) == 720, 120, "the top layer after the link recovers")
        back = time.monotonic() - lifted
        await wait_for(lambda: height(full) == 720, 90, "the top layer at full size, at the end")
        assert size(thumb) == (320, 180)

        # Temporal layers: the thumbnail takes T0 only.
        await thumb.wait_frames(thumb.video_frames + 30, timeout=20)
        full_rate = thumb.rate(2.0)
        errors_before = errors.count
        await post_layer(server, thumb, thumb_token, {"maxHeight": 180, "maxTemporalLayerId": 0})
        await asyncio.sleep(1.0)  # frames already in aiortc's jitter buffer drain
        counted = thumb.video_frames
        await asyncio.sleep(4.0)  # the measurement window
        t0_rate = (thumb.video_frames - counted) / 4.0
        print(
            f"weak link: 720p -> {low}p in {moved:.1f} s, back to 720p {back:.1f} s after "
            f"the link recovered (full-size viewer at {full_during}p meanwhile); thumbnail {full_rate:.1f} fps, T0 only {t0_rate:.1f} fps; "
            f"decode errors {errors_before} before T0, {errors.count - errors_before} after "
            f"(at {[round(t - began, 1) for t in errors.at]} s; link weak at "
            f"{weak_at - began:.1f} s, lifted at {lifted - began:.1f} s)"
        )
        assert size(thumb) == (320, 180)
        assert 0 < t0_rate <= 0.65 * full_rate, "a quarter to a half of the frame rate"
        assert errors.count == errors_before, "every T0 frame decoded"
        await post_layer(server, thumb, thumb_token, {"maxHeight": 180})
        await wait_for(lambda: thumb.rate(2.0) >= 0.8 * full_rate, 20, "the full frame rate")
    finally:
        logging.getLogger("aiortc.rtcrtpreceiver").removeHandler(errors)
        emu.close()
        for viewer in viewers:
            await viewer.close()
        await asyncio.to_thread(_stop_all_pages, chromium.driver)
        await asyncio.to_thread(chromium.quit)
