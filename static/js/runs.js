// Runs list: GET /api/runs (tag, config and archived filters are the server's), then live through
// /api/stream (status, alert and throttled progress events).
"use strict";
(() => {
  const { el, api, fmt } = GS;
  const runs = new Map(); // id -> summary
  const sparks = new Map(); // id -> {"loss/d": {steps, values}, "loss/g": ...}
  const selected = new Set();
  const SPARK_NAMES = ["loss/d", "loss/g"];
  const SPARK_COLORS = ["#2f6fdf", "#d0342c"];
  const SPARK_KEEP = 120;
  const params = new URLSearchParams(location.search);
  const state = {
    text: params.get("q") || "", status: params.get("status") || "", health: params.get("health") || "",
    tag: params.get("tag") || "", config: params.get("config") || "", archived: params.get("archived") === "1",
    sort: params.get("sort") || "id", asc: params.get("asc") === "1",
  };
  const HEALTH_RANK = { failing: 0, warning: 1, healthy: 2 };
  const tbody = document.querySelector("#runs tbody");

  const sortKey = (r) => {
    switch (state.sort) {
      case "loss_d": return r.last && typeof r.last["loss/d"] === "number" ? r.last["loss/d"] : Infinity;
      case "duration": return GS.durationMs(r) ?? -1;
      case "health": return r.status === "queued" ? 8 : HEALTH_RANK[r.health] ?? 9;
      case "step": return r.total_steps ? r.step / r.total_steps : r.step || 0;
      case "started_at": return r.started_at || "";
      default: return r[state.sort] ?? "";
    }
  };

  // Text, status and health filter what the server sent; tag, config and archived are asked of the server.
  const visible = () => {
    const q = state.text.toLowerCase();
    const out = [...runs.values()].filter((r) =>
      (!state.status || r.status === state.status) && (!state.health || (r.status !== "queued" && r.health === state.health)) &&
      (!state.tag || (r.tags || []).includes(state.tag)) && Boolean(r.archived) === state.archived &&
      (!q || [r.name, r.dataset, String(r.id), r.status, ...(r.tags || [])].some((v) => String(v || "").toLowerCase().includes(q))));
    out.sort((a, b) => {
      const x = sortKey(a), y = sortKey(b);
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return state.asc ? c : -c;
    });
    return out;
  };

  const knobChips = (r) => {
    const skip = new Set(["dataset", "steps"]);
    return Object.entries(r.key_config || {})
      .filter(([k]) => !skip.has(k))
      .map(([k, v]) => el("span", { class: "chip", title: k, text: k + " " + (typeof v === "number" ? fmt(v, 3) : GS.fmtValue(v)) }));
  };

  const progressCell = (r) => {
    const total = r.total_steps || 0;
    const pct = total ? Math.min(100, (100 * (r.step || 0)) / total) : 0;
    const bar = el("span", { class: "progress", title: total ? pct.toFixed(1) + "%" : "" });
    const fill = el("span");
    fill.style.width = pct + "%";
    bar.appendChild(fill);
    return el("td", { class: "num progress-cell" }, bar, " ", String(r.step || 0), total ? " / " + total : "");
  };

  // A loss with no value yet (a queued run) is a dash; a value that went non-finite is NaN.
  const lossText = (last, name) => (name in last ? fmt(last[name]) : "—");

  const row = (r) => {
    const last = r.last || {};
    const box = el("input", { type: "checkbox", "aria-label": "select run " + r.id });
    box.checked = selected.has(r.id);
    box.addEventListener("change", () => {
      if (box.checked) selected.add(r.id); else selected.delete(r.id);
      document.getElementById("compare-btn").disabled = selected.size < 2;
    });
    const spark = sparks.get(r.id);
    const alerts = r.open_alerts || 0;
    return el("tr", { "data-id": r.id },
      el("td", {}, box),
      el("td", { class: "num" }, el("a", { href: "/runs/" + r.id, text: "#" + r.id })),
      el("td", { class: "name" }, el("a", { href: "/runs/" + r.id, class: "run-name", text: r.name || "(unnamed)" }),
        r.kind === "sdk" ? el("span", { class: "chip", text: "sdk" }) : null,
        (r.tags || []).map((t) => el("span", { class: "chip tag", text: t })),
        r.note ? el("div", { class: "muted run-note-line", title: r.note, text: r.note.length > 80 ? r.note.slice(0, 80) + "…" : r.note }) : null),
      el("td", {}, GS.badge(r.status)),
      el("td", { class: "health" }, GS.healthBadge(r), " ", GS.learningBadge(r),
        alerts ? el("span", { class: "muted", title: "open alerts", text: " ⚑" + alerts }) : null),
      el("td", { text: r.dataset || "" }),
      el("td", { class: "knobs" }, knobChips(r)),
      progressCell(r),
      el("td", { class: "num", text: lossText(last, "loss/d") + " · " + lossText(last, "loss/g") }),
      el("td", {}, spark ? GS.sparkline(SPARK_NAMES.map((n) => spark[n] || { steps: [], values: [] }), SPARK_COLORS) : ""),
      el("td", { class: "num", title: r.started_at || "", text: r.started_at ? GS.fmtTime(r.started_at) : "not yet" }),
      el("td", { class: "num", text: GS.fmtDuration(GS.durationMs(r)) }),
    );
  };

  let renderQueued = false;
  const render = () => {
    if (renderQueued) return;
    renderQueued = true;
    // Coalesce bursts of events into one repaint per frame.
    requestAnimationFrame(() => {
      renderQueued = false;
      const list = visible();
      tbody.replaceChildren(...list.map(row));
      document.getElementById("count").textContent = list.length + " of " + runs.size + " runs";
      document.getElementById("empty").hidden = runs.size > 0 || Boolean(state.tag || state.config || state.archived);
      document.querySelectorAll("#runs th[data-sort]").forEach((th) => {
        th.classList.toggle("sorted", th.dataset.sort === state.sort);
        th.classList.toggle("asc", th.dataset.sort === state.sort && state.asc);
      });
    });
  };

  const saveState = () => {
    const p = new URLSearchParams();
    for (const k of ["text", "status", "health", "tag", "config"]) if (state[k]) p.set(k === "text" ? "q" : k, state[k]);
    if (state.archived) p.set("archived", "1");
    if (state.sort !== "id") p.set("sort", state.sort);
    if (state.asc) p.set("asc", "1");
    history.replaceState(null, "", location.pathname + (p.toString() ? "?" + p : ""));
  };

  const loadSpark = async (id) => {
    try {
      const body = await api(`/api/runs/${id}/metrics?names=${SPARK_NAMES.join(",")}&max_points=${SPARK_KEEP}`);
      sparks.set(id, body.metrics || {});
      render();
    } catch (e) { /* a run without metrics yet: no sparkline */ }
  };

  // fromQuery: the summary came from the filtered list itself (else from a live event).
  const upsert = (summary, fromQuery = false) => {
    if (!summary || summary.id === undefined) return;
    if (summary.deleted) { runs.delete(summary.id); render(); return; }
    const isNew = !runs.has(summary.id);
    if (isNew && state.config && !fromQuery) { reloadSoon(); return; } // matching the config filter is the server's call
    runs.set(summary.id, Object.assign(runs.get(summary.id) || {}, summary));
    if (isNew) loadSpark(summary.id);
    render();
  };

  const onProgress = (p) => {
    const r = runs.get(p.run_id);
    if (!r) { refreshOne(p.run_id); return; }
    if (p.step !== null && p.step !== undefined) r.step = Math.max(r.step || 0, p.step);
    r.last = Object.assign(r.last || {}, p.last || {});
    const s = sparks.get(p.run_id) || {};
    for (const [name, pts] of Object.entries(p.points || {})) {
      const cur = s[name] || { steps: [], values: [] };
      pts.steps.forEach((st, i) => {
        if (!cur.steps.length || st > cur.steps[cur.steps.length - 1]) { cur.steps.push(st); cur.values.push(pts.values[i]); }
      });
      if (cur.steps.length > SPARK_KEEP * 2) { cur.steps.splice(0, SPARK_KEEP); cur.values.splice(0, SPARK_KEEP); }
      s[name] = cur;
    }
    sparks.set(p.run_id, s);
    render();
  };

  const refreshOne = async (id) => {
    try { upsert(await api("/api/runs/" + id)); } catch (e) { /* deleted or not visible */ }
  };

  // The server query behind the table: tag, config and archived filters.
  const query = () => {
    const q = new URLSearchParams({ limit: "500", archived: state.archived ? "only" : "exclude" });
    if (state.tag) q.set("tag", state.tag);
    for (const part of state.config.split(",").map((x) => x.trim()).filter(Boolean)) q.append("config", part);
    return q;
  };
  let loadSeq = 0; // filters changed quickly: only the answer to the latest query counts
  const loadAll = async () => {
    const err = document.getElementById("filter-error");
    const seq = ++loadSeq;
    try {
      const body = await api("/api/runs?" + query());
      if (seq !== loadSeq) return;
      err.textContent = "";
      runs.clear();
      for (const r of GS.runsFrom(body)) upsert(r, true);
    } catch (e) {
      err.textContent = e.message;
    }
    render();
  };
  let reloadTimer = null;
  const reloadSoon = () => { clearTimeout(reloadTimer); reloadTimer = setTimeout(loadAll, 400); };

  const loadTags = async () => {
    const body = await api("/api/tags").catch(() => ({ tags: [] }));
    const sel = document.getElementById("filter-tag");
    sel.replaceChildren(el("option", { value: "", text: "any tag" }),
      ...((body && body.tags) || []).map((t) => el("option", { value: t.tag, text: t.tag + " (" + t.runs + ")" })));
    if (state.tag && ![...sel.options].some((o) => o.value === state.tag)) sel.appendChild(el("option", { value: state.tag, text: state.tag }));
    sel.value = state.tag;
  };

  // Controls.
  const text = document.getElementById("filter-text");
  const status = document.getElementById("filter-status");
  const health = document.getElementById("filter-health");
  const tag = document.getElementById("filter-tag");
  const config = document.getElementById("filter-config");
  const archived = document.getElementById("filter-archived");
  text.value = state.text; status.value = state.status; health.value = state.health;
  config.value = state.config; archived.checked = state.archived;
  text.addEventListener("input", () => { state.text = text.value; saveState(); render(); });
  status.addEventListener("change", () => { state.status = status.value; saveState(); render(); });
  health.addEventListener("change", () => { state.health = health.value; saveState(); render(); });
  tag.addEventListener("change", () => { state.tag = tag.value; saveState(); loadAll(); });
  config.addEventListener("change", () => { state.config = config.value.trim(); saveState(); loadAll(); });
  archived.addEventListener("change", () => { state.archived = archived.checked; saveState(); loadAll(); });
  document.querySelectorAll("#runs th[data-sort]").forEach((th) => {
    if (!th.dataset.sort) return;
    th.addEventListener("click", () => {
      if (state.sort === th.dataset.sort) state.asc = !state.asc;
      else { state.sort = th.dataset.sort; state.asc = ["name", "dataset", "status"].includes(th.dataset.sort); }
      saveState(); render();
    });
  });
  document.getElementById("compare-btn").addEventListener("click", () => {
    location.href = "/compare?ids=" + [...selected].sort((a, b) => a - b).join(",");
  });
  // Durations of running jobs tick without any event.
  setInterval(() => { if ([...runs.values()].some((r) => r.status === "running")) render(); }, 5000);

  new GS.LiveStream("/api/stream", {
    // Subscribed first, then (re)load: nothing that changes in between is missed.
    ready: () => Promise.all([loadAll(), loadTags()]).then(() => { window.ganscope.ready = true; })
      .catch((e) => console.error("runs", e)),
    status: (s) => upsert(s.id !== undefined ? s : Object.assign({ id: s.run_id }, s)),
    alert: (a) => refreshOne(a.run_id),
    progress: onProgress,
  });
})();
