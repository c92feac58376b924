"""`shapes`: procedural coloured shapes on varied backgrounds — the demo dataset.

Each image has a background (flat colour, a linear two-colour gradient, or soft stripes)
and one to three shapes (circle, square, triangle) with random colour, size, position and
rotation, painted back to front with anti-aliased edges. The set has clear, learnable
structure (edges, flat regions, a few object classes), so a small DCGAN shows recognisable
shapes within minutes on a CPU, and mode collapse is visible (all one shape or colour).

Rendering is vectorised over a chunk of images with signed-distance functions: no
per-pixel Python loops. The bank is a deterministic function of (seed, image size, count).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

MAX_SHAPES = 3
# Pixels rendered per vectorised chunk: big enough to amortise per-op overhead, small enough that
# the working tensors stay in cache (measured: 2^18 renders 2730 64-px images in ~0.7 s on 1 core).
_CHUNK_PIXELS = 1 << 18


def bank_size(image_size: int) -> int:
    """How many images to pre-render: a few thousand, capped near 32 MiB of uint8
    (4096 at 16-32 px, 2730 at 64 px, 682 at 128 px) to bound memory and render time."""
    per_image = 3 * image_size * image_size
    return int(max(512, min(4096, (32 << 20) // per_image)))


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g)


# The attributes `render_labelled` reports (the quality classifier's heads, trainer/quality/shapes_clf.py):
# background kind, and the kind and colour class of the dominant shape (the one with the most visible pixels).
# A colour class is the (high, low) channel pair of the saturated colour: 6 hues (red, orange-ish ... magenta).
ATTRIBUTES: dict[str, int] = {"background": 3, "shape": 3, "colour": 6}


def _render_chunk(n: int, size: int, g: torch.Generator,
                  labels: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """n images (n, 3, size, size) float in [0, 1]; with `labels` given, fills it with ATTRIBUTES' classes.
    Labelling draws nothing from `g`: labelled and plain renders of one seed are the same images."""
    # Pixel-centre coordinates in [-1, 1]; one pixel is 2/size wide.
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    ys = coords.view(1, size, 1)
    xs = coords.view(1, 1, size)
    px = 2.0 / size

    # --- background --------------------------------------------------------------------------
    kind = torch.randint(0, 3, (n,), generator=g)              # 0 flat, 1 gradient, 2 stripes
    # Backgrounds stay a little muted so shapes (saturated) stand out.
    c0 = 0.15 + 0.6 * _rand(g, n, 3)
    c1 = 0.15 + 0.6 * _rand(g, n, 3)
    theta = _rand(g, n) * 2 * math.pi
    dirx, diry = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
    along = xs * dirx + ys * diry                                  # (n, size, size) in ~[-1.4, 1.4]
    freq = (2 + 3 * _rand(g, n)).view(n, 1, 1)
    grad_t = (along / 2.8 + 0.5).clamp(0, 1)
    stripe_t = 0.5 + 0.5 * torch.tanh(3 * torch.sin(along * freq * math.pi))
    t = torch.where((kind == 1).view(n, 1, 1), grad_t, torch.zeros_like(grad_t))
    t = torch.where((kind == 2).view(n, 1, 1), stripe_t, t)
    img = c0.view(n, 3, 1, 1) * (1 - t).unsqueeze(1) + c1.view(n, 3, 1, 1) * t.unsqueeze(1)

    # --- shapes --------------------------------------------------------------------------------
    count = torch.randint(1, MAX_SHAPES + 1, (n,), generator=g)
    kinds, hues, alphas = [], [], []
    for slot in range(MAX_SHAPES):
        shape = torch.randint(0, 3, (n,), generator=g)            # 0 circle, 1 square, 2 triangle
        radius = (0.18 + 0.27 * _rand(g, n)).view(n, 1, 1)
        cx = ((_rand(g, n) * 2 - 1) * (1 - radius.view(n))).view(n, 1, 1)
        cy = ((_rand(g, n) * 2 - 1) * (1 - radius.view(n))).view(n, 1, 1)
        rot = (_rand(g, n) * 2 * math.pi).view(n, 1, 1)
        # Saturated colours: one channel high, one low, one random — distinct from backgrounds.
        colour = _rand(g, n, 3)
        hi = torch.randint(0, 3, (n,), generator=g)
        lo = (hi + torch.randint(1, 3, (n,), generator=g)) % 3
        colour[torch.arange(n), hi] = 0.85 + 0.15 * colour[torch.arange(n), hi]
        colour[torch.arange(n), lo] = 0.15 * colour[torch.arange(n), lo]
        kinds.append(shape)
        # The hue sextant of the colour as painted (brightest, darkest channel) -> 0..5: the brightest channel
        # picks a pair of classes, the darkest which of the other two it is.
        top, bottom = colour.argmax(dim=1), colour.argmin(dim=1)
        hues.append(top * 2 + (bottom - top) % 3 - 1)

        dx, dy = xs - cx, ys - cy
        cos_r, sin_r = torch.cos(rot), torch.sin(rot)
        u = dx * cos_r + dy * sin_r
        v = -dx * sin_r + dy * cos_r
        sdf_circle = torch.sqrt(dx * dx + dy * dy) - radius
        sdf_square = torch.maximum(u.abs(), v.abs()) - radius * 0.8
        # Equilateral triangle as the max of three half-planes (normals 120 degrees apart);
        # inradius radius/2 puts its vertices on the circle of the given radius.
        tri = None
        for k in range(3):
            a = rot + k * (2 * math.pi / 3)
            h = dx * torch.cos(a) + dy * torch.sin(a)
            tri = h if tri is None else torch.maximum(tri, h)
        assert tri is not None
        sdf_tri = tri - radius * 0.5
        sdf = torch.where((shape == 0).view(n, 1, 1), sdf_circle, sdf_square)
        sdf = torch.where((shape == 2).view(n, 1, 1), sdf_tri, sdf)
        # One-pixel anti-aliased edge: coverage falls from 1 to 0 across a pixel.
        alpha = (0.5 - sdf / px).clamp(0, 1)
        alpha = alpha * (slot < count).view(n, 1, 1).float()
        alphas.append(alpha)
        alpha = alpha.unsqueeze(1)
        img = img * (1 - alpha) + colour.view(n, 3, 1, 1) * alpha
    if labels is not None:
        # Visible pixels of each shape: its coverage times what the shapes painted after it leave uncovered.
        visible, above = [], torch.ones_like(alphas[0])
        for a in reversed(alphas):
            visible.append((a * above).sum(dim=(1, 2)))
            above = above * (1 - a)
        dominant = torch.stack(visible[::-1], dim=1).argmax(dim=1)
        pick = torch.arange(n)
        # A gradient or stripes between two near-equal colours looks flat, and is labelled as it looks.
        looks_flat = (c0 - c1).abs().amax(dim=1) < 0.12
        labels.update(background=torch.where(looks_flat, torch.zeros_like(kind), kind), shape=torch.stack(kinds, 1)[pick, dominant],
                      colour=torch.stack(hues, 1)[pick, dominant])
    return img


def render_labelled(seed: int, image_size: int, count: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(count, 3, size, size) float images in [-1, 1] (as the data source serves them) and their ATTRIBUTES."""
    g = torch.Generator().manual_seed(int(seed) ^ 0x5A17E5)
    out = torch.empty(count, 3, image_size, image_size)
    labels: dict[str, list[torch.Tensor]] = {k: [] for k in ATTRIBUTES}
    chunk = max(1, _CHUNK_PIXELS // (image_size * image_size))
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        part: dict[str, torch.Tensor] = {}
        img = _render_chunk(n, image_size, g, part)
        out[start:start + n] = (img * 255).round().clamp(0, 255) / 127.5 - 1  # the bank's uint8 rounding
        for k in ATTRIBUTES:
            labels[k].append(part[k])
    return out, {k: torch.cat(v) for k, v in labels.items()}


@lru_cache(maxsize=2)
def render_bank(seed: int, image_size: int, count: int) -> torch.Tensor:
    """(count, 3, size, size) uint8; cached so repeated builds (tests, resumes) cost nothing.

    Callers must not modify the returned tensor (it is shared through the cache).
    """
    g = torch.Generator().manual_seed(int(seed) ^ 0x5A17E5)   # own stream, apart from training's
    out = torch.empty(count, 3, image_size, image_size, dtype=torch.uint8)
    chunk = max(1, _CHUNK_PIXELS // (image_size * image_size))
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        out[start:start + n] = (_render_chunk(n, image_size, g) * 255).round().clamp(0, 255).to(torch.uint8)
    return out
