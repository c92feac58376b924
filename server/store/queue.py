"""The job queue: enqueue (runs.create_job), atomic claim, heartbeats, finish, cancel, stall recovery.

A job is a runs row with kind 'job'. Its life: queued -> running (claimed; attempts+1) -> one of
succeeded / failed / cancelled / stopped, or back to queued when its worker hands it back (SIGTERM,
not counted as an attempt) or goes silent (stall recovery, counted). Every path ends in a final status:
a silent worker's job is failed once it has used max_attempts, and a cancel or stop request on a job
whose worker died is finalised by the recovery pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from ganscope.server.schema import Run, Worker
from ganscope.server.store.runs import FINAL, get_run
from ganscope.server.store.util import as_utc, dialect, upsert, utcnow

ACTIONS = {None: "continue", "cancel": "cancel", "stop": "stop", "heal": "heal"}


class QueueConflict(Exception):
    """A state change that does not apply to the run as it is (HTTP 409)."""


class NotFound(Exception):
    """No such run (HTTP 404)."""


@dataclass
class Action:
    action: str  # continue | cancel | stop | release
    reason: str | None = None


def touch_worker(session: Session, worker_id: str, *, host: str | None = None, devices: list | None = None,
                 run_id: int | None = None, set_run: bool = False, version: str | None = None) -> None:
    now = utcnow()
    row: dict = {"id": worker_id, "host": host or "", "devices": devices or [], "started_at": now,
                 "last_seen": now, "run_id": run_id, "draining": False, "version": version or ""}
    cols = ["last_seen"] + (["host"] if host is not None else []) + (["devices"] if devices is not None else [])
    cols += ["version"] if version else []
    if set_run:
        cols.append("run_id")
    upsert(session, Worker.__table__, [row], ["id"], cols)


def _requeue_or_fail(run: Run, why: str) -> None:
    """A job lost its worker: back to the queue (resuming from its checkpoint) or, out of attempts, failed."""
    if run.control in ("cancel", "stop"):
        # The user or a detector asked it to end; the worker can no longer say so itself.
        run.status = "cancelled" if run.control == "cancel" else "stopped"
        run.finished_at = utcnow()
        # Say why it had been told to end: a worker whose final status waits in its spool (a full disk)
        # goes quiet on purpose, and "went silent" alone would hide the cause.
        told = f"; it had been told to stop: {run.stop_reason}" if run.control == "stop" and run.stop_reason else ""
        run.error = f"{why}{told}"[:10_000]
        return
    if run.attempts >= run.max_attempts:
        run.status = "failed"
        run.finished_at = utcnow()
        run.error = f"{why}; gave up after {run.attempts} of {run.max_attempts} attempts"
        return
    run.status = "queued"
    run.error = f"{why}; requeued (attempt {run.attempts} of {run.max_attempts}), resuming from step " \
                f"{run.checkpoint_step or 0}"
    run.worker_id = None
    run.heartbeat_at = None


def _fits(gpus: int):  # noqa: ANN202 - a SQL expression
    """The job asks for no more GPUs than the claimer has. The request lives in the job's config (the
    worker trains from it); reading it there is a residual filter on the few queued rows that
    ix_runs_queue already orders, so it needs no column of its own. Older configs lack it: 0."""
    return func.coalesce(Run.config["gpus"].as_integer(), 0) <= gpus


def claim(session: Session, worker_id: str, host: str = "", devices: list | None = None,
          gpus: int = 0, version: str | None = None) -> Run | None:
    """Give the best queued job (priority, then age) that fits a worker with `gpus` GPUs to worker_id,
    or None. Exactly one claimer wins."""
    now = utcnow()
    # A worker that asks for work is not running anything: a job still marked as its own was lost
    # (the worker restarted under the same id), so recover it now rather than after the stall timeout.
    for old in session.scalars(select(Run).where(Run.status == "running", Run.worker_id == worker_id)):
        _requeue_or_fail(old, f"worker {worker_id} asked for new work while holding this job")
    session.flush()
    values = {"status": "running", "worker_id": worker_id, "attempts": Run.attempts + 1, "heartbeat_at": now,
              "started_at": func.coalesce(Run.started_at, now)}  # a resumed job keeps its first start
    if dialect(session) == "postgresql":
        # One statement: SKIP LOCKED lets concurrent claimers pass over each other's candidate row.
        pick = (select(Run.id).where(Run.status == "queued", Run.kind == "job", _fits(gpus))  # ix_runs_queue
                .order_by(Run.priority.desc(), Run.id).limit(1).with_for_update(skip_locked=True)
                .scalar_subquery())
        run_id = session.execute(update(Run).where(Run.id == pick).values(**values).returning(Run.id)
                                 .execution_options(synchronize_session=False)).scalar()
    else:
        # SQLite: db.write() serialises writers in this process; the status guard and rowcount check keep
        # a second process on the same file (CLI, another server) from claiming the same row.
        run_id = None
        while run_id is None:
            cand = session.scalar(select(Run.id).where(Run.status == "queued", Run.kind == "job", _fits(gpus))
                                  .order_by(Run.priority.desc(), Run.id).limit(1))
            if cand is None:
                break
            res = session.execute(update(Run).where(Run.id == cand, Run.status == "queued").values(**values)
                                  .execution_options(synchronize_session=False))
            if res.rowcount == 1:
                run_id = cand
    touch_worker(session, worker_id, host=host, devices=devices or [], run_id=run_id, set_run=True, version=version)
    if run_id is None:
        return None
    run = session.scalars(select(Run).where(Run.id == run_id).execution_options(populate_existing=True)).one()
    return run


def heartbeat(session: Session, worker_id: str, run_id: int | None, step: int | None) -> tuple[Action, Run | None]:
    """Record that worker_id is alive (and at step); tell it what to do with its job."""
    touch_worker(session, worker_id, run_id=run_id, set_run=True)
    if run_id is None:
        return Action("continue"), None
    run = get_run(session, run_id, lock=True)
    if run is None:
        return Action("release", f"run {run_id} does not exist"), None
    if run.status != "running" or run.worker_id != worker_id:
        holder = f"worker {run.worker_id}" if run.worker_id and run.status == "running" else f"status {run.status}"
        return Action("release", f"run {run_id} is no longer this worker's ({holder})"), run
    run.heartbeat_at = utcnow()
    if step is not None and step > run.step:
        run.step = step
    return control_action(run), run


def control_action(run: Run) -> Action:
    act = ACTIONS.get(run.control, "continue")
    if act == "cancel":
        return Action("cancel", "cancelled by a user")
    if act == "stop":
        return Action("stop", run.stop_reason or "stopped by a failure detector (on_failure: stop)")
    if act == "heal":
        # The worker fetches the heal itself (GET /api/runs/{id}/heal); the reason ("heal #<event id>: ...")
        # names the event, so a worker that already applied it ignores a late repeat of this answer.
        return Action("heal", run.stop_reason or "heal requested by a failure detector (on_failure: heal)")
    return Action("continue")


def finish(session: Session, run_id: int, worker_id: str | None, status: str, step: int | None,
           error: str | None) -> tuple[Run, bool]:
    """Write a run's final status (or requeue on 'handback'). Returns (run, changed); retries are no-ops."""
    run = get_run(session, run_id, lock=True)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    if run.kind == "sdk":
        if status == "handback":
            raise QueueConflict(f"run {run_id} is an SDK run: there is no queue to hand it back to")
        _revive_silent(run)  # judged dead for its silence, yet here it is, finishing
    elif worker_id is None:
        raise QueueConflict(f"run {run_id} is a queued job: finishing it needs the worker_id that holds it")
    if run.status in FINAL or run.status == "queued":
        same_worker = run.kind == "sdk" or run.worker_id == worker_id
        if (run.status == status and same_worker) or (status == "handback" and run.status == "queued"):
            return run, False  # a retried finish (the first answer was lost): already done
        raise QueueConflict(f"run {run_id} is already {run.status}; cannot finish it as {status}")
    if run.kind == "job" and run.worker_id != worker_id:
        raise QueueConflict(f"worker {worker_id} does not hold run {run_id} (held by {run.worker_id})")
    now = utcnow()
    if step is not None and step > run.step:
        run.step = step
    if status == "handback":
        if run.control in ("cancel", "stop"):
            status = "cancelled" if run.control == "cancel" else "stopped"
        else:
            # Handed back (SIGTERM, draining host): not the job's fault, so the attempt does not count.
            run.status = "queued"
            run.attempts = max(0, run.attempts - 1)
            run.worker_id = None
            run.heartbeat_at = None
            if worker_id:
                touch_worker(session, worker_id, run_id=None, set_run=True)
            return run, True
    run.status = status
    run.finished_at = now
    run.heartbeat_at = now
    if status == "succeeded":
        run.error = None
    elif error:
        run.error = error[:10_000]
    if status == "stopped" and not run.stop_reason:
        run.stop_reason = error or "stopped"
    if worker_id:
        touch_worker(session, worker_id, run_id=None, set_run=True)
    return run, True


def cancel(session: Session, run_id: int) -> tuple[Run, bool]:
    """Queued: cancelled at once. Running: flagged; its worker is told at its next heartbeat or ingest."""
    run = get_run(session, run_id, lock=True)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    if run.status in FINAL:
        raise QueueConflict(f"run {run_id} is already {run.status}: there is nothing to cancel")
    if run.status == "queued":
        run.status = "cancelled"
        run.control = "cancel"
        run.finished_at = utcnow()
        return run, True
    if run.control == "cancel":
        return run, False
    run.control = "cancel"
    return run, True


# The error an SDK run gets when its script's heartbeats stop; a heartbeat or finish from the same script
# later (a laptop that slept, a paused process) puts the run back, since the script was not dead after all.
SDK_SILENT = "the script stopped sending heartbeats (killed?)"


def recover_stalled(session: Session, stall_seconds: float, sdk_stall_seconds: float,
                    sdk_heartbeat_seconds: float | None = None) -> list[Run]:
    """Requeue (or fail) running jobs whose worker went silent; fail SDK runs whose script went silent.

    An SDK script that sends heartbeats is judged by them (`sdk_heartbeat_seconds`: it was killed); one
    that never did (an older client, plain HTTP) only by its data, over the much longer `sdk_stall_seconds`.
    """
    now = utcnow()
    job_cut = now - timedelta(seconds=stall_seconds)
    sdk_cut = now - timedelta(seconds=sdk_stall_seconds)
    hb_cut = now - timedelta(seconds=sdk_heartbeat_seconds if sdk_heartbeat_seconds else sdk_stall_seconds)
    q = select(Run).where(Run.status == "running", or_(  # ix_runs_running_heartbeat
        Run.heartbeat_at.is_(None),
        (Run.kind == "job") & (Run.heartbeat_at < job_cut),
        (Run.kind == "sdk") & (Run.heartbeat_at < sdk_cut),
        (Run.kind == "sdk") & Run.sdk_heartbeats & (Run.heartbeat_at < hb_cut)))
    if dialect(session) == "postgresql":
        q = q.with_for_update(skip_locked=True)  # a second server running the same pass skips these rows
    changed = []
    for run in session.scalars(q):
        last = as_utc(run.heartbeat_at)
        silent = f"{(now - last).total_seconds():.0f}s" if last else "ever since it was claimed"
        if run.kind == "sdk":
            run.status = "failed"
            run.finished_at = now
            run.error = SDK_SILENT if run.sdk_heartbeats else \
                f"no data nor heartbeat from the training script for {silent}"
        else:
            _requeue_or_fail(run, f"worker {run.worker_id} went silent (no heartbeat for {silent})")
            # Its worker row keeps the stale run_id until the worker comes back; harmless.
        changed.append(run)
    return changed


def sdk_heartbeat(session: Session, run_id: int, step: int | None) -> tuple[Action, Run, bool]:
    """An SDK script is alive (at step). Returns (what it should do, the run, whether its status changed).

    A run failed for silence comes back to `running`: its script was paused, not killed.
    """
    run = get_run(session, run_id, lock=True)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    if run.kind != "sdk":
        raise QueueConflict(f"run {run_id} is a queued job: its worker sends /api/workers/heartbeat")
    revived = _revive_silent(run)
    run.sdk_heartbeats = True
    if run.status != "running":
        return Action("release", f"run {run_id} is already {run.status}"), run, revived
    run.heartbeat_at = utcnow()
    if step is not None and step > run.step:
        run.step = step
    return control_action(run), run, revived


def _revive_silent(run: Run) -> bool:
    if run.kind == "sdk" and run.status == "failed" and run.error == SDK_SILENT:
        run.status, run.error, run.finished_at, run.heartbeat_at = "running", None, None, utcnow()
        return True
    return False
