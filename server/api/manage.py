"""A user's changes to runs: tags, a note, archiving, queue priority, deletion; the tag list.

PATCH takes only the fields it is given, validates them all before changing anything and
answers 422 naming every bad one. DELETE removes a run with its points, alerts and files;
a job a worker is training must be cancelled first (409), so no worker writes into a run
that no longer exists.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select

from ganscope.server.api.wire import WireInt
from ganscope.server.api.common import (
    http_errors, json_limit, json_response, not_found, parse_json, publish_status, read_body, storage_errors,
    unprocessable,
)
from ganscope.server.api.jobs import validation_errors
from ganscope.server.auth import Authorized
from ganscope.server.deps import DB, BrokerDep, RunId, SettingsDep
from ganscope.server.schema import RunTag
from ganscope.server.store import queue as queue_store
from ganscope.server.store import runs as runs_store

log = logging.getLogger("ganscope.api")
router = APIRouter(tags=["runs"])

# Letters (any script), digits, space and . _ : + - /; no comma: `?tag=` lists are comma-separated.
TAG_RE = re.compile(r"^[\w][\w .:+/\-]{0,63}$")
Tag = Annotated[str, Field(min_length=1, max_length=runs_store.TAG_MAX, pattern=TAG_RE.pattern)]


class RunChanges(BaseModel):
    """Fields to change; absent ones stay as they are."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=200, description="Display name.")
    tags: list[Tag] | None = Field(None, max_length=runs_store.TAGS_PER_RUN,
                                   description="The run's tags (replaces them all).")
    note: str | None = Field(None, max_length=10_000, description="Free-text annotation.")
    archived: bool | None = Field(None, description="Archived runs are left out of the runs list by default.")
    priority: WireInt | None = Field(None, ge=-100, le=100, description="Queue priority of a queued job: higher first.")


_CHANGES_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": RunChanges.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


@router.patch("/api/runs/{run_id}", openapi_extra=_CHANGES_BODY, summary="Tag, annotate, archive, rename or "
              "re-prioritise a run", responses={404: {"description": "unknown run"},
                                                 409: {"description": "priority of a run that is not queued"},
                                                 422: {"description": "names each bad field"}})
async def change_run(run_id: RunId, request: Request, _: Authorized, db: DB, broker: BrokerDep) -> Response:
    """Body: any of {"name", "tags", "note", "archived", "priority"}. Answer: the run's summary."""
    data = parse_json(await read_body(request, json_limit(request)))
    if not isinstance(data, dict):
        raise unprocessable([(["body"], "expected a JSON object such as {\"tags\": [\"baseline\"]}")])
    try:
        changes = RunChanges.model_validate(data)
    except ValidationError as exc:
        raise unprocessable(validation_errors(exc)) from None

    def apply() -> None:
        with http_errors(), storage_errors("changing a run"), db.write() as s:
            run = runs_store.get_run(s, run_id, lock=True)
            if run is None:
                raise queue_store.NotFound(f"run {run_id} not found")
            if changes.priority is not None and run.status != "queued":
                raise queue_store.QueueConflict(f"run {run_id} is {run.status}: priority orders the queue, "
                                                "so only a queued job's can change")
            if changes.name is not None:
                run.name = changes.name
            if changes.note is not None:
                run.note = changes.note
            if changes.archived is not None:
                run.archived = changes.archived
            if changes.priority is not None:
                runs_store.set_priority(run, changes.priority)
            if changes.tags is not None:
                runs_store.set_tags(s, run, [t.strip() for t in changes.tags])

    await run_in_threadpool(apply)
    summary = await run_in_threadpool(publish_status, db, broker, run_id)
    return json_response(summary)


@router.delete("/api/runs/{run_id}", summary="Delete a run with its data and files",
               responses={404: {"description": "unknown run"},
                          409: {"description": "a worker is training it: cancel it first"}})
def delete_run(run_id: RunId, _: Authorized, db: DB, broker: BrokerDep, settings: SettingsDep) -> dict[str, Any]:
    """Deletes the run, its metric points, alerts, samples, snapshots and checkpoints. Answer {"deleted": id}."""
    with http_errors(), storage_errors("deleting a run"), db.write() as s:
        run = runs_store.get_run(s, run_id, lock=True)
        if run is None:
            raise not_found(run_id)
        if run.kind == "job" and run.status == "running":
            raise queue_store.QueueConflict(f"run {run_id} is being trained by worker {run.worker_id}: "
                                            "cancel it first, then delete it")
        runs_store.delete_run(s, run, settings.artifacts_dir)
    log.info("run %s deleted", run_id)
    # A status event with `deleted` set: the runs list drops the row.
    broker.publish(run_id, "status", {"id": run_id, "deleted": True})
    return {"deleted": run_id}


@router.get("/api/tags", summary="Every tag in use, with how many runs carry it")
def list_tags(db: DB) -> dict[str, Any]:
    """{"tags": [{"tag", "runs"}]} alphabetically."""
    with db.read() as s:
        # ix_run_tags_tag: GROUP BY tag
        rows = s.execute(select(RunTag.tag, func.count()).group_by(RunTag.tag).order_by(RunTag.tag)).all()
    return {"tags": [{"tag": t, "runs": int(n)} for t, n in rows]}
