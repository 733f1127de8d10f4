"""Room events POSTed to the embedding app's endpoints, signed so the app can trust them.

Each ``[[webhooks]]`` entry gets its own bounded queue and one sender task, so events
reach a URL in the order they happened, a slow or dead endpoint delays only itself, and
the conference never waits: ``on_event`` serialises the event and appends it.

The request body is JSON::

    {"id": "<uuid4>", "event": "participant_joined", "room": "consult-42",
     "data": {...the protocol event's data...}, "created_at": 1767225600.123}

with the header ``Telebridge-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 keyed with the webhook's secret over ``f"{t}.{body}"`` (the raw body bytes,
as received). To verify, a receiver:

1. reads the raw body before parsing it;
2. splits the header on ``,`` into ``t`` and one or more ``v1`` values;
3. computes the HMAC over ``t + "." + body`` and compares it to each ``v1`` in constant
   time (``hmac.compare_digest``);
4. refuses a ``t`` more than 5 minutes from its own clock (a replayed request carries
   its old ``t``, which cannot be changed without breaking the signature);
5. answers 2xx quickly, and de-duplicates by ``id``: a delivery that timed out on our
   side may have arrived, and is sent again.

``verify_signature`` below does steps 2-4. A non-2xx answer, a timeout or a refused
connection is retried after 0.5, 1, 2, 4, 8 ... seconds, up to ``max_attempts`` tries
(a fresh ``t`` each time); then the event is logged and given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from signaling.config import WebhookConfig

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Telebridge-Signature"
DEFAULT_TOLERANCE = 300  # seconds
USER_AGENT = "telebridge-webhooks/1"
DROP_LOG_INTERVAL = 10.0  # seconds between "queue full" warnings for one URL


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Telebridge-Signature`` header value for ``body`` sent at ``timestamp``."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` and its timestamp is within
    ``tolerance`` seconds of ``now``: a receiver's whole check against forgery and replay."""
    raw = body.encode() if isinstance(body, str) else body
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            return False
        if name == "t":
            if timestamp is not None or not value.isdigit() or len(value) > 12:
                return False
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    # compare_digest needs ASCII strings; anything else is not our hex anyway.
    return any(v.isascii() and hmac.compare_digest(expected, v) for v in signatures)


class _Endpoint:
    """One URL: its queue, its sender task, its retry policy."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.events = frozenset(config.events) if config.events is not None else None
        self.queue: deque[tuple[str, bytes]] = deque()  # (event id, body)
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.sending = False
        self._last_drop_log = 0.0

    def wants(self, event: str) -> bool:
        return self.events is None or event in self.events

    def push(self, event_id: str, body: bytes) -> bool:
        """Append; if full, drop the oldest waiting event. False if one was dropped."""
        dropped = False
        if len(self.queue) >= self.config.queue_size:
            old_id, _ = self.queue.popleft()
            self.dropped += 1
            dropped = True
            now = time.monotonic()
            if now - self._last_drop_log >= DROP_LOG_INTERVAL:
                self._last_drop_log = now
                logger.warning(
                    "webhook %s: queue full (%d), dropped event %s (%d dropped so far)",
                    self.config.url,
                    self.config.queue_size,
                    old_id,
                    self.dropped,
                )
        self.queue.append((event_id, body))
        self.wake.set()
        return not dropped


class Webhooks:
    """Conference listener that delivers room-wide events to every configured URL."""

    def __init__(
        self,
        configs: Sequence[WebhookConfig],
        on_outcome: Callable[[str], None] | None = None,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
    ) -> None:
        self.endpoints = [_Endpoint(c) for c in configs]
        self.on_outcome = on_outcome
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False

    # -- producer side (sync, never blocks) -------------------------------------------------
    def on_event(self, event: str, room: str, data: dict[str, Any], target: str | None) -> None:
        """Conference listener. Events meant for one participant (``target``) never leave."""
        if target is not None or self._stopping:
            return
        endpoints = [e for e in self.endpoints if e.wants(event)]
        if not endpoints:
            return
        event_id = str(uuid.uuid4())
        payload = {
            "id": event_id,
            "event": event,
            "room": room,
            "data": data,
            "created_at": time.time(),
        }
        try:
            body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        except (TypeError, ValueError):
            logger.exception("webhook: cannot serialise %s event for room %s", event, room)
            return
        for endpoint in endpoints:
            if not endpoint.push(event_id, body):
                self._outcome("dropped")

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.endpoints or self._session is not None:
            return
        self._stopping = False
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        for endpoint in self.endpoints:
            endpoint.task = asyncio.create_task(
                self._run(endpoint), name=f"webhook {endpoint.config.url}"
            )
        logger.info("webhooks: delivering to %s", ", ".join(e.config.url for e in self.endpoints))

    async def stop(self, drain: float = 5.0) -> None:
        """Stop taking events, give queued ones up to ``drain`` seconds, then cancel."""
        self._stopping = True
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and any(
            (e.queue or e.sending) and e.task is not None for e in self.endpoints
        ):
            await asyncio.sleep(0.05)
        tasks = [e.task for e in self.endpoints if e.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for endpoint in self.endpoints:
            endpoint.task = None
            if endpoint.queue:
                logger.warning(
                    "webhook %s: %d events not delivered at shutdown",
                    endpoint.config.url,
                    len(endpoint.queue),
                )
        if self._session is not None:
            await self._session.close()
            self._session = None

    def pending(self) -> int:
        """Events queued or being sent, over all URLs."""
        return sum(len(e.queue) + (1 if e.sending else 0) for e in self.endpoints)

    # -- sender side ------------------------------------------------------------------------
    async def _run(self, endpoint: _Endpoint) -> None:
        while True:
            if not endpoint.queue:
                endpoint.wake.clear()
                await endpoint.wake.wait()
                continue
            event_id, body = endpoint.queue.popleft()
            endpoint.sending = True
            try:
                await self._deliver(endpoint, event_id, body)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end deliveries for this URL
                logger.exception("webhook %s: delivering %s failed", endpoint.config.url, event_id)
            finally:
                endpoint.sending = False

    async def _deliver(self, endpoint: _Endpoint, event_id: str, body: bytes) -> None:
        config = endpoint.config
        problem: str | None = ""
        for attempt in range(1, config.max_attempts + 1):
            problem = await self._attempt(config, body)
            if problem is None:
                self._outcome("delivered")
                logger.debug("webhook %s: delivered %s (attempt %d)", config.url, event_id, attempt)
                return
            if attempt == config.max_attempts:
                break
            self._outcome("retried")
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            logger.info(
                "webhook %s: %s for %s, retrying in %.1f s", config.url, problem, event_id, delay
            )
            await asyncio.sleep(delay)
        self._outcome("failed")
        logger.error(
            "webhook %s: gave up on event %s after %d attempts (%s)",
            config.url,
            event_id,
            config.max_attempts,
            problem,
        )

    async def _attempt(self, config: WebhookConfig, body: bytes) -> str | None:
        """One POST; None on a 2xx answer, else what went wrong."""
        assert self._session is not None
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(config.secret, body)}
        try:
            async with self._session.post(
                config.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=config.timeout),
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def _outcome(self, outcome: str) -> None:
        if self.on_outcome is not None:
            with contextlib.suppress(Exception):
                self.on_outcome(outcome)
