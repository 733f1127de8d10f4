"""SDP: the real Chromium 156 simulcast offer in, the SFU's answer out, bad offers refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.sdp import SessionDescription as AiortcSessionDescription

from sfu import sdp
from sfu.control import ControlError
from sfu.worker import WorkerCore

# Bytes, not read_text(): universal newlines would turn the capture's CRLF into LF.
OFFER = (Path(__file__).parent / "data" / "chromium-156-simulcast-offer.sdp").read_bytes().decode()
assert OFFER.startswith("v=0\r\n")
DATA = Path(__file__).parent / "data"
GST_WHIP = (DATA / "gstreamer-1.22-whip-client-sendonly-max-bundle.sdp").read_bytes().decode()
GST_WHEP = (DATA / "gstreamer-1.22-webrtcbin-recvonly-max-bundle.sdp").read_bytes().decode()
FINGERPRINT = "39:96:C8:6A:74:5A:95:5C:02:81:C1:70:13:18:BA:A6:D2:81:AC:6D:04:0A:16:70:BA:CD:2E:58:68:10:E2:C8"


@pytest.fixture(scope="module")
def certificate() -> RTCCertificate:
    return RTCCertificate.generateCertificate()


@pytest.fixture
def core(certificate) -> WorkerCore:
    return WorkerCore(
        certificate, "127.0.0.1", 40000, lambda data, addr: None, lambda name, data: None
    )


def producers_of(core: WorkerCore, session: str) -> list[str]:
    return [p.id for p in core.sessions[session].producers]


def publish(core: WorkerCore, offer: str, session: str = "pub") -> dict:
    return core.handle(
        "publish", {"room": "r", "session": session, "identity": "lead", "offer": offer}, 0.0
    )


def viewer_offer() -> str:
    """The Chromium offer turned into a receive-only one, as a WHEP viewer would send."""
    lines = [
        line.replace("a=sendonly", "a=recvonly")
        for line in OFFER.splitlines()
        if not line.startswith(("a=rid:", "a=simulcast:", "a=ssrc"))
    ]
    return "\r\n".join(lines) + "\r\n"


def sections(answer: str) -> list[list[str]]:
    """The answer's media sections as lists of lines (session part dropped)."""
    out: list[list[str]] = []
    for line in answer.split("\r\n"):
        if line.startswith("m="):
            out.append([line])
        elif out and line:
            out[-1].append(line)
    return out


def session_part(answer: str) -> list[str]:
    return answer.split("\r\nm=")[0].split("\r\n")


# -- parsing the real offer ----------------------------------------------------------------


def test_parse_chromium_offer_session_level():
    offer = sdp.parse(OFFER)
    assert offer.bundle == ["0", "1"]
    assert [m.kind for m in offer.media] == ["video", "audio"]
    assert [m.mid for m in offer.media] == ["0", "1"]
    assert offer.ice_credentials() == ("d+QB", "FVLEXfQPsqPQa3EVPiSTuegr")
    assert offer.dtls_fingerprints() == [("sha-256", FINGERPRINT)]
    assert offer.dtls_setup() == "actpass"
    assert [m.mid for m in offer.bundled()] == ["0", "1"]


def test_parse_chromium_offer_video():
    video = sdp.parse(OFFER).media[0]
    assert video.direction == "sendonly"
    assert video.proto == "UDP/TLS/RTP/SAVPF"
    assert video.rtcp_mux and video.rtcp_rsize
    vp8 = video.codecs[0]
    assert (vp8.payload_type, vp8.name, vp8.clock_rate, vp8.rtx_payload_type) == (
        96,
        "vp8",
        90000,
        97,
    )
    assert ("nack", "") in vp8.feedback and ("nack", "pli") in vp8.feedback
    assert ("transport-cc", "") in vp8.feedback and ("goog-remb", "") in vp8.feedback
    assert [c.payload_type for c in video.codecs] == [int(f) for f in video.formats]
    h264 = {c.payload_type: c for c in video.codecs if c.name == "h264"}
    assert set(h264) == {102, 104, 108, 114, 116, 39}
    assert h264[102].fmtp["packetization-mode"] == "1" and h264[102].rtx_payload_type == 103
    assert h264[104].fmtp["profile-level-id"] == "42001f"
    assert video.rids == [("q", "send"), ("h", "send"), ("f", "send")]
    assert video.simulcast == "send q;h;f"
    assert video.ssrcs == {} and video.primary_ssrcs() == []  # no a=ssrc: SSRCs are learned
    assert video.extensions[sdp.URI_MID] == 9
    assert video.extensions[sdp.URI_RID] == 10
    assert video.extensions[sdp.URI_RRID] == 11
    assert video.extensions[sdp.URI_TWCC] == 4
    assert video.extensions[sdp.URI_ABS_SEND_TIME] == 2
    assert video.extensions[sdp.URI_VIDEO_ORIENTATION] == 3
    assert sdp.choose_codec(video) is vp8
    assert sdp.choose_codec(video, ("h264",)) is h264[102], "H.264 packetization-mode 1 first"


def test_parse_chromium_offer_audio():
    audio = sdp.parse(OFFER).media[1]
    opus = audio.codecs[0]
    assert (opus.payload_type, opus.name, opus.clock_rate, opus.channels) == (111, "opus", 48000, 2)
    assert opus.fmtp == {"minptime": "10", "useinbandfec": "1"}
    assert opus.rtpmap() == "opus/48000/2"
    assert audio.extensions == {
        sdp.URI_AUDIO_LEVEL: 12,
        sdp.URI_ABS_SEND_TIME: 2,
        sdp.URI_TWCC: 4,
        sdp.URI_MID: 9,
    }
    assert audio.ssrcs[2072071564]["cname"] == "JJX1D2mCyuU77w/V"
    assert audio.primary_ssrcs() == [2072071564]
    assert sdp.choose_codec(audio) is opus


def test_lf_only_line_endings_parse_the_same():
    assert sdp.parse(OFFER.replace("\r\n", "\n")) == sdp.parse(OFFER)


# -- the publisher's answer ----------------------------------------------------------------


def test_publish_answer_to_chromium_offer(core):
    result = publish(core, OFFER)
    answer = result["answer"]
    assert answer.endswith("\r\n") and "\n" not in answer.replace("\r\n", "")
    head = session_part(answer)
    assert head[0] == "v=0"
    assert "a=ice-lite" in head
    assert "a=group:BUNDLE 0 1" in head
    video, audio = sections(answer)

    assert video[0] == "m=video 40000 UDP/TLS/RTP/SAVPF 96 97"
    # RED first: Chromium then sends each Opus frame with a copy of the one before.
    assert audio[0] == "m=audio 40000 UDP/TLS/RTP/SAVPF 63 111"
    for section, mid in ((video, "0"), (audio, "1")):
        assert f"a=mid:{mid}" in section
        assert "a=setup:passive" in section
        assert "a=recvonly" in section
        assert "a=rtcp-mux" in section
        assert "a=rtcp-rsize" in section
        assert f"a=fingerprint:sha-256 {core.fingerprint[1]}" in section
        assert "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid" in section
        # transport-cc feedback (our estimate of their uplink) with REMB as the cap.
        assert (
            "a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
            in section
        )
        assert not any(line.startswith("a=ssrc") for line in section), (
            "a receive-only answer has no SSRCs"
        )
        assert any(
            re.fullmatch(r"a=candidate:1 1 udp \d+ 127\.0\.0\.1 40000 typ host generation 0", line)
            for line in section
        )

    rtpmaps = [line for line in video if line.startswith("a=rtpmap:")]
    assert rtpmaps == ["a=rtpmap:96 VP8/90000", "a=rtpmap:97 rtx/90000"]
    assert "a=fmtp:97 apt=96" in video
    assert {line for line in video if line.startswith("a=rtcp-fb:")} == {
        "a=rtcp-fb:96 goog-remb",
        "a=rtcp-fb:96 transport-cc",
        "a=rtcp-fb:96 ccm fir",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
    }
    assert [line for line in audio if line.startswith("a=rtcp-fb:")] == [
        "a=rtcp-fb:111 transport-cc"
    ]
    video_ext = {line for line in video if line.startswith("a=extmap:")}
    assert "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in video_ext
    assert "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id" in video_ext
    assert not any("abs-send-time" in line or "toffset" in line for line in video_ext)

    assert [line for line in audio if line.startswith("a=rtpmap:")] == [
        "a=rtpmap:63 red/48000/2",
        "a=rtpmap:111 opus/48000/2",
    ]
    assert "a=fmtp:63 111/111" in audio
    assert "a=fmtp:111 minptime=10;useinbandfec=1" in audio
    assert "a=extmap:12 urn:ietf:params:rtp-hdrext:ssrc-audio-level" in audio

    # One ICE ufrag/pwd for the bundle, and the worker routes by it.
    ufrags = {
        line for section in (video, audio) for line in section if line.startswith("a=ice-ufrag:")
    }
    assert len(ufrags) == 1
    assert ufrags.pop().split(":", 1)[1] in core.demux.by_ufrag
    assert [t["kind"] for t in result["tracks"]] == ["video", "audio"]
    assert [t["codec"] for t in result["tracks"]] == ["vp8", "opus"]


def test_answer_parses_with_our_parser_and_aiortc(core):
    answer = publish(core, OFFER)["answer"]
    ours = sdp.parse(answer)
    assert ours.bundle == ["0", "1"]
    assert [m.direction for m in ours.media] == ["recvonly", "recvonly"]
    assert ours.dtls_setup() == "passive"
    theirs = AiortcSessionDescription.parse(answer)
    assert [m.kind for m in theirs.media] == ["video", "audio"]
    assert theirs.media[0].dtls.role == "server"
    assert theirs.media[0].ice.iceLite is True
    assert [c.name for c in theirs.media[0].rtp.codecs] == ["VP8", "rtx"]


def test_viewer_answer_offers_transport_cc_and_sends(core):
    publish(core, OFFER)
    answer = core.handle(
        "view",
        {
            "room": "r",
            "session": "view",
            "identity": "v",
            "producers": producers_of(core, "pub"),
            "offer": viewer_offer(),
        },
        0.0,
    )["answer"]
    video, audio = sections(answer)
    assert "a=sendonly" in video and "a=sendonly" in audio
    assert "a=rtcp-fb:96 transport-cc" in video
    assert (
        "a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
        in video
    )
    ssrcs = {line.split()[0] for line in video if line.startswith("a=ssrc:")}
    assert len(ssrcs) == 2, "media and RTX SSRCs"
    assert any(line.startswith("a=ssrc-group:FID ") for line in video)


def test_h264_publisher_answer_keeps_its_fmtp(core):
    lines = OFFER.splitlines()
    m_line = next(i for i, line in enumerate(lines) if line.startswith("m=video"))
    lines[m_line] = "m=video 9 UDP/TLS/RTP/SAVPF 104 107 102 103"
    answer = publish(core, "\r\n".join(lines) + "\r\n")["answer"]
    video = sections(answer)[0]
    assert video[0] == "m=video 40000 UDP/TLS/RTP/SAVPF 102 103", (
        "packetization-mode 1 is chosen over 0"
    )
    assert (
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f" in video
    )


def test_unsupported_section_is_rejected_with_port_zero(core):
    extra = (
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        "c=IN IP4 0.0.0.0\r\n"
        "a=mid:2\r\n"
        "a=sctp-port:5000\r\n"
    )
    offer = OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2") + extra
    answer = publish(core, offer)["answer"]
    assert "a=group:BUNDLE 0 1\r\n" in answer
    rejected = sections(answer)[2]
    assert rejected[0] == "m=application 0 UDP/DTLS/SCTP webrtc-datachannel"
    assert "a=mid:2" in rejected and "a=inactive" in rejected


# -- GStreamer webrtcbin: max-bundle offers (RFC 8843 bundle-only) --------------------------


def one_section(offer: str) -> str:
    """webrtcbin's offer with one transceiver: its first section, no a=group:BUNDLE."""
    head, *media = offer.split("\r\nm=")
    head = "\r\n".join(line for line in head.split("\r\n") if not line.startswith("a=group"))
    return head + "\r\nm=" + media[0].rstrip("\r\n") + "\r\n"


def test_bundle_only_sections_are_part_of_the_bundle():
    offer = sdp.parse(GST_WHIP)
    audio, video = offer.media
    assert (audio.port, audio.bundle_only) == (9, False)
    assert (video.port, video.bundle_only) == (0, True)
    assert offer.tagged() is audio
    assert [m.mid for m in offer.bundled()] == ["audio0", "video1"]
    assert offer.ice_credentials() == (
        "5Bh+jD1O2/jBtLcq1itZc0fxz7IGMJFd",
        "QZTVQVORdGBvBhT/m1i7RfslvxOSIOt3",
    )
    assert offer.dtls_setup() == "actpass"


def test_gstreamer_whip_offer_publishes_audio_and_video(core):
    result = publish(core, GST_WHIP)
    answer = result["answer"]
    assert "a=group:BUNDLE audio0 video1" in session_part(answer)
    audio, video = sections(answer)
    assert audio[0] == "m=audio 40000 UDP/TLS/RTP/SAVPF 100"
    assert video[0] == "m=video 40000 UDP/TLS/RTP/SAVPF 96", "the bundle-only video is accepted"
    assert "a=recvonly" in audio and "a=recvonly" in video
    assert "a=bundle-only" not in video
    assert [(t["kind"], t["codec"]) for t in result["tracks"]] == [
        ("audio", "opus"),
        ("video", "vp8"),
    ]
    theirs = AiortcSessionDescription.parse(answer)
    assert [m.port for m in theirs.media] == [40000, 40000]


def test_gstreamer_whep_offer_receives_audio_and_video(core):
    publish(core, OFFER)
    params = {
        "room": "r",
        "session": "gst-view",
        "identity": "v",
        "producers": producers_of(core, "pub"),
        "offer": GST_WHEP,
    }
    result = core.handle("view", params, 0.0)
    video, audio = sections(result["answer"])
    assert video[0] == "m=video 40000 UDP/TLS/RTP/SAVPF 96"
    assert audio[0] == "m=audio 40000 UDP/TLS/RTP/SAVPF 111", "the bundle-only audio is sent"
    assert "a=sendonly" in video and "a=sendonly" in audio
    assert sorted(t["kind"] for t in result["tracks"]) == ["audio", "video"]


def test_one_section_offer_without_a_bundle_group_is_answered_without_one(core):
    offer = one_section(GST_WHIP)
    assert "a=group" not in offer and offer.count("m=") == 1
    result = publish(core, offer)
    assert [t["kind"] for t in result["tracks"]] == ["audio"]
    assert not any(line.startswith("a=group") for line in session_part(result["answer"])), (
        "RFC 8843 7.3: no BUNDLE group in an answer to an offer without one"
    )
    (audio,) = sections(result["answer"])
    assert audio[0] == "m=audio 40000 UDP/TLS/RTP/SAVPF 100"


def test_port_zero_without_bundle_only_disables_the_section(core):
    offer = GST_WHIP.replace("a=bundle-only\r\n", "")
    result = publish(core, offer)
    assert [t["kind"] for t in result["tracks"]] == ["audio"]
    assert "a=group:BUNDLE audio0\r\n" in result["answer"]
    assert sections(result["answer"])[1][0].startswith("m=video 0 ")


# -- bad offers ----------------------------------------------------------------------------


def _drop(prefix: str) -> str:
    return "\r\n".join(line for line in OFFER.splitlines() if not line.startswith(prefix)) + "\r\n"


def _only_codecs() -> str:
    """Both sections offer only codecs we cannot forward (VP9, G722)."""
    out = []
    for line in OFFER.splitlines():
        if line.startswith("m=video"):
            line = "m=video 9 UDP/TLS/RTP/SAVPF 98 99"
        elif line.startswith("m=audio"):
            line = "m=audio 9 UDP/TLS/RTP/SAVPF 9"
        out.append(line)
    return "\r\n".join(out) + "\r\n"


BAD_OFFERS = {
    "empty": ("", "v=0"),
    "no-v-line": (OFFER.replace("v=0\r\n", "", 1), "v=0"),
    "v-not-first": ("s=-\r\n" + OFFER, "v=0"),
    "no-fingerprint": (_drop("a=fingerprint"), "fingerprint"),
    "md5-fingerprint": (OFFER.replace("a=fingerprint:sha-256", "a=fingerprint:md5"), "fingerprint"),
    "fingerprint-without-value": (
        OFFER.replace(f"sha-256 {FINGERPRINT}", "sha-256"),
        "fingerprint",
    ),
    "no-bundle": (_drop("a=group:BUNDLE"), "BUNDLE"),
    "bundle-of-unknown-mids": (OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE x y"), "BUNDLE"),
    "no-ice-ufrag": (_drop("a=ice-ufrag"), "ice-ufrag"),
    "no-ice-pwd": (_drop("a=ice-pwd"), "ice-pwd"),
    "unsupported-codecs-only": (_only_codecs(), "supported codec"),
    "no-sending-section": (OFFER.replace("a=sendonly", "a=recvonly"), "sending"),
    "setup-passive": (OFFER.replace("a=setup:actpass", "a=setup:passive"), "setup"),
    "m-line-too-short": (
        OFFER.replace("m=audio 32846 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", "m=audio"),
        "m= line",
    ),
    "m-line-port-garbage": (OFFER.replace("m=audio 32846", "m=audio http"), "port"),
    "m-line-port-out-of-range": (OFFER.replace("m=audio 32846", "m=audio 70000"), "port"),
    "not-key-value": (OFFER.replace("s=-", "garbage line"), "line 3"),
    "rtpmap-garbage": (OFFER.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8"), "rtpmap"),
    "rtpmap-pt-out-of-range": (
        OFFER.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:300 VP8/90000"),
        "payload type",
    ),
    "rtpmap-superscript-pt": (
        OFFER.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:9\u00b2 VP8/90000"),
        "payload type",
    ),
    "extmap-id-garbage": (OFFER.replace("a=extmap:9 ", "a=extmap:nine "), "extmap"),
    "bad-mid": (OFFER.replace("a=mid:0", "a=mid:<script>"), "mid"),
    "duplicate-mid": (OFFER.replace("a=mid:1", "a=mid:0"), "mid"),
    "control-character": (
        OFFER.replace("a=fmtp:111 minptime=10", "a=fmtp:111 minptime=10\ra=inject"),
        "control",
    ),
    "nul-byte": (OFFER.replace("s=-", "s=\x00"), "control"),
    "ssrc-garbage": (OFFER.replace("a=ssrc:2072071564 cname", "a=ssrc:abc cname"), "ssrc"),
    "too-large": (OFFER + "a=x-pad:" + "x" * sdp.MAX_SDP_BYTES + "\r\n", "larger"),
    # Values that could never work (RFC 8839, 8122, 8842, 5761): refused now, not by a
    # session that waits for a handshake that cannot happen.
    "fingerprint-not-hex": (OFFER.replace(FINGERPRINT, FINGERPRINT[:-2] + "ZZ"), "hex"),
    "fingerprint-too-short": (OFFER.replace(FINGERPRINT, FINGERPRINT[:-3]), "32 bytes"),
    "ice-pwd-too-short": (
        OFFER.replace("a=ice-pwd:FVLEXfQPsqPQa3EVPiSTuegr", "a=ice-pwd:FVLEXfQPsqPQa3EVPiSTu"),
        "ice-pwd must be 22",
    ),
    "ice-ufrag-bad-character": (OFFER.replace("a=ice-ufrag:d+QB", "a=ice-ufrag:d+Q!"), "ice-ufrag"),
    "ice-ufrag-too-short": (OFFER.replace("a=ice-ufrag:d+QB", "a=ice-ufrag:d+Q"), "ice-ufrag"),
    "no-setup": (_drop("a=setup"), "a=setup"),
    "setup-unknown-role": (OFFER.replace("a=setup:actpass", "a=setup:whatever"), "a=setup"),
    "no-rtcp-mux": (_drop("a=rtcp-mux"), "rtcp-mux"),
    "bundle-only-everywhere": (GST_WHIP.replace("m=audio 9 ", "m=audio 0 "), "port"),
    "two-sections-no-bundle": (GST_WHIP.replace("a=group:BUNDLE audio0 video1\r\n", ""), "BUNDLE"),
}


@pytest.mark.parametrize("name", list(BAD_OFFERS))
def test_bad_offer_is_bad_sdp_with_a_reason(core, name):
    offer, reason = BAD_OFFERS[name]
    with pytest.raises(ControlError) as info:
        publish(core, offer)
    assert info.value.code == "bad_sdp"
    assert info.value.message
    if reason is not None:
        assert reason.lower() in info.value.message.lower(), info.value.message
    assert core.sessions == {} and core.demux.by_ufrag == {}, (
        "a refused offer leaves no state behind"
    )


def test_offer_that_is_not_a_string(core):
    with pytest.raises(ControlError) as info:
        core.handle("publish", {"room": "r", "session": "s", "identity": "i", "offer": 42}, 0.0)
    assert info.value.code == "bad_request" and "offer" in info.value.message


def test_subscribe_with_bad_offer_is_bad_sdp(core):
    publish(core, OFFER)
    for offer in (_drop("a=fingerprint").replace("a=sendonly", "a=recvonly"), "v=0\r\n"):
        with pytest.raises(ControlError) as info:
            params = {
                "room": "r",
                "session": "v",
                "identity": "v",
                "producers": producers_of(core, "pub"),
                "offer": offer,
            }
            core.handle("view", params, 0.0)
        assert info.value.code == "bad_sdp"
    assert set(core.sessions) == {"pub"}


def test_subscribe_to_nobody_is_not_found(core):
    with pytest.raises(ControlError) as info:
        core.handle(
            "view",
            {
                "room": "r",
                "session": "v",
                "identity": "v",
                "producers": ["x-0"],
                "offer": viewer_offer(),
            },
            0.0,
        )
    assert info.value.code == "not_found"


def test_parse_raises_only_sdp_error_on_unicode_digits():
    """str.isdigit() accepts '²' but int() refuses it: that must be an SdpError, not ValueError."""
    parsed = sdp.parse(
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 1\u00b2\r\na=rtpmap:1 opus/48000/2\r\na=mid:0\r\n"
    )
    assert parsed.media[0].codecs == [], "a format that is not an ASCII number names no codec"
    with pytest.raises(sdp.SdpError):
        sdp.parse("v=0\r\nm=audio \u0663 UDP/TLS/RTP/SAVPF 111\r\n")  # Arabic-Indic 3 as a port
    parsed = sdp.parse(OFFER.replace("a=fmtp:97 apt=96", "a=fmtp:97 apt=9\u00b2"))
    assert parsed.media[0].codecs[0].rtx_payload_type is None
