"""Run events: storage functions over the `run_events` table (server/schema.py), each taking a Session.

A heal event is created `pending` when a failing alert makes the server heal a run (server/detectors/
heal.py), and completed by `apply_heal` when the worker reports where it resumed: the run's record is
rewound to that step, the alert closed, the patched config stored and the run's control cleared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ganscope.server.schema import Alert, Run, RunEvent
from ganscope.server.store.rewind import rewind
from ganscope.server.store.util import iso, utcnow

SEVERITY_RANK = {"healthy": 0, "warning": 1, "failing": 2}


def to_dict(e: RunEvent) -> dict[str, Any]:
    """The REST shape of docs/contracts.md (`GET /api/runs/{id}/events`)."""
    return {"id": e.id, "run_id": e.run_id, "kind": e.kind, "step": e.step, "signature": e.signature,
            "alert_id": e.alert_id, "onset_step": e.onset_step, "from_step": e.from_step,
            "rollback_step": e.rollback_step, "changes": e.changes or [], "config": e.config or {},
            "message": e.message, "status": "applied" if e.applied_at is not None else "pending",
            "created_at": iso(e.created_at), "applied_at": iso(e.applied_at)}


def list_for_run(session: Session, run_id: int, kind: str | None = None) -> list[RunEvent]:
    q = select(RunEvent).where(RunEvent.run_id == run_id)  # ix_run_events_run
    if kind is not None:
        q = q.where(RunEvent.kind == kind)
    return list(session.scalars(q.order_by(RunEvent.id)))


def count(session: Session, run_id: int, kind: str) -> int:
    return int(session.scalar(select(func.count()).select_from(RunEvent)  # ix_run_events_run
                              .where(RunEvent.run_id == run_id, RunEvent.kind == kind)) or 0)


def pending_heal(session: Session, run_id: int) -> RunEvent | None:
    """The heal the run's worker has been told of and not yet reported applied (at most one)."""
    return session.scalar(select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.kind == "heal",  # ix_run_events_run
                                                 RunEvent.applied_at.is_(None)).order_by(RunEvent.id.desc()).limit(1))


def create_heal(session: Session, run_id: int, *, step: int, signature: str, alert_id: int | None,
                onset_step: int, changes: list[dict[str, Any]], config: dict[str, Any], message: str) -> RunEvent:
    row = RunEvent(run_id=run_id, kind="heal", step=int(step), signature=signature, alert_id=alert_id,
                   onset_step=int(onset_step), changes=changes, config=config, message=message[:2000],
                   created_at=utcnow())
    session.add(row)
    session.flush()  # assigns the id the worker is told
    return row


def apply_heal(session: Session, artifacts: Path, run: Run, event: RunEvent, from_step: int,
               rollback_step: int) -> None:
    """The worker rolled back to `rollback_step` and trains on with the patched config: record it all."""
    rewind(session, artifacts, run, rollback_step)
    event.from_step, event.rollback_step, event.applied_at = int(from_step), int(rollback_step), utcnow()
    run.config = {**(run.config or {}), **(event.config or {})}
    if run.control == "heal":
        run.control, run.stop_reason = None, None
    now = utcnow()
    # The healed alert, and any opened on the abandoned stretch, describe training that no longer exists.
    worst = 0
    for a in session.scalars(select(Alert).where(Alert.run_id == run.id, Alert.status == "open")):  # ix_alerts_run_status
        if a.id == event.alert_id or a.signature == event.signature or a.first_step > rollback_step:
            a.status, a.closed_at, a.updated_at = "closed", now, now
        else:
            worst = max(worst, SEVERITY_RANK.get(a.severity, 0))
    run.health = next(k for k, v in SEVERITY_RANK.items() if v == worst)


def config_history(session: Session, run: Run) -> list[dict[str, Any]]:
    """Which knobs changed at which step: one entry per applied heal, oldest first (the launch config is `config` less these)."""
    out: list[dict[str, Any]] = []
    for e in list_for_run(session, run.id, "heal"):
        if e.applied_at is None:
            continue
        out.append({"step": e.rollback_step, "event_id": e.id, "kind": e.kind, "signature": e.signature,
                    "changes": {c["knob"]: c.get("to") for c in (e.changes or []) if "knob" in c}})
    return out
