"""The server side of the control channel: start media workers, talk to them, restart them.

Each worker is a child process (``python -m sfu.process``) with its own UDP port. A room's
publishers live on its home worker, chosen as the least loaded when the room's first
session arrives; its viewers go to the least loaded worker that admits them (their
producers are piped there: signaling/placement.py). Each worker reports its load every
second (``load`` event); :meth:`WorkerPool.place` is admission control.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sfu import channel, control
from sfu.control import Method
from sfu.settings import MediaSettings

logger = logging.getLogger(__name__)


class WorkerError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


P = TypeVar("P")
R = TypeVar("R")

# A worker with this much waiting in its UDP receive queue is behind: new sessions (and
# their handshakes, which would wait behind that queue) go elsewhere.
QUEUE_FULL = 1 << 20
MIN_CONSUMERS_FOR_COST = 10  # below this a consumer's share of the CPU is mostly noise
# Seconds a new consumer is counted at the reported cost on top of the reports, which
# show its cost only after ICE, DTLS and the first seconds of media: on a ramp, 50 sites
# joined at once reached their full cost two to three reports later, and counting them
# for one report only let twice the worker's headroom in (251 sites, p99 delay 1 s).
SETTLE = 2.0

EventHandler = Callable[["WorkerHandle", str, dict[str, Any]], None]


class WorkerHandle:
    """One worker process and its request/response bookkeeping."""

    def __init__(self, index: int, settings: MediaSettings, on_event: EventHandler) -> None:
        self.index = index
        self.settings = settings
        self.on_event = on_event
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.pid = 0
        self.sessions: set[str] = set()
        self.rooms: set[str] = set()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self.stopping = False
        self.load: dict[str, Any] = {}  # the last ``load`` event's data
        self.placed = 0  # consumers placed here since that report
        self._settling: collections.deque[tuple[float, int]] = collections.deque()
        self.joined = 0  # new sessions placed here since that report
        self.pipes_in = 0  # producers piped into this worker (kept by the placement)

    @property
    def consumers(self) -> int:
        """Consumers on this worker as last reported, plus those placed since."""
        return int(self.load.get("consumers", 0)) + self.placed

    def add_consumers(self, count: int, now: float | None = None) -> None:
        """Consumers placed here (a negative count: a placement undone), counted until
        the load reports show them."""
        self.placed = max(0, self.placed + count)
        self._settling.append((time.monotonic() if now is None else now, count))

    def settling(self, now: float) -> int:
        """Consumers placed within the last :data:`SETTLE` seconds."""
        while self._settling and self._settling[0][0] < now - SETTLE:
            self._settling.popleft()
        return max(0, sum(count for _, count in self._settling))

    def demand_at(self, now: float, settling: bool = True) -> float:
        """The share of a core the worker used or waited for over its last report, plus
        what the consumers placed in the last few seconds will add at the reported cost
        per consumer: a burst of joins (hundreds a second) would otherwise all be
        admitted on reports that do not show them yet. The wait is the rest of the
        machine (other workers, a recorder, a load generator) taking the CPU this worker
        needs: its own share cannot exceed what it gets, however far behind it falls."""
        demand = float(self.load.get("cpu", 0.0)) + float(self.load.get("wait", 0.0))
        reported = int(self.load.get("consumers", 0))
        count = self.settling(now) if settling else 0
        if count and reported >= MIN_CONSUMERS_FOR_COST:
            # The wait counts in the cost of each: at the worker's own CPU per consumer,
            # 280-298 sites were let in where the ramp's capacity was 151-201 (p99 delay
            # 195-340 ms); at used + waited, 221-249 (44-54 ms).
            demand += count * demand / reported
        return demand

    def admits(self, settings: MediaSettings, publisher: bool = False, soon: bool = False) -> bool:
        """Below every admission threshold (a threshold of 0 is off), and not overloaded:
        the demand is the worker's own CPU share and its wait for one; a late loop also
        sees the rest of the machine.

        A publisher must be on its room's home worker and is what every viewer came for
        (the presenting site of a consult): the CPU, consumer and join thresholds, which
        keep room for it, do not refuse it; only a worker that is already behind does.
        ``soon``: whether the next reports may admit one, when what holds it back is only
        this second's join allowance, or the cost of consumers the reports do not show
        yet (a join burst's reports are its handshakes', about twice a viewer's cost)."""
        if not self.alive:
            return False
        if int(self.load.get("queue_bytes", 0)) > QUEUE_FULL:
            return False
        if self.load.get("overloaded"):  # its loop has run late for seconds (sfu/overload.py)
            return False
        if publisher:
            return True
        limit = settings.admission_max_cpu
        if limit and self.demand_at(time.monotonic(), settling=not soon) > limit:
            return False
        limit = settings.admission_max_consumers
        if limit and self.consumers >= limit:
            return False
        joins = settings.admission_max_joins  # per report
        return soon or not (joins and self.joined >= joins)

    async def start(self, timeout: float = 20.0) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sfu.process",
            "--index",
            str(self.index),
            "--settings",
            self.settings.to_json(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._ready = asyncio.get_running_loop().create_future()
        self._reader_task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._ready, timeout)

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        decoder = channel.Decoder()
        try:
            while True:
                data = await self.process.stdout.read(65536)
                if not data:
                    break
                for message in decoder.feed(data):
                    self._dispatch(message)
        except channel.ChannelError as exc:
            logger.error("worker %d: control channel broken: %s", self.index, exc)
        finally:
            self._on_exit()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "event" in message:
            event, data = str(message["event"]), message.get("data") or {}
            if event == "ready":
                self.port = int(data["port"])
                self.pid = int(data["pid"])
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
                return
            if event == "load":
                self.load = data
                self.placed = 0
                self.joined = 0
                self.on_event(self, event, data)
                return
            if event == "closed":
                self.sessions.discard(str(data.get("session")))
            self.on_event(self, event, data)
            return
        future = self._pending.pop(message.get("id", -1), None)
        if future is None or future.done():
            return
        if "error" in message:
            error = message["error"] or {}
            future.set_exception(WorkerError(str(error.get("code")), str(error.get("message"))))
        else:
            future.set_result(message.get("result") or {})

    def _on_exit(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    WorkerError("worker_gone", f"media worker {self.index} exited")
                )
        self._pending.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(
                WorkerError("worker_gone", f"media worker {self.index} did not start")
            )
        lost = list(self.sessions)
        self.sessions.clear()
        self.rooms.clear()
        if not self.stopping:
            logger.error("worker %d exited unexpectedly; %d sessions lost", self.index, len(lost))
            for session in lost:
                self.on_event(self, "closed", {"session": session, "reason": "media worker exited"})
            self.on_event(self, "worker_exited", {"index": self.index})

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None and not self.stopping

    async def call(self, method: Method[P, R], params: P, timeout: float = 10.0) -> R:
        """One request as declared in :mod:`sfu.control`; raises WorkerError or TimeoutError."""
        result = await self.request(method.name, params, timeout)  # type: ignore[arg-type]
        return result  # type: ignore[return-value]

    async def request(
        self, method: str, params: dict[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        if method not in control.METHODS:
            raise WorkerError("unknown_method", f"unknown method {method!r}")
        if not self.alive or self.process is None or self.process.stdin is None:
            raise WorkerError("worker_gone", f"media worker {self.index} is not running")
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self.process.stdin.write(
            channel.encode({"id": request_id, "method": method, "params": params})
        )
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def stop(self) -> None:
        self.stopping = True
        if self.process is None:
            return
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)


class WorkerPool:
    """All media workers of this server; restarts one that dies."""

    def __init__(self, settings: MediaSettings, on_event: EventHandler) -> None:
        self.settings = settings
        self.on_event = on_event
        self.workers = [WorkerHandle(i, settings, self._event) for i in range(settings.workers)]
        self._restarts: set[asyncio.Task[None]] = set()
        self._report_waiters: list[asyncio.Future[None]] = []
        self.stopping = False

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self.workers))

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*(w.stop() for w in self.workers))

    def _event(self, worker: WorkerHandle, event: str, data: dict[str, Any]) -> None:
        if event == "load":  # a fresh join allowance, and fresh figures to admit on
            waiters, self._report_waiters = self._report_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            return
        if event == "worker_exited" and not self.stopping:
            task = asyncio.create_task(self._restart(worker.index))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)
            return
        self.on_event(worker, event, data)

    async def _restart(self, index: int) -> None:
        await asyncio.sleep(0.5)
        replacement = WorkerHandle(index, self.settings, self._event)
        try:
            await replacement.start()
        except (WorkerError, TimeoutError, OSError) as exc:
            logger.error("worker %d could not be restarted: %s", index, exc)
            return
        self.workers[index] = replacement
        logger.info("worker %d restarted (pid %d)", index, replacement.pid)

    def place(self, prefer: WorkerHandle | None = None) -> WorkerHandle | None:
        """The least loaded worker that admits a new session (fewest consumers; ``prefer``,
        the room's home, wins a tie: no pipe needed; then fewest sessions: publishers),
        or None when every one is full."""
        open_ = [w for w in self.workers if w.admits(self.settings)]
        if not open_:
            return None
        return min(open_, key=lambda w: (w.consumers, w is not prefer, len(w.sessions), w.index))

    async def place_within(
        self, wait: float, prefer: WorkerHandle | None = None
    ) -> WorkerHandle | None:
        """:meth:`place`; when what keeps every open worker closed is only this second's
        join allowance or the cost of its newest consumers (``admits(soon=True)``), wait
        for the next load report (at most ``wait`` seconds) and try again. A burst of
        joins is then spread over seconds instead of refused, and a worker that falls
        behind (late reports) slows its own joins."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            worker = self.place(prefer)
            if worker is not None:
                return worker
            if not any(w.admits(self.settings, soon=True) for w in self.workers):
                return None
            left = deadline - loop.time()
            if left <= 0:
                return None
            waiter: asyncio.Future[None] = loop.create_future()
            self._report_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                return self.place(prefer)
