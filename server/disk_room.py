"""Free space kept back on the data disk, so a full disk stops the data and not the control of runs.

Issue 14 (disk pressure). When GANSCOPE_HOME's disk filled up, every write failed, heartbeats and status
changes included: SQLite answered "database or disk is full" to all of them, so the server could neither
mark a run that could store nothing nor hear its worker, and the run showed `running` for ever. Like the
flood-stage watermark of the search engines, the server now refuses the bulky writes (metric batches,
images, snapshots, checkpoints: the worker keeps them in its spool) once the free space drops under
`reserve_mb`, and the small writes that steer runs (heartbeats, stop marks, final statuses, claims) live
on in the space kept back.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any


class LowDiskSpace(OSError):
    """Raised inside `storage_errors`: answered 503 and logged once per interval like a full disk."""

    def __init__(self, free_mb: float, reserve_mb: float) -> None:
        super().__init__(errno.ENOSPC, f"disk nearly full: {free_mb:.1f} MB free on the data disk, under the "
                                       f"{reserve_mb:g} MB kept for run status (GANSCOPE_RESERVE_MB)")


def free_mb(paths: list[Path]) -> float:
    """The least free space, in MB, among the filesystems holding these paths (the nearest existing parent)."""
    least = float("inf")
    for path in paths:
        while not path.exists() and path != path.parent:
            path = path.parent
        st = os.statvfs(path)
        least = min(least, st.f_bavail * st.f_frsize / 1e6)
    return least


def data_paths(settings: Any) -> list[Path]:
    """Where the server's bulky writes land: the artifacts folder and, for SQLite, the database's folder."""
    paths = [Path(settings.artifacts_dir)]
    url = str(settings.sqlalchemy_url)
    if url.startswith("sqlite:///"):
        paths.append(Path(url.removeprefix("sqlite:///").split("?")[0]).parent)
    return paths


def ensure_room(settings: Any, incoming_bytes: int = 0) -> None:
    """Raise LowDiskSpace when writing `incoming_bytes` more would cut into the reserve."""
    reserve = float(settings.reserve_mb)
    if reserve <= 0:
        return
    free = free_mb(data_paths(settings))
    if free - incoming_bytes / 1e6 < reserve:
        raise LowDiskSpace(free, reserve)
