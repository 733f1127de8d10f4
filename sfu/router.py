"""Routers, producers and consumers: the SFU's forwarding model (after mediasoup).

A :class:`Router` is one room on one worker. A :class:`Producer` is one published track
(one RTP stream and its RTX stream); a :class:`Consumer` is one viewer's copy of one
producer, with its own SSRC, sequence numbers and timestamps. Forwarding never decodes:
the payload bytes pass through untouched; only headers are rewritten.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from sfu import rtcp
from sfu.codecs import is_keyframe
from sfu.keyframe import KeyFrameRequester
from sfu.nack import NackGenerator, RetransmissionBuffer
from sfu.rtp import (
    SEQ_TS_SSRC,
    U16,
    ExtensionLayout,
    RtpPacket,
    abs_send_time,
    pack_extensions,
    patch,
    patch_u16,
    template,
)
from sfu.sdp import Codec
from sfu.srtp import SrtpError

if TYPE_CHECKING:
    from sfu.transport import PeerTransport

logger = logging.getLogger(__name__)


def random_ssrc() -> int:
    return random.randint(1, 0xFFFFFFFE)


class Producer:
    """One published track: receives RTP from a publisher and fans it out."""

    def __init__(
        self,
        producer_id: str,
        transport: PeerTransport,
        kind: str,
        mid: str,
        codec: Codec,
        ssrc: int | None,
        rtx_ssrc: int | None,
        use_nack: bool,
        use_rtx: bool,
        keyframe_interval: float = 0.5,
    ) -> None:
        self.id = producer_id
        self.transport = transport
        self.kind = kind
        self.mid = mid
        self.codec = codec
        self.codec_name = codec.name
        self.clock_rate = codec.clock_rate
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.rtx_pt = codec.rtx_payload_type if use_rtx else None
        self.use_nack = use_nack
        self.is_video = kind == "video"
        self.groups: list[tuple[ExtensionLayout, list[Consumer]]] = []
        self.consumers: list[Consumer] = []
        self.buffer = RetransmissionBuffer() if self.is_video else None
        self.nack = NackGenerator() if use_nack else None
        self.keyframes = KeyFrameRequester(min_interval=keyframe_interval)
        self.stats = rtcp.ReceiveStats(codec.clock_rate)
        self.paused = False
        self.closed = False
        self.level_sum = 0
        self.level_count = 0
        self.on_close: list[Callable[[Producer], None]] = []

    # -- incoming ---------------------------------------------------------------------
    def receive(self, packet: RtpPacket, now: float) -> None:
        """One packet from the publisher: record it, then forward it to every consumer."""
        self.stats.on_packet(packet.seq, packet.ts, packet.size, now)
        if self.nack is not None:
            self.nack.on_packet(packet.seq, now)
        if self.is_video:
            if is_keyframe(self.codec_name, packet.payload):
                packet.keyframe = True
                self.keyframes.on_keyframe(now)
            self.buffer.store(packet.seq, packet, now)  # type: ignore[union-attr]
        elif packet.audio_level >= 0:  # for the active speaker: -dBov, 0 loudest, 127 silence
            self.level_sum += packet.audio_level & 0x7F
            self.level_count += 1
        if self.paused:
            return
        send_time = abs_send_time(now)
        for layout, consumers in self.groups:
            buf_template: bytearray | None = None
            twcc_offset = -1
            for consumer in consumers:
                if not consumer.ready:
                    continue
                if consumer.waiting_keyframe:
                    if self.is_video and not packet.keyframe:
                        continue
                    consumer.start(packet, now)
                elif (packet.seq - consumer.start_seq) & 0x8000:
                    continue  # older than the point this viewer started at
                if buf_template is None:
                    block, twcc_offset = layout.block(packet, send_time)
                    buf_template = template(packet, block)
                    if twcc_offset >= 0:
                        twcc_offset += 12
                consumer.send(packet, bytearray(buf_template), twcc_offset, now)

    def set_paused(self, paused: bool, now: float) -> None:
        """Mute or unmute: while paused nothing is forwarded; on resume every consumer
        restarts at the next keyframe with continuous sequence numbers (no gap to NACK)."""
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            for consumer in self.consumers:
                consumer.waiting_keyframe = True
            self.request_keyframe(now)

    def on_sender_report(self, ntp: int, rtp_ts: int, now: float) -> None:
        self.stats.on_sender_report(ntp, rtp_ts, now)

    # -- feedback toward the publisher --------------------------------------------------
    def request_keyframe(self, now: float) -> None:
        if self.is_video and self.keyframes.request(now):
            self.transport.send_keyframe_request(self)

    def tick(self, now: float) -> None:
        if self.keyframes.poll(now):
            self.transport.send_keyframe_request(self)
        if self.nack is not None and self.ssrc is not None:
            seqs = self.nack.due(now)
            if seqs:
                self.transport.send_nack(self, seqs)
            if self.nack.take_keyframe_request():
                self.request_keyframe(now)

    # -- consumers ----------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        for layout, consumers in self.groups:
            if layout.key == consumer.layout.key:
                consumers.append(consumer)
                return
        self.groups.append((consumer.layout, [consumer]))

    def remove_consumer(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        for layout, consumers in list(self.groups):
            if consumer in consumers:
                consumers.remove(consumer)
                if not consumers:
                    self.groups.remove((layout, consumers))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for consumer in list(self.consumers):
            consumer.close()
        for callback in self.on_close:
            callback(self)


class Consumer:
    """One viewer's copy of one producer."""

    __slots__ = (
        "id",
        "producer",
        "transport",
        "kind",
        "ssrc",
        "rtx_ssrc",
        "pt",
        "rtx_pt",
        "layout",
        "seq_offset",
        "ts_offset",
        "start_seq",
        "waiting_keyframe",
        "ready",
        "rtx_seq",
        "packets",
        "octets",
        "last_seq",
        "last_ts",
        "last_sent_at",
        "closed",
        "fraction_lost",
        "rtt",
    )

    def __init__(
        self,
        consumer_id: str,
        producer: Producer,
        transport: PeerTransport,
        payload_type: int,
        rtx_payload_type: int | None,
        layout: ExtensionLayout,
        ssrc: int | None = None,
        rtx_ssrc: int | None = None,
    ) -> None:
        self.id = consumer_id
        self.producer = producer
        self.transport = transport
        self.kind = producer.kind
        self.ssrc = ssrc or random_ssrc()
        self.rtx_pt = rtx_payload_type
        self.rtx_ssrc = (rtx_ssrc or random_ssrc()) if rtx_payload_type is not None else None
        self.pt = payload_type
        self.layout = layout
        self.seq_offset = 0
        self.ts_offset = 0
        self.start_seq = 0
        self.waiting_keyframe = True
        self.ready = False  # becomes True once the viewer's DTLS is up
        self.rtx_seq = random.randint(0, 0xFFFF)
        self.packets = 0
        self.octets = 0
        self.last_seq = -1
        self.last_ts = 0
        self.last_sent_at = 0.0
        self.closed = False
        self.fraction_lost = 0  # from the viewer's receiver reports, for quality
        self.rtt: float | None = None

    def start(self, packet: RtpPacket, now: float) -> None:
        """Begin (or resume after a source change) at this packet, keeping the viewer's
        sequence and timestamps continuous so its jitter buffer sees no jump."""
        if self.last_seq < 0:
            out_seq = random.randint(0, 0x7FFF)
            out_ts = random.randint(0, 0x7FFFFFFF)
        else:
            out_seq = (self.last_seq + 1) & 0xFFFF
            elapsed = max(1, int((now - self.last_sent_at) * self.producer.clock_rate))
            out_ts = (self.last_ts + elapsed) & 0xFFFFFFFF
        self.seq_offset = (out_seq - packet.seq) & 0xFFFF
        self.ts_offset = (out_ts - packet.ts) & 0xFFFFFFFF
        self.start_seq = packet.seq
        self.waiting_keyframe = False

    def activate(self, now: float) -> None:
        """The viewer's transport is connected: start at the next keyframe (video, which
        we ask the publisher for now) or the next packet (audio)."""
        self.ready = True
        self.waiting_keyframe = True
        if self.kind == "video":
            self.producer.request_keyframe(now)

    def send(self, packet: RtpPacket, buf: bytearray, twcc_offset: int, now: float) -> None:
        """Rewrite one copy of the packet for this viewer, protect it, send it.

        The hot path: PeerTransport.send_rtp is inlined here because a Python call per
        copy is a measurable share of the fan-out (see docs/design.md)."""
        transport = self.transport
        srtp = transport.srtp
        addr = transport.addr
        if srtp is None or addr is None:
            return
        seq = (packet.seq + self.seq_offset) & 0xFFFF
        ts = (packet.ts + self.ts_offset) & 0xFFFFFFFF
        buf[1] = packet.marker | self.pt
        SEQ_TS_SSRC.pack_into(buf, 2, seq, ts, self.ssrc)
        if twcc_offset >= 0:
            transport.twcc_seq = twcc = (transport.twcc_seq + 1) & 0xFFFF
            U16.pack_into(buf, twcc_offset, twcc)
        try:
            data = srtp.protect(buf)
        except SrtpError:
            transport.counters.dropped += 1
            return
        transport.sender(data, addr)
        transport.packets_out += 1
        transport.bytes_out += len(data)
        self.packets += 1
        self.octets += len(packet.payload)
        self.last_seq = seq
        self.last_ts = ts
        self.last_sent_at = now

    def retransmit(self, seqs: list[int], now: float) -> int:
        """Answer a viewer's NACK from the producer's cache, as RTX when negotiated."""
        buffer = self.producer.buffer
        if buffer is None or self.waiting_keyframe:
            return 0
        sent = 0
        for out_seq in seqs:
            source_seq = (out_seq - self.seq_offset) & 0xFFFF
            if (source_seq - self.start_seq) & 0x8000:
                continue
            packet = buffer.get(source_seq, now)
            if packet is None:
                continue
            ts = (packet.ts + self.ts_offset) & 0xFFFFFFFF
            block, twcc_offset = self.layout.block(packet, abs_send_time(now))
            if self.rtx_pt is not None and self.rtx_ssrc is not None:
                self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
                buf = bytearray(12)
                buf[0] = 0x90 if block else 0x80
                buf += block
                buf += out_seq.to_bytes(2, "big")
                buf += packet.payload
                patch(buf, packet.marker | self.rtx_pt, self.rtx_seq, ts, self.rtx_ssrc)
            else:
                buf = template(packet, block)
                patch(buf, packet.marker | self.pt, out_seq, ts, self.ssrc)
            if twcc_offset >= 0:
                patch_u16(buf, twcc_offset + 12, self.transport.next_twcc())
            if self.transport.send_rtp(buf):
                sent += 1
        return sent

    def request_keyframe(self, now: float) -> None:
        self.producer.request_keyframe(now)

    def on_receiver_report(self, report: rtcp.RtcpReceiverInfo, now_ntp: int) -> None:
        self.fraction_lost = report.fraction_lost
        rtt = rtcp.rtt_from_report(report, now_ntp)
        if rtt is not None:
            self.rtt = rtt

    def sender_report(self, now: float, ntp: int) -> bytes | None:
        """An SR mapping our timestamps to the publisher's clock, for lip sync."""
        stats = self.producer.stats
        if self.packets == 0 or stats.sr_rtp < 0:
            return None
        elapsed = now - stats.last_sr_at
        source_ts = stats.sr_rtp + int(elapsed * self.producer.clock_rate)
        sr_ntp = stats.sr_ntp + int(elapsed * (1 << 32))
        return rtcp.sender_report(
            self.ssrc, sr_ntp, (source_ts + self.ts_offset) & 0xFFFFFFFF, self.packets, self.octets
        )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ready = False
        self.producer.remove_consumer(self)
        self.transport.consumer_closed(self)


class Router:
    """One room on one worker: its producers, and the consumers made from them."""

    def __init__(self, room: str) -> None:
        self.room = room
        self.producers: dict[str, Producer] = {}

    def add_producer(self, producer: Producer) -> None:
        self.producers[producer.id] = producer
        producer.on_close.append(lambda p: self.producers.pop(p.id, None))

    def producers_of(self, session_id: str) -> list[Producer]:
        return [p for p in self.producers.values() if p.transport.session_id == session_id]


__all__ = ["Consumer", "Producer", "Router", "pack_extensions", "random_ssrc"]
