// Run-page charts: the seeds' diagnostic plots as Plotly line charts and per-layer heatmaps.
// Live points arrive through extend() and are appended with Plotly.extendTraces (no redraw);
// zooming re-queries the visible step range; alerts are drawn as shaded spans over the steps they cover.
"use strict";
(() => {
  const { naturalCompare } = GS;
  const COLORS = ["#2f6fdf", "#d0342c", "#1f9d55", "#9b51e0", "#d98a00", "#0fa3b1", "#7a5c3e", "#e05297", "#5d6d7e"];
  // Points per series: the overview asks for ~2-3 per pixel of a chart (the server keeps every bucket's
  // first, min, max and last, so spikes survive); a zoomed range gets more. SVG cost grows with points.
  GS.MAX_POINTS = 1200;
  GS.ZOOM_POINTS = 2000;

  // Plotly renders a subset of HTML in text; escape what comes from the server so it stays text.
  GS.plotText = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

  const firstLayer = (names, prefix) => GS.layerOrder(names.filter((n) => n.startsWith(prefix)))[0];

  // Which metrics each chart shows, resolved against the run's metric names.
  GS.CHART_SPECS = [
    { id: "d_loss", title: "D loss (total, on real, on fake)", names: ["loss/d", "loss/d_real", "loss/d_fake"],
      refs: [{ y: 2 * Math.LN2, text: "2·ln 2 (equilibrium)" }], sigs: ["d_overpowering", "d_not_learning", "oscillation", "capacity_imbalance"] },
    { id: "g_loss", title: "G loss (total, adversarial, feature matching)", names: ["loss/g", "loss/g_adv", "loss/g_fm"],
      sigs: ["oscillation", "capacity_imbalance"] },
    { id: "pred", title: "D(x) and D(G(z))", names: ["pred/real", "pred/fake", "pred/fake_g"],
      refs: [{ y: 0.5, text: "0.5" }], sigs: ["d_overpowering", "d_not_learning"] },
    { id: "grad_first", title: "First-layer gradient norm of D and G", log: true,
      pick: (all) => [firstLayer(all, "grad/d/"), firstLayer(all, "grad/g/")].filter(Boolean),
      sigs: ["vanishing_g_grad", "exploding_grad", "poor_init"] },
    { id: "grad_d_heat", title: "D gradient norm per layer (log10)", heat: "grad/d/", sigs: ["exploding_grad"] },
    { id: "grad_g_heat", title: "G gradient norm per layer (log10)", heat: "grad/g/", sigs: ["vanishing_g_grad", "exploding_grad"] },
    // Many series (every layer of both nets): a smaller per-series budget keeps the SVG light.
    { id: "update", title: "Update / weight ratio per layer", prefix: "update/", log: true, points: 400 },
    { id: "perf", title: "Throughput (img/s; s/step on the right)", names: ["perf/img_s", "perf/step_s"], y2: ["perf/step_s"] },
    { id: "diversity", title: "Sample diversity (G's spread / real spread)", names: ["sample/diversity"],
      refs: [{ y: 1, text: "real" }], sigs: ["mode_collapse"] },
    { id: "toy", title: "Toy set: modes covered, quality (right)", names: ["toy/modes", "toy/quality"], y2: ["toy/quality"],
      sigs: ["mode_collapse"] },
    { id: "lr", title: "Learning rates", names: ["lr/d", "lr/g"] },
  ];

  GS.namesFor = (spec, all) => {
    if (spec.names) return spec.names.filter((n) => all.includes(n));
    if (spec.pick) return spec.pick(all);
    const prefix = spec.prefix || spec.heat;
    const found = all.filter((n) => n.startsWith(prefix));
    // Per net (update/d, update/g), each in forward layer order.
    const nets = [...new Set(found.map((n) => n.split("/").slice(0, 2).join("/")))].sort(naturalCompare);
    return nets.flatMap((p) => GS.layerOrder(found.filter((n) => n.startsWith(p + "/"))));
  };

  GS.fetchMetrics = async (runId, names, { maxPoints = GS.MAX_POINTS, start, end, since } = {}) => {
    if (!names.length) return {};
    const q = new URLSearchParams({ names: names.join(","), max_points: String(maxPoints) });
    if (start !== undefined) q.set("start", String(Math.floor(start)));
    if (end !== undefined) q.set("end", String(Math.ceil(end)));
    if (since !== undefined && since !== null) q.set("since_step", String(since));
    const body = await GS.api(`/api/runs/${runId}/metrics?${q}`);
    return (body && body.metrics) || {};
  };

  // Metric names an alert points at: strings anywhere in its evidence that look like metric names.
  const alertMetrics = (alert) => {
    const out = new Set();
    const walk = (v) => {
      if (typeof v === "string") { if (/^[a-z_]+\/[\w./*-]+$/i.test(v)) out.add(v); }
      else if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) { walk(k); walk(x); }
    };
    walk(alert.evidence);
    return [...out];
  };

  // An alert concerns a chart when its evidence names one of the chart's metrics (a trailing * or /
  // is a prefix); an alert whose evidence names no metric falls back to the charts of its signature.
  const concerns = (spec, names, alert) => {
    if (alert._fallbackChart === spec.id) return true; // set by the page when no chart claimed it
    const metrics = alertMetrics(alert);
    const hit = metrics.some((m) => {
      const isPrefix = m.endsWith("*") || m.endsWith("/");
      const p = m.endsWith("*") ? m.slice(0, -1) : m;
      return names.some((n) => (isPrefix ? n.startsWith(p) : n === m));
    });
    return hit || (metrics.length === 0 && (spec.sigs || []).includes(alert.signature));
  };

  const alertDecor = (spec, names, alerts) => {
    const shapes = [], annotations = [];
    const labelled = new Set();
    for (const a of alerts.slice().reverse()) {
      if (!concerns(spec, names, a)) continue;
      const failing = a.severity === "failing";
      const color = failing ? "208,52,44" : "217,138,0";
      // The evidence's step window when it gives one, else the alert's first..last step.
      const w = a.evidence && Array.isArray(a.evidence.window) && a.evidence.window.length === 2 &&
        a.evidence.window.every(Number.isFinite) ? a.evidence.window : [a.first_step, a.last_step ?? a.first_step];
      const x0 = w[0], x1 = Math.max(w[1], x0);
      shapes.push({ type: "rect", name: "alert-" + a.id, xref: "x", yref: "paper", x0, x1: x1 === x0 ? x0 + 0.5 : x1,
        y0: 0, y1: 1, fillcolor: `rgba(${color},${a.status === "closed" ? 0.07 : 0.16})`, line: { width: 0 }, layer: "below" });
      if (a.status !== "closed") shapes.push({ type: "line", name: "alert-start-" + a.id, xref: "x", yref: "paper", x0, x1: x0, y0: 0, y1: 1,
        line: { color: `rgb(${color})`, width: 1.5, dash: "dot" } });
      // One label per signature (its latest alert): a run that re-opens an alert often stays readable.
      if (labelled.has(a.signature)) continue;
      labelled.add(a.signature);
      annotations.push({ x: x0, y: 1, xref: "x", yref: "paper", xanchor: "left", yanchor: "top", showarrow: false,
        text: "⚑ " + GS.plotText(a.signature), font: { size: 10, color: `rgb(${color})` }, bgcolor: "rgba(255,255,255,.7)" });
    }
    return { shapes, annotations };
  };

  const refShapes = (spec) => (spec.refs || []).map((r) => ({ type: "line", xref: "paper", x0: 0, x1: 1, y0: r.y, y1: r.y,
    line: { color: "#9aa3b5", width: 1, dash: "dash" } }));

  const baseLayout = (spec) => ({
    title: { text: spec.title, font: { size: 13 }, x: 0.02 },
    margin: { l: 52, r: spec.y2 ? 52 : 14, t: 30, b: 32 }, height: 260,
    xaxis: { title: { text: "step", font: { size: 10 }, standoff: 2 }, zeroline: false },
    yaxis: { type: spec.log ? "log" : "linear", zeroline: false, exponentformat: "power" },
    legend: { orientation: "h", y: -0.22, font: { size: 10 } }, showlegend: true,
    hovermode: "x unified", uirevision: "keep", paper_bgcolor: "#fff", plot_bgcolor: "#fff",
  });
  const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

  // A fetched series plus the live points that arrived while the fetch was in flight (steps after its
  // last one): a reload must not drop what the stream already delivered.
  const withTail = (fetched, held, keepTail) => {
    const f = fetched || { steps: [], values: [] };
    if (!keepTail || !held || !held.steps.length) return f;
    const last = f.steps.length ? f.steps[f.steps.length - 1] : -Infinity;
    const i = held.steps.findIndex((st) => st > last);
    if (i < 0) return f;
    return { steps: f.steps.concat(held.steps.slice(i)), values: f.values.concat(held.values.slice(i)) };
  };

  // --- base: zoom handling and alert drawing shared by both chart kinds ---------------------------
  class Chart {
    constructor(spec, div, ctx) {
      this.spec = spec; this.div = div; this.ctx = ctx; this.names = []; this.zoom = null; this.alerts = [];
      this.lastStep = {}; this.silent = false; this.visible = true; this.stale = false;
    }
    // Charts scrolled out of view keep their data but skip drawing until they come back: a live run
    // with a dozen charts would otherwise keep the browser's main thread busy redrawing unseen SVG.
    observe() {
      if (!window.IntersectionObserver) return;
      new IntersectionObserver((entries) => {
        for (const e of entries) {
          this.visible = e.isIntersecting;
          if (this.visible && this.stale) { this.stale = false; this.draw(); }
        }
      }, { rootMargin: "150px" }).observe(this.div);
    }
    hook() {
      this.div.on("plotly_relayout", (ev) => {
        if (this.silent) return;
        if (ev["xaxis.autorange"]) this.setRange(null, true); // autoscale (double click); a resize is no zoom
        else if (ev["xaxis.range[0]"] !== undefined) this.setRange([ev["xaxis.range[0]"], ev["xaxis.range[1]"]], true);
        else if (Array.isArray(ev["xaxis.range"])) this.setRange(ev["xaxis.range"], true);
      });
    }
    // Zoom: re-query the visible steps at full resolution (up to MAX_POINTS per series in the range).
    async setRange(range, fromUser) {
      this.zoom = range;
      if (fromUser && this.ctx.onZoom) this.ctx.onZoom(this, range);
      if (!fromUser) {
        this.silent = true;
        try {
          await Plotly.relayout(this.div, range ? { "xaxis.range": range, "xaxis.autorange": false } : { "xaxis.autorange": true });
        } finally { this.silent = false; }
      }
      await this.reload();
    }
    fetchOpts(maxPoints) {
      const o = { maxPoints };
      if (this.zoom) { o.start = Math.max(0, this.zoom[0]); o.end = this.zoom[1]; }
      return o;
    }
    decor() {
      const d = alertDecor(this.spec, this.names, this.alerts);
      return { shapes: refShapes(this.spec).concat(d.shapes), annotations: d.annotations };
    }
    // The decor a full draw puts on the chart; remembered so setAlerts skips a relayout that changes nothing.
    drawnDecor() {
      const d = this.decor();
      this.decorKey = JSON.stringify(d);
      return d;
    }
    setAlerts(alerts) {
      this.alerts = alerts;
      if (!this.drawn) return Promise.resolve();
      if (!this.visible) { this.stale = true; return Promise.resolve(); }
      const decor = this.decor();
      const key = JSON.stringify(decor);
      if (key === this.decorKey) return Promise.resolve(); // nothing this chart shows has changed
      this.decorKey = key;
      this.silent = true;
      return Plotly.relayout(this.div, decor).finally(() => { this.silent = false; });
    }
  }

  // --- line chart: one trace per metric, trace 0 holds the non-finite markers ------------------------
  class LineChart extends Chart {
    constructor(spec, div, ctx) { super(spec, div, ctx); this.data = {}; this.bad = { x: [], y: [], text: [] }; }

    static lastFinite(series) {
      for (let i = series.values.length - 1; i >= 0; i--) if (series.values[i] !== null) return series.values[i];
      return null;
    }
    badPoint(name, step, series) {
      // A non-finite value is drawn as a red x where the series was last seen, never dropped.
      let y = LineChart.lastFinite(series);
      if (y === null || (this.spec.log && y <= 0)) y = this.spec.log ? 1 : 0;
      this.bad.x.push(step); this.bad.y.push(y); this.bad.text.push(GS.plotText(name) + " non-finite at step " + step);
    }
    setSeries(metrics) {
      const old = this.data;
      this.data = {}; this.bad = { x: [], y: [], text: [] };
      for (const n of this.names) {
        const src = withTail(metrics[n], old[n], !this.zoom);
        const s = { steps: [], values: [] };
        src.steps.forEach((st, i) => {
          const v = src.values[i];
          s.steps.push(st); s.values.push(v);
          if (v === null || (typeof v === "number" && !Number.isFinite(v))) this.badPoint(n, st, s);
        });
        this.data[n] = s;
        if (s.steps.length) this.lastStep[n] = Math.max(this.lastStep[n] ?? -Infinity, s.steps[s.steps.length - 1]);
      }
    }
    traces() {
      // Plotly keeps the arrays it is given and extendTraces appends to them: hand it copies, so the
      // chart's own bookkeeping (this.data, this.bad) never doubles what is drawn.
      const out = [{ name: "non-finite", x: this.bad.x.slice(), y: this.bad.y.slice(), text: this.bad.text.slice(),
        mode: "markers", type: "scatter",
        hoverinfo: "text", marker: { symbol: "x-thin-open", size: 11, color: "#d0342c", line: { width: 2.5, color: "#d0342c" } },
        showlegend: this.bad.x.length > 0 }];
      this.names.forEach((n, i) => out.push(this.trace(n, i)));
      return out;
    }
    trace(n, i) {
      const s = this.data[n] || { steps: [], values: [] };
      // Norm-layer update ratios start hidden (one click in the legend shows them): conv/fc layers are the signal.
      const hidden = this.spec.prefix && /\/(bn|norm)\w*$/.test(n);
      return { name: GS.plotText(n), x: s.steps.slice(), y: s.values.slice(), mode: "lines", type: "scatter", connectgaps: false,
        visible: hidden ? "legendonly" : true,
        line: { width: 1.4, color: COLORS[i % COLORS.length] }, yaxis: (this.spec.y2 || []).includes(n) ? "y2" : "y" };
    }
    layout() {
      const l = Object.assign(baseLayout(this.spec), this.drawnDecor());
      if (this.spec.y2) l.yaxis2 = { overlaying: "y", side: "right", zeroline: false, showgrid: false };
      if (this.zoom) l.xaxis = Object.assign(l.xaxis, { range: this.zoom, autorange: false });
      return l;
    }
    async draw() {
      this.silent = true;
      try {
        await (this.drawn ? Plotly.react(this.div, this.traces(), this.layout(), CONFIG)
          : Plotly.newPlot(this.div, this.traces(), this.layout(), CONFIG));
      } finally { this.silent = false; }
      if (!this.drawn) { this.drawn = true; this.hook(); this.observe(); }
    }
    // Points per series in the overview; a zoomed range gets ZOOM_POINTS.
    get budget() { return this.zoom ? GS.ZOOM_POINTS : this.spec.points || GS.MAX_POINTS; }
    async reload() {
      this.setSeries(await GS.fetchMetrics(this.ctx.runId, this.names, this.fetchOpts(this.budget)));
      await this.draw();
    }
    async addNames(names) {
      const fresh = names.filter((n) => !this.names.includes(n));
      if (!fresh.length) return;
      this.names.push(...fresh);
      if (this.drawn) await Plotly.addTraces(this.div, fresh.map((n) => this.trace(n, this.names.indexOf(n))));
    }
    // Live points: append what is newer than the last step held, with one extendTraces call.
    extend(metrics) {
      const xs = [], ys = [], idx = [];
      const badBefore = this.bad.x.length;
      let top = null;
      this.names.forEach((n, i) => {
        const src = metrics[n];
        if (!src || !src.steps.length) return;
        const s = this.data[n] || (this.data[n] = { steps: [], values: [] });
        const last = this.lastStep[n] ?? -Infinity;
        const x = [], y = [];
        src.steps.forEach((st, k) => {
          if (st <= last) return; // already held (catch-up overlaps the stream)
          const v = src.values[k];
          if (v === null || (typeof v === "number" && !Number.isFinite(v))) this.badPoint(n, st, s);
          x.push(st); y.push(v === undefined ? null : v); s.steps.push(st); s.values.push(v ?? null);
        });
        if (!x.length) return;
        this.lastStep[n] = x[x.length - 1];
        top = Math.max(top ?? -Infinity, x[x.length - 1]);
        xs.push(x); ys.push(y); idx.push(i + 1);
      });
      if (!idx.length || !this.drawn) return top;
      if (!this.visible) { this.stale = true; return top; }
      if (this.bad.x.length > badBefore) {
        Plotly.restyle(this.div, { showlegend: true, text: [this.bad.text.slice()] }, [0]);
        xs.push(this.bad.x.slice(badBefore)); ys.push(this.bad.y.slice(badBefore)); idx.push(0);
      }
      Plotly.extendTraces(this.div, { x: xs, y: ys }, idx);
      // Past the overview budget, fetch a fresh downsampled overview instead of growing.
      if (!this.zoom && Object.values(this.data).some((s) => s.steps.length > 1.5 * this.budget)) this.reloadSoon();
      return top;
    }
    reloadSoon() {
      if (this.reloadTimer) return;
      this.reloadTimer = setTimeout(() => { this.reloadTimer = null; this.reload(); }, 2000);
    }
    pointCount() { return Object.values(this.data).reduce((a, s) => a + s.steps.length, 0); }
  }

  // Shared with heatmap.js (loaded after this file), which adds GS.HeatChart.
  Object.assign(GS, { Chart, withTail, baseLayout, PLOT_CONFIG: CONFIG });
  GS.makeChart = (spec, div, ctx) => (spec.heat ? new GS.HeatChart(spec, div, ctx) : new LineChart(spec, div, ctx));
  GS.alertMetrics = alertMetrics;
  GS.alertConcerns = concerns;
})();
