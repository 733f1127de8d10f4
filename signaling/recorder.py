"""The control process's side of the recorder process (recording/process.py): it is
started once, and spoken to in JSON lines; requests are answered by id, events (a track
that failed) go to ``on_event``, and its exit to ``on_exit``."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

logger = logging.getLogger(__name__)

RECORDER_TIMEOUT = 10.0


class RecorderError(Exception):
    pass


class RecorderClient:
    """The recorder process (``python -m recording.process``): JSON lines both ways."""

    def __init__(self, on_event: Any, on_exit: Any) -> None:
        self.on_event = on_event
        self.on_exit = on_exit
        self.process: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "recording.process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        self._reader = asyncio.create_task(self._read(self.process))
        logger.info("recorder process started, pid %d", self.process.pid)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                logger.warning("recorder: unreadable line %r", line[:200])
                continue
            future = self._pending.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                if "error" in message:
                    future.set_exception(RecorderError(str(message["error"])))
                else:
                    future.set_result(message)
            elif "event" in message:
                self.on_event(message)
        code = await process.wait()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RecorderError("the recorder process exited"))
        self._pending.clear()
        logger.warning("recorder process %d exited with %s", process.pid, code)
        self.on_exit()

    async def request(self, op: str, **params: Any) -> dict[str, Any]:
        async with self._starting:  # one recorder, however many tracks ask at once
            if not self.alive:
                await self.start()
        process = self.process
        assert process is not None and process.stdin is not None
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        process.stdin.write((json.dumps({"id": self._next, "op": op, **params}) + "\n").encode())
        try:
            await process.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._pending.pop(self._next, None)
            raise RecorderError(f"the recorder process is gone: {exc}") from None
        return await asyncio.wait_for(future, RECORDER_TIMEOUT)

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the recorder closes its files and exits
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
