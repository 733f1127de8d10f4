"""A published track and its fan-out: the one place a packet is copied to many consumers.

A :class:`Producer` holds one :class:`~sfu.streams.RecvStream` per encoding (lowest
first). Its transport hands each packet to the stream it belongs to, the stream records
it, and :meth:`Producer.forward` gives it to the consumers of that stream. Forwarding
never decodes: payload bytes pass through untouched; only headers are rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sfu.consumer import SimulcastConsumer
from sfu.red import RedError, primary
from sfu.rtp import RtpPacket, abs_send_time, template
from sfu.sdp import Codec
from sfu.streams import Encoding, RecvStream

if TYPE_CHECKING:
    from sfu.consumer import Consumer
    from sfu.transport import Transport

logger = logging.getLogger(__name__)

# How far (in packets) a consumer's start point may fall behind the newest packet before it
# is moved up: well inside the 32,768 a 16-bit "older than" test can tell apart, and far
# beyond any reordering or retransmission cache (about a second of packets).
START_TRAIL = 0x4000


class Producer:
    """One published track: receives RTP from a publisher and fans it out."""

    def __init__(
        self,
        producer_id: str,
        transport: Transport,
        kind: str,
        mid: str,
        codec: Codec,
        encodings: list[Encoding] | None = None,
        *,
        use_nack: bool,
        use_rtx: bool,
        keyframe_interval: float = 0.5,
        red_pt: int | None = None,
    ) -> None:
        self.id = producer_id
        self.transport = transport
        self.kind = kind
        self.mid = mid
        self.codec = codec
        self.is_video = kind == "video"
        self.rtx_pt = codec.rtx_payload_type if use_rtx else None
        self.red_pt = red_pt  # the publisher's RED payload type (sfu/red.py), if it sends RED
        self.red_seen = False
        self.red_headers: tuple[int, ...] = ()  # block headers of the RED packet in hand
        self.streams = [
            RecvStream(
                self, index, encoding, use_nack=use_nack, keyframe_interval=keyframe_interval
            )
            for index, encoding in enumerate(encodings or [Encoding()])
        ]
        self.consumers: list[Consumer] = []
        self.layers_active = [True] * len(self.streams)  # as last told to the publisher
        self.unneeded_since = [-1.0] * len(self.streams)
        self.paused = False
        self.closed = False
        self.level_sum = 0
        self.level_count = 0
        self.on_close: list[Callable[[Producer], None]] = []

    @property
    def simulcast(self) -> bool:
        return len(self.streams) > 1

    # -- incoming ---------------------------------------------------------------------------------
    def forward(self, stream: RecvStream, packet: RtpPacket, now: float) -> None:
        """The hot path: one packet of ``stream`` to each of its consumers.

        Consumers sharing a header-extension layout share one template (header, their
        extensions, payload) built at most once per packet; each consumer then copies and
        patches it (:meth:`Consumer.send`). The checks below are inline because a method
        call per consumer per packet is a measurable share of the fan-out."""
        if not self.is_video and packet.audio_level >= 0:
            self.level_sum += packet.audio_level & 0x7F  # -dBov: 0 loudest, 127 silence
            self.level_count += 1
        if self.paused:
            return
        plain = packet  # what a viewer without RED gets: the packet, or its primary Opus
        if packet.pt == self.red_pt:
            if not self.red_seen:
                self.red_seen = True
                logger.info("producer %s: audio arrives with redundancy (RED)", self.id)
            stripped = self._primary(packet)
            if stripped is None:
                return
            plain = stripped
        groups = stream.groups
        if groups:
            keyframe = packet.keyframe
            is_video = self.is_video
            send_time = abs_send_time(now)
            for layout, consumers in groups:
                buf_template: bytearray | None = None
                plain_template: bytearray | None = None
                block = b""
                twcc_offset = -1
                for consumer in consumers:
                    if consumer.stream is not stream:
                        # A simulcast consumer that wants to move to this stream: it may
                        # only at a keyframe; until then its old stream keeps flowing.
                        if not keyframe:
                            continue
                        consumer.switch(stream, packet, now)
                    elif consumer.waiting_keyframe:
                        if is_video and not keyframe:
                            continue
                        consumer.start(packet, now)
                    else:
                        age = (packet.seq - consumer.start_seq) & 0xFFFF
                        if age & 0x8000:
                            continue  # older than the point this consumer started at
                        if age > START_TRAIL:
                            # Keep the start point trailing: 32,768 packets after it the
                            # 16-bit test above would read every packet as older (audio
                            # went silent 11 minutes in).
                            consumer.start_seq = (packet.seq - START_TRAIL // 2) & 0xFFFF
                    if buf_template is None:
                        block, twcc_offset = layout.block(packet, send_time)
                        buf_template = template(packet, block)
                        if twcc_offset >= 0:
                            twcc_offset += 12
                    if plain is not packet and consumer.red_pt is None:
                        if plain_template is None:
                            plain_template = template(plain, block)
                        consumer.send(plain, bytearray(plain_template), twcc_offset, now)
                        continue
                    consumer.send(packet, bytearray(buf_template), twcc_offset, now)
        for pipe in stream.pipes:
            pipe.forward(packet, stream, now)

    def _primary(self, packet: RtpPacket) -> RtpPacket | None:
        """A RED packet's primary block as a plain packet of the codec (None: malformed,
        dropped for every viewer; the publisher's stream and its other packets go on)."""
        try:
            pt, payload, self.red_headers = primary(packet.payload)
        except RedError:
            logger.debug("producer %s: malformed RED packet %d dropped", self.id, packet.seq)
            return None
        if pt != self.codec.payload_type or not payload:
            return None  # redundancy of another codec, or an empty primary
        plain = RtpPacket(packet.ssrc, packet.seq, packet.ts, pt, packet.marker, payload)
        plain.mid = packet.mid
        plain.audio_level = packet.audio_level
        plain.twcc = packet.twcc
        plain.size = packet.size
        return plain

    def bind(self, packet: RtpPacket, now: float) -> tuple[RecvStream, bool] | None:
        """The stream an SSRC we have not seen belongs to, and whether it is its RTX.

        Encodings are told apart by rid (or repaired rid for RTX); without one, only a
        single-encoding producer can take the packet, by payload type. A known encoding
        arriving on a new SSRC means the publisher restarted that encoder."""
        if packet.pt in (self.codec.payload_type, self.red_pt) and packet.rrid is None:
            stream = self._stream_for(packet.rid)
            if stream is None:
                return None
            if stream.ssrc is not None and stream.ssrc != packet.ssrc:
                logger.info("producer %s: %r changed SSRC to %d", self.id, stream, packet.ssrc)
                stream.rebind(packet.ssrc)
                stream.restart_consumers()
            stream.ssrc = packet.ssrc
            stream.request_keyframe(now)
            return stream, False
        if self.rtx_pt is not None and packet.pt == self.rtx_pt:
            stream = self._stream_for(packet.rrid)
            if stream is None or stream.rtx_ssrc is not None:
                return None  # an encoding's RTX SSRC changes only with its media SSRC
            stream.rtx_ssrc = packet.ssrc
            return stream, True
        return None

    def _stream_for(self, rid: bytes | None) -> RecvStream | None:
        if rid is None or (len(self.streams) == 1 and self.streams[0].rid is None):
            # A single encoding takes its packets with or without a rid (one rid alone
            # is not simulcast, and the answer does not name it).
            return self.streams[0] if len(self.streams) == 1 else None
        name = rid.decode("ascii", "replace")
        for stream in self.streams:
            if stream.rid == name:
                return stream
        return None

    # -- control ----------------------------------------------------------------------------------
    def set_paused(self, paused: bool, now: float) -> None:
        """Mute or unmute: while paused nothing is forwarded; on resume every consumer
        restarts at the next keyframe with continuous sequence numbers (no gap to NACK)."""
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            for stream in self.streams:
                stream.restart_consumers()
            self.request_keyframe(now)

    def stream_started(self, stream: RecvStream, now: float) -> None:
        """An encoding began (or came back) to arrive: viewers who want it, or who wait
        on one that does not arrive, move to it now rather than at their next layer
        decision."""
        for consumer in self.consumers:
            if not isinstance(consumer, SimulcastConsumer) or not consumer.active:
                continue
            if consumer.choose(now) is not (consumer.target or consumer.stream):
                consumer.set_preferred(consumer.preferred, now)

    def layer_demand(self) -> list[bool]:
        """Which encodings someone needs: a consumer's current, target or wished-for
        layer, the ones its viewer's probe aims at and passes, what a pipe's far side
        needs (every layer until it says), and always the lowest (a new or struggling
        viewer starts there without waiting for the publisher)."""
        wanted = [False] * len(self.streams)
        wanted[0] = True
        for pipe in self.streams[0].pipes:
            wanted = [a or b for a, b in zip(wanted, pipe.wanted, strict=True)]
        for consumer in self.consumers:
            current = getattr(consumer, "stream", None)
            if current is not None:
                wanted[current.index] = True
            preferred = getattr(consumer, "preferred", None)
            if preferred is not None:
                wanted[preferred] = True
            target = getattr(consumer, "target", None)
            if target is not None:
                wanted[target.index] = True
            layers = getattr(consumer.transport, "layers", None)  # a probe aims here
            warming = layers.warming.get(consumer) if layers is not None else None
            if warming is not None:
                # And every encoding on the way: a probe that carries less than its goal
                # moves the viewer one step up, onto an encoding that must be running.
                for index in range(min(warming + 1, len(wanted))):
                    wanted[index] = True
        return wanted

    def request_keyframe(self, now: float) -> None:
        for stream in self.streams:
            stream.request_keyframe(now)

    def add_consumer(self, consumer: Consumer) -> None:
        if consumer not in self.consumers:
            self.consumers.append(consumer)

    def remove_consumer(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for consumer in list(self.consumers):
            consumer.close()
        for callback in self.on_close:
            callback(self)

    def __repr__(self) -> str:
        return f"<Producer {self.id} {self.kind}/{self.codec.name} x{len(self.streams)}>"
