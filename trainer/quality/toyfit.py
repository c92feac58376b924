"""`toy/fit`: how far G's toy samples are from the data, in units of the data's standard deviation.

1-D: the Wasserstein-1 distance (scipy.stats.wasserstein_distance) divided by the real samples' standard
deviation. W1 is the mass that must move times how far it moves, so a G shifted by a tenth of a standard
deviation reads 0.1 and one that put half the mass on the wrong mode of bimodal1d (modes 2 std apart) about 1.

2-D: the sliced Wasserstein-1 distance (Rabin et al. 2011): W1 of the two clouds projected on SLICES evenly
spaced directions, each divided by the real cloud's standard deviation along that direction, averaged. Along
every direction it is exactly the 1-D measure, so both dimensions share one scale and one pair of lines (good
0.3, bad 1.0; real against real stays under 0.1 at the TOY_EVAL_N samples the loop draws). The energy distance
was the other candidate; its square root grows like the square root of a length and its square quadratically in a
small shift, so it cannot be read "in standard deviations" and could not share the 1-D lines.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import wasserstein_distance

SLICES = 32  # directions over a half turn: 5.6° apart, well past the resolution a 2-D toy set needs
GOOD, BAD = 0.3, 1.0  # the documented lines (server/detectors/quality.py reads the same)


def _w1_scaled(real: np.ndarray, fake: np.ndarray) -> float:
    sd = float(real.std())
    if not sd > 0:
        sd = 1.0  # a constant real set (never one of ours): fall back to absolute units
    return float(wasserstein_distance(real, fake)) / sd


def toy_fit(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Scale-free distance of `fake` (N, d) or (N,) from `real`, d in {1, 2}; inf when G emits non-finite values.

    A non-finite sample has no place to move mass from, so any of them makes the fit infinitely bad (the
    detectors treat a non-finite reading as missing; the nonfinite rule reports the cause)."""
    r = real.detach().double().cpu().reshape(real.shape[0], -1).numpy()
    f = fake.detach().double().cpu().reshape(fake.shape[0], -1).numpy()
    if r.shape[1] != f.shape[1] or r.shape[1] not in (1, 2):
        raise ValueError(f"toy_fit takes 1-D or 2-D samples of one dimension, got {r.shape[1]} and {f.shape[1]}")
    if not np.isfinite(f).all():
        return math.inf
    if r.shape[1] == 1:
        return _w1_scaled(r[:, 0], f[:, 0])
    angles = np.arange(SLICES) * (math.pi / SLICES)
    dirs = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (SLICES, 2)
    pr, pf = r @ dirs.T, f @ dirs.T
    return float(np.mean([_w1_scaled(pr[:, i], pf[:, i]) for i in range(SLICES)]))
