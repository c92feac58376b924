// Run page header: status, health and learning badges, progress, facts, where a queued job stands,
// the user's tags and note, archive, downloads, delete (with a confirmation), and the config table.
"use strict";
(() => {
  const { el, api, fmt } = GS;
  const $ = (id) => document.getElementById(id);

  GS.RunPanel = class {
    constructor(runId, defaults, knobOrder) {
      this.runId = runId; this.defaults = defaults; this.knobOrder = knobOrder; this.summary = null;
      this.wire();
    }
    set(summary) { this.summary = summary; this.render(); }

    render() {
      const r = this.summary;
      if (!r) return;
      $("run-name").textContent = r.name || "(unnamed)";
      $("run-status").replaceChildren(GS.badge(r.status));
      $("run-health").replaceChildren(GS.healthBadge(r));
      $("run-learning").replaceChildren(...[GS.learningBadge(r)].filter(Boolean));
      const total = r.total_steps || 0;
      document.querySelector("#run-progress > span").style.width = (total ? Math.min(100, (100 * r.step) / total) : 0) + "%";
      $("run-step").textContent = "step " + (r.step || 0) + (total ? " / " + total : "");
      const facts = ["#" + r.id, r.kind, r.dataset, r.worker_id ? "worker " + r.worker_id : null,
        r.started_at ? "started " + GS.fmtTime(r.started_at) : "created " + GS.fmtTime(r.created_at),
        GS.fmtDuration(GS.durationMs(r)), r.attempts > 1 ? r.attempts + " attempts" : null,
        r.archived ? "archived" : null];
      const last = r.last || {};
      const losses = ["loss/d", "loss/g", "pred/real", "pred/fake"].filter((n) => n in last).map((n) => n + " " + fmt(last[n]));
      $("run-facts").textContent = facts.concat(losses).filter(Boolean).join(" · ");
      $("run-error").textContent = [r.stop_reason, r.error].filter(Boolean).join(" — ");
      $("cancel-btn").disabled = !GS.ACTIVE.has(r.status);
      const training = r.kind === "job" && r.status === "running";
      $("delete-btn").disabled = training;
      $("delete-btn").title = training ? "A worker is training it: cancel it first" : "Delete the run with its data and files";
      $("archive-btn").textContent = r.archived ? "Unarchive" : "Archive";
      $("dl-ckpt").hidden = r.checkpoint_step === null || r.checkpoint_step === undefined;
      this.renderQueue();
      this.renderLabels();
    }

    // A queued job says where it stands and why it waits (the server phrases it: GET /api/runs/{id} `queue`).
    renderQueue() {
      const r = this.summary, note = $("queue-note");
      const q = r.status === "queued" ? r.queue : null;
      note.hidden = !q;
      if (q) note.textContent = "Waiting to start: " + q.message + ".";
      const noData = $("no-data");
      noData.textContent = q ? "No metrics yet: " + q.message + "."
        : r.status === "running" ? "Waiting for the first metrics" + (r.worker_id ? " from worker " + r.worker_id : "") + "…"
          : "This run has no metrics.";
    }

    renderLabels() {
      const r = this.summary;
      $("run-tags").replaceChildren(...(r.tags || []).map((t) => el("span", { class: "chip tag", "data-tag": t }, t, " ",
        el("button", { class: "chip-x", title: "remove tag " + t, "aria-label": "remove tag " + t,
          onclick: () => this.patch({ tags: (this.summary.tags || []).filter((x) => x !== t) }) }, "×"))));
      $("run-note").textContent = r.note || "";
      $("note-btn").textContent = r.note ? "Edit note" : "Add a note";
    }

    // An SDK run: the script's own options as it gave them, then what it declared for the detectors.
    renderSdkConfig() {
      const row = (k, v, cls) => el("tr", { class: cls }, el("td", { text: k }), el("td", { class: "mono", text: GS.fmtValue(v) }));
      const own = Object.entries(this.summary.user_config || {}).map(([k, v]) => row(k, v, ""));
      const declared = Object.entries(this.summary.config || {}).map(([k, v]) => row("declared: " + k, v, "changed"));
      $("config").replaceChildren(...own, ...declared);
    }

    renderConfig() {
      if (this.summary && this.summary.kind === "sdk") return this.renderSdkConfig();
      const cfg = (this.summary && this.summary.config) || {};
      const order = this.knobOrder, defaults = this.defaults;
      const keys = Object.keys(cfg).sort((a, b) => (order.indexOf(a) + 1 || 999) - (order.indexOf(b) + 1 || 999));
      $("config").replaceChildren(...keys.map((k) => {
        const changed = k in defaults && JSON.stringify(cfg[k]) !== JSON.stringify(defaults[k]) && k !== "name";
        return el("tr", { class: changed ? "changed" : "", title: changed ? "default: " + GS.fmtValue(defaults[k]) : "" },
          el("td", { text: k }), el("td", { class: "mono", text: GS.fmtValue(cfg[k]) }));
      }));
    }

    async patch(changes) {
      try {
        const s = await api(`/api/runs/${this.runId}`, { method: "PATCH", body: changes });
        Object.assign(this.summary, s);
        this.render();
      } catch (e) {
        $("run-error").textContent = "could not save: " + e.message;
      }
    }

    wire() {
      const tagInput = $("tag-input");
      tagInput.addEventListener("keydown", (ev) => {
        if (ev.key !== "Enter") return;
        const tag = tagInput.value.trim();
        if (!tag || !this.summary) return;
        tagInput.value = "";
        this.patch({ tags: [...new Set([...(this.summary.tags || []), tag])] });
      });
      const editor = $("note-editor"), input = $("note-input");
      $("note-btn").addEventListener("click", () => {
        input.value = (this.summary && this.summary.note) || "";
        editor.hidden = false; $("note-btn").hidden = true; input.focus();
      });
      const close = () => { editor.hidden = true; $("note-btn").hidden = false; };
      $("note-cancel").addEventListener("click", close);
      $("note-save").addEventListener("click", async () => { await this.patch({ note: input.value }); close(); });
      $("archive-btn").addEventListener("click", () => this.patch({ archived: !(this.summary && this.summary.archived) }));

      // Delete: an inline confirmation naming what goes, no modal dialog.
      const confirm = $("delete-confirm");
      $("delete-btn").addEventListener("click", () => {
        const r = this.summary || {};
        const points = Object.keys(r.last || {}).length;
        $("delete-text").textContent = `Delete run #${this.runId} "${r.name || "(unnamed)"}" with its ${points} metric series, ` +
          "alerts, sample images and checkpoints? This cannot be undone.";
        confirm.hidden = false;
      });
      $("delete-no").addEventListener("click", () => { confirm.hidden = true; });
      $("delete-yes").addEventListener("click", async () => {
        try {
          await api(`/api/runs/${this.runId}`, { method: "DELETE" });
          location.href = "/?deleted=" + this.runId;
        } catch (e) {
          confirm.hidden = true;
          $("run-error").textContent = "delete failed: " + e.message;
        }
      });
      // The download menu closes once a link is used.
      document.querySelectorAll("#downloads a").forEach((a) => a.addEventListener("click", () => { $("downloads").open = false; }));
    }
  };
})();
