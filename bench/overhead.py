"""Cost of ganscope's probes: the instrumented loop with every probe at every step vs no probes.

DCGAN 32x32, batch 64, CPU (issue 2). Both trainers are the real `trainer.loop.Trainer`,
built from the same config and seed; the only difference is `probes=True/False`. Blocks
of steps alternate between the two so machine load hits both alike; the ratio is the
median over blocks of (probes on / probes off), each pair measured back to back.

    python -m bench.overhead [--steps 6] [--reps 5] [--threads N]

Last line: ``overhead_ratio <x>`` (target <= 1.03).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import sys
from pathlib import Path

import torch

# Run as a script (python bench/x.py) or a module: the checkout's root holds the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.timing import Clock, add_clock_options, clock_from  # noqa: E402

from ganscope.trainer.config import JobConfig
from ganscope.trainer.loop import Trainer
from ganscope.trainer.sink import MemorySink



def bench_config(image_size: int, batch: int, device: str) -> JobConfig:
    # Every probe at every step; sampling and checkpoints never fall due inside the timed blocks.
    return JobConfig(dataset="shapes", image_size=image_size, batch_size=batch, steps=10**6, probe_every=1,
                     flush_every=50, sample_every=10**6, checkpoint_every=10**6, device=device, seed=0)


def time_block(trainer: Trainer, steps: int, clock: Clock) -> float:
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    t0 = clock()
    for _ in range(steps):
        trainer.advance()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return (clock() - t0) / steps


def isolated_probe_cost(trainer: Trainer, clock: Clock, reps: int = 20) -> float:
    """Seconds per step of the probe work alone (both nets' layer probes, diversity, metric rows),
    timed without the training around it: a load-independent floor for the overhead."""
    real = trainer.real_batch()
    fake = trainer.state.g(trainer.noise(trainer.cfg.batch_size)).detach()
    scalars = torch.zeros(len(trainer.buffer.names("step")))
    from ganscope.trainer.probes import diversity

    t0 = clock()
    for i in range(reps):
        trainer.probe_d.before_step()
        layers_d = trainer.probe_d.after_step()
        trainer.probe_g.before_step()
        layers_g = trainer.probe_g.after_step()
        trainer.buffer.record("step", i, torch.stack(list(scalars)))
        trainer.buffer.record("probe", i, torch.cat([layers_d, layers_g, diversity(fake, real).reshape(1)]))
    trainer.buffer.drain()
    return (clock() - t0) / reps


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="steps per timed block")
    ap.add_argument("--reps", type=int, default=4, help="timed blocks per variant (interleaved)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    add_clock_options(ap)
    args = ap.parse_args(argv)
    clock = clock_from(args)

    cfg = bench_config(args.image_size, args.batch, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        on = Trainer(cfg, MemorySink(), Path(tmp) / "on", probes=True)
        off = Trainer(cfg, MemorySink(), Path(tmp) / "off", probes=False)
        for t in (on, off):
            t.start()
            time_block(t, args.warmup, clock)
        print(f"DCGAN {args.image_size}x{args.image_size}, batch {args.batch}, {on.device}, "
              f"{torch.get_num_threads()} threads, {args.reps} x {args.steps} steps per variant")
        on_s, off_s, ratios = [], [], []
        for rep in range(args.reps):
            # Alternate which variant goes first so a load trend does not favour one.
            order = (on, off) if rep % 2 == 0 else (off, on)
            times = {id(t): time_block(t, args.steps, clock) for t in order}
            on_s.append(times[id(on)])
            off_s.append(times[id(off)])
            ratios.append(on_s[-1] / off_s[-1])
            print(f"  rep {rep + 1}: probes on {on_s[-1]:.4f} s/step, off {off_s[-1]:.4f} s/step, "
                  f"ratio {ratios[-1]:.4f}")
        n_metrics = len(on.sink.metrics) if isinstance(on.sink, MemorySink) else 0
        probe_s = isolated_probe_cost(on, clock)
    print(f"probes_on  {statistics.median(on_s):.4f} s/step (min {min(on_s):.4f})  [{n_metrics} metric series]")
    print(f"probes_off {statistics.median(off_s):.4f} s/step (min {min(off_s):.4f})")
    print(f"probe work alone {probe_s * 1000:.2f} ms/step = {probe_s / min(off_s):.4f} of the fastest probes-off step")
    ratio = statistics.median(ratios)
    print(f"overhead_ratio {ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
