"""Hostile input against a real server (subprocess, real sockets, real aiortc peers).

(a) The media port: while a publisher -> viewer session flows, strangers blast random
datagrams, broken STUN, STUN with a wrong password for the live session, DTLS
ClientHello-looking records and fake SRTP/SRTCP at it. Nothing may be answered, the viewer
keeps decoding at its normal rate and the worker stays up without logging a traceback.
(b) The HTTP API: every refusal has the right status and a JSON error body.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import re
import socket
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest

from tests.conftest import RunningServer
from tests.peers import start_whep_viewer, start_whip_publisher
from tests.wire import binding_request

OFFER = (Path(__file__).parent / "data" / "chromium-156-simulcast-offer.sdp").read_bytes().decode()


def health(server: RunningServer) -> dict:
    try:
        with urllib.request.urlopen(server.base_url + "/healthz", timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


# -- (a) the media port ------------------------------------------------------------------------


def hostile_datagrams(
    server_ufrag: str, client_ufrag: str, count: int, seed: int = 11
) -> list[bytes]:
    rng = random.Random(seed)
    wrong_password = [
        binding_request(
            f"{server_ufrag}:{client_ufrag}", "x" * 24, use_candidate=True
        ),  # the live session, wrong pwd
        binding_request(f"{server_ufrag}:{client_ufrag}", "", use_candidate=True),
        binding_request(f"{server_ufrag}:someone", "y" * 24, use_candidate=True),
        binding_request(f"nosuchufrag:{client_ufrag}", "z" * 24, use_candidate=True),
    ]
    cookie = b"\x21\x12\xa4\x42"

    def one() -> bytes:
        kind = rng.randrange(9)
        if kind == 0:
            return os.urandom(rng.randrange(0, 1200))
        if kind == 1:  # truncated STUN
            request = rng.choice(wrong_password)
            return request[: rng.randrange(0, len(request))]
        if kind == 2:
            return rng.choice(wrong_password)
        if kind == 3:  # STUN whose attributes have impossible lengths (aioice: struct.error)
            attr_type = rng.choice([0x0024, 0x8028, 0x8029, 0x0025, 0x0006, 0x0020])
            value = os.urandom(rng.randrange(0, 7))
            attrs = struct.pack("!HH", attr_type, len(value)) + value + bytes(-len(value) % 4)
            return struct.pack("!HH", 0x0001, len(attrs)) + cookie + os.urandom(12) + attrs
        if kind == 4:  # DTLS 1.2 ClientHello-looking record
            body = (
                b"\x01"
                + struct.pack("!I", rng.randrange(1 << 24))[1:]
                + os.urandom(rng.randrange(40, 300))
            )
            return b"\x16\xfe\xfd" + bytes(8) + struct.pack("!H", len(body)) + body
        if kind == 5:  # fake SRTP
            return (
                b"\x80"
                + bytes([rng.choice([96, 97, 111, 0xE0])])
                + os.urandom(rng.randrange(10, 1200))
            )
        if kind == 6:  # fake SRTCP
            return (
                b"\x80"
                + bytes([rng.choice([200, 201, 205, 206])])
                + os.urandom(rng.randrange(6, 200))
            )
        if kind == 7:
            return b""
        # a bit-flipped copy of a wrong-password check
        data = bytearray(rng.choice(wrong_password))
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)

    return [one() for _ in range(count)]


def _ufrag(sdp_text: str) -> str:
    match = re.search(r"a=ice-ufrag:(\S+)", sdp_text)
    assert match, sdp_text
    return match.group(1)


async def test_media_port_survives_hostile_datagrams(server):
    room = "clinic"
    publisher = await start_whip_publisher(server.base_url, room, server.token(room, "dr", "lead"))
    viewer = None
    sockets: list[socket.socket] = []
    try:
        await publisher.wait_connected()
        viewer = await start_whep_viewer(
            server.base_url, room, server.token(room, "site", "observer")
        )
        await viewer.wait_frames(30, timeout=20)
        before = health(server)
        assert before["ok"] is True
        worker_pid = before["workers"][0].get("pid")
        port = viewer.server_port()
        datagrams = hostile_datagrams(
            _ufrag(viewer.answer), _ufrag(viewer.pc.localDescription.sdp), 2000
        )
        for _ in range(8):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            sockets.append(sock)

        frames_at_start = viewer.video_frames
        started = time.monotonic()
        # 2000 datagrams over about two seconds, in bursts, from 8 stranger sockets.
        for batch in range(20):
            for n, data in enumerate(datagrams[batch * 100 : (batch + 1) * 100]):
                try:
                    sockets[n % len(sockets)].sendto(data, ("127.0.0.1", port))
                except BlockingIOError:
                    await asyncio.sleep(0.005)
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        elapsed = time.monotonic() - started
        decoded = viewer.video_frames - frames_at_start

        answers = []
        for sock in sockets:
            while True:
                try:
                    answers.append(sock.recvfrom(2048))
                except BlockingIOError:
                    break
        assert answers == [], f"the SFU answered a stranger: {answers[:3]}"
        # The 30 fps source kept flowing through the blast and after it.
        assert decoded >= 15 * elapsed, (
            f"{decoded} frames in {elapsed:.1f} s during and after the blast"
        )
        assert viewer.rate(2.0) > 15, f"viewer decodes {viewer.rate(2.0)} fps after the blast"
        assert viewer.pc.connectionState == "connected"

        after = health(server)
        assert after["ok"] is True and after["workers"][0]["alive"] is True
        assert after["workers"][0].get("pid") == worker_pid, (
            "the worker must not have been restarted"
        )
        logs = server.logs()
        assert "error handling a datagram" not in logs, logs[-3000:]
        assert "Traceback" not in logs, logs[-3000:]
    finally:
        for sock in sockets:
            sock.close()
        if viewer is not None:
            await viewer.close()
        await publisher.close()


# -- (b) the HTTP API --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> RunningServer:
    """One server for all HTTP refusal cases: none of them creates lasting state."""
    running = RunningServer(tmp_path_factory.mktemp("bad-input-http"))
    yield running
    running.stop()


def request(
    server: RunningServer,
    method: str,
    path: str,
    body: bytes | None = None,
    token: str | None = None,
    content_type: str | None = "application/sdp",
    headers: dict[str, str] | None = None,
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    try:
        if chunked:
            connection.request(
                method,
                path,
                body=iter([body[i : i + 8192] for i in range(0, len(body), 8192)]),
                headers=all_headers,
                encode_chunked=True,
            )
        else:
            connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def assert_error(result: tuple[int, dict[str, str], bytes], status: int, code: str) -> str:
    got_status, headers, body = result
    assert got_status == status, (got_status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    payload = json.loads(body)
    assert set(payload) == {"error"}
    assert payload["error"]["code"] == code, payload
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    return payload["error"]["message"]


def test_malformed_sdp_is_400_bad_sdp(api):
    token = api.token("room1", "dr", "lead")
    message = assert_error(
        request(api, "POST", "/whip/room1", b"this is not sdp", token), 400, "bad_sdp"
    )
    assert "v=0" in message
    no_fp = "\r\n".join(
        line for line in OFFER.split("\r\n") if not line.startswith("a=fingerprint")
    ).encode()
    assert "fingerprint" in assert_error(
        request(api, "POST", "/whip/room1", no_fp, token), 400, "bad_sdp"
    )


def test_sdp_values_that_can_never_work_are_400_bad_sdp(api):
    """A short ice-pwd, a non-hex fingerprint, no a=setup, no a=rtcp-mux: refused at once,
    naming the line, instead of a session that waits out its timeout."""
    token = api.token("room1", "dr", "lead")
    lines = OFFER.split("\r\n")
    cases = {
        "ice-pwd must be 22": OFFER.replace(
            "a=ice-pwd:FVLEXfQPsqPQa3EVPiSTuegr", "a=ice-pwd:short"
        ),
        "hex": re.sub(r"(a=fingerprint:sha-256 \S+):..", r"\1:XY", OFFER),
        "a=setup": "\r\n".join(line for line in lines if not line.startswith("a=setup")),
        "rtcp-mux": "\r\n".join(line for line in lines if not line.startswith("a=rtcp-mux")),
    }
    for reason, offer in cases.items():
        message = assert_error(
            request(api, "POST", "/whip/room1", offer.encode(), token), 400, "bad_sdp"
        )
        assert reason in message, message


def test_sdp_that_is_not_utf8_is_400(api):
    token = api.token("room1", "dr", "lead")
    assert_error(request(api, "POST", "/whip/room1", b"v=0\r\n\xff\xfe", token), 400, "bad_sdp")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json", None, "application/sdpx"]
)
def test_wrong_content_type_is_415(api, content_type):
    token = api.token("room1", "dr", "lead")
    result = request(api, "POST", "/whip/room1", OFFER.encode(), token, content_type=content_type)
    assert_error(result, 415, "unsupported_media_type")


def test_content_type_parameters_are_accepted(api):
    """application/sdp; charset=utf-8 is still SDP: the request gets past the 415 check."""
    token = api.token("room1", "dr", "lead")
    result = request(
        api, "POST", "/whip/room1", b"garbage", token, content_type="application/sdp; charset=utf-8"
    )
    assert_error(result, 400, "bad_sdp")


def _expired_token(secret: str, room: str) -> str:
    # tokens.verify allows 5 s of clock skew, so a ttl=1 token slept on for 2 s is still
    # valid: sign one that expired a minute ago instead.
    now = int(time.time())
    claims = {
        "iss": "telebridge",
        "sub": "dr",
        "room": room,
        "role": "lead",
        "iat": now - 700,
        "exp": now - 60,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.mark.parametrize("endpoint", ["whip", "whep"])
@pytest.mark.parametrize(
    "case", ["none", "garbage", "expired", "wrong-key", "basic-scheme", "empty-bearer"]
)
def test_bad_credentials_are_401(api, endpoint, case):
    headers: dict[str, str] = {}
    token = None
    if case == "garbage":
        token = "not.a.jwt"
    elif case == "expired":
        token = _expired_token(api.secret, "room1")
    elif case == "wrong-key":
        token = jwt.encode(
            {
                "iss": "telebridge",
                "sub": "dr",
                "room": "room1",
                "role": "lead",
                "exp": int(time.time()) + 600,
            },
            "w" * 64,
        )
    elif case == "basic-scheme":
        headers["Authorization"] = "Basic ZHI6cGFzcw=="
    elif case == "empty-bearer":
        headers["Authorization"] = "Bearer "
    message = assert_error(
        request(api, "POST", f"/{endpoint}/room1", OFFER.encode(), token, headers=headers),
        401,
        "unauthorized",
    )
    if case == "expired":
        assert "expired" in message


def test_token_for_another_room_is_403(api):
    token = api.token("other-room", "dr", "lead")
    assert_error(request(api, "POST", "/whip/room1", OFFER.encode(), token), 403, "forbidden")
    assert_error(request(api, "POST", "/whep/room1", OFFER.encode(), token), 403, "forbidden")


def test_observer_may_not_publish(api):
    token = api.token("room1", "site", "observer")
    message = assert_error(
        request(api, "POST", "/whip/room1", OFFER.encode(), token), 403, "forbidden"
    )
    assert "observer" in message


def test_whep_when_nobody_publishes_is_404(api):
    token = api.token("empty-room", "site", "observer")
    assert_error(request(api, "POST", "/whep/empty-room", OFFER.encode(), token), 404, "not_found")
    result = request(api, "POST", "/whep/empty-room?participant=ghost", OFFER.encode(), token)
    assert_error(result, 404, "not_found")


@pytest.mark.parametrize("kind", ["whip", "whep"])
def test_delete_unknown_session_is_404(api, kind):
    token = api.token("room1", "dr", "lead")
    assert_error(
        request(api, "DELETE", f"/{kind}/room1/no-such-session", None, token, content_type=None),
        404,
        "not_found",
    )


def test_delete_without_token_is_401(api):
    assert_error(
        request(api, "DELETE", "/whip/room1/whatever", None, None, content_type=None),
        401,
        "unauthorized",
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_body_is_413(api, chunked):
    token = api.token("room1", "dr", "lead")
    body = OFFER.encode() + b"a=x-pad:" + b"x" * (70 * 1024) + b"\r\n"
    assert_error(
        request(api, "POST", "/whip/room1", body, token, chunked=chunked), 413, "too_large"
    )


def test_bad_room_name_is_400(api):
    token = api.token("room1", "dr", "lead")
    assert_error(
        request(api, "POST", "/whip/bad%20room!", OFFER.encode(), token), 400, "bad_request"
    )


def test_server_is_healthy_after_the_refusals(api):
    assert health(api)["ok"] is True
    logs = api.logs()
    assert "Traceback" not in logs, logs[-3000:]
