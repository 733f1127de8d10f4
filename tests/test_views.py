"""Role-aware views of large rooms (signaling/views.py): 300 observing sites over real
WebSockets, a lead that sees everyone and every raised hand, a coalesced observer count,
paging that lists everyone exactly once, and each event serialised once for the room."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling import views
from signaling.client import TelebridgeClient
from signaling.rooms import Participant, Room, RoomError, RoomOptions
from tests.conftest import RunningServer

OBSERVERS = 300
THRESHOLD = 50  # the default observer_view


class Site:
    """A /ws client that keeps every message it is sent."""

    def __init__(self, server: RunningServer, room: str, identity: str, role: str) -> None:
        self.server = server
        self.token = server.token(room, identity, role)
        self.identity = identity
        self.events: list[dict[str, Any]] = []
        self.answers: dict[int, dict[str, Any]] = {}
        self.joined: dict[str, Any] = {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.ids = 0

    async def join(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        self.ws = await http.ws_connect(self.server.base_url.replace("http", "ws") + "/ws")
        self.reader = asyncio.ensure_future(self._read())
        self.joined = await self.request("join", token=self.token)
        return self.joined

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            if message["type"] == "event":
                self.events.append(message)
            else:
                self.answers[message.get("id", -1)] = message

    async def call(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The answer, a response or an error (the events sent before it have arrived)."""
        assert self.ws is not None
        self.ids += 1
        request_id = self.ids
        await self.ws.send_str(json.dumps({"v": 1, "type": kind, "id": request_id, **fields}))
        await wait_until(lambda: request_id in self.answers, 30, f"an answer to {kind}")
        return self.answers.pop(request_id)

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        answer = await self.call(kind, **fields)
        assert answer["type"] == "response", answer
        data: dict[str, Any] = answer["data"]
        return data

    def got(self, event: str, check: Callable[[dict[str, Any]], bool] = lambda d: True) -> list:
        return [e["data"] for e in self.events if e["event"] == event and check(e["data"])]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


def scrape(server: RunningServer, name: str) -> float:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


API_SECRET = secrets.token_urlsafe(24)


@pytest.fixture
async def big_room(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, Site, list[Site], float]]:
    """A lead and 300 observers joined into one room (20 joins in flight at once); the
    seconds the joins took."""
    server = RunningServer(
        tmp_path,
        extra=(
            "[ws]\njoin_limit = 0\nidentity_join_limit = 0\n"
            f'[[api.keys]]\nkey = "test"\nsecret = "{API_SECRET}"\n'
        ),
    )
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    lead = Site(server, "grand-round", "central", "lead")
    sites = [Site(server, "grand-round", f"site-{n}", "observer") for n in range(OBSERVERS)]
    try:
        await lead.join(http)
        started = time.monotonic()
        for n in range(0, OBSERVERS, 20):
            await asyncio.gather(*(s.join(http) for s in sites[n : n + 20]))
        yield server, lead, sites, time.monotonic() - started
    finally:
        for site in [lead, *sites]:
            await site.close()
        await http.close()
        server.stop()


async def test_observers_see_the_stage_and_a_count_and_the_lead_sees_everyone(big_room):
    server, lead, sites, took = big_room
    await wait_until(
        lambda: len(lead.got("participant_joined")) == OBSERVERS, 60, "the lead saw every join"
    )
    assert lead.joined["view"] == "full"
    last = sites[-1]
    await wait_until(
        lambda: any(d["count"] == OBSERVERS for d in last.got("observer_count")),
        10,
        "the last site got the final observer count",
    )
    # Past the threshold, observers no longer hear of each other: a site that joined into
    # the compact room got no join at all, and its answer listed the lead and itself.
    compact = [s for s in sites if s.joined["view"] == "compact"]
    assert len(compact) == OBSERVERS - THRESHOLD  # from the 51st on
    for site in compact:
        assert site.got("participant_joined") == [], site.identity
        listed = {p["identity"] for p in site.joined["participants"]}
        assert listed == {"central", site.identity}, listed
        assert site.joined["observers"] > THRESHOLD
    # The first observers joined the full view and were told when it turned compact.
    early = [s for s in sites if s.joined["view"] == "full"]
    assert len(early) == THRESHOLD
    for site in early:
        assert site.got("view") == [{"view": "compact", "observers": THRESHOLD + 1}]
        assert len(site.got("participant_joined")) <= THRESHOLD
    # The count is coalesced: at most about one a second, not one per join.
    for site in (early[0], last):
        counts = site.got("observer_count")
        assert 1 <= len(counts) <= took + 3, (len(counts), took)
    # 300 joins in the room cost about 300 join events, not 300 * 300 / 2.
    total = sum(len(s.got("participant_joined")) for s in sites)
    assert total <= THRESHOLD * (THRESHOLD + 1), total


async def test_the_lead_sees_a_raised_hand_and_a_role_change_is_serialised_once(big_room):
    server, lead, sites, _took = big_room
    hand, bystander = sites[-1], sites[-2]
    await hand.request("raise_hand", raised=True)
    await wait_until(
        lambda: lead.got("hand_raised", lambda d: d["identity"] == hand.identity),
        10,
        "the lead saw the raised hand",
    )
    assert hand.got("hand_raised") == [{"identity": hand.identity, "raised": True}]
    await bystander.request("ping")  # anything queued to it before now has arrived
    assert bystander.got("hand_raised") == []

    # The lead gives the hand the floor: one role_changed for the whole room, serialised
    # once and queued to every connection; the new participant is on every stage.
    await wait_until(lambda: len(lead.got("participant_joined")) == OBSERVERS, 60, "all joined")
    await asyncio.sleep(views.COUNT_INTERVAL * 1.5)  # a count pending from the joins goes
    serialised = scrape(server, "telebridge_ws_events_serialised_total")
    sent = scrape(server, "telebridge_ws_events_sent_total")
    await lead.request("set_role", identity=hand.identity, role="participant")
    for site in sites:
        await wait_until(
            lambda site=site: site.got("observer_count", lambda d: d["count"] == OBSERVERS - 1),
            10,
            f"{site.identity} got the new count",
        )
    changed = bystander.got("role_changed")
    assert [(d["identity"], d["role"], d["participant"]["name"]) for d in changed] == [
        (hand.identity, "participant", hand.identity)
    ]
    assert hand.got("view")[-1] == {"view": "full", "observers": OBSERVERS - 1}
    # role_changed, the hand coming down, the new count: three events, each to everyone.
    assert scrape(server, "telebridge_ws_events_serialised_total") - serialised == 3
    assert scrape(server, "telebridge_ws_events_sent_total") - sent == 3 * (OBSERVERS + 1)


async def test_paging_lists_everyone_exactly_once_over_ws_and_rest(big_room):
    server, lead, sites, _took = big_room
    everyone = {"central"} | {s.identity for s in sites}
    site = sites[-1]
    listed: list[str] = []
    cursor = None
    pages = 0
    while True:
        fields: dict[str, Any] = {"limit": 37}
        if cursor is not None:
            fields["cursor"] = cursor
        page = await site.request("list_participants", **fields)
        assert page["total"] == OBSERVERS + 1 and len(page["participants"]) <= 37
        listed += [p["identity"] for p in page["participants"]]
        cursor, pages = page["next"], pages + 1
        if cursor is None:
            break
    assert pages == -(-(OBSERVERS + 1) // 37)
    assert len(listed) == len(set(listed)) and set(listed) == everyone

    auth = base64.b64encode(f"test:{API_SECRET}".encode()).decode()
    url = f"{server.base_url}/api/v1/rooms/grand-round/participants"
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {auth}"}) as http:
        rest: list[str] = []
        query = "?limit=100"
        while True:
            async with http.get(url + query) as response:
                assert response.status == 200
                body = await response.json()
            rest += [p["identity"] for p in body["participants"]]
            if body["next"] is None:
                break
            query = f"?limit=100&cursor={body['next']}"
        assert len(rest) == len(set(rest)) and set(rest) == everyone
        async with http.get(url + "?cursor=not-a-cursor!") as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "invalid"
    # The Python SDK keeps the compact view and pages through everyone.
    sdk = await TelebridgeClient.connect(
        server.base_url, server.token("grand-round", "sdk-site", "observer")
    )
    try:
        assert sdk.view == "compact" and sdk.observers == OBSERVERS + 1
        assert set(sdk.participants) == {"central", "sdk-site"}
        assert {p["identity"] for p in await sdk.all_participants(limit=128)} == everyone | {
            "sdk-site"
        }
        await lead.request("set_role", identity=sites[0].identity, role="participant")
        await wait_until(
            lambda: sdk.participants.get(sites[0].identity, {}).get("role") == "participant",
            10,
            "the promoted site on the SDK's stage",
        )
    finally:
        await sdk.close()

    refused = await site.call("list_participants", limit=0)
    assert refused["type"] == "error" and refused["code"] == "invalid"
    refused = await site.call("list_participants", cursor="1-x", limit=5)
    assert refused["data"]["participants"][0]["identity"] == "central"  # a position, not a name


# -- sans-I/O: the rules and the pager -------------------------------------------------------


def _room(observers: int, threshold: int = 2) -> Room:
    room = Room(name="r", options=RoomOptions(observer_view=threshold))
    room.add(Participant(identity="lead", name="Lead", role="lead", joined_at=1.0))
    for n in range(observers):
        room.add(Participant(identity=f"o{n}", name=f"O{n}", role="observer", joined_at=2.0 + n))
    return room


def test_an_observers_comings_and_goings_skip_the_compact_view_but_not_the_stage():
    observers = {"o1"}
    joined = {"participant": {"identity": "o2", "role": "observer"}}
    assert views.audience("participant_joined", joined, observers) == views.Audience(compact=False)
    lead = {"participant": {"identity": "lead", "role": "lead"}}
    assert views.audience("participant_joined", lead, observers) == views.EVERYONE
    for event in ("participant_left", "hand_raised", "connection_quality"):
        assert views.audience(event, {"identity": "o1"}, observers) == views.Audience(
            compact=False, also="o1"
        )
        assert views.audience(event, {"identity": "lead"}, observers) == views.EVERYONE
    for event in ("role_changed", "track_published", "active_speaker", "room_ended"):
        assert views.audience(event, {"identity": "o1"}, observers) == views.EVERYONE


def test_the_room_keeps_its_head_counts_and_stage_through_joins_leaves_and_role_changes():
    room = _room(3)
    assert (room.publishers(), room.viewers(), [p.identity for p in room.stage()]) == (
        1,
        3,
        ["lead"],
    )
    assert views.goes_compact(room) and not views.goes_compact(_room(2))
    room.set_role(room.participants["o1"], "participant")
    assert [p.identity for p in room.stage()] == ["lead", "o1"] and room.viewers() == 2
    room.discard("o1")
    room.discard("lead")
    assert (room.publishers(), room.viewers(), room.stage()) == (0, 2, [])
    assert room.summary()["by_role"] == {"lead": 0, "participant": 0, "observer": 2}
    assert views.join_view(room, room.participants["o2"], views.COMPACT) == [
        room.participants["o2"]
    ]


def test_pages_survive_leaves_between_them_and_refuse_bad_cursors_and_limits():
    room = _room(10)
    first, cursor = views.page(room, None, 4)
    assert [p.identity for p in first] == ["lead", "o0", "o1", "o2"] and cursor
    room.discard("o2")  # the cursor's own participant leaves: the next page goes on
    room.discard("o5")
    second, cursor = views.page(room, cursor, 4)
    assert [p.identity for p in second] == ["o3", "o4", "o6", "o7"] and cursor
    third, cursor = views.page(room, cursor, 4)
    assert [p.identity for p in third] == ["o8", "o9"] and cursor is None
    for bad in ("x", "12", "-o1", "1-a/b"):
        with pytest.raises(RoomError):
            views.page(room, bad)
    for limit in (0, views.PAGE_MAX + 1):
        with pytest.raises(RoomError):
            views.page(room, None, limit)


def test_the_count_is_sent_once_per_interval_and_only_when_it_changed():
    counts = views.CountCoalescer(interval=1.0)
    assert counts.changed("a", 10.0) == 11.0
    assert counts.changed("a", 10.2) is None and counts.changed("b", 10.3) is None
    assert counts.flush({"a": 5, "b": 7}) == {"a": 5, "b": 7}
    assert counts.changed("a", 11.5) == 12.5
    assert counts.flush({"a": 5}) == {}  # a join and a leave: nothing new to say
