"""Fit and quality measures: which way is better, the lines that say "matches" and "does not", trends.

The detectors that read quality (mode_collapse, d_not_learning, d_overpowering, quality_stalled) and
the learning verdict (verdict.py) share this module. Evaluations are sparse (every `eval_every` or
`toy_every` steps) and noisy (KID on a few hundred samples, mode counts on one batch), so a level is
the median of the last three evaluations and a trend is a Theil–Sen slope (the median of pairwise
slopes, robust to a wild evaluation) over the last few, compared with a tolerance that grows with the
series' own evaluation-to-evaluation noise. Pure numpy, no state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganscope.server.detectors.window import Context, Series, Window, align, get

LEVEL_EVALS = 3  # a level is the median of this many evaluations: one noisy evaluation never decides


@dataclass(frozen=True)
class Measure:
    name: str
    higher_better: bool
    ratio: bool  # an unbounded distance (KID, FID, toy/fit): changes are judged as ratios, not differences
    good: float | None  # at or past this line G matches the data on this measure
    bad: float | None  # at or past this line (on the wrong side) G clearly does not
    why: str
    total: str | None = None  # a count judged as a fraction of: a metric name, or "modes" (the toy set's)

    def is_good(self, x: float) -> bool:
        return self.good is not None and (x >= self.good if self.higher_better else x <= self.good)

    def is_bad(self, x: float) -> bool:
        return self.bad is not None and (x <= self.bad if self.higher_better else x >= self.bad)


M = Measure
MEASURES: tuple[Measure, ...] = (
    M("toy/fit", False, True, 0.3, 1.0,
      "The trainer's scale-free distance between real and generated toy samples, in units of the data's "
      "standard deviation (docs/metrics.md). 0.3 is its documented good-fit line (real against real stays "
      "under 0.1; a G shifted by a tenth of a standard deviation reads 0.1–0.26); past 1.0 G is a whole "
      "standard deviation off — collapsing bimodal1d onto one of its modes reads about 1 or more."),
    M("toy/modes", True, False, 0.9, 0.5,
      "Modes holding a fair share of G's good samples, as a fraction of the mixture's modes (PacGAN's and "
      "VEEGAN's count). All but a tenth is a match; half or fewer lost is a failure (bimodal on one mode, "
      "a ring of 8 on four).", total="modes"),
    M("toy/quality", True, False, 0.6, 0.2,
      "Fraction of G's samples within 3σ of a mode; real data scores 0.99 (2-D) to 0.997 (1-D). Healthy "
      "small MLPs on trimodal1d measured 0.6–0.95 once they covered every mode; under 0.2 most of G's mass "
      "lies between or away from the modes."),
    M("quality/kid", False, True, None, None,
      "Kernel Inception Distance (Bińkowski et al. 2018): unbiased on small samples, so its trend is "
      "preferred to FID's. Its level depends on the feature extractor (an operator's Inception weights or "
      "the offline fallback): judged only as a trend, never against a fixed line."),
    M("quality/fid", False, True, None, None,
      "Fréchet Inception Distance (Heusel et al. 2017): biased on small samples and extractor-dependent, "
      "judged only as a trend."),
    M("quality/coverage", True, False, 0.7, 0.25,
      "Share of real samples with a generated one among their k nearest real neighbours (Naeem et al. "
      "2020): real against real scores about 0.97 with k = 5. Under a quarter, G misses most of the data."),
    M("quality/recall", True, False, 0.5, 0.1,
      "Share of real samples inside the generated manifold (Kynkäänniemi et al. 2019). Under 0.1 G covers "
      "almost none of the data (collapse or garbage)."),
    M("quality/precision", True, False, 0.5, 0.1,
      "Share of generated samples inside the real manifold (Kynkäänniemi et al. 2019). Under 0.1 almost "
      "nothing G draws looks like the data."),
    M("quality/recognisable", True, False, 0.5, 0.15,
      "Share of generated `shapes` images the reference classifier labels with confidence 0.8 on both of "
      "its reliable heads (background, colour). Real renders score about 0.64 (each quality snapshot "
      "records it as real_recognisable), so half is close to the data; under 0.15 G draws mostly "
      "unrecognisable images."),
    M("quality/modes", True, False, 0.9, 0.5,
      "`shapes` attribute classes G produces in fair share, as a fraction of the classes counted: losing "
      "half of them is a collapse, the same line as on the toy mixtures.", total="quality/modes_total"),
)
BY_NAME = {m.name: m for m in MEASURES}
# The measure a trend (quality_stalled, the learning verdict) follows, first present wins: the toy sets'
# distance first; on `shapes` the reference classifier's recognisable share (the dataset's own ground truth:
# with the offline extractor KID moved 16 → 14 while recognisable went 0 → 0.62, bench.detect's demo run);
# then distances and diversity-aware image measures; then the toy sets' sample quality.
PRIMARY = ("toy/fit", "quality/recognisable", "quality/kid", "quality/fid", "quality/coverage", "quality/recall",
           "quality/modes", "toy/quality")
# Sparse series the engine keeps by count, not by step (evaluations can be thousands of steps apart).
PREFIXES = ("quality/", "toy/")


def values(window: Window, m: Measure, ctx: Context) -> Series | None:
    """The measure's evaluations, as a fraction of their total where it has one; finite points only."""
    s = get(window, m.name)
    if s is None:
        return None
    steps, v = s
    if m.total == "modes":
        if not ctx.n_modes:
            return None
        v = v / float(ctx.n_modes)
    elif m.total is not None:
        t = get(window, m.total)
        if t is None:
            return None
        steps, (v, tv) = align(s, t)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(tv > 0, v / tv, np.nan)
    ok = np.isfinite(v)
    if not ok.all():
        steps, v = steps[ok], v[ok]
    return (steps, v) if steps.size else None


def _med(x: np.ndarray) -> float:
    """Median of a small array: np.median's generic machinery costs ten times the sort here."""
    s = np.sort(x, kind="stable")
    n = s.size
    return float(s[n // 2]) if n % 2 else float(0.5 * (s[n // 2 - 1] + s[n // 2]))


def level(v: np.ndarray) -> float:
    """The current level: median of the last LEVEL_EVALS evaluations."""
    return _med(v[-LEVEL_EVALS:])


@dataclass
class Fit:
    """Does G match the data? "good" | "fair" | "bad" | "unknown", with the readings that say so."""

    state: str
    readings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return self.state != "unknown"

    def worst(self) -> str | None:
        bad = [n for n, r in self.readings.items() if r["state"] == "bad"]
        return bad[0] if bad else None

    def describe(self) -> str:
        if not self.readings:
            return "no fit measure is logged"
        return ", ".join(f"{n} {r['level']:.3g} ({r['state']})" for n, r in self.readings.items())


def fit(window: Window, ctx: Context) -> Fit:
    """Bad when any measure with lines is past its bad line; good when every one is past its good line.

    Only evaluations after the quality `warmup_steps` count: a G fresh from its init matches nothing yet,
    and calling that a bad fit would condemn every young run."""
    key = ("fit", *(int(window[m.name][0][-1]) if get(window, m.name) is not None else -1 for m in MEASURES))
    warmup = ctx.quality_th()["warmup_steps"]
    hit = ctx.memo.get("fit")
    if hit is not None and hit[0] == key:
        return hit[1]
    readings: dict[str, dict[str, Any]] = {}
    for m in MEASURES:
        if m.good is None and m.bad is None:
            continue
        s = values(window, m, ctx)
        if s is None:
            continue
        after = s[1][s[0] >= warmup]
        if after.size < LEVEL_EVALS:
            continue  # a level needs three evaluations past warm-up: one noisy evaluation never decides
        x = level(after)
        state = "bad" if m.is_bad(x) else "good" if m.is_good(x) else "fair"
        readings[m.name] = {"level": x, "step": int(s[0][-1]), "state": state, "good": m.good, "bad": m.bad,
                            "better": "higher" if m.higher_better else "lower"}
    if not readings:
        out = Fit("unknown")
    else:
        states = {r["state"] for r in readings.values()}
        out = Fit("bad" if "bad" in states else "good" if states == {"good"} else "fair", readings)
    ctx.memo["fit"] = (key, out)
    return out


@dataclass
class Trend:
    verdict: str  # "improving" | "stalled" | "regressing" | "unknown"
    metric: str | None
    evaluations: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        e = self.evidence
        if self.metric is None:
            return "no quality or fit measure is logged"
        if self.verdict == "unknown":
            return f"{self.metric}: {self.evaluations} evaluation(s), too few to judge a trend"
        return (f"{self.metric} {e['recent']['value']:.3g} at step {e['recent']['step']} (best {e['best']['value']:.3g} "
                f"at step {e['best']['step']}; {e['span_evals']} evaluations from step {e['window'][0]}: "
                f"{e['change_text']})")


def primary(window: Window, ctx: Context) -> Measure | None:
    for name in PRIMARY:
        m = BY_NAME[name]
        if get(window, name) is not None and (m.total != "modes" or ctx.n_modes):
            return m
    return None


def _better(v: np.ndarray, m: Measure) -> np.ndarray:
    """Values on a scale where up is better and a step of 0.1 means the same everywhere on it."""
    if m.ratio:
        return -np.log(np.maximum(v, 1e-12))
    return v if m.higher_better else -v


def _levels(y: np.ndarray) -> np.ndarray:
    """The level after each evaluation: the median of it and the two before (the first ones padded with
    the first value). A median of three is sum − max − min, vectorised (np.median per window is ~50× slower)."""
    p = np.concatenate((np.full(LEVEL_EVALS - 1, y[0]), y))
    a, b, c = p[:-2], p[1:-1], p[2:]
    return a + b + c - np.maximum(np.maximum(a, b), c) - np.minimum(np.minimum(a, b), c)


def _shown(x: float, m: Measure) -> float:
    """Back from the `better` scale to the measure's own."""
    return float(math.exp(-x)) if m.ratio else (x if m.higher_better else -x)


def _theil_sen(x: np.ndarray, y: np.ndarray) -> float:
    """Median of the pairwise slopes: a straight-line trend that one wild evaluation cannot tilt."""
    i, j = np.triu_indices(x.size, k=1)
    dx = (x[j] - x[i]).astype(np.float64)
    keep = dx > 0
    return _med((y[j] - y[i])[keep] / dx[keep]) if keep.any() else 0.0


def trend(window: Window, ctx: Context, th: Mapping[str, float], m: Measure | None = None) -> Trend:
    """Is G getting better on its primary measure? Judged over the last `window_evals` evaluations.

    regressing: the current level (median of three) is worse than the best level reached by more than the
    regression tolerance, still short of the measure's good line (a wobble among good fits is no regression),
    and the last `window_evals` evaluations are not climbing back; improving: the
    robust slope over the window gains more than the tolerance (in `better` units: a log ratio for
    distances, an absolute fraction otherwise); stalled: neither.
    Both tolerances grow with the series' own noise (robustly, from its second differences).
    """
    m = m or primary(window, ctx)
    if m is None:
        return Trend("unknown", None)
    s = values(window, m, ctx)
    if s is None:
        return Trend("unknown", m.name)
    steps, v = s
    after = steps >= th.get("warmup_steps", 0)
    steps, v = steps[after], v[after]
    n = int(steps.size)
    if n < LEVEL_EVALS:
        return Trend("unknown", m.name, n)
    y = _better(v, m)
    lv = _levels(y)
    # the window: the last `window_evals` evaluations, widened to span at least `stall_steps` steps
    span = int(np.count_nonzero(steps > steps[-1] - th.get("stall_steps", 0)))
    k = int(min(max(th["window_evals"], span, 2), n))
    ws, wy = steps[-k:], y[-k:]
    slope = _theil_sen(ws, wy)
    change = slope * float(ws[-1] - ws[0])
    # The evaluations' own noise, from second differences (y[i+1] − 2y[i] + y[i−1] has 6σ² of variance for
    # white noise and cancels a steady trend, so neither a gain nor a rise-then-fall counts as noise).
    d2 = wy[2:] - 2 * wy[1:-1] + wy[:-2]
    noise = 1.4826 * _med(np.abs(d2 - _med(d2))) / math.sqrt(6) if d2.size >= 3 else 0.0
    # ratios become log ratios on the `better` scale (a 10% better KID is a gain of log 1.1); a gain must
    # also exceed what noise alone moves a fitted line by across k evaluations (σ·√(12/k)), a fall from
    # the best level three times the noise (the best of many noisy levels sits high by itself)
    tol_up = max(math.log1p(th["improve_ratio"]) if m.ratio else th["improve_abs"], noise * math.sqrt(12 / k))
    tol_down = max(math.log1p(th["regress_ratio"]) if m.ratio else th["regress_abs"], 3 * noise)
    best_i = int(np.argmax(lv))
    drop = float(lv[best_i] - lv[-1])
    if drop > tol_down and n >= th["min_evals"] and not m.is_good(_shown(float(lv[-1]), m)):
        # Fallen from its best: regressing, unless the last few evaluations are climbing back (a rise earlier
        # in a long window must not hide a fall since).
        r = int(min(th["window_evals"], n))
        back = _theil_sen(steps[-r:], y[-r:]) * float(steps[-1] - steps[-r])
        verdict = "improving" if back > tol_up else "regressing"
    elif change > tol_up:
        verdict = "improving"  # a clear gain needs only a level's worth of evaluations
    elif n < th["min_evals"]:
        return Trend("unknown", m.name, n)  # calling a stall or a regression needs more of them
    else:
        verdict = "stalled"

    def shown(x: float) -> float:
        return _shown(x, m)

    if m.ratio:  # change is a gain in −log(value): the value went down by exp(change)
        text = (f"{math.exp(change):.2f}× better" if change >= 0 else f"{math.exp(-change):.2f}× worse") + \
            " over the window"
    else:
        text = f"{change:+.3g} over the window"
    ev = {
        "metric": m.name, "better": "higher" if m.higher_better else "lower", "evaluations": n,
        "window": [int(ws[0]), int(ws[-1])], "span_evals": k,
        "first": {"step": int(steps[0]), "value": float(v[0])},
        "best": {"step": int(steps[best_i]), "value": shown(float(lv[best_i]))},
        "recent": {"step": int(steps[-1]), "value": shown(float(lv[-1]))},
        "change": change, "change_text": text, "scale": "log ratio" if m.ratio else "absolute",
        "tolerance": {"improve": tol_up, "regress": tol_down, "noise": noise},
        "values": [[int(a), float(b)] for a, b in zip(steps[-12:], v[-12:])],
    }
    return Trend(verdict, m.name, n, ev)
