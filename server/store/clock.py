"""The ingest clock: when the server took in a run's steps, so charts can plot against time.

Neither the worker nor the SDK sends a time with its points, and `perf/step_s` leaves out
sampling, checkpoints and waits, so summing it drifts. The server's own clock at ingest is
what it can vouch for: each accepted batch notes (its highest step, now), at most every
CLOCK_EVERY_S per run (a fast sender's many small batches cost one row a quarter second).
Steps in between are placed by linear interpolation on the page. A batch replayed late from
a worker's spool is timed when it arrived; docs/design.md says so.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ganscope.server.schema import RunClock
from ganscope.server.store.util import upsert

CLOCK_EVERY_S = 0.25

_last_noted: dict[int, float] = {}
_lock = threading.Lock()


def note(session: Session, run_id: int, step: int | None, now: float | None = None) -> None:
    """Record that run_id reached `step` now (skipped within CLOCK_EVERY_S of this process's last note)."""
    if step is None:
        return
    now = time.time() if now is None else now
    with _lock:
        if now - _last_noted.get(run_id, 0.0) < CLOCK_EVERY_S:
            return
        _last_noted[run_id] = now
    # A step already timed keeps its first time (a replay is not a new arrival).
    upsert(session, RunClock.__table__, [{"run_id": run_id, "step": int(step), "t": now}], ["run_id", "step"], [])


def read(session: Session, run_id: int) -> dict[str, Any]:
    """{"steps": [...], "t": [...]} ordered by step (primary key order), times as Unix seconds."""
    rows = session.execute(select(RunClock.step, RunClock.t).where(RunClock.run_id == run_id)
                           .order_by(RunClock.step)).all()
    return {"steps": [int(step) for step, _ in rows], "t": [float(t) for _, t in rows]}


def forget(run_id: int) -> None:
    """Drop the throttle's memory of a deleted run."""
    with _lock:
        _last_noted.pop(run_id, None)
