"""Workers' system samples (sys/* of docs/metrics.md): the latest on the workers row, a short series beside it."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ganscope.server.schema import Worker, WorkerSysSample
from ganscope.server.store.util import iso, utcnow

MAX_SERIES_ROWS = 5000  # one read's cap: 7 hours of 5-second samples


def _clean(values: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in values.items()}


def record(session: Session, worker_id: str, values: dict[str, float | None], run_id: int | None,
           keep_minutes: float) -> None:
    """Store one sample (the worker row must exist: touch_worker first) and prune the worker's old ones."""
    now = utcnow()
    vals = _clean(values)
    session.execute(update(Worker).where(Worker.id == worker_id).values(sys=vals, sys_at=now))
    session.add(WorkerSysSample(worker_id=worker_id, at=now, run_id=run_id, values=vals))
    # ix_worker_sys_worker_at: this worker's rows older than the window
    session.execute(delete(WorkerSysSample).where(WorkerSysSample.worker_id == worker_id,
                                                  WorkerSysSample.at < now - timedelta(minutes=keep_minutes)))


def series(session: Session, worker_id: str, minutes: float) -> dict[str, Any]:
    """{"times": [iso, ...], "run_ids": [...], "metrics": {name: [value|null, ...]}} over the last `minutes`,
    oldest first; a name missing from a sample is null there (columns stay aligned with times)."""
    cut = utcnow() - timedelta(minutes=minutes)
    rows = list(session.execute(  # ix_worker_sys_worker_at
        select(WorkerSysSample.at, WorkerSysSample.run_id, WorkerSysSample.values)
        .where(WorkerSysSample.worker_id == worker_id, WorkerSysSample.at >= cut)
        .order_by(WorkerSysSample.at.desc()).limit(MAX_SERIES_ROWS)).all())
    rows.reverse()
    names = sorted({n for r in rows for n in (r.values or {})})
    return {"times": [iso(r.at) for r in rows], "run_ids": [r.run_id for r in rows],
            "metrics": {n: [(r.values or {}).get(n) for r in rows] for n in names}}


def gpu_count(devices: list[Any]) -> int:
    """Accelerators among a worker's advertised devices (objects with a kind, or bare names)."""
    n = 0
    for d in devices or []:
        kind = d.get("kind") if isinstance(d, dict) else str(d).split(":", 1)[0].split(" ", 1)[0]
        if kind in ("cuda", "mps"):
            n += 1
    return n


def device_names(devices: list[Any]) -> list[str]:
    return [str(d.get("name", "")) if isinstance(d, dict) else str(d) for d in devices or []]
