// Chart controls: the page's view bar (smoothing, x axis) and each chart's own buttons (log y,
// show/hide a net, PNG download).
"use strict";
(() => {
  const { el } = GS;

  // The view bar above a page's charts. xmodes: the x-axis choices this page offers.
  GS.viewBar = (host, xmodes = ["step", "wall", "relative"]) => {
    const LABELS = { step: "step", wall: "wall time", relative: "relative time" };
    const slider = el("input", { type: "range", id: "smoothing", min: "0", max: "0.99", step: "0.01",
      "aria-label": "smoothing" });
    slider.value = String(GS.view.smoothing);
    const shown = el("span", { class: "mono", id: "smoothing-value", text: GS.view.smoothing.toFixed(2) });
    const select = el("select", { id: "xmode", "aria-label": "x axis" },
      xmodes.map((m) => el("option", { value: m, text: LABELS[m] })));
    if (!xmodes.includes(GS.view.xmode)) GS.view.xmode = "step";
    select.value = GS.view.xmode;
    // Redrawing every chart per slider pixel is wasteful: apply once the hand rests for a moment.
    let timer = null;
    slider.addEventListener("input", () => {
      shown.textContent = Number(slider.value).toFixed(2);
      clearTimeout(timer);
      timer = setTimeout(() => GS.setView({ smoothing: Number(slider.value) }), 150);
    });
    select.addEventListener("change", () => GS.setView({ xmode: select.value }));
    host.replaceChildren(
      el("label", { title: "Exponential moving average, debiased as in TensorBoard; raw values stay faintly behind" },
        "Smoothing ", slider, " ", shown),
      el("label", { title: "Wall and relative time come from when the server took in each batch" }, "X axis ", select),
      el("span", { class: "muted hint", text: "Drag on a chart to zoom all of them; double-click to zoom out." }));
  };

  // Buttons over one chart: log y (line charts), D / G (charts of both nets), PNG.
  GS.chartTools = (chart, wrapper) => {
    const bar = el("div", { class: "chart-tools" });
    const render = () => {
      const items = [];
      if (typeof chart.setLog === "function") {
        const log = el("button", { class: "small toggle" + (chart.logY ? " on" : ""), "data-tool": "log",
          title: "Logarithmic y axis", text: "log y" });
        log.addEventListener("click", async () => { await chart.setLog(!chart.logY); render(); });
        items.push(log);
        if (chart.grouped) {
          for (const net of chart.nets) {
            const hidden = chart.hiddenNets().includes(net);
            const b = el("button", { class: "small toggle" + (hidden ? "" : " on"), "data-tool": "net-" + net,
              title: (hidden ? "Show " : "Hide ") + (net === "d" ? "D's" : "G's") + " layers", text: net.toUpperCase() });
            b.addEventListener("click", async () => { await chart.setNetHidden(net, !hidden); render(); });
            items.push(b);
          }
        }
      }
      const png = el("button", { class: "small", "data-tool": "png", title: "Download this chart as a PNG", text: "PNG" });
      png.addEventListener("click", () => chart.downloadPng());
      items.push(png);
      bar.replaceChildren(...items);
    };
    chart.renderTools = render;
    render();
    wrapper.insertBefore(bar, wrapper.firstChild);
    return bar;
  };
})();
