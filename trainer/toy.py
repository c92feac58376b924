"""Toy distributions (1-D and 2-D) and the measures the literature uses on them.

The mixtures here are the single source of truth for the toy datasets: `trainer.data`
samples from `mixture_for(cfg)`, and the probes score generated samples against the
same `Mixture`, so the data and its measure can never disagree.

Settings (chosen to match the papers the measures come from):

* ``ring8``  — 8 Gaussians evenly spaced on a circle of radius 2, sigma 0.02
  (Metz et al. 2017, "Unrolled GANs").
* ``grid25`` — 25 Gaussians on the 5x5 grid {-4, -2, 0, 2, 4}^2, sigma 0.05
  (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al. 2018).
* ``gauss1d``    — N(4, 0.4): mean 4, standard deviation 0.4 (the seed experiment); one mode.
* ``bimodal1d``  — equal mixture of N(-2, 0.5) and N(2, 0.5): modes 8 sigma apart.
* ``trimodal1d`` — equal mixture of N(-4, 0.5), N(0, 0.5), N(4, 0.5): modes 8 sigma apart.
* ``poisson1d``  — Poisson(lambda=4) counts as floats; discrete, no Gaussian modes, so
  `mixture_for` returns None and no mode measure applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ganscope.trainer.config import JobConfig

POISSON_RATE = 4.0
# A sample is "high quality" within this many sigmas of its nearest mode (standard measure).
QUALITY_SIGMAS = 3.0
# A mode is covered when it holds at least this fraction of the uniform share N_hq / K of the
# high-quality samples. PacGAN counts a mode lost below 20 of 2500 samples on 25 modes, i.e. 20% of
# the uniform share 100; scaling the share with the batch keeps the rule meaningful for a few hundred
# samples, where a fixed count would not be.
COVERAGE_SHARE = 0.2
# ...and never fewer than this many samples, so one stray point does not "cover" a mode.
COVERAGE_MIN_COUNT = 1

HIST_BINS = 100          # 1-D snapshot grid
GRID_SIDE = 40           # 2-D snapshot D-output grid is GRID_SIDE x GRID_SIDE
MAX_POINTS = 500         # points per cloud in a 2-D snapshot


@dataclass
class Mixture:
    """An equal-weight mixture of isotropic Gaussians."""

    centers: torch.Tensor   # (K, dim), float32, CPU
    sigma: float

    @property
    def dim(self) -> int:
        return int(self.centers.shape[1])

    @property
    def k(self) -> int:
        return int(self.centers.shape[0])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n points (n, dim); all randomness from `generator` (component first, then noise)."""
        comp = torch.randint(0, self.k, (n,), generator=generator)
        noise = torch.randn(n, self.dim, generator=generator)
        return self.centers[comp] + self.sigma * noise


def _ring8() -> Mixture:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    centers = torch.stack([2.0 * torch.cos(angles), 2.0 * torch.sin(angles)], dim=1)
    return Mixture(centers=centers.float(), sigma=0.02)


def _grid25() -> Mixture:
    axis = torch.arange(-4.0, 4.01, 2.0)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    return Mixture(centers=torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).float(), sigma=0.05)


def _mix1d(means: list[float], sigma: float) -> Mixture:
    return Mixture(centers=torch.tensor(means, dtype=torch.float32).reshape(-1, 1), sigma=sigma)


_MIXTURES: dict[str, Callable[[], Mixture]] = {
    "ring8": _ring8,
    "grid25": _grid25,
    "gauss1d": lambda: _mix1d([4.0], 0.4),
    "bimodal1d": lambda: _mix1d([-2.0, 2.0], 0.5),
    "trimodal1d": lambda: _mix1d([-4.0, 0.0, 4.0], 0.5),
}


def mixture_for(cfg: JobConfig) -> Mixture | None:
    """The Gaussian mixture behind a toy dataset; None for poisson1d and for image sets."""
    make = _MIXTURES.get(cfg.dataset)
    return make() if make is not None else None


def mode_stats(samples: torch.Tensor, mixture: Mixture) -> tuple[int, float]:
    """(modes covered, fraction of high-quality samples) of `samples` (N, dim) or (N,) for 1-D.

    High quality: within QUALITY_SIGMAS * sigma (Euclidean) of the nearest mode. Covered: a mode
    holding >= max(COVERAGE_MIN_COUNT, COVERAGE_SHARE * N_hq / K) of the high-quality samples.
    Non-finite samples count as low quality (a diverged G scores 0, not an error).
    """
    x = samples.detach().float().cpu()
    if x.dim() == 1:
        x = x.unsqueeze(1)
    n = x.shape[0]
    if n == 0:
        return 0, 0.0
    centers = mixture.centers.float()
    finite = torch.isfinite(x).all(dim=1)
    x = torch.where(finite.unsqueeze(1), x, torch.zeros_like(x))
    # Exact differences rather than cdist's matmul shortcut, whose cancellation error grows with
    # the coordinates; K is a few dozen modes at most, so exactness costs nothing.
    dist = torch.cdist(x, centers, compute_mode="donot_use_mm_for_euclid_dist")   # (N, K)
    nearest_d, nearest = dist.min(dim=1)
    hq = finite & (nearest_d <= QUALITY_SIGMAS * mixture.sigma)
    n_hq = int(hq.sum())
    if n_hq == 0:
        return 0, 0.0
    counts = torch.bincount(nearest[hq], minlength=mixture.k)
    threshold = max(float(COVERAGE_MIN_COUNT), COVERAGE_SHARE * n_hq / mixture.k)
    covered = int((counts.float() >= threshold).sum())
    return covered, n_hq / n


# --- snapshot payloads ------------------------------------------------------------------------

def _clean(values: list[Any]) -> list[Any]:
    """Plain floats with non-finite values as None (JSON never carries NaN/Infinity)."""
    return [v if isinstance(v, float) and math.isfinite(v) else None for v in values]


def _finite_1d(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().float().cpu().reshape(-1)
    return t[torch.isfinite(t)]


def _span(real: torch.Tensor, fake: torch.Tensor, extra: torch.Tensor | None = None) -> tuple[float, float]:
    """A range covering real, fake (and extra) values along one axis, padded by 5%.

    Fake samples from a diverging G can sit at 1e6; spanning them would squash the real
    density into one bin, so fake values are clipped to within 5 real spans of the real range.
    """
    parts = [p for p in (real, extra) if p is not None and p.numel()]
    anchor = torch.cat(parts) if parts else torch.zeros(1)
    r_lo, r_hi = float(anchor.min()), float(anchor.max())
    r_span = max(r_hi - r_lo, 1.0)
    lo, hi = r_lo, r_hi
    if fake.numel():
        lo = min(lo, max(float(fake.min()), r_lo - 5 * r_span))
        hi = max(hi, min(float(fake.max()), r_hi + 5 * r_span))
    pad = max(hi - lo, 1e-3) * 0.05
    return lo - pad, hi + pad


def _d_on(d_fn: Callable[[torch.Tensor], torch.Tensor], grid: torch.Tensor) -> list[Any]:
    with torch.no_grad():
        out = d_fn(grid)
    return _clean(out.detach().float().cpu().reshape(-1).tolist())


def _points(t: torch.Tensor) -> list[list[Any]]:
    pts = t.detach().float().cpu().reshape(-1, 2)[:MAX_POINTS]
    return [_clean([round(v, 4) for v in row]) for row in pts.tolist()]


def density_payload(
    real: torch.Tensor,
    fake: torch.Tensor,
    d_fn: Callable[[torch.Tensor], torch.Tensor],
    mixture: Mixture | None,
    dim: int,
) -> dict[str, Any]:
    """The toy snapshot payload of docs/contracts.md, as JSON-ready plain lists.

    `d_fn` maps a (M, dim) float32 grid (on `real`'s device) to D's probabilities (M,) or (M, 1).
    1-D: real and fake histogram densities on HIST_BINS shared bins and D on the bin centres.
    2-D: up to MAX_POINTS points of each cloud, the modes and sigma, and D on a GRID_SIDE^2 grid;
    `d_grid["z"][i][j]` is D at (x[j], y[i]) (row = y, as a Plotly heatmap expects).
    """
    device = real.device
    if dim == 1:
        r, f = _finite_1d(real), _finite_1d(fake)
        lo, hi = _span(r, f)
        edges = torch.linspace(lo, hi, HIST_BINS + 1, dtype=torch.float64)
        width = float(edges[1] - edges[0])
        centres = ((edges[:-1] + edges[1:]) / 2).float()

        def density(v: torch.Tensor, total: int) -> list[Any]:
            if total == 0:
                return [0.0] * HIST_BINS
            counts = torch.histc(v.double(), bins=HIST_BINS, min=lo, max=hi)
            return _clean((counts / (total * width)).tolist())

        # Densities are normalised by all samples (non-finite and out-of-range ones included),
        # so the area under the fake curve drops when G produces garbage.
        return {
            "dim": 1,
            "x": _clean([round(v, 6) for v in centres.tolist()]),
            "real_density": density(r, real.numel()),
            "fake_density": density(f, fake.numel()),
            "d_output": _d_on(d_fn, centres.reshape(-1, 1).to(device)),
        }
    if dim != 2:
        raise ValueError(f"density_payload handles dim 1 or 2, got {dim}")
    r2 = real.detach().float().cpu().reshape(-1, 2)
    f2 = fake.detach().float().cpu().reshape(-1, 2)
    modes = mixture.centers.float() if mixture is not None else torch.zeros(0, 2)
    axes = []
    for a in range(2):
        ra, fa = _finite_1d(r2[:, a]), _finite_1d(f2[:, a])
        lo, hi = _span(ra, fa, modes[:, a])
        axes.append(torch.linspace(lo, hi, GRID_SIDE))
    xs, ys = axes
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")          # (GRID_SIDE, GRID_SIDE), row = y
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    flat = _d_on(d_fn, grid.to(device))
    z = [flat[i * GRID_SIDE:(i + 1) * GRID_SIDE] for i in range(GRID_SIDE)]
    sigma = mixture.sigma if mixture is not None else None
    return {
        "dim": 2,
        "real": _points(r2),
        "fake": _points(f2),
        "modes": [_clean([round(v, 4) for v in row]) for row in modes.tolist()],
        "sigma": sigma,
        "d_grid": {
            "x": _clean([round(v, 4) for v in xs.tolist()]),
            "y": _clean([round(v, 4) for v in ys.tolist()]),
            "z": z,
        },
    }
