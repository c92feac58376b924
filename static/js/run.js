// Run page: charts, alerts, samples and toy snapshots kept live through the run's SSE stream.
// Order matters: the stream is subscribed first, its `ready` triggers the (re)load, and metric events
// that arrive meanwhile are buffered and applied after, dropping steps already held.
"use strict";
(() => {
  const { el, api } = GS;
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const runId = boot.run_id;
  const defaults = Object.fromEntries(boot.defaults || []);
  const panel = new GS.RunPanel(runId, defaults, (boot.defaults || []).map(([k]) => k));
  const charts = new Map(); // spec id -> chart
  const wrappers = new Map(); // spec id -> wrapper div (created up front so charts keep their order)
  const alerts = new Map(); // alert id -> alert
  const expanded = new Map(); // alert id -> open/closed as the user left it
  const cards = new Map(); // alert id -> its card element, updated in place
  let allNames = [];
  let summary = null;
  let loaded = false;
  let loading = null;
  let buffer = [];
  const samples = new GS.Samples(runId);
  const toy = new GS.Toy(runId);
  const clock = new GS.Clock(runId);
  const runEvents = new GS.RunEvents(runId, (list) => charts.forEach((c) => c.setEvents(list)));

  // Zoom on one chart zooms them all (same step axis), each re-querying its own range.
  const ctx = { runId, clock, onZoom: (src, range) => charts.forEach((c) => { if (c !== src) c.setRange(range, false); }) };

  const chartsDiv = document.getElementById("charts");
  for (const spec of GS.CHART_SPECS) {
    const w = el("div", { class: "chart" + (spec.tall ? " tall" : ""), id: "chart-" + spec.id, hidden: true }, el("div", { class: "plot" }));
    wrappers.set(spec.id, w);
    chartsDiv.appendChild(w);
  }
  GS.viewBar(document.getElementById("viewbar"));
  GS.onViewChange(() => charts.forEach((c) => c.redraw().then(() => c.renderTools && c.renderTools())));

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
        chart.events = runEvents.list();
        charts.set(spec.id, chart);
        GS.chartTools(chart, w);
        fresh.push(chart);
      } else {
        await chart.addNames(resolved);
        if (chart.renderTools) chart.renderTools();
      }
    }
    document.getElementById("no-data").hidden = charts.size > 0;
    return fresh;
  };

  // --- header ----------------------------------------------------------------------------------------
  let headerTimer = null;
  const renderHeaderSoon = () => { if (!headerTimer) headerTimer = setTimeout(() => { headerTimer = null; panel.set(summary); }, 250); };

  // --- alerts --------------------------------------------------------------------------------------------
  const alertList = () => [...alerts.values()].sort((a, b) => a.first_step - b.first_step);

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
    // Open alerts first and expanded; closed ones fold to one line (a long run can close dozens).
    const ordered = list.slice().reverse().sort((a, b) => (a.status === "closed") - (b.status === "closed"));
    // Cards are updated in place and only re-ordered when the order changes (see GS.alertCard).
    const nodes = ordered.map((a) => {
      const card = GS.alertCard(a, { defaults, expanded, onRelaunch: relaunch }, cards.get(a.id));
      cards.set(a.id, card);
      return card;
    });
    const current = [...box.children];
    if (!list.length) box.replaceChildren(el("p", { class: "muted", text: "None so far." }));
    else if (nodes.length !== current.length || nodes.some((n, i) => n !== current[i])) box.replaceChildren(...nodes);
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
  let flushing = false, timer = null, lastCost = 0, lastEnd = 0, queuedAt = 0;
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
  const topOf = (metrics) => {
    let top = null;
    for (const s of Object.values(metrics || {})) if (s.steps.length) top = Math.max(top ?? -Infinity, s.steps[s.steps.length - 1]);
    return top;
  };
  const onMetrics = (ev) => {
    // The batch's arrival time places its steps on the wall-time axis.
    if (ev.t !== undefined) clock.add(topOf(ev.metrics), ev.t);
    if (!loaded) { buffer.push(ev.metrics); return; }
    if (flushing) arrivedDuringFlush = true;
    pending.push(ev.metrics);
    scheduleFlush();
  };

  const loadSummary = async () => {
    summary = await api(`/api/runs/${runId}`);
    panel.set(summary);
    panel.renderConfig();
    samples.setConfig(summary.config);
    document.getElementById("compare-link").href = "/compare?ids=" + runId;
    return summary;
  };

  const initialLoad = async () => {
    await Promise.all([loadSummary(), clock.load().catch((e) => console.warn("clock", e))]);
    allNames = (summary.metric_names || []).slice();
    const fresh = await ensureCharts(allNames);
    // Alerts and every chart's series are fetched at once; charts draw as their data lands.
    await Promise.all([loadAlerts().catch((e) => console.warn("alerts", e)),
      runEvents.load().catch((e) => console.warn("events", e)), ...fresh.map((c) => c.reload())]);
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
    await Promise.all([loadSummary(), clock.load().catch(() => {})]);
    const held = [...charts.values()].flatMap((c) => Object.values(c.lastStep));
    const since = held.length ? Math.min(...held) : null;
    const names = (summary.metric_names || []).length ? summary.metric_names : allNames;
    const metrics = await GS.fetchMetrics(runId, names, { since });
    await applyMetrics(metrics);
    await loadAlerts();
    runEvents.load().catch(() => {});
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
      if (r && r.status) { summary.status = r.status; panel.set(summary); }
      cancelBtn.textContent = "Cancel";
    } catch (e) {
      cancelBtn.textContent = "Cancel";
      document.getElementById("run-error").textContent = "cancel failed: " + e.message;
    }
  });
  document.getElementById("relaunch-btn").addEventListener("click", () => relaunch(null));
  setInterval(() => {
    if (!summary) return;
    if (summary.status === "running") panel.set(summary);
    // A queued job's standing moves as workers progress: ask the server again.
    if (summary.status === "queued") loadSummary().catch(() => {});
  }, 5000);

  window.ganscope.stream = new GS.LiveStream(`/api/runs/${runId}/stream`, {
    ready: () => {
      if (!loading) loading = initialLoad().catch((e) => { loading = null; console.error("load", e); });
      else if (loaded) catchUp().catch((e) => console.error("catch-up", e));
    },
    metrics: onMetrics,
    alert: (a) => { alerts.set(a.id, a); if (loaded) renderAlertsSoon(); },
    status: (s) => {
      if (s.deleted) { location.href = "/?deleted=" + runId; return; }
      const wasQueued = summary && summary.status === "queued";
      // A status event carries the step of its moment; points drawn since may be further on.
      const step = Math.max((summary && summary.step) || 0, s.step || 0);
      summary = Object.assign(summary || {}, s, { step, last: Object.assign((summary && summary.last) || {}, s.last || {}) });
      if (wasQueued || s.status === "queued") loadSummary().catch(() => {}); // standing comes with the detail
      else panel.set(summary);
    },
    sample: (s) => samples.add(s),
    snapshot: (s) => toy.onSnapshot(s),
    // A heal: the run's record after its rollback step was replaced; charts, alerts and media re-read.
    event: (e) => {
      runEvents.add(e);
      if (!loaded || e.rollback_step === null || e.rollback_step === undefined) return;
      pending = []; // the stream is ordered: every point still queued came before the heal, from the abandoned stretch
      const rewind = () => {
        if (flushing) { setTimeout(rewind, 50); return; } // a flush drawing old points ends first
        charts.forEach((c) => c.rewind(e.rollback_step).catch((err) => console.error("rewind", err)));
        loadAlerts().catch(() => {});
        loadSummary().catch(() => {});
        samples.load().catch(() => {});
        toy.load();
      };
      rewind();
    },
  });

  window.ganscope.charts = charts; // tests read chart data and shapes from here
  window.ganscope.runEvents = runEvents;
  window.ganscope.clock = clock;
  // Per chart: the last step held and the last step drawn (tests and bench/live.py).
  window.ganscope.chartState = () => Object.fromEntries([...charts].map(([k, c]) => [k,
    { held: c.topStep(), drawn: c.drawnStep(), n: c.pointCount(), visible: c.visible, names: c.names, stale: c.stale, timer: !!c.hiddenTimer }]));
  window.ganscope.liveState = () => ({ flushing, pending: pending.length, backlog, step: summary && summary.step });
})();
