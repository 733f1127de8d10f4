"""RTCP feedback, one feature per unit (see :mod:`sfu.feedback.base`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sfu.feedback.base import FeedbackUnit
from sfu.feedback.keyframe_requests import KeyframeRequests
from sfu.feedback.nack_requester import NackRequester
from sfu.feedback.nack_responder import NackResponder
from sfu.feedback.receiver_reports import ReceiverReports
from sfu.feedback.remb import Remb
from sfu.feedback.sender_reports import SenderReports
from sfu.feedback.twcc import TwccReceiver, TwccSender

if TYPE_CHECKING:
    from sfu.transport import Transport


def standard_units(transport: Transport, publisher_bitrate: int) -> list[FeedbackUnit]:
    """Every transport's units; reports come first so a compound starts with SR or RR."""
    return [
        SenderReports(transport),
        ReceiverReports(transport),
        Remb(transport, publisher_bitrate),
        NackRequester(transport),
        NackResponder(transport),
        KeyframeRequests(transport),
        TwccReceiver(transport),
        TwccSender(transport),
    ]


__all__ = [
    "FeedbackUnit",
    "KeyframeRequests",
    "NackRequester",
    "NackResponder",
    "ReceiverReports",
    "Remb",
    "SenderReports",
    "TwccReceiver",
    "TwccSender",
    "standard_units",
]
