"""Differentiable augmentation of D's inputs (Zhao et al. 2020, "Differentiable Augmentation for
Data-Efficient GAN Training").

D sees every image — real or generated, in D's steps and in G's — through the same random
transformations, so it cannot tell the sets apart by augmentation artefacts, and G is trained
through them because every op is differentiable in the image. Ops, each with its own random
draw per sample:

* ``color``: brightness (add U(−0.5, 0.5)), saturation (scale each pixel's deviation from its
  channel mean by U(0, 2)), contrast (scale the deviation from the image mean by U(0.5, 1.5));
* ``translation``: shift by up to 1/8 of the side in each axis (whole pixels), zeros filling in;
* ``cutout``: zero a square of half the side at a random centre (clipped at the border).

Randomness comes from the generator passed in (the run's checkpointed noise stream), on the
images' device: no host round trip, and a resumed run augments exactly as the straight run.
Images are (B, C, H, W), in [-1, 1] for real ones.
"""

from __future__ import annotations

import torch

TRANSLATION_RATIO = 1 / 8
CUTOUT_RATIO = 1 / 2


def _uniform(x: torch.Tensor, lo: float, hi: float, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per sample, shaped to broadcast over (C, H, W)."""
    u = torch.rand((x.shape[0], 1, 1, 1), generator=generator, device=x.device, dtype=torch.float32)
    return (lo + (hi - lo) * u).to(x.dtype)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    x = x + _uniform(x, -0.5, 0.5, generator)
    pixel_mean = x.mean(dim=1, keepdim=True)
    x = (x - pixel_mean) * _uniform(x, 0.0, 2.0, generator) + pixel_mean
    image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - image_mean) * _uniform(x, 0.5, 1.5, generator) + image_mean


def _offsets(x: torch.Tensor, low: int, high: int, generator: torch.Generator | None) -> torch.Tensor:
    """Per-sample integers in [low, high], shaped (B, 1, 1) to broadcast over (H, W)."""
    return torch.randint(low, high + 1, (x.shape[0], 1, 1), generator=generator, device=x.device)


def translation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    b, c, h, w = x.shape
    max_y, max_x = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy, dx = _offsets(x, -max_y, max_y, generator), _offsets(x, -max_x, max_x, generator)
    # Output pixel (i, j) reads input pixel (i − dy, j − dx); one gather moves all samples at once.
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)                     # (B, H, W)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(b, 1, h * w).expand(b, c, h * w)
    moved = x.reshape(b, c, h * w).gather(2, index).reshape(b, c, h, w)
    return moved * inside.unsqueeze(1).to(x.dtype)


def cutout(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    _, _, h, w = x.shape
    size_y, size_x = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    top = _offsets(x, 0, h - 1, generator) - size_y // 2
    left = _offsets(x, 0, w - 1, generator) - size_x // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)   # (B, H, W)
    return x * (~hole).unsqueeze(1).to(x.dtype)


OPS = {"color": color, "translation": translation, "cutout": cutout}


class DiffAugment:
    """The ops of one policy, applied in the canonical order color → translation → cutout."""

    def __init__(self, ops: tuple[str, ...] | list[str], generator: torch.Generator | None = None) -> None:
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown diffaugment op(s) {unknown}; known: {', '.join(OPS)}")
        self.ops = tuple(op for op in OPS if op in ops)
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = OPS[op](x, self.generator)
        return x
