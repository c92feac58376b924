"""Worker calls: claim a job, heartbeat, finish (docs/contracts.md, wire protocol); the stall-recovery task."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ganscope.server.api.wire import WireInt
from ganscope.server import notify
from ganscope.server.api.common import http_errors, publish_status, storage_errors
from ganscope.server.auth import Authorized
from ganscope.server.deps import DB, BrokerDep, MAX_INT64, RunId, SettingsDep
from ganscope.server.schema import Worker
from ganscope.server.store import queue as queue_store
from ganscope.server.store import queue_view, worker_sys

log = logging.getLogger("ganscope.queue")
router = APIRouter(tags=["workers"])

WorkerId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[\w.:@\-]+$",
                                description="Stable id of the worker process (letters, digits, . : @ - _).")]


class DeviceInfo(BaseModel):
    """One device a worker offers (README "Scaling out"); `kind` cuda or mps counts as a GPU for `gpus` claims."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=100, description="cpu, cuda:0, mps")
    kind: Literal["cpu", "cuda", "mps"]
    model: str = Field("", max_length=200, description="e.g. NVIDIA H100 80GB HBM3")
    memory_mb: int | None = Field(None, ge=0, le=MAX_INT64, description="device memory in MiB")


SysName = Annotated[str, Field(pattern=r"^sys/[A-Za-z0-9_./-]{1,100}$")]
SysSample = Annotated[dict[SysName, float | None] | None, Field(
    max_length=256, description="The worker's latest system sample (sys/* names of docs/metrics.md), "
                                      "sent when it has a new one.")]


class ClaimBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    worker_id: WorkerId
    host: str = Field("", max_length=200)
    devices: list[Annotated[str, Field(max_length=200)] | DeviceInfo] = Field(
        default_factory=list, max_length=64,
        description="What the worker offers: device objects, or bare names as older workers send them. Only "
                    "jobs asking for at most as many GPUs (JobConfig `gpus`) as listed here are claimed.")
    sys: SysSample = None
    version: str = Field("", max_length=40, description="ganscope version the worker runs (shown on /workers).")


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    worker_id: WorkerId
    run_id: WireInt | None = Field(None, ge=1, le=2**31 - 1)
    step: WireInt | None = Field(None, ge=0, le=MAX_INT64)
    sys: SysSample = None


class FinishBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    worker_id: WorkerId | None = None
    status: Literal["succeeded", "failed", "cancelled", "stopped", "handback"]
    step: WireInt | None = Field(None, ge=0, le=MAX_INT64)
    error: str | None = Field(None, max_length=100_000)


@router.post("/api/workers/claim", responses={204: {"description": "nothing is queued"}})
def claim(body: ClaimBody, _: Authorized, db: DB, broker: BrokerDep, settings: SettingsDep) -> Any:
    """The best queued job this worker's devices fit (a job's `gpus` at most the GPUs it lists):
    {run_id, config, attempt, resume}; 204 when none is queued."""
    devices = [d.model_dump() if isinstance(d, DeviceInfo) else d for d in body.devices]
    with storage_errors("claiming a job"), db.write() as s:
        run = queue_store.claim(s, body.worker_id, body.host, devices, gpus=worker_sys.gpu_count(devices),
                                 version=body.version)
        if body.sys:
            worker_sys.record(s, body.worker_id, body.sys, run.id if run else None, settings.worker_sys_keep_minutes)
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
def heartbeat(body: HeartbeatBody, _: Authorized, db: DB, settings: SettingsDep) -> dict[str, Any]:
    """I am alive (at step), with my latest system sample. Answer: {action: continue|cancel|stop|release, reason}."""
    with storage_errors("recording a heartbeat"), db.write() as s:
        action, _run = queue_store.heartbeat(s, body.worker_id, body.run_id, body.step)
        if body.sys:
            worker_sys.record(s, body.worker_id, body.sys, body.run_id, settings.worker_sys_keep_minutes)
    return {"action": action.action, "reason": action.reason}


@router.post("/api/runs/{run_id}/finish")
def finish(run_id: RunId, body: FinishBody, _: Authorized, db: DB, broker: BrokerDep) -> dict[str, Any]:
    """Final status of a run (or 'handback': requeue). 409 when the worker does not hold the run."""
    with http_errors(), storage_errors("finishing a run"), db.write() as s:
        run, changed = queue_store.finish(s, run_id, body.worker_id, body.status, body.step, body.error)
        status = run.status
        if changed:
            notify.run_changed(s, run)  # webhooks: stopped / failed / succeeded, once this commits
    if changed:
        log.info("run %s finished as %s (worker %s)", run_id, status, body.worker_id)
        publish_status(db, broker, run_id)
    return {"status": status, "run_id": run_id}


@router.get("/api/workers")
def list_workers(db: DB, settings: SettingsDep) -> dict[str, Any]:
    """The workers page's data: every worker seen in the last day (alive ones first: host, devices,
    version, state busy|idle|lost, current run and step, last heartbeat) and the queue in claim order
    (position, priority; PATCH /api/runs/{id} {"priority"} moves a job)."""
    with db.read() as s:
        return {"workers": queue_view.workers(s, settings.stall_seconds), "queue": queue_view.queue_rows(s),
                "stall_seconds": settings.stall_seconds}
@router.get("/api/workers/{worker_id}/sys", responses={404: {"description": "unknown worker"}})
def worker_sys_series(worker_id: str, db: DB, minutes: Annotated[float, Query(
        gt=0, le=7 * 24 * 60, description="how far back, in minutes (the server keeps "
                                          "GANSCOPE_WORKER_SYS_KEEP_MINUTES)")] = 10.0) -> dict[str, Any]:
    """A worker's system samples, oldest first: {"worker_id", "times": [iso], "run_ids": [run or null],
    "metrics": {name: [value or null]}}, columns aligned with times (one chart per sys/* name)."""
    with db.read() as s:
        if s.get(Worker, worker_id) is None:
            raise HTTPException(404, f"worker {worker_id!r} not found")
        return {"worker_id": worker_id, **worker_sys.series(s, worker_id, minutes)}


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
                notify.run_changed(s, run)  # a job out of attempts fails: its owner hears of it
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
