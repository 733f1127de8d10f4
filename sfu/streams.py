"""One encoding of a published track as it arrives (mediasoup's RtpStreamRecv).

A single-encoding publisher has one :class:`RecvStream`; a simulcast publisher one per
encoding, told apart by the rtp-stream-id header extension (rid) or by the SSRCs it
signalled (``a=ssrc-group:SIM``). Each stream keeps what belongs to that one SSRC: receive
statistics for reports, the NACK generator toward the publisher, the retransmission cache
that answers viewers, keyframe request throttling, and the consumers it feeds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sfu import rtcp
from sfu.codecs import is_frame_start, is_keyframe, keyframe_size, vp8_picture_ids, vp8_temporal
from sfu.keyframe import KeyFrameRequester
from sfu.nack import NackGenerator, RetransmissionBuffer
from sfu.rtp import ExtensionLayout, RtpPacket

if TYPE_CHECKING:
    from sfu.consumer import PipeConsumer, SimpleConsumer
    from sfu.producer import Producer

logger = logging.getLogger(__name__)

# A stream that has sent nothing for this long is not offered to a new viewer as a layer.
INACTIVE_AFTER = 2.0


@dataclass(frozen=True, slots=True)
class Encoding:
    """What the offer said of one encoding: its rid, or its SSRCs, or neither (learned)."""

    rid: str | None = None
    ssrc: int | None = None
    rtx_ssrc: int | None = None


class RecvStream:
    """One received RTP stream (and its RTX stream) of a producer."""

    __slots__ = (
        "producer",
        "index",
        "rid",
        "ssrc",
        "rtx_ssrc",
        "stats",
        "nack",
        "buffer",
        "keyframes",
        "groups",
        "pipes",
        "last_packet_at",
        "codec_name",
        "is_video",
        "width",
        "height",
        "rate_bytes",
        "rate_at",
        "rate",
        "peak_bitrate",
        "last_pid",
        "last_tl0",
        "vp8_ids",
        "temporal_layers",
        "tid_bytes",
        "tid_rates",
    )

    def __init__(
        self,
        producer: Producer,
        index: int,
        encoding: Encoding,
        *,
        use_nack: bool,
        keyframe_interval: float,
    ) -> None:
        self.producer = producer
        self.index = index  # 0 is the lowest layer
        self.rid = encoding.rid
        self.ssrc = encoding.ssrc
        self.rtx_ssrc = encoding.rtx_ssrc
        self.codec_name = producer.codec.name
        self.is_video = producer.kind == "video"
        self.stats = rtcp.ReceiveStats(producer.codec.clock_rate)
        self.nack = NackGenerator() if use_nack else None
        self.buffer = RetransmissionBuffer() if self.is_video else None
        self.keyframes = KeyFrameRequester(min_interval=keyframe_interval)
        # Consumers fed from this stream, grouped by header-extension layout so that one
        # template per layout serves them all (see Producer.forward).
        self.groups: list[tuple[ExtensionLayout, list[SimpleConsumer]]] = []
        self.pipes: list[PipeConsumer] = []
        self.last_packet_at = -1.0
        self.width = 0  # from the last keyframe
        self.height = 0
        self.rate_bytes = 0
        self.rate_at = -1.0
        self.rate = 0.0
        self.peak_bitrate = 0.0  # the highest rate measured: a paused layer's cost
        self.last_pid = -1  # VP8 PictureID / TL0PICIDX of the newest packet (simulcast only)
        self.last_tl0 = -1
        self.vp8_ids = producer.codec.name == "vp8"
        self.temporal_layers = 0  # VP8 temporal layers seen (highest TID + 1), 0: none
        self.tid_bytes = [0, 0, 0, 0]  # bytes received per TID, for each layer's bitrate
        self.tid_rates: tuple[float, ...] = ()  # bits/s up to and including each TID

    def receive(self, packet: RtpPacket, now: float) -> None:
        """One packet of this stream (an original, or an unwrapped retransmission)."""
        self.stats.on_packet(packet.seq, packet.ts, packet.size, now)
        started = now - self.last_packet_at >= INACTIVE_AFTER or self.last_packet_at < 0
        self.last_packet_at = now
        if started and self.producer.simulcast:
            self.producer.stream_started(self, now)
        nack = self.nack
        if nack is not None and nack.on_packet(packet.seq, now):
            self.producer.transport.wake(now + nack.reorder_delay)
        if self.is_video:
            if is_keyframe(self.codec_name, packet.payload):
                packet.keyframe = True
                self.keyframes.on_keyframe(now)
                self.buffer.on_keyframe(packet.seq)  # type: ignore[union-attr]
                size = keyframe_size(self.codec_name, packet.payload)
                if size is not None:
                    self.width, self.height = size
            self.buffer.store(packet.seq, packet, now)  # type: ignore[union-attr]
            if self.vp8_ids and self.producer.simulcast:
                self._note_picture_ids(packet)
        self.producer.forward(self, packet, now)

    def _note_picture_ids(self, packet: RtpPacket) -> None:
        """The newest VP8 ids of this encoding, where a viewer switching away continues
        from (read once per packet here, not per viewer)."""
        payload = packet.payload
        _pos, pid, tl0_pos, tl0 = vp8_picture_ids(payload)
        if _pos >= 0:
            packet.pid = pid
        tid, sync = vp8_temporal(payload)
        if tid >= 0:
            packet.tid = tid
            packet.tsync = sync and is_frame_start("vp8", payload)
            self.tid_bytes[tid] += packet.size
            if tid >= self.temporal_layers:
                self.temporal_layers = tid + 1
                logger.info("%r carries VP8 temporal layers (T0-T%d seen)", self, tid)
        if _pos >= 0 and (self.last_pid < 0 or (pid - self.last_pid) & 0x7FFF < 0x4000):
            self.last_pid = pid
        if tl0_pos >= 0 and (self.last_tl0 < 0 or (tl0 - self.last_tl0) & 0xFF < 0x80):
            self.last_tl0 = tl0

    def receive_retransmission(self, packet: RtpPacket, now: float) -> bool:
        """An unwrapped RTX packet: forwarded only if it fills a hole we asked about."""
        if self.nack is not None and not self.nack.repair(packet.seq):
            return False
        self.receive(packet, now)
        return True

    def rebind(self, ssrc: int) -> None:
        """The publisher changed this encoding's SSRC (a new encoder): its numbering starts
        over, so forget the old statistics, holes and cached packets."""
        self.ssrc = ssrc
        self.rtx_ssrc = None  # the new encoder's RTX comes on a new SSRC too
        self.stats = rtcp.ReceiveStats(self.producer.codec.clock_rate)
        if self.nack is not None:
            self.nack.reset()
        if self.buffer is not None:
            self.buffer.clear()

    def request_keyframe(self, now: float) -> None:
        """A viewer needs a keyframe of this stream: ask the publisher, throttled."""
        if not self.is_video or self.ssrc is None:
            return
        if self.keyframes.request(now):
            self.producer.transport.send_keyframe_request(self)
        else:
            deadline = self.keyframes.next_deadline()
            if deadline is not None:
                self.producer.transport.wake(deadline)

    def bitrate(self, now: float) -> float:
        """Bits per second received, measured over at least the last second (read by
        the viewers' layer choice; the counting is the receive statistics' own)."""
        if not self.active(now):
            return 0.0
        elapsed = now - self.rate_at
        if self.rate_at < 0 or elapsed > 5.0:
            self.rate_at, self.rate_bytes = now, self.stats.bytes
        elif elapsed >= 1.0:
            self.rate = (self.stats.bytes - self.rate_bytes) * 8 / elapsed
            if self.temporal_layers:
                self._temporal_rates()
            self.rate_at, self.rate_bytes = now, self.stats.bytes
            self.peak_bitrate = max(self.peak_bitrate * 0.98, self.rate)
        return self.rate

    def _temporal_rates(self) -> None:
        """Split the measured rate by temporal layer, in the shares of the bytes seen
        per TID since the last measurement (cumulative: T0, T0+T1, ...)."""
        counted = self.tid_bytes[: self.temporal_layers]
        total = sum(counted)
        self.tid_bytes = [0, 0, 0, 0]
        if not total:
            return
        rates, running = [], 0
        for count in counted:
            running += count
            rates.append(self.rate * running / total)
        self.tid_rates = tuple(rates)

    def active(self, now: float) -> bool:
        return self.last_packet_at >= 0 and now - self.last_packet_at < INACTIVE_AFTER

    # -- consumers ------------------------------------------------------------------------------
    def attach(self, consumer: SimpleConsumer) -> None:
        for layout, consumers in self.groups:
            if layout.key == consumer.layout.key:
                if consumer not in consumers:
                    consumers.append(consumer)
                return
        self.groups.append((consumer.layout, [consumer]))

    def detach(self, consumer: SimpleConsumer) -> None:
        for entry in self.groups:
            consumers = entry[1]
            if consumer in consumers:
                consumers.remove(consumer)
                if not consumers:
                    self.groups.remove(entry)
                return

    def restart_consumers(self) -> None:
        """Every consumer forwarding this stream restarts at its next keyframe."""
        for _, consumers in self.groups:
            for consumer in consumers:
                if consumer.stream is self:
                    consumer.waiting_keyframe = True

    def __repr__(self) -> str:
        name = self.rid if self.rid is not None else str(self.index)
        return f"<RecvStream {self.producer.id}/{name} ssrc={self.ssrc}>"
