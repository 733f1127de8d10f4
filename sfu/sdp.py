"""SDP offers in, SDP answers out: a small strict parser and an answer writer.

The SFU only ever answers (WHIP/WHEP offers come from clients), so this module parses
what browsers and aiortc send and writes an ICE-lite, BUNDLE, rtcp-mux answer. Anything
malformed raises :class:`SdpError` with a message fit to return to the client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sfu.ice_tcp import TCP_PASSIVE_PRIORITY

MAX_SDP_BYTES = 64 * 1024

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_RRID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_VIDEO_ORIENTATION = "urn:3gpp:video-orientation"

# Extensions a publisher may send us and that we read.
PUBLISH_EXTENSIONS = {
    "audio": (URI_MID, URI_AUDIO_LEVEL, URI_TWCC),
    "video": (URI_MID, URI_RID, URI_RRID, URI_VIDEO_ORIENTATION, URI_TWCC),
}
# Extensions we write toward a viewer when it offers them.
VIEW_EXTENSIONS = {
    "audio": (URI_MID, URI_ABS_SEND_TIME, URI_TWCC, URI_AUDIO_LEVEL),
    "video": (URI_MID, URI_ABS_SEND_TIME, URI_TWCC, URI_VIDEO_ORIENTATION),
}

SUPPORTED_CODECS = {"audio": ("opus",), "video": ("vp8", "h264")}
# RTCP feedback we act on, per kind; other offered feedback is left out of the answer.
SUPPORTED_FEEDBACK = {
    "audio": {("transport-cc", "")},
    "video": {
        ("nack", ""),
        ("nack", "pli"),
        ("ccm", "fir"),
        ("goog-remb", ""),
        ("transport-cc", ""),
    },
}

_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
_DIGITS = re.compile(r"[0-9]{1,20}")
# NUL, a bare CR inside a line and other C0 controls (tab aside) are never valid SDP; a CR
# kept inside a value would also be copied into the answer (fmtp) as a line break.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 8839 5.4: ice-char is ALPHA / DIGIT / "+" / "/"; a ufrag has 4-256, a pwd 22-256.
_ICE_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")
_ICE_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")
# RFC 8122 5: a fingerprint is colon-separated upper-case hex bytes (lower case accepted).
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+")
FINGERPRINT_BYTES = {
    "md2": 16,
    "md5": 16,
    "sha-1": 20,
    "sha-224": 28,
    "sha-256": 32,
    "sha-384": 48,
    "sha-512": 64,
}
SETUP_ROLES = ("actpass", "active", "passive", "holdconn")


class SdpError(ValueError):
    """The offer cannot be parsed or cannot be answered."""


@dataclass(slots=True)
class Codec:
    payload_type: int
    name: str  # lower case, e.g. "vp8"
    clock_rate: int
    channels: int = 1
    fmtp: dict[str, str] = field(default_factory=dict)
    feedback: list[tuple[str, str]] = field(default_factory=list)
    rtx_payload_type: int | None = None

    def fmtp_line(self) -> str:
        return ";".join(f"{k}={v}" if v != "" else k for k, v in self.fmtp.items())

    def rtpmap(self) -> str:
        name = {"vp8": "VP8", "h264": "H264", "opus": "opus"}.get(self.name, self.name)
        suffix = f"/{self.channels}" if self.channels > 1 else ""
        return f"{name}/{self.clock_rate}{suffix}"


@dataclass(slots=True)
class MediaSection:
    kind: str
    port: int
    proto: str
    formats: list[str]
    mid: str | None = None
    direction: str = "sendrecv"
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    rtcp_mux: bool = False
    rtcp_rsize: bool = False
    codecs: list[Codec] = field(default_factory=list)
    extensions: dict[str, int] = field(default_factory=dict)  # uri -> id
    ssrcs: dict[int, dict[str, str]] = field(default_factory=dict)
    ssrc_groups: list[tuple[str, list[int]]] = field(default_factory=list)
    rids: list[tuple[str, str]] = field(default_factory=list)  # (rid, direction)
    simulcast: str | None = None
    msid: str | None = None
    bundle_only: bool = False  # RFC 8843 a=bundle-only: port 0 yet part of the BUNDLE group

    def rtx_ssrc_of(self, media_ssrc: int) -> int | None:
        for semantics, ssrcs in self.ssrc_groups:
            if semantics == "FID" and len(ssrcs) == 2 and ssrcs[0] == media_ssrc:
                return ssrcs[1]
        return None

    def send_rids(self) -> list[str]:
        """The rids of a rid-simulcast sender in ``a=simulcast:send`` order (RFC 8853),
        alternatives and paused ("~") marks dropped; without ``a=simulcast``, the
        ``a=rid ... send`` lines in order. One rid alone is not simulcast."""
        declared = [rid for rid, direction in self.rids if direction == "send"]
        order: list[str] = []
        if self.simulcast:
            words = self.simulcast.split()
            for direction, streams in zip(words[::2], words[1::2], strict=False):
                if direction != "send":
                    continue
                for alternatives in streams.split(";"):
                    rid = alternatives.split(",")[0].lstrip("~")
                    if rid in declared and rid not in order:
                        order.append(rid)
        else:
            order = declared
        return order if len(order) > 1 else []

    def primary_ssrcs(self) -> list[int]:
        """SSRCs that carry media (not the RTX half of an FID group)."""
        rtx = {g[1][1] for g in self.ssrc_groups if g[0] == "FID" and len(g[1]) == 2}
        return [s for s in self.ssrcs if s not in rtx]


@dataclass(slots=True)
class SessionDescription:
    media: list[MediaSection]
    bundle: list[str]
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None

    def ice_credentials(self) -> tuple[str, str]:
        """The offer's ICE ufrag and pwd; BUNDLE means one set for all sections, the
        offerer-tagged section's (RFC 8843 7.1.3)."""
        first = self.tagged()
        ufrag = first.ice_ufrag or self.ice_ufrag
        pwd = first.ice_pwd or self.ice_pwd
        if not ufrag or not pwd:
            raise SdpError("offer has no a=ice-ufrag / a=ice-pwd")
        return ufrag, pwd

    def dtls_fingerprints(self) -> list[tuple[str, str]]:
        first = self.tagged()
        fps = first.fingerprints or self.fingerprints
        if not fps:
            raise SdpError("offer has no a=fingerprint: media must be DTLS-SRTP")
        return fps

    def dtls_setup(self) -> str:
        """The peer's DTLS role. RFC 8842 makes a=setup mandatory; guessing one could
        leave both ends waiting for the other's handshake."""
        first = self.tagged()
        setup = first.setup or self.setup
        if setup is None:
            raise SdpError("offer has no a=setup: the DTLS role (actpass or active) is required")
        return setup

    def tagged(self) -> MediaSection:
        """The offerer-tagged section (RFC 8843 7.3.1): the first BUNDLE mid whose section
        has a port; its transport attributes apply to the whole group. Without a BUNDLE
        group, the one section of a one-section offer. RTCP must be multiplexed."""
        if not self.bundle:
            if len(self.media) == 1 and self.media[0].port != 0:
                section = self.media[0]
            else:
                raise SdpError(
                    "offer must use BUNDLE (a=group:BUNDLE) with at least one media section"
                )
        else:
            by_mid = {m.mid: m for m in self.media if m.mid is not None}
            candidates = [by_mid[mid] for mid in self.bundle if mid in by_mid]
            found = next((m for m in candidates if m.port != 0), None)
            if found is None:
                raise SdpError(
                    "offer must use BUNDLE (a=group:BUNDLE) with at least one media section"
                    " that has a port (a=bundle-only sections cannot carry the transport)"
                )
            section = found
        if not section.rtcp_mux:
            raise SdpError("offer has no a=rtcp-mux: RTP and RTCP must share one port")
        return section

    def bundled(self) -> list[MediaSection]:
        """The sections on the one transport, in m= order: those the BUNDLE group names
        with a port or with a=bundle-only (RFC 8843 7.2: port 0 without it disables the
        section), or the single section of an offer without a BUNDLE group."""
        tagged = self.tagged()
        if not self.bundle:
            return [tagged]
        return [m for m in self.media if m.mid in self.bundle and (m.port != 0 or m.bundle_only)]


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() is true for "²", which int() then refuses."""
    return _DIGITS.fullmatch(text) is not None


def _int(value: str, what: str, low: int = 0, high: int = 2**32 - 1) -> int:
    value = value.strip()
    if not _is_number(value):
        raise SdpError(f"{what} is not a number: {value[:40]!r}")
    number = int(value)
    if not low <= number <= high:
        raise SdpError(f"{what} out of range: {number}")
    return number


def _parse_fmtp(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip()
    return params


def parse(sdp: str) -> SessionDescription:
    """Parse an offer. Raises :class:`SdpError` with a client-facing message."""
    if len(sdp) > MAX_SDP_BYTES:
        raise SdpError(f"SDP larger than {MAX_SDP_BYTES} bytes")
    lines = [line.rstrip("\r") for line in sdp.split("\n")]
    lines = [line for line in lines if line]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with v=0")
    session = SessionDescription(media=[], bundle=[])
    current: MediaSection | None = None
    rtpmaps: dict[int, Codec] = {}
    for number, line in enumerate(lines, start=1):
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {number} is not of the form x=...")
        if _CONTROL.search(line):
            raise SdpError(f"line {number} contains a control character")
        kind, value = line[0], line[2:]
        if kind == "m":
            if current is not None:
                _finish_media(current, rtpmaps)
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"line {number}: m= line needs media, port, proto and formats")
            current = MediaSection(
                kind=parts[0],
                port=_int(parts[1].split("/")[0], "m= port", 0, 65535),
                proto=parts[2],
                formats=parts[3:],
            )
            rtpmaps = {}
            session.media.append(current)
        elif kind == "a":
            name, _, arg = value.partition(":")
            _parse_attribute(session, current, rtpmaps, name, arg, number)
    if current is not None:
        _finish_media(current, rtpmaps)
    if not session.media:
        raise SdpError("SDP has no m= section")
    mids = [m.mid for m in session.media if m.mid is not None]
    if len(mids) != len(set(mids)):
        raise SdpError("a=mid values must be unique")
    return session


def _parse_attribute(
    session: SessionDescription,
    media: MediaSection | None,
    rtpmaps: dict[int, Codec],
    name: str,
    arg: str,
    number: int,
) -> None:
    if name == "group":
        parts = arg.split()
        if parts and parts[0] == "BUNDLE":
            session.bundle = parts[1:]
        return
    target_ice = media if media is not None else session
    if name == "ice-ufrag":
        ufrag = arg.strip()
        if not _ICE_UFRAG.fullmatch(ufrag):
            raise SdpError(
                f"line {number}: a=ice-ufrag must be 4-256 characters of A-Z a-z 0-9 + / (RFC 8839)"
            )
        target_ice.ice_ufrag = ufrag
        return
    if name == "ice-pwd":
        pwd = arg.strip()
        if not _ICE_PWD.fullmatch(pwd):
            raise SdpError(
                f"line {number}: a=ice-pwd must be 22-256 characters of A-Z a-z 0-9 + / (RFC 8839)"
            )
        target_ice.ice_pwd = pwd
        return
    if name == "fingerprint":
        parts = arg.split()
        if len(parts) != 2:
            raise SdpError(f"line {number}: a=fingerprint needs an algorithm and a value")
        algorithm, value = parts[0].lower(), parts[1].upper()
        if not _FINGERPRINT.fullmatch(value):
            raise SdpError(f"line {number}: a=fingerprint value is not colon-separated hex bytes")
        size = FINGERPRINT_BYTES.get(algorithm)
        if size is not None and (len(value) + 1) // 3 != size:
            raise SdpError(
                f"line {number}: a=fingerprint:{algorithm} needs {size} bytes,"
                f" not {(len(value) + 1) // 3}"
            )
        target_ice.fingerprints.append((algorithm, value))
        return
    if name == "setup":
        setup = arg.strip()
        if setup not in SETUP_ROLES:
            raise SdpError(f"line {number}: a=setup must be one of {', '.join(SETUP_ROLES)}")
        target_ice.setup = setup
        return
    if media is None:
        return
    if name == "mid":
        if not arg or not _TOKEN.match(arg) or len(arg) > 16:
            raise SdpError(f"line {number}: bad a=mid")
        media.mid = arg
    elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
        media.direction = name
    elif name == "rtcp-mux":
        media.rtcp_mux = True
    elif name == "bundle-only":
        media.bundle_only = True
    elif name == "rtcp-rsize":
        media.rtcp_rsize = True
    elif name == "msid":
        media.msid = arg
    elif name == "rtpmap":
        pt_text, _, encoding = arg.partition(" ")
        pt = _int(pt_text, "rtpmap payload type", 0, 127)
        parts = encoding.strip().split("/")
        if len(parts) < 2:
            raise SdpError(f"line {number}: a=rtpmap needs encoding/clock-rate")
        channels = _int(parts[2], "channels", 1, 8) if len(parts) > 2 else 1
        rtpmaps[pt] = Codec(pt, parts[0].lower(), _int(parts[1], "clock rate", 1), channels)
    elif name == "fmtp":
        pt_text, _, params = arg.partition(" ")
        pt = _int(pt_text, "fmtp payload type", 0, 127)
        codec = rtpmaps.get(pt)
        if codec is not None:
            codec.fmtp = _parse_fmtp(params)
    elif name == "rtcp-fb":
        pt_text, _, rest = arg.partition(" ")
        fb_type, _, fb_param = rest.strip().partition(" ")
        targets = (
            list(rtpmaps.values())
            if pt_text == "*"
            else [rtpmaps.get(_int(pt_text, "rtcp-fb payload type", 0, 127))]
        )
        for codec in targets:
            if codec is not None:
                codec.feedback.append((fb_type, fb_param.strip()))
    elif name == "extmap":
        id_text, _, rest = arg.partition(" ")
        ext_id = _int(id_text.split("/")[0], "extmap id", 1, 255)
        uri = rest.strip().split(" ")[0]
        if uri:
            media.extensions[uri] = ext_id
    elif name == "ssrc":
        ssrc_text, _, attribute = arg.partition(" ")
        ssrc = _int(ssrc_text, "ssrc")
        key, _, attr_value = attribute.partition(":")
        media.ssrcs.setdefault(ssrc, {})[key] = attr_value
    elif name == "ssrc-group":
        parts = arg.split()
        if parts:
            media.ssrc_groups.append((parts[0], [_int(p, "ssrc-group ssrc") for p in parts[1:]]))
    elif name == "rid":
        parts = arg.split()
        if len(parts) >= 2:
            media.rids.append((parts[0], parts[1]))
    elif name == "simulcast":
        media.simulcast = arg


def _finish_media(media: MediaSection, rtpmaps: dict[int, Codec]) -> None:
    """Order codecs as the m= line does and attach RTX payload types to their codecs."""
    by_pt = dict(rtpmaps)
    ordered: list[Codec] = []
    for fmt in media.formats:
        if _is_number(fmt) and int(fmt) in by_pt:
            ordered.append(by_pt[int(fmt)])
    for codec in ordered:
        if codec.name == "rtx":
            apt = codec.fmtp.get("apt", "")
            if _is_number(apt) and int(apt) in by_pt:
                by_pt[int(apt)].rtx_payload_type = codec.payload_type
    media.codecs = ordered


def h264_matches(a: Codec, b: Codec) -> bool:
    """H.264 configurations interoperate when packetization mode and profile agree."""
    if a.fmtp.get("packetization-mode", "0") != b.fmtp.get("packetization-mode", "0"):
        return False
    pa, pb = a.fmtp.get("profile-level-id", "42e01f"), b.fmtp.get("profile-level-id", "42e01f")
    return pa[:2].lower() == pb[:2].lower()


def choose_codec(media: MediaSection, preferred: tuple[str, ...] | None = None) -> Codec | None:
    """The publisher's codec: the first offered one we can forward, H.264 mode 1 first."""
    names = preferred or SUPPORTED_CODECS.get(media.kind, ())
    for name in names:
        candidates = [c for c in media.codecs if c.name == name]
        if name == "h264":
            candidates.sort(key=lambda c: c.fmtp.get("packetization-mode", "0") != "1")
        if candidates:
            return candidates[0]
    return None


def match_codec(media: MediaSection, source: Codec) -> Codec | None:
    """The viewer's payload type for the codec a publisher sends, if the viewer offered it."""
    for codec in media.codecs:
        if codec.name != source.name or codec.clock_rate != source.clock_rate:
            continue
        if codec.name == "h264" and not h264_matches(codec, source):
            continue
        return codec
    return None


@dataclass(slots=True)
class AnswerSection:
    """What the SFU decided for one offered m= section."""

    offer: MediaSection
    codec: Codec | None  # None rejects the section (port 0)
    direction: str = "inactive"
    extensions: dict[str, int] = field(default_factory=dict)
    use_rtx: bool = False
    feedback: list[tuple[str, str]] = field(default_factory=list)
    send_ssrc: int | None = None
    send_rtx_ssrc: int | None = None
    cname: str = "telebridge"
    stream_id: str = "-"
    track_id: str = "-"
    recv_rids: list[str] = field(default_factory=list)  # rid simulcast we accept
    red: Codec | None = None  # audio redundancy (RFC 2198) over ``codec``, listed first


def find_red(media: MediaSection, primary: Codec) -> Codec | None:
    """The offered RED format whose blocks are all ``primary`` (Chromium: ``63 111/111``)."""
    for codec in media.codecs:
        if codec.name != "red" or codec.clock_rate != primary.clock_rate:
            continue
        blocks = codec.fmtp_line().split("/")
        if blocks and all(b == str(primary.payload_type) for b in blocks):
            return codec
    return None


def negotiate_feedback(kind: str, codec: Codec) -> list[tuple[str, str]]:
    allowed = SUPPORTED_FEEDBACK.get(kind, set())
    return [fb for fb in codec.feedback if fb in allowed]


def write_answer(
    sections: list[AnswerSection],
    *,
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint: tuple[str, str],
    address: str,
    port: int,
    session_id: int,
    setup: str = "passive",
    version: int = 2,
    group: bool = True,
    tcp_port: int = 0,
) -> str:
    """An ICE-lite, BUNDLE, rtcp-mux description with one host candidate: an answer
    (DTLS passive) or, with ``setup="actpass"``, the server's own offer to a subscriber.
    A ``tcp_port`` adds a passive ICE-TCP host candidate (RFC 6544) on that port.

    ``group`` False answers an offer that had no BUNDLE group (one section): RFC 8843 7.3
    lets an answer hold a group only if its offer asked for one. Every accepted section
    carries our port and transport attributes, as JSEP answers do, rather than RFC 8843's
    port 0 + a=bundle-only on all but the tagged one: browsers, aiortc and webrtcbin all
    take this form, and the RFC allows a port in the answer where the offer had 0."""
    accepted = [s.offer.mid for s in sections if s.codec is not None and s.offer.mid]
    ip_version = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN {ip_version} {address}",
        "s=Telebridge",
        "t=0 0",
        "a=ice-lite",
        "a=msid-semantic: WMS *",
    ]
    if accepted and group:
        lines.append("a=group:BUNDLE " + " ".join(accepted))
    for section in sections:
        lines.extend(
            _answer_media(
                section, ice_ufrag, ice_pwd, fingerprint, address, port, ip_version, setup, tcp_port
            )
        )
    return "\r\n".join(lines) + "\r\n"


def _answer_media(
    s: AnswerSection,
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint: tuple[str, str],
    address: str,
    port: int,
    ip_version: str,
    setup: str,
    tcp_port: int = 0,
) -> list[str]:
    offer = s.offer
    if s.codec is None:
        fmt = offer.formats[0] if offer.formats else "0"
        lines = [f"m={offer.kind} 0 {offer.proto} {fmt}", f"c=IN {ip_version} {address}"]
        if offer.mid is not None:
            lines.append(f"a=mid:{offer.mid}")
        # aiortc wants ICE, DTLS, rtcp-mux and a codec even on a rejected section.
        lines += [
            f"a=ice-ufrag:{ice_ufrag}",
            f"a=ice-pwd:{ice_pwd}",
            f"a=fingerprint:{fingerprint[0]} {fingerprint[1]}",
            f"a=setup:{setup}",
            "a=inactive",
            "a=rtcp-mux",
        ]
        if offer.codecs:
            lines.append(f"a=rtpmap:{offer.codecs[0].payload_type} {offer.codecs[0].rtpmap()}")
        return lines
    codec = s.codec
    pts = [str(codec.payload_type)]
    if s.red is not None:
        pts.insert(0, str(s.red.payload_type))  # first: a browser sends what comes first
    if s.use_rtx and codec.rtx_payload_type is not None:
        pts.append(str(codec.rtx_payload_type))
    lines = [
        f"m={offer.kind} {port} {offer.proto} {' '.join(pts)}",
        f"c=IN {ip_version} {address}",
        f"a=mid:{offer.mid}",
        f"a=ice-ufrag:{ice_ufrag}",
        f"a=ice-pwd:{ice_pwd}",
        f"a=fingerprint:{fingerprint[0]} {fingerprint[1]}",
        f"a=setup:{setup}",
        f"a={s.direction}",
        "a=rtcp-mux",
    ]
    if offer.rtcp_rsize:
        lines.append("a=rtcp-rsize")
    for uri, ext_id in s.extensions.items():
        lines.append(f"a=extmap:{ext_id} {uri}")
    if s.red is not None:
        lines.append(f"a=rtpmap:{s.red.payload_type} {s.red.rtpmap()}")
        lines.append(f"a=fmtp:{s.red.payload_type} {codec.payload_type}/{codec.payload_type}")
    lines.append(f"a=rtpmap:{codec.payload_type} {codec.rtpmap()}")
    for fb_type, fb_param in s.feedback:
        lines.append(f"a=rtcp-fb:{codec.payload_type} {fb_type} {fb_param}".rstrip())
    if codec.fmtp:
        lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp_line()}")
    if s.use_rtx and codec.rtx_payload_type is not None:
        lines.append(f"a=rtpmap:{codec.rtx_payload_type} rtx/{codec.clock_rate}")
        lines.append(f"a=fmtp:{codec.rtx_payload_type} apt={codec.payload_type}")
    if s.recv_rids:
        lines.extend(f"a=rid:{rid} recv" for rid in s.recv_rids)
        lines.append("a=simulcast:recv " + ";".join(s.recv_rids))
    if s.send_ssrc is not None:
        lines.append(f"a=msid:{s.stream_id} {s.track_id}")
        if s.send_rtx_ssrc is not None:
            lines.append(f"a=ssrc-group:FID {s.send_ssrc} {s.send_rtx_ssrc}")
        for ssrc in (s.send_ssrc, s.send_rtx_ssrc):
            if ssrc is not None:
                lines.append(f"a=ssrc:{ssrc} cname:{s.cname}")
                lines.append(f"a=ssrc:{ssrc} msid:{s.stream_id} {s.track_id}")
    lines.append(f"a=candidate:{host_candidate(address, port)}")
    if tcp_port:
        lines.append(
            f"a=candidate:2 1 tcp {TCP_PASSIVE_PRIORITY} {address} {tcp_port}"
            " typ host tcptype passive generation 0"
        )
    lines.append("a=end-of-candidates")
    return lines


def host_candidate(address: str, port: int) -> str:
    """The server's one candidate, as the value of an ``a=candidate:`` line."""
    return f"1 1 udp 2130706431 {address} {port} typ host generation 0"
