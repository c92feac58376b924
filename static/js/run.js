// Run page: header, charts, alerts, samples, toy snapshots and config, kept live through the run's SSE stream.
// Order matters: the stream is subscribed first, its `ready` triggers the (re)load, and metric events
// that arrive meanwhile are buffered and applied after, dropping steps already held.
"use strict";
(() => {
  const { el, api, fmt } = GS;
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const runId = boot.run_id;
  const knobOrder = (boot.defaults || []).map(([k]) => k);
  const defaults = Object.fromEntries(boot.defaults || []);
  const charts = new Map(); // spec id -> chart
  const wrappers = new Map(); // spec id -> wrapper div (created up front so charts keep their order)
  const alerts = new Map(); // alert id -> alert
  const expanded = new Map(); // alert id -> open/closed as the user left it
  let allNames = [];
  let summary = null;
  let loaded = false;
  let loading = null;
  let buffer = [];
  const samples = new GS.Samples(runId);
  const toy = new GS.Toy(runId);

  // Zoom on one chart zooms them all (same step axis), each re-querying its own range.
  const ctx = { runId, onZoom: (src, range) => charts.forEach((c) => { if (c !== src) c.setRange(range, false); }) };

  const chartsDiv = document.getElementById("charts");
  for (const spec of GS.CHART_SPECS) {
    const w = el("div", { class: "chart", id: "chart-" + spec.id, hidden: true }, el("div", { class: "plot" }));
    wrappers.set(spec.id, w);
    chartsDiv.appendChild(w);
  }

  // Create charts for newly seen metric names; returns the charts that need a first load.
  const ensureCharts = async (names) => {
    const fresh = [];
    for (const spec of GS.CHART_SPECS) {
      const resolved = GS.namesFor(spec, names);
      if (!resolved.length) continue;
      let chart = charts.get(spec.id);
      if (!chart) {
        const w = wrappers.get(spec.id);
        w.hidden = false;
        chart = GS.makeChart(spec, w.querySelector(".plot"), ctx);
        chart.names = resolved.slice();
        chart.alerts = alertList();
        charts.set(spec.id, chart);
        fresh.push(chart);
      } else {
        await chart.addNames(resolved);
      }
    }
    document.getElementById("no-data").hidden = charts.size > 0;
    return fresh;
  };

  // --- header ----------------------------------------------------------------------------------------
  let headerTimer = null;
  const renderHeaderSoon = () => { if (!headerTimer) headerTimer = setTimeout(() => { headerTimer = null; renderHeader(); }, 250); };
  const renderHeader = () => {
    const r = summary;
    if (!r) return;
    document.getElementById("run-name").textContent = r.name || "(unnamed)";
    document.getElementById("run-status").replaceChildren(GS.badge(r.status));
    document.getElementById("run-health").replaceChildren(GS.badge(r.health || "healthy"));
    const total = r.total_steps || 0;
    document.querySelector("#run-progress > span").style.width = (total ? Math.min(100, (100 * r.step) / total) : 0) + "%";
    document.getElementById("run-step").textContent = "step " + (r.step || 0) + (total ? " / " + total : "");
    const facts = ["#" + r.id, r.kind, r.dataset, r.worker_id ? "worker " + r.worker_id : null,
      r.started_at ? "started " + GS.fmtTime(r.started_at) : "created " + GS.fmtTime(r.created_at),
      GS.fmtDuration(GS.durationMs(r)), r.attempts > 1 ? r.attempts + " attempts" : null];
    const last = r.last || {};
    const losses = ["loss/d", "loss/g", "pred/real", "pred/fake"].filter((n) => n in last).map((n) => n + " " + fmt(last[n]));
    document.getElementById("run-facts").textContent = facts.concat(losses).filter(Boolean).join(" · ");
    document.getElementById("run-error").textContent = [r.stop_reason, r.error].filter(Boolean).join(" — ");
    const cancel = document.getElementById("cancel-btn");
    cancel.disabled = !GS.ACTIVE.has(r.status);
  };

  const renderConfig = () => {
    if (summary && summary.kind === "sdk") return renderSdkConfig();
    const cfg = (summary && summary.config) || {};
    const order = knobOrder;
    const keys = Object.keys(cfg).sort((a, b) => (order.indexOf(a) + 1 || 999) - (order.indexOf(b) + 1 || 999));
    document.getElementById("config").replaceChildren(...keys.map((k) => {
      const changed = k in defaults && JSON.stringify(cfg[k]) !== JSON.stringify(defaults[k]) && k !== "name";
      return el("tr", { class: changed ? "changed" : "", title: changed ? "default: " + GS.fmtValue(defaults[k]) : "" },
        el("td", { text: k }), el("td", { class: "mono", text: GS.fmtValue(cfg[k]) }));
    }));
  };

  // An SDK run: the script's own options as it gave them, then what it declared for the detectors.
  const renderSdkConfig = () => {
    const row = (k, v, cls) => el("tr", { class: cls }, el("td", { text: k }), el("td", { class: "mono", text: GS.fmtValue(v) }));
    const own = Object.entries(summary.user_config || {}).map(([k, v]) => row(k, v, ""));
    const declared = Object.entries(summary.config || {}).map(([k, v]) => row("declared: " + k, v, "changed"));
    document.getElementById("config").replaceChildren(...own, ...declared);
  };

  // --- alerts --------------------------------------------------------------------------------------------
  const alertList = () => [...alerts.values()].sort((a, b) => a.first_step - b.first_step);

  const remedyConfig = (r) => {
    if (!r || typeof r !== "object") return {};
    if (r.config && typeof r.config === "object") return r.config;
    return Object.fromEntries(Object.entries(r).filter(([k]) => k in defaults));
  };
  const remedyText = (r) => (typeof r === "string" ? r : r ? r.text || r.summary || r.message || r.description || "" : "");

  const evidenceList = (ev) => {
    if (!ev || typeof ev !== "object") return [el("dd", { text: GS.fmtValue(ev) })];
    return Object.entries(ev).flatMap(([k, v]) => {
      let t = typeof v === "number" ? fmt(v) : GS.fmtValue(v);
      if (t.length > 300) t = t.slice(0, 300) + "…";
      return [el("dt", { text: k }), el("dd", { class: "mono", text: t })];
    });
  };

  // Open alerts move their last step on every batch: redraw the list and the charts' spans every 2 s at most.
  const renderAlertsSoon = GS.throttle(() => renderAlerts(), 2000);
  const renderAlerts = () => {
    const list = alertList();
    // An alert that no chart claims (its evidence names none of their metrics) is drawn on the D loss chart.
    for (const a of list) {
      delete a._fallbackChart;
      const claimed = [...charts.values()].some((c) => GS.alertConcerns(c.spec, c.names, a));
      if (!claimed) a._fallbackChart = charts.has("d_loss") ? "d_loss" : [...charts.keys()][0];
    }
    const open = list.filter((a) => a.status !== "closed").length;
    document.getElementById("alert-count").textContent = list.length ? `${open} open, ${list.length} in all` : "";
    const box = document.getElementById("alerts");
    if (!list.length) { box.replaceChildren(el("p", { class: "muted", text: "None so far." })); }
    // Open alerts first and expanded; closed ones fold to one line (a long run can close dozens).
    const ordered = list.slice().reverse().sort((a, b) => (a.status === "closed") - (b.status === "closed"));
    if (list.length) box.replaceChildren(...ordered.map((a) => {
      const fix = remedyConfig(a.remedy);
      const fixChips = Object.entries(fix).map(([k, v]) => el("span", { class: "chip", text: k + " → " + GS.fmtValue(v) }));
      const details = el("details", { class: `alert ${a.severity} ${a.status}`, "data-signature": a.signature, "data-alert-id": a.id },
        el("summary", {}, GS.badge(a.severity === "failing" ? "failing" : "warning", a.severity), " ",
          el("span", { class: "sig", text: a.signature }), " ", el("span", { class: "muted", text: a.status }), " ",
          el("span", { class: "muted", text: "steps " + a.first_step + "–" + a.last_step })),
        el("div", { class: "message", text: a.message || "" }),
        el("dl", {}, evidenceList(a.evidence)),
        remedyText(a.remedy) || fixChips.length ? el("div", {}, el("b", { text: "Remedy: " }), remedyText(a.remedy), " ", fixChips) : null,
        a.remedy && Array.isArray(a.remedy.sources) && a.remedy.sources.length
          ? el("div", { class: "muted", style: "font-size:11px" }, "Sources: " + a.remedy.sources.map(String).join("; ")) : null,
        fixChips.length ? el("button", { class: "primary", text: "Relaunch with this remedy", onclick: () => relaunch(fix, a.signature) }) : null);
      details.open = expanded.has(a.id) ? expanded.get(a.id) : a.status !== "closed";
      details.addEventListener("toggle", () => expanded.set(a.id, details.open));
      return details;
    }));
    for (const c of charts.values()) c.setAlerts(list);
  };

  const loadAlerts = async () => {
    const body = await api(`/api/runs/${runId}/alerts`);
    alerts.clear();
    for (const a of (body && body.alerts) || []) alerts.set(a.id, a);
    renderAlerts();
  };

  const relaunch = (remedy, signature) => {
    const q = new URLSearchParams({ from: String(runId), config: JSON.stringify((summary && summary.config) || {}) });
    if (remedy) { q.set("remedy", JSON.stringify(remedy)); q.set("alert", signature); }
    location.href = "/launch?" + q;
  };

  // --- metrics ---------------------------------------------------------------------------------------------
  const noteDrawn = (top) => {
    if (top === null || top === undefined) return;
    // Two frames later the extended charts have been painted: that is when a point counts as drawn.
    requestAnimationFrame(() => requestAnimationFrame(() => {
      const log = window.ganscope.drawLog;
      log.push({ step: top, t: Date.now() });
      if (log.length > 2000) log.splice(0, 1000);
      if (window.ganscope.onDrawn) window.ganscope.onDrawn(top);
    }));
  };

  const applyMetrics = async (metrics) => {
    const names = Object.keys(metrics);
    const unseen = names.filter((n) => !allNames.includes(n));
    let fresh = [];
    if (unseen.length) { allNames = allNames.concat(unseen); fresh = await ensureCharts(allNames); }
    let top = null;
    // Charts in view first, each its own task: input (a click on Cancel) gets through between redraws.
    const order = [...charts.values()].filter((c) => !fresh.includes(c)).sort((a, b) => b.visible - a.visible);
    for (const c of order) {
      const drew = c.visible && c.drawn;
      const t = c.extend(metrics);
      if (t !== null && t !== undefined) top = Math.max(top ?? -Infinity, t);
      if (drew && t !== null) await new Promise((r) => setTimeout(r, 0));
    }
    // New charts load their history on the side: the flush (and the charts already live) do not wait.
    for (const c of fresh) c.reload().then(renderAlertsSoon).catch((e) => console.error("chart", e));
    if (summary) {
      summary.last = summary.last || {};
      for (const [n, s] of Object.entries(metrics)) {
        if (!s.steps.length) continue;
        summary.step = Math.max(summary.step || 0, s.steps[s.steps.length - 1]);
        summary.last[n] = s.values[s.values.length - 1];
      }
      if (summary.last["toy/modes"] !== undefined) toy.setModes(summary.last["toy/modes"]);
      renderHeaderSoon();
    }
    noteDrawn(top);
  };

  // Events that arrive faster than the browser draws are merged: one extend per chart per flush. The
  // first event after a quiet spell draws on the next frame; under a flood, flushes are spaced by what
  // the last one cost (at most half the main thread), so a slow machine draws less often, not later and later.
  let pending = [];
  let flushing = false, timer = null, lastCost = 0, lastEnd = 0;
  let backlog = false, arrivedDuringFlush = false; // a flood: events kept coming while we drew
  const merge = (list) => {
    const out = {};
    for (const m of list) for (const [n, s] of Object.entries(m || {})) {
      const o = out[n] || (out[n] = { steps: [], values: [] });
      o.steps.push(...s.steps); o.values.push(...s.values);
    }
    return out;
  };
  const scheduleFlush = () => {
    if (timer || flushing) return;
    queuedAt = performance.now();
    const gap = backlog ? Math.min(1000, Math.max(0, lastCost - (performance.now() - lastEnd))) : 0;
    timer = setTimeout(() => { timer = null; requestAnimationFrame(runFlush); }, gap);
  };
  let queuedAt = 0;
  const runFlush = async () => {
    flushing = true;
    const t0 = performance.now();
    const wait = t0 - queuedAt;
    const batch = merge(pending);
    pending = [];
    try { await applyMetrics(batch); } catch (e) { console.error("live", e); }
    lastEnd = performance.now();
    lastCost = lastEnd - t0;
    flushing = false;
    backlog = arrivedDuringFlush;
    arrivedDuringFlush = false;
    // Where live latency goes (bench/live.py prints it): queued -> flush start, and the flush itself.
    const stats = window.ganscope.flushStats || (window.ganscope.flushStats = []);
    stats.push({ wait: Math.round(wait), cost: Math.round(lastCost) });
    if (stats.length > 500) stats.splice(0, 250);
    if (pending.length) scheduleFlush();
  };
  const onMetrics = (ev) => {
    if (!loaded) { buffer.push(ev.metrics); return; }
    if (flushing) arrivedDuringFlush = true;
    pending.push(ev.metrics);
    scheduleFlush();
  };

  const loadSummary = async () => {
    summary = await api(`/api/runs/${runId}`);
    renderHeader();
    renderConfig();
    document.getElementById("compare-link").href = "/compare?ids=" + runId;
    return summary;
  };

  const initialLoad = async () => {
    await loadSummary();
    allNames = (summary.metric_names || []).slice();
    const fresh = await ensureCharts(allNames);
    // Alerts and every chart's series are fetched at once; charts draw as their data lands.
    await Promise.all([loadAlerts().catch((e) => console.warn("alerts", e)), ...fresh.map((c) => c.reload())]);
    renderAlerts();
    samples.load().catch((e) => console.warn("samples", e));
    toy.load();
    loaded = true;
    const early = merge(buffer);
    buffer = [];
    await applyMetrics(early);
    window.ganscope.ready = true;
    window.ganscope.readyAt = performance.now();
  };

  // After a reconnect: fetch what was ingested while the stream was down, from the last step held.
  const catchUp = async () => {
    await loadSummary();
    const held = [...charts.values()].flatMap((c) => Object.values(c.lastStep));
    const since = held.length ? Math.min(...held) : null;
    const names = (summary.metric_names || []).length ? summary.metric_names : allNames;
    const metrics = await GS.fetchMetrics(runId, names, { since });
    await applyMetrics(metrics);
    await loadAlerts();
    samples.load().catch(() => {});
    toy.load();
  };

  // --- controls -------------------------------------------------------------------------------------------
  const cancelBtn = document.getElementById("cancel-btn");
  let armed = null;
  cancelBtn.addEventListener("click", async () => {
    // Two clicks instead of confirm(): no modal dialog, and no accidental cancel either.
    if (!armed) {
      cancelBtn.textContent = "Really cancel?";
      armed = setTimeout(() => { armed = null; cancelBtn.textContent = "Cancel"; }, 4000);
      return;
    }
    clearTimeout(armed); armed = null;
    cancelBtn.textContent = "Cancelling…";
    try {
      const r = await api(`/api/runs/${runId}/cancel`, { method: "POST" });
      if (r && r.status) { summary.status = r.status; renderHeader(); }
      cancelBtn.textContent = "Cancel";
    } catch (e) {
      cancelBtn.textContent = "Cancel";
      document.getElementById("run-error").textContent = "cancel failed: " + e.message;
    }
  });
  document.getElementById("relaunch-btn").addEventListener("click", () => relaunch(null));
  setInterval(() => { if (summary && summary.status === "running") renderHeader(); }, 5000);

  window.ganscope.stream = new GS.LiveStream(`/api/runs/${runId}/stream`, {
    ready: () => {
      if (!loading) loading = initialLoad().catch((e) => { loading = null; console.error("load", e); });
      else if (loaded) catchUp().catch((e) => console.error("catch-up", e));
    },
    metrics: onMetrics,
    alert: (a) => { alerts.set(a.id, a); if (loaded) renderAlertsSoon(); },
    status: (s) => {
      // A status event carries the step of its moment; points drawn since may be further on.
      const step = Math.max((summary && summary.step) || 0, s.step || 0);
      summary = Object.assign(summary || {}, s, { step, last: Object.assign((summary && summary.last) || {}, s.last || {}) });
      renderHeader();
    },
    sample: (s) => samples.add(s),
    snapshot: (s) => toy.onSnapshot(s),
  });

  window.ganscope.charts = charts; // tests read chart data and shapes from here
  window.ganscope.liveState = () => ({ flushing, pending: pending.length, backlog, step: summary && summary.step });
})();
