// Shared helpers for every page: JSON calls with the token, safe DOM building, formatting, SSE.
// Data from the server (run names, config strings) only ever reaches the page through textContent.
"use strict";

const GS = (window.GS = window.GS || {});
// Hooks for tests and bench/live.py: drawLog records when a live point was drawn.
window.ganscope = window.ganscope || { ready: false, drawLog: [], errors: [] };

GS.TOKEN_KEY = "ganscope.token";

GS.token = () => localStorage.getItem(GS.TOKEN_KEY) || "";

GS.initToken = () => {
  const input = document.getElementById("token");
  if (!input) return;
  input.value = GS.token();
  input.addEventListener("change", () => {
    if (input.value) localStorage.setItem(GS.TOKEN_KEY, input.value.trim());
    else localStorage.removeItem(GS.TOKEN_KEY);
  });
};

// fetch JSON; rejects with an Error carrying .status and .body (the parsed answer) on non-2xx.
GS.api = async (path, opts = {}) => {
  const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  if (opts.body !== undefined && typeof opts.body !== "string") {
    headers["Content-Type"] = "application/json";
    opts = Object.assign({}, opts, { body: JSON.stringify(opts.body) });
  }
  const tok = GS.token();
  if (tok && opts.method && opts.method !== "GET") headers.Authorization = "Bearer " + tok;
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!res.ok) {
    const err = new Error(GS.errorText(body) || res.status + " " + res.statusText);
    err.status = res.status;
    err.body = body;
    throw err;
  }
  return body;
};

GS.errorText = (body) => {
  if (!body) return "";
  if (typeof body === "string") return body;
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return "";
};

// el("td", {class: "x", title: t}, child, "text") — strings become text nodes, never HTML.
GS.el = (tag, attrs, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  return node;
};

GS.fmt = (v, digits = 4) => {
  if (v === null || v === undefined) return "NaN";
  if (typeof v !== "number") return String(v);
  if (!Number.isFinite(v)) return String(v);
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(2);
  return String(Number(v.toPrecision(digits)));
};

// Config values and remedy changes: 1e-6 rather than 0.0000010000000000000002.
GS.fmtValue = (v) => {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(8)));
  return typeof v === "object" && v !== null ? JSON.stringify(v) : v === null ? "null" : String(v);
};

// A date with its time, always (a bare time is ambiguous in a list of runs): "today 14:02",
// "yesterday 09:15", "3 Mar 14:02", "3 Mar 2023 14:02".
GS.fmtTime = (iso) => {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const now = new Date();
  const time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  const yesterday = new Date(now.getTime() - 86400e3);
  if (d.toDateString() === now.toDateString()) return "today " + time;
  if (d.toDateString() === yesterday.toDateString()) return "yesterday " + time;
  const date = d.toLocaleDateString(undefined, d.getFullYear() === now.getFullYear()
    ? { day: "numeric", month: "short" } : { day: "numeric", month: "short", year: "numeric" });
  return date + " " + time;
};

GS.ordinal = (n) => {
  const t = n % 100, u = n % 10;
  return n + (t >= 11 && t <= 13 ? "th" : u === 1 ? "st" : u === 2 ? "nd" : u === 3 ? "rd" : "th");
};

GS.durationMs = (run) => {
  if (!run || !run.started_at) return null;
  const end = run.finished_at ? new Date(run.finished_at) : new Date();
  return Math.max(0, end - new Date(run.started_at));
};

GS.fmtDuration = (ms) => {
  if (ms === null || ms === undefined) return "";
  const s = Math.round(ms / 1000);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
};

// Run fn at most once per ms (the last call is never lost); calls while fn runs coalesce into one more run.
GS.throttle = (fn, ms) => {
  let last = 0, timer = null, running = false, again = false;
  const run = async () => {
    timer = null; running = true;
    try { await fn(); } catch (e) { console.error(e); } finally {
      running = false; last = Date.now();
      if (again) { again = false; call(); }
    }
  };
  const call = () => {
    if (running) { again = true; return; }
    if (!timer) timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
  return call;
};

GS.ACTIVE = new Set(["queued", "running"]);

// Natural order, so grad/d/10 sorts after grad/d/2 (layer order).
GS.naturalCompare = (a, b) => a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });

// Layers in forward order (trainer/models.py naming: conv1, conv2, bn2, ..., mbd, conv5): by the layer's
// number, the weight layer before its norm/pool layer; a numberless layer (mbd) just before the last one.
GS.layerOrder = (names) => {
  const num = (n) => { const m = /(\d+)$/.exec(n); return m ? Number(m[1]) : null; };
  const nums = names.map(num).filter((x) => x !== null);
  const top = nums.length ? Math.max(...nums) : 0;
  const rank = (n) => { const leaf = n.split("/").pop(); return /^bn|norm/.test(leaf) ? 1 : /^pool/.test(leaf) ? 2 : 0; };
  const key = (n) => [num(n) ?? top - 0.5, rank(n)];
  return names.slice().sort((a, b) => {
    const ka = key(a), kb = key(b);
    return ka[0] - kb[0] || ka[1] - kb[1] || GS.naturalCompare(a, b);
  });
};

GS.badge = (cls, text) => GS.el("span", { class: "badge " + cls, text: text || cls });

// Health for a run that has data; a queued job has none yet, so it says where it waits instead.
GS.healthBadge = (r) => {
  if (r.status === "queued") {
    const b = GS.badge("queued", r.queue_position ? "queued · " + GS.ordinal(r.queue_position) : "queued");
    b.title = "not started: no health yet";
    return b;
  }
  return GS.badge(r.health || "healthy");
};

// The server's learning verdict (improving | stalled | regressing | unknown), when the summary has one.
GS.learningBadge = (r) => {
  const l = r && r.learning;
  if (!l || !l.verdict) return null;
  const b = GS.badge("learn-" + l.verdict, l.verdict === "unknown" ? "learning ?" : l.verdict);
  b.title = (l.message || "") + (l.metric ? " (" + l.metric + ")" : "");
  b.dataset.verdict = l.verdict;
  return b;
};

GS.setLive = (state) => {
  const n = document.getElementById("live");
  if (!n) return;
  n.hidden = false;
  n.className = "live " + state;
  n.textContent = state === "on" ? "● live" : state === "retry" ? "reconnecting…" : "offline";
};

GS.runsFrom = (body) => (Array.isArray(body) ? body : (body && (body.runs || body.items)) || []);

// An EventSource that survives server restarts. onReady(isReconnect) fires on every (re)connection,
// after the server has subscribed us: the page fetches what it missed from there.
GS.LiveStream = class {
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.connections = 0;
    this.lastId = null;
    this.open();
  }
  open() {
    const url = this.lastId !== null ? this.url + "?last_event_id=" + encodeURIComponent(this.lastId) : this.url;
    const es = (this.es = new EventSource(url));
    const on = (name) =>
      es.addEventListener(name, (ev) => {
        if (ev.lastEventId) this.lastId = ev.lastEventId;
        let data;
        try { data = JSON.parse(ev.data); } catch (e) { console.warn("bad event", name, e); return; }
        if (name === "ready") {
          GS.setLive("on");
          this.connections += 1;
          if (this.handlers.ready) this.handlers.ready(this.connections > 1, data);
        } else if (this.handlers[name]) {
          this.handlers[name](data);
        }
      });
    ["ready", "metrics", "alert", "status", "sample", "snapshot", "progress", "event"].forEach(on);
    es.onerror = () => {
      GS.setLive("retry");
      // The browser retries by itself while CONNECTING; after a fatal error we reopen ourselves.
      if (es.readyState === EventSource.CLOSED) {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.open(), 1000);
      }
    };
  }
  close() {
    clearTimeout(this.timer);
    if (this.es) this.es.close();
  }
};

// Tiny SVG sparkline (no Plotly for table rows: a hundred rows must stay cheap).
GS.sparkline = (series, colors) => {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 120 28");
  svg.setAttribute("preserveAspectRatio", "none");
  let lo = Infinity, hi = -Infinity, x0 = Infinity, x1 = -Infinity;
  for (const s of series) {
    s.steps.forEach((x, i) => {
      const y = s.values[i];
      if (y === null || !Number.isFinite(y)) return;
      lo = Math.min(lo, y); hi = Math.max(hi, y); x0 = Math.min(x0, x); x1 = Math.max(x1, x);
    });
  }
  if (!Number.isFinite(lo)) return svg;
  const sx = (x) => (x1 > x0 ? ((x - x0) / (x1 - x0)) * 118 + 1 : 60);
  const sy = (y) => (hi > lo ? 26 - ((y - lo) / (hi - lo)) * 24 : 14);
  series.forEach((s, k) => {
    const pts = [];
    s.steps.forEach((x, i) => {
      const y = s.values[i];
      if (y !== null && Number.isFinite(y)) pts.push(sx(x).toFixed(1) + "," + sy(y).toFixed(1));
    });
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colors[k % colors.length]);
    line.setAttribute("stroke-width", "1.3");
    svg.appendChild(line);
  });
  return svg;
};

window.addEventListener("error", (e) => window.ganscope.errors.push(String(e.message)));
document.addEventListener("DOMContentLoaded", GS.initToken);
