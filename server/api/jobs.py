"""POST /api/jobs: validate a job config against trainer.config.JobConfig and the server's limits, enqueue it."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from ganscope.server.detectors.catalog import validate_overrides
from ganscope.server.api.common import (
    json_limit, json_response, parse_json, publish_status, read_body, storage_errors, unprocessable,
)
from ganscope.server.auth import Authorized
from ganscope.server.deps import DB, BrokerDep, SettingsDep
from ganscope.server.store import runs as runs_store
from ganscope.server.api.wire import bool_ints
from ganscope.trainer.config import JobConfig

router = APIRouter(tags=["jobs"])
_SIGNATURE_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_THRESHOLD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic errors as FastAPI's 422 items, each naming its field under 'body'."""
    out = []
    for e in exc.errors(include_url=False):
        msg = e.get("msg", "")
        if e.get("type") == "extra_forbidden":
            msg = f"unknown field {'.'.join(map(str, e.get('loc', ())))!r}: not a job knob (see GET /api/knobs)"
        out.append({"loc": ["body", *e.get("loc", ())], "msg": msg, "type": e.get("type", "value_error")})
    return out


def validate_config(data: Any, limits: Any, *, partial_ok: bool = False) -> JobConfig:
    """JobConfig from a JSON object, or a 422 naming every bad field (schema, limits, detector overrides)."""
    if not isinstance(data, dict):
        raise unprocessable([(["body"], f"a job config must be a JSON object, got {type(data).__name__}")])
    strict = bool_ints(JobConfig, data)  # `"steps": true` is a client bug, not 1 step
    if strict:
        raise unprocessable(strict)
    try:
        cfg = JobConfig.model_validate(data)
    except ValidationError as exc:
        errors = validation_errors(exc)
        # pydantic stops before the cross-field checks and the caps: judge those on the raw values too,
        # so a form shows every problem at once instead of one more after each fix.
        raise unprocessable(errors + _raw_checks(data, limits, {str(e["loc"][1]) for e in errors
                                                                 if len(e["loc"]) > 1})) from None
    errors = cfg.check_limits(limits)
    # A typo'd signature or threshold would silently do nothing: name it against the catalog.
    for msg in validate_overrides(cfg.detectors):
        errors.append({"loc": ["body", "detectors"], "type": "value_error", "msg": msg})
    for sig, overrides in cfg.detectors.items():
        if not _SIGNATURE_ID.match(sig):
            errors.append({"loc": ["body", "detectors", sig], "type": "value_error",
                           "msg": f"detector id {sig!r} is not a signature id (lowercase letters, digits, _)"})
        for key, val in overrides.items():
            if not _THRESHOLD.match(key) or val != val or val in (float("inf"), float("-inf")):
                errors.append({"loc": ["body", "detectors", sig, key], "type": "value_error",
                               "msg": f"threshold {key!r} must be an identifier with a finite number"})
    if errors:
        raise unprocessable(errors)
    return cfg


def _raw_checks(data: dict[str, Any], limits: Any, flagged: set[str]) -> list[dict[str, Any]]:
    """The caps and dataset needs that JobConfig checks after its fields validate, on fields not already flagged."""
    out = []

    def number(field: str) -> float | None:
        v = data.get(field)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    for field, cap in (("batch_size", limits.max_batch_size), ("image_size", limits.max_image_size),
                       ("steps", limits.max_steps)):
        v = number(field)
        if field not in flagged and v is not None and v > cap:
            out.append({"loc": ["body", field], "type": "value_error.limit",
                        "msg": f"{field} {data[field]} exceeds this server's cap of {cap}"})
    if data.get("dataset") == "folder" and not data.get("data_root") and "data_root" not in flagged:
        out.append({"loc": ["body", "data_root"], "type": "value_error",
                    "msg": "dataset 'folder' needs data_root: the image folder's path inside the data root"})
    detectors = data.get("detectors")
    if "detectors" not in flagged and isinstance(detectors, dict) and \
            all(isinstance(v, dict) for v in detectors.values()):
        for msg in validate_overrides(detectors):
            out.append({"loc": ["body", "detectors"], "type": "value_error", "msg": msg})
    return out


_JOB_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": JobConfig.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


@router.post("/api/jobs", status_code=201, openapi_extra=_JOB_BODY,
             summary="Queue a training job", responses={422: {"description": "names each bad field"},
                                                        413: {"description": "body too large"}})
async def create_job(request: Request, _: Authorized, db: DB, broker: BrokerDep,
                     settings: SettingsDep) -> Response:
    """Body: a job config (every field optional; DCGAN defaults). 201 with the queued run's summary."""
    data = parse_json(await read_body(request, json_limit(request)))
    cfg = validate_config(data, settings.limits)

    def enqueue() -> int:
        with storage_errors("queueing a job"), db.write() as s:
            return runs_store.create_job(s, cfg).id

    run_id = await run_in_threadpool(enqueue)
    summary = await run_in_threadpool(publish_status, db, broker, run_id)
    return json_response(summary or {"id": run_id, "status": "queued"}, 201)


@router.get("/api/knobs", summary="Every job knob with default, constraints and help")
def knobs() -> dict[str, Any]:
    from ganscope.trainer.config import knob_catalog

    return {"knobs": knob_catalog()}
