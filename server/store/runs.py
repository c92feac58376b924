"""Runs: creation, lookup, listing and the run summary every read and `status` event carries."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import case, delete, func, or_, select
from sqlalchemy.orm import Session

from ganscope.server.detectors.verdict import LOOKBACK_EVALS, NAMES as VERDICT_NAMES, learning
from ganscope.server.schema import Alert, MetricLatest, Run, RunTag
from ganscope.server.store import metrics as metrics_store
from ganscope.server.store.metrics import decode_steps
from ganscope.server.store.util import iso, utcnow
from ganscope.trainer.config import SDK_KEY_KNOBS, JobConfig

FINAL = ("succeeded", "failed", "cancelled", "stopped")
STATUSES = ("queued", "running", *FINAL)
# Per-layer series are many (one per layer); the runs list shows only the run-level ones.
_LAYER_PREFIXES = ("grad/", "weight/", "update/")
SORTS = {
    "created": (Run.created_at, Run.id), "started": (Run.started_at, Run.id),
    "finished": (Run.finished_at, Run.id), "name": (Run.name, Run.id), "status": (Run.status, Run.id),
    "step": (Run.step, Run.id), "id": (Run.id,), "priority": (Run.priority, Run.id),
}


def create_job(session: Session, cfg: JobConfig) -> Run:
    run = Run(name=cfg.name, kind="job", config=cfg.model_dump(mode="json"), status="queued", health="healthy",
              priority=cfg.priority, attempts=0, max_attempts=cfg.max_attempts, created_at=utcnow(),
              step=0, total_steps=cfg.steps)
    session.add(run)
    session.flush()
    return run


def create_sdk_run(session: Session, name: str, declared: dict[str, Any], user_config: dict[str, Any] | None,
                   key: str | None = None) -> tuple[Run, bool]:
    """An SDK run: `config` is only what the script declared (nothing filled from JobConfig's defaults),
    `user_config` the script's own options. With a `key` a retried creation returns the first run.
    Returns (run, created)."""
    if key is not None:
        found = session.scalars(select(Run).where(Run.client_key == key)).first()  # ix_runs_client_key
        if found is not None:
            return found, False
    now = utcnow()
    run = Run(name=name, kind="sdk", config=declared, user_config=user_config, client_key=key, status="running",
              health="healthy", priority=0, attempts=1, max_attempts=1, created_at=now, started_at=now,
              heartbeat_at=now, step=0, total_steps=int(declared.get("total_steps") or 0))
    session.add(run)
    session.flush()
    return run, True


def declare(run: Run, declared: dict[str, Any]) -> None:
    """Replace an SDK run's declared part (what its detectors read)."""
    run.config = declared
    run.total_steps = int(declared.get("total_steps") or 0)


def get_run(session: Session, run_id: int, *, lock: bool = False) -> Run | None:
    """The run, or None. lock=True takes the row lock on PostgreSQL (SELECT ... FOR UPDATE): writers of
    one run (ingest batches, finish, cancel) then serialise; SQLite's write path is serialised already."""
    q = select(Run).where(Run.id == run_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return session.scalars(q).first()


def _key_config(config: dict[str, Any], kind: str = "job") -> dict[str, Any]:
    if kind == "sdk":  # only what the script declared: an SDK run is not a JobConfig with defaults
        return {k: config[k] for k in SDK_KEY_KNOBS if k in config}
    try:
        return JobConfig.model_validate(config).key_knobs()
    except Exception:  # noqa: BLE001 - a config stored by an older version still lists
        return {k: config.get(k) for k in ("dataset", "batch_size", "lr_d", "lr_g", "steps")}


def _evaluations(session: Session, spans: dict[int, dict[str, tuple[int, int]]]) -> dict[int, dict[str, tuple]]:
    """The last LOOKBACK_EVALS points of each run's quality/fit series, in one bounded query.

    `spans`: {run_id: {name: (latest step, point count)}} from metric_latest. Each run reads only the
    chunks ending after its earliest needed step (ix_chunks_run_name_last): a few rows per run however
    long the run, since evaluations are sparse and a chunk holds 2,048 of them.
    """
    # Driver SQL (metrics._Sql, as ingest uses): building this OR of per-run clauses through the ORM cost
    # more than running it.
    sql = metrics_store._Sql(session)
    clauses: list[str] = []
    params: list[Any] = []
    for run_id, names in spans.items():
        lo = None
        for step, count in names.values():
            cadence = max(1.0, float(step) / max(int(count), 1))
            start = int(step - (LOOKBACK_EVALS + 1) * cadence)
            lo = start if lo is None else min(lo, start)
        clauses.append(f"(run_id = ? AND name IN ({', '.join('?' * len(names))}) AND last_step >= ?)")
        params += [run_id, *names, lo or 0]
    out: dict[int, dict[str, tuple]] = {}
    if not clauses:
        return out
    parts: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    rows = sql.rows('SELECT run_id, name, first_step, last_step, n, steps, "values" FROM metric_chunks WHERE '
                    + " OR ".join(clauses) + " ORDER BY run_id, name, last_step", tuple(params))
    for run_id, name, first, last, n, sb, vb in rows:
        parts.setdefault((run_id, name), []).append(
            (decode_steps(bytes(sb), first, last, n), np.frombuffer(bytes(vb), dtype=np.float64)))
    for (run_id, name), chunks in parts.items():
        st = np.concatenate([c[0] for c in chunks])[-LOOKBACK_EVALS:]
        va = np.concatenate([c[1] for c in chunks])[-LOOKBACK_EVALS:]
        out.setdefault(run_id, {})[name] = (st, va)
    return out


def summaries(session: Session, runs: list[Run], *, all_metrics: bool = False) -> list[dict[str, Any]]:
    """Run summaries (docs/contracts.md) with four queries whatever the number of runs."""
    ids = [r.id for r in runs]
    last: dict[int, dict[str, float | None]] = {i: {} for i in ids}
    counts: dict[int, tuple[int, int]] = {}
    spans: dict[int, dict[str, tuple[int, int]]] = {}  # quality/fit series per run: the verdict's input
    evals: dict[int, dict[str, tuple]] = {}
    if ids:
        q = (select(MetricLatest.run_id, MetricLatest.name, MetricLatest.value, MetricLatest.step,
                    MetricLatest.count).where(MetricLatest.run_id.in_(ids)))
        if not all_metrics:
            q = q.where(*[~MetricLatest.name.startswith(p) for p in _LAYER_PREFIXES])
        for r in session.execute(q.order_by(MetricLatest.name)).all():
            last[r.run_id][r.name] = r.value
            if r.name in VERDICT_NAMES and r.count:
                spans.setdefault(r.run_id, {})[r.name] = (int(r.step), int(r.count))
        evals = _evaluations(session, spans)
        # ix_alerts_run_status: alert counts per run, open ones apart
        for r in session.execute(
                select(Alert.run_id, func.count(), func.sum(case((Alert.status == "open", 1), else_=0)))
                .where(Alert.run_id.in_(ids)).group_by(Alert.run_id)).all():
            counts[r[0]] = (int(r[1]), int(r[2] or 0))
    labels = _labels(session, runs)
    out = []
    for r in runs:
        cfg = r.config or {}
        total, open_ = counts.get(r.id, (0, 0))
        out.append({
            "id": r.id, "name": r.name, "kind": r.kind, "status": r.status, "health": r.health,
            # an SDK run that declared no total_steps has none (null), not the built-in trainer's
            "step": r.step, "total_steps": r.total_steps or (None if r.kind == "sdk" else 0),
            "created_at": iso(r.created_at), "started_at": iso(r.started_at), "finished_at": iso(r.finished_at),
            "dataset": cfg.get("dataset"), "key_config": _key_config(cfg, r.kind), "last": last.get(r.id, {}),
            "alert_count": total, "open_alerts": open_, "attempts": r.attempts, "max_attempts": r.max_attempts,
            "priority": r.priority, "worker_id": r.worker_id, "error": r.error, "stop_reason": r.stop_reason,
            "control": r.control, "checkpoint_step": r.checkpoint_step,
            "heartbeat_at": iso(r.heartbeat_at),
            **labels.get(r.id, {}),
            "learning": learning(evals.get(r.id, {}), cfg, r.kind or "job"),
        })
    return out


def _labels(session: Session, runs: list[Run]) -> dict[int, dict[str, Any]]:
    """The user's labels (tags, note, archived) and, for queued jobs, their place in the queue."""
    ids = [r.id for r in runs]
    tags: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        # run_tags primary key: WHERE run_id IN (..)
        for run_id, tag in session.execute(select(RunTag.run_id, RunTag.tag).where(RunTag.run_id.in_(ids))
                                           .order_by(RunTag.run_id, RunTag.tag)).all():
            tags[run_id].append(tag)
    places: dict[int, int] = {}
    if any(r.status == "queued" for r in runs):
        from ganscope.server.store.queue_view import positions

        places = positions(session)
    return {r.id: {"tags": tags.get(r.id, []), "note": r.note or "", "archived": bool(r.archived),
                   "queue_position": places.get(r.id)} for r in runs}


def summary(session: Session, run: Run) -> dict[str, Any]:
    return summaries(session, [run])[0]


def detail(session: Session, run: Run) -> dict[str, Any]:
    out = summaries(session, [run], all_metrics=True)[0]
    out["config"] = run.config
    if run.kind == "sdk":
        out["user_config"] = run.user_config or {}  # the script's own options, as it gave them
    out["metric_names"] = list(out["last"])
    from ganscope.server.store.events import config_history

    out["config_history"] = config_history(session, run)  # heals: which knobs changed at which step
    return out


def list_runs(session: Session, *, statuses: list[str] | None = None, q: str | None = None,
              kind: str | None = None, sort: str = "-created", limit: int = 50,
              offset: int = 0, tags: list[str] | None = None, archived: str = "exclude",
              config: list[tuple[str, Any]] | None = None) -> tuple[list[Run], int]:
    """Runs page: filters, sort ('-' prefix for descending), pagination; returns (runs, total).

    archived: "exclude" (default), "only" or "include". tags: runs carrying every one of them.
    config: (knob, value) pairs the run's config must equal (compared in Python: JSON columns are
    queried differently by SQLite and PostgreSQL, and a runs table is hundreds of rows, not millions).
    """
    where = []
    if archived != "include":
        where.append(Run.archived.is_(archived == "only"))  # ix_runs_archived_created
    for tag in tags or []:
        # ix_run_tags_tag: WHERE tag = ?
        where.append(Run.id.in_(select(RunTag.run_id).where(RunTag.tag == tag)))
    if statuses:
        where.append(Run.status.in_(statuses))  # ix_runs_queue leads with status
    if kind:
        where.append(Run.kind == kind)
    if q:
        # Case-insensitive substring on name (or an exact id); LIKE wildcards in q are taken literally.
        pat = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conds = [func.lower(Run.name).like(pat, escape="\\")]
        if q.strip().isdigit():
            conds.append(Run.id == int(q.strip()))
        where.append(or_(*conds))
    desc = sort.startswith("-")
    cols = SORTS[sort.lstrip("-")]
    order = [c.desc() if desc else c.asc() for c in cols]  # ix_runs_created serves the default
    if config:
        matching = [r for r in session.scalars(select(Run).where(*where).order_by(*order))
                    if config_matches(r.config or {}, config)]
        return matching[offset:offset + limit], len(matching)
    total = session.scalar(select(func.count()).select_from(Run).where(*where)) or 0
    rows = list(session.scalars(select(Run).where(*where).order_by(*order).limit(limit).offset(offset)))
    return rows, int(total)


def config_matches(cfg: dict[str, Any], wanted: list[tuple[str, Any]]) -> bool:
    """Every (knob, value) equal in cfg; numbers compare as numbers (1e-3 == 0.001), the rest as text."""
    for key, value in wanted:
        have = cfg.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                isinstance(have, (int, float)) and not isinstance(have, bool):
            if float(have) != float(value):
                return False
        elif str(have).lower() != str(value).lower() if isinstance(value, str) else have != value:
            return False
    return True


# --- the user's changes: labels, priority, deletion ------------------------------------------------

TAG_MAX = 64
TAGS_PER_RUN = 32


def set_tags(session: Session, run: Run, tags: list[str]) -> None:
    """Replace the run's tags (deduplicated; order is alphabetical on read)."""
    session.execute(delete(RunTag).where(RunTag.run_id == run.id))
    for tag in sorted(set(tags)):
        session.add(RunTag(run_id=run.id, tag=tag))


def set_priority(run: Run, priority: int) -> None:
    """Move a queued job in the claim order (higher first); the stored config says the same."""
    run.priority = priority
    run.config = {**(run.config or {}), "priority": priority}


def delete_run(session: Session, run: Run, artifacts_dir: Path) -> None:
    """The run, its points, alerts, samples, checkpoints (rows cascade) and its artifact files."""
    from ganscope.server.store import artifacts, clock

    folder = artifacts.run_dir(artifacts_dir, run.id)
    session.delete(run)
    session.flush()
    shutil.rmtree(folder, ignore_errors=True)
    clock.forget(run.id)
