// Compare: chosen metrics of two or more runs overlaid (one chart per metric, one trace per run),
// and their configs side by side with the differing knobs highlighted. State lives in the URL.
"use strict";
(() => {
  const { el, api } = GS;
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const params = new URLSearchParams(location.search);
  const ids = boot.ids || [];
  const COLORS = ["#2f6fdf", "#d0342c", "#1f9d55", "#9b51e0", "#d98a00", "#0fa3b1", "#7a5c3e", "#e05297"];
  const DEFAULT_METRICS = ["loss/d", "loss/g", "pred/real", "pred/fake", "sample/diversity", "toy/modes"];
  let runs = [];
  let chosen = [];

  const label = (r) => "#" + r.id + " " + (r.name || "(unnamed)");

  const saveUrl = () => {
    const q = new URLSearchParams({ ids: ids.join(",") });
    if (chosen.length) q.set("metrics", chosen.join(","));
    history.replaceState(null, "", "/compare?" + q);
  };

  // Run picker (always shown, pre-ticked with the ids in the URL).
  const loadPicker = async () => {
    const body = await api("/api/runs?limit=200");
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

  const drawCharts = async () => {
    const host = document.getElementById("compare-charts");
    host.replaceChildren();
    const data = await Promise.all(runs.map((r) => GS.fetchMetrics(r.id, chosen).catch(() => ({}))));
    for (const name of chosen) {
      const div = el("div", { class: "plot" });
      host.appendChild(el("div", { class: "chart", "data-metric": name }, div));
      const traces = [];
      const bad = { x: [], y: [], text: [] };
      runs.forEach((r, i) => {
        const s = data[i][name] || { steps: [], values: [] };
        let lastY = 0;
        s.steps.forEach((st, k) => {
          const v = s.values[k];
          if (v === null) { bad.x.push(st); bad.y.push(lastY); bad.text.push(GS.plotText(label(r)) + ": non-finite at step " + st); }
          else lastY = v;
        });
        traces.push({ name: GS.plotText(label(r)), x: s.steps, y: s.values, type: "scatter", mode: "lines",
          connectgaps: false, line: { width: 1.4, color: COLORS[i % COLORS.length] } });
      });
      if (bad.x.length) traces.push({ name: "non-finite", x: bad.x, y: bad.y, text: bad.text, hoverinfo: "text",
        mode: "markers", type: "scatter", marker: { symbol: "x-thin-open", size: 11, color: "#d0342c", line: { width: 2.5, color: "#d0342c" } } });
      const log = /^(grad|update)\//.test(name);
      await Plotly.newPlot(div, traces, {
        title: { text: GS.plotText(name), font: { size: 13 }, x: 0.02 }, height: 260, margin: { l: 52, r: 14, t: 30, b: 32 },
        xaxis: { title: { text: "step", font: { size: 10 } } }, yaxis: { type: log ? "log" : "linear" },
        legend: { orientation: "h", y: -0.22, font: { size: 10 } }, hovermode: "x unified",
      }, { displaylogo: false, responsive: true });
    }
    window.ganscope.ready = true;
  };

  const renderDiff = () => {
    const keys = [...new Set(runs.flatMap((r) => Object.keys(r.config || {})))];
    const onlyDiff = document.getElementById("only-diff").checked;
    const table = document.getElementById("config-diff");
    const head = el("tr", {}, el("th", { text: "knob" }), runs.map((r, i) =>
      el("th", { style: "color:" + COLORS[i % COLORS.length] }, el("a", { href: "/runs/" + r.id, text: label(r) }))));
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
    await loadPicker();
    if (ids.length < 1) { window.ganscope.ready = true; return; }
    runs = (await Promise.all(ids.map((id) => api("/api/runs/" + id).catch(() => null)))).filter(Boolean);
    const names = [...new Set(runs.flatMap((r) => r.metric_names || []))].sort(GS.naturalCompare);
    const fromUrl = (params.get("metrics") || "").split(",").filter((n) => names.includes(n));
    chosen = fromUrl.length ? fromUrl : DEFAULT_METRICS.filter((n) => names.includes(n));
    document.getElementById("metrics-panel").hidden = false;
    document.getElementById("diff-panel").hidden = false;
    renderPicker(names);
    renderDiff();
    await drawCharts();
  };
  main().catch((e) => console.error("compare", e));
})();
