"""The client SDK (signaling/client.py) against a scripted fake server on a real socket.

The fake is a real aiohttp WebSocket server on 127.0.0.1 that speaks a small, scripted
version of protocol 1: it answers ``join``, records every message, answers other requests
with ``{}`` unless a test scripts an error, a delay or silence, and pushes events. No media
flows here; the integration tests drive the SDK against the real server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import WSCloseCode, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from signaling.client import (
    ConnectionLost,
    ProtocolError,
    TelebridgeClient,
    offered_tracks,
    ws_url,
)
from tests.peers import MovingVideoTrack, SineAudioTrack

Script = Callable[[web.WebSocketResponse, dict[str, Any]], Awaitable[None]]


def participant(identity: str, role: str = "participant", hand: bool = False) -> dict[str, Any]:
    return {
        "identity": identity,
        "name": identity.title(),
        "role": role,
        "hand_raised": hand,
        "joined_at": 1.0,
    }


def track(track_id: str, owner: str, kind: str = "video", source: str = "camera") -> dict[str, Any]:
    return {"id": track_id, "owner": owner, "kind": kind, "source": source, "muted": False}


class FakeServer:
    """A scripted /ws endpoint: ``scripts[type]`` overrides how a request is answered."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.scripts: dict[str, Script] = {}
        self.joins = 0
        self.participants = [participant("central", "lead"), participant("site-7", "observer")]
        self.tracks = [track("t1", "central"), track("t2", "central", "audio", "microphone")]
        self.runner: web.AppRunner | None = None
        self.base_url = ""
        self.message_arrived = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        for ws in self.sockets:
            await ws.close()
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def ws(self) -> web.WebSocketResponse:
        return self.sockets[-1]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type") == kind]

    async def wait_message(self, kind: str, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while len(self.of_type(kind)) < count:
                self.message_arrived.clear()
                await self.message_arrived.wait()
            return self.of_type(kind)[count - 1]

        return await asyncio.wait_for(wait(), timeout)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        async for frame in ws:
            message = json.loads(frame.data)
            self.received.append(message)
            self.message_arrived.set()
            script = self.scripts.get(message["type"])
            if script is not None:
                await script(ws, message)
            elif message["type"] == "join":
                await self.answer_join(ws, message)
            else:
                await respond(ws, message, {})
        return ws

    async def answer_join(self, ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        if message.get("token") != "good":
            await error(ws, message, "unauthorized", "bad token")
            await ws.close(code=4401, message=b"unauthorized")
            return
        self.joins += 1
        me = participant("site-7", "observer")
        await respond(
            ws,
            message,
            {
                "participant": me,
                "room": {
                    "name": "consult",
                    "max_publishers": 16,
                    "max_viewers": 1000,
                    "empty_timeout": 300,
                    "auto_record": False,
                    "created_at": 1.0,
                },
                "participants": list(self.participants),
                "tracks": list(self.tracks),
                "resume": f"resume-{self.joins}",
            },
        )

    async def event(self, name: str, data: dict[str, Any]) -> None:
        await self.ws.send_json({"v": 1, "type": "event", "event": name, "data": data})


async def respond(ws: web.WebSocketResponse, message: dict[str, Any], data: dict[str, Any]) -> None:
    await ws.send_json({"v": 1, "type": "response", "id": message.get("id"), "data": data})


async def error(ws: web.WebSocketResponse, message: dict[str, Any], code: str, text: str) -> None:
    await ws.send_json(
        {"v": 1, "type": "error", "id": message.get("id"), "code": code, "message": text}
    )


async def silent(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    """A request the server never answers."""


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    server = FakeServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(fake: FakeServer) -> AsyncIterator[TelebridgeClient]:
    joined = await TelebridgeClient.connect(fake.base_url, "good", timeout=2.0)
    try:
        yield joined
    finally:
        await joined.close()


# -- pure helpers -------------------------------------------------------------------------------
def test_ws_url() -> None:
    assert ws_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/ws"
    assert ws_url("https://sfu.example.org/") == "wss://sfu.example.org/ws"
    assert ws_url("https://sfu.example.org/tb") == "wss://sfu.example.org/tb/ws"
    assert ws_url("ws://h:1/ws") == "ws://h:1/ws"
    with pytest.raises(ValueError):
        ws_url("ftp://h")


def test_offered_tracks_maps_mids_to_track_ids() -> None:
    sdp = "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0 1 2 3",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "a=mid:0",
            "a=sendonly",
            "a=msid:central t1",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=mid:1",
            "a=sendonly",
            "a=msid:central t2",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "a=mid:2",
            "a=inactive",
            "a=msid:central t3",
            "m=audio 0 UDP/TLS/RTP/SAVPF 111",
            "a=mid:3",
            "a=sendonly",
            "a=msid:site-1 t4",
            "",
        ]
    )
    assert offered_tracks(sdp) == {"0": "t1", "1": "t2"}


# -- joining, requests, errors ------------------------------------------------------------------
async def test_connect_sends_join_and_stores_the_answer(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    join = fake.of_type("join")[0]
    assert join == {"v": 1, "type": "join", "id": 1, "token": "good"}
    assert client.identity == "site-7" and client.role == "observer"
    assert client.room["name"] == "consult"
    assert set(client.participants) == {"central", "site-7"}
    assert set(client.tracks) == {"t1", "t2"}
    assert client.resume == "resume-1"
    assert client.connected


async def test_join_with_name_and_resume(fake: FakeServer) -> None:
    joined = await TelebridgeClient.connect(fake.base_url, "good", name="Site Seven", resume="abc")
    try:
        assert fake.of_type("join")[0] == {
            "v": 1,
            "type": "join",
            "id": 1,
            "token": "good",
            "resume": "abc",
            "name": "Site Seven",
        }
    finally:
        await joined.close()


async def test_event_right_behind_the_join_answer_is_not_lost(fake: FakeServer) -> None:
    async def join_then_event(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        await fake.answer_join(ws, message)
        await fake.event("track_published", {"track": track("t5", "central")})
        await fake.event("participant_joined", {"participant": participant("site-9")})

    fake.scripts["join"] = join_then_event
    joined = await TelebridgeClient.connect(fake.base_url, "good", timeout=2.0)
    try:
        await joined.wait_for("participant_joined", since=0)
        assert "t5" in joined.tracks and "site-9" in joined.participants
    finally:
        await joined.close()


async def test_join_refused_raises_protocol_error(fake: FakeServer) -> None:
    with pytest.raises(ProtocolError) as refused:
        await TelebridgeClient.connect(fake.base_url, "bad", timeout=2.0)
    assert refused.value.code == "unauthorized"
    assert refused.value.message == "bad token"


async def test_request_ids_increase_and_answers_match_out_of_order(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    held: list[tuple[web.WebSocketResponse, dict[str, Any]]] = []

    async def hold_then_answer_reversed(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        held.append((ws, message))
        if len(held) == 3:
            for ws_, held_message in reversed(held):
                await respond(ws_, held_message, {"echo": held_message["max_height"]})

    fake.scripts["preferences"] = hold_then_answer_reversed
    answers = await asyncio.gather(*(client.preferences(max_height=h) for h in (180, 360, 720)))
    assert [a["echo"] for a in answers] == [180, 360, 720]
    ids = [m["id"] for m in fake.received]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(isinstance(i, int) for i in ids)


async def test_error_raises_and_keeps_the_connection(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    async def forbid(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        await error(ws, message, "forbidden", "only the lead can change roles")

    fake.scripts["set_role"] = forbid
    with pytest.raises(ProtocolError) as refused:
        await client.set_role("central", "observer")
    assert (refused.value.code, refused.value.message) == (
        "forbidden",
        "only the lead can change roles",
    )
    assert fake.of_type("set_role")[0]["identity"] == "central"
    assert await client.ping() == {}
    assert client.connected


async def test_error_without_a_pending_request_is_an_event(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    waiting = asyncio.ensure_future(client.wait_for("error"))
    await asyncio.sleep(0)
    await fake.ws.send_json(
        {"v": 1, "type": "error", "id": None, "code": "bad_json", "message": "not JSON"}
    )
    assert (await waiting)["code"] == "bad_json"


async def test_request_timeout_and_late_answer_is_ignored(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    fake.scripts["end_room"] = silent
    with pytest.raises(TimeoutError):
        await client.request("end_room", timeout=0.2)
    late = fake.of_type("end_room")[0]
    await respond(fake.ws, late, {})  # too late: logged and dropped
    assert await client.ping() == {}
    assert client._pending == {}


async def test_pending_request_fails_when_the_socket_drops(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    fake.scripts["end_room"] = silent
    pending = asyncio.ensure_future(client.end_room())
    await fake.wait_message("end_room")
    await fake.ws.close(code=WSCloseCode.GOING_AWAY, message=b"restarting")
    with pytest.raises(ConnectionLost):
        await pending
    event = await client.wait_for("disconnected", since=0)
    assert event == {"code": WSCloseCode.GOING_AWAY, "reason": "restarting"}
    assert not client.connected


async def test_oversized_message_fails_locally(fake: FakeServer, client: TelebridgeClient) -> None:
    with pytest.raises(ProtocolError) as refused:
        await client.request("publish", sdp="a" * 70_000, tracks=[])
    assert refused.value.code == "too_large"
    assert fake.of_type("publish") == []
    assert await client.ping() == {}


async def test_garbage_frames_are_ignored(fake: FakeServer, client: TelebridgeClient) -> None:
    await fake.ws.send_str("not json")
    await fake.ws.send_str("[1, 2]")
    await fake.ws.send_json({"v": 1, "type": "mystery"})
    await fake.ws.send_json({"v": 1, "type": "response", "id": 999, "data": {}})
    await fake.event("hand_raised", {"identity": "central", "raised": True})
    await client.wait_for("hand_raised", since=0)
    assert client.connected


async def test_request_framing(fake: FakeServer, client: TelebridgeClient) -> None:
    await client.subscribe("t1")
    await client.subscribe(["t1", "t2"])
    await client.unsubscribe(["t2"])
    await client.raise_hand(True)
    await client.mute("t1", True)
    await client.unpublish("t1")
    await client.remove("central")
    await client.end_room()
    await client.preferences(max_layer="low")
    sent = [{k: v for k, v in m.items() if k not in ("v", "id")} for m in fake.received[1:]]
    assert sent == [
        {"type": "subscribe", "tracks": ["t1"]},
        {"type": "subscribe", "tracks": ["t1", "t2"]},
        {"type": "unsubscribe", "tracks": ["t2"]},
        {"type": "raise_hand", "raised": True},
        {"type": "mute", "track": "t1", "muted": True},
        {"type": "unpublish", "track": "t1"},
        {"type": "remove", "identity": "central"},
        {"type": "end_room"},
        {"type": "preferences", "max_layer": "low"},
    ]
    assert all(m["v"] == 1 for m in fake.received)
    assert "t1" not in client.tracks


# -- events and state ---------------------------------------------------------------------------
async def test_handlers_sync_async_and_wait_for(fake: FakeServer, client: TelebridgeClient) -> None:
    seen_sync: list[dict[str, Any]] = []
    seen_async: list[dict[str, Any]] = []
    done = asyncio.Event()

    client.on("hand_raised", seen_sync.append)

    @client.on("hand_raised")
    async def async_handler(data: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        seen_async.append(data)
        done.set()

    def broken(data: dict[str, Any]) -> None:
        raise RuntimeError("a handler bug must not stop the reader")

    client.on("hand_raised", broken)
    waiting = asyncio.ensure_future(
        client.wait_for("hand_raised", lambda d: d["identity"] == "central")
    )
    await asyncio.sleep(0)
    await fake.event("hand_raised", {"identity": "site-7", "raised": True})
    await fake.event("hand_raised", {"identity": "central", "raised": True})
    assert await waiting == {"identity": "central", "raised": True}
    await asyncio.wait_for(done.wait(), 2)
    assert [d["identity"] for d in seen_sync] == ["site-7", "central"]
    assert seen_async[0]["identity"] == "site-7"
    assert [e for e, _ in client.events] == ["hand_raised", "hand_raised"]

    client.off("hand_raised", seen_sync.append)
    await fake.event("hand_raised", {"identity": "central", "raised": False})
    await client.wait_for("hand_raised", lambda d: not d["raised"], since=0)
    assert len(seen_sync) == 2


async def test_wait_for_timeout_and_since(fake: FakeServer, client: TelebridgeClient) -> None:
    with pytest.raises(TimeoutError):
        await client.wait_for("room_ended", timeout=0.1)
    mark = client.mark()
    await fake.event("active_speaker", {"identity": "central", "track": "t2", "level": -20})
    await client.ping()  # the event is in before the ping's answer
    assert (await client.wait_for("active_speaker", since=mark, timeout=0.1))[
        "identity"
    ] == "central"
    with pytest.raises(TimeoutError):  # without since, only later events count
        await client.wait_for("active_speaker", timeout=0.1)


async def test_state_follows_events(fake: FakeServer, client: TelebridgeClient) -> None:
    roles: list[str | None] = []
    client.on("role_changed", lambda data: roles.append(client.role))

    await fake.event("participant_joined", {"participant": participant("site-12", "observer")})
    await fake.event("track_published", {"track": track("t3", "site-12", "audio", "microphone")})
    await fake.event("track_muted", {"track": "t3", "muted": True, "by": "central"})
    await fake.event("hand_raised", {"identity": "site-7", "raised": True})
    await fake.event("role_changed", {"identity": "site-7", "role": "participant", "by": "central"})
    await fake.event("active_speaker", {"identity": "central", "track": "t2", "level": -30})
    await fake.event(
        "connection_quality", {"identity": "central", "quality": "good", "loss": 0.01, "rtt": 0.02}
    )
    await client.ping()

    assert client.participants["site-12"]["role"] == "observer"
    assert client.tracks["t3"]["muted"] is True
    assert client.raised_hands == {"site-7"}
    assert client.participant["hand_raised"] is True
    assert client.role == "participant" and client.participants["site-7"]["role"] == "participant"
    assert roles == ["participant"]  # handlers see the state after the event
    assert client.active_speaker == "central" and client.speaker["level"] == -30
    assert client.quality["central"]["quality"] == "good"

    await fake.event("track_unpublished", {"track": "t1", "owner": "central"})
    await fake.event("participant_left", {"identity": "site-12", "reason": "left"})
    await fake.event("active_speaker", {"identity": None, "track": None, "level": -127})
    await client.ping()
    assert set(client.tracks) == {"t2"}  # t1 unpublished, t3 left with its owner
    assert "site-12" not in client.participants
    assert client.active_speaker is None

    await fake.event("room_ended", {"reason": "ended", "by": "central"})
    await client.wait_for("room_ended", since=0)
    assert client.ended == {"reason": "ended", "by": "central"}


async def test_removed_participant_remembers_why(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    await fake.event("participant_left", {"identity": "site-7", "reason": "removed"})
    await client.wait_for("participant_left", since=0)
    assert client.left_reason == "removed"


# -- resume -------------------------------------------------------------------------------------
async def test_reconnect_joins_with_resume(fake: FakeServer, client: TelebridgeClient) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.publish_pc = pc  # kept across the reconnect, media untouched
    await fake.ws.close(code=WSCloseCode.GOING_AWAY)
    await client.wait_for("disconnected", since=0)
    assert not client.connected and client.close_code == WSCloseCode.GOING_AWAY

    fake.participants = [participant("central", "lead")]  # someone left while we were away
    fake.tracks = []
    data = await client.reconnect()
    join = fake.of_type("join")[1]
    assert join["token"] == "good" and join["resume"] == "resume-1"
    assert join["id"] > fake.of_type("join")[0]["id"]
    assert data["resume"] == "resume-2" and client.resume == "resume-2"
    assert set(client.participants) == {"central", "site-7"}  # re-read, ourselves included
    assert client.tracks == {}
    assert client.publish_pc is pc
    assert [e for e, _ in client.events] == ["disconnected", "reconnected"]
    assert await client.ping() == {}


async def test_reconnect_while_connected_replaces_the_socket(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    await client.reconnect()
    assert fake.of_type("join")[1]["resume"] == "resume-1"
    assert [e for e, _ in client.events] == ["reconnected"]  # our own close is not a drop


async def test_auto_reconnect_after_a_drop(fake: FakeServer) -> None:
    joined = await TelebridgeClient.connect(fake.base_url, "good", auto_reconnect=True, timeout=2.0)
    try:
        transport = fake.ws._req.transport  # type: ignore[union-attr]
        assert transport is not None
        transport.abort()  # no close frame: a dead network
        await joined.wait_for("reconnected", since=0)
        assert fake.of_type("join")[1]["resume"] == "resume-1"
        assert joined.connected and joined.resume == "resume-2"
        assert await joined.ping() == {}

        await fake.ws.close(code=WSCloseCode.GOING_AWAY)  # each drop gets its attempt
        await joined.wait_for("reconnected", since=2)
        assert fake.of_type("join")[2]["resume"] == "resume-2"
    finally:
        await joined.close()


async def test_auto_reconnect_gives_up_after_one_failed_attempt(fake: FakeServer) -> None:
    joined = await TelebridgeClient.connect(fake.base_url, "good", auto_reconnect=True, timeout=2.0)
    try:

        async def refuse(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
            await error(ws, message, "not_found", "no such participant")

        fake.scripts["join"] = refuse
        await fake.ws.close(code=WSCloseCode.GOING_AWAY)
        failed = await joined.wait_for("reconnect_failed", since=0)
        assert "not_found" in failed["error"]
        await asyncio.sleep(0.2)
        assert len(fake.of_type("join")) == 2
        assert not joined.connected  # the unjoined socket of the refused resume is not kept
        assert [e for e, _ in joined.events] == ["disconnected", "reconnect_failed"]
    finally:
        await joined.close()


@pytest.mark.parametrize("code", [1000, 4401, 4410])
async def test_no_auto_reconnect_after_a_deliberate_close(fake: FakeServer, code: int) -> None:
    joined = await TelebridgeClient.connect(fake.base_url, "good", auto_reconnect=True, timeout=2.0)
    try:
        await fake.ws.close(code=code)
        assert (await joined.wait_for("disconnected", since=0))["code"] == code
        await asyncio.sleep(0.2)
        assert len(fake.of_type("join")) == 1
    finally:
        await joined.close()


async def test_no_auto_reconnect_after_room_ended(fake: FakeServer) -> None:
    joined = await TelebridgeClient.connect(fake.base_url, "good", auto_reconnect=True, timeout=2.0)
    try:
        await fake.event("room_ended", {"reason": "ended", "by": "central"})
        await joined.wait_for("room_ended", since=0)
        await fake.ws.close(code=WSCloseCode.GOING_AWAY)
        await joined.wait_for("disconnected", since=0)
        await asyncio.sleep(0.2)
        assert len(fake.of_type("join")) == 1
    finally:
        await joined.close()


async def test_leave_sends_leave_and_does_not_reconnect(fake: FakeServer) -> None:
    async def leave(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        await respond(ws, message, {})
        await ws.close(code=1000)

    fake.scripts["leave"] = leave
    joined = await TelebridgeClient.connect(fake.base_url, "good", auto_reconnect=True, timeout=2.0)
    await joined.leave()
    assert fake.of_type("leave")[0]["type"] == "leave"
    assert not joined.connected
    await asyncio.sleep(0.2)
    assert len(fake.of_type("join")) == 1
    assert "disconnected" not in [e for e, _ in joined.events]


# -- offer/answer signaling (SDP only: no media flows) ------------------------------------------
async def test_publish_offers_new_tracks_and_renegotiates_on_the_same_pc(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    next_id = iter(["t10", "t11"])
    mine: list[dict[str, Any]] = []

    async def answer_publish(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        await answerer.setRemoteDescription(RTCSessionDescription(message["sdp"], "offer"))
        await answerer.setLocalDescription(await answerer.createAnswer())
        mine.extend(
            {
                "id": next(next_id),
                "owner": "site-7",
                "kind": "video" if t["source"] == "camera" else "audio",
                "source": t["source"],
                "muted": False,
            }
            for t in message["tracks"]
        )
        # Like the real server, the answer lists every track the participant publishes.
        await respond(ws, message, {"sdp": answerer.localDescription.sdp, "tracks": list(mine)})

    fake.scripts["publish"] = answer_publish
    try:
        first = await client.publish(video=MovingVideoTrack())
        pc = client.publish_pc
        second = await client.publish(audio=SineAudioTrack())
        assert client.publish_pc is pc
        offers = fake.of_type("publish")
        assert offers[0]["tracks"] == [{"mid": "0", "source": "camera"}]
        assert offers[1]["tracks"] == [{"mid": "1", "source": "microphone"}]
        assert offers[0]["sdp"].count("m=") == 1 and offers[1]["sdp"].count("m=") == 2
        assert "a=candidate" in offers[1]["sdp"] or "a=end-of-candidates" in offers[1]["sdp"]
        assert [t["id"] for t in first + second] == ["t10", "t11"]
        assert client.published["t10"].mid == "0" and client.published["t11"].source == "microphone"
        assert client.tracks["t11"]["owner"] == "site-7"
        with pytest.raises(ValueError):
            await client.publish()
    finally:
        await answerer.close()


async def test_offer_event_is_answered_and_tracks_are_keyed_by_msid(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        offerer.addTransceiver(MovingVideoTrack(), direction="sendonly")
        offerer.addTransceiver(SineAudioTrack(), direction="sendonly")
        await offerer.setLocalDescription(await offerer.createOffer())
        lines = []
        for line in offerer.localDescription.sdp.splitlines():
            if line.startswith("a=msid:"):
                line = "a=msid:central " + (
                    "t1" if len([x for x in lines if x.startswith("a=msid:")]) == 0 else "t2"
                )
            lines.append(line)
        offer = "\r\n".join(lines) + "\r\n"

        await fake.event("offer", {"sdp": offer, "version": 3})
        answer = await fake.wait_message("answer")
        assert answer["version"] == 3 and answer["sdp"].startswith("v=0")
        assert "a=recvonly" in answer["sdp"]
        renegotiated = await client.wait_for("renegotiated", since=0)
        assert renegotiated == {"version": 3, "tracks": ["t1", "t2"]}
        assert (
            client.remote_tracks["t1"].kind == "video"
            and client.remote_tracks["t2"].kind == "audio"
        )
        assert client.remote_mids == {"0": "t1", "1": "t2"}
        assert client.offer_version == 3
        assert (await client.wait_remote_track("t1", timeout=1)) is client.remote_tracks["t1"]
        assert sorted(d["track"] for e, d in client.events if e == "remote_track") == ["t1", "t2"]
    finally:
        await offerer.close()


async def test_refused_publish_leaves_nothing_behind(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    refusals = [True]
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))

    async def publish(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        if refusals and refusals.pop():
            await error(ws, message, "forbidden", "observers cannot publish")
            return
        await answerer.setRemoteDescription(RTCSessionDescription(message["sdp"], "offer"))
        await answerer.setLocalDescription(await answerer.createAnswer())
        mine = {
            "id": "t20",
            "owner": "site-7",
            "kind": "audio",
            "source": "microphone",
            "muted": False,
        }
        await respond(ws, message, {"sdp": answerer.localDescription.sdp, "tracks": [mine]})

    fake.scripts["publish"] = publish
    microphone = SineAudioTrack()
    try:
        with pytest.raises(ProtocolError):
            await client.publish(audio=microphone)
        assert client.publish_pc is None and client.published == {}
        assert microphone.readyState == "live"  # still the caller's to publish once allowed
        published = await client.publish(audio=microphone)
        offer = fake.of_type("publish")[1]
        assert offer["sdp"].count("m=") == 1 and offer["tracks"] == [
            {"mid": "0", "source": "microphone"}
        ]
        assert [t["id"] for t in published] == ["t20"]
    finally:
        await answerer.close()


async def test_unpublished_section_is_offered_inactive(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    ids = iter(["t30", "t31"])

    async def publish(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        await answerer.setRemoteDescription(RTCSessionDescription(message["sdp"], "offer"))
        await answerer.setLocalDescription(await answerer.createAnswer())
        source = message["tracks"][0]["source"]
        made = {
            "id": next(ids),
            "owner": "site-7",
            "kind": "video",
            "source": source,
            "muted": False,
        }
        await respond(ws, message, {"sdp": answerer.localDescription.sdp, "tracks": [made]})

    fake.scripts["publish"] = publish
    try:
        await client.publish(video=MovingVideoTrack())
        await client.unpublish("t30")
        assert "t30" not in client.published
        await client.publish(screen=MovingVideoTrack())
        offer = fake.of_type("publish")[1]["sdp"]
        sections = offer.split("m=")[1:]
        assert len(sections) == 2
        assert "a=inactive" in sections[0] and "a=sendonly" in sections[1]
        assert list(client.published) == ["t31"] and client.published["t31"].mid == "1"
    finally:
        await answerer.close()


async def test_end_room_succeeds_when_the_server_closes_first(
    fake: FakeServer, client: TelebridgeClient
) -> None:
    async def end(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        await fake.event("room_ended", {"reason": "ended", "by": "site-7"})
        await ws.close(code=4410, message=b"room ended")

    fake.scripts["end_room"] = end
    assert await client.end_room() == {}
    assert client.ended == {"reason": "ended", "by": "site-7"}
    assert client.close_code == 4410
