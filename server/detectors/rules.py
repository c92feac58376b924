"""Failure-signature rules: pure, vectorised numpy functions over windows of metrics.

Every rule has the shape `rule(recent, early, th, ctx) -> Finding | None`:

* `recent` — the trailing points of each metric (the engine keeps a few hundred steps);
* `early`  — the run's first points (baselines: G's early gradient level, step-0 weights);
* `th`     — the signature's thresholds (catalog defaults merged with the job's overrides);
* `ctx`    — facts from the run's config (label smoothing, init, toy mode count, widths).

A rule returns a Finding when its condition has *persisted* (held at `hold_frac` of the
points of the last `window` steps); None otherwise. Unit tests call the rules directly
with synthetic series; the engine calls them on every ingested batch.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from server.detectors import arch as arch_mod
from server.detectors.catalog import LN4, TOY_MODES

Series = tuple[np.ndarray, np.ndarray]  # (steps int64, values float64), increasing steps
Window = Mapping[str, Series]
MIN_POINTS = 3  # fewer points than this never make a verdict


@dataclass
class Context:
    """What the rules need from a run's config (server/detectors must not depend on the trainer)."""

    label_smoothing: float = 1.0
    loss: str = "nonsaturating"
    init: str = "normal"
    init_std: float = 0.02
    n_modes: int | None = None  # toy mixtures: mode count; None for images and poisson1d
    is_toy: bool = False
    arch: dict[str, dict[str, arch_mod.Layer]] | None = None  # layer sizes of the trainer's nets

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "Context":
        cfg = cfg or {}
        ds = str(cfg.get("dataset", "shapes"))
        return cls(label_smoothing=float(cfg.get("label_smoothing", 1.0)), loss=str(cfg.get("loss", "nonsaturating")),
                   init=str(cfg.get("init", "normal")),
                   init_std=float(cfg.get("init_std", 0.02)), n_modes=TOY_MODES.get(ds),
                   is_toy=ds in TOY_MODES or ds == "poisson1d", arch=arch_mod.layers(cfg))


@dataclass
class Finding:
    signature: str
    first_step: int  # onset: where the condition started to hold (the dashboard shades first..last)
    last_step: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None  # None: the catalog's severity


# --- helpers -----------------------------------------------------------------------------------

_NOT_WEIGHT_LAYER = re.compile(r"(^|[._])(bn|norm|mbd|pool)", re.IGNORECASE)


def layer_names(window: Window, prefix: str) -> list[str]:
    """Metric names under `prefix` in natural order (a layer index in the name orders layers)."""
    def key(name: str) -> list[Any]:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name[len(prefix):])]
    return sorted((n for n in window if n.startswith(prefix) and window[n][0].size), key=key)


def weight_layers(window: Window, kind: str, net: str, ctx: "Context") -> list[str]:
    """`kind/net/<layer>` names of the conv/linear layers in forward order, first to last.

    With the trainer's architecture known (arch.py) its order is used; otherwise (SDK runs) the
    natural order of the names, leaving out normalisation and minibatch-discrimination layers.
    """
    prefix = f"{kind}/{net}/"
    if ctx.arch is not None and net in ctx.arch:
        names = [prefix + n for n, L in ctx.arch[net].items() if L.kind in ("conv", "fc")]
        names = [n for n in names if get(window, n) is not None]
        if names:
            return names
    return [n for n in layer_names(window, prefix) if not _NOT_WEIGHT_LAYER.search(n[len(prefix):])]


def get(window: Window, name: str) -> Series | None:
    s = window.get(name)
    return s if s is not None and s[0].size else None


def align(*series: Series) -> tuple[np.ndarray, list[np.ndarray]]:
    """Restrict several series to their common steps."""
    steps = series[0][0]
    # Fast path: series logged together (one probe row per step) share their steps exactly.
    if all(s is steps or (s.size == steps.size and np.array_equal(s, steps)) for s, _ in series[1:]):
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
         min_points: int = MIN_POINTS) -> tuple[bool, int, float]:
    """Did `cond` hold at >= hold_frac of the points of the last `window` steps (window covered)?

    Returns (held, onset step, fraction in window). The onset is the earliest step from which the
    condition held at >= hold_frac of the points up to now: where the dashboard starts the shaded span.
    """
    if steps.size < min_points:
        return False, -1, 0.0
    end = int(steps[-1])
    in_win = steps > end - window
    n = int(in_win.sum())
    if n < min_points or (end - int(steps[in_win][0]) + 1) < 0.8 * window:
        return False, -1, 0.0  # too few points, or not enough of the window seen yet
    frac = float(cond[in_win].mean())
    if frac < hold_frac:
        return False, -1, frac
    rc = cond[::-1]
    share = np.cumsum(rc) / np.arange(1, rc.size + 1)
    ok = np.flatnonzero((share >= hold_frac) & rc)
    onset = int(steps[::-1][ok[-1]]) if ok.size else int(steps[in_win][0])
    return True, onset, frac


def stat(v: np.ndarray) -> dict[str, float]:
    f = v[np.isfinite(v)]
    if not f.size:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": float(np.median(f)), "min": float(f.min()), "max": float(f.max())}


def _tail(steps: np.ndarray, v: np.ndarray, end: int, window: float) -> np.ndarray:
    return v[steps > end - window]


def bce_floor(label_smoothing: float) -> float:
    """Smallest D loss reachable with a one-sided real target s: the entropy of Bernoulli(s)."""
    s = min(max(label_smoothing, 1e-12), 1.0)
    return 0.0 if s >= 1.0 else -(s * math.log(s) + (1 - s) * math.log(1 - s))


# --- rules --------------------------------------------------------------------------------------

def nonfinite(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Any NaN/Inf in the last `clear_steps` steps of any metric: failing at once, no persistence."""
    end = max((int(s[-1]) for s, _ in recent.values() if s.size), default=None)
    if end is None:
        return None
    if bool(np.isfinite(np.concatenate([v for _, v in recent.values()])).all()):
        return None  # the common case, in one pass
    hits: dict[str, dict[str, Any]] = {}
    first = None
    for name, (s, v) in recent.items():
        recent_pts = s > end - th["clear_steps"]
        bad = ~np.isfinite(v) & recent_pts
        if bad.any():
            bs = s[bad]
            kinds = v[bad]
            hits[name] = {"first_step": int(bs[0]), "last_step": int(bs[-1]), "count": int(bad.sum()),
                          "nan": int(np.isnan(kinds).sum()), "inf": int(np.isinf(kinds).sum())}
            first = int(bs[0]) if first is None else min(first, int(bs[0]))
    if not hits:
        return None
    names = sorted(hits, key=lambda n: hits[n]["first_step"])
    last = max(h["last_step"] for h in hits.values())
    return Finding("nonfinite", first, last,
                   f"Non-finite values in {len(names)} metric(s), first in {names[0]} at step {hits[names[0]]['first_step']}",
                   {"metrics": names[:20], "window": [first, last], "observed": {n: hits[n] for n in names[:20]},
                    "thresholds": {"clear_steps": th["clear_steps"]}})


def d_overpowering(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """D wins outright: loss/d near its floor and D(G(z)) near 0, or D saturated exactly (loss term == 0)."""
    ld = get(recent, "loss/d")
    if ld is None:
        return None
    floor = bce_floor(ctx.label_smoothing)
    parts = [ld]
    pf = get(recent, "pred/fake")
    if pf is not None:
        parts.append(pf)
    steps, vals = align(*parts)
    if steps.size == 0:
        return None
    cond = (vals[0] - floor) < th["loss_d_max"]
    if pf is not None:
        cond &= vals[1] < th["pred_fake_max"]
    # Saturated at float precision: a D whose fake (or real) BCE term is exactly 0 has sigmoid outputs
    # of exactly 0 (or 1) — it has won beyond what the loss can measure (a clamp, not a number).
    sat_names = [n for n in ("loss/d_fake", "loss/d_real") if get(recent, n) is not None]
    saturated = np.zeros(steps.size, dtype=bool)
    for n in sat_names:
        s, v = recent[n]
        idx = np.searchsorted(s, steps).clip(max=s.size - 1)
        saturated |= (s[idx] == steps) & (v[idx] == 0.0)
    if pf is not None and sat_names:
        saturated &= vals[1] < 0.5  # D saying "fake" with certainty, not "real"
    cond |= saturated & (vals[0] < 1.0)
    ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
    if not ok:
        return None
    end = int(steps[-1])
    obs = {"loss/d": {**stat(_tail(steps, vals[0], end, th["window"])), "threshold": floor + th["loss_d_max"], "op": "<"}}
    if pf is not None:
        obs["pred/fake"] = {**stat(_tail(steps, vals[1], end, th["window"])), "threshold": th["pred_fake_max"], "op": "<"}
    pr = get(recent, "pred/real")
    if pr is not None:
        obs["pred/real"] = stat(_tail(pr[0], pr[1], end, th["window"]))
    nsat = int(saturated[steps > end - th["window"]].sum())
    msg = (f"D has overpowered G since step {onset}: loss/d median {obs['loss/d']['median']:.3g}"
           + (f", D(G(z)) median {obs['pred/fake']['median']:.3g}" if pf is not None else "")
           + (f"; D saturated (a BCE term exactly 0) at {nsat} steps" if nsat else ""))
    return Finding("d_overpowering", onset, end, msg,
                   {"metrics": ["loss/d"] + (["pred/fake"] if pf is not None else []) + (["pred/real"] if pr is not None else []),
                    "window": [onset, end], "observed": obs, "held_frac": frac, "saturated_points": nsat,
                    "thresholds": dict(th), "loss_floor": floor})


def vanishing_g_grad(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """G's first-layer gradient collapsed against its own early level, or AUTOTRAINER's ratio test."""
    layers = weight_layers(recent, "grad", "g", ctx)
    if not layers:
        return None
    first, last = layers[0], layers[-1]
    parts = [recent[first]] + ([recent[last]] if last != first else [])
    steps, vals = align(*parts)
    if steps.size == 0:
        return None
    g1 = vals[0]
    gl = vals[1] if last != first else g1
    origin = min((int(s[0]) for s, _ in early.values() if s.size), default=int(steps[0]))
    # Under N(0, 0.02) init G's first-layer gradient is ~1e-8 until D has learned something (measured: the
    # first ~50 steps of healthy toy runs), so the relative tests wait for `warmup_steps`. No gradient at all
    # (norm exactly 0: a saturated tanh, dead ReLUs) is dead, not young, and counts from the start.
    grown = steps >= origin + th["warmup_steps"]
    cond = g1 == 0
    base = early_level(early, first, th["early_steps"])
    if base is not None and base > 0:
        cond |= grown & (g1 < th["drop_ratio"] * base)
    ratio = None
    if last != first:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = g1 / gl
        cond |= grown & (g1 < th["abs_max"]) & (ratio < th["ratio_max"])  # AUTOTRAINER's test
    ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
    saturated = None
    if not ok and ctx.loss == "minimax":
        # Goodfellow et al. 2014: with log(1 − D(G(z))) the gradient at D's logit is −D(G(z)), so a D that
        # rejects fakes with certainty scales every gradient G receives by D(G(z)) — it vanishes at the source.
        pg = get(recent, "pred/fake_g")
        if pg is not None:
            ok, onset, frac = held(pg[0], pg[1] < th["signal_min"], th["window"], th["hold_frac"])
            saturated = pg if ok else None
    if not ok:
        return None
    end = int(steps[-1])
    obs: dict[str, Any] = {first: {**stat(_tail(steps, g1, end, th["window"])), "early_level": base,
                                   "threshold": None if base is None else th["drop_ratio"] * base, "op": "<"}}
    if ratio is not None:
        obs[f"{first} / {last}"] = {**stat(_tail(steps, ratio, end, th["window"])), "threshold": th["ratio_max"], "op": "<"}
    names = [first] + ([last] if last != first else [])
    if saturated is not None:
        obs["pred/fake_g"] = {**stat(_tail(saturated[0], saturated[1], end, th["window"])),
                              "threshold": th["signal_min"], "op": "<"}
        names.append("pred/fake_g")
        msg = (f"G's gradient vanishes since step {onset}: under the minimax loss it is scaled by D(G(z)) = "
               f"{obs['pred/fake_g']['median']:.2g}; G's first-layer norm is {obs[first]['median']:.3g}")
    else:
        msg = (f"G's first-layer gradient ({first}) has vanished since step {onset}: median "
               f"{obs[first]['median']:.3g}" + (f" against an early level of {base:.3g}" if base else ""))
    return Finding("vanishing_g_grad", onset, end, msg,
                   {"metrics": names, "window": [onset, end], "observed": obs, "held_frac": frac,
                    "thresholds": dict(th)})


def exploding_grad(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Largest per-layer gradient norm above ganhacks' 100, or a sudden jump against its own recent level."""
    layers = layer_names(recent, "grad/d/") + layer_names(recent, "grad/g/")
    if not layers:
        return None
    steps, vals = align(*(recent[n] for n in layers))
    if steps.size == 0:
        return None
    m = np.vstack(vals)  # (layers, steps)
    end = int(steps[-1])
    win = steps > end - th["window"]
    before = (steps <= end - th["window"]) & (steps > end - th["window"] - th["baseline_steps"])
    with np.errstate(invalid="ignore"):
        over_abs = m > th["abs_max"]  # NaN/Inf compare False here: those are nonfinite's business
        over_growth = np.zeros_like(over_abs)
        big = bool((m[:, win] > th["growth_floor"]).any())  # no norm above the floor: no jump to look for
        if big and before.sum() >= MIN_POINTS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a layer with no finite point: no baseline
                base = np.nanmedian(np.where(np.isfinite(m[:, before]), m[:, before], np.nan), axis=1)
            ok_base = np.isfinite(base) & (base > 0)
            over_growth[ok_base] = ((m[ok_base] > th["growth"] * base[ok_base, None])
                                    & (m[ok_base] > th["growth_floor"]))
            over_growth[:, ~win] = False  # growth is judged against the level just before the window
    over = over_abs | over_growth
    cond = over.any(axis=0)
    ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
    if not ok:
        return None
    hits = over[:, win].sum(axis=1)
    worst = [layers[i] for i in np.argsort(-hits)[:4] if hits[i] > 0]
    obs = {n: {**stat(m[layers.index(n)][win]), "threshold": th["abs_max"], "op": ">"} for n in worst}
    fin = np.where(np.isfinite(m[:, win]), m[:, win], np.nan)
    peak = float(np.nanmax(fin)) if np.isfinite(fin).any() else float("nan")
    jump = bool(over_growth[:, win].any()) and not bool(over_abs[:, win].any())
    return Finding("exploding_grad", onset, end,
                   f"Gradient norms exploding since step {onset}: {worst[0]} up to {peak:.3g}"
                   + (f" ({th['growth']:.0f}× its level just before)" if jump else " (ganhacks: over 100 is trouble)"),
                   {"metrics": worst, "window": [onset, end], "observed": obs, "held_frac": frac,
                    "thresholds": dict(th)})


def mode_collapse(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """G's samples collapsed: their spread a sliver of the real batch's, or (toy mixtures) good samples from
    at most half the modes. Losses are not consulted: a collapsed G can keep D at 2·ln 2."""
    findings = []
    div = get(recent, "sample/diversity")
    if div is not None:
        s, v = div
        keep = s >= th["warmup_steps"]
        if keep.sum() >= MIN_POINTS:
            with np.errstate(invalid="ignore"):
                cond = v[keep] < th["diversity_min"]
            ok, onset, frac = held(s[keep], cond, th["window"], th["hold_frac"])
            if ok:
                end = int(s[-1])
                findings.append((onset, end, "sample/diversity",
                                 {**stat(_tail(s, v, end, th["window"])), "threshold": th["diversity_min"], "op": "<"}, frac))
    modes, quality = get(recent, "toy/modes"), get(recent, "toy/quality")
    k = ctx.n_modes
    if modes is not None and quality is not None and k is not None and k >= 2:
        s, (v, q) = align(modes, quality)
        keep = s >= th["warmup_steps"]
        limit = max(1.0, math.floor(th["modes_frac"] * k))
        # Coverage is measured every toy_every steps: the window spans at least two measurements.
        cadence = float(np.median(np.diff(s))) if s.size > 1 else th["window"]
        if keep.sum() >= 2:
            # Good samples (quality) from few modes. A G whose samples are mostly junk has not collapsed
            # onto modes — it has not found them (an unconverged or diverging run).
            cond = (v[keep] <= limit) & (v[keep] >= 1) & (q[keep] >= th["quality_min"])
            ok, onset, frac = held(s[keep], cond, max(th["window"], 2 * cadence), th["hold_frac"], min_points=2)
            if ok:
                end = int(s[-1])
                findings.append((onset, end, "toy/modes",
                                 {**stat(_tail(s, v, end, max(th["window"], 2 * cadence))), "threshold": limit,
                                  "op": "<=", "modes_total": k,
                                  "quality": stat(_tail(s, q, end, max(th["window"], 2 * cadence)))}, frac))
    if not findings:
        return None
    onset = min(f[0] for f in findings)
    end = max(f[1] for f in findings)
    obs = {f[2]: f[3] for f in findings}
    ld = get(recent, "loss/d")
    if ld is not None:
        obs["loss/d"] = {**stat(_tail(ld[0], ld[1], end, th["window"])), "equilibrium": LN4}
    parts = []
    if "toy/modes" in obs:
        parts.append(f"G's good samples cover {obs['toy/modes']['median']:.0f} of {k} modes")
    if "sample/diversity" in obs:
        parts.append(f"sample spread {obs['sample/diversity']['median']:.3g} of the real batch's")
    calm = ""
    if ld is not None and abs(obs["loss/d"]["median"] - LN4) < 0.3:
        calm = " while the losses look calm (loss/d near 2·ln 2)"
    return Finding("mode_collapse", onset, end, f"Mode collapse since step {onset}: " + ", ".join(parts) + calm,
                   {"metrics": [f[2] for f in findings] + (["loss/d"] if ld is not None else []),
                    "window": [onset, end], "observed": obs, "held_frac": max(f[4] for f in findings),
                    "thresholds": dict(th)})


def _spiky(steps: np.ndarray, v: np.ndarray, th: dict[str, float]) -> tuple[bool, dict[str, float]]:
    """Spikes above the local level (a rolling median, so a steady descent is no spike) and overall swing."""
    end = int(steps[-1])
    sel = (steps > end - th["window"]) & (steps >= th["warmup_steps"]) & np.isfinite(v)
    w = v[sel]
    if w.size < 20 or (end - int(steps[sel][0]) + 1) < 0.8 * th["window"]:
        return False, {}
    lo, hi = np.percentile(w, [5, 95])
    if hi - lo <= th["spread_min"]:
        return False, {}  # the common case: no swing, no need for the local level
    k = 11
    pad = np.pad(w, (k // 2, k // 2), mode="edge")
    level = np.median(np.lib.stride_tricks.sliding_window_view(pad, k), axis=1)
    spikes = float(np.mean(w - level > th["spike_nats"]))
    swing = float(hi - lo)
    ok = swing > th["spread_min"] and spikes > th["spike_frac"]
    return ok, {"median": float(np.median(w)), "swing_p5_p95": swing, "spike_frac": spikes,
                "threshold": th["spread_min"], "op": ">", "spike_frac_threshold": th["spike_frac"]}


def oscillation(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Large, spiky swings of D's or G's loss (ganhacks: a failing D loss 'has huge variance and spikes')."""
    obs = {}
    end = None
    for n in ("loss/d", "loss/g"):
        s = get(recent, n)
        if s is None:
            continue
        ok, o = _spiky(s[0], s[1], th)
        if ok:
            obs[n] = o
            end = int(s[0][-1])
    if not obs or end is None:
        return None
    onset = int(max(end - th["window"] + 1, th["warmup_steps"]))
    names = list(obs)
    o = obs[names[0]]
    return Finding("oscillation", onset, end,
                   f"Losses oscillate: {names[0]} swings by {o['swing_p5_p95']:.3g} with "
                   f"{100 * o['spike_frac']:.0f}% of steps spiking over {th['spike_nats']:g} above its local level "
                   f"in the last {int(th['window'])} steps",
                   {"metrics": names, "window": [onset, end], "observed": obs, "thresholds": dict(th)})


def d_not_learning(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """D does not learn: stuck at chance (flat loss/d ≈ 2·ln 2, D(x) ≈ D(G(z))), frozen weights while not
    winning, or pinned at BCE's clamp (an nn.BCELoss term of exactly ~100: sigmoid saturated, zero gradient)."""
    ld = get(recent, "loss/d")
    cands: list[tuple[str, np.ndarray, np.ndarray]] = []  # (why, steps, per-point condition)
    obs: dict[str, Any] = {}
    pr, pf = get(recent, "pred/real"), get(recent, "pred/fake")
    if ld is not None and pr is not None and pf is not None:
        steps, (l, r, f) = align(ld, pr, pf)
        win = steps > steps[-1] - th["window"] if steps.size else steps
        if steps.size and (np.abs(l[win] - LN4) < th["chance_band"]).mean() >= th["hold_frac"]:
            cond = (np.abs(l - LN4) < th["chance_band"]) & (np.abs(r - f) < th["pred_gap"])
            w = l[win]
            iqr = float(np.subtract(*np.percentile(w, [75, 25])))
            if iqr < th["flat_iqr"]:  # frozen, not an equilibrium: a live D's loss jitters batch to batch
                cands.append(("chance", steps, cond))
            obs["loss/d"] = {**stat(w), "iqr": iqr, "chance": LN4, "band": th["chance_band"],
                             "flat_iqr": th["flat_iqr"]}
            obs["|pred/real − pred/fake|"] = {**stat(np.abs(r - f)[win]), "threshold": th["pred_gap"], "op": "<"}
    ups = weight_layers(recent, "update", "d", ctx) or layer_names(recent, "update/d/")
    if ld is not None and ups:
        us, uv = align(*(recent[n] for n in ups))
        if us.size:
            mx = np.vstack(uv).max(axis=0)
            if (mx[us > us[-1] - th["window"]] < th["update_max"]).mean() >= th["hold_frac"]:
                steps, (lv, mv) = align(ld, (us, mx))
                cands.append(("frozen", steps, (mv < th["update_max"]) & (lv > th["loss_d_min"])))
                obs["max update/d/*"] = {**stat(_tail(us, mx, int(us[-1]), th["window"])),
                                         "threshold": th["update_max"], "op": "<"}
    for n in ("loss/d_real", "loss/d_fake"):
        s = get(recent, n)
        if s is not None and s[1][-1] >= th["clamp_loss"] - 0.5:  # only a run sitting at the clamp now
            cands.append((f"clamp:{n}", s[0], np.abs(s[1] - th["clamp_loss"]) < 0.5))
    best = None
    for why, steps, cond in cands:
        ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
        if ok and (best is None or onset < best[1]):
            best = (why, onset, int(steps[-1]), frac)
    if best is None:
        return None
    why, onset, end, frac = best
    if why == "chance":
        msg = (f"D has been stuck at chance since step {onset}: loss/d flat at {obs['loss/d']['median']:.4g} "
               f"(2·ln 2 = {LN4:.4g}) and D(x) ≈ D(G(z)) — it does not tell real from fake")
        names = ["loss/d", "pred/real", "pred/fake"]
    elif why == "frozen":
        msg = (f"D is not learning since step {onset}: its largest update/weight ratio is "
               f"{obs['max update/d/*']['median']:.2g} while loss/d stays at {stat(_tail(ld[0], ld[1], end, th['window']))['median']:.3g}")
        names = ups[:6] + ["loss/d"]
    else:
        n = why.split(":", 1)[1]
        obs[n] = {**stat(_tail(recent[n][0], recent[n][1], end, th["window"])), "clamp": th["clamp_loss"]}
        msg = (f"D is pinned at BCE's clamp since step {onset} ({n} ≈ {th['clamp_loss']:.0f}): its sigmoid "
               f"output is exactly 0 or 1, where the gradient is zero")
        names = [n, "loss/d"]
    return Finding("d_not_learning", onset, end, msg,
                   {"metrics": names, "window": [onset, end], "observed": obs, "held_frac": frac, "cause": why,
                    "thresholds": dict(th)})


def _init_std(early: Window, net: str, ctx: Context, th: dict[str, float]) -> tuple[dict[str, float], int | None]:
    """Per-layer weight std at the run's first logged step, read off the weight norms.

    weight/<net>/<layer> is the L2 norm of the layer's parameters; with its element count (arch.py or a
    `params/<net>/<layer>` metric) std ≈ norm / sqrt(weights), biases being zero at init. The first logged
    point comes after one update; a layer whose update/weight ratio then is large no longer shows its init
    and is left out.
    """
    out: dict[str, float] = {}
    first = None
    layers = ctx.arch.get(net, {}) if ctx.arch else {}
    origin = min((int(s[0]) for s, _ in early.values() if s.size), default=0)
    for name in weight_layers(early, "weight", net, ctx):
        layer = name.rsplit("/", 1)[1]
        s, v = early[name]
        count = get(early, f"params/{net}/{layer}")
        n = float(count[1][0]) if count is not None else float(layers[layer].weights) if layer in layers else None
        if not n or not np.isfinite(v[0]) or s[0] >= origin + th["first_steps"]:
            continue  # no size to divide by, or no point from the run's first steps
        up = get(early, f"update/{net}/{layer}")
        if up is not None and up[0][0] == s[0] and up[1][0] > th["max_update"]:
            continue  # the first update already moved the weights too far to show the init
        out[name] = float(v[0]) / math.sqrt(n)
        first = int(s[0]) if first is None else min(first, int(s[0]))
    return out, first


def poor_init(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Initial weight spread far from the config's init_std (normal init) or from DCGAN's 0.02."""
    if ctx.init != "normal":
        return None  # xavier/default intend a per-layer spread, not one std to compare with
    refs = {"DCGAN's 0.02": th["reference_std"]}
    if abs(ctx.init_std - th["reference_std"]) > 1e-12:
        refs = {f"the config's init_std {ctx.init_std:g}": ctx.init_std, **refs}
    obs: dict[str, Any] = {}
    bad: list[tuple[str, str, float]] = []
    step = None
    for net in ("g", "d"):
        stds, first = _init_std(early, net, ctx, th)
        if not stds:
            continue
        med = float(np.median(list(stds.values())))
        obs[f"weight/{net}/* std"] = {"median": med, "layers": stds}
        step = first if step is None else min(step, first or step)
        for label, ref in refs.items():
            r = med / ref
            if r > th["factor"] or r < 1 / th["factor"]:
                bad.append((net, label, r))
    if not bad:
        return None
    net, label, r = bad[0]
    step = step or 0
    nets = " and ".join(sorted({"G" if b[0] == "g" else "D" for b in bad}))
    med = obs[f"weight/{net}/* std"]["median"]
    return Finding("poor_init", step, step,
                   f"Initial weights of {nets} have a spread of {med:.3g}, {r:.3g}× {label}",
                   {"metrics": [f"weight/{n}/*" for n in ("g", "d") if f"weight/{n}/* std" in obs],
                    "window": [step, step], "observed": obs, "references": refs, "thresholds": dict(th)})


def capacity_imbalance(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """G/D parameter ratio far from balanced (params/g and params/d if logged, else the trainer's nets)."""
    pg, pd = get(early, "params/g"), get(early, "params/d")
    if pg is not None and pd is not None:
        ng, nd = float(pg[1][0]), float(pd[1][0])
        how = "params/g ÷ params/d"
    elif ctx.arch is not None and (recent or early):
        ng = float(sum(x.total for x in ctx.arch["g"].values()))
        nd = float(sum(x.total for x in ctx.arch["d"].values()))
        how = "from the config's architecture"
    else:
        return None
    step = min((int(s[0]) for s, _ in (early or recent).values() if s.size), default=0)
    ratio = ng / nd if nd > 0 else float("inf")
    if th["ratio_min"] <= ratio <= th["ratio_max"]:
        return None
    weak = "G" if ratio < 1 else "D"
    return Finding("capacity_imbalance", step, step,
                   f"{weak} is starved: G has {ng:.3g} parameters against D's {nd:.3g} (ratio {ratio:.3g}, "
                   f"{how}); the seed write-up reports a ratio near 0.5 working",
                   {"metrics": ["params/g", "params/d"], "window": [step, step],
                    "observed": {"ratio": {"value": ratio, "how": how, "params_g": ng, "params_d": nd,
                                           "range": [th["ratio_min"], th["ratio_max"]]}},
                    "thresholds": dict(th)})


RULES: dict[str, Callable[[Window, Window, dict[str, float], Context], Finding | None]] = {
    "nonfinite": nonfinite,
    "d_overpowering": d_overpowering,
    "vanishing_g_grad": vanishing_g_grad,
    "exploding_grad": exploding_grad,
    "mode_collapse": mode_collapse,
    "oscillation": oscillation,
    "d_not_learning": d_not_learning,
    "poor_init": poor_init,
    "capacity_imbalance": capacity_imbalance,
}
