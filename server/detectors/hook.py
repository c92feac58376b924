"""Ingest → detectors: evaluate, persist alerts, set run health, apply on_failure, publish events.

Ingest calls `process_ingest` after the points are committed (docs/contracts.md). The
common case — no alert opens, updates or closes — touches no table at all: the rules run
on in-memory windows (engine.RunDetector). The first batch a process sees for a run
rebuilds its windows and open alerts from the store, so a restarted server carries on.
"""

from __future__ import annotations

import logging
import math
import weakref
from typing import Any

import numpy as np

from server.db import Database
from server.detectors.engine import EARLY_STEPS, KEEP_STEPS, AlertState, Change, Engine, RunDetector
from server.live import Broker
from server.schema import Alert, Run
from server.store import alerts as alerts_store
from server.store import metrics as metrics_store

log = logging.getLogger("ganscope.detectors")
_ENGINES: "weakref.WeakKeyDictionary[Database, Engine]" = weakref.WeakKeyDictionary()


def engine_for(db: Database) -> Engine:
    """One engine per database handle (per app): tests may run several apps in one process."""
    eng = _ENGINES.get(db)
    if eng is None:
        eng = _ENGINES.setdefault(db, Engine())
    return eng


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


def _load(db: Database, run_id: int) -> RunDetector | None:
    """A run's detector rebuilt from the store: config, open alerts, the first and the latest steps."""
    with db.read() as s:
        run = s.get(Run, run_id)
        if run is None:
            return None
        alerts = [AlertState(a.signature, a.severity, a.first_step, a.last_step, a.message, a.evidence or {},
                             a.remedy or {}, status=a.status, id=a.id)
                  for a in alerts_store.list_for_run(s, run_id, "open")]
        det = RunDetector(run.config or {}, alerts)
        names = metrics_store.names(s, run_id)
        if names:
            early = metrics_store.read_raw(s, run_id, names, end=EARLY_STEPS)
            det.add(early)
            start = max(int(run.step) - KEEP_STEPS, EARLY_STEPS + 1)
            if int(run.step) > EARLY_STEPS:
                det.add(metrics_store.read_raw(s, run_id, names, start=start))
        return det


def process_ingest(db: Database, broker: Broker, run_id: int,
                   series: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Evaluate the detectors on a committed batch; persist and publish whatever changed."""
    eng = engine_for(db)
    det = eng.get(run_id)
    if det is None:
        loaded = _load(db, run_id)
        if loaded is None:
            return
        det = eng.put(run_id, loaded)
    with det.lock:  # batches of one run are judged, persisted and published in order
        changes = det.feed(series)
        if changes:
            _persist(db, broker, run_id, det, changes)


def _persist(db: Database, broker: Broker, run_id: int, det: RunDetector, changes: list[Change]) -> None:
    health = det.health
    status_changed = False
    with db.write() as s:
        for ch in changes:
            data = clean(ch.alert.to_dict())
            ch.alert.evidence, ch.alert.remedy = data["evidence"], data["remedy"]
            if ch.alert.id is None:
                ch.alert.id = alerts_store.insert(s, run_id, data).id
            else:
                alerts_store.save(s, ch.alert.id, data)
        run = s.get(Run, run_id)
        if run is None:
            return
        if run.health != health:
            run.health = health
            status_changed = True
        policy = (run.config or {}).get("on_failure", "warn")
        failing = [ch.alert for ch in changes if ch.kind == "open" and ch.alert.severity == "failing"]
        if policy == "stop" and failing and run.control is None and run.status in ("queued", "running"):
            a = failing[0]
            run.control = "stop"
            run.stop_reason = f"{a.signature} at step {a.last_step}: {a.message}"[:2000]
            status_changed = True
        payloads = [{**alerts_store.to_dict(r), "run_id": run_id}
                    for r in (s.get(Alert, ch.alert.id) for ch in changes) if r is not None]
        summary = None
        if status_changed:
            from server.store import runs as runs_store

            s.flush()
            summary = runs_store.summary(s, run)
    for p in payloads:
        broker.publish(run_id, "alert", p)
    if summary is not None:
        broker.publish(run_id, "status", summary)
