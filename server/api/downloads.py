"""Downloads from the run page: every metric point as CSV or JSON, sample PNGs as one zip, and the
ingest clock the charts' time axes read.

The export is the bytes `ganscope export` writes (ganscope/export.py renders both), streamed one
metric at a time so a million-step run never sits in memory as text.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from ganscope.export import csv_text, json_text
from ganscope.server.api.common import not_found
from ganscope.server.db import Database
from ganscope.server.deps import DB, RunId, SettingsDep
from ganscope.server.downsample import to_json
from ganscope.server.store import artifacts, clock as clock_store
from ganscope.server.store import metrics as metrics_store
from ganscope.server.store import runs as runs_store

router = APIRouter(tags=["runs"])


def _series(db: Database, run_id: int, names: list[str]) -> Iterator[tuple[str, list[int], list[float | None]]]:
    for name in names:
        with db.read() as s:
            raw = metrics_store.read_raw(s, run_id, [name])
        if name in raw:
            data = to_json(*raw[name])
            yield name, data["steps"], data["values"]


@router.get("/api/runs/{run_id}/export", summary="Every point of every metric, as CSV or JSON",
            responses={200: {"content": {"text/csv": {}, "application/json": {}}}, 404: {"description": "unknown run"}})
def export_run(run_id: RunId, db: DB,
               format: Annotated[Literal["csv", "json"], Query(description="csv: metric,step,value rows; json: "
                                                               "{run, metrics}")] = "csv") -> StreamingResponse:
    """What `ganscope export RUN --format csv|json` writes: no downsampling, non-finite as `nan` / null."""
    with db.read() as s:
        run = runs_store.get_run(s, run_id)
        if run is None:
            raise not_found(run_id)
        detail = runs_store.detail(s, run)
        names = sorted(metrics_store.names(s, run_id))
    series = _series(db, run_id, names)
    if format == "csv":
        body, media = csv_text(series), "text/csv; charset=utf-8"
    else:
        body, media = json_text(detail, series), "application/json"
    return StreamingResponse((piece.encode() for piece in body), media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="run-{run_id}-metrics.{format}"'})


@router.get("/api/runs/{run_id}/samples.zip", summary="A run's sample images as one zip",
            responses={200: {"content": {"application/zip": {}}}, 404: {"description": "unknown run or no samples"}})
def samples_zip(run_id: RunId, db: DB, settings: SettingsDep,
                kind: Annotated[str | None, Query(max_length=32, description="only this kind (grid, real, "
                                                                              "interp, walk)")] = None
                ) -> StreamingResponse:
    """Every sample PNG (or those of one kind) as `<kind>-<step>.png` entries."""
    with db.read() as s:
        if runs_store.get_run(s, run_id) is None:
            raise not_found(run_id)
        found = [(item, artifacts.sample_file(s, settings.artifacts_dir, run_id, item["kind"], item["step"]))
                 for item in artifacts.list_samples(s, run_id, kind)]
    files = [(f"{item['kind']}-{item['step']:08d}.png", path) for item, path in found if path is not None]
    if not files:
        raise HTTPException(404, f"run {run_id} has no {kind + ' ' if kind else ''}samples yet")
    # PNGs do not compress further: store them, and spill to disk past a few MB.
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as z:
        for name, path in files:
            z.write(path, name)
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        with spool:
            while block := spool.read(1 << 16):
                yield block

    suffix = f"-{kind}" if kind else ""
    return StreamingResponse(chunks(), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="run-{run_id}-samples{suffix}.zip"'})


@router.get("/api/runs/{run_id}/clock", summary="When the server took in the run's steps")
def run_clock(run_id: RunId, db: DB) -> dict[str, Any]:
    """{"steps": [...], "t": [...]}: a batch's highest step and the server's time (Unix seconds) when it
    arrived, at most four a second. Charts place steps in between by linear interpolation."""
    with db.read() as s:
        if runs_store.get_run(s, run_id) is None:
            raise not_found(run_id)
        return clock_store.read(s, run_id)
