"""on_failure policies acting on a failing alert: stop the run, or heal it (docs/knobs.md, failure policy).

Called by hook._persist inside its write transaction, for alerts that just opened failing or escalated
to failing. A heal computes the alert's remedy against the run's *current* config — which after an
earlier heal carries `remedy_of`, so a repeat of the signature climbs its remedy ladder — records a
pending `heal` run event and sets the run's control to 'heal'; the worker learns of it from its next
heartbeat or ingest answer and reports back through POST /api/runs/{id}/heal/{event} (api/events.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ganscope.server.detectors.catalog import remedy_for
from ganscope.server.detectors.engine import AlertState
from ganscope.server.schema import Run
from ganscope.server.store import events as events_store

ACTIVE = ("queued", "running")


def _stop(run: Run, reason: str) -> str:
    run.control = "stop"
    run.stop_reason = reason[:2000]
    return "stop"


def apply_policy(session: Session, run: Run, failing: list[AlertState]) -> str | None:
    """'stop' or 'heal' when the run's on_failure acted on one of `failing` (its control is set), else None."""
    cfg: dict[str, Any] = run.config or {}
    policy = cfg.get("on_failure", "warn")
    if policy not in ("stop", "heal") or not failing or run.control is not None or run.status not in ACTIVE:
        return None
    a = failing[0]
    what = f"{a.signature} at step {a.last_step}: {a.message}"
    if policy == "stop":
        return _stop(run, what)
    if run.kind != "job":
        return _stop(run, f"{what} (heal needs a worker job; this run is {run.kind})")
    max_heals = int(cfg.get("max_heals", 2))
    used = events_store.count(session, run.id, "heal")
    if used >= max_heals:
        return _stop(run, f"{what} (on_failure: heal, all {max_heals} heals used)")
    remedy = remedy_for(a.signature, cfg, a.evidence, run.kind)
    diff = dict(remedy.get("config") or {})
    if not {k for k in diff if k != "remedy_of"}:
        return _stop(run, f"{what} (on_failure: heal, but no config change is left to try)")
    changes = [{"knob": c["knob"], "from": c.get("from"), "to": c.get("to")} for c in remedy.get("changes") or []]
    summary = ", ".join(f"{c['knob']} {c['from']!r} → {c['to']!r}" for c in changes)
    ev = events_store.create_heal(session, run.id, step=a.last_step, signature=a.signature, alert_id=a.id,
                             onset_step=a.first_step, changes=changes, config=diff,
                             message=f"heal {used + 1} of {max_heals}: {a.signature} since step {a.first_step}; "
                                     f"{summary}")
    run.control = "heal"
    run.stop_reason = f"heal #{ev.id}: {ev.message}"[:2000]  # the worker's answer names the event (store/queue.py)
    return "heal"


def pending_event(session: Session, run_id: int) -> dict[str, Any] | None:
    """The pending heal as the run's stream shows it (published once the decision commits)."""
    ev = events_store.pending_heal(session, run_id)
    return events_store.to_dict(ev) if ev is not None else None
