"""KID, FID (torchmetrics) and precision / recall / coverage (k-NN manifolds) on extracted features.

KID and FID are torchmetrics' own implementations, fed features we already hold (a pass-through `feature`
module), so the maths is theirs and the extractor ours. Precision and recall (Kynkäänniemi et al. 2019) and
coverage (Naeem et al. 2020) are a few lines of torch.cdist: the reference `prdc` package is numpy and
scikit-learn only, last released in 2020, and would pull scikit-learn into every worker for three means.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

NN_K = 5  # neighbours defining each sample's manifold ball (k = 5 in both papers; real vs real coverage ≈ 0.97)


class _Given(nn.Module):
    """The identity with a `num_features`: torchmetrics then takes our features as its "images"."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def kid_fid(real: torch.Tensor, fake: torch.Tensor) -> tuple[float, float]:
    """(KID, FID) between two feature sets (N, D). KID is the unbiased polynomial-kernel MMD² on all samples
    (one subset of the smaller set's size); torchmetrics draws its subsets from the global RNG, so the call runs
    in a forked RNG and leaves the caller's stream untouched."""
    real, fake = real.detach().double().cpu(), fake.detach().double().cpu()
    dim = real.shape[1]
    n = min(real.shape[0], fake.shape[0])
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # it warns that it keeps every feature: a few hundred rows here
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        torch.manual_seed(0)
        kid = KernelInceptionDistance(feature=_Given(dim), subsets=1, subset_size=n)
        kid.update(real, real=True)
        kid.update(fake, real=False)
        kid_mean, _ = kid.compute()
    fid = FrechetInceptionDistance(feature=_Given(dim))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(kid_mean), float(fid.compute().clamp(min=0))


def _kth_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row."""
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # k + 1: the row itself sits at distance 0


def prc(real: torch.Tensor, fake: torch.Tensor, k: int = NN_K) -> dict[str, float]:
    """precision, recall, coverage of `fake` against `real` (N, D) features; k-NN balls as in the papers."""
    real, fake = real.detach().float().cpu(), fake.detach().float().cpu()
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"precision/recall/coverage need more than k={k} samples of each kind")
    r_rad, f_rad = _kth_radius(real, k), _kth_radius(fake, k)
    d = torch.cdist(real, fake)  # (N_real, N_fake)
    precision = (d <= r_rad[:, None]).any(dim=0).float().mean()  # fake inside some real ball
    recall = (d <= f_rad[None, :]).any(dim=1).float().mean()     # real inside some fake ball
    coverage = (d.min(dim=1).values < r_rad).float().mean()       # real ball holding a fake sample
    return {"precision": float(precision), "recall": float(recall), "coverage": float(coverage)}
