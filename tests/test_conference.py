"""The consultation protocol end to end: real server, real sockets, aiortc clients (the SDK)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from signaling.client import ProtocolError, TelebridgeClient
from tests.peers import MovingVideoTrack, SineAudioTrack


async def join(server, room: str, identity: str, role: str, **kw) -> TelebridgeClient:
    return await TelebridgeClient.connect(server.base_url, server.token(room, identity, role), **kw)


async def test_lead_publishes_observers_subscribe_and_decode(server):
    lead = await join(server, "consult", "central", "lead")
    observers = []
    try:
        tracks = await lead.publish(video=MovingVideoTrack(), audio=SineAudioTrack())
        assert {t["kind"] for t in tracks} == {"audio", "video"}
        assert {t["source"] for t in tracks} == {"camera", "microphone"}
        for n in range(2):
            observer = await join(server, "consult", f"site-{n}", "observer")
            observers.append(observer)
            assert set(observer.tracks) == {t["id"] for t in tracks}, "join lists the room's tracks"
            await observer.subscribe(list(observer.tracks))
        video = next(t["id"] for t in tracks if t["kind"] == "video")
        audio = next(t["id"] for t in tracks if t["kind"] == "audio")
        for observer in observers:
            await observer.wait_remote_track(video)
            observer.count_frames(video)
            observer.count_frames(audio)
        for observer in observers:
            await observer.wait_frames(video, 30, timeout=20)
            await observer.wait_frames(audio, 50, timeout=10)
            assert observer.last_frames[video].width == 320
        # Everyone saw everyone arrive.
        assert {"site-0", "site-1"} <= set(lead.participants)
    finally:
        for client in observers + [lead]:
            await client.close()


async def test_tracks_come_and_go_with_server_driven_renegotiation(server):
    lead = await join(server, "grand-rounds", "central", "lead")
    observer = await join(server, "grand-rounds", "site", "observer")
    presenter = await join(server, "grand-rounds", "district", "participant")
    try:
        (lead_video,) = await lead.publish(video=MovingVideoTrack())
        await observer.subscribe([lead_video["id"]])
        observer.count_frames(lead_video["id"])
        await observer.wait_frames(lead_video["id"], 10, timeout=20)

        mark = observer.mark()
        (imaging,) = await presenter.publish(screen=MovingVideoTrack(480, 360))
        published = await observer.wait_for("track_published", since=mark)
        assert (
            published["track"]["id"] == imaging["id"] and published["track"]["source"] == "screen"
        )
        await observer.subscribe([imaging["id"]])
        observer.count_frames(imaging["id"])
        await observer.wait_frames(imaging["id"], 10, timeout=20)
        assert observer.last_frames[imaging["id"]].width == 480

        mark = observer.mark()
        await presenter.unpublish(imaging["id"])
        gone = await observer.wait_for("track_unpublished", since=mark)
        assert gone == {"track": imaging["id"], "owner": "district"}
        await observer.wait_for(
            "renegotiated", lambda d: imaging["id"] not in d["tracks"], since=mark
        )
        before = observer.frames[lead_video["id"]]
        # The lead's video keeps flowing through the renegotiation.
        await observer.wait_frames(lead_video["id"], before + 15, timeout=10)
    finally:
        for client in (presenter, observer, lead):
            await client.close()


async def test_roles_are_enforced_and_the_lead_gives_the_floor(server):
    lead = await join(server, "floor", "central", "lead")
    observer = await join(server, "floor", "island", "observer")
    participant = await join(server, "floor", "district", "participant")
    try:
        with pytest.raises(ProtocolError) as refused:
            await observer.publish(audio=SineAudioTrack())
        assert refused.value.code == "forbidden"
        for call in (
            participant.set_role("island", "participant"),
            participant.remove("island"),
            participant.end_room(),
        ):
            with pytest.raises(ProtocolError) as error:
                await call
            assert error.value.code == "forbidden"

        mark = lead.mark()
        await observer.raise_hand(True)
        raised = await lead.wait_for("hand_raised", since=mark)
        assert raised == {"identity": "island", "raised": True}

        mark = observer.mark()
        await lead.set_role("island", "participant")
        changed = await observer.wait_for("role_changed", since=mark)
        assert {k: changed[k] for k in ("identity", "role", "by")} == {
            "identity": "island",
            "role": "participant",
            "by": "central",
        } and changed["participant"]["role"] == "participant"
        assert observer.role == "participant"

        mark = lead.mark()
        (microphone,) = await observer.publish(audio=SineAudioTrack())
        await lead.wait_for(
            "track_published", lambda d: d["track"]["owner"] == "island", since=mark
        )
        speaker = await lead.wait_for(
            "active_speaker", lambda d: d["identity"] == "island", since=mark, timeout=10
        )
        assert speaker["track"] == microphone["id"] and speaker["level"] > -60

        mark = observer.mark()
        await lead.mute(microphone["id"], True)
        muted = await observer.wait_for("track_muted", since=mark)
        assert muted == {"track": microphone["id"], "muted": True, "by": "central"}

        mark = observer.mark()
        await lead.set_role("island", "observer")  # the floor is taken back
        await observer.wait_for(
            "track_unpublished", lambda d: d["track"] == microphone["id"], since=mark
        )
    finally:
        for client in (participant, observer, lead):
            await client.close()


async def test_remove_and_end_room(server):
    lead = await join(server, "ward", "central", "lead")
    guest = await join(server, "ward", "guest", "observer")
    other = await join(server, "ward", "other", "observer")
    try:
        mark = other.mark()
        await lead.remove("guest")
        left = await other.wait_for("participant_left", since=mark)
        assert left == {"identity": "guest", "reason": "removed"}
        await asyncio.sleep(0.3)
        assert guest.close_code == 4001 and not guest.connected

        await lead.end_room()
        await asyncio.sleep(0.3)
        assert other.ended is not None and other.close_code == 4410
        late = await join(server, "ward", "late", "observer")
        assert set(late.participants) == {"late"}, "a room of the same name starts afresh"
        await late.close()
    finally:
        for client in (other, guest, lead):
            await client.close()


async def test_dropped_websocket_resumes_without_losing_media(server):
    lead = await join(server, "resume", "central", "lead")
    observer = await join(server, "resume", "site", "observer")
    try:
        (video,) = await lead.publish(video=MovingVideoTrack())
        await observer.subscribe([video["id"]])
        observer.count_frames(video["id"])
        await observer.wait_frames(video["id"], 10, timeout=20)
        await observer._ws.close()  # the socket drops; the peer connections do not
        # Media flows while the WebSocket is down.
        during = await observer.wait_frames(
            video["id"], observer.frames[video["id"]] + 10, timeout=10
        )
        await observer.reconnect()
        assert observer.connected and "site" in observer.participants
        mark = observer.mark()
        await lead.raise_hand(True)
        await observer.wait_for("hand_raised", since=mark)
        await observer.wait_frames(video["id"], during + 20, timeout=10)
    finally:
        await observer.close()
        await lead.close()


async def test_bad_messages_get_error_codes_and_the_connection_survives(server):
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.base_url.replace("http", "ws") + "/ws")

        async def exchange(payload: str) -> dict:
            await ws.send_str(payload)
            return json.loads((await ws.receive(timeout=5)).data)

        assert (await exchange("not json"))["code"] == "bad_json"
        assert (await exchange("[1, 2]"))["code"] == "bad_json"
        assert (await exchange(json.dumps({"v": 2, "type": "ping"})))[
            "code"
        ] == "unsupported_version"
        assert (await exchange(json.dumps({"v": 1, "type": "teleport", "id": 1})))[
            "code"
        ] == "unknown_type"
        invalid = await exchange(
            json.dumps({"v": 1, "type": "raise_hand", "id": 2, "raised": "yes"})
        )
        assert (
            invalid["code"] == "invalid" and invalid["id"] == 2 and "raised" in invalid["message"]
        )
        assert (
            await exchange(json.dumps({"v": 1, "type": "subscribe", "id": 3, "tracks": ["x"]}))
        )["code"] == "not_joined"
        pong = await exchange(json.dumps({"v": 1, "type": "ping", "id": 4}))
        assert pong["type"] == "response" and pong["id"] == 4, (
            "the connection survived the bad messages"
        )

        wrong_room = await exchange(
            json.dumps({"v": 1, "type": "join", "id": 5, "token": "garbage"})
        )
        assert wrong_room["code"] == "unauthorized"
        closed = await ws.receive(timeout=5)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4401

        ws = await http.ws_connect(server.base_url.replace("http", "ws") + "/ws")
        await ws.send_str("x" * (70 * 1024))
        closed = await ws.receive(timeout=5)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1009


async def test_rooms_are_isolated_and_tokens_expire(server):
    lead = await join(server, "room-a", "central", "lead")
    intruder = await join(server, "room-b", "central", "lead")
    try:
        (video,) = await lead.publish(video=MovingVideoTrack())
        with pytest.raises(ProtocolError) as error:
            await intruder.subscribe([video["id"]])
        assert error.value.code == "not_found", "a track of another room is not reachable"
    finally:
        await intruder.close()
        await lead.close()
    short = await TelebridgeClient.connect(
        server.base_url, server.token("room-a", "brief", "observer", ttl=1)
    )
    try:
        await asyncio.sleep(7)  # past expiry and the 5 s leeway
        with pytest.raises(ProtocolError) as expired:
            await short.raise_hand(True)
        assert expired.value.code == "unauthorized"
    finally:
        await short.close()


async def test_rate_limit(server):
    client = await join(server, "busy", "chatty", "observer")
    try:
        results = await asyncio.gather(
            *(client.request("ping") for _ in range(80)), return_exceptions=True
        )
        limited = [r for r in results if isinstance(r, Exception)]
        assert limited, "80 messages at once exceed the 40-message burst"
        await asyncio.sleep(2.5)
        await client.ping()  # the bucket refills
    finally:
        await client.close()


async def test_joins_per_address_are_limited(tmp_path):
    from tests.conftest import RunningServer

    server = RunningServer(tmp_path, extra="[ws]\njoin_limit = 3")
    clients = []
    try:
        for n in range(3):
            clients.append(await join(server, "gate", f"site-{n}", "observer"))
        with pytest.raises(ProtocolError) as refused:
            await join(server, "gate", "site-3", "observer")
        assert refused.value.code == "rate_limited"
    finally:
        for client in clients:
            await client.close()
        server.stop()
