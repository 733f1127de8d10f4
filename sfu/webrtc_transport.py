"""A WebRTC peer on the worker's shared UDP port: ICE-lite, DTLS-SRTP, then RTP/RTCP.

The worker's demultiplexer (:mod:`sfu.demux`) hands in STUN checks by ICE username and
every other datagram by the address ICE validated. This class owns the peer's ICE state,
DTLS handshake, SRTP keys and address: nothing outside it encrypts or addresses packets.
"""

from __future__ import annotations

import logging
import random
from math import inf
from typing import Any

from aioice import stun

from sfu.dtls import DtlsError, DtlsSession, is_dtls
from sfu.ice import Address, IceLiteSession
from sfu.ice_tcp import TcpAddress
from sfu.rtp import U16, is_rtcp
from sfu.srtp import MAX_PACKET, SrtpContext, SrtpError, srtp_protect
from sfu.transport import Transport, TransportContext

logger = logging.getLogger(__name__)


class WebRtcTransport(Transport):
    kind = "webrtc"

    def __init__(
        self,
        session_id: str,
        room: str,
        identity: str,
        ice: IceLiteSession,
        dtls: DtlsSession | None,
        sender: Any,
        context: TransportContext,
        now: float,
        extensions: dict[str, int] | None = None,
        tcp_sender: Any = None,
    ) -> None:
        super().__init__(session_id, room, identity, context, now, extensions)
        self.ice = ice
        self.dtls = dtls
        self.srtp: SrtpContext | None = None
        self.udp_sender = sender  # the worker socket's sendto(data, addr)
        self.tcp_sender = tcp_sender  # Demux.send_tcp: frames onto an ICE-TCP connection
        self.sender = sender  # the one for self.addr's path
        self.addr: Address | None = None
        # SrtpContext.protect inlined into send_rtp (one Python call less per forwarded copy).
        self._tx: Any = None
        self._tx_buf: Any = None
        self._tx_view: Any = None
        self._tx_len: Any = None
        self.sdp_session_id = random.getrandbits(62)  # o= stays the same across renegotiations
        self.retired_mids: set[str] = set()  # mids whose producer was closed: never reopened
        self.subscriber: Any = None  # sfu.subscriber.SubscriberSession of a subscribe connection
        self.wake(self.next_deadline())

    @property
    def connected(self) -> bool:
        return self.srtp is not None and self.addr is not None

    # -- input --------------------------------------------------------------------------------
    def handle_stun(
        self,
        message: stun.Message,
        remote_ufrag: str,
        addr: Address,
        now: float,
        local_ufrag: str | None = None,
    ) -> bytes | None:
        response = self.ice.handle_request(message, remote_ufrag, addr, now, local_ufrag)
        if response is not None and self.ice.selected is not None:
            self._use(self.ice.selected)
        return response

    def _use(self, addr: Address) -> None:
        """Send to ``addr`` from now on, over its path: UDP, or an ICE-TCP connection."""
        self.addr = addr
        if type(addr) is TcpAddress and self.tcp_sender is not None:
            self.sender = self.tcp_sender
        else:
            self.sender = self.udp_sender

    def set_remote(self, remote_ufrag: str, dtls: DtlsSession) -> None:
        """A server-offered connection learns the client's ICE ufrag and certificate from
        its first answer; until then its checks and DTLS are dropped."""
        self.ice.remote_ufrag = remote_ufrag
        self.dtls = dtls

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """A non-STUN datagram from an address ICE validated for this peer."""
        self.now = now
        if self.closed:
            return
        if self.addr is None:
            self._use(addr)  # DTLS before USE-CANDIDATE: answer where it came from
        first = data[0]
        if 127 < first < 192:
            srtp = self.srtp
            if srtp is None:
                self.counters.dropped += 1
                return
            try:
                # Liveness only after authentication passed: a forged packet from the
                # peer's address fails unprotect and refreshes nothing (sfu/ice.py).
                if is_rtcp(data):
                    plain = srtp.unprotect_rtcp(data)
                    self.ice.media_received(addr, now)
                    self.receive_rtcp(plain, now)
                else:
                    plain = srtp.unprotect(data)
                    self.ice.media_received(addr, now)
                    self.receive_rtp(plain, len(data), now)
            except SrtpError:
                self.counters.dropped += 1
        elif is_dtls(data):
            self._receive_dtls(data, now)
        else:
            self.counters.dropped += 1

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
            self.start_srtp(SrtpContext(keys.profile, keys.tx_key, keys.rx_key), now, keys.name)
        else:
            self.wake(self.next_deadline())  # a handshake retransmission timer may have moved

    def start_srtp(self, srtp: SrtpContext, now: float, profile: str) -> None:
        """DTLS agreed these keys: media may flow."""
        self.srtp = srtp
        self._tx, self._tx_buf, self._tx_view, self._tx_len = srtp.tx_state()
        self._on_connected(now, {"srtp_profile": profile})

    # -- output -------------------------------------------------------------------------------
    def send_rtp(self, buf: bytearray, twcc_offset: int, now: float) -> None:
        """Stamp, protect, send. SrtpContext.protect is inlined here: a Python call per
        forwarded copy is a measurable share of the fan-out (docs/design.md)."""
        pacer = self.pacer
        if pacer is not None and not pacer.admit(buf, twcc_offset, now):
            return  # queued (sent later through here) or dropped
        if twcc_offset >= 0:
            self.twcc_seq = twcc = (self.twcc_seq + 1) & 0xFFFF
            U16.pack_into(buf, twcc_offset, twcc)
            on_sent = self._on_sent
            if on_sent is not None:
                on_sent(twcc, len(buf), now)
        size = len(buf)
        view = self._tx_view
        if view is None or size > MAX_PACKET:
            self.counters.dropped += 1
            return
        view[0:size] = buf
        length = self._tx_len
        length[0] = size
        if srtp_protect(self._tx, self._tx_buf, length):
            self.counters.dropped += 1
            return
        data = view[0 : length[0]]
        self.sender(data, self.addr)
        self.packets_out += 1
        self.bytes_out += len(data)

    def _send_rtcp_packet(self, data: bytes) -> bool:
        if self.srtp is None or self.addr is None:
            return False
        try:
            protected = self.srtp.protect_rtcp(data)
        except SrtpError:
            return False
        self.sender(protected, self.addr)
        return True

    def _send_raw(self, data: bytes) -> None:
        if self.addr is not None:
            self.sender(data, self.addr)

    # -- timers -------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        if self.closed:
            return inf
        earliest = min(super().next_deadline(), self.ice.last_consent + self.ice.consent_timeout)
        if self.dtls is not None:
            timeout = self.dtls.next_timeout()
            if timeout is not None:
                earliest = min(earliest, self.now + max(timeout, 0.0))
        return earliest

    def on_timer(self, now: float) -> None:
        """Consent, DTLS retransmission, then the RTCP units and reports."""
        self.now = now
        if self.closed:
            return
        if self.ice.expired(now):
            self.close("ice consent expired")
            return
        if self.dtls is not None:
            timeout = self.dtls.next_timeout()
            if timeout is not None and timeout <= 0:
                for reply in self.dtls.handle_timeout():
                    self._send_raw(reply)
        super().on_timer(now)

    def _before_close(self) -> None:
        if self.dtls is not None:
            for reply in self.dtls.close():
                self._send_raw(reply)
