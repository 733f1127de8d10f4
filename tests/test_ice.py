"""ICE-lite, sans-I/O: binding requests in, responses out, with a fake clock.

The session-level tests drive IceLiteSession directly; the worker-level ones go through
WorkerCore.receive, which demultiplexes one UDP port by USERNAME and bound address. The
controlling agent's half (the load client's checks) is tested against IceLiteSession.
"""

from __future__ import annotations

import re
import string
import struct
from pathlib import Path

import pytest
from aioice import stun
from aiortc.rtcdtlstransport import RTCCertificate

from sfu import ice, sdp
from sfu.control import ControlError
from sfu.dtls import DtlsSession, is_dtls, local_fingerprint
from sfu.ice import (
    CHECK_PRIORITY,
    CONSENT_TIMEOUT,
    IceLiteSession,
    check_binding_response,
    is_stun,
    new_credentials,
    parse_binding_request,
)
from sfu.settings import MediaSettings
from sfu.srtp import SrtpContext
from sfu.worker import WorkerCore
from tests.wire import binding_request, dtls_handshake

OFFER = (Path(__file__).parent / "data" / "chromium-156-simulcast-offer.sdp").read_text()
REMOTE_UFRAG = "d+QB"  # the offer's a=ice-ufrag
LOCAL_UFRAG, LOCAL_PWD = "srvUfrag", "serverpasswordserverpass"
PEER = ("192.0.2.10", 50000)


def check(session: IceLiteSession, data: bytes, addr=PEER, now: float = 0.0) -> bytes | None:
    parsed = parse_binding_request(data)
    if parsed is None:
        return None
    message, local, remote = parsed
    assert local == session.local_ufrag
    return session.handle_request(message, remote, addr, now)


def assert_success_response(response: bytes, request: bytes, addr, password: str) -> stun.Message:
    message = stun.parse_message(response)  # verifies FINGERPRINT when present
    assert message.message_method == stun.Method.BINDING
    assert message.message_class == stun.Class.RESPONSE
    assert message.transaction_id == stun.parse_message(request).transaction_id
    assert message.attributes["XOR-MAPPED-ADDRESS"] == addr
    assert "FINGERPRINT" in message.attributes
    assert message.check_message_integrity(password.encode()), (
        "response must be signed with our ICE password"
    )
    return message


def new_session(now: float = 0.0, consent_timeout: float = CONSENT_TIMEOUT) -> IceLiteSession:
    return IceLiteSession(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG, now, consent_timeout)


# -- demultiplexing and parsing -------------------------------------------------------------


def test_is_stun_follows_rfc7983():
    request = binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD)
    assert is_stun(request)
    assert not is_stun(request[:19])
    assert not is_stun(b"\x16" + request[1:])  # DTLS content type
    assert not is_stun(b"\x80" + request[1:])  # RTP
    assert not is_stun(request[:4] + b"\x00\x00\x00\x00" + request[8:])  # no magic cookie
    assert not is_stun(b"")


def test_parse_binding_request_returns_both_ufrags():
    request = binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD)
    parsed = parse_binding_request(request)
    assert parsed is not None
    message, local, remote = parsed
    assert (local, remote) == (LOCAL_UFRAG, REMOTE_UFRAG)
    assert message.message_class == stun.Class.REQUEST


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", None), id="no-integrity"),
        pytest.param(
            binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD, fingerprint=False),
            id="no-fingerprint",
        ),
        pytest.param(binding_request(LOCAL_UFRAG, LOCAL_PWD), id="username-without-colon"),
        pytest.param(
            binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD)[:-1], id="truncated"
        ),
        pytest.param(
            bytes(
                stun.Message(
                    stun.Method.BINDING, stun.Class.INDICATION, attributes={"USERNAME": "a:b"}
                )
            ),
            id="indication",
        ),
        pytest.param(
            bytes(
                stun.Message(
                    stun.Method.ALLOCATE, stun.Class.REQUEST, attributes={"USERNAME": "a:b"}
                )
            ),
            id="allocate",
        ),
        # A PRIORITY attribute of 2 bytes: aioice raises struct.error (not ValueError) here.
        pytest.param(
            b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12) + b"\x00\x24\x00\x02\x00\x01\x00\x00",
            id="short-priority",
        ),
        pytest.param(
            b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12) + b"\x80\x28\x00\x02\x00\x01\x00\x00",
            id="short-fingerprint",
        ),
    ],
)
def test_parse_binding_request_rejects(data):
    assert parse_binding_request(data) is None


def test_corrupted_fingerprint_is_rejected():
    request = bytearray(binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD))
    request[-1] ^= 1
    assert parse_binding_request(bytes(request)) is None


def test_new_credentials_meet_rfc8839():
    seen = set()
    for _ in range(50):
        ufrag, pwd = new_credentials()
        assert len(ufrag) >= 4 and len(pwd) >= 22
        assert set(ufrag + pwd) <= set(string.ascii_letters + string.digits)
        seen.add(ufrag)
    assert len(seen) == 50


# -- one session ---------------------------------------------------------------------------


def test_valid_check_is_answered_and_validates_address():
    session = new_session()
    request = binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD)
    response = check(session, request, now=1.0)
    assert response is not None
    assert_success_response(response, request, PEER, LOCAL_PWD)
    assert PEER in session.validated
    assert session.selected is None, "without USE-CANDIDATE nothing is nominated"


def test_use_candidate_selects_the_address_and_can_move():
    session = new_session()
    other = ("198.51.100.7", 40000)
    check(session, binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD), addr=other)
    assert session.selected is None
    response = check(
        session, binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD, use_candidate=True)
    )
    assert response is not None
    assert session.selected == PEER
    # A later check without USE-CANDIDATE from another address keeps the nomination.
    check(session, binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD), addr=other)
    assert session.selected == PEER
    # The controlling agent nominates another pair (e.g. the network changed).
    check(
        session,
        binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD, use_candidate=True),
        addr=other,
    )
    assert session.selected == other
    assert session.validated == {PEER, other}


def test_wrong_remote_ufrag_is_dropped():
    session = new_session()
    request = binding_request(f"{LOCAL_UFRAG}:someoneelse", LOCAL_PWD, use_candidate=True)
    assert check(session, request) is None
    assert session.selected is None and not session.validated


def test_wrong_password_is_dropped_and_does_not_refresh_consent():
    session = new_session(now=0.0)
    request = binding_request(
        f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", "not-the-password-at-all!", use_candidate=True
    )
    assert check(session, request, now=25.0) is None
    assert session.selected is None and not session.validated
    assert session.last_consent == 0.0
    assert session.expired(CONSENT_TIMEOUT + 1)


def test_consent_expires_without_checks_and_is_refreshed_by_them():
    session = new_session(now=100.0, consent_timeout=30.0)
    assert not session.expired(100.0)
    assert not session.expired(129.9)
    assert session.expired(130.1)
    check(
        session,
        binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD, use_candidate=True),
        now=120.0,
    )
    assert not session.expired(145.0), "a valid check at 120 s refreshes consent until 150 s"
    assert session.expired(150.5)


def test_authenticated_media_from_the_nominated_address_keeps_the_peer_alive():
    """libnice sends no consent requests after nomination: its media and RTCP, once
    authenticated, are what says it is still there (RFC 7675 section 4)."""
    session = new_session(now=0.0, consent_timeout=30.0)
    other = ("192.0.2.10", 50001)
    assert not session.media_received(PEER, 5.0), "nothing nominated yet: nothing refreshes"
    check(
        session,
        binding_request(f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD, use_candidate=True),
        now=1.0,
    )
    for t in range(2, 100):  # media for 100 s, never another check
        assert session.media_received(PEER, float(t))
        assert not session.expired(float(t) + 0.5)
    assert not session.media_received(other, 120.0), "another address refreshes nothing"
    assert not session.expired(129.0)
    assert session.expired(129.5), "the last media at 99 s lasts until 129 s"
    session.media_received(PEER, 50.0)
    assert session.last_consent == 99.0, "a late timestamp never moves liveness back"


# -- through the worker --------------------------------------------------------------------


class Harness:
    """A WorkerCore with one publisher session from the Chromium offer; no sockets."""

    def __init__(self, consent_timeout: float = 30.0, offer: str = OFFER) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.events: list[tuple[str, dict]] = []
        self.core = WorkerCore(
            RTCCertificate.generateCertificate(),
            "127.0.0.1",
            40000,
            lambda data, addr: self.sent.append((bytes(data), addr)),
            lambda name, data: self.events.append((name, data)),
            settings=MediaSettings(consent_timeout=consent_timeout),
        )
        result = self.core.handle(
            "publish", {"room": "r", "session": "pub", "identity": "lead", "offer": offer}, 0.0
        )
        self.ufrag, self.pwd = sdp.parse(result["answer"]).ice_credentials()


def test_worker_answers_valid_check_and_binds_address():
    h = Harness()
    request = binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", h.pwd, use_candidate=True)
    h.core.receive(request, PEER, 1.0)
    assert len(h.sent) == 1
    response, addr = h.sent[0]
    assert addr == PEER
    assert_success_response(response, request, PEER, h.pwd)
    transport = h.core.sessions["pub"]
    assert h.core.demux.by_addr[PEER] is transport
    assert transport.addr == PEER


def test_worker_drops_wrong_password_wrong_ufrag_and_unknown_ufrag():
    h = Harness()
    before = h.core.demux.dropped
    h.core.receive(
        binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", "wrongwrongwrongwrongwrong"), PEER, 1.0
    )
    h.core.receive(binding_request(f"{h.ufrag}:otherpeer", h.pwd), PEER, 1.0)
    h.core.receive(binding_request(f"nosuchufrag:{REMOTE_UFRAG}", h.pwd), PEER, 1.0)
    assert h.sent == []
    assert PEER not in h.core.demux.by_addr
    assert h.core.demux.dropped == before + 3


def test_unbound_address_cannot_send_dtls_or_rtp():
    h = Harness()
    h.core.receive(b"\x16\xfe\xfd" + bytes(60), PEER, 1.0)
    h.core.receive(b"\x80\x60" + bytes(40), PEER, 1.0)
    assert h.sent == []
    assert h.core.demux.dropped == 2
    assert h.core.sessions["pub"].counters.dropped == 0, "the transport never saw them"


def test_consent_expiry_closes_session_through_worker_tick():
    h = Harness(consent_timeout=30.0)
    h.core.receive(
        binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", h.pwd, use_candidate=True), PEER, 1.0
    )
    for t in (10.0, 20.0, 30.0):
        h.core.receive(binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", h.pwd), PEER, t)
        h.core.run_timers(t)
    h.core.run_timers(59.0)
    assert "pub" in h.core.sessions, "consent refreshed at 30 s lasts until 60 s"
    h.core.run_timers(60.5)
    assert "pub" not in h.core.sessions
    assert ("closed", {"session": "pub", "reason": "ice consent expired"}) in h.events
    assert PEER not in h.core.demux.by_addr and h.ufrag not in h.core.demux.by_ufrag
    # The expired session's credentials no longer get answers.
    h.sent.clear()
    h.core.receive(binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", h.pwd), PEER, 61.0)
    assert h.sent == []


def _connected_publisher(consent_timeout: float) -> tuple[Harness, SrtpContext, str]:
    """A publisher through ICE (nominated at 1 s) and a real DTLS handshake, no sockets:
    the client's SRTP context protects what the test sends to the worker."""
    certificate = RTCCertificate.generateCertificate()
    fingerprint = local_fingerprint(certificate)[1]
    offer = re.sub(r"a=fingerprint:sha-256 \S+", f"a=fingerprint:sha-256 {fingerprint}", OFFER)
    h = Harness(consent_timeout=consent_timeout, offer=offer)
    h.core.receive(
        binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", h.pwd, use_candidate=True), PEER, 1.0
    )
    transport = h.core.sessions["pub"]
    client = DtlsSession(certificate, [local_fingerprint(h.core.certificate)], role="client")

    class Server:
        connected = property(lambda self: transport.srtp is not None)

        def receive(self, data: bytes) -> list[bytes]:
            mark = len(h.sent)
            h.core.receive(data, PEER, 1.0)
            return [d for d, a in h.sent[mark:] if a == PEER and is_dtls(d)]

    dtls_handshake(client, Server())
    assert client.keys is not None
    keys = client.keys
    return h, SrtpContext(keys.profile, keys.tx_key, keys.rx_key), "pub"


def _audio_rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq, seq * 960, 2072071564) + bytes(40)


def test_authenticated_srtp_refreshes_liveness_and_forged_srtp_does_not():
    h, client, session = _connected_publisher(consent_timeout=10.0)
    seq = 0
    for t in range(2, 40):  # 38 s of media at 1 packet/s, no consent check after 1 s
        seq += 1
        h.core.receive(client.protect(_audio_rtp(seq)), PEER, float(t))
        h.core.run_timers(float(t))
    assert session in h.core.sessions, "authenticated media kept the publisher alive"
    transport = h.core.sessions[session]
    assert transport.counters.packets_in == seq, "every packet passed authentication"

    # Now only forgeries: SRTP from the nominated address with a broken tag, and
    # authentic packets replayed from another (validated) address.
    other = ("192.0.2.10", 50001)
    h.core.receive(
        binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", h.pwd, use_candidate=False), other, 39.5
    )
    for t in range(40, 60):
        seq += 1
        forged = bytearray(client.protect(_audio_rtp(seq)))
        forged[-1] ^= 0xFF
        h.core.receive(bytes(forged), PEER, float(t))
        seq += 1
        h.core.receive(client.protect(_audio_rtp(seq)), other, float(t))
        h.core.run_timers(float(t))
        if session not in h.core.sessions:
            break
    assert session not in h.core.sessions, "forged or misdirected SRTP kept a session alive"
    assert ("closed", {"session": session, "reason": "ice consent expired"}) in h.events
    closed_at = t
    assert 49.0 <= closed_at <= 51.0, f"expired at {closed_at} s, not 10 s after the last media"
    assert transport.counters.dropped >= closed_at - 40, "the forged packets were refused"


def test_session_never_checked_expires_too():
    h = Harness(consent_timeout=30.0)
    h.core.run_timers(29.0)
    assert "pub" in h.core.sessions
    h.core.run_timers(31.0)
    assert "pub" not in h.core.sessions


# -- the controlling agent's half --------------------------------------------------------------


def test_binding_request_is_a_signed_controlling_check():
    message = ice.binding_request(
        f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD, 42, use_candidate=True
    )
    parsed = parse_binding_request(bytes(message))  # requires and verifies FINGERPRINT
    assert parsed is not None
    request, local, remote = parsed
    assert (local, remote) == (LOCAL_UFRAG, REMOTE_UFRAG)
    assert request.transaction_id == message.transaction_id
    assert request.attributes["PRIORITY"] == CHECK_PRIORITY == 1853824767
    assert request.attributes["ICE-CONTROLLING"] == 42
    assert "USE-CANDIDATE" in request.attributes
    assert request.check_message_integrity(LOCAL_PWD.encode())
    assert not request.check_message_integrity(b"another-password-entirely")
    plain = ice.binding_request("a:b", LOCAL_PWD, 42, priority=7, transaction_id=b"t" * 12)
    assert "USE-CANDIDATE" not in plain.attributes
    assert plain.attributes["PRIORITY"] == 7 and plain.transaction_id == b"t" * 12


def test_check_binding_response_accepts_only_signed_answers_to_our_checks():
    session = new_session()
    request = ice.binding_request(
        f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", LOCAL_PWD, 42, use_candidate=True
    )
    response = check(session, bytes(request))
    assert response is not None and session.selected == PEER
    ours = {request.transaction_id}
    message = check_binding_response(response, ours, LOCAL_PWD)
    assert message is not None
    assert message.transaction_id == request.transaction_id
    assert message.attributes["XOR-MAPPED-ADDRESS"] == PEER
    assert check_binding_response(response, {b"x" * 12}, LOCAL_PWD) is None, "not our transaction"
    assert check_binding_response(response, ours, "not-the-password-at-all!") is None
    assert check_binding_response(bytes(request), ours, LOCAL_PWD) is None, "a request is no answer"
    assert check_binding_response(response[:-1], ours, LOCAL_PWD) is None
    assert check_binding_response(b"", ours, LOCAL_PWD) is None
    corrupted = bytearray(response)
    corrupted[-1] ^= 1  # FINGERPRINT no longer matches
    assert check_binding_response(bytes(corrupted), ours, LOCAL_PWD) is None
    unsigned = stun.Message(
        stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id
    )
    unsigned.attributes["XOR-MAPPED-ADDRESS"] = PEER
    unsigned.add_fingerprint()
    assert check_binding_response(bytes(unsigned), ours, LOCAL_PWD) is None
    no_fingerprint = stun.Message(
        stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id
    )
    no_fingerprint.add_message_integrity(LOCAL_PWD.encode())
    del no_fingerprint.attributes["FINGERPRINT"]
    assert check_binding_response(bytes(no_fingerprint), ours, LOCAL_PWD) is None
    error = stun.Message(
        stun.Method.BINDING, stun.Class.ERROR, transaction_id=request.transaction_id
    )
    error.attributes["ERROR-CODE"] = (487, "Role Conflict")
    error.add_message_integrity(LOCAL_PWD.encode())
    assert check_binding_response(bytes(error), ours, LOCAL_PWD) is None


# -- ICE restart -------------------------------------------------------------------------------

MOVED = ("192.0.2.20", 50002)


def test_ice_restart_keeps_old_credentials_until_the_peer_uses_the_new_ones():
    h = Harness()
    h.core.receive(
        binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", h.pwd, use_candidate=True), PEER, 1.0
    )
    transport = h.core.sessions["pub"]
    trickle = h.core.handle("ice_restart", {"session": "pub", "ufrag": REMOTE_UFRAG}, 2.0)
    assert trickle["restarted"] is False and trickle["ufrag"] == h.ufrag
    result = h.core.handle("ice_restart", {"session": "pub", "ufrag": "newPeer"}, 2.0)
    assert result["restarted"] is True
    ufrag, pwd = result["ufrag"], result["pwd"]
    assert ufrag != h.ufrag and pwd != h.pwd and "127.0.0.1 40000 typ host" in result["candidate"]
    # Until the peer switches, its old checks keep consent (and media) going.
    h.sent.clear()
    h.core.receive(binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", h.pwd), PEER, 3.0)
    assert len(h.sent) == 1 and transport.ice.last_consent == 3.0
    # The new credentials with the old remote ufrag are refused; with the new one they
    # answer, nominate the new address, and retire the old credentials.
    h.sent.clear()
    h.core.receive(binding_request(f"{ufrag}:{REMOTE_UFRAG}", pwd), MOVED, 4.0)
    assert h.sent == []
    request = binding_request(f"{ufrag}:newPeer", pwd, use_candidate=True)
    h.core.receive(request, MOVED, 4.0)
    assert_success_response(h.sent[0][0], request, MOVED, pwd)
    assert transport.addr == MOVED and h.core.demux.by_addr[MOVED] is transport
    assert h.ufrag not in h.core.demux.by_ufrag and h.core.demux.by_ufrag[ufrag] is transport
    h.sent.clear()
    h.core.receive(binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", h.pwd), PEER, 5.0)
    assert h.sent == [], "the old credentials are retired"
    # Closing forgets every ufrag and address.
    h.core.handle("close", {"session": "pub"}, 6.0)
    assert h.core.demux.by_ufrag == {} and MOVED not in h.core.demux.by_addr


def test_two_restarts_before_any_check_keep_the_proven_credentials():
    h = Harness()
    h.core.receive(binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", h.pwd), PEER, 1.0)
    first = h.core.handle("ice_restart", {"session": "pub", "ufrag": "peer2"}, 2.0)
    second = h.core.handle("ice_restart", {"session": "pub", "ufrag": "peer3"}, 2.0)
    assert first["ufrag"] not in h.core.demux.by_ufrag, "the unused middle one is dropped"
    assert set(h.core.demux.by_ufrag) == {h.ufrag, second["ufrag"]}
    h.sent.clear()
    h.core.receive(binding_request(f"{h.ufrag}:{REMOTE_UFRAG}", h.pwd), PEER, 3.0)
    h.core.receive(binding_request(f"{first['ufrag']}:peer2", first["pwd"]), PEER, 3.0)
    assert len(h.sent) == 1


def test_a_renegotiation_with_new_ice_credentials_restarts_ice():
    h = Harness()
    offer = OFFER.replace(f"a=ice-ufrag:{REMOTE_UFRAG}", "a=ice-ufrag:renewed")
    params = {"room": "r", "session": "pub", "offer": offer, "renegotiate": True}
    result = h.core.handle("publish", params, 1.0)
    ufrag, pwd = sdp.parse(result["answer"]).ice_credentials()
    assert ufrag != h.ufrag and pwd != h.pwd
    h.sent.clear()
    h.core.receive(binding_request(f"{ufrag}:renewed", pwd), PEER, 2.0)
    assert len(h.sent) == 1


def test_ice_restart_refuses_unknown_sessions_and_empty_ufrags():
    h = Harness()
    with pytest.raises(ControlError) as missing:
        h.core.handle("ice_restart", {"session": "nope", "ufrag": "x"}, 1.0)
    assert missing.value.code == "not_found"
    with pytest.raises(ControlError) as empty:
        h.core.handle("ice_restart", {"session": "pub", "ufrag": ""}, 1.0)
    assert empty.value.code == "bad_request"
