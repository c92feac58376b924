"""Disk pressure, the worker's side (issue 14): while the server's artifact storage fails, metric batches keep
flowing and samples wait in the client's spool; when space returns the backlog is delivered, metrics ahead of
images, each kind in its own order, the run's `finish` after all of its data. A run that can store nothing
for longer than the stall limit is told to stop, with a `storage_error:` reason. Real server, real HTTP."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tests.harness import ServerProc, free_port, start_server
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
            # ... every metric batch leaves the spool (the last, a repeat of step 5, adds no step to watch for).
            _until(lambda: sorted({e.kind for e in client.spool.entries()}) == ["finish", "sample"], 5,
                   "only the samples and the finish left in the spool")
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


def test_run_that_cannot_store_past_the_stall_limit_is_stopped_with_the_reason(home: Path, tmp_path: Path) -> None:
    server = start_server(home, GANSCOPE_STALL_SECONDS="2")
    actions: list[tuple[int, str, str | None]] = []
    try:
        with server.client() as c:
            run_id = c.post("/api/runs", json={"name": "blind", "config": {"dataset": "ring8"}}).json()["id"]
            runs_dir = server.home / "artifacts" / "runs"
            runs_dir.mkdir(parents=True, exist_ok=True)
            (runs_dir / str(run_id)).write_text("in the way")  # never removed: the disk stays full
            client = Client(server.url, tmp_path / "spool", max_backoff=0.3, flush_seconds=0.1, entry_attempts=2,
                            on_action=lambda run, act, why: actions.append((run, act, why)))
            try:
                start = time.monotonic()
                step = 0
                while not actions:  # the training loop: images and metrics every 0.1 s
                    assert time.monotonic() - start < 30, "the run was never told to stop"
                    client.put_sample(run_id, step, "grid", PNG)
                    client.log_metrics(run_id, {"loss/g": ([step], [1.0])})
                    step += 1
                    time.sleep(0.1)
                assert time.monotonic() - start >= 2.0  # not before the stall limit
                (run, act, why) = actions[0]
                assert run == run_id and act == "stop" and why and why.startswith("storage_error:"), actions
                shown = c.get(f"/api/runs/{run_id}").json()
                assert shown["control"] == "stop" and shown["stop_reason"] == why, shown
                assert "Not a directory" in why and shown["status"] == "running"
                # The script stops as told; its finish gets past the undeliverable images (entry_attempts).
                done = client.finish(run_id, {"status": "stopped", "step": step})
                assert client.wait_delivered(done, 60), "the run's finish was never delivered"
            finally:
                client.close(1)
            shown = c.get(f"/api/runs/{run_id}").json()
            assert shown["status"] == "stopped" and shown["stop_reason"].startswith("storage_error:"), shown
            assert shown["finished_at"]
            # The metrics were stored all along; the images never were, and none is silently dropped.
            got = c.get(f"/api/runs/{run_id}/metrics", params={"names": "loss/g"}).json()["metrics"]["loss/g"]
            assert len(got["steps"]) >= 10
        assert "telling its worker to stop" in server.log(None)
    finally:
        server.stop()
