"""The signature catalog and a run's alerts (docs/contracts.md)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query

from ganscope.server.deps import DB
from ganscope.server.detectors.catalog import catalog
from ganscope.server.schema import Run
from ganscope.server.store import alerts as alerts_store

router = APIRouter(tags=["alerts"])


@router.get("/api/signatures")
def signatures() -> dict[str, Any]:
    """Every failure signature: meaning, rule, default thresholds with why, severity, persistence,
    and the remedy (JobConfig changes the dashboard pre-fills for a relaunch) with its sources."""
    return {"signatures": catalog()}


@router.get("/api/runs/{run_id}/alerts", responses={404: {"description": "unknown run"}})
def run_alerts(run_id: int, db: DB,
               status: Literal["open", "closed"] | None = Query(None, description="only open or closed alerts")
               ) -> dict[str, Any]:
    """A run's alerts, oldest first: signature, severity, status, first and last step, message,
    evidence (metrics, step window, observed values against thresholds) and remedy."""
    with db.read() as s:
        if s.get(Run, run_id) is None:
            raise HTTPException(404, f"run {run_id} not found")
        return {"alerts": [alerts_store.to_dict(a) for a in alerts_store.list_for_run(s, run_id, status)]}
