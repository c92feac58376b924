// Run page: per-layer gradient heatmaps (layers × steps), drawn with the line charts' zoom and alert handling.
"use strict";
(() => {
  const HEAT_POINTS = 400; // per layer in the overview (the server keeps each bucket's first, min, max, last)
  const HEAT_COLS = 300; // most columns drawn; fewer when the range holds fewer distinct steps

  // Columns of a heatmap: at most HEAT_COLS equal step bins over [lo, hi], each cell the bin's largest
  // log10 value. Bins no point fell in are left out rather than drawn blank: Plotly stretches the
  // neighbouring cells over them (cell edges sit halfway between column positions), so downsampled or
  // every-k-th-step data draws as a continuous picture, not a barcode of white stripes.
  GS.heatGrid = (names, raw, lo, hi) => {
    let distinct = 0;
    for (const n of names) {
      const s = raw[n];
      if (!s) continue;
      let c = 0;
      for (const st of s.steps) if (st >= lo && st <= hi) c++;
      distinct = Math.max(distinct, c);
    }
    if (!distinct || !(hi >= lo)) return { steps: [], z: names.map(() => []), top: -1 };
    const cols = Math.max(1, Math.min(HEAT_COLS, distinct));
    const width = Math.max(1, (hi - lo + 1) / cols);
    const z = names.map(() => new Array(cols).fill(null));
    const used = new Array(cols).fill(false);
    let top = -1;
    names.forEach((n, r) => {
      const s = raw[n] || { steps: [], values: [] };
      s.steps.forEach((st, i) => {
        if (st < lo || st > hi) return;
        top = Math.max(top, st);
        const v = s.values[i];
        if (v === null || !(v > 0)) return;
        const c = Math.min(cols - 1, Math.floor((st - lo) / width));
        const lv = Math.log10(v);
        if (z[r][c] === null || lv > z[r][c]) z[r][c] = lv;
        used[c] = true;
      });
    });
    const keep = used.map((u, c) => (u ? c : -1)).filter((c) => c >= 0);
    return { steps: keep.map((c) => lo + c * width + (width - 1) / 2), z: z.map((row) => keep.map((c) => row[c])), top };
  };

  class HeatChart extends GS.Chart {
    constructor(spec, div, ctx) { super(spec, div, ctx); this.raw = {}; this.drawnTop = -1; }
    setSeries(metrics) {
      const old = this.raw;
      this.raw = {};
      for (const n of this.names) {
        const s = GS.withTail(metrics[n], old[n], !this.zoom);
        this.raw[n] = { steps: s.steps.slice(), values: s.values.slice() };
        if (s.steps.length) this.lastStep[n] = Math.max(this.lastStep[n] ?? -Infinity, s.steps[s.steps.length - 1]);
      }
    }
    grid() {
      let lo = Infinity, hi = -Infinity;
      for (const s of Object.values(this.raw)) {
        if (!s.steps.length) continue;
        lo = Math.min(lo, s.steps[0]); hi = Math.max(hi, s.steps[s.steps.length - 1]);
      }
      // Zoomed: the visible steps only (live points past the range do not coarsen the zoomed picture).
      if (this.zoom) { lo = Math.max(lo, Math.ceil(this.zoom[0])); hi = Math.min(hi, Math.floor(this.zoom[1])); }
      return GS.heatGrid(this.names, this.raw, lo, hi);
    }
    traces() {
      const g = this.grid();
      this.drawnTop = g.top;
      const prefix = this.spec.heat;
      const xm = this.xm;
      return [{ type: "heatmap", x: g.steps.map(xm.map), y: this.names.map((n) => GS.plotText(n.slice(prefix.length))), z: g.z,
        customdata: this.names.map(() => g.steps.map((s) => Math.round(s))),
        colorscale: "Viridis", hoverongaps: false, colorbar: { title: { text: "log10", side: "right" }, thickness: 10 },
        hovertemplate: "step ≈ %{customdata}<br>layer %{y}<br>log10 ‖g‖ %{z:.2f}<extra></extra>" }];
    }
    layout() {
      const l = Object.assign(GS.baseLayout(this.spec, this.xm), this.drawnDecor(), { showlegend: false, hovermode: "closest" });
      l.yaxis = { autorange: "reversed", type: "category", tickfont: { size: 9 }, automargin: true };
      return this.zoomedX(l);
    }
    async draw() {
      this.silent = true;
      try { await Plotly.react(this.div, this.traces(), this.layout(), GS.plotConfig(this.filename)); } finally { this.silent = false; }
      if (!this.drawn) { this.drawn = true; this.hook(); this.observe(); }
    }
    get budget() { return this.zoom ? GS.ZOOM_POINTS : HEAT_POINTS; }
    async reload() {
      this.setSeries(await GS.fetchMetrics(this.ctx.runId, this.names, this.fetchOpts(this.budget)));
      await this.draw();
    }
    async addNames(names) {
      const fresh = names.filter((n) => !this.names.includes(n));
      if (!fresh.length) return;
      this.names = GS.layerOrder(this.names.concat(fresh));
      this.redrawSoon();
    }
    // A heatmap cannot be extended column-wise in place: points are appended and the grid re-binned.
    extend(metrics) {
      let top = null;
      for (const n of this.names) {
        const src = metrics[n];
        if (!src || !src.steps.length) continue;
        const s = this.raw[n] || (this.raw[n] = { steps: [], values: [] });
        const last = this.lastStep[n] ?? -Infinity;
        const i0 = src.steps.findIndex((st) => st > last);
        if (i0 >= 0) {
          const d = GS.decimate(src.steps.slice(i0), src.values.slice(i0), GS.EXTEND_MAX);
          s.steps.push(...d.steps); s.values.push(...d.values);
        }
        if (s.steps.length) { this.lastStep[n] = s.steps[s.steps.length - 1]; top = Math.max(top ?? -Infinity, this.lastStep[n]); }
      }
      if (top !== null && this.drawn) { if (this.visible) this.redrawSoon(); else this.markStale(); }
      return top;
    }
    redrawSoon() {
      if (this.redrawTimer) return;
      // A re-binned heatmap is a full redraw: every 2 s is plenty for a picture of thousands of steps.
      this.redrawTimer = setTimeout(() => { this.redrawTimer = null; this.refresh(); }, 2000);
    }
    refresh() {
      if (!this.zoom && Object.values(this.raw).some((s) => s.steps.length > 2 * HEAT_POINTS)) return this.reload();
      return this.draw();
    }
    pointCount() { return Object.values(this.raw).reduce((a, s) => a + s.steps.length, 0); }
    drawnStep() { return this.drawnTop; }
  }

  GS.HeatChart = HeatChart;
})();
