"""SRTP protect/unprotect for one peer, calling libsrtp directly.

pylibsrtp's Session copies every packet through a Python-level buffer slice and checks
types on each call; on the fan-out path that wrapper costs about as much as the
encryption itself (DESIGN.md: 320k vs 1.1M packets/s). We keep pylibsrtp for creating
and freeing the sessions and call its cffi ``lib.srtp_protect`` ourselves with a
preallocated buffer. This relies on pylibsrtp's ``_srtp`` attribute, pinned in
pyproject.toml.
"""

from __future__ import annotations

from typing import Any

from pylibsrtp import Error, Policy, Session
from pylibsrtp._binding import ffi, lib

MAX_PACKET = 1500
_TRAILER = 16 + 128 + 4  # tag + MKI + SRTCP index


class SrtpError(Exception):
    """Authentication or replay check failed, or libsrtp refused the packet."""


def _session(key: bytes, profile: int, inbound: bool) -> Session:
    policy = Policy(
        key=key,
        ssrc_type=Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=profile,
    )
    policy.allow_repeat_tx = True  # retransmissions reuse the packet index
    if inbound:  # the replay window matters only when receiving (it costs on protect)
        policy.window_size = 1024
    return Session(policy)


class SrtpContext:
    """Both directions of one DTLS-SRTP association."""

    __slots__ = ("_tx", "_rx", "_tx_ctx", "_rx_ctx", "_buf", "_view", "_len")

    def __init__(self, profile: int, tx_key: bytes, rx_key: bytes) -> None:
        self._tx = _session(tx_key, profile, inbound=False)
        self._rx = _session(rx_key, profile, inbound=True)
        self._tx_ctx = self._tx._srtp[0]
        self._rx_ctx = self._rx._srtp[0]
        self._buf = ffi.new("char[]", MAX_PACKET + _TRAILER)
        self._view = ffi.buffer(self._buf)
        self._len = ffi.new("int *")

    def _run(self, func: object, ctx: object, packet: bytes | bytearray, minimum: int) -> bytes:
        size = len(packet)
        if size > MAX_PACKET or size < minimum:
            raise SrtpError(f"packet of {size} bytes")
        self._view[0:size] = packet
        self._len[0] = size
        status = func(ctx, self._buf, self._len)  # type: ignore[operator]
        if status:
            raise SrtpError(f"libsrtp status {status}")
        data: bytes = self._view[0 : self._len[0]]
        return data

    def tx_state(self) -> tuple[Any, Any, Any, Any]:
        """(outbound context, C buffer, its Python view, length cell) for a caller that
        inlines :meth:`protect` on its hot path (WebRtcTransport.send_rtp)."""
        return self._tx_ctx, self._buf, self._view, self._len

    def protect(self, packet: bytes | bytearray) -> bytes:
        """Encrypt one RTP packet. The returned bytes are a new object, safe to hand to sendto."""
        size = len(packet)
        if size > MAX_PACKET:
            raise SrtpError(f"packet of {size} bytes")
        self._view[0:size] = packet
        self._len[0] = size
        if lib.srtp_protect(self._tx_ctx, self._buf, self._len):
            raise SrtpError("srtp_protect failed")
        data: bytes = self._view[0 : self._len[0]]
        return data

    def protect_rtcp(self, packet: bytes | bytearray) -> bytes:
        # 8 bytes: a receiver report without report blocks is a whole RTCP packet.
        return self._run(lib.srtp_protect_rtcp, self._tx_ctx, packet, 8)

    def unprotect(self, packet: bytes) -> bytes:
        return self._run(lib.srtp_unprotect, self._rx_ctx, packet, 12)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        return self._run(lib.srtp_unprotect_rtcp, self._rx_ctx, packet, 12)


srtp_protect = lib.srtp_protect

__all__ = ["MAX_PACKET", "Error", "SrtpContext", "SrtpError", "srtp_protect"]
