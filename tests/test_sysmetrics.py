"""System metrics (sys/*): a real worker samples this machine with psutil and reports to the run and to
the server's record of the worker. No GPU here, so NVML really is unavailable: the GPU branch must then
add nothing and break nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.harness import REPO, ServerProc, base_env, start_server, wait_for

HOST_NAMES = {"sys/cpu_pct", "sys/ram_mb", "sys/ram_pct", "sys/proc_cpu_pct", "sys/proc_rss_mb"}
JOB = {"dataset": "ring8", "toy_hidden": 16, "batch_size": 32, "toy_every": 1000, "checkpoint_every": 1000,
       "flush_every": 20, "flush_seconds": 0.3}


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no NVML here
        return False


def test_a_worker_reports_sys_metrics_to_its_run_and_itself(server: ServerProc, spawn_worker) -> None:
    c = server.client()
    r = c.post("/api/jobs", json={**JOB, "name": "sys", "steps": 100_000})
    run_id = r.json()["id"]
    w = spawn_worker(server.url, args=["--sys-every", "0.3", "--heartbeat", "0.5"])
    wait_for(lambda: c.get(f"/api/runs/{run_id}").json()["step"] >= 200, timeout=120,
             what="training progress\n" + w.log())
    # Ground truth from outside the worker: its resident memory as this test reads it.
    rss_mb = psutil.Process(w.proc.pid).memory_info().rss / 2**20
    wait_for(lambda: len(c.get(f"/api/runs/{run_id}/metrics", params={"names": "sys/cpu_pct"}).json()
                         ["metrics"].get("sys/cpu_pct", {}).get("steps", [])) >= 5, timeout=60, what="sys points")
    assert c.post(f"/api/runs/{run_id}/cancel").status_code == 200
    run = wait_for(lambda: (x := c.get(f"/api/runs/{run_id}").json())["status"] == "cancelled" and x, timeout=60,
                   what="the cancel")
    got = c.get(f"/api/runs/{run_id}/metrics", params={"names": "sys/*,loss/d", "max_points": 1_000_000}
                ).json()["metrics"]
    names = {n for n in got if n.startswith("sys/")}
    assert names == HOST_NAMES, names  # and no sys/gpu*: this machine has no NVML
    steps = got["sys/cpu_pct"]["steps"]
    assert steps == sorted(set(steps)) and 0 <= steps[0] and steps[-1] <= run["step"]
    # Each point sits at a step the trainer had flushed when it was taken (or 0 before the first flush).
    flushed = set(got["loss/d"]["steps"]) | {0}
    assert set(steps) <= flushed, sorted(set(steps) - flushed)[:5]
    for name in HOST_NAMES:
        assert got[name]["steps"] == steps, name
        assert all(v is not None and v >= 0 for v in got[name]["values"]), name
    cores = psutil.cpu_count() or 1
    assert all(v <= 100.0 for v in got["sys/cpu_pct"]["values"] + got["sys/ram_pct"]["values"])
    assert all(v <= 100.0 * cores + 1 for v in got["sys/proc_cpu_pct"]["values"])
    assert max(got["sys/proc_cpu_pct"]["values"]) > 1.0, "a training process uses CPU"
    total_mb = psutil.virtual_memory().total / 2**20
    assert all(v <= total_mb for v in got["sys/ram_mb"]["values"])
    rss = got["sys/proc_rss_mb"]["values"]
    assert 0.5 * rss_mb < max(rss) < 2.0 * rss_mb + 200, (rss_mb, max(rss))

    # The worker's own record: the latest sample on the listing, a series beside it.
    worker = c.get("/api/workers").json()["workers"][0]
    assert set(worker["sys"]) == HOST_NAMES and worker["sys_at"]
    assert worker["device_info"][0]["kind"] == "cpu" and worker["gpus"] == 0
    # The worker's series travels with its heartbeats, not with the run's metrics: wait for it separately.
    series = wait_for(lambda: (x := c.get(f"/api/workers/{worker['id']}/sys", params={"minutes": 60}).json())
                      and len(x["times"]) >= 5 and x, timeout=30, what="five samples in the worker's series")
    assert set(series["metrics"]) == HOST_NAMES
    assert all(len(v) == len(series["times"]) for v in series["metrics"].values())
    assert run_id in series["run_ids"]
    # Idle, the worker still reports (with its claims): the record keeps moving.
    first = worker["sys_at"]
    wait_for(lambda: c.get("/api/workers").json()["workers"][0]["sys_at"] > first, timeout=30,
             what="an idle worker's sample")
    assert c.get("/api/workers/no-such-worker/sys").status_code == 404


def test_sys_metrics_can_be_turned_off(server: ServerProc, spawn_worker) -> None:
    c = server.client()
    run_id = c.post("/api/jobs", json={**JOB, "steps": 100}).json()["id"]
    w = spawn_worker(server.url, args=["--once", "--sys-every", "0"])
    assert w.proc.wait(120) == 0, w.log()
    assert c.get(f"/api/runs/{run_id}/metrics", params={"names": "sys/*"}).json()["metrics"] == {}
    assert c.get("/api/workers").json()["workers"][0]["sys"] == {}


def test_worker_samples_are_validated_and_pruned(home: Path) -> None:
    s = start_server(home, GANSCOPE_WORKER_SYS_KEEP_MINUTES="0.01")  # 0.6 s
    try:
        c = s.client()
        for bad in ({"loss/d": 1.0}, {"sys/" + "x" * 200: 1.0}, {"sys/cpu_pct": "busy"}):
            r = c.post("/api/workers/heartbeat", json={"worker_id": "w", "sys": bad})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "sys"], r.text
        for v in (10.0, 20.0, None):
            assert c.post("/api/workers/heartbeat", json={"worker_id": "w", "sys": {"sys/cpu_pct": v}}
                          ).status_code == 200
        time.sleep(1.0)
        assert c.post("/api/workers/claim", json={"worker_id": "w", "sys": {"sys/cpu_pct": 30.0}}).status_code == 204
        series = c.get("/api/workers/w/sys", params={"minutes": 60}).json()
        assert series["metrics"] == {"sys/cpu_pct": [30.0]}, "samples older than the window are pruned"
        assert c.get("/api/workers").json()["workers"][0]["sys"] == {"sys/cpu_pct": 30.0}
    finally:
        s.stop()


def test_no_nvml_means_no_gpu_metrics_and_no_error() -> None:
    """The real situation on this machine: pynvml is installed, the NVIDIA driver is not."""
    if _nvml_works():
        pytest.skip("NVML works on this machine")
    from ganscope.trainer.sysmetrics import GpuRef, SystemSampler

    sampler = SystemSampler([GpuRef(0), GpuRef(1, "0d4c9a4e-6b0f-4b5d-9d8e-1f2a3b4c5d6e")])
    assert sampler.gpu_count == 0 and "NVML" in (sampler.gpu_error or "")
    sample = sampler.sample()
    assert set(sample) == HOST_NAMES and not any(k.startswith("sys/gpu") for k in sample)
    sampler.close()


def test_without_the_nvml_package_the_worker_still_samples(tmp_path: Path) -> None:
    """nvidia-ml-py missing altogether: the import fails (made so for this process only), nothing breaks."""
    code = (
        "import sys; sys.modules['pynvml'] = None\n"  # `import pynvml` now raises ImportError
        "from ganscope.trainer.sysmetrics import GpuRef, SystemSampler\n"
        "s = SystemSampler([GpuRef(0)])\n"
        "print(s.gpu_error)\n"
        "print(sorted(s.sample()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=base_env(tmp_path), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    error, names = out.stdout.strip().splitlines()
    assert "not installed" in error
    assert eval(names) == sorted(HOST_NAMES)  # noqa: S307 - our own printed list


def test_the_api_documents_the_sys_fields(server: ServerProc) -> None:
    """The shapes page authors read are in the OpenAPI schema."""
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/api/workers/{worker_id}/sys" in spec["paths"]
    claim = spec["components"]["schemas"]["ClaimBody"]["properties"]
    assert "sys" in claim and "devices" in claim
    assert "sys" in spec["components"]["schemas"]["HeartbeatBody"]["properties"]
