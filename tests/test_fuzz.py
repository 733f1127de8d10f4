"""Fuzzing every parser that sees bytes from the network or the control pipe.

Each parser may return a result or raise its one documented exception; anything else
(IndexError, struct.error, ValueError from int(), RecursionError...) is a bug, because in
the worker it either escapes into the event loop or is swallowed with a logged traceback
per packet. WorkerCore.receive is fuzzed as a whole too: random datagrams must never raise
and, from addresses ICE has not validated, must never be answered.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import pytest
from aioice import stun
from aiortc.rtcdtlstransport import RTCCertificate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu import channel, codecs, rtcp, sdp
from sfu.control import ControlError
from sfu.dtls import DtlsSession, is_dtls, local_fingerprint
from sfu.ice import parse_binding_request
from sfu.rtp import RtpError, RtpPacket, pack_extensions, parse_rtp, read_map
from sfu.srtp import SrtpContext, SrtpError
from sfu.worker import WorkerCore
from tests.wire import binding_request, dtls_handshake

OFFER = (Path(__file__).parent / "data" / "chromium-156-simulcast-offer.sdp").read_bytes().decode()
OFFER_LINES = OFFER.split("\r\n")
REMOTE_UFRAG = "d+QB"

BYTES = settings(max_examples=400, deadline=None)
STRUCTURED = settings(max_examples=300, deadline=None)
WORKER = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The extension ids a Chromium publisher negotiates (from the captured offer).
CHROMIUM_EXTENSIONS = {
    sdp.URI_MID: 9,
    sdp.URI_RID: 10,
    sdp.URI_RRID: 11,
    sdp.URI_VIDEO_ORIENTATION: 3,
    sdp.URI_AUDIO_LEVEL: 12,
    sdp.URI_TWCC: 4,
    sdp.URI_ABS_SEND_TIME: 2,
}
EXT_MAP = read_map(CHROMIUM_EXTENSIONS)

STUN_ATTRIBUTE_TYPES = [entry[0] for entry in stun.ATTRIBUTES] + [0x0000, 0x7FFF, 0xC001, 0xFFFF]


def _stun_header(message_type: int, length: int, transaction_id: bytes) -> bytes:
    return struct.pack("!HHI12s", message_type, length, stun.COOKIE, transaction_id)


def _with_fingerprint(message: bytes) -> bytes:
    """Append a correct FINGERPRINT so that the parser looks past it (and must still cope)."""
    body_length = len(message) - 20 + 8
    head = message[:2] + struct.pack("!H", body_length) + message[4:]
    crc = zlib.crc32(head) ^ 0x5354554E
    return head + struct.pack("!HHI", 0x8028, 4, crc & 0xFFFFFFFF)


@st.composite
def stun_like(draw: st.DrawFn) -> bytes:
    """A STUN header with the magic cookie and attributes of any type and any length."""
    attributes = b""
    for attr_type, value in draw(
        st.lists(
            st.tuples(st.sampled_from(STUN_ATTRIBUTE_TYPES), st.binary(max_size=40)), max_size=6
        )
    ):
        attributes += struct.pack("!HH", attr_type, len(value)) + value + bytes(-len(value) % 4)
    message_type = (
        draw(st.sampled_from([0x0001, 0x0011, 0x0101, 0x0111, 0x0003]))
        if draw(st.booleans())
        else draw(st.integers(0, 0x3FFF))
    )
    message = (
        _stun_header(message_type, len(attributes), draw(st.binary(min_size=12, max_size=12)))
        + attributes
    )
    if draw(st.booleans()):
        message = _with_fingerprint(message)
    if draw(st.booleans()):  # lie about the length
        message = message[:2] + struct.pack("!H", draw(st.integers(0, 0xFFFF))) + message[4:]
    return message


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """Byte flips, truncation, insertion and extension of a valid message."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "append"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[position] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[position:]
        elif op == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


# -- STUN ---------------------------------------------------------------------------------------


def _check_stun_result(result: object) -> None:
    assert result is None or (
        isinstance(result, tuple)
        and isinstance(result[0], stun.Message)
        and isinstance(result[1], str)
        and isinstance(result[2], str)
    )


@BYTES
@given(st.binary(max_size=300))
def test_stun_arbitrary_bytes(data):
    _check_stun_result(parse_binding_request(data))


@BYTES
@given(stun_like())
def test_stun_structured(data):
    _check_stun_result(parse_binding_request(data))


@STRUCTURED
@given(mutated(binding_request("abcdefgh:d+QB", "a-password-of-24-chars!!", use_candidate=True)))
def test_stun_mutated_binding_request(data):
    _check_stun_result(parse_binding_request(data))


# -- RTP ----------------------------------------------------------------------------------------


def _check_rtp(data: bytes) -> RtpPacket | None:
    try:
        packet = parse_rtp(data, EXT_MAP)
    except RtpError:
        return None
    assert isinstance(packet, RtpPacket)
    assert 0 <= packet.pt < 128 and packet.ssrc == struct.unpack_from("!I", data, 8)[0]
    assert len(packet.payload) <= len(data) - 12
    assert bytes(packet.payload) in data
    for value in (packet.mid, packet.rid, packet.rrid):
        assert value is None or (isinstance(value, bytes) and 0 < len(value) <= 255)
    assert -1 <= packet.audio_level <= 255 and -1 <= packet.orientation <= 255
    return packet


@BYTES
@given(st.binary(max_size=300))
def test_rtp_arbitrary_bytes(data):
    _check_rtp(data)


@BYTES
@given(st.sampled_from(["vp8", "h264", "opus"]), st.binary(max_size=200))
def test_codec_inspection_never_raises(codec, payload):
    """Keyframe sizes and VP8 ids are read from whatever a publisher sends."""
    found = codecs.keyframe_size(codec, payload)
    assert found is None or (0 < found[0] < 1 << 20 and 0 < found[1] < 1 << 20)
    pid_pos, pid, tl0_pos, tl0 = codecs.vp8_picture_ids(payload)
    assert -1 <= pid_pos < len(payload) and 0 <= pid <= 0x7FFF
    assert -1 <= tl0_pos < len(payload) and 0 <= tl0 <= 0xFF


@BYTES
@given(st.binary(min_size=1, max_size=120))
def test_h264_sps_shaped_payloads_never_raise(rbsp):
    for head in (b"\x67", b"\x18\x00" + bytes([len(rbsp) + 1]) + b"\x67"):
        found = codecs.keyframe_size("h264", head + rbsp)
        assert found is None or (found[0] > 0 and found[1] > 0)


@BYTES
@given(st.binary(min_size=11, max_size=300))
def test_rtp_version_2_arbitrary_rest(data):
    _check_rtp(bytes([0x80 | (data[0] & 0x3F)]) + data[1:])


@st.composite
def rtp_packets(draw: st.DrawFn) -> tuple[bytes, dict[str, bytes], bytes]:
    """A well-formed RTP packet with Chromium's extensions: (bytes, extension values, payload)."""
    values: dict[str, bytes] = {}
    items: list[tuple[int, bytes]] = []
    token = st.binary(min_size=1, max_size=draw(st.sampled_from([16, 40])))
    for uri, ext_id in ((sdp.URI_MID, 9), (sdp.URI_RID, 10), (sdp.URI_RRID, 11)):
        if draw(st.booleans()):
            values[uri] = draw(token)
            items.append((ext_id, values[uri]))
    if draw(st.booleans()):
        values[sdp.URI_AUDIO_LEVEL] = draw(st.binary(min_size=1, max_size=1))
        items.append((12, values[sdp.URI_AUDIO_LEVEL]))
    # Extensions the SFU does not read (abs-send-time, transport-cc, unknown ids) in between.
    for ext_id in draw(st.lists(st.sampled_from([2, 4, 5, 13, 14]), max_size=3, unique=True)):
        items.append((ext_id, draw(st.binary(min_size=1, max_size=4))))
    items = draw(st.permutations(items))
    block = pack_extensions(items)[0] if items else b""
    csrcs = draw(st.lists(st.integers(0, 2**32 - 1), max_size=3))
    payload = draw(st.binary(max_size=200))
    padding = draw(st.integers(0, 20))
    b0 = 0x80 | (0x10 if block else 0) | (0x20 if padding else 0) | len(csrcs)
    header = struct.pack(
        "!BBHII",
        b0,
        draw(st.integers(0, 255)) & 0xFF,
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(0, 2**32 - 1)),
    )
    header += b"".join(struct.pack("!I", c) for c in csrcs)
    pad = (bytes(padding - 1) + bytes([padding])) if padding else b""
    return header + block + payload + pad, values, payload


@STRUCTURED
@given(rtp_packets())
def test_rtp_well_formed_round_trip(case):
    data, values, payload = case
    packet = _check_rtp(data)
    assert packet is not None, "a well-formed packet must parse"
    assert packet.payload == payload
    assert packet.mid == values.get(sdp.URI_MID)
    assert packet.rid == values.get(sdp.URI_RID)
    assert packet.rrid == values.get(sdp.URI_RRID)
    level = values.get(sdp.URI_AUDIO_LEVEL)
    assert packet.audio_level == (level[0] if level else -1)
    assert packet.size == len(data)


@STRUCTURED
@given(rtp_packets().flatmap(lambda case: mutated(case[0])))
def test_rtp_mutated(data):
    _check_rtp(data)


# -- RTCP ---------------------------------------------------------------------------------------


@st.composite
def rtcp_compounds(draw: st.DrawFn) -> bytes:
    ssrc = st.integers(0, 2**32 - 1)
    parts = []
    for kind in draw(
        st.lists(
            st.sampled_from(["sr", "rr", "pli", "fir", "remb", "nack", "bye", "sdes"]),
            min_size=1,
            max_size=5,
        )
    ):
        if kind == "sr":
            parts.append(
                rtcp.sender_report(
                    draw(ssrc), draw(st.integers(0, 2**64 - 1)), draw(ssrc), draw(ssrc), draw(ssrc)
                )
            )
        elif kind == "rr":
            stats = rtcp.ReceiveStats(90000)
            for seq in draw(st.lists(st.integers(0, 0xFFFF), max_size=5)):
                stats.on_packet(seq, seq * 3000, 1000, seq / 30)
            parts.append(rtcp.receiver_report(draw(ssrc), [stats.report(draw(ssrc), 1.0)]))
        elif kind == "pli":
            parts.append(rtcp.pli(draw(ssrc), draw(ssrc)))
        elif kind == "fir":
            parts.append(rtcp.fir(draw(ssrc), draw(ssrc), draw(st.integers(0, 255))))
        elif kind == "remb":
            parts.append(
                rtcp.remb(
                    draw(ssrc),
                    draw(st.integers(0, 2**30)),
                    draw(st.lists(ssrc, min_size=1, max_size=4)),
                )
            )
        elif kind == "nack":
            seqs = draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20))
            parts.append(
                bytes(
                    rtcp.RtcpRtpfbPacket(
                        fmt=rtcp.RTCP_RTPFB_NACK,
                        ssrc=draw(ssrc),
                        media_ssrc=draw(ssrc),
                        lost=sorted(set(seqs)),
                    )
                )
            )
        elif kind == "bye":
            parts.append(bytes(rtcp.RtcpByePacket(sources=draw(st.lists(ssrc, max_size=3)))))
        else:
            body = struct.pack("!I", draw(ssrc)) + b"\x01\x04abcd\x00\x00"
            parts.append(struct.pack("!BBH", 0x81, 202, len(body) // 4) + body)
    return b"".join(parts)


def _check_rtcp(data: bytes) -> None:
    try:
        packets = rtcp.parse_compound(data)
    except rtcp.RtcpError:
        return
    assert isinstance(packets, list)
    for packet in packets:  # what the transport then reads from them must not raise either
        if isinstance(packet, rtcp.RtcpRtpfbPacket) and packet.fmt == rtcp.RTCP_RTPFB_NACK:
            assert all(0 <= s <= 0xFFFF for s in rtcp.nack_seqs(packet))


@BYTES
@given(st.binary(max_size=300))
def test_rtcp_arbitrary_bytes(data):
    _check_rtcp(data)


@BYTES
@given(st.binary(min_size=3, max_size=300), st.integers(200, 206))
def test_rtcp_valid_first_header_arbitrary_rest(rest, packet_type):
    _check_rtcp(bytes([0x80 | (rest[0] & 0x3F), packet_type]) + rest[1:])


@STRUCTURED
@given(rtcp_compounds())
def test_rtcp_well_formed_compounds_parse(data):
    packets = rtcp.parse_compound(data)
    assert packets, "a compound built by our own writers must parse"


@STRUCTURED
@given(rtcp_compounds().flatmap(mutated))
def test_rtcp_mutated(data):
    _check_rtcp(data)


# -- SDP ----------------------------------------------------------------------------------------


def _check_sdp(text: str) -> None:
    try:
        result = sdp.parse(text)
    except sdp.SdpError as exc:
        assert str(exc)
        return
    assert isinstance(result, sdp.SessionDescription) and result.media


SDP_ALPHABET = st.sampled_from(
    list("v=0mac:/ \r\n-;*9612\x00\u00b2\u0663é") + ["m=", "a=", "\r\n", "UDP/TLS/RTP/SAVPF"]
)


@BYTES
@given(st.text(max_size=400))
def test_sdp_arbitrary_text(text):
    _check_sdp(text)
    _check_sdp("v=0\r\n" + text)


@BYTES
@given(st.lists(SDP_ALPHABET, max_size=120).map("".join))
def test_sdp_sdp_shaped_text(text):
    _check_sdp("v=0\r\n" + text)


LINE_EDITS = st.sampled_from(
    ["delete", "duplicate", "truncate", "insert", "replace-number", "swap"]
)
NOISE = st.sampled_from(
    [
        "",
        "x",
        "-1",
        "99999999999999999999999",
        "\u00b2",
        "\u0663",
        " ",
        ":",
        "/",
        "=",
        "*",
        "\r",
        "\x00",
        "é",
    ]
)


INTERESTING = (
    "m=",
    "a=group",
    "a=mid",
    "a=rtpmap:96",
    "a=rtpmap:97",
    "a=fmtp:97",
    "a=rtpmap:111",
    "a=fmtp:111",
    "a=rtcp-fb:96",
    "a=extmap:9",
    "a=ice-",
    "a=fingerprint",
    "a=setup",
    "a=ssrc",
    "a=send",
)


@st.composite
def mutated_offers(draw: st.DrawFn) -> str:
    lines = list(OFFER_LINES[:-1])
    for _ in range(draw(st.integers(1, 5))):
        index = draw(st.integers(0, len(lines) - 1))
        if draw(st.booleans()):  # half the edits go to the lines the SFU acts on
            interesting = [i for i, line in enumerate(lines) if line.startswith(INTERESTING)]
            if interesting:
                index = draw(st.sampled_from(interesting))
        op = draw(LINE_EDITS)
        line = lines[index]
        if op == "delete":
            del lines[index]
        elif op == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), line)
        elif op == "truncate":
            lines[index] = line[: draw(st.integers(0, len(line)))]
        elif op == "insert":
            at = draw(st.integers(0, len(line)))
            lines[index] = line[:at] + draw(NOISE) + line[at:]
        elif op == "replace-number":
            numbers = re.findall(r"\d+", line)
            if numbers:
                lines[index] = line.replace(draw(st.sampled_from(numbers)), draw(NOISE), 1)
        else:
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
        if not lines:
            break
    return "\r\n".join(lines) + "\r\n"


NUMBER_NOISE = st.sampled_from(
    [
        "\u00b2",
        "1\u00b2",
        "\u0663",
        "\u0669\u0666",
        "",
        "x",
        "-1",
        "+1",
        " 1",
        "0",
        "128",
        "256",
        "65536",
        "4294967296",
        "9" * 5000,
    ]
)


@st.composite
def renumbered_offers(draw: st.DrawFn) -> str:
    """One number on one line the SFU acts on (port, payload type, apt, extmap id, ssrc)
    replaced: where int() and isdigit() disagree, or ranges end."""
    lines = list(OFFER_LINES[:-1])
    for _ in range(draw(st.integers(1, 3))):
        prefix = draw(st.sampled_from(INTERESTING))  # each kind of line equally likely
        candidates = [
            i for i, line in enumerate(lines) if line.startswith(prefix) and re.search(r"\d", line)
        ]
        if not candidates:
            continue
        index = draw(st.sampled_from(candidates))
        start, end = draw(st.sampled_from([m.span() for m in re.finditer(r"\d+", lines[index])]))
        line = lines[index]
        lines[index] = line[:start] + draw(NUMBER_NOISE) + line[end:]
    return "\r\n".join(lines) + "\r\n"


OFFERS = st.one_of(mutated_offers(), renumbered_offers())


@STRUCTURED
@given(OFFERS)
def test_sdp_mutated_chromium_offer(text):
    _check_sdp(text)


@pytest.fixture(scope="module")
def certificate() -> RTCCertificate:
    return RTCCertificate.generateCertificate()


@STRUCTURED
@given(text=OFFERS)
def test_publish_mutated_offer_raises_only_request_error(certificate, text):
    """The whole offer/answer path: a bad offer must become ControlError (HTTP 400), never
    an internal error, and an accepted one must produce an answer we can parse back."""
    core = WorkerCore(certificate, "127.0.0.1", 40000, lambda d, a: None, lambda n, d: None)
    try:
        result = core.handle(
            "publish", {"room": "r", "session": "s", "identity": "i", "offer": text}, 0.0
        )
    except ControlError as exc:
        assert exc.code == "bad_sdp" and exc.message
        assert not core.sessions
        return
    answer = sdp.parse(result["answer"])
    assert answer.media and result["tracks"]


# -- control channel ----------------------------------------------------------------------------


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@BYTES
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_channel_arbitrary_chunks(chunks):
    decoder = channel.Decoder()
    for chunk in chunks:
        try:
            messages = decoder.feed(chunk)
        except channel.ChannelError:
            return
        assert all(isinstance(m, dict) for m in messages)


FRAME_BODIES = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(str.encode),
    JSON.map(lambda value: json.dumps(value).encode()),
    # Deep nesting: json.loads raises RecursionError, which is not a ValueError.
    st.tuples(st.sampled_from([b"[", b'{"a":', b"[{}, "]), st.integers(1, 200_000)).map(
        lambda t: t[0] * t[1]
    ),
)


@BYTES
@given(st.lists(FRAME_BODIES, max_size=4))
def test_channel_frames_with_arbitrary_bodies(bodies):
    data = b"".join(struct.pack("!I", len(b)) + b for b in bodies)
    try:
        messages = channel.Decoder().feed(data)
    except channel.ChannelError:
        return
    assert len(messages) == len(bodies) and all(isinstance(m, dict) for m in messages)


@STRUCTURED
@given(
    st.lists(st.dictionaries(st.text(max_size=8), JSON, max_size=5), max_size=5),
    st.lists(st.integers(0, 400), max_size=6),
)
def test_channel_round_trip_with_arbitrary_splits(messages, cuts):
    data = b"".join(channel.encode(m) for m in messages)
    decoder = channel.Decoder()
    got = []
    start = 0
    for cut in sorted(c for c in cuts if c < len(data)) + [len(data)]:
        got += decoder.feed(data[start:cut])
        start = cut
    assert got == messages


# -- the whole worker ---------------------------------------------------------------------------


PUBLISHER = ("127.0.0.1", 50001)
VIEWER = ("127.0.0.1", 50002)
STRANGERS = st.tuples(
    st.sampled_from(["127.0.0.1", "10.1.2.3", "::1"]), st.integers(1, 65535)
).filter(lambda a: a not in (PUBLISHER, VIEWER))


def _offer_for(certificate: RTCCertificate, direction: str) -> str:
    fp = local_fingerprint(certificate)[1]
    lines = []
    for line in OFFER_LINES[:-1]:
        if line.startswith("a=fingerprint:"):
            line = f"a=fingerprint:sha-256 {fp}"
        if direction == "recvonly":
            if line.startswith(("a=rid:", "a=simulcast:", "a=ssrc")):
                continue
            line = line.replace("a=sendonly", "a=recvonly")
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _credentials(answer: str) -> tuple[str, str]:
    return sdp.parse(answer).ice_credentials()


class _ThroughWorker:
    """The server side of a DTLS handshake: the worker's demux, then the session's DtlsSession."""

    def __init__(self, worker: Worker, session: str, addr: tuple) -> None:
        self.worker, self.session, self.addr = worker, session, addr

    @property
    def connected(self) -> bool:
        return self.worker.core.sessions[self.session].srtp is not None

    def receive(self, data: bytes) -> list[bytes]:
        mark = len(self.worker.sent)
        self.worker.core.receive(data, self.addr, self.worker.now)
        return [d for d, a in self.worker.sent[mark:] if a == self.addr and is_dtls(d)]


class Worker:
    """A WorkerCore with a sender that records every datagram, and helpers to connect
    in-process peers (STUN + a real DTLS handshake, no sockets)."""

    def __init__(self, certificate: RTCCertificate) -> None:
        self.sent: list[tuple[bytes, tuple]] = []
        self.events: list[tuple[str, dict]] = []
        self.now = 1.0
        self.core = WorkerCore(
            certificate,
            "127.0.0.1",
            40000,
            lambda data, addr: self.sent.append((bytes(data), addr)),
            lambda name, data: self.events.append((name, data)),
        )

    def publish(self, session: str, offer: str) -> str:
        params = {"room": "r", "session": session, "identity": session, "offer": offer}
        return self.core.handle("publish", params, self.now)["answer"]

    def subscribe(self, session: str, source: str, offer: str) -> str:
        producers = [p.id for p in self.core.sessions[source].producers]
        params = {
            "room": "r",
            "session": session,
            "identity": session,
            "producers": producers,
            "offer": offer,
        }
        return self.core.handle("view", params, self.now)["answer"]

    def connect(
        self, session: str, answer: str, addr: tuple, certificate: RTCCertificate
    ) -> SrtpContext:
        """ICE, then DTLS as the browser would (the client role of DtlsSession): the
        client's SRTP context, which protects what the test sends to the worker."""
        ufrag, pwd = _credentials(answer)
        self.core.receive(
            binding_request(f"{ufrag}:{REMOTE_UFRAG}", pwd, use_candidate=True), addr, self.now
        )
        client = DtlsSession(certificate, sdp.parse(answer).dtls_fingerprints(), role="client")
        dtls_handshake(client, _ThroughWorker(self, session, addr))
        assert client.keys is not None
        return SrtpContext(client.keys.profile, client.keys.tx_key, client.keys.rx_key)


@pytest.fixture(scope="module")
def idle_worker(certificate) -> tuple[Worker, str, str]:
    """One publisher session that ICE has not validated from anywhere yet."""
    worker = Worker(certificate)
    answer = worker.publish("pub", OFFER)
    ufrag, pwd = _credentials(answer)
    return worker, ufrag, pwd


DATAGRAMS = st.one_of(
    st.binary(max_size=300),
    stun_like(),
    # Each RFC 7983 range: STUN 0-3, DTLS 20-63, RTP/RTCP 128-191, and the rest.
    st.tuples(
        st.sampled_from([0, 1, 20, 22, 23, 63, 64, 128, 0x90, 191, 200, 255]),
        st.binary(max_size=200),
    ).map(lambda t: bytes([t[0]]) + t[1]),
    st.binary(min_size=12, max_size=200).map(
        lambda b: b"\x16\xfe\xfd" + b
    ),  # DTLS handshake-looking
    st.binary(min_size=12, max_size=200).map(lambda b: b"\x80\xc9" + b),  # SRTCP-looking
)


@WORKER
@given(data=DATAGRAMS, addr=STRANGERS)
def test_worker_random_datagrams_from_strangers_are_dropped_silently(idle_worker, data, addr):
    worker, _ufrag, _pwd = idle_worker
    worker.sent.clear()
    worker.core.receive(data, addr, 2.0)
    assert worker.sent == [], "nothing may be sent to an address ICE has not validated"
    assert addr not in worker.core.demux.by_addr


@WORKER
@given(data=st.data(), addr=STRANGERS)
def test_worker_stun_for_real_ufrag_with_bad_integrity_is_dropped(idle_worker, data, addr):
    worker, ufrag, pwd = idle_worker
    username = data.draw(
        st.sampled_from(
            [f"{ufrag}:{REMOTE_UFRAG}", f"{ufrag}:x", ufrag, f"{ufrag}:{REMOTE_UFRAG}:"]
        )
    )
    password = data.draw(st.text(min_size=1, max_size=30).filter(lambda p: p != pwd))
    request = binding_request(username, password, use_candidate=True)
    if data.draw(st.booleans()):
        request = data.draw(mutated(request))
    worker.sent.clear()
    worker.core.receive(request, addr, 2.0)
    assert worker.sent == []
    assert addr not in worker.core.demux.by_addr
    assert worker.core.sessions["pub"].ice.selected is None


def test_worker_stun_with_right_password_is_answered(idle_worker):
    """The other side of the test above: the same request with the right password works."""
    worker, ufrag, pwd = idle_worker
    addr = ("127.0.0.1", 61000)
    worker.sent.clear()
    worker.core.receive(
        binding_request(f"{ufrag}:{REMOTE_UFRAG}", pwd, use_candidate=False), addr, 2.0
    )
    assert len(worker.sent) == 1
    response, to = worker.sent[0]
    assert to == addr
    message = stun.parse_message(response)
    assert message.message_class == stun.Class.RESPONSE
    assert message.attributes["XOR-MAPPED-ADDRESS"] == addr
    assert message.check_message_integrity(pwd.encode())
    # Undo the binding so the module fixture stays "validated from nowhere".
    del worker.core.demux.by_addr[addr]
    worker.core.sessions["pub"].ice.validated.discard(addr)


@pytest.fixture
def bound_worker(certificate) -> tuple[Worker, tuple]:
    """A publisher whose address ICE validated and nominated, DTLS not yet started."""
    worker = Worker(certificate)
    answer = worker.publish("pub", OFFER)
    ufrag, pwd = _credentials(answer)
    worker.core.receive(
        binding_request(f"{ufrag}:{REMOTE_UFRAG}", pwd, use_candidate=True), PUBLISHER, 1.0
    )
    assert worker.core.demux.by_addr.get(PUBLISHER) is worker.core.sessions["pub"]
    return worker, PUBLISHER


@WORKER
@given(datagrams=st.lists(DATAGRAMS.filter(len), min_size=1, max_size=20))
def test_worker_random_datagrams_from_bound_address_never_raise(certificate, datagrams):
    worker = Worker(certificate)
    answer = worker.publish("pub", OFFER)
    ufrag, pwd = _credentials(answer)
    worker.core.receive(
        binding_request(f"{ufrag}:{REMOTE_UFRAG}", pwd, use_candidate=True), PUBLISHER, 1.0
    )
    for data in datagrams:
        worker.core.receive(data, PUBLISHER, 2.0)
        worker.core.run_timers(2.0)


def test_worker_empty_datagram_from_bound_address(bound_worker):
    worker, addr = bound_worker
    worker.sent.clear()
    before = worker.core.demux.dropped
    worker.core.receive(b"", addr, 2.0)
    assert worker.sent == [] and worker.core.demux.dropped == before + 1


def test_worker_empty_datagram_from_stranger(bound_worker):
    worker, _addr = bound_worker
    worker.sent.clear()
    worker.core.receive(b"", ("127.0.0.1", 1), 2.0)
    assert worker.sent == []


@pytest.fixture(scope="module")
def connected(certificate):
    """A publisher and a viewer, both through ICE and DTLS, with the client SRTP sessions."""
    worker = Worker(certificate)
    pub_certificate, view_certificate = (
        RTCCertificate.generateCertificate(),
        RTCCertificate.generateCertificate(),
    )
    pub_answer = worker.publish("pub", _offer_for(pub_certificate, "sendonly"))
    pub_srtp = worker.connect("pub", pub_answer, PUBLISHER, pub_certificate)
    view_answer = worker.subscribe("view", "pub", _offer_for(view_certificate, "recvonly"))
    view_srtp = worker.connect("view", view_answer, VIEWER, view_certificate)
    viewer = worker.core.sessions["view"]
    return (
        worker,
        pub_srtp,
        view_srtp,
        [c.ssrc for c in viewer.consumers] + [c.rtx_ssrc for c in viewer.consumers if c.rtx_ssrc],
    )


_NEXT_SEQ: dict[int, int] = {}


@st.composite
def publisher_rtp(draw: st.DrawFn) -> bytes:
    """Plain RTP as a Chromium publisher might send it, with random ids, types and payloads."""
    data, _values, _payload = draw(rtp_packets())
    data = bytearray(data)
    data[1] = draw(st.sampled_from([96, 97, 111, 0x80 | 96, 0x80 | 111, 102, 127, 35]))
    struct.pack_into("!I", data, 8, draw(st.sampled_from([0x1111, 0x2222, 0x3333, 2072071564])))
    if draw(st.booleans()):  # VP8 payload descriptor, keyframe or not
        head = len(data) - len(_payload) - (data[-1] if data[0] & 0x20 else 0)
        data[head:head] = draw(
            st.sampled_from(
                [
                    b"\x10\x50\x02\x00\x9d\x01\x2a",
                    b"\x90\x80\x01\x50\x02\x00\x9d\x01\x2a",
                    b"\x10\x01",
                    b"\x90",
                ]
            )
        )
    return bytes(data)


@WORKER
@given(st.lists(publisher_rtp(), min_size=1, max_size=15), st.data())
def test_worker_authenticated_garbage_rtp_never_raises(connected, packets, data):
    """SRTP-authenticated packets carry attacker-chosen headers and payloads into the
    parsers, the SSRC learning and the fan-out; none of it may raise."""
    worker, pub_srtp, _view_srtp, _ssrcs = connected
    for packet in packets:
        # Sequence numbers move forward per SSRC (mostly), so SRTP's replay window lets
        # the packets through to the parsers instead of dropping them as replays.
        ssrc = struct.unpack_from("!I", packet, 8)[0]
        step = data.draw(st.sampled_from([1, 1, 1, 2, 5, 0, -3, 700]))
        seq = _NEXT_SEQ[ssrc] = (_NEXT_SEQ.get(ssrc, 1000) + step) & 0xFFFF
        packet = packet[:2] + struct.pack("!H", seq) + packet[4:]
        try:
            protected = pub_srtp.protect(packet)
        except SrtpError:
            continue
        worker.now += 0.01
        worker.core.receive(protected, PUBLISHER, worker.now)
        worker.core.run_timers(worker.now)


@WORKER
@given(
    st.lists(
        st.one_of(rtcp_compounds(), rtcp_compounds().flatmap(mutated)), min_size=1, max_size=6
    ),
    st.data(),
)
def test_worker_authenticated_garbage_rtcp_never_raises(connected, compounds, data):
    """Viewer RTCP (NACK, PLI, FIR, RR naming our consumer SSRCs) and publisher RTCP (SR)."""
    worker, pub_srtp, view_srtp, consumer_ssrcs = connected
    for compound in compounds:
        compound = bytearray(compound)
        if len(compound) >= 12 and consumer_ssrcs and data.draw(st.booleans()):
            struct.pack_into("!I", compound, 8, data.draw(st.sampled_from(consumer_ssrcs)))
        if len(compound) < 8 or not 0x80 <= compound[0] < 0xC0 or not 192 <= compound[1] <= 223:
            continue
        session, addr = data.draw(st.sampled_from([(view_srtp, VIEWER), (pub_srtp, PUBLISHER)]))
        try:
            protected = session.protect_rtcp(bytes(compound))
        except SrtpError:
            continue
        worker.now += 0.01
        worker.core.receive(protected, addr, worker.now)
        worker.core.run_timers(worker.now)


def test_connected_sessions_still_forward_after_fuzzing(connected):
    """Runs after the fuzzers above (file order): the worker still forwards a keyframe."""
    worker, pub_srtp, _view_srtp, _ssrcs = connected
    assert {"pub", "view"} <= set(worker.core.sessions)
    publisher = worker.core.sessions["pub"]
    video = next(p for p in publisher.producers if p.kind == "video")
    ssrc = 0x0BADCAFE
    block = pack_extensions([(9, b"0"), (10, b"q")])[0]  # mid, and rid: a simulcast offer
    worker.sent.clear()
    # Garbage may have looked like another encoding's packets, or like the viewer's
    # feedback saying its link is tiny (its video then pauses): let both go stale first.
    worker.now += 6.0
    worker.core.run_timers(worker.now)
    for seq in range(20):
        payload = (
            b"\x10" + b"\x50\x02\x00" + b"\x9d\x01\x2a" + bytes(100)
        )  # VP8 keyframe: descriptor, tag, start code
        header = struct.pack("!BBHII", 0x90, 0x80 | 96, 40000 + seq, 90000 + seq * 3000, ssrc)
        worker.now += 0.03
        worker.core.receive(pub_srtp.protect(header + block + payload), PUBLISHER, worker.now)
        worker.core.run_timers(worker.now)
    assert video.streams[0].ssrc == ssrc
    to_viewer = [
        d for d, a in worker.sent if a == VIEWER and 127 < d[0] < 192 and not 192 <= d[1] <= 223
    ]
    viewer = worker.core.sessions["view"]
    assert to_viewer, ("the viewer should receive forwarded RTP", viewer.layers.state())
