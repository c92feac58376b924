"""The worker process end to end: real server, real `python -m ganscope.trainer.worker` processes, real jobs.

The helpers here are shared with tests/test_faults.py.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import REPO, ServerProc, WorkerProc, base_env, start_server, wait_for

# Tiny toy jobs: ~10 ms a step on one CPU thread.
TINY: dict[str, Any] = {"dataset": "ring8", "toy_hidden": 16, "batch_size": 32, "toy_every": 100,
                        "checkpoint_every": 100}
FAST_HB = ["--heartbeat", "0.5"]


def enqueue(c: httpx.Client, **cfg: Any) -> int:
    r = c.post("/api/jobs", json={**TINY, **cfg})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def run_of(c: httpx.Client, run_id: int) -> dict[str, Any]:
    r = c.get(f"/api/runs/{run_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(c: httpx.Client, run_id: int, statuses: set[str] | str, timeout: float = 60.0,
                logs: list[WorkerProc] | None = None) -> dict[str, Any]:
    want = {statuses} if isinstance(statuses, str) else statuses
    try:
        return wait_for(lambda: (r := run_of(c, run_id))["status"] in want and r, timeout=timeout,
                        what=f"run {run_id} to be {'/'.join(sorted(want))}")
    except AssertionError as exc:
        detail = "\n".join(w.log() for w in logs or [])
        raise AssertionError(f"{exc}; run is {run_of(c, run_id)}\n{detail}") from None


def stored_counts(server: ServerProc, run_id: int) -> dict[str, int]:
    """Points per metric as stored (not through the deduplicating read path): proves 'none twice'."""
    sql = "SELECT name, SUM(n) FROM metric_chunks WHERE run_id = {} GROUP BY name"
    url = server.env.get("GANSCOPE_DATABASE_URL")
    if url:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            return {n: int(c) for n, c in conn.execute(sql.format(int(run_id))).fetchall()}
    with sqlite3.connect(f"file:{server.home / 'ganscope.db'}?mode=ro", uri=True) as conn:
        return {n: int(c) for n, c in conn.execute(sql.format(int(run_id))).fetchall()}


def assert_points_once(server: ServerProc, run_id: int, steps: int,
                       names: tuple[str, ...] = ("loss/d", "loss/g", "pred/real")) -> None:
    """Every step 1..steps present exactly once, both in the API's answer and in storage."""
    c = server.client()
    got = c.get(f"/api/runs/{run_id}/metrics", params={"names": ",".join(names), "max_points": 1_000_000}).json()
    for name in names:
        s = got["metrics"][name]["steps"]
        missing = sorted(set(range(1, steps + 1)) - set(s))
        assert s == list(range(1, steps + 1)), f"{name}: {len(s)} points, missing {missing[:10]}"
    counts = stored_counts(server, run_id)
    for name in names:
        assert counts.get(name) == steps, f"{name} stored {counts.get(name)} times for {steps} steps"


def claims_in(log: str) -> list[int]:
    return [int(m) for m in re.findall(r"run (\d+): claimed", log)]


def test_worker_trains_a_toy_job_and_reports_everything(server: ServerProc, spawn_worker) -> None:
    c = server.client()
    run_id = enqueue(c, name="e2e", steps=300)
    w = spawn_worker(server.url, args=["--once", *FAST_HB])
    assert w.proc.wait(120) == 0, w.log()
    run = run_of(c, run_id)
    assert run["status"] == "succeeded" and run["attempts"] == 1 and run["step"] == 300, run
    assert_points_once(server, run_id, 300)
    snaps = c.get(f"/api/runs/{run_id}/snapshots", params={"kind": "toy"}).json()
    assert snaps["steps"] == [0, 100, 200, 300]
    assert snaps["snapshot"]["payload"]["dim"] == 2
    ckpts = [x["step"] for x in c.get(f"/api/runs/{run_id}/checkpoints").json()["checkpoints"]]
    assert ckpts == [100, 200, 300]
    latest = c.get(f"/api/runs/{run_id}/checkpoints/latest")
    assert latest.status_code == 200 and latest.headers["x-ganscope-step"] == "300" and len(latest.content) > 1000
    log = w.log()
    for line in ("run %d: claimed (attempt 1)" % run_id, "run %d: training on cpu" % run_id,
                 "run %d: finishing as succeeded at step 300" % run_id, "exiting after 1 job(s)"):
        assert line in log, log
    assert "HTTP Request:" not in log, "one line per state change, not one per request"
    spool = next(Path(server.home).glob("worker-*/spool"))
    assert not list(spool.glob("*.req")), "everything delivered"


def test_image_job_uploads_sample_grids(server: ServerProc, spawn_worker) -> None:
    c = server.client()
    r = c.post("/api/jobs", json={"name": "img", "dataset": "shapes", "image_size": 16, "ngf": 8, "ndf": 8,
                                  "nz": 16, "batch_size": 8, "steps": 20, "sample_every": 10,
                                  "checkpoint_every": 20, "probe_every": 5})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    w = spawn_worker(server.url, args=["--once"])
    assert w.proc.wait(120) == 0, w.log()
    assert run_of(c, run_id)["status"] == "succeeded"
    samples = c.get(f"/api/runs/{run_id}/samples").json()["samples"]
    assert sorted(s["step"] for s in samples if s["kind"] == "grid") == [0, 10, 20]
    png = c.get(next(s["url"] for s in samples if s["kind"] == "grid"))
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert_points_once(server, run_id, 20, names=("loss/d", "loss/g"))


def test_cancel_stops_the_run_between_steps_and_the_worker_stays_up(server: ServerProc, spawn_worker) -> None:
    c = server.client()
    run_id = enqueue(c, name="to cancel", steps=100_000)
    w = spawn_worker(server.url, args=FAST_HB)
    wait_for(lambda: run_of(c, run_id)["step"] >= 50, timeout=60, what="training progress")
    t0 = time.monotonic()
    assert c.post(f"/api/runs/{run_id}/cancel").status_code in (200, 202)
    run = wait_status(c, run_id, "cancelled", timeout=30, logs=[w])
    assert time.monotonic() - t0 < 10, "cancel is obeyed within a heartbeat or a flush"
    assert run["step"] < 100_000
    assert_points_once(server, run_id, run["step"], names=("loss/d",))
    # A final checkpoint marks where it stopped; the worker itself lives on and goes idle.
    latest = c.get(f"/api/runs/{run_id}/checkpoints/latest")
    assert latest.status_code == 200 and int(latest.headers["x-ganscope-step"]) == run["step"]
    wait_for(lambda: "idle" in w.log().split(f"run {run_id}: done", 1)[-1], timeout=20, what="worker idle")
    assert w.proc.poll() is None
    assert f"run {run_id}: server says cancel" in w.log(tail=None)


def test_a_failing_job_is_reported_failed_with_its_error(server: ServerProc, spawn_worker) -> None:
    c = server.client()
    # mnist is not on disk under this server's data root: the trainer raises while building the data.
    bad = c.post("/api/jobs", json={"name": "no data", "dataset": "mnist", "image_size": 16, "ngf": 8, "ndf": 8,
                                    "batch_size": 8, "steps": 5}).json()["id"]
    good = enqueue(c, name="after", steps=20)
    w = spawn_worker(server.url, args=["--max-jobs", "2", "--data-root", str(server.home / "nowhere")])
    assert w.proc.wait(120) == 0, w.log()
    run = run_of(c, bad)
    assert run["status"] == "failed", run
    assert run["error"] and "mnist" in run["error"].lower(), run["error"]
    assert f"run {bad}: failed:" in w.log(tail=None) and "Traceback" in w.log(tail=None)
    assert run_of(c, good)["status"] == "succeeded", "one failed job does not take the worker down"


def test_token_from_environment_and_a_wrong_token_is_reported(home: Path, spawn_worker) -> None:
    server = start_server(home, token="t0ken")
    try:
        c = server.client(token="t0ken")
        wrong = spawn_worker(server.url, token="wrong")
        right = spawn_worker(server.url, args=["--once"], GANSCOPE_TOKEN="t0ken")  # token from the environment
        wait_for(lambda: "401" in wrong.log(), timeout=90, what="the wrong token to be reported")
        assert "Bearer" in wrong.log()
        run_id = enqueue(c, steps=20)
        assert right.proc.wait(120) == 0, right.log()
        assert run_of(c, run_id)["status"] == "succeeded"
        assert claims_in(right.log(tail=None)) == [run_id] and claims_in(wrong.log(tail=None)) == []
        assert wrong.proc.poll() is None, "a wrong token is reported and retried, not fatal"
    finally:
        server.stop()


def test_device_this_host_lacks_stops_the_worker_at_once(tmp_path: Path) -> None:
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("this host has a cuda:7")
    p = subprocess.run([sys.executable, "-m", "ganscope.trainer.worker", "--server", "http://127.0.0.1:9", "--device",
                        "cuda:7", "--workdir", str(tmp_path)], cwd=REPO, env=base_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "cuda:7" in p.stderr + p.stdout


def test_sigterm_while_idle_exits_cleanly(server: ServerProc, spawn_worker) -> None:
    w = spawn_worker(server.url)
    wait_for(lambda: "idle" in w.log(), timeout=60, what="worker idle")
    assert w.stop(timeout=20) == 0, w.log()
    assert "exiting after 0 job(s)" in w.log()
