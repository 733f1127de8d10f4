"""The media worker process: the thin asyncio layer around one :class:`WorkerCore`.

Started by :class:`sfu.pool.WorkerPool` as ``python -m sfu.process``; it reads control
requests from stdin and writes responses and events to stdout (see :mod:`sfu.channel`).
Logs go to stderr. When the control process goes away (stdin closes), the worker exits.

This layer moves bytes and arms one timer: datagrams from the shared UDP port go into
the core through an :class:`~sfu.intake.Intake` (STUN and DTLS first, media in slices),
those from plain transports' sockets straight in; ``loop.call_at`` is armed at the
core's earliest deadline and re-armed whenever that moves earlier. With ``ice_tcp`` the
worker also accepts ICE-TCP connections on one TCP port (:class:`IceTcpProtocol`), whose
unframed packets go into the core the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import resource
import socket
import struct
import sys
import time
from collections.abc import Callable
from math import inf
from typing import Any, cast

from aiortc.rtcdtlstransport import RTCCertificate

from sfu import channel
from sfu.control import ControlError
from sfu.ice import Address
from sfu.ice_tcp import FramingError, TcpAddress, TcpPath, frame
from sfu.intake import Intake
from sfu.overload import LOAD_INTERVAL, LOAD_WINDOW
from sfu.plain_transport import PlainAddress, PlainSocket
from sfu.settings import MediaSettings
from sfu.worker import WorkerCore

logger = logging.getLogger("sfu.process")

SOCKET_BUFFER = 4 << 20  # a burst of keyframe packets to many viewers must not overflow
TCP_QUEUE_LIMIT = 1 << 20  # bytes queued on one ICE-TCP connection before packets are dropped
TCP_IDLE_CHECK = 10.0  # seconds a connection may carry no passing check / outlive its transport
MAX_TCP_CONNECTIONS = 4096  # per worker; more are closed at once
READ_BATCH = 4096  # datagrams read from the shared port per wake-up, at most


class Clock:
    """One ``loop.call_at`` at the core's earliest deadline (see :mod:`sfu.timers`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.core: WorkerCore | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.armed_at = inf

    def rearm(self) -> None:
        """Something may have gained an earlier deadline: arm for it."""
        if self.core is not None and self.core.timers.deadline < self.armed_at:
            self._arm(self.core.timers.deadline)

    def _arm(self, at: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.armed_at = at
        if at != inf:
            # Never a past or infinite time: uvloop cannot convert -inf to its clock.
            self.handle = self.loop.call_at(max(at, self.loop.time()), self._fire)

    def _fire(self) -> None:
        core = self.core
        assert core is not None
        now = self.loop.time()
        # How late the loop ran the timer: the event loop lag a metric reports.
        late = now - self.armed_at
        core.loop_lag = max(late, core.loop_lag * 0.95)
        core.lag_peak = max(core.lag_peak, late)
        self.handle = None
        self.armed_at = inf
        try:
            deadline = core.run_timers(now)
        except Exception:  # pragma: no cover - TimerQueue already isolates its owners
            logger.exception("worker: timers failed")
            deadline = now + 0.5
        self._arm(deadline)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class UdpPort:
    """The shared UDP port: read in batches into an :class:`Intake` (handshakes first,
    media in slices with the socket read again between them); sends go straight out."""

    intake: Intake  # by start(), once the core that handles the datagrams exists

    def __init__(
        self, loop: asyncio.AbstractEventLoop, clock: Clock, listen: str, port: int
    ) -> None:
        family, _, _, _, address = socket.getaddrinfo(listen, port, type=socket.SOCK_DGRAM)[0]
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.bind(address)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
                except OSError:
                    pass
        except OSError:
            self.sock.close()
            raise
        self.port: int = self.sock.getsockname()[1]
        self.loop = loop
        self.clock = clock
        self.draining = False
        self.send_errors = 0

    def start(self, handle: Callable[[bytes, Address, float], None]) -> None:
        self.intake = Intake(handle, self.loop.time)
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        intake = self.intake
        recvfrom = self.sock.recvfrom
        for _ in range(READ_BATCH):
            try:
                data, addr = recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                logger.debug("udp receive: %s", exc)
                break
            intake.put(data, (addr[0], addr[1]))
        if intake.media and not self.draining:
            self.draining = True
            self.loop.call_soon(self._drain)
        self.clock.rearm()

    def _drain(self) -> None:
        if self.intake.drain():
            self.loop.call_soon(self._drain)  # after the loop has read the socket again
        else:
            self.draining = False
        self.clock.rearm()

    def sendto(self, data: bytes | bytearray, addr: Address) -> None:
        """A datagram the kernel cannot take now (its send buffer full, the route gone) is
        dropped and counted, as a router would: never queued behind, never raised into
        the core."""
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            self.send_errors += 1
            if self.send_errors < 20 or self.send_errors % 10_000 == 0:
                logger.warning("udp send to %s failed (%d so far): %s", addr, self.send_errors, exc)

    def counters(self) -> dict[str, int]:
        """What this layer dropped, for the worker's stats."""
        return {"intake_dropped": self.intake.dropped, "send_failed": self.send_errors}

    def queued_bytes(self) -> int:
        """Bytes waiting: in the kernel's receive queue and in the intake's media queue."""
        return queue_bytes(self.sock) + self.intake.queued_bytes

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


class LoopSocket:
    """A plain transport's non-blocking socket, read with ``loop.add_reader``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        unix: bool,
        bind: str,
        on_datagram: Callable[[bytes, Any, float], None],
    ) -> None:
        family = socket.AF_UNIX if unix else (socket.AF_INET6 if ":" in bind else socket.AF_INET)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.path = bind if unix else None
        try:
            self.sock.setblocking(False)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            if unix:
                old_umask = os.umask(0o177)  # the socket file is created 0600
                try:
                    self.sock.bind(bind)
                finally:
                    os.umask(old_umask)
            else:
                self.sock.bind((bind, 0))
        except OSError:
            self.sock.close()
            raise
        name = self.sock.getsockname()
        self.local: PlainAddress = name if unix else (name[0], name[1])
        self.loop = loop
        self.clock = clock
        self.on_datagram = on_datagram
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(64):  # bounded, so one busy socket cannot starve the others
            try:
                data, addr = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                logger.debug("plain socket %s: %s", self.local, exc)
                break
            try:
                self.on_datagram(data, addr, self.loop.time())
            except Exception:
                logger.exception("worker: error handling a plain datagram from %s", addr)
        self.clock.rearm()

    def sendto(self, data: bytes | bytearray, addr: PlainAddress) -> None:
        self.sock.sendto(data, addr)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


class TcpListener:
    """The worker's ICE-TCP port: its connections and the core they feed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self.loop = loop
        self.clock = clock
        self.core: WorkerCore | None = None
        self.connections: set[IceTcpProtocol] = set()
        self.errors = 0

    def protocol(self) -> IceTcpProtocol:
        return IceTcpProtocol(self)

    def close_all(self) -> None:
        for connection in list(self.connections):
            connection.close()


class IceTcpProtocol(asyncio.Protocol):
    """One accepted ICE-TCP connection (RFC 6544 passive side): unframe what arrives into
    the core, frame what the core sends. Closed when it is refused (a framing error, too
    many connections), when no check has passed on it within TCP_IDLE_CHECK seconds, and
    soon after the transport it carries closes."""

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.path: TcpPath | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        listener = self.listener
        core = listener.core
        peer = transport.get_extra_info("peername")
        if core is None or len(listener.connections) >= MAX_TCP_CONNECTIONS or not peer:
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.path = TcpPath(TcpAddress(peer[0], peer[1]), self.send, listener.loop.time())
        core.demux.add_tcp(self.path)
        listener.connections.add(self)
        self.timer = listener.loop.call_later(TCP_IDLE_CHECK, self._check)

    def data_received(self, data: bytes) -> None:
        path = self.path
        core = self.listener.core
        if path is None or core is None:
            return
        try:
            packets = path.decoder.feed(data)
        except FramingError as exc:
            logger.info("ice-tcp %r: %s; closing", path.addr, exc)
            self.close()
            return
        now = self.listener.loop.time()
        for packet in packets:
            try:
                core.receive_tcp(packet, path, now)
            except Exception:  # one bad packet must never stop the worker
                self.listener.errors += 1
                if self.listener.errors < 20 or self.listener.errors % 1000 == 0:
                    logger.exception("worker: error handling an ICE-TCP packet from %r", path.addr)
        self.listener.clock.rearm()

    def send(self, packet: bytes) -> None:
        """Frame and queue one packet; drop it when the peer is not reading (media copes
        with loss better than with a queue that grows without end)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > TCP_QUEUE_LIMIT:
            self.dropped += 1
            return
        transport.write(frame(packet))

    def _check(self) -> None:
        self.timer = None
        path = self.path
        if path is None:
            return
        bound = path.transport
        if bound is None or bound.closed:
            logger.debug("ice-tcp %r: no live transport; closing", path.addr)
            self.close()
            return
        self.timer = self.listener.loop.call_later(TCP_IDLE_CHECK, self._check)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.listener.connections.discard(self)
        core = self.listener.core
        if self.path is not None and core is not None:
            core.demux.remove_tcp(self.path)


SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux: the socket's memory counters


def queue_bytes(sock: Any) -> int:
    """Bytes the kernel holds in ``sock``'s receive queue (SO_MEMINFO's rmem_alloc, the
    datagrams' buffer sizes; 0 where unsupported): a worker falling behind shows here
    first, and its STUN and DTLS wait behind all of it."""
    try:
        return int(struct.unpack_from("I", sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))[0])
    except (OSError, struct.error, AttributeError):
        return 0


SCHEDSTAT = "/proc/thread-self/schedstat"


def run_queue_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat's
    second field; 0 where unreadable). A worker that waits is short of CPU because of
    other processes, which its own CPU share cannot show: on a machine shared with a
    load generator each worker stayed near 0.65 of a core while its packets queued."""
    try:
        with open(SCHEDSTAT, "rb") as file:
            return int(file.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class LoadReporter:
    """Every :data:`LOAD_INTERVAL`: the share of a core this process used over the last
    :data:`LOAD_WINDOW` (``time.process_time``), the share it waited for one, and the UDP
    queue, into the core's ``load`` event. The window is longer than the interval: a
    half-second share swings with each burst of handshakes."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, core: WorkerCore, queued: Callable[[], int]
    ) -> None:
        self.loop = loop
        self.core = core
        self.queued = queued
        self.samples: collections.deque[tuple[float, float, float]] = collections.deque(
            [(loop.time(), time.process_time(), run_queue_wait())],
            maxlen=round(LOAD_WINDOW / LOAD_INTERVAL) + 1,
        )
        self.handle = loop.call_later(LOAD_INTERVAL, self._fire)

    def _fire(self) -> None:
        now, cpu, wait = self.loop.time(), time.process_time(), run_queue_wait()
        # This timer's own lateness counts too: with no session there is no other timer.
        self.core.lag_peak = max(self.core.lag_peak, now - self.samples[-1][0] - LOAD_INTERVAL)
        first_now, first_cpu, first_wait = self.samples[0]
        self.samples.append((now, cpu, wait))
        span = now - first_now
        share = (cpu - first_cpu) / span if span > 0 else 0.0
        waited = (wait - first_wait) / span if span > 0 else 0.0
        try:
            self.core.report_load(now, share, self.queued(), waited)
        except Exception:  # pragma: no cover - a report must never stop the worker
            logger.exception("worker: load report failed")
        self.handle = self.loop.call_later(LOAD_INTERVAL, self._fire)

    def stop(self) -> None:
        self.handle.cancel()


class ControlLink:
    """Framed JSON over stdin/stdout."""

    def __init__(self, writer: asyncio.WriteTransport) -> None:
        self.writer = writer

    def write(self, message: dict[str, Any]) -> None:
        self.writer.write(channel.encode(message))


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    settings: MediaSettings = args.settings
    certificate = RTCCertificate.generateCertificate()
    reader = asyncio.StreamReader(limit=channel.MAX_MESSAGE + 4)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", 0)
    )
    write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(1, "wb", 0))
    link = ControlLink(write_transport)

    def emit(event: str, data: dict[str, Any]) -> None:
        link.write({"event": event, "data": data})

    clock = Clock(loop)
    udp = UdpPort(
        loop, clock, settings.listen, settings.base_port + args.index if settings.base_port else 0
    )

    listener = TcpListener(loop, clock)
    tcp_server: asyncio.AbstractServer | None = None
    tcp_port = 0
    if settings.ice_tcp:
        wanted = settings.tcp_base_port + args.index if settings.tcp_base_port else 0
        tcp_server = await loop.create_server(
            listener.protocol, host=settings.listen, port=wanted, reuse_address=True
        )
        tcp_port = tcp_server.sockets[0].getsockname()[1]

    def open_socket(
        unix: bool, bind: str, on_datagram: Callable[[bytes, Any, float], None]
    ) -> PlainSocket:
        return LoopSocket(loop, clock, unix, bind, on_datagram)

    core = WorkerCore(
        certificate,
        settings.announced,
        udp.port,
        udp.sendto,
        emit,
        settings,
        open_socket,
        tcp_port=tcp_port,
    )
    udp.start(core.receive)
    listener.core = core
    clock.core = core
    clock.rearm()
    load = LoadReporter(loop, core, udp.queued_bytes)

    link.write(
        {
            "event": "ready",
            "data": {
                "index": args.index,
                "port": core.port,
                "tcp_port": tcp_port,
                "pid": os.getpid(),
                "fingerprint": core.fingerprint[1],
            },
        }
    )
    logger.info(
        "worker %d listening on %s:%d%s (announcing %s)",
        args.index,
        settings.listen,
        core.port,
        f", ICE-TCP {tcp_port}" if tcp_port else "",
        settings.announced,
    )

    decoder = channel.Decoder()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for message in decoder.feed(data):
                link.write(handle(core, message, loop.time(), udp.counters))
            clock.rearm()
    except channel.ChannelError as exc:
        logger.error("worker: control channel broken: %s", exc)
    finally:
        clock.stop()
        load.stop()
        core.close_all("worker shutting down")
        udp.close()
        if tcp_server is not None:
            tcp_server.close()
            listener.close_all()


def handle(
    core: WorkerCore,
    message: dict[str, Any],
    now: float,
    io_counters: Callable[[], dict[str, int]],
) -> dict[str, Any]:
    """One framed request in, its framed answer out; nothing a request holds can raise."""
    request_id = message.get("id")
    method = message.get("method")
    params = message.get("params")
    if params is None:
        params = {}
    if not isinstance(method, str):
        return {
            "id": request_id,
            "error": {"code": "bad_request", "message": "method and params required"},
        }
    started = time.perf_counter()
    try:
        result = core.handle(method, params, now)
    except ControlError as exc:
        return {"id": request_id, "error": {"code": exc.code, "message": exc.message}}
    except Exception as exc:
        logger.exception("worker: request %s failed", method)
        return {
            "id": request_id,
            "error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"},
        }
    if method == "stats":
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        result["handle_ms"] = (time.perf_counter() - started) * 1000
        result.update(io_counters())  # what the I/O layer dropped
    return {"id": request_id, "result": result}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sfu.process")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument(
        "--settings",
        type=MediaSettings.from_json,
        default=MediaSettings(),
        help="MediaSettings as JSON",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.settings.log_level.upper(),
        format=f"%(asctime)s worker-{args.index} %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        uvloop.run(run(args))
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep working without it
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
