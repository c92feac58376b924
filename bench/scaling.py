"""Scaling benchmark: one job on 1 and on N processes under torchrun, as a worker with --procs-per-job runs it.

Each configuration is `python -m torch.distributed.run --standalone --nproc-per-node P -m
ganscope.trainer.dist_entry` on the same job (gloo on CPU, nccl one rank per GPU on CUDA); rank 0
prints the median perf/step_s and perf/img_s of its flush windows (start-up excluded). Each rank draws
batch_size images per D update, so N processes train on N times the images per step (effective batch
batch_size × N): scaling efficiency = img_s(N) / (N × img_s(1)).

Prints one line per process count, then `scaling_efficiency <ratio>` (for the largest count).

Usage: python -m bench.scaling [--procs 1,2] [--device cpu|cuda] [--steps 60] [--image-size 32] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from ganscope.trainer.config import JobConfig  # noqa: E402
from ganscope.trainer.relay import torchrun_command  # noqa: E402


def run(procs: int, cfg: JobConfig, threads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="ganscope-scaling-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps(cfg.model_dump(mode="json")))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        out = subprocess.run(torchrun_command(procs, job, Path(tmp), None, None), env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{procs} process(es) failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procs", default="1,2", help="comma-separated process counts")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=int, default=32, help="ngf = ndf")
    p.add_argument("--threads", type=int, default=1, help="OMP threads per rank (CPU)")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.procs.split(",")]
    cfg = JobConfig(dataset="shapes", image_size=args.image_size, batch_size=args.batch_size, ngf=args.width,
                    ndf=args.width, steps=args.steps, flush_every=10, flush_seconds=3600, probe_every=10,
                    sample_every=100_000, checkpoint_every=100_000, device=args.device, seed=1)
    print(f"# {args.device}, {os.cpu_count()} CPU(s), {args.image_size}px batch {args.batch_size}/rank, "
          f"{args.steps} steps, width {args.width}, {args.threads} thread(s)/rank")
    img_s: dict[int, float] = {}
    for n in counts:
        r = run(n, cfg, args.threads)
        img_s[n] = r["perf/img_s"]
        print(f"procs {n}  steps_s {1 / r['perf/step_s']:.2f}  img_s {r['perf/img_s']:.1f}  "
              f"(effective batch {args.batch_size * n})", flush=True)
    lo, hi = min(counts), max(counts)
    print(f"scaling_efficiency {img_s[hi] * lo / (hi * img_s[lo]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
