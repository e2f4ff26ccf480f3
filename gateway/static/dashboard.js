// The voicegate dashboard: login, the live feed (/ws/dashboard), transcripts, the latency chart,
// provider health, call history, and the softphone's controls.
//
// Live data only ever arrives pushed over the WebSocket (a snapshot on connect, then events). The
// page fetches /api/calls when it loads and again when the feed says a call ended; it never polls.
// Everything a caller said is shown with textContent, never parsed as HTML.

import { Softphone } from "./softphone.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "voicegate.tokens"; // short-lived tokens only; the DASHBOARD_TOKEN is never stored
const RECONNECT_MAX_MS = 10000;
const REFRESH_FRACTION = 0.7; // refresh tokens after 70 % of their lifetime
const HISTORY_LIMIT = 25;
const CHART_TURNS = 20; // the chart shows a call's last 20 turns
const SEGMENTS = [
  ["vad_ms", "VAD end of speech", "#94a3b8"],
  ["stt_ms", "STT final", "#0ea5e9"],
  ["llm_first_sentence_ms", "LLM first sentence", "#8b5cf6"],
  ["tts_first_byte_ms", "TTS first byte", "#f59e0b"],
  ["gateway_overhead_ms", "Gateway overhead", "#ef4444"],
];
const SVG = "http://www.w3.org/2000/svg";

const state = {
  tokens: null,
  ws: null,
  retry: 0,
  live: new Map(), // call_sid -> {call_sid, caller, direction, started_at, turns: []}
  recent: [], // ended calls from the feed (newest first)
  loaded: new Map(), // call_sid -> call fetched from /api/calls/{sid}
  history: [],
  selected: null,
  status: null,
  phone: null,
  myCallSid: null,
  refreshTimer: null,
};

// ------------------------------------------------------------------------------ helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key === "title") node.title = value;
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function clock(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function dateTime(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  return `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${clock(seconds)}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || seconds < 0) return "";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function shortSid(sid) {
  return sid && sid.length > 14 ? `${sid.slice(0, 8)}…${sid.slice(-4)}` : sid || "";
}

function wsUrl(path) {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${path}`;
}

// ------------------------------------------------------------------------------ tokens & login

class AuthError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

function saveTokens(tokens) {
  state.tokens = tokens;
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify(tokens));
}

function loadTokens() {
  try {
    const tokens = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null");
    return tokens && tokens.expiresAt > Date.now() + 5000 ? tokens : null;
  } catch (_) {
    return null;
  }
}

// POST /api/token with the DASHBOARD_TOKEN (login) or a still-valid dashboard token (refresh).
async function requestTokens(credential) {
  const headers = credential ? { Authorization: `Bearer ${credential}` } : {};
  const response = await fetch("/api/token", { method: "POST", headers, cache: "no-store" });
  if (response.status === 403) {
    const body = await response.json().catch(() => ({}));
    throw new AuthError("disabled", body.detail || "The dashboard is disabled.");
  }
  if (!response.ok) throw new AuthError("unauthorized", "That token was not accepted.");
  const tokens = await response.json();
  tokens.expiresAt = Date.now() + tokens.expires_in * 1000;
  saveTokens(tokens);
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refreshTokens, tokens.expires_in * 1000 * REFRESH_FRACTION);
  return tokens;
}

async function refreshTokens() {
  try {
    return await requestTokens(state.tokens && state.tokens.dashboard);
  } catch (err) {
    if (err instanceof AuthError) showLogin(err.kind === "disabled" ? err : null);
    throw err;
  }
}

function showLogin(err) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.tokens = null;
  if (state.ws) {
    const ws = state.ws;
    state.ws = null;
    ws.close();
  }
  $("app").hidden = true;
  $("logout").hidden = true;
  if (err && err.kind === "disabled") {
    $("disabled-detail").textContent = err.message;
    $("disabled").hidden = false;
    $("login").hidden = true;
    return;
  }
  $("login").hidden = false;
  $("login-error").textContent = err ? err.message : "";
  $("login-token").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const input = $("login-token");
  try {
    await requestTokens(input.value.trim());
    input.value = "";
    enterApp();
  } catch (err) {
    showLogin(err instanceof AuthError ? err : new AuthError("error", `Login failed: ${err.message}`));
  }
}

function enterApp() {
  $("login").hidden = true;
  $("disabled").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = state.tokens && state.tokens.mode === "local";
  connectFeed();
  loadHistory();
}

async function api(path) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${state.tokens.dashboard}` }, cache: "no-store" });
    if (response.status === 401 && attempt === 0) {
      await refreshTokens();
      continue;
    }
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }
  throw new Error(`${path}: not authorized`);
}

// ------------------------------------------------------------------------------ live feed

function setFeedState(text, kind) {
  const pill = $("feed-state");
  pill.textContent = text;
  pill.className = `pill ${kind}`;
}

function connectFeed() {
  if (!state.tokens) return;
  const ws = new WebSocket(wsUrl(`/ws/dashboard?token=${encodeURIComponent(state.tokens.dashboard)}`));
  state.ws = ws;
  setFeedState("connecting", "warn");
  ws.onopen = () => {
    state.retry = 0;
    setFeedState("live", "good");
  };
  ws.onmessage = (event) => {
    try {
      onFeed(JSON.parse(event.data));
    } catch (err) {
      console.error("bad feed message", err);
    }
  };
  ws.onclose = () => {
    if (state.ws !== ws) return; // replaced or logged out
    setFeedState("reconnecting", "bad");
    const delay = Math.min(RECONNECT_MAX_MS, 500 * 2 ** state.retry++);
    setTimeout(async () => {
      if (state.ws !== ws) return;
      try {
        await refreshTokens(); // the token may have expired while we were away
      } catch (_) {
        if (!state.tokens) return; // back at the login form
      }
      connectFeed();
    }, delay);
  };
}

function onFeed(message) {
  switch (message.type) {
    case "snapshot":
      state.live = new Map(message.live.map((call) => [call.call_sid, call]));
      state.recent = message.recent || [];
      renderHealth(message.status);
      break;
    case "call_started":
      state.live.set(message.call.call_sid, message.call);
      if (!state.selected || message.call.call_sid === state.myCallSid) state.selected = message.call.call_sid;
      loadHistory();
      break;
    case "turn": {
      let call = state.live.get(message.call_sid);
      if (!call) {
        call = { call_sid: message.call_sid, caller: "", direction: "", started_at: message.turn.at, turns: [] };
        state.live.set(message.call_sid, call);
      }
      call.turns.push(message.turn);
      break;
    }
    case "call_ended": {
      const call = state.live.get(message.call_sid);
      state.live.delete(message.call_sid);
      if (call) state.recent.unshift({ ...call, ended_at: message.ended_at, reason: message.reason });
      state.recent = state.recent.slice(0, 10);
      loadHistory();
      break;
    }
    case "status":
      renderHealth(message.status);
      break;
    default:
      return;
  }
  renderLive();
  renderHistory();
  renderSelected();
}

// ------------------------------------------------------------------------------ calls & transcript

function findCall(sid) {
  return state.live.get(sid) || state.recent.find((c) => c.call_sid === sid) || state.loaded.get(sid) || null;
}

function select(sid) {
  state.selected = sid;
  renderLive();
  renderHistory();
  renderSelected();
}

async function openStoredCall(sid) {
  select(sid);
  if (state.live.has(sid)) return;
  try {
    const call = await api(`/api/calls/${encodeURIComponent(sid)}`);
    state.loaded.set(sid, call);
    if (state.selected === sid) renderSelected();
  } catch (err) {
    console.error(err);
  }
}

function renderLive() {
  const list = $("live-calls");
  list.replaceChildren();
  const now = Date.now() / 1000;
  for (const call of state.live.values()) {
    const item = el(
      "li",
      { class: call.call_sid === state.selected ? "selected" : "", "data-sid": call.call_sid, title: call.call_sid },
      el("span", {}, el("span", { class: "dot" }), `${call.caller || "unknown caller"} · ${call.direction || "inbound"}`),
      el("span", { class: "duration", "data-started": String(call.started_at || now), text: duration(now - (call.started_at || now)) }),
      el("span", { class: "sid", text: shortSid(call.call_sid) }),
      el("span", { class: "subtle", text: `${call.turns.length} turn${call.turns.length === 1 ? "" : "s"}` }),
    );
    item.addEventListener("click", () => select(call.call_sid));
    list.append(item);
  }
  $("live-count").textContent = String(state.live.size);
  $("no-live").hidden = state.live.size > 0;
}

function tickDurations() {
  const now = Date.now() / 1000;
  for (const node of document.querySelectorAll("#live-calls .duration")) {
    node.textContent = duration(now - Number(node.dataset.started));
  }
}

function turnTiming(turn, key) {
  const value = turn.timings ? turn.timings[key] : null;
  return typeof value === "number" && value >= 0 ? value : null;
}

// The greeting (or any turn the agent starts): no caller words, digits or speech timings. The
// store keeps a missing caller text as "", the live feed as null; both mean the same.
function isAgentOnly(turn) {
  return !turn.user_text && !turn.dtmf && turnTiming(turn, "vad_ms") === null && turnTiming(turn, "stt_ms") === null;
}

function renderTurn(turn) {
  const isGreeting = isAgentOnly(turn);
  const v2v = turnTiming(turn, "voice_to_voice_ms");
  const node = el("article", {
    class: `turn${turn.interrupted ? " interrupted" : ""}${isGreeting ? " greeting" : " caller-turn"}`,
    "data-testid": "turn",
    "data-turn": String(turn.turn_id),
  });
  node.append(
    el(
      "header",
      {},
      el("span", { text: isGreeting ? "Greeting" : `Turn ${turn.turn_id}` }),
      el("time", { text: clock(turn.at) }),
      v2v !== null ? el("span", { text: `voice-to-voice ${Math.round(v2v)} ms` }) : null,
      turn.interrupted ? el("span", { class: "badge", text: "interrupted" }) : null,
      turn.dtmf ? el("span", { class: "badge dtmf", text: `DTMF ${turn.dtmf}` }) : null,
    ),
  );
  if (!isGreeting && !(turn.dtmf && !turn.user_text)) {
    node.append(
      el("p", { class: "line caller" }, el("span", { class: "who", text: "Caller" }),
        el("span", { class: "text", "data-testid": "caller-text", text: turn.user_text || "(nothing recognised)" })),
    );
  }
  const agent = turn.agent_text || "";
  const heard = turn.heard_text || "";
  const line = el("p", { class: "line agent" }, el("span", { class: "who", text: "Agent" }));
  if (turn.interrupted && heard && agent.startsWith(heard)) {
    line.append(el("span", { class: "text heard", "data-testid": "agent-text", text: heard }),
      el("span", { class: "unheard", title: "not heard: the caller interrupted", text: agent.slice(heard.length) }));
  } else {
    line.append(el("span", { class: "text", "data-testid": "agent-text", text: agent || "(no reply)" }));
  }
  node.append(line);
  if (turn.interrupted && !(heard && agent.startsWith(heard))) {
    node.append(el("p", { class: "heard-note", text: `heard: ${heard || "(nothing)"}` }));
  }
  node.dataset.heard = heard;
  return node;
}

function renderSelected() {
  const box = $("transcript");
  const call = state.selected ? findCall(state.selected) : null;
  const title = $("transcript-title");
  if (!call) {
    title.textContent = state.selected ? shortSid(state.selected) : "";
    box.replaceChildren(el("p", { class: "empty", text: state.selected ? "Waiting for the call…" : "Select a call, or press “Call the agent”." }));
    renderChart([]);
    return;
  }
  const live = state.live.has(call.call_sid);
  title.textContent = `${shortSid(call.call_sid)} · ${call.caller || "unknown"} · ${live ? "live" : call.reason || call.end_reason || "ended"}`;
  title.dataset.sid = call.call_sid;
  const turns = call.turns || [];
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.replaceChildren(...(turns.length ? turns.map(renderTurn) : [el("p", { class: "empty", text: "No turns yet." })]));
  if (atBottom) box.scrollTop = box.scrollHeight;
  renderChart(turns);
}

// ------------------------------------------------------------------------------ latency chart

// A round gridline step (ms) giving about four lines up to `max`.
function niceStep(max) {
  const steps = [50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 30000, 60000];
  return steps.find((s) => s * 4 >= max) || 60000;
}

function renderChart(turns) {
  const box = $("chart");
  const shown = turns.filter((t) => SEGMENTS.some(([key]) => turnTiming(t, key) !== null)).slice(-CHART_TURNS);
  box.replaceChildren();
  if (!shown.length) {
    box.append(el("p", { class: "empty", text: "No timed turns yet." }));
    return;
  }
  const width = Math.max(360, box.clientWidth || 600);
  const height = 240;
  const pad = { left: 48, right: 12, top: 18, bottom: 28 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const totals = shown.map((t) => SEGMENTS.reduce((sum, [key]) => sum + (turnTiming(t, key) || 0), 0));
  const max = Math.max(...totals, ...shown.map((t) => turnTiming(t, "voice_to_voice_ms") || 0), 200);
  const step = niceStep(max);
  const top = step * Math.ceil(max / step);
  const y = (ms) => pad.top + plotH - (ms / top) * plotH;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "latency per turn" });
  for (let value = 0; value <= top; value += step) {
    chart.append(svg("line", { class: value ? "grid" : "axis", x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value) }));
    const label = svg("text", { x: pad.left - 6, y: y(value) + 4, "text-anchor": "end" });
    label.textContent = value >= 1000 ? `${value / 1000}s` : `${value}`;
    chart.append(label);
  }
  const slot = plotW / shown.length;
  const barW = Math.min(44, slot * 0.6);
  shown.forEach((turn, index) => {
    const x = pad.left + slot * index + (slot - barW) / 2;
    let base = 0;
    for (const [key, name, color] of SEGMENTS) {
      const value = turnTiming(turn, key);
      if (!value) continue;
      const rect = svg("rect", { x, y: y(base + value), width: barW, height: Math.max(0.5, y(base) - y(base + value)), fill: color, "data-segment": key });
      const tip = svg("title");
      tip.textContent = `${name}: ${Math.round(value)} ms`;
      rect.append(tip);
      chart.append(rect);
      base += value;
    }
    const total = turnTiming(turn, "voice_to_voice_ms") ?? totals[index];
    const label = svg("text", { class: "total", x: x + barW / 2, y: y(base) - 4, "text-anchor": "middle" });
    label.textContent = `${Math.round(total)}`;
    chart.append(label);
    const tick = svg("text", { x: x + barW / 2, y: height - 10, "text-anchor": "middle" });
    tick.textContent = isAgentOnly(turn) ? "greet" : `T${turn.turn_id}`;
    chart.append(tick);
  });
  box.append(chart);
}

function renderLegend() {
  $("legend").replaceChildren(
    ...SEGMENTS.map(([, name, color]) => {
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = color;
      return el("li", {}, swatch, name);
    }),
  );
}

// ------------------------------------------------------------------------------ provider health

function renderHealth(status) {
  if (!status) return;
  state.status = status;
  const summary = $("health-summary");
  summary.textContent = status.ready ? "engines ready" : status.loaded ? "engines degraded" : "engines loading";
  summary.className = `pill ${status.ready ? "good" : status.loaded ? "bad" : "warn"}`;
  const engines = status.engines || {};
  const grid = el("dl", { class: "health-grid" });
  const row = (name, value) => grid.append(el("dt", { text: name }), el("dd", {}, value));
  const pill = (text, kind) => el("span", { class: `pill ${kind}`, text });
  row("Status", pill(status.ready ? "ready" : "not ready", status.ready ? "good" : "bad"));
  row("Speech-to-text", engines.stt || "none");
  row("Language model", engines.llm || "rule-based dialog");
  row("Text-to-speech", engines.tts || "none");
  const problems = Object.entries(status.problems || {});
  row("Problems", problems.length ? el("ul", {}, ...problems.map(([k, v]) => el("li", { text: `${k}: ${v}` }))) : "none");
  const breakers = Object.entries(status.breakers || {});
  row("Circuit breakers", breakers.length
    ? el("span", {}, ...breakers.map(([name, st]) => pill(`${name}: ${st}`, st === "closed" ? "good" : st === "open" ? "bad" : "warn")))
    : "none reported");
  const errors = Object.entries(status.provider_errors || {});
  row("Provider errors", errors.length ? el("ul", {}, ...errors.map(([k, v]) => el("li", { text: `${k}: ${v}` }))) : "none");
  row("Fallbacks", String(status.fallbacks || 0));
  $("health").replaceChildren(grid);
}

// ------------------------------------------------------------------------------ history

async function loadHistory() {
  try {
    const body = await api(`/api/calls?limit=${HISTORY_LIMIT}`);
    state.history = body.calls || [];
    renderHistory();
  } catch (err) {
    console.error(err);
  }
}

function renderHistory() {
  const rows = state.history.map((call) => {
    const live = state.live.get(call.call_sid);
    const ended = call.ended_at ? duration(call.ended_at - call.started_at) : live ? "live" : "";
    const row = el(
      "tr",
      { class: call.call_sid === state.selected ? "selected" : "", "data-sid": call.call_sid },
      el("td", { text: dateTime(call.started_at) }),
      el("td", { class: "sid", text: shortSid(call.call_sid), title: call.call_sid }),
      el("td", { text: call.caller || "" }),
      el("td", { text: call.direction || "" }),
      el("td", { text: String(live ? live.turns.length : call.turn_count ?? "") }),
      el("td", { text: ended }),
      el("td", { text: call.end_reason || "" }),
    );
    row.addEventListener("click", () => openStoredCall(call.call_sid));
    return row;
  });
  $("history-rows").replaceChildren(...rows);
  $("no-history").hidden = rows.length > 0;
}

// ------------------------------------------------------------------------------ softphone

function setPhoneState(text, live) {
  const node = $("phone-state");
  node.textContent = text;
  node.className = `phone-state${live ? " live" : ""}`;
}

function onPhoneEvent(event) {
  switch (event.type) {
    case "state":
      if (event.state === "in-call") setPhoneState("in call — speak now", true);
      else setPhoneState("connecting…", false);
      break;
    case "stats": {
      const stats = event.stats;
      const played = $("played");
      played.textContent = `${(stats.playedMs / 1000).toFixed(1)} s`;
      played.dataset.playedMs = String(stats.playedMs);
      $("frames-sent").textContent = String(stats.framesSent);
      $("marks-echoed").textContent = String(stats.marksEchoed);
      $("clears").textContent = String(stats.clears);
      $("mic-level").style.width = `${Math.min(100, Math.round(event.level * 400))}%`;
      break;
    }
    case "error":
      $("phone-error").textContent = event.message;
      break;
    case "ended":
      setPhoneState(`call ended (${event.reason})`, false);
      resetCallButton();
      break;
    default:
      break;
  }
}

function resetCallButton() {
  const button = $("call-button");
  button.textContent = "Call the agent";
  button.classList.remove("hangup");
  button.disabled = false;
  $("keypad").hidden = true;
  $("mic-level").style.width = "0";
  state.phone = null;
}

async function onCallButton() {
  const button = $("call-button");
  if (state.phone) {
    state.phone.hangUp();
    return;
  }
  button.disabled = true;
  $("phone-error").textContent = "";
  let tokens;
  try {
    tokens = await refreshTokens(); // a fresh softphone token: it lives two minutes
  } catch (err) {
    $("phone-error").textContent = `Could not get a call token: ${err.message}`;
    button.disabled = false;
    return;
  }
  const phone = new Softphone({ url: wsUrl(`/twilio/media?token=${encodeURIComponent(tokens.softphone)}`), events: onPhoneEvent });
  state.phone = phone;
  state.myCallSid = phone.callSid;
  select(phone.callSid);
  button.textContent = "Hang up";
  button.classList.add("hangup");
  $("keypad").hidden = false;
  try {
    await phone.start();
    button.disabled = false;
  } catch (err) {
    $("phone-error").textContent = `Could not start the call: ${err.message}`;
    phone.finish("error");
  }
}

// ------------------------------------------------------------------------------ start

async function boot() {
  $("login-form").addEventListener("submit", onLogin);
  $("call-button").addEventListener("click", onCallButton);
  $("logout").addEventListener("click", () => showLogin(null));
  for (const key of $("keypad").querySelectorAll("button")) {
    key.addEventListener("click", () => state.phone && state.phone.sendDigit(key.textContent));
  }
  renderLegend();
  setInterval(tickDurations, 1000); // a clock for the durations shown, not a data poll
  window.addEventListener("resize", () => renderSelected());
  const saved = loadTokens();
  try {
    // A saved dashboard token refreshes itself; without one, local mode answers without credentials.
    await requestTokens(saved ? saved.dashboard : null);
    enterApp();
  } catch (err) {
    showLogin(err instanceof AuthError && err.kind === "disabled" ? err : null);
  }
}

boot();
