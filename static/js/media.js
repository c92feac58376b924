// Run page, non-series panels: the fixed-z sample timeline beside a grid of real images, the
// checkpoint-time interpolation and latent-walk images with their rows labelled, a lightbox, and
// toy-set snapshots (1-D densities with D's output; 2-D scatter over the mixture).
"use strict";
(() => {
  const { el, api } = GS;

  // The checkpoint-time figures (trainer/samples.py checkpoint_figures): what their rows are.
  const WALK_SPAN = 2.5;
  const walkRows = (nz) => {
    const dims = [...new Set([Math.floor(nz / 4), Math.floor(nz / 2), Math.floor((3 * nz) / 4)])].sort((a, b) => a - b);
    return [1, 2].flatMap((b) => dims.map((d) => "z" + b + " · dim " + d));
  };
  const FIGURES = {
    walk: { title: "latent walk", note: "each row sweeps one latent dimension from −" + WALK_SPAN + " to +" + WALK_SPAN,
      rows: (cfg) => walkRows(cfg.nz || 100) },
    interp: { title: "interpolation", note: "each row: slerp between two random z",
      rows: () => ["pair 1", "pair 2", "pair 3", "pair 4"] },
  };

  // Click an image to see it large; Escape or the × closes it.
  GS.lightbox = (src, caption) => {
    const box = document.getElementById("lightbox");
    document.getElementById("lightbox-img").src = src;
    document.getElementById("lightbox-img").alt = caption;
    document.getElementById("lightbox-caption").textContent = caption;
    if (!box.open) box.showModal();
  };
  const zoomable = (img, caption) => {
    img.classList.add("zoomable");
    img.title = "click to enlarge";
    img.addEventListener("click", () => GS.lightbox(img.src, typeof caption === "function" ? caption() : caption));
  };

  GS.Samples = class {
    constructor(runId) {
      this.runId = runId;
      this.cfg = {};
      this.byKind = new Map(); // kind -> [{step, url}] sorted by step
      this.panel = document.getElementById("samples-panel");
      this.img = document.getElementById("sample-img");
      this.real = document.getElementById("real-img");
      this.slider = document.getElementById("sample-slider");
      this.follow = document.getElementById("sample-follow");
      this.label = document.getElementById("sample-step");
      this.extra = document.getElementById("sample-extra");
      zoomable(this.img, () => "G's samples (fixed z) · " + this.label.textContent);
      zoomable(this.real, "real training images");
      this.slider.addEventListener("input", () => {
        const grids = this.grids();
        this.follow.checked = Number(this.slider.value) === grids.length - 1;
        this.show();
      });
      this.follow.addEventListener("change", () => this.render());
    }
    setConfig(cfg) { this.cfg = cfg || {}; }
    grids() { return this.byKind.get("grid") || []; }
    async load() {
      const body = await api(`/api/runs/${this.runId}/samples`);
      this.byKind.clear();
      for (const s of (body && body.samples) || []) this.put(s);
      this.render();
    }
    put(s) {
      const list = this.byKind.get(s.kind || "grid") || [];
      const i = list.findIndex((x) => x.step === s.step);
      // A re-upload replaces the image: bust the browser cache with a version.
      const item = { step: s.step, url: s.url, v: (list[i] && list[i].v + 1) || 0 };
      if (i >= 0) list[i] = item; else { list.push(item); list.sort((a, b) => a.step - b.step); }
      this.byKind.set(s.kind || "grid", list);
    }
    add(s) { this.put(s); this.render(); }
    src(item) { return item.v ? item.url + (item.url.includes("?") ? "&" : "?") + "v=" + item.v : item.url; }
    render() {
      const grids = this.grids();
      this.panel.hidden = this.byKind.size === 0;
      this.slider.max = String(Math.max(0, grids.length - 1));
      if (this.follow.checked) this.slider.value = this.slider.max;
      this.slider.hidden = grids.length < 2;
      this.show();
      // The real-data reference grid (uploaded once at the start, kind "real") beside G's.
      const reals = this.byKind.get("real") || [];
      document.getElementById("real-figure").hidden = !reals.length;
      if (reals.length) {
        const src = this.src(reals[reals.length - 1]);
        if (this.real.getAttribute("src") !== src) this.real.src = src;
      }
      const extras = [...this.byKind.entries()].filter(([k]) => k !== "grid" && k !== "real");
      this.extra.replaceChildren(...extras.map(([kind, list]) => this.figure(kind, list[list.length - 1])));
    }
    // A checkpoint figure with its rows labelled (which latent dimension a walk row sweeps).
    figure(kind, last) {
      const known = FIGURES[kind];
      const img = el("img", { src: this.src(last), alt: kind + " at step " + last.step });
      const caption = (known ? known.title : kind) + " · step " + last.step;
      zoomable(img, caption + (known ? " · " + known.note : ""));
      const rows = known ? known.rows(this.cfg) : [];
      const body = rows.length ? el("div", { class: "labelled" },
        el("div", { class: "row-labels" }, rows.map((t) => el("span", { text: t }))), img) : img;
      return el("figure", { class: "checkpoint-figure", "data-kind": kind }, body,
        el("figcaption", { class: "muted", text: caption + (known ? " — " + known.note : "") }));
    }
    show() {
      const grids = this.grids();
      const item = grids[Number(this.slider.value)] || grids[grids.length - 1];
      this.img.hidden = !item;
      if (!item) { this.label.textContent = ""; return; }
      const src = this.src(item);
      if (this.img.getAttribute("src") !== src) this.img.src = src;
      this.label.textContent = "step " + item.step + " (" + (grids.indexOf(item) + 1) + "/" + grids.length + ")";
      document.getElementById("sample-caption").textContent = "G (fixed z) · step " + item.step;
    }
  };

  GS.Toy = class {
    constructor(runId) {
      this.runId = runId;
      this.steps = [];
      this.panel = document.getElementById("toy-panel");
      this.div = document.getElementById("toy-plot");
      this.slider = document.getElementById("toy-slider");
      this.follow = document.getElementById("toy-follow");
      this.label = document.getElementById("toy-step");
      this.modes = null;
      this.watch();
      this.slider.addEventListener("change", () => {
        this.follow.checked = Number(this.slider.value) === this.steps.length - 1;
        this.load(this.steps[Number(this.slider.value)]);
      });
      this.follow.addEventListener("change", () => { if (this.follow.checked) this.load(); });
    }
    async load(step) {
      const q = new URLSearchParams({ kind: "toy" });
      if (step !== undefined) q.set("step", String(step));
      let body;
      try { body = await api(`/api/runs/${this.runId}/snapshots?${q}`); } catch (e) { return; }
      this.steps = (body && body.steps) || [];
      if (!body || !body.snapshot) return;
      this.panel.hidden = false;
      this.slider.max = String(Math.max(0, this.steps.length - 1));
      this.slider.hidden = this.steps.length < 2;
      const idx = this.steps.indexOf(body.snapshot.step);
      if (idx >= 0) this.slider.value = String(idx);
      this.snap = body.snapshot;
      this.draw();
    }
    // Toy runs snapshot often (every toy_every steps); a redraw each time would swamp the page: at most
    // every 4 s in view and every 12 s out of it (never frozen: a page watched from afar still moves).
    onSnapshot(ev) {
      if (!this.steps.includes(ev.step)) this.steps.push(ev.step);
      if (!this.follow.checked) return;
      if (!this.reloadLatest) this.reloadLatest = GS.throttle(() => this.load(), 4000);
      if (!this.reloadHidden) this.reloadHidden = GS.throttle(() => (this.visible ? null : this.load()), 12000);
      if (!this.visible && !this.panel.hidden) { this.stale = true; this.reloadHidden(); return; }
      this.reloadLatest();
    }
    watch() {
      // Out of view, snapshots only mark the panel stale; it reloads when scrolled back.
      this.visible = true;
      if (!window.IntersectionObserver) return;
      new IntersectionObserver((es) => {
        this.visible = es.some((e) => e.isIntersecting);
        if (this.visible && this.stale) { this.stale = false; this.load(); }
      }).observe(this.panel);
    }
    setModes(v) { this.modes = v; if (this.snap) this.title(); }
    title() {
      this.label.textContent = "step " + this.snap.step + (this.modes !== null && this.modes !== undefined ? " · modes covered " + GS.fmt(this.modes) : "");
    }
    draw() {
      const p = this.snap.payload || {};
      this.title();
      const layout = { margin: { l: 40, r: 40, t: 10, b: 30 }, height: 320, showlegend: true,
        legend: { orientation: "h", y: -0.12, font: { size: 10 } }, uirevision: "toy" };
      const cfg = { displaylogo: false, responsive: true };
      if (p.dim === 1) {
        const traces = [
          { name: "real density", x: p.x, y: p.real_density, type: "scatter", mode: "lines", fill: "tozeroy", line: { color: "#7f8898" } },
          { name: "G density", x: p.x, y: p.fake_density, type: "scatter", mode: "lines", line: { color: "#2f6fdf", width: 2 } },
          { name: "D(x)", x: p.x, y: p.d_output, type: "scatter", mode: "lines", yaxis: "y2", line: { color: "#d0342c", dash: "dot" } },
        ];
        layout.yaxis = { title: { text: "density", font: { size: 10 } } };
        layout.yaxis2 = { overlaying: "y", side: "right", range: [0, 1], title: { text: "D(x)", font: { size: 10 } }, showgrid: false };
        Plotly.react(this.div, traces, layout, cfg);
        return;
      }
      const xs = (pts) => (pts || []).map((q) => q[0]);
      const ys = (pts) => (pts || []).map((q) => q[1]);
      const traces = [];
      if (p.d_grid && p.d_grid.z) {
        // A smoothed heatmap (drawn as one image) rather than a contour: far cheaper to redraw live.
        traces.push({ type: "heatmap", name: "D(x)", x: p.d_grid.x, y: p.d_grid.y, z: p.d_grid.z, colorscale: "RdBu",
          reversescale: true, zmin: 0, zmax: 1, opacity: 0.45, showscale: true, zsmooth: "best",
          colorbar: { title: { text: "D", side: "right" }, thickness: 8 }, hoverinfo: "skip", showlegend: true });
      }
      traces.push({ name: "real", x: xs(p.real), y: ys(p.real), type: "scatter", mode: "markers", marker: { size: 3, color: "#6b7385", opacity: 0.5 } });
      traces.push({ name: "generated", x: xs(p.fake), y: ys(p.fake), type: "scatter", mode: "markers", marker: { size: 3, color: "#2f6fdf" } });
      traces.push({ name: "modes (3σ)", x: xs(p.modes), y: ys(p.modes), type: "scatter", mode: "markers",
        marker: { symbol: "circle-open", color: "#d0342c", line: { width: 1.5 }, size: 14 } });
      layout.xaxis = { zeroline: false };
      layout.yaxis = { zeroline: false, scaleanchor: "x" };
      if (p.sigma && p.modes) {
        layout.shapes = p.modes.map((m) => ({ type: "circle", xref: "x", yref: "y", x0: m[0] - 3 * p.sigma, x1: m[0] + 3 * p.sigma,
          y0: m[1] - 3 * p.sigma, y1: m[1] + 3 * p.sigma, line: { color: "rgba(208,52,44,.5)", width: 1, dash: "dot" } }));
      }
      Plotly.react(this.div, traces, layout, cfg);
    }
  };
})();
