// Run-page charts: which metrics each chart shows, fetching them, alert spans, and the base class both
// chart kinds share (zoom that re-queries the visible steps, alert drawing, the x-axis mode, and
// drawing out of view). LineChart is in linechart.js, HeatChart in heatmap.js.
"use strict";
(() => {
  const { naturalCompare } = GS;
  // Points per series: the overview asks for ~2-3 per pixel of a chart (the server keeps every bucket's
  // first, min, max and last, so spikes survive); a zoomed range gets more. SVG cost grows with points.
  GS.MAX_POINTS = 1200;
  GS.ZOOM_POINTS = 2000;
  // A chart scrolled out of view redraws at most this often (in view: at every live batch).
  GS.HIDDEN_REDRAW_MS = 3000;

  // Most points one live batch appends per series. A fast run (thousands of steps a second) would
  // otherwise hand Plotly tens of thousands of points per flush and stall the page for seconds; the
  // overview is refetched (server-downsampled) once a chart holds 1.5x its budget anyway.
  GS.EXTEND_MAX = 200;

  // Decimate like the server (server/downsample.py): per bucket the first, smallest, largest and last
  // point, and every non-finite one, so a spike or a NaN in a fast stream is never dropped.
  GS.decimate = (steps, values, maxPoints) => {
    const n = steps.length;
    if (n <= maxPoints) return { steps, values };
    const buckets = Math.max(1, Math.floor(maxPoints / 4));
    const width = Math.ceil(n / buckets);
    const keep = new Set();
    for (let b = 0; b * width < n; b++) {
      const lo = b * width, hi = Math.min(n, lo + width) - 1;
      let iMin = -1, iMax = -1;
      for (let i = lo; i <= hi; i++) {
        const v = values[i];
        if (v === null || v === undefined || !Number.isFinite(v)) { keep.add(i); continue; }
        if (iMin < 0 || v < values[iMin]) iMin = i;
        if (iMax < 0 || v > values[iMax]) iMax = i;
      }
      keep.add(lo); keep.add(hi);
      if (iMin >= 0) keep.add(iMin);
      if (iMax >= 0) keep.add(iMax);
    }
    const idx = [...keep].sort((a, b) => a - b);
    return { steps: idx.map((i) => steps[i]), values: idx.map((i) => values[i]) };
  };

  // Plotly renders a subset of HTML in text; escape what comes from the server so it stays text.
  GS.plotText = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

  const firstLayer = (names, prefix) => GS.layerOrder(names.filter((n) => n.startsWith(prefix)))[0];

  // Which metrics each chart shows, resolved against the run's metric names. yTitle/y2Title name units.
  GS.CHART_SPECS = [
    { id: "d_loss", title: "D loss (total, on real, on fake)", names: ["loss/d", "loss/d_real", "loss/d_fake"],
      refs: [{ y: 2 * Math.LN2, text: "2·ln 2: D at chance" }], yTitle: "nats",
      sigs: ["d_overpowering", "d_not_learning", "oscillation", "capacity_imbalance"] },
    { id: "g_loss", title: "G loss (total, adversarial, feature matching)", names: ["loss/g", "loss/g_adv", "loss/g_fm"],
      yTitle: "nats", sigs: ["oscillation", "capacity_imbalance"] },
    { id: "pred", title: "D(x) and D(G(z))", names: ["pred/real", "pred/fake", "pred/fake_g"],
      refs: [{ y: 0.5, text: "0.5: D cannot tell" }], yTitle: "probability", sigs: ["d_overpowering", "d_not_learning"] },
    { id: "quality_fid", title: "Image quality: FID (KID on the right; lower is better)", names: ["quality/fid", "quality/kid"],
      y2: ["quality/kid"], yTitle: "FID", y2Title: "KID", sigs: ["quality_stalled"] },
    { id: "quality_pr", title: "Precision, recall, density, coverage", names:
      ["quality/precision", "quality/recall", "quality/density", "quality/coverage"], yTitle: "fraction", sigs: ["quality_stalled", "mode_collapse"] },
    { id: "quality_modes", title: "Shapes: classes in fair share (recognisable on the right)",
      names: ["quality/modes", "quality/modes_total", "quality/recognisable"], y2: ["quality/recognisable"],
      yTitle: "classes", y2Title: "fraction", sigs: ["mode_collapse", "quality_stalled"] },
    { id: "toy_fit", title: "Toy set: fit of G's samples to the data (lower is better)", names: ["toy/fit"],
      yTitle: "distance", sigs: ["quality_stalled", "mode_collapse"] },
    { id: "score", title: "D's raw output on real, fake and G's batch", names: ["score/real", "score/fake", "score/fake_g"],
      yTitle: "logit / critic", sigs: ["d_overpowering", "d_not_learning"] },
    { id: "penalty", title: "Gradient penalties (before their weights)", names: ["loss/gp", "loss/r1"], log: true },
    { id: "grad_first", title: "First-layer gradient norm of D and G", log: true, yTitle: "‖g‖",
      pick: (all) => [firstLayer(all, "grad/d/"), firstLayer(all, "grad/g/")].filter(Boolean),
      sigs: ["vanishing_g_grad", "exploding_grad", "poor_init"] },
    { id: "grad_d_heat", title: "D gradient norm per layer (log10)", heat: "grad/d/", sigs: ["exploding_grad"] },
    { id: "grad_g_heat", title: "G gradient norm per layer (log10)", heat: "grad/g/", sigs: ["vanishing_g_grad", "exploding_grad"] },
    // Many series (every layer of both nets): a smaller per-series budget keeps the SVG light.
    { id: "update", title: "Update / weight ratio per layer", prefix: "update/", log: true, points: 400, tall: true,
      yTitle: "‖Δw‖ / ‖w‖" },
    { id: "perf", title: "Throughput", names: ["perf/img_s", "perf/step_s", "perf/eval_s"], y2: ["perf/step_s", "perf/eval_s"],
      yTitle: "images / s", y2Title: "seconds" },
    { id: "diversity", title: "Sample diversity (G's spread / real spread)", names: ["sample/diversity"],
      refs: [{ y: 1, text: "1: as spread as real data" }], sigs: ["mode_collapse"] },
    { id: "toy", title: "Toy set: modes covered (quality on the right)", names: ["toy/modes", "toy/quality"], y2: ["toy/quality"],
      yTitle: "modes", y2Title: "fraction", sigs: ["mode_collapse"] },
    // Log by default: D's and G's rates often differ by orders of magnitude.
    { id: "lr", title: "Learning rates", names: ["lr/d", "lr/g"], log: true },
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
    if (start !== undefined) q.set("start", String(Math.max(0, Math.floor(start))));
    if (end !== undefined) q.set("end", String(Math.max(0, Math.ceil(end))));
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

  const alertDecor = (spec, names, alerts, xmap) => {
    const shapes = [], annotations = [];
    const labelled = new Set();
    for (const a of alerts.slice().reverse()) {
      if (!concerns(spec, names, a)) continue;
      const failing = a.severity === "failing";
      const color = failing ? "208,52,44" : "217,138,0";
      // The evidence's step window when it gives one, else the alert's first..last step.
      const w = a.evidence && Array.isArray(a.evidence.window) && a.evidence.window.length === 2 &&
        a.evidence.window.every(Number.isFinite) ? a.evidence.window : [a.first_step, a.last_step ?? a.first_step];
      const s0 = w[0], s1 = Math.max(w[1], s0);
      const x0 = xmap(s0), x1 = xmap(s1 === s0 ? s0 + 0.5 : s1);
      shapes.push({ type: "rect", name: "alert-" + a.id, xref: "x", yref: "paper", x0, x1,
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

  // Run events (heals): a vertical line at the step training resumed from, on every chart, labelled at
  // the bottom so it never hides an alert's flag at the top.
  const eventDecor = (events, xmap) => {
    const shapes = [], annotations = [];
    for (const e of events || []) {
      if (e.rollback_step === null || e.rollback_step === undefined) continue; // pending: not applied yet
      const x = xmap(e.rollback_step);
      shapes.push({ type: "line", name: "event-" + e.id, xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
        line: { color: "rgb(30,120,80)", width: 2 } });
      annotations.push({ name: "event-" + e.id, x, y: 0, xref: "x", yref: "paper", xanchor: "left", yanchor: "bottom",
        showarrow: false, text: "✚ " + GS.plotText(e.kind + (e.signature ? ": " + e.signature : "")),
        font: { size: 10, color: "rgb(30,120,80)" }, bgcolor: "rgba(255,255,255,.7)" });
    }
    return { shapes, annotations };
  };

  // Dashed reference lines, each labelled at its right end.
  const refDecor = (spec) => {
    const refs = spec.refs || [];
    return {
      shapes: refs.map((r) => ({ type: "line", name: "ref", xref: "paper", x0: 0, x1: 1, y0: r.y, y1: r.y,
        line: { color: "#9aa3b5", width: 1, dash: "dash" } })),
      annotations: refs.map((r) => ({ name: "ref", xref: "paper", x: 1, xanchor: "right", y: r.y, yanchor: "bottom",
        showarrow: false, text: GS.plotText(r.text), font: { size: 10, color: "#6b7385" } })),
    };
  };

  GS.baseLayout = (spec, xm) => ({
    title: { text: spec.title, font: { size: 13 }, x: 0.02 },
    margin: { l: 58, r: spec.y2 ? 58 : 14, t: 30, b: 36 }, height: spec.tall ? 340 : 260,
    xaxis: { title: { text: xm.title, font: { size: 10 }, standoff: 2 }, zeroline: false, type: xm.type },
    yaxis: { type: "linear", zeroline: false, exponentformat: "power", nticks: 6, automargin: true,
      title: spec.yTitle ? { text: spec.yTitle, font: { size: 10 }, standoff: 4 } : undefined },
    legend: { orientation: "h", y: -0.24, font: { size: 10 } }, showlegend: true,
    hovermode: "x unified", uirevision: "keep", paper_bgcolor: "#fff", plot_bgcolor: "#fff",
  });
  GS.plotConfig = (filename) => ({ displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"],
    toImageButtonOptions: { format: "png", filename, scale: 2 } });

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

  // --- base: zoom, x mode, alert drawing and out-of-view drawing shared by both chart kinds ---------
  class Chart {
    constructor(spec, div, ctx) {
      this.spec = spec; this.div = div; this.ctx = ctx; this.names = []; this.zoom = null; this.alerts = []; this.events = [];
      this.lastStep = {}; this.silent = false; this.visible = true; this.stale = false;
    }
    get filename() { return `run-${this.ctx.runId}-${this.spec.id}`; }
    // Step -> x for the page's x mode (step, wall time or time since the first batch).
    get xm() { return GS.xMapper(this.ctx.clock, GS.view.xmode, this.topStep()); }
    topStep() { const s = Object.values(this.lastStep); return s.length ? Math.max(...s) : 0; }
    // Out of view a chart keeps its data and redraws every HIDDEN_REDRAW_MS at most (in view: at once).
    // Skipping those redraws entirely once left charts below the fold frozen at their first points.
    observe() {
      if (!window.IntersectionObserver) return;
      new IntersectionObserver((entries) => {
        for (const e of entries) {
          this.visible = e.isIntersecting;
          if (this.visible && this.stale) { this.stale = false; clearTimeout(this.hiddenTimer); this.hiddenTimer = null; this.refresh(); }
        }
      }, { rootMargin: "150px" }).observe(this.div);
    }
    markStale() {
      this.stale = true;
      if (this.hiddenTimer) return;
      this.hiddenTimer = setTimeout(() => {
        this.hiddenTimer = null;
        if (this.stale) { this.stale = false; this.refresh(); }
      }, GS.HIDDEN_REDRAW_MS);
    }
    // Bring the drawing up to the data held (HeatChart re-queries when it holds too many points).
    refresh() { return this.draw(); }
    hook() {
      this.div.on("plotly_relayout", (ev) => {
        if (this.silent) return;
        if (ev["xaxis.autorange"]) this.setRange(null, true); // autoscale (double click); a resize is no zoom
        else if (ev["xaxis.range[0]"] !== undefined) this.setRange(this.toSteps([ev["xaxis.range[0]"], ev["xaxis.range[1]"]]), true);
        else if (Array.isArray(ev["xaxis.range"])) this.setRange(this.toSteps(ev["xaxis.range"]), true);
      });
    }
    toSteps(range) { const xm = this.xm; return [xm.inverse(range[0]), xm.inverse(range[1])]; }
    // Zoom (a step range): re-query the visible steps at full resolution.
    async setRange(range, fromUser) {
      this.zoom = range;
      if (fromUser && this.ctx.onZoom) this.ctx.onZoom(this, range);
      if (!fromUser) {
        this.silent = true;
        const xm = this.xm;
        try {
          await Plotly.relayout(this.div, range ? { "xaxis.range": range.map(xm.map), "xaxis.autorange": false } : { "xaxis.autorange": true });
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
      const r = refDecor(this.spec);
      const d = alertDecor(this.spec, this.names, this.alerts, this.xm.map);
      const e = eventDecor(this.events, this.xm.map);
      return { shapes: r.shapes.concat(d.shapes, e.shapes), annotations: r.annotations.concat(d.annotations, e.annotations) };
    }
    // The decor a full draw puts on the chart; remembered so setAlerts skips a relayout that changes nothing.
    drawnDecor() {
      const d = this.decor();
      this.decorKey = JSON.stringify(d);
      return d;
    }
    zoomedX(layout) {
      if (this.zoom) layout.xaxis = Object.assign(layout.xaxis, { range: this.zoom.map(this.xm.map), autorange: false });
      return layout;
    }
    setEvents(events) { this.events = events; return this.setAlerts(this.alerts); }
    // A heal rewound the run: points after `step` belong to the abandoned stretch. Drop them, then
    // re-query (the live extend only appends steps after the last one held).
    async rewind(step) {
      for (const store of [this.data, this.raw]) {
        for (const s of Object.values(store || {})) {
          const i = s.steps.findIndex((st) => st > step);
          if (i >= 0) { s.steps.length = i; s.values.length = i; }
        }
      }
      for (const n of Object.keys(this.lastStep)) this.lastStep[n] = Math.min(this.lastStep[n], step);
      await this.reload();
    }
    setAlerts(alerts) {
      this.alerts = alerts;
      if (!this.drawn) return Promise.resolve();
      if (!this.visible) { this.markStale(); return Promise.resolve(); }
      const decor = this.decor();
      const key = JSON.stringify(decor);
      if (key === this.decorKey) return Promise.resolve(); // nothing this chart shows has changed
      this.decorKey = key;
      this.silent = true;
      return Plotly.relayout(this.div, decor).finally(() => { this.silent = false; });
    }
    // The x mode or smoothing changed: same data, drawn afresh (a zoom in steps stays a zoom).
    async redraw() { if (this.drawn) await this.draw(); }
    downloadPng() {
      return Plotly.downloadImage(this.div, { format: "png", filename: this.filename, scale: 2,
        width: this.div.clientWidth || 700, height: this.div.clientHeight || 260 });
    }
  }

  Object.assign(GS, { Chart, withTail });
  GS.makeChart = (spec, div, ctx) => (spec.heat ? new GS.HeatChart(spec, div, ctx) : new GS.LineChart(spec, div, ctx));
  GS.alertMetrics = alertMetrics;
  GS.alertConcerns = concerns;
})();
