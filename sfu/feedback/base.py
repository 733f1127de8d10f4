"""The shape of one RTCP feature on a transport (after pion's interceptors).

A unit implements only the hooks it needs; the defaults do nothing. The transport calls
:meth:`FeedbackUnit.on_rtcp` for each incoming RTCP packet of a type in ``handles``,
:meth:`FeedbackUnit.on_sent` for each sent packet that carries a transport-wide sequence
number (only if the unit overrides it), :meth:`FeedbackUnit.report` at each report
interval (the packets join one compound RTCP packet, reports first), and
:meth:`FeedbackUnit.on_timer` when :meth:`FeedbackUnit.next_deadline` has come. Time is
always passed in: units read no clock, so tests drive them with plain numbers.
"""

from __future__ import annotations

from math import inf
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sfu.transport import Transport


class FeedbackUnit:
    handles: ClassVar[tuple[type, ...]] = ()

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def on_rtcp(self, packet: Any, now: float) -> None:
        """One incoming RTCP packet of a type in ``handles``."""

    def on_sent(self, twcc_seq: int, size: int, now: float) -> None:
        """A packet with transport-wide sequence number ``twcc_seq`` left (``size`` bytes)."""

    def report(self, now: float) -> list[bytes]:
        """RTCP packets for this interval's compound report."""
        return []

    def on_timer(self, now: float) -> None:
        """``next_deadline`` has come."""

    def next_deadline(self) -> float:
        return inf

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.transport.session_id}>"
