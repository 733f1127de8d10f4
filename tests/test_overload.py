"""A worker that is behind stops probing and takes no new sessions (sfu/overload.py).

Its own forwarding delay reads as congestion in every viewer's estimator; if each viewer
then probed, the padding would add to the overload (62k padding packets in 20 s were
measured at 2,000 sites). These tests drive the state from load figures, as the worker's
load report does, and check the layer controller and the admission rule that read it.
"""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest

from sfu import rtcp
from sfu.layers import Track
from sfu.overload import CONFIRM, MAX_LAG, MAX_QUEUE, Overload
from sfu.timers import TimerQueue
from tests.conftest import RunningServer
from tests.peers import WhepViewer, WhipError, start_whep_viewer, start_whip_publisher
from tests.test_pipes import ROOM, metric, wait_metric

from .sansio import PUBLISHER_ADDR, VIEWER_ADDR, VP8_KEY, consumer, plain, producer, rtp

RATES = (150_000.0, 500_000.0, 1_500_000.0)


async def healthz(server: RunningServer) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base_url}/healthz") as response:
            return await response.json()


def test_a_lone_late_report_is_not_overload_but_a_run_of_them_is():
    load = Overload()
    assert not load.update(loop_lag=1.0, queue_bytes=0), "one GC pause is not overload"
    assert not load.update(loop_lag=0.0, queue_bytes=0)
    for _ in range(CONFIRM - 1):
        assert not load.update(loop_lag=MAX_LAG * 2, queue_bytes=0)
    assert load.update(loop_lag=MAX_LAG * 2, queue_bytes=0)
    assert load.episodes == 1


def test_a_filling_receive_queue_is_overload_too():
    load = Overload()
    for _ in range(CONFIRM):
        load.update(loop_lag=0.0, queue_bytes=MAX_QUEUE + 1)
    assert load.overloaded


def test_overload_ends_only_after_a_run_of_reports_well_under_the_thresholds():
    load = Overload()
    for _ in range(CONFIRM):
        load.update(loop_lag=MAX_LAG * 2, queue_bytes=0)
    # Just under the threshold is not "well under": no flapping at the edge.
    for _ in range(CONFIRM * 2):
        assert load.update(loop_lag=MAX_LAG * 0.9, queue_bytes=0)
    for _ in range(CONFIRM - 1):
        assert load.update(loop_lag=0.001, queue_bytes=0)
    assert not load.update(loop_lag=0.001, queue_bytes=0)
    assert load.episodes == 1


def _viewer_below_its_cap():
    """A viewer transport with one video consumer that has forwarded a keyframe (padding
    goes on its RTX stream after the last packet), and the layer control deciding for it."""
    timers = TimerQueue()
    publisher, _ = plain(timers, "pub", remote=PUBLISHER_ADDR)
    viewer, sock = plain(timers, "view")
    watched = consumer(viewer, producer(publisher))
    publisher.receive(rtp(0x1111, 1, 0, VP8_KEY, marker=True), PUBLISHER_ADDR, 1.0)
    assert len(sock.rtp()) == 1
    return viewer, sock, watched


def _probe_wanted(viewer, watched, now: float) -> None:
    """The estimate carries the lowest layer only; the viewer wants the top one."""
    viewer.layers._maybe_probe(
        budget=200_000.0,
        audio=40_000.0,
        videos=[watched],
        tracks=[Track(RATES, 2)],
        roomy=[0],
        holding=False,
        now=now,
        currents=[0],  # it is on the lowest layer
    )


def test_below_the_ceiling_a_probe_grows_carefully_until_the_ceiling_is_old():
    """Where the link last said no (a failed probe, or the rate a viewer was sent when it
    went down) probes grow 1.3x, not 2x, for CEILING_FOR; a weak spell's failures keep
    it fresh, an old one no longer holds a recovered link back."""
    from sfu.layers import CEILING_FOR

    for at, goal in ((11.0, 260_000), (10.0 + CEILING_FOR + 1, 400_000)):
        viewer, _, watched = _viewer_below_its_cap()
        viewer.layers.probe_ceiling, viewer.layers.ceiling_at = 1_500_000.0, 10.0
        _probe_wanted(viewer, watched, now=at)
        assert viewer.layers.probe_goal == pytest.approx(goal), at


def test_an_overloaded_worker_starts_no_probe_and_resumes_probing_after():
    viewer, _, watched = _viewer_below_its_cap()
    for _ in range(CONFIRM):
        viewer.load.update(loop_lag=MAX_LAG * 3, queue_bytes=0)
    _probe_wanted(viewer, watched, now=10.0)
    assert viewer.layers.probe_goal == 0, "no padding while the worker itself is behind"
    assert viewer.layers.probes == 0
    for _ in range(CONFIRM):
        viewer.load.update(loop_lag=0.0, queue_bytes=0)
    _probe_wanted(viewer, watched, now=11.0)
    assert viewer.layers.probe_goal > 0, "once it has caught up, a viewer below its cap probes"
    assert viewer.layers.probes == 1


def test_a_worker_at_its_cpu_line_starts_no_probe():
    """Before it is behind, a worker using (or waiting for) nearly all of a core has no
    room for padding either; probing resumes with the first report under the line."""
    viewer, _, watched = _viewer_below_its_cap()
    viewer.load.update(loop_lag=0.0, queue_bytes=0, busy=True)
    assert not viewer.load.overloaded
    _probe_wanted(viewer, watched, now=10.0)
    assert viewer.layers.probes == 0, "no padding from a worker at its line"
    viewer.load.update(loop_lag=0.0, queue_bytes=0, busy=False)
    _probe_wanted(viewer, watched, now=11.0)
    assert viewer.layers.probes == 1


def test_a_viewer_already_on_its_cap_is_not_probed_for_headroom():
    """A thumbnail observer (cap: the lowest layer) whose estimate wobbles just under its
    layer plus the upgrade headroom gets no padding: it has nothing to climb to. A viewer
    below its cap is probed as before."""
    viewer, sock, watched = _viewer_below_its_cap()
    tracks = [Track(RATES, 0)]  # it wants the lowest layer only
    viewer.layers._maybe_probe(200_000.0, 40_000.0, [watched], tracks, [None], False, 10.0, [0])
    assert viewer.layers.probes == 0 and viewer.layers.probe_goal == 0
    viewer.layers._maybe_probe(
        200_000.0, 40_000.0, [watched], [Track(RATES, 2)], [0], False, 11.0, [0]
    )
    assert viewer.layers.probes == 1, "below its cap: probed"


def test_a_probe_under_way_stops_padding_when_the_worker_becomes_overloaded():
    viewer, sock, watched = _viewer_below_its_cap()
    _probe_wanted(viewer, watched, now=10.0)
    layers = viewer.layers
    assert layers.probe_goal > 0
    layers._pad(10.02)
    assert sock.rtp(), "padding while the worker keeps up"
    for _ in range(CONFIRM):
        viewer.load.update(loop_lag=MAX_LAG * 3, queue_bytes=0)
    layers._pad(10.05)
    assert sock.rtp() == [], "no padding sent once overloaded"
    assert layers.probe_until <= 10.05, "the probe is cut short, to be judged as it stands"


def test_a_probe_under_way_stops_as_soon_as_the_receiver_loses_more():
    """A probe into a link that cannot take it ends when the receiver says so, not at
    its end: the overflowing buffer drops media too."""
    viewer, sock, watched = _viewer_below_its_cap()
    _probe_wanted(viewer, watched, now=10.0)
    layers = viewer.layers
    for step in range(1, 25):
        layers._pad(10 + step * 0.02)
    assert sock.rtp(), "padding while the link takes it"
    # A receiver report on the probe's own packets (since 10.05): 16 % lost.
    watched.fraction_lost = 40
    watched.report_from, watched.report_at = 10.05, 10.5
    layers._pad(10.5)
    assert sock.rtp() == [], "no more padding"
    assert layers.probe_until <= 10.5
    watched.fraction_lost = 0  # the next report is clean: the probe failed all the same
    watched.report_from, watched.report_at = 10.5, 10.6
    layers.decide(11.0)
    assert layers.probe_failed and layers.probe_goal == 0, "judged a failure"
    assert not layers.verified, "a rate the probe never carried is not taken as verified"


def test_a_probe_stops_as_soon_as_the_receivers_estimate_falls():
    """Estimates come every ~100 ms (transport-cc) or second (REMB): a probe the link
    cannot take ends when the estimate falls, not 1.5 s later (its verdict at the end
    reads the same; meanwhile the overflowing buffer would drop media too)."""
    viewer, sock, watched = _viewer_below_its_cap()
    viewer.receive(rtcp.remb(9, 400_000, [watched.ssrc]), VIEWER_ADDR, 9.9)
    _probe_wanted(viewer, watched, now=10.0)
    layers = viewer.layers
    layers._pad(10.02)
    assert sock.rtp(), "padding while the link takes it"
    viewer.receive(rtcp.remb(9, 380_000, [watched.ssrc]), VIEWER_ADDR, 10.03)
    layers._pad(10.04)
    assert sock.rtp(), "a wobble of 5 % is no reason to stop"
    viewer.receive(rtcp.remb(9, 300_000, [watched.ssrc]), VIEWER_ADDR, 10.05)
    layers._pad(10.06)
    assert sock.rtp() == [] and layers.probe_until <= 10.06
    viewer.receive(rtcp.remb(9, 400_000, [watched.ssrc]), VIEWER_ADDR, 10.3)
    layers.decide(10.6)
    assert layers.probe_failed, "judged a failure though the estimate came back"


async def test_a_starved_worker_refuses_new_viewers_until_it_catches_up(tmp_path):
    """The machine, not the worker, is the bottleneck: another process takes the CPU (here
    the worker is stopped 0.6 s in every 0.7 s, as a scheduler starving it would), so its
    own CPU share stays low and only its late loop shows it. New viewers are refused;
    the admitted one keeps its media; once the worker runs freely it admits again."""
    server = RunningServer(tmp_path, workers=1)
    publisher = await start_whip_publisher(
        server.base_url, ROOM, server.token(ROOM, "theatre-1", "lead")
    )
    viewer: WhepViewer | None = None
    late: WhepViewer | None = None
    (pid,) = [w["pid"] for w in (await healthz(server))["workers"]]
    starving = True

    async def starve() -> None:
        while starving:
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(0.6)
            os.kill(pid, signal.SIGCONT)
            await asyncio.sleep(0.1)

    try:
        await publisher.wait_connected()
        viewer = await start_whep_viewer(
            server.base_url, ROOM, server.token(ROOM, "site-1", "observer")
        )
        await viewer.wait_frames(5, timeout=30)
        starver = asyncio.create_task(starve())
        try:
            await wait_metric(
                server, "telebridge_worker_load", {"worker": "0", "measure": "overloaded"}, 1
            )
            with pytest.raises(WhipError) as refused:
                await start_whep_viewer(
                    server.base_url, ROOM, server.token(ROOM, "site-2", "observer")
                )
            assert refused.value.status == 503 and "server_busy" in refused.value.body
        finally:
            starving = False
            await starver
            os.kill(pid, signal.SIGCONT)
        await wait_metric(
            server, "telebridge_worker_load", {"worker": "0", "measure": "overloaded"}, 0
        )
        late = await start_whep_viewer(
            server.base_url, ROOM, server.token(ROOM, "site-3", "observer")
        )
        await late.wait_frames(5, timeout=30)
        before = viewer.video_frames
        await viewer.wait_frames(before + 20, timeout=30)  # the admitted one kept going
        assert await metric(server, "telebridge_sessions_refused_total", {"kind": "view"}) >= 1
    finally:
        for peer in (viewer, late):
            if peer is not None:
                await peer.close()
        await publisher.close(delete=False)
        server.stop()


def test_a_burst_of_placements_counts_until_the_load_reports_show_it():
    """Hundreds of sites join within a second, and a site's cost reaches the reports only
    seconds later: the CPU test must count the ones placed in the last few seconds at the
    reported cost per consumer, however many reports came since."""
    from sfu.pool import SETTLE, WorkerHandle
    from sfu.settings import MediaSettings

    worker = WorkerHandle(0, MediaSettings(), on_event=lambda *args: None)
    worker.load = {"cpu": 0.6, "consumers": 200}
    assert worker.demand_at(100.0) == 0.6
    worker.add_consumers(100, now=100.0)  # 0.003 of a core each, as the report says
    assert abs(worker.demand_at(100.0) - 0.9) < 1e-9
    worker.placed = 0  # a report came, taken before those sites cost anything
    assert abs(worker.demand_at(100.0 + SETTLE / 2) - 0.9) < 1e-9
    assert worker.demand_at(100.0 + SETTLE + 0.1) == 0.6, "by now the reports show them"
    worker.add_consumers(100, now=200.0)
    worker.add_consumers(-100, now=200.0)  # that placement failed
    assert worker.demand_at(200.0) == 0.6
    worker.load = {"cpu": 0.05, "consumers": 2}
    worker.add_consumers(100, now=300.0)
    assert worker.demand_at(300.0) == 0.05, "too few consumers to say what one costs"


def test_the_cpu_a_worker_waited_for_counts_as_its_load():
    """On a machine shared with other busy processes a worker's own share stays low (it
    cannot use what it does not get) while its packets wait: the wait counts too."""
    from sfu.pool import WorkerHandle
    from sfu.settings import MediaSettings

    settings = MediaSettings(admission_max_cpu=0.9)
    worker = WorkerHandle(0, settings, on_event=lambda *args: None)
    worker.load = {"cpu": 0.6, "wait": 0.35, "consumers": 300}
    assert abs(worker.demand_at(10.0) - 0.95) < 1e-9
    worker.load = {"cpu": 0.6, "wait": 0.2, "consumers": 300}
    worker.add_consumers(60, now=10.0)  # at the reported cost (0.8 / 300 each): 0.16 more
    assert abs(worker.demand_at(10.0) - 0.96) < 1e-9
    assert worker.demand_at(10.0, settling=False) == 0.8, "what the next reports may show"


def test_the_wait_for_a_cpu_is_read_from_the_kernel():
    """Two busy threads pinned to one CPU: each waits for it about half the time, and
    ``run_queue_wait`` (what the load report reads) sees it."""
    code = """
import os, threading, time
from sfu.process import run_queue_wait
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
before = run_queue_wait()
other = threading.Thread(target=spin, args=(0.6,))  # inherits the pinning
other.start()
spin(0.5)
other.join()
print(run_queue_wait() - before)
"""
    import subprocess
    import sys

    if not os.path.exists("/proc/thread-self/schedstat"):
        pytest.skip("this kernel does not publish schedstat (the wait reads as 0 here)")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert float(out.stdout) > 0.05, out.stdout


async def test_a_join_over_the_allowance_waits_for_the_next_report_and_a_full_server_refuses_at_once():
    """A burst of joins is spread over load reports instead of refused; when the worker
    is full for another reason, nothing waits."""
    from sfu.pool import WorkerPool
    from sfu.settings import MediaSettings

    pool = WorkerPool(
        MediaSettings(workers=1, listen="127.0.0.1", admission_max_joins=2),
        on_event=lambda *args: None,
    )
    await pool.start()
    try:
        worker = pool.workers[0]
        deadline = asyncio.get_running_loop().time() + 30
        while not worker.load:  # its first report
            assert asyncio.get_running_loop().time() < deadline, "no load report in 30 s"
            await asyncio.sleep(0.05)
        worker.joined = 2  # two sessions joined since that report
        assert pool.place() is None
        reports = worker.load
        assert await pool.place_within(30.0) is worker
        assert worker.load is not reports, "admitted on a fresh report"
        assert worker.joined == 0

        worker.joined = 2
        worker.load = {**worker.load, "overloaded": True}
        attempt = pool.place_within(30.0)
        with pytest.raises(StopIteration) as done:  # finished without awaiting anything
            attempt.send(None)
        assert done.value.value is None
    finally:
        await pool.stop()


async def test_two_publishers_of_a_new_room_waiting_for_a_report_get_one_home():
    """A lead and a presenting site start a consult while every worker's join allowance
    is spent: both wait for a load report, and the room still gets one home worker."""
    from sfu.pool import WorkerPool
    from sfu.settings import MediaSettings
    from signaling.placement import Placement

    pool = WorkerPool(
        MediaSettings(workers=2, listen="127.0.0.1", admission_max_joins=1),
        on_event=lambda *args: None,
    )
    await pool.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not all(w.load for w in pool.workers):  # their first reports
            assert asyncio.get_running_loop().time() < deadline, "no load report in 30 s"
            await asyncio.sleep(0.05)
        for worker in pool.workers:
            worker.joined = 1
        placement = Placement(pool)
        homes = await asyncio.gather(
            *(
                placement._worker("consult", "publish", {"session": name})
                for name in ("lead", "presenter")
            )
        )
        assert homes[0] is homes[1], "one room, one home"
        assert placement.home("consult") is homes[0]
    finally:
        await pool.stop()


async def test_a_placement_whose_capacity_check_already_waited_does_not_wait_again():
    """A WHEP viewer is checked for capacity, then joins the room, then is placed: both
    steps share one JOIN_WAIT (``admit_by``), so its refusal comes within a second, not
    two. With its time spent, a join held back only by the allowance is refused at once;
    with time left it waits for the report and is placed."""
    from sfu.pool import WorkerError, WorkerPool
    from sfu.settings import MediaSettings
    from signaling.placement import ADMIT_BY, BUSY, Placement

    pool = WorkerPool(
        MediaSettings(workers=1, listen="127.0.0.1", admission_max_joins=1),
        on_event=lambda *args: None,
    )
    await pool.start()
    try:
        loop = asyncio.get_running_loop()
        worker = pool.workers[0]
        deadline = loop.time() + 30
        while not worker.load:  # its first report
            assert loop.time() < deadline, "no load report in 30 s"
            await asyncio.sleep(0.05)
        placement = Placement(pool)
        worker.joined = 1
        spent = {"session": "late", ADMIT_BY: loop.time() - 0.01}
        attempt = placement._worker("webinar", "view", spent)
        with pytest.raises(WorkerError) as refused:  # refused without awaiting anything
            attempt.send(None)
        assert refused.value.code == BUSY
        assert ADMIT_BY not in spent, "the deadline is the control plane's, not the worker's"

        worker.joined = 1
        early = {"session": "early", ADMIT_BY: loop.time() + 30}
        assert await placement._worker("webinar", "view", early) is worker
        assert ADMIT_BY not in early
    finally:
        await pool.stop()


@pytest.mark.parametrize("share", [0.64, 0.95])
def test_a_probe_the_receiver_did_not_get_at_its_rate_is_not_clean(share):
    """Loss and estimate can both look fine while a thin link's buffer drops the probe's
    own padding (reports do not count it): what the receiver acknowledged decides. 0.64 of
    the goal is what a weak-link run's falsely clean probe got through; 0.95 is a link
    that loses 5 % of whatever it carries."""
    viewer, sock, watched = _viewer_below_its_cap()
    _probe_wanted(viewer, watched, now=10.0)
    layers = viewer.layers
    goal = layers.probe_goal
    assert goal > 0
    acked = viewer.bandwidth.acked
    for step in range(11):  # transport-cc feedback every 0.1 s over the probe's end
        acked.add(11.0 + step * 0.1, int(goal * share / 8 * 0.1))
    layers.decide(layers.probe_until + 0.01)
    assert layers.probe_failed is (share < 0.8)
