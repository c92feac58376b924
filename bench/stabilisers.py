"""What each stabiliser costs per training step, against the DCGAN defaults (every knob off).

Every variant is the real `trainer.loop.Trainer` on the same config and seed, probes on,
differing in one knob (and one with all of them). Timed blocks of steps alternate between
the default trainer and the variant, so machine load hits both alike; each ratio is the
median over blocks of (variant / default), each pair measured back to back.

    python -m bench.stabilisers [--steps 4] [--reps 4] [--image-size 32] [--batch 64] [--device cpu]
    python -m bench.stabilisers --quick         # a seconds-long smoke run (16px, batch 16)

Last line: ``stabilisers_max_ratio <x> (<variant>)``, the dearest single knob.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import sys
from pathlib import Path
from typing import Any

import torch

# Run as a script (python bench/x.py) or a module: the checkout's root holds the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.timing import Clock, add_clock_options, clock_from  # noqa: E402

from ganscope.trainer.config import JobConfig
from ganscope.trainer.loop import Trainer
from ganscope.trainer.sink import MemorySink


VARIANTS: dict[str, dict[str, Any]] = {
    "hinge": {"loss": "hinge"},
    "wgan_gp": {"loss": "wgan_gp"},
    "spectral_norm=d": {"spectral_norm": "d"},
    "spectral_norm=both": {"spectral_norm": "both"},
    "r1 (every 16)": {"r1_gamma": 10.0},
    "r1 (every 1)": {"r1_gamma": 10.0, "r1_every": 1},
    "ema_g": {"ema_g": 0.999},
    "diffaugment": {"diffaugment": "color,translation,cutout"},
    "all (hinge)": {"loss": "hinge", "spectral_norm": "both", "r1_gamma": 10.0, "ema_g": 0.999,
                    "diffaugment": "color,translation,cutout"},
}


def bench_config(image_size: int, batch: int, device: str, **knobs: Any) -> JobConfig:
    # Sampling and checkpoints never fall due inside the timed blocks.
    return JobConfig(dataset="shapes", image_size=image_size, batch_size=batch, steps=10**6, flush_every=50,
                     sample_every=10**6, checkpoint_every=10**6, device=device, seed=0, **knobs)


def time_block(trainer: Trainer, steps: int, clock: Clock) -> float:
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    t0 = clock()
    for _ in range(steps):
        trainer.advance()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return (clock() - t0) / steps


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="steps per timed block")
    ap.add_argument("--reps", type=int, default=4, help="timed blocks per variant (interleaved with the default)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per trainer first")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    add_clock_options(ap)
    ap.add_argument("--quick", action="store_true", help="smoke run: 16px, batch 16, 2 reps of 2 steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.image_size, args.batch, args.reps, args.steps, args.warmup = 16, 16, 2, 2, 1
    clock = clock_from(args)

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Trainer(bench_config(args.image_size, args.batch, args.device), MemorySink(), Path(tmp) / "base")
        base.start()
        time_block(base, args.warmup, clock)
        print(f"DCGAN {args.image_size}x{args.image_size}, batch {args.batch}, {base.device}, "
              f"{torch.get_num_threads()} threads, {args.reps} x {args.steps} steps per variant")
        for name, knobs in VARIANTS.items():
            variant = Trainer(bench_config(args.image_size, args.batch, args.device, **knobs), MemorySink(),
                              Path(tmp) / name.replace(" ", "_"))
            variant.start()
            time_block(variant, args.warmup, clock)
            ratios, var_s = [], []
            for rep in range(args.reps):
                order = (base, variant) if rep % 2 == 0 else (variant, base)
                times = {id(t): time_block(t, args.steps, clock) for t in order}
                var_s.append(times[id(variant)])
                ratios.append(times[id(variant)] / times[id(base)])
            results[name] = statistics.median(ratios)
            print(f"  {name:<20} {statistics.median(var_s):.4f} s/step  x{results[name]:.3f} of the defaults")
    single = {k: v for k, v in results.items() if not k.startswith("all")}
    worst = max(single, key=single.__getitem__)
    print(f"stabilisers_max_ratio {single[worst]:.3f} ({worst})")
    return single[worst]


if __name__ == "__main__":
    main()
