"""One room across two media workers, and admission control, through a real server.

A WHIP publisher (aiortc) lives on its room's home worker; WHEP viewers and a /ws observer
are placed on the least loaded worker, so some land on the other one, where the
publisher's tracks arrive through a pipe. Every viewer must decode the publisher's video;
a viewer joining the far worker late needs a keyframe that only the publisher can make
(aiortc's encoder makes one only when asked), so its first frame proves the keyframe
request crossed the pipe back. Admission control refuses new sessions at once when the
configured limit is reached, while admitted viewers keep receiving.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import aiohttp
import pytest

from signaling.client import TelebridgeClient
from tests.conftest import RunningServer
from tests.peers import WhepViewer, WhipError, start_whep_viewer, start_whip_publisher
from tests.test_api import AUTH, api_config

pytestmark = pytest.mark.timeout(180)

ROOM = "grand-rounds"


async def metric(server: RunningServer, name: str, labels: dict[str, str]) -> float:
    """One sample of /metrics (0 when absent)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base_url}/metrics") as response:
            text = await response.text()
    for match in re.finditer(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if found == labels:
            return float(match.group(2))
    return 0.0


async def wait_metric(
    server: RunningServer, name: str, labels: dict[str, str], value: float, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while (got := await metric(server, name, labels)) != value:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}{labels} is {got}, not {value}")
        await asyncio.sleep(0.2)


async def worker_ports(server: RunningServer) -> list[int]:
    """Each worker's UDP port, from /healthz."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base_url}/healthz") as response:
            body = await response.json()
    return [int(w["port"]) for w in body["workers"]]


async def test_a_room_spans_two_workers_and_every_viewer_gets_the_publishers_video(tmp_path):
    server = RunningServer(tmp_path, workers=2)
    publisher = await start_whip_publisher(
        server.base_url, ROOM, server.token(ROOM, "theatre-1", "lead")
    )
    viewers: list[WhepViewer] = []
    observer: TelebridgeClient | None = None
    try:
        await publisher.wait_connected()
        for i in range(2):
            viewer = await start_whep_viewer(
                server.base_url, ROOM, server.token(ROOM, f"site-{i}", "observer")
            )
            viewers.append(viewer)
            await viewer.wait_frames(5, timeout=30)
        ports = [v.server_port() for v in viewers]
        assert len(set(ports)) == 2, f"the two viewers share one worker ({ports})"
        home_port = ports[0]  # the first viewer goes to the home worker (a tie, no pipe)
        far = (await worker_ports(server)).index(ports[1])
        await wait_metric(
            server, "telebridge_worker_load", {"worker": str(far), "measure": "pipes_in"}, 2
        )

        # A /ws observer lands on a worker too, and decodes the video from there.
        observer = await TelebridgeClient.connect(
            server.base_url, server.token(ROOM, "ws-site", "observer")
        )
        video = next(t for t in observer.tracks.values() if t["kind"] == "video")
        await observer.subscribe([video["id"]])
        await observer.wait_remote_track(video["id"])
        observer.count_frames(video["id"])
        await observer.wait_frames(video["id"], 10, timeout=30)

        # Well after the pipe's first keyframe: a new viewer on the far worker needs one
        # asked for across the pipe.
        await asyncio.sleep(3)
        late = await start_whep_viewer(
            server.base_url, ROOM, server.token(ROOM, "late-site", "observer")
        )
        viewers.append(late)
        if late.server_port() == home_port:  # placement put it home: one more goes far
            late = await start_whep_viewer(
                server.base_url, ROOM, server.token(ROOM, "later-site", "observer")
            )
            viewers.append(late)
        assert late.server_port() == ports[1], "a late viewer on the far worker"
        await late.wait_frames(5, timeout=30)
        for viewer in viewers:
            before = viewer.video_frames
            await viewer.wait_frames(before + 10, timeout=30)

        # The publisher leaves: the pipes close with its producers, far viewers end too.
        await publisher.close()
        await wait_metric(
            server, "telebridge_worker_load", {"worker": str(far), "measure": "pipes_in"}, 0
        )
        assert "closed: its other end closed" in server.logs()
    finally:
        for viewer in viewers:
            await viewer.close()
        if observer is not None:
            await observer.close()
        await publisher.close(delete=False)
        server.stop()


async def test_admission_refuses_new_sessions_at_once_and_admitted_viewers_keep_receiving(
    tmp_path,
):
    server = RunningServer(tmp_path, workers=1, extra="admission_max_consumers = 3")
    publisher = await start_whip_publisher(
        server.base_url, ROOM, server.token(ROOM, "theatre-1", "lead")
    )
    viewers: list[WhepViewer] = []
    observer: TelebridgeClient | None = None
    try:
        await publisher.wait_connected()
        for i in range(2):  # audio + video each: 2, then 4 consumers
            viewer = await start_whep_viewer(
                server.base_url, ROOM, server.token(ROOM, f"site-{i}", "observer")
            )
            viewers.append(viewer)
            await viewer.wait_frames(5, timeout=30)

        with pytest.raises(WhipError) as refused:
            await start_whep_viewer(server.base_url, ROOM, server.token(ROOM, "site-x", "observer"))
        assert refused.value.status == 503
        assert "server_busy" in refused.value.body
        async with aiohttp.ClientSession() as http:  # the header a WHEP client retries by
            started = time.monotonic()
            async with http.post(
                f"{server.base_url}/whep/{ROOM}",
                data="v=0\r\n",
                headers={
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {server.token(ROOM, 'site-y', 'observer')}",
                },
            ) as response:
                assert response.status == 503
                assert int(response.headers["Retry-After"]) > 0
            # At once, not after a wait for media: generous for a loaded CI machine.
            assert time.monotonic() - started < 5.0

        # A second publisher (the presenting site of a consult) is what the viewers came
        # for: the consumer limit, which refuses viewers, does not refuse it.
        presenter = await start_whip_publisher(
            server.base_url, ROOM, server.token(ROOM, "district-presenter", "participant")
        )
        await presenter.wait_connected()
        await presenter.close()

        observer = await TelebridgeClient.connect(
            server.base_url, server.token(ROOM, "ws-site", "observer")
        )
        video = next(t for t in observer.tracks.values() if t["kind"] == "video")
        with pytest.raises(Exception, match="server_busy"):
            await observer.subscribe([video["id"]])

        for viewer in viewers:  # those admitted keep going
            before = viewer.video_frames
            await viewer.wait_frames(before + 20, timeout=30)
        assert await metric(server, "telebridge_sessions_refused_total", {"kind": "view"}) >= 2
        assert await metric(server, "telebridge_sessions_refused_total", {"kind": "subscribe"}) == 1
        assert (
            await metric(server, "telebridge_worker_load", {"worker": "0", "measure": "consumers"})
            == 4
        )
    finally:
        for viewer in viewers:
            await viewer.close()
        if observer is not None:
            await observer.close()
        await publisher.close(delete=False)
        server.stop()


async def test_when_the_home_worker_dies_far_viewers_lose_media_like_viewers_on_it(tmp_path):
    server = RunningServer(tmp_path, workers=2, extra=api_config())
    publisher = await start_whip_publisher(
        server.base_url, ROOM, server.token(ROOM, "theatre-1", "lead")
    )
    viewers: list[WhepViewer] = []
    observer: TelebridgeClient | None = None
    try:
        await publisher.wait_connected()
        near = await start_whep_viewer(
            server.base_url, ROOM, server.token(ROOM, "site-near", "observer")
        )
        viewers.append(near)
        await near.wait_frames(5, timeout=30)
        observer = await TelebridgeClient.connect(
            server.base_url, server.token(ROOM, "ws-site", "observer")
        )
        video = next(t for t in observer.tracks.values() if t["kind"] == "video")
        await observer.subscribe([video["id"]])
        await observer.wait_remote_track(video["id"])
        observer.count_frames(video["id"])
        await observer.wait_frames(video["id"], 5, timeout=30)
        far = await start_whep_viewer(
            server.base_url, ROOM, server.token(ROOM, "site-far", "observer")
        )
        viewers.append(far)
        await far.wait_frames(5, timeout=30)
        assert far.server_port() != near.server_port(), "one viewer on each worker"
        assert observer.subscribe_pc is not None
        offer = observer.subscribe_pc.remoteDescription.sdp
        assert f" {far.server_port()} typ host" in offer, "the /ws observer is on the far worker"

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.base_url}/healthz") as response:
                workers = (await response.json())["workers"]
        (home,) = [w for w in workers if w["port"] == near.server_port()]
        assert ROOM in home["rooms"]
        mark = observer.mark()
        os.kill(home["pid"], signal.SIGKILL)

        lost = await observer.wait_for("media_lost", since=mark, timeout=20)
        assert lost["connection"] == "subscribe"
        assert video["id"] in [t["id"] for t in lost["tracks"]]
        deadline = time.monotonic() + 20
        while {"site-near", "site-far"} & set(await participants(server)):
            assert time.monotonic() < deadline, "the WHEP viewers should have left"
            await asyncio.sleep(0.2)
    finally:
        for viewer in viewers:
            await viewer.close(delete=False)
        if observer is not None:
            await observer.close()
        await publisher.close(delete=False)
        server.stop()


async def participants(server: RunningServer) -> dict[str, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{server.base_url}/api/v1/rooms/{ROOM}/participants", headers={"Authorization": AUTH}
        ) as response:
            if response.status == 404:
                return {}
            assert response.status == 200
            body = await response.json()
    return {p["identity"]: p for p in body["participants"]}


async def test_a_pipe_closes_when_its_far_worker_has_no_viewer_left(tmp_path):
    server = RunningServer(tmp_path, workers=2)
    publisher = await start_whip_publisher(
        server.base_url, ROOM, server.token(ROOM, "theatre-1", "lead")
    )
    viewers: list[WhepViewer] = []
    try:
        await publisher.wait_connected()
        for i in range(2):
            viewer = await start_whep_viewer(
                server.base_url, ROOM, server.token(ROOM, f"site-{i}", "observer")
            )
            viewers.append(viewer)
            await viewer.wait_frames(5, timeout=30)
        near, far_viewer = viewers
        far = (await worker_ports(server)).index(far_viewer.server_port())
        assert far_viewer.server_port() != near.server_port()
        pipes = {"worker": str(far), "measure": "pipes_in"}
        await wait_metric(server, "telebridge_worker_load", pipes, 2)

        viewers.remove(far_viewer)
        await far_viewer.close()  # the far worker's last viewer leaves
        await wait_metric(server, "telebridge_worker_load", pipes, 0, timeout=30)
        before = near.video_frames  # the home worker's viewer is untouched
        await near.wait_frames(before + 10, timeout=30)
    finally:
        for viewer in viewers:
            await viewer.close()
        await publisher.close(delete=False)
        server.stop()
