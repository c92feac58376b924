"""Run events (heals) and the worker's side of a heal (docs/contracts.md, "Run events and heals").

* GET  /api/runs/{id}/events            every event of a run and its config history (what changed when)
* GET  /api/runs/{id}/heal              the worker asks what the pending heal is (changes, patched config)
* POST /api/runs/{id}/heal/{event_id}   the worker says where it resumed; the server rewinds the run's
                                        record to that step, stores the patched config, closes the alert
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ganscope.server import notify
from ganscope.server.api.common import not_found, publish_status, storage_errors
from ganscope.server.api.workers import WorkerId
from ganscope.server.auth import Authorized
from ganscope.server.deps import DB, MAX_INT64, BrokerDep, RunId, SettingsDep
from ganscope.server.detectors import hook
from ganscope.server.schema import Run, RunEvent
from ganscope.server.store import events as events_store
from ganscope.server.store import runs as runs_store

log = logging.getLogger("ganscope.heal")
router = APIRouter(tags=["runs"])


class HealApplied(BaseModel):
    model_config = ConfigDict(extra="forbid")
    worker_id: WorkerId
    from_step: int = Field(ge=0, le=MAX_INT64, description="The step the worker stopped the failing stretch at.")
    rollback_step: int = Field(ge=0, le=MAX_INT64, description="The checkpoint's step it resumes from (0: afresh).")


@router.get("/api/runs/{run_id}/events", responses={404: {"description": "unknown run"}})
def run_events(run_id: RunId, db: DB) -> dict[str, Any]:
    """A run's events, oldest first ({"id", "kind": "heal", "status": pending|applied, "step", "signature",
    "onset_step", "from_step", "rollback_step", "changes": [{"knob", "from", "to"}], "config", "message",
    "created_at", "applied_at"}), and `config_history`: [{"step", "event_id", "signature", "changes": {knob: to}}]."""
    with db.read() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise not_found(run_id)
        return {"events": [events_store.to_dict(e) for e in events_store.list_for_run(s, run_id)],
                "config_history": events_store.config_history(s, run)}


@router.get("/api/runs/{run_id}/heal", responses={404: {"description": "unknown run, or no heal pending"}})
def pending_heal(run_id: RunId, db: DB) -> dict[str, Any]:
    """The heal the run's control asks for: the event, and `config`, the run's config with the remedy applied.
    A read like every other (the same facts are in /events): open without a token."""
    with db.read() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise not_found(run_id)
        ev = events_store.pending_heal(s, run_id)
        if ev is None:
            raise HTTPException(404, f"run {run_id} has no pending heal")
        return {"event": events_store.to_dict(ev), "config": {**(run.config or {}), **(ev.config or {})}}


@router.post("/api/runs/{run_id}/heal/{event_id}", responses={404: {"description": "unknown run or event"},
                                                              409: {"description": "not this worker's, or done"}})
def heal_applied(run_id: RunId, event_id: RunId, body: HealApplied, _: Authorized, db: DB, broker: BrokerDep,
                 settings: SettingsDep) -> dict[str, Any]:
    """The worker rolled back to `rollback_step` and trains on with the patched config. Answers the event and
    the run's config. A repeat of the same report (its first answer lost) answers the same, changing nothing."""
    # The abandoned stretch's last batches may wait queued for judgement: drop them now (they are stored, and
    # rewound below), so no alert is opened on training that is about to stop existing.
    hook.forget(db, run_id)
    with storage_errors("applying a heal"), db.write() as s:
        run = runs_store.get_run(s, run_id, lock=True)
        if run is None:
            raise not_found(run_id)
        ev = s.get(RunEvent, event_id)
        if ev is None or ev.run_id != run_id or ev.kind != "heal":
            raise HTTPException(404, f"run {run_id} has no heal event {event_id}")
        if ev.applied_at is not None:
            if ev.rollback_step == body.rollback_step:
                return {"event": events_store.to_dict(ev), "config": run.config, "changed": False}
            raise HTTPException(409, f"heal {event_id} was already applied (rolled back to step {ev.rollback_step})")
        if run.status != "running" or run.worker_id != body.worker_id:
            raise HTTPException(409, f"worker {body.worker_id} does not hold run {run_id} (status {run.status}, "
                                     f"worker {run.worker_id})")
        if body.rollback_step > body.from_step:
            raise HTTPException(422, f"rollback_step {body.rollback_step} is after from_step {body.from_step}")
        events_store.apply_heal(s, settings.artifacts_dir, run, ev, body.from_step, body.rollback_step)
        out = events_store.to_dict(ev)
        notify.run_healed(s, run, out)
        config = run.config
    # The run's detector state was built on the abandoned stretch and the old config: rebuilt from the store.
    hook.forget(db, run_id)
    log.info("run %s healed (%s): rolled back from step %s to %s", run_id, out["signature"], body.from_step,
             body.rollback_step)
    broker.publish(run_id, "event", out)
    publish_status(db, broker, run_id)
    return {"event": out, "config": config, "changed": True}
