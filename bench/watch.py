"""Cost of the SDK on a script's own loop: a pytorch/examples-style DCGAN with `run.watch(netG, netD)` at every
step and its losses logged, against the same loop bare.

The nets and the step are written here the way pytorch/examples' dcgan writes them (sigmoid + BCELoss,
separate backward passes for the real and fake halves, `.item()` reads of the losses and D outputs every
iteration for the log line), not built from ganscope's models. The instrumented copy adds what a user adds:
`run.watch(netG, netD)` (per-layer gradient, weight and update norms of both nets at every optimizer step)
and one `run.log` per iteration of the values the loop already reads, sent to a real server (started here
unless --server is given). Blocks of steps alternate between the two loops so machine load hits both alike;
the ratio is the median over pairs of blocks of (instrumented time / bare time).

    python -m bench.watch [--image-size 64] [--batch 64] [--steps 5] [--reps 5] [--threads 1 --clock cpu]
    python -m bench.watch --quick        # a check that it runs: 16px, batch 16, 2 x 2 steps

Last line: ``watch_overhead <ratio>`` (target <= 1.03; wandb.watch took a user's iterations from 2.2 to 5.7 s).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.timing import Clock, add_clock_options, clock_from  # noqa: E402
from ganscope.trainer import sdk  # noqa: E402



def weights_init(m: nn.Module) -> None:
    name = type(m).__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def generator(nz: int, ngf: int, nc: int, size: int) -> nn.Module:
    n = int(math.log2(size)) - 3  # 64 px: four up-convolutions after the first, as in the example
    width = ngf * 2 ** n
    layers: list[nn.Module] = [nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
    for _ in range(n):
        layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(True)]
        width //= 2
    layers += [nn.ConvTranspose2d(width, nc, 4, 2, 1, bias=False), nn.Tanh()]
    net = nn.Sequential(*layers)
    net.apply(weights_init)
    return net


def discriminator(ndf: int, nc: int, size: int) -> nn.Module:
    n = int(math.log2(size)) - 3
    layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    width = ndf
    for _ in range(n):
        layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                   nn.LeakyReLU(0.2, inplace=True)]
        width *= 2
    layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False), nn.Sigmoid()]
    net = nn.Sequential(*layers)
    net.apply(weights_init)
    return net


class ExampleLoop:
    """pytorch/examples' DCGAN training step; `run`, when given, is the SDK instrumenting it."""

    def __init__(self, size: int, batch: int, device: torch.device, run: sdk.Run | None) -> None:
        torch.manual_seed(0)
        self.nz, self.batch, self.device, self.run = 100, batch, device, run
        self.netG = generator(self.nz, 64, 3, size).to(device)
        self.netD = discriminator(64, 3, size).to(device)
        self.criterion = nn.BCELoss()
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.real = torch.rand(batch, 3, size, size, device=device) * 2 - 1
        self.i = 0
        if run is not None:
            run.watch(self.netG, self.netD)

    def step(self) -> None:
        real_cpu, b, device = self.real, self.batch, self.device
        self.netD.zero_grad()
        label = torch.full((b,), 1.0, dtype=real_cpu.dtype, device=device)
        output = self.netD(real_cpu).view(-1)
        errD_real = self.criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        noise = torch.randn(b, self.nz, 1, 1, device=device)
        fake = self.netG(noise)
        label.fill_(0.0)
        output = self.netD(fake.detach()).view(-1)
        errD_fake = self.criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        self.optimizerD.step()
        self.netG.zero_grad()
        label.fill_(1.0)
        output = self.netD(fake).view(-1)
        errG = self.criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        self.optimizerG.step()
        line = (errD.item(), errG.item(), D_x, D_G_z1, D_G_z2)  # the example prints these every iteration
        if self.run is not None:
            self.run.log({"loss/d": line[0], "loss/g": line[1], "pred/real": D_x, "pred/fake": D_G_z1,
                          "pred/fake_g": D_G_z2}, step=self.i)
        self.i += 1


def time_block(loop: ExampleLoop, steps: int, clock: Clock) -> float:
    if loop.device.type == "cuda":
        torch.cuda.synchronize(loop.device)
    t0 = clock()
    for _ in range(steps):
        loop.step()
    if loop.device.type == "cuda":
        torch.cuda.synchronize(loop.device)
    return clock() - t0


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=32, help="16, 32, 64 (the example's) or 128")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed block")
    ap.add_argument("--reps", type=int, default=5, help="pairs of timed blocks (interleaved)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--server", default=None, help="a ganscope server to log to (default: start one here)")
    add_clock_options(ap, "; the SDK's threads count too")
    ap.add_argument("--quick", action="store_true", help="16px, batch 16, 2 x 2 steps: check that it runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.image_size, args.batch, args.steps, args.reps, args.warmup = 16, 16, 2, 2, 1
    clock = clock_from(args)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        url = args.server
        if url is None:
            from tests.harness import start_server

            server = start_server(Path(tmp) / "home")
            url = server.url
        try:
            run = sdk.init(url, name="bench watch", config=vars(args), spool_dir=Path(tmp) / "spool", quiet=True)
            bare, watched = ExampleLoop(args.image_size, args.batch, device, None), \
                ExampleLoop(args.image_size, args.batch, device, run)
            for loop in (bare, watched):
                time_block(loop, args.warmup, clock)
            print(f"pytorch/examples DCGAN {args.image_size}x{args.image_size}, batch {args.batch}, {device}, "
                  f"{torch.get_num_threads()} threads, {args.reps} x {args.steps} steps per loop, {args.clock} clock")
            ratios, t_bare, t_watch = [], [], []
            for rep in range(args.reps):
                order = (bare, watched) if rep % 2 == 0 else (watched, bare)
                times = {id(loop): time_block(loop, args.steps, clock) for loop in order}
                t_bare.append(times[id(bare)] / args.steps)
                t_watch.append(times[id(watched)] / args.steps)
                ratios.append(t_watch[-1] / t_bare[-1])
                print(f"  rep {rep + 1}: bare {t_bare[-1] * 1000:.1f} ms/step, watched {t_watch[-1] * 1000:.1f} "
                      f"ms/step, ratio {ratios[-1]:.3f}")
            run.finish()
        finally:
            if server is not None:
                server.stop()
    print(f"bare    {statistics.median(t_bare) * 1000:.1f} ms/step")
    print(f"watched {statistics.median(t_watch) * 1000:.1f} ms/step")
    ratio = statistics.median(ratios)
    print(f"watch_overhead {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
