"""DTLS-SRTP, sans-I/O: a pyOpenSSL client over memory BIOs talks to DtlsSession.

No sockets: datagrams are shuttled between the two state machines by ``dtls_handshake``,
so loss and garbage can be injected exactly where a test wants them. The server is tested
against a client built from pyOpenSSL directly (its keys derived here, independently);
DtlsSession's client role is then tested against the server.
"""

from __future__ import annotations

import os
import random
import struct

import pylibsrtp
import pytest
from aiortc.rtcdtlstransport import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AEAD_AES_256_GCM,
    SRTP_AES128_CM_SHA1_80,
    RTCCertificate,
    SRTPProtectionProfile,
)
from OpenSSL import SSL

from sfu.dtls import PROFILES, DtlsError, DtlsSession, is_dtls, local_fingerprint
from sfu.srtp import SrtpContext
from tests.wire import dtls_handshake as handshake

CLIENT_CIPHERS = b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA"
ALL_PROFILES = (SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM, SRTP_AES128_CM_SHA1_80)


class DtlsClient:
    """A browser's side of DTLS-SRTP (a=setup:active), built from pyOpenSSL directly."""

    def __init__(
        self,
        certificate: RTCCertificate | None = None,
        profiles: tuple[SRTPProtectionProfile, ...] = ALL_PROFILES,
        send_certificate: bool = True,
    ) -> None:
        self.certificate = certificate or RTCCertificate.generateCertificate()
        context = SSL.Context(SSL.DTLS_METHOD)
        context.set_verify(SSL.VERIFY_PEER, lambda *args: True)  # checked by fingerprint below
        if send_certificate:
            context.use_certificate(self.certificate._cert)
            context.use_privatekey(self.certificate._key)
        context.set_cipher_list(CLIENT_CIPHERS)
        context.set_tlsext_use_srtp(b":".join(p.openssl_profile for p in profiles))
        self.ssl = SSL.Connection(context, None)
        self.ssl.set_connect_state()
        self.ssl.set_ciphertext_mtu(1200)
        self.connected = False

    def fingerprints(self) -> list[tuple[str, str]]:
        return fingerprints(self.certificate)

    def start(self) -> list[bytes]:
        """The ClientHello."""
        return self._advance()

    def receive(self, datagram: bytes) -> list[bytes]:
        """Feed one of the server's datagrams; return what to send."""
        self.ssl.bio_write(datagram)
        return self._advance()

    def _advance(self) -> list[bytes]:
        if not self.connected:
            try:
                self.ssl.do_handshake()
                self.connected = True
            except SSL.WantReadError:
                pass
        return self.pending()

    def pending(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.ssl.bio_read(1500))
            except SSL.WantReadError:
                return out

    def profile(self) -> SRTPProtectionProfile:
        selected = self.ssl.get_selected_srtp_profile()
        return next(p for p in ALL_PROFILES if p.openssl_profile == selected)

    def srtp_keys(self) -> tuple[bytes, bytes]:
        """(client write key+salt, server write key+salt) from the client's own export."""
        profile = self.profile()
        material = self.ssl.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length)
        )
        k, s = profile.key_length, profile.salt_length
        client = material[0:k] + material[2 * k : 2 * k + s]
        server = material[k : 2 * k] + material[2 * k + s : 2 * k + 2 * s]
        return client, server


def fingerprints(certificate: RTCCertificate) -> list[tuple[str, str]]:
    return [(fp.algorithm, fp.value) for fp in certificate.getFingerprints()]


@pytest.fixture(scope="module")
def server_certificate() -> RTCCertificate:
    return RTCCertificate.generateCertificate()


def _rtp(seq: int, ssrc: int = 0x11223344, payload: bytes = b"\x90" * 100) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, ssrc) + payload


@pytest.mark.parametrize("profile", ALL_PROFILES, ids=lambda p: p.openssl_profile.decode())
def test_handshake_and_srtp_keys_match(server_certificate, profile):
    client = DtlsClient(profiles=(profile,))
    session = DtlsSession(server_certificate, client.fingerprints(), label="t")
    handshake(client, session)
    assert session.connected and not session.closed
    assert session.keys is not None
    assert session.keys.name == profile.openssl_profile.decode()
    assert session.keys.profile == profile.libsrtp_profile
    client_write, server_write = client.srtp_keys()
    # RFC 5764 4.2: the server protects with the server half and reads the client half.
    assert session.keys.rx_key == client_write
    assert session.keys.tx_key == server_write
    assert client_write != server_write
    assert len(client_write) == profile.key_length + profile.salt_length

    # The keys work end to end: client-protected RTP and RTCP unprotect on the server side,
    # and the server's RTP unprotects on the client side.
    server = SrtpContext(session.keys.profile, session.keys.tx_key, session.keys.rx_key)
    client_tx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=client_write,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=profile.libsrtp_profile,
        )
    )
    client_rx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=server_write,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=profile.libsrtp_profile,
        )
    )
    packet = _rtp(1)
    assert server.unprotect(client_tx.protect(packet)) == packet
    rtcp = struct.pack("!BBHI", 0x81, 206, 2, 1) + struct.pack("!I", 0x11223344)  # PLI
    assert server.unprotect_rtcp(client_tx.protect_rtcp(rtcp)) == rtcp
    back = _rtp(7, ssrc=0x55667788)
    assert client_rx.unprotect(server.protect(back)) == back
    empty_rr = struct.pack("!BBHI", 0x80, 201, 1, 0x55667788)  # the smallest RTCP packet
    assert client_rx.unprotect_rtcp(server.protect_rtcp(empty_rr)) == empty_rr


def test_server_prefers_gcm_when_offered(server_certificate):
    # The client lists AES_CM first: the server's preference (AES-GCM 128) must still win.
    client = DtlsClient(
        profiles=(SRTP_AES128_CM_SHA1_80, SRTP_AEAD_AES_256_GCM, SRTP_AEAD_AES_128_GCM)
    )
    session = DtlsSession(server_certificate, client.fingerprints())
    handshake(client, session)
    assert session.keys is not None
    assert session.keys.name == PROFILES[0].openssl_profile.decode() == "SRTP_AEAD_AES_128_GCM"


def test_fingerprint_mismatch_raises_and_ends_session(server_certificate):
    client = DtlsClient()
    other = RTCCertificate.generateCertificate()
    session = DtlsSession(server_certificate, [("sha-256", local_fingerprint(other)[1])])
    with pytest.raises(DtlsError, match="fingerprint"):
        handshake(client, session)
    assert session.closed and not session.connected and session.keys is None
    # A closed session swallows whatever comes next without answering.
    assert session.receive(b"\x16\xfe\xfd" + bytes(20)) == []
    assert session.next_timeout() is None
    assert session.handle_timeout() == []


def test_one_wrong_fingerprint_among_several_is_a_mismatch(server_certificate):
    client = DtlsClient()
    fps = client.fingerprints()
    algorithm, value = fps[1]
    fps[1] = (algorithm, value[:-2] + ("00" if value[-2:] != "00" else "11"))
    session = DtlsSession(server_certificate, fps)
    with pytest.raises(DtlsError):
        handshake(client, session)
    assert session.closed


def test_fingerprint_compare_ignores_case(server_certificate):
    client = DtlsClient()
    session = DtlsSession(server_certificate, [(a, v.lower()) for a, v in client.fingerprints()])
    # sdp.parse upper-cases fingerprints; DtlsSession itself must not depend on it.
    handshake(client, session)
    assert session.connected


def test_client_without_certificate_is_refused(server_certificate):
    client = DtlsClient(send_certificate=False)
    session = DtlsSession(server_certificate, [("sha-256", "00:" * 31 + "00")])
    with pytest.raises(DtlsError):
        handshake(client, session)
    assert session.closed and not session.connected


def test_no_supported_fingerprint_algorithm():
    with pytest.raises(DtlsError, match="fingerprint"):
        DtlsSession(RTCCertificate.generateCertificate(), [("md5", "AA:BB")])


def test_garbage_before_and_after_handshake_does_not_crash(server_certificate):
    client = DtlsClient()
    session = DtlsSession(server_certificate, client.fingerprints())
    rng = random.Random(5)
    # Before: random records are discarded without an answer.
    for _ in range(200):
        datagram = bytes([rng.choice((20, 21, 22, 23, 25, 63))]) + os.urandom(
            rng.randrange(13, 300)
        )
        assert session.receive(datagram) == []
    assert not session.closed
    handshake(client, session)
    keys = session.keys
    # After: garbage, truncated records and unexpected application data change nothing.
    for _ in range(300):
        datagram = bytes([rng.choice((20, 21, 22, 23, 63))]) + os.urandom(rng.randrange(13, 300))
        replies = session.receive(datagram)
        assert isinstance(replies, list)
    session.receive(b"\x17\xfe\xfd" + bytes(11))
    client.ssl.send(b"hello")  # application data over DTLS is not used by WebRTC media
    for datagram in client.pending():
        session.receive(datagram)
    assert session.connected and not session.closed and session.keys == keys


def test_close_notify_from_client_closes_session(server_certificate):
    client = DtlsClient()
    session = DtlsSession(server_certificate, client.fingerprints())
    handshake(client, session)
    try:
        client.ssl.shutdown()
    except SSL.WantReadError:
        pass
    alerts = client.pending()
    assert alerts
    for alert in alerts:
        session.receive(alert)
    assert session.closed


def test_server_close_sends_close_notify(server_certificate):
    client = DtlsClient()
    session = DtlsSession(server_certificate, client.fingerprints())
    handshake(client, session)
    out = session.close()
    assert out and all(is_dtls(d) or d[0] == 21 for d in out)
    for datagram in out:
        client.ssl.bio_write(datagram)
    with pytest.raises(SSL.ZeroReturnError):
        client.ssl.recv(1500)
    assert session.close() == []  # idempotent


def test_retransmitted_client_flight_is_harmless(server_certificate):
    """A browser retransmits its last flight when our reply is lost; we must not fail."""
    client = DtlsClient()
    session = DtlsSession(server_certificate, client.fingerprints())
    hello = client.start()
    first = []
    for datagram in hello:
        first += session.receive(datagram)
    assert first, "ServerHello flight expected"
    for datagram in hello:  # the same ClientHello again
        session.receive(datagram)
    to_server = [reply for datagram in first for reply in client.receive(datagram)]
    for _ in range(10):
        to_client = []
        for datagram in to_server:
            to_client += session.receive(datagram)
        # and the client's Finished flight twice over
        for datagram in to_server:
            session.receive(datagram)
        to_server = [reply for datagram in to_client for reply in client.receive(datagram)]
        if session.connected and client.connected and not to_server:
            break
    assert session.connected and client.connected
    assert session.keys is not None and session.keys.rx_key == client.srtp_keys()[0]


# -- the client role (the load client's side) ------------------------------------------------


def test_client_role_handshakes_with_the_server_and_mirrors_its_keys(server_certificate):
    client_certificate = RTCCertificate.generateCertificate()
    server = DtlsSession(server_certificate, fingerprints(client_certificate), label="s")
    client = DtlsSession(
        client_certificate, fingerprints(server_certificate), label="c", role="client"
    )
    assert server.start() == [], "a server speaks only when spoken to"
    probe = DtlsSession(client_certificate, fingerprints(server_certificate), role="client")
    assert probe.next_timeout() is None, "no timer before the first flight"
    hello = probe.start()
    assert hello and all(is_dtls(d) for d in hello)
    timeout = probe.next_timeout()
    assert timeout is not None and 0 < timeout <= 1.0, "an unanswered ClientHello is resent"
    handshake(client, server)
    assert client.connected and server.connected and not client.closed
    assert client.next_timeout() is None and client.start() == []
    assert client.keys is not None and server.keys is not None
    # The server's keys match an independent export (test above); the client's mirror them.
    assert client.keys.tx_key == server.keys.rx_key
    assert client.keys.rx_key == server.keys.tx_key
    assert client.keys.tx_key != client.keys.rx_key
    assert (client.keys.profile, client.keys.name) == (server.keys.profile, server.keys.name)
    assert client.keys.name == "SRTP_AEAD_AES_128_GCM"
    near = SrtpContext(client.keys.profile, client.keys.tx_key, client.keys.rx_key)
    far = SrtpContext(server.keys.profile, server.keys.tx_key, server.keys.rx_key)
    assert far.unprotect(near.protect(_rtp(1))) == _rtp(1)
    assert near.unprotect(far.protect(_rtp(2, ssrc=0x55667788))) == _rtp(2, ssrc=0x55667788)


def test_client_role_refuses_a_server_with_another_fingerprint(server_certificate):
    client_certificate = RTCCertificate.generateCertificate()
    server = DtlsSession(server_certificate, fingerprints(client_certificate))
    other = RTCCertificate.generateCertificate()
    client = DtlsSession(
        client_certificate, [("sha-256", local_fingerprint(other)[1])], role="client"
    )
    with pytest.raises(DtlsError, match="fingerprint"):
        handshake(client, server)
    assert client.closed and not client.connected and client.keys is None


def test_unknown_role_is_refused(server_certificate):
    with pytest.raises(ValueError, match="role"):
        DtlsSession(
            server_certificate,
            [("sha-256", local_fingerprint(server_certificate)[1])],
            role="browser",
        )  # type: ignore[arg-type]
