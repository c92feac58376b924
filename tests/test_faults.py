"""Faults the worker protocol must survive, with real processes and real signals.

* kill -9 of a worker mid-run: the job resumes from its checkpoint on another worker; every step once.
* the server stopped (SIGTERM) or killed (SIGKILL) mid-run and restarted: the worker spools and replays.
* two workers racing for one job, and 40 jobs over 4 workers (SQLite and PostgreSQL): each runs once.
* SIGTERM: the job is handed back, requeued and finished by the next worker.
* a worker frozen (SIGSTOP) past the stall timeout: its job moves on; thawed, it drops the job.
* a broken artifacts disk: uploads answer 503, the worker logs it and keeps them spooled; nothing lost.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.harness import ServerProc, WorkerProc, free_port, start_server, wait_for
from tests.test_worker import FAST_HB, assert_points_once, claims_in, enqueue, run_of, wait_status

# Probes every 10th step keep a step at a few ms; loss/d, loss/g and pred/real are still logged every step.
LONG = {"probe_every": 10, "checkpoint_every": 100, "toy_every": 500}


def _checkpoint_step(c, run_id: int) -> int:
    r = c.get(f"/api/runs/{run_id}/checkpoints")
    steps = [x["step"] for x in r.json()["checkpoints"]] if r.status_code == 200 else []
    return max(steps, default=0)


def _two_workers_then_job(server: ServerProc, spawn_worker, **cfg) -> tuple[int, WorkerProc, WorkerProc]:
    """Two idle workers, then one job: returns (run_id, the worker that claimed it, the other one).

    Both start before the job exists so the second one's slow start (torch) is not on the clock."""
    ws = [spawn_worker(server.url, args=FAST_HB) for _ in range(2)]
    wait_for(lambda: all("idle" in w.log() for w in ws), timeout=120, what="two idle workers")
    run_id = enqueue(server.client(), **cfg)
    holder = wait_for(lambda: next((w for w in ws if run_id in claims_in(w.log(tail=None))), None), timeout=60,
                      what="a worker to claim the job")
    return run_id, holder, next(w for w in ws if w is not holder)


def _resume_step(log: str, run_id: int) -> int:
    m = re.search(rf"run {run_id}: claimed \(attempt \d+\), resuming from step (\d+)", log)
    assert m, log
    return int(m.group(1))


def test_kill9_worker_job_resumes_from_checkpoint_on_another(home: Path, spawn_worker) -> None:
    server = start_server(home, GANSCOPE_STALL_SECONDS="3")
    try:
        c = server.client()
        steps = 2000
        # Checkpoints far apart and flushes close together: at almost any instant the server holds points
        # beyond the last checkpoint, which is the overlap a resumed job must not duplicate.
        cfg = {**LONG, "checkpoint_every": 200, "flush_every": 10}
        run_id, a, b = _two_workers_then_job(server, spawn_worker, name="kill -9", steps=steps, **cfg)
        # Kill once a checkpoint is on the server and later points too (the resumed job will repeat them).
        # The worker is frozen (SIGSTOP) while that is checked, so a checkpoint upload landing in between
        # cannot take the overlap away before the kill; if it did, the worker goes on and we look again.
        def frozen_with_overlap() -> bool:
            if not (_checkpoint_step(c, run_id) >= 200 and run_of(c, run_id)["step"] > _checkpoint_step(c, run_id)):
                return False
            a.proc.send_signal(signal.SIGSTOP)
            time.sleep(0.5)  # requests already sent land now
            if run_of(c, run_id)["step"] > _checkpoint_step(c, run_id):
                return True
            a.proc.send_signal(signal.SIGCONT)
            return False
        wait_for(frozen_with_overlap, timeout=90, what="a checkpoint upload and points beyond it")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        at_kill = run_of(c, run_id)
        ckpt = _checkpoint_step(c, run_id)
        assert at_kill["status"] == "running" and ckpt < steps
        # Points beyond the checkpoint already reached the server: the resumed job repeats them.
        assert at_kill["step"] > ckpt, "the overlap this test is about"

        run = wait_status(c, run_id, {"succeeded", "failed"}, timeout=120, logs=[a, b])
        assert run["status"] == "succeeded" and run["attempts"] == 2, run
        assert _resume_step(b.log(), run_id) == ckpt
        assert_points_once(server, run_id, steps)
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_server_down_mid_run_worker_spools_and_replays(home: Path, spawn_worker, how: str) -> None:
    server = start_server(home, port=free_port())
    try:
        c = server.client()
        steps = 600
        run_id = enqueue(c, name=f"server {how}", steps=steps, **LONG)
        w = spawn_worker(server.url, args=FAST_HB)
        wait_for(lambda: run_of(c, run_id)["step"] >= 100, timeout=90, what="training progress")
        server.stop() if how == "sigterm" else server.kill()
        down_at = time.monotonic()
        # The worker trains on while nobody listens: its spool fills up.
        spool = next(home.glob("worker-*/spool"))
        wait_for(lambda: len(list(spool.glob("*.metrics.req"))) >= 2, timeout=60, what="metrics piling up in the spool")
        assert time.monotonic() - down_at < 30
        server.start()  # same home, same port
        run = wait_status(server.client(), run_id, {"succeeded", "failed"}, timeout=120, logs=[w])
        assert run["status"] == "succeeded" and run["attempts"] == 1, run
        assert_points_once(server, run_id, steps)
        log = w.log()
        assert "spooling to" in log and "replaying" in log, log
        assert not list(spool.glob("*.req")) and not list((spool / "rejected").glob("*.req"))
    finally:
        server.stop()


def test_two_workers_race_for_one_job_exactly_one_runs_it(any_server: ServerProc, spawn_worker) -> None:
    c = any_server.client()
    # Both poll every 20 ms, so their claims for the one job land together.
    a = spawn_worker(any_server.url, args=["--poll", "0.02"])
    b = spawn_worker(any_server.url, args=["--poll", "0.02"])
    wait_for(lambda: "idle" in a.log() and "idle" in b.log(), timeout=90, what="both workers polling")
    run_id = enqueue(c, name="race", steps=100)
    run = wait_status(c, run_id, {"succeeded", "failed"}, timeout=90, logs=[a, b])
    assert run["status"] == "succeeded" and run["attempts"] == 1, run
    claimed = [claims_in(w.log(tail=None)).count(run_id) for w in (a, b)]
    assert sorted(claimed) == [0, 1], claimed
    assert_points_once(any_server, run_id, 100)


def test_forty_jobs_over_four_workers_each_runs_once(any_server: ServerProc, spawn_worker) -> None:
    c = any_server.client()
    ids = [enqueue(c, name=f"job {i}", steps=5, toy_every=5, checkpoint_every=5) for i in range(40)]
    workers = [spawn_worker(any_server.url, args=["--poll", "0.05"]) for _ in range(4)]
    for run_id in ids:
        wait_status(c, run_id, {"succeeded", "failed", "cancelled"}, timeout=150, logs=workers)
    runs = c.get("/api/runs").json()
    runs = runs["runs"] if isinstance(runs, dict) else runs
    mine = {r["id"]: r for r in runs if r["id"] in ids}
    assert len(mine) == 40
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in mine.values()), \
        [(r["id"], r["status"], r["attempts"]) for r in mine.values() if r["status"] != "succeeded" or r["attempts"] != 1]
    claims = [run_id for w in workers for run_id in claims_in(w.log(tail=None))]
    assert sorted(claims) == sorted(ids), "every job claimed by exactly one worker, once"
    assert sum(1 for w in workers if claims_in(w.log(tail=None))) >= 2, "the work was shared"
    for run_id in ids:
        assert_points_once(any_server, run_id, 5, names=("loss/d",))


def test_sigterm_hands_the_job_back_and_the_next_worker_finishes_it(server: ServerProc, spawn_worker) -> None:
    c = server.client()
    steps = 600
    # b stays idle: it gets the job only when a hands it back.
    run_id, a, b = _two_workers_then_job(server, spawn_worker, name="hand back", steps=steps, **LONG)
    wait_for(lambda: _checkpoint_step(c, run_id) >= 100, timeout=90, what="a checkpoint upload")
    assert a.stop(timeout=60) == 0, a.log()  # SIGTERM, then wait: exit status 0
    m = re.search(rf"run {run_id}: finishing as handback at step (\d+)", a.log(tail=None))
    assert m, a.log()
    handed_at = int(m.group(1))
    assert handed_at < steps
    run = wait_status(c, run_id, {"succeeded", "failed"}, timeout=120, logs=[a, b])
    # A hand-back is no failed attempt: b's claim is attempt 1 again, and it starts where a stopped
    # (a checkpointed at that very step before handing back), so no work is lost.
    assert run["status"] == "succeeded" and run["attempts"] == 1, run
    assert f"run {run_id}: claimed (attempt 1), resuming from step {handed_at}" in b.log(tail=None), b.log()
    assert_points_once(server, run_id, steps)


def test_frozen_worker_loses_its_job_and_drops_it_when_thawed(home: Path, spawn_worker) -> None:
    server = start_server(home, GANSCOPE_STALL_SECONDS="3")
    try:
        c = server.client()
        steps = 600
        run_id, a, b = _two_workers_then_job(server, spawn_worker, name="sigstop", steps=steps, **LONG)
        wait_for(lambda: _checkpoint_step(c, run_id) >= 100, timeout=90, what="a checkpoint upload")
        os.killpg(a.proc.pid, signal.SIGSTOP)  # frozen: no heartbeat, no data
        try:
            wait_for(lambda: run_id in claims_in(b.log(tail=None)), timeout=60, what="the job to move to worker b")
        finally:
            os.killpg(a.proc.pid, signal.SIGCONT)
        wait_for(lambda: f"run {run_id}: released by the server" in a.log(tail=None), timeout=30, what="a to drop the job")
        run = wait_status(c, run_id, {"succeeded", "failed"}, timeout=120, logs=[a, b])
        assert run["status"] == "succeeded" and run["attempts"] == 2, run
        assert f"run {run_id}: finishing as" not in a.log(tail=None), "a released job is not finished by its old worker"
        assert a.proc.poll() is None, "the thawed worker lives on"
        assert_points_once(server, run_id, steps)
    finally:
        server.stop()


def test_broken_artifacts_disk_is_reported_and_nothing_is_lost(server: ServerProc, spawn_worker) -> None:
    c = server.client()
    artifacts = server.home / "artifacts"
    # Root ignores file modes, so break the folder for real: it becomes a file, every write under it fails.
    shutil.rmtree(artifacts)
    artifacts.write_text("not a folder")
    steps = 300
    try:
        run_id = enqueue(c, name="broken disk", steps=steps)
        w = spawn_worker(server.url, args=FAST_HB)
        run = wait_status(c, run_id, {"succeeded", "failed"}, timeout=120, logs=[w])
        # Metrics live in the database and went through; the run finished once its checkpoint uploads
        # had failed a few times (they no longer hold it back), and nothing crashed.
        assert run["status"] == "succeeded", run
        assert_points_once(server, run_id, steps)
        log = w.log()
        assert "HTTP 503: storage error while saving a checkpoint" in log, log
        assert "kept in the spool" in log
        assert "storage error while saving a checkpoint" in server.log()
        assert w.proc.poll() is None
        assert c.get(f"/api/runs/{run_id}/checkpoints").json()["checkpoints"] == []
        spool = next(server.home.glob("worker-*/spool"))
        assert len(list(spool.glob("*.checkpoint.req"))) == 3 and not list((spool / "rejected").glob("*"))
        # Stopping the worker does not wait on uploads the server keeps refusing; they stay on disk.
        t0 = time.monotonic()
        assert w.stop(timeout=30) == 0, w.log()
        assert time.monotonic() - t0 < 15
        assert "kept on disk for replay" in w.log(tail=None)
        assert len(list(spool.glob("*.checkpoint.req"))) == 3
    finally:
        artifacts.unlink()
        artifacts.mkdir()
    # The operator fixes the disk and starts a worker on the same spool: the checkpoints arrive.
    w2 = spawn_worker(server.url, args=["--spool", str(spool)])
    wait_for(lambda: [x["step"] for x in c.get(f"/api/runs/{run_id}/checkpoints").json()["checkpoints"]]
             == [100, 200, 300], timeout=90, what="the spooled checkpoints to arrive")
    assert "3 undelivered entries from before: replaying them" in w2.log(tail=None)
    wait_for(lambda: not list(spool.glob("*.req")), timeout=30, what="the spool to drain")
    assert run_of(c, run_id)["status"] == "succeeded"
