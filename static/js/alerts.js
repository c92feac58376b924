// Alert cards (run and compare pages): the message, the remedy with its relaunch button first, then the
// evidence as a small table (metric, observed, threshold, unit) over the step window it was judged on.
"use strict";
(() => {
  const { el, fmt } = GS;

  // What a metric's numbers are in (shown beside the value).
  const UNITS = [
    [/^pred\//, "probability"], [/^score\//, "raw D output"], [/^grad\//, "L2 norm"], [/^weight\//, "L2 norm"],
    [/^update\//, "‖Δw‖/‖w‖"], [/^perf\/(step|eval)_s$/, "s"], [/^perf\/img_s$/, "images/s"], [/^lr\//, "learning rate"],
    [/^sample\/diversity$/, "× real spread"], [/^toy\/modes$/, "modes"], [/^toy\/quality$/, "fraction"],
    [/^quality\/(precision|recall|density|coverage|recognisable)$/, "fraction"], [/^quality\/modes/, "classes"],
    [/^loss\//, "loss"],
  ];
  GS.unitOf = (name) => { const u = UNITS.find(([re]) => re.test(name)); return u ? u[1] : ""; };

  GS.remedyConfig = (r, defaults) => {
    if (!r || typeof r !== "object") return {};
    if (r.config && typeof r.config === "object") return r.config;
    return Object.fromEntries(Object.entries(r).filter(([k]) => defaults && k in defaults));
  };
  GS.remedyText = (r) => (typeof r === "string" ? r : r ? r.text || r.summary || r.message || r.description || "" : "");

  const plain = (v) => (typeof v === "number" ? fmt(v, 3) : Array.isArray(v) ? v.map(plain).join(", ")
    : v && typeof v === "object" ? Object.entries(v).map(([k, x]) => k + " " + plain(x)).join(", ") : GS.fmtValue(v));

  const observedText = (o) => {
    if (!o || typeof o !== "object") return plain(o);
    if ("median" in o) {
      const spread = "min" in o && "max" in o && fmt(o.min, 3) !== fmt(o.max, 3);
      return (spread ? "median " : "") + fmt(o.median, 3) + (spread ? `, ${fmt(o.min, 3)} to ${fmt(o.max, 3)}` : "");
    }
    return Object.entries(o).filter(([k]) => !["threshold", "op"].includes(k))
      .map(([k, v]) => k.replace(/_/g, " ") + " " + plain(v)).join(", ");
  };

  const windowText = (w) => (Array.isArray(w) && w.length === 2 ? `steps ${w[0]}–${w[1]} (${w[1] - w[0] + 1} steps)` : "");

  // The evidence as rows; keys it does not tabulate are listed below the table.
  GS.evidenceTable = (ev) => {
    if (!ev || typeof ev !== "object") return [el("div", { class: "muted", text: plain(ev) })];
    const observed = ev.observed && typeof ev.observed === "object" ? ev.observed : {};
    const rows = Object.entries(observed).map(([metric, o]) => el("tr", {},
      el("td", { class: "mono", text: metric }),
      el("td", { class: "num", text: observedText(o) }),
      el("td", { class: "num", text: o && typeof o === "object" && "threshold" in o ? (o.op || "vs") + " " + fmt(o.threshold, 3) : "—" }),
      el("td", { class: "muted", text: GS.unitOf(metric) })));
    const out = [];
    if (ev.window) out.push(el("div", { class: "ev-window muted", text: "judged over " + windowText(ev.window) }));
    if (rows.length) {
      out.push(el("table", { class: "evidence" },
        el("thead", {}, el("tr", {}, ["metric", "observed", "threshold", "unit"].map((h) => el("th", { text: h })))),
        el("tbody", {}, rows)));
    }
    const extra = Object.entries(ev).filter(([k]) => !["observed", "window", "metrics", "thresholds"].includes(k))
      .map(([k, v]) => k === "held_frac" && typeof v === "number" ? `held on ${Math.round(v * 100)}% of the window`
        : k.replace(/_/g, " ") + ": " + plain(v));
    if (ev.thresholds && typeof ev.thresholds === "object") {
      extra.push("thresholds: " + Object.entries(ev.thresholds).map(([k, v]) => k.replace(/_/g, " ") + " " + plain(v)).join(", "));
    }
    if (extra.length) out.push(el("div", { class: "ev-more muted" }, extra.map((t) => el("div", { text: t.length > 300 ? t.slice(0, 300) + "…" : t }))));
    return out;
  };

  // One alert: open ones expanded unless the user folded them. opts: {defaults, onRelaunch(fix, signature),
  // expanded: Map id -> bool, runLabel}. Pass the card drawn before for the same alert as `node`: it is
  // updated in place, its remedy (and relaunch button) untouched unless the remedy changed, so a live
  // alert that moves every batch never pulls the button from under a click.
  GS.alertCard = (a, opts = {}, node = null) => {
    const card = node || el("details", {},
      el("summary"), el("div", { class: "message" }), el("div", { class: "remedy-box" }),
      el("div", { class: "evidence-box" }), el("div", { class: "muted sources" }));
    card.className = `alert ${a.severity} ${a.status}`;
    card.dataset.signature = a.signature;
    card.dataset.alertId = a.id;
    card.querySelector("summary").replaceChildren(...[GS.badge(a.severity === "failing" ? "failing" : "warning", a.severity), " ",
      opts.runLabel ? el("span", { class: "muted", text: opts.runLabel + " · " }) : null,
      el("span", { class: "sig", text: a.signature }), " ", el("span", { class: "muted", text: a.status }), " ",
      el("span", { class: "muted", text: "steps " + a.first_step + "–" + a.last_step })].filter((x) => x !== null));
    card.querySelector(".message").textContent = a.message || "";
    const remedyKey = JSON.stringify(a.remedy || null);
    if (card.dataset.remedyKey !== remedyKey) {
      card.dataset.remedyKey = remedyKey;
      const fix = GS.remedyConfig(a.remedy, opts.defaults);
      const chips = Object.entries(fix).map(([k, v]) => el("span", { class: "chip", text: k + " → " + GS.fmtValue(v) }));
      const text = GS.remedyText(a.remedy);
      card.querySelector(".remedy-box").replaceChildren(...(text || chips.length ? [el("div", { class: "remedy" },
        el("b", { text: "Remedy: " }), text, " ", chips,
        chips.length && opts.onRelaunch ? el("div", {}, el("button", { class: "primary relaunch", text: "Relaunch with this remedy",
          onclick: () => opts.onRelaunch(fix, a.signature) })) : null)] : []));
      const sources = a.remedy && Array.isArray(a.remedy.sources) ? a.remedy.sources : [];
      card.querySelector(".sources").textContent = sources.length ? "Sources: " + sources.map(String).join("; ") : "";
    }
    const evKey = JSON.stringify(a.evidence || null);
    if (card.dataset.evidenceKey !== evKey) {
      card.dataset.evidenceKey = evKey;
      card.querySelector(".evidence-box").replaceChildren(...GS.evidenceTable(a.evidence));
    }
    const expanded = opts.expanded;
    if (!node) {
      card.open = expanded && expanded.has(a.id) ? expanded.get(a.id) : a.status !== "closed";
      if (expanded) card.addEventListener("toggle", () => expanded.set(a.id, card.open));
    } else if (!(expanded && expanded.has(a.id)) && a.status === "closed") {
      card.open = false; // closed since: folds, unless the user chose
    }
    return card;
  };
})();
