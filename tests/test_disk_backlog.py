"""Disk pressure, the worker's side (issue 14): while the server's artifact storage fails, metric batches keep
flowing and samples wait in the client's spool; when space returns the backlog is delivered, metrics ahead of
images, each kind in its own order, the run's `finish` after all of its data. Real server, real HTTP."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tests.harness import ServerProc, free_port
from ganscope.trainer.client import Client

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_metrics_flow_while_samples_wait_then_everything_arrives_in_order(server: ServerProc, tmp_path: Path) -> None:
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "full", "config": {"dataset": "ring8"}}).json()["id"]
        # A file where the run's artifact folder must go: every image write fails, like a full disk.
        runs_dir = server.home / "artifacts" / "runs"
        runs_dir.mkdir(parents=True, exist_ok=True)
        obstacle = runs_dir / str(run_id)
        obstacle.write_text("in the way")
        # The backlog: spooled while the server was out of reach, forty images ahead of the metric batches.
        offline = Client(f"http://127.0.0.1:{free_port()}", tmp_path / "spool", max_backoff=0.3)
        for step in range(40):
            offline.put_sample(run_id, step, "grid", PNG + bytes([step]))
        for step in range(12):
            offline.log_metrics(run_id, {"loss/g": ([step], [float(step)])})
            offline.flush_metrics()
        # Order probes: a repeated metric step keeps the value that arrived first, a re-uploaded sample
        # the image that arrived last; so the spool must replay each kind in its own order.
        offline.log_metrics(run_id, {"loss/g": ([5], [99.0])})
        offline.flush_metrics()
        offline.put_sample(run_id, 5, "grid", PNG + b"second")
        done = offline.finish(run_id, {"status": "succeeded", "step": 39})
        assert not offline.close(0.5)
        start = time.monotonic()
        client = Client(server.url, tmp_path / "spool", max_backoff=1.0, flush_seconds=0.1)
        try:
            def metric_steps() -> list[int]:
                return c.get(f"/api/runs/{run_id}/metrics", params={"names": "loss/g"}).json()[
                    "metrics"].get("loss/g", {}).get("steps", [])

            # The metrics get through at once, although forty undeliverable images were spooled before them
            # (sent in spool order, three 503s in a row took the server for down, and it backed off).
            _until(lambda: metric_steps() == list(range(12)), 30, "metrics past the failing samples")
            assert time.monotonic() - start < 5.0, time.monotonic() - start
            kinds = sorted({e.kind for e in client.spool.entries()})
            assert kinds == ["finish", "sample"], kinds
            assert c.get(f"/api/runs/{run_id}/samples").json()["samples"] == []
            # The finish waits behind the run's undelivered samples: the run is not final yet.
            time.sleep(1.0)
            assert c.get(f"/api/runs/{run_id}").json()["status"] not in ("succeeded", "failed")
            assert not client.spool.rejected(), "a 503 must never reject an entry"

            obstacle.unlink()  # space returns
            assert client.wait_delivered(done, 60), "the backlog was not delivered after space returned"
            assert client.spool.count() == 0 and not client.spool.rejected()
        finally:
            client.close(5)
        steps = [x["step"] for x in c.get(f"/api/runs/{run_id}/samples").json()["samples"]]
        assert steps == list(range(40)), steps
        for step in (0, 39):
            assert c.get(f"/api/runs/{run_id}/samples/grid/{step}.png").content == PNG + bytes([step])
        assert c.get(f"/api/runs/{run_id}/samples/grid/5.png").content == PNG + b"second"
        values = c.get(f"/api/runs/{run_id}/metrics", params={"names": "loss/g"}).json()["metrics"]["loss/g"]
        assert values["steps"] == list(range(12)) and values["values"][5] == 5.0, values
        assert c.get(f"/api/runs/{run_id}").json()["status"] == "succeeded"
    shutil.rmtree(tmp_path / "spool", ignore_errors=True)
