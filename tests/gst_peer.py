"""A GStreamer webrtcbin WHIP publisher or WHEP viewer, for tests/test_gstreamer.py.

PyGObject (gi) imports only under Debian's /usr/bin/python3, not the project's venv, so the
tests run this file as a subprocess with that interpreter. It uses only the standard library
and gi, builds a webrtcbin pipeline with bundle-policy max-bundle (the offers GStreamer 1.22
writes: a=bundle-only sections with port 0), POSTs the complete offer (no trickle), applies
the answer, runs for ``--seconds`` and prints one JSON object per line: ``{"event": ...}``
as things happen and the result last.

    /usr/bin/python3 tests/gst_peer.py probe
    /usr/bin/python3 tests/gst_peer.py whip URL TOKEN --seconds 20
    /usr/bin/python3 tests/gst_peer.py whep URL TOKEN --seconds 20 --late-after 17
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

REQUIRED = (
    "webrtcbin",
    "nicesrc",
    "dtlssrtpenc",
    "videotestsrc",
    "vp8enc",
    "rtpvp8pay",
    "rtpvp8depay",
    "vp8dec",
    "audiotestsrc",
    "opusenc",
    "rtpopuspay",
    "rtpopusdepay",
    "opusdec",
    "fakesink",
)


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def load_gst() -> tuple[Any, Any, Any, Any, Any]:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstSdp", "1.0")
    gi.require_version("GstWebRTC", "1.0")
    gi.require_version("Nice", "0.1")
    from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice

    Gst.init(None)
    return Nice, GLib, Gst, GstSdp, GstWebRTC


def probe() -> int:
    """Say whether this interpreter can run a webrtcbin peer, and if not, why."""
    try:
        _gi, _glib, gst, _sdp, _webrtc = load_gst()
    except (ImportError, ValueError) as exc:
        emit(ok=False, reason=f"{sys.executable} cannot load gi Gst/GstWebRTC/Nice: {exc}")
        return 0
    missing = [name for name in REQUIRED if gst.ElementFactory.find(name) is None]
    if missing:
        emit(ok=False, reason=f"GStreamer elements missing: {', '.join(missing)}")
    else:
        emit(ok=True, version=gst.version_string())
    return 0


class Peer:
    """One webrtcbin, its media branches, the WHIP/WHEP exchange and the counters."""

    def __init__(
        self, role: str, url: str, token: str, seconds: float, late_after: float, local: str
    ) -> None:
        self.Nice, self.GLib, self.Gst, self.GstSdp, self.GstWebRTC = load_gst()
        self.role = role
        self.url = url
        self.token = token
        self.seconds = seconds
        self.late_after = late_after
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.frames = {"video": 0, "audio": 0}
        self.late_frames = {"video": 0, "audio": 0}
        self.states: list[str] = []
        self.location: str | None = None
        self.error: str | None = None
        self.loop = self.GLib.MainLoop()
        self.pipeline = self.Gst.Pipeline.new(role)
        self.webrtc = self.Gst.ElementFactory.make("webrtcbin", "webrtc")
        self.webrtc.set_property("bundle-policy", self.GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        if local:
            # libnice leaves out loopback when it lists interfaces, and its checks from
            # another interface's address never reach a server on 127.0.0.1; naming the
            # address to gather on is libnice's own setting for this.
            address = self.Nice.Address.new()
            if not address.set_from_string(local):
                raise SystemExit(f"not an address: {local}")
            # Keep both wrappers for the pipeline's life: dropping them early unrefs
            # webrtcbin's own ICE object under it.
            self.ice = self.webrtc.get_property("ice-agent")
            self.agent = self.ice.get_property("agent")
            self.agent.add_local_address(address)
        self.pipeline.add(self.webrtc)
        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self._on_gathering)
        self.webrtc.connect("notify::connection-state", self._on_connection_state)
        self.webrtc.connect("pad-added", self._on_pad_added)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_error)
        if role == "whip":
            self._add_sources()
        else:
            self._add_receivers()

    # -- pipeline -------------------------------------------------------------------------------
    def _branch(self, description: str) -> Any:
        return self.Gst.parse_bin_from_description(description, True)

    def _add_sources(self) -> None:
        """Audio first, then video, as webrtcbin's WHIP client orders them: the second
        section is the one max-bundle marks bundle-only."""
        audio = self._branch(
            "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample"
            " ! opusenc ! rtpopuspay pt=100 ! capsfilter caps="
            '"application/x-rtp,media=audio,encoding-name=OPUS,payload=100,clock-rate=48000"'
        )
        video = self._branch(
            "videotestsrc is-live=true pattern=ball"
            " ! video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert"
            " ! vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt=96 ! capsfilter caps="
            '"application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"'
        )
        send = self.GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
        for branch in (audio, video):
            self.pipeline.add(branch)
            sink = self.webrtc.request_pad_simple("sink_%u")
            branch.get_static_pad("src").link(sink)
            sink.get_property("transceiver").set_property("direction", send)

    def _add_receivers(self) -> None:
        """Video first, then audio, as in webrtcbin's own receive-only offers."""
        recv = self.GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
        for caps in (
            "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
            "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,"
            "encoding-params=(string)2",
        ):
            self.webrtc.emit("add-transceiver", recv, self.Gst.Caps.from_string(caps))

    def _on_pad_added(self, _element: Any, pad: Any) -> None:
        if pad.get_direction() != self.Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        kind = caps.get_structure(0).get_string("media")
        if kind == "video":
            description = "queue ! rtpvp8depay ! vp8dec ! fakesink name=sink sync=false"
        elif kind == "audio":
            description = "queue ! rtpopusdepay ! opusdec ! fakesink name=sink sync=false"
        else:
            return
        branch = self._branch(description)
        sink = branch.get_by_name("sink")
        sink.set_property("signal-handoffs", True)
        sink.connect("handoff", self._on_frame, kind)
        self.pipeline.add(branch)
        branch.sync_state_with_parent()
        pad.link(branch.get_static_pad("sink"))
        emit(event="track", kind=kind)

    def _on_frame(self, _sink: Any, _buffer: Any, _pad: Any, kind: str) -> None:
        late = time.monotonic() - self.started >= self.late_after
        with self.lock:
            self.frames[kind] += 1
            if late:
                self.late_frames[kind] += 1

    # -- negotiation ----------------------------------------------------------------------------
    def _on_negotiation_needed(self, _element: Any) -> None:
        promise = self.Gst.Promise.new_with_change_func(self._on_offer_created, None)
        self.webrtc.emit("create-offer", None, promise)

    def _on_offer_created(self, promise: Any, _data: Any) -> None:
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            self.fail(f"webrtcbin made no offer: {reply.to_string() if reply else 'no reply'}")
            return
        self.webrtc.emit("set-local-description", offer, self.Gst.Promise.new())

    def _on_gathering(self, _element: Any, _spec: Any) -> None:
        state = self.webrtc.get_property("ice-gathering-state")
        if state == self.GstWebRTC.WebRTCICEGatheringState.COMPLETE and self.location is None:
            # POST from the main loop, not the ICE thread that notified us.
            self.GLib.idle_add(self._post_offer)

    def _post_offer(self) -> bool:
        if self.location is not None:
            return False
        offer = self.webrtc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(
            self.url,
            data=offer.encode(),
            method="POST",
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = response.read().decode()
                self.location = urllib.parse.urljoin(self.url, response.headers["Location"])
        except urllib.error.HTTPError as exc:
            self.fail(f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}")
            return False
        except OSError as exc:
            self.fail(f"POST failed: {exc}")
            return False
        emit(event="answered", location=self.location, offer=offer)
        ok, message = self.GstSdp.SDPMessage.new_from_text(answer)
        if ok != self.GstSdp.SDPResult.OK:
            self.fail("the answer does not parse as SDP")
            return False
        description = self.GstWebRTC.WebRTCSessionDescription.new(
            self.GstWebRTC.WebRTCSDPType.ANSWER, message
        )
        self.webrtc.emit("set-remote-description", description, self.Gst.Promise.new())
        return False

    def _on_connection_state(self, _element: Any, _spec: Any) -> None:
        state = self.webrtc.get_property("connection-state").value_nick
        self.states.append(state)
        emit(event="connection-state", state=state, at=round(time.monotonic() - self.started, 2))

    # -- running --------------------------------------------------------------------------------
    def _on_error(self, _bus: Any, message: Any) -> None:
        error, debug = message.parse_error()
        self.fail(f"{error.message} ({debug})")

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self.loop.quit()

    def run(self) -> int:
        self.pipeline.set_state(self.Gst.State.PLAYING)
        self.GLib.timeout_add(int(self.seconds * 1000), self._stop)
        self.loop.run()
        state = self.webrtc.get_property("connection-state").value_nick
        self._delete()
        self.pipeline.set_state(self.Gst.State.NULL)
        with self.lock:
            emit(
                result=self.role,
                error=self.error,
                connection_state=state,
                states=self.states,
                frames=dict(self.frames),
                late_frames=dict(self.late_frames),
                seconds=round(time.monotonic() - self.started, 2),
            )
        return 1 if self.error else 0

    def _stop(self) -> bool:
        self.loop.quit()
        return False

    def _delete(self) -> None:
        if self.location is None:
            return
        request = urllib.request.Request(
            self.location, method="DELETE", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5):
                pass
        except OSError:
            pass  # the session may already be gone; the result says what happened before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("probe", "whip", "whep"))
    parser.add_argument("url", nargs="?")
    parser.add_argument("token", nargs="?")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--late-after", type=float, default=0.0)
    parser.add_argument("--local", default="127.0.0.1", help="the one address to gather on")
    args = parser.parse_args()
    if args.role == "probe":
        return probe()
    if not args.url or not args.token:
        parser.error("whip and whep need URL and TOKEN")
    return Peer(args.role, args.url, args.token, args.seconds, args.late_after, args.local).run()


if __name__ == "__main__":
    sys.exit(main())
