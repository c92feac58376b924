"""Metric points: chunked append and range reads (layout: see server/schema.py).

Invariant kept by every write: for one (run, name), chunks are disjoint in step
range, each holds strictly increasing steps, and the chunk with the highest
last_step holds the latest point (metric_latest.step). Reads therefore just
concatenate chunks in last_step order.

Appends beyond the latest step (the normal case) touch the tail chunk only. Points
at or below it (a spool replay, a resumed job repeating steps) take a slower
path that merges them into the chunks overlapping their range; the first value
stored for a step wins, so replays are idempotent.

Callers serialise writers of one run: db.write() does on SQLite, and on
PostgreSQL the ingest route locks the run row (runs.lock_run) first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import delete, insert, select, tuple_, update
from sqlalchemy.orm import Session

from server.schema import CHUNK_POINTS, MetricChunk, MetricLatest

I64 = np.dtype("<i8")
F64 = np.dtype("<f8")
Series = dict[str, tuple[np.ndarray, np.ndarray]]
_EMPTY_S = np.zeros(0, dtype=np.int64)
_EMPTY_V = np.zeros(0, dtype=np.float64)


@dataclass
class AppendResult:
    accepted: Series = field(default_factory=dict)  # per name, the points newly stored, by step
    duplicates: int = 0

    @property
    def accepted_count(self) -> int:
        return int(sum(s.size for s, _ in self.accepted.values()))

    @property
    def max_step(self) -> int | None:
        tops = [int(s[-1]) for s, _ in self.accepted.values() if s.size]
        return max(tops) if tops else None


def _first_wins(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort by step and drop repeated steps inside one batch, keeping the first value sent."""
    if steps.size < 2 or bool(np.all(steps[1:] > steps[:-1])):
        return steps, values, 0  # the common case: already increasing, nothing to do
    uniq, first_idx = np.unique(steps, return_index=True)
    return uniq, values[first_idx], int(steps.size - uniq.size)


def _unpack(steps_blob: bytes, values_blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    return (np.frombuffer(steps_blob, dtype=I64).astype(np.int64, copy=False),
            np.frombuffer(values_blob, dtype=F64).astype(np.float64, copy=False))


def _chunk_rows(run_id: int, name: str, s: np.ndarray, v: np.ndarray) -> list[dict]:
    rows = []
    for i in range(0, s.size, CHUNK_POINTS):
        cs, cv = s[i:i + CHUNK_POINTS], v[i:i + CHUNK_POINTS]
        rows.append({"run_id": run_id, "name": name, "first_step": int(cs[0]), "last_step": int(cs[-1]),
                     "n": int(cs.size), "steps": cs.astype(I64, copy=False).tobytes(),
                     "values": cv.astype(F64, copy=False).tobytes()})
    return rows


def _merge_late(session: Session, run_id: int, name: str, s: np.ndarray,
                v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Store points at or below the latest step. Returns (new steps, new values, duplicates, tail rewritten)."""
    lo, hi = int(s[0]), int(s[-1])
    # ix_chunks_run_name_last: the chunks overlapping [lo, hi]
    rows = session.execute(
        select(MetricChunk.id, MetricChunk.steps, MetricChunk.values, MetricChunk.last_step)
        .where(MetricChunk.run_id == run_id, MetricChunk.name == name,
               MetricChunk.last_step >= lo, MetricChunk.first_step <= hi)
        .order_by(MetricChunk.last_step)).all()
    if rows:
        parts = [_unpack(r.steps, r.values) for r in rows]
        old_s = np.concatenate([p[0] for p in parts])
        old_v = np.concatenate([p[1] for p in parts])
        pos = np.searchsorted(old_s, s).clip(max=old_s.size - 1)
        fresh = old_s[pos] != s
    else:
        old_s, old_v = _EMPTY_S, _EMPTY_V
        fresh = np.ones(s.size, dtype=bool)
    new_s, new_v = s[fresh], v[fresh]
    dups = int(s.size - new_s.size)
    if new_s.size == 0:
        return new_s, new_v, dups, False  # a pure replay writes nothing
    all_s = np.concatenate([old_s, new_s])
    all_v = np.concatenate([old_v, new_v])
    order = np.argsort(all_s, kind="stable")
    if rows:
        session.execute(delete(MetricChunk).where(MetricChunk.id.in_([r.id for r in rows])))
    session.execute(insert(MetricChunk), _chunk_rows(run_id, name, all_s[order], all_v[order]))
    return new_s, new_v, dups, True


def append(session: Session, run_id: int, series: Series) -> AppendResult:
    """Store a batch {name: (steps int64, values float64)}; idempotent on (run, name, step)."""
    result = AppendResult()
    batch: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (steps, values) in series.items():
        s, v, dups = _first_wins(np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64))
        result.duplicates += dups
        if s.size:
            batch[name] = (s, v)
    if not batch:
        return result
    latest = {r.name: r for r in session.execute(
        select(MetricLatest.name, MetricLatest.step, MetricLatest.count, MetricLatest.nonfinite)
        .where(MetricLatest.run_id == run_id, MetricLatest.name.in_(list(batch)))).all()}

    beyond: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    late_new: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    retail: set[str] = set()  # names whose tail chunk the slow path rewrote: look it up afresh
    for name, (s, v) in batch.items():
        row = latest.get(name)
        cut = 0 if row is None else int(np.searchsorted(s, row.step, side="right"))
        if cut:
            ns, nv, dups, rewrote = _merge_late(session, run_id, name, s[:cut], v[:cut])
            result.duplicates += dups
            if ns.size:
                late_new[name] = (ns, nv)
            if rewrote:
                retail.add(name)
        if cut < s.size:
            beyond[name] = (s[cut:], v[cut:])

    # The tail chunk of every name that grows, in one query (ix_chunks_run_name_last).
    tails: dict[str, object] = {}
    keyed = [(n, latest[n].step) for n in beyond if n in latest and n not in retail]
    if keyed:
        for r in session.execute(
                select(MetricChunk.id, MetricChunk.name, MetricChunk.n, MetricChunk.steps, MetricChunk.values)
                .where(MetricChunk.run_id == run_id,
                       tuple_(MetricChunk.name, MetricChunk.last_step).in_(keyed))).all():
            tails[r.name] = r
    for name in retail & beyond.keys():
        r = session.execute(
            select(MetricChunk.id, MetricChunk.name, MetricChunk.n, MetricChunk.steps, MetricChunk.values)
            .where(MetricChunk.run_id == run_id, MetricChunk.name == name)
            .order_by(MetricChunk.last_step.desc()).limit(1)).first()
        if r is not None:
            tails[name] = r

    updates: list[dict] = []
    inserts: list[dict] = []
    for name, (s, v) in beyond.items():
        tail = tails.get(name)
        k = 0
        if tail is not None and tail.n < CHUNK_POINTS:
            # Read-modify-write of one small blob: the tail chunk has room.
            k = min(CHUNK_POINTS - tail.n, s.size)
            updates.append({"id": tail.id, "last_step": int(s[k - 1]), "n": tail.n + k,
                            "steps": tail.steps + s[:k].astype(I64, copy=False).tobytes(),
                            "values": tail.values + v[:k].astype(F64, copy=False).tobytes()})
        if k < s.size:
            inserts.extend(_chunk_rows(run_id, name, s[k:], v[k:]))
    if updates:
        session.execute(update(MetricChunk), updates)  # bulk UPDATE by primary key (executemany)
    if inserts:
        session.execute(insert(MetricChunk), inserts)

    # metric_latest: count, non-finite count and the value at the highest step.
    latest_new: list[dict] = []
    latest_upd: list[dict] = []
    for name in batch:
        parts = [p for p in (late_new.get(name), beyond.get(name)) if p is not None]
        if not parts:
            continue
        s = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        v = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        if len(parts) > 1:
            order = np.argsort(s, kind="stable")
            s, v = s[order], v[order]
        result.accepted[name] = (s, v)
        nonfinite = int(np.count_nonzero(~np.isfinite(v)))
        row = latest.get(name)
        top = beyond.get(name)
        entry = {"run_id": run_id, "name": name}
        if top is not None:
            last_v = float(top[1][-1])
            entry.update(step=int(top[0][-1]), value=last_v if np.isfinite(last_v) else None)
        if row is None:
            latest_new.append({**entry, "count": int(s.size), "nonfinite": nonfinite})
        else:
            latest_upd.append({**entry, "count": row.count + int(s.size), "nonfinite": row.nonfinite + nonfinite})
    if latest_new:
        session.execute(insert(MetricLatest), latest_new)
    # executemany needs the same keys in every row: group updates by whether the latest value moved.
    for keys in ({"run_id", "name", "count", "nonfinite", "step", "value"}, {"run_id", "name", "count", "nonfinite"}):
        group = [u for u in latest_upd if set(u) == keys]
        if group:
            session.execute(update(MetricLatest), group)
    return result


def names(session: Session, run_id: int) -> list[str]:
    """Every metric name of a run (metric_latest primary key)."""
    return list(session.scalars(select(MetricLatest.name).where(MetricLatest.run_id == run_id)
                                .order_by(MetricLatest.name)))


def latest(session: Session, run_ids: Iterable[int]) -> dict[int, dict[str, float | None]]:
    """{run_id: {name: last value}} (metric_latest primary key prefix)."""
    out: dict[int, dict[str, float | None]] = {}
    ids = list(run_ids)
    if not ids:
        return out
    for r in session.execute(select(MetricLatest.run_id, MetricLatest.name, MetricLatest.value)
                             .where(MetricLatest.run_id.in_(ids)).order_by(MetricLatest.name)).all():
        out.setdefault(r.run_id, {})[r.name] = r.value
    return out


def resolve_names(session: Session, run_id: int, requested: Iterable[str]) -> list[str]:
    """Expand 'grad/d/*' style prefixes against the run's metric names; exact names pass through."""
    wanted = list(dict.fromkeys(requested))
    if not any(n.endswith("*") for n in wanted):
        return wanted
    known = names(session, run_id)
    out: list[str] = []
    for n in wanted:
        if n.endswith("*"):
            out.extend(k for k in known if k.startswith(n[:-1]))
        else:
            out.append(n)
    return list(dict.fromkeys(out))


def read_raw(session: Session, run_id: int, names: Iterable[str], start: int | None = None,
             end: int | None = None) -> Series:
    """{name: (steps, values)} for exact names, deduplicated and ordered by step; [start, end] inclusive."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    q = (select(MetricChunk.name, MetricChunk.steps, MetricChunk.values)
         .where(MetricChunk.run_id == run_id, MetricChunk.name.in_(wanted)))
    # ix_chunks_run_name_last: range reads seek on last_step and filter first_step inside the index
    if start is not None:
        q = q.where(MetricChunk.last_step >= start)
    if end is not None:
        q = q.where(MetricChunk.first_step <= end)
    blobs: dict[str, tuple[list[bytes], list[bytes]]] = {n: ([], []) for n in wanted}
    for r in session.execute(q.order_by(MetricChunk.name, MetricChunk.last_step)).all():
        blobs[r.name][0].append(r.steps)
        blobs[r.name][1].append(r.values)
    out: Series = {}
    for name, (sb, vb) in blobs.items():
        if not sb:
            out[name] = (_EMPTY_S.copy(), _EMPTY_V.copy())
            continue
        # One join of the raw bytes, then a single frombuffer: cheaper than per-chunk arrays.
        s = np.frombuffer(b"".join(sb), dtype=I64).astype(np.int64)
        v = np.frombuffer(b"".join(vb), dtype=F64).astype(np.float64)
        if s.size > 1 and not bool(np.all(s[1:] > s[:-1])):
            s, v, _ = _first_wins(s, v)  # never expected (see the invariant); cheap insurance
        if start is not None or end is not None:
            lo = 0 if start is None else int(np.searchsorted(s, start, side="left"))
            hi = s.size if end is None else int(np.searchsorted(s, end, side="right"))
            s, v = s[lo:hi], v[lo:hi]
        out[name] = (s, v)
    return out
