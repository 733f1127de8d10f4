"""One WebRTC peer on a worker's shared UDP port: ICE-lite, DTLS-SRTP, RTP/RTCP dispatch.

Sans-I/O: the worker hands in datagrams with ``receive`` and the current time; the
transport sends through the ``sender`` callable it was given and reports lifecycle
events through ``on_event``. No socket, no task, no timer of its own: ``tick`` is called
by the worker's clock.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from aioice import stun

from sfu import rtcp
from sfu.dtls import DtlsError, DtlsSession, is_dtls
from sfu.ice import Address, IceLiteSession
from sfu.nack import build_nack
from sfu.router import Consumer, Producer, random_ssrc
from sfu.rtp import RtpError, is_rtcp, parse_rtp, read_map, unwrap_rtx
from sfu.srtp import SrtpContext, SrtpError

logger = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0
MAX_LEARNED_SSRCS = 16


class TransportCounters:
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
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class PeerTransport:
    """A WHIP publisher's or WHEP viewer's connection, and the tracks on it."""

    def __init__(
        self,
        session_id: str,
        room: str,
        identity: str,
        ice: IceLiteSession,
        dtls: DtlsSession | None,
        sender: Callable[[bytes, Address], None],
        on_event: Callable[[str, dict[str, Any]], None],
        extensions: dict[str, int],
        now: float,
        publisher_bitrate: int = 2_500_000,
    ) -> None:
        self.session_id = session_id
        self.room = room
        self.identity = identity
        self.ice = ice
        self.dtls = dtls
        self.srtp: SrtpContext | None = None
        self.sender = sender
        self.on_event = on_event
        self.extensions = dict(extensions)
        self.ext_map = read_map(extensions)
        self.sdp_session_id = random.getrandbits(62)  # o= stays the same across renegotiations
        self.addr: Address | None = None
        self.now = now
        self.rtcp_ssrc = random_ssrc()
        self.publisher_bitrate = publisher_bitrate
        self.producers: list[Producer] = []
        self.producers_by_ssrc: dict[int, Producer] = {}
        self.rtx_by_ssrc: dict[int, Producer] = {}
        self.producers_by_pt: dict[int, Producer] = {}
        self.producers_by_mid: dict[bytes, Producer] = {}
        self.consumers: list[Consumer] = []
        self.consumers_by_ssrc: dict[int, Consumer] = {}
        self.twcc_seq = 0
        self.next_report = now + REPORT_INTERVAL
        self.counters = TransportCounters()
        self.packets_out = 0  # kept outside counters: one attribute less per packet
        self.bytes_out = 0
        self.closed = False
        # WHEP viewers end with their source; a conference subscriber stays for new tracks.
        self.close_when_idle = False
        self.quality = "excellent"
        self.retired_mids: set[str] = set()  # mids whose producer was closed: never reopened
        self.subscriber: Any = None  # sfu.subscriber.SubscriberSession for subscribe connections

    def add_extensions(self, extensions: dict[str, int]) -> None:
        """A renegotiated offer may add sections with extensions we had not seen."""
        self.extensions.update(extensions)
        self.ext_map = read_map(self.extensions)

    # -- tracks -------------------------------------------------------------------------
    def add_producer(self, producer: Producer) -> None:
        self.producers.append(producer)
        self.producers_by_pt[producer.codec.payload_type] = producer
        if producer.rtx_pt is not None:
            self.producers_by_pt[producer.rtx_pt] = producer
        self.producers_by_mid[producer.mid.encode()] = producer
        if producer.ssrc is not None:
            self.producers_by_ssrc[producer.ssrc] = producer
        if producer.rtx_ssrc is not None:
            self.rtx_by_ssrc[producer.rtx_ssrc] = producer

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        self.consumers_by_ssrc[consumer.ssrc] = consumer
        if consumer.rtx_ssrc is not None:
            self.consumers_by_ssrc[consumer.rtx_ssrc] = consumer
        consumer.producer.add_consumer(consumer)
        if self.srtp is not None:
            consumer.activate(self.now)

    def consumer_closed(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        self.consumers_by_ssrc.pop(consumer.ssrc, None)
        if consumer.rtx_ssrc is not None:
            self.consumers_by_ssrc.pop(consumer.rtx_ssrc, None)
        if not self.closed:
            self.on_event("consumer_closed", {"session": self.session_id, "consumer": consumer.id})
            if self.close_when_idle and not self.consumers and not self.producers:
                # A viewer whose source went away: end it, so its client learns at once
                # (DTLS close_notify) and can reconnect, rather than wait on silence.
                self.close("source ended")

    def counter_values(self) -> dict[str, int]:
        values = self.counters.as_dict()
        values["packets_out"] = self.packets_out
        values["bytes_out"] = self.bytes_out
        return values

    # -- input --------------------------------------------------------------------------
    def handle_stun(self, message: stun.Message, remote_ufrag: str, addr: Address, now: float) -> bytes | None:
        response = self.ice.handle_request(message, remote_ufrag, addr, now)
        if response is not None and self.ice.selected is not None:
            self.addr = self.ice.selected
        return response

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """A non-STUN datagram from an address ICE validated for this peer."""
        self.now = now
        if self.closed:
            return
        if self.addr is None:
            self.addr = addr  # DTLS before USE-CANDIDATE: answer where it came from
        first = data[0]
        if 127 < first < 192:
            if self.srtp is None:
                self.counters.dropped += 1
                return
            if is_rtcp(data):
                self._receive_rtcp(data, now)
            else:
                self._receive_rtp(data, now)
        elif is_dtls(data):
            self._receive_dtls(data, now)
        else:
            self.counters.dropped += 1

    def set_remote(self, remote_ufrag: str, dtls: DtlsSession) -> None:
        """A subscribe connection learns the client's ICE ufrag and certificate from its
        first answer; until then its checks and DTLS are dropped."""
        self.ice.remote_ufrag = remote_ufrag
        self.dtls = dtls

    def _receive_dtls(self, data: bytes, now: float) -> None:
        if self.dtls is None:
            self.counters.dropped += 1
            return
        was_connected = self.dtls.connected
        try:
            replies = self.dtls.receive(data)
        except DtlsError as exc:
            logger.warning("session %s (%s): %s", self.session_id, self.identity, exc)
            self.close(f"dtls: {exc}")
            return
        for reply in replies:
            self._send_raw(reply)
        if self.dtls.closed:
            self.close("dtls closed by peer")
            return
        if not was_connected and self.dtls.connected and self.dtls.keys is not None:
            keys = self.dtls.keys
            self.srtp = SrtpContext(keys.profile, keys.tx_key, keys.rx_key)
            for consumer in self.consumers:
                consumer.activate(now)
            for producer in self.producers:
                producer.request_keyframe(now)
            self.on_event("connected", {"session": self.session_id, "srtp_profile": keys.name})

    def _receive_rtp(self, data: bytes, now: float) -> None:
        try:
            plain = self.srtp.unprotect(data)  # type: ignore[union-attr]
            packet = parse_rtp(plain, self.ext_map)
        except (SrtpError, RtpError):
            self.counters.dropped += 1
            return
        counters = self.counters
        counters.packets_in += 1
        counters.bytes_in += len(data)
        producer = self.producers_by_ssrc.get(packet.ssrc)
        if producer is not None:
            producer.receive(packet, now)
            return
        producer = self.rtx_by_ssrc.get(packet.ssrc)
        if producer is None:
            producer = self._learn_ssrc(packet)
            if producer is None:
                counters.dropped += 1
                return
            if producer.ssrc == packet.ssrc:
                producer.receive(packet, now)
                return
        # An RTX packet: a retransmission we asked for, or a padding probe to drop.
        if producer.ssrc is None or producer.rtx_pt is None or packet.pt != producer.rtx_pt:
            counters.dropped += 1
            return
        original = unwrap_rtx(packet, producer.ssrc, producer.codec.payload_type)
        if original is None:
            return
        counters.rtx_in += 1
        producer.receive(original, now)

    def _learn_ssrc(self, packet: Any) -> Producer | None:
        """Bind an unsignalled SSRC to its track by MID extension or payload type."""
        if len(self.producers_by_ssrc) + len(self.rtx_by_ssrc) >= MAX_LEARNED_SSRCS:
            return None
        producer = None
        if packet.mid is not None:
            producer = self.producers_by_mid.get(packet.mid)
        if producer is None:
            producer = self.producers_by_pt.get(packet.pt)
        if producer is None:
            return None
        if packet.pt == producer.codec.payload_type and packet.rrid is None:
            if producer.ssrc is not None and producer.ssrc != packet.ssrc:
                if packet.rid is not None:
                    return None  # another simulcast layer: not forwarded before simulcast support
                logger.info("session %s: track %s changed SSRC", self.session_id, producer.mid)
                self.producers_by_ssrc.pop(producer.ssrc, None)
                for consumer in producer.consumers:
                    consumer.waiting_keyframe = True
                producer.stats = rtcp.ReceiveStats(producer.clock_rate)
                if producer.nack is not None:
                    producer.nack.reset()
            producer.ssrc = packet.ssrc
            self.producers_by_ssrc[packet.ssrc] = producer
            producer.request_keyframe(self.now)
            return producer
        if producer.rtx_pt is not None and packet.pt == producer.rtx_pt and producer.rtx_ssrc is None:
            producer.rtx_ssrc = packet.ssrc
            self.rtx_by_ssrc[packet.ssrc] = producer
            return producer
        return None

    def _receive_rtcp(self, data: bytes, now: float) -> None:
        try:
            plain = self.srtp.unprotect_rtcp(data)  # type: ignore[union-attr]
            packets = rtcp.parse_compound(plain)
        except (SrtpError, rtcp.RtcpError):
            self.counters.dropped += 1
            return
        self.counters.rtcp_in += 1
        for packet in packets:
            if isinstance(packet, rtcp.RtcpSrPacket):
                producer = self.producers_by_ssrc.get(packet.ssrc)
                if producer is not None:
                    info = packet.sender_info
                    producer.on_sender_report(info.ntp_timestamp, info.rtp_timestamp, now)
                self._reports(packet.reports)
            elif isinstance(packet, rtcp.RtcpRrPacket):
                self._reports(packet.reports)
            elif isinstance(packet, rtcp.RtcpPsfbPacket):
                if packet.fmt == rtcp.RTCP_PSFB_PLI:
                    self._keyframe_request(packet.media_ssrc, now)
                elif packet.fmt == rtcp.RTCP_PSFB_FIR and len(packet.fci) >= 8:
                    self._keyframe_request(int.from_bytes(packet.fci[0:4], "big"), now)
            elif isinstance(packet, rtcp.RtcpRtpfbPacket):
                if packet.fmt == rtcp.RTCP_RTPFB_NACK:
                    consumer = self.consumers_by_ssrc.get(packet.media_ssrc)
                    if consumer is not None:
                        self.counters.nacks_in += 1
                        self.counters.retransmissions += consumer.retransmit(rtcp.nack_seqs(packet), now)

    def _reports(self, reports: list[rtcp.RtcpReceiverInfo]) -> None:
        if not reports:
            return
        now_ntp = rtcp.ntp_now()
        for report in reports:
            consumer = self.consumers_by_ssrc.get(report.ssrc)
            if consumer is not None:
                consumer.on_receiver_report(report, now_ntp)

    def _keyframe_request(self, media_ssrc: int, now: float) -> None:
        consumer = self.consumers_by_ssrc.get(media_ssrc)
        if consumer is not None:
            self.counters.plis_in += 1
            consumer.request_keyframe(now)

    # -- output -------------------------------------------------------------------------
    def next_twcc(self) -> int:
        self.twcc_seq = (self.twcc_seq + 1) & 0xFFFF
        return self.twcc_seq

    def send_rtp(self, packet: bytearray) -> bool:
        srtp = self.srtp
        if srtp is None or self.addr is None or self.closed:
            return False
        try:
            data = srtp.protect(packet)
        except SrtpError:
            self.counters.dropped += 1
            return False
        self.sender(data, self.addr)
        self.packets_out += 1
        self.bytes_out += len(data)
        return True

    def send_rtcp(self, packet: bytes) -> None:
        if self.srtp is None or self.addr is None or self.closed:
            return
        try:
            data = self.srtp.protect_rtcp(packet)
        except SrtpError:
            return
        self.counters.rtcp_out += 1
        self.sender(data, self.addr)

    def _send_raw(self, data: bytes) -> None:
        if self.addr is not None:
            self.sender(data, self.addr)

    def send_keyframe_request(self, producer: Producer) -> None:
        if producer.ssrc is None:
            return
        self.counters.plis_out += 1
        self.send_rtcp(rtcp.pli(self.rtcp_ssrc, producer.ssrc))

    def send_nack(self, producer: Producer, seqs: list[int]) -> None:
        if producer.ssrc is None:
            return
        self.counters.nacks_out += 1
        self.send_rtcp(build_nack(self.rtcp_ssrc, producer.ssrc, seqs))

    # -- clock --------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Timers: DTLS retransmission, consent, NACK, keyframe throttling, reports."""
        self.now = now
        if self.closed:
            return
        if self.ice.expired(now):
            self.close("ice consent expired")
            return
        timeout = self.dtls.next_timeout() if self.dtls is not None else None
        if timeout is not None and timeout <= 0 and self.dtls is not None:
            for reply in self.dtls.handle_timeout():
                self._send_raw(reply)
        if self.srtp is None:
            return
        for producer in self.producers:
            producer.tick(now)
        if now >= self.next_report:
            self.next_report = now + REPORT_INTERVAL
            self._send_reports(now)

    def _send_reports(self, now: float) -> None:
        ntp = rtcp.ntp_now()
        reports = [p.stats.report(p.ssrc, now) for p in self.producers if p.ssrc is not None and p.stats.received]
        if reports:
            compound = rtcp.receiver_report(self.rtcp_ssrc, reports)
            video = [p.ssrc for p in self.producers if p.is_video and p.ssrc is not None]
            if video:
                compound += rtcp.remb(self.rtcp_ssrc, self.publisher_bitrate, video)  # type: ignore[arg-type]
            self.send_rtcp(compound)
        for consumer in self.consumers:
            report = consumer.sender_report(now, ntp)
            if report is not None:
                self.send_rtcp(report)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        if self.dtls is not None:
            for reply in self.dtls.close():
                self._send_raw(reply)
        self.closed = True
        for producer in list(self.producers):
            producer.close()
        for consumer in list(self.consumers):
            consumer.close()
        logger.info("session %s (%s) closed: %s", self.session_id, self.identity, reason)
        self.on_event("closed", {"session": self.session_id, "reason": reason})
