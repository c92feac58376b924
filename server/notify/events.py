"""What a notification is about: the event names and the run/alert facts every payload carries.

Events are a registry, not a fixed list: a feature that wants its own (say `run.healed`) adds one
entry here and calls `Notifier.emit` with it; settings, payloads and docs pick it up from here.
"""

from __future__ import annotations

from typing import Any

# name -> what it means (docs/notifications.md lists the same)
EVENTS: dict[str, str] = {
    "alert.opened": "a failure signature opened an alert on a run",
    "alert.escalated": "an open alert went from warning to failing",
    "run.stopped": "a run ended as stopped (a detector under on_failure: stop, or stopped at a worker's request)",
    "run.failed": "a run failed (an error in training, or its worker kept dying until max_attempts)",
    "run.succeeded": "a run finished all its steps",
    "run.healed": "a run healed itself (on_failure: heal): rolled back before a failure's onset, config patched",
}
TEST_EVENT = "test"  # POST /api/notifications/test: server-wide targets only, whatever the event filter says
RUN_EVENTS = {"stopped": "run.stopped", "failed": "run.failed", "succeeded": "run.succeeded"}


def run_facts(run: Any, base_url: str | None) -> dict[str, Any]:
    """The run as a payload shows it (a Run row, read while its session still holds it)."""
    cfg = run.config or {}
    return {
        "id": run.id, "name": run.name, "kind": run.kind, "status": run.status, "health": run.health,
        "step": int(run.step or 0), "total_steps": int(run.total_steps or 0), "dataset": cfg.get("dataset"),
        "worker_id": run.worker_id, "error": (run.error or None) and run.error[:2000],
        "stop_reason": (run.stop_reason or None) and run.stop_reason[:2000], "control": run.control,
        "url": f"{base_url.rstrip('/')}/runs/{run.id}" if base_url else None,
    }


def job_targets(run: Any) -> list[str]:
    """The job's own webhook URLs (JobConfig.notify), validated when the job was accepted."""
    urls = (run.config or {}).get("notify") or []
    return [u for u in urls if isinstance(u, str)]


def alert_facts(alert: Any, previous_severity: str | None) -> dict[str, Any]:
    """An alert (the detectors' AlertState, its id assigned) as a payload shows it."""
    return {
        "id": alert.id, "signature": alert.signature, "severity": alert.severity,
        "previous_severity": previous_severity, "status": alert.status, "first_step": int(alert.first_step),
        "last_step": int(alert.last_step), "message": alert.message, "remedy": alert.remedy or {},
    }
