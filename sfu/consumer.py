"""Consumers: one receiver's copy of one producer, behind one small interface.

* :class:`SimpleConsumer` forwards one encoding with its own SSRC, sequence numbers and
  timestamps, starting at a keyframe and continuous across pauses and SSRC changes.
* :class:`SimulcastConsumer` is a simple consumer that can move to another encoding of a
  simulcast producer; the move happens at a keyframe of the new encoding, and the viewer
  sees one continuous stream.
* :class:`PipeConsumer` forwards every encoding unchanged but for the SSRC (its own one
  per encoding), for a recorder or another worker that wants the whole producer.

A consumer never touches its transport's crypto or address: it builds the packet and
hands it to ``transport.send_rtp``. RTCP from the receiver reaches it through the
transport's feedback units (``retransmit``, ``request_keyframe``, ``on_receiver_report``).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from math import inf
from typing import TYPE_CHECKING, NamedTuple

from sfu import rtcp
from sfu.codecs import vp8_picture_ids
from sfu.red import renumber
from sfu.rtp import SEQ_TS_SSRC, ExtensionLayout, RtpPacket, abs_send_time, patch, template
from sfu.temporal import TemporalFilter

if TYPE_CHECKING:
    from sfu.producer import Producer
    from sfu.streams import RecvStream
    from sfu.transport import Transport


_PADDING_SOURCE = RtpPacket(0, 0, 0, 0, 0, b"")  # what a padding packet's extensions read


def random_ssrc() -> int:
    return random.randint(1, 0xFFFFFFFE)


class SenderInfo(NamedTuple):
    """What a sender report says of one outgoing stream."""

    ssrc: int
    ntp: int
    rtp_ts: int
    packets: int
    octets: int


class Consumer(ABC):
    """What transports and RTCP feedback units need of any consumer."""

    __slots__ = ("fraction_lost", "rtt", "report_at", "report_from")

    id: str
    kind: str
    producer: Producer
    transport: Transport
    closed: bool
    fraction_lost: int  # from the receiver's last report, /256
    rtt: float | None  # seconds, from the receiver's last report
    # When the last report and the one before it arrived: the loss it gives is of the
    # packets between them (one RTT earlier), which a probe's verdict needs to know.
    report_at: float
    report_from: float

    @abstractmethod
    def ssrcs(self) -> list[int]:
        """Every SSRC this consumer sends with (RTCP from the receiver names them)."""

    @abstractmethod
    def activate(self, now: float) -> None:
        """The transport is connected: start receiving packets from the producer."""

    @abstractmethod
    def retransmit(self, media_ssrc: int, seqs: list[int], now: float) -> int:
        """Answer a NACK from the producer's cache; returns how many packets were resent."""

    @abstractmethod
    def request_keyframe(self, media_ssrc: int, now: float) -> None:
        """The receiver asked for a keyframe (PLI/FIR)."""

    @abstractmethod
    def sender_reports(self, now: float) -> list[SenderInfo]:
        """Sender report contents, mapped from the publisher's own reports (lip sync)."""

    def measures_loss(self, ssrc: int) -> bool:
        """Whether the receiver's report on ``ssrc`` says what the link loses."""
        return True

    def on_receiver_report(
        self, report: rtcp.RtcpReceiverInfo, rtt: float | None, now: float
    ) -> None:
        self.fraction_lost = report.fraction_lost
        if rtt is not None:
            self.rtt = rtt
        self.report_from, self.report_at = self.report_at, now

    @abstractmethod
    def close(self) -> None: ...


def _translated_sr(
    stream: RecvStream, ssrc: int, ts_offset: int, packets: int, octets: int, now: float
) -> SenderInfo | None:
    """An SR for what we forward of ``stream``: the publisher's last SR moved on to now,
    in the consumer's timestamp space. Without a publisher SR there is nothing to map."""
    stats = stream.stats
    if packets == 0 or stats.sr_rtp < 0:
        return None
    elapsed = now - stats.last_sr_at
    source_ts = stats.sr_rtp + int(elapsed * stats.clock_rate)
    ntp = stats.sr_ntp + int(elapsed * (1 << 32))
    return SenderInfo(
        ssrc, ntp & 0xFFFFFFFFFFFFFFFF, (source_ts + ts_offset) & 0xFFFFFFFF, packets, octets
    )


class SimpleConsumer(Consumer):
    """Forwards one encoding (``stream``) with its own SSRC, sequence and timestamps."""

    __slots__ = (
        "id",
        "producer",
        "transport",
        "kind",
        "ssrc",
        "rtx_ssrc",
        "pt",
        "rtx_pt",
        "red_pt",
        "layout",
        "stream",
        "seq_offset",
        "ts_offset",
        "start_seq",
        "waiting_keyframe",
        "active",
        "rtx_seq",
        "packets",
        "octets",
        "last_seq",
        "last_ts",
        "last_sent_at",
        "closed",
    )

    def __init__(
        self,
        consumer_id: str,
        producer: Producer,
        transport: Transport,
        payload_type: int,
        rtx_payload_type: int | None,
        layout: ExtensionLayout,
        ssrc: int | None = None,
        rtx_ssrc: int | None = None,
        encoding: int = -1,
    ) -> None:
        self.id = consumer_id
        self.producer = producer
        self.transport = transport
        self.kind = producer.kind
        self.ssrc = ssrc or random_ssrc()
        self.rtx_pt = rtx_payload_type
        self.rtx_ssrc = (rtx_ssrc or random_ssrc()) if rtx_payload_type is not None else None
        self.pt = payload_type
        self.red_pt: int | None = None  # the viewer's RED number, when it takes RED audio
        self.layout = layout
        self.stream = producer.streams[encoding]  # the highest unless told otherwise
        self.seq_offset = 0
        self.ts_offset = 0
        self.start_seq = 0
        self.waiting_keyframe = True
        self.active = False  # attached to the producer's stream: the transport is connected
        self.rtx_seq = random.randint(0, 0xFFFF)
        self.packets = 0
        self.octets = 0
        self.last_seq = -1
        self.last_ts = 0
        self.last_sent_at = 0.0
        self.closed = False
        self.fraction_lost = 0
        self.rtt: float | None = None
        self.report_at = self.report_from = -inf
        producer.add_consumer(self)

    def ssrcs(self) -> list[int]:
        return [self.ssrc] if self.rtx_ssrc is None else [self.ssrc, self.rtx_ssrc]

    # -- the hot path (called from Producer.forward) -----------------------------------------------
    def start(self, packet: RtpPacket, now: float) -> None:
        """Begin (or resume after a pause, SSRC or encoding change) at this packet, keeping
        the receiver's sequence and timestamps continuous so its jitter buffer sees no jump."""
        if self.last_seq < 0:
            out_seq = random.randint(0, 0x7FFF)
            out_ts = random.randint(0, 0x7FFFFFFF)
        else:
            out_seq = (self.last_seq + 1) & 0xFFFF
            elapsed = max(1, int((now - self.last_sent_at) * self.producer.codec.clock_rate))
            out_ts = (self.last_ts + elapsed) & 0xFFFFFFFF
        self.seq_offset = (out_seq - packet.seq) & 0xFFFF
        self.ts_offset = (out_ts - packet.ts) & 0xFFFFFFFF
        self.start_seq = packet.seq
        self.waiting_keyframe = False

    def switch(self, stream: RecvStream, packet: RtpPacket, now: float) -> None:
        """Move to ``stream`` at this keyframe of it (the producer calls this)."""
        self.stream.detach(self)
        self.stream = stream
        self.start(packet, now)

    def send(self, packet: RtpPacket, buf: bytearray, twcc_offset: int, now: float) -> None:
        """Patch one copy of the packet for this receiver and hand it to the transport."""
        seq = (packet.seq + self.seq_offset) & 0xFFFF
        ts = (packet.ts + self.ts_offset) & 0xFFFFFFFF
        if self.red_pt is not None and packet.pt == self.producer.red_pt:
            # Redundant audio as sent (the producer parsed it, and strips it for others).
            producer = self.producer
            buf[1] = packet.marker | self.red_pt
            offset = len(buf) - len(packet.payload)
            renumber(buf, offset, producer.red_headers, producer.codec.payload_type, self.pt)
        else:
            buf[1] = packet.marker | self.pt
        SEQ_TS_SSRC.pack_into(buf, 2, seq, ts, self.ssrc)
        self.transport.send_rtp(buf, twcc_offset, now)
        self.packets += 1
        self.octets += len(packet.payload)
        # A late (reordered) packet must not move the mark back: a restart continues
        # after it, and would repeat the numbers of the packets sent before it.
        if (seq - self.last_seq) & 0xFFFF < 0x8000 or self.last_seq < 0:
            self.last_seq = seq
            self.last_ts = ts
            self.last_sent_at = now

    # -- lifecycle ------------------------------------------------------------------------------
    def activate(self, now: float) -> None:
        """Start at the next keyframe (video, which we ask the publisher for now) or the
        next packet (audio)."""
        if self.closed:
            return
        self.active = True
        self.waiting_keyframe = True
        self.stream.attach(self)
        self.stream.request_keyframe(now)
        if self.kind == "video":
            self.transport.layers.consumer_started(now)

    def suspend(self) -> None:
        """Stop sending (the viewer's link cannot carry this video) until :meth:`resume`;
        the receiver sees a pause, then continuous numbering from a keyframe."""
        if self.active:
            self.active = False
            self.stream.detach(self)

    def resume(self, now: float) -> None:
        if not self.active:
            self.activate(now)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.active = False
        self.stream.detach(self)
        self.producer.remove_consumer(self)
        self.transport.consumer_closed(self)

    # -- feedback from the receiver --------------------------------------------------------------
    def retransmit(self, media_ssrc: int, seqs: list[int], now: float) -> int:
        """Answer a NACK from the stream's cache, as RTX when negotiated. Packets from
        before the point this consumer (re)started are not ours to resend."""
        buffer = self.stream.buffer
        if buffer is None or self.waiting_keyframe or not self.active:
            return 0
        sent = 0
        send_time = abs_send_time(now)
        for out_seq in seqs:
            source_seq = self.source_seq(out_seq)
            if source_seq < 0 or (source_seq - self.start_seq) & 0x8000:
                continue
            packet = buffer.get(source_seq, now)
            if not isinstance(packet, RtpPacket):
                continue
            ts = (packet.ts + self.ts_offset) & 0xFFFFFFFF
            block, twcc_offset = self.layout.block(packet, send_time)
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
            self.rewrite_payload(buf, len(buf) - len(packet.payload))
            self.transport.send_rtp(buf, twcc_offset + 12 if twcc_offset >= 0 else -1, now)
            sent += 1
        return sent

    def source_seq(self, out_seq: int) -> int:
        """The stream's sequence number of what this viewer got as ``out_seq`` (-1: none)."""
        return (out_seq - self.seq_offset) & 0xFFFF

    def measures_loss(self, ssrc: int) -> bool:
        """Not the RTX stream: Chromium reports on it too (libwebrtc counts RTX packets in
        its receive statistics), and its gaps are retransmissions our pacer dropped, not
        the link's loss. Read as loss, they failed the probes of a weak-link viewer whose
        link had recovered (127/256 "lost" on a clean link) and kept it on a low layer
        for seconds."""
        return ssrc != self.rtx_ssrc

    def send_padding(self, size: int, now: float) -> int:
        """One padding-only packet of about ``size`` bytes on the RTX stream (a probe:
        it raises the viewer's bandwidth estimate before a layer goes up). Receivers
        drop it after counting it; returns the bytes sent (0 without RTX)."""
        if self.rtx_pt is None or self.rtx_ssrc is None or self.last_seq < 0:
            return 0
        padding = max(1, min(size, 255))
        self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        block, twcc_offset = self.layout.block(_PADDING_SOURCE, abs_send_time(now))
        buf = bytearray(12)
        buf[0] = 0xB0 if block else 0xA0  # version 2, padding, (extension)
        buf += block
        buf += bytes(padding - 1)
        buf.append(padding)
        patch(buf, self.rtx_pt, self.rtx_seq, self.last_ts, self.rtx_ssrc)
        self.transport.send_rtp(buf, twcc_offset + 12 if twcc_offset >= 0 else -1, now)
        return len(buf)

    def rewrite_payload(self, buf: bytearray, offset: int) -> None:
        """Codec fields a viewer must see continuous (a simulcast consumer's VP8 ids)."""

    def request_keyframe(self, media_ssrc: int, now: float) -> None:
        self.stream.request_keyframe(now)

    def sender_reports(self, now: float) -> list[SenderInfo]:
        info = _translated_sr(
            self.stream, self.ssrc, self.ts_offset, self.packets, self.octets, now
        )
        return [info] if info is not None else []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} of {self.producer.id} on {self.stream!r}>"


class SimulcastConsumer(SimpleConsumer):
    """A simple consumer of a simulcast producer that can change encoding.

    ``preferred`` is the highest encoding the receiver wants (its screen, its choice);
    :meth:`set_preferred` picks the target, joins that stream and asks it for a keyframe;
    the producer moves the consumer over at that keyframe (:meth:`switch`). Which layer a
    link can carry (bandwidth estimation) decides ``preferred`` from above."""

    __slots__ = (
        "preferred",
        "target",
        "announced",
        "vp8",
        "pid_shift",
        "tl0_shift",
        "pid_stream",
        "temporal",
    )

    def __init__(
        self,
        consumer_id: str,
        producer: Producer,
        transport: Transport,
        payload_type: int,
        rtx_payload_type: int | None,
        layout: ExtensionLayout,
        ssrc: int | None = None,
        rtx_ssrc: int | None = None,
        preferred: int | None = None,
    ) -> None:
        top = len(producer.streams) - 1
        self.preferred = top if preferred is None else max(0, min(preferred, top))
        self.target: RecvStream | None = None
        self.announced: RecvStream | None = None
        # VP8 PictureID and TL0PICIDX run on per encoding; the viewer's decoder must see
        # them continue across a switch, as it sees sequence numbers and timestamps.
        self.vp8 = producer.codec.name == "vp8"
        self.pid_shift = 0
        self.tl0_shift = 0
        self.pid_stream: RecvStream | None = None  # whose ids this viewer saw last
        # VP8 temporal layers above a limit are dropped (sfu/temporal.py); None until a
        # limit is first set, so a viewer that never has one pays nothing per packet.
        self.temporal: TemporalFilter | None = None
        super().__init__(
            consumer_id,
            producer,
            transport,
            payload_type,
            rtx_payload_type,
            layout,
            ssrc,
            rtx_ssrc,
            self.preferred,
        )

    def choose(self, now: float) -> RecvStream:
        """The highest encoding up to ``preferred`` that is arriving; else ``preferred``
        itself (a publisher that has not started sending)."""
        streams = self.producer.streams
        for stream in reversed(streams[: self.preferred + 1]):
            if stream.active(now):
                return stream
        return streams[self.preferred]

    def activate(self, now: float) -> None:
        if not self.closed:
            self.stream = self.choose(now)
        super().activate(now)

    def set_preferred(self, index: int, now: float) -> None:
        self.preferred = max(0, min(index, len(self.producer.streams) - 1))
        if not self.active:
            return
        wanted = self.choose(now)
        if self.target is not None and self.target is not wanted:
            self.target.detach(self)  # a move that had not happened yet is called off
            self.target = None
        if wanted is self.stream:
            return
        if self.waiting_keyframe:  # nothing sent from the old stream yet: just move
            self.stream.detach(self)
            self.stream = wanted
            wanted.attach(self)
        else:
            self.target = wanted
            wanted.attach(self)
        wanted.request_keyframe(now)

    def set_max_temporal(self, tid: int) -> None:
        """The highest VP8 temporal layer to send (3: all). Lower layers take effect at
        the next frame, higher ones at a layer-sync frame or keyframe. The viewer hears
        of it (a ``layer`` event with ``change: "temporal"``): its frame rate halves or
        doubles with each step."""
        if self.temporal is None:
            if tid >= 3:
                return
            self.temporal = TemporalFilter(3)
        before = self.temporal.target
        self.temporal.target = max(0, min(tid, 3))
        if self.temporal.target != before and self.announced is not None:
            self._announce(self.announced, "temporal")

    @property
    def max_temporal(self) -> int:
        return 3 if self.temporal is None else self.temporal.target

    def start(self, packet: RtpPacket, now: float) -> None:
        super().start(packet, now)
        if self.temporal is not None:
            self.temporal.reset()
        previous = self.pid_stream
        if self.vp8 and previous is not self.stream:
            # Continue from the last ids of the encoding this viewer saw (as shifted for
            # it), read off that stream: nothing per packet per viewer unless shifted.
            _pos, pid, _tl0_pos, tl0 = vp8_picture_ids(packet.payload)
            if previous is not None and previous.last_pid >= 0:
                last = (previous.last_pid + self.pid_shift) & 0x7FFF
                self.pid_shift = (last + 1 - pid) & 0x7FFF
            if previous is not None and previous.last_tl0 >= 0:
                last = (previous.last_tl0 + self.tl0_shift) & 0xFF
                self.tl0_shift = (last + 1 - tl0) & 0xFF
            self.pid_stream = self.stream
        if self.stream is not self.announced:
            self.announced = self.stream
            self._announce(self.stream, "encoding")

    def _announce(self, stream: RecvStream, change: str) -> None:
        self.transport.on_event(
            "layer",
            {
                "session": self.transport.session_id,
                "consumer": self.id,
                "producer": self.producer.id,
                "layer": stream.index,
                "rid": stream.rid,
                "width": stream.width,
                "height": stream.height,
                "temporal": self.max_temporal,
                "change": change,
                "estimate": self.transport.layers.estimate,
            },
        )

    def switch(self, stream: RecvStream, packet: RtpPacket, now: float) -> None:
        self.target = None
        super().switch(stream, packet, now)

    def send(self, packet: RtpPacket, buf: bytearray, twcc_offset: int, now: float) -> None:
        temporal = self.temporal
        if temporal is not None and packet.tid >= 0:
            self._send_filtered(temporal, packet, buf, twcc_offset, now)
            return
        if self.pid_shift or self.tl0_shift:
            self.rewrite_payload(buf, len(buf) - len(packet.payload))
        SimpleConsumer.send(self, packet, buf, twcc_offset, now)

    def _send_filtered(
        self,
        temporal: TemporalFilter,
        packet: RtpPacket,
        buf: bytearray,
        twcc_offset: int,
        now: float,
    ) -> None:
        """:meth:`send` with temporal layers above the limit dropped: what follows a
        dropped packet (and frame) is renumbered so the viewer sees no gap."""
        verdict = temporal.admit(packet)
        if verdict <= 0:
            if verdict < 0:
                self.seq_offset = (self.seq_offset - 1) & 0xFFFF
                if verdict == -2:
                    self.pid_shift = (self.pid_shift - 1) & 0x7FFF
            return
        if self.pid_shift or self.tl0_shift:
            self.rewrite_payload(buf, len(buf) - len(packet.payload))
        seq = (packet.seq + self.seq_offset + temporal.late_seq(packet.seq)) & 0xFFFF
        temporal.record(seq, packet.seq)
        ts = (packet.ts + self.ts_offset) & 0xFFFFFFFF
        buf[1] = packet.marker | self.pt
        SEQ_TS_SSRC.pack_into(buf, 2, seq, ts, self.ssrc)
        self.transport.send_rtp(buf, twcc_offset, now)
        self.packets += 1
        self.octets += len(packet.payload)
        if self.last_seq < 0 or (seq - self.last_seq) & 0xFFFF < 0x8000:  # not a late one
            self.last_seq = seq
            self.last_ts = ts
            self.last_sent_at = now

    def source_seq(self, out_seq: int) -> int:
        temporal = self.temporal
        if temporal is None:
            return super().source_seq(out_seq)
        source = temporal.source_of(out_seq)
        if source < 0 and not temporal.seq_drops:
            return super().source_seq(out_seq)  # sent before anything was dropped
        return source

    def rewrite_payload(self, buf: bytearray, offset: int) -> None:
        if not (self.pid_shift or self.tl0_shift):
            return
        pid_pos, pid, tl0_pos, tl0 = vp8_picture_ids(memoryview(buf)[offset:])
        if pid_pos >= 0:
            pos = offset + pid_pos
            if self.temporal is not None:
                pid += self.temporal.late_pid(pid)  # a late packet: drops since it
            if buf[pos] & 0x80:
                pid = (pid + self.pid_shift) & 0x7FFF
                buf[pos] = 0x80 | pid >> 8
                buf[pos + 1] = pid & 0xFF
            else:
                pid = (pid + self.pid_shift) & 0x7F
                buf[pos] = pid
        if tl0_pos >= 0:
            tl0 = (tl0 + self.tl0_shift) & 0xFF
            buf[offset + tl0_pos] = tl0

    def suspend(self) -> None:
        if self.target is not None:
            self.target.detach(self)
            self.target = None
        super().suspend()

    def close(self) -> None:
        if self.target is not None:
            self.target.detach(self)
            self.target = None
        super().close()


class PipeConsumer(Consumer):
    """Every encoding of a producer, unchanged but for the SSRC: one SSRC per encoding,
    chosen here, so the far side (a recorder, another worker) can be told them up front
    and is not disturbed when the publisher restarts an encoder."""

    __slots__ = (
        "id",
        "producer",
        "transport",
        "kind",
        "pt",
        "layout",
        "out_ssrcs",
        "wanted",
        "packets",
        "octets",
        "active",
        "closed",
    )

    def __init__(
        self, consumer_id: str, producer: Producer, transport: Transport, layout: ExtensionLayout
    ) -> None:
        self.id = consumer_id
        self.producer = producer
        self.transport = transport
        self.kind = producer.kind
        self.pt = producer.codec.payload_type
        self.layout = layout
        self.out_ssrcs = [random_ssrc() for _ in producer.streams]
        # Which encodings the far side needs (``pipe_demand``): all until it says.
        self.wanted = [True] * len(producer.streams)
        self.packets = [0] * len(producer.streams)
        self.octets = [0] * len(producer.streams)
        self.active = False
        self.closed = False
        self.fraction_lost = 0
        self.rtt: float | None = None
        self.report_at = self.report_from = -inf
        producer.add_consumer(self)

    def ssrcs(self) -> list[int]:
        return list(self.out_ssrcs)

    def forward(self, packet: RtpPacket, stream: RecvStream, now: float) -> None:
        index = stream.index
        block, twcc_offset = self.layout.block(packet, abs_send_time(now))
        buf = template(packet, block)
        pt = packet.pt if packet.pt == self.producer.red_pt else self.pt  # RED passes as is
        patch(buf, packet.marker | pt, packet.seq, packet.ts, self.out_ssrcs[index])
        self.transport.send_rtp(buf, twcc_offset + 12 if twcc_offset >= 0 else -1, now)
        self.packets[index] += 1
        self.octets[index] += len(packet.payload)

    def activate(self, now: float) -> None:
        if self.closed or self.active:
            return
        self.active = True
        for stream in self.producer.streams:
            stream.pipes.append(self)
        self.producer.request_keyframe(now)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in self.producer.streams:
            if self in stream.pipes:
                stream.pipes.remove(self)
        self.producer.remove_consumer(self)
        self.transport.consumer_closed(self)

    def _stream_of(self, ssrc: int) -> RecvStream | None:
        if ssrc in self.out_ssrcs:
            return self.producer.streams[self.out_ssrcs.index(ssrc)]
        return None

    def retransmit(self, media_ssrc: int, seqs: list[int], now: float) -> int:
        stream = self._stream_of(media_ssrc)
        if stream is None or stream.buffer is None:
            return 0
        sent = 0
        for seq in seqs:
            packet = stream.buffer.get(seq, now)
            if isinstance(packet, RtpPacket):
                self.forward(packet, stream, now)
                sent += 1
        return sent

    def request_keyframe(self, media_ssrc: int, now: float) -> None:
        stream = self._stream_of(media_ssrc)
        if stream is not None:
            stream.request_keyframe(now)

    def sender_reports(self, now: float) -> list[SenderInfo]:
        out = []
        for stream, ssrc in zip(self.producer.streams, self.out_ssrcs, strict=True):
            info = _translated_sr(
                stream, ssrc, 0, self.packets[stream.index], self.octets[stream.index], now
            )
            if info is not None:
                out.append(info)
        return out

    def __repr__(self) -> str:
        return f"<PipeConsumer {self.id} of {self.producer.id}>"


def consumer_for(
    consumer_id: str,
    producer: Producer,
    transport: Transport,
    payload_type: int,
    rtx_payload_type: int | None,
    layout: ExtensionLayout,
    ssrc: int | None = None,
    rtx_ssrc: int | None = None,
) -> SimpleConsumer:
    """The consumer a receiver of ``producer`` gets: simulcast if it has several encodings."""
    if producer.simulcast:
        return SimulcastConsumer(
            consumer_id, producer, transport, payload_type, rtx_payload_type, layout, ssrc, rtx_ssrc
        )
    return SimpleConsumer(
        consumer_id, producer, transport, payload_type, rtx_payload_type, layout, ssrc, rtx_ssrc
    )


__all__ = [
    "consumer_for",
    "Consumer",
    "PipeConsumer",
    "SenderInfo",
    "SimpleConsumer",
    "SimulcastConsumer",
    "random_ssrc",
]
