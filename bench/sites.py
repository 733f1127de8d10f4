"""Synthetic sites for ``telebridge bench``: participants that do a browser's protocol
work over ``/ws`` (join with a token, publish or subscribe, answer the server's offers,
ICE, DTLS, SRTP, RTCP receiver reports, NACK and PLI) but never decode.

* :class:`Site` is one participant: its :class:`WsSignal`, a :class:`LayeredPublisher`
  if it publishes, a :class:`Subscriber` if it watches someone.
* :class:`LayeredPublisher` sends three simulcast encodings of synthetic VP8 (a real
  payload descriptor and keyframe header, filler after them) at browser-like rates
  (:data:`LAYERS`) and Opus-sized audio at 50 packets/s, each payload ending in its send
  time (:func:`bench.loadclient.stamp`), so viewers on this machine measure the added
  one-way delay.
* :class:`Subscriber` counts what arrives per stream from the plain RTP header (loss from
  sequence gaps, which it NACKs), decrypts one packet in :data:`DELAY_SAMPLE_EVERY` to
  read its stamp, and sends receiver reports every second and a PLI when a NACKed gap
  is not repaired.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import math
import random
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtp import RtcpReceiverInfo, RtcpRtpfbPacket

from bench.linkemu import LinkEmulator, LinkParams
from bench.loadclient import (
    AUDIO_PT,
    NO_EXTENSIONS,
    VIDEO_PT,
    Answer,
    Clip,
    PeerError,
    SimulcastPublisher,
    _Peer,
    fetch_token,
    parse_answer,
    read_stamp,
)
from bench.scenarios import SiteSpec
from sfu.rtcp import build_transport_feedback, pli, receiver_report
from sfu.rtp import RtpError, parse_rtp
from sfu.sdp import URI_TWCC
from sfu.srtp import SrtpError

SIOCGSTAMP = 0x8906  # linux/sockios.h: the kernel's receive time of a socket's last datagram
_TIMEVAL = struct.Struct("@ll")
_EMPTY = bytes(_TIMEVAL.size)
DELAY_SAMPLE_EVERY = 16  # decrypt one received RTP packet in this many to read its stamp
MAX_DELAY_SAMPLES = 2000  # per site and window
RTCP_INTERVAL = 1.0
TWCC_INTERVAL = 0.1  # seconds between transport-cc feedbacks, as browsers send them
NACK_MAX = 32  # sequence numbers NACKed per gap at most (a longer gap is a PLI's job)
PLI_AFTER = 1.0  # seconds a NACKed gap may stay unrepaired before a PLI
FPS = 20


@dataclass(frozen=True)
class LayerSpec:
    """One simulcast encoding: what a browser's camera sends for it."""

    name: str
    width: int
    height: int
    bitrate: int


LAYERS = (
    LayerSpec("low", 320, 180, 150_000),
    LayerSpec("medium", 640, 360, 500_000),
    LayerSpec("high", 1280, 720, 1_500_000),
)
AUDIO_PAYLOAD = 80  # bytes: Opus at ~32 kbit/s, 20 ms frames
PACKET_PAYLOAD = 1100  # bytes of VP8 payload per packet at most
RTP_OVERHEAD = 12 + 8 + 16  # header, the mid extension, the SRTP (GCM) tag


def synthetic_clip(spec: LayerSpec, fps: int = FPS, keyframe_factor: int = 4) -> Clip:
    """Two seconds of one encoding as VP8 packets that look real to the SFU (payload
    descriptor with a 15-bit picture id, the keyframe's frame tag, start code and size)
    at ``spec.bitrate``; frame 0 is a keyframe ``keyframe_factor`` times the others."""
    rng = random.Random(spec.bitrate)
    per_frame = spec.bitrate / 8 / fps
    packets = max(1, math.ceil(per_frame / (PACKET_PAYLOAD + RTP_OVERHEAD)))
    size = max(40, int(per_frame / packets) - RTP_OVERHEAD)
    filler = bytes(rng.getrandbits(8) for _ in range(PACKET_PAYLOAD + 64))
    frames: list[list[bytes]] = []
    for index in range(2 * fps):
        key = index == 0
        count = packets * keyframe_factor if key else packets
        frame = []
        for n in range(count):
            descriptor = bytes([0x90 if n == 0 else 0x80, 0x80, 0x80, 0x00])
            header = b""
            if n == 0:  # VP8 frame tag: P bit 0 on a keyframe, show_frame set
                header = bytes([0x10 if key else 0x11, 0x02, 0x00])
                if key:
                    header += b"\x9d\x01\x2a" + spec.width.to_bytes(2, "little")
                    header += spec.height.to_bytes(2, "little")
            body = size - len(descriptor) - len(header)
            frame.append(descriptor + header + filler[: max(16, body)])
        frames.append(frame)
    audio = [bytes([0xFC]) + filler[n : n + AUDIO_PAYLOAD - 1] for n in range(50)]
    return Clip(frames, audio, spec.width, spec.height, spec.bitrate)


# -- /ws signaling ------------------------------------------------------------------------


# Events a site acts on; the others (every participant's join and leave, speakers,
# quality) are only counted, unparsed, so a big room's event stream costs the load
# processes little. A server that serialises differently still gets every event parsed.
REFUSALS = ("server_busy", "room_full")  # error codes that mean "full", not "broken"
WANTED_EVENTS = frozenset({"offer", "track_published", "removed", "room_ended", "media_lost"})
_EVENT = re.compile(r'^\{[^{]*"type":\s*"event",\s*"event":\s*"(\w+)"')


class SignalError(Exception):
    """The server answered a request with ``error`` (``code``), or closed the socket."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class WsSignal:
    """One ``/ws`` connection: numbered requests answered by ``response``/``error``, events
    handed to ``on_event``. Only what a site needs; the full SDK is signaling.client."""

    def __init__(self, base_url: str, on_event: Callable[[str, dict[str, Any]], None]) -> None:
        self.url = re.sub(r"^http", "ws", base_url.rstrip("/")) + "/ws"
        self.on_event = on_event
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.skipped = 0

    async def connect(self, http: aiohttp.ClientSession) -> None:
        self.ws = await http.ws_connect(self.url, heartbeat=None, max_msg_size=1 << 20)
        self.reader = asyncio.ensure_future(self._read(self.ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            head = _EVENT.search(message.data, 0, 120)
            if head is not None and head.group(1) not in WANTED_EVENTS:
                self.skipped += 1  # a browser would parse it; the count is all we need
                continue
            try:
                data = json.loads(message.data)
            except ValueError:
                continue
            kind = data.get("type")
            waiter = self.pending.pop(data.get("id", -1), None) if "id" in data else None
            if kind == "response" and waiter is not None and not waiter.done():
                waiter.set_result(data.get("data") or {})
            elif kind == "error" and waiter is not None and not waiter.done():
                waiter.set_exception(SignalError(data.get("code", "?"), data.get("message", "")))
            elif kind == "event":
                self.on_event(data.get("event", ""), data.get("data") or {})
            elif kind == "error":
                self.on_event("error", data)
        self.close_code = ws.close_code
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_exception(SignalError("closed", f"code {ws.close_code}"))
        self.pending.clear()

    async def request(self, kind: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        if self.ws is None or self.ws.closed:
            raise SignalError("closed", f"code {self.close_code}")
        request_id = next(self.ids)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = waiter
        await self.ws.send_str(json.dumps({"v": 1, "type": kind, "id": request_id, **fields}))
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            self.pending.pop(request_id, None)
            raise SignalError("timeout", f"no answer to {kind} in {timeout:.0f} s") from None

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            try:
                await asyncio.wait_for(self.ws.close(), 2)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
        if self.reader is not None:
            self.reader.cancel()


# -- media ----------------------------------------------------------------------------------


class LayeredPublisher(SimulcastPublisher):
    """The three :data:`LAYERS` (or those given) and audio, stamped, published over /ws:
    :meth:`publish` sends the offer in a ``publish`` request and starts ICE with the
    answer."""

    kind = "publisher"

    def __init__(
        self, base_url: str, room: str, clips: list[Clip], certificate: RTCCertificate
    ) -> None:
        super().__init__(base_url, room, "", clips, FPS, 4.0, True, certificate, stamp=True)

    async def publish(self, signal: WsSignal) -> None:
        answer = await signal.request(
            "publish",
            sdp=self.offer(),
            tracks=[{"mid": "0", "source": "camera"}, {"mid": "1", "source": "microphone"}],
        )
        self.start(answer["sdp"])


def answer_for(offer: str, ufrag: str, pwd: str, fingerprint: str, twcc: bool = True) -> str:
    """A recvonly answer to the server's offer, as a browser writes it: every section
    accepted with the offer's codecs and extensions (transport-cc too: :class:`Subscriber`
    sends its feedback), our ICE credentials and certificate, ``setup:active``."""
    session, *sections = re.split(r"\r?\n(?=m=)", offer.strip())
    lines = ["v=0", f"o=- {random.getrandbits(62)} 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    lines += [ln for ln in session.splitlines() if ln.startswith("a=group:")]
    lines.append("a=msid-semantic: WMS *")
    for section in sections:
        media = section.splitlines()
        mline = media[0].split()
        lines.append(media[0])
        lines.append("c=IN IP4 127.0.0.1")
        if mline[1] == "0":
            lines += [ln for ln in media if ln.startswith("a=mid:")]
            continue
        lines += [ln for ln in media if ln.startswith("a=mid:")]
        lines += [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}"]
        lines += [f"a=fingerprint:sha-256 {fingerprint}", "a=setup:active"]
        inactive = any(ln == "a=inactive" for ln in media)
        lines.append("a=inactive" if inactive else "a=recvonly")
        lines += ["a=rtcp-mux", "a=rtcp-rsize"]
        for line in media:
            if not twcc and ("transport-cc" in line or URI_TWCC in line):
                continue
            if line.startswith(("a=extmap:", "a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
                lines.append(line)
    return "\r\n".join(lines) + "\r\n"


class _Stream:
    """What one received SSRC has delivered, from plain RTP headers."""

    __slots__ = ("kind", "base", "top", "received", "reported_expected", "reported_received")

    def __init__(self, kind: str, seq: int) -> None:
        self.kind = kind  # "video", "audio" or "rtx"
        self.base = seq  # extended sequence numbers
        self.top = seq
        self.received = 0
        self.reported_expected = 0
        self.reported_received = 0

    @property
    def expected(self) -> int:
        return self.top - self.base + 1


class Subscriber(_Peer):
    """The subscribe connection of a /ws site: answers the server's offers, then counts."""

    kind = "subscriber"

    def __init__(
        self, base_url: str, room: str, certificate: RTCCertificate, twcc: bool = True
    ) -> None:
        super().__init__(base_url, room, "", certificate)
        self.twcc = twcc  # send transport-cc feedback (and accept the extension)
        self.ssrc = random.randint(1, 0xFFFFFFFE)  # ours, as the sender of RTCP
        self.kinds: dict[int, str] = {}  # payload type -> "video", "audio", "rtx"
        self.streams: dict[int, _Stream] = {}
        self.rtp = 0
        self.rtp_bytes = 0
        self.rtcp = 0
        self.first_rtp_at = 0.0
        self.got: set[str] = set()
        self.delays: list[float] = []  # ms, since the last take_delays()
        self.read_lags: list[float] = []  # ms from the kernel's arrival to our read
        self.fileno = -1
        self.stamps = 0
        self.verify_failed = 0
        self.nacks_sent = 0
        self.plis_sent = 0
        self.rtx_received = 0
        self.padding_received = 0  # the server's probes (RTX, padding only)
        self.nacked = 0  # sequence numbers NACKed since the last PLI check
        self.nacked_at = 0.0
        self.rtx_at_nack = 0
        self.next_rtcp = 0.0
        self.version = 0
        self.twcc_id = 0  # the offer's transport-wide sequence number extension id
        self.twcc_top = -1  # highest extended transport-wide sequence number seen
        self.twcc_next = -1  # the first one the next feedback reports
        self.twcc_arrivals: dict[int, int] = {}
        self.twcc_count = 0
        self.twcc_sent = 0
        self.next_twcc = 0.0

    def on_answer(self, answer: Answer) -> None:
        self.next_rtcp = time.monotonic() + RTCP_INTERVAL

    def learn(self, offer: str) -> None:
        """Payload types of the server's offer (which are video, audio, RTX) and the id
        of its transport-wide sequence number extension."""
        for pt, name in re.findall(r"a=rtpmap:(\d+) ([\w-]+)/", offer):
            low = name.lower()
            self.kinds[int(pt)] = "rtx" if low == "rtx" else "audio" if low == "opus" else "video"
        found = re.search(r"a=extmap:(\d+) " + re.escape(URI_TWCC), offer)
        self.twcc_id = int(found.group(1)) if found and self.twcc else 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        first = data[0]
        if 127 < first < 192 and len(data) >= 12:
            if 191 < data[1] < 224:
                self.rtcp += 1
                return
            self._on_rtp(data)
            return
        super().datagram_received(data, addr)

    def _on_rtp(self, data: bytes) -> None:
        self.rtp += 1
        self.rtp_bytes += len(data)
        ssrc = int.from_bytes(data[8:12], "big")
        seq = data[2] << 8 | data[3]
        stream = self.streams.get(ssrc)
        if stream is None:
            kind = self.kinds.get(data[1] & 0x7F, "video")
            stream = self.streams[ssrc] = _Stream(kind, seq)
            if not self.first_rtp_at:
                self.first_rtp_at = time.monotonic()
        stream.received += 1
        if stream.kind == "rtx":
            if data[0] & 0x20:  # padding only: a bandwidth probe (still fed back), not a repair
                self.padding_received += 1
            else:
                self.rtx_received += 1
        else:
            self.got.add(stream.kind)
            delta = (seq - stream.top) & 0xFFFF
            if 0 < delta < 0x8000:
                if delta > 1 and stream.kind == "video":
                    self._nack(ssrc, stream.top, delta - 1)
                stream.top += delta
        if self.twcc_id and data[0] & 0x10:
            self._twcc_arrival(data)
        if not self.rtp % DELAY_SAMPLE_EVERY and stream.kind != "rtx":
            self._sample(data)

    def _twcc_arrival(self, data: bytes) -> None:
        """Note the transport-wide sequence number (one-byte header extension) and when
        it arrived, for the next transport-cc feedback."""
        pos = 12 + 4 * (data[0] & 0x0F)
        if len(data) < pos + 4 or data[pos] != 0xBE or data[pos + 1] != 0xDE:
            return
        end = pos + 4 + 4 * (data[pos + 2] << 8 | data[pos + 3])
        pos += 4
        while pos < end and pos < len(data):
            head = data[pos]
            if head == 0:
                pos += 1
                continue
            size = (head & 0x0F) + 1
            if head >> 4 == self.twcc_id and size == 2 and pos + 3 <= len(data):
                seq = data[pos + 1] << 8 | data[pos + 2]
                if self.twcc_top < 0:
                    self.twcc_top = seq
                    extended = seq
                else:
                    delta = (seq - self.twcc_top) & 0xFFFF
                    extended = self.twcc_top + (delta if delta < 0x8000 else delta - 0x10000)
                    self.twcc_top = max(self.twcc_top, extended)
                self.twcc_arrivals[extended] = int(time.monotonic() * 4000)  # 250 us ticks
                return
            pos += 1 + size

    def _send_twcc(self) -> None:
        """One transport-cc feedback for what arrived since the last (as browsers do
        every ~100 ms), lost sequence numbers included as not received."""
        arrivals, self.twcc_arrivals = self.twcc_arrivals, {}
        if not arrivals or self.srtp is None or self.transport is None or not self.streams:
            return
        base = min(arrivals)
        if self.twcc_next >= 0 and self.twcc_next < base and base - self.twcc_next < 1000:
            base = self.twcc_next  # report the gap since the last feedback as lost
        top = min(max(arrivals), base + 2000)
        self.twcc_next = top + 1
        statuses = [arrivals.get(seq) for seq in range(base, top + 1)]
        try:
            feedback = build_transport_feedback(
                self.ssrc, next(iter(self.streams)), base, self.twcc_count, statuses
            )
        except ValueError:
            return
        self.twcc_count = (self.twcc_count + 1) & 0xFF
        self.transport.sendto(self.srtp.protect_rtcp(feedback), self.remote)
        self.twcc_sent += 1

    def _sample(self, data: bytes) -> None:
        if self.srtp is None:
            return
        arrived = self._arrival()
        try:
            packet = parse_rtp(self.srtp.unprotect(data), NO_EXTENSIONS)
        except (SrtpError, RtpError):
            self.verify_failed += 1
            return
        sent = read_stamp(packet.payload)
        if sent is not None:
            self.stamps += 1
            if len(self.delays) < MAX_DELAY_SAMPLES:
                now = time.time()
                self.delays.append(1000 * ((arrived or now) - sent))
                self.read_lags.append(1000 * (now - arrived) if arrived else 0.0)

    def _arrival(self) -> float | None:
        """When the kernel received the datagram being handled (SIOCGSTAMP: the last
        one read from this socket, which is it, since the event loop hands each datagram
        over as it reads it). So the delay measured is the server's and the network's,
        not the time this busy load process took to read it (``read_lags``)."""
        if self.fileno < 0:
            return None
        try:
            seconds, micros = _TIMEVAL.unpack(fcntl.ioctl(self.fileno, SIOCGSTAMP, _EMPTY))
        except OSError:
            return None
        return float(seconds + micros / 1e6)

    def _nack(self, ssrc: int, top: int, missing: int) -> None:
        if self.srtp is None or self.transport is None:
            return
        lost = [(top + 1 + n) & 0xFFFF for n in range(min(missing, NACK_MAX))]
        packet = RtcpRtpfbPacket(fmt=1, ssrc=self.ssrc, media_ssrc=ssrc, lost=lost)
        self.transport.sendto(self.srtp.protect_rtcp(bytes(packet)), self.remote)
        self.nacks_sent += 1
        if not self.nacked:
            self.nacked_at = time.monotonic()
            self.rtx_at_nack = self.rtx_received
        self.nacked += len(lost)

    def timer(self, now: float) -> None:
        super().timer(now)
        if not self.connected or self.srtp is None or self.transport is None or self.closed:
            return
        if now >= self.next_rtcp:
            self.next_rtcp = now + RTCP_INTERVAL
            self._report(now)
        if self.twcc_id and now >= self.next_twcc:
            self.next_twcc = now + TWCC_INTERVAL
            self._send_twcc()

    def _report(self, now: float) -> None:
        """Receiver reports for every stream and, when NACKs went unrepaired, a PLI."""
        assert self.srtp is not None and self.transport is not None
        blocks = []
        video: list[int] = []
        for ssrc, stream in self.streams.items():
            if stream.kind == "rtx":
                continue
            if stream.kind == "video":
                video.append(ssrc)
            expected = stream.expected - stream.reported_expected
            received = stream.received - stream.reported_received
            stream.reported_expected, stream.reported_received = stream.expected, stream.received
            lost = max(0, expected - received)
            blocks.append(
                RtcpReceiverInfo(
                    ssrc=ssrc,
                    fraction_lost=min(255, (lost << 8) // expected) if expected > 0 else 0,
                    packets_lost=min(max(0, stream.expected - stream.received), 0x7FFFFF),
                    highest_sequence=stream.top & 0xFFFFFFFF,
                    jitter=0,
                    lsr=0,
                    dlsr=0,
                )
            )
        compound = receiver_report(self.ssrc, blocks[:31]) if blocks else b""
        if (
            self.nacked
            and now - self.nacked_at >= PLI_AFTER
            and self.rtx_received - self.rtx_at_nack < self.nacked
        ):
            compound += b"".join(pli(self.ssrc, ssrc) for ssrc in video)
            self.plis_sent += 1
        if self.nacked and now - self.nacked_at >= PLI_AFTER:
            self.nacked = 0
        if compound:
            self.transport.sendto(self.srtp.protect_rtcp(compound), self.remote)

    async def open(self) -> None:
        await super().open()
        assert self.transport is not None
        self.fileno = self.transport.get_extra_info("socket").fileno()

    def take_delays(self) -> tuple[list[float], list[float]]:
        """(delays, read lags) in ms since the last call."""
        delays, self.delays = self.delays, []
        lags, self.read_lags = self.read_lags, []
        return delays, lags

    def totals(self) -> tuple[int, int]:
        """(expected, received) media packets so far; RTX repairs count as received."""
        expected = received = 0
        for stream in self.streams.values():
            if stream.kind != "rtx":
                expected += stream.expected
                received += stream.received
        return expected, min(expected, received + self.rtx_received)


# -- a site -----------------------------------------------------------------------------------


@dataclass
class SiteState:
    refused: bool = False
    refused_after: float | None = None  # seconds from the subscribe to its refusal
    error: str = ""
    started_at: float = 0.0
    joined_at: float = 0.0
    events: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Site:
    """One participant: /ws signaling plus its publish and subscribe connections."""

    def __init__(
        self,
        spec: SiteSpec,
        base_url: str,
        secret: str | None,
        certificate: RTCCertificate,
        clips: list[Clip] | None = None,
    ) -> None:
        self.spec = spec
        self.base_url = base_url
        self.secret = secret
        self.certificate = certificate
        self.state = SiteState()
        self.signal = WsSignal(base_url, self._on_event)
        self.publisher = (
            LayeredPublisher(base_url, spec.room, clips or [], certificate)
            if spec.publishes
            else None
        )
        self.subscriber = (
            Subscriber(base_url, spec.room, certificate, spec.twcc) if spec.watch else None
        )
        self.wanted: set[str] = set()
        self.link: LinkEmulator | None = None
        self._answering: asyncio.Task[None] | None = None
        self._offers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @property
    def peers(self) -> list[_Peer]:
        return [p for p in (self.publisher, self.subscriber) if p is not None]

    @property
    def has_media(self) -> bool:
        """It receives audio and video from what it watches (a pure publisher: it sends)."""
        if self.subscriber is not None:
            return {"audio", "video"} <= self.subscriber.got
        return self.publisher is not None and self.publisher.connected

    @property
    def stage(self) -> str:
        """How far a site without media got: where a run that stalls is stuck."""
        if self.has_media:
            return "media"
        if not self.state.joined_at:
            return "joining"
        for peer in self.peers:
            if peer.answer is None:
                return "negotiating"
            if not peer.ice_ok:
                return "ice"
            if not peer.connected:
                return "dtls"
        return "awaiting media"

    @property
    def join_s(self) -> float | None:
        """Seconds from its start (token, /ws) to its first media packet."""
        if self.subscriber is not None and self.subscriber.first_rtp_at:
            return self.subscriber.first_rtp_at - self.state.started_at
        if self.subscriber is None and self.publisher is not None and self.publisher.connected:
            return self.publisher.connected_at - self.state.started_at
        return None

    @property
    def handshake_s(self) -> tuple[float | None, float | None]:
        """ICE and DTLS seconds of the connection it watches through (a pure publisher:
        the one it sends on)."""
        peer = self.subscriber or self.publisher
        return peer.handshake_s if peer is not None else (None, None)

    async def run(self, http: aiohttp.ClientSession) -> None:
        """Join and set up media; errors end up in ``state`` (``refused`` for a server
        that says it is full), never raised."""
        self.state.started_at = time.monotonic()
        try:
            token = await fetch_token(
                http, self.base_url, self.spec.room, self.spec.identity, self.spec.role, self.secret
            )
            for peer in self.peers:
                await peer.open()
            await self.signal.connect(http)
            joined = await self.signal.request("join", token=token, name=self.spec.identity)
            self.state.joined_at = time.monotonic()
            if self.subscriber is not None:
                self._answering = asyncio.ensure_future(self._answer_offers())
                if self.spec.max_layer:
                    await self.signal.request("preferences", max_layer=self.spec.max_layer)
                await self._subscribe(joined.get("tracks", []))
            if self.publisher is not None:
                await self.publisher.publish(self.signal)
        except SignalError as exc:
            self._refused_or_failed(exc)
        except (PeerError, aiohttp.ClientError, ValueError, OSError, TimeoutError) as exc:
            self.state.error = f"{type(exc).__name__}: {exc}"

    def _refused_or_failed(self, exc: SignalError) -> None:
        """A full server (``server_busy``, at join or when placing a connection) or room
        refuses the site: counted apart from failures."""
        if exc.code in REFUSALS:
            self.state.refused = True
        self.state.error = str(exc)

    def _on_event(self, event: str, data: dict[str, Any]) -> None:
        self.state.events += 1
        if event == "offer":
            self._offers.put_nowait(data)
        elif event == "track_published" and self.subscriber is not None:
            track = data.get("track") or {}
            if track.get("owner") in self.spec.watch:
                asyncio.ensure_future(self._subscribe([track]))
        elif event == "error" and data.get("code") in REFUSALS:
            self.state.refused = True
            self.state.error = f"{data.get('code')}: {data.get('message', '')}"

    async def _subscribe(self, tracks: list[dict[str, Any]]) -> None:
        ids = [
            t["id"]
            for t in tracks
            if t.get("owner") in self.spec.watch and t.get("id") not in self.wanted
        ]
        if not ids:
            return
        self.wanted.update(ids)
        asked = time.monotonic()
        try:
            await self.signal.request("subscribe", tracks=ids)
        except SignalError as exc:
            self._refused_or_failed(exc)
            if self.state.refused and self.state.refused_after is None:
                self.state.refused_after = time.monotonic() - asked

    async def _answer_offers(self) -> None:
        subscriber = self.subscriber
        assert subscriber is not None
        while True:
            data = await self._offers.get()
            offer = str(data.get("sdp", ""))
            subscriber.learn(offer)
            answer = answer_for(
                offer,
                subscriber.ufrag,
                subscriber.pwd,
                subscriber.local_fingerprint,
                subscriber.twcc,
            )
            try:
                await self.signal.request("answer", sdp=answer, version=data.get("version", 0))
            except SignalError as exc:
                self.state.error = str(exc)
                continue
            if subscriber.answer is None:  # the first offer; later ones change tracks only
                if self.spec.weak or self.spec.weak_up:
                    await self._via_link(subscriber, parse_answer(offer).candidate)
                subscriber.start(offer)

    async def _via_link(self, peer: _Peer, server: tuple[str, int]) -> None:
        """Put an emulated weak link (bench/linkemu.py) between this site and the SFU."""
        down = LinkParams(**self.spec.weak) if self.spec.weak else LinkParams()
        up = LinkParams(**self.spec.weak_up) if self.spec.weak_up else LinkParams()
        self.link = LinkEmulator(server, down=down, up=up)
        await self.link.start()
        peer.via = ("127.0.0.1", self.link.port)

    def timer(self, now: float) -> None:
        for peer in self.peers:
            peer.timer(now)

    async def close(self, http: aiohttp.ClientSession, leave: bool = True) -> None:
        if self._answering is not None:
            self._answering.cancel()
        if leave and self.signal.ws is not None and not self.signal.ws.closed:
            try:
                await self.signal.request("leave", timeout=3)
            except SignalError:
                pass
        for peer in self.peers:
            peer.close()
        await self.signal.close()
        if self.link is not None:
            self.link.close()


__all__ = [
    "AUDIO_PT",
    "LAYERS",
    "VIDEO_PT",
    "LayeredPublisher",
    "Site",
    "SiteSpec",
    "Subscriber",
    "WsSignal",
    "answer_for",
    "synthetic_clip",
]
