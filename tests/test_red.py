"""Redundant audio (RFC 2198 RED, sfu/red.py): what Chromium is asked for, and what each
viewer gets. A viewer that negotiated RED gets the packet as the publisher sent it, in its
own payload numbers; every other viewer (aiortc, GStreamer, a recorder) gets the primary
Opus frame alone, which its decoder can play."""

from __future__ import annotations

import pytest
from aiortc import RTCCertificate
from hypothesis import given
from hypothesis import strategies as st

from sfu.consumer import PipeConsumer
from sfu.red import RedError, primary, renumber
from sfu.rtp import ExtensionLayout, RtpPacket, parse_rtp, read_map
from sfu.settings import MediaSettings
from sfu.streams import Encoding
from sfu.timers import TimerQueue
from sfu.worker import WorkerCore
from tests import sansio
from tests.sansio import PUBLISHER_ADDR, VIEWER_ADDR, rtp
from tests.test_sdp import OFFER, sections, viewer_offer

OPUS_PT, RED_PT = 111, 63
SSRC = 0x3333


def red_payload(primary_data: bytes, *redundant: tuple[int, bytes], pt: int = OPUS_PT) -> bytes:
    """A RED payload: redundant (timestamp offset, data) blocks, then the primary."""
    head = b"".join(
        bytes([0x80 | pt, (offset >> 6) & 0xFF, ((offset & 0x3F) << 2) | (len(d) >> 8), len(d)])
        for offset, d in redundant
    )
    return head + bytes([pt]) + b"".join(d for _, d in redundant) + primary_data


def parse(data: bytes) -> RtpPacket:
    return parse_rtp(data, read_map({}))


# -- the format -------------------------------------------------------------------------------


def test_the_primary_is_the_last_block_after_the_redundant_ones():
    payload = red_payload(b"now", (960, b"before"), (1920, b"long ago"))
    assert primary(payload) == (OPUS_PT, b"now", (0, 4, 8))
    assert primary(red_payload(b"only")) == (OPUS_PT, b"only", (0,))


def test_renumbering_touches_only_the_block_headers():
    red = red_payload(b"now\x6f", (960, b"\x6fbefore"))
    payload = bytearray(b"\x99" * 12 + red)
    renumber(payload, 12, primary(red)[2], OPUS_PT, 96)
    assert primary(bytes(payload[12:]))[:2] == (96, b"now\x6f")
    assert payload[:12] == b"\x99" * 12
    assert payload[12] == 0x80 | 96 and payload[17:24] == b"\x6fbefore"


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x80\x00\x00", b"\xef\x00\x00\x09\x6f" + b"x" * 8, bytes([0xEF, 0, 0, 0]) * 20],
    ids=["empty", "short header", "length past the end", "endless headers"],
)
def test_malformed_red_is_an_error_not_a_crash(payload):
    with pytest.raises(RedError):
        primary(payload)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_red_error(data):
    try:
        pt, rest, headers = primary(data)
    except RedError:
        return
    assert 0 <= pt < 128 and len(rest) < len(data)
    buf = bytearray(data)
    renumber(buf, 0, headers, OPUS_PT, 96)
    assert len(buf) == len(data) and primary(bytes(buf))[1] == rest


# -- what is negotiated -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate() -> RTCCertificate:
    return RTCCertificate.generateCertificate()


def make_core(certificate: RTCCertificate, red: bool = True) -> WorkerCore:
    settings = MediaSettings(audio_red=red)
    return WorkerCore(
        certificate, "127.0.0.1", 40000, lambda data, addr: None, lambda name, data: None, settings
    )


def audio_answer(core: WorkerCore, offer: str) -> list[str]:
    answer = core.handle(
        "publish", {"room": "r", "session": "pub", "identity": "lead", "offer": offer}, 0.0
    )["answer"]
    return sections(answer)[1]


def test_chromium_is_asked_for_red_first_unless_it_is_turned_off(certificate):
    audio = audio_answer(make_core(certificate), OFFER)
    assert audio[0].endswith(" 63 111") and "a=fmtp:63 111/111" in audio
    audio = audio_answer(make_core(certificate, red=False), OFFER)
    assert audio[0].endswith(" 111") and not any("red" in line for line in audio)


def test_red_over_another_codec_is_not_taken(certificate):
    audio = audio_answer(
        make_core(certificate), OFFER.replace("a=fmtp:63 111/111", "a=fmtp:63 111/9")
    )
    assert audio[0].endswith(" 111") and not any("red" in line for line in audio)


def test_a_whep_viewer_that_offers_red_gets_it_and_one_that_does_not_gets_opus(certificate):
    core = make_core(certificate)
    audio_answer(core, OFFER)
    producers = [p.id for p in core.sessions["pub"].producers]
    for offer, expect_red in (
        (viewer_offer(), True),
        (viewer_offer().replace(" 111 63 ", " 111 "), False),
    ):
        session = f"v{int(expect_red)}"
        answer = core.handle(
            "view",
            {"room": "r", "session": session, "producers": producers, "offer": offer},
            0.0,
        )["answer"]
        audio = sections(answer)[1]
        assert ("a=rtpmap:63 red/48000/2" in audio) is expect_red, audio
        consumer = next(c for c in core.sessions[session].consumers if c.kind == "audio")
        assert consumer.red_pt == (RED_PT if expect_red else None)


# -- what each viewer gets --------------------------------------------------------------------


def test_red_goes_as_sent_to_a_red_viewer_and_as_plain_opus_to_the_others():
    timers = TimerQueue()
    pub, _ = sansio.plain(timers, "pub", PUBLISHER_ADDR, now=1.0)
    source = sansio.producer(pub, "audio", [Encoding(ssrc=SSRC)])
    source.red_pt = RED_PT
    pub.add_producer(source)
    red_view, red_sock = sansio.plain(timers, "red", VIEWER_ADDR, now=1.0)
    red_consumer = sansio.consumer(red_view, source)
    red_consumer.pt, red_consumer.red_pt = 96, 97  # the viewer numbers Opus and RED its way
    opus_view, opus_sock = sansio.plain(timers, "opus", VIEWER_ADDR, now=1.0)
    sansio.consumer(opus_view, source)

    payload = red_payload(b"frame 2", (960, b"frame 1"))
    pub.receive(rtp(SSRC, 10, 1920, payload, pt=RED_PT), PUBLISHER_ADDR, 1.0)
    pub.receive(rtp(SSRC, 11, 2880, b"plain opus", pt=OPUS_PT), PUBLISHER_ADDR, 1.02)
    pub.receive(rtp(SSRC, 12, 3840, b"\x80\x00", pt=RED_PT), PUBLISHER_ADDR, 1.04)  # malformed

    got_red = red_sock.rtp()
    assert [p.pt for p in got_red] == [97, 96]
    assert primary(got_red[0].payload)[:2] == (96, b"frame 2")
    assert got_red[0].payload.endswith(b"frame 1frame 2")
    got_opus = opus_sock.rtp()
    assert [(p.pt, p.payload) for p in got_opus] == [
        (OPUS_PT, b"frame 2"),
        (OPUS_PT, b"plain opus"),
    ]
    # Numbering and timing as for any audio: the primary's timestamp is the packet's.
    assert got_opus[1].seq == (got_opus[0].seq + 1) & 0xFFFF
    assert got_opus[1].ts - got_opus[0].ts == 960
    assert got_red[1].ts - got_red[0].ts == 960
    # The malformed RED packet (seq 12) reached neither viewer; the publisher's stream
    # goes on.
    pub.receive(rtp(SSRC, 13, 4800, payload, pt=RED_PT), PUBLISHER_ADDR, 1.06)
    assert len(red_sock.rtp()) == 1 and len(opus_sock.rtp()) == 1


def test_a_pipe_carries_red_as_sent_and_the_far_worker_strips_it_for_its_viewers():
    """Another worker's viewers get the publisher's RED too (a pipe is the packets
    unchanged but for the SSRC, and ``pipe_in`` tells the far producer the RED number)."""
    timers = TimerQueue()
    pub, _ = sansio.plain(timers, "pub", PUBLISHER_ADDR, now=1.0)
    source = sansio.producer(pub, "audio", [Encoding(ssrc=SSRC)])
    source.red_pt = RED_PT
    pub.add_producer(source)
    pipe_out, pipe_sock = sansio.plain(timers, "pipe-a", ("127.0.0.1", 9999), now=1.0)
    pipe = PipeConsumer("pipe", source, pipe_out, ExtensionLayout({}, ""))
    pipe_out.add_consumer(pipe)
    pipe_in, _ = sansio.plain(timers, "pipe-b", pipe_sock.local, now=1.0)
    far = sansio.producer(pipe_in, "audio", [Encoding(ssrc=s) for s in pipe.out_ssrcs])
    far.red_pt = RED_PT
    pipe_in.add_producer(far)
    viewer, viewer_sock = sansio.plain(timers, "far-view", VIEWER_ADDR, now=1.0)
    sansio.consumer(viewer, far)

    payload = red_payload(b"frame 2", (960, b"frame 1"))
    pub.receive(rtp(SSRC, 10, 1920, payload, pt=RED_PT), PUBLISHER_ADDR, 1.0)
    piped = [d for d in pipe_sock.take() if not 192 <= d[1] <= 223]
    assert [(p.pt, p.payload) for p in map(parse, piped)] == [(RED_PT, payload)]
    for data in piped:
        pipe_in.receive(data, pipe_sock.local, 1.0)
    assert [(p.pt, p.payload) for p in viewer_sock.rtp()] == [(OPUS_PT, b"frame 2")]


@pytest.mark.parametrize("keeps_red", [True, False], ids=["chromium", "aiortc"])
def test_a_subscriber_is_offered_red_and_gets_it_only_if_its_answer_keeps_it(
    certificate, keeps_red
):
    core = make_core(certificate)
    audio_answer(core, OFFER)
    audio_id = next(p.id for p in core.sessions["pub"].producers if p.kind == "audio")
    core.handle("subscriber", {"session": "sub", "room": "r"}, 0.0)
    offer = core.handle(
        "subscriber_offer",
        {"session": "sub", "consumers": [{"producer": audio_id, "stream": "s", "track": "t"}]},
        0.0,
    )
    audio = sections(offer["offer"])[0]
    opus_pt, red_pt = audio[0].split()[-1], audio[0].split()[-2]  # RED listed first
    assert f"a=rtpmap:{red_pt} red/48000/2" in audio
    assert f"a=fmtp:{red_pt} {opus_pt}/{opus_pt}" in audio
    answer = offer["offer"].replace("a=setup:actpass", "a=setup:active")
    answer = answer.replace("a=sendonly", "a=recvonly")
    if not keeps_red:  # aiortc answers with the codecs it has
        answer = answer.replace(f" {red_pt} {opus_pt}\r\n", f" {opus_pt}\r\n")
        answer = "".join(line for line in answer.splitlines(True) if f":{red_pt} " not in line)
    core.handle(
        "subscriber_answer", {"session": "sub", "answer": answer, "version": offer["version"]}, 0.0
    )
    (consumer,) = core.sessions["sub"].consumers
    assert consumer.red_pt == (int(red_pt) if keeps_red else None)
