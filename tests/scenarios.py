"""The labelled scenario corpus: real trainer runs that provoke each failure signature, and healthy ones.

Shared by tests/test_detectors_scenarios.py (a quick corpus) and bench/detect.py (a fuller one).
Each run trains in-process with a sink that hands every metrics flush to the detector engine —
the same batches, as numpy arrays, that the worker posts and ingest passes to the hook.

Every recipe was measured on this trainer (tiny nets, CPU); `why` says what the recipe does and,
where the literature's recipe did not reproduce at this size, what does instead.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganscope.server.detectors.engine import RunDetector
from ganscope.server.detectors.rules import Context, weight_layers
from ganscope.trainer.config import JobConfig
from ganscope.trainer.loop import train
from ganscope.trainer.sink import MemorySink

Metrics = dict[str, tuple[np.ndarray, np.ndarray]]
TOY = {"toy_hidden": 32, "batch_size": 32, "toy_every": 20}
IMG = {"dataset": "shapes", "image_size": 16, "ngf": 8, "ndf": 8, "batch_size": 16, "sample_every": 10_000}
COMMON = {"checkpoint_every": 100_000, "device": "cpu"}
D_WINS = {"lr_d": 2e-3, "lr_g": 1e-5, "d_steps": 3}  # the recipe: D learns 200x faster, 3 steps per G step
# Image collapse: G without batch norm (with it, G's first layer has no bias and batch norm rescales W·z to unit
# spread, so its outputs cannot stop depending on z), a one-dimensional z, leaky ReLUs (no unit can die: the
# spread shrinks with G's gradient alive), G at half D's lr.
IMG_COLLAPSE = {"batch_norm": False, "g_act": "leaky_relu", "nz": 1, "lr_g": 1e-4}


# --- onsets: when the failure is first visible in the raw metrics (no persistence) ---------------------

def _first(steps: np.ndarray, cond: np.ndarray) -> int | None:
    idx = np.flatnonzero(cond)
    return int(steps[idx[0]]) if idx.size else None


def start(m: Metrics) -> int | None:
    """Failures the config causes from the first step (init, widths, a frozen D)."""
    return min(int(s[0]) for s, _ in m.values() if s.size)


def d_wins(m: Metrics) -> int | None:
    s, ld = m["loss/d"]
    return _first(s, (ld < 0.05) & (m["pred/fake"][1] < 0.02))


def any_nonfinite(m: Metrics) -> int | None:
    firsts = [_first(s, ~np.isfinite(v)) for s, v in m.values()]
    return min((f for f in firsts if f is not None), default=None)


def g_grad_gone(m: Metrics) -> int | None:
    """G's first layer gets no gradient, or (minimax) D(G(z)) scales it below 1%."""
    first = weight_layers(m, "grad", "g", Context())[0]
    cands = [_first(m[first][0], m[first][1] == 0)]
    if "pred/fake_g" in m:
        cands.append(_first(m["pred/fake_g"][0], m["pred/fake_g"][1] < 0.01))
    return min((c for c in cands if c is not None), default=None)


def grad_over_100(m: Metrics) -> int | None:
    firsts = [_first(s, v > 100) for n, (s, v) in m.items() if n.startswith("grad/")]
    return min((f for f in firsts if f is not None), default=None)


def local_level(v: np.ndarray, k: int = 11) -> np.ndarray:
    """A rolling median over k points: the series' level, which one outlying point does not move."""
    pad = np.pad(v, (k // 2, k // 2), mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(pad, k), axis=1)


def collapsed(modes_total: int | None) -> Callable[[Metrics], int | None]:
    """Past G's first 150 steps (it starts as a near-constant map): the spread's level under 1% of the real
    batch's — all samples one point or one image — or good samples on <= half the modes. The level, not a
    single batch: an image collapse decays over ~100 steps, and one batch of 16 dips below the line
    tens of steps before the rest do."""
    def onset(m: Metrics) -> int | None:
        s, d = m["sample/diversity"]
        cands = [_first(s, (s >= 150) & (local_level(d) < 0.01))]
        if modes_total and "toy/modes" in m:
            ts, modes = m["toy/modes"]
            q = m["toy/quality"][1]
            cands.append(_first(ts, (ts >= 150) & (modes >= 1) & (modes <= modes_total // 2) & (q >= 0.5)))
        return min((c for c in cands if c is not None), default=None)
    return onset


def fit_stalled(m: Metrics) -> int | None:
    """Past G's first 200 steps: the first evaluation by which toy/quality has stayed under 0.2 (most of G's
    samples more than 3σ from every mode) for 300 steps without rising by 0.02 over its level before them."""
    s, q = m["toy/quality"]
    for t in s[s >= 500]:
        w = (s > t - 300) & (s <= t)
        before = (s >= 200) & (s <= t - 300)
        if q[w].max() < 0.2 and q[w].max() <= (q[before].max() if before.any() else 0.0) + 0.02:
            return int(t)
    return None


def loss_spikes(m: Metrics) -> int | None:
    """The first of recurring spikes: three steps within 50 whose loss/d is a nat above its 11-step median."""
    s, v = m["loss/d"]
    at = s[(v - local_level(v) > 1.0) & (s >= 50)]
    for k in at:
        if np.sum((at >= k) & (at < k + 50)) >= 3:
            return int(k)
    return None


# --- the corpus ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    name: str
    config: dict[str, Any]
    expect: tuple[str, ...] = ()  # signatures that must be flagged; () for a healthy run
    onset: Callable[[Metrics], int | None] = start
    why: str = ""
    other_onsets: tuple[tuple[str, Callable[[Metrics], int | None]], ...] = ()  # per-signature, when they differ

    def job(self, seed: int | None = None) -> JobConfig:
        return JobConfig(**{**COMMON, **self.config, **({"seed": seed} if seed is not None else {})})


def healthy(name: str, config: dict[str, Any], why: str) -> Scenario:
    return Scenario(name, config, (), start, why)


QUICK: tuple[Scenario, ...] = (
    Scenario("ring8_no_fit", {**TOY, "dataset": "ring8", "steps": 600}, ("quality_stalled",), fit_stalled,
             "DCGAN's defaults with these small MLPs (32 units, batch 32) never fit the ring (σ = 0.02): no sample "
             "within 3σ of a mode in 600 steps (nor in 2,500, nor with 128 units and batch 256 over 1,500), while "
             "D's loss looks ordinary (0.6–1.0). The corpus called this run healthy until fit measures said "
             "otherwise"),
    healthy("grid25_healthy", {**TOY, "dataset": "grid25", "steps": 400},
            "DCGAN defaults on the 5x5 grid over its first 400 steps: G spreads over the grid and starts landing "
            "samples on modes (toy/quality 0 → 0.3), too early for a verdict on its fit. Left longer, these small "
            "MLPs stall short of the grid (1–3 of 25 modes at 0.35 by step 500–600 depending on the seed, 0 by "
            "step 2,000): bench/detect.py's grid25_no_fit"),
    healthy("trimodal_healthy", {**TOY, "dataset": "trimodal1d", "toy_hidden": 64, "batch_size": 64,
                                 "lr_d": 1e-3, "lr_g": 1e-3, "steps": 500}, "covers all three modes"),
    healthy("gauss1d_equilibrium", {**TOY, "dataset": "gauss1d", "batch_size": 64, "lr_d": 1e-3, "lr_g": 1e-3,
                                    "steps": 500},
            "G fits N(4, 0.4) by step ~250 (toy/quality 0.95–1.0, spread ≈ the data's) and D sits at chance, "
            "flat (loss/d IQR < 0.001, |D(x) − D(G(z))| < 0.001): the equilibrium GANs aim for, which "
            "d_not_learning called failing before it read the fit"),
    healthy("shapes_healthy", {**IMG, "steps": 300}, "DCGAN defaults, 16px"),
    Scenario("ring8_d_wins", {**TOY, "dataset": "ring8", **D_WINS, "steps": 150}, ("d_overpowering",), d_wins,
             "the issue's recipe: lr_d 2e-3, lr_g 1e-5, 3 D steps per G step"),
    Scenario("shapes_d_wins", {**IMG, **D_WINS, "steps": 150}, ("d_overpowering",), d_wins, "same recipe on images"),
    Scenario("shapes_minimax_d_wins", {**IMG, **D_WINS, "lr_g": 2e-4, "loss": "minimax", "steps": 150},
             ("vanishing_g_grad", "d_overpowering"), g_grad_gone,
             "minimax G loss against a winning D: G's gradient is scaled by D(G(z)) → 0 (Goodfellow et al. 2014). "
             "The issue's init_std 1.0 recipe did not vanish G's gradient here: batch norm rescales it, and "
             "without batch norm it explodes instead"),
    Scenario("ring8_nonfinite", {**TOY, "dataset": "ring8", "toy_layers": 8, "toy_hidden": 64, "init_std": 10.0,
                                 "steps": 50}, ("nonfinite",), any_nonfinite,
             "extreme init of a deep MLP: G's gradient norms overflow float32 to Inf at step 1 (lr 1.0 does "
             "not produce NaN with Adam, whose step is bounded by lr)"),
    Scenario("ring8_exploding", {**TOY, "dataset": "ring8", "init_std": 3.0, "steps": 60},
             ("exploding_grad", "poor_init"), grad_over_100, "N(0, 3) init: gradient norms of 1e7 from step 1"),
    Scenario("bimodal_collapse", {**TOY, "dataset": "bimodal1d", "toy_hidden": 64, "batch_size": 64,
                                  "lr_d": 1e-3, "lr_g": 1e-3, "steps": 350}, ("mode_collapse",), collapsed(2),
             "G settles on one of the two modes (quality ~1.0, spread ~0.2 of the data's)"),
    Scenario("bimodal_collapse_calm_d", {**TOY, "dataset": "bimodal1d", "g_steps": 5, "lr_g": 1e-3, "steps": 400},
             ("mode_collapse",), collapsed(2),
             "5 G steps per D step: G sits on one mode while loss/d stays at 2·ln 2 — the losses look ideal"),
    Scenario("shapes_collapse", {**IMG, **IMG_COLLAPSE, "steps": 450}, ("mode_collapse",), collapsed(None),
             "G without batch norm, z of one dimension, lr_g half of D's: its spread rises to ~0.03 of the real "
             "batch's by step ~200, then, D ahead (loss/d ~0.1; shapes_healthy 0.15–0.3), every z is drawn to the "
             "same near-flat grey image — spread 0.001–0.006 from step ~300 (9 of 10 seeds), G's gradient alive. "
             "A DCGAN whose output no longer depends on z draws only what its biases give through transposed "
             "convolutions (flat colour, edge and checkerboard marks), so a fully collapsed 16px G draws a flat "
             "image. With batch norm the same recipe kept 0.30–0.66, and g_steps 3–5, lr_g up to 2e-2, beta1 0.9 "
             "or nz 1–2 kept ≥ 0.19: no image collapse"),
    Scenario("ring8_oscillation", {**TOY, "dataset": "ring8", "lr_d": 1e-3, "lr_g": 1e-3, "beta1": 0.9,
                                   "steps": 500}, ("oscillation",), loss_spikes,
             "beta1 0.9 (DCGAN found 0.5 needed for stability) with lr 1e-3: D's loss spikes by nats repeatedly"),
    Scenario("shapes_frozen_d", {**IMG, "lr_d": 1e-7, "steps": 120}, ("d_not_learning",), start,
             "lr_d 1e-7: D's weights do not move"),
    Scenario("ring8_d_at_chance", {**TOY, "dataset": "ring8", "lr_g": 3e-3, "lr_d": 1e-4, "steps": 120},
             ("d_not_learning",), start,
             "the issue's mode-collapse recipe (lr_g 3e-3, lr_d 1e-4): on these MLPs D never leaves chance — "
             "loss/d frozen at 2·ln 2, D(x) = D(G(z)) — while G wanders, not collapses"),
    Scenario("shapes_init_1", {**IMG, "init_std": 1.0, "steps": 60}, ("poor_init",), start,
             "N(0, 1) weights instead of DCGAN's N(0, 0.02)"),
    Scenario("shapes_tiny_g", {**IMG, "ngf": 1, "ndf": 64, "steps": 60}, ("capacity_imbalance",), start,
             "G with ngf 1 against D with ndf 64: 3.3k against 137k parameters"),
)


@dataclass
class DetectingSink(MemorySink):
    """A MemorySink that judges every flush as ingest would: same batch, numpy int64/float64."""

    config: dict[str, Any] = field(default_factory=dict)
    judge_s: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.det = RunDetector(self.config)

    def on_metrics(self, series: dict[str, tuple[list[int], list[float]]]) -> None:
        super().on_metrics(series)
        batch = {n: (np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64)) for n, (s, v) in series.items()}
        t = time.perf_counter()
        self.det.feed(batch)
        self.judge_s += time.perf_counter() - t


@dataclass
class Outcome:
    scenario: Scenario
    seed: int | None
    fired: dict[str, int]  # signature -> step at which it was first flagged
    severities: dict[str, str]
    onsets: dict[str, int | None]  # expected signature -> step its symptom first shows in the raw metrics
    seconds: float
    judge_s: float
    metrics: Metrics

    @property
    def onset(self) -> int | None:
        return self.onsets.get(self.scenario.expect[0]) if self.scenario.expect else self.onsets.get("")

    def delay(self, sig: str) -> int | None:
        if sig not in self.fired or self.onsets.get(sig) is None:
            return None
        return max(0, self.fired[sig] - self.onsets[sig])


def run(sc: Scenario, seed: int | None = None) -> Outcome:
    cfg = sc.job(seed)
    sink = DetectingSink(config=cfg.model_dump(mode="json"))
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as wd:
        train(cfg, sink, wd)
    seconds = time.perf_counter() - t
    metrics = {n: (np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64)) for n, (s, v) in sink.metrics.items()}
    fired = sink.det.fired()
    sev = {a.signature: a.severity for a in sink.det.history}
    special = dict(sc.other_onsets)
    onsets = {sig: special.get(sig, sc.onset)(metrics) for sig in sc.expect} or {"": sc.onset(metrics)}
    return Outcome(sc, seed, fired, sev, onsets, seconds, sink.judge_s, metrics)

