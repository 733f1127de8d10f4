"""The media worker process: one UDP port, one event loop (uvloop), one WorkerCore.

Started by :class:`sfu.pool.WorkerPool` as ``python -m sfu.process``; it reads control
requests from stdin and writes responses and events to stdout (see :mod:`sfu.channel`).
Logs go to stderr. When the control process goes away (stdin closes), the worker exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import socket
import sys
import time
from typing import Any

from aiortc.rtcdtlstransport import RTCCertificate

from sfu import channel
from sfu.worker import RequestError, WorkerCore

logger = logging.getLogger("sfu.process")

TICK = 0.02  # seconds between timer sweeps (NACK, PLI throttle, reports, consent)


class MediaProtocol(asyncio.DatagramProtocol):
    """The thin I/O layer: datagrams straight into the core; never raises into the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.core: WorkerCore | None = None
        self.errors = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        core = self.core
        if core is None:
            return
        try:
            core.receive(data, (addr[0], addr[1]), self.loop.time())
        except Exception:  # one bad packet must never stop the worker
            self.errors += 1
            if self.errors < 20 or self.errors % 1000 == 0:
                logger.exception("worker: error handling a datagram from %s (%d so far)", addr, self.errors)

    def error_received(self, exc: Exception) -> None:
        logger.debug("udp error: %s", exc)


class ControlLink:
    """Framed JSON over stdin/stdout."""

    def __init__(self, writer: asyncio.WriteTransport) -> None:
        self.writer = writer

    def write(self, message: dict[str, Any]) -> None:
        self.writer.write(channel.encode(message))


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    certificate = RTCCertificate.generateCertificate()
    reader = asyncio.StreamReader(limit=channel.MAX_MESSAGE + 4)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", 0))
    write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(1, "wb", 0))
    link = ControlLink(write_transport)  # type: ignore[arg-type]

    def emit(event: str, data: dict[str, Any]) -> None:
        link.write({"event": event, "data": data})

    protocol = MediaProtocol(loop)
    udp, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=(args.host, args.port))
    sock = udp.get_extra_info("socket")
    try:  # a burst of keyframe packets to many viewers must not overflow the queues
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    except OSError:
        pass
    core = WorkerCore(
        certificate,
        args.announce,
        udp.get_extra_info("sockname")[1],
        udp.sendto,  # uvloop sends at once when it can; it keeps the bytes otherwise
        emit,
        publisher_bitrate=args.publisher_bitrate,
        consent_timeout=args.consent_timeout,
    )
    protocol.core = core

    link.write(
        {
            "event": "ready",
            "data": {"index": args.index, "port": core.port, "pid": os.getpid(), "fingerprint": core.fingerprint[1]},
        }
    )
    logger.info("worker %d listening on %s:%d (announcing %s)", args.index, args.host, core.port, args.announce)

    async def ticker() -> None:
        while True:
            due = loop.time() + TICK
            await asyncio.sleep(TICK)
            # How late the loop woke us: the event loop lag a metric reports (max over ~1 s).
            lag = max(0.0, loop.time() - due)
            core.loop_lag = max(lag, core.loop_lag * 0.95)
            try:
                core.tick(loop.time())
            except Exception:
                logger.exception("worker: timer sweep failed")

    tick_task = asyncio.create_task(ticker())
    decoder = channel.Decoder()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for message in decoder.feed(data):
                link.write(handle(core, message, loop.time()))
    except channel.ChannelError as exc:
        logger.error("worker: control channel broken: %s", exc)
    finally:
        tick_task.cancel()
        for session_id in list(core.sessions):
            core.close_session(session_id, "worker shutting down")
        udp.close()


def handle(core: WorkerCore, message: dict[str, Any], now: float) -> dict[str, Any]:
    request_id = message.get("id")
    method = message.get("method")
    params = message.get("params") or {}
    if not isinstance(method, str) or not isinstance(params, dict):
        return {"id": request_id, "error": {"code": "bad_request", "message": "method and params required"}}
    started = time.perf_counter()
    try:
        result = core.handle(method, params, now)
    except RequestError as exc:
        return {"id": request_id, "error": {"code": exc.code, "message": exc.message}}
    except Exception as exc:
        logger.exception("worker: request %s failed", method)
        return {"id": request_id, "error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}}
    if method == "stats":
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        result["handle_ms"] = (time.perf_counter() - started) * 1000
    return {"id": request_id, "result": result}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sfu.process")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--announce", default="127.0.0.1")
    parser.add_argument("--publisher-bitrate", type=int, default=2_500_000)
    parser.add_argument("--consent-timeout", type=float, default=30.0)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format=f"%(asctime)s worker-{args.index} %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        uvloop.run(run(args))
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep working without it
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
