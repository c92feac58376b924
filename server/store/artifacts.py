"""Samples, snapshots and checkpoints: files under the artifacts folder, rows pointing at them.

File names are chosen here from integers and validated kinds only: a client never
supplies a path. Files are written to a temporary name and renamed into place, so a
reader (or a crash) never sees half a PNG or half a checkpoint.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ganscope.server.schema import Checkpoint, Run, Sample, Snapshot
from ganscope.server.store.util import iso, upsert, utcnow

KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_dir(artifacts: Path, run_id: int) -> Path:
    return artifacts / "runs" / str(int(run_id))


def write_atomic(path: Path, data: bytes, *, fsync: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- samples -------------------------------------------------------------------------------------------

def sample_url(run_id: int, kind: str, step: int) -> str:
    return f"/api/runs/{run_id}/samples/{kind}/{step}.png"


def save_sample(session: Session, artifacts: Path, run_id: int, step: int, kind: str, png: bytes) -> str:
    """Store a PNG for (run, step, kind); a re-upload replaces it. Returns its URL."""
    rel = Path("runs") / str(run_id) / "samples" / f"{kind}-{step:010d}.png"
    write_atomic(artifacts / rel, png)
    upsert(session, Sample.__table__, [{"run_id": run_id, "step": step, "kind": kind, "path": rel.as_posix(),
                                        "created_at": utcnow()}], ["run_id", "step", "kind"], ["path", "created_at"])
    return sample_url(run_id, kind, step)


def list_samples(session: Session, run_id: int, kind: str | None = None) -> list[dict[str, Any]]:
    # uq_samples_run_step_kind: WHERE run_id=? ORDER BY step
    q = select(Sample.step, Sample.kind).where(Sample.run_id == run_id)
    if kind:
        q = q.where(Sample.kind == kind)
    return [{"step": r.step, "kind": r.kind, "url": sample_url(run_id, r.kind, r.step)}
            for r in session.execute(q.order_by(Sample.step, Sample.kind)).all()]


def sample_file(session: Session, artifacts: Path, run_id: int, kind: str, step: int) -> Path | None:
    rel = session.scalar(select(Sample.path).where(Sample.run_id == run_id, Sample.kind == kind, Sample.step == step))
    if rel is None:
        return None
    path = (artifacts / rel).resolve()
    return path if path.is_relative_to(artifacts) and path.is_file() else None


# --- snapshots -----------------------------------------------------------------------------------------

def finite_json(obj: Any) -> Any:
    """Replace NaN/Inf floats with None: PostgreSQL's json type refuses them and browsers choke on them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_json(v) for v in obj]
    return obj


def save_snapshot(session: Session, run_id: int, step: int, kind: str, payload: dict[str, Any]) -> None:
    upsert(session, Snapshot.__table__, [{"run_id": run_id, "step": step, "kind": kind,
                                          "payload": finite_json(payload)}],
           ["run_id", "kind", "step"], ["payload"])


def snapshots(session: Session, run_id: int, kind: str, step: int | None) -> dict[str, Any]:
    """{"steps": [...], "snapshot": {"step", "payload"} | None}: the one at or before step (latest if None)."""
    # uq_snapshots_run_kind_step: WHERE run_id=? AND kind=? ORDER BY step
    steps = list(session.scalars(select(Snapshot.step).where(Snapshot.run_id == run_id, Snapshot.kind == kind)
                                 .order_by(Snapshot.step)))
    q = select(Snapshot.step, Snapshot.payload).where(Snapshot.run_id == run_id, Snapshot.kind == kind)
    if step is not None:
        q = q.where(Snapshot.step <= step)
    row = session.execute(q.order_by(Snapshot.step.desc()).limit(1)).first()
    return {"steps": steps, "kind": kind,
            "snapshot": {"step": row.step, "payload": row.payload} if row is not None else None}


# --- checkpoints ---------------------------------------------------------------------------------------

def checkpoint_rel(run_id: int, step: int) -> Path:
    return Path("runs") / str(run_id) / "checkpoints" / f"step-{step:010d}.ckpt"


def record_checkpoint(session: Session, run: Run, step: int, size: int) -> None:
    """Row for a checkpoint file already moved into place; the run resumes from its newest one."""
    upsert(session, Checkpoint.__table__, [{"run_id": run.id, "step": step, "path": checkpoint_rel(run.id, step)
                                            .as_posix(), "size": size, "created_at": utcnow()}],
           ["run_id", "step"], ["path", "size", "created_at"])
    if run.checkpoint_step is None or step > run.checkpoint_step:
        run.checkpoint_step = step


def checkpoint_file(session: Session, artifacts: Path, run_id: int,
                    step: int | None = None) -> tuple[int, Path] | None:
    """(step, path) of the newest checkpoint (or the one at step); None when there is none."""
    # uq_checkpoints_run_step: WHERE run_id=? ORDER BY step DESC LIMIT 1
    q = select(Checkpoint.step, Checkpoint.path).where(Checkpoint.run_id == run_id)
    if step is not None:
        q = q.where(Checkpoint.step == step)
    row = session.execute(q.order_by(Checkpoint.step.desc()).limit(1)).first()
    if row is None:
        return None
    path = (artifacts / row.path).resolve()
    return (row.step, path) if path.is_relative_to(artifacts) and path.is_file() else None


def list_checkpoints(session: Session, run_id: int) -> list[dict[str, Any]]:
    return [{"step": r.step, "size": r.size, "created_at": iso(r.created_at),
             "url": f"/api/runs/{run_id}/checkpoints/{r.step}"}
            for r in session.execute(select(Checkpoint.step, Checkpoint.size, Checkpoint.created_at)
                                     .where(Checkpoint.run_id == run_id).order_by(Checkpoint.step)).all()]
