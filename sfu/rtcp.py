"""RTCP: parsing compound packets, building reports and feedback, receive statistics.

Parsing and packet classes come from aiortc.rtp; this module adds what an SFU needs on
top: RFC 3550 receiver statistics for the publisher's streams, NTP time, the few
feedback messages we send (PLI, FIR, REMB, NACK), and transport-wide congestion control
feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01), which aiortc does not parse:
:func:`parse_compound` returns a :class:`TransportFeedback` for it.
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
    "TransportFeedback",
    "build_transport_feedback",
    "parse_transport_feedback",
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


RTCP_RTPFB = 205
RTCP_RTPFB_TWCC = 15  # transport-wide congestion control feedback


def parse_compound(data: bytes) -> list[AnyRtcpPacket | TransportFeedback]:
    """Every packet of a compound (or reduced-size) RTCP packet; raises RtcpError."""
    if RTCP_RTPFB not in data:  # a byte scan: most compounds have no transport-cc
        return _parse_aiortc(data)
    out: list[AnyRtcpPacket | TransportFeedback] = []
    pos = 0
    start = 0  # the run of packets aiortc parses, flushed at each transport-cc packet
    size = len(data)
    while pos < size:
        if pos + 4 > size:
            raise RtcpError("RTCP packet shorter than its header")
        first, packet_type, length = _RTCP_HEADER.unpack_from(data, pos)
        end = pos + 4 + 4 * length
        if end > size:
            raise RtcpError("RTCP packet is truncated")
        if packet_type == RTCP_RTPFB and first & 0x1F == RTCP_RTPFB_TWCC:
            if first >> 6 != 2:
                raise RtcpError("RTCP packet has invalid version")
            if start < pos:
                out.extend(_parse_aiortc(data[start:pos]))
            payload = data[pos + 4 : end]
            if first & 0x20:
                if not payload or not payload[-1] or payload[-1] > len(payload):
                    raise RtcpError("RTCP packet padding length is invalid")
                payload = payload[: -payload[-1]]
            out.append(parse_transport_feedback(payload))
            start = end
        pos = end
    if start < size:
        out.extend(_parse_aiortc(data[start:]))
    return out


def _parse_aiortc(data: bytes) -> list[AnyRtcpPacket | TransportFeedback]:
    try:
        return list(RtcpPacket.parse(data))
    except (ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
        raise RtcpError(str(exc)) from None


_RTCP_HEADER = struct.Struct("!BBH")
_TWCC_HEADER = struct.Struct("!IIHHI")
_U16 = struct.Struct("!H")
_I16 = struct.Struct("!h")
TWCC_TICK = 0.000250  # receive deltas are in multiples of 250 microseconds
TWCC_REFERENCE = 0.064  # the reference time is in multiples of 64 ms
MAX_TWCC_STATUS = 0xFFFF


class TransportFeedback:
    """One transport-cc feedback packet, parsed.

    ``arrivals`` holds, for each transport-wide sequence number from ``base_seq`` on (16-bit,
    wrapped), the arrival time in seconds on the receiver's clock (the 24-bit reference time
    plus the deltas, so only differences mean anything), or None for a packet not received.
    """

    __slots__ = ("ssrc", "media_ssrc", "base_seq", "reference_time", "fb_count", "arrivals")

    def __init__(
        self,
        ssrc: int,
        media_ssrc: int,
        base_seq: int,
        reference_time: int,
        fb_count: int,
        arrivals: list[float | None],
    ) -> None:
        self.ssrc = ssrc
        self.media_ssrc = media_ssrc
        self.base_seq = base_seq
        self.reference_time = reference_time  # 24-bit, in units of 64 ms
        self.fb_count = fb_count
        self.arrivals = arrivals

    def __repr__(self) -> str:
        received = sum(1 for a in self.arrivals if a is not None)
        return (
            f"<TransportFeedback #{self.fb_count} seq {self.base_seq}+{len(self.arrivals)}"
            f" received {received}>"
        )


def parse_transport_feedback(payload: bytes) -> TransportFeedback:
    """The body of an RTPFB FMT=15 packet (after the 4-byte header, padding removed)."""
    size = len(payload)
    if size < 16:
        raise RtcpError("transport-cc feedback shorter than its fixed part")
    ssrc, media_ssrc, base_seq, count, ref_and_count = _TWCC_HEADER.unpack_from(payload, 0)
    reference = ref_and_count >> 8
    pos = 16
    symbols: list[int] = []
    while len(symbols) < count:
        if pos + 2 > size:
            raise RtcpError("transport-cc feedback: packet chunks truncated")
        chunk = _U16.unpack_from(payload, pos)[0]
        pos += 2
        left = count - len(symbols)
        if not chunk & 0x8000:  # run length chunk: one symbol, 13-bit run
            run = chunk & 0x1FFF
            if run == 0:
                raise RtcpError("transport-cc feedback: empty run length chunk")
            symbols.extend([(chunk >> 13) & 0x3] * min(run, left))
        elif not chunk & 0x4000:  # status vector, 14 one-bit symbols
            symbols.extend([(chunk >> shift) & 1 for shift in range(13, 13 - min(14, left), -1)])
        else:  # status vector, 7 two-bit symbols
            symbols.extend([(chunk >> shift) & 3 for shift in range(12, 12 - 2 * min(7, left), -2)])
    arrivals: list[float | None] = []
    ticks = (reference - (1 << 24) if reference & 0x800000 else reference) * 256  # 64 ms
    for symbol in symbols:
        if symbol == 0:
            arrivals.append(None)
            continue
        if symbol == 1:
            if pos + 1 > size:
                raise RtcpError("transport-cc feedback: receive deltas truncated")
            ticks += payload[pos]
            pos += 1
        elif symbol == 2:
            if pos + 2 > size:
                raise RtcpError("transport-cc feedback: receive deltas truncated")
            ticks += _I16.unpack_from(payload, pos)[0]
            pos += 2
        else:
            raise RtcpError("transport-cc feedback: reserved status symbol")
        arrivals.append(ticks * TWCC_TICK)
    return TransportFeedback(ssrc, media_ssrc, base_seq, reference, ref_and_count & 0xFF, arrivals)


def build_transport_feedback(
    sender_ssrc: int,
    media_ssrc: int,
    base_seq: int,
    fb_count: int,
    arrivals: list[int | None],
) -> bytes:
    """An RTPFB FMT=15 packet for consecutive sequence numbers from ``base_seq``.

    ``arrivals`` are receive times in 250 us ticks on our clock (None: not received). The
    first received packet sets the reference time; each later delta must fit 16 signed bits
    (8.19 s), which the caller guarantees by splitting feedback at longer gaps.
    """
    if not arrivals or len(arrivals) > MAX_TWCC_STATUS:
        raise ValueError("transport-cc feedback needs 1..65535 packet statuses")
    first = next((a for a in arrivals if a is not None), 0)
    reference = first // 256  # 64 ms units
    previous = reference * 256
    symbols: list[int] = []
    deltas = bytearray()
    for arrival in arrivals:
        if arrival is None:
            symbols.append(0)
            continue
        delta = arrival - previous
        previous = arrival
        if 0 <= delta <= 0xFF:
            symbols.append(1)
            deltas.append(delta)
        elif -0x8000 <= delta <= 0x7FFF:
            symbols.append(2)
            deltas += _I16.pack(delta)
        else:
            raise ValueError(f"transport-cc receive delta {delta} ticks does not fit 16 bits")
    body = bytearray(
        _TWCC_HEADER.pack(
            sender_ssrc,
            media_ssrc,
            base_seq & 0xFFFF,
            len(arrivals),
            ((reference & 0xFFFFFF) << 8) | (fb_count & 0xFF),
        )
    )
    body += _chunks(symbols)
    body += deltas
    padding = -len(body) % 4
    first_byte = 0x80 | RTCP_RTPFB_TWCC
    if padding:
        first_byte |= 0x20
        body += bytes(padding - 1) + bytes((padding,))
    return _RTCP_HEADER.pack(first_byte, RTCP_RTPFB, len(body) // 4) + bytes(body)


def _chunks(symbols: list[int]) -> bytes:
    """Packet status chunks: runs of 7 or more as run length chunks, the rest as vectors
    (one-bit when they hold only "not received"/"small delta", else two-bit)."""
    out = bytearray()
    i = 0
    n = len(symbols)
    while i < n:
        symbol = symbols[i]
        run = 1
        while i + run < n and run < 0x1FFF and symbols[i + run] == symbol:
            run += 1
        if run >= 7:
            out += _U16.pack((symbol << 13) | run)
            i += run
            continue
        window = symbols[i : i + 14]
        if max(window) <= 1:
            chunk = 0x8000
            for k, s in enumerate(window):
                chunk |= s << (13 - k)
            i += 14
        else:
            chunk = 0xC000
            for k, s in enumerate(symbols[i : i + 7]):
                chunk |= s << (12 - 2 * k)
            i += 7
        out += _U16.pack(chunk)
    return bytes(out)


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
