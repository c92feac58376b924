"""Quality evaluation end to end: a real worker trains a tiny shapes job with eval_every small, and the quality
metrics, the "quality" snapshot and the learning verdict's measure arrive through the server's API; a bad
GANSCOPE_INCEPTION_WEIGHTS fails the job with a one-line reason naming the setting."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.harness import ServerProc

# The first test to need the shapes classifier trains and caches it (per user): measured 6 minutes on a
# heavily loaded 2-core machine; every later run reads the cache in milliseconds.
pytestmark = pytest.mark.timeout(900)

NAMES = ("quality/kid", "quality/fid", "quality/precision", "quality/recall", "quality/coverage",
         "quality/recognisable", "quality/modes", "quality/modes_total", "perf/eval_s")
# The shapes classifier is cached per user: this worker reads the one the other quality tests trained.
JOB: dict[str, Any] = {"name": "quality", "dataset": "shapes", "image_size": 32, "ngf": 8, "ndf": 8, "nz": 16,
                       "batch_size": 16, "steps": 30, "eval_every": 10, "eval_samples": 48, "sample_every": 1000,
                       "checkpoint_every": 1000, "probe_every": 5, "device": "cpu"}


def test_a_worker_reports_quality_metrics_through_the_api(server: ServerProc, spawn_worker) -> None:
    c: httpx.Client = server.client()
    r = c.post("/api/jobs", json=JOB)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    w = spawn_worker(server.url, args=["--once"])
    assert w.proc.wait(600) == 0, w.log()
    run = c.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded", (run, w.log())
    got = c.get(f"/api/runs/{run_id}/metrics", params={"names": ",".join(NAMES)}).json()["metrics"]
    for name in NAMES:
        assert got[name]["steps"] == [10, 20, 30], (name, got[name])
    assert got["quality/modes_total"]["values"] == [9.0] * 3
    assert all(0 <= v <= 1 for n in ("quality/coverage", "quality/recognisable") for v in got[n]["values"])
    snap = c.get(f"/api/runs/{run_id}/snapshots", params={"kind": "quality"}).json()
    assert snap["steps"] == [10, 20, 30]
    assert snap["snapshot"]["payload"]["extractor"] == "shapes-classifier"
    # the learning verdict follows the first logged measure of its list: on shapes, the classifier's
    # recognisable share (before KID, which the offline extractor barely moves on shapes)
    assert run["learning"]["metric"] == "quality/recognisable", run["learning"]


def test_a_bad_inception_weights_setting_fails_the_job_with_the_reason(server: ServerProc, spawn_worker,
                                                                       tmp_path) -> None:
    c = server.client()
    run_id = c.post("/api/jobs", json={**JOB, "steps": 5}).json()["id"]
    w = spawn_worker(server.url, args=["--once"], GANSCOPE_INCEPTION_WEIGHTS=str(tmp_path / "nope.pt"))
    assert w.proc.wait(120) == 0, w.log()
    run = c.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "failed" and run["step"] == 0, run
    assert "QualityError: GANSCOPE_INCEPTION_WEIGHTS=" in run["error"] and "is not a file" in run["error"]
    assert "\n" not in run["error"]


def test_the_sdk_logs_quality_from_a_scripts_own_batches(server: ServerProc, tmp_path) -> None:
    import torch

    from ganscope.trainer import sdk
    from ganscope.trainer.datasets.shapes import render_labelled

    real, _ = render_labelled(5, 32, 96)
    noise = torch.rand(96, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # in [0, 1]
    with sdk.init(server.url, name="sdk quality", config={"dataset": "shapes"}, spool_dir=tmp_path / "spool",
                  flush_seconds=0.2) as run:
        good = run.log_quality(real.flip(0), real, step=100)
        bad = run.log_quality(noise, (real + 1) / 2, step=200, value_range=(0.0, 1.0))
        points = run.log_quality(torch.randn(500, 2), torch.randn(500, 2), step=300)
        run_id = run.id
    assert good["quality/coverage"] == 1.0 and bad["quality/coverage"] < 0.5
    assert bad["quality/recognisable"] < 0.1 < good["quality/recognisable"]
    assert set(points) == {"toy/fit", "perf/eval_s"} and points["toy/fit"] < 0.2
    c = server.client()
    got = c.get(f"/api/runs/{run_id}/metrics", params={"names": "quality/kid,quality/modes,toy/fit"}).json()["metrics"]
    assert got["quality/kid"]["steps"] == [100, 200] and got["quality/modes"]["steps"] == [100, 200]
    assert got["toy/fit"]["steps"] == [300]
