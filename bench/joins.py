"""Control-process CPU for N /ws joins into one room (issue 9: signaling that scales linearly).

Starts a server like bench/server.py does, creates one room that admits everyone, joins a
lead and then N observers over real WebSockets (no media), each client reading every
event it is sent, waits until the events stop, and reports the control process's CPU
seconds (from /proc, the control process alone, not its media workers) with the events
the clients received. Run several sizes to see how the cost grows::

    python -m bench.joins --sites 500 1000 2000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.server import RunningServer

QUIET = 1.5  # seconds without a message: the room has settled


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Site:
    """One /ws client: joins, then reads (and counts) everything until closed."""

    def __init__(self, url: str, token: str, stats: collections.Counter[str]) -> None:
        self.url = url
        self.token = token
        self.stats = stats
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None

    async def join(self, http: aiohttp.ClientSession) -> None:
        self.ws = await http.ws_connect(self.url, max_msg_size=0)
        await self.ws.send_str(json.dumps({"v": 1, "type": "join", "id": 1, "token": self.token}))
        while True:  # the answer first (events may come before it)
            message = json.loads((await self.ws.receive()).data)
            self._count(message)
            if message.get("type") in ("response", "error"):
                if message["type"] == "error":
                    raise RuntimeError(f"join refused: {message}")
                break
        self.reader = asyncio.ensure_future(self._read())

    def _count(self, message: dict[str, Any]) -> None:
        self.stats["messages"] += 1
        self.stats["last"] = int(time.monotonic() * 1000)
        if message.get("type") == "event":
            self.stats[f"event:{message['event']}"] += 1

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._count(json.loads(msg.data))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()


async def run_size(
    server: RunningServer, api_secret: str, sites: int, concurrency: int
) -> dict[str, Any]:
    room = f"joins-{sites}-{secrets.token_hex(3)}"
    auth = base64.b64encode(f"bench:{api_secret}".encode()).decode()
    stats: collections.Counter[str] = collections.Counter()
    url = server.base_url.replace("http", "ws") + "/ws"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(
            server.base_url + "/api/v1/rooms",
            json={"name": room, "max_viewers": sites + 10},
            headers={"Authorization": f"Basic {auth}"},
        ) as response:
            if response.status != 201:
                raise RuntimeError(f"creating the room: {response.status} {await response.text()}")
        lead = Site(url, server.token(room, "lead", "lead", ttl=3600), stats)
        await lead.join(http)
        members = [
            Site(url, server.token(room, f"site-{n}", "observer", ttl=3600), stats)
            for n in range(sites)
        ]
        pid = server.process.pid
        cpu0 = cpu_seconds(pid)
        started = time.monotonic()
        gate = asyncio.Semaphore(concurrency)

        async def one(site: Site) -> None:
            async with gate:
                await site.join(http)

        await asyncio.gather(*(one(s) for s in members))
        joined = time.monotonic() - started
        while time.monotonic() - stats["last"] / 1000 < QUIET:  # the events settle
            await asyncio.sleep(0.2)
        cpu = cpu_seconds(pid) - cpu0  # the idle sweep in the settling wait included
        result = {
            "sites": sites,
            "control_cpu_s": round(cpu, 3),
            "cpu_ms_per_join": round(1000 * cpu / sites, 3),
            "join_wall_s": round(joined, 2),
            "messages": stats["messages"],
            "participant_joined_events": stats["event:participant_joined"],
            "observer_count_events": stats["event:observer_count"],
            "control_rss_mb": round(rss_mb(pid), 1),
        }
        for site in [lead, *members]:
            await site.close()
    return result


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--concurrency", type=int, default=20, help="joins in flight at once")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    api_secret = secrets.token_urlsafe(24)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for sites in args.sites:  # a fresh server per size: nothing carried over
            server = RunningServer(
                Path(tmp),
                extra=(
                    "[ws]\njoin_limit = 0\nidentity_join_limit = 0\n"
                    f'[[api.keys]]\nkey = "bench"\nsecret = "{api_secret}"\n'
                ),
            )
            try:
                result = await run_size(server, api_secret, sites, args.concurrency)
            finally:
                server.stop()
            results.append(result)
            print(json.dumps(result), flush=True)
    base = results[0]
    for result in results[1:]:
        print(
            f"{result['sites']} vs {base['sites']} sites: x{result['sites'] / base['sites']:.1f} "
            f"sites, x{result['control_cpu_s'] / max(base['control_cpu_s'], 1e-9):.2f} CPU"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
