"""Runs whose data cannot be stored: stopped with a reason once that lasts longer than the stall limit.

Issue 14 (disk pressure). While the data disk is full (or unwritable, or under the free space kept back by
server/disk_room.py), metric batches, samples, snapshots and checkpoints answer 503 and the worker keeps them
in its spool; that is right for a short outage, but a run that can store none of its metrics, or none of its
images and resume points, for longer than `stall_seconds` (GANSCOPE_STALL_SECONDS) would otherwise train on
blind for ever. So the first such failure of a run starts a clock (in memory: a
restarted server starts it again), any stored upload of the run stops it, and once it passes the limit the
run is told to stop the same way a failure detector does: `control = "stop"` and a `stop_reason` starting
with `storage_error:`, visible in GET /api/runs/{id}. The worker (or SDK script) gets the `stop` action at
its next heartbeat or metrics answer and finishes the run as `stopped`, keeping that reason. A run stopped
this way still takes the data its worker replays once space returns (ingest.refuse_if_finished).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import HTTPException
from sqlalchemy.exc import SQLAlchemyError

from ganscope.server.api.common import publish_status
from ganscope.server.db import Database
from ganscope.server.live import Broker
from ganscope.server.store.runs import FINAL, get_run

log = logging.getLogger("ganscope.storage")

REASON_PREFIX = "storage_error:"
# (run id, kind) -> monotonic time of its first failure in the current stretch. Metrics and artifacts keep
# separate clocks: batches stored on the database must not hide images that have failed for an hour.
_failing_since: dict[tuple[int, str], float] = {}
_lock = threading.Lock()


@contextmanager
def watch(db: Database, settings: Any, run_id: int, broker: Broker | None = None,
          kind: str = "artifacts") -> Iterator[None]:
    """Around a run's write (outside `storage_errors`): a 503 counts toward the stall limit of its kind."""
    try:
        yield
    except HTTPException as exc:
        if exc.status_code == 503:
            failed(db, settings, run_id, str(exc.detail), broker, kind)
        raise


def stored(run_id: int, kind: str = "artifacts") -> None:
    """A write of this kind was stored: its storage works again, the clock starts afresh next time."""
    with _lock:
        _failing_since.pop((run_id, kind), None)


def failed(db: Database, settings: Any, run_id: int, why: str, broker: Broker | None = None,
           kind: str = "artifacts") -> None:
    now = time.monotonic()
    with _lock:
        first = _failing_since.setdefault((run_id, kind), now)
    if now - first < settings.stall_seconds:
        return
    what = "no metric batch" if kind == "metrics" else "no image nor checkpoint"
    reason = (f"{REASON_PREFIX} {what} of this run could be stored for {now - first:.0f} s "
              f"(stall limit {settings.stall_seconds:g} s): {why}")[:2000]
    try:
        with db.write() as s:
            run = get_run(s, run_id, lock=True)
            if run is None or run.status in FINAL or run.control == "stop":
                return  # gone, over, or already told to stop (by us or a detector): its reason stands
            run.control, run.stop_reason = "stop", reason
    except (SQLAlchemyError, OSError) as exc:  # the database is failing too: nothing can be marked now
        log.warning("could not mark run %s as stalled on storage: %s", run_id, exc)
        return
    log.error("run %s: %s; telling its worker to stop", run_id, reason)
    if broker is not None:
        publish_status(db, broker, run_id)
