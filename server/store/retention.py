"""Checkpoint and sample retention (GANSCOPE_KEEP_CHECKPOINTS, GANSCOPE_KEEP_SAMPLES).

Checkpoints: a long run keeps its newest K, the newest at least 100, 200 and 400 steps behind the newest
(an alert not yet opened dates its onset up to 400 steps back), and, for each of its alerts, the newest
one before the alert's onset (where a rollback resumes from); the others go. Samples: see samples_to_drop.

Without it every checkpoint stays (~5 MB each for a 64 px DCGAN, one per 500 steps by default) until the
disk fills. Rows are deleted in the caller's transaction; files are removed only after it commits, so a
crash in between leaves an orphan file rather than a row pointing at nothing.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ganscope.server.schema import Alert, Checkpoint, Sample


# Steps behind the newest checkpoint at which one more is kept: the detectors date an onset at most
# KEEP_STEPS (400) behind the newest step (server/detectors/engine.py).
ROLLBACK_REACH = (100, 200, 400)


def checkpoints_to_drop(session: Session, artifacts: Path, run_id: int, keep: int) -> list[Path]:
    """Delete the rows of checkpoints retention lets go; return their files, to unlink after commit.
    keep <= 0 keeps everything."""
    if keep <= 0:
        return []
    steps = list(session.scalars(select(Checkpoint.step).where(Checkpoint.run_id == run_id)
                                 .order_by(Checkpoint.step)))
    if len(steps) <= keep:
        return []
    kept = set(steps[-keep:])
    # An alert opens some steps after its symptom's onset (up to the detectors' window), and a heal rolls
    # back to a checkpoint before that onset: keep one as far back as each of these distances, so the
    # alert that has not opened yet still finds one however often the run checkpoints.
    for back in ROLLBACK_REACH:
        before = [s for s in steps if s <= steps[-1] - back]
        kept.add(before[-1] if before else steps[0])  # early in a run: the oldest, until one is that old
    for onset in session.scalars(select(Alert.first_step).where(Alert.run_id == run_id)):
        before = [s for s in steps if s < onset]
        if before:
            kept.add(before[-1])
    drop = [s for s in steps if s not in kept]
    if not drop:
        return []
    where = (Checkpoint.run_id == run_id) & Checkpoint.step.in_(drop)
    paths = [(artifacts / p).resolve() for p in session.scalars(select(Checkpoint.path).where(where))]
    session.execute(delete(Checkpoint).where(where))
    return [p for p in paths if p.is_relative_to(artifacts)]


def unlink_all(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def samples_to_drop(session: Session, artifacts: Path, run_id: int, kind: str, keep: int) -> list[Path]:
    """Sample retention (GANSCOPE_KEEP_SAMPLES) for very long runs: past `keep` images of one kind, drop the
    one whose removal leaves the smallest gap between its neighbours, never the first nor the newest
    keep // 2. The timeline stays spread over the whole run (older parts sparser), recent steps dense.
    Rows are deleted in the caller's transaction; returns the files to unlink after commit."""
    if keep <= 0:
        return []
    steps = list(session.scalars(select(Sample.step).where(Sample.run_id == run_id, Sample.kind == kind)
                                 .order_by(Sample.step)))
    drop: list[int] = []
    recent = max(1, keep // 2)
    while len(steps) > keep:
        interior = range(1, len(steps) - recent)
        if not interior:
            break
        i = min(interior, key=lambda j: steps[j + 1] - steps[j - 1])
        drop.append(steps.pop(i))
    if not drop:
        return []
    where = (Sample.run_id == run_id) & (Sample.kind == kind) & Sample.step.in_(drop)
    paths = [(artifacts / p).resolve() for p in session.scalars(select(Sample.path).where(where))]
    session.execute(delete(Sample).where(where))
    return [p for p in paths if p.is_relative_to(artifacts)]
