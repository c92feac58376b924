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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from server.detectors.catalog import LN4, TOY_MODES

Series = tuple[np.ndarray, np.ndarray]  # (steps int64, values float64), increasing steps
Window = Mapping[str, Series]
MIN_POINTS = 3  # fewer points than this never make a verdict


@dataclass
class Context:
    """What the rules need from a run's config (server/detectors must not depend on the trainer)."""

    label_smoothing: float = 1.0
    init: str = "normal"
    init_std: float = 0.02
    n_modes: int | None = None  # toy mixtures: mode count; None for images and poisson1d
    ngf: int = 64
    ndf: int = 64
    is_toy: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "Context":
        cfg = cfg or {}
        ds = str(cfg.get("dataset", "shapes"))
        return cls(label_smoothing=float(cfg.get("label_smoothing", 1.0)), init=str(cfg.get("init", "normal")),
                   init_std=float(cfg.get("init_std", 0.02)), n_modes=TOY_MODES.get(ds),
                   ngf=int(cfg.get("ngf", 64)), ndf=int(cfg.get("ndf", 64)),
                   is_toy=ds in TOY_MODES or ds == "poisson1d")


@dataclass
class Finding:
    signature: str
    first_step: int  # onset: where the condition started to hold (the dashboard shades first..last)
    last_step: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None  # None: the catalog's severity


# --- helpers -----------------------------------------------------------------------------------

def layer_names(window: Window, prefix: str) -> list[str]:
    """Metric names under `prefix` in layer order (natural sort: a trailing/leading index orders layers)."""
    def key(name: str) -> list[Any]:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name[len(prefix):])]
    return sorted((n for n in window if n.startswith(prefix) and window[n][0].size), key=key)


def get(window: Window, name: str) -> Series | None:
    s = window.get(name)
    return s if s is not None and s[0].size else None


def align(*series: Series) -> tuple[np.ndarray, list[np.ndarray]]:
    """Restrict several series to their common steps."""
    steps = series[0][0]
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


def held(steps: np.ndarray, cond: np.ndarray, window: float, hold_frac: float) -> tuple[bool, int, float]:
    """Did `cond` hold at >= hold_frac of the points of the last `window` steps (window covered)?

    Returns (held, onset step, fraction in window). The onset is the earliest step from which the
    condition held at >= hold_frac of the points up to now: where the dashboard starts the shaded span.
    """
    if steps.size < MIN_POINTS:
        return False, -1, 0.0
    end = int(steps[-1])
    in_win = steps > end - window
    n = int(in_win.sum())
    if n < MIN_POINTS or (end - int(steps[in_win][0]) + 1) < 0.8 * window:
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
    layers = layer_names(recent, "grad/g/")
    if not layers:
        return None
    first, last = layers[0], layers[-1]
    parts = [recent[first]] + ([recent[last]] if last != first else [])
    steps, vals = align(*parts)
    if steps.size == 0:
        return None
    g1 = vals[0]
    cond = np.zeros(steps.size, dtype=bool)
    base = early_level(early, first, th["early_steps"])
    if base is not None and base > 0 and int(steps[-1]) >= early[first][0][0] + th["early_steps"]:
        cond |= g1 < th["drop_ratio"] * base
    ratio = None
    if last != first:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = g1 / vals[1]
        cond |= (ratio < th["ratio_max"]) & (g1 < th["abs_max"])
    ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
    if not ok:
        return None
    end = int(steps[-1])
    obs: dict[str, Any] = {first: {**stat(_tail(steps, g1, end, th["window"])), "early_level": base,
                                   "threshold": None if base is None else th["drop_ratio"] * base, "op": "<"}}
    if ratio is not None:
        obs[f"{first} / {last}"] = {**stat(_tail(steps, ratio, end, th["window"])), "threshold": th["ratio_max"], "op": "<"}
    msg = (f"G's first-layer gradient ({first}) has vanished since step {onset}: median "
           f"{obs[first]['median']:.3g}" + (f" against an early level of {base:.3g}" if base else ""))
    return Finding("vanishing_g_grad", onset, end, msg,
                   {"metrics": [first] + ([last] if last != first else []), "window": [onset, end],
                    "observed": obs, "held_frac": frac, "thresholds": dict(th)})


def exploding_grad(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Largest per-layer gradient norm above ganhacks' 100, or exploding against its own early level."""
    layers = layer_names(recent, "grad/d/") + layer_names(recent, "grad/g/")
    if not layers:
        return None
    steps, vals = align(*(recent[n] for n in layers))
    if steps.size == 0:
        return None
    m = np.vstack(vals)  # (layers, steps)
    with np.errstate(invalid="ignore"):
        over_abs = m > th["abs_max"]
        over_growth = np.zeros_like(over_abs)
        for i, n in enumerate(layers):
            base = early_level(early, n, th["early_steps"])
            if base is not None and base > 0:
                over_growth[i] = (m[i] > th["growth"] * base) & (m[i] > th["growth_floor"])
    cond = (over_abs | over_growth).any(axis=0)
    ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
    if not ok:
        return None
    end = int(steps[-1])
    win = steps > end - th["window"]
    hits = (over_abs | over_growth)[:, win].sum(axis=1)
    worst = [layers[i] for i in np.argsort(-hits)[:4] if hits[i] > 0]
    obs = {n: {**stat(m[layers.index(n)][win]), "threshold": th["abs_max"], "op": ">",
               "early_level": early_level(early, n, th["early_steps"])} for n in worst}
    peak = float(np.nanmax(np.where(np.isfinite(m[:, win]), m[:, win], np.nan))) if np.isfinite(m[:, win]).any() else float("nan")
    return Finding("exploding_grad", onset, end,
                   f"Gradient norms exploding since step {onset}: {worst[0]} up to {peak:.3g} (ganhacks: over 100 is trouble)",
                   {"metrics": worst, "window": [onset, end], "observed": obs, "held_frac": frac,
                    "thresholds": dict(th)})


def mode_collapse(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Sample spread far below the real batch's, or toy modes lost — whatever the losses say."""
    findings = []
    div = get(recent, "sample/diversity")
    if div is not None:
        s, v = div
        keep = s >= th["warmup_steps"]
        if keep.sum() >= MIN_POINTS:
            cond = v[keep] < th["diversity_min"]
            ok, onset, frac = held(s[keep], cond, th["window"], th["hold_frac"])
            if ok:
                end = int(s[-1])
                findings.append((onset, end, "sample/diversity",
                                 {**stat(_tail(s, v, end, th["window"])), "threshold": th["diversity_min"], "op": "<"}, frac))
    modes = get(recent, "toy/modes")
    k = ctx.n_modes
    if modes is not None and k is not None and k >= 2:
        s, v = modes
        keep = s >= th["warmup_steps"]
        limit = max(1.0, math.floor(th["modes_frac"] * k))
        if keep.sum() >= MIN_POINTS:
            # A G that found no mode at all is lost, not collapsed (diversity speaks to that case).
            cond = (v[keep] <= limit) & (v[keep] >= 1)
            ok, onset, frac = held(s[keep], cond, th["window"], th["hold_frac"])
            if ok:
                end = int(s[-1])
                findings.append((onset, end, "toy/modes",
                                 {**stat(_tail(s, v, end, th["window"])), "threshold": limit, "op": "<=",
                                  "modes_total": k}, frac))
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
        parts.append(f"G covers {obs['toy/modes']['median']:.0f} of {k} modes")
    if "sample/diversity" in obs:
        parts.append(f"sample diversity {obs['sample/diversity']['median']:.2f} of the real batch's")
    calm = " while the losses look calm (loss/d near 2·ln 2)" if ld is not None and abs(obs["loss/d"]["median"] - LN4) < 0.3 else ""
    return Finding("mode_collapse", onset, end, f"Mode collapse since step {onset}: " + ", ".join(parts) + calm,
                   {"metrics": [f[2] for f in findings], "window": [onset, end], "observed": obs,
                    "held_frac": max(f[4] for f in findings), "thresholds": dict(th)})


def _spiky(steps: np.ndarray, v: np.ndarray, th: dict[str, float]) -> tuple[bool, dict[str, float]]:
    end = int(steps[-1])
    w = _tail(steps, v, end, th["window"])
    w = w[np.isfinite(w)]
    if w.size < max(MIN_POINTS, 20) or (end - int(steps[steps > end - th["window"]][0]) + 1) < 0.8 * th["window"]:
        return False, {}
    q1, med, q3 = np.percentile(w, [25, 50, 75])
    iqr = float(q3 - q1)
    spikes = float(np.mean(w > med + th["spike_k"] * max(iqr, 1e-12)))
    swing = float(np.percentile(w, 95) - np.percentile(w, 5))
    ok = swing > th["spread_min"] and spikes > th["spike_frac"]
    return ok, {"median": float(med), "iqr": iqr, "swing_p5_p95": swing, "spike_frac": spikes,
                "threshold": th["spread_min"], "op": ">"}


def oscillation(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Large, spiky swings of D's or G's loss over a window (ganhacks: 'huge variance and spikes')."""
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
    if not obs:
        return None
    onset = int(max(end - th["window"] + 1, 0))
    names = list(obs)
    return Finding("oscillation", onset, end,
                   f"Losses oscillate: {names[0]} swings by {obs[names[0]]['swing_p5_p95']:.2f} with "
                   f"{100 * obs[names[0]]['spike_frac']:.0f}% spikes over the last {int(th['window'])} steps",
                   {"metrics": names, "window": [onset, end], "observed": obs, "thresholds": dict(th)})


def d_not_learning(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """D's weights do not move (tiny updates / zero gradients) while it is not winning, or D pinned at the BCE clamp."""
    ups = layer_names(recent, "update/d/")
    grads = layer_names(recent, "grad/d/")
    ld = get(recent, "loss/d")
    conds: list[tuple[np.ndarray, np.ndarray]] = []
    obs: dict[str, Any] = {}
    if ld is not None and (ups or grads):
        src = [recent[n] for n in (ups or grads)]
        steps, vals = align(ld, *src)
        if steps.size:
            with np.errstate(invalid="ignore"):
                mx = np.vstack(vals[1:]).max(axis=0)
                still = mx < (th["update_max"] if ups else th["grad_max"])
                if ups and grads:  # zero gradients also freeze D whatever Adam's state
                    gs, gv = align(*(recent[n] for n in grads))
                    gmax = np.vstack(gv).max(axis=0)
                    idx = np.searchsorted(gs, steps).clip(max=max(gs.size - 1, 0))
                    if gs.size:
                        still |= (gs[idx] == steps) & (gmax[idx] < th["grad_max"])
            conds.append((steps, still & (vals[0] > th["loss_d_min"])))
            obs["max " + ("update/d/*" if ups else "grad/d/*")] = {
                **stat(_tail(steps, mx, int(steps[-1]), th["window"])),
                "threshold": th["update_max"] if ups else th["grad_max"], "op": "<"}
    for n in ("loss/d_real", "loss/d_fake"):
        s = get(recent, n)
        if s is not None:
            conds.append((s[0], s[1] >= th["clamp_loss"]))
    best = None
    for steps, cond in conds:
        ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
        if ok and (best is None or onset < best[0]):
            best = (onset, int(steps[-1]), frac)
    if best is None:
        return None
    onset, end, frac = best
    clamp = {}
    for n in ("loss/d_real", "loss/d_fake"):
        s = get(recent, n)
        if s is not None:
            clamp[n] = {**stat(_tail(s[0], s[1], end, th["window"])), "threshold": th["clamp_loss"], "op": ">="}
    pinned = [n for n, o in clamp.items() if o["median"] >= th["clamp_loss"]]
    obs.update(clamp)
    if ld is not None:
        obs["loss/d"] = {**stat(_tail(ld[0], ld[1], end, th["window"])), "chance": LN4}
    if pinned:
        msg = (f"D is saturated at BCE's clamp since step {onset} ({', '.join(pinned)} ≈ "
               f"{obs[pinned[0]]['median']:.0f}): its sigmoid outputs are exactly 0/1 and its gradient is zero")
    else:
        msg = (f"D is not learning since step {onset}: its weights barely move "
               f"(largest update/weight {next(iter(obs.values()))['median']:.2g}) and loss/d stays near "
               f"{obs['loss/d']['median']:.3g}")
    return Finding("d_not_learning", onset, end, msg,
                   {"metrics": ([*(ups or grads)] + ["loss/d"] + list(clamp))[:12], "window": [onset, end],
                    "observed": obs, "held_frac": frac, "thresholds": dict(th)})


def poor_init(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Per-layer weight std at the first steps far from the config's init_std (normal init) or from 0.02."""
    out: dict[str, Any] = {}
    first_step = None
    for net in ("g", "d"):
        layers = layer_names(early, f"weight/{net}/")
        vals = []
        for n in layers:
            s, v = early[n]
            sel = v[(s < s[0] + th["first_steps"]) & np.isfinite(v)]
            if sel.size:
                vals.append(float(sel[0]))
                first_step = int(s[0]) if first_step is None else min(first_step, int(s[0]))
        if vals:
            out[net] = {"median_std": float(np.median(vals)), "layers": dict(zip(layers, vals))}
    if not out:
        return None
    refs = {"DCGAN's 0.02": th["reference_std"]}
    if ctx.init == "normal" and abs(ctx.init_std - th["reference_std"]) > 1e-12:
        refs = {f"the config's init_std {ctx.init_std:g}": ctx.init_std, **refs}
    elif ctx.init != "normal":
        return None  # xavier/default intend a per-layer spread: no single std to compare with
    bad = []
    for net, o in out.items():
        for label, ref in refs.items():
            r = o["median_std"] / ref if ref > 0 else float("inf")
            if r > th["factor"] or r < 1 / th["factor"]:
                bad.append((net, label, r))
    if not bad:
        return None
    net, label, r = bad[0]
    step = first_step or 0
    names = ", ".join(sorted({f"{'G' if b[0] == 'g' else 'D'}" for b in bad}))
    return Finding("poor_init", step, step,
                   f"Initial weights of {names} have a spread of {out[net]['median_std']:.3g}, {r:.3g}× {label}",
                   {"metrics": [f"weight/{n}/*" for n in out], "window": [step, step],
                    "observed": {f"weight/{n}/* median std": {"value": o["median_std"], "layers": o["layers"]}
                                 for n, o in out.items()},
                    "references": refs, "thresholds": dict(th)})


def capacity_imbalance(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """G/D parameter ratio far from balanced (params/g, params/d; else estimated from ngf/ndf)."""
    pg, pd = get(early, "params/g"), get(early, "params/d")
    if pg is not None and pd is not None:
        ng, nd = float(pg[1][0]), float(pd[1][0])
        step = int(min(pg[0][0], pd[0][0]))
        how = "params/g ÷ params/d"
    elif not ctx.is_toy and recent:
        # Conv widths dominate DCGAN's parameter count, which scales with width squared.
        ng, nd = float(ctx.ngf) ** 2, float(ctx.ndf) ** 2
        step = min((int(s[0]) for s, _ in recent.values() if s.size), default=0)
        how = "estimated as (ngf/ndf)² from the config"
    else:
        return None
    ratio = ng / nd if nd > 0 else float("inf")
    if th["ratio_min"] <= ratio <= th["ratio_max"]:
        return None
    weak = "G" if ratio < 1 else "D"
    return Finding("capacity_imbalance", step, step,
                   f"{weak} is starved: G/D parameter ratio {ratio:.3g} ({how}); the seed write-up reports ≈0.5 working",
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
