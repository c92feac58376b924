// Run page: the run's events (heals under on_failure: heal) and its config history, from
// GET /api/runs/{id}/events and the stream's `event` events. Every chart draws the applied ones as a
// vertical marker (charts.js, eventDecor).
"use strict";
(() => {
  const { el, api } = GS;
  const fmt = (v) => (typeof v === "number" ? String(+v.toPrecision(6)) : JSON.stringify(v));

  GS.RunEvents = class {
    constructor(runId, onChange) {
      this.runId = runId; this.onChange = onChange; this.events = new Map(); this.history = [];
    }
    list() { return [...this.events.values()].sort((a, b) => a.id - b.id); }
    async load() {
      const body = await api(`/api/runs/${this.runId}/events`);
      this.events.clear();
      for (const e of (body && body.events) || []) this.events.set(e.id, e);
      this.history = (body && body.config_history) || [];
      this.render();
    }
    // A live event: a heal just applied. The caller rewinds the charts; the config history is re-read.
    add(e) {
      this.events.set(e.id, e);
      this.render();
      this.load().catch((err) => console.warn("events", err));
    }
    item(e) {
      const changes = (e.changes || []).map((c) => `${c.knob} ${fmt(c.from)} → ${fmt(c.to)}`).join(", ");
      const where = e.status === "applied"
        ? `rolled back from step ${e.from_step} to step ${e.rollback_step}` : "pending: the worker has not applied it yet";
      return el("li", { class: "run-event", "data-id": e.id, "data-kind": e.kind },
        el("strong", { text: `${e.kind}: ${e.signature || ""}` }),
        el("span", { class: "muted", text: ` (onset step ${e.onset_step}; ${where})` }),
        el("div", { class: "mono", text: changes || "no config change" }));
    }
    render() {
      const box = document.getElementById("events");
      const list = this.list();
      document.getElementById("events-panel").hidden = !list.length;
      box.replaceChildren(...list.map((e) => this.item(e)));
      const table = document.getElementById("config-history");
      table.replaceChildren(...this.history.map((h) => el("tr", { "data-step": h.step },
        el("td", { text: `step ${h.step}` }),
        el("td", { text: Object.entries(h.changes || {}).map(([k, v]) => `${k} = ${fmt(v)}`).join(", ") }))));
      if (this.onChange) this.onChange(list);
    }
  };
})();
