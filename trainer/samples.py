"""Sample images: the fixed-z grid, interpolations and latent walks, as PNG bytes.

G runs in training mode (batch statistics, as during training, so a grid shows what
the discriminator sees) but its buffers — batch-norm running statistics, spectral norm's
power-iteration vectors — are restored afterwards: drawing a sample never changes the run,
so a resumed run and an uninterrupted one stay identical whatever was sampled in between.

With ``ema_g`` on, the trainer passes its moving average of G (`Trainer.eval_generator()`)
and a checkpoint's samples come from the average stored in it.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import nn
from torchvision.utils import make_grid

from ganscope.trainer import checkpoint as ckpt_io
from ganscope.trainer.config import JobConfig
from ganscope.trainer.models import NamedNet, build_generator, z_shape

GRID_N = 64                    # fixed-z grid: 8 x 8
INTERP_ROWS, INTERP_STEPS = 4, 8
WALK_STEPS, WALK_SPAN = 8, 2.5  # a walk spans [-span, span] standard deviations of one latent coordinate
# Salt added to the run's seed for the z of the checkpoint-time interp/walk figures.
_FIGURE_SALT = 7919


@contextlib.contextmanager
def preserved_buffers(net: nn.Module) -> Iterator[None]:
    """Every buffer of `net` as it was on entry, put back on exit (forward passes in training mode
    update batch norm's statistics and spectral norm's vectors)."""
    saved = [(b, b.detach().clone()) for b in net.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)


def generate(g: nn.Module, z: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """G(z) without gradients or lasting batch-norm changes; chunks bound memory for long walks."""
    with torch.no_grad(), preserved_buffers(g):
        outs = [g(z[i:i + chunk]).float() for i in range(0, z.shape[0], chunk)]
    return torch.cat(outs)


def images_png(images: torch.Tensor, nrow: int) -> bytes:
    """Images in [-1, 1] (N, C, H, W) as one PNG grid."""
    x = torch.nan_to_num(images.detach().float().cpu(), nan=0.0, posinf=1.0, neginf=-1.0)
    grid = make_grid(x, nrow=nrow, padding=2, normalize=True, value_range=(-1.0, 1.0))
    arr = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def points_png(points: torch.Tensor, size: int = 320) -> bytes:
    """Toy samples as a picture: a scatter for 2-D, a histogram for 1-D."""
    x = points.detach().float().cpu()
    x = x[torch.isfinite(x).all(dim=1)] if x.dim() == 2 else x[torch.isfinite(x)].reshape(-1, 1)
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    if x.numel():
        lo, hi = x.min(0).values, x.max(0).values
        span = (hi - lo).clamp_min(1e-6)
        pad = 8
        scaled = (x - lo) / span * (size - 2 * pad) + pad
        if x.shape[1] >= 2:
            for px, py in scaled[:, :2].tolist():
                draw.ellipse([px - 1.5, size - py - 1.5, px + 1.5, size - py + 1.5], fill=(31, 119, 180))
        else:
            counts = torch.histc(scaled[:, 0], bins=64, min=pad, max=size - pad)
            top = float(counts.max()) or 1.0
            w = (size - 2 * pad) / 64
            for i, c in enumerate(counts.tolist()):
                h = c / top * (size - 2 * pad)
                draw.rectangle([pad + i * w, size - pad - h, pad + (i + 1) * w - 1, size - pad], fill=(31, 119, 180))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation: linear paths through a Gaussian latent pass through its low-density
    centre (White 2016, "Sampling Generative Networks"). a, b (N, D); t (S,) → (N, S, D)."""
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((an * bn).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None, None]   # (N, 1, 1)
    t = t[None, :, None]
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a[:, None, :] + (torch.sin(t * omega) / so) * b[:, None, :]


def interpolation_z(cfg: JobConfig, rows: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    a = torch.randn(rows, cfg.nz, generator=generator)
    b = torch.randn(rows, cfg.nz, generator=generator)
    z = slerp(a, b, torch.linspace(0, 1, steps)).reshape(rows * steps, cfg.nz)
    return z.reshape(z_shape(cfg, rows * steps))


def walk_z(cfg: JobConfig, base: torch.Tensor, dims: list[int], steps: int, span: float) -> torch.Tensor:
    """One row per (base z, dim): that coordinate swept over [-span, span], the rest held."""
    rows = []
    values = torch.linspace(-span, span, steps)
    for z0 in base:
        for dim in dims:
            if not 0 <= dim < cfg.nz:
                raise ValueError(f"latent dimension {dim} is outside 0..{cfg.nz - 1}")
            row = z0.reshape(1, cfg.nz).repeat(steps, 1)
            row[:, dim] = values
            rows.append(row)
    z = torch.cat(rows)
    return z.reshape(z_shape(cfg, z.shape[0]))


def checkpoint_figures(g: NamedNet, cfg: JobConfig, device: torch.device) -> dict[str, bytes]:
    """The "interp" and "walk" PNGs emitted with each checkpoint (same z at every checkpoint).

    The walk follows dimensions nz/4, nz/2 and 3nz/4 from two base points, like the seed
    write-up's "dimension 25/50/75" figures for nz = 100.
    """
    gen = torch.Generator().manual_seed(cfg.seed + _FIGURE_SALT)
    z_i = interpolation_z(cfg, INTERP_ROWS, INTERP_STEPS, gen)
    base = torch.randn(2, cfg.nz, generator=gen)
    dims = sorted({cfg.nz // 4, cfg.nz // 2, (3 * cfg.nz) // 4})
    z_w = walk_z(cfg, base, dims, WALK_STEPS, WALK_SPAN)
    return {
        "interp": images_png(generate(g, z_i.to(device)), nrow=INTERP_STEPS),
        "walk": images_png(generate(g, z_w.to(device)), nrow=WALK_STEPS),
    }


# --- from a checkpoint file (the CLI's `ganscope latent`) -------------------------------------

@dataclass
class LoadedGenerator:
    net: NamedNet
    cfg: JobConfig
    step: int
    fixed_z: torch.Tensor
    device: torch.device


def load_generator(checkpoint_path: Path | str, device: str | torch.device = "cpu") -> LoadedGenerator:
    ckpt = ckpt_io.load(Path(checkpoint_path))
    cfg = ckpt_io.config_of(ckpt)
    dev = torch.device(device)
    g = build_generator(cfg)
    # The run's own samples came from G's moving average when it kept one.
    g.load_state_dict(ckpt.get("g_ema", ckpt["g"]))
    g.to(dev).train()
    return LoadedGenerator(net=g, cfg=cfg, step=int(ckpt["step"]), fixed_z=ckpt["fixed_z"], device=dev)


def _loaded(ckpt: LoadedGenerator | Path | str) -> LoadedGenerator:
    return ckpt if isinstance(ckpt, LoadedGenerator) else load_generator(ckpt)


def _need_images(lg: LoadedGenerator, what: str) -> None:
    if lg.cfg.is_toy:
        raise ValueError(f"{what} needs an image dataset; {lg.cfg.dataset} is a toy set (use random samples)")


def random_samples_png(ckpt: LoadedGenerator | Path | str, n: int = 64, seed: int = 0) -> bytes:
    """n samples from random z: a grid for image sets, a scatter (2-D) or histogram (1-D) for toy sets."""
    if n < 1:
        raise ValueError("n must be at least 1")
    lg = _loaded(ckpt)
    z = torch.randn(z_shape(lg.cfg, n), generator=torch.Generator().manual_seed(seed))
    out = generate(lg.net, z.to(lg.device))
    if lg.cfg.is_toy:
        return points_png(out)
    return images_png(out, nrow=max(1, int(math.ceil(math.sqrt(n)))))


def interpolation_png(ckpt: LoadedGenerator | Path | str, steps: int = 10, seed: int = 0, rows: int = 4) -> bytes:
    """Rows of G along the great circle between two random z (one pair per row)."""
    if steps < 2:
        raise ValueError("steps must be at least 2")
    lg = _loaded(ckpt)
    _need_images(lg, "interpolation")
    z = interpolation_z(lg.cfg, rows, steps, torch.Generator().manual_seed(seed))
    return images_png(generate(lg.net, z.to(lg.device)), nrow=steps)


def latent_walk_png(ckpt: LoadedGenerator | Path | str, dim: int, steps: int = 10, span: float = WALK_SPAN,
                    seed: int = 0, rows: int = 4) -> bytes:
    """Rows of G as latent coordinate `dim` sweeps [-span, span], each row from its own random base z."""
    if steps < 2:
        raise ValueError("steps must be at least 2")
    lg = _loaded(ckpt)
    _need_images(lg, "a latent walk")
    base = torch.randn(rows, lg.cfg.nz, generator=torch.Generator().manual_seed(seed))
    z = walk_z(lg.cfg, base, [dim], steps, span)
    return images_png(generate(lg.net, z.to(lg.device)), nrow=steps)
