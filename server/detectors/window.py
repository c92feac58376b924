"""What the rules share: windows of metrics, the run's context, findings, and the persistence test.

A window is {name: (steps int64, values float64)} with increasing steps. `held` is the one
persistence test every rule uses: a condition must hold at `hold_frac` of the points of the
last `window` steps — a transient dip is not a failure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganscope.server.detectors import arch as arch_mod
from ganscope.server.detectors.catalog import TOY_MODES, thresholds_for

Series = tuple[np.ndarray, np.ndarray]  # (steps int64, values float64), increasing steps
Window = Mapping[str, Series]
MIN_POINTS = 3  # fewer points than this never make a verdict


BCE_LOSSES = ("nonsaturating", "minimax", "bce")  # D's output is a probability: pred/* and 2·ln 2 apply
HINGE_LOSSES = ("hinge",)
WASSERSTEIN_LOSSES = ("wgan", "wgan_gp")
ONSET = "{first_step}"  # stands for an alert's onset in a Finding's message (filled by Finding.message)


@dataclass
class Context:
    """What the rules need from a run's config (server/detectors must not depend on the trainer).

    Worker jobs store the full JobConfig, so every field is known. SDK runs store only what the user
    declared: an absent `loss` or `loss_d_reduction` is unknown (None), never the trainer's default.
    """

    label_smoothing: float = 1.0
    loss: str | None = "nonsaturating"  # None: not declared (SDK)
    reduction: str | None = "sum"  # how loss/d combines its real and fake terms: "sum" | "mean" | None (unknown)
    init: str = "normal"
    init_std: float = 0.02
    n_modes: int | None = None  # toy mixtures: mode count; None for images and poisson1d
    is_toy: bool = False
    kind: str = "job"  # "job" (the built-in trainer) | "sdk" (the user's own script)
    arch: dict[str, dict[str, arch_mod.Layer]] | None = None  # layer sizes of the trainer's nets
    layers: dict[str, list[str]] | None = None  # declared layer order {"g": [...], "d": [...]}, input side first
    open: frozenset[str] = frozenset()  # signatures with an open alert (the engine sets it before each rule)
    quality: dict[str, float] | None = None  # quality_stalled's thresholds (with the job's overrides): trends
    memo: dict = field(default_factory=dict, repr=False)  # per-run cache of derived name lists

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, kind: str = "job") -> "Context":
        cfg = cfg or {}
        ds = str(cfg.get("dataset", "shapes" if kind == "job" else ""))
        loss = cfg.get("loss", "nonsaturating" if kind == "job" else None)
        red = cfg.get("loss_d_reduction")
        if red not in ("sum", "mean"):
            red = "sum" if kind == "job" else None  # the built-in trainer logs the sum (docs/metrics.md)
        raw_layers = cfg.get("layers")
        layers = None
        if isinstance(raw_layers, Mapping):
            layers = {net: [str(n) for n in names] for net, names in raw_layers.items()
                      if net in ("g", "d") and isinstance(names, (list, tuple)) and names} or None
        try:
            smoothing = float(cfg.get("label_smoothing", 1.0))
            init_std = float(cfg.get("init_std", 0.02))
        except (TypeError, ValueError):
            smoothing, init_std = 1.0, 0.02
        return cls(label_smoothing=smoothing, loss=None if loss is None else str(loss), reduction=red,
                   init=str(cfg.get("init", "normal")), init_std=init_std, n_modes=TOY_MODES.get(ds),
                   is_toy=ds in TOY_MODES or ds == "poisson1d", kind=kind,
                   arch=arch_mod.layers(cfg) if kind == "job" else None, layers=layers)

    def quality_th(self) -> dict[str, float]:
        """The thresholds every quality trend and fit reading uses (quality_stalled's, overrides applied)."""
        if self.quality is None:
            self.quality = thresholds_for("quality_stalled", None)
        return self.quality

    def family(self, window: "Window") -> str:
        """"bce" | "hinge" | "wasserstein" | "unknown": the scale D's loss and outputs are on.

        Undeclared (SDK): D's probabilities (pred/*) logged mean a BCE-family loss; raw scores (score/*)
        without probabilities mean a critic whose scale the BCE rules must not read."""
        if self.loss in BCE_LOSSES:
            return "bce"
        if self.loss in HINGE_LOSSES:
            return "hinge"
        if self.loss in WASSERSTEIN_LOSSES:
            return "wasserstein"
        if self.loss is None:
            if "pred/real" in window or "pred/fake" in window:
                return "bce"
            if "score/real" in window or "score/fake" in window:
                return "unknown"
            return "bce"  # loss/d alone: most users' scripts; evidence says the loss was assumed
        return "unknown"


@dataclass
class Finding:
    signature: str
    first_step: int  # onset: where the condition started to hold (the dashboard shades first..last)
    last_step: int
    template: str  # the message; ONSET in it stands for the onset, so an alert's own first_step fills it
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None  # None: the catalog's severity

    @property
    def message(self) -> str:
        return self.template.replace(ONSET, str(self.first_step))

    def at_onset(self, first_step: int) -> "Finding":
        """The same finding told from an alert's onset: its message and evidence window agree with it."""
        ev = dict(self.evidence)
        if "window" in ev:
            ev["window"] = [int(first_step), int(self.last_step)]
        return Finding(self.signature, int(first_step), self.last_step, self.template, ev, self.severity)


# --- helpers -----------------------------------------------------------------------------------

_NOT_WEIGHT_LAYER = re.compile(r"(^|[._])(bn|norm|mbd|pool)", re.IGNORECASE)


def layer_names(window: Window, prefix: str, memo: dict | None = None) -> list[str]:
    """Metric names under `prefix` in natural order (a layer index in the name orders layers).

    A run's names rarely change, so with a `memo` (Context.memo) the sorted list is kept per window
    and name count instead of being rebuilt on every batch.
    """
    key = ("layers", id(window), len(window), prefix)
    if memo is not None and key in memo:
        return memo[key]

    def natural(name: str) -> list[Any]:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name[len(prefix):])]
    names = sorted((n for n in window if n.startswith(prefix) and window[n][0].size), key=natural)
    if memo is not None:
        memo[key] = names
    return names


def weight_layers(window: Window, kind: str, net: str, ctx: "Context") -> list[str]:
    """`kind/net/<layer>` names of the conv/linear layers in forward order, first to last.

    The order, first found: the run's declared `layers` (config, registration order: SDK runs), the
    trainer's architecture (arch.py), else the natural order of the names (an index in a name orders
    layers: `main.0` … `main.12`); normalisation and minibatch-discrimination layers are left out.
    """
    key = ("weights", id(window), len(window), kind, net)
    if key in ctx.memo:
        return ctx.memo[key]
    prefix = f"{kind}/{net}/"
    names: list[str] = []
    if ctx.layers is not None and net in ctx.layers:
        names = [prefix + n for n in ctx.layers[net]
                 if get(window, prefix + n) is not None and not _NOT_WEIGHT_LAYER.search(n)]
    if not names and ctx.arch is not None and net in ctx.arch:
        names = [prefix + n for n, L in ctx.arch[net].items() if L.kind in ("conv", "fc")]
        names = [n for n in names if get(window, n) is not None]
    if not names:
        names = [n for n in layer_names(window, prefix) if not _NOT_WEIGHT_LAYER.search(n[len(prefix):])]
    ctx.memo[key] = names
    return names


def get(window: Window, name: str) -> Series | None:
    s = window.get(name)
    return s if s is not None and s[0].size else None


def align(*series: Series) -> tuple[np.ndarray, list[np.ndarray]]:
    """Restrict several series to their common steps."""
    steps = series[0][0]
    # Fast path: series logged together (one probe row per step) share their steps array (the engine
    # merges a group's steps once), or at least equal steps.
    if all(s is steps or (s.size == steps.size and not (s != steps).any()) for s, _ in series[1:]):
        return steps, [v for _, v in series]
    for s, _ in series[1:]:
        steps = np.intersect1d(steps, s, assume_unique=True)
    return steps, [v[np.searchsorted(s, steps)] for s, v in series]


def early_level(early: Window, name: str, early_steps: float) -> float | None:
    """Median of the finite values of `name` over the run's first `early_steps` steps."""
    s = get(early, name)
    if s is None:
        return None
    steps, v = s
    v = v[(steps < steps[0] + early_steps) & np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def held(steps: np.ndarray, cond: np.ndarray, window: float, hold_frac: float,
         min_points: int = MIN_POINTS, cadence: float = 1.0) -> tuple[bool, int, float]:
    """Did `cond` hold at >= hold_frac of the points of the last `window` steps (window covered)?

    `cadence`: the steps each point stands for (1 for per-step series; evaluations made every N steps
    stand for N), so two evaluations N apart cover a window of 2N.
    Returns (held, onset step, fraction in window). The onset is the earliest step from which the
    condition held at >= hold_frac of the points up to now: where the dashboard starts the shaded span.
    """
    if steps.size < min_points:
        return False, -1, 0.0
    end = int(steps[-1])
    i = int(np.searchsorted(steps, end - window, side="right"))  # the window: steps > end - window
    n = steps.size - i
    if n < min_points or (end - int(steps[i]) + cadence) < 0.8 * window:
        return False, -1, 0.0  # too few points, or not enough of the window seen yet
    frac = float(np.count_nonzero(cond[i:])) / n
    if frac < hold_frac:
        return False, -1, frac
    rc = cond[::-1]
    share = np.cumsum(rc) / np.arange(1, rc.size + 1)
    ok = np.flatnonzero((share >= hold_frac) & rc)
    onset = int(steps[::-1][ok[-1]]) if ok.size else int(steps[i])
    return True, onset, frac


def stat(v: np.ndarray) -> dict[str, float]:
    f = v[np.isfinite(v)]
    if not f.size:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": float(np.median(f)), "min": float(f.min()), "max": float(f.max())}


def tail(steps: np.ndarray, v: np.ndarray, end: int, window: float) -> np.ndarray:
    """The values of the last `window` steps up to `end` (steps > end - window)."""
    return v[int(np.searchsorted(steps, end - window, side="right")):]


def bce_floor(label_smoothing: float) -> float:
    """Smallest D loss reachable with a one-sided real target s: the entropy of Bernoulli(s)."""
    s = min(max(label_smoothing, 1e-12), 1.0)
    return 0.0 if s >= 1.0 else -(s * math.log(s) + (1 - s) * math.log(1 - s))
