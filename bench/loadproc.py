"""Synthetic sites on one event loop (:class:`SiteGroup`), and the load process that runs
one such group for ``telebridge bench`` (:func:`process_main`), driven over a
multiprocessing pipe: so the load can be spread over several cores.

The pipe carries tuples. To the process: ``("add", [SiteSpec fields])``, ``("mark",)``
(a measuring window starts), ``("report",)`` (what each site did since the mark),
``("stop",)``. From it: ``("status", {...})`` once a second, ``("report", {...})``,
``("stopped", {...})``.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from aiortc.rtcdtlstransport import RTCCertificate

from bench.scenarios import SiteSpec
from bench.sites import LAYERS, Site, synthetic_clip

TIMER_INTERVAL = 0.05


def udp_drops() -> dict[int, int]:
    """Datagrams each UDP socket on 127.0.0.1 dropped at a full receive buffer, by local
    port (/proc/net/udp's last column): tells the sites' drops from the SFU's."""
    out: dict[int, int] = {}
    try:
        with open("/proc/net/udp") as table:
            next(table, None)
            for line in table:
                fields = line.split()
                address, _, port = fields[1].partition(":")
                if address == "0100007F":
                    out[int(port, 16)] = int(fields[-1])
    except (OSError, ValueError, IndexError):
        pass
    return out


class SiteGroup:
    """Sites sharing this event loop, one HTTP session and one certificate; at most
    ``concurrency`` of them joining at a time."""

    def __init__(self, url: str, secret: str | None, concurrency: int = 32) -> None:
        self.url = url.rstrip("/")
        self.secret = secret
        self.sites: list[Site] = []
        self.limit = asyncio.Semaphore(concurrency)
        self.certificate = RTCCertificate.generateCertificate()
        self.clips = [synthetic_clip(spec) for spec in LAYERS]
        self.http: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.timers: asyncio.Task[None] | None = None
        self.marks: dict[int, tuple[int, int]] = {}
        self.drops: dict[int, int] = {}
        self.started = time.monotonic()

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        self.http = aiohttp.ClientSession(connector=connector)
        self.timers = asyncio.ensure_future(self._timers())

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(TIMER_INTERVAL)
            now = time.monotonic()
            for site in self.sites:
                site.timer(now)

    def add(self, specs: list[SiteSpec]) -> list[Site]:
        added = [Site(spec, self.url, self.secret, self.certificate, self.clips) for spec in specs]
        self.sites.extend(added)
        self.tasks.extend(asyncio.ensure_future(self._start(site)) for site in added)
        return added

    async def _start(self, site: Site) -> None:
        assert self.http is not None
        async with self.limit:
            await site.run(self.http)

    def status(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        sites = self.sites
        return {
            "sites": len(sites),
            "joined": sum(1 for s in sites if s.state.joined_at),
            "media": sum(1 for s in sites if s.has_media),
            "refused": sum(1 for s in sites if s.state.refused),
            "failed": sum(
                1
                for s in sites
                if not s.state.refused
                and (s.state.error or any(p.failed for p in s.peers))
                and not s.has_media
            ),
            "publishers": sum(
                1 for s in sites if s.publisher is not None and s.publisher.connected
            ),
            "rx": sum(s.subscriber.rtp for s in sites if s.subscriber is not None),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "errors": [s.state.error for s in sites if s.state.error][-3:],
        }

    def mark(self) -> None:
        """A measuring window starts: remember each site's counters, drop old delays."""
        self.marks = {}
        self.drops = udp_drops()
        for index, site in enumerate(self.sites):
            if site.subscriber is not None:
                self.marks[index] = site.subscriber.totals()
                site.subscriber.take_delays()

    def report(self) -> dict[str, Any]:
        """Per site since :meth:`mark`: expected and received media packets, delays."""
        rows = []
        drops = udp_drops()
        site_drops = 0
        sfu_drops: dict[int, int] = {}
        for site in self.sites:
            for peer in site.peers:
                if peer.port in drops:
                    site_drops += drops[peer.port] - self.drops.get(peer.port, 0)
                if peer.remote is not None and peer.remote[1] in drops and not site.link:
                    port = peer.remote[1]
                    sfu_drops[port] = drops[port] - self.drops.get(port, 0)
        for index, site in enumerate(self.sites):
            row: dict[str, Any] = {
                "identity": site.spec.identity,
                "role": site.spec.role,
                "weak": bool(site.spec.weak or site.spec.weak_up),
                "refused": site.state.refused,
                "refused_s": site.state.refused_after,
                "error": site.state.error
                or next((p.failed for p in site.peers if p.failed), None)
                or "",
                "media": site.has_media,
                "stage": site.stage,
                "join_s": site.join_s,
            }
            row["ice_s"], row["dtls_s"] = site.handshake_s
            sub = site.subscriber
            if sub is not None:
                expected, received = sub.totals()
                base = self.marks.get(index, (0, 0))
                delays, lags = sub.take_delays()
                row.update(
                    expected=expected - base[0],
                    received=received - base[1],
                    delays=[round(d, 2) for d in delays],
                    read_lags=[round(d, 2) for d in lags],
                    nacks=sub.nacks_sent,
                    plis=sub.plis_sent,
                    twcc=sub.twcc_sent,
                    rtx=sub.rtx_received,
                    padding=sub.padding_received,
                    verify_failed=sub.verify_failed,
                )
            if site.publisher is not None:
                row.update(
                    sent_video=site.publisher.video_sent,
                    sent_audio=site.publisher.audio_sent,
                    nacks_in=site.publisher.nacks,
                    plis_in=site.publisher.plis + site.publisher.firs,
                )
            rows.append(row)
        return {
            "sites": rows,
            "status": self.status(),
            "site_socket_drops": site_drops,
            "sfu_socket_drops": sfu_drops,
        }

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.timers is not None:
            self.timers.cancel()
        if self.http is not None:
            try:
                await asyncio.wait_for(
                    asyncio.gather(
                        *(site.close(self.http) for site in self.sites), return_exceptions=True
                    ),
                    15,
                )
            except TimeoutError:
                pass
            await self.http.close()


async def _serve(conn: Connection, url: str, secret: str | None, concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    group = SiteGroup(url, secret, concurrency)
    await group.open()
    stop = asyncio.Event()

    def on_command() -> None:
        try:
            while conn.poll():
                command = conn.recv()
                kind = command[0]
                if kind == "add":
                    group.add([SiteSpec(**fields) for fields in command[1]])
                elif kind == "mark":
                    group.mark()
                    conn.send(("marked", {}))
                elif kind == "report":
                    conn.send(("report", group.report()))
                elif kind == "stop":
                    stop.set()
        except (EOFError, OSError):
            stop.set()

    loop.add_reader(conn.fileno(), on_command)
    # uvloop's reader (libuv's uv_poll) makes the socket non-blocking; a large message
    # (hundreds of sites to add, a report) would then fail half read or half written.
    os.set_blocking(conn.fileno(), True)
    try:
        while not stop.is_set():
            conn.send(("status", group.status()))
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
    except (BrokenPipeError, OSError):
        pass
    finally:
        loop.remove_reader(conn.fileno())
        final = group.status()
        await group.close()
        try:
            conn.send(("stopped", final))
        except OSError:
            pass


def process_main(conn: Connection, url: str, secret: str | None, concurrency: int) -> None:
    """The body of one load process (multiprocessing target)."""
    try:
        import uvloop

        uvloop.run(_serve(conn, url, secret, concurrency))
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(conn, url, secret, concurrency))
