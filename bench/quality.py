"""Cost of the quality evaluation as a fraction of training time, at `make up`'s demo settings.

The real `trainer.loop.Trainer` with the demo job's config (ganscope/up.py DEMO_JOB): blocks of training steps
are timed, then one evaluation (`QualityEval.report`: sampling `eval_samples` images, features, KID/FID,
precision/recall/coverage, the shapes classifier) — the classifier and the real features are made before the
timing, as they are once per run. The fraction is one evaluation's seconds over the training seconds of the
`eval_every` steps between two evaluations, median over repetitions (machine load hits both alike).

    python -m bench.quality [--steps 20] [--reps 3] [--threads 1]

Last line: ``eval_cost <fraction>`` (target <= 0.05).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ganscope.trainer.config import JobConfig
from ganscope.trainer.loop import Trainer
from ganscope.trainer.sink import MemorySink
from ganscope.up import DEMO_JOB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="training steps timed per repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = JobConfig(**{**DEMO_JOB, "device": "cpu", "steps": 10**6, "sample_every": 10**6,
                       "checkpoint_every": 10**6})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, MemorySink(), Path(tmp))
        trainer.start()
        assert trainer.quality is not None
        trainer.quality.measure(trainer)  # classifier (trained or read from the cache) and real features
        ratios = []
        for rep in range(args.reps):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                trainer.advance()
            step_s = (time.perf_counter() - t0) / args.steps
            t1 = time.perf_counter()
            trainer.quality.report(trainer)
            eval_s = time.perf_counter() - t1
            ratio = eval_s / (cfg.eval_every * step_s)
            ratios.append(ratio)
            print(f"rep {rep}: step {step_s * 1000:.1f} ms, evaluation {eval_s * 1000:.0f} ms "
                  f"({cfg.eval_samples} samples, every {cfg.eval_every} steps): {ratio:.4f} of training", flush=True)
    print(f"eval_cost {statistics.median(ratios):.4f}")


if __name__ == "__main__":
    main()
