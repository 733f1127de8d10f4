"""One viewer's VP8 temporal-layer filter (sans-I/O, per packet of a consumer).

A VP8 encoder with temporal layers marks each frame with a TID (RFC 7741): T0 frames
reference only T0, T1 frames T0 and T1, and so on, so a viewer can be sent only the
frames up to some TID and still decode every one: a finer step below a spatial switch
(T0 of a 30 fps encoding is 7.5 fps at well under half the bitrate).

The filter says which packets go; the consumer renumbers around the dropped ones so the
viewer sees no gap: a dropped packet must not look like a loss (the viewer would NACK
it), and a dropped frame must not leave a hole in the PictureIDs (libwebrtc's receiver
holds a frame back while an earlier PictureID is missing). The filter remembers recent
drops so a packet arriving late (a publisher's retransmission) gets the numbers it would
have had, and what it sent so a viewer's NACK maps back to the original packet.

Going down takes effect at the next frame; going up only one layer at a time and only at
a layer-sync frame (Y bit: it references T0 alone) or at a keyframe, since a T1 frame
that is not a sync frame may reference an earlier T1 frame this viewer never got.
"""

from __future__ import annotations

from collections import deque

from sfu.rtp import RtpPacket

__all__ = ["TemporalFilter"]

_SENT_SLOTS = 1024  # sequence numbers remembered for NACKs (seconds of video)


def _newer(a: int, b: int, half: int) -> bool:
    """Whether ``a`` comes after ``b`` in a wrapping counter whose half range is ``half``."""
    return a != b and (a - b) & (2 * half - 1) < half


class TemporalFilter:
    """Which packets of a VP8 encoding with temporal layers go to one viewer."""

    __slots__ = ("target", "current", "newest_seq", "frame_pid", "seq_drops", "pid_drops", "sent")

    def __init__(self, target: int) -> None:
        self.target = target  # the highest TID wanted
        self.current = target  # the highest TID forwarded now (changes at safe frames)
        self.newest_seq = -1
        self.frame_pid = -1  # PictureID of the newest frame seen
        self.seq_drops: deque[int] = deque(maxlen=512)  # source sequence numbers dropped
        self.pid_drops: deque[int] = deque(maxlen=256)  # source PictureIDs dropped
        self.sent = [-1] * _SENT_SLOTS  # out_seq << 16 | source seq, by out_seq

    def reset(self) -> None:
        """The consumer restarted on a (new) stream: numbering starts over."""
        self.newest_seq = -1
        self.frame_pid = -1
        self.seq_drops.clear()
        self.pid_drops.clear()
        self.sent = [-1] * _SENT_SLOTS

    def admit(self, packet: RtpPacket) -> int:
        """1: send; 0: drop a late packet (already numbered around); -1: drop and
        renumber what follows; -2: as -1, and the frame's PictureID goes too."""
        tid = packet.tid
        seq = packet.seq
        if self.newest_seq >= 0 and not _newer(seq, self.newest_seq, 0x8000):
            return 1 if tid <= self.current else 0  # late: decided by the layer now
        self.newest_seq = seq
        new_frame = packet.pid != self.frame_pid
        self.frame_pid = packet.pid
        if packet.keyframe:
            self.current = self.target
        elif new_frame and self.target < self.current:
            self.current = self.target
        elif tid == self.current + 1 and tid <= self.target and packet.tsync:
            self.current = tid
        if tid <= self.current:
            return 1
        self.seq_drops.append(seq)
        if new_frame and packet.pid >= 0:
            self.pid_drops.append(packet.pid)
            return -2
        return -1

    def late_seq(self, seq: int) -> int:
        """How many drops the consumer's offset has counted since ``seq``: a late packet's
        out number is its seq plus the offset plus this."""
        if self.newest_seq < 0 or not _newer(self.newest_seq, seq, 0x8000):
            return 0
        return sum(1 for dropped in self.seq_drops if _newer(dropped, seq, 0x8000))

    def late_pid(self, pid: int) -> int:
        """As :meth:`late_seq`, for a PictureID (15 bits)."""
        if self.frame_pid < 0 or not _newer(self.frame_pid, pid, 0x4000):
            return 0
        return sum(1 for dropped in self.pid_drops if _newer(dropped, pid, 0x4000))

    def record(self, out_seq: int, seq: int) -> None:
        self.sent[out_seq % _SENT_SLOTS] = out_seq << 16 | seq

    def source_of(self, out_seq: int) -> int:
        """The source sequence number a viewer's ``out_seq`` was sent as, or -1."""
        entry = self.sent[out_seq % _SENT_SLOTS]
        return entry & 0xFFFF if entry >= 0 and entry >> 16 == out_seq else -1
