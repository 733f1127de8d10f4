// Telebridge browser client for the conferencing protocol v1 (docs/protocol.md).
//
// No dependencies.  Two ways to load it:
//   <script src="/static/telebridge.js"></script>      -> window.Telebridge
//   import { connect } from "/static/telebridge.esm.js"  (an ES module re-exporting this file)
//
//   const client = await Telebridge.connect("/ws", token, { name: "Dr. An", autoSubscribe: true });
//   client.on("remote_track", ({ owner, stream }) => { video.srcObject = stream; });
//   await client.publish({ camera: videoTrack, microphone: audioTrack });
//
// Media: one publish RTCPeerConnection (we offer, sendonly) and one subscribe
// RTCPeerConnection (the server offers, we answer).  The server is ICE-lite and takes no
// trickled candidates, so every local description is sent once ICE gathering completes.
//
// Events (client.on(name, cb) returns an unsubscribe function; "*" receives (name, data)):
// every server event by its name (participant_joined, track_published, offer,
// active_speaker, removed, ...) after the local state has been updated, and local ones:
//   joined (join answer), update (any state change), remote_track {id, owner, kind, track,
//   stream}, remote_track_removed {id, owner, kind, track, stream}, local_track_ended {id,
//   source, track} (unpublished by us, the lead or a demotion: the caller owns the track),
//   reconnecting {code, reason}, resumed (join answer), closed {code, reason},
//   ice_restart {connection} (a connection's ICE went disconnected/failed: restarting it),
//   media_lost (the server's event; the client then republishes its tracks on a new
//   connection and subscribes again to the lost tracks' owners' sources as they come back),
//   error (a TelebridgeError nobody waited for).
// Requests reject with a TelebridgeError: {code, message} (the server's error code, or
// not_connected, timeout, closed).
(function (global) {
  "use strict";

  const PROTOCOL_VERSION = 1;
  const SOURCES = ["camera", "microphone", "screen"];
  // track_published events of one publish arrive within a few ms: one subscribe for them all.
  const AUTO_SUBSCRIBE_DELAY_MS = 30;
  const MAX_FRAME = 64 * 1024;
  // ICE restart: at most one per connection in this interval; retried while still down.
  const ICE_RESTART_INTERVAL_MS = 2000;
  // Republishing after a media worker died: its replacement takes a moment to start.
  const REPUBLISH_ATTEMPTS = 10;
  const REPUBLISH_DELAY_MS = 1000;
  // A full server (server_busy) refuses at once; automatic subscriptions are tried again
  // after the server's Retry-After (5 s), doubling to at most 30 s, with jitter so that a
  // crowd refused together does not come back together.
  const BUSY_RETRY_MS = 5000;
  const BUSY_RETRY_MAX_MS = 30000;
  // Close codes after which we do not try to resume: normal close (leave), policy, frame
  // too large, removed by the lead (4001), replaced by a newer connection of the same
  // identity (4009), a refused or expired token, a full room, an ended room, rate limiting.
  const FINAL_CLOSE_CODES = new Set([1000, 1008, 1009, 4001, 4009, 4401, 4403, 4410, 4429]);
  // The camera goes out as three encodings, lowest first (the server answers each rid
  // and gives every viewer the one its link and screen can take). Screens and audio go
  // out as one. `simulcast: false` in the options sends one encoding.
  const SIMULCAST = [
    { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150000 },
    { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500000 },
    { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1500000 },
  ];

  const DEFAULTS = {
    simulcast: true,
    name: null,
    autoSubscribe: false,
    resume: true,
    requestTimeout: 15000,
    gatherTimeout: 2000,
    resumeDelay: 250,
    WebSocket: null, // a WebSocket constructor (tests)
    iceServers: null, // RTCIceServer[]; null: the join answer's ice_servers (TURN from [turn])
    iceTransportPolicy: null, // "relay" sends everything through TURN
  };

  class TelebridgeError extends Error {
    constructor(code, message, extra) {
      super(message || code);
      this.name = "TelebridgeError";
      this.code = code;
      if (extra) Object.assign(this, extra);
    }

    toJSON() {
      return { code: this.code, message: this.message };
    }
  }

  // ---------------------------------------------------------------------------------------
  // SDP helpers

  // The m-sections of an SDP: [{index, kind, port, mid, direction, owner, trackId}].
  // The server's subscribe offer names every section it sends on with
  // "a=msid:<owner identity> <track id>".
  function parseSections(sdp) {
    const sections = [];
    let sessionDirection = "sendrecv";
    let cur = null;
    for (const raw of String(sdp || "").split(/\r?\n/)) {
      const line = raw.trim();
      if (line.startsWith("m=")) {
        const parts = line.slice(2).split(/\s+/);
        cur = {
          index: sections.length,
          kind: parts[0] || "",
          port: Number.parseInt(parts[1], 10) || 0,
          mid: null,
          direction: sessionDirection,
          owner: null,
          trackId: null,
        };
        sections.push(cur);
      } else if (/^a=(sendrecv|sendonly|recvonly|inactive)$/.test(line)) {
        if (cur) cur.direction = line.slice(2);
        else sessionDirection = line.slice(2);
      } else if (!cur) {
        continue;
      } else if (line.startsWith("a=mid:")) {
        cur.mid = line.slice(6).trim();
      } else if (line.startsWith("a=msid:")) {
        const [stream, track] = line.slice(7).trim().split(/\s+/);
        if (stream && stream !== "-") cur.owner = stream;
        if (track) cur.trackId = track;
        else if (stream && !cur.trackId) cur.trackId = stream;
      } else if (!cur.owner && /^a=ssrc:\d+ msid:/.test(line)) {
        const [stream, track] = line.replace(/^a=ssrc:\d+ msid:/, "").trim().split(/\s+/);
        if (stream && stream !== "-") cur.owner = stream;
        if (track && !cur.trackId) cur.trackId = track;
      }
    }
    for (const s of sections) if (s.mid === null) s.mid = String(s.index);
    return sections;
  }

  // mid -> {trackId, owner, kind} for every section the server sends media on.
  function offeredTracks(sdp) {
    const map = new Map();
    for (const s of parseSections(sdp)) {
      if (s.port === 0 || !s.trackId) continue;
      if (s.direction !== "sendonly" && s.direction !== "sendrecv") continue;
      if (s.kind !== "audio" && s.kind !== "video") continue;
      map.set(s.mid, { trackId: s.trackId, owner: s.owner, kind: s.kind });
    }
    return map;
  }

  function waitForGathering(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", onState);
        pc.removeEventListener("icecandidate", onCandidate);
        resolve();
      };
      const onState = () => {
        if (pc.iceGatheringState === "complete") finish();
      };
      const onCandidate = (event) => {
        if (!event.candidate) finish();
      };
      const timer = setTimeout(finish, timeoutMs);
      pc.addEventListener("icegatheringstatechange", onState);
      pc.addEventListener("icecandidate", onCandidate);
    });
  }

  // "/ws", "ws://h/ws", "http://h" (-> ws://h/ws) or nothing (this page's origin).
  function resolveUrl(url) {
    const base = global.location && /^https?:$/.test(global.location.protocol) ? global.location.href : "http://localhost/";
    const u = new URL(url || "/ws", base);
    if (u.protocol === "http:") u.protocol = "ws:";
    else if (u.protocol === "https:") u.protocol = "wss:";
    if (u.protocol !== "ws:" && u.protocol !== "wss:") {
      throw new TelebridgeError("invalid", `unsupported URL ${url}`);
    }
    if (!url || u.pathname === "/" || u.pathname === "") u.pathname = "/ws";
    u.hash = "";
    return u.href;
  }

  function asArray(ids) {
    if (ids === undefined || ids === null) return [];
    return (Array.isArray(ids) ? ids : [ids]).map(String);
  }

  function copy(obj) {
    return obj ? JSON.parse(JSON.stringify(obj)) : obj;
  }

  // ---------------------------------------------------------------------------------------

  class Client {
    constructor(url, token, options) {
      this.options = Object.assign({}, DEFAULTS, options || {});
      this.url = resolveUrl(url);
      this.token = token;
      this.connectionState = "new"; // new, connecting, joined, reconnecting, closed

      // Room state, from the join answer and events.
      this.me = null;
      this.room = null;
      this.participants = new Map(); // identity -> participant (us included)
      // "compact": a large room we observe; participants holds the lead, the participants
      // and us, observers the count, and listParticipants() pages through everyone.
      this.view = "full";
      this.observers = 0;
      this.tracks = new Map(); // track id -> track
      this.activeSpeaker = null; // identity or null
      this.speaker = null; // the last active_speaker event's data
      this.quality = new Map(); // identity -> connection_quality data
      this.layers = new Map(); // track id -> our layer event of it (received video)
      this.ended = null; // room_ended data
      this.closeInfo = null; // {code, reason} once closed

      // Media.
      this.publishPc = null;
      this.subscribePc = null;
      this.localTracks = new Map(); // our track id -> {id, source, kind, mid, track, transceiver}
      this.localStream = null;
      this.subscribed = new Set(); // track ids asked for
      this.remoteTracks = new Map(); // track id -> {id, owner, kind, mid, track, receiver, stream}
      this.remoteStreams = new Map(); // owner identity -> MediaStream of its received tracks
      this.offerVersion = null;

      this._ws = null;
      this._nextId = 1;
      this._pending = new Map();
      this._handlers = new Map();
      this._resumeKey = null;
      this._leaving = false;
      this._final = false; // removed or room ended: never resume
      this._publishChain = Promise.resolve();
      this._offerQueue = null;
      this._offerRunning = false;
      this._streamHints = new Map(); // mid -> event.streams[0].id from ontrack
      this._autoTimer = null;
      this._autoIds = new Set();
      this._iceRestartAt = { publish: 0, subscribe: 0 };
      this._iceRetry = { publish: null, subscribe: null };
      this._lostSubscriptions = []; // [{owner, source}] to subscribe to again (media_lost)
      this._busyDelay = 0; // the next retry's delay after server_busy (0: not refused)
      this._busyTimer = null;
    }

    // -- events ------------------------------------------------------------------------------
    on(event, callback) {
      if (!this._handlers.has(event)) this._handlers.set(event, new Set());
      this._handlers.get(event).add(callback);
      return () => this.off(event, callback);
    }

    off(event, callback) {
      const set = this._handlers.get(event);
      if (set) set.delete(callback);
    }

    once(event, predicate) {
      return new Promise((resolve) => {
        const off = this.on(event, (data) => {
          if (predicate && !predicate(data)) return;
          off();
          resolve(data);
        });
      });
    }

    _emit(event, data) {
      for (const [name, args] of [[event, [data]], ["*", [event, data]]]) {
        const set = this._handlers.get(name);
        if (!set) continue;
        for (const cb of [...set]) {
          try {
            cb(...args);
          } catch (err) {
            console.error(`Telebridge: a "${event}" handler threw`, err);
          }
        }
      }
    }

    // -- connection --------------------------------------------------------------------------
    async join() {
      if (this.connectionState !== "new") throw new TelebridgeError("invalid", "join() was already called");
      this.connectionState = "connecting";
      try {
        const data = await this._openAndJoin(null);
        this._emit("joined", data);
        this._emit("update", { reason: "joined" });
        return data;
      } catch (err) {
        this._shutdown(this.closeInfo || { code: null, reason: err.code || "join_failed" }, false);
        throw err;
      }
    }

    _openSocket() {
      const WS = this.options.WebSocket || global.WebSocket;
      return new Promise((resolve, reject) => {
        let ws;
        try {
          ws = new WS(this.url);
        } catch (err) {
          reject(new TelebridgeError("connect_failed", `cannot open ${this.url}: ${err.message}`));
          return;
        }
        const cleanup = () => {
          ws.removeEventListener("open", onOpen);
          ws.removeEventListener("close", onClose);
        };
        const onOpen = () => {
          cleanup();
          resolve(ws);
        };
        const onClose = (ev) => {
          cleanup();
          reject(new TelebridgeError("connect_failed", `cannot open ${this.url} (close ${ev.code})`));
        };
        ws.addEventListener("open", onOpen);
        ws.addEventListener("close", onClose);
      });
    }

    async _openAndJoin(resumeKey) {
      const ws = await this._openSocket();
      this._ws = ws;
      ws.addEventListener("message", (ev) => this._onMessage(ws, ev));
      ws.addEventListener("close", (ev) => this._onClose(ws, ev));
      const fields = { token: this.token };
      if (resumeKey) fields.resume = resumeKey;
      if (this.options.name) fields.name = this.options.name;
      const data = await this.request("join", fields);
      this._applyJoin(data);
      return data;
    }

    // Replace the local state with a join answer (events missed while away are not replayed).
    _applyJoin(data) {
      this.me = Object.assign({}, data.participant || {});
      this.room = Object.assign({}, data.room || {});
      this._resumeKey = data.resume || null;
      // TURN servers with fresh credentials (a resume brings new ones).
      if (Array.isArray(data.ice_servers)) this.iceServers = data.ice_servers;
      this.participants = new Map();
      for (const p of data.participants || []) if (p && p.identity) this.participants.set(p.identity, Object.assign({}, p));
      if (this.me.identity) {
        this.participants.set(this.me.identity, Object.assign({}, this.participants.get(this.me.identity), this.me));
        this.me = this.participants.get(this.me.identity);
      }
      this.view = data.view || "full";
      this.observers = data.observers || 0;
      this.tracks = new Map();
      for (const t of data.tracks || []) if (t && t.id) this.tracks.set(t.id, Object.assign({}, t));
      for (const id of [...this.localTracks.keys()]) if (!this.tracks.has(id)) this._dropLocal(id);
      for (const id of [...this.subscribed]) if (!this.tracks.has(id)) this.subscribed.delete(id);
      this.connectionState = "joined";
      if (this.options.autoSubscribe) this._autoSubscribe([...this.tracks.keys()]);
    }

    get identity() {
      return this.me ? this.me.identity : null;
    }

    // RTCConfiguration for both connections: the join answer's ICE servers unless
    // options.iceServers says otherwise; options.iceTransportPolicy "relay" forces TURN.
    _pcConfig() {
      const config = { iceServers: this.options.iceServers || this.iceServers || [] };
      if (this.options.iceTransportPolicy) config.iceTransportPolicy = this.options.iceTransportPolicy;
      return config;
    }

    get role() {
      return this.me ? this.me.role : null;
    }

    _onMessage(ws, ev) {
      if (ws !== this._ws) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (_) {
        console.warn("Telebridge: ignoring a frame that is not JSON");
        return;
      }
      if (!msg || typeof msg !== "object") return;
      if (msg.type === "response" || msg.type === "error") {
        const pending = msg.id !== undefined && msg.id !== null ? this._pending.get(msg.id) : undefined;
        if (msg.type === "response") {
          if (!pending) return;
          this._settle(msg.id);
          pending.resolve(msg.data && typeof msg.data === "object" ? msg.data : {});
        } else {
          const err = new TelebridgeError(String(msg.code || "internal"), String(msg.message || msg.code || "error"));
          if (pending) {
            this._settle(msg.id);
            err.request = pending.type;
            pending.reject(err);
          } else {
            this._emit("error", err);
          }
        }
      } else if (msg.type === "event" && typeof msg.event === "string") {
        const data = msg.data && typeof msg.data === "object" ? msg.data : {};
        try {
          this._applyEvent(msg.event, data);
        } catch (err) {
          console.warn(`Telebridge: malformed ${msg.event} event`, data, err);
        }
        this._emit(msg.event, data);
        if (msg.event !== "offer" && msg.event !== "connection_quality") this._emit("update", { reason: msg.event });
      }
    }

    _settle(id) {
      const pending = this._pending.get(id);
      if (pending) clearTimeout(pending.timer);
      this._pending.delete(id);
    }

    _onClose(ws, ev) {
      if (ws !== this._ws) return;
      this._ws = null;
      const info = { code: ev.code, reason: ev.reason || "" };
      this.closeInfo = info;
      for (const [id, pending] of [...this._pending]) {
        this._settle(id);
        pending.reject(new TelebridgeError("closed", `connection closed (${ev.code})`, { closeCode: ev.code }));
      }
      if (this.connectionState === "closed" || this.connectionState === "connecting") return;
      const resumable =
        this.options.resume &&
        !this._leaving &&
        !this._final &&
        this._resumeKey &&
        this.connectionState === "joined" &&
        !FINAL_CLOSE_CODES.has(ev.code);
      if (resumable) this._resume(info);
      else this._shutdown(info, true);
    }

    // One attempt per drop: the participant is still in the room with its media for the
    // grace period, so a new WebSocket joining with the resume key takes it back.
    async _resume(info) {
      this.connectionState = "reconnecting";
      this._emit("reconnecting", info);
      this._emit("update", { reason: "reconnecting" });
      await new Promise((r) => setTimeout(r, this.options.resumeDelay));
      if (this.connectionState !== "reconnecting") return;
      try {
        const data = await this._openAndJoin(this._resumeKey);
        this._emit("resumed", data);
        this._emit("update", { reason: "resumed" });
      } catch (err) {
        if (this._ws) {
          try {
            this._ws.close(1000);
          } catch (_) {}
          this._ws = null;
        }
        this._shutdown({ code: info.code, reason: `resume failed: ${err.code || err.message}` }, true);
      }
    }

    _shutdown(info, emit) {
      if (this.connectionState === "closed") return;
      this.connectionState = "closed";
      this.closeInfo = info;
      clearTimeout(this._autoTimer);
      clearTimeout(this._busyTimer);
      if (this._ws) {
        try {
          this._ws.close(1000);
        } catch (_) {}
        this._ws = null;
      }
      for (const pc of [this.publishPc, this.subscribePc]) if (pc) pc.close();
      for (const [id, remote] of [...this.remoteTracks]) this._removeRemote(id, remote);
      this.remoteStreams.clear();
      this.localTracks.clear();
      if (emit) {
        this._emit("closed", info);
        this._emit("update", { reason: "closed" });
      }
    }

    // -- requests ----------------------------------------------------------------------------
    request(type, fields) {
      const ws = this._ws;
      const OPEN = 1;
      if (!ws || ws.readyState !== OPEN) {
        return Promise.reject(new TelebridgeError("not_connected", `cannot send ${type}: not connected`));
      }
      const id = this._nextId++;
      const msg = Object.assign({}, fields || {}, { v: PROTOCOL_VERSION, type, id });
      const text = JSON.stringify(msg);
      if (text.length > MAX_FRAME) {
        return Promise.reject(new TelebridgeError("too_large", `${type} is ${text.length} bytes, over 64 KiB`));
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this._pending.delete(id);
          reject(new TelebridgeError("timeout", `no answer to ${type} in ${this.options.requestTimeout} ms`));
        }, this.options.requestTimeout);
        this._pending.set(id, { resolve, reject, timer, type });
        try {
          ws.send(text);
        } catch (err) {
          this._settle(id);
          reject(new TelebridgeError("not_connected", err.message));
        }
      });
    }

    ping() {
      return this.request("ping", {});
    }

    async raiseHand(raised) {
      const value = raised === undefined ? true : !!raised;
      const data = await this.request("raise_hand", { raised: value });
      this._setHand(this.identity, value);
      this._emit("update", { reason: "raise_hand" });
      return data;
    }

    setRole(identity, role) {
      return this.request("set_role", { identity, role });
    }

    // One page of everyone in the room: {participants, next (the cursor of the next page,
    // null on the last), total}. The compact view's way to see the observers too.
    listParticipants(cursor, limit) {
      const fields = {};
      if (cursor) fields.cursor = cursor;
      if (limit) fields.limit = limit;
      return this.request("list_participants", fields);
    }

    // Everyone, a page at a time.
    async allParticipants(limit) {
      const people = [];
      let cursor = null;
      do {
        const page = await this.listParticipants(cursor, limit || 500);
        people.push(...page.participants);
        cursor = page.next;
      } while (cursor);
      return people;
    }

    remove(identity) {
      return this.request("remove", { identity });
    }

    endRoom() {
      return this.request("end_room", {});
    }

    preferences(fields) {
      return this.request("preferences", Object.assign({}, fields || {}));
    }

    async leave() {
      if (this.connectionState === "closed") return;
      this._leaving = true;
      try {
        if (this._ws) await this.request("leave", {});
      } catch (_) {
        // Leaving anyway.
      }
      this._shutdown({ code: 1000, reason: "left" }, true);
    }

    // Close the WebSocket and the media without a `leave`: the server keeps us for the grace
    // period.  close(true) drops the socket only, as a network failure would (1006), and the
    // client resumes.
    close(dropOnly) {
      if (dropOnly) {
        const ws = this._ws;
        if (ws) {
          ws.close(4000, "drop");
          this._onClose(ws, { code: 1006, reason: "dropped" });
        }
        return;
      }
      this._leaving = true;
      this._shutdown({ code: 1000, reason: "closed" }, true);
    }

    // -- events into state -------------------------------------------------------------------
    _setHand(identity, raised) {
      const p = this.participants.get(identity);
      if (p) p.hand_raised = raised;
    }

    _applyEvent(event, d) {
      switch (event) {
        case "participant_joined": {
          const p = Object.assign({}, d.participant);
          this.participants.set(p.identity, p);
          if (this.me && p.identity === this.me.identity) this.me = p;
          break;
        }
        case "participant_left": {
          this.participants.delete(d.identity);
          this.quality.delete(d.identity);
          if (this.activeSpeaker === d.identity) this.activeSpeaker = null;
          for (const [id, t] of [...this.tracks]) if (t.owner === d.identity) this._trackGone(id);
          if (d.identity === this.identity) this._final = true;
          break;
        }
        case "removed":
          this._final = true;
          break;
        case "role_changed": {
          const p = this.participants.get(d.identity);
          if (p) p.role = d.role;
          else if (d.participant) this.participants.set(d.identity, Object.assign({}, d.participant)); // new on a compact stage
          if (this.me && d.identity === this.me.identity) {
            this.me.role = d.role;
            if (d.role === "observer") this.me.hand_raised = false;
          } else if (this.view === "compact" && d.role === "observer") {
            this.participants.delete(d.identity);
          }
          break;
        }
        case "observer_count":
          this.observers = d.count;
          break;
        case "view":
          // The room went compact (or our role moved us): in the compact view no other
          // observer's leave will come, so they are forgotten now.
          this.view = d.view;
          this.observers = d.observers;
          if (d.view === "compact") {
            for (const [id, p] of [...this.participants]) if (p.role === "observer" && id !== this.identity) this.participants.delete(id);
          }
          break;
        case "track_published": {
          this.tracks.set(d.track.id, Object.assign({}, d.track));
          const lost = this._lostSubscriptions.findIndex((l) => l.owner === d.track.owner && l.source === d.track.source);
          if (lost >= 0) this._lostSubscriptions.splice(lost, 1);
          if ((this.options.autoSubscribe || lost >= 0) && d.track.owner !== this.identity) this._autoSubscribe([d.track.id]);
          break;
        }
        case "media_lost":
          this._mediaLost(d);
          break;
        case "track_unpublished":
          this._trackGone(d.track);
          break;
        case "track_muted": {
          const t = this.tracks.get(d.track);
          if (t) t.muted = !!d.muted;
          const local = this.localTracks.get(d.track);
          if (local && local.track) local.track.enabled = !d.muted;
          break;
        }
        case "hand_raised":
          this._setHand(d.identity, !!d.raised);
          break;
        case "active_speaker":
          this.activeSpeaker = d.identity || null;
          this.speaker = Object.assign({}, d);
          break;
        case "connection_quality":
          this.quality.set(d.identity, Object.assign({}, d));
          break;
        case "layers":
          // The server says which of our simulcast encodings anyone watches: the rest
          // are switched off in the encoder, saving our uplink, until someone needs them.
          this._setActiveLayers(d.track, d.active || []);
          break;
        case "layer":
          // Which encoding of a track we receive, and what the server thinks our link
          // carries (bits/s; null before it knows).
          this.layers.set(d.track, Object.assign({}, d));
          break;
        case "video_paused":
          this.layers.set(d.track, Object.assign({}, this.layers.get(d.track) || {}, { paused: !!d.paused, estimate: d.estimate }));
          break;
        case "room_ended":
          this.ended = Object.assign({}, d);
          this._final = true;
          break;
        case "offer":
          this._queueOffer(d);
          break;
        default:
          break;
      }
    }

    async _setActiveLayers(trackId, active) {
      const local = this.localTracks.get(trackId);
      if (!local || !local.transceiver) return;
      const sender = local.transceiver.sender;
      const params = sender.getParameters();
      if (!params.encodings || params.encodings.length < 2) return;
      let changed = false;
      for (const encoding of params.encodings) {
        const on = active.includes(encoding.rid);
        if (encoding.active !== on) {
          encoding.active = on;
          changed = true;
        }
      }
      if (!changed) return;
      try {
        await sender.setParameters(params);
        this._emit("update", { reason: "layers" });
      } catch (err) {
        this._emit("error", new TelebridgeError("layers", `could not change encodings: ${err.message}`));
      }
    }

    _trackGone(id) {
      this.tracks.delete(id);
      this.subscribed.delete(id);
      this._autoIds.delete(id);
      if (this.localTracks.has(id)) this._dropLocal(id);
    }

    // -- publishing --------------------------------------------------------------------------
    _serial(fn) {
      const result = this._publishChain.then(fn);
      this._publishChain = result.catch(() => {});
      return result;
    }

    // publish({camera, microphone, screen}): MediaStreamTracks to add to the publish
    // connection.  Resolves to the server's track objects for the new tracks.
    publish(sources) {
      return this._serial(() => this._publish(sources || {}));
    }

    async _publish(sources) {
      for (const key of Object.keys(sources)) {
        if (!SOURCES.includes(key)) throw new TelebridgeError("invalid", `unknown source ${key}`);
      }
      const items = SOURCES.filter((s) => sources[s]).map((s) => ({ source: s, track: sources[s] }));
      if (!items.length) throw new TelebridgeError("invalid", "nothing to publish");
      if (this.connectionState !== "joined") throw new TelebridgeError("not_connected", "not joined");
      const first = !this.publishPc;
      if (first) {
        this.publishPc = new RTCPeerConnection(this._pcConfig());
        this.localStream = new MediaStream();
        this.publishPc.addEventListener("connectionstatechange", () => this._emit("update", { reason: "publish_state" }));
        this._watchIce("publish", this.publishPc);
      }
      const pc = this.publishPc;
      const added = items.map(({ source, track }) => {
        const init = { direction: "sendonly", streams: [this.localStream] };
        if (source === "camera" && track.kind === "video" && this.options.simulcast) {
          init.sendEncodings = SIMULCAST.map((e) => Object.assign({}, e));
        }
        const transceiver = pc.addTransceiver(track, init);
        return { source, track, transceiver };
      });
      try {
        await pc.setLocalDescription(await pc.createOffer());
        await waitForGathering(pc, this.options.gatherTimeout);
        const tracks = added.map((a) => ({ mid: a.transceiver.mid, source: a.source }));
        const data = await this.request("publish", { sdp: pc.localDescription.sdp, tracks });
        await pc.setRemoteDescription({ type: "answer", sdp: data.sdp });
        return this._rememberPublished(added, data.tracks || []);
      } catch (err) {
        if (pc.signalingState === "have-local-offer") {
          await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
        }
        for (const a of added) {
          try {
            a.transceiver.stop();
          } catch (_) {}
        }
        if (first && this.publishPc === pc) {
          pc.close();
          this.publishPc = null;
        }
        throw err;
      }
    }

    // Pair the server's tracks with our transceivers: by mid if the server gives it, else
    // by source (one of each per publish call), else by order.
    _rememberPublished(added, tracks) {
      const out = [];
      const unused = new Set(added);
      // The answer may list all our tracks, not only the new ones.
      const fresh = tracks.filter((t) => t && t.id && !this.localTracks.has(t.id));
      fresh.forEach((t, i) => {
        let a = added.find((x) => unused.has(x) && t.mid !== undefined && x.transceiver.mid === String(t.mid));
        if (!a) a = added.find((x) => unused.has(x) && x.source === t.source);
        if (!a && fresh.length === added.length && unused.has(added[i])) a = added[i];
        if (!a || !t.id) {
          console.warn("Telebridge: published track matches no local sender", t);
          return;
        }
        unused.delete(a);
        const track = Object.assign({ owner: this.identity, source: a.source, kind: a.track.kind, muted: false }, t);
        this.tracks.set(track.id, track);
        this.localTracks.set(track.id, {
          id: track.id,
          source: a.source,
          kind: a.track.kind,
          mid: a.transceiver.mid,
          track: a.track,
          transceiver: a.transceiver,
        });
        out.push(copy(track));
      });
      this._emit("update", { reason: "published" });
      return out;
    }

    // Stop sending a track.  Its m-section stays, inactive, and its mid is never reused:
    // the server closes the producer of a section that no longer sends (or that it already
    // closed), and a sendonly one would bring it back.  Not stop(): a rejected (port 0)
    // section that is the BUNDLE tag makes Chrome tear down the DTLS transport of the
    // whole publish connection.
    _dropLocal(id) {
      const local = this.localTracks.get(id);
      if (!local) return;
      this.localTracks.delete(id);
      try {
        local.transceiver.sender.replaceTrack(null).catch(() => {});
        if (!local.transceiver.stopped) local.transceiver.direction = "inactive";
      } catch (_) {}
      this._emit("local_track_ended", { id, source: local.source, track: local.track });
    }

    async unpublish(trackId) {
      const data = await this.request("unpublish", { track: trackId });
      this._trackGone(trackId);
      this._emit("update", { reason: "unpublish" });
      return data;
    }

    async mute(trackId, muted) {
      const value = muted === undefined ? true : !!muted;
      const data = await this.request("mute", { track: trackId, muted: value });
      const t = this.tracks.get(trackId);
      if (t) t.muted = value;
      const local = this.localTracks.get(trackId);
      if (local && local.track) local.track.enabled = !value;
      this._emit("update", { reason: "mute" });
      return data;
    }

    // -- subscribing -------------------------------------------------------------------------
    async subscribe(ids) {
      const list = asArray(ids);
      if (!list.length) return {};
      const data = await this.request("subscribe", { tracks: list });
      for (const id of list) this.subscribed.add(id);
      return data;
    }

    async unsubscribe(ids) {
      const list = asArray(ids);
      if (!list.length) return {};
      const data = await this.request("unsubscribe", { tracks: list });
      for (const id of list) this.subscribed.delete(id);
      return data;
    }

    // Batch the tracks of one burst of events into one subscribe request.
    _autoSubscribe(ids) {
      for (const id of ids) {
        const t = this.tracks.get(id);
        if (!t || t.owner === this.identity || this.subscribed.has(id)) continue;
        this._autoIds.add(id);
      }
      if (!this._autoIds.size || this._autoTimer) return;
      this._autoTimer = setTimeout(() => {
        this._autoTimer = null;
        const list = [...this._autoIds].filter((id) => this.tracks.has(id) && !this.subscribed.has(id));
        this._autoIds.clear();
        if (!list.length || this.connectionState !== "joined") return;
        this.subscribe(list).then(
          () => {
            if (this._busyDelay) this._emit("admitted", { tracks: list });
            this._busyDelay = 0;
          },
          (err) => {
            if (err.code === "not_found") return; // gone meanwhile
            if (err.code === "server_busy") this._retryWhenBusy(list);
            else this._emit("error", err);
          },
        );
      }, AUTO_SUBSCRIBE_DELAY_MS);
    }

    // The server is full: tell the page, and try these tracks again later.
    _retryWhenBusy(ids) {
      this._busyDelay = Math.min(this._busyDelay ? this._busyDelay * 2 : BUSY_RETRY_MS, BUSY_RETRY_MAX_MS);
      const delay = Math.round(this._busyDelay * (0.8 + 0.4 * Math.random()));
      this._emit("busy", { tracks: ids, retryInMs: delay });
      clearTimeout(this._busyTimer);
      this._busyTimer = setTimeout(() => {
        this._busyTimer = null;
        if (this.connectionState === "joined") this._autoSubscribe(ids);
      }, delay);
    }

    _ensureSubscribePc() {
      if (this.subscribePc) return this.subscribePc;
      const pc = new RTCPeerConnection(this._pcConfig());
      pc.addEventListener("track", (event) => {
        const mid = event.transceiver && event.transceiver.mid;
        if (mid !== null && mid !== undefined && event.streams && event.streams[0]) {
          this._streamHints.set(mid, event.streams[0].id);
        }
      });
      pc.addEventListener("connectionstatechange", () => this._emit("update", { reason: "subscribe_state" }));
      this._watchIce("subscribe", pc);
      this.subscribePc = pc;
      return pc;
    }

    // -- ICE restart and lost media --------------------------------------------------------
    // A connection whose ICE goes disconnected or failed (the site's network changed) is
    // restarted on the same session: no rejoin, no new DTLS handshake.
    _watchIce(which, pc) {
      pc.addEventListener("iceconnectionstatechange", () => {
        const state = pc.iceConnectionState;
        if (state === "disconnected" || state === "failed") this._scheduleIceRestart(which, pc, 0);
        else if (state === "connected" || state === "completed") {
          clearTimeout(this._iceRetry[which]);
          this._iceRetry[which] = null;
        }
      });
    }

    _scheduleIceRestart(which, pc, delay) {
      if (this._iceRetry[which]) return;
      const wait = Math.max(delay, this._iceRestartAt[which] + ICE_RESTART_INTERVAL_MS - Date.now());
      this._iceRetry[which] = setTimeout(() => {
        this._iceRetry[which] = null;
        const current = which === "publish" ? this.publishPc : this.subscribePc;
        const down = ["disconnected", "failed"].includes(pc.iceConnectionState);
        if (current !== pc || !down || this.connectionState !== "joined") return;
        this.restartIce(which).catch((err) => console.warn("Telebridge: ICE restart failed", which, err));
        this._scheduleIceRestart(which, pc, ICE_RESTART_INTERVAL_MS); // again if still down
      }, Math.max(wait, 0));
    }

    // restartIce("publish" | "subscribe" | undefined for both): new ICE credentials on the
    // existing connections.  The publish connection sends a new offer (publish with no new
    // tracks); the subscribe connection asks the server for one (restart_ice).
    async restartIce(which) {
      const out = [];
      if ((!which || which === "publish") && this.publishPc) {
        this._iceRestartAt.publish = Date.now();
        this._emit("ice_restart", { connection: "publish" });
        out.push(
          this._serial(async () => {
            const pc = this.publishPc;
            if (!pc) return;
            pc.restartIce();
            await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
            await waitForGathering(pc, this.options.gatherTimeout);
            const data = await this.request("publish", { sdp: pc.localDescription.sdp, tracks: [] });
            if (this.publishPc === pc) await pc.setRemoteDescription({ type: "answer", sdp: data.sdp });
          }),
        );
      }
      if ((!which || which === "subscribe") && this.subscribePc) {
        this._iceRestartAt.subscribe = Date.now();
        this._emit("ice_restart", { connection: "subscribe" });
        out.push(this.request("restart_ice", {}));
      }
      await Promise.all(out);
    }

    // The server's media worker died with our connection(s): open new ones.
    _mediaLost(d) {
      if (d.connection === "publish") {
        const sources = {};
        for (const [id, local] of [...this.localTracks]) {
          if (local.track && local.track.readyState !== "ended") sources[local.source] = local.track;
          this.localTracks.delete(id); // not ended: we publish it again
        }
        const pc = this.publishPc;
        this.publishPc = null;
        if (pc) pc.close();
        if (Object.keys(sources).length) this._republish(sources, REPUBLISH_ATTEMPTS);
      } else if (d.connection === "subscribe") {
        const pc = this.subscribePc;
        this.subscribePc = null;
        if (pc) pc.close();
        for (const [id, remote] of [...this.remoteTracks]) this._removeRemote(id, remote);
        for (const t of d.tracks || []) {
          this.subscribed.delete(t.id);
          this._lostSubscriptions.push({ owner: t.owner, source: t.source });
        }
        this.offerVersion = null;
      }
    }

    _republish(sources, attempts) {
      this.publish(sources).then(
        (tracks) => this._emit("republished", { tracks }),
        (err) => {
          if (attempts > 1 && this.connectionState === "joined" && ["unavailable", "internal", "timeout", "server_busy"].includes(err.code)) {
            setTimeout(() => this._republish(sources, attempts - 1), REPUBLISH_DELAY_MS);
          } else this._emit("error", err);
        },
      );
    }

    // Offers are answered one at a time; when several wait, only the newest is answered
    // (each offer describes the whole subscription).
    _queueOffer(data) {
      if (typeof data.sdp !== "string") return;
      this._offerQueue = data;
      if (!this._offerRunning) this._runOffers();
    }

    async _runOffers() {
      this._offerRunning = true;
      try {
        while (this._offerQueue) {
          const offer = this._offerQueue;
          this._offerQueue = null;
          if (this.connectionState === "closed") break;
          try {
            await this._answerOffer(offer);
          } catch (err) {
            console.warn("Telebridge: could not answer offer", offer.version, err);
            this._emit("error", new TelebridgeError(err.code || "offer_failed", err.message, { version: offer.version }));
          }
        }
      } finally {
        this._offerRunning = false;
      }
    }

    async _answerOffer({ sdp, version }) {
      const pc = this._ensureSubscribePc();
      const offered = offeredTracks(sdp);
      await pc.setRemoteDescription({ type: "offer", sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await waitForGathering(pc, this.options.gatherTimeout);
      this._mapRemoteTracks(offered);
      // A newer offer came meanwhile: the server takes only the answer to its latest offer.
      if (this._offerQueue) return;
      await this.request("answer", { sdp: pc.localDescription.sdp, version });
      this.offerVersion = version;
      this._emit("update", { reason: "renegotiated" });
    }

    // Key the received tracks by protocol track id and group them by owner.
    _mapRemoteTracks(offered) {
      const pc = this.subscribePc;
      const wanted = new Map();
      for (const tr of pc.getTransceivers()) {
        if (tr.mid === null || !offered.has(tr.mid) || !tr.receiver || !tr.receiver.track) continue;
        const o = offered.get(tr.mid);
        const known = this.tracks.get(o.trackId);
        const owner = o.owner || this._streamHints.get(tr.mid) || (known && known.owner) || "unknown";
        wanted.set(o.trackId, { id: o.trackId, owner, kind: o.kind, mid: tr.mid, track: tr.receiver.track, receiver: tr.receiver });
      }
      for (const [id, remote] of [...this.remoteTracks]) {
        const w = wanted.get(id);
        if (!w || w.track !== remote.track || w.owner !== remote.owner) this._removeRemote(id, remote);
      }
      for (const [id, w] of wanted) {
        if (this.remoteTracks.has(id)) continue;
        // A receiver's track may move to another id when the server reuses an m-section.
        for (const [otherId, other] of [...this.remoteTracks]) if (other.track === w.track) this._removeRemote(otherId, other);
        let stream = this.remoteStreams.get(w.owner);
        if (!stream) {
          stream = new MediaStream();
          this.remoteStreams.set(w.owner, stream);
        }
        stream.addTrack(w.track);
        w.stream = stream;
        this.remoteTracks.set(id, w);
        this._emit("remote_track", w);
      }
    }

    _removeRemote(id, remote) {
      this.remoteTracks.delete(id);
      const stream = this.remoteStreams.get(remote.owner);
      if (stream) {
        stream.removeTrack(remote.track);
        if (!stream.getTracks().length) this.remoteStreams.delete(remote.owner);
      }
      this._emit("remote_track_removed", remote);
    }

    // inbound-rtp stats of one received track (framesDecoded, packetsLost, ...), or null.
    async remoteTrackStats(trackId) {
      const remote = this.remoteTracks.get(trackId);
      if (!remote) return null;
      let out = null;
      (await remote.receiver.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp") out = s;
      });
      return out;
    }

    // A plain-object copy of the state, for logs and tests.
    snapshot() {
      return {
        connectionState: this.connectionState,
        me: copy(this.me),
        room: copy(this.room),
        participants: [...this.participants.values()].map(copy),
        view: this.view,
        observers: this.observers,
        tracks: [...this.tracks.values()].map(copy),
        activeSpeaker: this.activeSpeaker,
        subscribed: [...this.subscribed],
        remoteTracks: [...this.remoteTracks.values()].map((r) => ({ id: r.id, owner: r.owner, kind: r.kind, mid: r.mid })),
        localTracks: [...this.localTracks.values()].map((l) => ({ id: l.id, source: l.source, kind: l.kind, mid: l.mid })),
        offerVersion: this.offerVersion,
        publishState: this.publishPc ? this.publishPc.connectionState : null,
        subscribeState: this.subscribePc ? this.subscribePc.connectionState : null,
        ended: copy(this.ended),
        closeInfo: copy(this.closeInfo),
      };
    }
  }

  // Open the WebSocket and join; resolves to the joined Client, rejects with a
  // TelebridgeError ({code, message}) when the server refuses.
  async function connect(url, token, options) {
    const client = new Client(url, token, options);
    await client.join();
    return client;
  }

  const Telebridge = {
    PROTOCOL_VERSION,
    SOURCES,
    SIMULCAST,
    Client,
    TelebridgeError,
    connect,
    parseSections,
    offeredTracks,
    waitForGathering,
    resolveUrl,
  };
  global.Telebridge = Telebridge;
})(typeof globalThis !== "undefined" ? globalThis : this);
