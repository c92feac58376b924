// Workers page: every worker seen in the last day and the queue in claim order, from GET /api/workers;
// a job's priority is changed with PATCH /api/runs/{id}. Refreshed every few seconds and on run events.
"use strict";
(() => {
  const { el, api } = GS;
  const $ = (id) => document.getElementById(id);
  const ago = (s) => (s === null || s === undefined ? "never" : s < 90 ? Math.round(s) + " s ago"
    : s < 5400 ? Math.round(s / 60) + " min ago" : (s / 3600).toFixed(1) + " h ago");

  const workerRow = (w) => el("tr", { "data-worker": w.id, class: w.alive ? "" : "lost" },
    el("td", { class: "mono", text: w.id }),
    el("td", { text: w.host || "" }),
    el("td", { class: "mono", text: (w.devices || []).join(", ") }),
    el("td", { class: "mono", text: w.version || "?" }),
    el("td", {}, GS.badge(w.state === "busy" ? "running" : w.state === "idle" ? "healthy" : "failed", w.state)),
    el("td", {}, w.run_id ? el("a", { href: "/runs/" + w.run_id, text: "#" + w.run_id + " " + (w.run_name || "(unnamed)") }) : "—"),
    el("td", { class: "num", text: w.run_id ? (w.step ?? 0) + (w.total_steps ? " / " + w.total_steps : "") : "" }),
    el("td", { class: "num", title: w.last_seen || "", text: ago(w.seconds_since_seen) }),
    el("td", { class: "num", text: GS.fmtTime(w.started_at) }));

  const setPriority = async (runId, input) => {
    $("queue-error").textContent = "";
    try {
      await api(`/api/runs/${runId}`, { method: "PATCH", body: { priority: Number(input.value) } });
      await load();
    } catch (e) {
      $("queue-error").textContent = `run #${runId}: ${e.message}`;
    }
  };

  const queueRow = (q) => {
    const input = el("input", { type: "number", min: "-100", max: "100", step: "1", value: String(q.priority),
      class: "priority", "aria-label": "priority of run " + q.run_id, size: "4" });
    input.addEventListener("change", () => setPriority(q.run_id, input));
    return el("tr", { "data-id": q.run_id },
      el("td", { class: "num", text: GS.ordinal(q.position) }),
      el("td", {}, el("a", { href: "/runs/" + q.run_id, class: "run-name", text: "#" + q.run_id + " " + (q.name || "(unnamed)") })),
      el("td", {}, input),
      el("td", { text: q.dataset || "" }),
      el("td", { class: "num", text: String(q.total_steps) }),
      el("td", { class: "num", text: GS.fmtTime(q.created_at) }),
      el("td", { class: "num", text: q.resume_step ? "step " + q.resume_step : "" }));
  };

  let editing = false; // a priority being typed is not overwritten by a refresh
  const load = async () => {
    const body = await api("/api/workers");
    const ws = body.workers || [], queue = body.queue || [];
    $("workers").querySelector("tbody").replaceChildren(...ws.map(workerRow));
    const alive = ws.filter((w) => w.alive).length;
    $("worker-count").textContent = `${alive} alive, ${ws.filter((w) => w.state === "busy").length} busy` +
      (ws.length > alive ? `, ${ws.length - alive} lost` : "");
    $("no-workers").hidden = ws.length > 0;
    if (!editing) $("queue").querySelector("tbody").replaceChildren(...queue.map(queueRow));
    $("queue-count").textContent = queue.length ? queue.length + " waiting" : "";
    $("queue-empty").hidden = queue.length > 0;
  };
  $("server-url").textContent = location.origin;
  $("queue").addEventListener("focusin", () => { editing = true; });
  $("queue").addEventListener("focusout", () => { editing = false; });

  const refresh = GS.throttle(() => load().catch((e) => console.error("workers", e)), 1000);
  setInterval(refresh, 3000);
  new GS.LiveStream("/api/stream", {
    ready: () => load().then(() => { window.ganscope.ready = true; }).catch((e) => console.error("workers", e)),
    status: refresh,
    progress: refresh,
  });
})();
