"""What every transport does, whatever carries its bytes (mediasoup's Transport).

A transport is one connection to one peer: producers receive from it, consumers send
through it. This base class holds what does not depend on how bytes travel: the SSRC
demultiplexing of incoming RTP to receive streams, the RTCP feedback units, reports,
counters, timers and lifecycle. Subclasses move bytes and own their crypto:
:class:`~sfu.webrtc_transport.WebRtcTransport` (ICE-lite + DTLS-SRTP) and
:class:`~sfu.plain_transport.PlainTransport` (plain RTP/RTCP on a local socket).

Sans-I/O: datagrams come in with the current time; a ``sender`` callable takes what goes
out; the worker's :class:`~sfu.timers.TimerQueue` calls :meth:`Transport.on_timer`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from math import inf
from typing import Any

from sfu import rtcp
from sfu.bwe import BandwidthEstimator
from sfu.consumer import Consumer, random_ssrc
from sfu.feedback import FeedbackUnit, Remb, TwccReceiver, standard_units
from sfu.layers import LayerControl
from sfu.overload import Overload
from sfu.pacer import Pacer
from sfu.producer import Producer
from sfu.rtp import RtpError, parse_rtp, read_map, unwrap_rtx
from sfu.settings import MediaSettings
from sfu.streams import RecvStream
from sfu.timers import TimerQueue

logger = logging.getLogger(__name__)

MAX_LEARNED_SSRCS = 16  # SSRCs an unsignalled publisher may introduce on one transport
RTCP_MTU = 1200
REMB_FRESH = 5.0  # seconds a receiver's REMB stands as the link's estimate

EventSink = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class TransportContext:
    """What every transport of one worker shares: its timer queue, where its events go,
    the settings its RTCP units read, and whether the worker is overloaded."""

    timers: TimerQueue
    on_event: EventSink
    settings: MediaSettings
    load: Overload = field(default_factory=Overload)  # the worker's, from its load reports


def _ignore(name: str, data: dict[str, Any]) -> None:
    pass


class TransportCounters:
    """Counts for /metrics; plain attributes, because they are bumped per packet."""

    __slots__ = (
        "packets_in",
        "bytes_in",
        "rtcp_in",
        "rtcp_out",
        "nacks_in",
        "nacks_out",
        "plis_in",
        "plis_out",
        "retransmissions",
        "rtx_in",
        "dropped",
    )

    def __init__(self) -> None:
        self.packets_in = 0
        self.bytes_in = 0
        self.rtcp_in = 0
        self.rtcp_out = 0
        self.nacks_in = 0
        self.nacks_out = 0
        self.plis_in = 0
        self.plis_out = 0
        self.retransmissions = 0  # packets resent to receivers from our cache
        self.rtx_in = 0  # retransmissions from publishers that filled a hole
        self.dropped = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Transport(ABC):
    """One connection: its producers and consumers, RTCP units, counters and timers."""

    kind = "transport"

    def __init__(
        self,
        session_id: str,
        room: str,
        identity: str,
        context: TransportContext,
        now: float,
        extensions: dict[str, int] | None = None,
    ) -> None:
        self.session_id = session_id
        self.room = room
        self.identity = identity
        self.timers = context.timers
        self.on_event = context.on_event
        self.load = context.load  # the worker's overload state (layers stop probing)
        self.now = now
        self.rtcp_ssrc = random_ssrc()
        self.extensions: dict[str, int] = dict(extensions or {})
        self.ext_map = read_map(self.extensions)
        self.producers: list[Producer] = []
        self.consumers: list[Consumer] = []
        self.streams_by_ssrc: dict[int, RecvStream] = {}
        self.rtx_by_ssrc: dict[int, RecvStream] = {}
        self.producers_by_mid: dict[bytes, Producer] = {}
        self.producers_by_pt: dict[int, Producer] = {}
        self.consumers_by_ssrc: dict[int, Consumer] = {}
        self.counters = TransportCounters()
        self.packets_out = 0  # outside counters: one attribute less per packet
        self.bytes_out = 0
        self.twcc_seq = 0
        self.estimate_source: str | None = None  # what available_bitrate last read
        self.closed = False
        self.close_when_idle = False  # a WHEP viewer ends with its source
        self.quality = "excellent"
        self.report_interval = context.settings.report_interval
        self.next_report = inf
        # What the path to the peer carries (transport-cc feedback, REMB, receiver reports):
        # read bandwidth.estimate_bps, .send_rate_bps, .loss, .rtt.
        self.bandwidth = BandwidthEstimator()
        self.units: list[FeedbackUnit] = standard_units(self, context.settings.publisher_bitrate)
        self._rtcp_handlers: dict[type, list[Callable[[Any, float], None]]] = {}
        self._sent_hooks: list[Callable[[int, int, float], None]] = []
        # send_rtp calls this per packet with a transport-wide sequence number: the one hook
        # itself when there is one (a Python call less per forwarded copy), else _sent.
        self._on_sent: Callable[[int, int, float], None] | None = None
        for unit in self.units:
            self._hook(unit)
        self.twcc_receiver = next(u for u in self.units if isinstance(u, TwccReceiver))
        self.remb = next(u for u in self.units if isinstance(u, Remb))
        self.pacer: Pacer | None = None
        if context.settings.pacing:
            self.pacer = Pacer(self)
            self.add_unit(self.pacer)
        self.layers = LayerControl(self)
        self.add_unit(self.layers)

    def _hook(self, unit: FeedbackUnit) -> None:
        for packet_type in unit.handles:
            self._rtcp_handlers.setdefault(packet_type, []).append(unit.on_rtcp)
        if type(unit).on_sent is not FeedbackUnit.on_sent:
            self._sent_hooks.append(unit.on_sent)
            self._on_sent = self._sent_hooks[0] if len(self._sent_hooks) == 1 else self._sent

    def add_unit(self, unit: FeedbackUnit) -> None:
        """Another feedback feature on this transport (transport-cc, say)."""
        self.units.append(unit)
        self._hook(unit)

    # -- what subclasses provide ------------------------------------------------------------
    @property
    @abstractmethod
    def connected(self) -> bool:
        """Media can flow: keys are agreed and the peer's address is known."""

    @abstractmethod
    def send_rtp(self, buf: bytearray, twcc_offset: int, now: float) -> None:
        """Send one RTP packet, stamping the next transport-wide sequence number at
        ``twcc_offset`` if it is not -1. The hot path: called once per forwarded copy."""

    @abstractmethod
    def _send_rtcp_packet(self, data: bytes) -> bool:
        """Send one plain compound RTCP packet (protecting it if the transport encrypts)."""

    def available_bitrate(self, now: float) -> float | None:
        """What the link to this peer can carry (bits/s), or None when nothing tells:
        the transport-cc estimate while the receiver sends feedback, else its REMB if it
        sent one in the last few seconds."""
        if now - self.bandwidth.last_feedback < REMB_FRESH:
            self.estimate_source = "twcc"
            return float(self.bandwidth.estimate_bps)
        for unit in self.units:
            if isinstance(unit, Remb) and unit.estimate is not None:
                if now - unit.estimate_at < REMB_FRESH:
                    self.estimate_source = "remb"
                    return float(unit.estimate)
        self.estimate_source = None
        return None

    def _sent(self, twcc: int, size: int, now: float) -> None:
        for hook in self._sent_hooks:
            hook(twcc, size, now)

    # -- producers and consumers ------------------------------------------------------------
    def add_producer(self, producer: Producer) -> None:
        self.producers.append(producer)
        self.producers_by_pt[producer.codec.payload_type] = producer
        if producer.rtx_pt is not None:
            self.producers_by_pt[producer.rtx_pt] = producer
        if producer.red_pt is not None:
            self.producers_by_pt[producer.red_pt] = producer
        self.producers_by_mid[producer.mid.encode()] = producer
        for stream in producer.streams:
            if stream.ssrc is not None:
                self.streams_by_ssrc[stream.ssrc] = stream
            if stream.rtx_ssrc is not None:
                self.rtx_by_ssrc[stream.rtx_ssrc] = stream
        producer.on_close.append(self._producer_closed)
        if self.connected:
            producer.request_keyframe(self.now)

    def _producer_closed(self, producer: Producer) -> None:
        if producer in self.producers:
            self.producers.remove(producer)
        for table in (self.streams_by_ssrc, self.rtx_by_ssrc):
            for ssrc in [s for s, stream in table.items() if stream.producer is producer]:
                del table[ssrc]
        for pt in [k for k, p in self.producers_by_pt.items() if p is producer]:
            del self.producers_by_pt[pt]
        for mid in [k for k, p in self.producers_by_mid.items() if p is producer]:
            del self.producers_by_mid[mid]
        self._maybe_idle()

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        for ssrc in consumer.ssrcs():
            self.consumers_by_ssrc[ssrc] = consumer
        if self.connected:
            consumer.activate(self.now)

    def consumer_closed(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        for ssrc in consumer.ssrcs():
            if self.consumers_by_ssrc.get(ssrc) is consumer:
                del self.consumers_by_ssrc[ssrc]
        if not self.closed:
            self.on_event("consumer_closed", {"session": self.session_id, "consumer": consumer.id})
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.close_when_idle and not self.closed and not self.consumers and not self.producers:
            # A viewer whose source went away: end it, so its client learns at once
            # (DTLS close_notify) and can reconnect, rather than wait on silence.
            self.close("source ended")

    def add_extensions(self, extensions: dict[str, int]) -> None:
        """A renegotiated offer may add sections with extensions we had not seen."""
        self.extensions.update(extensions)
        self.ext_map = read_map(self.extensions)

    def _on_connected(self, now: float, details: dict[str, Any]) -> None:
        """Keys are up: consumers start (at a keyframe), publishers are asked for one."""
        self.next_report = now + self.report_interval
        for consumer in self.consumers:
            consumer.activate(now)
        for producer in self.producers:
            producer.request_keyframe(now)
        self.wake(self.next_report)
        self.on_event("connected", {"session": self.session_id, **details})

    # -- incoming ---------------------------------------------------------------------------
    def receive_rtp(self, plain: bytes, size: int, now: float) -> None:
        """One decrypted RTP packet: to the receive stream its SSRC belongs to."""
        try:
            packet = parse_rtp(plain, self.ext_map)
        except RtpError:
            self.counters.dropped += 1
            return
        counters = self.counters
        counters.packets_in += 1
        counters.bytes_in += size
        if packet.twcc >= 0:  # before any drop: padding probes count for the estimate too
            self.twcc_receiver.on_received(packet.twcc, packet.ssrc, now)
        stream = self.streams_by_ssrc.get(packet.ssrc)
        if stream is not None:
            stream.receive(packet, now)
            return
        stream = self.rtx_by_ssrc.get(packet.ssrc)
        if stream is None:
            found = self._learn(packet, now)
            if found is None:
                counters.dropped += 1
                return
            stream, is_rtx = found
            if not is_rtx:
                stream.receive(packet, now)
                return
        # An RTX packet: a retransmission we asked for, or a padding probe to drop.
        producer = stream.producer
        if stream.ssrc is None or producer.rtx_pt is None or packet.pt != producer.rtx_pt:
            counters.dropped += 1
            return
        original = unwrap_rtx(packet, stream.ssrc, producer.codec.payload_type)
        if original is None:
            return  # a padding-only probe
        if stream.receive_retransmission(original, now):
            counters.rtx_in += 1
        else:
            counters.dropped += 1

    def _learn(self, packet: Any, now: float) -> tuple[RecvStream, bool] | None:
        """Bind an unsignalled SSRC to its producer (by MID extension, else payload type)
        and, through the producer, to one of its encodings."""
        if len(self.streams_by_ssrc) + len(self.rtx_by_ssrc) >= MAX_LEARNED_SSRCS:
            return None
        producer = self.producers_by_mid.get(packet.mid) if packet.mid is not None else None
        if producer is None:
            producer = self.producers_by_pt.get(packet.pt)
        if producer is None:
            return None
        found = producer.bind(packet, now)
        if found is None:
            return None
        stream, is_rtx = found
        tables = [self.rtx_by_ssrc] if is_rtx else [self.streams_by_ssrc, self.rtx_by_ssrc]
        for table in tables:  # the encoding's previous SSRCs (a new media SSRC voids its RTX)
            for stale in [s for s, known in table.items() if known is stream]:
                del table[stale]
        (self.rtx_by_ssrc if is_rtx else self.streams_by_ssrc)[packet.ssrc] = stream
        return found

    def receive_rtcp(self, plain: bytes, now: float) -> None:
        """One decrypted compound RTCP packet: each part to the units that handle it."""
        try:
            packets = rtcp.parse_compound(plain)
        except rtcp.RtcpError:
            self.counters.dropped += 1
            return
        self.counters.rtcp_in += 1
        handlers = self._rtcp_handlers
        for packet in packets:
            for handler in handlers.get(type(packet), ()):
                handler(packet, now)

    # -- outgoing RTCP -------------------------------------------------------------------------
    def send_rtcp(self, packet: bytes) -> None:
        """One feedback message, at once (PLI, NACK)."""
        if self.connected and not self.closed and self._send_rtcp_packet(packet):
            self.counters.rtcp_out += 1

    def send_keyframe_request(self, stream: RecvStream) -> None:
        if stream.ssrc is None:
            return
        self.counters.plis_out += 1
        self.send_rtcp(rtcp.pli(self.rtcp_ssrc, stream.ssrc))

    def _report(self, now: float) -> None:
        """Every unit's report packets in compounds of at most RTCP_MTU bytes, each
        starting with an SR or RR (RFC 3550 6.1)."""
        packets = [packet for unit in self.units for packet in unit.report(now)]
        chunk = b""
        for packet in packets:
            if chunk and len(chunk) + len(packet) > RTCP_MTU:
                self.send_rtcp(chunk)
                chunk = b""
            if not chunk and packet[1] not in (200, 201):
                chunk = rtcp.receiver_report(self.rtcp_ssrc, [])
            chunk += packet
        if chunk:
            self.send_rtcp(chunk)

    # -- timers -------------------------------------------------------------------------------
    def wake(self, at: float) -> None:
        """Make sure :meth:`on_timer` runs by ``at``."""
        if not self.closed:
            self.timers.schedule(self, at)

    def next_deadline(self) -> float:
        if self.closed:
            return inf
        earliest = self.next_report
        for unit in self.units:
            at = unit.next_deadline()
            if at < earliest:
                earliest = at
        return earliest

    def on_timer(self, now: float) -> None:
        self.now = now
        if self.closed or not self.connected:
            return
        for unit in self.units:
            if unit.next_deadline() <= now:
                unit.on_timer(now)
        if now >= self.next_report:
            self.next_report = now + self.report_interval
            self._report(now)

    # -- lifecycle -------------------------------------------------------------------------------
    def counter_values(self) -> dict[str, int]:
        values = self.counters.as_dict()
        values["packets_out"] = self.packets_out
        values["bytes_out"] = self.bytes_out
        return values

    def _before_close(self) -> None:  # noqa: B027 - an optional hook
        """Last words to the peer (a DTLS close_notify)."""

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self._before_close()
        self.closed = True
        self.timers.cancel(self)
        for producer in list(self.producers):
            producer.close()
        for consumer in list(self.consumers):
            consumer.close()
        logger.info("%s %s (%s) closed: %s", self.kind, self.session_id, self.identity, reason)
        self.on_event("closed", {"session": self.session_id, "reason": reason})

    def discard(self, reason: str) -> None:
        """Close a transport that was never registered with the worker: no events."""
        self.on_event = _ignore
        self.close(reason)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.session_id} ({self.identity})>"
