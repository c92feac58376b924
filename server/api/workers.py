"""Worker calls: claim a job, heartbeat, finish (docs/contracts.md, wire protocol); the stall-recovery task."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ganscope.server.api.common import http_errors, publish_status, storage_errors
from ganscope.server.auth import Authorized
from ganscope.server.deps import DB, BrokerDep, MAX_INT64, RunId
from ganscope.server.store import queue as queue_store
from ganscope.server.store.util import iso

log = logging.getLogger("ganscope.queue")
router = APIRouter(tags=["workers"])

WorkerId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[\w.:@\-]+$",
                                description="Stable id of the worker process (letters, digits, . : @ - _).")]


class ClaimBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    worker_id: WorkerId
    host: str = Field("", max_length=200)
    devices: list[str] = Field(default_factory=list, max_length=64)


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    worker_id: WorkerId
    run_id: int | None = Field(None, ge=1, le=MAX_INT64)
    step: int | None = Field(None, ge=0, le=MAX_INT64)


class FinishBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    worker_id: WorkerId | None = None
    status: Literal["succeeded", "failed", "cancelled", "stopped", "handback"]
    step: int | None = Field(None, ge=0, le=MAX_INT64)
    error: str | None = Field(None, max_length=100_000)


@router.post("/api/workers/claim", responses={204: {"description": "nothing is queued"}})
def claim(body: ClaimBody, _: Authorized, db: DB, broker: BrokerDep) -> Any:
    """The best queued job for this worker: {run_id, config, attempt, resume}; 204 when the queue is empty."""
    with storage_errors("claiming a job"), db.write() as s:
        run = queue_store.claim(s, body.worker_id, body.host, body.devices)
        if run is None:
            answer = None
        else:
            resume = None
            if run.checkpoint_step is not None:
                resume = {"step": run.checkpoint_step, "url": f"/api/runs/{run.id}/checkpoints/latest"}
            answer = {"run_id": run.id, "config": run.config, "attempt": run.attempts, "resume": resume,
                      "max_attempts": run.max_attempts, "name": run.name}
    if answer is None:
        return Response(status_code=204)
    log.info("worker %s claimed run %s (attempt %s)", body.worker_id, answer["run_id"], answer["attempt"])
    publish_status(db, broker, answer["run_id"])
    return answer


@router.post("/api/workers/heartbeat")
def heartbeat(body: HeartbeatBody, _: Authorized, db: DB) -> dict[str, Any]:
    """I am alive (at step). Answer: {action: continue|cancel|stop|release, reason}."""
    with storage_errors("recording a heartbeat"), db.write() as s:
        action, _run = queue_store.heartbeat(s, body.worker_id, body.run_id, body.step)
    return {"action": action.action, "reason": action.reason}


@router.post("/api/runs/{run_id}/finish")
def finish(run_id: RunId, body: FinishBody, _: Authorized, db: DB, broker: BrokerDep) -> dict[str, Any]:
    """Final status of a run (or 'handback': requeue). 409 when the worker does not hold the run."""
    with http_errors(), storage_errors("finishing a run"), db.write() as s:
        run, changed = queue_store.finish(s, run_id, body.worker_id, body.status, body.step, body.error)
        status = run.status
    if changed:
        log.info("run %s finished as %s (worker %s)", run_id, status, body.worker_id)
        publish_status(db, broker, run_id)
    return {"status": status, "run_id": run_id}


@router.get("/api/workers")
def list_workers(db: DB) -> dict[str, Any]:
    """Workers seen in the last five minutes."""
    with db.read() as s:
        rows = queue_store.live_workers(s)
        return {"workers": [{"id": w.id, "host": w.host, "devices": w.devices, "run_id": w.run_id,
                             "started_at": iso(w.started_at), "last_seen": iso(w.last_seen)} for w in rows]}


async def _recover_stalled_forever(app: FastAPI) -> None:
    """Every few seconds: jobs whose worker went silent are requeued (or failed past max_attempts)."""
    settings = app.state.settings
    db = app.state.db
    broker = app.state.broker
    interval = max(0.2, min(5.0, min(settings.stall_seconds, settings.sdk_heartbeat_seconds) / 4))

    def once() -> list[int]:
        with db.write() as s:
            changed = queue_store.recover_stalled(s, settings.stall_seconds, settings.sdk_stall_seconds,
                                                  settings.sdk_heartbeat_seconds)
            for run in changed:
                log.warning("run %s: %s -> %s", run.id, run.error, run.status)
            return [r.id for r in changed]

    while True:
        await asyncio.sleep(interval)
        try:
            for run_id in await run_in_threadpool(once):
                await run_in_threadpool(publish_status, db, broker, run_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep recovering after a transient database error
            log.exception("stalled-job recovery pass failed; retrying")


def setup(app: FastAPI) -> None:
    app.state.background_tasks.append(_recover_stalled_forever)
