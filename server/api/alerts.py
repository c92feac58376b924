"""The signature catalog, a run's alerts, and alerts across runs for scripts that poll (docs/contracts.md)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import and_, or_, select

from ganscope.server.api.common import unprocessable
from ganscope.server.deps import DB, MAX_ID, RunId
from ganscope.server.detectors.catalog import catalog
from ganscope.server.schema import Alert, Run
from ganscope.server.store import alerts as alerts_store
from ganscope.server.store.util import iso

router = APIRouter(tags=["alerts"])


@router.get("/api/signatures")
def signatures() -> dict[str, Any]:
    """Every failure signature: meaning, rule, default thresholds with why, severity, persistence,
    and the remedy (JobConfig changes the dashboard pre-fills for a relaunch) with its sources."""
    return {"signatures": catalog()}


@router.get("/api/runs/{run_id}/alerts", responses={404: {"description": "unknown run"}})
def run_alerts(run_id: RunId, db: DB,
               status: Literal["open", "closed"] | None = Query(None, description="only open or closed alerts")
               ) -> dict[str, Any]:
    """A run's alerts, oldest first: signature, severity, status, first and last step, message,
    evidence (metrics, step window, observed values against thresholds) and remedy."""
    with db.read() as s:
        if s.get(Run, run_id) is None:
            raise HTTPException(404, f"run {run_id} not found")
        return {"alerts": [alerts_store.to_dict(a) for a in alerts_store.list_for_run(s, run_id, status)]}


def _parse_since(since: str | None) -> tuple[str, datetime | None, int]:
    """("id", None, N) | ("time", T, id) from `since`: an alert id, an ISO time, or a `next` cursor."""
    if since is None or since.strip() == "":
        return "id", None, 0
    text = since.strip()
    if text.isascii() and text.isdigit():  # str.isdigit alone takes "²", which int() refuses
        return "id", None, min(int(text), MAX_ID)  # no alert id is larger; PostgreSQL would refuse the number
    stamp, _, after = text.partition("~")  # a time-mode cursor: <ISO time>~<alert id>
    try:
        t = datetime.fromisoformat(stamp.replace(" ", "T"))
    except ValueError:
        t = None
    if t is None or (after and not (after.isascii() and after.isdigit())):
        raise unprocessable([(["query", "since"], f"since must be an alert id, an ISO 8601 time (e.g. "
                                                  f"2025-01-31T08:00:00Z) or a `next` cursor, got {since!r}")])
    t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    return "time", t, min(int(after or 0), MAX_ID)


@router.get("/api/alerts")
def alerts_since(db: DB,
                 since: Annotated[str | None, Query(max_length=80, description=(
                     "an alert id: alerts opened after it (ordered by id); an ISO time: alerts opened, updated or "
                     "closed after it (ordered by update time); or the previous answer's `next`"))] = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 status: Annotated[Literal["open", "closed"] | None, Query(description="only open or closed")] = None,
                 severity: Annotated[Literal["warning", "failing"] | None, Query()] = None) -> dict[str, Any]:
    """Alerts across runs for scripts that poll: {"alerts": [alert + run_id, run_name, updated_at], "next",
    "more"}. Pass `next` back as `since` to get what came after; `more` says a full page was cut short."""
    mode, t, after = _parse_since(since)
    q = select(Alert, Run.name).join(Run, Run.id == Alert.run_id)
    if mode == "id":
        q = q.where(Alert.id > after).order_by(Alert.id)  # primary key
    else:
        q = q.where(or_(Alert.updated_at > t, and_(Alert.updated_at == t, Alert.id > after))
                    ).order_by(Alert.updated_at, Alert.id)  # ix_alerts_updated
    if status:
        q = q.where(Alert.status == status)
    if severity:
        q = q.where(Alert.severity == severity)
    with db.read() as s:
        rows = s.execute(q.limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    out = [{**alerts_store.to_dict(a), "run_id": a.run_id, "run_name": name, "updated_at": iso(a.updated_at)}
           for a, name in rows]
    if not rows:
        nxt = since.strip() if since and since.strip() else "0"
    elif mode == "id":
        nxt = str(rows[-1][0].id)
    else:
        nxt = f"{iso(rows[-1][0].updated_at)}~{rows[-1][0].id}"
    return {"alerts": out, "next": nxt, "more": more}
