"""A really full disk (issue 14): the server's GANSCOPE_HOME, database and artifacts together, on a small tmpfs
that a ballast file fills up, with a real worker training a real job.

While the disk is full the server keeps the space under GANSCOPE_RESERVE_MB for the writes that steer runs
(server/disk_room.py): metric batches and images answer 503 and wait in the worker's spool, heartbeats still
land. When space returns the backlog replays and the run finishes with every point and image. When it does
not, the run is stopped with a `storage_error:` reason past the stall limit, and what the worker kept is
still taken once space does return: nothing acknowledged is lost, nothing spooled is rejected.

Mounting a tmpfs needs root (CAP_SYS_ADMIN); without it these tests skip, except under CI=1 where they fail.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import ServerProc, WorkerProc, start_server, start_worker, wait_for

DISK_MB = 24
RESERVE_MB = 6  # > the 4 MB SQLite's write-ahead log reaches before its checkpoint reuses it
JOB: dict[str, Any] = {"dataset": "shapes", "image_size": 16, "ngf": 8, "ndf": 8, "nz": 16, "batch_size": 16,
                       "sample_every": 10, "checkpoint_every": 50, "flush_every": 10, "eval_every": 0}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        why = f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave_mb: float) -> Path:
    """A ballast file that leaves `leave_mb` free on the disk."""
    st = os.statvfs(disk)
    ballast = disk / "ballast"
    with open(ballast, "wb") as f:
        f.truncate(0)
        size = st.f_bavail * st.f_frsize - int(leave_mb * 1e6)
        chunk = b"\0" * (1 << 20)
        while size > 0:  # written, not sparse: tmpfs counts only pages really used
            f.write(chunk[:size])
            size -= len(chunk)
    return ballast


def _start(disk: Path, tmp_path: Path, stall_s: str) -> tuple[ServerProc, WorkerProc]:
    server = start_server(disk / "home", GANSCOPE_RESERVE_MB=str(RESERVE_MB), GANSCOPE_STALL_SECONDS=stall_s)
    worker = start_worker(server.url, tmp_path / "worker-home", args=["--heartbeat", "0.5", "--drain-timeout", "3"])
    return server, worker


def _metric_steps(c: httpx.Client, run_id: int) -> list[int]:
    got = c.get(f"/api/runs/{run_id}/metrics", params={"names": "loss/g", "max_points": 100_000}).json()
    return got["metrics"].get("loss/g", {}).get("steps", [])


def _spool_files(tmp_path: Path, pattern: str) -> list[Path]:
    return [p for p in (tmp_path / "worker-home").glob(f"worker-*/spool/{pattern}") if p.is_file()]


def _enqueue(c: httpx.Client, steps: int) -> int:
    r = c.post("/api/jobs", json={**JOB, "steps": steps})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_full_disk_holds_data_back_then_the_run_finishes_with_all_of_it(small_disk: Path, tmp_path: Path) -> None:
    server, worker = _start(small_disk, tmp_path, stall_s="600")
    try:
        with server.client() as c:
            ballast = _fill(small_disk, RESERVE_MB + 0.3)
            run_id = _enqueue(c, steps=300)
            # The disk reaches the reserve: points stop arriving, but heartbeats still report the step.
            wait_for(lambda: "disk nearly full" in server.log(None), timeout=90, what="the reserve to be reached")
            stuck = len(_metric_steps(c, run_id))
            wait_for(lambda: c.get(f"/api/runs/{run_id}").json()["step"] > stuck + 50, timeout=90,
                     what="heartbeats to report steps the metrics could not")
            # Training ends while its points still wait, and they keep failing long enough that the worker
            # stops waiting on them (its drain timeout) with the final status spooled behind them.
            wait_for(lambda: "finishing as succeeded" in worker.log(None), timeout=90, what="training to end")
            wait_for(lambda: re.search(r"failed to take metrics .*attempt 5\b", worker.log(None)), timeout=90,
                     what="metric batches to fail five times")
            assert c.get(f"/api/runs/{run_id}").json()["status"] == "running"
            assert len(_metric_steps(c, run_id)) < 300
            ballast.unlink()  # space returns: the final status must not overtake the points it covers
            wait_for(lambda: c.get(f"/api/runs/{run_id}").json()["status"] != "running", timeout=120,
                     what="the run to finish after space returned")
            run = c.get(f"/api/runs/{run_id}").json()
            assert run["status"] == "succeeded", (run, worker.log())
            assert _metric_steps(c, run_id) == list(range(1, 301)), "a point went missing"
            samples = {s["step"] for s in c.get(f"/api/runs/{run_id}/samples").json()["samples"]}
            assert set(range(10, 301, 10)) <= samples, sorted(samples)
            assert run["checkpoint_step"] == 300
            assert not _spool_files(tmp_path, "rejected/*"), "the worker gave up on spooled data"
            # Said once per interval, not a traceback per refused request.
            assert server.log(None).count("disk nearly full") <= 4, server.log()
    finally:
        worker.stop()
        server.stop()


def test_disk_that_stays_full_stops_the_run_with_the_reason_and_loses_nothing(small_disk: Path,
                                                                              tmp_path: Path) -> None:
    server, worker = _start(small_disk, tmp_path, stall_s="4")
    try:
        with server.client() as c:
            ballast = _fill(small_disk, RESERVE_MB + 0.3)
            run_id = _enqueue(c, steps=5000)
            wait_for(lambda: c.get(f"/api/runs/{run_id}").json()["status"] == "stopped", timeout=120,
                     what="the run to be stopped for its storage")
            run = c.get(f"/api/runs/{run_id}").json()
            assert run["stop_reason"].startswith("storage_error:"), run
            assert "disk nearly full" in run["stop_reason"] and "could be stored" in run["stop_reason"], run
            acknowledged = _metric_steps(c, run_id)
            assert acknowledged == list(range(1, len(acknowledged) + 1))
            assert run["step"] < 5000, "the run trained on blind to the end"
            assert run["error"] is None or "told to stop: storage_error:" in run["error"], run["error"]
            assert not _spool_files(tmp_path, "rejected/*")
            spooled = _spool_files(tmp_path, "*.req")
            assert spooled, "the points the server could not take must wait in the worker's spool"

            ballast.unlink()  # space returns: the backlog of the stopped run is still taken
            wait_for(lambda: not _spool_files(tmp_path, "*.req"), timeout=120, what="the spool to drain")
            steps = _metric_steps(c, run_id)
            assert steps[:len(acknowledged)] == acknowledged, "an acknowledged point changed"
            assert steps == list(range(1, len(steps) + 1)) and len(steps) > len(acknowledged), steps[-5:]
            assert not _spool_files(tmp_path, "rejected/*"), "the worker gave up on spooled data"
            after = c.get(f"/api/runs/{run_id}").json()
            assert after["status"] == "stopped" and after["stop_reason"] == run["stop_reason"], after
    finally:
        worker.stop()
        server.stop()
