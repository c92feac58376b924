// Line charts: one raw trace per metric (faint when smoothing is on) plus its EMA-smoothed trace, a
// red-x trace for non-finite points, legends grouped by net with distinct colours, log y on demand.
// Live points are appended with Plotly.extendTraces (no redraw).
"use strict";
(() => {
  const COLORS = ["#2f6fdf", "#d0342c", "#1f9d55", "#9b51e0", "#d98a00", "#0fa3b1", "#7a5c3e", "#e05297", "#5d6d7e"];
  // Per net, hues of one family: D warm, G cool; no colour repeats within a chart of up to 10 layers a net.
  const NET_COLORS = {
    d: ["#d0342c", "#e8702a", "#b8860b", "#8c1c13", "#e05297", "#f29e4c", "#a0522d", "#b5179e", "#ff5a5f", "#6d2e46"],
    g: ["#2f6fdf", "#0fa3b1", "#1f9d55", "#5d3fd3", "#00b4d8", "#2a9d8f", "#4361ee", "#0b6e4f", "#7209b7", "#264653"],
  };
  const NET_TITLES = { d: "D (discriminator)", g: "G (generator)" };
  const isBad = (v) => v === null || v === undefined || (typeof v === "number" && !Number.isFinite(v));

  class LineChart extends GS.Chart {
    constructor(spec, div, ctx) {
      super(spec, div, ctx);
      this.data = {}; this.bad = { steps: [], y: [], text: [] }; this.emaState = {}; this.flat = {};
    }
    get logY() { return GS.view.log[this.spec.id] ?? Boolean(this.spec.log); }
    // "d" or "g" for per-layer metrics (grad/d/conv1, update/g/convT2), else null.
    static netOf(name) { const m = /^[a-z]+\/([dg])\//.exec(name); return m ? m[1] : null; }
    get nets() { return [...new Set(this.names.map(LineChart.netOf).filter(Boolean))]; }
    get grouped() { return Boolean(this.spec.prefix) && this.nets.length > 0; }
    hiddenNets() { return GS.view.hiddenNets[this.spec.id] || []; }
    color(n, i) {
      const net = LineChart.netOf(n);
      if (!net || !this.spec.prefix && !this.spec.pick) return COLORS[i % COLORS.length];
      if (this.spec.pick) return NET_COLORS[net][0];
      const k = this.names.filter((x) => LineChart.netOf(x) === net).indexOf(n);
      return NET_COLORS[net][k % NET_COLORS[net].length];
    }
    static lastFinite(series) {
      for (let i = series.values.length - 1; i >= 0; i--) if (!isBad(series.values[i])) return series.values[i];
      return null;
    }
    badPoint(name, step, series) {
      // A non-finite value is drawn as a red x where the series was last seen, never dropped.
      let y = LineChart.lastFinite(series);
      if (y === null || (this.logY && y <= 0)) y = this.logY ? 1 : 0;
      this.bad.steps.push(step); this.bad.y.push(y); this.bad.text.push(GS.plotText(name) + " non-finite at step " + step);
    }
    setSeries(metrics) {
      const old = this.data;
      this.data = {}; this.bad = { steps: [], y: [], text: [] };
      for (const n of this.names) {
        const src = GS.withTail(metrics[n], old[n], !this.zoom);
        const s = { steps: [], values: [] };
        src.steps.forEach((st, i) => {
          const v = src.values[i];
          s.steps.push(st); s.values.push(v);
          if (isBad(v)) this.badPoint(n, st, s);
        });
        this.data[n] = s;
        if (s.steps.length) this.lastStep[n] = Math.max(this.lastStep[n] ?? -Infinity, s.steps[s.steps.length - 1]);
      }
    }
    // Right axis for the spec's y2 metrics, unless nothing is left for the left one (perf/step_s alone).
    axisOf(n) {
      const y2 = this.spec.y2 || [];
      return y2.includes(n) && this.names.some((m) => !y2.includes(m)) ? "y2" : "y";
    }
    get usesY2() { return this.names.some((n) => this.axisOf(n) === "y2"); }
    visibility(n) {
      if (this.hiddenNets().includes(LineChart.netOf(n))) return "legendonly";
      // Norm-layer update ratios start hidden (one click in the legend shows them): conv/fc layers are the signal.
      return this.spec.prefix && /\/(bn|norm)\w*$/.test(n) ? "legendonly" : true;
    }
    // Trace order: 0 non-finite markers, 1..N raw series, N+1..2N smoothed series (when smoothing is on).
    traces() {
      const xm = this.xm, w = GS.view.smoothing;
      // Plotly keeps the arrays it is given and extendTraces appends to them: hand it copies.
      const out = [{ name: "non-finite", x: this.bad.steps.map(xm.map), y: this.bad.y.slice(), text: this.bad.text.slice(),
        mode: "markers", type: "scatter", hoverinfo: "text", showlegend: this.bad.steps.length > 0,
        marker: { symbol: "x-thin-open", size: 11, color: "#d0342c", line: { width: 2.5, color: "#d0342c" } } }];
      this.names.forEach((n, i) => out.push(this.trace(n, i, xm, w > 0 ? "raw" : "only")));
      if (w > 0) this.names.forEach((n, i) => out.push(this.trace(n, i, xm, "smooth")));
      return out;
    }
    trace(n, i, xm, role) {
      const s = this.data[n] || { steps: [], values: [] };
      const net = LineChart.netOf(n);
      let y = s.values.slice();
      if (role === "smooth") { this.emaState[n] = { last: 0, weight: 0 }; y = GS.ema(s.values, GS.view.smoothing, this.emaState[n]); }
      const t = { name: GS.plotText(n) + (role === "raw" ? " (raw)" : ""), x: s.steps.map(xm.map), y, mode: "lines",
        type: "scatter", connectgaps: false, visible: this.visibility(n), meta: n,
        line: { width: role === "raw" ? 1 : 1.5, color: this.color(n, i), dash: /\/(bn|norm)\w*$/.test(n) ? "dot" : "solid" },
        opacity: role === "raw" ? 0.3 : 1, showlegend: role !== "raw", hoverinfo: role === "raw" ? "skip" : undefined,
        yaxis: this.axisOf(n) };
      if (this.grouped && net) {
        t.legendgroup = net;
        if (role !== "raw") t.legendgrouptitle = { text: NET_TITLES[net], font: { size: 10 } };
      }
      return t;
    }
    // A constant series (a fixed learning rate) gets a range around its value: Plotly's own is ±1,
    // which drew 2e-4 as a flat line at 0.
    flatRanges() {
      const out = {};
      for (const axis of ["y", "y2"]) {
        let lo = Infinity, hi = -Infinity;
        for (const n of this.names) {
          if (this.axisOf(n) !== axis || this.visibility(n) !== true) continue;
          for (const v of (this.data[n] || { values: [] }).values) if (!isBad(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
        }
        this.flat[axis] = Number.isFinite(lo) && lo === hi ? lo : null;
        const c = this.flat[axis];
        if (c === null) continue;
        const log = axis === "y" && this.logY;
        out[axis] = log && c > 0 ? [Math.log10(c) - 0.5, Math.log10(c) + 0.5]
          : [c - (Math.abs(c) * 0.1 || 1), c + (Math.abs(c) * 0.1 || 1)];
      }
      return out;
    }
    // Log axes label decades only once the data spans a few (Plotly's 2- and 5- labels overlapped on a
    // 260-px chart), and 1-2-5 in between.
    logTicks() {
      let lo = Infinity, hi = -Infinity;
      for (const n of this.names) {
        if (this.axisOf(n) !== "y" || this.visibility(n) !== true) continue;
        for (const v of (this.data[n] || { values: [] }).values) if (v > 0 && Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
      }
      if (!Number.isFinite(lo)) return {};
      const decades = Math.log10(hi / lo); // a flat series is drawn over one decade: 1-2-5 labels
      return { dtick: decades >= 1.5 ? 1 : "D2", nticks: undefined };
    }
    layout() {
      const xm = this.xm;
      const l = Object.assign(GS.baseLayout(this.spec, xm), this.drawnDecor());
      l.yaxis.type = this.logY ? "log" : "linear";
      if (this.logY) Object.assign(l.yaxis, this.logTicks());
      if (!this.usesY2 && this.spec.y2 && this.names.every((n) => this.spec.y2.includes(n)) && this.spec.y2Title) {
        l.yaxis.title = { text: this.spec.y2Title, font: { size: 10 }, standoff: 4 };
      }
      if (!this.usesY2) l.margin.r = 14;
      // tickmode auto: Plotly's default for an overlaying axis syncs its ticks to the left axis's grid,
      // which labelled s/step at 1.53, 3.06, ...
      if (this.usesY2) l.yaxis2 = { overlaying: "y", side: "right", zeroline: false, showgrid: false, nticks: 5, tickmode: "auto",
        exponentformat: "power", tickformat: "~g", rangemode: "tozero", automargin: true,
        title: this.spec.y2Title ? { text: this.spec.y2Title, font: { size: 10 }, standoff: 4 } : undefined };
      const flat = this.flatRanges();
      if (flat.y) Object.assign(l.yaxis, { range: flat.y, autorange: false });
      if (flat.y2) Object.assign(l.yaxis2, { range: flat.y2, autorange: false });
      if (this.grouped) {
        Object.assign(l.legend, { orientation: "v", x: 1.02, y: 1, font: { size: 10 }, groupclick: "toggleitem",
          tracegroupgap: 6 });
        l.margin.r = 10;
      }
      return this.zoomedX(l);
    }
    async draw() {
      this.silent = true;
      const first = !this.drawn;
      try {
        await (first ? Plotly.newPlot(this.div, this.traces(), this.layout(), GS.plotConfig(this.filename))
          : Plotly.react(this.div, this.traces(), this.layout(), GS.plotConfig(this.filename)));
      } finally { this.silent = false; }
      if (first) { this.drawn = true; this.hook(); this.hookLegend(); this.observe(); }
    }
    // A legend click hides or shows a metric's raw and smoothed traces together.
    hookLegend() {
      this.div.on("plotly_legendclick", (ev) => {
        const meta = ev.data[ev.curveNumber] && ev.data[ev.curveNumber].meta;
        if (!meta) return true;
        const idx = ev.data.map((t, k) => (t.meta === meta ? k : -1)).filter((k) => k >= 0);
        const vis = ev.data[ev.curveNumber].visible === true ? "legendonly" : true;
        Plotly.restyle(this.div, { visible: vis }, idx);
        return false;
      });
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
      if (this.drawn) { if (this.visible) await this.draw(); else this.markStale(); }
    }
    // Live points: append what is newer than the last step held, with one extendTraces call.
    extend(metrics) {
      const xs = [], ys = [], idx = [];
      const badBefore = this.bad.steps.length;
      const w = GS.view.smoothing, xm = this.xm, n = this.names.length;
      let top = null, flatBroken = false;
      this.names.forEach((name, i) => {
        const src = metrics[name];
        if (!src || !src.steps.length) return;
        const s = this.data[name] || (this.data[name] = { steps: [], values: [] });
        const last = this.lastStep[name] ?? -Infinity;
        const i0 = src.steps.findIndex((st) => st > last); // the rest is already held (catch-up overlaps the stream)
        if (i0 < 0) return;
        const { steps, values } = GS.decimate(src.steps.slice(i0), src.values.slice(i0), GS.EXTEND_MAX);
        const vals = values.map((v) => v ?? null);
        const f = this.flat[this.axisOf(name)];
        steps.forEach((st, k) => {
          const v = vals[k];
          if (isBad(v)) this.badPoint(name, st, s);
          s.steps.push(st); s.values.push(v);
          if (f !== undefined && f !== null && !isBad(v) && v !== f) flatBroken = true;
        });
        this.lastStep[name] = steps[steps.length - 1];
        top = Math.max(top ?? -Infinity, steps[steps.length - 1]);
        const x = steps.map(xm.map);
        xs.push(x); ys.push(vals); idx.push(i + 1);
        if (w > 0) { xs.push(x); ys.push(GS.ema(vals, w, this.emaState[name] || (this.emaState[name] = { last: 0, weight: 0 }))); idx.push(n + i + 1); }
      });
      if (!idx.length || !this.drawn) return top;
      // Past the overview budget, fetch a fresh downsampled overview instead of growing.
      if (!this.zoom && Object.values(this.data).some((s) => s.steps.length > 1.5 * this.budget)) this.reloadSoon();
      if (!this.visible) { this.markStale(); return top; }
      if (flatBroken) { this.draw(); return top; } // a constant series stopped being one: ranges afresh
      if (this.bad.steps.length > badBefore) {
        Plotly.restyle(this.div, { showlegend: true, text: [this.bad.text.slice()] }, [0]);
        xs.push(this.bad.steps.slice(badBefore).map(xm.map)); ys.push(this.bad.y.slice(badBefore)); idx.push(0);
      }
      Plotly.extendTraces(this.div, { x: xs, y: ys }, idx);
      return top;
    }
    reloadSoon() {
      if (this.reloadTimer) return;
      this.reloadTimer = setTimeout(() => { this.reloadTimer = null; this.reload(); }, 2000);
    }
    setLog(on) { GS.view.log[this.spec.id] = on; GS.saveView(); return this.draw(); }
    setNetHidden(net, hidden) {
      const now = new Set(this.hiddenNets());
      if (hidden) now.add(net); else now.delete(net);
      GS.view.hiddenNets[this.spec.id] = [...now];
      GS.saveView();
      return this.draw();
    }
    pointCount() { return Object.values(this.data).reduce((a, s) => a + s.steps.length, 0); }
    // The last step Plotly shows (for tests and the live benchmark): the raw traces' largest x as a step.
    drawnStep() {
      if (!this.div.data) return -1;
      let best = -1;
      this.names.forEach((n, i) => {
        const t = this.div.data[i + 1];
        if (t && t.x && t.x.length && (this.data[n] || {}).steps) best = Math.max(best, this.data[n].steps[t.x.length - 1] ?? -1);
      });
      return best;
    }
  }

  GS.LineChart = LineChart;
})();
