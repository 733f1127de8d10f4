"""RTCP: parsing compound packets, building reports and feedback, receive statistics.

Parsing and packet classes come from aiortc.rtp; this module adds what an SFU needs on
top: RFC 3550 receiver statistics for the publisher's streams, NTP time, and the few
feedback messages we send (PLI, FIR, REMB, NACK).
"""

from __future__ import annotations

import struct
import time

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    pack_remb_fci,
    unpack_remb_fci,
)

__all__ = [
    "RTCP_PSFB_APP",
    "RTCP_PSFB_FIR",
    "RTCP_PSFB_PLI",
    "RTCP_RTPFB_NACK",
    "RtcpByePacket",
    "RtcpError",
    "RtcpPsfbPacket",
    "RtcpRrPacket",
    "RtcpRtpfbPacket",
    "RtcpSdesPacket",
    "RtcpSrPacket",
    "ReceiveStats",
    "nack_seqs",
    "ntp_now",
    "parse_compound",
    "pli",
    "fir",
    "remb",
    "sender_report",
    "unpack_remb_fci",
]

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 to 1970


class RtcpError(ValueError):
    """A compound RTCP packet that does not parse."""


def parse_compound(data: bytes) -> list[AnyRtcpPacket]:
    try:
        return RtcpPacket.parse(data)
    except (ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
        raise RtcpError(str(exc)) from None


def nack_seqs(packet: RtcpRtpfbPacket) -> list[int]:
    """Sequence numbers of a Generic NACK, wrapped to 16 bits."""
    return [seq & 0xFFFF for seq in packet.lost]


def ntp_now(wall: float | None = None) -> int:
    """64-bit NTP timestamp of the wall clock."""
    now = time.time() if wall is None else wall
    seconds = int(now) + NTP_EPOCH_OFFSET
    fraction = int((now % 1) * (1 << 32))
    return ((seconds & 0xFFFFFFFF) << 32) | (fraction & 0xFFFFFFFF)


def pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=sender_ssrc, media_ssrc=media_ssrc))


def fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes:
    fci = struct.pack("!IB3x", media_ssrc, seq_nr & 0xFF)
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=sender_ssrc, media_ssrc=0, fci=fci))


def remb(sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes:
    return bytes(
        RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=sender_ssrc, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs)
        )
    )


def sender_report(ssrc: int, ntp: int, rtp_ts: int, packets: int, octets: int) -> bytes:
    info = RtcpSenderInfo(
        ntp_timestamp=ntp,
        rtp_timestamp=rtp_ts & 0xFFFFFFFF,
        packet_count=packets & 0xFFFFFFFF,
        octet_count=octets & 0xFFFFFFFF,
    )
    return bytes(RtcpSrPacket(ssrc=ssrc, sender_info=info))


class ReceiveStats:
    """RFC 3550 appendix A.3 and A.8 statistics for one received stream."""

    __slots__ = (
        "clock_rate",
        "base_seq",
        "max_seq",
        "cycles",
        "received",
        "expected_prior",
        "received_prior",
        "jitter",
        "_transit",
        "last_sr",
        "last_sr_at",
        "sr_rtp",
        "sr_ntp",
        "bytes",
        "last_fraction",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.base_seq = -1
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0
        self._transit: float | None = None
        self.last_sr = 0  # middle 32 bits of the last SR's NTP time
        self.last_sr_at = 0.0
        self.sr_rtp = -1  # RTP time and NTP time of the last SR, for translation
        self.sr_ntp = 0
        self.bytes = 0
        self.last_fraction = 0  # of the last report, /256

    def on_packet(self, seq: int, ts: int, size: int, now: float) -> None:
        self.received += 1
        self.bytes += size
        if self.base_seq < 0:
            self.base_seq = self.max_seq = seq
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if seq < self.max_seq:
                    self.cycles += 1 << 16
                self.max_seq = seq
        transit = now * self.clock_rate - ts
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < self.clock_rate * 10:  # ignore timestamp jumps
                self.jitter += (d - self.jitter) / 16.0
        self._transit = transit

    def on_sender_report(self, ntp: int, rtp_ts: int, now: float) -> None:
        self.last_sr = (ntp >> 16) & 0xFFFFFFFF
        self.last_sr_at = now
        self.sr_ntp = ntp
        self.sr_rtp = rtp_ts

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    def lost(self) -> int:
        if self.base_seq < 0:
            return 0
        return max(0, self.extended_max - self.base_seq + 1 - self.received)

    def report(self, ssrc: int, now: float) -> RtcpReceiverInfo:
        expected = self.extended_max - self.base_seq + 1 if self.base_seq >= 0 else 0
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        self.last_fraction = fraction
        dlsr = int((now - self.last_sr_at) * 65536) if self.last_sr else 0
        return RtcpReceiverInfo(
            ssrc=ssrc,
            fraction_lost=fraction,
            packets_lost=min(self.lost(), 0x7FFFFF),
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter) & 0xFFFFFFFF,
            lsr=self.last_sr,
            dlsr=dlsr & 0xFFFFFFFF,
        )


def receiver_report(sender_ssrc: int, reports: list[RtcpReceiverInfo]) -> bytes:
    return bytes(RtcpRrPacket(ssrc=sender_ssrc, reports=reports))


def rtt_from_report(report: RtcpReceiverInfo, now_ntp: int) -> float | None:
    """Round trip from LSR/DLSR (RFC 3550 6.4.1), in seconds."""
    if not report.lsr:
        return None
    middle = (now_ntp >> 16) & 0xFFFFFFFF
    rtt = (middle - report.lsr - report.dlsr) & 0xFFFFFFFF
    if rtt > 0x7FFFFFFF:
        return None
    return rtt / 65536.0
