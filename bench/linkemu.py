"""A user-space link emulator: a UDP relay that is a weak link, one model per direction.

This kernel has no netem (``tc qdisc ... netem`` is unknown; tbf and htb exist, but
nothing adds delay), so tests and the benchmark put this relay between a viewer and the
SFU instead. Each direction is a :class:`LinkModel` (sans-I/O, ``now`` passed in):

    offer(packet, now, route) -> random loss, then a bottleneck at ``rate`` with a
        bounded byte queue (tail drop when full, like a router's buffer)
    release(now) -> packets whose one-way ``delay`` (+ ``jitter``) has passed
    next_deadline() -> when release() next has something to do

:class:`LinkEmulator` is the thin asyncio layer: one client-facing socket, one socket
toward the server per client (the SFU tells its peers apart by address), and one
``loop.call_at`` timer armed at the earlier of the two models' deadlines. Parameters can
change while it runs (:meth:`LinkEmulator.update`); counters are per direction.

A WebRTC client learns the SFU's address from the answer's ICE candidate:
:func:`via_relay` rewrites those lines so that the client talks to the relay.

    python -m bench.linkemu --listen 127.0.0.2:40000 --server 127.0.0.1:40000 \\
        --down-rate 300k --delay 150ms --loss 5%

Everything here runs from a plain install (no pytest, no dev-only imports).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import heapq
import json
import logging
import math
import random
import re
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Address = tuple[str, int]
R = TypeVar("R", bound=Hashable)

MTU = 1500
"""The queue always holds at least two packets this large, so a low rate still passes."""


@dataclass(frozen=True)
class LinkParams:
    """One direction of a link. ``rate`` is bits per second of UDP payload (None: no
    limit, and then no queue); ``queue`` is the bottleneck buffer in bytes (None:
    ``queue_time`` worth at the rate); ``delay`` and ``jitter`` are seconds of one-way
    delay added after the bottleneck (jitter is uniform in +-jitter and never reorders
    packets unless ``reorder``); ``loss`` is the probability of a random drop."""

    rate: float | None = None
    queue: int | None = None
    queue_time: float = 0.08
    delay: float = 0.0
    jitter: float = 0.0
    reorder: bool = False
    loss: float = 0.0
    spare_handshake: bool = True
    """Never lose STUN or DTLS handshake records (a lost handshake only slows the start)."""
    spare_payload_types: frozenset[int] = frozenset()
    """RTP payload types never lost (SRTP leaves the header clear), e.g. RTX in a test of
    the SFU's repair."""

    def __post_init__(self) -> None:
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of bits/s, not {self.rate!r}")
        if self.queue is not None and self.queue < 0:
            raise ValueError(f"queue must be >= 0 bytes, not {self.queue!r}")
        for name in ("queue_time", "delay", "jitter"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be >= 0 seconds, not {value!r}")
        if not 0 <= self.loss <= 1:
            raise ValueError(f"loss must be within 0..1, not {self.loss!r}")

    def queue_limit(self) -> int | None:
        """The bottleneck's buffer in bytes, or None when there is no rate limit."""
        if self.rate is None:
            return None
        if self.queue is not None:
            return self.queue
        return max(2 * MTU, int(self.rate * self.queue_time / 8))


def spared(packet: bytes, params: LinkParams) -> bool:
    """Whether random loss leaves this datagram alone (RFC 7983 demultiplexing)."""
    if not packet:
        return False
    first = packet[0]
    if params.spare_handshake and (first < 4 or 20 <= first <= 22):
        return True  # STUN; DTLS change_cipher_spec, alert, handshake (not application data)
    if (
        params.spare_payload_types
        and 128 <= first < 192
        and len(packet) > 1
        and not 192 <= packet[1] <= 223  # RTCP
        and packet[1] & 0x7F in params.spare_payload_types
    ):
        return True
    return False


@dataclass
class LinkCounters:
    """What one direction has done since it was made."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    dropped_queue: int = 0
    dropped_loss: int = 0
    max_queue_bytes: int = 0
    max_queue_delay: float = 0.0

    def snapshot(self) -> LinkCounters:
        return dataclasses.replace(self)


class LinkModel(Generic[R]):
    """One direction: loss, then a rate-limited FIFO with a byte bound, then a delay line.

    The bottleneck is exact, not a token bucket: the queue's head leaves ``size * 8 /
    rate`` after the link became free for it, so no burst ever beats the rate. ``route``
    rides along with each packet (the relay puts the destination there).
    """

    def __init__(self, params: LinkParams, seed: int = 1) -> None:
        self.params = params
        self.counters = LinkCounters()
        self._random = random.Random(seed)
        self._queue: deque[tuple[bytes, R]] = deque()
        self._queued_bytes = 0
        self._head_done = 0.0  # when the queue's head has been serialised (queue non-empty)
        self._line: list[tuple[float, int, bytes, R]] = []  # heap: (due, order, packet, route)
        self._order = 0
        self._last_due = -math.inf
        self._recent: deque[tuple[float, int]] = deque()  # (time, bytes) delivered, 1 s

    # -- input ---------------------------------------------------------------------------

    def offer(self, packet: bytes, now: float, route: R) -> bool:
        """A packet arrives at the link; False if it was dropped (loss or a full queue)."""
        counters = self.counters
        counters.packets_in += 1
        counters.bytes_in += len(packet)
        self._serialise(now)
        params = self.params
        if params.loss > 0 and not spared(packet, params) and self._random.random() < params.loss:
            counters.dropped_loss += 1
            return False
        limit = params.queue_limit()
        if limit is None or params.rate is None:
            self._launch(packet, route, now)
            return True
        if self._queue and self._queued_bytes + len(packet) > limit:
            counters.dropped_queue += 1
            return False
        if not self._queue:
            self._head_done = now + len(packet) * 8 / params.rate
        self._queue.append((packet, route))
        self._queued_bytes += len(packet)
        counters.max_queue_bytes = max(counters.max_queue_bytes, self._queued_bytes)
        counters.max_queue_delay = max(counters.max_queue_delay, self.queue_delay(now))
        return True

    def configure(self, params: LinkParams, now: float) -> None:
        """New parameters from ``now`` on. A packet being serialised finishes its remaining
        bits at the new rate; a lifted limit sends the whole queue on at once; a smaller
        queue is not emptied, it takes nothing new until it drains below the bound."""
        self._serialise(now)
        old = self.params.rate
        self.params = params
        if not self._queue or old is None:
            return
        if params.rate is None:
            while self._queue:
                packet, route = self._queue.popleft()
                self._launch(packet, route, now)
            self._queued_bytes = 0
        elif params.rate != old:
            remaining_bits = (self._head_done - now) * old
            self._head_done = now + remaining_bits / params.rate

    # -- output --------------------------------------------------------------------------

    def release(self, now: float) -> list[tuple[bytes, R]]:
        """The packets that have reached the far end by ``now``, in delivery order."""
        self._serialise(now)
        line = self._line
        out: list[tuple[bytes, R]] = []
        counters = self.counters
        while line and line[0][0] <= now:
            _, _, packet, route = heapq.heappop(line)
            out.append((packet, route))
            counters.packets_out += 1
            counters.bytes_out += len(packet)
            self._recent.append((now, len(packet)))
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`release` next has work: the queue's head is sent or a packet lands."""
        times = []
        if self._queue:
            times.append(self._head_done)
        if self._line:
            times.append(self._line[0][0])
        return min(times) if times else None

    # -- figures -------------------------------------------------------------------------

    def queue_delay(self, now: float) -> float:
        """How long a packet arriving now waits before its first bit is sent."""
        self._serialise(now)
        rate = self.params.rate
        if not self._queue or rate is None:
            return 0.0
        head = len(self._queue[0][0])
        return max(0.0, self._head_done - now) + (self._queued_bytes - head) * 8 / rate

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def in_flight(self) -> int:
        """Packets accepted but not yet delivered (queued or on the delay line)."""
        return len(self._queue) + len(self._line)

    def achieved_rate(self, now: float, window: float = 1.0) -> float:
        """Bits per second delivered over the last ``window`` seconds (at most 1 s kept)."""
        recent = self._recent
        while recent and recent[0][0] <= now - 1.0:
            recent.popleft()
        total = sum(size for t, size in recent if t > now - window)
        return total * 8 / window

    # -- internals -----------------------------------------------------------------------

    def _serialise(self, now: float) -> None:
        """Move every packet whose last bit has left the bottleneck onto the delay line."""
        queue = self._queue
        rate = self.params.rate
        while queue and self._head_done <= now:
            packet, route = queue.popleft()
            self._queued_bytes -= len(packet)
            done = self._head_done
            self._launch(packet, route, done)
            if queue and rate is not None:
                self._head_done = done + len(queue[0][0]) * 8 / rate

    def _launch(self, packet: bytes, route: R, sent: float) -> None:
        params = self.params
        due = sent + params.delay
        if params.jitter:
            due = max(sent, due + self._random.uniform(-params.jitter, params.jitter))
        if not params.reorder:
            due = max(due, self._last_due)
        self._last_due = max(self._last_due, due)
        self._order += 1
        heapq.heappush(self._line, (due, self._order, packet, route))


# -- SDP -----------------------------------------------------------------------------------

_CANDIDATE = re.compile(
    r"^a=candidate:(?P<foundation>\S+) (?P<component>\d+) (?P<transport>\S+) (?P<priority>\d+)"
    r" (?P<address>\S+) (?P<port>\d+)(?P<rest> typ .*)?$"
)


def via_relay(description: str, relay: Address) -> str:
    """Point a client at the relay: every UDP candidate of ``description`` (the SFU's
    answer) gets the relay's address and port; other candidates (TCP) are removed, since
    the client could reach the SFU around the relay through them, and so are duplicates
    the rewrite makes within one media section."""
    host, port = relay
    newline = "\r\n" if "\r\n" in description else "\n"
    out: list[str] = []
    seen: set[str] = set()
    for line in description.split(newline):
        if line.startswith("m="):
            seen = set()
        match = _CANDIDATE.match(line)
        if match is None:
            out.append(line)
            continue
        if match["transport"].lower() != "udp":
            continue
        if match["component"] in seen:
            continue
        seen.add(match["component"])
        out.append(
            f"a=candidate:{match['foundation']} {match['component']} {match['transport']}"
            f" {match['priority']} {host} {port}{match['rest'] or ''}"
        )
    return newline.join(out)


# -- the asyncio relay ---------------------------------------------------------------------


def _udp_socket(family: int, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class LinkEmulator:
    """A UDP relay to one server with a :class:`LinkModel` each way: ``down`` toward the
    clients, ``up`` toward the server. All clients share the two links (a site's clients
    share its link). Each client gets its own socket toward the server, so the server sees
    one address per client, as it would through a NAT."""

    def __init__(
        self,
        server: Address,
        down: LinkParams | None = None,
        up: LinkParams | None = None,
        *,
        listen: Address = ("127.0.0.1", 0),
        seed: int = 1,
        max_clients: int = 64,
    ) -> None:
        self.server = server
        self.listen = listen
        self.down: LinkModel[Address] = LinkModel(down or LinkParams(), seed)
        self.up: LinkModel[Address] = LinkModel(up or LinkParams(), seed + 1)
        self.max_clients = max_clients
        self.send_errors = 0
        self.refused_clients = 0
        self._clients: dict[Address, socket.socket] = {}
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    async def start(self) -> None:
        """Bind the client-facing socket (``listen``, port 0 picks one)."""
        self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
        self._sock = _udp_socket(family, self.listen)
        self._loop.add_reader(self._sock.fileno(), self._read_clients)

    @property
    def address(self) -> Address:
        """Where clients send: the relay's own address (put it in the answer)."""
        assert self._sock is not None, "start() first"
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def clients(self) -> int:
        """Clients seen so far (each has its own socket toward the server)."""
        return len(self._clients)

    def now(self) -> float:
        assert self._loop is not None, "start() first"
        return self._loop.time()

    def model(self, direction: str) -> LinkModel[Address]:
        if direction not in ("down", "up"):
            raise ValueError(f"direction is 'down' or 'up', not {direction!r}")
        return self.down if direction == "down" else self.up

    def update(self, direction: str, **changes: object) -> LinkParams:
        """Change one direction's parameters while running (``rate=None`` lifts a limit)."""
        model = self.model(direction)
        params = dataclasses.replace(model.params, **changes)  # type: ignore[arg-type]
        if self._loop is None:  # not started: nothing waits yet
            model.configure(params, 0.0)
            return params
        model.configure(params, self.now())
        self._flush(self.now())
        return params

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None and not self._loop.is_closed():
            for sock in [self._sock, *self._clients.values()]:
                if sock is not None and sock.fileno() >= 0:
                    self._loop.remove_reader(sock.fileno())
        for sock in [self._sock, *self._clients.values()]:
            if sock is not None:
                sock.close()
        self._clients.clear()

    async def __aenter__(self) -> LinkEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- sockets ---------------------------------------------------------------------------

    def _read_clients(self) -> None:
        assert self._sock is not None
        now = self.now()
        for data, addr in _drain(self._sock):
            client = (addr[0], addr[1])
            if client not in self._clients and not self._admit(client):
                continue
            self.up.offer(data, now, client)
        self._flush(now)

    def _admit(self, client: Address) -> bool:
        assert self._loop is not None
        if len(self._clients) >= self.max_clients:
            self.refused_clients += 1
            if self.refused_clients == 1:
                log.warning(
                    "more than %d clients: %s and later ones ignored", self.max_clients, client
                )
            return False
        family = socket.AF_INET6 if ":" in self.server[0] else socket.AF_INET
        upstream = _udp_socket(family, ("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        self._clients[client] = upstream
        self._loop.add_reader(upstream.fileno(), self._read_server, client, upstream)
        log.info("client %s:%d -> server via port %d", *client, upstream.getsockname()[1])
        return True

    def _read_server(self, client: Address, upstream: socket.socket) -> None:
        now = self.now()
        for data, _ in _drain(upstream):
            self.down.offer(data, now, client)
        self._flush(now)

    def _flush(self, now: float) -> None:
        """Send what is due, then arm the one timer at the next deadline."""
        if self._sock is None or self._sock.fileno() < 0:
            return
        for data, client in self.down.release(now):
            self._send(self._sock, data, client)
        for data, client in self.up.release(now):
            upstream = self._clients.get(client)
            if upstream is not None:
                self._send(upstream, data, self.server)
        self._arm()

    def _send(self, sock: socket.socket, data: bytes, to: Address) -> None:
        try:
            sock.sendto(data, to)
        except OSError:  # a full socket buffer or an unreachable port: the packet is lost
            self.send_errors += 1

    def _arm(self) -> None:
        assert self._loop is not None
        deadlines = [
            d for d in (self.down.next_deadline(), self.up.next_deadline()) if d is not None
        ]
        if not deadlines:
            return
        deadline = min(deadlines)
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        at, self._timer_at = self._timer_at, math.inf
        self._flush(max(self.now(), at))


def _drain(sock: socket.socket, most: int = 64) -> list[tuple[bytes, tuple[str, int]]]:
    """Up to ``most`` datagrams waiting on a non-blocking socket."""
    out = []
    for _ in range(most):
        try:
            data, addr = sock.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # e.g. ICMP port unreachable reported on the socket
            continue
        out.append((data, addr))
    return out


# -- command line --------------------------------------------------------------------------

_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate(text: str) -> float | None:
    """``300k``, ``1.5M``, ``2mbit``, ``800000`` -> bits/s; ``none``/``0`` -> no limit."""
    value = text.strip().lower()
    if value in ("none", "off", "0", "inf"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmg]?)(?:bit|bps|b/s|bit/s)?", value)
    if match is None:
        raise ValueError(f"not a rate: {text!r} (e.g. 300k, 1.5M, 800000)")
    rate = float(match[1]) * _UNITS[match[2]]
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"not a rate: {text!r}")
    return rate


def parse_duration(text: str) -> float:
    """``150ms``, ``0.2s``, ``150`` (milliseconds) -> seconds."""
    value = text.strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|us)?", value)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 150ms, 0.2s)")
    scale = {"ms": 1e-3, None: 1e-3, "s": 1.0, "us": 1e-6}[match[2]]
    seconds = float(match[1]) * scale
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {text!r}")
    return seconds


def parse_loss(text: str) -> float:
    """``5%`` or ``0.05`` -> 0.05."""
    value = text.strip()
    try:
        loss = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(f"not a loss rate: {text!r} (e.g. 5% or 0.05)") from None
    if not 0 <= loss <= 1:
        raise ValueError(f"loss must be within 0..100%: {text!r}")
    return loss


def parse_queue(text: str) -> tuple[int | None, float | None]:
    """``80ms`` (time at the rate) or ``30kB``/``30000`` (bytes) -> (bytes, seconds)."""
    value = text.strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*(k|m)?b?", value)
    if match is not None and not value.endswith(("ms", "s")):
        size = float(match[1]) * {None: 1, "k": 1000, "m": 1_000_000}[match[2]]
        if not math.isfinite(size) or size > 2**40:
            raise ValueError(f"not a queue size: {text!r}")
        return int(size), None
    try:
        return None, parse_duration(value)
    except ValueError:
        raise ValueError(f"not a queue size: {text!r} (e.g. 80ms or 30kB)") from None


def parse_address(text: str, default_host: str = "127.0.0.1") -> Address:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT``."""
    value = text.strip()
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = default_host, value
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not an address: {text!r} (HOST:PORT)")
    return host, int(port)


def _typed(parse: Callable[[str], object]) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.linkemu",
        description="A weak link between WebRTC clients and a server: a UDP relay with a "
        "rate limit and router-like queue, delay, jitter and loss, per direction. 'down' is "
        "toward the clients, 'up' toward the server. Point the clients at --listen (see "
        "bench/README.md).",
    )
    parser.add_argument(
        "--listen",
        type=_typed(parse_address),
        default=("127.0.0.1", 0),
        help="HOST:PORT or PORT clients send to (default 127.0.0.1, any port)",
    )
    parser.add_argument(
        "--server",
        type=_typed(parse_address),
        required=True,
        help="HOST:PORT of the server (the SFU worker's UDP port)",
    )
    for prefix, where in (
        ("", "both directions"),
        ("down-", "toward the clients"),
        ("up-", "toward the server"),
    ):
        parser.add_argument(
            f"--{prefix}rate",
            type=_typed(parse_rate),
            default=argparse.SUPPRESS,
            help=f"rate limit {where}: 300k, 1.5M (bits/s of UDP payload)",
        )
        parser.add_argument(
            f"--{prefix}queue",
            type=_typed(parse_queue),
            default=argparse.SUPPRESS,
            help=f"bottleneck buffer {where}: 80ms at the rate (default) or 30kB",
        )
        parser.add_argument(
            f"--{prefix}delay",
            type=_typed(parse_duration),
            default=argparse.SUPPRESS,
            help=f"one-way delay {where}: 150ms",
        )
        parser.add_argument(
            f"--{prefix}jitter",
            type=_typed(parse_duration),
            default=argparse.SUPPRESS,
            help=f"+- jitter {where}: 20ms (no reordering unless --reorder)",
        )
        parser.add_argument(
            f"--{prefix}loss",
            type=_typed(parse_loss),
            default=argparse.SUPPRESS,
            help=f"random loss {where}: 5%% or 0.05",
        )
    parser.add_argument("--reorder", action="store_true", help="let jitter reorder packets")
    parser.add_argument(
        "--lose-handshake",
        action="store_true",
        help="random loss may hit STUN and DTLS handshake packets too",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the loss and jitter draws")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between reports")
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="stop after this long (0: never)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per report line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each new client")
    return parser


def params_from_args(args: argparse.Namespace, direction: str) -> LinkParams:
    """The options for one direction: ``--down-rate`` over ``--rate``, and so on."""
    values = vars(args)

    def pick(name: str) -> object:
        specific = f"{direction}_{name}"
        if specific in values:
            return values[specific]
        return values.get(name)

    changes: dict[str, object] = {}
    for name in ("rate", "delay", "jitter", "loss"):
        value = pick(name)
        if value is not None:
            changes[name] = value
    queue = pick("queue")
    if isinstance(queue, tuple):
        size, seconds = queue
        if size is not None:
            changes["queue"] = size
        if seconds is not None:
            changes["queue_time"] = seconds
    changes["reorder"] = args.reorder
    changes["spare_handshake"] = not args.lose_handshake
    return dataclasses.replace(LinkParams(), **changes)  # type: ignore[arg-type]


@dataclass
class _Window:
    """Counters at the start of a report interval."""

    at: float
    down: LinkCounters = field(default_factory=LinkCounters)
    up: LinkCounters = field(default_factory=LinkCounters)


def report(emu: LinkEmulator, since: _Window, now: float, started: float) -> dict[str, object]:
    """Figures over the interval since ``since``, per direction."""
    span = max(now - since.at, 1e-9)
    out: dict[str, object] = {"t": round(now - started, 3), "clients": emu.clients}
    for name, model, before in (("down", emu.down, since.down), ("up", emu.up, since.up)):
        c = model.counters
        out[name] = {
            "in_pps": round((c.packets_in - before.packets_in) / span, 1),
            "in_kbps": round((c.bytes_in - before.bytes_in) * 8 / span / 1000, 1),
            "out_kbps": round((c.bytes_out - before.bytes_out) * 8 / span / 1000, 1),
            "limit_kbps": None if model.params.rate is None else model.params.rate / 1000,
            "dropped_queue": c.dropped_queue - before.dropped_queue,
            "dropped_loss": c.dropped_loss - before.dropped_loss,
            "queue_ms": round(model.queue_delay(now) * 1000, 1),
            "queue_bytes": model.queued_bytes,
        }
    return out


def format_report(figures: dict[str, object]) -> str:
    parts = [f"{figures['t']:7.1f}s clients {figures['clients']}"]
    for name in ("down", "up"):
        d = figures[name]
        assert isinstance(d, dict)
        limit = "-" if d["limit_kbps"] is None else f"{d['limit_kbps']:g}"
        parts.append(
            f"{name:>4} in {d['in_pps']:6.0f} pkt/s {d['in_kbps']:7.0f} -> out {d['out_kbps']:7.0f}"
            f" kbit/s (limit {limit}) drop queue {d['dropped_queue']:4d} loss {d['dropped_loss']:4d}"
            f" queue {d['queue_ms']:5.0f} ms"
        )
    return " | ".join(parts)


async def run(args: argparse.Namespace) -> None:
    emu = LinkEmulator(
        args.server,
        params_from_args(args, "down"),
        params_from_args(args, "up"),
        listen=args.listen,
        seed=args.seed,
    )
    await emu.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host, port = emu.address
    print(
        f"relaying {host}:{port} <-> {args.server[0]}:{args.server[1]}\n"
        f"  down: {emu.down.params}\n  up:   {emu.up.params}",
        file=sys.stderr,
        flush=True,
    )
    started = emu.now()
    window = _Window(started, emu.down.counters.snapshot(), emu.up.counters.snapshot())
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), args.interval)
            except TimeoutError:
                pass
            now = emu.now()
            figures = report(emu, window, now, started)
            print(json.dumps(figures) if args.json else format_report(figures), flush=True)
            window = _Window(now, emu.down.counters.snapshot(), emu.up.counters.snapshot())
            if args.seconds and now - started >= args.seconds:
                break
    finally:
        emu.close()
        totals = {
            name: dataclasses.asdict(m.counters) for name, m in (("down", emu.down), ("up", emu.up))
        }
        print("totals " + json.dumps(totals), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.interval > 0:
        parser.error("--interval must be > 0 seconds")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run(args))
    except OSError as exc:
        print(f"linkemu: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
