// Run page: per-layer gradient heatmaps (layers × steps), drawn with the line charts' zoom and alert handling.
"use strict";
(() => {
  const HEAT_POINTS = 400; // per layer in a heatmap, binned to at most HEAT_COLS columns
  const HEAT_COLS = 300;

  // --- heatmap: layers × steps, log10 of the gradient norm, each cell the bucket's largest value -------
  class HeatChart extends GS.Chart {
    constructor(spec, div, ctx) { super(spec, div, ctx); this.raw = {}; }
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
      let lo = Infinity, hi = -Infinity, most = 0;
      for (const s of Object.values(this.raw)) {
        if (!s.steps.length) continue;
        lo = Math.min(lo, s.steps[0]); hi = Math.max(hi, s.steps[s.steps.length - 1]); most = Math.max(most, s.steps.length);
      }
      if (!Number.isFinite(lo)) return { x: [], z: [] };
      const cols = Math.max(1, Math.min(HEAT_COLS, most));
      const width = Math.max(1, (hi - lo + 1) / cols);
      const x = Array.from({ length: cols }, (_, c) => lo + c * width + (width - 1) / 2); // bin centres
      const z = this.names.map((n) => {
        const row = new Array(cols).fill(null);
        const s = this.raw[n] || { steps: [], values: [] };
        s.steps.forEach((st, i) => {
          const v = s.values[i];
          if (v === null || !(v > 0)) return;
          const c = Math.min(cols - 1, Math.floor((st - lo) / width));
          const lv = Math.log10(v);
          if (row[c] === null || lv > row[c]) row[c] = lv;
        });
        return row;
      });
      return { x, z };
    }
    traces() {
      const { x, z } = this.grid();
      const prefix = this.spec.heat;
      return [{ type: "heatmap", x, y: this.names.map((n) => GS.plotText(n.slice(prefix.length))), z, colorscale: "Viridis",
        hoverongaps: false, colorbar: { title: { text: "log10", side: "right" }, thickness: 10 },
        hovertemplate: "step %{x}<br>layer %{y}<br>log10 ‖g‖ %{z:.2f}<extra></extra>" }];
    }
    layout() {
      const l = Object.assign(GS.baseLayout(this.spec), this.drawnDecor(), { showlegend: false, hovermode: "closest" });
      l.yaxis = { autorange: "reversed", type: "category", tickfont: { size: 9 }, automargin: true };
      if (this.zoom) l.xaxis = Object.assign(l.xaxis, { range: this.zoom, autorange: false });
      return l;
    }
    async draw() {
      this.silent = true;
      try { await Plotly.react(this.div, this.traces(), this.layout(), GS.PLOT_CONFIG); } finally { this.silent = false; }
      if (!this.drawn) { this.drawn = true; this.hook(); this.observe(); }
    }
    async reload() {
      this.setSeries(await GS.fetchMetrics(this.ctx.runId, this.names, this.fetchOpts(HEAT_POINTS)));
      await this.draw();
    }
    async addNames(names) {
      const fresh = names.filter((n) => !this.names.includes(n));
      if (!fresh.length) return;
      this.names = GS.layerOrder(this.names.concat(fresh));
      this.redrawSoon();
    }
    // A heatmap cannot be extended column-wise in place: points are appended and the grid re-binned, at most once a second.
    extend(metrics) {
      let top = null;
      for (const n of this.names) {
        const src = metrics[n];
        if (!src || !src.steps.length) continue;
        const s = this.raw[n] || (this.raw[n] = { steps: [], values: [] });
        const last = this.lastStep[n] ?? -Infinity;
        src.steps.forEach((st, k) => { if (st > last) { s.steps.push(st); s.values.push(src.values[k]); } });
        if (s.steps.length) { this.lastStep[n] = s.steps[s.steps.length - 1]; top = Math.max(top ?? -Infinity, this.lastStep[n]); }
      }
      if (top !== null) { if (this.visible) this.redrawSoon(); else this.stale = true; }
      return top;
    }
    redrawSoon() {
      if (this.redrawTimer) return;
      // A re-binned heatmap is a full redraw: every 2 s is plenty for a picture of thousands of steps.
      this.redrawTimer = setTimeout(() => {
        this.redrawTimer = null;
        if (Object.values(this.raw).some((s) => s.steps.length > 2 * HEAT_POINTS) && !this.zoom) this.reload();
        else this.draw();
      }, 2000);
    }
    pointCount() { return Object.values(this.raw).reduce((a, s) => a + s.steps.length, 0); }
  }

  GS.HeatChart = HeatChart;
})();
