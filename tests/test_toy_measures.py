"""Toy-set measures: mixtures, modes covered / high-quality fraction, and the snapshot payload."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ganscope.trainer.config import JobConfig
from ganscope.trainer.toy import Mixture, density_payload, mixture_for, mode_stats

torch.set_num_threads(1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mixtures() -> None:
    ring = mixture_for(JobConfig(dataset="ring8"))
    assert ring is not None and ring.centers.shape == (8, 2) and ring.sigma == 0.02
    assert torch.allclose(ring.centers.norm(dim=1), torch.full((8,), 2.0), atol=1e-5)
    grid = mixture_for(JobConfig(dataset="grid25"))
    assert grid is not None and grid.centers.shape == (25, 2) and grid.sigma == 0.05
    assert sorted(set(grid.centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    g1 = mixture_for(JobConfig(dataset="gauss1d"))
    assert g1 is not None and g1.centers.tolist() == [[4.0]] and g1.sigma == 0.4
    assert mixture_for(JobConfig(dataset="bimodal1d")).centers.shape == (2, 1)  # type: ignore[union-attr]
    assert mixture_for(JobConfig(dataset="trimodal1d")).centers.shape == (3, 1)  # type: ignore[union-attr]
    assert mixture_for(JobConfig(dataset="poisson1d")) is None
    assert mixture_for(JobConfig(dataset="shapes")) is None


@pytest.mark.parametrize("name,k", [("ring8", 8), ("grid25", 25), ("gauss1d", 1), ("bimodal1d", 2),
                                    ("trimodal1d", 3)])
def test_real_samples_cover_every_mode(name: str, k: int) -> None:
    mix = mixture_for(JobConfig(dataset=name))
    assert mix is not None
    for seed in range(5):   # robust at a few hundred samples, not just one lucky draw
        covered, quality = mode_stats(mix.sample(300, gen(seed)), mix)
        assert covered == k
        assert quality > 0.97   # 3 sigma holds 99.7% in 1-D, 98.9% in 2-D


def test_collapse_to_one_mode() -> None:
    mix = mixture_for(JobConfig(dataset="ring8"))
    assert mix is not None
    samples = mix.centers[3] + mix.sigma * torch.randn(500, 2, generator=gen(0))
    covered, quality = mode_stats(samples, mix)
    assert covered == 1 and quality > 0.95


def test_a_few_strays_do_not_cover_a_mode() -> None:
    """Two modes get a fair share; a third gets 2 of 400 samples, below 20% of the uniform share."""
    mix = mixture_for(JobConfig(dataset="trimodal1d"))
    assert mix is not None
    x = torch.cat([torch.full((199,), -4.0), torch.full((199,), 0.0), torch.full((2,), 4.0)])
    assert mode_stats(x, mix) == (2, 1.0)


def test_far_away_and_nonfinite_samples_score_zero() -> None:
    mix = mixture_for(JobConfig(dataset="grid25"))
    assert mix is not None
    far = torch.full((200, 2), 1.0)       # between grid points: 1.0 away from every mode, 20 sigma
    assert mode_stats(far, mix) == (0, 0.0)
    bad = torch.full((50, 2), float("nan"))
    assert mode_stats(bad, mix) == (0, 0.0)
    half = torch.cat([mix.sample(100, gen(0)), torch.full((100, 2), float("inf"))])
    covered, quality = mode_stats(half, mix)
    assert 0.45 < quality <= 0.5 and covered > 0


def finite_numbers(obj: object) -> bool:
    if isinstance(obj, dict):
        return all(finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(finite_numbers(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return obj is None or isinstance(obj, (int, str))


def test_density_payload_1d() -> None:
    mix = mixture_for(JobConfig(dataset="gauss1d"))
    assert mix is not None
    real = mix.sample(1000, gen(0))
    fake = torch.randn(1000, 1, generator=gen(1))       # G far off: N(0, 1)
    calls: list[torch.Tensor] = []

    def d_fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x)
        return torch.sigmoid(x - 2.0)                    # a D that says "real" to the right of 2

    p = density_payload(real, fake, d_fn, mix, dim=1)
    assert set(p) == {"dim", "x", "real_density", "fake_density", "d_output"}
    assert p["dim"] == 1
    n = len(p["x"])
    assert 50 <= n <= 200 and len(p["real_density"]) == n == len(p["fake_density"]) == len(p["d_output"])
    assert calls[0].shape == (n, 1) and calls[0].dtype == torch.float32
    xs = p["x"]
    assert xs == sorted(xs) and xs[0] < -2.0 and xs[-1] > 4.5   # the grid spans both clouds
    width = xs[1] - xs[0]
    for key in ("real_density", "fake_density"):
        assert abs(sum(p[key]) * width - 1.0) < 0.02          # densities integrate to 1
    # Real density peaks near 4, fake near 0; D follows d_fn on the grid.
    assert abs(xs[max(range(n), key=lambda i: p["real_density"][i])] - 4.0) < 0.3
    assert abs(xs[max(range(n), key=lambda i: p["fake_density"][i])]) < 0.6
    assert p["d_output"][0] < 0.05 and p["d_output"][-1] > 0.9
    json.dumps(p, allow_nan=False)
    assert finite_numbers(p)


def test_density_payload_1d_survives_diverged_generator() -> None:
    mix = mixture_for(JobConfig(dataset="gauss1d"))
    assert mix is not None
    real = mix.sample(500, gen(0))
    fake = torch.cat([torch.full((10, 1), float("nan")), torch.full((10, 1), 1e9), torch.zeros(480, 1)])
    p = density_payload(real, fake, lambda x: torch.where(x > 3, float("nan"), 0.5).squeeze(1), mix, dim=1)
    # The 1e9 outliers do not stretch the grid so far that the real peak vanishes into one bin.
    assert p["x"][-1] < 100
    assert max(p["real_density"]) > 0.3
    assert None in p["d_output"]                 # NaN from D travels as None
    json.dumps(p, allow_nan=False)
    assert finite_numbers(p)


def test_density_payload_2d() -> None:
    mix = mixture_for(JobConfig(dataset="ring8"))
    assert mix is not None
    real = mix.sample(800, gen(0))
    fake = torch.randn(700, 2, generator=gen(1)) * 0.5
    fake[0, 0] = float("inf")

    def d_fn(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x[:, 0:1])               # (M, 1): D increases with x

    p = density_payload(real, fake, d_fn, mix, dim=2)
    assert set(p) == {"dim", "real", "fake", "modes", "sigma", "d_grid"}
    assert p["dim"] == 2 and p["sigma"] == 0.02
    assert len(p["real"]) == 500 and len(p["fake"]) == 500
    assert all(len(pt) == 2 for pt in p["real"] + p["fake"])
    assert p["real"][0] == [round(v, 4) for v in real[0].tolist()]
    assert p["fake"][0][0] is None                   # inf became None
    assert len(p["modes"]) == 8
    grid = p["d_grid"]
    nx, ny = len(grid["x"]), len(grid["y"])
    assert 30 <= nx <= 60 and nx == ny and len(grid["z"]) == ny and all(len(r) == nx for r in grid["z"])
    assert grid["x"][0] < -2.0 and grid["x"][-1] > 2.0     # spans the ring
    # z[i][j] is D at (x[j], y[i]): along a row D grows with x, down a column it is constant.
    row = grid["z"][ny // 2]
    assert row[0] < row[-1]
    col = [grid["z"][i][0] for i in range(ny)]
    assert max(col) - min(col) < 1e-6
    json.dumps(p, allow_nan=False)
    assert finite_numbers(p)


def test_density_payload_2d_without_mixture() -> None:
    real = torch.randn(50, 2, generator=gen(0))
    p = density_payload(real, real.clone(), lambda x: torch.full((x.shape[0],), 0.5), None, dim=2)
    assert p["modes"] == [] and p["sigma"] is None and len(p["real"]) == 50
    json.dumps(p, allow_nan=False)


def test_mixture_dataclass_is_plain() -> None:
    m = Mixture(centers=torch.zeros(2, 1), sigma=1.0)
    assert m.k == 2 and m.dim == 1
    assert m.sample(10, gen(0)).shape == (10, 1)
