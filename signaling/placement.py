"""Which media worker serves each request: one room across every worker, with pipes.

A room's publishers live on its home worker. Each viewer (a WHEP session or a /ws
subscribe connection) is placed on the least loaded worker that admits it
(:meth:`sfu.pool.WorkerPool.place`); when that is not the home worker, every producer it
views is piped there once: ``pipe_out`` on the home worker (a pipe consumer of all
encodings on a plain UDP transport on loopback), ``pipe_in`` on the far worker (a
producer with the same id fed by that transport), then ``plain_connect`` names the far
end to the home end. The far worker's viewers consume the piped producer like a local
one; their keyframe requests and NACKs travel back over the pipe.

A pipe closes when its producer closes (its home side closes with it, then the control
process closes the far side), when the far worker has no more viewers of it, or when
either worker dies (the other side is closed). When no worker admits a new session, the
request fails at once with ``server_busy``; sessions already placed are never moved.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sfu import control
from sfu.pool import WorkerError, WorkerHandle, WorkerPool

logger = logging.getLogger(__name__)

BUSY = "server_busy"
WORKER_EXITED = "media worker exited"  # the reason sfu/pool.py gives a dead worker's sessions
PIPE_LINGER = 5.0  # seconds a pipe with no far viewer stays open (a viewer's reconnect)
RETRY_AFTER = 5  # seconds a refused client is told to wait (WHIP/WHEP Retry-After)
# Seconds a new session may wait for a worker's next load report when what holds it back
# is only that worker's join allowance for this second, or the estimated cost of the
# consumers placed in the last sfu.pool.SETTLE seconds. Longer waits let the waiters in
# on reports that did not show the burst yet: with 3 s, 332 of 1,000 sites offered at
# once were admitted where the ramp's capacity was 151-201 (p99 delay 721 ms). Short
# enough that a refusal is answered within a second with a busy control process around
# it (with 1.0 the refused waited 1.02-1.08 s, with 0.8 up to 1.014 s at 1,000 sites
# offered at once), and longer than the half-second report interval.
JOIN_WAIT = 0.7
# A request's params key: the loop time by which its placement must be decided, when an
# earlier capacity check of the same request already waited (a WHEP viewer is checked
# before it joins the room, then placed): the two waits share one JOIN_WAIT.
ADMIT_BY = "admit_by"

# Methods that start a session, and which kind of session (for the refusal counter).
NEW_SESSION = {"publish": "publish", "view": "view", "subscriber": "subscribe"}
SUBSCRIBER_CONSUMERS = 2  # held for a new subscribe connection until its first offer


@dataclass
class Pipe:
    """One producer piped from its home worker to one far worker."""

    producer: str
    room: str
    home: WorkerHandle
    far: WorkerHandle
    out_session: str  # on the home worker
    in_session: str  # on the far worker
    users: set[str] = field(default_factory=set)  # far sessions viewing it
    closed: bool = False


class Placement:
    """Routes the conference's worker requests; owns the pipes between workers."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.session_worker: dict[str, WorkerHandle] = {}
        self.producer_home: dict[str, WorkerHandle] = {}
        self.session_producers: dict[str, set[str]] = {}  # publish session -> its producers
        self.pipes: dict[tuple[str, int], Pipe] = {}  # (producer, far worker index)
        self.pipe_sessions: dict[str, Pipe] = {}  # either end's session -> its pipe
        self.uses: dict[str, set[tuple[str, int]]] = {}  # viewer session -> pipes it uses
        self.refused: dict[str, int] = {}  # new sessions refused, by kind
        self.reserved: dict[str, int] = {}  # subscribe session -> consumers held for it
        self.pipes_opened = 0
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closing: dict[tuple[str, int], asyncio.Future[Any]] = {}
        self.on_refused: Callable[[str], None] | None = None  # metrics
        # The far viewer sessions whose source died with its home worker (the conference
        # treats them like viewers on that worker: media_lost).
        self.on_source_lost: Callable[[set[str]], None] | None = None

    # -- choosing a worker --------------------------------------------------------------------
    def home(self, room: str) -> WorkerHandle | None:
        """The live worker holding the room's publishers, if it has one yet."""
        for worker in self.pool.workers:
            if room in worker.rooms and worker.alive:
                return worker
        return None

    async def has_capacity(self, deadline: float | None = None) -> bool:
        """Whether some worker admits a new session now, or by ``deadline`` (loop time;
        default :data:`JOIN_WAIT` from now) when only the join allowance or the newest
        consumers' estimate held it back (a /ws subscribe asks first, so the refusal is
        that request's answer)."""
        return await self.pool.place_within(self._wait_until(deadline)) is not None

    @staticmethod
    def _wait_until(deadline: float | None) -> float:
        """Seconds left to ``deadline`` (:data:`JOIN_WAIT` when None)."""
        if deadline is None:
            return JOIN_WAIT
        return max(0.0, deadline - asyncio.get_running_loop().time())

    def refuse(self, kind: str) -> WorkerError:
        """Count a refusal; the error to raise. With no worker running at all (one is
        being restarted) that is not a full server: ``worker_gone``, which clients retry
        (telebridge.js republishes after ``media_lost``)."""
        if not any(w.alive for w in self.pool.workers):
            return WorkerError("worker_gone", "no media worker is running; one is restarting")
        self.refused[kind] = self.refused.get(kind, 0) + 1
        if self.on_refused is not None:
            self.on_refused(kind)
        return WorkerError(BUSY, "every media worker is at capacity; try again shortly")

    async def _worker(self, room: str, method: str, params: dict[str, Any]) -> WorkerHandle:
        session = params.get("session")
        kind = NEW_SESSION.get(method)
        wait = self._wait_until(params.pop(ADMIT_BY, None))
        if kind == "publish" and not params.get("renegotiate"):
            home = self.home(room)
            if home is None:
                chosen = await self.pool.place_within(wait)
                # Another publisher of the room may have made its home while this one
                # waited: a room has one home.
                home = self.home(room)
                if home is None:
                    if chosen is None:
                        raise self.refuse(kind)
                    home = chosen
                    home.rooms.add(room)
            if not home.admits(self.pool.settings, publisher=True):
                raise self.refuse(kind)
            home.joined += 1
            return home
        if kind is not None:
            worker = await self.pool.place_within(wait, prefer=self.home(room))
            if worker is None:
                raise self.refuse(kind)
            worker.joined += 1
            return worker
        if method in ("producer_pause", "producer_close"):
            home = self.producer_home.get(str(params.get("producer")))
            if home is not None:
                return home
        if session is not None and session in self.session_worker:
            return self.session_worker[session]
        # A session this process does not know (closed meanwhile): any live worker answers
        # not_found; none is made the room's home for it.
        alive = [w for w in self.pool.workers if w.alive]
        return self.home(room) or (alive or self.pool.workers)[0]

    # -- requests ---------------------------------------------------------------------------
    async def request(self, room: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One conference request to the worker that serves it; raises WorkerError
        (``server_busy`` when no worker admits a new session) or TimeoutError."""
        worker = await self._worker(room, method, params)
        session = str(params.get("session", ""))
        wanted: list[str] = []
        if method == "view":
            wanted = list(params["producers"])
        elif method == "subscriber_offer":
            wanted = [c["producer"] for c in params["consumers"]]
        # Counted before the answer: requests in flight must not all pick this worker. A
        # /ws subscribe connection's consumers come with its first offer, a round trip
        # later: until then it holds the usual observer's two (its lead's audio and
        # video), or a burst of sites all pass the check before any of them counts.
        if method == "view":
            worker.add_consumers(len(wanted))
        elif method == "subscriber":
            worker.add_consumers(SUBSCRIBER_CONSUMERS)
            self.reserved[session] = SUBSCRIBER_CONSUMERS
        if method in ("view", "subscriber_offer"):
            await self._use_pipes(room, worker, session, wanted)
        try:
            result = await worker.request(method, params)
        except (WorkerError, TimeoutError):
            if method == "view":
                worker.add_consumers(-len(wanted))
                for key in self.uses.pop(session, set()):
                    self._release(key, session)
            elif method == "subscriber":
                worker.add_consumers(-self.reserved.pop(session, 0))
            raise
        if method in NEW_SESSION:
            worker.sessions.add(session)
            self.session_worker[session] = worker
        if method == "publish":
            for track in result.get("tracks", []):
                self.producer_home[str(track["id"])] = worker
                self.session_producers.setdefault(session, set()).add(str(track["id"]))
        elif method == "subscriber_offer" and result.get("changed"):
            # an estimate until the load reports show it
            worker.add_consumers(len(wanted) - self.reserved.pop(session, 0))
        elif method == "producer_pause":
            for pipe in self._pipes_of(str(params["producer"])):
                await self._quiet(pipe.far, "producer_pause", params)
        return result

    def _pipes_of(self, producer: str) -> list[Pipe]:
        return [p for (pid, _), p in self.pipes.items() if pid == producer and not p.closed]

    async def _quiet(self, worker: WorkerHandle, method: str, params: dict[str, Any]) -> None:
        try:
            await worker.request(method, params)
        except (WorkerError, TimeoutError) as exc:
            logger.debug("%s on worker %d: %s", method, worker.index, exc)

    # -- pipes ------------------------------------------------------------------------------
    async def _use_pipes(
        self, room: str, worker: WorkerHandle, session: str, producers: list[str]
    ) -> None:
        """Pipe each producer viewed by ``session`` on ``worker`` there (once per worker),
        and let go of the pipes it no longer views."""
        keys: set[tuple[str, int]] = set()
        for producer in producers:
            home = self.producer_home.get(producer)
            if home is None or home is worker or not home.alive:
                continue
            key = (producer, worker.index)
            try:
                pipe = await self._pipe(room, producer, home, worker)
            except (WorkerError, TimeoutError) as exc:
                # The producer went away meanwhile, or a worker died: the view or offer
                # then goes without it, as it would for a local producer that closed.
                logger.warning(
                    "room %s: cannot pipe %s to worker %d: %s", room, producer, worker.index, exc
                )
                continue
            pipe.users.add(session)
            keys.add(key)
        for key in self.uses.get(session, set()) - keys:
            self._release(key, session)
        if keys:
            self.uses[session] = keys
        else:
            self.uses.pop(session, None)

    async def _pipe(self, room: str, producer: str, home: WorkerHandle, far: WorkerHandle) -> Pipe:
        key = (producer, far.index)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            pipe = self.pipes.get(key)
            if pipe is not None and not pipe.closed and pipe.far is far:
                return pipe
            closing = self._closing.pop(key, None)
            if closing is not None:
                await closing  # the far worker still holds the old pipe's producer
            out_session = f"pipe-{secrets.token_urlsafe(9)}"
            in_session = f"pipe-{secrets.token_urlsafe(9)}"
            request: control.PipeOutParams = {
                "session": out_session,
                "room": room,
                "producer": producer,
            }
            out = await home.call(control.PIPE_OUT, request)
            home.sessions.add(out_session)
            pipe = Pipe(producer, room, home, far, out_session, in_session)
            self.pipe_sessions[out_session] = pipe
            try:
                piped: control.PipeInParams = {
                    "session": in_session,
                    "room": room,
                    "producer": producer,
                    "kind": out["kind"],
                    "codec": out["codec"],
                    "clock_rate": out["clock_rate"],
                    "channels": out["channels"],
                    "payload_type": out["payload_type"],
                    "fmtp": out["fmtp"],
                    "ssrcs": out["ssrcs"],
                    "remote_host": out["local_host"],
                    "remote_port": out["local_port"],
                }
                if "red_payload_type" in out:
                    piped["red_payload_type"] = out["red_payload_type"]
                inbound = await far.call(control.PIPE_IN, piped)
                far.sessions.add(in_session)
                self.pipe_sessions[in_session] = pipe
                connect: control.PlainConnectParams = {
                    "session": out_session,
                    "remote_host": inbound["local_host"],
                    "remote_port": inbound["local_port"],
                }
                await home.call(control.PLAIN_CONNECT, connect)
            except (WorkerError, TimeoutError):
                self._close(pipe, "pipe setup failed")
                raise
            self.pipes[key] = pipe
            self.pipes_opened += 1
            far.pipes_in += 1
            home.add_consumers(1)
            logger.info(
                "room %s: producer %s piped from worker %d to worker %d",
                room,
                producer,
                home.index,
                far.index,
            )
            return pipe

    def _release(self, key: tuple[str, int], session: str) -> None:
        pipe = self.pipes.get(key)
        if pipe is None:
            return
        pipe.users.discard(session)
        if not pipe.users:
            asyncio.get_running_loop().call_later(PIPE_LINGER, self._close_unused, pipe)

    def _close_unused(self, pipe: Pipe) -> None:
        if not pipe.users:
            self._close(pipe, "no viewers left on the far worker")

    def _close(self, pipe: Pipe, reason: str) -> None:
        """Close both ends (each end that is already gone answers not_found, ignored)."""
        if pipe.closed:
            return
        pipe.closed = True
        key = (pipe.producer, pipe.far.index)
        if self.pipes.get(key) is pipe:
            del self.pipes[key]
            pipe.far.pipes_in -= 1
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]
        for session in (pipe.out_session, pipe.in_session):
            self.pipe_sessions.pop(session, None)
        logger.info(
            "room %s: pipe of %s to worker %d closed: %s",
            pipe.room,
            pipe.producer,
            pipe.far.index,
            reason,
        )
        for worker, session in ((pipe.home, pipe.out_session), (pipe.far, pipe.in_session)):
            if worker.alive:
                task = self._spawn(
                    self._quiet(worker, "close", {"session": session, "reason": reason})
                )
                if worker is pipe.far:
                    self._closing[key] = task  # a new pipe of it waits for this one to go
                    task.add_done_callback(functools.partial(self._closed, key))

    def _closed(self, key: tuple[str, int], task: asyncio.Future[Any]) -> None:
        if self._closing.get(key) is task:
            del self._closing[key]

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- worker events ------------------------------------------------------------------------
    def on_worker_event(self, worker: WorkerHandle, event: str, data: dict[str, Any]) -> bool:
        """Keep placement and pipes in step with the workers; True if the event was about
        a pipe (nothing else needs it)."""
        if event == "active_speaker":
            # Only the home worker hears every publisher of the room; a far worker's
            # loudest is among the producers piped to it.
            return worker is not self.home(str(data.get("room")))
        session = str(data.get("session", ""))
        pipe = self.pipe_sessions.get(session)
        if pipe is not None:
            if event == "layers" and session == pipe.in_session:
                # The far viewers' demand for the encodings: the home side keeps the
                # publisher sending only what somebody watches.
                demand = {"session": pipe.out_session, "active": list(data.get("active") or [])}
                self._spawn(self._quiet(pipe.home, "pipe_demand", demand))
            if event == "closed":
                users = set(pipe.users)
                self._close(pipe, f"its other end closed: {data.get('reason')}")
                if worker is pipe.home and data.get("reason") == WORKER_EXITED and users:
                    if self.on_source_lost is not None:
                        self.on_source_lost(users)
            return True
        if event == "closed":
            self.session_worker.pop(session, None)
            self.reserved.pop(session, None)
            for producer in self.session_producers.pop(session, set()):
                self.producer_home.pop(producer, None)
            for key in self.uses.pop(session, set()):
                self._release(key, session)
        elif event == "producer_closed":
            producer = str(data.get("producer"))
            self.producer_home.pop(producer, None)
            self.session_producers.get(session, set()).discard(producer)
        return session.startswith("pipe-")
