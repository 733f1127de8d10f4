"""Soak: hours of /ws churn against a real server, watching its memory and descriptors.

``python -m bench.soak --minutes 30`` starts a server (bench/server.py) and runs, side by
side until the time is up: join/leave cycles, dropped connections (no ``leave``), resumed
connections, and publishers that publish a video track to a subscriber and then leave.
Every ``--interval`` seconds it prints the resident memory and open descriptors of the
control process and of each media worker. Growth that does not level off once the churn
is steady is a leak (issue 10, finding 9). Not run in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiortc.mediastreams import VideoStreamTrack

from bench.server import RunningServer
from signaling.client import TelebridgeClient, TelebridgeError

ROOMS = 5


def usage(pid: int) -> tuple[float, int]:
    """Resident memory (MiB) and open descriptors of one process; (0, 0) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
        )
        return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return 0.0, 0


def worker_pids(server: RunningServer) -> list[int]:
    with urllib.request.urlopen(server.base_url + "/healthz", timeout=5) as response:
        return [int(w["pid"]) for w in json.load(response)["workers"] if w.get("pid")]


class Soak:
    def __init__(self, server: RunningServer, deadline: float) -> None:
        self.server = server
        self.deadline = deadline
        self.counts: Counter[str] = Counter()
        self.serial = itertools.count()

    async def connect(
        self, kind: str, role: str = "observer", room: str | None = None
    ) -> TelebridgeClient:
        n = next(self.serial)
        room = room or f"soak-{n % ROOMS}"
        token = self.server.token(room, f"{kind}-{n % 1000}", role, ttl=24 * 3600)
        return await TelebridgeClient.connect(self.server.base_url, token)

    async def forever(self, name: str, cycle: Callable[[], Awaitable[None]]) -> None:
        """Run one kind of cycle until the deadline; a failed cycle is counted, not fatal."""
        while time.monotonic() < self.deadline:
            try:
                await cycle()
                self.counts[name] += 1
            except (TelebridgeError, OSError, TimeoutError) as exc:
                self.counts[f"{name} failed"] += 1
                self.counts[f"error {getattr(exc, 'code', None) or type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)  # the rate limit, or a server under load: back off

    async def join_leave(self) -> None:
        client = await self.connect("churn")
        await client.leave()

    async def drop(self) -> None:
        client = await self.connect("drop")
        await client.close()  # no leave: the participant lingers for the resume grace

    async def resume(self) -> None:
        client = await self.connect("resume")
        try:
            await client.reconnect()
        finally:
            await client.leave()

    async def publish(self) -> None:
        publisher = await self.connect("publisher", "participant", "soak-media")
        viewer = await self.connect("viewer", "observer", "soak-media")
        try:
            (track,) = await publisher.publish(video=VideoStreamTrack())
            await viewer.subscribe([track["id"]])
            await viewer.wait_remote_track(track["id"], timeout=10)
        finally:
            await viewer.leave()
            await publisher.leave()

    async def report(self, interval: float) -> None:
        control = self.server.process.pid
        started = time.monotonic()
        while True:
            workers = worker_pids(self.server)
            figures = [f"control {usage(control)[0]:6.1f} MiB {usage(control)[1]:4d} fds"]
            for index, pid in enumerate(workers):
                rss, fds = usage(pid)
                figures.append(f"worker{index} {rss:6.1f} MiB {fds:4d} fds")
            done = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            print(f"{time.monotonic() - started:7.0f}s  {'  '.join(figures)}  {done}", flush=True)
            if time.monotonic() >= self.deadline:
                return
            await asyncio.sleep(min(interval, max(0.0, self.deadline - time.monotonic())))


async def amain(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="telebridge-soak-") as tmp:
        # No per-address join limit: every soak client comes from 127.0.0.1.
        server = RunningServer(Path(tmp), extra="[ws]\njoin_limit = 0\nresume_grace = 5")
        try:
            soak = Soak(server, time.monotonic() + args.minutes * 60)
            cycles = [
                *(soak.forever("join/leave", soak.join_leave) for _ in range(args.churners)),
                soak.forever("drop", soak.drop),
                soak.forever("resume", soak.resume),
                *(soak.forever("publish", soak.publish) for _ in range(args.publishers)),
            ]
            reporter = asyncio.ensure_future(soak.report(args.interval))
            await asyncio.gather(*cycles)
            await reporter
            print("after the churn, waiting 35 s (past every grace and timer):", flush=True)
            await asyncio.sleep(35)
            soak.deadline = 0.0
            await soak.report(0)
        finally:
            with contextlib.suppress(Exception):
                server.stop()
            print(f"server log: {len(server.logs().splitlines())} lines", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between reports")
    parser.add_argument("--churners", type=int, default=4, help="parallel join/leave loops")
    parser.add_argument("--publishers", type=int, default=1, help="parallel publish loops")
    asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
