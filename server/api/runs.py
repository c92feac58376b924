"""Run reads (list, detail, metrics, samples, snapshots), cancel; SDK runs: creation, declared config, heartbeat."""

from __future__ import annotations

import re
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from ganscope.server.api.wire import WireInt
from ganscope.server.api.common import (
    json_response,
    http_errors, json_limit, not_found, parse_json, publish_status, read_body, storage_errors, unprocessable,
)
from ganscope.server.api import sdk_config
from ganscope.server.auth import Authorized
from ganscope.server.deps import DB, BrokerDep, SettingsDep, MAX_INT64, RunId, StepParam
from ganscope.server.downsample import downsample, select_range
from ganscope.server.store import artifacts, queue as queue_store
from ganscope.server.store import metrics as metrics_store
from ganscope.server.store import queue_view
from ganscope.server.store import runs as runs_store

router = APIRouter(tags=["runs"])
MAX_POINTS_CAP = 1_000_000
_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class SdkHeartbeat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    step: WireInt | None = Field(None, ge=0, le=MAX_INT64, description="The script's latest step.")


@router.get("/api/runs")
def list_runs(db: DB,
              status: Annotated[str | None, Query(description="comma-separated statuses, e.g. running,queued")] = None,
              q: Annotated[str | None, Query(max_length=200, description="name contains (case-insensitive) or id")] = None,
              kind: Annotated[str | None, Query(pattern="^(job|sdk)$")] = None,
              sort: Annotated[str, Query(description="created|started|finished|name|status|step|id|priority; "
                                                     "'-' prefix for descending")] = "-created",
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
              tag: Annotated[str | None, Query(max_length=1000, description="comma-separated tags; runs "
                                                                            "carrying all of them")] = None,
              archived: Annotated[str, Query(pattern="^(exclude|only|include)$", description="archived runs: "
                                             "left out (default), only them, or included")] = "exclude",
              config: Annotated[list[str] | None, Query(max_length=20, description="knob=value the config must "
                                                        "equal, e.g. config=dataset=ring8 (repeatable)")] = None,
              ) -> dict[str, Any]:
    """Runs with status, health, step, times and key config: {runs, total, limit, offset}."""
    statuses = [x.strip() for x in status.split(",") if x.strip()] if status else None
    tags = [t.strip() for t in tag.split(",") if t.strip()] if tag else None
    errors = []
    wanted = []
    for item in config or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            errors.append((["query", "config"], f"config filter {item!r} must be knob=value, e.g. dataset=ring8"))
            continue
        try:
            value = orjson.loads(raw)  # numbers, true/false, null; anything else is taken as text
        except orjson.JSONDecodeError:
            value = raw
        wanted.append((key.strip(), value))
    bad = [x for x in statuses or [] if x not in runs_store.STATUSES]
    if bad:
        errors.append((["query", "status"], f"unknown status {', '.join(bad)}; one of {', '.join(runs_store.STATUSES)}"))
    if sort.lstrip("-") not in runs_store.SORTS:
        errors.append((["query", "sort"], f"sort must be one of {', '.join(runs_store.SORTS)} (optionally '-' first)"))
    if errors:
        raise unprocessable(errors)
    with db.read() as s:
        runs, total = runs_store.list_runs(s, statuses=statuses, q=q, kind=kind, sort=sort, limit=limit,
                                           offset=offset, tags=tags, archived=archived, config=wanted)
        return {"runs": runs_store.summaries(s, runs), "total": total, "limit": limit, "offset": offset}


@router.post("/api/runs", status_code=201, responses={200: {"description": "a run with this key existed: that run"}})
async def create_sdk_run(request: Request, _: Authorized, db: DB, broker: BrokerDep) -> Response:
    """An SDK run: {"name", "config": {the script's own options}, "declared": {...}, "key"}. It starts 'running';
    log with POST /api/runs/{id}/metrics and end it with POST /api/runs/{id}/finish (no worker_id).

    `config` is kept as given and never refused for its keys; `declared` is what the detectors read
    (docs/sdk.md), 422 naming each unknown or bad field. A `key` (8-64 of A-Z a-z 0-9 _ -) makes the call
    idempotent: a retry answers 200 with the run the first call made."""
    data = parse_json(await read_body(request, json_limit(request)))
    if not isinstance(data, dict):
        raise unprocessable([(["body"], "expected {\"name\": str, \"config\": {...}, \"declared\": {...}}")])
    name = data.get("name") or ""
    errors: list[tuple[list[Any], str]] = []
    if not isinstance(name, str) or len(name) > 200:
        errors.append((["body", "name"], "name must be a string of at most 200 characters"))
    key = data.get("key")
    if key is not None and not (isinstance(key, str) and _KEY.match(key)):
        errors.append((["body", "key"], "key must be 8-64 characters of A-Z a-z 0-9 _ -"))
    user_config, why = sdk_config.user_config(data.get("config"))
    if why:
        errors.append((["body", "config"], why))
    if errors:
        raise unprocessable(errors)
    declared, notes = sdk_config.declared_part(data.get("declared"), user_config)

    def create() -> tuple[int, bool]:
        with storage_errors("creating a run"), db.write() as s:
            run, created = runs_store.create_sdk_run(s, name, declared, user_config, key)
            return run.id, created

    run_id, created = await run_in_threadpool(create)
    summary = await run_in_threadpool(publish_status, db, broker, run_id) if created else None
    if summary is None:
        with db.read() as s:
            summary = runs_store.summary(s, runs_store.get_run(s, run_id))
    return json_response({**summary, "config": declared if created else summary.get("config"), "notes": notes},
                         201 if created else 200)


@router.patch("/api/runs/{run_id}/config")
async def declare_sdk_config(run_id: RunId, request: Request, _: Authorized, db: DB, broker: BrokerDep) -> Response:
    """{"declared": {...}}: change what an SDK run declared (run.watch() sends its nets' layer order this way).
    Given fields replace the stored ones, a null removes one; 422 names unknown or bad fields, 409 for a job."""
    data = parse_json(await read_body(request, json_limit(request)))
    if not isinstance(data, dict) or not isinstance(data.get("declared"), dict):
        raise unprocessable([(["body", "declared"], "expected {\"declared\": {field: value or null}}")])
    patch = data["declared"]
    sdk_config.declared_part({k: v for k, v in patch.items() if v is not None}, None)  # 422 on a bad field

    def apply() -> dict[str, Any]:
        with http_errors(), storage_errors("declaring a run's config"), db.write() as s:
            run = runs_store.get_run(s, run_id, lock=True)
            if run is None:
                raise not_found(run_id)
            if run.kind != "sdk":
                raise HTTPException(409, f"run {run_id} is a job: its config is the JobConfig it was launched with")
            merged = {k: v for k, v in {**(run.config or {}), **patch}.items() if v is not None}
            declared, _ = sdk_config.declared_part(merged, None)
            runs_store.declare(run, declared)
            return declared

    declared = await run_in_threadpool(apply)
    sdk_config.forget_detector(db, run_id)  # the next batch is judged with the new declaration
    await run_in_threadpool(publish_status, db, broker, run_id)
    return json_response({"id": run_id, "config": declared})


@router.post("/api/runs/{run_id}/heartbeat")
def sdk_heartbeat(run_id: RunId, body: SdkHeartbeat, _: Authorized, db: DB, broker: BrokerDep) -> dict[str, Any]:
    """An SDK script is alive (at step): {action: continue|cancel|stop|release, reason}. Once a run has had one,
    its heartbeats going silent for GANSCOPE_SDK_HEARTBEAT_SECONDS fail it (the script was killed)."""
    with http_errors(), storage_errors("recording a heartbeat"), db.write() as s:
        action, _run, revived = queue_store.sdk_heartbeat(s, run_id, body.step)
    if revived:
        publish_status(db, broker, run_id)
    return {"action": action.action, "reason": action.reason}


@router.get("/api/runs/{run_id}")
def get_run(run_id: RunId, db: DB, settings: SettingsDep) -> dict[str, Any]:
    """One run: summary plus config and metric_names; `last` holds every metric's latest value; a queued
    job's `queue` says where it stands and why it waits."""
    with db.read() as s:
        run = runs_store.get_run(s, run_id)
        if run is None:
            raise not_found(run_id)
        out = runs_store.detail(s, run)
        out["queue"] = queue_view.standing(s, run, settings.stall_seconds)
        return out


@router.get("/api/runs/{run_id}/metrics")
def get_metrics(run_id: RunId, db: DB,
                names: Annotated[str | None, Query(description="comma-separated; 'grad/d/*' is a prefix; "
                                                             "omitted: every metric")] = None,
                max_points: Annotated[int, Query(ge=1, le=MAX_POINTS_CAP)] = 2000,
                since_step: Annotated[int | None, Query(ge=-1, le=MAX_INT64 - 1, description="only points after this step")] = None,
                start: Annotated[int | None, Query(ge=0, le=MAX_INT64, description="first step of a range (inclusive)")] = None,
                end: Annotated[int | None, Query(ge=0, le=MAX_INT64, description="last step of a range (inclusive)")] = None) -> Response:
    """{"metrics": {name: {"steps", "values"}}}, each at most max_points long; per bucket the first, min, max
    and last point and every non-finite point (null) are kept, so spikes and drops stay visible."""
    if start is not None and end is not None and end < start:
        raise unprocessable([(["query", "end"], f"end ({end}) is before start ({start})")])
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
    with db.read() as s:
        if runs_store.get_run(s, run_id) is None:
            raise not_found(run_id)
        resolved = metrics_store.resolve_names(s, run_id, wanted) if wanted else metrics_store.names(s, run_id)
        lo = start
        if since_step is not None:
            lo = since_step + 1 if lo is None else max(lo, since_step + 1)
        raw = metrics_store.read_raw(s, run_id, resolved, lo, end)
    out = {}
    for name, (st, v) in raw.items():
        st, v = downsample(*select_range(st, v, since_step), max_points)
        out[name] = {"steps": np.ascontiguousarray(st), "values": np.ascontiguousarray(v)}
    # orjson writes the numpy arrays directly (twice as fast as lists), and every NaN/Inf as null.
    return Response(orjson.dumps({"metrics": out}, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@router.get("/api/runs/{run_id}/samples")
def list_samples(run_id: RunId, db: DB, kind: Annotated[str | None, Query(max_length=32)] = None) -> dict[str, Any]:
    """{"samples": [{"step", "kind", "url"}]} by step; the URL serves the PNG."""
    with db.read() as s:
        if runs_store.get_run(s, run_id) is None:
            raise not_found(run_id)
        return {"samples": artifacts.list_samples(s, run_id, kind)}


@router.get("/api/runs/{run_id}/samples/{kind}/{step}.png", response_class=FileResponse)
def sample_png(run_id: RunId, kind: str, step: StepParam, db: DB, settings: SettingsDep) -> FileResponse:
    with db.read() as s:
        path = artifacts.sample_file(s, settings.artifacts_dir, run_id, kind, step)
    if path is None:
        raise HTTPException(404, f"run {run_id} has no {kind} sample at step {step}")
    # Re-uploads replace a step's image: let the browser revalidate rather than cache forever.
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.get("/api/runs/{run_id}/snapshots")
def get_snapshots(run_id: RunId, db: DB, kind: Annotated[str, Query(max_length=32)] = "toy",
                  step: Annotated[int | None, Query(ge=0, le=MAX_INT64, description="the snapshot at or before this step")] = None
                  ) -> dict[str, Any]:
    """{"steps": [...], "snapshot": {"step", "payload"} | null}: latest by default."""
    with db.read() as s:
        if runs_store.get_run(s, run_id) is None:
            raise not_found(run_id)
        return artifacts.snapshots(s, run_id, kind, step)


@router.post("/api/runs/{run_id}/cancel")
def cancel_run(run_id: RunId, _: Authorized, db: DB, broker: BrokerDep) -> dict[str, Any]:
    """Queued: cancelled now. Running: its worker is told at its next heartbeat and ends it as 'cancelled'.
    409 when the run has already finished."""
    with http_errors(), storage_errors("cancelling a run"), db.write() as s:
        run, changed = queue_store.cancel(s, run_id)
    summary = publish_status(db, broker, run_id) if changed else None
    if summary is None:
        with db.read() as s:
            summary = runs_store.summary(s, runs_store.get_run(s, run_id))
    return summary
