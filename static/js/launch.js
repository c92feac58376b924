// Launch form: every knob from trainer.config.knob_catalog(), grouped by the server (server/launch_form.py).
// Knobs that do not apply to the chosen dataset are hidden and not sent (the server's defaults stand).
// Pre-fill: ?config=<json> (a run's config) and ?remedy=<json> (an alert's fix, highlighted).
// Submit: POST /api/jobs; every message of a 422 is shown at once, next to the field it names.
"use strict";
(() => {
  const form = document.getElementById("launch-form");
  const knobs = [...document.querySelectorAll(".knob")];
  const byName = new Map(knobs.map((k) => [k.dataset.name, k]));
  const input = (k) => k.querySelector("input, select, textarea");
  const kinds = JSON.parse(document.getElementById("dataset-kinds").textContent);
  const showAll = document.getElementById("show-all");

  // A knob applies to every dataset ("all") or to those of one kind (image, toy, disk, finite).
  const applies = (k) => {
    const a = k.dataset.applies || "all";
    const ds = byName.has("dataset") ? input(byName.get("dataset")).value : "";
    return a === "all" || (kinds[a] || []).includes(ds);
  };
  const filterKnobs = () => {
    for (const k of knobs) k.hidden = !showAll.checked && !applies(k) && !k.classList.contains("invalid");
    document.querySelectorAll(".knob-group").forEach((g) => { g.hidden = ![...g.querySelectorAll(".knob")].some((k) => !k.hidden); });
  };
  if (byName.has("dataset")) input(byName.get("dataset")).addEventListener("change", filterKnobs);
  showAll.addEventListener("change", filterKnobs);

  const setValue = (k, v) => {
    const i = input(k);
    if (k.dataset.kind === "bool") i.checked = Boolean(v);
    else if (k.dataset.kind === "json") i.value = JSON.stringify(v ?? {});
    else if (k.dataset.kind === "list") i.value = Array.isArray(v) ? v.join(", ") : (v ?? "");
    else i.value = v === null || v === undefined ? "" : GS.fmtValue(v);
  };

  const resetDefaults = () => {
    for (const k of knobs) {
      const d = k.dataset.default;
      if (k.dataset.kind === "bool") input(k).checked = d === "true";
      else input(k).value = d;
      k.classList.remove("remedy", "invalid");
    }
    clearErrors();
    filterKnobs();
  };

  // Values as JSON types; what cannot be parsed is sent as typed so the server's 422 explains it.
  const collect = () => {
    const out = {};
    const local = [];
    for (const k of knobs) {
      const name = k.dataset.name, kind = k.dataset.kind, el = input(k);
      if (!applies(k)) continue; // meaningless for this dataset: the server's default stands
      if (kind === "bool") { out[name] = el.checked; continue; }
      const raw = el.value.trim();
      if (raw === "" && kind === "list") { out[name] = []; continue; }
      if (raw === "" && (k.dataset.nullable === "true" || kind !== "string")) {
        if (k.dataset.nullable !== "true" && kind !== "string") out[name] = raw; // empty required number: let the server say so
        continue;
      }
      if (kind === "integer" || kind === "number") {
        const n = Number(raw);
        out[name] = Number.isFinite(n) && raw !== "" ? n : raw;
      } else if (kind === "list") {
        out[name] = raw.split(/[\s,]+/).filter((s) => s !== "");
      } else if (kind === "json") {
        try { out[name] = JSON.parse(raw || "{}"); } catch (e) { local.push([name, "not valid JSON: " + e.message]); }
      } else out[name] = raw;
    }
    return { config: out, local };
  };

  const clearErrors = () => {
    for (const k of knobs) { k.classList.remove("invalid"); const e = k.querySelector(".error"); e.hidden = true; e.textContent = ""; }
    document.getElementById("form-errors").textContent = "";
  };

  const showError = (field, msg) => {
    const k = byName.get(field);
    if (!k) {
      const top = document.getElementById("form-errors");
      top.textContent = (top.textContent ? top.textContent + "; " : "") + (field ? field + ": " : "") + msg;
      return;
    }
    k.classList.add("invalid");
    k.hidden = false;
    k.closest(".knob-group").hidden = false;
    const e = k.querySelector(".error");
    e.hidden = false;
    e.textContent = (e.textContent ? e.textContent + "; " : "") + msg;
  };

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const { config, local } = collect();
    if (local.length) { local.forEach(([f, m]) => showError(f, m)); return; }
    const btn = form.querySelector("button[type=submit]");
    btn.disabled = true;
    try {
      const run = await GS.api("/api/jobs", { method: "POST", body: config });
      location.href = "/runs/" + run.id;
    } catch (e) {
      if (e.status === 422 && e.body && Array.isArray(e.body.detail)) {
        for (const d of e.body.detail) {
          const loc = (d.loc || []).filter((p) => p !== "body");
          showError(loc.length ? String(loc[0]) : "", (loc.length > 1 ? loc.slice(1).join(".") + ": " : "") + d.msg);
        }
        const bad = document.querySelectorAll(".knob.invalid");
        const top = document.getElementById("form-errors");
        const count = bad.length === 1 ? "1 field needs fixing (below)" : bad.length ? bad.length + " fields need fixing (below)" : "";
        top.textContent = [count, top.textContent].filter(Boolean).join("; ");
        if (bad.length) bad[0].scrollIntoView({ block: "center" });
      } else if (e.status === 401) {
        showError("", "the server needs a token: enter it in the top bar (" + e.message + ")");
      } else {
        showError("", e.message);
      }
    } finally {
      btn.disabled = false;
    }
  });
  document.getElementById("reset-btn").addEventListener("click", resetDefaults);

  // Pre-fill from the query string (the run page's "relaunch" buttons).
  const params = new URLSearchParams(location.search);
  const parse = (s) => { try { return s ? JSON.parse(s) : null; } catch (_) { return null; } };
  const config = parse(params.get("config"));
  const remedy = parse(params.get("remedy"));
  if (config || remedy) {
    for (const [k, v] of Object.entries(config || {})) if (byName.has(k)) setValue(byName.get(k), v);
    for (const [k, v] of Object.entries(remedy || {})) if (byName.has(k)) { setValue(byName.get(k), v); byName.get(k).classList.add("remedy"); }
    const from = params.get("from");
    const sig = params.get("alert");
    const name = byName.get("name");
    if (name && from && remedy) {
      const base = (config && config.name) || "run " + from;
      input(name).value = (base + " · fix " + (sig || "")).slice(0, 200);
    }
    const note = document.getElementById("prefill-note");
    note.hidden = false;
    note.textContent = (from ? "Pre-filled from run #" + from : "Pre-filled") +
      (remedy ? "; the remedy for " + (sig || "the alert") + " changes: " +
        Object.entries(remedy).map(([k, v]) => k + " → " + GS.fmtValue(v)).join(", ") + " (highlighted)." : ".");
  }
  filterKnobs();
  window.ganscope.ready = true;
})();
