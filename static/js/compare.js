// Compare: chosen metrics of two or more runs overlaid (one chart per metric, one trace per run), their
// alerts side by side, and their configs with the differing knobs highlighted. Quality charts come
// first and alerts sit beside them, so a healthy and a failing run differ at a glance. State lives in the URL.
"use strict";
(() => {
  const { el, api } = GS;
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const params = new URLSearchParams(location.search);
  const ids = boot.ids || [];
  const COLORS = ["#2f6fdf", "#d0342c", "#1f9d55", "#9b51e0", "#d98a00", "#0fa3b1", "#7a5c3e", "#e05297"];
  // What tells runs apart first: quality, then the classic signals.
  const DEFAULT_METRICS = ["quality/fid", "toy/fit", "quality/recall", "quality/modes", "loss/d", "loss/g",
    "pred/real", "pred/fake", "score/real", "score/fake", "sample/diversity", "toy/modes"];
  const MAX_DEFAULT = 8;
  let runs = [];
  let chosen = [];
  const clocks = new Map(); // run id -> GS.Clock (relative time)
  const charts = [];

  const label = (r) => "#" + r.id + " " + (r.name || "(unnamed)");
  const color = (i) => COLORS[i % COLORS.length];

  const saveUrl = () => {
    const q = new URLSearchParams({ ids: ids.join(",") });
    if (chosen.length) q.set("metrics", chosen.join(","));
    history.replaceState(null, "", "/compare?" + q);
  };

  // Run picker (pre-ticked with the ids in the URL; folded away once two or more are chosen).
  const loadPicker = async () => {
    const body = await api("/api/runs?limit=200&archived=include");
    const box = document.getElementById("run-picker");
    box.replaceChildren(...GS.runsFrom(body).map((r) => {
      const cb = el("input", { type: "checkbox", value: String(r.id) });
      cb.checked = ids.includes(r.id);
      return el("label", {}, cb, " ", label(r));
    }));
  };
  document.getElementById("apply-runs").addEventListener("click", () => {
    const picked = [...document.querySelectorAll("#run-picker input:checked")].map((c) => c.value);
    location.href = "/compare?ids=" + picked.join(",");
  });

  const renderStrip = () => {
    document.getElementById("run-strip").replaceChildren(...runs.map((r, i) => el("span", { class: "run-chip", "data-id": r.id },
      el("span", { class: "swatch", style: "background:" + color(i) }),
      el("a", { href: "/runs/" + r.id, text: label(r) }), " ", GS.badge(r.status), " ", GS.healthBadge(r), " ",
      GS.learningBadge(r))));
  };

  const renderPicker = (names) => {
    const box = document.getElementById("metric-picker");
    box.replaceChildren(...names.map((n) => {
      const cb = el("input", { type: "checkbox", value: n });
      cb.checked = chosen.includes(n);
      cb.addEventListener("change", () => {
        chosen = [...box.querySelectorAll("input:checked")].map((c) => c.value);
        saveUrl();
        drawCharts();
      });
      return el("label", { class: "mono" }, cb, " ", n);
    }));
  };

  // One metric across runs: a faint raw trace and a smoothed one per run; log y, PNG, x in steps or time.
  class CompareChart {
    constructor(name, div, data) {
      this.name = name; this.div = div; this.data = data; this.spec = { id: "cmp-" + name.replace(/\W+/g, "_") };
    }
    get logY() { return GS.view.log[this.spec.id] ?? /^(grad|update)\//.test(this.name); }
    setLog(on) { GS.view.log[this.spec.id] = on; GS.saveView(); return this.draw(); }
    get grouped() { return false; }
    get nets() { return []; }
    xmap(r) {
      const clock = clocks.get(r.id);
      if (GS.view.xmode !== "relative" || !clock || !clock.known) return (s) => s;
      return (s) => (clock.at(s) - clock.startMs) / 60e3;
    }
    traces() {
      const out = [], bad = { x: [], y: [], text: [] }, w = GS.view.smoothing;
      runs.forEach((r, i) => {
        const s = this.data[i][this.name] || { steps: [], values: [] };
        const xm = this.xmap(r), x = s.steps.map(xm);
        let lastY = 0;
        s.steps.forEach((st, k) => {
          const v = s.values[k];
          if (v === null) { bad.x.push(x[k]); bad.y.push(lastY); bad.text.push(GS.plotText(label(r)) + ": non-finite at step " + st); }
          else lastY = v;
        });
        const common = { type: "scatter", mode: "lines", connectgaps: false, legendgroup: "run" + r.id, meta: r.id };
        out.push({ ...common, name: GS.plotText(label(r)) + (w > 0 ? " (raw)" : ""), x, y: s.values, showlegend: w === 0,
          opacity: w > 0 ? 0.3 : 1, hoverinfo: w > 0 ? "skip" : undefined, line: { width: w > 0 ? 1 : 1.4, color: color(i) } });
        if (w > 0) out.push({ ...common, name: GS.plotText(label(r)), x, y: GS.ema(s.values, w), line: { width: 1.6, color: color(i) } });
      });
      if (bad.x.length) out.push({ name: "non-finite", x: bad.x, y: bad.y, text: bad.text, hoverinfo: "text", mode: "markers",
        type: "scatter", marker: { symbol: "x-thin-open", size: 11, color: "#d0342c", line: { width: 2.5, color: "#d0342c" } } });
      return out;
    }
    async draw() {
      const rel = GS.view.xmode === "relative" && runs.every((r) => clocks.get(r.id) && clocks.get(r.id).known);
      await Plotly.react(this.div, this.traces(), {
        title: { text: GS.plotText(this.name), font: { size: 13 }, x: 0.02 }, height: 260, margin: { l: 58, r: 14, t: 30, b: 36 },
        xaxis: { title: { text: rel ? "minutes since each run's step 0" : "step", font: { size: 10 } } },
        yaxis: { type: this.logY ? "log" : "linear", exponentformat: "power", automargin: true,
          title: { text: GS.unitOf(this.name), font: { size: 10 } } },
        legend: { orientation: "h", y: -0.24, font: { size: 10 } }, hovermode: "x unified",
      }, GS.plotConfig("compare-" + this.spec.id));
    }
    downloadPng() {
      return Plotly.downloadImage(this.div, { format: "png", filename: "compare-" + this.spec.id, scale: 2,
        width: this.div.clientWidth || 700, height: 260 });
    }
  }

  const drawCharts = async () => {
    const host = document.getElementById("compare-charts");
    host.replaceChildren();
    charts.length = 0;
    const data = await Promise.all(runs.map((r) => GS.fetchMetrics(r.id, chosen).catch(() => ({}))));
    for (const name of chosen) {
      const div = el("div", { class: "plot" });
      const wrapper = el("div", { class: "chart", "data-metric": name }, div);
      host.appendChild(wrapper);
      const chart = new CompareChart(name, div, data);
      charts.push(chart);
      await chart.draw();
      GS.chartTools(chart, wrapper);
    }
    window.ganscope.ready = true;
  };

  const renderAlerts = (lists) => {
    const all = runs.flatMap((r, i) => (lists[i] || []).map((a) => ({ a, r })));
    const open = all.filter(({ a }) => a.status !== "closed").length;
    document.getElementById("alerts-panel").hidden = false;
    document.getElementById("alert-count").textContent = all.length ? `${open} open, ${all.length} in all` : "";
    const box = document.getElementById("compare-alerts");
    box.replaceChildren(...runs.map((r, i) => {
      const mine = (lists[i] || []).slice().reverse().sort((a, b) => (a.status === "closed") - (b.status === "closed"));
      return el("div", { class: "run-alerts", "data-id": r.id },
        el("h3", {}, el("span", { class: "swatch", style: "background:" + color(i) }), label(r)),
        mine.length ? mine.map((a) => GS.alertCard(a, { defaults: r.config,
          onRelaunch: (fix, sig) => {
            const q = new URLSearchParams({ from: String(r.id), config: JSON.stringify(r.config || {}), remedy: JSON.stringify(fix), alert: sig });
            location.href = "/launch?" + q;
          } })) : el("p", { class: "muted", text: "No alerts." }));
    }));
  };

  const renderDiff = () => {
    const keys = [...new Set(runs.flatMap((r) => Object.keys(r.config || {})))];
    const onlyDiff = document.getElementById("only-diff").checked;
    const table = document.getElementById("config-diff");
    const head = el("tr", {}, el("th", { text: "knob" }), runs.map((r, i) =>
      el("th", { style: "color:" + color(i) }, el("a", { href: "/runs/" + r.id, text: label(r) }))));
    const rows = keys.map((k) => {
      const vals = runs.map((r) => GS.fmtValue((r.config || {})[k] ?? null));
      const differs = new Set(vals).size > 1;
      if (onlyDiff && !differs) return null;
      return el("tr", { class: differs ? "differs" : "", "data-knob": k }, el("td", { class: "mono", text: k }),
        vals.map((v) => el("td", { class: "mono", text: v })));
    }).filter(Boolean);
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
  };
  document.getElementById("only-diff").addEventListener("change", renderDiff);

  const main = async () => {
    GS.viewBar(document.getElementById("viewbar"), ["step", "relative"]);
    GS.onViewChange(() => charts.forEach((c) => c.draw().then(() => c.renderTools && c.renderTools())));
    await loadPicker();
    if (ids.length < 1) { window.ganscope.ready = true; return; }
    runs = (await Promise.all(ids.map((id) => api("/api/runs/" + id).catch(() => null)))).filter(Boolean);
    const [alertLists] = await Promise.all([
      Promise.all(runs.map((r) => api(`/api/runs/${r.id}/alerts`).then((b) => b.alerts || []).catch(() => []))),
      Promise.all(runs.map((r) => new GS.Clock(r.id).load().then((c) => clocks.set(r.id, c)).catch(() => {}))),
    ]);
    const names = [...new Set(runs.flatMap((r) => r.metric_names || []))].sort(GS.naturalCompare);
    const fromUrl = (params.get("metrics") || "").split(",").filter((n) => names.includes(n));
    chosen = fromUrl.length ? fromUrl : DEFAULT_METRICS.filter((n) => names.includes(n)).slice(0, MAX_DEFAULT);
    renderStrip();
    renderAlerts(alertLists);
    document.getElementById("metrics-panel").hidden = false;
    document.getElementById("diff-panel").hidden = false;
    renderPicker(names);
    renderDiff();
    await drawCharts();
  };
  main().catch((e) => { console.error("compare", e); window.ganscope.ready = true; });
})();
