"""Reaching the SFU when UDP is blocked: ICE-TCP (RFC 6544) and TURN credentials.

Three layers, cheapest first: the RFC 4571 framing decoder (unit and hypothesis tests),
the worker's demultiplexer fed ICE-TCP packets with a real DTLS handshake (no sockets),
a raw TCP client against a running server (STUN, DTLS and SRTCP over one connection).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint
from aiortc.rtcdtlstransport import RTCCertificate
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu import sdp
from sfu.dtls import DtlsSession, is_dtls, local_fingerprint
from sfu.ice import check_binding_response, is_stun
from sfu.ice_tcp import (
    MAX_FRAME,
    FrameDecoder,
    FramingError,
    TcpAddress,
    TcpPath,
    frame,
)
from sfu.srtp import SrtpContext
from sfu.worker import WorkerCore
from signaling import turn
from signaling.config import TurnSettings
from tests.browser import (
    CHROMEDRIVER,
    CHROMIUM_BINARY,
    CHROMIUM_FLAGS,
    chromium_available,
    missing_reason,
    run_async_js,
)
from tests.conftest import RunningServer, free_port
from tests.test_fuzz import OFFER_LINES, REMOTE_UFRAG
from tests.wire import binding_request, dtls_handshake

FRAMING = settings(max_examples=300, deadline=None)
TURNSERVER = "/usr/bin/turnserver"


# -- framing (RFC 4571) -------------------------------------------------------------------------


def test_frames_round_trip_and_split_anywhere():
    packets = [b"\x00\x01" + b"x" * 18, b"\x16\xfe\xfd" + b"d" * 97, b"\x80" * 1200]
    stream = b"".join(frame(p) for p in packets)
    assert stream[:2] == struct.pack("!H", 20), "two-byte big-endian length first"
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        out = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert out == packets
        assert decoder.pending == 0


def test_one_byte_at_a_time():
    decoder = FrameDecoder()
    out = []
    for byte in frame(b"hello") + frame(b"world"):
        out += decoder.feed(bytes([byte]))
    assert out == [b"hello", b"world"]


def test_oversize_frame_is_refused_at_its_header():
    decoder = FrameDecoder(max_packet=1500)
    assert decoder.feed(frame(b"a" * 1500)) == [b"a" * 1500]
    with pytest.raises(FramingError, match="1501-byte frame is over the 1500-byte limit"):
        decoder.feed(struct.pack("!H", 1501))  # no body needed: the header says enough


def test_zero_length_frames_are_skipped():
    assert FrameDecoder().feed(b"\x00\x00" + frame(b"x") + b"\x00\x00") == [b"x"]


def test_frame_refuses_what_two_bytes_cannot_say():
    assert len(frame(b"a" * MAX_FRAME)) == MAX_FRAME + 2
    with pytest.raises(FramingError):
        frame(b"a" * (MAX_FRAME + 1))
    with pytest.raises(ValueError):
        FrameDecoder(max_packet=0)


@FRAMING
@given(chunks=st.lists(st.binary(max_size=3000), max_size=20), limit=st.integers(1, 4096))
def test_arbitrary_bytes_give_packets_or_framing_error_with_a_bounded_buffer(chunks, limit):
    decoder = FrameDecoder(max_packet=limit)
    for chunk in chunks:
        try:
            packets = decoder.feed(chunk)
        except FramingError:
            return
        assert all(0 < len(p) <= limit for p in packets)
        assert decoder.pending <= limit + 1, "at most one partial frame is held"


@FRAMING
@given(
    packets=st.lists(st.binary(min_size=1, max_size=2000), max_size=12),
    cuts=st.lists(st.integers(0, 30000), max_size=10),
)
def test_any_split_of_a_framed_stream_gives_the_packets_back(packets, cuts):
    stream = b"".join(frame(p) for p in packets)
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = FrameDecoder(max_packet=2000)
    out = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        out += decoder.feed(stream[start:end])
    assert out == packets
    assert decoder.pending == 0


def test_a_tcp_address_never_equals_a_udp_one():
    tcp, udp = TcpAddress("192.0.2.1", 5000), ("192.0.2.1", 5000)
    assert tcp != udp and udp != tcp
    assert tcp == TcpAddress("192.0.2.1", 5000)
    assert len({tcp, udp, TcpAddress("192.0.2.1", 5000)}) == 2
    assert tcp[0] == "192.0.2.1" and tcp[1] == 5000  # packs into XOR-MAPPED-ADDRESS as is


# -- the worker, sans-I/O: ICE-TCP as another path to a WebRtcTransport --------------------------


def _offer(certificate: RTCCertificate) -> str:
    fp = local_fingerprint(certificate)[1]
    lines = [
        f"a=fingerprint:sha-256 {fp}" if line.startswith("a=fingerprint:") else line
        for line in OFFER_LINES[:-1]
    ]
    return "\r\n".join(lines) + "\r\n"


def _vp8_packet(seq: int) -> bytes:
    """VP8 on the offer's payload type, unsignalled SSRC: the server learns the stream."""
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 0x1234) + b"\x10\x50\x02\x00"


class TcpWorker:
    """A WorkerCore that announces an ICE-TCP port, with one recorded TCP path."""

    def __init__(self, certificate: RTCCertificate) -> None:
        self.udp_sent: list[tuple[bytes, tuple]] = []
        self.tcp_sent: list[bytes] = []
        self.now = 1.0
        self.core = WorkerCore(
            certificate,
            "127.0.0.1",
            40000,
            lambda data, addr: self.udp_sent.append((bytes(data), addr)),
            lambda name, data: None,
            tcp_port=40001,
        )
        self.path = TcpPath(
            TcpAddress("127.0.0.1", 50000), lambda p: self.tcp_sent.append(bytes(p)), 0.0
        )
        self.core.demux.add_tcp(self.path)


class _OverTcp:
    """The server side of a DTLS handshake over the recorded TCP path."""

    def __init__(self, worker: TcpWorker, session: str) -> None:
        self.worker, self.session = worker, session

    @property
    def connected(self) -> bool:
        return self.worker.core.sessions[self.session].srtp is not None

    def receive(self, data: bytes) -> list[bytes]:
        mark = len(self.worker.tcp_sent)
        self.worker.core.receive_tcp(data, self.worker.path, self.worker.now)
        return [d for d in self.worker.tcp_sent[mark:] if is_dtls(d)]


@pytest.fixture(scope="module")
def certificate() -> RTCCertificate:
    return RTCCertificate.generateCertificate()


def test_answer_carries_a_passive_tcp_candidate_below_udp(certificate):
    worker = TcpWorker(certificate)
    answer = worker.core.handle(
        "publish", {"room": "r", "session": "s", "offer": _offer(certificate)}, 1.0
    )["answer"]
    candidates = [line for line in answer.split("\r\n") if line.startswith("a=candidate:")]
    udp = [c.split() for c in candidates if " udp " in c]
    tcp = [c.split() for c in candidates if " tcp " in c]
    assert tcp and len(tcp) == len(udp), "one TCP candidate beside each UDP one"
    fields = tcp[0]
    assert fields[4:8] == ["127.0.0.1", "40001", "typ", "host"]
    assert fields[8:10] == ["tcptype", "passive"]
    assert int(fields[3]) < int(udp[0][3]), "a browser that can use UDP prefers it"


def test_stun_over_tcp_is_checked_like_udp_and_media_follows_the_connection(certificate):
    worker = TcpWorker(certificate)
    answer = worker.core.handle(
        "publish", {"room": "r", "session": "s", "offer": _offer(certificate)}, 1.0
    )["answer"]
    ufrag, pwd = sdp.parse(answer).ice_credentials()
    path = worker.path

    # Wrong password, unknown ufrag, garbage: no answer, and the path stays unbound.
    for bad in (
        binding_request(f"{ufrag}:{REMOTE_UFRAG}", "not-the-password-at-all!"),
        binding_request(f"nobody:{REMOTE_UFRAG}", pwd),
        b"\x16\xfe\xfd" + b"\x00" * 40,
    ):
        worker.core.receive_tcp(bad, path, 1.0)
    assert worker.tcp_sent == [] and path.transport is None

    request = binding_request(f"{ufrag}:{REMOTE_UFRAG}", pwd, use_candidate=True)
    worker.core.receive_tcp(request, path, 1.0)
    assert len(worker.tcp_sent) == 1
    response = check_binding_response(
        worker.tcp_sent[0], {stun.parse_message(request).transaction_id}, pwd
    )
    assert response is not None, "a signed success response goes back over the connection"
    assert response.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.1", 50000)
    transport = worker.core.sessions["s"]
    assert path.transport is transport and transport.addr == path.addr

    # The offer's fingerprint is the fixture certificate's: the client uses it.
    client = DtlsSession(certificate, sdp.parse(answer).dtls_fingerprints(), role="client")
    dtls_handshake(client, _OverTcp(worker, "s"))
    assert worker.udp_sent == [], "nothing of this peer goes out over UDP"

    # The server's reports (RR, REMB) reach the client over TCP, decryptable with its keys.
    assert client.keys is not None
    srtp = SrtpContext(client.keys.profile, client.keys.tx_key, client.keys.rx_key)
    for seq in range(5):
        worker.core.receive_tcp(srtp.protect(_vp8_packet(seq)), path, 1.0 + seq / 100)
    assert transport.counters.packets_in == 5, "SRTP over TCP reaches the transport"
    mark = len(worker.tcp_sent)
    worker.core.run_timers(transport.next_report + 0.01)
    reports = [srtp.unprotect_rtcp(p) for p in worker.tcp_sent[mark:] if p[0] >= 128]
    assert reports, "RTCP goes back over the TCP path"
    assert worker.udp_sent == []


def test_a_connection_stays_with_the_transport_that_bound_it(certificate):
    worker = TcpWorker(certificate)
    answers = [
        worker.core.handle(
            "publish", {"room": "r", "session": name, "offer": _offer(certificate)}, 1.0
        )["answer"]
        for name in ("a", "b")
    ]
    (ufrag_a, pwd_a), (ufrag_b, pwd_b) = (sdp.parse(a).ice_credentials() for a in answers)
    worker.core.receive_tcp(binding_request(f"{ufrag_a}:{REMOTE_UFRAG}", pwd_a), worker.path, 1.0)
    assert worker.path.transport is worker.core.sessions["a"]
    worker.tcp_sent.clear()
    worker.core.receive_tcp(binding_request(f"{ufrag_b}:{REMOTE_UFRAG}", pwd_b), worker.path, 1.0)
    assert worker.tcp_sent == [], "a check for another transport on a bound connection is dropped"
    assert worker.path.transport is worker.core.sessions["a"]


def test_sends_to_a_closed_connection_are_dropped(certificate):
    worker = TcpWorker(certificate)
    worker.core.demux.remove_tcp(worker.path)
    before = worker.core.demux.dropped
    worker.core.demux.send_tcp(b"x", worker.path.addr)
    assert worker.tcp_sent == [] and worker.core.demux.dropped == before + 1


# -- a raw TCP client against a running server ------------------------------------------------


def _tcp_candidate(answer: str) -> tuple[str, int]:
    for line in answer.split("\r\n"):
        parts = line.split()
        if line.startswith("a=candidate:") and parts[2] == "tcp" and "passive" in parts:
            return parts[4], int(parts[5])
    raise AssertionError("no passive TCP candidate in the answer")


class FramedSocket:
    """A blocking TCP client that speaks RFC 4571 frames."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.sock = socket.create_connection(addr, timeout=5)
        self.decoder = FrameDecoder(MAX_FRAME)
        self.queue: list[bytes] = []

    def send(self, packet: bytes) -> None:
        self.sock.sendall(frame(packet))

    def recv(self, deadline: float) -> bytes:
        while not self.queue:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.queue += self.decoder.feed(data)
        return self.queue.pop(0)

    def close(self) -> None:
        self.sock.close()


class _OverSocket:
    def __init__(self, conn: FramedSocket) -> None:
        self.conn = conn
        self.done = False

    @property
    def connected(self) -> bool:
        return self.done

    def receive(self, data: bytes) -> list[bytes]:
        self.conn.send(data)
        replies: list[bytes] = []
        deadline = time.monotonic() + 5
        try:
            replies.append(self.conn.recv(deadline))
            while True:  # a flight may be several records
                replies.append(self.conn.recv(time.monotonic() + 0.02))
        except TimeoutError:
            pass
        return [r for r in replies if is_dtls(r)]


def _raw_tcp_session(base_url: str, token: str, certificate: RTCCertificate) -> dict:
    request = urllib.request.Request(
        base_url + "/whip/tcp-room",
        data=_offer(certificate).encode(),
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=10) as reply:
        answer = reply.read().decode()
    ufrag, pwd = sdp.parse(answer).ice_credentials()
    conn = FramedSocket(_tcp_candidate(answer))
    try:
        request_bytes = binding_request(f"{ufrag}:{REMOTE_UFRAG}", pwd, use_candidate=True)
        conn.send(request_bytes)
        stun_reply = conn.recv(time.monotonic() + 5)
        assert is_stun(stun_reply)
        ok = check_binding_response(
            stun_reply, {stun.parse_message(request_bytes).transaction_id}, pwd
        )
        assert ok is not None, "the server answers a signed check over TCP"
        client = DtlsSession(certificate, sdp.parse(answer).dtls_fingerprints(), role="client")
        server = _OverSocket(conn)
        to_server = client.start()
        for _ in range(10):
            replies = [r for d in to_server for r in server.receive(d)]
            to_server = [x for r in replies for x in client.receive(r)]
            if client.connected and not to_server:
                break
        assert client.connected, "DTLS completes over the TCP connection"
        connected_at = time.monotonic()
        assert client.keys is not None
        srtp = SrtpContext(client.keys.profile, client.keys.tx_key, client.keys.rx_key)
        # RTP over TCP; the server's report on it (RR/REMB) comes back over TCP and decrypts.
        for seq in range(5):
            conn.send(srtp.protect(_vp8_packet(seq)))
        deadline = time.monotonic() + 5
        rtcp = None
        while rtcp is None:
            packet = conn.recv(deadline)
            if packet[0] >= 128:
                rtcp = srtp.unprotect_rtcp(packet)
        return {"connect_s": connected_at - started, "rtcp": rtcp}
    finally:
        conn.close()


def test_a_raw_tcp_client_publishes_over_ice_tcp(server):
    """No UDP at all: WHIP offer, then ICE, DTLS and SRTCP over one TCP connection."""
    certificate = RTCCertificate.generateCertificate()
    token = server.token("tcp-room", "tcp-client", "participant")
    result = _raw_tcp_session(server.base_url, token, certificate)
    assert result["rtcp"][1] in (200, 201, 205, 206), "an RTCP packet, decrypted"
    print(
        f"raw ICE-TCP client: WHIP answer to DTLS connected in {result['connect_s'] * 1000:.0f} ms"
    )


# -- TURN: credentials handed out, accepted by coturn -------------------------------------------

TURN_SECRET = "turn-shared-secret-for-tests-only-0123456789"


class Coturn:
    """coturn (Debian's /usr/bin/turnserver) on one address, with use-auth-secret."""

    def __init__(self, tmp: Path, listen: str, relay: str, extra: str = "") -> None:
        self.port = free_port()
        self.addr = (listen, self.port)
        self.conf = tmp / "turnserver.conf"
        self.conf.write_text(
            "\n".join(
                [
                    f"listening-ip={listen}",
                    f"listening-port={self.port}",
                    f"relay-ip={relay}",
                    "min-port=49152",
                    "max-port=49500",
                    "use-auth-secret",
                    f"static-auth-secret={TURN_SECRET}",
                    "realm=telebridge.test",
                    "fingerprint",
                    "no-tls",
                    "no-dtls",
                    "no-cli",
                    f"userdb={tmp / 'turndb'}",
                    f"pidfile={tmp / 'turnserver.pid'}",
                    "log-file=stdout",
                    "simple-log",
                    extra,
                ]
            )
            + "\n"
        )
        self.log = tmp / "turnserver.log"
        self.process = subprocess.Popen(
            [TURNSERVER, "-c", str(self.conf)],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:  # ready once its TCP listener accepts
            try:
                socket.create_connection(self.addr, timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"turnserver did not start:\n{self.logs()}") from None
                time.sleep(0.05)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _turn_config(urls: list[str]) -> str:
    quoted = ", ".join(f'"{u}"' for u in urls)
    return f'\n[turn]\nurls = [{quoted}]\nsecret = "{TURN_SECRET}"\nttl = 600\n'


async def _join_answer(base_url: str, token: str) -> dict:
    async with aiohttp.ClientSession() as http, http.ws_connect(base_url + "/ws") as ws:
        await ws.send_json({"v": 1, "type": "join", "id": 1, "token": token})
        while True:
            message = await ws.receive_json(timeout=10)
            if message.get("id") == 1:
                assert message["type"] == "response", message
                return message["data"]


def test_clients_get_turn_credentials_by_join_rest_and_whip_links(tmp_path):
    urls = ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
    server = RunningServer(tmp_path, extra=_turn_config(urls))
    try:
        token = server.token("turn-room", "dr.an", "participant")
        before = int(time.time())
        joined = asyncio.run(_join_answer(server.base_url, token))
        (entry,) = joined["ice_servers"]
        assert entry["urls"] == urls
        expiry, _, who = entry["username"].partition(":")
        assert who == "dr.an"
        assert before + 600 <= int(expiry) <= int(time.time()) + 600
        # coturn's check, written out: base64(HMAC-SHA1(static-auth-secret, username)).
        expected = base64.b64encode(
            hmac.new(TURN_SECRET.encode(), entry["username"].encode(), hashlib.sha1).digest()
        ).decode()
        assert entry["credential"] == expected

        request = urllib.request.Request(
            server.base_url + "/ice-servers", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.load(reply)["ice_servers"][0]["urls"] == urls
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.base_url + "/ice-servers", timeout=10)
        assert refused.value.code == 401

        certificate = RTCCertificate.generateCertificate()
        request = urllib.request.Request(
            server.base_url + "/whip/turn-room",
            data=_offer(certificate).encode(),
            headers={
                "Content-Type": "application/sdp",
                "Authorization": f"Bearer {server.token('turn-room', 'whip', 'participant')}",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            links = reply.headers.get_all("Link")
        assert len(links) == 2
        for url, link in zip(urls, links, strict=True):
            assert link.startswith(f'<{url}>; rel="ice-server"; username="')
            assert 'credential-type="password"' in link
    finally:
        server.stop()


def test_no_turn_configured_hands_out_nothing(server):
    joined = asyncio.run(_join_answer(server.base_url, server.token("r", "a", "participant")))
    assert joined["ice_servers"] == []


@pytest.mark.skipif(not os.access(TURNSERVER, os.X_OK), reason=f"{TURNSERVER} (coturn) missing")
def test_coturn_allocates_with_our_credentials_and_refuses_others(tmp_path):
    coturn = Coturn(tmp_path, "127.0.0.1", "127.0.0.1")
    try:
        settings = TurnSettings(urls=("turn:127.0.0.1?transport=tcp",), secret=TURN_SECRET)
        (entry,) = turn.ice_servers(settings, "someone", time.time())

        async def allocate(username: str, password: str) -> tuple[str, int]:
            transport, _ = await create_turn_endpoint(
                asyncio.DatagramProtocol, coturn.addr, username, password, transport="tcp"
            )
            try:
                relayed: tuple[str, int] = transport.get_extra_info("sockname")
                return relayed
            finally:
                transport.close()

        relayed = asyncio.run(allocate(entry["username"], entry["credential"]))
        assert relayed[0] == "127.0.0.1" and 49152 <= relayed[1] <= 49500
        with pytest.raises(stun.TransactionFailed, match="401"):
            asyncio.run(allocate(entry["username"], entry["credential"][:-4] + "AAA="))
        expired = f"{int(time.time()) - 10}:someone"
        with pytest.raises(stun.TransactionFailed, match="401"):
            asyncio.run(allocate(expired, turn.credential(TURN_SECRET, expired)))
    finally:
        coturn.stop()


# -- Chromium at a site whose UDP is blocked ----------------------------------------------------

NFT_RULES = """
table inet telebridge_noudp {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "lo" accept
    meta l4proto udp counter drop
  }
  chain output {
    type filter hook output priority 0; policy accept;
    oifname "lo" accept
    meta l4proto udp counter drop
  }
}
"""


def _netns_missing() -> str:
    if os.geteuid() != 0:
        return "needs root to create a network namespace and nftables rules"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iproute2 nftables)"
    if not os.access(TURNSERVER, os.X_OK):
        return f"needs coturn's {TURNSERVER} (apt-get install coturn)"
    if not chromium_available():
        return missing_reason()
    return ""


def _run(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=20)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class UdpBlockedSite:
    """A network namespace behind a veth pair, with every UDP packet in or out dropped by
    nftables: a hospital or school network that lets only TCP through."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.ns, self.host_if, self.ns_if = f"tb-noudp-{tag}", f"tbh{tag}", f"tbn{tag}"
        net = f"10.{random.randint(64, 250)}.{random.randint(0, 255)}"
        self.host_ip, self.ns_ip = f"{net}.1", f"{net}.2"
        _run("ip", "netns", "add", self.ns)
        try:
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _run("ip", "link", "set", self.ns_if, "netns", self.ns)
            _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            self.exec("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            self.exec("ip", "link", "set", self.ns_if, "up")
            self.exec("ip", "link", "set", "lo", "up")
            self.exec("nft", "-f", "-", stdin=NFT_RULES)
        except BaseException:
            self.close()
            raise

    def exec(self, *args: str, stdin: str | None = None) -> str:
        return _run("ip", "netns", "exec", self.ns, *args, stdin=stdin)

    def udp_dropped(self) -> int:
        """Packets the rules have dropped so far, both directions."""
        listing = self.exec("nft", "list", "table", "inet", "telebridge_noudp")
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)


class NetnsChromium:
    """chromedriver, and so Chromium, started inside the namespace; driven from here."""

    def __init__(self, site: UdpBlockedSite, tmp: Path, origin: str) -> None:
        from selenium import webdriver

        port = random.randint(20000, 40000)
        self.log = (tmp / "chromedriver.log").open("wb")
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                site.ns,
                CHROMEDRIVER,
                f"--port={port}",
                f"--allowed-ips={site.host_ip}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.profile = tempfile.mkdtemp(prefix="telebridge-chromium-")
        url = f"http://{site.ns_ip}:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(url + "/status", timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.quit()
                    raise RuntimeError("chromedriver did not start in the namespace") from None
                time.sleep(0.05)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM_BINARY
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        # getUserMedia wants a secure context; the SFU's origin is plain http on the veth.
        options.add_argument(f"--unsafely-treat-insecure-origin-as-secure={origin}")
        try:
            self.driver = webdriver.Remote(command_executor=url, options=options)
        except BaseException:
            self.quit()
            raise

    def quit(self) -> None:
        driver = getattr(self, "driver", None)
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


PUBLISH_AND_VIEW = """
const [pubToken, viewToken, mode] = arguments;
const opts = {gatherTimeout: 8000};
if (mode === "ice-tcp") opts.iceServers = [];  // no TURN: only the SFU's own candidates
else opts.iceTransportPolicy = "relay";         // everything through coturn
const until = async (what, check, ms) => {
  const end = performance.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (performance.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 50));
  }
};
const selected = async (pc) => {
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) return null;
  const l = stats.get(pair.localCandidateId), r = stats.get(pair.remoteCandidateId);
  return {local: {type: l.candidateType, protocol: l.protocol, relayProtocol: l.relayProtocol || null},
          remote: {type: r.candidateType, protocol: r.protocol, port: r.port}};
};
const t0 = performance.now();
const pub = await Telebridge.connect("/ws", pubToken, opts);
const media = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
await pub.publish({camera: media.getVideoTracks()[0]});
await until("the publish connection", () => pub.publishPc.connectionState === "connected", 30000);
const publishMs = performance.now() - t0;
const t1 = performance.now();
const viewer = await Telebridge.connect("/ws", viewToken, Object.assign({autoSubscribe: true}, opts));
const trackId = await until("a remote track", () => [...viewer.remoteTracks.keys()][0], 30000);
await until("10 decoded frames", async () => {
  const s = await viewer.remoteTrackStats(trackId);
  return s && s.framesDecoded >= 10;
}, 30000);
const viewMs = performance.now() - t1;
const result = {publishMs, viewMs, publish: await selected(pub.publishPc),
                view: await selected(viewer.subscribePc)};
await viewer.leave();
await pub.leave();
media.getTracks().forEach((t) => t.stop());
return result;
"""


@pytest.fixture(scope="module")
def blocked_site(tmp_path_factory):
    """The site, the SFU on the host end of its veth, and coturn beside it (TCP for the
    site, relaying to the SFU over UDP on the host side)."""
    reason = _netns_missing()
    if reason:
        pytest.skip(reason=reason)
    tmp = tmp_path_factory.mktemp("blocked-site")
    site = UdpBlockedSite()
    coturn = server = browser = None
    try:
        coturn = Coturn(tmp, site.host_ip, site.host_ip)
        server = RunningServer(
            tmp,
            host=site.host_ip,
            extra=_turn_config([f"turn:{site.host_ip}:{coturn.port}?transport=tcp"]),
        )
        before = site.udp_dropped()
        site.exec(  # the block is real: a datagram to the SFU's port is counted and dropped
            sys.executable,
            "-c",
            "import socket\ntry:\n socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            f".sendto(b'x', ({site.host_ip!r}, {coturn.port}))\n"
            "except PermissionError:\n pass",  # the output hook's drop says EPERM
        )
        assert site.udp_dropped() == before + 1
        browser = NetnsChromium(site, tmp, server.base_url)
        browser.driver.get(server.base_url + "/static/whip.html")
        yield site, server, coturn, browser
    finally:
        for part in (browser, server, coturn):
            if part is not None:
                (part.quit if isinstance(part, NetnsChromium) else part.stop)()
        site.close()


@pytest.mark.browser
@pytest.mark.parametrize("mode", ["ice-tcp", "turn-tcp"])
def test_chromium_behind_a_udp_block_publishes_and_views(blocked_site, mode):
    site, server, coturn, browser = blocked_site
    dropped_before = site.udp_dropped()
    room = f"noudp-{mode}"
    result = run_async_js(
        browser.driver,
        PUBLISH_AND_VIEW,
        server.token(room, "pub", "participant"),
        server.token(room, "view", "participant"),
        mode,
        timeout=90,
    )
    for direction in ("publish", "view"):
        pair = result[direction]
        assert pair is not None, f"no selected candidate pair on the {direction} connection"
        if mode == "ice-tcp":
            assert pair["local"]["protocol"] == "tcp" and pair["remote"]["protocol"] == "tcp", pair
        else:
            assert pair["local"]["type"] == "relay" and pair["local"]["relayProtocol"] == "tcp", (
                pair
            )
            assert pair["remote"]["protocol"] == "udp", "coturn relays to the SFU's UDP port"
    if mode == "ice-tcp":  # with the relay policy Chromium sends no UDP at all
        assert site.udp_dropped() > dropped_before, "Chromium tried UDP and the site dropped it"
    print(
        f"{mode}: join+publish to connected {result['publishMs']:.0f} ms, "
        f"join+subscribe to 10 decoded frames {result['viewMs']:.0f} ms"
    )


# -- configuration ---------------------------------------------------------------------------


def test_turn_and_ice_tcp_configuration_errors_name_the_key(tmp_path):
    from signaling.config import ConfigError, load

    def config(text: str) -> Path:
        path = tmp_path / "telebridge.toml"
        path.write_text(f'[auth]\nsecret = "{"s" * 40}"\n' + text)
        return path

    with pytest.raises(ConfigError, match="turn: secret or secret_file is required"):
        load(config('[turn]\nurls = ["turn:192.0.2.1?transport=tcp"]\n'))
    with pytest.raises(ConfigError, match="is not a turn:, turns:, stun: or stuns: URL"):
        load(config('[turn]\nurls = ["http://192.0.2.1"]\nsecret = "x"\n'))
    with pytest.raises(ConfigError, match="tcp_base_port must be 0-65535"):
        load(config("[media]\ntcp_base_port = 70000\n"))
    (tmp_path / "turn-secret").write_text("from-a-file\n")
    loaded = load(
        config(
            '[turn]\nurls = ["turns:192.0.2.1:443?transport=tcp"]\nsecret_file = "turn-secret"\n'
        )
    )
    assert loaded.turn.secret == "from-a-file"
    assert "from-a-file" not in repr(loaded.turn), "the secret stays out of logs"
    assert load(config("[media]\nice_tcp = false\n")).media.ice_tcp is False
