"""A media worker's state and its control handlers, sans-I/O.

:class:`WorkerCore` owns the worker's transports, rooms and producers, the datagram
demultiplexer (:mod:`sfu.demux`), SDP negotiation (:mod:`sfu.negotiation`), the room
monitor (:mod:`sfu.monitor`) and one timer queue (:mod:`sfu.timers`). Each control
method of :mod:`sfu.control` has one handler here, listed in :attr:`WorkerCore.handlers`.
The asyncio process (:mod:`sfu.process`) feeds it datagrams, requests and timer calls;
tests drive it with plain method calls.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any, cast

from aiortc.rtcdtlstransport import RTCCertificate

from sfu import control, sdp
from sfu.consumer import PipeConsumer, SimpleConsumer, consumer_for
from sfu.control import ControlError
from sfu.demux import Demux
from sfu.dtls import DtlsError, DtlsSession, local_fingerprint
from sfu.ice import Address, new_credentials
from sfu.ice_tcp import TcpPath
from sfu.layers import Preferences
from sfu.monitor import RoomMonitor
from sfu.negotiation import Negotiator, parse_offer
from sfu.plain_transport import PlainAddress, PlainTransport, SocketOpener
from sfu.producer import Producer
from sfu.router import Router
from sfu.rtp import ExtensionLayout
from sfu.sdp import URI_AUDIO_LEVEL, URI_VIDEO_ORIENTATION
from sfu.settings import MediaSettings
from sfu.streams import Encoding
from sfu.subscriber import OfferError, SubscriberSession
from sfu.timers import TimerQueue
from sfu.transport import Transport, TransportContext
from sfu.webrtc_transport import WebRtcTransport

logger = logging.getLogger(__name__)


# Header extensions a plain consumer writes: the far side reads the audio level (active
# speaker) and orientation; SSRCs are signalled, so no mid or rid is needed.
PLAIN_EXTENSIONS = {"audio": {URI_AUDIO_LEVEL: 1}, "video": {URI_VIDEO_ORIENTATION: 2}}

Emit = Callable[[str, dict[str, Any]], None]
Handler = Callable[[Any, float], Any]


def _declared(emit: Emit) -> Emit:
    """Only the events :data:`sfu.control.EVENTS` lists go to the control process."""

    def checked(event: str, data: dict[str, Any]) -> None:
        if event not in control.EVENTS:
            raise ValueError(f"event {event!r} is not declared in sfu.control.EVENTS")
        emit(event, data)

    return checked


class WorkerCore:
    def __init__(
        self,
        certificate: RTCCertificate,
        address: str,
        port: int,
        sender: Callable[[bytes, Address], None],
        emit: Emit,
        settings: MediaSettings | None = None,
        open_socket: SocketOpener | None = None,
        tcp_port: int = 0,
    ) -> None:
        self.settings = settings or MediaSettings()
        self.certificate = certificate
        self.fingerprint = local_fingerprint(certificate)
        self.address = address
        self.port = port
        self.emit = _declared(emit)
        self.open_socket = open_socket
        self.timers = TimerQueue()
        self.demux = Demux(sender)
        self.context = TransportContext(self.timers, self._on_transport_event, self.settings)
        self.tcp_port = tcp_port  # the passive ICE-TCP listener's; 0 when there is none
        self.negotiator = Negotiator(
            certificate,
            self.fingerprint,
            address,
            port,
            self.context,
            sender,
            tcp_port=tcp_port,
            tcp_sender=self.demux.send_tcp,
        )
        self.rooms: dict[str, Router] = {}
        self.sessions: dict[str, Transport] = {}
        self.producers: dict[str, Producer] = {}
        self.closed_counters: dict[str, int] = {}
        self.monitor = RoomMonitor(self.rooms, self.sessions, self.emit)
        self.timers.schedule(self.monitor, self.monitor.next_deadline())
        self.loop_lag = 0.0  # seconds, set by the event loop (a decaying max, for metrics)
        self.lag_peak = 0.0  # the latest any timer ran since the last load report
        self._load_mark = (0, -1.0)  # (packets out, when) at the last load report
        self._overload_episodes = 0
        self._socket_dir: str | None = None
        self._socket_names = itertools.count()  # never reused: a closed socket's name may linger
        self.handlers: dict[str, Handler] = {
            control.PUBLISH.name: self.publish,
            control.VIEW.name: self.view,
            control.SUBSCRIBER.name: self.subscriber,
            control.SUBSCRIBER_OFFER.name: self.subscriber_offer,
            control.SUBSCRIBER_ANSWER.name: self.subscriber_answer,
            control.ICE_RESTART.name: self.ice_restart,
            control.PRODUCER_PAUSE.name: self.producer_pause,
            control.PRODUCER_CLOSE.name: self.producer_close,
            control.PREFERENCES.name: self.preferences,
            control.CLOSE.name: self.close,
            control.PLAIN_TRANSPORT.name: self.plain_transport,
            control.CONSUME.name: self.consume,
            control.PIPE_OUT.name: self.pipe_out,
            control.PIPE_IN.name: self.pipe_in,
            control.PLAIN_CONNECT.name: self.plain_connect,
            control.PIPE_DEMAND.name: self.pipe_demand,
            control.STATS.name: self.stats,
            control.PING.name: self.ping,
        }
        assert self.handlers.keys() == control.METHODS.keys(), (
            "every control method needs a handler"
        )

    # -- I/O entry points ---------------------------------------------------------------------
    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """One datagram from the shared UDP port."""
        self.demux.receive(data, addr, now)

    def receive_tcp(self, data: bytes, path: TcpPath, now: float) -> None:
        """One unframed packet from an ICE-TCP connection."""
        self.demux.receive_tcp(data, path, now)

    def run_timers(self, now: float) -> float:
        """Fire what is due; returns the next deadline (inf when nothing is waiting)."""
        self.timers.run(now)
        return self.timers.deadline

    def handle(self, method: str, params: object, now: float) -> Any:
        """One control request; raises ControlError for the caller to answer with."""
        spec = control.METHODS.get(method)
        if spec is None:
            raise ControlError("unknown_method", f"unknown method {method!r}")
        return self.handlers[method](control.check(spec, params), now)

    # -- sessions ---------------------------------------------------------------------------------
    def _add_session(self, transport: Transport) -> None:
        if transport.session_id in self.sessions:
            raise ControlError("conflict", f"session {transport.session_id} exists")
        self.sessions[transport.session_id] = transport
        if isinstance(transport, WebRtcTransport):
            self.demux.add(transport)
        self.rooms.setdefault(transport.room, Router(transport.room))

    def _new_session_id(self, session_id: str) -> None:
        if session_id in self.sessions:
            raise ControlError("conflict", f"session {session_id} exists")

    def _webrtc(self, session_id: str) -> WebRtcTransport:
        transport = self.sessions.get(session_id)
        if not isinstance(transport, WebRtcTransport):
            raise ControlError("not_found", "no such session")
        return transport

    def _on_transport_event(self, name: str, data: dict[str, Any]) -> None:
        if name == "closed":
            transport = self.sessions.pop(data["session"], None)
            if transport is not None:
                if isinstance(transport, WebRtcTransport):
                    self.demux.remove(transport)
                for key, value in transport.counter_values().items():
                    self.closed_counters[key] = self.closed_counters.get(key, 0) + value
                room = transport.room
                router = self.rooms.get(room)
                if (
                    router is not None
                    and not router.producers
                    and not any(t.room == room for t in self.sessions.values())
                ):
                    del self.rooms[room]
                    self.monitor.forget(room)
        self.emit(name, data)

    # -- publishing -----------------------------------------------------------------------------
    def publish(self, params: control.PublishParams, now: float) -> control.PublishResult:
        """A publisher's offer (WHIP, or the protocol's publish connection). With
        ``renegotiate`` the offer updates the session's existing connection."""
        offer = parse_offer(params["offer"])
        session_id = params["session"]
        if params.get("renegotiate"):
            transport = self._webrtc(session_id)
            try:
                remote_ufrag = offer.ice_credentials()[0]
            except sdp.SdpError as exc:
                raise ControlError("bad_sdp", str(exc)) from None
            if remote_ufrag != transport.ice.remote_ufrag:
                self._restart_ice(transport, remote_ufrag)  # the answer carries the new ones
        else:
            self._new_session_id(session_id)
            transport = self.negotiator.transport(
                session_id,
                params["room"],
                params.get("identity", ""),
                offer,
                now,
                self.demux.ufrag_taken,
            )
        plan = self.negotiator.publish(transport, offer)
        if not plan.added and not plan.kept:
            if not params.get("renegotiate"):
                transport.discard("nothing to publish")
            raise ControlError(
                "bad_sdp",
                "offer has no sending audio/video section with a supported codec (opus, VP8, H.264)",
            )
        for producer in plan.removed:
            producer.close()
        if params.get("renegotiate"):
            transport.add_extensions(
                {uri: i for m in offer.bundled() for uri, i in m.extensions.items()}
            )
        else:
            self._add_session(transport)
        router = self.rooms[transport.room]
        for producer in plan.added:
            transport.add_producer(producer)
            router.add_producer(producer)
            producer.on_close.append(self._producer_closed)
            self.producers[producer.id] = producer
        tracks = plan.kept + plan.added
        logger.info(
            "session %s (%s) publishing %s in room %s%s",
            transport.session_id,
            transport.identity,
            ", ".join(f"{p.kind}/{p.codec.name}" for p in tracks),
            transport.room,
            " (renegotiated)" if params.get("renegotiate") else "",
        )
        return {
            "answer": self.negotiator.describe(transport, plan.answers, group=bool(offer.bundle)),
            "tracks": [
                {
                    "id": p.id,
                    "mid": p.mid,
                    "kind": p.kind,
                    "codec": p.codec.name,
                    "encodings": len(p.streams),
                }
                for p in tracks
            ],
            "removed": [p.id for p in plan.removed],
        }

    def _producer_closed(self, producer: Producer) -> None:
        self.producers.pop(producer.id, None)
        transport = producer.transport
        if isinstance(transport, WebRtcTransport):
            transport.retired_mids.add(producer.mid)
        if not transport.closed:
            self.emit("producer_closed", {"producer": producer.id, "session": transport.session_id})

    def _producer(self, producer_id: str) -> Producer:
        producer = self.producers.get(producer_id)
        if producer is None:
            raise ControlError("not_found", "no such producer")
        return producer

    def producer_pause(self, params: control.ProducerPauseParams, now: float) -> control.Empty:
        self._producer(params["producer"]).set_paused(params["paused"], now)
        return {}

    def producer_close(self, params: control.ProducerParams, now: float) -> control.Empty:
        self._producer(params["producer"]).close()
        return {}

    def preferences(self, params: control.PreferencesParams, now: float) -> control.Empty:
        transport = self.sessions.get(params["session"])
        if transport is None:
            raise ControlError("not_found", f"no session {params['session']}")
        current = transport.layers.preferences
        wishes = Preferences(
            params.get("max_height", current.max_height),
            params.get("max_layer", current.max_layer),
            params.get("encoding", current.encoding),
            params.get("max_temporal", current.max_temporal),
        )
        transport.layers.set_preferences(wishes, now)
        return {}

    # -- viewing (WHEP) -----------------------------------------------------------------------------
    def view(self, params: control.ViewParams, now: float) -> control.ViewResult:
        """A client-offered receive connection for the given producers of its room."""
        offer = parse_offer(params["offer"])
        self._new_session_id(params["session"])
        room = params["room"]
        producers = [
            p
            for p in (self.producers.get(i) for i in params["producers"])
            if p is not None and p.transport.room == room
        ]
        if not producers:
            raise ControlError("not_found", "nobody is publishing those tracks in this room")
        transport = self.negotiator.transport(
            params["session"], room, params.get("identity", ""), offer, now, self.demux.ufrag_taken
        )
        answers, consumers = self.negotiator.view(transport, offer, producers)
        if not consumers:
            transport.discard("nothing to view")
            raise ControlError(
                "bad_sdp", "offer has no receiving section matching the published tracks' codecs"
            )
        transport.close_when_idle = True
        self._add_session(transport)
        for consumer in consumers:
            transport.add_consumer(consumer)
        logger.info(
            "session %s (%s) viewing in room %s: %s",
            transport.session_id,
            transport.identity,
            room,
            ", ".join(f"{c.kind}/{c.producer.codec.name} of {c.producer.id}" for c in consumers),
        )
        return {
            "answer": self.negotiator.describe(transport, answers, group=bool(offer.bundle)),
            "tracks": [{"id": c.id, "kind": c.kind, "producer": c.producer.id} for c in consumers],
        }

    # -- ICE restart ------------------------------------------------------------------------------
    def _restart_ice(self, transport: WebRtcTransport, remote_ufrag: str) -> None:
        """New local credentials on a live transport; DTLS, SRTP and media are untouched."""
        ufrag, pwd = new_credentials()
        while self.demux.ufrag_taken(ufrag):
            ufrag, pwd = new_credentials()
        transport.ice.restart(ufrag, pwd, remote_ufrag)
        self.demux.sync(transport)
        logger.info("session %s (%s): ICE restart", transport.session_id, transport.identity)

    def ice_restart(self, params: control.IceRestartParams, now: float) -> control.IceRestartResult:
        """A WHIP/WHEP client's ICE credentials: unchanged is a trickle, changed a restart."""
        transport = self._webrtc(params["session"])
        if transport.subscriber is not None:
            raise ControlError("bad_request", "a subscribe connection restarts by a new offer")
        ufrag = params["ufrag"]
        if not ufrag:
            raise ControlError("bad_request", "ufrag must not be empty")
        restarted = ufrag != transport.ice.remote_ufrag
        if restarted:
            self._restart_ice(transport, ufrag)
        return {
            "restarted": restarted,
            "ufrag": transport.ice.local_ufrag,
            "pwd": transport.ice.local_pwd,
            "candidate": sdp.host_candidate(self.address, self.port),
        }

    # -- the protocol's server-offered subscribe connection ------------------------------------------
    def subscriber(self, params: control.SubscriberParams, now: float) -> control.Empty:
        """A subscribe connection, waiting for its first offer and answer."""
        self._new_session_id(params["session"])
        transport = self.negotiator.transport(
            params["session"],
            params["room"],
            params.get("identity", ""),
            None,
            now,
            self.demux.ufrag_taken,
        )
        transport.subscriber = SubscriberSession(transport)
        self._add_session(transport)
        return {}

    def _subscriber(self, session_id: str) -> SubscriberSession:
        transport = self.sessions.get(session_id)
        if not isinstance(transport, WebRtcTransport) or transport.subscriber is None:
            raise ControlError("not_found", "no such subscribe session")
        return cast(SubscriberSession, transport.subscriber)

    def subscriber_offer(
        self, params: control.SubscriberOfferParams, now: float
    ) -> control.SubscriberOfferResult:
        """Offer the wanted producers; unchanged wants give the same offer (changed False)."""
        subscriber = self._subscriber(params["session"])
        transport = subscriber.transport
        wanted = []
        for item in params["consumers"]:
            producer = self.producers.get(item["producer"])
            if producer is not None and producer.transport.room == transport.room:
                wanted.append((producer, item["stream"], item["track"]))
        try:
            changed = subscriber.update(wanted)
        except OfferError as exc:
            raise ControlError("bad_request", str(exc)) from None
        if params.get("ice_restart") and transport.dtls is not None:
            self._restart_ice(transport, "")  # the client's new ufrag comes in its answer
            if not changed:
                subscriber.version += 1  # a new offer: only its answer is taken
                changed = True
        offer = self.negotiator.describe(
            transport, subscriber.offer_sections(), setup="actpass", version=subscriber.version
        )
        return {"offer": offer, "version": subscriber.version, "changed": changed}

    def subscriber_answer(
        self, params: control.SubscriberAnswerParams, now: float
    ) -> control.Empty:
        subscriber = self._subscriber(params["session"])
        transport = subscriber.transport
        try:
            answer = sdp.parse(params["answer"])
            if transport.dtls is None:
                ufrag, _pwd = answer.ice_credentials()
                setup = answer.dtls_setup()
                if setup != "active":
                    raise ControlError(
                        "bad_sdp", f"a=setup:{setup} in the answer: the client must be DTLS active"
                    )
                transport.set_remote(
                    ufrag,
                    DtlsSession(self.certificate, answer.dtls_fingerprints(), transport.session_id),
                )
            else:
                ufrag, _pwd = answer.ice_credentials()
                if ufrag != transport.ice.remote_ufrag:
                    transport.ice.remote_ufrag = ufrag  # the answer to an ICE-restart offer
            subscriber.apply_answer(answer, params["version"], now)
        except (sdp.SdpError, OfferError, DtlsError) as exc:
            raise ControlError("bad_sdp", str(exc)) from None
        return {}

    # -- plain transports ---------------------------------------------------------------------------
    def plain_transport(
        self, params: control.PlainTransportParams, now: float
    ) -> control.PlainTransportResult:
        """A plain RTP transport on a socket of its own, for a recorder or a pipe."""
        if self.open_socket is None:
            raise ControlError("unsupported", "this worker cannot open sockets")
        self._new_session_id(params["session"])
        remote: PlainAddress | None = None
        unix = "remote_path" in params
        if unix:
            remote = params["remote_path"]
        elif "remote_host" in params or "remote_port" in params:
            if (
                "remote_host" not in params
                or "remote_port" not in params
                or not 0 < params["remote_port"] < 65536
            ):
                raise ControlError(
                    "bad_request", "remote_host and remote_port go together (port 1-65535)"
                )
            remote = (params["remote_host"], params["remote_port"])
        bind = self._socket_path() if unix else params.get("listen", "127.0.0.1")
        transport = self._open_plain(
            params["session"], params["room"], params.get("identity", ""), unix, bind, remote, now
        )
        return _plain_result(transport)

    def _open_plain(
        self,
        session: str,
        room: str,
        identity: str,
        unix: bool,
        bind: str,
        remote: PlainAddress | None,
        now: float,
        comedia: bool = True,
    ) -> PlainTransport:
        """A plain transport on a new socket, registered as a session of ``room``."""
        assert self.open_socket is not None
        holder: list[PlainTransport] = []

        def on_datagram(data: bytes, addr: Any, at: float) -> None:
            if holder:
                holder[0].receive(data, addr if isinstance(addr, str) else (addr[0], addr[1]), at)

        try:
            sock = self.open_socket(unix, bind, on_datagram)
        except OSError as exc:
            raise ControlError("bad_request", f"cannot open the socket: {exc}") from None
        transport = PlainTransport(
            session, room, identity, sock, remote, self.context, now, comedia=comedia
        )
        holder.append(transport)
        self._add_session(transport)
        transport.start(now)
        return transport

    # -- pipes between workers ------------------------------------------------------------------
    def pipe_out(self, params: control.PipeOutParams, now: float) -> control.PipeOutResult:
        """The home side of a pipe: every encoding of a local producer, on SSRCs chosen
        here, toward a far worker named later (``plain_connect``). Closes with the producer."""
        if self.open_socket is None:
            raise ControlError("unsupported", "this worker cannot open sockets")
        producer = self._producer(params["producer"])
        if producer.transport.room != params["room"]:
            raise ControlError("not_found", "no such producer in this room")
        self._new_session_id(params["session"])
        transport = self._open_plain(
            params["session"],
            params["room"],
            "pipe",
            False,
            params.get("listen", "127.0.0.1"),
            None,
            now,
            comedia=False,
        )
        transport.close_when_idle = True  # its one consumer ends with the producer
        layout = ExtensionLayout(PLAIN_EXTENSIONS[producer.kind], "")
        consumer = PipeConsumer(
            f"{transport.session_id}-{producer.id}", producer, transport, layout
        )
        transport.add_consumer(consumer)
        codec = producer.codec
        local = transport.socket.local
        assert not isinstance(local, str)
        result: control.PipeOutResult = {
            "local_host": local[0],
            "local_port": local[1],
            "kind": producer.kind,
            "codec": codec.name,
            "clock_rate": codec.clock_rate,
            "channels": codec.channels,
            "payload_type": codec.payload_type,
            "fmtp": dict(codec.fmtp),
            "ssrcs": consumer.ssrcs(),
        }
        if producer.red_pt is not None:
            result["red_payload_type"] = producer.red_pt  # the pipe carries RED as sent
        return result

    def pipe_in(self, params: control.PipeInParams, now: float) -> control.PlainTransportResult:
        """The far side of a pipe: a producer (the home producer's id) fed by the pipe, with
        its SSRCs as signalled encodings. Its keyframe requests, NACKs and reports go back
        over the pipe; it closes when the pipe's home side does (the control process)."""
        if self.open_socket is None:
            raise ControlError("unsupported", "this worker cannot open sockets")
        if params["kind"] not in PLAIN_EXTENSIONS:
            raise ControlError("bad_request", "kind must be audio or video")
        if params["producer"] in self.producers:
            raise ControlError("conflict", f"producer {params['producer']} exists here")
        if not params["ssrcs"] or not all(0 < s < 1 << 32 for s in params["ssrcs"]):
            raise ControlError("bad_request", "ssrcs must be 1 or more 32-bit SSRCs")
        if not 0 < params["remote_port"] < 65536 or not 0 <= params["payload_type"] < 128:
            raise ControlError("bad_request", "remote_port 1-65535, payload_type 0-127")
        red_pt = params.get("red_payload_type")
        if red_pt is not None and not 0 <= red_pt < 128:
            raise ControlError("bad_request", "red_payload_type 0-127")
        self._new_session_id(params["session"])
        transport = self._open_plain(
            params["session"],
            params["room"],
            "pipe",
            False,
            params.get("listen", "127.0.0.1"),
            (params["remote_host"], params["remote_port"]),
            now,
        )
        transport.close_when_idle = True
        transport.add_extensions(PLAIN_EXTENSIONS[params["kind"]])
        codec = sdp.Codec(
            params["payload_type"],
            params["codec"].lower(),
            params["clock_rate"],
            params["channels"],
            dict(params["fmtp"]),
        )
        is_video = params["kind"] == "video"
        producer = Producer(
            params["producer"],
            transport,
            params["kind"],
            "0",
            codec,
            [Encoding(ssrc=ssrc) for ssrc in params["ssrcs"]],
            use_nack=is_video,
            use_rtx=False,  # the home side resends originals on the pipe
            keyframe_interval=self.settings.keyframe_interval,
            red_pt=red_pt,
        )
        transport.add_producer(producer)
        self.rooms[transport.room].add_producer(producer)
        producer.on_close.append(self._producer_closed)
        self.producers[producer.id] = producer
        logger.info(
            "pipe %s: producer %s (%s/%s x%d) piped in from %s:%d",
            transport.session_id,
            producer.id,
            producer.kind,
            codec.name,
            len(producer.streams),
            params["remote_host"],
            params["remote_port"],
        )
        return _plain_result(transport)

    def pipe_demand(self, params: control.PipeDemandParams, now: float) -> control.Empty:
        """The far side's demand for a piped simulcast producer's encodings: the publisher
        keeps sending only what someone, here or there, watches."""
        transport = self.sessions.get(params["session"])
        pipes = [c for c in transport.consumers if isinstance(c, PipeConsumer)] if transport else []
        if not pipes:
            raise ControlError("not_found", "no such pipe")
        for pipe in pipes:
            if len(params["active"]) != len(pipe.wanted):
                raise ControlError("bad_request", f"active needs {len(pipe.wanted)} flags")
            pipe.wanted = list(params["active"])
        return {}

    def plain_connect(self, params: control.PlainConnectParams, now: float) -> control.Empty:
        transport = self.sessions.get(params["session"])
        if not isinstance(transport, PlainTransport):
            raise ControlError("not_found", "no such plain transport")
        if not 0 < params["remote_port"] < 65536:
            raise ControlError("bad_request", "remote_port must be 1-65535")
        try:
            transport.connect((params["remote_host"], params["remote_port"]), now)
        except ValueError as exc:
            raise ControlError("conflict", str(exc)) from None
        return {}

    def _socket_path(self) -> str:
        if self._socket_dir is None:
            self._socket_dir = tempfile.mkdtemp(prefix="telebridge-")  # mode 0700
        return os.path.join(self._socket_dir, f"{next(self._socket_names)}.sock")

    def consume(self, params: control.ConsumeParams, now: float) -> control.ConsumeResult:
        """A consumer of a producer on a plain transport: a simple consumer of its best
        encoding, or (``pipe``) every encoding unchanged."""
        transport = self.sessions.get(params["session"])
        if not isinstance(transport, PlainTransport):
            raise ControlError("not_found", "no such plain transport")
        producer = self._producer(params["producer"])
        if producer.transport.room != transport.room:
            raise ControlError("not_found", "no such producer in this transport's room")
        layout = ExtensionLayout(PLAIN_EXTENSIONS[producer.kind], "")
        codec = producer.codec
        consumer: SimpleConsumer | PipeConsumer
        if params.get("pipe"):
            consumer = PipeConsumer(
                f"{transport.session_id}-{producer.id}", producer, transport, layout
            )
        else:
            consumer = consumer_for(
                f"{transport.session_id}-{producer.id}",
                producer,
                transport,
                codec.payload_type,
                None,
                layout,
            )
        transport.add_consumer(consumer)
        return {
            "id": consumer.id,
            "kind": producer.kind,
            "codec": codec.name,
            "clock_rate": codec.clock_rate,
            "channels": codec.channels,
            "payload_type": codec.payload_type,
            "ssrcs": consumer.ssrcs(),
            "fmtp": dict(codec.fmtp),
        }

    # -- the rest ------------------------------------------------------------------------------------
    def close(self, params: control.CloseParams, now: float) -> control.Empty:
        transport = self.sessions.get(params["session"])
        if transport is not None:
            transport.close(params.get("reason", "closed by server"))
        return {}

    def close_all(self, reason: str) -> None:
        for transport in list(self.sessions.values()):
            transport.close(reason)

    def ping(self, params: control.Empty, now: float) -> control.PingResult:
        return {"now": now}

    def report_load(self, now: float, cpu: float, queue_bytes: int, wait: float = 0.0) -> None:
        """The ``load`` event (the I/O layer calls this every half second with the process's
        CPU share over the last second, the share it waited for a CPU, and its UDP receive
        queue): what placement and admission control read."""
        packets = self.closed_counters.get("packets_out", 0) + sum(
            t.packets_out for t in self.sessions.values()
        )
        last_packets, last_at = self._load_mark
        rate = (packets - last_packets) / (now - last_at) if last_at >= 0 and now > last_at else 0.0
        self._load_mark = (packets, now)
        lag, self.lag_peak = self.lag_peak, 0.0
        line = self.context.settings.admission_max_cpu
        overloaded = self.context.load.update(lag, queue_bytes, bool(line) and cpu + wait >= line)
        if overloaded and self.context.load.episodes != self._overload_episodes:
            self._overload_episodes = self.context.load.episodes
            logger.warning(
                "worker overloaded: loop %.0f ms late, %d bytes queued; probing stops and "
                "new sessions go elsewhere",
                lag * 1000,
                queue_bytes,
            )
        self.emit(
            "load",
            {
                "overloaded": overloaded,
                "loop_late": round(lag, 4),  # the latest a timer ran since the last report
                "cpu": round(cpu, 3),
                "wait": round(wait, 3),
                "consumers": sum(len(t.consumers) for t in self.sessions.values()),
                "sessions": len(self.sessions),
                "packets_out_per_s": round(rate),
                "queue_bytes": queue_bytes,
                "loop_lag": round(self.loop_lag, 4),
            },
        )

    def stats(self, params: control.Empty, now: float) -> control.StatsResult:
        totals = dict(self.closed_counters)
        for transport in self.sessions.values():
            for key, value in transport.counter_values().items():
                totals[key] = totals.get(key, 0) + value
        return {
            "sessions": len(self.sessions),
            "rooms": len(self.rooms),
            "producers": len(self.producers),
            "consumers": sum(len(t.consumers) for t in self.sessions.values()),
            "datagrams_dropped": self.demux.dropped,
            "loop_lag_seconds": self.loop_lag,
            "counters": totals,
        }


def _plain_result(transport: PlainTransport) -> control.PlainTransportResult:
    local = transport.socket.local
    return {
        "local_host": "" if isinstance(local, str) else local[0],
        "local_port": 0 if isinstance(local, str) else local[1],
        "local_path": local if isinstance(local, str) else "",
    }
