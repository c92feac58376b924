"""Metric store on real SQLite and PostgreSQL: append, read, dedupe, out-of-order, non-finite, ranges."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from ganscope.server.db import Database
from ganscope.server.schema import CHUNK_POINTS, MetricChunk, MetricLatest
from ganscope.server.store import metrics, runs
from ganscope.server.store.migrate import migrate


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'm.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    database = Database(url)
    migrate(database)
    yield database
    database.dispose()


def new_run(db: Database) -> int:
    with db.write() as s:
        return runs.create_sdk_run(s, "t", {}, None)[0].id


def put(db: Database, run_id: int, series: dict) -> metrics.AppendResult:
    with db.write() as s:
        return metrics.append(s, run_id, {k: (np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.float64))
                                          for k, (a, b) in series.items()})


def read(db: Database, run_id: int, names: list[str], start=None, end=None):
    with db.read() as s:
        return metrics.read_raw(s, run_id, names, start, end)


def check_chunks(db: Database, run_id: int, name: str) -> None:
    """The store's invariant: disjoint chunks, each strictly increasing, within CHUNK_POINTS."""
    with db.read() as s:
        rows = s.execute(select(MetricChunk).where(MetricChunk.run_id == run_id, MetricChunk.name == name)
                         .order_by(MetricChunk.last_step)).scalars().all()
    prev = None
    for r in rows:
        st = metrics.decode_steps(r.steps, r.first_step, r.last_step, r.n)
        assert st.size == r.n <= CHUNK_POINTS and len(r.values) == 8 * r.n
        assert st[0] == r.first_step and st[-1] == r.last_step
        assert np.all(np.diff(st) > 0)
        if prev is not None:
            assert r.first_step > prev
        prev = r.last_step


def test_append_and_read_back_across_chunks(db: Database) -> None:
    rid = new_run(db)
    n = CHUNK_POINTS * 2 + 123
    steps = np.arange(n) * 2
    vals = np.sin(np.arange(n) / 7.0)
    for lo in range(0, n, 700):  # batches straddle chunk boundaries
        res = put(db, rid, {"loss/d": (steps[lo:lo + 700], vals[lo:lo + 700]), "loss/g": (steps[lo:lo + 700], -vals[lo:lo + 700])})
        assert res.duplicates == 0
    got = read(db, rid, ["loss/d", "loss/g", "missing"])
    np.testing.assert_array_equal(got["loss/d"][0], steps)
    np.testing.assert_array_equal(got["loss/d"][1], vals)
    np.testing.assert_array_equal(got["loss/g"][1], -vals)
    assert got["missing"][0].size == 0
    check_chunks(db, rid, "loss/d")
    with db.read() as s:
        latest = s.get(MetricLatest, (rid, "loss/d"))
        assert (latest.step, latest.count) == (int(steps[-1]), n)
        assert latest.value == pytest.approx(vals[-1])


def test_replay_is_idempotent_and_first_value_wins(db: Database) -> None:
    rid = new_run(db)
    put(db, rid, {"m": ([1, 2, 3], [1.0, 2.0, 3.0])})
    res = put(db, rid, {"m": ([1, 2, 3], [9.0, 9.0, 9.0])})
    assert res.accepted_count == 0 and res.duplicates == 3
    res = put(db, rid, {"m": ([3, 4, 4], [7.0, 4.0, 8.0])})  # 3 is old, 4 twice in one batch: first wins
    assert res.accepted_count == 1 and res.duplicates == 2
    s, v = read(db, rid, ["m"])["m"]
    assert s.tolist() == [1, 2, 3, 4] and v.tolist() == [1.0, 2.0, 3.0, 4.0]
    with db.read() as ses:
        assert ses.get(MetricLatest, (rid, "m")).count == 4


def test_out_of_order_points_fill_gaps(db: Database) -> None:
    rid = new_run(db)
    put(db, rid, {"m": (np.arange(0, 3000, 2), np.arange(0, 3000, 2) * 1.0)})  # even steps
    put(db, rid, {"m": (np.arange(5000, 5010), np.zeros(10))})
    # odd steps arrive late, mixed with steps beyond the end and some replays
    late = np.concatenate([np.arange(1, 3000, 2), np.arange(4000, 4005), np.arange(5005, 5020)])
    res = put(db, rid, {"m": (late[::-1].copy(), late[::-1] * 1.0)})
    assert res.duplicates == 5  # 5005..5009
    s, v = read(db, rid, ["m"])["m"]
    expect = np.unique(np.concatenate([np.arange(3000), np.arange(4000, 4005), np.arange(5000, 5020)]))
    np.testing.assert_array_equal(s, expect)
    np.testing.assert_array_equal(v[s < 3000], s[s < 3000] * 1.0)
    assert v[s == 5005][0] == 0.0  # stored first
    assert v[s == 5019][0] == 5019.0
    check_chunks(db, rid, "m")
    with db.read() as ses:
        row = ses.get(MetricLatest, (rid, "m"))
        assert (row.step, row.count) == (5019, expect.size)


def test_non_finite_values_are_stored_as_such(db: Database) -> None:
    rid = new_run(db)
    put(db, rid, {"m": ([0, 1, 2, 3], [1.0, np.nan, np.inf, -np.inf])})
    s, v = read(db, rid, ["m"])["m"]
    assert v[0] == 1.0 and np.isnan(v[1]) and v[2] == np.inf and v[3] == -np.inf
    with db.read() as ses:
        row = ses.get(MetricLatest, (rid, "m"))
        assert row.value is None and row.nonfinite == 3


def test_range_reads(db: Database) -> None:
    rid = new_run(db)
    n = CHUNK_POINTS * 3
    put(db, rid, {"m": (np.arange(n), np.arange(n) * 0.5)})
    s, v = read(db, rid, ["m"], start=CHUNK_POINTS - 5, end=CHUNK_POINTS + 5)["m"]
    assert s.tolist() == list(range(CHUNK_POINTS - 5, CHUNK_POINTS + 6))
    assert read(db, rid, ["m"], start=n + 10)["m"][0].size == 0
    assert read(db, rid, ["m"], end=2)["m"][0].tolist() == [0, 1, 2]


def test_random_batches_match_a_first_wins_model(db: Database) -> None:
    rng = np.random.default_rng(7)
    rid = new_run(db)
    model: dict[int, float] = {}
    for _ in range(40):
        lo = int(rng.integers(0, 6000))
        steps = rng.integers(lo, lo + int(rng.integers(1, 900)), size=int(rng.integers(1, 600)))
        vals = rng.standard_normal(steps.size)
        vals[rng.random(steps.size) < 0.02] = np.nan
        for st, va in zip(steps.tolist(), vals.tolist()):
            model.setdefault(st, va)
        put(db, rid, {"m": (steps, vals)})
    s, v = read(db, rid, ["m"])["m"]
    keys = sorted(model)
    assert s.tolist() == keys
    np.testing.assert_array_equal(v, np.array([model[k] for k in keys]))
    check_chunks(db, rid, "m")


def test_evenly_spaced_steps_are_implied_and_irregular_ones_stored(db: Database) -> None:
    rid = new_run(db)
    put(db, rid, {"every": (np.arange(0, 500), np.ones(500)), "tenth": (np.arange(0, 5000, 10), np.ones(500))})
    put(db, rid, {"every": (np.arange(500, 600), np.ones(100)), "tenth": (np.arange(5000, 6000, 10), np.ones(100))})
    put(db, rid, {"every": ([600, 601, 605], [2.0, 2.0, 2.0])})  # the spacing breaks: steps get stored
    with db.read() as s:
        blobs = dict(s.execute(select(MetricChunk.name, MetricChunk.steps).where(MetricChunk.run_id == rid)).all())
    assert blobs["tenth"] == b"" and len(blobs["every"]) == 8 * 603
    got = read(db, rid, ["every", "tenth"])
    assert got["every"][0].tolist() == list(range(602)) + [605]
    assert got["tenth"][0].tolist() == list(range(0, 6000, 10))
    check_chunks(db, rid, "every")
    check_chunks(db, rid, "tenth")


def test_prefix_names_and_isolation_between_runs(db: Database) -> None:
    a, b = new_run(db), new_run(db)
    put(db, a, {"grad/d/0": ([1], [1.0]), "grad/d/1": ([1], [2.0]), "grad/g/0": ([1], [3.0])})
    put(db, b, {"grad/d/0": ([1], [9.0])})
    with db.read() as s:
        assert metrics.resolve_names(s, a, ["grad/d/*"]) == ["grad/d/0", "grad/d/1"]
        assert metrics.read_raw(s, b, ["grad/d/0"])["grad/d/0"][1].tolist() == [9.0]
        assert metrics.latest(s, [a])[a]["grad/g/0"] == 3.0
