// The Switchboard dashboard. It uses the public JSON API with the token the
// operator pasted (kept in this tab's sessionStorage only) and the node's
// /metrics; it loads nothing from anywhere else. Server data is only ever
// written with textContent, never parsed as HTML.
"use strict";

const POLL_MS = 2000;
const HISTORY = 150; // 5 minutes of 2 s samples
const MIN_SPAN = 30; // the x axis spans at least a minute, then grows to HISTORY
const MAX_STREAMS = 100; // described per poll, so a node with many stays light
const TIMEOUT_MS = 5000;
// routes whose time is not request latency: long-poll reads wait on purpose
const LATENCY_SKIP = new Set(["/v1/sessions/{id}/read", "/metrics", "/ui", "/ui/app.js", "unmatched"]);

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("switchboard.token") || "";
let timer = null;
let previous = null; // the last metrics sample
const history = []; // {rateIn, rateOut, p50, p99}

async function api(path, init = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token }, init.headers || {});
  const resp = await fetch(path, Object.assign({}, init, { headers, signal: AbortSignal.timeout(TIMEOUT_MS) }));
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!resp.ok) {
    const e = new Error((body && body.error && body.error.message) || ("HTTP " + resp.status));
    e.status = resp.status;
    e.code = body && body.error && body.error.code;
    throw e;
  }
  return body;
}

// --- metrics -------------------------------------------------------------

function parseLabels(s) {
  const out = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  let m;
  while ((m = re.exec(s)) !== null) out[m[1]] = m[2];
  return out;
}

function parseMetrics(text) {
  const s = { t: performance.now(), eventsIn: 0, eventsOut: 0, read: 0, write: 0, buckets: new Map() };
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const sp = line.lastIndexOf(" ");
    const head = line.slice(0, sp);
    const value = Number(line.slice(sp + 1));
    const brace = head.indexOf("{");
    const name = brace < 0 ? head : head.slice(0, brace);
    const labels = brace < 0 ? {} : parseLabels(head.slice(brace));
    if (name === "switchboard_events_in_total") s.eventsIn = value;
    else if (name === "switchboard_events_out_total") s.eventsOut = value;
    else if (name === "switchboard_sessions_open") {
      if (labels.mode === "read") s.read = value;
      if (labels.mode === "write") s.write = value;
    } else if (name === "switchboard_request_duration_seconds_bucket" && !LATENCY_SKIP.has(labels.route)) {
      const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
      s.buckets.set(le, (s.buckets.get(le) || 0) + value);
    }
  }
  return s;
}

// The q-quantile of the requests between two cumulative histograms, with
// linear interpolation inside a bucket (as Prometheus does).
function quantile(q, now, before) {
  const les = [...now.buckets.keys()].sort((a, b) => a - b);
  const counts = les.map((le) => now.buckets.get(le) - ((before && before.buckets.get(le)) || 0));
  const total = counts.length ? counts[counts.length - 1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < les.length; i++) {
    if (counts[i] >= rank) {
      const upper = les[i] === Infinity ? lower : les[i];
      const inBucket = counts[i] - below;
      return inBucket > 0 ? lower + (upper - lower) * ((rank - below) / inBucket) : upper;
    }
    lower = les[i];
    below = counts[i];
  }
  return lower;
}

function fmtRate(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (v >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return v >= 10 ? Math.round(v).toString() : v.toFixed(1);
}

function fmtSeconds(v) {
  if (v === null || v === undefined) return "–";
  if (v < 0.001) return (v * 1e6).toFixed(0) + " µs";
  if (v < 1) return (v * 1e3).toFixed(v < 0.01 ? 2 : 1) + " ms";
  return v.toFixed(2) + " s";
}

function drawChart(svg, series, format) {
  const W = 600, H = 140, P = 4;
  const max = Math.max(1e-9, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const ns = "http://www.w3.org/2000/svg";
  for (const y of [0.25, 0.5, 0.75]) {
    const l = document.createElementNS(ns, "line");
    l.setAttribute("class", "grid");
    l.setAttribute("x1", 0); l.setAttribute("x2", W);
    l.setAttribute("y1", H * y); l.setAttribute("y2", H * y);
    svg.appendChild(l);
  }
  for (const s of series) {
    const pts = [];
    s.values.forEach((v, i) => {
      if (v === null) return;
      const x = (i / Math.max(1, s.values.length - 1)) * W;
      const y = H - P - (v / max) * (H - 2 * P);
      pts.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    const pl = document.createElementNS(ns, "polyline");
    pl.setAttribute("class", s.cls);
    pl.setAttribute("points", pts.join(" "));
    pl.dataset.points = String(pts.length);
    svg.appendChild(pl);
  }
  svg.dataset.max = String(max);
  return "· peak " + format(max);
}

async function pollMetrics() {
  const resp = await fetch("/metrics", { signal: AbortSignal.timeout(TIMEOUT_MS) });
  const now = parseMetrics(await resp.text());
  if (previous) {
    const dt = Math.max(0.001, (now.t - previous.t) / 1000);
    history.push({
      rateIn: Math.max(0, now.eventsIn - previous.eventsIn) / dt,
      rateOut: Math.max(0, now.eventsOut - previous.eventsOut) / dt,
      p50: quantile(0.5, now, previous),
      p99: quantile(0.99, now, previous),
    });
    while (history.length > HISTORY) history.shift();
  }
  previous = now;
  const last = history[history.length - 1];
  $("rate-in").textContent = last ? fmtRate(last.rateIn) : "0";
  $("rate-out").textContent = last ? fmtRate(last.rateOut) : "0";
  $("lat-p50").textContent = last ? fmtSeconds(last.p50) : "–";
  $("lat-p99").textContent = last ? fmtSeconds(last.p99) : "–";
  $("sessions-read").textContent = String(now.read);
  $("sessions-write").textContent = String(now.write);
  const span = Math.min(HISTORY, Math.max(MIN_SPAN, history.length));
  const pad = (vals) => Array(Math.max(0, span - vals.length)).fill(null).concat(vals);
  $("chart-max").textContent = drawChart($("chart"), [
    { cls: "in", values: pad(history.map((h) => h.rateIn)) },
    { cls: "out", values: pad(history.map((h) => h.rateOut)) },
  ], (v) => fmtRate(v) + " events/s");
  $("latency-max").textContent = drawChart($("latency"), [
    { cls: "in", values: pad(history.map((h) => h.p50)) },
    { cls: "out", values: pad(history.map((h) => h.p99)) },
  ], fmtSeconds);
}

// --- streams, nodes, configuration -----------------------------------------

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function retention(s) {
  const parts = [];
  if (s.retention_ms) parts.push(s.retention_ms + " ms");
  if (s.retention_bytes) parts.push(s.retention_bytes + " bytes");
  return parts.length ? parts.join(", ") : "keep all";
}

async function pollStreams() {
  const list = await api("/v1/streams");
  const shown = list.streams.slice(0, MAX_STREAMS);
  const described = await Promise.all(shown.map((s) =>
    api("/v1/streams/" + encodeURIComponent(s.name)).catch(() => null)));
  const body = $("streams");
  const rows = [];
  shown.forEach((s, i) => {
    const d = described[i];
    const tr = document.createElement("tr");
    tr.dataset.stream = s.name;
    cell(tr, s.name);
    cell(tr, String(s.partitions), "num");
    if (d) {
      let held = 0;
      d.end_offsets.forEach((e, p) => { held += e - d.start_offsets[p]; });
      cell(tr, String(held), "num held");
      cell(tr, d.end_offsets.join(" "), "num ends");
    } else {
      cell(tr, "–", "num held");
      cell(tr, "–", "num ends");
    }
    cell(tr, retention(s));
    rows.push(tr);
  });
  if (list.streams.length > MAX_STREAMS) {
    const tr = document.createElement("tr");
    cell(tr, "… and " + (list.streams.length - MAX_STREAMS) + " more", "muted");
    rows.push(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    cell(tr, "no streams yet: create one above", "muted");
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

async function pollNodes() {
  const c = await api("/v1/cluster");
  $("nodes").replaceChildren(...c.nodes.map((n) => {
    const tr = document.createElement("tr");
    cell(tr, n.id);
    cell(tr, n.role);
    cell(tr, n.state);
    cell(tr, String(n.sessions), "num");
    cell(tr, n.address);
    return tr;
  }));
}

async function loadConfig() {
  try {
    $("config").textContent = JSON.stringify(await api("/v1/config"), null, 2);
  } catch (e) {
    $("config").textContent = e.status === 403
      ? "this token lacks switchboard:admin on every stream, which the configuration needs"
      : "could not load: " + e.message;
  }
}

// --- the loop and the forms --------------------------------------------------

async function poll() {
  timer = null;
  const results = await Promise.allSettled([pollMetrics(), pollStreams(), pollNodes()]);
  const failed = results.find((r) => r.status === "rejected");
  if (failed && failed.reason && failed.reason.status === 401) {
    signOut("the token was refused: " + failed.reason.message);
    return;
  }
  $("status").textContent = failed
    ? "update failed: " + failed.reason.message
    : "updated " + new Date().toLocaleTimeString();
  if (token) timer = setTimeout(poll, POLL_MS);
}

function show(signedIn) {
  $("signin-view").hidden = signedIn;
  $("dashboard").hidden = !signedIn;
  $("signout").hidden = !signedIn;
}

async function signIn(t) {
  token = t.trim();
  try {
    await api("/v1/streams");
  } catch (e) {
    token = "";
    $("signin-msg").textContent = e.status === 401
      ? "this token was refused: " + e.message
      : "could not sign in: " + e.message;
    return;
  }
  sessionStorage.setItem("switchboard.token", token);
  $("signin-msg").textContent = "";
  show(true);
  loadConfig();
  if (timer === null) poll();
}

function signOut(why) {
  token = "";
  sessionStorage.removeItem("switchboard.token");
  if (timer !== null) clearTimeout(timer);
  timer = null;
  show(false);
  $("status").textContent = "signed out";
  $("signin-msg").textContent = why || "";
}

$("signin").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn($("token").value);
  $("token").value = "";
});

$("signout").addEventListener("click", () => signOut(""));

$("create").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const msg = $("create-msg");
  const name = $("create-name").value.trim();
  const partitions = Number($("create-partitions").value || "1");
  try {
    const s = await api("/v1/streams", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, partitions }),
    });
    msg.className = "msg good";
    msg.textContent = "created " + s.name;
    $("create-name").value = "";
    pollStreams().catch(() => {});
  } catch (e) {
    msg.className = "msg bad";
    msg.textContent = e.message;
  }
});

if (token) signIn(token); else show(false);
