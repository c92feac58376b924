"""Webhook deliveries: one row per (event, target), written by the notifier's sender threads."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ganscope.server.schema import Notification
from ganscope.server.store.util import iso, utcnow


def to_dict(n: Notification) -> dict[str, Any]:
    return {"id": n.id, "run_id": n.run_id, "alert_id": n.alert_id, "event": n.event, "scope": n.scope,
            "target": n.target, "format": n.format, "status": n.status, "attempts": n.attempts,
            "http_status": n.http_status, "error": n.error, "created_at": iso(n.created_at),
            "updated_at": iso(n.updated_at), "sent_at": iso(n.sent_at), "payload": n.payload}


def insert(session: Session, *, run_id: int | None, alert_id: int | None, event: str, scope: str, target: str,
           fmt: str, payload: dict[str, Any]) -> int:
    now = utcnow()
    row = Notification(run_id=run_id, alert_id=alert_id, event=event, scope=scope, target=target, format=fmt,
                       status="sending", attempts=0, payload=payload, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row.id


def record_attempt(session: Session, delivery_id: int, *, status: str, attempts: int, http_status: int | None,
                   error: str | None) -> None:
    """After each try: sent, retrying (with why) or failed."""
    now = utcnow()
    values: dict[str, Any] = {"status": status, "attempts": attempts, "http_status": http_status,
                              "error": error[:2000] if error else None, "updated_at": now}
    if status == "sent":
        values["sent_at"] = now
    session.execute(update(Notification).where(Notification.id == delivery_id).values(**values))


def list_for_run(session: Session, run_id: int, limit: int, before: int | None) -> list[Notification]:
    """A run's deliveries, newest first (ix_notifications_run)."""
    q = select(Notification).where(Notification.run_id == run_id)
    if before is not None:
        q = q.where(Notification.id < before)
    return list(session.scalars(q.order_by(Notification.id.desc()).limit(limit)))


def list_all(session: Session, limit: int, before: int | None, status: str | None) -> list[Notification]:
    """Every delivery, newest first (the primary key)."""
    q = select(Notification)
    if before is not None:
        q = q.where(Notification.id < before)
    if status is not None:
        q = q.where(Notification.status == status)
    return list(session.scalars(q.order_by(Notification.id.desc()).limit(limit)))


def fail_unfinished(session: Session, ids: list[int], why: str) -> None:
    """Deliveries this process was still working on when it stopped."""
    if ids:
        session.execute(update(Notification).where(Notification.id.in_(ids),
                                                   Notification.status.in_(("sending", "retrying")))
                        .values(status="failed", error=why, updated_at=utcnow()))
