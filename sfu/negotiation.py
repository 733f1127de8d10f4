"""SDP offer/answer for WebRTC transports: what to produce and consume, and the answer.

Pure decisions over :mod:`sfu.sdp` descriptions: which offered sections become producers
(with which codec, feedback and encodings), which become consumers of which producer,
and the ICE-lite answer that says so. The worker keeps the resulting objects; nothing
here keeps state between calls.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from aiortc.rtcdtlstransport import RTCCertificate

from sfu import sdp
from sfu.consumer import SimpleConsumer, consumer_for
from sfu.control import ControlError
from sfu.dtls import DtlsError, DtlsSession
from sfu.ice import Address, IceLiteSession, new_credentials
from sfu.producer import Producer
from sfu.rtp import ExtensionLayout
from sfu.streams import Encoding
from sfu.transport import TransportContext
from sfu.webrtc_transport import WebRtcTransport

MAX_TRACKS_PER_SESSION = 8


def parse_offer(text: object) -> sdp.SessionDescription:
    if not isinstance(text, str):
        raise ControlError("bad_sdp", "no SDP offer")
    try:
        offer = sdp.parse(text)
        offer.bundled()
    except sdp.SdpError as exc:
        raise ControlError("bad_sdp", str(exc)) from None
    return offer


@dataclass
class PublishPlan:
    answers: list[sdp.AnswerSection]
    added: list[Producer]
    kept: list[Producer]
    removed: list[Producer]


class Negotiator:
    """Makes WebRTC transports and answers offers for one worker."""

    def __init__(
        self,
        certificate: RTCCertificate,
        fingerprint: tuple[str, str],
        address: str,
        port: int,
        context: TransportContext,
        sender: Callable[[bytes, Address], object],
        tcp_port: int = 0,
        tcp_sender: Callable[[bytes, Address], object] | None = None,
    ) -> None:
        self.certificate = certificate
        self.fingerprint = fingerprint
        self.address = address
        self.port = port
        self.context = context
        self.settings = context.settings
        self.sender = sender
        self.tcp_port = tcp_port  # the worker's passive ICE-TCP port; 0 offers none
        self.tcp_sender = tcp_sender

    def transport(
        self,
        session_id: str,
        room: str,
        identity: str,
        offer: sdp.SessionDescription | None,
        now: float,
        ufrag_taken: Callable[[str], bool],
    ) -> WebRtcTransport:
        """A transport for a client's offer, or (``offer`` None) one the server will offer
        on, which learns the client's ICE and DTLS parameters from its answer."""
        local_ufrag, local_pwd = new_credentials()
        while ufrag_taken(local_ufrag):
            local_ufrag, local_pwd = new_credentials()
        remote_ufrag = ""
        dtls: DtlsSession | None = None
        extensions: dict[str, int] = {}
        if offer is not None:
            try:
                remote_ufrag, _remote_pwd = offer.ice_credentials()
                setup = offer.dtls_setup()
                if setup not in ("actpass", "active"):
                    raise ControlError(
                        "bad_sdp", f"a=setup:{setup} is not supported: the server is DTLS passive"
                    )
                dtls = DtlsSession(self.certificate, offer.dtls_fingerprints(), label=session_id)
                for section in offer.bundled():
                    extensions.update(section.extensions)
            except (sdp.SdpError, DtlsError) as exc:
                raise ControlError("bad_sdp", str(exc)) from None
        ice = IceLiteSession(
            local_ufrag, local_pwd, remote_ufrag, now, self.settings.consent_timeout
        )
        return WebRtcTransport(
            session_id,
            room,
            identity,
            ice,
            dtls,
            self.sender,
            self.context,
            now,
            extensions,
            tcp_sender=self.tcp_sender,
        )

    def describe(
        self,
        transport: WebRtcTransport,
        sections: list[sdp.AnswerSection],
        setup: str = "passive",
        version: int = 2,
        group: bool = True,
    ) -> str:
        return sdp.write_answer(
            sections,
            ice_ufrag=transport.ice.local_ufrag,
            ice_pwd=transport.ice.local_pwd,
            fingerprint=self.fingerprint,
            address=self.address,
            port=self.port,
            session_id=transport.sdp_session_id,
            setup=setup,
            version=version,
            group=group,
            tcp_port=self.tcp_port,
        )

    # -- publishing ---------------------------------------------------------------------------
    def publish(self, transport: WebRtcTransport, offer: sdp.SessionDescription) -> PublishPlan:
        """One producer per sending section we can forward. On a renegotiation, sections
        still sending keep their producer, new ones add producers, the rest close theirs."""
        bundled = offer.bundled()
        current = {p.mid: p for p in transport.producers if not p.closed}
        plan = PublishPlan([], [], [], [])
        for section in offer.media:
            sending = (
                section in bundled
                and section.kind in ("audio", "video")
                and section.direction in ("sendonly", "sendrecv")
                and section.proto.upper() == "UDP/TLS/RTP/SAVPF"
                and section.mid not in transport.retired_mids  # an unpublished track stays gone
            )
            previous = current.get(section.mid or "")
            if previous is not None and sending:
                codec: sdp.Codec | None = previous.codec
            elif sending and len(current) + len(plan.added) < MAX_TRACKS_PER_SESSION:
                codec = sdp.choose_codec(section)
            else:
                codec = None
            answer = sdp.AnswerSection(offer=section, codec=codec)
            plan.answers.append(answer)
            if codec is None or section.mid is None:
                answer.codec = sdp.choose_codec(section) if section in bundled else None
                continue
            # transport-cc where offered (sfu.feedback.twcc answers it); REMB stays the cap.
            feedback = sdp.negotiate_feedback(section.kind, codec)
            use_nack = ("nack", "") in feedback
            answer.direction = "recvonly"
            answer.feedback = feedback
            answer.use_rtx = use_nack and codec.rtx_payload_type is not None
            answer.extensions = {
                uri: ext_id
                for uri, ext_id in section.extensions.items()
                if uri in sdp.PUBLISH_EXTENSIONS[section.kind]
            }
            if section.kind == "video" and sdp.URI_RID in answer.extensions:
                answer.recv_rids = section.send_rids()
            if previous is not None:
                if previous.red_pt is not None:
                    answer.red = sdp.find_red(section, codec)
                plan.kept.append(previous)
                continue
            if section.kind == "audio" and self.settings.audio_red:
                answer.red = sdp.find_red(section, codec)
            plan.added.append(
                Producer(
                    f"{transport.session_id}-{section.mid}",
                    transport,
                    section.kind,
                    section.mid,
                    codec,
                    encodings_of(section),
                    use_nack=use_nack,
                    use_rtx=answer.use_rtx,
                    keyframe_interval=self.settings.keyframe_interval,
                    red_pt=None if answer.red is None else answer.red.payload_type,
                )
            )
        plan.removed = [p for p in current.values() if p not in plan.kept]
        return plan

    # -- viewing --------------------------------------------------------------------------------
    def view(
        self, transport: WebRtcTransport, offer: sdp.SessionDescription, producers: list[Producer]
    ) -> tuple[list[sdp.AnswerSection], list[SimpleConsumer]]:
        """A client-offered receive connection (WHEP): each receiving section takes the
        first unassigned producer of its kind whose codec the client offered."""
        bundled = offer.bundled()
        available = list(producers)
        answers: list[sdp.AnswerSection] = []
        consumers: list[SimpleConsumer] = []
        cname = secrets.token_hex(8)
        for section in offer.media:
            answer = sdp.AnswerSection(offer=section, codec=None)
            answers.append(answer)
            usable = (
                section in bundled
                and section.mid is not None
                and section.direction in ("recvonly", "sendrecv")
                and section.proto.upper() == "UDP/TLS/RTP/SAVPF"
            )
            if not usable:
                continue
            producer = next((p for p in available if p.kind == section.kind), None)
            if producer is None:
                # Nothing to send here: keep the section in the bundle, inactive, so every
                # client stack accepts it.
                answer.codec = sdp.choose_codec(section)
                continue
            codec = sdp.match_codec(section, producer.codec)
            if codec is None:
                continue
            available.remove(producer)
            feedback = sdp.negotiate_feedback(section.kind, codec)
            use_rtx = ("nack", "") in feedback and codec.rtx_payload_type is not None
            negotiated = {
                uri: ext_id
                for uri, ext_id in section.extensions.items()
                if uri in sdp.VIEW_EXTENSIONS[section.kind]
            }
            consumer = consumer_for(
                f"{transport.session_id}-{section.mid}",
                producer,
                transport,
                codec.payload_type,
                codec.rtx_payload_type if use_rtx else None,
                ExtensionLayout(negotiated, section.mid or ""),
            )
            if producer.red_pt is not None:
                answer.red = sdp.find_red(section, codec)
                consumer.red_pt = None if answer.red is None else answer.red.payload_type
            answer.codec = codec
            answer.direction = "sendonly"
            answer.feedback = feedback
            answer.use_rtx = use_rtx
            answer.extensions = negotiated
            answer.send_ssrc = consumer.ssrc
            answer.send_rtx_ssrc = consumer.rtx_ssrc
            answer.cname = cname
            answer.stream_id = (
                f"telebridge-{producer.transport.identity or producer.transport.session_id}"
            )
            answer.track_id = f"{producer.kind}-{producer.mid}"
            consumers.append(consumer)
        return answers, consumers


def encodings_of(section: sdp.MediaSection) -> list[Encoding]:
    """The encodings a sending section announces, lowest first.

    ``a=ssrc-group:SIM`` lists the simulcast SSRCs (each may have an FID group for its
    RTX); ``a=simulcast:send`` names rid encodings, whose SSRCs are learned from the
    rtp-stream-id extension of their first packets (and RTX from repaired-rtp-stream-id);
    otherwise a single signalled SSRC, or none (the SSRC is learned from the first
    packets, by MID). Both simulcast forms list the lowest encoding first, as
    telebridge.js and Chromium's own simulcast do."""
    for semantics, ssrcs in section.ssrc_groups:
        if semantics == "SIM" and len(ssrcs) > 1:
            return [Encoding(ssrc=ssrc, rtx_ssrc=section.rtx_ssrc_of(ssrc)) for ssrc in ssrcs]
    rids = section.send_rids()
    if section.kind == "video" and rids and sdp.URI_RID in section.extensions:
        return [Encoding(rid=rid) for rid in rids]
    primaries = section.primary_ssrcs()
    if len(primaries) == 1 and not section.rids:
        return [Encoding(ssrc=primaries[0], rtx_ssrc=section.rtx_ssrc_of(primaries[0]))]
    return [Encoding()]
