"""Metric points: chunked append and range reads (layout: see server/schema.py).

Invariant kept by every write: for one (run, name), chunks are disjoint in step
range, each holds strictly increasing steps, and the chunk with the highest
last_step holds the latest point (metric_latest.step). Reads therefore just
concatenate chunks in last_step order.

Evenly spaced steps (every step, or every k-th: the usual case) are not stored: an
empty steps blob means first_step, first_step + d, ..., last_step with
d = (last_step - first_step) / (n - 1). That halves what appends rewrite and what
reads fetch.

Appends beyond the latest step (the normal case) touch the tail chunk only. Points
at or below it (a spool replay, a resumed job repeating steps) take a slower
path that merges them into the chunks overlapping their range; the first value
stored for a step wins, so replays are idempotent.

Callers serialise writers of one run: db.write() does on SQLite, and on
PostgreSQL the ingest route locks the run row (runs.get_run(lock=True)) first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ganscope.server.schema import CHUNK_POINTS, MetricLatest

I64 = np.dtype("<i8")
F64 = np.dtype("<f8")
Series = dict[str, tuple[np.ndarray, np.ndarray]]
_EMPTY_S = np.zeros(0, dtype=np.int64)
_EMPTY_V = np.zeros(0, dtype=np.float64)


@dataclass
class AppendResult:
    accepted: Series = field(default_factory=dict)  # per name, the points newly stored, by step
    duplicates: int = 0
    nonfinite: int = 0  # NaN/Inf among the accepted points: the detectors judge such a batch at once

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


def encode_steps(s: np.ndarray) -> bytes:
    """b"" for evenly spaced steps (implied by first, last and n), else packed int64."""
    if s.size <= 2:
        return b""
    d = s[1] - s[0]
    if bool(np.all(np.diff(s) == d)):
        return b""
    return s.astype(I64, copy=False).tobytes()


def decode_steps(blob: bytes, first: int, last: int, n: int) -> np.ndarray:
    if blob:
        return np.frombuffer(blob, dtype=I64).astype(np.int64)
    if n == 1:
        return np.array([first], dtype=np.int64)
    return np.arange(n, dtype=np.int64) * ((last - first) // (n - 1)) + first


def _chunk_rows(run_id: int, name: str, s: np.ndarray, v: np.ndarray) -> list[tuple]:
    """INSERT parameters splitting (s, v) into chunks of at most CHUNK_POINTS."""
    rows = []
    for i in range(0, s.size, CHUNK_POINTS):
        cs, cv = s[i:i + CHUNK_POINTS], v[i:i + CHUNK_POINTS]
        rows.append((run_id, name, int(cs[0]), int(cs[-1]), int(cs.size), encode_steps(cs),
                     cv.astype(F64, copy=False).tobytes()))
    return rows


class _Sql:
    """Driver SQL for the hot statements: for batches of a few thousand points the ORM/Core
    compile-and-bind path cost more than SQLite's own work (measured ~4x). Placeholders follow
    the driver's paramstyle; every value is bound, never formatted into the text."""

    def __init__(self, session: Session) -> None:
        self.conn = session.connection()
        self.ph = "?" if self.conn.dialect.name == "sqlite" else "%s"

    def rows(self, sql: str, params: tuple) -> list:
        return self.conn.exec_driver_sql(sql.replace("?", self.ph), params).all()

    def many(self, sql: str, params: list[tuple]) -> None:
        if params:
            self.conn.exec_driver_sql(sql.replace("?", self.ph), params)


_INSERT_CHUNK = ('INSERT INTO metric_chunks (run_id, name, first_step, last_step, n, steps, "values") '
                 "VALUES (?, ?, ?, ?, ?, ?, ?)")


def _merge_late(sql: _Sql, run_id: int, name: str, s: np.ndarray,
                v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Store points at or below the latest step. Returns (new steps, new values, duplicates, rewrote)."""
    # ix_chunks_run_name_last: the chunks overlapping [s[0], s[-1]]
    rows = sql.rows('SELECT id, first_step, last_step, n, steps, "values" FROM metric_chunks '
                    "WHERE run_id = ? AND name = ? AND last_step >= ? AND first_step <= ? ORDER BY last_step",
                    (run_id, name, int(s[0]), int(s[-1])))
    if rows:
        old_s = np.concatenate([decode_steps(bytes(r[4]), r[1], r[2], r[3]) for r in rows])
        old_v = np.concatenate([np.frombuffer(bytes(r[5]), dtype=F64) for r in rows])
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
    sql.many("DELETE FROM metric_chunks WHERE id = ?", [(r[0],) for r in rows])
    sql.many(_INSERT_CHUNK, _chunk_rows(run_id, name, all_s[order], all_v[order]))
    return new_s, new_v, dups, True


def _extend_tail(tail: tuple, s: np.ndarray, v: np.ndarray) -> tuple:
    """UPDATE parameters appending (s, v) to the tail chunk: a read-modify-write of its small blobs."""
    cid, first, last, n, steps_blob, values_blob = tail
    if not steps_blob:
        d = (last - first) // (n - 1) if n > 1 else int(s[0]) - last
        if s.size and int(s[0]) - last == d and encode_steps(s) == b"" and (s.size == 1 or int(s[1] - s[0]) == d):
            new_steps = b""  # still evenly spaced: nothing to store
        else:
            new_steps = decode_steps(b"", first, last, n).astype(I64).tobytes() + s.astype(I64, copy=False).tobytes()
    else:
        new_steps = steps_blob + s.astype(I64, copy=False).tobytes()
    return (int(s[-1]), n + s.size, new_steps, values_blob + v.astype(F64, copy=False).tobytes(), cid)


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
    sql = _Sql(session)
    marks = ", ".join("?" * len(batch))
    tail_cols = 'c.id, c.first_step, c.last_step, c.n, c.steps, c."values"'
    # One query for every name's latest row and tail chunk (metric_latest PK, then ix_chunks_run_name_last).
    latest: dict[str, tuple] = {}
    tails: dict[str, tuple] = {}
    for name, step, count, nonfinite, *tail in sql.rows(
            f"SELECT l.name, l.step, l.count, l.nonfinite, {tail_cols} FROM metric_latest l "
            "LEFT JOIN metric_chunks c ON c.run_id = l.run_id AND c.name = l.name AND c.last_step = l.step "
            f"WHERE l.run_id = ? AND l.name IN ({marks})", (run_id, *batch)):
        latest[name] = (step, count, nonfinite)
        if tail[0] is not None:
            tails[name] = (*tail[:4], bytes(tail[4]), bytes(tail[5]))

    beyond: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    late_new: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (s, v) in batch.items():
        row = latest.get(name)
        cut = 0 if row is None else int(np.searchsorted(s, row[0], side="right"))
        if cut:
            ns, nv, dups, rewrote = _merge_late(sql, run_id, name, s[:cut], v[:cut])
            result.duplicates += dups
            if ns.size:
                late_new[name] = (ns, nv)
            if rewrote and cut < s.size:
                # The slow path may have rewritten the tail chunk: look it up afresh (rare).
                tails.pop(name, None)
                for t in sql.rows(f"SELECT {tail_cols} FROM metric_chunks c WHERE c.run_id = ? AND c.name = ? "
                                  "ORDER BY c.last_step DESC LIMIT 1", (run_id, name)):
                    tails[name] = (*t[:4], bytes(t[4]), bytes(t[5]))
        if cut < s.size:
            beyond[name] = (s[cut:], v[cut:])

    updates: list[tuple] = []
    inserts: list[tuple] = []
    for name, (s, v) in beyond.items():
        tail = tails.get(name)
        k = 0
        if tail is not None and tail[3] < CHUNK_POINTS:
            k = min(CHUNK_POINTS - tail[3], s.size)
            updates.append(_extend_tail(tail, s[:k], v[:k]))
        if k < s.size:
            inserts.extend(_chunk_rows(run_id, name, s[k:], v[k:]))
    sql.many('UPDATE metric_chunks SET last_step = ?, n = ?, steps = ?, "values" = ? WHERE id = ?', updates)
    sql.many(_INSERT_CHUNK, inserts)

    # metric_latest: count, non-finite count and the value at the highest step.
    latest_new: list[tuple] = []
    latest_moved: list[tuple] = []
    latest_counts: list[tuple] = []
    for name in batch:
        parts = [p for p in (late_new.get(name), beyond.get(name)) if p is not None]
        if not parts:
            continue
        if len(parts) > 1:
            s, v = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            order = np.argsort(s, kind="stable")
            s, v = s[order], v[order]
        else:
            s, v = parts[0]
        result.accepted[name] = (s, v)
        row = latest.get(name)
        count = int(s.size) + (row[1] if row else 0)
        bad = int(np.count_nonzero(~np.isfinite(v)))
        result.nonfinite += bad
        nonfinite = bad + (row[2] if row else 0)
        top = beyond.get(name)
        if top is None:
            latest_counts.append((count, nonfinite, run_id, name))
            continue
        last_v = float(top[1][-1])
        last = (int(top[0][-1]), last_v if np.isfinite(last_v) else None)
        if row is None:
            latest_new.append((run_id, name, *last, count, nonfinite))
        else:
            latest_moved.append((*last, count, nonfinite, run_id, name))
    sql.many("INSERT INTO metric_latest (run_id, name, step, value, count, nonfinite) VALUES (?, ?, ?, ?, ?, ?)",
             latest_new)
    sql.many("UPDATE metric_latest SET step = ?, value = ?, count = ?, nonfinite = ? WHERE run_id = ? AND name = ?",
             latest_moved)
    sql.many("UPDATE metric_latest SET count = ?, nonfinite = ? WHERE run_id = ? AND name = ?", latest_counts)
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
    """{name: (steps, values)} for exact names, deduplicated and ordered by step; [start, end] inclusive.
    The arrays are fresh copies: callers may modify them."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    sql = _Sql(session)
    where = f"run_id = ? AND name IN ({', '.join('?' * len(wanted))})"
    params: list = [run_id, *wanted]
    # ix_chunks_run_name_last: range reads seek on last_step and filter first_step inside the index
    if start is not None:
        where += " AND last_step >= ?"
        params.append(start)
    if end is not None:
        where += " AND first_step <= ?"
        params.append(end)
    chunks: dict[str, list[tuple]] = {n: [] for n in wanted}
    for r in sql.rows(f'SELECT name, first_step, last_step, n, steps, "values" FROM metric_chunks '
                      f"WHERE {where} ORDER BY name, last_step", tuple(params)):
        chunks[r[0]].append(r)
    out: Series = {}
    for name, rows in chunks.items():
        total = sum(r[3] for r in rows)
        s = np.empty(total, dtype=np.int64)
        v = np.empty(total, dtype=np.float64)
        pos = 0
        ordered = True
        prev_last = None
        for _, first, last, n, sb, vb in rows:  # one copy per point, straight into the result
            s[pos:pos + n] = decode_steps(sb, first, last, n)
            v[pos:pos + n] = np.frombuffer(vb, dtype=F64)
            pos += n
            ordered = ordered and (prev_last is None or first > prev_last)
            prev_last = last
        if not ordered:
            s, v, _ = _first_wins(s, v)  # chunks overlapping: never expected (see the invariant); insurance
        if start is not None or end is not None:
            lo = 0 if start is None else int(np.searchsorted(s, start, side="left"))
            hi = s.size if end is None else int(np.searchsorted(s, end, side="right"))
            s, v = s[lo:hi], v[lo:hi]
        out[name] = (s, v)
    return out
