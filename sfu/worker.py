"""A media worker's state, sans-I/O: sessions on one UDP port, rooms, and the control API.

The asyncio process in :mod:`sfu.process` feeds datagrams, control requests and clock
ticks into :class:`WorkerCore`; everything here is plain method calls, so tests can run
a worker without sockets.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from aiortc.rtcdtlstransport import RTCCertificate

from sfu import sdp
from sfu.dtls import DtlsError, DtlsSession, local_fingerprint
from sfu.ice import (
    CONSENT_TIMEOUT,
    Address,
    IceLiteSession,
    is_stun,
    new_credentials,
    parse_binding_request,
)
from sfu.router import Consumer, Producer, Router
from sfu.rtp import ExtensionLayout
from sfu.subscriber import OfferError, SubscriberSession
from sfu.transport import PeerTransport

logger = logging.getLogger(__name__)

MAX_TRACKS_PER_SESSION = 8
SPEAKER_INTERVAL = 0.5  # seconds between active-speaker decisions
SPEAKER_THRESHOLD = 60  # an average level under this (louder than -60 dBov) is speech
QUALITY_INTERVAL = 2.0


def quality_band(loss: float, rtt: float | None) -> str:
    """Three bands a person can act on: fine, watch it, fix it."""
    if loss < 0.02 and (rtt is None or rtt < 0.3):
        return "excellent"
    if loss < 0.08 and (rtt is None or rtt < 0.6):
        return "good"
    return "poor"


class RequestError(Exception):
    """A control request that cannot be served; ``code`` maps to an HTTP status upstream."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WorkerCore:
    def __init__(
        self,
        certificate: RTCCertificate,
        address: str,
        port: int,
        sender: Callable[[bytes, Address], None],
        emit: Callable[[str, dict[str, Any]], None],
        publisher_bitrate: int = 2_500_000,
        consent_timeout: float = CONSENT_TIMEOUT,
    ) -> None:
        self.certificate = certificate
        self.fingerprint = local_fingerprint(certificate)
        self.address = address
        self.port = port
        self.sender = sender
        self.emit = emit
        self.publisher_bitrate = publisher_bitrate
        self.consent_timeout = consent_timeout
        self.rooms: dict[str, Router] = {}
        self.sessions: dict[str, PeerTransport] = {}
        self.by_ufrag: dict[str, PeerTransport] = {}
        self.by_addr: dict[Address, PeerTransport] = {}
        self.closed_counters: dict[str, int] = {}
        self.producers: dict[str, Producer] = {}
        self.loop_lag = 0.0  # seconds, set by the event loop's ticker
        self.speakers: dict[str, str] = {}  # room -> producer id of its active speaker
        self.next_speaker_check = 0.0
        self.next_quality_check = 0.0
        self.datagrams_dropped = 0

    # -- datagrams ----------------------------------------------------------------------
    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """One datagram from the shared port. Unknown senders cost one dict lookup."""
        if not data:
            self.datagrams_dropped += 1
            return
        transport = self.by_addr.get(addr)
        if transport is not None and not is_stun(data):
            transport.receive(data, addr, now)
            return
        if not is_stun(data):
            self.datagrams_dropped += 1
            return
        parsed = parse_binding_request(data)
        if parsed is None:
            self.datagrams_dropped += 1
            return
        message, local_ufrag, remote_ufrag = parsed
        transport = self.by_ufrag.get(local_ufrag)
        if transport is None:
            self.datagrams_dropped += 1
            return
        response = transport.handle_stun(message, remote_ufrag, addr, now)
        if response is None:
            self.datagrams_dropped += 1
            return
        previous = self.by_addr.get(addr)
        if previous is not transport:
            self.by_addr[addr] = transport
        self.sender(response, addr)

    def tick(self, now: float) -> None:
        for transport in list(self.sessions.values()):
            transport.tick(now)
        if now >= self.next_speaker_check:
            self.next_speaker_check = now + SPEAKER_INTERVAL
            self._active_speakers()
        if now >= self.next_quality_check:
            self.next_quality_check = now + QUALITY_INTERVAL
            self._quality()

    def _active_speakers(self) -> None:
        """The loudest audio producer of each room over the last interval, if it speaks."""
        for name, router in self.rooms.items():
            best: Producer | None = None
            best_level = 128.0
            for producer in router.producers.values():
                if producer.is_video or not producer.level_count:
                    continue
                level = producer.level_sum / producer.level_count
                producer.level_sum = producer.level_count = 0
                if not producer.paused and level < best_level:
                    best, best_level = producer, level
            if best is not None and best_level <= SPEAKER_THRESHOLD and self.speakers.get(name) != best.id:
                self.speakers[name] = best.id
                self.emit("active_speaker", {"room": name, "producer": best.id, "level": -round(best_level)})

    def _quality(self) -> None:
        """Report a connection's quality band when it changes (loss from RTCP, both ways)."""
        for transport in self.sessions.values():
            if transport.srtp is None:
                continue
            rtts = [c.rtt for c in transport.consumers if c.rtt is not None]
            if transport.consumers:
                loss = max(c.fraction_lost for c in transport.consumers) / 256
            elif transport.producers:
                loss = max(p.stats.last_fraction for p in transport.producers) / 256
            else:
                continue
            rtt = max(rtts) if rtts else None
            band = quality_band(loss, rtt)
            if band != transport.quality:
                transport.quality = band
                self.emit("quality", {"session": transport.session_id, "quality": band, "loss": loss, "rtt": rtt})

    # -- control API ----------------------------------------------------------------------
    def handle(self, method: str, params: dict[str, Any], now: float) -> dict[str, Any]:
        if method in ("publish", "subscribe"):
            for key in ("session", "room"):
                if not isinstance(params.get(key), str) or not params[key]:
                    raise RequestError("bad_request", f"{method} needs a {key}")
        if method == "publish":
            return self.publish(params, now)
        if method == "subscribe":
            return self.subscribe(params, now)
        if method in ("subscriber", "subscriber_offer", "subscriber_answer", "producer_pause", "producer_close"):
            return getattr(self, method)(params, now)  # type: ignore[no-any-return]
        if method == "close":
            self.close_session(str(params.get("session", "")), str(params.get("reason", "closed by server")))
            return {}
        if method == "stats":
            return self.stats()
        if method == "ping":
            return {"now": now}
        raise RequestError("unknown_method", f"unknown method {method!r}")

    def _new_transport(
        self, params: dict[str, Any], offer: sdp.SessionDescription, sections: list[sdp.MediaSection], now: float
    ) -> PeerTransport:
        session_id = str(params["session"])
        if session_id in self.sessions:
            raise RequestError("conflict", f"session {session_id} exists")
        remote_ufrag, _remote_pwd = offer.ice_credentials()
        setup = offer.dtls_setup()
        if setup not in ("actpass", "active"):
            raise RequestError("bad_sdp", f"a=setup:{setup} is not supported: the server is DTLS passive")
        try:
            dtls = DtlsSession(self.certificate, offer.dtls_fingerprints(), label=session_id)
        except DtlsError as exc:
            raise RequestError("bad_sdp", str(exc)) from None
        local_ufrag, local_pwd = new_credentials()
        while local_ufrag in self.by_ufrag:
            local_ufrag, local_pwd = new_credentials()
        ice = IceLiteSession(local_ufrag, local_pwd, remote_ufrag, now, self.consent_timeout)
        extensions: dict[str, int] = {}
        for section in sections:
            extensions.update(section.extensions)
        return PeerTransport(
            session_id,
            str(params["room"]),
            str(params.get("identity", "")),
            ice,
            dtls,
            self.sender,
            self._on_transport_event,
            extensions,
            now,
            self.publisher_bitrate,
        )

    def _register(self, transport: PeerTransport) -> None:
        self.sessions[transport.session_id] = transport
        self.by_ufrag[transport.ice.local_ufrag] = transport

    def _answer(
        self, transport: PeerTransport, sections: list[sdp.AnswerSection], setup: str = "passive", version: int = 2
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
        )

    @staticmethod
    def _parse(params: dict[str, Any]) -> sdp.SessionDescription:
        offer_text = params.get("offer")
        if not isinstance(offer_text, str):
            raise RequestError("bad_sdp", "no SDP offer")
        try:
            offer = sdp.parse(offer_text)
            offer.bundled()
        except sdp.SdpError as exc:
            raise RequestError("bad_sdp", str(exc)) from None
        return offer

    def publish(self, params: dict[str, Any], now: float) -> dict[str, Any]:
        """A publisher's offer (WHIP, or the protocol's publish connection): one producer
        per sending m= section we can forward. With ``renegotiate`` the offer updates an
        existing connection: new sections add producers, sections no longer sending close
        theirs, the rest carry on untouched."""
        offer = self._parse(params)
        bundled = offer.bundled()
        existing = self.sessions.get(str(params["session"])) if params.get("renegotiate") else None
        if params.get("renegotiate") and existing is None:
            raise RequestError("not_found", "no such publish session to renegotiate")
        try:
            if existing is None:
                transport = self._new_transport(params, offer, bundled, now)
            else:
                transport = existing
                if offer.ice_credentials()[0] != transport.ice.remote_ufrag:
                    raise RequestError("bad_sdp", "ICE restart is not supported; start a new connection")
        except sdp.SdpError as exc:
            raise RequestError("bad_sdp", str(exc)) from None
        router = self.rooms.setdefault(transport.room, Router(transport.room))
        current = {p.mid: p for p in transport.producers if not p.closed}
        answers: list[sdp.AnswerSection] = []
        added: list[Producer] = []
        kept: list[Producer] = []
        for section in offer.media:
            sending = (
                section in bundled
                and section.kind in ("audio", "video")
                and section.direction in ("sendonly", "sendrecv")
                and section.proto.upper() == "UDP/TLS/RTP/SAVPF"
            )
            previous = current.get(section.mid or "")
            if section.mid in transport.retired_mids:
                sending = False  # an unpublished track does not come back under its old mid
            if previous is not None and sending:
                codec = previous.codec
            elif sending and len(current) + len(added) < MAX_TRACKS_PER_SESSION:
                codec = sdp.choose_codec(section)
            else:
                codec = None
            answer = sdp.AnswerSection(offer=section, codec=codec)
            answers.append(answer)
            if codec is None or section.mid is None:
                answer.codec = sdp.choose_codec(section) if section in bundled else None
                continue
            feedback = [fb for fb in sdp.negotiate_feedback(section.kind, codec) if fb[0] != "transport-cc"]
            use_nack = ("nack", "") in feedback
            answer.direction = "recvonly"
            answer.feedback = feedback
            answer.use_rtx = use_nack and codec.rtx_payload_type is not None
            answer.extensions = {
                uri: ext_id for uri, ext_id in section.extensions.items() if uri in sdp.PUBLISH_EXTENSIONS[section.kind]
            }
            if previous is not None:
                kept.append(previous)
                continue
            primaries = section.primary_ssrcs()
            ssrc = primaries[0] if len(primaries) == 1 and not section.rids else None
            added.append(
                Producer(
                    f"{transport.session_id}-{section.mid}",
                    transport,
                    section.kind,
                    section.mid,
                    codec,
                    ssrc,
                    section.rtx_ssrc_of(ssrc) if ssrc is not None else None,
                    use_nack=use_nack,
                    use_rtx=answer.use_rtx,
                )
            )
        if not added and not kept:
            raise RequestError("bad_sdp", "offer has no sending audio/video section with a supported codec (opus, VP8, H.264)")
        removed = [p for p in current.values() if p not in kept]
        for producer in removed:
            producer.close()
        if existing is not None:
            transport.add_extensions({uri: i for m in bundled for uri, i in m.extensions.items()})
        for producer in added:
            transport.add_producer(producer)
            router.add_producer(producer)
            producer.on_close.append(self._producer_closed)
            self.producers[producer.id] = producer
        if existing is None:
            self._register(transport)
        logger.info(
            "session %s (%s) publishing %s in room %s%s",
            transport.session_id,
            transport.identity,
            ", ".join(f"{p.kind}/{p.codec.name}" for p in kept + added),
            transport.room,
            " (renegotiated)" if existing is not None else "",
        )
        return {
            "answer": self._answer(transport, answers),
            "tracks": [{"id": p.id, "mid": p.mid, "kind": p.kind, "codec": p.codec.name} for p in kept + added],
            "removed": [p.id for p in removed],
        }

    def _producer_closed(self, producer: Producer) -> None:
        self.producers.pop(producer.id, None)
        producer.transport.retired_mids.add(producer.mid)
        if not producer.transport.closed:
            self.emit("producer_closed", {"producer": producer.id, "session": producer.transport.session_id})

    def _producer(self, params: dict[str, Any]) -> Producer:
        producer = self.producers.get(str(params.get("producer", "")))
        if producer is None:
            raise RequestError("not_found", "no such producer")
        return producer

    def producer_pause(self, params: dict[str, Any], now: float) -> dict[str, Any]:
        producer = self._producer(params)
        producer.set_paused(bool(params.get("paused")), now)
        return {}

    def producer_close(self, params: dict[str, Any], now: float) -> dict[str, Any]:
        self._producer(params).close()
        return {}

    # -- the protocol's subscribe connection -------------------------------------------------
    def subscriber(self, params: dict[str, Any], now: float) -> dict[str, Any]:
        """A subscribe connection, waiting for its first offer and answer."""
        session_id = str(params["session"])
        if session_id in self.sessions:
            raise RequestError("conflict", f"session {session_id} exists")
        local_ufrag, local_pwd = new_credentials()
        while local_ufrag in self.by_ufrag:
            local_ufrag, local_pwd = new_credentials()
        transport = PeerTransport(
            session_id,
            str(params["room"]),
            str(params.get("identity", "")),
            IceLiteSession(local_ufrag, local_pwd, "", now, self.consent_timeout),
            None,
            self.sender,
            self._on_transport_event,
            {},
            now,
            self.publisher_bitrate,
        )
        transport.subscriber = SubscriberSession(transport)
        self.rooms.setdefault(transport.room, Router(transport.room))
        self._register(transport)
        return {}

    def _subscriber(self, params: dict[str, Any]) -> SubscriberSession:
        transport = self.sessions.get(str(params.get("session", "")))
        if transport is None or transport.subscriber is None:
            raise RequestError("not_found", "no such subscribe session")
        return transport.subscriber  # type: ignore[no-any-return]

    def subscriber_offer(self, params: dict[str, Any], now: float) -> dict[str, Any]:
        """Offer the wanted producers; unchanged wants give the same offer (changed False)."""
        subscriber = self._subscriber(params)
        transport = subscriber.transport
        wanted = []
        for item in params.get("consumers") or []:
            producer = self.producers.get(str(item.get("producer")))
            if producer is not None and producer.transport.room == transport.room:
                wanted.append((producer, str(item.get("stream", "-")), str(item.get("track", producer.id))))
        try:
            changed = subscriber.update(wanted)
        except OfferError as exc:
            raise RequestError("bad_request", str(exc)) from None
        offer = self._answer(transport, subscriber.offer_sections(), setup="actpass", version=subscriber.version)
        return {"offer": offer, "version": subscriber.version, "changed": changed}

    def subscriber_answer(self, params: dict[str, Any], now: float) -> dict[str, Any]:
        subscriber = self._subscriber(params)
        transport = subscriber.transport
        try:
            answer = sdp.parse(str(params.get("answer", "")))
            if transport.dtls is None:
                ufrag, _pwd = answer.ice_credentials()
                setup = answer.dtls_setup()
                if setup != "active":
                    raise RequestError("bad_sdp", f"a=setup:{setup} in the answer: the client must be DTLS active")
                transport.set_remote(ufrag, DtlsSession(self.certificate, answer.dtls_fingerprints(), transport.session_id))
            subscriber.apply_answer(answer, int(params.get("version", -1)), now)
        except (sdp.SdpError, OfferError, DtlsError) as exc:
            raise RequestError("bad_sdp", str(exc)) from None
        return {}

    def subscribe(self, params: dict[str, Any], now: float) -> dict[str, Any]:
        """A WHEP offer: one consumer per receiving m= section, from the source's tracks."""
        offer = self._parse(params)
        router = self.rooms.get(str(params.get("room")))
        source = str(params.get("source", ""))
        available = router.producers_of(source) if router is not None else []
        if not available:
            raise RequestError("not_found", "nobody is publishing under that name in this room")
        bundled = offer.bundled()
        try:
            transport = self._new_transport(params, offer, bundled, now)
        except sdp.SdpError as exc:
            raise RequestError("bad_sdp", str(exc)) from None
        answers: list[sdp.AnswerSection] = []
        consumers: list[Consumer] = []
        cname = secrets.token_hex(8)
        stream_id = f"telebridge-{source}"
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
                # Nothing to send here (the publisher has no such track): keep the
                # section in the bundle, inactive, so every client stack accepts it.
                answer.codec = sdp.choose_codec(section)
                continue
            codec = sdp.match_codec(section, producer.codec)
            if codec is None:
                continue
            available.remove(producer)
            feedback = sdp.negotiate_feedback(section.kind, codec)
            use_rtx = ("nack", "") in feedback and codec.rtx_payload_type is not None
            negotiated = {
                uri: ext_id for uri, ext_id in section.extensions.items() if uri in sdp.VIEW_EXTENSIONS[section.kind]
            }
            consumer = Consumer(
                f"{transport.session_id}-{section.mid}",
                producer,
                transport,
                codec.payload_type,
                codec.rtx_payload_type if use_rtx else None,
                ExtensionLayout(negotiated, section.mid or ""),
            )
            answer.codec = codec
            answer.direction = "sendonly"
            answer.feedback = feedback
            answer.use_rtx = use_rtx
            answer.extensions = negotiated
            answer.send_ssrc = consumer.ssrc
            answer.send_rtx_ssrc = consumer.rtx_ssrc
            answer.cname = cname
            answer.stream_id = stream_id
            answer.track_id = f"{producer.kind}-{producer.mid}"
            consumers.append(consumer)
        if not consumers:
            raise RequestError("bad_sdp", "offer has no receiving section matching the published tracks' codecs")
        transport.close_when_idle = True
        for consumer in consumers:
            transport.add_consumer(consumer)
        self._register(transport)
        logger.info(
            "session %s (%s) viewing %s in room %s: %s",
            transport.session_id,
            transport.identity,
            source,
            transport.room,
            ", ".join(f"{c.kind}/{c.producer.codec.name}" for c in consumers),
        )
        return {
            "answer": self._answer(transport, answers),
            "tracks": [{"id": c.id, "kind": c.kind, "producer": c.producer.id} for c in consumers],
        }

    def close_session(self, session_id: str, reason: str) -> None:
        transport = self.sessions.get(session_id)
        if transport is not None:
            transport.close(reason)

    def _on_transport_event(self, name: str, data: dict[str, Any]) -> None:
        if name == "closed":
            transport = self.sessions.pop(data["session"], None)
            if transport is not None:
                self.by_ufrag.pop(transport.ice.local_ufrag, None)
                for addr in transport.ice.validated:
                    if self.by_addr.get(addr) is transport:
                        del self.by_addr[addr]
                for key, value in transport.counter_values().items():
                    self.closed_counters[key] = self.closed_counters.get(key, 0) + value
                router = self.rooms.get(transport.room)
                if router is not None and not router.producers and not any(
                    t.room == transport.room for t in self.sessions.values()
                ):
                    del self.rooms[transport.room]
                    self.speakers.pop(transport.room, None)
        self.emit(name, data)

    def stats(self) -> dict[str, Any]:
        totals = dict(self.closed_counters)
        for transport in self.sessions.values():
            for key, value in transport.counter_values().items():
                totals[key] = totals.get(key, 0) + value
        return {
            "sessions": len(self.sessions),
            "rooms": len(self.rooms),
            "producers": sum(len(r.producers) for r in self.rooms.values()),
            "consumers": sum(len(t.consumers) for t in self.sessions.values()),
            "datagrams_dropped": self.datagrams_dropped,
            "loop_lag_seconds": self.loop_lag,
            "counters": totals,
        }
