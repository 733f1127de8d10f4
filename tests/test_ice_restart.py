"""WHIP/WHEP trickle and ICE restart (RFC 9725 section 4.3) with aiortc peers, real sockets."""

from __future__ import annotations

import re
import time

import aiohttp
import pytest
from aioice import stun
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling import sdpfrag
from tests.conftest import RunningServer
from tests.peers import (
    TRICKLE,
    ice_agent,
    patch_fragment,
    restart_ice,
    start_whep_viewer,
    start_whip_publisher,
)


@pytest.fixture
def short_consent_server(tmp_path):
    running = RunningServer(tmp_path, consent_timeout=8)  # aioice refreshes consent every ~5 s
    yield running
    running.stop()


def answer_ufrag(sdp: str) -> str:
    match = re.search(r"a=ice-ufrag:(\S+)", sdp)
    assert match, sdp
    return match.group(1)


async def test_whip_resource_headers_options_and_trickle(server):
    room = "trickle"
    token = server.token(room, "lead", "lead")
    publisher = await start_whip_publisher(server.base_url, room, token, "VP8", audio=False)
    try:
        async with aiohttp.ClientSession() as http:
            # A client without an Origin may ask what the endpoint and the resource take.
            async with http.options(f"{server.base_url}/whip/{room}") as response:
                assert response.status == 204
                assert response.headers["Accept-Post"] == "application/sdp"
            async with http.options(server.base_url + publisher.location) as response:
                assert response.status == 204
                assert response.headers["Accept-Patch"] == TRICKLE
        await publisher.wait_connected()
        agent = ice_agent(publisher.pc)
        etag = f'"{answer_ufrag(publisher.answer)}"'
        # A trickle: the session's current credentials and a candidate.
        fragment = (
            f"a=ice-ufrag:{agent.local_username}\r\na=ice-pwd:{agent.local_password}\r\n"
            "m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
            f"a=candidate:{agent.local_candidates[0].to_sdp()}\r\na=end-of-candidates\r\n"
        )
        status, body, headers = await patch_fragment(publisher, fragment, if_match=etag)
        assert status == 204, body
        assert headers["ETag"] == etag, "a trickle does not change the ICE session"
        status, body, _ = await patch_fragment(publisher, "a=end-of-candidates\r\n", None)
        assert status == 204, body
        status, body, _ = await patch_fragment(publisher, fragment, if_match='"stale"')
        assert status == 412, body
        status, body, _ = await patch_fragment(publisher, "a=ice-ufrag:x\r\n")
        assert status == 400 and "together" in body
        status, body, _ = await patch_fragment(publisher, "c=IN IP4 0.0.0.0\r\n")
        assert status == 400
        assert publisher.pc.connectionState == "connected"
    finally:
        await publisher.close()


async def test_whip_post_answers_with_accept_patch_and_exposed_headers(server):
    room = "headers"
    publisher = await start_whip_publisher(
        server.base_url, room, server.token(room, "lead", "lead"), "VP8", audio=False
    )
    try:
        async with publisher.http.options(
            f"{server.base_url}/whip/{room}",
            headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"},
        ) as response:
            assert response.status == 204
        # The POST response itself (the peer kept nothing but the answer): post again.
        offer = publisher.pc.localDescription.sdp
        async with publisher.http.post(
            f"{server.base_url}/whip/{room}",
            data=offer,
            headers={
                "Authorization": f"Bearer {server.token(room, 'lead', 'lead')}",
                "Content-Type": "application/sdp",
            },
        ) as response:
            assert response.status == 201
            assert response.headers["Accept-Patch"] == TRICKLE
            assert response.headers["ETag"] == f'"{answer_ufrag(await response.text())}"'
            exposed = {
                h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")
            }
            assert {"Location", "Link", "ETag", "Accept-Patch"} <= exposed
    finally:
        await publisher.close(delete=False)


async def frames_keep_coming(viewer, seconds: float, what: str) -> None:
    """At least a few frames a second over ``seconds`` (deadline per step, no fixed sleep)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await viewer.wait_frames(viewer.video_frames + 5, timeout=3.0)
    assert viewer.pc.connectionState == "connected", what


async def test_ice_restart_over_patch_keeps_media_flowing(short_consent_server):
    server = short_consent_server
    room = "restart"
    publisher = await start_whip_publisher(
        server.base_url, room, server.token(room, "lead", "lead"), "VP8", audio=False
    )
    viewer = await start_whep_viewer(server.base_url, room, server.token(room, "site", "observer"))
    try:
        await viewer.wait_frames(5)
        old = ice_agent(viewer.pc)
        old_server = (old.remote_username, old.remote_password)
        old_local = (old.local_username, old.local_password)
        # Both ends of the room restart ICE; the DTLS session and SRTP keys stay.
        for peer in (publisher, viewer):
            before = answer_ufrag(peer.answer)
            new_ufrag, _pwd = await restart_ice(peer)
            assert new_ufrag != before
        status, body, headers = await patch_fragment(viewer, "a=end-of-candidates\r\n", None)
        assert status == 204 and headers["ETag"] == f'"{new_ufrag}"'
        # Media keeps coming past the consent timeout (8 s): the server answers the
        # agents' consent checks, which now carry only the new credentials.
        await frames_keep_coming(viewer, 10.0, "after the restart")
        assert "restart completed, old credentials retired" in server.logs()
        # The old credentials are retired: a check with them gets no answer.
        pair = next(iter(old._nominated.values()))
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{old_server[0]}:{old_local[0]}"
        request.attributes["ICE-CONTROLLING"] = 1
        with pytest.raises(stun.TransactionError):
            await pair.protocol.request(
                request, pair.remote_addr, integrity_key=old_server[1].encode(), retransmissions=1
            )
        assert server.logs().count("view connection is up") == 1, "no second DTLS handshake"
    finally:
        await viewer.close()
        await publisher.close()


async def test_patch_of_an_unknown_session_is_404(server):
    room = "nosession"
    publisher = await start_whip_publisher(
        server.base_url, room, server.token(room, "lead", "lead"), "VP8", audio=False
    )
    try:
        location = publisher.location
        publisher.location = location.rsplit("/", 1)[0] + "/nosuchsession"
        status, _body, _ = await patch_fragment(publisher, "a=end-of-candidates\r\n")
        assert status == 404
        publisher.location = location
    finally:
        await publisher.close()


def test_fragment_round_trip():
    text = sdpfrag.write("srvU", "serverpasswordserverpass", "1 1 udp 1 127.0.0.1 9 typ host", "0")
    fragment = sdpfrag.parse(text)
    assert (fragment.ufrag, fragment.pwd, fragment.mids) == (
        "srvU",
        "serverpasswordserverpass",
        ["0"],
    )
    assert fragment.candidates == ["1 1 udp 1 127.0.0.1 9 typ host"] and fragment.end_of_candidates


@pytest.mark.parametrize(
    "text",
    [
        "a=ice-ufrag:abc\r\n",
        "a=ice-pwd:abc\r\n",
        "a=ice-ufrag:a b\r\na=ice-pwd:x\r\n",
        "a=ice-ufrag:a\r\na=ice-ufrag:b\r\na=ice-pwd:x\r\n",
        "v=0\r\n",
        "a=rtpmap:96 VP8/90000\r\n",
        "a=candidate:1 1 udp\r\n",
        "m=audio\r\n",
        "garbage\r\n",
        "a=" + "x" * 20000,
    ],
)
def test_bad_fragments_are_refused(text):
    with pytest.raises(sdpfrag.FragmentError):
        sdpfrag.parse(text)


FRAGMENT_LINES = [
    "a=ice-ufrag:abcd",
    "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "m=audio 9 UDP/TLS/RTP/SAVPF 0",
    "a=mid:0",
    "a=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host",
    "a=end-of-candidates",
    "a=ice-options:trickle",
]


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(
            st.one_of(
                st.sampled_from(FRAGMENT_LINES),
                st.builds(
                    lambda line, cut: line[:cut],
                    st.sampled_from(FRAGMENT_LINES),
                    st.integers(0, 40),
                ),
                st.text(max_size=40),
            ),
            max_size=12,
        ).map("\r\n".join),
    )
)
def test_fuzz_fragments_parse_or_raise_fragment_error(text):
    """The PATCH body parser returns a fragment or raises FragmentError, nothing else."""
    try:
        fragment = sdpfrag.parse(text)
    except sdpfrag.FragmentError:
        return
    assert (fragment.ufrag is None) == (fragment.pwd is None)
