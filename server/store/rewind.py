"""Rewind a run's record to a step: what a heal does when its worker rolls training back to a checkpoint.

Everything stored for steps after `step` belongs to the abandoned stretch of training and goes:
metric points (chunks trimmed, metric_latest recomputed), ingest clock rows, samples and snapshots,
checkpoints (rows and files). Without this the healed stretch could not be stored at all: ingest
keeps the first value sent for a step, so the re-trained steps would be taken for replays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ganscope.server.schema import Checkpoint, MetricLatest, Run, RunClock, Sample, Snapshot
from ganscope.server.store.metrics import F64, _INSERT_CHUNK, _chunk_rows, _Sql, decode_steps


def _metrics(session: Session, run_id: int, step: int) -> None:
    sql = _Sql(session)
    # ix_chunks_run_name_last: every chunk holding a point after `step`
    rows = sql.rows('SELECT id, name, first_step, last_step, n, steps, "values" FROM metric_chunks '
                    "WHERE run_id = ? AND last_step > ? ORDER BY name, last_step", (run_id, step))
    if not rows:
        return
    kept: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    removed: dict[str, tuple[int, int]] = {}  # name -> (points, non-finite points) dropped
    for _, name, first, last, n, sb, vb in rows:
        s = decode_steps(bytes(sb), first, last, n)
        v = np.frombuffer(bytes(vb), dtype=F64)
        cut = int(np.searchsorted(s, step, side="right"))
        if cut:
            kept.setdefault(name, []).append((s[:cut], v[:cut]))
        gone = v[cut:]
        pts, bad = removed.get(name, (0, 0))
        removed[name] = (pts + int(gone.size), bad + int(np.count_nonzero(~np.isfinite(gone))))
    sql.many("DELETE FROM metric_chunks WHERE id = ?", [(r[0],) for r in rows])
    inserts = []
    for name, parts in kept.items():
        inserts += _chunk_rows(run_id, name, np.concatenate([p[0] for p in parts]),
                               np.concatenate([p[1] for p in parts]))
    sql.many(_INSERT_CHUNK, inserts)
    for name, (pts, bad) in removed.items():
        latest = session.get(MetricLatest, (run_id, name))
        if latest is None:
            continue
        # the new latest point: the last one kept (in the trimmed chunk, or an untouched earlier one)
        top = sql.rows('SELECT first_step, last_step, n, steps, "values" FROM metric_chunks '
                       "WHERE run_id = ? AND name = ? ORDER BY last_step DESC LIMIT 1", (run_id, name))
        if not top:
            session.delete(latest)
            continue
        first, last, n, sb, vb = top[0]
        value = float(np.frombuffer(bytes(vb), dtype=F64)[-1])
        latest.step = int(decode_steps(bytes(sb), first, last, n)[-1])
        latest.value = value if np.isfinite(value) else None
        latest.count = max(0, int(latest.count) - pts)
        latest.nonfinite = max(0, int(latest.nonfinite) - bad)


def rewind(session: Session, artifacts: Path, run: Run, step: int) -> None:
    """Drop everything of `run` after `step`; the run's step and resume point move back with it."""
    run_id = run.id
    _metrics(session, run_id, step)
    session.execute(delete(RunClock).where(RunClock.run_id == run_id, RunClock.step > step))
    session.execute(delete(Snapshot).where(Snapshot.run_id == run_id, Snapshot.step > step))
    files = [artifacts / p for p in session.scalars(select(Sample.path).where(Sample.run_id == run_id,
                                                                             Sample.step > step))]
    files += [artifacts / p for p in session.scalars(select(Checkpoint.path).where(Checkpoint.run_id == run_id,
                                                                                   Checkpoint.step > step))]
    session.execute(delete(Sample).where(Sample.run_id == run_id, Sample.step > step))
    session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.step > step))
    run.step = step
    run.checkpoint_step = session.scalar(select(Checkpoint.step).where(Checkpoint.run_id == run_id)
                                         .order_by(Checkpoint.step.desc()).limit(1))
    for f in files:
        # Files go with their rows; artifacts' own names are derived from integers, never from a client.
        resolved = f.resolve()
        if resolved.is_relative_to(artifacts.resolve()):
            resolved.unlink(missing_ok=True)
