"""Prometheus metrics of the control process and, refreshed on each scrape, of the media workers.

Room, participant and track gauges follow the conference's events (``on_event`` is a
conference listener) rather than walking the rooms on each scrape, so a scrape costs the
same with 10 rooms or 10,000. The media workers are separate processes, so their
counters are asked for (the worker ``stats`` request) when Prometheus scrapes.

Names kept from the first version (``bench/fanout.py`` and the tests read them):
``telebridge_worker_packets``, ``telebridge_worker_cpu_seconds``,
``telebridge_worker_events_total``, ``telebridge_sessions``, ``telebridge_http_requests``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

logger = logging.getLogger(__name__)

ROLES = ("lead", "participant", "observer")
KINDS = ("audio", "video")
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed", "dropped")
JOIN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# Worker stats counters exposed as their own gauges: (stats counter, metric attribute, label)
_DIRECTIONAL = (
    ("packets_in", "worker_packets", "in"),
    ("packets_out", "worker_packets", "out"),
    ("bytes_in", "worker_bytes", "in"),
    ("bytes_out", "worker_bytes", "out"),
    ("nacks_in", "worker_nacks", "in"),
    ("nacks_out", "worker_nacks", "out"),
    ("plis_in", "worker_plis", "in"),
    ("plis_out", "worker_plis", "out"),
)
STATS_TIMEOUT = 2.0  # seconds; a scrape must not hang on a stuck worker


class Worker(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def alive(self) -> bool: ...

    async def request(
        self, method: str, params: dict[str, Any], timeout: float = ...
    ) -> dict[str, Any]: ...


class Pool(Protocol):
    @property
    def workers(self) -> Sequence[Worker]: ...


class _RoomState:
    __slots__ = ("participants", "tracks")

    def __init__(self) -> None:
        self.participants: dict[str, str] = {}  # identity -> role
        self.tracks: dict[str, str] = {}  # track id -> kind


class Metrics:
    """One registry per server (not the process-global one), so tests can run several."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # -- conference, from events
        self.rooms = Gauge("telebridge_rooms", "Live rooms", registry=r)
        self.participants = Gauge(
            "telebridge_participants", "Participants in live rooms by role", ["role"], registry=r
        )
        self.tracks = Gauge(
            "telebridge_tracks", "Published tracks in live rooms by kind", ["kind"], registry=r
        )
        self.events = Counter(
            "telebridge_room_events", "Room-wide conference events by name", ["event"], registry=r
        )
        self.join_latency = Histogram(
            "telebridge_join_seconds",
            "Time from a WebSocket join request to its answer",
            buckets=JOIN_BUCKETS,
            registry=r,
        )
        # -- /ws fan-out (ws.Hub): an event is serialised once for all its recipients
        self.ws_events_serialised = Counter(
            "telebridge_ws_events_serialised",
            "Room events serialised for /ws connections (once each, whatever the audience)",
            registry=r,
        )
        self.ws_events_sent = Counter(
            "telebridge_ws_events_sent",
            "Room events queued to /ws connections (one per recipient)",
            registry=r,
        )
        # -- server API and webhooks
        self.api_requests = Counter(
            "telebridge_api_requests",
            "Server API requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "telebridge_webhook_deliveries",
            "Webhook deliveries by outcome (retried counts failed attempts that will be tried again)",
            ["outcome"],
            registry=r,
        )
        # -- WHIP/WHEP (app.py sets these)
        self.sessions = Gauge("telebridge_sessions", "Media sessions by kind", ["kind"], registry=r)
        self.requests = Counter(
            "telebridge_http_requests",
            "WHIP/WHEP requests by outcome",
            ["endpoint", "status"],
            registry=r,
        )
        # -- media workers, refreshed on scrape (cumulative since the worker started)
        self.worker_up = Gauge(
            "telebridge_worker_up",
            "1 if the media worker answered the last scrape",
            ["worker"],
            registry=r,
        )
        self.worker_packets = Gauge(
            "telebridge_worker_packets",
            "Packets through a media worker",
            ["worker", "direction"],
            registry=r,
        )
        self.worker_bytes = Gauge(
            "telebridge_worker_bytes",
            "Bytes through a media worker",
            ["worker", "direction"],
            registry=r,
        )
        self.worker_nacks = Gauge(
            "telebridge_worker_nacks",
            "Generic NACKs received and sent",
            ["worker", "direction"],
            registry=r,
        )
        self.worker_plis = Gauge(
            "telebridge_worker_plis", "PLIs received and sent", ["worker", "direction"], registry=r
        )
        self.worker_retransmissions = Gauge(
            "telebridge_worker_retransmissions",
            "Packets resent to viewers from the NACK cache",
            ["worker"],
            registry=r,
        )
        self.worker_dropped = Gauge(
            "telebridge_worker_dropped",
            "Datagrams and packets a media worker dropped",
            ["worker"],
            registry=r,
        )
        self.worker_cpu = Gauge(
            "telebridge_worker_cpu_seconds",
            "CPU seconds used by a media worker",
            ["worker"],
            registry=r,
        )
        # Admission control and placement (signaling/placement.py): the load each worker
        # reports every half second, the pipes into it, and the sessions refused when full.
        self.worker_load = Gauge(
            "telebridge_worker_load",
            "A media worker's last load report: cpu (share of a core over 1 s), wait (share "
            "of 1 s it waited for a CPU), consumers, "
            "queue_bytes (its UDP receive queue), packets_out_per_s, loop_late (seconds its "
            "latest timer ran late), overloaded (1: no probing, no new sessions), pipes_in",
            ["worker", "measure"],
            registry=r,
        )
        self.sessions_refused = Counter(
            "telebridge_sessions_refused",
            "New media sessions refused because every worker was at capacity",
            ["kind"],
            registry=r,
        )
        self.worker_loop_lag = Gauge(
            "telebridge_worker_loop_lag_seconds",
            "Event loop lag of a media worker",
            ["worker"],
            registry=r,
        )
        self.worker_events = Gauge(
            "telebridge_worker_events_total",
            "Cumulative packet and feedback counts of a media worker (packets, NACKs, PLIs, retransmissions)",
            ["worker", "name"],
            registry=r,
        )
        # -- simulcast: each viewer's layer and link (from the viewers' own events)
        self.layer_switches = Counter(
            "telebridge_layer_switches",
            "Viewers' simulcast layer changes, by the layer switched to (0 lowest)",
            ["layer"],
            registry=r,
        )
        self.temporal_changes = Counter(
            "telebridge_temporal_layer_changes",
            "Viewers' changes of the highest VP8 temporal layer sent (3: all; each step "
            "down halves the frame rate), by the layer changed to",
            ["temporal"],
            registry=r,
        )
        self.video_pauses = Counter(
            "telebridge_video_pauses",
            "Viewers' video paused (audio only: the link cannot carry the lowest layer) "
            "and resumed",
            ["state"],
            registry=r,
        )
        self.viewer_estimate = Histogram(
            "telebridge_viewer_estimate_bits_per_second",
            "A viewer's estimated link capacity at each of its layer changes",
            buckets=(100e3, 200e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6),
            registry=r,
        )
        for role in ROLES:
            self.participants.labels(role)
        for kind in KINDS:
            self.tracks.labels(kind)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome)
        self._rooms: dict[str, _RoomState] = {}

    def on_ws_fanout(self, recipients: int) -> None:
        """ws.Hub: one event serialised and queued to ``recipients`` connections."""
        self.ws_events_serialised.inc()
        self.ws_events_sent.inc(recipients)

    # -- conference events ----------------------------------------------------------------------
    def on_event(self, event: str, room: str, data: dict[str, Any], target: str | None) -> None:
        """Conference listener: keep the gauges in step. Never raises (a bad event is logged)."""
        if event == "layer" and data.get("change") == "temporal":
            self.temporal_changes.labels(str(data.get("temporal", "?"))[:4]).inc()
        elif event == "layer":
            self.layer_switches.labels(str(data.get("layer", "?"))[:4]).inc()
            estimate = data.get("estimate")
            if isinstance(estimate, (int, float)) and estimate > 0:
                self.viewer_estimate.observe(estimate)
        elif event == "video_paused":
            self.video_pauses.labels("paused" if data.get("paused") else "resumed").inc()
        if target is not None:
            return
        try:
            self._apply(event, room, data)
        except (KeyError, TypeError, AttributeError):
            logger.warning("metrics: unexpected %s event data %r", event, data, exc_info=True)

    def _apply(self, event: str, room: str, data: dict[str, Any]) -> None:
        self.events.labels(event).inc()
        if event == "room_ended":
            state = self._rooms.pop(room, None)
            if state is not None:
                for role in state.participants.values():
                    self.participants.labels(role).dec()
                for kind in state.tracks.values():
                    self.tracks.labels(kind).dec()
            self.rooms.set(len(self._rooms))
            return
        if event not in (
            "room_started",
            "participant_joined",
            "participant_left",
            "role_changed",
            "track_published",
            "track_unpublished",
        ):
            return
        state = self._rooms.get(room)
        if state is None:
            if event != "room_started" and event != "participant_joined":
                return  # late news of a room already ended
            state = self._rooms[room] = _RoomState()
            self.rooms.set(len(self._rooms))
        if event == "participant_joined":
            participant = data["participant"]
            identity, role = str(participant["identity"]), str(participant["role"])
            previous = state.participants.get(identity)
            if previous is not None:
                self.participants.labels(previous).dec()
            state.participants[identity] = role
            self.participants.labels(role).inc()
        elif event == "participant_left":
            left: str | None = state.participants.pop(str(data["identity"]), None)
            if left is not None:
                self.participants.labels(left).dec()
        elif event == "role_changed":
            identity, role = str(data["identity"]), str(data["role"])
            previous = state.participants.get(identity)
            if previous is not None and previous != role:
                self.participants.labels(previous).dec()
                self.participants.labels(role).inc()
                state.participants[identity] = role
        elif event == "track_published":
            track = data["track"]
            track_id, kind = str(track["id"]), str(track["kind"])
            if track_id not in state.tracks:
                state.tracks[track_id] = kind
                self.tracks.labels(kind).inc()
        elif event == "track_unpublished":
            gone: str | None = state.tracks.pop(str(data["track"]), None)
            if gone is not None:
                self.tracks.labels(gone).dec()

    def observe_join(self, seconds: float) -> None:
        """ws.py: a join answered, ``seconds`` after the request arrived."""
        self.join_latency.observe(seconds)

    def on_webhook(self, outcome: str) -> None:
        """webhooks.py: one delivery outcome (``delivered``, ``retried``, ``failed``, ``dropped``)."""
        self.webhook_deliveries.labels(outcome).inc()

    # -- scrape ---------------------------------------------------------------------------------
    async def refresh(self, pool: Pool | None) -> None:
        """Ask every media worker for its counters, all at once, each bounded by STATS_TIMEOUT."""
        if pool is None:
            return
        workers = list(pool.workers)
        results = await asyncio.gather(*(self._stats(w) for w in workers))
        for worker, stats in zip(workers, results, strict=True):
            label = str(worker.index)
            self.worker_up.labels(label).set(0 if stats is None else 1)
            load = getattr(worker, "load", None) or {}
            for measure in (
                "cpu",
                "wait",
                "consumers",
                "queue_bytes",
                "packets_out_per_s",
                "loop_late",
            ):
                self.worker_load.labels(label, measure).set(_number(load.get(measure)))
            self.worker_load.labels(label, "overloaded").set(1 if load.get("overloaded") else 0)
            pipes = getattr(worker, "pipes_in", None)
            if pipes is not None:
                self.worker_load.labels(label, "pipes_in").set(_number(pipes))
            if stats is not None:
                self._set_worker(label, stats)

    async def _stats(self, worker: Worker) -> dict[str, Any] | None:
        if not worker.alive:
            return None
        try:
            return await worker.request("stats", {}, timeout=STATS_TIMEOUT)
        except Exception as exc:  # WorkerError, TimeoutError, a worker that died meanwhile
            logger.info("metrics: worker %d did not give stats: %s", worker.index, exc)
            return None

    def _set_worker(self, label: str, stats: dict[str, Any]) -> None:
        counters = stats.get("counters") or {}
        for name, attribute, direction in _DIRECTIONAL:
            getattr(self, attribute).labels(label, direction).set(_number(counters.get(name)))
        self.worker_retransmissions.labels(label).set(_number(counters.get("retransmissions")))
        self.worker_dropped.labels(label).set(
            _number(counters.get("dropped"))
            + _number(stats.get("datagrams_dropped"))
            + _number(stats.get("intake_dropped"))
            + _number(stats.get("send_failed"))
        )
        self.worker_cpu.labels(label).set(_number(stats.get("cpu_seconds")))
        self.worker_loop_lag.labels(label).set(_number(stats.get("loop_lag_seconds")))
        for name, value in counters.items():
            self.worker_events.labels(label, str(name)).set(_number(value))

    def generate(self) -> bytes:
        return generate_latest(self.registry)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
