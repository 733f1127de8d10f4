// Telebridge consultation demo page: join a room over the WebSocket protocol
// (docs/protocol.md) with /static/telebridge.js, see everyone's video, moderate as the lead.
//
// Test API: window.telebridgeApp (join, publish, state, raiseHand, promote, demote, mute,
// muteOwn, unpublish, remove, endRoom, leave, client).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const T = window.Telebridge;

  const ROLE_LABELS = {
    lead: ["Chủ trì", "Lead"],
    participant: ["Tham gia", "Participant"],
    observer: ["Quan sát", "Observer"],
  };
  const SOURCE_LABELS = {
    camera: ["camera", "camera"],
    microphone: ["micro", "mic"],
    screen: ["màn hình", "screen"],
  };
  const REASONS = {
    left: ["đã rời phòng", "left"],
    removed: ["bị mời ra", "was removed"],
    disconnected: ["mất kết nối", "disconnected"],
    room_ended: ["phiên đã kết thúc", "the room ended"],
  };
  const ROLE_ORDER = { lead: 0, participant: 1, observer: 2 };

  let client = null;
  let localStream = null; // our camera + microphone (getUserMedia)
  let publishing = false;
  let recording = null; // the room's live recording ({id, state, ...}) or null
  let speakerEvents = 0; // active_speaker events seen (tests)
  const tiles = new Map(); // identity -> {el, video, key}
  let everyone = null; // the compact view's "show all": a paged snapshot of the room

  // -- bilingual text -------------------------------------------------------------------------
  function bi(vi, en) {
    const frag = document.createDocumentFragment();
    const a = document.createElement("span");
    a.className = "vi";
    a.textContent = vi;
    const sep = document.createElement("span");
    sep.className = "sep";
    sep.textContent = " / ";
    const b = document.createElement("span");
    b.className = "en";
    b.textContent = en;
    frag.append(a, sep, b);
    return frag;
  }

  function setBi(el, vi, en) {
    el.replaceChildren(bi(vi, en));
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function badge(kind, vi, en) {
    return el("span", { class: `badge ${kind}` }, bi(vi, en));
  }

  function roleBadge(role) {
    const [vi, en] = ROLE_LABELS[role] || [role, role];
    return badge(role, vi, en);
  }

  function setStatus(vi, en, kind) {
    const s = $("status");
    setBi(s, vi, en);
    s.dataset.kind = kind || "info";
  }

  function log(vi, en) {
    const list = $("log");
    const time = new Date().toLocaleTimeString();
    list.prepend(el("li", {}, `${time} `, bi(vi, en)));
    while (list.children.length > 60) list.lastChild.remove();
  }

  function errorText(err) {
    if (!err) return "error";
    return err.code ? `${err.code}: ${err.message}` : String(err.message || err);
  }

  function reportError(viWhat, enWhat) {
    return (err) => {
      setStatus(`${viWhat} thất bại — ${errorText(err)}`, `${enWhat} failed — ${errorText(err)}`, "error");
      throw err;
    };
  }

  function nameOf(identity) {
    const p = client && client.participants.get(identity);
    return (p && p.name) || identity;
  }

  // -- joining ----------------------------------------------------------------------------------
  async function fetchToken(room, identity, role) {
    const resp = await fetch("/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ room, identity, role }),
    });
    if (!resp.ok) {
      let code = `http_${resp.status}`;
      let message = resp.statusText;
      try {
        const body = await resp.json();
        if (body && body.error) ({ code, message } = body.error);
      } catch (_) {}
      throw new T.TelebridgeError(code, `POST /dev/token: ${resp.status} ${message}`);
    }
    return (await resp.json()).token;
  }

  function randomIdentity(role) {
    return `${role}-${Math.floor(Math.random() * 0xffffff).toString(16).padStart(6, "0")}`;
  }

  async function join(room, identity, role, options) {
    const opts = options || {};
    room = room || "consult";
    role = role || "participant";
    identity = identity || randomIdentity(role);
    if (client && client.connectionState !== "closed") await leave();
    setStatus(`Đang tham gia ${room} với vai trò ${ROLE_LABELS[role][0]}…`, `Joining ${room} as ${role}…`);
    $("joinBtn").disabled = true;
    try {
      const token = opts.token || (await fetchToken(room, identity, role));
      const c = new T.Client(opts.url || "/ws", token, {
        name: opts.name || undefined,
        autoSubscribe: opts.subscribe !== false,
      });
      client = c;
      everyone = null;
      wire(c);
      await c.join();
      $("joinForm").hidden = true;
      $("call").hidden = false;
      setStatus(`Đã vào phòng ${room}`, `Joined room ${room}`, "ok");
      log(`Vào phòng ${room} (${c.participants.size} người)`, `Joined ${room} (${c.participants.size} present)`);
      render();
      return { identity: c.identity, role: c.role, room: c.room && c.room.name };
    } catch (err) {
      client = null;
      reportError("Tham gia", "Join")(err);
    } finally {
      $("joinBtn").disabled = false;
    }
  }

  function wire(c) {
    c.on("update", () => {
      if (client === c) scheduleRender();
    });
    c.on("remote_track", () => scheduleRender());
    // Everyone sees that the consultation is recorded: the join answer says so, then events.
    const recordingFrom = (data) => {
      recording = data && data.recording ? data.recording : null;
      scheduleRender();
    };
    c.on("joined", recordingFrom);
    c.on("resumed", recordingFrom);
    c.on("recording_started", ({ recording: r }) => {
      recording = r;
      log("Bắt đầu ghi hình", "Recording started");
    });
    c.on("recording_stopped", () => {
      recording = null;
      log("Đã dừng ghi hình", "Recording stopped");
    });
    c.on("recording_failed", ({ error }) => {
      recording = null;
      log(`Ghi hình bị lỗi: ${error}`, `Recording failed: ${error}`);
    });
    c.on("remote_track_removed", () => scheduleRender());
    c.on("participant_joined", ({ participant }) => {
      const [vi, en] = ROLE_LABELS[participant.role] || [participant.role, participant.role];
      log(`${participant.name || participant.identity} vào phòng (${vi})`, `${participant.name || participant.identity} joined (${en})`);
    });
    c.on("participant_left", ({ identity, reason }) => {
      const [vi, en] = REASONS[reason] || [reason, reason];
      log(`${identity} ${vi}`, `${identity} ${en}`);
    });
    c.on("role_changed", ({ identity, role, by }) => {
      const [vi, en] = ROLE_LABELS[role] || [role, role];
      log(`${identity} → ${vi}${by ? ` (bởi ${by})` : ""}`, `${identity} → ${en}${by ? ` (by ${by})` : ""}`);
      if (identity === c.identity) {
        if (role === "participant") setStatus("Bạn được mời phát biểu: hãy bật camera + micro", "You were given the floor: publish your camera + mic", "ok");
        else if (role === "observer") {
          stopLocalMedia();
          setStatus("Bạn đã trở lại vai trò quan sát", "You are an observer again", "info");
        }
      }
    });
    c.on("view", ({ view, observers }) => {
      everyone = null;
      if (view === "compact") log(`Phòng đông (${observers} quan sát viên): chỉ hiện người phát biểu và số quan sát viên`, `A large room (${observers} observers): showing who is on stage and the observer count`);
    });
    c.on("hand_raised", ({ identity, raised }) => {
      log(`${nameOf(identity)} ${raised ? "giơ tay" : "hạ tay"}`, `${nameOf(identity)} ${raised ? "raised a hand" : "lowered the hand"}`);
    });
    c.on("track_muted", ({ track, muted, by }) => {
      const t = c.tracks.get(track);
      const owner = t ? t.owner : "?";
      const [svi, sen] = SOURCE_LABELS[t && t.source] || ["", ""];
      log(`${owner}: ${svi} ${muted ? "tắt" : "bật"}${by && by !== owner ? ` (bởi ${by})` : ""}`, `${owner}: ${sen} ${muted ? "muted" : "unmuted"}${by && by !== owner ? ` (by ${by})` : ""}`);
    });
    c.on("local_track_ended", ({ track }) => {
      if (track && localStream && localStream.getTracks().includes(track)) {
        track.stop();
        localStream.removeTrack(track);
        if (!localStream.getTracks().length) localStream = null;
      }
    });
    c.on("removed", ({ by }) => {
      setStatus(`Bạn đã bị mời ra khỏi phòng${by ? ` bởi ${by}` : ""}`, `You were removed from the room${by ? ` by ${by}` : ""}`, "error");
    });
    c.on("room_ended", ({ by }) => {
      setStatus(`Phiên đã kết thúc${by ? ` (${by})` : ""}`, `The room has ended${by ? ` (${by})` : ""}`, "info");
    });
    c.on("reconnecting", () => setStatus("Mất kết nối, đang kết nối lại…", "Connection lost, resuming…", "info"));
    c.on("resumed", () => setStatus("Đã kết nối lại", "Reconnected", "ok"));
    // telebridge.js restarts ICE and republishes by itself; the page only says so.
    c.on("ice_restart", ({ connection }) => log(`Khởi động lại ICE (${connection})`, `Restarting ICE (${connection})`));
    c.on("media_lost", () => setStatus("Mất media, đang phát lại…", "Media lost, publishing again…", "info"));
    c.on("republished", () => setStatus("Đã phát lại", "Publishing again", "ok"));
    c.on("busy", ({ retryInMs }) => {
      const s = Math.round(retryInMs / 1000);
      setStatus(`Máy chủ đầy, thử lại sau ${s} giây…`, `Server full, retrying in ${s} s…`, "info");
    });
    c.on("admitted", () => setStatus("Đã có chỗ, đang nhận hình", "Admitted, receiving", "ok"));
    c.on("active_speaker", () => {
      speakerEvents += 1;
    });
    c.on("error", (err) => log(`Lỗi: ${errorText(err)}`, `Error: ${errorText(err)}`));
    c.on("closed", (info) => {
      if (client !== c) return;
      stopLocalMedia();
      clearTiles();
      $("call").hidden = true;
      $("joinForm").hidden = false;
      if (c.ended) return; // the room_ended message stays
      if (info.reason === "left") setStatus("Bạn đã rời phòng", "You left the room", "info");
      else if (info.reason !== "removed") setStatus(`Mất kết nối (${info.code}) ${info.reason || ""}`, `Disconnected (${info.code}) ${info.reason || ""}`, "error");
    });
  }

  // -- actions ---------------------------------------------------------------------------------
  function need() {
    if (!client || client.connectionState === "closed") throw new T.TelebridgeError("not_connected", "join first");
    return client;
  }

  async function publish(options) {
    const c = need();
    const opts = options || {};
    if (publishing) throw new T.TelebridgeError("busy", "already publishing");
    publishing = true;
    render();
    setStatus("Đang bật camera + micro…", "Starting camera + mic…");
    let stream = null;
    try {
      // Only what is not published yet (the lead may have unpublished one of them).
      const wantVideo = opts.video !== false && !ownTrack("camera");
      const wantAudio = opts.audio !== false && !ownTrack("microphone");
      if (!wantVideo && !wantAudio) throw new T.TelebridgeError("invalid", "camera and microphone are already published");
      stream = await navigator.mediaDevices.getUserMedia({
        video: !wantVideo ? false : {
          width: { ideal: opts.width || 1280 },
          height: { ideal: opts.height || 720 },
          frameRate: { ideal: opts.frameRate || 24 },
        },
        audio: wantAudio,
      });
      const tracks = await c.publish({
        camera: stream.getVideoTracks()[0],
        microphone: stream.getAudioTracks()[0],
      });
      localStream = localStream || new MediaStream();
      for (const t of stream.getTracks()) localStream.addTrack(t);
      setStatus("Đang phát camera + micro", "Publishing camera + mic", "ok");
      return tracks;
    } catch (err) {
      if (stream) stream.getTracks().forEach((t) => t.stop());
      reportError("Phát", "Publish")(err);
    } finally {
      publishing = false;
      render();
    }
  }

  function stopLocalMedia() {
    if (localStream) localStream.getTracks().forEach((t) => t.stop());
    localStream = null;
  }

  function ownTrack(source) {
    const c = need();
    for (const local of c.localTracks.values()) if (local.source === source) return c.tracks.get(local.id);
    return null;
  }

  async function muteOwn(source, muted) {
    const t = ownTrack(source);
    if (!t) throw new T.TelebridgeError("not_found", `no own ${source} track`);
    return mute(t.id, muted === undefined ? !t.muted : muted);
  }

  function mute(trackId, muted) {
    return need().mute(trackId, muted === undefined ? true : muted).catch(reportError("Tắt tiếng", "Mute"));
  }

  function raiseHand(raised) {
    const c = need();
    const value = raised === undefined ? !(c.me && c.me.hand_raised) : !!raised;
    return c.raiseHand(value).catch(reportError("Giơ tay", "Raise hand"));
  }

  function setRole(identity, role) {
    return need().setRole(identity, role).catch(reportError("Đổi vai trò", "Role change"));
  }

  function remove(identity) {
    return need().remove(identity).catch(reportError("Mời ra", "Remove"));
  }

  function unpublish(trackId) {
    return need().unpublish(trackId).catch(reportError("Ngừng phát", "Unpublish"));
  }

  function endRoom() {
    return need().endRoom().catch(reportError("Kết thúc phiên", "End room"));
  }

  async function leave() {
    const c = client;
    if (!c) return;
    await c.leave();
    stopLocalMedia();
  }

  // -- rendering -----------------------------------------------------------------------------
  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      render();
    });
    // requestAnimationFrame does not run in a hidden tab; render there too.
    setTimeout(() => {
      if (renderQueued) {
        renderQueued = false;
        render();
      }
    }, 100);
  }

  function render() {
    const c = client;
    if (!c || c.connectionState === "closed" || !c.me) return;
    renderToolbar(c);
    renderTiles(c);
    renderPeople(c);
  }

  function renderToolbar(c) {
    const me = c.me;
    const meLine = $("meLine");
    meLine.replaceChildren(el("strong", {}, me.name || me.identity), " ", roleBadge(me.role), " ",
      el("span", { class: "ident" }, `${c.room ? c.room.name : ""}`));
    const canPublish = me.role === "lead" || me.role === "participant";
    const cam = ownTrack("camera");
    const mic = ownTrack("microphone");
    $("publishBtn").hidden = !canPublish || !!(cam && mic);
    if (!cam && mic) setBi($("publishBtn"), "Bật camera", "Publish camera");
    else if (cam && !mic) setBi($("publishBtn"), "Bật micro", "Publish mic");
    else setBi($("publishBtn"), "Bật camera + micro", "Publish camera + mic");
    $("publishBtn").disabled = publishing;
    const micBtn = $("micBtn");
    micBtn.hidden = !mic;
    if (mic) setBi(micBtn, mic.muted ? "Bật micro" : "Tắt micro", mic.muted ? "Unmute mic" : "Mute mic");
    const camBtn = $("camBtn");
    camBtn.hidden = !cam;
    if (cam) setBi(camBtn, cam.muted ? "Bật camera" : "Tắt camera", cam.muted ? "Camera on" : "Camera off");
    const handBtn = $("handBtn");
    handBtn.hidden = me.role === "lead";
    setBi(handBtn, me.hand_raised ? "Hạ tay" : "Giơ tay", me.hand_raised ? "Lower hand" : "Raise hand");
    handBtn.setAttribute("aria-pressed", me.hand_raised ? "true" : "false");
    $("endBtn").hidden = me.role !== "lead";
    $("recMark").hidden = !recording;
    const recBtn = $("recBtn");
    recBtn.hidden = me.role !== "lead";
    setBi(recBtn, recording ? "Dừng ghi hình" : "Ghi hình", recording ? "Stop recording" : "Record");
    recBtn.setAttribute("aria-pressed", recording ? "true" : "false");
  }

  // Who gets a tile: whoever sends us media, the lead and participants (a placeholder until
  // their video comes), and ourselves while publishing (a muted local preview).
  function tileOwners(c) {
    const owners = new Set();
    for (const p of c.participants.values()) if (p.role !== "observer") owners.add(p.identity);
    for (const r of c.remoteTracks.values()) owners.add(r.owner);
    if (localStream) owners.add(c.identity);
    return owners;
  }

  function renderTiles(c) {
    const owners = tileOwners(c);
    for (const [identity, tile] of [...tiles]) {
      if (!owners.has(identity)) {
        tile.video.srcObject = null;
        tile.el.remove();
        tiles.delete(identity);
      }
    }
    for (const identity of owners) {
      let tile = tiles.get(identity);
      if (!tile) {
        const video = el("video", { autoplay: true, playsInline: true });
        const placeholder = el("div", { class: "placeholder" });
        const caption = el("figcaption");
        const figure = el("figure", { class: "tile", "data-identity": identity }, video, placeholder, caption);
        tile = { el: figure, video, placeholder, caption, key: "" };
        tiles.set(identity, tile);
      }
      const p = c.participants.get(identity);
      const role = p ? p.role : "participant";
      const local = identity === c.identity;
      // Media: our own preview, or the owner's received tracks.
      let mediaTracks = [];
      if (local) mediaTracks = localStream ? localStream.getVideoTracks() : [];
      else mediaTracks = [...c.remoteTracks.values()].filter((r) => r.owner === identity).map((r) => r.track);
      const key = mediaTracks.map((t) => t.id).sort().join(",");
      if (key !== tile.key) {
        tile.key = key;
        tile.video.muted = local;
        tile.video.srcObject = mediaTracks.length ? new MediaStream(mediaTracks) : null;
        if (mediaTracks.length) {
          tile.video.play().catch(() => {
            // Autoplay with sound refused: play muted rather than not at all.
            tile.video.muted = true;
            tile.video.play().catch(() => {});
          });
        }
      }
      const ownTracks = [...c.tracks.values()].filter((t) => t.owner === identity);
      const videoTrack = ownTracks.find((t) => t.kind === "video");
      const hasVideo = mediaTracks.some((t) => t.kind === "video") && !(videoTrack && videoTrack.muted);
      tile.placeholder.hidden = hasVideo;
      tile.placeholder.textContent = (nameOf(identity) || "?").slice(0, 2).toUpperCase();
      const speaking = c.activeSpeaker === identity;
      tile.el.classList.toggle("speaking", speaking);
      tile.el.dataset.role = role;
      tile.el.dataset.local = local ? "true" : "false";
      tile.el.dataset.speaking = speaking ? "true" : "false";
      const caption = [el("span", { class: "who" }, nameOf(identity)), roleBadge(role)];
      if (local) caption.push(badge("", "bạn", "you"));
      if (speaking) caption.push(badge("speaking", "đang nói", "speaking"));
      for (const t of ownTracks) {
        if (!t.muted) continue;
        const [svi, sen] = SOURCE_LABELS[t.source] || [t.source, t.source];
        caption.push(badge("off", `${svi} tắt`, `${sen} off`));
      }
      if (p && p.hand_raised) caption.push(badge("hand", "giơ tay", "hand raised"));
      // The layer the server picked for us, and what it thinks our link carries.
      const layer = videoTrack && !local ? c.layers.get(videoTrack.id) : null;
      if (layer && layer.paused) {
        caption.push(badge("off", "chỉ âm thanh (mạng yếu)", "audio only (weak link)"));
      } else if (layer && layer.height) {
        const kbps = layer.estimate ? ` · ${Math.round(layer.estimate / 1000)} kbit/s` : "";
        // Below all temporal layers the frame rate is a half (T1) or a quarter (T0).
        const share = layer.temporal === 0 ? "¼" : layer.temporal === 1 ? "½" : "";
        const vi = share ? ` · ${share} khung hình` : "";
        const en = share ? ` · ${share} frame rate` : "";
        caption.push(badge("layer", `${layer.height}p${vi}${kbps}`, `${layer.height}p${en}${kbps}`));
      }
      tile.el.dataset.layer = layer && layer.height ? String(layer.height) : "";
      tile.caption.replaceChildren(...caption);
      // The lead's tile is the large one on the stage; everyone else is in the grid.
      const parent = role === "lead" ? $("stage") : $("grid");
      if (tile.el.parentNode !== parent) parent.append(tile.el);
    }
    // Keep the grid in a stable order: participants by join time.
    const grid = $("grid");
    const ordered = [...grid.children].sort((a, b) => joinedAt(c, a.dataset.identity) - joinedAt(c, b.dataset.identity));
    ordered.forEach((node, i) => {
      if (grid.children[i] !== node) grid.insertBefore(node, grid.children[i]);
    });
    $("noVideo").hidden = tiles.size > 0;
  }

  function joinedAt(c, identity) {
    const p = c.participants.get(identity);
    return p && p.joined_at ? p.joined_at : Number.MAX_SAFE_INTEGER;
  }

  function clearTiles() {
    for (const tile of tiles.values()) {
      tile.video.srcObject = null;
      tile.el.remove();
    }
    tiles.clear();
    $("people").replaceChildren();
    $("noVideo").hidden = false;
  }

  function renderPeople(c) {
    const amLead = c.me.role === "lead";
    const compact = c.view === "compact";
    const known = new Map(c.participants);
    if (compact && everyone) for (const p of everyone) if (!known.has(p.identity)) known.set(p.identity, p);
    const people = [...known.values()].sort((a, b) => {
      const r = (ROLE_ORDER[a.role] ?? 3) - (ROLE_ORDER[b.role] ?? 3);
      if (r) return r;
      if (a.hand_raised !== b.hand_raised) return a.hand_raised ? -1 : 1;
      return (a.joined_at || 0) - (b.joined_at || 0);
    });
    // The compact view lists the stage and us; the observers are a count (and a page away).
    const onStage = [...c.participants.values()].filter((p) => p.role !== "observer").length;
    $("count").textContent = String(compact ? onStage + c.observers : people.length);
    const items = people.map((p) => {
      const self = p.identity === c.identity;
      const row = el("div", { class: "row" },
        el("span", { class: "name" }, p.name || p.identity),
        p.name && p.name !== p.identity ? el("span", { class: "ident" }, `(${p.identity})`) : null,
        roleBadge(p.role),
        self ? badge("", "bạn", "you") : null,
        p.hand_raised ? badge("hand", "giơ tay", "hand raised") : null,
        c.activeSpeaker === p.identity ? badge("speaking", "đang nói", "speaking") : null);
      const q = c.quality.get(p.identity);
      if (q && q.quality !== "excellent" && q.quality !== "good") row.append(badge("off", `mạng ${q.quality}`, `network ${q.quality}`));
      const actions = el("div", { class: "actions" });
      const action = (name, vi, en, extra) => {
        const b = el("button", Object.assign({ type: "button", "data-action": name, "data-identity": p.identity }, extra || {}), bi(vi, en));
        actions.append(b);
        return b;
      };
      const theirTracks = [...c.tracks.values()].filter((t) => t.owner === p.identity);
      if (self) {
        for (const t of theirTracks) {
          const [svi, sen] = SOURCE_LABELS[t.source] || [t.source, t.source];
          action("mute", t.muted ? `Bật ${svi}` : `Tắt ${svi}`, t.muted ? `Unmute ${sen}` : `Mute ${sen}`,
            { "data-track": t.id, "data-muted": t.muted ? "false" : "true" });
        }
      } else if (amLead) {
        if (p.role === "observer") action("promote", "Cho phát biểu", "Promote");
        else if (p.role === "participant") action("demote", "Chuyển sang quan sát", "Demote");
        for (const t of theirTracks) {
          if (t.muted) continue;
          const [svi, sen] = SOURCE_LABELS[t.source] || [t.source, t.source];
          action("mute", `Tắt ${svi}`, `Mute ${sen}`, { "data-track": t.id, "data-muted": "true" });
        }
        action("remove", "Mời ra", "Remove", { class: "danger" });
      }
      return el("li", {
        "data-identity": p.identity,
        "data-role": p.role,
        "data-hand": p.hand_raised ? "true" : "false",
        class: c.activeSpeaker === p.identity ? "speaking" : "",
      }, row, actions.children.length ? actions : null);
    });
    if (compact) {
      const others = Math.max(0, c.observers - 1);
      items.push(el("li", { class: "more", "data-observers": String(c.observers) },
        el("div", { class: "row" }, bi(`${others} quan sát viên khác`, `${others} other observers`)),
        el("div", { class: "actions" },
          el("button", { type: "button", "data-action": "all" }, everyone ? bi("Làm mới danh sách", "Refresh the list") : bi("Xem tất cả", "Show everyone")))));
    }
    $("people").replaceChildren(...items);
  }

  // The compact view's full list, paged from the server (a snapshot: refreshed on request).
  async function showEveryone() {
    const c = client;
    if (!c) return;
    everyone = await c.allParticipants();
    render();
  }

  // -- stats for tests ---------------------------------------------------------------------------
  async function state() {
    const c = client;
    if (!c) return { joined: false, connectionState: "closed", participants: [], tracks: [], tiles: [], activeSpeaker: null };
    const snap = c.snapshot();
    const out = Object.assign({ joined: c.connectionState === "joined" }, snap);
    out.tiles = [];
    for (const [identity, tile] of tiles) {
      const remote = [...c.remoteTracks.values()].filter((r) => r.owner === identity);
      let framesDecoded = 0;
      let framesReceived = 0;
      let packetsLost = 0;
      let audioPackets = 0;
      let audioSamples = 0;
      let audioConcealed = 0;
      for (const r of remote) {
        const s = await c.remoteTrackStats(r.id);
        if (!s) continue;
        packetsLost += s.packetsLost || 0;
        if (r.kind === "video") {
          framesDecoded += s.framesDecoded || 0;
          framesReceived += s.framesReceived || 0;
        } else {
          audioPackets += s.packetsReceived || 0;
          audioSamples += s.totalSamplesReceived || 0;
          audioConcealed += s.concealedSamples || 0;
        }
      }
      out.tiles.push({
        identity,
        role: tile.el.dataset.role,
        stage: tile.el.parentNode === $("stage"),
        local: tile.el.dataset.local === "true",
        speaking: tile.el.classList.contains("speaking"),
        tracks: remote.map((r) => r.id),
        framesDecoded,
        framesReceived,
        packetsLost,
        audioPackets,
        audioSamples,
        audioConcealed,
        layer: tile.el.dataset.layer ? Number(tile.el.dataset.layer) : null,
        videoWidth: tile.video.videoWidth,
        videoHeight: tile.video.videoHeight,
        paused: tile.video.paused,
      });
    }
    out.speakerEvents = speakerEvents;
    out.status = $("status").textContent;
    out.raisedHands = snap.participants.filter((p) => p.hand_raised).map((p) => p.identity);
    return out;
  }

  // -- the page ------------------------------------------------------------------------------------
  function field(id) {
    return $(id).value.trim();
  }

  function setLang(lang) {
    document.body.dataset.lang = lang;
    for (const b of document.querySelectorAll(".lang button")) b.setAttribute("aria-pressed", b.dataset.lang === lang ? "true" : "false");
    try {
      localStorage.setItem("telebridge.lang", lang);
    } catch (_) {}
  }

  function wireUi() {
    const ignore = () => {}; // already shown in the status line
    const params = new URLSearchParams(window.location.search);
    for (const id of ["room", "identity", "name", "role"]) if (params.has(id)) $(id).value = params.get(id);
    try {
      const lang = params.get("lang") || localStorage.getItem("telebridge.lang");
      if (lang === "vi" || lang === "en" || lang === "both") setLang(lang);
    } catch (_) {}
    for (const b of document.querySelectorAll(".lang button")) b.addEventListener("click", () => setLang(b.dataset.lang));
    $("joinForm").addEventListener("submit", (event) => {
      event.preventDefault();
      join(field("room"), field("identity"), field("role"), { name: field("name") }).catch(ignore);
    });
    $("publishBtn").addEventListener("click", () => publish().catch(ignore));
    $("micBtn").addEventListener("click", () => muteOwn("microphone").catch(ignore));
    $("camBtn").addEventListener("click", () => muteOwn("camera").catch(ignore));
    $("handBtn").addEventListener("click", () => raiseHand().catch(ignore));
    $("endBtn").addEventListener("click", () => {
      if (window.confirm("Kết thúc phiên cho mọi người? / End the room for everyone?")) endRoom().catch(ignore);
    });
    $("leaveBtn").addEventListener("click", () => leave().catch(ignore));
    $("recBtn").addEventListener("click", () => {
      if (!client) return;
      client.request(recording ? "stop_recording" : "start_recording", {})
        .catch(reportError("Ghi hình", "Recording")).catch(ignore);
    });
    $("people").addEventListener("click", (event) => {
      const b = event.target.closest("button[data-action]");
      if (!b) return;
      const who = b.dataset.identity;
      const act = {
        promote: () => setRole(who, "participant"),
        demote: () => setRole(who, "observer"),
        mute: () => mute(b.dataset.track, b.dataset.muted !== "false"),
        remove: () => remove(who),
        all: () => showEveryone().catch(reportError("Danh sách", "List")),
      }[b.dataset.action];
      if (act) act().catch(ignore);
    });
    if (params.get("join") === "1") $("joinForm").requestSubmit();
  }

  // Leave when the tab goes away: leave() sends its message synchronously.
  window.addEventListener("pagehide", () => {
    if (client && client.connectionState !== "closed") client.leave().catch(() => {});
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wireUi);
  else wireUi();

  window.telebridgeApp = {
    join,
    publish,
    state,
    raiseHand,
    showEveryone,
    promote: (identity) => setRole(identity, "participant"),
    demote: (identity) => setRole(identity, "observer"),
    setRole,
    mute,
    muteOwn,
    unpublish,
    remove,
    endRoom,
    leave,
    get client() {
      return client;
    },
  };
})();
