"""DTLS-SRTP for one peer over memory BIOs, sans-I/O.

pyOpenSSL does the handshake; this class only moves datagrams in and out, verifies the
peer certificate against the fingerprint signalled in SDP (the only thing that binds the
DTLS session to the signalling channel), and derives the SRTP keys (RFC 5764).

The SFU is always the server (it answers, a=setup:passive); the client role exists for
the load client and tests, which play the browser (a=setup:active) with the same code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import pylibsrtp
from aiortc.rtcdtlstransport import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AEAD_AES_256_GCM,
    SRTP_AES128_CM_SHA1_80,
    X509_DIGEST_ALGORITHMS,
    RTCCertificate,
    SRTPProtectionProfile,
    certificate_digest,
)
from OpenSSL import SSL

logger = logging.getLogger(__name__)

# Our preference order: AES-GCM first, because HMAC-SHA1 dominates AES_CM's cost on the
# fan-out path (see DESIGN.md); OpenSSL picks the first of ours that the client offers.
PROFILES: list[SRTPProtectionProfile] = []
for _profile in (SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM, SRTP_AES128_CM_SHA1_80):
    try:
        pylibsrtp.Policy(srtp_profile=_profile.libsrtp_profile)
    except pylibsrtp.Error:  # pragma: no cover - depends on how libsrtp was built
        continue
    PROFILES.append(_profile)

MTU = 1200


def is_dtls(data: bytes) -> bool:
    """RFC 7983: DTLS records start with a content type between 20 and 63."""
    return len(data) > 13 and 19 < data[0] < 64


class DtlsError(Exception):
    """The handshake failed or the peer is not who the SDP said."""


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    profile: int  # pylibsrtp profile constant
    tx_key: bytes  # key + salt we protect with
    rx_key: bytes  # key + salt we unprotect with
    name: str


def local_fingerprint(certificate: RTCCertificate) -> tuple[str, str]:
    for fp in certificate.getFingerprints():
        if fp.algorithm == "sha-256":
            return fp.algorithm, fp.value
    raise DtlsError("certificate has no sha-256 fingerprint")  # pragma: no cover


Role = Literal["server", "client"]


class DtlsSession:
    """One DTLS association. The SFU is the server (a=setup:passive), as every answerer
    may be; a ``"client"`` session (a=setup:active) sends the first flight from start()."""

    def __init__(
        self,
        certificate: RTCCertificate,
        remote_fingerprints: list[tuple[str, str]],
        label: str = "",
        role: Role = "server",
    ) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"DTLS role must be 'server' or 'client', not {role!r}")
        supported = [(a, v) for a, v in remote_fingerprints if a in X509_DIGEST_ALGORITHMS]
        if not supported:
            raise DtlsError("no supported fingerprint algorithm (sha-256/384/512) in the offer")
        self._remote_fingerprints = supported
        self._label = label
        self.role = role
        # aiortc's RTCCertificate builds the context (certificate, key, ciphers, use_srtp).
        context = certificate._create_ssl_context(srtp_profiles=PROFILES)
        self._ssl = SSL.Connection(context, None)
        if role == "server":
            self._ssl.set_accept_state()
        else:
            self._ssl.set_connect_state()
        self._ssl.set_ciphertext_mtu(MTU)
        self.connected = False
        self.closed = False
        self.keys: SrtpKeys | None = None

    def start(self) -> list[bytes]:
        """The client's first flight (ClientHello); a server speaks only when spoken to."""
        if self.role == "server" or self.connected or self.closed:
            return []
        return self._handshake()

    def receive(self, data: bytes) -> list[bytes]:
        """Feed one DTLS datagram; return the datagrams to send back.

        Raises DtlsError when the handshake fails or the fingerprint does not match; after
        that the peer must be closed.
        """
        if self.closed:
            return []
        try:
            self._ssl.bio_write(data)
        except SSL.Error as exc:
            raise DtlsError(f"bad DTLS record: {exc}") from None
        if not self.connected:
            return self._handshake()
        # After the handshake only alerts (close_notify) or retransmitted Finished arrive.
        try:
            self._ssl.recv(1500)
        except SSL.ZeroReturnError:
            self.closed = True
        except SSL.WantReadError:
            pass
        except SSL.Error:
            pass
        return self._pending()

    def next_timeout(self) -> float | None:
        """Seconds until a handshake retransmission is due, while handshaking."""
        if self.connected or self.closed:
            return None
        return self._ssl.DTLSv1_get_timeout()

    def handle_timeout(self) -> list[bytes]:
        if self.connected or self.closed:
            return []
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error:
            return []
        return self._pending()

    def close(self) -> list[bytes]:
        """Send close_notify so the browser learns at once that the session ended."""
        if self.closed or not self.connected:
            self.closed = True
            return []
        self.closed = True
        try:
            self._ssl.shutdown()
        except SSL.Error:
            pass
        return self._pending()

    def _handshake(self) -> list[bytes]:
        """Advance the handshake; once it completes, check the peer and derive the keys."""
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            return self._pending()
        except SSL.Error as exc:
            self.closed = True
            raise DtlsError(f"DTLS handshake failed: {exc}") from exc
        self._verify_peer()
        self.keys = self._export_keys()
        self.connected = True
        logger.info("dtls %s: connected, %s", self._label, self.keys.name)
        return self._pending()

    def _pending(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            try:
                out.append(self._ssl.bio_read(MTU + 100))
            except SSL.WantReadError:
                return out
            except SSL.Error:
                return out

    def _verify_peer(self) -> None:
        certificate = self._ssl.get_peer_certificate(as_cryptography=True)
        if certificate is None:
            self.closed = True
            raise DtlsError("peer sent no certificate")
        for algorithm, value in self._remote_fingerprints:
            if certificate_digest(certificate, algorithm) != value.upper():
                self.closed = True
                raise DtlsError("peer certificate does not match the SDP fingerprint")

    def _export_keys(self) -> SrtpKeys:
        selected = self._ssl.get_selected_srtp_profile()
        for profile in PROFILES:
            if profile.openssl_profile == selected:
                break
        else:
            self.closed = True
            raise DtlsError("no SRTP profile negotiated")
        material = self._ssl.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length)
        )
        # RFC 5764 4.2: client key, server key, client salt, server salt; each side
        # protects with its own half.
        client = profile.get_key_and_salt(material, 0)
        server = profile.get_key_and_salt(material, 1)
        tx, rx = (server, client) if self.role == "server" else (client, server)
        return SrtpKeys(
            profile=profile.libsrtp_profile,
            tx_key=tx,
            rx_key=rx,
            name=profile.openssl_profile.decode(),
        )
