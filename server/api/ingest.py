"""Ingest for workers and SDK scripts: metric batches, sample PNGs, snapshots, checkpoints.

Metric batches are columnar ({"series": {name: {"steps": [...], "values": [...]}}}) and parsed
straight from the body with orjson: no per-point objects, no pydantic pass over thousands of
numbers. Values may be numbers, null (NaN) or "nan" / "inf" / "-inf". Storage failures answer
503 so the sender keeps its spool and retries; nothing is dropped silently.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from ganscope.server.api import storage_stall
from ganscope.server.api.common import (
    json_response,
    json_limit, not_found, parse_json, read_body, storage_errors, unprocessable, upload_limit,
)
from ganscope.server.api.wire import bad_metric_values
from ganscope.server.auth import Authorized
from ganscope.server.db import Database
from ganscope.server.disk_room import ensure_room
from ganscope.server.deps import DB, MAX_INT64, BrokerDep, SettingsDep, RunId, StepParam
from ganscope.server.downsample import to_json
from ganscope.server.live import Broker
from ganscope.server.store import artifacts, queue as queue_store, retention
from ganscope.server.store import clock as clock_store
from ganscope.server.store import metrics as metrics_store
from ganscope.server.store.runs import FINAL, get_run
from ganscope.server.store.util import utcnow

log = logging.getLogger("ganscope.ingest")
router = APIRouter(tags=["ingest"])

MAX_NAMES = 10_000
_NAME_BAD = re.compile(r"[\x00-\x1f\x7f*,]")  # control characters; '*' and ',' are query syntax
_METRICS_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["series"], "properties": {"series": {
        "type": "object", "description": "metric name -> columns",
        "additionalProperties": {"type": "object", "required": ["steps", "values"], "properties": {
            "steps": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "values": {"type": "array", "items": {
                "anyOf": [{"type": "number"}, {"type": "null"}, {"enum": ["nan", "inf", "-inf"]}]}}}}}}}}}}}


def parse_series(data: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Validate a metrics batch; a 422 lists every bad series at once."""
    if not isinstance(data, dict) or not isinstance(data.get("series"), dict):
        raise unprocessable([(["body", "series"], "expected {\"series\": {name: {\"steps\": [...], \"values\": [...]}}}")])
    raw = data["series"]
    if len(raw) > MAX_NAMES:
        raise unprocessable([(["body", "series"], f"{len(raw)} metric names in one batch; at most {MAX_NAMES}")])
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    errors: list[tuple[list[Any], str]] = []
    for name, col in raw.items():
        loc: list[Any] = ["body", "series", name]
        if not name or len(name) > 200 or _NAME_BAD.search(name):
            errors.append((loc, "metric name must be 1-200 characters without control characters, '*' or ','"))
            continue
        if not isinstance(col, dict) or not isinstance(col.get("steps"), list) or not isinstance(col.get("values"), list):
            errors.append((loc, "expected {\"steps\": [int, ...], \"values\": [number, ...]}"))
            continue
        steps, values = col["steps"], col["values"]
        if len(steps) != len(values):
            errors.append((loc, f"{len(steps)} steps but {len(values)} values"))
            continue
        if not steps:
            continue
        s = np.array(steps)
        if s.ndim != 1 or s.dtype.kind not in "iu":
            errors.append((loc + ["steps"], "steps must be integers (within int64)"))
            continue
        if int(s.min()) < 0 or int(s.max()) > MAX_INT64:
            errors.append((loc + ["steps"], "steps must be >= 0 and fit in 64 bits"))
            continue
        try:
            # null -> NaN; "nan", "inf", "-inf" parse as themselves. Anything not all-numeric (nulls, the
            # contract's strings) is checked one by one: numpy alone would take "1.5" and true as numbers.
            v = np.array(values)
            if v.dtype.kind in "iuf":
                v = v.astype(np.float64, copy=False)
            elif bad_metric_values(values):
                raise ValueError
            else:
                v = np.array(values, dtype=np.float64)
        except (TypeError, ValueError):
            errors.append((loc + ["values"], "values must be numbers, null or \"nan\"/\"inf\"/\"-inf\""))
            continue
        if v.ndim != 1:
            errors.append((loc + ["values"], "values must be a flat list of numbers"))
            continue
        out[name] = (s.astype(np.int64, copy=False), v)
    if errors:
        raise unprocessable(errors)
    return out


def refuse_if_finished(run: Any) -> None:
    """409 for data sent to a run that has finished: nothing may change a finished run's record.

    Workers and the SDK send a run's `finish` only after every earlier entry of their spool, so this
    refuses only data that really came late. An SDK run failed for its silence still takes data: its
    script was paused, not killed (a heartbeat or finish from it puts the run back). So does a run the
    server stopped because its storage failed: its worker kept what the server could not store, and
    replays it when space returns; refusing it then would lose exactly the data the stop was about.
    """
    if run.status in FINAL and not (run.kind == "sdk" and run.status == "failed" and _silent(run.error)) \
            and not (run.status == "stopped" and (run.stop_reason or "").startswith(storage_stall.REASON_PREFIX)):
        raise HTTPException(409, f"run {run.id} is already {run.status}: a finished run takes no more data")


def _silent(error: str | None) -> bool:
    return bool(error) and (error == queue_store.SDK_SILENT or error.startswith("no data nor heartbeat"))


def _answer_action(run: Any) -> queue_store.Action:
    if run.status == "queued":
        return queue_store.Action("release", f"run {run.id} was requeued; another worker will resume it")
    return queue_store.control_action(run)


def ingest_metrics(db: Database, broker: Broker, detectors_on: bool, run_id: int,
                   series: dict[str, tuple[np.ndarray, np.ndarray]], settings: Any) -> dict[str, Any]:
    with storage_stall.watch(db, settings, run_id, broker, "metrics"), storage_errors("storing metrics"), \
            db.write() as s:
        ensure_room(settings)
        run = get_run(s, run_id, lock=True)  # PostgreSQL: batches of one run write one at a time
        if run is None:
            raise not_found(run_id)
        refuse_if_finished(run)
        result = metrics_store.append(s, run_id, series)
        top = result.max_step
        clock_store.note(s, run_id, top)  # when these steps arrived: charts' wall-time axis
        if top is not None and top > run.step:
            run.step = top
        if run.status == "running" and result.accepted:
            run.heartbeat_at = utcnow()  # data is proof of life too (SDK runs have no heartbeat call)
        action = _answer_action(run)
    storage_stall.stored(run_id, "metrics")
    if result.accepted:
        # Points first, then any alert judged on them: a page shades an alert over points it already has.
        if broker.subscriber_count():
            broker.publish(run_id, "metrics", {"metrics": {n: to_json(st, v) for n, (st, v) in result.accepted.items()},
                                               "t": time.time()})
        if detectors_on:
            try:
                from ganscope.server.detectors import hook

                stopped = hook.process_ingest(db, broker, run_id, result.accepted, result.nonfinite)
            except Exception:  # noqa: BLE001 - points are committed; a detector bug must not make the sender retry
                log.exception("detectors failed on run %s", run_id)
                stopped = False
            if stopped:  # a detector just asked to stop the run: answer with that
                with db.read() as s:
                    run = get_run(s, run_id)
                    if run is not None:
                        action = _answer_action(run)
    return {"accepted": result.accepted_count, "duplicates": result.duplicates, "action": action.action,
            "reason": action.reason}


@router.post("/api/runs/{run_id}/metrics", openapi_extra=_METRICS_BODY,
             responses={404: {"description": "unknown run"}, 413: {"description": "body too large"},
                        503: {"description": "storage error: retry later"}})
async def post_metrics(run_id: RunId, request: Request, _: Authorized, db: DB, broker: BrokerDep,
                       settings: SettingsDep) -> dict[str, Any]:
    """Store a batch of points. Idempotent on (run, name, step): the first value wins.
    Answer {accepted, duplicates, action, reason}; action tells a worker to continue, cancel, stop or release."""
    series = parse_series(parse_json(await read_body(request, json_limit(request), "metrics batch")))
    detectors_on = settings.detectors.lower() not in ("off", "0", "false", "no")
    return await run_in_threadpool(ingest_metrics, db, broker, detectors_on, run_id, series, settings)


def _check_kind(kind: str) -> None:
    if not artifacts.KIND_RE.match(kind):
        raise unprocessable([(["query", "kind"], "kind must be 1-32 lowercase letters, digits or _")])


@router.post("/api/runs/{run_id}/samples", status_code=201,
             openapi_extra={"requestBody": {"required": True, "content": {"image/png": {"schema": {
                 "type": "string", "format": "binary"}}}}})
async def post_sample(run_id: RunId, request: Request, _: Authorized, db: DB, broker: BrokerDep,
                      settings: SettingsDep, step: Annotated[int, Query(ge=0, le=MAX_INT64)],
                      kind: Annotated[str, Query()] = "grid") -> Response:
    """A sample grid PNG (raw body) for a step; a re-upload replaces it. 201 {step, kind, url}."""
    _check_kind(kind)
    png = await read_body(request, json_limit(request), "sample image")
    if not png.startswith(artifacts.PNG_MAGIC):
        raise HTTPException(415, "body is not a PNG image (send the raw PNG bytes as image/png)")

    def save() -> str:
        with storage_stall.watch(db, settings, run_id, broker), storage_errors("saving a sample"), db.write() as s:
            ensure_room(settings, len(png))
            run = get_run(s, run_id)
            if run is None:
                raise not_found(run_id)
            refuse_if_finished(run)
            url = artifacts.save_sample(s, settings.artifacts_dir, run_id, step, kind, png)
            doomed = retention.samples_to_drop(s, settings.artifacts_dir, run_id, kind, settings.keep_samples)
        retention.unlink_all(doomed)  # after the commit
        storage_stall.stored(run_id)
        return url

    url = await run_in_threadpool(save)
    broker.publish(run_id, "sample", {"step": step, "kind": kind, "url": url})
    return json_response({"step": step, "kind": kind, "url": url}, 201)


@router.post("/api/runs/{run_id}/snapshots", status_code=201)
async def post_snapshot(run_id: RunId, request: Request, _: Authorized, db: DB, broker: BrokerDep,
                        settings: SettingsDep) -> Response:
    """{"step", "kind": "toy", "payload": {...}}: a density/scatter snapshot; re-posting a step replaces it."""
    data = parse_json(await read_body(request, json_limit(request), "snapshot"))
    errors: list[tuple[list[Any], str]] = []
    if not isinstance(data, dict):
        raise unprocessable([(["body"], "expected {\"step\": int, \"kind\": str, \"payload\": {...}}")])
    step, kind, payload = data.get("step"), data.get("kind", "toy"), data.get("payload")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= MAX_INT64:
        errors.append((["body", "step"], "step must be an integer >= 0 that fits in 64 bits"))
    if not isinstance(kind, str) or not artifacts.KIND_RE.match(kind):
        errors.append((["body", "kind"], "kind must be 1-32 lowercase letters, digits or _"))
    if not isinstance(payload, dict):
        errors.append((["body", "payload"], "payload must be a JSON object"))
    if errors:
        raise unprocessable(errors)

    def save() -> None:
        with storage_stall.watch(db, settings, run_id, broker), storage_errors("saving a snapshot"), \
                db.write() as s:
            ensure_room(settings)
            run = get_run(s, run_id)
            if run is None:
                raise not_found(run_id)
            refuse_if_finished(run)
            artifacts.save_snapshot(s, run_id, step, kind, payload)
        storage_stall.stored(run_id)

    await run_in_threadpool(save)
    broker.publish(run_id, "snapshot", {"step": step, "kind": kind})
    return json_response({"step": step, "kind": kind}, 201)


def _must_exist(db: Database, run_id: int) -> None:
    with db.read() as s:
        if get_run(s, run_id) is None:
            raise not_found(run_id)


@router.put("/api/runs/{run_id}/checkpoints/{step}", status_code=201,
            openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}})
async def put_checkpoint(run_id: RunId, step: StepParam, request: Request, _: Authorized, db: DB,
                         settings: SettingsDep, broker: BrokerDep) -> Response:
    """Raw checkpoint bytes for a step, streamed to disk (never held whole in memory). 201 {step, size}."""
    if step < 0:
        raise unprocessable([(["path", "step"], "step must be >= 0")])
    await run_in_threadpool(_must_exist, db, run_id)  # before streaming what could be gigabytes
    limit = upload_limit(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"checkpoint of {declared} bytes exceeds this server's limit of {limit} bytes")
    final = settings.artifacts_dir / artifacts.checkpoint_rel(run_id, step)
    size = 0
    with storage_stall.watch(db, settings, run_id, broker), storage_errors("saving a checkpoint"):
        ensure_room(settings, int(declared) if declared is not None and declared.isdigit() else 0)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
    tmp = Path(tmp_name)
    try:
        with storage_stall.watch(db, settings, run_id, broker), storage_errors("saving a checkpoint"), \
                os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"checkpoint exceeds this server's limit of {limit} bytes")
                await run_in_threadpool(f.write, chunk)
            await run_in_threadpool(lambda: (f.flush(), os.fsync(f.fileno())))  # a resume point must survive a crash
        if size == 0:
            raise unprocessable([(["body"], "checkpoint body is empty")])

        def record() -> None:
            with storage_stall.watch(db, settings, run_id, broker), storage_errors("saving a checkpoint"), \
                    db.write() as s:
                run = get_run(s, run_id, lock=True)
                if run is None:
                    raise not_found(run_id)
                os.replace(tmp, final)
                artifacts.record_checkpoint(s, run, step, size)
                doomed = retention.checkpoints_to_drop(s, settings.artifacts_dir, run_id, settings.keep_checkpoints)
            retention.unlink_all(doomed)  # after the commit: never a row without its file
            storage_stall.stored(run_id)

        await run_in_threadpool(record)
    finally:
        tmp.unlink(missing_ok=True)
    return json_response({"step": step, "size": size}, 201)


def _send_checkpoint(db: Database, settings: Any, run_id: int, step: int | None) -> FileResponse:
    with db.read() as s:
        if get_run(s, run_id) is None:
            raise not_found(run_id)
        found = artifacts.checkpoint_file(s, settings.artifacts_dir, run_id, step)
    if found is None:
        raise HTTPException(404, f"run {run_id} has no checkpoint" + (f" at step {step}" if step is not None else ""))
    at, path = found
    return FileResponse(path, media_type="application/octet-stream", headers={"X-Ganscope-Step": str(at)},
                        filename=f"run{run_id}-step{at}.ckpt")


@router.get("/api/runs/{run_id}/checkpoints/latest", response_class=FileResponse)
def latest_checkpoint(run_id: RunId, db: DB, settings: SettingsDep) -> FileResponse:
    """The newest checkpoint's bytes, its step in the X-Ganscope-Step header; 404 when none."""
    return _send_checkpoint(db, settings, run_id, None)


@router.get("/api/runs/{run_id}/checkpoints/{step}", response_class=FileResponse)
def checkpoint_at(run_id: RunId, step: StepParam, db: DB, settings: SettingsDep) -> FileResponse:
    return _send_checkpoint(db, settings, run_id, step)


@router.get("/api/runs/{run_id}/checkpoints")
def list_checkpoints(run_id: RunId, db: DB) -> dict[str, Any]:
    with db.read() as s:
        if get_run(s, run_id) is None:
            raise not_found(run_id)
        return {"checkpoints": artifacts.list_checkpoints(s, run_id)}

