"""Lightweight but real WebRTC peers for load tests: many of them share one event loop.

* :class:`LoadViewer`: a WHEP viewer. It offers recvonly VP8 (+RTX) and Opus with BUNDLE
  and rtcp-mux, runs ICE as the controlling agent (authenticated binding requests with
  USE-CANDIDATE toward the ICE-lite server), the DTLS client handshake with its own
  certificate (checked against the answer's fingerprint by the server, and the server's
  against the answer by us), derives the SRTP keys and then only counts what arrives,
  decrypting one packet in :data:`SAMPLE_EVERY` to prove the stream is real. It never
  decodes, so hundreds fit on one core.
* :class:`SyntheticPublisher`: a WHIP publisher with the same ICE/DTLS dance that sends
  real VP8 (a clip encoded once at start with aiortc's encoder, packetised by it) and
  real Opus at a chosen packet rate, with the header extensions the answer negotiated,
  a keyframe every ``keyframe_interval`` seconds and at once after a PLI/FIR, RTX answers
  to NACKs and sender reports every second.

``python -m bench.loadclient --url URL --room R --viewers N --rate PPS`` runs one
publisher and N viewers and prints one JSON status line per second on stdout until its
standard input closes (that is how :mod:`bench.fanout` drives it) or ``--max-seconds``.
Traffic goes only to the address in the server's answer (127.0.0.1 in the benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import random
import re
import resource
import secrets
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc.codecs import get_encoder
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from sfu import ice, sdp
from sfu.dtls import DtlsError, DtlsSession, is_dtls, local_fingerprint
from sfu.ice import is_stun
from sfu.rtcp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpError,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    nack_seqs,
    ntp_now,
    parse_compound,
    sender_report,
    unpack_remb_fci,
)
from sfu.rtp import (
    U16,
    RtpError,
    RtpPacket,
    is_rtcp,
    pack_extensions,
    parse_rtp,
    patch,
    read_map,
    template,
)
from sfu.sdp import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_MID
from sfu.srtp import SrtpContext, SrtpError

VIDEO_PT = 96
H264_FMTP = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
RTX_PT = 97
AUDIO_PT = 111
# One id per URI across the bundle, as browsers do.
EXT_IDS = {URI_MID: 1, URI_ABS_SEND_TIME: 2, URI_AUDIO_LEVEL: 3}
NO_EXTENSIONS = read_map({})  # a viewer checks the fixed header of its samples only
SAMPLE_EVERY = 256  # decrypt one received RTP packet in this many (power of two)
CONSENT_INTERVAL = 5.0
CHECK_RETRY = 0.5


@dataclass
class Answer:
    """The few things a client needs from the server's answer, parsed by sfu.sdp."""

    ufrag: str
    pwd: str
    fingerprints: list[tuple[str, str]]
    setup: str
    candidate: tuple[str, int]
    sections: list[sdp.MediaSection]

    def section(self, kind: str) -> sdp.MediaSection | None:
        return next((s for s in self.sections if s.kind == kind and s.port != 0), None)


_CANDIDATE = re.compile(
    r"^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host", re.MULTILINE | re.IGNORECASE
)


def parse_answer(text: str) -> Answer:
    parsed = sdp.parse(text)
    candidate = _CANDIDATE.search(text)
    if candidate is None:
        raise ValueError("answer without a UDP host candidate")
    ufrag, pwd = parsed.ice_credentials()
    return Answer(
        ufrag=ufrag,
        pwd=pwd,
        fingerprints=parsed.dtls_fingerprints(),
        setup=parsed.dtls_setup(),
        candidate=(candidate.group(1), int(candidate.group(2))),
        sections=parsed.media,
    )


def _media_lines(
    kind: str,
    mid: str,
    port: int,
    direction: str,
    ufrag: str,
    pwd: str,
    fingerprint: str,
    ssrcs: tuple[int, int | None] | None = None,
    cname: str = "",
    simulcast: list[tuple[int, int]] | None = None,
    video_codec: str = "vp8",
) -> list[str]:
    if kind == "video":
        lines = [f"m=video {port} UDP/TLS/RTP/SAVPF {VIDEO_PT} {RTX_PT}"]
    else:
        lines = [f"m=audio {port} UDP/TLS/RTP/SAVPF {AUDIO_PT}"]
    lines += [
        "c=IN IP4 127.0.0.1",
        "a=rtcp:9 IN IP4 0.0.0.0",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:active",
        f"a=mid:{mid}",
        f"a=extmap:{EXT_IDS[URI_MID]} {URI_MID}",
    ]
    if kind == "video":
        lines.append(f"a=extmap:{EXT_IDS[URI_ABS_SEND_TIME]} {URI_ABS_SEND_TIME}")
    else:
        lines.append(f"a=extmap:{EXT_IDS[URI_AUDIO_LEVEL]} {URI_AUDIO_LEVEL}")
    lines += [f"a={direction}", "a=rtcp-mux", "a=rtcp-rsize"]
    if kind == "video":
        if video_codec == "h264":
            lines += [f"a=rtpmap:{VIDEO_PT} H264/90000", f"a=fmtp:{VIDEO_PT} {H264_FMTP}"]
        else:
            lines.append(f"a=rtpmap:{VIDEO_PT} VP8/90000")
        lines += [
            f"a=rtcp-fb:{VIDEO_PT} goog-remb",
            f"a=rtcp-fb:{VIDEO_PT} ccm fir",
            f"a=rtcp-fb:{VIDEO_PT} nack",
            f"a=rtcp-fb:{VIDEO_PT} nack pli",
            f"a=rtpmap:{RTX_PT} rtx/90000",
            f"a=fmtp:{RTX_PT} apt={VIDEO_PT}",
        ]
    else:
        lines += [
            f"a=rtpmap:{AUDIO_PT} opus/48000/2",
            f"a=fmtp:{AUDIO_PT} minptime=10;useinbandfec=1",
        ]
    if simulcast and kind == "video":
        stream = f"load-{cname}"
        lines.append(f"a=msid:{stream} {kind}-{cname}")
        lines.append("a=ssrc-group:SIM " + " ".join(str(m) for m, _ in simulcast))
        for pair in simulcast:
            lines.append(f"a=ssrc-group:FID {pair[0]} {pair[1]}")
        for pair in simulcast:
            for one in pair:
                lines.append(f"a=ssrc:{one} cname:{cname}")
                lines.append(f"a=ssrc:{one} msid:{stream} {kind}-{cname}")
    elif ssrcs is not None:
        media, rtx = ssrcs
        stream = f"load-{cname}"
        lines.append(f"a=msid:{stream} {kind}-{cname}")
        if rtx is not None:
            lines.append(f"a=ssrc-group:FID {media} {rtx}")
        for ssrc in (media, rtx):
            if ssrc is not None:
                lines.append(f"a=ssrc:{ssrc} cname:{cname}")
                lines.append(f"a=ssrc:{ssrc} msid:{stream} {kind}-{cname}")
    lines += [f"a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host", "a=end-of-candidates"]
    return lines


def build_offer(
    port: int,
    ufrag: str,
    pwd: str,
    fingerprint: str,
    direction: str,
    ssrcs: dict[str, tuple[int, int | None]] | None = None,
    cname: str = "",
    simulcast: list[tuple[int, int]] | None = None,
    video_codec: str = "vp8",
) -> str:
    """A BUNDLE offer of one video and one audio section; ``simulcast`` lists (media,
    RTX) SSRC pairs, lowest encoding first, announced as ``a=ssrc-group:SIM``;
    ``video_codec``: vp8 or h264 (packetization-mode 1, constrained baseline)."""
    lines = [
        "v=0",
        f"o=- {random.getrandbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS *",
    ]
    for mid, kind in (("0", "video"), ("1", "audio")):
        section_ssrcs = ssrcs.get(kind) if ssrcs else None
        lines += _media_lines(
            kind,
            mid,
            port,
            direction,
            ufrag,
            pwd,
            fingerprint,
            section_ssrcs,
            cname,
            simulcast,
            video_codec,
        )
    return "\r\n".join(lines) + "\r\n"


class PeerError(Exception):
    pass


class _Peer(asyncio.DatagramProtocol):
    """ICE (controlling, full agent toward an ICE-lite server) + DTLS client + SRTP keys.

    The protocol work is sfu's own sans-I/O code (sfu.ice, DtlsSession in the client
    role, SrtpContext); this class moves their datagrams and keeps the counters."""

    kind = "peer"

    def __init__(
        self, base_url: str, room: str, token: str, certificate: RTCCertificate | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.room = room
        self.token = token
        self.certificate = certificate or RTCCertificate.generateCertificate()
        self.local_fingerprint = local_fingerprint(self.certificate)[1]
        self.ufrag, self.pwd = ice.new_credentials()
        self.tie_breaker = random.getrandbits(64)
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.answer: Answer | None = None
        self.remote: tuple[str, int] | None = None
        self.via: tuple[str, int] | None = None  # a relay (bench.linkemu) to send through
        self.location: str | None = None
        self.dtls: DtlsSession | None = None
        self.srtp: SrtpContext | None = None
        self.profile = ""
        self.ice_ok = False
        self.connected = False
        self.failed: str | None = None
        self.closed = False
        self.pending_checks: dict[bytes, float] = {}
        self.last_check = 0.0
        self.last_consent_ok = 0.0
        self.started_at = 0.0  # the answer (or /ws offer) taken: ICE starts
        self.ice_at = 0.0  # the first checked STUN answer: DTLS starts
        self.connected_at = 0.0  # DTLS done, SRTP keys in hand
        self.stun_sent = 0
        self.stun_ok = 0
        self.dtls_in = 0

    # -- setup --------------------------------------------------------------------------
    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        sock = self.transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError:
            pass
        self.port = self.transport.get_extra_info("sockname")[1]

    def offer(self) -> str:
        raise NotImplementedError

    def endpoint(self) -> str:
        raise NotImplementedError

    async def negotiate(self, http: aiohttp.ClientSession) -> None:
        """POST the offer, read the answer, start ICE."""
        self.started_at = time.monotonic()
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"}
        async with http.post(
            self.base_url + self.endpoint(), data=self.offer(), headers=headers
        ) as response:
            body = await response.text()
            if response.status != 201:
                raise PeerError(f"{self.kind}: HTTP {response.status}: {body[:200]}")
            self.location = response.headers.get("Location")
        self.start(body)

    def start(self, description: str) -> None:
        """Take the server's answer (or, for a /ws subscriber, its offer: we answer
        ``a=setup:active`` to its ``actpass``) and start ICE toward its candidate."""
        if not self.started_at:
            self.started_at = time.monotonic()
        self.answer = parse_answer(description)
        if self.answer.setup not in ("passive", "actpass", ""):
            raise PeerError(
                f"{self.kind}: the server has a=setup:{self.answer.setup}, we are active"
            )
        self.remote = self.via or self.answer.candidate
        self.on_answer(self.answer)
        self.send_check(time.monotonic())

    def on_answer(self, answer: Answer) -> None:
        pass

    async def delete(self, http: aiohttp.ClientSession) -> None:
        if self.location:
            try:
                async with http.delete(
                    self.base_url + self.location, headers={"Authorization": f"Bearer {self.token}"}
                ):
                    pass
            except aiohttp.ClientError:
                pass
            self.location = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- ICE ----------------------------------------------------------------------------
    def send_check(self, now: float) -> None:
        assert self.answer is not None and self.transport is not None
        username = f"{self.answer.ufrag}:{self.ufrag}"
        message = ice.binding_request(
            username, self.answer.pwd, self.tie_breaker, use_candidate=True
        )
        self.pending_checks[message.transaction_id] = now
        if len(self.pending_checks) > 8:
            self.pending_checks.pop(next(iter(self.pending_checks)))
        self.last_check = now
        self.stun_sent += 1
        self.transport.sendto(bytes(message), self.remote)

    def _on_stun(self, data: bytes) -> None:
        assert self.answer is not None
        message = ice.check_binding_response(data, self.pending_checks, self.answer.pwd)
        if message is None:
            return
        del self.pending_checks[message.transaction_id]
        self.stun_ok += 1
        self.last_consent_ok = time.monotonic()
        if not self.ice_ok:
            self.ice_ok = True
            self.ice_at = self.last_consent_ok
            self._start_dtls()

    # -- DTLS ---------------------------------------------------------------------------
    def _start_dtls(self) -> None:
        assert self.answer is not None
        # The session checks the server's certificate against the answer's fingerprints.
        self.dtls = DtlsSession(
            self.certificate, self.answer.fingerprints, f"{self.kind} {self.ufrag}", role="client"
        )
        self._dtls_call(self.dtls.start)

    def _dtls_call(self, call: Callable[..., list[bytes]], *args: bytes) -> None:
        """One DtlsSession step: send what it answers, notice the handshake's end or failure."""
        assert self.dtls is not None and self.transport is not None
        try:
            out = call(*args)
        except DtlsError as exc:
            if self.dtls.closed:  # not a stray bad record: the handshake failed
                self.failed = str(exc)
            return
        for datagram in out:
            self.transport.sendto(datagram, self.remote)
        if self.dtls.closed:
            self.failed = "DTLS closed by the server"
        elif self.dtls.connected and not self.connected:
            self._on_dtls_connected()

    def _on_dtls(self, data: bytes) -> None:
        self.dtls_in += 1
        if self.dtls is not None and self.failed is None:
            self._dtls_call(self.dtls.receive, data)

    def _on_dtls_connected(self) -> None:
        assert self.dtls is not None and self.dtls.keys is not None
        keys = self.dtls.keys
        self.srtp = SrtpContext(keys.profile, keys.tx_key, keys.rx_key)
        self.profile = keys.name
        self.connected = True
        self.connected_at = time.monotonic()
        self.on_connected()

    def on_connected(self) -> None:
        pass

    @property
    def handshake_s(self) -> tuple[float | None, float | None]:
        """Seconds of ICE (answer to the first checked STUN answer) and of DTLS (from there
        to the keys): what a full server makes a new site wait for its handshakes."""
        ice_s = self.ice_at - self.started_at if self.ice_at else None
        dtls_s = self.connected_at - self.ice_at if self.connected_at and self.ice_at else None
        return ice_s, dtls_s

    # -- timers -------------------------------------------------------------------------
    def timer(self, now: float) -> None:
        """Check retransmission until ICE answers, DTLS retransmission, consent."""
        if self.closed or self.answer is None or self.failed is not None:
            return
        if not self.ice_ok:
            if now - self.last_check >= CHECK_RETRY:
                self.send_check(now)
            return
        if now - self.last_check >= CONSENT_INTERVAL:
            self.send_check(now)
        if not self.connected and self.dtls is not None:
            timeout = self.dtls.next_timeout()
            if timeout is not None and timeout <= 0:
                self._dtls_call(self.dtls.handle_timeout)

    # -- datagrams ----------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: Any) -> None:
        if is_stun(data):
            self._on_stun(data)
        elif is_dtls(data):
            self._on_dtls(data)
        elif self.connected and data and 127 < data[0] < 192:
            self.on_srtp(data)

    def on_srtp(self, data: bytes) -> None:
        pass

    def error_received(self, exc: Exception) -> None:
        pass


class LoadViewer(_Peer):
    """A WHEP viewer that counts SRTP packets and decrypts a sample of them."""

    kind = "viewer"

    def __init__(
        self,
        base_url: str,
        room: str,
        token: str,
        participant: str | None = None,
        certificate: RTCCertificate | None = None,
    ) -> None:
        super().__init__(base_url, room, token, certificate)
        self.participant = participant
        self.rtp = 0
        self.rtp_bytes = 0
        self.rtcp = 0
        self.verified = 0
        self.verify_failed = 0
        self.first_rtp_at = 0.0
        self.expected_ssrcs: set[int] = set()

    def endpoint(self) -> str:
        suffix = f"?participant={self.participant}" if self.participant else ""
        return f"/whep/{self.room}{suffix}"

    def offer(self) -> str:
        return build_offer(self.port, self.ufrag, self.pwd, self.local_fingerprint, "recvonly")

    def on_answer(self, answer: Answer) -> None:
        for section in answer.sections:
            self.expected_ssrcs.update(section.ssrcs)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        first = data[0]
        if 127 < first < 192:  # the hot path: count, and verify one in SAMPLE_EVERY
            if 191 < data[1] < 224:
                self.rtcp += 1
                return
            self.rtp += 1
            self.rtp_bytes += len(data)
            if not self.rtp & (SAMPLE_EVERY - 1) or self.rtp == 1:
                self._verify(data)
            return
        super().datagram_received(data, addr)

    def _verify(self, data: bytes) -> None:
        if self.srtp is None:
            self.verify_failed += 1
            return
        if self.rtp == 1:
            self.first_rtp_at = time.monotonic()
        try:
            packet = parse_rtp(self.srtp.unprotect(data), NO_EXTENSIONS)
        except (SrtpError, RtpError):
            self.verify_failed += 1
            return
        if packet.pt in (VIDEO_PT, RTX_PT, AUDIO_PT) and (
            not self.expected_ssrcs or packet.ssrc in self.expected_ssrcs
        ):
            self.verified += 1
        else:
            self.verify_failed += 1


# -- the publisher's media ---------------------------------------------------------------


@dataclass
class Clip:
    """Packetised VP8 or H.264 frames (frame 0 a keyframe) and Opus packets, encoded once."""

    video: list[list[bytes]]
    audio: list[bytes]
    width: int
    height: int
    video_bitrate: int
    codec: str = "vp8"

    @property
    def packets_per_frame(self) -> float:
        return sum(len(f) for f in self.video) / len(self.video)


def make_clip(
    rate: float,
    seconds: float = 4.0,
    fps: int = 30,
    width: int = 640,
    height: int = 360,
    bitrate: int | None = None,
    codec: str = "vp8",
) -> Clip:
    """Encode ``seconds`` of a moving test picture with aiortc's VP8 (or H.264: libx264
    through PyAV) encoder at the bitrate that fills ``rate`` packets/s at ``fps`` (so
    frames are paced near real time), and one second of a tone with its Opus encoder."""
    if bitrate is None:
        bitrate = int(min(max(rate / fps * 1150 * 8 * fps, 300_000), 20_000_000))
    encoder: Any
    if codec == "h264":
        parameters: dict[str, int | str | None] = {}
        for item in H264_FMTP.split(";"):
            key, value = item.split("=")
            parameters[key] = value
        encoder = get_encoder(
            RTCRtpCodecParameters(
                mimeType="video/H264", clockRate=90000, payloadType=VIDEO_PT, parameters=parameters
            )
        )
        encoder.target_bitrate = bitrate  # aiortc keeps it within its own bounds
    else:
        encoder = get_encoder(
            RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=VIDEO_PT)
        )
        # aiortc caps target_bitrate at 1.5 Mbps; a load test wants more packets per frame.
        if hasattr(encoder, "_Vp8Encoder__target_bitrate"):
            encoder._Vp8Encoder__target_bitrate = bitrate
        else:  # pragma: no cover - other aiortc versions
            encoder.target_bitrate = bitrate
    rng = np.random.default_rng(7)
    ramp = (np.arange(width) * 255 // width).astype(np.uint8)
    base = np.repeat(np.repeat(ramp[None, :, None], height, axis=0), 3, axis=2)
    frames: list[list[bytes]] = []
    time_base = fractions.Fraction(1, 90000)
    for index in range(max(1, int(seconds * fps))):
        image = base.copy()
        x = (index * 8 * width // 640) % width
        image[:, x : x + max(4, width // 16), :] = (40, 200, 255)
        h, w = height // 3, width // 3
        image[h : 2 * h, w : 2 * w, :] = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = index * (90000 // fps)
        frame.time_base = time_base
        payloads, _ = encoder.encode(frame, force_keyframe=index == 0)
        if payloads:
            frames.append(payloads)
    audio_codec = RTCRtpCodecParameters(
        mimeType="audio/opus", clockRate=48000, channels=2, payloadType=AUDIO_PT
    )
    audio_encoder = get_encoder(audio_codec)
    audio: list[bytes] = []
    samples = 960
    for index in range(50):
        t = (np.arange(samples) + index * samples) / 48000
        data = (np.sin(2 * np.pi * 440 * t) * 6000).astype(np.int16).reshape(1, -1)
        audio_frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        audio_frame.sample_rate = 48000
        audio_frame.pts = index * samples
        audio_frame.time_base = fractions.Fraction(1, 48000)
        payloads, _ = audio_encoder.encode(audio_frame)
        audio.extend(payloads)
    return Clip(frames, audio, width, height, bitrate, codec)


STAMP_MAGIC = b"TBst"
STAMP = struct.Struct("!4sd")  # magic, the sender's time.time(): the last 12 bytes of a payload


def stamp(payload: bytearray, now: float) -> None:
    """Write the send time over the payload's last 12 bytes (a synthetic payload keeps
    room for it), so a viewer on this machine reads the one-way delay."""
    if len(payload) >= STAMP.size + 4:
        STAMP.pack_into(payload, len(payload) - STAMP.size, STAMP_MAGIC, now)


def read_stamp(payload: bytes | memoryview) -> float | None:
    """The send time :func:`stamp` wrote, or None."""
    if len(payload) < STAMP.size:
        return None
    magic, sent = STAMP.unpack_from(payload, len(payload) - STAMP.size)
    return float(sent) if magic == STAMP_MAGIC else None


class _Layer:
    """One video encoding of a publisher: its clip and its RTP state."""

    def __init__(self, clip: Clip) -> None:
        self.clip = clip
        self.ssrc = random.randint(1, 0xFFFFFFFE)
        self.rtx_ssrc = random.randint(1, 0xFFFFFFFE)
        self.seq = random.randint(0, 0x7FFF)
        self.rtx_seq = random.randint(0, 0x7FFF)
        self.picture_id = random.randint(0, 0x7FFF)
        self.frame_index = 0
        self.packet_index = 0  # within the frame, for per-packet pacing
        self.ts = 0
        self.keyframe_due = True
        self.last_keyframe = 0.0
        self.sent = 0
        self.bytes = 0
        self.keyframes = 0
        self.plis = 0
        self.history: list[tuple[int, int, bool, bytes] | None] = [None] * 1024


class SyntheticPublisher(_Peer):
    """A WHIP publisher sending pre-encoded VP8 at ``rate`` packets/s and Opus at 50/s.

    Its video state lives in ``layers`` (one :class:`_Layer` here, several in
    :class:`SimulcastPublisher`), so RTCP feedback, retransmission and sender reports
    are the same code for both; only the pacing differs. With ``stamp`` the send time
    is written into every payload's last 12 bytes (:func:`stamp`)."""

    kind = "publisher"

    def __init__(
        self,
        base_url: str,
        room: str,
        token: str,
        clip: Clip,
        rate: float = 1000.0,
        keyframe_interval: float = 4.0,
        audio: bool = True,
        certificate: RTCCertificate | None = None,
        stamp: bool = False,
    ) -> None:
        super().__init__(base_url, room, token, certificate)
        self.clip = clip
        self.rate = rate
        self.keyframe_interval = keyframe_interval
        self.audio = audio
        self.stamp = stamp
        self.layers = [_Layer(clip)]
        self.audio_ssrc = random.randint(1, 0xFFFFFFFE)
        self.cname = secrets.token_hex(6)
        self.audio_seq = random.randint(0, 0x7FFF)
        self.video_ts0 = random.randint(0, 0x7FFFFFFF)
        self.audio_ts = random.randint(0, 0x7FFFFFFF)
        self.video_sent = 0
        self.audio_sent = 0
        self.audio_bytes = 0
        self.keyframes_sent = 0
        self.plis = 0
        self.firs = 0
        self.nacks = 0
        self.rtx_sent = 0
        self.remb: int | None = None  # the bitrate the server last said we may send
        self.video_ext = b""
        self.audio_ext = b""
        self.send_start = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def video_ssrc(self) -> int:
        return self.layers[-1].ssrc

    @property
    def rtx_ssrc(self) -> int:
        return self.layers[-1].rtx_ssrc

    def endpoint(self) -> str:
        return f"/whip/{self.room}"

    def offer(self) -> str:
        ssrcs: dict[str, tuple[int, int | None]] = {}
        simulcast = None
        if len(self.layers) == 1:
            ssrcs["video"] = (self.video_ssrc, self.rtx_ssrc)
        else:
            simulcast = [(layer.ssrc, layer.rtx_ssrc) for layer in self.layers]
        if self.audio:
            ssrcs["audio"] = (self.audio_ssrc, None)
        text = build_offer(
            self.port,
            self.ufrag,
            self.pwd,
            self.local_fingerprint,
            "sendonly",
            ssrcs,
            self.cname,
            simulcast=simulcast,
            video_codec=self.layers[-1].clip.codec,
        )
        if not self.audio:  # keep only the video section
            text = re.sub(r"m=audio.*", "", text, flags=re.S).replace(
                "a=group:BUNDLE 0 1", "a=group:BUNDLE 0"
            )
        return text

    def on_answer(self, answer: Answer) -> None:
        video = answer.section("video")
        if video is None:
            raise PeerError("the server did not accept the video section")
        self.video_ext = self._extensions(video, [])
        audio = answer.section("audio")
        if audio is not None and URI_AUDIO_LEVEL in audio.extensions:
            self.audio_ext = self._extensions(audio, [(audio.extensions[URI_AUDIO_LEVEL], b"\x1e")])
        elif audio is not None:
            self.audio_ext = self._extensions(audio, [])

    @staticmethod
    def _extensions(section: sdp.MediaSection, extra: list[tuple[int, bytes]]) -> bytes:
        items = []
        if URI_MID in section.extensions:
            items.append((section.extensions[URI_MID], (section.mid or "").encode()))
        items += extra
        return pack_extensions(items)[0] if items else b""

    def on_connected(self) -> None:
        self._task = asyncio.ensure_future(self._send_loop())

    # -- sending ------------------------------------------------------------------------
    @staticmethod
    def _packet(
        pt: int, marker: bool, seq: int, ts: int, ssrc: int, ext: bytes, payload: bytes
    ) -> bytearray:
        """Written as the SFU writes its forwarded copies: a template, then the fields."""
        buf = template(RtpPacket(ssrc, seq, ts, pt, marker, payload), ext)
        patch(buf, (0x80 if marker else 0) | pt, seq, ts, ssrc)
        return buf

    def _send(self, plain: bytearray) -> int:
        assert self.srtp is not None and self.transport is not None
        data = self.srtp.protect(plain)
        self.transport.sendto(data, self.remote)
        return len(data)

    def _start_frame(self, layer: _Layer, now: float) -> None:
        """A frame starts: the keyframe when one is due (asked for, periodic, or the
        clip's end: every loop starts with its keyframe), else the clip's next frame."""
        if (
            layer.keyframe_due
            or now - layer.last_keyframe >= self.keyframe_interval
            or layer.frame_index >= len(layer.clip.video)
        ):
            layer.frame_index = 0
        if layer.frame_index == 0:
            layer.keyframe_due = False
            layer.last_keyframe = now
            layer.keyframes += 1
            self.keyframes_sent += 1
        layer.ts = (self.video_ts0 + int((now - self.send_start) * 90000)) & 0xFFFFFFFF
        layer.picture_id = (layer.picture_id + 1) & 0x7FFF

    def _send_video_packet(self, layer: _Layer, original: bytes, marker: bool, now: float) -> None:
        payload = bytearray(original)
        if len(payload) > 3 and payload[0] & 0x80 and payload[1] & 0x80 and payload[2] & 0x80:
            payload[2] = 0x80 | (layer.picture_id >> 8)
            payload[3] = layer.picture_id & 0xFF
        if self.stamp:
            stamp(payload, time.time())
        layer.seq = (layer.seq + 1) & 0xFFFF
        data = bytes(payload)
        layer.history[layer.seq & 1023] = (layer.seq, layer.ts, marker, data)
        plain = self._packet(
            VIDEO_PT, marker, layer.seq, layer.ts, layer.ssrc, self.video_ext, data
        )
        layer.bytes += self._send(plain)
        layer.sent += 1
        self.video_sent += 1

    def _send_video(self, now: float) -> None:
        """One packet of the single encoding (paced per packet at ``rate``)."""
        layer = self.layers[0]
        if layer.packet_index == 0:
            self._start_frame(layer, now)
        frame = layer.clip.video[layer.frame_index]
        original = frame[layer.packet_index]
        layer.packet_index += 1
        marker = layer.packet_index == len(frame)
        if marker:
            layer.packet_index = 0
            layer.frame_index += 1
        self._send_video_packet(layer, original, marker, now)

    def _send_audio(self) -> None:
        payload = self.clip.audio[self.audio_sent % len(self.clip.audio)]
        if self.stamp:
            buf = bytearray(payload)
            stamp(buf, time.time())
            payload = bytes(buf)
        self.audio_seq = (self.audio_seq + 1) & 0xFFFF
        self.audio_ts = (self.audio_ts + 960) & 0xFFFFFFFF
        plain = self._packet(
            AUDIO_PT,
            self.audio_sent == 0,
            self.audio_seq,
            self.audio_ts,
            self.audio_ssrc,
            self.audio_ext,
            payload,
        )
        self.audio_bytes += self._send(plain)
        self.audio_sent += 1

    def _send_reports(self, now: float) -> None:
        ntp = ntp_now()
        video_ts = (self.video_ts0 + int((now - self.send_start) * 90000)) & 0xFFFFFFFF
        compound = b"".join(
            sender_report(layer.ssrc, ntp, video_ts, layer.sent, layer.bytes)
            for layer in self.layers
        )
        if self.audio:
            compound += sender_report(
                self.audio_ssrc, ntp, self.audio_ts, self.audio_sent, self.audio_bytes
            )
        assert self.srtp is not None and self.transport is not None
        self.transport.sendto(self.srtp.protect_rtcp(compound), self.remote)

    def _send_media(self, now: float, elapsed: float) -> None:
        """Video due by now: ``rate`` packets/s."""
        due = min(int(elapsed * self.rate) - self.video_sent, 200)
        for _ in range(due):
            self._send_video(now)

    async def _send_loop(self) -> None:
        """Video as :meth:`_send_media` paces it, audio at 50 packets/s, in 5 ms steps."""
        self.send_start = time.monotonic()
        next_report = self.send_start + 1.0
        while not self.closed and self.failed is None:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            elapsed = now - self.send_start
            self._send_media(now, elapsed)
            if self.audio:
                for _ in range(min(int(elapsed * 50) - self.audio_sent + 1, 10)):
                    self._send_audio()
            if now >= next_report:
                next_report = now + 1.0
                self._send_reports(now)

    def _layer(self, ssrc: int) -> _Layer | None:
        return next((layer for layer in self.layers if layer.ssrc == ssrc), None)

    def on_srtp(self, data: bytes) -> None:
        if not is_rtcp(data) or self.srtp is None:
            return  # the server sends us RTCP only
        try:
            packets = parse_compound(self.srtp.unprotect_rtcp(data))
        except (SrtpError, RtcpError):
            return
        for packet in packets:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                try:
                    self.remb = unpack_remb_fci(packet.fci)[0]
                except ValueError:
                    pass
            elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (
                RTCP_PSFB_PLI,
                RTCP_PSFB_FIR,
            ):
                # RFC 5104 4.3.1: a FIR names the stream in its FCI, media SSRC is 0.
                named = packet.media_ssrc if packet.fmt == RTCP_PSFB_PLI else None
                if named is None and len(packet.fci) >= 4:
                    named = int.from_bytes(packet.fci[:4], "big")
                layer = self._layer(named or 0)
                if layer is not None:
                    layer.plis += 1
                    layer.keyframe_due = True
                    if packet.fmt == RTCP_PSFB_PLI:
                        self.plis += 1
                    else:
                        self.firs += 1
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                layer = self._layer(packet.media_ssrc)
                if layer is not None:
                    self.nacks += 1
                    self._resend(layer, nack_seqs(packet))

    def _resend(self, layer: _Layer, seqs: list[int]) -> None:
        for seq in seqs:
            entry = layer.history[seq & 1023]
            if entry is None or entry[0] != seq:
                continue
            _, ts, marker, payload = entry
            layer.rtx_seq = (layer.rtx_seq + 1) & 0xFFFF
            plain = self._packet(
                RTX_PT,
                marker,
                layer.rtx_seq,
                ts,
                layer.rtx_ssrc,
                self.video_ext,
                U16.pack(seq) + payload,
            )
            self._send(plain)
            self.rtx_sent += 1

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        super().close()


class SimulcastPublisher(SyntheticPublisher):
    """A WHIP publisher sending several encodings of one picture (``clips``, lowest
    first), announced with ``a=ssrc-group:SIM`` as a browser's simulcast is, each a
    whole frame every 1/``fps`` s with its own SSRC, RTX, picture ids and keyframes
    (every ``keyframe_interval`` s and on a PLI or FIR naming it)."""

    def __init__(
        self,
        base_url: str,
        room: str,
        token: str,
        clips: list[Clip],
        fps: int = 15,
        keyframe_interval: float = 4.0,
        audio: bool = True,
        certificate: RTCCertificate | None = None,
        stamp: bool = False,
    ) -> None:
        super().__init__(
            base_url, room, token, clips[-1], 0.0, keyframe_interval, audio, certificate, stamp
        )
        self.fps = fps
        self.layers = [_Layer(clip) for clip in clips]
        self.frames_sent = 0

    def _send_frame(self, layer: _Layer, now: float) -> None:
        self._start_frame(layer, now)
        packets = layer.clip.video[layer.frame_index]
        layer.frame_index += 1
        for index, original in enumerate(packets):
            self._send_video_packet(layer, original, index == len(packets) - 1, now)

    def _send_media(self, now: float, elapsed: float) -> None:
        """Every encoding's frames due by now: ``fps`` frames/s, each sent whole."""
        for _ in range(min(int(elapsed * self.fps) + 1 - self.frames_sent, 5)):
            self.frames_sent += 1
            for layer in self.layers:
                if layer.clip.video:
                    self._send_frame(layer, now)


# -- a load run ---------------------------------------------------------------------------


async def fetch_token(
    http: aiohttp.ClientSession,
    base_url: str,
    room: str,
    identity: str,
    role: str,
    secret: str | None,
) -> str:
    if secret:
        from signaling import tokens

        return tokens.mint(secret, room, identity, role, 3600)
    async with http.post(
        f"{base_url}/dev/token", json={"room": room, "identity": identity, "role": role}
    ) as response:
        if response.status != 200:
            raise PeerError(f"/dev/token: HTTP {response.status}: {await response.text()}")
        token: str = (await response.json())["token"]
        return token


class LoadRun:
    """One publisher per room and N viewers spread over the rooms, on this event loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.publishers: list[SyntheticPublisher] = []
        self.viewers: list[LoadViewer] = []
        self.errors: list[str] = []
        self.started = time.monotonic()
        self.viewers_started = 0

    def _all(self) -> list[_Peer]:
        return [*self.publishers, *self.viewers]

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for peer in self._all():
                peer.timer(now)

    def status(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        viewers = self.viewers
        return {
            "t": time.time(),
            "elapsed": round(time.monotonic() - self.started, 3),
            "viewers": self.args.viewers,
            "viewers_started": self.viewers_started,
            "connected": sum(1 for v in viewers if v.connected),
            "receiving": sum(1 for v in viewers if v.rtp > 0),
            "failed": sum(1 for v in viewers if v.failed) + len(self.errors),
            "rx": sum(v.rtp for v in viewers),
            "rx_bytes": sum(v.rtp_bytes for v in viewers),
            "rx_rtcp": sum(v.rtcp for v in viewers),
            "verified": sum(v.verified for v in viewers),
            "verify_failed": sum(v.verify_failed for v in viewers),
            "publishers_connected": sum(1 for p in self.publishers if p.connected),
            # what the viewers should have received in all: each publisher's packets x its room's viewers
            "expected": sum(
                (p.video_sent + p.audio_sent)
                * sum(1 for v in viewers if v.connected and v.room == p.room)
                for p in self.publishers
            ),
            "sent_video": sum(p.video_sent for p in self.publishers),
            "sent_audio": sum(p.audio_sent for p in self.publishers),
            "keyframes": sum(p.keyframes_sent for p in self.publishers),
            "plis": sum(p.plis + p.firs for p in self.publishers),
            "nacks": sum(p.nacks for p in self.publishers),
            "rtx": sum(p.rtx_sent for p in self.publishers),
            "profile": next((v.profile for v in viewers if v.profile), ""),
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "errors": self.errors[-3:],
        }

    async def _viewer(
        self, http: aiohttp.ClientSession, index: int, room: str, limit: asyncio.Semaphore
    ) -> None:
        async with limit:
            try:
                token = await fetch_token(
                    http, self.args.url, room, f"viewer-{index}", "observer", self.args.secret
                )
                viewer = LoadViewer(self.args.url, room, token, participant="load-lead")
                await viewer.open()
                self.viewers.append(viewer)
                self.viewers_started += 1
                await viewer.negotiate(http)
                deadline = time.monotonic() + 20
                while (
                    not viewer.connected and viewer.failed is None and time.monotonic() < deadline
                ):
                    await asyncio.sleep(0.02)
            except (PeerError, aiohttp.ClientError, ValueError, OSError) as exc:
                self.errors.append(f"viewer {index}: {exc}")

    async def run(self, stop: asyncio.Event) -> None:
        args = self.args
        loop = asyncio.get_running_loop()
        timers = asyncio.ensure_future(self._timers())
        emit_task = asyncio.ensure_future(self._emit(stop))
        clip = await loop.run_in_executor(None, make_clip, args.rate, args.keyframe_interval)
        lower: list[Clip] = []
        if args.simulcast:  # two lower encodings beside it, as a browser's camera sends
            for width, height, bitrate in ((160, 90, 150_000), (320, 180, 400_000)):
                lower.append(
                    await loop.run_in_executor(
                        None, make_clip, 0, args.keyframe_interval, 30, width, height, bitrate
                    )
                )
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:
            try:
                rooms = [
                    args.room if args.rooms == 1 else f"{args.room}-{n}" for n in range(args.rooms)
                ]
                for room in rooms:
                    token = await fetch_token(
                        http, args.url, room, "load-lead", "lead", args.secret
                    )
                    publisher: SyntheticPublisher
                    if lower:
                        publisher = SimulcastPublisher(
                            args.url,
                            room,
                            token,
                            [*lower, clip],
                            30,
                            args.keyframe_interval,
                            audio=not args.no_audio,
                        )
                    else:
                        publisher = SyntheticPublisher(
                            args.url,
                            room,
                            token,
                            clip,
                            args.rate,
                            args.keyframe_interval,
                            audio=not args.no_audio,
                        )
                    await publisher.open()
                    self.publishers.append(publisher)
                    await publisher.negotiate(http)
                for publisher in self.publishers:
                    deadline = time.monotonic() + 20
                    while (
                        not publisher.connected
                        and time.monotonic() < deadline
                        and publisher.failed is None
                    ):
                        await asyncio.sleep(0.02)
                    if not publisher.connected:
                        raise PeerError(
                            f"publisher did not connect: {publisher.failed or 'timeout'}"
                        )
                limit = asyncio.Semaphore(args.concurrency)
                tasks = [
                    asyncio.ensure_future(self._viewer(http, n, rooms[n % len(rooms)], limit))
                    for n in range(args.viewers)
                ]
                await asyncio.gather(*tasks)
                await stop.wait()
            except (PeerError, aiohttp.ClientError, OSError) as exc:
                self.errors.append(str(exc))
                await stop.wait()
            finally:
                emit_task.cancel()
                timers.cancel()
                self._print(self.status() | {"final": True})
                for peer in self._all():
                    peer.close()
                if not args.no_delete:
                    try:
                        await asyncio.wait_for(
                            asyncio.gather(*(p.delete(http) for p in self._all())), 10
                        )
                    except TimeoutError:
                        pass

    async def _emit(self, stop: asyncio.Event) -> None:
        deadline = self.started + self.args.max_seconds
        while not stop.is_set():
            self._print(self.status())
            if time.monotonic() > deadline:
                stop.set()
                return
            await asyncio.sleep(self.args.interval)

    def _print(self, status: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(status) + "\n")
        sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadclient", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--room", default="load")
    parser.add_argument(
        "--rooms", type=int, default=1, help="one publisher per room; viewers spread over them"
    )
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="video packets/s from each publisher"
    )
    parser.add_argument("--keyframe-interval", type=float, default=4.0)
    parser.add_argument("--no-audio", action="store_true")
    parser.add_argument(
        "--simulcast",
        action="store_true",
        help="publish three encodings (the top one at --rate); viewers get the top one",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="WHEP requests in flight")
    parser.add_argument(
        "--secret",
        default=os.environ.get("TELEBRIDGE_BENCH_SECRET"),
        help="mint tokens with this key (default $TELEBRIDGE_BENCH_SECRET) instead of POST /dev/token",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between status lines")
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="stop after this long in any case"
    )
    parser.add_argument(
        "--no-delete", action="store_true", help="do not DELETE the sessions at the end"
    )
    parser.add_argument("--stdin-stop", action="store_true", help="stop when standard input closes")
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if args.stdin_stop:

        def on_stdin() -> None:
            if not os.read(sys.stdin.fileno(), 4096):
                loop.remove_reader(sys.stdin.fileno())
                stop.set()

        loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        import signal

        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
    except (NotImplementedError, RuntimeError):  # pragma: no cover
        pass
    await LoadRun(args).run(stop)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.url.startswith("http://127.0.0.1") and not args.url.startswith("http://localhost"):
        print("warning: the load client is meant for a server on this machine", file=sys.stderr)
    try:
        import uvloop

        uvloop.run(amain(args))
    except ImportError:  # pragma: no cover
        asyncio.run(amain(args))


if __name__ == "__main__":
    main()
