"""Disk pressure: checkpoint retention (GANSCOPE_KEEP_CHECKPOINTS) and storage errors logged once per interval,
on the real server (SQLite and PostgreSQL for retention)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ServerProc, start_server

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


@pytest.fixture(params=["sqlite", "postgres"])
def keep2(request: pytest.FixtureRequest, home: Path) -> Iterator[ServerProc]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    s = start_server(home, database_url=url, GANSCOPE_KEEP_CHECKPOINTS="2")
    yield s
    s.stop()


def _files(server: ServerProc, run_id: int) -> list[str]:
    folder = server.home / "artifacts" / "runs" / str(run_id) / "checkpoints"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_checkpoint_retention_keeps_the_newest_and_what_alerts_need(keep2: ServerProc) -> None:
    with keep2.client() as c:
        run_id = c.post("/api/runs", json={"name": "ret", "config": {"dataset": "ring8"}}).json()["id"]
        for step in (100, 200, 300):
            assert c.put(f"/api/runs/{run_id}/checkpoints/{step}", content=b"x" * step).status_code == 201
        # Newest two, plus the newest at least 100 steps (200) and 200 steps (100) behind the newest.
        assert [x["step"] for x in c.get(f"/api/runs/{run_id}/checkpoints").json()["checkpoints"]] == [100, 200, 300]
        # A NaN loss at step 250 opens an alert: the newest checkpoint before it (200) is where a rollback
        # would resume, so it stays however many newer ones arrive.
        r = c.post(f"/api/runs/{run_id}/metrics", json={"series": {"loss/d": {"steps": [250], "values": [None]}}})
        assert r.status_code == 200, r.text
        alerts = c.get(f"/api/runs/{run_id}/alerts").json()["alerts"]
        assert [(a["signature"], a["first_step"]) for a in alerts] == [("nonfinite", 250)]
        for step in (400, 500, 600):
            assert c.put(f"/api/runs/{run_id}/checkpoints/{step}", content=b"x" * step).status_code == 201
        kept = [x["step"] for x in c.get(f"/api/runs/{run_id}/checkpoints").json()["checkpoints"]]
        # 600, 500 newest; 500, 400 and 200 as the 100/200/400-step reach; 200 also for the alert; 100 and
        # 300 went as newer ones arrived.
        assert kept == [200, 400, 500, 600], kept
        assert _files(keep2, run_id) == [f"step-{s:010d}.ckpt" for s in kept]
        latest = c.get(f"/api/runs/{run_id}/checkpoints/latest")
        assert latest.headers["x-ganscope-step"] == str(kept[-1]) and len(latest.content) == kept[-1]


def test_storage_errors_are_logged_once_per_interval(server: ServerProc) -> None:
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "full", "config": {"dataset": "ring8"}}).json()["id"]
        # A file where the run's artifact folder must go: every write below it fails, like a full disk.
        runs_dir = server.home / "artifacts" / "runs"
        runs_dir.mkdir(parents=True, exist_ok=True)
        (runs_dir / str(run_id)).write_text("in the way")
        for step in range(30):
            r = c.post(f"/api/runs/{run_id}/samples", params={"step": step}, content=PNG,
                       headers={"Content-Type": "image/png"})
            assert r.status_code == 503 and "storage error" in r.json()["detail"], r.text
            assert r.headers.get("retry-after")
    log = server.log(None)
    assert log.count("storage error while") == 1, log[-3000:]
    assert log.count("Traceback") <= 1


def test_sample_retention_thins_old_images_and_keeps_recent_ones(home: Path) -> None:
    s = start_server(home, GANSCOPE_KEEP_SAMPLES="6")
    try:
        with s.client() as c:
            run_id = c.post("/api/runs", json={"name": "long", "config": {"dataset": "ring8"}}).json()["id"]
            for step in range(0, 3000, 100):
                r = c.post(f"/api/runs/{run_id}/samples", params={"step": step}, content=PNG,
                           headers={"Content-Type": "image/png"})
                assert r.status_code == 201, r.text
            steps = [x["step"] for x in c.get(f"/api/runs/{run_id}/samples").json()["samples"]]
            assert len(steps) == 6 and steps[0] == 0 and steps[-3:] == [2700, 2800, 2900], steps
            # The thinned part still spans the run: no gap is more than half of it.
            assert max(b - a for a, b in zip(steps, steps[1:])) <= 1500, steps
            for step in steps:
                assert c.get(f"/api/runs/{run_id}/samples/grid/{step}.png").status_code == 200
        folder = s.home / "artifacts" / "runs" / str(run_id) / "samples"
        assert len([p for p in folder.iterdir() if not p.name.startswith(".")]) == 6
    finally:
        s.stop()
