"""Server-driven subscriptions: the SFU offers, the client answers, again whenever tracks
come and go (the conferencing protocol's subscribe connection). Sans-I/O.

Each offered m= section is one consumer of one producer. Sections are never reused: a
removed track's section turns inactive and a new track gets a new mid, which every
browser and aiortc accept. Payload types are this connection's own (producers from
different publishers may number the same codec differently, and BUNDLE needs one
meaning per number), and the consumer rewrites them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sfu import sdp
from sfu.consumer import SimpleConsumer, consumer_for
from sfu.producer import Producer
from sfu.rtp import ExtensionLayout
from sfu.webrtc_transport import WebRtcTransport

logger = logging.getLogger(__name__)

# Header extension ids we offer (answers keep the ids they accept).
OFFER_EXTENSIONS = {
    "audio": {sdp.URI_MID: 1, sdp.URI_ABS_SEND_TIME: 2, sdp.URI_TWCC: 3, sdp.URI_AUDIO_LEVEL: 4},
    "video": {
        sdp.URI_MID: 1,
        sdp.URI_ABS_SEND_TIME: 2,
        sdp.URI_TWCC: 3,
        sdp.URI_VIDEO_ORIENTATION: 5,
    },
}
OFFER_FEEDBACK = {
    "audio": [("transport-cc", "")],
    "video": [("nack", ""), ("nack", "pli"), ("ccm", "fir"), ("transport-cc", "")],
}


class OfferError(ValueError):
    """An answer that does not fit the offer (client-facing message)."""


@dataclass
class OfferedSection:
    mid: str
    kind: str
    codec: sdp.Codec  # with this connection's payload types
    consumer: SimpleConsumer | None
    producer_id: str
    stream: str
    track: str
    accepted: bool = False
    red: sdp.Codec | None = None  # redundant audio offered over ``codec`` (sfu/red.py)


def _codec_key(codec: sdp.Codec) -> tuple[object, ...]:
    fmtp = tuple(sorted(codec.fmtp.items()))
    return (codec.name, codec.clock_rate, codec.channels, fmtp)


class SubscriberSession:
    """The offer/answer state of one subscribe connection."""

    def __init__(self, transport: WebRtcTransport) -> None:
        self.transport = transport
        self.sections: list[OfferedSection] = []
        self.version = 0
        self.answered_version = 0
        self.next_mid = 0
        self._pts: dict[tuple[object, ...], tuple[int, int]] = {}
        self._next_pt = 96

    def _payload_types(self, codec: sdp.Codec) -> tuple[int, int]:
        key = _codec_key(codec)
        pts = self._pts.get(key)
        if pts is None:
            if self._next_pt > 126:
                raise OfferError("too many distinct codecs on one connection")
            pts = (self._next_pt, self._next_pt + 1)
            self._next_pt += 2
            self._pts[key] = pts
        return pts

    def update(self, wanted: list[tuple[Producer, str, str]]) -> bool:
        """Make the sections match ``wanted`` (producer, stream id, track id).
        Returns True if the offer changed."""
        wanted_ids = {producer.id for producer, _, _ in wanted}
        changed = False
        for section in self.sections:
            if section.consumer is not None and section.producer_id not in wanted_ids:
                section.consumer.close()
                section.consumer = None
                changed = True
            if section.consumer is not None and section.consumer.closed:  # its producer went away
                section.consumer = None
                changed = True
        present = {s.producer_id for s in self.sections if s.consumer is not None}
        for producer, stream, track in wanted:
            if producer.id in present or producer.closed:
                continue
            pt, rtx_pt = self._payload_types(producer.codec)
            codec = sdp.Codec(
                payload_type=pt,
                name=producer.codec.name,
                clock_rate=producer.codec.clock_rate,
                channels=producer.codec.channels,
                fmtp=dict(producer.codec.fmtp),
                feedback=list(OFFER_FEEDBACK[producer.kind]),
                rtx_payload_type=rtx_pt if producer.kind == "video" else None,
            )
            red = None
            if producer.red_pt is not None:
                # Audio has no RTX: its second number is this connection's RED over it.
                red = sdp.Codec(rtx_pt, "red", codec.clock_rate, 2, {f"{pt}/{pt}": ""})
            mid = str(self.next_mid)
            self.next_mid += 1
            consumer = consumer_for(
                f"{self.transport.session_id}-{mid}",
                producer,
                self.transport,
                codec.payload_type,
                codec.rtx_payload_type,
                ExtensionLayout(OFFER_EXTENSIONS[producer.kind], mid),
            )
            self.sections.append(
                OfferedSection(
                    mid, producer.kind, codec, consumer, producer.id, stream, track, red=red
                )
            )
            changed = True
        if changed or self.version == 0:
            self.version += 1
            return True
        return False

    def offer_sections(self) -> list[sdp.AnswerSection]:
        out = []
        for section in self.sections:
            media = sdp.MediaSection(
                kind=section.kind,
                port=9,
                proto="UDP/TLS/RTP/SAVPF",
                formats=[str(section.codec.payload_type)],
                mid=section.mid,
                rtcp_mux=True,
                rtcp_rsize=True,
            )
            consumer = section.consumer
            entry = sdp.AnswerSection(
                offer=media,
                codec=section.codec,
                direction="sendonly" if consumer is not None else "inactive",
                extensions=OFFER_EXTENSIONS[section.kind],
                use_rtx=section.codec.rtx_payload_type is not None,
                feedback=section.codec.feedback,
                red=section.red,
            )
            if consumer is not None:
                entry.send_ssrc = consumer.ssrc
                entry.send_rtx_ssrc = consumer.rtx_ssrc
                entry.cname = self.transport.session_id
                entry.stream_id = section.stream
                entry.track_id = section.track
            out.append(entry)
        return out

    def apply_answer(self, answer: sdp.SessionDescription, version: int, now: float) -> None:
        """Attach the consumers the client accepted, with the extensions it kept."""
        if version != self.version:
            raise OfferError(f"answer to offer {version}, but offer {self.version} is current")
        by_mid = {m.mid: m for m in answer.media if m.mid is not None}
        for section in self.sections:
            consumer = section.consumer
            if consumer is None:
                continue
            media = by_mid.get(section.mid)
            if media is None:
                raise OfferError(f"the answer has no section for mid {section.mid}")
            accepted = media.port != 0 and media.direction in ("recvonly", "sendrecv")
            if not accepted:
                if section.accepted:
                    consumer.close()
                    section.consumer = None
                continue
            if section.accepted:
                continue  # already flowing; the renegotiation only added other sections
            negotiated = {
                uri: ext_id
                for uri, ext_id in media.extensions.items()
                if OFFER_EXTENSIONS[section.kind].get(uri) == ext_id
            }
            consumer.layout = ExtensionLayout(negotiated, section.mid)
            codec_pts = {c.payload_type for c in media.codecs}
            if consumer.rtx_pt is not None and consumer.rtx_pt not in codec_pts:
                consumer.rtx_pt = None
                consumer.rtx_ssrc = None
            if section.red is not None and section.red.payload_type in codec_pts:
                consumer.red_pt = section.red.payload_type
            section.accepted = True
            self.transport.add_consumer(consumer)
        self.answered_version = version
