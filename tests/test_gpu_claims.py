"""GPU-count claims: a job asking for N GPUs goes only to a worker advertising at least N.

Claims are made through the HTTP API with the claim bodies workers send (device objects, or bare
names as older workers send them), on SQLite and PostgreSQL; then a real CPU worker process shows
the same from the worker's side.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from tests.harness import ServerProc, start_worker, wait_for

TINY = {"dataset": "ring8", "steps": 10}
CPU = [{"name": "cpu", "kind": "cpu", "model": "x86_64", "memory_mb": 64000}]


def gpus(n: int) -> list[dict[str, Any]]:
    return [{"name": f"cuda:{i}", "kind": "cuda", "model": "NVIDIA H100 80GB HBM3", "memory_mb": 81559}
            for i in range(n)]


def enqueue(c: httpx.Client, **cfg: Any) -> int:
    r = c.post("/api/jobs", json={**TINY, **cfg})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def claim(c: httpx.Client, worker: str, devices: list[Any]) -> dict[str, Any] | None:
    r = c.post("/api/workers/claim", json={"worker_id": worker, "host": "test", "devices": devices})
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else None


def test_a_two_gpu_job_waits_for_a_two_gpu_worker(any_server: ServerProc) -> None:
    c = any_server.client()
    big = enqueue(c, name="needs two", gpus=2, priority=10)  # first in line
    small = enqueue(c, name="any device")
    assert c.get(f"/api/runs/{big}").json()["config"]["gpus"] == 2
    # A CPU worker passes over the 2-GPU job and takes the next one it can serve.
    got = claim(c, "cpu-worker", CPU)
    assert got is not None and got["run_id"] == small
    assert claim(c, "cpu-worker-2", ["cpu"]) is None  # bare names, as older workers send them
    assert claim(c, "one-gpu", gpus(1)) is None
    assert claim(c, "one-gpu-legacy", ["cuda:0"]) is None
    assert c.get(f"/api/runs/{big}").json()["status"] == "queued"
    got = claim(c, "two-gpus", gpus(2))
    assert got is not None and got["run_id"] == big and got["config"]["gpus"] == 2
    run = c.get(f"/api/runs/{big}").json()
    assert run["status"] == "running" and run["worker_id"] == "two-gpus"
    # More GPUs than asked is suitable too; bare cuda names count as GPUs.
    third = enqueue(c, name="needs one", gpus=1)
    assert claim(c, "cpu-worker-3", CPU) is None
    got = claim(c, "legacy-gpus", ["cuda:0", "cuda:1", "cuda:2"])
    assert got is not None and got["run_id"] == third
    workers = {w["id"]: w for w in c.get("/api/workers").json()["workers"]}
    assert workers["two-gpus"]["gpus"] == 2 and workers["two-gpus"]["devices"] == ["cuda:0", "cuda:1"]
    assert workers["two-gpus"]["device_info"][0]["model"] == "NVIDIA H100 80GB HBM3"
    assert workers["two-gpus"]["device_info"][0]["memory_mb"] == 81559
    assert workers["cpu-worker"]["gpus"] == 0 and workers["legacy-gpus"]["gpus"] == 3
    assert workers["legacy-gpus"]["device_info"] == []  # names only: nothing more is known


def test_racing_gpu_workers_claim_one_job_once(any_server: ServerProc) -> None:
    c = any_server.client()
    for _ in range(4):
        rid = enqueue(c, gpus=2)
        results: list[dict[str, Any] | None] = []
        barrier = threading.Barrier(3)

        def go(name: str, devices: list[dict[str, Any]]) -> None:
            with any_server.client() as own:
                barrier.wait()
                results.append(claim(own, name, devices))

        threads = [threading.Thread(target=go, args=(f"g{i}", gpus(2 + i))) for i in range(2)]
        threads.append(threading.Thread(target=go, args=("cpu", CPU)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [r for r in results if r is not None]
        assert len(won) == 1 and won[0]["run_id"] == rid
        # Free the winner for the next round.
        holder = c.get(f"/api/runs/{rid}").json()["worker_id"]
        assert holder in ("g0", "g1")
        assert c.post(f"/api/runs/{rid}/finish", json={"worker_id": holder, "status": "succeeded"}).status_code == 200


def test_gpus_knob_and_device_bodies_are_validated(server: ServerProc) -> None:
    c = server.client()
    for bad in (-1, 65, "two", 1.5):
        r = c.post("/api/jobs", json={**TINY, "gpus": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "gpus"], (bad, r.text)
    knobs = {k["name"]: k for k in c.get("/api/knobs").json()["knobs"]}
    assert knobs["gpus"]["default"] == 0
    for devices in ([{"name": "tpu:0", "kind": "tpu"}], [{"kind": "cuda"}], [{"name": "cuda:0", "kind": "cuda",
                                                                              "memory_mb": -5}]):
        r = c.post("/api/workers/claim", json={"worker_id": "w", "devices": devices})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "devices"], r.text
    r = c.post("/api/workers/claim", json={"worker_id": "w", "devices": ["cpu"] * 65})
    assert r.status_code == 422


def test_a_cpu_worker_process_leaves_gpu_jobs_queued(server: ServerProc, home: Path, workers) -> None:
    c = server.client()
    gpu_job = enqueue(c, name="for a GPU worker", gpus=1, priority=5)
    cpu_job = enqueue(c, name="for anyone", toy_hidden=8, batch_size=16, checkpoint_every=10, toy_every=10)
    w = start_worker(server.url, home, args=["--once"])
    workers.append(w)
    assert w.proc.wait(120) == 0, w.log()
    assert c.get(f"/api/runs/{cpu_job}").json()["status"] == "succeeded"
    assert c.get(f"/api/runs/{gpu_job}").json()["status"] == "queued"
    assert f"run {gpu_job}: claimed" not in w.log(tail=None)
    # The worker advertised what it has: one CPU device, no GPU.
    seen = c.get("/api/workers").json()["workers"]
    assert [x["device_info"][0]["kind"] for x in seen] == ["cpu"] and seen[0]["gpus"] == 0


def test_a_worker_refuses_gpus_it_does_not_have(server: ServerProc, home: Path, workers) -> None:
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("this machine has CUDA devices")
    # Started together: each process spends most of its start importing torch.
    w = start_worker(server.url, home, args=["--gpus", "2"])
    bad = start_worker(server.url, home, args=["--gpus", "lots"])
    ok = start_worker(server.url, home, args=["--gpus", "all"])  # no GPU here: a CPU worker, not an error
    workers.extend([w, bad, ok])
    assert w.proc.wait(120) == 2
    assert "--gpus 2 asked for" in w.log() and "Traceback" not in w.log()
    assert bad.proc.wait(120) == 2 and "expected 0-64 or 'all'" in bad.log()
    wait_for(lambda: server.client().get("/api/workers").json()["workers"], timeout=120,
             what="the --gpus all worker to register:\n" + ok.log())
    assert server.client().get("/api/workers").json()["workers"][0]["gpus"] == 0
