"""Steps/s of ganscope's instrumented loop vs a plain DCGAN loop in the style of pytorch/examples.

Same networks (built by `trainer.models` from one config and seed), same data source,
same batch and Adam settings. The plain loop is written the way pytorch/examples' dcgan
is: sigmoid + BCELoss, separate backward passes for the real and fake halves, D's
gradients computed (and discarded) during G's update, and a `.item()` read of the losses
and D outputs every iteration for its log line. Ours runs with every probe on at every
step (`probe_every=1`, flush every 50 steps).

    python -m bench.throughput [--steps 6] [--reps 5] [--image-size 32] [--batch 64] [--device cpu]
    python -m bench.throughput --device cuda --image-size 64 --batch 128 --amp --channels-last

Last line: ``throughput_ratio <x>`` (ours / plain; target >= 1.0 on CPU).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import sys
from collections.abc import Callable
from pathlib import Path

import torch

# Run as a script (python bench/x.py) or a module: the checkout's root holds the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.timing import Clock, add_clock_options, clock_from  # noqa: E402
from torch import nn

from ganscope.trainer.config import JobConfig
from ganscope.trainer.data import build_data
from ganscope.trainer.device import resolve_device
from ganscope.trainer.loop import Trainer
from ganscope.trainer.models import build_models, z_shape
from ganscope.trainer.sink import MemorySink



class PlainDCGAN:
    """The reference loop: no probes, no tricks beyond what the examples do."""

    def __init__(self, cfg: JobConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.netG, self.netD = build_models(cfg)
        self.netG.to(device)
        self.netD.to(device)
        self.criterion = nn.BCELoss()
        self.optD = torch.optim.Adam(self.netD.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        self.data = build_data(cfg)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.log: list[tuple[float, float, float, float, float]] = []

    def d_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.netD(x)[0])

    def step(self) -> None:
        b = self.cfg.batch_size
        real = self.data.batch(b, self.gen).to(self.device)
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        self.netD.zero_grad()
        label = torch.full((b,), 1.0, device=self.device)
        output = self.d_prob(real)
        errD_real = self.criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        noise = torch.randn(z_shape(self.cfg, b), device=self.device)
        fake = self.netG(noise)
        label.fill_(0.0)
        output = self.d_prob(fake.detach())
        errD_fake = self.criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        self.optD.step()
        # (2) Update G: maximize log(D(G(z)))
        self.netG.zero_grad()
        label.fill_(1.0)
        output = self.d_prob(fake)
        errG = self.criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        self.optG.step()
        self.log.append((errD.item(), errG.item(), D_x, D_G_z1, D_G_z2))


def run_block(step_fn: Callable[[], object], steps: int, device: torch.device, clock: Clock) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = clock()
    for _ in range(steps):
        step_fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (clock() - t0)


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="steps per timed block")
    ap.add_argument("--reps", type=int, default=4, help="timed blocks per loop (interleaved)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast for our loop (CUDA only)")
    ap.add_argument("--channels-last", action="store_true", help="channels_last for our loop (CUDA only)")
    add_clock_options(ap)
    args = ap.parse_args(argv)
    clock = clock_from(args)
    device = resolve_device(args.device)
    cfg = JobConfig(dataset="shapes", image_size=args.image_size, batch_size=args.batch, steps=10**6,
                    probe_every=1, flush_every=50, sample_every=10**6, checkpoint_every=10**6,
                    device=str(device), amp=args.amp, channels_last=args.channels_last, seed=0)
    plain = PlainDCGAN(cfg, device)
    with tempfile.TemporaryDirectory() as tmp:
        ours = Trainer(cfg, MemorySink(), Path(tmp), probes=True)
        ours.start()
        run_block(ours.advance, args.warmup, device, clock)
        run_block(plain.step, args.warmup, device, clock)
        print(f"DCGAN {args.image_size}x{args.image_size}, batch {args.batch}, {device}"
              f"{', bf16' if ours.amp else ''}{', channels_last' if ours.mem_format == torch.channels_last else ''}, "
              f"{torch.get_num_threads()} threads, {args.reps} x {args.steps} steps per loop")
        ours_sps, plain_sps, ratios = [], [], []
        for rep in range(args.reps):
            first_ours = rep % 2 == 0
            for is_ours in (first_ours, not first_ours):
                sps = run_block(ours.advance if is_ours else plain.step, args.steps, device, clock)
                (ours_sps if is_ours else plain_sps).append(sps)
            ratios.append(ours_sps[-1] / plain_sps[-1])
            print(f"  rep {rep + 1}: ganscope {ours_sps[-1]:.3f} steps/s, plain {plain_sps[-1]:.3f} steps/s, "
                  f"ratio {ratios[-1]:.3f}")
    o, p = statistics.median(ours_sps), statistics.median(plain_sps)
    print(f"ganscope {o:.3f} steps/s ({o * args.batch:.1f} img/s)")
    print(f"plain    {p:.3f} steps/s ({p * args.batch:.1f} img/s)")
    ratio = statistics.median(ratios)
    print(f"throughput_ratio {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
