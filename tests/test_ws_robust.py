"""The /ws endpoint under hostile or unlucky clients (issue 10: findings 8, 9, 10, 12).

Real server, real sockets: a client that stops reading, hundreds of join/leave cycles, JSON
nested 20,000 deep, URLs past aiohttp's line limit, a clinic's many devices behind one
address. The sans-I/O pieces (decode, Liveness, JoinLimiter) are tested and fuzzed alone.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.server import RunningServer, free_port
from sfu.settings import MediaSettings
from signaling import schema, tokens
from signaling.app import create_app, handler_args
from signaling.client import ProtocolError, TelebridgeClient
from signaling.config import AuthSettings, Config, ServerSettings, WsSettings
from signaling.ws import MAX_DEPTH, Liveness, decode


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until it holds; the seconds it took. Fails with ``what`` at the deadline."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def join(server: RunningServer, room: str, identity: str, role: str) -> TelebridgeClient:
    return await TelebridgeClient.connect(server.base_url, server.token(room, identity, role))


# -- a raw WebSocket client, so that we decide when (and whether) it reads ----------------


def ws_frame(text: str) -> bytes:
    """One masked text frame, as a client must send it (RFC 6455 5.2)."""
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    elif len(payload) < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_ws(port: int, receive_buffer: int = 4096) -> socket.socket:
    """A WebSocket after its handshake, on a socket with a small receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """The server has reset or finished the connection, seen without reading from it (a
    read would drain the server's buffers and let a graceful close through): the kernel's
    TCP state is no longer ESTABLISHED (1)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != 1


# -- finding 8: a client that stops reading --------------------------------------------------


async def test_a_client_that_stops_reading_is_gone_soon_after_it_is_marked_slow(server):
    port = int(server.base_url.rsplit(":", 1)[1])
    slow = raw_ws(port)
    slow.sendall(
        ws_frame(
            json.dumps(
                {
                    "v": 1,
                    "type": "join",
                    "id": 1,
                    "token": server.token("ward", "slowpoke", "observer"),
                }
            )
        )
    )
    # From here on the slow client reads nothing: its receive buffer is 4 KiB.
    chatty = [await join(server, "ward", f"nurse-{n}", "observer") for n in range(20)]
    lead = chatty[0]
    await wait_until(lambda: "slowpoke" in lead.participants, 5, "the slow client joined")
    marked: list[float] = []

    async def spam(client: TelebridgeClient) -> None:
        raised = False
        while not marked:
            raised = not raised
            await client.raise_hand(raised)  # an event to every connection in the room
            await asyncio.sleep(1 / 15)  # pace: under the per-connection limit of 20/s

    def marked_slow() -> bool:
        if "ws ward/slowpoke: client too slow" in server.logs():
            marked.append(time.monotonic())
        return bool(marked)

    spammers = [asyncio.ensure_future(spam(c)) for c in chatty]
    try:
        # Before Liveness pings it at 20 s: about 3,000 events fill its buffers and queue.
        await wait_until(marked_slow, 18, "the slow client was marked too slow")
        gone = await wait_until(
            lambda: "slowpoke" not in lead.participants, 5, "the slow client left the room"
        )
        closed = await wait_until(
            lambda: closed_by_peer(slow), 5, "the server closed the slow client's socket"
        )
    finally:
        for task in spammers:
            task.cancel()
        slow.close()
        for client in chatty:
            await client.close()
    left = [d for e, d in lead.events if e == "participant_left" and d["identity"] == "slowpoke"]
    assert left and left[-1]["reason"] == "slow"
    print(f"slow client: left the room {gone:.2f} s and closed {closed:.2f} s after marking")


# -- finding 9: closed connections leave nothing of aiohttp's behind ------------------------


@pytest.fixture
async def in_process() -> AsyncIterator[tuple[str, str]]:
    """The server in this process, so gc can see its objects; real sockets all the same."""
    secret = "s" * 48
    port = free_port()
    config = Config(
        server=ServerSettings(port=port),
        auth=AuthSettings(secret=secret),
        media=MediaSettings(workers=1, listen="127.0.0.1", announce="127.0.0.1", base_port=0),
        ws=WsSettings(join_limit=0, identity_join_limit=0, resume_grace=1.0),
    )
    runner = web.AppRunner(create_app(config), access_log=None, **handler_args())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", secret
    finally:
        await runner.cleanup()


def live(kind: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


async def test_closed_connections_leave_no_aiohttp_objects_behind(in_process):
    base_url, secret = in_process
    cycles = 300
    async with aiohttp.ClientSession() as http:
        for n in range(cycles):
            token = tokens.mint(secret, f"room-{n % 7}", f"site-{n % 40}", "observer", 600)
            client = await TelebridgeClient.connect(base_url, token, session=http)
            if n % 3:
                await client.leave()
            else:
                await client.close()  # a drop: the participant waits out the resume grace
    # Before the fix aiohttp's heartbeat timer, re-armed by the client's close frame, held
    # every closed connection for 30 s: all 300 were alive here.
    await wait_until(
        lambda: live(web.WebSocketResponse) == 0 and live(web.BaseRequest) == 0,
        5,
        "the closed connections' WebSocketResponse and request objects were collected",
    )


async def test_client_pings_are_answered(server):
    """We answer pings ourselves now (autoping is off): a client heartbeat keeps the socket."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.base_url.replace("http", "ws") + "/ws", heartbeat=0.4)
        started = time.monotonic()
        while time.monotonic() - started < 2.0:  # 5 heartbeats, each needing our pong
            await ws.send_str(json.dumps({"v": 1, "type": "ping", "id": 1}))
            reply = await ws.receive(timeout=2)
            assert reply.type == aiohttp.WSMsgType.TEXT, reply
            await asyncio.sleep(0.2)
        assert not ws.closed
        await ws.close()


def test_liveness_pings_a_quiet_client_and_gives_up_on_a_silent_one():
    live_ = Liveness(now=100.0, interval=20.0, grace=10.0)
    assert live_.next_deadline() == 120.0
    assert live_.poll(119.9) is None
    assert live_.poll(120.0) == "ping"
    assert live_.next_deadline() == 130.0
    assert live_.poll(125.0) is None
    live_.heard(126.0)  # the pong
    assert live_.next_deadline() == 146.0 and live_.poll(140.0) is None
    assert live_.poll(146.0) == "ping"
    assert live_.poll(156.0) == "dead"


# -- finding 10: nesting and long URLs ------------------------------------------------------


async def test_deeply_nested_json_is_answered_bad_json(server):
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.base_url.replace("http", "ws") + "/ws")
        nested = '{"v": 1, "type": "ping", "id": 8, "x": ' + "[" * 40 + "]" * 40 + "}"
        for text in ("[" * 20000, "[" * 20000 + "]" * 20000, nested):
            await ws.send_str(text)
            reply = json.loads((await ws.receive(timeout=5)).data)
            assert reply["type"] == "error" and reply["code"] == "bad_json", reply
        await ws.send_str(json.dumps({"v": 1, "type": "ping", "id": 9}))
        pong = json.loads((await ws.receive(timeout=5)).data)
        assert pong["type"] == "response" and pong["id"] == 9, "the connection survived"
        await ws.close()
    assert "Traceback" not in server.logs() and "RecursionError" not in server.logs()


def http_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 exchange (aiohttp's client would refuse to send what we test)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize(
    ("length", "status", "json_body"),
    [(9000, 414, True), (60000, 414, True), (70000, 400, False)],
    ids=["past-aiohttp-default", "near-our-line-limit", "past-our-line-limit"],
)
def test_long_urls_get_an_error_and_one_quiet_log_line(server, length, status, json_body):
    port = int(server.base_url.rsplit(":", 1)[1])
    before = server.logs()
    target = "/ws?pad=" + "a" * length
    for _ in range(3):
        got, headers, body = http_exchange(
            port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        assert got == status
        if json_body:  # past aiohttp's parser limit it answers itself, in plain text
            assert headers["content-type"].startswith("application/json")
            assert json.loads(body)["error"]["code"] == "uri_too_long"
    new = server.logs()[len(before) :]
    assert "Traceback" not in new and " ERROR " not in new, new[:2000]
    lines = [line for line in new.splitlines() if "414" in line or "unparseable" in line]
    assert len(lines) == 3 and all(len(line) < 400 for line in lines), lines
    # The server still serves.
    assert (
        http_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0]
        == 200
    )


# -- finding 12: join limits per identity, and per address as a burst guard ---------------


async def test_many_identities_may_join_from_one_address_but_one_identity_is_limited(server):
    clients = []
    try:
        # A clinic behind one NAT: well past the old 20 joins per address per 10 s.
        for n in range(30):
            clients.append(await join(server, "clinic", f"device-{n}", "observer"))
        # One identity in a reconnect loop: each join replaces the last; the 11th is refused.
        for _ in range(10):
            clients.append(await join(server, "clinic", "looping", "observer"))
        with pytest.raises(ProtocolError) as refused:
            await join(server, "clinic", "looping", "observer")
        assert refused.value.code == "rate_limited" and "identity" in refused.value.message
        # Another identity from the same address is not affected.
        clients.append(await join(server, "clinic", "device-30", "observer"))
    finally:
        for client in clients:
            await client.close()


async def test_the_per_address_burst_guard_is_configurable(tmp_path: Path):
    server = RunningServer(tmp_path, extra="[ws]\njoin_limit = 4\nidentity_join_limit = 0")
    clients = []
    try:
        for n in range(4):
            clients.append(await join(server, "gate", f"site-{n}", "observer"))
        with pytest.raises(ProtocolError) as refused:
            await join(server, "gate", "site-4", "observer")
        assert refused.value.code == "rate_limited" and "address" in refused.value.message
    finally:
        for client in clients:
            await client.close()
        server.stop()


# -- the decoder, fuzzed ----------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(
    st.text(max_size=200)
    | st.builds(lambda n, c: c * n, st.integers(0, 30000), st.sampled_from("[{"))
)
def test_decode_fuzz_text_is_an_object_or_bad_json(text):
    try:
        message = decode(text)
    except schema.SchemaError as exc:
        assert exc.code == "bad_json"
    else:
        assert isinstance(message, dict)


@settings(max_examples=300, deadline=None)
@given(JSON, st.integers(0, 60))
def test_decode_fuzz_nesting_is_refused_past_the_limit(value, wrap):
    for _ in range(wrap):
        value = {"k": [value]}
    text = json.dumps({"v": 1, "x": value})
    depth = _depth(json.loads(text))
    try:
        decode(text)
    except schema.SchemaError as exc:
        assert exc.code == "bad_json" and depth > MAX_DEPTH
    else:
        assert depth <= MAX_DEPTH


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def test_decode_refuses_what_is_not_an_object_or_nests_too_deeply():
    for text in ("not json", "[1, 2]", "3", '"x"', "", "[" * 20000):
        with pytest.raises(schema.SchemaError) as error:
            decode(text)
        assert error.value.code == "bad_json"
    deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH  # one level more than allowed, in an object
    with pytest.raises(schema.SchemaError, match="nested deeper"):
        decode('{"v": 1, "x": ' + deep + "}")
    assert decode('{"v": 1, "x": ' + deep[1:-1] + "}")["v"] == 1
