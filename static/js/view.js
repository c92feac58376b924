// What every line chart shares: the view settings (smoothing, x axis) kept in localStorage, the EMA
// smoothing TensorBoard users know, and the run clock that places steps in time.
"use strict";
(() => {
  const PREFS = "ganscope.view";
  const saved = (() => { try { return JSON.parse(localStorage.getItem(PREFS) || "{}"); } catch (_) { return {}; } })();

  // smoothing: the EMA weight in [0, 0.99] (0 = raw only); xmode: step | wall | relative; log: {chartId: bool}.
  GS.view = {
    // Off until asked for (as W&B): a smoothed copy of every series doubles what a chart draws, and
    // opening a million-step run must stay under two seconds.
    smoothing: Number.isFinite(saved.smoothing) ? Math.min(0.99, Math.max(0, saved.smoothing)) : 0,
    xmode: ["step", "wall", "relative"].includes(saved.xmode) ? saved.xmode : "step",
    log: saved.log && typeof saved.log === "object" ? saved.log : {},
    hiddenNets: saved.hiddenNets && typeof saved.hiddenNets === "object" ? saved.hiddenNets : {},
    listeners: [],
  };
  GS.saveView = () => {
    const { smoothing, xmode, log, hiddenNets } = GS.view;
    localStorage.setItem(PREFS, JSON.stringify({ smoothing, xmode, log, hiddenNets }));
  };
  GS.onViewChange = (fn) => GS.view.listeners.push(fn);
  GS.setView = (changes) => {
    Object.assign(GS.view, changes);
    GS.saveView();
    GS.view.listeners.forEach((fn) => fn(changes));
  };

  // Exponential moving average with TensorBoard's debiasing (the first points are not pulled to 0).
  // `state` carries {last, weight} across calls so live points continue the same curve.
  GS.ema = (values, w, state = { last: 0, weight: 0 }) => {
    const out = new Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null || v === undefined || !Number.isFinite(v)) { out[i] = null; continue; }
      state.last = state.last * w + (1 - w) * v;
      state.weight = state.weight * w + (1 - w);
      out[i] = state.last / state.weight;
    }
    return out;
  };

  // The run clock: (step, server time) pairs from /api/runs/{id}/clock, extended by each live batch's
  // time. Steps between pairs are placed linearly; past the ends, at the nearest pair's rate.
  GS.Clock = class {
    constructor(runId) { this.runId = runId; this.steps = []; this.ms = []; }
    async load() {
      const body = await GS.api(`/api/runs/${this.runId}/clock`);
      this.steps = (body && body.steps) || [];
      this.ms = ((body && body.t) || []).map((t) => t * 1000);
      return this;
    }
    add(step, tSeconds) {
      if (!Number.isFinite(step) || !Number.isFinite(tSeconds)) return;
      const n = this.steps.length;
      if (n && step <= this.steps[n - 1]) return;
      this.steps.push(step); this.ms.push(tSeconds * 1000);
    }
    get known() { return this.steps.length > 0; }
    // When step 0 was (or would have been) taken in: relative time counts from there.
    get startMs() { return this.ms.length ? Math.min(this.ms[0], this.at(0)) : 0; }
    // Milliseconds since the epoch at which `step` was taken in.
    at(step) {
      const s = this.steps, t = this.ms, n = s.length;
      if (!n) return null;
      if (n === 1) return t[0];
      let i;
      if (step <= s[0]) i = 1;
      else if (step >= s[n - 1]) i = n - 1;
      else { let lo = 0, hi = n - 1; while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (s[mid] <= step) lo = mid; else hi = mid; } i = hi; }
      const rate = (t[i] - t[i - 1]) / Math.max(1, s[i] - s[i - 1]);
      const base = step <= s[0] ? 0 : step >= s[n - 1] ? n - 1 : i - 1;
      return t[base] + (step - s[base]) * rate;
    }
    // The step taken in at `ms` (inverse of at(); zoomed time ranges re-query by step).
    stepAt(ms) {
      const s = this.steps, t = this.ms, n = s.length;
      if (!n) return null;
      if (n === 1) return s[0];
      let i = 1;
      while (i < n - 1 && t[i] < ms) i++;
      const rate = (s[i] - s[i - 1]) / Math.max(1e-9, t[i] - t[i - 1]);
      return s[i - 1] + (ms - t[i - 1]) * rate;
    }
  };

  // Relative time's unit, picked once per draw from the run's span.
  GS.relUnit = (spanMs) => (spanMs < 120e3 ? { div: 1e3, name: "seconds" } : spanMs < 7200e3
    ? { div: 60e3, name: "minutes" } : { div: 3600e3, name: "hours" });

  // Step -> x for the current x mode. clock may be missing (compare page before it loads): steps then.
  GS.xMapper = (clock, xmode, spanEndStep) => {
    if (xmode === "step" || !clock || !clock.known) return { map: (s) => s, title: "step", type: "linear", inverse: (x) => x };
    if (xmode === "wall") {
      // Plotly shows a date axis's milliseconds as UTC: shift them so the axis reads local time.
      const shift = new Date().getTimezoneOffset() * 60e3;
      const parse = (x) => (typeof x === "number" ? x : Date.parse(String(x).replace(" ", "T") + "Z"));
      return { map: (s) => clock.at(s) - shift, title: "wall time", type: "date",
        inverse: (x) => clock.stepAt(parse(x) + shift) };
    }
    const t0 = clock.startMs;
    const unit = GS.relUnit((clock.at(spanEndStep ?? clock.steps[clock.steps.length - 1]) || t0) - t0);
    return { map: (s) => (clock.at(s) - t0) / unit.div, title: "time since step 0 (" + unit.name + ")",
      type: "linear", inverse: (x) => clock.stepAt(t0 + x * unit.div), unit };
  };
})();
