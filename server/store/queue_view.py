"""Reads of the queue: claim order and positions, the workers with what they are doing, and where a
queued run stands (the sentence its page shows). The writes (claim, heartbeat, finish) are in queue.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ganscope.server.schema import Run, Worker
from ganscope.server.store import worker_sys
from ganscope.server.store.util import as_utc, iso, utcnow

# Workers not seen for this long are left off the workers page (every restart makes a new worker id).
SHOW_WORKERS_SEEN_WITHIN_S = 24 * 3600


def queued_in_claim_order(session: Session) -> list[Run]:
    """Queued jobs in the order workers will claim them: priority, then age (ix_runs_queue)."""
    return list(session.scalars(select(Run).where(Run.status == "queued", Run.kind == "job")
                                .order_by(Run.priority.desc(), Run.id)))


def positions(session: Session) -> dict[int, int]:
    """run id -> 1-based place in the queue, for every queued job (one index-ordered query)."""
    ids = session.scalars(select(Run.id).where(Run.status == "queued", Run.kind == "job")
                          .order_by(Run.priority.desc(), Run.id))
    return {run_id: i + 1 for i, run_id in enumerate(ids)}


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def workers(session: Session, stall_seconds: float) -> list[dict[str, Any]]:
    """Workers seen in the last day, alive ones first: host, devices (names; device_info: kind, model,
    memory_mb), gpus, version, current run and its step, and `sys`, the latest system sample (sys/* names,
    docs/metrics.md) with `sys_at`, when it arrived."""
    now = utcnow()
    rows = list(session.scalars(select(Worker).where(
        Worker.last_seen >= now - timedelta(seconds=SHOW_WORKERS_SEEN_WITHIN_S))))
    run_ids = {w.run_id for w in rows if w.run_id is not None}
    runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))} if run_ids else {}
    out = []
    for w in rows:
        seen = as_utc(w.last_seen)
        silent = (now - seen).total_seconds() if seen else None
        alive = silent is not None and silent <= stall_seconds
        run = runs.get(w.run_id) if w.run_id is not None else None
        # The row's run_id can be stale (a job requeued after its worker went silent): busy only if it holds it.
        holds = run is not None and run.status == "running" and run.worker_id == w.id
        out.append({
            "id": w.id, "host": w.host, "devices": worker_sys.device_names(w.devices),
            "device_info": [d for d in w.devices or [] if isinstance(d, dict)],
            "gpus": worker_sys.gpu_count(w.devices), "version": w.version or "",
            "sys": w.sys or {}, "sys_at": iso(w.sys_at),
            "started_at": iso(w.started_at), "last_seen": iso(w.last_seen),
            "seconds_since_seen": None if silent is None else round(silent, 1),
            "alive": alive, "state": ("busy" if holds else "idle") if alive else "lost",
            "run_id": run.id if holds else None, "run_name": run.name if holds else None,
            "step": run.step if holds else None, "total_steps": run.total_steps if holds else None,
        })
    out.sort(key=lambda w: (not w["alive"], w["seconds_since_seen"] or 0.0, w["id"]))
    return out


def queue_rows(session: Session) -> list[dict[str, Any]]:
    return [{"position": i + 1, "run_id": r.id, "name": r.name, "priority": r.priority,
             "dataset": (r.config or {}).get("dataset"), "total_steps": r.total_steps,
             "created_at": iso(r.created_at), "attempts": r.attempts,
             "resume_step": r.checkpoint_step}
            for i, r in enumerate(queued_in_claim_order(session))]


def standing(session: Session, run: Run, stall_seconds: float,
             known_workers: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """Where a queued job stands and why it waits; None for any other run."""
    if run.status != "queued" or run.kind != "job":
        return None
    order = [r.id for r in queued_in_claim_order(session)]
    position = order.index(run.id) + 1 if run.id in order else None
    ws = known_workers if known_workers is not None else workers(session, stall_seconds)
    alive = [w for w in ws if w["alive"]]
    busy = [w for w in alive if w["state"] == "busy"]
    idle = len(alive) - len(busy)
    where = f"{ordinal(position)} in queue" if position else "queued"
    if not ws:
        why = "no worker has been seen: start one with `ganscope worker --server <this server's URL>`"
    elif not alive:
        last = max(ws, key=lambda w: w["last_seen"] or "")
        why = (f"no worker is alive (the last, {last['id']} on {last['host'] or 'an unknown host'}, was seen "
               f"{_ago(last['seconds_since_seen'])}); start one with `ganscope worker`")
    elif position is not None and idle >= position:
        why = f"{idle} idle worker{'s' if idle != 1 else ''} will claim it within seconds"
    else:
        doing = ", ".join(f"#{w['run_id']}" + (f" (step {w['step']}/{w['total_steps']})" if w["total_steps"] else "")
                          for w in busy)
        why = f"{len(alive)} worker{'s' if len(alive) != 1 else ''}, busy with {doing}" if busy else \
            f"{len(alive)} worker{'s' if len(alive) != 1 else ''}"
    return {"position": position, "queued": len(order), "ahead": order[:position - 1] if position else [],
            "workers_alive": len(alive), "workers_busy": len(busy), "message": f"{where}; {why}"}


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
