"""Ingest → detectors: evaluate, persist alerts, set run health, apply on_failure, publish events.

Ingest calls `process_ingest` after the points are committed (docs/contracts.md). The
common case — no alert opens, updates or closes — touches no table at all: the rules run
on in-memory windows (engine.RunDetector). The first batch a process sees for a run
rebuilds its windows and open alerts from the store, so a restarted server carries on.

Cost: judging is most of the detectors' work and does not depend on the batch's size, so a
run is judged at most every MIN_INTERVAL_S. Batches arriving faster (a spool replay, a very
fast run, a benchmark) queue up and are merged and judged together; a batch holding a NaN/Inf
is judged at once. A sweeper thread judges what a run's last batches left queued. Only what
the rules can still read is queued (RunDetector.relevant): once the early-window verdicts are
final, finite weight, lr and perf series are dropped at the door.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from typing import Any

import numpy as np
from sqlalchemy import select

from ganscope.server import notify
from ganscope.server.db import Database
from ganscope.server.detectors import heal
from ganscope.server.detectors.engine import (
    EARLY_STEPS, KEEP_STEPS, SPARSE, SPARSE_POINTS, AlertState, Change, Engine, RunDetector,
)
from ganscope.server.live import Broker
from ganscope.server.schema import Alert, MetricLatest, Run
from ganscope.server.store import alerts as alerts_store
from ganscope.server.store import metrics as metrics_store

log = logging.getLogger("ganscope.detectors")
MIN_INTERVAL_S = 0.25  # a worker flushes every 50 steps or 2 s: each of its batches is still judged
SWEEP_S = 0.5
_ENGINES: "weakref.WeakKeyDictionary[Database, Engine]" = weakref.WeakKeyDictionary()
_ENGINES_LOCK = threading.Lock()


def engine_for(db: Database, broker: Broker | None = None) -> Engine:
    """One engine per database handle (per app), with its sweeper thread."""
    with _ENGINES_LOCK:
        eng = _ENGINES.get(db)
        if eng is None:
            eng = _ENGINES[db] = Engine()
            if broker is not None:
                threading.Thread(target=_sweep, args=(weakref.ref(db), broker), daemon=True,
                                 name="ganscope-detectors").start()
        return eng


def _sweep(db_ref: "weakref.ref[Database]", broker: Broker) -> None:
    """Judge runs whose last batches arrived inside MIN_INTERVAL_S of a judgement and wait queued."""
    while True:
        time.sleep(SWEEP_S)
        db = db_ref()
        if db is None:
            return  # the app is gone
        eng = _ENGINES.get(db)
        for run_id, det in eng.items() if eng is not None else ():
            if det.queue and time.monotonic() - det.judged_at >= MIN_INTERVAL_S:
                try:
                    with det.lock:
                        if det.queue:
                            _judge(db, broker, run_id, det)
                except Exception:  # noqa: BLE001 - keep sweeping the other runs
                    log.exception("detectors failed on run %s", run_id)
        del db


def clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (PostgreSQL's JSON and browsers reject NaN)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _load(db: Database, run_id: int, batch: dict[str, tuple[np.ndarray, np.ndarray]]) -> RunDetector | None:
    """A run's detector rebuilt from the store: config, open alerts, the first and the latest steps.

    A run whose stored points are exactly this batch (its first) has no history to read back.
    """
    with db.read() as s:
        run = s.get(Run, run_id)
        if run is None:
            return None
        alerts = [AlertState(a.signature, a.severity, a.first_step, a.last_step, a.message, a.evidence or {},
                             a.remedy or {}, status=a.status, id=a.id)
                  for a in alerts_store.list_for_run(s, run_id, "open")]
        det = RunDetector(run.config or {}, alerts, kind=run.kind or "job")
        # metric_latest's primary key: every name of the run with its point count and latest step
        rows = s.execute(select(MetricLatest.name, MetricLatest.count, MetricLatest.step)
                         .where(MetricLatest.run_id == run_id)).all()
        counts = {r[0]: r[1] for r in rows}
        if all(counts.get(n) == st.size for n, (st, _) in batch.items()) and set(counts) <= set(batch):
            return det
        names = list(counts)
        det.add(metrics_store.read_raw(s, run_id, names, end=EARLY_STEPS))
        if int(run.step) > EARLY_STEPS:
            start = max(int(run.step) - KEEP_STEPS, EARLY_STEPS + 1)
            det.add(metrics_store.read_raw(s, run_id, names, start=start))
        # Evaluations (quality/*, toy/*) are kept by count: read back about their last SPARSE_POINTS.
        for name, count, step in rows:
            if name.startswith(SPARSE) and count > 0 and int(step) > EARLY_STEPS:
                cadence = max(1.0, float(step) / max(int(count), 1))
                start = max(int(step - 2 * SPARSE_POINTS * cadence), EARLY_STEPS + 1)
                if start < int(run.step) - KEEP_STEPS:
                    det.add(metrics_store.read_raw(s, run_id, [name], start=start, end=int(run.step) - KEEP_STEPS - 1))
        return det


def forget(db: Database, run_id: int) -> None:
    """Drop a run's in-memory detector state, so its next batch rebuilds it from the store. Call it after
    a run's stored config changes (an SDK run declaring its layer order or loss mid-run): the rules read
    the config once, when the state is built."""
    eng = _ENGINES.get(db)
    if eng is not None:
        det = eng.get(run_id)
        if det is not None:
            with det.lock:  # waits for a judgement in progress; queued batches are in the store for the rebuild
                det.queue = []
        eng.drop(run_id)


def process_ingest(db: Database, broker: Broker, run_id: int,
                   series: dict[str, tuple[np.ndarray, np.ndarray]], nonfinite: int | None = None) -> bool:
    """Queue a committed batch for the run's detectors and judge it when due; persist and publish changes.

    `nonfinite`: how many of the points are NaN/Inf, when the caller knows (the store counts them).
    Returns True when it set the run's control (on_failure: stop or heal), so the caller re-reads the run for
    its answer only then — in the common case this costs no database access at all.
    """
    if not series:
        return False
    eng = engine_for(db, broker)
    det = eng.get(run_id)
    if det is None:
        loaded = _load(db, run_id, series)
        if loaded is None:
            return False
        det = eng.put(run_id, loaded)
    if nonfinite is None:
        nonfinite = int(np.count_nonzero(~np.isfinite(np.concatenate([v for _, v in series.values()]))))
    with det.lock:  # batches of one run are judged, persisted and published in order
        kept = det.relevant(series, finite=nonfinite == 0)
        if kept:
            det.queue.append(kept)
            det.queue_finite = det.queue_finite and nonfinite == 0
        if nonfinite == 0 and time.monotonic() - det.judged_at < MIN_INTERVAL_S:
            return False  # judged with the next batch, or by the sweeper
        return _judge(db, broker, run_id, det) if det.queue else False


def _combine(batches: list[dict[str, tuple[np.ndarray, np.ndarray]]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Queued batches as one: per name, their points in arrival order (the engine sorts if needed)."""
    if len(batches) == 1:
        return batches[0]
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for b in batches:
        for name, (s, v) in b.items():
            p = parts.setdefault(name, ([], []))
            p[0].append(s)
            p[1].append(v)
    return {name: (np.concatenate(ss), np.concatenate(vs)) for name, (ss, vs) in parts.items()}


def _judge(db: Database, broker: Broker, run_id: int, det: RunDetector) -> bool:
    """Merge the queued batches, run the rules, persist and publish what changed (det.lock held)."""
    batches, det.queue = det.queue, []
    finite, det.queue_finite = det.queue_finite, True
    det.judged_at = time.monotonic()
    changes = det.feed(_combine(batches), finite=finite)
    return _persist(db, broker, run_id, det, changes) if changes else False


def _persist(db: Database, broker: Broker, run_id: int, det: RunDetector, changes: list[Change]) -> bool:
    health = det.health
    status_changed = stopped = False
    with db.write() as s:
        notify.alert_changes(s, run_id, changes)  # webhooks for opened / escalated alerts, once this commits
        for ch in changes:
            data = clean(ch.alert.to_dict())
            ch.alert.evidence, ch.alert.remedy = data["evidence"], data["remedy"]
            if ch.alert.id is None:
                ch.alert.id = alerts_store.insert(s, run_id, data).id
            else:
                alerts_store.save(s, ch.alert.id, data)
        run = s.get(Run, run_id)
        if run is None:
            return False
        if run.health != health:
            run.health = health
            status_changed = True
        failing = [ch.alert for ch in changes
                   if (ch.kind == "open" or ch.escalated) and ch.alert.severity == "failing"]
        acted = heal.apply_policy(s, run, failing) if failing else None  # on_failure: stop or heal
        if acted is not None:
            status_changed = stopped = True
        pending = heal.pending_event(s, run_id) if acted == "heal" else None
        payloads = [{**alerts_store.to_dict(r), "run_id": run_id}
                    for r in (s.get(Alert, ch.alert.id) for ch in changes) if r is not None]
        summary = None
        if status_changed:
            from ganscope.server.store import runs as runs_store

            s.flush()
            summary = runs_store.summary(s, run)
    for p in payloads:
        broker.publish(run_id, "alert", p)
    if summary is not None:
        broker.publish(run_id, "status", summary)
    if pending is not None:
        broker.publish(run_id, "event", pending)  # listed as pending until the worker applies it
    return stopped
