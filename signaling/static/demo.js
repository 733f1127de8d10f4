// Telebridge demo page: publish the camera with WHIP (RFC 9725), view with WHEP.
// No dependencies. The server is ICE-lite and takes no trickled candidates, so every
// offer is sent once ICE gathering has completed (or after a 2 s fallback).
"use strict";

(function () {
  const GATHER_TIMEOUT_MS = 2000;
  const $ = (id) => document.getElementById(id);

  // One publishing and one viewing session at most; both may run at once.
  // session = {kind, pc, token, url (absolute Location), stream}
  const sessions = { publish: null, view: null };

  const LABELS = {
    publish: "Publish / Phát",
    view: "View / Xem",
  };

  function setStatus(message, kind) {
    const el = $("status");
    if (!el) return;
    el.textContent = message;
    el.dataset.kind = kind || "info";
  }

  class HttpError extends Error {
    constructor(status, code, message) {
      super(`HTTP ${status} ${code}${message ? ": " + message : ""}`);
      this.name = "HttpError";
      this.status = status;
      this.code = code;
    }
  }

  // Turn a failed response into an HttpError, using the server's JSON
  // {"error": {"code", "message"}} body when there is one.
  async function errorFrom(resp) {
    let code = resp.statusText || "error";
    let message = "";
    const text = await resp.text().catch(() => "");
    try {
      const body = JSON.parse(text);
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || "";
      }
    } catch (_) {
      message = text.slice(0, 200);
    }
    return new HttpError(resp.status, code, message);
  }

  function randomIdentity(prefix) {
    const n = Math.floor(Math.random() * 0xffffff).toString(16).padStart(6, "0");
    return `${prefix}-${n}`;
  }

  async function fetchToken(room, identity, role) {
    const resp = await fetch("/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ room, identity, role }),
    });
    if (!resp.ok) throw await errorFrom(resp);
    const body = await resp.json();
    if (!body || typeof body.token !== "string") throw new Error("/dev/token returned no token");
    return body.token;
  }

  async function deleteSession(session, keepalive) {
    if (!session.url) return;
    const url = session.url;
    session.url = null;
    try {
      await fetch(url, {
        method: "DELETE",
        headers: { Authorization: `Bearer ${session.token}` },
        keepalive: !!keepalive,
      });
    } catch (_) {
      // The server may be gone already; nothing to clean up on our side.
    }
  }

  // Offer -> wait for gathering -> POST -> answer. Returns the Location header as sent.
  async function negotiate(session, endpoint) {
    const pc = session.pc;
    await pc.setLocalDescription(await pc.createOffer());
    await Telebridge.waitForGathering(pc, GATHER_TIMEOUT_MS);
    if (session.closed) throw new Error("stopped");
    const resp = await fetch(endpoint, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${session.token}`,
        "Content-Type": "application/sdp",
      },
      body: pc.localDescription.sdp,
    });
    if (resp.status !== 201 && !resp.ok) throw await errorFrom(resp);
    const location = resp.headers.get("Location");
    const answer = await resp.text();
    if (location) session.url = new URL(location, new URL(endpoint, window.location.href)).href;
    if (session.closed) {
      await deleteSession(session, false); // stopped while the POST was in flight
      throw new Error("stopped");
    }
    if (!location) throw new Error("the server's answer has no Location header");
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    return location;
  }

  function watch(session) {
    const pc = session.pc;
    pc.addEventListener("connectionstatechange", () => {
      if (session.closed) return;
      const state = pc.connectionState;
      const kind = state === "connected" ? "ok" : state === "failed" ? "error" : "info";
      setStatus(`${LABELS[session.kind]}: ${state}`, kind);
    });
  }

  function release(session) {
    if (session.pc) session.pc.close();
    if (session.stream) session.stream.getTracks().forEach((t) => t.stop());
  }

  async function stopSession(kind) {
    const session = sessions[kind];
    if (!session) return;
    sessions[kind] = null;
    session.closed = true;
    await deleteSession(session, false);
    release(session);
    const video = $(kind === "publish" ? "localVideo" : "remoteVideo");
    if (video && video.srcObject === session.stream) video.srcObject = null;
  }

  async function publish(room, identity, role, options) {
    const opts = options || {};
    room = room || "demo";
    identity = identity || randomIdentity("publisher");
    role = role || "lead";
    await stopSession("publish");
    const session = { kind: "publish", pc: null, token: null, url: null, stream: null, closed: false };
    sessions.publish = session;
    setStatus(`Publishing as ${identity} (${role})… / Đang phát…`);
    try {
      session.token = opts.token || (await fetchToken(room, identity, role));
      session.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 } },
        audio: true,
      });
      const preview = $("localVideo");
      if (preview) preview.srcObject = session.stream;
      session.pc = new RTCPeerConnection({ iceServers: [] });
      watch(session);
      const tracks = [...session.stream.getVideoTracks(), ...session.stream.getAudioTracks()];
      for (const track of tracks) {
        const init = { direction: "sendonly", streams: [session.stream] };
        // The camera as three encodings, lowest first, unless {simulcast: false}.
        if (track.kind === "video" && opts.simulcast !== false) {
          init.sendEncodings = [
            { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150000 },
            { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500000 },
            { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1500000 },
          ];
        }
        session.pc.addTransceiver(track, init);
      }
      const location = await negotiate(session, `/whip/${encodeURIComponent(room)}`);
      setStatus(`Publishing / Đang phát: ${location}`, "ok");
      return location;
    } catch (err) {
      const superseded = session.closed; // stop() or a newer call already took over
      if (sessions.publish === session) await stopSession("publish");
      else release(session);
      if (!superseded) setStatus(`Publish failed / Phát thất bại: ${err.message}`, "error");
      throw err;
    }
  }

  async function view(room, identity, participant, options) {
    const opts = options || {};
    room = room || "demo";
    identity = identity || randomIdentity("viewer");
    const role = opts.role || "observer";
    await stopSession("view");
    const session = { kind: "view", pc: null, token: null, url: null, stream: null, closed: false };
    sessions.view = session;
    const who = participant || "lead / chủ trì";
    setStatus(`Viewing ${who}… / Đang kết nối…`);
    try {
      session.token = opts.token || (await fetchToken(room, identity, role));
      session.stream = new MediaStream();
      const video = $("remoteVideo");
      if (video) video.srcObject = session.stream;
      session.pc = new RTCPeerConnection({ iceServers: [] });
      watch(session);
      session.pc.addTransceiver("video", { direction: "recvonly" });
      session.pc.addTransceiver("audio", { direction: "recvonly" });
      session.pc.addEventListener("track", (event) => {
        session.stream.addTrack(event.track);
        if (video) {
          video.srcObject = session.stream;
          video.play().catch(() => {});
        }
      });
      let endpoint = `/whep/${encodeURIComponent(room)}`;
      if (participant) endpoint += `?participant=${encodeURIComponent(participant)}`;
      const location = await negotiate(session, endpoint);
      setStatus(`Viewing / Đang xem ${who}: ${location}`, "ok");
      return location;
    } catch (err) {
      const superseded = session.closed; // stop() or a newer call already took over
      if (sessions.view === session) await stopSession("view");
      else release(session);
      if (!superseded) setStatus(`View failed / Xem thất bại: ${err.message}`, "error");
      throw err;
    }
  }

  async function stop() {
    const had = sessions.publish || sessions.view;
    await Promise.all([stopSession("publish"), stopSession("view")]);
    if (had) setStatus("Stopped / Đã dừng");
  }

  async function stats() {
    const out = {
      framesDecoded: 0,
      framesReceived: 0,
      framesEncoded: 0,
      framesSent: 0,
      packetsLost: 0,
      frameWidth: 0,
      frameHeight: 0,
      state: "closed",
      publishState: null,
      viewState: null,
      sending: [], // per encoding: rid, framesSent, framesPerSecond, qualityLimitationReason
    };
    const pub = sessions.publish;
    const sub = sessions.view;
    if (sub && sub.pc) {
      out.viewState = sub.pc.connectionState;
      (await sub.pc.getStats()).forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        out.packetsLost += s.packetsLost || 0;
        if (s.kind === "video") {
          out.framesDecoded += s.framesDecoded || 0;
          out.framesReceived += s.framesReceived || 0;
          out.frameWidth = s.frameWidth || out.frameWidth;
          out.frameHeight = s.frameHeight || out.frameHeight;
        }
      });
    }
    if (pub && pub.pc) {
      out.publishState = pub.pc.connectionState;
      (await pub.pc.getStats()).forEach((s) => {
        if (s.type === "outbound-rtp" && s.kind === "video") {
          out.framesEncoded += s.framesEncoded || 0;
          out.framesSent += s.framesSent || 0;
          out.sending.push({
            rid: s.rid || null,
            framesSent: s.framesSent || 0,
            framesPerSecond: s.framesPerSecond || 0,
            qualityLimitationReason: s.qualityLimitationReason || null,
          });
          if (!sub) {
            out.frameWidth = s.frameWidth || out.frameWidth;
            out.frameHeight = s.frameHeight || out.frameHeight;
          }
        }
      });
    }
    out.state = out.viewState || out.publishState || "closed";
    return out;
  }

  function field(id) {
    const el = $(id);
    return el ? el.value.trim() : "";
  }

  function wireUi() {
    const params = new URLSearchParams(window.location.search);
    for (const id of ["room", "identity", "role", "participant"]) {
      const el = $(id);
      if (el && params.has(id)) el.value = params.get(id);
    }
    const ignore = () => {}; // errors are already shown in the status line
    $("publishBtn").addEventListener("click", () => {
      publish(field("room"), field("identity"), field("role")).catch(ignore);
    });
    $("viewBtn").addEventListener("click", () => {
      const role = field("role") || "observer";
      view(field("room"), field("identity"), field("participant"), { role }).catch(ignore);
    });
    $("stopBtn").addEventListener("click", () => {
      stop().catch(ignore);
    });
    $("sound").addEventListener("change", (event) => {
      $("remoteVideo").muted = !event.target.checked;
    });
    $("controls").addEventListener("submit", (event) => event.preventDefault());
  }

  // End server sessions when the tab goes away.
  window.addEventListener("pagehide", () => {
    for (const session of [sessions.publish, sessions.view]) {
      if (session) deleteSession(session, true);
    }
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wireUi);
  else wireUi();

  window.telebridgeDemo = { publish, view, stop, stats };
})();
