"""One rank of a job on N processes; torchrun runs this module once per rank (see trainer/relay.py).

    python -m torch.distributed.run --standalone --nproc-per-node N -m ganscope.trainer.dist_entry \\
        --job job.json --workdir DIR [--resume CKPT] [--data-root DIR]

Rank 0 reports through the worker that launched the job (GANSCOPE_RELAY in the environment); without
one (a plain torchrun from a shell) it reports to a MemorySink and prints the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from ganscope.trainer.config import JobConfig
from ganscope.trainer.dist import DistTrainer, NullSink, init_process_group, nets_in_sync
from ganscope.trainer.relay import ENV_ADDRESS, RelaySink, die_with_parent
from ganscope.trainer.sink import MemorySink, Sink


@record   # torchrun's failure summary then carries this rank's traceback
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ganscope.trainer.dist_entry")
    p.add_argument("--job", required=True, help="the job's config as JSON")
    p.add_argument("--workdir", required=True)
    p.add_argument("--resume", default=None)
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    die_with_parent(9)   # SIGKILL: a rank whose launcher died has nobody left to report to
    cfg = JobConfig.model_validate(json.loads(Path(args.job).read_text()))
    ctx = init_process_group(cfg.device)
    relay = RelaySink.from_env() if ctx.is_main and os.environ.get(ENV_ADDRESS) else None
    memory = MemorySink()
    sink: Sink = relay if relay is not None else memory if ctx.is_main else NullSink()
    try:
        trainer = DistTrainer(cfg, sink, Path(args.workdir), ctx,
                              data_root=Path(args.data_root) if args.data_root else None)
        result = trainer.run(Path(args.resume) if args.resume else None)
    except Exception as exc:
        if relay is not None:
            relay.result("failed", 0, f"{type(exc).__name__}: {exc}")
        raise
    if relay is not None:
        relay.result(result.status, result.step, result.reason)
        relay.close()
        dist.destroy_process_group()
        return 0
    in_sync = nets_in_sync(trainer)   # collective: every rank takes part
    if ctx.is_main:   # a plain torchrun (bench/scaling.py, tests): the result and the median timings
        out = {"status": result.status, "step": result.step, "world": ctx.world, "in_sync": in_sync}
        for name in ("perf/step_s", "perf/img_s"):
            if name in memory.metrics:
                out[name] = statistics.median(memory.values(name))
        print(json.dumps(out))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
