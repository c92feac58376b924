"""One job on two processes: a real server, a real worker with `--procs-per-job 2`, torchrun, gloo on CPU.

Each test owns one worker whose job runs as torchrun + 2 ranks under it; the tests look at the run
through the server's API and at the processes through psutil (no rank may outlive its job).
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from ganscope.trainer.config import JobConfig
from ganscope.trainer.dist import shard_streams
from ganscope.trainer.loop import Trainer
from ganscope.trainer.sink import MemorySink

from tests.harness import ServerProc, WorkerProc, wait_for
from tests.test_faults import _checkpoint_step
from tests.test_worker import FAST_HB, TINY, assert_points_once, enqueue, run_of, wait_status

TWO = ["--procs-per-job", "2", *FAST_HB]


def ranks_of(w: WorkerProc) -> dict[int, psutil.Process]:
    """The worker's training processes by rank (torchrun sets RANK in each one's environment)."""
    out: dict[int, psutil.Process] = {}
    for p in psutil.Process(w.proc.pid).children(recursive=True):
        try:
            rank = p.environ().get("RANK")
            if rank is not None and "dist_entry" in " ".join(p.cmdline()):
                out[int(rank)] = p
        except psutil.Error:
            continue
    return out


def job_processes(w: WorkerProc) -> list[psutil.Process]:
    try:
        return psutil.Process(w.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:   # a worker that has exited has no children left to show
        return []


def metric(c: Any, run_id: int, name: str) -> tuple[list[int], list[float]]:
    got = c.get(f"/api/runs/{run_id}/metrics", params={"names": name, "max_points": 1_000_000}).json()
    m = got["metrics"].get(name) or {"steps": [], "values": []}
    return m["steps"], m["values"]


def assert_no_job_processes(w: WorkerProc, before: list[psutil.Process]) -> None:
    gone, alive = psutil.wait_procs(before, timeout=30)
    assert not alive, f"processes outlived the job: {[(p.pid, p.cmdline()) for p in alive]}"
    assert not job_processes(w), "the worker has children left after the job"


def step_one(cfg: JobConfig, rank: int, workdir: Path) -> dict[str, float]:
    """What rank `rank` measures at step 1, computed here in one process from the same streams."""
    t = Trainer(cfg, MemorySink(), workdir)
    shard_streams(t.state, rank)
    t.train_step(1)
    return {name: values[0] for name, (_, values) in t.buffer.drain().items()}


def test_two_processes_train_toy_and_image_jobs_once_per_step(server: ServerProc, spawn_worker,
                                                               tmp_path: Path) -> None:
    c = server.client()
    w = spawn_worker(server.url, args=TWO)
    toy_cfg = dict(name="toy on 2", steps=40, flush_every=10, checkpoint_every=20, seed=3)
    toy = enqueue(c, **toy_cfg)
    image = enqueue(c, name="image on 2", dataset="shapes", image_size=16, ngf=8, ndf=8, nz=16, batch_size=8,
                    steps=6, sample_every=3, checkpoint_every=6, flush_every=3)
    for run_id in (toy, image):
        run = wait_status(c, run_id, {"succeeded", "failed"}, timeout=240, logs=[w])
        assert run["status"] == "succeeded", (run, w.log())
    log = w.log(tail=None)
    assert f"run {toy}: training on cpu x 2 processes (torchrun)" in log, log
    # Rank 0 alone reports: every step once, in the API's answer and in storage (no copy from rank 1).
    assert_points_once(server, toy, 40)
    assert_points_once(server, image, 6, names=("loss/d", "loss/g", "score/real"))
    assert metric(c, toy, "perf/world_size") == ([0], [2.0])
    # Step 1's losses are the mean over the ranks' shards: rank 0 draws what a 1-process run draws,
    # rank 1 its own stream, and both start from the same init (DDP broadcasts rank 0's).
    cfg = JobConfig(**{**TINY, **toy_cfg, "device": "cpu"})
    per_rank = [step_one(cfg, rank, tmp_path) for rank in (0, 1)]
    assert per_rank[0]["loss/d"] != per_rank[1]["loss/d"], "each rank trains on its own data"
    # D's step-1 terms only: G's step follows a D update made with both ranks' (averaged) gradients.
    for name in ("loss/d", "loss/d_real", "score/real", "score/fake"):
        steps, values = metric(c, toy, name)
        assert values[0] == pytest.approx((per_rank[0][name] + per_rank[1][name]) / 2, rel=1e-5), name
    steps, img_s = metric(c, toy, "perf/img_s")
    assert steps and all(v > 0 for v in img_s)
    assert _checkpoint_step(c, toy) == 40 and _checkpoint_step(c, image) == 6
    samples = c.get(f"/api/runs/{image}/samples").json()
    kinds = {s["kind"] for s in (samples["samples"] if isinstance(samples, dict) else samples)}
    assert "grid" in kinds, samples
    assert not job_processes(w), "torchrun and its ranks end with the job"


def test_cancel_reaches_both_ranks_and_leaves_no_process(server: ServerProc, spawn_worker) -> None:
    c = server.client()
    w = spawn_worker(server.url, args=TWO)
    run_id = enqueue(c, name="cancel on 2", steps=100_000, flush_every=10)
    wait_for(lambda: len(ranks_of(w)) == 2 and metric(c, run_id, "loss/d")[0], timeout=180,
             what="two ranks training")
    procs = job_processes(w)
    assert c.post(f"/api/runs/{run_id}/cancel").status_code in (200, 202)
    run = wait_status(c, run_id, "cancelled", timeout=60, logs=[w])
    # Both ranks stopped at the step rank 0 broadcast; the final checkpoint is rank 0's, at that step.
    assert_no_job_processes(w, procs)
    assert run["status"] == "cancelled"
    assert w.proc.poll() is None, "the worker lives on"
    steps, _ = metric(c, run_id, "loss/d")
    assert steps == list(range(1, steps[-1] + 1))


def test_killing_one_rank_fails_the_job_with_the_rank_named(server: ServerProc, spawn_worker) -> None:
    c = server.client()
    w = spawn_worker(server.url, args=TWO)
    run_id = enqueue(c, name="rank dies", steps=100_000, flush_every=10)
    ranks = wait_for(lambda: len(r := ranks_of(w)) == 2 and metric(c, run_id, "loss/d")[0] and r, timeout=180,
                     what="two ranks training")
    procs = job_processes(w)
    ranks[1].send_signal(signal.SIGKILL)
    run = wait_status(c, run_id, "failed", timeout=60, logs=[w])
    assert "rank 1" in run["error"] and "SIGKILL" in run["error"], run["error"]
    assert_no_job_processes(w, procs)
    assert w.proc.poll() is None, "the worker lives on and can take the next job"


def hand_back(c: Any, w: WorkerProc, run_id: int) -> int:
    """SIGTERM the worker: the job stops (on every rank at once), checkpoints, goes back to the queue."""
    procs = job_processes(w)
    assert w.stop(timeout=90) == 0, w.log()
    m = re.search(rf"run {run_id}: finishing as handback at step (\d+)", w.log(tail=None))
    assert m, w.log()
    assert_no_job_processes(w, procs)
    return int(m.group(1))


def test_handed_back_job_resumes_on_another_number_of_processes(server: ServerProc, spawn_worker) -> None:
    """2 ranks -> 1 process -> 2 ranks: rank 0's checkpoint resumes in one process, and one process's
    checkpoint resumes on two ranks (both load it); every step is reported once over the three legs."""
    c = server.client()
    steps = 600
    a = spawn_worker(server.url, args=TWO)
    run_id = enqueue(c, name="resume 2-1-2", steps=steps, flush_every=10, checkpoint_every=50)
    wait_for(lambda: _checkpoint_step(c, run_id) >= 50, timeout=180, what="a checkpoint from rank 0")
    at_a = hand_back(c, a, run_id)
    b = spawn_worker(server.url, args=FAST_HB)
    wait_for(lambda: _checkpoint_step(c, run_id) >= at_a + 50, timeout=180, what="a checkpoint from the 1-process leg")
    at_b = hand_back(c, b, run_id)
    assert f"run {run_id}: claimed (attempt 1), resuming from step {at_a}" in b.log(tail=None), b.log()
    assert at_a < at_b < steps
    d = spawn_worker(server.url, args=TWO)
    run = wait_status(c, run_id, {"succeeded", "failed"}, timeout=240, logs=[a, b, d])
    assert run["status"] == "succeeded", (run, d.log())
    assert f"run {run_id}: claimed (attempt 1), resuming from step {at_b}" in d.log(tail=None), d.log()
    assert_points_once(server, run_id, steps)
    # The 1-process leg records no world size; each torchrun leg records its own at its first step.
    assert metric(c, run_id, "perf/world_size") == ([0, at_b], [2.0, 2.0])
    assert run_of(c, run_id)["status"] == "succeeded"

def torchrun(tmp_path: Path, name: str, **cfg: Any) -> dict[str, Any]:
    """A plain torchrun of one job on 2 gloo ranks (no worker): rank 0's JSON summary."""
    import json
    import subprocess

    from ganscope.trainer.relay import torchrun_command
    from tests.harness import REPO, base_env

    work = tmp_path / name
    work.mkdir()
    job = work / "job.json"
    job.write_text(JobConfig(**cfg).model_dump_json())
    out = subprocess.run(torchrun_command(2, job, work, None, None), cwd=REPO, env=base_env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_stabilisers_train_in_step_on_both_ranks(tmp_path: Path) -> None:
    """R1 and WGAN-GP differentiate through D inside DDP's forward; EMA, DiffAugment, spectral norm and
    local batch norm ride along. After training, both ranks hold the same parameters."""
    image = dict(dataset="shapes", image_size=16, ngf=8, ndf=8, nz=16, batch_size=8, flush_every=2,
                 sample_every=100, checkpoint_every=100, device="cpu")
    r1 = torchrun(tmp_path, "r1", **image, steps=6, r1_gamma=1.0, r1_every=2, ema_g=0.99,
                  diffaugment="color,translation", loss="hinge", spectral_norm="d", probe_every=2)
    gp = torchrun(tmp_path, "gp", **image, steps=4, loss="wgan_gp", d_steps=2, g_steps=2, fm_weight=0.5)
    for got, steps in ((r1, 6), (gp, 4)):
        assert got["status"] == "succeeded" and got["step"] == steps and got["world"] == 2, got
        assert got["in_sync"] is True, got


def test_a_killed_worker_takes_its_ranks_with_it(server: ServerProc, spawn_worker) -> None:
    """SIGKILL leaves the worker no time to clean up: rank 0 loses its relay and fails, torchrun ends the other
    rank and exits (and torchrun has a parent-death signal besides): nothing is left running."""
    c = server.client()
    w = spawn_worker(server.url, args=TWO)
    run_id = enqueue(c, name="worker killed", steps=100_000, flush_every=10)
    wait_for(lambda: len(ranks_of(w)) == 2 and metric(c, run_id, "loss/d")[0], timeout=180, what="two ranks training")
    procs = job_processes(w)
    assert len(procs) >= 3, procs   # torchrun and two ranks
    w.proc.send_signal(signal.SIGKILL)
    w.proc.wait()
    gone, alive = psutil.wait_procs(procs, timeout=30)
    assert not alive, f"orphans: {[(p.pid, p.cmdline()) for p in alive]}"


def test_an_error_in_the_ranks_fails_the_job_with_rank_zeros_message(server: ServerProc, spawn_worker) -> None:
    c = server.client()
    # mnist is not under this worker's data root: every rank raises while building its data.
    bad = enqueue(c, name="no data on 2", dataset="mnist", image_size=16, ngf=8, ndf=8, batch_size=8, steps=5)
    w = spawn_worker(server.url, args=[*TWO, "--data-root", str(server.home / "nowhere")])
    run = wait_status(c, bad, "failed", timeout=180, logs=[w])
    assert "DistributedJobFailed: rank 0: DatasetError: MNIST not found" in run["error"], run["error"]
    good = enqueue(c, name="after it", steps=10)
    assert wait_status(c, good, {"succeeded", "failed"}, timeout=180, logs=[w])["status"] == "succeeded"
    assert not job_processes(w)
