"""Alerts: storage functions over the `alerts` table (server/schema.py), each taking a Session."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ganscope.server.schema import Alert, Run
from ganscope.server.store.util import iso, utcnow


def to_dict(a: Alert) -> dict[str, Any]:
    """The REST shape of docs/contracts.md (`GET /api/runs/{id}/alerts`)."""
    return {"id": a.id, "signature": a.signature, "severity": a.severity, "status": a.status,
            "first_step": a.first_step, "last_step": a.last_step, "message": a.message,
            "evidence": a.evidence, "remedy": a.remedy, "opened_at": iso(a.opened_at),
            "closed_at": iso(a.closed_at)}


def list_for_run(session: Session, run_id: int, status: str | None = None) -> list[Alert]:
    """A run's alerts, oldest first (ix_alerts_run_status)."""
    q = select(Alert).where(Alert.run_id == run_id)
    if status is not None:
        q = q.where(Alert.status == status)
    return list(session.scalars(q.order_by(Alert.first_step, Alert.id)))


def counts(session: Session, run_ids: list[int]) -> dict[int, tuple[int, int]]:
    """{run_id: (all alerts, open alerts)} for the runs list and run summaries."""
    if not run_ids:
        return {}
    rows = session.execute(
        select(Alert.run_id, Alert.status, func.count()).where(Alert.run_id.in_(run_ids))
        .group_by(Alert.run_id, Alert.status)).all()
    out: dict[int, list[int]] = {}
    for run_id, status, n in rows:
        c = out.setdefault(run_id, [0, 0])
        c[0] += n
        if status == "open":
            c[1] += n
    return {k: (v[0], v[1]) for k, v in out.items()}


def insert(session: Session, run_id: int, a: dict[str, Any]) -> Alert:
    now = utcnow()
    row = Alert(run_id=run_id, signature=a["signature"], severity=a["severity"], status=a.get("status", "open"),
                first_step=int(a["first_step"]), last_step=int(a["last_step"]), message=a["message"],
                evidence=a["evidence"], remedy=a["remedy"], opened_at=now, updated_at=now,
                closed_at=now if a.get("status") == "closed" else None)
    session.add(row)
    session.flush()  # assigns the id
    return row


def save(session: Session, alert_id: int, a: dict[str, Any]) -> Alert | None:
    """Write an alert's changing fields (last step, evidence, severity; closing stamps closed_at)."""
    row = session.get(Alert, alert_id)
    if row is None:
        return None
    now = utcnow()
    row.severity, row.first_step, row.last_step = a["severity"], int(a["first_step"]), int(a["last_step"])
    row.message, row.evidence, row.updated_at = a["message"], a["evidence"], now
    if a.get("status") == "closed" and row.status != "closed":
        row.status, row.closed_at = "closed", now
    return row


def set_health(session: Session, run_id: int, health: str) -> None:
    session.execute(update(Run).where(Run.id == run_id).values(health=health))
