"""The control channel's methods and events, declared once for both processes.

Each method is a :class:`Method` naming its request and reply shapes as TypedDicts. The
worker routes requests through its handler table (checked against :data:`METHODS` at
start), validates every request with :func:`check` before a handler sees it, and the
control process calls ``WorkerHandle.call(control.PUBLISH, {...})``, which mypy checks
against the same shapes. The wire format (length-prefixed JSON) is :mod:`sfu.channel`.

(No ``from __future__ import annotations`` here: TypedDict must see ``NotRequired`` as
an object, not a string, to know which keys are optional.)
"""

import types
import typing
from dataclasses import dataclass
from typing import Any, Generic, Literal, NotRequired, TypedDict, TypeVar, get_args, get_origin


class ControlError(Exception):
    """A request that cannot be served; ``code`` is machine-readable, ``message`` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- shapes ------------------------------------------------------------------------------------


class Empty(TypedDict):
    pass


class TrackInfo(TypedDict):
    id: str
    mid: str
    kind: str
    codec: str
    encodings: int


class PublishParams(TypedDict):
    session: str
    room: str
    offer: str
    identity: NotRequired[str]
    renegotiate: NotRequired[bool]


class PublishResult(TypedDict):
    answer: str
    tracks: list[TrackInfo]
    removed: list[str]


class ViewParams(TypedDict):
    """A client-offered receive connection (WHEP): one consumer per receiving section."""

    session: str
    room: str
    offer: str
    producers: list[str]
    identity: NotRequired[str]


class ViewTrack(TypedDict):
    id: str
    kind: str
    producer: str


class ViewResult(TypedDict):
    answer: str
    tracks: list[ViewTrack]


class SubscriberParams(TypedDict):
    session: str
    room: str
    identity: NotRequired[str]


class WantedConsumer(TypedDict):
    producer: str
    stream: str
    track: str


class SubscriberOfferParams(TypedDict):
    """``ice_restart``: the offer carries new ICE credentials (the client asked for an ICE
    restart, e.g. its network changed); the offer is new even if the tracks are not."""

    session: str
    consumers: list[WantedConsumer]
    ice_restart: NotRequired[bool]


class SubscriberOfferResult(TypedDict):
    offer: str
    version: int
    changed: bool


class SubscriberAnswerParams(TypedDict):
    session: str
    answer: str
    version: int


class ProducerPauseParams(TypedDict):
    producer: str
    paused: bool


class PreferencesParams(TypedDict):
    """A viewer's wishes for every video track of its session: the tallest picture it
    wants, the highest layer (0 lowest), or one encoding by rid (or index)."""

    session: str
    max_height: NotRequired[int | None]
    max_layer: NotRequired[int | None]
    encoding: NotRequired[str | None]
    max_temporal: NotRequired[int | None]


class ProducerParams(TypedDict):
    producer: str


class IceRestartParams(TypedDict):
    """A client-offered session's peer sent ICE credentials (WHIP/WHEP PATCH). ``ufrag``
    is the peer's ice-ufrag: the current one means a trickle (nothing changes), another
    one an ICE restart."""

    session: str
    ufrag: str


class IceRestartResult(TypedDict):
    """The server's credentials after the request and its host candidate (the value of
    an ``a=candidate:`` line)."""

    restarted: bool
    ufrag: str
    pwd: str
    candidate: str


class CloseParams(TypedDict):
    session: str
    reason: NotRequired[str]


class PlainTransportParams(TypedDict):
    """A plain RTP/RTCP transport (no ICE, no DTLS) on a socket of its own, for a local
    recorder or a pipe to another worker. ``remote_host``/``remote_port`` (UDP) or
    ``remote_path`` (a Unix datagram socket) name the peer; without them the transport
    answers whoever sends to it first (comedia)."""

    session: str
    room: str
    identity: NotRequired[str]
    listen: NotRequired[str]
    remote_host: NotRequired[str]
    remote_port: NotRequired[int]
    remote_path: NotRequired[str]


class PlainTransportResult(TypedDict):
    local_host: str
    local_port: int
    local_path: str


class ConsumeParams(TypedDict):
    """One consumer of ``producer`` on the plain transport ``session``."""

    session: str
    producer: str
    pipe: NotRequired[bool]


class ConsumeResult(TypedDict):
    id: str
    kind: str
    codec: str
    clock_rate: int
    channels: int
    payload_type: int
    ssrcs: list[int]
    fmtp: dict[str, str]


class PipeOutParams(TypedDict):
    """The home side of a pipe: a plain UDP transport on ``listen`` (loopback by default)
    with a pipe consumer of ``producer`` (every encoding, SSRCs chosen here). It sends
    nothing until ``plain_connect`` names the far end, and closes with its producer."""

    session: str
    room: str
    producer: str
    listen: NotRequired[str]


class PipeOutResult(TypedDict):
    local_host: str
    local_port: int
    kind: str
    codec: str
    clock_rate: int
    channels: int
    payload_type: int
    fmtp: dict[str, str]
    ssrcs: list[int]
    red_payload_type: NotRequired[int]  # the publisher sends RED (sfu/red.py) with this


class PipeInParams(TypedDict):
    """The far side of a pipe: a plain transport toward the home side's socket and a
    producer (with the home producer's id) whose encodings are the pipe's SSRCs. Viewers
    of this worker consume it like a local producer."""

    session: str
    room: str
    producer: str
    kind: str
    codec: str
    clock_rate: int
    channels: int
    payload_type: int
    fmtp: dict[str, str]
    ssrcs: list[int]
    red_payload_type: NotRequired[int]
    remote_host: str
    remote_port: int
    listen: NotRequired[str]


class PlainConnectParams(TypedDict):
    """Name the peer of a plain transport that has none yet (a pipe's home side)."""

    session: str
    remote_host: str
    remote_port: int


class PipeDemandParams(TypedDict):
    """What the far side of pipe ``session`` (its home side) needs of the producer: one
    flag per encoding, lowest first (the far worker's ``layers`` event)."""

    session: str
    active: list[bool]


class StatsResult(TypedDict):
    sessions: int
    rooms: int
    producers: int
    consumers: int
    datagrams_dropped: int
    loop_lag_seconds: float
    counters: dict[str, int]
    cpu_seconds: NotRequired[float]
    handle_ms: NotRequired[float]
    intake_dropped: NotRequired[int]  # media that found the shared port's queue full
    send_failed: NotRequired[int]  # datagrams the kernel would not take


class PingResult(TypedDict):
    now: float


# -- the table ----------------------------------------------------------------------------------

P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Method(Generic[P, R]):
    name: str
    params: type[P]
    result: type[R]
    doc: str


PUBLISH = Method(
    "publish", PublishParams, PublishResult, "a publisher's offer, new or renegotiated"
)
VIEW = Method("view", ViewParams, ViewResult, "a viewer's offer for the given producers (WHEP)")
SUBSCRIBER = Method(
    "subscriber", SubscriberParams, Empty, "open a server-offered receive connection"
)
SUBSCRIBER_OFFER = Method(
    "subscriber_offer",
    SubscriberOfferParams,
    SubscriberOfferResult,
    "the offer for the wanted producers",
)
SUBSCRIBER_ANSWER = Method(
    "subscriber_answer", SubscriberAnswerParams, Empty, "the client's answer to an offer"
)
ICE_RESTART = Method(
    "ice_restart",
    IceRestartParams,
    IceRestartResult,
    "new ICE credentials on a client-offered session (trickle when unchanged)",
)
PRODUCER_PAUSE = Method("producer_pause", ProducerPauseParams, Empty, "mute or unmute a producer")
PREFERENCES = Method(
    "preferences", PreferencesParams, Empty, "a viewer's layer wishes (caps its layer choice)"
)
PRODUCER_CLOSE = Method("producer_close", ProducerParams, Empty, "end a producer and its consumers")
CLOSE = Method("close", CloseParams, Empty, "end a session (any transport)")
PLAIN_TRANSPORT = Method(
    "plain_transport", PlainTransportParams, PlainTransportResult, "open a plain RTP transport"
)
CONSUME = Method("consume", ConsumeParams, ConsumeResult, "a consumer on a plain transport")
PIPE_OUT = Method(
    "pipe_out", PipeOutParams, PipeOutResult, "a producer piped out to another worker"
)
PIPE_IN = Method("pipe_in", PipeInParams, PlainTransportResult, "a producer piped in")
PLAIN_CONNECT = Method(
    "plain_connect", PlainConnectParams, Empty, "give a plain transport its peer's address"
)
PIPE_DEMAND = Method(
    "pipe_demand", PipeDemandParams, Empty, "which encodings a pipe's far side needs"
)
STATS = Method("stats", Empty, StatsResult, "counters of the whole worker")
PING = Method("ping", Empty, PingResult, "liveness")

METHODS: dict[str, Method[Any, Any]] = {
    m.name: m
    for m in (
        PUBLISH,
        VIEW,
        SUBSCRIBER,
        SUBSCRIBER_OFFER,
        SUBSCRIBER_ANSWER,
        ICE_RESTART,
        PRODUCER_PAUSE,
        PRODUCER_CLOSE,
        PREFERENCES,
        CLOSE,
        PLAIN_TRANSPORT,
        CONSUME,
        PIPE_OUT,
        PIPE_IN,
        PLAIN_CONNECT,
        PIPE_DEMAND,
        STATS,
        PING,
    )
}

# Events a worker sends unasked, with what their data holds.
EVENTS: dict[str, str] = {
    "ready": "index, port, tcp_port, pid, fingerprint: the worker is listening",
    "connected": "session, srtp_profile: a transport's DTLS is up (plain transports: first packet)",
    "closed": "session, reason: a transport ended",
    "consumer_closed": "session, consumer: a consumer ended (its producer went away)",
    "producer_closed": "session, producer: a producer ended",
    "active_speaker": "room, producer, level: the loudest audio producer changed",
    "quality": "session, quality, loss, rtt: a connection's quality band changed",
    "layer": "session, consumer, producer, layer, rid, width, height, temporal, change, "
    "estimate: a viewer's simulcast layer changed (change 'encoding': at a keyframe of the "
    "new one) or the highest VP8 temporal layer it is sent (change 'temporal'; 3: all)",
    "layers": "session, producer, active, rids: which encodings a simulcast publisher should "
    "send (False: nobody watches it)",
    "load": "cpu, consumers, sessions, packets_out_per_s, queue_bytes, loop_lag: the worker's "
    "load over the last second (every half second), for admission control and placement",
    "video_paused": "session, consumer, producer, paused, estimate: a viewer's link cannot carry "
    "audio and the lowest video layer, so its video paused (or resumed)",
}

# -- validation -----------------------------------------------------------------------------------


def check(method: Method[P, R], params: object) -> P:
    """``params`` as ``method`` takes them, or ControlError("bad_request") naming the field."""
    _check_typed_dict(method.params, params, method.name)
    return typing.cast(P, params)


def _check_typed_dict(shape: type, value: object, where: str) -> None:
    if not isinstance(value, dict):
        raise ControlError("bad_request", f"{where} must be an object")
    hints = typing.get_type_hints(shape, include_extras=True)
    required: frozenset[str] = getattr(shape, "__required_keys__", frozenset())
    for key in required:
        if key not in value:
            raise ControlError("bad_request", f"{where} needs {key}")
    for key, item in value.items():
        if key not in hints:
            raise ControlError("bad_request", f"{where} has an unknown field {key!r}")
        _check_value(hints[key], item, f"{where}.{key}")


def _check_value(hint: Any, value: object, where: str) -> None:
    origin = get_origin(hint)
    if origin is NotRequired:
        _check_value(get_args(hint)[0], value, where)
        return
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in get_args(hint):
            try:
                _check_value(option, value, where)
                return
            except ControlError as exc:
                errors.append(exc.message)
        raise ControlError("bad_request", errors[0])
    if hint is type(None):
        if value is not None:
            raise ControlError("bad_request", f"{where} must be null")
        return
    if origin is Literal:
        if value not in get_args(hint):
            raise ControlError("bad_request", f"{where} must be one of {get_args(hint)}")
        return
    if origin is list:
        if not isinstance(value, list):
            raise ControlError("bad_request", f"{where} must be a list")
        (item_hint,) = get_args(hint)
        for index, item in enumerate(value):
            _check_value(item_hint, item, f"{where}[{index}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise ControlError("bad_request", f"{where} must be an object")
        _key_hint, item_hint = get_args(hint)
        for key, item in value.items():
            _check_value(item_hint, item, f"{where}.{key}")
        return
    if isinstance(hint, type) and typing.is_typeddict(hint):
        _check_typed_dict(hint, value, where)
        return
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    elif hint is Any:
        ok = True
    else:  # pragma: no cover - a shape this validator does not know is a programming error
        raise TypeError(f"{where}: cannot check {hint!r}")
    if not ok:
        raise ControlError("bad_request", f"{where} must be {getattr(hint, '__name__', hint)}")
