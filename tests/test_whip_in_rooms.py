"""WHIP publishers and WHEP viewers are participants of their room like everyone else.

A hospital's encoder that only speaks WHIP, or a display wall that only speaks WHEP, is
listed by the REST API, announced on /ws and to webhooks, and its tracks can be viewed
by /ws participants; a /ws lead can be viewed over WHEP.
"""

from __future__ import annotations

import aiohttp
import pytest

from signaling.client import TelebridgeClient
from tests.conftest import RunningServer
from tests.peers import (
    MovingVideoTrack,
    SineAudioTrack,
    WhepViewer,
    WhipError,
    start_whep_viewer,
    start_whip_publisher,
)
from tests.test_api import AUTH, api_config

ROOM = "tumour-board"


@pytest.fixture
def api_server(tmp_path):
    running = RunningServer(tmp_path, extra=api_config())
    try:
        yield running
    finally:
        running.stop()


async def participants(server: RunningServer) -> dict[str, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{server.base_url}/api/v1/rooms/{ROOM}/participants", headers={"Authorization": AUTH}
        ) as response:
            assert response.status == 200
            body = await response.json()
    return {p["identity"]: p for p in body["participants"]}


async def test_a_whip_publisher_is_a_participant_and_a_ws_observer_decodes_its_video(api_server):
    server = api_server
    publisher = await start_whip_publisher(
        server.base_url, ROOM, server.token(ROOM, "district-encoder", "lead")
    )
    observer = await TelebridgeClient.connect(
        server.base_url, server.token(ROOM, "island-site", "observer")
    )
    try:
        listed = await participants(server)
        encoder = listed["district-encoder"]
        assert (encoder["role"], encoder["via"]) == ("lead", "whip")
        assert {t["kind"] for t in encoder["tracks"]} == {"audio", "video"}
        assert {t["source"] for t in encoder["tracks"]} == {"camera", "microphone"}

        assert observer.participants["district-encoder"]["via"] == "whip"
        (video,) = [t for t in encoder["tracks"] if t["kind"] == "video"]
        await observer.subscribe([video["id"]])
        await observer.wait_remote_track(video["id"])
        observer.count_frames(video["id"])
        await observer.wait_frames(video["id"], 20, timeout=20)
        assert observer.last_frames[video["id"]].width == 320

        mark = observer.mark()
        await publisher.close()  # DELETE: the encoder leaves the room
        left = await observer.wait_for("participant_left", since=mark)
        assert left["identity"] == "district-encoder"
        assert "district-encoder" not in await participants(server)
    finally:
        await observer.close()
        await publisher.close(delete=False)


async def test_a_whep_viewer_watches_a_ws_lead_and_is_listed_while_it_watches(api_server):
    server = api_server
    lead = await TelebridgeClient.connect(server.base_url, server.token(ROOM, "central", "lead"))
    viewer: WhepViewer | None = None
    try:
        await lead.publish(video=MovingVideoTrack(), audio=SineAudioTrack())
        mark = lead.mark()
        viewer = await start_whep_viewer(
            server.base_url, ROOM, server.token(ROOM, "display-wall", "observer")
        )
        await viewer.wait_frames(10)
        joined = await lead.wait_for("participant_joined", since=mark)
        assert (joined["participant"]["identity"], joined["participant"]["via"]) == (
            "display-wall",
            "whep",
        )
        assert (await participants(server))["display-wall"]["role"] == "observer"

        # A second WHEP session of the same identity views alongside; the participant
        # stays until the last one ends.
        second = await start_whep_viewer(
            server.base_url, ROOM, server.token(ROOM, "display-wall", "observer")
        )
        await second.wait_frames(5)
        await second.close()
        assert "display-wall" in await participants(server)
        mark = lead.mark()
        await viewer.close()
        viewer = None
        left = await lead.wait_for("participant_left", since=mark)
        assert left["identity"] == "display-wall"
    finally:
        if viewer is not None:
            await viewer.close()
        await lead.close()


async def test_whip_and_ws_cannot_share_an_identity_and_whep_needs_a_publisher(api_server):
    server = api_server
    lead = await TelebridgeClient.connect(server.base_url, server.token(ROOM, "central", "lead"))
    try:
        with pytest.raises(WhipError) as info:
            await start_whip_publisher(server.base_url, ROOM, server.token(ROOM, "central", "lead"))
        assert info.value.status == 409
        with pytest.raises(WhipError) as info:
            await start_whep_viewer(server.base_url, ROOM, server.token(ROOM, "wall", "observer"))
        assert info.value.status == 404, "the lead publishes nothing yet"
        assert set(await participants(server)) == {"central"}, (
            "a refused client leaves nothing behind"
        )
    finally:
        await lead.close()
